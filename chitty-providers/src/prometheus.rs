//! An [`EventSink`] that keeps Prometheus metrics (prometheus-client) in a registry the host owns.
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! use chitty_core::{Event, EventSink};
//! use chitty_providers::prometheus::{PrometheusSink, Registry, encode_text};
//!
//! let mut registry = Registry::default();
//! let sink = PrometheusSink::new(&mut registry, ["gpt-4o-mini"]);
//! sink.record(Event::CircuitOpened { provider: "openai".into() }).await?;
//! let text = encode_text(&registry)?;
//! assert!(text.contains("chitty_circuit_opened_total{provider=\"openai\"} 1\n"));
//! # Ok::<(), chitty_core::Error>(())
//! # }).unwrap();
//! ```
//!
//! Metrics (OpenMetrics text, as served by [`encode_text`] with [`OPENMETRICS_CONTENT_TYPE`]):
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `chitty_requests_total` | counter | `model`, `endpoint`, `status`, `cache` |
//! | `chitty_tokens_total` | counter | `model`, `kind` (`prompt` or `completion`) |
//! | `chitty_cost_nano_usd_total` | counter | `model` |
//! | `chitty_upstream_failures_total` | counter | `provider` |
//! | `chitty_circuit_opened_total` | counter | `provider` |
//! | `chitty_budget_excess_total` | counter | `model`, `provider`: requests whose reported usage cost more than their reservation (charged the reservation) |
//! | `chitty_budget_excess_nano_usd_total` | counter | `model`, `provider`: cost reported above reservations, not charged |
//! | `chitty_request_duration_seconds` | histogram (5 ms … 41 s) | `model`, `endpoint` |
//!
//! Label cardinality is bounded: model names come from clients, so only the models on the allow-list given
//! to [`PrometheusSink::new`] are labelled by name, every other one as `other`. Providers come from the
//! configuration; endpoints, cache outcomes and token kinds are fixed sets; statuses are HTTP codes.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use chitty_core::{Endpoint, Error, Event, EventSink, Result};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Unit;

/// prometheus-client's registry, re-exported so that hosts need no direct dependency to build one.
pub use prometheus_client::registry::Registry;

/// The `Content-Type` of [`encode_text`]'s output.
pub const OPENMETRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The `model` label of every model not on the allow-list.
pub const OTHER_MODEL: &str = "other";

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    model: Arc<str>,
    endpoint: &'static str,
    status: u16,
    cache: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct TokenLabels {
    model: Arc<str>,
    kind: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ModelLabels {
    model: Arc<str>,
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

fn duration_histogram() -> Histogram {
    // 5 ms doubling to about 41 s: cache hits to long generations.
    Histogram::new(exponential_buckets(0.005, 2.0, 14))
}

/// Gateway metrics for Prometheus; cheap to clone (the metrics are shared with the registry).
#[derive(Clone)]
pub struct PrometheusSink {
    requests: Family<RequestLabels, Counter>,
    tokens: Family<TokenLabels, Counter>,
    cost: Family<ModelLabels, Counter>,
    upstream_failures: Family<ProviderLabels, Counter>,
    circuit_opened: Family<ProviderLabels, Counter>,
    budget_excess: Family<ModelProviderLabels, Counter>,
    budget_excess_cost: Family<ModelProviderLabels, Counter>,
    duration: Family<DurationLabels, Histogram, fn() -> Histogram>,
    models: Arc<HashMap<Arc<str>, ModelSeries>>,
    other: Arc<ModelSeries>,
}

/// The series of one model label, taken from their families on first use: recording a request then costs
/// one family lookup (its status and cache outcome vary) instead of five. Clones of a metric share its value.
struct ModelSeries {
    label: Arc<str>,
    prompt_tokens: OnceLock<Counter>,
    completion_tokens: OnceLock<Counter>,
    cost: OnceLock<Counter>,
    /// One per [`Endpoint`], in [`endpoint_index`] order.
    duration: [OnceLock<Histogram>; 3],
}

impl ModelSeries {
    fn new(label: Arc<str>) -> ModelSeries {
        ModelSeries {
            label,
            prompt_tokens: OnceLock::new(),
            completion_tokens: OnceLock::new(),
            cost: OnceLock::new(),
            duration: [OnceLock::new(), OnceLock::new(), OnceLock::new()],
        }
    }
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
        f.debug_struct("PrometheusSink").field("labelled_models", &self.models.len()).finish_non_exhaustive()
    }
}

impl PrometheusSink {
    /// Registers the metrics into `registry`; `models` are the model names labelled as themselves (usually
    /// every public model in the configuration), all others are labelled [`OTHER_MODEL`].
    pub fn new<I, S>(registry: &mut Registry, models: I) -> PrometheusSink
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let sink = PrometheusSink {
            requests: Family::default(),
            tokens: Family::default(),
            cost: Family::default(),
            upstream_failures: Family::default(),
            circuit_opened: Family::default(),
            budget_excess: Family::default(),
            budget_excess_cost: Family::default(),
            duration: Family::new_with_constructor(duration_histogram),
            models: Arc::new(
                models
                    .into_iter()
                    .map(|m| {
                        let label: Arc<str> = Arc::from(m.as_ref());
                        (label.clone(), ModelSeries::new(label))
                    })
                    .collect(),
            ),
            other: Arc::new(ModelSeries::new(Arc::from(OTHER_MODEL))),
        };
        // prometheus-client appends `_total` to counters and the unit to the histogram's name.
        registry.register("chitty_requests", "Finished gateway requests", sink.requests.clone());
        registry.register("chitty_tokens", "Prompt and completion tokens of finished requests", sink.tokens.clone());
        registry.register("chitty_cost_nano_usd", "Cost charged to tenants, in nano-USD", sink.cost.clone());
        registry.register(
            "chitty_upstream_failures",
            "Failed upstream attempts (the router retried or fell back)",
            sink.upstream_failures.clone(),
        );
        registry.register("chitty_circuit_opened", "Circuit breakers opened", sink.circuit_opened.clone());
        registry.register(
            "chitty_budget_excess",
            "Requests whose reported usage cost more than their reservation (the reservation was charged)",
            sink.budget_excess.clone(),
        );
        registry.register(
            "chitty_budget_excess_nano_usd",
            "Cost reported by upstreams above reservations and not charged, in nano-USD",
            sink.budget_excess_cost.clone(),
        );
        registry.register_with_unit(
            "chitty_request_duration",
            "Time spent in the gateway and upstream per request",
            Unit::Seconds,
            sink.duration.clone(),
        );
        sink
    }

    /// The series labelled `model` if it is allow-listed, else those labelled [`OTHER_MODEL`].
    fn model_series(&self, model: &str) -> &ModelSeries {
        self.models.get(model).unwrap_or(&self.other)
    }
}

#[async_trait]
impl EventSink for PrometheusSink {
    async fn record(&self, event: Event) -> Result<()> {
        match event {
            Event::Request(r) => {
                let series = self.model_series(&r.model);
                let model = &series.label;
                let endpoint = r.endpoint.as_str();
                self.requests
                    .get_or_create(&RequestLabels {
                        model: model.clone(),
                        endpoint,
                        status: r.status,
                        cache: r.cache.as_str(),
                    })
                    .inc();
                let tokens = |kind| self.tokens.get_or_create(&TokenLabels { model: model.clone(), kind }).clone();
                series.prompt_tokens.get_or_init(|| tokens("prompt")).inc_by(r.prompt_tokens);
                series.completion_tokens.get_or_init(|| tokens("completion")).inc_by(r.completion_tokens);
                let cost = || self.cost.get_or_create(&ModelLabels { model: model.clone() }).clone();
                series.cost.get_or_init(cost).inc_by(r.cost.0);
                let duration =
                    || self.duration.get_or_create(&DurationLabels { model: model.clone(), endpoint }).clone();
                series.duration[endpoint_index(r.endpoint)].get_or_init(duration).observe(r.latency.as_secs_f64());
            }
            Event::UpstreamFailure { provider, .. } => {
                self.upstream_failures.get_or_create(&ProviderLabels { provider: provider.into() }).inc();
            }
            Event::CircuitOpened { provider } => {
                self.circuit_opened.get_or_create(&ProviderLabels { provider: provider.into() }).inc();
            }
            Event::BudgetExcess { model, provider, reserved, reported, .. } => {
                let labels =
                    ModelProviderLabels { model: self.model_series(&model).label.clone(), provider: provider.into() };
                self.budget_excess.get_or_create(&labels).inc();
                self.budget_excess_cost.get_or_create(&labels).inc_by(reported.saturating_sub(reserved).0);
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
