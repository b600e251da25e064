//! What the HTTP providers share about requests and answers: building requests, timeouts, reading bodies,
//! and turning HTTP failures into chitty-core's typed errors with the upstream's own message kept.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use chitty_core::upstream::{error_message, retry_after};
use chitty_core::wire::ChatCompletionJson;
use chitty_core::{Error, Result, UpstreamFailure};
use futures::Stream;
use http::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use http_body_util::BodyExt;
use serde::de::DeserializeOwned;

use crate::http_client::{BoxError, ResponseBody, TransportError, TransportErrorKind, UpstreamClient};

/// How much of an error body is read.
const ERROR_BODY_LIMIT: usize = 64 * 1024;
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

/// The error for an exchange that failed without an HTTP status, by how it failed: a refused connection is
/// [`UpstreamFailure::Connect`], a reset one [`UpstreamFailure::Interrupted`], an unreadable answer
/// [`UpstreamFailure::Decode`]; the transport's own timeout is [`Error::UpstreamTimeout`] after `timeout`.
pub(crate) fn transport_error(provider: &str, timeout: Duration, e: TransportError) -> Error {
    let failure = match e.kind() {
        TransportErrorKind::Connect => UpstreamFailure::Connect,
        TransportErrorKind::Decode => UpstreamFailure::Decode,
        TransportErrorKind::Timeout => return timed_out(provider, timeout),
        // Not the upstream's doing: the request was built wrong (a host's transport refused it).
        TransportErrorKind::Request => return Error::backend("upstream request", e),
        _ => UpstreamFailure::Interrupted,
    };
    Error::upstream(provider, failure, describe(&e))
}

/// The error for a response body that failed while it was read: the transport's kind when it gave one,
/// otherwise an interruption.
pub(crate) fn body_error(provider: &str, timeout: Duration, e: BoxError) -> Error {
    match e.downcast::<TransportError>() {
        Ok(e) => transport_error(provider, timeout, *e),
        Err(e) => Error::upstream(provider, UpstreamFailure::Interrupted, describe(&*e)),
    }
}

/// An error and its sources as one line. Transports leave the request URL out of their errors (a URL may
/// carry a credential in its query, as Azure's `api-key` does).
pub(crate) fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut message = String::new();
    let mut current = Some(e);
    while let Some(err) = current {
        if !message.is_empty() {
            message.push_str(": ");
        }
        message.push_str(&err.to_string());
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
    match tokio::time::timeout(timeout, send_unbounded(provider, timeout, client, request)).await {
        Err(_) => Err(timed_out(provider, timeout)),
        Ok(result) => result,
    }
}

async fn send_unbounded(
    provider: &str,
    timeout: Duration,
    client: &UpstreamClient,
    request: http::Request<Bytes>,
) -> Result<Response> {
    let response = client.send(request).await.map_err(|e| transport_error(provider, timeout, e))?;
    if response.status().is_success() {
        return Ok(response);
    }
    Err(status_error(provider, response).await)
}

/// Reads a whole JSON body within `timeout`, refusing bodies over [`MAX_BODY_BYTES`].
pub(crate) async fn read_json<T: DeserializeOwned>(provider: &str, timeout: Duration, response: Response) -> Result<T> {
    match tokio::time::timeout(timeout, read_json_unbounded(provider, timeout, response)).await {
        Err(_) => Err(timed_out(provider, timeout)),
        Ok(result) => result,
    }
}

async fn read_json_unbounded<T: DeserializeOwned>(provider: &str, timeout: Duration, response: Response) -> Result<T> {
    let body = read_body(provider, timeout, response).await?;
    parse_json(provider, &body)
}

/// The whole body, refusing bodies over [`MAX_BODY_BYTES`].
async fn read_body(provider: &str, timeout: Duration, response: Response) -> Result<Bytes> {
    let mut incoming = response.into_body();
    // A small answer arrives in one frame: it is kept where it lies, without a copy.
    let mut first: Option<Bytes> = None;
    let mut joined = bytes::BytesMut::new();
    while let Some(frame) = incoming.frame().await {
        let frame = frame.map_err(|e| body_error(provider, timeout, e))?;
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
        let response = send_unbounded(provider, timeout, client, request).await?;
        let body = read_body(provider, timeout, response).await?;
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
        let response = send_unbounded(provider, timeout, client, request).await?;
        read_json_unbounded(provider, timeout, response).await
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
            self.api_key = Some($crate::http_provider::ApiKey::new(key));
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
    fn keys_and_header_values_are_never_printed() {
        let key = ApiKey::new("sk-secret");
        assert!(!format!("{key:?}").contains("sk-secret"));
        let err = parse_headers("p", &[("x-token".into(), "sk-secret\n".into())]).unwrap_err();
        assert!(!err.to_string().contains("sk-secret"));
        assert!(parse_headers("p", &[("bad header".into(), "v".into())]).is_err());
    }
}
