//! [`AnthropicProvider`]: Anthropic's Messages API behind OpenAI's chat format, translated both ways.
//!
//! | OpenAI | Anthropic |
//! |---|---|
//! | `system` / `developer` messages | `system` |
//! | text and `image_url` parts (data URLs or `http(s)`) | `text` and `image` blocks (`base64` or `url` source) |
//! | `tools[].function` | `tools[]` with `input_schema` |
//! | `tool_choice`: `auto`, `none`, `required`, a named function; `parallel_tool_calls: false` | `auto`, `none`, `any`, `tool`; `disable_parallel_tool_use` |
//! | assistant `tool_calls` | `tool_use` blocks |
//! | `tool` messages (consecutive ones merged into one user turn) | `tool_result` blocks |
//! | `stop`, `max_tokens` / `max_completion_tokens` (required by Anthropic: a configured default otherwise), `temperature`, `top_p`, `user` | `stop_sequences`, `max_tokens`, `temperature`, `top_p`, `metadata.user_id` |
//! | `finish_reason` `stop` / `length` / `tool_calls` / `content_filter` | `stop_reason` `end_turn` and `stop_sequence` / `max_tokens` / `tool_use` / `refusal` |
//! | `usage.prompt_tokens` (with `prompt_tokens_details.cached_tokens`) | `input_tokens` + `cache_read_input_tokens` + `cache_creation_input_tokens` |
//!
//! Streams map `message_start`, `content_block_start`/`delta` (`text_delta`, `input_json_delta`),
//! `message_delta` and `message_stop` onto chat-completion chunks, and always end with a usage chunk
//! (the gateway forwards it to clients that asked); `ping` is skipped; an `error` event, or a stream
//! that ends before `message_stop`, ends the stream with an error item. The Anthropic-specific fields
//! `top_k`, `thinking`, `metadata` and `service_tier` are forwarded from the request's extra fields, and
//! prompt-cache breakpoints (`cache_control` on a message, content part or tool) are kept on the
//! translated block.
//! Fields Anthropic has no equivalent for (`response_format`, `logprobs`, `logit_bias`, `seed`, the
//! penalties) are not sent; `n` > 1 and content parts other than text and images are refused with
//! [`Error::InvalidRequest`] before any request is made.
//!
//! ```no_run
//! # async fn run() -> chitty_core::Result<()> {
//! use chitty_core::Provider;
//! use chitty_core::wire::{ChatCompletionRequest, ChatMessage};
//! use chitty_providers::anthropic::AnthropicProvider;
//!
//! // ANTHROPIC_API_KEY and, when set, ANTHROPIC_BASE_URL.
//! let provider = AnthropicProvider::from_env("anthropic").with_default_max_tokens(1024).build()?;
//! let answer = provider
//!     .chat(ChatCompletionRequest {
//!         model: "claude-sonnet-4-5".into(),
//!         messages: vec![ChatMessage::system("Be brief."), ChatMessage::user("Say hi")],
//!         ..Default::default()
//!     })
//!     .await?;
//! println!("{}", answer.choices[0].message.text_content());
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use chitty_core::wire::{
    ChatChoice, ChatCompletionChunk, ChatCompletionRequest, ChatCompletionResponse, ChatMessage, ChunkChoice,
    ChunkDelta, ContentPart, Extra, FunctionCall, FunctionCallDelta, MessageContent, PromptTokensDetails, Role,
    StopSequences, ToolCall, ToolCallDelta, Usage,
};
use chitty_core::{Capabilities, Capability, ChunkStream, Error, NativeEventStream, Provider, Result, UpstreamFailure};
use futures::StreamExt;
use http::header::{HeaderName, HeaderValue};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::framing::sse::{self, SseEvent};
use crate::framing::{self, interrupted};
use crate::http_provider::{self, HttpUpstream, ProviderBuilder};

/// Anthropic's API, the default base URL (without `/v1`, as Anthropic's SDKs take it).
pub const DEFAULT_BASE_URL: &str = "https://api.anthropic.com";
/// The `anthropic-version` header sent unless the builder sets another.
pub const DEFAULT_API_VERSION: &str = "2023-06-01";
/// `max_tokens` when the request sets no cap (Anthropic requires one).
pub const DEFAULT_MAX_TOKENS: u32 = 4096;
/// The default per-request timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

/// Request fields outside OpenAI's format that are forwarded to Anthropic from `extra`.
const FORWARDED_EXTRA: [&str; 4] = ["top_k", "thinking", "metadata", "service_tier"];

/// Anthropic's Messages API.
#[derive(Debug, Clone)]
pub struct AnthropicProvider {
    upstream: HttpUpstream,
    messages_url: http::Uri,
    count_tokens_url: http::Uri,
    options: AnthropicOptions,
}

/// Builds an [`AnthropicProvider`]: the shared settings of [`ProviderBuilder`] and the [`AnthropicOptions`].
/// The `anthropic-version` header is [`DEFAULT_API_VERSION`] unless set with `with_header`.
pub type AnthropicProviderBuilder = ProviderBuilder<AnthropicOptions>;

/// What only an [`AnthropicProvider`] is configured with; set through [`AnthropicProviderBuilder`].
#[derive(Debug, Clone)]
pub struct AnthropicOptions {
    max_event_bytes: usize,
    default_max_tokens: u32,
}

impl AnthropicProvider {
    /// A builder for a provider called `name`, pointing at Anthropic's API.
    pub fn builder(name: impl Into<String>) -> AnthropicProviderBuilder {
        let options =
            AnthropicOptions { max_event_bytes: sse::DEFAULT_MAX_EVENT_BYTES, default_max_tokens: DEFAULT_MAX_TOKENS };
        ProviderBuilder::new(name, DEFAULT_BASE_URL, DEFAULT_TIMEOUT, options)
    }

    /// A builder configured from `ANTHROPIC_API_KEY` and `ANTHROPIC_BASE_URL`, as Anthropic's SDKs read them.
    pub fn from_env(name: impl Into<String>) -> AnthropicProviderBuilder {
        let mut builder = AnthropicProvider::builder(name);
        if let Some(key) = std::env::var("ANTHROPIC_API_KEY").ok().filter(|k| !k.is_empty()) {
            builder = builder.with_api_key(key);
        }
        if let Some(url) = std::env::var("ANTHROPIC_BASE_URL").ok().filter(|u| !u.is_empty()) {
            builder = builder.with_base_url(url);
        }
        builder
    }
}

impl AnthropicProviderBuilder {
    /// `max_tokens` for requests that set no output cap.
    pub fn with_default_max_tokens(mut self, max_tokens: u32) -> Self {
        self.options.default_max_tokens = max_tokens;
        self
    }

    /// The provider, sending the key as `x-api-key`; fails on an invalid header, key or base URL.
    pub fn build(self) -> Result<AnthropicProvider> {
        let version = (HeaderName::from_static("anthropic-version"), HeaderValue::from_static(DEFAULT_API_VERSION));
        let upstream = self.upstream((HeaderName::from_static("x-api-key"), ""), &[version])?;
        Ok(AnthropicProvider {
            messages_url: upstream.endpoint("/v1/messages")?,
            count_tokens_url: upstream.endpoint("/v1/messages/count_tokens")?,
            upstream,
            options: self.options,
        })
    }
}

#[async_trait]
impl Provider for AnthropicProvider {
    fn name(&self) -> &str {
        &self.upstream.name
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::of(&[Capability::Chat, Capability::ChatStream, Capability::Tools, Capability::Messages])
    }

    async fn messages(&self, mut request: Value) -> Result<Value> {
        if let Some(body) = request.as_object_mut() {
            body.remove("stream");
        }
        self.upstream.call_json(&self.messages_url, &request).await
    }

    async fn messages_stream(&self, mut request: Value) -> Result<NativeEventStream> {
        if let Some(body) = request.as_object_mut() {
            body.insert("stream".to_owned(), Value::Bool(true));
        }
        let response = self.upstream.open(&self.messages_url, &request).await?;
        let body = http_provider::body_stream(response);
        let events =
            framing::sse_events(&self.upstream.name, self.upstream.timeout, self.options.max_event_bytes, body);
        let ends = |kind: &str| matches!(kind, "message_stop" | "error");
        Ok(http_provider::native_event_stream(self.upstream.name.clone(), events, ends))
    }

    async fn count_message_tokens(&self, request: Value) -> Result<u64> {
        #[derive(serde::Deserialize)]
        struct Count {
            input_tokens: u64,
        }
        let count: Count = self.upstream.call_json(&self.count_tokens_url, &request).await?;
        Ok(count.input_tokens)
    }

    async fn chat(&self, request: ChatCompletionRequest) -> Result<ChatCompletionResponse> {
        let body = to_messages_request(&request, self.options.default_max_tokens, false)?;
        let answer: MessagesAnswer = self.upstream.call_json(&self.messages_url, &body).await?;
        Ok(from_messages_response(answer))
    }

    async fn chat_stream(&self, request: ChatCompletionRequest) -> Result<ChunkStream> {
        let body = to_messages_request(&request, self.options.default_max_tokens, true)?;
        let response = self.upstream.open(&self.messages_url, &body).await?;
        let body = http_provider::body_stream(response);
        let events =
            framing::sse_events(&self.upstream.name, self.upstream.timeout, self.options.max_event_bytes, body);
        Ok(chunk_stream(self.upstream.name.clone(), events))
    }
}

fn invalid(message: impl Into<String>) -> Error {
    Error::invalid_request(message, Some("messages"))
}

/// Translates an OpenAI chat request into a Messages API request.
pub(crate) fn to_messages_request(req: &ChatCompletionRequest, default_max_tokens: u32, stream: bool) -> Result<Value> {
    if req.n.is_some_and(|n| n > 1) {
        return Err(Error::invalid_request("Anthropic does not generate several choices (`n` > 1)", Some("n")));
    }
    let mut system = Vec::new();
    let mut messages: Vec<(&'static str, Vec<Value>)> = Vec::new();
    for message in &req.messages {
        let (role, mut blocks) = match &message.role {
            Role::System | Role::Developer => {
                let mut block = json!({"type": "text", "text": message_text(message)?});
                copy_cache_control(&message.extra, &mut block);
                system.push(block);
                continue;
            }
            Role::User => ("user", content_blocks(message.content.as_ref())?),
            Role::Assistant => ("assistant", assistant_blocks(message)?),
            Role::Tool => {
                let id =
                    message.tool_call_id.as_ref().ok_or_else(|| invalid("a `tool` message needs `tool_call_id`"))?;
                let block = json!({"type": "tool_result", "tool_use_id": id, "content": message_text(message)?});
                ("user", vec![block])
            }
            other => return Err(invalid(format!("Anthropic has no equivalent for role {other:?}"))),
        };
        if let Some(last) = blocks.last_mut() {
            copy_cache_control(&message.extra, last);
        } else {
            continue;
        }
        // Anthropic alternates roles: consecutive turns of one role (tool results above all) merge.
        match messages.last_mut() {
            Some((last_role, last_blocks)) if *last_role == role => last_blocks.extend(blocks),
            _ => messages.push((role, blocks)),
        }
    }
    let mut body = json!({
        "model": req.model,
        "max_tokens": req.output_cap().unwrap_or(default_max_tokens),
        "messages": messages.into_iter().map(|(role, content)| json!({"role": role, "content": content})).collect::<Vec<_>>(),
    });
    let obj = body.as_object_mut().ok_or_else(|| invalid("request is not an object"))?;
    if system.iter().any(|b| b.get("cache_control").is_some()) {
        // Cache breakpoints need the block form of `system`.
        obj.insert("system".into(), Value::Array(system));
    } else if !system.is_empty() {
        let texts: Vec<&str> = system.iter().filter_map(|b| b.get("text").and_then(Value::as_str)).collect();
        obj.insert("system".into(), Value::String(texts.join("\n\n")));
    }
    if let Some(t) = req.temperature {
        obj.insert("temperature".into(), json!(t));
    }
    if let Some(p) = req.top_p {
        obj.insert("top_p".into(), json!(p));
    }
    if let Some(stop) = &req.stop {
        let list = match stop {
            StopSequences::One(s) => vec![s.clone()],
            StopSequences::Many(v) => v.clone(),
        };
        obj.insert("stop_sequences".into(), json!(list));
    }
    if let Some(tools) = req.tools.as_ref().filter(|t| !t.is_empty()) {
        let tools = tools
            .iter()
            .map(|t| {
                let f = t.function.as_ref().filter(|_| t.kind == "function").ok_or_else(|| {
                    Error::invalid_request(
                        format!("Anthropic takes only function tools, not `{}`", t.kind),
                        Some("tools"),
                    )
                })?;
                let mut tool = json!({
                    "name": f.name,
                    "input_schema": f.parameters.clone().unwrap_or_else(|| json!({"type": "object", "properties": {}})),
                });
                if let (Some(d), Some(o)) = (&f.description, tool.as_object_mut()) {
                    o.insert("description".into(), json!(d));
                }
                copy_cache_control(&t.extra, &mut tool);
                copy_cache_control(&f.extra, &mut tool);
                Ok(tool)
            })
            .collect::<Result<Vec<_>>>()?;
        obj.insert("tools".into(), Value::Array(tools));
    }
    let mut choice = match &req.tool_choice {
        None => None,
        Some(Value::String(s)) => match s.as_str() {
            "auto" => Some(json!({"type": "auto"})),
            "none" => Some(json!({"type": "none"})),
            "required" => Some(json!({"type": "any"})),
            other => return Err(Error::invalid_request(format!("unknown tool_choice `{other}`"), Some("tool_choice"))),
        },
        Some(v) => match v.pointer("/function/name").and_then(Value::as_str) {
            Some(name) => Some(json!({"type": "tool", "name": name})),
            None => return Err(Error::invalid_request("tool_choice names no function", Some("tool_choice"))),
        },
    };
    if req.parallel_tool_calls == Some(false) && obj.contains_key("tools") {
        let c = choice.get_or_insert_with(|| json!({"type": "auto"}));
        if let Some(o) = c.as_object_mut().filter(|o| o.get("type") != Some(&json!("none"))) {
            o.insert("disable_parallel_tool_use".into(), Value::Bool(true));
        }
    }
    if let Some(c) = choice {
        obj.insert("tool_choice".into(), c);
    }
    if let Some(user) = &req.user {
        obj.insert("metadata".into(), json!({"user_id": user}));
    }
    for key in FORWARDED_EXTRA {
        if let Some(v) = req.extra.get(key) {
            obj.insert(key.into(), v.clone());
        }
    }
    if stream {
        obj.insert("stream".into(), Value::Bool(true));
    }
    Ok(body)
}

/// The text of a message whose parts must all be text (system prompts, tool results).
fn message_text(message: &ChatMessage) -> Result<String> {
    if let Some(MessageContent::Parts(parts)) = &message.content
        && let Some(p) = parts.iter().find(|p| p.kind != "text")
    {
        return Err(invalid(format!("a {:?} message can only hold text, not `{}`", message.role, p.kind)));
    }
    Ok(message.text_content())
}

fn content_blocks(content: Option<&MessageContent>) -> Result<Vec<Value>> {
    match content {
        None => Ok(Vec::new()),
        Some(MessageContent::Text(t)) if t.is_empty() => Ok(Vec::new()),
        Some(MessageContent::Text(t)) => Ok(vec![json!({"type": "text", "text": t})]),
        Some(MessageContent::Parts(parts)) => parts.iter().map(part_block).collect(),
    }
}

/// Carries Anthropic's prompt-cache breakpoint (`cache_control`, sent by clients as an extra field on a
/// message, content part or tool) over to the translated block.
fn copy_cache_control(extra: &Extra, block: &mut Value) {
    if let (Some(cache), Some(o)) = (extra.get("cache_control"), block.as_object_mut()) {
        o.insert("cache_control".into(), cache.clone());
    }
}

fn part_block(part: &ContentPart) -> Result<Value> {
    let mut block = part_block_without_cache(part)?;
    copy_cache_control(&part.extra, &mut block);
    Ok(block)
}

fn part_block_without_cache(part: &ContentPart) -> Result<Value> {
    match part.kind.as_str() {
        "text" => Ok(json!({"type": "text", "text": part.text.clone().unwrap_or_default()})),
        "image_url" => {
            let url = part
                .extra
                .get("image_url")
                .and_then(|v| v.get("url").or(Some(v)))
                .and_then(Value::as_str)
                .ok_or_else(|| invalid("an `image_url` part needs `image_url.url`"))?;
            if let Some(rest) = url.strip_prefix("data:") {
                let (media_type, data) = rest
                    .split_once(";base64,")
                    .ok_or_else(|| invalid("image data URLs must be base64 (`data:<type>;base64,…`)"))?;
                Ok(json!({"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}))
            } else if url.starts_with("https://") || url.starts_with("http://") {
                Ok(json!({"type": "image", "source": {"type": "url", "url": url}}))
            } else {
                Err(invalid("image URLs must be `data:` or `http(s):`"))
            }
        }
        other => Err(invalid(format!("Anthropic does not take `{other}` content parts"))),
    }
}

fn assistant_blocks(message: &ChatMessage) -> Result<Vec<Value>> {
    let mut blocks = content_blocks(message.content.as_ref())?;
    for call in message.tool_calls.iter().flatten() {
        let input: Value = if call.function.arguments.trim().is_empty() {
            json!({})
        } else {
            serde_json::from_str(&call.function.arguments)
                .map_err(|e| invalid(format!("tool call `{}` has arguments that are not JSON: {e}", call.id)))?
        };
        blocks.push(json!({"type": "tool_use", "id": call.id, "name": call.function.name, "input": input}));
    }
    Ok(blocks)
}

/// Anthropic's `stop_reason` as an OpenAI `finish_reason`.
pub(crate) fn finish_reason(stop_reason: &str) -> String {
    chitty_core::wire::messages::chat_finish_reason(stop_reason).to_owned()
}

/// Anthropic's usage object as OpenAI usage: cached and cache-writing input count as prompt tokens.
#[derive(Debug, Default, Clone, Copy)]
struct TokenCounts {
    input: u64,
    output: u64,
    cache_read: u64,
    cache_creation: u64,
}

impl TokenCounts {
    /// Takes the counts `usage` reports; a stream's later events report only what changed.
    fn update(&mut self, usage: &UsageAnswer) {
        let counts = [
            (&mut self.input, usage.input_tokens),
            (&mut self.output, usage.output_tokens),
            (&mut self.cache_read, usage.cache_read_input_tokens),
            (&mut self.cache_creation, usage.cache_creation_input_tokens),
        ];
        for (count, reported) in counts {
            if let Some(reported) = reported {
                *count = reported;
            }
        }
    }

    fn to_usage(self) -> Usage {
        let mut usage = Usage::new(self.input + self.cache_read + self.cache_creation, self.output);
        if self.cache_read > 0 {
            usage.prompt_tokens_details =
                Some(PromptTokensDetails { cached_tokens: Some(self.cache_read), extra: Extra::new() });
        }
        usage
    }
}

/// What the Messages API answers (fields chitty does not read are ignored).
#[derive(Debug, Deserialize)]
pub(crate) struct MessagesAnswer {
    id: String,
    model: String,
    content: Vec<ContentBlock>,
    stop_reason: Option<String>,
    usage: AnswerUsage,
}

/// A block of an answer's `content`, or of a stream's `content_block_start`.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ContentBlock {
    Text {
        text: String,
    },
    ToolUse {
        id: String,
        name: String,
        #[serde(default)]
        input: Option<Value>,
    },
    /// Thinking, server-tool and later block types: no OpenAI equivalent.
    #[serde(other)]
    Other,
}

/// A whole answer's usage: both counts required, the cache counts when the upstream caches.
#[derive(Debug, Deserialize)]
struct AnswerUsage {
    input_tokens: u64,
    output_tokens: u64,
    #[serde(default)]
    cache_read_input_tokens: Option<u64>,
    #[serde(default)]
    cache_creation_input_tokens: Option<u64>,
}

/// Usage as stream events report it: each count when it changed.
#[derive(Debug, Default, Deserialize)]
struct UsageAnswer {
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
    #[serde(default)]
    cache_read_input_tokens: Option<u64>,
    #[serde(default)]
    cache_creation_input_tokens: Option<u64>,
}

impl From<&AnswerUsage> for UsageAnswer {
    fn from(usage: &AnswerUsage) -> UsageAnswer {
        UsageAnswer {
            input_tokens: Some(usage.input_tokens),
            output_tokens: Some(usage.output_tokens),
            cache_read_input_tokens: usage.cache_read_input_tokens,
            cache_creation_input_tokens: usage.cache_creation_input_tokens,
        }
    }
}

/// One event of a Messages API stream; `ping`, `content_block_stop` and later event types are skipped.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum StreamEvent {
    MessageStart {
        message: StartedMessage,
    },
    ContentBlockStart {
        index: u64,
        content_block: ContentBlock,
    },
    ContentBlockDelta {
        index: u64,
        delta: BlockDelta,
    },
    MessageDelta {
        #[serde(default)]
        delta: MessageDelta,
        #[serde(default)]
        usage: Option<UsageAnswer>,
    },
    MessageStop,
    Error {
        #[serde(default)]
        error: Option<StreamError>,
    },
    #[serde(other)]
    Other,
}

/// `message_start`'s message: who answers, and the usage so far.
#[derive(Debug, Deserialize)]
struct StartedMessage {
    id: String,
    model: String,
    #[serde(default)]
    usage: Option<UsageAnswer>,
}

/// A `content_block_delta`'s delta; thinking and signature deltas have no OpenAI equivalent.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum BlockDelta {
    TextDelta {
        text: String,
    },
    InputJsonDelta {
        partial_json: String,
    },
    #[serde(other)]
    Other,
}

/// A `message_delta`'s delta.
#[derive(Debug, Default, Deserialize)]
struct MessageDelta {
    #[serde(default)]
    stop_reason: Option<String>,
}

/// An `error` event's error.
#[derive(Debug, Deserialize)]
struct StreamError {
    #[serde(rename = "type", default)]
    kind: Option<String>,
}

/// Translates a Messages API answer into a chat completion.
pub(crate) fn from_messages_response(answer: MessagesAnswer) -> ChatCompletionResponse {
    let mut text = String::new();
    let mut calls = Vec::new();
    for block in answer.content {
        match block {
            ContentBlock::Text { text: t } => text.push_str(&t),
            ContentBlock::ToolUse { id, name, input } => calls.push(ToolCall {
                id,
                kind: "function".to_owned(),
                function: FunctionCall {
                    name,
                    arguments: input.unwrap_or_else(|| json!({})).to_string(),
                    extra: Extra::new(),
                },
                extra: Extra::new(),
            }),
            ContentBlock::Other => {}
        }
    }
    let mut counts = TokenCounts::default();
    counts.update(&UsageAnswer::from(&answer.usage));
    let message = ChatMessage {
        content: if text.is_empty() && !calls.is_empty() { None } else { Some(MessageContent::Text(text)) },
        tool_calls: (!calls.is_empty()).then_some(calls),
        ..ChatMessage::assistant("")
    };
    ChatCompletionResponse {
        id: answer.id,
        object: "chat.completion".to_owned(),
        created: http_provider::unix_now(),
        model: answer.model,
        choices: vec![ChatChoice {
            index: 0,
            message,
            finish_reason: answer.stop_reason.as_deref().map(finish_reason),
            logprobs: None,
            extra: Extra::new(),
        }],
        usage: Some(counts.to_usage()),
        system_fingerprint: None,
        extra: Extra::new(),
    }
}

/// Maps Anthropic's stream events onto chat-completion chunks.
#[derive(Debug)]
struct StreamTranslator {
    provider: String,
    id: String,
    model: String,
    created: u64,
    counts: TokenCounts,
    tool_of_block: HashMap<u64, u32>,
    tools: u32,
}

/// What one event turns into.
enum Step {
    Chunk(ChatCompletionChunk),
    Skip,
    End(ChatCompletionChunk),
}

impl StreamTranslator {
    fn chunk(&self, delta: ChunkDelta, finish_reason: Option<String>) -> ChatCompletionChunk {
        ChatCompletionChunk {
            id: self.id.clone(),
            object: "chat.completion.chunk".to_owned(),
            created: self.created,
            model: self.model.clone(),
            choices: vec![ChunkChoice { index: 0, delta, finish_reason, logprobs: None, extra: Extra::new() }],
            usage: None,
            system_fingerprint: None,
            extra: Extra::new(),
        }
    }

    fn tool_delta(&self, index: u32, id: Option<String>, name: Option<String>, arguments: String) -> ChunkDelta {
        ChunkDelta {
            tool_calls: Some(vec![ToolCallDelta {
                index,
                kind: id.as_ref().map(|_| "function".to_owned()),
                id,
                function: Some(FunctionCallDelta { name, arguments: Some(arguments), extra: Extra::new() }),
                extra: Extra::new(),
            }]),
            ..Default::default()
        }
    }

    fn step(&mut self, event: &SseEvent) -> Result<Step> {
        let data: StreamEvent = serde_json::from_str(&event.data)
            .map_err(|e| http_provider::malformed(&self.provider, "stream event", e))?;
        Ok(match data {
            StreamEvent::MessageStart { message } => {
                self.id = message.id;
                self.model = message.model;
                if let Some(u) = &message.usage {
                    self.counts.update(u);
                }
                let delta =
                    ChunkDelta { role: Some(Role::Assistant), content: Some(String::new()), ..Default::default() };
                Step::Chunk(self.chunk(delta, None))
            }
            StreamEvent::ContentBlockStart { index: block, content_block } => match content_block {
                ContentBlock::Text { text } if !text.is_empty() => {
                    Step::Chunk(self.chunk(ChunkDelta { content: Some(text), ..Default::default() }, None))
                }
                ContentBlock::ToolUse { id, name, .. } => {
                    let index = self.tools;
                    self.tools += 1;
                    self.tool_of_block.insert(block, index);
                    Step::Chunk(self.chunk(self.tool_delta(index, Some(id), Some(name), String::new()), None))
                }
                _ => Step::Skip,
            },
            StreamEvent::ContentBlockDelta { index: block, delta } => match delta {
                BlockDelta::TextDelta { text } => {
                    Step::Chunk(self.chunk(ChunkDelta { content: Some(text), ..Default::default() }, None))
                }
                BlockDelta::InputJsonDelta { partial_json } => match self.tool_of_block.get(&block) {
                    Some(&index) if !partial_json.is_empty() => {
                        Step::Chunk(self.chunk(self.tool_delta(index, None, None, partial_json), None))
                    }
                    _ => Step::Skip,
                },
                BlockDelta::Other => Step::Skip,
            },
            StreamEvent::MessageDelta { delta, usage } => {
                if let Some(u) = &usage {
                    self.counts.update(u);
                }
                match delta.stop_reason {
                    Some(reason) => Step::Chunk(self.chunk(ChunkDelta::default(), Some(finish_reason(&reason)))),
                    None => Step::Skip,
                }
            }
            StreamEvent::MessageStop => {
                let mut last = self.chunk(ChunkDelta::default(), None);
                last.choices.clear();
                last.usage = Some(self.counts.to_usage());
                Step::End(last)
            }
            StreamEvent::Error { error } => {
                let status = match error.and_then(|e| e.kind).as_deref() {
                    Some("overloaded_error") => Some(529),
                    Some("rate_limit_error") => Some(429),
                    Some("api_error") => Some(500),
                    _ => None,
                };
                return Err(Error::Upstream {
                    provider: self.provider.clone(),
                    failure: UpstreamFailure::Status,
                    status,
                    message: chitty_core::upstream::error_message(event.data.as_bytes()).unwrap_or_default(),
                    retry_after: None,
                });
            }
            StreamEvent::Other => Step::Skip,
        })
    }
}

fn chunk_stream<S>(provider: String, events: S) -> ChunkStream
where
    S: futures::Stream<Item = Result<SseEvent>> + Send + 'static,
{
    struct State<S> {
        events: std::pin::Pin<Box<S>>,
        translator: StreamTranslator,
        finished: bool,
    }
    let translator = StreamTranslator {
        provider,
        id: String::new(),
        model: String::new(),
        created: http_provider::unix_now(),
        counts: TokenCounts::default(),
        tool_of_block: HashMap::new(),
        tools: 0,
    };
    let state = State { events: Box::pin(events), translator, finished: false };
    Box::pin(futures::stream::unfold(state, |mut st| async move {
        if st.finished {
            return None;
        }
        loop {
            let provider = &st.translator.provider;
            let item = match st.events.next().await {
                None => Err(interrupted(provider, "the stream ended before `message_stop`")),
                Some(Err(e)) => Err(e),
                Some(Ok(event)) => match st.translator.step(&event) {
                    Ok(Step::Skip) => continue,
                    Ok(Step::Chunk(c)) => Ok(c),
                    Ok(Step::End(c)) => {
                        st.finished = true;
                        return Some((Ok(c), st));
                    }
                    Err(e) => Err(e),
                },
            };
            st.finished = item.is_err();
            return Some((item, st));
        }
    }))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn request(value: Value) -> ChatCompletionRequest {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn translates_system_parts_tools_and_tool_results() {
        let req = request(json!({
            "model": "claude",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "developer", "content": [{"type": "text", "text": "Use tools."}]},
                {"role": "user", "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                    {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}}
                ]},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "look", "arguments": "{\"q\":1}"}},
                    {"id": "call_2", "type": "function", "function": {"name": "look", "arguments": ""}}
                ]},
                {"role": "tool", "tool_call_id": "call_1", "content": "a cat"},
                {"role": "tool", "tool_call_id": "call_2", "content": "a hat"},
                {"role": "user", "content": "Thanks"}
            ],
            "tools": [{"type": "function", "function": {"name": "look", "description": "Looks.", "parameters": {"type": "object"}}}],
            "tool_choice": "required",
            "parallel_tool_calls": false,
            "stop": "END",
            "max_completion_tokens": 99,
            "temperature": 0.5,
            "user": "u-1",
            "top_k": 5,
            "logit_bias": {"1": 2}
        }));
        let body = to_messages_request(&req, 4096, true).unwrap();
        assert_eq!(body["system"], "Be brief.\n\nUse tools.");
        assert_eq!(body["max_tokens"], 99);
        assert_eq!(body["stop_sequences"], json!(["END"]));
        assert_eq!(body["tool_choice"], json!({"type": "any", "disable_parallel_tool_use": true}));
        assert_eq!(
            body["tools"][0],
            json!({"name": "look", "description": "Looks.", "input_schema": {"type": "object"}})
        );
        assert_eq!(body["metadata"]["user_id"], "u-1");
        assert_eq!(body["top_k"], 5);
        assert_eq!(body["stream"], true);
        assert!(body.get("logit_bias").is_none());
        let messages = body["messages"].as_array().unwrap();
        assert_eq!(messages.len(), 3, "{messages:#?}");
        assert_eq!(
            messages[0]["content"][1]["source"],
            json!({"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="})
        );
        assert_eq!(messages[0]["content"][2]["source"]["type"], "url");
        assert_eq!(
            messages[1]["content"][0],
            json!({"type": "tool_use", "id": "call_1", "name": "look", "input": {"q": 1}})
        );
        assert_eq!(messages[1]["content"][1]["input"], json!({}));
        // Tool results and the next user text share one user turn, results first, as Anthropic requires.
        assert_eq!(messages[2]["role"], "user");
        let blocks = messages[2]["content"].as_array().unwrap();
        assert_eq!(blocks.len(), 3);
        assert_eq!(blocks[0]["tool_use_id"], "call_1");
        assert_eq!(blocks[1], json!({"type": "tool_result", "tool_use_id": "call_2", "content": "a hat"}));
        assert_eq!(blocks[2]["text"], "Thanks");
    }

    #[test]
    fn cache_breakpoints_travel_to_anthropic() {
        let req = request(json!({
            "model": "claude",
            "messages": [
                {"role": "system", "content": "Long instructions.", "cache_control": {"type": "ephemeral"}},
                {"role": "user", "content": [
                    {"type": "text", "text": "A long document.", "cache_control": {"type": "ephemeral", "ttl": "1h"}},
                    {"type": "text", "text": "The question."}
                ]},
                {"role": "assistant", "content": "An answer.", "cache_control": {"type": "ephemeral"}}
            ],
            "tools": [{"type": "function", "function": {"name": "f"}, "cache_control": {"type": "ephemeral"}}]
        }));
        let body = to_messages_request(&req, 10, false).unwrap();
        assert_eq!(
            body["system"],
            json!([{"type": "text", "text": "Long instructions.", "cache_control": {"type": "ephemeral"}}])
        );
        assert_eq!(body["messages"][0]["content"][0]["cache_control"]["ttl"], "1h");
        assert!(body["messages"][0]["content"][1].get("cache_control").is_none());
        assert_eq!(body["messages"][1]["content"][0]["cache_control"]["type"], "ephemeral");
        assert_eq!(body["tools"][0]["cache_control"]["type"], "ephemeral");
        let plain = to_messages_request(
            &request(json!({"model": "m", "messages": [{"role": "system", "content": "s"}]})),
            1,
            false,
        );
        assert_eq!(plain.unwrap()["system"], "s", "without breakpoints the system prompt stays a string");
    }

    #[test]
    fn rejects_what_anthropic_cannot_take() {
        let base = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
        let with = |k: &str, v: Value| {
            let mut b = base.clone();
            b[k] = v;
            to_messages_request(&request(b), 10, false)
        };
        assert!(with("n", json!(2)).is_err());
        assert!(with("tool_choice", json!("sometimes")).is_err());
        let audio = json!([{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]);
        assert!(with("messages", audio).is_err());
        let bad_args = json!([{"role": "assistant", "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{"}}]}]);
        assert!(with("messages", bad_args).is_err());
        let body = to_messages_request(&request(base), 10, false).unwrap();
        assert_eq!(body["max_tokens"], 10, "the configured default when the request sets no cap");
        assert!(body.get("stream").is_none() && body.get("system").is_none());
    }

    #[test]
    fn translates_answers_stop_reasons_and_cache_usage() {
        let answer = json!({
            "id": "msg_1", "type": "message", "role": "assistant", "model": "claude",
            "content": [{"type": "thinking", "thinking": "hmm"}, {"type": "text", "text": "Let me look."},
                        {"type": "tool_use", "id": "toolu_1", "name": "look", "input": {"q": "x"}}],
            "stop_reason": "tool_use",
            "usage": {"input_tokens": 10, "output_tokens": 5, "cache_read_input_tokens": 100, "cache_creation_input_tokens": 7}
        });
        let r = from_messages_response(serde_json::from_value(answer).unwrap());
        assert_eq!(r.choices[0].finish_reason.as_deref(), Some("tool_calls"));
        assert_eq!(r.choices[0].message.text_content(), "Let me look.");
        let call = &r.choices[0].message.tool_calls.as_ref().unwrap()[0];
        assert_eq!((call.id.as_str(), call.function.arguments.as_str()), ("toolu_1", r#"{"q":"x"}"#));
        let usage = r.usage.unwrap();
        assert_eq!((usage.prompt_tokens, usage.completion_tokens, usage.total_tokens), (117, 5, 122));
        assert_eq!(usage.cached_prompt_tokens(), 100);
        for (reason, finish) in
            [("end_turn", "stop"), ("stop_sequence", "stop"), ("max_tokens", "length"), ("refusal", "content_filter")]
        {
            assert_eq!(finish_reason(reason), finish);
        }
    }

    /// The error for an answer, parsed as the provider parses it.
    fn answer_error(answer: Value) -> Error {
        http_provider::parse_json::<MessagesAnswer>("p", answer.to_string().as_bytes()).unwrap_err()
    }

    #[test]
    fn an_answer_missing_a_required_field_is_a_decode_error_naming_it() {
        let whole = json!({
            "id": "msg_1", "type": "message", "model": "claude", "stop_reason": "end_turn",
            "content": [{"type": "text", "text": "Hi"}], "usage": {"input_tokens": 3, "output_tokens": 1}
        });
        assert!(http_provider::parse_json::<MessagesAnswer>("p", whole.to_string().as_bytes()).is_ok());
        let mut without_text = whole.clone();
        without_text["content"][0] = json!({"type": "text"});
        let mut without_tool_name = whole.clone();
        without_tool_name["content"][0] = json!({"type": "tool_use", "id": "t", "input": {}});
        // Each of these used to become an empty message, an empty id or zero tokens.
        for (answer, field) in [
            (without_text, "text"),
            (without_tool_name, "name"),
            (strip(&whole, "id"), "id"),
            (strip(&whole, "model"), "model"),
            (strip(&whole, "content"), "content"),
            (strip(&whole, "usage"), "usage"),
        ] {
            let err = answer_error(answer);
            assert!(
                matches!(&err, Error::Upstream { failure: UpstreamFailure::Decode, message, .. } if message.contains(&format!("`{field}`"))),
                "{field}: {err:?}"
            );
            assert!(!err.is_retryable(), "a malformed answer is not retried");
        }
        let mut without_input_tokens = whole;
        without_input_tokens["usage"] = json!({"output_tokens": 1});
        assert!(answer_error(without_input_tokens).to_string().contains("`input_tokens`"));
    }

    fn strip(value: &Value, key: &str) -> Value {
        let mut value = value.clone();
        value.as_object_mut().unwrap().remove(key);
        value
    }

    #[test]
    fn a_stream_event_missing_a_required_field_is_a_decode_error_naming_it() {
        let mut translator = StreamTranslator {
            provider: "p".into(),
            id: String::new(),
            model: String::new(),
            created: 0,
            counts: TokenCounts::default(),
            tool_of_block: HashMap::new(),
            tools: 0,
        };
        let mut step = |event: Value| translator.step(&SseEvent { event: None, data: event.to_string(), id: None });
        for (event, field) in [
            (json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta"}}), "text"),
            (json!({"type": "message_start", "message": {"model": "c"}}), "id"),
            (
                json!({"type": "content_block_start", "index": 0, "content_block": {"type": "tool_use", "id": "t"}}),
                "name",
            ),
            (json!({"type": "content_block_delta", "delta": {"type": "text_delta", "text": "x"}}), "index"),
        ] {
            let err = step(event).err().unwrap();
            assert!(
                matches!(&err, Error::Upstream { failure: UpstreamFailure::Decode, message, .. } if message.contains(&format!("`{field}`"))),
                "{field}: {err:?}"
            );
        }
        // Unknown event, block and delta types are skipped, as Anthropic asks of clients.
        for event in [
            json!({"type": "ping"}),
            json!({"type": "content_block_stop", "index": 0}),
            json!({"type": "some_future_event", "x": 1}),
            json!({"type": "content_block_start", "index": 2, "content_block": {"type": "thinking", "thinking": ""}}),
            json!({"type": "content_block_delta", "index": 2, "delta": {"type": "signature_delta", "signature": "s"}}),
        ] {
            assert!(matches!(step(event), Ok(Step::Skip)));
        }
    }

    fn sse(events: &[Value]) -> futures::stream::Iter<std::vec::IntoIter<Result<SseEvent>>> {
        let events: Vec<_> = events
            .iter()
            .map(|e| Ok(SseEvent { event: e["type"].as_str().map(str::to_owned), data: e.to_string(), id: None }))
            .collect();
        futures::stream::iter(events)
    }

    #[tokio::test]
    async fn stream_events_become_chunks_ending_with_usage() {
        let events = sse(&[
            json!({"type": "message_start", "message": {"id": "msg_1", "model": "claude", "usage": {"input_tokens": 12, "output_tokens": 1, "cache_read_input_tokens": 3}}}),
            json!({"type": "ping"}),
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hel"}}),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "lo"}}),
            json!({"type": "content_block_stop", "index": 0}),
            json!({"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "toolu_9", "name": "look", "input": {}}}),
            json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "{\"q\": "}}),
            json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "\"x\"}"}}),
            json!({"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 9}}),
            json!({"type": "message_stop"}),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "ignored"}}),
        ]);
        let items: Vec<_> = chunk_stream("p".into(), events).collect().await;
        let chunks: Vec<ChatCompletionChunk> = items.into_iter().map(Result::unwrap).collect();
        let mut acc = chitty_core::wire::ChunkAccumulator::default();
        chunks.iter().for_each(|c| acc.push(c));
        let last = chunks.last().unwrap();
        assert!(last.choices.is_empty());
        let r = acc.finish();
        assert_eq!(r.id, "msg_1");
        assert_eq!(r.choices[0].message.text_content(), "Hello");
        let call = &r.choices[0].message.tool_calls.as_ref().unwrap()[0];
        assert_eq!(
            (call.id.as_str(), call.function.name.as_str(), call.function.arguments.as_str()),
            ("toolu_9", "look", "{\"q\": \"x\"}")
        );
        assert_eq!(r.choices[0].finish_reason.as_deref(), Some("tool_calls"));
        let usage = r.usage.unwrap();
        assert_eq!((usage.prompt_tokens, usage.completion_tokens, usage.cached_prompt_tokens()), (15, 9, 3));
    }

    #[tokio::test]
    async fn error_events_and_early_ends_are_errors() {
        let start =
            json!({"type": "message_start", "message": {"id": "m", "model": "c", "usage": {"input_tokens": 1}}});
        let overloaded = json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}});
        let items: Vec<_> = chunk_stream("p".into(), sse(&[start.clone(), overloaded])).collect().await;
        assert!(
            matches!(&items[1], Err(Error::Upstream { status: Some(529), message, .. }) if message == "Overloaded")
        );
        let items: Vec<_> = chunk_stream("p".into(), sse(&[start])).collect().await;
        assert!(
            matches!(&items[1], Err(Error::Upstream { status: None, message, .. }) if message.contains("message_stop"))
        );
        assert_eq!(items.len(), 2);
    }

    fn json_value() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let keys = prop::sample::select(vec![
            "type",
            "content",
            "text",
            "id",
            "name",
            "input",
            "usage",
            "input_tokens",
            "output_tokens",
            "cache_read_input_tokens",
            "stop_reason",
            "message",
            "index",
            "delta",
            "partial_json",
            "content_block",
            "error",
        ]);
        let words = prop::sample::select(vec![
            "text",
            "tool_use",
            "message_start",
            "content_block_start",
            "content_block_delta",
            "text_delta",
            "input_json_delta",
            "message_delta",
            "message_stop",
            "error",
            "end_turn",
            "max_tokens",
            "{",
        ]);
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            words.prop_map(|w| json!(w)),
        ];
        leaf.prop_recursive(4, 48, 6, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::vec((keys.clone(), inner), 0..6)
                    .prop_map(|kv| Value::Object(kv.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())),
            ]
        })
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_answers_and_events_never_panic(values in proptest::collection::vec(json_value(), 1..8)) {
            for v in &values {
                if let Ok(answer) = serde_json::from_value::<MessagesAnswer>(v.clone()) {
                    let _ = from_messages_response(answer);
                }
            }
            let mut translator = StreamTranslator {
                provider: "p".into(), id: String::new(), model: String::new(), created: 0,
                counts: TokenCounts::default(), tool_of_block: HashMap::new(), tools: 0,
            };
            for v in &values {
                let _ = translator.step(&SseEvent { event: None, data: v.to_string(), id: None });
            }
        }
    }

    #[test]
    fn debug_never_shows_the_key() {
        let p = AnthropicProvider::builder("a").with_api_key("sk-ant-secret").build().unwrap();
        let shown = format!("{p:?}");
        assert!(!shown.contains("sk-ant-secret") && shown.contains("x-api-key"), "{shown}");
    }
}
