//! The App client's error type.

use std::fmt;
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

/// Most entries of GitHub's `errors` array kept in an error.
const MAX_DETAILS: usize = 100;
/// Longest text kept from one field of an entry (GitHub's are short; a hostile answer's need not be).
const MAX_DETAIL_FIELD_CHARS: usize = 1024;
/// Entries shown by `Display`; the rest are counted.
const SHOWN_DETAILS: usize = 3;
/// Longest text shown by `Display` for one entry.
const SHOWN_DETAIL_CHARS: usize = 120;

/// One entry of the `errors` array GitHub sends with a 422 (and some 400s/403s): which field of
/// which resource was refused, and why.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ApiErrorDetail {
    /// The resource, e.g. `Issue`, `Label`, `Request`.
    pub resource: Option<String>,
    /// The field, e.g. `title`.
    pub field: Option<String>,
    /// GitHub's code: `missing`, `missing_field`, `invalid`, `already_exists`, `unprocessable`,
    /// or `custom` (then `message` says what).
    pub code: Option<String>,
    /// A message, when GitHub sent one.
    pub message: Option<String>,
}

impl ApiErrorDetail {
    /// Reads one entry: GitHub sends objects, and on some endpoints plain strings.
    pub(crate) fn from_json(value: &serde_json::Value) -> Option<Self> {
        let text = |value: &serde_json::Value| value.as_str().map(|s| s.chars().take(MAX_DETAIL_FIELD_CHARS).collect());
        let detail = match value {
            serde_json::Value::String(_) => ApiErrorDetail { message: text(value), ..ApiErrorDetail::default() },
            serde_json::Value::Object(entry) => {
                let field = |name: &str| entry.get(name).and_then(text);
                ApiErrorDetail {
                    resource: field("resource"),
                    field: field("field"),
                    code: field("code"),
                    message: field("message"),
                }
            }
            _ => return None,
        };
        (detail != ApiErrorDetail::default()).then_some(detail)
    }

    /// The entries of GitHub's `errors` array, at most [`MAX_DETAILS`] of them.
    pub(crate) fn list_from_json(errors: Option<&serde_json::Value>) -> Vec<Self> {
        let Some(errors) = errors.and_then(serde_json::Value::as_array) else {
            return Vec::new();
        };
        errors.iter().filter_map(Self::from_json).take(MAX_DETAILS).collect()
    }
}

/// `Issue.title: missing_field`, `Label.name: already_exists`, `Request.body: <message>` (for `custom`).
impl fmt::Display for ApiErrorDetail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let place = match (&self.resource, &self.field) {
            (Some(resource), Some(field)) => Some(format!("{resource}.{field}")),
            (resource, field) => resource.clone().or_else(|| field.clone()),
        };
        let code = self.code.as_deref().filter(|code| *code != "custom");
        let what = match (code, &self.message) {
            (Some(code), Some(message)) => format!("{code} ({message})"),
            (Some(code), None) => code.to_owned(),
            (None, Some(message)) => message.clone(),
            (None, None) => self.code.clone().unwrap_or_default(),
        };
        match place {
            Some(place) => write!(f, "{place}: {what}"),
            None => f.write_str(&what),
        }
    }
}

/// The `errors` of an API error as `Display` shows them: a few entries, each cut short.
struct DetailsSummary<'a>(&'a [ApiErrorDetail]);

impl fmt::Display for DetailsSummary<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return Ok(());
        }
        f.write_str(" [")?;
        for (index, detail) in self.0.iter().take(SHOWN_DETAILS).enumerate() {
            if index > 0 {
                f.write_str("; ")?;
            }
            let shown = detail.to_string();
            if shown.chars().count() > SHOWN_DETAIL_CHARS {
                let cut: String = shown.chars().take(SHOWN_DETAIL_CHARS - 1).collect();
                write!(f, "{cut}…")?;
            } else {
                f.write_str(&shown)?;
            }
        }
        if self.0.len() > SHOWN_DETAILS {
            write!(f, "; and {} more", self.0.len() - SHOWN_DETAILS)?;
        }
        f.write_str("]")
    }
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
    #[error("GitHub answered {status} to {method} {path}: {message}{}", DetailsSummary(errors))]
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
        /// GitHub's `errors` array (which fields were invalid, and why); empty when it sent none.
        errors: Vec<ApiErrorDetail>,
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
            ClientError::Api { status, message, errors, .. } => chitty_core::Error::upstream_status(
                PROVIDER,
                status,
                format!("{message}{}", DetailsSummary(&errors)),
                None,
            ),
            // Reported as 429 whichever limit it was, so that callers treat it as retryable.
            ClientError::RateLimited { retry_after, .. } => {
                chitty_core::Error::upstream_status(PROVIDER, 429, error.to_string(), Some(retry_after))
            }
            ClientError::Timeout { timeout } => {
                chitty_core::Error::UpstreamTimeout { provider: PROVIDER.to_owned(), timeout }
            }
            ClientError::Transport { .. } => {
                chitty_core::Error::upstream(PROVIDER, chitty_core::UpstreamFailure::Interrupted, error.to_string())
            }
            ClientError::InvalidResponse { .. } | ClientError::Decode { .. } => {
                chitty_core::Error::upstream(PROVIDER, chitty_core::UpstreamFailure::Decode, error.to_string())
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
            errors: vec![ApiErrorDetail {
                resource: Some("Label".into()),
                field: Some("name".into()),
                code: Some("invalid".into()),
                message: None,
            }],
        };
        assert_eq!(api.status(), Some(422));
        let core: chitty_core::Error = api.into();
        assert_eq!(core.status(), 422);
        assert!(core.to_string().contains("Label.name: invalid"), "{core}");
        assert!(!core.is_retryable());

        let limited = ClientError::RateLimited { kind: RateLimitKind::Secondary, retry_after: Duration::from_secs(60) };
        let core: chitty_core::Error = limited.into();
        assert!(core.is_retryable());
        assert_eq!(core.retry_after(), Some(Duration::from_secs(60)));
    }

    #[test]
    fn github_errors_arrays_are_read_and_shown_briefly() {
        let body = serde_json::json!([
            { "resource": "Issue", "field": "title", "code": "missing_field" },
            { "resource": "Label", "field": "name", "code": "already_exists", "message": "name already exists" },
            { "resource": "Request", "field": "body", "code": "custom", "message": "body is too long" },
            "a plain string",
            7,
            {},
            { "resource": "Issue", "code": "invalid", "message": "x".repeat(5_000) },
        ]);
        let errors = ApiErrorDetail::list_from_json(Some(&body));
        assert_eq!(errors.len(), 5, "a number and an empty object carry nothing");
        let shown: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown[..4],
            [
                "Issue.title: missing_field",
                "Label.name: already_exists (name already exists)",
                "Request.body: body is too long",
                "a plain string",
            ]
        );
        assert_eq!(errors[4].message.as_ref().map(String::len), Some(MAX_DETAIL_FIELD_CHARS));

        let api = |errors: Vec<ApiErrorDetail>| ClientError::Api {
            method: "POST".into(),
            path: "/repos/o/r/issues".into(),
            status: 422,
            message: "Validation Failed".into(),
            documentation_url: None,
            errors,
        };
        let text = api(errors.clone()).to_string();
        assert_eq!(
            text,
            "GitHub answered 422 to POST /repos/o/r/issues: Validation Failed [Issue.title: missing_field; \
             Label.name: already_exists (name already exists); Request.body: body is too long; and 2 more]"
        );
        let long = api(errors[4..].to_vec()).to_string();
        assert!(long.ends_with("x…]") && long.chars().count() < 200, "{long}");
        assert_eq!(api(Vec::new()).to_string(), "GitHub answered 422 to POST /repos/o/r/issues: Validation Failed");
        let many = serde_json::Value::Array(vec![serde_json::json!("e"); 1_000]);
        assert_eq!(ApiErrorDetail::list_from_json(Some(&many)).len(), MAX_DETAILS);
        assert!(ApiErrorDetail::list_from_json(Some(&serde_json::json!({ "not": "an array" }))).is_empty());
    }
}
