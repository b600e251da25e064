//! # chitty-providers
//!
//! Implementations of chitty-core's traits, each behind a feature.
//!
//! - `memory` (default): [`runtime`] (system clock, tokio timer and spawner).
//! - `openai`: [`openai::OpenAiProvider`], any OpenAI-compatible upstream over HTTP, with the [`sse`] decoder.
//! - `anthropic`: [`anthropic::AnthropicProvider`], Anthropic's Messages API translated to and from OpenAI's.
//! - `ollama`: [`ollama::OllamaProvider`], Ollama's native API with NDJSON streaming.

#[cfg(feature = "memory")]
pub mod runtime;

#[cfg(any(feature = "openai", feature = "anthropic", feature = "ollama"))]
mod upstream_http;
#[cfg(any(feature = "openai", feature = "anthropic"))]
pub mod sse;
#[cfg(feature = "openai")]
pub mod openai;
#[cfg(feature = "anthropic")]
pub mod anthropic;
#[cfg(feature = "ollama")]
pub mod ollama;
