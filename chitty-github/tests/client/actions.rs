//! Each action's request shape, and what it returns.

use chitty_core::Timestamp;
use chitty_github::client::{
    CheckAnnotation, CheckAnnotationLevel, CheckConclusion, CheckRunOutput, CheckRunStatus, CreateCheckRun, Method,
    UpdateCheckRun,
};
use serde_json::json;

use super::Harness;

#[tokio::test]
async fn comments_on_an_issue_or_pull_request() {
    let h = Harness::new().await;
    let comment = h.repo().create_comment("octo-org", "hello", 7, "Looks good **to me**").await.unwrap();
    assert_eq!(comment.body.as_deref(), Some("Looks good **to me**"));
    assert!(comment.html_url.unwrap().contains("/octo-org/hello/issues/7#issuecomment-"));
    assert_eq!(comment.extra["user"]["login"], "chitty-test[bot]");

    let sent = h.rest_requests().pop().unwrap();
    assert_eq!((sent.method.clone(), sent.path.as_str()), (Method::POST, "/repos/octo-org/hello/issues/7/comments"));
    assert_eq!(sent.header("content-type"), Some("application/json"));
    assert_eq!(sent.json().unwrap(), json!({ "body": "Looks good **to me**" }));
}

#[tokio::test]
async fn adds_and_removes_labels_with_names_encoded() {
    let h = Harness::new().await;
    let labels = h.repo().add_labels("o", "r", 3, &["bug", "needs review"]).await.unwrap();
    let names: Vec<_> = labels.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["bug", "needs review"]);
    let add = h.rest_requests().pop().unwrap();
    assert_eq!((add.method.clone(), add.path.as_str()), (Method::POST, "/repos/o/r/issues/3/labels"));
    assert_eq!(add.json().unwrap(), json!({ "labels": ["bug", "needs review"] }));

    let left = h.repo().remove_label("o", "r", 3, "needs review").await.unwrap();
    assert_eq!(left.len(), 1);
    let remove = h.rest_requests().pop().unwrap();
    assert_eq!(
        (remove.method.clone(), remove.path.as_str()),
        (Method::DELETE, "/repos/o/r/issues/3/labels/needs%20review")
    );
    assert!(remove.body.is_empty());

    let err = h.repo().remove_label("o", "r", 3, "needs review").await.unwrap_err();
    assert!(err.is_not_found());
    let core: chitty_core::Error = err.into();
    assert_eq!(core.status(), 404);
}

#[tokio::test]
async fn creates_and_updates_a_check_run() {
    let h = Harness::new().await;
    let create = CreateCheckRun::new("review", "6dcb09b5b57875f334f61aebed695e2e4193db5e")
        .with_status(CheckRunStatus::InProgress)
        .with_started_at(Timestamp(1_790_000_000_000))
        .with_external_id("job-1");
    let run = h.repo().create_check_run("o", "r", &create).await.unwrap();
    assert_eq!(run.status, Some(CheckRunStatus::InProgress));
    assert_eq!(run.name.as_deref(), Some("review"));
    let sent = h.rest_requests().pop().unwrap();
    assert_eq!((sent.method.clone(), sent.path.as_str()), (Method::POST, "/repos/o/r/check-runs"));
    assert_eq!(
        sent.json().unwrap(),
        json!({
            "name": "review",
            "head_sha": "6dcb09b5b57875f334f61aebed695e2e4193db5e",
            "external_id": "job-1",
            "status": "in_progress",
            "started_at": "2026-09-21T14:13:20Z",
        })
    );

    let output = CheckRunOutput::new("2 findings", "Review finished.").with_annotation(
        CheckAnnotation::new("src/lib.rs", 10, 12, CheckAnnotationLevel::Failure, "unwrap on user input")
            .with_title("panic"),
    );
    let update = UpdateCheckRun::completed(CheckConclusion::Failure)
        .with_completed_at(Timestamp(1_790_000_060_000))
        .with_output(output);
    let updated = h.repo().update_check_run("o", "r", run.id, &update).await.unwrap();
    assert_eq!(updated.conclusion, Some(CheckConclusion::Failure));
    assert_eq!(updated.status, Some(CheckRunStatus::Completed));
    let sent = h.rest_requests().pop().unwrap();
    assert_eq!((sent.method.clone(), sent.path.clone()), (Method::PATCH, format!("/repos/o/r/check-runs/{}", run.id)));
    assert_eq!(
        sent.json().unwrap(),
        json!({
            "status": "completed",
            "conclusion": "failure",
            "completed_at": "2026-09-21T14:14:20Z",
            "output": {
                "title": "2 findings",
                "summary": "Review finished.",
                "annotations": [{
                    "path": "src/lib.rs", "start_line": 10, "end_line": 12, "annotation_level": "failure",
                    "message": "unwrap on user input", "title": "panic",
                }],
            },
        })
    );

    assert_eq!(super::api_status(h.repo().update_check_run("o", "r", 999_999, &update).await), 404);
}
