#![cfg_attr(docsrs, feature(doc_cfg))]
//! # chitty-github
//!
//! A GitHub App webhook processor to embed in a host service: take deliveries safely and fast,
//! process them reliably, and act on GitHub as an App.
//!
//! The webhook path: [`intake`] (method, size cap, content type, GitHub headers and the signature
//! header's form checked before a byte of the body is read; a bound on the body bytes held unverified
//! across all requests; `X-Hub-Signature-256` checked over the raw body in constant time by
//! [`signature`]; de-duplication by delivery GUID and hook through an [`idempotency`] store) → a [`queue`] (bounded in-process, or NATS JetStream with feature
//! `nats`) → the [`processor`], which parses typed [`events`] and runs handlers registered by
//! `event` and `event.action`, with retries, a dead-letter queue and caught panics.
//!
//! ```
//! use std::sync::Arc;
//! use bytes::Bytes;
//! use chitty_github::intake::WebhookIntake;
//! use chitty_github::processor::{handler_fn, EventContext, Processor};
//! use chitty_github::queue::InProcessQueue;
//! use chitty_github::signature::WebhookSecret;
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let secret = WebhookSecret::new("It's a Secret to Everybody");
//! let (queue, deliveries) = InProcessQueue::bounded(1024);
//! let intake = WebhookIntake::builder([secret.clone()]).queue(Arc::new(queue)).build()?;
//! let processor = Arc::new(
//!     Processor::builder()
//!         .on("ping", handler_fn(|context: EventContext| async move {
//!             println!("ping from hook {:?}", context.delivery.hook_id);
//!             Ok(())
//!         }))
//!         .build(),
//! );
//! let worker = tokio::spawn(processor.clone().run(deliveries));
//!
//! let body = Bytes::from_static(br#"{"zen":"Approachable is better than simple.","hook_id":7}"#);
//! let request = http::Request::post("/api/github/webhooks")
//!     .header("content-type", "application/json")
//!     .header("x-github-event", "ping")
//!     .header("x-github-delivery", "0b989ba4-242f-11e5-81e1-c7b8e7f1d8f8")
//!     .header("x-github-hook-id", "7")
//!     .header("x-hub-signature-256", secret.sign(&body))
//!     .body(body)
//!     .unwrap();
//! assert_eq!(intake.handle(request).await.status(), 202);
//! drop(intake); // closes the queue, so the worker drains it and stops
//! worker.await.unwrap();
//! assert_eq!(processor.stats().handled, 1);
//! # Ok::<(), chitty_github::Error>(())
//! # }).unwrap();
//! ```
//!
//! The App's [`installations`] are kept in sync from `installation` and `installation_repositories`
//! events by a ready handler, in memory or in PostgreSQL. The App is registered from its
//! [`manifest`] and installed through the `setup` routes (features `server` and `client`), which keep
//! its [`credentials`]. Handlers can take their own event type
//! ([`ProcessorBuilder::on_pull_request`](processor::ProcessorBuilder::on_pull_request) and friends),
//! with an installation client in their context; [`testing`] has signed deliveries and fixtures for
//! an App's own tests, and [`analysis`] has the ready-made handlers (feature `client`): push analysis for
//! secrets and oversized files, pull request review and issue triage by any chitty-core `Provider`,
//! enabled in code or from a configuration file's `[github]` table (`analysis::HandlersConfig`).
//!
//! Features: `server` (axum route), `redis` (Redis idempotency store), `nats` (JetStream queue),
//! `client` (the GitHub App client: JWT, installation tokens, REST calls, actions; push analysis),
//! `postgres` (the PostgreSQL installation store); `server` and `client` together add the install flow.

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod analysis;
/// The GitHub App client: RS256 JWT, cached installation tokens, rate-limit aware REST calls, actions.
#[cfg(feature = "client")]
pub mod client;
pub mod credentials;
pub mod delivery;
pub mod error;
pub mod events;
pub mod idempotency;
pub mod installations;
pub mod intake;
pub mod manifest;
pub mod processor;
pub mod queue;
#[cfg(feature = "server")]
pub mod server;
#[cfg(all(feature = "server", feature = "client"))]
pub mod setup;
pub mod signature;
pub mod testing;

pub use error::{Error, Result};
