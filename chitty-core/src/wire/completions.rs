//! Legacy `/v1/completions`.

use serde::{Deserialize, Deserializer, Serialize};

use super::codec::{TextOrTokens, wire_object};
use super::{Extra, StopSequences, StreamOptions, Usage};

/// The `prompt` of a legacy completion: text, texts, tokens or token lists.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum PromptInput {
    /// One text.
    Text(String),
    /// Several texts (one completion each).
    Texts(Vec<String>),
    /// One token list.
    Tokens(Vec<u32>),
    /// Several token lists.
    TokenLists(Vec<Vec<u32>>),
}

impl<'de> Deserialize<'de> for PromptInput {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(match TextOrTokens::deserialize(deserializer)? {
            TextOrTokens::Text(t) => PromptInput::Text(t),
            TextOrTokens::Texts(t) => PromptInput::Texts(t),
            TextOrTokens::Tokens(t) => PromptInput::Tokens(t),
            TextOrTokens::TokenLists(t) => PromptInput::TokenLists(t),
        })
    }
}

impl Default for PromptInput {
    fn default() -> Self {
        PromptInput::Text(String::new())
    }
}

/// A legacy completion request.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CompletionRequest {
    /// Model name.
    pub model: String,
    /// The prompt.
    pub prompt: PromptInput,
    /// Output token cap (16 when absent, per OpenAI).
    pub max_tokens: Option<u32>,
    /// Sampling temperature.
    pub temperature: Option<f64>,
    /// Nucleus sampling mass.
    pub top_p: Option<f64>,
    /// Completions per prompt.
    pub n: Option<u32>,
    /// Seed.
    pub seed: Option<i64>,
    /// Stop sequences.
    pub stop: Option<StopSequences>,
    /// Echo the prompt.
    pub echo: Option<bool>,
    /// Text after the completion.
    pub suffix: Option<String>,
    /// Number of log-probabilities to return.
    pub logprobs: Option<u32>,
    /// End-user identifier.
    pub user: Option<String>,
    /// Stream the answer.
    pub stream: Option<bool>,
    /// Streaming options.
    pub stream_options: Option<StreamOptions>,
    /// Fields not modelled here.
    pub extra: Extra,
}

wire_object!(CompletionRequest {
    model: required,
    prompt: required,
    max_tokens: optional,
    temperature: optional,
    top_p: optional,
    n: optional,
    seed: optional,
    stop: optional,
    echo: optional,
    suffix: optional,
    logprobs: optional,
    user: optional,
    stream: optional,
    stream_options: optional
});

/// A legacy completion response.
#[derive(Debug, Clone, PartialEq)]
pub struct CompletionResponse {
    /// Identifier.
    pub id: String,
    /// `text_completion`.
    pub object: String,
    /// Unix seconds.
    pub created: u64,
    /// Model that answered.
    pub model: String,
    /// The choices.
    pub choices: Vec<CompletionChoice>,
    /// Token usage.
    pub usage: Option<Usage>,
    /// Backend configuration fingerprint.
    pub system_fingerprint: Option<String>,
    /// Fields not modelled here.
    pub extra: Extra,
}

wire_object!(CompletionResponse {
    id: required,
    object: required,
    created: required,
    model: required,
    choices: required,
    usage: optional,
    system_fingerprint: optional
});

/// One choice of a legacy completion.
#[derive(Debug, Clone, PartialEq)]
pub struct CompletionChoice {
    /// Generated text.
    pub text: String,
    /// Choice index.
    pub index: u32,
    /// Why generation stopped.
    pub finish_reason: Option<String>,
    /// Log-probabilities, kept as sent.
    pub logprobs: Option<serde_json::Value>,
    /// Fields not modelled here.
    pub extra: Extra,
}

wire_object!(CompletionChoice { text: required, index: required, finish_reason: nullable, logprobs: nullable });
