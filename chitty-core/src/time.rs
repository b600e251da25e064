//! Time and chance as inputs: the core never reads the clock, sleeps or draws random numbers; it is handed a
//! [`Clock`], a [`Timer`] and a [`RandomSource`].

use std::fmt::Debug;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::future::BoxFuture;

/// Milliseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, serde::Serialize, serde::Deserialize)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// This instant plus `d` (saturating).
    pub fn plus(self, d: Duration) -> Timestamp {
        Timestamp(self.0.saturating_add(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)))
    }

    /// Time from `earlier` to `self`, zero if `earlier` is later.
    pub fn since(self, earlier: Timestamp) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }

    /// Whole seconds since the epoch.
    pub fn as_secs(self) -> u64 {
        self.0 / 1000
    }
}

/// A source of the current time, injected so that decisions can be tested with virtual time.
pub trait Clock: Send + Sync + Debug + 'static {
    /// The current time.
    fn now(&self) -> Timestamp;

    /// A monotonic reading in nanoseconds from an arbitrary origin, for measuring short spans (the gateway's
    /// own overhead is tens of microseconds, below [`Timestamp`]'s millisecond). Only differences between two
    /// readings of one clock mean anything. The default derives it from [`Clock::now`], so virtual clocks
    /// stay consistent; real clocks override it with a monotonic, high-resolution source.
    fn monotonic_nanos(&self) -> u64 {
        self.now().0.saturating_mul(1_000_000)
    }
}

/// Time from the monotonic reading `earlier` to `later` (zero if `later` is earlier).
pub fn nanos_between(earlier: u64, later: u64) -> Duration {
    Duration::from_nanos(later.saturating_sub(earlier))
}

/// A way to wait, injected so that retries and timeouts can be tested without sleeping.
pub trait Timer: Send + Sync + Debug + 'static {
    /// A future that completes after `duration`.
    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()>;
}

/// A way to run a future to completion in the background (used to settle a budget when a stream is dropped).
pub trait Spawner: Send + Sync + Debug + 'static {
    /// Runs `future` to completion independently of the caller.
    fn spawn(&self, future: BoxFuture<'static, ()>);
}

/// A source of random numbers, injected so that randomised decisions (retry jitter) can be replayed in tests.
pub trait RandomSource: Send + Sync + Debug + 'static {
    /// The next uniformly distributed value.
    fn next_u64(&self) -> u64;
}

/// A fast deterministic [`RandomSource`] (SplitMix64): the same seed gives the same sequence. Not for secrets.
#[derive(Debug, Default)]
pub struct SeededRandom {
    state: AtomicU64,
}

impl SeededRandom {
    /// A sequence starting from `seed`.
    pub fn new(seed: u64) -> Self {
        SeededRandom { state: AtomicU64::new(seed) }
    }
}

impl RandomSource for SeededRandom {
    fn next_u64(&self) -> u64 {
        let mut z = self.state.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed).wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// A clock that only moves when told to: for tests and simulations.
#[derive(Debug, Clone, Default)]
pub struct ManualClock {
    millis: Arc<AtomicU64>,
}

impl ManualClock {
    /// A clock showing `start`.
    pub fn new(start: Timestamp) -> Self {
        ManualClock { millis: Arc::new(AtomicU64::new(start.0)) }
    }

    /// Moves the clock forward by `d`.
    pub fn advance(&self, d: Duration) {
        self.millis.fetch_add(u64::try_from(d.as_millis()).unwrap_or(u64::MAX), Ordering::SeqCst);
    }

    /// Sets the clock to `t`.
    pub fn set(&self, t: Timestamp) {
        self.millis.store(t.0, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.millis.load(Ordering::SeqCst))
    }
}

/// A timer over a [`ManualClock`]: a sleep advances the clock when it is first polled, so retry schedules run
/// instantly, and a timeout raced against a future that is already ready never moves the clock.
#[derive(Debug, Clone, Default)]
pub struct ManualTimer {
    clock: ManualClock,
}

impl ManualTimer {
    /// A timer that advances `clock`.
    pub fn new(clock: ManualClock) -> Self {
        ManualTimer { clock }
    }
}

impl Timer for ManualTimer {
    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()> {
        let clock = self.clock.clone();
        Box::pin(futures::future::lazy(move |_| clock.advance(duration)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_told() {
        let clock = ManualClock::new(Timestamp(1_000));
        assert_eq!(clock.now(), Timestamp(1_000));
        clock.advance(Duration::from_secs(2));
        assert_eq!(clock.now(), Timestamp(3_000));
        let timer = ManualTimer::new(clock.clone());
        drop(timer.sleep(Duration::from_millis(500)));
        assert_eq!(clock.now(), Timestamp(3_000), "an unpolled sleep does not move time");
        futures::executor::block_on(timer.sleep(Duration::from_millis(500)));
        assert_eq!(clock.now(), Timestamp(3_500));
        assert_eq!(Timestamp(3_500).since(Timestamp(1_000)), Duration::from_millis(2_500));
        assert_eq!(Timestamp(1).since(Timestamp(5)), Duration::ZERO);
    }

    #[test]
    fn the_default_monotonic_reading_follows_virtual_time() {
        let clock = ManualClock::new(Timestamp(1_000));
        let before = clock.monotonic_nanos();
        clock.advance(Duration::from_micros(2_500));
        assert_eq!(nanos_between(before, clock.monotonic_nanos()), Duration::from_millis(2), "millisecond steps");
        assert_eq!(nanos_between(clock.monotonic_nanos(), before), Duration::ZERO);
    }
}
