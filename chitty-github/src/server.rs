//! The axum adapter (feature `server`): the webhook endpoint as a route mountable at any path.
//!
//! The handler takes the request with its body unread and hands it to
//! [`WebhookIntake::handle_stream`]: a request whose headers are already wrong, or for whose body
//! the bound on unverified bytes has no room, is answered before a byte of its body is read (with
//! `Connection: close`, so the server does not drain it); otherwise the body is read under the
//! intake's own size cap (axum's `DefaultBodyLimit` does not apply to it).
//!
//!
//! Serve it with [`Server`] (re-exported from `chitty_core::serve`): its header, body and idle timeouts and
//! its connection cap keep slow or idle senders from holding the server, which `axum::serve` does not.
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
//! let intake = WebhookIntake::builder([WebhookSecret::new("s3cret")])
//!     .queue(Arc::new(queue))
//!     .unverified_bytes_in_flight(128 * 1024 * 1024)
//!     .build()?;
//! let app: Router = Router::new().route("/api/github/webhooks", webhook_route(Arc::new(intake)));
//! # Ok::<(), chitty_github::Error>(())
//! ```

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, post};

use crate::intake::WebhookIntake;

pub use chitty_core::serve::{BodyReadTimeout, ConnectionLimits, Server};

/// The webhook endpoint as a `POST` route, for any router state: mount it with
/// `Router::route(path, webhook_route(intake))`.
pub fn webhook_route<S>(intake: Arc<WebhookIntake>) -> MethodRouter<S>
where
    S: Clone + Send + Sync + 'static,
{
    post(receive).with_state(intake)
}

/// A router serving only the webhook endpoint at `path` (which must start with `/`, as axum
/// requires; axum panics on an invalid path at start-up).
pub fn webhook_router(path: &str, intake: Arc<WebhookIntake>) -> Router {
    Router::new().route(path, webhook_route(intake))
}

/// Resolves on Ctrl-C, or SIGTERM from a process manager: the `shutdown` future to give
/// [`Server::serve`], which then stops accepting and lets requests in flight finish.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut terminate) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = terminate.recv() => {}
            }
            return;
        }
    }
    // Without a signal handler there is nothing to wait for: never resolve rather than stop at once.
    if tokio::signal::ctrl_c().await.is_err() {
        std::future::pending::<()>().await;
    }
}

async fn receive(State(intake): State<Arc<WebhookIntake>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let outcome = intake.handle_stream(&parts.method, &parts.headers, body.into_data_stream()).await;
    outcome.into_response().map(Body::from).into_response()
}
