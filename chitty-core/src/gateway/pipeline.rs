//! The request pipeline: one sequence of steps that every request runs, plain or streamed.
//!
//! `plan` → `admit` → cache lookup → `reserve` → `route` → deliver (`settle` → cache store → `record`).
//! A [`Delivery`] says how the answer reaches the client: [`WholeAnswer`] settles at once, a stream
//! ([`super::stream::Streamed`]) carries its [`PendingSettlement`] until it ends. A new step (a shared rate
//! limit, a semantic cache, a router) goes into [`Gateway::run_steps`], and both paths run it.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;

use super::admission::Admission;
use super::config::{ModelConfig, ModelKind};
use super::endpoint::EndpointSpec;
use super::routing::Model;
use super::spend::BudgetHold;
use super::tenant::{RequestContext, Tenant};
use super::{Gateway, Reply, ReplyMeta};
use crate::budget::Reservation;
use crate::error::{Error, Result};
use crate::events::{CacheStatus, Endpoint, Event, RequestEvent};
use crate::keys::CacheKey;
use crate::money::{ModelPrice, NanoUsd};
use crate::provider::{Capability, Provider};
use crate::time::Timestamp;
use crate::wire::Usage;

/// Who asked for what, and since when: what every event of one request reports.
#[derive(Debug, Clone)]
pub(super) struct RequestInfo {
    pub(super) request_id: String,
    pub(super) tenant: Arc<Tenant>,
    pub(super) key_id: Option<String>,
    /// The public model name as requested.
    pub(super) model: String,
    pub(super) endpoint: Endpoint,
    pub(super) started: Timestamp,
    pub(super) stream: bool,
}

/// How a request ended, for its event.
pub(super) struct Outcome<'a> {
    pub(super) provider: Option<String>,
    pub(super) cache: CacheStatus,
    pub(super) status: u16,
    pub(super) usage: Option<&'a Usage>,
    pub(super) cost: NanoUsd,
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
        meta.cost = pending.complete(cost, usage.as_ref(), entry, 200).await;
        Ok(Reply { body: E::for_client(resp, req)?, meta })
    }
}

/// What settling, caching and recording an answered request needs; a stream carries it until it ends.
pub(super) struct PendingSettlement {
    gateway: Gateway,
    info: RequestInfo,
    config: Arc<ModelConfig>,
    provider: String,
    hold: BudgetHold,
    admission: Admission,
    cache_key: Option<CacheKey>,
    cache_status: CacheStatus,
}

impl PendingSettlement {
    /// What the reply reports before the cost is known.
    pub(super) fn meta(&self) -> ReplyMeta {
        ReplyMeta {
            cache: self.cache_status,
            provider: Some(self.provider.clone()),
            reserved: self.hold.reserved(),
            cost: NanoUsd::ZERO,
            max_tokens_set: self.hold.cap_set,
            rate_limit: self.admission.status,
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

    /// Whether a complete answer would be stored in the cache.
    pub(super) fn caches(&self) -> bool {
        self.cache_key.is_some()
    }

    /// The gateway, for spawning a settlement off a dropped stream.
    pub(super) fn gateway(&self) -> &Gateway {
        &self.gateway
    }

    /// The provider that answered.
    pub(super) fn provider(&self) -> &str {
        &self.provider
    }

    /// Settles `cost`, stores `cache_entry` (the complete answer, when there is one) and records the request
    /// with `status`; returns what was charged.
    pub(super) async fn complete(
        self,
        cost: NanoUsd,
        usage: Option<&Usage>,
        cache_entry: Option<std::result::Result<Bytes, String>>,
        status: u16,
    ) -> NanoUsd {
        let gateway = &self.gateway;
        let charged = gateway.settle(&self.info, &self.provider, self.hold.reservation.as_ref(), cost).await;
        // Without usage the request is taken to have used its whole bound.
        let used = usage.map_or(u64::MAX, |u| u.prompt_tokens.saturating_add(u.completion_tokens));
        gateway.refund_tokens(self.info.tenant.id(), &self.admission, used).await;
        if let (Some(key), Some(entry)) = (&self.cache_key, cache_entry) {
            gateway.cache_put(key, &self.config, entry).await;
        }
        let outcome = Outcome { provider: Some(self.provider), cache: self.cache_status, status, usage, cost: charged };
        gateway.record(self.info, outcome).await;
        charged
    }
}

impl Gateway {
    /// Runs the pipeline for one request and records it if it fails before an answer.
    pub(super) async fn execute<E: EndpointSpec, D: Delivery<E>>(
        &self,
        ctx: &RequestContext,
        req: E::Req,
    ) -> Result<D::Output> {
        let info = RequestInfo {
            request_id: ctx.request_id.clone(),
            tenant: Arc::clone(&ctx.tenant),
            key_id: ctx.key_id().map(str::to_owned),
            model: E::model(&req).to_owned(),
            endpoint: E::ENDPOINT,
            started: self.now(),
            stream: D::STREAM,
        };
        let result = self.run_steps::<E, D>(ctx, &req, &info).await;
        if let Err(e) = &result {
            let failed = Outcome {
                provider: None,
                cache: CacheStatus::Bypass,
                status: e.status(),
                usage: None,
                cost: NanoUsd::ZERO,
            };
            self.record(info, failed).await;
        }
        result
    }

    /// The steps, in order. Both deliveries run every one of them.
    async fn run_steps<E: EndpointSpec, D: Delivery<E>>(
        &self,
        ctx: &RequestContext,
        req: &E::Req,
        info: &RequestInfo,
    ) -> Result<D::Output> {
        D::check(req)?;
        let (model, cache) = self.plan::<E>(ctx, req)?;
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
            return D::replay(cached, req, ReplyMeta { rate_limit: admission.status, ..ReplyMeta::hit() });
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
            .route(model, D::CAPABILITY, |route| {
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
            cache_status: cache.status(),
            cache_key: cache.key,
        };
        D::deliver(answer, pending, req).await
    }

    /// Plan: the model the request names (which the tenant may use and which serves this endpoint), the
    /// request checked against the model's limits, and where the cache stands.
    fn plan<E: EndpointSpec>(&self, ctx: &RequestContext, req: &E::Req) -> Result<(&Model, CachePlan)> {
        let name = E::model(req);
        if name.is_empty() {
            return Err(Error::invalid_request("`model` is required", Some("model")));
        }
        let model = self.find_model(name).ok_or_else(|| Error::ModelNotFound { model: name.to_owned() })?;
        if !ctx.may_use(name) {
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
        let now = self.now();
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
            latency: now.since(info.started),
            prompt_tokens: outcome.usage.map_or(0, |u| u.prompt_tokens),
            completion_tokens: outcome.usage.map_or(0, |u| u.completion_tokens),
            cost: outcome.cost,
            stream: info.stream,
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
