//! The [`Cache`] conformance suite: every implementation runs these functions.
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! # #[derive(Debug, Default)] struct MapCache(std::sync::Mutex<std::collections::HashMap<chitty_core::keys::CacheKey, (bytes::Bytes, std::time::Instant)>>);
//! # #[async_trait::async_trait] impl chitty_core::Cache for MapCache {
//! #   async fn get(&self, k: &chitty_core::keys::CacheKey) -> chitty_core::Result<Option<bytes::Bytes>> {
//! #     Ok(self.0.lock().unwrap().get(k).filter(|(_, exp)| *exp > std::time::Instant::now()).map(|(v, _)| v.clone())) }
//! #   async fn put(&self, k: &chitty_core::keys::CacheKey, v: bytes::Bytes, ttl: std::time::Duration) -> chitty_core::Result<()> {
//! #     self.0.lock().unwrap().insert(*k, (v, std::time::Instant::now() + ttl)); Ok(()) }
//! # }
//! let cache = MapCache::default();
//! chitty_testkit::cache::run_all(&cache).await;
//! # });
//! ```

use std::time::Duration;

use bytes::Bytes;
use chitty_core::Cache;
use chitty_core::keys::{CacheKey, CacheScope, chat_key};
use chitty_core::wire::{ChatCompletionRequest, ChatMessage};

/// A key no other test run uses, so suites can run against shared servers.
pub fn unique_key() -> CacheKey {
    CacheKey(rand::random())
}

/// Runs every check that holds for all caches (not the size bound, whose mechanism differs per backend).
pub async fn run_all(cache: &dyn Cache) {
    put_get_overwrite(cache).await;
    expiry(cache).await;
    tenant_isolation(cache).await;
    binary_values(cache).await;
}

/// `put` then `get` returns the value; a missing key is `None`; a second `put` replaces the value.
pub async fn put_get_overwrite(cache: &dyn Cache) {
    let key = unique_key();
    assert_eq!(cache.get(&key).await.expect("get"), None, "a fresh key must miss");
    cache.put(&key, Bytes::from_static(b"first"), Duration::from_secs(60)).await.expect("put");
    assert_eq!(cache.get(&key).await.expect("get").as_deref(), Some(&b"first"[..]));
    cache.put(&key, Bytes::from_static(b"second"), Duration::from_secs(60)).await.expect("put");
    assert_eq!(cache.get(&key).await.expect("get").as_deref(), Some(&b"second"[..]), "put must replace");
    let other = unique_key();
    assert_eq!(cache.get(&other).await.expect("get"), None, "other keys stay empty");
}

/// An entry is gone once its TTL has elapsed (waits about 1.2 s of real time: backends keep their own clocks).
pub async fn expiry(cache: &dyn Cache) {
    let short = unique_key();
    let long = unique_key();
    cache.put(&short, Bytes::from_static(b"short"), Duration::from_millis(300)).await.expect("put");
    cache.put(&long, Bytes::from_static(b"long"), Duration::from_secs(60)).await.expect("put");
    assert!(cache.get(&short).await.expect("get").is_some(), "present before its TTL");
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    assert_eq!(cache.get(&short).await.expect("get"), None, "expired entries must not be returned");
    assert!(cache.get(&long).await.expect("get").is_some(), "expiry of one entry must not touch another");
}

/// The same request under two tenants' scopes never shares an entry; a shared group does.
pub async fn tenant_isolation(cache: &dyn Cache) {
    let marker: u64 = rand::random();
    let req = ChatCompletionRequest {
        model: "m".into(),
        messages: vec![ChatMessage::user(format!("isolation {marker}"))],
        temperature: Some(0.0),
        ..Default::default()
    };
    let a = chat_key(CacheScope::Tenant("tenant-a"), &req);
    let b = chat_key(CacheScope::Tenant("tenant-b"), &req);
    let shared = chat_key(CacheScope::Shared("pool"), &req);
    assert_ne!(a, b);
    cache.put(&a, Bytes::from_static(b"secret of a"), Duration::from_secs(60)).await.expect("put");
    assert_eq!(cache.get(&b).await.expect("get"), None, "tenant b must not see tenant a's entry");
    assert_eq!(cache.get(&shared).await.expect("get"), None, "a shared scope must not see a tenant entry");
    cache.put(&shared, Bytes::from_static(b"pooled"), Duration::from_secs(60)).await.expect("put");
    let again = chat_key(CacheScope::Shared("pool"), &req);
    assert_eq!(cache.get(&again).await.expect("get").as_deref(), Some(&b"pooled"[..]));
}

/// Values are bytes, not text: every byte value and an empty value survive.
pub async fn binary_values(cache: &dyn Cache) {
    let key = unique_key();
    let all: Vec<u8> = (0..=255).collect();
    cache.put(&key, Bytes::from(all.clone()), Duration::from_secs(60)).await.expect("put");
    assert_eq!(cache.get(&key).await.expect("get").as_deref(), Some(&all[..]));
    let empty = unique_key();
    cache.put(&empty, Bytes::new(), Duration::from_secs(60)).await.expect("put");
    assert_eq!(cache.get(&empty).await.expect("get").as_deref(), Some(&b""[..]));
}

/// Writing four times `max_bytes` keeps the cache within its bound (after `settle` runs pending evictions
/// and returns the bytes held) while still holding entries.
pub async fn size_bound<F, Fut>(cache: &dyn Cache, max_bytes: u64, settle: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = u64>,
{
    let value = Bytes::from(vec![0xA5u8; 1024]);
    let count = (max_bytes * 4 / 1024).max(8);
    for _ in 0..count {
        cache.put(&unique_key(), value.clone(), Duration::from_secs(60)).await.expect("put");
    }
    let held = settle().await;
    assert!(held <= max_bytes, "cache holds {held} bytes, bound is {max_bytes}");
    assert!(held > 0, "a bounded cache still keeps entries");
}
