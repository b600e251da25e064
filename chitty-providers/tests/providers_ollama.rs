//! `OllamaProvider` against the mock Ollama upstream serving `MockProvider`: the conformance suite,
//! the native request shape, completions through `/api/generate`, and a real Ollama when
//! `CHITTY_TEST_OLLAMA_URL` is set.
#![cfg(feature = "ollama")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use chitty_core::wire::{ChatCompletionRequest, CompletionRequest, PromptInput};
use chitty_core::{Error, Provider};
use chitty_providers::ollama::OllamaProvider;
use chitty_testkit::mock::MockProvider;
use chitty_testkit::mock_upstream::{MockOllama, MockServer};
use chitty_testkit::provider::{ProviderSuite, chat_request, collect_stream};
use futures::StreamExt;

async fn upstream() -> MockServer {
    let server = MockOllama::serve(Arc::new(MockProvider::new("mock"))).await.unwrap();
    // These tests read what the provider sent.
    server.record_requests(64);
    server
}

fn provider(server: &MockServer) -> OllamaProvider {
    OllamaProvider::builder("ollama-mock")
        .with_base_url(server.base_url())
        .with_keep_alive("5m")
        .with_timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

#[tokio::test]
async fn passes_the_conformance_suite() {
    let server = upstream().await;
    let provider = provider(&server);
    ProviderSuite::new(&provider, "llama-mock")
        .with_embedding_model("embed-mock")
        .with_faults(server.faults())
        .run()
        .await;
}

#[tokio::test]
async fn sends_the_native_api() {
    let server = upstream().await;
    let provider = provider(&server);
    provider.chat(chat_request("llama-mock")).await.unwrap();
    let sent = server.last_request().unwrap();
    assert_eq!(sent.path, "/api/chat");
    assert_eq!(sent.body["stream"], false, "Ollama streams unless told not to");
    assert_eq!(sent.body["keep_alive"], "5m");
    assert_eq!(sent.body["options"]["num_predict"], 64);
    assert_eq!(sent.body["messages"][0]["role"], "system");

    let chunks =
        collect_stream(&provider, ChatCompletionRequest { stream: Some(true), ..chat_request("llama-mock") }).await;
    assert_eq!(server.last_request().unwrap().body["stream"], true);
    let usage = chunks.last().unwrap().usage.clone().unwrap();
    assert!(usage.prompt_tokens > 0 && usage.completion_tokens > 0);

    let completion = CompletionRequest {
        model: "llama-mock".into(),
        prompt: PromptInput::Text("Once".into()),
        echo: Some(true),
        ..Default::default()
    };
    let answer = provider.completion(completion).await.unwrap();
    assert!(answer.choices[0].text.starts_with("Once"));
    let sent = server.last_request().unwrap();
    assert_eq!((sent.path.as_str(), &sent.body["stream"]), ("/api/generate", &serde_json::json!(false)));
    let tokens = CompletionRequest { prompt: PromptInput::Tokens(vec![1, 2]), ..Default::default() };
    assert!(matches!(provider.completion(tokens).await, Err(Error::InvalidRequest { .. })));
}

#[tokio::test]
async fn dropping_a_stream_cancels_the_upstream_request() {
    let server = upstream().await;
    let provider = provider(&server);
    server.faults().set_event_delay(Duration::from_millis(30));
    let mut stream =
        provider.chat_stream(ChatCompletionRequest { stream: Some(true), ..chat_request("llama-mock") }).await.unwrap();
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
