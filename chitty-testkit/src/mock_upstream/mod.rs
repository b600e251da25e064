//! In-process mock upstreams that serve any [`Provider`](chitty_core::Provider) over a real HTTP API, with scriptable faults.
//!
//! - [`MockOpenAi`]: OpenAI's API (`/v1/chat/completions` plain and SSE, `/v1/completions`,
//!   `/v1/embeddings` with `float` and `base64`, `/v1/models`).
//! - [`MockAnthropic`]: Anthropic's Messages API (`/v1/messages` plain and SSE).
//! - [`MockOllama`]: Ollama's native API (`/api/chat` and `/api/generate` with NDJSON streaming, `/api/embed`).
//!
//! Each binds `127.0.0.1` on a random port and stops when its [`MockServer`] is dropped. Requests are
//! counted ([`MockServer::received`]) and, when a test asks with [`MockServer::record_requests`], the latest
//! ones are kept ([`MockServer::requests`]): a mock serving a long-running gateway keeps nothing, so its
//! memory stays flat. [`Faults`] scripts failures for the next requests: an error
//! status in the API's own error envelope with `Retry-After`, slow headers, added latency, a stream cut
//! after some events, a malformed JSON body or a malformed event stream. It also draws faults at a seeded
//! rate ([`Faults::set_error_rate`], [`Faults::set_cut_rate`]), for a flaky upstream under load.
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use std::sync::Arc;
//! use chitty_testkit::mock::MockProvider;
//! use chitty_testkit::mock_upstream::{Fault, MockOpenAi};
//!
//! let server = MockOpenAi::serve(Arc::new(MockProvider::new("mock"))).await?;
//! assert!(server.base_url().starts_with("http://127.0.0.1:"));
//! assert!(server.base_url().ends_with("/v1"));
//! // The next two requests answer 429 with `Retry-After: 2`.
//! server.faults().push_n(Fault::status(429).with_retry_after(std::time::Duration::from_secs(2)), 2);
//! # Ok::<(), chitty_core::Error>(())
//! # }).unwrap();
//! ```

mod anthropic;
mod ollama;
mod openai;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use chitty_core::{Error, Result};
use futures::StreamExt;
use futures::stream::BoxStream;

pub use anthropic::MockAnthropic;
pub use ollama::MockOllama;
pub use openai::MockOpenAi;

/// One scripted failure, applied to one request.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fault {
    /// Answer with this status and the API's error envelope.
    Status {
        /// The HTTP status.
        status: u16,
        /// Sent as `Retry-After` (whole seconds, rounded up) and `retry-after-ms`.
        retry_after: Option<Duration>,
    },
    /// Wait this long before sending the response headers.
    SlowHeaders(Duration),
    /// Drop the connection after this many stream events (or halfway through a non-streamed body).
    CutStream {
        /// Events sent before the cut.
        after_events: usize,
    },
    /// Answer 200 with a JSON body that does not parse.
    MalformedJson,
    /// Send an event that is not valid JSON in the middle of a stream.
    MalformedStream,
    /// Answer a streaming request with one JSON body, as servers that ignore `stream` do (OpenAI mock).
    IgnoreStream,
}

impl Fault {
    /// [`Fault::Status`] without `Retry-After`.
    pub fn status(status: u16) -> Fault {
        Fault::Status { status, retry_after: None }
    }

    /// This fault with `Retry-After` set (only meaningful for [`Fault::Status`]).
    pub fn with_retry_after(self, retry_after: Duration) -> Fault {
        match self {
            Fault::Status { status, .. } => Fault::Status { status, retry_after: Some(retry_after) },
            other => other,
        }
    }
}

#[derive(Debug, Default)]
struct FaultState {
    queue: VecDeque<Fault>,
    latency: Duration,
    event_delay: Duration,
    error_rate: Option<RateFault>,
    cut_rate: Option<RateFault>,
    paced_bodies: bool,
}

/// A fault drawn for each request with probability `rate`, from a seeded generator (same seed, same draws).
#[derive(Debug)]
struct RateFault {
    rate: f64,
    fault: Fault,
    rng: rand::rngs::SmallRng,
}

impl RateFault {
    fn new(rate: f64, fault: Fault, seed: u64) -> Option<RateFault> {
        use rand::SeedableRng;
        // NaN and rates at or below zero mean never; above one, always.
        let rate = if rate.is_nan() { 0.0 } else { rate.min(1.0) };
        (rate > 0.0).then(|| RateFault { rate, fault, rng: rand::rngs::SmallRng::seed_from_u64(seed) })
    }

    fn draw(&mut self) -> Option<Fault> {
        use rand::Rng;
        (self.rng.random::<f64>() < self.rate).then(|| self.fault.clone())
    }
}

/// Scripts faults for a [`MockServer`]; clones share the same script.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    state: Arc<Mutex<FaultState>>,
}

impl Faults {
    fn lock(&self) -> MutexGuard<'_, FaultState> {
        // A poisoned lock only means a test panicked while holding it; the script is still usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Applies `fault` to the next request (after those already scripted).
    pub fn push(&self, fault: Fault) {
        self.lock().queue.push_back(fault);
    }

    /// Applies `fault` to each of the next `times` requests.
    pub fn push_n(&self, fault: Fault, times: usize) {
        let mut state = self.lock();
        for _ in 0..times {
            state.queue.push_back(fault.clone());
        }
    }

    /// Answers the next `times` requests with `status` in the API's error envelope.
    pub fn fail_next(&self, status: u16, times: usize) {
        self.push_n(Fault::status(status), times);
    }

    /// Delays every response's headers by `latency` (until changed).
    pub fn set_latency(&self, latency: Duration) {
        self.lock().latency = latency;
    }

    /// Waits `delay` before each stream event (until changed), for slow streams and cancellation tests.
    pub fn set_event_delay(&self, delay: Duration) {
        self.lock().event_delay = delay;
    }

    /// Fails each request that no scripted fault applies to with `status` (in the API's error envelope), with
    /// probability `rate` (0 to 1; 0 turns it off), drawn from a generator seeded with `seed`.
    pub fn set_error_rate(&self, rate: f64, status: u16, seed: u64) {
        self.lock().error_rate = RateFault::new(rate, Fault::status(status), seed);
    }

    /// Cuts each request that no scripted fault or error rate applies to after `after_events` stream events
    /// ([`Fault::CutStream`]; a non-streamed body is cut halfway), with probability `rate` (0 to 1; 0 turns
    /// it off), drawn from a generator seeded with `seed`.
    pub fn set_cut_rate(&self, rate: f64, after_events: usize, seed: u64) {
        self.lock().cut_rate = RateFault::new(rate, Fault::CutStream { after_events }, seed);
    }

    /// Paces non-streamed answers like streams (until changed): the body waits the event delay once per
    /// completion token, so a plain answer takes as long as the same answer streamed (off by default).
    pub fn set_paced_bodies(&self, paced: bool) {
        self.lock().paced_bodies = paced;
    }

    fn paced_bodies(&self) -> bool {
        self.lock().paced_bodies
    }

    /// Removes every scripted fault, latency and delay.
    pub fn clear(&self) {
        *self.lock() = FaultState::default();
    }

    /// Faults still waiting for a request.
    pub fn pending(&self) -> usize {
        self.lock().queue.len()
    }

    fn take(&self) -> (Option<Fault>, Duration, Duration) {
        let mut state = self.lock();
        let fault = match state.queue.pop_front() {
            Some(fault) => Some(fault),
            None => {
                let error = state.error_rate.as_mut().and_then(RateFault::draw);
                error.or_else(|| state.cut_rate.as_mut().and_then(RateFault::draw))
            }
        };
        (fault, state.latency, state.event_delay)
    }
}

/// A request the mock received.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedRequest {
    /// HTTP method.
    pub method: String,
    /// Path, e.g. `/v1/chat/completions`.
    pub path: String,
    /// Headers, names lower-case.
    pub headers: Vec<(String, String)>,
    /// The JSON body (`null` when empty or not JSON).
    pub body: serde_json::Value,
}

impl RecordedRequest {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// Which API's conventions errors and streams follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flavor {
    OpenAi,
    Anthropic,
    Ollama,
}

/// State shared by a mock server's handlers.
#[derive(Debug)]
struct Shared {
    provider: Arc<dyn chitty_core::Provider>,
    flavor: Flavor,
    faults: Faults,
    recording: Mutex<Recording>,
    received: AtomicU64,
    cancelled_streams: AtomicU64,
    completed_streams: AtomicU64,
    api_key: Option<String>,
    models: Vec<String>,
}

/// A running mock upstream; dropping it stops the server.
#[derive(Debug)]
pub struct MockServer {
    base_url: String,
    shared: Arc<Shared>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl MockServer {
    /// The base URL to give the matching provider or SDK (`http://127.0.0.1:PORT/v1` for OpenAI,
    /// `http://127.0.0.1:PORT` for Anthropic and Ollama).
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The fault script.
    pub fn faults(&self) -> &Faults {
        &self.shared.faults
    }

    /// Keeps the latest `capacity` requests from now on (zero stops recording and forgets them). Off by default,
    /// so that a mock serving many requests holds none of them.
    pub fn record_requests(&self, capacity: usize) {
        let mut recording = lock_recording(&self.shared);
        recording.capacity = capacity;
        while recording.requests.len() > capacity {
            recording.requests.pop_front();
        }
    }

    /// The requests recorded (see [`Self::record_requests`]), oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock_recording(&self.shared).requests.iter().cloned().collect()
    }

    /// The last request recorded (see [`Self::record_requests`]).
    pub fn last_request(&self) -> Option<RecordedRequest> {
        lock_recording(&self.shared).requests.back().cloned()
    }

    /// Requests received so far, recorded or not.
    pub fn received(&self) -> u64 {
        self.shared.received.load(Ordering::SeqCst)
    }

    /// Streams whose client went away before the last event was sent.
    pub fn cancelled_streams(&self) -> u64 {
        self.shared.cancelled_streams.load(Ordering::SeqCst)
    }

    /// Streams sent to the end.
    pub fn completed_streams(&self) -> u64 {
        self.shared.completed_streams.load(Ordering::SeqCst)
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            // The server may already be gone; then there is nothing to stop.
            let _ = shutdown.send(());
        }
    }
}

/// The latest requests, up to `capacity` (zero: recording is off).
#[derive(Debug, Default)]
struct Recording {
    capacity: usize,
    requests: VecDeque<RecordedRequest>,
}

fn lock_recording(shared: &Shared) -> MutexGuard<'_, Recording> {
    shared.recording.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    fn new(
        provider: Arc<dyn chitty_core::Provider>,
        flavor: Flavor,
        api_key: Option<String>,
        models: Vec<String>,
    ) -> Shared {
        Shared {
            provider,
            flavor,
            faults: Faults::default(),
            recording: Mutex::new(Recording::default()),
            received: AtomicU64::new(0),
            cancelled_streams: AtomicU64::new(0),
            completed_streams: AtomicU64::new(0),
            api_key,
            models,
        }
    }

    /// Counts a request, and keeps it when recording is on.
    fn record(&self, method: &Method, uri: &Uri, headers: &HeaderMap, body: &Bytes) {
        self.received.fetch_add(1, Ordering::SeqCst);
        let mut recording = lock_recording(self);
        if recording.capacity == 0 {
            return;
        }
        if recording.requests.len() >= recording.capacity {
            recording.requests.pop_front();
        }
        recording.requests.push_back(RecordedRequest {
            method: method.to_string(),
            path: uri.path().to_owned(),
            headers: headers
                .iter()
                .map(|(n, v)| (n.as_str().to_owned(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
                .collect(),
            body: serde_json::from_slice(body).unwrap_or(serde_json::Value::Null),
        });
    }
}

async fn start(shared: Arc<Shared>, router: Router, base_path: &str) -> Result<MockServer> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (shutdown, stopped) = tokio::sync::oneshot::channel::<()>();
    // Graceful: the listener closes at once (new connections are refused), idle keep-alive connections
    // close, and responses in flight finish.
    // Events go out one small write at a time: without TCP_NODELAY, Nagle and delayed ACKs stall streams.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let server = axum::serve(listener, router).with_graceful_shutdown(async move {
        let _ = stopped.await;
    });
    tokio::spawn(async move {
        let _ = server.await;
    });
    Ok(MockServer { base_url: format!("http://{addr}{base_path}"), shared, shutdown: Some(shutdown) })
}

/// A handler's outcome; the error side is an answer too (an error envelope), so handlers can use `?`.
type Answer = std::result::Result<Response, Response>;

/// A request that passed [`admit`]: its body, and the fault and event delay it drew. As a handler's extractor it
/// records the request, checks the key and applies latency and the next fault before the handler runs.
struct Admitted {
    shared: Arc<Shared>,
    headers: HeaderMap,
    body: Bytes,
    fault: Option<Fault>,
    event_delay: Duration,
}

impl FromRequest<Arc<Shared>> for Admitted {
    type Rejection = Response;

    async fn from_request(request: Request, shared: &Arc<Shared>) -> std::result::Result<Admitted, Response> {
        let (method, uri, headers) = (request.method().clone(), request.uri().clone(), request.headers().clone());
        let body = Bytes::from_request(request, shared).await.map_err(IntoResponse::into_response)?;
        let (fault, event_delay) = admit(shared, &method, &uri, &headers, &body).await?;
        Ok(Admitted { shared: Arc::clone(shared), headers, body, fault, event_delay })
    }
}

impl Admitted {
    /// The backing provider.
    fn provider(&self) -> &dyn chitty_core::Provider {
        self.shared.provider.as_ref()
    }

    /// The body as `T`, or a 400 in the flavor's envelope.
    #[allow(clippy::result_large_err)] // the error is the response itself, sent at once: boxing buys nothing
    fn json<T: serde::de::DeserializeOwned>(&self) -> std::result::Result<T, Response> {
        serde_json::from_slice(&self.body).map_err(|e| self.error(400, &format!("invalid request body: {e}")))
    }

    /// An error with `status` in the flavor's envelope.
    fn error(&self, status: u16, message: &str) -> Response {
        error_response(self.shared.flavor, status, message, None)
    }

    /// An error the backing provider returned, in the flavor's envelope.
    fn failed(&self, error: &Error) -> Response {
        provider_error(self.shared.flavor, error)
    }

    /// `value` as the JSON answer, cut halfway under [`Fault::CutStream`].
    fn answer(&self, value: &impl serde::Serialize) -> Response {
        let response = json_response(value, self.fault.as_ref());
        if self.event_delay.is_zero() || !self.shared.faults.paced_bodies() {
            return response;
        }
        // OpenAI counts `completion_tokens`, Anthropic `output_tokens`, Ollama `eval_count`.
        let tokens = serde_json::to_value(value)
            .ok()
            .and_then(|v| {
                ["/usage/completion_tokens", "/usage/output_tokens", "/eval_count"]
                    .iter()
                    .find_map(|p| v.pointer(p).and_then(serde_json::Value::as_u64))
            })
            .unwrap_or(1);
        let wait = self.event_delay.saturating_mul(u32::try_from(tokens).unwrap_or(u32::MAX));
        let (parts, body) = response.into_parts();
        let delayed = futures::stream::once(async move {
            tokio::time::sleep(wait).await;
            body.into_data_stream()
        })
        .flatten();
        Response::from_parts(parts, Body::from_stream(delayed))
    }
}

/// Records the request, applies latency, checks the key and draws the next fault: the fault (unless it answers
/// at once) and the delay before each stream event.
async fn admit(
    shared: &Shared,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
) -> std::result::Result<(Option<Fault>, Duration), Response> {
    shared.record(method, uri, headers, body);
    let (fault, latency, event_delay) = shared.faults.take();
    let mut wait = latency;
    if let Some(Fault::SlowHeaders(d)) = &fault {
        wait += *d;
    }
    if !wait.is_zero() {
        tokio::time::sleep(wait).await;
    }
    if let Some(expected) = &shared.api_key {
        let given = match shared.flavor {
            Flavor::Anthropic => headers.get("x-api-key").and_then(|v| v.to_str().ok()).map(str::to_owned),
            _ => headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::to_owned),
        };
        if given.as_deref() != Some(expected.as_str()) {
            return Err(error_response(shared.flavor, 401, "invalid API key", None));
        }
    }
    match fault {
        Some(Fault::Status { status, retry_after }) => {
            Err(error_response(shared.flavor, status, &format!("mock fault: status {status}"), retry_after))
        }
        Some(Fault::MalformedJson) => {
            Err(raw_response(200, "application/json", Bytes::from_static(b"{\"id\": \"broken\", \"choices\": [")))
        }
        other => Ok((other, event_delay)),
    }
}

/// An error in the flavor's envelope, with `Retry-After` when given.
fn error_response(flavor: Flavor, status: u16, message: &str, retry_after: Option<Duration>) -> Response {
    let body = match flavor {
        Flavor::OpenAi => {
            let kind = match status {
                400 | 404 | 413 | 422 => "invalid_request_error",
                401 => "authentication_error",
                429 => "rate_limit_error",
                _ => "server_error",
            };
            serde_json::json!({"error": {"message": message, "type": kind, "param": null, "code": null}})
        }
        Flavor::Anthropic => {
            let kind = match status {
                400 | 413 | 422 => "invalid_request_error",
                401 => "authentication_error",
                403 => "permission_error",
                404 => "not_found_error",
                429 => "rate_limit_error",
                529 => "overloaded_error",
                _ => "api_error",
            };
            serde_json::json!({"type": "error", "error": {"type": kind, "message": message}})
        }
        Flavor::Ollama => serde_json::json!({"error": message}),
    };
    let mut response = raw_response(status, "application/json", Bytes::from(body.to_string()));
    if let Some(after) = retry_after {
        let secs = after.as_millis().div_ceil(1000);
        let headers = response.headers_mut();
        if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
            headers.insert(header::RETRY_AFTER, v);
        }
        if let Ok(v) = HeaderValue::from_str(&after.as_millis().to_string()) {
            headers.insert("retry-after-ms", v);
        }
    }
    response
}

/// An error the backing provider returned, in the flavor's envelope; an upstream status is echoed as is.
fn provider_error(flavor: Flavor, error: &Error) -> Response {
    let status = match error {
        Error::Upstream { status: Some(s), .. } => *s,
        other => other.status(),
    };
    let message = match error {
        Error::Upstream { message, .. } => message.clone(),
        other => other.to_envelope().error.message,
    };
    error_response(flavor, status, &message, error.retry_after())
}

fn raw_response(status: u16, content_type: &'static str, body: Bytes) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, [(header::CONTENT_TYPE, content_type)], body).into_response()
}

/// A complete JSON answer, or half of it and a dropped connection under [`Fault::CutStream`].
fn json_response(value: &impl serde::Serialize, fault: Option<&Fault>) -> Response {
    let body = match serde_json::to_vec(value) {
        Ok(b) => Bytes::from(b),
        Err(e) => return raw_response(500, "text/plain", Bytes::from(e.to_string())),
    };
    if let Some(Fault::CutStream { .. }) = fault {
        let half = body.slice(..body.len() / 2);
        let parts: Vec<std::io::Result<Bytes>> =
            vec![Ok(half), Err(std::io::Error::other("mock fault: connection cut"))];
        let mut response = Body::from_stream(futures::stream::iter(parts)).into_response();
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        return response;
    }
    raw_response(200, "application/json", body)
}

/// Marks a stream cancelled when its body is dropped before the end.
struct StreamGuard {
    shared: Arc<Shared>,
    finished: bool,
}

impl StreamGuard {
    fn mark_finished(&mut self) {
        self.finished = true;
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        let counter = if self.finished { &self.shared.completed_streams } else { &self.shared.cancelled_streams };
        counter.fetch_add(1, Ordering::SeqCst);
    }
}

/// A streamed answer from ready-framed events (`data: …\n\n` or NDJSON lines), with the stream faults
/// applied: a delay before each event, a garbage event after the first, a cut after some events.
fn stream_response(frames: BoxStream<'static, Bytes>, admitted: Admitted, content_type: &'static str) -> Response {
    let Admitted { shared, fault, event_delay, .. } = admitted;
    let garbage: Option<Bytes> = match (&fault, shared.flavor) {
        (Some(Fault::MalformedStream), Flavor::Ollama) => Some(Bytes::from_static(b"{\"message\": {\"content\": \n")),
        (Some(Fault::MalformedStream), _) => Some(Bytes::from_static(b"data: {\"choices\": [{\"delta\": \n\n")),
        _ => None,
    };
    let cut_after = match fault {
        Some(Fault::CutStream { after_events }) => Some(after_events),
        _ => None,
    };
    struct State {
        frames: BoxStream<'static, Bytes>,
        sent: usize,
        garbage: Option<Bytes>,
        cut_after: Option<usize>,
        delay: Duration,
        guard: StreamGuard,
        ended: bool,
    }
    let state = State {
        frames,
        sent: 0,
        garbage,
        cut_after,
        delay: event_delay,
        guard: StreamGuard { shared, finished: false },
        ended: false,
    };
    let body = futures::stream::unfold(state, |mut st| async move {
        if st.ended {
            return None;
        }
        if st.cut_after.is_some_and(|n| st.sent >= n) {
            st.ended = true;
            // Let hyper flush the headers and events so far, so that the cut lands mid-body.
            tokio::time::sleep(Duration::from_millis(20)).await;
            // An error from the body stream makes hyper drop the connection without ending the response.
            return Some((Err(std::io::Error::other("mock fault: stream cut")), st));
        }
        if st.sent == 1
            && let Some(g) = st.garbage.take()
        {
            st.sent += 1;
            return Some((Ok(g), st));
        }
        if !st.delay.is_zero() {
            tokio::time::sleep(st.delay).await;
        }
        match st.frames.next().await {
            Some(frame) => {
                st.sent += 1;
                Some((Ok(frame), st))
            }
            None => {
                st.guard.mark_finished();
                None
            }
        }
    });
    let mut response = Body::from_stream(body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// An SSE frame holding `data: <json>`.
fn sse_frame(event: Option<&str>, value: &impl serde::Serialize) -> Bytes {
    let json = serde_json::to_string(value).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
    match event {
        Some(name) => Bytes::from(format!("event: {name}\ndata: {json}\n\n")),
        None => Bytes::from(format!("data: {json}\n\n")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draws(faults: &Faults, n: usize) -> Vec<Option<Fault>> {
        (0..n).map(|_| faults.take().0).collect()
    }

    #[test]
    fn error_rate_is_seeded_and_near_its_rate() {
        let faults = Faults::default();
        faults.set_error_rate(0.3, 503, 7);
        let first = draws(&faults, 10_000);
        let errors = first.iter().filter(|f| **f == Some(Fault::status(503))).count();
        assert!((2_700..3_300).contains(&errors), "{errors} errors in 10,000 at 30 %");
        assert_eq!(first.iter().filter(|f| f.is_none()).count(), 10_000 - errors, "only errors are drawn");
        faults.set_error_rate(0.3, 503, 7);
        assert_eq!(draws(&faults, 10_000), first, "the same seed draws the same faults");
        faults.set_error_rate(0.0, 503, 7);
        assert!(draws(&faults, 1_000).iter().all(Option::is_none), "rate 0 turns it off");
    }

    /// POSTs a chat request over a raw connection; returns the whole response and how long it took.
    async fn raw_chat(server: &MockServer) -> (String, Duration) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = server.base_url().trim_start_matches("http://").trim_end_matches("/v1").to_owned();
        let body = r#"{"model":"m","messages":[{"role":"user","content":"pace this answer"}]}"#;
        let started = std::time::Instant::now();
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let head = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nhost: mock\r\ncontent-type: application/json\r\n\
             content-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        tcp.write_all(head.as_bytes()).await.unwrap();
        let mut out = String::new();
        tcp.read_to_string(&mut out).await.unwrap();
        (out, started.elapsed())
    }

    #[tokio::test]
    async fn paced_bodies_wait_the_event_delay_per_completion_token() {
        let server =
            crate::mock_upstream::MockOpenAi::serve(Arc::new(crate::mock::MockProvider::new("mock"))).await.unwrap();
        server.faults().set_event_delay(Duration::from_millis(50));
        let (plain, quick) = raw_chat(&server).await;
        server.faults().set_paced_bodies(true);
        let (paced, slow) = raw_chat(&server).await;
        let tokens = |text: &str| -> u64 {
            let at = text.find("\"completion_tokens\":").expect("usage in the answer") + 20;
            text[at..].chars().take_while(char::is_ascii_digit).collect::<String>().parse().unwrap()
        };
        assert_eq!(tokens(&plain), tokens(&paced), "pacing changes the timing, not the answer");
        let n = u32::try_from(tokens(&paced)).unwrap();
        assert!(n >= 6, "the mock answers at least six words");
        assert!(slow >= Duration::from_millis(50) * n, "{slow:?} for {n} tokens at 50 ms");
        assert!(quick < Duration::from_millis(50) * n, "unpaced plain answers do not wait: {quick:?}");
    }

    #[test]
    fn scripted_faults_come_first_then_errors_then_cuts() {
        let faults = Faults::default();
        faults.set_cut_rate(1.0, 4, 1);
        faults.push(Fault::MalformedJson);
        assert_eq!(faults.take().0, Some(Fault::MalformedJson));
        assert_eq!(faults.take().0, Some(Fault::CutStream { after_events: 4 }));
        faults.set_error_rate(1.0, 500, 1);
        assert_eq!(faults.take().0, Some(Fault::status(500)), "an error drawn wins over a cut");
        faults.set_error_rate(f64::NAN, 500, 1);
        assert_eq!(faults.take().0, Some(Fault::CutStream { after_events: 4 }), "a NaN rate never fails");
        faults.clear();
        assert_eq!(faults.take().0, None, "clear removes the rates too");
    }
}
