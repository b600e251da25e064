//! Every fixture parses into chitty's wire types and serializes back without losing a field.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use chitty_core::wire::{
    ChatCompletionChunk, ChatCompletionRequest, ChatCompletionResponse, ChunkAccumulator, ChunkChoice,
    CompletionAccumulator, CompletionRequest, CompletionResponse, EmbeddingInput, EmbeddingRequest, EmbeddingResponse,
    EncodingFormat, ErrorEnvelope, MessageContent, ModelList, Role, StopSequences,
};
use chitty_testkit::fixtures::{self, without_nulls};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

fn round_trip<T: Serialize + DeserializeOwned>(json: &str) -> T {
    let original: Value = serde_json::from_str(json).unwrap();
    let typed: T = serde_json::from_str(json).unwrap();
    let back: Value = serde_json::from_str(&serde_json::to_string(&typed).unwrap()).unwrap();
    assert_eq!(without_nulls(back), without_nulls(original), "round trip lost or changed a field");
    typed
}

#[test]
fn chat_request_keeps_every_field() {
    let r: ChatCompletionRequest = round_trip(fixtures::CHAT_REQUEST_FULL);
    assert_eq!(r.messages.len(), 5);
    assert_eq!(r.messages[0].role, Role::Developer);
    assert!(
        matches!(&r.messages[2].content, Some(MessageContent::Parts(p)) if p.len() == 2 && p[1].kind == "image_url")
    );
    assert_eq!(r.messages[3].tool_calls.as_ref().unwrap()[0].function.name, "get_weather");
    assert_eq!(r.messages[4].tool_call_id.as_deref(), Some("call_abc123"));
    assert!(matches!(&r.stop, Some(StopSequences::Many(v)) if v.len() == 2));
    assert_eq!(r.output_cap(), Some(300), "max_completion_tokens wins");
    assert!(r.wants_stream_usage());
    for newer in ["store", "metadata", "reasoning_effort", "service_tier", "modalities"] {
        assert!(r.extra.contains_key(newer), "unknown field {newer} kept");
    }
}

#[test]
fn chat_responses_and_unknown_roles() {
    let r: ChatCompletionResponse = round_trip(fixtures::CHAT_RESPONSE);
    assert_eq!(r.usage.as_ref().unwrap().prompt_tokens, 19);
    assert!(r.choices[0].message.extra.contains_key("annotations"));
    assert!(r.extra.contains_key("service_tier"));
    let t: ChatCompletionResponse = round_trip(fixtures::CHAT_RESPONSE_TOOL_CALLS);
    assert_eq!(t.choices[0].finish_reason.as_deref(), Some("tool_calls"));
    let future: ChatCompletionRequest = round_trip(r#"{"model":"m","messages":[{"role":"critic","content":"hm"}]}"#);
    assert_eq!(future.messages[0].role, Role::Other("critic".into()));
}

#[test]
fn stream_chunks_round_trip_and_accumulate() {
    for (stream, text) in [(fixtures::CHAT_STREAM, "Hello there, 世界"), (fixtures::CHAT_STREAM_TOOL_CALLS, "")] {
        let mut acc = ChunkAccumulator::default();
        for line in stream.lines() {
            let chunk: ChatCompletionChunk = round_trip(line);
            acc.push(&chunk);
        }
        let done = acc.finish();
        assert_eq!(done.choices[0].message.text_content(), text);
        if let Some(calls) = &done.choices[0].message.tool_calls {
            assert_eq!(calls[0].function.arguments, r#"{"city":"Paris"}"#);
            assert_eq!(calls[0].id, "call_DdmO9pD3xa9XTPNJ32zg2hcA");
        }
    }
    let last: ChatCompletionChunk = serde_json::from_str(fixtures::CHAT_STREAM.lines().last().unwrap()).unwrap();
    assert!(last.choices.is_empty() && last.usage.unwrap().total_tokens == 13);
}

#[test]
fn replaying_a_response_as_chunks_gives_it_back() {
    for json in [fixtures::CHAT_RESPONSE, fixtures::CHAT_RESPONSE_TOOL_CALLS] {
        let r: ChatCompletionResponse = serde_json::from_str(json).unwrap();
        for piece in [1, 7, 1000] {
            let mut acc = ChunkAccumulator::default();
            for c in r.to_chunks(piece, true) {
                acc.push(&c);
            }
            let back = acc.finish();
            assert_eq!(back.choices[0].message.text_content(), r.choices[0].message.text_content());
            assert_eq!(back.choices[0].message.tool_calls, r.choices[0].message.tool_calls);
            assert_eq!(back.choices[0].finish_reason, r.choices[0].finish_reason);
            assert_eq!(back.usage, r.usage);
        }
    }
}

#[test]
fn replays_keep_log_probabilities_and_streamed_ones_are_concatenated() {
    let mut chat: ChatCompletionResponse = serde_json::from_str(fixtures::CHAT_RESPONSE).unwrap();
    let token =
        |t: &str, p: f64| serde_json::json!({"token": t, "logprob": p, "bytes": t.as_bytes(), "top_logprobs": []});
    chat.choices[0].logprobs =
        Some(serde_json::json!({"content": [token("Hello", -0.1), token("!", -0.3)], "refusal": null}));
    let mut acc = ChunkAccumulator::default();
    chat.to_chunks(5, false).iter().for_each(|c| acc.push(c));
    assert_eq!(acc.finish().choices[0].logprobs, chat.choices[0].logprobs);

    // A stream sends one token's log-probability per chunk; the pieces make the non-streamed object.
    let mut acc = ChunkAccumulator::default();
    for (i, chunk) in chat.to_chunks(1, false).into_iter().enumerate().take(2) {
        let piece = serde_json::json!({"content": [token(&i.to_string(), -1.0)], "refusal": null});
        acc.push(&ChatCompletionChunk {
            choices: vec![ChunkChoice { logprobs: Some(piece), ..chunk.choices[0].clone() }],
            ..chunk
        });
    }
    let merged = acc.finish().choices[0].logprobs.clone().unwrap();
    assert_eq!(merged["content"].as_array().unwrap().len(), 2);
    assert_eq!(merged["content"][1]["token"], "1");

    let mut legacy: CompletionResponse = serde_json::from_str(fixtures::COMPLETION_RESPONSE).unwrap();
    legacy.choices[0].logprobs =
        Some(serde_json::json!({"tokens": ["\n", "This"], "token_logprobs": [-0.5, -0.25], "text_offset": [0, 2]}));
    for piece in [1, 4, 100] {
        let mut acc = CompletionAccumulator::default();
        legacy.to_chunks(piece, true).iter().for_each(|c| acc.push(c));
        let mut back = acc.finish();
        back.extra = legacy.extra.clone();
        assert_eq!(back, legacy, "piece size {piece}");
    }
}

#[test]
fn completions_embeddings_models_errors() {
    let c: CompletionRequest = round_trip(fixtures::COMPLETION_REQUEST);
    assert_eq!(c.best_of, Some(1), "best_of is typed: it multiplies what the upstream bills");
    let _: CompletionResponse = round_trip(fixtures::COMPLETION_RESPONSE);
    let e: EmbeddingRequest = round_trip(fixtures::EMBEDDING_REQUEST_TOKENS);
    assert!(matches!(e.input, EmbeddingInput::TokenLists(ref v) if v.len() == 2));
    assert_eq!(e.encoding_format, Some(EncodingFormat::Base64));
    let t: EmbeddingRequest = round_trip(fixtures::EMBEDDING_REQUEST_TEXT);
    assert!(matches!(t.input, EmbeddingInput::Text(_)));
    let f: EmbeddingResponse = round_trip(fixtures::EMBEDDING_RESPONSE_FLOAT);
    let b: EmbeddingResponse = round_trip(fixtures::EMBEDDING_RESPONSE_BASE64);
    assert_eq!(b.data[0].embedding.to_floats().unwrap(), vec![0.0, 1.0, -1.0, 0.5]);
    let re = f.data[0].embedding.encode(EncodingFormat::Base64).unwrap();
    assert_eq!(re.to_floats().unwrap(), f.data[0].embedding.to_floats().unwrap(), "base64 is lossless");
    let m: ModelList = round_trip(fixtures::MODELS);
    assert_eq!(m.data.len(), 2);
    let err: ErrorEnvelope = round_trip(fixtures::ERROR);
    assert_eq!(err.error.code.as_deref(), Some("invalid_api_key"));
}

#[test]
fn malformed_bodies_are_errors_not_panics() {
    for body in [
        "",
        "{",
        "[]",
        "null",
        r#"{"model": 1}"#,
        r#"{"model":"m","messages":"x"}"#,
        r#"{"model":"m","messages":[{"content":"no role"}]}"#,
    ] {
        assert!(serde_json::from_str::<ChatCompletionRequest>(body).is_err(), "{body:?} must not parse");
    }
}
