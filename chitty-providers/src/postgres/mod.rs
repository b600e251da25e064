//! PostgreSQL backends (feature `postgres`): [`PostgresAccessStore`], the gateway's tenants and keys.
//!
//! Migrations (in `chitty-providers/migrations/`, embedded) run when a store connects, recorded in their own
//! table `_chitty_gateway_migrations` apart from a host's `_sqlx_migrations`. Every write to the tables,
//! through the store or by hand in SQL, sends a notification on the channel `chitty_access`;
//! [`PostgresAccessStore::changes`] turns them into a stream a gateway reloads on.

mod access;

pub use access::{CHANGES_CHANNEL, PostgresAccessStore};
