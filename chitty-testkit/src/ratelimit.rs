//! The [`RateLimiter`] conformance suite: every implementation runs these functions.
//!
//! Tenants get random names, so the suite can run against a shared Redis without cleaning up.

use std::sync::Arc;
use std::time::Duration;

use chitty_core::Timestamp;
use chitty_core::ratelimit::{Gcra, LimitCheck, LimitKind, RateDecision, RateLimiter};

use crate::budget::unique_tenant;

fn requests(per_minute: u32, burst: u32) -> Gcra {
    Gcra { kind: LimitKind::Requests, per_minute, burst }
}

fn tokens(per_minute: u32) -> Gcra {
    Gcra { kind: LimitKind::Tokens, per_minute, burst: per_minute }
}

/// Runs every single-task check.
pub async fn run_all(limiter: &dyn RateLimiter) {
    rate_and_burst(limiter).await;
    all_or_nothing_across_scopes(limiter).await;
    unused_tokens_are_given_back(limiter).await;
}

/// A limit admits its burst at once, then one request per interval; the refusal says how long to wait.
pub async fn rate_and_burst(limiter: &dyn RateLimiter) {
    let t = unique_tenant("rate");
    let checks = [LimitCheck { scope: "t", limit: requests(60, 3), cost: 1 }];
    let t0 = Timestamp(1_000_000);
    for remaining in [2, 1, 0] {
        match limiter.acquire(&t, &checks, t0).await.expect("acquire") {
            RateDecision::Admitted(s) => assert_eq!(s.requests.map(|r| (r.limit, r.remaining)), Some((60, remaining))),
            other => panic!("the burst admits three: {other:?}"),
        }
    }
    match limiter.acquire(&t, &checks, t0).await.expect("acquire") {
        RateDecision::Refused { retry_after, status } => {
            assert_eq!(retry_after, Duration::from_secs(1));
            assert_eq!(status.requests.map(|r| r.remaining), Some(0));
        }
        other => panic!("the fourth is refused: {other:?}"),
    }
    let soon = Timestamp(t0.0 + 999);
    assert!(matches!(limiter.acquire(&t, &checks, soon).await.expect("acquire"), RateDecision::Refused { .. }));
    let later = Timestamp(t0.0 + 1_000);
    assert!(matches!(limiter.acquire(&t, &checks, later).await.expect("acquire"), RateDecision::Admitted(_)));
}

/// A request is admitted only if every limit admits it; a refusal charges none of them.
pub async fn all_or_nothing_across_scopes(limiter: &dyn RateLimiter) {
    let t = unique_tenant("scopes");
    let now = Timestamp(5_000_000);
    let tenant_limit = LimitCheck { scope: "t", limit: requests(6_000, 100), cost: 1 };
    let key_limit = LimitCheck { scope: "k:key_a", limit: requests(60, 1), cost: 1 };
    assert!(matches!(
        limiter.acquire(&t, &[tenant_limit, key_limit], now).await.expect("acquire"),
        RateDecision::Admitted(_)
    ));
    match limiter.acquire(&t, &[tenant_limit, key_limit], now).await.expect("acquire") {
        RateDecision::Refused { status, .. } => {
            assert_eq!(status.requests.map(|r| r.limit), Some(60), "the key's is the tightest")
        }
        other => panic!("the key's burst is used: {other:?}"),
    }
    match limiter.acquire(&t, &[tenant_limit], now).await.expect("acquire") {
        RateDecision::Admitted(s) => {
            assert_eq!(s.requests.map(|r| r.remaining), Some(98), "the refusal charged nothing")
        }
        other => panic!("{other:?}"),
    }
    let other_tenant = unique_tenant("scopes");
    assert!(matches!(
        limiter.acquire(&other_tenant, &[key_limit], now).await.expect("acquire"),
        RateDecision::Admitted(_)
    ));
}

/// Token limits are charged the bound and given back what was not used.
pub async fn unused_tokens_are_given_back(limiter: &dyn RateLimiter) {
    let t = unique_tenant("tokens");
    let now = Timestamp(9_000_000);
    let limit = tokens(6_000);
    let check = |cost| [LimitCheck { scope: "t", limit, cost }];
    match limiter.acquire(&t, &check(5_000), now).await.expect("acquire") {
        RateDecision::Admitted(s) => assert_eq!(s.tokens.map(|r| r.remaining), Some(1_000)),
        other => panic!("{other:?}"),
    }
    match limiter.acquire(&t, &check(2_000), now).await.expect("acquire") {
        RateDecision::Refused { retry_after, .. } => assert_eq!(retry_after, Duration::from_secs(10)),
        other => panic!("only 1,000 tokens left: {other:?}"),
    }
    limiter.refund(&t, "t", limit, 4_000, now).await.expect("refund");
    match limiter.acquire(&t, &check(2_000), now).await.expect("acquire") {
        RateDecision::Admitted(s) => assert_eq!(s.tokens.map(|r| r.remaining), Some(3_000)),
        other => panic!("4,000 came back: {other:?}"),
    }
}

/// `tasks` concurrent requests at one instant against 600 a minute with a burst of 100: exactly the burst is
/// admitted, whatever the interleaving. Returns how many were admitted.
pub async fn concurrent_requests_admit_exactly_the_burst(limiter: Arc<dyn RateLimiter>, tasks: usize) -> usize {
    let t = unique_tenant("concurrent");
    let now = Timestamp(20_000_000);
    let mut handles = Vec::with_capacity(tasks);
    for _ in 0..tasks {
        let (limiter, t) = (limiter.clone(), t.clone());
        handles.push(tokio::spawn(async move {
            let checks = [LimitCheck { scope: "t", limit: requests(600, 100), cost: 1 }];
            matches!(limiter.acquire(&t, &checks, now).await.expect("acquire"), RateDecision::Admitted(_))
        }));
    }
    let mut admitted = 0;
    for h in handles {
        admitted += usize::from(h.await.expect("task panicked"));
    }
    assert_eq!(admitted, 100, "a burst of 100 at one instant");
    admitted
}
