//! `POST /v1/responses`, `GET /v1/responses/{id}` and `DELETE /v1/responses/{id}`: OpenAI's Responses API,
//! answered by [`Gateway::responses`](chitty_core::gateway::Gateway::responses) on the chat pipeline.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use chitty_core::gateway::{Gateway, RequestContext, StreamReply};
use chitty_core::wire::responses::{ResponseStreamEvent, ResponsesRequest};
use futures::StreamExt;
use serde_json::json;

use super::{Answer, ApiError, AppState, ServerOptions, context, endpoint, insert_meta_headers, request_id};

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
    stored(&state, &headers, |gateway, ctx| async move {
        let object = gateway.stored_response(&ctx, &response).await?;
        Ok(axum::Json(object).into_response())
    })
    .await
}

/// `DELETE /v1/responses/{id}`: forgets a stored response, answering OpenAI's deletion object; 404 when there
/// is none for the caller's tenant.
pub(super) async fn delete(
    State(state): State<Arc<AppState>>,
    Path(response): Path<String>,
    headers: HeaderMap,
) -> Response {
    stored(&state, &headers, |gateway, ctx| async move {
        gateway.delete_response(&ctx, &response).await?;
        Ok(axum::Json(json!({"id": response, "object": "response", "deleted": true})).into_response())
    })
    .await
}

/// Authenticates, then answers with `call`'s response or its error in OpenAI's envelope, with `x-request-id`.
async fn stored<F, Fut>(state: &AppState, headers: &HeaderMap, call: F) -> Response
where
    F: FnOnce(Gateway, RequestContext) -> Fut,
    Fut: std::future::Future<Output = chitty_core::Result<Response>>,
{
    let id = request_id(headers);
    let result = match context(&state.gateway, headers, &id) {
        Ok(ctx) => call(state.gateway.clone(), ctx).await,
        Err(e) => Err(e),
    };
    let mut response = result.unwrap_or_else(|e| ApiError::new(e, &id).into_response());
    if let Ok(value) = axum::http::HeaderValue::from_str(&id) {
        response.headers_mut().insert(super::X_REQUEST_ID, value);
    }
    response
}

/// Responses events as server-sent events named by their `type`, as OpenAI sends them (no `[DONE]`).
pub(super) fn event_stream(
    reply: StreamReply<ResponseStreamEvent>,
    request_id: &str,
    options: &ServerOptions,
) -> Response {
    let events = reply.chunks.map(|item| {
        let event = match item {
            Ok(event) => SseEvent::default().event(event.kind()).data(event.0.to_string()),
            // The translator turns failures into `error` events; this is the pipeline failing to start one.
            Err(e) => {
                SseEvent::default().event("error").data(serde_json::to_string(&e.to_envelope()).unwrap_or_default())
            }
        };
        Ok::<_, Infallible>(event)
    });
    let mut response = Sse::new(events).keep_alive(KeepAlive::new().interval(options.keep_alive)).into_response();
    insert_meta_headers(response.headers_mut(), &reply.meta, request_id, false);
    response
}
