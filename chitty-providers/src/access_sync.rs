//! Keeps a gateway's copy of tenants and keys current: reloads on every change signal from the store
//! (PostgreSQL `NOTIFY`, see [`crate::postgres`]) and on a fixed interval as a backstop.
//!
//! ```no_run
//! # async fn run(gateway: chitty_core::gateway::Gateway) {
//! use std::time::Duration;
//! use chitty_providers::access_sync::AccessSync;
//!
//! // Without a change stream, the interval alone bounds how stale a replica's keys can be.
//! let sync = AccessSync::spawn(gateway, None, Duration::from_secs(1));
//! # drop(sync);
//! # }
//! ```

use std::time::Duration;

use chitty_core::gateway::Gateway;
use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};
use tokio::task::JoinHandle;

/// The background task; it stops when this is dropped.
#[derive(Debug)]
pub struct AccessSync {
    task: JoinHandle<()>,
}

impl AccessSync {
    /// Reloads `gateway`'s tenants and keys whenever `changes` yields and every `full_refresh` (at least
    /// 100 ms). A failed reload is logged and retried at the next signal or tick; the gateway keeps
    /// authenticating against its last good copy meanwhile.
    pub fn spawn(gateway: Gateway, changes: Option<BoxStream<'static, ()>>, full_refresh: Duration) -> AccessSync {
        let mut changes = changes.unwrap_or_else(|| Box::pin(futures::stream::pending()));
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(full_refresh.max(Duration::from_millis(100)));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tokio::select! {
                    signal = changes.next() => {
                        if signal.is_none() {
                            // The store can no longer signal: fall back to the interval alone.
                            changes = Box::pin(futures::stream::pending());
                            continue;
                        }
                        // A burst of changes needs one reload, not one each.
                        while let Some(Some(())) = changes.next().now_or_never() {}
                    }
                    _ = tick.tick() => {}
                }
                if let Err(e) = gateway.reload_access().await {
                    tracing::warn!(error = %e, "reloading tenants and keys failed; keeping the last copy");
                }
            }
        });
        AccessSync { task }
    }
}

impl Drop for AccessSync {
    fn drop(&mut self) {
        self.task.abort();
    }
}
