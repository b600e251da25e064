//! The request pipeline: one sequence of steps that every request runs, plain or streamed.
//!
//! `plan` → `admit` → cache lookup → `reserve` → `route` → deliver (`settle` → cache store → `record`).
//! A [`Delivery`] says how the answer reaches the client: [`WholeAnswer`] settles at once, a stream
//! ([`super::stream::Streamed`]) carries its [`PendingSettlement`] until it ends. A new step (a shared rate
//! limit, a semantic cache, a router) goes into [`Gateway::run_steps`], and both paths run it.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use tracing::Instrument;

use super::admission::Admission;
use super::config::{ModelConfig, ModelKind};
use super::endpoint::EndpointSpec;
use super::routing::{Model, RouteTaken};
use super::smart::SemanticPlan;
use super::spend::BudgetHold;
use super::tenant::{RequestContext, Tenant};
use super::{Gateway, Reply, ReplyMeta};
use crate::budget::Reservation;
use crate::error::{Error, Result};
use crate::events::{CacheStatus, Endpoint, Event, RequestEvent, RouterNote};
use crate::keys::{CacheKey, CachePolicy};
use crate::money::{ModelPrice, NanoUsd};
use crate::provider::{Capability, Provider};
use crate::time::nanos_between;
use crate::wire::Usage;

/// Who asked for what, and since when: what every event of one request reports.
#[derive(Debug)]
pub(super) struct RequestInfo {
    pub(super) request_id: String,
    pub(super) tenant: Arc<Tenant>,
    pub(super) key_id: Option<String>,
    /// The public model name as requested.
    pub(super) model: String,
    pub(super) endpoint: Endpoint,
    /// When the request arrived, as a monotonic reading ([`crate::Clock::monotonic_nanos`]).
    pub(super) started_nanos: u64,
    pub(super) stream: bool,
    /// Nanoseconds spent waiting on upstreams so far, failed attempts included. Atomic only so that routing can
    /// add to it through the `&RequestInfo` the steps share; one task updates it.
    pub(super) upstream_nanos: AtomicU64,
    /// The request's `chitty.request` span (debug level, carrying the request id): what happens on its behalf,
    /// after the answer too (a stream's settlement), is logged under it.
    pub(super) span: tracing::Span,
    /// The router that chose the model, and why, when the request named one.
    pub(super) router: Option<RouterNote>,
}

/// How a request reached the pipeline: from the client naming the model, through a router, or on a request's
/// behalf (the semantic cache's and the router's embedding calls).
#[derive(Debug, Clone, Default)]
pub(super) struct Via {
    /// The router that chose the model.
    pub(super) router: Option<RouterNote>,
    /// Whether the caller's model allow-list was already applied (to the router) or does not apply (an
    /// embedding made on the caller's behalf).
    pub(super) vetted: bool,
}

impl Via {
    /// Through `note`'s router, which the caller may use.
    pub(super) fn router(note: RouterNote) -> Via {
        Via { router: Some(note), vetted: true }
    }

    /// On a request's behalf, by the gateway.
    pub(super) fn on_behalf() -> Via {
        Via { router: None, vetted: true }
    }
}

impl RequestInfo {
    /// The router's reason, for the reply's `x-chitty-router`.
    pub(super) fn router_reason(&self) -> Option<Arc<str>> {
        self.router.as_ref().map(|n| Arc::clone(&n.reason))
    }

    /// Counts a wait on upstreams from `since` to `until` (monotonic readings).
    pub(super) fn waited_upstream(&self, since: u64, until: u64) {
        self.upstream_nanos.fetch_add(until.saturating_sub(since), Ordering::Relaxed);
    }
}

impl Clone for RequestInfo {
    fn clone(&self) -> RequestInfo {
        RequestInfo {
            request_id: self.request_id.clone(),
            tenant: Arc::clone(&self.tenant),
            key_id: self.key_id.clone(),
            model: self.model.clone(),
            endpoint: self.endpoint,
            started_nanos: self.started_nanos,
            stream: self.stream,
            upstream_nanos: AtomicU64::new(self.upstream_nanos.load(Ordering::Relaxed)),
            span: self.span.clone(),
            router: self.router.clone(),
        }
    }
}

/// How a request ended, for its event.
pub(super) struct Outcome<'a> {
    pub(super) provider: Option<String>,
    pub(super) cache: CacheStatus,
    pub(super) status: u16,
    pub(super) usage: Option<&'a Usage>,
    pub(super) cost: NanoUsd,
}

/// What the pipeline measured about a request besides its [`Outcome`], for its event.
#[derive(Debug, Default)]
struct Measured {
    /// The error's OpenAI `code`, when the request failed with one.
    error_code: Option<&'static str>,
    /// The route that answered, when one did.
    route_index: Option<usize>,
    /// When a stream's first chunk reached the relay (monotonic).
    first_chunk_at: Option<u64>,
    /// Upstream attempts, failed ones and continuations included.
    attempts: u32,
    /// Stream continuations.
    continuations: u32,
}

/// Where the cache stands for one request.
struct CachePlan {
    /// The entry's key, when the answer may be stored.
    key: Option<CacheKey>,
    /// Whether a stored answer may be served (not under `Cache-Control: no-cache`).
    read: bool,
}

impl CachePlan {
    /// The status a request that reaches the upstream reports.
    fn status(&self) -> CacheStatus {
        if self.key.is_some() && self.read { CacheStatus::Miss } else { CacheStatus::Bypass }
    }
}

/// How an answer reaches the client: whole, or as a stream. The only part of the pipeline that differs.
pub(super) trait Delivery<E: EndpointSpec>: Send + Sync + 'static {
    /// Whether this delivery streams (reported in events).
    const STREAM: bool;
    /// What a route's provider must support.
    const CAPABILITY: Capability;
    /// What the provider call yields.
    type Upstream: Send + 'static;
    /// What the client gets.
    type Output: Send;

    /// Refuses a request this delivery cannot serve.
    fn check(req: &E::Req) -> Result<()>;
    /// Calls `provider` with the request prepared for it.
    fn call(provider: Arc<dyn Provider>, req: E::Req) -> BoxFuture<'static, Result<Self::Upstream>>;
    /// Answers from a cached response, reporting `meta`.
    fn replay(cached: E::Resp, req: &E::Req, meta: ReplyMeta) -> Result<Self::Output>;
    /// The whole answer, for the router's cascade to check; `None` for a stream, already on its way.
    fn answer(output: &Self::Output) -> Option<&E::Resp>;
    /// Answers from the upstream; settles through `pending`, now or when the answer has been delivered.
    fn deliver(
        upstream: Self::Upstream,
        pending: PendingSettlement,
        req: &E::Req,
    ) -> impl Future<Output = Result<Self::Output>> + Send;
}

/// The whole answer at once: settled, cached and recorded before it is returned.
pub(super) struct WholeAnswer;

impl<E: EndpointSpec> Delivery<E> for WholeAnswer {
    const STREAM: bool = false;
    const CAPABILITY: Capability = E::CAPABILITY;
    type Upstream = E::Resp;
    type Output = Reply<E::Resp>;

    fn check(_req: &E::Req) -> Result<()> {
        Ok(())
    }

    fn call(provider: Arc<dyn Provider>, req: E::Req) -> BoxFuture<'static, Result<E::Resp>> {
        E::call(provider, req)
    }

    fn replay(cached: E::Resp, req: &E::Req, meta: ReplyMeta) -> Result<Reply<E::Resp>> {
        Ok(Reply { body: E::for_client(cached, req)?, meta })
    }

    fn answer(output: &Reply<E::Resp>) -> Option<&E::Resp> {
        Some(&output.body)
    }

    async fn deliver(resp: E::Resp, pending: PendingSettlement, req: &E::Req) -> Result<Reply<E::Resp>> {
        let usage = E::usage(&resp);
        let cost = match (&usage, pending.reservation()) {
            (Some(u), _) => pending.price().cost_of_usage(u),
            // No usage reported: charge the reservation, which bounds what the call could cost.
            (None, Some(r)) => r.amount,
            (None, None) => NanoUsd::ZERO,
        };
        let entry = (pending.caches() && E::complete(&resp)).then(|| E::encode(&resp));
        let mut meta = pending.meta();
        meta.cost = pending.complete(cost, usage.as_ref(), entry, 200, None).await;
        Ok(Reply { body: E::for_client(resp, req)?, meta })
    }
}

/// What settling, caching and recording an answered request needs; a stream carries it until it ends.
pub(super) struct PendingSettlement {
    gateway: Gateway,
    info: RequestInfo,
    config: Arc<ModelConfig>,
    /// The route that answered and, for a stream, when its first chunk came.
    provider: RouteTaken,
    hold: BudgetHold,
    admission: Admission,
    cache_key: Option<CacheKey>,
    cache_status: CacheStatus,
    /// Where the answer goes in the semantic cache, when the model has one and the request may use it.
    semantic: Option<SemanticPlan>,
}

impl PendingSettlement {
    /// What the reply reports before the cost is known.
    pub(super) fn meta(&self) -> ReplyMeta {
        ReplyMeta {
            cache: self.cache_status,
            provider: Some(self.provider.name.clone()),
            route: Some(self.provider.route.clone()),
            attempts: self.provider.attempts,
            reserved: self.hold.reserved(),
            cost: NanoUsd::ZERO,
            max_tokens_set: self.hold.cap_set,
            rate_limit: self.admission.status,
            router: self.info.router.as_ref().map(|n| Arc::clone(&n.reason)),
            cache_similarity: None,
        }
    }

    /// The model's prices.
    pub(super) fn price(&self) -> &ModelPrice {
        &self.config.price
    }

    /// The budget reservation, when the tenant has a budget.
    pub(super) fn reservation(&self) -> Option<&Reservation> {
        self.hold.reservation.as_ref()
    }

    /// Whether a complete answer would be stored in the cache (exact or semantic).
    pub(super) fn caches(&self) -> bool {
        self.cache_key.is_some() || self.semantic.is_some()
    }

    /// The gateway, for spawning a settlement off a dropped stream.
    pub(super) fn gateway(&self) -> &Gateway {
        &self.gateway
    }

    /// The provider that answered.
    pub(super) fn provider(&self) -> &str {
        &self.provider.name
    }

    /// Whether a stream has yet to hand its first chunk on.
    pub(super) fn awaits_first_chunk(&self) -> bool {
        self.provider.first_chunk_at.is_none()
    }

    /// The model's configuration.
    pub(super) fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// The public model name as requested.
    pub(super) fn requested_model(&self) -> &str {
        &self.info.model
    }

    /// The route that answered, for a stream continued on another.
    pub(super) fn route_taken_mut(&mut self) -> &mut RouteTaken {
        &mut self.provider
    }

    /// The request's span.
    pub(super) fn span(&self) -> &tracing::Span {
        &self.info.span
    }

    /// A monotonic reading of the gateway's clock.
    pub(super) fn monotonic_nanos(&self) -> u64 {
        self.gateway.inner.clock.monotonic_nanos()
    }

    /// Counts a wait on the upstream from `since` to `until` (monotonic readings); `first_chunk` says whether it
    /// ended with the stream's first chunk.
    pub(super) fn waited_upstream(&mut self, since: u64, until: u64, first_chunk: bool) {
        self.info.waited_upstream(since, until);
        if first_chunk {
            self.provider.first_chunk_at = Some(until);
        }
    }

    /// Settles `cost`, stores `cache_entry` (the complete answer, when there is one) and records the request
    /// with `status` (and the error's `code`, when it ended with one); returns what was charged.
    pub(super) async fn complete(
        self,
        cost: NanoUsd,
        usage: Option<&Usage>,
        cache_entry: Option<std::result::Result<Bytes, String>>,
        status: u16,
        error_code: Option<&'static str>,
    ) -> NanoUsd {
        let gateway = &self.gateway;
        // Without usage the request is taken to have used its whole bound.
        let used = usage.map_or(u64::MAX, |u| u.prompt_tokens.saturating_add(u.completion_tokens));
        // Budget and rate limit are independent stores: settle both at once, one round trip of waiting.
        let (charged, ()) = futures::join!(
            gateway.settle(&self.info, &self.provider.name, self.hold.reservation.as_ref(), cost),
            gateway.refund_tokens(self.info.tenant.id(), &self.admission, used),
        );
        if let (Some(plan), Some(Ok(entry))) = (self.semantic, &cache_entry) {
            gateway.semantic_store(&self.config, plan, entry.clone());
        }
        if let (Some(key), Some(entry)) = (&self.cache_key, cache_entry) {
            gateway.cache_put(key, &self.config, entry).await;
        }
        let RouteTaken { name, index, first_chunk_at, attempts, continuations, .. } = self.provider;
        let measured = Measured { error_code, route_index: Some(index), first_chunk_at, attempts, continuations };
        let outcome = Outcome { provider: Some(name), cache: self.cache_status, status, usage, cost: charged };
        gateway.record_measured(self.info, outcome, measured).await;
        charged
    }
}

impl Gateway {
    /// Runs the pipeline for one request (through its router, when it names one).
    pub(super) async fn execute<E: EndpointSpec, D: Delivery<E>>(
        &self,
        ctx: &RequestContext,
        req: E::Req,
    ) -> Result<D::Output> {
        if let Some(router) = self.router_named(E::model(&req)) {
            // Boxed: the router's state would otherwise make every request's future larger, and futures are
            // moved by value through each layer of the server.
            return Box::pin(self.execute_routed::<E, D>(ctx, req, router)).await;
        }
        self.execute_model::<E, D>(ctx, req, Via::default()).await
    }

    /// Runs the pipeline for one request to a model and records it if it fails before an answer.
    pub(super) async fn execute_model<E: EndpointSpec, D: Delivery<E>>(
        &self,
        ctx: &RequestContext,
        req: E::Req,
        via: Via,
    ) -> Result<D::Output> {
        let model = E::model(&req);
        // Debug level: it costs a level check unless a subscriber (an OpenTelemetry layer, say) wants it.
        let span = tracing::debug_span!(
            "chitty.request",
            request_id = %ctx.request_id,
            tenant = %ctx.tenant.id(),
            model = %model,
            endpoint = E::ENDPOINT.as_str(),
        );
        let info = RequestInfo {
            request_id: ctx.request_id.clone(),
            tenant: Arc::clone(&ctx.tenant),
            key_id: ctx.key_id().map(str::to_owned),
            model: model.to_owned(),
            endpoint: E::ENDPOINT,
            started_nanos: self.inner.clock.monotonic_nanos(),
            stream: D::STREAM,
            upstream_nanos: AtomicU64::new(0),
            span,
            router: via.router,
        };
        let result = self.run_steps::<E, D>(ctx, &req, &info, via.vetted).instrument(info.span.clone()).await;
        if let Err(e) = &result {
            let failed = Outcome {
                provider: None,
                cache: CacheStatus::Bypass,
                status: e.status(),
                usage: None,
                cost: NanoUsd::ZERO,
            };
            self.record_measured(info, failed, Measured { error_code: e.code(), ..Measured::default() }).await;
        }
        result
    }

    /// The steps, in order. Both deliveries run every one of them.
    async fn run_steps<E: EndpointSpec, D: Delivery<E>>(
        &self,
        ctx: &RequestContext,
        req: &E::Req,
        info: &RequestInfo,
        vetted: bool,
    ) -> Result<D::Output> {
        D::check(req)?;
        let (model, cache) = self.plan::<E>(ctx, req, vetted)?;
        let (prompt, cap, generations) = (E::prompt_tokens(req), E::output_cap(req), E::generations(req));
        let bound = u64::from(cap.unwrap_or(model.config.max_output_tokens)) * u64::from(generations.max(1));
        let admission = self.admit(ctx, prompt.saturating_add(bound)).await?;
        if let Some(cached) = self.lookup::<E>(&cache).await {
            // A cached answer spends no upstream tokens.
            self.refund_tokens(ctx.tenant.id(), &admission, 0).await;
            let usage = E::usage(&cached);
            let hit = Outcome {
                provider: None,
                cache: CacheStatus::Hit,
                status: 200,
                usage: usage.as_ref(),
                cost: NanoUsd::ZERO,
            };
            self.record(info.clone(), hit).await;
            let meta = ReplyMeta { rate_limit: admission.status, router: info.router_reason(), ..ReplyMeta::hit() };
            return D::replay(cached, req, meta);
        }
        let semantic = match (model.config.cache, E::as_chat(req)) {
            // Boxed for the same reason: only semantic models pay for its state.
            (CachePolicy::Semantic, Some(chat)) if E::SEMANTIC => {
                Box::pin(self.semantic_plan(ctx, &model.config, chat)).await
            }
            _ => None,
        };
        if let Some(hit) = semantic.as_ref().and_then(|plan| self.semantic_lookup(&model.config, plan)) {
            match E::decode(hit.entry) {
                Ok(cached) => {
                    self.refund_tokens(ctx.tenant.id(), &admission, 0).await;
                    let usage = E::usage(&cached);
                    let outcome = Outcome {
                        provider: None,
                        cache: CacheStatus::Semantic,
                        status: 200,
                        usage: usage.as_ref(),
                        cost: NanoUsd::ZERO,
                    };
                    self.record(info.clone(), outcome).await;
                    let meta = ReplyMeta {
                        cache: CacheStatus::Semantic,
                        cache_similarity: Some(hit.similarity),
                        rate_limit: admission.status,
                        router: info.router_reason(),
                        ..ReplyMeta::hit()
                    };
                    return D::replay(cached, req, meta);
                }
                Err(e) => tracing::warn!(error = %e, "semantic cache entry did not parse; treating as a miss"),
            }
        }
        let hold = match self.reserve(ctx, &model.config, prompt, cap, generations).await {
            Ok(hold) => hold,
            Err(e) => {
                self.refund_tokens(ctx.tenant.id(), &admission, 0).await;
                return Err(e);
            }
        };
        let cap = hold.cap_set.map(|c| (model.config.output_cap_field, c));
        let routed = self
            .route(info, model, D::CAPABILITY, |route| {
                let mut upstream = req.clone();
                E::prepare_upstream(&mut upstream, model.upstream_name(route, E::model(req)), cap);
                D::call(Arc::clone(&route.provider), upstream)
            })
            .await;
        let (answer, provider) = match routed {
            Ok(v) => v,
            Err(e) => {
                self.release(hold.reservation.as_ref()).await;
                self.refund_tokens(ctx.tenant.id(), &admission, 0).await;
                return Err(e);
            }
        };
        let pending = PendingSettlement {
            gateway: self.clone(),
            info: info.clone(),
            config: Arc::clone(&model.config),
            provider,
            hold,
            admission,
            // A semantic lookup that found nothing is a miss, with or without an exact cache.
            cache_status: if semantic.is_some() { CacheStatus::Miss } else { cache.status() },
            cache_key: cache.key,
            semantic,
        };
        D::deliver(answer, pending, req).await
    }

    /// Plan: the model the request names (which the tenant may use and which serves this endpoint), the
    /// request checked against the model's limits, and where the cache stands.
    /// `vetted`: the caller's allow-list was applied before (to the router that chose the model) or does not
    /// apply (a call the gateway makes on the caller's behalf).
    fn plan<E: EndpointSpec>(&self, ctx: &RequestContext, req: &E::Req, vetted: bool) -> Result<(&Model, CachePlan)> {
        let name = E::model(req);
        if name.is_empty() {
            return Err(Error::invalid_request("`model` is required", Some("model")));
        }
        let model = self.find_model(name).ok_or_else(|| Error::ModelNotFound { model: name.to_owned() })?;
        if !vetted && !ctx.may_use(name) {
            return Err(Error::ModelNotAllowed { model: name.to_owned() });
        }
        // Prefix families serve whatever the upstream model is; only named models declare a kind.
        if model.strip_prefix.is_none() && model.config.kind != E::KIND {
            let what = match model.config.kind {
                ModelKind::Chat => "a chat model",
                ModelKind::Embedding => "an embedding model",
            };
            return Err(Error::invalid_request(
                format!("`{name}` is {what} and cannot serve {}", E::ENDPOINT.as_str()),
                Some("model"),
            ));
        }
        E::validate(req, &model.config.limits)?;
        let usable = self.inner.cache.is_some() && E::cacheable(model.config.cache, req) && ctx.cache.may_write();
        let cache = match usable {
            true => CachePlan { key: Some(E::key(ctx.tenant.cache_scope(), req)), read: ctx.cache.may_read() },
            false => CachePlan { key: None, read: false },
        };
        Ok((model, cache))
    }

    /// A cached answer, when the plan allows reading one and a valid entry exists.
    async fn lookup<E: EndpointSpec>(&self, plan: &CachePlan) -> Option<E::Resp> {
        let (Some(key), true, Some(cache)) = (&plan.key, plan.read, &self.inner.cache) else { return None };
        let entry = match cache.get(key).await {
            Ok(entry) => entry?,
            Err(e) => {
                // A failing cache is a miss, never a failed request.
                tracing::warn!(error = %e, "cache lookup failed");
                return None;
            }
        };
        match E::decode(entry) {
            Ok(resp) => Some(resp),
            Err(e) => {
                tracing::warn!(error = %e, "cache entry did not parse; treating as a miss");
                None
            }
        }
    }

    /// Stores a complete answer under the model's TTL; a failing cache only logs.
    async fn cache_put(&self, key: &CacheKey, model: &ModelConfig, entry: std::result::Result<Bytes, String>) {
        let Some(cache) = &self.inner.cache else { return };
        let ttl = Duration::from_secs(model.cache_ttl_secs.unwrap_or(self.inner.defaults.cache_ttl_secs));
        match entry {
            Ok(bytes) => {
                if let Err(e) = cache.put(key, bytes, ttl).await {
                    tracing::warn!(error = %e, "cache store failed");
                }
            }
            Err(e) => tracing::warn!(error = %e, "cache entry did not serialize"),
        }
    }

    /// Record: the request's event, taking `info`'s strings rather than copying them.
    async fn record(&self, info: RequestInfo, outcome: Outcome<'_>) {
        self.record_measured(info, outcome, Measured::default()).await;
    }

    /// [`Gateway::record`] with what was measured along the way: the error code, the route, the time spent
    /// waiting on upstreams and, for a stream, when its first chunk came.
    async fn record_measured(&self, info: RequestInfo, outcome: Outcome<'_>, measured: Measured) {
        let now = self.now();
        let latency = nanos_between(info.started_nanos, self.inner.clock.monotonic_nanos());
        let upstream = std::time::Duration::from_nanos(info.upstream_nanos.load(Ordering::Relaxed));
        let (time_to_first_token, overhead) = match measured.first_chunk_at {
            Some(at) => {
                let ttft = nanos_between(info.started_nanos, at);
                (Some(ttft), ttft.saturating_sub(upstream))
            }
            // A stream replayed from the cache is ready in full when its reply is.
            None if info.stream && outcome.cache == CacheStatus::Hit => (Some(latency), latency),
            None => (None, latency.saturating_sub(upstream)),
        };
        let event = Event::Request(RequestEvent {
            at: now,
            request_id: info.request_id,
            tenant: info.tenant.id().to_owned(),
            key_id: info.key_id,
            model: info.model,
            endpoint: info.endpoint,
            provider: outcome.provider,
            cache: outcome.cache,
            status: outcome.status,
            latency,
            prompt_tokens: outcome.usage.map_or(0, |u| u.prompt_tokens),
            completion_tokens: outcome.usage.map_or(0, |u| u.completion_tokens),
            cost: outcome.cost,
            stream: info.stream,
            error_code: measured.error_code,
            route_index: measured.route_index,
            time_to_first_token,
            overhead,
            attempts: measured.attempts,
            continuations: measured.continuations,
            router: info.router,
        });
        self.emit(event).await;
    }

    /// Hands an event to the sink; a refusing sink only logs.
    pub(super) async fn emit(&self, event: Event) {
        if let Err(e) = self.inner.events.record(event).await {
            tracing::warn!(error = %e, "event sink refused an event");
        }
    }
}
