//! [`MemoryAccessStore`]: tenants and keys in one process, for a single replica or for tests.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use chitty_core::access::{AccessSnapshot, AccessStore, KeyDigest, KeyRecord, TenantRecord, TenantUpdate, descendants};
use chitty_core::{Error, Result, Spend, SpendArchive, Timestamp};

/// Tenants and keys in memory. Lost when the process ends: use the PostgreSQL store to keep them.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// use chitty_core::access::{AccessStore, TenantRecord};
/// use chitty_providers::memory::MemoryAccessStore;
///
/// let store = MemoryAccessStore::new();
/// store.create_tenant(TenantRecord::new("acme")).await?;
/// assert!(store.create_tenant(TenantRecord::new("acme")).await.is_err(), "ids are unique");
/// # Ok::<(), chitty_core::Error>(()) }).unwrap();
/// ```
#[derive(Debug, Default)]
pub struct MemoryAccessStore {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    tenants: BTreeMap<String, TenantRecord>,
    keys: BTreeMap<String, KeyRecord>,
    digests: HashSet<KeyDigest>,
    /// Saved spend by tenant and period start.
    spend: BTreeMap<(String, Timestamp), Spend>,
}

impl MemoryAccessStore {
    /// An empty store.
    pub fn new() -> MemoryAccessStore {
        MemoryAccessStore::default()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Each method leaves the maps consistent before it can panic, so a poisoned lock's data is sound.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Keeps spend for a budget store in another process (Redis) that may lose its data; not across restarts.
#[async_trait]
impl SpendArchive for MemoryAccessStore {
    async fn save_spend(&self, tenant: &str, period: Timestamp, spend: &Spend) -> Result<()> {
        let mut state = self.state();
        let saved = state.spend.entry((tenant.to_owned(), period)).or_default();
        if spend.settled_total() >= saved.settled_total() {
            *saved = spend.without_reservations();
        }
        Ok(())
    }

    async fn load_spend(&self, tenant: &str, period: Timestamp) -> Result<Option<Spend>> {
        Ok(self.state().spend.get(&(tenant.to_owned(), period)).cloned())
    }
}

#[async_trait]
impl AccessStore for MemoryAccessStore {
    async fn create_tenant(&self, tenant: TenantRecord) -> Result<TenantRecord> {
        let mut state = self.state();
        if state.tenants.contains_key(&tenant.id) {
            return Err(Error::Conflict { what: "tenant", id: tenant.id });
        }
        state.tenants.insert(tenant.id.clone(), tenant.clone());
        Ok(tenant)
    }

    async fn update_tenant(&self, id: &str, update: &TenantUpdate) -> Result<TenantRecord> {
        let mut state = self.state();
        let tenant = state.tenants.get_mut(id).ok_or_else(|| Error::NotFound { what: "tenant", id: id.into() })?;
        *tenant = update.apply(tenant.clone());
        Ok(tenant.clone())
    }

    async fn tenant(&self, id: &str) -> Result<Option<TenantRecord>> {
        Ok(self.state().tenants.get(id).cloned())
    }

    async fn create_key(&self, key: KeyRecord) -> Result<KeyRecord> {
        let mut state = self.state();
        if !state.tenants.contains_key(&key.tenant) {
            return Err(Error::NotFound { what: "tenant", id: key.tenant });
        }
        if let Some(parent) = &key.parent {
            match state.keys.get(parent) {
                Some(p) if p.tenant == key.tenant && p.revoked_at.is_none() => {}
                _ => return Err(Error::NotFound { what: "key", id: parent.clone() }),
            }
        }
        if state.keys.contains_key(&key.id) || state.digests.contains(&key.digest) {
            return Err(Error::Conflict { what: "key", id: key.id });
        }
        state.digests.insert(key.digest);
        state.keys.insert(key.id.clone(), key.clone());
        Ok(key)
    }

    async fn key(&self, id: &str) -> Result<Option<KeyRecord>> {
        Ok(self.state().keys.get(id).cloned())
    }

    async fn revoke_key(&self, id: &str, now: Timestamp) -> Result<Vec<String>> {
        let mut state = self.state();
        if !state.keys.contains_key(id) {
            return Err(Error::NotFound { what: "key", id: id.into() });
        }
        let all: Vec<KeyRecord> = state.keys.values().cloned().collect();
        let mut revoked = Vec::new();
        for key_id in descendants(&all, id) {
            if let Some(k) = state.keys.get_mut(&key_id)
                && k.revoked_at.is_none()
            {
                k.revoked_at = Some(now);
                revoked.push(key_id);
            }
        }
        Ok(revoked)
    }

    async fn snapshot(&self) -> Result<AccessSnapshot> {
        let state = self.state();
        Ok(AccessSnapshot {
            tenants: state.tenants.values().cloned().collect(),
            keys: state.keys.values().cloned().collect(),
        })
    }
}
