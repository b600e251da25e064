//! The gateway's decisions, end to end in process: virtual time, the deterministic mock provider and the
//! in-memory backends.

#![cfg(feature = "memory")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use chitty_core::access::{AccessStore, TenantUpdate};
use chitty_core::gateway::{
    Gateway, GatewayConfig, ModelConfig, ModelKind, RequestContext, RouteConfig, TenantConfig, api_key_digest,
};
use chitty_core::keys::{CacheDirective, CachePolicy};
use chitty_core::wire::{
    ChatCompletionRequest, ChatCompletionResponse, ChatMessage, ChunkAccumulator, CompletionAccumulator,
    CompletionChoice, CompletionRequest, CompletionResponse, EmbeddingInput, EmbeddingRequest, EmbeddingVector,
    EncodingFormat, PromptInput, StreamOptions,
};
use chitty_core::{
    BudgetStore, CacheStatus, Capabilities, Capability, CompletionChunkStream, Error, Event, ManualClock, ManualTimer,
    ModelPrice, NanoUsd, Provider, RandomSource, SeededRandom, Timestamp,
};
use chitty_providers::memory::{CollectingSink, MemoryAccessStore, MemoryBudgetStore, MemoryCache};
use chitty_providers::runtime::{TokioRuntimeExt, TokioSpawner};
use chitty_testkit::mock::MockProvider;
use futures::StreamExt;

const PRICE: ModelPrice = ModelPrice::from_micros_per_mtok(1_000_000, 2_000_000); // $1 in, $2 out per Mtok

struct Harness {
    gateway: Gateway,
    clock: ManualClock,
    primary: Arc<MockProvider>,
    fallback: Arc<MockProvider>,
    budgets: Arc<MemoryBudgetStore>,
    events: Arc<CollectingSink>,
    access: Arc<MemoryAccessStore>,
}

fn model(name: &str, routes: &[(&str, &str)]) -> ModelConfig {
    ModelConfig {
        routes: routes.iter().map(|(p, m)| RouteConfig::new(*p, *m)).collect(),
        price: PRICE,
        cache: CachePolicy::Deterministic,
        max_output_tokens: 1_000,
        ..ModelConfig::new(name)
    }
}

fn tenant(id: &str, key: &str) -> TenantConfig {
    TenantConfig::new(id, &api_key_digest(key))
}

async fn harness(tweak: impl FnOnce(&mut GatewayConfig)) -> Harness {
    let mut config = GatewayConfig {
        models: vec![
            model("chat", &[("primary", "up-chat"), ("fallback", "up-chat-b")]),
            ModelConfig { kind: ModelKind::Embedding, ..model("embed", &[("primary", "up-embed")]) },
            model("private", &[("primary", "up-private")]),
        ],
        tenants: vec![
            TenantConfig { budget_nano_usd: Some(NanoUsd::ONE_USD), ..tenant("acme", "sk-acme") },
            TenantConfig { allowed_models: Some(vec!["chat".into()]), ..tenant("globex", "sk-globex") },
        ],
        ..Default::default()
    };
    tweak(&mut config);
    let clock = ManualClock::new(common::START);
    let primary = Arc::new(MockProvider::new("primary"));
    let fallback = Arc::new(MockProvider::new("fallback"));
    let budgets = Arc::new(MemoryBudgetStore::new());
    let events = Arc::new(CollectingSink::new());
    let access = Arc::new(MemoryAccessStore::new());
    let gateway = common::on_virtual_time(Gateway::builder(config), &clock)
        .provider(primary.clone())
        .provider(fallback.clone())
        .cache(Arc::new(MemoryCache::new(1 << 24)))
        .budgets(budgets.clone())
        .access(access.clone())
        .events(events.clone())
        .build()
        .await
        .unwrap();
    Harness { gateway, clock, primary, fallback, budgets, events, access }
}

impl Harness {
    fn ctx(&self, key: &str) -> RequestContext {
        common::context(&self.gateway, key)
    }

    /// The tenant's own budget account now: its limit as the gateway knows it, its spend from the store.
    async fn balance(&self, tenant: &str) -> chitty_core::Balance {
        let limit = self.gateway.tenant(tenant).and_then(|t| t.budget()).map_or(u64::MAX, |b| b.0);
        chitty_testkit::budget::balance(self.budgets.as_ref(), tenant, limit, self.clock.now()).await
    }

    /// Changes a tenant's limit through the access store, as the admin API does.
    async fn set_limit(&self, tenant: &str, limit: NanoUsd) {
        let update = TenantUpdate { budget: Some(Some(limit)), ..TenantUpdate::default() };
        self.access.update_tenant(tenant, &update).await.unwrap();
        self.gateway.reload_access().await.unwrap();
    }
}

trait ClockExt {
    fn now(&self) -> Timestamp;
}
impl ClockExt for ManualClock {
    fn now(&self) -> Timestamp {
        chitty_core::Clock::now(self)
    }
}

fn chat(text: &str) -> ChatCompletionRequest {
    ChatCompletionRequest {
        model: "chat".into(),
        messages: vec![ChatMessage::user(text)],
        temperature: Some(0.0),
        ..Default::default()
    }
}

#[tokio::test]
async fn authenticates_by_key_digest_and_checks_models() {
    let h = harness(|_| {}).await;
    assert!(matches!(h.gateway.authenticate("sk-wrong"), Err(Error::InvalidApiKey)));
    assert!(matches!(h.gateway.authenticate(""), Err(Error::InvalidApiKey)));
    assert_eq!(h.gateway.authenticate("sk-acme").unwrap().tenant.id(), "acme");

    let globex = h.ctx("sk-globex");
    let err =
        h.gateway.chat(&globex, ChatCompletionRequest { model: "private".into(), ..chat("x") }).await.unwrap_err();
    assert!(matches!(err, Error::ModelNotAllowed { .. }) && err.status() == 403, "{err:?}");
    let err = h.gateway.chat(&globex, ChatCompletionRequest { model: "nope".into(), ..chat("x") }).await.unwrap_err();
    assert_eq!((err.status(), err.code()), (404, Some("model_not_found")));
    let ids: Vec<_> = h.gateway.models(&globex).data.into_iter().map(|m| m.id).collect();
    assert_eq!(ids, ["chat"], "the model list shows only what the tenant may use");

    let acme = h.ctx("sk-acme");
    let err = h.gateway.chat(&acme, ChatCompletionRequest { messages: vec![], ..chat("x") }).await.unwrap_err();
    assert_eq!((err.status(), err.param()), (400, Some("messages")));
    let err = h.gateway.chat(&acme, ChatCompletionRequest { temperature: Some(3.0), ..chat("x") }).await.unwrap_err();
    assert_eq!(err.param(), Some("temperature"));
    let err = h.gateway.chat(&acme, ChatCompletionRequest { model: "embed".into(), ..chat("x") }).await.unwrap_err();
    assert_eq!((err.status(), err.param()), (400, Some("model")), "chat against an embedding model");
    assert_eq!(h.primary.calls(), 0, "nothing invalid reached a provider");
}

#[tokio::test]
async fn caches_deterministic_requests_per_tenant_across_stream_modes() {
    let h = harness(|c| c.tenants.push(tenant("initech", "sk-initech"))).await;
    let acme = h.ctx("sk-acme");
    let first = h.gateway.chat(&acme, chat("cache me")).await.unwrap();
    assert_eq!(first.meta.cache, CacheStatus::Miss);
    let second = h.gateway.chat(&acme, chat("cache me")).await.unwrap();
    assert_eq!(second.meta.cache, CacheStatus::Hit);
    assert_eq!(second.body, first.body);
    assert_eq!(second.meta.cost, NanoUsd::ZERO, "hits are free");
    assert_eq!(h.primary.calls(), 1);

    // The streamed form of the same request is answered from the plain entry, with identical text.
    let streamed = ChatCompletionRequest { stream: Some(true), ..chat("cache me") };
    let reply = h.gateway.chat_stream(&acme, streamed).await.unwrap();
    assert_eq!(reply.meta.cache, CacheStatus::Hit);
    let mut acc = ChunkAccumulator::default();
    let chunks: Vec<_> = reply.chunks.collect().await;
    assert!(chunks.len() > 2);
    chunks.iter().for_each(|c| acc.push(c.as_ref().unwrap()));
    assert_eq!(acc.finish().choices[0].message.text_content(), first.body.choices[0].message.text_content());
    assert_eq!(h.primary.calls(), 1);

    // Another tenant never sees acme's entry.
    let initech = h.ctx("sk-initech");
    assert_eq!(h.gateway.chat(&initech, chat("cache me")).await.unwrap().meta.cache, CacheStatus::Miss);
    assert_eq!(h.primary.calls(), 2);

    // Sampling requests are not cached under the deterministic policy.
    let sampled = ChatCompletionRequest { temperature: Some(0.8), ..chat("cache me") };
    assert_eq!(h.gateway.chat(&acme, sampled).await.unwrap().meta.cache, CacheStatus::Bypass);

    // no-cache answers fresh and refreshes the entry; no-store neither reads nor writes.
    let mut fresh = acme.clone();
    fresh.cache = CacheDirective::NoCache;
    assert_eq!(h.gateway.chat(&fresh, chat("cache me")).await.unwrap().meta.cache, CacheStatus::Bypass);
    let mut nostore = acme.clone();
    nostore.cache = CacheDirective::NoStore;
    assert_eq!(h.gateway.chat(&nostore, chat("never stored")).await.unwrap().meta.cache, CacheStatus::Bypass);
    assert_eq!(h.gateway.chat(&acme, chat("never stored")).await.unwrap().meta.cache, CacheStatus::Miss);
}

#[tokio::test]
async fn json_answers_share_the_pipeline_and_the_cache_with_typed_ones() {
    let h = harness(|_| {}).await;
    let acme = h.ctx("sk-acme");
    let miss = h.gateway.chat_passthrough(&acme, chat("as json")).await.unwrap();
    assert_eq!(miss.meta.cache, CacheStatus::Miss);
    assert!(miss.meta.cost > NanoUsd::ZERO && miss.meta.cost <= miss.meta.reserved, "{:?}", miss.meta);
    let spent = h.balance("acme").await.spent;
    assert_eq!(spent, miss.meta.cost, "settled from the usage in the JSON");
    let hit = h.gateway.chat_passthrough(&acme, chat("as json")).await.unwrap();
    assert_eq!(hit.meta.cache, CacheStatus::Hit);
    assert_eq!(hit.body.json(), miss.body.json(), "a hit answers with the stored bytes");
    assert_eq!(h.primary.calls(), 1);

    // The typed call reads the same entry, and a typed miss is served as JSON later.
    let typed = h.gateway.chat(&acme, chat("as json")).await.unwrap();
    assert_eq!(typed.meta.cache, CacheStatus::Hit);
    assert_eq!(typed.body, miss.body.to_response().unwrap());
    let typed_miss = h.gateway.chat(&acme, chat("typed first")).await.unwrap();
    let json_hit = h.gateway.chat_passthrough(&acme, chat("typed first")).await.unwrap();
    assert_eq!((typed_miss.meta.cache, json_hit.meta.cache), (CacheStatus::Miss, CacheStatus::Hit));
    assert_eq!(json_hit.body.to_response().unwrap(), typed_miss.body);
    assert_eq!(h.primary.calls(), 2);

    // Errors are the same as the typed call's.
    let err = h.gateway.chat_passthrough(&acme, ChatCompletionRequest { model: "nope".into(), ..chat("x") }).await;
    assert_eq!(err.unwrap_err().status(), 404);
}

#[tokio::test]
async fn shared_cache_group_is_opt_in() {
    let h = harness(|c| {
        c.tenants = vec![
            TenantConfig { cache_group: Some("pool".into()), ..tenant("a", "sk-a") },
            TenantConfig { cache_group: Some("pool".into()), ..tenant("b", "sk-b") },
        ];
    })
    .await;
    h.gateway.chat(&h.ctx("sk-a"), chat("shared")).await.unwrap();
    assert_eq!(h.gateway.chat(&h.ctx("sk-b"), chat("shared")).await.unwrap().meta.cache, CacheStatus::Hit);
}

#[tokio::test]
async fn reserves_worst_case_clamps_max_tokens_and_settles_from_usage() {
    let h = harness(|c| c.tenants[0].budget_nano_usd = Some(NanoUsd(10_000_000))).await; // $0.01
    let acme = h.ctx("sk-acme");
    let req = ChatCompletionRequest { temperature: Some(0.5), ..chat("how much does this cost?") };
    let prompt = chitty_core::tokens::estimate_chat_prompt(&req);
    let reply = h.gateway.chat(&acme, req).await.unwrap();
    // No max_tokens from the client: the gateway reserved the model's max output and set it as the cap.
    assert_eq!(reply.meta.reserved, PRICE.cost(prompt, 1_000));
    assert_eq!(reply.meta.max_tokens_set, Some(1_000));
    let usage = reply.body.usage.clone().unwrap();
    assert_eq!(reply.meta.cost, PRICE.cost_of_usage(&usage));
    let b = h.balance("acme").await;
    assert_eq!((b.spent, b.reserved), (reply.meta.cost, NanoUsd::ZERO), "settled from usage, the rest refunded");

    // Leave less than the model's max output: the cap shrinks to what the budget pays.
    h.set_limit("acme", b.spent + PRICE.cost(prompt, 100)).await;
    // A request authenticates again and sees the new limit.
    let acme = h.ctx("sk-acme");
    let reply = h
        .gateway
        .chat(&acme, ChatCompletionRequest { temperature: Some(0.5), ..chat("how much does this cost?") })
        .await
        .unwrap();
    assert_eq!(reply.meta.max_tokens_set, Some(100));

    // Too little left for even the minimal answer: 429 insufficient_quota, nothing called.
    let spent = h.balance("acme").await.spent;
    h.set_limit("acme", spent + PRICE.cost(prompt, 5)).await;
    // A request authenticates again and sees the new limit.
    let acme = h.ctx("sk-acme");
    let calls = h.primary.calls();
    let err = h
        .gateway
        .chat(&acme, ChatCompletionRequest { temperature: Some(0.5), ..chat("how much does this cost?") })
        .await
        .unwrap_err();
    assert_eq!((err.status(), err.code()), (429, Some("insufficient_quota")));
    assert_eq!(h.primary.calls(), calls);

    // A client cap the budget cannot pay is refused too, even if a smaller answer would fit.
    let err = h.gateway.chat(&acme, ChatCompletionRequest { max_tokens: Some(500), ..chat("x") }).await.unwrap_err();
    assert!(matches!(err, Error::BudgetExhausted { .. }));
}

#[tokio::test]
async fn failures_release_the_reservation_and_fall_back() {
    let h = harness(|c| c.defaults.attempts_per_route = 1).await;
    let acme = h.ctx("sk-acme");
    h.primary.fail_next(503, "primary down");
    let reply = h.gateway.chat(&acme, chat("fallback please")).await.unwrap();
    assert_eq!(reply.meta.provider.as_deref(), Some("fallback"));
    assert_eq!(h.fallback.calls(), 1);

    h.primary.fail_next(500, "boom");
    h.fallback.fail_next(502, "also down");
    let before = h.balance("acme").await;
    let err = h.gateway.chat(&acme, chat("nobody answers")).await.unwrap_err();
    assert_eq!(err.status(), 502);
    let after = h.balance("acme").await;
    assert_eq!((after.spent, after.reserved), (before.spent, NanoUsd::ZERO), "a failed call costs nothing");

    // A 4xx from upstream is the request's fault: no retry, no fallback.
    let (p, f) = (h.primary.calls(), h.fallback.calls());
    h.primary.fail_next(400, "bad request upstream");
    let err = h.gateway.chat(&acme, chat("bad")).await.unwrap_err();
    assert_eq!(err.status(), 400);
    assert_eq!((h.primary.calls(), h.fallback.calls()), (p + 1, f));
}

#[tokio::test]
async fn retries_with_backoff_on_virtual_time_and_opens_circuits() {
    let h = harness(|c| {
        c.defaults.attempts_per_route = 3;
        c.defaults.backoff_base_ms = 100;
        c.defaults.breaker_failures = 4;
        c.defaults.breaker_open_ms = 30_000;
    })
    .await;
    let acme = h.ctx("sk-acme");
    h.primary.fail_next(503, "1");
    h.primary.fail_next(503, "2");
    let t0 = h.clock.now();
    let reply = h.gateway.chat(&acme, chat("retry me")).await.unwrap();
    assert_eq!(reply.meta.provider.as_deref(), Some("primary"));
    // Full jitter: each wait is drawn below the doubling bound (100 ms, then 200 ms) from the injected source.
    let draws = SeededRandom::new(common::RANDOM_SEED);
    let waits: Vec<Duration> =
        (0..2).map(|retry| chitty_core::gateway::Defaults::default().backoff(retry, draws.next_u64())).collect();
    assert!(waits[0] <= Duration::from_millis(100) && waits[1] <= Duration::from_millis(200), "{waits:?}");
    let slept: u128 = waits.iter().map(Duration::as_millis).sum();
    assert_eq!(h.clock.now().since(t0).as_millis(), slept, "jittered backoff on virtual time, no real sleep");

    // Four consecutive failures open the primary's circuit: later requests skip it.
    for i in 0..4 {
        h.primary.fail_next(503, format!("down {i}"));
    }
    h.gateway.chat(&acme, chat("first")).await.unwrap(); // 3 failures on primary, then fallback
    h.gateway.chat(&acme, chat("second")).await.unwrap(); // 4th failure opens the circuit
    let calls = h.primary.calls();
    let reply = h.gateway.chat(&acme, chat("third")).await.unwrap();
    assert_eq!(reply.meta.provider.as_deref(), Some("fallback"));
    assert_eq!(h.primary.calls(), calls, "open circuit: primary not called");
    let opened = h.events.events().iter().filter(|e| matches!(e, Event::CircuitOpened { .. })).count();
    assert_eq!(opened, 1);
    h.clock.advance(Duration::from_secs(31));
    let reply = h.gateway.chat(&acme, chat("fourth")).await.unwrap();
    assert_eq!(reply.meta.provider.as_deref(), Some("primary"), "a probe after the open period closes it");
}

#[tokio::test]
async fn slow_upstreams_time_out() {
    let slow = Arc::new(MockProvider::new("slow").with_latency(Duration::from_secs(5)));
    let clock = ManualClock::new(Timestamp(0));
    let config = GatewayConfig {
        models: vec![model("chat", &[("slow", "s")])],
        tenants: vec![tenant("t", "sk-t")],
        defaults: chitty_core::gateway::Defaults { timeout_ms: 1_000, attempts_per_route: 1, ..Default::default() },
        ..Default::default()
    };
    let gateway = Gateway::builder(config)
        .provider(slow.clone())
        .runtime(Arc::new(clock.clone()), Arc::new(ManualTimer::new(clock.clone())), Arc::new(TokioSpawner))
        .build()
        .await
        .unwrap();
    let ctx = RequestContext::new(gateway.authenticate("sk-t").unwrap(), "r", CacheDirective::Default);
    let err = gateway.chat(&ctx, chat("hello")).await.unwrap_err();
    assert!(matches!(err, Error::UpstreamTimeout { .. }) && err.status() == 504, "{err:?}");
}

#[tokio::test]
async fn rate_limits_per_tenant_on_virtual_time() {
    let h = harness(|c| {
        c.tenants[1].requests_per_minute = Some(60);
        c.tenants[1].burst = Some(2);
    })
    .await;
    let globex = h.ctx("sk-globex");
    h.gateway.chat(&globex, chat("1")).await.unwrap();
    h.gateway.chat(&globex, chat("2")).await.unwrap();
    let err = h.gateway.chat(&globex, chat("3")).await.unwrap_err();
    assert_eq!((err.status(), err.code()), (429, Some("rate_limit_exceeded")));
    assert_eq!(err.retry_after(), Some(Duration::from_secs(1)));
    h.gateway.chat(&h.ctx("sk-acme"), chat("other tenants are unaffected")).await.unwrap();
    h.clock.advance(Duration::from_secs(1));
    h.gateway.chat(&globex, chat("4")).await.unwrap();
}

#[tokio::test]
async fn streams_forward_usage_only_when_asked_and_settle_at_the_end() {
    let h = harness(|_| {}).await;
    let acme = h.ctx("sk-acme");
    let plain = ChatCompletionRequest { temperature: Some(0.7), ..chat("stream to me") };
    let expected = h.gateway.chat(&acme, plain.clone()).await.unwrap();
    let spent_before = h.balance("acme").await.spent;

    let without = ChatCompletionRequest { stream: Some(true), ..plain.clone() };
    let chunks: Vec<_> = h.gateway.chat_stream(&acme, without).await.unwrap().chunks.collect().await;
    assert!(chunks.iter().all(|c| c.as_ref().unwrap().usage.is_none()), "no usage chunk unless asked");
    let mut acc = ChunkAccumulator::default();
    chunks.iter().for_each(|c| acc.push(c.as_ref().unwrap()));
    assert_eq!(acc.finish().choices[0].message.text_content(), expected.body.choices[0].message.text_content());
    let b = h.balance("acme").await;
    assert_eq!(b.spent.saturating_sub(spent_before), expected.meta.cost, "settled from the upstream's usage chunk");
    assert_eq!(b.reserved, NanoUsd::ZERO);

    let with = ChatCompletionRequest {
        stream: Some(true),
        stream_options: Some(StreamOptions { include_usage: Some(true), ..Default::default() }),
        ..plain
    };
    let chunks: Vec<_> = h.gateway.chat_stream(&acme, with).await.unwrap().chunks.collect().await;
    let last = chunks.last().unwrap().as_ref().unwrap();
    assert!(last.choices.is_empty() && last.usage == expected.body.usage, "the usage chunk comes last");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_stream_settles_for_what_was_produced() {
    let h = harness(|_| {}).await;
    let acme = h.ctx("sk-acme");
    let req = ChatCompletionRequest { stream: Some(true), temperature: Some(0.9), ..chat("a long answer please") };
    let mut reply = h.gateway.chat_stream(&acme, req).await.unwrap();
    assert!(reply.meta.reserved > NanoUsd::ZERO);
    let first = reply.chunks.next().await.unwrap().unwrap();
    assert!(first.choices[0].delta.content.is_some());
    assert!(h.balance("acme").await.reserved > NanoUsd::ZERO, "held while streaming");
    drop(reply);
    // Settlement runs on the spawner; wait for it (bounded).
    for _ in 0..100 {
        if h.balance("acme").await.reserved == NanoUsd::ZERO {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let b = h.balance("acme").await;
    assert_eq!(b.reserved, NanoUsd::ZERO, "the reservation was settled after the drop");
    assert!(b.spent > NanoUsd::ZERO, "what was produced is charged");
    let interrupted = h.events.requests().iter().any(|r| r.stream && r.status == 499);
    assert!(interrupted, "the interrupted stream is reported");
}

#[tokio::test]
async fn expired_leases_return_budget() {
    let h = harness(|c| c.defaults.lease_secs = 60).await;
    let r = h
        .budgets
        .reserve(chitty_testkit::budget::request(
            "acme",
            &chitty_testkit::budget::tenant_account(NanoUsd::ONE_USD.0),
            NanoUsd::ONE_USD.0,
            NanoUsd::ONE_USD.0,
            h.clock.now(),
        ))
        .await
        .unwrap();
    let acme = h.ctx("sk-acme");
    assert!(
        matches!(h.gateway.chat(&acme, chat("blocked")).await, Err(Error::BudgetExhausted { .. })),
        "a crashed replica holds it all"
    );
    h.clock.advance(Duration::from_secs(61));
    h.gateway.chat(&acme, chat("unblocked")).await.unwrap();
    drop(r);
}

#[tokio::test]
async fn embeddings_and_completions() {
    let h = harness(|_| {}).await;
    let acme = h.ctx("sk-acme");
    let req = EmbeddingRequest {
        model: "embed".into(),
        input: EmbeddingInput::Texts(vec!["a".into(), "b".into()]),
        ..Default::default()
    };
    let floats = h.gateway.embeddings(&acme, req.clone()).await.unwrap();
    assert_eq!(floats.body.data.len(), 2);
    let b64 = h
        .gateway
        .embeddings(&acme, EmbeddingRequest { encoding_format: Some(EncodingFormat::Base64), ..req })
        .await
        .unwrap();
    assert_eq!(b64.meta.cache, CacheStatus::Hit, "encoding does not change the key");
    assert!(matches!(b64.body.data[0].embedding, EmbeddingVector::Base64(_)));
    assert_eq!(b64.body.data[0].embedding.to_floats().unwrap(), floats.body.data[0].embedding.to_floats().unwrap());

    let completion = CompletionRequest {
        model: "chat".into(),
        prompt: PromptInput::Text("Say this is a test".into()),
        ..Default::default()
    };
    let reply = h.gateway.completion(&acme, completion).await.unwrap();
    assert_eq!(reply.body.choices.len(), 1);
    assert!(reply.body.usage.unwrap().completion_tokens <= 16, "legacy default max_tokens");
    let request_events = h.events.events().into_iter().filter(|e| matches!(e, Event::Request(_))).count();
    assert_eq!(request_events, 3);
    assert!(h.primary.capabilities().contains(chitty_core::Capability::Embeddings));
}

#[tokio::test]
async fn legacy_completions_stream_settle_cache_and_replay() {
    let h = harness(|_| {}).await;
    let acme = h.ctx("sk-acme");
    let plain = CompletionRequest {
        model: "chat".into(),
        prompt: PromptInput::Text("Stream a legacy completion".into()),
        max_tokens: Some(12),
        temperature: Some(0.0),
        ..Default::default()
    };
    let streamed = CompletionRequest { stream: Some(true), ..plain.clone() };
    let with_usage = Some(StreamOptions { include_usage: Some(true), ..Default::default() });
    let spent_before = h.balance("acme").await.spent;

    // A miss streams from the provider: no usage chunk unless asked, settled from the upstream's usage.
    let reply = h.gateway.completion_stream(&acme, streamed.clone()).await.unwrap();
    assert_eq!(reply.meta.cache, CacheStatus::Miss);
    let chunks: Vec<_> = reply.chunks.map(Result::unwrap).collect().await;
    assert!(chunks.len() > 2, "a word per chunk: {chunks:?}");
    assert!(chunks.iter().all(|c| c.usage.is_none() && c.object == "text_completion"));
    let mut acc = CompletionAccumulator::default();
    chunks.iter().for_each(|c| acc.push(c));
    let text = acc.finish().choices[0].text.clone();
    let b = h.balance("acme").await;
    assert_eq!(b.reserved, NanoUsd::ZERO);
    let charged = b.spent.saturating_sub(spent_before);
    assert!(charged > NanoUsd::ZERO, "the stream was charged");

    // The finished stream was cached: the plain request is a hit with the same text and costs nothing more.
    let hit = h.gateway.completion(&acme, plain.clone()).await.unwrap();
    assert_eq!(hit.meta.cache, CacheStatus::Hit);
    assert_eq!(hit.body.choices[0].text, text);
    assert_eq!(hit.meta.cost, NanoUsd::ZERO, "hits are free");
    let usage = hit.body.usage.clone().unwrap();
    assert_eq!(charged, PRICE.cost_of_usage(&usage), "the stream settled from the usage it reported");

    // A cached answer is replayed as chunks, ending with usage when asked.
    let asked = CompletionRequest { stream_options: with_usage.clone(), ..streamed };
    let reply = h.gateway.completion_stream(&acme, asked).await.unwrap();
    assert_eq!(reply.meta.cache, CacheStatus::Hit);
    let chunks: Vec<_> = reply.chunks.map(Result::unwrap).collect().await;
    let last = chunks.last().unwrap();
    assert!(last.choices.is_empty() && last.usage.as_ref() == Some(&usage), "the usage chunk comes last");
    let replayed: String = chunks.iter().flat_map(|c| &c.choices).map(|c| c.text.as_str()).collect();
    assert_eq!(replayed, text);
    assert_eq!(h.primary.calls(), 1, "one upstream call for all three requests");

    // `stream_options` without `stream` is refused, as OpenAI does; `stream: false` is refused by the stream call.
    let err = h.gateway.completion(&acme, CompletionRequest { stream_options: with_usage, ..plain.clone() }).await;
    assert_eq!(err.unwrap_err().param(), Some("stream_options"));
    let err = h.gateway.completion_stream(&acme, plain).await.unwrap_err();
    assert_eq!(err.param(), Some("stream"));
    let streams: Vec<u16> = h.events.requests().iter().filter(|r| r.stream).map(|r| r.status).collect();
    assert_eq!(streams, [200, 200, 400], "every stream is reported, the refused one too");
}

/// A gateway with one chat model, `chat`, routed to `provider` (named `p`), and tenant `acme` with a budget.
async fn single_route_gateway(provider: Arc<dyn Provider>) -> (Gateway, Arc<MemoryBudgetStore>) {
    let config = GatewayConfig {
        models: vec![model("chat", &[("p", "up-chat")])],
        tenants: vec![TenantConfig { budget_nano_usd: Some(NanoUsd::ONE_USD), ..tenant("acme", "sk-acme") }],
        ..Default::default()
    };
    let budgets = Arc::new(MemoryBudgetStore::new());
    let gateway = Gateway::builder(config)
        .provider(provider)
        .cache(Arc::new(MemoryCache::new(1 << 20)))
        .budgets(budgets.clone())
        .tokio_runtime()
        .build()
        .await
        .unwrap();
    (gateway, budgets)
}

fn legacy(prompt: &str) -> CompletionRequest {
    CompletionRequest {
        model: "chat".into(),
        prompt: PromptInput::Text(prompt.into()),
        max_tokens: Some(12),
        temperature: Some(0.0),
        stream: Some(true),
        ..Default::default()
    }
}

#[tokio::test]
async fn providers_that_complete_but_do_not_stream_still_serve_streamed_completions() {
    let caps = Capabilities::of(&[Capability::Chat, Capability::Completions]);
    let provider = Arc::new(MockProvider::new("p").with_capabilities(caps));
    let (gateway, _) = single_route_gateway(provider.clone()).await;
    let ctx = RequestContext::new(gateway.authenticate("sk-acme").unwrap(), "r", CacheDirective::Default);
    let expected = provider.completion(CompletionRequest { stream: None, ..legacy("no stream here") }).await.unwrap();
    let reply = gateway.completion_stream(&ctx, legacy("no stream here")).await.unwrap();
    let chunks: Vec<_> = reply.chunks.map(Result::unwrap).collect().await;
    assert!(chunks.iter().all(|c| c.usage.is_none()), "usage only when asked");
    let text: String = chunks.iter().flat_map(|c| &c.choices).map(|c| c.text.as_str()).collect();
    assert_eq!(text, expected.choices[0].text);
    let direct = provider.completion_stream(legacy("x")).await.map(drop);
    assert!(
        matches!(direct, Err(Error::Unsupported { capability: Capability::CompletionsStream, .. })),
        "the provider itself refuses to stream: {direct:?}"
    );
}

/// Streams the given legacy-completion chunks, whatever the request.
#[derive(Debug)]
struct ScriptedStream(Vec<CompletionResponse>);

#[async_trait::async_trait]
impl Provider for ScriptedStream {
    fn name(&self) -> &str {
        "p"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::of(&[Capability::Completions, Capability::CompletionsStream])
    }

    async fn chat(&self, _request: ChatCompletionRequest) -> chitty_core::Result<ChatCompletionResponse> {
        unreachable!("only streams are asked for")
    }

    async fn completion_stream(&self, _request: CompletionRequest) -> chitty_core::Result<CompletionChunkStream> {
        Ok(Box::pin(futures::stream::iter(self.0.clone().into_iter().map(Ok))))
    }
}

#[tokio::test]
async fn a_chunk_for_a_choice_the_request_did_not_ask_for_ends_the_stream_with_an_error() {
    let mut answer = MockProvider::new("m").completion(legacy("index me")).await.unwrap();
    let good = answer.clone();
    answer.choices[0].index = u32::MAX;
    let (gateway, budgets) = single_route_gateway(Arc::new(ScriptedStream(vec![good, answer]))).await;
    let ctx = RequestContext::new(gateway.authenticate("sk-acme").unwrap(), "r", CacheDirective::Default);
    let items: Vec<_> = gateway.completion_stream(&ctx, legacy("index me")).await.unwrap().chunks.collect().await;
    assert_eq!(items.len(), 2, "{items:?}");
    assert!(items[0].is_ok());
    let err = items[1].as_ref().unwrap_err();
    assert!(matches!(err, Error::Upstream { .. }) && err.to_string().contains("choice 4294967295"), "{err}");
    let balance = chitty_testkit::budget::balance(
        budgets.as_ref(),
        "acme",
        gateway.tenant("acme").unwrap().budget().unwrap().0,
        gateway.now(),
    )
    .await;
    assert_eq!(balance.reserved, NanoUsd::ZERO, "settled");
}

#[tokio::test]
async fn echoed_prompts_are_not_charged_as_output_when_a_stream_reports_no_usage() {
    // Two streams without usage, of the same answer, one echoing a long prompt: both settle the same.
    let prompt = "a long prompt that is echoed back ".repeat(20);
    let answer = MockProvider::new("m").completion(legacy(&prompt)).await.unwrap();
    let echoed = CompletionResponse {
        choices: vec![CompletionChoice {
            text: format!("{prompt}{}", answer.choices[0].text),
            ..answer.choices[0].clone()
        }],
        ..answer.clone()
    };
    let mut spent = Vec::new();
    for (stream, echo) in [(answer, None), (echoed, Some(true))] {
        let chunks = stream.to_chunks(4, false);
        let (gateway, budgets) = single_route_gateway(Arc::new(ScriptedStream(chunks))).await;
        let ctx = RequestContext::new(gateway.authenticate("sk-acme").unwrap(), "r", CacheDirective::Default);
        // A cap well above the answer's length, so that the reservation does not cap the estimate.
        let request = CompletionRequest { echo, max_tokens: Some(1_000), ..legacy(&prompt) };
        let items: Vec<_> = gateway.completion_stream(&ctx, request).await.unwrap().chunks.collect().await;
        assert!(items.iter().all(Result::is_ok));
        spent.push(
            chitty_testkit::budget::balance(
                budgets.as_ref(),
                "acme",
                gateway.tenant("acme").unwrap().budget().unwrap().0,
                gateway.now(),
            )
            .await
            .spent,
        );
    }
    assert!(spent[0] > NanoUsd::ZERO);
    assert_eq!(spent[0], spent[1], "the echo is not output");
}

#[tokio::test]
async fn invalid_configuration_is_refused_with_the_reason() {
    let clock = ManualClock::new(Timestamp(0));
    let build = |config: GatewayConfig| {
        let clock = clock.clone();
        async move {
            Gateway::builder(config)
                .provider(Arc::new(MockProvider::new("p")))
                .runtime(Arc::new(clock.clone()), Arc::new(ManualTimer::new(clock)), Arc::new(TokioSpawner))
                .build()
                .await
        }
    };
    let unknown_provider = GatewayConfig { models: vec![model("m", &[("nope", "x")])], ..Default::default() };
    let err = build(unknown_provider).await.unwrap_err().to_string();
    assert!(err.contains("unknown provider `nope`"), "{err}");
    let budget_without_store = GatewayConfig {
        models: vec![model("m", &[("p", "x")])],
        tenants: vec![TenantConfig { budget_nano_usd: Some(NanoUsd(1)), ..tenant("t", "k") }],
        ..Default::default()
    };
    assert!(build(budget_without_store).await.unwrap_err().to_string().contains("no budget store"));
    let bad_digest = GatewayConfig { tenants: vec![TenantConfig::new("t", "not-hex")], ..Default::default() };
    assert!(build(bad_digest).await.unwrap_err().to_string().contains("64 hex"));
}

#[tokio::test]
async fn prefix_families_route_by_name_and_respect_allow_lists() {
    let h = harness(|c| {
        c.prefixes.push(chitty_core::gateway::PrefixConfig {
            prefix: "up/".into(),
            provider: "fallback".into(),
            price: PRICE,
            cache: CachePolicy::Off,
            max_output_tokens: 200,
            output_cap_field: Default::default(),
            limits: Default::default(),
        });
        c.tenants.push(TenantConfig { allowed_models: Some(vec!["up/*".into()]), ..tenant("family", "sk-family") });
    })
    .await;
    let reply = h
        .gateway
        .chat(&h.ctx("sk-acme"), ChatCompletionRequest { model: "up/gpt-x".into(), ..chat("hi") })
        .await
        .unwrap();
    assert_eq!(reply.body.model, "gpt-x", "the prefix is stripped upstream");
    assert_eq!(reply.meta.provider.as_deref(), Some("fallback"));
    assert_eq!(reply.meta.max_tokens_set, Some(200));
    let family = h.ctx("sk-family");
    h.gateway.chat(&family, ChatCompletionRequest { model: "up/other".into(), ..chat("hi") }).await.unwrap();
    let err = h.gateway.chat(&family, chat("named models are not in the family")).await.unwrap_err();
    assert!(matches!(err, Error::ModelNotAllowed { .. }));
    let err = h.gateway.chat(&family, ChatCompletionRequest { model: "up/".into(), ..chat("hi") }).await.unwrap_err();
    assert!(matches!(err, Error::ModelNotFound { .. }), "the bare prefix is not a model");
    let emb =
        EmbeddingRequest { model: "up/embedder".into(), input: EmbeddingInput::Text("x".into()), ..Default::default() };
    h.gateway.embeddings(&family, emb).await.unwrap();
}

fn best_of(prompt: &str, best_of: u32) -> CompletionRequest {
    CompletionRequest { best_of: Some(best_of), stream: None, max_tokens: Some(16), ..legacy(prompt) }
}

#[tokio::test]
async fn best_of_enters_the_worst_case_bound_so_spend_never_passes_the_limit() {
    // The mock upstream bills every `best_of` candidate, as OpenAI's legacy endpoint does.
    let h = harness(|c| c.tenants[0].budget_nano_usd = Some(NanoUsd(100_000_000))).await; // $0.10
    let acme = h.ctx("sk-acme");
    let prompt = chitty_core::tokens::estimate_completion_prompt(&PromptInput::Text("hi".into()));
    let reply = h.gateway.completion(&acme, best_of("hi", 20)).await.unwrap();
    assert_eq!(reply.meta.reserved, PRICE.cost(prompt, 16 * 20), "every candidate is in the worst case");
    let billed = PRICE.cost_of_usage(reply.body.usage.as_ref().unwrap());
    assert!(billed > PRICE.cost(prompt, 16), "the upstream billed more than one candidate: {billed:?}");
    assert_eq!(reply.meta.cost, billed, "covered by the reservation, so charged in full");
    let b = h.balance("acme").await;
    assert_eq!((b.spent, b.reserved), (billed, NanoUsd::ZERO));

    // A budget that pays for one candidate but not for twenty: refused before any call.
    h.set_limit("acme", b.spent + PRICE.cost(prompt, 16 * 2)).await;
    // A request authenticates again and sees the new limit.
    let acme = h.ctx("sk-acme");
    let calls = h.primary.calls();
    let err = h.gateway.completion(&acme, best_of("hi again", 20)).await.unwrap_err();
    assert_eq!((err.status(), err.code()), (429, Some("insufficient_quota")), "{err:?}");
    assert_eq!(h.primary.calls(), calls, "nothing was sent upstream");
    let after = h.balance("acme").await;
    assert!(after.spent <= after.limit, "{after:?}");

    // Out of range, below `n`, or on a stream: 400 naming `best_of`, nothing sent.
    for (request, says) in [
        (best_of("x", 1_000), "between 1 and 20"),
        (best_of("x", 0), "between 1 and 20"),
        (CompletionRequest { n: Some(3), ..best_of("x", 2) }, "at least `n`"),
        (CompletionRequest { stream: Some(true), ..best_of("x", 2) }, "cannot be streamed"),
    ] {
        let err = h.gateway.completion(&acme, request).await.unwrap_err();
        assert_eq!((err.status(), err.param()), (400, Some("best_of")), "{err:?}");
        assert!(err.to_string().contains(says), "{err}");
    }
    // On chat, where some upstreams read it as an extension, it is bounded and reserved for the same way.
    let mut chat_best_of = ChatCompletionRequest { max_tokens: Some(10), ..chat("best of chat") };
    chat_best_of.extra.insert("best_of".into(), serde_json::json!(4));
    let prompt = chitty_core::tokens::estimate_chat_prompt(&chat_best_of);
    let reply = h.gateway.chat(&h.ctx("sk-globex"), chat_best_of.clone()).await.unwrap();
    // globex has no limit, but its spend is still reserved and settled, so it is reported by model and key.
    assert_eq!(reply.meta.reserved, PRICE.cost(prompt, 10 * 4), "all four candidates");
    assert_eq!(reply.meta.max_tokens_set, None, "no limit, so no cap is imposed");
    chat_best_of.extra.insert("best_of".into(), serde_json::json!("many"));
    let err = h.gateway.chat(&acme, chat_best_of).await.unwrap_err();
    assert_eq!((err.status(), err.param()), (400, Some("best_of")));
    assert_eq!(h.primary.calls(), calls + 1);
}

#[tokio::test]
async fn both_output_caps_bound_the_reservation_by_the_larger() {
    // An upstream may read either field: the budget reserves for the larger.
    let h = harness(|_| {}).await;
    let acme = h.ctx("sk-acme");
    let request = ChatCompletionRequest {
        max_completion_tokens: Some(1),
        max_tokens: Some(500),
        temperature: Some(0.5),
        ..chat("two caps")
    };
    let prompt = chitty_core::tokens::estimate_chat_prompt(&request);
    let reply = h.gateway.chat(&acme, request).await.unwrap();
    assert_eq!(reply.meta.reserved, PRICE.cost(prompt, 500));
}

#[tokio::test]
async fn best_of_reservations_are_exact_for_chat_extensions_too() {
    let h = harness(|_| {}).await;
    let acme = h.ctx("sk-acme");
    let mut request = ChatCompletionRequest { max_tokens: Some(10), n: Some(2), ..chat("best of chat") };
    request.extra.insert("best_of".into(), serde_json::json!(5));
    let prompt = chitty_core::tokens::estimate_chat_prompt(&request);
    let reply = h.gateway.chat(&acme, request).await.unwrap();
    assert_eq!(reply.meta.reserved, PRICE.cost(prompt, 10 * 5), "max(n, best_of) outputs reserved");
}

/// Answers chat and legacy completions (plain and streamed) with usage far above anything the request allows:
/// an upstream that bills more than the worst case.
#[derive(Debug)]
struct Overbilling;

fn overbilled() -> chitty_core::wire::Usage {
    chitty_core::wire::Usage::new(1_000_000, 1_000_000_000)
}

#[async_trait::async_trait]
impl Provider for Overbilling {
    fn name(&self) -> &str {
        "p"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::of(&[Capability::Chat, Capability::Completions, Capability::CompletionsStream])
    }

    async fn chat(&self, request: ChatCompletionRequest) -> chitty_core::Result<ChatCompletionResponse> {
        let mut answer = MockProvider::new("m").chat(request).await?;
        answer.usage = Some(overbilled());
        Ok(answer)
    }

    async fn completion_stream(&self, request: CompletionRequest) -> chitty_core::Result<CompletionChunkStream> {
        let mut answer = MockProvider::new("m").completion(CompletionRequest { stream: None, ..request }).await?;
        answer.usage = Some(overbilled());
        Ok(Box::pin(futures::stream::iter(answer.to_chunks(3, true).into_iter().map(Ok))))
    }
}

#[tokio::test]
async fn usage_above_the_reservation_is_charged_as_the_reservation_and_reported() {
    let limit = NanoUsd(50_000_000); // $0.05
    let config = GatewayConfig {
        models: vec![model("chat", &[("p", "up-chat")])],
        tenants: vec![TenantConfig { budget_nano_usd: Some(limit), ..tenant("acme", "sk-acme") }],
        ..Default::default()
    };
    let budgets = Arc::new(MemoryBudgetStore::new());
    let events = Arc::new(CollectingSink::new());
    let gateway = Gateway::builder(config)
        .provider(Arc::new(Overbilling))
        .budgets(budgets.clone())
        .events(events.clone())
        .tokio_runtime()
        .build()
        .await
        .unwrap();
    let ctx = RequestContext::new(gateway.authenticate("sk-acme").unwrap(), "r", CacheDirective::Default);

    let reply = gateway.chat(&ctx, ChatCompletionRequest { max_tokens: Some(50), ..chat("bill me") }).await.unwrap();
    assert!(reply.meta.reserved > NanoUsd::ZERO);
    assert_eq!(reply.meta.cost, reply.meta.reserved, "charged the reservation, not the reported usage");
    let spent_plain = chitty_testkit::budget::balance(
        budgets.as_ref(),
        "acme",
        gateway.tenant("acme").unwrap().budget().unwrap().0,
        gateway.now(),
    )
    .await
    .spent;
    assert_eq!(spent_plain, reply.meta.reserved);

    let stream = gateway.completion_stream(&ctx, legacy("bill me too")).await.unwrap();
    let reserved_stream = stream.meta.reserved;
    let items: Vec<_> = stream.chunks.collect().await;
    assert!(items.iter().all(Result::is_ok));
    let b = chitty_testkit::budget::balance(
        budgets.as_ref(),
        "acme",
        gateway.tenant("acme").unwrap().budget().unwrap().0,
        gateway.now(),
    )
    .await;
    assert_eq!(b.spent, spent_plain + reserved_stream, "the stream too is charged its reservation");
    assert!(b.spent <= limit && b.reserved == NanoUsd::ZERO, "{b:?}");

    let excesses: Vec<_> = events
        .events()
        .into_iter()
        .filter_map(|e| match e {
            Event::BudgetExcess { tenant, model, provider, reserved, reported } => {
                Some((tenant, model, provider, reserved, reported))
            }
            _ => None,
        })
        .collect();
    let full = PRICE.cost_of_usage(&overbilled());
    assert_eq!(
        excesses,
        [
            ("acme".into(), "chat".into(), "p".into(), reply.meta.reserved, full),
            ("acme".into(), "chat".into(), "p".into(), reserved_stream, full),
        ]
    );
    let charged: Vec<_> = events.requests().iter().map(|r| r.cost).collect();
    assert_eq!(charged, [reply.meta.reserved, reserved_stream], "request events report what was charged");
}

#[tokio::test]
async fn request_sizes_over_the_model_limits_are_refused_naming_the_parameter() {
    let h = harness(|c| {
        c.models[1].limits.dimensions = 64;
        c.models[0].limits.n = 4;
        c.models[0].limits.inputs = 3;
    })
    .await;
    let acme = h.ctx("sk-acme");
    let embed = |dimensions, items: usize| EmbeddingRequest {
        model: "embed".into(),
        input: EmbeddingInput::Texts(vec!["x".into(); items]),
        dimensions,
        ..Default::default()
    };
    let ok = h.gateway.embeddings(&acme, embed(Some(64), 1)).await.unwrap();
    assert_eq!(ok.body.data[0].embedding.to_floats().unwrap().len(), 64);
    let calls = h.primary.calls();
    let chat_with = |f: fn(&mut ChatCompletionRequest)| {
        let mut r = chat("limits");
        f(&mut r);
        r
    };
    let errors = [
        h.gateway.embeddings(&acme, embed(Some(1_000_000_000), 1)).await.map(drop),
        h.gateway.embeddings(&acme, embed(Some(65), 1)).await.map(drop),
        h.gateway.embeddings(&acme, embed(Some(0), 1)).await.map(drop),
        h.gateway.embeddings(&acme, embed(None, 2_049)).await.map(drop),
        h.gateway.chat(&acme, chat_with(|r| r.n = Some(5))).await.map(drop),
        h.gateway.chat(&acme, chat_with(|r| r.top_logprobs = Some(21))).await.map(drop),
        h.gateway
            .completion(&acme, CompletionRequest { prompt: PromptInput::Texts(vec!["a".into(); 4]), ..best_of("", 1) })
            .await
            .map(drop),
        h.gateway.completion(&acme, CompletionRequest { logprobs: Some(50), ..best_of("x", 1) }).await.map(drop),
    ];
    let params: Vec<_> = errors
        .iter()
        .map(|r| {
            let e = r.as_ref().unwrap_err();
            assert_eq!(e.status(), 400, "{e:?}");
            e.param().unwrap_or("-").to_owned()
        })
        .collect();
    assert_eq!(params, ["dimensions", "dimensions", "dimensions", "input", "n", "top_logprobs", "prompt", "logprobs"]);
    // Output lengths other servers read, which would bypass `max_tokens`, are refused by name.
    for field in ["n_predict", "max_new_tokens", "num_predict", "max_length"] {
        let mut request = chat("foreign cap");
        request.extra.insert(field.into(), serde_json::json!(100_000));
        let err = h.gateway.chat(&acme, request).await.unwrap_err();
        assert_eq!((err.status(), err.param()), (400, Some(field)), "{err}");
    }
    // n times the prompts, over the model's limit on outputs per request.
    let many = CompletionRequest { n: Some(4), prompt: PromptInput::Texts(vec!["a".into(); 3]), ..best_of("", 4) };
    let h2 = harness(|c| c.models[0].limits.generations = 8).await;
    let err = h2.gateway.completion(&h2.ctx("sk-acme"), many).await.unwrap_err();
    assert_eq!((err.status(), err.param()), (400, Some("n")), "{err}");
    assert!(err.to_string().contains("12 outputs"), "{err}");
    let message = errors[1].as_ref().unwrap_err().to_string();
    assert!(message.contains("between 1 and 64"), "{message}");
    assert_eq!(h.primary.calls(), calls, "nothing over a limit reached the provider");
}

#[tokio::test]
async fn weighted_routes_share_traffic_by_weight_and_report_the_route_taken() {
    let h = harness(|c| {
        c.models[0].balance = chitty_core::balance::BalancePolicy::Weighted;
        c.models[0].routes[0].weight = 3;
        c.models[0].routes[1].weight = 1;
    })
    .await;
    let ctx = h.ctx("sk-acme");
    for i in 0..400 {
        let reply = h.gateway.chat(&ctx, chat(&format!("weighted {i}"))).await.unwrap();
        assert_eq!(reply.meta.attempts, 1);
        let expected = match reply.meta.provider.as_deref() {
            Some("primary") => "primary/up-chat",
            _ => "fallback/up-chat-b",
        };
        assert_eq!(reply.meta.route.as_deref(), Some(expected));
    }
    let (primary, fallback) = (h.primary.calls(), h.fallback.calls());
    assert_eq!(primary + fallback, 400);
    // 3:1 expected, 300 ± 40 (over 4 standard deviations for a binomial of 400 at 3/4).
    assert!((260..=340).contains(&primary), "primary took {primary}, fallback {fallback}");
}

#[tokio::test]
async fn a_group_that_is_down_falls_back_to_the_next_and_attempts_are_counted() {
    // Listed primary first, but grouped the other way round: groups decide, lowest first.
    let h = harness(|c| {
        c.models[0].balance = chitty_core::balance::BalancePolicy::Weighted;
        c.models[0].routes[0].group = 1;
        c.models[0].routes[1].group = 0;
    })
    .await;
    let ctx = h.ctx("sk-acme");
    let reply = h.gateway.chat(&ctx, chat("group zero")).await.unwrap();
    assert_eq!((reply.meta.provider.as_deref(), reply.meta.attempts), (Some("fallback"), 1), "group 0 first");
    // Every attempt on group 0 fails: the request moves on to group 1.
    for i in 0..8 {
        h.fallback.fail_next(503, format!("down {i}"));
    }
    let reply = h.gateway.chat(&ctx, chat("group one")).await.unwrap();
    assert_eq!(reply.meta.provider.as_deref(), Some("primary"));
    assert_eq!(reply.meta.route.as_deref(), Some("primary/up-chat"));
    assert!(reply.meta.attempts >= 2, "failed attempts count: {}", reply.meta.attempts);
}
