//! # chitty-testkit
//!
//! Conformance suites that every implementation of chitty's traits runs, mock upstreams, fault injection,
//! fixtures and synthetic data generators.

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod mock;
/// A mock GitHub REST API (App tokens, rate limits, ETags, pagination, scripted faults).
pub mod github_api;
/// The conformance suite every `Compressor` runs: round trip, each corruption class, wrong and missing base.
pub mod compressor;
/// Realistic base / fine-tune safetensors pairs (BF16/F16/F32), deterministic from a seed.
pub mod model_pairs;
pub mod mock_upstream;
pub mod provider;
