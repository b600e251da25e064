//! OpenAI's Responses API (`POST /v1/responses`) over chat completions: the request translated into a
//! [`ChatCompletionRequest`], the answer translated back into a response object, and a streamed chat answer
//! into the Responses event sequence. Any provider the gateway reaches with chat completions answers it; a
//! provider that speaks the Responses API itself gets the client's body as it is (see `Gateway::responses`).
//!
//! ```
//! use chitty_core::wire::responses::{ResponsesRequest, to_chat};
//!
//! let request: ResponsesRequest = serde_json::from_str(
//!     r#"{"model": "gpt-4o-mini", "instructions": "Be brief.", "input": "Hello", "max_output_tokens": 50}"#,
//! )?;
//! let chat = to_chat(&request, &[])?;
//! assert_eq!(chat.messages.len(), 2);
//! assert_eq!(chat.max_completion_tokens, Some(50));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! What is translated: input as a string or as items (messages with `input_text`, `input_image` and
//! `output_text` parts, `function_call` and `function_call_output` items), `instructions`, function `tools`,
//! `tool_choice`, `text.format` (`text`, `json_object`, `json_schema`), `max_output_tokens`, `temperature`,
//! `top_p`, `user`, `parallel_tool_calls`. `metadata` and `store` stay with the gateway (echoed in the
//! response object). Built-in tools (web search, file search, computer use) and reasoning items have no
//! chat equivalent and are refused with a 400 naming the field.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::{ChatCompletionChunk, ChatCompletionRequest, ChatCompletionResponse, ChatMessage, Usage};
use crate::error::{Error, Result};

/// A `POST /v1/responses` body. Fields this crate does not model are kept in `extra` and echoed back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResponsesRequest {
    /// Public model name.
    pub model: String,
    /// A string (one user message) or a list of input items.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<ResponseInput>,
    /// A system message placed first; not carried over by `previous_response_id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instructions: Option<String>,
    /// Function tools (`{"type": "function", "name", "description", "parameters", "strict"}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<Value>>,
    /// `auto`, `none`, `required`, or `{"type": "function", "name"}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<Value>,
    /// Text output options; `format` is `text`, `json_object` or `json_schema`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<Value>,
    /// Output cap in tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_output_tokens: Option<u32>,
    /// Sampling temperature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// Nucleus sampling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    /// Whether the model may call several tools at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallel_tool_calls: Option<bool>,
    /// Up to 16 string pairs, echoed in the response object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Map<String, Value>>,
    /// End-user identifier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Whether to stream events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    /// Whether to keep the response for `previous_response_id` and `GET /v1/responses/{id}` (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<bool>,
    /// A stored response whose conversation this request continues.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_response_id: Option<String>,
    /// Fields not modelled here.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ResponsesRequest {
    /// Whether the client asked for events.
    pub fn is_stream(&self) -> bool {
        self.stream.unwrap_or(false)
    }

    /// Whether the response is to be stored (OpenAI's default is to store).
    pub fn wants_store(&self) -> bool {
        self.store.unwrap_or(true)
    }
}

/// `input`: a string, or a list of items.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ResponseInput {
    /// One user message.
    Text(String),
    /// Messages, function calls and their outputs.
    Items(Vec<Value>),
}

fn invalid(message: impl Into<String>, param: &str) -> Error {
    Error::invalid_request(message, Some(param))
}

/// The chat request `request` asks for, after the `earlier` turns of the conversation it continues (chat
/// messages as stored with the previous response, instructions excluded).
pub fn to_chat(request: &ResponsesRequest, earlier: &[ChatMessage]) -> Result<ChatCompletionRequest> {
    let mut messages: Vec<Value> = Vec::new();
    if let Some(instructions) = &request.instructions {
        messages.push(json!({"role": "system", "content": instructions}));
    }
    for message in earlier {
        messages.push(serde_json::to_value(message).map_err(|e| Error::backend("serialize", e))?);
    }
    match &request.input {
        None => {}
        Some(ResponseInput::Text(text)) => messages.push(json!({"role": "user", "content": text})),
        Some(ResponseInput::Items(items)) => input_items(items, &mut messages)?,
    }
    if messages.iter().all(|m| m["role"] == "system") {
        return Err(invalid("`input` must hold at least one message", "input"));
    }
    let mut chat = Map::new();
    chat.insert("model".into(), Value::String(request.model.clone()));
    chat.insert("messages".into(), Value::Array(messages));
    if let Some(tools) = &request.tools {
        chat.insert("tools".into(), Value::Array(tools.iter().map(chat_tool).collect::<Result<_>>()?));
    }
    if let Some(choice) = &request.tool_choice {
        chat.insert("tool_choice".into(), chat_tool_choice(choice)?);
    }
    let format = request.text.as_ref().and_then(|t| t.get("format"));
    if let Some(response_format) = format.map(chat_response_format).transpose()?.flatten() {
        chat.insert("response_format".into(), response_format);
    }
    let scalars = [
        ("max_completion_tokens", request.max_output_tokens.map(Value::from)),
        ("temperature", request.temperature.map(Value::from)),
        ("top_p", request.top_p.map(Value::from)),
        ("parallel_tool_calls", request.parallel_tool_calls.map(Value::from)),
        ("user", request.user.clone().map(Value::from)),
    ];
    for (name, value) in scalars {
        if let Some(value) = value {
            chat.insert(name.into(), value);
        }
    }
    serde_json::from_value(Value::Object(chat)).map_err(|e| invalid(format!("invalid input: {e}"), "input"))
}

/// Appends the chat messages of Responses input items to `messages`.
fn input_items(items: &[Value], messages: &mut Vec<Value>) -> Result<()> {
    for (i, item) in items.iter().enumerate() {
        let kind = item.get("type").and_then(Value::as_str).unwrap_or("message");
        match kind {
            "message" => {
                let role = item
                    .get("role")
                    .and_then(Value::as_str)
                    .ok_or_else(|| invalid(format!("input[{i}] is a message without a `role`"), "input"))?;
                let content = match item.get("content") {
                    Some(Value::String(text)) => Value::String(text.clone()),
                    Some(Value::Array(parts)) => {
                        Value::Array(parts.iter().map(|p| content_part(p, role, i)).collect::<Result<Vec<_>>>()?)
                    }
                    _ => return Err(invalid(format!("input[{i}] has no `content`"), "input")),
                };
                let content = flatten_assistant_text(role, content);
                messages.push(json!({"role": role, "content": content}));
            }
            "function_call" => {
                let field = |name: &str| {
                    item.get(name)
                        .and_then(Value::as_str)
                        .ok_or_else(|| invalid(format!("input[{i}] is a function_call without `{name}`"), "input"))
                };
                let call = json!({
                    "id": field("call_id")?,
                    "type": "function",
                    "function": {"name": field("name")?, "arguments": field("arguments")?},
                });
                // Consecutive calls are one assistant turn, as chat completions expects them.
                match messages.last_mut() {
                    Some(last) if last["role"] == "assistant" && last.get("tool_calls").is_some() => {
                        if let Some(calls) = last["tool_calls"].as_array_mut() {
                            calls.push(call);
                        }
                    }
                    _ => messages.push(json!({"role": "assistant", "content": null, "tool_calls": [call]})),
                }
            }
            "function_call_output" => {
                let call_id = item.get("call_id").and_then(Value::as_str).ok_or_else(|| {
                    invalid(format!("input[{i}] is a function_call_output without `call_id`"), "input")
                })?;
                let output = match item.get("output") {
                    Some(Value::String(text)) => text.clone(),
                    Some(other) => other.to_string(),
                    None => String::new(),
                };
                messages.push(json!({"role": "tool", "tool_call_id": call_id, "content": output}));
            }
            other => {
                return Err(invalid(
                    format!("input[{i}] is a `{other}` item, which this gateway cannot translate to chat completions"),
                    "input",
                ));
            }
        }
    }
    Ok(())
}

/// A Responses content part as a chat content part.
fn content_part(part: &Value, role: &str, item: usize) -> Result<Value> {
    let text = || part.get("text").and_then(Value::as_str).unwrap_or_default();
    match part.get("type").and_then(Value::as_str) {
        Some("input_text" | "output_text" | "text") => Ok(json!({"type": "text", "text": text()})),
        Some("refusal") => Ok(json!({"type": "text", "text": part.get("refusal").cloned().unwrap_or_default()})),
        Some("input_image") if role != "assistant" => {
            let url = part.get("image_url").and_then(Value::as_str).ok_or_else(|| {
                invalid(
                    format!("input[{item}] has an input_image without `image_url` (file ids are not supported)"),
                    "input",
                )
            })?;
            let mut image = json!({"url": url});
            if let Some(detail) = part.get("detail") {
                image["detail"] = detail.clone();
            }
            Ok(json!({"type": "image_url", "image_url": image}))
        }
        other => Err(invalid(
            format!("input[{item}] has a content part of type {other:?}, which this gateway cannot translate"),
            "input",
        )),
    }
}

/// Assistant turns as one string: chat completions accepts only text parts from the assistant, and some
/// upstreams only a string.
fn flatten_assistant_text(role: &str, content: Value) -> Value {
    match content {
        Value::Array(parts) if role == "assistant" => {
            Value::String(parts.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).collect())
        }
        other => other,
    }
}

/// A Responses function tool as a chat tool.
fn chat_tool(tool: &Value) -> Result<Value> {
    match tool.get("type").and_then(Value::as_str) {
        Some("function") => {
            let name = tool
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| invalid("a function tool needs `name`", "tools"))?;
            let mut function = json!({"name": name});
            for field in ["description", "parameters", "strict"] {
                if let Some(value) = tool.get(field).filter(|v| !v.is_null()) {
                    function[field] = value.clone();
                }
            }
            Ok(json!({"type": "function", "function": function}))
        }
        other => Err(invalid(
            format!("tools of type {other:?} are not supported by this gateway; only `function` tools are"),
            "tools",
        )),
    }
}

fn chat_tool_choice(choice: &Value) -> Result<Value> {
    match choice {
        Value::String(mode) if matches!(mode.as_str(), "auto" | "none" | "required") => Ok(choice.clone()),
        Value::Object(object) if object.get("type").and_then(Value::as_str) == Some("function") => {
            let name =
                object.get("name").and_then(Value::as_str).ok_or_else(|| invalid("needs `name`", "tool_choice"))?;
            Ok(json!({"type": "function", "function": {"name": name}}))
        }
        _ => Err(invalid("`tool_choice` must be auto, none, required or a function", "tool_choice")),
    }
}

/// `text.format` as a chat `response_format`; `None` for plain text.
fn chat_response_format(format: &Value) -> Result<Option<Value>> {
    match format.get("type").and_then(Value::as_str) {
        Some("text") | None => Ok(None),
        Some("json_object") => Ok(Some(json!({"type": "json_object"}))),
        Some("json_schema") => {
            let mut schema = Map::new();
            for field in ["name", "schema", "strict", "description"] {
                if let Some(value) = format.get(field).filter(|v| !v.is_null()) {
                    schema.insert(field.into(), value.clone());
                }
            }
            if !schema.contains_key("name") || !schema.contains_key("schema") {
                return Err(invalid("a json_schema format needs `name` and `schema`", "text.format"));
            }
            Ok(Some(json!({"type": "json_schema", "json_schema": schema})))
        }
        Some(other) => Err(invalid(format!("unknown text format `{other}`"), "text.format")),
    }
}

/// What identifies a response and its items, chosen by the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseIds {
    /// `resp_…`.
    pub response: String,
    /// Seconds since the Unix epoch.
    pub created_at: u64,
}

impl ResponseIds {
    /// Ids derived from one random value: `resp_<hex>`, and items `msg_<hex>_<n>` and `fc_<hex>_<n>`.
    pub fn new(random: u64, random2: u64, created_at: u64) -> ResponseIds {
        ResponseIds { response: format!("resp_{random:016x}{random2:016x}"), created_at }
    }

    fn item(&self, prefix: &str, index: usize) -> String {
        let suffix = self.response.strip_prefix("resp_").unwrap_or(&self.response);
        format!("{prefix}_{suffix}_{index}")
    }
}

/// A response object (`"object": "response"`), as JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ResponseObject(pub Value);

impl ResponseObject {
    /// Its `id`.
    pub fn id(&self) -> &str {
        self.0.get("id").and_then(Value::as_str).unwrap_or_default()
    }

    /// The output as the assistant's chat message, for a later turn of the conversation.
    pub fn as_chat_message(&self) -> Option<ChatMessage> {
        let output = self.0.get("output")?.as_array()?;
        let text: String = output
            .iter()
            .filter(|item| item["type"] == "message")
            .flat_map(|item| item["content"].as_array().into_iter().flatten())
            .filter_map(|part| part.get("text").and_then(Value::as_str))
            .collect();
        let calls: Vec<Value> = output
            .iter()
            .filter(|item| item["type"] == "function_call")
            .map(|item| {
                json!({"id": item["call_id"], "type": "function",
                       "function": {"name": item["name"], "arguments": item["arguments"]}})
            })
            .collect();
        let mut message = json!({"role": "assistant", "content": if text.is_empty() && !calls.is_empty() { Value::Null } else { Value::String(text) }});
        if !calls.is_empty() {
            message["tool_calls"] = Value::Array(calls);
        }
        serde_json::from_value(message).ok()
    }
}

/// The response object's fields that echo the request.
fn echoed(request: &ResponsesRequest) -> Map<String, Value> {
    let mut fields = Map::new();
    let text = request.text.clone().unwrap_or_else(|| json!({"format": {"type": "text"}}));
    let values = [
        ("instructions", request.instructions.clone().map_or(Value::Null, Value::from)),
        ("max_output_tokens", request.max_output_tokens.map_or(Value::Null, Value::from)),
        ("metadata", Value::Object(request.metadata.clone().unwrap_or_default())),
        ("parallel_tool_calls", Value::Bool(request.parallel_tool_calls.unwrap_or(true))),
        ("previous_response_id", request.previous_response_id.clone().map_or(Value::Null, Value::from)),
        ("store", Value::Bool(request.wants_store())),
        ("temperature", request.temperature.map_or(Value::Null, Value::from)),
        ("text", text),
        ("tool_choice", request.tool_choice.clone().unwrap_or_else(|| Value::from("auto"))),
        ("tools", Value::Array(request.tools.clone().unwrap_or_default())),
        ("top_p", request.top_p.map_or(Value::Null, Value::from)),
        ("truncation", Value::from("disabled")),
        ("user", request.user.clone().map_or(Value::Null, Value::from)),
    ];
    for (name, value) in values {
        fields.insert(name.into(), value);
    }
    for (name, value) in &request.extra {
        fields.entry(name.clone()).or_insert_with(|| value.clone());
    }
    fields
}

/// Responses usage from chat usage.
fn usage_json(usage: &Usage) -> Value {
    let cached = usage.cached_prompt_tokens();
    let reasoning = usage
        .completion_tokens_details
        .as_ref()
        .and_then(|d| d.get("reasoning_tokens"))
        .and_then(Value::as_u64)
        .unwrap_or(0);
    json!({
        "input_tokens": usage.prompt_tokens,
        "input_tokens_details": {"cached_tokens": cached},
        "output_tokens": usage.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": usage.total_tokens,
    })
}

/// `status` and `incomplete_details` for a chat finish reason.
fn status(finish_reason: Option<&str>) -> (&'static str, Value) {
    match finish_reason {
        Some("length") => ("incomplete", json!({"reason": "max_output_tokens"})),
        Some("content_filter") => ("incomplete", json!({"reason": "content_filter"})),
        _ => ("completed", Value::Null),
    }
}

/// A response object with `status`, `output` and `usage`, echoing `request`.
fn response_json(
    request: &ResponsesRequest,
    ids: &ResponseIds,
    model: &str,
    status: &str,
    incomplete: Value,
    output: Vec<Value>,
    usage: Option<&Usage>,
) -> Value {
    let mut object = Map::new();
    object.insert("id".into(), Value::from(ids.response.clone()));
    object.insert("object".into(), Value::from("response"));
    object.insert("created_at".into(), Value::from(ids.created_at));
    object.insert("status".into(), Value::from(status));
    object.insert("error".into(), Value::Null);
    object.insert("incomplete_details".into(), incomplete);
    object.insert("model".into(), Value::from(model));
    object.insert("output".into(), Value::Array(output));
    object.insert("usage".into(), usage.map_or(Value::Null, usage_json));
    object.extend(echoed(request));
    Value::Object(object)
}

fn message_item(ids: &ResponseIds, index: usize, text: &str, status: &str) -> Value {
    json!({
        "type": "message",
        "id": ids.item("msg", index),
        "status": status,
        "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": []}],
    })
}

fn function_call_item(
    ids: &ResponseIds,
    index: usize,
    call_id: &str,
    name: &str,
    arguments: &str,
    status: &str,
) -> Value {
    json!({
        "type": "function_call",
        "id": ids.item("fc", index),
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "status": status,
    })
}

/// The response object for a whole chat answer.
pub fn from_chat(request: &ResponsesRequest, ids: &ResponseIds, answer: &ChatCompletionResponse) -> ResponseObject {
    let choice = answer.choices.first();
    let mut output = Vec::new();
    if let Some(choice) = choice {
        let text = choice.message.text_content();
        if let Some(refusal) = &choice.message.refusal {
            output.push(json!({
                "type": "message", "id": ids.item("msg", 0), "status": "completed", "role": "assistant",
                "content": [{"type": "refusal", "refusal": refusal}],
            }));
        } else if !text.is_empty() || choice.message.tool_calls.is_none() {
            output.push(message_item(ids, output.len(), &text, "completed"));
        }
        for call in choice.message.tool_calls.iter().flatten() {
            let index = output.len();
            output.push(function_call_item(
                ids,
                index,
                &call.id,
                &call.function.name,
                &call.function.arguments,
                "completed",
            ));
        }
    }
    let (status, incomplete) = status(choice.and_then(|c| c.finish_reason.as_deref()));
    ResponseObject(response_json(request, ids, &request.model, status, incomplete, output, answer.usage.as_ref()))
}

/// One server-sent event of a streamed response: its `type` (also the SSE `event:` name) and its JSON data,
/// which carries `type` and `sequence_number` as the SDKs expect.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(transparent)]
pub struct ResponseStreamEvent(pub Value);

impl ResponseStreamEvent {
    /// The event's `type`.
    pub fn kind(&self) -> &str {
        self.0.get("type").and_then(Value::as_str).unwrap_or_default()
    }
}

/// An output item being streamed.
#[derive(Debug)]
enum OpenItem {
    Text { output_index: usize, text: String },
    Call { output_index: usize, call_id: String, name: String, arguments: String },
}

/// Turns a streamed chat answer into the Responses event sequence: `response.created`,
/// `response.in_progress`, then per output item `response.output_item.added`, its content or argument deltas
/// and `…done` events, and `response.completed` (or `response.incomplete`) with usage.
#[derive(Debug)]
pub struct ResponseStreamTranslator {
    request: ResponsesRequest,
    ids: ResponseIds,
    sequence: u64,
    /// Items finished so far, in output order.
    done: Vec<Value>,
    /// The text item being streamed, if any.
    text: Option<OpenItem>,
    /// Tool calls being streamed, by their chat index.
    calls: BTreeMap<u32, OpenItem>,
    next_output_index: usize,
    finish_reason: Option<String>,
    usage: Option<Usage>,
}

impl ResponseStreamTranslator {
    /// A translator for the answer to `request`.
    pub fn new(request: ResponsesRequest, ids: ResponseIds) -> ResponseStreamTranslator {
        ResponseStreamTranslator {
            request,
            ids,
            sequence: 0,
            done: Vec::new(),
            text: None,
            calls: BTreeMap::new(),
            next_output_index: 0,
            finish_reason: None,
            usage: None,
        }
    }

    fn event(&mut self, kind: &str, mut fields: Map<String, Value>) -> ResponseStreamEvent {
        fields.insert("type".into(), Value::from(kind));
        fields.insert("sequence_number".into(), Value::from(self.sequence));
        self.sequence += 1;
        ResponseStreamEvent(Value::Object(fields))
    }

    fn snapshot(&self, status: &str, incomplete: Value, usage: Option<&Usage>) -> Value {
        response_json(&self.request, &self.ids, &self.request.model, status, incomplete, self.done.clone(), usage)
    }

    /// The events that open the stream.
    pub fn start(&mut self) -> Vec<ResponseStreamEvent> {
        let snapshot = self.snapshot("in_progress", Value::Null, None);
        vec![
            self.event("response.created", fields([("response", snapshot.clone())])),
            self.event("response.in_progress", fields([("response", snapshot)])),
        ]
    }

    /// The events one chat chunk adds.
    pub fn chunk(&mut self, chunk: &ChatCompletionChunk) -> Vec<ResponseStreamEvent> {
        let mut events = Vec::new();
        if let Some(usage) = &chunk.usage {
            self.usage = Some(usage.clone());
        }
        // One answer: the first choice, as the request never asks for more.
        let Some(choice) = chunk.choices.iter().find(|c| c.index == 0) else { return events };
        if let Some(delta) = choice.delta.content.as_deref().filter(|d| !d.is_empty()) {
            if self.text.is_none() {
                let output_index = self.next_output_index;
                self.next_output_index += 1;
                let item = json!({"type": "message", "id": self.ids.item("msg", output_index), "status": "in_progress",
                                  "role": "assistant", "content": []});
                events.push(self.event(
                    "response.output_item.added",
                    fields([("output_index", output_index.into()), ("item", item)]),
                ));
                let part = json!({"type": "output_text", "text": "", "annotations": []});
                events.push(self.event(
                    "response.content_part.added",
                    fields([
                        ("item_id", self.ids.item("msg", output_index).into()),
                        ("output_index", output_index.into()),
                        ("content_index", 0.into()),
                        ("part", part),
                    ]),
                ));
                self.text = Some(OpenItem::Text { output_index, text: String::new() });
            }
            if let Some(OpenItem::Text { output_index, text }) = &mut self.text {
                text.push_str(delta);
                let output_index = *output_index;
                events.push(self.event(
                    "response.output_text.delta",
                    fields([
                        ("item_id", self.ids.item("msg", output_index).into()),
                        ("output_index", output_index.into()),
                        ("content_index", 0.into()),
                        ("delta", delta.into()),
                        ("logprobs", Value::Array(Vec::new())),
                    ]),
                ));
            }
        }
        for call in choice.delta.tool_calls.iter().flatten() {
            if !self.calls.contains_key(&call.index) {
                // Text before a call is finished first: items are emitted in output order.
                events.extend(self.close_text());
                let output_index = self.next_output_index;
                self.next_output_index += 1;
                let call_id = call.id.clone().unwrap_or_default();
                let name = call.function.as_ref().and_then(|f| f.name.clone()).unwrap_or_default();
                let item = function_call_item(&self.ids, output_index, &call_id, &name, "", "in_progress");
                events.push(self.event(
                    "response.output_item.added",
                    fields([("output_index", output_index.into()), ("item", item)]),
                ));
                self.calls.insert(call.index, OpenItem::Call { output_index, call_id, name, arguments: String::new() });
            }
            let piece = call.function.as_ref().and_then(|f| f.arguments.clone()).unwrap_or_default();
            if let Some(OpenItem::Call { output_index, arguments, .. }) = self.calls.get_mut(&call.index) {
                if piece.is_empty() {
                    continue;
                }
                arguments.push_str(&piece);
                let output_index = *output_index;
                events.push(self.event(
                    "response.function_call_arguments.delta",
                    fields([
                        ("item_id", self.ids.item("fc", output_index).into()),
                        ("output_index", output_index.into()),
                        ("delta", piece.into()),
                    ]),
                ));
            }
        }
        if let Some(reason) = &choice.finish_reason {
            self.finish_reason = Some(reason.clone());
        }
        events
    }

    fn close_text(&mut self) -> Vec<ResponseStreamEvent> {
        let Some(OpenItem::Text { output_index, text }) = self.text.take() else { return Vec::new() };
        let item_id = self.ids.item("msg", output_index);
        let part = json!({"type": "output_text", "text": text, "annotations": []});
        let item = message_item(&self.ids, output_index, &text, "completed");
        let events = vec![
            self.event(
                "response.output_text.done",
                fields([
                    ("item_id", item_id.clone().into()),
                    ("output_index", output_index.into()),
                    ("content_index", 0.into()),
                    ("text", text.into()),
                    ("logprobs", Value::Array(Vec::new())),
                ]),
            ),
            self.event(
                "response.content_part.done",
                fields([
                    ("item_id", item_id.into()),
                    ("output_index", output_index.into()),
                    ("content_index", 0.into()),
                    ("part", part),
                ]),
            ),
            self.event(
                "response.output_item.done",
                fields([("output_index", output_index.into()), ("item", item.clone())]),
            ),
        ];
        self.done.push(item);
        events
    }

    /// The events that close the stream after the last chunk, and the final response object (to store).
    pub fn finish(&mut self) -> (Vec<ResponseStreamEvent>, ResponseObject) {
        let mut events = self.close_text();
        for (_, call) in std::mem::take(&mut self.calls) {
            let OpenItem::Call { output_index, call_id, name, arguments } = call else { continue };
            let item_id = self.ids.item("fc", output_index);
            events.push(self.event(
                "response.function_call_arguments.done",
                fields([
                    ("item_id", item_id.into()),
                    ("output_index", output_index.into()),
                    ("arguments", arguments.clone().into()),
                ]),
            ));
            let item = function_call_item(&self.ids, output_index, &call_id, &name, &arguments, "completed");
            events.push(self.event(
                "response.output_item.done",
                fields([("output_index", output_index.into()), ("item", item.clone())]),
            ));
            self.done.push(item);
        }
        if self.done.is_empty() {
            // An answer with no text at all is still one (empty) message, as `from_chat` makes it.
            self.done.push(message_item(&self.ids, 0, "", "completed"));
        }
        let (status, incomplete) = status(self.finish_reason.as_deref());
        let response = self.snapshot(status, incomplete, self.usage.clone().as_ref());
        let kind = if status == "completed" { "response.completed" } else { "response.incomplete" };
        events.push(self.event(kind, fields([("response", response.clone())])));
        (events, ResponseObject(response))
    }

    /// The event a failure mid-stream ends with (`error`), in the shape the SDKs raise.
    pub fn error(&mut self, error: &Error) -> ResponseStreamEvent {
        let code = error.code().unwrap_or(error.error_type());
        self.event(
            "error",
            fields([("code", code.into()), ("message", error.to_string().into()), ("param", Value::Null)]),
        )
    }
}

/// One item of a stream the gateway relays for the Responses or Messages API: a chat chunk, when the route
/// translates to chat completions, or an upstream's own event, when it speaks the API natively.
#[derive(Debug, Clone)]
// Moved once per answer or chunk: boxing the chat variant would add an allocation to each, for no gain.
#[allow(clippy::large_enum_variant)]
pub(crate) enum NativeChunk {
    /// A chat completion chunk, to be translated into the API's events.
    Chat(ChatCompletionChunk),
    /// An event of the upstream's own stream, relayed as it came.
    Native(Value),
}

impl super::sealed::Sealed for NativeChunk {}

impl super::StreamChunk for NativeChunk {
    fn usage(&self) -> Option<&Usage> {
        match self {
            NativeChunk::Chat(c) => c.usage.as_ref(),
            // A native event's usage is read by the gateway's accumulator; the relay never strips it.
            NativeChunk::Native(_) => None,
        }
    }

    fn take_usage(&mut self) -> Option<Usage> {
        match self {
            NativeChunk::Chat(c) => c.usage.take(),
            NativeChunk::Native(_) => None,
        }
    }

    fn has_choices(&self) -> bool {
        match self {
            NativeChunk::Chat(c) => !c.choices.is_empty(),
            NativeChunk::Native(_) => true,
        }
    }

    fn max_choice_index(&self) -> Option<u32> {
        match self {
            NativeChunk::Chat(c) => c.choices.iter().map(|c| c.index).max(),
            NativeChunk::Native(_) => None,
        }
    }

    fn usage_only(&self, usage: Usage) -> Self {
        match self {
            NativeChunk::Chat(c) => NativeChunk::Chat(super::StreamChunk::usage_only(c, usage)),
            NativeChunk::Native(_) => NativeChunk::Native(json!({"usage": usage})),
        }
    }
}

fn fields<const N: usize>(pairs: [(&str, Value); N]) -> Map<String, Value> {
    pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn request(body: Value) -> ResponsesRequest {
        serde_json::from_value(body).unwrap()
    }

    #[test]
    fn items_translate_to_chat_turns_with_calls_grouped() {
        let r = request(json!({
            "model": "m",
            "instructions": "sys",
            "input": [
                {"role": "user", "content": [{"type": "input_text", "text": "weather?"},
                                             {"type": "input_image", "image_url": "https://x/y.png", "detail": "low"}]},
                {"type": "function_call", "call_id": "c1", "name": "get", "arguments": "{\"a\":1}"},
                {"type": "function_call", "call_id": "c2", "name": "get", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
                {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "ok"}]},
            ],
            "tools": [{"type": "function", "name": "get", "parameters": {"type": "object"}}],
            "tool_choice": {"type": "function", "name": "get"},
            "text": {"format": {"type": "json_schema", "name": "w", "schema": {"type": "object"}, "strict": true}},
            "max_output_tokens": 9, "temperature": 0.5, "metadata": {"k": "v"}, "store": false,
        }));
        let chat = serde_json::to_value(to_chat(&r, &[]).unwrap()).unwrap();
        assert_eq!(chat["messages"][0], json!({"role": "system", "content": "sys"}));
        assert_eq!(chat["messages"][1]["content"][1]["image_url"], json!({"url": "https://x/y.png", "detail": "low"}));
        assert_eq!(chat["messages"][2]["tool_calls"].as_array().unwrap().len(), 2, "consecutive calls are one turn");
        assert_eq!(chat["messages"][3], json!({"role": "tool", "tool_call_id": "c1", "content": "sunny"}));
        assert_eq!(chat["messages"][4], json!({"role": "assistant", "content": "ok"}));
        assert_eq!(chat["tools"][0]["function"]["name"], "get");
        assert_eq!(chat["tool_choice"], json!({"type": "function", "function": {"name": "get"}}));
        assert_eq!(chat["response_format"]["json_schema"]["name"], "w");
        assert_eq!(chat["max_completion_tokens"], 9);
        assert!(chat.get("metadata").is_none() && chat.get("store").is_none(), "kept by the gateway: {chat}");
    }

    #[test]
    fn untranslatable_input_is_a_400_naming_the_field() {
        for (body, param) in [
            (json!({"model": "m", "input": [{"type": "reasoning", "summary": []}]}), "input"),
            (json!({"model": "m", "input": "x", "tools": [{"type": "web_search"}]}), "tools"),
            (json!({"model": "m", "input": "x", "text": {"format": {"type": "json_schema"}}}), "text.format"),
            (json!({"model": "m", "input": []}), "input"),
            (json!({"model": "m", "input": [{"role": "user"}]}), "input"),
        ] {
            let error = to_chat(&request(body.clone()), &[]).unwrap_err();
            assert_eq!(error.status(), 400, "{body}");
            assert_eq!(error.param(), Some(param), "{body}: {error}");
        }
    }

    #[test]
    fn a_chat_answer_becomes_output_items_with_usage_and_status() {
        let r = request(json!({"model": "public", "input": "hi", "max_output_tokens": 5}));
        let ids = ResponseIds::new(1, 2, 1_700_000_000);
        let answer: ChatCompletionResponse = serde_json::from_value(json!({
            "id": "c", "object": "chat.completion", "created": 1, "model": "upstream",
            "choices": [{"index": 0, "finish_reason": "length", "message": {"role": "assistant", "content": "Hel",
                "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}
        }))
        .unwrap();
        let object = from_chat(&r, &ids, &answer).0;
        assert_eq!(object["id"], "resp_00000000000000010000000000000002");
        assert_eq!(object["model"], "public", "the public name, not the upstream's");
        assert_eq!(object["status"], "incomplete");
        assert_eq!(object["incomplete_details"]["reason"], "max_output_tokens");
        assert_eq!(object["output"][0]["content"][0], json!({"type": "output_text", "text": "Hel", "annotations": []}));
        assert_eq!(object["output"][1]["type"], "function_call");
        assert_eq!(object["output"][1]["call_id"], "call_1");
        assert_eq!(object["usage"]["input_tokens"], 3);
        assert_eq!(object["usage"]["output_tokens"], 5);
        assert_eq!(object["max_output_tokens"], 5);
        let message = ResponseObject(object).as_chat_message().unwrap();
        assert_eq!(message.text_content(), "Hel");
        assert_eq!(message.tool_calls.unwrap()[0].id, "call_1");
    }

    fn chunk(body: Value) -> ChatCompletionChunk {
        let mut full = json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "u"});
        full.as_object_mut().unwrap().extend(body.as_object().unwrap().clone());
        serde_json::from_value(full).unwrap()
    }

    #[test]
    fn a_stream_becomes_the_responses_event_sequence() {
        let r = request(json!({"model": "m", "input": "hi", "stream": true}));
        let mut t = ResponseStreamTranslator::new(r, ResponseIds::new(7, 8, 0));
        let mut events = t.start();
        for body in [
            json!({"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": null}]}),
            json!({"choices": [{"index": 0, "delta": {"content": "Hel"}, "finish_reason": null}]}),
            json!({"choices": [{"index": 0, "delta": {"content": "lo"}, "finish_reason": null}]}),
            json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "call_9", "type": "function",
                "function": {"name": "f", "arguments": ""}}]}, "finish_reason": null}]}),
            json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": "{\"x\":"}}]}, "finish_reason": null}]}),
            json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]}, "finish_reason": "tool_calls"}]}),
            json!({"choices": [], "usage": {"prompt_tokens": 2, "completion_tokens": 4, "total_tokens": 6}}),
        ] {
            events.extend(t.chunk(&chunk(body)));
        }
        let (last, object) = t.finish();
        events.extend(last);
        let kinds: Vec<&str> = events.iter().map(ResponseStreamEvent::kind).collect();
        assert_eq!(
            kinds,
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta",
                "response.output_text.delta",
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.output_item.added",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.done",
                "response.output_item.done",
                "response.completed",
            ]
        );
        for (i, event) in events.iter().enumerate() {
            assert_eq!(event.0["sequence_number"], i as u64);
        }
        assert_eq!(events[6].0["text"], "Hello");
        assert_eq!(events[12].0["arguments"], "{\"x\":1}");
        assert_eq!(events[9].0["output_index"], 1);
        let completed = &events[14].0["response"];
        assert_eq!(completed["usage"]["output_tokens"], 4);
        assert_eq!(completed["output"][1]["call_id"], "call_9");
        assert_eq!(&object.0, completed);
    }
}
