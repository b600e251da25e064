//! `/v1/chat/completions` requests, responses and stream chunks.

use std::fmt;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use super::codec::{OneOrMany, wire_object};
use super::{Extra, StopSequences, StreamOptions, Usage};

/// A chat completion request.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ChatCompletionRequest {
    /// Model name (public name at the gateway; upstream name when sent to a provider).
    pub model: String,
    /// The conversation so far.
    pub messages: Vec<ChatMessage>,
    /// Sampling temperature.
    pub temperature: Option<f64>,
    /// Nucleus sampling mass.
    pub top_p: Option<f64>,
    /// Number of choices to generate.
    pub n: Option<u32>,
    /// Seed for best-effort deterministic sampling.
    pub seed: Option<i64>,
    /// Stop sequences.
    pub stop: Option<StopSequences>,
    /// Output token cap (legacy name).
    pub max_tokens: Option<u32>,
    /// Output token cap, reasoning tokens included (current name).
    pub max_completion_tokens: Option<u32>,
    /// Presence penalty.
    pub presence_penalty: Option<f64>,
    /// Frequency penalty.
    pub frequency_penalty: Option<f64>,
    /// Token bias map.
    pub logit_bias: Option<serde_json::Map<String, serde_json::Value>>,
    /// Return log-probabilities.
    pub logprobs: Option<bool>,
    /// How many top log-probabilities per token.
    pub top_logprobs: Option<u32>,
    /// Tools the model may call.
    pub tools: Option<Vec<Tool>>,
    /// `"none" | "auto" | "required"` or a named function, kept as sent.
    pub tool_choice: Option<serde_json::Value>,
    /// Allow several tool calls in one turn.
    pub parallel_tool_calls: Option<bool>,
    /// `{"type": "text" | "json_object" | "json_schema", ...}`, kept as sent.
    pub response_format: Option<serde_json::Value>,
    /// End-user identifier (does not change the answer).
    pub user: Option<String>,
    /// Stream the answer as server-sent events.
    pub stream: Option<bool>,
    /// Streaming options.
    pub stream_options: Option<StreamOptions>,
    /// Fields not modelled here, forwarded as sent.
    pub extra: Extra,
}

wire_object!(ChatCompletionRequest {
    model: required,
    messages: required,
    temperature: optional,
    top_p: optional,
    n: optional,
    seed: optional,
    stop: optional,
    max_tokens: optional,
    max_completion_tokens: optional,
    presence_penalty: optional,
    frequency_penalty: optional,
    logit_bias: optional,
    logprobs: optional,
    top_logprobs: optional,
    tools: optional,
    tool_choice: optional,
    parallel_tool_calls: optional,
    response_format: optional,
    user: optional,
    stream: optional,
    stream_options: optional
});

impl ChatCompletionRequest {
    /// The output cap the client asked for (`max_completion_tokens` wins over `max_tokens`).
    pub fn output_cap(&self) -> Option<u32> {
        self.max_completion_tokens.or(self.max_tokens)
    }

    /// The most output tokens an upstream may produce per choice: the larger cap when both fields are set,
    /// since an upstream may read either. What a budget must reserve for.
    pub fn output_bound(&self) -> Option<u32> {
        match (self.max_completion_tokens, self.max_tokens) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }

    /// Whether the client asked for a streamed answer.
    pub fn is_stream(&self) -> bool {
        self.stream.unwrap_or(false)
    }

    /// Whether the client asked for the final usage chunk.
    pub fn wants_stream_usage(&self) -> bool {
        self.stream_options.as_ref().and_then(|o| o.include_usage).unwrap_or(false)
    }
}

/// Who wrote a message.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// System instructions.
    System,
    /// Developer instructions (newer name for system on reasoning models).
    Developer,
    /// The user.
    User,
    /// The model.
    Assistant,
    /// A tool result.
    Tool,
    /// A legacy function result.
    Function,
    /// A role this crate does not know yet, kept as sent.
    #[serde(untagged)]
    Other(String),
}

impl Role {
    /// The role named `name`, if it is one this crate knows.
    fn known(name: &str) -> Option<Role> {
        Some(match name {
            "system" => Role::System,
            "developer" => Role::Developer,
            "user" => Role::User,
            "assistant" => Role::Assistant,
            "tool" => Role::Tool,
            "function" => Role::Function,
            _ => return None,
        })
    }
}

impl<'de> Deserialize<'de> for Role {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct RoleVisitor;

        impl Visitor<'_> for RoleVisitor {
            type Value = Role;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a role name")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Role, E> {
                Ok(Role::known(v).unwrap_or_else(|| Role::Other(v.to_owned())))
            }

            fn visit_string<E: de::Error>(self, v: String) -> Result<Role, E> {
                Ok(Role::known(&v).unwrap_or(Role::Other(v)))
            }
        }

        deserializer.deserialize_str(RoleVisitor)
    }
}

/// One message of the conversation.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatMessage {
    /// Author.
    pub role: Role,
    /// Text or content parts; absent on assistant messages that only call tools.
    pub content: Option<MessageContent>,
    /// Participant name.
    pub name: Option<String>,
    /// Tool calls the assistant made.
    pub tool_calls: Option<Vec<ToolCall>>,
    /// For `tool` messages: the call this answers.
    pub tool_call_id: Option<String>,
    /// A refusal from the model.
    pub refusal: Option<String>,
    /// Fields not modelled here.
    pub extra: Extra,
}

wire_object!(ChatMessage {
    role: required,
    content: optional,
    name: optional,
    tool_calls: optional,
    tool_call_id: optional,
    refusal: optional
});

impl ChatMessage {
    /// A message with text content.
    pub fn text(role: Role, text: impl Into<String>) -> ChatMessage {
        ChatMessage {
            role,
            content: Some(MessageContent::Text(text.into())),
            name: None,
            tool_calls: None,
            tool_call_id: None,
            refusal: None,
            extra: Extra::new(),
        }
    }

    /// A user message.
    pub fn user(text: impl Into<String>) -> ChatMessage {
        ChatMessage::text(Role::User, text)
    }

    /// A system message.
    pub fn system(text: impl Into<String>) -> ChatMessage {
        ChatMessage::text(Role::System, text)
    }

    /// An assistant message.
    pub fn assistant(text: impl Into<String>) -> ChatMessage {
        ChatMessage::text(Role::Assistant, text)
    }

    /// The concatenated text of the content (text parts only).
    pub fn text_content(&self) -> String {
        match &self.content {
            None => String::new(),
            Some(MessageContent::Text(t)) => t.clone(),
            Some(MessageContent::Parts(parts)) => parts.iter().filter_map(|p| p.text.as_deref()).collect(),
        }
    }
}

/// Message content: a string or a list of typed parts.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum MessageContent {
    /// Plain text.
    Text(String),
    /// Typed parts (`text`, `image_url`, `input_audio`, `file`, …).
    Parts(Vec<ContentPart>),
}

impl<'de> Deserialize<'de> for MessageContent {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(match OneOrMany::deserialize(deserializer, "a string or an array of content parts")? {
            OneOrMany::One(s) => MessageContent::Text(s),
            OneOrMany::Many(v) => MessageContent::Parts(v),
        })
    }
}

/// One part of multi-part content. Non-text parts keep their payload in `extra`.
#[derive(Debug, Clone, PartialEq)]
pub struct ContentPart {
    /// Part type, e.g. `text` or `image_url`.
    pub kind: String,
    /// Text of a `text` part.
    pub text: Option<String>,
    /// Other fields (`image_url`, `input_audio`, `file`, …).
    pub extra: Extra,
}

wire_object!(ContentPart { kind as "type": required, text: optional });

/// A tool the model may call.
#[derive(Debug, Clone, PartialEq)]
pub struct Tool {
    /// Tool type, `function`.
    pub kind: String,
    /// The function.
    pub function: Option<FunctionDefinition>,
    /// Fields not modelled here.
    pub extra: Extra,
}

wire_object!(Tool { kind as "type": required, function: optional });

/// A function the model may call.
#[derive(Debug, Clone, PartialEq)]
pub struct FunctionDefinition {
    /// Function name.
    pub name: String,
    /// What it does.
    pub description: Option<String>,
    /// JSON Schema of the arguments.
    pub parameters: Option<serde_json::Value>,
    /// Strict schema adherence.
    pub strict: Option<bool>,
    /// Fields not modelled here.
    pub extra: Extra,
}

wire_object!(FunctionDefinition { name: required, description: optional, parameters: optional, strict: optional });

/// A tool call made by the assistant.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall {
    /// Call identifier, echoed by the tool message.
    pub id: String,
    /// Call type, `function`.
    pub kind: String,
    /// Function and arguments.
    pub function: FunctionCall,
    /// Fields not modelled here.
    pub extra: Extra,
}

wire_object!(ToolCall { id: required, kind as "type": required, function: required });

/// The function a tool call invokes.
#[derive(Debug, Clone, PartialEq)]
pub struct FunctionCall {
    /// Function name.
    pub name: String,
    /// Arguments as a JSON string.
    pub arguments: String,
    /// Fields not modelled here.
    pub extra: Extra,
}

wire_object!(FunctionCall { name: required, arguments: required });

/// A chat completion.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatCompletionResponse {
    /// Completion identifier.
    pub id: String,
    /// `chat.completion`.
    pub object: String,
    /// Unix seconds.
    pub created: u64,
    /// Model that answered.
    pub model: String,
    /// The choices.
    pub choices: Vec<ChatChoice>,
    /// Token usage.
    pub usage: Option<Usage>,
    /// Backend configuration fingerprint.
    pub system_fingerprint: Option<String>,
    /// Fields not modelled here (`service_tier`, …).
    pub extra: Extra,
}

wire_object!(ChatCompletionResponse {
    id: required,
    object: required,
    created: required,
    model: required,
    choices: required,
    usage: optional,
    system_fingerprint: optional
});

/// One choice of a chat completion.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatChoice {
    /// Choice index.
    pub index: u32,
    /// The generated message.
    pub message: ChatMessage,
    /// `stop`, `length`, `tool_calls`, `content_filter`, …
    pub finish_reason: Option<String>,
    /// Log-probabilities, kept as sent.
    pub logprobs: Option<serde_json::Value>,
    /// Fields not modelled here.
    pub extra: Extra,
}

wire_object!(ChatChoice { index: required, message: required, finish_reason: nullable, logprobs: optional });

/// One server-sent chunk of a streamed chat completion.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatCompletionChunk {
    /// Completion identifier (the same for every chunk).
    pub id: String,
    /// `chat.completion.chunk`.
    pub object: String,
    /// Unix seconds.
    pub created: u64,
    /// Model that answered.
    pub model: String,
    /// Deltas; empty on the final usage chunk.
    pub choices: Vec<ChunkChoice>,
    /// Usage, on the final chunk when `stream_options.include_usage` was set.
    pub usage: Option<Usage>,
    /// Backend configuration fingerprint.
    pub system_fingerprint: Option<String>,
    /// Fields not modelled here.
    pub extra: Extra,
}

wire_object!(ChatCompletionChunk {
    id: required,
    object: required,
    created: required,
    model: required,
    choices: required,
    usage: optional,
    system_fingerprint: optional
});

/// One choice's delta in a stream chunk.
#[derive(Debug, Clone, PartialEq)]
pub struct ChunkChoice {
    /// Choice index.
    pub index: u32,
    /// What this chunk adds.
    pub delta: ChunkDelta,
    /// Set on the choice's last chunk.
    pub finish_reason: Option<String>,
    /// Log-probabilities, kept as sent.
    pub logprobs: Option<serde_json::Value>,
    /// Fields not modelled here.
    pub extra: Extra,
}

wire_object!(ChunkChoice { index: required, delta: required, finish_reason: nullable, logprobs: optional });

/// The incremental part of a message.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ChunkDelta {
    /// Role, on the first chunk.
    pub role: Option<Role>,
    /// Text added.
    pub content: Option<String>,
    /// Tool-call fragments added.
    pub tool_calls: Option<Vec<ToolCallDelta>>,
    /// Refusal text added.
    pub refusal: Option<String>,
    /// Fields not modelled here.
    pub extra: Extra,
}

wire_object!(ChunkDelta { role: optional, content: optional, tool_calls: optional, refusal: optional });

/// A fragment of a tool call in a stream.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCallDelta {
    /// Which tool call of the message this extends.
    pub index: u32,
    /// Call identifier, on the first fragment.
    pub id: Option<String>,
    /// `function`, on the first fragment.
    pub kind: Option<String>,
    /// Name and argument fragments.
    pub function: Option<FunctionCallDelta>,
    /// Fields not modelled here.
    pub extra: Extra,
}

wire_object!(ToolCallDelta { index: required, id: optional, kind as "type": optional, function: optional });

/// Name and argument fragments of a streamed tool call.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FunctionCallDelta {
    /// Function name, on the first fragment.
    pub name: Option<String>,
    /// Next piece of the arguments string.
    pub arguments: Option<String>,
    /// Fields not modelled here.
    pub extra: Extra,
}

wire_object!(FunctionCallDelta { name: optional, arguments: optional });

impl ChatCompletionResponse {
    /// Splits this completion into the stream chunks that would have produced it (used to replay a
    /// cached answer as SSE). Text is cut after whitespace into pieces of at least `piece_bytes` bytes
    /// (`1`: a word per chunk); concatenating the pieces gives the text back exactly. Each choice's last
    /// chunk carries its finish reason and its log-probabilities whole (they are not split with the text).
    pub fn to_chunks(&self, piece_bytes: usize, include_usage: bool) -> Vec<ChatCompletionChunk> {
        let mut out = Vec::new();
        let chunk = |choices: Vec<ChunkChoice>, usage: Option<Usage>| ChatCompletionChunk {
            id: self.id.clone(),
            object: "chat.completion.chunk".to_owned(),
            created: self.created,
            model: self.model.clone(),
            choices,
            usage,
            system_fingerprint: self.system_fingerprint.clone(),
            extra: Extra::new(),
        };
        for choice in &self.choices {
            let delta_choice = |delta: ChunkDelta, finish: Option<String>| ChunkChoice {
                index: choice.index,
                delta,
                finish_reason: finish,
                logprobs: None,
                extra: Extra::new(),
            };
            let role = Some(choice.message.role.clone());
            let mut first = true;
            for piece in super::text_pieces(&choice.message.text_content(), piece_bytes) {
                let delta = ChunkDelta {
                    role: if first { role.clone() } else { None },
                    content: Some(piece),
                    ..Default::default()
                };
                first = false;
                out.push(chunk(vec![delta_choice(delta, None)], None));
            }
            if let Some(calls) = &choice.message.tool_calls {
                let deltas = calls
                    .iter()
                    .enumerate()
                    .map(|(i, c)| ToolCallDelta {
                        index: u32::try_from(i).unwrap_or(u32::MAX),
                        id: Some(c.id.clone()),
                        kind: Some(c.kind.clone()),
                        function: Some(FunctionCallDelta {
                            name: Some(c.function.name.clone()),
                            arguments: Some(c.function.arguments.clone()),
                            extra: Extra::new(),
                        }),
                        extra: Extra::new(),
                    })
                    .collect();
                let delta = ChunkDelta {
                    role: if first { role.clone() } else { None },
                    tool_calls: Some(deltas),
                    ..Default::default()
                };
                first = false;
                out.push(chunk(vec![delta_choice(delta, None)], None));
            }
            if first {
                let delta = ChunkDelta { role, content: Some(String::new()), ..Default::default() };
                out.push(chunk(vec![delta_choice(delta, None)], None));
            }
            let mut last = delta_choice(ChunkDelta::default(), choice.finish_reason.clone());
            last.logprobs.clone_from(&choice.logprobs);
            out.push(chunk(vec![last], None));
        }
        if include_usage {
            out.push(chunk(Vec::new(), self.usage.clone()));
        }
        out
    }
}

/// Folds stream chunks back into a complete response: the inverse of [`ChatCompletionResponse::to_chunks`].
/// Choices indexed 65,536 or above are ignored: no request asks for that many, and it bounds the memory a
/// broken upstream can claim.
#[derive(Debug, Default)]
pub struct ChunkAccumulator {
    head: Option<(String, u64, String, Option<String>)>,
    choices: Vec<ChatChoice>,
    usage: Option<Usage>,
}

impl ChunkAccumulator {
    /// Adds one chunk.
    pub fn push(&mut self, chunk: &ChatCompletionChunk) {
        if self.head.is_none() {
            self.head = Some((chunk.id.clone(), chunk.created, chunk.model.clone(), chunk.system_fingerprint.clone()));
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
                let index = u32::try_from(self.choices.len()).unwrap_or(u32::MAX);
                self.choices.push(ChatChoice {
                    index,
                    message: ChatMessage::text(super::Role::Assistant, ""),
                    finish_reason: None,
                    logprobs: None,
                    extra: Extra::new(),
                });
            }
            let choice = &mut self.choices[idx];
            if let Some(role) = &c.delta.role {
                choice.message.role = role.clone();
            }
            if let Some(text) = &c.delta.content
                && let Some(MessageContent::Text(t)) = &mut choice.message.content
            {
                t.push_str(text);
            }
            if let Some(r) = &c.delta.refusal {
                choice.message.refusal.get_or_insert_with(String::new).push_str(r);
            }
            if let Some(calls) = &c.delta.tool_calls {
                let list = choice.message.tool_calls.get_or_insert_with(Vec::new);
                for d in calls {
                    let i = d.index as usize;
                    while list.len() <= i {
                        list.push(ToolCall {
                            id: String::new(),
                            kind: "function".to_owned(),
                            function: FunctionCall {
                                name: String::new(),
                                arguments: String::new(),
                                extra: Extra::new(),
                            },
                            extra: Extra::new(),
                        });
                    }
                    let call = &mut list[i];
                    if let Some(id) = &d.id {
                        call.id.clone_from(id);
                    }
                    if let Some(k) = &d.kind {
                        call.kind.clone_from(k);
                    }
                    if let Some(f) = &d.function {
                        if let Some(n) = &f.name {
                            call.function.name.push_str(n);
                        }
                        if let Some(a) = &f.arguments {
                            call.function.arguments.push_str(a);
                        }
                    }
                }
            }
            super::merge_logprobs(&mut choice.logprobs, c.logprobs.as_ref(), false);
            if c.finish_reason.is_some() {
                choice.finish_reason.clone_from(&c.finish_reason);
            }
        }
    }

    /// Characters of generated text and tool-call arguments so far (for settling an interrupted stream).
    pub fn generated_text_len(&self) -> usize {
        self.choices
            .iter()
            .map(|c| {
                c.message.text_content().len()
                    + c.message
                        .tool_calls
                        .iter()
                        .flatten()
                        .map(|t| t.function.arguments.len() + t.function.name.len())
                        .sum::<usize>()
            })
            .sum()
    }

    /// Usage reported by the stream, if a usage chunk arrived.
    pub fn usage(&self) -> Option<&Usage> {
        self.usage.as_ref()
    }

    /// The complete response.
    pub fn finish(self) -> ChatCompletionResponse {
        let (id, created, model, system_fingerprint) = self.head.unwrap_or_default();
        let mut choices = self.choices;
        for c in &mut choices {
            let is_empty_text = matches!(&c.message.content, Some(MessageContent::Text(t)) if t.is_empty());
            if is_empty_text && c.message.tool_calls.is_some() {
                c.message.content = None;
            }
        }
        ChatCompletionResponse {
            id,
            object: "chat.completion".to_owned(),
            created,
            model,
            choices,
            usage: self.usage,
            system_fingerprint,
            extra: Extra::new(),
        }
    }
}
