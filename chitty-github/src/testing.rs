//! Helpers for App authors' own tests: deliveries signed as GitHub signs them, and real-shaped
//! payloads of the typed events.
//!
//! ```
//! use std::sync::Arc;
//! use chitty_github::intake::WebhookIntake;
//! use chitty_github::queue::InProcessQueue;
//! use chitty_github::testing::{SignedDelivery, fixtures};
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let delivery = SignedDelivery::new("pull_request", fixtures::PULL_REQUEST_OPENED);
//! let (queue, mut queued) = InProcessQueue::bounded(8);
//! let intake = WebhookIntake::builder([delivery.secret().clone()]).queue(Arc::new(queue)).build()?;
//! assert_eq!(intake.handle(delivery.to_request()).await.status(), 202);
//! assert!(queued.recv().await.is_some());
//! // Or straight to a processor, without the intake:
//! let verified = delivery.to_delivery();
//! assert_eq!(verified.action.as_deref(), Some("opened"));
//! # Ok::<(), chitty_github::Error>(())
//! # }).unwrap();
//! ```

use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use chitty_core::Timestamp;
use http::Request;

use crate::delivery::{
    Delivery, HEADER_DELIVERY, HEADER_EVENT, HEADER_HOOK_ID, HEADER_SIGNATURE, HEADER_TARGET_ID, HEADER_TARGET_TYPE,
};
use crate::signature::WebhookSecret;

/// The secret [`SignedDelivery`] signs with unless given another.
pub const TEST_SECRET: &str = "chitty-test-webhook-secret";
/// The path [`SignedDelivery::to_request`] posts to.
pub const TEST_WEBHOOK_PATH: &str = crate::manifest::DEFAULT_WEBHOOK_PATH;

/// Numbers successive delivery GUIDs, so that deliveries built without one are not duplicates.
static NEXT_DELIVERY: AtomicU64 = AtomicU64::new(1);

/// A webhook delivery as GitHub sends it to an App: JSON body, `X-GitHub-Event`, a fresh
/// `X-GitHub-Delivery`, the hook and installation-target headers, and `X-Hub-Signature-256`.
#[derive(Debug, Clone)]
pub struct SignedDelivery {
    event: String,
    payload: Bytes,
    delivery_id: String,
    hook_id: String,
    target_id: String,
    secret: WebhookSecret,
    received_at: Timestamp,
}

impl SignedDelivery {
    /// A delivery of `event` with `payload`, signed with [`TEST_SECRET`].
    pub fn new(event: impl Into<String>, payload: impl Into<Bytes>) -> Self {
        let n = NEXT_DELIVERY.fetch_add(1, Ordering::Relaxed);
        SignedDelivery {
            event: event.into(),
            payload: payload.into(),
            delivery_id: format!("00000000-0000-4000-8000-{n:012}"),
            hook_id: "109948940".to_owned(),
            target_id: "31415".to_owned(),
            secret: WebhookSecret::new(TEST_SECRET),
            received_at: Timestamp(0),
        }
    }

    /// Signs with `secret` instead.
    pub fn with_secret(mut self, secret: WebhookSecret) -> Self {
        self.secret = secret;
        self
    }

    /// Uses this delivery GUID (GitHub keeps it on redelivery: reuse it to test de-duplication).
    pub fn with_delivery_id(mut self, id: impl Into<String>) -> Self {
        self.delivery_id = id.into();
        self
    }

    /// Sets `X-GitHub-Hook-ID`.
    pub fn with_hook_id(mut self, id: impl Into<String>) -> Self {
        self.hook_id = id.into();
        self
    }

    /// Sets the time [`to_delivery`](Self::to_delivery) stamps as received.
    pub fn received_at(mut self, at: Timestamp) -> Self {
        self.received_at = at;
        self
    }

    /// The secret it is signed with.
    pub fn secret(&self) -> &WebhookSecret {
        &self.secret
    }

    /// The delivery GUID.
    pub fn delivery_id(&self) -> &str {
        &self.delivery_id
    }

    /// The payload.
    pub fn payload(&self) -> &Bytes {
        &self.payload
    }

    /// The `X-Hub-Signature-256` value (`sha256=` and 64 hex digits).
    pub fn signature(&self) -> String {
        self.secret.sign(&self.payload)
    }

    /// The request GitHub would send, to [`TEST_WEBHOOK_PATH`].
    pub fn to_request(&self) -> Request<Bytes> {
        let mut request = Request::new(self.payload.clone());
        *request.method_mut() = http::Method::POST;
        *request.uri_mut() = http::Uri::from_static(TEST_WEBHOOK_PATH);
        let headers = request.headers_mut();
        let mut insert = |name: &'static str, value: &str| {
            // Every value here is ASCII; one that is not (a caller's odd id) is left out, and the intake says so.
            if let Ok(value) = http::HeaderValue::from_str(value) {
                headers.insert(name, value);
            }
        };
        insert("content-type", "application/json");
        insert("user-agent", "GitHub-Hookshot/chitty-testing");
        insert(HEADER_EVENT, &self.event);
        insert(HEADER_DELIVERY, &self.delivery_id);
        insert(HEADER_HOOK_ID, &self.hook_id);
        insert(HEADER_TARGET_TYPE, "integration");
        insert(HEADER_TARGET_ID, &self.target_id);
        insert(HEADER_SIGNATURE, &self.signature());
        request
    }

    /// The verified delivery the intake would enqueue, to give a processor directly.
    pub fn to_delivery(&self) -> Delivery {
        let action = serde_json::from_slice::<serde_json::Value>(&self.payload)
            .ok()
            .and_then(|payload| payload.get("action").and_then(|a| a.as_str()).map(str::to_owned));
        Delivery {
            id: self.delivery_id.clone(),
            event: self.event.clone(),
            action,
            hook_id: Some(self.hook_id.clone()),
            target_type: Some("integration".to_owned()),
            target_id: Some(self.target_id.clone()),
            payload: self.payload.clone(),
            received_at: self.received_at,
        }
    }
}

/// Real-shaped payloads (from GitHub's documentation, trimmed), one per typed event and action.
pub mod fixtures {
    macro_rules! fixtures {
        ($($(#[$doc:meta])* $name:ident => $file:literal,)*) => {
            $($(#[$doc])* pub const $name: &str = include_str!(concat!("../tests/fixtures/", $file));)*

            /// Every fixture: its file name (`event.action.json`) and payload.
            pub const ALL: &[(&str, &str)] = &[$(($file, $name)),*];
        };
    }

    fixtures! {
        /// `push` to `refs/heads/master`.
        PUSH => "push.json",
        /// `pull_request` `opened`.
        PULL_REQUEST_OPENED => "pull_request.opened.json",
        /// `pull_request_review` `submitted`.
        PULL_REQUEST_REVIEW_SUBMITTED => "pull_request_review.submitted.json",
        /// `issues` `opened`.
        ISSUES_OPENED => "issues.opened.json",
        /// `issue_comment` `created`.
        ISSUE_COMMENT_CREATED => "issue_comment.created.json",
        /// `installation` `created`.
        INSTALLATION_CREATED => "installation.created.json",
        /// `installation` `deleted`.
        INSTALLATION_DELETED => "installation.deleted.json",
        /// `installation` `suspend`.
        INSTALLATION_SUSPEND => "installation.suspend.json",
        /// `installation` `unsuspend`.
        INSTALLATION_UNSUSPEND => "installation.unsuspend.json",
        /// `installation` `new_permissions_accepted`.
        INSTALLATION_NEW_PERMISSIONS_ACCEPTED => "installation.new_permissions_accepted.json",
        /// `installation_repositories` `added`.
        INSTALLATION_REPOSITORIES_ADDED => "installation_repositories.added.json",
        /// `installation_repositories` `removed`.
        INSTALLATION_REPOSITORIES_REMOVED => "installation_repositories.removed.json",
        /// `check_suite` `requested`.
        CHECK_SUITE_REQUESTED => "check_suite.requested.json",
        /// `check_run` `rerequested`.
        CHECK_RUN_REREQUESTED => "check_run.rerequested.json",
        /// `release` `published`.
        RELEASE_PUBLISHED => "release.published.json",
        /// `workflow_run` `completed`.
        WORKFLOW_RUN_COMPLETED => "workflow_run.completed.json",
        /// `ping`.
        PING => "ping.json",
        /// `star` `created` (an event without a typed model).
        STAR_CREATED => "star.created.json",
    }
}
