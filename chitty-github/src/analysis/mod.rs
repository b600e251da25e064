//! Repository analysis that needs no model: the added lines of a diff ([`diff`]), a secret scanner
//! over them ([`secrets`]), and, with feature `client`, the push handler that reports both as a
//! check run (`PushAnalysis`) and the pull request review by any model behind chitty-core's
//! `Provider` (`review`) and issue triage by one (`triage`).

pub mod diff;
#[cfg(feature = "client")]
mod push;
#[cfg(feature = "client")]
pub mod review;
pub mod secrets;
#[cfg(feature = "client")]
pub mod triage;

#[cfg(feature = "client")]
pub use push::{Finding, FindingKind, PushAnalysis, PushAnalysisConfig, PushReport};

/// Whether a repository owner or name can go into a REST path as it is (GitHub's own alphabet).
#[cfg(feature = "client")]
pub(crate) fn is_path_safe(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}
