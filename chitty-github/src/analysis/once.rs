//! Work done once per key within a process: concurrent callers for one key run one at a time, and
//! a key recorded as done is skipped without asking GitHub. The hidden markers on GitHub stay the
//! record across processes and restarts; this closes the window in which two copies of a delivery
//! (a redelivery racing the original, `opened` and `ready_for_review` moments apart) both find no
//! marker, and the moment after a post when GitHub's list may not show it yet.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use tokio::sync::OwnedMutexGuard;

/// Keys remembered as done (a pull request head, an issue): far more than are worked on in a day.
const DONE_CAPACITY: u64 = 100_000;
/// How long a key is remembered as done.
const DONE_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// One lock per key being worked on, and a bounded memory of keys done.
pub(crate) struct OnceByKey {
    in_flight: Mutex<HashMap<String, Weak<tokio::sync::Mutex<()>>>>,
    done: moka::future::Cache<String, ()>,
}

impl std::fmt::Debug for OnceByKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnceByKey").field("done", &self.done.entry_count()).finish_non_exhaustive()
    }
}

impl Default for OnceByKey {
    fn default() -> Self {
        OnceByKey {
            in_flight: Mutex::new(HashMap::new()),
            done: moka::future::Cache::builder().max_capacity(DONE_CAPACITY).time_to_live(DONE_TTL).build(),
        }
    }
}

impl OnceByKey {
    /// Runs `work` unless `key` is already done, one caller per key at a time, and records `key` as done
    /// when `work` succeeds (a failure leaves it to a retry). `None` when it was already done.
    pub(crate) async fn run<T, E>(
        &self,
        key: &str,
        work: impl std::future::Future<Output = Result<T, E>>,
    ) -> Option<Result<T, E>> {
        let _working = self.lock(key).await;
        if self.is_done(key) {
            return None;
        }
        let result = work.await;
        if result.is_ok() {
            self.mark_done(key).await;
        }
        Some(result)
    }

    /// Waits until no other caller holds `key`, then holds it until the guard is dropped.
    async fn lock(&self, key: &str) -> OwnedMutexGuard<()> {
        let lock = {
            // A panic while holding this map cannot leave it inconsistent: it is only read and inserted into.
            let mut in_flight = self.in_flight.lock().unwrap_or_else(PoisonError::into_inner);
            // Entries whose work finished; at most the processor's concurrency remain.
            in_flight.retain(|_, lock| lock.strong_count() > 0);
            match in_flight.get(key).and_then(Weak::upgrade) {
                Some(lock) => lock,
                None => {
                    let lock = Arc::new(tokio::sync::Mutex::new(()));
                    in_flight.insert(key.to_owned(), Arc::downgrade(&lock));
                    lock
                }
            }
        };
        lock.lock_owned().await
    }

    /// Whether `key` was recorded as done.
    fn is_done(&self, key: &str) -> bool {
        self.done.contains_key(key)
    }

    /// Records `key` as done.
    async fn mark_done(&self, key: &str) {
        self.done.insert(key.to_owned(), ()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_holder_per_key_and_keys_are_independent() {
        let once = Arc::new(OnceByKey::default());
        let first = once.lock("a").await;
        // Another key is free.
        drop(once.lock("b").await);
        let waiter = {
            let once = once.clone();
            tokio::spawn(async move {
                let _guard = once.lock("a").await;
                once.is_done("a")
            })
        };
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "the second holder of `a` waits");
        once.mark_done("a").await;
        drop(first);
        assert!(waiter.await.unwrap(), "and then sees what the first did");
        assert!(!once.is_done("b"));
    }
}
