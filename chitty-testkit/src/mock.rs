//! A deterministic in-process [`Provider`]: the same prompt always gets the same answer.
//!
//! Answers are derived from a SHA-256 of the prompt, words are one token each, usage is reported (and never
//! exceeds chitty-core's token estimate, so budget tests hold exactly), the streamed text equals the
//! non-streamed text, and latency and failures can be injected.
//!
//! ```
//! # tokio_test_block_on(async {
//! use chitty_core::Provider;
//! use chitty_core::wire::{ChatCompletionRequest, ChatMessage};
//! use chitty_testkit::mock::MockProvider;
//!
//! let provider = MockProvider::new("mock");
//! let request = ChatCompletionRequest {
//!     model: "chitty-mock".into(),
//!     messages: vec![ChatMessage::user("Hello")],
//!     ..Default::default()
//! };
//! let a = provider.chat(request.clone()).await?;
//! let b = provider.chat(request).await?;
//! assert_eq!(a.choices[0].message.text_content(), b.choices[0].message.text_content());
//! # Ok::<(), chitty_core::Error>(())
//! # });
//! # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
//! #     tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
//! # }
//! ```

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chitty_core::wire::{
    ChatChoice, ChatCompletionRequest, ChatCompletionResponse, ChatMessage, CompletionChoice, CompletionRequest,
    CompletionResponse, Embedding, EmbeddingInput, EmbeddingRequest, EmbeddingResponse, EmbeddingUsage,
    EmbeddingVector, Extra, FunctionCall, MessageContent, PromptInput, Role, ToolCall, Usage,
};
use chitty_core::{
    Capabilities, Capability, ChunkStream, CompletionChunkStream, Error, Provider, Result, UpstreamFailure, tokens,
};
use sha2::{Digest, Sha256};

/// Most embedding dimensions the mock builds.
pub const MAX_MOCK_DIMENSIONS: usize = 65_536;
/// Most floats (dimensions x inputs) one mock embeddings answer holds: 64 MiB.
pub const MAX_MOCK_FLOATS: usize = 16 * 1024 * 1024;

const VOCABULARY: [&str; 48] = [
    "the",
    "gateway",
    "answers",
    "quickly",
    "and",
    "every",
    "budget",
    "holds",
    "while",
    "streams",
    "flow",
    "through",
    "a",
    "cache",
    "that",
    "remembers",
    "deterministic",
    "tokens",
    "model",
    "replies",
    "with",
    "care",
    "for",
    "each",
    "tenant",
    "request",
    "is",
    "priced",
    "in",
    "nanodollars",
    "so",
    "nothing",
    "overruns",
    "under",
    "load",
    "as",
    "providers",
    "fail",
    "over",
    "to",
    "their",
    "fallbacks",
    "when",
    "circuits",
    "open",
    "then",
    "close",
    "again",
];

/// A scripted failure for the next call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptedFailure {
    /// HTTP status to report (0 for a connection failure without a status).
    pub status: u16,
    /// Message to report.
    pub message: String,
}

/// Embedding dimensions when a request does not set `dimensions`.
const EMBEDDING_DIMS: usize = 8;

/// How the mock embeds text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum MockEmbedding {
    /// [`embedding_for`]: a hash of the whole text, so any two texts are unrelated (8 dimensions by default).
    #[default]
    Hashed,
    /// [`bag_of_words_embedding`]: texts sharing words point the same way, so paraphrases are close, as with a
    /// real embedding model (256 dimensions by default).
    BagOfWords,
}

/// Dimensions of a bag-of-words embedding when a request does not set `dimensions`.
const BAG_OF_WORDS_DIMS: usize = 256;

/// Words that carry no topic, left out of bag-of-words embeddings so that rewordings stay close.
const STOP_WORDS: [&str; 42] = [
    "a", "an", "the", "and", "or", "of", "to", "in", "on", "for", "with", "is", "are", "be", "me", "my", "i", "you",
    "your", "it", "its", "this", "that", "please", "can", "could", "would", "will", "do", "does", "what", "how",
    "tell", "give", "about", "some", "just", "quickly", "briefly", "kindly", "explain", "describe",
];

/// A deterministic unit vector for `text` in which texts sharing words are close: each word other than a
/// stop word adds ±1 to a dimension chosen by its hash (lower-cased, a plural `s` dropped), so
/// the cosine similarity of two texts grows with the words they share, whatever their order.
pub fn bag_of_words_embedding(text: &str, dims: usize) -> Vec<f32> {
    let mut out = vec![0f32; dims.max(1)];
    let lower = text.to_lowercase();
    for word in lower.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty() && !STOP_WORDS.contains(w)) {
        let word = match word.strip_suffix('s') {
            Some(stem) if stem.len() > 2 && !stem.ends_with('s') => stem,
            _ => word,
        };
        let digest = Sha256::digest(word.as_bytes());
        let mut index = [0u8; 8];
        index.copy_from_slice(&digest[..8]);
        let slot = (u64::from_le_bytes(index) % out.len() as u64) as usize;
        out[slot] += if digest[8] & 1 == 0 { 1.0 } else { -1.0 };
    }
    let norm = out.iter().map(|v| v * v).sum::<f32>().sqrt();
    if norm > 0.0 {
        out.iter_mut().for_each(|v| *v /= norm);
    } else {
        // No content word: a fixed direction, so the vector is still a unit vector.
        out[0] = 1.0;
    }
    out
}

/// A deterministic mock provider.
#[derive(Debug)]
pub struct MockProvider {
    name: String,
    embedding: MockEmbedding,
    capabilities: Capabilities,
    latency: Duration,
    failures: Mutex<VecDeque<ScriptedFailure>>,
    calls: AtomicU64,
}

impl MockProvider {
    /// A provider with every capability, no latency and 8-dimensional embeddings.
    pub fn new(name: impl Into<String>) -> MockProvider {
        MockProvider {
            name: name.into(),
            embedding: MockEmbedding::Hashed,
            capabilities: Capabilities::chat_server(),
            latency: Duration::ZERO,
            failures: Mutex::new(VecDeque::new()),
            calls: AtomicU64::new(0),
        }
    }

    /// Declares only `capabilities` (the others return [`Error::Unsupported`]).
    pub fn with_capabilities(mut self, capabilities: Capabilities) -> MockProvider {
        self.capabilities = capabilities;
        self
    }

    /// Embeds text with `embedding` ([`MockEmbedding::Hashed`] by default).
    pub fn with_embedding(mut self, embedding: MockEmbedding) -> MockProvider {
        self.embedding = embedding;
        self
    }

    /// Waits `latency` (on the tokio timer) before each answer.
    pub fn with_latency(mut self, latency: Duration) -> MockProvider {
        self.latency = latency;
        self
    }

    /// Makes the next call fail with `status` (0: no status, as for a refused connection).
    pub fn fail_next(&self, status: u16, message: impl Into<String>) {
        self.lock_failures().push_back(ScriptedFailure { status, message: message.into() });
    }

    /// Calls received so far (failed ones included).
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }

    fn lock_failures(&self) -> std::sync::MutexGuard<'_, VecDeque<ScriptedFailure>> {
        // A poisoned queue only means a test panicked while holding it; the data is still usable.
        self.failures.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn begin(&self, capability: Capability) -> Result<()> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if !self.capabilities.contains(capability) {
            return Err(Error::Unsupported { provider: self.name.clone(), capability });
        }
        if !self.latency.is_zero() {
            tokio::time::sleep(self.latency).await;
        }
        let failure = self.lock_failures().pop_front();
        match failure {
            None => Ok(()),
            Some(f) => Err(Error::Upstream {
                provider: self.name.clone(),
                failure: if f.status == 0 { UpstreamFailure::Interrupted } else { UpstreamFailure::Status },
                status: (f.status != 0).then_some(f.status),
                message: f.message,
                retry_after: None,
            }),
        }
    }

    fn completion_id(digest: &[u8; 32], prefix: &str) -> String {
        format!("{prefix}-{}", hex::encode(&digest[..12]))
    }
}

/// The words the mock answers `prompt` with, before any output cap.
pub fn answer_words(prompt: &str) -> Vec<&'static str> {
    words_from_digest(&Sha256::digest(prompt.as_bytes()).into())
}

fn words_from_digest(digest: &[u8; 32]) -> Vec<&'static str> {
    let mut seed = [0u8; 8];
    seed.copy_from_slice(&digest[..8]);
    let mut state = u64::from_le_bytes(seed) | 1;
    let count = 6 + (digest[8] as usize % 18);
    (0..count)
        .map(|_| {
            // xorshift64: cheap, deterministic, good enough to vary words.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            VOCABULARY[(state % VOCABULARY.len() as u64) as usize]
        })
        .collect()
}

/// A deterministic unit vector for `text`.
pub fn embedding_for(text: &str, dims: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(dims);
    let mut counter = 0u32;
    while out.len() < dims {
        let mut h = Sha256::new();
        h.update(counter.to_le_bytes());
        h.update(text.as_bytes());
        for pair in h.finalize().chunks_exact(2) {
            if out.len() == dims {
                break;
            }
            let v = u16::from_le_bytes([pair[0], pair[1]]);
            out.push(f32::from(v) / 32_768.0 - 1.0);
        }
        counter += 1;
    }
    let norm = out.iter().map(|v| v * v).sum::<f32>().sqrt().max(f32::EPSILON);
    out.iter_mut().for_each(|v| *v /= norm);
    out
}

/// A digest of the conversation (roles and text), equal to `answer_words`' digest of the rendered transcript.
fn transcript_digest(messages: &[ChatMessage]) -> [u8; 32] {
    let mut h = Sha256::new();
    for m in messages {
        let role = match &m.role {
            Role::System => "system",
            Role::Developer => "developer",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
            Role::Function => "function",
            Role::Other(r) => r.as_str(),
        };
        h.update(role.as_bytes());
        h.update(b":");
        match &m.content {
            Some(MessageContent::Text(t)) => h.update(t.as_bytes()),
            Some(MessageContent::Parts(parts)) => {
                parts.iter().filter_map(|p| p.text.as_deref()).for_each(|t| h.update(t.as_bytes()))
            }
            None => {}
        }
        h.update(b"\n");
    }
    h.finalize().into()
}

/// Prompt tokens the mock reports: half of chitty-core's upper estimate, so the estimate is never an under-count.
fn reported_prompt_tokens(estimate: u64) -> u64 {
    estimate.div_ceil(2).max(1)
}

/// Joins words and says whether the cap cut them: one word is one token.
fn capped_text(words: &[&str], cap: Option<u32>) -> (String, u64, &'static str) {
    let cap = cap.map_or(usize::MAX, |c| c as usize);
    let used = &words[..words.len().min(cap)];
    let finish = if used.len() < words.len() { "length" } else { "stop" };
    (used.join(" "), used.len() as u64, finish)
}

/// The JSON a `response_format` of `json_schema` or `json_object` asks for, built from the answer's words.
fn structured_answer(req: &ChatCompletionRequest, words: &[&str]) -> Option<String> {
    let format = req.response_format.as_ref()?;
    let value = match format.get("type").and_then(serde_json::Value::as_str)? {
        "json_schema" => example_of(format.pointer("/json_schema/schema")?, words, 0),
        "json_object" => serde_json::json!({ "answer": words.join(" ") }),
        _ => return None,
    };
    Some(value.to_string())
}

/// A value that the common JSON Schema keywords accept (type, properties, items, enum, const), or `null`.
fn example_of(schema: &serde_json::Value, words: &[&str], depth: usize) -> serde_json::Value {
    use serde_json::Value;
    if depth > 8 {
        return Value::Null;
    }
    if let Some(value) = schema.get("const") {
        return value.clone();
    }
    if let Some(first) = schema.get("enum").and_then(Value::as_array).and_then(|e| e.first()) {
        return first.clone();
    }
    let kind = match schema.get("type") {
        Some(Value::Array(kinds)) => kinds.iter().find(|k| *k != "null").and_then(Value::as_str),
        Some(kind) => kind.as_str(),
        None if schema.get("properties").is_some() => Some("object"),
        None => None,
    };
    match kind {
        Some("object") => {
            let properties = schema.get("properties").and_then(Value::as_object);
            let object = properties
                .into_iter()
                .flatten()
                .enumerate()
                .map(|(i, (name, sub))| {
                    (name.clone(), example_of(sub, &words[i.min(words.len().saturating_sub(1))..], depth + 1))
                })
                .collect();
            Value::Object(object)
        }
        Some("array") => schema
            .get("items")
            .map_or(Value::Array(Vec::new()), |items| Value::Array(vec![example_of(items, words, depth + 1)])),
        Some("string") => Value::from(words.iter().take(3).copied().collect::<Vec<_>>().join(" ")),
        Some("integer") => Value::from(words.len() as u64),
        Some("number") => Value::from(words.len() as f64 / 2.0),
        Some("boolean") => Value::Bool(words.len().is_multiple_of(2)),
        _ => Value::Null,
    }
}

impl MockProvider {
    fn answer_chat(&self, req: &ChatCompletionRequest) -> ChatCompletionResponse {
        let digest = transcript_digest(&req.messages);
        let prompt_tokens = reported_prompt_tokens(tokens::estimate_chat_prompt(req));
        let last_is_user = req.messages.last().is_some_and(|m| m.role == Role::User);
        let wants_tool = req.tools.as_ref().is_some_and(|t| !t.is_empty())
            && last_is_user
            && req.tool_choice.as_ref().and_then(|c| c.as_str()) != Some("none");
        let (message, completion_tokens, finish) = if wants_tool {
            let name = req
                .tools
                .iter()
                .flatten()
                .find_map(|t| t.function.as_ref().map(|f| f.name.clone()))
                .unwrap_or_else(|| "tool".to_owned());
            let query: String =
                req.messages.last().map(|m| m.text_content()).unwrap_or_default().chars().take(40).collect();
            let arguments = serde_json::json!({ "query": query }).to_string();
            let call = ToolCall {
                id: format!("call_{}", hex::encode(&digest[..8])),
                kind: "function".to_owned(),
                function: FunctionCall { name, arguments, extra: Extra::new() },
                extra: Extra::new(),
            };
            let tokens = 8 + tokens::estimate_text(&call.function.arguments) / 2;
            let message = ChatMessage { content: None, tool_calls: Some(vec![call]), ..ChatMessage::assistant("") };
            (message, tokens.min(u64::from(req.output_cap().unwrap_or(u32::MAX))), "tool_calls")
        } else if let Some(json) = structured_answer(req, &words_from_digest(&digest)) {
            // Structured output: a value of the requested shape, whole (a cut JSON answer would be invalid).
            let n = tokens::estimate_text(&json);
            (ChatMessage::assistant(json), n, "stop")
        } else {
            let (text, n, finish) = capped_text(&words_from_digest(&digest), req.output_cap());
            (ChatMessage::assistant(text), n, finish)
        };
        ChatCompletionResponse {
            id: MockProvider::completion_id(&digest, "chatcmpl-mock"),
            object: "chat.completion".to_owned(),
            created: 1_700_000_000,
            model: req.model.clone(),
            choices: vec![ChatChoice {
                index: 0,
                message,
                finish_reason: Some(finish.to_owned()),
                logprobs: None,
                extra: Extra::new(),
            }],
            usage: Some(Usage::new(prompt_tokens, completion_tokens)),
            system_fingerprint: Some("fp_chitty_mock".to_owned()),
            extra: Extra::new(),
        }
    }

    /// The deterministic legacy completion of `request`.
    fn answer_completion(request: CompletionRequest) -> CompletionResponse {
        let prompts: Vec<String> = match &request.prompt {
            PromptInput::Text(t) => vec![t.clone()],
            PromptInput::Texts(v) => v.clone(),
            PromptInput::Tokens(t) => vec![format!("{t:?}")],
            PromptInput::TokenLists(v) => v.iter().map(|t| format!("{t:?}")).collect(),
        };
        let cap = Some(request.max_tokens.unwrap_or(16));
        // Like OpenAI's legacy endpoint, every `best_of` candidate is billed (each is the same text here).
        let candidates = u64::from(request.best_of.unwrap_or(1).max(1));
        let mut choices = Vec::new();
        let mut completion_tokens = 0;
        for (i, p) in prompts.iter().enumerate() {
            let (mut text, n, finish) = capped_text(&answer_words(p), cap);
            if request.echo == Some(true) {
                text = format!("{p}{text}");
            }
            completion_tokens += n * candidates;
            choices.push(CompletionChoice {
                text,
                index: u32::try_from(i).unwrap_or(u32::MAX),
                finish_reason: Some(finish.to_owned()),
                logprobs: None,
                extra: Extra::new(),
            });
        }
        let digest: [u8; 32] = Sha256::digest(prompts.concat().as_bytes()).into();
        let prompt_tokens = reported_prompt_tokens(tokens::estimate_completion_prompt(&request.prompt));
        CompletionResponse {
            id: MockProvider::completion_id(&digest, "cmpl-mock"),
            object: "text_completion".to_owned(),
            created: 1_700_000_000,
            model: request.model,
            choices,
            usage: Some(Usage::new(prompt_tokens, completion_tokens)),
            system_fingerprint: None,
            extra: Extra::new(),
        }
    }
}

#[async_trait]
impl Provider for MockProvider {
    fn name(&self) -> &str {
        &self.name
    }

    fn capabilities(&self) -> Capabilities {
        self.capabilities
    }

    async fn chat(&self, request: ChatCompletionRequest) -> Result<ChatCompletionResponse> {
        self.begin(Capability::Chat).await?;
        Ok(self.answer_chat(&request))
    }

    async fn chat_stream(&self, request: ChatCompletionRequest) -> Result<ChunkStream> {
        self.begin(Capability::ChatStream).await?;
        let response = self.answer_chat(&request);
        // One word per chunk, the way real upstreams trickle tokens; the usage chunk always ends the stream.
        let chunks = response.to_chunks(1, true).into_iter().map(Ok).collect::<Vec<_>>();
        Ok(Box::pin(futures::stream::iter(chunks)))
    }

    async fn completion(&self, request: CompletionRequest) -> Result<CompletionResponse> {
        self.begin(Capability::Completions).await?;
        Ok(MockProvider::answer_completion(request))
    }

    async fn completion_stream(&self, request: CompletionRequest) -> Result<CompletionChunkStream> {
        self.begin(Capability::CompletionsStream).await?;
        // A word per chunk and the usage chunk last, as for chat.
        let chunks = MockProvider::answer_completion(request).to_chunks(1, true);
        Ok(Box::pin(futures::stream::iter(chunks.into_iter().map(Ok))))
    }

    async fn embeddings(&self, request: EmbeddingRequest) -> Result<EmbeddingResponse> {
        self.begin(Capability::Embeddings).await?;
        let texts: Vec<String> = match &request.input {
            EmbeddingInput::Text(t) => vec![t.clone()],
            EmbeddingInput::Texts(v) => v.clone(),
            EmbeddingInput::Tokens(t) => vec![format!("{t:?}")],
            EmbeddingInput::TokenLists(v) => v.iter().map(|t| format!("{t:?}")).collect(),
        };
        let default_dims = match self.embedding {
            MockEmbedding::Hashed => EMBEDDING_DIMS,
            MockEmbedding::BagOfWords => BAG_OF_WORDS_DIMS,
        };
        let dims = request.dimensions.map_or(default_dims, |d| d as usize);
        // A client controls both numbers: refuse what would take more than 64 MiB of floats to build.
        if dims == 0 || dims > MAX_MOCK_DIMENSIONS || dims.saturating_mul(texts.len()) > MAX_MOCK_FLOATS {
            return Err(Error::invalid_request(
                format!(
                    "`dimensions` must be between 1 and {MAX_MOCK_DIMENSIONS}, and dimensions x inputs at most \
                     {MAX_MOCK_FLOATS} (got {dims} x {})",
                    texts.len()
                ),
                Some("dimensions"),
            ));
        }
        let data = texts
            .iter()
            .enumerate()
            .map(|(i, t)| Embedding {
                object: "embedding".to_owned(),
                index: u32::try_from(i).unwrap_or(u32::MAX),
                embedding: EmbeddingVector::Float(match self.embedding {
                    MockEmbedding::Hashed => embedding_for(t, dims),
                    MockEmbedding::BagOfWords => bag_of_words_embedding(t, dims),
                }),
                extra: Extra::new(),
            })
            .collect();
        let prompt_tokens = reported_prompt_tokens(tokens::estimate_embedding_input(&request.input));
        Ok(EmbeddingResponse {
            object: "list".to_owned(),
            data,
            model: request.model,
            usage: EmbeddingUsage { prompt_tokens, total_tokens: prompt_tokens, extra: Extra::new() },
            extra: Extra::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chitty_core::wire::ChunkAccumulator;
    use futures::StreamExt;

    fn request(text: &str) -> ChatCompletionRequest {
        ChatCompletionRequest { model: "m".into(), messages: vec![ChatMessage::user(text)], ..Default::default() }
    }

    #[tokio::test]
    async fn same_prompt_same_answer_and_stream_matches() {
        let p = MockProvider::new("mock");
        let a = p.chat(request("hello there")).await.unwrap();
        let b = p.chat(request("hello there")).await.unwrap();
        let c = p.chat(request("something else")).await.unwrap();
        assert_eq!(a, b);
        assert_ne!(a.choices[0].message.text_content(), c.choices[0].message.text_content());
        let mut stream = p.chat_stream(request("hello there")).await.unwrap();
        let mut acc = ChunkAccumulator::default();
        let mut content_chunks = 0;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.unwrap();
            content_chunks += usize::from(chunk.choices.first().is_some_and(|c| c.delta.content.is_some()));
            acc.push(&chunk);
        }
        assert!(content_chunks > 3, "streams trickle word by word");
        assert_eq!(acc.usage(), a.usage.as_ref());
        let streamed = acc.finish();
        assert_eq!(streamed.choices[0].message.text_content(), a.choices[0].message.text_content());
    }

    #[tokio::test]
    async fn caps_usage_and_failures() {
        let p = MockProvider::new("mock");
        let mut req = request("a prompt long enough to produce words");
        req.max_tokens = Some(2);
        let r = p.chat(req.clone()).await.unwrap();
        assert_eq!(r.usage.as_ref().unwrap().completion_tokens, 2);
        assert_eq!(r.choices[0].finish_reason.as_deref(), Some("length"));
        assert!(r.usage.unwrap().prompt_tokens <= tokens::estimate_chat_prompt(&req));
        p.fail_next(503, "overloaded");
        let err = p.chat(req.clone()).await.unwrap_err();
        assert!(matches!(err, Error::Upstream { status: Some(503), .. }), "{err:?}");
        assert!(p.chat(req).await.is_ok());
        assert_eq!(p.calls(), 3);
    }

    #[tokio::test]
    async fn embeddings_are_deterministic_unit_vectors() {
        let p = MockProvider::new("mock");
        let req = EmbeddingRequest {
            model: "e".into(),
            input: EmbeddingInput::Texts(vec!["a".into(), "b".into()]),
            ..Default::default()
        };
        let r = p.embeddings(req.clone()).await.unwrap();
        assert_eq!(r.data.len(), 2);
        let v = r.data[0].embedding.to_floats().unwrap();
        assert_eq!(v.len(), 8);
        assert!((v.iter().map(|x| x * x).sum::<f32>() - 1.0).abs() < 1e-4);
        assert_eq!(r, p.embeddings(req).await.unwrap());
        let unsupported = MockProvider::new("chat-only").with_capabilities(Capabilities::of(&[Capability::Chat]));
        assert!(matches!(
            unsupported.embeddings(EmbeddingRequest::default()).await,
            Err(Error::Unsupported { capability: Capability::Embeddings, .. })
        ));
    }

    fn cosine(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    #[tokio::test]
    async fn bag_of_words_puts_paraphrases_close_and_other_topics_apart() {
        let p = MockProvider::new("mock").with_embedding(MockEmbedding::BagOfWords);
        let req = EmbeddingRequest {
            model: "e".into(),
            input: EmbeddingInput::Texts(vec![
                "What is the capital city of France?".into(),
                "Please tell me: capital city of France".into(),
                "How do I reverse a linked list in Rust?".into(),
                "".into(),
            ]),
            ..Default::default()
        };
        let r = p.embeddings(req).await.unwrap();
        let v: Vec<Vec<f32>> = r.data.iter().map(|d| d.embedding.to_floats().unwrap()).collect();
        assert_eq!(v[0].len(), 256);
        for x in &v {
            assert!((x.iter().map(|a| a * a).sum::<f32>() - 1.0).abs() < 1e-4, "unit vectors, the empty text too");
        }
        assert!(cosine(&v[0], &v[1]) > 0.99, "a paraphrase: {}", cosine(&v[0], &v[1]));
        assert!(cosine(&v[0], &v[2]) < 0.5, "another topic: {}", cosine(&v[0], &v[2]));
        // The default embedding is unchanged: unrelated vectors for the same two paraphrases.
        let hashed = (
            embedding_for("What is the capital city of France?", 8),
            embedding_for("Please tell me: capital city of France", 8),
        );
        assert!(cosine(&hashed.0, &hashed.1) < 0.99);
        assert_eq!(bag_of_words_embedding("Cats and dogs", 64), bag_of_words_embedding("dog, cat", 64));
    }

    #[test]
    fn content_parts_are_read() {
        let m: ChatMessage = serde_json::from_value(serde_json::json!({
            "role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "image_url", "image_url": {"url": "x"}}]
        }))
        .unwrap();
        assert!(matches!(m.content, Some(MessageContent::Parts(_))));
        assert_eq!(m.text_content(), "hi");
    }
}
