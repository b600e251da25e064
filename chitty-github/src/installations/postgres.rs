//! Installations in PostgreSQL (feature `postgres`): one row per installation and one per
//! repository, changed in a transaction under a per-installation advisory lock by the same rules as
//! the memory store ([`InstallationState::apply`]).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use async_trait::async_trait;
use chitty_core::Timestamp;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::types::Json;
use sqlx::{Postgres, Row, Transaction};

use super::{
    ApplyOutcome, EventOrder, InstallationAccount, InstallationChange, InstallationRecord, InstallationSnapshot,
    InstallationState, InstallationStore, InstalledRepository, RepositoryEntry, Suspension,
};
use crate::error::{Error, Result};

/// The installation columns, with times as milliseconds since the epoch, and then `$tail`.
macro_rules! select_installation {
    ($tail:literal) => {
        concat!(
            "SELECT installation_id, account_login, account_id, account_type, app_id, \
    repository_selection, permissions, events, suspended_by, \
    (extract(epoch FROM suspended_at) * 1000)::bigint AS suspended_at_ms, \
    (extract(epoch FROM created_at) * 1000)::bigint AS created_at_ms, \
    (extract(epoch FROM updated_at) * 1000)::bigint AS updated_at_ms, \
    snapshot_occurred_ms, snapshot_received_ms, deleted_occurred_ms, deleted_received_ms \
    FROM github_installations ",
            $tail
        )
    };
}

/// The table sqlx records this crate's migrations in, apart from a host's own `_sqlx_migrations`.
const MIGRATIONS_TABLE: &str = "_chitty_github_migrations";

/// Installations in PostgreSQL. Migrations (in `chitty-github/migrations/`, embedded) run when the
/// store is created.
///
/// ```no_run
/// use chitty_github::installations::{InstallationStore, PostgresInstallationStore};
///
/// # async fn run() -> chitty_github::Result<()> {
/// let store = PostgresInstallationStore::connect("postgres://postgres@127.0.0.1:5432/test").await?;
/// println!("{} installations", store.list().await?.len());
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct PostgresInstallationStore {
    pool: PgPool,
}

impl fmt::Debug for PostgresInstallationStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The pool's options hold the password; say only how big it is.
        f.debug_struct("PostgresInstallationStore").field("connections", &self.pool.size()).finish_non_exhaustive()
    }
}

fn backend(error: impl Into<chitty_core::BoxError>) -> Error {
    Error::backend("postgres", error)
}

impl PostgresInstallationStore {
    /// Connects to `url`, runs the migrations, and stores installations in the connection's schema.
    pub async fn connect(url: &str) -> Result<Self> {
        let options = PgConnectOptions::from_str(url).map_err(backend)?;
        Self::from_pool(PgPoolOptions::new().connect_with(options).await.map_err(backend)?).await
    }

    /// Connects to `url` and keeps the tables in `schema` (created if absent; letters, digits and
    /// `_` only), e.g. to keep them apart from a host's own tables.
    pub async fn connect_in_schema(url: &str, schema: &str) -> Result<Self> {
        let valid = !schema.is_empty()
            && schema.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !schema.starts_with(|c: char| c.is_ascii_digit());
        if !valid {
            let reason = format!("schema `{schema}`: use letters, digits and `_`, not starting with a digit");
            return Err(Error::InvalidConfig { reason });
        }
        let options = PgConnectOptions::from_str(url).map_err(backend)?.options([("search_path", schema)]);
        let pool = PgPoolOptions::new().connect_with(options).await.map_err(backend)?;
        // `schema` was checked above to be a plain identifier.
        let create = sqlx::AssertSqlSafe(format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\""));
        sqlx::query(create).execute(&pool).await.map_err(backend)?;
        Self::from_pool(pool).await
    }

    /// Uses `pool` and runs the migrations.
    pub async fn from_pool(pool: PgPool) -> Result<Self> {
        let mut migrator = sqlx::migrate!("./migrations");
        migrator.dangerous_set_table_name(MIGRATIONS_TABLE);
        migrator.run(&pool).await.map_err(backend)?;
        Ok(PostgresInstallationStore { pool })
    }

    /// The connection pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    async fn load(tx: &mut Transaction<'_, Postgres>, id: i64) -> Result<Option<InstallationState>> {
        let row = sqlx::query(select_installation!("WHERE installation_id = $1"))
            .bind(id)
            .fetch_optional(&mut **tx)
            .await
            .map_err(backend)?;
        let Some(row) = row else { return Ok(None) };
        let mut state = state_from_row(&row)?;
        let repositories = sqlx::query(
            "SELECT repository_id, name, full_name, private, present, occurred_ms, received_ms \
             FROM github_installation_repositories WHERE installation_id = $1",
        )
        .bind(id)
        .fetch_all(&mut **tx)
        .await
        .map_err(backend)?;
        for row in repositories {
            let entry = RepositoryEntry {
                repository: InstalledRepository {
                    id: unsigned(row.try_get("repository_id").map_err(backend)?)?,
                    name: row.try_get("name").map_err(backend)?,
                    full_name: row.try_get("full_name").map_err(backend)?,
                    private: row.try_get("private").map_err(backend)?,
                },
                present: row.try_get("present").map_err(backend)?,
                order: order(&row, "occurred_ms", "received_ms")?,
            };
            state.repositories.insert(entry.repository.id, entry);
        }
        Ok(Some(state))
    }

    async fn save(
        tx: &mut Transaction<'_, Postgres>,
        state: &InstallationState,
        before: Option<&InstallationState>,
    ) -> Result<()> {
        let s = &state.snapshot;
        let id = signed(s.id)?;
        sqlx::query(
            "INSERT INTO github_installations (installation_id, account_login, account_id, account_type, app_id, \
               repository_selection, permissions, events, suspended_at, suspended_by, created_at, updated_at, \
               deleted_at, snapshot_occurred_ms, snapshot_received_ms, deleted_occurred_ms, deleted_received_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, to_timestamp($9 / 1000.0), $10, to_timestamp($11 / 1000.0), \
               to_timestamp($12 / 1000.0), to_timestamp($16 / 1000.0), $13, $14, $15, $16) \
             ON CONFLICT (installation_id) DO UPDATE SET account_login = $2, account_id = $3, account_type = $4, \
               app_id = $5, repository_selection = $6, permissions = $7, events = $8, \
               suspended_at = to_timestamp($9 / 1000.0), suspended_by = $10, created_at = to_timestamp($11 / 1000.0), \
               updated_at = to_timestamp($12 / 1000.0), deleted_at = to_timestamp($16 / 1000.0), \
               snapshot_occurred_ms = $13, snapshot_received_ms = $14, deleted_occurred_ms = $15, \
               deleted_received_ms = $16, recorded_at = now()",
        )
        .bind(id)
        .bind(&s.account.login)
        .bind(signed(s.account.id)?)
        .bind(&s.account.kind)
        .bind(s.app_id.map(signed).transpose()?)
        .bind(&s.repository_selection)
        .bind(Json(&s.permissions))
        .bind(&s.events)
        .bind(s.suspension.as_ref().map(|x| millis(x.at)).transpose()?)
        .bind(s.suspension.as_ref().and_then(|x| x.by.clone()))
        .bind(s.created_at.map(millis).transpose()?)
        .bind(s.updated_at.map(millis).transpose()?)
        .bind(millis(state.snapshot_order.occurred_at)?)
        .bind(millis(state.snapshot_order.received_at)?)
        .bind(state.deleted.map(|o| millis(o.occurred_at)).transpose()?)
        .bind(state.deleted.map(|o| millis(o.received_at)).transpose()?)
        .execute(&mut **tx)
        .await
        .map_err(backend)?;
        for (repository_id, entry) in &state.repositories {
            if before.and_then(|b| b.repositories.get(repository_id)) == Some(entry) {
                continue;
            }
            sqlx::query(
                "INSERT INTO github_installation_repositories \
                   (installation_id, repository_id, name, full_name, private, present, occurred_ms, received_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                 ON CONFLICT (installation_id, repository_id) DO UPDATE SET name = $3, full_name = $4, \
                   private = $5, present = $6, occurred_ms = $7, received_ms = $8",
            )
            .bind(id)
            .bind(signed(*repository_id)?)
            .bind(&entry.repository.name)
            .bind(&entry.repository.full_name)
            .bind(entry.repository.private)
            .bind(entry.present)
            .bind(millis(entry.order.occurred_at)?)
            .bind(millis(entry.order.received_at)?)
            .execute(&mut **tx)
            .await
            .map_err(backend)?;
        }
        Ok(())
    }

    /// The installation `id` (deleted or not), or with `None` every installation not deleted.
    async fn records(&self, id: Option<i64>) -> Result<Vec<InstallationRecord>> {
        // One snapshot for the rows and their repositories.
        let mut tx = self.pool.begin().await.map_err(backend)?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        let rows = sqlx::query(select_installation!(
            "WHERE installation_id = $1::bigint OR ($1::bigint IS NULL AND deleted_occurred_ms IS NULL) \
             ORDER BY installation_id"
        ))
        .bind(id)
        .fetch_all(&mut *tx)
        .await
        .map_err(backend)?;
        let mut records = Vec::with_capacity(rows.len());
        for row in rows {
            let mut record = state_from_row(&row)?.record();
            let repositories = sqlx::query(
                "SELECT repository_id, name, full_name, private FROM github_installation_repositories \
                 WHERE installation_id = $1 AND present ORDER BY repository_id",
            )
            .bind(signed(record.id)?)
            .fetch_all(&mut *tx)
            .await
            .map_err(backend)?;
            for row in repositories {
                record.repositories.push(InstalledRepository {
                    id: unsigned(row.try_get("repository_id").map_err(backend)?)?,
                    name: row.try_get("name").map_err(backend)?,
                    full_name: row.try_get("full_name").map_err(backend)?,
                    private: row.try_get("private").map_err(backend)?,
                });
            }
            records.push(record);
        }
        tx.commit().await.map_err(backend)?;
        Ok(records)
    }
}

fn state_from_row(row: &PgRow) -> Result<InstallationState> {
    let get_time = |column: &str| -> Result<Option<Timestamp>> {
        row.try_get::<Option<i64>, _>(column).map_err(backend)?.map(timestamp).transpose()
    };
    let suspension = get_time("suspended_at_ms")?
        .map(|at| -> Result<Suspension> { Ok(Suspension { at, by: row.try_get("suspended_by").map_err(backend)? }) })
        .transpose()?;
    let permissions: Json<BTreeMap<String, String>> = row.try_get("permissions").map_err(backend)?;
    let deleted = match row.try_get::<Option<i64>, _>("deleted_occurred_ms").map_err(backend)? {
        Some(_) => Some(order(row, "deleted_occurred_ms", "deleted_received_ms")?),
        None => None,
    };
    Ok(InstallationState {
        snapshot: InstallationSnapshot {
            id: unsigned(row.try_get("installation_id").map_err(backend)?)?,
            account: InstallationAccount {
                login: row.try_get("account_login").map_err(backend)?,
                id: unsigned(row.try_get("account_id").map_err(backend)?)?,
                kind: row.try_get("account_type").map_err(backend)?,
            },
            app_id: row.try_get::<Option<i64>, _>("app_id").map_err(backend)?.map(unsigned).transpose()?,
            repository_selection: row.try_get("repository_selection").map_err(backend)?,
            permissions: permissions.0,
            events: row.try_get("events").map_err(backend)?,
            suspension,
            created_at: get_time("created_at_ms")?,
            updated_at: get_time("updated_at_ms")?,
        },
        snapshot_order: order(row, "snapshot_occurred_ms", "snapshot_received_ms")?,
        repositories: BTreeMap::new(),
        deleted,
    })
}

fn order(row: &PgRow, occurred: &str, received: &str) -> Result<EventOrder> {
    Ok(EventOrder {
        occurred_at: timestamp(row.try_get(occurred).map_err(backend)?)?,
        received_at: timestamp(row.try_get(received).map_err(backend)?)?,
    })
}

fn signed(value: u64) -> Result<i64> {
    i64::try_from(value).map_err(|_| backend(format!("{value} does not fit a bigint column")))
}

fn unsigned(value: i64) -> Result<u64> {
    u64::try_from(value).map_err(|_| backend(format!("negative id {value} in the installations tables")))
}

fn millis(time: Timestamp) -> Result<i64> {
    signed(time.0)
}

fn timestamp(millis: i64) -> Result<Timestamp> {
    unsigned(millis).map(Timestamp)
}

#[async_trait]
impl InstallationStore for PostgresInstallationStore {
    async fn apply(&self, change: InstallationChange) -> Result<ApplyOutcome> {
        let id = signed(change.installation_id())?;
        let mut tx = self.pool.begin().await.map_err(backend)?;
        // One writer per installation: the row may not exist yet, so a row lock would not do.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('chitty-github-installation', $1))")
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        let current = Self::load(&mut tx, id).await?;
        let applied_before =
            sqlx::query("SELECT 1 FROM github_installation_deliveries WHERE installation_id = $1 AND delivery_id = $2")
                .bind(id)
                .bind(&change.delivery)
                .fetch_optional(&mut *tx)
                .await
                .map_err(backend)?
                .is_some();
        let (next, outcome) = InstallationState::apply(current.as_ref(), &change, applied_before);
        if let Some(next) = next {
            Self::save(&mut tx, &next, current.as_ref()).await?;
        }
        if outcome != ApplyOutcome::AfterDeletion && !applied_before {
            sqlx::query(
                "INSERT INTO github_installation_deliveries (installation_id, delivery_id, occurred_ms, received_ms) \
                 VALUES ($1, $2, $3, $4)",
            )
            .bind(id)
            .bind(&change.delivery)
            .bind(millis(change.order.occurred_at)?)
            .bind(millis(change.order.received_at)?)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        }
        tx.commit().await.map_err(backend)?;
        Ok(outcome)
    }

    async fn get(&self, id: u64) -> Result<Option<InstallationRecord>> {
        Ok(self.records(Some(signed(id)?)).await?.pop())
    }

    async fn list(&self) -> Result<Vec<InstallationRecord>> {
        self.records(None).await
    }
}
