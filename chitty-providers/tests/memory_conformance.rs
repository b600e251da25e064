//! The in-memory backends pass the testkit's conformance suites.

#![cfg(feature = "memory")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use chitty_core::{BudgetStore, Event, EventSink};
use chitty_providers::memory::{CollectingSink, CountingSink, MemoryAccessStore, MemoryBudgetStore, MemoryCache};
use chitty_testkit::{access, budget, cache, events, ratelimit};

#[tokio::test]
async fn memory_cache_conformance() {
    let c = MemoryCache::new(16 * 1024 * 1024);
    cache::run_all(&c).await;
}

#[tokio::test]
async fn memory_cache_size_bound() {
    let max = 256 * 1024;
    let c = MemoryCache::new(max);
    cache::size_bound(&c, max, || async {
        c.run_pending_tasks().await;
        c.weighted_size()
    })
    .await;
}

#[tokio::test]
async fn memory_access_store_conformance() {
    access::run_all(&MemoryAccessStore::new()).await;
}

#[tokio::test]
async fn memory_access_store_keeps_spend_as_an_archive() {
    budget::spend_archive_contract(&MemoryAccessStore::new()).await;
}

#[tokio::test]
async fn local_rate_limiter_conformance() {
    ratelimit::run_all(&chitty_core::ratelimit::LocalRateLimiter::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_rate_limiter_admits_exactly_the_burst_under_concurrency() {
    ratelimit::concurrent_requests_admit_exactly_the_burst(
        Arc::new(chitty_core::ratelimit::LocalRateLimiter::new()),
        3_000,
    )
    .await;
}

#[tokio::test]
async fn memory_budget_conformance() {
    budget::run_all(&MemoryBudgetStore::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_budget_1000_concurrent_reservations_never_overspend() {
    let store: Arc<dyn BudgetStore> = Arc::new(MemoryBudgetStore::new());
    for _ in 0..5 {
        budget::concurrent_reservations(store.clone(), 1_000).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sinks_conformance() {
    let counting = Arc::new(CountingSink::new());
    events::accepts_every_kind(counting.as_ref()).await;
    events::concurrent_writers(counting.clone() as Arc<dyn EventSink>, 8, 100).await;
    let c = counting.counts();
    assert_eq!(c.requests, 1 + 8 * 25);
    assert_eq!(c.budget_excesses, 1 + 8 * 25);
    assert_eq!(c.upstream_failures, 1 + 8 * 25);
    assert_eq!(c.prompt_tokens, 42 * (1 + 8 * 25));

    let collecting = CollectingSink::new();
    events::accepts_every_kind(&collecting).await;
    assert_eq!(collecting.events(), events::sample_events(), "collected in order, unchanged");
    let requests: Vec<Event> = collecting.requests().into_iter().map(Event::Request).collect();
    let expected: Vec<Event> = events::sample_events().into_iter().filter(|e| matches!(e, Event::Request(_))).collect();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests, expected, "only the request events, in order");
    assert_eq!(collecting.take().len(), 4);
    assert!(collecting.events().is_empty());
}
