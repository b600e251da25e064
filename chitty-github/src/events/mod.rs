//! Typed webhook payloads for the events an App usually handles, keeping every field GitHub adds
//! in an `extra` map; any other event arrives as [`WebhookEvent::Other`] with its JSON.
//!
//! ```
//! use chitty_github::events::WebhookEvent;
//!
//! let payload = br#"{"zen": "Non-blocking is better than blocking.", "hook_id": 42}"#;
//! match WebhookEvent::parse("ping", payload)? {
//!     WebhookEvent::Ping(ping) => assert_eq!(ping.hook_id, Some(42)),
//!     other => panic!("unexpected {other:?}"),
//! }
//! let other = WebhookEvent::parse("star", br#"{"action": "created", "starred_at": null}"#)?;
//! assert_eq!(other.action(), Some("created"));
//! # Ok::<(), chitty_github::Error>(())
//! ```

pub mod catalog;
mod models;
mod typed;

pub use models::*;
use serde::Deserialize;
use serde_json::Value;
pub use typed::*;

use crate::error::{Error, Result};

/// A parsed webhook payload.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum WebhookEvent {
    /// `push`.
    Push(Box<PushEvent>),
    /// `pull_request`.
    PullRequest(Box<PullRequestEvent>),
    /// `issues`.
    Issues(Box<IssuesEvent>),
    /// `issue_comment`.
    IssueComment(Box<IssueCommentEvent>),
    /// `installation`.
    Installation(Box<InstallationEvent>),
    /// `installation_repositories`.
    InstallationRepositories(Box<InstallationRepositoriesEvent>),
    /// `check_suite`.
    CheckSuite(Box<CheckSuiteEvent>),
    /// `ping`, sent when a hook is created.
    Ping(Box<PingEvent>),
    /// `release`.
    Release(Box<ReleaseEvent>),
    /// `workflow_run`.
    WorkflowRun(Box<WorkflowRunEvent>),
    /// `check_run`.
    CheckRun(Box<CheckRunEvent>),
    /// `pull_request_review`.
    PullRequestReview(Box<PullRequestReviewEvent>),
    /// Any other event, untyped.
    Other {
        /// The `X-GitHub-Event` name.
        event: String,
        /// The payload.
        payload: Value,
    },
}

impl WebhookEvent {
    /// Parses the JSON `payload` of the event named `event` (the `X-GitHub-Event` header).
    ///
    /// Unknown events become [`WebhookEvent::Other`]; a known event whose payload lacks a required
    /// field, or any input that is not a JSON object, is an [`Error::InvalidPayload`].
    pub fn parse(event: &str, payload: &[u8]) -> Result<Self> {
        fn typed<'a, T: Deserialize<'a>>(payload: &'a [u8]) -> Result<Box<T>> {
            serde_json::from_slice(payload).map(Box::new).map_err(Error::invalid_payload)
        }
        Ok(match event {
            "push" => WebhookEvent::Push(typed(payload)?),
            "pull_request" => WebhookEvent::PullRequest(typed(payload)?),
            "issues" => WebhookEvent::Issues(typed(payload)?),
            "issue_comment" => WebhookEvent::IssueComment(typed(payload)?),
            "installation" => WebhookEvent::Installation(typed(payload)?),
            "installation_repositories" => WebhookEvent::InstallationRepositories(typed(payload)?),
            "check_suite" => WebhookEvent::CheckSuite(typed(payload)?),
            "ping" => WebhookEvent::Ping(typed(payload)?),
            "release" => WebhookEvent::Release(typed(payload)?),
            "workflow_run" => WebhookEvent::WorkflowRun(typed(payload)?),
            "check_run" => WebhookEvent::CheckRun(typed(payload)?),
            "pull_request_review" => WebhookEvent::PullRequestReview(typed(payload)?),
            other => {
                let payload: Value = serde_json::from_slice(payload).map_err(Error::invalid_payload)?;
                if !payload.is_object() {
                    return Err(Error::invalid_payload("the payload is not a JSON object"));
                }
                WebhookEvent::Other { event: other.to_owned(), payload }
            }
        })
    }

    /// The event name (`pull_request`, …).
    pub fn name(&self) -> &str {
        match self {
            WebhookEvent::Push(_) => "push",
            WebhookEvent::PullRequest(_) => "pull_request",
            WebhookEvent::Issues(_) => "issues",
            WebhookEvent::IssueComment(_) => "issue_comment",
            WebhookEvent::Installation(_) => "installation",
            WebhookEvent::InstallationRepositories(_) => "installation_repositories",
            WebhookEvent::CheckSuite(_) => "check_suite",
            WebhookEvent::Ping(_) => "ping",
            WebhookEvent::Release(_) => "release",
            WebhookEvent::WorkflowRun(_) => "workflow_run",
            WebhookEvent::CheckRun(_) => "check_run",
            WebhookEvent::PullRequestReview(_) => "pull_request_review",
            WebhookEvent::Other { event, .. } => event,
        }
    }

    /// The payload's `action`, for events that have one.
    pub fn action(&self) -> Option<&str> {
        match self {
            WebhookEvent::Push(_) | WebhookEvent::Ping(_) => None,
            WebhookEvent::PullRequest(e) => Some(&e.action),
            WebhookEvent::Issues(e) => Some(&e.action),
            WebhookEvent::IssueComment(e) => Some(&e.action),
            WebhookEvent::Installation(e) => Some(&e.action),
            WebhookEvent::InstallationRepositories(e) => Some(&e.action),
            WebhookEvent::CheckSuite(e) => Some(&e.action),
            WebhookEvent::Release(e) => Some(&e.action),
            WebhookEvent::WorkflowRun(e) => Some(&e.action),
            WebhookEvent::CheckRun(e) => Some(&e.action),
            WebhookEvent::PullRequestReview(e) => Some(&e.action),
            WebhookEvent::Other { payload, .. } => payload.get("action").and_then(Value::as_str),
        }
    }

    /// The App installation the event was sent for, when it was sent to an App.
    pub fn installation_id(&self) -> Option<u64> {
        match self {
            WebhookEvent::Push(e) => e.installation.as_ref().map(|i| i.id),
            WebhookEvent::PullRequest(e) => e.installation.as_ref().map(|i| i.id),
            WebhookEvent::Issues(e) => e.installation.as_ref().map(|i| i.id),
            WebhookEvent::IssueComment(e) => e.installation.as_ref().map(|i| i.id),
            WebhookEvent::Installation(e) => Some(e.installation.id),
            WebhookEvent::InstallationRepositories(e) => Some(e.installation.id),
            WebhookEvent::CheckSuite(e) => e.installation.as_ref().map(|i| i.id),
            WebhookEvent::Release(e) => e.installation.as_ref().map(|i| i.id),
            WebhookEvent::WorkflowRun(e) => e.installation.as_ref().map(|i| i.id),
            WebhookEvent::CheckRun(e) => e.installation.as_ref().map(|i| i.id),
            WebhookEvent::PullRequestReview(e) => e.installation.as_ref().map(|i| i.id),
            WebhookEvent::Ping(_) => None,
            WebhookEvent::Other { payload, .. } => {
                payload.get("installation").and_then(|i| i.get("id")).and_then(Value::as_u64)
            }
        }
    }

    /// The repository the event is about, when there is exactly one.
    pub fn repository(&self) -> Option<&Repository> {
        match self {
            WebhookEvent::Push(e) => Some(&e.repository),
            WebhookEvent::PullRequest(e) => Some(&e.repository),
            WebhookEvent::Issues(e) => Some(&e.repository),
            WebhookEvent::IssueComment(e) => Some(&e.repository),
            WebhookEvent::CheckSuite(e) => Some(&e.repository),
            WebhookEvent::Release(e) => Some(&e.repository),
            WebhookEvent::WorkflowRun(e) => Some(&e.repository),
            WebhookEvent::CheckRun(e) => Some(&e.repository),
            WebhookEvent::PullRequestReview(e) => Some(&e.repository),
            WebhookEvent::Ping(e) => e.repository.as_ref(),
            WebhookEvent::Installation(_) | WebhookEvent::InstallationRepositories(_) | WebhookEvent::Other { .. } => {
                None
            }
        }
    }
}

/// The fields the intake reads from every payload: it checks that the body is one JSON object
/// and takes the `action`, without building the typed event.
#[derive(Debug, Deserialize)]
pub(crate) struct PayloadEnvelope<'a> {
    #[serde(borrow, default)]
    pub(crate) action: Option<std::borrow::Cow<'a, str>>,
}

impl<'a> PayloadEnvelope<'a> {
    /// Validates `payload` as a JSON object and reads its `action`.
    pub(crate) fn read(payload: &'a [u8]) -> Result<Self> {
        // Derived structs also deserialize from JSON arrays; GitHub only sends objects.
        if payload.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(Error::invalid_payload("the payload is not a JSON object"));
        }
        serde_json::from_slice(payload).map_err(Error::invalid_payload)
    }
}
