//! The gateway: `authenticate → resolve model → rate limit → cache lookup → reserve budget → route (primary,
//! fallbacks, retries, timeouts, circuit breakers) → provider call → settle → cache store → events`.
//!
//! [`Gateway`] decides; the traits act. It is built from trait objects, a [`GatewayConfig`] and an injected
//! clock, timer and spawner, and holds no I/O of its own, so every decision can be tested with virtual time.
//! The HTTP server in chitty-providers is a thin adapter over it.
//!
//! ```
//! # futures::executor::block_on(async {
//! use std::sync::Arc;
//! use chitty_core::gateway::{Gateway, GatewayConfig, ModelConfig, RouteConfig, TenantConfig, RequestContext, api_key_digest};
//! use chitty_core::keys::CacheDirective;
//! use chitty_core::wire::{ChatCompletionRequest, ChatMessage};
//! # use chitty_core::*;
//! # #[derive(Debug)] struct Echo;
//! # #[async_trait::async_trait] impl Provider for Echo {
//! #   fn name(&self) -> &str { "echo" }
//! #   fn capabilities(&self) -> Capabilities { Capabilities::of(&[Capability::Chat]) }
//! #   async fn chat(&self, r: wire::ChatCompletionRequest) -> Result<wire::ChatCompletionResponse> {
//! #     Ok(serde_json::from_value(serde_json::json!({"id": "1", "object": "chat.completion", "created": 0,
//! #       "model": r.model, "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"},
//! #       "finish_reason": "stop"}], "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}})).unwrap())
//! #   }
//! # }
//! # #[derive(Debug)] struct NoSpawn;
//! # impl Spawner for NoSpawn { fn spawn(&self, f: futures::future::BoxFuture<'static, ()>) { drop(f) } }
//! let config = GatewayConfig {
//!     models: vec![ModelConfig {
//!         name: "small".into(),
//!         routes: vec![RouteConfig { provider: "echo".into(), model: "echo-1".into() }],
//!         ..ModelConfig::new("small")
//!     }],
//!     tenants: vec![TenantConfig::new("acme", &api_key_digest("sk-acme"))],
//!     ..Default::default()
//! };
//! let clock = ManualClock::new(Timestamp(0));
//! let gateway = Gateway::builder(config)
//!     .provider(Arc::new(Echo))
//!     .runtime(Arc::new(clock.clone()), Arc::new(ManualTimer::new(clock)), Arc::new(NoSpawn))
//!     .build()
//!     .await?;
//! let tenant = gateway.authenticate("sk-acme")?;
//! let ctx = RequestContext::new(tenant, "req-1", CacheDirective::Default);
//! let request = ChatCompletionRequest { model: "small".into(), messages: vec![ChatMessage::user("hello")], ..Default::default() };
//! let reply = gateway.chat(&ctx, request).await?;
//! assert_eq!(reply.body.choices[0].message.text_content(), "hi");
//! # Ok::<(), Error>(())
//! # }).unwrap();
//! ```

mod breaker;
mod config;
mod ops;
mod ratelimit;
mod stream;

pub use breaker::{Admission, CircuitBreaker};
pub use config::{
    Defaults, GatewayConfig, ModelConfig, ModelKind, OutputCapField, PrefixConfig, RequestLimits, RouteConfig,
    TenantConfig, api_key_digest,
};
pub use ratelimit::TokenBucket;
pub use stream::StreamReply;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use futures::future::{BoxFuture, Either};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::budget::{BudgetStore, Reservation, ReserveRequest, Settlement};
use crate::cache::Cache;
use crate::error::{Error, Result};
use crate::events::{CacheStatus, DiscardSink, Endpoint, Event, EventSink, RequestEvent};
use crate::keys::{CacheDirective, CacheKey, CacheScope};
use crate::money::NanoUsd;
use crate::provider::{Capability, Provider};
use crate::time::{Clock, Spawner, Timer, Timestamp};
use crate::wire::{
    ChatCompletionJson, ChatCompletionRequest, ChatCompletionResponse, CompletionRequest, CompletionResponse,
    EmbeddingRequest, EmbeddingResponse, Extra, ModelList, ModelObject, Usage,
};
use ops::{ChatOp, CompletionOp, EmbeddingOp, Op, TypedChatOp};

/// Locks a mutex whose data stays consistent even if a holder panicked (counters and small state machines).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// An authenticated tenant.
pub struct Tenant {
    id: String,
    budget: Option<NanoUsd>,
    allowed: Option<HashSet<String>>,
    limiter: Option<Mutex<TokenBucket>>,
    cache_group: Option<String>,
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

    fn cache_scope(&self) -> CacheScope<'_> {
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

/// What the gateway did for a request, for response headers and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyMeta {
    /// Cache outcome.
    pub cache: CacheStatus,
    /// Provider that answered (none on a cache hit).
    pub provider: Option<String>,
    /// Amount reserved before the call.
    pub reserved: NanoUsd,
    /// Amount charged (for streams: known when the stream ends; zero here).
    pub cost: NanoUsd,
    /// The output cap the gateway set because the client sent none and the budget bounds it.
    pub max_tokens_set: Option<u32>,
}

impl ReplyMeta {
    /// What a cache hit reports: no provider, nothing reserved or charged.
    pub fn hit() -> ReplyMeta {
        ReplyMeta {
            cache: CacheStatus::Hit,
            provider: None,
            reserved: NanoUsd::ZERO,
            cost: NanoUsd::ZERO,
            max_tokens_set: None,
        }
    }
}

/// A response and what the gateway did to get it.
#[derive(Debug, Clone)]
pub struct Reply<T> {
    /// The response body.
    pub body: T,
    /// Cache, cost and routing details.
    pub meta: ReplyMeta,
}

struct Route {
    provider: Arc<dyn Provider>,
    upstream_model: String,
    breaker: Mutex<CircuitBreaker>,
}

struct Model {
    config: Arc<ModelConfig>,
    routes: Vec<Route>,
    /// For prefix families: the prefix length to strip from the requested name to get the upstream name.
    strip_prefix: Option<usize>,
}

impl Model {
    /// The name to send upstream on `route` for the requested public name.
    fn upstream_name<'a>(&self, route: &'a Route, requested: &'a str) -> &'a str {
        match self.strip_prefix {
            Some(n) => requested.get(n..).unwrap_or(requested),
            None => &route.upstream_model,
        }
    }
}

struct Inner {
    models: HashMap<String, Model>,
    prefixes: Vec<(String, Model)>,
    model_order: Vec<String>,
    tenants: HashMap<[u8; 32], Arc<Tenant>>,
    cache: Option<Arc<dyn Cache>>,
    budgets: Option<Arc<dyn BudgetStore>>,
    events: Arc<dyn EventSink>,
    clock: Arc<dyn Clock>,
    timer: Arc<dyn Timer>,
    spawner: Arc<dyn Spawner>,
    defaults: Defaults,
}

/// The gateway. Cheap to clone (an `Arc` inside).
#[derive(Clone)]
pub struct Gateway {
    inner: Arc<Inner>,
}

impl fmt::Debug for Gateway {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gateway")
            .field("models", &self.inner.model_order)
            .field("tenants", &self.inner.tenants.len())
            .field("cache", &self.inner.cache)
            .field("budgets", &self.inner.budgets)
            .finish_non_exhaustive()
    }
}

/// Builds a [`Gateway`].
#[must_use]
pub struct GatewayBuilder {
    config: GatewayConfig,
    providers: HashMap<String, Arc<dyn Provider>>,
    cache: Option<Arc<dyn Cache>>,
    budgets: Option<Arc<dyn BudgetStore>>,
    events: Option<Arc<dyn EventSink>>,
    runtime: Option<Runtime>,
}

/// The injected clock, timer and spawner.
type Runtime = (Arc<dyn Clock>, Arc<dyn Timer>, Arc<dyn Spawner>);

impl fmt::Debug for GatewayBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GatewayBuilder").field("providers", &self.providers.keys()).finish_non_exhaustive()
    }
}

fn config_error(reason: String) -> Error {
    Error::InvalidInput { what: "gateway configuration".into(), reason }
}

impl GatewayBuilder {
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

    /// Validates the configuration, pushes tenant limits into the budget store and builds the gateway.
    pub async fn build(self) -> Result<Gateway> {
        let (clock, timer, spawner) =
            self.runtime.ok_or_else(|| config_error("no runtime: call GatewayBuilder::runtime".into()))?;
        let d = self.config.defaults.clone();
        let mut models = HashMap::new();
        let mut model_order = Vec::new();
        for m in self.config.models {
            if m.routes.is_empty() {
                return Err(config_error(format!("model `{}` has no routes", m.name)));
            }
            let mut routes = Vec::new();
            for r in &m.routes {
                let provider = self.providers.get(&r.provider).ok_or_else(|| {
                    config_error(format!("model `{}` routes to unknown provider `{}`", m.name, r.provider))
                })?;
                routes.push(Route {
                    provider: provider.clone(),
                    upstream_model: r.model.clone(),
                    breaker: Mutex::new(CircuitBreaker::new(
                        d.breaker_failures,
                        Duration::from_millis(d.breaker_open_ms),
                    )),
                });
            }
            model_order.push(m.name.clone());
            let name = m.name.clone();
            if models.insert(name.clone(), Model { config: Arc::new(m), routes, strip_prefix: None }).is_some() {
                return Err(config_error(format!("model `{name}` is defined twice")));
            }
        }
        let mut prefixes = Vec::new();
        for p in self.config.prefixes {
            if p.prefix.is_empty() {
                return Err(config_error("a prefix model family needs a non-empty prefix".into()));
            }
            let provider = self.providers.get(&p.provider).ok_or_else(|| {
                config_error(format!("prefix `{}` routes to unknown provider `{}`", p.prefix, p.provider))
            })?;
            let config = ModelConfig {
                routes: vec![RouteConfig { provider: p.provider.clone(), model: String::new() }],
                price: p.price,
                cache: p.cache,
                max_output_tokens: p.max_output_tokens,
                output_cap_field: p.output_cap_field,
                limits: p.limits,
                ..ModelConfig::new(format!("{}*", p.prefix))
            };
            let route = Route {
                provider: provider.clone(),
                upstream_model: String::new(),
                breaker: Mutex::new(CircuitBreaker::new(d.breaker_failures, Duration::from_millis(d.breaker_open_ms))),
            };
            let strip = Some(p.prefix.len());
            prefixes.push((p.prefix, Model { config: Arc::new(config), routes: vec![route], strip_prefix: strip }));
        }
        let mut tenants = HashMap::new();
        let mut ids = HashSet::new();
        for t in self.config.tenants {
            if !ids.insert(t.id.clone()) {
                return Err(config_error(format!("tenant `{}` is defined twice", t.id)));
            }
            if let Some(allowed) = &t.allowed_models
                && let Some(unknown) = allowed.iter().find(|m| {
                    !models.contains_key(*m)
                        && !m.strip_suffix('*').is_some_and(|p| prefixes.iter().any(|(prefix, _)| prefix == p))
                })
            {
                return Err(config_error(format!("tenant `{}` allows unknown model `{unknown}`", t.id)));
            }
            if t.budget_nano_usd.is_some() && self.budgets.is_none() {
                return Err(config_error(format!("tenant `{}` has a budget but no budget store is configured", t.id)));
            }
            let tenant = Arc::new(Tenant {
                id: t.id.clone(),
                budget: t.budget_nano_usd,
                allowed: t.allowed_models.map(|v| v.into_iter().collect()),
                limiter: t
                    .requests_per_minute
                    .map(|rpm| Mutex::new(TokenBucket::new(rpm, t.burst.unwrap_or((rpm / 6).max(1))))),
                cache_group: t.cache_group,
            });
            if t.key_sha256.is_empty() {
                return Err(config_error(format!("tenant `{}` has no API key digest", t.id)));
            }
            for hex_digest in &t.key_sha256 {
                let mut digest = [0u8; 32];
                hex::decode_to_slice(hex_digest.trim(), &mut digest)
                    .map_err(|_| config_error(format!("tenant `{}`: key_sha256 must be 64 hex characters", t.id)))?;
                if tenants.insert(digest, tenant.clone()).is_some() {
                    return Err(config_error(format!("tenant `{}` reuses another tenant's key", t.id)));
                }
            }
        }
        if let Some(store) = &self.budgets {
            let mut seen = HashSet::new();
            for t in tenants.values() {
                if let (Some(limit), true) = (t.budget, seen.insert(t.id.clone())) {
                    store.set_limit(&t.id, limit).await?;
                }
            }
        }
        Ok(Gateway {
            inner: Arc::new(Inner {
                models,
                prefixes,
                model_order,
                tenants,
                cache: self.cache,
                budgets: self.budgets,
                events: self.events.unwrap_or_else(|| Arc::new(DiscardSink)),
                clock,
                timer,
                spawner,
                defaults: d,
            }),
        })
    }
}

impl ModelConfig {
    /// A chat model named `name` with no routes yet and default settings.
    pub fn new(name: impl Into<String>) -> ModelConfig {
        ModelConfig {
            name: name.into(),
            kind: ModelKind::Chat,
            routes: Vec::new(),
            price: Default::default(),
            cache: Default::default(),
            cache_ttl_secs: None,
            max_output_tokens: 4_096,
            output_cap_field: OutputCapField::MaxTokens,
            limits: RequestLimits::default(),
        }
    }
}

impl TenantConfig {
    /// A tenant with one key digest, no budget, no rate limit and access to every model.
    pub fn new(id: impl Into<String>, key_sha256: &str) -> TenantConfig {
        TenantConfig {
            id: id.into(),
            key_sha256: vec![key_sha256.to_owned()],
            budget_nano_usd: None,
            allowed_models: None,
            requests_per_minute: None,
            burst: None,
            cache_group: None,
        }
    }
}

/// A reservation plus the cap the gateway chose, if it chose one.
struct Held {
    reservation: Option<Reservation>,
    cap_set: Option<u32>,
}

impl Gateway {
    /// Starts building a gateway from `config`.
    pub fn builder(config: GatewayConfig) -> GatewayBuilder {
        GatewayBuilder { config, providers: HashMap::new(), cache: None, budgets: None, events: None, runtime: None }
    }

    /// The tenant owning `api_key`. The key is hashed first and the digest compared in constant time.
    pub fn authenticate(&self, api_key: &str) -> Result<Arc<Tenant>> {
        let digest: [u8; 32] = Sha256::digest(api_key.as_bytes()).into();
        // The map lookup hashes a digest, which reveals nothing about the key; the final check is constant time.
        match self.inner.tenants.get_key_value(&digest) {
            Some((stored, tenant)) if bool::from(stored.ct_eq(&digest)) => Ok(tenant.clone()),
            _ => Err(Error::InvalidApiKey),
        }
    }

    /// The models `tenant` may use, in configuration order.
    pub fn models(&self, tenant: &Tenant) -> ModelList {
        let data = self
            .inner
            .model_order
            .iter()
            .filter(|m| tenant.may_use(m))
            .map(|m| ModelObject {
                id: m.clone(),
                object: "model".to_owned(),
                created: 0,
                owned_by: "chitty".to_owned(),
                extra: Extra::new(),
            })
            .collect();
        ModelList { object: "list".to_owned(), data, extra: Extra::new() }
    }

    /// The current time from the injected clock.
    pub fn now(&self) -> Timestamp {
        self.inner.clock.now()
    }

    /// A chat completion.
    pub async fn chat(
        &self,
        ctx: &RequestContext,
        request: ChatCompletionRequest,
    ) -> Result<Reply<ChatCompletionResponse>> {
        self.run::<TypedChatOp>(ctx, request).await
    }

    /// A chat completion as JSON bytes, to forward without re-encoding (the HTTP server's answer): the upstream's
    /// own bytes from providers that keep them, or the cache entry as stored. Same pipeline as [`Gateway::chat`].
    pub async fn chat_json(
        &self,
        ctx: &RequestContext,
        request: ChatCompletionRequest,
    ) -> Result<Reply<ChatCompletionJson>> {
        self.run::<ChatOp<ChatCompletionJson>>(ctx, request).await
    }

    /// A legacy completion.
    pub async fn completion(
        &self,
        ctx: &RequestContext,
        request: CompletionRequest,
    ) -> Result<Reply<CompletionResponse>> {
        self.run::<CompletionOp>(ctx, request).await
    }

    /// Embeddings, encoded as the request's `encoding_format` asks.
    pub async fn embeddings(
        &self,
        ctx: &RequestContext,
        request: EmbeddingRequest,
    ) -> Result<Reply<EmbeddingResponse>> {
        self.run::<EmbeddingOp>(ctx, request).await
    }

    fn resolve<O: Op>(&self, ctx: &RequestContext, req: &O::Req) -> Result<&Model> {
        let name = O::model(req);
        if name.is_empty() {
            return Err(Error::invalid_request("`model` is required", Some("model")));
        }
        let model = self
            .inner
            .models
            .get(name)
            .or_else(|| {
                let family =
                    self.inner.prefixes.iter().find(|(p, _)| name.len() > p.len() && name.starts_with(p.as_str()));
                family.map(|(_, model)| model)
            })
            .ok_or_else(|| Error::ModelNotFound { model: name.to_owned() })?;
        if !ctx.tenant.may_use(name) {
            return Err(Error::ModelNotAllowed { model: name.to_owned() });
        }
        // Prefix families serve whatever the upstream model is; only named models declare a kind.
        if model.strip_prefix.is_none() && model.config.kind != O::KIND {
            let what = match model.config.kind {
                ModelKind::Chat => "a chat model",
                ModelKind::Embedding => "an embedding model",
            };
            return Err(Error::invalid_request(
                format!("`{name}` is {what} and cannot serve {}", O::ENDPOINT.as_str()),
                Some("model"),
            ));
        }
        O::validate(req, &model.config.limits)?;
        Ok(model)
    }

    fn rate_limit(&self, tenant: &Tenant) -> Result<()> {
        if let Some(limiter) = &tenant.limiter {
            lock(limiter).try_acquire(self.now()).map_err(|retry_after| Error::RateLimited { retry_after })?;
        }
        Ok(())
    }

    async fn cache_get(&self, key: &CacheKey) -> Option<Bytes> {
        let cache = self.inner.cache.as_ref()?;
        match cache.get(key).await {
            Ok(v) => v,
            Err(e) => {
                // A failing cache is a miss, never a failed request.
                tracing::warn!(error = %e, "cache lookup failed");
                None
            }
        }
    }

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

    /// Where the cache stands for this request: the key when it may be read or written, and the status if bypassed.
    fn cache_plan<O: Op>(&self, ctx: &RequestContext, model: &Model, req: &O::Req) -> (Option<CacheKey>, bool) {
        let usable = self.inner.cache.is_some() && O::cacheable(model.config.cache, req) && ctx.cache.may_write();
        if !usable {
            return (None, false);
        }
        (Some(O::key(ctx.tenant.cache_scope(), req)), ctx.cache.may_read())
    }

    async fn reserve(
        &self,
        tenant: &Tenant,
        model: &ModelConfig,
        prompt: u64,
        cap: Option<u32>,
        generations: u32,
    ) -> Result<Held> {
        let (Some(store), Some(_)) = (&self.inner.budgets, tenant.budget) else {
            return Ok(Held { reservation: None, cap_set: None });
        };
        let price = &model.price;
        let n64 = u64::from(generations.max(1));
        let (min, max) = match cap {
            Some(c) => {
                let cost = price.cost(prompt, u64::from(c) * n64);
                (cost, cost)
            }
            None => (
                price.cost(prompt, u64::from(self.inner.defaults.min_output_tokens) * n64),
                price.cost(prompt, u64::from(model.max_output_tokens) * n64),
            ),
        };
        let now = self.now();
        let reservation = store
            .reserve(ReserveRequest {
                tenant: &tenant.id,
                min,
                max,
                lease: Duration::from_secs(self.inner.defaults.lease_secs),
                now,
            })
            .await?;
        let cap_set = match cap {
            Some(_) => None,
            None => {
                let per_choice = price.affordable_output_tokens(reservation.amount, prompt) / n64;
                Some(u32::try_from(per_choice).unwrap_or(u32::MAX).min(model.max_output_tokens))
            }
        };
        Ok(Held { reservation: Some(reservation), cap_set })
    }

    /// Settles `cost` and reports what was charged. The store charges no more than was reserved, so spend can
    /// never pass a limit; a cost above the reservation (an upstream billing more than the worst case the
    /// request allowed) is also reported as [`Event::BudgetExcess`].
    async fn settle(
        &self,
        ctx: &RequestContext,
        model: &str,
        provider: &str,
        reservation: Option<&Reservation>,
        cost: NanoUsd,
    ) -> NanoUsd {
        let (Some(store), Some(r)) = (&self.inner.budgets, reservation) else { return cost };
        // The store charges at most the reservation (its contract, checked by the conformance suite).
        let settlement = match store.settle(r, cost, self.now()).await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, tenant = %r.tenant, reservation = %r.id, "budget settle failed");
                Settlement::capped(r.amount, cost)
            }
        };
        if settlement.excess > NanoUsd::ZERO {
            tracing::warn!(
                tenant = %r.tenant, model, provider, reserved = r.amount.0, reported = cost.0,
                "upstream usage cost more than the reservation; charged the reservation"
            );
            self.emit(Event::BudgetExcess {
                tenant: ctx.tenant.id.clone(),
                model: model.to_owned(),
                provider: provider.to_owned(),
                reserved: r.amount,
                reported: cost,
            })
            .await;
        }
        settlement.charged
    }

    async fn release(&self, reservation: Option<&Reservation>) {
        if let (Some(store), Some(r)) = (&self.inner.budgets, reservation)
            && let Err(e) = store.release(r, self.now()).await
        {
            tracing::error!(error = %e, tenant = %r.tenant, reservation = %r.id, "budget release failed");
        }
    }

    async fn emit(&self, event: Event) {
        if let Err(e) = self.inner.events.record(event).await {
            tracing::warn!(error = %e, "event sink refused an event");
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn request_event(
        &self,
        ctx: &RequestContext,
        model: &str,
        endpoint: Endpoint,
        started: Timestamp,
        provider: Option<String>,
        cache: CacheStatus,
        status: u16,
        usage: Option<&Usage>,
        cost: NanoUsd,
        stream: bool,
    ) -> Event {
        let now = self.now();
        Event::Request(RequestEvent {
            at: now,
            tenant: ctx.tenant.id.clone(),
            model: model.to_owned(),
            endpoint,
            provider,
            cache,
            status,
            latency: now.since(started),
            prompt_tokens: usage.map_or(0, |u| u.prompt_tokens),
            completion_tokens: usage.map_or(0, |u| u.completion_tokens),
            cost,
            stream,
        })
    }

    /// Reports a request that failed before any provider answered.
    async fn emit_failure(
        &self,
        ctx: &RequestContext,
        model: &str,
        endpoint: Endpoint,
        started: Timestamp,
        error: &Error,
        stream: bool,
    ) {
        let event = self.request_event(
            ctx,
            model,
            endpoint,
            started,
            None,
            CacheStatus::Bypass,
            error.status(),
            None,
            NanoUsd::ZERO,
            stream,
        );
        self.emit(event).await;
    }

    async fn run<O: Op>(&self, ctx: &RequestContext, req: O::Req) -> Result<Reply<O::Resp>> {
        let started = self.now();
        let result = self.run_inner::<O>(ctx, &req, started).await;
        if let Err(e) = &result {
            self.emit_failure(ctx, O::model(&req), O::ENDPOINT, started, e, false).await;
        }
        result
    }

    async fn run_inner<O: Op>(&self, ctx: &RequestContext, req: &O::Req, started: Timestamp) -> Result<Reply<O::Resp>> {
        let model = self.resolve::<O>(ctx, req)?;
        self.rate_limit(&ctx.tenant)?;
        let (key, may_read) = self.cache_plan::<O>(ctx, model, req);
        let mut cache_status = if key.is_some() { CacheStatus::Miss } else { CacheStatus::Bypass };
        if let (Some(k), true) = (&key, may_read) {
            if let Some(bytes) = self.cache_get(k).await {
                match O::decode(bytes) {
                    Ok(resp) => {
                        let usage = O::usage(&resp);
                        let body = O::for_client(resp, req)?;
                        let event = self.request_event(
                            ctx,
                            O::model(req),
                            O::ENDPOINT,
                            started,
                            None,
                            CacheStatus::Hit,
                            200,
                            usage.as_ref(),
                            NanoUsd::ZERO,
                            false,
                        );
                        self.emit(event).await;
                        let meta = ReplyMeta::hit();
                        return Ok(Reply { body, meta });
                    }
                    Err(e) => tracing::warn!(error = %e, "cache entry did not parse; treating as a miss"),
                }
            }
        } else if key.is_some() {
            // `Cache-Control: no-cache`: answer fresh, store the result.
            cache_status = CacheStatus::Bypass;
        }
        let prompt = O::prompt_tokens(req);
        let held = self.reserve(&ctx.tenant, &model.config, prompt, O::output_cap(req), O::generations(req)).await?;
        let cap = held.cap_set.map(|c| (model.config.output_cap_field, c));
        let outcome = self
            .route(model, O::CAPABILITY, |route| {
                let mut upstream = req.clone();
                O::prepare_upstream(&mut upstream, model.upstream_name(route, O::model(req)), cap);
                O::call(route.provider.clone(), upstream)
            })
            .await;
        let (resp, provider) = match outcome {
            Ok(v) => v,
            Err(e) => {
                self.release(held.reservation.as_ref()).await;
                return Err(e);
            }
        };
        let usage = O::usage(&resp);
        let cost = match (&usage, &held.reservation) {
            (Some(u), _) => model.config.price.cost_of_usage(u),
            // No usage reported: charge the reservation, which bounds what the call could cost.
            (None, Some(r)) => r.amount,
            (None, None) => NanoUsd::ZERO,
        };
        let charged = self.settle(ctx, O::model(req), &provider, held.reservation.as_ref(), cost).await;
        if let Some(k) = &key
            && O::complete(&resp)
        {
            self.cache_put(k, &model.config, O::encode(&resp)).await;
        }
        let body = O::for_client(resp, req)?;
        let event = self.request_event(
            ctx,
            O::model(req),
            O::ENDPOINT,
            started,
            Some(provider.clone()),
            cache_status,
            200,
            usage.as_ref(),
            charged,
            false,
        );
        self.emit(event).await;
        let meta = ReplyMeta {
            cache: cache_status,
            provider: Some(provider),
            reserved: held.reservation.as_ref().map_or(NanoUsd::ZERO, |r| r.amount),
            cost: charged,
            max_tokens_set: held.cap_set,
        };
        Ok(Reply { body, meta })
    }

    /// Tries the model's routes in order: each up to `attempts_per_route` times with backoff, skipping open
    /// circuits, each attempt bounded by the timeout. Errors a retry cannot fix (4xx) return at once.
    async fn route<T, F>(&self, model: &Model, capability: Capability, mut attempt: F) -> Result<(T, String)>
    where
        F: FnMut(&Route) -> BoxFuture<'static, Result<T>>,
    {
        let d = &self.inner.defaults;
        let mut last_error: Option<Error> = None;
        let mut skipped = Vec::new();
        for route in &model.routes {
            let name = route.provider.name();
            if !route.provider.capabilities().contains(capability) {
                skipped.push(format!("{name}: does not support {capability}"));
                continue;
            }
            for retry in 0..d.attempts_per_route.max(1) {
                let admission = lock(&route.breaker).admit(self.now());
                if let Admission::Rejected { .. } = admission {
                    skipped.push(format!("{name}: circuit open"));
                    break;
                }
                let mut call = attempt(route);
                // In-process providers often answer on the first poll: arm the timeout timer only if needed.
                let result = match futures::poll!(&mut call) {
                    std::task::Poll::Ready(r) => r,
                    std::task::Poll::Pending => {
                        let timeout = self.inner.timer.sleep(d.timeout());
                        match futures::future::select(call, timeout).await {
                            Either::Left((r, _)) => r,
                            Either::Right(((), _)) => {
                                Err(Error::UpstreamTimeout { provider: name.to_owned(), timeout: d.timeout() })
                            }
                        }
                    }
                };
                match result {
                    Ok(v) => {
                        lock(&route.breaker).on_success();
                        return Ok((v, name.to_owned()));
                    }
                    Err(e) if !e.is_retryable() => {
                        // The route answered: the request is at fault, not the upstream.
                        if admission == Admission::Probe {
                            lock(&route.breaker).on_success();
                        }
                        return Err(e);
                    }
                    Err(e) => {
                        let opened = lock(&route.breaker).on_failure(self.now());
                        self.emit(Event::UpstreamFailure {
                            provider: name.to_owned(),
                            model: model.config.name.clone(),
                            status: e.status(),
                        })
                        .await;
                        if opened {
                            self.emit(Event::CircuitOpened { provider: name.to_owned() }).await;
                        }
                        let wait = e.retry_after().unwrap_or_else(|| d.backoff(retry));
                        last_error = Some(e);
                        let last_try = retry + 1 >= d.attempts_per_route.max(1);
                        if last_try || opened || wait > Duration::from_millis(d.backoff_max_ms) {
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
}
