//! The one public error type of chitty-github, and its mapping onto HTTP statuses.

use std::time::Duration;

use chitty_core::BoxError;
use http::StatusCode;

/// Result with chitty-github's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong while taking, queueing or processing a webhook delivery.
///
/// Messages never contain webhook secrets, signatures or tokens.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The request used a method other than `POST`.
    #[error("method {method} is not allowed; webhooks are delivered with POST")]
    MethodNotAllowed {
        /// The method that was used.
        method: String,
    },
    /// The body is larger than the configured cap.
    #[error("payload exceeds the limit of {limit} bytes")]
    PayloadTooLarge {
        /// The cap in bytes.
        limit: u64,
    },
    /// The request body could not be read to its end (the connection broke, or a read timed out).
    #[error("the request body could not be read: {source}")]
    BodyUnreadable {
        /// The body's error.
        #[source]
        source: BoxError,
    },
    /// The bodies of requests not yet verified already hold the intake's bound; nothing was read.
    #[error("too many unverified webhook bytes in flight (bound {limit} bytes); retry after {} s", retry_after.as_secs())]
    TooManyUnverifiedBytes {
        /// The bound in bytes.
        limit: u64,
        /// Suggested wait.
        retry_after: Duration,
    },
    /// The body is neither `application/json` nor `application/x-www-form-urlencoded`.
    #[error("unsupported content type `{content_type}`")]
    UnsupportedContentType {
        /// The content type the request declared (empty when it declared none).
        content_type: String,
    },
    /// A required header is absent.
    #[error("missing header {name}")]
    MissingHeader {
        /// Header name.
        name: &'static str,
    },
    /// A header is present but not of the expected form.
    #[error("invalid header {name}: {reason}")]
    InvalidHeader {
        /// Header name.
        name: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The `X-Hub-Signature-256` header is absent.
    #[error("missing header X-Hub-Signature-256")]
    MissingSignature,
    /// The signature header is not `sha256=` followed by 64 hex digits.
    #[error("malformed signature: {reason}")]
    MalformedSignature {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The signature matches none of the configured secrets.
    #[error("signature does not match")]
    SignatureMismatch,
    /// The payload is not what GitHub sends (not JSON, or not the shape of its event).
    #[error("invalid payload: {reason}")]
    InvalidPayload {
        /// What is wrong with it.
        reason: String,
    },
    /// The configuration cannot work (for example, no webhook secret).
    #[error("invalid configuration: {reason}")]
    InvalidConfig {
        /// What is wrong with it.
        reason: String,
    },
    /// The queue cannot take more deliveries right now.
    #[error("`{queue}` is full; retry after {} ms", retry_after.as_millis())]
    Backpressure {
        /// Queue name.
        queue: String,
        /// Suggested wait.
        retry_after: Duration,
    },
    /// A handler returned an error.
    #[error("handler for `{route}` failed: {message}")]
    HandlerFailed {
        /// The route the handler was registered under (`pull_request.opened`, `push`, `*`).
        route: String,
        /// The handler's error, formatted.
        message: String,
    },
    /// A handler panicked; the panic was caught.
    #[error("handler for `{route}` panicked: {message}")]
    HandlerPanicked {
        /// The route the handler was registered under.
        route: String,
        /// The panic message, when it was a string.
        message: String,
    },
    /// A handler did not finish within the configured handler timeout; it was dropped.
    #[error("handler for `{route}` timed out after {} ms", timeout.as_millis())]
    HandlerTimedOut {
        /// The route the handler was registered under.
        route: String,
        /// The timeout that elapsed.
        timeout: Duration,
    },
    /// A handler route names no event GitHub sends, or an action its event does not have.
    #[error("route `{route}` would never fire: {reason}")]
    UnknownRoute {
        /// The route as registered.
        route: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A handler asked for the installation client and there is none for this event.
    #[error("no GitHub installation client: {reason}")]
    NoInstallationClient {
        /// Why not (no App on the processor, or an event sent to no installation).
        reason: &'static str,
    },
    /// A backend (idempotency store, queue, dead-letter queue) failed.
    #[error("{backend} error: {source}")]
    Backend {
        /// Which backend.
        backend: &'static str,
        /// The backend's error.
        #[source]
        source: BoxError,
    },
}

impl Error {
    /// Shorthand for [`Error::Backend`].
    pub fn backend(backend: &'static str, source: impl Into<BoxError>) -> Self {
        Error::Backend { backend, source: source.into() }
    }

    /// Shorthand for [`Error::InvalidPayload`].
    pub fn invalid_payload(reason: impl std::fmt::Display) -> Self {
        Error::InvalidPayload { reason: reason.to_string() }
    }

    /// The HTTP status the webhook endpoint answers with for this error.
    pub fn status(&self) -> StatusCode {
        match self {
            Error::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Error::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Error::UnsupportedContentType { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Error::MissingHeader { .. }
            | Error::InvalidHeader { .. }
            | Error::MissingSignature
            | Error::BodyUnreadable { .. }
            | Error::InvalidPayload { .. } => StatusCode::BAD_REQUEST,
            Error::MalformedSignature { .. } | Error::SignatureMismatch => StatusCode::UNAUTHORIZED,
            Error::Backpressure { .. } | Error::TooManyUnverifiedBytes { .. } | Error::Backend { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Error::InvalidConfig { .. }
            | Error::UnknownRoute { .. }
            | Error::NoInstallationClient { .. }
            | Error::HandlerFailed { .. }
            | Error::HandlerPanicked { .. }
            | Error::HandlerTimedOut { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// How long the sender should wait before retrying, when the error says.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::Backpressure { retry_after, .. } | Error::TooManyUnverifiedBytes { retry_after, .. } => {
                Some(*retry_after)
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_follow_the_webhook_contract() {
        assert_eq!(Error::MissingSignature.status(), StatusCode::BAD_REQUEST);
        assert_eq!(Error::SignatureMismatch.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(Error::PayloadTooLarge { limit: 1 }.status(), StatusCode::PAYLOAD_TOO_LARGE);
        let full = Error::Backpressure { queue: "q".into(), retry_after: Duration::from_secs(1) };
        assert_eq!(full.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(full.retry_after(), Some(Duration::from_secs(1)));
        let crowded = Error::TooManyUnverifiedBytes { limit: 64, retry_after: Duration::from_secs(1) };
        assert_eq!(
            (crowded.status(), crowded.retry_after()),
            (StatusCode::SERVICE_UNAVAILABLE, Some(Duration::from_secs(1)))
        );
        let broken = Error::BodyUnreadable { source: "connection closed before message completed".into() };
        assert_eq!(broken.status(), StatusCode::BAD_REQUEST);
    }
}
