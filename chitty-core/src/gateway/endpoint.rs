//! What differs between the endpoints (chat, legacy completions, embeddings), so that one request pipeline
//! serves them all.

use std::borrow::Cow;
use std::marker::PhantomData;
use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::config::{ModelKind, OutputCapField, RequestLimits};
use crate::error::{Error, Result};
use crate::events::Endpoint;
use crate::keys::{self, CacheKey, CachePolicy, CacheScope};
use crate::provider::{Capability, Provider};
use crate::tokens;
use crate::wire::{
    ChatCompletionJson, ChatCompletionRequest, ChatCompletionResponse, CompletionRequest, CompletionResponse,
    EmbeddingRequest, EmbeddingResponse, EncodingFormat, PromptInput, Usage,
};

/// One endpoint's request and response types and the few decisions that depend on them.
pub(crate) trait EndpointSpec: Send + Sync + 'static {
    type Req: Clone + Send + Sync + 'static;
    type Resp: Send + 'static;
    const ENDPOINT: Endpoint;
    const CAPABILITY: Capability;
    const KIND: ModelKind;

    fn model(req: &Self::Req) -> &str;
    /// Refuses a malformed request, or one over the model's `limits`, naming the parameter.
    fn validate(req: &Self::Req, limits: &RequestLimits) -> Result<()>;
    fn cacheable(policy: CachePolicy, req: &Self::Req) -> bool;
    fn key(scope: CacheScope<'_>, req: &Self::Req) -> CacheKey;
    fn prompt_tokens(req: &Self::Req) -> u64;
    /// The output cap the client asked for, or the endpoint's implied one; `None` lets the gateway choose.
    fn output_cap(req: &Self::Req) -> Option<u32>;
    /// Choices the answer carries (stream chunks indexing past them are malformed).
    fn choices(req: &Self::Req) -> u32;
    /// Outputs the upstream generates and bills, each up to the output cap: at least [`EndpointSpec::choices`], more when
    /// candidates are generated and discarded (`best_of`). The worst-case reservation multiplies by this.
    fn generations(req: &Self::Req) -> u32 {
        Self::choices(req)
    }
    fn prepare_upstream(req: &mut Self::Req, upstream_model: &str, cap: Option<(OutputCapField, u32)>);
    fn call(provider: Arc<dyn Provider>, req: Self::Req) -> BoxFuture<'static, Result<Self::Resp>>;
    fn usage(resp: &Self::Resp) -> Option<Usage>;
    fn for_client(resp: Self::Resp, req: &Self::Req) -> Result<Self::Resp>;
    /// Whether a response is complete enough to cache.
    fn complete(resp: &Self::Resp) -> bool;
    /// The response as a cache entry (its JSON).
    fn encode(resp: &Self::Resp) -> std::result::Result<Bytes, String>;
    /// A cache entry back as a response.
    fn decode(entry: Bytes) -> std::result::Result<Self::Resp, String>;
    /// Whether the semantic cache serves this endpoint (its entries are this endpoint's encoding).
    const SEMANTIC: bool = false;

    /// Names `model` as the request's public model (the model a router chose).
    fn set_model(req: &mut Self::Req, model: &str);
    /// The request as a chat completion request, for the router and the semantic cache (chat only).
    fn as_chat(_req: &Self::Req) -> Option<&ChatCompletionRequest> {
        None
    }
    /// The answer as a typed chat completion, for the router's cascade to check (chat only).
    fn as_chat_response(_resp: &Self::Resp) -> Option<Cow<'_, ChatCompletionResponse>> {
        None
    }
}

/// JSON of a typed response, for the cache.
fn encode_json(value: &impl Serialize) -> std::result::Result<Bytes, String> {
    // Most answers are under 1 KiB: one allocation instead of regrowing from serde_json's 128 bytes.
    let mut bytes = Vec::with_capacity(1024);
    serde_json::to_writer(&mut bytes, value).map_err(|e| e.to_string())?;
    Ok(Bytes::from(bytes))
}

/// A typed response from a cache entry. Validating UTF-8 once up front and parsing as `str` is measurably faster
/// than `from_slice`, which re-checks every string it reads.
fn decode_json<T: DeserializeOwned>(entry: &[u8]) -> std::result::Result<T, String> {
    let text = std::str::from_utf8(entry).map_err(|e| e.to_string())?;
    serde_json::from_str(text).map_err(|e| e.to_string())
}

/// How a chat answer comes back: typed ([`ChatCompletionResponse`]) or as JSON ([`ChatCompletionJson`]).
pub(crate) trait ChatResponseBody: Send + Sized + 'static {
    fn call(provider: Arc<dyn Provider>, req: ChatCompletionRequest) -> BoxFuture<'static, Result<Self>>;
    fn usage(&self) -> Option<Usage>;
    fn complete(&self) -> bool;
    fn encode(&self) -> std::result::Result<Bytes, String>;
    fn decode(entry: Bytes) -> std::result::Result<Self, String>;
    /// The answer typed, for the cascade's checks (`None` when it does not parse).
    fn typed(&self) -> Option<Cow<'_, ChatCompletionResponse>>;
}

impl ChatResponseBody for ChatCompletionResponse {
    fn call(provider: Arc<dyn Provider>, req: ChatCompletionRequest) -> BoxFuture<'static, Result<Self>> {
        Box::pin(async move { provider.chat(req).await })
    }

    fn usage(&self) -> Option<Usage> {
        self.usage.clone()
    }

    fn complete(&self) -> bool {
        !self.choices.is_empty() && self.choices.iter().all(|c| c.finish_reason.is_some())
    }

    fn encode(&self) -> std::result::Result<Bytes, String> {
        encode_json(self)
    }

    fn decode(entry: Bytes) -> std::result::Result<Self, String> {
        decode_json(&entry)
    }

    fn typed(&self) -> Option<Cow<'_, ChatCompletionResponse>> {
        Some(Cow::Borrowed(self))
    }
}

impl ChatResponseBody for ChatCompletionJson {
    fn call(provider: Arc<dyn Provider>, req: ChatCompletionRequest) -> BoxFuture<'static, Result<Self>> {
        Box::pin(async move { provider.chat_passthrough(req).await })
    }

    fn usage(&self) -> Option<Usage> {
        self.usage().cloned()
    }

    fn complete(&self) -> bool {
        self.is_complete()
    }

    fn encode(&self) -> std::result::Result<Bytes, String> {
        // The entry is the JSON itself: a reference count, not a copy.
        Ok(self.json().clone())
    }

    fn decode(entry: Bytes) -> std::result::Result<Self, String> {
        ChatCompletionJson::parse(entry).map_err(|e| e.to_string())
    }

    fn typed(&self) -> Option<Cow<'_, ChatCompletionResponse>> {
        self.to_response().ok().map(Cow::Owned)
    }
}

fn check_range(value: Option<f64>, lo: f64, hi: f64, param: &str) -> Result<()> {
    match value {
        Some(v) if !(lo..=hi).contains(&v) => {
            Err(Error::invalid_request(format!("`{param}` must be between {lo} and {hi}, got {v}"), Some(param)))
        }
        _ => Ok(()),
    }
}

/// `value` must lie in `1..=max` (`0..=max` when `zero_ok`); the error names `param` and the model's limit.
fn check_count(value: Option<u32>, max: u32, zero_ok: bool, param: &str) -> Result<()> {
    let min = u32::from(!zero_ok);
    match value {
        Some(v) if v < min || v > max => Err(Error::invalid_request(
            format!("`{param}` must be between {min} and {max} for this model, got {v}"),
            Some(param),
        )),
        _ => Ok(()),
    }
}

/// Output-length settings of other servers (llama.cpp, TGI, Ollama) that a request could carry as extra fields:
/// forwarded, they would let an upstream generate past `max_tokens`, which is what budgets bound.
const FOREIGN_OUTPUT_CAPS: [&str; 4] = ["n_predict", "max_new_tokens", "num_predict", "max_length"];

/// Refuses an extra field that sets the output length outside `max_tokens`.
fn check_foreign_caps(extra: &crate::wire::Extra) -> Result<()> {
    match FOREIGN_OUTPUT_CAPS.iter().find(|field| extra.contains_key(**field)) {
        Some(field) => Err(Error::invalid_request(
            format!(
                "`{field}` is not accepted: it sets the output length outside `max_tokens`, which budgets bound; use `max_tokens`"
            ),
            Some(field),
        )),
        None => Ok(()),
    }
}

/// The outputs one upstream call generates (the larger of `n` and `best_of`, times the prompts), within the
/// model's limit.
fn check_generations(generations: u32, limits: &RequestLimits) -> Result<()> {
    if generations > limits.generations {
        return Err(Error::invalid_request(
            format!(
                "the request asks the upstream for {generations} outputs (the larger of `n` and `best_of`, times the \
                 prompts); this model allows at most {}",
                limits.generations
            ),
            Some("n"),
        ));
    }
    Ok(())
}

/// `best_of` (legacy completions, and vLLM's chat extension): at most the model's limit and at least `n`,
/// and not on a stream (the candidates are ranked once all are complete).
fn check_best_of(best_of: Option<u32>, n: Option<u32>, streams: bool, limits: &RequestLimits) -> Result<()> {
    check_count(best_of, limits.best_of, false, "best_of")?;
    let (Some(best_of), n) = (best_of, n.unwrap_or(1)) else { return Ok(()) };
    if best_of < n {
        return Err(Error::invalid_request(
            format!("`best_of` ({best_of}) must be at least `n` ({n})"),
            Some("best_of"),
        ));
    }
    if streams && best_of > 1 {
        return Err(Error::invalid_request("`best_of` greater than 1 cannot be streamed", Some("best_of")));
    }
    Ok(())
}

/// `best_of` as a chat request may carry it (an extension some upstreams read, forwarded as sent): a
/// non-negative integer, or absent. Anything else is refused, since it would be forwarded unbounded.
fn chat_best_of(req: &ChatCompletionRequest) -> Result<Option<u32>> {
    match req.extra.get("best_of") {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .and_then(|v| u32::try_from(v).ok())
            .map(Some)
            .ok_or_else(|| Error::invalid_request("`best_of` must be a positive integer", Some("best_of"))),
    }
}

fn check_cap(cap: Option<u32>, param: &str) -> Result<()> {
    if cap == Some(0) {
        return Err(Error::invalid_request(format!("`{param}` must be at least 1"), Some(param)));
    }
    Ok(())
}

/// OpenAI refuses `stream_options` on a request that does not stream.
fn check_stream_options(has_options: bool, streams: bool) -> Result<()> {
    if has_options && !streams {
        return Err(Error::invalid_request(
            "`stream_options` is only allowed when `stream` is true",
            Some("stream_options"),
        ));
    }
    Ok(())
}

/// The sampling parameters chat and legacy completions share.
fn check_sampling(
    temperature: Option<f64>,
    top_p: Option<f64>,
    n: Option<u32>,
    max_tokens: Option<u32>,
    limits: &RequestLimits,
) -> Result<()> {
    check_range(temperature, 0.0, 2.0, "temperature")?;
    check_range(top_p, 0.0, 1.0, "top_p")?;
    check_count(n, limits.n, false, "n")?;
    check_cap(max_tokens, "max_tokens")
}

/// How many items an array `prompt` or `input` holds (one for a single text or token list).
fn check_items(items: usize, limits: &RequestLimits, param: &str) -> Result<()> {
    if items > limits.inputs as usize {
        return Err(Error::invalid_request(
            format!("`{param}` may hold at most {} items for this model, got {items}", limits.inputs),
            Some(param),
        ));
    }
    Ok(())
}

/// Chat completions, answered typed or as JSON (`A`).
pub(crate) struct ChatEndpoint<A = ChatCompletionResponse>(PhantomData<fn() -> A>);

/// Chat completions answered typed.
pub(crate) type TypedChatEndpoint = ChatEndpoint<ChatCompletionResponse>;

impl<A: ChatResponseBody> EndpointSpec for ChatEndpoint<A> {
    type Req = ChatCompletionRequest;
    type Resp = A;
    const ENDPOINT: Endpoint = Endpoint::ChatCompletions;
    const CAPABILITY: Capability = Capability::Chat;
    const KIND: ModelKind = ModelKind::Chat;
    const SEMANTIC: bool = true;

    fn model(req: &Self::Req) -> &str {
        &req.model
    }

    fn validate(req: &Self::Req, limits: &RequestLimits) -> Result<()> {
        if req.messages.is_empty() {
            return Err(Error::invalid_request("`messages` must contain at least one message", Some("messages")));
        }
        check_sampling(req.temperature, req.top_p, req.n, req.max_tokens, limits)?;
        check_cap(req.max_completion_tokens, "max_completion_tokens")?;
        check_count(req.top_logprobs, limits.top_logprobs, true, "top_logprobs")?;
        check_best_of(chat_best_of(req)?, req.n, req.is_stream(), limits)?;
        check_foreign_caps(&req.extra)?;
        check_generations(Self::generations(req), limits)?;
        check_stream_options(req.stream_options.is_some(), req.is_stream())
    }

    fn cacheable(policy: CachePolicy, req: &Self::Req) -> bool {
        policy.allows_chat(req)
    }

    fn key(scope: CacheScope<'_>, req: &Self::Req) -> CacheKey {
        keys::chat_key(scope, req)
    }

    fn prompt_tokens(req: &Self::Req) -> u64 {
        tokens::estimate_chat_prompt(req)
    }

    fn output_cap(req: &Self::Req) -> Option<u32> {
        req.output_bound()
    }

    fn choices(req: &Self::Req) -> u32 {
        req.n.unwrap_or(1)
    }

    fn generations(req: &Self::Req) -> u32 {
        // `validate` ran first, so a `best_of` present is a valid integer.
        let best_of = chat_best_of(req).ok().flatten().unwrap_or(1);
        Self::choices(req).max(best_of)
    }

    fn prepare_upstream(req: &mut Self::Req, upstream_model: &str, cap: Option<(OutputCapField, u32)>) {
        upstream_model.clone_into(&mut req.model);
        match cap {
            Some((OutputCapField::MaxTokens, c)) => req.max_tokens = Some(c),
            Some((OutputCapField::MaxCompletionTokens, c)) => req.max_completion_tokens = Some(c),
            None => {}
        }
    }

    fn call(provider: Arc<dyn Provider>, mut req: Self::Req) -> BoxFuture<'static, Result<Self::Resp>> {
        req.stream = None;
        req.stream_options = None;
        A::call(provider, req)
    }

    fn usage(resp: &Self::Resp) -> Option<Usage> {
        resp.usage()
    }

    fn for_client(resp: Self::Resp, _req: &Self::Req) -> Result<Self::Resp> {
        Ok(resp)
    }

    fn complete(resp: &Self::Resp) -> bool {
        resp.complete()
    }

    fn encode(resp: &Self::Resp) -> std::result::Result<Bytes, String> {
        resp.encode()
    }

    fn decode(entry: Bytes) -> std::result::Result<Self::Resp, String> {
        A::decode(entry)
    }

    fn set_model(req: &mut Self::Req, model: &str) {
        model.clone_into(&mut req.model);
    }

    fn as_chat(req: &Self::Req) -> Option<&ChatCompletionRequest> {
        Some(req)
    }

    fn as_chat_response(resp: &Self::Resp) -> Option<Cow<'_, ChatCompletionResponse>> {
        resp.typed()
    }
}

pub(crate) struct CompletionEndpoint;

/// Prompts in a legacy completion request: each gets its own choices (at least one).
fn prompt_count(prompt: &PromptInput) -> u32 {
    let prompts = match prompt {
        PromptInput::Texts(v) => v.len(),
        PromptInput::TokenLists(v) => v.len(),
        PromptInput::Text(_) | PromptInput::Tokens(_) => 1,
    };
    u32::try_from(prompts.max(1)).unwrap_or(u32::MAX)
}

/// OpenAI's default `max_tokens` for legacy completions.
const LEGACY_DEFAULT_MAX_TOKENS: u32 = 16;

impl EndpointSpec for CompletionEndpoint {
    type Req = CompletionRequest;
    type Resp = CompletionResponse;
    const ENDPOINT: Endpoint = Endpoint::Completions;
    const CAPABILITY: Capability = Capability::Completions;
    const KIND: ModelKind = ModelKind::Chat;

    fn model(req: &Self::Req) -> &str {
        &req.model
    }

    fn validate(req: &Self::Req, limits: &RequestLimits) -> Result<()> {
        check_sampling(req.temperature, req.top_p, req.n, req.max_tokens, limits)?;
        check_items(prompt_count(&req.prompt) as usize, limits, "prompt")?;
        check_count(req.logprobs, limits.top_logprobs, true, "logprobs")?;
        check_best_of(req.best_of, req.n, req.is_stream(), limits)?;
        check_foreign_caps(&req.extra)?;
        check_generations(Self::generations(req), limits)?;
        check_stream_options(req.stream_options.is_some(), req.is_stream())
    }

    fn cacheable(policy: CachePolicy, req: &Self::Req) -> bool {
        policy.allows_completion(req)
    }

    fn key(scope: CacheScope<'_>, req: &Self::Req) -> CacheKey {
        keys::completion_key(scope, req)
    }

    fn prompt_tokens(req: &Self::Req) -> u64 {
        tokens::estimate_completion_prompt(&req.prompt)
    }

    fn output_cap(req: &Self::Req) -> Option<u32> {
        Some(req.max_tokens.unwrap_or(LEGACY_DEFAULT_MAX_TOKENS))
    }

    fn choices(req: &Self::Req) -> u32 {
        req.n.unwrap_or(1).saturating_mul(prompt_count(&req.prompt))
    }

    fn generations(req: &Self::Req) -> u32 {
        // Every `best_of` candidate is generated and billed; the `n` best of them are returned.
        req.n.unwrap_or(1).max(req.best_of.unwrap_or(1)).saturating_mul(prompt_count(&req.prompt))
    }

    fn prepare_upstream(req: &mut Self::Req, upstream_model: &str, _cap: Option<(OutputCapField, u32)>) {
        upstream_model.clone_into(&mut req.model);
    }

    fn call(provider: Arc<dyn Provider>, mut req: Self::Req) -> BoxFuture<'static, Result<Self::Resp>> {
        req.stream = None;
        req.stream_options = None;
        Box::pin(async move { provider.completion(req).await })
    }

    fn usage(resp: &Self::Resp) -> Option<Usage> {
        resp.usage.clone()
    }

    fn for_client(resp: Self::Resp, _req: &Self::Req) -> Result<Self::Resp> {
        Ok(resp)
    }

    fn complete(resp: &Self::Resp) -> bool {
        !resp.choices.is_empty() && resp.choices.iter().all(|c| c.finish_reason.is_some())
    }

    fn encode(resp: &Self::Resp) -> std::result::Result<Bytes, String> {
        encode_json(resp)
    }

    fn decode(entry: Bytes) -> std::result::Result<Self::Resp, String> {
        decode_json(&entry)
    }

    fn set_model(req: &mut Self::Req, model: &str) {
        model.clone_into(&mut req.model);
    }
}

pub(crate) struct EmbeddingEndpoint;

impl EndpointSpec for EmbeddingEndpoint {
    type Req = EmbeddingRequest;
    type Resp = EmbeddingResponse;
    const ENDPOINT: Endpoint = Endpoint::Embeddings;
    const CAPABILITY: Capability = Capability::Embeddings;
    const KIND: ModelKind = ModelKind::Embedding;

    fn model(req: &Self::Req) -> &str {
        &req.model
    }

    fn validate(req: &Self::Req, limits: &RequestLimits) -> Result<()> {
        if req.input.is_empty() {
            return Err(Error::invalid_request("`input` must not be empty", Some("input")));
        }
        check_items(req.input.len(), limits, "input")?;
        check_count(req.dimensions, limits.dimensions, false, "dimensions")
    }

    fn cacheable(policy: CachePolicy, _req: &Self::Req) -> bool {
        policy.allows_embeddings()
    }

    fn key(scope: CacheScope<'_>, req: &Self::Req) -> CacheKey {
        keys::embedding_key(scope, req)
    }

    fn prompt_tokens(req: &Self::Req) -> u64 {
        tokens::estimate_embedding_input(&req.input)
    }

    fn output_cap(_req: &Self::Req) -> Option<u32> {
        Some(0)
    }

    fn choices(_req: &Self::Req) -> u32 {
        1
    }

    fn prepare_upstream(req: &mut Self::Req, upstream_model: &str, _cap: Option<(OutputCapField, u32)>) {
        upstream_model.clone_into(&mut req.model);
        // Providers return floats; the gateway encodes for the client.
        req.encoding_format = None;
    }

    fn call(provider: Arc<dyn Provider>, req: Self::Req) -> BoxFuture<'static, Result<Self::Resp>> {
        Box::pin(async move { provider.embeddings(req).await })
    }

    fn usage(resp: &Self::Resp) -> Option<Usage> {
        Some(Usage::new(resp.usage.prompt_tokens, 0))
    }

    fn for_client(mut resp: Self::Resp, req: &Self::Req) -> Result<Self::Resp> {
        let format = req.encoding_format.unwrap_or(EncodingFormat::Float);
        for e in &mut resp.data {
            e.embedding = e.embedding.encode(format)?;
        }
        Ok(resp)
    }

    fn complete(resp: &Self::Resp) -> bool {
        !resp.data.is_empty()
    }

    fn encode(resp: &Self::Resp) -> std::result::Result<Bytes, String> {
        encode_json(resp)
    }

    fn decode(entry: Bytes) -> std::result::Result<Self::Resp, String> {
        decode_json(&entry)
    }

    fn set_model(req: &mut Self::Req, model: &str) {
        model.clone_into(&mut req.model);
    }
}
