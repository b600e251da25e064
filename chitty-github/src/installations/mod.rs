//! The App's installations, persisted and kept in sync from `installation` and
//! `installation_repositories` events: an [`InstallationStore`] (in memory here, PostgreSQL with
//! feature `postgres`) and [`InstallationSync`], the handler that feeds it.
//!
//! Deliveries can arrive twice or out of order (GitHub redelivers, the processor retries, a queue
//! redelivers after a crash), so every store applies a change by the same rules:
//!
//! - **Deletion is a tombstone and wins.** GitHub never reuses an installation id (a reinstall gets
//!   a new one), so once `deleted` is seen, anything later for that id is a late or redelivered event
//!   and is ignored, whatever its timestamps. The row stays, with `deleted_at`.
//! - **A delivery is applied once.** GitHub keeps the `X-GitHub-Delivery` GUID when it redelivers,
//!   so a change from a delivery already applied to the installation is dropped (this holds past the
//!   intake's de-duplication window, and for the processor's own retries).
//! - **Everything else is last-writer-wins by [`EventOrder`]**: GitHub's own time for the change
//!   (the installation's `updated_at`, or `suspended_at` when later), then the time the delivery was
//!   received. GitHub's time comes first because it is what orders the changes at the source; the
//!   receive time only separates changes GitHub stamped with the same second (it cannot tell those
//!   apart when they also arrive out of order: nothing in the payload can). The installation's fields
//!   (account, permissions, events, selection, suspension) are one unit; each repository is its own
//!   unit, and a removed repository keeps its order, so a late `created` listing it does not bring it
//!   back.
//!
//! ```
//! use chitty_core::Timestamp;
//! use chitty_github::events::WebhookEvent;
//! use chitty_github::installations::{
//!     ApplyOutcome, InstallationChange, InstallationStore, MemoryInstallationStore,
//! };
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let store = MemoryInstallationStore::new();
//! let created = WebhookEvent::parse("installation", br#"{
//!     "action": "created",
//!     "installation": {"id": 7, "account": {"login": "octo-org", "id": 1, "type": "Organization"},
//!                      "repository_selection": "selected", "permissions": {"issues": "write"},
//!                      "events": ["issues"], "updated_at": "2026-01-01T00:00:00Z"},
//!     "repositories": [{"id": 10, "name": "a", "full_name": "octo-org/a", "private": false}],
//!     "sender": {"login": "octocat", "id": 2}
//! }"#)?;
//! let change = InstallationChange::from_event(&created, "delivery-guid-1", Timestamp(1))
//!     .expect("an installation event");
//! assert_eq!(store.apply(change.clone()).await?, ApplyOutcome::Inserted);
//! assert_eq!(store.apply(change).await?, ApplyOutcome::Stale); // a redelivery changes nothing
//!
//! let installation = store.get(7).await?.expect("recorded");
//! assert_eq!(installation.account.login, "octo-org");
//! assert_eq!(installation.repositories[0].full_name, "octo-org/a");
//! assert!(installation.is_active());
//! # Ok::<(), chitty_github::Error>(())
//! # }).unwrap();
//! ```
//!
//! An App registers the handler on its processor:
//!
//! ```
//! use std::sync::Arc;
//! use chitty_github::installations::{InstallationSync, MemoryInstallationStore};
//! use chitty_github::processor::Processor;
//!
//! let store = Arc::new(MemoryInstallationStore::new());
//! let processor = InstallationSync::new(store.clone()).register(Processor::builder()).build();
//! # drop(processor);
//! ```

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Debug;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use chitty_core::{BoxError, Timestamp};
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::events::{Installation, RepositorySummary, WebhookEvent};
use crate::processor::{EventContext, Handler, ProcessorBuilder};

#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "postgres")]
pub use self::postgres::PostgresInstallationStore;

/// Where a change stands among the changes to one installation: GitHub's time for it first, then
/// the time its delivery was received (see the [module docs](self) for why).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct EventOrder {
    /// GitHub's time for the change, from the payload (zero when the payload has none).
    pub occurred_at: Timestamp,
    /// When the intake received the delivery.
    pub received_at: Timestamp,
}

/// The account an App is installed on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstallationAccount {
    /// Login (`octo-org`).
    pub login: String,
    /// Numeric id.
    pub id: u64,
    /// `User` or `Organization`.
    pub kind: Option<String>,
}

/// A repository the installation can access.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstalledRepository {
    /// Numeric id.
    pub id: u64,
    /// Name.
    pub name: String,
    /// `owner/name`.
    pub full_name: String,
    /// Whether it is private.
    pub private: bool,
}

impl From<&RepositorySummary> for InstalledRepository {
    fn from(r: &RepositorySummary) -> Self {
        InstalledRepository { id: r.id, name: r.name.clone(), full_name: r.full_name.clone(), private: r.private }
    }
}

/// That an installation is suspended, since when and by whom.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Suspension {
    /// When it was suspended.
    pub at: Timestamp,
    /// The login of who suspended it, when known.
    pub by: Option<String>,
}

/// The installation's own fields as one event shows them (everything but its repositories).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstallationSnapshot {
    /// Installation id.
    pub id: u64,
    /// The account it is installed on.
    pub account: InstallationAccount,
    /// The App's id.
    pub app_id: Option<u64>,
    /// `all` or `selected`.
    pub repository_selection: Option<String>,
    /// Granted permissions (`issues` → `write`).
    pub permissions: BTreeMap<String, String>,
    /// Subscribed events.
    pub events: Vec<String>,
    /// Set while the installation is suspended.
    pub suspension: Option<Suspension>,
    /// When the App was installed, per GitHub.
    pub created_at: Option<Timestamp>,
    /// When the installation last changed, per GitHub.
    pub updated_at: Option<Timestamp>,
}

impl InstallationSnapshot {
    /// The snapshot in an event's installation object.
    pub fn from_installation(installation: &Installation) -> Self {
        let permissions = installation
            .permissions
            .iter()
            .map(|(name, level)| (name.clone(), level.as_str().map_or_else(|| level.to_string(), str::to_owned)))
            .collect();
        let suspension = installation.suspended_at.map(|at| Suspension {
            at: at.0,
            by: installation.suspended_by.as_ref().map(|account| account.login.clone()),
        });
        InstallationSnapshot {
            id: installation.id,
            account: InstallationAccount {
                login: installation.account.login.clone(),
                id: installation.account.id,
                kind: installation.account.kind.clone(),
            },
            app_id: installation.app_id,
            repository_selection: installation.repository_selection.clone(),
            permissions,
            events: installation.events.clone(),
            suspension,
            created_at: installation.created_at.map(|t| t.0),
            updated_at: installation.updated_at.map(|t| t.0),
        }
    }
}

/// What a change does besides carrying the installation's snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ChangeKind {
    /// `created`, `suspend`, `unsuspend`, `new_permissions_accepted`, or repositories `added` or
    /// `removed`: the snapshot, and repositories that are now accessible or no longer are.
    Update {
        /// Repositories the installation can now access.
        present: Vec<InstalledRepository>,
        /// Repositories it can no longer access.
        removed: Vec<InstalledRepository>,
    },
    /// `deleted`: the App was uninstalled.
    Deleted,
}

/// One change to an installation, made from an event by [`InstallationChange::from_event`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstallationChange {
    /// The delivery it came in (`X-GitHub-Delivery`), so that a redelivery is applied once.
    pub delivery: String,
    /// Where it stands among the installation's changes.
    pub order: EventOrder,
    /// The installation as the event shows it.
    pub snapshot: InstallationSnapshot,
    /// What the change does.
    pub kind: ChangeKind,
}

impl InstallationChange {
    /// The change an `installation` or `installation_repositories` event makes, from delivery
    /// `delivery` received at `received_at`; `None` for any other event.
    pub fn from_event(event: &WebhookEvent, delivery: impl Into<String>, received_at: Timestamp) -> Option<Self> {
        let (installation, action, sender, kind) = match event {
            WebhookEvent::Installation(e) => {
                let kind = if e.action == "deleted" {
                    ChangeKind::Deleted
                } else {
                    let present = e.repositories.iter().flatten().map(InstalledRepository::from).collect();
                    ChangeKind::Update { present, removed: Vec::new() }
                };
                (&e.installation, e.action.as_str(), &e.sender, kind)
            }
            WebhookEvent::InstallationRepositories(e) => {
                let present = e.repositories_added.iter().map(InstalledRepository::from).collect();
                let removed = e.repositories_removed.iter().map(InstalledRepository::from).collect();
                (&e.installation, e.action.as_str(), &e.sender, ChangeKind::Update { present, removed })
            }
            _ => return None,
        };
        let mut snapshot = InstallationSnapshot::from_installation(installation);
        if let WebhookEvent::InstallationRepositories(e) = event {
            snapshot.repository_selection = Some(e.repository_selection.clone());
        }
        let times = [installation.updated_at, installation.suspended_at];
        let occurred_at = times.iter().flatten().map(|t| t.0).max().unwrap_or(Timestamp(0));
        // The action is what GitHub did, whatever the embedded object shows.
        match action {
            "suspend" if snapshot.suspension.is_none() => {
                snapshot.suspension = Some(Suspension { at: occurred_at, by: Some(sender.login.clone()) });
            }
            "unsuspend" => snapshot.suspension = None,
            _ => {}
        }
        let order = EventOrder { occurred_at, received_at };
        Some(InstallationChange { delivery: delivery.into(), order, snapshot, kind })
    }

    /// The change that records `installation` as GitHub's API returned it (`GET
    /// /app/installations/{id}`, e.g. from the post-installation callback), read at `received_at`.
    ///
    /// The API lists no repositories, so none are added or removed; the change's delivery is
    /// `api:{id}:{updated_at}`, so reading the same state twice applies it once.
    pub fn from_installation(installation: &Installation, received_at: Timestamp) -> Self {
        let snapshot = InstallationSnapshot::from_installation(installation);
        let times = [installation.updated_at, installation.suspended_at];
        let occurred_at = times.iter().flatten().map(|t| t.0).max().unwrap_or(Timestamp(0));
        InstallationChange {
            delivery: format!("api:{}:{}", installation.id, occurred_at.0),
            order: EventOrder { occurred_at, received_at },
            snapshot,
            kind: ChangeKind::Update { present: Vec::new(), removed: Vec::new() },
        }
    }

    /// The installation's id.
    pub fn installation_id(&self) -> u64 {
        self.snapshot.id
    }
}

/// What [`InstallationStore::apply`] did with a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ApplyOutcome {
    /// The installation was unknown; it is recorded now.
    Inserted,
    /// The installation changed.
    Updated,
    /// Nothing newer: a delivery already applied, or a change older than what is recorded.
    Stale,
    /// The installation is now deleted (a tombstone is kept).
    Deleted,
    /// The installation was already deleted; the change was ignored.
    AfterDeletion,
}

/// An installation as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct InstallationRecord {
    /// Installation id.
    pub id: u64,
    /// The account it is installed on.
    pub account: InstallationAccount,
    /// The App's id.
    pub app_id: Option<u64>,
    /// `all` or `selected`.
    pub repository_selection: Option<String>,
    /// Repositories it can access, by id, as far as events have listed them.
    pub repositories: Vec<InstalledRepository>,
    /// Granted permissions.
    pub permissions: BTreeMap<String, String>,
    /// Subscribed events.
    pub events: Vec<String>,
    /// Set while it is suspended.
    pub suspension: Option<Suspension>,
    /// When the App was installed, per GitHub.
    pub created_at: Option<Timestamp>,
    /// When it last changed, per GitHub.
    pub updated_at: Option<Timestamp>,
    /// When the `deleted` event was received; set once the App is uninstalled.
    pub deleted_at: Option<Timestamp>,
}

impl InstallationRecord {
    /// Neither deleted nor suspended: events for it can be acted on.
    pub fn is_active(&self) -> bool {
        self.deleted_at.is_none() && self.suspension.is_none()
    }
}

/// Persists installations. Every implementation applies changes by the rules in the
/// [module docs](self), atomically per installation, so concurrent and repeated deliveries converge.
#[async_trait]
pub trait InstallationStore: Send + Sync + Debug + 'static {
    /// Applies one change.
    async fn apply(&self, change: InstallationChange) -> Result<ApplyOutcome>;

    /// The installation with this id, deleted ones included (see [`InstallationRecord::deleted_at`]).
    async fn get(&self, id: u64) -> Result<Option<InstallationRecord>>;

    /// Every installation not deleted, by id.
    async fn list(&self) -> Result<Vec<InstallationRecord>>;
}

/// A repository as stored: kept after removal, with its order, so a late event cannot bring it back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RepositoryEntry {
    pub(crate) repository: InstalledRepository,
    pub(crate) present: bool,
    pub(crate) order: EventOrder,
}

/// What a store keeps per installation; both stores run [`InstallationState::apply`] on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct InstallationState {
    pub(crate) snapshot: InstallationSnapshot,
    pub(crate) snapshot_order: EventOrder,
    pub(crate) repositories: BTreeMap<u64, RepositoryEntry>,
    pub(crate) deleted: Option<EventOrder>,
}

impl InstallationState {
    /// The state after `change`, or `None` when nothing changes, and what happened;
    /// `already_applied` says whether the change's delivery was applied to this installation before.
    pub(crate) fn apply(
        current: Option<&Self>,
        change: &InstallationChange,
        already_applied: bool,
    ) -> (Option<Self>, ApplyOutcome) {
        let Some(current) = current else {
            let mut state = InstallationState {
                snapshot: change.snapshot.clone(),
                snapshot_order: change.order,
                repositories: BTreeMap::new(),
                deleted: None,
            };
            let outcome = match &change.kind {
                ChangeKind::Deleted => {
                    state.deleted = Some(change.order);
                    ApplyOutcome::Deleted
                }
                ChangeKind::Update { present, removed } => {
                    state.merge_repositories(present, removed, change.order);
                    ApplyOutcome::Inserted
                }
            };
            return (Some(state), outcome);
        };
        if current.deleted.is_some() {
            return (None, ApplyOutcome::AfterDeletion);
        }
        if already_applied {
            return (None, ApplyOutcome::Stale);
        }
        let mut state = current.clone();
        match &change.kind {
            ChangeKind::Deleted => {
                state.deleted = Some(change.order);
                (Some(state), ApplyOutcome::Deleted)
            }
            ChangeKind::Update { present, removed } => {
                if change.order > state.snapshot_order {
                    state.snapshot = change.snapshot.clone();
                    state.snapshot_order = change.order;
                }
                state.merge_repositories(present, removed, change.order);
                // Orders may move with nothing a caller sees changing (the same repository listed
                // again, later): that is kept, but reported as stale.
                let outcome =
                    if state.record() == current.record() { ApplyOutcome::Stale } else { ApplyOutcome::Updated };
                ((state != *current).then_some(state), outcome)
            }
        }
    }

    fn merge_repositories(
        &mut self,
        present: &[InstalledRepository],
        removed: &[InstalledRepository],
        order: EventOrder,
    ) {
        let listed = present.iter().map(|r| (r, true)).chain(removed.iter().map(|r| (r, false)));
        for (repository, is_present) in listed {
            let newer = self.repositories.get(&repository.id).is_none_or(|entry| order > entry.order);
            if newer {
                let entry = RepositoryEntry { repository: repository.clone(), present: is_present, order };
                self.repositories.insert(repository.id, entry);
            }
        }
    }

    /// The record callers see.
    pub(crate) fn record(&self) -> InstallationRecord {
        let s = &self.snapshot;
        InstallationRecord {
            id: s.id,
            account: s.account.clone(),
            app_id: s.app_id,
            repository_selection: s.repository_selection.clone(),
            repositories: self.repositories.values().filter(|e| e.present).map(|e| e.repository.clone()).collect(),
            permissions: s.permissions.clone(),
            events: s.events.clone(),
            suspension: s.suspension.clone(),
            created_at: s.created_at,
            updated_at: s.updated_at,
            deleted_at: self.deleted.map(|order| order.received_at),
        }
    }
}

/// Installations in memory, for tests and single-process Apps.
#[derive(Debug, Default)]
pub struct MemoryInstallationStore {
    state: Mutex<MemoryState>,
}

#[derive(Debug, Default)]
struct MemoryState {
    installations: HashMap<u64, InstallationState>,
    /// `(installation, delivery)` pairs applied; installation events are few, so all are kept.
    applied: HashSet<(u64, String)>,
}

impl MemoryInstallationStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, MemoryState> {
        // A panic elsewhere cannot leave a half-applied change: each change replaces a whole state.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[async_trait]
impl InstallationStore for MemoryInstallationStore {
    async fn apply(&self, change: InstallationChange) -> Result<ApplyOutcome> {
        let mut guard = self.lock();
        let memory = &mut *guard;
        let id = change.installation_id();
        let applied_before = memory.applied.contains(&(id, change.delivery.clone()));
        let (next, outcome) = InstallationState::apply(memory.installations.get(&id), &change, applied_before);
        if let Some(next) = next {
            memory.installations.insert(id, next);
        }
        if outcome != ApplyOutcome::AfterDeletion {
            memory.applied.insert((id, change.delivery));
        }
        Ok(outcome)
    }

    async fn get(&self, id: u64) -> Result<Option<InstallationRecord>> {
        Ok(self.lock().installations.get(&id).map(InstallationState::record))
    }

    async fn list(&self) -> Result<Vec<InstallationRecord>> {
        let mut records: Vec<_> =
            self.lock().installations.values().filter(|s| s.deleted.is_none()).map(InstallationState::record).collect();
        records.sort_by_key(|r| r.id);
        Ok(records)
    }
}

/// The handler that keeps an [`InstallationStore`] in sync; register it with
/// [`InstallationSync::register`] (on `installation` and `installation_repositories`).
#[derive(Debug, Clone)]
pub struct InstallationSync {
    store: Arc<dyn InstallationStore>,
}

impl InstallationSync {
    /// The events the handler needs.
    pub const ROUTES: [&'static str; 2] = ["installation", "installation_repositories"];

    /// A handler writing to `store`.
    pub fn new(store: Arc<dyn InstallationStore>) -> Self {
        InstallationSync { store }
    }

    /// Registers the handler on `builder` for [`InstallationSync::ROUTES`].
    pub fn register(self, builder: ProcessorBuilder) -> ProcessorBuilder {
        Self::ROUTES.iter().fold(builder, |builder, route| builder.on(*route, self.clone()))
    }
}

/// The handler for `store`: shorthand for [`InstallationSync::new`].
pub fn sync_handler(store: Arc<dyn InstallationStore>) -> InstallationSync {
    InstallationSync::new(store)
}

#[async_trait]
impl Handler for InstallationSync {
    async fn handle(&self, context: EventContext) -> Result<(), BoxError> {
        let delivery = &context.delivery;
        let Some(change) = InstallationChange::from_event(&context.event, delivery.id.as_str(), delivery.received_at)
        else {
            return Ok(());
        };
        let id = change.installation_id();
        let outcome = self.store.apply(change).await?;
        tracing::debug!(
            installation = id,
            event = %context.event.name(),
            action = context.event.action().unwrap_or_default(),
            delivery = %context.delivery.id,
            outcome = ?outcome,
            "installation synced"
        );
        Ok(())
    }
}
