//! The OpenAI-compatible HTTP server: a thin axum adapter over [`chitty_core::gateway::Gateway`].
//!
//! [`router`] returns an [`axum::Router`] a host application mounts or serves:
//! `POST /v1/chat/completions` and `POST /v1/completions` (plain and SSE), `POST /v1/embeddings`,
//! `POST /v1/responses` (plain and SSE; `GET` and `DELETE /v1/responses/{id}` for stored responses),
//! `POST /v1/messages` (Anthropic's Messages API, plain and SSE) and `POST /v1/messages/count_tokens`,
//! `GET /v1/models` (only the caller's models) and `GET /v1/models/{id}`, `GET /healthz` (the process is alive) and `GET /readyz` (200 when
//! the cache, budget and access-store backends answer and every model has a route whose circuit is closed; 503 naming what
//! fails otherwise).
//!
//! Every response carries `x-request-id`; answers carry `x-chitty-cache: hit | miss | bypass | semantic`
//! (with `x-chitty-cache-similarity` on a semantic hit), `x-chitty-reserved-nano-usd`,
//! `x-chitty-cost-nano-usd` (not on streams, whose cost is known at the end), `x-chitty-max-tokens` when the
//! gateway set the output cap, `x-chitty-route` and `x-chitty-attempts` when an upstream answered, and
//! `x-chitty-router` (the decision's reason) when the request named a router. A client's
//! `x-chitty-quality: low | standard | high` is a hint routers weigh. Errors use OpenAI's envelope and status
//! codes, including 413 for a body over the limit (8 MB by default). A client that disconnects mid-stream
//! cancels the upstream request, and the budget settles for what was produced.
//!
//! The API key is checked from the headers before any of the body is read: a request without a valid key is
//! answered 401 and its connection closed, so unauthenticated clients cannot make the server hold bodies.
//! Likewise a declared `Content-Length` over the limit is answered 413 at once, and a body sent too slowly
//! (see [`ConnectionLimits`]) 408.
//!
//! Serve the router with [`Server`] (re-exported from `chitty_core::serve`), which adds header, body and
//! idle timeouts and a connection cap to the accept loop; `axum::serve` has none of them:
//!
//! ```no_run
//! # async fn run(gateway: chitty_core::gateway::Gateway) -> std::io::Result<()> {
//! use chitty_providers::server::{ConnectionLimits, Server, ServerOptions, router, shutdown_signal};
//!
//! let app = router(gateway, ServerOptions::default());
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! Server::new(ConnectionLimits::default()).serve(listener, app, shutdown_signal()).await
//! # }
//! ```
//!
//! [`PerCoreServer`] serves the same router on one current-thread runtime per core instead, so that each
//! request stays on the thread that accepted it.

mod admin;
mod app;
mod messages;
mod per_core;
mod response;
mod responses;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chitty_core::gateway::{Gateway, Reply, ReplyMeta, RequestContext, StreamReply};
use chitty_core::keys::CacheDirective;
use chitty_core::router::QualityHint;
use chitty_core::wire::{ChatCompletionRequest, CompletionRequest, EmbeddingRequest};
use chitty_core::{Error, Result};
use futures::StreamExt;
use serde::de::DeserializeOwned;

pub use admin::{KEY_PREFIX, admin_router};
pub use app::{BoundGateway, GatewayApp};
pub use chitty_core::serve::{BodyReadTimeout, ConnectionLimits, Server};
pub use per_core::PerCoreServer;
pub use response::ApiError;

/// Server settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerOptions {
    /// Largest request body accepted, in bytes (413 above it).
    pub body_limit: usize,
    /// Interval of SSE keep-alive comments on quiet streams.
    pub keep_alive: Duration,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions { body_limit: 8 * 1024 * 1024, keep_alive: Duration::from_secs(15) }
    }
}

#[derive(Clone)]
struct AppState {
    gateway: Gateway,
    // Kept in the state rather than an `Extension` layer, which would insert it into every request.
    options: ServerOptions,
}

/// The gateway's routes. Mount it in a host app or serve it directly.
pub fn router(gateway: Gateway, options: ServerOptions) -> Router {
    let state = Arc::new(AppState { gateway, options });
    Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(completions))
        .route("/v1/embeddings", post(embeddings))
        .route("/v1/messages", post(messages::messages))
        .route("/v1/messages/count_tokens", post(messages::count_tokens))
        .route("/v1/models", get(models))
        .route("/v1/models/{*id}", get(model))
        .route("/v1/responses", post(responses::create))
        .route("/v1/responses/{id}", get(responses::retrieve).delete(responses::delete))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .fallback(not_found)
        // Last, so that it wraps every route: the client's `traceparent` reaches the upstreams.
        .layer(crate::trace::TraceContextLayer)
        .with_state(state)
}

/// `router` behind a bearer token: a request without `Authorization: Bearer <token>` (compared in constant time)
/// is answered 401. An empty `token` lets nothing through. For routes that must not be public, such as `/metrics`, which names tenants and models.
///
/// ```
/// use axum::{Router, routing::get};
/// use chitty_providers::server::require_bearer;
///
/// // With feature `prometheus`: `require_bearer(metrics_router(registry), token)`.
/// let metrics: Router = require_bearer(Router::new().route("/metrics", get(|| async { "# EOF\n" })), "scrape-token");
/// ```
pub fn require_bearer(router: Router, token: impl Into<String>) -> Router {
    let token: Arc<str> = Arc::from(token.into());
    router.layer(axum::middleware::from_fn(move |request: axum::extract::Request, next: axum::middleware::Next| {
        let token = token.clone();
        async move {
            use subtle::ConstantTimeEq;
            let presented = bearer(request.headers()).unwrap_or_default();
            // An empty token matches nothing: a request without one must not pass.
            if !token.is_empty() && bool::from(presented.as_bytes().ct_eq(token.as_bytes())) {
                return next.run(request).await;
            }
            let id = request_id(request.headers());
            closing(ApiError::new(Error::InvalidApiKey, &id).into_response())
        }
    }))
}

/// Resolves on SIGINT or SIGTERM: pass it to `axum::serve(..).with_graceful_shutdown`, which stops accepting
/// and lets in-flight requests and streams finish.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

pub(crate) fn request_id(headers: &HeaderMap) -> String {
    headers
        .get(&X_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map_or_else(new_request_id, str::to_owned)
}

/// `req_` and 96 random bits in hex.
fn new_request_id() -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bits = rand::random::<u128>() >> 32;
    let mut id = String::with_capacity(28);
    id.push_str("req_");
    for nibble in (0..24).rev() {
        id.push(char::from(HEX[((bits >> (nibble * 4)) & 0xf) as usize]));
    }
    id
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(axum::http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

fn context(gateway: &Gateway, headers: &HeaderMap, request_id: &str) -> Result<RequestContext> {
    context_for_key(gateway, bearer(headers), headers, request_id)
}

/// The request's context for the API key `key` (however the endpoint reads it) and its `Cache-Control`.
fn context_for_key(
    gateway: &Gateway,
    key: Option<&str>,
    headers: &HeaderMap,
    request_id: &str,
) -> Result<RequestContext> {
    let caller = gateway.authenticate(key.ok_or(Error::InvalidApiKey)?)?;
    let cache = headers
        .get(axum::http::header::CACHE_CONTROL)
        .and_then(|v| v.to_str().ok())
        .map_or(CacheDirective::Default, CacheDirective::from_header);
    let quality =
        match headers.get(X_CHITTY_QUALITY) {
            None => None,
            Some(v) => Some(v.to_str().ok().and_then(QualityHint::from_header).ok_or_else(|| {
                Error::invalid_request("`x-chitty-quality` must be `low`, `standard` or `high`", None)
            })?),
        };
    Ok(RequestContext::new(caller, request_id, cache).with_quality(quality))
}

/// Reads the whole body, at most `limit` bytes: 413 above it, 408 when it arrives too slowly.
async fn read_body(body: Body, limit: usize) -> Result<Bytes> {
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        if let Some(timeout) = source_of::<BodyReadTimeout>(&e) {
            return Error::RequestTimeout { received: timeout.received, waited: timeout.waited };
        }
        if source_of::<http_body_util::LengthLimitError>(&e).is_some() {
            return Error::PayloadTooLarge { limit: limit as u64 };
        }
        Error::invalid_request(format!("could not read the request body: {e}"), None)
    })
}

/// The first error of type `T` in `error`'s source chain (axum wraps what the body reports).
fn source_of<'a, T: std::error::Error + 'static>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a T> {
    std::iter::successors(Some(error), |e| e.source()).find_map(|e| e.downcast_ref::<T>())
}

fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| {
        let message = e.to_string();
        Error::InvalidRequest { param: missing_field(&message), message: format!("invalid JSON body: {message}") }
    })
}

/// The parameter a serde error names, when it names one: only "missing field `x`" does reliably (in other
/// messages the backticked word is a value, such as an unknown variant).
fn missing_field(message: &str) -> Option<String> {
    let rest = message.strip_prefix("missing field `")?;
    rest.split('`').next().filter(|p| !p.is_empty()).map(str::to_owned)
}

pub(crate) const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const X_CHITTY_CACHE: HeaderName = HeaderName::from_static("x-chitty-cache");
const X_CHITTY_RESERVED: HeaderName = HeaderName::from_static("x-chitty-reserved-nano-usd");
const X_CHITTY_COST: HeaderName = HeaderName::from_static("x-chitty-cost-nano-usd");
const X_CHITTY_MAX_TOKENS: HeaderName = HeaderName::from_static("x-chitty-max-tokens");
const X_CHITTY_PROVIDER: HeaderName = HeaderName::from_static("x-chitty-provider");
const X_CHITTY_ROUTE: HeaderName = HeaderName::from_static("x-chitty-route");
const X_CHITTY_ATTEMPTS: HeaderName = HeaderName::from_static("x-chitty-attempts");
const X_CHITTY_ROUTER: HeaderName = HeaderName::from_static("x-chitty-router");
const X_CHITTY_CACHE_SIMILARITY: HeaderName = HeaderName::from_static("x-chitty-cache-similarity");
const X_CHITTY_QUALITY: HeaderName = HeaderName::from_static("x-chitty-quality");

/// Adds the gateway's headers to `h`: written into the response's own map, since building a map and merging it
/// in costs a second set of hashing and allocation per request.
fn insert_meta_headers(h: &mut HeaderMap, meta: &ReplyMeta, request_id: &str, with_cost: bool) {
    h.reserve(10);
    if let Ok(v) = HeaderValue::from_str(request_id) {
        h.insert(X_REQUEST_ID, v);
    }
    h.insert(X_CHITTY_CACHE, HeaderValue::from_static(meta.cache.as_str()));
    h.insert(X_CHITTY_RESERVED, HeaderValue::from(meta.reserved.0));
    if with_cost {
        h.insert(X_CHITTY_COST, HeaderValue::from(meta.cost.0));
    }
    if let Some(cap) = meta.max_tokens_set {
        h.insert(X_CHITTY_MAX_TOKENS, HeaderValue::from(cap));
    }
    if let Some(v) = meta.provider.as_deref().and_then(|p| HeaderValue::from_str(p).ok()) {
        h.insert(X_CHITTY_PROVIDER, v);
    }
    if let Some(v) = meta.route.as_deref().and_then(|r| HeaderValue::from_str(r).ok()) {
        h.insert(X_CHITTY_ROUTE, v);
        h.insert(X_CHITTY_ATTEMPTS, HeaderValue::from(meta.attempts));
    }
    if let Some(v) = meta.router.as_deref().and_then(|r| HeaderValue::from_str(r).ok()) {
        h.insert(X_CHITTY_ROUTER, v);
    }
    if let Some(similarity) = meta.cache_similarity
        && let Ok(v) = HeaderValue::from_str(&format!("{similarity:.4}"))
    {
        h.insert(X_CHITTY_CACHE_SIMILARITY, v);
    }
    if let Some(status) = &meta.rate_limit {
        insert_rate_limit_headers(h, status);
    }
}

/// OpenAI's `x-ratelimit-{limit,remaining,reset}-{requests,tokens}` for the tightest limit of each kind.
pub(crate) fn insert_rate_limit_headers(h: &mut HeaderMap, status: &chitty_core::ratelimit::RateLimitStatus) {
    const NAMES: [[HeaderName; 3]; 2] = [
        [
            HeaderName::from_static("x-ratelimit-limit-requests"),
            HeaderName::from_static("x-ratelimit-remaining-requests"),
            HeaderName::from_static("x-ratelimit-reset-requests"),
        ],
        [
            HeaderName::from_static("x-ratelimit-limit-tokens"),
            HeaderName::from_static("x-ratelimit-remaining-tokens"),
            HeaderName::from_static("x-ratelimit-reset-tokens"),
        ],
    ];
    for (state, [limit, remaining, reset]) in [status.requests, status.tokens].into_iter().zip(NAMES) {
        if let Some(state) = state {
            h.insert(limit, HeaderValue::from(state.limit));
            h.insert(remaining, HeaderValue::from(state.remaining));
            if let Ok(v) = HeaderValue::from_str(&reset_text(state.reset)) {
                h.insert(reset, v);
            }
        }
    }
}

/// A duration as OpenAI writes its resets: `120ms`, `1s`, `6m0s`, `1.5s`.
fn reset_text(reset: Duration) -> String {
    let ms = reset.as_millis();
    match ms {
        0..1_000 => format!("{ms}ms"),
        1_000..60_000 if ms.is_multiple_of(1_000) => format!("{}s", ms / 1_000),
        1_000..60_000 => format!("{}s", format!("{:.3}", ms as f64 / 1_000.0).trim_end_matches('0')),
        _ => format!("{}m{}s", ms / 60_000, (ms % 60_000) / 1_000),
    }
}

fn json_bytes_response(meta: &ReplyMeta, request_id: &str, json: Bytes) -> Response {
    let mut response = Response::new(axum::body::Body::from(json));
    let headers = response.headers_mut();
    headers.insert(axum::http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    insert_meta_headers(headers, meta, request_id, true);
    response
}

async fn chat(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    endpoint(state, &headers, body, |gateway, ctx, request: ChatCompletionRequest| async move {
        if request.is_stream() {
            // Boxed: a stream's pipeline future is large, and unboxed it would size every chat request's future,
            // which each server layer moves by value.
            return Ok(Answer::Stream(Box::pin(gateway.chat_stream(&ctx, request)).await?));
        }
        let reply = gateway.chat_passthrough(&ctx, request).await?;
        Ok(Answer::Json(reply.meta, reply.body.into_json()))
    })
    .await
}

async fn completions(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    endpoint(state, &headers, body, |gateway, ctx, request: CompletionRequest| async move {
        if request.is_stream() {
            return Ok(Answer::Stream(Box::pin(gateway.completion_stream(&ctx, request)).await?));
        }
        Answer::json(gateway.completion(&ctx, request).await?)
    })
    .await
}

async fn embeddings(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    endpoint(state, &headers, body, |gateway, ctx, request: EmbeddingRequest| async move {
        Answer::<()>::json(gateway.embeddings(&ctx, request).await?)
    })
    .await
}

/// What an endpoint answers with: a JSON body, a stream of `C` chunks, or Responses API events.
enum Answer<C> {
    Json(ReplyMeta, Bytes),
    Stream(StreamReply<C>),
    Events(StreamReply<chitty_core::wire::responses::ResponseStreamEvent>),
}

impl<C> Answer<C> {
    fn json<T: serde::Serialize>(reply: Reply<T>) -> Result<Answer<C>> {
        let json = serde_json::to_vec(&reply.body).map_err(|e| Error::backend("serialize", e))?;
        Ok(Answer::Json(reply.meta, Bytes::from(json)))
    }
}

/// One POST endpoint: authenticate from the headers, then read and parse the body, call the gateway, answer
/// with the gateway's headers as JSON or server-sent events; any failure in OpenAI's error envelope.
async fn endpoint<Req, C, Call, Fut>(state: Arc<AppState>, headers: &HeaderMap, body: Body, call: Call) -> Response
where
    Req: DeserializeOwned,
    C: serde::Serialize + Send + 'static,
    Call: FnOnce(Gateway, RequestContext, Req) -> Fut,
    Fut: std::future::Future<Output = Result<Answer<C>>>,
{
    let id = request_id(headers);
    let limit = state.options.body_limit;
    // Refused before a byte of the body is read: no key, a wrong key, or a declared length over the limit.
    let ctx = match context(&state.gateway, headers, &id) {
        Ok(ctx) => ctx,
        Err(e) => return closing(ApiError::new(e, &id).into_response()),
    };
    if declared_length(headers).is_some_and(|n| n > limit as u64) {
        return closing(ApiError::new(Error::PayloadTooLarge { limit: limit as u64 }, &id).into_response());
    }
    let bytes = match read_body(body, limit).await {
        Ok(bytes) => bytes,
        // The rest of the body was not read: close rather than drain it.
        Err(e) => return closing(ApiError::new(e, &id).into_response()),
    };
    let result = async {
        let request: Req = parse(&bytes)?;
        Ok::<_, Error>(match call(state.gateway.clone(), ctx, request).await? {
            Answer::Json(meta, json) => json_bytes_response(&meta, &id, json),
            Answer::Stream(reply) => sse_response(reply, &id, &state.options),
            Answer::Events(reply) => responses::event_stream(reply, &id, &state.options),
        })
    }
    .await;
    result.unwrap_or_else(|e| ApiError::new(e, &id).into_response())
}

/// The request's `Content-Length`, if it sent a valid one.
fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(axum::http::header::CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

/// Marks a response as the connection's last, for answers sent before the request body was read.
fn closing(mut response: Response) -> Response {
    response.headers_mut().insert(axum::http::header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// Named server-sent events (`event:` and `data:` lines, as the Responses and Messages APIs send them) with
/// keep-alive comments on quiet streams and the gateway's headers.
fn named_events_response(
    events: impl futures::Stream<Item = SseEvent> + Send + 'static,
    meta: &ReplyMeta,
    request_id: &str,
    options: &ServerOptions,
) -> Response {
    let sse = Sse::new(events.map(Ok::<_, Infallible>)).keep_alive(KeepAlive::new().interval(options.keep_alive));
    let mut response = sse.into_response();
    insert_meta_headers(response.headers_mut(), meta, request_id, false);
    response
}

/// A streamed answer as server-sent events ending with `data: [DONE]`, with keep-alive comments on quiet streams.
fn sse_response<C: serde::Serialize + Send + 'static>(
    reply: StreamReply<C>,
    request_id: &str,
    options: &ServerOptions,
) -> Response {
    let events = reply
        .chunks
        .map(|item| {
            let data = match item {
                Ok(chunk) => serde_json::to_string(&chunk),
                // OpenAI reports a failure after the first chunk as an error object in the stream.
                Err(e) => serde_json::to_string(&e.to_envelope()),
            };
            Ok::<_, Infallible>(SseEvent::default().data(data.unwrap_or_default()))
        })
        .chain(futures::stream::once(async { Ok(SseEvent::default().data("[DONE]")) }));
    let sse = Sse::new(events).keep_alive(KeepAlive::new().interval(options.keep_alive));
    let mut response = sse.into_response();
    insert_meta_headers(response.headers_mut(), &reply.meta, request_id, false);
    response
}

async fn models(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    lookup(&state, &headers, |gateway, ctx| async move { Ok(gateway.models(&ctx)) }).await
}

/// `GET /v1/models/{id}`: the model object, or 404 `model_not_found` for a model the caller may not use.
async fn model(
    State(state): State<Arc<AppState>>,
    axum::extract::Path(model): axum::extract::Path<String>,
    headers: HeaderMap,
) -> Response {
    lookup(&state, &headers, |gateway, ctx| async move { gateway.model(&ctx, &model) }).await
}

/// A request without a body answered from the gateway for an authenticated caller, as JSON with `x-request-id`;
/// a failure in OpenAI's envelope.
async fn lookup<T, Fut>(
    state: &AppState,
    headers: &HeaderMap,
    answer: impl FnOnce(Gateway, RequestContext) -> Fut,
) -> Response
where
    T: serde::Serialize,
    Fut: std::future::Future<Output = Result<T>>,
{
    let id = request_id(headers);
    let result = match context(&state.gateway, headers, &id) {
        Ok(ctx) => answer(state.gateway.clone(), ctx).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(body) => {
            let mut response = axum::Json(body).into_response();
            if let Ok(v) = HeaderValue::from_str(&id) {
                response.headers_mut().insert(X_REQUEST_ID, v);
            }
            response
        }
        Err(e) => ApiError::new(e, &id).into_response(),
    }
}

/// `GET /readyz`: 200 when the backends answer and every model has a closed circuit, else 503 naming what fails.
async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    let readiness = state.gateway.readiness().await;
    let status = if readiness.is_ready() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let body = serde_json::json!({
        "status": if readiness.is_ready() { "ready" } else { "not ready" },
        "failing": readiness.failing,
    });
    (status, axum::Json(body)).into_response()
}

async fn not_found(headers: HeaderMap) -> Response {
    let id = request_id(&headers);
    let mut response = ApiError::new(
        Error::invalid_request(
            "unknown endpoint; see /v1/chat/completions, /v1/completions, /v1/embeddings, /v1/models, /v1/responses, /v1/messages",
            None,
        ),
        &id,
    )
    .into_response();
    *response.status_mut() = StatusCode::NOT_FOUND;
    response
}

#[cfg(test)]
mod tests {
    use super::{missing_field, new_request_id, reset_text};

    #[test]
    fn resets_read_like_openais() {
        use std::time::Duration;
        let cases =
            [(0, "0ms"), (120, "120ms"), (1_000, "1s"), (1_500, "1.5s"), (59_999, "59.999s"), (360_000, "6m0s")];
        for (ms, text) in cases {
            assert_eq!(reset_text(Duration::from_millis(ms)), text);
        }
    }

    #[test]
    fn generated_request_ids_are_96_random_bits_in_hex() {
        let (a, b) = (new_request_id(), new_request_id());
        assert_ne!(a, b);
        for id in [a, b] {
            let hex = id.strip_prefix("req_").unwrap();
            assert_eq!(hex.len(), 24, "{id}");
            assert!(hex.bytes().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()), "{id}");
        }
    }

    #[test]
    fn only_missing_fields_name_a_param() {
        assert_eq!(missing_field("missing field `messages` at line 1 column 17").as_deref(), Some("messages"));
        assert_eq!(missing_field("unknown variant `foo`, expected `float` or `base64` at line 1 column 9"), None);
        assert_eq!(missing_field("invalid type: string \"x\", expected a sequence at line 1 column 3"), None);
    }
}
