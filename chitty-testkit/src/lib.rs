//! # chitty-testkit
//!
//! Conformance suites that every implementation of chitty's traits runs, mock upstreams, fault injection,
//! fixtures and synthetic data generators.
