//! The gateway. Every request, plain or streamed, runs one sequence of steps (`pipeline.rs`):
//! `plan` (resolve the model, validate, plan the cache) → `admit` (rate limit) → cache lookup → `reserve`
//! (budget) → `route` (primary, fallbacks, retries with jittered backoff, timeouts, circuit breakers) →
//! `settle` → cache store → `record` (events). The plain and the streamed path differ only in how the answer
//! is delivered and when it is settled (at once, or when the stream ends).
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
//!         routes: vec![RouteConfig::new("echo", "echo-1")],
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

mod admission;
mod breaker;
mod builder;
mod config;
mod directory;
mod endpoint;
mod native;
mod pipeline;
mod responses;
mod routing;
mod smart;
mod spend;
mod stream;
mod tenant;

pub use breaker::{Admission, CircuitBreaker};
pub use builder::GatewayBuilder;
pub use config::{
    ConfigIssue, DEFAULT_MAX_OUTPUT_TOKENS, DEFAULT_SEMANTIC_MAX_ENTRIES, DEFAULT_SEMANTIC_THRESHOLD, Defaults,
    GatewayConfig, ModelConfig, ModelKind, OutputCapField, PrefixConfig, RequestLimits, RouteConfig, TenantConfig,
    api_key_digest,
};
pub use responses::STORED_RESPONSE_TTL;
pub use routing::Readiness;
pub use stream::StreamReply;
pub use tenant::{ApiKey, Caller, RequestContext, Tenant};

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};

use subtle::ConstantTimeEq;

use crate::access::{AccessStore, KeyDigest};
use crate::budget::BudgetStore;
use crate::cache::Cache;
use crate::error::{Error, Result};
use crate::events::{CacheStatus, EventSink};
use crate::money::NanoUsd;
use crate::time::{Clock, RandomSource, Spawner, Timer, Timestamp};
use crate::wire::{
    ChatCompletionJson, ChatCompletionRequest, ChatCompletionResponse, CompletionRequest, CompletionResponse,
    EmbeddingRequest, EmbeddingResponse, Extra, ModelList, ModelObject,
};
use endpoint::{ChatEndpoint, CompletionEndpoint, EmbeddingEndpoint, TypedChatEndpoint};
use pipeline::WholeAnswer;
use routing::Model;
use stream::Streamed;

/// Locks a mutex whose data stays consistent even if a holder panicked (counters and small state machines).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What the gateway did for a request, for response headers and logs.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplyMeta {
    /// Cache outcome.
    pub cache: CacheStatus,
    /// Provider that answered (none on a cache hit).
    pub provider: Option<String>,
    /// The deployment that answered, `<provider>/<upstream model>` (`x-chitty-route`; none on a cache hit).
    pub route: Option<String>,
    /// Upstream attempts made, failed ones and fallbacks included (`x-chitty-attempts`; 0 on a cache hit).
    pub attempts: u32,
    /// Amount reserved before the call.
    pub reserved: NanoUsd,
    /// Amount charged (for streams: known when the stream ends; zero here).
    pub cost: NanoUsd,
    /// The output cap the gateway set because the client sent none and the budget bounds it.
    pub max_tokens_set: Option<u32>,
    /// The caller's tightest requests and tokens limits after admission (OpenAI's `x-ratelimit-*` headers);
    /// none when no limit applies.
    pub rate_limit: Option<crate::ratelimit::RateLimitStatus>,
    /// Why the router chose the model, when the request named a router (`x-chitty-router`).
    pub router: Option<Arc<str>>,
    /// For a semantic cache hit: the cosine similarity of the two prompts (`x-chitty-cache-similarity`).
    pub cache_similarity: Option<f32>,
}

impl ReplyMeta {
    /// What a cache hit reports: no provider, nothing reserved or charged.
    pub fn hit() -> ReplyMeta {
        ReplyMeta {
            cache: CacheStatus::Hit,
            provider: None,
            route: None,
            attempts: 0,
            reserved: NanoUsd::ZERO,
            cost: NanoUsd::ZERO,
            max_tokens_set: None,
            rate_limit: None,
            router: None,
            cache_similarity: None,
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

/// The gateway's state, shared by every clone.
struct Inner {
    models: HashMap<String, Model>,
    prefixes: Vec<(String, Model)>,
    model_order: Vec<String>,
    /// The local copy of the access store, swapped whole on reload.
    directory: RwLock<Arc<directory::Directory>>,
    access: Option<Arc<dyn AccessStore>>,
    /// One reload at a time, so an older snapshot never replaces a newer one.
    reload: futures::lock::Mutex<()>,
    cache: Option<Arc<dyn Cache>>,
    budgets: Option<Arc<dyn BudgetStore>>,
    limiter: Arc<dyn crate::ratelimit::RateLimiter>,
    events: Arc<dyn EventSink>,
    clock: Arc<dyn Clock>,
    timer: Arc<dyn Timer>,
    spawner: Arc<dyn Spawner>,
    random: Arc<dyn RandomSource>,
    defaults: Defaults,
    /// `[[routers]]` by public name.
    routers: HashMap<String, smart::RouterState>,
    /// Router names in configuration order, listed after the models by `GET /v1/models`.
    router_order: Vec<String>,
    /// The semantic cache of each model with `cache = "semantic"`, by public name.
    semantic: HashMap<String, smart::SemanticCache>,
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
            .field("tenants", &self.directory().tenants.len())
            .field("cache", &self.inner.cache)
            .field("budgets", &self.inner.budgets)
            .finish_non_exhaustive()
    }
}

impl Gateway {
    /// Starts building a gateway from `config`.
    pub fn builder(config: GatewayConfig) -> GatewayBuilder {
        GatewayBuilder::new(config)
    }

    /// The caller owning `api_key`: its tenant and, for a key from an access store, the key. The key is hashed
    /// first and the digest compared in constant time; a revoked key is unknown, an expired one refused.
    pub fn authenticate(&self, api_key: &str) -> Result<Caller> {
        let digest = KeyDigest::of(api_key);
        let directory = self.directory();
        // The map lookup hashes a digest, which reveals nothing about the key; the final check is constant time.
        match directory.by_digest.get_key_value(&digest) {
            Some((stored, caller))
                if bool::from(stored.0.ct_eq(&digest.0))
                    && caller.key.as_ref().is_none_or(|k| !k.expired(self.now())) =>
            {
                Ok(caller.clone())
            }
            _ => Err(Error::InvalidApiKey),
        }
    }

    /// The tenant `id`, as the gateway knows it now.
    pub fn tenant(&self, id: &str) -> Option<Arc<Tenant>> {
        self.directory().tenants.get(id).cloned()
    }

    /// The access store tenants and keys come from, when the gateway has one.
    pub fn access_store(&self) -> Option<&Arc<dyn AccessStore>> {
        self.inner.access.as_ref()
    }

    /// The budget store, when the gateway has one.
    pub fn budget_store(&self) -> Option<&Arc<dyn BudgetStore>> {
        self.inner.budgets.as_ref()
    }

    /// Rebuilds the local copy of tenants and keys from the access store (a no-op without one). Call it when
    /// the store reports a change; replicas that share a store learn of each other's changes this way.
    pub async fn reload_access(&self) -> Result<()> {
        let Some(store) = &self.inner.access else { return Ok(()) };
        let _one_at_a_time = self.inner.reload.lock().await;
        let snapshot = store.snapshot().await?;
        let previous = self.directory();
        let next = directory::Directory::build(snapshot, Some(&previous));
        *self.inner.directory.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(next);
        Ok(())
    }

    fn directory(&self) -> Arc<directory::Directory> {
        Arc::clone(&self.inner.directory.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// The models `ctx` may use (its tenant's, narrowed by its key), in configuration order, then the routers.
    pub fn models(&self, ctx: &RequestContext) -> ModelList {
        let names = self.inner.model_order.iter().chain(&self.inner.router_order);
        let data = names.filter(|m| ctx.may_use(m)).map(|m| model_object(m)).collect();
        ModelList { object: "list".to_owned(), data, extra: Extra::new() }
    }

    /// The model object of `id` (`GET /v1/models/{id}`), when `ctx` may use it. Otherwise
    /// [`Error::ModelNotFound`], for a model of another tenant too, so that a caller learns nothing of
    /// models it cannot use.
    pub fn model(&self, ctx: &RequestContext, id: &str) -> Result<ModelObject> {
        // Configured models and names of a prefix family (`openai/<model>`) alike.
        if (self.find_model(id).is_some() || self.router_named(id).is_some()) && ctx.may_use(id) {
            Ok(model_object(id))
        } else {
            Err(Error::ModelNotFound { model: id.to_owned() })
        }
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
        self.execute::<TypedChatEndpoint, WholeAnswer>(ctx, request).await
    }

    /// A chat completion as JSON bytes passed through as they came (the HTTP server's answer): the upstream's
    /// own bytes ([`Provider::chat_passthrough`](crate::Provider::chat_passthrough)), or the cache entry as
    /// stored, never parsed and re-encoded. Same pipeline as [`Gateway::chat`].
    pub async fn chat_passthrough(
        &self,
        ctx: &RequestContext,
        request: ChatCompletionRequest,
    ) -> Result<Reply<ChatCompletionJson>> {
        self.execute::<ChatEndpoint<ChatCompletionJson>, WholeAnswer>(ctx, request).await
    }

    /// A legacy completion.
    pub async fn completion(
        &self,
        ctx: &RequestContext,
        request: CompletionRequest,
    ) -> Result<Reply<CompletionResponse>> {
        self.execute::<CompletionEndpoint, WholeAnswer>(ctx, request).await
    }

    /// Embeddings, encoded as the request's `encoding_format` asks.
    pub async fn embeddings(
        &self,
        ctx: &RequestContext,
        request: EmbeddingRequest,
    ) -> Result<Reply<EmbeddingResponse>> {
        self.execute::<EmbeddingEndpoint, WholeAnswer>(ctx, request).await
    }

    /// Embeddings reached as `via` says (on a request's behalf: the semantic cache, a router's classifier).
    async fn embeddings_via(
        &self,
        ctx: &RequestContext,
        request: EmbeddingRequest,
        via: pipeline::Via,
    ) -> Result<Reply<EmbeddingResponse>> {
        self.execute_model::<EmbeddingEndpoint, WholeAnswer>(ctx, request, via).await
    }

    /// A streamed chat completion. Errors before the first chunk (unknown model, budget, every route failing)
    /// come back as `Err`; errors after it arrive as the stream's last item.
    pub async fn chat_stream(&self, ctx: &RequestContext, request: ChatCompletionRequest) -> Result<StreamReply> {
        self.execute::<TypedChatEndpoint, Streamed>(ctx, request).await
    }

    /// A streamed legacy completion, chunk by chunk as OpenAI streams them (`text_completion` objects holding
    /// pieces of text). Same pipeline, cache and settlement as [`Gateway::chat_stream`].
    pub async fn completion_stream(
        &self,
        ctx: &RequestContext,
        request: CompletionRequest,
    ) -> Result<StreamReply<CompletionResponse>> {
        self.execute::<CompletionEndpoint, Streamed>(ctx, request).await
    }
}

/// The model object the models endpoints list for `name`.
fn model_object(name: &str) -> ModelObject {
    ModelObject {
        id: name.to_owned(),
        object: "model".to_owned(),
        created: 0,
        owned_by: "chitty".to_owned(),
        extra: Extra::new(),
    }
}
