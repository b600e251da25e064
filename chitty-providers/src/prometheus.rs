//! An [`EventSink`] that keeps Prometheus metrics (prometheus-client) in a registry the host owns.
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! use chitty_core::{Event, EventSink};
//! use chitty_providers::prometheus::{PrometheusSink, Registry, encode_text};
//!
//! let mut registry = Registry::default();
//! let sink = PrometheusSink::new(&mut registry, ["gpt-4o-mini"]).with_tenants(["acme"]).with_providers(["openai"]);
//! sink.record(Event::CircuitOpened { provider: "openai".into() }).await?;
//! let text = encode_text(&registry)?;
//! assert!(text.contains("chitty_circuit_opened_total{provider=\"openai\"} 1\n"));
//! assert!(text.contains("chitty_circuit_state{provider=\"openai\"} 0\n"));
//! # Ok::<(), chitty_core::Error>(())
//! # }).unwrap();
//! ```
//!
//! Metrics (OpenMetrics text, as served by [`encode_text`] with [`OPENMETRICS_CONTENT_TYPE`]); `docs/metrics.md`
//! is the reference, with example queries and the Grafana dashboard built on them:
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `chitty_requests_total` | counter | `model`, `tenant`, `endpoint`, `status`, `cache` |
//! | `chitty_cache_hits_total`, `chitty_cache_misses_total` | counter | `model` (bypassed lookups are neither) |
//! | `chitty_tokens_total` | counter | `model`, `tenant`, `kind` (`prompt` or `completion`) |
//! | `chitty_cost_nano_usd_total` | counter | `model`, `tenant` |
//! | `chitty_request_duration_seconds` | histogram (5 ms … 41 s) | `model`, `endpoint` |
//! | `chitty_time_to_first_token_seconds` | histogram (1 ms … 33 s) | `model`: streamed requests only |
//! | `chitty_overhead_seconds` | histogram (10 µs … 0.33 s) | none: time in the gateway minus time waiting on upstreams |
//! | `chitty_fallback_events_total` | counter | `from_model`, `to_model` (routes as `provider/upstream-model`) |
//! | `chitty_budget_rejections_total` | counter | `tenant`: requests refused with `insufficient_quota` |
//! | `chitty_rate_limited_total` | counter | `tenant`: requests refused with `rate_limit_exceeded` |
//! | `chitty_budget_remaining_nano_usd` | gauge | `tenant` (set by [`PrometheusSink::refresh`] or [`PrometheusSink::set_budget_remaining`]) |
//! | `chitty_circuit_state` | gauge | `provider`: 0 closed, 1 half-open, 2 open; the worst of the provider's routes |
//! | `chitty_upstream_failures_total` | counter | `provider` |
//! | `chitty_circuit_opened_total` | counter | `provider` |
//! | `chitty_budget_excess_total` | counter | `model`, `provider`: requests whose reported usage cost more than their reservation (charged the reservation) |
//! | `chitty_budget_excess_nano_usd_total` | counter | `model`, `provider`: cost reported above reservations, not charged |
//! | `chitty_retries_total` | counter | `provider`, `outcome` (`retry`, `retry_budget_exhausted`, `deadline_exceeded`) |
//! | `chitty_stream_continuations_total` | counter | `model`, `outcome` (`continued`, `failed`, or why it was refused) |
//!
//! Label cardinality is bounded: model names come from clients, so only the models on the allow-list given
//! to [`PrometheusSink::new`] are labelled by name, every other one as `other`; likewise tenants not in the
//! known set ([`PrometheusSink::with_tenants`], [`PrometheusSink::set_tenants`], [`PrometheusSink::refresh`])
//! are labelled `other`. Providers and routes come from the configuration; endpoints, cache outcomes and token
//! kinds are fixed sets; statuses are HTTP codes.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock};

use async_trait::async_trait;
use chitty_core::events::CircuitState;
use chitty_core::gateway::Gateway;
use chitty_core::{CacheStatus, Endpoint, Error, Event, EventSink, NanoUsd, RequestEvent, Result};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Unit;

/// prometheus-client's registry, re-exported so that hosts need no direct dependency to build one.
pub use prometheus_client::registry::Registry;

/// The `Content-Type` of [`encode_text`]'s output.
pub const OPENMETRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The `model` label of every model not on the allow-list.
pub const OTHER_MODEL: &str = "other";

/// The `tenant` label of every tenant not in the known set.
pub const OTHER_TENANT: &str = "other";

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    model: Arc<str>,
    tenant: Arc<str>,
    endpoint: &'static str,
    status: u16,
    cache: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct TokenLabels {
    model: Arc<str>,
    tenant: Arc<str>,
    kind: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ModelTenantLabels {
    model: Arc<str>,
    tenant: Arc<str>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ModelLabels {
    model: Arc<str>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct TenantLabels {
    tenant: Arc<str>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ProviderLabels {
    provider: Arc<str>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ModelProviderLabels {
    model: Arc<str>,
    provider: Arc<str>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct DurationLabels {
    model: Arc<str>,
    endpoint: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RetryLabels {
    provider: Arc<str>,
    outcome: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ContinuationLabels {
    model: Arc<str>,
    outcome: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct FallbackLabels {
    from_model: Arc<str>,
    to_model: Arc<str>,
}

fn duration_histogram() -> Histogram {
    // 5 ms doubling to about 41 s: cache hits to long generations.
    Histogram::new(exponential_buckets(0.005, 2.0, 14))
}

fn ttft_histogram() -> Histogram {
    // 1 ms doubling to about 33 s: replayed streams to slow first tokens.
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

fn overhead_histogram() -> Histogram {
    // 10 µs doubling to about 0.33 s: the proxy's own cost is tens of microseconds, a Redis round trip a few ms.
    Histogram::new(exponential_buckets(0.000_01, 2.0, 16))
}

/// The metric families, shared by every clone of the sink and with the registry.
struct Families {
    requests: Family<RequestLabels, Counter>,
    cache_hits: Family<ModelLabels, Counter>,
    cache_misses: Family<ModelLabels, Counter>,
    tokens: Family<TokenLabels, Counter>,
    cost: Family<ModelTenantLabels, Counter>,
    duration: Family<DurationLabels, Histogram, fn() -> Histogram>,
    ttft: Family<ModelLabels, Histogram, fn() -> Histogram>,
    overhead: Histogram,
    fallbacks: Family<FallbackLabels, Counter>,
    budget_rejections: Family<TenantLabels, Counter>,
    rate_limited: Family<TenantLabels, Counter>,
    budget_remaining: Family<TenantLabels, Gauge>,
    circuit_state: Family<ProviderLabels, Gauge>,
    upstream_failures: Family<ProviderLabels, Counter>,
    circuit_opened: Family<ProviderLabels, Counter>,
    budget_excess: Family<ModelProviderLabels, Counter>,
    budget_excess_cost: Family<ModelProviderLabels, Counter>,
    retries: Family<RetryLabels, Counter>,
    continuations: Family<ContinuationLabels, Counter>,
}

/// Gateway metrics for Prometheus; cheap to clone (the metrics are shared with the registry).
#[derive(Clone)]
pub struct PrometheusSink {
    families: Arc<Families>,
    models: Arc<HashMap<Arc<str>, ModelSeries>>,
    other: Arc<ModelSeries>,
    /// The known tenants; swapped whole when the set changes, so that a lookup holds the lock for a hash only.
    tenants: Arc<RwLock<Arc<TenantMap>>>,
    other_tenant: Arc<TenantSeries>,
    /// Each route's breaker state, `(provider, upstream model)`: the provider's gauge shows the worst of them.
    circuits: Arc<Mutex<HashMap<RouteKey, CircuitState>>>,
}

/// The known tenants' series by tenant identifier.
type TenantMap = HashMap<Arc<str>, Arc<TenantSeries>>;

/// A route: its provider and upstream model.
type RouteKey = (Arc<str>, String);

/// The series of one model label, taken from their families on first use: recording a request then costs
/// one family lookup (its tenant, status and cache outcome vary) instead of six. Clones of a metric share
/// its value.
struct ModelSeries {
    label: Arc<str>,
    /// Position in each tenant's per-model series; the `other` model is last.
    index: usize,
    cache_hits: OnceLock<Counter>,
    cache_misses: OnceLock<Counter>,
    ttft: OnceLock<Histogram>,
    /// One per [`Endpoint`], in [`endpoint_index`] order.
    duration: [OnceLock<Histogram>; 3],
}

impl ModelSeries {
    fn new(label: Arc<str>, index: usize) -> ModelSeries {
        ModelSeries {
            label,
            index,
            cache_hits: OnceLock::new(),
            cache_misses: OnceLock::new(),
            ttft: OnceLock::new(),
            duration: [OnceLock::new(), OnceLock::new(), OnceLock::new()],
        }
    }
}

/// The series of one tenant label: its per-model spend, its refusals and its budget gauge, taken from their
/// families on first use.
struct TenantSeries {
    label: Arc<str>,
    /// Indexed by [`ModelSeries::index`].
    per_model: Box<[OnceLock<SpendSeries>]>,
    budget_rejections: OnceLock<Counter>,
    rate_limited: OnceLock<Counter>,
    budget_remaining: OnceLock<Gauge>,
}

impl TenantSeries {
    fn new(label: Arc<str>, models: usize) -> TenantSeries {
        TenantSeries {
            label,
            per_model: (0..models).map(|_| OnceLock::new()).collect(),
            budget_rejections: OnceLock::new(),
            rate_limited: OnceLock::new(),
            budget_remaining: OnceLock::new(),
        }
    }
}

/// Tokens and cost of one (model, tenant) pair.
struct SpendSeries {
    prompt_tokens: Counter,
    completion_tokens: Counter,
    cost: Counter,
}

fn endpoint_index(endpoint: Endpoint) -> usize {
    match endpoint {
        Endpoint::ChatCompletions => 0,
        Endpoint::Completions => 1,
        Endpoint::Embeddings => 2,
    }
}

impl fmt::Debug for PrometheusSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrometheusSink")
            .field("labelled_models", &self.models.len())
            .field("labelled_tenants", &self.known_tenants().len())
            .finish_non_exhaustive()
    }
}

impl PrometheusSink {
    /// Registers the metrics into `registry`; `models` are the model names labelled as themselves (usually
    /// every public model in the configuration), all others are labelled [`OTHER_MODEL`]. No tenant is known
    /// yet: add them with [`PrometheusSink::with_tenants`] (or later with [`PrometheusSink::set_tenants`]).
    pub fn new<I, S>(registry: &mut Registry, models: I) -> PrometheusSink
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let families = Families {
            requests: Family::default(),
            cache_hits: Family::default(),
            cache_misses: Family::default(),
            tokens: Family::default(),
            cost: Family::default(),
            duration: Family::new_with_constructor(duration_histogram),
            ttft: Family::new_with_constructor(ttft_histogram),
            overhead: overhead_histogram(),
            fallbacks: Family::default(),
            budget_rejections: Family::default(),
            rate_limited: Family::default(),
            budget_remaining: Family::default(),
            circuit_state: Family::default(),
            upstream_failures: Family::default(),
            circuit_opened: Family::default(),
            budget_excess: Family::default(),
            budget_excess_cost: Family::default(),
            retries: Family::default(),
            continuations: Family::default(),
        };
        register(registry, &families);
        let mut labelled = HashMap::new();
        for model in models {
            let label: Arc<str> = Arc::from(model.as_ref());
            let index = labelled.len();
            labelled.entry(label.clone()).or_insert_with(|| ModelSeries::new(label, index));
        }
        let other = ModelSeries::new(Arc::from(OTHER_MODEL), labelled.len());
        let model_slots = labelled.len() + 1;
        PrometheusSink {
            families: Arc::new(families),
            models: Arc::new(labelled),
            other: Arc::new(other),
            tenants: Arc::default(),
            other_tenant: Arc::new(TenantSeries::new(Arc::from(OTHER_TENANT), model_slots)),
            circuits: Arc::default(),
        }
    }

    /// This sink with `tenants` labelled as themselves (usually the configuration's tenants).
    pub fn with_tenants<I, S>(self, tenants: I) -> PrometheusSink
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.set_tenants(tenants);
        self
    }

    /// This sink with a closed circuit (`chitty_circuit_state` 0) shown for each of `providers` from the start.
    pub fn with_providers<I, S>(self, providers: I) -> PrometheusSink
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        for provider in providers {
            self.families
                .circuit_state
                .get_or_create(&ProviderLabels { provider: Arc::from(provider.as_ref()) })
                .set(0);
        }
        self
    }

    /// Replaces the set of tenants labelled as themselves (the others are labelled [`OTHER_TENANT`]); a tenant
    /// that stays keeps its series. Call it when tenants change at run time, or let
    /// [`PrometheusSink::refresh`] do it.
    pub fn set_tenants<I, S>(&self, tenants: I)
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let current = self.known_tenants();
        let slots = self.models.len() + 1;
        let next: TenantMap = tenants
            .into_iter()
            .map(|t| match current.get_key_value(t.as_ref()) {
                Some((label, series)) => (label.clone(), series.clone()),
                None => {
                    let label: Arc<str> = Arc::from(t.as_ref());
                    (label.clone(), Arc::new(TenantSeries::new(label, slots)))
                }
            })
            .collect();
        *self.tenants.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(next);
    }

    /// Sets `chitty_budget_remaining_nano_usd` for `tenant` (ignored for a tenant not in the known set: the
    /// remaining budgets of several tenants do not add up to anything under `other`).
    pub fn set_budget_remaining(&self, tenant: &str, remaining: NanoUsd) {
        let tenants = self.known_tenants();
        if let Some(series) = tenants.get(tenant) {
            let gauge = series.budget_remaining.get_or_init(|| {
                self.families.budget_remaining.get_or_create(&TenantLabels { tenant: series.label.clone() }).clone()
            });
            gauge.set(i64::try_from(remaining.0).unwrap_or(i64::MAX));
        }
    }

    /// Brings the gauges up to date with `gateway`: the known tenants (the access store's may change at run
    /// time), each budgeted tenant's remaining budget in its current period (one budget-store read
    /// per tenant) and each route's circuit state. Call it periodically (the server does, every few seconds); a
    /// balance that cannot be read leaves its gauge as it was and is returned as the error, after the rest.
    pub async fn refresh(&self, gateway: &Gateway) -> Result<()> {
        let tenants = gateway.tenants();
        self.set_tenants(tenants.iter().map(|t| t.id()));
        for (provider, model, state) in gateway.circuit_states() {
            self.circuit_changed(Arc::from(provider), model, state);
        }
        let mut outcome = Ok(());
        let Some(store) = gateway.budget_store() else { return outcome };
        let now = gateway.now();
        for tenant in &tenants {
            let Some(limit) = tenant.budget() else { continue };
            let period = tenant.budget_period().window(now).start;
            match store.spend(tenant.id(), period, now).await {
                Ok(spend) => {
                    let remaining = chitty_core::Balance::new(limit, spend.tenant()).remaining();
                    self.set_budget_remaining(tenant.id(), remaining);
                }
                Err(e) => outcome = outcome.and(Err(e)),
            }
        }
        outcome
    }

    fn known_tenants(&self) -> Arc<TenantMap> {
        self.tenants.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// The series labelled `model` if it is allow-listed, else those labelled [`OTHER_MODEL`].
    fn model_series(&self, model: &str) -> &ModelSeries {
        self.models.get(model).unwrap_or(&self.other)
    }

    fn record_request(&self, r: &RequestEvent) {
        let f = &*self.families;
        let series = self.model_series(&r.model);
        let model = &series.label;
        // The read lock is held for one hash lookup; the sink never awaits while holding it.
        let tenants = self.tenants.read().unwrap_or_else(PoisonError::into_inner);
        let tenant = tenants.get(r.tenant.as_str()).unwrap_or(&self.other_tenant);
        let endpoint = r.endpoint.as_str();
        f.requests
            .get_or_create(&RequestLabels {
                model: model.clone(),
                tenant: tenant.label.clone(),
                endpoint,
                status: r.status,
                cache: r.cache.as_str(),
            })
            .inc();
        let lookups = match r.cache {
            CacheStatus::Hit | CacheStatus::Semantic => Some((&series.cache_hits, &f.cache_hits)),
            CacheStatus::Miss => Some((&series.cache_misses, &f.cache_misses)),
            CacheStatus::Bypass => None,
        };
        if let Some((cached, family)) = lookups {
            cached.get_or_init(|| family.get_or_create(&ModelLabels { model: model.clone() }).clone()).inc();
        }
        let spend = tenant.per_model.get(series.index).map(|slot| {
            slot.get_or_init(|| {
                let tokens = |kind| {
                    f.tokens
                        .get_or_create(&TokenLabels { model: model.clone(), tenant: tenant.label.clone(), kind })
                        .clone()
                };
                SpendSeries {
                    prompt_tokens: tokens("prompt"),
                    completion_tokens: tokens("completion"),
                    cost: f
                        .cost
                        .get_or_create(&ModelTenantLabels { model: model.clone(), tenant: tenant.label.clone() })
                        .clone(),
                }
            })
        });
        if let Some(spend) = spend {
            spend.prompt_tokens.inc_by(r.prompt_tokens);
            spend.completion_tokens.inc_by(r.completion_tokens);
            spend.cost.inc_by(r.cost.0);
        }
        match r.error_code {
            Some("insufficient_quota") => {
                let labels =
                    || f.budget_rejections.get_or_create(&TenantLabels { tenant: tenant.label.clone() }).clone();
                tenant.budget_rejections.get_or_init(labels).inc();
            }
            Some("rate_limit_exceeded") => {
                let labels = || f.rate_limited.get_or_create(&TenantLabels { tenant: tenant.label.clone() }).clone();
                tenant.rate_limited.get_or_init(labels).inc();
            }
            _ => {}
        }
        drop(tenants);
        let duration = || f.duration.get_or_create(&DurationLabels { model: model.clone(), endpoint }).clone();
        series.duration[endpoint_index(r.endpoint)].get_or_init(duration).observe(r.latency.as_secs_f64());
        if let (true, Some(ttft)) = (r.stream, r.time_to_first_token) {
            let histogram = || f.ttft.get_or_create(&ModelLabels { model: model.clone() }).clone();
            series.ttft.get_or_init(histogram).observe(ttft.as_secs_f64());
        }
        f.overhead.observe(r.overhead.as_secs_f64());
    }

    /// Notes a route's breaker state and sets its provider's gauge to the worst state among its routes.
    fn circuit_changed(&self, provider: Arc<str>, model: String, state: CircuitState) {
        let mut circuits = self.circuits.lock().unwrap_or_else(PoisonError::into_inner);
        circuits.insert((provider.clone(), model), state);
        let worst = circuits.iter().filter(|((p, _), _)| *p == provider).map(|(_, s)| s.severity()).max();
        let gauge = self.families.circuit_state.get_or_create(&ProviderLabels { provider });
        gauge.set(i64::from(worst.unwrap_or(0)));
    }
}

/// Registers every family (prometheus-client appends `_total` to counters and the unit to histograms).
fn register(registry: &mut Registry, f: &Families) {
    registry.register("chitty_requests", "Finished gateway requests", f.requests.clone());
    registry.register("chitty_cache_hits", "Requests answered from the cache", f.cache_hits.clone());
    registry.register("chitty_cache_misses", "Cache lookups that found nothing", f.cache_misses.clone());
    registry.register("chitty_tokens", "Prompt and completion tokens of finished requests", f.tokens.clone());
    registry.register("chitty_cost_nano_usd", "Cost charged to tenants, in nano-USD", f.cost.clone());
    registry.register_with_unit(
        "chitty_request_duration",
        "Time spent in the gateway and upstream per request",
        Unit::Seconds,
        f.duration.clone(),
    );
    registry.register_with_unit(
        "chitty_time_to_first_token",
        "Time from a streamed request's arrival to its first chunk",
        Unit::Seconds,
        f.ttft.clone(),
    );
    registry.register_with_unit(
        "chitty_overhead",
        "Time spent in the gateway itself: request duration minus time waiting on upstreams",
        Unit::Seconds,
        f.overhead.clone(),
    );
    registry.register(
        "chitty_fallback_events",
        "Requests that left a route for the next one (routes as provider/upstream-model)",
        f.fallbacks.clone(),
    );
    registry.register(
        "chitty_budget_rejections",
        "Requests refused because the budget could not cover them (overruns prevented)",
        f.budget_rejections.clone(),
    );
    registry.register("chitty_rate_limited", "Requests refused by a rate limit", f.rate_limited.clone());
    registry.register(
        "chitty_budget_remaining_nano_usd",
        "Budget left in the current period, in nano-USD",
        f.budget_remaining.clone(),
    );
    registry.register(
        "chitty_circuit_state",
        "Circuit breaker state, the worst of the provider's routes: 0 closed, 1 half-open, 2 open",
        f.circuit_state.clone(),
    );
    registry.register(
        "chitty_upstream_failures",
        "Failed upstream attempts (the router retried or fell back)",
        f.upstream_failures.clone(),
    );
    registry.register("chitty_circuit_opened", "Circuit breakers opened", f.circuit_opened.clone());
    registry.register(
        "chitty_budget_excess",
        "Requests whose reported usage cost more than their reservation (the reservation was charged)",
        f.budget_excess.clone(),
    );
    registry.register(
        "chitty_budget_excess_nano_usd",
        "Cost reported by upstreams above reservations and not charged, in nano-USD",
        f.budget_excess_cost.clone(),
    );
    registry.register(
        "chitty_retries",
        "Retry decisions after failed attempts: retried, or refused by the retry budget or the deadline",
        f.retries.clone(),
    );
    registry.register(
        "chitty_stream_continuations",
        "Streams broken after their first token: continued on another attempt, failed, or refused",
        f.continuations.clone(),
    );
}

#[async_trait]
impl EventSink for PrometheusSink {
    async fn record(&self, event: Event) -> Result<()> {
        let f = &*self.families;
        match event {
            Event::Request(r) => self.record_request(&r),
            Event::UpstreamFailure { provider, .. } => {
                f.upstream_failures.get_or_create(&ProviderLabels { provider: provider.into() }).inc();
            }
            Event::CircuitOpened { provider } => {
                f.circuit_opened.get_or_create(&ProviderLabels { provider: provider.into() }).inc();
            }
            Event::CircuitChanged { provider, model, state } => self.circuit_changed(provider.into(), model, state),
            Event::Fallback { from_model, to_model, .. } => {
                f.fallbacks
                    .get_or_create(&FallbackLabels { from_model: from_model.into(), to_model: to_model.into() })
                    .inc();
            }
            Event::BudgetExcess { model, provider, reserved, reported, .. } => {
                let labels =
                    ModelProviderLabels { model: self.model_series(&model).label.clone(), provider: provider.into() };
                f.budget_excess.get_or_create(&labels).inc();
                f.budget_excess_cost.get_or_create(&labels).inc_by(reported.saturating_sub(reserved).0);
            }
            Event::Retry { provider, outcome, .. } => {
                f.retries.get_or_create(&RetryLabels { provider: provider.into(), outcome }).inc();
            }
            Event::StreamContinuation { model, outcome, .. } => {
                let model = self.model_series(&model).label.clone();
                f.continuations.get_or_create(&ContinuationLabels { model, outcome }).inc();
            }
            // Queue messages and future event kinds carry no metrics here; accepting them is the contract.
            _ => {}
        }
        Ok(())
    }
}

/// The registry in the OpenMetrics text format (serve it with [`OPENMETRICS_CONTENT_TYPE`]).
pub fn encode_text(registry: &Registry) -> Result<String> {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry).map_err(|e| Error::backend("prometheus", e))?;
    Ok(text)
}

/// A router serving `registry` at `GET /metrics`, to merge into the gateway's router (feature `server`).
///
/// ```
/// use std::sync::Arc;
/// use chitty_providers::prometheus::{PrometheusSink, Registry, metrics_router};
///
/// let mut registry = Registry::default();
/// let sink = Arc::new(PrometheusSink::new(&mut registry, ["chitty-mock"]));
/// let app: axum::Router = axum::Router::new().merge(metrics_router(Arc::new(registry)));
/// ```
#[cfg(feature = "server")]
pub fn metrics_router(registry: Arc<Registry>) -> axum::Router {
    use axum::http::{StatusCode, header};
    use axum::response::IntoResponse;

    let handler = move || {
        let registry = registry.clone();
        async move {
            match encode_text(&registry) {
                Ok(text) => ([(header::CONTENT_TYPE, OPENMETRICS_CONTENT_TYPE)], text).into_response(),
                Err(e) => {
                    tracing::error!(error = %e, "encoding the metrics registry failed");
                    StatusCode::INTERNAL_SERVER_ERROR.into_response()
                }
            }
        }
    };
    axum::Router::new().route("/metrics", axum::routing::get(handler))
}
