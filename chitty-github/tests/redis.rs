//! The Redis idempotency store against the machine's Redis (`CHITTY_TEST_REDIS_URL`, by default
//! `redis://127.0.0.1:6379`); ignored with the reason when it is unreachable (`harness = false`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use chitty_github::idempotency::{IdempotencyStore, RedisIdempotencyStore};
use chitty_github::intake::{IntakeOutcome, WebhookIntake};
use chitty_github::queue::InProcessQueue;
use chitty_testkit::services::{self, block_on, trial};
use common::{fixture, secret, signed_request, unique};

fn main() -> std::process::ExitCode {
    let redis = services::redis_url();
    services::run(vec![
        trial("redis_store_passes_the_conformance_checks", &redis, |url| {
            block_on(redis_store_passes_the_conformance_checks(url))
        }),
        trial("two_intakes_sharing_redis_enqueue_a_delivery_once", &redis, |url| {
            block_on(two_intakes_sharing_redis_enqueue_a_delivery_once(url))
        }),
    ])
}

async fn redis_store_passes_the_conformance_checks(url: String) {
    let store = Arc::new(RedisIdempotencyStore::connect(&url, unique("chitty-test:delivery:")).await.unwrap());
    assert!(!format!("{store:?}").contains("redis://"));
    let ttl = Duration::from_millis(300);
    common::idempotency_conformance(store, ttl, || tokio::time::sleep(ttl + Duration::from_millis(50))).await;
}

async fn two_intakes_sharing_redis_enqueue_a_delivery_once(url: String) {
    let prefix = unique("chitty-test:shared:");
    let (queue, mut receiver) = InProcessQueue::bounded(16);
    let queue = Arc::new(queue);
    let mut replicas = Vec::new();
    for _ in 0..2 {
        let store = RedisIdempotencyStore::connect(&url, prefix.clone()).await.unwrap();
        let intake =
            WebhookIntake::builder([secret()]).queue(queue.clone()).idempotency_store(Arc::new(store)).build().unwrap();
        replicas.push(intake);
    }
    let guid = unique("guid").replace('_', "-");
    let body = fixture("ping.json");
    let (a, b) = tokio::join!(
        replicas[0].handle(signed_request("ping", &guid, body.clone())),
        replicas[1].handle(signed_request("ping", &guid, body.clone())),
    );
    let accepted = [&a, &b].iter().filter(|o| matches!(o, IntakeOutcome::Accepted { .. })).count();
    let duplicates = [&a, &b].iter().filter(|o| matches!(o, IntakeOutcome::Duplicate { .. })).count();
    assert_eq!((accepted, duplicates), (1, 1), "{a:?} {b:?}");
    receiver.recv().await.unwrap();
    assert!(queue.is_empty());
    let store = RedisIdempotencyStore::connect(&url, prefix).await.unwrap();
    store.release(&format!("{guid}:hook:109948940")).await.unwrap();
}
