//! [`OpenAiProvider`]: any upstream that speaks OpenAI's HTTP API (OpenAI itself, vLLM, Groq, Together,
//! llama.cpp's server, Ollama's `/v1`, or another chitty gateway).
//!
//! Requests are forwarded as they arrive (fields chitty does not model travel in the wire types'
//! `extra` maps), over one pooled [`UpstreamClient`](crate::http_client::UpstreamClient). Errors keep the upstream's status, message and
//! `Retry-After`; a request that gets no answer within the timeout is [`Error::UpstreamTimeout`].
//!
//! Streams (chat and legacy completions) are always requested with `stream_options.include_usage = true`,
//! so the stream ends with a usage chunk and spend is settled from the upstream's own count. The provider
//! passes that chunk on whatever the caller's request said; the gateway forwards it to clients that asked
//! for it (see the [`Provider`] contract). A stream that ends without `data: [DONE]` ends with an error item, never a
//! clean end, and dropping the stream closes the upstream request. A server that ignores `stream` and
//! answers with one JSON body has its answer replayed as chunks.
//!
//! ```no_run
//! # async fn run() -> chitty_core::Result<()> {
//! use std::time::Duration;
//! use chitty_core::Provider;
//! use chitty_core::wire::{ChatCompletionRequest, ChatMessage};
//! use chitty_providers::openai::OpenAiProvider;
//!
//! // OPENAI_API_KEY and, when set, OPENAI_BASE_URL (e.g. `http://localhost:8000/v1` for vLLM).
//! let provider = OpenAiProvider::from_env("openai").with_timeout(Duration::from_secs(30)).build()?;
//! let answer = provider
//!     .chat(ChatCompletionRequest {
//!         model: "gpt-4o-mini".into(),
//!         messages: vec![ChatMessage::user("Say hi")],
//!         ..Default::default()
//!     })
//!     .await?;
//! println!("{}", answer.choices[0].message.text_content());
//! # Ok(()) }
//! ```

use std::time::Duration;

use async_trait::async_trait;
use chitty_core::wire::{
    ChatCompletionJson, ChatCompletionRequest, ChatCompletionResponse, CompletionRequest, CompletionResponse,
    EmbeddingRequest, EmbeddingResponse, EmbeddingVector, StreamChunk, StreamOptions,
};
use chitty_core::{
    Capabilities, Capability, ChunkStream, CompletionChunkStream, Error, NativeEventStream, Provider, Result,
    UpstreamFailure,
};
use futures::StreamExt;
use futures::stream::BoxStream;
use http::header::AUTHORIZATION;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::framing::sse::{self, SseEvent};
use crate::framing::{self, interrupted};
use crate::http_provider::{self, HttpUpstream, ProviderBuilder};

/// OpenAI's API, the default base URL.
pub const DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";
/// The default per-request timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

/// The upstream's endpoint URLs, parsed once when the provider is built.
#[derive(Debug, Clone)]
struct Endpoints {
    chat: http::Uri,
    completions: http::Uri,
    embeddings: http::Uri,
    responses: http::Uri,
}

/// An OpenAI-compatible upstream over HTTP.
#[derive(Debug, Clone)]
pub struct OpenAiProvider {
    upstream: HttpUpstream,
    endpoints: Endpoints,
    options: OpenAiOptions,
}

/// Builds an [`OpenAiProvider`]: the shared settings of [`ProviderBuilder`] and the [`OpenAiOptions`].
pub type OpenAiProviderBuilder = ProviderBuilder<OpenAiOptions>;

/// What only an [`OpenAiProvider`] is configured with; set through [`OpenAiProviderBuilder`].
#[derive(Debug, Clone)]
pub struct OpenAiOptions {
    max_event_bytes: usize,
    stream_usage: bool,
    capabilities: Capabilities,
}

impl OpenAiProvider {
    /// A builder for a provider called `name` (used in logs, metrics and errors), pointing at OpenAI.
    pub fn builder(name: impl Into<String>) -> OpenAiProviderBuilder {
        let options = OpenAiOptions {
            max_event_bytes: sse::DEFAULT_MAX_EVENT_BYTES,
            stream_usage: true,
            capabilities: Capabilities::chat_server(),
        };
        ProviderBuilder::new(name, DEFAULT_BASE_URL, DEFAULT_TIMEOUT, options)
    }

    /// A builder configured from `OPENAI_API_KEY` and `OPENAI_BASE_URL`, as the official SDKs read them.
    pub fn from_env(name: impl Into<String>) -> OpenAiProviderBuilder {
        let mut builder = OpenAiProvider::builder(name);
        if let Some(key) = std::env::var("OPENAI_API_KEY").ok().filter(|k| !k.is_empty()) {
            builder = builder.with_api_key(key);
        }
        if let Some(url) = std::env::var("OPENAI_BASE_URL").ok().filter(|u| !u.is_empty()) {
            builder = builder.with_base_url(url);
        }
        builder
    }

    /// The base URL requests go to (paths such as `/chat/completions` are appended).
    pub fn base_url(&self) -> &str {
        &self.upstream.base_url
    }

    fn ensure(&self, capability: Capability) -> Result<()> {
        if self.options.capabilities.contains(capability) {
            Ok(())
        } else {
            Err(Error::Unsupported { provider: self.upstream.name.clone(), capability })
        }
    }

    fn ensure_tools(&self, request: &ChatCompletionRequest) -> Result<()> {
        if request.tools.as_ref().is_some_and(|t| !t.is_empty()) {
            self.ensure(Capability::Tools)?;
        }
        Ok(())
    }

    /// Sends a streaming request and relays its events as chunks. Some compatible servers ignore `stream` and
    /// answer whole: `replay` turns such an answer into the chunks that would have produced it.
    async fn open_stream<A, C>(
        &self,
        url: &http::Uri,
        body: &impl serde::Serialize,
        replay: impl FnOnce(A) -> Vec<C>,
    ) -> Result<BoxStream<'static, Result<C>>>
    where
        A: DeserializeOwned,
        C: StreamChunk + DeserializeOwned,
    {
        let response = self.upstream.open(url, body).await?;
        if http_provider::is_json(&response) {
            let answer: A = self.upstream.read_json(response).await?;
            return Ok(Box::pin(futures::stream::iter(replay(answer).into_iter().map(Ok))));
        }
        let body = http_provider::body_stream(response);
        let events =
            framing::sse_events(&self.upstream.name, self.upstream.timeout, self.options.max_event_bytes, body);
        Ok(chunk_stream(self.upstream.name.clone(), events))
    }
}

impl OpenAiProviderBuilder {
    /// The largest server-sent event accepted from the upstream.
    pub fn with_max_event_bytes(mut self, bytes: usize) -> Self {
        self.options.max_event_bytes = bytes;
        self
    }

    /// Whether streams ask the upstream for a usage chunk (default on; turn off only for servers that
    /// reject `stream_options`, at the price of settling streams from estimates).
    pub fn with_stream_usage(mut self, on: bool) -> Self {
        self.options.stream_usage = on;
        self
    }

    /// Declares what the upstream supports (default: everything an OpenAI-compatible chat server does,
    /// [`Capabilities::chat_server`]), e.g. an embeddings-only server.
    pub fn with_capabilities(mut self, capabilities: Capabilities) -> Self {
        self.options.capabilities = capabilities;
        self
    }

    /// Whether the upstream speaks OpenAI's Responses API (`POST {base_url}/responses`), as OpenAI and Azure
    /// OpenAI do and most compatible servers do not (default off). When on, the gateway passes `/v1/responses`
    /// requests routed here through as the client sent them (only `model` rewritten), instead of translating
    /// them to chat completions.
    pub fn with_responses_api(mut self, on: bool) -> Self {
        self.options.capabilities = match on {
            true => self.options.capabilities.with(Capability::Responses),
            false => self.options.capabilities.without(Capability::Responses),
        };
        self
    }

    /// The provider, sending the key as `Authorization: Bearer …`; fails on an invalid header, key or base URL.
    pub fn build(self) -> Result<OpenAiProvider> {
        let upstream = self.upstream((AUTHORIZATION, "Bearer "), &[])?;
        let endpoints = Endpoints {
            chat: upstream.endpoint("/chat/completions")?,
            completions: upstream.endpoint("/completions")?,
            embeddings: upstream.endpoint("/embeddings")?,
            responses: upstream.endpoint("/responses")?,
        };
        Ok(OpenAiProvider { upstream, endpoints, options: self.options })
    }
}

#[async_trait]
impl Provider for OpenAiProvider {
    fn name(&self) -> &str {
        &self.upstream.name
    }

    fn capabilities(&self) -> Capabilities {
        self.options.capabilities
    }

    async fn chat(&self, mut request: ChatCompletionRequest) -> Result<ChatCompletionResponse> {
        self.ensure(Capability::Chat)?;
        self.ensure_tools(&request)?;
        // OpenAI rejects `stream_options` on a request that does not stream.
        request.stream = None;
        request.stream_options = None;
        self.upstream.call_json(&self.endpoints.chat, &request).await
    }

    async fn chat_passthrough(&self, mut request: ChatCompletionRequest) -> Result<ChatCompletionJson> {
        self.ensure(Capability::Chat)?;
        self.ensure_tools(&request)?;
        request.stream = None;
        request.stream_options = None;
        self.upstream.call_chat_json(&self.endpoints.chat, &request).await
    }

    async fn chat_stream(&self, mut request: ChatCompletionRequest) -> Result<ChunkStream> {
        self.ensure(Capability::ChatStream)?;
        self.ensure_tools(&request)?;
        request.stream = Some(true);
        if self.options.stream_usage {
            request.stream_options.get_or_insert_with(StreamOptions::default).include_usage = Some(true);
        }
        let replay = |answer: ChatCompletionResponse| answer.to_chunks(1, answer.usage.is_some());
        self.open_stream(&self.endpoints.chat, &request, replay).await
    }

    async fn completion(&self, mut request: CompletionRequest) -> Result<CompletionResponse> {
        self.ensure(Capability::Completions)?;
        request.stream = None;
        request.stream_options = None;
        self.upstream.call_json(&self.endpoints.completions, &request).await
    }

    async fn completion_stream(&self, mut request: CompletionRequest) -> Result<CompletionChunkStream> {
        self.ensure(Capability::CompletionsStream)?;
        request.stream = Some(true);
        if self.options.stream_usage {
            request.stream_options.get_or_insert_with(StreamOptions::default).include_usage = Some(true);
        }
        let replay = |answer: CompletionResponse| answer.to_chunks(1, answer.usage.is_some());
        self.open_stream(&self.endpoints.completions, &request, replay).await
    }

    async fn responses(&self, mut request: Value) -> Result<Value> {
        self.ensure(Capability::Responses)?;
        if let Some(body) = request.as_object_mut() {
            body.remove("stream");
        }
        self.upstream.call_json(&self.endpoints.responses, &request).await
    }

    async fn responses_stream(&self, mut request: Value) -> Result<NativeEventStream> {
        self.ensure(Capability::Responses)?;
        if let Some(body) = request.as_object_mut() {
            body.insert("stream".to_owned(), Value::Bool(true));
        }
        let response = self.upstream.open(&self.endpoints.responses, &request).await?;
        if http_provider::is_json(&response) {
            return Err(http_provider::malformed(
                &self.upstream.name,
                "answer",
                "a JSON body where events were asked for",
            ));
        }
        let body = http_provider::body_stream(response);
        let events =
            framing::sse_events(&self.upstream.name, self.upstream.timeout, self.options.max_event_bytes, body);
        // `error` ends a stream as surely as the three final states.
        let ends =
            |kind: &str| matches!(kind, "response.completed" | "response.incomplete" | "response.failed" | "error");
        Ok(http_provider::native_event_stream(self.upstream.name.clone(), events, ends))
    }

    async fn embeddings(&self, request: EmbeddingRequest) -> Result<EmbeddingResponse> {
        self.ensure(Capability::Embeddings)?;
        let mut response: EmbeddingResponse = self.upstream.call_json(&self.endpoints.embeddings, &request).await?;
        for item in &mut response.data {
            let floats = item
                .embedding
                .to_floats()
                .map_err(|e| http_provider::malformed(&self.upstream.name, "embedding", e))?;
            item.embedding = EmbeddingVector::Float(floats);
        }
        Ok(response)
    }
}

/// Turns decoded server-sent events into chunks (chat or legacy completion): stops at `[DONE]`, and ends
/// with an error item when the upstream reports an error mid-stream, sends something unparsable, or the
/// events end (a broken connection, silence, a close before `[DONE]`).
fn chunk_stream<C, S>(provider: String, events: S) -> BoxStream<'static, Result<C>>
where
    C: StreamChunk + DeserializeOwned,
    S: futures::Stream<Item = Result<SseEvent>> + Send + 'static,
{
    struct State<C, S> {
        provider: String,
        events: std::pin::Pin<Box<S>>,
        held_usage: Option<C>,
        finished: bool,
    }
    let state = State { provider, events: Box::pin(events), held_usage: None, finished: false };
    let stream = futures::stream::unfold(state, |mut st| async move {
        if st.finished {
            return None;
        }
        loop {
            let item = match st.events.next().await {
                None => Err(interrupted(&st.provider, "the stream ended before `data: [DONE]`")),
                Some(Err(e)) => Err(e),
                Some(Ok(event)) if event.is_done() => {
                    st.finished = true;
                    return st.held_usage.take().map(|usage| (Ok(usage), st));
                }
                Some(Ok(event)) if event.data.trim().is_empty() => continue,
                Some(Ok(event)) => {
                    parse_chunk(&st.provider, &event.data).map(|chunk| hold_usage(&mut st.held_usage, chunk))
                }
            };
            match item {
                Ok(None) => continue,
                Ok(Some(chunk)) => return Some((Ok(chunk), st)),
                Err(e) => {
                    st.finished = true;
                    return Some((Err(e), st));
                }
            }
        }
    });
    Box::pin(stream)
}

/// Holds usage back until `[DONE]`, so that the stream ends with exactly one usage-only chunk even from
/// servers that attach usage to a content chunk or repeat it.
fn hold_usage<C: StreamChunk>(held: &mut Option<C>, mut chunk: C) -> Option<C> {
    let Some(usage) = chunk.take_usage() else { return Some(chunk) };
    *held = Some(chunk.usage_only(usage));
    chunk.has_choices().then_some(chunk)
}

fn parse_chunk<C: DeserializeOwned>(provider: &str, data: &str) -> Result<C> {
    serde_json::from_str::<C>(data).map_err(|parse_error| {
        // An error mid-stream arrives as an event holding OpenAI's error envelope.
        match serde_json::from_str::<serde_json::Value>(data) {
            Ok(json) if json.get("error").is_some() => Error::Upstream {
                provider: provider.to_owned(),
                failure: UpstreamFailure::Status,
                status: None,
                message: chitty_core::upstream::error_message(data.as_bytes()).unwrap_or_else(|| data.to_owned()),
                retry_after: None,
            },
            _ => http_provider::malformed(provider, "stream chunk", parse_error),
        }
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use chitty_core::wire::ChatCompletionChunk;

    type Chat = ChatCompletionChunk;

    #[test]
    fn a_bad_base_url_is_refused_when_built() {
        let err = OpenAiProvider::builder("x").with_base_url("not a url").build().unwrap_err();
        assert!(matches!(err, Error::InvalidInput { .. }), "{err:?}");
        let ok = OpenAiProvider::builder("x").with_base_url("http://127.0.0.1:9/v1/").build().unwrap();
        assert_eq!(ok.endpoints.chat.to_string(), "http://127.0.0.1:9/v1/chat/completions");
        for relative in ["127.0.0.1:9/v1", "/v1", "ftp://host/v1"] {
            let err = OpenAiProvider::builder("x").with_base_url(relative).build().unwrap_err();
            assert!(
                matches!(err, Error::InvalidInput { .. }) && err.to_string().contains("base URL"),
                "{relative}: {err}"
            );
        }
    }

    fn events(data: &[&str]) -> futures::stream::Iter<std::vec::IntoIter<Result<SseEvent>>> {
        futures::stream::iter(
            data.iter().map(|d| Ok(SseEvent { data: (*d).to_owned(), ..Default::default() })).collect::<Vec<_>>(),
        )
    }

    const CHUNK: &str = r#"{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":null}]}"#;

    #[tokio::test]
    async fn done_ends_the_stream_cleanly() {
        let s = chunk_stream::<Chat, _>("p".into(), events(&[CHUNK, "[DONE]", CHUNK]));
        let items: Vec<_> = s.collect().await;
        assert_eq!(items.len(), 1);
        assert_eq!(items[0].as_ref().unwrap().choices[0].delta.content.as_deref(), Some("hi"));
    }

    #[tokio::test]
    async fn missing_done_error_events_and_garbage_end_with_an_error() {
        for (input, needle) in [
            (vec![CHUNK], "before `data: [DONE]`"),
            (vec![CHUNK, r#"{"error":{"message":"overloaded","type":"server_error"}}"#], "overloaded"),
            (vec!["{not json"], "malformed stream chunk"),
        ] {
            let s = chunk_stream::<Chat, _>("p".into(), events(&input));
            let items: Vec<_> = s.collect().await;
            let last = items.last().unwrap().as_ref().unwrap_err();
            assert!(matches!(last, Error::Upstream { status: None, .. }));
            assert!(last.to_string().contains(needle), "{last}");
        }
    }

    #[tokio::test]
    async fn usage_on_a_content_chunk_moves_to_one_final_usage_chunk() {
        let with_usage = r#"{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"!"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}"#;
        let usage_only = r#"{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}"#;
        for input in [vec![CHUNK, with_usage, "[DONE]"], vec![CHUNK, with_usage, usage_only, "[DONE]"]] {
            let s = chunk_stream::<Chat, _>("p".into(), events(&input));
            let items: Vec<Chat> = s.map(Result::unwrap).collect().await;
            assert_eq!(items.len(), 3, "{items:?}");
            assert!(items[..2].iter().all(|c| c.usage.is_none() && !c.choices.is_empty()));
            assert_eq!(items[1].choices[0].finish_reason.as_deref(), Some("stop"));
            assert!(items[2].choices.is_empty());
            assert_eq!(items[2].usage.as_ref().unwrap().total_tokens, 5);
        }
    }

    #[tokio::test]
    async fn legacy_completion_streams_parse_and_end_with_one_usage_chunk() {
        let piece = r#"{"id":"cmpl-1","object":"text_completion","created":1,"model":"m","choices":[{"text":"Once","index":0,"logprobs":null,"finish_reason":null}]}"#;
        let last = r#"{"id":"cmpl-1","object":"text_completion","created":1,"model":"m","choices":[{"text":" more","index":0,"logprobs":null,"finish_reason":"length"}],"usage":{"prompt_tokens":4,"completion_tokens":2,"total_tokens":6}}"#;
        let s = chunk_stream::<CompletionResponse, _>("p".into(), events(&[piece, last, "[DONE]"]));
        let items: Vec<CompletionResponse> = s.map(Result::unwrap).collect().await;
        let texts: Vec<&str> = items.iter().flat_map(|c| &c.choices).map(|c| c.text.as_str()).collect();
        assert_eq!(texts, ["Once", " more"]);
        assert_eq!(items[1].choices[0].finish_reason.as_deref(), Some("length"));
        assert!(items[..2].iter().all(|c| c.usage.is_none()));
        assert!(items[2].choices.is_empty() && items[2].usage.as_ref().unwrap().total_tokens == 6);
        assert_eq!(items[2].object, "text_completion");
    }

    #[tokio::test]
    async fn silence_beyond_the_idle_timeout_is_a_timeout() {
        let silent = futures::stream::pending::<Result<SseEvent>>();
        let s = chunk_stream::<Chat, _>("p".into(), framing::idle_timeout("p", Duration::from_millis(20), silent));
        let items: Vec<_> = s.collect().await;
        assert!(matches!(items[..], [Err(Error::UpstreamTimeout { .. })]));
    }

    #[test]
    fn debug_never_shows_the_key() {
        let builder =
            OpenAiProvider::builder("p").with_api_key("sk-very-secret").with_header("x-extra", "hidden-value");
        assert!(!format!("{builder:?}").contains("sk-very-secret"));
        let provider = builder.build().unwrap();
        let shown = format!("{provider:?}");
        assert!(!shown.contains("sk-very-secret") && !shown.contains("hidden-value"), "{shown}");
        assert!(shown.contains("authorization"));
    }
}
