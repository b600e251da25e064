//! The Redis cache and budget store pass the testkit's conformance suites against the machine's Redis
//! (`CHITTY_TEST_REDIS_URL`, by default `redis://127.0.0.1:6379`); when it is unreachable each test shows as
//! ignored with the reason (`harness = false`: see `chitty_testkit::services`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use chitty_core::keys::CacheKey;
use chitty_core::{
    Balance, BudgetStore, Cache, Error, NanoUsd, Reservation, ReserveRequest, Result, Settlement, Spend, SpendArchive,
    Timestamp,
};
use chitty_providers::redis::{ConnectionManagerConfig, RedisBudgetStore, RedisCache, RedisConnection};
use chitty_testkit::services::{self, block_on, block_on_multi_thread, trial};
use chitty_testkit::{budget, cache};
use redis::AsyncCommands;

fn main() -> std::process::ExitCode {
    let redis = services::redis_url();
    #[allow(unused_mut)] // which trials follow depends on the features
    let mut trials = vec![
        trial("redis_cache_conformance_and_key_layout", &redis, |url| {
            block_on(redis_cache_conformance_and_key_layout(url))
        }),
        trial("redis_budget_conformance", &redis, |url| block_on(redis_budget_conformance(url))),
        trial("redis_budget_1000_concurrent_reservations_never_overspend", &redis, |url| {
            block_on_multi_thread(redis_budget_1000_concurrent_reservations_never_overspend(url))
        }),
        trial("two_replicas_sharing_redis_never_overspend_together", &redis, |url| {
            block_on_multi_thread(two_replicas_sharing_redis_never_overspend_together(url))
        }),
        trial("amounts_above_2_pow_53_nano_usd_stay_exact", &redis, |url| {
            block_on(amounts_above_2_pow_53_nano_usd_stay_exact(url))
        }),
        trial("leases_follow_the_callers_clock_and_keys_share_one_hash_tag", &redis, |url| {
            block_on(leases_follow_the_callers_clock_and_keys_share_one_hash_tag(url))
        }),
        trial("a_lost_ledger_is_reseeded_from_the_spend_archive_not_left_at_zero", &redis, |url| {
            block_on(a_lost_ledger_is_reseeded_from_the_spend_archive_not_left_at_zero(url))
        }),
        trial("credentials_never_show_in_errors", &Ok(()), |()| block_on(credentials_never_show_in_errors())),
        trial("credentials_never_show_in_debug_or_auth_errors", &redis, |url| {
            block_on(credentials_never_show_in_debug_or_auth_errors(url))
        }),
        trial("a_killed_connection_fails_as_a_backend_error_then_reconnects", &redis, |url| {
            block_on(a_killed_connection_fails_as_a_backend_error_then_reconnects(url))
        }),
    ];
    #[cfg(feature = "memory")]
    trials.push(trial(
        "differential::random_workloads_match_the_in_memory_store_exactly",
        &redis,
        differential::random_workloads_match_the_in_memory_store_exactly,
    ));
    #[cfg(all(feature = "prometheus", feature = "server"))]
    trials.push(trial("a_gateway_on_redis_backends_caches_charges_and_counts", &redis, |url| {
        block_on(a_gateway_on_redis_backends_caches_charges_and_counts(url))
    }));
    services::run(trials)
}

/// A key prefix no other test or run uses.
fn unique_prefix(test: &str) -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
    format!("chitty-test:{test}:{}-{nanos}", std::process::id())
}

/// Deletes every key under `prefix` (budget keys have no TTL).
async fn remove_keys(connection: &RedisConnection, prefix: &str) {
    let mut manager = connection.manager();
    let keys: Vec<String> = {
        let mut iter: redis::AsyncIter<'_, String> = manager.scan_match(format!("{prefix}:*")).await.unwrap();
        let mut keys = Vec::new();
        while let Some(key) = iter.next_item().await {
            keys.push(key.unwrap());
        }
        keys
    };
    if !keys.is_empty() {
        let _: i64 = manager.del(keys).await.unwrap();
    }
}

/// A reservation on the tenant's own account with `limit`.
fn req<'a>(
    tenant: &'a str,
    accounts: &'a [chitty_core::BudgetAccount<'a>],
    min: u64,
    max: u64,
    lease: Duration,
    now: Timestamp,
) -> ReserveRequest<'a> {
    ReserveRequest { lease, ..budget::request(tenant, accounts, min, max, now) }
}

async fn redis_cache_conformance_and_key_layout(url: String) {
    let connection = RedisConnection::connect(&url).await.unwrap();
    let prefix = unique_prefix("cache");
    let c = RedisCache::new(connection.clone(), &prefix);
    cache::run_all(&c).await;

    let key = CacheKey([0xAB; 32]);
    c.put(&key, Bytes::from_static(b"\x00\xffvalue"), Duration::from_secs(30)).await.unwrap();
    let redis_key = format!("{prefix}:cache:{}", "ab".repeat(32));
    assert_eq!(c.redis_key(&key), redis_key);
    let mut manager = connection.manager();
    let raw: Vec<u8> = manager.get(&redis_key).await.unwrap();
    assert_eq!(raw, b"\x00\xffvalue", "values are stored as raw bytes");
    let pttl: i64 = manager.pttl(&redis_key).await.unwrap();
    assert!(pttl > 0 && pttl <= 30_000, "SET … PX sets the TTL: {pttl}");

    let forever = CacheKey([0xCD; 32]);
    c.put(&forever, Bytes::from_static(b"kept"), Duration::MAX).await.unwrap();
    let pttl: i64 = manager.pttl(c.redis_key(&forever)).await.unwrap();
    assert!(pttl > 99 * 365 * 24 * 3_600 * 1_000, "a huge TTL is capped at 100 years, not refused: {pttl}");

    c.put(&key, Bytes::from_static(b"gone"), Duration::ZERO).await.unwrap();
    assert_eq!(c.get(&key).await.unwrap(), None, "a zero TTL leaves no entry");

    let capped = RedisCache::new(connection.clone(), &prefix).with_max_entry_bytes(4);
    capped.put(&key, Bytes::from_static(b"1234"), Duration::from_secs(30)).await.unwrap();
    assert_eq!(capped.get(&key).await.unwrap().as_deref(), Some(&b"1234"[..]));
    capped.put(&key, Bytes::from_static(b"12345"), Duration::from_secs(30)).await.unwrap();
    assert_eq!(capped.get(&key).await.unwrap(), None, "an oversized value replaces the entry with nothing");
    remove_keys(&connection, &prefix).await;
}

async fn redis_budget_conformance(url: String) {
    let connection = RedisConnection::connect(&url).await.unwrap();
    let prefix = unique_prefix("budget");
    budget::run_all(&RedisBudgetStore::new(connection.clone(), &prefix)).await;
    remove_keys(&connection, &prefix).await;
}

async fn redis_budget_1000_concurrent_reservations_never_overspend(url: String) {
    let connection = RedisConnection::connect(&url).await.unwrap();
    let prefix = unique_prefix("concurrent");
    let store: Arc<dyn BudgetStore> = Arc::new(RedisBudgetStore::new(connection.clone(), &prefix));
    for _ in 0..5 {
        budget::concurrent_reservations(store.clone(), 1_000).await;
    }
    remove_keys(&connection, &prefix).await;
}

/// Sends each call to the next replica in turn, so a reservation is often settled by another replica than
/// the one that granted it.
#[derive(Debug)]
struct RoundRobin {
    replicas: Vec<RedisBudgetStore>,
    next: std::sync::atomic::AtomicUsize,
}

impl RoundRobin {
    fn pick(&self) -> &RedisBudgetStore {
        let i = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        &self.replicas[i % self.replicas.len()]
    }
}

#[async_trait]
impl BudgetStore for RoundRobin {
    async fn reserve(&self, request: ReserveRequest<'_>) -> Result<Reservation> {
        self.pick().reserve(request).await
    }
    async fn settle(&self, reservation: &Reservation, actual: NanoUsd, now: Timestamp) -> Result<Settlement> {
        self.pick().settle(reservation, actual, now).await
    }
    async fn release(&self, reservation: &Reservation, now: Timestamp) -> Result<()> {
        self.pick().release(reservation, now).await
    }
    async fn spend(&self, tenant: &str, period: Timestamp, now: Timestamp) -> Result<Spend> {
        self.pick().spend(tenant, period, now).await
    }
}

async fn two_replicas_sharing_redis_never_overspend_together(url: String) {
    let prefix = unique_prefix("replicas");
    // Two connections, as two gateway processes would have.
    let a = RedisBudgetStore::new(RedisConnection::connect(&url).await.unwrap(), &prefix);
    let b = RedisBudgetStore::new(RedisConnection::connect(&url).await.unwrap(), &prefix);

    // Both replicas race for one tenant's budget: grants never sum above the limit.
    let tenant = budget::unique_tenant("race");
    let now = Timestamp(1_000_000);
    let mut tasks = Vec::new();
    for i in 0..400 {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        let tenant = tenant.clone();
        tasks.push(tokio::spawn(async move {
            let accounts = budget::tenant_account(10_000);
            store.reserve(req(&tenant, &accounts, 50, 100, Duration::from_secs(60), now)).await
        }));
    }
    let mut granted = Vec::new();
    for task in tasks {
        match task.await.unwrap() {
            Ok(r) => granted.push(r),
            Err(Error::BudgetExhausted { .. }) => {}
            Err(e) => panic!("reserve failed: {e}"),
        }
    }
    let total: u64 = granted.iter().map(|r| r.amount.0).sum();
    assert!(total <= 10_000, "replicas granted {total} together against a limit of 10000");
    assert!(total >= 9_950, "the budget is used up to less than one minimum grant: {total}");
    let (ba, bb) = (budget::balance(&a, &tenant, 10_000, now).await, budget::balance(&b, &tenant, 10_000, now).await);
    assert_eq!(ba, bb, "both replicas see one ledger");
    assert_eq!(ba.reserved, NanoUsd(total));
    // A reservation granted by one replica is settled by the other, once.
    for (i, r) in granted.iter().enumerate() {
        let (settler, other) = if i % 2 == 0 { (&b, &a) } else { (&a, &b) };
        settler.settle(r, NanoUsd(r.amount.0 / 2), now).await.unwrap();
        assert!(matches!(other.settle(r, NanoUsd(1), now).await, Err(Error::ReservationNotFound { .. })));
    }
    let settled: u64 = granted.iter().map(|r| r.amount.0 / 2).sum();
    let balance = budget::balance(&a, &tenant, 10_000, now).await;
    assert_eq!((balance.spent, balance.reserved), (NanoUsd(settled), NanoUsd(0)));

    // And the testkit's mixed workload, each call going to the next replica.
    let round_robin: Arc<dyn BudgetStore> =
        Arc::new(RoundRobin { replicas: vec![a.clone(), b.clone()], next: Default::default() });
    for _ in 0..3 {
        budget::concurrent_reservations(round_robin.clone(), 1_000).await;
    }
    remove_keys(&RedisConnection::connect(&url).await.unwrap(), &prefix).await;
}

async fn amounts_above_2_pow_53_nano_usd_stay_exact(url: String) {
    let connection = RedisConnection::connect(&url).await.unwrap();
    let prefix = unique_prefix("big");
    let store = RedisBudgetStore::new(connection.clone(), &prefix);
    let tenant = budget::unique_tenant("big");
    let now = Timestamp(1_000_000);
    let lease = Duration::from_secs(60);
    let limit = u64::MAX - 7;
    let accounts = budget::tenant_account(limit);

    let above = (1u64 << 53) + 1; // not representable as a double
    let r = store.reserve(req(&tenant, &accounts, above, above, lease, now)).await.unwrap();
    assert_eq!(r.amount, NanoUsd(above));
    let s = store.settle(&r, NanoUsd(above - 2), now).await.unwrap();
    assert_eq!((s.charged, s.refunded), (NanoUsd(above - 2), NanoUsd(2)));
    let b = budget::balance(&store, &tenant, limit, now).await;
    assert_eq!((b.limit, b.spent, b.reserved), (NanoUsd(limit), NanoUsd(above - 2), NanoUsd(0)));

    let rest = store.reserve(req(&tenant, &accounts, 1, u64::MAX, lease, now)).await.unwrap();
    assert_eq!(rest.amount, NanoUsd(limit - (above - 2)), "grants exactly what remains");
    match store.reserve(req(&tenant, &accounts, 1, 1, lease, now)).await {
        Err(Error::BudgetExhausted { needed, remaining }) => assert_eq!((needed, remaining), (NanoUsd(1), NanoUsd(0))),
        other => panic!("expected exhaustion, got {other:?}"),
    }
    // A cost above the reservation is compared exactly (limb by limb) and charged as the reservation.
    let s = store.settle(&rest, NanoUsd(u64::MAX), now).await.unwrap();
    assert_eq!((s.charged, s.excess), (rest.amount, NanoUsd(u64::MAX - rest.amount.0)));
    let b = budget::balance(&store, &tenant, limit, now).await;
    assert_eq!(
        (b.spent, b.reserved, b.remaining()),
        (NanoUsd(limit), NanoUsd(0), NanoUsd(0)),
        "spend stops at the limit"
    );
    remove_keys(&connection, &prefix).await;
}

async fn leases_follow_the_callers_clock_and_keys_share_one_hash_tag(url: String) {
    let connection = RedisConnection::connect(&url).await.unwrap();
    let prefix = unique_prefix("lease");
    let store = RedisBudgetStore::new(connection.clone(), &prefix);
    // Braces and `%` are escaped so the hash tag stays one tag per tenant.
    let tenant = format!("{}{{x}}%", budget::unique_tenant("tag"));
    let t0 = Timestamp(1_000_000);
    let accounts = budget::tenant_account(1_000);
    let r = store.reserve(req(&tenant, &accounts, 600, 600, Duration::from_millis(1_500), t0)).await.unwrap();
    assert_eq!(r.expires_at, Timestamp(1_001_500));
    // Virtual time: years after Redis's own clock passed t0, the lease still holds until the caller's now.
    assert_eq!(budget::balance(&store, &tenant, 1_000, Timestamp(1_001_499)).await.reserved, NanoUsd(600));
    assert_eq!(budget::balance(&store, &tenant, 1_000, Timestamp(1_001_500)).await.reserved, NanoUsd(0));
    assert!(matches!(store.release(&r, Timestamp(1_001_500)).await, Err(Error::ReservationNotFound { .. })));

    let escaped = tenant.replace('%', "%25").replace('{', "%7B").replace('}', "%7D");
    let mut manager = connection.manager();
    for suffix in ["p:0", "live", "expiry", "seq"] {
        let key = format!("{prefix}:budget:{{{escaped}}}:{suffix}");
        let exists: bool = manager.exists(&key).await.unwrap();
        let live_or_expiry_emptied = matches!(suffix, "live" | "expiry");
        assert!(exists || live_or_expiry_emptied, "{key} missing");
    }
    let seq: String = manager.get(format!("{prefix}:budget:{{{escaped}}}:seq")).await.unwrap();
    assert_eq!(seq, r.id, "ids come from INCR");

    let empty = store.spend("", Timestamp(0), t0).await;
    assert!(matches!(empty, Err(Error::InvalidRequest { .. })), "empty tenants are refused");
    remove_keys(&connection, &prefix).await;
}

async fn credentials_never_show_in_errors() {
    // A refused port: no server needed.
    let config = ConnectionManagerConfig::new()
        .set_number_of_retries(0)
        .set_connection_timeout(Some(Duration::from_millis(200)));
    let err = RedisConnection::connect_with_config("redis://user:hunter2-secret@127.0.0.1:1/3", config)
        .await
        .expect_err("nothing listens on port 1");
    let text = format!("{err} | {err:?} | {:?}", std::error::Error::source(&err));
    assert!(matches!(err, Error::Backend { backend: "redis", .. }), "{text}");
    assert!(!text.contains("hunter2"), "{text}");
    assert!(text.contains("127.0.0.1:1/3"), "errors name the server: {text}");
    let err = RedisConnection::connect("http://user:hunter2-secret@").await.expect_err("not a Redis URL");
    assert!(!format!("{err} {err:?}").contains("hunter2"));
}

async fn credentials_never_show_in_debug_or_auth_errors(url: String) {
    let connection = RedisConnection::connect(&url).await.unwrap();
    let store = RedisBudgetStore::new(connection.clone(), "p");
    let cache = RedisCache::new(connection.clone(), "p");
    for shown in [format!("{connection:?}"), format!("{store:?}"), format!("{cache:?}")] {
        assert!(!shown.contains("redis://"), "{shown}");
    }
    // The server has no password: AUTH fails, and the error must not repeat the one given.
    let with_password = url.replacen("redis://", "redis://:hunter2-secret@", 1);
    let config = ConnectionManagerConfig::new().set_number_of_retries(0);
    if let Err(err) = RedisConnection::connect_with_config(&with_password, config).await {
        let text = format!("{err} | {err:?}");
        assert!(!text.contains("hunter2"), "{text}");
    }
}

/// Random workloads against Redis and the in-memory store, step by step.
#[cfg(feature = "memory")]
mod differential {
    use super::*;

    /// One step of a random budget workload.
    #[derive(Debug, Clone)]
    enum Op {
        SetLimit(u64),
        Reserve { min: u64, max: u64, lease_ms: u64 },
        Settle { index: usize, actual: u64 },
        Release { index: usize },
        Advance(u64),
    }

    fn amount() -> impl proptest::strategy::Strategy<Value = u64> {
        use proptest::prelude::*;
        // Small sums, amounts around 2^53 (where doubles stop being exact) and the whole u64 range.
        prop_oneof![0..5_000u64, ((1u64 << 53) - 4)..((1u64 << 53) + 4), any::<u64>(), (u64::MAX - 4)..=u64::MAX]
    }

    fn op() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        prop_oneof![
            1 => amount().prop_map(Op::SetLimit),
            4 => (amount(), amount(), 1..3_000u64).prop_map(|(a, b, lease_ms)| Op::Reserve {
                min: a.min(b),
                max: a.max(b),
                lease_ms
            }),
            2 => (0..16usize, amount()).prop_map(|(index, actual)| Op::Settle { index, actual }),
            1 => (0..16usize).prop_map(|index| Op::Release { index }),
            1 => (0..2_000u64).prop_map(Op::Advance),
        ]
    }

    /// The outcome of one operation, comparable across stores (reservation ids differ by design).
    #[derive(Debug, PartialEq, Eq)]
    enum Outcome {
        Done,
        Granted(NanoUsd, Timestamp),
        Settled(Settlement),
        Exhausted(NanoUsd, NanoUsd),
        NotFound,
        Other(String),
    }

    fn outcome<T>(result: Result<T>, ok: impl FnOnce(T) -> Outcome) -> Outcome {
        match result {
            Ok(v) => ok(v),
            Err(Error::BudgetExhausted { needed, remaining }) => Outcome::Exhausted(needed, remaining),
            Err(Error::ReservationNotFound { .. }) => Outcome::NotFound,
            Err(e) => Outcome::Other(e.to_string()),
        }
    }

    /// Runs `ops` against `store`, returning every outcome and the balance after each step.
    async fn replay(store: &dyn BudgetStore, tenant: &str, ops: &[Op]) -> Vec<(Outcome, Balance)> {
        let mut now = Timestamp(1_000_000);
        // Limits travel with each reservation; a zero limit until the workload sets one.
        let mut limit = 0;
        let mut reservations: Vec<Reservation> = Vec::new();
        let mut trace = Vec::new();
        for op in ops {
            let result = match op {
                Op::SetLimit(new_limit) => {
                    limit = *new_limit;
                    Outcome::Done
                }
                Op::Reserve { min, max, lease_ms } => {
                    let accounts = budget::tenant_account(limit);
                    let request = req(tenant, &accounts, *min, *max, Duration::from_millis(*lease_ms), now);
                    outcome(store.reserve(request).await, |r| {
                        let granted = Outcome::Granted(r.amount, r.expires_at);
                        reservations.push(r);
                        granted
                    })
                }
                Op::Settle { index, actual } => match reservations.get(*index) {
                    Some(r) => outcome(store.settle(r, NanoUsd(*actual), now).await, Outcome::Settled),
                    None => Outcome::Done,
                },
                Op::Release { index } => match reservations.get(*index) {
                    Some(r) => outcome(store.release(r, now).await, |()| Outcome::Done),
                    None => Outcome::Done,
                },
                Op::Advance(ms) => {
                    now = now.plus(Duration::from_millis(*ms));
                    Outcome::Done
                }
            };
            trace.push((result, budget::balance(store, tenant, limit, now).await));
        }
        trace
    }

    pub(super) fn random_workloads_match_the_in_memory_store_exactly(url: String) {
        use proptest::test_runner::{Config, TestRunner};
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let prefix = unique_prefix("differential");
        let connection = runtime.block_on(RedisConnection::connect(&url)).unwrap();
        let redis_store = RedisBudgetStore::new(connection.clone(), &prefix);
        let mut runner = TestRunner::new(Config { cases: 96, ..Config::default() });
        let ops = proptest::collection::vec(op(), 1..48);
        let result = runner.run(&ops, |ops| {
            runtime.block_on(async {
                let tenant = budget::unique_tenant("diff");
                let memory = chitty_providers::memory::MemoryBudgetStore::new();
                let expected = replay(&memory, &tenant, &ops).await;
                let actual = replay(&redis_store, &tenant, &ops).await;
                for (step, (e, a)) in expected.iter().zip(&actual).enumerate() {
                    proptest::prop_assert_eq!(e, a, "step {} ({:?}) differs", step, ops[step]);
                }
                Ok(())
            })
        });
        runtime.block_on(remove_keys(&connection, &prefix));
        if let Err(e) = result {
            panic!("{e}");
        }
    }
}

/// A gateway assembled as the example does with `backend = "redis"` and `/metrics`, over HTTP: the second
/// identical request is a cache hit from Redis, spend lands in Redis, and the metrics say so.
#[cfg(all(feature = "prometheus", feature = "server"))]
async fn a_gateway_on_redis_backends_caches_charges_and_counts(url: String) {
    use chitty_core::gateway::{Gateway, GatewayConfig, ModelConfig, RouteConfig, TenantConfig};
    use chitty_core::keys::CachePolicy;
    use chitty_core::{Clock, ModelPrice};
    use chitty_providers::prometheus::{PrometheusSink, Registry, metrics_router};
    use chitty_providers::runtime::{SystemClock, TokioRuntimeExt};
    use chitty_providers::server::{ServerOptions, router};
    use chitty_testkit::mock::MockProvider;

    let prefix = unique_prefix("gateway");
    let tenant_id = budget::unique_tenant("gw");
    let config = GatewayConfig {
        models: vec![ModelConfig {
            routes: vec![RouteConfig::new("mock", "up")],
            price: ModelPrice::from_micros_per_mtok(1_000_000, 2_000_000),
            cache: CachePolicy::Deterministic,
            max_output_tokens: 100,
            ..ModelConfig::new("chat")
        }],
        tenants: vec![TenantConfig {
            budget_nano_usd: Some(NanoUsd::ONE_USD),
            ..TenantConfig::new(&tenant_id, &chitty_core::gateway::api_key_digest("sk-redis"))
        }],
        ..Default::default()
    };

    // What the example does for `backend = "redis"` and `/metrics`.
    let connection = RedisConnection::connect(&url).await.unwrap();
    let budgets = Arc::new(RedisBudgetStore::new(connection.clone(), &prefix));
    let mut registry = Registry::default();
    let metrics = Arc::new(
        PrometheusSink::new(&mut registry, config.models.iter().map(|m| m.name.as_str()))
            .with_tenants([tenant_id.as_str()]),
    );
    let gateway = Gateway::builder(config)
        .provider(Arc::new(MockProvider::new("mock")))
        .cache(Arc::new(RedisCache::new(connection.clone(), &prefix)))
        .budgets(budgets.clone())
        .events(metrics)
        .tokio_runtime()
        .build()
        .await
        .unwrap();
    let app = router(gateway, ServerOptions::default()).merge(metrics_router(Arc::new(registry)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let client = reqwest::Client::new();
    let body = serde_json::json!({
        "model": "chat",
        "messages": [{"role": "user", "content": format!("hello {prefix}")}],
        "temperature": 0
    });
    let mut answers = Vec::new();
    let mut cost = 0u64;
    for expected in ["miss", "hit"] {
        let response = client
            .post(format!("http://{addr}/v1/chat/completions"))
            .bearer_auth("sk-redis")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["x-chitty-cache"], expected);
        if let Some(c) = response.headers().get("x-chitty-cost-nano-usd") {
            cost += c.to_str().unwrap().parse::<u64>().unwrap();
        }
        let json: serde_json::Value = response.json().await.unwrap();
        answers.push(json["choices"][0]["message"]["content"].clone());
    }
    assert_eq!(answers[0], answers[1], "the hit is the stored answer");

    let balance = budget::balance(budgets.as_ref(), &tenant_id, NanoUsd::ONE_USD.0, SystemClock.now()).await;
    assert_eq!((balance.spent, balance.reserved), (NanoUsd(cost), NanoUsd(0)), "only the miss was charged");
    assert!(balance.spent > NanoUsd(0));

    let text = client.get(format!("http://{addr}/metrics")).send().await.unwrap().text().await.unwrap();
    for cache in ["miss", "hit"] {
        let line = format!(
            r#"chitty_requests_total{{model="chat",tenant="{tenant_id}",endpoint="chat.completions",status="200",cache="{cache}"}} 1"#
        );
        assert!(text.lines().any(|l| l == line), "missing {line} in:\n{text}");
    }
    assert!(
        text.contains(&format!("chitty_cost_nano_usd_total{{model=\"chat\",tenant=\"{tenant_id}\"}} {cost}\n")),
        "{text}"
    );
    server.abort();
    remove_keys(&connection, &prefix).await;
}

async fn a_killed_connection_fails_as_a_backend_error_then_reconnects(url: String) {
    let connection = RedisConnection::connect(&url).await.unwrap();
    let prefix = unique_prefix("reconnect");
    let store = RedisBudgetStore::new(connection.clone(), &prefix);
    let tenant = budget::unique_tenant("rc");
    let now = Timestamp(1_000_000);
    let accounts = budget::tenant_account(1_000);
    let r = store.reserve(req(&tenant, &accounts, 400, 400, Duration::from_secs(60), now)).await.unwrap();

    // Kill only this test's own connection, from a second one.
    let id: i64 = redis::cmd("CLIENT").arg("ID").query_async(&mut connection.manager()).await.unwrap();
    let killer = RedisConnection::connect(&url).await.unwrap();
    let killed: i64 =
        redis::cmd("CLIENT").arg("KILL").arg("ID").arg(id).query_async(&mut killer.manager()).await.unwrap();
    assert_eq!(killed, 1);

    let mut failures = 0;
    let balance = loop {
        match store.spend(&tenant, Timestamp(0), now).await {
            Ok(spend) => break Balance::new(NanoUsd(1_000), spend.tenant()),
            Err(Error::BackendUnavailable { backend: "redis", .. } | Error::Backend { backend: "redis", .. })
                if failures < 50 =>
            {
                failures += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("expected a redis backend error or a balance, got {e:?}"),
        }
    };
    assert_eq!((balance.limit, balance.reserved), (NanoUsd(1_000), NanoUsd(400)), "state survives the reconnect");
    store.settle(&r, NanoUsd(100), now).await.unwrap();
    assert_eq!(budget::balance(&store, &tenant, 1_000, now).await.spent, NanoUsd(100));
    remove_keys(&connection, &prefix).await;
}

/// An archive whose database is down.
#[derive(Debug)]
struct UnreachableArchive;

#[async_trait]
impl SpendArchive for UnreachableArchive {
    async fn save_spend(&self, _: &str, _: Timestamp, _: &Spend) -> Result<()> {
        Err(Error::backend("postgres", "connection refused"))
    }

    async fn load_spend(&self, _: &str, _: Timestamp) -> Result<Option<Spend>> {
        Err(Error::backend("postgres", "connection refused"))
    }
}

/// Redis losing its data (every key deleted) does not hand a tenant its budget again: the ledger is re-seeded
/// from the archive before anything is admitted; a ledger that predates the seeding mark is not counted
/// twice; an archive that cannot be read refuses with 503 rather than admitting against zero.
async fn a_lost_ledger_is_reseeded_from_the_spend_archive_not_left_at_zero(url: String) {
    let connection = RedisConnection::connect(&url).await.unwrap();
    let prefix = unique_prefix("reseed");
    let archive = Arc::new(chitty_providers::memory::MemoryAccessStore::new());
    let store =
        RedisBudgetStore::new(connection.clone(), &prefix).with_archive(archive.clone(), Duration::from_secs(3600));
    budget::run_all(&store).await;

    let tenant = budget::unique_tenant("reseed");
    let accounts = budget::tenant_account(1_000);
    let now = Timestamp(1_700_000_000_000);
    let r = store.reserve(budget::request(&tenant, &accounts, 600, 600, now)).await.unwrap();
    store.settle(&r, NanoUsd(600), now).await.unwrap();
    assert!(store.save_spend().await.unwrap() >= 1, "the settled ledger is saved");
    assert_eq!(store.save_spend().await.unwrap(), 0, "nothing settled since: nothing to save");

    remove_keys(&connection, &prefix).await;
    let refused = store.reserve(budget::request(&tenant, &accounts, 401, 401, now)).await.unwrap_err();
    assert!(
        matches!(refused, Error::BudgetExhausted { remaining: NanoUsd(400), .. }),
        "after the loss only the 400 left before it is available: {refused:?}"
    );
    let r = store.reserve(budget::request(&tenant, &accounts, 400, 400, now)).await.unwrap();
    store.settle(&r, NanoUsd(400), now).await.unwrap();
    let spend = store.spend(&tenant, Timestamp(0), now).await.unwrap();
    assert_eq!(spend.tenant().spent, NanoUsd(1_000));
    assert_eq!(spend.by_model["m"], NanoUsd(1_000), "spend by model is re-seeded too");

    // A ledger written by a store without an archive, then also saved: the mark is added, the spend is not.
    let older = budget::unique_tenant("premark");
    let plain = RedisBudgetStore::new(connection.clone(), &prefix);
    let r = plain.reserve(budget::request(&older, &accounts, 300, 300, now)).await.unwrap();
    plain.settle(&r, NanoUsd(300), now).await.unwrap();
    archive.save_spend(&older, Timestamp(0), &plain.spend(&older, Timestamp(0), now).await.unwrap()).await.unwrap();
    store.reserve(budget::request(&older, &accounts, 700, 700, now)).await.expect("300 spent, not 600");

    let down = RedisBudgetStore::new(connection.clone(), &prefix)
        .with_archive(Arc::new(UnreachableArchive), Duration::from_secs(3600));
    let refused =
        down.reserve(budget::request(&budget::unique_tenant("down"), &accounts, 1, 1, now)).await.unwrap_err();
    assert!(matches!(refused, Error::BackendUnavailable { .. }), "{refused:?}");
    assert_eq!(refused.status(), 503);
    remove_keys(&connection, &prefix).await;
}
