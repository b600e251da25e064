//! Rate limits: the [`RateLimiter`] trait, requests and tokens per minute decided by GCRA (the generic cell
//! rate algorithm), and [`LocalRateLimiter`], the in-process limiter a single replica uses.
//!
//! GCRA keeps one number per limit, the theoretical arrival time (TAT): a request of cost `n` moves it
//! `n × 60 000 / per_minute` ms later, and is admitted while the TAT stays within `burst` emission intervals of
//! now. It admits exactly the configured rate with bursts of `burst`, needs no background refill, and its
//! state fits one value, so a shared limiter (Redis) checks every limit of a request in one script.
//! Times are milliseconds as `f64`, the same arithmetic as the Redis script's Lua numbers, so both limiters
//! decide alike.
//!
//! ```
//! use chitty_core::ratelimit::{Gcra, LimitKind};
//!
//! // 60 requests a minute (one a second) with bursts of 2.
//! let limit = Gcra { kind: LimitKind::Requests, per_minute: 60, burst: 2 };
//! let now = 1_000_000.0;
//! let first = limit.check(None, now, 1).unwrap();
//! let second = limit.check(Some(first.tat), now, 1).unwrap();
//! assert_eq!(second.state.remaining, 0);
//! let refused = limit.check(Some(second.tat), now, 1).unwrap_err();
//! assert_eq!(refused.retry_after_ms, 1_000.0);
//! ```

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;

use crate::error::Result;
use crate::time::Timestamp;

/// What a limit counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LimitKind {
    /// Requests per minute.
    Requests,
    /// Tokens per minute (prompt plus output cap at admission, corrected at settlement).
    Tokens,
}

/// One limit's parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gcra {
    /// What it counts.
    pub kind: LimitKind,
    /// Sustained rate per minute (at least 1).
    pub per_minute: u32,
    /// How many units may arrive at once (at least 1).
    pub burst: u32,
}

/// A limit's state after a check, as OpenAI's `x-ratelimit-*` headers report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitState {
    /// What it counts.
    pub kind: LimitKind,
    /// The limit per minute.
    pub limit: u32,
    /// Units that could be admitted at once now.
    pub remaining: u64,
    /// Time until the limit is back to its full burst.
    pub reset: Duration,
}

/// An admission: the new TAT to store and the state to report.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Admitted {
    /// The new theoretical arrival time, ms.
    pub tat: f64,
    /// What remains.
    pub state: LimitState,
}

/// A refusal: how long until the request would fit, and the state (unchanged).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Refused {
    /// Milliseconds until the request would be admitted.
    pub retry_after_ms: f64,
    /// What remains now.
    pub state: LimitState,
}

impl Gcra {
    /// The emission interval: milliseconds one unit occupies.
    pub fn interval_ms(&self) -> f64 {
        60_000.0 / f64::from(self.per_minute.max(1))
    }

    /// Checks a request of `cost` units at `now_ms` against the stored `tat` (none for a fresh limit).
    pub fn check(&self, tat: Option<f64>, now_ms: f64, cost: u64) -> std::result::Result<Admitted, Refused> {
        let interval = self.interval_ms();
        let capacity = f64::from(self.burst.max(1)) * interval;
        let tat = tat.map_or(now_ms, |t| t.max(now_ms));
        // Costs are token counts, far below 2^53: exact as f64.
        let next = tat + cost as f64 * interval;
        if next - now_ms > capacity {
            return Err(Refused { retry_after_ms: next - now_ms - capacity, state: self.state(tat, now_ms) });
        }
        Ok(Admitted { tat: next, state: self.state(next, now_ms) })
    }

    /// The state of a limit whose TAT is `tat`.
    pub fn state(&self, tat: f64, now_ms: f64) -> LimitState {
        let interval = self.interval_ms();
        let capacity = f64::from(self.burst.max(1)) * interval;
        let used = (tat - now_ms).max(0.0);
        LimitState {
            kind: self.kind,
            limit: self.per_minute,
            remaining: ((capacity - used) / interval).floor().max(0.0) as u64,
            reset: Duration::from_micros((used * 1_000.0).ceil() as u64),
        }
    }

    /// The TAT after giving back `amount` units (never earlier than now).
    pub fn refund(&self, tat: f64, now_ms: f64, amount: u64) -> f64 {
        (tat - amount as f64 * self.interval_ms()).max(now_ms)
    }
}

/// One limit to check for a request: a scope (`t` for the tenant, `k:<key id>` for a key), the limit and the
/// units the request costs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitCheck<'a> {
    /// The scope inside the tenant: `t`, or `k:` and a key id.
    pub scope: &'a str,
    /// The limit.
    pub limit: Gcra,
    /// Units this request costs (1 for requests, the token bound for tokens).
    pub cost: u64,
}

/// The tightest limit of each kind after a decision, for the `x-ratelimit-*` headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RateLimitStatus {
    /// The requests limit with the least remaining, if any applies.
    pub requests: Option<LimitState>,
    /// The tokens limit with the least remaining, if any applies.
    pub tokens: Option<LimitState>,
}

impl RateLimitStatus {
    /// The tightest of `states`, by kind.
    pub fn tightest(states: impl IntoIterator<Item = LimitState>) -> RateLimitStatus {
        let mut status = RateLimitStatus::default();
        for s in states {
            let slot = match s.kind {
                LimitKind::Requests => &mut status.requests,
                LimitKind::Tokens => &mut status.tokens,
            };
            if slot.is_none_or(|current| s.remaining < current.remaining) {
                *slot = Some(s);
            }
        }
        status
    }
}

/// What a limiter decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RateDecision {
    /// Every limit admitted the request and was charged.
    Admitted(RateLimitStatus),
    /// At least one limit refused; nothing was charged.
    Refused {
        /// How long until every limit would admit it.
        retry_after: Duration,
        /// The limits' state.
        status: RateLimitStatus,
    },
}

/// Requests and tokens per minute, per tenant and per key.
///
/// Contract (checked by `chitty_testkit::ratelimit` for every implementation):
/// - `acquire` checks all of `checks` (scopes of one tenant) atomically: it admits and charges every one only
///   if each admits; else it charges none and says how long until all would.
/// - `refund` gives back token units a request was charged for but did not use.
/// - A backend that cannot be reached fails with [`crate::Error::BackendUnavailable`].
#[async_trait]
pub trait RateLimiter: Send + Sync + Debug + 'static {
    /// Checks and charges `checks` for one request of `tenant` at `now`.
    async fn acquire(&self, tenant: &str, checks: &[LimitCheck<'_>], now: Timestamp) -> Result<RateDecision>;

    /// Gives back `amount` units of `limit` in `scope`.
    async fn refund(&self, tenant: &str, scope: &str, limit: Gcra, amount: u64, now: Timestamp) -> Result<()>;
}

/// The in-process [`RateLimiter`]: exact for one replica; N replicas each admit the full rate. Share a
/// Redis limiter (`chitty_providers::redis::RedisRateLimiter`) between replicas instead.
#[derive(Debug, Default)]
pub struct LocalRateLimiter {
    /// TAT per tenant, then per scope, then per kind ([`LimitKind::index`]); nested so that a lookup takes
    /// `&str` and only a new tenant or scope allocates its name.
    tats: Mutex<HashMap<String, ScopeTats>>,
}

/// One tenant's arrival times: per scope, requests then tokens.
type ScopeTats = HashMap<String, [Option<f64>; 2]>;

impl LimitKind {
    /// The slot of this kind in a scope's pair of arrival times.
    fn index(self) -> usize {
        match self {
            LimitKind::Requests => 0,
            LimitKind::Tokens => 1,
        }
    }
}

impl LocalRateLimiter {
    /// An empty limiter.
    pub fn new() -> LocalRateLimiter {
        LocalRateLimiter::default()
    }
}

#[async_trait]
impl RateLimiter for LocalRateLimiter {
    async fn acquire(&self, tenant: &str, checks: &[LimitCheck<'_>], now: Timestamp) -> Result<RateDecision> {
        let now_ms = now.0 as f64;
        // The map holds plain numbers: a panic elsewhere cannot leave it inconsistent.
        let mut tats = self.tats.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if !tats.contains_key(tenant) {
            tats.insert(tenant.to_owned(), HashMap::new());
        }
        let Some(scopes) = tats.get_mut(tenant) else { return Ok(RateDecision::Admitted(RateLimitStatus::default())) };
        let current =
            |scopes: &ScopeTats, c: &LimitCheck<'_>| scopes.get(c.scope).and_then(|slots| slots[c.limit.kind.index()]);
        let results: Vec<_> = checks.iter().map(|c| (c, c.limit.check(current(scopes, c), now_ms, c.cost))).collect();
        let wait = results.iter().filter_map(|(_, r)| r.as_ref().err()).map(|r| r.retry_after_ms).reduce(f64::max);
        if let Some(wait) = wait {
            let states = results.iter().map(|(c, _)| c.limit.state(current(scopes, c).unwrap_or(now_ms), now_ms));
            let retry_after = Duration::from_micros((wait * 1_000.0).ceil() as u64);
            return Ok(RateDecision::Refused { retry_after, status: RateLimitStatus::tightest(states) });
        }
        let mut states = Vec::with_capacity(results.len());
        for (check, admitted) in results {
            if let Ok(a) = admitted {
                if !scopes.contains_key(check.scope) {
                    scopes.insert(check.scope.to_owned(), [None; 2]);
                }
                if let Some(slots) = scopes.get_mut(check.scope) {
                    slots[check.limit.kind.index()] = Some(a.tat);
                }
                states.push(a.state);
            }
        }
        Ok(RateDecision::Admitted(RateLimitStatus::tightest(states)))
    }

    async fn refund(&self, tenant: &str, scope: &str, limit: Gcra, amount: u64, now: Timestamp) -> Result<()> {
        let mut tats = self.tats.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let slot = tats.get_mut(tenant).and_then(|scopes| scopes.get_mut(scope)).map(|s| &mut s[limit.kind.index()]);
        if let Some(Some(tat)) = slot {
            *tat = limit.refund(*tat, now.0 as f64, amount);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_the_rate_with_bursts_and_refuses_beyond() {
        let limit = Gcra { kind: LimitKind::Requests, per_minute: 60, burst: 3 };
        let t0 = 1_000_000.0;
        let mut tat = None;
        for expected_remaining in [2, 1, 0] {
            let a = limit.check(tat, t0, 1).unwrap();
            assert_eq!(a.state.remaining, expected_remaining);
            tat = Some(a.tat);
        }
        let r = limit.check(tat, t0, 1).unwrap_err();
        assert_eq!((r.retry_after_ms, r.state.remaining), (1_000.0, 0));
        assert!(limit.check(tat, t0 + 999.0, 1).is_err());
        let a = limit.check(tat, t0 + 1_000.0, 1).unwrap();
        assert_eq!(a.state.reset, Duration::from_secs(3), "three intervals until the burst is back");
        // A long idle period refills only up to the burst.
        let later = t0 + 3_600_000.0;
        let mut tat = Some(a.tat);
        for _ in 0..3 {
            tat = Some(limit.check(tat, later, 1).unwrap().tat);
        }
        assert!(limit.check(tat, later, 1).is_err());
    }

    #[test]
    fn token_costs_and_refunds() {
        let limit = Gcra { kind: LimitKind::Tokens, per_minute: 6_000, burst: 6_000 };
        let now = 0.0;
        let a = limit.check(None, now, 5_000).unwrap();
        assert_eq!(a.state.remaining, 1_000);
        let r = limit.check(Some(a.tat), now, 2_000).unwrap_err();
        assert_eq!(r.retry_after_ms, 10_000.0, "1,000 tokens short at 100 a second");
        let refunded = limit.refund(a.tat, now, 4_000);
        assert_eq!(limit.state(refunded, now).remaining, 5_000);
        assert_eq!(limit.refund(a.tat, now, 1_000_000), now, "never earlier than now");
    }

    #[test]
    fn a_refusal_by_one_scope_charges_none() {
        let limiter = LocalRateLimiter::new();
        let tight = Gcra { kind: LimitKind::Requests, per_minute: 60, burst: 1 };
        let loose = Gcra { kind: LimitKind::Requests, per_minute: 6_000, burst: 100 };
        let checks =
            [LimitCheck { scope: "t", limit: loose, cost: 1 }, LimitCheck { scope: "k:a", limit: tight, cost: 1 }];
        let now = Timestamp(1_000);
        let block = |f| futures::executor::block_on(f);
        let RateDecision::Admitted(status) = block(limiter.acquire("acme", &checks, now)).unwrap() else { panic!() };
        assert_eq!(status.requests.map(|s| s.remaining), Some(0), "the key's limit is the tightest");
        let RateDecision::Refused { retry_after, status } = block(limiter.acquire("acme", &checks, now)).unwrap()
        else {
            panic!("the key's burst is used")
        };
        assert_eq!(retry_after, Duration::from_secs(1));
        assert_eq!(status.requests.map(|s| (s.limit, s.remaining)), Some((60, 0)));
        // The tenant scope was not charged by the refusal: 99 of its 100 remain.
        let alone = [LimitCheck { scope: "t", limit: loose, cost: 1 }];
        let RateDecision::Admitted(status) = block(limiter.acquire("acme", &alone, now)).unwrap() else { panic!() };
        assert_eq!(status.requests.map(|s| s.remaining), Some(98));
        let other = block(limiter.acquire("globex", &checks, now)).unwrap();
        assert!(matches!(other, RateDecision::Admitted(_)), "tenants never share a limit");
    }
}
