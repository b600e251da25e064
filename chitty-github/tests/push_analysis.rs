//! Push analysis against the mock GitHub API: a fake AWS key in an added line fails the check run
//! with an annotation on its line; oversized files warn; clean pushes pass; other branches are left alone.
#![cfg(feature = "client")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use chitty_github::analysis::{PushAnalysis, PushAnalysisConfig};
use chitty_github::processor::{ProcessOutcome, Processor};
use chitty_github::testing::{SignedDelivery, fixtures};
use chitty_testkit::github_api::{MockGitHub, RecordedRequest};
use common::app::MockApp;
use http::Method;
use serde_json::{Value, json};

const BEFORE: &str = "6113728f27ae82c7b1a177c8d03f9e96e0adf246";
const AFTER: &str = "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c";
const COMPARE: &str = "/repos/Codertocat/Hello-World/compare/6113728f27ae82c7b1a177c8d03f9e96e0adf246...0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c";
/// Made up, of the shape of an AWS access key ID; not a credential.
const FAKE_AWS_KEY: &str = "AKIAZ4X7Q2LM9PVB3KTR";

async fn harness(config: PushAnalysisConfig) -> (MockGitHub, Processor) {
    let mock = MockApp::start().await;
    let processor = PushAnalysis::new(config).register(mock.processor(5)).try_build().unwrap();
    (mock.github, processor)
}

fn file(name: &str, status: &str, patch: Option<&str>) -> Value {
    let mut file = json!({ "sha": "bbcd538c8e72b8c175046e27cc8f907076331401", "filename": name, "status": status,
        "additions": 3, "deletions": 1, "changes": 4 });
    if let Some(patch) = patch {
        file["patch"] = patch.into();
    }
    file
}

fn comparison(files: Vec<Value>) -> Value {
    json!({ "status": "ahead", "ahead_by": 1, "behind_by": 0, "total_commits": 1, "commits": [], "files": files })
}

async fn push(processor: &Processor, payload: &str) {
    let outcome = processor.process(SignedDelivery::new("push", payload.to_owned()).to_delivery()).await;
    assert!(matches!(outcome, ProcessOutcome::Handled { .. }), "{outcome:?}");
}

fn check_runs(github: &MockGitHub) -> Vec<RecordedRequest> {
    github.requests().into_iter().filter(|r| r.path == "/repos/Codertocat/Hello-World/check-runs").collect()
}

#[tokio::test]
async fn a_fake_aws_key_in_an_added_line_fails_the_check_run_on_that_line() {
    let (github, processor) = harness(PushAnalysisConfig::default()).await;
    let settings = format!(
        "@@ -10,4 +10,6 @@ REGION = \"eu-west-1\"\n BUCKET = \"assets\"\n-TIMEOUT = 30\n+TIMEOUT = 60\n+AWS_ACCESS_KEY_ID = \"{FAKE_AWS_KEY}\"\n context\n+DEBUG = False"
    );
    let removed_key = format!("@@ -1,2 +1,1 @@\n-OLD_KEY = \"{FAKE_AWS_KEY}\"\n kept");
    github.set_resource(
        COMPARE,
        comparison(vec![
            file("config/settings.py", "modified", Some(&settings)),
            file("docs/old.md", "modified", Some(&removed_key)),
            file("gone.py", "removed", None),
        ]),
    );
    push(&processor, fixtures::PUSH).await;

    let runs = check_runs(&github);
    assert_eq!(runs.len(), 1);
    let run = runs[0].json().unwrap();
    assert_eq!((run["head_sha"].as_str(), run["status"].as_str()), (Some(AFTER), Some("completed")));
    assert_eq!(run["conclusion"], "failure");
    let annotations = run["output"]["annotations"].as_array().unwrap();
    assert_eq!(annotations.len(), 1, "{annotations:?}");
    let annotation = &annotations[0];
    assert_eq!(annotation["path"], "config/settings.py");
    // Hunk starts at 10: line 10 context, 11 replaced TIMEOUT, 12 the key.
    assert_eq!((annotation["start_line"].as_u64(), annotation["end_line"].as_u64()), (Some(12), Some(12)));
    assert_eq!((annotation["start_column"].as_u64(), annotation["end_column"].as_u64()), (Some(22), Some(41)));
    assert_eq!(annotation["annotation_level"], "failure");
    assert!(annotation["title"].as_str().unwrap().contains("AWS access key ID"));
    assert!(!runs[0].body.windows(FAKE_AWS_KEY.len()).any(|w| w == FAKE_AWS_KEY.as_bytes()), "the key is not echoed");
    assert_eq!(github.count(Method::GET, COMPARE), 1);

    // GitHub redelivers the push (same GUID past the intake's window, or a retry): reported once.
    push(&processor, fixtures::PUSH).await;
    assert_eq!(check_runs(&github).len(), 1, "no second check run");
    assert_eq!(github.count(Method::GET, COMPARE), 1);
}

#[tokio::test]
async fn oversized_files_warn_and_a_clean_push_succeeds() {
    let (github, processor) = harness(PushAnalysisConfig::default()).await;
    github.set_resource(
        COMPARE,
        comparison(vec![
            file("src/lib.rs", "modified", Some("@@ -1 +1,2 @@\n fn main() {}\n+// a comment")),
            file("model.bin", "added", None),
            file("logo.png", "added", None),
        ]),
    );
    github.set_resource(
        "/repos/Codertocat/Hello-World/contents/model.bin",
        json!({ "type": "file", "size": 200_000_000 }),
    );
    github.set_resource("/repos/Codertocat/Hello-World/contents/logo.png", json!({ "type": "file", "size": 20_000 }));
    push(&processor, fixtures::PUSH).await;
    let run = check_runs(&github)[0].json().unwrap();
    assert_eq!(run["conclusion"], "neutral");
    let annotations = run["output"]["annotations"].as_array().unwrap();
    assert_eq!(annotations.len(), 1);
    assert_eq!(
        (annotations[0]["path"].as_str(), annotations[0]["annotation_level"].as_str()),
        (Some("model.bin"), Some("warning"))
    );
    let lookup = github.requests().into_iter().find(|r| r.path.ends_with("/contents/model.bin")).unwrap();
    assert_eq!(lookup.query.as_deref(), Some(format!("ref={AFTER}").as_str()), "sized at the pushed commit");

    let (github, processor) = harness(PushAnalysisConfig::default()).await;
    github.set_resource(
        COMPARE,
        comparison(vec![file("README.md", "modified", Some("@@ -1 +1 @@\n-Hello\n+Hello, world"))]),
    );
    push(&processor, fixtures::PUSH).await;
    let run = check_runs(&github)[0].json().unwrap();
    assert_eq!(run["conclusion"], "success");
    assert_eq!(run["output"]["title"], "No secrets or oversized files");
    let summary = run["output"]["summary"].as_str().unwrap();
    assert!(summary.contains(&format!("{}...{}", &BEFORE[..7], &AFTER[..7])), "{summary}");
    assert!(summary.contains("Scanned 1 added lines in 1 changed files"), "{summary}");
    assert!(run["output"].get("annotations").is_none());
}

#[tokio::test]
async fn only_pushes_that_move_the_default_branch_are_analysed() {
    let (github, processor) = harness(PushAnalysisConfig::default()).await;
    let base: Value = serde_json::from_str(fixtures::PUSH).unwrap();
    let edits: [(&str, Value); 4] = [
        ("ref", "refs/heads/feature".into()),
        ("ref", "refs/tags/v1.0.0".into()),
        ("before", "0000000000000000000000000000000000000000".into()),
        ("deleted", true.into()),
    ];
    for (field, value) in edits {
        let mut payload = base.clone();
        payload[field] = value;
        push(&processor, &payload.to_string()).await;
    }
    assert!(github.requests().iter().all(|r| r.path.starts_with("/app")), "{:?}", github.requests());
    assert!(check_runs(&github).is_empty());
}

#[tokio::test]
async fn more_than_fifty_findings_are_sent_in_batches() {
    let (github, processor) = harness(PushAnalysisConfig::default()).await;
    let mut patch = String::from("@@ -0,0 +1,60 @@");
    for n in 0..60 {
        patch.push_str(&format!("\n+key_{n} = -----BEGIN RSA PRIVATE KEY-----"));
    }
    github.set_resource(COMPARE, comparison(vec![file("keys.txt", "added", Some(&patch))]));
    push(&processor, fixtures::PUSH).await;
    let run = check_runs(&github)[0].json().unwrap();
    assert_eq!(run["output"]["annotations"].as_array().unwrap().len(), 50);
    assert_eq!(run["output"]["title"], "60 findings");
    let updates: Vec<_> = github
        .requests()
        .into_iter()
        .filter(|r| r.method == Method::PATCH && r.path.contains("/check-runs/"))
        .collect();
    assert_eq!(updates.len(), 1);
    let rest = updates[0].json().unwrap();
    assert_eq!(rest["output"]["annotations"].as_array().unwrap().len(), 10);
    assert_eq!(rest["output"]["annotations"][9]["start_line"], 60);
}
