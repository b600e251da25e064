//! When to try an upstream again: a per-provider [`RetryBudget`] (retries at most a share of requests over a
//! sliding window, plus a small reserve per second, as Finagle's and Envoy's retry budgets do), full-jitter
//! backoff drawn from an injected [`RandomSource`] ([`FullJitter`]), and [`RetryPolicy`], which combines them
//! with an attempt limit and the request's total deadline into one [`RetryDecision`].
//!
//! Everything is decided from a `now` the caller passes, so a test can replay an outage in virtual time.
//!
//! ```
//! use std::time::Duration;
//! use chitty_core::retry::{FullJitter, RetryBudget, RetryBudgetConfig, RetryDecision, RetryPolicy};
//! use chitty_core::{SeededRandom, Timestamp};
//!
//! // 20 % of requests may be retried, plus 1 retry per second of window (10 s): a dying provider gets
//! // at most 10 + 0.2 × requests retries per 10 s, not one per failing request.
//! let mut budget = RetryBudget::new(RetryBudgetConfig { percent: 20, min_per_sec: 1, window_secs: 10 });
//! let now = Timestamp(1_000_000);
//! for _ in 0..100 {
//!     budget.record_request(now);
//! }
//! assert_eq!(budget.available(now), 30);
//!
//! let policy = RetryPolicy {
//!     max_attempts: 3,
//!     jitter: FullJitter::new(Duration::from_millis(100), Duration::from_secs(2)),
//! };
//! let random = SeededRandom::new(7);
//! let deadline = now.plus(Duration::from_secs(30));
//! match policy.decide(1, now, deadline, None, &mut budget, &random) {
//!     RetryDecision::RetryAfter(wait) => assert!(wait <= Duration::from_millis(100)),
//!     other => panic!("expected a retry, got {other:?}"),
//! }
//! assert_eq!(budget.available(now), 29, "the retry was withdrawn from the budget");
//! ```

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::time::{RandomSource, Timestamp};
use crate::upstream::full_jitter_backoff;

/// Buckets a budget's window is divided into: the window slides in steps of a tenth.
const WINDOW_BUCKETS: u64 = 10;

/// How many retries a provider may take: `percent` of its requests over the last `window_secs`, plus
/// `min_per_sec × window_secs` so that a quiet provider can still be retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryBudgetConfig {
    /// Retries allowed per hundred requests in the window (Envoy's and Finagle's default: 20).
    pub percent: u32,
    /// Retries allowed per second of window regardless of traffic (Finagle's default: 10).
    pub min_per_sec: u32,
    /// The sliding window, seconds (Finagle's default: 10).
    pub window_secs: u32,
}

impl Default for RetryBudgetConfig {
    fn default() -> Self {
        RetryBudgetConfig { percent: 20, min_per_sec: 10, window_secs: 10 }
    }
}

/// Requests and retries counted in one slice of the window.
#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    /// Which slice of time this bucket counts (`now / bucket_ms`); a stale one is reset before use.
    epoch: u64,
    requests: u64,
    retries: u64,
}

/// A sliding-window retry budget for one provider. Not synchronised: keep it behind the same lock as the
/// provider's circuit breaker.
#[derive(Debug, Clone)]
pub struct RetryBudget {
    config: RetryBudgetConfig,
    bucket_ms: u64,
    buckets: [Bucket; WINDOW_BUCKETS as usize],
}

impl RetryBudget {
    /// An empty budget (only the per-second reserve is available).
    pub fn new(config: RetryBudgetConfig) -> RetryBudget {
        let window_ms = u64::from(config.window_secs.max(1)) * 1_000;
        RetryBudget {
            config,
            bucket_ms: window_ms / WINDOW_BUCKETS,
            buckets: [Bucket { epoch: u64::MAX, ..Bucket::default() }; WINDOW_BUCKETS as usize],
        }
    }

    /// The configuration.
    pub fn config(&self) -> RetryBudgetConfig {
        self.config
    }

    /// Counts a first attempt (not a retry): each one earns `percent / 100` of a retry.
    pub fn record_request(&mut self, now: Timestamp) {
        self.current(now).requests += 1;
    }

    /// Takes one retry from the budget if one is available; `false` means do not retry.
    pub fn try_withdraw(&mut self, now: Timestamp) -> bool {
        if self.available(now) == 0 {
            return false;
        }
        self.current(now).retries += 1;
        true
    }

    /// Retries available now: the reserve plus `percent` of the window's requests, less its retries.
    pub fn available(&self, now: Timestamp) -> u64 {
        let (requests, retries) = self.window_totals(now);
        let reserve = u64::from(self.config.min_per_sec) * u64::from(self.config.window_secs.max(1));
        let earned = requests.saturating_mul(u64::from(self.config.percent)) / 100;
        (reserve + earned).saturating_sub(retries)
    }

    /// Requests and retries counted in the window ending at `now`.
    pub fn window_totals(&self, now: Timestamp) -> (u64, u64) {
        let epoch = now.0 / self.bucket_ms;
        // A bucket counts while its epoch is one of the last `WINDOW_BUCKETS`; a clock that stepped back
        // leaves buckets "in the future", which still count (the conservative side).
        let live = |b: &&Bucket| b.epoch != u64::MAX && b.epoch.saturating_add(WINDOW_BUCKETS) > epoch;
        self.buckets.iter().filter(live).fold((0, 0), |(q, r), b| (q + b.requests, r + b.retries))
    }

    /// The bucket counting `now`, reset if it last counted an older slice.
    fn current(&mut self, now: Timestamp) -> &mut Bucket {
        let epoch = now.0 / self.bucket_ms;
        let bucket = &mut self.buckets[(epoch % WINDOW_BUCKETS) as usize];
        if bucket.epoch != epoch {
            *bucket = Bucket { epoch, requests: 0, retries: 0 };
        }
        bucket
    }
}

impl Default for RetryBudget {
    fn default() -> Self {
        RetryBudget::new(RetryBudgetConfig::default())
    }
}

/// Full-jitter exponential backoff: retry `n` (1-based) waits a uniform draw from
/// `[0, min(cap, base · 2^(n-1))]` (AWS Architecture Blog, "Exponential Backoff and Jitter").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FullJitter {
    /// Bound of the first retry's wait.
    pub base: Duration,
    /// Largest bound.
    pub cap: Duration,
}

impl FullJitter {
    /// Backoff doubling from `base` up to `cap`.
    pub fn new(base: Duration, cap: Duration) -> FullJitter {
        FullJitter { base, cap }
    }

    /// The wait before retry number `retry` (1 is the first retry), drawn from `random`.
    pub fn delay(&self, retry: u32, random: &dyn RandomSource) -> Duration {
        full_jitter_backoff(self.base, self.cap, retry.saturating_sub(1), random.next_u64())
    }
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryDecision {
    /// Wait this long, then retry (one retry has been withdrawn from the budget).
    RetryAfter(Duration),
    /// The request has had its attempts.
    AttemptsExhausted,
    /// The provider's retry budget is spent: move on to the next route instead of retrying this one.
    BudgetExhausted,
    /// The wait would end past the request's deadline.
    DeadlineExceeded,
}

impl RetryDecision {
    /// A short machine-readable label for events and logs.
    pub fn label(&self) -> &'static str {
        match self {
            RetryDecision::RetryAfter(_) => "retry",
            RetryDecision::AttemptsExhausted => "attempts_exhausted",
            RetryDecision::BudgetExhausted => "retry_budget_exhausted",
            RetryDecision::DeadlineExceeded => "deadline_exceeded",
        }
    }
}

/// Attempt limit and backoff for one route; the budget belongs to the route's provider and the deadline to
/// the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts per route, the first included (1 never retries).
    pub max_attempts: u32,
    /// How long to wait between attempts.
    pub jitter: FullJitter,
}

impl RetryPolicy {
    /// Decides after attempt number `attempts_made` (1 after the first attempt) failed at `now`.
    /// `retry_after` is the upstream's own hint, honoured in place of the jitter when it is no longer than
    /// the cap. Checks, in order: attempts, deadline, budget; a retry is withdrawn only when granted.
    pub fn decide(
        &self,
        attempts_made: u32,
        now: Timestamp,
        deadline: Timestamp,
        retry_after: Option<Duration>,
        budget: &mut RetryBudget,
        random: &dyn RandomSource,
    ) -> RetryDecision {
        if attempts_made >= self.max_attempts {
            return RetryDecision::AttemptsExhausted;
        }
        let wait = match retry_after {
            Some(hint) if hint <= self.jitter.cap => hint,
            // A hint longer than we would ever wait: this route is out for this request.
            Some(_) => return RetryDecision::DeadlineExceeded,
            None => self.jitter.delay(attempts_made, random),
        };
        if now.plus(wait) >= deadline {
            return RetryDecision::DeadlineExceeded;
        }
        if !budget.try_withdraw(now) {
            return RetryDecision::BudgetExhausted;
        }
        RetryDecision::RetryAfter(wait)
    }
}

/// The timeout for an attempt starting at `now`: the per-attempt timeout, shortened to what is left before
/// the request's deadline (zero once it has passed).
pub fn attempt_timeout(per_attempt: Duration, now: Timestamp, deadline: Timestamp) -> Duration {
    per_attempt.min(deadline.since(now))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::SeededRandom;

    const T0: Timestamp = Timestamp(1_700_000_000_000);

    fn budget(percent: u32, min_per_sec: u32) -> RetryBudget {
        RetryBudget::new(RetryBudgetConfig { percent, min_per_sec, window_secs: 10 })
    }

    #[test]
    fn the_budget_refuses_past_its_share_and_recovers_as_the_window_slides() {
        let mut b = budget(20, 0);
        assert!(!b.try_withdraw(T0), "no requests, no reserve: nothing to retry with");
        for _ in 0..50 {
            b.record_request(T0);
        }
        let granted = (0..100).filter(|_| b.try_withdraw(T0)).count();
        assert_eq!(granted, 10, "20 % of 50 requests");
        assert!(!b.try_withdraw(T0.plus(Duration::from_secs(9))), "still inside the window");
        // Ten seconds later the requests and the retries have both left the window.
        let later = T0.plus(Duration::from_secs(10));
        assert_eq!(b.window_totals(later), (0, 0));
        for _ in 0..10 {
            b.record_request(later);
        }
        assert_eq!(b.available(later), 2);
        assert!(b.try_withdraw(later) && b.try_withdraw(later) && !b.try_withdraw(later));
    }

    #[test]
    fn the_window_slides_in_tenths() {
        let mut b = budget(100, 0);
        for s in 0..10 {
            b.record_request(T0.plus(Duration::from_secs(s)));
        }
        assert_eq!(b.window_totals(T0.plus(Duration::from_millis(9_999))).0, 10);
        // The oldest second drops out once the window has moved past it, one second at a time.
        assert_eq!(b.window_totals(T0.plus(Duration::from_secs(10))).0, 9);
        assert_eq!(b.window_totals(T0.plus(Duration::from_secs(15))).0, 4);
        assert_eq!(b.window_totals(T0.plus(Duration::from_secs(19))).0, 0);
    }

    #[test]
    fn the_reserve_lets_a_quiet_provider_retry() {
        let mut b = budget(20, 1);
        assert_eq!(b.available(T0), 10, "1 per second over a 10 s window");
        let granted = (0..50).filter(|_| b.try_withdraw(T0)).count();
        assert_eq!(granted, 10);
        assert_eq!(b.available(T0.plus(Duration::from_secs(10))), 10, "the reserve comes back with the window");
    }

    #[test]
    fn a_dying_provider_gets_a_bounded_share_of_retries() {
        // 1,000 requests over 10 s, every attempt failing: retries stay within 20 % plus the reserve.
        let mut b = budget(20, 1);
        let mut retries = 0;
        for i in 0..1_000u64 {
            let now = Timestamp(T0.0 + i * 10);
            b.record_request(now);
            retries += u64::from(b.try_withdraw(now));
        }
        assert_eq!(retries, 200 + 10);
    }

    #[test]
    fn full_jitter_stays_within_bounds_and_spreads() {
        let jitter = FullJitter::new(Duration::from_millis(100), Duration::from_secs(1));
        let random = SeededRandom::new(42);
        for retry in 1..=12u32 {
            let bound = Duration::from_millis(100 * (1u64 << (retry - 1).min(20))).min(Duration::from_secs(1));
            let waits: Vec<Duration> = (0..500).map(|_| jitter.delay(retry, &random)).collect();
            assert!(waits.iter().all(|w| *w <= bound), "retry {retry} waited past {bound:?}");
            let longest = waits.iter().max().copied().unwrap_or_default();
            let shortest = waits.iter().min().copied().unwrap_or_default();
            assert!(longest > bound * 9 / 10 && shortest < bound / 10, "retry {retry}: {shortest:?}..{longest:?}");
        }
        assert!(jitter.delay(0, &random) <= Duration::from_millis(100), "retry 0 is treated as the first");
    }

    #[test]
    fn the_policy_checks_attempts_deadline_then_budget() {
        let policy = RetryPolicy {
            max_attempts: 3,
            jitter: FullJitter::new(Duration::from_millis(100), Duration::from_secs(2)),
        };
        let random = SeededRandom::new(1);
        let deadline = T0.plus(Duration::from_secs(5));
        let mut b = budget(0, 0);
        assert_eq!(policy.decide(1, T0, deadline, None, &mut b, &random), RetryDecision::BudgetExhausted);
        let mut b = budget(0, 1);
        assert_eq!(policy.decide(3, T0, deadline, None, &mut b, &random), RetryDecision::AttemptsExhausted);
        assert_eq!(b.available(T0), 10, "a refusal withdraws nothing");
        let hint = Some(Duration::from_millis(1_500));
        assert_eq!(
            policy.decide(1, T0, deadline, hint, &mut b, &random),
            RetryDecision::RetryAfter(Duration::from_millis(1_500))
        );
        let late = T0.plus(Duration::from_millis(4_000));
        assert_eq!(policy.decide(1, late, deadline, hint, &mut b, &random), RetryDecision::DeadlineExceeded);
        assert_eq!(
            policy.decide(1, T0, deadline, Some(Duration::from_secs(3)), &mut b, &random),
            RetryDecision::DeadlineExceeded
        );
        assert_eq!(b.available(T0), 9, "only the granted retry was withdrawn");
        assert_eq!(RetryDecision::BudgetExhausted.label(), "retry_budget_exhausted");
    }

    #[test]
    fn attempt_timeouts_shrink_to_the_deadline() {
        let deadline = T0.plus(Duration::from_secs(10));
        assert_eq!(attempt_timeout(Duration::from_secs(3), T0, deadline), Duration::from_secs(3));
        assert_eq!(
            attempt_timeout(Duration::from_secs(3), T0.plus(Duration::from_secs(8)), deadline),
            Duration::from_secs(2)
        );
        assert_eq!(attempt_timeout(Duration::from_secs(3), T0.plus(Duration::from_secs(11)), deadline), Duration::ZERO);
    }

    #[test]
    fn config_reads_from_toml_shaped_json() {
        let c: RetryBudgetConfig = serde_json::from_str(r#"{"percent": 10}"#).unwrap();
        assert_eq!(c, RetryBudgetConfig { percent: 10, min_per_sec: 10, window_secs: 10 });
        assert!(serde_json::from_str::<RetryBudgetConfig>(r#"{"percnt": 10}"#).is_err());
    }
}
