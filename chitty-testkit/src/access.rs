//! The [`AccessStore`] conformance suite: every implementation runs these functions.
//!
//! Tenants and keys get random ids, so the suite can run against a shared database without cleaning up.

use chitty_core::access::{AccessStore, BudgetPeriod, KeyDigest, KeyRecord, TenantRecord, TenantUpdate};
use chitty_core::{Error, NanoUsd, Timestamp};

/// An id no other run uses.
fn unique(prefix: &str) -> String {
    format!("{prefix}-{:016x}", rand::random::<u64>())
}

/// A key record for `tenant`, with a random secret's digest.
pub fn key_record(tenant: &str, parent: Option<&str>) -> KeyRecord {
    KeyRecord {
        id: unique("key"),
        tenant: tenant.to_owned(),
        parent: parent.map(str::to_owned),
        name: "suite".to_owned(),
        digest: KeyDigest::of(&unique("sk")),
        budget: None,
        models: None,
        expires_at: None,
        rpm: None,
        tpm: None,
        created_at: Timestamp(1_000),
        revoked_at: None,
    }
}

/// Runs every check.
pub async fn run_all(store: &dyn AccessStore) {
    tenants_round_trip_and_conflict(store).await;
    keys_round_trip_and_conflict(store).await;
    revocation_reaches_delegated_keys(store).await;
}

/// A tenant reads back as written, a second with its id conflicts, an update changes only what it names.
pub async fn tenants_round_trip_and_conflict(store: &dyn AccessStore) {
    let id = unique("tenant");
    let tenant = TenantRecord {
        budget: Some(NanoUsd(1_500_000_001)),
        budget_period: BudgetPeriod::Monthly,
        rpm: Some(600),
        tpm: Some(100_000),
        models: Some(vec!["gpt-4o".into(), "claude-*".into()]),
        burst: Some(7),
        cache_group: Some("group".into()),
        ..TenantRecord::new(id.clone())
    };
    assert_eq!(store.create_tenant(tenant.clone()).await.expect("create"), tenant);
    assert_eq!(store.tenant(&id).await.expect("read"), Some(tenant.clone()));
    match store.create_tenant(TenantRecord::new(id.clone())).await {
        Err(Error::Conflict { what: "tenant", id: conflicting }) => assert_eq!(conflicting, id),
        other => panic!("a duplicate tenant id must conflict, got {other:?}"),
    }
    let update = TenantUpdate { rpm: Some(None), budget_period: Some(BudgetPeriod::Daily), ..TenantUpdate::default() };
    let updated = store.update_tenant(&id, &update).await.expect("update");
    let expected = TenantRecord { rpm: None, budget_period: BudgetPeriod::Daily, ..tenant };
    assert_eq!(updated, expected);
    assert_eq!(store.tenant(&id).await.expect("read"), Some(expected));
    assert!(matches!(
        store.update_tenant(&unique("missing"), &update).await,
        Err(Error::NotFound { what: "tenant", .. })
    ));
    assert_eq!(store.tenant(&unique("missing")).await.expect("read"), None);
}

/// A key reads back as written (and appears in the snapshot); its id or digest used twice conflicts; a key
/// of a missing tenant or parent is refused.
pub async fn keys_round_trip_and_conflict(store: &dyn AccessStore) {
    let tenant = unique("tenant");
    store.create_tenant(TenantRecord::new(tenant.clone())).await.expect("tenant");
    let key = KeyRecord {
        budget: Some(NanoUsd(42)),
        models: Some(vec!["gpt-4o".into()]),
        expires_at: Some(Timestamp(9_999_999_999_999)),
        rpm: Some(60),
        tpm: Some(6_000),
        ..key_record(&tenant, None)
    };
    assert_eq!(store.create_key(key.clone()).await.expect("create"), key);
    assert_eq!(store.key(&key.id).await.expect("read"), Some(key.clone()));
    let snapshot = store.snapshot().await.expect("snapshot");
    assert!(snapshot.keys.contains(&key), "the snapshot holds the key");
    assert!(snapshot.tenants.iter().any(|t| t.id == tenant), "the snapshot holds the tenant");

    let same_id = KeyRecord { id: key.id.clone(), ..key_record(&tenant, None) };
    assert!(matches!(store.create_key(same_id).await, Err(Error::Conflict { what: "key", .. })));
    let same_digest = KeyRecord { digest: key.digest, ..key_record(&tenant, None) };
    assert!(matches!(store.create_key(same_digest).await, Err(Error::Conflict { what: "key", .. })));
    let orphan = key_record(&unique("missing"), None);
    assert!(matches!(store.create_key(orphan).await, Err(Error::NotFound { what: "tenant", .. })));
    let no_parent = key_record(&tenant, Some("key-that-does-not-exist"));
    assert!(matches!(store.create_key(no_parent).await, Err(Error::NotFound { what: "key", .. })));

    let other_tenant = unique("tenant");
    store.create_tenant(TenantRecord::new(other_tenant.clone())).await.expect("tenant");
    let across = key_record(&other_tenant, Some(&key.id));
    assert!(store.create_key(across).await.is_err(), "a parent must belong to the same tenant");
}

/// Revoking a key revokes every key delegated from it, transitively, and nothing else; revoking again revokes
/// nothing new; a revoked key cannot parent a new one.
pub async fn revocation_reaches_delegated_keys(store: &dyn AccessStore) {
    let tenant = unique("tenant");
    store.create_tenant(TenantRecord::new(tenant.clone())).await.expect("tenant");
    let root = store.create_key(key_record(&tenant, None)).await.expect("root");
    let child = store.create_key(key_record(&tenant, Some(&root.id))).await.expect("child");
    let grandchild = store.create_key(key_record(&tenant, Some(&child.id))).await.expect("grandchild");
    let sibling = store.create_key(key_record(&tenant, None)).await.expect("sibling");

    let now = Timestamp(2_000);
    let mut revoked = store.revoke_key(&child.id, now).await.expect("revoke");
    revoked.sort();
    let mut expected = vec![child.id.clone(), grandchild.id.clone()];
    expected.sort();
    assert_eq!(revoked, expected);
    for (id, is_revoked) in [(&root.id, false), (&child.id, true), (&grandchild.id, true), (&sibling.id, false)] {
        let key = store.key(id).await.expect("read").expect("still listed");
        assert_eq!(key.revoked_at.is_some(), is_revoked, "{id}");
        if is_revoked {
            assert_eq!(key.revoked_at, Some(now));
        }
    }
    assert_eq!(store.revoke_key(&child.id, Timestamp(3_000)).await.expect("again"), Vec::<String>::new());
    assert_eq!(store.key(&child.id).await.expect("read").and_then(|k| k.revoked_at), Some(now), "first time kept");
    assert!(store.create_key(key_record(&tenant, Some(&child.id))).await.is_err(), "a revoked parent");
    assert!(matches!(store.revoke_key(&unique("missing"), now).await, Err(Error::NotFound { what: "key", .. })));
    let whole = store.revoke_key(&root.id, now).await.expect("revoke root");
    assert_eq!(whole, vec![root.id.clone()], "only the root was still live");
}
