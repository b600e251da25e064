//! W3C Trace Context through the gateway: client → router → gateway → OpenAI provider → mock upstream, which
//! records the headers it received. No OpenTelemetry layer is installed here, so the client's `traceparent`
//! goes upstream as received (with feature `opentelemetry-otlp` too; `otel_export.rs` covers the layer).

#![cfg(all(feature = "server", feature = "openai"))]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use axum::body::Body;
use chitty_core::gateway::{Gateway, GatewayConfig, ModelConfig, RouteConfig, TenantConfig, api_key_digest};
use chitty_core::keys::CachePolicy;
use chitty_providers::openai::OpenAiProvider;
use chitty_providers::runtime::TokioRuntimeExt;
use chitty_providers::server::{ServerOptions, router};
use chitty_testkit::mock::MockProvider;
use chitty_testkit::mock_upstream::{MockOpenAi, MockServer};
use http_body_util::BodyExt;
use tower::ServiceExt;

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// A gateway whose model `chat` routes to `primary`, then to `fallback`, two attempts each, no cache.
async fn gateway(primary: &MockServer, fallback: &MockServer) -> axum::Router {
    let provider = |name: &str, server: &MockServer| {
        Arc::new(OpenAiProvider::builder(name).with_base_url(server.base_url()).build().unwrap())
    };
    let mut config = GatewayConfig {
        models: vec![ModelConfig {
            routes: vec![
                RouteConfig::new("primary", "m"),
                RouteConfig::new("fallback", "m"),
            ],
            cache: CachePolicy::Off,
            ..ModelConfig::new("chat")
        }],
        tenants: vec![TenantConfig::new("acme", &api_key_digest("sk-acme"))],
        ..Default::default()
    };
    config.defaults.attempts_per_route = 2;
    config.defaults.backoff_base_ms = 1;
    config.defaults.backoff_max_ms = 1;
    let gateway = Gateway::builder(config)
        .provider(provider("primary", primary))
        .provider(provider("fallback", fallback))
        .tokio_runtime()
        .build()
        .await
        .unwrap();
    router(gateway, ServerOptions::default())
}

async fn upstreams() -> (MockServer, MockServer) {
    let primary = MockOpenAi::serve(Arc::new(MockProvider::new("mock"))).await.unwrap();
    let fallback = MockOpenAi::serve(Arc::new(MockProvider::new("mock"))).await.unwrap();
    primary.record_requests(16);
    fallback.record_requests(16);
    (primary, fallback)
}

/// POSTs a chat request with `headers`; the status and the whole body (read, so that streams finish).
async fn chat(app: &axum::Router, stream: bool, headers: &[(&str, &str)]) -> (u16, String) {
    let body = serde_json::json!({"model": "chat", "stream": stream, "messages": [{"role": "user", "content": "hi"}]});
    let mut request = http::Request::post("/v1/chat/completions")
        .header("authorization", "Bearer sk-acme")
        .header("content-type", "application/json");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = app.clone().oneshot(request.body(Body::from(body.to_string())).unwrap()).await.unwrap();
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

/// The `traceparent` and `tracestate` of every request `server` received, in order.
fn seen(server: &MockServer) -> Vec<(Option<String>, Option<String>)> {
    let owned = |v: Option<&str>| v.map(str::to_owned);
    server.requests().iter().map(|r| (owned(r.header("traceparent")), owned(r.header("tracestate")))).collect()
}

#[tokio::test]
async fn the_clients_traceparent_and_tracestate_reach_the_upstream_plain_and_streamed() {
    let (primary, fallback) = upstreams().await;
    let app = gateway(&primary, &fallback).await;
    let traced = [("traceparent", TRACEPARENT), ("tracestate", "vendor=abc,other=1")];
    for stream in [false, true] {
        let (status, body) = chat(&app, stream, &traced).await;
        assert_eq!(status, 200, "{body}");
        assert!(!stream || body.contains("[DONE]"), "{body}");
    }
    let expected = (Some(TRACEPARENT.to_owned()), Some("vendor=abc,other=1".to_owned()));
    assert_eq!(seen(&primary), [expected.clone(), expected]);
    assert!(fallback.requests().is_empty());
}

#[tokio::test]
async fn every_retry_and_the_fallback_carry_the_traceparent() {
    let (primary, fallback) = upstreams().await;
    let app = gateway(&primary, &fallback).await;
    for stream in [false, true] {
        primary.faults().fail_next(503, 2);
        let (status, body) = chat(&app, stream, &[("traceparent", TRACEPARENT)]).await;
        assert_eq!(status, 200, "{body}");
    }
    let expected = (Some(TRACEPARENT.to_owned()), None);
    assert_eq!(seen(&primary), vec![expected.clone(); 4], "two attempts per request on the first route");
    assert_eq!(seen(&fallback), vec![expected; 2], "then the fallback");
}

#[tokio::test]
async fn a_malformed_or_missing_traceparent_is_not_forwarded_and_fails_nothing() {
    let (primary, fallback) = upstreams().await;
    let app = gateway(&primary, &fallback).await;
    let malformed = [
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "not a traceparent at all, but long enough to be looked at closely",
    ];
    for value in malformed {
        let (status, body) = chat(&app, false, &[("traceparent", value), ("tracestate", "vendor=abc")]).await;
        assert_eq!(status, 200, "{value}: {body}");
    }
    let (status, body) = chat(&app, true, &[]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(seen(&primary), vec![(None, None); malformed.len() + 1]);
}

#[tokio::test]
async fn the_answer_and_the_request_id_are_unchanged_by_the_layer() {
    let (primary, fallback) = upstreams().await;
    let app = gateway(&primary, &fallback).await;
    let request = http::Request::post("/v1/chat/completions")
        .header("authorization", "Bearer sk-acme")
        .header("x-request-id", "req-from-client")
        .header("traceparent", TRACEPARENT)
        .body(Body::from(r#"{"model":"chat","messages":[{"role":"user","content":"hi"}]}"#))
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-request-id"], "req-from-client");
    assert!(response.headers().get("traceparent").is_none(), "nothing is echoed to the client");
}
