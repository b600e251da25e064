//! The App client's error type.

use std::time::Duration;

use chitty_core::BoxError;

/// Which of GitHub's rate limits stopped a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RateLimitKind {
    /// The hourly request budget (`x-ratelimit-remaining` reached 0).
    Primary,
    /// A secondary (abuse) limit: too many concurrent, too many mutations, too much CPU.
    Secondary,
}

/// What went wrong talking to GitHub as an App.
///
/// Never contains the private key, a JWT or an installation token.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The private key is not an RSA key in PEM form (PKCS#1 or PKCS#8).
    #[error("the GitHub App private key is not a valid RSA PEM key")]
    InvalidPrivateKey {
        /// The parser's error (it never quotes the key).
        #[source]
        source: BoxError,
    },
    /// The configuration is unusable (for example a base URL that does not parse).
    #[error("invalid GitHub client configuration: {reason}")]
    InvalidConfig {
        /// What is wrong.
        reason: String,
    },
    /// Signing the App JWT failed.
    #[error("could not sign the GitHub App JWT")]
    Jwt {
        /// The signer's error.
        #[source]
        source: BoxError,
    },
    /// GitHub answered with an error status that retrying cannot fix (or retries ran out).
    #[error("GitHub answered {status} to {method} {path}: {message}")]
    Api {
        /// HTTP method of the request.
        method: String,
        /// Path of the request (no query, no credentials).
        path: String,
        /// HTTP status.
        status: u16,
        /// GitHub's `message`.
        message: String,
        /// GitHub's `documentation_url`, when given.
        documentation_url: Option<String>,
    },
    /// A rate limit would have made the request wait longer than the policy allows, or retries ran out.
    #[error("GitHub {kind:?} rate limit: retry after {} s", retry_after.as_secs())]
    RateLimited {
        /// Which limit.
        kind: RateLimitKind,
        /// How long until a retry may succeed.
        retry_after: Duration,
    },
    /// The request did not complete within the configured timeout.
    #[error("GitHub did not answer within {} ms", timeout.as_millis())]
    Timeout {
        /// The timeout that elapsed.
        timeout: Duration,
    },
    /// The connection failed or broke.
    #[error("could not reach GitHub")]
    Transport {
        /// The HTTP client's error.
        #[source]
        source: BoxError,
    },
    /// GitHub's answer could not be decoded into the expected type.
    #[error("could not decode GitHub's answer as {what}")]
    Decode {
        /// The expected type.
        what: &'static str,
        /// The decoder's error.
        #[source]
        source: BoxError,
    },
    /// GitHub's answer broke the protocol (for example a `Link` to another host).
    #[error("unexpected answer from GitHub: {reason}")]
    InvalidResponse {
        /// What is wrong with it.
        reason: String,
    },
}

impl ClientError {
    /// The HTTP status GitHub answered with, if the error comes from an answer.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Whether GitHub said the resource does not exist (404).
    pub fn is_not_found(&self) -> bool {
        self.status() == Some(404)
    }

    /// How long to wait before trying again, when GitHub said.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ClientError::RateLimited { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }
}

impl From<ClientError> for chitty_core::Error {
    fn from(error: ClientError) -> Self {
        const PROVIDER: &str = "github";
        match error {
            ClientError::Api { status, message, .. } => chitty_core::Error::Upstream {
                provider: PROVIDER.to_owned(),
                status: Some(status),
                message,
                retry_after: None,
            },
            // Reported as 429 whichever limit it was, so that callers treat it as retryable.
            ClientError::RateLimited { retry_after, .. } => chitty_core::Error::Upstream {
                provider: PROVIDER.to_owned(),
                status: Some(429),
                message: error.to_string(),
                retry_after: Some(retry_after),
            },
            ClientError::Timeout { timeout } => {
                chitty_core::Error::UpstreamTimeout { provider: PROVIDER.to_owned(), timeout }
            }
            ClientError::Transport { .. } | ClientError::InvalidResponse { .. } | ClientError::Decode { .. } => {
                chitty_core::Error::Upstream {
                    provider: PROVIDER.to_owned(),
                    status: None,
                    message: error.to_string(),
                    retry_after: None,
                }
            }
            ClientError::InvalidPrivateKey { .. } | ClientError::InvalidConfig { .. } => {
                chitty_core::Error::InvalidInput {
                    what: "GitHub App configuration".to_owned(),
                    reason: error.to_string(),
                }
            }
            ClientError::Jwt { source } => chitty_core::Error::Backend { backend: "github-jwt", source },
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn converts_into_core_errors_with_status_and_retry_hint() {
        let api = ClientError::Api {
            method: "POST".into(),
            path: "/repos/o/r/issues/1/labels".into(),
            status: 422,
            message: "Validation Failed".into(),
            documentation_url: None,
        };
        assert_eq!(api.status(), Some(422));
        let core: chitty_core::Error = api.into();
        assert_eq!(core.status(), 422);
        assert!(!core.is_retryable());

        let limited = ClientError::RateLimited { kind: RateLimitKind::Secondary, retry_after: Duration::from_secs(60) };
        let core: chitty_core::Error = limited.into();
        assert!(core.is_retryable());
        assert_eq!(core.retry_after(), Some(Duration::from_secs(60)));
    }
}
