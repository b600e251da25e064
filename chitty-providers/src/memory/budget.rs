//! An in-memory [`BudgetStore`]: one small lock per tenant, none global on the hot path.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};

use async_trait::async_trait;
use chitty_core::{Balance, BudgetStore, Error, NanoUsd, Reservation, ReserveRequest, Result, Settlement, Timestamp};

#[derive(Debug, Default)]
struct Ledger {
    limit: NanoUsd,
    spent: NanoUsd,
    reserved: NanoUsd,
    live: HashMap<u64, (NanoUsd, Timestamp)>,
    by_expiry: BTreeSet<(Timestamp, u64)>,
}

impl Ledger {
    fn reclaim_expired(&mut self, now: Timestamp) {
        while let Some(&(expires_at, id)) = self.by_expiry.first() {
            if expires_at > now {
                break;
            }
            self.by_expiry.pop_first();
            if let Some((amount, _)) = self.live.remove(&id) {
                self.reserved = self.reserved.saturating_sub(amount);
            }
        }
    }

    fn take(&mut self, id: u64) -> Option<NanoUsd> {
        let (amount, expires_at) = self.live.remove(&id)?;
        self.by_expiry.remove(&(expires_at, id));
        self.reserved = self.reserved.saturating_sub(amount);
        Some(amount)
    }

    fn balance(&self) -> Balance {
        Balance { limit: self.limit, spent: self.spent, reserved: self.reserved }
    }
}

/// An atomic in-memory budget ledger.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// use std::time::Duration;
/// use chitty_core::{BudgetStore, NanoUsd, ReserveRequest, Timestamp};
/// use chitty_providers::memory::MemoryBudgetStore;
///
/// let store = MemoryBudgetStore::new();
/// store.set_limit("acme", NanoUsd(1_000)).await?;
/// let now = Timestamp(0);
/// let r = store.reserve(ReserveRequest { tenant: "acme", min: NanoUsd(100), max: NanoUsd(5_000), lease: Duration::from_secs(60), now }).await?;
/// assert_eq!(r.amount, NanoUsd(1_000), "grants what remains, up to max");
/// store.settle(&r, NanoUsd(300), now).await?;
/// assert_eq!(store.balance("acme", now).await?.remaining(), NanoUsd(700));
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
    /// An empty store: every tenant has a limit of zero until one is set.
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
    async fn set_limit(&self, tenant: &str, limit: NanoUsd) -> Result<()> {
        lock(&self.ledger(tenant)).limit = limit;
        Ok(())
    }

    async fn reserve(&self, request: ReserveRequest<'_>) -> Result<Reservation> {
        let ledger = self.ledger(request.tenant);
        let mut l = lock(&ledger);
        l.reclaim_expired(request.now);
        let remaining = l.balance().remaining();
        if remaining < request.min || request.min > request.max {
            return Err(Error::BudgetExhausted { needed: request.min, remaining });
        }
        let amount = request.max.min(remaining);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let expires_at = request.now.plus(request.lease);
        l.live.insert(id, (amount, expires_at));
        l.by_expiry.insert((expires_at, id));
        l.reserved = l.reserved.saturating_add(amount);
        Ok(Reservation { id: format!("mem-{id}"), tenant: request.tenant.to_owned(), amount, expires_at })
    }

    async fn settle(&self, reservation: &Reservation, actual: NanoUsd, now: Timestamp) -> Result<Settlement> {
        let id = Self::parse_id(&reservation.id)?;
        let ledger = self.ledger(&reservation.tenant);
        let mut l = lock(&ledger);
        l.reclaim_expired(now);
        let amount = l.take(id).ok_or_else(|| Error::ReservationNotFound { id: reservation.id.clone() })?;
        let settlement = Settlement::capped(amount, actual);
        l.spent = l.spent.saturating_add(settlement.charged);
        Ok(settlement)
    }

    async fn release(&self, reservation: &Reservation, now: Timestamp) -> Result<()> {
        let id = Self::parse_id(&reservation.id)?;
        let ledger = self.ledger(&reservation.tenant);
        let mut l = lock(&ledger);
        l.reclaim_expired(now);
        l.take(id).map(|_| ()).ok_or_else(|| Error::ReservationNotFound { id: reservation.id.clone() })
    }

    async fn balance(&self, tenant: &str, now: Timestamp) -> Result<Balance> {
        let ledger = self.ledger(tenant);
        let mut l = lock(&ledger);
        l.reclaim_expired(now);
        Ok(l.balance())
    }
}
