//! Anthropic's Messages API at the gateway: client → axum router → chat pipeline → the testkit's mock provider.

#![cfg(feature = "server")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use chitty_core::access::{AccessStore, BudgetPeriod, KeyDigest, KeyRecord, TenantRecord};
use chitty_core::gateway::{Gateway, GatewayConfig, ModelConfig, RouteConfig, TenantConfig, api_key_digest};
use chitty_core::keys::CachePolicy;
use chitty_core::{ModelPrice, NanoUsd, Timestamp};
use chitty_providers::memory::{MemoryAccessStore, MemoryBudgetStore, MemoryCache};
use chitty_providers::runtime::TokioRuntimeExt;
use chitty_providers::server::{ConnectionLimits, Server, ServerOptions, router};
use chitty_testkit::mock::MockProvider;
use serde_json::{Value, json};

struct Stack {
    base: String,
    budgets: Arc<MemoryBudgetStore>,
    gateway: Gateway,
    http: reqwest::Client,
}

async fn stack() -> Stack {
    let config = GatewayConfig {
        models: vec![ModelConfig {
            routes: vec![RouteConfig::new("mock", "mock-1")],
            price: ModelPrice::from_micros_per_mtok(1_000_000, 2_000_000),
            cache: CachePolicy::Deterministic,
            max_output_tokens: 256,
            ..ModelConfig::new("chat")
        }],
        tenants: vec![
            TenantConfig {
                budget_nano_usd: Some(NanoUsd::ONE_USD),
                ..TenantConfig::new("acme", &api_key_digest("sk-acme"))
            },
            TenantConfig {
                budget_nano_usd: Some(NanoUsd::ONE_USD),
                ..TenantConfig::new("twin", &api_key_digest("sk-twin"))
            },
            TenantConfig {
                requests_per_minute: Some(60),
                burst: Some(1),
                ..TenantConfig::new("limited", &api_key_digest("sk-limited"))
            },
        ],
        ..Default::default()
    };
    // A tenant whose daily budget cannot pay for any request.
    let access = Arc::new(MemoryAccessStore::new());
    let broke =
        TenantRecord { budget: Some(NanoUsd(1)), budget_period: BudgetPeriod::Daily, ..TenantRecord::new("broke") };
    access.create_tenant(broke).await.unwrap();
    access
        .create_key(KeyRecord {
            id: "key-broke".into(),
            tenant: "broke".into(),
            parent: None,
            name: "broke".into(),
            digest: KeyDigest::of("sk-broke"),
            budget: None,
            models: None,
            expires_at: None,
            rpm: None,
            tpm: None,
            created_at: Timestamp(0),
            revoked_at: None,
        })
        .await
        .unwrap();
    let budgets = Arc::new(MemoryBudgetStore::new());
    let gateway = Gateway::builder(config)
        .provider(Arc::new(MockProvider::new("mock")))
        .cache(Arc::new(MemoryCache::new(1 << 24)))
        .budgets(budgets.clone())
        .access(access)
        .tokio_runtime()
        .build()
        .await
        .unwrap();
    gateway.reload_access().await.unwrap();
    let app = router(gateway.clone(), ServerOptions::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(
        async move { Server::new(ConnectionLimits::default()).serve(listener, app, std::future::pending()).await },
    );
    Stack { base, budgets, gateway, http: reqwest::Client::new() }
}

impl Stack {
    /// A Messages request as Anthropic's SDKs send it: `x-api-key` and `anthropic-version`.
    fn messages(&self, key: &str, body: &Value) -> reqwest::RequestBuilder {
        self.http
            .post(format!("{}/v1/messages", self.base))
            .header("x-api-key", key)
            .header("anthropic-version", "2023-06-01")
            .json(body)
    }

    async fn spent(&self, tenant: &str) -> NanoUsd {
        chitty_testkit::budget::balance(self.budgets.as_ref(), tenant, NanoUsd::ONE_USD.0, self.gateway.now())
            .await
            .spent
    }
}

fn hello(text: &str) -> Value {
    json!({"model": "chat", "max_tokens": 64, "messages": [{"role": "user", "content": text}]})
}

async fn error_of(r: reqwest::Response) -> (u16, String, String) {
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["type"], "error", "{body}");
    (status, body["error"]["type"].as_str().unwrap().to_owned(), body["error"]["message"].as_str().unwrap().to_owned())
}

#[tokio::test]
async fn a_message_is_answered_and_charged_as_the_same_chat_completion() {
    let s = stack().await;
    let r = s.messages("sk-acme", &hello("Hello, world")).header("x-request-id", "trace-1").send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let h = r.headers().clone();
    assert_eq!((h["x-request-id"].to_str().unwrap(), h["request-id"].to_str().unwrap()), ("trace-1", "trace-1"));
    assert_eq!(h["x-chitty-cache"], "bypass", "no temperature 0: not cacheable");
    let cost: u64 = h["x-chitty-cost-nano-usd"].to_str().unwrap().parse().unwrap();
    let message: Value = r.json().await.unwrap();
    assert_eq!((message["type"].as_str(), message["role"].as_str()), (Some("message"), Some("assistant")));
    assert!(message["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(message["content"][0]["type"], "text");
    assert!(!message["content"][0]["text"].as_str().unwrap().is_empty());
    assert_eq!(message["stop_reason"], "end_turn");
    assert_eq!(message["stop_sequence"], Value::Null);
    let (input, output) =
        (message["usage"]["input_tokens"].as_u64().unwrap(), message["usage"]["output_tokens"].as_u64().unwrap());
    assert!(input > 0 && output > 0);

    // The same conversation as a chat completion, for another tenant: same answer, same charge.
    let chat = json!({"model": "chat", "max_tokens": 64, "messages": [{"role": "user", "content": "Hello, world"}]});
    let r =
        s.http.post(format!("{}/v1/chat/completions", s.base)).bearer_auth("sk-twin").json(&chat).send().await.unwrap();
    let chat_cost: u64 = r.headers()["x-chitty-cost-nano-usd"].to_str().unwrap().parse().unwrap();
    let completion: Value = r.json().await.unwrap();
    assert_eq!(completion["choices"][0]["message"]["content"], message["content"][0]["text"]);
    assert_eq!(
        (completion["usage"]["prompt_tokens"].as_u64(), completion["usage"]["completion_tokens"].as_u64()),
        (Some(input), Some(output))
    );
    assert_eq!(cost, chat_cost);
    assert_eq!(s.spent("acme").await, NanoUsd(cost), "settled at the reported usage");
    assert_eq!(s.spent("twin").await, NanoUsd(chat_cost));
    assert_eq!(NanoUsd(cost), ModelPrice::from_micros_per_mtok(1_000_000, 2_000_000).cost(input, output));
}

#[tokio::test]
async fn a_repeated_deterministic_message_is_a_cache_hit() {
    let s = stack().await;
    let mut body = hello("cache me");
    body["temperature"] = json!(0);
    let first = s.messages("sk-acme", &body).send().await.unwrap();
    assert_eq!(first.headers()["x-chitty-cache"], "miss");
    let first: Value = first.json().await.unwrap();
    let spent = s.spent("acme").await;
    let second = s.messages("sk-acme", &body).send().await.unwrap();
    assert_eq!(second.headers()["x-chitty-cache"], "hit");
    assert_eq!(second.headers()["x-chitty-cost-nano-usd"], "0");
    assert_eq!(second.json::<Value>().await.unwrap()["content"], first["content"]);
    assert_eq!(s.spent("acme").await, spent, "a hit costs nothing");
}

/// The `event:` names and `data:` objects of a server-sent event stream.
fn sse_events(text: &str) -> Vec<(String, Value)> {
    text.split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            let mut lines = e.lines();
            let name = lines.next().unwrap().strip_prefix("event: ").unwrap_or_else(|| panic!("{e}")).to_owned();
            let data = lines.next().unwrap().strip_prefix("data: ").unwrap();
            (name, serde_json::from_str(data).unwrap())
        })
        .collect()
}

#[tokio::test]
async fn a_streamed_message_is_anthropics_event_sequence() {
    let s = stack().await;
    let plain: Value = s.messages("sk-acme", &hello("stream me")).send().await.unwrap().json().await.unwrap();
    let mut body = hello("stream me");
    body["stream"] = json!(true);
    let r = s.messages("sk-acme", &body).send().await.unwrap();
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    assert!(r.headers().contains_key("x-request-id"));
    let events = sse_events(&r.text().await.unwrap());
    for (name, data) in &events {
        assert_eq!(data["type"], name.as_str(), "event and data agree");
    }
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    let deltas = names.iter().filter(|n| **n == "content_block_delta").count();
    assert!(deltas > 1, "a word per chunk: {names:?}");
    let mut expected = vec!["message_start", "ping", "content_block_start"];
    expected.extend(std::iter::repeat_n("content_block_delta", deltas));
    expected.extend(["content_block_stop", "message_delta", "message_stop"]);
    assert_eq!(names, expected);
    let text: String = events.iter().filter_map(|(_, d)| d["delta"]["text"].as_str()).collect();
    assert_eq!(text, plain["content"][0]["text"].as_str().unwrap(), "streamed text equals the plain answer");
    let delta = &events[events.len() - 2].1;
    assert_eq!(delta["delta"]["stop_reason"], "end_turn");
    assert_eq!(delta["usage"]["output_tokens"], plain["usage"]["output_tokens"]);
    assert_eq!(delta["usage"]["input_tokens"], plain["usage"]["input_tokens"]);
    assert!(s.spent("acme").await > NanoUsd::ZERO);
}

#[tokio::test]
async fn a_tool_call_streams_as_a_tool_use_block_and_its_result_gets_an_answer() {
    let s = stack().await;
    let tools = json!([{"name": "get_weather", "description": "Weather for a city",
                        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}]);
    let ask = json!({"role": "user", "content": "Weather in Paris?"});
    let body = json!({"model": "chat", "max_tokens": 64, "tools": tools, "messages": [ask], "stream": true});
    let events = sse_events(&s.messages("sk-acme", &body).send().await.unwrap().text().await.unwrap());
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "message_start",
            "ping",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    let block = &events[2].1["content_block"];
    assert_eq!((block["type"].as_str(), block["name"].as_str()), (Some("tool_use"), Some("get_weather")));
    assert_eq!(events[3].1["delta"]["type"], "input_json_delta");
    let input: Value = serde_json::from_str(events[3].1["delta"]["partial_json"].as_str().unwrap()).unwrap();
    assert_eq!(events[5].1["delta"]["stop_reason"], "tool_use");

    let call = json!({"type": "tool_use", "id": block["id"], "name": "get_weather", "input": input});
    let result = json!({"type": "tool_result", "tool_use_id": block["id"], "content": "18 degrees"});
    let body = json!({"model": "chat", "max_tokens": 64, "tools": tools, "messages": [
        ask, {"role": "assistant", "content": [call]}, {"role": "user", "content": [result]}]});
    let answer: Value = s.messages("sk-acme", &body).send().await.unwrap().json().await.unwrap();
    assert_eq!(answer["content"][0]["type"], "text", "{answer}");
    assert_eq!(answer["stop_reason"], "end_turn");
}

#[tokio::test]
async fn errors_use_anthropics_envelope_and_statuses() {
    let s = stack().await;
    let r = s.http.post(format!("{}/v1/messages", s.base)).json(&hello("hi")).send().await.unwrap();
    assert_eq!(error_of(r).await.0, 401);
    let r = s.messages("sk-wrong", &hello("hi")).send().await.unwrap();
    assert_eq!(error_of(r).await.1, "authentication_error");
    // `Authorization: Bearer` works too.
    let r =
        s.http.post(format!("{}/v1/messages", s.base)).bearer_auth("sk-acme").json(&hello("hi")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);

    let mut unknown = hello("hi");
    unknown["model"] = json!("claude-nope");
    let (status, kind, message) = error_of(s.messages("sk-acme", &unknown).send().await.unwrap()).await;
    assert_eq!((status, kind.as_str()), (404, "not_found_error"));
    assert!(message.contains("claude-nope"), "{message}");

    let without_cap = json!({"model": "chat", "messages": [{"role": "user", "content": "hi"}]});
    let (status, kind, message) = error_of(s.messages("sk-acme", &without_cap).send().await.unwrap()).await;
    assert_eq!((status, kind.as_str()), (400, "invalid_request_error"));
    assert!(message.contains("max_tokens"), "{message}");
    let r = s.messages("sk-acme", &json!({"model": "chat"})).send().await.unwrap();
    assert_eq!(error_of(r).await.0, 400);

    let r = s.messages("sk-broke", &hello("hi")).send().await.unwrap();
    let retry: u64 = r.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=86_400).contains(&retry), "until the daily budget starts again: {retry}");
    assert_eq!(r.headers()["x-should-retry"], "false");
    let (status, kind, _) = error_of(r).await;
    assert_eq!((status, kind.as_str()), (429, "rate_limit_error"));

    s.messages("sk-limited", &hello("one")).send().await.unwrap();
    let r = s.messages("sk-limited", &hello("two")).send().await.unwrap();
    assert_eq!(r.headers()["retry-after"], "1");
    assert!(r.headers().contains_key("x-ratelimit-limit-requests"));
    assert_eq!(error_of(r).await.1, "rate_limit_error");
}

#[tokio::test]
async fn count_tokens_answers_the_gateways_bound() {
    let s = stack().await;
    let count = |key: &'static str, body: Value| {
        s.http.post(format!("{}/v1/messages/count_tokens", s.base)).header("x-api-key", key).json(&body).send()
    };
    let body = json!({"model": "chat", "system": "Be brief.", "messages": [{"role": "user", "content": "Hello"}]});
    let r = count("sk-acme", body.clone()).await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let n = r.json::<Value>().await.unwrap()["input_tokens"].as_u64().unwrap();
    let chat: chitty_core::wire::MessagesRequest = serde_json::from_value(body.clone()).unwrap();
    assert_eq!(n, chitty_core::tokens::estimate_chat_prompt(&chat.into_chat_prompt().unwrap()));
    assert_eq!(s.spent("acme").await, NanoUsd::ZERO, "counting is free");
    let mut unknown = body.clone();
    unknown["model"] = json!("nope");
    assert_eq!(error_of(count("sk-acme", unknown).await.unwrap()).await.1, "not_found_error");
    assert_eq!(error_of(count("sk-wrong", body).await.unwrap()).await.0, 401);
}
