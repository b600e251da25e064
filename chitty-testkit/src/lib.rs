//! # chitty-testkit
//!
//! Conformance suites that every implementation of chitty's traits runs, mock upstreams, fault injection,
//! fixtures and synthetic data generators.

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod mock;
