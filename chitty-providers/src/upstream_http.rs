//! HTTP plumbing the upstream providers share: the pooled client, timeouts, and turning HTTP failures
//! into chitty-core's typed errors with the upstream's own message kept.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chitty_core::{Error, Result};
use futures::StreamExt;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde::de::DeserializeOwned;

/// How much of an error body is read, and how much of a non-JSON one is quoted in the message.
const ERROR_BODY_LIMIT: usize = 64 * 1024;
const QUOTED_BODY_CHARS: usize = 512;
/// The largest non-streamed answer accepted: far above any real completion or embedding batch.
const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

/// An API key: sent in a header marked sensitive, never printed.
#[derive(Clone)]
pub(crate) struct ApiKey(String);

impl ApiKey {
    pub(crate) fn new(key: impl Into<String>) -> ApiKey {
        ApiKey(key.into())
    }

    /// The key as a header value (`prefix` + key), marked sensitive so that reqwest never logs it.
    pub(crate) fn header_value(&self, prefix: &str) -> Result<HeaderValue> {
        let mut value = HeaderValue::from_str(&format!("{prefix}{}", self.0)).map_err(|_| Error::InvalidInput {
            what: "API key".to_owned(),
            reason: "contains characters that are not allowed in an HTTP header".to_owned(),
        })?;
        value.set_sensitive(true);
        Ok(value)
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

/// Extra headers sent with every request, given as strings and validated when the provider is built.
pub(crate) fn parse_headers(provider: &str, headers: &[(String, String)]) -> Result<HeaderMap> {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        let header = HeaderName::from_bytes(name.as_bytes()).map_err(|_| Error::InvalidInput {
            what: format!("provider `{provider}` configuration"),
            reason: format!("`{name}` is not a valid HTTP header name"),
        })?;
        let mut value = HeaderValue::from_str(value).map_err(|_| Error::InvalidInput {
            what: format!("provider `{provider}` configuration"),
            // The value may be a credential: name the header, never quote the value.
            reason: format!("the value of header `{name}` is not a valid HTTP header value"),
        })?;
        value.set_sensitive(true);
        map.append(header, value);
    }
    Ok(map)
}

/// A pooled client for upstream calls (HTTP/1.1 and HTTP/2, rustls).
pub(crate) fn default_client() -> Result<reqwest::Client> {
    reqwest::Client::builder()
        // A burst (say 1,000 streams) must not leave a thousand idle connections and their buffers behind:
        // keep enough warm connections for steady traffic and let the rest close soon.
        .pool_max_idle_per_host(64)
        .pool_idle_timeout(Duration::from_secs(15))
        .connect_timeout(Duration::from_secs(10))
        .tcp_nodelay(true)
        .build()
        .map_err(|e| Error::backend("http client", e))
}

/// Base URL without its trailing slashes, so that paths can be appended with `/`.
pub(crate) fn trim_base_url(url: &str) -> String {
    url.trim_end_matches('/').to_owned()
}

/// The error for a failed request that got no HTTP status (connection refused, reset, TLS …).
pub(crate) fn transport_error(provider: &str, timeout: Duration, e: &reqwest::Error) -> Error {
    if e.is_timeout() {
        return Error::UpstreamTimeout { provider: provider.to_owned(), timeout };
    }
    Error::Upstream { provider: provider.to_owned(), status: None, message: describe(e), retry_after: None }
}

/// An error and its sources as one line, without the request URL that reqwest appends (a URL may carry
/// a credential in its query, as Azure's `api-key` does).
pub(crate) fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut message = String::new();
    let mut current = Some(e);
    while let Some(err) = current {
        let mut text = err.to_string();
        if let Some(url) = err.downcast_ref::<reqwest::Error>().and_then(reqwest::Error::url) {
            text = text.replace(&format!(" for url ({url})"), "");
        }
        if !message.is_empty() {
            message.push_str(": ");
        }
        message.push_str(&text);
        current = err.source();
    }
    message
}

/// The error for an answer that arrived but could not be understood.
pub(crate) fn malformed(provider: &str, what: &str, detail: impl fmt::Display) -> Error {
    Error::Upstream {
        provider: provider.to_owned(),
        status: None,
        message: format!("malformed {what} from upstream: {detail}"),
        retry_after: None,
    }
}

/// Sends `request` and waits for the response headers within `timeout`; a non-2xx status becomes
/// [`Error::Upstream`] with the upstream's message and `Retry-After`.
pub(crate) async fn send(
    provider: &str,
    timeout: Duration,
    request: reqwest::RequestBuilder,
) -> Result<reqwest::Response> {
    let response = match tokio::time::timeout(timeout, request.send()).await {
        Err(_) => {
            return Err(Error::UpstreamTimeout { provider: provider.to_owned(), timeout });
        }
        Ok(Err(e)) => return Err(transport_error(provider, timeout, &e)),
        Ok(Ok(r)) => r,
    };
    if response.status().is_success() {
        return Ok(response);
    }
    Err(status_error(provider, response).await)
}

/// Reads a whole JSON body within `timeout`, refusing bodies over [`MAX_BODY_BYTES`].
pub(crate) async fn read_json<T: DeserializeOwned>(
    provider: &str,
    timeout: Duration,
    response: reqwest::Response,
) -> Result<T> {
    let read = async {
        let mut body = Vec::new();
        let mut chunks = response.bytes_stream();
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk.map_err(|e| transport_error(provider, timeout, &e))?;
            if body.len() + chunk.len() > MAX_BODY_BYTES {
                let why = format!("the body exceeds {MAX_BODY_BYTES} bytes");
                return Err(malformed(provider, "answer", why));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    };
    let body = match tokio::time::timeout(timeout, read).await {
        Err(_) => {
            return Err(Error::UpstreamTimeout { provider: provider.to_owned(), timeout });
        }
        Ok(result) => result?,
    };
    serde_json::from_slice(&body).map_err(|parse_error| {
        // Some compatible servers answer 200 with an error envelope.
        match serde_json::from_slice::<serde_json::Value>(&body) {
            Ok(json) if json.get("error").is_some_and(|e| !e.is_null()) => Error::Upstream {
                provider: provider.to_owned(),
                status: None,
                message: error_message(&body).unwrap_or_else(|| json.to_string()),
                retry_after: None,
            },
            _ => malformed(provider, "JSON body", parse_error),
        }
    })
}

/// Sends, then reads the JSON answer, all within `timeout`.
pub(crate) async fn call_json<T: DeserializeOwned>(
    provider: &str,
    timeout: Duration,
    request: reqwest::RequestBuilder,
) -> Result<T> {
    let work = async {
        let response = send(provider, timeout, request).await?;
        read_json(provider, timeout, response).await
    };
    match tokio::time::timeout(timeout, work).await {
        Err(_) => Err(Error::UpstreamTimeout { provider: provider.to_owned(), timeout }),
        Ok(result) => result,
    }
}

async fn status_error(provider: &str, response: reqwest::Response) -> Error {
    let status = response.status();
    let retry_after = retry_after(response.headers());
    let mut body = Vec::new();
    let mut chunks = response.bytes_stream();
    // A slow or endless error body must not hold the caller: read a bounded prefix, briefly.
    let read = async {
        while let Some(Ok(chunk)) = chunks.next().await {
            body.extend_from_slice(&chunk);
            if body.len() >= ERROR_BODY_LIMIT {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), read).await;
    let message = error_message(&body)
        .unwrap_or_else(|| status.canonical_reason().unwrap_or("error without a message").to_owned());
    Error::Upstream { provider: provider.to_owned(), status: Some(status.as_u16()), message, retry_after }
}

/// The message inside an error body: OpenAI's and Anthropic's `{"error": {"message"}}`, Ollama's
/// `{"error": "…"}`, FastAPI's `{"detail": …}` or `{"message"}`; otherwise the start of the body.
pub(crate) fn error_message(body: &[u8]) -> Option<String> {
    if let Ok(json) = serde_json::from_slice::<serde_json::Value>(body) {
        let candidates = [
            json.pointer("/error/message"),
            json.get("error").filter(|e| e.is_string()),
            json.get("message"),
            json.get("detail"),
        ];
        if let Some(found) = candidates.into_iter().flatten().next() {
            return Some(match found {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            });
        }
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    Some(text.chars().take(QUOTED_BODY_CHARS).collect())
}

/// `retry-after-ms` (OpenAI) or `Retry-After` in seconds. HTTP-date values are ignored: no upstream
/// we target sends them, and honouring one needs a clock this layer does not read.
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    if let Some(ms) = header("retry-after-ms").and_then(|v| v.parse::<f64>().ok())
        && (0.0..1e12).contains(&ms)
    {
        return Some(Duration::from_secs_f64(ms / 1000.0));
    }
    let secs = header("retry-after")?.parse::<f64>().ok()?;
    (0.0..1e9).contains(&secs).then(|| Duration::from_secs_f64(secs))
}

/// Unix seconds now, for translated responses whose upstream format carries no `created` field.
#[cfg_attr(not(any(feature = "anthropic", feature = "ollama")), allow(dead_code))]
pub(crate) fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// The setters every HTTP provider builder shares, over the fields they all name alike (`name`, `base_url`,
/// `api_key`, `headers`, `timeout`, `stream_idle_timeout`, `client`); the doc lines that differ are arguments.
macro_rules! shared_builder_setters {
    (base_url: $base_url_doc:literal, api_key: $api_key_doc:literal, header: $header_doc:literal $(,)?) => {
        #[doc = $base_url_doc]
        pub fn with_base_url(mut self, url: impl Into<String>) -> Self {
            self.base_url = url.into();
            self
        }

        #[doc = $api_key_doc]
        pub fn with_api_key(mut self, key: impl Into<String>) -> Self {
            self.api_key = Some($crate::upstream_http::ApiKey::new(key));
            self
        }

        /// The API key from the environment variable `var`; fails naming the variable when it is unset.
        pub fn with_api_key_from_env(self, var: &str) -> chitty_core::Result<Self> {
            match std::env::var(var) {
                Ok(key) if !key.is_empty() => Ok(self.with_api_key(key)),
                _ => Err(chitty_core::Error::InvalidInput {
                    what: format!("provider `{}` configuration", self.name),
                    reason: format!("the environment variable `{var}` is not set"),
                }),
            }
        }

        #[doc = $header_doc]
        pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
            self.headers.push((name.into(), value.into()));
            self
        }

        /// How long a request may take: a whole non-streamed answer, or a stream's response headers.
        pub fn with_timeout(mut self, timeout: std::time::Duration) -> Self {
            self.timeout = timeout;
            self
        }

        /// How long a stream may stay silent between two reads (defaults to the request timeout).
        pub fn with_stream_idle_timeout(mut self, timeout: std::time::Duration) -> Self {
            self.stream_idle_timeout = Some(timeout);
            self
        }

        /// Shares an existing client (and its connection pool) instead of building one.
        pub fn with_client(mut self, client: reqwest::Client) -> Self {
            self.client = Some(client);
            self
        }
    };
}
pub(crate) use shared_builder_setters;

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn error_messages_from_common_envelopes() {
        assert_eq!(error_message(br#"{"error":{"message":"bad key","type":"x"}}"#).as_deref(), Some("bad key"));
        assert_eq!(
            error_message(br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#).as_deref(),
            Some("Overloaded")
        );
        assert_eq!(error_message(br#"{"error":"model not found"}"#).as_deref(), Some("model not found"));
        assert_eq!(error_message(br#"{"detail":"nope"}"#).as_deref(), Some("nope"));
        assert_eq!(error_message(b"  upstream exploded \n").as_deref(), Some("upstream exploded"));
        assert_eq!(error_message(b""), None);
    }

    #[tokio::test]
    async fn a_200_with_an_error_envelope_is_an_upstream_error() {
        let response = |body: &'static str| reqwest::Response::from(http::Response::new(body));
        let err = read_json::<Vec<u8>>("p", Duration::from_secs(1), response(r#"{"error":{"message":"quota"}}"#))
            .await
            .unwrap_err();
        assert!(matches!(&err, Error::Upstream { status: None, message, .. } if message == "quota"), "{err:?}");
        let err = read_json::<Vec<u8>>("p", Duration::from_secs(1), response("{not json")).await.unwrap_err();
        assert!(err.to_string().contains("malformed JSON body"), "{err}");
    }

    #[test]
    fn retry_after_headers() {
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert("retry-after", HeaderValue::from_static("3"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(3)));
        h.insert("retry-after-ms", HeaderValue::from_static("250"));
        assert_eq!(retry_after(&h), Some(Duration::from_millis(250)));
        let mut h = HeaderMap::new();
        h.insert("retry-after", HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"));
        assert_eq!(retry_after(&h), None);
        h.insert("retry-after", HeaderValue::from_static("-1"));
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn keys_and_header_values_are_never_printed() {
        let key = ApiKey::new("sk-secret");
        assert!(!format!("{key:?}").contains("sk-secret"));
        let err = parse_headers("p", &[("x-token".into(), "sk-secret\n".into())]).unwrap_err();
        assert!(!err.to_string().contains("sk-secret"));
        assert!(parse_headers("p", &[("bad header".into(), "v".into())]).is_err());
    }
}
