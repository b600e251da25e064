//! Anthropic's Messages API at the gateway's door: `POST /v1/messages` (plain and streamed) and
//! `POST /v1/messages/count_tokens`, for Anthropic's SDKs and the tools built on them.
//!
//! A Messages request runs through [`Gateway::messages`] or [`Gateway::messages_stream`], the one pipeline, so
//! budgets, caching, routing, fallback, rate limits and events apply as for chat: passed through as the client
//! sent it (only `model` rewritten; `cache_control`, `thinking` and unknown fields kept) to a route whose
//! provider speaks the Messages API (Anthropic), its answer and events relayed as they came and its errors
//! with their status; translated to a chat completion (`chitty_core::wire::messages`) and back on any other. Keys are read from `x-api-key`
//! or `Authorization: Bearer`; `anthropic-version` is accepted whatever it says. Errors use Anthropic's
//! envelope (`{"type": "error", "error": {"type", "message"}}`) with the gateway's status codes, `Retry-After`
//! and `x-ratelimit-*` headers; answers carry the gateway's `x-request-id` (also as `request-id`, which
//! Anthropic's SDKs read) and `x-chitty-*` headers.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::sse::Event as SseEvent;
use axum::response::{IntoResponse, Response};
use chitty_core::gateway::{Gateway, RequestContext, StreamReply};
use chitty_core::wire::{AnthropicErrorEnvelope, CountTokensResponse, MessagesRequest};
use chitty_core::{Error, Result};
use futures::StreamExt;

use super::{AppState, ServerOptions};

const REQUEST_ID: HeaderName = HeaderName::from_static("request-id");
const X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");

const X_SHOULD_RETRY: HeaderName = HeaderName::from_static("x-should-retry");

/// A gateway error in Anthropic's envelope, with the status, `Retry-After` and rate-limit headers the OpenAI
/// endpoints send for it.
fn error_response(error: &Error, request_id: &str) -> Response {
    error_response_after(error, request_id, None)
}

/// [`error_response`], with `Retry-After` set to `budget_reset` (milliseconds) for an exhausted budget: when the
/// budget's period starts again. Retrying sooner cannot succeed, so `x-should-retry: false` tells Anthropic's
/// (and OpenAI's) SDKs not to retry it on their own.
fn error_response_after(error: &Error, request_id: &str, budget_reset: Option<u64>) -> Response {
    let status = StatusCode::from_u16(error.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if status.is_server_error() {
        tracing::warn!(request_id = %request_id, error = %error, "messages request failed");
    }
    let mut response = (status, axum::Json(AnthropicErrorEnvelope::from_error(error))).into_response();
    let headers = response.headers_mut();
    insert_request_id(headers, request_id);
    if let Some(wait) = error.retry_after() {
        let secs = wait.as_millis().div_ceil(1000).max(1);
        headers.insert(axum::http::header::RETRY_AFTER, HeaderValue::from(secs as u64));
    }
    if let Error::RateLimited { status, .. } = error {
        super::insert_rate_limit_headers(headers, status);
    }
    if matches!(error, Error::BudgetExhausted { .. }) {
        headers.insert(X_SHOULD_RETRY, HeaderValue::from_static("false"));
        if let Some(ms) = budget_reset {
            headers.insert(axum::http::header::RETRY_AFTER, HeaderValue::from(ms.div_ceil(1000).max(1)));
        }
    }
    response
}

fn insert_request_id(headers: &mut HeaderMap, request_id: &str) {
    if let Ok(v) = HeaderValue::from_str(request_id) {
        headers.insert(super::X_REQUEST_ID, v.clone());
        headers.insert(REQUEST_ID, v);
    }
}

/// The caller, from `x-api-key` (Anthropic's header) or `Authorization: Bearer`.
fn context(gateway: &Gateway, headers: &HeaderMap, request_id: &str) -> Result<RequestContext> {
    let key = headers
        .get(X_API_KEY)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .or_else(|| super::bearer(headers));
    super::context_for_key(gateway, key, headers, request_id)
}

/// Authenticates from the headers, then reads and parses the body as [`super::endpoint`] does (401 and 413
/// before a byte of the body is read), and hands the request to `call`; any failure in Anthropic's envelope.
async fn messages_endpoint<Call, Fut>(state: Arc<AppState>, headers: &HeaderMap, body: Body, call: Call) -> Response
where
    Call: FnOnce(Arc<AppState>, RequestContext, (MessagesRequest, serde_json::Value), String) -> Fut,
    Fut: std::future::Future<Output = Result<Response>>,
{
    let id = super::request_id(headers);
    let limit = state.options.body_limit;
    let ctx = match context(&state.gateway, headers, &id) {
        Ok(ctx) => ctx,
        Err(e) => return super::closing(error_response(&e, &id)),
    };
    if super::declared_length(headers).is_some_and(|n| n > limit as u64) {
        return super::closing(error_response(&Error::PayloadTooLarge { limit: limit as u64 }, &id));
    }
    let bytes = match super::read_body(body, limit).await {
        Ok(bytes) => bytes,
        Err(e) => return super::closing(error_response(&e, &id)),
    };
    let tenant = Arc::clone(&ctx.tenant);
    let result = async {
        let request: MessagesRequest = super::parse(&bytes)?;
        // The body as sent, for an upstream that takes it as it is.
        let body: serde_json::Value = super::parse(&bytes)?;
        call(state.clone(), ctx, (request, body), id.clone()).await
    }
    .await;
    result.unwrap_or_else(|e| {
        // An exhausted budget can be retried when the tenant's budget period starts again (never, for a lifetime one).
        let now = state.gateway.now();
        let reset = tenant.budget_period().window(now).end.map(|end| end.0.saturating_sub(now.0));
        error_response_after(&e, &id, reset)
    })
}

/// `POST /v1/messages`.
pub(super) async fn messages(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    messages_endpoint(state, &headers, body, |state, ctx, (request, body), id| async move {
        if request.is_stream() {
            let reply = state.gateway.messages_stream(&ctx, request, body).await?;
            return Ok(sse_response(reply, &id, &state.options));
        }
        let reply = state.gateway.messages(&ctx, request, body).await?;
        let json = serde_json::to_vec(&reply.body).map_err(|e| Error::backend("serialize", e))?;
        let mut response = super::json_bytes_response(&reply.meta, &id, Bytes::from(json));
        insert_request_id(response.headers_mut(), &id);
        Ok(response)
    })
    .await
}

/// `POST /v1/messages/count_tokens`: the upstream's count when the model's first route is Anthropic, else the
/// gateway's upper bound on the prompt's tokens (the figure budgets reserve for), for a model the caller may use.
pub(super) async fn count_tokens(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    messages_endpoint(state, &headers, body, |state, ctx, (request, body), id| async move {
        let input_tokens = state.gateway.count_message_tokens(&ctx, request, body).await?;
        let mut response = axum::Json(CountTokensResponse { input_tokens }).into_response();
        insert_request_id(response.headers_mut(), &id);
        Ok(response)
    })
    .await
}

/// A stream as Anthropic's server-sent events (`event:` and `data:` lines), each named by its `type`; a failure
/// after the first event ends it with an `error` event.
fn sse_response(reply: StreamReply<serde_json::Value>, request_id: &str, options: &ServerOptions) -> Response {
    let events = reply.chunks.map(|item| {
        let event = item.unwrap_or_else(
            |e| serde_json::json!({"type": "error", "error": AnthropicErrorEnvelope::from_error(&e).error}),
        );
        let name = event.get("type").and_then(serde_json::Value::as_str).unwrap_or("message").to_owned();
        SseEvent::default().event(name).data(event.to_string())
    });
    let mut response = super::named_events_response(events, &reply.meta, request_id, options);
    insert_request_id(response.headers_mut(), request_id);
    response
}
