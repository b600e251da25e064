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

/// A string that is never printed (API keys, header values): sent in a header marked sensitive.
#[derive(Clone)]
pub(crate) struct Redacted(String);

impl Redacted {
    pub(crate) fn new(value: impl Into<String>) -> Redacted {
        Redacted(value.into())
    }

    /// The value as a header value (`prefix` + value), marked sensitive so that no HTTP layer logs it;
    /// `what` names it in the error (never the value).
    fn header_value(&self, prefix: &str, what: &str) -> Result<HeaderValue> {
        let mut value = HeaderValue::from_str(&format!("{prefix}{}", self.0)).map_err(|_| Error::InvalidInput {
            what: what.to_owned(),
            reason: "contains characters that are not allowed in an HTTP header".to_owned(),
        })?;
        value.set_sensitive(true);
        Ok(value)
    }
}

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// The settings every HTTP provider shares; [`ProviderBuilder`] sets them.
#[derive(Debug, Clone)]
pub(crate) struct HttpProviderConfig {
    name: String,
    base_url: String,
    api_key: Option<Redacted>,
    headers: Vec<(String, Redacted)>,
    timeout: Duration,
    client: Option<UpstreamClient>,
}

/// Builds an HTTP provider ([`OpenAiProvider`](crate::openai::OpenAiProvider),
/// [`AnthropicProvider`](crate::anthropic::AnthropicProvider), [`OllamaProvider`](crate::ollama::OllamaProvider)):
/// the settings they share, and `O`, the options of one of them, set by that provider's own methods.
#[derive(Debug, Clone)]
pub struct ProviderBuilder<O> {
    config: HttpProviderConfig,
    pub(crate) options: O,
}

impl<O> ProviderBuilder<O> {
    /// A builder for a provider called `name`, with its default base URL and timeout and its options.
    pub(crate) fn new(name: impl Into<String>, base_url: &str, timeout: Duration, options: O) -> ProviderBuilder<O> {
        let config = HttpProviderConfig {
            name: name.into(),
            base_url: base_url.to_owned(),
            api_key: None,
            headers: Vec::new(),
            timeout,
            client: None,
        };
        ProviderBuilder { config, options }
    }

    /// The base URL paths are appended to: with `/v1` for OpenAI-compatible APIs
    /// (`http://localhost:8000/v1` for vLLM), without it for Anthropic and Ollama (`http://gpu-box:11434`).
    pub fn with_base_url(mut self, url: impl Into<String>) -> Self {
        self.config.base_url = url.into();
        self
    }

    /// The API key, sent in the header the provider's API takes (never logged or printed).
    pub fn with_api_key(mut self, key: impl Into<String>) -> Self {
        self.config.api_key = Some(Redacted::new(key));
        self
    }

    /// The API key from the environment variable `var`; fails naming the variable when it is unset.
    pub fn with_api_key_from_env(self, var: &str) -> Result<Self> {
        match std::env::var(var) {
            Ok(key) if !key.is_empty() => Ok(self.with_api_key(key)),
            _ => Err(Error::InvalidInput {
                what: format!("provider `{}` configuration", self.config.name),
                reason: format!("the environment variable `{var}` is not set"),
            }),
        }
    }

    /// A header sent with every request (e.g. `OpenAI-Organization`, `anthropic-beta`); its value is never
    /// printed, and both are validated when the provider is built.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.config.headers.push((name.into(), Redacted::new(value)));
        self
    }

    /// How long a request may take: a whole non-streamed answer, a stream's response headers, and each
    /// silence between two reads of a stream.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.config.timeout = timeout;
        self
    }

    /// Shares a client (and its connection pools) instead of building one: an [`UpstreamClient`], or a
    /// `reqwest::Client` for its proxy or TLS settings.
    pub fn with_client(mut self, client: impl Into<UpstreamClient>) -> Self {
        self.config.client = Some(client.into());
        self
    }

    /// The shared settings as the upstream a provider calls, with the API key sent as `auth` says (header
    /// name and value prefix) and `defaults` sent unless a header of that name was set; fails on an invalid
    /// header, key or base URL.
    pub(crate) fn upstream(
        &self,
        auth: (HeaderName, &str),
        defaults: &[(HeaderName, HeaderValue)],
    ) -> Result<HttpUpstream> {
        let config = &self.config;
        let what = || format!("provider `{}` configuration", config.name);
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        for (name, value) in &config.headers {
            let header = HeaderName::from_bytes(name.as_bytes()).map_err(|_| Error::InvalidInput {
                what: what(),
                reason: format!("`{name}` is not a valid HTTP header name"),
            })?;
            // The value may be a credential: the error names the header, never the value.
            headers.append(header, value.header_value("", &format!("the value of header `{name}`"))?);
        }
        for (name, value) in defaults {
            if !headers.contains_key(name) {
                headers.insert(name.clone(), value.clone());
            }
        }
        if let Some(key) = &config.api_key {
            let (name, prefix) = auth;
            headers.insert(name, key.header_value(prefix, "API key")?);
        }
        let client = match &config.client {
            Some(c) => c.clone(),
            None => UpstreamClient::new()?,
        };
        Ok(HttpUpstream {
            name: config.name.clone(),
            base_url: config.base_url.trim_end_matches('/').to_owned(),
            headers,
            timeout: config.timeout,
            client,
        })
    }
}

/// A built provider's upstream: where it is, what every request carries, how long it may take, and the
/// client that carries it. Header values print as `Sensitive`.
#[derive(Debug, Clone)]
pub(crate) struct HttpUpstream {
    pub(crate) name: String,
    pub(crate) base_url: String,
    headers: HeaderMap,
    pub(crate) timeout: Duration,
    client: UpstreamClient,
}

impl HttpUpstream {
    /// The base URL + `path`, checked once when the provider is built.
    pub(crate) fn endpoint(&self, path: &str) -> Result<http::Uri> {
        endpoint(&self.name, &self.base_url, path)
    }

    /// A POST of `body` as JSON to `uri` with the upstream's headers.
    pub(crate) fn post(&self, uri: &http::Uri, body: &impl serde::Serialize) -> Result<http::Request<Bytes>> {
        post_json(uri, &self.headers, body)
    }

    /// POSTs `body` to `uri` and reads the JSON answer, all within the timeout.
    pub(crate) async fn call_json<T: DeserializeOwned>(
        &self,
        uri: &http::Uri,
        body: &impl serde::Serialize,
    ) -> Result<T> {
        call_json(&self.name, self.timeout, &self.client, self.post(uri, body)?).await
    }

    /// POSTs `body` to `uri` and reads the answer as a checked chat completion, all within the timeout.
    pub(crate) async fn call_chat_json(
        &self,
        uri: &http::Uri,
        body: &impl serde::Serialize,
    ) -> Result<ChatCompletionJson> {
        call_chat_json(&self.name, self.timeout, &self.client, self.post(uri, body)?).await
    }

    /// POSTs `body` to `uri` and returns the response once its headers arrived (a stream's), within the
    /// timeout; a non-2xx status is an error.
    pub(crate) async fn open(&self, uri: &http::Uri, body: &impl serde::Serialize) -> Result<Response> {
        send(&self.name, self.timeout, &self.client, self.post(uri, body)?).await
    }

    /// Reads a whole JSON body within the timeout.
    pub(crate) async fn read_json<T: DeserializeOwned>(&self, response: Response) -> Result<T> {
        read_json(&self.name, self.timeout, response).await
    }
}

/// `base_url` + `path` as an absolute `http` or `https` URI, checked once when a provider is built.
fn endpoint(provider: &str, base_url: &str, path: &str) -> Result<http::Uri> {
    let invalid = |reason: String| Error::InvalidInput { what: format!("provider `{provider}` base URL"), reason };
    let uri = http::Uri::try_from(format!("{base_url}{path}"))
        .map_err(|e| invalid(format!("`{base_url}` is not a URL: {e}")))?;
    match (uri.scheme_str(), uri.authority()) {
        (Some("http" | "https"), Some(_)) => Ok(uri),
        _ => Err(invalid(format!("`{base_url}` must be an absolute http:// or https:// URL"))),
    }
}

/// A POST of `body` as JSON to `uri` with `headers`.
fn post_json(uri: &http::Uri, headers: &HeaderMap, body: &impl serde::Serialize) -> Result<http::Request<Bytes>> {
    // Most request bodies are a few hundred bytes: one allocation instead of regrowing from serde_json's 128.
    let mut bytes = Vec::with_capacity(512);
    serde_json::to_writer(&mut bytes, body).map_err(|e| Error::backend("request body", e))?;
    let mut request = http::Request::new(Bytes::from(bytes));
    *request.method_mut() = http::Method::POST;
    *request.uri_mut() = uri.clone();
    *request.headers_mut() = headers.clone();
    // Every attempt, retries and fallbacks included, is built here: each carries the trace context.
    crate::trace::insert_upstream_headers(request.headers_mut());
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
async fn send(
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
async fn read_json<T: DeserializeOwned>(provider: &str, timeout: Duration, response: Response) -> Result<T> {
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
async fn call_chat_json(
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

/// `body` as `T`; a body that is not one is an error envelope (a status error) or malformed (a decode error).
pub(crate) fn parse_json<T: DeserializeOwned>(provider: &str, body: &[u8]) -> Result<T> {
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
async fn call_json<T: DeserializeOwned>(
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

/// An upstream's own event stream (OpenAI's Responses events, Anthropic's Messages events) relayed event by
/// event as JSON: `[DONE]` and empty events are skipped, an event whose data is not JSON ends the stream with a
/// decode error, and the stream ends after an event whose `type` `ends` says is the last. Events that end
/// before such an event (a broken connection, silence) end with an error item, never a clean end.
#[cfg_attr(not(any(feature = "openai", feature = "anthropic")), allow(dead_code))]
pub(crate) fn native_event_stream<S>(
    provider: String,
    events: S,
    ends: fn(&str) -> bool,
) -> chitty_core::NativeEventStream
where
    S: Stream<Item = Result<crate::framing::sse::SseEvent>> + Send + 'static,
{
    use futures::StreamExt;
    let state = Some((provider, Box::pin(events)));
    let stream = futures::stream::unfold(state, move |state| async move {
        let (provider, mut events) = state?;
        loop {
            let event = match events.next().await {
                None => {
                    let e = Error::upstream(
                        &provider,
                        UpstreamFailure::Interrupted,
                        "the stream ended before its last event",
                    );
                    return Some((Err(e), None));
                }
                Some(Err(e)) => return Some((Err(e), None)),
                Some(Ok(event)) if event.is_done() || event.data.trim().is_empty() => continue,
                Some(Ok(event)) => event,
            };
            return match serde_json::from_str::<serde_json::Value>(&event.data) {
                Ok(json) => {
                    let last = ends(json.get("type").and_then(serde_json::Value::as_str).unwrap_or_default());
                    Some((Ok(json), (!last).then_some((provider, events))))
                }
                Err(e) => Some((Err(malformed(&provider, "event", e)), None)),
            };
        }
    });
    Box::pin(stream)
}

/// Unix seconds now, for translated responses whose upstream format carries no `created` field.
#[cfg_attr(not(any(feature = "anthropic", feature = "ollama")), allow(dead_code))]
pub(crate) fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use http::header::AUTHORIZATION;

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

    fn builder() -> ProviderBuilder<()> {
        ProviderBuilder::new("p", "http://127.0.0.1:9/v1/", Duration::from_secs(1), ())
    }

    #[test]
    fn keys_and_header_values_are_never_printed() {
        let configured = builder().with_api_key("sk-secret").with_header("x-token", "tok-secret");
        let shown = format!("{configured:?}");
        assert!(!shown.contains("sk-secret") && !shown.contains("tok-secret") && shown.contains("x-token"), "{shown}");
        let upstream = configured.upstream((http::header::AUTHORIZATION, "Bearer "), &[]).unwrap();
        let shown = format!("{upstream:?}");
        assert!(!shown.contains("sk-secret") && !shown.contains("tok-secret") && shown.contains("x-token"), "{shown}");
        let err = builder().with_header("x-token", "sk-secret\n").upstream((AUTHORIZATION, ""), &[]).unwrap_err();
        assert!(!err.to_string().contains("sk-secret") && err.to_string().contains("x-token"), "{err}");
        assert!(builder().with_header("bad header", "v").upstream((AUTHORIZATION, ""), &[]).is_err());
    }

    #[test]
    fn a_header_set_by_the_host_replaces_a_default() {
        let version = (HeaderName::from_static("anthropic-version"), HeaderValue::from_static("2023-06-01"));
        let upstream = builder().upstream((AUTHORIZATION, ""), std::slice::from_ref(&version)).unwrap();
        assert_eq!(upstream.headers["anthropic-version"], "2023-06-01");
        let upstream = builder()
            .with_header("anthropic-version", "2024-01-01")
            .upstream((AUTHORIZATION, ""), std::slice::from_ref(&version))
            .unwrap();
        assert_eq!(upstream.headers.get_all("anthropic-version").iter().collect::<Vec<_>>(), ["2024-01-01"]);
        assert_eq!(upstream.base_url, "http://127.0.0.1:9/v1", "trailing slashes go");
    }
}
