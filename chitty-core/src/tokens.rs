//! A deterministic token estimator for reservations.
//!
//! Budgets reserve a request's worst case before the call, so the estimate must never count fewer tokens
//! than the provider's tokenizer will: an under-count is an overrun. The estimator charges **one token per
//! UTF-8 byte of text, plus one** (for the dummy-prefix token SentencePiece tokenizers insert). That bound is
//! provable for every byte-level BPE (GPT, Llama 3, Mistral, Claude …): each token covers at least one byte,
//! so a text of n bytes never becomes more than n tokens.
//!
//! Cheaper-looking heuristics fail on real prompts: random identifiers, hashes and base64 reach one token per
//! character in `cl100k_base` and `o200k_base` (measured: random 6-letter mixed-case strings take 6
//! tokens), so any weight below one per letter can be beaten by an adversarial prompt. The price of the safe
//! bound is over-reservation, about 4–5× the real count for English prose; the excess is refunded at
//! settlement and only matters when a tenant is within one request of its limit.
//!
//! Chat prompts add [`PER_MESSAGE_TOKENS`] per message and [`REPLY_PRIMING_TOKENS`] for the reply, as
//! OpenAI's counting guide does. Non-text content parts (images, audio, files) are charged
//! [`NON_TEXT_PART_TOKENS`] or their serialized length, whichever is larger. Token-array inputs count
//! exactly.
//!
//! The bound is tested against `cl100k_base` and `o200k_base` (via `tiktoken-rs`) on prose, code, JSON,
//! numbers, random identifiers, base64, CJK and emoji in `tests/token_bound.rs`.

use crate::wire::{ChatCompletionRequest, ChatMessage, EmbeddingInput, MessageContent, PromptInput, Role};

/// Tokens charged for each non-text content part (a high-detail 2048×2048 image costs 1,105 on GPT-4o).
pub const NON_TEXT_PART_TOKENS: u64 = 1_700;
/// Tokens of per-message framing in chat formats.
pub const PER_MESSAGE_TOKENS: u64 = 4;
/// Tokens priming the assistant's reply.
pub const REPLY_PRIMING_TOKENS: u64 = 3;

/// An upper bound on the tokens of `text` under any byte-level tokenizer: its length in bytes, plus one.
pub fn estimate_text(text: &str) -> u64 {
    text.len() as u64 + 1
}

/// Counts bytes written, so a JSON length is measured without building the string.
struct ByteCounter(u64);

impl std::io::Write for ByteCounter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The length of `value` as compact JSON (0 if it cannot be serialized, which plain JSON data never fails).
fn json_len(value: &impl serde::Serialize) -> u64 {
    let mut counter = ByteCounter(0);
    match serde_json::to_writer(&mut counter, value) {
        Ok(()) => counter.0,
        Err(_) => 0,
    }
}

/// [`estimate_text`] of `value`'s compact JSON text, without building the text.
fn estimate_json(value: &impl serde::Serialize) -> u64 {
    json_len(value) + 1
}

fn estimate_content(content: &MessageContent) -> u64 {
    match content {
        MessageContent::Text(t) => estimate_text(t),
        MessageContent::Parts(parts) => parts
            .iter()
            .map(|p| match &p.text {
                Some(t) if p.kind == "text" => estimate_text(t),
                _ => NON_TEXT_PART_TOKENS.max(json_len(&p.extra)),
            })
            .sum(),
    }
}

fn estimate_message(m: &ChatMessage) -> u64 {
    let role = match &m.role {
        Role::Other(r) => estimate_text(r),
        _ => 1,
    };
    let mut t = PER_MESSAGE_TOKENS + role;
    if let Some(c) = &m.content {
        t += estimate_content(c);
    }
    if let Some(n) = &m.name {
        t += estimate_text(n) + 1;
    }
    if let Some(r) = &m.refusal {
        t += estimate_text(r);
    }
    if let Some(calls) = &m.tool_calls {
        for c in calls {
            t += estimate_text(&c.id) + estimate_text(&c.function.name) + estimate_text(&c.function.arguments) + 8;
        }
    }
    if let Some(id) = &m.tool_call_id {
        t += estimate_text(id);
    }
    t
}

/// An upper estimate of the prompt tokens of a chat request: messages, tool definitions and response schema.
pub fn estimate_chat_prompt(req: &ChatCompletionRequest) -> u64 {
    let mut t = REPLY_PRIMING_TOKENS + req.messages.iter().map(estimate_message).sum::<u64>();
    // Tool and schema definitions are rendered into the prompt; their JSON text bounds what they cost.
    if let Some(tools) = &req.tools {
        t += estimate_json(tools) + 16;
    }
    if let Some(rf) = &req.response_format {
        t += estimate_json(rf);
    }
    t
}

/// An upper estimate of the prompt tokens of a legacy completion (all prompts together).
pub fn estimate_completion_prompt(prompt: &PromptInput) -> u64 {
    match prompt {
        PromptInput::Text(t) => estimate_text(t),
        PromptInput::Texts(v) => v.iter().map(|t| estimate_text(t)).sum(),
        PromptInput::Tokens(v) => v.len() as u64,
        PromptInput::TokenLists(v) => v.iter().map(|l| l.len() as u64).sum(),
    }
}

/// An upper estimate of the input tokens of an embeddings request.
pub fn estimate_embedding_input(input: &EmbeddingInput) -> u64 {
    match input {
        EmbeddingInput::Text(t) => estimate_text(t),
        EmbeddingInput::Texts(v) => v.iter().map(|t| estimate_text(t)).sum(),
        EmbeddingInput::Tokens(v) => v.len() as u64,
        EmbeddingInput::TokenLists(v) => v.iter().map(|l| l.len() as u64).sum(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn definitions_are_charged_their_json_length() {
        let req: ChatCompletionRequest = serde_json::from_value(serde_json::json!({
            "model": "m",
            "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}],
            "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
            "response_format": {"type": "json_object"}
        }))
        .unwrap();
        let tools = serde_json::to_string(req.tools.as_ref().unwrap()).unwrap();
        let format = serde_json::to_string(req.response_format.as_ref().unwrap()).unwrap();
        let message = PER_MESSAGE_TOKENS + 1 + NON_TEXT_PART_TOKENS;
        let expected = REPLY_PRIMING_TOKENS + message + estimate_text(&tools) + 16 + estimate_text(&format);
        assert_eq!(estimate_chat_prompt(&req), expected);
    }
}
