//! De-duplication of deliveries: an [`IdempotencyStore`] remembers which delivery keys were
//! taken, for a TTL (24 h by default), with one atomic "claim if absent" operation.
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use chitty_core::{ManualClock, Timestamp};
//! use chitty_github::idempotency::{Claim, IdempotencyStore, MemoryIdempotencyStore};
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let clock = ManualClock::new(Timestamp(0));
//! let store = MemoryIdempotencyStore::with_clock(Arc::new(clock.clone()));
//! let ttl = Duration::from_secs(60);
//! assert_eq!(store.claim("guid:hook:1", ttl).await?, Claim::Claimed);
//! assert_eq!(store.claim("guid:hook:1", ttl).await?, Claim::AlreadyClaimed);
//! clock.advance(ttl);
//! assert_eq!(store.claim("guid:hook:1", ttl).await?, Claim::Claimed);
//! # Ok::<(), chitty_github::Error>(())
//! # }).unwrap();
//! ```

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use chitty_core::runtime::SystemClock;
use chitty_core::{Clock, Timestamp};

use crate::error::Result;

#[cfg(feature = "redis")]
mod redis;
#[cfg(feature = "redis")]
pub use self::redis::RedisIdempotencyStore;

/// How long a delivery key is remembered unless configured otherwise: GitHub lets users redeliver
/// recent deliveries, and 24 h covers a day of those.
pub const DEFAULT_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// The answer of [`IdempotencyStore::claim`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// The key was free; this caller now holds it for the TTL.
    Claimed,
    /// The key is held (the delivery was already taken).
    AlreadyClaimed,
}

/// Remembers delivery keys for a TTL. Implementations make [`claim`](Self::claim) atomic: of
/// concurrent callers with the same key, exactly one gets [`Claim::Claimed`].
#[async_trait]
pub trait IdempotencyStore: Send + Sync + Debug + 'static {
    /// Takes `key` for `ttl` if nobody holds it.
    async fn claim(&self, key: &str, ttl: Duration) -> Result<Claim>;

    /// Gives `key` up, so that the next claim succeeds (used when a claimed delivery could not be
    /// enqueued, so that GitHub's redelivery is not mistaken for a duplicate).
    async fn release(&self, key: &str) -> Result<()>;
}

/// An in-process [`IdempotencyStore`]: a map from key to expiry, on an injected [`Clock`].
///
/// Expired keys are swept when the map has doubled since the last sweep, so memory stays
/// proportional to the keys alive within one TTL.
#[derive(Debug)]
pub struct MemoryIdempotencyStore {
    clock: Arc<dyn Clock>,
    state: Mutex<MemoryState>,
}

#[derive(Debug, Default)]
struct MemoryState {
    expiries: HashMap<String, Timestamp>,
    sweep_at_len: usize,
}

/// The map is never swept below this size: sweeping a small map costs more than it frees.
const MIN_SWEEP_LEN: usize = 1024;

impl MemoryIdempotencyStore {
    /// A store on the system clock.
    pub fn new() -> Self {
        Self::with_clock(Arc::new(SystemClock))
    }

    /// A store on `clock` (a [`chitty_core::ManualClock`] in tests).
    pub fn with_clock(clock: Arc<dyn Clock>) -> Self {
        MemoryIdempotencyStore {
            clock,
            state: Mutex::new(MemoryState { expiries: HashMap::new(), sweep_at_len: MIN_SWEEP_LEN }),
        }
    }

    /// Number of keys held, including expired ones not yet swept.
    pub fn len(&self) -> usize {
        self.lock().expiries.len()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> MutexGuard<'_, MemoryState> {
        // The map stays consistent even if a holder panicked: every update is a single insert or remove.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Default for MemoryIdempotencyStore {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait]
impl IdempotencyStore for MemoryIdempotencyStore {
    async fn claim(&self, key: &str, ttl: Duration) -> Result<Claim> {
        let now = self.clock.now();
        let mut state = self.lock();
        if state.expiries.get(key).is_some_and(|expiry| *expiry > now) {
            return Ok(Claim::AlreadyClaimed);
        }
        state.expiries.insert(key.to_owned(), now.plus(ttl));
        if state.expiries.len() >= state.sweep_at_len {
            state.expiries.retain(|_, expiry| *expiry > now);
            state.sweep_at_len = (state.expiries.len() * 2).max(MIN_SWEEP_LEN);
        }
        Ok(Claim::Claimed)
    }

    async fn release(&self, key: &str) -> Result<()> {
        self.lock().expiries.remove(key);
        Ok(())
    }
}
