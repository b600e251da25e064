//! The HTTP server end to end: client → axum router → gateway → OpenAI provider → mock OpenAI upstream.

#![cfg(all(feature = "server", feature = "openai"))]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use chitty_core::gateway::{Gateway, GatewayConfig, ModelConfig, ModelKind, RouteConfig, TenantConfig, api_key_digest};
use chitty_core::keys::CachePolicy;
use chitty_core::{BudgetStore, ModelPrice, NanoUsd, Timestamp};
use chitty_providers::memory::{MemoryBudgetStore, MemoryCache};
use chitty_providers::openai::OpenAiProvider;
use chitty_providers::runtime::TokioRuntimeExt;
use chitty_providers::server::{ConnectionLimits, Server, ServerOptions, router};
use chitty_testkit::mock::MockProvider;
use chitty_testkit::mock_upstream::{Fault, MockOpenAi, MockServer};
use futures::StreamExt;
use serde_json::{Value, json};

struct Stack {
    base: String,
    upstream: MockServer,
    budgets: Arc<MemoryBudgetStore>,
    gateway: Gateway,
    http: reqwest::Client,
}

async fn stack(body_limit: usize, tweak: impl FnOnce(&mut GatewayConfig)) -> Stack {
    let upstream = MockOpenAi::serve(Arc::new(MockProvider::new("mock"))).await.unwrap();
    upstream.record_requests(16);
    let provider = OpenAiProvider::builder("up").with_base_url(upstream.base_url()).build().unwrap();
    let model = |name: &str, kind| ModelConfig {
        kind,
        routes: vec![RouteConfig::new("up", name)],
        price: ModelPrice::from_micros_per_mtok(1_000_000, 2_000_000),
        cache: CachePolicy::Deterministic,
        max_output_tokens: 256,
        ..ModelConfig::new(name)
    };
    let mut config = GatewayConfig {
        models: vec![
            model("chat", ModelKind::Chat),
            model("embed", ModelKind::Embedding),
            model("secret", ModelKind::Chat),
        ],
        tenants: vec![
            TenantConfig {
                budget_nano_usd: Some(NanoUsd::ONE_USD),
                ..TenantConfig::new("acme", &api_key_digest("sk-acme"))
            },
            TenantConfig {
                allowed_models: Some(vec!["chat".into()]),
                requests_per_minute: Some(60),
                burst: Some(1),
                ..TenantConfig::new("limited", &api_key_digest("sk-limited"))
            },
        ],
        ..Default::default()
    };
    tweak(&mut config);
    let budgets = Arc::new(MemoryBudgetStore::new());
    let gateway = Gateway::builder(config)
        .provider(Arc::new(provider))
        .cache(Arc::new(MemoryCache::new(1 << 24)))
        .budgets(budgets.clone())
        .tokio_runtime()
        .build()
        .await
        .unwrap();
    let app = router(gateway.clone(), ServerOptions { body_limit, ..ServerOptions::default() });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let server = Server::new(ConnectionLimits::default());
    tokio::spawn(async move { server.serve(listener, app, std::future::pending()).await });
    Stack { base, upstream, budgets, gateway, http: reqwest::Client::new() }
}

impl Stack {
    fn post(&self, path: &str, key: &str) -> reqwest::RequestBuilder {
        self.http.post(format!("{}{path}", self.base)).bearer_auth(key)
    }

    /// `method path` with `key`, its answer's JSON.
    async fn json(&self, method: reqwest::Method, path: &str, key: &str) -> Value {
        let r = self.http.request(method, format!("{}{path}", self.base)).bearer_auth(key).send().await.unwrap();
        r.json().await.unwrap()
    }
}

async fn envelope(r: reqwest::Response) -> (u16, Value) {
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

#[tokio::test]
async fn errors_use_openai_envelopes_and_statuses() {
    let s = stack(4 * 1024, |_| {}).await;
    let chat = json!({"model": "chat", "messages": [{"role": "user", "content": "hi"}]});

    let r = s.http.post(format!("{}/v1/chat/completions", s.base)).json(&chat).send().await.unwrap();
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    let (status, body) = envelope(r).await;
    assert_eq!((status, body["error"]["code"].as_str()), (401, Some("invalid_api_key")));

    let big = json!({"model": "chat", "messages": [{"role": "user", "content": "x".repeat(8 * 1024)}]});
    let (status, body) = envelope(s.post("/v1/chat/completions", "sk-acme").json(&big).send().await.unwrap()).await;
    assert_eq!(status, 413);
    assert_eq!(body["error"]["code"], "request_too_large");
    assert!(body["error"]["message"].as_str().unwrap().contains("4096"), "{body}");

    let r = s
        .post("/v1/chat/completions", "sk-acme")
        .header("content-type", "application/json")
        .body("{\"model\": ")
        .send()
        .await
        .unwrap();
    let (status, body) = envelope(r).await;
    assert_eq!((status, body["error"]["type"].as_str()), (400, Some("invalid_request_error")));
    assert!(body["error"]["message"].as_str().unwrap().contains("invalid JSON"), "{body}");

    let wrong_type = json!({"model": "chat", "messages": "not a list"});
    let (status, _) = envelope(s.post("/v1/chat/completions", "sk-acme").json(&wrong_type).send().await.unwrap()).await;
    assert_eq!(status, 400);

    let (status, body) = envelope(
        s.post("/v1/chat/completions", "sk-acme").json(&json!({"model": "nope", "messages": []})).send().await.unwrap(),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str(), body["error"]["param"].as_str()),
        (404, Some("model_not_found"), Some("model"))
    );

    let (status, _) = envelope(
        s.post("/v1/chat/completions", "sk-limited")
            .json(&json!({"model": "secret", "messages": [{"role": "user", "content": "x"}]}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 403);

    s.post("/v1/chat/completions", "sk-limited").json(&chat).send().await.unwrap();
    let r = s.post("/v1/chat/completions", "sk-limited").json(&chat).send().await.unwrap();
    assert_eq!(r.headers()["retry-after"], "1");
    let (status, body) = envelope(r).await;
    assert_eq!((status, body["error"]["code"].as_str()), (429, Some("rate_limit_exceeded")));

    s.upstream.faults().fail_next(500, 4);
    let (status, body) = envelope(
        s.post("/v1/chat/completions", "sk-acme")
            .json(&json!({"model": "chat", "messages": [{"role": "user", "content": "boom"}]}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 502, "{body}");

    let r = s.http.get(format!("{}/v1/nothing-here", s.base)).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 404);
}

#[tokio::test]
async fn answers_carry_cache_cost_and_request_headers() {
    let s = stack(1 << 20, |_| {}).await;
    let chat = json!({"model": "chat", "messages": [{"role": "user", "content": "headers please"}], "temperature": 0});
    let r =
        s.post("/v1/chat/completions", "sk-acme").header("x-request-id", "trace-123").json(&chat).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let h = r.headers().clone();
    assert_eq!(h["x-request-id"], "trace-123");
    assert_eq!(h["x-chitty-cache"], "miss");
    assert_eq!(h["x-chitty-max-tokens"], "256", "no max_tokens from the client: the gateway set it");
    assert_eq!(h["x-chitty-route"], "up/chat", "the deployment that answered: provider/upstream model");
    assert_eq!(h["x-chitty-attempts"], "1");
    let reserved: u64 = h["x-chitty-reserved-nano-usd"].to_str().unwrap().parse().unwrap();
    let cost: u64 = h["x-chitty-cost-nano-usd"].to_str().unwrap().parse().unwrap();
    assert!(cost > 0 && cost <= reserved, "cost {cost} reserved {reserved}");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["object"], "chat.completion");

    let r = s.post("/v1/chat/completions", "sk-acme").json(&chat).send().await.unwrap();
    assert_eq!(r.headers()["x-chitty-cache"], "hit");
    assert!(!r.headers().contains_key("x-chitty-route"), "a cache hit reached no deployment");
    assert_ne!(r.headers()["x-request-id"], "trace-123");
    let r =
        s.post("/v1/chat/completions", "sk-acme").header("cache-control", "no-cache").json(&chat).send().await.unwrap();
    assert_eq!(r.headers()["x-chitty-cache"], "bypass");

    let models = s.json(reqwest::Method::GET, "/v1/models", "sk-limited").await;
    let ids: Vec<_> = models["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["chat"]);
    assert_eq!(s.http.get(format!("{}/healthz", s.base)).send().await.unwrap().text().await.unwrap(), "ok");

    let emb = json!({"model": "embed", "input": ["a", "b"], "encoding_format": "base64"});
    let body: Value = s.post("/v1/embeddings", "sk-acme").json(&emb).send().await.unwrap().json().await.unwrap();
    assert!(body["data"][1]["embedding"].is_string());
    let comp = json!({"model": "chat", "prompt": "Say this is a test", "max_tokens": 5});
    let body: Value = s.post("/v1/completions", "sk-acme").json(&comp).send().await.unwrap().json().await.unwrap();
    assert_eq!(body["object"], "text_completion");
}

#[tokio::test]
async fn a_model_is_retrieved_only_by_callers_that_may_use_it() {
    let s = stack(1 << 20, |_| {}).await;
    let get = |model: &str, key: &str| s.http.get(format!("{}/v1/models/{model}", s.base)).bearer_auth(key).send();
    let r = get("chat", "sk-limited").await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().contains_key("x-request-id"));
    let body: Value = r.json().await.unwrap();
    assert_eq!(body, json!({"id": "chat", "object": "model", "created": 0, "owned_by": "chitty"}));
    // `secret` exists, but not for this tenant: the same answer as a model that does not exist at all.
    let (hidden, absent) = (
        envelope(get("secret", "sk-limited").await.unwrap()).await,
        envelope(get("nope", "sk-limited").await.unwrap()).await,
    );
    assert_eq!(hidden.0, 404);
    assert_eq!(hidden.1["error"]["code"], "model_not_found");
    assert_eq!(absent.0, 404);
    assert_eq!(hidden.1["error"]["message"].as_str().unwrap().replace("secret", "nope"), absent.1["error"]["message"]);
    assert_eq!(envelope(get("secret", "sk-acme").await.unwrap()).await.0, 200);
    assert_eq!(envelope(get("chat", "sk-wrong").await.unwrap()).await.0, 401);
    assert_eq!(envelope(get("org/with/slashes", "sk-acme").await.unwrap()).await.1["error"]["code"], "model_not_found");
}

#[tokio::test]
async fn router_and_semantic_cache_answers_carry_their_headers() {
    let s = stack(1 << 20, |c| {
        c.routers = vec![
            serde_json::from_value(json!({"name": "auto", "candidates": [{"model": "chat"}, {"model": "secret"}]}))
                .unwrap(),
        ];
        c.models.push(ModelConfig {
            cache: CachePolicy::Semantic,
            semantic_embedding_model: Some("embed".into()),
            routes: vec![RouteConfig::new("up", "faq")],
            ..ModelConfig::new("faq")
        });
    })
    .await;
    let ask = |model: &str, content: Value| json!({"model": model, "messages": [{"role": "user", "content": content}]});
    let r =
        s.post("/v1/chat/completions", "sk-acme").header("x-chitty-quality", "high").json(&ask("auto", json!("hi")));
    let r = r.send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-chitty-router"], "hint:high");
    assert_eq!(r.headers()["x-chitty-route"], "up/secret", "the strongest candidate");
    let models = s.json(reqwest::Method::GET, "/v1/models", "sk-acme").await;
    assert!(models["data"].as_array().unwrap().iter().any(|m| m["id"] == "auto"), "a router is listed: {models}");

    let r =
        s.post("/v1/chat/completions", "sk-acme").header("x-chitty-quality", "best").json(&ask("auto", json!("hi")));
    let (status, body) = envelope(r.send().await.unwrap()).await;
    assert_eq!(status, 400);
    assert!(body["error"]["message"].as_str().unwrap().contains("x-chitty-quality"), "{body}");

    // The same text as a string and as a text part: different exact keys, the same embedding.
    let question = "What does chitty do?";
    let r = s.post("/v1/chat/completions", "sk-acme").json(&ask("faq", json!(question))).send().await.unwrap();
    assert_eq!(r.headers()["x-chitty-cache"], "miss");
    let parts = json!([{"type": "text", "text": question}]);
    let r = s.post("/v1/chat/completions", "sk-acme").json(&ask("faq", parts)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-chitty-cache"], "semantic");
    assert_eq!(r.headers()["x-chitty-cache-similarity"], "1.0000");
    assert_eq!(r.headers()["x-chitty-cost-nano-usd"], "0");
}

#[tokio::test]
async fn streams_are_server_sent_events_ending_with_done() {
    let s = stack(1 << 20, |_| {}).await;
    let req = json!({"model": "chat", "messages": [{"role": "user", "content": "stream"}], "stream": true,
                     "stream_options": {"include_usage": true}});
    let r = s.post("/v1/chat/completions", "sk-acme").json(&req).send().await.unwrap();
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    assert_eq!(r.headers()["x-chitty-cache"], "bypass");
    let text = r.text().await.unwrap();
    let events: Vec<&str> = text.split("\n\n").filter(|e| !e.trim().is_empty()).collect();
    assert!(events.iter().all(|e| e.starts_with("data: ")), "{text}");
    assert_eq!(*events.last().unwrap(), "data: [DONE]");
    let usage: Value = serde_json::from_str(events[events.len() - 2].trim_start_matches("data: ")).unwrap();
    assert!(usage["choices"].as_array().unwrap().is_empty() && usage["usage"]["total_tokens"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn legacy_completions_stream_as_server_sent_events() {
    let s = stack(1 << 20, |_| {}).await;
    let plain = json!({"model": "chat", "prompt": "Tell me a story", "max_tokens": 12, "temperature": 0.8});
    let whole: Value = s.post("/v1/completions", "sk-acme").json(&plain).send().await.unwrap().json().await.unwrap();

    let mut streamed = plain.clone();
    streamed["stream"] = json!(true);
    let r = s.post("/v1/completions", "sk-acme").json(&streamed).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let text = r.text().await.unwrap();
    let events: Vec<&str> = text.split("\n\n").filter(|e| !e.trim().is_empty()).collect();
    assert_eq!(*events.last().unwrap(), "data: [DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e.strip_prefix("data: ").unwrap()).unwrap())
        .collect();
    assert!(chunks.len() > 2, "{text}");
    assert!(chunks.iter().all(|c| c["object"] == "text_completion" && c.get("usage").is_none_or(Value::is_null)));
    let joined: String = chunks.iter().map(|c| c["choices"][0]["text"].as_str().unwrap()).collect();
    assert_eq!(joined, whole["choices"][0]["text"].as_str().unwrap(), "the pieces make the plain answer");
    assert_eq!(chunks.last().unwrap()["choices"][0]["finish_reason"], whole["choices"][0]["finish_reason"]);
    // Upstream, the stream asked for usage whatever the client said, so that spend is exact.
    let sent = s.upstream.last_request().unwrap().body;
    assert_eq!((sent["stream"].clone(), sent["stream_options"]["include_usage"].clone()), (json!(true), json!(true)));
}

#[tokio::test]
async fn a_legacy_completion_stream_cut_upstream_ends_with_an_error_event_and_is_not_cached() {
    let s = stack(1 << 20, |_| {}).await;
    s.upstream.faults().push(Fault::CutStream { after_events: 2 });
    let req = json!({"model": "chat", "prompt": "cut me off", "max_tokens": 12, "temperature": 0, "stream": true});
    let r = s.post("/v1/completions", "sk-acme").json(&req).send().await.unwrap();
    assert_eq!(r.headers()["x-chitty-cache"], "miss");
    let text = r.text().await.unwrap();
    let events: Vec<&str> = text.split("\n\n").filter(|e| !e.trim().is_empty()).collect();
    let error: Value = serde_json::from_str(events[events.len() - 2].strip_prefix("data: ").unwrap()).unwrap();
    assert!(error["error"]["message"].as_str().unwrap().contains("interrupted"), "{text}");
    let balance =
        chitty_testkit::budget::balance(s.budgets.as_ref(), "acme", NanoUsd::ONE_USD.0, s.gateway.now()).await;
    assert_eq!(balance.reserved, NanoUsd::ZERO, "settled");
    assert!(balance.spent > NanoUsd::ZERO, "what was produced is charged");

    // The broken answer was not cached: the same request goes upstream again.
    let mut plain = req.clone();
    plain["stream"] = json!(false);
    let r = s.post("/v1/completions", "sk-acme").json(&plain).send().await.unwrap();
    assert_eq!(r.headers()["x-chitty-cache"], "miss");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_disconnects_cancels_the_upstream_and_settles() {
    let s = stack(1 << 20, |_| {}).await;
    s.upstream.faults().set_event_delay(Duration::from_millis(40));
    let req = json!({"model": "chat", "messages": [{"role": "user", "content": "a slow stream that we abandon"}],
                     "stream": true, "temperature": 0.9});
    let r = s.post("/v1/chat/completions", "sk-acme").json(&req).send().await.unwrap();
    let mut body = r.bytes_stream();
    let first = body.next().await.unwrap().unwrap();
    assert!(std::str::from_utf8(&first).unwrap().starts_with("data: "));
    let now = s.gateway.now();
    assert!(
        chitty_testkit::budget::balance(s.budgets.as_ref(), "acme", NanoUsd::ONE_USD.0, now).await.reserved
            > NanoUsd::ZERO,
        "held while streaming"
    );
    drop(body);
    let mut settled = false;
    for _ in 0..200 {
        let b = chitty_testkit::budget::balance(s.budgets.as_ref(), "acme", NanoUsd::ONE_USD.0, s.gateway.now()).await;
        if b.reserved == NanoUsd::ZERO && s.upstream.cancelled_streams() == 1 {
            assert!(b.spent > NanoUsd::ZERO, "what was produced is charged");
            settled = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        settled,
        "upstream cancelled {} time(s), balance {:?}",
        s.upstream.cancelled_streams(),
        chitty_testkit::budget::balance(s.budgets.as_ref(), "acme", NanoUsd::ONE_USD.0, s.gateway.now()).await
    );
    assert_eq!(s.upstream.completed_streams(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_drains_in_flight_streams() {
    let s = stack(1 << 20, |_| {}).await;
    s.upstream.faults().set_event_delay(Duration::from_millis(20));
    // A second server over the same gateway, with a shutdown signal this test controls.
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let app = router(s.gateway.clone(), ServerOptions::default());
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await
    });
    assert_stream_drains_on_shutdown(&s.http, &base, stop, server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_core_server_shares_one_gateway_and_drains_on_shutdown() {
    use chitty_providers::server::PerCoreServer;

    let s = stack(1 << 20, |_| {}).await;
    s.upstream.faults().set_event_delay(Duration::from_millis(20));
    let server = PerCoreServer::bind("127.0.0.1:0".parse().unwrap(), 3).unwrap();
    assert_eq!(server.threads(), 3);
    let base = format!("http://{}", server.local_addr());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let app = router(s.gateway.clone(), ServerOptions::default());
    let serving = tokio::spawn(server.serve(app, async {
        let _ = stopped.await;
    }));

    // Fresh connections land on different threads; every answer comes from the one shared gateway and budget.
    let before =
        chitty_testkit::budget::balance(s.budgets.as_ref(), "acme", NanoUsd::ONE_USD.0, s.gateway.now()).await.spent;
    let chat = json!({"model": "chat", "messages": [{"role": "user", "content": "hi"}], "temperature": 1.0});
    for _ in 0..12 {
        let fresh = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
        let r = fresh.post(format!("{base}/v1/chat/completions")).bearer_auth("sk-acme").json(&chat).send().await;
        assert_eq!(r.unwrap().status(), 200);
    }
    let spent =
        chitty_testkit::budget::balance(s.budgets.as_ref(), "acme", NanoUsd::ONE_USD.0, s.gateway.now()).await.spent;
    assert!(spent > before, "the shared budget store was charged");

    assert_stream_drains_on_shutdown(&s.http, &base, stop, serving).await;
}

#[test]
fn per_core_server_refuses_an_address_in_use_by_another_socket() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let err = chitty_providers::server::PerCoreServer::bind(taken.local_addr().unwrap(), 2).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
}

/// Opens a stream, asks the server to shut down mid-stream, and checks that the stream still runs to its end,
/// that the server then stops within 5 s, and that it accepts no new connection.
async fn assert_stream_drains_on_shutdown(
    http: &reqwest::Client,
    base: &str,
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
) {
    let req = json!({"model": "chat", "messages": [{"role": "user", "content": "drain me"}], "stream": true, "temperature": 0.9});
    let r = http.post(format!("{base}/v1/chat/completions")).bearer_auth("sk-acme").json(&req).send().await.unwrap();
    let mut body = r.bytes_stream();
    let mut text = String::from_utf8(body.next().await.unwrap().unwrap().to_vec()).unwrap();
    stop.send(()).unwrap();
    while let Some(chunk) = body.next().await {
        text.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
    }
    assert!(text.trim_end().ends_with("data: [DONE]"), "the stream ran to its end after shutdown began: {text}");
    tokio::time::timeout(Duration::from_secs(5), server).await.unwrap().unwrap().unwrap();
    // A fresh client: a pooled connection from before the shutdown would not show whether new ones are refused.
    let refused = reqwest::Client::new().get(format!("{base}/healthz")).send().await;
    assert!(refused.is_err(), "no new connections after shutdown");
}

#[tokio::test]
async fn readyz_names_a_model_whose_every_circuit_is_open() {
    let s = stack(1 << 20, |c| {
        c.defaults.breaker_failures = 1;
        c.defaults.attempts_per_route = 1;
    })
    .await;
    let ready = s.http.get(format!("{}/readyz", s.base)).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let body: Value = ready.json().await.unwrap();
    assert_eq!((body["status"].as_str(), body["failing"].as_array().map(Vec::len)), (Some("ready"), Some(0)));

    s.upstream.faults().fail_next(500, 1);
    let failed = s
        .post("/v1/chat/completions", "sk-acme")
        .json(&json!({"model": "chat", "messages": [{"role": "user", "content": "open the circuit"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(failed.status(), 502);
    let not_ready = s.http.get(format!("{}/readyz", s.base)).send().await.unwrap();
    assert_eq!(not_ready.status(), 503);
    let body: Value = not_ready.json().await.unwrap();
    let failing: Vec<&str> = body["failing"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert_eq!(failing, ["model `chat`: every route's circuit is open"], "{body}");
}

/// The server-sent events of a streamed answer as `(event name, data)` pairs.
fn named_events(text: &str) -> Vec<(String, Value)> {
    text.split("\n\n")
        .filter(|block| block.contains("data:"))
        .map(|block| {
            let field = |name: &str| {
                block.lines().find_map(|l| l.strip_prefix(name)).map(|v| v.trim_start().to_owned()).unwrap_or_default()
            };
            (field("event:"), serde_json::from_str(&field("data:")).unwrap())
        })
        .collect()
}

#[tokio::test]
async fn responses_run_on_the_chat_pipeline_and_stored_ones_continue_a_conversation() {
    let s = stack(1 << 20, |_| {}).await;
    let body = json!({"model": "chat", "instructions": "Be brief.", "input": "Say hello", "max_output_tokens": 8, "temperature": 0,
                      "metadata": {"run": "1"}});
    let r = s.post("/v1/responses", "sk-acme").json(&body).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let cost: u64 = r.headers()["x-chitty-cost-nano-usd"].to_str().unwrap().parse().unwrap();
    assert_eq!(r.headers()["x-chitty-cache"], "miss");
    let first: Value = r.json().await.unwrap();
    assert_eq!(first["object"], "response");
    // The mock's answer is longer than 8 tokens: cut, as OpenAI reports it.
    assert_eq!(first["status"], "incomplete");
    assert_eq!(first["incomplete_details"], json!({"reason": "max_output_tokens"}));
    assert_eq!(first["model"], "chat");
    assert_eq!(first["metadata"], json!({"run": "1"}));
    let text = first["output"][0]["content"][0]["text"].as_str().unwrap();
    assert!(!text.is_empty());
    let usage = &first["usage"];
    assert!(usage["input_tokens"].as_u64().unwrap() > 0 && usage["output_tokens"].as_u64().unwrap() > 0);
    // Charged like a chat completion: the budget holds what the cost header says.
    let spend = s.budgets.spend("acme", Timestamp(0), s.gateway.now()).await.unwrap();
    assert_eq!(spend.tenant().spent.0, cost);
    assert!(cost > 0);
    let upstream = s.upstream.last_request().unwrap();
    assert_eq!(upstream.path, "/v1/chat/completions");
    assert_eq!(upstream.body["messages"][0], json!({"role": "system", "content": "Be brief."}));

    // The same request again is a cache hit on the chat pipeline.
    let again = s.post("/v1/responses", "sk-acme").json(&body).send().await.unwrap();
    assert_eq!(again.headers()["x-chitty-cache"], "hit");

    let id = first["id"].as_str().unwrap();
    let get =
        |key: &'static str, id: String| s.http.get(format!("{}/v1/responses/{id}", s.base)).bearer_auth(key).send();
    let stored: Value = get("sk-acme", id.to_owned()).await.unwrap().json().await.unwrap();
    assert_eq!(stored, first);
    assert_eq!(envelope(get("sk-limited", id.to_owned()).await.unwrap()).await.0, 404, "other tenants do not see it");

    let follow = json!({"model": "chat", "input": "And again?", "previous_response_id": id});
    let (status, _) = envelope(s.post("/v1/responses", "sk-acme").json(&follow).send().await.unwrap()).await;
    assert_eq!(status, 200);
    let messages = s.upstream.last_request().unwrap().body["messages"].clone();
    assert_eq!(messages.as_array().unwrap().len(), 3, "earlier turn, its answer, the new input: {messages}");
    assert_eq!(messages[0], json!({"role": "user", "content": "Say hello"}), "instructions are not carried over");
    assert_eq!(messages[1]["role"], "assistant");
    assert_eq!(messages[1]["content"], text);

    let (status, error) = envelope(s.post("/v1/responses", "sk-limited").json(&follow).send().await.unwrap()).await;
    assert_eq!((status, error["error"]["param"].as_str()), (400, Some("previous_response_id")), "{error}");

    let deleted = s.json(reqwest::Method::DELETE, &format!("/v1/responses/{id}"), "sk-acme").await;
    assert_eq!(deleted, json!({"id": id, "object": "response", "deleted": true}));
    assert_eq!(envelope(get("sk-acme", id.to_owned()).await.unwrap()).await.0, 404);

    let unstored = json!({"model": "chat", "input": "x", "store": false});
    let object: Value = s.post("/v1/responses", "sk-acme").json(&unstored).send().await.unwrap().json().await.unwrap();
    assert_eq!(envelope(get("sk-acme", object["id"].as_str().unwrap().to_owned()).await.unwrap()).await.0, 404);
}

#[tokio::test]
async fn a_streamed_response_is_the_responses_event_sequence_and_is_stored() {
    let s = stack(1 << 20, |_| {}).await;
    let body = json!({"model": "chat", "input": "Tell me more", "stream": true});
    let r = s.post("/v1/responses", "sk-acme").json(&body).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    let text = r.text().await.unwrap();
    assert!(!text.contains("[DONE]"), "the Responses API ends without [DONE]");
    let events = named_events(&text);
    let kinds: Vec<&str> = events.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(
        kinds[..4],
        ["response.created", "response.in_progress", "response.output_item.added", "response.content_part.added"]
    );
    assert_eq!(kinds.last(), Some(&"response.completed"));
    for (i, (name, data)) in events.iter().enumerate() {
        assert_eq!(&data["type"], name);
        assert_eq!(data["sequence_number"], i as u64);
    }
    let deltas: String = events
        .iter()
        .filter(|(name, _)| name == "response.output_text.delta")
        .map(|(_, data)| data["delta"].as_str().unwrap())
        .collect();
    let completed = &events.last().unwrap().1["response"];
    assert_eq!(completed["output"][0]["content"][0]["text"], deltas);
    assert!(completed["usage"]["output_tokens"].as_u64().unwrap() > 0);
    let id = completed["id"].as_str().unwrap();
    let stored = s.json(reqwest::Method::GET, &format!("/v1/responses/{id}"), "sk-acme").await;
    assert_eq!(&stored, completed);
}
