//! # chitty
//!
//! Facade crate: re-exports chitty-core and, behind features, the implementation crates.

pub use chitty_core as core;
#[cfg(feature = "delta")]
pub use chitty_delta as delta;
#[cfg(feature = "github")]
pub use chitty_github as github;
#[cfg(feature = "providers")]
pub use chitty_providers as providers;
#[cfg(feature = "testkit")]
pub use chitty_testkit as testkit;
