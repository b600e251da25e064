//! The axum adapter (feature `server`): the webhook endpoint as a route mountable at any path,
//! with the body cap set explicitly through [`DefaultBodyLimit`] (axum's own default is 2 MB,
//! GitHub sends up to 25 MB).
//!
//! ```
//! use std::sync::Arc;
//! use axum::Router;
//! use chitty_github::intake::WebhookIntake;
//! use chitty_github::queue::InProcessQueue;
//! use chitty_github::server::webhook_route;
//! use chitty_github::signature::WebhookSecret;
//!
//! let (queue, _deliveries) = InProcessQueue::bounded(1024);
//! let intake = WebhookIntake::builder([WebhookSecret::new("s3cret")]).sink(Arc::new(queue)).build()?;
//! let app: Router = Router::new().route("/api/github/webhooks", webhook_route(Arc::new(intake)));
//! # Ok::<(), chitty_github::Error>(())
//! ```

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, post};

use crate::error::Error;
use crate::intake::{IntakeOutcome, WebhookIntake};

/// The webhook endpoint as a `POST` route, for any router state: mount it with
/// `Router::route(path, webhook_route(intake))`.
pub fn webhook_route<S>(intake: Arc<WebhookIntake>) -> MethodRouter<S>
where
    S: Clone + Send + Sync + 'static,
{
    let limit = intake.max_body_bytes();
    post(receive).with_state(intake).layer(DefaultBodyLimit::max(limit))
}

/// A router serving only the webhook endpoint at `path` (which must start with `/`, as axum
/// requires; axum panics on an invalid path at start-up).
pub fn webhook_router(path: &str, intake: Arc<WebhookIntake>) -> Router {
    Router::new().route(path, webhook_route(intake))
}

async fn receive(
    State(intake): State<Arc<WebhookIntake>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let outcome = match body {
        Ok(body) => intake.handle_parts(&headers, body).await,
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            IntakeOutcome::Rejected(Error::PayloadTooLarge { limit: intake.max_body_bytes() as u64 })
        }
        Err(rejection) => IntakeOutcome::Rejected(Error::invalid_payload(rejection.body_text())),
    };
    outcome.into_response().map(Body::from).into_response()
}
