//! [`PostgresAccessStore`]: tenants and keys in PostgreSQL, with change notifications.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use async_trait::async_trait;
use chitty_core::access::{
    AccessSnapshot, AccessStore, BudgetPeriod, KeyDigest, KeyRecord, TenantRecord, TenantUpdate,
};
use chitty_core::budget::AccountSpend;
use chitty_core::{Error, NanoUsd, Result, Spend, SpendArchive, Timestamp};
use futures::stream::BoxStream;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions, PgRow};
use sqlx::types::Json;
use sqlx::{Postgres, Row, Transaction};

/// The channel every change to the tenant and key tables is announced on.
pub const CHANGES_CHANNEL: &str = "chitty_access";

/// The table sqlx records this crate's migrations in, apart from a host's own `_sqlx_migrations`.
const MIGRATIONS_TABLE: &str = "_chitty_gateway_migrations";

const TENANT_COLUMNS: &str = "id, budget_nano_usd, budget_period, rpm, tpm, models, burst, cache_group";
const KEY_COLUMNS: &str = "id, tenant_id, parent_id, name, key_sha256, budget_nano_usd, models, expires_at_ms, rpm, \
                           tpm, created_at_ms, revoked_at_ms";

/// Tenants and keys in PostgreSQL. Writes to one key tree are serialised by a per-tenant advisory lock, so
/// a key delegated while its parent is being revoked is revoked too.
///
/// ```no_run
/// use chitty_core::access::AccessStore;
/// use chitty_providers::postgres::PostgresAccessStore;
///
/// # async fn run() -> chitty_core::Result<()> {
/// let store = PostgresAccessStore::connect("postgres://postgres@127.0.0.1:5432/test").await?;
/// println!("{} tenants", store.snapshot().await?.tenants.len());
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct PostgresAccessStore {
    pool: PgPool,
}

impl fmt::Debug for PostgresAccessStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The pool's options hold the password; say only how big it is.
        f.debug_struct("PostgresAccessStore").field("connections", &self.pool.size()).finish_non_exhaustive()
    }
}

fn backend(error: impl Into<chitty_core::BoxError>) -> Error {
    Error::backend("postgres", error)
}

/// A write error: a unique violation is a conflict on `what` `id`, anything else a backend failure.
fn write_error(error: sqlx::Error, what: &'static str, id: &str) -> Error {
    match &error {
        sqlx::Error::Database(db) if db.is_unique_violation() => Error::Conflict { what, id: id.to_owned() },
        _ => backend(error),
    }
}

fn to_i64(what: &str, value: u64) -> Result<i64> {
    i64::try_from(value).map_err(|_| Error::invalid_request(format!("`{what}` is too large"), Some(what)))
}

fn from_i64(value: i64) -> Result<u64> {
    u64::try_from(value).map_err(|_| backend(format!("negative value {value} in a non-negative column")))
}

fn opt_u64(row: &PgRow, column: &str) -> Result<Option<u64>> {
    row.try_get::<Option<i64>, _>(column).map_err(backend)?.map(from_i64).transpose()
}

fn opt_u32(row: &PgRow, column: &str) -> Result<Option<u32>> {
    opt_u64(row, column)?.map(|v| u32::try_from(v).map_err(|_| backend(format!("{column} out of range")))).transpose()
}

fn models(row: &PgRow) -> Result<Option<Vec<String>>> {
    Ok(row.try_get::<Option<Json<Vec<String>>>, _>("models").map_err(backend)?.map(|j| j.0))
}

fn tenant_from_row(row: &PgRow) -> Result<TenantRecord> {
    let period: String = row.try_get("budget_period").map_err(backend)?;
    Ok(TenantRecord {
        id: row.try_get("id").map_err(backend)?,
        budget: opt_u64(row, "budget_nano_usd")?.map(NanoUsd),
        budget_period: BudgetPeriod::parse(&period).ok_or_else(|| backend(format!("budget period `{period}`")))?,
        rpm: opt_u32(row, "rpm")?,
        tpm: opt_u32(row, "tpm")?,
        models: models(row)?,
        burst: opt_u32(row, "burst")?,
        cache_group: row.try_get("cache_group").map_err(backend)?,
    })
}

fn key_from_row(row: &PgRow) -> Result<KeyRecord> {
    let digest: Vec<u8> = row.try_get("key_sha256").map_err(backend)?;
    let digest = <[u8; 32]>::try_from(digest.as_slice()).map_err(|_| backend("key digest is not 32 bytes"))?;
    Ok(KeyRecord {
        id: row.try_get("id").map_err(backend)?,
        tenant: row.try_get("tenant_id").map_err(backend)?,
        parent: row.try_get("parent_id").map_err(backend)?,
        name: row.try_get("name").map_err(backend)?,
        digest: KeyDigest(digest),
        budget: opt_u64(row, "budget_nano_usd")?.map(NanoUsd),
        models: models(row)?,
        expires_at: opt_u64(row, "expires_at_ms")?.map(Timestamp),
        rpm: opt_u32(row, "rpm")?,
        tpm: opt_u32(row, "tpm")?,
        created_at: Timestamp(from_i64(row.try_get("created_at_ms").map_err(backend)?)?),
        revoked_at: opt_u64(row, "revoked_at_ms")?.map(Timestamp),
    })
}

impl PostgresAccessStore {
    /// Connects to `url` and runs the migrations.
    pub async fn connect(url: &str) -> Result<Self> {
        let options = PgConnectOptions::from_str(url).map_err(backend)?;
        Self::from_pool(PgPoolOptions::new().max_connections(8).connect_with(options).await.map_err(backend)?).await
    }

    /// Uses `pool` and runs the migrations.
    pub async fn from_pool(pool: PgPool) -> Result<Self> {
        let mut migrator = sqlx::migrate!("./migrations");
        migrator.dangerous_set_table_name(MIGRATIONS_TABLE);
        migrator.run(&pool).await.map_err(backend)?;
        Ok(PostgresAccessStore { pool })
    }

    /// The connection pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// A stream that yields each time the tables may have changed: on every notification on
    /// [`CHANGES_CHANNEL`], and after a lost connection is re-established (notifications sent meanwhile
    /// are lost, so the reader must assume a change). Ends only if the listener cannot reconnect.
    pub async fn changes(&self) -> Result<BoxStream<'static, ()>> {
        let mut listener = PgListener::connect_with(&self.pool).await.map_err(backend)?;
        listener.listen(CHANGES_CHANNEL).await.map_err(backend)?;
        let stream = futures::stream::unfold(listener, |mut listener| async move {
            match listener.try_recv().await {
                // `None`: the connection dropped and will be re-established by the next call.
                Ok(_) => Some(((), listener)),
                Err(e) => {
                    tracing::warn!(error = %e, "access-store listener failed; reconnecting");
                    Some(((), listener))
                }
            }
        });
        Ok(Box::pin(stream))
    }

    /// Serialises writes to one tenant's keys (delegation against revocation) for the transaction.
    async fn lock_tenant(tx: &mut Transaction<'_, Postgres>, tenant: &str) -> Result<()> {
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 7079))")
            .bind(tenant)
            .execute(&mut **tx)
            .await
            .map_err(backend)?;
        Ok(())
    }
}

#[async_trait]
impl AccessStore for PostgresAccessStore {
    async fn create_tenant(&self, tenant: TenantRecord) -> Result<TenantRecord> {
        let query = sqlx::AssertSqlSafe(format!(
            "INSERT INTO chitty_tenants ({TENANT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
        ));
        sqlx::query(query)
            .bind(&tenant.id)
            .bind(tenant.budget.map(|b| to_i64("budget_usd", b.0)).transpose()?)
            .bind(tenant.budget_period.as_str())
            .bind(tenant.rpm.map(i64::from))
            .bind(tenant.tpm.map(i64::from))
            .bind(tenant.models.as_ref().map(Json))
            .bind(tenant.burst.map(i64::from))
            .bind(&tenant.cache_group)
            .execute(&self.pool)
            .await
            .map_err(|e| write_error(e, "tenant", &tenant.id))?;
        Ok(tenant)
    }

    async fn update_tenant(&self, id: &str, update: &TenantUpdate) -> Result<TenantRecord> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        let query =
            sqlx::AssertSqlSafe(format!("SELECT {TENANT_COLUMNS} FROM chitty_tenants WHERE id = $1 FOR UPDATE"));
        let row = sqlx::query(query).bind(id).fetch_optional(&mut *tx).await.map_err(backend)?;
        let current = tenant_from_row(&row.ok_or_else(|| Error::NotFound { what: "tenant", id: id.into() })?)?;
        let next = update.apply(current);
        sqlx::query(
            "UPDATE chitty_tenants SET budget_nano_usd = $2, budget_period = $3, rpm = $4, tpm = $5, models = $6 \
             WHERE id = $1",
        )
        .bind(id)
        .bind(next.budget.map(|b| to_i64("budget_usd", b.0)).transpose()?)
        .bind(next.budget_period.as_str())
        .bind(next.rpm.map(i64::from))
        .bind(next.tpm.map(i64::from))
        .bind(next.models.as_ref().map(Json))
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        Ok(next)
    }

    async fn tenant(&self, id: &str) -> Result<Option<TenantRecord>> {
        let query = sqlx::AssertSqlSafe(format!("SELECT {TENANT_COLUMNS} FROM chitty_tenants WHERE id = $1"));
        let row = sqlx::query(query).bind(id).fetch_optional(&self.pool).await.map_err(backend)?;
        row.as_ref().map(tenant_from_row).transpose()
    }

    async fn create_key(&self, key: KeyRecord) -> Result<KeyRecord> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        Self::lock_tenant(&mut tx, &key.tenant).await?;
        let tenant = sqlx::query("SELECT 1 FROM chitty_tenants WHERE id = $1")
            .bind(&key.tenant)
            .fetch_optional(&mut *tx)
            .await
            .map_err(backend)?;
        if tenant.is_none() {
            return Err(Error::NotFound { what: "tenant", id: key.tenant });
        }
        if let Some(parent) = &key.parent {
            let live =
                sqlx::query("SELECT 1 FROM chitty_api_keys WHERE id = $1 AND tenant_id = $2 AND revoked_at_ms IS NULL")
                    .bind(parent)
                    .bind(&key.tenant)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(backend)?;
            if live.is_none() {
                return Err(Error::NotFound { what: "key", id: parent.clone() });
            }
        }
        let query = sqlx::AssertSqlSafe(format!(
            "INSERT INTO chitty_api_keys ({KEY_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
        ));
        sqlx::query(query)
            .bind(&key.id)
            .bind(&key.tenant)
            .bind(&key.parent)
            .bind(&key.name)
            .bind(key.digest.0.as_slice())
            .bind(key.budget.map(|b| to_i64("budget_usd", b.0)).transpose()?)
            .bind(key.models.as_ref().map(Json))
            .bind(key.expires_at.map(|t| to_i64("expires_at", t.0)).transpose()?)
            .bind(key.rpm.map(i64::from))
            .bind(key.tpm.map(i64::from))
            .bind(to_i64("created_at", key.created_at.0)?)
            .bind(key.revoked_at.map(|t| to_i64("revoked_at", t.0)).transpose()?)
            .execute(&mut *tx)
            .await
            .map_err(|e| write_error(e, "key", &key.id))?;
        tx.commit().await.map_err(backend)?;
        Ok(key)
    }

    async fn key(&self, id: &str) -> Result<Option<KeyRecord>> {
        let query = sqlx::AssertSqlSafe(format!("SELECT {KEY_COLUMNS} FROM chitty_api_keys WHERE id = $1"));
        let row = sqlx::query(query).bind(id).fetch_optional(&self.pool).await.map_err(backend)?;
        row.as_ref().map(key_from_row).transpose()
    }

    async fn revoke_key(&self, id: &str, now: Timestamp) -> Result<Vec<String>> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        let tenant: Option<String> = sqlx::query_scalar("SELECT tenant_id FROM chitty_api_keys WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(backend)?;
        let tenant = tenant.ok_or_else(|| Error::NotFound { what: "key", id: id.into() })?;
        Self::lock_tenant(&mut tx, &tenant).await?;
        // Under the tenant's lock no key can be delegated from this tree until the transaction ends.
        let revoked: Vec<String> = sqlx::query_scalar(
            "WITH RECURSIVE tree (id) AS ( \
                 SELECT id FROM chitty_api_keys WHERE id = $1 \
                 UNION SELECT k.id FROM chitty_api_keys k JOIN tree t ON k.parent_id = t.id) \
             UPDATE chitty_api_keys SET revoked_at_ms = $2 \
             WHERE id IN (SELECT id FROM tree) AND revoked_at_ms IS NULL RETURNING id",
        )
        .bind(id)
        .bind(to_i64("now", now.0)?)
        .fetch_all(&mut *tx)
        .await
        .map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        Ok(revoked)
    }

    async fn snapshot(&self) -> Result<AccessSnapshot> {
        // One repeatable-read transaction: the keys and tenants are from the same instant.
        let mut tx = self.pool.begin().await.map_err(backend)?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        let query = sqlx::AssertSqlSafe(format!("SELECT {TENANT_COLUMNS} FROM chitty_tenants ORDER BY id"));
        let tenants = sqlx::query(query).fetch_all(&mut *tx).await.map_err(backend)?;
        let query = sqlx::AssertSqlSafe(format!("SELECT {KEY_COLUMNS} FROM chitty_api_keys ORDER BY id"));
        let keys = sqlx::query(query).fetch_all(&mut *tx).await.map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        Ok(AccessSnapshot {
            tenants: tenants.iter().map(tenant_from_row).collect::<Result<_>>()?,
            keys: keys.iter().map(key_from_row).collect::<Result<_>>()?,
        })
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await.map_err(backend)?;
        Ok(())
    }
}

/// A [`Spend`] as stored in `chitty_spend.spend`: amounts as decimal strings, since JSON numbers past 2^53
/// lose digits in most readers.
#[derive(serde::Serialize, serde::Deserialize)]
struct StoredSpend {
    accounts: BTreeMap<String, String>,
    by_model: BTreeMap<String, String>,
    by_key: BTreeMap<String, String>,
}

impl StoredSpend {
    fn from_spend(spend: &Spend) -> StoredSpend {
        let text = |map: &BTreeMap<String, NanoUsd>| map.iter().map(|(k, v)| (k.clone(), v.0.to_string())).collect();
        StoredSpend {
            accounts: spend.accounts.iter().map(|(k, v)| (k.clone(), v.spent.0.to_string())).collect(),
            by_model: text(&spend.by_model),
            by_key: text(&spend.by_key),
        }
    }

    fn into_spend(self) -> Result<Spend> {
        fn amount(text: &str) -> Result<NanoUsd> {
            text.parse().map(NanoUsd).map_err(|_| backend(format!("`{text}` in chitty_spend is not a nano-USD amount")))
        }
        fn amounts(map: BTreeMap<String, String>) -> Result<BTreeMap<String, NanoUsd>> {
            map.into_iter().map(|(k, v)| Ok((k, amount(&v)?))).collect()
        }
        let accounts = self
            .accounts
            .into_iter()
            .map(|(k, v)| Ok((k, AccountSpend { spent: amount(&v)?, reserved: NanoUsd::ZERO })))
            .collect::<Result<_>>()?;
        Ok(Spend { accounts, by_model: amounts(self.by_model)?, by_key: amounts(self.by_key)? })
    }
}

/// Spend saved in `chitty_spend`, one row per tenant and period; a late, smaller snapshot never overwrites a
/// larger one.
#[async_trait]
impl SpendArchive for PostgresAccessStore {
    async fn save_spend(&self, tenant: &str, period: Timestamp, spend: &Spend) -> Result<()> {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        sqlx::query(
            "INSERT INTO chitty_spend (tenant_id, period_start_ms, total_nano_usd, spend, saved_at_ms) \
             VALUES ($1, $2, $3::numeric, $4, $5) \
             ON CONFLICT (tenant_id, period_start_ms) DO UPDATE \
             SET total_nano_usd = excluded.total_nano_usd, spend = excluded.spend, saved_at_ms = excluded.saved_at_ms \
             WHERE chitty_spend.total_nano_usd <= excluded.total_nano_usd",
        )
        .bind(tenant)
        .bind(to_i64("period", period.0)?)
        .bind(spend.settled_total().0.to_string())
        .bind(Json(StoredSpend::from_spend(spend)))
        .bind(now_ms)
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        Ok(())
    }

    async fn load_spend(&self, tenant: &str, period: Timestamp) -> Result<Option<Spend>> {
        let row: Option<(Json<StoredSpend>,)> =
            sqlx::query_as("SELECT spend FROM chitty_spend WHERE tenant_id = $1 AND period_start_ms = $2")
                .bind(tenant)
                .bind(to_i64("period", period.0)?)
                .fetch_optional(&self.pool)
                .await
                .map_err(backend)?;
        row.map(|(stored,)| stored.0.into_spend()).transpose()
    }
}
