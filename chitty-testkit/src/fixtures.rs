//! Real-shaped OpenAI JSON for every wire type: requests, responses, stream chunks, errors.
//!
//! Shapes follow OpenAI's API reference, including fields chitty does not model (they must survive a round trip).

/// A chat request using every modelled field plus newer ones (`store`, `metadata`, `reasoning_effort`, …).
pub const CHAT_REQUEST_FULL: &str = include_str!("../fixtures/openai/chat_request_full.json");
/// A chat completion with `refusal`, `annotations`, token details and `service_tier`.
pub const CHAT_RESPONSE: &str = include_str!("../fixtures/openai/chat_response.json");
/// A chat completion that calls a tool.
pub const CHAT_RESPONSE_TOOL_CALLS: &str = include_str!("../fixtures/openai/chat_response_tool_calls.json");
/// A streamed answer, one chunk per line, ending with the usage chunk.
pub const CHAT_STREAM: &str = include_str!("../fixtures/openai/chat_stream.jsonl");
/// A streamed tool call, one chunk per line.
pub const CHAT_STREAM_TOOL_CALLS: &str = include_str!("../fixtures/openai/chat_stream_tool_calls.jsonl");
/// A legacy completion request with two prompts.
pub const COMPLETION_REQUEST: &str = include_str!("../fixtures/openai/completion_request.json");
/// A legacy completion response.
pub const COMPLETION_RESPONSE: &str = include_str!("../fixtures/openai/completion_response.json");
/// An embeddings request with token inputs and base64 encoding.
pub const EMBEDDING_REQUEST_TOKENS: &str = include_str!("../fixtures/openai/embedding_request_tokens.json");
/// An embeddings request with one text.
pub const EMBEDDING_REQUEST_TEXT: &str = include_str!("../fixtures/openai/embedding_request_text.json");
/// An embeddings response with floats.
pub const EMBEDDING_RESPONSE_FLOAT: &str = include_str!("../fixtures/openai/embedding_response_float.json");
/// An embeddings response with base64 vectors (`[0, 1, -1, 0.5]`).
pub const EMBEDDING_RESPONSE_BASE64: &str = include_str!("../fixtures/openai/embedding_response_base64.json");
/// The model list.
pub const MODELS: &str = include_str!("../fixtures/openai/models.json");
/// An error envelope.
pub const ERROR: &str = include_str!("../fixtures/openai/error.json");

/// A form for comparing JSON by meaning: `null` members removed (absent and `null` mean the same to OpenAI's
/// API) and numbers compared as values (`0` and `0.0` are the same temperature).
pub fn without_nulls(value: serde_json::Value) -> serde_json::Value {
    match value {
        serde_json::Value::Object(map) => serde_json::Value::Object(
            map.into_iter().filter(|(_, v)| !v.is_null()).map(|(k, v)| (k, without_nulls(v))).collect(),
        ),
        serde_json::Value::Array(items) => serde_json::Value::Array(items.into_iter().map(without_nulls).collect()),
        serde_json::Value::Number(n) => n
            .as_f64()
            .and_then(serde_json::Number::from_f64)
            .map_or(serde_json::Value::Number(n), serde_json::Value::Number),
        other => other,
    }
}
