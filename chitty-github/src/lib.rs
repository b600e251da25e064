//! # chitty-github
//!
//! GitHub App webhook intake, durable queue, typed events and handlers, and the App REST client.
//! (Filled in by the GitHub issue.)
