//! The one public error type of chitty-core, and its mapping onto OpenAI's error envelope.

use std::time::Duration;

use crate::money::NanoUsd;
use crate::wire::{ErrorBody, ErrorEnvelope};

/// A boxed error from a backend (Redis, HTTP client, file system …), kept as the source.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Result with chitty-core's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, typed so that callers (and the HTTP adapter) can map it without parsing text.
///
/// Messages never contain secrets: API keys, tokens and webhook secrets are never formatted into
/// an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The request carried no API key, or one that matches no tenant.
    #[error("invalid API key")]
    InvalidApiKey,
    /// The tenant exists but may not use this model.
    #[error("the model `{model}` is not available to this tenant")]
    ModelNotAllowed {
        /// Public model name requested.
        model: String,
    },
    /// No model of that name is configured.
    #[error("the model `{model}` does not exist")]
    ModelNotFound {
        /// Public model name requested.
        model: String,
    },
    /// The request is malformed or asks for something impossible.
    #[error("{message}")]
    InvalidRequest {
        /// Human-readable explanation.
        message: String,
        /// The offending request parameter, when there is one.
        param: Option<String>,
    },
    /// The request body exceeds the configured limit.
    #[error("request body exceeds the limit of {limit} bytes")]
    PayloadTooLarge {
        /// The configured limit in bytes.
        limit: u64,
    },
    /// The client sent its request body too slowly; the server stopped waiting.
    #[error("the request body was not received in time ({received} bytes in {} ms)", waited.as_millis())]
    RequestTimeout {
        /// Bytes that had arrived.
        received: u64,
        /// How long the server waited.
        waited: Duration,
    },
    /// The tenant sent more requests than its rate limit allows.
    #[error("rate limit exceeded; retry after {} ms", retry_after.as_millis())]
    RateLimited {
        /// How long until a request would be admitted.
        retry_after: Duration,
        /// The limits' state, for the `x-ratelimit-*` headers.
        status: Box<crate::ratelimit::RateLimitStatus>,
    },
    /// The tenant's budget cannot pay for this request.
    #[error("budget exhausted: the request needs at least {needed} but {remaining} remains")]
    BudgetExhausted {
        /// The least the request could cost.
        needed: NanoUsd,
        /// What remains of the tenant's budget.
        remaining: NanoUsd,
    },
    /// A reservation was settled or released after its lease expired (it was already reclaimed).
    #[error("reservation {id} is unknown or its lease expired")]
    ReservationNotFound {
        /// The reservation identifier.
        id: String,
    },
    /// The upstream provider failed: it refused the connection, broke it, answered with an error status,
    /// or sent an answer that could not be read.
    #[error("upstream `{provider}` failed{}: {message}", status.map(|s| format!(" with status {s}")).unwrap_or_default())]
    Upstream {
        /// Provider name from the configuration.
        provider: String,
        /// How the call failed; routing retries a broken connection but not a malformed answer.
        failure: UpstreamFailure,
        /// HTTP status the upstream returned, if it returned one.
        status: Option<u16>,
        /// The upstream's own message.
        message: String,
        /// The upstream's `Retry-After`, if any.
        retry_after: Option<Duration>,
    },
    /// The upstream did not answer within the configured timeout.
    #[error("upstream `{provider}` timed out after {} ms", timeout.as_millis())]
    UpstreamTimeout {
        /// Provider name.
        provider: String,
        /// The timeout that elapsed.
        timeout: Duration,
    },
    /// The request's total deadline passed before an upstream answered (for a stream: before its first chunk).
    #[error("no upstream answered `{model}` within the request's deadline of {} ms", deadline.as_millis())]
    DeadlineExceeded {
        /// Public model name.
        model: String,
        /// The deadline the request had.
        deadline: Duration,
    },
    /// No upstream could take the request (all circuits open or all attempts failed to connect).
    #[error("no upstream available for `{model}`: {reason}")]
    Unavailable {
        /// Public model name.
        model: String,
        /// Why each route was skipped or failed.
        reason: String,
    },
    /// The provider does not implement this capability.
    #[error("provider `{provider}` does not support {capability}")]
    Unsupported {
        /// Provider name.
        provider: String,
        /// The missing capability.
        capability: crate::provider::Capability,
    },
    /// The input is not of the format this component accepts.
    #[error("invalid input ({what}): {reason}")]
    InvalidInput {
        /// What was being read.
        what: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No such tenant, key or other named record.
    #[error("{what} `{id}` does not exist")]
    NotFound {
        /// What kind of record (`tenant`, `key`).
        what: &'static str,
        /// Its identifier.
        id: String,
    },
    /// A record with this identifier (or key digest) already exists.
    #[error("{what} `{id}` already exists")]
    Conflict {
        /// What kind of record.
        what: &'static str,
        /// Its identifier.
        id: String,
    },
    /// A backend the request needs (Redis for a shared budget or limit) cannot be reached; retrying later may
    /// succeed. Answered 503 with `Retry-After`.
    #[error("{backend} is unavailable")]
    BackendUnavailable {
        /// Which backend.
        backend: &'static str,
        /// When to try again.
        retry_after: Duration,
        /// The backend's error, for logs.
        #[source]
        source: BoxError,
    },
    /// A backend (cache, budget store, sink, file system, HTTP client) failed.
    #[error("{backend} error: {source}")]
    Backend {
        /// Which backend.
        backend: &'static str,
        /// The backend's error.
        #[source]
        source: BoxError,
    },
}

/// How an upstream call failed, so that routing retries only what another attempt can fix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum UpstreamFailure {
    /// No connection could be made (refused, DNS, TLS handshake).
    Connect,
    /// The connection broke while the request or the answer was in flight.
    Interrupted,
    /// The upstream answered with an error status (`status` holds it).
    Status,
    /// The answer arrived but could not be read: malformed JSON, a missing field, an unknown event.
    Decode,
}

impl Error {
    /// An upstream that answered with error status `status`.
    pub fn upstream_status(
        provider: impl Into<String>,
        status: u16,
        message: impl Into<String>,
        retry_after: Option<Duration>,
    ) -> Self {
        Error::Upstream {
            provider: provider.into(),
            failure: UpstreamFailure::Status,
            status: Some(status),
            message: message.into(),
            retry_after,
        }
    }

    /// An upstream call that failed without an error status (`failure` says how).
    pub fn upstream(provider: impl Into<String>, failure: UpstreamFailure, message: impl Into<String>) -> Self {
        Error::Upstream { provider: provider.into(), failure, status: None, message: message.into(), retry_after: None }
    }

    /// Shorthand for [`Error::InvalidRequest`].
    pub fn invalid_request(message: impl Into<String>, param: Option<&str>) -> Self {
        Error::InvalidRequest { message: message.into(), param: param.map(str::to_owned) }
    }

    /// Shorthand for [`Error::Backend`].
    pub fn backend(backend: &'static str, source: impl Into<BoxError>) -> Self {
        Error::Backend { backend, source: source.into() }
    }

    /// The HTTP status an OpenAI-compatible server answers with for this error.
    pub fn status(&self) -> u16 {
        match self {
            Error::InvalidApiKey => 401,
            Error::ModelNotAllowed { .. } => 403,
            Error::ModelNotFound { .. } | Error::NotFound { .. } => 404,
            Error::Conflict { .. } => 409,
            Error::BackendUnavailable { .. } => 503,
            Error::InvalidRequest { .. } | Error::InvalidInput { .. } | Error::Unsupported { .. } => 400,
            Error::PayloadTooLarge { .. } => 413,
            Error::RequestTimeout { .. } => 408,
            Error::RateLimited { .. } | Error::BudgetExhausted { .. } => 429,
            Error::Upstream { status: Some(s), .. } if (400..500).contains(s) && *s != 429 => *s,
            Error::Upstream { status: Some(429), .. } => 429,
            Error::Upstream { .. } => 502,
            Error::UpstreamTimeout { .. } | Error::DeadlineExceeded { .. } => 504,
            Error::Unavailable { .. } => 503,
            Error::ReservationNotFound { .. } | Error::Backend { .. } => 500,
        }
    }

    /// OpenAI's error `type` field.
    pub fn error_type(&self) -> &'static str {
        match self {
            Error::InvalidApiKey => "invalid_request_error",
            Error::ModelNotAllowed { .. } | Error::ModelNotFound { .. } => "invalid_request_error",
            Error::NotFound { .. } | Error::Conflict { .. } => "invalid_request_error",
            Error::BackendUnavailable { .. } => "server_error",
            Error::InvalidRequest { .. } | Error::InvalidInput { .. } | Error::Unsupported { .. } => {
                "invalid_request_error"
            }
            Error::PayloadTooLarge { .. } | Error::RequestTimeout { .. } => "invalid_request_error",
            Error::RateLimited { .. } => "requests",
            Error::BudgetExhausted { .. } => "insufficient_quota",
            Error::Upstream { status: Some(s), .. } if (400..500).contains(s) => "invalid_request_error",
            Error::Upstream { .. }
            | Error::UpstreamTimeout { .. }
            | Error::DeadlineExceeded { .. }
            | Error::Unavailable { .. } => "upstream_error",
            Error::ReservationNotFound { .. } | Error::Backend { .. } => "server_error",
        }
    }

    /// OpenAI's error `code` field.
    pub fn code(&self) -> Option<&'static str> {
        match self {
            Error::InvalidApiKey => Some("invalid_api_key"),
            Error::ModelNotAllowed { .. } => Some("model_not_allowed"),
            Error::ModelNotFound { .. } => Some("model_not_found"),
            Error::PayloadTooLarge { .. } => Some("request_too_large"),
            Error::RequestTimeout { .. } => Some("request_timeout"),
            Error::RateLimited { .. } => Some("rate_limit_exceeded"),
            Error::BudgetExhausted { .. } => Some("insufficient_quota"),
            Error::UpstreamTimeout { .. } => Some("upstream_timeout"),
            Error::DeadlineExceeded { .. } => Some("deadline_exceeded"),
            Error::Unavailable { .. } => Some("upstream_unavailable"),
            Error::NotFound { .. } => Some("not_found"),
            Error::Conflict { .. } => Some("conflict"),
            Error::BackendUnavailable { .. } => Some("service_unavailable"),
            _ => None,
        }
    }

    /// The `param` field: the request parameter at fault, if known.
    pub fn param(&self) -> Option<&str> {
        match self {
            Error::InvalidRequest { param, .. } => param.as_deref(),
            Error::ModelNotAllowed { .. } | Error::ModelNotFound { .. } => Some("model"),
            _ => None,
        }
    }

    /// How long the client should wait before retrying, when the error says.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::RateLimited { retry_after, .. } | Error::BackendUnavailable { retry_after, .. } => {
                Some(*retry_after)
            }
            Error::Upstream { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// Whether a different attempt (retry or fallback route) might succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Upstream { failure, status, .. } => match failure {
                UpstreamFailure::Connect | UpstreamFailure::Interrupted => true,
                UpstreamFailure::Decode => false,
                UpstreamFailure::Status => status.is_none_or(|s| s == 408 || s == 409 || s == 429 || s >= 500),
            },
            Error::UpstreamTimeout { .. } | Error::Unavailable { .. } => true,
            _ => false,
        }
    }

    /// The OpenAI error envelope for this error.
    pub fn to_envelope(&self) -> ErrorEnvelope {
        let message = match self {
            // Internal details stay in logs; clients get a stable sentence.
            Error::Backend { backend, .. } => format!("internal error in {backend}"),
            Error::BackendUnavailable { backend, .. } => format!("{backend} is unavailable; retry later"),
            other => other.to_string(),
        };
        ErrorEnvelope {
            error: ErrorBody {
                message,
                kind: self.error_type().to_owned(),
                param: self.param().map(str::to_owned),
                code: self.code().map(str::to_owned),
                extra: Default::default(),
            },
        }
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::backend("io", e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_follow_openai() {
        assert_eq!(Error::InvalidApiKey.status(), 401);
        assert_eq!(Error::ModelNotAllowed { model: "m".into() }.status(), 403);
        assert_eq!(Error::ModelNotFound { model: "m".into() }.status(), 404);
        assert_eq!(Error::invalid_request("bad", Some("messages")).status(), 400);
        assert_eq!(Error::RateLimited { retry_after: Duration::from_secs(1), status: Box::default() }.status(), 429);
        let budget = Error::BudgetExhausted { needed: NanoUsd(10), remaining: NanoUsd(1) };
        assert_eq!(budget.status(), 429);
        assert_eq!(budget.code(), Some("insufficient_quota"));
        assert_eq!(budget.error_type(), "insufficient_quota");
        let up = Error::upstream_status("p", 500, "x", None);
        assert_eq!(up.status(), 502);
        assert!(up.is_retryable());
        let up4 = Error::upstream_status("p", 400, "x", None);
        assert_eq!(up4.status(), 400);
        assert!(!up4.is_retryable());
        assert!(Error::upstream("p", UpstreamFailure::Interrupted, "reset").is_retryable());
        assert!(Error::upstream("p", UpstreamFailure::Connect, "refused").is_retryable());
        let malformed = Error::upstream("p", UpstreamFailure::Decode, "expected `choices`");
        assert!(!malformed.is_retryable(), "a malformed answer is not retried like a reset");
        assert_eq!(malformed.status(), 502);
        assert_eq!(Error::UpstreamTimeout { provider: "p".into(), timeout: Duration::from_secs(1) }.status(), 504);
        assert_eq!(Error::Unavailable { model: "m".into(), reason: "r".into() }.status(), 503);
        let late = Error::DeadlineExceeded { model: "m".into(), deadline: Duration::from_secs(2) };
        assert_eq!((late.status(), late.code(), late.is_retryable()), (504, Some("deadline_exceeded"), false));
        let missing = Error::NotFound { what: "tenant", id: "acme".into() };
        assert_eq!((missing.status(), missing.code()), (404, Some("not_found")));
        assert_eq!(Error::Conflict { what: "key", id: "k".into() }.status(), 409);
        let down = Error::BackendUnavailable {
            backend: "redis",
            retry_after: Duration::from_secs(1),
            source: "connection refused to redis://:hunter2@host".into(),
        };
        assert_eq!((down.status(), down.retry_after()), (503, Some(Duration::from_secs(1))));
        assert!(!down.to_envelope().error.message.contains("hunter2"));
        let slow = Error::RequestTimeout { received: 3, waited: Duration::from_secs(10) };
        assert_eq!((slow.status(), slow.code()), (408, Some("request_timeout")));
    }

    #[test]
    fn envelope_carries_param_and_code() {
        let env = Error::invalid_request("messages must not be empty", Some("messages")).to_envelope();
        let json = serde_json::to_value(&env).unwrap();
        assert_eq!(json["error"]["param"], "messages");
        assert_eq!(json["error"]["type"], "invalid_request_error");
        assert_eq!(json["error"]["code"], serde_json::Value::Null);
        let env = Error::backend("redis", std::io::Error::other("password=hunter2")).to_envelope();
        assert!(!env.error.message.contains("hunter2"));
    }
}
