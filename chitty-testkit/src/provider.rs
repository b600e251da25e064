//! The conformance suite every [`Provider`] runs, driven by the capabilities it declares.
//!
//! Each check is a public async function that panics with a precise message when the provider breaks
//! the contract, so an implementation's tests are a few lines. [`ProviderSuite::run`] runs all the
//! checks that apply: the provider's declared [`Capabilities`](chitty_core::Capabilities) decide which features are exercised and
//! which must answer [`Error::Unsupported`]; HTTP providers tested against a mock upstream also pass
//! its [`Faults`] so that error statuses, `Retry-After`, cut streams and malformed answers are checked.
//!
//! The checks assume a deterministic upstream (the same prompt gets the same answer), as
//! [`MockProvider`](crate::mock::MockProvider) and the mock upstreams serving it are.
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use chitty_testkit::mock::MockProvider;
//! use chitty_testkit::provider::ProviderSuite;
//!
//! let provider = MockProvider::new("mock");
//! ProviderSuite::new(&provider, "chitty-mock").with_embedding_model("chitty-mock-embed").run().await;
//! # });
//! ```

use std::time::Duration;

use chitty_core::wire::{
    ChatCompletionChunk, ChatCompletionRequest, ChatCompletionResponse, ChatMessage, ChunkAccumulator,
    CompletionAccumulator, CompletionRequest, EmbeddingInput, EmbeddingRequest, Extra, FunctionDefinition, PromptInput,
    Role, StreamOptions, Tool,
};
use chitty_core::{Capability, Error, Provider};
use futures::StreamExt;

use crate::mock_upstream::{Fault, Faults};

/// The prompt every check uses, so that answers are comparable across calls.
pub const PROMPT: &str = "Name three things a gateway does.";

/// A configured run of the conformance suite against one provider.
#[derive(Debug)]
pub struct ProviderSuite<'a> {
    provider: &'a dyn Provider,
    chat_model: String,
    embedding_model: String,
    faults: Option<&'a Faults>,
}

impl<'a> ProviderSuite<'a> {
    /// A suite for `provider`, sending `chat_model` for chat and completions (and embeddings, until
    /// [`Self::with_embedding_model`]).
    pub fn new(provider: &'a dyn Provider, chat_model: impl Into<String>) -> ProviderSuite<'a> {
        let chat_model = chat_model.into();
        ProviderSuite { provider, embedding_model: chat_model.clone(), chat_model, faults: None }
    }

    /// The model sent for embeddings.
    pub fn with_embedding_model(mut self, model: impl Into<String>) -> ProviderSuite<'a> {
        self.embedding_model = model.into();
        self
    }

    /// The fault script of the mock upstream the provider talks to, enabling the failure checks.
    pub fn with_faults(mut self, faults: &'a Faults) -> ProviderSuite<'a> {
        self.faults = Some(faults);
        self
    }

    /// Runs every check that applies to the provider's capabilities; panics at the first failure.
    pub async fn run(&self) {
        let p = self.provider;
        let caps = p.capabilities();
        let chat = self.chat_model.as_str();
        if caps.contains(Capability::Chat) {
            chat_answers_with_usage(p, chat).await;
            chat_passthrough_matches_chat(p, chat).await;
        }
        if caps.contains(Capability::Chat) && caps.contains(Capability::ChatStream) {
            stream_matches_chat(p, chat).await;
        }
        if caps.contains(Capability::Chat) && caps.contains(Capability::Tools) {
            tools_round_trip(p, chat).await;
        }
        if caps.contains(Capability::Completions) {
            completion_answers_with_usage(p, chat).await;
        }
        if caps.contains(Capability::Completions) && caps.contains(Capability::CompletionsStream) {
            completion_stream_matches_completion(p, chat).await;
        }
        if caps.contains(Capability::Embeddings) {
            embeddings_keep_order_and_dimensions(p, &self.embedding_model).await;
        }
        undeclared_capabilities_are_unsupported(p, chat, &self.embedding_model).await;
        if let Some(faults) = self.faults {
            upstream_errors_keep_status(p, chat, faults).await;
            if caps.contains(Capability::ChatStream) {
                cut_stream_ends_with_error(p, chat, faults).await;
            }
            if caps.contains(Capability::CompletionsStream) {
                cut_completion_stream_ends_with_error(p, chat, faults).await;
            }
            malformed_answers_are_errors(p, chat, faults).await;
        }
    }
}

/// The deterministic chat request every check starts from.
pub fn chat_request(model: &str) -> ChatCompletionRequest {
    ChatCompletionRequest {
        model: model.to_owned(),
        messages: vec![ChatMessage::system("You are terse."), ChatMessage::user(PROMPT)],
        temperature: Some(0.0),
        max_tokens: Some(64),
        ..Default::default()
    }
}

/// `chat` answers with an assistant message, a finish reason and usage.
pub async fn chat_answers_with_usage(provider: &dyn Provider, model: &str) {
    let answer =
        provider.chat(chat_request(model)).await.unwrap_or_else(|e| panic!("{}: chat failed: {e}", provider.name()));
    check_answer(provider.name(), &answer);
}

/// `chat_passthrough` describes the completion `chat` gives for the same request: same choices, same usage, and a
/// document that parses back whole.
pub async fn chat_passthrough_matches_chat(provider: &dyn Provider, model: &str) {
    let name = provider.name();
    let typed = provider.chat(chat_request(model)).await.unwrap_or_else(|e| panic!("{name}: chat failed: {e}"));
    let json = provider
        .chat_passthrough(chat_request(model))
        .await
        .unwrap_or_else(|e| panic!("{name}: chat_passthrough failed: {e}"));
    let parsed =
        json.to_response().unwrap_or_else(|e| panic!("{name}: chat_passthrough is not a chat completion: {e}"));
    check_answer(name, &parsed);
    assert_eq!(parsed.choices, typed.choices, "{name}: chat_passthrough and chat disagree on the choices");
    assert_eq!(json.usage(), typed.usage.as_ref(), "{name}: chat_passthrough reports other usage than its document");
    assert_eq!(parsed.usage, typed.usage, "{name}: chat_passthrough and chat disagree on usage");
    assert!(json.is_complete(), "{name}: a finished answer is not complete");
}

fn check_answer(name: &str, answer: &ChatCompletionResponse) {
    assert_eq!(answer.object, "chat.completion", "{name}: object");
    let choice = answer.choices.first().unwrap_or_else(|| panic!("{name}: chat answered without choices"));
    assert_eq!(choice.message.role, Role::Assistant, "{name}: role");
    assert!(!choice.message.text_content().is_empty(), "{name}: empty answer");
    assert!(choice.finish_reason.is_some(), "{name}: no finish_reason");
    let usage = answer.usage.as_ref().unwrap_or_else(|| panic!("{name}: chat answered without usage"));
    assert!(usage.prompt_tokens > 0 && usage.completion_tokens > 0, "{name}: usage {usage:?}");
    assert_eq!(usage.total_tokens, usage.prompt_tokens + usage.completion_tokens, "{name}: total_tokens");
}

/// Collects a stream, panicking on an error item.
pub async fn collect_stream(provider: &dyn Provider, request: ChatCompletionRequest) -> Vec<ChatCompletionChunk> {
    let name = provider.name().to_owned();
    let mut stream = provider.chat_stream(request).await.unwrap_or_else(|e| panic!("{name}: chat_stream failed: {e}"));
    let mut chunks = Vec::new();
    while let Some(item) = stream.next().await {
        chunks.push(item.unwrap_or_else(|e| panic!("{name}: stream item failed: {e}")));
    }
    chunks
}

/// The concatenated deltas of a stream equal the non-streamed answer to the same request, and the
/// stream ends with a usage chunk even though the request did not ask for one.
pub async fn stream_matches_chat(provider: &dyn Provider, model: &str) {
    let name = provider.name();
    let request = chat_request(model);
    let plain = provider.chat(request.clone()).await.unwrap_or_else(|e| panic!("{name}: chat failed: {e}"));
    let chunks = collect_stream(provider, ChatCompletionRequest { stream: Some(true), ..request }).await;
    assert!(chunks.len() >= 2, "{name}: a stream of {} chunks", chunks.len());
    for chunk in &chunks {
        assert_eq!(chunk.object, "chat.completion.chunk", "{name}: chunk object");
        assert!(!chunk.id.is_empty() && chunk.id == chunks[0].id, "{name}: chunks of one stream share one id");
    }
    let first_role = chunks[0].choices.first().and_then(|c| c.delta.role.clone());
    assert_eq!(first_role, Some(Role::Assistant), "{name}: the first chunk carries the assistant role");
    let last = chunks.last().unwrap_or_else(|| panic!("{name}: empty stream"));
    assert!(
        last.choices.is_empty() && last.usage.is_some(),
        "{name}: the stream must end with a usage chunk: {last:?}"
    );
    let usage_chunks = chunks.iter().filter(|c| c.usage.is_some()).count();
    assert_eq!(usage_chunks, 1, "{name}: exactly one chunk carries usage");

    // A client that asks for usage itself gets the same single usage chunk.
    let asked = ChatCompletionRequest {
        stream: Some(true),
        stream_options: Some(StreamOptions { include_usage: Some(true), ..Default::default() }),
        ..chat_request(model)
    };
    let asked = collect_stream(provider, asked).await;
    assert_eq!(asked.iter().filter(|c| c.usage.is_some()).count(), 1, "{name}: usage chunks when asked");
    assert_eq!(asked.last().and_then(|c| c.usage.clone()), last.usage, "{name}: usage differs when asked");
    let mut acc = ChunkAccumulator::default();
    chunks.iter().for_each(|c| acc.push(c));
    let streamed = acc.finish();
    assert_eq!(
        streamed.choices[0].message.text_content(),
        plain.choices[0].message.text_content(),
        "{name}: streamed text differs from the plain answer"
    );
    assert_eq!(streamed.choices[0].finish_reason, plain.choices[0].finish_reason, "{name}: finish_reason");
    let (su, pu) = (streamed.usage.unwrap_or_default(), plain.usage.unwrap_or_default());
    assert_eq!(su.completion_tokens, pu.completion_tokens, "{name}: streamed usage differs");
    assert_eq!(su.prompt_tokens, pu.prompt_tokens, "{name}: streamed usage differs");
}

fn weather_tool() -> Tool {
    Tool {
        kind: "function".to_owned(),
        function: Some(FunctionDefinition {
            name: "get_weather".to_owned(),
            description: Some("Current weather in a city.".to_owned()),
            parameters: Some(serde_json::json!({
                "type": "object",
                "properties": {"query": {"type": "string"}},
                "required": ["query"],
            })),
            strict: None,
            extra: Extra::new(),
        }),
        extra: Extra::new(),
    }
}

/// The model calls a forced tool with JSON arguments (plain and streamed alike), and answers in text
/// once the tool's result is sent back.
pub async fn tools_round_trip(provider: &dyn Provider, model: &str) {
    let name = provider.name();
    let request = ChatCompletionRequest {
        messages: vec![ChatMessage::user("What is the weather in Paris?")],
        tools: Some(vec![weather_tool()]),
        tool_choice: Some(serde_json::json!({"type": "function", "function": {"name": "get_weather"}})),
        ..chat_request(model)
    };
    let answer = provider.chat(request.clone()).await.unwrap_or_else(|e| panic!("{name}: tool call failed: {e}"));
    let choice = &answer.choices[0];
    assert_eq!(choice.finish_reason.as_deref(), Some("tool_calls"), "{name}: finish_reason of a tool call");
    let calls = choice.message.tool_calls.clone().unwrap_or_else(|| panic!("{name}: no tool_calls: {choice:?}"));
    let call = &calls[0];
    assert_eq!(call.function.name, "get_weather", "{name}: tool name");
    assert!(!call.id.is_empty(), "{name}: tool call id");
    let args: serde_json::Value = serde_json::from_str(&call.function.arguments)
        .unwrap_or_else(|e| panic!("{name}: arguments are not JSON ({e}): {}", call.function.arguments));
    assert!(args.is_object(), "{name}: arguments {args}");

    if provider.capabilities().contains(Capability::ChatStream) {
        let chunks = collect_stream(provider, ChatCompletionRequest { stream: Some(true), ..request.clone() }).await;
        let mut acc = ChunkAccumulator::default();
        chunks.iter().for_each(|c| acc.push(c));
        let streamed = acc.finish();
        let streamed_calls = streamed.choices[0].message.tool_calls.clone().unwrap_or_default();
        assert_eq!(streamed_calls.len(), calls.len(), "{name}: streamed tool calls");
        assert_eq!(streamed_calls[0].function.name, call.function.name, "{name}: streamed tool name");
        let streamed_args: serde_json::Value = serde_json::from_str(&streamed_calls[0].function.arguments)
            .unwrap_or_else(|e| panic!("{name}: streamed arguments are not JSON: {e}"));
        assert_eq!(streamed_args, args, "{name}: streamed arguments");
        assert_eq!(streamed.choices[0].finish_reason.as_deref(), Some("tool_calls"), "{name}: streamed finish");
    }

    let mut follow_up = request;
    follow_up.messages.push(choice.message.clone());
    follow_up.messages.push(ChatMessage {
        tool_call_id: Some(call.id.clone()),
        ..ChatMessage::text(Role::Tool, r#"{"temperature_c": 21, "sky": "clear"}"#)
    });
    let answer = provider.chat(follow_up).await.unwrap_or_else(|e| panic!("{name}: tool result turn failed: {e}"));
    check_answer(name, &answer);
    assert!(answer.choices[0].message.tool_calls.is_none(), "{name}: answered the tool result with another call");
}

/// The deterministic legacy completion request the completion checks start from.
pub fn completion_request(model: &str) -> CompletionRequest {
    CompletionRequest {
        model: model.to_owned(),
        prompt: PromptInput::Text("Once upon a time".to_owned()),
        max_tokens: Some(16),
        temperature: Some(0.0),
        ..Default::default()
    }
}

/// A legacy completion answers with text and usage.
pub async fn completion_answers_with_usage(provider: &dyn Provider, model: &str) {
    let name = provider.name();
    let request = completion_request(model);
    let answer = provider.completion(request).await.unwrap_or_else(|e| panic!("{name}: completion failed: {e}"));
    assert_eq!(answer.object, "text_completion", "{name}: object");
    let choice = answer.choices.first().unwrap_or_else(|| panic!("{name}: completion without choices"));
    assert!(!choice.text.is_empty(), "{name}: empty completion");
    assert!(choice.finish_reason.is_some(), "{name}: no finish_reason");
    let usage = answer.usage.unwrap_or_else(|| panic!("{name}: completion without usage"));
    assert!(usage.prompt_tokens > 0 && usage.completion_tokens > 0, "{name}: usage {usage:?}");
}

/// A streamed legacy completion is `text_completion` chunks of one id whose pieces of text concatenate to the
/// non-streamed answer, ending with exactly one usage chunk (with or without `include_usage`) that matches the
/// non-streamed usage.
pub async fn completion_stream_matches_completion(provider: &dyn Provider, model: &str) {
    let name = provider.name();
    let plain = provider
        .completion(completion_request(model))
        .await
        .unwrap_or_else(|e| panic!("{name}: completion failed: {e}"));
    let collect = |request: CompletionRequest| async move {
        let mut stream = provider
            .completion_stream(request)
            .await
            .unwrap_or_else(|e| panic!("{name}: completion_stream failed: {e}"));
        let mut chunks = Vec::new();
        while let Some(item) = stream.next().await {
            chunks.push(item.unwrap_or_else(|e| panic!("{name}: stream item failed: {e}")));
        }
        chunks
    };
    let chunks = collect(CompletionRequest { stream: Some(true), ..completion_request(model) }).await;
    assert!(chunks.len() >= 2, "{name}: a stream of {} chunks", chunks.len());
    for chunk in &chunks {
        assert_eq!(chunk.object, "text_completion", "{name}: chunk object");
        assert!(!chunk.id.is_empty() && chunk.id == chunks[0].id, "{name}: chunks of one stream share one id");
    }
    let last = chunks.last().unwrap_or_else(|| panic!("{name}: empty stream"));
    assert!(
        last.choices.is_empty() && last.usage.is_some(),
        "{name}: the stream must end with a usage chunk: {last:?}"
    );
    assert_eq!(chunks.iter().filter(|c| c.usage.is_some()).count(), 1, "{name}: exactly one chunk carries usage");
    let asked = CompletionRequest {
        stream: Some(true),
        stream_options: Some(StreamOptions { include_usage: Some(true), ..Default::default() }),
        ..completion_request(model)
    };
    let asked = collect(asked).await;
    assert_eq!(asked.iter().filter(|c| c.usage.is_some()).count(), 1, "{name}: usage chunks when asked");
    assert_eq!(asked.last().and_then(|c| c.usage.clone()), last.usage, "{name}: usage differs when asked");

    let mut acc = CompletionAccumulator::default();
    chunks.iter().for_each(|c| acc.push(c));
    let streamed = acc.finish();
    assert_eq!(streamed.choices.len(), plain.choices.len(), "{name}: choices");
    assert_eq!(streamed.choices[0].text, plain.choices[0].text, "{name}: streamed text differs from the plain answer");
    assert_eq!(streamed.choices[0].finish_reason, plain.choices[0].finish_reason, "{name}: finish_reason");
    let (su, pu) = (streamed.usage.unwrap_or_default(), plain.usage.unwrap_or_default());
    assert_eq!((su.prompt_tokens, su.completion_tokens), (pu.prompt_tokens, pu.completion_tokens), "{name}: usage");
}

/// One float embedding per input, in input order, each of the same length; `dimensions` is honoured;
/// the same text embeds the same alone or in a batch.
pub async fn embeddings_keep_order_and_dimensions(provider: &dyn Provider, model: &str) {
    let name = provider.name();
    let texts = ["alpha", "beta gamma", "δέλτα 🎉"];
    let request = EmbeddingRequest {
        model: model.to_owned(),
        input: EmbeddingInput::Texts(texts.iter().map(|t| (*t).to_owned()).collect()),
        ..Default::default()
    };
    let batch = provider.embeddings(request.clone()).await.unwrap_or_else(|e| panic!("{name}: embeddings failed: {e}"));
    assert_eq!(batch.data.len(), texts.len(), "{name}: one embedding per input");
    let vectors: Vec<Vec<f32>> = batch
        .data
        .iter()
        .enumerate()
        .map(|(i, d)| {
            assert_eq!(d.index as usize, i, "{name}: embeddings out of order");
            d.embedding.to_floats().unwrap_or_else(|e| panic!("{name}: embedding {i}: {e}"))
        })
        .collect();
    let dims = vectors[0].len();
    assert!(dims > 0 && vectors.iter().all(|v| v.len() == dims), "{name}: ragged embeddings");
    assert!(vectors[0] != vectors[1], "{name}: different inputs embed identically");
    assert!(batch.usage.prompt_tokens > 0, "{name}: embeddings usage");

    let single = EmbeddingRequest { input: EmbeddingInput::Text(texts[1].to_owned()), ..request.clone() };
    let single = provider.embeddings(single).await.unwrap_or_else(|e| panic!("{name}: embeddings failed: {e}"));
    let alone = single.data[0].embedding.to_floats().unwrap_or_else(|e| panic!("{name}: {e}"));
    let close = alone.iter().zip(&vectors[1]).all(|(a, b)| (a - b).abs() < 1e-5);
    assert!(alone.len() == dims && close, "{name}: the same text embeds differently alone and in a batch");

    let short = EmbeddingRequest { dimensions: Some(4), ..request };
    let short = provider.embeddings(short).await.unwrap_or_else(|e| panic!("{name}: embeddings failed: {e}"));
    for d in &short.data {
        let v = d.embedding.to_floats().unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(v.len(), 4, "{name}: `dimensions` was not honoured");
    }
}

/// Each method whose capability is not declared answers [`Error::Unsupported`] naming it.
pub async fn undeclared_capabilities_are_unsupported(provider: &dyn Provider, chat_model: &str, embedding_model: &str) {
    let name = provider.name();
    let caps = provider.capabilities();
    let expect_unsupported = |capability: Capability, result: Result<(), Error>| match result {
        Err(Error::Unsupported { capability: c, .. }) if c == capability => {}
        other => panic!("{name}: {capability} is not declared but answered {other:?}"),
    };
    if !caps.contains(Capability::Chat) {
        expect_unsupported(Capability::Chat, provider.chat(chat_request(chat_model)).await.map(drop));
    }
    if !caps.contains(Capability::ChatStream) {
        expect_unsupported(Capability::ChatStream, provider.chat_stream(chat_request(chat_model)).await.map(drop));
    }
    if !caps.contains(Capability::Completions) {
        let request = CompletionRequest { model: chat_model.to_owned(), ..Default::default() };
        expect_unsupported(Capability::Completions, provider.completion(request).await.map(drop));
    }
    if !caps.contains(Capability::CompletionsStream) {
        let request = CompletionRequest { stream: Some(true), ..completion_request(chat_model) };
        expect_unsupported(Capability::CompletionsStream, provider.completion_stream(request).await.map(drop));
    }
    if !caps.contains(Capability::Embeddings) {
        let request = EmbeddingRequest { model: embedding_model.to_owned(), ..Default::default() };
        expect_unsupported(Capability::Embeddings, provider.embeddings(request).await.map(drop));
    }
}

/// Upstream 500, 429 (with `Retry-After`) and 400 become [`Error::Upstream`] with the status, the
/// upstream's message and the retry delay kept; a stream refused with 503 fails the same way; the
/// next request succeeds again.
pub async fn upstream_errors_keep_status(provider: &dyn Provider, model: &str, faults: &Faults) {
    let name = provider.name();
    for (status, retry_after) in [(500, None), (429, Some(Duration::from_secs(2))), (400, None)] {
        faults.push(Fault::Status { status, retry_after });
        match provider.chat(chat_request(model)).await {
            Err(Error::Upstream { status: Some(s), message, retry_after: r, .. }) => {
                assert_eq!(s, status, "{name}: status");
                assert!(message.contains(&format!("status {status}")), "{name}: upstream message lost: {message}");
                assert_eq!(r, retry_after, "{name}: Retry-After for {status}");
            }
            other => panic!("{name}: upstream {status} answered {other:?}"),
        }
    }
    if provider.capabilities().contains(Capability::ChatStream) {
        faults.push(Fault::status(503));
        let request = ChatCompletionRequest { stream: Some(true), ..chat_request(model) };
        let error = match provider.chat_stream(request).await {
            Err(e) => e,
            Ok(mut stream) => match stream.next().await {
                Some(Err(e)) => e,
                other => panic!("{name}: a stream refused with 503 yielded {other:?}"),
            },
        };
        assert!(matches!(error, Error::Upstream { status: Some(503), .. }), "{name}: {error:?}");
    }
    faults.push(Fault::Status { status: 429, retry_after: Some(Duration::from_secs(2)) });
    match provider.chat_passthrough(chat_request(model)).await {
        Err(Error::Upstream { status: Some(429), retry_after, .. }) => {
            assert_eq!(retry_after, Some(Duration::from_secs(2)), "{name}: chat_passthrough lost Retry-After");
        }
        other => panic!("{name}: upstream 429 answered chat_passthrough with {other:?}"),
    }
    assert_eq!(faults.pending(), 0, "{name}: a scripted fault was not consumed (a request was not sent?)");
    chat_answers_with_usage(provider, model).await;
}

/// A stream whose connection drops midway ends with an error item, never a clean end.
pub async fn cut_stream_ends_with_error(provider: &dyn Provider, model: &str, faults: &Faults) {
    let name = provider.name();
    faults.push(Fault::CutStream { after_events: 2 });
    let request = ChatCompletionRequest { stream: Some(true), ..chat_request(model) };
    let stream = match provider.chat_stream(request).await {
        Ok(s) => s,
        Err(e) => panic!("{name}: the cut should come mid-stream, yet chat_stream failed: {e}"),
    };
    expect_error_end(name, stream).await;
}

/// A streamed legacy completion whose connection drops midway ends with an error item, never a clean end.
pub async fn cut_completion_stream_ends_with_error(provider: &dyn Provider, model: &str, faults: &Faults) {
    let name = provider.name();
    faults.push(Fault::CutStream { after_events: 2 });
    let request = CompletionRequest { stream: Some(true), ..completion_request(model) };
    let stream = match provider.completion_stream(request).await {
        Ok(s) => s,
        Err(e) => panic!("{name}: the cut should come mid-stream, yet completion_stream failed: {e}"),
    };
    expect_error_end(name, stream).await;
}

/// Drains `stream` and checks that it ends with an upstream error and nothing but its last item failed.
async fn expect_error_end<T: std::fmt::Debug>(
    name: &str,
    mut stream: futures::stream::BoxStream<'_, Result<T, Error>>,
) {
    let mut items = Vec::new();
    while let Some(item) = stream.next().await {
        items.push(item);
    }
    match items.last() {
        Some(Err(Error::Upstream { .. })) => {}
        other => panic!("{name}: a cut stream ended with {other:?} after {} items", items.len()),
    }
    assert!(items[..items.len() - 1].iter().all(Result::is_ok), "{name}: only the last item is an error");
}

/// A malformed JSON body (and a malformed event in a stream) is an error that is not retried, not a panic or a
/// garbage answer.
pub async fn malformed_answers_are_errors(provider: &dyn Provider, model: &str, faults: &Faults) {
    let name = provider.name();
    // A malformed answer would be malformed again: routing must not retry it like a reset connection.
    faults.push(Fault::MalformedJson);
    match provider.chat(chat_request(model)).await {
        Err(e @ Error::Upstream { .. }) => assert!(!e.is_retryable(), "{name}: a malformed body is retryable: {e:?}"),
        other => panic!("{name}: a malformed body answered {other:?}"),
    }
    faults.push(Fault::MalformedJson);
    match provider.chat_passthrough(chat_request(model)).await {
        Err(e @ Error::Upstream { .. }) => {
            assert!(!e.is_retryable(), "{name}: a malformed body is retryable in chat_passthrough: {e:?}");
        }
        other => panic!("{name}: a malformed body answered chat_passthrough with {other:?}"),
    }
    faults.push(Fault::CutStream { after_events: 0 });
    match provider.chat(chat_request(model)).await {
        Err(Error::Upstream { .. }) => {}
        other => panic!("{name}: a body cut in half answered {other:?}"),
    }
    if provider.capabilities().contains(Capability::ChatStream) {
        faults.push(Fault::MalformedStream);
        let request = ChatCompletionRequest { stream: Some(true), ..chat_request(model) };
        let mut stream = provider.chat_stream(request).await.unwrap_or_else(|e| panic!("{name}: {e}"));
        let mut saw_error = false;
        while let Some(item) = stream.next().await {
            assert!(!saw_error, "{name}: the stream went on after an error item");
            saw_error = item.is_err();
        }
        assert!(saw_error, "{name}: a malformed event went unnoticed");
    }
}
