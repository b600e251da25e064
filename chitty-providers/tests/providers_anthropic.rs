//! `AnthropicProvider` against the mock Anthropic upstream serving `MockProvider`: the conformance
//! suite, the headers and translated body it sends, and a real call when `ANTHROPIC_API_KEY` is set.
#![cfg(feature = "anthropic")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use chitty_core::wire::ChatCompletionRequest;
use chitty_core::{Error, Provider};
use chitty_providers::anthropic::AnthropicProvider;
use chitty_testkit::mock::MockProvider;
use chitty_testkit::mock_upstream::{MockAnthropic, MockServer};
use chitty_testkit::provider::{ProviderSuite, chat_request, collect_stream};
use futures::StreamExt;

async fn upstream() -> MockServer {
    let server =
        MockAnthropic::new(Arc::new(MockProvider::new("mock"))).with_api_key("sk-ant-test").start().await.unwrap();
    // These tests read what the provider sent.
    server.record_requests(64);
    server
}

fn provider(server: &MockServer) -> AnthropicProvider {
    AnthropicProvider::builder("anthropic-mock")
        .with_base_url(server.base_url())
        .with_api_key("sk-ant-test")
        .with_header("anthropic-beta", "tools-2024-04-04")
        .with_timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

#[tokio::test]
async fn passes_the_conformance_suite() {
    let server = upstream().await;
    let provider = provider(&server);
    ProviderSuite::new(&provider, "claude-mock").with_faults(server.faults()).run().await;
}

#[tokio::test]
async fn sends_the_messages_api_with_its_headers() {
    let server = upstream().await;
    let provider = provider(&server);
    let answer = provider.chat(chat_request("claude-mock")).await.unwrap();
    let sent = server.last_request().unwrap();
    assert_eq!(sent.path, "/v1/messages");
    assert_eq!(sent.header("x-api-key"), Some("sk-ant-test"));
    assert_eq!(sent.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(sent.header("anthropic-beta"), Some("tools-2024-04-04"));
    assert!(sent.header("authorization").is_none());
    assert_eq!(sent.body["system"], "You are terse.");
    assert_eq!(sent.body["max_tokens"], 64);
    assert_eq!(sent.body["messages"].as_array().unwrap().len(), 1);
    assert!(answer.id.starts_with("msg"), "{}", answer.id);

    // Without a cap in the request, the configured default is sent (Anthropic requires one).
    let uncapped = ChatCompletionRequest { max_tokens: None, ..chat_request("claude-mock") };
    let provider = AnthropicProvider::builder("a")
        .with_base_url(server.base_url())
        .with_api_key("sk-ant-test")
        .with_default_max_tokens(321)
        .build()
        .unwrap();
    provider.chat(uncapped).await.unwrap();
    assert_eq!(server.last_request().unwrap().body["max_tokens"], 321);
}

#[tokio::test]
async fn streams_end_with_usage_and_wrong_keys_fail_with_the_upstream_message() {
    let server = upstream().await;
    let provider = provider(&server);
    let chunks =
        collect_stream(&provider, ChatCompletionRequest { stream: Some(true), ..chat_request("claude-mock") }).await;
    assert_eq!(server.last_request().unwrap().body["stream"], true);
    assert!(chunks.last().unwrap().usage.is_some());

    let wrong = AnthropicProvider::builder("a").with_base_url(server.base_url()).with_api_key("nope").build().unwrap();
    match wrong.chat(chat_request("claude-mock")).await {
        Err(Error::Upstream { status: Some(401), message, .. }) => assert_eq!(message, "invalid API key"),
        other => panic!("{other:?}"),
    }
    // Requests Anthropic cannot express fail before reaching it.
    let before = server.received();
    let two = ChatCompletionRequest { n: Some(2), ..chat_request("claude-mock") };
    assert!(matches!(provider.chat(two).await, Err(Error::InvalidRequest { .. })));
    assert_eq!(server.received(), before);
}

#[tokio::test]
async fn dropping_a_stream_cancels_the_upstream_request() {
    let server = upstream().await;
    let provider = provider(&server);
    server.faults().set_event_delay(Duration::from_millis(30));
    let mut stream = provider
        .chat_stream(ChatCompletionRequest { stream: Some(true), ..chat_request("claude-mock") })
        .await
        .unwrap();
    stream.next().await.unwrap().unwrap();
    drop(stream);
    for _ in 0..100 {
        if server.cancelled_streams() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(server.cancelled_streams(), 1);
}

#[tokio::test]
async fn the_mock_upstream_enforces_anthropics_rules() {
    let server = upstream().await;
    let client = reqwest::Client::new();
    let post = |body: serde_json::Value| {
        client
            .post(format!("{}/v1/messages", server.base_url()))
            .header("x-api-key", "sk-ant-test")
            .header("anthropic-version", "2023-06-01")
            .json(&body)
            .send()
    };
    let orphan = serde_json::json!({"model": "m", "max_tokens": 10, "messages": [
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_x", "content": "42"}]}
    ]});
    let response = post(orphan).await.unwrap();
    assert_eq!(response.status(), 400);
    let envelope: serde_json::Value = response.json().await.unwrap();
    assert_eq!(envelope["type"], "error");
    assert!(envelope["error"]["message"].as_str().unwrap().contains("toolu_x"));
    let uncapped = serde_json::json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
    assert_eq!(post(uncapped).await.unwrap().status(), 400, "max_tokens is required");
}
