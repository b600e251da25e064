//! Pass-through of the Responses and Messages APIs to upstreams that speak them natively: client → axum
//! router → the one pipeline → `OpenAiProvider` (with `responses_api`) / `AnthropicProvider` → the testkit's
//! mock upstreams, with a chat-only OpenAI-compatible upstream as the fallback that translates.

#![cfg(all(feature = "server", feature = "openai", feature = "anthropic"))]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use chitty_core::gateway::{Defaults, Gateway, GatewayConfig, ModelConfig, RouteConfig, TenantConfig, api_key_digest};
use chitty_core::keys::CachePolicy;
use chitty_core::{ModelPrice, NanoUsd};
use chitty_providers::anthropic::AnthropicProvider;
use chitty_providers::memory::{MemoryBudgetStore, MemoryCache};
use chitty_providers::openai::OpenAiProvider;
use chitty_providers::runtime::TokioRuntimeExt;
use chitty_providers::server::{ConnectionLimits, Server, ServerOptions, router};
use chitty_testkit::mock::MockProvider;
use chitty_testkit::mock_upstream::{MockAnthropic, MockOpenAi, MockServer};
use serde_json::{Value, json};

fn price() -> ModelPrice {
    ModelPrice::from_micros_per_mtok(1_000_000, 2_000_000)
}

struct Stack {
    base: String,
    budgets: Arc<MemoryBudgetStore>,
    gateway: Gateway,
    http: reqwest::Client,
    /// Speaks the Responses API (`responses_api` on).
    native: MockServer,
    /// An OpenAI-compatible server the gateway reaches with chat completions only.
    chat_only: MockServer,
    anthropic: MockServer,
}

async fn stack() -> Stack {
    let native = MockOpenAi::serve(Arc::new(MockProvider::new("up"))).await.unwrap();
    let chat_only = MockOpenAi::serve(Arc::new(MockProvider::new("up"))).await.unwrap();
    let anthropic = MockAnthropic::serve(Arc::new(MockProvider::new("up"))).await.unwrap();
    for mock in [&native, &chat_only, &anthropic] {
        mock.record_requests(16);
    }
    let model = |name: &str, routes: Vec<RouteConfig>| ModelConfig {
        routes,
        price: price(),
        cache: CachePolicy::Deterministic,
        max_output_tokens: 256,
        ..ModelConfig::new(name)
    };
    let config = GatewayConfig {
        models: vec![
            model("resp", vec![RouteConfig::new("oai", "gpt-up"), RouteConfig::new("compat", "compat-up")]),
            model("claude", vec![RouteConfig::new("claude-up", "claude-3-up")]),
            model("claude-compat", vec![RouteConfig::new("compat", "compat-up")]),
        ],
        tenants: vec![TenantConfig {
            budget_nano_usd: Some(NanoUsd::ONE_USD),
            ..TenantConfig::new("acme", &api_key_digest("sk-acme"))
        }],
        defaults: Defaults { attempts_per_route: 1, ..Defaults::default() },
        ..Default::default()
    };
    let oai = OpenAiProvider::builder("oai").with_base_url(native.base_url()).with_responses_api(true).build().unwrap();
    let compat = OpenAiProvider::builder("compat").with_base_url(chat_only.base_url()).build().unwrap();
    let claude = AnthropicProvider::builder("claude-up").with_base_url(anthropic.base_url()).build().unwrap();
    let budgets = Arc::new(MemoryBudgetStore::new());
    let gateway = Gateway::builder(config)
        .provider(Arc::new(oai))
        .provider(Arc::new(compat))
        .provider(Arc::new(claude))
        .cache(Arc::new(MemoryCache::new(1 << 24)))
        .budgets(budgets.clone())
        .tokio_runtime()
        .build()
        .await
        .unwrap();
    let app = router(gateway.clone(), ServerOptions::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(
        async move { Server::new(ConnectionLimits::default()).serve(listener, app, std::future::pending()).await },
    );
    Stack { base, budgets, gateway, http: reqwest::Client::new(), native, chat_only, anthropic }
}

impl Stack {
    fn responses(&self, body: &Value) -> reqwest::RequestBuilder {
        self.http.post(format!("{}/v1/responses", self.base)).bearer_auth("sk-acme").json(body)
    }

    fn messages(&self, path: &str, body: &Value) -> reqwest::RequestBuilder {
        self.http
            .post(format!("{}/v1/messages{path}", self.base))
            .header("x-api-key", "sk-acme")
            .header("anthropic-version", "2023-06-01")
            .json(body)
    }

    async fn spent(&self) -> NanoUsd {
        chitty_testkit::budget::balance(self.budgets.as_ref(), "acme", NanoUsd::ONE_USD.0, self.gateway.now())
            .await
            .spent
    }
}

/// The events of an SSE body, as (`event:` name, JSON data).
fn sse_events(text: &str) -> Vec<(String, Value)> {
    text.split("\n\n")
        .filter(|frame| !frame.trim().is_empty())
        .map(|frame| {
            let mut name = String::new();
            let mut data = String::new();
            for line in frame.lines() {
                if let Some(v) = line.strip_prefix("event:") {
                    name = v.trim().to_owned();
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push_str(v.trim_start());
                }
            }
            (name, serde_json::from_str(&data).unwrap_or(Value::Null))
        })
        .collect()
}

fn only_request(mock: &MockServer, path: &str) -> Value {
    let requests = mock.requests();
    assert_eq!(requests.len(), 1, "{requests:#?}");
    assert_eq!(requests[0].path, path);
    requests[0].body.clone()
}

#[tokio::test]
async fn a_responses_request_passes_through_with_model_rewritten_unknown_fields_kept_and_usage_charged() {
    let s = stack().await;
    let body = json!({
        "model": "resp",
        "input": "Say something nice",
        "reasoning": {"effort": "low"},
        "x_vendor": {"keep": [1, 2]},
        "max_output_tokens": 40,
        "temperature": 0,
    });
    let r = s.responses(&body).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-chitty-route"], "oai/gpt-up");
    let answer: Value = r.json().await.unwrap();

    let sent = only_request(&s.native, "/v1/responses");
    assert_eq!(sent["model"], "gpt-up", "only the model is rewritten");
    assert_eq!((&sent["reasoning"], &sent["x_vendor"]), (&body["reasoning"], &body["x_vendor"]), "{sent}");
    assert_eq!((&sent["input"], &sent["max_output_tokens"]), (&body["input"], &json!(40)));
    assert!(sent.get("stream").is_none(), "{sent}");
    assert_eq!(s.chat_only.received(), 0);

    // The upstream's object as it sent it: its model name, not the public one a translation would report.
    assert_eq!(
        (&answer["object"], &answer["model"], &answer["status"]),
        (&json!("response"), &json!("gpt-up"), &json!("completed"))
    );
    let (input, output) =
        (answer["usage"]["input_tokens"].as_u64().unwrap(), answer["usage"]["output_tokens"].as_u64().unwrap());
    assert!(input > 0 && output > 0, "{answer}");
    assert_eq!(s.spent().await, price().cost(input, output));

    // Stored: retrievable by the upstream's id.
    let id = answer["id"].as_str().unwrap();
    let stored: Value = s
        .http
        .get(format!("{}/v1/responses/{id}", s.base))
        .bearer_auth("sk-acme")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stored, answer);

    // The same deterministic request again is served from the cache, the upstream untouched.
    let again: Value = s.responses(&body).send().await.unwrap().json().await.unwrap();
    assert_eq!(again, answer);
    assert_eq!(s.native.received(), 1);
}

#[tokio::test]
async fn a_streamed_responses_request_relays_the_upstreams_events_and_settles_from_response_completed() {
    let s = stack().await;
    let body = json!({"model": "resp", "input": "Stream me a sentence", "stream": true, "x_vendor": true});
    let r = s.responses(&body).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let events = sse_events(&r.text().await.unwrap());

    let sent = only_request(&s.native, "/v1/responses");
    assert_eq!((&sent["model"], &sent["stream"], &sent["x_vendor"]), (&json!("gpt-up"), &json!(true), &json!(true)));

    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names.first(), Some(&"response.created"));
    assert_eq!(names.last(), Some(&"response.completed"));
    for (i, (name, data)) in events.iter().enumerate() {
        assert_eq!(data["type"], name.as_str(), "each event named by its type");
        assert_eq!(data["sequence_number"], i as u64, "relayed in order, none added or lost: {names:?}");
    }
    let completed = &events.last().unwrap().1["response"];
    assert_eq!(completed["model"], "gpt-up", "the upstream's own events");
    let deltas: String = events
        .iter()
        .filter(|(n, _)| n == "response.output_text.delta")
        .map(|(_, d)| d["delta"].as_str().unwrap())
        .collect();
    assert_eq!(deltas, completed["output"][0]["content"][0]["text"].as_str().unwrap());
    let usage = &completed["usage"];
    let expected = price().cost(usage["input_tokens"].as_u64().unwrap(), usage["output_tokens"].as_u64().unwrap());
    // Settlement runs as the stream ends; give it a moment to land.
    for _ in 0..50 {
        if s.spent().await == expected {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(s.spent().await, expected);
}

#[tokio::test]
async fn a_native_route_failing_falls_back_to_a_chat_only_route_that_translates() {
    let s = stack().await;
    s.native.faults().fail_next(503, 1);
    let body = json!({"model": "resp", "input": "Hello", "x_vendor": 1});
    let r = s.responses(&body).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-chitty-route"], "compat/compat-up");
    let answer: Value = r.json().await.unwrap();
    assert_eq!(only_request(&s.native, "/v1/responses")["model"], "gpt-up", "the native route was tried first");
    let sent = only_request(&s.chat_only, "/v1/chat/completions");
    assert_eq!(sent["model"], "compat-up");
    assert_eq!(sent["messages"][0]["content"], "Hello", "translated to chat: {sent}");
    // Translated back by the gateway: the public model name, and usage charged.
    assert_eq!((&answer["object"], &answer["model"]), (&json!("response"), &json!("resp")));
    let usage = &answer["usage"];
    assert_eq!(
        s.spent().await,
        price().cost(usage["input_tokens"].as_u64().unwrap(), usage["output_tokens"].as_u64().unwrap())
    );
}

#[tokio::test]
async fn a_follow_up_of_a_native_response_passes_its_previous_response_id_through() {
    let s = stack().await;
    let first: Value =
        s.responses(&json!({"model": "resp", "input": "Remember 42"})).send().await.unwrap().json().await.unwrap();
    let id = first["id"].as_str().unwrap();
    let r = s
        .responses(&json!({"model": "resp", "input": "What number?", "previous_response_id": id}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let sent = s.native.last_request().unwrap();
    assert_eq!(sent.body["previous_response_id"], id, "the upstream that made it continues it");

    // When that upstream is down, the chat-only route continues the conversation the gateway stored.
    s.native.faults().fail_next(503, 1);
    let r =
        s.responses(&json!({"model": "resp", "input": "And again?", "previous_response_id": id})).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let sent = s.chat_only.last_request().unwrap().body;
    let turns: Vec<&str> = sent["messages"].as_array().unwrap().iter().filter_map(|m| m["content"].as_str()).collect();
    assert_eq!(turns.first(), Some(&"Remember 42"), "{sent}");
    assert_eq!(turns.last(), Some(&"And again?"), "{sent}");
}

#[tokio::test]
async fn upstream_errors_keep_their_status_in_each_apis_envelope() {
    let s = stack().await;
    s.native.faults().fail_next(400, 1);
    let r = s.responses(&json!({"model": "resp", "input": "Hi"})).send().await.unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");
    assert_eq!(s.chat_only.received(), 0, "a 400 is the client's: no fallback");

    s.anthropic.faults().fail_next(400, 1);
    let message = json!({"model": "claude", "max_tokens": 16, "messages": [{"role": "user", "content": "Hi"}]});
    let r = s.messages("", &message).send().await.unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!((&body["type"], &body["error"]["type"]), (&json!("error"), &json!("invalid_request_error")), "{body}");
    assert_eq!(s.spent().await, NanoUsd::ZERO, "failures release their reservation");
}

#[tokio::test]
async fn a_messages_request_passes_through_with_cache_control_thinking_and_unknown_fields() {
    let s = stack().await;
    let body = json!({
        "model": "claude",
        "max_tokens": 64,
        "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
        "messages": [{"role": "user", "content": [
            {"type": "text", "text": "Hello there", "cache_control": {"type": "ephemeral", "ttl": "1h"}}
        ]}],
        "thinking": {"type": "enabled", "budget_tokens": 32},
        "x_beta_field": "kept",
    });
    let r = s.messages("", &body).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-chitty-route"], "claude-up/claude-3-up");
    let answer: Value = r.json().await.unwrap();

    let sent = only_request(&s.anthropic, "/v1/messages");
    let mut expected = body.clone();
    expected["model"] = json!("claude-3-up");
    assert_eq!(sent, expected, "the client's body, only `model` rewritten");

    assert_eq!((&answer["type"], &answer["model"]), (&json!("message"), &json!("claude-3-up")), "{answer}");
    let usage = &answer["usage"];
    let (input, output) = (usage["input_tokens"].as_u64().unwrap(), usage["output_tokens"].as_u64().unwrap());
    assert!(input > 0 && output > 0);
    assert_eq!(s.spent().await, price().cost(input, output));
}

#[tokio::test]
async fn a_streamed_message_relays_anthropics_events_and_settles_from_their_usage() {
    let s = stack().await;
    let body = json!({"model": "claude", "max_tokens": 64, "stream": true, "x_beta_field": 1,
        "messages": [{"role": "user", "content": "Stream a greeting"}]});
    let r = s.messages("", &body).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let events = sse_events(&r.text().await.unwrap());
    let sent = only_request(&s.anthropic, "/v1/messages");
    assert_eq!(
        (&sent["model"], &sent["stream"], &sent["x_beta_field"]),
        (&json!("claude-3-up"), &json!(true), &json!(1))
    );

    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names.first(), Some(&"message_start"), "{names:?}");
    assert_eq!(names.last(), Some(&"message_stop"), "{names:?}");
    assert!(names.contains(&"ping"), "the upstream's own events, ping included: {names:?}");
    assert_eq!(events[0].1["message"]["model"], "claude-3-up");
    let input = events[0].1["message"]["usage"]["input_tokens"].as_u64().unwrap();
    let delta = events.iter().find(|(n, _)| n == "message_delta").unwrap();
    let output = delta.1["usage"]["output_tokens"].as_u64().unwrap();
    let expected = price().cost(input, output);
    for _ in 0..50 {
        if s.spent().await == expected {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(s.spent().await, expected);
}

#[tokio::test]
async fn count_tokens_asks_an_anthropic_upstream_and_bounds_the_rest() {
    let s = stack().await;
    let body = |model: &str| json!({"model": model, "system": "one two", "messages": [{"role": "user", "content": "three four five"}]});
    let r = s.messages("/count_tokens", &body("claude")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let counted: Value = r.json().await.unwrap();
    // The mock counts words plus one per message: 2 + 3 + 1.
    assert_eq!(counted["input_tokens"], 6);
    let sent = only_request(&s.anthropic, "/v1/messages/count_tokens");
    assert_eq!(sent["model"], "claude-3-up");

    let bound: Value = s.messages("/count_tokens", &body("claude-compat")).send().await.unwrap().json().await.unwrap();
    assert!(bound["input_tokens"].as_u64().unwrap() > 6, "the gateway's byte bound: {bound}");
    assert_eq!(s.anthropic.received(), 1);
}

#[tokio::test]
async fn built_in_tools_only_a_native_route_can_serve_pass_through_and_a_chat_route_refuses_them() {
    let s = stack().await;
    let body = json!({"model": "resp", "input": "Search the news", "tools": [{"type": "web_search"}]});
    let r = s.responses(&body).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(only_request(&s.native, "/v1/responses")["tools"], body["tools"]);

    // With the native route down, the chat-only route cannot express them: a 400 naming the field.
    s.native.faults().fail_next(503, 1);
    let r = s.responses(&body).send().await.unwrap();
    assert_eq!(r.status(), 400);
    let error: Value = r.json().await.unwrap();
    assert_eq!(error["error"]["param"], "tools", "{error}");
    assert_eq!(s.chat_only.received(), 0, "nothing a chat route could answer was sent");
}
