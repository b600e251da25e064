//! The PostgreSQL installation store against the machine's PostgreSQL (`CHITTY_TEST_POSTGRES_URL`, by
//! default `postgres://postgres@127.0.0.1:5432/test`): every conformance check in a schema of its own,
//! so parallel runs never collide; ignored with the reason when the server is unreachable
//! (`harness = false`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::future::Future;
use std::sync::Arc;

use chitty_github::Error;
use chitty_github::installations::{InstallationStore, PostgresInstallationStore};
use chitty_testkit::services::{self, block_on, trial};
use common::installations::{CHECKS, change};
use common::unique;

fn main() -> std::process::ExitCode {
    let postgres = services::postgres_url();
    let mut trials: Vec<_> = CHECKS
        .iter()
        .map(|&(name, check)| {
            trial(&format!("postgres_{name}"), &postgres, move |url| {
                block_on(in_own_schema(url, |store| check(Arc::new(store))))
            })
        })
        .collect();
    trials.push(trial("migrations_rerun_cleanly_in_their_own_table", &postgres, |url| {
        block_on(in_own_schema(url, migrations_rerun_cleanly_in_their_own_table))
    }));
    trials.push(trial("times_are_stored_as_timestamptz", &postgres, |url| {
        block_on(in_own_schema(url, times_are_stored_as_timestamptz))
    }));
    trials.push(trial("a_schema_that_is_not_an_identifier_is_refused", &postgres, |url| {
        block_on(a_schema_that_is_not_an_identifier_is_refused(url))
    }));
    services::run(trials)
}

/// Runs `body` on a store in a new schema, then drops the schema (also when `body` panics).
async fn in_own_schema<F, Fut>(url: String, body: F)
where
    F: FnOnce(PostgresInstallationStore) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let schema = unique("chitty_installations");
    let store = PostgresInstallationStore::connect_in_schema(&url, &schema).await.unwrap();
    let pool = store.pool().clone();
    assert!(!format!("{store:?}").contains("postgres://"), "{store:?}");
    let outcome = tokio::spawn(body(store)).await;
    let drop = sqlx::AssertSqlSafe(format!("DROP SCHEMA \"{schema}\" CASCADE"));
    sqlx::query(drop).execute(&pool).await.unwrap();
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic.into_panic());
    }
}

async fn migrations_rerun_cleanly_in_their_own_table(store: PostgresInstallationStore) {
    store.apply(change("installation.created.json", 1, "d1", 1)).await.unwrap();
    // A second start-up on the same schema: the migrations are recorded, nothing is lost.
    let again = PostgresInstallationStore::from_pool(store.pool().clone()).await.unwrap();
    assert_eq!(again.list().await.unwrap().len(), 1);
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables WHERE table_schema = current_schema() ORDER BY 1",
    )
    .fetch_all(store.pool())
    .await
    .unwrap();
    assert_eq!(
        tables,
        [
            "_chitty_github_migrations",
            "github_installation_deliveries",
            "github_installation_repositories",
            "github_installations"
        ]
    );
}

async fn times_are_stored_as_timestamptz(store: PostgresInstallationStore) {
    store.apply(change("installation.suspend.json", 5, "d1", 1_700_000_000_123)).await.unwrap();
    let (created, suspended, by): (bool, bool, Option<String>) = sqlx::query_as(
        "SELECT created_at = '2019-05-15T15:21:15Z'::timestamptz, suspended_at = '2019-06-01T10:00:00Z'::timestamptz, \
         suspended_by FROM github_installations WHERE installation_id = 5",
    )
    .fetch_one(store.pool())
    .await
    .unwrap();
    assert!(created && suspended);
    assert_eq!(by.as_deref(), Some("octo-admin"));
    let record = store.get(5).await.unwrap().unwrap();
    assert_eq!(record.created_at, Some(common::installations::INSTALLED_AT));
}

async fn a_schema_that_is_not_an_identifier_is_refused(url: String) {
    for schema in ["", "x\"; DROP TABLE y; --", "1abc", "with space"] {
        let error = PostgresInstallationStore::connect_in_schema(&url, schema).await.unwrap_err();
        assert!(matches!(error, Error::InvalidConfig { .. }), "{schema}: {error}");
    }
}
