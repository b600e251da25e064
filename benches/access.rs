//! Authentication against the gateway's local copy of the access store: hashing the key and one map lookup,
//! with 1, 10,000 and 100,000 keys, none of which reaches the store.
//!
//! `cargo bench --bench access`

// A bench that cannot set up its gateway has nothing to measure: failing loudly is the point.
#![allow(clippy::expect_used)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use chitty::core::Timestamp;
use chitty::core::access::{AccessStore, KeyDigest, KeyRecord, TenantRecord};
use chitty::core::gateway::{Gateway, GatewayConfig};
use chitty::providers::memory::MemoryAccessStore;
use chitty::providers::runtime::TokioRuntimeExt;
use criterion::{Criterion, criterion_group, criterion_main};

async fn gateway_with_keys(count: usize) -> Gateway {
    let store = Arc::new(MemoryAccessStore::new());
    store.create_tenant(TenantRecord::new("bench")).await.expect("tenant");
    for i in 0..count {
        let key = KeyRecord {
            id: format!("key_{i:016x}"),
            tenant: "bench".into(),
            parent: None,
            name: "bench".into(),
            digest: KeyDigest::of(&format!("sk-bench-{i}")),
            budget: None,
            models: None,
            expires_at: None,
            rpm: None,
            tpm: None,
            created_at: Timestamp(0),
            revoked_at: None,
        };
        store.create_key(key).await.expect("key");
    }
    Gateway::builder(GatewayConfig::default()).access(store).tokio_runtime().build().await.expect("gateway")
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let mut group = c.benchmark_group("authenticate");
    for count in [1, 10_000, 100_000] {
        let gateway = rt.block_on(gateway_with_keys(count));
        let secret = format!("sk-bench-{}", count / 2);
        group.bench_function(format!("{count}_keys"), |b| {
            b.iter(|| black_box(gateway.authenticate(black_box(&secret)).expect("a known key")))
        });
    }
    group.bench_function("unknown_key", |b| {
        let gateway = rt.block_on(gateway_with_keys(1));
        b.iter(|| black_box(gateway.authenticate(black_box("sk-nobody")).is_err()))
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(50).measurement_time(Duration::from_secs(2));
    targets = bench
}
criterion_main!(benches);
