//! [`GatewayBuilder`]: the gateway from a validated [`GatewayConfig`], trait objects and an injected runtime.

use crate::balance::{BalancePolicy, Balancer, Deployment, OutstandingCounter};
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use super::config::{Defaults, GatewayConfig, ModelConfig, RouteConfig};
use super::directory::{Directory, config_snapshot};
use super::routing::{Model, Route, RouteHealth};
use super::smart::{RouterState, SemanticCache};
use super::{CircuitBreaker, Gateway, Inner};
use crate::access::{AccessStore, TenantUpdate};
use crate::budget::BudgetStore;
use crate::cache::Cache;
use crate::error::{Error, Result};
use crate::events::{DiscardSink, EventSink};
use crate::keys::CachePolicy;
use crate::provider::Provider;
use crate::ratelimit::{LocalRateLimiter, RateLimiter};
use crate::retry::RetryBudget;
use crate::time::{Clock, RandomSource, SeededRandom, Spawner, Timer};

/// Builds a [`Gateway`].
#[must_use]
pub struct GatewayBuilder {
    config: GatewayConfig,
    providers: HashMap<String, Arc<dyn Provider>>,
    cache: Option<Arc<dyn Cache>>,
    budgets: Option<Arc<dyn BudgetStore>>,
    events: Option<Arc<dyn EventSink>>,
    runtime: Option<Runtime>,
    random: Option<Arc<dyn RandomSource>>,
    access: Option<Arc<dyn AccessStore>>,
    limiter: Option<Arc<dyn RateLimiter>>,
}

/// The injected clock, timer and spawner.
type Runtime = (Arc<dyn Clock>, Arc<dyn Timer>, Arc<dyn Spawner>);

impl fmt::Debug for GatewayBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GatewayBuilder").field("providers", &self.providers.keys()).finish_non_exhaustive()
    }
}

fn config_error(reason: impl Into<String>) -> Error {
    Error::InvalidInput { what: "gateway configuration".into(), reason: reason.into() }
}

impl GatewayBuilder {
    pub(super) fn new(config: GatewayConfig) -> GatewayBuilder {
        GatewayBuilder {
            config,
            providers: HashMap::new(),
            cache: None,
            budgets: None,
            events: None,
            runtime: None,
            random: None,
            access: None,
            limiter: None,
        }
    }

    /// Registers a provider under its [`Provider::name`], which routes refer to.
    pub fn provider(mut self, provider: Arc<dyn Provider>) -> Self {
        self.providers.insert(provider.name().to_owned(), provider);
        self
    }

    /// The response cache (no caching without one).
    pub fn cache(mut self, cache: Arc<dyn Cache>) -> Self {
        self.cache = Some(cache);
        self
    }

    /// The budget store (required when any tenant has a budget).
    pub fn budgets(mut self, budgets: Arc<dyn BudgetStore>) -> Self {
        self.budgets = Some(budgets);
        self
    }

    /// The store tenants and keys come from at run time (see [`crate::access`]). The configuration's tenants
    /// and keys are written into it at build (the configuration wins for the tenants it names), and the
    /// gateway authenticates against a local copy that [`Gateway::reload_access`] refreshes. Without a store,
    /// the configuration's tenants are the only ones.
    pub fn access(mut self, store: Arc<dyn AccessStore>) -> Self {
        self.access = Some(store);
        self
    }

    /// The rate limiter that enforces tenants' and keys' requests and tokens per minute. Without one, a
    /// [`LocalRateLimiter`]: exact for one replica, but each replica admits the whole rate; give replicas a
    /// shared one (Redis) instead.
    pub fn rate_limiter(mut self, limiter: Arc<dyn RateLimiter>) -> Self {
        self.limiter = Some(limiter);
        self
    }

    /// Where request events go (discarded without one).
    pub fn events(mut self, events: Arc<dyn EventSink>) -> Self {
        self.events = Some(events);
        self
    }

    /// The clock, timer and spawner the gateway uses instead of touching the OS.
    pub fn runtime(mut self, clock: Arc<dyn Clock>, timer: Arc<dyn Timer>, spawner: Arc<dyn Spawner>) -> Self {
        self.runtime = Some((clock, timer, spawner));
        self
    }

    /// The random source that spreads retries (full-jitter backoff). Without one, a [`SeededRandom`] seeded
    /// from the clock's start time and this gateway's address, which differs between replicas.
    pub fn random(mut self, random: Arc<dyn RandomSource>) -> Self {
        self.random = Some(random);
        self
    }

    /// Validates the configuration ([`GatewayConfig::validate`]), seeds the access store with the
    /// configuration's tenants and keys, and builds the gateway.
    pub async fn build(self) -> Result<Gateway> {
        let (clock, timer, spawner) =
            self.runtime.ok_or_else(|| config_error("no runtime: call GatewayBuilder::runtime"))?;
        let names: Vec<&str> = self.providers.keys().map(String::as_str).collect();
        self.config.validate(&names).map_err(|issue| config_error(issue.to_string()))?;
        let provider = |name: &str| {
            self.providers.get(name).cloned().ok_or_else(|| config_error(format!("unknown provider `{name}`")))
        };
        let defaults = self.config.defaults;
        let mut models = HashMap::new();
        let mut model_order = Vec::new();
        for config in self.config.models {
            let routes = config
                .routes
                .iter()
                .map(|r| Ok(Route::new(provider(&r.provider)?, r.model.clone(), &defaults)))
                .collect::<Result<Vec<_>>>()?;
            model_order.push(config.name.clone());
            let balancer = Balancer::new(
                config.balance,
                config.routes.iter().map(|r| Deployment::new(r.group, r.weight)).collect(),
            );
            models
                .insert(config.name.clone(), Model { config: Arc::new(config), routes, balancer, strip_prefix: None });
        }
        let mut prefixes = Vec::new();
        for p in self.config.prefixes {
            let route = Route::new(provider(&p.provider)?, String::new(), &defaults);
            let config = ModelConfig {
                routes: vec![RouteConfig::new(p.provider.clone(), String::new())],
                price: p.price,
                cache: p.cache,
                max_output_tokens: p.max_output_tokens,
                output_cap_field: p.output_cap_field,
                limits: p.limits,
                ..ModelConfig::new(format!("{}*", p.prefix))
            };
            let strip_prefix = Some(p.prefix.len());
            let balancer = Balancer::new(BalancePolicy::Ordered, vec![Deployment::new(0, 1)]);
            prefixes.push((p.prefix, Model { config: Arc::new(config), routes: vec![route], balancer, strip_prefix }));
        }
        let is_model = |name: &str| models.contains_key(name);
        let routers = self
            .config
            .routers
            .iter()
            .map(|r| Ok((r.name.clone(), RouterState::new(r, is_model)?)))
            .collect::<Result<HashMap<_, _>>>()?;
        let router_order = self.config.routers.iter().map(|r| r.name.clone()).collect();
        let semantic = models
            .values()
            .filter(|m| m.config.cache == CachePolicy::Semantic)
            .map(|m| (m.config.name.clone(), SemanticCache::new(m.config.semantic_max_entries)))
            .collect();
        let configured = config_snapshot(&self.config.tenants)?;
        let snapshot = match &self.access {
            Some(store) => {
                seed(store.as_ref(), configured).await?;
                store.snapshot().await?
            }
            None => configured,
        };
        let directory = Directory::build(snapshot, None);
        if self.budgets.is_none()
            && let Some(t) = directory.tenants.values().find(|t| t.budget().is_some())
        {
            return Err(config_error(format!("tenant `{}` has a budget but no budget store is configured", t.id())));
        }
        let random = self.random.unwrap_or_else(|| {
            // Replicas start at different instants and addresses; tests inject a SeededRandom instead.
            let address = Arc::as_ptr(&clock).cast::<()>() as usize as u64;
            Arc::new(SeededRandom::new(clock.now().0 ^ address.rotate_left(32)))
        });
        Ok(Gateway {
            inner: Arc::new(Inner {
                models,
                prefixes,
                model_order,
                directory: RwLock::new(Arc::new(directory)),
                access: self.access,
                reload: futures::lock::Mutex::new(()),
                cache: self.cache,
                budgets: self.budgets,
                limiter: self.limiter.unwrap_or_else(|| Arc::new(LocalRateLimiter::new())),
                events: self.events.unwrap_or_else(|| Arc::new(DiscardSink)),
                clock,
                timer,
                spawner,
                random,
                defaults,
                routers,
                router_order,
                semantic,
            }),
        })
    }
}

/// Writes the configuration's tenants and keys into `store`: a tenant the store has is updated to the
/// configuration's fields; a key it has is left as it is (it may have been revoked through the API).
async fn seed(store: &dyn AccessStore, configured: crate::access::AccessSnapshot) -> Result<()> {
    for tenant in configured.tenants {
        let id = tenant.id.clone();
        let update = TenantUpdate {
            budget: Some(tenant.budget),
            budget_period: Some(tenant.budget_period),
            rpm: Some(tenant.rpm),
            tpm: Some(tenant.tpm),
            models: Some(tenant.models.clone()),
        };
        match store.create_tenant(tenant).await {
            Err(Error::Conflict { .. }) => {
                store.update_tenant(&id, &update).await?;
            }
            other => {
                other?;
            }
        }
    }
    for key in configured.keys {
        match store.create_key(key).await {
            Err(Error::Conflict { .. }) | Ok(_) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

impl Route {
    fn new(provider: Arc<dyn Provider>, upstream_model: String, defaults: &Defaults) -> Route {
        let breaker = CircuitBreaker::new(defaults.breaker_failures, Duration::from_millis(defaults.breaker_open_ms));
        let health = RouteHealth { breaker, retries: RetryBudget::new(defaults.retry_budget) };
        Route { provider, upstream_model, health: Mutex::new(health), outstanding: OutstandingCounter::default() }
    }
}
