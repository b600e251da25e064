//! Stream continuation over HTTP: the mock OpenAI upstream cuts a stream after a few events, the gateway asks
//! the same deployment (the model's only route) to continue it and the client gets one answer; and the
//! Prometheus series of retries and continuations.
#![cfg(all(feature = "openai", feature = "prometheus"))]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chitty_core::gateway::{Gateway, GatewayConfig, ModelConfig, RequestContext, RouteConfig, TenantConfig};
use chitty_core::keys::CacheDirective;
use chitty_core::runtime::TokioRuntimeExt;
use chitty_core::wire::{ChatCompletionChunk, ChatCompletionRequest};
use chitty_core::{Event, EventSink, FanOutSink, ModelPrice, RequestEvent, Result};
use chitty_providers::openai::OpenAiProvider;
use chitty_providers::prometheus::{PrometheusSink, Registry, encode_text};
use chitty_testkit::mock::MockProvider;
use chitty_testkit::mock_upstream::{Fault, MockOpenAi};
use futures::StreamExt;
use serde_json::json;

#[derive(Debug, Default)]
struct Requests(Mutex<Vec<RequestEvent>>);

#[async_trait]
impl EventSink for Requests {
    async fn record(&self, event: Event) -> Result<()> {
        if let Event::Request(r) = event {
            self.0.lock().unwrap().push(r);
        }
        Ok(())
    }
}

fn text(chunks: &[ChatCompletionChunk]) -> String {
    chunks.iter().flat_map(|c| c.choices.iter().filter_map(|ch| ch.delta.content.clone())).collect()
}

#[tokio::test]
async fn a_stream_cut_by_the_upstream_is_continued_over_http_as_one_answer() {
    let server = MockOpenAi::serve(Arc::new(MockProvider::new("mock"))).await.unwrap();
    server.record_requests(8);
    let upstream = OpenAiProvider::builder("openai-mock")
        .with_base_url(format!("{}/", server.base_url()))
        .with_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let config = GatewayConfig {
        models: vec![ModelConfig {
            routes: vec![RouteConfig::new("openai-mock", "chitty-mock")],
            price: ModelPrice::from_micros_per_mtok(1_000_000, 4_000_000),
            continue_streams: true,
            ..ModelConfig::new("chat")
        }],
        tenants: vec![TenantConfig::new("acme", &chitty_core::gateway::api_key_digest("sk-acme"))],
        ..Default::default()
    };
    let mut registry = Registry::default();
    let metrics = PrometheusSink::new(&mut registry, ["chat"]);
    let requests = Arc::new(Requests::default());
    let sink = FanOutSink::new(vec![Arc::new(metrics), requests.clone()]);
    let gateway = Gateway::builder(config)
        .provider(Arc::new(upstream))
        .events(Arc::new(sink))
        .tokio_runtime()
        .build()
        .await
        .unwrap();
    let ctx = RequestContext::new(gateway.authenticate("sk-acme").unwrap(), "req-1", CacheDirective::Default);
    let request: ChatCompletionRequest = serde_json::from_value(json!({
        "model": "chat", "stream": true, "stream_options": {"include_usage": true},
        "messages": [{"role": "user", "content": "Tell me how the gateway keeps streams alive"}],
    }))
    .unwrap();

    // The first stream is cut after its role chunk and two words.
    server.faults().push(Fault::CutStream { after_events: 3 });
    let reply = gateway.chat_stream(&ctx, request).await.unwrap();
    let items: Vec<_> = reply.chunks.collect().await;
    assert!(items.iter().all(|i| i.is_ok()), "one unbroken answer: {items:?}");
    let chunks: Vec<ChatCompletionChunk> = items.into_iter().map(|i| i.unwrap()).collect();

    let sent = server.requests();
    assert_eq!(sent.len(), 2, "the cut attempt and its continuation");
    let messages = sent[1].body["messages"].as_array().unwrap();
    let prefix = messages.last().unwrap();
    assert_eq!(prefix["role"], "assistant", "the text so far, as a trailing assistant message: {prefix}");
    let prefix = prefix["content"].as_str().unwrap();
    assert!(!prefix.is_empty());
    let answer = text(&chunks);
    assert!(answer.starts_with(prefix) && answer.len() > prefix.len(), "{answer:?} continues {prefix:?}");
    let first = &chunks[0];
    assert!(chunks.iter().all(|c| c.id == first.id && c.created == first.created && c.model == first.model));
    let finishes = chunks.iter().flat_map(|c| &c.choices).filter(|c| c.finish_reason.is_some()).count();
    assert_eq!(finishes, 1);
    let usage = chunks.last().unwrap().usage.clone().expect("usage was asked for");

    let mut event = None;
    for _ in 0..200 {
        event = requests.0.lock().unwrap().first().cloned();
        if event.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let event = event.expect("the request event");
    assert_eq!((event.status, event.attempts, event.continuations), (200, 2, 1));
    assert_eq!((event.prompt_tokens, event.completion_tokens), (usage.prompt_tokens, usage.completion_tokens));
    assert!(event.cost.0 > 0);
    let text = encode_text(&registry).unwrap();
    assert!(text.contains("chitty_stream_continuations_total{model=\"chat\",outcome=\"continued\"} 1\n"), "{text}");
}

#[tokio::test]
async fn retries_and_continuations_have_their_series() {
    let mut registry = Registry::default();
    let sink = PrometheusSink::new(&mut registry, ["chat"]);
    let retry = |outcome| Event::Retry { provider: "openai".into(), model: "chat".into(), outcome };
    for event in [retry("retry"), retry("retry"), retry("retry_budget_exhausted")] {
        sink.record(event).await.unwrap();
    }
    let continuation = |model: &str, outcome| Event::StreamContinuation {
        model: model.into(),
        from_route: "openai/gpt-4o".into(),
        to_route: None,
        outcome,
    };
    sink.record(continuation("chat", "tool_call")).await.unwrap();
    sink.record(continuation("a-client-invention", "failed")).await.unwrap();
    let text = encode_text(&registry).unwrap();
    for line in [
        "chitty_retries_total{provider=\"openai\",outcome=\"retry\"} 2\n",
        "chitty_retries_total{provider=\"openai\",outcome=\"retry_budget_exhausted\"} 1\n",
        "chitty_stream_continuations_total{model=\"chat\",outcome=\"tool_call\"} 1\n",
        "chitty_stream_continuations_total{model=\"other\",outcome=\"failed\"} 1\n",
    ] {
        assert!(text.contains(line), "missing {line:?} in {text}");
    }
}

/// A stream cut on an OpenAI-compatible deployment continues on an Anthropic one: the text so far goes as a
/// trailing assistant turn, Anthropic's native prefill.
#[cfg(feature = "anthropic")]
#[tokio::test]
async fn a_continuation_on_anthropic_is_a_prefilled_assistant_turn() {
    use chitty_providers::anthropic::AnthropicProvider;
    use chitty_testkit::mock_upstream::MockAnthropic;

    let openai = MockOpenAi::serve(Arc::new(MockProvider::new("mock"))).await.unwrap();
    let anthropic = MockAnthropic::new(Arc::new(MockProvider::new("mock"))).start().await.unwrap();
    anthropic.record_requests(8);
    let primary = OpenAiProvider::builder("openai-mock")
        .with_base_url(format!("{}/", openai.base_url()))
        .with_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let fallback = AnthropicProvider::builder("anthropic-mock")
        .with_base_url(anthropic.base_url())
        .with_api_key("sk-ant-test")
        .with_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let config = GatewayConfig {
        models: vec![ModelConfig {
            routes: vec![
                RouteConfig::new("openai-mock", "chitty-mock"),
                RouteConfig::new("anthropic-mock", "claude-mock"),
            ],
            continue_streams: true,
            ..ModelConfig::new("chat")
        }],
        tenants: vec![TenantConfig::new("acme", &chitty_core::gateway::api_key_digest("sk-acme"))],
        ..Default::default()
    };
    let gateway = Gateway::builder(config)
        .provider(Arc::new(primary))
        .provider(Arc::new(fallback))
        .tokio_runtime()
        .build()
        .await
        .unwrap();
    let ctx = RequestContext::new(gateway.authenticate("sk-acme").unwrap(), "req-2", CacheDirective::Default);
    let request: ChatCompletionRequest = serde_json::from_value(json!({
        "model": "chat", "stream": true,
        "messages": [{"role": "user", "content": "Explain prefill in one paragraph"}],
    }))
    .unwrap();
    openai.faults().push(Fault::CutStream { after_events: 4 });
    let items: Vec<_> = gateway.chat_stream(&ctx, request).await.unwrap().chunks.collect().await;
    assert!(items.iter().all(|i| i.is_ok()), "{items:?}");
    let chunks: Vec<ChatCompletionChunk> = items.into_iter().map(|i| i.unwrap()).collect();
    let sent = anthropic.requests();
    assert_eq!(sent.len(), 1);
    let last = sent[0].body["messages"].as_array().unwrap().last().cloned().unwrap();
    assert_eq!(last["role"], "assistant", "{last}");
    let prefix = last["content"][0]["text"].as_str().or(last["content"].as_str()).unwrap().to_owned();
    assert!(!prefix.is_empty() && !prefix.ends_with(char::is_whitespace), "{prefix:?}");
    let answer = text(&chunks);
    assert!(answer.starts_with(&prefix) && answer.len() > prefix.len(), "{answer:?} continues {prefix:?}");
    assert!(chunks.iter().all(|c| c.id == chunks[0].id), "one id throughout");
}
