//! The mock Anthropic upstream: the Messages API, answered by translating to and from any [`Provider`].

use std::sync::Arc;

use axum::Router;
use axum::routing::post;
use bytes::Bytes;
use chitty_core::wire::{
    ChatCompletionRequest, ChatCompletionResponse, ChatMessage, ChunkAccumulator, ContentPart, Extra, FunctionCall,
    FunctionDefinition, MessageContent, Role, StopSequences, Tool, ToolCall, Usage,
};
use chitty_core::{Provider, Result};
use futures::StreamExt;
use serde_json::{Value, json};

use super::{Admitted, Answer, Flavor, MockServer, Shared};

/// A mock of Anthropic's Messages API (`POST /v1/messages`, plain and SSE) that answers from any
/// [`Provider`], translating requests to OpenAI's chat format and answers back.
///
/// Streams follow Anthropic's event sequence: `message_start`, `ping`, a text block with
/// `text_delta`s, one `tool_use` block per tool call with its input in two `input_json_delta`s,
/// `message_delta` with the stop reason and output tokens, `message_stop`; an error from the provider
/// becomes an `error` event. `POST /v1/messages/count_tokens` answers `{"input_tokens"}`: the number of
/// whitespace-separated words in the system prompt and the messages' text, plus one per message (a count
/// of its own, so that tests can tell it from the gateway's estimate).
#[derive(Debug)]
pub struct MockAnthropic {
    provider: Arc<dyn Provider>,
    api_key: Option<String>,
}

impl MockAnthropic {
    /// A mock serving `provider`.
    pub fn new(provider: Arc<dyn Provider>) -> MockAnthropic {
        MockAnthropic { provider, api_key: None }
    }

    /// Starts a mock serving `provider` with the defaults.
    pub async fn serve(provider: Arc<dyn Provider>) -> Result<MockServer> {
        MockAnthropic::new(provider).start().await
    }

    /// Requires `x-api-key: <key>`; other requests get a 401.
    pub fn with_api_key(mut self, key: impl Into<String>) -> MockAnthropic {
        self.api_key = Some(key.into());
        self
    }

    /// Binds `127.0.0.1:0` and serves until the returned handle is dropped.
    pub async fn start(self) -> Result<MockServer> {
        let shared = Arc::new(Shared::new(self.provider, Flavor::Anthropic, self.api_key, Vec::new()));
        let router = Router::new()
            .route("/v1/messages", post(messages))
            .route("/v1/messages/count_tokens", post(count_tokens))
            .with_state(shared.clone());
        super::start(shared, router, "").await
    }
}

async fn messages(admitted: Admitted) -> Answer {
    if admitted.headers.get("anthropic-version").is_none() {
        return Err(admitted.error(400, "anthropic-version header is required"));
    }
    let body: Value = admitted.json()?;
    let (request, stream) = to_chat_request(&body).map_err(|message| admitted.error(400, &message))?;
    if !stream {
        let answer = admitted.provider().chat(request).await.map_err(|e| admitted.failed(&e))?;
        return Ok(admitted.answer(&to_message(&answer)));
    }
    let mut chunks = admitted.provider().chat_stream(request).await.map_err(|e| admitted.failed(&e))?;
    // The mock provider answers at once; the events are paced (and faults applied) by `stream_response`.
    let mut acc = ChunkAccumulator::default();
    let mut texts = Vec::new();
    let mut failure = None;
    while let Some(item) = chunks.next().await {
        match item {
            Ok(chunk) => {
                texts.extend(chunk.choices.iter().filter_map(|c| c.delta.content.clone()).filter(|t| !t.is_empty()));
                acc.push(&chunk);
            }
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    let frames = stream_events(acc.finish(), &texts, failure.as_ref());
    Ok(super::stream_response(futures::stream::iter(frames).boxed(), admitted, "text/event-stream"))
}

async fn count_tokens(admitted: Admitted) -> Answer {
    if admitted.headers.get("anthropic-version").is_none() {
        return Err(admitted.error(400, "anthropic-version header is required"));
    }
    let body: Value = admitted.json()?;
    let messages = body
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| admitted.error(400, "messages: field required"))?;
    let words = |v: &Value| text_of(v).split_whitespace().count();
    let system = body.get("system").map_or(0, words);
    let text: usize = messages.iter().map(|m| 1 + m.get("content").map_or(0, words)).sum();
    Ok(admitted.answer(&json!({"input_tokens": system + text})))
}

fn text_of(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(blocks) => blocks.iter().filter_map(|b| b.get("text").and_then(Value::as_str)).collect(),
        _ => String::new(),
    }
}

/// A Messages API request as an OpenAI chat request, and whether it streams.
fn to_chat_request(body: &Value) -> std::result::Result<(ChatCompletionRequest, bool), String> {
    let model = body.get("model").and_then(Value::as_str).ok_or("model: field required")?;
    let max_tokens = body.get("max_tokens").and_then(Value::as_u64).ok_or("max_tokens: field required")?;
    check_tool_results(body)?;
    let mut messages = Vec::new();
    if let Some(system) = body.get("system") {
        messages.push(ChatMessage::system(text_of(system)));
    }
    for message in body.get("messages").and_then(Value::as_array).ok_or("messages: field required")? {
        let role = message.get("role").and_then(Value::as_str).unwrap_or_default();
        let blocks = match message.get("content") {
            Some(Value::String(s)) => vec![json!({"type": "text", "text": s})],
            Some(Value::Array(b)) => b.clone(),
            _ => return Err("messages.content: must be a string or a list of blocks".to_owned()),
        };
        match role {
            "user" => {
                let mut parts = Vec::new();
                for block in &blocks {
                    match block.get("type").and_then(Value::as_str) {
                        Some("tool_result") => messages.push(ChatMessage {
                            tool_call_id: block.get("tool_use_id").and_then(Value::as_str).map(str::to_owned),
                            ..ChatMessage::text(Role::Tool, text_of(block.get("content").unwrap_or(&Value::Null)))
                        }),
                        Some("text") => parts.push(ContentPart {
                            kind: "text".to_owned(),
                            text: block.get("text").and_then(Value::as_str).map(str::to_owned),
                            extra: Extra::new(),
                        }),
                        Some("image") => {
                            let source = block.get("source").cloned().unwrap_or_default();
                            let url = match source.get("type").and_then(Value::as_str) {
                                Some("base64") => format!(
                                    "data:{};base64,{}",
                                    source.get("media_type").and_then(Value::as_str).unwrap_or_default(),
                                    source.get("data").and_then(Value::as_str).unwrap_or_default()
                                ),
                                _ => source.get("url").and_then(Value::as_str).unwrap_or_default().to_owned(),
                            };
                            let mut extra = Extra::new();
                            extra.insert("image_url".to_owned(), json!({"url": url}));
                            parts.push(ContentPart { kind: "image_url".to_owned(), text: None, extra });
                        }
                        other => return Err(format!("messages.content: unknown block type {other:?}")),
                    }
                }
                if !parts.is_empty() {
                    messages.push(ChatMessage { content: Some(MessageContent::Parts(parts)), ..ChatMessage::user("") });
                }
            }
            "assistant" => {
                let text: String = blocks.iter().filter_map(|b| b.get("text").and_then(Value::as_str)).collect();
                let calls: Vec<ToolCall> = blocks
                    .iter()
                    .filter(|b| b.get("type").and_then(Value::as_str) == Some("tool_use"))
                    .map(|b| ToolCall {
                        id: b.get("id").and_then(Value::as_str).unwrap_or_default().to_owned(),
                        kind: "function".to_owned(),
                        function: FunctionCall {
                            name: b.get("name").and_then(Value::as_str).unwrap_or_default().to_owned(),
                            arguments: b.get("input").cloned().unwrap_or_default().to_string(),
                            extra: Extra::new(),
                        },
                        extra: Extra::new(),
                    })
                    .collect();
                messages.push(ChatMessage {
                    content: (!text.is_empty()).then_some(MessageContent::Text(text)),
                    tool_calls: (!calls.is_empty()).then_some(calls),
                    ..ChatMessage::assistant("")
                });
            }
            other => return Err(format!("messages.role: unexpected role {other:?}")),
        }
    }
    let tools = body.get("tools").and_then(Value::as_array).map(|tools| {
        tools
            .iter()
            .map(|t| Tool {
                kind: "function".to_owned(),
                function: Some(FunctionDefinition {
                    name: t.get("name").and_then(Value::as_str).unwrap_or_default().to_owned(),
                    description: t.get("description").and_then(Value::as_str).map(str::to_owned),
                    parameters: t.get("input_schema").cloned(),
                    strict: None,
                    extra: Extra::new(),
                }),
                extra: Extra::new(),
            })
            .collect()
    });
    let tool_choice = body.get("tool_choice").map(|c| match c.get("type").and_then(Value::as_str) {
        Some("any") => json!("required"),
        Some("none") => json!("none"),
        Some("tool") => json!({"type": "function", "function": {"name": c.get("name")}}),
        _ => json!("auto"),
    });
    let stop = body
        .get("stop_sequences")
        .and_then(Value::as_array)
        .map(|v| StopSequences::Many(v.iter().filter_map(Value::as_str).map(str::to_owned).collect()));
    let request = ChatCompletionRequest {
        model: model.to_owned(),
        messages,
        max_tokens: Some(u32::try_from(max_tokens).unwrap_or(u32::MAX)),
        temperature: body.get("temperature").and_then(Value::as_f64),
        top_p: body.get("top_p").and_then(Value::as_f64),
        stop,
        tools,
        tool_choice,
        ..Default::default()
    };
    Ok((request, body.get("stream").and_then(Value::as_bool).unwrap_or(false)))
}

/// Anthropic's rule: every `tool_result` answers a `tool_use` of the message right before it.
fn check_tool_results(body: &Value) -> std::result::Result<(), String> {
    let messages = body.get("messages").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    let blocks = |m: &Value| m.get("content").and_then(Value::as_array).cloned().unwrap_or_default();
    for (i, message) in messages.iter().enumerate() {
        let previous = if i == 0 { Vec::new() } else { blocks(&messages[i - 1]) };
        let uses: Vec<&str> = previous
            .iter()
            .filter(|b| b.get("type").and_then(Value::as_str) == Some("tool_use"))
            .filter_map(|b| b.get("id").and_then(Value::as_str))
            .collect();
        for block in blocks(message) {
            if block.get("type").and_then(Value::as_str) != Some("tool_result") {
                continue;
            }
            let id = block.get("tool_use_id").and_then(Value::as_str).unwrap_or_default();
            if !uses.contains(&id) {
                return Err(format!(
                    "messages.{i}: unexpected `tool_use_id` found in `tool_result` blocks: {id}. Each `tool_result` \
                     block must have a corresponding `tool_use` block in the previous message."
                ));
            }
        }
    }
    Ok(())
}

fn stop_reason(finish_reason: Option<&str>) -> &'static str {
    match finish_reason {
        Some("length") => "max_tokens",
        Some("tool_calls") => "tool_use",
        Some("content_filter") => "refusal",
        _ => "end_turn",
    }
}

/// Anthropic reports cached prompt tokens apart from the others.
fn usage_json(usage: Option<&Usage>) -> Value {
    let usage = usage.cloned().unwrap_or_default();
    let cached = usage.cached_prompt_tokens();
    json!({
        "input_tokens": usage.prompt_tokens - cached.min(usage.prompt_tokens),
        "output_tokens": usage.completion_tokens,
        "cache_read_input_tokens": cached,
        "cache_creation_input_tokens": 0,
    })
}

fn tool_input(call: &ToolCall) -> Value {
    serde_json::from_str(&call.function.arguments).unwrap_or_else(|_| json!({}))
}

/// A chat completion as a Messages API answer.
fn to_message(answer: &ChatCompletionResponse) -> Value {
    let choice = answer.choices.first();
    let mut content = Vec::new();
    let text = choice.map(|c| c.message.text_content()).unwrap_or_default();
    if !text.is_empty() {
        content.push(json!({"type": "text", "text": text}));
    }
    for call in choice.and_then(|c| c.message.tool_calls.as_ref()).into_iter().flatten() {
        content.push(json!({"type": "tool_use", "id": call.id, "name": call.function.name, "input": tool_input(call)}));
    }
    json!({
        "id": answer.id.replace("chatcmpl", "msg"),
        "type": "message",
        "role": "assistant",
        "model": answer.model,
        "content": content,
        "stop_reason": stop_reason(choice.and_then(|c| c.finish_reason.as_deref())),
        "stop_sequence": null,
        "usage": usage_json(answer.usage.as_ref()),
    })
}

/// The event sequence Anthropic streams for `answer`, whose text arrived as `texts`.
fn stream_events(answer: ChatCompletionResponse, texts: &[String], failure: Option<&chitty_core::Error>) -> Vec<Bytes> {
    let frame = |value: Value| {
        let name = value.get("type").and_then(Value::as_str).unwrap_or("message").to_owned();
        super::sse_frame(Some(&name), &value)
    };
    let usage = usage_json(answer.usage.as_ref());
    let mut frames = vec![
        frame(json!({"type": "message_start", "message": {
            "id": answer.id.replace("chatcmpl", "msg"), "type": "message", "role": "assistant", "model": answer.model,
            "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": usage["input_tokens"], "output_tokens": 1,
                      "cache_read_input_tokens": usage["cache_read_input_tokens"], "cache_creation_input_tokens": 0},
        }})),
        frame(json!({"type": "ping"})),
    ];
    let mut index = 0;
    if !texts.is_empty() {
        frames.push(frame(
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ));
        for text in texts {
            frames.push(frame(
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}}),
            ));
        }
        frames.push(frame(json!({"type": "content_block_stop", "index": 0})));
        index = 1;
    }
    if let Some(e) = failure {
        let message = match e {
            chitty_core::Error::Upstream { message, .. } => message.clone(),
            other => other.to_string(),
        };
        frames.push(frame(json!({"type": "error", "error": {"type": "api_error", "message": message}})));
        return frames;
    }
    let choice = answer.choices.first();
    for call in choice.and_then(|c| c.message.tool_calls.as_ref()).into_iter().flatten() {
        frames.push(frame(json!({"type": "content_block_start", "index": index, "content_block": {
            "type": "tool_use", "id": call.id, "name": call.function.name, "input": {}}})));
        let input = tool_input(call).to_string();
        let mid = input.char_indices().nth(input.chars().count() / 2).map_or(input.len(), |(i, _)| i);
        for piece in [&input[..mid], &input[mid..]] {
            frames.push(frame(json!({"type": "content_block_delta", "index": index,
                "delta": {"type": "input_json_delta", "partial_json": piece}})));
        }
        frames.push(frame(json!({"type": "content_block_stop", "index": index})));
        index += 1;
    }
    frames.push(frame(json!({"type": "message_delta",
        "delta": {"stop_reason": stop_reason(choice.and_then(|c| c.finish_reason.as_deref())), "stop_sequence": null},
        "usage": {"output_tokens": usage["output_tokens"]}})));
    frames.push(frame(json!({"type": "message_stop"})));
    frames
}
