//! Anthropic's Messages API at the gateway's door (`POST /v1/messages`): its wire types, and their translation
//! to and from chat completions, so that a Messages request runs through the same pipeline (budgets, cache,
//! routing, rate limits, events) as a chat completion and reaches any provider.
//!
//! | Anthropic | chat completions |
//! |---|---|
//! | `system` (string or text blocks) | a `system` message (text or text parts) |
//! | `text` and `image` blocks (`base64` or `url` source) | `text` and `image_url` parts (data URL or URL) |
//! | assistant `tool_use` blocks | assistant `tool_calls` (`input` as the arguments' JSON) |
//! | user `tool_result` blocks | `tool` messages, before the rest of that user turn |
//! | `tools[]` with `input_schema` | function tools with `parameters` |
//! | `tool_choice` `auto` / `any` / `tool` / `none`, `disable_parallel_tool_use` | `auto` / `required` / a named function / `none`, `parallel_tool_calls: false` |
//! | `max_tokens` (required), `stop_sequences`, `temperature`, `top_p`, `metadata.user_id` | `max_tokens`, `stop`, `temperature`, `top_p`, `user` |
//! | `top_k` | kept as an extra field (forwarded to upstreams that read it: Anthropic, vLLM) |
//! | `stop_reason` `end_turn` / `stop_sequence` / `max_tokens` / `tool_use` / `refusal` | `finish_reason` `stop` / `stop` (with the choice's `stop_reason` string, as vLLM reports it) / `length` / `tool_calls` / `content_filter` |
//! | `usage.input_tokens` + `cache_read_input_tokens`, `output_tokens` | `usage.prompt_tokens` (`cached_tokens`), `completion_tokens` |
//!
//! Other request fields are kept in `extra` on the Anthropic side but not forwarded: chat has no place for them
//! (a route to an Anthropic upstream gets the client's body as it is instead: see `Gateway::messages`).
//! Assistant `thinking` blocks are dropped (chat cannot carry them back); other block and tool types
//! (documents, server tools) are refused with [`Error::InvalidRequest`]. A stream is translated chunk by chunk
//! by [`MessagesStreamTranslator`], a pure state machine.
//!
//! ```
//! use chitty_core::wire::{MessagesRequest, MessagesResponse, ChatCompletionResponse};
//!
//! let request: MessagesRequest = serde_json::from_str(
//!     r#"{"model": "claude", "max_tokens": 64, "system": "Be brief.", "messages": [{"role": "user", "content": "Hi"}]}"#,
//! )?;
//! let chat = request.into_chat()?;
//! assert_eq!((chat.messages.len(), chat.max_tokens), (2, Some(64)));
//!
//! let answer: ChatCompletionResponse = serde_json::from_str(
//!     r#"{"id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": "claude",
//!         "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello"}, "finish_reason": "stop"}],
//!         "usage": {"prompt_tokens": 9, "completion_tokens": 1, "total_tokens": 10}}"#,
//! )?;
//! let message = MessagesResponse::from_chat(&answer);
//! assert_eq!((message.stop_reason.as_deref(), message.usage.input_tokens), (Some("end_turn"), 9));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Value, json};

use super::codec::{OneOrMany, wire_object};
use super::{
    ChatChoice, ChatCompletionChunk, ChatCompletionRequest, ChatCompletionResponse, ChatMessage, ContentPart, Extra,
    FunctionCall, FunctionDefinition, MessageContent, PromptTokensDetails, Role, StopSequences, StreamOptions, Tool,
    ToolCall, Usage,
};
use crate::error::{Error, Result};

/// A `POST /v1/messages` (or `/v1/messages/count_tokens`) request.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MessagesRequest {
    /// Model name (public name at the gateway).
    pub model: String,
    /// The conversation, alternating `user` and `assistant` turns.
    pub messages: Vec<AnthropicMessage>,
    /// Output token cap; required by [`MessagesRequest::into_chat`] (count_tokens takes none).
    pub max_tokens: Option<u32>,
    /// System prompt: a string or text blocks.
    pub system: Option<MessagesContent>,
    /// Sequences that end generation.
    pub stop_sequences: Option<Vec<String>>,
    /// Sampling temperature.
    pub temperature: Option<f64>,
    /// Nucleus sampling mass.
    pub top_p: Option<f64>,
    /// Top-k sampling.
    pub top_k: Option<u64>,
    /// Tools the model may use.
    pub tools: Option<Vec<AnthropicTool>>,
    /// How the model must use the tools.
    pub tool_choice: Option<AnthropicToolChoice>,
    /// Request metadata (`user_id`).
    pub metadata: Option<MessagesMetadata>,
    /// Stream the answer as Anthropic's server-sent events.
    pub stream: Option<bool>,
    /// Fields not modelled here (kept, not forwarded).
    pub extra: Extra,
}

wire_object!(MessagesRequest {
    model: required,
    messages: required,
    max_tokens: optional,
    system: optional,
    stop_sequences: optional,
    temperature: optional,
    top_p: optional,
    top_k: optional,
    tools: optional,
    tool_choice: optional,
    metadata: optional,
    stream: optional
});

/// One turn of a Messages conversation.
#[derive(Debug, Clone, PartialEq)]
pub struct AnthropicMessage {
    /// `user` or `assistant`.
    pub role: String,
    /// A string or content blocks.
    pub content: MessagesContent,
    /// Fields not modelled here.
    pub extra: Extra,
}

wire_object!(AnthropicMessage { role: required, content: required });

/// Content as Anthropic takes it: a string, or a list of blocks.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum MessagesContent {
    /// Plain text.
    Text(String),
    /// Content blocks.
    Blocks(Vec<ContentBlock>),
}

impl<'de> Deserialize<'de> for MessagesContent {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        Ok(match OneOrMany::deserialize(deserializer, "a string or an array of content blocks")? {
            OneOrMany::One(s) => MessagesContent::Text(s),
            OneOrMany::Many(v) => MessagesContent::Blocks(v),
        })
    }
}

/// One content block (`text`, `image`, `tool_use`, `tool_result`, `thinking`, …). Fields a block type does not
/// use stay `None`; fields not modelled here (`cache_control`, `citations`, `signature`, …) are kept in `extra`.
#[derive(Debug, Clone, PartialEq)]
pub struct ContentBlock {
    /// Block type.
    pub kind: String,
    /// Text of a `text` block.
    pub text: Option<String>,
    /// Source of an `image` block: `{"type": "base64", "media_type", "data"}` or `{"type": "url", "url"}`.
    pub source: Option<Value>,
    /// Identifier of a `tool_use` block.
    pub id: Option<String>,
    /// Tool name of a `tool_use` block.
    pub name: Option<String>,
    /// Arguments of a `tool_use` block (an object).
    pub input: Option<Value>,
    /// The `tool_use` a `tool_result` block answers.
    pub tool_use_id: Option<String>,
    /// Content of a `tool_result` block.
    pub content: Option<MessagesContent>,
    /// Whether a `tool_result` reports a failure.
    pub is_error: Option<bool>,
    /// Fields not modelled here.
    pub extra: Extra,
}

wire_object!(ContentBlock {
    kind as "type": required,
    text: optional,
    source: optional,
    id: optional,
    name: optional,
    input: optional,
    tool_use_id: optional,
    content: optional,
    is_error: optional
});

impl ContentBlock {
    fn empty(kind: &str) -> ContentBlock {
        ContentBlock {
            kind: kind.to_owned(),
            text: None,
            source: None,
            id: None,
            name: None,
            input: None,
            tool_use_id: None,
            content: None,
            is_error: None,
            extra: Extra::new(),
        }
    }

    /// A `text` block.
    pub fn text(text: impl Into<String>) -> ContentBlock {
        ContentBlock { text: Some(text.into()), ..ContentBlock::empty("text") }
    }

    /// A `tool_use` block.
    pub fn tool_use(id: impl Into<String>, name: impl Into<String>, input: Value) -> ContentBlock {
        ContentBlock {
            id: Some(id.into()),
            name: Some(name.into()),
            input: Some(input),
            ..ContentBlock::empty("tool_use")
        }
    }
}

/// A tool definition.
#[derive(Debug, Clone, PartialEq)]
pub struct AnthropicTool {
    /// Tool type: absent or `custom` for client tools; server tools (`web_search_…`, `bash_…`) name theirs.
    pub kind: Option<String>,
    /// Tool name.
    pub name: String,
    /// What it does.
    pub description: Option<String>,
    /// JSON Schema of the input.
    pub input_schema: Option<Value>,
    /// Fields not modelled here (`cache_control`, …).
    pub extra: Extra,
}

wire_object!(AnthropicTool { kind as "type": optional, name: required, description: optional, input_schema: optional });

/// `tool_choice`: `{"type": "auto" | "any" | "tool" | "none", "name"?, "disable_parallel_tool_use"?}`.
#[derive(Debug, Clone, PartialEq)]
pub struct AnthropicToolChoice {
    /// Choice type.
    pub kind: String,
    /// The tool to use, for type `tool`.
    pub name: Option<String>,
    /// At most one tool call per turn.
    pub disable_parallel_tool_use: Option<bool>,
    /// Fields not modelled here.
    pub extra: Extra,
}

wire_object!(AnthropicToolChoice { kind as "type": required, name: optional, disable_parallel_tool_use: optional });

/// `metadata`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MessagesMetadata {
    /// An opaque end-user identifier.
    pub user_id: Option<String>,
    /// Fields not modelled here.
    pub extra: Extra,
}

wire_object!(MessagesMetadata { user_id: optional });

/// A Messages API answer.
#[derive(Debug, Clone, PartialEq)]
pub struct MessagesResponse {
    /// Message identifier (`msg_…`).
    pub id: String,
    /// `message`.
    pub kind: String,
    /// `assistant`.
    pub role: String,
    /// Model that answered.
    pub model: String,
    /// Text and `tool_use` blocks.
    pub content: Vec<ContentBlock>,
    /// `end_turn`, `max_tokens`, `stop_sequence`, `tool_use`, `refusal`; `null` in `message_start`.
    pub stop_reason: Option<String>,
    /// The stop sequence that ended generation, if one did.
    pub stop_sequence: Option<String>,
    /// Token usage.
    pub usage: MessagesUsage,
    /// Fields not modelled here.
    pub extra: Extra,
}

wire_object!(MessagesResponse {
    id: required,
    kind as "type": required,
    role: required,
    model: required,
    content: required,
    stop_reason: nullable,
    stop_sequence: nullable,
    usage: required
});

/// A Messages answer's `usage`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MessagesUsage {
    /// Input tokens not read from the prompt cache.
    pub input_tokens: u64,
    /// Output tokens.
    pub output_tokens: u64,
    /// Input tokens written to the prompt cache.
    pub cache_creation_input_tokens: Option<u64>,
    /// Input tokens read from the prompt cache.
    pub cache_read_input_tokens: Option<u64>,
    /// Fields not modelled here.
    pub extra: Extra,
}

wire_object!(MessagesUsage {
    input_tokens: default,
    output_tokens: default,
    cache_creation_input_tokens: optional,
    cache_read_input_tokens: optional
});

impl MessagesUsage {
    /// Anthropic's usage for chat usage: cached prompt tokens are reported apart from the others.
    pub fn from_chat(usage: &Usage) -> MessagesUsage {
        let cached = usage.cached_prompt_tokens().min(usage.prompt_tokens);
        MessagesUsage {
            input_tokens: usage.prompt_tokens - cached,
            output_tokens: usage.completion_tokens,
            cache_creation_input_tokens: None,
            cache_read_input_tokens: (cached > 0).then_some(cached),
            extra: Extra::new(),
        }
    }

    /// Chat usage for this: every input token (cached or written to the cache) is a prompt token.
    pub fn to_chat(&self) -> Usage {
        let cached = self.cache_read_input_tokens.unwrap_or(0);
        let prompt =
            self.input_tokens.saturating_add(cached).saturating_add(self.cache_creation_input_tokens.unwrap_or(0));
        let mut usage = Usage::new(prompt, self.output_tokens);
        if cached > 0 {
            usage.prompt_tokens_details =
                Some(PromptTokensDetails { cached_tokens: Some(cached), extra: Extra::new() });
        }
        usage
    }
}

/// `POST /v1/messages/count_tokens`'s answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CountTokensResponse {
    /// Input tokens of the request (the gateway's upper bound, see [`crate::tokens`]).
    pub input_tokens: u64,
}

fn invalid(message: impl Into<String>, param: &str) -> Error {
    Error::invalid_request(message, Some(param))
}

impl MessagesRequest {
    /// Whether the client asked for a streamed answer.
    pub fn is_stream(&self) -> bool {
        self.stream.unwrap_or(false)
    }

    /// The chat completion request this Messages request asks for. Refuses a request without `max_tokens`
    /// (Anthropic requires it), and blocks, tools and choices chat cannot express.
    pub fn into_chat(self) -> Result<ChatCompletionRequest> {
        let max_tokens = match self.max_tokens {
            None => return Err(invalid("max_tokens: Field required", "max_tokens")),
            Some(0) => return Err(invalid("max_tokens: must be at least 1", "max_tokens")),
            Some(n) => n,
        };
        let mut chat = self.into_chat_prompt()?;
        chat.max_tokens = Some(max_tokens);
        Ok(chat)
    }

    /// [`MessagesRequest::into_chat`] without requiring `max_tokens` (for count_tokens, which takes none).
    pub fn into_chat_prompt(self) -> Result<ChatCompletionRequest> {
        let mut messages = Vec::with_capacity(self.messages.len() + 1);
        if let Some(system) = self.system {
            messages.push(ChatMessage { content: Some(system_content(system)?), ..ChatMessage::system("") });
        }
        for message in self.messages {
            match message.role.as_str() {
                "user" => user_messages(message.content, &mut messages)?,
                "assistant" => messages.push(assistant_message(message.content)?),
                other => {
                    return Err(invalid(
                        format!("messages: unknown role `{other}` (`user` or `assistant`)"),
                        "messages",
                    ));
                }
            }
        }
        let tools = self.tools.map(|tools| tools.into_iter().map(chat_tool).collect::<Result<Vec<_>>>()).transpose()?;
        let (tool_choice, parallel_tool_calls) = match self.tool_choice {
            None => (None, None),
            Some(choice) => chat_tool_choice(choice)?,
        };
        let mut extra = Extra::new();
        if let Some(k) = self.top_k {
            extra.insert("top_k".to_owned(), json!(k));
        }
        let stream = self.stream.filter(|s| *s);
        Ok(ChatCompletionRequest {
            model: self.model,
            messages,
            temperature: self.temperature,
            top_p: self.top_p,
            stop: self.stop_sequences.filter(|s| !s.is_empty()).map(StopSequences::Many),
            max_tokens: self.max_tokens,
            tools: tools.filter(|t| !t.is_empty()),
            tool_choice,
            parallel_tool_calls,
            user: self.metadata.and_then(|m| m.user_id),
            stream,
            // The usage chunk becomes `message_delta`'s usage.
            stream_options: stream.map(|_| StreamOptions { include_usage: Some(true), extra: Extra::new() }),
            extra,
            ..Default::default()
        })
    }
}

fn text_part(text: String) -> ContentPart {
    ContentPart { kind: "text".to_owned(), text: Some(text), extra: Extra::new() }
}

fn block_text(block: &mut ContentBlock) -> Result<String> {
    block.text.take().ok_or_else(|| invalid("messages: a `text` block needs `text`", "messages"))
}

/// The system prompt as chat content: text, or text parts.
fn system_content(system: MessagesContent) -> Result<MessageContent> {
    match system {
        MessagesContent::Text(t) => Ok(MessageContent::Text(t)),
        MessagesContent::Blocks(blocks) => blocks
            .into_iter()
            .map(|mut b| match b.kind.as_str() {
                "text" => {
                    b.text.take().map(text_part).ok_or_else(|| invalid("system: a `text` block needs `text`", "system"))
                }
                other => Err(invalid(format!("system: only text blocks are allowed, not `{other}`"), "system")),
            })
            .collect::<Result<Vec<_>>>()
            .map(MessageContent::Parts),
    }
}

/// An `image` block's source as an `image_url` part.
fn image_part(source: Option<&Value>) -> Result<ContentPart> {
    let source = source.ok_or_else(|| invalid("messages: an `image` block needs `source`", "messages"))?;
    let field = |name: &str| source.get(name).and_then(Value::as_str);
    let url = match field("type") {
        Some("base64") => match (field("media_type"), field("data")) {
            (Some(media_type), Some(data)) => format!("data:{media_type};base64,{data}"),
            _ => return Err(invalid("messages: a base64 image source needs `media_type` and `data`", "messages")),
        },
        Some("url") => {
            field("url").ok_or_else(|| invalid("messages: a url image source needs `url`", "messages"))?.to_owned()
        }
        other => {
            return Err(invalid(
                format!(
                    "messages: image sources of type `{}` are not supported (`base64` or `url`)",
                    other.unwrap_or("?")
                ),
                "messages",
            ));
        }
    };
    let mut extra = Extra::new();
    extra.insert("image_url".to_owned(), json!({ "url": url }));
    Ok(ContentPart { kind: "image_url".to_owned(), text: None, extra })
}

/// A user turn: its `tool_result` blocks become `tool` messages, the other blocks user messages, in order.
fn user_messages(content: MessagesContent, out: &mut Vec<ChatMessage>) -> Result<()> {
    let blocks = match content {
        MessagesContent::Text(t) => {
            out.push(ChatMessage::user(t));
            return Ok(());
        }
        MessagesContent::Blocks(blocks) => blocks,
    };
    let mut parts = Vec::new();
    let flush = |parts: &mut Vec<ContentPart>, out: &mut Vec<ChatMessage>| {
        if !parts.is_empty() {
            out.push(ChatMessage {
                content: Some(MessageContent::Parts(std::mem::take(parts))),
                ..ChatMessage::user("")
            });
        }
    };
    for mut block in blocks {
        match block.kind.as_str() {
            "text" => parts.push(text_part(block_text(&mut block)?)),
            "image" => parts.push(image_part(block.source.as_ref())?),
            "tool_result" => {
                flush(&mut parts, out);
                let id = block
                    .tool_use_id
                    .take()
                    .ok_or_else(|| invalid("messages: a `tool_result` block needs `tool_use_id`", "messages"))?;
                let content = match block.content.take() {
                    None => MessageContent::Text(String::new()),
                    Some(MessagesContent::Text(t)) => MessageContent::Text(t),
                    Some(MessagesContent::Blocks(inner)) => MessageContent::Parts(
                        inner
                            .into_iter()
                            .map(|mut b| match b.kind.as_str() {
                                "text" => block_text(&mut b).map(text_part),
                                other => Err(invalid(
                                    format!("messages: tool results can hold only text here, not `{other}`"),
                                    "messages",
                                )),
                            })
                            .collect::<Result<Vec<_>>>()?,
                    ),
                };
                out.push(ChatMessage {
                    role: Role::Tool,
                    content: Some(content),
                    tool_call_id: Some(id),
                    ..ChatMessage::user("")
                });
            }
            other => {
                return Err(invalid(format!("messages: `{other}` blocks are not supported in user turns"), "messages"));
            }
        }
    }
    flush(&mut parts, out);
    Ok(())
}

/// An assistant turn: its text, and its `tool_use` blocks as tool calls. Thinking blocks are dropped.
fn assistant_message(content: MessagesContent) -> Result<ChatMessage> {
    let blocks = match content {
        MessagesContent::Text(t) => return Ok(ChatMessage::assistant(t)),
        MessagesContent::Blocks(blocks) => blocks,
    };
    let mut text: Option<String> = None;
    let mut calls = Vec::new();
    for mut block in blocks {
        match block.kind.as_str() {
            "text" => text.get_or_insert_with(String::new).push_str(&block_text(&mut block)?),
            "tool_use" => {
                let (Some(id), Some(name)) = (block.id.take(), block.name.take()) else {
                    return Err(invalid("messages: a `tool_use` block needs `id` and `name`", "messages"));
                };
                let input = block.input.take().unwrap_or_else(|| json!({}));
                calls.push(ToolCall {
                    id,
                    kind: "function".to_owned(),
                    function: FunctionCall { name, arguments: input.to_string(), extra: Extra::new() },
                    extra: Extra::new(),
                });
            }
            "thinking" | "redacted_thinking" => {}
            other => {
                return Err(invalid(
                    format!("messages: `{other}` blocks are not supported in assistant turns"),
                    "messages",
                ));
            }
        }
    }
    let content = match text {
        None if !calls.is_empty() => None,
        t => Some(MessageContent::Text(t.unwrap_or_default())),
    };
    Ok(ChatMessage { content, tool_calls: (!calls.is_empty()).then_some(calls), ..ChatMessage::assistant("") })
}

fn chat_tool(tool: AnthropicTool) -> Result<Tool> {
    if let Some(kind) = tool.kind.as_deref().filter(|k| *k != "custom") {
        return Err(invalid(format!("tools: server tools (`{kind}`) are not supported; define client tools"), "tools"));
    }
    Ok(Tool {
        kind: "function".to_owned(),
        function: Some(FunctionDefinition {
            name: tool.name,
            description: tool.description,
            parameters: Some(tool.input_schema.unwrap_or_else(|| json!({"type": "object", "properties": {}}))),
            strict: None,
            extra: Extra::new(),
        }),
        extra: Extra::new(),
    })
}

fn chat_tool_choice(choice: AnthropicToolChoice) -> Result<(Option<Value>, Option<bool>)> {
    let value = match choice.kind.as_str() {
        "auto" => json!("auto"),
        "any" => json!("required"),
        "none" => json!("none"),
        "tool" => {
            let name = choice.name.ok_or_else(|| invalid("tool_choice: type `tool` needs `name`", "tool_choice"))?;
            json!({"type": "function", "function": {"name": name}})
        }
        other => return Err(invalid(format!("tool_choice: unknown type `{other}`"), "tool_choice")),
    };
    Ok((Some(value), choice.disable_parallel_tool_use.filter(|d| *d).map(|_| false)))
}

/// Anthropic's `stop_reason` and `stop_sequence` for a choice's `finish_reason`. A matched stop sequence is
/// known only when the upstream reports it as the choice's `stop_reason` string (vLLM does).
fn stop_reason(finish_reason: Option<&str>, matched: Option<&str>, called_tools: bool) -> (String, Option<String>) {
    let reason = match finish_reason {
        Some("length") => "max_tokens",
        Some("tool_calls" | "function_call") => "tool_use",
        Some("content_filter") => "refusal",
        _ if called_tools => "tool_use",
        Some("stop") if matched.is_some() => return ("stop_sequence".to_owned(), matched.map(str::to_owned)),
        _ => "end_turn",
    };
    (reason.to_owned(), None)
}

/// The finish reason chat reports for Anthropic's `stop_reason`.
pub fn chat_finish_reason(stop_reason: &str) -> &str {
    match stop_reason {
        "end_turn" | "stop_sequence" | "pause_turn" => "stop",
        "max_tokens" | "model_context_window_exceeded" => "length",
        "tool_use" => "tool_calls",
        "refusal" => "content_filter",
        other => other,
    }
}

/// A `msg_` identifier for a chat completion's id (Anthropic's own ids are kept).
fn message_id(chat_id: &str) -> String {
    if chat_id.starts_with("msg_") {
        return chat_id.to_owned();
    }
    format!("msg_{}", chat_id.strip_prefix("chatcmpl-").unwrap_or(chat_id))
}

/// A tool call's arguments as a `tool_use` input: the object they encode, or `{}` when they are not one.
fn tool_input(arguments: &str) -> Value {
    match serde_json::from_str::<Value>(arguments) {
        Ok(v @ Value::Object(_)) => v,
        _ => json!({}),
    }
}

impl MessagesResponse {
    /// The Messages answer for a chat completion (its first choice).
    pub fn from_chat(chat: &ChatCompletionResponse) -> MessagesResponse {
        let mut content = Vec::new();
        let choice = chat.choices.iter().min_by_key(|c| c.index);
        let mut stop = ("end_turn".to_owned(), None);
        if let Some(choice) = choice {
            let message = &choice.message;
            let mut text = message.text_content();
            if let Some(refusal) = &message.refusal {
                text.push_str(refusal);
            }
            if !text.is_empty() {
                content.push(ContentBlock::text(text));
            }
            for call in message.tool_calls.iter().flatten() {
                content.push(ContentBlock::tool_use(
                    &call.id,
                    &call.function.name,
                    tool_input(&call.function.arguments),
                ));
            }
            let matched = choice.extra.get("stop_reason").and_then(Value::as_str);
            stop = stop_reason(
                choice.finish_reason.as_deref(),
                matched,
                message.tool_calls.as_ref().is_some_and(|c| !c.is_empty()),
            );
        }
        MessagesResponse {
            id: message_id(&chat.id),
            kind: "message".to_owned(),
            role: "assistant".to_owned(),
            model: chat.model.clone(),
            content,
            stop_reason: Some(stop.0),
            stop_sequence: stop.1,
            usage: chat.usage.as_ref().map(MessagesUsage::from_chat).unwrap_or_default(),
            extra: Extra::new(),
        }
    }

    /// The chat completion for this answer: text blocks joined, `tool_use` blocks as tool calls, a matched stop
    /// sequence kept as the choice's `stop_reason` string. The inverse of [`MessagesResponse::from_chat`].
    pub fn to_chat(&self, created: u64) -> ChatCompletionResponse {
        let mut text: Option<String> = None;
        let mut calls = Vec::new();
        for block in &self.content {
            match block.kind.as_str() {
                "text" => text.get_or_insert_with(String::new).push_str(block.text.as_deref().unwrap_or_default()),
                "tool_use" => calls.push(ToolCall {
                    id: block.id.clone().unwrap_or_default(),
                    kind: "function".to_owned(),
                    function: FunctionCall {
                        name: block.name.clone().unwrap_or_default(),
                        arguments: block.input.as_ref().unwrap_or(&json!({})).to_string(),
                        extra: Extra::new(),
                    },
                    extra: Extra::new(),
                }),
                _ => {}
            }
        }
        let mut extra = Extra::new();
        if let Some(s) = &self.stop_sequence {
            extra.insert("stop_reason".to_owned(), json!(s));
        }
        let message = ChatMessage {
            content: match text {
                None if !calls.is_empty() => None,
                t => Some(MessageContent::Text(t.unwrap_or_default())),
            },
            tool_calls: (!calls.is_empty()).then_some(calls),
            ..ChatMessage::assistant("")
        };
        ChatCompletionResponse {
            id: self.id.clone(),
            object: "chat.completion".to_owned(),
            created,
            model: self.model.clone(),
            choices: vec![ChatChoice {
                index: 0,
                message,
                finish_reason: self.stop_reason.as_deref().map(|r| chat_finish_reason(r).to_owned()),
                logprobs: None,
                extra,
            }],
            usage: Some(self.usage.to_chat()),
            system_fingerprint: None,
            extra: Extra::new(),
        }
    }
}

/// One event of Anthropic's stream: sent as `event: <name>` ([`MessagesStreamEvent::name`]) and
/// `data: <this as JSON>`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum MessagesStreamEvent {
    /// The message, with no content yet.
    MessageStart {
        /// The message so far.
        message: MessagesResponse,
    },
    /// A content block opens.
    ContentBlockStart {
        /// Position of the block in `content`.
        index: usize,
        /// The block, empty (`text: ""`, `input: {}`).
        content_block: ContentBlock,
    },
    /// A piece of a block.
    ContentBlockDelta {
        /// Position of the block.
        index: usize,
        /// The piece.
        delta: BlockDelta,
    },
    /// A content block is complete.
    ContentBlockStop {
        /// Position of the block.
        index: usize,
    },
    /// The stop reason and the final usage.
    MessageDelta {
        /// Stop reason and sequence.
        delta: MessageDeltaBody,
        /// Usage (cumulative).
        usage: MessagesUsage,
    },
    /// The stream is complete.
    MessageStop,
    /// Keep-alive.
    Ping,
    /// A failure after the stream began.
    Error {
        /// What failed.
        error: AnthropicErrorBody,
    },
}

impl MessagesStreamEvent {
    /// The SSE `event:` name (the same as the JSON `type`).
    pub fn name(&self) -> &'static str {
        match self {
            MessagesStreamEvent::MessageStart { .. } => "message_start",
            MessagesStreamEvent::ContentBlockStart { .. } => "content_block_start",
            MessagesStreamEvent::ContentBlockDelta { .. } => "content_block_delta",
            MessagesStreamEvent::ContentBlockStop { .. } => "content_block_stop",
            MessagesStreamEvent::MessageDelta { .. } => "message_delta",
            MessagesStreamEvent::MessageStop => "message_stop",
            MessagesStreamEvent::Ping => "ping",
            MessagesStreamEvent::Error { .. } => "error",
        }
    }
}

/// A `content_block_delta`'s delta.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum BlockDelta {
    /// Text added to a `text` block.
    TextDelta {
        /// The text.
        text: String,
    },
    /// A piece of a `tool_use` block's input JSON.
    InputJsonDelta {
        /// The piece.
        partial_json: String,
    },
}

/// A `message_delta`'s delta.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MessageDeltaBody {
    /// Why generation stopped.
    pub stop_reason: Option<String>,
    /// The stop sequence that ended it, if one did.
    pub stop_sequence: Option<String>,
}

/// The block a stream is writing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OpenBlock {
    Text(usize),
    /// A tool call: its chat index and its block index.
    Tool(u32, usize),
}

/// Turns a chat completion's stream chunks into Anthropic's events: `message_start` and a `ping` before the
/// first content, a `content_block_start` / `…_delta` / `…_stop` run per text or tool-call block, and on
/// [`MessagesStreamTranslator::finish`] a `message_delta` with the stop reason and usage and `message_stop`.
/// Only choice 0 is read. Pure: the server writes what it returns.
///
/// Chat streams report usage only at their end, so `message_start` says 0 input tokens and `message_delta`
/// carries the real input and output counts (as Anthropic's own `message_delta` usage does).
#[derive(Debug, Default)]
pub struct MessagesStreamTranslator {
    started: bool,
    finished: bool,
    open: Option<OpenBlock>,
    blocks: usize,
    /// Block index of each tool call seen (by chat index), for fragments that come after another block opened.
    tools: Vec<(u32, usize)>,
    finish_reason: Option<String>,
    matched_stop: Option<String>,
    usage: Option<Usage>,
}

impl MessagesStreamTranslator {
    /// A translator before any chunk.
    pub fn new() -> MessagesStreamTranslator {
        MessagesStreamTranslator::default()
    }

    fn start(&mut self, id: &str, model: &str, out: &mut Vec<MessagesStreamEvent>) {
        if self.started {
            return;
        }
        self.started = true;
        let message = MessagesResponse {
            id: message_id(id),
            kind: "message".to_owned(),
            role: "assistant".to_owned(),
            model: model.to_owned(),
            content: Vec::new(),
            stop_reason: None,
            stop_sequence: None,
            usage: MessagesUsage::default(),
            extra: Extra::new(),
        };
        out.push(MessagesStreamEvent::MessageStart { message });
        out.push(MessagesStreamEvent::Ping);
    }

    fn open(&mut self, block: ContentBlock, out: &mut Vec<MessagesStreamEvent>) -> usize {
        self.close(out);
        let index = self.blocks;
        self.blocks += 1;
        out.push(MessagesStreamEvent::ContentBlockStart { index, content_block: block });
        index
    }

    fn close(&mut self, out: &mut Vec<MessagesStreamEvent>) {
        if let Some(OpenBlock::Text(index) | OpenBlock::Tool(_, index)) = self.open.take() {
            out.push(MessagesStreamEvent::ContentBlockStop { index });
        }
    }

    fn text(&mut self, text: &str, out: &mut Vec<MessagesStreamEvent>) {
        if text.is_empty() {
            return;
        }
        let index = match self.open {
            Some(OpenBlock::Text(index)) => index,
            _ => {
                let index = self.open(ContentBlock::text(""), out);
                self.open = Some(OpenBlock::Text(index));
                index
            }
        };
        out.push(MessagesStreamEvent::ContentBlockDelta {
            index,
            delta: BlockDelta::TextDelta { text: text.to_owned() },
        });
    }

    /// The events for one chunk (none after [`MessagesStreamTranslator::finish`]).
    pub fn push(&mut self, chunk: &ChatCompletionChunk) -> Vec<MessagesStreamEvent> {
        let mut out = Vec::new();
        if self.finished {
            return out;
        }
        self.start(&chunk.id, &chunk.model, &mut out);
        if let Some(usage) = &chunk.usage {
            self.usage = Some(usage.clone());
        }
        for choice in chunk.choices.iter().filter(|c| c.index == 0) {
            let delta = &choice.delta;
            if let Some(text) = &delta.content {
                self.text(text, &mut out);
            }
            if let Some(refusal) = &delta.refusal {
                self.text(refusal, &mut out);
            }
            for call in delta.tool_calls.iter().flatten() {
                let known = self.tools.iter().find(|(i, _)| *i == call.index).map(|(_, b)| *b);
                let index = match known {
                    Some(index) => index,
                    None => {
                        let name = call.function.as_ref().and_then(|f| f.name.clone()).unwrap_or_default();
                        let id = call.id.clone().unwrap_or_else(|| format!("toolu_{}", call.index));
                        let index = self.open(ContentBlock::tool_use(id, name, json!({})), &mut out);
                        self.open = Some(OpenBlock::Tool(call.index, index));
                        self.tools.push((call.index, index));
                        index
                    }
                };
                if let Some(args) =
                    call.function.as_ref().and_then(|f| f.arguments.as_deref()).filter(|a| !a.is_empty())
                {
                    out.push(MessagesStreamEvent::ContentBlockDelta {
                        index,
                        delta: BlockDelta::InputJsonDelta { partial_json: args.to_owned() },
                    });
                }
            }
            if let Some(reason) = &choice.finish_reason {
                self.finish_reason = Some(reason.clone());
                self.matched_stop = choice.extra.get("stop_reason").and_then(Value::as_str).map(str::to_owned);
            }
        }
        out
    }

    /// The closing events, once the chunk stream has ended: the open block's stop, `message_delta` and
    /// `message_stop` (and `message_start` first if no chunk came). Empty when called again.
    pub fn finish(&mut self) -> Vec<MessagesStreamEvent> {
        let mut out = Vec::new();
        if self.finished {
            return out;
        }
        self.start("", "", &mut out);
        self.finished = true;
        self.close(&mut out);
        let (stop_reason, stop_sequence) =
            stop_reason(self.finish_reason.as_deref(), self.matched_stop.as_deref(), !self.tools.is_empty());
        let usage = self.usage.as_ref().map(MessagesUsage::from_chat).unwrap_or_default();
        out.push(MessagesStreamEvent::MessageDelta {
            delta: MessageDeltaBody { stop_reason: Some(stop_reason), stop_sequence },
            usage,
        });
        out.push(MessagesStreamEvent::MessageStop);
        out
    }
}

/// Anthropic's error envelope: `{"type": "error", "error": {"type", "message"}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnthropicErrorEnvelope {
    /// Always `error`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The error.
    pub error: AnthropicErrorBody,
}

/// The body of [`AnthropicErrorEnvelope`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnthropicErrorBody {
    /// `invalid_request_error`, `authentication_error`, `permission_error`, `not_found_error`,
    /// `request_too_large`, `rate_limit_error`, `api_error`, `timeout_error`, `overloaded_error`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Human-readable message.
    pub message: String,
}

/// Anthropic's error type for an HTTP status.
pub fn anthropic_error_type(status: u16) -> &'static str {
    match status {
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        408 | 504 => "timeout_error",
        503 | 529 => "overloaded_error",
        400..500 => "invalid_request_error",
        _ => "api_error",
    }
}

impl AnthropicErrorEnvelope {
    /// The envelope for a gateway error (its message as in OpenAI's envelope, its type from its status).
    pub fn from_error(error: &Error) -> AnthropicErrorEnvelope {
        let body = error.to_envelope().error;
        AnthropicErrorEnvelope {
            kind: "error".to_owned(),
            error: AnthropicErrorBody { kind: anthropic_error_type(error.status()).to_owned(), message: body.message },
        }
    }
}
