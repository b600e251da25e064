//! The smart router (`[[routers]]`) and the semantic cache (`cache = "semantic"`) in the request path, in
//! process on virtual time: decisions by rule, hint and classifier, the cascade's escalations, semantic hits
//! and their refusals, isolation between tenants, expiry, and what each costs.

#![cfg(feature = "memory")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chitty_core::gateway::{
    Gateway, GatewayConfig, ModelConfig, ModelKind, RequestContext, RouteConfig, TenantConfig, api_key_digest,
};
use chitty_core::keys::{CacheDirective, CachePolicy};
use chitty_core::router::{QualityHint, RouterConfig};
use chitty_core::wire::{
    ChatCompletionRequest, ChatCompletionResponse, ChatMessage, ChunkAccumulator, EmbeddingRequest, EmbeddingResponse,
};
use chitty_core::{
    CacheStatus, Capabilities, Capability, ChunkStream, Endpoint, ManualClock, ModelPrice, NanoUsd, Provider,
    RequestEvent, Result,
};
use chitty_providers::memory::{CollectingSink, MemoryBudgetStore, MemoryCache};
use futures::StreamExt;
use serde_json::json;

/// Dimensions of [`words_embedding`].
const DIMS: usize = 64;

/// A bag-of-words embedding: each lower-cased word adds one to a hashed dimension. Prompts that share most
/// words are close, which is what a real embedding model does for paraphrases.
fn words_embedding(text: &str) -> Vec<f32> {
    let mut v = vec![0.0f32; DIMS];
    for word in text.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()) {
        let h = word.to_lowercase().bytes().fold(2_166_136_261u32, |h, b| (h ^ u32::from(b)).wrapping_mul(16_777_619));
        v[h as usize % DIMS] += 1.0;
    }
    v
}

/// Answers chat as its upstream model dictates and embeds by words; counts calls of each kind.
#[derive(Debug, Default)]
struct Scripted {
    chats: AtomicU64,
    embeddings: AtomicU64,
}

impl Scripted {
    /// `mini` refuses prompts that mention "refuse" and writes broken JSON when JSON is asked for; `large`
    /// answers everything well.
    fn answer_text(model: &str, request: &ChatCompletionRequest) -> String {
        let prompt = request.messages.last().map(ChatMessage::text_content).unwrap_or_default();
        let json_mode = request.response_format.is_some();
        match model {
            "up-mini" if prompt.contains("refuse") => "I'm sorry, but I can't help with that.".into(),
            "up-mini" if json_mode => "Sure! {\"colour\": ".into(),
            _ if json_mode => "{\"colour\": \"blue\"}".into(),
            _ => format!("{model} says: {prompt}"),
        }
    }
}

#[async_trait]
impl Provider for Scripted {
    fn name(&self) -> &str {
        "scripted"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::of(&[Capability::Chat, Capability::ChatStream, Capability::Embeddings])
    }

    async fn chat(&self, request: ChatCompletionRequest) -> Result<ChatCompletionResponse> {
        self.chats.fetch_add(1, Ordering::Relaxed);
        let text = Scripted::answer_text(&request.model, &request);
        Ok(serde_json::from_value(json!({
            "id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": request.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 100, "completion_tokens": 10, "total_tokens": 110}
        }))
        .unwrap())
    }

    async fn chat_stream(&self, request: ChatCompletionRequest) -> Result<ChunkStream> {
        let answer = self.chat(request).await?;
        Ok(Box::pin(futures::stream::iter(answer.to_chunks(8, true).into_iter().map(Ok))))
    }

    async fn embeddings(&self, request: EmbeddingRequest) -> Result<EmbeddingResponse> {
        self.embeddings.fetch_add(1, Ordering::Relaxed);
        if request.model == "up-broken-embed" {
            return Err(chitty_core::Error::upstream_status("scripted", 400, "no such model", None));
        }
        let texts: Vec<String> = match &request.input {
            chitty_core::wire::EmbeddingInput::Text(t) => vec![t.clone()],
            chitty_core::wire::EmbeddingInput::Texts(t) => t.clone(),
            other => panic!("the gateway embeds text, got {other:?}"),
        };
        let data: Vec<_> = texts
            .iter()
            .enumerate()
            .map(|(i, t)| json!({"object": "embedding", "index": i, "embedding": words_embedding(t)}))
            .collect();
        Ok(serde_json::from_value(json!({
            "object": "list", "data": data, "model": request.model,
            "usage": {"prompt_tokens": 5, "total_tokens": 5}
        }))
        .unwrap())
    }
}

const MINI: ModelPrice = ModelPrice::from_micros_per_mtok(150_000, 600_000);
const LARGE: ModelPrice = ModelPrice::from_micros_per_mtok(2_500_000, 10_000_000);

struct Harness {
    gateway: Gateway,
    clock: ManualClock,
    upstream: Arc<Scripted>,
    events: Arc<CollectingSink>,
}

fn model(name: &str, upstream: &str, price: ModelPrice) -> ModelConfig {
    ModelConfig { routes: vec![RouteConfig::new("scripted", upstream)], price, ..ModelConfig::new(name) }
}

fn router(value: serde_json::Value) -> RouterConfig {
    serde_json::from_value(value).unwrap()
}

/// `mini` and `large` behind router `auto` (rules, hint, classifier, cascade), `embed`, and `faq`: `mini`
/// with a semantic cache. Tenants `acme` (allowed `auto` and `faq` only), `globex` and `initech` (sharing
/// nothing).
async fn harness(tweak: impl FnOnce(&mut GatewayConfig)) -> Harness {
    let mut config = GatewayConfig {
        models: vec![
            model("mini", "up-mini", MINI),
            model("large", "up-large", LARGE),
            ModelConfig {
                kind: ModelKind::Embedding,
                ..model("embed", "up-embed", ModelPrice::from_micros_per_mtok(20_000, 0))
            },
            ModelConfig {
                cache: CachePolicy::Semantic,
                semantic_threshold: 0.8,
                semantic_embedding_model: Some("embed".into()),
                ..model("faq", "up-mini", MINI)
            },
        ],
        routers: vec![router(json!({
            "name": "auto",
            "candidates": [{"model": "mini"}, {"model": "large"}],
            "rules": [
                {"name": "long-context", "when": {"prompt_tokens_above": 2000}, "model": "large"},
                {"name": "tools", "when": {"tools": true}, "at_least": "large"}
            ],
            "embedding_model": "embed",
            "examples": [
                {"class": "smalltalk", "model": "mini",
                 "prompts": ["hello how are you today", "what is the weather like", "tell me a joke"]},
                {"class": "proofs", "model": "large",
                 "prompts": ["prove that the square root of two is irrational", "prove the theorem by induction"]}
            ],
            "min_similarity": 0.3,
            "default": "mini",
            "cascade": {"max_escalations": 1}
        }))],
        tenants: vec![
            TenantConfig {
                allowed_models: Some(vec!["auto".into(), "faq".into()]),
                ..TenantConfig::new("acme", &api_key_digest("sk-acme"))
            },
            TenantConfig::new("globex", &api_key_digest("sk-globex")),
            TenantConfig::new("initech", &api_key_digest("sk-initech")),
        ],
        ..Default::default()
    };
    tweak(&mut config);
    let clock = ManualClock::new(common::START);
    let upstream = Arc::new(Scripted::default());
    let events = Arc::new(CollectingSink::new());
    let gateway = common::on_virtual_time(Gateway::builder(config), &clock)
        .provider(upstream.clone())
        .cache(Arc::new(MemoryCache::new(1 << 24)))
        .budgets(Arc::new(MemoryBudgetStore::new()))
        .events(events.clone())
        .build()
        .await
        .unwrap();
    Harness { gateway, clock, upstream, events }
}

impl Harness {
    fn ctx(&self, key: &str) -> RequestContext {
        common::context(&self.gateway, key)
    }

    /// Request events of chat completions, in order.
    fn chat_events(&self) -> Vec<RequestEvent> {
        self.events.requests().into_iter().filter(|r| r.endpoint == Endpoint::ChatCompletions).collect()
    }

    /// How many embedding requests the gateway made (the router's and the semantic cache's).
    fn embedding_events(&self) -> usize {
        self.events.requests().iter().filter(|r| r.endpoint == Endpoint::Embeddings).count()
    }
}

fn ask(model: &str, text: &str) -> ChatCompletionRequest {
    ChatCompletionRequest { model: model.into(), messages: vec![ChatMessage::user(text)], ..Default::default() }
}

// ---------------------------------------------------------------- router

#[tokio::test]
async fn the_classifier_sends_each_prompt_to_its_nearest_class() {
    let h = harness(|_| {}).await;
    let ctx = h.ctx("sk-acme");
    let small = h.gateway.chat(&ctx, ask("auto", "hello, how are you doing today?")).await.unwrap();
    assert_eq!(small.meta.router.as_deref(), Some("knn:smalltalk"));
    assert_eq!(small.meta.route.as_deref(), Some("scripted/up-mini"));
    let proof = h.gateway.chat(&ctx, ask("auto", "prove by induction that the sum is even")).await.unwrap();
    assert_eq!(proof.meta.router.as_deref(), Some("knn:proofs"));
    assert_eq!(proof.meta.route.as_deref(), Some("scripted/up-large"));
    // The event names the model that served, and the router with its reason.
    let events = h.chat_events();
    assert_eq!(events.iter().map(|e| e.model.as_str()).collect::<Vec<_>>(), ["mini", "large"]);
    let note = events[1].router.as_ref().unwrap();
    assert_eq!((&*note.name, &*note.reason), ("auto", "knn:proofs"));
    // The examples were embedded once, in one call; each request's prompt once more, on the tenant's account.
    assert_eq!(h.upstream.embeddings.load(Ordering::Relaxed), 3);
    assert_eq!(h.embedding_events(), 2, "the prompts' embeddings are the tenant's requests");
}

#[tokio::test]
async fn rules_and_hints_decide_before_the_classifier_and_cost_no_embedding() {
    let h = harness(|_| {}).await;
    let ctx = h.ctx("sk-acme");
    let long = "word ".repeat(5_000);
    let reply = h.gateway.chat(&ctx, ask("auto", &long)).await.unwrap();
    assert_eq!(reply.meta.router.as_deref(), Some("rule:long-context"));
    assert_eq!(reply.meta.route.as_deref(), Some("scripted/up-large"));

    let high = h.ctx("sk-acme").with_quality(Some(QualityHint::High));
    let reply = h.gateway.chat(&high, ask("auto", "tell me a joke")).await.unwrap();
    assert_eq!(
        (reply.meta.router.as_deref(), reply.meta.route.as_deref()),
        (Some("hint:high"), Some("scripted/up-large"))
    );

    let low = h.ctx("sk-acme").with_quality(Some(QualityHint::Low));
    let reply = h.gateway.chat(&low, ask("auto", "prove the theorem by induction")).await.unwrap();
    assert_eq!(
        (reply.meta.router.as_deref(), reply.meta.route.as_deref()),
        (Some("hint:low"), Some("scripted/up-mini"))
    );
    assert_eq!(h.upstream.embeddings.load(Ordering::Relaxed), 0, "no classifier ran");

    // A floor raises the classifier's choice: tools need the large model.
    let mut with_tools = ask("auto", "hello how are you today");
    with_tools.tools = Some(vec![
        serde_json::from_value(json!(
            {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
        ))
        .unwrap(),
    ]);
    let reply = h.gateway.chat(&ctx, with_tools).await.unwrap();
    assert_eq!(reply.meta.router.as_deref(), Some("knn:smalltalk+floor:tools"));
    assert_eq!(reply.meta.route.as_deref(), Some("scripted/up-large"));
}

#[tokio::test]
async fn the_cascade_escalates_a_refusal_and_broken_json_and_charges_both() {
    let h = harness(|_| {}).await;
    let ctx = h.ctx("sk-acme");
    let low = h.ctx("sk-acme").with_quality(Some(QualityHint::Low));
    let reply = h.gateway.chat(&low, ask("auto", "please refuse this")).await.unwrap();
    assert_eq!(reply.meta.router.as_deref(), Some("hint:low+escalated:refusal"));
    assert!(reply.body.choices[0].message.text_content().starts_with("up-large says"));
    let events = h.chat_events();
    assert_eq!(events.iter().map(|e| e.model.as_str()).collect::<Vec<_>>(), ["mini", "large"]);
    assert!(events.iter().all(|e| e.cost > NanoUsd::ZERO), "each candidate tried is paid for: {events:?}");

    let mut json_mode = ask("auto", "hello how are you today, as JSON");
    json_mode.response_format = Some(serde_json::from_value(json!({"type": "json_object"})).unwrap());
    let reply = h.gateway.chat(&ctx, json_mode).await.unwrap();
    assert_eq!(reply.meta.router.as_deref(), Some("knn:smalltalk+escalated:invalid_json"));
    assert_eq!(reply.body.choices[0].message.text_content(), "{\"colour\": \"blue\"}");

    // A good answer from the cheap model is kept: no escalation.
    let reply = h.gateway.chat(&low, ask("auto", "tell me a joke")).await.unwrap();
    assert_eq!(reply.meta.router.as_deref(), Some("hint:low"));
    assert_eq!(h.chat_events().len(), 5);
}

#[tokio::test]
async fn a_streamed_request_is_routed_but_never_cascaded() {
    let h = harness(|_| {}).await;
    let low = h.ctx("sk-acme").with_quality(Some(QualityHint::Low));
    let mut request = ask("auto", "please refuse this");
    request.stream = Some(true);
    let reply = h.gateway.chat_stream(&low, request).await.unwrap();
    assert_eq!(reply.meta.router.as_deref(), Some("hint:low"));
    let mut acc = ChunkAccumulator::default();
    let mut chunks = reply.chunks;
    while let Some(chunk) = chunks.next().await {
        acc.push(&chunk.unwrap());
    }
    assert!(acc.finish().choices[0].message.text_content().starts_with("I'm sorry"), "the stream is as answered");
    assert_eq!(h.upstream.chats.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn the_router_is_what_the_allow_list_names() {
    let h = harness(|c| {
        c.tenants[1].allowed_models = Some(vec!["mini".into()]);
    })
    .await;
    // globex may use `mini` but not the router.
    let err = h.gateway.chat(&h.ctx("sk-globex"), ask("auto", "hello")).await.unwrap_err();
    assert_eq!(err.status(), 403, "{err:?}");
    // acme may use the router and not its candidates directly.
    let err = h.gateway.chat(&h.ctx("sk-acme"), ask("mini", "hello")).await.unwrap_err();
    assert_eq!(err.status(), 403, "{err:?}");
    assert!(h.gateway.chat(&h.ctx("sk-acme"), ask("auto", "hello")).await.is_ok());
}

#[tokio::test]
async fn a_failing_embedding_model_leaves_the_decision_to_the_default() {
    let h = harness(|c| {
        c.models[2].routes = vec![RouteConfig::new("scripted", "up-broken-embed")];
    })
    .await;
    let reply = h.gateway.chat(&h.ctx("sk-acme"), ask("auto", "prove the theorem by induction")).await.unwrap();
    assert_eq!(
        (reply.meta.router.as_deref(), reply.meta.route.as_deref()),
        (Some("default"), Some("scripted/up-mini"))
    );
    // The examples failed once and are not retried within the back-off: the next request embeds nothing.
    let calls = h.upstream.embeddings.load(Ordering::Relaxed);
    h.gateway.chat(&h.ctx("sk-acme"), ask("auto", "prove it again")).await.unwrap();
    assert_eq!(h.upstream.embeddings.load(Ordering::Relaxed), calls);
    // After the back-off they are tried again.
    h.clock.advance(Duration::from_secs(31));
    h.gateway.chat(&h.ctx("sk-acme"), ask("auto", "prove it once more")).await.unwrap();
    assert_eq!(h.upstream.embeddings.load(Ordering::Relaxed), calls + 1);
}

#[tokio::test]
async fn a_router_that_names_unknown_models_is_a_configuration_error() {
    let config = GatewayConfig {
        models: vec![model("mini", "up-mini", MINI)],
        routers: vec![router(json!({"name": "auto", "candidates": [{"model": "mini"}, {"model": "nope"}]}))],
        ..Default::default()
    };
    let err = config.validate(&["scripted"]).unwrap_err();
    assert_eq!(err.key, "routers[0].candidates[1].model", "{err}");
    let clash = GatewayConfig {
        models: vec![model("mini", "up-mini", MINI)],
        routers: vec![router(json!({"name": "mini", "candidates": [{"model": "mini"}]}))],
        ..Default::default()
    };
    assert_eq!(clash.validate(&["scripted"]).unwrap_err().key, "routers[0].name");
}

// ---------------------------------------------------------------- semantic cache

#[tokio::test]
async fn a_paraphrase_is_answered_from_the_semantic_cache_with_its_similarity() {
    let h = harness(|_| {}).await;
    let ctx = h.ctx("sk-globex");
    let first = h.gateway.chat(&ctx, ask("faq", "How do I reset my password on the website?")).await.unwrap();
    assert_eq!(first.meta.cache, CacheStatus::Miss);
    let again = h.gateway.chat(&ctx, ask("faq", "how do I reset my password on the website")).await.unwrap();
    assert_eq!(again.meta.cache, CacheStatus::Semantic);
    let similarity = again.meta.cache_similarity.unwrap();
    assert!((0.8..=1.0).contains(&similarity), "{similarity}");
    assert_eq!(again.body.choices[0].message.text_content(), first.body.choices[0].message.text_content());
    assert_eq!(again.meta.cost, NanoUsd::ZERO);
    assert_eq!(h.upstream.chats.load(Ordering::Relaxed), 1, "the paraphrase cost no chat call");

    // An unrelated question misses.
    let other = h.gateway.chat(&ctx, ask("faq", "What are your opening hours on Sunday?")).await.unwrap();
    assert_eq!(other.meta.cache, CacheStatus::Miss);
    let events = h.chat_events();
    assert_eq!(
        events.iter().map(|e| e.cache).collect::<Vec<_>>(),
        [CacheStatus::Miss, CacheStatus::Semantic, CacheStatus::Miss]
    );
    assert_eq!(h.embedding_events(), 3, "each prompt embedded once, through the tenant's own path");
}

#[tokio::test]
async fn the_semantic_cache_never_crosses_tenants() {
    let h = harness(|_| {}).await;
    let question = "How do I reset my password on the website?";
    h.gateway.chat(&h.ctx("sk-globex"), ask("faq", question)).await.unwrap();
    let other = h.gateway.chat(&h.ctx("sk-initech"), ask("faq", "how do I reset my password on the website")).await;
    assert_eq!(other.unwrap().meta.cache, CacheStatus::Miss);
    assert_eq!(h.upstream.chats.load(Ordering::Relaxed), 2);
}

#[tokio::test]
async fn the_semantic_cache_refuses_tools_several_choices_hot_sampling_and_directives() {
    let h = harness(|_| {}).await;
    let ctx = h.ctx("sk-globex");
    let question = "How do I reset my password on the website?";
    h.gateway.chat(&ctx, ask("faq", question)).await.unwrap();
    let paraphrase = || ask("faq", "how do I reset my password on the website");

    let mut tools = paraphrase();
    tools.tools = Some(vec![
        serde_json::from_value(json!(
            {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
        ))
        .unwrap(),
    ]);
    let mut several = paraphrase();
    several.n = Some(2);
    let mut hot = paraphrase();
    hot.temperature = Some(1.5);
    for (what, request) in [("tools", tools), ("n", several), ("temperature", hot)] {
        let reply = h.gateway.chat(&ctx, request).await.unwrap();
        assert_ne!(reply.meta.cache, CacheStatus::Semantic, "{what}");
    }
    let no_cache = RequestContext::new(h.gateway.authenticate("sk-globex").unwrap(), "r", CacheDirective::NoCache);
    assert_ne!(h.gateway.chat(&no_cache, paraphrase()).await.unwrap().meta.cache, CacheStatus::Semantic);
    // None of those was embedded: only the first question was.
    assert_eq!(h.embedding_events(), 1);
    // A paraphrase without those still hits (the no-cache answer above was stored by exact match).
    let reply = h.gateway.chat(&ctx, ask("faq", "how can I reset my password on the website")).await.unwrap();
    assert_eq!(reply.meta.cache, CacheStatus::Semantic);
}

#[tokio::test]
async fn semantic_entries_expire_with_the_cache_ttl_and_stay_within_their_bound() {
    let h = harness(|c| {
        c.models[3].cache_ttl_secs = Some(60);
        c.models[3].semantic_max_entries = 2;
    })
    .await;
    let ctx = h.ctx("sk-globex");
    h.gateway.chat(&ctx, ask("faq", "How do I reset my password on the website?")).await.unwrap();
    h.clock.advance(Duration::from_secs(61));
    let late = h.gateway.chat(&ctx, ask("faq", "how do I reset my password on the website")).await.unwrap();
    assert_eq!(late.meta.cache, CacheStatus::Miss, "expired");

    // Three more questions with a bound of two: the oldest is forgotten.
    for q in ["what are your opening hours on sunday", "where is your office in berlin", "who founded the company"] {
        h.gateway.chat(&ctx, ask("faq", q)).await.unwrap();
    }
    let oldest = h.gateway.chat(&ctx, ask("faq", "What are your opening hours on Sunday?")).await.unwrap();
    assert_eq!(oldest.meta.cache, CacheStatus::Miss, "evicted by the bound");
    let newest = h.gateway.chat(&ctx, ask("faq", "Who founded the company?")).await.unwrap();
    assert_eq!(newest.meta.cache, CacheStatus::Semantic);
}

#[tokio::test]
async fn a_streamed_request_is_replayed_from_the_semantic_cache() {
    let h = harness(|_| {}).await;
    let ctx = h.ctx("sk-globex");
    let first = h.gateway.chat(&ctx, ask("faq", "How do I reset my password on the website?")).await.unwrap();
    let mut request = ask("faq", "how do I reset my password on the website");
    request.stream = Some(true);
    let reply = h.gateway.chat_stream(&ctx, request).await.unwrap();
    assert_eq!(reply.meta.cache, CacheStatus::Semantic);
    let mut acc = ChunkAccumulator::default();
    let mut chunks = reply.chunks;
    while let Some(chunk) = chunks.next().await {
        acc.push(&chunk.unwrap());
    }
    assert_eq!(acc.finish().choices[0].message.text_content(), first.body.choices[0].message.text_content());
}

#[tokio::test]
async fn semantic_cache_configuration_is_checked() {
    let mut config = GatewayConfig {
        models: vec![ModelConfig { cache: CachePolicy::Semantic, ..model("faq", "up-mini", MINI) }],
        ..Default::default()
    };
    assert_eq!(config.validate(&["scripted"]).unwrap_err().key, "models[0].semantic_embedding_model");
    config.models[0].semantic_embedding_model = Some("faq".into());
    let err = config.validate(&["scripted"]).unwrap_err();
    assert!(err.reason.contains("not an embedding model"), "{err}");
}
