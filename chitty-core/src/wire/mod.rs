//! OpenAI wire types (serde) that round-trip real requests and responses.
//!
//! Every object keeps the fields it does not know in an `extra` map (`#[serde(flatten)]`), so a field a
//! newer API adds is forwarded upstream and back to the client instead of being dropped.

mod chat;
mod completions;
mod embeddings;
mod models;

pub use chat::*;
pub use completions::*;
pub use embeddings::*;
pub use models::*;

use serde::{Deserialize, Serialize};

/// Fields this crate does not model, kept verbatim. Keys are sorted (a `BTreeMap`), which keeps cache keys canonical.
pub type Extra = serde_json::Map<String, serde_json::Value>;

/// Token usage as reported by the provider.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Usage {
    /// Tokens in the prompt.
    #[serde(default)]
    pub prompt_tokens: u64,
    /// Tokens generated.
    #[serde(default)]
    pub completion_tokens: u64,
    /// Sum of both.
    #[serde(default)]
    pub total_tokens: u64,
    /// Breakdown of the prompt tokens (e.g. `cached_tokens`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_tokens_details: Option<PromptTokensDetails>,
    /// Breakdown of the completion tokens (e.g. `reasoning_tokens`), kept as sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_tokens_details: Option<serde_json::Value>,
    /// Fields not modelled here.
    #[serde(flatten)]
    pub extra: Extra,
}

impl Usage {
    /// Usage of `prompt` input and `completion` output tokens.
    pub fn new(prompt: u64, completion: u64) -> Usage {
        Usage {
            prompt_tokens: prompt,
            completion_tokens: completion,
            total_tokens: prompt + completion,
            ..Default::default()
        }
    }

    /// Prompt tokens the provider served from its prompt cache.
    pub fn cached_prompt_tokens(&self) -> u64 {
        self.prompt_tokens_details.as_ref().and_then(|d| d.cached_tokens).unwrap_or(0)
    }
}

/// `usage.prompt_tokens_details`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct PromptTokensDetails {
    /// Prompt tokens served from the provider's prompt cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_tokens: Option<u64>,
    /// Fields not modelled here.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `stream_options` on streaming requests.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct StreamOptions {
    /// Send a final chunk with `usage` and no choices.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_usage: Option<bool>,
    /// Fields not modelled here.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `stop`: one sequence or several.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum StopSequences {
    /// A single stop sequence.
    One(String),
    /// Up to four stop sequences.
    Many(Vec<String>),
}

/// OpenAI's error envelope: `{"error": {"message", "type", "param", "code"}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorEnvelope {
    /// The error.
    pub error: ErrorBody,
}

/// The body of [`ErrorEnvelope`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Human-readable message.
    pub message: String,
    /// Error type, e.g. `invalid_request_error`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Request parameter at fault.
    #[serde(default)]
    pub param: Option<String>,
    /// Machine-readable code, e.g. `model_not_found`.
    #[serde(default)]
    pub code: Option<String>,
    /// Fields not modelled here.
    #[serde(flatten)]
    pub extra: Extra,
}
