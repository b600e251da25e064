//! The request span: what happens on a request's behalf, plain or streamed, is logged under its request id.
//!
//! Alone in its own test binary: `tracing` caches per callsite whether any subscriber is interested, and tests
//! running beside it on threads without a subscriber made that cache say "no" to this test's thread-local one.

#![cfg(feature = "memory")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use async_trait::async_trait;
use chitty_core::gateway::{
    Gateway, GatewayConfig, ModelConfig, RequestContext, RouteConfig, TenantConfig, api_key_digest,
};
use chitty_core::keys::CacheDirective;
use chitty_core::wire::{ChatCompletionRequest, ChatCompletionResponse, ChatMessage};
use chitty_core::{Capabilities, ChunkStream, ManualClock, ManualTimer, Provider, Result, Timestamp};
use chitty_providers::runtime::TokioSpawner;
use chitty_testkit::mock::MockProvider;
use futures::StreamExt;

fn chat(text: &str, stream: bool) -> ChatCompletionRequest {
    ChatCompletionRequest {
        model: "chat".into(),
        messages: vec![ChatMessage::user(text)],
        temperature: Some(0.0),
        stream: stream.then_some(true),
        ..Default::default()
    }
}

/// A `tracing` subscriber that keeps, for each event, the `request_id` of the span it happened in.
#[derive(Default)]
struct SpanRecorder {
    spans: std::sync::Mutex<Vec<(&'static str, String)>>,
    current: std::sync::Mutex<Vec<u64>>,
    events: std::sync::Mutex<Vec<(String, Option<String>)>>,
}

/// Collects one field of a span or event as text.
struct FieldText<'a>(&'a str, Option<String>);

impl tracing::field::Visit for FieldText<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == self.0 {
            self.1 = Some(format!("{value:?}"));
        }
    }
}

/// The recorder as the thread's subscriber, shared with the test that reads it.
struct Recording(Arc<SpanRecorder>);

impl tracing::Subscriber for Recording {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }

    fn new_span(&self, span: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        let mut request_id = FieldText("request_id", None);
        span.record(&mut request_id);
        let mut spans = self.0.spans.lock().unwrap();
        spans.push((span.metadata().name(), request_id.1.unwrap_or_default()));
        tracing::span::Id::from_u64(spans.len() as u64)
    }

    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}

    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}

    fn event(&self, event: &tracing::Event<'_>) {
        let mut message = FieldText("message", None);
        event.record(&mut message);
        let current = self.0.current.lock().unwrap().last().copied();
        let spans = self.0.spans.lock().unwrap();
        let request_id = current.and_then(|id| spans.get(id as usize - 1)).map(|(_, r)| r.clone());
        self.0.events.lock().unwrap().push((message.1.unwrap_or_default(), request_id));
    }

    fn enter(&self, span: &tracing::span::Id) {
        self.0.current.lock().unwrap().push(span.into_u64());
    }

    fn exit(&self, _: &tracing::span::Id) {
        self.0.current.lock().unwrap().pop();
    }
}

/// The mock provider, logging each call the way an HTTP client would.
#[derive(Debug)]
struct Logging(MockProvider);

#[async_trait]
impl Provider for Logging {
    fn name(&self) -> &str {
        self.0.name()
    }

    fn capabilities(&self) -> Capabilities {
        self.0.capabilities()
    }

    async fn chat(&self, request: ChatCompletionRequest) -> Result<ChatCompletionResponse> {
        tracing::info!("upstream chat");
        self.0.chat(request).await
    }

    async fn chat_stream(&self, request: ChatCompletionRequest) -> Result<ChunkStream> {
        tracing::info!("upstream stream");
        let chunks = self.0.chat_stream(request).await?;
        Ok(Box::pin(chunks.inspect(|_| tracing::info!("upstream chunk"))))
    }
}

#[tokio::test(flavor = "current_thread")]
async fn what_happens_during_a_request_is_logged_under_its_request_id() {
    let recorder = Arc::new(SpanRecorder::default());
    let _default = tracing::subscriber::set_default(Recording(recorder.clone()));
    let config = GatewayConfig {
        models: vec![ModelConfig { routes: vec![RouteConfig::new("logging", "up")], ..ModelConfig::new("chat") }],
        tenants: vec![TenantConfig::new("acme", &api_key_digest("sk-acme"))],
        ..Default::default()
    };
    let clock = ManualClock::new(Timestamp(0));
    let gateway = Gateway::builder(config)
        .provider(Arc::new(Logging(MockProvider::new("logging"))))
        .runtime(Arc::new(clock.clone()), Arc::new(ManualTimer::new(clock)), Arc::new(TokioSpawner))
        .build()
        .await
        .unwrap();
    let caller = gateway.authenticate("sk-acme").unwrap();
    let ctx = |id: &str| RequestContext::new(caller.clone(), id, CacheDirective::Default);
    gateway.chat(&ctx("req-plain"), chat("hello", false)).await.unwrap();
    let stream = gateway.chat_stream(&ctx("req-stream"), chat("hello", true)).await.unwrap();
    assert!(stream.chunks.collect::<Vec<_>>().await.iter().all(Result::is_ok));
    tracing::info!("outside");

    let events = recorder.events.lock().unwrap().clone();
    let under = |message: &str| events.iter().find(|(m, _)| m == message).map(|(_, r)| r.clone());
    assert_eq!(under("upstream chat"), Some(Some("req-plain".to_owned())), "{events:?}");
    assert_eq!(under("upstream stream"), Some(Some("req-stream".to_owned())), "{events:?}");
    assert_eq!(under("upstream chunk"), Some(Some("req-stream".to_owned())), "chunks are read under it too");
    assert_eq!(under("outside"), Some(None));
    let spans = recorder.spans.lock().unwrap().clone();
    assert!(spans.contains(&("chitty.request", "req-plain".to_owned())), "{spans:?}");
}
