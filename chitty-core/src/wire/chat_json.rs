//! [`ChatCompletionJson`]: a chat completion kept as the JSON it arrived in.

use std::fmt;

use bytes::Bytes;
use serde::de::{self, Deserialize, Deserializer, SeqAccess, Visitor};

use super::{ChatCompletionResponse, Usage};

/// A chat completion as JSON bytes, checked for a chat completion's shape, with its usage read once.
///
/// The HTTP server answers with these bytes as they came from the upstream or the cache, instead of parsing
/// them into a [`ChatCompletionResponse`] and encoding that again (about a tenth of a proxied request's CPU).
///
/// ```
/// use chitty_core::wire::ChatCompletionJson;
///
/// let body = br#"{"id":"c1","object":"chat.completion","created":1,"model":"m","service_tier":"default",
///   "choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],
///   "usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}"#;
/// let answer = ChatCompletionJson::parse(bytes::Bytes::from_static(body))?;
/// assert_eq!(answer.usage().map(|u| u.total_tokens), Some(4));
/// assert!(answer.is_complete());
/// assert_eq!(answer.json().as_ref(), body, "the bytes are kept as they are");
/// assert!(ChatCompletionJson::parse(bytes::Bytes::from_static(br#"{"id":"c1"}"#)).is_err());
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct ChatCompletionJson {
    json: Bytes,
    usage: Option<Usage>,
    complete: bool,
}

impl ChatCompletionJson {
    /// Checks that `json` has the fields a [`ChatCompletionResponse`] requires, with their types (`id`,
    /// `object`, `created`, `model`, and `choices` with `index`, `message.role` and `finish_reason`), and reads
    /// `usage`. Message contents and unknown fields are not looked into.
    pub fn parse(json: Bytes) -> Result<ChatCompletionJson, serde_json::Error> {
        // Validating UTF-8 once and reading a `str` is faster than `from_slice`, which checks every string.
        let text = std::str::from_utf8(&json).map_err(<serde_json::Error as de::Error>::custom)?;
        let shape: Shape = serde_json::from_str(text)?;
        let complete = shape.choices.count > 0 && shape.choices.finished == shape.choices.count;
        Ok(ChatCompletionJson { usage: shape.usage, complete, json })
    }

    /// Encodes a typed response.
    pub fn from_response(response: &ChatCompletionResponse) -> Result<ChatCompletionJson, serde_json::Error> {
        // Most answers are under 1 KiB: one allocation instead of regrowing from serde_json's 128 bytes.
        let mut json = Vec::with_capacity(1024);
        serde_json::to_writer(&mut json, response)?;
        let complete = !response.choices.is_empty() && response.choices.iter().all(|c| c.finish_reason.is_some());
        Ok(ChatCompletionJson { json: Bytes::from(json), usage: response.usage.clone(), complete })
    }

    /// Parses the whole response.
    pub fn to_response(&self) -> Result<ChatCompletionResponse, serde_json::Error> {
        serde_json::from_slice(&self.json)
    }

    /// The JSON document.
    pub fn json(&self) -> &Bytes {
        &self.json
    }

    /// The JSON document, owned.
    pub fn into_json(self) -> Bytes {
        self.json
    }

    /// Token usage, when the response reports it.
    pub fn usage(&self) -> Option<&Usage> {
        self.usage.as_ref()
    }

    /// Whether there is at least one choice and every choice has a `finish_reason` (worth caching).
    pub fn is_complete(&self) -> bool {
        self.complete
    }
}

/// What [`ChatCompletionJson::parse`] checks; unknown fields are skipped, duplicates refused.
#[derive(serde::Deserialize)]
struct Shape {
    #[serde(rename = "id")]
    _id: AnyString,
    #[serde(rename = "object")]
    _object: AnyString,
    #[serde(rename = "created")]
    _created: u64,
    #[serde(rename = "model")]
    _model: AnyString,
    choices: Choices,
    #[serde(default)]
    usage: Option<Usage>,
    #[serde(default, rename = "system_fingerprint")]
    _system_fingerprint: Option<AnyString>,
}

#[derive(serde::Deserialize)]
struct ChoiceShape {
    #[serde(rename = "index")]
    _index: u32,
    #[serde(rename = "message")]
    _message: MessageShape,
    #[serde(default)]
    finish_reason: Option<AnyString>,
}

#[derive(serde::Deserialize)]
struct MessageShape {
    #[serde(rename = "role")]
    _role: AnyString,
}

/// A string whose value is not needed: read without allocating.
struct AnyString;

impl<'de> Deserialize<'de> for AnyString {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct AnyStringVisitor;
        impl Visitor<'_> for AnyStringVisitor {
            type Value = AnyString;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<AnyString, E> {
                Ok(AnyString)
            }
        }
        deserializer.deserialize_str(AnyStringVisitor)
    }
}

/// The choices, counted rather than collected.
struct Choices {
    count: usize,
    finished: usize,
}

impl<'de> Deserialize<'de> for Choices {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ChoicesVisitor;
        impl<'de> Visitor<'de> for ChoicesVisitor {
            type Value = Choices;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of choices")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Choices, A::Error> {
                let mut choices = Choices { count: 0, finished: 0 };
                while let Some(choice) = seq.next_element::<ChoiceShape>()? {
                    choices.count += 1;
                    choices.finished += usize::from(choice.finish_reason.is_some());
                }
                Ok(choices)
            }
        }
        deserializer.deserialize_seq(ChoicesVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ANSWER: &str = r#"{"id":"c1","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}"#;

    fn parse(text: &str) -> Result<ChatCompletionJson, serde_json::Error> {
        ChatCompletionJson::parse(Bytes::copy_from_slice(text.as_bytes()))
    }

    #[test]
    fn agrees_with_the_typed_response() {
        let typed: ChatCompletionResponse = serde_json::from_str(ANSWER).unwrap();
        let raw = parse(ANSWER).unwrap();
        assert_eq!(raw.usage(), typed.usage.as_ref());
        assert_eq!(raw.to_response().unwrap(), typed);
        let encoded = ChatCompletionJson::from_response(&typed).unwrap();
        assert_eq!(encoded.to_response().unwrap(), typed);
        assert_eq!((encoded.usage(), encoded.is_complete()), (raw.usage(), raw.is_complete()));
    }

    #[test]
    fn refuses_what_the_typed_parse_refuses() {
        for bad in [
            r#"{"object":"chat.completion","created":1,"model":"m","choices":[]}"#,
            r#"{"id":7,"object":"chat.completion","created":1,"model":"m","choices":[]}"#,
            r#"{"id":"c","object":"chat.completion","created":-1,"model":"m","choices":[]}"#,
            r#"{"id":"c","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"finish_reason":null}]}"#,
            r#"{"id":"c","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{}}]}"#,
            r#"{"id":"c","id":"d","object":"chat.completion","created":1,"model":"m","choices":[]}"#,
            r#"{"error":{"message":"overloaded"}}"#,
            "[1, 2]",
            "{",
        ] {
            assert!(serde_json::from_str::<ChatCompletionResponse>(bad).is_err(), "typed parse accepts {bad}");
            assert!(parse(bad).is_err(), "accepted {bad}");
        }
        assert!(ChatCompletionJson::parse(Bytes::from_static(b"{\"id\":\"\xff\"}")).is_err(), "not UTF-8");
    }

    #[test]
    fn completeness_needs_a_finish_reason_on_every_choice() {
        let partial = ANSWER.replace(
            r#""finish_reason":"stop"}]"#,
            r#""finish_reason":"stop"},{"index":1,"message":{"role":"assistant"},"finish_reason":null}]"#,
        );
        assert!(!parse(&partial).unwrap().is_complete());
        let empty = r#"{"id":"c","object":"chat.completion","created":1,"model":"m","choices":[]}"#;
        assert!(!parse(empty).unwrap().is_complete());
        assert!(parse(ANSWER).unwrap().is_complete());
    }
}
