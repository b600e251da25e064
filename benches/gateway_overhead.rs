//! The in-process request path with a mock provider that answers at once: what the gateway itself costs.
//!
//! `cargo bench --bench gateway_overhead`

// A bench that cannot set up aborts, as a test would.
#![allow(clippy::expect_used)]

use std::hint::black_box;
use std::sync::Arc;

use chitty::core::gateway::{
    Gateway, GatewayConfig, ModelConfig, RequestContext, RouteConfig, TenantConfig, api_key_digest,
};
use chitty::core::keys::{CacheDirective, CachePolicy, CacheScope, chat_key};
use chitty::core::wire::{ChatCompletionRequest, ChatMessage};
use chitty::core::{ModelPrice, NanoUsd};
use chitty::providers::memory::{CountingSink, MemoryBudgetStore, MemoryCache};
use chitty::providers::runtime::TokioRuntimeExt;
use chitty_testkit::mock::MockProvider;
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime")
}

fn gateway(rt: &tokio::runtime::Runtime) -> Gateway {
    let config = GatewayConfig {
        models: vec![ModelConfig {
            routes: vec![RouteConfig::new("mock", "mock-1")],
            price: ModelPrice::from_micros_per_mtok(150_000, 600_000),
            cache: CachePolicy::Always,
            ..ModelConfig::new("chitty-mock")
        }],
        tenants: vec![TenantConfig {
            budget_nano_usd: Some(NanoUsd::from_usd(1_000_000)),
            ..TenantConfig::new("bench", &api_key_digest("sk-bench"))
        }],
        ..Default::default()
    };
    rt.block_on(
        Gateway::builder(config)
            .provider(Arc::new(MockProvider::new("mock")))
            .cache(Arc::new(MemoryCache::new(256 << 20)))
            .budgets(Arc::new(MemoryBudgetStore::new()))
            .events(Arc::new(CountingSink::new()))
            .tokio_runtime()
            .build(),
    )
    .expect("gateway")
}

/// A realistic request of about `bytes` bytes of JSON: a system prompt, a few turns, sampling parameters.
fn request(bytes: usize, salt: u64) -> ChatCompletionRequest {
    let filler = "The quick brown fox jumps over the lazy dog while the gateway counts tokens. ";
    let body = filler.repeat(bytes / filler.len() / 3 + 1);
    ChatCompletionRequest {
        model: "chitty-mock".into(),
        messages: vec![
            ChatMessage::system(format!("You are a helpful assistant. {body}")),
            ChatMessage::user(format!("Question {salt}: {body}")),
            ChatMessage::assistant(body.clone()),
            ChatMessage::user("Summarise the above in one sentence."),
        ],
        temperature: Some(0.0),
        max_tokens: Some(64),
        ..Default::default()
    }
}

fn bench(c: &mut Criterion) {
    let rt = runtime();
    let gw = gateway(&rt);
    let ctx = RequestContext::new(gw.authenticate("sk-bench").expect("auth"), "bench", CacheDirective::Default);

    let mut salt = 0u64;
    c.bench_function("gateway/chat_miss_512B", |b| {
        b.to_async(&rt).iter_batched(
            || {
                salt += 1;
                request(512, salt)
            },
            |req| async { black_box(gw.chat(&ctx, req).await.expect("chat")) },
            BatchSize::SmallInput,
        )
    });

    let hot = request(512, 0);
    rt.block_on(gw.chat(&ctx, hot.clone())).expect("warm the cache");
    c.bench_function("gateway/chat_hit_512B", |b| {
        b.to_async(&rt).iter_batched(
            || hot.clone(),
            |req| async { black_box(gw.chat(&ctx, req).await.expect("chat")) },
            BatchSize::SmallInput,
        )
    });

    // The same two paths answered as JSON bytes (`chat_passthrough`, what the HTTP server sends): no parse of the cached
    // entry beyond its shape and usage, no encoding for the client.
    c.bench_function("gateway/chat_json_miss_512B", |b| {
        b.to_async(&rt).iter_batched(
            || {
                salt += 1;
                request(512, salt)
            },
            |req| async { black_box(gw.chat_passthrough(&ctx, req).await.expect("chat")) },
            BatchSize::SmallInput,
        )
    });
    c.bench_function("gateway/chat_json_hit_512B", |b| {
        b.to_async(&rt).iter_batched(
            || hot.clone(),
            |req| async { black_box(gw.chat_passthrough(&ctx, req).await.expect("chat")) },
            BatchSize::SmallInput,
        )
    });

    // The key of the hit request alone, to see what a hit costs besides hashing.
    let hot_size = serde_json::to_vec(&hot).expect("serialize").len();
    c.bench_function(&format!("cache_key/chat_{hot_size}B"), |b| {
        b.iter(|| black_box(chat_key(CacheScope::Tenant("bench"), black_box(&hot))))
    });

    let two_kb = request(2048, 7);
    let size = serde_json::to_vec(&two_kb).expect("serialize").len();
    c.bench_function(&format!("cache_key/chat_{size}B"), |b| {
        b.iter(|| black_box(chat_key(CacheScope::Tenant("bench"), black_box(&two_kb))))
    });

    // The mock provider alone, to subtract from the miss path.
    let mock = MockProvider::new("mock");
    c.bench_function("mock_provider/chat_512B", |b| {
        b.to_async(&rt).iter_batched(
            || request(512, 1),
            |req| async { black_box(chitty::core::Provider::chat(&mock, req).await.expect("chat")) },
            BatchSize::SmallInput,
        )
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
