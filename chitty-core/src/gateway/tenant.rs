//! Who is asking: an authenticated [`Tenant`] and the per-request [`RequestContext`].

use std::collections::HashSet;
use std::fmt;
use std::sync::{Arc, Mutex};

use super::ratelimit::TokenBucket;
use crate::keys::{CacheDirective, CacheScope};
use crate::money::NanoUsd;

/// An authenticated tenant.
pub struct Tenant {
    pub(super) id: String,
    pub(super) budget: Option<NanoUsd>,
    pub(super) allowed: Option<HashSet<String>>,
    pub(super) limiter: Option<Mutex<TokenBucket>>,
    pub(super) cache_group: Option<String>,
}

impl fmt::Debug for Tenant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tenant").field("id", &self.id).field("budget", &self.budget).finish_non_exhaustive()
    }
}

impl Tenant {
    /// The tenant's identifier.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Whether the tenant may use the public model `model`.
    pub fn may_use(&self, model: &str) -> bool {
        self.allowed.as_ref().is_none_or(|allowed| {
            allowed.contains(model)
                || allowed.iter().any(|a| a.strip_suffix('*').is_some_and(|prefix| model.starts_with(prefix)))
        })
    }

    /// The tenant's spend limit, if budgets are enforced for it.
    pub fn budget(&self) -> Option<NanoUsd> {
        self.budget
    }

    /// Where the tenant's cache entries live: its own scope, or its cache group's.
    pub(super) fn cache_scope(&self) -> CacheScope<'_> {
        match &self.cache_group {
            Some(g) => CacheScope::Shared(g),
            None => CacheScope::Tenant(&self.id),
        }
    }
}

/// Per-request inputs that do not come from the body.
#[derive(Debug, Clone)]
pub struct RequestContext {
    /// Who is asking.
    pub tenant: Arc<Tenant>,
    /// Correlation identifier (echoed as `x-request-id`).
    pub request_id: String,
    /// The client's `Cache-Control` directive.
    pub cache: CacheDirective,
}

impl RequestContext {
    /// A context for `tenant`.
    pub fn new(tenant: Arc<Tenant>, request_id: impl Into<String>, cache: CacheDirective) -> RequestContext {
        RequestContext { tenant, request_id: request_id.into(), cache }
    }
}
