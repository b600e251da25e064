//! Installations kept in sync: the conformance checks on the memory store, the handler through the
//! processor, and GitHub's two time formats.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use chitty_core::Timestamp;
use chitty_github::delivery::Delivery;
use chitty_github::events::{GitHubTime, WebhookEvent};
use chitty_github::installations::{InstallationStore, InstallationSync, MemoryInstallationStore};
use chitty_github::processor::{ProcessOutcome, Processor};
use common::fixture;
use common::installations::{CHECKS, INSTALLED_AT};

async fn run_check(name: &str) {
    let (_, check) = CHECKS.iter().find(|(n, _)| *n == name).unwrap_or_else(|| panic!("no check {name}"));
    check(Arc::new(MemoryInstallationStore::new())).await;
}

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        $(#[tokio::test]
        async fn $name() {
            run_check(stringify!($name)).await;
        })*

        #[test]
        fn every_check_runs_on_the_memory_store() {
            let listed = [$(stringify!($name)),*];
            for (name, _) in CHECKS {
                assert!(listed.contains(name), "{name} is not in the conformance! list");
            }
        }
    };
}

conformance!(
    created_records_every_field,
    a_redelivery_is_applied_once,
    a_late_created_after_deleted_is_ignored,
    deletion_wins_over_a_later_stamped_update,
    repositories_added_and_removed_twice,
    suspend_and_unsuspend_in_and_out_of_order,
    new_permissions_survive_a_late_created,
    the_same_github_second_falls_back_to_receipt,
    concurrent_changes_converge,
    the_api_view_is_applied_once_and_keeps_repositories,
);

fn delivery(event: &str, id: &str, fixture_name: &str, received: u64) -> Delivery {
    let payload = fixture(fixture_name);
    let action = WebhookEvent::parse(event, &payload).unwrap().action().map(str::to_owned);
    Delivery {
        id: id.into(),
        event: event.into(),
        action,
        hook_id: Some("109948940".into()),
        target_type: Some("integration".into()),
        target_id: Some("31415".into()),
        payload,
        received_at: Timestamp(received),
    }
}

#[tokio::test]
async fn the_sync_handler_keeps_the_store_in_sync_through_the_processor() {
    let store = Arc::new(MemoryInstallationStore::new());
    let processor = InstallationSync::new(store.clone()).register(Processor::builder()).build();
    let steps = [
        ("installation", "g1", "installation.created.json"),
        ("installation_repositories", "g2", "installation_repositories.added.json"),
        ("installation_repositories", "g3", "installation_repositories.removed.json"),
        ("installation", "g4", "installation.suspend.json"),
        ("installation", "g1", "installation.created.json"),
    ];
    for (received, (event, id, name)) in (1..).zip(steps) {
        let outcome = processor.process(delivery(event, id, name, received)).await;
        assert!(matches!(outcome, ProcessOutcome::Handled { handlers: 1, attempts: 1 }), "{name}: {outcome:?}");
    }
    let installation = store.get(2311213).await.unwrap().unwrap();
    let repositories: Vec<_> = installation.repositories.iter().map(|r| r.full_name.as_str()).collect();
    assert_eq!(repositories, ["octo-org/Space", "octo-org/octo-repo"]);
    assert_eq!(installation.suspension.as_ref().and_then(|s| s.by.as_deref()), Some("octo-admin"));
    assert_eq!(installation.created_at, Some(INSTALLED_AT));

    let push = delivery("push", "g5", "push.json", 9);
    assert!(matches!(processor.process(push).await, ProcessOutcome::Unhandled));
    let deleted = delivery("installation", "g6", "installation.deleted.json", 10);
    assert!(matches!(processor.process(deleted).await, ProcessOutcome::Handled { .. }));
    assert_eq!(store.get(2311213).await.unwrap().unwrap().deleted_at, Some(Timestamp(10)));
    assert!(store.list().await.unwrap().is_empty());
}

#[test]
fn the_sync_handler_is_registered_for_both_installation_events() {
    assert_eq!(InstallationSync::ROUTES, ["installation", "installation_repositories"]);
    let store: Arc<dyn InstallationStore> = Arc::new(MemoryInstallationStore::new());
    let debug = format!("{:?}", chitty_github::installations::sync_handler(store));
    assert!(debug.contains("MemoryInstallationStore"), "{debug}");
}

#[test]
fn installation_times_read_from_rfc3339_text_and_unix_seconds() {
    let mut payload: serde_json::Value = serde_json::from_slice(&fixture("installation.created.json")).unwrap();
    payload["installation"]["created_at"] = 1557933675.into();
    payload["installation"]["updated_at"] = "2019-05-15T17:21:15.250+02:00".into();
    let WebhookEvent::Installation(event) =
        WebhookEvent::parse("installation", &serde_json::to_vec(&payload).unwrap()).unwrap()
    else {
        panic!("an installation event")
    };
    assert_eq!(event.installation.created_at, Some(GitHubTime(INSTALLED_AT)));
    assert_eq!(event.installation.updated_at, Some(GitHubTime(Timestamp(INSTALLED_AT.0 + 250))));
    assert_eq!(event.installation.suspended_at, None);
    let text = serde_json::to_value(event.installation.updated_at).unwrap();
    assert_eq!(text, "2019-05-15T15:21:15.25Z");

    payload["installation"]["updated_at"] = "yesterday".into();
    let error = WebhookEvent::parse("installation", &serde_json::to_vec(&payload).unwrap()).unwrap_err();
    assert!(error.to_string().contains("RFC 3339"), "{error}");
}
