//! OpenAI wire types (serde) that round-trip real requests and responses.
//!
//! Every object keeps the fields it does not know in an `extra` map, so a field a newer API adds is forwarded
//! upstream and back to the client instead of being dropped. The serde impls of those objects are generated
//! by a small macro (`codec.rs`) that reads each object in one pass, instead of `#[serde(flatten)]`.

mod chat;
mod chat_json;
mod codec;
mod completions;
mod embeddings;
mod models;

pub use chat::*;
pub use chat_json::ChatCompletionJson;
pub use completions::*;
pub use embeddings::*;
pub use models::*;

use serde::{Deserialize, Deserializer, Serialize};

use codec::{OneOrMany, wire_object};

/// Fields this crate does not model, kept verbatim. Keys are sorted (a `BTreeMap`), which keeps cache keys canonical.
pub type Extra = serde_json::Map<String, serde_json::Value>;

/// Token usage as reported by the provider.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Usage {
    /// Tokens in the prompt.
    pub prompt_tokens: u64,
    /// Tokens generated.
    pub completion_tokens: u64,
    /// Sum of both.
    pub total_tokens: u64,
    /// Breakdown of the prompt tokens (e.g. `cached_tokens`).
    pub prompt_tokens_details: Option<PromptTokensDetails>,
    /// Breakdown of the completion tokens (e.g. `reasoning_tokens`), kept as sent.
    pub completion_tokens_details: Option<serde_json::Value>,
    /// Fields not modelled here.
    pub extra: Extra,
}

wire_object!(Usage {
    prompt_tokens: default,
    completion_tokens: default,
    total_tokens: default,
    prompt_tokens_details: optional,
    completion_tokens_details: optional
});

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
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PromptTokensDetails {
    /// Prompt tokens served from the provider's prompt cache.
    pub cached_tokens: Option<u64>,
    /// Fields not modelled here.
    pub extra: Extra,
}

wire_object!(PromptTokensDetails { cached_tokens: optional });

/// One chunk of a streamed answer: a [`ChatCompletionChunk`], or a [`CompletionResponse`] holding a piece of a
/// streamed legacy completion. Relaying a stream needs only its usage and whether it carries choices.
pub trait StreamChunk: Send + 'static {
    /// Usage carried by this chunk.
    fn usage(&self) -> Option<&Usage>;
    /// Removes the usage from this chunk and returns it.
    fn take_usage(&mut self) -> Option<Usage>;
    /// Whether the chunk carries choices (the final usage chunk carries none).
    fn has_choices(&self) -> bool;
    /// A chunk with this one's id, model and timestamp, no choices, and `usage`.
    fn usage_only(&self, usage: Usage) -> Self;
}

impl StreamChunk for ChatCompletionChunk {
    fn usage(&self) -> Option<&Usage> {
        self.usage.as_ref()
    }

    fn take_usage(&mut self) -> Option<Usage> {
        self.usage.take()
    }

    fn has_choices(&self) -> bool {
        !self.choices.is_empty()
    }

    fn usage_only(&self, usage: Usage) -> Self {
        ChatCompletionChunk {
            id: self.id.clone(),
            object: self.object.clone(),
            created: self.created,
            model: self.model.clone(),
            choices: Vec::new(),
            usage: Some(usage),
            system_fingerprint: self.system_fingerprint.clone(),
            extra: self.extra.clone(),
        }
    }
}

impl StreamChunk for CompletionResponse {
    fn usage(&self) -> Option<&Usage> {
        self.usage.as_ref()
    }

    fn take_usage(&mut self) -> Option<Usage> {
        self.usage.take()
    }

    fn has_choices(&self) -> bool {
        !self.choices.is_empty()
    }

    fn usage_only(&self, usage: Usage) -> Self {
        CompletionResponse {
            id: self.id.clone(),
            object: self.object.clone(),
            created: self.created,
            model: self.model.clone(),
            choices: Vec::new(),
            usage: Some(usage),
            system_fingerprint: self.system_fingerprint.clone(),
            extra: self.extra.clone(),
        }
    }
}

/// Adds a stream chunk's `logprobs` to what a choice has so far. Both OpenAI shapes are objects of arrays that
/// streams split (chat: `content`, `refusal`; legacy: `tokens`, `token_logprobs`, `top_logprobs`,
/// `text_offset`), so arrays are concatenated and any other value is kept from its first appearance.
fn merge_logprobs(acc: &mut Option<serde_json::Value>, piece: Option<&serde_json::Value>) {
    use serde_json::Value;
    let Some(Value::Object(piece)) = piece else { return };
    if !matches!(acc, Some(Value::Object(_))) {
        *acc = Some(Value::Object(Extra::new()));
    }
    let Some(Value::Object(acc)) = acc else { return };
    for (key, value) in piece {
        match (acc.get_mut(key), value) {
            (Some(Value::Array(have)), Value::Array(more)) => have.extend(more.iter().cloned()),
            (None | Some(Value::Null), _) => {
                acc.insert(key.clone(), value.clone());
            }
            _ => {}
        }
    }
}

/// `stream_options` on streaming requests.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StreamOptions {
    /// Send a final chunk with `usage` and no choices.
    pub include_usage: Option<bool>,
    /// Fields not modelled here.
    pub extra: Extra,
}

wire_object!(StreamOptions { include_usage: optional });

/// `stop`: one sequence or several.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum StopSequences {
    /// A single stop sequence.
    One(String),
    /// Up to four stop sequences.
    Many(Vec<String>),
}

impl<'de> Deserialize<'de> for StopSequences {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(match OneOrMany::deserialize(deserializer, "a stop string or an array of stop strings")? {
            OneOrMany::One(s) => StopSequences::One(s),
            OneOrMany::Many(v) => StopSequences::Many(v),
        })
    }
}

/// OpenAI's error envelope: `{"error": {"message", "type", "param", "code"}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorEnvelope {
    /// The error.
    pub error: ErrorBody,
}

/// The body of [`ErrorEnvelope`].
#[derive(Debug, Clone, PartialEq)]
pub struct ErrorBody {
    /// Human-readable message.
    pub message: String,
    /// Error type, e.g. `invalid_request_error`.
    pub kind: String,
    /// Request parameter at fault.
    pub param: Option<String>,
    /// Machine-readable code, e.g. `model_not_found`.
    pub code: Option<String>,
    /// Fields not modelled here.
    pub extra: Extra,
}

wire_object!(ErrorBody { message: required, kind as "type": required, param: nullable, code: nullable });
