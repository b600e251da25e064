//! [`OllamaProvider`]: Ollama's native API (`/api/chat`, `/api/generate`, `/api/embed`), for hosts that
//! run Ollama without its OpenAI-compatible `/v1` (for that one, use the `openai` provider).
//!
//! Chat requests become `/api/chat` calls (sampling parameters in `options`, `max_tokens` as
//! `num_predict`, images from data URLs as base64 `images`, tools as given, tool-call arguments as JSON
//! objects, `response_format` as `format`); streams are read as NDJSON and turned into chat-completion
//! chunks that end with a usage chunk built from `prompt_eval_count` and `eval_count`. Legacy completions,
//! plain and streamed, go to `/api/generate` and embeddings to `/api/embed`. Ollama has no `tool_choice`: `"none"` sends no
//! tools, any other choice sends them all.
//!
//! ```no_run
//! # async fn run() -> chitty_core::Result<()> {
//! use chitty_core::Provider;
//! use chitty_core::wire::{ChatCompletionRequest, ChatMessage};
//! use chitty_providers::ollama::OllamaProvider;
//!
//! // OLLAMA_HOST when set, otherwise http://localhost:11434.
//! let provider = OllamaProvider::from_env("ollama").build()?;
//! let answer = provider
//!     .chat(ChatCompletionRequest {
//!         model: "llama3.2".into(),
//!         messages: vec![ChatMessage::user("Say hi")],
//!         ..Default::default()
//!     })
//!     .await?;
//! println!("{}", answer.choices[0].message.text_content());
//! # Ok(()) }
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chitty_core::wire::{
    ChatChoice, ChatCompletionChunk, ChatCompletionRequest, ChatCompletionResponse, ChatMessage, ChunkChoice,
    ChunkDelta, CompletionChoice, CompletionRequest, CompletionResponse, Embedding, EmbeddingInput, EmbeddingRequest,
    EmbeddingResponse, EmbeddingUsage, EmbeddingVector, Extra, FunctionCall, FunctionCallDelta, MessageContent,
    PromptInput, Role, StopSequences, StreamChunk, ToolCall, ToolCallDelta, Usage,
};
use chitty_core::{Capabilities, ChunkStream, CompletionChunkStream, Error, Provider, Result, UpstreamFailure};
use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use http::header::AUTHORIZATION;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::framing::{self, interrupted};
use crate::http_provider::{self, HttpUpstream, ProviderBuilder};

/// Where Ollama listens by default.
pub const DEFAULT_BASE_URL: &str = "http://localhost:11434";
/// The default per-request timeout (local models can take a while to load).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

/// Ollama's native API.
#[derive(Debug, Clone)]
pub struct OllamaProvider {
    upstream: HttpUpstream,
    endpoints: Endpoints,
    options: OllamaOptions,
}

/// Ollama's endpoint URLs, parsed once when the provider is built.
#[derive(Debug, Clone)]
struct Endpoints {
    chat: http::Uri,
    generate: http::Uri,
    embed: http::Uri,
}

/// Builds an [`OllamaProvider`]: the shared settings of [`ProviderBuilder`] and the [`OllamaOptions`].
pub type OllamaProviderBuilder = ProviderBuilder<OllamaOptions>;

/// What only an [`OllamaProvider`] is configured with; set through [`OllamaProviderBuilder`].
#[derive(Debug, Clone, Default)]
pub struct OllamaOptions {
    keep_alive: Option<String>,
}

impl OllamaProvider {
    /// A builder for a provider called `name`, pointing at `http://localhost:11434`.
    pub fn builder(name: impl Into<String>) -> OllamaProviderBuilder {
        ProviderBuilder::new(name, DEFAULT_BASE_URL, DEFAULT_TIMEOUT, OllamaOptions::default())
    }

    /// A builder pointing at `OLLAMA_HOST` when set (`host:port` or a URL, as the Ollama CLI reads it).
    pub fn from_env(name: impl Into<String>) -> OllamaProviderBuilder {
        let builder = OllamaProvider::builder(name);
        match std::env::var("OLLAMA_HOST").ok().filter(|h| !h.is_empty()) {
            Some(host) if host.contains("://") => builder.with_base_url(host),
            Some(host) => builder.with_base_url(format!("http://{host}")),
            None => builder,
        }
    }
}

impl OllamaProviderBuilder {
    /// Ollama's `keep_alive` (how long the model stays loaded, e.g. `"10m"`), sent with every request.
    pub fn with_keep_alive(mut self, keep_alive: impl Into<String>) -> Self {
        self.options.keep_alive = Some(keep_alive.into());
        self
    }

    /// The provider, sending a key (for Ollama behind an authenticating proxy, or hosted) as
    /// `Authorization: Bearer …`; fails on an invalid header, key or base URL.
    pub fn build(self) -> Result<OllamaProvider> {
        let upstream = self.upstream((AUTHORIZATION, "Bearer "), &[])?;
        let endpoints = Endpoints {
            chat: upstream.endpoint("/api/chat")?,
            generate: upstream.endpoint("/api/generate")?,
            embed: upstream.endpoint("/api/embed")?,
        };
        Ok(OllamaProvider { upstream, endpoints, options: self.options })
    }
}

#[async_trait]
impl Provider for OllamaProvider {
    fn name(&self) -> &str {
        &self.upstream.name
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::chat_server()
    }

    async fn chat(&self, request: ChatCompletionRequest) -> Result<ChatCompletionResponse> {
        let body = self.with_keep_alive(to_chat_request(&request, false)?);
        let answer: ChatAnswer = self.upstream.call_json(&self.endpoints.chat, &body).await?;
        Ok(from_chat_response(answer))
    }

    async fn chat_stream(&self, request: ChatCompletionRequest) -> Result<ChunkStream> {
        let body = self.with_keep_alive(to_chat_request(&request, true)?);
        let lines = self.open_ndjson(&self.endpoints.chat, &body).await?;
        Ok(chunk_stream(self.upstream.name.clone(), request.model, lines))
    }

    async fn completion(&self, request: CompletionRequest) -> Result<CompletionResponse> {
        let (body, prompt) = self.generate_request(&request, false)?;
        let answer: GenerateAnswer = self.upstream.call_json(&self.endpoints.generate, &body).await?;
        let mut text = answer.response;
        if request.echo == Some(true) {
            text.insert_str(0, &prompt);
        }
        Ok(CompletionResponse {
            id: next_id("cmpl-ollama"),
            object: "text_completion".to_owned(),
            created: http_provider::unix_now(),
            model: request.model,
            choices: vec![CompletionChoice {
                text,
                index: 0,
                finish_reason: Some(answer.finish.reason(false)),
                logprobs: None,
                extra: Extra::new(),
            }],
            usage: Some(answer.finish.usage()),
            system_fingerprint: None,
            extra: Extra::new(),
        })
    }

    async fn completion_stream(&self, request: CompletionRequest) -> Result<CompletionChunkStream> {
        let (body, prompt) = self.generate_request(&request, true)?;
        let lines = self.open_ndjson(&self.endpoints.generate, &body).await?;
        let echo = (request.echo == Some(true)).then_some(prompt);
        Ok(completion_chunk_stream(self.upstream.name.clone(), request.model, echo, lines))
    }

    async fn embeddings(&self, request: EmbeddingRequest) -> Result<EmbeddingResponse> {
        let input = match &request.input {
            EmbeddingInput::Text(t) => json!(t),
            EmbeddingInput::Texts(v) => json!(v),
            _ => return Err(Error::invalid_request("Ollama embeds text, not token lists", Some("input"))),
        };
        let mut body = json!({"model": request.model, "input": input});
        if let (Some(d), Some(o)) = (request.dimensions, body.as_object_mut()) {
            o.insert("dimensions".into(), json!(d));
        }
        let body = self.with_keep_alive(body);
        let answer: EmbedAnswer = self.upstream.call_json(&self.endpoints.embed, &body).await?;
        let vectors = answer.embeddings;
        if vectors.len() != request.input.len() {
            let why = format!("{} embeddings for {} inputs", vectors.len(), request.input.len());
            return Err(http_provider::malformed(&self.upstream.name, "embeddings", why));
        }
        let tokens = answer.prompt_eval_count.unwrap_or(0);
        Ok(EmbeddingResponse {
            object: "list".to_owned(),
            data: vectors
                .into_iter()
                .enumerate()
                .map(|(i, v)| Embedding {
                    object: "embedding".to_owned(),
                    index: u32::try_from(i).unwrap_or(u32::MAX),
                    embedding: EmbeddingVector::Float(v),
                    extra: Extra::new(),
                })
                .collect(),
            model: request.model,
            usage: EmbeddingUsage { prompt_tokens: tokens, total_tokens: tokens, extra: Extra::new() },
            extra: Extra::new(),
        })
    }
}

impl OllamaProvider {
    /// Sends a streaming request and returns the NDJSON lines of its answer.
    async fn open_ndjson(
        &self,
        url: &http::Uri,
        body: &Value,
    ) -> Result<impl Stream<Item = Result<Bytes>> + Send + 'static> {
        let response = self.upstream.open(url, body).await?;
        Ok(framing::ndjson_lines(&self.upstream.name, self.upstream.timeout, http_provider::body_stream(response)))
    }

    /// The `/api/generate` body for a legacy completion, and its one text prompt.
    fn generate_request(&self, request: &CompletionRequest, stream: bool) -> Result<(Value, String)> {
        let prompt = match &request.prompt {
            PromptInput::Text(t) => t.clone(),
            PromptInput::Texts(v) if v.len() == 1 => v[0].clone(),
            _ => return Err(Error::invalid_request("Ollama completes one text prompt at a time", Some("prompt"))),
        };
        if request.n.is_some_and(|n| n > 1) {
            return Err(Error::invalid_request("Ollama generates one completion per request (`n` > 1)", Some("n")));
        }
        let mut options = serde_json::Map::new();
        put(&mut options, "temperature", request.temperature.map(Value::from));
        put(&mut options, "top_p", request.top_p.map(Value::from));
        put(&mut options, "seed", request.seed.map(Value::from));
        put(&mut options, "num_predict", Some(Value::from(request.max_tokens.unwrap_or(16))));
        put(&mut options, "stop", request.stop.as_ref().map(stop_list));
        let mut body = json!({"model": request.model, "prompt": prompt, "stream": stream, "options": options});
        if let (Some(suffix), Some(o)) = (&request.suffix, body.as_object_mut()) {
            o.insert("suffix".into(), json!(suffix));
        }
        Ok((self.with_keep_alive(body), prompt))
    }

    fn with_keep_alive(&self, mut body: Value) -> Value {
        if let (Some(k), Some(o)) = (&self.options.keep_alive, body.as_object_mut()) {
            o.insert("keep_alive".into(), json!(k));
        }
        body
    }
}

fn put(map: &mut serde_json::Map<String, Value>, key: &str, value: Option<Value>) {
    if let Some(v) = value {
        map.insert(key.to_owned(), v);
    }
}

fn stop_list(stop: &StopSequences) -> Value {
    match stop {
        StopSequences::One(s) => json!([s]),
        StopSequences::Many(v) => json!(v),
    }
}

/// Identifiers for translated answers: Ollama's carry none.
fn next_id(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{:x}{n:06x}", http_provider::unix_now())
}

fn invalid(message: impl Into<String>) -> Error {
    Error::invalid_request(message, Some("messages"))
}

/// Translates an OpenAI chat request into an `/api/chat` request.
pub(crate) fn to_chat_request(req: &ChatCompletionRequest, stream: bool) -> Result<Value> {
    if req.n.is_some_and(|n| n > 1) {
        return Err(Error::invalid_request("Ollama generates one choice per request (`n` > 1)", Some("n")));
    }
    let mut messages = Vec::new();
    for m in &req.messages {
        let role = match &m.role {
            Role::System | Role::Developer => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
            other => return Err(invalid(format!("Ollama has no equivalent for role {other:?}"))),
        };
        let mut message = json!({"role": role, "content": m.text_content()});
        let obj = message.as_object_mut().ok_or_else(|| invalid("message is not an object"))?;
        if let Some(MessageContent::Parts(parts)) = &m.content {
            let mut images = Vec::new();
            for part in parts.iter().filter(|p| p.kind != "text") {
                if part.kind != "image_url" {
                    return Err(invalid(format!("Ollama does not take `{}` content parts", part.kind)));
                }
                let url = part
                    .extra
                    .get("image_url")
                    .and_then(|v| v.get("url").or(Some(v)))
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let data = url
                    .strip_prefix("data:")
                    .and_then(|rest| rest.split_once(";base64,"))
                    .map(|(_, data)| data)
                    .ok_or_else(|| invalid("Ollama takes images as base64 data URLs only"))?;
                images.push(json!(data));
            }
            if !images.is_empty() {
                obj.insert("images".into(), Value::Array(images));
            }
        }
        if let Some(calls) = m.tool_calls.as_ref().filter(|c| !c.is_empty()) {
            let calls = calls
                .iter()
                .map(|c| {
                    let arguments: Value = if c.function.arguments.trim().is_empty() {
                        json!({})
                    } else {
                        serde_json::from_str(&c.function.arguments).map_err(|e| {
                            invalid(format!("tool call `{}` has arguments that are not JSON: {e}", c.id))
                        })?
                    };
                    Ok(json!({"function": {"name": c.function.name, "arguments": arguments}}))
                })
                .collect::<Result<Vec<_>>>()?;
            obj.insert("tool_calls".into(), Value::Array(calls));
        }
        if let Some(name) = &m.name {
            obj.insert("tool_name".into(), json!(name));
        }
        messages.push(message);
    }
    let mut options = serde_json::Map::new();
    put(&mut options, "temperature", req.temperature.map(Value::from));
    put(&mut options, "top_p", req.top_p.map(Value::from));
    put(&mut options, "seed", req.seed.map(Value::from));
    put(&mut options, "num_predict", req.output_cap().map(Value::from));
    put(&mut options, "presence_penalty", req.presence_penalty.map(Value::from));
    put(&mut options, "frequency_penalty", req.frequency_penalty.map(Value::from));
    put(&mut options, "stop", req.stop.as_ref().map(stop_list));
    let mut body = json!({"model": req.model, "messages": messages, "stream": stream});
    let obj = body.as_object_mut().ok_or_else(|| invalid("request is not an object"))?;
    if !options.is_empty() {
        obj.insert("options".into(), Value::Object(options));
    }
    let tools_off = req.tool_choice.as_ref().and_then(Value::as_str) == Some("none");
    if let Some(tools) = req.tools.as_ref().filter(|t| !t.is_empty() && !tools_off) {
        obj.insert("tools".into(), serde_json::to_value(tools).map_err(|e| invalid(e.to_string()))?);
    }
    match req.response_format.as_ref().and_then(|f| f.get("type")).and_then(Value::as_str) {
        Some("json_object") => {
            obj.insert("format".into(), json!("json"));
        }
        Some("json_schema") => {
            if let Some(schema) = req.response_format.as_ref().and_then(|f| f.pointer("/json_schema/schema")) {
                obj.insert("format".into(), schema.clone());
            }
        }
        _ => {}
    }
    Ok(body)
}

/// What an `/api/chat` answer holds (fields chitty does not read are ignored).
#[derive(Debug, Deserialize)]
pub(crate) struct ChatAnswer {
    model: String,
    message: AnswerMessage,
    #[serde(flatten)]
    finish: Finish,
}

/// What an `/api/generate` answer holds.
#[derive(Debug, Deserialize)]
struct GenerateAnswer {
    response: String,
    #[serde(flatten)]
    finish: Finish,
}

/// What an `/api/embed` answer holds.
#[derive(Debug, Deserialize)]
struct EmbedAnswer {
    embeddings: Vec<Vec<f32>>,
    #[serde(default)]
    prompt_eval_count: Option<u64>,
}

/// One line of an `/api/chat` stream.
#[derive(Debug, Deserialize)]
struct ChatLine {
    message: AnswerMessage,
    done: bool,
    #[serde(flatten)]
    finish: Finish,
}

/// One line of an `/api/generate` stream.
#[derive(Debug, Deserialize)]
struct GenerateLine {
    response: String,
    done: bool,
    #[serde(flatten)]
    finish: Finish,
}

/// A line of an error: Ollama ends a failing stream with one.
#[derive(Debug, Deserialize)]
struct ErrorLine {
    error: Value,
}

/// The assistant's message in a chat answer or line.
#[derive(Debug, Deserialize)]
struct AnswerMessage {
    content: String,
    #[serde(default)]
    tool_calls: Option<Vec<AnswerToolCall>>,
}

/// A tool call; Ollama gives no id before 0.12, and arguments as an object.
#[derive(Debug, Deserialize)]
struct AnswerToolCall {
    #[serde(default)]
    id: Option<String>,
    function: AnswerFunction,
}

/// The function a tool call names.
#[derive(Debug, Deserialize)]
struct AnswerFunction {
    name: String,
    #[serde(default)]
    arguments: Option<Value>,
}

/// Why an answer ended and what it counted, sent with the last line of a stream.
#[derive(Debug, Default, Deserialize)]
struct Finish {
    #[serde(default)]
    done_reason: Option<String>,
    #[serde(default)]
    prompt_eval_count: Option<u64>,
    #[serde(default)]
    eval_count: Option<u64>,
}

impl Finish {
    fn usage(&self) -> Usage {
        Usage::new(self.prompt_eval_count.unwrap_or(0), self.eval_count.unwrap_or(0))
    }

    fn reason(&self, called_tools: bool) -> String {
        match self.done_reason.as_deref() {
            _ if called_tools => "tool_calls",
            Some("length") => "length",
            _ => "stop",
        }
        .to_owned()
    }
}

/// A stream line: whether it is the last, and how it finished.
trait StreamLine: DeserializeOwned + Send + 'static {
    fn done(&self) -> bool;
    fn finish(&self) -> &Finish;
}

impl StreamLine for ChatLine {
    fn done(&self) -> bool {
        self.done
    }

    fn finish(&self) -> &Finish {
        &self.finish
    }
}

impl StreamLine for GenerateLine {
    fn done(&self) -> bool {
        self.done
    }

    fn finish(&self) -> &Finish {
        &self.finish
    }
}

/// A stream line as `L`; a line that is not one is Ollama's error line, or malformed.
fn parse_line<L: StreamLine>(provider: &str, line: &[u8]) -> Result<L> {
    serde_json::from_slice::<L>(line).map_err(|parse_error| match serde_json::from_slice::<ErrorLine>(line) {
        Ok(ErrorLine { error }) => Error::Upstream {
            provider: provider.to_owned(),
            failure: UpstreamFailure::Status,
            status: None,
            message: error.as_str().map_or_else(|| error.to_string(), str::to_owned),
            retry_after: None,
        },
        Err(_) => http_provider::malformed(provider, "NDJSON line", parse_error),
    })
}

/// A message's tool calls as OpenAI's, numbered from `first_index` where Ollama gave no id.
fn tool_calls_of(message: &mut AnswerMessage, first_index: usize) -> Vec<ToolCall> {
    message
        .tool_calls
        .take()
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .map(|(i, call)| ToolCall {
            id: call.id.unwrap_or_else(|| format!("call_{}", first_index + i)),
            kind: "function".to_owned(),
            function: FunctionCall {
                name: call.function.name,
                arguments: match call.function.arguments {
                    Some(Value::String(s)) => s,
                    Some(v) => v.to_string(),
                    None => "{}".to_owned(),
                },
                extra: Extra::new(),
            },
            extra: Extra::new(),
        })
        .collect()
}

/// Translates an `/api/chat` answer into a chat completion.
pub(crate) fn from_chat_response(mut answer: ChatAnswer) -> ChatCompletionResponse {
    let calls = tool_calls_of(&mut answer.message, 0);
    let text = answer.message.content;
    let finish = answer.finish.reason(!calls.is_empty());
    let message = ChatMessage {
        content: if text.is_empty() && !calls.is_empty() { None } else { Some(MessageContent::Text(text)) },
        tool_calls: (!calls.is_empty()).then_some(calls),
        ..ChatMessage::assistant("")
    };
    ChatCompletionResponse {
        id: next_id("chatcmpl-ollama"),
        object: "chat.completion".to_owned(),
        created: http_provider::unix_now(),
        model: answer.model,
        choices: vec![ChatChoice {
            index: 0,
            message,
            finish_reason: Some(finish),
            logprobs: None,
            extra: Extra::new(),
        }],
        usage: Some(answer.finish.usage()),
        system_fingerprint: None,
        extra: Extra::new(),
    }
}

/// Reads Ollama's NDJSON stream: each line becomes at most one chunk through `chunk_of` (given the line and
/// whether it is the `"done": true` one), the done line is followed by a usage chunk with its counts (`head`'s
/// id and model, no choices), and an error line, garbage, silence beyond `idle` or an early end ends the stream
/// with an error item.
fn ndjson_chunks<L, C, S, F>(provider: String, lines: S, head: C, chunk_of: F) -> BoxStream<'static, Result<C>>
where
    L: StreamLine,
    C: StreamChunk,
    S: Stream<Item = Result<Bytes>> + Send + 'static,
    F: FnMut(L) -> Option<C> + Send + 'static,
{
    struct State<C, S, F> {
        provider: String,
        lines: std::pin::Pin<Box<S>>,
        head: C,
        chunk_of: F,
        pending_usage: Option<Usage>,
        finished: bool,
    }
    let state = State { provider, lines: Box::pin(lines), head, chunk_of, pending_usage: None, finished: false };
    Box::pin(futures::stream::unfold(state, |mut st| async move {
        if let Some(usage) = st.pending_usage.take() {
            st.finished = true;
            return Some((Ok(st.head.usage_only(usage)), st));
        }
        if st.finished {
            return None;
        }
        loop {
            let line = match st.lines.next().await {
                None => Err(interrupted(&st.provider, "the stream ended before `\"done\": true`")),
                Some(Err(e)) => Err(e),
                Some(Ok(line)) => parse_line::<L>(&st.provider, &line),
            };
            let line = match line {
                Ok(line) => line,
                Err(e) => {
                    st.finished = true;
                    return Some((Err(e), st));
                }
            };
            if line.done() {
                st.pending_usage = Some(line.finish().usage());
            }
            if let Some(chunk) = (st.chunk_of)(line) {
                return Some((Ok(chunk), st));
            }
            if let Some(usage) = st.pending_usage.take() {
                st.finished = true;
                return Some((Ok(st.head.usage_only(usage)), st));
            }
        }
    }))
}

/// `/api/chat` stream lines as chat-completion chunks.
fn chunk_stream<S>(provider: String, model: String, lines: S) -> ChunkStream
where
    S: Stream<Item = Result<Bytes>> + Send + 'static,
{
    let head = ChatCompletionChunk {
        id: next_id("chatcmpl-ollama"),
        object: "chat.completion.chunk".to_owned(),
        created: http_provider::unix_now(),
        model,
        choices: Vec::new(),
        usage: None,
        system_fingerprint: None,
        extra: Extra::new(),
    };
    let usage_head = head.clone();
    let mut tools = 0;
    let mut started = false;
    let chunk_of = move |mut line: ChatLine| {
        let calls = tool_calls_of(&mut line.message, tools);
        let text = line.message.content;
        let mut delta = ChunkDelta::default();
        if !started {
            started = true;
            delta.role = Some(Role::Assistant);
            delta.content = Some(String::new());
        }
        if !text.is_empty() {
            delta.content = Some(text);
        }
        if !calls.is_empty() {
            let first = tools;
            tools += calls.len();
            delta.tool_calls = Some(
                calls
                    .into_iter()
                    .enumerate()
                    .map(|(i, c)| ToolCallDelta {
                        index: u32::try_from(first + i).unwrap_or(u32::MAX),
                        id: Some(c.id),
                        kind: Some(c.kind),
                        function: Some(FunctionCallDelta {
                            name: Some(c.function.name),
                            arguments: Some(c.function.arguments),
                            extra: Extra::new(),
                        }),
                        extra: Extra::new(),
                    })
                    .collect(),
            );
        }
        let finish = line.done.then(|| line.finish.reason(tools > 0));
        if delta == ChunkDelta::default() && finish.is_none() {
            return None;
        }
        let choice = ChunkChoice { index: 0, delta, finish_reason: finish, logprobs: None, extra: Extra::new() };
        Some(ChatCompletionChunk { choices: vec![choice], ..head.clone() })
    };
    ndjson_chunks(provider, lines, usage_head, chunk_of)
}

/// `/api/generate` stream lines as legacy-completion chunks; `echo` is sent first when the client asked for it.
fn completion_chunk_stream<S>(provider: String, model: String, echo: Option<String>, lines: S) -> CompletionChunkStream
where
    S: Stream<Item = Result<Bytes>> + Send + 'static,
{
    let head = CompletionResponse {
        id: next_id("cmpl-ollama"),
        object: "text_completion".to_owned(),
        created: http_provider::unix_now(),
        model,
        choices: Vec::new(),
        usage: None,
        system_fingerprint: None,
        extra: Extra::new(),
    };
    let usage_head = head.clone();
    let mut echo = echo;
    let chunk_of = move |line: GenerateLine| {
        let mut text = echo.take().unwrap_or_default();
        text.push_str(&line.response);
        if text.is_empty() && !line.done {
            return None;
        }
        let finish_reason = line.done.then(|| line.finish.reason(false));
        let choice = CompletionChoice { text, index: 0, finish_reason, logprobs: None, extra: Extra::new() };
        Some(CompletionResponse { choices: vec![choice], ..head.clone() })
    };
    ndjson_chunks(provider, lines, usage_head, chunk_of)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use chitty_core::BoxError;

    use super::*;

    #[test]
    fn translates_requests_to_api_chat() {
        let req: ChatCompletionRequest = serde_json::from_value(json!({
            "model": "llama3.2",
            "messages": [
                {"role": "developer", "content": "Be brief."},
                {"role": "user", "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBOR"}}
                ]},
                {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "look", "arguments": "{\"q\":1}"}}]},
                {"role": "tool", "tool_call_id": "c1", "name": "look", "content": "a cat"}
            ],
            "tools": [{"type": "function", "function": {"name": "look", "parameters": {"type": "object"}}}],
            "max_tokens": 50, "temperature": 0.2, "seed": 7, "stop": ["END"],
            "response_format": {"type": "json_object"}
        }))
        .unwrap();
        let body = to_chat_request(&req, true).unwrap();
        assert_eq!(body["stream"], true);
        assert_eq!(body["options"], json!({"num_predict": 50, "temperature": 0.2, "seed": 7, "stop": ["END"]}));
        assert_eq!(body["format"], "json");
        assert_eq!(body["messages"][0], json!({"role": "system", "content": "Be brief."}));
        assert_eq!(body["messages"][1]["images"], json!(["iVBOR"]));
        assert_eq!(body["messages"][1]["content"], "What is this?");
        assert_eq!(body["messages"][2]["tool_calls"][0]["function"]["arguments"], json!({"q": 1}));
        assert_eq!(body["messages"][3]["tool_name"], "look");
        assert_eq!(body["tools"][0]["function"]["name"], "look");

        let mut none = req.clone();
        none.tool_choice = Some(json!("none"));
        assert!(to_chat_request(&none, false).unwrap().get("tools").is_none());
        let mut remote = req;
        remote.messages[1].content = Some(
            serde_json::from_value(json!([{"type": "image_url", "image_url": {"url": "https://x/y.png"}}])).unwrap(),
        );
        assert!(to_chat_request(&remote, false).is_err());
    }

    #[test]
    fn translates_answers_with_tool_calls_and_usage() {
        let answer = json!({
            "model": "llama3.2", "created_at": "2024-01-01T00:00:00Z",
            "message": {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "look", "arguments": {"q": "x"}}}]},
            "done": true, "done_reason": "stop", "prompt_eval_count": 12, "eval_count": 4
        });
        let r = from_chat_response(serde_json::from_value(answer).unwrap());
        assert_eq!(r.choices[0].finish_reason.as_deref(), Some("tool_calls"));
        assert!(r.choices[0].message.content.is_none());
        let call = &r.choices[0].message.tool_calls.as_ref().unwrap()[0];
        assert_eq!((call.id.as_str(), call.function.arguments.as_str()), ("call_0", r#"{"q":"x"}"#));
        assert_eq!(r.usage.unwrap(), Usage::new(12, 4));
        let length = json!({"model": "m", "message": {"content": "abc"}, "done": true, "done_reason": "length"});
        let length = from_chat_response(serde_json::from_value(length).unwrap());
        assert_eq!(length.choices[0].finish_reason.as_deref(), Some("length"));
    }

    fn decode_error<T: serde::de::DeserializeOwned + std::fmt::Debug>(answer: Value, field: &str) {
        let err = http_provider::parse_json::<T>("p", answer.to_string().as_bytes()).unwrap_err();
        assert!(
            matches!(&err, Error::Upstream { failure: UpstreamFailure::Decode, message, .. } if message.contains(&format!("`{field}`"))),
            "{field}: {err:?}"
        );
        assert!(!err.is_retryable(), "a malformed answer is not retried");
    }

    #[test]
    fn an_answer_missing_a_required_field_is_a_decode_error_naming_it() {
        // Each of these used to become an empty message, an empty model name or an empty completion.
        decode_error::<ChatAnswer>(json!({"model": "m", "message": {"role": "assistant"}, "done": true}), "content");
        decode_error::<ChatAnswer>(json!({"model": "m", "done": true}), "message");
        decode_error::<ChatAnswer>(json!({"message": {"content": "hi"}, "done": true}), "model");
        let nameless =
            json!({"model": "m", "message": {"content": "", "tool_calls": [{"function": {"arguments": {}}}]}});
        decode_error::<ChatAnswer>(nameless, "name");
        decode_error::<GenerateAnswer>(json!({"model": "m", "done": true, "eval_count": 3}), "response");
        decode_error::<EmbedAnswer>(json!({"model": "m", "prompt_eval_count": 3}), "embeddings");
    }

    #[test]
    fn a_stream_line_missing_a_required_field_is_a_decode_error_naming_it() {
        for (line, field) in [
            (json!({"message": {"content": "a"}}), "done"),
            (json!({"message": {"role": "assistant"}, "done": false}), "content"),
            (json!({"done": false}), "message"),
        ] {
            let err = parse_line::<ChatLine>("p", line.to_string().as_bytes()).unwrap_err();
            assert!(
                matches!(&err, Error::Upstream { failure: UpstreamFailure::Decode, message, .. } if message.contains(&format!("`{field}`"))),
                "{field}: {err:?}"
            );
        }
        let err = parse_line::<GenerateLine>("p", br#"{"done": false}"#).unwrap_err();
        assert!(err.to_string().contains("`response`"), "{err}");
        let err = parse_line::<GenerateLine>("p", br#"{"error": "model 'x' not found"}"#).unwrap_err();
        assert!(
            matches!(&err, Error::Upstream { failure: UpstreamFailure::Status, message, .. } if message == "model 'x' not found")
        );
        let unknown =
            br#"{"model": "m", "created_at": "t", "response": "a", "done": false, "context": [1, 2], "new_field": {}}"#;
        assert_eq!(parse_line::<GenerateLine>("p", unknown).unwrap().response, "a", "unknown fields are ignored");
    }

    fn bytes(
        parts: &[&'static str],
    ) -> impl Stream<Item = std::result::Result<Bytes, BoxError>> + Send + Unpin + use<> {
        futures::stream::iter(parts.iter().map(|p| Ok(Bytes::from_static(p.as_bytes()))).collect::<Vec<_>>())
    }

    /// The NDJSON lines of a body, as the provider reads them.
    fn lines(
        body: impl Stream<Item = std::result::Result<Bytes, BoxError>> + Send + Unpin + 'static,
    ) -> impl Stream<Item = Result<Bytes>> + Send + 'static {
        framing::ndjson_lines("p", Duration::from_secs(1), body)
    }

    #[tokio::test]
    async fn stream_lines_become_chunks_ending_with_usage() {
        let body = bytes(&[
            "{\"model\":\"m\",\"message\":{\"role\":\"assistant\",\"content\":\"Hel\"},\"done\":false}\n",
            "{\"model\":\"m\",\"message\":{\"role\":\"assistant\",\"content\":\"lo\"},\"done\":false}\n",
            "{\"model\":\"m\",\"message\":{\"role\":\"assistant\",\"content\":\"\"},\"done\":true,\"done_reason\":\"length\",\"prompt_eval_count\":5,\"eval_count\":2}\n",
        ]);
        let items: Vec<_> = chunk_stream("p".into(), "m".into(), lines(body)).collect().await;
        let chunks: Vec<ChatCompletionChunk> = items.into_iter().map(Result::unwrap).collect();
        let mut acc = chitty_core::wire::ChunkAccumulator::default();
        chunks.iter().for_each(|c| acc.push(c));
        assert!(chunks.last().unwrap().choices.is_empty());
        let r = acc.finish();
        assert_eq!(r.choices[0].message.text_content(), "Hello");
        assert_eq!(r.choices[0].finish_reason.as_deref(), Some("length"));
        assert_eq!(r.usage.unwrap(), Usage::new(5, 2));
    }

    #[tokio::test]
    async fn errors_and_early_ends_end_the_stream_with_an_error() {
        for (parts, needle) in [
            (vec!["{\"model\":\"m\",\"message\":{\"content\":\"a\"},\"done\":false}\n"], "done"),
            (vec!["{\"error\":\"model 'x' not found\"}\n"], "not found"),
            (vec!["{\"message\": \n"], "malformed"),
        ] {
            let items: Vec<_> = chunk_stream("p".into(), "m".into(), lines(bytes(&parts))).collect().await;
            let last = items.last().unwrap().as_ref().unwrap_err();
            assert!(last.to_string().contains(needle), "{last}");
            assert!(items[..items.len() - 1].iter().all(Result::is_ok));
        }
    }
}
