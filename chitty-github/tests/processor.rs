//! The processor: routing by event and action, retries with backoff on virtual time,
//! dead-letters carrying the error, caught panics, the concurrency limit.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use chitty_core::{BoxError, Clock, ManualClock, ManualTimer, Timestamp};
use chitty_github::Error;
use chitty_github::delivery::Delivery;
use chitty_github::processor::{
    EventContext, HEADER_ATTEMPTS, HEADER_ERROR, ProcessOutcome, Processor, RetryPolicy, handler_fn,
};
use chitty_github::queue::{InProcessQueue, QueueReceiver};
use common::fixture;

fn delivery(event: &str, action: Option<&str>, payload: Bytes) -> Delivery {
    Delivery {
        id: "guid".into(),
        event: event.into(),
        action: action.map(str::to_owned),
        hook_id: Some("1".into()),
        target_type: None,
        target_id: None,
        payload,
        received_at: Timestamp(0),
    }
}

fn pr_opened() -> Delivery {
    delivery("pull_request", Some("opened"), fixture("pull_request.opened.json"))
}

/// A handler counting its calls.
fn counting(counter: &Arc<AtomicUsize>) -> impl chitty_github::processor::Handler {
    let counter = counter.clone();
    handler_fn(move |_context: EventContext| {
        let counter = counter.clone();
        async move {
            counter.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    })
}

/// A handler failing its first `failures` calls.
fn flaky(failures: usize, calls: &Arc<AtomicUsize>) -> impl chitty_github::processor::Handler {
    let calls = calls.clone();
    handler_fn(move |_context: EventContext| {
        let calls = calls.clone();
        async move {
            let call = calls.fetch_add(1, Ordering::SeqCst);
            if call < failures { Err(BoxError::from(format!("transient failure {call}"))) } else { Ok(()) }
        }
    })
}

fn policy(max_attempts: u32) -> RetryPolicy {
    RetryPolicy {
        max_attempts,
        initial_backoff: Duration::from_secs(1),
        max_backoff: Duration::from_secs(5),
        multiplier: 2,
    }
}

#[tokio::test]
async fn handlers_run_by_event_by_action_and_for_any_event() {
    let [by_event, by_action, other_action, any]: [Arc<AtomicUsize>; 4] = Default::default();
    let processor = Processor::builder()
        .on("pull_request", counting(&by_event))
        .on("pull_request.opened", counting(&by_action))
        .on("pull_request.closed", counting(&other_action))
        .on_any(counting(&any))
        .build();
    let outcome = processor.process(pr_opened()).await;
    assert!(matches!(outcome, ProcessOutcome::Handled { handlers: 3, attempts: 1 }), "{outcome:?}");
    assert_eq!([&by_event, &by_action, &other_action, &any].map(|c| c.load(Ordering::SeqCst)), [1, 1, 0, 1]);
    let ping = delivery("ping", None, fixture("ping.json"));
    assert!(matches!(processor.process(ping).await, ProcessOutcome::Handled { handlers: 1, .. }));
    assert_eq!(any.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn handlers_see_the_typed_event() {
    let seen = Arc::new(std::sync::Mutex::new(None));
    let sink = seen.clone();
    let processor = Processor::builder()
        .on(
            "pull_request.opened",
            handler_fn(move |context: EventContext| {
                let sink = sink.clone();
                async move {
                    if let chitty_github::events::WebhookEvent::PullRequest(pr) = context.event.as_ref() {
                        *sink.lock().unwrap() = Some(pr.pull_request.title.clone());
                    }
                    Ok(())
                }
            }),
        )
        .build();
    let _ = processor.process(pr_opened()).await;
    assert_eq!(seen.lock().unwrap().as_deref(), Some("Update the README with new information."));
}

#[tokio::test]
async fn failures_are_retried_with_backoff_on_the_injected_timer() {
    let clock = ManualClock::new(Timestamp(0));
    let (calls, steady) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let processor = Processor::builder()
        .on("pull_request.opened", flaky(3, &calls))
        .on("pull_request", counting(&steady))
        .retry(policy(5))
        .timer(Arc::new(ManualTimer::new(clock.clone())))
        .build();
    let outcome = processor.process(pr_opened()).await;
    assert!(matches!(outcome, ProcessOutcome::Handled { handlers: 2, attempts: 4 }), "{outcome:?}");
    assert_eq!(calls.load(Ordering::SeqCst), 4);
    assert_eq!(steady.load(Ordering::SeqCst), 1, "only failed handlers are retried");
    // Backoffs 1 s, 2 s, 4 s, waited on virtual time.
    assert_eq!(clock.now(), Timestamp(7_000));
    let stats = processor.stats();
    assert_eq!((stats.retries, stats.handler_failures, stats.handled), (3, 3, 1));
}

#[test]
fn backoff_grows_and_is_capped() {
    let policy = policy(10);
    let waits: Vec<u64> = (1..=5).map(|n| policy.backoff(n).as_secs()).collect();
    assert_eq!(waits, [1, 2, 4, 5, 5]);
    assert_eq!(RetryPolicy { multiplier: 0, ..policy }.backoff(4), Duration::from_secs(1));
    assert_eq!(policy.backoff(u32::MAX), Duration::from_secs(5));
}

fn dead_letter_queue() -> (Arc<InProcessQueue>, QueueReceiver) {
    let (queue, receiver) = InProcessQueue::bounded(16);
    (Arc::new(queue), receiver)
}

#[tokio::test]
async fn exhausted_retries_dead_letter_with_the_last_error() {
    let clock = ManualClock::new(Timestamp(0));
    let calls = Arc::new(AtomicUsize::new(0));
    let (dead, mut dead_letters) = dead_letter_queue();
    let processor = Processor::builder()
        .on("pull_request", flaky(usize::MAX, &calls))
        .retry(policy(3))
        .timer(Arc::new(ManualTimer::new(clock.clone())))
        .dead_letter(dead)
        .build();
    let outcome = processor.process(pr_opened()).await;
    let ProcessOutcome::DeadLettered { error, attempts: 3 } = outcome else { panic!("{outcome:?}") };
    assert!(
        matches!(&error, Error::HandlerFailed { route, message } if route == "pull_request" && message == "transient failure 2")
    );
    let message = dead_letters.recv().await.unwrap();
    assert_eq!(message.subject, "github.dead_letter.pull_request");
    assert_eq!(message.payload, fixture("pull_request.opened.json"));
    let header = |name: &str| message.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    assert_eq!(header(HEADER_ATTEMPTS).as_deref(), Some("3"));
    assert!(header(HEADER_ERROR).unwrap().contains("transient failure 2"));
    assert_eq!(Delivery::from_message(&message).unwrap().id, "guid", "the delivery can be replayed");
    assert_eq!(processor.stats().dead_lettered, 1);
}

#[tokio::test]
async fn a_payload_that_does_not_parse_is_dead_lettered_at_once() {
    let (dead, mut dead_letters) = dead_letter_queue();
    let calls = Arc::new(AtomicUsize::new(0));
    let processor = Processor::builder().on_any(counting(&calls)).dead_letter(dead).build();
    let broken = delivery("pull_request", Some("opened"), Bytes::from_static(br#"{"action":"opened"}"#));
    let outcome = processor.process(broken).await;
    assert!(
        matches!(outcome, ProcessOutcome::DeadLettered { error: Error::InvalidPayload { .. }, attempts: 1 }),
        "{outcome:?}"
    );
    assert!(dead_letters.recv().await.is_some());
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn panics_in_handlers_are_caught_and_reported() {
    let (dead, mut dead_letters) = dead_letter_queue();
    let others = Arc::new(AtomicUsize::new(0));
    let processor = Processor::builder()
        .on(
            "pull_request.opened",
            handler_fn(|_context: EventContext| async move {
                if true {
                    panic!("handler bug: index out of range");
                }
                Ok(())
            }),
        )
        .on("pull_request", counting(&others))
        .retry(policy(2))
        .timer(Arc::new(ManualTimer::new(ManualClock::default())))
        .dead_letter(dead)
        .build();
    let outcome = processor.process(pr_opened()).await;
    let ProcessOutcome::DeadLettered { error, .. } = outcome else { panic!("{outcome:?}") };
    assert!(
        matches!(&error, Error::HandlerPanicked { message, .. } if message.contains("index out of range")),
        "{error:?}"
    );
    assert_eq!(others.load(Ordering::SeqCst), 1, "a panicking handler does not stop the others");
    assert_eq!(processor.stats().panics, 2);
    let message = dead_letters.recv().await.unwrap();
    assert!(message.headers.iter().any(|(k, v)| k == HEADER_ERROR && v.contains("panicked")));
}

#[tokio::test]
async fn unmatched_events_are_unhandled_not_errors() {
    let processor = Processor::builder().on("push", counting(&Arc::default())).build();
    let star = delivery("star", Some("created"), fixture("star.created.json"));
    assert!(matches!(processor.process(star).await, ProcessOutcome::Unhandled));
    assert_eq!(processor.stats().unhandled, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_drains_the_queue_within_the_concurrency_limit() {
    let (in_flight, peak, done) =
        (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (i, p, d) = (in_flight.clone(), peak.clone(), done.clone());
    let processor = Arc::new(
        Processor::builder()
            .on(
                "ping",
                handler_fn(move |_context: EventContext| {
                    let (i, p, d) = (i.clone(), p.clone(), d.clone());
                    async move {
                        let now = i.fetch_add(1, Ordering::SeqCst) + 1;
                        p.fetch_max(now, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        i.fetch_sub(1, Ordering::SeqCst);
                        d.fetch_add(1, Ordering::SeqCst);
                        Ok(())
                    }
                }),
            )
            .concurrency(3)
            .build(),
    );
    let (queue, receiver) = InProcessQueue::bounded(64);
    for n in 0..30 {
        let mut ping = delivery("ping", None, fixture("ping.json"));
        ping.id = format!("guid-{n}");
        queue.try_enqueue(ping.into_message()).unwrap();
    }
    drop(queue);
    processor.clone().run(receiver).await;
    assert_eq!(done.load(Ordering::SeqCst), 30);
    assert_eq!(peak.load(Ordering::SeqCst), 3, "at most three at once, and three used");
    assert_eq!(processor.stats().handled, 30);
}

#[tokio::test]
async fn process_once_reports_the_first_failure_for_redelivering_queues() {
    let calls = Arc::new(AtomicUsize::new(0));
    let processor = Processor::builder().on("pull_request", flaky(1, &calls)).build();
    assert!(matches!(processor.process_once(pr_opened()).await, Err(Error::HandlerFailed { .. })));
    assert_eq!(processor.process_once(pr_opened()).await.unwrap(), 1);
}

#[tokio::test]
async fn a_handler_that_hangs_is_timed_out_on_the_injected_timer() {
    let clock = ManualClock::new(Timestamp(0));
    let (dead, mut dead_letters) = dead_letter_queue();
    let processor = Processor::builder()
        .on(
            "pull_request",
            handler_fn(|_context: EventContext| async move {
                futures::future::pending::<()>().await;
                Ok(())
            }),
        )
        .handler_timeout(Duration::from_secs(30))
        .retry(policy(2))
        .timer(Arc::new(ManualTimer::new(clock.clone())))
        .dead_letter(dead)
        .build();
    let outcome = processor.process(pr_opened()).await;
    let ProcessOutcome::DeadLettered { error, attempts: 2 } = outcome else { panic!("{outcome:?}") };
    assert!(matches!(error, Error::HandlerTimedOut { timeout, .. } if timeout == Duration::from_secs(30)));
    // Two 30 s timeouts and one 1 s backoff, on virtual time.
    assert_eq!(clock.now(), Timestamp(61_000));
    assert!(dead_letters.recv().await.is_some());
    assert_eq!(processor.stats().handler_failures, 2);
}
