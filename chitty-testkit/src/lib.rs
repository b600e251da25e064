#![cfg_attr(docsrs, feature(doc_cfg))]
//! # chitty-testkit
//!
//! Conformance suites that every implementation of chitty's traits runs, mock upstreams, fault injection,
//! fixtures and synthetic data generators.
//!
//! - Conformance suites, as public functions any implementation calls (like object_store's integration
//!   suite): [`cache`], [`budget`], [`events`], [`provider`] and [`compressor`].
//! - Mocks: [`mock::MockProvider`] (deterministic, in process), [`mock_upstream`] (OpenAI, Anthropic and Ollama
//!   over HTTP with fault injection) and [`github_api`] (the GitHub REST API with rate-limit and token faults).
//! - Services: [`services`] finds the machine's Redis and NATS for tests, and runs service-backed tests so
//!   that an unreachable service shows them as ignored with the reason, never as passed.
//! - Data: [`fixtures`] (real-shaped OpenAI JSON), [`model_pairs`] (base / fine-tune safetensors pairs) and
//!   [`dataset_pairs`] (base / derivative CSV and JSON Lines files).

// A failed expectation in a conformance suite is a test failure: panicking is how suites report.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod access;
pub mod budget;
pub mod cache;
pub mod compressor;
pub mod dataset_pairs;
pub mod events;
pub mod fixtures;
pub mod github_api;
pub mod mock;
pub mod mock_upstream;
pub mod model_pairs;
pub mod provider;
pub mod ratelimit;
pub mod services;
