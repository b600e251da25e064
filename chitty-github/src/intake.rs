//! The framework-free webhook intake: a request in, a typed [`IntakeOutcome`] (and its
//! `http::Response`) out.
//!
//! Steps: method, declared size, content type, GitHub headers and the signature header's form,
//! all before a byte of the body is read ([`WebhookIntake::admit`]) → room for the body in the
//! bound on unverified bytes in flight → the body, read under the size cap
//! ([`WebhookIntake::read_body`]) → signature over the raw body → payload is a JSON object →
//! de-duplicate by (delivery GUID, hook) → enqueue through a [`DeliveryQueue`] → 202.
//! [`WebhookIntake::handle_stream`] runs them all on a streamed body (the axum route in
//! `server` uses it); [`WebhookIntake::handle`] takes a body already in memory.
//!
//! Bodies that are not yet verified are what a forger controls, so their bytes are bounded across
//! all requests ([`WebhookIntakeBuilder::unverified_bytes_in_flight`], 64 MiB by default): a
//! request reserves its declared length (or grows its reservation chunk by chunk) before reading,
//! is answered 503 with `Retry-After` at once when the bound is reached, and gives the room back
//! once its body is verified or dropped.
//!
//! ```
//! use std::sync::Arc;
//! use bytes::Bytes;
//! use chitty_github::intake::WebhookIntake;
//! use chitty_github::queue::InProcessQueue;
//! use chitty_github::signature::WebhookSecret;
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let secret = WebhookSecret::new("It's a Secret to Everybody");
//! let (queue, mut deliveries) = InProcessQueue::bounded(1024);
//! let intake = WebhookIntake::builder([secret.clone()]).queue(Arc::new(queue)).build()?;
//!
//! let body = Bytes::from_static(br#"{"zen":"Speak like a human.","hook_id":1}"#);
//! let request = http::Request::post("/api/github/webhooks")
//!     .header("content-type", "application/json")
//!     .header("x-github-event", "ping")
//!     .header("x-github-delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958")
//!     .header("x-hub-signature-256", secret.sign(&body))
//!     .body(body)
//!     .unwrap();
//! let response = intake.handle(request).await.into_response();
//! assert_eq!(response.status(), 202);
//! assert!(deliveries.recv().await.is_some());
//!
//! // A streamed body: headers are checked before the body is polled.
//! let unsigned = http::Request::post("/api/github/webhooks")
//!     .header("content-type", "application/json")
//!     .header("x-github-event", "ping")
//!     .header("x-github-delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0959")
//!     .header("content-length", "20000000")
//!     .body(())
//!     .unwrap();
//! let never_read = futures::stream::pending::<Result<Bytes, std::io::Error>>();
//! let outcome = intake.handle_stream(unsigned.method(), unsigned.headers(), never_read).await;
//! let response = outcome.into_response();
//! assert_eq!(response.status(), 400); // X-Hub-Signature-256 is missing
//! assert_eq!(response.headers()["connection"], "close");
//! # Ok::<(), chitty_github::Error>(())
//! # }).unwrap();
//! ```

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use chitty_core::runtime::SystemClock;
use chitty_core::{BoxError, Clock};
use futures::{Stream, StreamExt};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::delivery::{
    Delivery, HEADER_DELIVERY, HEADER_EVENT, HEADER_HOOK_ID, HEADER_SIGNATURE, HEADER_TARGET_ID, HEADER_TARGET_TYPE,
};
use crate::error::{Error, Result};
use crate::events::PayloadEnvelope;
use crate::idempotency::{Claim, DEFAULT_TTL, IdempotencyStore, MemoryIdempotencyStore};
use crate::queue::DeliveryQueue;
use crate::signature::{SignatureVerifier, WebhookSecret, parse_signature};

/// GitHub caps webhook payloads at 25 MB and does not send larger ones.
pub const DEFAULT_MAX_BODY_BYTES: usize = 25 * 1024 * 1024;

/// Default bound on body bytes held, across all requests, before their signatures are checked.
pub const DEFAULT_UNVERIFIED_BYTES_IN_FLIGHT: usize = 64 * 1024 * 1024;

/// The wait asked of a sender refused for lack of room for unverified bodies (they drain in seconds).
const UNVERIFIED_RETRY_AFTER: Duration = Duration::from_secs(1);

/// Name under which the intake reports queue failures.
const INTAKE: &str = "github-intake";

/// What the intake did with one request.
#[derive(Debug)]
#[must_use]
pub enum IntakeOutcome {
    /// Verified, new, and enqueued.
    Accepted {
        /// The de-duplication key (`<guid>:hook:<id>`).
        key: String,
        /// The route (`pull_request.opened`).
        route: String,
    },
    /// Verified, but already taken: acknowledged and not enqueued again.
    Duplicate {
        /// The de-duplication key.
        key: String,
    },
    /// Refused after the whole body was read; the error says why and maps to the status.
    Rejected(Error),
    /// Refused before the whole body was read (headers already invalid, no room for the body, a
    /// body over the cap or broken mid-way): the response says `Connection: close`, so the server
    /// does not drain the rest.
    RejectedUnread(Error),
}

impl IntakeOutcome {
    /// The HTTP status: 202 for accepted and duplicate deliveries, the error's status otherwise.
    pub fn status(&self) -> StatusCode {
        match self {
            IntakeOutcome::Accepted { .. } | IntakeOutcome::Duplicate { .. } => StatusCode::ACCEPTED,
            IntakeOutcome::Rejected(error) | IntakeOutcome::RejectedUnread(error) => error.status(),
        }
    }

    /// The refusal's error, if the delivery was refused.
    pub fn error(&self) -> Option<&Error> {
        match self {
            IntakeOutcome::Rejected(error) | IntakeOutcome::RejectedUnread(error) => Some(error),
            IntakeOutcome::Accepted { .. } | IntakeOutcome::Duplicate { .. } => None,
        }
    }

    /// The HTTP response: status, a small JSON body, `Retry-After` when the queue or the bound on
    /// unverified bytes is full, and `Connection: close` when the body was left unread.
    pub fn into_response(self) -> Response<Bytes> {
        let status = self.status();
        let close = matches!(self, IntakeOutcome::RejectedUnread(_));
        let (body, retry_after) = match &self {
            IntakeOutcome::Accepted { .. } => (r#"{"status":"accepted"}"#.to_owned(), None),
            IntakeOutcome::Duplicate { .. } => (r#"{"status":"duplicate"}"#.to_owned(), None),
            IntakeOutcome::Rejected(error) | IntakeOutcome::RejectedUnread(error) => {
                let message = match error {
                    // Backend details stay in logs.
                    Error::Backend { backend, .. } => format!("{backend} unavailable"),
                    other => other.to_string(),
                };
                (serde_json::json!({ "error": message }).to_string(), error.retry_after())
            }
        };
        let mut response = Response::new(Bytes::from(body));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(wait) = retry_after {
            // Retry-After is in whole seconds; round up so the sender never comes back early.
            let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
        }
        if close {
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

/// Room held for one request's body in the intake's bound on unverified bytes; given back when
/// dropped (once the body is verified, refused, or abandoned).
#[derive(Debug)]
pub struct BodyReservation {
    semaphore: Arc<Semaphore>,
    /// One permit per reserved byte; `None` while nothing is reserved.
    permit: Option<OwnedSemaphorePermit>,
}

impl BodyReservation {
    /// Bytes reserved.
    pub fn bytes(&self) -> usize {
        self.permit.as_ref().map_or(0, OwnedSemaphorePermit::num_permits)
    }

    /// Grows the reservation to `total` bytes if the bound has room, without waiting.
    fn grow_to(&mut self, total: usize) -> bool {
        let mut missing = total.saturating_sub(self.bytes());
        while missing > 0 {
            // Permits are taken at most u32::MAX at a time; a failed grow drops what it took.
            let step = u32::try_from(missing).unwrap_or(u32::MAX);
            let Ok(permit) = Arc::clone(&self.semaphore).try_acquire_many_owned(step) else {
                return false;
            };
            missing -= permit.num_permits();
            match &mut self.permit {
                Some(held) => held.merge(permit),
                None => self.permit = Some(permit),
            }
        }
        true
    }
}

/// Builds a [`WebhookIntake`].
#[derive(Debug)]
pub struct WebhookIntakeBuilder {
    secrets: Vec<WebhookSecret>,
    queue: Option<Arc<dyn DeliveryQueue>>,
    store: Option<Arc<dyn IdempotencyStore>>,
    clock: Option<Arc<dyn Clock>>,
    dedup_ttl: Duration,
    max_body_bytes: usize,
    unverified_bytes_in_flight: usize,
}

impl WebhookIntakeBuilder {
    /// Where accepted deliveries go (required): an [`crate::queue::InProcessQueue`], a JetStream
    /// queue, or any [`DeliveryQueue`].
    pub fn queue(mut self, queue: Arc<dyn DeliveryQueue>) -> Self {
        self.queue = Some(queue);
        self
    }

    /// The de-duplication store (default: an in-memory store on the system clock).
    pub fn idempotency_store(mut self, store: Arc<dyn IdempotencyStore>) -> Self {
        self.store = Some(store);
        self
    }

    /// The clock stamping `received_at` (default: the system clock).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// How long a delivery key is remembered (default 24 h).
    pub fn dedup_ttl(mut self, ttl: Duration) -> Self {
        self.dedup_ttl = ttl;
        self
    }

    /// The body size cap (default 25 MB, GitHub's own maximum).
    pub fn max_body_bytes(mut self, limit: usize) -> Self {
        self.max_body_bytes = limit;
        self
    }

    /// The bound on body bytes held, across all requests, before their signatures are checked
    /// (default 64 MiB); at least the body cap. Past it, requests are answered 503 with `Retry-After`.
    pub fn unverified_bytes_in_flight(mut self, limit: usize) -> Self {
        self.unverified_bytes_in_flight = limit;
        self
    }

    /// The intake; fails without secrets or a queue, or with a bound on unverified bytes below the body cap.
    pub fn build(self) -> Result<WebhookIntake> {
        let verifier = SignatureVerifier::new(self.secrets)?;
        let queue = self.queue.ok_or_else(|| Error::InvalidConfig {
            reason: "the webhook intake needs a queue for accepted deliveries".into(),
        })?;
        // A semaphore holds at most MAX_PERMITS; no host has that much memory to bound.
        let unverified_limit = self.unverified_bytes_in_flight.min(Semaphore::MAX_PERMITS);
        if unverified_limit < self.max_body_bytes {
            return Err(Error::InvalidConfig {
                reason: format!(
                    "the bound on unverified bytes in flight ({unverified_limit}) is below the body cap ({}): \
                     the largest deliveries could never be taken",
                    self.max_body_bytes
                ),
            });
        }
        let clock = self.clock.unwrap_or_else(|| Arc::new(SystemClock));
        let store = self.store.unwrap_or_else(|| Arc::new(MemoryIdempotencyStore::with_clock(clock.clone())));
        Ok(WebhookIntake {
            verifier,
            queue,
            store,
            clock,
            dedup_ttl: self.dedup_ttl,
            max_body_bytes: self.max_body_bytes,
            unverified: Arc::new(Semaphore::new(unverified_limit)),
            unverified_limit,
        })
    }
}

/// Verifies, de-duplicates and enqueues webhook deliveries. Cheap to share behind an `Arc`.
pub struct WebhookIntake {
    verifier: SignatureVerifier,
    queue: Arc<dyn DeliveryQueue>,
    store: Arc<dyn IdempotencyStore>,
    clock: Arc<dyn Clock>,
    dedup_ttl: Duration,
    max_body_bytes: usize,
    /// One permit per byte of unverified body the intake may hold.
    unverified: Arc<Semaphore>,
    unverified_limit: usize,
}

impl fmt::Debug for WebhookIntake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookIntake")
            .field("verifier", &self.verifier)
            .field("queue", &self.queue)
            .field("store", &self.store)
            .field("dedup_ttl", &self.dedup_ttl)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("unverified_bytes_limit", &self.unverified_limit)
            .field("unverified_bytes_in_flight", &self.unverified_bytes_in_flight())
            .finish_non_exhaustive()
    }
}

/// The body encodings GitHub can be configured to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyEncoding {
    Json,
    Form,
}

/// What the headers of a delivery say, once checked.
struct CheckedHeaders<'h> {
    encoding: BodyEncoding,
    event: &'h str,
    id: &'h str,
    hook_id: Option<&'h str>,
    target_type: Option<&'h str>,
    target_id: Option<&'h str>,
    signature: &'h [u8],
    declared_length: Option<u64>,
}

impl WebhookIntake {
    /// A builder accepting signatures made with any of `secrets` (the current one first).
    pub fn builder(secrets: impl IntoIterator<Item = WebhookSecret>) -> WebhookIntakeBuilder {
        WebhookIntakeBuilder {
            secrets: secrets.into_iter().collect(),
            queue: None,
            store: None,
            clock: None,
            dedup_ttl: DEFAULT_TTL,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            unverified_bytes_in_flight: DEFAULT_UNVERIFIED_BYTES_IN_FLIGHT,
        }
    }

    /// The body size cap in bytes.
    pub fn max_body_bytes(&self) -> usize {
        self.max_body_bytes
    }

    /// The bound on body bytes held before their signatures are checked.
    pub fn unverified_bytes_limit(&self) -> usize {
        self.unverified_limit
    }

    /// Body bytes reserved right now by requests not yet verified.
    pub fn unverified_bytes_in_flight(&self) -> usize {
        self.unverified_limit.saturating_sub(self.unverified.available_permits())
    }

    /// Takes one delivery whose body is still to be read: checks the headers before polling
    /// `body`, reads it within the cap and the bound on unverified bytes, verifies it, gives the
    /// room back, then de-duplicates and enqueues. Never panics; a refusal before the body was
    /// read to its end is an [`IntakeOutcome::RejectedUnread`].
    pub async fn handle_stream<S, E>(&self, method: &Method, headers: &HeaderMap, body: S) -> IntakeOutcome
    where
        S: Stream<Item = std::result::Result<Bytes, E>>,
        E: Into<BoxError>,
    {
        let mut reservation = match self.admit(method, headers) {
            Ok(reservation) => reservation,
            Err(error) => return IntakeOutcome::RejectedUnread(error),
        };
        let body = match self.read_body(&mut reservation, body).await {
            Ok(body) => body,
            Err(error) => return IntakeOutcome::RejectedUnread(error),
        };
        let verified = self.verify(headers, body);
        // Verified or refused, the body is no longer a forger's to grow: its room goes back.
        drop(reservation);
        match verified {
            Ok(delivery) => self.enqueue(delivery).await,
            Err(error) => IntakeOutcome::Rejected(error),
        }
    }

    /// Everything that can be checked before the body is read (method, declared length, content
    /// type, GitHub headers, the signature header's form), then room for the declared length in
    /// the bound on unverified bytes. Fails with [`Error::TooManyUnverifiedBytes`] at once, without
    /// waiting, when there is no room.
    pub fn admit(&self, method: &Method, headers: &HeaderMap) -> Result<BodyReservation> {
        if method != Method::POST {
            return Err(Error::MethodNotAllowed { method: method.to_string() });
        }
        let checked = self.check_headers(headers)?;
        let mut reservation = BodyReservation { semaphore: Arc::clone(&self.unverified), permit: None };
        // At most the cap (checked above), so it fits a usize.
        let declared = checked.declared_length.map_or(0, |length| usize::try_from(length).unwrap_or(usize::MAX));
        if !reservation.grow_to(declared) {
            return Err(self.no_room());
        }
        Ok(reservation)
    }

    /// Reads `body` to its end under the size cap, growing `reservation` for bytes past what it
    /// holds (a chunked body reserves chunk by chunk, and its buffer may briefly hold up to twice
    /// its bytes as it grows). A body that fails mid-way is [`Error::BodyUnreadable`].
    pub async fn read_body<S, E>(&self, reservation: &mut BodyReservation, body: S) -> Result<Bytes>
    where
        S: Stream<Item = std::result::Result<Bytes, E>>,
        E: Into<BoxError>,
    {
        let mut body = std::pin::pin!(body);
        let mut buffer = BytesMut::new();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|error| Error::BodyUnreadable { source: error.into() })?;
            let total = buffer.len().saturating_add(chunk.len());
            if total > self.max_body_bytes {
                return Err(Error::PayloadTooLarge { limit: self.max_body_bytes as u64 });
            }
            if !reservation.grow_to(total) {
                return Err(self.no_room());
            }
            if buffer.is_empty() {
                // The whole reservation at once (the declared length, when there is one): one allocation.
                buffer.reserve(reservation.bytes());
            }
            buffer.extend_from_slice(&chunk);
        }
        Ok(buffer.freeze())
    }

    fn no_room(&self) -> Error {
        tracing::debug!(limit = self.unverified_limit, "unverified webhook bytes at their bound; answering 503");
        Error::TooManyUnverifiedBytes { limit: self.unverified_limit as u64, retry_after: UNVERIFIED_RETRY_AFTER }
    }

    /// Takes one delivery whose body is already in memory. Never panics; every refusal is an
    /// [`IntakeOutcome::Rejected`]. (A body still to be read goes to [`Self::handle_stream`].)
    pub async fn handle(&self, request: Request<Bytes>) -> IntakeOutcome {
        let (parts, body) = request.into_parts();
        if parts.method != Method::POST {
            return IntakeOutcome::Rejected(Error::MethodNotAllowed { method: parts.method.to_string() });
        }
        self.handle_parts(&parts.headers, body).await
    }

    /// Takes one delivery from its headers and raw body (for hosts that have them apart).
    pub async fn handle_parts(&self, headers: &HeaderMap, body: Bytes) -> IntakeOutcome {
        let delivery = match self.verify(headers, body) {
            Ok(delivery) => delivery,
            Err(error) => return IntakeOutcome::Rejected(error),
        };
        self.enqueue(delivery).await
    }

    /// Checks size, content type, headers, signature and payload, without side effects.
    pub fn verify(&self, headers: &HeaderMap, body: Bytes) -> Result<Delivery> {
        if body.len() > self.max_body_bytes {
            return Err(Error::PayloadTooLarge { limit: self.max_body_bytes as u64 });
        }
        let CheckedHeaders { encoding, event, id, hook_id, target_type, target_id, signature, .. } =
            self.check_headers(headers)?;
        self.verifier.verify(&body, signature)?;

        let payload = match encoding {
            BodyEncoding::Json => body,
            BodyEncoding::Form => form_payload(&body)?,
        };
        // The action travels in queue headers: anything but a plain token stays in the payload only.
        let action = PayloadEnvelope::read(&payload)?
            .action
            .filter(|action| is_action_token(action))
            .map(|action| action.into_owned());
        Ok(Delivery {
            id: id.to_owned(),
            event: event.to_owned(),
            action,
            hook_id: hook_id.map(str::to_owned),
            target_type: target_type.map(str::to_owned),
            target_id: target_id.map(str::to_owned),
            payload,
            received_at: self.clock.now(),
        })
    }

    /// The checks that need no body: declared length, content type, GitHub headers, and the
    /// signature header's form (`sha256=` and 64 hex digits).
    fn check_headers<'h>(&self, headers: &'h HeaderMap) -> Result<CheckedHeaders<'h>> {
        let declared_length = declared_length(headers);
        if declared_length.is_some_and(|length| length > self.max_body_bytes as u64) {
            return Err(Error::PayloadTooLarge { limit: self.max_body_bytes as u64 });
        }
        let encoding = body_encoding(headers)?;
        let event = required_header(headers, HEADER_EVENT, "X-GitHub-Event")?;
        check_token(event, "X-GitHub-Event", |b| b.is_ascii_alphanumeric() || b == b'_')?;
        let id = required_header(headers, HEADER_DELIVERY, "X-GitHub-Delivery")?;
        check_token(id, "X-GitHub-Delivery", |b| b.is_ascii_alphanumeric() || b == b'-')?;
        let hook_id = optional_header(headers, HEADER_HOOK_ID, "X-GitHub-Hook-ID")?;
        let target_type = optional_header(headers, HEADER_TARGET_TYPE, "X-GitHub-Hook-Installation-Target-Type")?;
        let target_id = optional_header(headers, HEADER_TARGET_ID, "X-GitHub-Hook-Installation-Target-ID")?;
        let signature = headers.get(HEADER_SIGNATURE).ok_or(Error::MissingSignature)?.as_bytes();
        parse_signature(signature)?;
        Ok(CheckedHeaders { encoding, event, id, hook_id, target_type, target_id, signature, declared_length })
    }

    /// De-duplicates and enqueues a verified delivery.
    pub async fn enqueue(&self, delivery: Delivery) -> IntakeOutcome {
        let key = delivery.dedup_key();
        match self.store.claim(&key, self.dedup_ttl).await {
            Ok(Claim::Claimed) => {}
            Ok(Claim::AlreadyClaimed) => {
                tracing::debug!(key = %key, "duplicate webhook delivery acknowledged");
                return IntakeOutcome::Duplicate { key };
            }
            Err(error) => {
                tracing::warn!(key = %key, error = %error, "idempotency store failed");
                return IntakeOutcome::Rejected(error);
            }
        }
        let route = delivery.route();
        match self.queue.enqueue(delivery.into_message()).await {
            Ok(()) => IntakeOutcome::Accepted { key, route },
            Err(queue_error) => {
                // Not enqueued: give the key back so GitHub's redelivery is taken.
                if let Err(error) = self.store.release(&key).await {
                    tracing::warn!(key = %key, error = %error, "could not release a delivery key");
                }
                // A full queue asks GitHub to come back later; any other refusal is ours, never the sender's fault.
                let error = match queue_error {
                    error @ (Error::Backpressure { .. } | Error::Backend { .. }) => error,
                    other => Error::backend(INTAKE, other),
                };
                tracing::warn!(key = %key, error = %error, "webhook delivery refused by the queue");
                IntakeOutcome::Rejected(error)
            }
        }
    }
}

fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(header::CONTENT_LENGTH)?.to_str().ok()?.trim().parse().ok()
}

fn body_encoding(headers: &HeaderMap) -> Result<BodyEncoding> {
    let unsupported =
        |content_type: &str| Error::UnsupportedContentType { content_type: content_type.chars().take(100).collect() };
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Err(unsupported(""));
    };
    let value = value.to_str().map_err(|_| unsupported("<non-ASCII>"))?;
    let media_type = value.split(';').next().unwrap_or_default().trim();
    if media_type.eq_ignore_ascii_case("application/json") {
        Ok(BodyEncoding::Json)
    } else if media_type.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
        Ok(BodyEncoding::Form)
    } else {
        Err(unsupported(value))
    }
}

fn required_header<'h>(headers: &'h HeaderMap, key: &str, name: &'static str) -> Result<&'h str> {
    optional_header(headers, key, name)?.ok_or(Error::MissingHeader { name })
}

fn optional_header<'h>(headers: &'h HeaderMap, key: &str, name: &'static str) -> Result<Option<&'h str>> {
    let Some(value) = headers.get(key) else {
        return Ok(None);
    };
    let value = value.to_str().map_err(|_| Error::InvalidHeader { name, reason: "not visible ASCII" })?.trim();
    if value.is_empty() {
        return Err(Error::MissingHeader { name });
    }
    if value.len() > 128 {
        return Err(Error::InvalidHeader { name, reason: "longer than 128 characters" });
    }
    Ok(Some(value))
}

/// Event names and GUIDs end up in queue subjects and keys, so only a small alphabet is taken.
fn check_token(value: &str, name: &'static str, allowed: impl Fn(u8) -> bool) -> Result<()> {
    if value.bytes().all(allowed) {
        Ok(())
    } else {
        Err(Error::InvalidHeader { name, reason: "unexpected characters" })
    }
}

/// GitHub's actions are short snake_case words (`opened`, `ready_for_review`).
fn is_action_token(action: &str) -> bool {
    (1..=64).contains(&action.len()) && action.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// The `payload` field of GitHub's `application/x-www-form-urlencoded` body.
fn form_payload(body: &[u8]) -> Result<Bytes> {
    form_urlencoded::parse(body)
        .find(|(key, _)| key == "payload")
        .map(|(_, value)| Bytes::from(value.into_owned()))
        .ok_or_else(|| Error::invalid_payload("the form body has no `payload` field"))
}
