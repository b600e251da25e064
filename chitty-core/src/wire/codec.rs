//! Hand-rolled serde impls for wire objects that keep unknown fields in `extra`.
//!
//! `#[serde(flatten)]` deserializes by first buffering the whole object into serde's private `Content` tree
//! (an allocation per key and value) and then deserializing every field again from that buffer; untagged
//! enums buffer the same way and retry each variant. [`wire_object!`] generates impls that visit the map
//! once: known keys fill their fields, every other key goes into `extra`. Serialization writes the known
//! fields in declaration order and then `extra`, which is exactly what the derive with `flatten` wrote.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserialize, Deserializer, SeqAccess, Visitor};

/// Generates `Serialize` and `Deserialize` for a wire struct whose last field is `extra: Extra`.
///
/// Each listed field is `name: kind` or `name as "json_key": kind`, in declaration order, where kind is:
/// - `required`: must be present (`missing field` error otherwise); always written;
/// - `default`: `Default::default()` when absent; always written;
/// - `optional` (an `Option`): `None` when absent or `null`; not written when `None`;
/// - `nullable` (an `Option`): `None` when absent or `null`; written as `null` when `None`.
///
/// A field missing from the list does not compile (the visitor builds the struct with every field named).
macro_rules! wire_object {
    (@key $field:ident) => { stringify!($field) };
    (@key $field:ident $key:literal) => { $key };
    (@write $map:ident, $value:expr, $key:expr, optional) => {
        if let Some(value) = &$value {
            $map.serialize_entry($key, value)?;
        }
    };
    (@write $map:ident, $value:expr, $key:expr, required) => { $map.serialize_entry($key, &$value)? };
    (@write $map:ident, $value:expr, $key:expr, default) => { $map.serialize_entry($key, &$value)? };
    (@write $map:ident, $value:expr, $key:expr, nullable) => { $map.serialize_entry($key, &$value)? };
    (@finish $err:ident, $slot:ident, $key:expr, required) => {
        $slot.ok_or_else(|| <$err::Error as ::serde::de::Error>::missing_field($key))?
    };
    (@finish $err:ident, $slot:ident, $key:expr, default) => { $slot.unwrap_or_default() };
    (@finish $err:ident, $slot:ident, $key:expr, optional) => { $slot.unwrap_or_default() };
    (@finish $err:ident, $slot:ident, $key:expr, nullable) => { $slot.unwrap_or_default() };
    ($name:ident { $($field:ident $(as $key:literal)?: $kind:ident),* $(,)? }) => {
        impl ::serde::Serialize for $name {
            fn serialize<S: ::serde::Serializer>(&self, serializer: S) -> ::core::result::Result<S::Ok, S::Error> {
                use ::serde::ser::SerializeMap as _;
                let mut map = serializer.serialize_map(None)?;
                $( wire_object!(@write map, self.$field, wire_object!(@key $field $($key)?), $kind); )*
                for (key, value) in &self.extra {
                    map.serialize_entry(key, value)?;
                }
                map.end()
            }
        }

        impl<'de> ::serde::Deserialize<'de> for $name {
            fn deserialize<D: ::serde::Deserializer<'de>>(deserializer: D) -> ::core::result::Result<Self, D::Error> {
                struct ObjectVisitor;

                impl<'de> ::serde::de::Visitor<'de> for ObjectVisitor {
                    type Value = $name;

                    fn expecting(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                        f.write_str(concat!("struct ", stringify!($name)))
                    }

                    fn visit_map<A>(self, mut map: A) -> ::core::result::Result<$name, A::Error>
                    where
                        A: ::serde::de::MapAccess<'de>,
                    {
                        $( let mut $field = None; )*
                        let mut extra = $crate::wire::Extra::new();
                        while let Some(key) = map.next_key::<$crate::wire::codec::MapKey<'de>>()? {
                            match key.as_str() {
                                $( wire_object!(@key $field $($key)?) => {
                                    if $field.is_some() {
                                        return Err(<A::Error as ::serde::de::Error>::duplicate_field(
                                            wire_object!(@key $field $($key)?),
                                        ));
                                    }
                                    $field = Some(map.next_value()?);
                                } )*
                                _ => {
                                    let value = map.next_value()?;
                                    extra.insert(key.into_string(), value);
                                }
                            }
                        }
                        Ok($name {
                            $( $field: wire_object!(@finish A, $field, wire_object!(@key $field $($key)?), $kind), )*
                            extra,
                        })
                    }
                }

                deserializer.deserialize_map(ObjectVisitor)
            }
        }
    };
}

pub(crate) use wire_object;

/// An object key, borrowed from the input when the deserializer allows it, so matching a known field
/// allocates nothing; only unknown keys become `String`s (for `extra`).
pub(crate) enum MapKey<'de> {
    /// Borrowed from the input.
    Borrowed(&'de str),
    /// Unescaped, or handed over by an owning deserializer.
    Owned(String),
}

impl MapKey<'_> {
    pub(crate) fn as_str(&self) -> &str {
        match self {
            MapKey::Borrowed(s) => s,
            MapKey::Owned(s) => s,
        }
    }

    pub(crate) fn into_string(self) -> String {
        match self {
            MapKey::Borrowed(s) => s.to_owned(),
            MapKey::Owned(s) => s,
        }
    }
}

impl<'de> Deserialize<'de> for MapKey<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;

        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = MapKey<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a field name")
            }

            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(MapKey::Borrowed(v))
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(MapKey::Owned(v.to_owned()))
            }

            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(MapKey::Owned(v))
            }
        }

        deserializer.deserialize_str(KeyVisitor)
    }
}

/// A capacity for a sequence of `hint` items that a hostile length hint cannot blow up.
fn cautious_capacity(hint: Option<usize>) -> usize {
    hint.unwrap_or(0).min(1024)
}

/// Reads the rest of a sequence whose first item is already read.
fn collect_rest<'de, T: Deserialize<'de>, A: SeqAccess<'de>>(first: T, mut seq: A) -> Result<Vec<T>, A::Error> {
    let mut items = Vec::with_capacity(cautious_capacity(seq.size_hint()).saturating_add(1));
    items.push(first);
    while let Some(item) = seq.next_element()? {
        items.push(item);
    }
    Ok(items)
}

/// Reads a whole sequence.
pub(crate) fn collect_seq<'de, T: Deserialize<'de>, A: SeqAccess<'de>>(mut seq: A) -> Result<Vec<T>, A::Error> {
    let mut items = Vec::with_capacity(cautious_capacity(seq.size_hint()));
    while let Some(item) = seq.next_element()? {
        items.push(item);
    }
    Ok(items)
}

/// A string or a sequence of `T`, dispatched on the JSON token instead of trying each shape in turn
/// (`#[serde(untagged)]` buffers the value and retries every variant).
pub(crate) enum OneOrMany<T> {
    /// A single string.
    One(String),
    /// A sequence.
    Many(Vec<T>),
}

impl<'de, T: Deserialize<'de>> OneOrMany<T> {
    /// Deserializes a string or a sequence; `expecting` names both shapes for error messages.
    pub(crate) fn deserialize<D: Deserializer<'de>>(
        deserializer: D,
        expecting: &'static str,
    ) -> Result<Self, D::Error> {
        struct OneOrManyVisitor<T>(&'static str, PhantomData<T>);

        impl<'de, T: Deserialize<'de>> Visitor<'de> for OneOrManyVisitor<T> {
            type Value = OneOrMany<T>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.0)
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(OneOrMany::One(v.to_owned()))
            }

            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(OneOrMany::One(v))
            }

            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
                collect_seq(seq).map(OneOrMany::Many)
            }
        }

        deserializer.deserialize_any(OneOrManyVisitor(expecting, PhantomData))
    }
}

/// The shapes of `prompt` and embedding `input`: text, texts, token ids or lists of token ids.
pub(crate) enum TextOrTokens {
    /// One text.
    Text(String),
    /// Several texts (also an empty array).
    Texts(Vec<String>),
    /// One token list.
    Tokens(Vec<u32>),
    /// Several token lists.
    TokenLists(Vec<Vec<u32>>),
}

/// The first item of a `TextOrTokens` array, which decides what the other items must be.
enum FirstItem {
    Text(String),
    Token(u32),
    Tokens(Vec<u32>),
}

impl<'de> Deserialize<'de> for FirstItem {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct FirstItemVisitor;

        impl<'de> Visitor<'de> for FirstItemVisitor {
            type Value = FirstItem;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string, a token id or an array of token ids")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(FirstItem::Text(v.to_owned()))
            }

            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(FirstItem::Text(v))
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                u32::try_from(v)
                    .map(FirstItem::Token)
                    .map_err(|_| E::invalid_value(de::Unexpected::Unsigned(v), &"a token id (u32)"))
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                u32::try_from(v)
                    .map(FirstItem::Token)
                    .map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &"a token id (u32)"))
            }

            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
                collect_seq(seq).map(FirstItem::Tokens)
            }
        }

        deserializer.deserialize_any(FirstItemVisitor)
    }
}

impl<'de> Deserialize<'de> for TextOrTokens {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TextOrTokensVisitor;

        impl<'de> Visitor<'de> for TextOrTokensVisitor {
            type Value = TextOrTokens;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string, an array of strings, an array of token ids or an array of token-id arrays")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(TextOrTokens::Text(v.to_owned()))
            }

            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(TextOrTokens::Text(v))
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                Ok(match seq.next_element::<FirstItem>()? {
                    None => TextOrTokens::Texts(Vec::new()),
                    Some(FirstItem::Text(t)) => TextOrTokens::Texts(collect_rest(t, seq)?),
                    Some(FirstItem::Token(t)) => TextOrTokens::Tokens(collect_rest(t, seq)?),
                    Some(FirstItem::Tokens(t)) => TextOrTokens::TokenLists(collect_rest(t, seq)?),
                })
            }
        }

        deserializer.deserialize_any(TextOrTokensVisitor)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::{Value, json};

    use crate::wire::{
        ChatChoice, ChatCompletionRequest, ChatMessage, CompletionRequest, EmbeddingInput, EmbeddingVector, ErrorBody,
        MessageContent, PromptInput, Role, StopSequences, Usage,
    };

    fn err<T: serde::de::DeserializeOwned + std::fmt::Debug>(json: &str) -> String {
        serde_json::from_str::<T>(json).unwrap_err().to_string()
    }

    #[test]
    fn absent_and_null_options_are_none_and_not_written() {
        let m: ChatMessage = serde_json::from_str(r#"{"role":"user","content":null,"name":null}"#).unwrap();
        assert_eq!((m.content.as_ref(), m.name.as_ref(), m.tool_calls.as_ref()), (None, None, None));
        assert_eq!(serde_json::to_string(&m).unwrap(), r#"{"role":"user"}"#);
    }

    #[test]
    fn nullable_fields_are_written_as_null_and_defaults_fill_in() {
        let c: ChatChoice = serde_json::from_str(r#"{"index":0,"message":{"role":"assistant"}}"#).unwrap();
        assert_eq!(c.finish_reason, None);
        assert_eq!(
            serde_json::to_string(&c).unwrap(),
            r#"{"index":0,"message":{"role":"assistant"},"finish_reason":null}"#
        );
        let e: ErrorBody = serde_json::from_str(r#"{"message":"m","type":"t"}"#).unwrap();
        assert_eq!(serde_json::to_string(&e).unwrap(), r#"{"message":"m","type":"t","param":null,"code":null}"#);
        assert_eq!(serde_json::from_str::<Usage>("{}").unwrap(), Usage::default());
    }

    #[test]
    fn unknown_fields_are_kept_and_written_after_known_ones() {
        let json = r#"{"zeta":1,"model":"m","alpha":{"b":[1,2]},"messages":[{"role":"user","content":"hi","x":true}]}"#;
        let r: ChatCompletionRequest = serde_json::from_str(json).unwrap();
        assert_eq!(r.extra.get("zeta"), Some(&json!(1)));
        assert_eq!(r.messages[0].extra.get("x"), Some(&json!(true)));
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"model":"m","messages":[{"role":"user","content":"hi","x":true}],"alpha":{"b":[1,2]},"zeta":1}"#
        );
    }

    #[test]
    fn owned_and_escaped_keys_match_known_fields() {
        let v = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "future": [1]});
        let from_value: ChatCompletionRequest = serde_json::from_value(v.clone()).unwrap();
        let escaped: ChatCompletionRequest =
            serde_json::from_str(r#"{"mod\u0065l":"m","messages":[{"role":"user","content":"hi"}],"future":[1]}"#)
                .unwrap();
        assert_eq!(from_value, escaped);
        assert_eq!(serde_json::to_value(&from_value).unwrap(), v);
    }

    #[test]
    fn malformed_objects_are_typed_errors() {
        assert!(err::<ChatMessage>(r#"{"content":"x"}"#).contains("missing field `role`"));
        assert!(err::<ChatMessage>(r#"{"role":"user","role":"user"}"#).contains("duplicate field `role`"));
        assert!(
            err::<ChatMessage>(r#"{"role":"user","name":3}"#).contains("invalid type: integer `3`, expected a string")
        );
        assert!(err::<ChatMessage>(r#"["user"]"#).contains("expected struct ChatMessage"));
        assert!(err::<ChatMessage>(r#"{"role":7}"#).contains("expected a role name"));
        assert!(err::<ChatMessage>(r#"{"role":"user","content":5}"#).contains("a string or an array of content parts"));
        assert!(err::<ChatCompletionRequest>(r#"{"model":"m","messages":[],"temperature":"hot"}"#).contains("f64"));
        assert!(err::<ChatCompletionRequest>(r#"{"model":"m","messages":[],"x":}"#).contains("expected value"));
    }

    #[test]
    fn roles_known_and_unknown() {
        for (name, role) in [("system", Role::System), ("developer", Role::Developer), ("tool", Role::Tool)] {
            assert_eq!(serde_json::from_value::<Role>(json!(name)).unwrap(), role);
            assert_eq!(serde_json::to_value(&role).unwrap(), json!(name));
        }
        assert_eq!(serde_json::from_str::<Role>(r#""critic""#).unwrap(), Role::Other("critic".into()));
        assert_eq!(serde_json::to_string(&Role::Other("critic".into())).unwrap(), r#""critic""#);
    }

    #[test]
    fn string_or_array_shapes() {
        let stop = |j: &str| serde_json::from_str::<StopSequences>(j);
        assert_eq!(stop(r#""\n""#).unwrap(), StopSequences::One("\n".into()));
        assert_eq!(stop(r#"["a","b"]"#).unwrap(), StopSequences::Many(vec!["a".into(), "b".into()]));
        assert!(stop("[1]").is_err() && stop("null").is_err());
        let parts: MessageContent =
            serde_json::from_str(r#"[{"type":"text","text":"a"},{"type":"image_url","image_url":{"url":"u"}}]"#)
                .unwrap();
        assert!(matches!(&parts, MessageContent::Parts(p) if p.len() == 2 && p[1].extra.contains_key("image_url")));
        let vector = |j: &str| serde_json::from_str::<EmbeddingVector>(j);
        assert_eq!(vector("[0.5, 1, -2]").unwrap(), EmbeddingVector::Float(vec![0.5, 1.0, -2.0]));
        assert_eq!(vector(r#""AAAAAA==""#).unwrap(), EmbeddingVector::Base64("AAAAAA==".into()));
        assert!(vector("3").is_err() && vector(r#"["x"]"#).is_err());
    }

    #[test]
    fn text_or_token_inputs() {
        let prompt = |j: &str| serde_json::from_str::<PromptInput>(j);
        assert_eq!(prompt(r#""a""#).unwrap(), PromptInput::Text("a".into()));
        assert_eq!(prompt(r#"["a","b"]"#).unwrap(), PromptInput::Texts(vec!["a".into(), "b".into()]));
        assert_eq!(prompt("[]").unwrap(), PromptInput::Texts(vec![]), "an empty array is no texts, as before");
        assert_eq!(prompt("[1,2]").unwrap(), PromptInput::Tokens(vec![1, 2]));
        assert_eq!(prompt("[[1],[]]").unwrap(), PromptInput::TokenLists(vec![vec![1], vec![]]));
        for bad in [r#"[1,"a"]"#, r#"["a",1]"#, "[-1]", "[4294967296]", "[1.5]", "[[1],2]", "[null]", "{}", "1"] {
            assert!(prompt(bad).is_err(), "{bad} must not parse");
        }
        let input: EmbeddingInput = serde_json::from_value(json!([[1, 2], [3]])).unwrap();
        assert_eq!(input, EmbeddingInput::TokenLists(vec![vec![1, 2], vec![3]]));
        let r: CompletionRequest = serde_json::from_str(r#"{"model":"m","prompt":[7,8],"best_of":2}"#).unwrap();
        assert_eq!(serde_json::to_string(&r).unwrap(), r#"{"model":"m","prompt":[7,8],"best_of":2}"#);
    }

    fn extra_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            "[a-z\\\\\"é ]{0,8}".prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                prop::collection::btree_map("[a-z]{1,4}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// Any message with any unknown fields survives a round trip exactly (nulls of known fields aside).
        #[test]
        fn messages_round_trip(
            role in "[a-z]{1,10}",
            content in proptest::option::of("[ -~é世]{0,20}"),
            name in proptest::option::of("[a-z]{0,6}"),
            extra in prop::collection::btree_map("[a-z_]{1,8}", extra_value(), 0..5),
        ) {
            let mut object = serde_json::Map::new();
            object.insert("role".into(), json!(role));
            if let Some(c) = content { object.insert("content".into(), json!(c)); }
            if let Some(n) = name { object.insert("name".into(), json!(n)); }
            for (k, v) in extra {
                if !["role", "content", "name", "tool_calls", "tool_call_id", "refusal"].contains(&k.as_str()) {
                    object.insert(k, v);
                }
            }
            let original = Value::Object(object);
            let text = serde_json::to_string(&original).unwrap();
            let parsed: ChatMessage = serde_json::from_str(&text).unwrap();
            prop_assert_eq!(&serde_json::from_value::<ChatMessage>(original.clone()).unwrap(), &parsed);
            prop_assert_eq!(serde_json::to_value(&parsed).unwrap(), original);
        }

        /// Arbitrary bytes never panic the parsers.
        #[test]
        fn arbitrary_input_is_an_error_or_a_value(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            let _ = serde_json::from_slice::<ChatCompletionRequest>(&bytes);
            let _ = serde_json::from_slice::<PromptInput>(&bytes);
            let _ = serde_json::from_slice::<EmbeddingVector>(&bytes);
        }
    }
}
