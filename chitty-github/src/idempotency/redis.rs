//! The Redis [`IdempotencyStore`]: `SET key 1 NX PX ttl`, one round trip, atomic across replicas.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::ConnectionManager;

use super::{Claim, IdempotencyStore};
use crate::error::{Error, Result};

/// An [`IdempotencyStore`] in Redis, shared by every replica of the webhook endpoint.
#[derive(Clone)]
pub struct RedisIdempotencyStore {
    connection: ConnectionManager,
    prefix: String,
}

impl RedisIdempotencyStore {
    /// Connects to `url` (`redis://host:6379/0`); keys are `prefix` followed by the delivery key.
    pub async fn connect(url: &str, prefix: impl Into<String>) -> Result<Self> {
        let client = redis::Client::open(url).map_err(|e| Error::backend("redis", e))?;
        let connection = ConnectionManager::new(client).await.map_err(|e| Error::backend("redis", e))?;
        Ok(Self::with_connection(connection, prefix))
    }

    /// A store over an existing connection manager.
    pub fn with_connection(connection: ConnectionManager, prefix: impl Into<String>) -> Self {
        RedisIdempotencyStore { connection, prefix: prefix.into() }
    }
}

impl fmt::Debug for RedisIdempotencyStore {
    // The connection info can carry a password; only the prefix is shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisIdempotencyStore").field("prefix", &self.prefix).finish_non_exhaustive()
    }
}

#[async_trait]
impl IdempotencyStore for RedisIdempotencyStore {
    async fn claim(&self, key: &str, ttl: Duration) -> Result<Claim> {
        // PX 0 is rejected by Redis; a zero TTL means "hold for the shortest time".
        let millis = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let reply: Option<String> = redis::cmd("SET")
            .arg(format!("{}{key}", self.prefix))
            .arg(1)
            .arg("NX")
            .arg("PX")
            .arg(millis)
            .query_async(&mut self.connection.clone())
            .await
            .map_err(|e| Error::backend("redis", e))?;
        Ok(if reply.is_some() { Claim::Claimed } else { Claim::AlreadyClaimed })
    }

    async fn release(&self, key: &str) -> Result<()> {
        let _: i64 = redis::cmd("DEL")
            .arg(format!("{}{key}", self.prefix))
            .query_async(&mut self.connection.clone())
            .await
            .map_err(|e| Error::backend("redis", e))?;
        Ok(())
    }
}
