//! HTTP plumbing the upstream providers share: requests, timeouts, and turning HTTP failures into
//! chitty-core's typed errors with the upstream's own message kept.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use chitty_core::wire::ChatCompletionJson;
use chitty_core::{Error, Result, UpstreamFailure};
use futures::Stream;
use http::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use http_body_util::BodyExt;
use serde::de::DeserializeOwned;

use crate::http_client::{BoxError, ResponseBody, UpstreamClient};

/// How much of an error body is read, and how much of a non-JSON one is quoted in the message.
const ERROR_BODY_LIMIT: usize = 64 * 1024;
const QUOTED_BODY_CHARS: usize = 512;
/// The largest non-streamed answer accepted: far above any real completion or embedding batch.
const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

/// An upstream's answer, headers received, body still to read.
pub(crate) type Response = http::Response<ResponseBody>;

/// An API key: sent in a header marked sensitive, never printed.
#[derive(Clone)]
pub(crate) struct ApiKey(String);

impl ApiKey {
    pub(crate) fn new(key: impl Into<String>) -> ApiKey {
        ApiKey(key.into())
    }

    /// The key as a header value (`prefix` + key), marked sensitive so that no HTTP layer logs it.
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

/// Extra headers sent with every request, given as strings and validated when the provider is built;
/// `Content-Type: application/json` is added, as every request body is JSON.
pub(crate) fn parse_headers(provider: &str, headers: &[(String, String)]) -> Result<HeaderMap> {
    let mut map = HeaderMap::new();
    map.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
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

/// Base URL without its trailing slashes, so that paths can be appended with `/`.
pub(crate) fn trim_base_url(url: &str) -> String {
    url.trim_end_matches('/').to_owned()
}

/// `base_url` + `path` as an absolute `http` or `https` URI, checked once when a provider is built.
pub(crate) fn endpoint(provider: &str, base_url: &str, path: &str) -> Result<http::Uri> {
    let invalid = |reason: String| Error::InvalidInput { what: format!("provider `{provider}` base URL"), reason };
    let uri = http::Uri::try_from(format!("{base_url}{path}"))
        .map_err(|e| invalid(format!("`{base_url}` is not a URL: {e}")))?;
    match (uri.scheme_str(), uri.authority()) {
        (Some("http" | "https"), Some(_)) => Ok(uri),
        _ => Err(invalid(format!("`{base_url}` must be an absolute http:// or https:// URL"))),
    }
}

/// A POST of `body` as JSON to `uri` with `headers`.
pub(crate) fn post_json(
    uri: &http::Uri,
    headers: &HeaderMap,
    body: &impl serde::Serialize,
) -> Result<http::Request<Bytes>> {
    // Most request bodies are a few hundred bytes: one allocation instead of regrowing from serde_json's 128.
    let mut bytes = Vec::with_capacity(512);
    serde_json::to_writer(&mut bytes, body).map_err(|e| Error::backend("request body", e))?;
    let mut request = http::Request::new(Bytes::from(bytes));
    *request.method_mut() = http::Method::POST;
    *request.uri_mut() = uri.clone();
    *request.headers_mut() = headers.clone();
    Ok(request)
}

/// The error for a failed request that got no HTTP status (connection refused, reset, TLS …).
pub(crate) fn transport_error(provider: &str, e: &BoxError) -> Error {
    Error::upstream(provider, UpstreamFailure::Interrupted, describe(&**e))
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
    Error::upstream(provider, UpstreamFailure::Decode, format!("malformed {what} from upstream: {detail}"))
}

fn timed_out(provider: &str, timeout: Duration) -> Error {
    Error::UpstreamTimeout { provider: provider.to_owned(), timeout }
}

/// Sends `request` and waits for the response headers within `timeout`; a non-2xx status becomes
/// [`Error::Upstream`] with the upstream's message and `Retry-After`.
pub(crate) async fn send(
    provider: &str,
    timeout: Duration,
    client: &UpstreamClient,
    request: http::Request<Bytes>,
) -> Result<Response> {
    match tokio::time::timeout(timeout, send_unbounded(provider, client, request)).await {
        Err(_) => Err(timed_out(provider, timeout)),
        Ok(result) => result,
    }
}

async fn send_unbounded(provider: &str, client: &UpstreamClient, request: http::Request<Bytes>) -> Result<Response> {
    let response = client.send(request).await.map_err(|e| transport_error(provider, &e))?;
    if response.status().is_success() {
        return Ok(response);
    }
    Err(status_error(provider, response).await)
}

/// Reads a whole JSON body within `timeout`, refusing bodies over [`MAX_BODY_BYTES`].
pub(crate) async fn read_json<T: DeserializeOwned>(provider: &str, timeout: Duration, response: Response) -> Result<T> {
    match tokio::time::timeout(timeout, read_json_unbounded(provider, response)).await {
        Err(_) => Err(timed_out(provider, timeout)),
        Ok(result) => result,
    }
}

async fn read_json_unbounded<T: DeserializeOwned>(provider: &str, response: Response) -> Result<T> {
    let body = read_body(provider, response).await?;
    parse_json(provider, &body)
}

/// The whole body, refusing bodies over [`MAX_BODY_BYTES`].
async fn read_body(provider: &str, response: Response) -> Result<Bytes> {
    let mut incoming = response.into_body();
    // A small answer arrives in one frame: it is kept where it lies, without a copy.
    let mut first: Option<Bytes> = None;
    let mut joined = bytes::BytesMut::new();
    while let Some(frame) = incoming.frame().await {
        let frame = frame.map_err(|e| transport_error(provider, &e))?;
        let Ok(data) = frame.into_data() else { continue };
        if first.as_ref().map_or(0, Bytes::len) + joined.len() + data.len() > MAX_BODY_BYTES {
            return Err(malformed(provider, "answer", format!("the body exceeds {MAX_BODY_BYTES} bytes")));
        }
        if first.is_none() && joined.is_empty() {
            first = Some(data);
            continue;
        }
        if let Some(head) = first.take() {
            joined.extend_from_slice(&head);
        }
        joined.extend_from_slice(&data);
    }
    Ok(first.unwrap_or_else(|| joined.freeze()))
}

/// Sends, then reads a chat completion as checked JSON, all within `timeout`.
pub(crate) async fn call_chat_json(
    provider: &str,
    timeout: Duration,
    client: &UpstreamClient,
    request: http::Request<Bytes>,
) -> Result<ChatCompletionJson> {
    let work = async {
        let response = send_unbounded(provider, client, request).await?;
        let body = read_body(provider, response).await?;
        ChatCompletionJson::parse(body.clone()).map_err(|e| unparsable(provider, &body, e))
    };
    match tokio::time::timeout(timeout, work).await {
        Err(_) => Err(timed_out(provider, timeout)),
        Ok(result) => result,
    }
}

fn parse_json<T: DeserializeOwned>(provider: &str, body: &[u8]) -> Result<T> {
    serde_json::from_slice(body).map_err(|parse_error| unparsable(provider, body, parse_error))
}

/// The error for a 2xx body that is not the expected document.
fn unparsable(provider: &str, body: &[u8], parse_error: serde_json::Error) -> Error {
    // Some compatible servers answer 200 with an error envelope.
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(json) if json.get("error").is_some_and(|e| !e.is_null()) => Error::Upstream {
            provider: provider.to_owned(),
            failure: UpstreamFailure::Status,
            status: None,
            message: error_message(body).unwrap_or_else(|| json.to_string()),
            retry_after: None,
        },
        _ => malformed(provider, "JSON body", parse_error),
    }
}

/// Sends, then reads the JSON answer, all within `timeout`.
pub(crate) async fn call_json<T: DeserializeOwned>(
    provider: &str,
    timeout: Duration,
    client: &UpstreamClient,
    request: http::Request<Bytes>,
) -> Result<T> {
    let work = async {
        let response = send_unbounded(provider, client, request).await?;
        read_json_unbounded(provider, response).await
    };
    // One timer for the whole exchange.
    match tokio::time::timeout(timeout, work).await {
        Err(_) => Err(timed_out(provider, timeout)),
        Ok(result) => result,
    }
}

/// The body of a streamed answer as it arrives.
pub(crate) fn body_stream(
    response: Response,
) -> impl Stream<Item = std::result::Result<Bytes, BoxError>> + Send + Unpin {
    response.into_body().into_data_stream()
}

/// Whether the answer is a JSON document (rather than the event stream that was asked for).
pub(crate) fn is_json(response: &Response) -> bool {
    response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"))
}

async fn status_error(provider: &str, response: Response) -> Error {
    let status = response.status();
    let retry_after = retry_after(response.headers());
    let mut body = Vec::new();
    let mut incoming = response.into_body();
    // A slow or endless error body must not hold the caller: read a bounded prefix, briefly.
    let read = async {
        while let Some(Ok(frame)) = incoming.frame().await {
            if let Ok(data) = frame.into_data() {
                body.extend_from_slice(&data);
            }
            if body.len() >= ERROR_BODY_LIMIT {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), read).await;
    let message = error_message(&body)
        .unwrap_or_else(|| status.canonical_reason().unwrap_or("error without a message").to_owned());
    Error::upstream_status(provider, status.as_u16(), message, retry_after)
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

        /// Shares a client (and its connection pools) instead of building one: an
        /// [`UpstreamClient`](crate::http_client::UpstreamClient), or a `reqwest::Client` for its proxy or TLS settings.
        pub fn with_client(mut self, client: impl Into<$crate::http_client::UpstreamClient>) -> Self {
            self.client = Some(client.into());
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
        let response = |body: &'static str| {
            http::Response::new(http_body_util::Full::new(Bytes::from(body)).map_err(BoxError::from).boxed_unsync())
        };
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
