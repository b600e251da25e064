#![cfg_attr(docsrs, feature(doc_cfg))]
// The README is the crate's documentation, so its example compiles and runs as a doctest.
#![doc = include_str!("../README.md")]

pub use chitty_core as core;
#[cfg(feature = "delta")]
pub use chitty_delta as delta;
#[cfg(feature = "github")]
pub use chitty_github as github;
#[cfg(feature = "providers")]
pub use chitty_providers as providers;
#[cfg(feature = "testkit")]
pub use chitty_testkit as testkit;
