//! Parsing and writing OpenAI wire types: the per-request serde cost inside the gateway (a cache hit parses
//! the stored response; a miss writes it) and at the HTTP edge (the request body).
//!
//! `cargo bench --bench wire`

// A bench that cannot set up aborts, as a test would.
#![allow(clippy::expect_used)]

use std::hint::black_box;

use chitty::core::wire::{ChatCompletionChunk, ChatCompletionRequest, ChatCompletionResponse, ChatMessage};
use chitty_testkit::fixtures;
use criterion::{Criterion, criterion_group, criterion_main};

/// A chat request of about `bytes` bytes of JSON: a system prompt, a few turns, sampling parameters.
fn request(bytes: usize) -> ChatCompletionRequest {
    let filler = "The quick brown fox jumps over the lazy dog while the gateway counts tokens. ";
    let body = filler.repeat(bytes / filler.len() / 3 + 1);
    ChatCompletionRequest {
        model: "chitty-mock".into(),
        messages: vec![
            ChatMessage::system(format!("You are a helpful assistant. {body}")),
            ChatMessage::user(format!("Question: {body}")),
            ChatMessage::assistant(body.clone()),
            ChatMessage::user("Summarise the above in one sentence."),
        ],
        temperature: Some(0.0),
        max_tokens: Some(64),
        ..Default::default()
    }
}

fn bench(c: &mut Criterion) {
    // What the gateway stores in its cache and parses on every hit: the response as compact JSON.
    let parsed: ChatCompletionResponse = serde_json::from_str(fixtures::CHAT_RESPONSE).expect("parse");
    let cached = serde_json::to_vec(&parsed).expect("write");
    c.bench_function("wire/parse_cached_chat_response", |b| {
        b.iter(|| black_box(serde_json::from_slice::<ChatCompletionResponse>(black_box(&cached)).expect("parse")))
    });
    // The same bytes checked as UTF-8 once, then parsed as `str` (no per-string UTF-8 check).
    c.bench_function("wire/parse_cached_chat_response_as_str", |b| {
        b.iter(|| {
            let text = std::str::from_utf8(black_box(&cached)).expect("utf-8");
            black_box(serde_json::from_str::<ChatCompletionResponse>(text).expect("parse"))
        })
    });
    c.bench_function("wire/write_chat_response", |b| {
        b.iter(|| black_box(serde_json::to_vec(black_box(&parsed)).expect("write")))
    });
    // `to_vec` starts at 128 bytes and doubles; a buffer sized for a typical entry skips the regrowth.
    c.bench_function("wire/write_chat_response_presized", |b| {
        b.iter(|| {
            let mut out = Vec::with_capacity(1024);
            serde_json::to_writer(&mut out, black_box(&parsed)).expect("write");
            black_box(out)
        })
    });

    let full = fixtures::CHAT_REQUEST_FULL.as_bytes();
    c.bench_function("wire/parse_chat_request_full", |b| {
        b.iter(|| black_box(serde_json::from_slice::<ChatCompletionRequest>(black_box(full)).expect("parse")))
    });

    let two_kb = serde_json::to_vec(&request(2048)).expect("write");
    c.bench_function(&format!("wire/parse_chat_request_{}B", two_kb.len()), |b| {
        b.iter(|| black_box(serde_json::from_slice::<ChatCompletionRequest>(black_box(&two_kb)).expect("parse")))
    });

    let chunk = fixtures::CHAT_STREAM.lines().nth(1).expect("a content chunk").as_bytes();
    c.bench_function("wire/parse_chat_chunk", |b| {
        b.iter(|| black_box(serde_json::from_slice::<ChatCompletionChunk>(black_box(chunk)).expect("parse")))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
