//! `OpenAiProvider` against the mock OpenAI upstream serving `MockProvider`: the conformance suite, the
//! wire details (usage forced on streams, headers, key, extra fields), faults and cancellation.
#![cfg(feature = "openai")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use chitty_core::wire::{
    ChatCompletionRequest, ChatMessage, EmbeddingInput, EmbeddingRequest, EncodingFormat, StreamOptions,
};
use chitty_core::{Capabilities, Capability, Error, Provider, UpstreamFailure};
use chitty_providers::openai::OpenAiProvider;
use chitty_testkit::mock::MockProvider;
use chitty_testkit::mock_upstream::{Fault, MockOpenAi, MockServer};
use chitty_testkit::provider::{ProviderSuite, chat_request, collect_stream};
use futures::StreamExt;

async fn upstream() -> MockServer {
    let server = MockOpenAi::new(Arc::new(MockProvider::new("mock")))
        .with_models(["chitty-mock", "chitty-mock-embed"])
        .with_api_key("sk-upstream-test")
        .start()
        .await
        .unwrap();
    // These tests read what the provider sent.
    server.record_requests(64);
    server
}

fn provider(server: &MockServer) -> OpenAiProvider {
    OpenAiProvider::builder("openai-mock")
        .with_base_url(format!("{}/", server.base_url()))
        .with_api_key("sk-upstream-test")
        .with_header("x-tenant-route", "blue")
        .with_timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

#[tokio::test]
async fn passes_the_conformance_suite() {
    let server = upstream().await;
    let provider = provider(&server);
    ProviderSuite::new(&provider, "chitty-mock")
        .with_embedding_model("chitty-mock-embed")
        .with_faults(server.faults())
        .run()
        .await;
}

#[tokio::test]
async fn passes_the_conformance_suite_through_a_callers_reqwest_client() {
    let server = upstream().await;
    let provider = OpenAiProvider::builder("openai-mock-reqwest")
        .with_base_url(server.base_url())
        .with_api_key("sk-upstream-test")
        .with_timeout(Duration::from_secs(5))
        .with_client(reqwest::Client::new())
        .build()
        .unwrap();
    ProviderSuite::new(&provider, "chitty-mock")
        .with_embedding_model("chitty-mock-embed")
        .with_faults(server.faults())
        .run()
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_serves_providers_on_runtimes_of_their_own() {
    let server = upstream().await;
    let client = chitty_providers::http_client::UpstreamClient::builder().pool_max_idle_per_host(2).build().unwrap();
    let provider = OpenAiProvider::builder("shared")
        .with_base_url(server.base_url())
        .with_api_key("sk-upstream-test")
        .with_client(client)
        .build()
        .unwrap();
    // Each thread's current-thread runtime gets its own pool from the same client.
    let threads: Vec<_> = (0..3)
        .map(|_| {
            let provider = provider.clone();
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                runtime.block_on(async {
                    for _ in 0..3 {
                        let answer = provider.chat(chat_request("chitty-mock")).await.unwrap();
                        assert!(!answer.choices[0].message.text_content().is_empty());
                    }
                });
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert!(provider.chat(chat_request("chitty-mock")).await.is_ok(), "the test's own runtime still works");
}

#[tokio::test]
async fn mock_provider_passes_the_conformance_suite() {
    let provider = MockProvider::new("mock");
    ProviderSuite::new(&provider, "chitty-mock").run().await;
    let chat_only = MockProvider::new("chat-only").with_capabilities(Capabilities::of(&[Capability::Chat]));
    ProviderSuite::new(&chat_only, "chitty-mock").run().await;
}

#[tokio::test]
async fn streams_force_usage_upstream_and_always_end_with_it() {
    let server = upstream().await;
    let provider = provider(&server);
    let request = ChatCompletionRequest { stream: Some(true), ..chat_request("chitty-mock") };
    assert!(!request.wants_stream_usage());
    let chunks = collect_stream(&provider, request).await;
    let sent = server.last_request().unwrap();
    assert_eq!(sent.body["stream"], true);
    assert_eq!(sent.body["stream_options"]["include_usage"], true, "usage is always requested upstream");
    let last = chunks.last().unwrap();
    assert!(last.choices.is_empty() && last.usage.as_ref().unwrap().completion_tokens > 0);

    // Without forcing, the upstream (like OpenAI) only sends usage to those who ask.
    let unforced = OpenAiProvider::builder("unforced")
        .with_base_url(server.base_url())
        .with_api_key("sk-upstream-test")
        .with_stream_usage(false)
        .build()
        .unwrap();
    let request = ChatCompletionRequest { stream: Some(true), ..chat_request("chitty-mock") };
    let chunks = collect_stream(&unforced, request).await;
    assert!(chunks.iter().all(|c| c.usage.is_none()), "no usage chunk unless asked");

    // A plain request never carries stream options, which OpenAI rejects without `stream`.
    let mut plain = chat_request("chitty-mock");
    plain.stream_options = Some(StreamOptions { include_usage: Some(true), ..Default::default() });
    provider.chat(plain).await.unwrap();
    let sent = server.last_request().unwrap();
    assert!(sent.body.get("stream_options").is_none() && sent.body.get("stream").is_none(), "{}", sent.body);
}

#[tokio::test]
async fn sends_key_headers_and_unknown_fields_as_given() {
    let server = upstream().await;
    let provider = provider(&server);
    let mut request = chat_request("chitty-mock");
    request.extra.insert("reasoning_effort".into(), "low".into());
    request.messages[1].extra.insert("cache_control".into(), serde_json::json!({"type": "ephemeral"}));
    provider.chat(request).await.unwrap();
    let sent = server.last_request().unwrap();
    assert_eq!(sent.path, "/v1/chat/completions");
    assert_eq!(sent.header("authorization"), Some("Bearer sk-upstream-test"));
    assert_eq!(sent.header("x-tenant-route"), Some("blue"));
    assert_eq!(sent.body["model"], "chitty-mock");
    assert_eq!(sent.body["reasoning_effort"], "low");
    assert_eq!(sent.body["messages"][1]["cache_control"]["type"], "ephemeral");
}

#[tokio::test]
async fn wrong_key_is_a_401_with_the_upstream_message() {
    let server = upstream().await;
    let provider = OpenAiProvider::builder("openai-mock")
        .with_base_url(server.base_url())
        .with_api_key("sk-wrong")
        .build()
        .unwrap();
    let err = provider.chat(chat_request("chitty-mock")).await.unwrap_err();
    match &err {
        Error::Upstream { status: Some(401), message, .. } => assert_eq!(message, "invalid API key"),
        other => panic!("{other:?}"),
    }
    assert!(!err.to_string().contains("sk-wrong"));
}

#[tokio::test]
async fn base64_embeddings_from_the_upstream_come_back_as_floats() {
    let server = upstream().await;
    let provider = provider(&server);
    let request = EmbeddingRequest {
        model: "chitty-mock-embed".into(),
        input: EmbeddingInput::Texts(vec!["a".into(), "b".into()]),
        encoding_format: Some(EncodingFormat::Base64),
        ..Default::default()
    };
    let answer = provider.embeddings(request.clone()).await.unwrap();
    let floats = provider.embeddings(EmbeddingRequest { encoding_format: None, ..request }).await.unwrap();
    assert_eq!(server.requests()[0].body["encoding_format"], "base64");
    assert_eq!(answer.data, floats.data, "base64 decodes to exactly the float answer");
}

#[tokio::test]
async fn timeouts_slow_headers_and_refused_connections() {
    let server = upstream().await;
    let provider = OpenAiProvider::builder("openai-mock")
        .with_base_url(server.base_url())
        .with_api_key("sk-upstream-test")
        .with_timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    server.faults().push(Fault::SlowHeaders(Duration::from_secs(2)));
    let err = provider.chat(chat_request("chitty-mock")).await.unwrap_err();
    assert!(matches!(err, Error::UpstreamTimeout { timeout, .. } if timeout == Duration::from_millis(200)), "{err:?}");

    server.faults().set_latency(Duration::from_millis(50));
    provider.chat(chat_request("chitty-mock")).await.expect("latency under the timeout is fine");
    server.faults().clear();

    // A stream that goes silent longer than the idle timeout ends with a timeout item.
    server.faults().set_event_delay(Duration::from_millis(400));
    let request = ChatCompletionRequest { stream: Some(true), ..chat_request("chitty-mock") };
    let items: Vec<_> = provider.chat_stream(request).await.unwrap().collect().await;
    assert!(matches!(items.last(), Some(Err(Error::UpstreamTimeout { .. }))), "{items:?}");

    let base = server.base_url().to_owned();
    drop(server);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let gone = OpenAiProvider::builder("openai-mock").with_base_url(base).build().unwrap();
    let err = gone.chat(chat_request("chitty-mock")).await.unwrap_err();
    assert!(matches!(err, Error::Upstream { failure: UpstreamFailure::Connect, status: None, .. }), "{err:?}");
    assert!(err.is_retryable());
    // The URL is left out of messages: some deployments put credentials in its query.
    assert!(!err.to_string().contains("127.0.0.1"), "{err}");
    // The provider that had pooled connections to the stopped mock fails the same way, without hanging.
    let err = provider.chat(chat_request("chitty-mock")).await.unwrap_err();
    assert!(matches!(err, Error::Upstream { status: None, .. }), "{err:?}");
}

#[tokio::test]
async fn dropping_a_stream_cancels_the_upstream_request() {
    let server = upstream().await;
    let provider = provider(&server);
    server.faults().set_event_delay(Duration::from_millis(30));
    let request = ChatCompletionRequest { stream: Some(true), ..chat_request("chitty-mock") };
    let mut stream = provider.chat_stream(request).await.unwrap();
    stream.next().await.unwrap().unwrap();
    drop(stream);
    for _ in 0..100 {
        if server.cancelled_streams() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(server.cancelled_streams(), 1, "the upstream saw the client go away");
    assert_eq!(server.completed_streams(), 0);
}

#[tokio::test]
async fn declared_capabilities_are_enforced_before_any_request() {
    let server = upstream().await;
    let provider = OpenAiProvider::builder("embed-only")
        .with_base_url(server.base_url())
        .with_api_key("sk-upstream-test")
        .with_capabilities(Capabilities::of(&[Capability::Embeddings, Capability::Chat]))
        .build()
        .unwrap();
    ProviderSuite::new(&provider, "chitty-mock").run().await;
    let mut with_tools = chat_request("chitty-mock");
    with_tools.tools = Some(Vec::new());
    assert!(provider.chat(with_tools.clone()).await.is_ok(), "an empty tool list needs no tool support");
    with_tools.tools =
        Some(vec![serde_json::from_value(serde_json::json!({"type": "function", "function": {"name": "f"}})).unwrap()]);
    assert!(matches!(provider.chat(with_tools).await, Err(Error::Unsupported { capability: Capability::Tools, .. })));
    let before = server.received();
    let _ = provider.completion(Default::default()).await;
    assert_eq!(server.received(), before, "unsupported calls never reach the upstream");
}

#[tokio::test]
async fn invalid_configuration_is_rejected_at_build() {
    let err = OpenAiProvider::builder("p").with_header("bad header", "v").build().unwrap_err();
    assert!(matches!(err, Error::InvalidInput { .. }));
    let err = OpenAiProvider::builder("p").with_api_key("sk-\nx").build().unwrap_err();
    assert!(!err.to_string().contains("sk-"));
    let err = OpenAiProvider::builder("p").with_api_key_from_env("CHITTY_TEST_SURELY_UNSET_VAR").unwrap_err();
    assert!(err.to_string().contains("CHITTY_TEST_SURELY_UNSET_VAR"));
}

#[tokio::test]
async fn a_whole_json_answer_to_a_stream_request_is_replayed_as_chunks() {
    let server = upstream().await;
    let provider = provider(&server);
    let request = ChatCompletionRequest { stream: Some(true), ..chat_request("chitty-mock") };
    let plain = provider.chat(chat_request("chitty-mock")).await.unwrap();
    server.faults().push(Fault::IgnoreStream);
    let chunks = collect_stream(&provider, request).await;
    assert_eq!(server.faults().pending(), 0);
    let mut acc = chitty_core::wire::ChunkAccumulator::default();
    chunks.iter().for_each(|c| acc.push(c));
    assert!(chunks.last().unwrap().usage.is_some());
    assert_eq!(acc.finish().choices[0].message.text_content(), plain.choices[0].message.text_content());
}

#[tokio::test]
async fn the_suite_fails_a_provider_that_loses_stream_usage() {
    let server = upstream().await;
    let base = server.base_url().to_owned();
    // A provider that does not ask for usage breaks the contract: the suite must catch it.
    let run = tokio::spawn(async move {
        let provider = OpenAiProvider::builder("no-usage")
            .with_base_url(base)
            .with_api_key("sk-upstream-test")
            .with_stream_usage(false)
            .build()
            .unwrap();
        ProviderSuite::new(&provider, "chitty-mock").run().await;
    });
    let err = run.await.unwrap_err();
    assert!(err.is_panic());
    drop(server);
}

#[tokio::test]
async fn the_mock_upstream_speaks_openai_on_the_wire() {
    let server = upstream().await;
    let client = reqwest::Client::new();
    let models: serde_json::Value = client
        .get(format!("{}/models", server.base_url()))
        .bearer_auth("sk-upstream-test")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = models["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["chitty-mock", "chitty-mock-embed"]);

    let body = serde_json::json!({
        "model": "chitty-mock", "stream": true, "stream_options": {"include_usage": true},
        "messages": [{"role": "user", "content": "hi"}]
    });
    let response = client
        .post(format!("{}/chat/completions", server.base_url()))
        .bearer_auth("sk-upstream-test")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let text = response.text().await.unwrap();
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    assert!(text.contains("\"usage\""));

    server.faults().push(Fault::status(429).with_retry_after(Duration::from_millis(1500)));
    let response = client
        .post(format!("{}/chat/completions", server.base_url()))
        .bearer_auth("sk-upstream-test")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "2");
    assert_eq!(response.headers()["retry-after-ms"], "1500");
    let envelope: serde_json::Value = response.json().await.unwrap();
    assert_eq!(envelope["error"]["type"], "rate_limit_error");
}

/// Answers `chat` from the upstream but `chat_passthrough` from a fixed, different completion.
#[derive(Debug)]
struct DisagreeingJson(OpenAiProvider);

#[async_trait::async_trait]
impl Provider for DisagreeingJson {
    fn name(&self) -> &str {
        "disagreeing-json"
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities::of(&[Capability::Chat])
    }
    async fn chat(
        &self,
        request: ChatCompletionRequest,
    ) -> chitty_core::Result<chitty_core::wire::ChatCompletionResponse> {
        self.0.chat(request).await
    }
    async fn chat_passthrough(
        &self,
        request: ChatCompletionRequest,
    ) -> chitty_core::Result<chitty_core::wire::ChatCompletionJson> {
        let mut answer = self.0.chat(request).await?;
        answer.choices[0].message = ChatMessage::assistant("something else");
        Ok(chitty_core::wire::ChatCompletionJson::from_response(&answer).unwrap())
    }
}

#[tokio::test]
async fn the_suite_fails_a_provider_whose_json_answer_differs() {
    let server = upstream().await;
    let base = server.base_url().to_owned();
    let run = tokio::spawn(async move {
        let inner =
            OpenAiProvider::builder("inner").with_base_url(base).with_api_key("sk-upstream-test").build().unwrap();
        ProviderSuite::new(&DisagreeingJson(inner), "chitty-mock").run().await;
    });
    let err = run.await.unwrap_err();
    assert!(err.is_panic());
    drop(server);
}
