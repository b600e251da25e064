//! The providers against the real APIs, when their keys (or, for Ollama, its URL) are set; otherwise each test
//! shows as ignored with the variable to set (`harness = false`: see `chitty_testkit::services`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[cfg(any(feature = "openai", feature = "anthropic", feature = "ollama"))]
use chitty_core::Provider;
#[cfg(any(feature = "openai", feature = "anthropic", feature = "ollama"))]
use chitty_core::wire::{ChatCompletionRequest, ChatMessage};
#[cfg(any(feature = "openai", feature = "anthropic", feature = "ollama"))]
use chitty_testkit::provider::{chat_request, collect_stream};
#[allow(unused_imports)] // which trials exist depends on the features
use chitty_testkit::services::{self, block_on, env_var, trial};

#[allow(clippy::vec_init_then_push)] // each push depends on a feature
fn main() -> std::process::ExitCode {
    #[allow(unused_mut)] // which trials exist depends on the features
    let mut trials = Vec::new();
    #[cfg(feature = "openai")]
    trials.push(trial(
        "real_openai_when_a_key_is_set",
        &env_var("OPENAI_API_KEY", "test a real upstream (optionally OPENAI_BASE_URL, CHITTY_TEST_OPENAI_MODEL)"),
        |_| block_on(real_openai()),
    ));
    #[cfg(feature = "anthropic")]
    trials.push(trial(
        "real_anthropic_when_a_key_is_set",
        &env_var("ANTHROPIC_API_KEY", "test the real Messages API (optionally CHITTY_TEST_ANTHROPIC_MODEL)"),
        |_| block_on(real_anthropic()),
    ));
    #[cfg(feature = "ollama")]
    trials.push(trial(
        "real_ollama_when_a_url_is_set",
        &env_var("CHITTY_TEST_OLLAMA_URL", "test a real Ollama (optionally CHITTY_TEST_OLLAMA_MODEL)"),
        |url| block_on(real_ollama(url)),
    ));
    services::run(trials)
}

/// A one-word chat, plain and streamed: both report usage.
#[cfg(any(feature = "openai", feature = "anthropic", feature = "ollama"))]
async fn ping(provider: &dyn Provider, model: &str) {
    let request = ChatCompletionRequest {
        messages: vec![ChatMessage::user("Reply with the single word: pong")],
        ..chat_request(model)
    };
    assert!(provider.chat(request.clone()).await.unwrap().usage.is_some());
    let chunks = collect_stream(provider, ChatCompletionRequest { stream: Some(true), ..request }).await;
    assert!(chunks.last().unwrap().usage.is_some(), "the real stream ends with usage");
}

/// Talks to the real OpenAI API (`OPENAI_API_KEY`).
#[cfg(feature = "openai")]
async fn real_openai() {
    let provider = chitty_providers::openai::OpenAiProvider::from_env("openai").build().unwrap();
    let model = std::env::var("CHITTY_TEST_OPENAI_MODEL").unwrap_or_else(|_| "gpt-4o-mini".to_owned());
    ping(&provider, &model).await;
}

/// Talks to the real Anthropic API (`ANTHROPIC_API_KEY`).
#[cfg(feature = "anthropic")]
async fn real_anthropic() {
    let provider = chitty_providers::anthropic::AnthropicProvider::from_env("anthropic").build().unwrap();
    let model = std::env::var("CHITTY_TEST_ANTHROPIC_MODEL").unwrap_or_else(|_| "claude-haiku-4-5".to_owned());
    ping(&provider, &model).await;
}

/// Talks to a real Ollama at `url` (e.g. `http://127.0.0.1:11434`).
#[cfg(feature = "ollama")]
async fn real_ollama(url: String) {
    let provider = chitty_providers::ollama::OllamaProvider::builder("ollama").with_base_url(url).build().unwrap();
    let model = std::env::var("CHITTY_TEST_OLLAMA_MODEL").unwrap_or_else(|_| "llama3.2".to_owned());
    ping(&provider, &model).await;
}
