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
    /// Candidates generated per prompt, of which the `n` best are returned; the upstream bills every candidate.
    pub best_of: Option<u32>,
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
    best_of: optional,
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

impl CompletionRequest {
    /// Whether the client asked for a stream.
    pub fn is_stream(&self) -> bool {
        self.stream.unwrap_or(false)
    }

    /// Whether the client asked for the final usage chunk.
    pub fn wants_stream_usage(&self) -> bool {
        self.stream_options.as_ref().and_then(|o| o.include_usage).unwrap_or(false)
    }
}

impl CompletionResponse {
    /// Splits this completion into the stream chunks that would have produced it (used to replay a cached
    /// answer as SSE). A streamed legacy completion is a sequence of `text_completion` objects, each holding a
    /// piece of a choice's text; text is cut after whitespace into pieces of at least `piece_bytes` bytes
    /// (`1`: a word per chunk). Each choice's last chunk carries its `finish_reason` and its log-probabilities
    /// whole (they are not split with the text), and with `include_usage` a last chunk carries `usage` and no
    /// choices.
    pub fn to_chunks(&self, piece_bytes: usize, include_usage: bool) -> Vec<CompletionResponse> {
        let chunk = |choices: Vec<CompletionChoice>, usage: Option<Usage>| CompletionResponse {
            id: self.id.clone(),
            object: self.object.clone(),
            created: self.created,
            model: self.model.clone(),
            choices,
            usage,
            system_fingerprint: self.system_fingerprint.clone(),
            extra: Extra::new(),
        };
        let piece = |choice: &CompletionChoice, text: String, finish_reason: Option<String>| CompletionChoice {
            text,
            index: choice.index,
            finish_reason,
            logprobs: None,
            extra: Extra::new(),
        };
        let mut out = Vec::new();
        for choice in &self.choices {
            let mut pieces = super::text_pieces(&choice.text, piece_bytes);
            // The last piece (empty for an empty answer) carries the finish reason, as OpenAI's last chunk does.
            let text = pieces.pop().unwrap_or_default();
            for text in pieces {
                out.push(chunk(vec![piece(choice, text, None)], None));
            }
            let mut last = piece(choice, text, choice.finish_reason.clone());
            last.logprobs.clone_from(&choice.logprobs);
            out.push(chunk(vec![last], None));
        }
        if include_usage {
            out.push(chunk(Vec::new(), self.usage.clone()));
        }
        out
    }
}

/// Folds streamed legacy-completion chunks back into a complete response: the inverse of
/// [`CompletionResponse::to_chunks`]. Choices indexed 65,536 or above are ignored: no request asks for that
/// many, and it bounds the memory a broken upstream can claim.
#[derive(Debug, Default)]
pub struct CompletionAccumulator {
    head: Option<(String, String, u64, String, Option<String>)>,
    choices: Vec<CompletionChoice>,
    usage: Option<Usage>,
}

impl CompletionAccumulator {
    /// Adds one chunk.
    pub fn push(&mut self, chunk: &CompletionResponse) {
        if self.head.is_none() {
            self.head = Some((
                chunk.id.clone(),
                chunk.object.clone(),
                chunk.created,
                chunk.model.clone(),
                chunk.system_fingerprint.clone(),
            ));
        }
        if let Some(u) = &chunk.usage {
            self.usage = Some(u.clone());
        }
        for c in &chunk.choices {
            let idx = c.index as usize;
            if idx >= super::MAX_STREAM_CHOICES {
                continue;
            }
            while self.choices.len() <= idx {
                self.choices.push(CompletionChoice {
                    text: String::new(),
                    index: u32::try_from(self.choices.len()).unwrap_or(u32::MAX),
                    finish_reason: None,
                    logprobs: None,
                    extra: Extra::new(),
                });
            }
            let choice = &mut self.choices[idx];
            choice.text.push_str(&c.text);
            super::merge_logprobs(&mut choice.logprobs, c.logprobs.as_ref(), true);
            if c.finish_reason.is_some() {
                choice.finish_reason.clone_from(&c.finish_reason);
            }
        }
    }

    /// Bytes of generated text so far (for settling an interrupted stream).
    pub fn generated_text_len(&self) -> usize {
        self.choices.iter().map(|c| c.text.len()).sum()
    }

    /// Usage reported by the stream, if a usage chunk arrived.
    pub fn usage(&self) -> Option<&Usage> {
        self.usage.as_ref()
    }

    /// The complete response.
    pub fn finish(self) -> CompletionResponse {
        let (id, object, created, model, system_fingerprint) = self.head.unwrap_or_default();
        CompletionResponse {
            id,
            object: if object.is_empty() { "text_completion".to_owned() } else { object },
            created,
            model,
            choices: self.choices,
            usage: self.usage,
            system_fingerprint,
            extra: Extra::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer() -> CompletionResponse {
        let choice = |index: u32, text: &str, finish: &str| CompletionChoice {
            text: text.to_owned(),
            index,
            finish_reason: Some(finish.to_owned()),
            logprobs: None,
            extra: Extra::new(),
        };
        CompletionResponse {
            id: "cmpl-1".to_owned(),
            object: "text_completion".to_owned(),
            created: 7,
            model: "m".to_owned(),
            choices: vec![
                CompletionChoice {
                    logprobs: Some(serde_json::json!({"tokens": ["one", " two"], "token_logprobs": [-0.1, -0.2]})),
                    ..choice(0, "one two  three\nfour", "stop")
                },
                choice(1, "", "length"),
            ],
            usage: Some(Usage::new(5, 4)),
            system_fingerprint: Some("fp".to_owned()),
            extra: Extra::new(),
        }
    }

    #[test]
    fn chunks_fold_back_into_the_answer() {
        let answer = answer();
        for piece in [1, 3, 100] {
            let chunks = answer.to_chunks(piece, true);
            assert!(chunks.iter().all(|c| c.object == "text_completion" && c.id == "cmpl-1"));
            let last = chunks.last().unwrap();
            assert!(last.choices.is_empty());
            assert_eq!(last.usage, answer.usage);
            let mut acc = CompletionAccumulator::default();
            for c in &chunks {
                acc.push(c);
            }
            assert_eq!(acc.generated_text_len(), "one two  three\nfour".len());
            assert_eq!(acc.finish(), answer, "piece size {piece}");
        }
    }

    #[test]
    fn without_usage_no_chunk_carries_it_and_pieces_are_words() {
        let chunks = answer().to_chunks(1, false);
        assert!(chunks.iter().all(|c| c.usage.is_none() && !c.choices.is_empty()));
        let texts: Vec<&str> =
            chunks.iter().filter(|c| c.choices[0].index == 0).map(|c| c.choices[0].text.as_str()).collect();
        assert_eq!(texts, ["one ", "two ", " ", "three\n", "four"]);
        assert!(chunks.iter().filter(|c| c.choices[0].finish_reason.is_some()).count() == 2);
    }

    #[test]
    fn streamed_logprobs_are_concatenated() {
        let piece = |text: &str, tokens: serde_json::Value| CompletionResponse {
            choices: vec![CompletionChoice {
                text: text.to_owned(),
                index: 0,
                finish_reason: None,
                logprobs: Some(tokens),
                extra: Extra::new(),
            }],
            ..answer()
        };
        let mut acc = CompletionAccumulator::default();
        acc.push(&piece("a", serde_json::json!({"tokens": ["a"], "text_offset": [0], "top_logprobs": null})));
        acc.push(&piece("b", serde_json::json!({"tokens": ["b"], "text_offset": [1], "top_logprobs": [{"b": -1.0}]})));
        acc.push(&piece("", serde_json::Value::Null));
        let logprobs = acc.finish().choices[0].logprobs.clone().unwrap();
        assert_eq!(
            logprobs,
            serde_json::json!({"tokens": ["a", "b"], "text_offset": [0, 1], "top_logprobs": [null, {"b": -1.0}]})
        );
    }

    #[test]
    fn stream_flags() {
        let mut req = CompletionRequest::default();
        assert!(!req.is_stream() && !req.wants_stream_usage());
        req.stream = Some(true);
        req.stream_options = Some(StreamOptions { include_usage: Some(true), extra: Extra::new() });
        assert!(req.is_stream() && req.wants_stream_usage());
    }
}
