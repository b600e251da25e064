//! The real clock, timer and spawner (tokio), for hosts that run chitty on a tokio runtime.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chitty_core::{Clock, Spawner, Timer, Timestamp};
use futures::future::BoxFuture;

/// The system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        // A clock before 1970 is a host misconfiguration; report the epoch rather than panic.
        let ms = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0);
        Timestamp(u64::try_from(ms).unwrap_or(u64::MAX))
    }
}

/// Sleeps on the tokio timer.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioTimer;

impl Timer for TokioTimer {
    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()> {
        Box::pin(tokio::time::sleep(duration))
    }
}

/// Spawns onto the current tokio runtime.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioSpawner;

impl Spawner for TokioSpawner {
    fn spawn(&self, future: BoxFuture<'static, ()>) {
        tokio::spawn(future);
    }
}

/// Wires the tokio runtime into a [`chitty_core::gateway::GatewayBuilder`].
pub trait TokioRuntimeExt {
    /// Uses [`SystemClock`], [`TokioTimer`] and [`TokioSpawner`].
    fn tokio_runtime(self) -> Self;
}

impl TokioRuntimeExt for chitty_core::gateway::GatewayBuilder {
    fn tokio_runtime(self) -> Self {
        self.runtime(
            std::sync::Arc::new(SystemClock),
            std::sync::Arc::new(TokioTimer),
            std::sync::Arc::new(TokioSpawner),
        )
    }
}
