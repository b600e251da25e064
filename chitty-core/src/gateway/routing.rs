//! Routing: which model a request names, and which of its routes answers — in balanced order, each retried
//! with full-jitter backoff while its deployment's retry budget allows, each attempt under the timeout
//! shortened to the request's deadline, skipping routes whose circuit is open. A broken stream of a model
//! with `continue_streams` is continued on the next route ([`Gateway::continue_on`]).

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
use crate::retry::{FullJitter, RetryBudget, RetryDecision, RetryPolicy, attempt_timeout};
use crate::time::nanos_between;

/// A route's health: its circuit breaker and its retry budget, kept under one lock so that a request costs
/// one acquisition per attempt.
#[derive(Debug)]
pub(super) struct RouteHealth {
    pub(super) breaker: CircuitBreaker,
    pub(super) retries: RetryBudget,
}

/// One upstream deployment of a model, with its circuit breaker and retry budget.
pub(super) struct Route {
    pub(super) provider: Arc<dyn Provider>,
    pub(super) upstream_model: String,
    pub(super) health: Mutex<RouteHealth>,
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

    /// The route at `position` of `order` (an empty order is the listed one).
    fn route_at(&self, order: &[usize], position: usize) -> Option<(usize, &Route)> {
        let index = if order.is_empty() { position } else { *order.get(position)? };
        self.routes.get(index).map(|r| (index, r))
    }
}

/// How long an attempt may take, and whether that is the request's deadline rather than the attempt timeout.
#[derive(Debug, Clone, Copy)]
struct AttemptLimit {
    timeout: Duration,
    /// Set when the deadline shortened the timeout: what the request's deadline was.
    deadline: Option<Duration>,
}

impl Gateway {
    /// The model named `name`: a configured model, or else the prefix family it belongs to.
    pub(super) fn find_model(&self, name: &str) -> Option<&Model> {
        self.inner.models.get(name).or_else(|| {
            let family = self.inner.prefixes.iter().find(|(p, _)| name.len() > p.len() && name.starts_with(p.as_str()));
            family.map(|(_, model)| model)
        })
    }

    /// The retry policy every route follows.
    fn retry_policy(&self) -> RetryPolicy {
        let d = &self.inner.defaults;
        RetryPolicy {
            max_attempts: d.attempts_per_route.max(1),
            jitter: FullJitter::new(Duration::from_millis(d.backoff_base_ms), Duration::from_millis(d.backoff_max_ms)),
        }
    }

    /// Tries the model's routes in balanced order: each up to `attempts_per_route` times while its retry budget
    /// allows, skipping open circuits, each attempt bounded by the timeout and the request's deadline. Errors a
    /// retry cannot fix (a 4xx, a malformed answer) return at once; so does the deadline, as
    /// [`Error::DeadlineExceeded`]. Moving on to the next route is reported as [`Event::Fallback`], retry
    /// decisions as [`Event::Retry`], breaker changes as [`Event::CircuitChanged`]; the time spent waiting on
    /// upstreams is added to `info`.
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
        let policy = self.retry_policy();
        let span = model.config.deadline_ms.map_or_else(|| defaults.deadline(), Duration::from_millis);
        // The deadline runs from the request's arrival, not from here.
        let deadline = self.now().plus(span.saturating_sub(nanos_between(info.started_nanos, clock.monotonic_nanos())));
        let late = || Error::DeadlineExceeded { model: model.config.name.clone(), deadline: span };
        let mut last_error: Option<Error> = None;
        let mut skipped = Vec::new();
        // The first route given up on since the last fallback was reported.
        let mut left: Option<&Route> = None;
        let mut attempts_made = 0u32;
        // Whether a retry was refused for want of time: if nothing answers after it, the deadline is the cause.
        let mut out_of_time = false;
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
            let Some((index, route)) = model.route_at(&order, position) else { continue };
            let name = route.provider.name();
            if !route.provider.capabilities().contains(capability) {
                skipped.push(format!("{name}: does not support {capability}"));
                continue;
            }
            let mut tries = 0u32;
            loop {
                let now = self.now();
                if now >= deadline {
                    return Err(late());
                }
                let first = tries == 0;
                let (admission, changed) = health_step(route, |h| {
                    let admission = h.breaker.admit(now);
                    // Every request a deployment takes earns its budget a share of a retry.
                    if first && !matches!(admission, Admission::Rejected { .. }) {
                        h.retries.record_request(now);
                    }
                    admission
                });
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
                let timeout = attempt_timeout(defaults.timeout(), now, deadline);
                let limit = AttemptLimit { timeout, deadline: (timeout < defaults.timeout()).then_some(span) };
                let call = attempt(route);
                let before = clock.monotonic_nanos();
                attempts_made += 1;
                tries += 1;
                let in_flight = route.outstanding.start();
                let result = self.attempt(name, &model.config.name, call, limit).await;
                drop(in_flight);
                // Attempts and backoff are upstream time, kept apart from the gateway's own.
                info.waited_upstream(before, clock.monotonic_nanos());
                let e = match result {
                    Ok(v) => {
                        let ((), changed) = health_step(route, |h| h.breaker.on_success());
                        self.circuit_changed(route, changed).await;
                        let taken = RouteTaken {
                            name: name.to_owned(),
                            route: format!("{name}/{}", model.upstream_name(route, &info.model)),
                            index,
                            attempts: attempts_made,
                            first_chunk_at: None,
                            order,
                            position,
                            continuations: 0,
                        };
                        return Ok((v, taken));
                    }
                    // The deadline cut the attempt short: not the route's fault, and nothing more may start.
                    Err(e @ Error::DeadlineExceeded { .. }) => return Err(e),
                    Err(e) if !e.is_retryable() => {
                        // The route answered: the request (or the answer) is at fault, not the route's health.
                        if admission == Admission::Probe {
                            let ((), changed) = health_step(route, |h| h.breaker.on_success());
                            self.circuit_changed(route, changed).await;
                        }
                        return Err(e);
                    }
                    Err(e) => e,
                };
                let opened = self.route_failed(route, &model.config.name, &e).await;
                let hint = e.retry_after();
                last_error = Some(e);
                if opened {
                    left.get_or_insert(route);
                    break;
                }
                let now = self.now();
                let random = self.inner.random.as_ref();
                let (decision, _) =
                    health_step(route, |h| policy.decide(tries, now, deadline, hint, &mut h.retries, random));
                out_of_time |=
                    decision == RetryDecision::DeadlineExceeded && hint.is_none_or(|h| h <= policy.jitter.cap);
                if decision != RetryDecision::AttemptsExhausted {
                    let (provider, model) = (name.to_owned(), model.config.name.clone());
                    self.emit(Event::Retry { provider, model, outcome: decision.label() }).await;
                }
                let RetryDecision::RetryAfter(wait) = decision else {
                    // Out of attempts, of budget or of time for this route: the next route may still answer.
                    left.get_or_insert(route);
                    break;
                };
                let before = clock.monotonic_nanos();
                self.inner.timer.sleep(wait).await;
                info.waited_upstream(before, clock.monotonic_nanos());
            }
        }
        if last_error.is_some() && (out_of_time || self.now() >= deadline) {
            return Err(late());
        }
        Err(last_error
            .unwrap_or_else(|| Error::Unavailable { model: model.config.name.clone(), reason: skipped.join("; ") }))
    }

    /// Opens a continuation of a stream that broke on `taken`'s route: the routes after it in the request's
    /// attempt order, then those before it, then the same route again; one attempt each, under the attempt
    /// timeout (the request's deadline bounded its first chunk, not its length). Moving to another route counts
    /// as a request on its retry budget; going back to the same one takes a retry from it. On success `taken`
    /// names the route that continued.
    pub(super) async fn continue_on<T, F>(
        &self,
        requested: &str,
        taken: &mut RouteTaken,
        capability: Capability,
        mut attempt: F,
    ) -> Result<T>
    where
        F: FnMut(&Route, &str) -> BoxFuture<'static, Result<T>>,
    {
        let model = self.find_model(requested).ok_or_else(|| Error::ModelNotFound { model: requested.to_owned() })?;
        let count = if taken.order.is_empty() { model.routes.len() } else { taken.order.len() };
        let limit = AttemptLimit { timeout: self.inner.defaults.timeout(), deadline: None };
        let mut last_error = None;
        for step in 1..=count {
            let position = (taken.position + step) % count.max(1);
            let Some((index, route)) = model.route_at(&taken.order, position) else { continue };
            let name = route.provider.name();
            if !route.provider.capabilities().contains(capability) {
                continue;
            }
            let now = self.now();
            let same = index == taken.index;
            let ((admission, granted), changed) = health_step(route, |h| {
                let admission = h.breaker.admit(now);
                let granted = match admission {
                    Admission::Rejected { .. } => false,
                    _ if same => h.retries.try_withdraw(now),
                    _ => {
                        h.retries.record_request(now);
                        true
                    }
                };
                (admission, granted)
            });
            self.circuit_changed(route, changed).await;
            if !granted {
                if !matches!(admission, Admission::Rejected { .. }) {
                    let outcome = RetryDecision::BudgetExhausted.label();
                    let (provider, model) = (name.to_owned(), model.config.name.clone());
                    self.emit(Event::Retry { provider, model, outcome }).await;
                }
                continue;
            }
            taken.attempts += 1;
            let call = attempt(route, model.upstream_name(route, requested));
            let in_flight = route.outstanding.start();
            let result = self.attempt(name, &model.config.name, call, limit).await;
            drop(in_flight);
            match result {
                Ok(v) => {
                    let ((), changed) = health_step(route, |h| h.breaker.on_success());
                    self.circuit_changed(route, changed).await;
                    taken.name = name.to_owned();
                    taken.route = format!("{name}/{}", model.upstream_name(route, requested));
                    (taken.index, taken.position) = (index, position);
                    return Ok(v);
                }
                Err(e) if e.is_retryable() => {
                    self.route_failed(route, &model.config.name, &e).await;
                    last_error = Some(e);
                }
                Err(e) => {
                    // The route answered (refusing the continuation, say): its health is not in question.
                    if admission == Admission::Probe {
                        let ((), changed) = health_step(route, |h| h.breaker.on_success());
                        self.circuit_changed(route, changed).await;
                    }
                    last_error = Some(e);
                }
            }
        }
        Err(last_error.unwrap_or_else(|| Error::Unavailable {
            model: model.config.name.clone(),
            reason: "no route could continue the stream".to_owned(),
        }))
    }

    /// Reports a breaker's change of state, if it changed.
    async fn circuit_changed(&self, route: &Route, changed: Option<CircuitState>) {
        if let Some(state) = changed {
            let (provider, model) = (route.provider.name().to_owned(), route.upstream_model.clone());
            self.emit(Event::CircuitChanged { provider, model, state }).await;
        }
    }

    /// One attempt under `limit`: past its timeout, [`Error::UpstreamTimeout`], or [`Error::DeadlineExceeded`]
    /// when the request's deadline had shortened it.
    async fn attempt<T>(
        &self,
        provider: &str,
        model: &str,
        mut call: BoxFuture<'static, Result<T>>,
        limit: AttemptLimit,
    ) -> Result<T> {
        // In-process providers often answer on the first poll: arm the timeout timer only if needed.
        if let std::task::Poll::Ready(r) = futures::poll!(&mut call) {
            return r;
        }
        let expired = || match limit.deadline {
            Some(deadline) => Error::DeadlineExceeded { model: model.to_owned(), deadline },
            None => Error::UpstreamTimeout { provider: provider.to_owned(), timeout: limit.timeout },
        };
        if limit.timeout.is_zero() {
            return Err(expired());
        }
        match futures::future::select(call, self.inner.timer.sleep(limit.timeout)).await {
            Either::Left((r, _)) => r,
            Either::Right(((), _)) => Err(expired()),
        }
    }

    /// Counts a retryable failure against the route's breaker and reports it; whether the circuit opened.
    async fn route_failed(&self, route: &Route, model: &str, error: &Error) -> bool {
        let name = route.provider.name();
        let now = self.now();
        let (opened, changed) = health_step(route, |h| h.breaker.on_failure(now));
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
    /// Upstream attempts the request made, failed ones and continuations included.
    pub(super) attempts: u32,
    /// The route's position among its model's routes: 0 is the primary.
    pub(super) index: usize,
    /// When a stream's first chunk reached the gateway (monotonic); set by the stream relay.
    pub(super) first_chunk_at: Option<u64>,
    /// The request's attempt order (empty: the listed order), where a continuation looks for the next route.
    pub(super) order: Vec<usize>,
    /// The route's position in `order`.
    pub(super) position: usize,
    /// Times the stream was continued on another attempt.
    pub(super) continuations: u32,
}

/// Runs `step` on the route's breaker and retry budget; also returns the breaker's new state if it changed.
fn health_step<R>(route: &Route, step: impl FnOnce(&mut RouteHealth) -> R) -> (R, Option<CircuitState>) {
    let mut health = lock(&route.health);
    let before = health.breaker.state();
    let result = step(&mut health);
    let after = health.breaker.state();
    (result, (after != before).then_some(after))
}

/// A route as fallback events name it: `provider/upstream-model`. Only built when a request falls back.
pub(super) fn route_label(route: &Route) -> String {
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
            .map(|r| (r.provider.name().to_owned(), r.upstream_model.clone(), lock(&r.health).breaker.state()))
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
            if !model.routes.iter().any(|r| lock(&r.health).breaker.is_closed()) {
                failing.push(format!("model `{name}`: every route's circuit is open"));
            }
        }
        for (prefix, model) in &self.inner.prefixes {
            if !model.routes.iter().any(|r| lock(&r.health).breaker.is_closed()) {
                failing.push(format!("models `{prefix}*`: the route's circuit is open"));
            }
        }
        Readiness { failing }
    }
}
