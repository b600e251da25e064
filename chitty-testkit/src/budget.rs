//! The [`BudgetStore`] conformance suite: every implementation runs these functions.
//!
//! Tenants get random names, so the suite can run against a shared Redis without cleaning up.

use std::sync::Arc;
use std::time::Duration;

use chitty_core::{BudgetStore, Error, NanoUsd, ReserveRequest, Timestamp};
use rand::Rng;

/// A tenant name no other run uses.
pub fn unique_tenant(prefix: &str) -> String {
    format!("{prefix}-{:016x}", rand::random::<u64>())
}

fn req(tenant: &str, min: u64, max: u64, now: Timestamp) -> ReserveRequest<'_> {
    ReserveRequest { tenant, min: NanoUsd(min), max: NanoUsd(max), lease: Duration::from_secs(60), now }
}

/// Runs every single-task check.
pub async fn run_all(store: &dyn BudgetStore) {
    reserve_settle_release(store).await;
    exhaustion_and_partial_grants(store).await;
    lease_expiry(store).await;
    no_double_charge(store).await;
    settle_is_capped_at_the_reservation(store).await;
}

/// Reserve holds money, settle charges the actual cost and refunds the rest, release frees without charging.
pub async fn reserve_settle_release(store: &dyn BudgetStore) {
    let t = unique_tenant("rsr");
    let now = Timestamp(1_000_000);
    store.set_limit(&t, NanoUsd(10_000)).await.expect("set_limit");
    let r = store.reserve(req(&t, 1_000, 1_000, now)).await.expect("reserve");
    assert_eq!(r.amount, NanoUsd(1_000));
    assert_eq!(r.tenant, t);
    let b = store.balance(&t, now).await.expect("balance");
    assert_eq!((b.limit, b.spent, b.reserved), (NanoUsd(10_000), NanoUsd(0), NanoUsd(1_000)));
    let s = store.settle(&r, NanoUsd(400), now).await.expect("settle");
    assert_eq!((s.charged, s.refunded), (NanoUsd(400), NanoUsd(600)));
    let b = store.balance(&t, now).await.expect("balance");
    assert_eq!((b.spent, b.reserved, b.remaining()), (NanoUsd(400), NanoUsd(0), NanoUsd(9_600)));
    let r2 = store.reserve(req(&t, 2_000, 2_000, now)).await.expect("reserve");
    store.release(&r2, now).await.expect("release");
    let b = store.balance(&t, now).await.expect("balance");
    assert_eq!((b.spent, b.reserved), (NanoUsd(400), NanoUsd(0)), "release charges nothing");
    store.set_limit(&t, NanoUsd(500)).await.expect("set_limit");
    let b = store.balance(&t, now).await.expect("balance");
    assert_eq!(
        (b.limit, b.spent, b.remaining()),
        (NanoUsd(500), NanoUsd(400), NanoUsd(100)),
        "a new limit keeps spend"
    );
}

/// A reservation above what remains fails with `BudgetExhausted`; a range is granted as far as it fits.
pub async fn exhaustion_and_partial_grants(store: &dyn BudgetStore) {
    let t = unique_tenant("exh");
    let now = Timestamp(1_000_000);
    let unknown = store.reserve(req(&t, 1, 1, now)).await;
    assert!(matches!(unknown, Err(Error::BudgetExhausted { .. })), "no limit set means a zero limit: {unknown:?}");
    store.set_limit(&t, NanoUsd(1_000)).await.expect("set_limit");
    let r = store.reserve(req(&t, 100, 700, now)).await.expect("reserve");
    assert_eq!(r.amount, NanoUsd(700), "the whole max when it fits");
    let r2 = store.reserve(req(&t, 100, 700, now)).await.expect("reserve");
    assert_eq!(r2.amount, NanoUsd(300), "what remains when max does not fit");
    match store.reserve(req(&t, 1, 10, now)).await {
        Err(Error::BudgetExhausted { needed, remaining }) => {
            assert_eq!((needed, remaining), (NanoUsd(1), NanoUsd(0)));
        }
        other => panic!("expected BudgetExhausted, got {other:?}"),
    }
    store.release(&r2, now).await.expect("release");
    assert!(store.reserve(req(&t, 301, 400, now)).await.is_err(), "min above remaining fails");
    assert_eq!(store.reserve(req(&t, 300, 400, now)).await.expect("reserve").amount, NanoUsd(300));
}

/// A reservation whose lease expired is reclaimed; settling it afterwards fails and charges nothing.
pub async fn lease_expiry(store: &dyn BudgetStore) {
    let t = unique_tenant("lease");
    let t0 = Timestamp(5_000_000);
    store.set_limit(&t, NanoUsd(1_000)).await.expect("set_limit");
    let r = store.reserve(req(&t, 1_000, 1_000, t0)).await.expect("reserve");
    assert!(store.reserve(req(&t, 1, 1, t0.plus(Duration::from_secs(59)))).await.is_err(), "held during the lease");
    let later = t0.plus(Duration::from_secs(61));
    let b = store.balance(&t, later).await.expect("balance");
    assert_eq!((b.reserved, b.remaining()), (NanoUsd(0), NanoUsd(1_000)), "reclaimed after the lease");
    let settled = store.settle(&r, NanoUsd(10), later).await;
    assert!(matches!(settled, Err(Error::ReservationNotFound { .. })), "{settled:?}");
    assert_eq!(store.balance(&t, later).await.expect("balance").spent, NanoUsd(0));
}

/// Settling or releasing twice fails the second time and never charges twice.
pub async fn no_double_charge(store: &dyn BudgetStore) {
    let t = unique_tenant("dbl");
    let now = Timestamp(1_000_000);
    store.set_limit(&t, NanoUsd(1_000)).await.expect("set_limit");
    let r = store.reserve(req(&t, 500, 500, now)).await.expect("reserve");
    store.settle(&r, NanoUsd(200), now).await.expect("settle");
    assert!(matches!(store.settle(&r, NanoUsd(200), now).await, Err(Error::ReservationNotFound { .. })));
    assert!(matches!(store.release(&r, now).await, Err(Error::ReservationNotFound { .. })));
    assert_eq!(store.balance(&t, now).await.expect("balance").spent, NanoUsd(200));
}

/// An actual cost above the reservation charges the reservation and reports the rest as excess: spend never
/// passes the limit, whatever an upstream reports.
pub async fn settle_is_capped_at_the_reservation(store: &dyn BudgetStore) {
    let t = unique_tenant("cap");
    let now = Timestamp(1_000_000);
    store.set_limit(&t, NanoUsd(1_000)).await.expect("set_limit");
    let r = store.reserve(req(&t, 600, 600, now)).await.expect("reserve");
    let other = store.reserve(req(&t, 400, 400, now)).await.expect("reserve");
    let s = store.settle(&r, NanoUsd(16_000), now).await.expect("settle");
    assert_eq!((s.charged, s.refunded, s.excess), (NanoUsd(600), NanoUsd(0), NanoUsd(15_400)));
    let s = store.settle(&other, NanoUsd(u64::MAX), now).await.expect("settle");
    assert_eq!((s.charged, s.excess), (NanoUsd(400), NanoUsd(u64::MAX - 400)));
    let b = store.balance(&t, now).await.expect("balance");
    assert_eq!(
        (b.spent, b.reserved, b.remaining()),
        (NanoUsd(1_000), NanoUsd(0), NanoUsd(0)),
        "spend stops at the limit"
    );
    let r = store.reserve(req(&t, 0, 0, now)).await.expect("a zero reservation fits");
    let s = store.settle(&r, NanoUsd(5), now).await.expect("settle");
    assert_eq!((s.charged, s.excess), (NanoUsd(0), NanoUsd(5)));
    assert_eq!(store.balance(&t, now).await.expect("balance").spent, NanoUsd(1_000));
}

/// What [`concurrent_reservations`] observed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConcurrencyReport {
    /// Reservations granted.
    pub granted: u64,
    /// Reservations refused for lack of budget.
    pub refused: u64,
    /// Sum of the actual costs settled.
    pub settled_total: NanoUsd,
}

/// `tasks` concurrent reservations of random sizes against a limit that covers about a third of them:
/// the store never grants more than the limit, and the settled total equals the sum of actual costs.
pub async fn concurrent_reservations(store: Arc<dyn BudgetStore>, tasks: usize) -> ConcurrencyReport {
    let t = unique_tenant("conc");
    let now = Timestamp(1_000_000);
    let limit = NanoUsd(tasks as u64 * 500 / 3);
    store.set_limit(&t, limit).await.expect("set_limit");
    let mut handles = Vec::with_capacity(tasks);
    for i in 0..tasks {
        let store = store.clone();
        let t = t.clone();
        handles.push(tokio::spawn(async move {
            let (min, extra, settle_ratio, release) = {
                let mut rng = rand::rng();
                (
                    rng.random_range(1..500u64),
                    rng.random_range(0..500u64),
                    rng.random_range(0..=100u64),
                    rng.random_bool(0.2),
                )
            };
            let r = match store.reserve(req(&t, min, min + extra, now)).await {
                Ok(r) => r,
                Err(Error::BudgetExhausted { .. }) => return (false, 0),
                Err(e) => panic!("reserve failed: {e}"),
            };
            assert!(r.amount >= NanoUsd(min) && r.amount <= NanoUsd(min + extra), "grant outside [min, max]");
            let b = store.balance(&t, now).await.expect("balance");
            assert!(b.spent.0 + b.reserved.0 <= b.limit.0, "spent + reserved exceeds the limit: {b:?}");
            tokio::task::yield_now().await;
            if release && i % 2 == 0 {
                store.release(&r, now).await.expect("release");
                (true, 0)
            } else {
                let actual = r.amount.0 * settle_ratio / 100;
                store.settle(&r, NanoUsd(actual), now).await.expect("settle");
                (true, actual)
            }
        }));
    }
    let mut report = ConcurrencyReport { granted: 0, refused: 0, settled_total: NanoUsd(0) };
    for h in handles {
        let (granted, actual) = h.await.expect("task panicked");
        if granted {
            report.granted += 1;
        } else {
            report.refused += 1;
        }
        report.settled_total += NanoUsd(actual);
    }
    let b = store.balance(&t, now).await.expect("balance");
    assert_eq!(b.reserved, NanoUsd(0), "every reservation was settled or released");
    assert_eq!(b.spent, report.settled_total, "settled total equals the sum of actual costs");
    assert!(b.spent <= limit, "overspent: {} > {}", b.spent, limit);
    assert!(report.refused > 0 && report.granted > 0, "the limit must bind for the test to mean anything: {report:?}");
    report
}
