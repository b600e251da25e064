//! The [`Cache`] trait: stored responses by key, with a TTL and a size bound.

use std::fmt::Debug;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use crate::error::Result;
use crate::keys::CacheKey;

/// Stored responses by key.
///
/// Contract:
/// - `put` then `get` of the same key returns the same bytes until the TTL elapses; after it, `get` returns
///   `None`. A second `put` replaces the value and its TTL.
/// - The implementation bounds its size (bytes or entries) and may evict any entry at any time; a cache
///   miss is always a correct answer.
/// - Keys are opaque digests: tenant isolation is decided when the key is derived ([`crate::keys`]), so a
///   cache never sees tenant names.
/// - Errors are for backend failures only; the gateway treats them as a miss and carries on.
#[async_trait]
pub trait Cache: Send + Sync + Debug + 'static {
    /// The stored value, if present and not expired.
    async fn get(&self, key: &CacheKey) -> Result<Option<Bytes>>;

    /// Stores `value` under `key` for `ttl`.
    async fn put(&self, key: &CacheKey, value: Bytes, ttl: Duration) -> Result<()>;

    /// Whether the backend answers (readiness checks); in-process caches always do.
    async fn ping(&self) -> Result<()> {
        Ok(())
    }
}
