//! What reading an upstream costs: SSE decoding plus chunk parsing of a realistic OpenAI stream, and
//! whole `OpenAiProvider` calls (plain and streamed) against the in-process mock upstream on loopback.
//!
//! `cargo bench --bench upstream_stream`

// A bench with a broken setup has nothing to measure: it stops at once.
#![allow(clippy::expect_used)]

use std::hint::black_box;
use std::sync::Arc;

use chitty::core::Provider;
use chitty::core::wire::{ChatCompletionChunk, ChatCompletionRequest, ChatMessage};
use chitty::providers::framing::sse::SseDecoder;
use chitty::providers::openai::OpenAiProvider;
use chitty_testkit::mock::MockProvider;
use chitty_testkit::mock_upstream::MockOpenAi;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use futures::StreamExt;

/// A 400-chunk stream as OpenAI sends it: one word per event, then usage and `[DONE]`.
fn openai_stream() -> Vec<u8> {
    let mut out = String::new();
    for i in 0..400 {
        out.push_str(&format!(
            "data: {{\"id\":\"chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG\",\"object\":\"chat.completion.chunk\",\"created\":1741570283,\
             \"model\":\"gpt-4o-2024-08-06\",\"service_tier\":\"default\",\"system_fingerprint\":\"fp_eb9dce56a8\",\"choices\":[{{\"index\":0,\
             \"delta\":{{\"content\":\" word{i}\"}},\"logprobs\":null,\"finish_reason\":null}}],\"usage\":null}}\n\n"
        ));
    }
    out.push_str("data: {\"id\":\"chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG\",\"object\":\"chat.completion.chunk\",\"created\":1741570283,\"model\":\"gpt-4o-2024-08-06\",\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":400,\"total_tokens\":412}}\n\ndata: [DONE]\n\n");
    out.into_bytes()
}

fn decode_and_parse(bytes: &[u8], read_size: usize) -> usize {
    let mut decoder = SseDecoder::new();
    let mut chunks = 0;
    for piece in bytes.chunks(read_size) {
        decoder.feed(piece).expect("valid stream");
        while let Some(event) = decoder.next_event() {
            if event.is_done() {
                continue;
            }
            let chunk: ChatCompletionChunk = serde_json::from_str(&event.data).expect("valid chunk");
            chunks += chunk.choices.len();
        }
    }
    chunks
}

fn sse(c: &mut Criterion) {
    let bytes = openai_stream();
    let mut group = c.benchmark_group("sse_decode_and_parse");
    group.throughput(Throughput::Bytes(bytes.len() as u64));
    for read_size in [64, 1024, 16 * 1024] {
        group.bench_function(format!("400_chunks_{read_size}B_reads"), |b| {
            b.iter(|| black_box(decode_and_parse(black_box(&bytes), read_size)))
        });
    }
    group.finish();
}

fn provider_calls(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let server = rt.block_on(MockOpenAi::serve(Arc::new(MockProvider::new("mock")))).expect("mock upstream");
    let provider = OpenAiProvider::builder("bench").with_base_url(server.base_url()).build().expect("provider");
    let request = ChatCompletionRequest {
        model: "chitty-mock".into(),
        messages: vec![ChatMessage::user("Benchmark me, please.")],
        ..Default::default()
    };
    let mut group = c.benchmark_group("openai_provider_loopback");
    group.bench_function("chat", |b| {
        b.to_async(&rt).iter(|| async { black_box(provider.chat(request.clone()).await.expect("chat")) })
    });
    group.bench_function("chat_stream_to_end", |b| {
        b.to_async(&rt).iter(|| async {
            let mut stream = provider.chat_stream(request.clone()).await.expect("stream");
            let mut n = 0;
            while let Some(chunk) = stream.next().await {
                chunk.expect("chunk");
                n += 1;
            }
            black_box(n)
        })
    });
    group.finish();
    drop(server);
}

criterion_group!(benches, sse, provider_calls);
criterion_main!(benches);
