//! `POST /v1/responses`, `GET /v1/responses/{id}` and `DELETE /v1/responses/{id}`: OpenAI's Responses API,
//! answered by [`Gateway::responses`](chitty_core::gateway::Gateway::responses) on the chat pipeline.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::response::sse::Event as SseEvent;
use chitty_core::gateway::StreamReply;
use chitty_core::wire::responses::{ResponseStreamEvent, ResponsesRequest};
use futures::StreamExt;
use serde_json::json;

use super::{Answer, AppState, ServerOptions, endpoint, lookup, named_events_response};

/// `POST /v1/responses`: a response object, or its events when the request streams.
pub(super) async fn create(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    endpoint(state, &headers, body, |gateway, ctx, request: ResponsesRequest| async move {
        if request.is_stream() {
            return Ok(Answer::Events(gateway.responses_stream(&ctx, request).await?));
        }
        Answer::<()>::json(gateway.responses(&ctx, request).await?)
    })
    .await
}

/// `GET /v1/responses/{id}`: a response the caller's tenant stored, else 404.
pub(super) async fn retrieve(
    State(state): State<Arc<AppState>>,
    Path(response): Path<String>,
    headers: HeaderMap,
) -> Response {
    lookup(&state, &headers, |gateway, ctx| async move { gateway.stored_response(&ctx, &response).await }).await
}

/// `DELETE /v1/responses/{id}`: forgets a stored response, answering OpenAI's deletion object; 404 when there
/// is none for the caller's tenant.
pub(super) async fn delete(
    State(state): State<Arc<AppState>>,
    Path(response): Path<String>,
    headers: HeaderMap,
) -> Response {
    lookup(&state, &headers, |gateway, ctx| async move {
        gateway.delete_response(&ctx, &response).await?;
        Ok(json!({"id": response, "object": "response", "deleted": true}))
    })
    .await
}

/// Responses events as server-sent events named by their `type`, as OpenAI sends them (no `[DONE]`).
pub(super) fn event_stream(
    reply: StreamReply<ResponseStreamEvent>,
    request_id: &str,
    options: &ServerOptions,
) -> Response {
    let events = reply.chunks.map(|item| match item {
        Ok(event) => SseEvent::default().event(event.kind()).data(event.0.to_string()),
        // The translator turns failures into `error` events; this is the pipeline failing to start one.
        Err(e) => SseEvent::default().event("error").data(serde_json::to_string(&e.to_envelope()).unwrap_or_default()),
    });
    named_events_response(events, &reply.meta, request_id, options)
}
