//! # chitty-providers
//!
//! Implementations of chitty-core's traits, each behind a feature.
//!
//! - `memory` (default): [`runtime`] (system clock, tokio timer and spawner).

#[cfg(feature = "memory")]
pub mod runtime;
