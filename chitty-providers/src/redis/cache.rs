//! A [`Cache`] in Redis: `SET key value PX ttl` and `GET`, one round trip each.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chitty_core::keys::CacheKey;
use chitty_core::{Cache, Result};

use super::{RedisConnection, key_prefix};

/// The longest TTL passed to Redis (100 years), which rejects expiry times past `i64::MAX` milliseconds.
const MAX_TTL_MILLIS: u64 = 100 * 365 * 24 * 3_600 * 1_000;

/// A response cache in Redis, shared by every gateway replica.
///
/// Entries live at `{prefix}:cache:{hex of the key}` with a millisecond TTL (`PX`); values are stored as
/// raw bytes.
///
/// **Size bound.** Redis bounds the memory, not this type: set `maxmemory` and a `maxmemory-policy` on the
/// server. When the cache shares a server with [`super::RedisBudgetStore`], use `volatile-lru` or
/// `volatile-ttl`: they evict only keys with a TTL (every cache entry has one, budget keys have none),
/// whereas `allkeys-*` policies could evict budget state. Under the default `noeviction`, a full
/// server refuses writes; `put` then fails and the gateway carries on without caching.
/// [`RedisCache::with_max_entry_bytes`] additionally keeps single huge answers out.
///
/// ```no_run
/// # async fn demo() -> chitty_core::Result<()> {
/// use std::time::Duration;
/// use chitty_core::{Cache, keys::CacheKey};
/// use chitty_providers::redis::{RedisCache, RedisConnection};
///
/// let cache = RedisCache::new(RedisConnection::connect("redis://127.0.0.1:6379").await?, "chitty");
/// let key = CacheKey([7; 32]);
/// cache.put(&key, "answer".into(), Duration::from_secs(60)).await?;
/// assert_eq!(cache.get(&key).await?.as_deref(), Some(&b"answer"[..]));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisCache {
    connection: RedisConnection,
    /// `{prefix}:cache:`.
    namespace: String,
    /// Values above this many bytes are not stored.
    max_entry_bytes: usize,
}

impl fmt::Debug for RedisCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisCache")
            .field("endpoint", &self.connection.endpoint())
            .field("namespace", &self.namespace)
            .field("max_entry_bytes", &self.max_entry_bytes)
            .finish()
    }
}

impl RedisCache {
    /// A cache over `connection` whose keys start with `{prefix}:cache:`; values of any size are stored.
    pub fn new(connection: RedisConnection, prefix: &str) -> RedisCache {
        RedisCache { namespace: format!("{}cache:", key_prefix(prefix)), connection, max_entry_bytes: usize::MAX }
    }

    /// Skips storing values larger than `max_entry_bytes` (one huge answer would evict many small ones).
    pub fn with_max_entry_bytes(mut self, max_entry_bytes: usize) -> RedisCache {
        self.max_entry_bytes = max_entry_bytes;
        self
    }

    /// The Redis key of a cache key.
    pub fn redis_key(&self, key: &CacheKey) -> String {
        format!("{}{}", self.namespace, key.to_hex())
    }
}

#[async_trait]
impl Cache for RedisCache {
    async fn get(&self, key: &CacheKey) -> Result<Option<Bytes>> {
        let value: Option<Vec<u8>> = ::redis::cmd("GET")
            .arg(self.redis_key(key))
            .query_async(&mut self.connection.manager.clone())
            .await
            .map_err(|e| self.connection.endpoint.error("GET", e))?;
        Ok(value.map(Bytes::from))
    }

    async fn put(&self, key: &CacheKey, value: Bytes, ttl: Duration) -> Result<()> {
        let millis = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).min(MAX_TTL_MILLIS);
        let mut manager = self.connection.manager.clone();
        if millis == 0 || value.len() > self.max_entry_bytes {
            // Redis rejects `PX 0`; an entry that expires at once, or is not kept, is one that is not there.
            let _: i64 = ::redis::cmd("DEL")
                .arg(self.redis_key(key))
                .query_async(&mut manager)
                .await
                .map_err(|e| self.connection.endpoint.error("DEL", e))?;
            return Ok(());
        }
        let _: () = ::redis::cmd("SET")
            .arg(self.redis_key(key))
            .arg(value.as_ref())
            .arg("PX")
            .arg(millis)
            .query_async(&mut manager)
            .await
            .map_err(|e| self.connection.endpoint.error("SET", e))?;
        Ok(())
    }

    async fn ping(&self) -> Result<()> {
        self.connection.ping().await
    }
}
