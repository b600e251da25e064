//! The [`Provider`] trait: one upstream model API.

use std::fmt::{self, Debug};

use async_trait::async_trait;
use futures::stream::BoxStream;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::wire::{
    ChatCompletionChunk, ChatCompletionJson, ChatCompletionRequest, ChatCompletionResponse, CompletionRequest,
    CompletionResponse, EmbeddingRequest, EmbeddingResponse,
};

/// A stream of chat completion chunks from a provider.
pub type ChunkStream = BoxStream<'static, Result<ChatCompletionChunk>>;

/// A stream of legacy completion chunks (`text_completion` objects holding pieces of text) from a provider.
pub type CompletionChunkStream = BoxStream<'static, Result<CompletionResponse>>;

/// A stream of events of an upstream's own API (OpenAI's Responses events, Anthropic's Messages events), each
/// the event's JSON as the upstream sent it; its `type` field names the event.
pub type NativeEventStream = BoxStream<'static, Result<Value>>;

/// One thing a provider can do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Capability {
    /// Non-streamed chat completions.
    Chat,
    /// Streamed chat completions.
    ChatStream,
    /// Legacy text completions.
    Completions,
    /// Streamed legacy text completions.
    CompletionsStream,
    /// Embeddings.
    Embeddings,
    /// Tool definitions and tool calls in chat.
    Tools,
    /// OpenAI's Responses API spoken natively (`POST /v1/responses`): the gateway passes Responses requests
    /// through instead of translating them to chat completions.
    Responses,
    /// Anthropic's Messages API spoken natively (`POST /v1/messages`): the gateway passes Messages requests
    /// through instead of translating them to chat completions.
    Messages,
}

impl Capability {
    /// Every capability, in a fixed order.
    pub const ALL: [Capability; 8] = [
        Capability::Chat,
        Capability::ChatStream,
        Capability::Completions,
        Capability::CompletionsStream,
        Capability::Embeddings,
        Capability::Tools,
        Capability::Responses,
        Capability::Messages,
    ];

    const fn bit(self) -> u8 {
        match self {
            Capability::Chat => 1,
            Capability::ChatStream => 2,
            Capability::Completions => 4,
            Capability::Embeddings => 8,
            Capability::Tools => 16,
            Capability::CompletionsStream => 32,
            Capability::Responses => 64,
            Capability::Messages => 128,
        }
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Capability::Chat => "chat completions",
            Capability::ChatStream => "streamed chat completions",
            Capability::Completions => "legacy completions",
            Capability::CompletionsStream => "streamed legacy completions",
            Capability::Embeddings => "embeddings",
            Capability::Tools => "tools",
            Capability::Responses => "the Responses API",
            Capability::Messages => "the Messages API",
        })
    }
}

/// A set of [`Capability`] values.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Capabilities(u8);

impl Capabilities {
    /// No capability.
    pub const NONE: Capabilities = Capabilities(0);

    /// A set of the given capabilities.
    pub fn of(caps: &[Capability]) -> Capabilities {
        Capabilities(caps.iter().fold(0, |acc, c| acc | c.bit()))
    }

    /// Every capability.
    pub fn all() -> Capabilities {
        Capabilities::of(&Capability::ALL)
    }

    /// Every capability of an OpenAI-compatible chat server: all but the native [`Capability::Responses`] and
    /// [`Capability::Messages`] APIs, which most such servers do not speak.
    pub fn chat_server() -> Capabilities {
        Capabilities::all().without(Capability::Responses).without(Capability::Messages)
    }

    /// Whether `cap` is in the set.
    pub fn contains(self, cap: Capability) -> bool {
        self.0 & cap.bit() != 0
    }

    /// The set with `cap` added.
    pub fn with(self, cap: Capability) -> Capabilities {
        Capabilities(self.0 | cap.bit())
    }

    /// The set with `cap` removed.
    pub fn without(self, cap: Capability) -> Capabilities {
        Capabilities(self.0 & !cap.bit())
    }

    /// The capabilities in the set.
    pub fn iter(self) -> impl Iterator<Item = Capability> {
        Capability::ALL.into_iter().filter(move |c| self.contains(*c))
    }
}

impl Debug for Capabilities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

/// One upstream model API: OpenAI-compatible HTTP, Anthropic, Ollama, or a mock.
///
/// Your own (an in-house model, a rule-based echo) mounted in a running gateway: `examples/custom_provider.rs`.
///
/// Contract:
/// - Requests arrive with `model` already set to the upstream model name; the provider sends it as is.
/// - `chat_stream` and `completion_stream` yield chunks in order and, whenever the upstream reports usage, end
///   with a chunk that carries `usage` and no choices, whatever the request's `stream_options` say: budgets
///   settle from it. The gateway forwards that chunk only to clients that asked for it.
/// - Failures are [`Error::Upstream`] (with the upstream's status and message), [`Error::UpstreamTimeout`], or
///   [`Error::Unsupported`] for a capability the provider does not declare. Dropping a stream cancels the
///   upstream request.
/// - Methods for capabilities not in [`Provider::capabilities`] return [`Error::Unsupported`] (the defaults do).
#[async_trait]
pub trait Provider: Send + Sync + Debug + 'static {
    /// Name used in logs, metrics and errors.
    fn name(&self) -> &str;

    /// What this provider can do.
    fn capabilities(&self) -> Capabilities;

    /// A chat completion.
    async fn chat(&self, request: ChatCompletionRequest) -> Result<ChatCompletionResponse>;

    /// A chat completion as the upstream's own JSON bytes, passed through to the client without parsing and
    /// re-encoding them (the HTTP server's fast path). The default encodes [`Provider::chat`]'s answer; an HTTP
    /// provider returns the bytes it received, checked by [`ChatCompletionJson::parse`]. Both must describe the
    /// same completion (`chitty_testkit::provider` checks it).
    async fn chat_passthrough(&self, request: ChatCompletionRequest) -> Result<ChatCompletionJson> {
        let response = self.chat(request).await?;
        ChatCompletionJson::from_response(&response).map_err(|e| Error::backend("encode a chat completion", e))
    }

    /// A streamed chat completion.
    async fn chat_stream(&self, request: ChatCompletionRequest) -> Result<ChunkStream> {
        let _ = request;
        Err(Error::Unsupported { provider: self.name().to_owned(), capability: Capability::ChatStream })
    }

    /// A legacy completion.
    async fn completion(&self, request: CompletionRequest) -> Result<CompletionResponse> {
        let _ = request;
        Err(Error::Unsupported { provider: self.name().to_owned(), capability: Capability::Completions })
    }

    /// A streamed legacy completion: `text_completion` chunks, each holding a piece of a choice's text. The
    /// gateway calls it only on providers that declare [`Capability::CompletionsStream`]; for one that declares
    /// only [`Capability::Completions`] it streams the [`Provider::completion`] answer as chunks.
    async fn completion_stream(&self, request: CompletionRequest) -> Result<CompletionChunkStream> {
        let _ = request;
        Err(Error::Unsupported { provider: self.name().to_owned(), capability: Capability::CompletionsStream })
    }

    /// Embeddings, always returned as floats (the gateway re-encodes for the client).
    async fn embeddings(&self, request: EmbeddingRequest) -> Result<EmbeddingResponse> {
        let _ = request;
        Err(Error::Unsupported { provider: self.name().to_owned(), capability: Capability::Embeddings })
    }

    /// A Responses API request passed through (`POST /v1/responses`): `request` is the client's body with
    /// `model` set to the upstream model (and `max_output_tokens` when the gateway caps it), unknown fields
    /// kept; the answer is the upstream's response object as it sent it. Called only on providers that declare
    /// [`Capability::Responses`]; `stream` is never set.
    async fn responses(&self, request: Value) -> Result<Value> {
        let _ = request;
        Err(Error::Unsupported { provider: self.name().to_owned(), capability: Capability::Responses })
    }

    /// A streamed Responses API request passed through: the upstream's events as it sent them, ending with
    /// `response.completed` (or `response.incomplete` / `response.failed`), whose `usage` budgets settle from.
    async fn responses_stream(&self, request: Value) -> Result<NativeEventStream> {
        let _ = request;
        Err(Error::Unsupported { provider: self.name().to_owned(), capability: Capability::Responses })
    }

    /// A Messages API request passed through (`POST /v1/messages`): the client's body with `model` set to the
    /// upstream model, `cache_control`, `thinking` and unknown fields kept; the answer is the upstream's message
    /// as it sent it. Called only on providers that declare [`Capability::Messages`]; `stream` is never set.
    async fn messages(&self, request: Value) -> Result<Value> {
        let _ = request;
        Err(Error::Unsupported { provider: self.name().to_owned(), capability: Capability::Messages })
    }

    /// A streamed Messages API request passed through: Anthropic's events as the upstream sent them; usage
    /// comes in `message_start` (input) and `message_delta` (output, cumulative).
    async fn messages_stream(&self, request: Value) -> Result<NativeEventStream> {
        let _ = request;
        Err(Error::Unsupported { provider: self.name().to_owned(), capability: Capability::Messages })
    }

    /// The upstream's count of a Messages request's input tokens (`POST /v1/messages/count_tokens`), the body
    /// with `model` set to the upstream model.
    async fn count_message_tokens(&self, request: Value) -> Result<u64> {
        let _ = request;
        Err(Error::Unsupported { provider: self.name().to_owned(), capability: Capability::Messages })
    }
}
