//! OpenTelemetry export (feature `opentelemetry-otlp`): a client's `traceparent` becomes the parent of the
//! gateway's spans, which reach an OTLP/HTTP collector (a small axum server in this test, decoding the
//! protobuf itself), and the upstream receives the same trace id with the gateway's span id.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use chitty_core::gateway::{Gateway, GatewayConfig, ModelConfig, RouteConfig, TenantConfig, api_key_digest};
use chitty_core::keys::CachePolicy;
use chitty_providers::openai::OpenAiProvider;
use chitty_providers::otel::{OtelConfig, layer};
use chitty_providers::runtime::TokioRuntimeExt;
use chitty_providers::server::{ServerOptions, router};
use chitty_providers::trace::TraceParent;
use chitty_testkit::mock::MockProvider;
use chitty_testkit::mock_upstream::{MockOpenAi, MockServer};
use http_body_util::BodyExt;
use tower::ServiceExt;
use tracing_subscriber::layer::SubscriberExt;

/// One exported span, as the collector decoded it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ExportedSpan {
    name: String,
    trace_id: Vec<u8>,
    span_id: Vec<u8>,
    parent_span_id: Vec<u8>,
}

/// The protobuf fields of `buf`: (field number, payload of a length-delimited field or empty).
fn fields(mut buf: &[u8]) -> Vec<(u64, &[u8])> {
    fn varint(buf: &mut &[u8]) -> u64 {
        let mut value = 0;
        for shift in (0..64).step_by(7) {
            let (&byte, rest) = buf.split_first().expect("truncated varint");
            *buf = rest;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                break;
            }
        }
        value
    }
    let mut out = Vec::new();
    while !buf.is_empty() {
        let key = varint(&mut buf);
        let payload: &[u8] = match key & 7 {
            0 => {
                varint(&mut buf);
                &[]
            }
            1 => {
                buf = &buf[8..];
                &[]
            }
            2 => {
                let len = varint(&mut buf) as usize;
                let (payload, rest) = buf.split_at(len);
                buf = rest;
                payload
            }
            5 => {
                buf = &buf[4..];
                &[]
            }
            other => panic!("unexpected wire type {other}"),
        };
        out.push((key >> 3, payload));
    }
    out
}

/// The spans of an `ExportTraceServiceRequest`: resource_spans (1) → scope_spans (2) → spans (2) → trace_id
/// (1), span_id (2), parent_span_id (4), name (5).
fn spans(request: &[u8]) -> Vec<ExportedSpan> {
    let mut out = Vec::new();
    for (_, resource_spans) in fields(request).into_iter().filter(|(n, _)| *n == 1) {
        for (_, scope_spans) in fields(resource_spans).into_iter().filter(|(n, _)| *n == 2) {
            for (_, span) in fields(scope_spans).into_iter().filter(|(n, _)| *n == 2) {
                let mut decoded = ExportedSpan {
                    name: String::new(),
                    trace_id: Vec::new(),
                    span_id: Vec::new(),
                    parent_span_id: Vec::new(),
                };
                for (number, payload) in fields(span) {
                    match number {
                        1 => decoded.trace_id = payload.to_vec(),
                        2 => decoded.span_id = payload.to_vec(),
                        4 => decoded.parent_span_id = payload.to_vec(),
                        5 => decoded.name = String::from_utf8(payload.to_vec()).unwrap(),
                        _ => {}
                    }
                }
                out.push(decoded);
            }
        }
    }
    out
}

/// An OTLP/HTTP collector on a thread and runtime of its own (the exporter's flush blocks the caller):
/// its base URL and the bodies it received on `POST /v1/traces`.
fn collector() -> (String, Arc<Mutex<Vec<Bytes>>>) {
    let received = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let store = received.clone();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async move {
            let app = axum::Router::new().route(
                "/v1/traces",
                axum::routing::post(move |headers: http::HeaderMap, body: Bytes| async move {
                    assert_eq!(headers["content-type"], "application/x-protobuf");
                    store.lock().unwrap().push(body);
                    // An empty ExportTraceServiceResponse.
                    ([("content-type", "application/x-protobuf")], Bytes::new())
                }),
            );
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(format!("http://{}", listener.local_addr().unwrap())).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    (rx.recv().unwrap(), received)
}

async fn gateway(upstream: &MockServer) -> axum::Router {
    let provider = OpenAiProvider::builder("up").with_base_url(upstream.base_url()).build().unwrap();
    let config = GatewayConfig {
        models: vec![ModelConfig {
            routes: vec![RouteConfig::new("up", "m")],
            cache: CachePolicy::Off,
            ..ModelConfig::new("chat")
        }],
        tenants: vec![TenantConfig::new("acme", &api_key_digest("sk-acme"))],
        ..Default::default()
    };
    let gateway = Gateway::builder(config).provider(Arc::new(provider)).tokio_runtime().build().await.unwrap();
    router(gateway, ServerOptions::default())
}

async fn chat(app: &axum::Router, stream: bool, traceparent: Option<&str>) {
    let body = serde_json::json!({"model": "chat", "stream": stream, "messages": [{"role": "user", "content": "hi"}]});
    let mut request = http::Request::post("/v1/chat/completions").header("authorization", "Bearer sk-acme");
    if let Some(value) = traceparent {
        request = request.header("traceparent", value);
    }
    let response = app.clone().oneshot(request.body(Body::from(body.to_string())).unwrap()).await.unwrap();
    assert_eq!(response.status(), 200);
    // Read to the end: a stream's spans close when it does.
    response.into_body().collect().await.unwrap();
}

/// The exported span named `name` in trace `trace_id`.
fn span<'a>(exported: &'a [ExportedSpan], trace_id: &[u8], name: &str) -> &'a ExportedSpan {
    let found: Vec<_> = exported.iter().filter(|s| s.trace_id == trace_id && s.name == name).collect();
    assert_eq!(found.len(), 1, "one {name} in trace {trace_id:02x?}: {exported:#?}");
    found[0]
}

#[tokio::test]
async fn spans_join_the_clients_trace_and_the_upstream_gets_the_gateways_span_as_parent() {
    let (endpoint, received) = collector();
    let (otel, guard) = layer(&OtelConfig::new("chitty-test").with_endpoint(endpoint)).unwrap();
    // This test's runtime is current-thread: the subscriber set for this thread sees every task.
    let _subscriber = tracing::subscriber::set_default(tracing_subscriber::registry().with(otel));

    let upstream = MockOpenAi::serve(Arc::new(MockProvider::new("mock"))).await.unwrap();
    upstream.record_requests(16);
    let app = gateway(&upstream).await;
    let plain = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let streamed = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    chat(&app, false, Some(plain)).await;
    chat(&app, true, Some(streamed)).await;
    chat(&app, false, None).await;
    chat(&app, false, Some("00-not-a-valid-traceparent-but-fifty-five-bytes-long-xx-01")).await;
    guard.force_flush().unwrap();

    let exported: Vec<ExportedSpan> = received.lock().unwrap().iter().flat_map(|body| spans(body)).collect();
    let sent: Vec<TraceParent> = upstream
        .requests()
        .iter()
        .map(|r| TraceParent::parse(r.header("traceparent").expect("every upstream request is traced").as_bytes()))
        .map(|p| p.expect("a valid traceparent"))
        .collect();
    assert_eq!(sent.len(), 4);

    for (client, upstream_parent) in [(plain, sent[0]), (streamed, sent[1])] {
        let client = TraceParent::parse(client.as_bytes()).unwrap();
        let trace = client.trace_id();
        let http = span(&exported, &trace, "chitty.http");
        let request = span(&exported, &trace, "chitty.request");
        assert_eq!(http.parent_span_id, client.parent_id(), "the client's span is the gateway's parent");
        assert_eq!(request.parent_span_id, http.span_id, "the pipeline's span is a child of the HTTP span");
        assert_eq!(upstream_parent.trace_id(), trace, "the upstream joins the client's trace");
        assert_ne!(upstream_parent.parent_id(), client.parent_id());
        assert_eq!(upstream_parent.parent_id().as_slice(), request.span_id, "the gateway's span is the parent");
        assert!(upstream_parent.is_sampled());
    }
    // Without a usable traceparent, the gateway starts a trace and the upstream joins it.
    for fresh in &sent[2..] {
        let http = span(&exported, &fresh.trace_id(), "chitty.http");
        assert!(http.parent_span_id.is_empty(), "a root span: {http:?}");
        assert_eq!(span(&exported, &fresh.trace_id(), "chitty.request").span_id, fresh.parent_id());
    }
    assert_ne!(sent[2].trace_id(), sent[3].trace_id());
}

#[test]
fn the_configuration_comes_from_the_standard_variables() {
    let config = OtelConfig::new("x").with_endpoint("http://127.0.0.1:4318/");
    assert_eq!(config.service_name(), "x");
    if std::env::var_os("OTEL_EXPORTER_OTLP_ENDPOINT").is_none()
        && std::env::var_os("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_none()
    {
        assert!(OtelConfig::from_env().is_none(), "export is off unless an endpoint is set");
    }
}
