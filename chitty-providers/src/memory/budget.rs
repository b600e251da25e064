//! An in-memory [`BudgetStore`]: one small lock per tenant, none global on the hot path.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};

use async_trait::async_trait;
use chitty_core::budget::{AccountSpend, Spend};
use chitty_core::{BudgetStore, Error, NanoUsd, Reservation, ReserveRequest, Result, Settlement, Timestamp};

/// A live reservation: what it holds, where, and what its charge counts towards.
#[derive(Debug)]
struct Live {
    amount: NanoUsd,
    expires_at: Timestamp,
    period: u64,
    accounts: Vec<String>,
    model: String,
    key: Option<String>,
}

/// One tenant's spend: per period, per account, plus the tallies by model and key.
#[derive(Debug, Default)]
struct Ledger {
    periods: HashMap<u64, Spend>,
    live: HashMap<u64, Live>,
    by_expiry: BTreeSet<(Timestamp, u64)>,
}

impl Ledger {
    fn reclaim_expired(&mut self, now: Timestamp) {
        while let Some(&(expires_at, id)) = self.by_expiry.first() {
            if expires_at > now {
                break;
            }
            self.by_expiry.pop_first();
            if let Some(live) = self.live.remove(&id) {
                self.unreserve(&live);
            }
        }
    }

    fn unreserve(&mut self, live: &Live) {
        let Some(period) = self.periods.get_mut(&live.period) else { return };
        for name in &live.accounts {
            if let Some(account) = period.accounts.get_mut(name) {
                account.reserved = account.reserved.saturating_sub(live.amount);
            }
        }
    }

    fn take(&mut self, id: u64) -> Option<Live> {
        let live = self.live.remove(&id)?;
        self.by_expiry.remove(&(live.expires_at, id));
        self.unreserve(&live);
        Some(live)
    }
}

/// Applies `change` to the account `name` of `period` (created at zero); looked up by `&str`, so only a new
/// account allocates its name.
fn update_account(period: &mut Spend, name: &str, change: impl FnOnce(&mut AccountSpend)) {
    match period.accounts.get_mut(name) {
        Some(account) => change(account),
        None => {
            let mut account = AccountSpend::default();
            change(&mut account);
            period.accounts.insert(name.to_owned(), account);
        }
    }
}

/// Adds `amount` to `name`'s tally, moving the name in only when it is new.
fn add_to(tallies: &mut std::collections::BTreeMap<String, NanoUsd>, name: String, amount: NanoUsd) {
    match tallies.get_mut(&name) {
        Some(total) => *total += amount,
        None => {
            tallies.insert(name, amount);
        }
    }
}

/// An atomic in-memory budget ledger.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// use std::time::Duration;
/// use chitty_core::budget::{BudgetAccount, TENANT_ACCOUNT};
/// use chitty_core::{BudgetStore, NanoUsd, ReserveRequest, Timestamp};
/// use chitty_providers::memory::MemoryBudgetStore;
///
/// let store = MemoryBudgetStore::new();
/// let now = Timestamp(0);
/// // The tenant may spend $1 000 nano-USD; its key `k1` 600 of them.
/// let accounts = [BudgetAccount { name: TENANT_ACCOUNT, limit: NanoUsd(1_000) }, BudgetAccount { name: "k1", limit: NanoUsd(600) }];
/// let request = ReserveRequest {
///     tenant: "acme", accounts: &accounts, period: Timestamp(0), model: "gpt-4o", key: Some("k1"),
///     min: NanoUsd(100), max: NanoUsd(5_000), lease: Duration::from_secs(60), now,
/// };
/// let r = store.reserve(request).await?;
/// assert_eq!(r.amount, NanoUsd(600), "grants what the tightest budget has left, up to max");
/// store.settle(&r, NanoUsd(300), now).await?;
/// let spend = store.spend("acme", Timestamp(0), now).await?;
/// assert_eq!((spend.tenant().spent, spend.by_model["gpt-4o"], spend.by_key["k1"]), (NanoUsd(300), NanoUsd(300), NanoUsd(300)));
/// # Ok::<(), chitty_core::Error>(())
/// # }).unwrap();
/// ```
#[derive(Debug, Default)]
pub struct MemoryBudgetStore {
    tenants: RwLock<HashMap<String, Arc<Mutex<Ledger>>>>,
    next_id: AtomicU64,
}

fn lock(ledger: &Mutex<Ledger>) -> MutexGuard<'_, Ledger> {
    // Every ledger update completes before anything can panic, so a poisoned ledger is still consistent.
    ledger.lock().unwrap_or_else(PoisonError::into_inner)
}

impl MemoryBudgetStore {
    /// An empty store.
    pub fn new() -> MemoryBudgetStore {
        MemoryBudgetStore::default()
    }

    fn ledger(&self, tenant: &str) -> Arc<Mutex<Ledger>> {
        if let Some(l) = self.tenants.read().unwrap_or_else(PoisonError::into_inner).get(tenant) {
            return l.clone();
        }
        self.tenants.write().unwrap_or_else(PoisonError::into_inner).entry(tenant.to_owned()).or_default().clone()
    }

    fn parse_id(id: &str) -> Result<u64> {
        id.strip_prefix("mem-")
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| Error::ReservationNotFound { id: id.to_owned() })
    }
}

#[async_trait]
impl BudgetStore for MemoryBudgetStore {
    async fn reserve(&self, request: ReserveRequest<'_>) -> Result<Reservation> {
        let ledger = self.ledger(request.tenant);
        let mut l = lock(&ledger);
        l.reclaim_expired(request.now);
        let period = l.periods.entry(request.period.0).or_default();
        let remaining = request
            .accounts
            .iter()
            .map(|a| {
                let spend = period.account(a.name);
                a.limit.saturating_sub(spend.spent).saturating_sub(spend.reserved)
            })
            .min()
            .unwrap_or(NanoUsd(u64::MAX));
        if remaining < request.min || request.min > request.max {
            return Err(Error::BudgetExhausted { needed: request.min, remaining });
        }
        let amount = request.max.min(remaining);
        for a in request.accounts {
            update_account(period, a.name, |account| account.reserved += amount);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let expires_at = request.now.plus(request.lease);
        l.live.insert(
            id,
            Live {
                amount,
                expires_at,
                period: request.period.0,
                accounts: request.accounts.iter().map(|a| a.name.to_owned()).collect(),
                model: request.model.to_owned(),
                key: request.key.map(str::to_owned),
            },
        );
        l.by_expiry.insert((expires_at, id));
        Ok(Reservation { id: format!("mem-{id}"), tenant: request.tenant.to_owned(), amount, expires_at })
    }

    async fn settle(&self, reservation: &Reservation, actual: NanoUsd, now: Timestamp) -> Result<Settlement> {
        let id = Self::parse_id(&reservation.id)?;
        let ledger = self.ledger(&reservation.tenant);
        let mut l = lock(&ledger);
        l.reclaim_expired(now);
        let live = l.take(id).ok_or_else(|| Error::ReservationNotFound { id: reservation.id.clone() })?;
        let settlement = Settlement::capped(live.amount, actual);
        let period = l.periods.entry(live.period).or_default();
        for name in &live.accounts {
            update_account(period, name, |account| account.spent += settlement.charged);
        }
        add_to(&mut period.by_model, live.model, settlement.charged);
        if let Some(key) = live.key {
            add_to(&mut period.by_key, key, settlement.charged);
        }
        Ok(settlement)
    }

    async fn release(&self, reservation: &Reservation, now: Timestamp) -> Result<()> {
        let id = Self::parse_id(&reservation.id)?;
        let ledger = self.ledger(&reservation.tenant);
        let mut l = lock(&ledger);
        l.reclaim_expired(now);
        l.take(id).map(|_| ()).ok_or_else(|| Error::ReservationNotFound { id: reservation.id.clone() })
    }

    async fn spend(&self, tenant: &str, period: Timestamp, now: Timestamp) -> Result<Spend> {
        let ledger = self.ledger(tenant);
        let mut l = lock(&ledger);
        l.reclaim_expired(now);
        Ok(l.periods.get(&period.0).cloned().unwrap_or_default())
    }
}
