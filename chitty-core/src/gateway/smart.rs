//! The two pipeline steps that think about a request's meaning: the smart router (`[[routers]]`, a virtual
//! model that picks one of its candidates per request, with an optional cascade) and the semantic cache
//! (`cache = "semantic"`). Both embed text through the gateway's own embeddings path, so the tenant's budget,
//! rate limits and events apply to those calls as to any other.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;

use super::config::ModelConfig;
use super::endpoint::EndpointSpec;
use super::pipeline::{Delivery, Via};
use super::tenant::RequestContext;
use super::{Gateway, lock};
use crate::error::{Error, Result, UpstreamFailure};
use crate::events::RouterNote;
use crate::keys::CacheScope;
use crate::router::{
    AnswerExpectations, ExampleIndex, ExampleSetConfig, RequestFeatures, RouterConfig, RouterDecision, RouterStep,
    SmartRouter, classifier_text,
};
use crate::semantic::{DEFAULT_APPROXIMATE_ABOVE, PartitionKey, SemanticIndex, SemanticIndexConfig, semantic_refusal};
use crate::time::Timestamp;
use crate::wire::{ChatCompletionRequest, EmbeddingInput, EmbeddingRequest, Role};

/// Longest text the router's classifier embeds; a longer prompt is cut (its opening decides its class).
const CLASSIFIER_TEXT_BYTES: usize = 8 * 1024;

/// Longest prompt the semantic cache embeds: a longer one is served by exact match only, since an embedding
/// of its opening could match a prompt that differs further on.
const SEMANTIC_TEXT_BYTES: usize = 16 * 1024;

/// How long a router waits after failing to embed its examples before trying again.
const EXAMPLE_RETRY: Duration = Duration::from_secs(30);

/// Most prompts a semantic cache keeps across tenants, as a multiple of the per-tenant bound.
const SEMANTIC_TENANTS_BOUND: usize = 10;

/// A router and its classifier's example index, embedded on first use.
pub(super) struct RouterState {
    router: SmartRouter,
    examples: Vec<ExampleSetConfig>,
    index: futures::lock::Mutex<ExampleIndexState>,
}

/// Where the example index stands: not built yet, built, or failed at some time.
enum ExampleIndexState {
    Pending,
    Ready(Arc<ExampleIndex>),
    Failed(Timestamp),
}

impl RouterState {
    /// The router from its configuration, which [`super::GatewayConfig::validate`] has checked.
    pub(super) fn new(config: &RouterConfig, is_model: impl Fn(&str) -> bool) -> Result<RouterState> {
        let router = SmartRouter::new(config, is_model).map_err(|issue| Error::InvalidInput {
            what: "gateway configuration".into(),
            reason: format!("routers `{}`: {issue}", config.name),
        })?;
        Ok(RouterState {
            router,
            examples: config.examples.clone(),
            index: futures::lock::Mutex::new(ExampleIndexState::Pending),
        })
    }
}

/// The semantic cache of one model: prompts' embeddings per tenant and partition, with their answers.
pub(super) struct SemanticCache {
    /// Created on the first store, when the embedding model's dimensions are known.
    index: Mutex<Option<SemanticIndex<Bytes>>>,
    max_entries_per_tenant: usize,
}

impl SemanticCache {
    /// An empty cache holding at most `max_entries_per_tenant` prompts per tenant.
    pub(super) fn new(max_entries_per_tenant: usize) -> SemanticCache {
        SemanticCache { index: Mutex::new(None), max_entries_per_tenant }
    }
}

/// What the semantic cache needs to look a request up and to store its answer.
pub(super) struct SemanticPlan {
    /// Who may share entries: the exact cache's scope, as a string no two scopes share.
    scope: String,
    partition: PartitionKey,
    embedding: Vec<f32>,
}

/// A semantic hit: the stored answer and how close its prompt was.
pub(super) struct SemanticHit {
    pub(super) entry: Bytes,
    pub(super) similarity: f32,
}

impl Gateway {
    /// The router named `name`, if it is one. Costs one emptiness check when no router is configured.
    pub(super) fn router_named(&self, name: &str) -> Option<&RouterState> {
        if self.inner.routers.is_empty() { None } else { self.inner.routers.get(name) }
    }

    /// Runs a request that names a router: decides the candidate, runs the pipeline for it and, for a whole
    /// answer under a cascade, escalates to the next candidate while a check rejects the answer. Every
    /// candidate tried is a request of its own in the events and in the budget: the cascade pays for each.
    pub(super) async fn execute_routed<E: EndpointSpec, D: Delivery<E>>(
        &self,
        ctx: &RequestContext,
        req: E::Req,
        state: &RouterState,
    ) -> Result<D::Output> {
        let router = &state.router;
        if !ctx.may_use(router.name()) {
            return Err(Error::ModelNotAllowed { model: router.name().to_owned() });
        }
        let Some(chat) = E::as_chat(&req) else {
            return Err(Error::invalid_request(
                format!("`{}` is a router and serves chat completions only", router.name()),
                Some("model"),
            ));
        };
        let mut decision = self.decide(ctx, state, chat).await;
        let expectations = router.cascade().is_some().then(|| AnswerExpectations::of(chat));
        let mut escalations = 0;
        loop {
            let mut routed = req.clone();
            E::set_model(&mut routed, &decision.model);
            let note = RouterNote { name: router.name().into(), reason: decision.reason.to_string().into() };
            let output = self.execute_model::<E, D>(ctx, routed, Via::router(note)).await?;
            // A streamed answer has reached the client before it could be checked: no cascade.
            let (Some(cascade), Some(expect), false) = (router.cascade(), &expectations, D::STREAM) else {
                return Ok(output);
            };
            let Some(answer) = D::answer(&output).and_then(E::as_chat_response) else { return Ok(output) };
            let Err(failed) = cascade.check(expect, &answer) else { return Ok(output) };
            let Some(next) = router.escalate(&decision, &failed, escalations) else { return Ok(output) };
            tracing::debug!(router = router.name(), from = %decision.model, to = %next.model, check = failed.label(),
                "cascade escalates");
            decision = next;
            escalations += 1;
        }
    }

    /// The router's decision for `chat`: rules and hint, then the classifier when it has one. A classifier
    /// that cannot run (the embedding call fails, no examples) leaves the decision to the default.
    async fn decide(&self, ctx: &RequestContext, state: &RouterState, chat: &ChatCompletionRequest) -> RouterDecision {
        let router = &state.router;
        let pending = match router.decide(&RequestFeatures::of(chat, ctx.quality)) {
            RouterStep::Decided(decision) => return decision,
            RouterStep::Classify(pending) => pending,
        };
        let (Some(model), Some(text)) = (router.embedding_model(), classifier_text(chat, CLASSIFIER_TEXT_BYTES)) else {
            return router.finish(pending, None);
        };
        let Some(index) = self.example_index(state, model).await else { return router.finish(pending, None) };
        match self.embed(ctx, model, text).await {
            Ok(embedding) => router.classify(pending, &index, &embedding),
            Err(e) => {
                tracing::warn!(router = router.name(), error = %e, "router: the prompt could not be embedded");
                router.finish(pending, None)
            }
        }
    }

    /// The router's example index, embedding the examples with `model`'s provider on first use (the
    /// operator's cost, not a tenant's). After a failure it is retried no sooner than [`EXAMPLE_RETRY`].
    async fn example_index(&self, state: &RouterState, model: &str) -> Option<Arc<ExampleIndex>> {
        let mut slot = state.index.lock().await;
        match &*slot {
            ExampleIndexState::Ready(index) => return Some(Arc::clone(index)),
            ExampleIndexState::Failed(at) if self.now().since(*at) < EXAMPLE_RETRY => return None,
            _ => {}
        }
        match self.embed_examples(model, &state.examples).await {
            Ok(index) => {
                let index = Arc::new(index);
                *slot = ExampleIndexState::Ready(Arc::clone(&index));
                Some(index)
            }
            Err(e) => {
                tracing::warn!(router = state.router.name(), error = %e, "router: the examples could not be embedded");
                *slot = ExampleIndexState::Failed(self.now());
                None
            }
        }
    }

    /// Embeds every example prompt in one call to the embedding model's first route.
    async fn embed_examples(&self, model: &str, examples: &[ExampleSetConfig]) -> Result<ExampleIndex> {
        let target = self.find_model(model).ok_or_else(|| Error::ModelNotFound { model: model.to_owned() })?;
        let route = target.routes.first().ok_or_else(|| Error::ModelNotFound { model: model.to_owned() })?;
        let texts: Vec<String> = examples.iter().flat_map(|set| set.prompts.iter().cloned()).collect();
        let request = EmbeddingRequest {
            model: target.upstream_name(route, model).to_owned(),
            input: EmbeddingInput::Texts(texts),
            ..EmbeddingRequest::default()
        };
        let response = route.provider.embeddings(request).await?;
        let vectors = response.data.iter().map(|e| e.embedding.to_floats()).collect::<Result<Vec<_>>>()?;
        let dims = vectors.first().map_or(0, Vec::len);
        let mut index = ExampleIndex::new(dims);
        let labels = examples.iter().flat_map(|set| set.prompts.iter().map(move |_| (&set.class, &set.model)));
        if vectors.len() != labels.clone().count() {
            return Err(Error::upstream(
                route.provider.name(),
                UpstreamFailure::Decode,
                "the embeddings answer does not hold one vector per example",
            ));
        }
        for ((class, candidate), vector) in labels.zip(&vectors) {
            index.add(class, candidate, vector).map_err(|e| {
                Error::upstream(route.provider.name(), UpstreamFailure::Decode, format!("an example's embedding: {e}"))
            })?;
        }
        Ok(index)
    }

    /// One text's embedding with the configured model `model`, through the gateway (budget, rate limits and
    /// events of `ctx`'s tenant), on the caller's behalf: the caller's model allow-list does not apply.
    /// Boxed by signature: it runs the pipeline from inside the pipeline, and a named `Send` future ends the
    /// cycle the compiler would otherwise have to see through.
    fn embed<'a>(&'a self, ctx: &'a RequestContext, model: &'a str, text: String) -> BoxFuture<'a, Result<Vec<f32>>> {
        Box::pin(async move {
            let input = EmbeddingInput::Text(text);
            let request = EmbeddingRequest { model: model.to_owned(), input, ..EmbeddingRequest::default() };
            let reply = self.embeddings_via(ctx, request, Via::on_behalf()).await?;
            let first = reply.body.data.first().ok_or_else(|| {
                Error::upstream(model, UpstreamFailure::Decode, "the embeddings answer holds no vector")
            })?;
            first.embedding.to_floats()
        })
    }

    /// Where the semantic cache stands for a request that missed the exact cache: the embedding of its last
    /// user message and its partition, or `None` when the request may not use it (tools, `n > 1`, a high
    /// temperature, a `Cache-Control` directive, a long prompt) or the embedding call fails.
    pub(super) async fn semantic_plan(
        &self,
        ctx: &RequestContext,
        config: &ModelConfig,
        chat: &ChatCompletionRequest,
    ) -> Option<SemanticPlan> {
        let embedding_model = config.semantic_embedding_model.as_deref()?;
        if let Some(refusal) = semantic_refusal(chat, config.semantic_max_temperature, ctx.cache) {
            tracing::trace!(reason = refusal.label(), "semantic cache not used");
            return None;
        }
        let text = chat.messages.iter().rev().find(|m| m.role == Role::User)?.text_content();
        if text.len() > SEMANTIC_TEXT_BYTES || text.trim().is_empty() {
            return None;
        }
        let embedding = match self.embed(ctx, embedding_model, text).await {
            Ok(embedding) => embedding,
            Err(e) => {
                // A failing embedding is a miss, never a failed request.
                tracing::warn!(model = %config.name, error = %e, "semantic cache: the prompt could not be embedded");
                return None;
            }
        };
        let scope = match ctx.tenant.cache_scope() {
            CacheScope::Tenant(id) => format!("t:{id}"),
            CacheScope::Shared(group) => format!("g:{group}"),
        };
        Some(SemanticPlan { scope, partition: PartitionKey::of_chat(chat), embedding })
    }

    /// The stored answer of the nearest prompt in `plan`'s scope and partition, at or above the model's
    /// threshold.
    pub(super) fn semantic_lookup(&self, config: &ModelConfig, plan: &SemanticPlan) -> Option<SemanticHit> {
        let cache = self.inner.semantic.get(&config.name)?;
        let mut slot = lock(&cache.index);
        let index = slot.as_mut()?;
        match index.lookup(&plan.scope, plan.partition, &plan.embedding, config.semantic_threshold, self.now()) {
            Ok(hit) => hit.map(|h| SemanticHit { entry: h.value, similarity: h.similarity }),
            Err(e) => {
                tracing::warn!(model = %config.name, error = %e, "semantic cache lookup failed; treating as a miss");
                None
            }
        }
    }

    /// Stores a complete answer under `plan` until the model's cache TTL.
    pub(super) fn semantic_store(&self, config: &ModelConfig, plan: SemanticPlan, entry: Bytes) {
        let Some(cache) = self.inner.semantic.get(&config.name) else { return };
        let ttl = Duration::from_secs(config.cache_ttl_secs.unwrap_or(self.inner.defaults.cache_ttl_secs));
        let mut slot = lock(&cache.index);
        let index = slot.get_or_insert_with(|| {
            SemanticIndex::new(SemanticIndexConfig {
                dims: plan.embedding.len(),
                max_entries: cache.max_entries_per_tenant.saturating_mul(SEMANTIC_TENANTS_BOUND),
                max_entries_per_tenant: cache.max_entries_per_tenant,
                approximate_above: DEFAULT_APPROXIMATE_ABOVE,
            })
        });
        if let Err(e) = index.insert(&plan.scope, plan.partition, &plan.embedding, entry, self.now(), ttl) {
            tracing::warn!(model = %config.name, error = %e, "semantic cache store failed");
        }
    }
}
