//! A concurrent in-memory [`Cache`] bounded by bytes, with a TTL per entry (moka).

use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use chitty_core::keys::CacheKey;
use chitty_core::{Cache, Result};

/// Keys are SHA-256 digests, already uniform: hashing them again (moka's default SipHash) is wasted work.
#[derive(Default)]
struct PassThroughHasher(u64);

impl std::hash::Hasher for PassThroughHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // `CacheKey` hashes as its 32 bytes (plus a length prefix); fold every word so any input still mixes.
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = self.0.rotate_left(5) ^ u64::from_le_bytes(word);
        }
    }
}

type DigestHasher = std::hash::BuildHasherDefault<PassThroughHasher>;

/// Bytes charged per entry on top of its value (key, TTL and bookkeeping).
const ENTRY_OVERHEAD: u32 = 96;

#[derive(Clone)]
struct Entry {
    value: Bytes,
    ttl: Duration,
}

struct PerEntryTtl;

impl moka::Expiry<CacheKey, Entry> for PerEntryTtl {
    fn expire_after_create(&self, _key: &CacheKey, value: &Entry, _created_at: Instant) -> Option<Duration> {
        Some(value.ttl)
    }

    fn expire_after_update(
        &self,
        _key: &CacheKey,
        value: &Entry,
        _updated_at: Instant,
        _left: Option<Duration>,
    ) -> Option<Duration> {
        Some(value.ttl)
    }
}

/// An in-memory cache holding at most `max_bytes` of values (plus a small per-entry overhead).
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// use std::time::Duration;
/// use chitty_core::{Cache, keys::CacheKey};
/// use chitty_providers::memory::MemoryCache;
///
/// let cache = MemoryCache::new(64 * 1024 * 1024);
/// let key = CacheKey([7; 32]);
/// cache.put(&key, "answer".into(), Duration::from_secs(60)).await?;
/// assert_eq!(cache.get(&key).await?.as_deref(), Some(&b"answer"[..]));
/// # Ok::<(), chitty_core::Error>(())
/// # }).unwrap();
/// ```
#[derive(Clone)]
pub struct MemoryCache {
    inner: moka::future::Cache<CacheKey, Entry, DigestHasher>,
    max_bytes: u64,
}

impl std::fmt::Debug for MemoryCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryCache")
            .field("max_bytes", &self.max_bytes)
            .field("entries", &self.inner.entry_count())
            .finish()
    }
}

impl MemoryCache {
    /// A cache bounded to `max_bytes`.
    pub fn new(max_bytes: u64) -> MemoryCache {
        let inner = moka::future::Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|_k: &CacheKey, e: &Entry| {
                u32::try_from(e.value.len()).unwrap_or(u32::MAX).saturating_add(ENTRY_OVERHEAD)
            })
            .expire_after(PerEntryTtl)
            .build_with_hasher(DigestHasher::default());
        MemoryCache { inner, max_bytes }
    }

    /// Runs moka's pending evictions now (they are otherwise lazy); for tests and size reports.
    pub async fn run_pending_tasks(&self) {
        self.inner.run_pending_tasks().await;
    }

    /// Total weight held (value bytes plus overhead), after pending evictions ran.
    pub fn weighted_size(&self) -> u64 {
        self.inner.weighted_size()
    }
}

#[async_trait]
impl Cache for MemoryCache {
    async fn get(&self, key: &CacheKey) -> Result<Option<Bytes>> {
        Ok(self.inner.get(key).await.map(|e| e.value))
    }

    async fn put(&self, key: &CacheKey, value: Bytes, ttl: Duration) -> Result<()> {
        if value.len() as u64 > self.max_bytes {
            // Larger than the whole cache: storing it would only evict everything else.
            return Ok(());
        }
        self.inner.insert(*key, Entry { value, ttl }).await;
        Ok(())
    }
}
