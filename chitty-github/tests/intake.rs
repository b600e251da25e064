//! The framework-free intake: every status of the contract, de-duplication, backpressure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chitty_core::{ManualClock, Timestamp};
use chitty_github::Error;
use chitty_github::delivery::Delivery;
use chitty_github::idempotency::MemoryIdempotencyStore;
use chitty_github::intake::{IntakeOutcome, WebhookIntake};
use chitty_github::queue::{DeliveryQueue, InProcessQueue, QueueReceiver};
use chitty_github::signature::WebhookSecret;
use common::{fixture, secret, signed_builder, signed_request};
use http::StatusCode;

const GUID: &str = "72d3162e-cc78-11e3-81ab-4c9367dc0958";

fn intake_with(capacity: usize, clock: ManualClock) -> (WebhookIntake, QueueReceiver) {
    let (queue, receiver) = InProcessQueue::bounded(capacity);
    let intake = WebhookIntake::builder([secret()])
        .queue(Arc::new(queue.with_retry_after(Duration::from_millis(1500))))
        .clock(Arc::new(clock))
        .max_body_bytes(64 * 1024)
        .build()
        .unwrap();
    (intake, receiver)
}

fn intake() -> (WebhookIntake, QueueReceiver) {
    intake_with(16, ManualClock::new(Timestamp(1_700_000_000_000)))
}

async fn status(intake: &WebhookIntake, request: http::Request<Bytes>) -> StatusCode {
    intake.handle(request).await.status()
}

#[tokio::test]
async fn a_signed_delivery_is_accepted_and_enqueued_with_its_headers() {
    let (intake, mut receiver) = intake();
    let body = fixture("pull_request.opened.json");
    let outcome = intake.handle(signed_request("pull_request", GUID, body.clone())).await;
    let IntakeOutcome::Accepted { key, route } = &outcome else { panic!("{outcome:?}") };
    assert_eq!(route, "pull_request.opened");
    assert_eq!(key, &format!("{GUID}:hook:109948940"));
    let response = outcome.into_response();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    assert_eq!(response.headers()["content-type"], "application/json");

    let message = receiver.recv().await.unwrap();
    assert_eq!(message.subject, "github.pull_request");
    let delivery = Delivery::from_message(&message).unwrap();
    assert_eq!(delivery.id, GUID);
    assert_eq!(delivery.action.as_deref(), Some("opened"));
    assert_eq!(delivery.target_id.as_deref(), Some("186853002"));
    assert_eq!(delivery.payload, body);
    assert_eq!(delivery.received_at, Timestamp(1_700_000_000_000));
}

#[tokio::test]
async fn missing_headers_and_signature_are_400() {
    let (intake, mut receiver) = intake();
    let body = fixture("ping.json");
    for header in ["x-github-event", "x-github-delivery", "x-hub-signature-256"] {
        let mut request = signed_request("ping", GUID, body.clone());
        request.headers_mut().remove(header);
        let outcome = intake.handle(request).await;
        assert_eq!(outcome.status(), StatusCode::BAD_REQUEST, "{header}: {outcome:?}");
    }
    let mut request = signed_request("ping", GUID, body.clone());
    request.headers_mut().insert("x-github-event", "pull request".parse().unwrap());
    assert_eq!(status(&intake, request).await, StatusCode::BAD_REQUEST);
    receiver.close();
    assert!(receiver.recv().await.is_none(), "nothing was enqueued");
}

#[tokio::test]
async fn bad_signatures_are_401() {
    let (intake, _receiver) = intake();
    let body = fixture("ping.json");
    let wrong_secret = WebhookSecret::new("not the secret").sign(&body);
    let truncated = secret().sign(&body)[..70].to_owned();
    for signature in [wrong_secret.as_str(), truncated.as_str(), "sha1=abc", "sha256="] {
        let request =
            signed_builder("ping", GUID, &body).header("x-hub-signature-256", signature).body(body.clone()).unwrap();
        // `header` appends; keep only the bad value.
        let (mut parts, body) = request.into_parts();
        parts.headers.insert("x-hub-signature-256", signature.parse().unwrap());
        let request = http::Request::from_parts(parts, body);
        assert_eq!(status(&intake, request).await, StatusCode::UNAUTHORIZED, "{signature}");
    }
    // A body changed after signing.
    let mut request = signed_request("ping", GUID, body.clone());
    *request.body_mut() = Bytes::from(body.iter().copied().rev().collect::<Vec<u8>>());
    assert_eq!(status(&intake, request).await, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn an_unparseable_payload_is_400_even_when_signed() {
    let (intake, _receiver) = intake();
    for body in [&b"{\"zen\":"[..], b"[1,2,3]", b"\"just a string\"", b"", b"{\"action\":7}"] {
        let request = signed_request("ping", GUID, Bytes::copy_from_slice(body));
        let outcome = intake.handle(request).await;
        assert!(matches!(outcome, IntakeOutcome::Rejected(Error::InvalidPayload { .. })), "{outcome:?}");
        assert_eq!(outcome.status(), StatusCode::BAD_REQUEST);
    }
}

#[tokio::test]
async fn bodies_over_the_cap_are_413() {
    let (intake, _receiver) = intake();
    let body = Bytes::from(vec![b' '; 64 * 1024 + 1]);
    assert_eq!(status(&intake, signed_request("ping", GUID, body)).await, StatusCode::PAYLOAD_TOO_LARGE);
    // A declared length over the cap is refused before anything else is looked at.
    let request =
        http::Request::post("/").header("content-length", (64 * 1024 + 1).to_string()).body(Bytes::new()).unwrap();
    assert_eq!(status(&intake, request).await, StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn content_types_other_than_json_and_form_are_415() {
    let (intake, _receiver) = intake();
    let body = fixture("ping.json");
    for content_type in [None, Some("text/plain"), Some("application/xml"), Some("multipart/form-data")] {
        let mut request = signed_request("ping", GUID, body.clone());
        request.headers_mut().remove("content-type");
        if let Some(value) = content_type {
            request.headers_mut().insert("content-type", value.parse().unwrap());
        }
        assert_eq!(status(&intake, request).await, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{content_type:?}");
    }
    let mut request = signed_request("ping", GUID, body);
    request.headers_mut().insert("content-type", "Application/JSON; charset=utf-8".parse().unwrap());
    assert_eq!(status(&intake, request).await, StatusCode::ACCEPTED);
}

#[tokio::test]
async fn the_form_encoding_is_accepted_and_signed_over_the_raw_form() {
    let (intake, mut receiver) = intake();
    let json = fixture("issues.opened.json");
    let form: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("payload", std::str::from_utf8(&json).unwrap())
        .finish();
    let body = Bytes::from(form);
    let request = signed_builder("issues", GUID, &body)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body.clone())
        .unwrap();
    let (mut parts, request_body) = request.into_parts();
    parts.headers.insert("content-type", "application/x-www-form-urlencoded".parse().unwrap());
    let outcome = intake.handle(http::Request::from_parts(parts, request_body)).await;
    assert!(matches!(&outcome, IntakeOutcome::Accepted { route, .. } if route == "issues.opened"), "{outcome:?}");
    let delivery = Delivery::from_message(&receiver.recv().await.unwrap()).unwrap();
    assert_eq!(delivery.payload, json, "the queue carries the JSON, not the form");

    let no_payload = Bytes::from_static(b"other=1");
    let mut request = signed_request("issues", "another-guid", no_payload);
    request.headers_mut().insert("content-type", "application/x-www-form-urlencoded".parse().unwrap());
    assert_eq!(status(&intake, request).await, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn duplicates_are_acknowledged_once_per_hook_and_forgotten_after_the_ttl() {
    let clock = ManualClock::new(Timestamp(0));
    let (intake, mut receiver) = intake_with(16, clock.clone());
    let body = fixture("ping.json");
    assert!(matches!(intake.handle(signed_request("ping", GUID, body.clone())).await, IntakeOutcome::Accepted { .. }));
    let again = intake.handle(signed_request("ping", GUID, body.clone())).await;
    assert!(matches!(again, IntakeOutcome::Duplicate { .. }));
    assert_eq!(again.status(), StatusCode::ACCEPTED);

    // GitHub reuses the GUID when one event goes to several hooks: each hook's delivery counts.
    let mut other_hook = signed_request("ping", GUID, body.clone());
    other_hook.headers_mut().insert("x-github-hook-id", "2".parse().unwrap());
    assert!(matches!(intake.handle(other_hook).await, IntakeOutcome::Accepted { .. }));

    clock.advance(Duration::from_secs(24 * 60 * 60));
    assert!(matches!(intake.handle(signed_request("ping", GUID, body)).await, IntakeOutcome::Accepted { .. }));
    receiver.close();
    let mut enqueued = 0;
    while receiver.recv().await.is_some() {
        enqueued += 1;
    }
    assert_eq!(enqueued, 3);
}

#[tokio::test]
async fn a_full_queue_is_503_with_retry_after_and_the_delivery_can_be_redelivered() {
    let (intake, mut receiver) = intake_with(1, ManualClock::new(Timestamp(0)));
    let body = fixture("ping.json");
    assert_eq!(status(&intake, signed_request("ping", "first", body.clone())).await, StatusCode::ACCEPTED);
    let refused = intake.handle(signed_request("ping", "second", body.clone())).await;
    assert!(matches!(refused, IntakeOutcome::Rejected(Error::Backpressure { .. })), "{refused:?}");
    let response = refused.into_response();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()["retry-after"], "2", "1.5 s rounds up");

    receiver.recv().await.unwrap();
    // The refused delivery's key was released, so GitHub's redelivery is taken, not called a duplicate.
    let retried = intake.handle(signed_request("ping", "second", body)).await;
    assert!(matches!(retried, IntakeOutcome::Accepted { .. }), "{retried:?}");
}

/// A queue that refuses every message as if it were malformed.
#[derive(Debug)]
struct RefusingQueue;

#[async_trait::async_trait]
impl DeliveryQueue for RefusingQueue {
    async fn enqueue(&self, _message: chitty_github::queue::Message) -> chitty_github::Result<()> {
        Err(Error::invalid_payload("the queue refused the message id"))
    }
}

#[tokio::test]
async fn a_queue_refusal_other_than_backpressure_is_503_never_blamed_on_the_sender() {
    let intake = WebhookIntake::builder([secret()]).queue(Arc::new(RefusingQueue)).build().unwrap();
    let refused = intake.handle(signed_request("ping", GUID, fixture("ping.json"))).await;
    assert!(matches!(refused, IntakeOutcome::Rejected(Error::Backend { .. })), "{refused:?}");
    let response = refused.into_response();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(!response.headers().contains_key("retry-after"));
}

#[tokio::test]
async fn other_methods_are_405_and_config_errors_are_typed() {
    let (intake, _receiver) = intake();
    let request = http::Request::get("/").body(Bytes::new()).unwrap();
    assert_eq!(status(&intake, request).await, StatusCode::METHOD_NOT_ALLOWED);
    let (queue, _r) = InProcessQueue::bounded(1);
    assert!(matches!(WebhookIntake::builder([]).queue(Arc::new(queue)).build(), Err(Error::InvalidConfig { .. })));
    assert!(matches!(WebhookIntake::builder([secret()]).build(), Err(Error::InvalidConfig { .. })));
    assert!(!format!("{intake:?}").contains(common::SECRET));
}

#[tokio::test]
async fn memory_store_passes_the_conformance_checks() {
    let clock = ManualClock::new(Timestamp(0));
    let store = Arc::new(MemoryIdempotencyStore::with_clock(Arc::new(clock.clone())));
    let ttl = Duration::from_secs(60);
    common::idempotency_conformance(store.clone(), ttl, || {
        clock.advance(ttl);
        async {}
    })
    .await;
}

#[tokio::test]
async fn memory_store_sweeps_expired_keys() {
    let clock = ManualClock::new(Timestamp(0));
    let store = MemoryIdempotencyStore::with_clock(Arc::new(clock.clone()));
    use chitty_github::idempotency::IdempotencyStore;
    for i in 0..5_000 {
        store.claim(&format!("k{i}"), Duration::from_secs(1)).await.unwrap();
        clock.advance(Duration::from_millis(10));
    }
    assert!(store.len() < 2_100, "expired keys were swept: {}", store.len());
}

#[tokio::test]
async fn an_action_that_is_not_a_plain_word_stays_out_of_the_queue_headers() {
    let (intake, mut receiver) = intake();
    let body = Bytes::from_static(b"{\"action\":\"opened\\r\\nx-injected: 1\",\"zen\":\"z\"}");
    let outcome = intake.handle(signed_request("star", GUID, body.clone())).await;
    assert!(matches!(&outcome, IntakeOutcome::Accepted { route, .. } if route == "star"), "{outcome:?}");
    let message = receiver.recv().await.unwrap();
    assert!(message.headers.iter().all(|(name, value)| name != "x-chitty-action" && !value.contains('\n')));
    assert_eq!(message.payload, body, "the payload keeps it");
}

/// A body that fails the test if it is ever polled.
fn never_polled() -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> {
    futures::stream::poll_fn(|_| panic!("the body was read"))
}

#[tokio::test]
async fn streamed_requests_with_invalid_headers_are_refused_before_the_body_is_read() {
    let (intake, _receiver) = intake();
    let body = fixture("ping.json");
    let cases: [(&str, Option<&str>, StatusCode); 7] = [
        ("x-github-event", None, StatusCode::BAD_REQUEST),
        ("x-github-delivery", None, StatusCode::BAD_REQUEST),
        ("x-hub-signature-256", None, StatusCode::BAD_REQUEST),
        ("x-hub-signature-256", Some("sha256=abc"), StatusCode::UNAUTHORIZED),
        ("x-hub-signature-256", Some("sha1=0123456789012345678901234567890123456789"), StatusCode::UNAUTHORIZED),
        ("content-type", Some("text/plain"), StatusCode::UNSUPPORTED_MEDIA_TYPE),
        ("content-length", Some("65537"), StatusCode::PAYLOAD_TOO_LARGE),
    ];
    for (name, value, status) in cases {
        let mut request = signed_request("ping", GUID, body.clone());
        match value {
            Some(value) => request.headers_mut().insert(name, value.parse().unwrap()),
            None => request.headers_mut().remove(name),
        };
        let outcome = intake.handle_stream(request.method(), request.headers(), never_polled()).await;
        assert!(matches!(outcome, IntakeOutcome::RejectedUnread(_)), "{name}: {outcome:?}");
        let response = outcome.into_response();
        assert_eq!(response.status(), status, "{name} {value:?}");
        assert_eq!(response.headers()["connection"], "close", "{name}");
    }
    assert_eq!(intake.unverified_bytes_in_flight(), 0);
    let get = http::Request::get("/").body(()).unwrap();
    let outcome = intake.handle_stream(get.method(), get.headers(), never_polled()).await;
    assert_eq!(outcome.status(), StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn a_streamed_delivery_is_accepted_and_gives_its_room_back() {
    let (intake, mut receiver) = intake();
    let body = fixture("pull_request.opened.json");
    let request = signed_request("pull_request", GUID, body.clone());
    let chunks: Vec<Result<Bytes, std::io::Error>> = body.chunks(1000).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
    let outcome = intake.handle_stream(request.method(), request.headers(), futures::stream::iter(chunks)).await;
    assert!(matches!(outcome, IntakeOutcome::Accepted { .. }), "{outcome:?}");
    assert_eq!(intake.unverified_bytes_in_flight(), 0);
    assert_eq!(Delivery::from_message(&receiver.recv().await.unwrap()).unwrap().payload, body);

    // A bad signature is found after the read: the connection may stay open.
    let mut forged = signed_request("ping", "forged", fixture("ping.json"));
    forged.headers_mut().insert("x-hub-signature-256", WebhookSecret::new("nope").sign(b"x").parse().unwrap());
    let forged_body = futures::stream::iter([Ok::<_, std::io::Error>(fixture("ping.json"))]);
    let outcome = intake.handle_stream(forged.method(), forged.headers(), forged_body).await;
    assert!(matches!(outcome, IntakeOutcome::Rejected(Error::SignatureMismatch)), "{outcome:?}");
    assert!(outcome.into_response().headers().get("connection").is_none());
    assert_eq!(intake.unverified_bytes_in_flight(), 0);
}

#[tokio::test]
async fn a_body_broken_mid_way_is_400_loses_nothing_and_can_be_redelivered() {
    let (intake, mut receiver) = intake();
    let body = fixture("ping.json");
    let request = signed_request("ping", GUID, body.clone());
    let (first, _) = body.split_at(body.len() / 2);
    let broken = futures::stream::iter([
        Ok(Bytes::copy_from_slice(first)),
        Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "connection closed before message completed")),
    ]);
    let outcome = intake.handle_stream(request.method(), request.headers(), broken).await;
    assert!(matches!(outcome, IntakeOutcome::RejectedUnread(Error::BodyUnreadable { .. })), "{outcome:?}");
    assert_eq!(outcome.status(), StatusCode::BAD_REQUEST);
    assert_eq!(intake.unverified_bytes_in_flight(), 0, "the reservation went back");

    // Nothing was claimed or enqueued, so GitHub's redelivery is taken.
    let whole = futures::stream::iter([Ok::<_, std::io::Error>(body)]);
    let outcome = intake.handle_stream(request.method(), request.headers(), whole).await;
    assert!(matches!(outcome, IntakeOutcome::Accepted { .. }), "{outcome:?}");
    receiver.close();
    assert!(receiver.recv().await.is_some());
    assert!(receiver.recv().await.is_none(), "enqueued once");
}

#[tokio::test]
async fn the_unverified_bound_refuses_at_once_and_chunked_bodies_reserve_as_they_grow() {
    let (queue, _receiver) = InProcessQueue::bounded(16);
    let intake = WebhookIntake::builder([secret()])
        .queue(Arc::new(queue))
        .max_body_bytes(64 * 1024)
        .unverified_bytes_in_flight(96 * 1024)
        .build()
        .unwrap();
    let body = fixture("ping.json");
    let mut declared = signed_request("ping", "declared", body.clone());
    declared.headers_mut().insert("content-length", (64 * 1024).to_string().parse().unwrap());
    let held = intake.admit(declared.method(), declared.headers()).unwrap();
    assert_eq!((held.bytes(), intake.unverified_bytes_in_flight()), (64 * 1024, 64 * 1024));

    // Another declared 64 KiB does not fit: refused without waiting and without reading.
    let outcome = intake.handle_stream(declared.method(), declared.headers(), never_polled()).await;
    let IntakeOutcome::RejectedUnread(error @ Error::TooManyUnverifiedBytes { .. }) = &outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(error.retry_after(), Some(Duration::from_secs(1)));
    let response = outcome.into_response();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()["retry-after"], "1");

    // A chunked body (no Content-Length) reserves chunk by chunk and is refused when one does not fit.
    let chunked = signed_request("ping", "chunked", body.clone());
    assert!(chunked.headers().get("content-length").is_none());
    let chunks = futures::stream::iter((0..5).map(|_| Ok::<_, std::io::Error>(Bytes::from(vec![b' '; 10 * 1024]))));
    let outcome = intake.handle_stream(chunked.method(), chunked.headers(), chunks).await;
    assert!(matches!(outcome, IntakeOutcome::RejectedUnread(Error::TooManyUnverifiedBytes { .. })), "{outcome:?}");
    assert_eq!(intake.unverified_bytes_in_flight(), 64 * 1024, "the refused body's room went back");

    drop(held);
    assert_eq!(intake.unverified_bytes_in_flight(), 0);
    let whole = futures::stream::iter([Ok::<_, std::io::Error>(body)]);
    let outcome = intake.handle_stream(chunked.method(), chunked.headers(), whole).await;
    assert!(matches!(outcome, IntakeOutcome::Accepted { .. }), "{outcome:?}");
}

#[tokio::test]
async fn the_unverified_bound_must_hold_one_body_of_the_cap() {
    let (queue, _receiver) = InProcessQueue::bounded(1);
    let too_small = WebhookIntake::builder([secret()])
        .queue(Arc::new(queue))
        .max_body_bytes(1024)
        .unverified_bytes_in_flight(1023)
        .build();
    assert!(matches!(too_small, Err(Error::InvalidConfig { .. })));
    let (intake, _receiver) = intake();
    assert_eq!(intake.unverified_bytes_limit(), chitty_github::intake::DEFAULT_UNVERIFIED_BYTES_IN_FLIGHT);
}
