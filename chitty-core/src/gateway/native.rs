//! The Responses and Messages APIs on the one pipeline, passed through or translated per route.
//!
//! A request keeps both forms: the client's own body and its translation to a chat completion. When the route
//! that is tried declares the API natively ([`Capability::Responses`], [`Capability::Messages`]), the body goes
//! upstream with only `model` rewritten (and the output cap set when the gateway caps it), unknown fields kept,
//! and the answer or event stream comes back as the upstream sent it; any other route gets the chat
//! translation. So a model whose first route is native and whose fallback is chat-only passes through on the
//! first and translates on the second. Budgets reserve from the token bound and settle on the usage the
//! upstream reports (`usage` of a response object or `response.completed`; Anthropic's `message_start` and
//! `message_delta`); rate limits, routing, breakers, events and the cache apply as for chat.

use std::borrow::Cow;
use std::marker::PhantomData;
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::config::{ModelKind, OutputCapField, RequestLimits};
use super::endpoint::{ChatResponseBody, EndpointSpec, TypedChatEndpoint};
use super::pipeline::WholeAnswer;
use super::stream::{Identity, Progress, StreamReply, StreamSpec, Streamed};
use super::tenant::RequestContext;
use super::{Gateway, Reply};
use crate::error::{Error, Result};
use crate::events::Endpoint;
use crate::keys::{self, CacheKey, CachePolicy, CacheScope};
use crate::provider::{Capability, NativeEventStream, Provider};
use crate::tokens;
use crate::wire::responses::NativeChunk;
use crate::wire::{
    AnthropicErrorEnvelope, ChatCompletionRequest, ChatCompletionResponse, ChunkAccumulator, Extra, MessagesRequest,
    MessagesResponse, MessagesStreamTranslator, PromptTokensDetails, StreamOptions, Usage,
};

/// Bytes of text per replayed chunk when a cached translated answer is streamed.
const REPLAY_PIECE_BYTES: usize = 24;

/// What differs between the two native APIs.
pub(crate) trait NativeApi: Send + Sync + 'static {
    /// What a provider that speaks the API declares.
    const CAPABILITY: Capability;
    /// The body field holding the output cap.
    const CAP_FIELD: &'static str;
    /// Names the API in cache keys.
    const KEY: &'static str;

    fn call(provider: Arc<dyn Provider>, body: Value) -> BoxFuture<'static, Result<Value>>;
    fn open(provider: Arc<dyn Provider>, body: Value) -> BoxFuture<'static, Result<NativeEventStream>>;
    /// The usage a whole answer reports.
    fn usage(answer: &Value) -> Option<Usage>;
    /// Folds what one stream event reports about usage into `counts`.
    fn event_usage(event: &Value, counts: &mut TokenCounts);
    /// Whether a whole answer is complete enough to cache.
    fn complete(answer: &Value) -> bool;
    /// Whether `event` ends a stream that completed.
    fn completes(event: &Value) -> bool;
    /// Bytes of generated text an event carries, for settling a stream that reported no usage.
    fn generated_len(event: &Value) -> usize;
}

/// Token counts read from native usage objects; a stream's later events report only what changed.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct TokenCounts {
    seen: bool,
    input: u64,
    output: u64,
    cache_read: u64,
    cache_creation: u64,
}

impl TokenCounts {
    /// Takes the counts an Anthropic usage object reports.
    fn update_anthropic(&mut self, usage: &Value) {
        let fields = [
            (&mut self.input, "input_tokens"),
            (&mut self.output, "output_tokens"),
            (&mut self.cache_read, "cache_read_input_tokens"),
            (&mut self.cache_creation, "cache_creation_input_tokens"),
        ];
        for (count, field) in fields {
            if let Some(reported) = usage.get(field).and_then(Value::as_u64) {
                *count = reported;
                self.seen = true;
            }
        }
    }

    /// Takes the counts an OpenAI Responses usage object reports.
    fn update_responses(&mut self, usage: &Value) {
        let (Some(input), Some(output)) =
            (usage.get("input_tokens").and_then(Value::as_u64), usage.get("output_tokens").and_then(Value::as_u64))
        else {
            return;
        };
        // OpenAI's input count includes the cached tokens: kept apart only for pricing.
        let cached = usage.pointer("/input_tokens_details/cached_tokens").and_then(Value::as_u64).unwrap_or(0);
        *self = TokenCounts {
            seen: true,
            input: input.saturating_sub(cached),
            output,
            cache_read: cached,
            cache_creation: 0,
        };
    }

    /// The counts as chat usage (cached and cache-writing input are prompt tokens), when any were reported.
    fn to_usage(self) -> Option<Usage> {
        if !self.seen {
            return None;
        }
        let prompt = self.input.saturating_add(self.cache_read).saturating_add(self.cache_creation);
        let mut usage = Usage::new(prompt, self.output);
        if self.cache_read > 0 {
            usage.prompt_tokens_details =
                Some(PromptTokensDetails { cached_tokens: Some(self.cache_read), extra: Extra::new() });
        }
        Some(usage)
    }
}

fn event_type(event: &Value) -> &str {
    event.get("type").and_then(Value::as_str).unwrap_or_default()
}

fn str_len(value: Option<&Value>) -> usize {
    value.and_then(Value::as_str).map_or(0, str::len)
}

/// OpenAI's Responses API.
pub(crate) struct ResponsesApi;

impl NativeApi for ResponsesApi {
    const CAPABILITY: Capability = Capability::Responses;
    const CAP_FIELD: &'static str = "max_output_tokens";
    const KEY: &'static str = "chitty.native.responses";

    fn call(provider: Arc<dyn Provider>, body: Value) -> BoxFuture<'static, Result<Value>> {
        Box::pin(async move { provider.responses(body).await })
    }

    fn open(provider: Arc<dyn Provider>, body: Value) -> BoxFuture<'static, Result<NativeEventStream>> {
        Box::pin(async move { provider.responses_stream(body).await })
    }

    fn usage(answer: &Value) -> Option<Usage> {
        let mut counts = TokenCounts::default();
        counts.update_responses(answer.get("usage")?);
        counts.to_usage()
    }

    fn event_usage(event: &Value, counts: &mut TokenCounts) {
        if let "response.completed" | "response.incomplete" | "response.failed" = event_type(event)
            && let Some(usage) = event.pointer("/response/usage")
        {
            counts.update_responses(usage);
        }
    }

    fn complete(answer: &Value) -> bool {
        answer.get("status").and_then(Value::as_str) == Some("completed")
    }

    fn completes(event: &Value) -> bool {
        event_type(event) == "response.completed"
    }

    fn generated_len(event: &Value) -> usize {
        match event_type(event) {
            "response.output_text.delta" | "response.function_call_arguments.delta" | "response.refusal.delta" => {
                str_len(event.get("delta"))
            }
            _ => 0,
        }
    }
}

/// Anthropic's Messages API.
pub(crate) struct MessagesApi;

impl NativeApi for MessagesApi {
    const CAPABILITY: Capability = Capability::Messages;
    const CAP_FIELD: &'static str = "max_tokens";
    const KEY: &'static str = "chitty.native.messages";

    fn call(provider: Arc<dyn Provider>, body: Value) -> BoxFuture<'static, Result<Value>> {
        Box::pin(async move { provider.messages(body).await })
    }

    fn open(provider: Arc<dyn Provider>, body: Value) -> BoxFuture<'static, Result<NativeEventStream>> {
        Box::pin(async move { provider.messages_stream(body).await })
    }

    fn usage(answer: &Value) -> Option<Usage> {
        let mut counts = TokenCounts::default();
        counts.update_anthropic(answer.get("usage")?);
        counts.to_usage()
    }

    fn event_usage(event: &Value, counts: &mut TokenCounts) {
        let usage = match event_type(event) {
            "message_start" => event.pointer("/message/usage"),
            "message_delta" => event.get("usage"),
            _ => None,
        };
        if let Some(usage) = usage {
            counts.update_anthropic(usage);
        }
    }

    fn complete(answer: &Value) -> bool {
        answer.get("stop_reason").is_some_and(|r| !r.is_null())
    }

    fn completes(event: &Value) -> bool {
        event_type(event) == "message_stop"
    }

    fn generated_len(event: &Value) -> usize {
        if event_type(event) != "content_block_delta" {
            return 0;
        }
        let delta = event.get("delta");
        ["text", "partial_json", "thinking"].iter().map(|f| str_len(delta.and_then(|d| d.get(*f)))).sum()
    }
}

/// Which routes may take the client's body as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum NativeRoutes {
    /// Any route whose provider speaks the API.
    Any,
    /// Only this provider's routes: the request continues a response that upstream made.
    Only(String),
    /// None: the request continues a conversation only the gateway knows.
    Never,
}

/// A Responses or Messages request in both forms.
#[derive(Debug, Clone)]
pub(crate) struct NativeRequest {
    /// The public model name.
    model: String,
    /// The client's body (its `model` rewritten per route).
    body: Value,
    /// The chat translation, or why there is none (a field chat cannot express): only native routes serve then.
    chat: std::result::Result<ChatCompletionRequest, (String, Option<String>)>,
    native: NativeRoutes,
    stream: bool,
}

impl NativeRequest {
    /// `body` (the client's JSON object) and its translation `chat`; `stream` says whether events are wanted.
    pub(crate) fn new(
        model: String,
        body: Value,
        chat: Result<ChatCompletionRequest>,
        native: NativeRoutes,
        stream: bool,
    ) -> NativeRequest {
        let chat = chat
            .map(|mut chat| {
                if stream {
                    chat.stream = Some(true);
                    // The usage chunk settles the stream and the translators report it.
                    chat.stream_options = Some(StreamOptions { include_usage: Some(true), extra: Extra::new() });
                } else {
                    chat.stream = None;
                    chat.stream_options = None;
                }
                chat
            })
            .map_err(|e| match e {
                Error::InvalidRequest { message, param } => (message, param),
                other => (other.to_string(), None),
            });
        NativeRequest { model, body, chat, native, stream }
    }

    /// Whether `provider` gets the body as it is.
    fn native_on<A: NativeApi>(&self, provider: &dyn Provider) -> bool {
        provider.capabilities().contains(A::CAPABILITY)
            && match &self.native {
                NativeRoutes::Any => true,
                NativeRoutes::Only(name) => name == provider.name(),
                NativeRoutes::Never => false,
            }
    }

    /// The chat translation, or the 400 a chat-only route answers when there is none.
    fn chat(&self) -> Result<ChatCompletionRequest> {
        self.chat.clone().map_err(|(message, param)| Error::InvalidRequest {
            message: format!("{message} (this route translates to chat completions)"),
            param,
        })
    }

    /// The body to send upstream: the client's, without `stream` unless it streams.
    fn upstream_body(&self) -> Value {
        let mut body = self.body.clone();
        if let Some(map) = body.as_object_mut() {
            if self.stream {
                map.insert("stream".to_owned(), Value::Bool(true));
            } else {
                map.remove("stream");
            }
        }
        body
    }
}

/// An answer: the upstream's own (a whole one, or a stream's events), or a chat completion to translate.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
// Moved once per answer or chunk: boxing the chat variant would add an allocation to each, for no gain.
#[allow(clippy::large_enum_variant)]
pub(crate) enum NativeAnswer {
    /// The upstream's response object or message, as it sent it.
    Native(Value),
    /// A streamed native answer's events, as they came (a cache entry of a stream).
    Events(Vec<Value>),
    /// A chat completion from a route that translates.
    Chat(ChatCompletionResponse),
}

/// The Responses or Messages endpoint (`A`), passing through or translating per route.
pub(crate) struct NativeEndpoint<A>(PhantomData<fn() -> A>);

impl<A: NativeApi> EndpointSpec for NativeEndpoint<A> {
    type Req = NativeRequest;
    type Resp = NativeAnswer;
    // Events and metrics count these requests with chat completions, as the translation did before.
    const ENDPOINT: Endpoint = Endpoint::ChatCompletions;
    const CAPABILITY: Capability = Capability::Chat;
    const KIND: ModelKind = ModelKind::Chat;

    fn model(req: &NativeRequest) -> &str {
        &req.model
    }

    fn validate(req: &NativeRequest, limits: &RequestLimits) -> Result<()> {
        match &req.chat {
            Ok(chat) => TypedChatEndpoint::validate(chat, limits),
            // Refused by the chat-only routes when they are tried; a native one judges the rest.
            Err(_) => match req.body.get(A::CAP_FIELD) {
                Some(v) if v.as_u64().is_none_or(|n| n == 0 || n > u64::from(u32::MAX)) => Err(Error::invalid_request(
                    format!("`{}` must be a positive integer", A::CAP_FIELD),
                    Some(A::CAP_FIELD),
                )),
                _ => Ok(()),
            },
        }
    }

    fn cacheable(policy: CachePolicy, req: &NativeRequest) -> bool {
        req.chat.as_ref().is_ok_and(|chat| policy.allows_chat(chat))
    }

    fn key(scope: CacheScope<'_>, req: &NativeRequest) -> CacheKey {
        // The whole body (fields chat drops, `stream`) decides the answer: a native upstream reads every field.
        let mut extra = Extra::new();
        extra.insert(A::KEY.to_owned(), req.body.clone());
        keys::chat_key(scope, &ChatCompletionRequest { model: req.model.clone(), extra, ..Default::default() })
    }

    fn prompt_tokens(req: &NativeRequest) -> u64 {
        match &req.chat {
            Ok(chat) => tokens::estimate_chat_prompt(chat),
            // Every prompt token is in the body's text; its JSON bounds them.
            Err(_) => tokens::estimate_text(&req.body.to_string()),
        }
    }

    fn output_cap(req: &NativeRequest) -> Option<u32> {
        match &req.chat {
            Ok(chat) => chat.output_bound(),
            Err(_) => req.body.get(A::CAP_FIELD).and_then(Value::as_u64).and_then(|n| u32::try_from(n).ok()),
        }
    }

    fn choices(_req: &NativeRequest) -> u32 {
        1
    }

    fn prepare_upstream(req: &mut NativeRequest, upstream_model: &str, cap: Option<(OutputCapField, u32)>) {
        if let Ok(chat) = &mut req.chat {
            TypedChatEndpoint::prepare_upstream(chat, upstream_model, cap);
        }
        if let Some(map) = req.body.as_object_mut() {
            map.insert("model".to_owned(), Value::String(upstream_model.to_owned()));
            if let Some((_, cap)) = cap {
                map.insert(A::CAP_FIELD.to_owned(), json!(cap));
            }
        }
    }

    fn call(provider: Arc<dyn Provider>, req: NativeRequest) -> BoxFuture<'static, Result<NativeAnswer>> {
        if req.native_on::<A>(provider.as_ref()) {
            let body = req.upstream_body();
            return Box::pin(async move { A::call(provider, body).await.map(NativeAnswer::Native) });
        }
        match req.chat() {
            Ok(chat) => Box::pin(async move {
                <ChatCompletionResponse as ChatResponseBody>::call(provider, chat).await.map(NativeAnswer::Chat)
            }),
            Err(e) => Box::pin(async move { Err(e) }),
        }
    }

    fn usage(resp: &NativeAnswer) -> Option<Usage> {
        match resp {
            NativeAnswer::Native(answer) => A::usage(answer),
            NativeAnswer::Events(events) => {
                let mut counts = TokenCounts::default();
                events.iter().for_each(|e| A::event_usage(e, &mut counts));
                counts.to_usage()
            }
            NativeAnswer::Chat(chat) => chat.usage.clone(),
        }
    }

    fn for_client(resp: NativeAnswer, _req: &NativeRequest) -> Result<NativeAnswer> {
        Ok(resp)
    }

    fn complete(resp: &NativeAnswer) -> bool {
        match resp {
            NativeAnswer::Native(answer) => A::complete(answer),
            NativeAnswer::Events(events) => events.last().is_some_and(A::completes),
            NativeAnswer::Chat(chat) => ChatResponseBody::complete(chat),
        }
    }

    fn encode(resp: &NativeAnswer) -> std::result::Result<Bytes, String> {
        serde_json::to_vec(resp).map(Bytes::from).map_err(|e| e.to_string())
    }

    fn decode(entry: Bytes) -> std::result::Result<NativeAnswer, String> {
        serde_json::from_slice(&entry).map_err(|e| e.to_string())
    }

    fn set_model(req: &mut NativeRequest, model: &str) {
        model.clone_into(&mut req.model);
        if let Ok(chat) = &mut req.chat {
            model.clone_into(&mut chat.model);
        }
        if let Some(map) = req.body.as_object_mut() {
            map.insert("model".to_owned(), Value::String(model.to_owned()));
        }
    }

    fn as_chat(req: &NativeRequest) -> Option<&ChatCompletionRequest> {
        req.chat.as_ref().ok()
    }

    fn as_chat_response(resp: &NativeAnswer) -> Option<Cow<'_, ChatCompletionResponse>> {
        // A native answer is the upstream's own shape: the cascade checks translated answers only.
        match resp {
            NativeAnswer::Chat(chat) => Some(Cow::Borrowed(chat)),
            NativeAnswer::Native(_) | NativeAnswer::Events(_) => None,
        }
    }
}

/// What a relayed stream has produced so far.
#[derive(Default)]
pub(crate) struct NativeAccumulator {
    chat: ChunkAccumulator,
    /// The native events, for the cache.
    events: Vec<Value>,
    counts: TokenCounts,
    usage: Option<Usage>,
    generated_len: usize,
}

impl<A: NativeApi> StreamSpec for NativeEndpoint<A> {
    type Chunk = NativeChunk;
    type Accumulator = NativeAccumulator;
    const ROUTE_CAPABILITY: Capability = Capability::ChatStream;

    fn is_stream(req: &NativeRequest) -> bool {
        req.stream
    }

    fn wants_usage(_req: &NativeRequest) -> bool {
        // The translators report the usage chunk in their own final events.
        true
    }

    async fn open(provider: Arc<dyn Provider>, req: NativeRequest) -> Result<BoxStream<'static, Result<NativeChunk>>> {
        if req.native_on::<A>(provider.as_ref()) {
            let body = req.upstream_body();
            let events = A::open(provider, body).await?;
            return Ok(events.map(|e| e.map(NativeChunk::Native)).boxed());
        }
        let chunks = provider.chat_stream(req.chat()?).await?;
        Ok(chunks.map(|c| c.map(NativeChunk::Chat)).boxed())
    }

    fn carries_output(chunk: &NativeChunk) -> bool {
        match chunk {
            NativeChunk::Chat(chunk) => TypedChatEndpoint::carries_output(chunk),
            // A relayed event has reached the client's event sequence: no other route may start it again.
            NativeChunk::Native(_) => true,
        }
    }

    fn observe(chunk: &NativeChunk, progress: &mut Progress) {
        if let NativeChunk::Chat(chunk) = chunk {
            TypedChatEndpoint::observe(chunk, progress);
        }
    }

    fn continuation(
        _req: &NativeRequest,
        _text: &str,
        _produced: u64,
        _gateway_cap: Option<(OutputCapField, u32)>,
    ) -> std::result::Result<NativeRequest, &'static str> {
        // The Responses and Messages event sequences are not stitched across attempts (chat streams are).
        Err("unsupported")
    }

    fn identity(chunk: &NativeChunk) -> Identity {
        match chunk {
            NativeChunk::Chat(chunk) => TypedChatEndpoint::identity(chunk),
            NativeChunk::Native(_) => Identity { id: String::new(), created: 0, model: String::new() },
        }
    }

    fn rebrand(chunk: &mut NativeChunk, identity: &Identity, leading_space: bool) -> bool {
        match chunk {
            NativeChunk::Chat(chunk) => TypedChatEndpoint::rebrand(chunk, identity, leading_space),
            NativeChunk::Native(_) => false,
        }
    }

    fn set_usage(chunk: &mut NativeChunk, usage: Usage) {
        if let NativeChunk::Chat(chunk) = chunk {
            chunk.usage = Some(usage);
        }
    }

    fn push(acc: &mut NativeAccumulator, chunk: &NativeChunk) {
        match chunk {
            NativeChunk::Chat(chunk) => acc.chat.push(chunk),
            NativeChunk::Native(event) => {
                A::event_usage(event, &mut acc.counts);
                acc.usage = acc.counts.to_usage();
                acc.generated_len += A::generated_len(event);
                acc.events.push(event.clone());
            }
        }
    }

    fn accumulated_usage(acc: &NativeAccumulator) -> Option<&Usage> {
        if acc.events.is_empty() { acc.chat.usage() } else { acc.usage.as_ref() }
    }

    fn generated_len(acc: &NativeAccumulator) -> usize {
        acc.chat.generated_text_len() + acc.generated_len
    }

    fn echoed_len(_req: &NativeRequest) -> usize {
        0
    }

    fn finish(acc: NativeAccumulator) -> NativeAnswer {
        if acc.events.is_empty() { NativeAnswer::Chat(acc.chat.finish()) } else { NativeAnswer::Events(acc.events) }
    }

    fn replay(resp: &NativeAnswer, include_usage: bool) -> Vec<NativeChunk> {
        match resp {
            NativeAnswer::Chat(chat) => {
                chat.to_chunks(REPLAY_PIECE_BYTES, include_usage).into_iter().map(NativeChunk::Chat).collect()
            }
            NativeAnswer::Events(events) => events.iter().cloned().map(NativeChunk::Native).collect(),
            // The key holds `stream`: a whole answer is never looked up for a stream.
            NativeAnswer::Native(_) => Vec::new(),
        }
    }
}

/// The Responses endpoint.
pub(super) type ResponsesEndpoint = NativeEndpoint<ResponsesApi>;
/// The Messages endpoint.
type MessagesEndpoint = NativeEndpoint<MessagesApi>;

impl Gateway {
    /// A Responses request through the pipeline, answered whole.
    pub(super) async fn responses_answer(
        &self,
        ctx: &RequestContext,
        req: NativeRequest,
    ) -> Result<Reply<NativeAnswer>> {
        self.execute::<ResponsesEndpoint, WholeAnswer>(ctx, req).await
    }

    /// A Responses request through the pipeline, streamed.
    pub(super) async fn responses_events(
        &self,
        ctx: &RequestContext,
        req: NativeRequest,
    ) -> Result<StreamReply<NativeChunk>> {
        self.execute::<ResponsesEndpoint, Streamed>(ctx, req).await
    }

    /// `POST /v1/messages`, answered whole: the upstream's message as it sent it when the route speaks the
    /// Messages API (`body`, the client's JSON, passed through with `model` rewritten), else `request`
    /// translated to a chat completion and its answer back. Same pipeline as [`Gateway::chat`].
    pub async fn messages(&self, ctx: &RequestContext, request: MessagesRequest, body: Value) -> Result<Reply<Value>> {
        let req = messages_request(request, body, false)?;
        let reply = self.execute::<MessagesEndpoint, WholeAnswer>(ctx, req).await?;
        let message = match reply.body {
            NativeAnswer::Native(message) => message,
            NativeAnswer::Chat(chat) => {
                serde_json::to_value(MessagesResponse::from_chat(&chat)).map_err(|e| Error::backend("serialize", e))?
            }
            NativeAnswer::Events(_) => return Err(Error::backend("cache", "a stream's entry served a whole answer")),
        };
        Ok(Reply { body: message, meta: reply.meta })
    }

    /// `POST /v1/messages` with `"stream": true`: Anthropic's events, relayed from a route that speaks the
    /// Messages API or translated from a chat stream, each as its JSON (its `type` names it). Errors before
    /// the first event come back as `Err`; a failure after it is the stream's last event (`error`).
    pub async fn messages_stream(
        &self,
        ctx: &RequestContext,
        request: MessagesRequest,
        body: Value,
    ) -> Result<StreamReply<Value>> {
        let req = messages_request(request, body, true)?;
        let reply = self.execute::<MessagesEndpoint, Streamed>(ctx, req).await?;
        let state = MessagesRelay { chunks: Some(reply.chunks), translator: None, native: false };
        let events = futures::stream::unfold(state, |mut state| async move {
            loop {
                let chunks = state.chunks.as_mut()?;
                let events = match chunks.next().await {
                    Some(Ok(NativeChunk::Native(event))) => {
                        state.native = true;
                        vec![event]
                    }
                    Some(Ok(NativeChunk::Chat(chunk))) => state
                        .translator
                        .get_or_insert_with(MessagesStreamTranslator::new)
                        .push(&chunk)
                        .into_iter()
                        .filter_map(|e| serde_json::to_value(e).ok())
                        .collect(),
                    Some(Err(e)) => {
                        state.chunks = None;
                        vec![json!({"type": "error", "error": AnthropicErrorEnvelope::from_error(&e).error})]
                    }
                    None => {
                        state.chunks = None;
                        if state.native {
                            return None;
                        }
                        let mut translator = state.translator.take().unwrap_or_else(MessagesStreamTranslator::new);
                        translator.finish().into_iter().filter_map(|e| serde_json::to_value(e).ok()).collect()
                    }
                };
                if !events.is_empty() {
                    return Some((futures::stream::iter(events.into_iter().map(Ok)), state));
                }
            }
        })
        .flatten();
        Ok(StreamReply { meta: reply.meta, chunks: events.boxed() })
    }

    /// `POST /v1/messages/count_tokens`: the upstream's count when the model's first route speaks the
    /// Messages API, else the gateway's upper bound (the figure budgets reserve for). Unknown models and
    /// models the caller may not use are both [`Error::ModelNotFound`].
    pub async fn count_message_tokens(
        &self,
        ctx: &RequestContext,
        request: MessagesRequest,
        mut body: Value,
    ) -> Result<u64> {
        self.model(ctx, &request.model)?;
        let model =
            self.find_model(&request.model).ok_or_else(|| Error::ModelNotFound { model: request.model.clone() })?;
        if let Some(route) = model.routes.first()
            && route.provider.capabilities().contains(Capability::Messages)
        {
            let upstream = model.upstream_name(route, &request.model).to_owned();
            if let Some(map) = body.as_object_mut() {
                map.insert("model".to_owned(), Value::String(upstream));
            }
            return route.provider.count_message_tokens(body).await;
        }
        Ok(tokens::estimate_chat_prompt(&request.into_chat_prompt()?))
    }
}

/// A Messages request in both forms; `max_tokens` is required, as Anthropic requires it.
fn messages_request(request: MessagesRequest, body: Value, stream: bool) -> Result<NativeRequest> {
    match request.max_tokens {
        None => return Err(Error::invalid_request("max_tokens: Field required", Some("max_tokens"))),
        Some(0) => return Err(Error::invalid_request("max_tokens: must be at least 1", Some("max_tokens"))),
        Some(_) => {}
    }
    let model = request.model.clone();
    Ok(NativeRequest::new(model, body, request.into_chat(), NativeRoutes::Any, stream))
}

/// Where a relayed Messages stream stands.
struct MessagesRelay {
    chunks: Option<BoxStream<'static, Result<NativeChunk>>>,
    /// Made at the first chat chunk: a translated stream.
    translator: Option<MessagesStreamTranslator>,
    /// Whether the upstream's own events are relayed.
    native: bool,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn native_usage_reads_both_apis() {
        let responses = json!({"usage": {"input_tokens": 12, "output_tokens": 5,
            "input_tokens_details": {"cached_tokens": 4}}});
        let usage = ResponsesApi::usage(&responses).unwrap();
        assert_eq!((usage.prompt_tokens, usage.completion_tokens), (12, 5));
        assert_eq!(usage.prompt_tokens_details.unwrap().cached_tokens, Some(4));

        let mut counts = TokenCounts::default();
        let start = json!({"type": "message_start", "message": {"usage": {"input_tokens": 7,
            "cache_read_input_tokens": 3, "output_tokens": 1}}});
        MessagesApi::event_usage(&start, &mut counts);
        MessagesApi::event_usage(&json!({"type": "message_delta", "usage": {"output_tokens": 9}}), &mut counts);
        let usage = counts.to_usage().unwrap();
        assert_eq!((usage.prompt_tokens, usage.completion_tokens), (10, 9));
        assert!(TokenCounts::default().to_usage().is_none(), "nothing reported is no usage");
    }

    #[test]
    fn the_body_goes_upstream_with_model_and_cap_rewritten_and_unknown_fields_kept() {
        let body = json!({"model": "public", "input": "hi", "reasoning": {"effort": "low"}, "stream": true});
        let mut req = NativeRequest::new(
            "public".into(),
            body,
            Err(Error::invalid_request("no", None)),
            NativeRoutes::Any,
            false,
        );
        ResponsesEndpoint::prepare_upstream(&mut req, "gpt-x", Some((OutputCapField::MaxTokens, 33)));
        let sent = req.upstream_body();
        assert_eq!(
            sent,
            json!({"model": "gpt-x", "input": "hi", "reasoning": {"effort": "low"}, "max_output_tokens": 33})
        );
        assert!(req.chat().unwrap_err().to_string().contains("translates to chat"));
    }
}
