//! What the gateway reports about each request, on virtual time: the upstream wait kept apart from the
//! gateway's own overhead, time to first token for streams, fallbacks between routes, circuit changes, and the
//! error code that tells a budget refusal from a rate limit.

#![cfg(feature = "memory")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chitty_core::events::CircuitState;
use chitty_core::gateway::{
    Gateway, GatewayConfig, ModelConfig, RequestContext, RouteConfig, TenantConfig, api_key_digest,
};
use chitty_core::keys::CachePolicy;
use chitty_core::wire::{ChatCompletionRequest, ChatCompletionResponse, ChatMessage};
use chitty_core::{
    CacheStatus, Capabilities, ChunkStream, Clock, Event, ManualClock, ModelPrice, NanoUsd, Provider, RequestEvent,
    Result,
};
use chitty_providers::memory::{CollectingSink, MemoryBudgetStore, MemoryCache};
use chitty_testkit::mock::MockProvider;
use futures::StreamExt;

/// The mock provider, made to take virtual time: `open` before it answers (or opens its stream) and `first`
/// more before a stream's first chunk.
#[derive(Debug)]
struct Paced {
    inner: MockProvider,
    clock: ManualClock,
    open: Duration,
    first: Duration,
}

#[async_trait]
impl Provider for Paced {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    async fn chat(&self, request: ChatCompletionRequest) -> Result<ChatCompletionResponse> {
        self.clock.advance(self.open);
        self.inner.chat(request).await
    }

    async fn chat_stream(&self, request: ChatCompletionRequest) -> Result<ChunkStream> {
        self.clock.advance(self.open);
        let stream = self.inner.chat_stream(request).await?;
        let (clock, first) = (self.clock.clone(), self.first);
        let mut waited = false;
        Ok(Box::pin(stream.map(move |chunk| {
            if !std::mem::replace(&mut waited, true) {
                clock.advance(first);
            }
            chunk
        })))
    }
}

struct Harness {
    gateway: Gateway,
    clock: ManualClock,
    events: Arc<CollectingSink>,
    primary: Arc<Paced>,
    fallback: Arc<Paced>,
}

const PRICE: ModelPrice = ModelPrice::from_micros_per_mtok(1_000_000, 2_000_000);

async fn harness(open: Duration, first: Duration, tweak: impl FnOnce(&mut GatewayConfig)) -> Harness {
    let route = |p: &str, m: &str| RouteConfig::new(p, m);
    let mut config = GatewayConfig {
        models: vec![ModelConfig {
            routes: vec![route("primary", "up-chat"), route("fallback", "up-chat-b")],
            price: PRICE,
            cache: CachePolicy::Deterministic,
            max_output_tokens: 1_000,
            ..ModelConfig::new("chat")
        }],
        tenants: vec![
            TenantConfig {
                budget_nano_usd: Some(NanoUsd::ONE_USD),
                ..TenantConfig::new("acme", &api_key_digest("sk-acme"))
            },
            TenantConfig {
                budget_nano_usd: Some(NanoUsd(1)),
                ..TenantConfig::new("broke", &api_key_digest("sk-broke"))
            },
            TenantConfig {
                requests_per_minute: Some(60),
                burst: Some(1),
                ..TenantConfig::new("busy", &api_key_digest("sk-busy"))
            },
        ],
        ..Default::default()
    };
    tweak(&mut config);
    let clock = ManualClock::new(common::START);
    let paced = |name: &str| Paced { inner: MockProvider::new(name), clock: clock.clone(), open, first };
    let (primary, fallback) = (Arc::new(paced("primary")), Arc::new(paced("fallback")));
    let events = Arc::new(CollectingSink::new());
    let gateway = common::on_virtual_time(Gateway::builder(config), &clock)
        .provider(primary.clone())
        .provider(fallback.clone())
        .cache(Arc::new(MemoryCache::new(1 << 24)))
        .budgets(Arc::new(MemoryBudgetStore::new()))
        .events(events.clone())
        .build()
        .await
        .unwrap();
    Harness { gateway, clock, events, primary, fallback }
}

impl Harness {
    fn ctx(&self, key: &str) -> RequestContext {
        common::context(&self.gateway, key)
    }

    /// The request events recorded so far, oldest first.
    fn requests(&self) -> Vec<RequestEvent> {
        self.events.requests()
    }

    /// Every event other than requests and upstream failures, oldest first; forgets every event so far.
    fn routing_events(&self) -> Vec<Event> {
        self.events
            .take()
            .into_iter()
            .filter(|e| !matches!(e, Event::Request(_) | Event::UpstreamFailure { .. }))
            .collect()
    }
}

fn chat(text: &str, stream: bool) -> ChatCompletionRequest {
    ChatCompletionRequest {
        model: "chat".into(),
        messages: vec![ChatMessage::user(text)],
        temperature: Some(0.0),
        stream: stream.then_some(true),
        ..Default::default()
    }
}

const MS: fn(u64) -> Duration = Duration::from_millis;

#[tokio::test]
async fn a_whole_answer_reports_the_upstream_wait_apart_from_the_gateway_overhead() {
    let h = harness(MS(40), Duration::ZERO, |_| {}).await;
    h.gateway.chat(&h.ctx("sk-acme"), chat("hello", false)).await.unwrap();
    let [r] = h.requests().try_into().unwrap();
    assert_eq!((r.latency, r.overhead), (MS(40), Duration::ZERO), "all 40 ms were spent waiting upstream");
    assert_eq!((r.time_to_first_token, r.route_index, r.error_code), (None, Some(0), None));

    // Backoff between attempts is waiting on the upstream too, not the gateway's overhead.
    let h = harness(MS(40), Duration::ZERO, |c| {
        c.defaults.attempts_per_route = 2;
        c.defaults.backoff_base_ms = 1_000;
    })
    .await;
    h.primary.inner.fail_next(503, "once");
    let t0 = h.clock.now();
    h.gateway.chat(&h.ctx("sk-acme"), chat("retry", false)).await.unwrap();
    let [r] = h.requests().try_into().unwrap();
    assert_eq!(r.latency, h.clock.now().since(t0));
    assert!(r.latency > MS(80), "two attempts and a backoff: {:?}", r.latency);
    assert_eq!(r.overhead, Duration::ZERO);
}

#[tokio::test]
async fn streams_report_time_to_first_token_and_replays_from_the_cache_too() {
    let h = harness(MS(30), MS(20), |_| {}).await;
    let acme = h.ctx("sk-acme");
    let chunks: Vec<_> = h.gateway.chat_stream(&acme, chat("stream me", true)).await.unwrap().chunks.collect().await;
    assert!(chunks.len() > 2 && chunks.iter().all(Result::is_ok));
    let [r] = h.requests().try_into().unwrap();
    assert!(r.stream);
    assert_eq!(r.time_to_first_token, Some(MS(50)), "opening the stream and waiting for its first chunk");
    assert_eq!(r.overhead, Duration::ZERO, "the gateway added nothing on virtual time");
    assert_eq!(r.latency, MS(50));

    // The same request again is a cache hit: replayed at once, all of it gateway time.
    let replay: Vec<_> = h.gateway.chat_stream(&acme, chat("stream me", true)).await.unwrap().chunks.collect().await;
    assert!(!replay.is_empty() && replay.iter().all(Result::is_ok));
    let r = h.requests().pop().unwrap();
    assert_eq!((r.cache, r.time_to_first_token, r.overhead), (CacheStatus::Hit, Some(Duration::ZERO), Duration::ZERO));

    // A whole answer has no time to first token.
    h.gateway.chat(&acme, chat("whole", false)).await.unwrap();
    assert_eq!(h.requests().pop().unwrap().time_to_first_token, None);
}

#[tokio::test]
async fn a_fallback_names_both_routes_and_circuits_report_each_change() {
    let h = harness(MS(5), Duration::ZERO, |c| {
        c.defaults.attempts_per_route = 1;
        c.defaults.breaker_failures = 1;
        c.defaults.breaker_open_ms = 30_000;
    })
    .await;
    let acme = h.ctx("sk-acme");
    h.primary.inner.fail_next(503, "down");
    let reply = h.gateway.chat(&acme, chat("one", false)).await.unwrap();
    assert_eq!(reply.meta.provider.as_deref(), Some("fallback"));
    let fallback = Event::Fallback {
        model: "chat".into(),
        from_model: "primary/up-chat".into(),
        to_model: "fallback/up-chat-b".into(),
    };
    let opened =
        Event::CircuitChanged { provider: "primary".into(), model: "up-chat".into(), state: CircuitState::Open };
    let r = h.requests().pop().unwrap();
    assert_eq!((r.route_index, r.provider.as_deref()), (Some(1), Some("fallback")));
    assert_eq!(
        h.routing_events(),
        [Event::CircuitOpened { provider: "primary".into() }, opened, fallback.clone()],
        "opened, then left for the next route"
    );

    // The open circuit is skipped: still a fallback, and no state change.
    h.gateway.chat(&acme, chat("two", false)).await.unwrap();
    assert_eq!(h.routing_events(), [fallback]);

    // After the open period a probe goes through and closes the circuit: no fallback.
    h.clock.advance(Duration::from_secs(31));
    let reply = h.gateway.chat(&acme, chat("three", false)).await.unwrap();
    assert_eq!(reply.meta.provider.as_deref(), Some("primary"));
    assert_eq!(h.requests().pop().unwrap().route_index, Some(0));
    let change = |state| Event::CircuitChanged { provider: "primary".into(), model: "up-chat".into(), state };
    assert_eq!(h.routing_events(), [change(CircuitState::HalfOpen), change(CircuitState::Closed)]);
    assert_eq!(
        h.gateway.circuit_states(),
        [
            ("primary".to_owned(), "up-chat".to_owned(), CircuitState::Closed),
            ("fallback".to_owned(), "up-chat-b".to_owned(), CircuitState::Closed)
        ]
    );
}

#[tokio::test]
async fn refusals_carry_the_error_code_that_tells_a_budget_from_a_rate_limit() {
    let h = harness(MS(5), Duration::ZERO, |_| {}).await;
    let err = h.gateway.chat(&h.ctx("sk-broke"), chat("too dear", false)).await.unwrap_err();
    assert_eq!(err.status(), 429);
    let busy = h.ctx("sk-busy");
    h.gateway.chat(&busy, chat("first", false)).await.unwrap();
    assert_eq!(h.gateway.chat(&busy, chat("second", false)).await.unwrap_err().status(), 429);
    let requests = h.requests();
    let codes: Vec<_> = requests.iter().map(|r| (r.tenant.as_str(), r.status, r.error_code)).collect();
    assert_eq!(
        codes,
        [("broke", 429, Some("insufficient_quota")), ("busy", 200, None), ("busy", 429, Some("rate_limit_exceeded"))]
    );
    assert!(requests.iter().filter(|r| r.status == 429).all(|r| r.route_index.is_none() && r.provider.is_none()));
    let mut tenants: Vec<_> = h.gateway.tenants().iter().map(|t| t.id().to_owned()).collect();
    tenants.sort_unstable();
    assert_eq!(tenants, ["acme", "broke", "busy"]);
}

#[tokio::test]
async fn a_request_whose_every_route_failed_counts_the_wait_as_upstream_time() {
    let h = harness(MS(25), Duration::ZERO, |c| c.defaults.attempts_per_route = 1).await;
    h.primary.inner.fail_next(503, "down");
    h.fallback.inner.fail_next(502, "down too");
    let err = h.gateway.chat(&h.ctx("sk-acme"), chat("nobody answers", false)).await.unwrap_err();
    assert_eq!(err.status(), 502);
    let [r] = h.requests().try_into().unwrap();
    assert_eq!((r.status, r.latency, r.route_index), (502, MS(50), None));
    assert_eq!(r.overhead, Duration::ZERO, "an outage's wait is not the gateway's overhead");
}
