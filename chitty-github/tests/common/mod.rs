//! Helpers shared by the integration tests: fixtures, signed requests, and the conformance checks
//! every idempotency store and every delivery queue runs.
#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(dead_code, unreachable_pub)]

#[cfg(feature = "client")]
pub mod app;
pub mod installations;
pub mod model;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chitty_core::Timestamp;
use chitty_github::idempotency::{Claim, IdempotencyStore};
use chitty_github::queue::DeliveryQueue;
use chitty_github::queue::Message;
use chitty_github::signature::WebhookSecret;

pub const SECRET: &str = "It's a Secret to Everybody";

pub fn secret() -> WebhookSecret {
    WebhookSecret::new(SECRET)
}

/// A fixture payload from `tests/fixtures/`.
pub fn fixture(name: &str) -> Bytes {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name);
    Bytes::from(std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
}

/// A request as GitHub sends it: JSON body, event, delivery GUID, hook id, signature.
pub fn signed_request(event: &str, delivery: &str, body: Bytes) -> http::Request<Bytes> {
    signed_builder(event, delivery, &body).body(body).unwrap()
}

pub fn signed_builder(event: &str, delivery: &str, body: &[u8]) -> http::request::Builder {
    http::Request::post("/api/github/webhooks")
        .header("content-type", "application/json")
        .header("user-agent", "GitHub-Hookshot/044aadd")
        .header("x-github-event", event)
        .header("x-github-delivery", delivery)
        .header("x-github-hook-id", "109948940")
        .header("x-github-hook-installation-target-type", "repository")
        .header("x-github-hook-installation-target-id", "186853002")
        .header("x-hub-signature-256", secret().sign(body))
}

/// Unique names for service-backed tests, so reruns and parallel runs do not collide.
pub fn unique(prefix: &str) -> String {
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or_default();
    format!("{prefix}_{}_{nanos}", std::process::id())
}

/// The behaviour every [`IdempotencyStore`] shares. `advance` moves time past a TTL (virtual time
/// for the memory store, a real sleep for Redis), `ttl` is the TTL to claim with.
pub async fn idempotency_conformance<F, Fut>(store: Arc<dyn IdempotencyStore>, ttl: Duration, advance: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let key = unique("conformance");
    assert_eq!(store.claim(&key, ttl).await.unwrap(), Claim::Claimed);
    assert_eq!(store.claim(&key, ttl).await.unwrap(), Claim::AlreadyClaimed);
    let other = format!("{key}:hook:2");
    assert_eq!(store.claim(&other, ttl).await.unwrap(), Claim::Claimed, "keys are independent");

    store.release(&key).await.unwrap();
    assert_eq!(store.claim(&key, ttl).await.unwrap(), Claim::Claimed, "released keys can be claimed");
    store.release("never-claimed").await.unwrap();

    advance().await;
    assert_eq!(store.claim(&key, ttl).await.unwrap(), Claim::Claimed, "expired keys can be claimed");

    // Of many concurrent claimers of one key, exactly one wins.
    let contested = unique("contested");
    let claims = futures::future::join_all((0..32).map(|_| {
        let store = store.clone();
        let contested = contested.clone();
        async move { store.claim(&contested, Duration::from_secs(60)).await.unwrap() }
    }))
    .await;
    assert_eq!(claims.iter().filter(|c| **c == Claim::Claimed).count(), 1);
}

/// Delivery message number `n`: a ping with its own id.
pub fn queued_message(n: usize) -> Message {
    Message {
        subject: "github.ping".into(),
        id: format!("d3b07384-d9a0-4c9b-8a0d-{n:012}"),
        headers: vec![("x-github-event".into(), "ping".into())],
        payload: Bytes::from_static(br#"{"zen":"Keep it logically awesome."}"#),
        received_at: Timestamp(1_700_000_000_000),
    }
}

/// `writers` concurrent writers each enqueue messages 0..`messages` (so every id is sent `writers`
/// times); a queue sized for the load takes them all without refusing.
pub async fn concurrent_enqueuers(queue: Arc<dyn DeliveryQueue>, writers: usize, messages: usize) {
    let tasks = (0..writers).map(|_| {
        let queue = queue.clone();
        tokio::spawn(async move {
            for n in 0..messages {
                queue.enqueue(queued_message(n)).await.unwrap_or_else(|e| panic!("message {n} refused: {e}"));
            }
        })
    });
    for task in futures::future::join_all(tasks).await {
        task.expect("writer panicked");
    }
}
