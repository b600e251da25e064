//! The framework-free webhook intake: `http::Request<Bytes>` in, a typed [`IntakeOutcome`] (and
//! its `http::Response`) out.
//!
//! Steps: size cap → content type → GitHub headers → signature over the raw body → payload is a
//! JSON object → de-duplicate by (delivery GUID, hook) → enqueue through an [`EventSink`] → 202.
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
//! let intake = WebhookIntake::builder([secret.clone()]).sink(Arc::new(queue)).build()?;
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
//! # Ok::<(), chitty_github::Error>(())
//! # }).unwrap();
//! ```

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chitty_core::{Clock, Event, EventSink};
use chitty_providers::runtime::SystemClock;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};

use crate::delivery::{
    Delivery, HEADER_DELIVERY, HEADER_EVENT, HEADER_HOOK_ID, HEADER_SIGNATURE, HEADER_TARGET_ID, HEADER_TARGET_TYPE,
};
use crate::error::{Error, Result};
use crate::events::PayloadEnvelope;
use crate::idempotency::{Claim, DEFAULT_TTL, IdempotencyStore, MemoryIdempotencyStore};
use crate::signature::{SignatureVerifier, WebhookSecret};

/// GitHub caps webhook payloads at 25 MB and does not send larger ones.
pub const DEFAULT_MAX_BODY_BYTES: usize = 25 * 1024 * 1024;

/// Name under which the intake reports sink and store failures.
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
    /// Refused; the error says why and maps to the status.
    Rejected(Error),
}

impl IntakeOutcome {
    /// The HTTP status: 202 for accepted and duplicate deliveries, the error's status otherwise.
    pub fn status(&self) -> StatusCode {
        match self {
            IntakeOutcome::Accepted { .. } | IntakeOutcome::Duplicate { .. } => StatusCode::ACCEPTED,
            IntakeOutcome::Rejected(error) => error.status(),
        }
    }

    /// The HTTP response: status, a small JSON body, and `Retry-After` when the queue is full.
    pub fn into_response(self) -> Response<Bytes> {
        let status = self.status();
        let (body, retry_after) = match &self {
            IntakeOutcome::Accepted { .. } => (r#"{"status":"accepted"}"#.to_owned(), None),
            IntakeOutcome::Duplicate { .. } => (r#"{"status":"duplicate"}"#.to_owned(), None),
            IntakeOutcome::Rejected(error) => {
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
        response
    }
}

/// Builds a [`WebhookIntake`].
#[derive(Debug)]
pub struct WebhookIntakeBuilder {
    secrets: Vec<WebhookSecret>,
    sink: Option<Arc<dyn EventSink>>,
    store: Option<Arc<dyn IdempotencyStore>>,
    clock: Option<Arc<dyn Clock>>,
    dedup_ttl: Duration,
    max_body_bytes: usize,
}

impl WebhookIntakeBuilder {
    /// Where accepted deliveries go (required): an [`crate::queue::InProcessQueue`], a JetStream
    /// queue, or any [`EventSink`].
    pub fn sink(mut self, sink: Arc<dyn EventSink>) -> Self {
        self.sink = Some(sink);
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

    /// The intake; fails without secrets or a sink.
    pub fn build(self) -> Result<WebhookIntake> {
        let verifier = SignatureVerifier::new(self.secrets)?;
        let sink = self.sink.ok_or_else(|| Error::InvalidConfig {
            reason: "the webhook intake needs a sink for accepted deliveries".into(),
        })?;
        let clock = self.clock.unwrap_or_else(|| Arc::new(SystemClock));
        let store = self.store.unwrap_or_else(|| Arc::new(MemoryIdempotencyStore::with_clock(clock.clone())));
        Ok(WebhookIntake {
            verifier,
            sink,
            store,
            clock,
            dedup_ttl: self.dedup_ttl,
            max_body_bytes: self.max_body_bytes,
        })
    }
}

/// Verifies, de-duplicates and enqueues webhook deliveries. Cheap to share behind an `Arc`.
pub struct WebhookIntake {
    verifier: SignatureVerifier,
    sink: Arc<dyn EventSink>,
    store: Arc<dyn IdempotencyStore>,
    clock: Arc<dyn Clock>,
    dedup_ttl: Duration,
    max_body_bytes: usize,
}

impl fmt::Debug for WebhookIntake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookIntake")
            .field("verifier", &self.verifier)
            .field("sink", &self.sink)
            .field("store", &self.store)
            .field("dedup_ttl", &self.dedup_ttl)
            .field("max_body_bytes", &self.max_body_bytes)
            .finish_non_exhaustive()
    }
}

/// The body encodings GitHub can be configured to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyEncoding {
    Json,
    Form,
}

impl WebhookIntake {
    /// A builder accepting signatures made with any of `secrets` (the current one first).
    pub fn builder(secrets: impl IntoIterator<Item = WebhookSecret>) -> WebhookIntakeBuilder {
        WebhookIntakeBuilder {
            secrets: secrets.into_iter().collect(),
            sink: None,
            store: None,
            clock: None,
            dedup_ttl: DEFAULT_TTL,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
        }
    }

    /// The body size cap in bytes.
    pub fn max_body_bytes(&self) -> usize {
        self.max_body_bytes
    }

    /// Takes one delivery. Never panics; every refusal is an [`IntakeOutcome::Rejected`].
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
        let limit = self.max_body_bytes;
        let too_large = || Error::PayloadTooLarge { limit: limit as u64 };
        if declared_length(headers).is_some_and(|length| length > limit as u64) {
            return Err(too_large());
        }
        if body.len() > limit {
            return Err(too_large());
        }
        let encoding = body_encoding(headers)?;
        let event = required_header(headers, HEADER_EVENT, "X-GitHub-Event")?;
        check_token(event, "X-GitHub-Event", |b| b.is_ascii_alphanumeric() || b == b'_')?;
        let id = required_header(headers, HEADER_DELIVERY, "X-GitHub-Delivery")?;
        check_token(id, "X-GitHub-Delivery", |b| b.is_ascii_alphanumeric() || b == b'-')?;
        let hook_id = optional_header(headers, HEADER_HOOK_ID, "X-GitHub-Hook-ID")?;
        let target_type = optional_header(headers, HEADER_TARGET_TYPE, "X-GitHub-Hook-Installation-Target-Type")?;
        let target_id = optional_header(headers, HEADER_TARGET_ID, "X-GitHub-Hook-Installation-Target-ID")?;
        let signature = headers.get(HEADER_SIGNATURE).ok_or(Error::MissingSignature)?;
        self.verifier.verify(&body, signature.as_bytes())?;

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
        match self.sink.record(Event::Message(delivery.into_message())).await {
            Ok(()) => IntakeOutcome::Accepted { key, route },
            Err(sink_error) => {
                // Not enqueued: give the key back so GitHub's redelivery is taken.
                if let Err(error) = self.store.release(&key).await {
                    tracing::warn!(key = %key, error = %error, "could not release a delivery key");
                }
                let error = Error::from_sink(INTAKE, sink_error);
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
