//! The mock OpenAI upstream.

use std::sync::Arc;

use axum::Router;
use axum::response::Response;
use axum::routing::{get, post};
use bytes::Bytes;
use chitty_core::wire::responses::{
    self, ResponseIds, ResponseStreamEvent, ResponseStreamTranslator, ResponsesRequest,
};
use chitty_core::wire::{
    ChatCompletionRequest, CompletionRequest, EmbeddingRequest, Extra, ModelList, ModelObject, StreamChunk,
    StreamOptions,
};
use chitty_core::{Provider, Result};
use futures::StreamExt;
use futures::stream::BoxStream;

use super::{Admitted, Answer, Fault, Flavor, MockServer, Shared};

/// A mock of OpenAI's HTTP API that answers from any [`Provider`].
///
/// `POST /v1/responses` speaks the Responses API natively, as OpenAI does: the request is answered through
/// the provider's chat (chitty-core's translation) and comes back as a response object or as the Responses
/// event sequence (named `event:` lines, `sequence_number`s, usage in `response.completed`, no `[DONE]`);
/// fields it does not model, and built-in tools, are accepted and ignored, and recorded requests show them.
///
/// Chat and legacy-completion streams follow OpenAI: chunks as `data:` events, the usage chunk only when the request set
/// `stream_options.include_usage`, then `data: [DONE]`; an error from the provider mid-stream becomes
/// an event holding the error envelope, without `[DONE]`.
#[derive(Debug)]
pub struct MockOpenAi {
    provider: Arc<dyn Provider>,
    models: Vec<String>,
    api_key: Option<String>,
}

impl MockOpenAi {
    /// A mock serving `provider`; `/v1/models` lists the provider's name until [`Self::with_models`].
    pub fn new(provider: Arc<dyn Provider>) -> MockOpenAi {
        let models = vec![provider.name().to_owned()];
        MockOpenAi { provider, models, api_key: None }
    }

    /// Starts a mock serving `provider` with the defaults.
    pub async fn serve(provider: Arc<dyn Provider>) -> Result<MockServer> {
        MockOpenAi::new(provider).start().await
    }

    /// The model names `/v1/models` lists (every model name is served regardless).
    pub fn with_models<I, S>(mut self, models: I) -> MockOpenAi
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.models = models.into_iter().map(Into::into).collect();
        self
    }

    /// Requires `Authorization: Bearer <key>`; other requests get a 401.
    pub fn with_api_key(mut self, key: impl Into<String>) -> MockOpenAi {
        self.api_key = Some(key.into());
        self
    }

    /// Binds `127.0.0.1:0` and serves until the returned handle is dropped.
    pub async fn start(self) -> Result<MockServer> {
        let shared = Arc::new(Shared::new(self.provider, Flavor::OpenAi, self.api_key, self.models));
        let router = Router::new()
            .route("/v1/chat/completions", post(chat))
            .route("/v1/completions", post(completions))
            .route("/v1/embeddings", post(embeddings))
            .route("/v1/responses", post(responses))
            .route("/v1/models", get(models))
            .with_state(shared.clone());
        super::start(shared, router, "/v1").await
    }
}

async fn chat(admitted: Admitted) -> Answer {
    let request: ChatCompletionRequest = admitted.json()?;
    // OpenAI's own checks, so that a provider sending what OpenAI refuses fails here too.
    if request.messages.is_empty() {
        return Err(admitted.error(400, "[] is too short - 'messages'"));
    }
    let modes = StreamModes {
        stream: request.is_stream(),
        stream_options: request.stream_options.is_some(),
        wants_usage: request.wants_stream_usage(),
    };
    plain_or_stream(
        admitted,
        modes,
        request,
        |provider, request| async move { provider.chat(request).await },
        |provider, request| async move { provider.chat_stream(request).await },
    )
    .await
}

/// How a request that may stream asked to be answered.
struct StreamModes {
    stream: bool,
    stream_options: bool,
    wants_usage: bool,
}

/// OpenAI's answer to a request that may stream: `stream_options` refused without `stream`, then the plain
/// answer (also when [`Fault::IgnoreStream`] is scripted) or the stream as server-sent events.
async fn plain_or_stream<R, T, C, P, PF, S, SF>(
    admitted: Admitted,
    modes: StreamModes,
    request: R,
    plain: P,
    streamed: S,
) -> Answer
where
    T: serde::Serialize,
    C: StreamChunk + serde::Serialize,
    P: FnOnce(Arc<dyn Provider>, R) -> PF,
    PF: std::future::Future<Output = chitty_core::Result<T>>,
    S: FnOnce(Arc<dyn Provider>, R) -> SF,
    SF: std::future::Future<Output = chitty_core::Result<BoxStream<'static, chitty_core::Result<C>>>>,
{
    if modes.stream_options && !modes.stream {
        return Err(admitted.error(400, "The 'stream_options' parameter is only allowed when 'stream' is enabled."));
    }
    let provider = Arc::clone(&admitted.shared.provider);
    if !modes.stream || matches!(admitted.fault, Some(Fault::IgnoreStream)) {
        let answer = plain(provider, request).await.map_err(|e| admitted.failed(&e))?;
        return Ok(admitted.answer(&answer));
    }
    let stream = streamed(provider, request).await.map_err(|e| admitted.failed(&e))?;
    Ok(sse_response(stream, modes.wants_usage, admitted))
}

/// Chunks as OpenAI streams them: `data:` events, the usage-only chunk only when the client asked for it, then
/// `data: [DONE]`; a provider error becomes an event holding the error envelope, without `[DONE]`.
fn sse_response<C>(
    stream: BoxStream<'static, chitty_core::Result<C>>,
    wants_usage: bool,
    admitted: Admitted,
) -> Response
where
    C: StreamChunk + serde::Serialize,
{
    let frames = futures::stream::unfold((stream, false), move |(mut stream, done)| async move {
        if done {
            return None;
        }
        loop {
            match stream.next().await {
                None => return Some((Bytes::from_static(b"data: [DONE]\n\n"), (stream, true))),
                Some(Ok(chunk)) if !chunk.has_choices() && chunk.usage().is_some() && !wants_usage => continue,
                Some(Ok(chunk)) => return Some((super::sse_frame(None, &chunk), (stream, false))),
                Some(Err(e)) => {
                    return Some((super::sse_frame(None, &e.to_envelope()), (stream, true)));
                }
            }
        }
    });
    super::stream_response(frames.boxed(), admitted, "text/event-stream")
}

async fn completions(admitted: Admitted) -> Answer {
    let request: CompletionRequest = admitted.json()?;
    let modes = StreamModes {
        stream: request.is_stream(),
        stream_options: request.stream_options.is_some(),
        wants_usage: request.wants_stream_usage(),
    };
    plain_or_stream(
        admitted,
        modes,
        request,
        |provider, request| async move { provider.completion(request).await },
        |provider, request| async move { provider.completion_stream(request).await },
    )
    .await
}

async fn embeddings(admitted: Admitted) -> Answer {
    let mut request: EmbeddingRequest = admitted.json()?;
    let format = request.encoding_format.take().unwrap_or_default();
    let mut answer = admitted.provider().embeddings(request).await.map_err(|e| admitted.failed(&e))?;
    for item in &mut answer.data {
        item.embedding = item.embedding.encode(format).map_err(|e| admitted.failed(&e))?;
    }
    Ok(admitted.answer(&answer))
}

async fn models(admitted: Admitted) -> Response {
    let list = ModelList {
        object: "list".to_owned(),
        data: admitted
            .shared
            .models
            .iter()
            .map(|id| ModelObject {
                id: id.clone(),
                object: "model".to_owned(),
                created: 1_700_000_000,
                owned_by: "chitty-mock".to_owned(),
                extra: Extra::new(),
            })
            .collect(),
        extra: Extra::new(),
    };
    admitted.answer(&list)
}

async fn responses(admitted: Admitted) -> Answer {
    let request: ResponsesRequest = admitted.json()?;
    // Built-in tools (web search, file search) are OpenAI's to run: the mock accepts them and uses none.
    let mut functions = request.clone();
    if let Some(tools) = &mut functions.tools {
        tools.retain(|t| t.get("type").and_then(serde_json::Value::as_str) == Some("function"));
    }
    let mut chat = responses::to_chat(&functions, &[]).map_err(|e| admitted.failed(&e))?;
    let seed = admitted.shared.received.load(std::sync::atomic::Ordering::Relaxed);
    let ids = ResponseIds::new(seed, seed.rotate_left(17) ^ 0x5eed, 1_700_000_000);
    if !request.is_stream() {
        let answer = admitted.provider().chat(chat).await.map_err(|e| admitted.failed(&e))?;
        return Ok(admitted.answer(&responses::from_chat(&request, &ids, &answer).0));
    }
    chat.stream = Some(true);
    chat.stream_options = Some(StreamOptions { include_usage: Some(true), extra: Extra::new() });
    let chunks = admitted.provider().chat_stream(chat).await.map_err(|e| admitted.failed(&e))?;
    let mut translator = ResponseStreamTranslator::new(request, ids);
    let opening: Vec<Bytes> = translator.start().iter().map(event_frame).collect();
    let state = Some((chunks, translator));
    let rest = futures::stream::unfold(state, |state| async move {
        let (mut chunks, mut translator) = state?;
        match chunks.next().await {
            Some(Ok(chunk)) => {
                let frames: Vec<Bytes> = translator.chunk(&chunk).iter().map(event_frame).collect();
                Some((frames, Some((chunks, translator))))
            }
            Some(Err(e)) => Some((vec![event_frame(&translator.error(&e))], None)),
            None => Some((translator.finish().0.iter().map(event_frame).collect(), None)),
        }
    })
    .flat_map(futures::stream::iter);
    let frames = futures::stream::iter(opening).chain(rest);
    Ok(super::stream_response(frames.boxed(), admitted, "text/event-stream"))
}

/// A Responses event as OpenAI sends it: named by its `type`.
fn event_frame(event: &ResponseStreamEvent) -> Bytes {
    super::sse_frame(Some(event.kind()), &event.0)
}
