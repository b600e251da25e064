//! A [`BudgetStore`] in Redis: every operation is one atomic Lua script over one tenant's keys.

use std::collections::HashSet;
use std::fmt;
use std::sync::{Arc, LazyLock, Mutex, PoisonError, Weak};
use std::time::Duration;

use ::redis::Script;
use async_trait::async_trait;
use chitty_core::budget::Spend;
use chitty_core::{
    BudgetStore, Error, NanoUsd, Reservation, ReserveRequest, Result, Settlement, SpendArchive, Timestamp,
};

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
local live, expiry, base = KEYS[1], KEYS[2], ARGV[2]
local now = ARGV[1]
local function bump(hash, field, delta, up)
  local current = num(redis.call('HGET', hash, field))
  if up then redis.call('HSET', hash, field, str(add(current, delta)))
  else redis.call('HSET', hash, field, str(sub(current, delta))) end
end
local function unreserve(entry)
  local p = base .. entry.p
  for _, name in ipairs(entry.c) do bump(p, 'r:' .. name, num(entry.a), false) end
end
local expired = redis.call('ZRANGEBYSCORE', expiry, '-inf', now)
for _, id in ipairs(expired) do
  local raw = redis.call('HGET', live, id)
  if raw then
    unreserve(cjson.decode(raw))
    redis.call('HDEL', live, id)
  end
end
if #expired > 0 then redis.call('ZREMRANGEBYSCORE', expiry, '-inf', now) end
"#;

/// `KEYS`: live, expiry, seq. `ARGV`: now, period base, min, max, expires_at, period, model, key (`""` for
/// none), whether the ledger must have been seeded (`1` with an archive), account count, then `name, limit`
/// per account. Returns `{'ok', id, amount}`, `{'exhausted', remaining}` or `{'unseeded'}`.
static RESERVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{PRELUDE}{}",
        r#"
local min_amount, max_amount = num(ARGV[3]), num(ARGV[4])
local p = base .. ARGV[6]
if ARGV[9] == '1' and redis.call('HEXISTS', p, 'seeded') == 0 then return {'unseeded'} end
local count = tonumber(ARGV[10])
local remaining = U64_MAX
local names = {}
for i = 0, count - 1 do
  local name, limit = ARGV[11 + 2 * i], num(ARGV[12 + 2 * i])
  names[#names + 1] = name
  local f = redis.call('HMGET', p, 's:' .. name, 'r:' .. name)
  local left = sub(sub(limit, num(f[1])), num(f[2]))
  if cmp(left, remaining) < 0 then remaining = left end
end
if cmp(min_amount, max_amount) > 0 or cmp(remaining, min_amount) < 0 then
  return {'exhausted', str(remaining)}
end
local amount = max_amount
if cmp(remaining, amount) < 0 then amount = remaining end
for _, name in ipairs(names) do bump(p, 'r:' .. name, amount, true) end
-- Periodic ledgers are housekeeping after 400 days without a write; a lifetime ledger stays.
if ARGV[6] ~= '0' then redis.call('PEXPIRE', p, 34560000000) end
local id = string.format('%d', redis.call('INCR', KEYS[3]))
redis.call('HSET', live, id, cjson.encode({a = str(amount), p = ARGV[6], m = ARGV[7], k = ARGV[8], c = names}))
redis.call('ZADD', expiry, ARGV[5], id)
return {'ok', id, str(amount)}
"#
    ))
});

/// `KEYS`: live, expiry. `ARGV`: now, period base, id, actual. Charges `min(actual, amount)` to every account
/// of the reservation in its own period, so spend never passes a limit. Returns `{'ok', amount, period}` or
/// `{'missing'}`.
static SETTLE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{PRELUDE}{}",
        r#"
local raw = redis.call('HGET', live, ARGV[3])
if not raw then return {'missing'} end
redis.call('HDEL', live, ARGV[3])
redis.call('ZREM', expiry, ARGV[3])
local entry = cjson.decode(raw)
local amount = num(entry.a)
local charged = num(ARGV[4])
if cmp(charged, amount) > 0 then charged = amount end
unreserve(entry)
local p = base .. entry.p
for _, name in ipairs(entry.c) do bump(p, 's:' .. name, charged, true) end
bump(p, 'm:' .. entry.m, charged, true)
if entry.k ~= '' then bump(p, 'k:' .. entry.k, charged, true) end
return {'ok', entry.a, entry.p}
"#
    ))
});

/// `KEYS`: live, expiry. `ARGV`: now, period base, id. Returns `{'ok'}` or `{'missing'}`.
static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{PRELUDE}{}",
        r#"
local raw = redis.call('HGET', live, ARGV[3])
if not raw then return {'missing'} end
redis.call('HDEL', live, ARGV[3])
redis.call('ZREM', expiry, ARGV[3])
unreserve(cjson.decode(raw))
return {'ok'}
"#
    ))
});

/// `KEYS`: live, expiry. `ARGV`: now, period base, period, then `field, amount` pairs of the archived spend.
/// Marks the period's ledger seeded; adds the archived amounts first only when the ledger holds no settled
/// spend (it was lost), not when it predates the marker. Returns `{'ok'}`.
static SEED: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{PRELUDE}{}",
        r#"
local p = base .. ARGV[3]
if redis.call('HEXISTS', p, 'seeded') == 1 then return {'ok'} end
local lost = true
for _, field in ipairs(redis.call('HKEYS', p)) do
  if string.sub(field, 1, 2) == 'm:' then lost = false break end
end
if lost then
  for i = 4, #ARGV, 2 do bump(p, ARGV[i], num(ARGV[i + 1]), true) end
end
redis.call('HSET', p, 'seeded', '1')
if ARGV[3] ~= '0' then redis.call('PEXPIRE', p, 34560000000) end
return {'ok'}
"#
    ))
});

/// `KEYS`: live, expiry. `ARGV`: now, period base, period. Returns the period's ledger as field, value pairs.
static SPEND: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{PRELUDE}{}",
        r#"
return redis.call('HGETALL', base .. ARGV[3])
"#
    ))
});

/// Budgets in Redis, shared by every gateway replica: no replica can overspend another's grant.
///
/// Each operation (`reserve`, `settle`, `release`, `spend`) is one Lua script, which Redis runs atomically;
/// each starts by reclaiming the tenant's reservations whose lease ended by the `now` passed in. A tenant's
/// keys share the hash tag `{tenant}` (Redis Cluster keeps them in one slot), so one script can reserve on the
/// tenant's budget and on its keys' at once: two keys of one tenant can never together overrun it. `{`, `}`
/// and `%` in tenant names are percent-escaped so that the tag stays intact, and an empty name is refused.
///
/// **Layout.** Per tenant: `{prefix}:budget:{tenant}:live` (hash: reservation id → its amount, period,
/// accounts, model and key as JSON), `…:expiry` (sorted set of lease ends), `…:seq`, and one ledger per budget
/// period, `…:p:<period start ms>` (hash: `s:<account>` spent, `r:<account>` reserved, `m:<model>` and
/// `k:<key>` spent by model and key; the tenant's own account is the empty name). A period's ledger is
/// named from the reservation inside the script rather than declared in `KEYS`; it shares the tenant's slot.
/// Periodic ledgers expire 400 days after their last write; a lifetime ledger never does.
///
/// **Limits** are not stored: each reservation carries its accounts' limits, so a changed limit applies to
/// the next request and a Redis that lost its data never turns limits into zero.
///
/// **Spend that survives Redis.** Without an archive, a Redis that lost its data (restarted without
/// persistence, flushed, evicted the ledger) starts the period's spend again from zero. With one
/// ([`RedisBudgetStore::with_archive`], such as the PostgreSQL access store), the store saves every ledger
/// it settled into every few seconds, and a reservation that finds its period's ledger without the `seeded`
/// mark first seeds it from the archive (one extra round trip, once per tenant and period), so at most the
/// spend settled since the last save is forgotten. Archive unreachable at that moment is
/// [`Error::BackendUnavailable`]: the request is refused rather than admitted against a zero ledger.
///
/// **Money.** Amounts are kept as decimal strings and the scripts do exact two-limb arithmetic, so every
/// `u64` nano-USD amount (up to about 18 billion USD) is exact, with no 2^53 (9 million USD) ceiling.
///
/// **Failures.** Redis unreachable is [`Error::BackendUnavailable`] (the gateway answers 503 with
/// `Retry-After`). A command that times out may still have run. A lost `reserve` reply leaves a reservation
/// that its lease reclaims; a lost `settle` or `release` reply is safe to retry, because finishing a
/// reservation twice fails with [`Error::ReservationNotFound`] and charges nothing.
///
/// ```no_run
/// # async fn demo() -> chitty_core::Result<()> {
/// use std::time::Duration;
/// use chitty_core::budget::{BudgetAccount, TENANT_ACCOUNT};
/// use chitty_core::{BudgetStore, NanoUsd, ReserveRequest, Timestamp};
/// use chitty_providers::redis::{RedisBudgetStore, RedisConnection};
///
/// let store = RedisBudgetStore::new(RedisConnection::connect("redis://127.0.0.1:6379").await?, "chitty");
/// let now = Timestamp(1_700_000_000_000);
/// let accounts = [BudgetAccount { name: TENANT_ACCOUNT, limit: NanoUsd::from_usd(10) }];
/// let r = store
///     .reserve(ReserveRequest {
///         tenant: "acme", accounts: &accounts, period: Timestamp(0), model: "gpt-4o", key: None,
///         min: NanoUsd(100), max: NanoUsd(5_000), lease: Duration::from_secs(120), now,
///     })
///     .await?;
/// store.settle(&r, NanoUsd(300), now).await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisBudgetStore {
    connection: RedisConnection,
    /// `{prefix}:budget:`.
    namespace: String,
    /// Where settled spend is saved and lost ledgers are seeded from, when set.
    archive: Option<Arc<ArchiveLink>>,
}

/// A store's link to its [`SpendArchive`]: the archive, and the ledgers settled into since the last save.
struct ArchiveLink {
    archive: Arc<dyn SpendArchive>,
    dirty: Mutex<HashSet<(String, Timestamp)>>,
}

impl ArchiveLink {
    fn dirty(&self) -> std::sync::MutexGuard<'_, HashSet<(String, Timestamp)>> {
        // Inserts and takes cannot leave the set half-changed, so a poisoned lock's data is sound.
        self.dirty.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// How long a client is told to wait when the spend archive cannot seed a ledger.
const ARCHIVE_RETRY_AFTER: Duration = Duration::from_secs(1);

impl fmt::Debug for RedisBudgetStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBudgetStore")
            .field("endpoint", &self.connection.endpoint())
            .field("namespace", &self.namespace)
            .field("archive", &self.archive.as_ref().map(|link| &link.archive))
            .finish()
    }
}

/// The keys of one tenant, in script order: live, expiry, seq; and the prefix of its period ledgers.
struct TenantKeys {
    keys: [String; 3],
    period_base: String,
}

impl RedisBudgetStore {
    /// A store over `connection` whose keys start with `{prefix}:budget:`.
    pub fn new(connection: RedisConnection, prefix: &str) -> RedisBudgetStore {
        RedisBudgetStore { namespace: format!("{}budget:", key_prefix(prefix)), connection, archive: None }
    }

    /// Saves settled spend to `archive` every `every` and seeds the ledgers Redis lost from it (see the type's
    /// docs). The saving task runs on the current tokio runtime, when there is one, and ends once the last
    /// clone of this store is dropped; [`RedisBudgetStore::save_spend`] saves on demand (at shutdown, say).
    pub fn with_archive(mut self, archive: Arc<dyn SpendArchive>, every: Duration) -> RedisBudgetStore {
        let link = Arc::new(ArchiveLink { archive, dirty: Mutex::default() });
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let unlinked = RedisBudgetStore { archive: None, ..self.clone() };
            runtime.spawn(unlinked.save_every(Arc::downgrade(&link), every));
        }
        self.archive = Some(link);
        self
    }

    async fn save_every(self, link: Weak<ArchiveLink>, every: Duration) {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        loop {
            ticks.tick().await;
            let Some(link) = link.upgrade() else { return };
            if let Err(e) = self.save_dirty(&link).await {
                tracing::warn!(error = %e, "budgets: saving spend to the archive failed; retrying on the next tick");
            }
        }
    }

    /// Saves the spend of every ledger settled into since the last save to the archive; returns how many
    /// ledgers it saved (none without an archive).
    pub async fn save_spend(&self) -> Result<usize> {
        match &self.archive {
            Some(link) => self.save_dirty(link).await,
            None => Ok(0),
        }
    }

    async fn save_dirty(&self, link: &ArchiveLink) -> Result<usize> {
        let dirty = std::mem::take(&mut *link.dirty());
        let (mut saved, mut first_error) = (0, None);
        for (tenant, period) in dirty {
            let result = match self.ledger(&tenant, period).await {
                Ok(spend) => link.archive.save_spend(&tenant, period, &spend).await,
                Err(e) => Err(e),
            };
            match result {
                Ok(()) => saved += 1,
                Err(e) => {
                    // Kept for the next save: a ledger is never dropped from the archive's view by one failure.
                    link.dirty().insert((tenant, period));
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(saved), Err)
    }

    /// A period's ledger read as is: unlike [`BudgetStore::spend`], no lease is reclaimed, so saving never
    /// depends on a clock.
    async fn ledger(&self, tenant: &str, period: Timestamp) -> Result<Spend> {
        let keys = self.keys(tenant)?;
        let flat: Vec<String> = ::redis::cmd("HGETALL")
            .arg(format!("{}{}", keys.period_base, period.0))
            .query_async(&mut self.connection.manager.clone())
            .await
            .map_err(|e| self.connection.endpoint.failure("spend", e))?;
        self.parse_ledger(flat)
    }

    /// Seeds a period's ledger from the archive (see the type's docs).
    async fn seed(&self, keys: &TenantKeys, tenant: &str, period: Timestamp, now: Timestamp) -> Result<()> {
        let Some(link) = &self.archive else { return Ok(()) };
        let saved = link.archive.load_spend(tenant, period).await.map_err(|e| Error::BackendUnavailable {
            backend: "spend archive",
            retry_after: ARCHIVE_RETRY_AFTER,
            source: Box::new(e),
        })?;
        let mut args = vec![period.0.to_string()];
        if let Some(spend) = &saved {
            let accounts = spend.accounts.iter().map(|(name, account)| ("s:", name, account.spent));
            let models = spend.by_model.iter().map(|(model, amount)| ("m:", model, *amount));
            let keys = spend.by_key.iter().map(|(key, amount)| ("k:", key, *amount));
            for (kind, name, amount) in accounts.chain(models).chain(keys) {
                args.push(format!("{kind}{name}"));
                args.push(amount.0.to_string());
            }
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let reply: Vec<String> = self.run("seed", &SEED, keys, 2, now, &args).await?;
        if reply.first().map(String::as_str) != Some("ok") {
            return Err(self.connection.endpoint.error("seed", format!("unexpected script reply {reply:?}")));
        }
        if let Some(spend) = saved {
            tracing::info!(
                tenant,
                period = period.0,
                seeded_nano_usd = spend.settled_total().0,
                "budgets: a period's ledger was missing in Redis; seeded it from the spend archive"
            );
        }
        Ok(())
    }

    /// A ledger's `HGETALL` reply as a [`Spend`].
    fn parse_ledger(&self, flat: Vec<String>) -> Result<Spend> {
        let mut spend = Spend::default();
        for pair in flat.chunks(2) {
            let [field, value] = pair else { return Err(self.connection.endpoint.error("spend", "odd reply")) };
            if field == "seeded" {
                continue;
            }
            let amount = self.amount("spend", Some(value))?;
            match field.split_once(':') {
                Some(("s", name)) => spend.accounts.entry(name.to_owned()).or_default().spent = amount,
                Some(("r", name)) => spend.accounts.entry(name.to_owned()).or_default().reserved = amount,
                Some(("m", model)) => {
                    spend.by_model.insert(model.to_owned(), amount);
                }
                Some(("k", key)) => {
                    spend.by_key.insert(key.to_owned(), amount);
                }
                _ => return Err(self.connection.endpoint.error("spend", format!("unexpected ledger field `{field}`"))),
            }
        }
        Ok(spend)
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
        Ok(TenantKeys {
            keys: [format!("{base}:live"), format!("{base}:expiry"), format!("{base}:seq")],
            period_base: format!("{base}:p:"),
        })
    }

    /// Runs `script` with the first `key_count` keys, then `now`, the period base and `args`.
    async fn run<T: ::redis::FromRedisValue>(
        &self,
        operation: &'static str,
        script: &Script,
        keys: &TenantKeys,
        key_count: usize,
        now: Timestamp,
        args: &[&str],
    ) -> Result<T> {
        let mut invocation = script.prepare_invoke();
        for key in &keys.keys[..key_count] {
            invocation.key(key);
        }
        invocation.arg(now.0).arg(&keys.period_base);
        for arg in args {
            invocation.arg(*arg);
        }
        invocation
            .invoke_async(&mut self.connection.manager.clone())
            .await
            .map_err(|e| self.connection.endpoint.failure(operation, e))
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

    async fn reserve(&self, request: ReserveRequest<'_>) -> Result<Reservation> {
        let keys = self.keys(request.tenant)?;
        let expires_at = request.now.plus(request.lease);
        let numbers = [request.min.0, request.max.0, expires_at.0, request.period.0].map(|n| n.to_string());
        let count = request.accounts.len().to_string();
        let limits: Vec<String> = request.accounts.iter().map(|a| a.limit.0.to_string()).collect();
        let require_seed = if self.archive.is_some() { "1" } else { "0" };
        let mut args: Vec<&str> = vec![
            &numbers[0],
            &numbers[1],
            &numbers[2],
            &numbers[3],
            request.model,
            request.key.unwrap_or(""),
            require_seed,
            &count,
        ];
        for (account, limit) in request.accounts.iter().zip(&limits) {
            args.push(account.name);
            args.push(limit);
        }
        let mut reply: Vec<String> = self.run("reserve", &RESERVE, &keys, 3, request.now, &args).await?;
        if reply.first().map(String::as_str) == Some("unseeded") {
            self.seed(&keys, request.tenant, request.period, request.now).await?;
            reply = self.run("reserve", &RESERVE, &keys, 3, request.now, &args).await?;
        }
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
        let args = [reservation.id.as_str(), &actual.0.to_string()];
        let reply: Vec<String> = self.run("settle", &SETTLE, &keys, 2, now, &args).await?;
        match reply.first().map(String::as_str) {
            Some("ok") => {
                let amount = self.amount("settle", reply.get(1))?;
                if let (Some(link), Some(period)) = (&self.archive, reply.get(2).and_then(|p| p.parse().ok())) {
                    link.dirty().insert((reservation.tenant.clone(), Timestamp(period)));
                }
                Ok(Settlement::capped(amount, actual))
            }
            Some("missing") => Err(Error::ReservationNotFound { id: reservation.id.clone() }),
            _ => Err(self.connection.endpoint.error("settle", format!("unexpected script reply {reply:?}"))),
        }
    }

    async fn release(&self, reservation: &Reservation, now: Timestamp) -> Result<()> {
        let keys = self.keys(&reservation.tenant)?;
        let reply: Vec<String> = self.run("release", &RELEASE, &keys, 2, now, &[&reservation.id]).await?;
        match reply.first().map(String::as_str) {
            Some("ok") => Ok(()),
            Some("missing") => Err(Error::ReservationNotFound { id: reservation.id.clone() }),
            _ => Err(self.connection.endpoint.error("release", format!("unexpected script reply {reply:?}"))),
        }
    }

    async fn spend(&self, tenant: &str, period: Timestamp, now: Timestamp) -> Result<Spend> {
        let keys = self.keys(tenant)?;
        let flat: Vec<String> = self.run("spend", &SPEND, &keys, 2, now, &[&period.0.to_string()]).await?;
        self.parse_ledger(flat)
    }
}
