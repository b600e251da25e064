//! The real clock, timer, spawner and random source (feature `tokio`), for hosts that run chitty on a tokio
//! runtime: the only place in this crate that reads the system clock, sleeps, spawns or draws OS randomness.
//!
//! ```
//! use std::time::Duration;
//! use chitty_core::runtime::{SystemClock, SystemRandom, TokioTimer};
//! use chitty_core::{Clock, RandomSource, Timer};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
//! let before = SystemClock.now();
//! TokioTimer.sleep(Duration::from_millis(1)).await;
//! assert!(SystemClock.now() >= before);
//! let random = SystemRandom::new();
//! assert_ne!((random.next_u64(), random.next_u64()), (0, 0));
//! # });
//! ```

use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::future::BoxFuture;

use crate::time::{Clock, RandomSource, SeededRandom, Spawner, Timer, Timestamp};

/// The system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        // A clock before 1970 is a host misconfiguration; report the epoch rather than panic.
        let ms = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0);
        Timestamp(u64::try_from(ms).unwrap_or(u64::MAX))
    }

    fn monotonic_nanos(&self) -> u64 {
        // One origin per process, so readings from every clone compare; u64 nanoseconds last 584 years.
        static ORIGIN: OnceLock<Instant> = OnceLock::new();
        let origin = *ORIGIN.get_or_init(Instant::now);
        u64::try_from(origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

/// Sleeps on the tokio timer.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioTimer;

impl Timer for TokioTimer {
    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()> {
        Box::pin(tokio::time::sleep(duration))
    }
}

/// Spawns onto the current tokio runtime.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioSpawner;

impl Spawner for TokioSpawner {
    fn spawn(&self, future: BoxFuture<'static, ()>) {
        tokio::spawn(future);
    }
}

/// A [`RandomSource`] seeded once from the operating system: a [`SeededRandom`] whose seed differs per
/// instance and per process, so replicas draw different retry jitter. Fast and predictable from its output:
/// for jitter and sampling, never for secrets, tokens or keys.
#[derive(Debug)]
pub struct SystemRandom {
    sequence: SeededRandom,
}

impl SystemRandom {
    /// A source with a fresh seed from the OS (std's `RandomState`, keyed from OS randomness).
    pub fn new() -> Self {
        SystemRandom { sequence: SeededRandom::new(RandomState::new().hash_one(0x6368_6974_7479_u64)) }
    }
}

impl Default for SystemRandom {
    fn default() -> Self {
        SystemRandom::new()
    }
}

impl RandomSource for SystemRandom {
    fn next_u64(&self) -> u64 {
        self.sequence.next_u64()
    }
}

/// Wires the tokio runtime into a [`crate::gateway::GatewayBuilder`].
pub trait TokioRuntimeExt {
    /// Uses [`SystemClock`], [`TokioTimer`], [`TokioSpawner`] and [`SystemRandom`] (retry jitter).
    fn tokio_runtime(self) -> Self;
}

impl TokioRuntimeExt for crate::gateway::GatewayBuilder {
    fn tokio_runtime(self) -> Self {
        self.runtime(Arc::new(SystemClock), Arc::new(TokioTimer), Arc::new(TokioSpawner))
            .random(Arc::new(SystemRandom::new()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_random_sources_differ_from_each_other() {
        let (a, b) = (SystemRandom::new(), SystemRandom::new());
        let first: Vec<u64> = (0..4).map(|_| a.next_u64()).collect();
        let second: Vec<u64> = (0..4).map(|_| b.next_u64()).collect();
        assert_ne!(first, second, "two sources with the same seed would retry in step");
        assert_ne!(first[0], first[1]);
    }

    #[test]
    fn system_clock_measures_below_a_millisecond() {
        let a = SystemClock.monotonic_nanos();
        std::thread::sleep(Duration::from_micros(200));
        let b = SystemClock.monotonic_nanos();
        assert!(b - a >= 200_000, "monotonic and at least as long as the sleep: {}", b - a);
        assert!(b - a < 1_000_000_000);
    }

    #[test]
    fn system_clock_is_past_2020() {
        assert!(SystemClock.now() > Timestamp(1_577_836_800_000));
    }
}
