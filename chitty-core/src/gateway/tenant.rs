//! Who is asking: an authenticated [`Caller`] (a [`Tenant`] and, for keys from an access store, the
//! [`ApiKey`] that narrows it) and the per-request [`RequestContext`].

use std::fmt;
use std::sync::Arc;

use crate::access::{BudgetPeriod, KeyRecord, TenantRecord, list_allows};
use crate::keys::{CacheDirective, CacheScope};
use crate::money::NanoUsd;
use crate::time::Timestamp;

/// An authenticated tenant.
pub struct Tenant {
    pub(super) record: TenantRecord,
}

impl fmt::Debug for Tenant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tenant")
            .field("id", &self.record.id)
            .field("budget", &self.record.budget)
            .finish_non_exhaustive()
    }
}

impl Tenant {
    pub(super) fn new(record: TenantRecord) -> Tenant {
        Tenant { record }
    }

    /// The tenant's identifier.
    pub fn id(&self) -> &str {
        &self.record.id
    }

    /// The record it was built from.
    pub fn record(&self) -> &TenantRecord {
        &self.record
    }

    /// Whether the tenant may use the public model `model`.
    pub fn may_use(&self, model: &str) -> bool {
        list_allows(self.record.models.as_deref(), model)
    }

    /// The tenant's spend limit per period, if budgets are enforced for it.
    pub fn budget(&self) -> Option<NanoUsd> {
        self.record.budget
    }

    /// When the tenant's budget starts again from zero.
    pub fn budget_period(&self) -> BudgetPeriod {
        self.record.budget_period
    }

    /// Where the tenant's cache entries live: its own scope, or its cache group's.
    pub(super) fn cache_scope(&self) -> CacheScope<'_> {
        match &self.record.cache_group {
            Some(g) => CacheScope::Shared(g),
            None => CacheScope::Tenant(&self.record.id),
        }
    }
}

/// A key from an access store, with the keys it was delegated from: each narrows the tenant further.
#[derive(Debug)]
pub struct ApiKey {
    /// The key itself, then its parent, up to the key minted for the tenant.
    pub(super) chain: Vec<KeyRecord>,
    /// The earliest expiry along the chain.
    pub(super) expires_at: Option<Timestamp>,
}

impl ApiKey {
    /// `chain[0]` is the key; the rest are its ancestors, nearest first. `chain` is never empty.
    pub(super) fn new(chain: Vec<KeyRecord>) -> ApiKey {
        let expires_at = chain.iter().filter_map(|k| k.expires_at).min();
        ApiKey { chain, expires_at }
    }

    /// The key's identifier (safe to log).
    pub fn id(&self) -> &str {
        // `new` is only called with the key first.
        self.chain.first().map_or("", |k| k.id.as_str())
    }

    /// The key and its ancestors, the key first.
    pub fn chain(&self) -> &[KeyRecord] {
        &self.chain
    }

    /// Whether the key and every ancestor allow `model`.
    pub fn may_use(&self, model: &str) -> bool {
        self.chain.iter().all(|k| list_allows(k.models.as_deref(), model))
    }

    /// Whether the key (and its ancestors) have expired at `now`.
    pub fn expired(&self, now: Timestamp) -> bool {
        self.expires_at.is_some_and(|e| now >= e)
    }
}

/// Who [`Gateway::authenticate`](super::Gateway::authenticate) found behind an API key.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The tenant that pays.
    pub tenant: Arc<Tenant>,
    /// The key, when it came from an access store (keys written into the configuration have none).
    pub key: Option<Arc<ApiKey>>,
}

/// Per-request inputs that do not come from the body.
#[derive(Debug, Clone)]
pub struct RequestContext {
    /// Who is asking.
    pub tenant: Arc<Tenant>,
    /// The key that narrows the tenant, if any.
    pub key: Option<Arc<ApiKey>>,
    /// Correlation identifier (echoed as `x-request-id`).
    pub request_id: String,
    /// The client's `Cache-Control` directive.
    pub cache: CacheDirective,
    /// The client's `x-chitty-quality` hint, which a router (`[[routers]]`) weighs.
    pub quality: Option<crate::router::QualityHint>,
}

impl RequestContext {
    /// A context for `caller`.
    pub fn new(caller: Caller, request_id: impl Into<String>, cache: CacheDirective) -> RequestContext {
        RequestContext { tenant: caller.tenant, key: caller.key, request_id: request_id.into(), cache, quality: None }
    }

    /// This context with the client's quality hint (the `x-chitty-quality` header).
    #[must_use]
    pub fn with_quality(mut self, quality: Option<crate::router::QualityHint>) -> RequestContext {
        self.quality = quality;
        self
    }

    /// Whether the tenant and the key both allow `model`.
    pub fn may_use(&self, model: &str) -> bool {
        self.tenant.may_use(model) && self.key.as_ref().is_none_or(|k| k.may_use(model))
    }

    /// The key's identifier, if the caller used a key from an access store.
    pub fn key_id(&self) -> Option<&str> {
        self.key.as_deref().map(ApiKey::id)
    }
}
