//! Routing: which model a request names, and which of its routes answers — in order, each retried with
//! full-jitter backoff, each attempt under the timeout, skipping routes whose circuit is open.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::{BoxFuture, Either};

use super::config::ModelConfig;
use super::{Admission, CircuitBreaker, Gateway, lock};
use crate::error::{Error, Result};
use crate::events::Event;
use crate::provider::{Capability, Provider};

/// One upstream deployment of a model, with its circuit breaker.
pub(super) struct Route {
    pub(super) provider: Arc<dyn Provider>,
    pub(super) upstream_model: String,
    pub(super) breaker: Mutex<CircuitBreaker>,
}

/// A public model (or prefix family) and its routes, primary first.
pub(super) struct Model {
    pub(super) config: Arc<ModelConfig>,
    pub(super) routes: Vec<Route>,
    /// For prefix families: the prefix length to strip from the requested name to get the upstream name.
    pub(super) strip_prefix: Option<usize>,
}

impl Model {
    /// The name to send upstream on `route` for the requested public name.
    pub(super) fn upstream_name<'a>(&self, route: &'a Route, requested: &'a str) -> &'a str {
        match self.strip_prefix {
            Some(n) => requested.get(n..).unwrap_or(requested),
            None => &route.upstream_model,
        }
    }
}

impl Gateway {
    /// The model named `name`: a configured model, or else the prefix family it belongs to.
    pub(super) fn find_model(&self, name: &str) -> Option<&Model> {
        self.inner.models.get(name).or_else(|| {
            let family = self.inner.prefixes.iter().find(|(p, _)| name.len() > p.len() && name.starts_with(p.as_str()));
            family.map(|(_, model)| model)
        })
    }

    /// Tries the model's routes in order: each up to `attempts_per_route` times, skipping open circuits, each
    /// attempt bounded by the timeout. Errors a retry cannot fix (a 4xx, a malformed answer) return at once.
    pub(super) async fn route<T, F>(&self, model: &Model, capability: Capability, mut attempt: F) -> Result<(T, String)>
    where
        F: FnMut(&Route) -> BoxFuture<'static, Result<T>>,
    {
        let defaults = &self.inner.defaults;
        let attempts = defaults.attempts_per_route.max(1);
        let mut last_error: Option<Error> = None;
        let mut skipped = Vec::new();
        for route in &model.routes {
            let name = route.provider.name();
            if !route.provider.capabilities().contains(capability) {
                skipped.push(format!("{name}: does not support {capability}"));
                continue;
            }
            for retry in 0..attempts {
                let admission = lock(&route.breaker).admit(self.now());
                if let Admission::Rejected { .. } = admission {
                    skipped.push(format!("{name}: circuit open"));
                    break;
                }
                match self.attempt(name, attempt(route)).await {
                    Ok(v) => {
                        lock(&route.breaker).on_success();
                        return Ok((v, name.to_owned()));
                    }
                    Err(e) if !e.is_retryable() => {
                        // The route answered: the request (or the answer) is at fault, not the route's health.
                        if admission == Admission::Probe {
                            lock(&route.breaker).on_success();
                        }
                        return Err(e);
                    }
                    Err(e) => {
                        let opened = self.route_failed(route, &model.config.name, &e).await;
                        let wait =
                            e.retry_after().unwrap_or_else(|| defaults.backoff(retry, self.inner.random.next_u64()));
                        last_error = Some(e);
                        let last_try = retry + 1 >= attempts;
                        if last_try || opened || wait > Duration::from_millis(defaults.backoff_max_ms) {
                            break;
                        }
                        self.inner.timer.sleep(wait).await;
                    }
                }
            }
        }
        Err(last_error
            .unwrap_or_else(|| Error::Unavailable { model: model.config.name.clone(), reason: skipped.join("; ") }))
    }

    /// One attempt under the per-attempt timeout.
    async fn attempt<T>(&self, provider: &str, mut call: BoxFuture<'static, Result<T>>) -> Result<T> {
        // In-process providers often answer on the first poll: arm the timeout timer only if needed.
        if let std::task::Poll::Ready(r) = futures::poll!(&mut call) {
            return r;
        }
        let timeout = self.inner.defaults.timeout();
        match futures::future::select(call, self.inner.timer.sleep(timeout)).await {
            Either::Left((r, _)) => r,
            Either::Right(((), _)) => Err(Error::UpstreamTimeout { provider: provider.to_owned(), timeout }),
        }
    }

    /// Counts a retryable failure against the route's breaker and reports it; whether the circuit opened.
    async fn route_failed(&self, route: &Route, model: &str, error: &Error) -> bool {
        let name = route.provider.name();
        let opened = lock(&route.breaker).on_failure(self.now());
        self.emit(Event::UpstreamFailure {
            provider: name.to_owned(),
            model: model.to_owned(),
            status: error.status(),
        })
        .await;
        if opened {
            self.emit(Event::CircuitOpened { provider: name.to_owned() }).await;
        }
        opened
    }
}

/// Whether a gateway can serve: what `GET /readyz` reports.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Readiness {
    /// What is not ready, one line each (a backend that does not answer, a model whose every circuit is
    /// open); empty when ready.
    pub failing: Vec<String>,
}

impl Readiness {
    /// Whether nothing is failing.
    pub fn is_ready(&self) -> bool {
        self.failing.is_empty()
    }
}

impl Gateway {
    /// Whether the gateway can serve: the cache and the budget store answer ([`crate::Cache::ping`],
    /// [`crate::BudgetStore::ping`]), and every configured model has at least one route whose circuit is closed.
    pub async fn readiness(&self) -> Readiness {
        let mut failing = Vec::new();
        if let Some(cache) = &self.inner.cache
            && let Err(e) = cache.ping().await
        {
            // The detail (addresses, backend messages) goes to the log, not to an unauthenticated probe.
            tracing::warn!(error = %e, "readiness: the cache does not answer");
            failing.push("cache: not answering".to_owned());
        }
        if let Some(budgets) = &self.inner.budgets
            && let Err(e) = budgets.ping().await
        {
            tracing::warn!(error = %e, "readiness: the budget store does not answer");
            failing.push("budget store: not answering".to_owned());
        }
        if let Some(access) = &self.inner.access
            && let Err(e) = access.ping().await
        {
            tracing::warn!(error = %e, "readiness: the access store does not answer");
            failing.push("access store: not answering".to_owned());
        }
        for name in &self.inner.model_order {
            let Some(model) = self.inner.models.get(name) else { continue };
            if !model.routes.iter().any(|r| lock(&r.breaker).is_closed()) {
                failing.push(format!("model `{name}`: every route's circuit is open"));
            }
        }
        for (prefix, model) in &self.inner.prefixes {
            if !model.routes.iter().any(|r| lock(&r.breaker).is_closed()) {
                failing.push(format!("models `{prefix}*`: the route's circuit is open"));
            }
        }
        Readiness { failing }
    }
}
