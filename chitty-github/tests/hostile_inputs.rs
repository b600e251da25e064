//! Malformed and hostile inputs never panic: truncated JSON, wrong types, huge numbers, deep
//! nesting, and signatures of every length all end in typed errors.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use bytes::Bytes;
use chitty_core::{ManualClock, Timestamp};
use chitty_github::Error;
use chitty_github::events::WebhookEvent;
use chitty_github::intake::WebhookIntake;
use chitty_github::queue::InProcessQueue;
use chitty_github::signature::{SignatureVerifier, parse_signature};
use common::{fixture, secret};
use proptest::prelude::*;

const EVENTS: [&str; 13] = [
    "push",
    "pull_request",
    "issues",
    "issue_comment",
    "installation",
    "installation_repositories",
    "check_suite",
    "ping",
    "star",
    "workflow_run",
    "release",
    "check_run",
    "pull_request_review",
];

const FIXTURES: [(&str, &str); 12] = [
    ("push", "push.json"),
    ("pull_request", "pull_request.opened.json"),
    ("issues", "issues.opened.json"),
    ("issue_comment", "issue_comment.created.json"),
    ("installation", "installation.created.json"),
    ("installation_repositories", "installation_repositories.added.json"),
    ("check_suite", "check_suite.requested.json"),
    ("ping", "ping.json"),
    ("release", "release.published.json"),
    ("workflow_run", "workflow_run.completed.json"),
    ("check_run", "check_run.rerequested.json"),
    ("pull_request_review", "pull_request_review.submitted.json"),
];

/// JSON values of every shape, with huge numbers and long strings.
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<u64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(serde_json::Value::from),
        ".{0,40}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(6, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(serde_json::Value::from),
            prop::collection::btree_map("[a-z_]{1,12}", inner, 0..8)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A fixture with one field replaced by an arbitrary value (a wrong type, mostly).
fn mutated_fixture() -> impl Strategy<Value = (String, Vec<u8>)> {
    (0..FIXTURES.len(), any::<prop::sample::Index>(), json_value()).prop_map(|(i, field, value)| {
        let (event, name) = FIXTURES[i];
        let mut payload: serde_json::Value = serde_json::from_slice(&fixture(name)).unwrap();
        let object = payload.as_object_mut().unwrap();
        let key = field.get(&object.keys().cloned().collect::<Vec<_>>()).clone();
        object.insert(key, value);
        (event.to_owned(), serde_json::to_vec(&payload).unwrap())
    })
}

fn check_parse(event: &str, payload: &[u8]) {
    match WebhookEvent::parse(event, payload) {
        Ok(parsed) => assert_eq!(parsed.name(), event),
        Err(error) => assert!(matches!(error, Error::InvalidPayload { .. }), "{error:?}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic_the_parser(event in prop::sample::select(&EVENTS[..]), payload in prop::collection::vec(any::<u8>(), 0..512)) {
        check_parse(event, &payload);
    }

    #[test]
    fn truncated_fixtures_are_typed_errors(index in 0..FIXTURES.len(), cut in any::<prop::sample::Index>()) {
        let (event, name) = FIXTURES[index];
        let fixture = fixture(name);
        let payload = fixture.trim_ascii_end();
        let end = cut.index(payload.len());
        let result = WebhookEvent::parse(event, &payload[..end]);
        prop_assert!(matches!(result, Err(Error::InvalidPayload { .. })), "{:?}", result);
    }

    #[test]
    fn fields_of_the_wrong_type_never_panic((event, payload) in mutated_fixture()) {
        check_parse(&event, &payload);
    }

    #[test]
    fn arbitrary_json_never_panics(event in prop::sample::select(&EVENTS[..]), value in json_value()) {
        check_parse(event, &serde_json::to_vec(&value).unwrap());
    }

    #[test]
    fn signatures_of_every_length_are_rejected(signature in prop::collection::vec(any::<u8>(), 0..160), body in prop::collection::vec(any::<u8>(), 0..256)) {
        let verifier = SignatureVerifier::new([secret()]).unwrap();
        let result = verifier.verify(&body, &signature);
        prop_assert!(matches!(result, Err(Error::MalformedSignature { .. } | Error::SignatureMismatch)), "{:?}", result);
    }

    #[test]
    fn well_formed_wrong_digests_are_mismatches(digest in "[0-9a-f]{64}", body in prop::collection::vec(any::<u8>(), 0..256)) {
        let verifier = SignatureVerifier::new([secret()]).unwrap();
        let signature = format!("sha256={digest}");
        prop_assume!(signature != secret().sign(&body));
        prop_assert!(parse_signature(signature.as_bytes()).is_ok());
        let result = verifier.verify(&body, signature.as_bytes());
        prop_assert!(matches!(result, Err(Error::SignatureMismatch)), "{:?}", result);
    }

    #[test]
    fn every_prefix_of_a_valid_signature_is_rejected(cut in 0usize..71) {
        let body = b"Hello, World!";
        let signature = secret().sign(body);
        let verifier = SignatureVerifier::new([secret()]).unwrap();
        prop_assert!(verifier.verify(body, &signature.as_bytes()[..cut]).is_err());
        prop_assert!(verifier.verify(body, signature.as_bytes()).is_ok());
    }

    #[test]
    fn hostile_requests_get_a_status_never_a_panic(
        event in "[ -~]{0,20}",
        delivery in "[ -~]{0,40}",
        content_type in prop::sample::select(&["application/json", "application/x-www-form-urlencoded", "text/plain", ""][..]),
        body in prop::collection::vec(any::<u8>(), 0..512),
        sign in any::<bool>(),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let (queue, _receiver) = InProcessQueue::bounded(1024);
        let intake = WebhookIntake::builder([secret()])
            .queue(Arc::new(queue))
            .clock(Arc::new(ManualClock::new(Timestamp(0))))
            .build()
            .unwrap();
        let mut builder = http::Request::post("/").header("x-github-event", event).header("x-github-delivery", delivery);
        if !content_type.is_empty() {
            builder = builder.header("content-type", content_type);
        }
        if sign {
            builder = builder.header("x-hub-signature-256", secret().sign(&body));
        }
        let outcome = runtime.block_on(intake.handle(builder.body(Bytes::from(body)).unwrap()));
        let status = outcome.status().as_u16();
        prop_assert!([202, 400, 401, 415].contains(&status), "{outcome:?}");
    }
}

#[test]
fn deep_nesting_is_a_typed_error_not_a_stack_overflow() {
    for depth in [200, 10_000, 100_000] {
        let mut payload = Vec::new();
        payload.extend(std::iter::repeat_n(b'[', depth));
        payload.extend(std::iter::repeat_n(b']', depth));
        for event in EVENTS {
            check_parse(event, &payload);
        }
        let mut nested_object = br#"{"zen":"z","hook":"#.to_vec();
        nested_object.extend(std::iter::repeat_n(&b"{\"a\":"[..], depth).flatten());
        nested_object.extend(b"1");
        nested_object.extend(std::iter::repeat_n(b'}', depth + 1));
        for event in EVENTS {
            check_parse(event, &nested_object);
        }
    }
}

#[test]
fn huge_numbers_are_typed_errors_or_kept_untyped() {
    let huge = "1".repeat(400);
    let ping = format!(r#"{{"zen":"z","hook_id":{huge}}}"#);
    assert!(matches!(WebhookEvent::parse("ping", ping.as_bytes()), Err(Error::InvalidPayload { .. })));
    let untyped = format!(r#"{{"action":"x","count":{huge}e999}}"#);
    check_parse("star", untyped.as_bytes());
}
