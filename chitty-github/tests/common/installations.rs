//! The conformance checks every [`InstallationStore`] runs (the memory store in `installations.rs`,
//! PostgreSQL in `postgres.rs`): events from the fixtures, applied in order, redelivered, out of
//! order and concurrently.

use std::sync::Arc;

use chitty_core::Timestamp;
use chitty_github::events::WebhookEvent;
use chitty_github::installations::{ApplyOutcome, InstallationChange, InstallationRecord, InstallationStore};
use futures::future::BoxFuture;
use serde_json::Value;

use super::fixture;

/// One check: its name and the function that runs it against a store.
pub type Check = (&'static str, fn(Arc<dyn InstallationStore>) -> BoxFuture<'static, ()>);

/// Every check, for a test file to turn into one test each.
pub const CHECKS: &[Check] = &[
    ("created_records_every_field", |s| Box::pin(created_records_every_field(s))),
    ("a_redelivery_is_applied_once", |s| Box::pin(a_redelivery_is_applied_once(s))),
    ("a_late_created_after_deleted_is_ignored", |s| Box::pin(a_late_created_after_deleted_is_ignored(s))),
    ("deletion_wins_over_a_later_stamped_update", |s| Box::pin(deletion_wins_over_a_later_stamped_update(s))),
    ("repositories_added_and_removed_twice", |s| Box::pin(repositories_added_and_removed_twice(s))),
    ("suspend_and_unsuspend_in_and_out_of_order", |s| Box::pin(suspend_and_unsuspend_in_and_out_of_order(s))),
    ("new_permissions_survive_a_late_created", |s| Box::pin(new_permissions_survive_a_late_created(s))),
    ("the_same_github_second_falls_back_to_receipt", |s| Box::pin(the_same_github_second_falls_back_to_receipt(s))),
    ("concurrent_changes_converge", |s| Box::pin(concurrent_changes_converge(s))),
    ("the_api_view_is_applied_once_and_keeps_repositories", |s| {
        Box::pin(the_api_view_is_applied_once_and_keeps_repositories(s))
    }),
];

/// `2019-05-15T15:21:15Z`, the fixtures' `created_at`, in milliseconds.
pub const INSTALLED_AT: Timestamp = Timestamp(1_557_933_675_000);
const HELLO_WORLD: u64 = 186853002;
const OCTO_REPO: u64 = 186853261;
const SPACE: u64 = 186853007;

/// The event in fixture `name` (`installation.created.json`), for installation `id`, after `edit`.
pub fn event_for(name: &str, id: u64, edit: impl FnOnce(&mut Value)) -> WebhookEvent {
    let mut payload: Value = serde_json::from_slice(&fixture(name)).unwrap();
    payload["installation"]["id"] = id.into();
    edit(&mut payload);
    let event_name = name.split('.').next().unwrap();
    WebhookEvent::parse(event_name, &serde_json::to_vec(&payload).unwrap()).unwrap()
}

/// The change fixture `name` makes to installation `id`, from delivery `delivery` received at `received`.
pub fn change(name: &str, id: u64, delivery: &str, received: u64) -> InstallationChange {
    change_with(name, id, delivery, received, |_| {})
}

/// [`change`] with the payload edited first.
pub fn change_with(
    name: &str,
    id: u64,
    delivery: &str,
    received: u64,
    edit: impl FnOnce(&mut Value),
) -> InstallationChange {
    InstallationChange::from_event(&event_for(name, id, edit), delivery, Timestamp(received)).unwrap()
}

async fn apply(store: &Arc<dyn InstallationStore>, change: InstallationChange) -> ApplyOutcome {
    store.apply(change).await.unwrap()
}

async fn record(store: &Arc<dyn InstallationStore>, id: u64) -> InstallationRecord {
    store.get(id).await.unwrap().unwrap_or_else(|| panic!("installation {id} is recorded"))
}

fn repository_ids(record: &InstallationRecord) -> Vec<u64> {
    record.repositories.iter().map(|r| r.id).collect()
}

fn millis(rfc3339: &str) -> Timestamp {
    let t = time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339).unwrap();
    Timestamp(u64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap())
}

async fn created_records_every_field(store: Arc<dyn InstallationStore>) {
    let id = 1001;
    assert_eq!(store.get(id).await.unwrap(), None);
    assert_eq!(apply(&store, change("installation.created.json", id, "d1", 1)).await, ApplyOutcome::Inserted);
    let r = record(&store, id).await;
    assert_eq!(r.id, id);
    assert_eq!((r.account.login.as_str(), r.account.id), ("octo-org", 6811672));
    assert_eq!(r.account.kind.as_deref(), Some("Organization"));
    assert_eq!(r.app_id, Some(31415));
    assert_eq!(r.repository_selection.as_deref(), Some("selected"));
    assert_eq!(repository_ids(&r), [HELLO_WORLD, OCTO_REPO]);
    assert_eq!(r.repositories[1].full_name, "octo-org/octo-repo");
    assert!(r.repositories[1].private);
    assert_eq!(r.permissions.len(), 5);
    assert_eq!(r.permissions["pull_requests"], "write");
    assert_eq!(r.events, ["check_suite", "issue_comment", "issues", "pull_request", "push"]);
    assert_eq!((r.created_at, r.updated_at), (Some(INSTALLED_AT), Some(INSTALLED_AT)));
    assert_eq!((r.suspension.clone(), r.deleted_at), (None, None));
    assert!(r.is_active());
    let listed = store.list().await.unwrap();
    assert_eq!(listed.iter().filter(|l| l.id == id).collect::<Vec<_>>(), [&r]);
}

async fn a_redelivery_is_applied_once(store: Arc<dyn InstallationStore>) {
    let id = 1002;
    apply(&store, change("installation.created.json", id, "d1", 1)).await;
    assert_eq!(apply(&store, change("installation_repositories.added.json", id, "d2", 2)).await, ApplyOutcome::Updated);
    assert_eq!(
        apply(&store, change("installation_repositories.removed.json", id, "d3", 3)).await,
        ApplyOutcome::Updated
    );
    let settled = record(&store, id).await;
    assert_eq!(repository_ids(&settled), [SPACE, OCTO_REPO]);
    // GitHub redelivers with the same GUID, received later: each is applied once.
    for (name, delivery) in [
        ("installation_repositories.added.json", "d2"),
        ("installation.created.json", "d1"),
        ("installation_repositories.removed.json", "d3"),
    ] {
        assert_eq!(apply(&store, change(name, id, delivery, 10)).await, ApplyOutcome::Stale, "{name}");
        assert_eq!(record(&store, id).await, settled, "{name} redelivered");
    }
    // The processor retrying the same delivery, received at the same time.
    assert_eq!(apply(&store, change("installation.created.json", id, "d1", 1)).await, ApplyOutcome::Stale);
    assert_eq!(record(&store, id).await, settled);
    // Space removed in the same GitHub second it was added: only the GUID tells the addition's
    // redelivery (received last) from a new addition.
    assert_eq!(apply(&store, remove_space(id, "d4", 4)).await, ApplyOutcome::Updated);
    let removed = record(&store, id).await;
    assert_eq!(repository_ids(&removed), [OCTO_REPO]);
    let redelivered = change("installation_repositories.added.json", id, "d2", 11);
    assert_eq!(apply(&store, redelivered).await, ApplyOutcome::Stale);
    assert_eq!(record(&store, id).await, removed);
}

/// The added fixture turned into the removal of Space, with the same `updated_at`.
fn remove_space(id: u64, delivery: &str, received: u64) -> InstallationChange {
    change_with("installation_repositories.added.json", id, delivery, received, |p| {
        p["action"] = "removed".into();
        p["repositories_removed"] = p["repositories_added"].take();
        p["repositories_added"] = serde_json::json!([]);
    })
}

async fn a_late_created_after_deleted_is_ignored(store: Arc<dyn InstallationStore>) {
    let id = 1003;
    // `deleted` overtakes `created`: the tombstone is recorded from the deleted event itself.
    assert_eq!(apply(&store, change("installation.deleted.json", id, "d2", 2)).await, ApplyOutcome::Deleted);
    assert_eq!(apply(&store, change("installation.created.json", id, "d1", 3)).await, ApplyOutcome::AfterDeletion);
    let r = record(&store, id).await;
    assert_eq!(r.deleted_at, Some(Timestamp(2)));
    assert!(!r.is_active());
    assert_eq!(r.account.login, "octo-org");
    assert!(store.list().await.unwrap().iter().all(|l| l.id != id), "a deleted installation is not listed");
    for (name, delivery) in [
        ("installation_repositories.added.json", "d3"),
        ("installation.suspend.json", "d4"),
        ("installation.deleted.json", "d2"),
        ("installation.deleted.json", "d5"),
    ] {
        assert_eq!(apply(&store, change(name, id, delivery, 9)).await, ApplyOutcome::AfterDeletion, "{name}");
    }
    assert_eq!(record(&store, id).await, r);
}

async fn deletion_wins_over_a_later_stamped_update(store: Arc<dyn InstallationStore>) {
    let id = 1004;
    apply(&store, change("installation.created.json", id, "d1", 1)).await;
    let before = record(&store, id).await;
    assert_eq!(apply(&store, change("installation.deleted.json", id, "d2", 2)).await, ApplyOutcome::Deleted);
    // Stamped and received after the deletion: still ignored (GitHub never reuses an installation id).
    let late = change_with("installation.new_permissions_accepted.json", id, "d3", 3, |p| {
        p["installation"]["updated_at"] = "2030-01-01T00:00:00Z".into();
    });
    assert_eq!(apply(&store, late).await, ApplyOutcome::AfterDeletion);
    let r = record(&store, id).await;
    assert_eq!(r.permissions, before.permissions);
    assert_eq!(r.deleted_at, Some(Timestamp(2)));
}

async fn repositories_added_and_removed_twice(store: Arc<dyn InstallationStore>) {
    let id = 1005;
    apply(&store, change("installation.created.json", id, "d1", 1)).await;
    apply(&store, change("installation_repositories.added.json", id, "d2", 2)).await;
    // The same addition again, as a new delivery stamped later: Space is listed once.
    let again = change_with("installation_repositories.added.json", id, "d3", 3, |p| {
        p["installation"]["updated_at"] = "2019-05-16T00:00:00Z".into();
    });
    apply(&store, again).await;
    assert_eq!(repository_ids(&record(&store, id).await), [HELLO_WORLD, SPACE, OCTO_REPO]);
    apply(&store, change("installation_repositories.removed.json", id, "d4", 4)).await;
    let removed_again = change_with("installation_repositories.removed.json", id, "d5", 5, |p| {
        p["installation"]["updated_at"] = "2019-05-21T00:00:00Z".into();
    });
    apply(&store, removed_again).await;
    assert_eq!(repository_ids(&record(&store, id).await), [SPACE, OCTO_REPO]);
    // An addition of Hello-World stamped before its removal, arriving late: it stays removed.
    let stale_add = change_with("installation_repositories.added.json", id, "d6", 6, |p| {
        p["repositories_added"][0] = serde_json::json!({"id": HELLO_WORLD, "name": "Hello-World",
            "full_name": "octo-org/Hello-World", "private": false});
    });
    assert_eq!(apply(&store, stale_add).await, ApplyOutcome::Stale);
    assert_eq!(repository_ids(&record(&store, id).await), [SPACE, OCTO_REPO]);
    // A later addition brings it back.
    let new_add = change_with("installation_repositories.added.json", id, "d7", 7, |p| {
        p["installation"]["updated_at"] = "2019-05-25T00:00:00Z".into();
        p["repositories_added"][0] = serde_json::json!({"id": HELLO_WORLD, "name": "Hello-World",
            "full_name": "octo-org/Hello-World", "private": false});
    });
    assert_eq!(apply(&store, new_add).await, ApplyOutcome::Updated);
    assert_eq!(repository_ids(&record(&store, id).await), [HELLO_WORLD, SPACE, OCTO_REPO]);
}

async fn suspend_and_unsuspend_in_and_out_of_order(store: Arc<dyn InstallationStore>) {
    let id = 1006;
    apply(&store, change("installation.created.json", id, "d1", 1)).await;
    assert_eq!(apply(&store, change("installation.suspend.json", id, "d2", 2)).await, ApplyOutcome::Updated);
    let r = record(&store, id).await;
    let suspension = r.suspension.clone().expect("suspended");
    assert_eq!(suspension.at, millis("2019-06-01T10:00:00Z"));
    assert_eq!(suspension.by.as_deref(), Some("octo-admin"));
    assert!(!r.is_active());
    assert!(store.list().await.unwrap().iter().any(|l| l.id == id), "a suspended installation is listed");
    assert_eq!(repository_ids(&r), [HELLO_WORLD, OCTO_REPO], "suspend lists no repositories and removes none");

    assert_eq!(apply(&store, change("installation.unsuspend.json", id, "d3", 3)).await, ApplyOutcome::Updated);
    let resumed = record(&store, id).await;
    assert_eq!(resumed.suspension, None);
    assert!(resumed.is_active());
    // A suspension stamped before the unsuspension, arriving late as another delivery: still active.
    assert_eq!(apply(&store, change("installation.suspend.json", id, "d4", 4)).await, ApplyOutcome::Stale);
    assert_eq!(record(&store, id).await, resumed);

    // Unsuspend overtakes suspend on a fresh installation: it ends unsuspended.
    let other = 1007;
    apply(&store, change("installation.created.json", other, "e1", 1)).await;
    apply(&store, change("installation.unsuspend.json", other, "e3", 2)).await;
    apply(&store, change("installation.suspend.json", other, "e2", 3)).await;
    assert!(record(&store, other).await.is_active());
}

async fn new_permissions_survive_a_late_created(store: Arc<dyn InstallationStore>) {
    let id = 1008;
    apply(&store, change("installation.created.json", id, "d1", 1)).await;
    assert_eq!(
        apply(&store, change("installation.new_permissions_accepted.json", id, "d2", 2)).await,
        ApplyOutcome::Updated
    );
    let r = record(&store, id).await;
    assert_eq!(r.permissions["actions"], "read");
    assert_eq!(r.permissions["contents"], "write");
    assert!(r.events.iter().any(|e| e == "workflow_run"));
    assert_eq!(r.updated_at, Some(millis("2019-06-03T08:00:00Z")));
    assert_eq!(r.created_at, Some(INSTALLED_AT));
    // The created event again, as another delivery received later: older in GitHub's time, so stale.
    assert_eq!(apply(&store, change("installation.created.json", id, "d9", 9)).await, ApplyOutcome::Stale);
    assert_eq!(record(&store, id).await, r);
}

async fn the_same_github_second_falls_back_to_receipt(store: Arc<dyn InstallationStore>) {
    // The added and removed fixtures of Space carry the same `updated_at`: receipt order decides.
    let id = 1009;
    apply(&store, change("installation.created.json", id, "d1", 1)).await;
    apply(&store, change("installation_repositories.added.json", id, "d2", 20)).await;
    // Received before the addition, applied after it (a retry): the addition stands.
    assert_eq!(apply(&store, remove_space(id, "d3", 10)).await, ApplyOutcome::Stale);
    assert!(repository_ids(&record(&store, id).await).contains(&SPACE));
    // Received after it: the removal stands.
    assert_eq!(apply(&store, remove_space(id, "d4", 30)).await, ApplyOutcome::Updated);
    assert!(!repository_ids(&record(&store, id).await).contains(&SPACE));
}

async fn concurrent_changes_converge(store: Arc<dyn InstallationStore>) {
    let changes = |id: u64| {
        vec![
            change("installation.created.json", id, "c1", 1),
            change("installation_repositories.added.json", id, "c2", 2),
            change("installation_repositories.removed.json", id, "c3", 3),
            change("installation.suspend.json", id, "c4", 4),
            change("installation.unsuspend.json", id, "c5", 5),
            change("installation.new_permissions_accepted.json", id, "c6", 6),
        ]
    };
    // The expected end state: the same changes applied one by one, in order, to another installation.
    let (sequential, concurrent) = (1010, 1011);
    for c in changes(sequential) {
        apply(&store, c).await;
    }
    let mut expected = record(&store, sequential).await;
    // Every change twice, latest first, all at once (the first insert races too).
    let mut all = changes(concurrent);
    all.extend(changes(concurrent));
    all.reverse();
    let outcomes = futures::future::join_all(all.into_iter().map(|c| {
        let store = store.clone();
        async move { store.apply(c).await.unwrap() }
    }))
    .await;
    assert_eq!(outcomes.iter().filter(|o| **o == ApplyOutcome::Inserted).count(), 1, "{outcomes:?}");
    let got = record(&store, concurrent).await;
    expected.id = concurrent;
    assert_eq!(got, expected);
    assert_eq!(repository_ids(&got), [SPACE, OCTO_REPO]);
    assert!(got.is_active());
}

/// The installation as `GET /app/installations/{id}` shows it (the post-installation callback).
fn api_view(id: u64, updated_at: &str, received: u64) -> InstallationChange {
    let event = event_for("installation.new_permissions_accepted.json", id, |p| {
        p["installation"]["updated_at"] = updated_at.into();
    });
    let WebhookEvent::Installation(event) = event else { panic!("an installation event") };
    InstallationChange::from_installation(&event.installation, Timestamp(received))
}

async fn the_api_view_is_applied_once_and_keeps_repositories(store: Arc<dyn InstallationStore>) {
    let id = 1010;
    // The callback can come before the `created` webhook, or after it.
    assert_eq!(apply(&store, api_view(id, "2019-05-15T15:21:15Z", 1)).await, ApplyOutcome::Inserted);
    assert_eq!(apply(&store, api_view(id, "2019-05-15T15:21:15Z", 2)).await, ApplyOutcome::Stale, "a reload");
    apply(&store, change("installation.created.json", id, "d1", 3)).await;
    let listed = record(&store, id).await;
    assert_eq!(repository_ids(&listed), [HELLO_WORLD, OCTO_REPO]);
    // A later API view updates the installation's fields; it lists no repositories and removes none.
    assert_eq!(apply(&store, api_view(id, "2019-06-01T00:00:00Z", 4)).await, ApplyOutcome::Updated);
    let later = record(&store, id).await;
    assert_eq!(repository_ids(&later), [HELLO_WORLD, OCTO_REPO]);
    assert_eq!(later.updated_at, Some(millis("2019-06-01T00:00:00Z")));
    apply(&store, change("installation.deleted.json", id, "d2", 5)).await;
    assert_eq!(apply(&store, api_view(id, "2019-07-01T00:00:00Z", 6)).await, ApplyOutcome::AfterDeletion);
}
