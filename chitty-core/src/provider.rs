//! The [`Provider`] trait: one upstream model API.

use std::fmt::{self, Debug};

use async_trait::async_trait;
use futures::stream::BoxStream;

use crate::error::{Error, Result};
use crate::wire::{
    ChatCompletionChunk, ChatCompletionJson, ChatCompletionRequest, ChatCompletionResponse, CompletionRequest,
    CompletionResponse, EmbeddingRequest, EmbeddingResponse,
};

/// A stream of chat completion chunks from a provider.
pub type ChunkStream = BoxStream<'static, Result<ChatCompletionChunk>>;

/// A stream of legacy completion chunks (`text_completion` objects holding pieces of text) from a provider.
pub type CompletionChunkStream = BoxStream<'static, Result<CompletionResponse>>;

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
}

impl Capability {
    /// Every capability, in a fixed order.
    pub const ALL: [Capability; 6] = [
        Capability::Chat,
        Capability::ChatStream,
        Capability::Completions,
        Capability::CompletionsStream,
        Capability::Embeddings,
        Capability::Tools,
    ];

    const fn bit(self) -> u8 {
        match self {
            Capability::Chat => 1,
            Capability::ChatStream => 2,
            Capability::Completions => 4,
            Capability::Embeddings => 8,
            Capability::Tools => 16,
            Capability::CompletionsStream => 32,
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

    /// Whether `cap` is in the set.
    pub fn contains(self, cap: Capability) -> bool {
        self.0 & cap.bit() != 0
    }

    /// The set with `cap` added.
    pub fn with(self, cap: Capability) -> Capabilities {
        Capabilities(self.0 | cap.bit())
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
}
