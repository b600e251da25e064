//! # chitty-testkit
//!
//! Conformance suites that every implementation of chitty's traits runs, mock upstreams, fault injection,
//! fixtures and synthetic data generators.

// A failed expectation in a conformance suite is a test failure: panicking is how suites report.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

/// The `BudgetStore` conformance suite.
pub mod budget;
/// The `Cache` conformance suite.
pub mod cache;
/// The conformance suite every `Compressor` runs: round trip, each corruption class, wrong and missing base.
pub mod compressor;
/// The `EventSink` conformance suite.
pub mod events;
/// Real-shaped OpenAI JSON fixtures.
pub mod fixtures;
/// A mock GitHub REST API (App tokens, rate limits, ETags, pagination, scripted faults).
pub mod github_api;
/// A deterministic in-process `Provider`.
pub mod mock;
pub mod mock_upstream;
/// Realistic base / fine-tune safetensors pairs (BF16/F16/F32), deterministic from a seed.
pub mod model_pairs;
pub mod provider;
