//! The gateway's local copy of the access store: tenants and live keys by digest, so that authentication
//! costs a hash and a map lookup, never a store round trip.

use std::collections::HashMap;
use std::sync::Arc;

use super::config::TenantConfig;
use super::tenant::{ApiKey, Caller, Tenant};
use crate::access::{AccessSnapshot, KeyDigest, KeyRecord, TenantRecord};
use crate::error::{Error, Result};
use crate::time::Timestamp;

/// Prefix of the ids given to keys written into the configuration when they are seeded into a store.
pub(super) const CONFIG_KEY_PREFIX: &str = "cfg-";

/// Tenants and live keys at one instant.
#[derive(Debug, Default)]
pub(super) struct Directory {
    pub(super) by_digest: HashMap<KeyDigest, Caller>,
    pub(super) tenants: HashMap<String, Arc<Tenant>>,
}

impl Directory {
    /// Builds a directory from `snapshot`, keeping `previous`'s [`Tenant`] where its record is unchanged (no
    /// allocation for tenants a reload did not touch). Keys written into the configuration
    /// authenticate as the bare tenant; keys the store minted carry their [`ApiKey`] chain.
    pub(super) fn build(snapshot: AccessSnapshot, previous: Option<&Directory>) -> Directory {
        let tenants: HashMap<String, Arc<Tenant>> = snapshot
            .tenants
            .into_iter()
            .map(|record| {
                let kept =
                    previous.and_then(|p| p.tenants.get(&record.id)).filter(|t| t.record == record).map(Arc::clone);
                (record.id.clone(), kept.unwrap_or_else(|| Arc::new(Tenant::new(record))))
            })
            .collect();
        let keys: HashMap<&str, &KeyRecord> = snapshot.keys.iter().map(|k| (k.id.as_str(), k)).collect();
        let mut by_digest = HashMap::new();
        for key in snapshot.keys.iter().filter(|k| k.revoked_at.is_none()) {
            let Some(tenant) = tenants.get(&key.tenant) else { continue };
            let Some(chain) = chain(key, &keys) else { continue };
            // Expired keys stay in: expiry is checked per request against the clock, so it needs no reload.
            let api_key = (!key.id.starts_with(CONFIG_KEY_PREFIX)).then(|| Arc::new(ApiKey::new(chain)));
            by_digest.insert(key.digest, Caller { tenant: Arc::clone(tenant), key: api_key });
        }
        Directory { by_digest, tenants }
    }
}

/// The key and its ancestors, nearest first; `None` when an ancestor is missing, revoked, of another tenant,
/// or the parents form a cycle.
fn chain(key: &KeyRecord, keys: &HashMap<&str, &KeyRecord>) -> Option<Vec<KeyRecord>> {
    let mut chain = vec![key.clone()];
    let mut current = key;
    while let Some(parent_id) = &current.parent {
        let parent = keys.get(parent_id.as_str())?;
        if parent.revoked_at.is_some() || parent.tenant != key.tenant || chain.len() > keys.len() {
            return None;
        }
        chain.push((*parent).clone());
        current = parent;
    }
    Some(chain)
}

/// The tenants and keys a configuration names, as store records: what a store is seeded with, and the whole
/// directory of a gateway without a store. Each key gets the id `cfg-` and the first 16 hex characters of its
/// digest.
pub(super) fn config_snapshot(tenants: &[TenantConfig]) -> Result<AccessSnapshot> {
    let mut snapshot = AccessSnapshot::default();
    for t in tenants {
        snapshot.tenants.push(TenantRecord {
            rpm: t.requests_per_minute,
            tpm: t.tokens_per_minute,
            budget: t.budget_nano_usd,
            models: t.allowed_models.clone(),
            burst: t.burst,
            cache_group: t.cache_group.clone(),
            ..TenantRecord::new(t.id.clone())
        });
        for hex_digest in &t.key_sha256 {
            let digest = KeyDigest::from_hex(hex_digest).ok_or_else(|| Error::InvalidInput {
                what: "gateway configuration".into(),
                reason: format!("tenant `{}`: key_sha256 must be 64 hex characters", t.id),
            })?;
            snapshot.keys.push(KeyRecord {
                id: format!("{CONFIG_KEY_PREFIX}{}", &digest.to_hex()[..16]),
                tenant: t.id.clone(),
                parent: None,
                name: "configuration".into(),
                digest,
                budget: None,
                models: None,
                expires_at: None,
                rpm: None,
                tpm: None,
                created_at: Timestamp(0),
                revoked_at: None,
            });
        }
    }
    Ok(snapshot)
}
