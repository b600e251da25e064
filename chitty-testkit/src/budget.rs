//! The [`BudgetStore`] conformance suite: every implementation runs these functions.
//!
//! Tenants get random names, so the suite can run against a shared Redis without cleaning up.

use std::sync::Arc;
use std::time::Duration;

use chitty_core::budget::{AccountSpend, BudgetAccount, Spend, TENANT_ACCOUNT};
use chitty_core::{Balance, BudgetStore, Error, NanoUsd, Reservation, ReserveRequest, SpendArchive, Timestamp};
use rand::Rng;

/// A tenant name no other run uses.
pub fn unique_tenant(prefix: &str) -> String {
    format!("{prefix}-{:016x}", rand::random::<u64>())
}

/// The tenant's own account with `limit`.
pub fn tenant_account(limit: u64) -> [BudgetAccount<'static>; 1] {
    [BudgetAccount { name: TENANT_ACCOUNT, limit: NanoUsd(limit) }]
}

/// A reservation of `min..=max` on `accounts` in the lifetime period, for model `m` and no key.
pub fn request<'a>(
    tenant: &'a str,
    accounts: &'a [BudgetAccount<'a>],
    min: u64,
    max: u64,
    now: Timestamp,
) -> ReserveRequest<'a> {
    ReserveRequest {
        tenant,
        accounts,
        period: Timestamp(0),
        model: "m",
        key: None,
        min: NanoUsd(min),
        max: NanoUsd(max),
        lease: Duration::from_secs(60),
        now,
    }
}

/// The tenant's own account in the lifetime period, as a balance against `limit`.
pub async fn balance(store: &dyn BudgetStore, tenant: &str, limit: u64, now: Timestamp) -> Balance {
    let spend = store.spend(tenant, Timestamp(0), now).await.expect("spend");
    Balance::new(NanoUsd(limit), spend.tenant())
}

/// Runs every single-task check.
pub async fn run_all(store: &dyn BudgetStore) {
    reserve_settle_release(store).await;
    exhaustion_and_partial_grants(store).await;
    lease_expiry(store).await;
    no_double_charge(store).await;
    settle_is_capped_at_the_reservation(store).await;
    nested_accounts_bind_together(store).await;
    periods_start_at_zero_and_reservations_settle_where_they_were_made(store).await;
    spend_is_reported_by_model_and_key(store).await;
}

/// Reserve holds money, settle charges the actual cost and refunds the rest, release frees without charging.
pub async fn reserve_settle_release(store: &dyn BudgetStore) {
    let t = unique_tenant("rsr");
    let now = Timestamp(1_000_000);
    let accounts = tenant_account(10_000);
    let r = store.reserve(request(&t, &accounts, 1_000, 1_000, now)).await.expect("reserve");
    assert_eq!(r.amount, NanoUsd(1_000));
    assert_eq!(r.tenant, t);
    let b = balance(store, &t, 10_000, now).await;
    assert_eq!((b.spent, b.reserved), (NanoUsd(0), NanoUsd(1_000)));
    let s = store.settle(&r, NanoUsd(400), now).await.expect("settle");
    assert_eq!((s.charged, s.refunded), (NanoUsd(400), NanoUsd(600)));
    let b = balance(store, &t, 10_000, now).await;
    assert_eq!((b.spent, b.reserved, b.remaining()), (NanoUsd(400), NanoUsd(0), NanoUsd(9_600)));
    let r2 = store.reserve(request(&t, &accounts, 2_000, 2_000, now)).await.expect("reserve");
    store.release(&r2, now).await.expect("release");
    let b = balance(store, &t, 10_000, now).await;
    assert_eq!((b.spent, b.reserved), (NanoUsd(400), NanoUsd(0)), "release charges nothing");
    // Limits travel with each request: a lower one applies at once and keeps the spend.
    let lower = tenant_account(500);
    match store.reserve(request(&t, &lower, 101, 101, now)).await {
        Err(Error::BudgetExhausted { needed, remaining }) => {
            assert_eq!((needed, remaining), (NanoUsd(101), NanoUsd(100)))
        }
        other => panic!("expected BudgetExhausted, got {other:?}"),
    }
}

/// A reservation above what remains fails with `BudgetExhausted`; a range is granted as far as it fits.
pub async fn exhaustion_and_partial_grants(store: &dyn BudgetStore) {
    let t = unique_tenant("exh");
    let now = Timestamp(1_000_000);
    let zero = tenant_account(0);
    let refused = store.reserve(request(&t, &zero, 1, 1, now)).await;
    assert!(matches!(refused, Err(Error::BudgetExhausted { .. })), "a zero limit: {refused:?}");
    let accounts = tenant_account(1_000);
    let r = store.reserve(request(&t, &accounts, 100, 700, now)).await.expect("reserve");
    assert_eq!(r.amount, NanoUsd(700), "the whole max when it fits");
    let r2 = store.reserve(request(&t, &accounts, 100, 700, now)).await.expect("reserve");
    assert_eq!(r2.amount, NanoUsd(300), "what remains when max does not fit");
    match store.reserve(request(&t, &accounts, 1, 10, now)).await {
        Err(Error::BudgetExhausted { needed, remaining }) => {
            assert_eq!((needed, remaining), (NanoUsd(1), NanoUsd(0)));
        }
        other => panic!("expected BudgetExhausted, got {other:?}"),
    }
    store.release(&r2, now).await.expect("release");
    assert!(store.reserve(request(&t, &accounts, 301, 400, now)).await.is_err(), "min above remaining fails");
    assert_eq!(store.reserve(request(&t, &accounts, 300, 400, now)).await.expect("reserve").amount, NanoUsd(300));
    let unlimited = tenant_account(u64::MAX);
    let big = store.reserve(request(&t, &unlimited, 1, u64::MAX - 1, now)).await.expect("unlimited");
    assert_eq!(big.amount, NanoUsd(u64::MAX - 1_000), "an unlimited account still counts what it holds");
}

/// A reservation whose lease expired is reclaimed; settling it afterwards fails and charges nothing.
pub async fn lease_expiry(store: &dyn BudgetStore) {
    let t = unique_tenant("lease");
    let t0 = Timestamp(5_000_000);
    let accounts = tenant_account(1_000);
    let r = store.reserve(request(&t, &accounts, 1_000, 1_000, t0)).await.expect("reserve");
    let during = t0.plus(Duration::from_secs(59));
    assert!(store.reserve(request(&t, &accounts, 1, 1, during)).await.is_err(), "held during the lease");
    let later = t0.plus(Duration::from_secs(61));
    let b = balance(store, &t, 1_000, later).await;
    assert_eq!((b.reserved, b.remaining()), (NanoUsd(0), NanoUsd(1_000)), "reclaimed after the lease");
    let settled = store.settle(&r, NanoUsd(10), later).await;
    assert!(matches!(settled, Err(Error::ReservationNotFound { .. })), "{settled:?}");
    assert_eq!(balance(store, &t, 1_000, later).await.spent, NanoUsd(0));
}

/// Settling or releasing twice fails the second time and never charges twice.
pub async fn no_double_charge(store: &dyn BudgetStore) {
    let t = unique_tenant("dbl");
    let now = Timestamp(1_000_000);
    let accounts = tenant_account(1_000);
    let r = store.reserve(request(&t, &accounts, 500, 500, now)).await.expect("reserve");
    store.settle(&r, NanoUsd(200), now).await.expect("settle");
    assert!(matches!(store.settle(&r, NanoUsd(200), now).await, Err(Error::ReservationNotFound { .. })));
    assert!(matches!(store.release(&r, now).await, Err(Error::ReservationNotFound { .. })));
    assert_eq!(balance(store, &t, 1_000, now).await.spent, NanoUsd(200));
    let forged = Reservation { id: "not-an-id".into(), ..r };
    assert!(matches!(store.settle(&forged, NanoUsd(1), now).await, Err(Error::ReservationNotFound { .. })));
}

/// An actual cost above the reservation charges the reservation and reports the rest as excess: spend never
/// passes the limit, whatever an upstream reports.
pub async fn settle_is_capped_at_the_reservation(store: &dyn BudgetStore) {
    let t = unique_tenant("cap");
    let now = Timestamp(1_000_000);
    let accounts = tenant_account(1_000);
    let r = store.reserve(request(&t, &accounts, 600, 600, now)).await.expect("reserve");
    let other = store.reserve(request(&t, &accounts, 400, 400, now)).await.expect("reserve");
    let s = store.settle(&r, NanoUsd(16_000), now).await.expect("settle");
    assert_eq!((s.charged, s.refunded, s.excess), (NanoUsd(600), NanoUsd(0), NanoUsd(15_400)));
    let s = store.settle(&other, NanoUsd(u64::MAX), now).await.expect("settle");
    assert_eq!((s.charged, s.excess), (NanoUsd(400), NanoUsd(u64::MAX - 400)));
    let b = balance(store, &t, 1_000, now).await;
    assert_eq!(
        (b.spent, b.reserved, b.remaining()),
        (NanoUsd(1_000), NanoUsd(0), NanoUsd(0)),
        "spend stops at the limit"
    );
    let r = store.reserve(request(&t, &accounts, 0, 0, now)).await.expect("a zero reservation fits");
    let s = store.settle(&r, NanoUsd(5), now).await.expect("settle");
    assert_eq!((s.charged, s.excess), (NanoUsd(0), NanoUsd(5)));
    assert_eq!(balance(store, &t, 1_000, now).await.spent, NanoUsd(1_000));
}

/// A reservation must fit every account it names: a key's own budget binds it inside the tenant's, and two
/// keys cannot together take the tenant past its limit. Settling charges every account.
pub async fn nested_accounts_bind_together(store: &dyn BudgetStore) {
    let t = unique_tenant("nest");
    let now = Timestamp(1_000_000);
    let key_a = [
        BudgetAccount { name: TENANT_ACCOUNT, limit: NanoUsd(1_000) },
        BudgetAccount { name: "ka", limit: NanoUsd(400) },
    ];
    // `kb` delegated from `ka`: its own 300 inside ka's 400 inside the tenant's 1 000.
    let key_b = [
        BudgetAccount { name: TENANT_ACCOUNT, limit: NanoUsd(1_000) },
        BudgetAccount { name: "kb", limit: NanoUsd(300) },
        BudgetAccount { name: "ka", limit: NanoUsd(400) },
    ];
    let a = store.reserve(request(&t, &key_a, 1, 350, now)).await.expect("ka");
    assert_eq!(a.amount, NanoUsd(350));
    let b = store.reserve(request(&t, &key_b, 1, 300, now)).await.expect("kb");
    assert_eq!(b.amount, NanoUsd(50), "kb's parent ka had 50 left");
    assert!(store.reserve(request(&t, &key_b, 1, 1, now)).await.is_err(), "ka is full, so kb is too");
    let tenant_only = tenant_account(1_000);
    let c = store.reserve(request(&t, &tenant_only, 1, 10_000, now)).await.expect("tenant");
    assert_eq!(c.amount, NanoUsd(600), "the tenant's own remainder");
    store.settle(&a, NanoUsd(100), now).await.expect("settle a");
    store.settle(&b, NanoUsd(50), now).await.expect("settle b");
    store.release(&c, now).await.expect("release c");
    let spend = store.spend(&t, Timestamp(0), now).await.expect("spend");
    assert_eq!(spend.tenant().spent, NanoUsd(150));
    assert_eq!(spend.account("ka").spent, NanoUsd(150), "ka pays for itself and for kb");
    assert_eq!(spend.account("kb").spent, NanoUsd(50));
    assert_eq!(spend.tenant().reserved, NanoUsd(0));
    let refused = store.reserve(request(&t, &key_b, 251, 251, now)).await;
    assert!(matches!(refused, Err(Error::BudgetExhausted { remaining: NanoUsd(250), .. })), "{refused:?}");
    assert_eq!(store.spend(&t, Timestamp(0), now).await.expect("spend"), spend, "a refusal changes nothing");
}

/// Each period's spend starts at zero; a reservation made in one period settles into it, even after the next
/// has begun.
pub async fn periods_start_at_zero_and_reservations_settle_where_they_were_made(store: &dyn BudgetStore) {
    let t = unique_tenant("period");
    let (day1, day2) = (Timestamp(86_400_000), Timestamp(2 * 86_400_000));
    // Ten seconds before midnight, then ten after: well inside the 60 s lease.
    let (before, after) = (Timestamp(day2.0 - 10_000), Timestamp(day2.0 + 10_000));
    let accounts = tenant_account(1_000);
    let r = store.reserve(ReserveRequest { period: day1, ..request(&t, &accounts, 1_000, 1_000, before) }).await;
    let r = r.expect("reserve in day 1");
    let next_day = ReserveRequest { period: day2, ..request(&t, &accounts, 1_000, 1_000, after) };
    let r2 = store.reserve(next_day).await.expect("day 2 starts at zero");
    store.settle(&r, NanoUsd(700), after).await.expect("settle the day-1 reservation on day 2");
    let first = store.spend(&t, day1, after).await.expect("spend");
    let second = store.spend(&t, day2, after).await.expect("spend");
    assert_eq!((first.tenant().spent, first.tenant().reserved), (NanoUsd(700), NanoUsd(0)));
    assert_eq!((second.tenant().spent, second.tenant().reserved), (NanoUsd(0), NanoUsd(1_000)));
    store.release(&r2, after).await.expect("release");
    assert_eq!(store.spend(&t, Timestamp(3 * 86_400_000), after).await.expect("spend"), Spend::default());
}

/// Settled spend is reported by model and by key (with or without a budget of its own).
pub async fn spend_is_reported_by_model_and_key(store: &dyn BudgetStore) {
    let t = unique_tenant("report");
    let now = Timestamp(1_000_000);
    let accounts = tenant_account(u64::MAX);
    for (model, key, cost) in
        [("gpt", Some("k1"), 10), ("gpt", Some("k2"), 20), ("claude", Some("k1"), 40), ("claude", None, 80)]
    {
        let r = store
            .reserve(ReserveRequest { model, key, ..request(&t, &accounts, 100, 100, now) })
            .await
            .expect("reserve");
        store.settle(&r, NanoUsd(cost), now).await.expect("settle");
    }
    let spend = store.spend(&t, Timestamp(0), now).await.expect("spend");
    assert_eq!(spend.tenant().spent, NanoUsd(150));
    let by_model: Vec<(&str, u64)> = spend.by_model.iter().map(|(m, c)| (m.as_str(), c.0)).collect();
    assert_eq!(by_model, [("claude", 120), ("gpt", 30)]);
    let by_key: Vec<(&str, u64)> = spend.by_key.iter().map(|(k, c)| (k.as_str(), c.0)).collect();
    assert_eq!(by_key, [("k1", 50), ("k2", 20)]);
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
    let limit = tasks as u64 * 500 / 3;
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
            let accounts = tenant_account(limit);
            let r = match store.reserve(request(&t, &accounts, min, min + extra, now)).await {
                Ok(r) => r,
                Err(Error::BudgetExhausted { .. }) => return (false, 0),
                Err(e) => panic!("reserve failed: {e}"),
            };
            assert!(r.amount >= NanoUsd(min) && r.amount <= NanoUsd(min + extra), "grant outside [min, max]");
            let b = balance(store.as_ref(), &t, limit, now).await;
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
    let b = balance(store.as_ref(), &t, limit, now).await;
    assert_eq!(b.reserved, NanoUsd(0), "every reservation was settled or released");
    assert_eq!(b.spent, report.settled_total, "settled total equals the sum of actual costs");
    assert!(b.spent <= NanoUsd(limit), "overspent: {} > {}", b.spent, limit);
    assert!(report.refused > 0 && report.granted > 0, "the limit must bind for the test to mean anything: {report:?}");
    report
}

/// The [`SpendArchive`] contract: settled spend round-trips without its reservations, per tenant and
/// period, and a smaller (older) snapshot never replaces a larger one.
pub async fn spend_archive_contract(archive: &dyn SpendArchive) {
    let tenant = unique_tenant("archive");
    let other = unique_tenant("archive-other");
    let period = Timestamp(1_764_547_200_000);
    assert_eq!(archive.load_spend(&tenant, period).await.unwrap(), None, "nothing saved yet");

    let mut spend = Spend::default();
    spend.accounts.insert(TENANT_ACCOUNT.into(), AccountSpend { spent: NanoUsd(900), reserved: NanoUsd(50) });
    spend.accounts.insert("key-1".into(), AccountSpend { spent: NanoUsd(400), reserved: NanoUsd(50) });
    spend.by_model.insert("m".into(), NanoUsd(900));
    spend.by_key.insert("key-1".into(), NanoUsd(400));
    // Past 2^53, where JSON numbers lose digits in most readers.
    spend.by_key.insert("big".into(), NanoUsd(u64::MAX - 7));
    archive.save_spend(&tenant, period, &spend).await.unwrap();
    let loaded = archive.load_spend(&tenant, period).await.unwrap().expect("saved spend loads");
    assert_eq!(loaded, spend.without_reservations(), "settled spend round-trips; reservations are not kept");
    assert_eq!(loaded.tenant().reserved, NanoUsd::ZERO);

    assert_eq!(archive.load_spend(&other, period).await.unwrap(), None, "tenants do not share spend");
    assert_eq!(archive.load_spend(&tenant, Timestamp(period.0 + 1)).await.unwrap(), None, "periods are apart");

    let mut older = spend.clone();
    older.by_model.insert("m".into(), NanoUsd(100));
    archive.save_spend(&tenant, period, &older).await.unwrap();
    let kept = archive.load_spend(&tenant, period).await.unwrap().unwrap();
    assert_eq!(kept.by_model["m"], NanoUsd(900), "a late, smaller snapshot does not replace a larger one");

    let mut newer = spend.clone();
    newer.by_model.insert("m".into(), NanoUsd(1_500));
    archive.save_spend(&tenant, period, &newer).await.unwrap();
    let kept = archive.load_spend(&tenant, period).await.unwrap().unwrap();
    assert_eq!(kept.by_model["m"], NanoUsd(1_500), "a larger snapshot replaces the saved one");
}
