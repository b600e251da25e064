//! Routing: which model a request names, and which of its routes answers — in order, each retried with
//! full-jitter backoff, each attempt under the timeout, skipping routes whose circuit is open.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::{BoxFuture, Either};

use super::config::ModelConfig;
use super::pipeline::RequestInfo;
use super::{Admission, CircuitBreaker, Gateway, lock};
use crate::balance::{BalancePolicy, Balancer, OutstandingCounter};
use crate::error::{Error, Result};
use crate::events::{CircuitState, Event};
use crate::provider::{Capability, Provider};

/// One upstream deployment of a model, with its circuit breaker.
pub(super) struct Route {
    pub(super) provider: Arc<dyn Provider>,
    pub(super) upstream_model: String,
    pub(super) breaker: Mutex<CircuitBreaker>,
    /// Requests in flight on this route, for `balance = "least_outstanding"`.
    pub(super) outstanding: OutstandingCounter,
}

/// A public model (or prefix family) and its routes, primary first.
pub(super) struct Model {
    pub(super) config: Arc<ModelConfig>,
    pub(super) routes: Vec<Route>,
    /// The order in which a request tries the routes (`balance`, `weight`, `group`).
    pub(super) balancer: Balancer,
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
    /// Moving on to the next route is reported as [`Event::Fallback`], breaker changes as
    /// [`Event::CircuitChanged`]; the time spent waiting on upstreams is added to `info`.
    pub(super) async fn route<T, F>(
        &self,
        info: &RequestInfo,
        model: &Model,
        capability: Capability,
        mut attempt: F,
    ) -> Result<(T, RouteTaken)>
    where
        F: FnMut(&Route) -> BoxFuture<'static, Result<T>>,
    {
        let defaults = &self.inner.defaults;
        let clock = &self.inner.clock;
        let attempts = defaults.attempts_per_route.max(1);
        let mut last_error: Option<Error> = None;
        let mut skipped = Vec::new();
        // The first route given up on since the last fallback was reported.
        let mut left: Option<&Route> = None;
        let mut attempts_made = 0u32;
        // Ordered balancing in one group is the listed order: no allocation on the common path.
        let order: Vec<usize> = match model.balancer.policy() {
            BalancePolicy::Ordered if model.balancer.deployments().iter().all(|d| d.group == 0) => Vec::new(),
            _ => model.balancer.attempt_order(
                |_| true,
                |i| model.routes.get(i).map_or(0, |r| r.outstanding.current()),
                self.inner.random.as_ref(),
            ),
        };
        let count = if order.is_empty() { model.routes.len() } else { order.len() };
        for position in 0..count {
            let index = order.get(position).copied().unwrap_or(position);
            let Some(route) = model.routes.get(index) else { continue };
            let name = route.provider.name();
            if !route.provider.capabilities().contains(capability) {
                skipped.push(format!("{name}: does not support {capability}"));
                continue;
            }
            for retry in 0..attempts {
                let now = self.now();
                let (admission, changed) = breaker_step(route, |b| b.admit(now));
                self.circuit_changed(route, changed).await;
                if let Admission::Rejected { .. } = admission {
                    skipped.push(format!("{name}: circuit open"));
                    left.get_or_insert(route);
                    break;
                }
                if let Some(from) = left.take() {
                    self.emit(Event::Fallback {
                        model: model.config.name.clone(),
                        from_model: route_label(from),
                        to_model: route_label(route),
                    })
                    .await;
                }
                let call = attempt(route);
                let before = clock.monotonic_nanos();
                attempts_made += 1;
                let in_flight = route.outstanding.start();
                let result = self.attempt(name, call).await;
                drop(in_flight);
                // Attempts and backoff are upstream time, kept apart from the gateway's own.
                info.waited_upstream(before, clock.monotonic_nanos());
                match result {
                    Ok(v) => {
                        let ((), changed) = breaker_step(route, CircuitBreaker::on_success);
                        self.circuit_changed(route, changed).await;
                        let taken = RouteTaken {
                            name: name.to_owned(),
                            route: format!("{name}/{}", model.upstream_name(route, &info.model)),
                            index,
                            attempts: attempts_made,
                            first_chunk_at: None,
                        };
                        return Ok((v, taken));
                    }
                    Err(e) if !e.is_retryable() => {
                        // The route answered: the request (or the answer) is at fault, not the route's health.
                        if admission == Admission::Probe {
                            let ((), changed) = breaker_step(route, CircuitBreaker::on_success);
                            self.circuit_changed(route, changed).await;
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
                            left.get_or_insert(route);
                            break;
                        }
                        let before = clock.monotonic_nanos();
                        self.inner.timer.sleep(wait).await;
                        info.waited_upstream(before, clock.monotonic_nanos());
                    }
                }
            }
        }
        Err(last_error
            .unwrap_or_else(|| Error::Unavailable { model: model.config.name.clone(), reason: skipped.join("; ") }))
    }

    /// Reports a breaker's change of state, if it changed.
    async fn circuit_changed(&self, route: &Route, changed: Option<CircuitState>) {
        if let Some(state) = changed {
            let (provider, model) = (route.provider.name().to_owned(), route.upstream_model.clone());
            self.emit(Event::CircuitChanged { provider, model, state }).await;
        }
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
        let now = self.now();
        let (opened, changed) = breaker_step(route, |b| b.on_failure(now));
        self.emit(Event::UpstreamFailure {
            provider: name.to_owned(),
            model: model.to_owned(),
            status: error.status(),
        })
        .await;
        if opened {
            self.emit(Event::CircuitOpened { provider: name.to_owned() }).await;
        }
        self.circuit_changed(route, changed).await;
        opened
    }
}

/// The route that answered a request.
#[derive(Debug)]
pub(super) struct RouteTaken {
    /// The provider's name.
    pub(super) name: String,
    /// `<provider>/<upstream model>`: the deployment that answered, as `x-chitty-route` names it.
    pub(super) route: String,
    /// Upstream attempts the request made, failed ones included.
    pub(super) attempts: u32,
    /// The route's position among its model's routes: 0 is the primary.
    pub(super) index: usize,
    /// When a stream's first chunk reached the gateway (monotonic); set by the stream relay.
    pub(super) first_chunk_at: Option<u64>,
}

/// Runs `step` on the route's breaker; also returns the new state if the step changed it.
fn breaker_step<R>(route: &Route, step: impl FnOnce(&mut CircuitBreaker) -> R) -> (R, Option<CircuitState>) {
    let mut breaker = lock(&route.breaker);
    let before = breaker.state();
    let result = step(&mut breaker);
    let after = breaker.state();
    (result, (after != before).then_some(after))
}

/// A route as fallback events name it: `provider/upstream-model`. Only built when a request falls back.
fn route_label(route: &Route) -> String {
    format!("{}/{}", route.provider.name(), route.upstream_model)
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
    /// Every tenant the gateway knows now (from the configuration or the access store), in no set order.
    pub fn tenants(&self) -> Vec<Arc<super::Tenant>> {
        self.directory().tenants.values().cloned().collect()
    }

    /// Each route's circuit breaker: `(provider, upstream model, state)`, models in configuration order, then
    /// prefix families (whose upstream model is empty: it comes from each request).
    pub fn circuit_states(&self) -> Vec<(String, String, CircuitState)> {
        let models = self.inner.model_order.iter().filter_map(|name| self.inner.models.get(name));
        models
            .chain(self.inner.prefixes.iter().map(|(_, model)| model))
            .flat_map(|model| &model.routes)
            .map(|r| (r.provider.name().to_owned(), r.upstream_model.clone(), lock(&r.breaker).state()))
            .collect()
    }

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
