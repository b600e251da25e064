//! The JetStream queue against the machine's NATS (`CHITTY_TEST_NATS_URL`, by default
//! `nats://127.0.0.1:4222`; ignored with the reason when it is unreachable): durable delivery,
//! explicit acks, redelivery after a consumer is killed mid-processing (handled exactly once by
//! idempotent handlers), and dead-lettering after `max_deliver` with the last error.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use chitty_core::{BoxError, Timestamp};
use chitty_github::delivery::Delivery;
use chitty_github::processor::{EventContext, HEADER_ATTEMPTS, HEADER_ERROR, Processor, RetryPolicy, handler_fn};
use chitty_github::queue::{DeliveryQueue, JetStreamConfig, JetStreamConsumer, JetStreamQueue};
use chitty_testkit::services::{self, block_on, trial};
use common::{fixture, unique};
use futures::StreamExt;

fn main() -> std::process::ExitCode {
    let nats = services::nats_url();
    services::run(vec![
        trial("deliveries_are_stored_processed_and_acked", &nats, |url| {
            block_on(deliveries_are_stored_processed_and_acked(url))
        }),
        trial(
            "a_consumer_killed_mid_processing_leaves_the_delivery_for_redelivery_and_it_is_processed_once",
            &nats,
            |url| {
                block_on(a_consumer_killed_mid_processing_leaves_the_delivery_for_redelivery_and_it_is_processed_once(
                    url,
                ))
            },
        ),
        trial("a_delivery_that_keeps_failing_is_dead_lettered_with_its_last_error", &nats, |url| {
            block_on(a_delivery_that_keeps_failing_is_dead_lettered_with_its_last_error(url))
        }),
        trial("the_intake_enqueues_to_jetstream_and_a_consumer_processes_the_delivery", &nats, |url| {
            block_on(the_intake_enqueues_to_jetstream_and_a_consumer_processes_the_delivery(url))
        }),
        trial("control_characters_never_reach_the_header_block", &nats, |url| {
            block_on(control_characters_never_reach_the_header_block(url))
        }),
    ])
}

/// A configuration with names no other run uses.
fn config(ack_wait: Duration, max_deliver: i64) -> JetStreamConfig {
    let name = unique("chitty_test").to_uppercase();
    JetStreamConfig {
        stream: name.clone(),
        subject_prefix: name.to_lowercase(),
        consumer: format!("{name}_processor"),
        dead_letter_stream: format!("{name}_DLQ"),
        ack_wait,
        max_deliver,
        retry: RetryPolicy {
            max_attempts: 1,
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_millis(200),
            multiplier: 2,
        },
        ..JetStreamConfig::default()
    }
}

async fn cleanup(queue: &JetStreamQueue) {
    let _ = queue.context().delete_stream(&queue.config().stream).await;
    let _ = queue.context().delete_stream(&queue.config().dead_letter_stream).await;
}

fn delivery(n: usize) -> Delivery {
    Delivery {
        id: format!("guid-{n}"),
        event: "issues".into(),
        action: Some("opened".into()),
        hook_id: Some("109948940".into()),
        target_type: None,
        target_id: None,
        payload: fixture("issues.opened.json"),
        received_at: Timestamp(1_700_000_000_000 + n as u64),
    }
}

async fn publish(queue: &JetStreamQueue, n: usize) {
    queue.enqueue(delivery(n).into_message()).await.unwrap();
}

async fn eventually(what: &str, timeout: Duration, check: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + timeout;
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn deliveries_are_stored_processed_and_acked(url: String) {
    let queue = JetStreamQueue::connect(&url, config(Duration::from_secs(5), 3)).await.unwrap();
    for n in 0..3 {
        publish(&queue, n).await;
    }
    // A re-published delivery key inside the duplicate window is dropped by the server.
    publish(&queue, 0).await;

    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    let processor = Arc::new(
        Processor::builder()
            .on(
                "issues.opened",
                handler_fn(move |context: EventContext| {
                    let sink = sink.clone();
                    async move {
                        sink.lock().unwrap().push((context.delivery.id.clone(), context.delivery.received_at));
                        Ok(())
                    }
                }),
            )
            .build(),
    );
    let consumer = JetStreamConsumer::new(&queue, processor.clone()).await.unwrap();
    let worker = tokio::spawn(async move { consumer.run().await });
    eventually("three deliveries", Duration::from_secs(10), || seen.lock().unwrap().len() >= 3).await;
    // Give a duplicate or an unacked message the chance to show up.
    tokio::time::sleep(Duration::from_millis(300)).await;
    worker.abort();

    let mut seen = seen.lock().unwrap().clone();
    seen.sort();
    assert_eq!(seen.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>(), ["guid-0", "guid-1", "guid-2"]);
    assert_eq!(seen[1].1, Timestamp(1_700_000_000_001), "received_at travels through the stream");
    let mut stream = queue.context().get_stream(&queue.config().stream).await.unwrap();
    let info = stream.info().await.unwrap();
    assert_eq!(info.state.messages, 0, "acked deliveries leave the work queue");
    cleanup(&queue).await;
}

/// An idempotent side effect: the set of deliveries whose effect was committed, and how many
/// commits actually changed something.
#[derive(Debug, Default)]
struct Effects {
    committed: Mutex<HashSet<String>>,
    applied: AtomicUsize,
    attempts: AtomicUsize,
}

impl Effects {
    fn commit(&self, key: &str) {
        if self.committed.lock().unwrap().insert(key.to_owned()) {
            self.applied.fetch_add(1, Ordering::SeqCst);
        }
    }
}

async fn a_consumer_killed_mid_processing_leaves_the_delivery_for_redelivery_and_it_is_processed_once(url: String) {
    let ack_wait = Duration::from_secs(1);
    let queue = JetStreamQueue::connect(&url, config(ack_wait, 5)).await.unwrap();
    let effects = Arc::new(Effects::default());
    let started = Arc::new(tokio::sync::Notify::new());

    // Consumer 1 crashes: on guid-0 before committing, on guid-1 after committing but before the ack.
    let crashing_client = async_nats::connect(&url).await.unwrap();
    let crashing_queue = JetStreamQueue::new(crashing_client.clone(), queue.config().clone()).await.unwrap();
    let (fx, notify) = (effects.clone(), started.clone());
    let crashing = Arc::new(
        Processor::builder()
            .on(
                "issues",
                handler_fn(move |context: EventContext| {
                    let (fx, notify) = (fx.clone(), notify.clone());
                    async move {
                        fx.attempts.fetch_add(1, Ordering::SeqCst);
                        if context.delivery.id == "guid-1" {
                            fx.commit(&context.delivery.dedup_key());
                        }
                        notify.notify_one();
                        // The process dies here: no return, no ack.
                        futures::future::pending::<()>().await;
                        Ok(())
                    }
                }),
            )
            .build(),
    );
    let consumer = JetStreamConsumer::new(&crashing_queue, crashing).await.unwrap();
    let worker = tokio::spawn(async move { consumer.run().await });
    publish(&queue, 0).await;
    publish(&queue, 1).await;
    started.notified().await;
    eventually("both deliveries in flight", Duration::from_secs(5), || effects.attempts.load(Ordering::SeqCst) >= 2)
        .await;
    worker.abort();
    let _ = worker.await;
    crashing_client.drain().await.unwrap();
    assert_eq!(effects.applied.load(Ordering::SeqCst), 1, "only guid-1 committed before the crash");

    // Consumer 2 is healthy and idempotent.
    let fx = effects.clone();
    let healthy = Arc::new(
        Processor::builder()
            .on(
                "issues",
                handler_fn(move |context: EventContext| {
                    let fx = fx.clone();
                    async move {
                        fx.attempts.fetch_add(1, Ordering::SeqCst);
                        fx.commit(&context.delivery.dedup_key());
                        Ok(())
                    }
                }),
            )
            .build(),
    );
    let consumer = JetStreamConsumer::new(&queue, healthy).await.unwrap();
    let worker = tokio::spawn(async move { consumer.run().await });
    eventually("redelivery after ack_wait", Duration::from_secs(15), || effects.attempts.load(Ordering::SeqCst) >= 4)
        .await;
    tokio::time::sleep(ack_wait + Duration::from_millis(500)).await;
    worker.abort();

    assert_eq!(effects.attempts.load(Ordering::SeqCst), 4, "each delivery was redelivered once, then acked");
    assert_eq!(effects.applied.load(Ordering::SeqCst), 2, "each delivery's effect applied exactly once");
    assert_eq!(effects.committed.lock().unwrap().len(), 2);
    cleanup(&queue).await;
}

async fn a_delivery_that_keeps_failing_is_dead_lettered_with_its_last_error(url: String) {
    let queue = JetStreamQueue::connect(&url, config(Duration::from_secs(5), 3)).await.unwrap();
    let client = async_nats::connect(&url).await.unwrap();
    let mut dead_letters = client.subscribe(queue.config().dead_letter_subject("issues")).await.unwrap();
    client.flush().await.unwrap();

    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let processor = Arc::new(
        Processor::builder()
            .on(
                "issues.opened",
                handler_fn(move |_context: EventContext| {
                    let call = counter.fetch_add(1, Ordering::SeqCst) + 1;
                    async move { Err(BoxError::from(format!("GitHub API returned 502 on attempt {call}"))) }
                }),
            )
            .build(),
    );
    let consumer = JetStreamConsumer::new(&queue, processor).await.unwrap();
    let worker = tokio::spawn(async move { consumer.run().await });
    publish(&queue, 7).await;
    // Also a delivery whose payload can never parse: dead-lettered on its first attempt.
    let mut broken = delivery(8);
    broken.payload = Bytes::from_static(br#"{"action":"opened","issue":"not an issue"}"#);
    queue.enqueue(broken.into_message()).await.unwrap();

    let mut letters = Vec::new();
    while letters.len() < 2 {
        let letter = tokio::time::timeout(Duration::from_secs(10), dead_letters.next()).await.unwrap().unwrap();
        letters.push(letter);
    }
    worker.abort();
    let header = |m: &async_nats::Message, name: &str| {
        m.headers.as_ref().and_then(|h| h.get(name)).map(|v| v.to_string()).unwrap_or_default()
    };
    let failing = letters.iter().find(|m| header(m, "x-github-delivery") == "guid-7").unwrap();
    assert_eq!(header(failing, HEADER_ATTEMPTS), "3");
    assert!(header(failing, HEADER_ERROR).contains("502 on attempt 3"), "{}", header(failing, HEADER_ERROR));
    assert_eq!(failing.payload, fixture("issues.opened.json"));
    let unparseable = letters.iter().find(|m| header(m, "x-github-delivery") == "guid-8").unwrap();
    assert_eq!(header(unparseable, HEADER_ATTEMPTS), "1");
    assert!(header(unparseable, HEADER_ERROR).contains("invalid payload"));
    assert_eq!(calls.load(Ordering::SeqCst), 3);

    let mut dlq = queue.context().get_stream(&queue.config().dead_letter_stream).await.unwrap();
    assert_eq!(dlq.info().await.unwrap().state.messages, 2, "dead letters are stored durably");
    cleanup(&queue).await;
}

async fn the_intake_enqueues_to_jetstream_and_a_consumer_processes_the_delivery(url: String) {
    let queue = JetStreamQueue::connect(&url, config(Duration::from_secs(5), 3)).await.unwrap();
    let intake = chitty_github::intake::WebhookIntake::builder([common::secret()])
        .queue(Arc::new(queue.clone()))
        .build()
        .unwrap();
    let body = fixture("pull_request.opened.json");
    let outcome = intake.handle(common::signed_request("pull_request", "0f6e7a3c-guid", body.clone())).await;
    assert_eq!(outcome.status(), 202, "{outcome:?}");
    let duplicate = intake.handle(common::signed_request("pull_request", "0f6e7a3c-guid", body)).await;
    assert!(matches!(duplicate, chitty_github::intake::IntakeOutcome::Duplicate { .. }));

    let titles = Arc::new(Mutex::new(Vec::new()));
    let sink = titles.clone();
    let processor = Arc::new(
        Processor::builder()
            .on(
                "pull_request.opened",
                handler_fn(move |context: EventContext| {
                    let sink = sink.clone();
                    async move {
                        if let chitty_github::events::WebhookEvent::PullRequest(pr) = context.event.as_ref() {
                            sink.lock().unwrap().push(pr.pull_request.title.clone());
                        }
                        Ok(())
                    }
                }),
            )
            .build(),
    );
    let consumer = JetStreamConsumer::new(&queue, processor).await.unwrap();
    let worker = tokio::spawn(async move { consumer.run().await });
    eventually("the delivery", Duration::from_secs(10), || !titles.lock().unwrap().is_empty()).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    worker.abort();
    assert_eq!(*titles.lock().unwrap(), ["Update the README with new information."]);
    cleanup(&queue).await;
}

async fn control_characters_never_reach_the_header_block(url: String) {
    let queue = JetStreamQueue::connect(&url, config(Duration::from_secs(5), 3)).await.unwrap();
    let mut message = delivery(1).into_message();
    message.headers.push(("x-note".into(), "a\r\nx-injected: 1".into()));
    queue.enqueue(message.clone()).await.unwrap();
    message.id = "bad\r\nid".into();
    let refused = queue.enqueue(message).await.unwrap_err();
    assert!(matches!(refused, chitty_github::Error::InvalidPayload { .. }), "{refused:?}");

    let stream = queue.context().get_stream(&queue.config().stream).await.unwrap();
    let stored = stream.get_raw_message(1).await.unwrap();
    assert!(stored.headers.get("x-note").is_none());
    assert!(stored.headers.get("x-injected").is_none());
    assert_eq!(stored.headers.get("x-github-delivery").map(|v| v.to_string()).as_deref(), Some("guid-1"));
    assert_eq!(stream.cached_info().state.messages, 1);
    cleanup(&queue).await;
}
