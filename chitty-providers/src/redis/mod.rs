//! Redis backends shared by every gateway replica: a [`RedisCache`], a [`RedisBudgetStore`] and a
//! [`RedisRateLimiter`].
//!
//! Both run over one [`RedisConnection`] (a redis-rs `ConnectionManager`: one multiplexed connection
//! that reconnects by itself), and keep every key under a configurable prefix: the replicas of one gateway
//! use the same prefix, different gateways or test runs different ones.
//!
//! ```no_run
//! # async fn demo() -> chitty_core::Result<()> {
//! use std::sync::Arc;
//! use chitty_core::{BudgetStore, Cache};
//! use chitty_providers::redis::{RedisBudgetStore, RedisCache, RedisConnection};
//!
//! let connection = RedisConnection::connect("redis://127.0.0.1:6379/0").await?;
//! let cache: Arc<dyn Cache> = Arc::new(RedisCache::new(connection.clone(), "chitty"));
//! let budgets: Arc<dyn BudgetStore> = Arc::new(RedisBudgetStore::new(connection, "chitty"));
//! # Ok(()) }
//! ```
//!
//! Credentials in the URL never appear in `Debug` output or in errors: both show only
//! `host:port/db`, and an error's text has the password scrubbed out.
//!
//! Key layout (`{prefix}:` is left out when the prefix is empty):
//!
//! | key | type | holds |
//! |---|---|---|
//! | `{prefix}:cache:{hex}` | string, with `PX` TTL | one cached response |
//! | `{prefix}:budget:{tenant}:p:{period}` | hash | per budget period: `s:<account>` spent, `r:<account>` reserved, `m:<model>` and `k:<key>` spent (decimal nano-USD) |
//! | `{prefix}:budget:{tenant}:live` | hash | reservation id → its amount, period, accounts, model and key (JSON) |
//! | `{prefix}:budget:{tenant}:expiry` | sorted set | reservation id scored by lease expiry (ms) |
//! | `{prefix}:budget:{tenant}:seq` | string (`INCR`) | the last reservation id |
//! | `{prefix}:ratelimit:{tenant}` | hash, 1 h TTL | `<scope>\|r` and `<scope>\|t`: each limit's GCRA arrival time (ms) |
//!
//! The `{tenant}` braces are a Redis Cluster hash tag, so one tenant's keys share a slot and one script
//! may touch them all. The layout is Cluster-ready; the connection itself talks to one node (a primary, or a
//! Cluster-aware proxy), as redis-rs' cluster client is not built in.

mod budget;
mod cache;
mod ratelimit;

use std::fmt;
use std::sync::Arc;

use ::redis::aio::ConnectionManager;
use ::redis::{Client, IntoConnectionInfo};
use chitty_core::{Error, Result};

/// redis-rs' timeouts and reconnect policy, for [`RedisConnection::connect_with_config`].
pub use ::redis::aio::ConnectionManagerConfig;
pub use budget::RedisBudgetStore;
pub use cache::RedisCache;
pub use ratelimit::RedisRateLimiter;

/// The backend name in [`Error::Backend`].
const BACKEND: &str = "redis";

/// A Redis failure with every credential removed: the source of [`Error::Backend`] `{ backend: "redis" }`.
#[derive(Debug, thiserror::Error)]
#[error("redis {operation} on {endpoint} failed: {detail}")]
pub struct RedisBackendError {
    operation: &'static str,
    endpoint: Arc<str>,
    detail: String,
}

impl RedisBackendError {
    /// What was being done (`connect`, `GET`, `reserve` …).
    pub fn operation(&self) -> &'static str {
        self.operation
    }

    /// The server, as `host:port/db` without credentials.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }
}

/// What the connection knows about its server, for error messages without secrets.
#[derive(Clone)]
struct Endpoint {
    /// `host:port/db`.
    shown: Arc<str>,
    /// The password, kept only to scrub it from error texts.
    password: Option<Arc<str>>,
}

impl Endpoint {
    fn error(&self, operation: &'static str, detail: impl fmt::Display) -> Error {
        let mut detail = detail.to_string();
        if let Some(password) = self.password.as_deref().filter(|p| !p.is_empty()) {
            detail = detail.replace(password, "***");
        }
        Error::backend(BACKEND, RedisBackendError { operation, endpoint: self.shown.clone(), detail })
    }

    /// A failed command as a typed error: [`Error::BackendUnavailable`] (answered 503 with `Retry-After`)
    /// when Redis could not be reached, else a backend error; the password scrubbed either way.
    fn failure(&self, operation: &'static str, error: ::redis::RedisError) -> Error {
        let unreachable =
            error.is_io_error() || error.is_connection_dropped() || error.is_connection_refusal() || error.is_timeout();
        match self.error(operation, &error) {
            Error::Backend { source, .. } if unreachable => {
                Error::BackendUnavailable { backend: BACKEND, retry_after: std::time::Duration::from_secs(1), source }
            }
            other => other,
        }
    }
}

/// A connection to one Redis server, shared by the cache and the budget store; cheap to clone.
///
/// It wraps redis-rs' `ConnectionManager`, which multiplexes every command over one connection and
/// reconnects after a failure (the command that saw the failure returns an error; later ones retry).
#[derive(Clone)]
pub struct RedisConnection {
    manager: ConnectionManager,
    endpoint: Endpoint,
}

impl fmt::Debug for RedisConnection {
    // The URL may carry a password: only `host:port/db` is shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConnection").field("endpoint", &self.endpoint.shown).finish_non_exhaustive()
    }
}

impl RedisConnection {
    /// Connects to `url` (`redis://[:password@]host:port[/db]`, `rediss://` is not built in) with
    /// redis-rs' default timeouts (1 s to connect, 500 ms per response) and reconnect policy.
    pub async fn connect(url: &str) -> Result<RedisConnection> {
        RedisConnection::connect_with_config(url, ConnectionManagerConfig::new()).await
    }

    /// Connects to `url` with explicit timeouts and reconnect policy.
    pub async fn connect_with_config(url: &str, config: ConnectionManagerConfig) -> Result<RedisConnection> {
        let info = url.into_connection_info().map_err(|e| {
            // redis-rs does not quote the URL in parse errors; the replace keeps it that way if that changes.
            let detail = e.to_string().replace(url, "(the URL)");
            Error::backend(BACKEND, RedisBackendError { operation: "parse URL", endpoint: "(unparsed)".into(), detail })
        })?;
        let settings = info.redis_settings();
        let endpoint = Endpoint {
            shown: format!("{}/{}", info.addr(), settings.db()).into(),
            password: settings.password().map(Arc::from),
        };
        let client = Client::open(info).map_err(|e| endpoint.error("connect", e))?;
        let manager =
            ConnectionManager::new_with_config(client, config).await.map_err(|e| endpoint.error("connect", e))?;
        Ok(RedisConnection { manager, endpoint })
    }

    /// The server, as `host:port/db` without credentials.
    pub fn endpoint(&self) -> &str {
        &self.endpoint.shown
    }

    /// The connection manager, for commands of the host's own.
    pub fn manager(&self) -> ConnectionManager {
        self.manager.clone()
    }

    /// `PING`: whether the server answers (readiness checks).
    pub async fn ping(&self) -> Result<()> {
        let _: String = ::redis::cmd("PING")
            .query_async(&mut self.manager.clone())
            .await
            .map_err(|e| self.endpoint.error("PING", e))?;
        Ok(())
    }
}

/// `{prefix}:`, or nothing for an empty prefix.
fn key_prefix(prefix: &str) -> String {
    if prefix.is_empty() { String::new() } else { format!("{prefix}:") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_scrub_the_password_and_show_no_credentials() {
        let endpoint = Endpoint { shown: "127.0.0.1:6379/0".into(), password: Some("hunter2".into()) };
        let err = endpoint.error("GET", "WRONGPASS for hunter2 at redis://:hunter2@127.0.0.1");
        let text = format!("{err} {err:?}");
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("127.0.0.1:6379/0") && text.contains("GET"), "{text}");
        assert!(matches!(err, Error::Backend { backend: "redis", .. }));
    }

    #[test]
    fn prefixes_end_with_one_colon() {
        assert_eq!(key_prefix(""), "");
        assert_eq!(key_prefix("chitty"), "chitty:");
    }
}
