//! Cache keys and cache policy.
//!
//! A key is SHA-256 over a canonical form of everything that changes the answer (scope, endpoint, model,
//! messages, sampling parameters, tools, `response_format`, unknown fields …) and nothing that does not
//! (`stream`, `stream_options`, `user`). So a streamed request is answered from a non-streamed entry and
//! back. Canonical means: fields in a fixed order and unknown fields in sorted order, so two JSON bodies
//! that differ only in key order or whitespace get the same key.

use std::fmt;
use std::io::Write as _;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::events::Endpoint;
use crate::wire::{
    ChatCompletionRequest, ChatMessage, CompletionRequest, EmbeddingRequest, Extra, PromptInput, StopSequences, Tool,
};

/// A 32-byte cache key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CacheKey(pub [u8; 32]);

impl CacheKey {
    /// Lower-case hex, 64 characters.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CacheKey({})", self.to_hex())
    }
}

impl fmt::Display for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// Who may share an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheScope<'a> {
    /// Only the named tenant (the default).
    Tenant(&'a str),
    /// Every tenant configured into the named sharing group.
    Shared(&'a str),
}

/// When a model's answers are cached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CachePolicy {
    /// Never.
    Off,
    /// Only requests whose answer does not depend on sampling: `temperature` 0 or a `seed`, with one
    /// choice. Embeddings always qualify.
    #[default]
    Deterministic,
    /// Every request.
    Always,
}

/// A client's `Cache-Control` request directive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CacheDirective {
    /// Use the model's policy.
    #[default]
    Default,
    /// Do not answer from the cache, but store the fresh answer.
    NoCache,
    /// Neither read nor write the cache.
    NoStore,
}

impl CacheDirective {
    /// Reads a `Cache-Control` header value (`no-store` wins over `no-cache`).
    pub fn from_header(value: &str) -> CacheDirective {
        let mut out = CacheDirective::Default;
        for token in value.split(',').map(|t| t.trim().to_ascii_lowercase()) {
            match token.as_str() {
                "no-store" => return CacheDirective::NoStore,
                "no-cache" => out = CacheDirective::NoCache,
                _ => {}
            }
        }
        out
    }

    /// Whether the cache may be read.
    pub fn may_read(self) -> bool {
        self == CacheDirective::Default
    }

    /// Whether the cache may be written.
    pub fn may_write(self) -> bool {
        self != CacheDirective::NoStore
    }
}

impl CachePolicy {
    /// Whether a chat request may be cached under this policy.
    pub fn allows_chat(self, req: &ChatCompletionRequest) -> bool {
        self.allows_sampling(req.temperature, req.seed, req.n)
    }

    /// Whether a legacy completion may be cached under this policy.
    pub fn allows_completion(self, req: &CompletionRequest) -> bool {
        self.allows_sampling(req.temperature, req.seed, req.n)
    }

    /// Whether embeddings may be cached under this policy.
    pub fn allows_embeddings(self) -> bool {
        self != CachePolicy::Off
    }

    fn allows_sampling(self, temperature: Option<f64>, seed: Option<i64>, n: Option<u32>) -> bool {
        match self {
            CachePolicy::Off => false,
            CachePolicy::Always => true,
            CachePolicy::Deterministic => n.unwrap_or(1) == 1 && (temperature == Some(0.0) || seed.is_some()),
        }
    }
}

/// Feeds serialized bytes straight into the hasher, so deriving a key allocates nothing.
struct HashWriter(Sha256);

impl std::io::Write for HashWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn key_of(scope: CacheScope<'_>, endpoint: Endpoint, body: &impl Serialize) -> CacheKey {
    let mut w = HashWriter(Sha256::new());
    let (kind, name) = match scope {
        CacheScope::Tenant(t) => ("tenant", t),
        CacheScope::Shared(g) => ("shared", g),
    };
    // Length-prefixed fields: no two distinct (scope, endpoint) pairs produce the same byte string.
    let _ = write!(w, "chitty-cache-v1\0{kind}\0{}:{name}\0{}\0", name.len(), endpoint.as_str());
    // Serializing plain data into a hasher cannot fail: no maps with non-string keys, no I/O errors.
    let _ = serde_json::to_writer(&mut w, body);
    CacheKey(w.0.finalize().into())
}

#[derive(Serialize)]
struct ChatKeyView<'a> {
    model: &'a str,
    messages: &'a [ChatMessage],
    temperature: Option<f64>,
    top_p: Option<f64>,
    n: Option<u32>,
    seed: Option<i64>,
    stop: Option<&'a StopSequences>,
    max_tokens: Option<u32>,
    max_completion_tokens: Option<u32>,
    presence_penalty: Option<f64>,
    frequency_penalty: Option<f64>,
    logit_bias: Option<&'a Extra>,
    logprobs: Option<bool>,
    top_logprobs: Option<u32>,
    tools: Option<&'a [Tool]>,
    tool_choice: Option<&'a serde_json::Value>,
    parallel_tool_calls: Option<bool>,
    response_format: Option<&'a serde_json::Value>,
    extra: &'a Extra,
}

/// The key of a chat completion request.
pub fn chat_key(scope: CacheScope<'_>, req: &ChatCompletionRequest) -> CacheKey {
    let view = ChatKeyView {
        model: &req.model,
        messages: &req.messages,
        temperature: req.temperature,
        top_p: req.top_p,
        n: req.n,
        seed: req.seed,
        stop: req.stop.as_ref(),
        max_tokens: req.max_tokens,
        max_completion_tokens: req.max_completion_tokens,
        presence_penalty: req.presence_penalty,
        frequency_penalty: req.frequency_penalty,
        logit_bias: req.logit_bias.as_ref(),
        logprobs: req.logprobs,
        top_logprobs: req.top_logprobs,
        tools: req.tools.as_deref(),
        tool_choice: req.tool_choice.as_ref(),
        parallel_tool_calls: req.parallel_tool_calls,
        response_format: req.response_format.as_ref(),
        extra: &req.extra,
    };
    key_of(scope, Endpoint::ChatCompletions, &view)
}

#[derive(Serialize)]
struct CompletionKeyView<'a> {
    model: &'a str,
    prompt: &'a PromptInput,
    max_tokens: Option<u32>,
    temperature: Option<f64>,
    top_p: Option<f64>,
    n: Option<u32>,
    seed: Option<i64>,
    stop: Option<&'a StopSequences>,
    echo: Option<bool>,
    suffix: Option<&'a str>,
    logprobs: Option<u32>,
    extra: &'a Extra,
}

/// The key of a legacy completion request.
pub fn completion_key(scope: CacheScope<'_>, req: &CompletionRequest) -> CacheKey {
    let view = CompletionKeyView {
        model: &req.model,
        prompt: &req.prompt,
        max_tokens: req.max_tokens,
        temperature: req.temperature,
        top_p: req.top_p,
        n: req.n,
        seed: req.seed,
        stop: req.stop.as_ref(),
        echo: req.echo,
        suffix: req.suffix.as_deref(),
        logprobs: req.logprobs,
        extra: &req.extra,
    };
    key_of(scope, Endpoint::Completions, &view)
}

#[derive(Serialize)]
struct EmbeddingKeyView<'a> {
    model: &'a str,
    input: &'a crate::wire::EmbeddingInput,
    dimensions: Option<u32>,
    extra: &'a Extra,
}

/// The key of an embeddings request. `encoding_format` is left out: entries hold floats and are
/// re-encoded for each client.
pub fn embedding_key(scope: CacheScope<'_>, req: &EmbeddingRequest) -> CacheKey {
    let view = EmbeddingKeyView { model: &req.model, input: &req.input, dimensions: req.dimensions, extra: &req.extra };
    key_of(scope, Endpoint::Embeddings, &view)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn chat(v: serde_json::Value) -> ChatCompletionRequest {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn stream_and_user_do_not_change_the_key() {
        let a = chat(json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "temperature": 0}));
        let b = chat(json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "temperature": 0,
                            "stream": true, "stream_options": {"include_usage": true}, "user": "alice"}));
        let s = CacheScope::Tenant("t1");
        assert_eq!(chat_key(s, &a), chat_key(s, &b));
    }

    #[test]
    fn everything_that_changes_the_answer_changes_the_key() {
        let base = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "temperature": 0});
        let s = CacheScope::Tenant("t1");
        let k0 = chat_key(s, &chat(base.clone()));
        let variants = [
            ("model", json!("m2")),
            ("messages", json!([{"role": "user", "content": "hi!"}])),
            ("temperature", json!(0.5)),
            ("top_p", json!(0.9)),
            ("seed", json!(7)),
            ("stop", json!(["\n"])),
            ("max_tokens", json!(5)),
            ("max_completion_tokens", json!(5)),
            ("tools", json!([{"type": "function", "function": {"name": "f"}}])),
            ("tool_choice", json!("required")),
            ("response_format", json!({"type": "json_object"})),
            ("logprobs", json!(true)),
            ("n", json!(2)),
            ("reasoning_effort", json!("high")),
        ];
        for (field, value) in variants {
            let mut v = base.clone();
            v[field] = value;
            assert_ne!(chat_key(s, &chat(v)), k0, "{field} must change the key");
        }
        assert_ne!(chat_key(CacheScope::Tenant("t2"), &chat(base.clone())), k0, "tenant scope");
        assert_ne!(chat_key(CacheScope::Shared("t1"), &chat(base)), k0, "shared vs tenant scope");
    }

    #[test]
    fn key_order_and_whitespace_do_not_matter() {
        let a: ChatCompletionRequest = serde_json::from_str(
            r#"{"model":"m","messages":[{"role":"user","content":"x"}],"foo":1,"bar":{"b":1,"a":2}}"#,
        )
        .unwrap();
        let b: ChatCompletionRequest = serde_json::from_str(
            r#"{ "bar": {"a": 2, "b": 1}, "foo": 1, "messages": [ {"content": "x", "role": "user"} ], "model": "m" }"#,
        )
        .unwrap();
        assert_eq!(chat_key(CacheScope::Tenant("t"), &a), chat_key(CacheScope::Tenant("t"), &b));
    }

    #[test]
    fn embeddings_key_ignores_encoding_format() {
        let a: EmbeddingRequest = serde_json::from_value(json!({"model": "e", "input": "x"})).unwrap();
        let b: EmbeddingRequest =
            serde_json::from_value(json!({"model": "e", "input": "x", "encoding_format": "base64"})).unwrap();
        let c: EmbeddingRequest = serde_json::from_value(json!({"model": "e", "input": ["x"]})).unwrap();
        let s = CacheScope::Tenant("t");
        assert_eq!(embedding_key(s, &a), embedding_key(s, &b));
        assert_ne!(embedding_key(s, &a), embedding_key(s, &c));
    }

    #[test]
    fn policy_and_directives() {
        let det = chat(json!({"model": "m", "messages": [], "temperature": 0}));
        let seeded = chat(json!({"model": "m", "messages": [], "seed": 1}));
        let random = chat(json!({"model": "m", "messages": [], "temperature": 0.7}));
        let many = chat(json!({"model": "m", "messages": [], "temperature": 0, "n": 3}));
        assert!(CachePolicy::Deterministic.allows_chat(&det));
        assert!(CachePolicy::Deterministic.allows_chat(&seeded));
        assert!(!CachePolicy::Deterministic.allows_chat(&random));
        assert!(!CachePolicy::Deterministic.allows_chat(&many));
        assert!(CachePolicy::Always.allows_chat(&random));
        assert!(!CachePolicy::Off.allows_chat(&det));
        assert_eq!(CacheDirective::from_header("no-cache"), CacheDirective::NoCache);
        assert_eq!(CacheDirective::from_header("No-Cache, no-store"), CacheDirective::NoStore);
        assert_eq!(CacheDirective::from_header("max-age=0"), CacheDirective::Default);
        assert!(!CacheDirective::NoCache.may_read() && CacheDirective::NoCache.may_write());
        assert!(!CacheDirective::NoStore.may_write());
    }
}
