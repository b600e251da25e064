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
pub mod messages;
mod models;
pub mod responses;

pub use chat::*;
pub use chat_json::ChatCompletionJson;
pub use completions::*;
pub use embeddings::*;
pub use messages::{
    AnthropicErrorEnvelope, CountTokensResponse, MessagesRequest, MessagesResponse, MessagesStreamEvent,
    MessagesStreamTranslator,
};
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
/// streamed legacy completion. Relaying a stream needs only its usage and its choice indices. Sealed: the two
/// chunk types are the only ones.
pub trait StreamChunk: Send + 'static + sealed::Sealed {
    /// Usage carried by this chunk.
    fn usage(&self) -> Option<&Usage>;
    /// Removes the usage from this chunk and returns it.
    fn take_usage(&mut self) -> Option<Usage>;
    /// Whether the chunk carries choices (the final usage chunk carries none).
    fn has_choices(&self) -> bool;
    /// The highest choice index in the chunk, if it carries choices.
    fn max_choice_index(&self) -> Option<u32>;
    /// A chunk with this one's id, model and timestamp, no choices, and `usage`.
    fn usage_only(&self, usage: Usage) -> Self;
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::ChatCompletionChunk {}
    impl Sealed for super::CompletionResponse {}
}

/// Both chunk types have the same head fields and a `choices` list of items with an `index`.
macro_rules! stream_chunk {
    ($ty:ident) => {
        impl StreamChunk for $ty {
            fn usage(&self) -> Option<&Usage> {
                self.usage.as_ref()
            }

            fn take_usage(&mut self) -> Option<Usage> {
                self.usage.take()
            }

            fn has_choices(&self) -> bool {
                !self.choices.is_empty()
            }

            fn max_choice_index(&self) -> Option<u32> {
                self.choices.iter().map(|c| c.index).max()
            }

            fn usage_only(&self, usage: Usage) -> Self {
                $ty {
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
    };
}

stream_chunk!(ChatCompletionChunk);
stream_chunk!(CompletionResponse);

/// Choice indices an accumulator accepts: far more than a request can ask for (`n` ≤ 128 per prompt), and a
/// bound on the memory a broken or hostile upstream can make it allocate.
const MAX_STREAM_CHOICES: usize = 1 << 16;

/// Splits `text` after whitespace into pieces of at least `piece_bytes` bytes (the last may be shorter);
/// concatenated, they give the text back.
fn text_pieces(text: &str, piece_bytes: usize) -> Vec<String> {
    let piece_bytes = piece_bytes.max(1);
    let mut pieces = Vec::new();
    let mut piece = String::new();
    for word in text.split_inclusive(char::is_whitespace) {
        piece.push_str(word);
        if piece.len() >= piece_bytes {
            pieces.push(std::mem::take(&mut piece));
        }
    }
    if !piece.is_empty() {
        pieces.push(piece);
    }
    pieces
}

/// Adds a stream chunk's `logprobs` to what a choice has so far. Both OpenAI shapes are objects of arrays that
/// streams split, so arrays are concatenated and any other value is kept from its first appearance.
///
/// With `parallel` (legacy completions: `tokens`, `token_logprobs`, `top_logprobs` and `text_offset` describe
/// the same tokens), every array keeps the same length: where a piece has `null` or nothing for an array the
/// others extend, `null`s stand in for its tokens. Without it (chat: `content` and `refusal` list different
/// tokens), `null` in a piece adds nothing.
fn merge_logprobs(acc: &mut Option<serde_json::Value>, piece: Option<&serde_json::Value>, parallel: bool) {
    use serde_json::Value;
    let Some(Value::Object(piece)) = piece else { return };
    if !matches!(acc, Some(Value::Object(_))) {
        *acc = Some(Value::Object(Extra::new()));
    }
    let Some(Value::Object(acc)) = acc else { return };
    let longest = |map: &Extra| map.values().filter_map(Value::as_array).map(Vec::len).max().unwrap_or(0);
    let (before, added) = if parallel { (longest(acc), longest(piece)) } else { (0, 0) };
    let keys: std::collections::BTreeSet<String> = acc.keys().chain(piece.keys()).cloned().collect();
    for key in keys {
        let more = piece.get(&key).filter(|v| !v.is_null());
        match (acc.get_mut(&key), more) {
            (Some(Value::Array(have)), Some(Value::Array(more))) => have.extend(more.iter().cloned()),
            (Some(Value::Array(have)), None) => have.resize(have.len() + added, Value::Null),
            (None | Some(Value::Null), Some(Value::Array(more))) => {
                let mut list = vec![Value::Null; before];
                list.extend(more.iter().cloned());
                acc.insert(key, Value::Array(list));
            }
            (None | Some(Value::Null), Some(other)) => {
                acc.insert(key, other.clone());
            }
            (None, None) => {
                acc.insert(key, Value::Null);
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
