//! Events as types, for handlers that take their own event: [`TypedEvent`] says which
//! [`WebhookEvent`] variant a payload type is and which action enum it has.

use std::fmt;
use std::str::FromStr;

use super::WebhookEvent;
use super::models::{
    CheckRunEvent, CheckSuiteEvent, InstallationEvent, InstallationRepositoriesEvent, IssueCommentEvent, IssuesEvent,
    PingEvent, PullRequestEvent, PullRequestReviewEvent, PushEvent, ReleaseEvent, WorkflowRunEvent,
};

/// An action of a typed event (`PullRequestAction::Opened` is `opened`).
pub trait EventAction: Copy + fmt::Debug + Send + Sync + 'static {
    /// The action as GitHub writes it.
    fn as_str(self) -> &'static str;
}

/// A payload type with its event name and its actions.
pub trait TypedEvent: Clone + Send + Sync + 'static {
    /// The `X-GitHub-Event` name.
    const EVENT: &'static str;
    /// Its actions ([`NoAction`] for events without one).
    type Action: EventAction;
    /// The payload, when `event` is this event.
    fn from_event(event: &WebhookEvent) -> Option<&Self>;
}

/// The action type of events that have none (`push`, `ping`); it has no values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoAction {}

impl EventAction for NoAction {
    fn as_str(self) -> &'static str {
        match self {}
    }
}

/// An action name that is not one of the enum's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown action `{0}`")]
pub struct UnknownAction(pub String);

/// Defines an action enum with `as_str`, `ALL`, `Display` and `FromStr`.
macro_rules! actions {
    ($(#[$doc:meta])* $name:ident { $($variant:ident => $text:literal),* $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum $name {
            $(#[doc = concat!("`", $text, "`.")] $variant,)*
        }

        impl $name {
            /// Every action, in GitHub's documentation order.
            pub const ALL: &'static [$name] = &[$($name::$variant),*];
        }

        impl EventAction for $name {
            fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)*
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownAction;
            fn from_str(text: &str) -> Result<Self, UnknownAction> {
                match text {
                    $($text => Ok($name::$variant),)*
                    other => Err(UnknownAction(other.to_owned())),
                }
            }
        }
    };
}

actions!(
    /// `pull_request` actions.
    PullRequestAction {
        Assigned => "assigned",
        AutoMergeDisabled => "auto_merge_disabled",
        AutoMergeEnabled => "auto_merge_enabled",
        Closed => "closed",
        ConvertedToDraft => "converted_to_draft",
        Demilestoned => "demilestoned",
        Dequeued => "dequeued",
        Edited => "edited",
        Enqueued => "enqueued",
        Labeled => "labeled",
        Locked => "locked",
        Milestoned => "milestoned",
        Opened => "opened",
        ReadyForReview => "ready_for_review",
        Reopened => "reopened",
        ReviewRequestRemoved => "review_request_removed",
        ReviewRequested => "review_requested",
        Synchronize => "synchronize",
        Unassigned => "unassigned",
        Unlabeled => "unlabeled",
        Unlocked => "unlocked",
    }
);

actions!(
    /// `issues` actions.
    IssuesAction {
        Assigned => "assigned",
        Closed => "closed",
        Deleted => "deleted",
        Demilestoned => "demilestoned",
        Edited => "edited",
        Labeled => "labeled",
        Locked => "locked",
        Milestoned => "milestoned",
        Opened => "opened",
        Pinned => "pinned",
        Reopened => "reopened",
        Transferred => "transferred",
        Typed => "typed",
        Unassigned => "unassigned",
        Unlabeled => "unlabeled",
        Unlocked => "unlocked",
        Unpinned => "unpinned",
        Untyped => "untyped",
    }
);

actions!(
    /// `issue_comment` actions.
    IssueCommentAction { Created => "created", Deleted => "deleted", Edited => "edited" }
);

actions!(
    /// `installation` actions.
    InstallationAction {
        Created => "created",
        Deleted => "deleted",
        NewPermissionsAccepted => "new_permissions_accepted",
        Suspend => "suspend",
        Unsuspend => "unsuspend",
    }
);

actions!(
    /// `installation_repositories` actions.
    InstallationRepositoriesAction { Added => "added", Removed => "removed" }
);

actions!(
    /// `check_suite` actions.
    CheckSuiteAction { Completed => "completed", Requested => "requested", Rerequested => "rerequested" }
);

actions!(
    /// `check_run` actions.
    CheckRunAction {
        Completed => "completed",
        Created => "created",
        RequestedAction => "requested_action",
        Rerequested => "rerequested",
    }
);

actions!(
    /// `release` actions.
    ReleaseAction {
        Created => "created",
        Deleted => "deleted",
        Edited => "edited",
        Prereleased => "prereleased",
        Published => "published",
        Released => "released",
        Unpublished => "unpublished",
    }
);

actions!(
    /// `workflow_run` actions.
    WorkflowRunAction { Completed => "completed", InProgress => "in_progress", Requested => "requested" }
);

actions!(
    /// `pull_request_review` actions.
    PullRequestReviewAction { Dismissed => "dismissed", Edited => "edited", Submitted => "submitted" }
);

/// Implements [`TypedEvent`] for a payload type.
macro_rules! typed_event {
    ($payload:ident, $variant:ident, $event:literal, $action:ty) => {
        impl TypedEvent for $payload {
            const EVENT: &'static str = $event;
            type Action = $action;
            fn from_event(event: &WebhookEvent) -> Option<&Self> {
                match event {
                    WebhookEvent::$variant(payload) => Some(payload),
                    _ => None,
                }
            }
        }
    };
}

typed_event!(PushEvent, Push, "push", NoAction);
typed_event!(PingEvent, Ping, "ping", NoAction);
typed_event!(PullRequestEvent, PullRequest, "pull_request", PullRequestAction);
typed_event!(IssuesEvent, Issues, "issues", IssuesAction);
typed_event!(IssueCommentEvent, IssueComment, "issue_comment", IssueCommentAction);
typed_event!(InstallationEvent, Installation, "installation", InstallationAction);
typed_event!(
    InstallationRepositoriesEvent,
    InstallationRepositories,
    "installation_repositories",
    InstallationRepositoriesAction
);
typed_event!(CheckSuiteEvent, CheckSuite, "check_suite", CheckSuiteAction);
typed_event!(CheckRunEvent, CheckRun, "check_run", CheckRunAction);
typed_event!(ReleaseEvent, Release, "release", ReleaseAction);
typed_event!(WorkflowRunEvent, WorkflowRun, "workflow_run", WorkflowRunAction);
typed_event!(PullRequestReviewEvent, PullRequestReview, "pull_request_review", PullRequestReviewAction);

#[cfg(test)]
mod tests {
    use super::super::catalog::route_problem;
    use super::*;

    /// Every action of `A` is one the catalogue knows for `E`.
    fn agrees<E: TypedEvent>(all: &[E::Action]) {
        assert!(!all.is_empty());
        for action in all {
            let route = format!("{}.{}", E::EVENT, action.as_str());
            assert_eq!(route_problem(&route), None, "{route}");
        }
    }

    #[test]
    fn the_action_enums_agree_with_the_catalogue() {
        agrees::<PullRequestEvent>(PullRequestAction::ALL);
        agrees::<IssuesEvent>(IssuesAction::ALL);
        agrees::<IssueCommentEvent>(IssueCommentAction::ALL);
        agrees::<InstallationEvent>(InstallationAction::ALL);
        agrees::<InstallationRepositoriesEvent>(InstallationRepositoriesAction::ALL);
        agrees::<CheckSuiteEvent>(CheckSuiteAction::ALL);
        agrees::<CheckRunEvent>(CheckRunAction::ALL);
        agrees::<ReleaseEvent>(ReleaseAction::ALL);
        agrees::<WorkflowRunEvent>(WorkflowRunAction::ALL);
        agrees::<PullRequestReviewEvent>(PullRequestReviewAction::ALL);
        assert_eq!(route_problem(PushEvent::EVENT), None);
        assert_eq!("ready_for_review".parse(), Ok(PullRequestAction::ReadyForReview));
        assert_eq!("nope".parse::<IssuesAction>(), Err(UnknownAction("nope".into())));
    }
}
