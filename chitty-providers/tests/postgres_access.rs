//! The PostgreSQL access store against the machine's PostgreSQL (`CHITTY_TEST_POSTGRES_URL`, by default
//! `postgres://postgres@127.0.0.1:5432/test`): the testkit's conformance suite, and two gateway replicas
//! sharing it, where a key created through one replica's admin API works on the other within a second and is
//! refused on both within a second of its revocation. When PostgreSQL is unreachable each test shows as
//! ignored with the reason (`harness = false`: see `chitty_testkit::services`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use chitty_core::gateway::api_key_digest;
use chitty_providers::config::GatewayFile;
use chitty_providers::postgres::PostgresAccessStore;
use chitty_providers::server::{ConnectionLimits, GatewayApp, Server};
use chitty_testkit::mock::MockProvider;
use chitty_testkit::services::{self, block_on_multi_thread, trial};
use chitty_testkit::{access, budget};
use serde_json::{Value, json};

fn main() -> std::process::ExitCode {
    let postgres = services::postgres_url();
    services::run(vec![
        trial("postgres_access_store_conformance", &postgres, |url| {
            block_on_multi_thread(async move {
                access::run_all(&PostgresAccessStore::connect(&url).await.unwrap()).await;
            })
        }),
        trial("postgres_access_store_keeps_spend_as_an_archive", &postgres, |url| {
            block_on_multi_thread(async move {
                budget::spend_archive_contract(&PostgresAccessStore::connect(&url).await.unwrap()).await;
            })
        }),
        trial("keys_reach_every_replica_within_a_second_and_revocation_too", &postgres, |url| {
            block_on_multi_thread(keys_reach_every_replica_within_a_second_and_revocation_too(url))
        }),
    ])
}

const ADMIN_KEY: &str = "sk-admin-replicas";

struct Replica {
    base: String,
    _app: GatewayApp,
}

async fn replica(url: &str) -> Replica {
    let toml = format!(
        r#"
[admin]
key_sha256 = ["{admin}"]

[store]
backend = "postgres"
url = "{url}"
refresh_secs = 30

[[providers]]
name = "mock"
kind = "mock"

[[models]]
name = "chat"
routes = [{{ provider = "mock", model = "chat" }}]
price = {{ input = "1", output = "2" }}
"#,
        admin = api_key_digest(ADMIN_KEY),
    );
    let app = GatewayFile::parse(&toml).unwrap().build_with(vec![Arc::new(MockProvider::new("mock"))]).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let router = app.router.clone();
    tokio::spawn(async move {
        Server::new(ConnectionLimits::default()).serve(listener, router, std::future::pending()).await
    });
    Replica { base, _app: app }
}

async fn status(http: &reqwest::Client, base: &str, key: &str) -> u16 {
    http.get(format!("{base}/v1/models")).bearer_auth(key).send().await.unwrap().status().as_u16()
}

/// Polls `base` with `key` until it answers `want`; returns how long that took, or fails after 5 s.
async fn until(http: &reqwest::Client, base: &str, key: &str, want: u16) -> Duration {
    let start = Instant::now();
    loop {
        if status(http, base, key).await == want {
            return start.elapsed();
        }
        assert!(start.elapsed() < Duration::from_secs(5), "{base} never answered {want}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn keys_reach_every_replica_within_a_second_and_revocation_too(url: String) {
    let (a, b) = (replica(&url).await, replica(&url).await);
    let http = reqwest::Client::new();
    let admin = |method: reqwest::Method, path: String, body: Value| {
        let request = http.request(method, format!("{}{path}", a.base)).bearer_auth(ADMIN_KEY).json(&body);
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let tenant = format!("replicas-{:016x}", rand::random::<u64>());
    let (status_code, body) = admin(reqwest::Method::POST, "/admin/v1/tenants".into(), json!({"id": tenant})).await;
    assert_eq!(status_code, 201, "{body}");
    let mut worst_create = Duration::ZERO;
    let mut worst_revoke = Duration::ZERO;
    for _ in 0..5 {
        let (status_code, key) =
            admin(reqwest::Method::POST, format!("/admin/v1/tenants/{tenant}/keys"), json!({"name": "k"})).await;
        assert_eq!(status_code, 201, "{key}");
        let (id, secret) = (key["id"].as_str().unwrap().to_owned(), key["key"].as_str().unwrap().to_owned());
        assert_eq!(status(&http, &a.base, &secret).await, 200, "the replica that made it knows it at once");
        worst_create = worst_create.max(until(&http, &b.base, &secret, 200).await);

        let (status_code, _) = admin(reqwest::Method::DELETE, format!("/admin/v1/keys/{id}"), Value::Null).await;
        assert_eq!(status_code, 204);
        assert_eq!(status(&http, &a.base, &secret).await, 401, "refused at once where it was revoked");
        worst_revoke = worst_revoke.max(until(&http, &b.base, &secret, 401).await);
    }
    println!("slowest propagation to the other replica: create {worst_create:?}, revoke {worst_revoke:?}");
    assert!(worst_create < Duration::from_secs(1), "a new key took {worst_create:?} to reach the other replica");
    assert!(worst_revoke < Duration::from_secs(1), "a revocation took {worst_revoke:?} to reach the other replica");
}
