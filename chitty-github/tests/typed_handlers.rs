//! Typed handler registration: handlers get their own event type, unknown routes are refused at
//! `try_build`, the context carries an installation client, the delivery id and a span, and the
//! public test helpers (signed deliveries, fixtures) drive it all; the ack does not wait for handlers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chitty_github::Error;
use chitty_github::events::{
    CheckRunAction, CheckRunEvent, PullRequestAction, PullRequestEvent, PullRequestReviewAction, PushEvent,
    ReleaseAction, ReleaseEvent, WebhookEvent, WorkflowRunAction, WorkflowRunEvent,
};
use chitty_github::intake::WebhookIntake;
use chitty_github::processor::{EventContext, ProcessOutcome, Processor, handler_fn};
use chitty_github::queue::InProcessQueue;
use chitty_github::signature::WebhookSecret;
use chitty_github::testing::{SignedDelivery, fixtures};

type Seen = Arc<Mutex<Vec<String>>>;

fn record(seen: &Seen, what: String) {
    seen.lock().unwrap().push(what);
}

#[tokio::test]
async fn typed_handlers_get_their_own_event_for_their_action_only() {
    let seen = Seen::default();
    let (a, b, c, d, e, f, g) =
        (seen.clone(), seen.clone(), seen.clone(), seen.clone(), seen.clone(), seen.clone(), seen.clone());
    let processor = Processor::builder()
        .on_pull_request(PullRequestAction::Opened, move |pr: PullRequestEvent, cx: EventContext| {
            let a = a.clone();
            async move {
                record(&a, format!("opened #{} {} in {}", pr.number, pr.pull_request.title, cx.delivery_id()));
                Ok(())
            }
        })
        .on_pull_request(PullRequestAction::Closed, move |pr: PullRequestEvent, _| {
            let b = b.clone();
            async move {
                record(&b, format!("closed #{}", pr.number));
                Ok(())
            }
        })
        .on_release(ReleaseAction::Published, move |release: ReleaseEvent, _| {
            let c = c.clone();
            async move {
                record(&c, format!("release {}", release.release.tag_name));
                Ok(())
            }
        })
        .on_workflow_run(WorkflowRunAction::Completed, move |run: WorkflowRunEvent, _| {
            let d = d.clone();
            async move {
                record(
                    &d,
                    format!("run {} {}", run.workflow_run.run_number, run.workflow_run.conclusion.unwrap_or_default()),
                );
                Ok(())
            }
        })
        .on_check_run(CheckRunAction::Rerequested, move |check: CheckRunEvent, _| {
            let e = e.clone();
            async move {
                record(&e, format!("check {}", check.check_run.name));
                Ok(())
            }
        })
        .on_pull_request_review(PullRequestReviewAction::Submitted, move |review, _| {
            let f = f.clone();
            async move {
                record(&f, format!("review {}", review.review.state));
                Ok(())
            }
        })
        .on_push(move |push: PushEvent, _| {
            let g = g.clone();
            async move {
                record(&g, format!("push {}", push.git_ref));
                Ok(())
            }
        })
        .try_build()
        .unwrap();
    let opened = SignedDelivery::new("pull_request", fixtures::PULL_REQUEST_OPENED).with_delivery_id("guid-opened");
    for event in [
        ("release", fixtures::RELEASE_PUBLISHED),
        ("workflow_run", fixtures::WORKFLOW_RUN_COMPLETED),
        ("check_run", fixtures::CHECK_RUN_REREQUESTED),
        ("pull_request_review", fixtures::PULL_REQUEST_REVIEW_SUBMITTED),
        ("push", fixtures::PUSH),
    ]
    .map(|(event, payload)| SignedDelivery::new(event, payload))
    .into_iter()
    .chain([opened])
    {
        let outcome = processor.process(event.to_delivery()).await;
        assert!(matches!(outcome, ProcessOutcome::Handled { handlers: 1, .. }), "{outcome:?}");
    }
    // An action with no handler registered for it is unhandled, not given to another action's handler.
    let mut closed: serde_json::Value = serde_json::from_str(fixtures::PULL_REQUEST_OPENED).unwrap();
    closed["action"] = "reopened".into();
    let reopened = SignedDelivery::new("pull_request", closed.to_string());
    assert!(matches!(processor.process(reopened.to_delivery()).await, ProcessOutcome::Unhandled));
    assert_eq!(
        *seen.lock().unwrap(),
        [
            "release v1.0.0",
            "run 562 failure",
            "check chitty push analysis",
            "review commented",
            "push refs/heads/master",
            "opened #2 Update the README with new information. in guid-opened",
        ]
    );
}

#[test]
fn routes_that_name_nothing_github_sends_are_refused_at_try_build() {
    let nothing = || handler_fn(|_cx: EventContext| async { Ok(()) });
    for (route, says) in [
        ("pull_request.openned", "no action `openned`"),
        ("pullrequest", "no `pullrequest` event"),
        ("push.created", "have no action"),
        ("issues.", "no action ``"),
    ] {
        let refused = Processor::builder().on("push", nothing()).on(route, nothing()).try_build().unwrap_err();
        let Error::UnknownRoute { route: named, reason } = &refused else { panic!("{refused:?}") };
        assert_eq!(named, route);
        assert!(reason.contains(says), "{route}: {reason}");
        assert!(refused.to_string().contains("would never fire"), "{refused}");
    }
    for route in ["*", "push", "pull_request.synchronize", "repository_dispatch.deploy", "sub_issues.sub_issue_added"] {
        assert!(Processor::builder().on(route, nothing()).try_build().is_ok(), "{route}");
    }
    let newer = Processor::builder().allow_route("copilot_event.created").on("copilot_event.created", nothing());
    assert!(newer.try_build().is_ok(), "an allowed route passes");
}

#[tokio::test]
async fn the_context_carries_the_delivery_id_and_a_span() {
    let subscriber = tracing_subscriber::fmt().with_test_writer().finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let seen = Seen::default();
    let sink = seen.clone();
    let processor = Processor::builder()
        .on_pull_request(None, move |_pr: PullRequestEvent, cx: EventContext| {
            let sink = sink.clone();
            async move {
                let span = cx.span().metadata().map(|m| m.name()).unwrap_or("none");
                let current = tracing::Span::current().metadata().map(|m| m.name()).unwrap_or("none");
                record(&sink, format!("{} {span} {current} {:?}", cx.delivery_id(), cx.installation_id()));
                Ok(())
            }
        })
        .try_build()
        .unwrap();
    let delivery = SignedDelivery::new("pull_request", fixtures::PULL_REQUEST_OPENED).with_delivery_id("d-42");
    let _ = processor.process(delivery.to_delivery()).await;
    assert_eq!(*seen.lock().unwrap(), ["d-42 github_event github_event Some(2311213)"]);
}

#[cfg(feature = "client")]
#[tokio::test]
async fn handlers_act_through_the_installation_client() {
    let common::app::MockApp { github, app, .. } = common::app::MockApp::start().await;
    let handler = |pr: PullRequestEvent, cx: EventContext| async move {
        let repo = &pr.repository;
        cx.github()?.create_comment(&repo.owner.login, &repo.name, pr.number, "Thanks! Review to follow.").await?;
        Ok(())
    };
    let processor =
        Processor::builder().github_app(app).on_pull_request(PullRequestAction::Opened, handler).try_build().unwrap();
    let delivery = SignedDelivery::new("pull_request", fixtures::PULL_REQUEST_OPENED);
    let outcome = processor.process(delivery.to_delivery()).await;
    assert!(matches!(outcome, ProcessOutcome::Handled { .. }), "{outcome:?}");
    assert_eq!(github.token_exchanges(2311213), 1, "a token for the event's installation");
    let comment = github.requests().into_iter().find(|r| r.path.ends_with("/issues/2/comments")).unwrap();
    assert_eq!(comment.json().unwrap()["body"], "Thanks! Review to follow.");

    // Without an App on the processor, the handler gets a typed error instead of a client.
    let bare = Processor::builder()
        .on_pull_request(PullRequestAction::Opened, handler)
        .retry(chitty_github::processor::RetryPolicy { max_attempts: 1, ..Default::default() })
        .try_build()
        .unwrap();
    let outcome = bare.process(SignedDelivery::new("pull_request", fixtures::PULL_REQUEST_OPENED).to_delivery()).await;
    let ProcessOutcome::DeadLettered { error, .. } = outcome else { panic!("{outcome:?}") };
    assert!(error.to_string().contains("no GitHub installation client"), "{error}");
}

#[tokio::test]
async fn signed_deliveries_pass_the_intake_and_forgeries_do_not() {
    let (queue, mut queued) = InProcessQueue::bounded(8);
    let delivery = SignedDelivery::new("pull_request", fixtures::PULL_REQUEST_OPENED);
    let intake = WebhookIntake::builder([delivery.secret().clone()]).queue(Arc::new(queue)).build().unwrap();
    assert_eq!(intake.handle(delivery.to_request()).await.status(), 202);
    let message = queued.recv().await.unwrap();
    let taken = chitty_github::delivery::Delivery::from_message(&message).unwrap();
    let mut expected = delivery.to_delivery();
    expected.received_at = taken.received_at;
    assert_eq!(taken, expected, "to_delivery is what the intake enqueues");
    assert_eq!(intake.handle(delivery.to_request()).await.status(), 202, "a redelivery is acknowledged");
    assert!(queued.try_recv().is_none(), "and not queued again");
    let forged = SignedDelivery::new("push", fixtures::PUSH).with_secret(WebhookSecret::new("not the secret"));
    assert_eq!(intake.handle(forged.to_request()).await.status(), 401);
}

#[test]
fn every_fixture_parses_into_its_typed_event() {
    for (file, payload) in fixtures::ALL {
        let event_name = file.split('.').next().unwrap();
        let event = WebhookEvent::parse(event_name, payload.as_bytes()).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(event.name(), event_name);
        let typed = !matches!(event, WebhookEvent::Other { .. });
        assert_eq!(typed, event_name != "star", "{file}");
        if let Some(action) = file.split('.').nth(1).filter(|a| *a != "json") {
            assert_eq!(event.action(), Some(action), "{file}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ack_does_not_wait_for_handlers() {
    let gate = Arc::new(tokio::sync::Notify::new());
    let release = gate.clone();
    let processor = Arc::new(
        Processor::builder()
            .on_pull_request(PullRequestAction::Opened, move |_pr, _cx| {
                let gate = gate.clone();
                async move {
                    gate.notified().await;
                    Ok(())
                }
            })
            .try_build()
            .unwrap(),
    );
    let (queue, deliveries) = InProcessQueue::bounded(8);
    let delivery = SignedDelivery::new("pull_request", fixtures::PULL_REQUEST_OPENED);
    let intake = WebhookIntake::builder([delivery.secret().clone()]).queue(Arc::new(queue)).build().unwrap();
    let worker = tokio::spawn(processor.clone().run(deliveries));
    let ack = tokio::time::timeout(Duration::from_secs(5), intake.handle(delivery.to_request())).await;
    assert_eq!(ack.expect("acknowledged while the handler waits").status(), 202);
    assert_eq!(processor.stats().handled, 0, "the handler has not finished");
    release.notify_one();
    drop(intake);
    worker.await.unwrap();
    assert_eq!(processor.stats().handled, 1);
}
