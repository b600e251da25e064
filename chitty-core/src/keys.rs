//! Cache keys and cache policy.
//!
//! A key is SHA-256 over a canonical form of everything that changes the answer (scope, endpoint, model,
//! messages, sampling parameters, tools, `response_format`, unknown fields …) and nothing that does not
//! (`stream`, `stream_options`, `user`). So a streamed request is answered from a non-streamed entry and
//! back. Canonical means: fields in a fixed order and unknown fields in sorted order, so two JSON bodies
//! that differ only in key order or whitespace get the same key. The hashed form is a compact length-prefixed
//! binary encoding (not JSON text, whose escaping cost more than the hash), versioned in its first bytes.

use std::fmt;

use serde::Serialize;

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
    /// Every request by exact match, as `Always`; on an exact miss, the nearest earlier prompt of the same
    /// tenant, model, parameters and tools above the model's `semantic_threshold` (chat only).
    Semantic,
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
            CachePolicy::Always | CachePolicy::Semantic => true,
            CachePolicy::Deterministic => n.unwrap_or(1) == 1 && (temperature == Some(0.0) || seed.is_some()),
        }
    }
}

/// Version of the canonical form; bump it whenever the bytes hashed for a request change, so old entries
/// are never read as new ones. v2: a length-prefixed binary encoding instead of JSON text (no escaping).
const KEY_DOMAIN: &[u8] = b"chitty-cache-v2\0";

fn key_of(scope: CacheScope<'_>, endpoint: Endpoint, body: &impl Serialize) -> CacheKey {
    let mut encoder = canonical::Encoder::new();
    encoder.raw(KEY_DOMAIN);
    let (kind, name) = match scope {
        CacheScope::Tenant(t) => ("tenant", t),
        CacheScope::Shared(g) => ("shared", g),
    };
    // Every string is length-prefixed: no two distinct (scope, endpoint, body) triples share an encoding.
    encoder.str(kind);
    encoder.str(name);
    encoder.str(endpoint.as_str());
    // Encoding plain data cannot fail: only a `Serialize` impl reporting a custom error could, and none here does.
    let _ = body.serialize(&mut encoder);
    CacheKey(encoder.finish())
}

/// What a chat answer depends on. `None` fields are left out (their names keep the encoding unambiguous).
#[derive(Serialize)]
struct ChatKeyView<'a> {
    model: &'a str,
    messages: MessagesView<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    n: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    seed: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stop: Option<&'a StopSequences>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_completion_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    presence_penalty: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    frequency_penalty: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    logit_bias: Option<&'a Extra>,
    #[serde(skip_serializing_if = "Option::is_none")]
    logprobs: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_logprobs: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tools: Option<&'a [Tool]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<&'a serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parallel_tool_calls: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_format: Option<&'a serde_json::Value>,
    extra: &'a Extra,
}

/// The messages a key covers: all of them, or all but one (encoded as if that one had been removed).
struct MessagesView<'a> {
    messages: &'a [ChatMessage],
    skip: Option<usize>,
}

impl Serialize for MessagesView<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let len = self.messages.len() - usize::from(self.skip.is_some_and(|i| i < self.messages.len()));
        let mut seq = serializer.serialize_seq(Some(len))?;
        for (index, message) in self.messages.iter().enumerate() {
            if Some(index) != self.skip {
                seq.serialize_element(message)?;
            }
        }
        seq.end()
    }
}

/// The key of a chat completion request.
pub fn chat_key(scope: CacheScope<'_>, req: &ChatCompletionRequest) -> CacheKey {
    chat_key_skipping(scope, req, None)
}

/// The key of `req` with the message at `skip` left out, as if it had been removed (no copy of the request).
pub(crate) fn chat_key_skipping(scope: CacheScope<'_>, req: &ChatCompletionRequest, skip: Option<usize>) -> CacheKey {
    let view = ChatKeyView {
        model: &req.model,
        messages: MessagesView { messages: &req.messages, skip },
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
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    n: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    seed: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stop: Option<&'a StopSequences>,
    #[serde(skip_serializing_if = "Option::is_none")]
    echo: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    suffix: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
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
    #[serde(skip_serializing_if = "Option::is_none")]
    dimensions: Option<u32>,
    extra: &'a Extra,
}

/// The key of an embeddings request. `encoding_format` is left out: entries hold floats and are
/// re-encoded for each client.
pub fn embedding_key(scope: CacheScope<'_>, req: &EmbeddingRequest) -> CacheKey {
    let view = EmbeddingKeyView { model: &req.model, input: &req.input, dimensions: req.dimensions, extra: &req.extra };
    key_of(scope, Endpoint::Embeddings, &view)
}

/// The canonical form hashed into a key: a compact, self-delimiting binary encoding of serde's data model.
///
/// JSON text would do, but writing it escapes every string byte by byte, which costs more than hashing. Here
/// each value starts with a tag byte; strings and bytes carry their length (unsigned LEB128) before their
/// raw bytes; integers are LEB128 too, tagged by sign rather than Rust type (`5u32` and `5i64` are the same
/// JSON number; a negative `n` is stored as `-n - 1`); floats are their 8 little-endian IEEE bytes;
/// sequences and maps have end tags. So two different values never encode to the same bytes. Map keys come
/// in the order the map yields them (`Extra` is sorted), struct fields in declaration order.
mod canonical {
    use std::fmt;

    use serde::Serialize;
    use serde::ser::{self, SerializeMap, SerializeSeq, SerializeStruct, SerializeStructVariant};
    use serde::ser::{SerializeTuple, SerializeTupleStruct, SerializeTupleVariant};
    use sha2::{Digest, Sha256};

    const NULL: u8 = b'n';
    const TRUE: u8 = b't';
    const FALSE: u8 = b'f';
    const UINT: u8 = b'u';
    const NEG_INT: u8 = b'i';
    const FLOAT: u8 = b'd';
    const STR: u8 = b's';
    const BYTES: u8 = b'b';
    const SEQ: u8 = b'[';
    const SEQ_END: u8 = b']';
    const MAP: u8 = b'{';
    const MAP_END: u8 = b'}';

    /// Bytes gathered before one call into the hasher; longer writes (long prompts) go to it directly.
    const BUFFER: usize = 512;

    /// Encodes into SHA-256 through a stack buffer: no allocation, few hasher calls.
    pub(super) struct Encoder {
        sha: Sha256,
        buf: [u8; BUFFER],
        len: usize,
    }

    impl Encoder {
        pub(super) fn new() -> Encoder {
            Encoder { sha: Sha256::new(), buf: [0; BUFFER], len: 0 }
        }

        /// Appends bytes as they are (no tag).
        pub(super) fn raw(&mut self, bytes: &[u8]) {
            if bytes.len() > BUFFER - self.len {
                self.flush();
                if bytes.len() >= BUFFER {
                    self.sha.update(bytes);
                    return;
                }
            }
            self.buf[self.len..self.len + bytes.len()].copy_from_slice(bytes);
            self.len += bytes.len();
        }

        fn flush(&mut self) {
            self.sha.update(&self.buf[..self.len]);
            self.len = 0;
        }

        /// A tag and an unsigned LEB128 number: one byte for lengths and values below 128.
        fn tagged(&mut self, tag: u8, mut n: u64) {
            let mut item = [tag; 11];
            let mut len = 1;
            while n >= 0x80 {
                item[len] = (n as u8) | 0x80;
                n >>= 7;
                len += 1;
            }
            item[len] = n as u8;
            self.raw(&item[..=len]);
        }

        fn tag(&mut self, tag: u8) {
            self.raw(&[tag]);
        }

        fn bytes(&mut self, tag: u8, bytes: &[u8]) {
            self.tagged(tag, bytes.len() as u64);
            self.raw(bytes);
        }

        /// Appends a length-prefixed string.
        pub(super) fn str(&mut self, s: &str) {
            self.bytes(STR, s.as_bytes());
        }

        fn uint(&mut self, v: u64) {
            self.tagged(UINT, v);
        }

        fn int(&mut self, v: i64) {
            match u64::try_from(v) {
                Ok(u) => self.uint(u),
                // -1 → 0, -2 → 1, …: a negative number's magnitude minus one.
                Err(_) => self.tagged(NEG_INT, !v as u64),
            }
        }

        /// The SHA-256 of everything encoded.
        pub(super) fn finish(mut self) -> [u8; 32] {
            self.flush();
            self.sha.finalize().into()
        }
    }

    /// Never produced by the wire types; a `Serialize` impl may report one through [`ser::Error::custom`].
    #[derive(Debug)]
    pub(super) struct EncodeError(String);

    impl fmt::Display for EncodeError {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(&self.0)
        }
    }

    impl std::error::Error for EncodeError {}

    impl ser::Error for EncodeError {
        fn custom<T: fmt::Display>(msg: T) -> Self {
            EncodeError(msg.to_string())
        }
    }

    type Result<T = ()> = std::result::Result<T, EncodeError>;

    impl ser::Serializer for &mut Encoder {
        type Ok = ();
        type Error = EncodeError;
        type SerializeSeq = Self;
        type SerializeTuple = Self;
        type SerializeTupleStruct = Self;
        type SerializeTupleVariant = Self;
        type SerializeMap = Self;
        type SerializeStruct = Self;
        type SerializeStructVariant = Self;

        fn serialize_bool(self, v: bool) -> Result {
            self.tag(if v { TRUE } else { FALSE });
            Ok(())
        }
        fn serialize_i8(self, v: i8) -> Result {
            self.serialize_i64(v.into())
        }
        fn serialize_i16(self, v: i16) -> Result {
            self.serialize_i64(v.into())
        }
        fn serialize_i32(self, v: i32) -> Result {
            self.serialize_i64(v.into())
        }
        fn serialize_i64(self, v: i64) -> Result {
            self.int(v);
            Ok(())
        }
        fn serialize_u8(self, v: u8) -> Result {
            self.serialize_u64(v.into())
        }
        fn serialize_u16(self, v: u16) -> Result {
            self.serialize_u64(v.into())
        }
        fn serialize_u32(self, v: u32) -> Result {
            self.serialize_u64(v.into())
        }
        fn serialize_u64(self, v: u64) -> Result {
            self.uint(v);
            Ok(())
        }
        fn serialize_f32(self, v: f32) -> Result {
            self.serialize_f64(v.into())
        }
        fn serialize_f64(self, v: f64) -> Result {
            let mut item = [FLOAT; 9];
            item[1..].copy_from_slice(&v.to_bits().to_le_bytes());
            self.raw(&item);
            Ok(())
        }
        fn serialize_char(self, v: char) -> Result {
            self.str(v.encode_utf8(&mut [0; 4]));
            Ok(())
        }
        fn serialize_str(self, v: &str) -> Result {
            self.str(v);
            Ok(())
        }
        fn serialize_bytes(self, v: &[u8]) -> Result {
            self.bytes(BYTES, v);
            Ok(())
        }
        fn serialize_none(self) -> Result {
            self.tag(NULL);
            Ok(())
        }
        fn serialize_some<T: ?Sized + Serialize>(self, value: &T) -> Result {
            value.serialize(self)
        }
        fn serialize_unit(self) -> Result {
            self.serialize_none()
        }
        fn serialize_unit_struct(self, _name: &'static str) -> Result {
            self.serialize_none()
        }
        fn serialize_unit_variant(self, _name: &'static str, _index: u32, variant: &'static str) -> Result {
            self.serialize_str(variant)
        }
        fn serialize_newtype_struct<T: ?Sized + Serialize>(self, _name: &'static str, value: &T) -> Result {
            value.serialize(self)
        }
        fn serialize_newtype_variant<T: ?Sized + Serialize>(
            self,
            _name: &'static str,
            _index: u32,
            variant: &'static str,
            value: &T,
        ) -> Result {
            self.tag(MAP);
            self.str(variant);
            value.serialize(&mut *self)?;
            self.tag(MAP_END);
            Ok(())
        }
        fn serialize_seq(self, _len: Option<usize>) -> Result<Self> {
            self.tag(SEQ);
            Ok(self)
        }
        fn serialize_tuple(self, len: usize) -> Result<Self> {
            self.serialize_seq(Some(len))
        }
        fn serialize_tuple_struct(self, _name: &'static str, len: usize) -> Result<Self> {
            self.serialize_seq(Some(len))
        }
        fn serialize_tuple_variant(
            self,
            _name: &'static str,
            _index: u32,
            variant: &'static str,
            _len: usize,
        ) -> Result<Self> {
            self.tag(MAP);
            self.str(variant);
            self.tag(SEQ);
            Ok(self)
        }
        fn serialize_map(self, _len: Option<usize>) -> Result<Self> {
            self.tag(MAP);
            Ok(self)
        }
        fn serialize_struct(self, _name: &'static str, _len: usize) -> Result<Self> {
            self.tag(MAP);
            Ok(self)
        }
        fn serialize_struct_variant(
            self,
            _name: &'static str,
            _index: u32,
            variant: &'static str,
            _len: usize,
        ) -> Result<Self> {
            self.tag(MAP);
            self.str(variant);
            self.tag(MAP);
            Ok(self)
        }
    }

    impl SerializeSeq for &mut Encoder {
        type Ok = ();
        type Error = EncodeError;
        fn serialize_element<T: ?Sized + Serialize>(&mut self, value: &T) -> Result {
            value.serialize(&mut **self)
        }
        fn end(self) -> Result {
            self.tag(SEQ_END);
            Ok(())
        }
    }

    impl SerializeTuple for &mut Encoder {
        type Ok = ();
        type Error = EncodeError;
        fn serialize_element<T: ?Sized + Serialize>(&mut self, value: &T) -> Result {
            value.serialize(&mut **self)
        }
        fn end(self) -> Result {
            self.tag(SEQ_END);
            Ok(())
        }
    }

    impl SerializeTupleStruct for &mut Encoder {
        type Ok = ();
        type Error = EncodeError;
        fn serialize_field<T: ?Sized + Serialize>(&mut self, value: &T) -> Result {
            value.serialize(&mut **self)
        }
        fn end(self) -> Result {
            self.tag(SEQ_END);
            Ok(())
        }
    }

    impl SerializeTupleVariant for &mut Encoder {
        type Ok = ();
        type Error = EncodeError;
        fn serialize_field<T: ?Sized + Serialize>(&mut self, value: &T) -> Result {
            value.serialize(&mut **self)
        }
        fn end(self) -> Result {
            self.tag(SEQ_END);
            self.tag(MAP_END);
            Ok(())
        }
    }

    impl SerializeMap for &mut Encoder {
        type Ok = ();
        type Error = EncodeError;
        fn serialize_key<T: ?Sized + Serialize>(&mut self, key: &T) -> Result {
            key.serialize(&mut **self)
        }
        fn serialize_value<T: ?Sized + Serialize>(&mut self, value: &T) -> Result {
            value.serialize(&mut **self)
        }
        fn end(self) -> Result {
            self.tag(MAP_END);
            Ok(())
        }
    }

    impl SerializeStruct for &mut Encoder {
        type Ok = ();
        type Error = EncodeError;
        fn serialize_field<T: ?Sized + Serialize>(&mut self, key: &'static str, value: &T) -> Result {
            self.str(key);
            value.serialize(&mut **self)
        }
        fn end(self) -> Result {
            self.tag(MAP_END);
            Ok(())
        }
    }

    impl SerializeStructVariant for &mut Encoder {
        type Ok = ();
        type Error = EncodeError;
        fn serialize_field<T: ?Sized + Serialize>(&mut self, key: &'static str, value: &T) -> Result {
            self.str(key);
            value.serialize(&mut **self)
        }
        fn end(self) -> Result {
            self.tag(MAP_END);
            self.tag(MAP_END);
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn chat(v: serde_json::Value) -> ChatCompletionRequest {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn skipping_a_message_keys_as_if_it_were_removed() {
        let whole = chat(json!({"model": "m", "temperature": 0, "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": "second"}]}));
        let s = CacheScope::Tenant("t1");
        for index in 0..whole.messages.len() {
            let mut removed = whole.clone();
            removed.messages.remove(index);
            assert_eq!(chat_key_skipping(s, &whole, Some(index)), chat_key(s, &removed), "message {index}");
        }
        assert_eq!(chat_key_skipping(s, &whole, None), chat_key(s, &whole));
        assert_eq!(chat_key_skipping(s, &whole, Some(9)), chat_key(s, &whole), "an index past the end skips nothing");
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
    fn the_canonical_form_is_pinned() {
        // Changing the bytes hashed for a request must come with a new KEY_DOMAIN version: update this value then.
        // The value was cross-checked with an independent implementation of the encoding documented on `canonical`.
        let req = chat(json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "temperature": 0,
                              "metadata": {"b": [1, -2, 0.5, null, true], "a": "x"}}));
        assert_eq!(
            chat_key(CacheScope::Tenant("t1"), &req).to_hex(),
            "5a6ff438a59199898e5346f20d2f7a1d7ee989b737525b0c5af145275b0a5554"
        );
    }

    #[test]
    fn framing_cannot_be_forged_by_content() {
        let s = CacheScope::Tenant("t");
        let two = |a: &str, b: &str| {
            chat(json!({"model": "m", "messages": [{"role": "user", "content": a}, {"role": "user", "content": b}]}))
        };
        assert_ne!(chat_key(s, &two("ab", "c")), chat_key(s, &two("a", "bc")));
        let one = chat(json!({"model": "m", "messages": [{"role": "user", "content": "abc"}]}));
        assert_ne!(chat_key(s, &two("ab", "c")), chat_key(s, &one));
        let req = two("a", "b");
        assert_ne!(chat_key(CacheScope::Tenant("a\0b"), &req), chat_key(CacheScope::Tenant("a"), &req));
        assert_ne!(chat_key(CacheScope::Tenant("g"), &req), chat_key(CacheScope::Shared("g"), &req));
        let with = |extra: serde_json::Value| {
            let mut v = json!({"model": "m", "messages": []});
            v["x"] = extra;
            chat_key(s, &chat(v))
        };
        assert_ne!(with(json!("1")), with(json!(1)), "a string is not a number");
        assert_ne!(with(json!(1)), with(json!(-1)));
        assert_ne!(with(json!([[1], [2]])), with(json!([[1, 2]])));
        assert_ne!(with(json!({"a": {"b": 1}})), with(json!({"a": {}, "b": 1})));
        assert_ne!(with(json!(null)), with(json!([])));
    }

    proptest::proptest! {
        /// Two requests share a key exactly when their unknown fields are equal JSON values.
        #[test]
        fn keys_are_equal_iff_extra_fields_are(a in extra_fields(), b in extra_fields()) {
            let with = |extra: &Extra| {
                let mut req = chat(json!({"model": "m", "messages": [{"role": "user", "content": "q"}]}));
                req.extra = extra.clone();
                chat_key(CacheScope::Tenant("t"), &req)
            };
            proptest::prop_assert_eq!(with(&a) == with(&b), a == b);
            proptest::prop_assert_eq!(with(&a), with(&a));
        }
    }

    fn extra_fields() -> impl proptest::strategy::Strategy<Value = Extra> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            (-3i64..3).prop_map(serde_json::Value::from),
            prop_oneof![Just(0.5f64), Just(1.0)].prop_map(serde_json::Value::from),
            "[ab]{0,2}".prop_map(serde_json::Value::from),
        ];
        let value = leaf.prop_recursive(2, 8, 3, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..3).prop_map(serde_json::Value::from),
                prop::collection::btree_map("[ab]{1,2}", inner, 0..3)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        });
        prop::collection::btree_map("[ab]{1,2}", value, 0..3).prop_map(|m| m.into_iter().collect())
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
