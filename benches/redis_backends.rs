//! The Redis cache, budget store and rate limiter next to the in-memory ones: one call's latency, and 64
//! concurrent reserve+settle pairs (the atomic script's throughput). Redis rows run when Redis answers at `CHITTY_TEST_REDIS_URL`
//! (by default `redis://127.0.0.1:6379`).
//!
//! `CHITTY_TEST_REDIS_URL=redis://127.0.0.1:6379 cargo bench --bench redis_backends`

// A bench that cannot set up its backends has nothing to measure: failing loudly is the point.
#![allow(clippy::expect_used)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chitty::core::keys::CacheKey;
use chitty::core::ratelimit::{Gcra, LimitCheck, LimitKind, LocalRateLimiter, RateDecision, RateLimiter};
use chitty::core::{BudgetAccount, BudgetStore, Cache, NanoUsd, ReserveRequest, Timestamp};
use chitty::providers::memory::{MemoryBudgetStore, MemoryCache};
use chitty::providers::redis::{RedisBudgetStore, RedisCache, RedisConnection, RedisRateLimiter};
use criterion::{Criterion, criterion_group, criterion_main};

const TENANT: &str = "bench";

/// A backend's name, budget store and cache.
struct Backend {
    name: &'static str,
    budgets: Arc<dyn BudgetStore>,
    cache: Arc<dyn Cache>,
    limiter: Arc<dyn RateLimiter>,
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio runtime")
}

async fn reserve_settle(store: &dyn BudgetStore) {
    let now = Timestamp(1_700_000_000_000);
    // The tenant's account and one key's, as a request through a budgeted key reserves; neither can run out.
    let accounts = [
        BudgetAccount { name: chitty::core::budget::TENANT_ACCOUNT, limit: NanoUsd(u64::MAX) },
        BudgetAccount { name: "key_bench", limit: NanoUsd(u64::MAX) },
    ];
    let request = ReserveRequest {
        tenant: TENANT,
        accounts: &accounts,
        period: Timestamp(0),
        model: "bench-model",
        key: Some("key_bench"),
        min: NanoUsd(10),
        max: NanoUsd(1_000),
        lease: Duration::from_secs(60),
        now,
    };
    let r = store.reserve(request).await.expect("reserve");
    store.settle(&r, NanoUsd(5), now).await.expect("settle");
}

fn backends(rt: &tokio::runtime::Runtime) -> Vec<Backend> {
    let mut out = vec![Backend {
        name: "memory",
        budgets: Arc::new(MemoryBudgetStore::new()),
        cache: Arc::new(MemoryCache::new(64 << 20)),
        limiter: Arc::new(LocalRateLimiter::new()),
    }];
    match chitty_testkit::services::redis_url() {
        Ok(url) => {
            let connection = rt.block_on(RedisConnection::connect(&url)).expect("connect to Redis");
            // A fixed prefix: reruns reuse the same few keys instead of leaving new ones behind.
            let prefix = "chitty-bench";
            out.push(Backend {
                name: "redis",
                budgets: Arc::new(RedisBudgetStore::new(connection.clone(), prefix)),
                cache: Arc::new(RedisCache::new(connection.clone(), prefix)),
                limiter: Arc::new(RedisRateLimiter::new(connection, prefix)),
            });
        }
        Err(unavailable) => eprintln!("SKIPPED the Redis rows: {unavailable}"),
    }
    out
}

fn bench(c: &mut Criterion) {
    let rt = runtime();
    let backends = backends(&rt);

    let mut group = c.benchmark_group("budget_reserve_settle");
    for Backend { name, budgets, .. } in &backends {
        group.bench_function(*name, |b| b.to_async(&rt).iter(|| reserve_settle(budgets.as_ref())));
    }
    group.finish();

    let mut group = c.benchmark_group("budget_64_concurrent_reserve_settle");
    group.throughput(criterion::Throughput::Elements(64));
    for Backend { name, budgets, .. } in &backends {
        group.bench_function(*name, |b| {
            b.to_async(&rt).iter(|| async {
                let tasks: Vec<_> = (0..64)
                    .map(|_| {
                        let budgets = budgets.clone();
                        tokio::spawn(async move { reserve_settle(budgets.as_ref()).await })
                    })
                    .collect();
                for t in tasks {
                    t.await.expect("task");
                }
            })
        });
    }
    group.finish();

    // A request through a key: the tenant's and the key's requests and tokens per minute, four limits in one
    // admission, none of which a bench run can exhaust (the highest rates, unit costs, the real clock: the
    // limits' arrival times fall behind the clock however fast the loop runs).
    let mut group = c.benchmark_group("rate_limit_admission_4_limits");
    let limit = |kind| Gcra { kind, per_minute: u32::MAX, burst: u32::MAX };
    let checks = [
        LimitCheck { scope: "t", limit: limit(LimitKind::Requests), cost: 1 },
        LimitCheck { scope: "t", limit: limit(LimitKind::Tokens), cost: 1 },
        LimitCheck { scope: "k:key_bench", limit: limit(LimitKind::Requests), cost: 1 },
        LimitCheck { scope: "k:key_bench", limit: limit(LimitKind::Tokens), cost: 1 },
    ];
    for Backend { name, limiter, .. } in &backends {
        group.bench_function(*name, |b| {
            b.to_async(&rt).iter(|| async {
                let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("after 1970");
                let now = Timestamp(u64::try_from(now.as_millis()).expect("a 64-bit millisecond count"));
                let decision = limiter.acquire(TENANT, &checks, now).await.expect("acquire");
                assert!(matches!(decision, RateDecision::Admitted(_)));
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("cache_get_hit_1KiB");
    let key = CacheKey([42; 32]);
    for Backend { name, cache, .. } in &backends {
        rt.block_on(cache.put(&key, Bytes::from(vec![7u8; 1024]), Duration::from_secs(600))).expect("put");
        group.bench_function(*name, |b| {
            b.to_async(&rt).iter(|| async { black_box(cache.get(&key).await.expect("get")) })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
