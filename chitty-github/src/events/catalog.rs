//! The webhook events GitHub sends and the actions of each, so that a route naming neither (a typo
//! such as `pull_request.openned`) is refused when the processor is built instead of never firing.
//!
//! From GitHub's "Webhook events and payloads" reference; events GitHub adds later can be allowed
//! with [`ProcessorBuilder::allow_route`](crate::processor::ProcessorBuilder::allow_route).

/// Which actions an event has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KnownActions {
    /// The event has no `action` (`push`, `ping`, …).
    None,
    /// The sender chooses the action (`repository_dispatch`).
    Any,
    /// These actions.
    Listed(&'static [&'static str]),
}

/// Every event, sorted by name, with its actions.
pub const EVENTS: &[(&str, KnownActions)] = &[
    ("branch_protection_configuration", KnownActions::Listed(&["disabled", "enabled"])),
    ("branch_protection_rule", KnownActions::Listed(&["created", "deleted", "edited"])),
    ("check_run", KnownActions::Listed(&["completed", "created", "requested_action", "rerequested"])),
    ("check_suite", KnownActions::Listed(&["completed", "requested", "rerequested"])),
    (
        "code_scanning_alert",
        KnownActions::Listed(&[
            "appeared_in_branch",
            "closed_by_user",
            "created",
            "fixed",
            "reopened",
            "reopened_by_user",
            "updated_assignment",
        ]),
    ),
    ("commit_comment", KnownActions::Listed(&["created"])),
    ("create", KnownActions::None),
    ("custom_property", KnownActions::Listed(&["created", "deleted", "promote_to_enterprise", "updated"])),
    ("custom_property_values", KnownActions::Listed(&["updated"])),
    ("delete", KnownActions::None),
    (
        "dependabot_alert",
        KnownActions::Listed(&[
            "assignees_changed",
            "auto_dismissed",
            "auto_reopened",
            "created",
            "dismissed",
            "fixed",
            "reintroduced",
            "reopened",
        ]),
    ),
    ("deploy_key", KnownActions::Listed(&["created", "deleted"])),
    ("deployment", KnownActions::Listed(&["created"])),
    ("deployment_protection_rule", KnownActions::Listed(&["requested"])),
    ("deployment_review", KnownActions::Listed(&["approved", "rejected", "requested"])),
    ("deployment_status", KnownActions::Listed(&["created"])),
    (
        "discussion",
        KnownActions::Listed(&[
            "answered",
            "category_changed",
            "closed",
            "created",
            "deleted",
            "edited",
            "labeled",
            "locked",
            "pinned",
            "reopened",
            "transferred",
            "unanswered",
            "unlabeled",
            "unlocked",
            "unpinned",
        ]),
    ),
    ("discussion_comment", KnownActions::Listed(&["created", "deleted", "edited"])),
    ("fork", KnownActions::None),
    ("github_app_authorization", KnownActions::Listed(&["revoked"])),
    ("gollum", KnownActions::None),
    ("installation", KnownActions::Listed(&["created", "deleted", "new_permissions_accepted", "suspend", "unsuspend"])),
    ("installation_repositories", KnownActions::Listed(&["added", "removed"])),
    ("installation_target", KnownActions::Listed(&["renamed"])),
    ("issue_comment", KnownActions::Listed(&["created", "deleted", "edited"])),
    (
        "issue_dependencies",
        KnownActions::Listed(&["blocked_by_added", "blocked_by_removed", "blocking_added", "blocking_removed"]),
    ),
    (
        "issues",
        KnownActions::Listed(&[
            "assigned",
            "closed",
            "deleted",
            "demilestoned",
            "edited",
            "labeled",
            "locked",
            "milestoned",
            "opened",
            "pinned",
            "reopened",
            "transferred",
            "typed",
            "unassigned",
            "unlabeled",
            "unlocked",
            "unpinned",
            "untyped",
        ]),
    ),
    ("label", KnownActions::Listed(&["created", "deleted", "edited"])),
    (
        "marketplace_purchase",
        KnownActions::Listed(&["cancelled", "changed", "pending_change", "pending_change_cancelled", "purchased"]),
    ),
    ("member", KnownActions::Listed(&["added", "edited", "removed"])),
    ("membership", KnownActions::Listed(&["added", "removed"])),
    ("merge_group", KnownActions::Listed(&["checks_requested", "destroyed"])),
    ("meta", KnownActions::Listed(&["deleted"])),
    ("milestone", KnownActions::Listed(&["closed", "created", "deleted", "edited", "opened"])),
    ("org_block", KnownActions::Listed(&["blocked", "unblocked"])),
    ("organization", KnownActions::Listed(&["deleted", "member_added", "member_invited", "member_removed", "renamed"])),
    ("package", KnownActions::Listed(&["published", "updated"])),
    ("page_build", KnownActions::None),
    ("personal_access_token_request", KnownActions::Listed(&["approved", "cancelled", "created", "denied"])),
    ("ping", KnownActions::None),
    ("project", KnownActions::Listed(&["closed", "created", "deleted", "edited", "reopened"])),
    ("project_card", KnownActions::Listed(&["converted", "created", "deleted", "edited", "moved"])),
    ("project_column", KnownActions::Listed(&["created", "deleted", "edited", "moved"])),
    ("projects_v2", KnownActions::Listed(&["closed", "created", "deleted", "edited", "reopened"])),
    (
        "projects_v2_item",
        KnownActions::Listed(&["archived", "converted", "created", "deleted", "edited", "reordered", "restored"]),
    ),
    ("projects_v2_status_update", KnownActions::Listed(&["created", "deleted", "edited"])),
    ("public", KnownActions::None),
    (
        "pull_request",
        KnownActions::Listed(&[
            "assigned",
            "auto_merge_disabled",
            "auto_merge_enabled",
            "closed",
            "converted_to_draft",
            "demilestoned",
            "dequeued",
            "edited",
            "enqueued",
            "labeled",
            "locked",
            "milestoned",
            "opened",
            "ready_for_review",
            "reopened",
            "review_request_removed",
            "review_requested",
            "synchronize",
            "unassigned",
            "unlabeled",
            "unlocked",
        ]),
    ),
    ("pull_request_review", KnownActions::Listed(&["dismissed", "edited", "submitted"])),
    ("pull_request_review_comment", KnownActions::Listed(&["created", "deleted", "edited"])),
    ("pull_request_review_thread", KnownActions::Listed(&["resolved", "unresolved"])),
    ("push", KnownActions::None),
    ("registry_package", KnownActions::Listed(&["published", "updated"])),
    (
        "release",
        KnownActions::Listed(&["created", "deleted", "edited", "prereleased", "published", "released", "unpublished"]),
    ),
    (
        "repository",
        KnownActions::Listed(&[
            "archived",
            "created",
            "deleted",
            "edited",
            "privatized",
            "publicized",
            "renamed",
            "transferred",
            "unarchived",
        ]),
    ),
    ("repository_advisory", KnownActions::Listed(&["published", "reported"])),
    ("repository_dispatch", KnownActions::Any),
    ("repository_import", KnownActions::None),
    ("repository_ruleset", KnownActions::Listed(&["created", "deleted", "edited"])),
    ("repository_vulnerability_alert", KnownActions::Listed(&["create", "dismiss", "reopen", "resolve"])),
    (
        "secret_scanning_alert",
        KnownActions::Listed(&[
            "assigned",
            "created",
            "publicly_leaked",
            "reopened",
            "resolved",
            "unassigned",
            "validated",
        ]),
    ),
    ("secret_scanning_alert_location", KnownActions::Listed(&["created"])),
    ("secret_scanning_scan", KnownActions::Listed(&["completed"])),
    ("security_advisory", KnownActions::Listed(&["published", "updated", "withdrawn"])),
    ("security_and_analysis", KnownActions::None),
    (
        "sponsorship",
        KnownActions::Listed(&[
            "cancelled",
            "created",
            "edited",
            "pending_cancellation",
            "pending_tier_change",
            "tier_changed",
        ]),
    ),
    ("star", KnownActions::Listed(&["created", "deleted"])),
    ("status", KnownActions::None),
    (
        "sub_issues",
        KnownActions::Listed(&["parent_issue_added", "parent_issue_removed", "sub_issue_added", "sub_issue_removed"]),
    ),
    ("team", KnownActions::Listed(&["added_to_repository", "created", "deleted", "edited", "removed_from_repository"])),
    ("team_add", KnownActions::None),
    ("watch", KnownActions::Listed(&["started"])),
    ("workflow_dispatch", KnownActions::None),
    ("workflow_job", KnownActions::Listed(&["completed", "in_progress", "queued", "waiting"])),
    ("workflow_run", KnownActions::Listed(&["completed", "in_progress", "requested"])),
];

/// The actions of `event`, if GitHub sends such an event.
pub fn known_actions(event: &str) -> Option<KnownActions> {
    EVENTS.binary_search_by(|(name, _)| (*name).cmp(event)).ok().map(|index| EVENTS[index].1)
}

/// Why a route names nothing GitHub sends, or `None` when it names an event (`push`), an event and
/// one of its actions (`pull_request.opened`), or every event (`*`).
pub fn route_problem(route: &str) -> Option<String> {
    if route == crate::processor::ANY_EVENT {
        return None;
    }
    let (event, action) = match route.split_once('.') {
        Some((event, action)) => (event, Some(action)),
        None => (route, None),
    };
    let Some(actions) = known_actions(event) else {
        return Some(format!("GitHub sends no `{event}` event"));
    };
    match (actions, action) {
        (_, None) | (KnownActions::Any, Some(_)) => None,
        (KnownActions::None, Some(_)) => Some(format!("`{event}` events have no action")),
        (KnownActions::Listed(listed), Some(action)) if listed.contains(&action) => None,
        (KnownActions::Listed(listed), Some(action)) => {
            Some(format!("`{event}` has no action `{action}` (it has {})", listed.join(", ")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_sorted_so_that_lookups_find_every_event() {
        assert!(EVENTS.windows(2).all(|pair| pair[0].0 < pair[1].0), "keep EVENTS sorted by name");
        for (event, _) in EVENTS {
            assert!(known_actions(event).is_some(), "{event}");
        }
    }

    #[test]
    fn routes_are_checked_against_events_and_actions() {
        for good in ["*", "push", "pull_request", "pull_request.opened", "repository_dispatch.deploy", "issues.typed"] {
            assert_eq!(route_problem(good), None, "{good}");
        }
        assert!(route_problem("pull_request.openned").unwrap().contains("no action `openned`"));
        assert!(route_problem("pullrequest").unwrap().contains("no `pullrequest` event"));
        assert!(route_problem("push.created").unwrap().contains("no action"));
        assert!(route_problem("").is_some());
        assert!(route_problem("pull_request.").is_some());
    }
}
