//! The ready-made handlers enabled from a host's configuration file: `[github.review]`,
//! `[github.triage]` and `[github.push_analysis]` as TOML, their defaults, typos and missing models
//! refused, and the handlers registered from them acting as registered from code.
#![cfg(feature = "client")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use chitty_core::Provider;
use chitty_github::Error;
use chitty_github::analysis::review::ReviewConfig;
use chitty_github::analysis::{HandlerSection, HandlersConfig, PushAnalysisConfig};
use chitty_github::processor::ProcessOutcome;
use chitty_github::testing::{SignedDelivery, fixtures};
use common::app::MockApp;
use common::model::ScriptedModel;
use http::Method;
use serde::Deserialize;
use serde_json::json;

/// A host's configuration file, of which chitty-github reads the `[github]` table.
#[derive(Debug, Deserialize)]
struct HostConfig {
    github: HandlersConfig,
}

fn parse(text: &str) -> Result<HandlersConfig, toml::de::Error> {
    toml::from_str::<HostConfig>(text).map(|host| host.github)
}

#[test]
fn sections_turn_handlers_on_with_their_defaults() {
    let config = parse(
        r#"
        [github.review]
        model = "gpt-4.1-mini"
        max_tokens = 1024

        [github.triage]
        enabled = true
        model = "gpt-4.1-mini"
        embedding_model = "text-embedding-3-small"

        [github.push_analysis]
        "#,
    )
    .unwrap();
    assert_eq!(config.review, HandlerSection::Enabled(ReviewConfig::new("gpt-4.1-mini").with_max_tokens(1024)));
    let triage = config.triage.config().unwrap();
    assert_eq!((triage.max_tokens, triage.embedding_model.as_deref()), (512, Some("text-embedding-3-small")));
    assert_eq!(config.push_analysis, HandlerSection::Enabled(PushAnalysisConfig::default()));

    // Absent, or switched off (then nothing else in it is needed).
    let off = parse("[github.review]\nenabled = false\n").unwrap();
    assert!(!off.review.is_enabled() && !off.triage.is_enabled() && !off.push_analysis.is_enabled());
    assert_eq!(parse("[github]\n").unwrap(), HandlersConfig::default());
}

#[test]
fn typos_and_bad_values_are_refused_at_start_up() {
    for (text, expected) in [
        ("[github.reveiw]\nmodel = \"m\"\n", "reveiw"),
        ("[github.review]\nmodel = \"m\"\nmax_token = 5\n", "max_token"),
        ("[github.review]\nmax_tokens = 5\n", "model"),
        ("[github.review]\nenabled = \"yes\"\nmodel = \"m\"\n", "enabled"),
        ("[github.push_analysis]\nmax_file_byte = 1\n", "max_file_byte"),
        ("[github]\nreview = 3\n", "table"),
    ] {
        let error = parse(text).unwrap_err().to_string();
        assert!(error.contains(expected), "{text}: {error}");
    }
}

#[tokio::test]
async fn review_and_triage_need_a_model() {
    let mock = MockApp::start().await;
    let config = parse("[github.review]\nmodel = \"m\"\n").unwrap();
    let error = config.register(mock.processor(1), None).unwrap_err();
    assert!(matches!(&error, Error::InvalidConfig { reason } if reason.contains("[github.review]")), "{error}");
    let config = parse("[github.triage]\nmodel = \" \"\n").unwrap();
    let model: Arc<dyn Provider> = ScriptedModel::answering(&[]);
    let error = config.register(mock.processor(1), Some(model)).unwrap_err();
    assert!(error.to_string().contains("needs a `model`"), "{error}");
    let config = parse("[github.triage]\nmodel = \"m\"\nduplicate_threshold = 1.5\n").unwrap();
    assert!(config.register(mock.processor(1), Some(ScriptedModel::answering(&[]))).is_err());
    // Push analysis alone needs none.
    let config = parse("[github.push_analysis]\n").unwrap();
    assert!(config.register(mock.processor(1), None).unwrap().try_build().is_ok());
}

#[tokio::test]
async fn handlers_from_the_file_act_as_those_from_code() {
    let mock = MockApp::start().await;
    let pull = "/repos/Codertocat/Hello-World/pulls/2";
    mock.github.set_resource(
        &format!("{pull}/files"),
        json!([{ "filename": "src/app.rs", "status": "modified", "patch": "@@ -1 +1,2 @@\n a\n+b" }]),
    );
    mock.github.set_resource(&format!("{pull}/reviews"), json!([]));
    let config = parse(
        r#"
        [github.review]
        model = "review-model"
        max_tokens = 300
        [github.triage]
        enabled = false
        "#,
    )
    .unwrap();
    let model = ScriptedModel::answering(&[r#"{"summary":"Fine.","risk":"low","comments":[]}"#]);
    let processor = config.register(mock.processor(1), Some(model.clone())).unwrap().try_build().unwrap();

    let pr = processor.process(SignedDelivery::new("pull_request", fixtures::PULL_REQUEST_OPENED).to_delivery()).await;
    assert!(matches!(pr, ProcessOutcome::Handled { .. }), "{pr:?}");
    assert_eq!(mock.github.count(Method::POST, &format!("{pull}/reviews")), 1);
    let asked = model.requests.lock().unwrap()[0].clone();
    assert_eq!((asked.model.as_str(), asked.max_tokens), ("review-model", Some(300)), "the file's model and cap");

    // Triage is off and push analysis absent: no handler for either.
    let issue = processor.process(SignedDelivery::new("issues", fixtures::ISSUES_OPENED).to_delivery()).await;
    assert!(matches!(issue, ProcessOutcome::Unhandled), "{issue:?}");
    let push = processor.process(SignedDelivery::new("push", fixtures::PUSH).to_delivery()).await;
    assert!(matches!(push, ProcessOutcome::Unhandled), "{push:?}");
}
