//! A [`RateLimiter`] in Redis: every check of one request is one Lua script over the tenant's hash.

use std::fmt;
use std::sync::LazyLock;
use std::time::Duration;

use ::redis::Script;
use async_trait::async_trait;
use chitty_core::ratelimit::{Gcra, LimitCheck, LimitKind, RateDecision, RateLimitStatus, RateLimiter};
use chitty_core::{Result, Timestamp};

use super::{RedisConnection, key_prefix};

/// `KEYS`: the tenant's hash. `ARGV`: now (ms), count, then `field, interval_ms, capacity_ms, cost` per check.
/// Admits only if every check admits, then stores each new TAT; returns `{'ok', tat…}` or
/// `{'refused', wait_ms, tat…}` with the current TATs (nothing stored). TATs are milliseconds with three
/// decimals, the same `f64` arithmetic as [`Gcra::check`].
static ACQUIRE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local now, count = tonumber(ARGV[1]), tonumber(ARGV[2])
local current, next_tats, wait = {}, {}, nil
for i = 0, count - 1 do
  local base = 3 + 4 * i
  local interval, capacity, cost = tonumber(ARGV[base + 1]), tonumber(ARGV[base + 2]), tonumber(ARGV[base + 3])
  local tat = tonumber(redis.call('HGET', KEYS[1], ARGV[base]) or now)
  if tat < now then tat = now end
  local nxt = tat + cost * interval
  current[i + 1] = string.format('%.3f', tat)
  next_tats[i + 1] = string.format('%.3f', nxt)
  if nxt - now > capacity then
    local w = nxt - now - capacity
    if wait == nil or w > wait then wait = w end
  end
end
if wait ~= nil then
  return {'refused', string.format('%.3f', wait), unpack(current)}
end
for i = 0, count - 1 do
  redis.call('HSET', KEYS[1], ARGV[3 + 4 * i], next_tats[i + 1])
end
-- A TAT is at most a minute ahead: an hour after the last request the hash says nothing the absence does not.
redis.call('PEXPIRE', KEYS[1], 3600000)
return {'ok', unpack(next_tats)}
"#,
    )
});

/// `KEYS`: the tenant's hash. `ARGV`: now, field, interval_ms, amount. Moves the TAT back, never before now.
static REFUND: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local tat = tonumber(redis.call('HGET', KEYS[1], ARGV[2]))
if not tat then return 0 end
local back = tat - tonumber(ARGV[3]) * tonumber(ARGV[4])
local now = tonumber(ARGV[1])
if back < now then back = now end
redis.call('HSET', KEYS[1], ARGV[2], string.format('%.3f', back))
return 1
"#,
    )
});

/// Requests and tokens per minute in Redis, shared by every gateway replica: N replicas admit the configured
/// rate together, not N times it.
///
/// One hash per tenant, `{prefix}:ratelimit:{tenant}` (a Cluster hash tag), holds each limit's theoretical
/// arrival time (GCRA, see [`chitty_core::ratelimit`]) under `<scope>|r` or `<scope>|t`. Admission is one
/// script for all of a request's limits (tenant and keys); a refund of unused tokens at settlement is one
/// more. Times come from the caller's clock, never Redis's. Redis unreachable is
/// [`chitty_core::Error::BackendUnavailable`].
///
/// ```no_run
/// # async fn demo() -> chitty_core::Result<()> {
/// use std::sync::Arc;
/// use chitty_core::ratelimit::RateLimiter;
/// use chitty_providers::redis::{RedisConnection, RedisRateLimiter};
///
/// let connection = RedisConnection::connect("redis://127.0.0.1:6379").await?;
/// let limiter: Arc<dyn RateLimiter> = Arc::new(RedisRateLimiter::new(connection, "chitty"));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisRateLimiter {
    connection: RedisConnection,
    /// `{prefix}:ratelimit:`.
    namespace: String,
}

impl fmt::Debug for RedisRateLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisRateLimiter")
            .field("endpoint", &self.connection.endpoint())
            .field("namespace", &self.namespace)
            .finish()
    }
}

fn field(scope: &str, kind: LimitKind) -> String {
    match kind {
        LimitKind::Requests => format!("{scope}|r"),
        LimitKind::Tokens => format!("{scope}|t"),
    }
}

fn capacity_ms(limit: &Gcra) -> f64 {
    f64::from(limit.burst.max(1)) * limit.interval_ms()
}

impl RedisRateLimiter {
    /// A limiter over `connection` whose keys start with `{prefix}:ratelimit:`.
    pub fn new(connection: RedisConnection, prefix: &str) -> RedisRateLimiter {
        RedisRateLimiter { namespace: format!("{}ratelimit:", key_prefix(prefix)), connection }
    }

    fn key(&self, tenant: &str) -> String {
        let tag: String = tenant
            .chars()
            .map(|c| match c {
                '%' => "%25".to_owned(),
                '{' => "%7B".to_owned(),
                '}' => "%7D".to_owned(),
                c => c.to_string(),
            })
            .collect();
        format!("{}{{{tag}}}", self.namespace)
    }

    fn parse(&self, value: Option<&String>) -> Result<f64> {
        value
            .and_then(|v| v.parse::<f64>().ok())
            .ok_or_else(|| self.connection.endpoint.error("rate limit", format!("unexpected script reply {value:?}")))
    }
}

#[async_trait]
impl RateLimiter for RedisRateLimiter {
    async fn acquire(&self, tenant: &str, checks: &[LimitCheck<'_>], now: Timestamp) -> Result<RateDecision> {
        let now_ms = now.0 as f64;
        let mut invocation = ACQUIRE.prepare_invoke();
        invocation.key(self.key(tenant)).arg(now.0).arg(checks.len());
        for check in checks {
            invocation
                .arg(field(check.scope, check.limit.kind))
                .arg(check.limit.interval_ms())
                .arg(capacity_ms(&check.limit))
                .arg(check.cost);
        }
        let reply: Vec<String> = invocation
            .invoke_async(&mut self.connection.manager.clone())
            .await
            .map_err(|e| self.connection.endpoint.failure("rate limit", e))?;
        let (refused, tats) = match reply.first().map(String::as_str) {
            Some("ok") => (None, &reply[1..]),
            Some("refused") => (Some(self.parse(reply.get(1))?), reply.get(2..).unwrap_or_default()),
            _ => {
                return Err(self.connection.endpoint.error("rate limit", format!("unexpected script reply {reply:?}")));
            }
        };
        let mut states = Vec::with_capacity(checks.len());
        for (check, tat) in checks.iter().zip(tats) {
            states.push(check.limit.state(self.parse(Some(tat))?, now_ms));
        }
        let status = RateLimitStatus::tightest(states);
        Ok(match refused {
            None => RateDecision::Admitted(status),
            Some(wait_ms) => {
                RateDecision::Refused { retry_after: Duration::from_micros((wait_ms * 1_000.0).ceil() as u64), status }
            }
        })
    }

    async fn refund(&self, tenant: &str, scope: &str, limit: Gcra, amount: u64, now: Timestamp) -> Result<()> {
        let _: i64 = REFUND
            .prepare_invoke()
            .key(self.key(tenant))
            .arg(now.0)
            .arg(field(scope, limit.kind))
            .arg(limit.interval_ms())
            .arg(amount)
            .invoke_async(&mut self.connection.manager.clone())
            .await
            .map_err(|e| self.connection.endpoint.failure("rate limit refund", e))?;
        Ok(())
    }
}
