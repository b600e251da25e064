//! The mock Ollama upstream: the native API with NDJSON streams, answered by any [`Provider`].

use std::sync::Arc;

use axum::Router;
use axum::response::Response;
use axum::routing::{get, post};
use bytes::Bytes;
use chitty_core::wire::{
    ChatCompletionRequest, ChatMessage, ChunkAccumulator, CompletionRequest, ContentPart, EmbeddingInput,
    EmbeddingRequest, Extra, FunctionCall, MessageContent, PromptInput, Role, StopSequences, Tool, ToolCall, Usage,
};
use chitty_core::{Provider, Result};
use futures::StreamExt;
use serde_json::{Value, json};

use super::{Admitted, Answer, Flavor, MockServer, Shared};

/// A mock of Ollama's native API (`/api/chat`, `/api/generate`, `/api/embed`, `/api/tags`) that answers
/// from any [`Provider`]. Streams (the default when a request omits `stream`, as in Ollama) are NDJSON:
/// one line per text delta, one line with all tool calls, a final `"done": true` line with
/// `prompt_eval_count` and `eval_count`; an error from the provider becomes an `{"error": …}` line.
#[derive(Debug)]
pub struct MockOllama {
    provider: Arc<dyn Provider>,
    models: Vec<String>,
}

impl MockOllama {
    /// A mock serving `provider`; `/api/tags` lists the provider's name until [`Self::with_models`].
    pub fn new(provider: Arc<dyn Provider>) -> MockOllama {
        let models = vec![provider.name().to_owned()];
        MockOllama { provider, models }
    }

    /// Starts a mock serving `provider` with the defaults.
    pub async fn serve(provider: Arc<dyn Provider>) -> Result<MockServer> {
        MockOllama::new(provider).start().await
    }

    /// The model names `/api/tags` lists (every model name is served regardless).
    pub fn with_models<I, S>(mut self, models: I) -> MockOllama
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.models = models.into_iter().map(Into::into).collect();
        self
    }

    /// Binds `127.0.0.1:0` and serves until the returned handle is dropped.
    pub async fn start(self) -> Result<MockServer> {
        let shared = Arc::new(Shared::new(self.provider, Flavor::Ollama, None, self.models));
        let router = Router::new()
            .route("/api/chat", post(chat))
            .route("/api/generate", post(generate))
            .route("/api/embed", post(embed))
            .route("/api/tags", get(tags))
            .with_state(shared.clone());
        super::start(shared, router, "").await
    }
}

const CREATED_AT: &str = "2024-01-01T00:00:00Z";

fn line(value: &Value) -> Bytes {
    let mut text = value.to_string();
    text.push('\n');
    Bytes::from(text)
}

fn options(body: &Value) -> Value {
    body.get("options").cloned().unwrap_or_default()
}

fn stop_of(options: &Value) -> Option<StopSequences> {
    options
        .get("stop")
        .and_then(Value::as_array)
        .map(|v| StopSequences::Many(v.iter().filter_map(Value::as_str).map(str::to_owned).collect()))
}

fn cap_of(options: &Value) -> Option<u32> {
    options.get("num_predict").and_then(Value::as_u64).map(|n| u32::try_from(n).unwrap_or(u32::MAX))
}

fn done_reason(finish_reason: Option<&str>) -> &'static str {
    if finish_reason == Some("length") { "length" } else { "stop" }
}

/// An `/api/chat` body as an OpenAI chat request, and whether it streams.
fn to_chat_request(body: &Value) -> std::result::Result<(ChatCompletionRequest, bool), String> {
    let model = body.get("model").and_then(Value::as_str).ok_or("model is required")?;
    let mut messages = Vec::new();
    for m in body.get("messages").and_then(Value::as_array).ok_or("messages is required")? {
        let text = m.get("content").and_then(Value::as_str).unwrap_or_default().to_owned();
        let role = match m.get("role").and_then(Value::as_str) {
            Some("system") => Role::System,
            Some("user") => Role::User,
            Some("assistant") => Role::Assistant,
            Some("tool") => Role::Tool,
            other => return Err(format!("unknown role {other:?}")),
        };
        let mut message = ChatMessage::text(role, text.clone());
        if let Some(images) = m.get("images").and_then(Value::as_array) {
            let mut parts = vec![ContentPart { kind: "text".to_owned(), text: Some(text), extra: Extra::new() }];
            for image in images.iter().filter_map(Value::as_str) {
                let mut extra = Extra::new();
                extra.insert("image_url".to_owned(), json!({"url": format!("data:image/png;base64,{image}")}));
                parts.push(ContentPart { kind: "image_url".to_owned(), text: None, extra });
            }
            message.content = Some(MessageContent::Parts(parts));
        }
        if let Some(calls) = m.get("tool_calls").and_then(Value::as_array) {
            message.tool_calls = Some(
                calls
                    .iter()
                    .enumerate()
                    .map(|(i, c)| ToolCall {
                        id: format!("call_{i}"),
                        kind: "function".to_owned(),
                        function: FunctionCall {
                            name: c.pointer("/function/name").and_then(Value::as_str).unwrap_or_default().to_owned(),
                            arguments: c.pointer("/function/arguments").cloned().unwrap_or_default().to_string(),
                            extra: Extra::new(),
                        },
                        extra: Extra::new(),
                    })
                    .collect(),
            );
        }
        messages.push(message);
    }
    let tools: Option<Vec<Tool>> = match body.get("tools") {
        Some(t) => Some(serde_json::from_value(t.clone()).map_err(|e| format!("tools: {e}"))?),
        None => None,
    };
    let opts = options(body);
    let request = ChatCompletionRequest {
        model: model.to_owned(),
        messages,
        temperature: opts.get("temperature").and_then(Value::as_f64),
        top_p: opts.get("top_p").and_then(Value::as_f64),
        seed: opts.get("seed").and_then(Value::as_i64),
        max_tokens: cap_of(&opts),
        stop: stop_of(&opts),
        tools,
        ..Default::default()
    };
    Ok((request, body.get("stream").and_then(Value::as_bool).unwrap_or(true)))
}

fn counts(usage: Option<&Usage>) -> (u64, u64) {
    usage.map_or((0, 0), |u| (u.prompt_tokens, u.completion_tokens))
}

fn ollama_tool_calls(calls: &[ToolCall]) -> Value {
    Value::Array(
        calls
            .iter()
            .map(|c| {
                let arguments: Value = serde_json::from_str(&c.function.arguments).unwrap_or_else(|_| json!({}));
                json!({"function": {"name": c.function.name, "arguments": arguments}})
            })
            .collect(),
    )
}

async fn chat(admitted: Admitted) -> Answer {
    let body: Value = admitted.json()?;
    let (request, stream) = to_chat_request(&body).map_err(|message| admitted.error(400, &message))?;
    let model = request.model.clone();
    if !stream {
        let answer = admitted.provider().chat(request).await.map_err(|e| admitted.failed(&e))?;
        let choice = answer.choices.first();
        let (prompt, output) = counts(answer.usage.as_ref());
        let mut message =
            json!({"role": "assistant", "content": choice.map(|c| c.message.text_content()).unwrap_or_default()});
        if let (Some(calls), Some(o)) = (choice.and_then(|c| c.message.tool_calls.as_ref()), message.as_object_mut()) {
            o.insert("tool_calls".into(), ollama_tool_calls(calls));
        }
        let reply = json!({
            "model": model, "created_at": CREATED_AT, "message": message, "done": true,
            "done_reason": done_reason(choice.and_then(|c| c.finish_reason.as_deref())),
            "prompt_eval_count": prompt, "eval_count": output,
        });
        return Ok(admitted.answer(&reply));
    }
    let mut chunks = admitted.provider().chat_stream(request).await.map_err(|e| admitted.failed(&e))?;
    let mut lines = Vec::new();
    let mut acc = ChunkAccumulator::default();
    let mut failed = false;
    while let Some(item) = chunks.next().await {
        match item {
            Ok(chunk) => {
                for text in chunk.choices.iter().filter_map(|c| c.delta.content.as_deref()).filter(|t| !t.is_empty()) {
                    lines.push(line(&json!({"model": model, "created_at": CREATED_AT,
                        "message": {"role": "assistant", "content": text}, "done": false})));
                }
                acc.push(&chunk);
            }
            Err(e) => {
                lines.push(line(&json!({"error": e.to_string()})));
                failed = true;
                break;
            }
        }
    }
    if !failed {
        let answer = acc.finish();
        let choice = answer.choices.first();
        if let Some(calls) = choice.and_then(|c| c.message.tool_calls.as_ref()) {
            lines.push(line(&json!({"model": model, "created_at": CREATED_AT,
                "message": {"role": "assistant", "content": "", "tool_calls": ollama_tool_calls(calls)}, "done": false})));
        }
        let (prompt, output) = counts(answer.usage.as_ref());
        lines.push(line(&json!({"model": model, "created_at": CREATED_AT,
            "message": {"role": "assistant", "content": ""}, "done": true,
            "done_reason": done_reason(choice.and_then(|c| c.finish_reason.as_deref())),
            "prompt_eval_count": prompt, "eval_count": output})));
    }
    Ok(super::stream_response(futures::stream::iter(lines).boxed(), admitted, "application/x-ndjson"))
}

async fn generate(admitted: Admitted) -> Answer {
    let body: Value = admitted.json()?;
    let opts = options(&body);
    let model = body.get("model").and_then(Value::as_str).unwrap_or_default().to_owned();
    let request = CompletionRequest {
        model: model.clone(),
        prompt: PromptInput::Text(body.get("prompt").and_then(Value::as_str).unwrap_or_default().to_owned()),
        max_tokens: cap_of(&opts),
        temperature: opts.get("temperature").and_then(Value::as_f64),
        stop: stop_of(&opts),
        ..Default::default()
    };
    let answer = admitted.provider().completion(request).await.map_err(|e| admitted.failed(&e))?;
    let choice = answer.choices.first();
    let (prompt, output) = counts(answer.usage.as_ref());
    let text = choice.map(|c| c.text.clone()).unwrap_or_default();
    let done = json!({"model": model, "created_at": CREATED_AT, "response": "", "done": true,
        "done_reason": done_reason(choice.and_then(|c| c.finish_reason.as_deref())),
        "prompt_eval_count": prompt, "eval_count": output});
    if body.get("stream").and_then(Value::as_bool) == Some(false) {
        let mut whole = done;
        whole["response"] = json!(text);
        return Ok(admitted.answer(&whole));
    }
    // A word per line, as Ollama streams tokens.
    let mut lines: Vec<Bytes> = answer
        .to_chunks(1, false)
        .iter()
        .flat_map(|c| &c.choices)
        .filter(|c| !c.text.is_empty())
        .map(|c| line(&json!({"model": model, "created_at": CREATED_AT, "response": c.text, "done": false})))
        .collect();
    lines.push(line(&done));
    Ok(super::stream_response(futures::stream::iter(lines).boxed(), admitted, "application/x-ndjson"))
}

async fn embed(admitted: Admitted) -> Answer {
    let body: Value = admitted.json()?;
    let input = match body.get("input") {
        Some(Value::String(s)) => EmbeddingInput::Text(s.clone()),
        Some(Value::Array(v)) => EmbeddingInput::Texts(v.iter().filter_map(Value::as_str).map(str::to_owned).collect()),
        _ => return Err(admitted.error(400, "input is required")),
    };
    let model = body.get("model").and_then(Value::as_str).unwrap_or_default().to_owned();
    let request = EmbeddingRequest {
        model: model.clone(),
        input,
        dimensions: body.get("dimensions").and_then(Value::as_u64).map(|d| u32::try_from(d).unwrap_or(u32::MAX)),
        ..Default::default()
    };
    let answer = admitted.provider().embeddings(request).await.map_err(|e| admitted.failed(&e))?;
    let mut vectors = Vec::new();
    for item in &answer.data {
        vectors.push(item.embedding.to_floats().map_err(|e| admitted.failed(&e))?);
    }
    let reply = json!({"model": model, "embeddings": vectors, "prompt_eval_count": answer.usage.prompt_tokens});
    Ok(admitted.answer(&reply))
}

async fn tags(admitted: Admitted) -> Response {
    let models: Vec<Value> = admitted
        .shared
        .models
        .iter()
        .map(|m| json!({"name": m, "model": m, "modified_at": CREATED_AT, "size": 0}))
        .collect();
    admitted.answer(&json!({"models": models}))
}
