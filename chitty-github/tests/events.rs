//! Typed parsing of realistic payloads for every modelled event, unknown fields kept, unknown
//! events untyped.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use chitty_github::Error;
use chitty_github::events::WebhookEvent;
use common::fixture;

fn parse(event: &str, name: &str) -> WebhookEvent {
    WebhookEvent::parse(event, &fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn push_is_typed() {
    let WebhookEvent::Push(push) = parse("push", "push.json") else { panic!("not a push") };
    assert_eq!(push.git_ref, "refs/heads/master");
    assert_eq!(push.commits.len(), 1);
    assert_eq!(push.commits[0].modified, ["README.md"]);
    assert_eq!(push.head_commit.as_ref().unwrap().author.username.as_deref(), Some("Codertocat"));
    assert_eq!(push.repository.full_name, "Codertocat/Hello-World");
    // push payloads carry epoch seconds where others carry strings: kept untyped in `extra`.
    assert_eq!(push.repository.extra["pushed_at"], 1557933657);
    assert!(push.extra["compare"].as_str().unwrap().contains("/compare/"));
    assert_eq!(push.installation.as_ref().unwrap().id, 2311213);
}

#[test]
fn pull_request_is_typed() {
    let event = parse("pull_request", "pull_request.opened.json");
    assert_eq!(event.name(), "pull_request");
    assert_eq!(event.action(), Some("opened"));
    assert_eq!(event.installation_id(), Some(2311213));
    let WebhookEvent::PullRequest(pr) = event else { panic!("not a pull request") };
    assert_eq!(pr.number, 2);
    assert_eq!(pr.pull_request.head.branch, "changes");
    assert_eq!(pr.pull_request.base.sha, "f95f852bd8fca8fcc58a9a2d6c842781e32a215e");
    assert_eq!(pr.pull_request.draft, Some(false));
    assert_eq!(pr.pull_request.extra["additions"], 1);
    assert_eq!(pr.repository.owner.kind.as_deref(), Some("User"));
}

#[test]
fn issues_and_comments_are_typed() {
    let WebhookEvent::Issues(issue) = parse("issues", "issues.opened.json") else { panic!() };
    assert_eq!(issue.action, "opened");
    assert_eq!(issue.issue.labels[0].name, "bug");
    assert!(issue.issue.pull_request.is_none());
    assert_eq!(issue.issue.extra["reactions"]["total_count"], 0);

    let event = parse("issue_comment", "issue_comment.created.json");
    assert_eq!(event.repository().unwrap().name, "Hello-World");
    let WebhookEvent::IssueComment(comment) = event else { panic!() };
    assert_eq!(comment.comment.id, 492700400);
    assert!(comment.comment.body.starts_with("You are totally right"));
}

#[test]
fn installation_events_are_typed() {
    let WebhookEvent::Installation(installation) = parse("installation", "installation.created.json") else { panic!() };
    assert_eq!(installation.installation.app_id, Some(31415));
    assert_eq!(installation.installation.permissions["issues"], "write");
    assert_eq!(installation.repositories.as_ref().unwrap().len(), 2);
    assert_eq!(installation.installation.extra["client_id"], "Iv1.8a61f9b3a7aba766");

    let event = parse("installation_repositories", "installation_repositories.added.json");
    assert_eq!(event.installation_id(), Some(2311213));
    let WebhookEvent::InstallationRepositories(added) = event else { panic!() };
    assert_eq!(added.repositories_added[0].full_name, "octo-org/Space");
    assert!(added.repositories_removed.is_empty());
}

#[test]
fn check_suite_and_ping_are_typed() {
    let WebhookEvent::CheckSuite(suite) = parse("check_suite", "check_suite.requested.json") else { panic!() };
    assert_eq!(suite.check_suite.head_sha, "ec26c3e57ca3a959ca5aad62de7213c562f8c821");
    assert_eq!(suite.check_suite.pull_requests.len(), 1);
    assert_eq!(suite.check_suite.extra["app"]["slug"], "chitty-bot");

    let WebhookEvent::Ping(ping) = parse("ping", "ping.json") else { panic!() };
    assert_eq!(ping.hook_id, Some(109948940));
    assert_eq!(ping.hook.as_ref().unwrap().events, ["*"]);
}

#[test]
fn unknown_events_arrive_untyped() {
    let event = parse("star", "star.created.json");
    assert_eq!(event.name(), "star");
    assert_eq!(event.action(), Some("created"));
    assert_eq!(event.installation_id(), Some(2311213));
    let WebhookEvent::Other { payload, .. } = event else { panic!() };
    assert_eq!(payload["starred_at"], "2019-05-15T15:20:40Z");
}

#[test]
fn typed_events_round_trip_without_losing_fields() {
    for (event, name) in [("pull_request", "pull_request.opened.json"), ("push", "push.json")] {
        let raw: serde_json::Value = serde_json::from_slice(&fixture(name)).unwrap();
        let back = match parse(event, name) {
            WebhookEvent::PullRequest(e) => serde_json::to_value(e).unwrap(),
            WebhookEvent::Push(e) => serde_json::to_value(e).unwrap(),
            other => panic!("{other:?}"),
        };
        assert_eq!(back, raw, "{name}");
    }
}

#[test]
fn wrong_shapes_are_typed_errors() {
    let missing_number = br#"{"action":"opened","pull_request":{}}"#;
    assert!(matches!(WebhookEvent::parse("pull_request", missing_number), Err(Error::InvalidPayload { .. })));
    assert!(matches!(WebhookEvent::parse("star", b"[1,2]"), Err(Error::InvalidPayload { .. })));
    assert!(matches!(WebhookEvent::parse("ping", b"{\"zen\":"), Err(Error::InvalidPayload { .. })));
    let Err(Error::InvalidPayload { reason }) = WebhookEvent::parse("ping", br#"{"hook_id":1}"#) else { panic!() };
    assert!(reason.contains("missing field `zen`"), "{reason}");
    let Err(Error::InvalidPayload { reason }) = WebhookEvent::parse("ping", br#"{"zen":"a","zen":"b"}"#) else {
        panic!()
    };
    assert!(reason.contains("duplicate field `zen`"), "{reason}");
    let escaped_key = WebhookEvent::parse("ping", br#"{"z\u0065n":"escaped keys are keys too"}"#).unwrap();
    assert!(matches!(escaped_key, WebhookEvent::Ping(ping) if ping.zen == "escaped keys are keys too"));
    let huge = br#"{"zen":"z","hook_id":184467440737095516150}"#;
    assert!(matches!(WebhookEvent::parse("ping", huge), Err(Error::InvalidPayload { .. })));
}

#[test]
fn release_workflow_run_check_run_and_review_are_typed() {
    let WebhookEvent::Release(release) = parse("release", "release.published.json") else { panic!() };
    assert_eq!((release.release.tag_name.as_str(), release.release.draft), ("v1.0.0", false));
    assert_eq!(release.release.author.as_ref().unwrap().login, "Codertocat");
    let WebhookEvent::WorkflowRun(run) = parse("workflow_run", "workflow_run.completed.json") else { panic!() };
    assert_eq!((run.workflow_run.run_number, run.workflow_run.conclusion.as_deref()), (562, Some("failure")));
    assert_eq!(run.workflow_run.event, "push");
    let WebhookEvent::CheckRun(check) = parse("check_run", "check_run.rerequested.json") else { panic!() };
    assert_eq!(check.check_run.head_sha, "ec26c3e57ca3a959ca5aad62de7213c562f8c821");
    assert_eq!(check.installation.as_ref().unwrap().id, 2311213);
    let event = parse("pull_request_review", "pull_request_review.submitted.json");
    assert_eq!((event.action(), event.installation_id()), (Some("submitted"), Some(2311213)));
    assert_eq!(event.repository().unwrap().full_name, "Codertocat/Hello-World");
    let WebhookEvent::PullRequestReview(review) = event else { panic!() };
    assert_eq!((review.review.state.as_str(), review.pull_request.number), ("commented", 2));
    assert!(review.review.submitted_at.is_some());

    for (event, name) in [
        ("release", "release.published.json"),
        ("workflow_run", "workflow_run.completed.json"),
        ("check_run", "check_run.rerequested.json"),
    ] {
        let raw: serde_json::Value = serde_json::from_slice(&fixture(name)).unwrap();
        let back = match parse(event, name) {
            WebhookEvent::Release(e) => serde_json::to_value(e).unwrap(),
            WebhookEvent::WorkflowRun(e) => serde_json::to_value(e).unwrap(),
            WebhookEvent::CheckRun(e) => serde_json::to_value(e).unwrap(),
            other => panic!("{other:?}"),
        };
        assert_eq!(back, raw, "{name}");
    }
    let missing_tag = br#"{"action":"published","release":{"id":1},"repository":{},"sender":{}}"#;
    assert!(matches!(WebhookEvent::parse("release", missing_tag), Err(Error::InvalidPayload { .. })));
}
