//! The real clock, timer, spawner and random source (tokio): a re-export of [`chitty_core::runtime`], kept so
//! that `chitty_providers::runtime::…` imports keep working.

pub use chitty_core::runtime::{SystemClock, SystemRandom, TokioRuntimeExt, TokioSpawner, TokioTimer};
