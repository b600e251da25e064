//! The fuzz targets' inputs driven by proptest on stable, so CI exercises them on every run
//! (`fuzz/` holds the same targets for cargo-fuzz).

#![cfg(feature = "server")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use chitty_core::keys::{CacheScope, chat_key};
use chitty_core::wire::{
    ChatCompletionJson, ChatCompletionRequest, ChatCompletionResponse, CompletionRequest, EmbeddingRequest,
    MessagesRequest, MessagesResponse,
};
use chitty_providers::config::GatewayFile;
use proptest::prelude::*;
use serde_json::{Value, json};

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(|f| json!(f)),
        "\\PC{0,12}".prop_map(Value::String),
        Just(json!(u64::MAX)),
        Just(json!("user")),
        Just(json!("text")),
        Just(json!("assistant")),
        Just(json!("tool_use")),
        Just(json!("tool_result")),
        Just(json!("image")),
        Just(json!("base64")),
        Just(json!(16)),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("model".to_owned()),
                    Just("messages".to_owned()),
                    Just("role".to_owned()),
                    Just("content".to_owned()),
                    Just("type".to_owned()),
                    Just("text".to_owned()),
                    Just("tools".to_owned()),
                    Just("tool_calls".to_owned()),
                    Just("stop".to_owned()),
                    Just("input".to_owned()),
                    Just("prompt".to_owned()),
                    Just("max_tokens".to_owned()),
                    Just("system".to_owned()),
                    Just("source".to_owned()),
                    Just("tool_use_id".to_owned()),
                    Just("tool_choice".to_owned()),
                    Just("name".to_owned()),
                    "[a-z_]{1,8}",
                ],
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn check_chat(bytes: &[u8]) {
    if let Ok(req) = serde_json::from_slice::<ChatCompletionRequest>(bytes) {
        let key = chat_key(CacheScope::Tenant("t"), &req);
        let _ = chitty_core::tokens::estimate_chat_prompt(&req);
        let again: ChatCompletionRequest = serde_json::from_slice(&serde_json::to_vec(&req).unwrap()).unwrap();
        assert_eq!(chat_key(CacheScope::Tenant("t"), &again), key, "a round trip keeps the key");
    }
}

/// A Responses body parses or not, and translating a parsed one to chat is a value or a typed error.
fn check_responses(bytes: &[u8]) {
    let parsed = serde_json::from_slice::<chitty_core::wire::responses::ResponsesRequest>(bytes);
    if let Some(Err(e)) = parsed.ok().map(|req| chitty_core::wire::responses::to_chat(&req, &[])) {
        assert!(e.status() == 400 || e.status() == 500, "{e}");
    }
}

/// An Anthropic Messages body: parsed, translated to chat (whose checks then run) and written back.
fn check_messages(bytes: &[u8]) {
    if let Ok(req) = serde_json::from_slice::<MessagesRequest>(bytes) {
        let again: MessagesRequest = serde_json::from_slice(&serde_json::to_vec(&req).unwrap()).unwrap();
        assert_eq!(again, req, "a Messages request survives a round trip");
        let _ = req.clone().into_chat_prompt();
        if let Ok(chat) = req.into_chat() {
            check_chat(&serde_json::to_vec(&chat).unwrap());
        }
    }
}

#[test]
fn a_float_that_a_best_effort_parse_rounds_keeps_its_cache_key() {
    // Found by `json_shaped_bodies_never_panic`: without serde_json's `float_roundtrip` the number came back
    // one ulp off after a serialize/parse round trip, and so did the cache key.
    let body = br#"{"model":"","input":{"model":-8.362753171986447e-66},"messages":[]}"#;
    assert!(serde_json::from_slice::<ChatCompletionRequest>(body).is_ok());
    check_chat(body);
}

/// A chat completion with one field (at the top, in a choice or in a message) removed or replaced.
fn mutated_chat_completion() -> impl Strategy<Value = Value> {
    let base = json!({
        "id": "c1", "object": "chat.completion", "created": 1, "model": "m", "system_fingerprint": "fp",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"},
            {"index": 1, "message": {"role": "assistant", "content": null, "tool_calls": []}, "finish_reason": null}
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}
    });
    let place = prop_oneof![Just("/"), Just("/choices/0/"), Just("/choices/1/"), Just("/choices/0/message/")];
    let key = prop::sample::select(vec![
        "id",
        "object",
        "created",
        "model",
        "choices",
        "usage",
        "system_fingerprint",
        "index",
        "message",
        "finish_reason",
        "role",
        "content",
        "tool_calls",
        "extra",
    ]);
    (place, key, prop::option::of(json_value())).prop_map(move |(place, key, replacement)| {
        let mut v = base.clone();
        if let Some(Value::Object(target)) = v.pointer_mut(place.trim_end_matches('/')) {
            match replacement {
                Some(r) => target.insert(key.to_owned(), r),
                None => target.remove(key),
            };
        }
        v
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

    #[test]
    fn a_checked_json_answer_accepts_every_typed_answer(value in mutated_chat_completion()) {
        let bytes = serde_json::to_vec(&value).unwrap();
        let light = ChatCompletionJson::parse(bytes::Bytes::from(bytes.clone()));
        if let Ok(typed) = serde_json::from_slice::<ChatCompletionResponse>(&bytes) {
            let light = light.expect("the light check refused what the typed parse accepts");
            prop_assert_eq!(light.usage(), typed.usage.as_ref());
            let complete = !typed.choices.is_empty() && typed.choices.iter().all(|c| c.finish_reason.is_some());
            prop_assert_eq!(light.is_complete(), complete);
            let message = MessagesResponse::from_chat(&typed);
            let mut translator = chitty_core::wire::MessagesStreamTranslator::new();
            for chunk in typed.to_chunks(1, true) {
                let _ = translator.push(&chunk);
            }
            let _ = translator.finish();
            let _ = message.to_chat(0);
        }
    }

    #[test]
    fn request_bodies_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        check_chat(&bytes);
        check_responses(&bytes);
        check_messages(&bytes);
        let _ = serde_json::from_slice::<CompletionRequest>(&bytes);
        let _ = serde_json::from_slice::<EmbeddingRequest>(&bytes);
    }

    #[test]
    fn json_shaped_bodies_never_panic(value in json_value(), model in "[a-z]{0,6}") {
        let mut v = value;
        if let Value::Object(m) = &mut v {
            m.insert("model".into(), json!(model));
        }
        let bytes = serde_json::to_vec(&v).unwrap();
        check_chat(&bytes);
        check_responses(&bytes);
        check_messages(&bytes);
        let _ = serde_json::from_slice::<EmbeddingRequest>(&bytes);
        let _ = serde_json::from_slice::<CompletionRequest>(&bytes);
    }

    #[test]
    fn responses_input_items_never_panic(items in prop::collection::vec(json_value(), 0..4), tools in json_value()) {
        let body = json!({"model": "m", "input": items, "tools": [tools], "text": {"format": {"type": "json_schema"}}});
        check_responses(&serde_json::to_vec(&body).unwrap());
        let body = json!({"model": "m", "input": items});
        check_responses(&serde_json::to_vec(&body).unwrap());
    }

    #[test]
    fn config_text_never_panics(text in "\\PC{0,400}") {
        if let Ok(file) = GatewayFile::parse(&text) {
            let _ = file.gateway_config();
        }
    }

    #[test]
    fn config_shaped_text_never_panics(
        name in "[a-z]{1,5}", provider in "[a-z]{1,5}", price in "[0-9.$_a-z-]{0,8}", digest in "[0-9a-fA-F]{0,70}",
        budget in "[0-9.$-]{0,8}", allowed in "[a-z*]{0,5}",
    ) {
        let text = format!(
            "[[providers]]\nname = \"{provider}\"\nkind = \"openai\"\n[[models]]\nname = \"{name}\"\nroutes = [{{ provider = \"p\", model = \"x\" }}]\nprice = {{ input = \"{price}\", output = \"1\" }}\n[[tenants]]\nid = \"t\"\nkey_sha256 = [\"{digest}\"]\nbudget_usd = \"{budget}\"\nallowed_models = [\"{allowed}\"]\n"
        );
        if let Ok(file) = GatewayFile::parse(&text) {
            let _ = file.gateway_config();
        }
    }
}

#[test]
fn deep_nesting_is_an_error_not_a_stack_overflow() {
    let deep = format!(
        "{{\"model\":\"m\",\"messages\":[{{\"role\":\"user\",\"content\":\"x\",\"extra\":{}1{}}}]}}",
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    assert!(serde_json::from_str::<ChatCompletionRequest>(&deep).is_err(), "serde_json's recursion limit refuses it");
}
