//! Two gateway replicas sharing the machine's PostgreSQL (tenants and keys) and Redis (budgets and rate
//! limits), each serving the OpenAI API and the admin API over HTTP: budgets that nest are never overrun by
//! either, and one key's requests-per-minute limit holds across both. Also: Redis going away is a 503 with
//! `Retry-After`, not a 500. Services at `CHITTY_TEST_POSTGRES_URL` and `CHITTY_TEST_REDIS_URL`; when one is
//! unreachable each test shows as ignored with the reason (`harness = false`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use chitty_core::access::KeyDigest;
use chitty_core::budget::TENANT_ACCOUNT;
use chitty_core::gateway::{Gateway, GatewayConfig, ModelConfig, RouteConfig};
use chitty_core::runtime::TokioRuntimeExt;
use chitty_core::{BudgetStore, ModelPrice, NanoUsd, Timestamp};
use chitty_providers::access_sync::AccessSync;
use chitty_providers::memory::CollectingSink;
use chitty_providers::postgres::PostgresAccessStore;
use chitty_providers::redis::{RedisBudgetStore, RedisConnection, RedisRateLimiter};
use chitty_providers::server::{ConnectionLimits, Server, ServerOptions, admin_router, router};
use chitty_testkit::mock::MockProvider;
use chitty_testkit::services::{self, block_on_multi_thread, trial};
use futures::{StreamExt, stream};
use rand::Rng;
use serde_json::{Value, json};

const ADMIN_KEY: &str = "sk-admin-replicas-test";

fn main() -> std::process::ExitCode {
    let postgres = services::postgres_url();
    let redis = services::redis_url();
    let both = postgres.and_then(|pg| redis.clone().map(|r| (pg, r)));
    // One at a time: the 5,000-request stampede would otherwise slow Redis past its timeouts under the RPM test.
    services::run_serially(vec![
        trial("nested_budgets_hold_across_two_replicas_under_5000_concurrent_requests", &both, |(pg, r)| {
            block_on_multi_thread(nested_budgets_hold_across_two_replicas(pg, r))
        }),
        trial("one_keys_600_rpm_holds_across_two_replicas", &both, |(pg, r)| {
            block_on_multi_thread(one_keys_rpm_holds_across_two_replicas(pg, r))
        }),
        trial("redis_going_away_is_a_503_with_retry_after", &both, |(pg, r)| {
            block_on_multi_thread(redis_going_away_is_a_503_with_retry_after(pg, r))
        }),
    ])
}

/// Keys no other run uses.
fn unique_prefix(test: &str) -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
    format!("chitty-test:{test}:{}-{nanos}", std::process::id())
}

struct Replica {
    base: String,
    gateway: Gateway,
    events: Arc<CollectingSink>,
    _sync: AccessSync,
}

/// $1 per million input tokens, $2 per million output tokens.
fn config() -> GatewayConfig {
    GatewayConfig {
        models: vec![ModelConfig {
            routes: vec![RouteConfig::new("mock", "chat")],
            price: ModelPrice::from_micros_per_mtok(1_000_000, 2_000_000),
            max_output_tokens: 64,
            ..ModelConfig::new("chat")
        }],
        ..GatewayConfig::default()
    }
}

async fn replica(postgres: &str, redis: &str, prefix: &str) -> Replica {
    let access = PostgresAccessStore::connect(postgres).await.unwrap();
    let changes = access.changes().await.unwrap();
    let connection = RedisConnection::connect(redis).await.unwrap();
    let events = Arc::new(CollectingSink::new());
    let gateway = Gateway::builder(config())
        .provider(Arc::new(MockProvider::new("mock")))
        .access(Arc::new(access))
        .budgets(Arc::new(RedisBudgetStore::new(connection.clone(), prefix)))
        .rate_limiter(Arc::new(RedisRateLimiter::new(connection, prefix)))
        .events(events.clone())
        .tokio_runtime()
        .build()
        .await
        .unwrap();
    let app = router(gateway.clone(), ServerOptions::default())
        .merge(admin_router(gateway.clone(), vec![KeyDigest::of(ADMIN_KEY)]).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(
        async move { Server::new(ConnectionLimits::default()).serve(listener, app, std::future::pending()).await },
    );
    let sync = AccessSync::spawn(gateway.clone(), Some(changes), Duration::from_secs(30));
    Replica { base, gateway, events, _sync: sync }
}

async fn admin(http: &reqwest::Client, base: &str, path: &str, body: Value) -> Value {
    let response = http.post(format!("{base}{path}")).bearer_auth(ADMIN_KEY).json(&body).send().await.unwrap();
    assert_eq!(response.status(), 201, "{path}");
    response.json().await.unwrap()
}

/// Waits until `secret` authenticates on `gateway` (the other replica learns of it by NOTIFY).
async fn known(gateway: &Gateway, secret: &str) {
    let start = Instant::now();
    while gateway.authenticate(secret).is_err() {
        assert!(start.elapsed() < Duration::from_secs(1), "the key did not reach the other replica within 1 s");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn nested_budgets_hold_across_two_replicas(postgres: String, redis: String) {
    let prefix = unique_prefix("nested");
    let (a, b) = (replica(&postgres, &redis, &prefix).await, replica(&postgres, &redis, &prefix).await);
    let http = reqwest::Client::builder().pool_max_idle_per_host(64).build().unwrap();
    let tenant = format!("nested-{:016x}", rand::random::<u64>());
    // The tenant's $0.10 binds before its keys' $0.05 + $0.06 do; the delegated key's $0.03 inside its parent's.
    admin(&http, &a.base, "/admin/v1/tenants", json!({"id": tenant, "budget_usd": "0.10"})).await;
    let keys_path = format!("/admin/v1/tenants/{tenant}/keys");
    let parent = admin(&http, &a.base, &keys_path, json!({"name": "parent", "budget_usd": "0.05"})).await;
    let delegated_path = format!("/admin/v1/keys/{}/delegate", parent["id"].as_str().unwrap());
    let child = admin(&http, &a.base, &delegated_path, json!({"name": "child", "budget_usd": "0.03"})).await;
    let other = admin(&http, &a.base, &keys_path, json!({"name": "other", "budget_usd": "0.06"})).await;
    let keys: Vec<(String, String, u64)> = [(&parent, 50_000_000), (&child, 30_000_000), (&other, 60_000_000)]
        .iter()
        .map(|(k, limit)| (k["id"].as_str().unwrap().to_owned(), k["key"].as_str().unwrap().to_owned(), *limit))
        .collect();
    for (_, secret, _) in &keys {
        known(&b.gateway, secret).await;
    }

    let bases = [a.base.clone(), b.base.clone()];
    let outcomes: Vec<u16> = stream::iter(0..5_000)
        .map(|_| {
            let mut rng = rand::rng();
            let base = bases[rng.random_range(0..2)].clone();
            let secret = keys[rng.random_range(0..3)].1.clone();
            let (max_tokens, streamed, cut) = (rng.random_range(1..=64u32), rng.random_bool(0.3), rng.random_bool(0.5));
            let request = http.post(format!("{base}/v1/chat/completions")).bearer_auth(secret).json(&json!({
                "model": "chat", "max_tokens": max_tokens, "stream": streamed,
                "messages": [{"role": "user", "content": format!("tell me about {}", rng.random::<u32>())}],
            }));
            async move {
                let response = request.send().await.unwrap();
                let status = response.status().as_u16();
                if streamed && cut && status == 200 {
                    // The client goes away after the first piece; the gateway settles for what was produced.
                    let mut body = response.bytes_stream();
                    let _ = body.next().await;
                } else {
                    let _ = response.bytes().await;
                }
                status
            }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    let ok = outcomes.iter().filter(|s| **s == 200).count();
    let refused = outcomes.iter().filter(|s| **s == 429).count();
    assert_eq!(
        ok + refused,
        5_000,
        "only answers and budget refusals: {:?}",
        outcomes.iter().find(|s| !matches!(s, 200 | 429))
    );
    assert!(
        ok > 100 && refused > 100,
        "the budgets must bind for the test to mean anything: {ok} ok, {refused} refused"
    );

    // Abandoned streams settle in the background: wait until nothing is held.
    let store = RedisBudgetStore::new(RedisConnection::connect(&redis).await.unwrap(), &prefix);
    let start = Instant::now();
    let spend = loop {
        let spend = store.spend(&tenant, Timestamp(0), a.gateway.now()).await.unwrap();
        if spend.accounts.values().all(|s| s.reserved == NanoUsd::ZERO) {
            break spend;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "reservations still held: {spend:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let settled: u64 =
        [&a, &b].iter().flat_map(|r| r.events.requests()).filter(|r| r.tenant == tenant).map(|r| r.cost.0).sum();
    let tenant_spent = spend.account(TENANT_ACCOUNT).spent.0;
    println!("{ok} answered, {refused} refused; tenant spent {tenant_spent} of 100000000 nano-USD");
    assert_eq!(tenant_spent, settled, "the ledger equals the sum of settled costs, to the nano-USD");
    assert!(tenant_spent <= 100_000_000, "the tenant overspent: {tenant_spent}");
    for (id, _, limit) in &keys {
        let spent = spend.account(id).spent.0;
        assert!(spent <= *limit, "key {id} spent {spent} of {limit}");
    }
    let (parent_id, child_id, other_id) = (&keys[0].0, &keys[1].0, &keys[2].0);
    assert_eq!(
        spend.account(parent_id).spent,
        spend.by_key[parent_id] + spend.by_key[child_id],
        "the parent pays for its child"
    );
    assert_eq!(spend.by_key.values().map(|c| c.0).sum::<u64>(), tenant_spent);
    assert_eq!(spend.by_key[other_id], spend.account(other_id).spent);
}

async fn one_keys_rpm_holds_across_two_replicas(postgres: String, redis: String) {
    let prefix = unique_prefix("rpm");
    let (a, b) = (replica(&postgres, &redis, &prefix).await, replica(&postgres, &redis, &prefix).await);
    let http = reqwest::Client::builder().pool_max_idle_per_host(64).build().unwrap();
    let tenant = format!("rpm-{:016x}", rand::random::<u64>());
    admin(&http, &a.base, "/admin/v1/tenants", json!({"id": tenant})).await;
    let key =
        admin(&http, &a.base, &format!("/admin/v1/tenants/{tenant}/keys"), json!({"name": "k", "rpm": 600})).await;
    let secret = key["key"].as_str().unwrap().to_owned();
    known(&b.gateway, &secret).await;

    // 3,000 requests in 10 s, alternating replicas: 300 a second, five times the limit.
    let start = tokio::time::Instant::now();
    let mut tasks = Vec::with_capacity(3_000);
    for i in 0..3_000u64 {
        tokio::time::sleep_until(start + Duration::from_micros(i * 10_000 / 3)).await;
        let base = if i % 2 == 0 { &a.base } else { &b.base };
        let request = http.post(format!("{base}/v1/chat/completions")).bearer_auth(&secret).json(&json!({
            "model": "chat", "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]
        }));
        tasks.push(tokio::spawn(async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            let headers = response.headers().clone();
            let body: Value = response.json().await.unwrap();
            (status, headers, body)
        }));
    }
    let mut admitted = 0;
    for task in tasks {
        let (status, headers, body) = task.await.unwrap();
        let limit = headers.get("x-ratelimit-limit-requests").and_then(|v| v.to_str().ok());
        assert_eq!(limit, Some("600"), "every answer carries the limit: {status} {body}");
        match status {
            200 => admitted += 1,
            429 => {
                assert_eq!(body["error"]["code"], "rate_limit_exceeded", "{body}");
                let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
                assert!((1..=60).contains(&retry), "Retry-After {retry}");
                assert_eq!(headers["x-ratelimit-remaining-requests"], "0");
            }
            other => panic!("unexpected status {other}: {body}"),
        }
    }
    let elapsed = start.elapsed();
    println!("{admitted} of 3000 admitted in {elapsed:?} across two replicas (600 a minute, burst 100)");
    // GCRA admits the burst (100) plus 10 a second: about 200 in 10 s, never more than 600 + the burst.
    assert!(admitted <= 700, "{admitted} admitted");
    let expected = 100 + (elapsed.as_secs_f64() * 10.0) as usize;
    assert!(
        admitted <= expected + 2 && admitted + 20 >= expected.min(200),
        "{admitted} admitted, about {expected} expected"
    );
}

/// A TCP forwarder to Redis that the test can cut, as a failing network would.
async fn forwarder(redis: &str) -> (String, tokio::task::JoinHandle<()>) {
    let target = redis.trim_start_matches("redis://").trim_end_matches('/').to_owned();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("redis://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let mut connections = tokio::task::JoinSet::new();
        loop {
            let (mut inbound, _) = listener.accept().await.unwrap();
            let target = target.clone();
            connections.spawn(async move {
                let mut outbound = tokio::net::TcpStream::connect(target).await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            });
        }
    });
    (url, task)
}

async fn redis_going_away_is_a_503_with_retry_after(postgres: String, redis: String) {
    let prefix = unique_prefix("away");
    let (url, cut) = forwarder(&redis).await;
    let r = replica(&postgres, &url, &prefix).await;
    let http = reqwest::Client::new();
    let tenant = format!("away-{:016x}", rand::random::<u64>());
    admin(&http, &r.base, "/admin/v1/tenants", json!({"id": tenant, "budget_usd": "1"})).await;
    let key = admin(&http, &r.base, &format!("/admin/v1/tenants/{tenant}/keys"), json!({"name": "k"})).await;
    let chat = || {
        http.post(format!("{}/v1/chat/completions", r.base)).bearer_auth(key["key"].as_str().unwrap()).json(&json!({
            "model": "chat", "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]
        }))
    };
    assert_eq!(chat().send().await.unwrap().status(), 200);
    // Dropping the forwarder's task drops its listener and every connection through it.
    cut.abort();
    let _ = cut.await;
    let response = chat().send().await.unwrap();
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("retry-after"), "{:?}", response.headers());
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "service_unavailable", "{body}");
    assert!(!body.to_string().contains("127.0.0.1"), "no addresses in the answer: {body}");
}
