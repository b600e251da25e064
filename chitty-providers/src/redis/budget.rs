//! A [`BudgetStore`] in Redis: every operation is one atomic Lua script over one tenant's keys.

use std::fmt;
use std::sync::LazyLock;

use ::redis::Script;
use async_trait::async_trait;
use chitty_core::{Balance, BudgetStore, Error, NanoUsd, Reservation, ReserveRequest, Result, Settlement, Timestamp};

use super::{RedisConnection, key_prefix};

/// Shared head of every script: exact nano-USD arithmetic, then reclaiming expired leases.
///
/// Amounts are stored as decimal strings. Lua numbers are doubles, exact only below 2^53 (about 9 million
/// USD in nano-USD), so each amount is split into two limbs `{whole units of 10^9, remainder}`, each far
/// below 2^53, and added, subtracted and compared limb by limb: exact over the whole `u64` range, saturating
/// like [`NanoUsd`] (at zero and at `u64::MAX`). Leases are reclaimed by the caller's `now` (`ARGV[1]`),
/// never by Redis's clock, so that a test can move time by hand.
const PRELUDE: &str = r#"
local BASE = 1000000000
local U64_MAX = {18446744073, 709551615}
local function num(s)
  if not s then return {0, 0} end
  local n = #s
  if n <= 9 then return {0, tonumber(s)} end
  return {tonumber(string.sub(s, 1, n - 9)), tonumber(string.sub(s, n - 8))}
end
local function str(a)
  if a[1] == 0 then return string.format('%d', a[2]) end
  return string.format('%d%09d', a[1], a[2])
end
local function cmp(a, b)
  if a[1] ~= b[1] then if a[1] < b[1] then return -1 else return 1 end end
  if a[2] ~= b[2] then if a[2] < b[2] then return -1 else return 1 end end
  return 0
end
local function add(a, b)
  local hi, lo = a[1] + b[1], a[2] + b[2]
  if lo >= BASE then hi, lo = hi + 1, lo - BASE end
  local r = {hi, lo}
  if cmp(r, U64_MAX) > 0 then return U64_MAX end
  return r
end
local function sub(a, b)
  if cmp(a, b) <= 0 then return {0, 0} end
  local hi, lo = a[1] - b[1], a[2] - b[2]
  if lo < 0 then hi, lo = hi - 1, lo + BASE end
  return {hi, lo}
end
local ledger, live, expiry = KEYS[1], KEYS[2], KEYS[3]
local now = ARGV[1]
local expired = redis.call('ZRANGEBYSCORE', expiry, '-inf', now)
if #expired > 0 then
  local reserved = num(redis.call('HGET', ledger, 'reserved'))
  for _, id in ipairs(expired) do
    local amount = redis.call('HGET', live, id)
    if amount then
      reserved = sub(reserved, num(amount))
      redis.call('HDEL', live, id)
    end
  end
  redis.call('HSET', ledger, 'reserved', str(reserved))
  redis.call('ZREMRANGEBYSCORE', expiry, '-inf', now)
end
"#;

/// `KEYS`: ledger, live, expiry, seq. `ARGV`: now, min, max, expires_at.
/// Returns `{'ok', id, amount}` or `{'exhausted', remaining}`.
static RESERVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{PRELUDE}{}",
        r#"
local min_amount, max_amount = num(ARGV[2]), num(ARGV[3])
local fields = redis.call('HMGET', ledger, 'limit', 'spent', 'reserved')
local reserved = num(fields[3])
local remaining = sub(sub(num(fields[1]), num(fields[2])), reserved)
if cmp(min_amount, max_amount) > 0 or cmp(remaining, min_amount) < 0 then
  return {'exhausted', str(remaining)}
end
local amount = max_amount
if cmp(remaining, amount) < 0 then amount = remaining end
local id = string.format('%d', redis.call('INCR', KEYS[4]))
redis.call('HSET', live, id, str(amount))
redis.call('ZADD', expiry, ARGV[4], id)
redis.call('HSET', ledger, 'reserved', str(add(reserved, amount)))
return {'ok', id, str(amount)}
"#
    ))
});

/// `KEYS`: ledger, live, expiry. `ARGV`: now, id, actual. Charges `min(actual, amount)`, so spend never passes the
/// limit. Returns `{'ok', amount}` or `{'missing'}`.
static SETTLE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{PRELUDE}{}",
        r#"
local amount = redis.call('HGET', live, ARGV[2])
if not amount then return {'missing'} end
redis.call('HDEL', live, ARGV[2])
redis.call('ZREM', expiry, ARGV[2])
local charged = num(ARGV[3])
if cmp(charged, num(amount)) > 0 then charged = num(amount) end
local fields = redis.call('HMGET', ledger, 'spent', 'reserved')
redis.call('HSET', ledger, 'spent', str(add(num(fields[1]), charged)),
  'reserved', str(sub(num(fields[2]), num(amount))))
return {'ok', amount}
"#
    ))
});

/// `KEYS`: ledger, live, expiry. `ARGV`: now, id. Returns `{'ok'}` or `{'missing'}`.
static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{PRELUDE}{}",
        r#"
local amount = redis.call('HGET', live, ARGV[2])
if not amount then return {'missing'} end
redis.call('HDEL', live, ARGV[2])
redis.call('ZREM', expiry, ARGV[2])
local reserved = num(redis.call('HGET', ledger, 'reserved'))
redis.call('HSET', ledger, 'reserved', str(sub(reserved, num(amount))))
return {'ok'}
"#
    ))
});

/// `KEYS`: ledger, live, expiry. `ARGV`: now. Returns `{limit, spent, reserved}`.
static BALANCE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{PRELUDE}{}",
        r#"
local fields = redis.call('HMGET', ledger, 'limit', 'spent', 'reserved')
return {str(num(fields[1])), str(num(fields[2])), str(num(fields[3]))}
"#
    ))
});

/// `KEYS`: ledger, live, expiry. `ARGV`: now, limit. Returns `{'ok'}`.
static SET_LIMIT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{PRELUDE}{}",
        r#"
redis.call('HSET', ledger, 'limit', str(num(ARGV[2])))
return {'ok'}
"#
    ))
});

/// Per-tenant budgets in Redis, shared by every gateway replica: no replica can overspend another's grant.
///
/// Each operation (`set_limit`, `reserve`, `settle`, `release`, `balance`) is one Lua script, which Redis
/// runs atomically; each starts by reclaiming the tenant's reservations whose lease ended by the `now`
/// passed in. A tenant's keys share the hash tag `{tenant}` (Redis Cluster keeps them in one slot); see the
/// [module docs](super) for the layout. `{`, `}` and `%` in tenant names are percent-escaped so that the
/// tag stays intact, and an empty tenant name is refused.
///
/// **Money.** Amounts are kept as decimal strings and the scripts do exact two-limb arithmetic, so every
/// `u64` nano-USD amount (up to about 18 billion USD) is exact, with no 2^53 (9 million USD) ceiling.
///
/// **Failures.** A command that times out may still have run. A lost `reserve` reply leaves a reservation
/// that its lease reclaims; a lost `settle` or `release` reply is safe to retry, because finishing a
/// reservation twice fails with [`Error::ReservationNotFound`] and charges nothing.
///
/// ```no_run
/// # async fn demo() -> chitty_core::Result<()> {
/// use std::time::Duration;
/// use chitty_core::{BudgetStore, NanoUsd, ReserveRequest, Timestamp};
/// use chitty_providers::redis::{RedisBudgetStore, RedisConnection};
///
/// let store = RedisBudgetStore::new(RedisConnection::connect("redis://127.0.0.1:6379").await?, "chitty");
/// store.set_limit("acme", NanoUsd::from_usd(10)).await?;
/// let now = Timestamp(1_700_000_000_000);
/// let lease = Duration::from_secs(120);
/// let r = store.reserve(ReserveRequest { tenant: "acme", min: NanoUsd(100), max: NanoUsd(5_000), lease, now }).await?;
/// store.settle(&r, NanoUsd(300), now).await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisBudgetStore {
    connection: RedisConnection,
    /// `{prefix}:budget:`.
    namespace: String,
}

impl fmt::Debug for RedisBudgetStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBudgetStore")
            .field("endpoint", &self.connection.endpoint())
            .field("namespace", &self.namespace)
            .finish()
    }
}

/// The keys of one tenant, in script order: ledger, live, expiry, seq.
struct TenantKeys([String; 4]);

impl RedisBudgetStore {
    /// A store over `connection` whose keys start with `{prefix}:budget:`.
    pub fn new(connection: RedisConnection, prefix: &str) -> RedisBudgetStore {
        RedisBudgetStore { namespace: format!("{}budget:", key_prefix(prefix)), connection }
    }

    fn keys(&self, tenant: &str) -> Result<TenantKeys> {
        if tenant.is_empty() {
            // `{}` is not a hash tag: Cluster would spread the keys over several slots.
            return Err(Error::invalid_request("the tenant name must not be empty", None));
        }
        let mut tag = String::with_capacity(tenant.len());
        for c in tenant.chars() {
            match c {
                '%' => tag.push_str("%25"),
                '{' => tag.push_str("%7B"),
                '}' => tag.push_str("%7D"),
                c => tag.push(c),
            }
        }
        let base = format!("{}{{{tag}}}", self.namespace);
        Ok(TenantKeys([
            format!("{base}:ledger"),
            format!("{base}:live"),
            format!("{base}:expiry"),
            format!("{base}:seq"),
        ]))
    }

    /// Runs `script` with the first `key_count` of `keys` and `now` followed by `args`.
    async fn run(
        &self,
        operation: &'static str,
        script: &Script,
        keys: &TenantKeys,
        key_count: usize,
        now: Timestamp,
        args: &[&str],
    ) -> Result<Vec<String>> {
        let mut invocation = script.prepare_invoke();
        for key in &keys.0[..key_count] {
            invocation.key(key);
        }
        invocation.arg(now.0);
        for arg in args {
            invocation.arg(*arg);
        }
        invocation
            .invoke_async(&mut self.connection.manager.clone())
            .await
            .map_err(|e| self.connection.endpoint.error(operation, e))
    }

    fn amount(&self, operation: &'static str, reply: Option<&String>) -> Result<NanoUsd> {
        reply
            .and_then(|s| s.parse().ok())
            .map(NanoUsd)
            .ok_or_else(|| self.connection.endpoint.error(operation, format!("unexpected script reply {reply:?}")))
    }
}

#[async_trait]
impl BudgetStore for RedisBudgetStore {
    async fn ping(&self) -> Result<()> {
        self.connection.ping().await
    }

    async fn set_limit(&self, tenant: &str, limit: NanoUsd) -> Result<()> {
        let keys = self.keys(tenant)?;
        // `set_limit` has no `now`; zero reclaims nothing, and the next operation reclaims as usual.
        self.run("set_limit", &SET_LIMIT, &keys, 3, Timestamp(0), &[&limit.0.to_string()]).await?;
        Ok(())
    }

    async fn reserve(&self, request: ReserveRequest<'_>) -> Result<Reservation> {
        let keys = self.keys(request.tenant)?;
        let expires_at = request.now.plus(request.lease);
        let args = [&request.min.0.to_string()[..], &request.max.0.to_string(), &expires_at.0.to_string()];
        let reply = self.run("reserve", &RESERVE, &keys, 4, request.now, &args).await?;
        match reply.first().map(String::as_str) {
            Some("ok") => {
                let amount = self.amount("reserve", reply.get(2))?;
                let id = reply.into_iter().nth(1).unwrap_or_default();
                Ok(Reservation { id, tenant: request.tenant.to_owned(), amount, expires_at })
            }
            Some("exhausted") => {
                Err(Error::BudgetExhausted { needed: request.min, remaining: self.amount("reserve", reply.get(1))? })
            }
            _ => Err(self.connection.endpoint.error("reserve", format!("unexpected script reply {reply:?}"))),
        }
    }

    async fn settle(&self, reservation: &Reservation, actual: NanoUsd, now: Timestamp) -> Result<Settlement> {
        let keys = self.keys(&reservation.tenant)?;
        let reply = self.run("settle", &SETTLE, &keys, 3, now, &[&reservation.id, &actual.0.to_string()]).await?;
        match reply.first().map(String::as_str) {
            Some("ok") => {
                let amount = self.amount("settle", reply.get(1))?;
                Ok(Settlement::capped(amount, actual))
            }
            Some("missing") => Err(Error::ReservationNotFound { id: reservation.id.clone() }),
            _ => Err(self.connection.endpoint.error("settle", format!("unexpected script reply {reply:?}"))),
        }
    }

    async fn release(&self, reservation: &Reservation, now: Timestamp) -> Result<()> {
        let keys = self.keys(&reservation.tenant)?;
        let reply = self.run("release", &RELEASE, &keys, 3, now, &[&reservation.id]).await?;
        match reply.first().map(String::as_str) {
            Some("ok") => Ok(()),
            Some("missing") => Err(Error::ReservationNotFound { id: reservation.id.clone() }),
            _ => Err(self.connection.endpoint.error("release", format!("unexpected script reply {reply:?}"))),
        }
    }

    async fn balance(&self, tenant: &str, now: Timestamp) -> Result<Balance> {
        let keys = self.keys(tenant)?;
        let reply = self.run("balance", &BALANCE, &keys, 3, now, &[]).await?;
        Ok(Balance {
            limit: self.amount("balance", reply.first())?,
            spent: self.amount("balance", reply.get(1))?,
            reserved: self.amount("balance", reply.get(2))?,
        })
    }
}
