//! The payload types. Each keeps the fields handlers commonly need as typed fields and every other
//! field in `extra`, so nothing GitHub sends is lost and new fields never break parsing.

use std::borrow::Cow;
use std::fmt;

use chitty_core::Timestamp;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Fields of a payload object that have no typed field.
pub type Extra = Map<String, Value>;

/// An object key, borrowed from the input when it has no escapes.
struct Key<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object key")
            }
            fn visit_borrowed_str<E: de::Error>(self, key: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(key)))
            }
            fn visit_str<E: de::Error>(self, key: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(key.to_owned())))
            }
            fn visit_string<E: de::Error>(self, key: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(key)))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

/// A field that must be present.
fn required<T, E: de::Error>(value: Option<T>, key: &'static str) -> Result<T, E> {
    value.ok_or_else(|| E::missing_field(key))
}

/// A field that takes its default when absent.
fn optional<T: Default, E>(value: Option<T>, _key: &'static str) -> Result<T, E> {
    Ok(value.unwrap_or_default())
}

/// Implements `Deserialize` in one pass over the object: known keys into typed fields, every other
/// key into `extra`. (`#[serde(flatten)]` buffers each nested object again at every level, which
/// made parsing GitHub's deeply nested payloads several times slower.)
macro_rules! deserialize_with_extra {
    ($name:ident { $($presence:ident $field:ident: $key:literal),* $(,)? }) => {
        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                struct ObjectVisitor;
                impl<'de> Visitor<'de> for ObjectVisitor {
                    type Value = $name;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str(concat!("a GitHub ", stringify!($name), " object"))
                    }
                    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<$name, A::Error> {
                        $(let mut $field = None;)*
                        let mut extra = Extra::new();
                        while let Some(key) = map.next_key::<Key<'de>>()? {
                            match key.0.as_ref() {
                                $($key => {
                                    if $field.is_some() {
                                        return Err(<A::Error as de::Error>::duplicate_field($key));
                                    }
                                    $field = Some(map.next_value()?);
                                })*
                                _ => {
                                    let value: Value = map.next_value()?;
                                    extra.insert(key.0.into_owned(), value);
                                }
                            }
                        }
                        Ok($name { $($field: $presence::<_, A::Error>($field, $key)?,)* extra })
                    }
                }
                deserializer.deserialize_map(ObjectVisitor)
            }
        }
    };
}

/// A user, organization or bot account.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Account {
    /// Login (`octocat`, `my-app[bot]`).
    pub login: String,
    /// Numeric id.
    pub id: u64,
    /// `User`, `Organization` or `Bot`.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// Other fields.
    #[serde(flatten)]
    pub extra: Extra,
}

/// A repository, as embedded in most payloads.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Repository {
    /// Numeric id.
    pub id: u64,
    /// Name (`hello-world`).
    pub name: String,
    /// `owner/name`.
    pub full_name: String,
    /// Whether it is private.
    pub private: bool,
    /// The owning account.
    pub owner: Account,
    /// Default branch (`main`).
    pub default_branch: Option<String>,
    /// Web address.
    pub html_url: Option<String>,
    /// Other fields.
    #[serde(flatten)]
    pub extra: Extra,
}

/// The short repository form in installation payloads.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RepositorySummary {
    /// Numeric id.
    pub id: u64,
    /// Name.
    pub name: String,
    /// `owner/name`.
    pub full_name: String,
    /// Whether it is private.
    pub private: bool,
    /// Other fields.
    #[serde(flatten)]
    pub extra: Extra,
}

/// The installation reference carried by events sent to an App.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InstallationRef {
    /// Installation id, used to mint an installation token.
    pub id: u64,
    /// Other fields.
    #[serde(flatten)]
    pub extra: Extra,
}

/// A full installation, in `installation` and `installation_repositories` payloads.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Installation {
    /// Installation id.
    pub id: u64,
    /// The account the App is installed on.
    pub account: Account,
    /// The App's id.
    pub app_id: Option<u64>,
    /// `all` or `selected`.
    pub repository_selection: Option<String>,
    /// Granted permissions (`issues: write`, …).
    pub permissions: Map<String, Value>,
    /// Subscribed events.
    pub events: Vec<String>,
    /// When the App was installed.
    pub created_at: Option<GitHubTime>,
    /// When the installation last changed (permissions, suspension, …).
    pub updated_at: Option<GitHubTime>,
    /// When the installation was suspended, while it is.
    pub suspended_at: Option<GitHubTime>,
    /// Who suspended the installation, while it is suspended.
    pub suspended_by: Option<Account>,
    /// Other fields.
    #[serde(flatten)]
    pub extra: Extra,
}

/// A time in a payload. GitHub writes some as RFC 3339 text (`2019-05-15T15:21:15.000Z`) and, in older
/// installation payloads, some as Unix seconds (`1557933675`); both read into one [`Timestamp`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GitHubTime(pub Timestamp);

impl Serialize for GitHubTime {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let nanos = i128::from(self.0.0).saturating_mul(1_000_000);
        let text = time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
            .ok()
            .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
            .ok_or_else(|| serde::ser::Error::custom("time out of range"))?;
        serializer.serialize_str(&text)
    }
}

impl<'de> Deserialize<'de> for GitHubTime {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TimeVisitor;
        impl Visitor<'_> for TimeVisitor {
            type Value = GitHubTime;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an RFC 3339 time or Unix seconds")
            }
            fn visit_u64<E: de::Error>(self, secs: u64) -> Result<GitHubTime, E> {
                Ok(GitHubTime(Timestamp(secs.saturating_mul(1000))))
            }
            fn visit_i64<E: de::Error>(self, secs: i64) -> Result<GitHubTime, E> {
                self.visit_u64(u64::try_from(secs).map_err(|_| E::custom("a time before 1970"))?)
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<GitHubTime, E> {
                let parsed = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
                    .map_err(|e| E::custom(format_args!("not an RFC 3339 time: {e}")))?;
                let millis = u64::try_from(parsed.unix_timestamp_nanos() / 1_000_000)
                    .map_err(|_| E::custom("a time before 1970"))?;
                Ok(GitHubTime(Timestamp(millis)))
            }
        }
        deserializer.deserialize_any(TimeVisitor)
    }
}

/// A label.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Label {
    /// Numeric id.
    pub id: u64,
    /// Name.
    pub name: String,
    /// Hex colour without `#`.
    pub color: Option<String>,
    /// Other fields.
    #[serde(flatten)]
    pub extra: Extra,
}

/// An issue (also the issue side of a pull request in `issue_comment`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Issue {
    /// Numeric id.
    pub id: u64,
    /// Number within the repository.
    pub number: u64,
    /// Title.
    pub title: String,
    /// Body, when there is one.
    pub body: Option<String>,
    /// `open` or `closed`.
    pub state: String,
    /// Author.
    pub user: Account,
    /// Labels.
    pub labels: Vec<Label>,
    /// Present when the issue is a pull request.
    pub pull_request: Option<Value>,
    /// Web address.
    pub html_url: Option<String>,
    /// Other fields.
    #[serde(flatten)]
    pub extra: Extra,
}

/// One side of a pull request (head or base).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PullRequestRef {
    /// `owner:branch`.
    pub label: Option<String>,
    /// Branch name.
    #[serde(rename = "ref")]
    pub branch: String,
    /// Commit SHA.
    pub sha: String,
    /// The repository (absent when a fork was deleted).
    pub repo: Option<Repository>,
    /// Other fields.
    #[serde(flatten)]
    pub extra: Extra,
}

/// A pull request.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PullRequest {
    /// Numeric id.
    pub id: u64,
    /// Number within the repository.
    pub number: u64,
    /// Title.
    pub title: String,
    /// Description, when there is one.
    pub body: Option<String>,
    /// `open` or `closed`.
    pub state: String,
    /// Whether it is a draft.
    pub draft: Option<bool>,
    /// Whether it was merged.
    pub merged: Option<bool>,
    /// Author.
    pub user: Account,
    /// The branch to merge.
    pub head: PullRequestRef,
    /// The branch merged into.
    pub base: PullRequestRef,
    /// Labels.
    pub labels: Vec<Label>,
    /// Web address.
    pub html_url: Option<String>,
    /// Other fields.
    #[serde(flatten)]
    pub extra: Extra,
}

/// A comment on an issue or pull request.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Comment {
    /// Numeric id.
    pub id: u64,
    /// Text.
    pub body: String,
    /// Author.
    pub user: Account,
    /// Web address.
    pub html_url: Option<String>,
    /// Other fields.
    #[serde(flatten)]
    pub extra: Extra,
}

/// A commit author or committer in a push.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CommitAuthor {
    /// Name.
    pub name: String,
    /// Email address, when shared.
    pub email: Option<String>,
    /// GitHub login, when the email maps to one.
    pub username: Option<String>,
    /// Other fields.
    #[serde(flatten)]
    pub extra: Extra,
}

/// A commit in a push.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PushCommit {
    /// SHA.
    pub id: String,
    /// Message.
    pub message: String,
    /// ISO 8601 time.
    pub timestamp: Option<String>,
    /// Author.
    pub author: CommitAuthor,
    /// Paths added.
    pub added: Vec<String>,
    /// Paths removed.
    pub removed: Vec<String>,
    /// Paths modified.
    pub modified: Vec<String>,
    /// Other fields.
    #[serde(flatten)]
    pub extra: Extra,
}

/// A check suite.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CheckSuite {
    /// Numeric id.
    pub id: u64,
    /// Branch, absent for suites on tags or forks.
    pub head_branch: Option<String>,
    /// Commit SHA.
    pub head_sha: String,
    /// `requested`, `in_progress`, `completed`, ….
    pub status: Option<String>,
    /// `success`, `failure`, …, once completed.
    pub conclusion: Option<String>,
    /// Pull requests the suite's head belongs to.
    pub pull_requests: Vec<Value>,
    /// Other fields.
    #[serde(flatten)]
    pub extra: Extra,
}

/// A webhook's configuration, in `ping`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Hook {
    /// Hook id.
    pub id: u64,
    /// `Repository`, `Organization` or `App`.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// Whether it is active.
    pub active: bool,
    /// Subscribed events.
    pub events: Vec<String>,
    /// Other fields.
    #[serde(flatten)]
    pub extra: Extra,
}

/// A release.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Release {
    /// Numeric id.
    pub id: u64,
    /// The tag (`v1.0.0`).
    pub tag_name: String,
    /// The branch or commit the tag is made from.
    pub target_commitish: Option<String>,
    /// Title.
    pub name: Option<String>,
    /// Notes (Markdown).
    pub body: Option<String>,
    /// Whether it is a draft.
    pub draft: bool,
    /// Whether it is a pre-release.
    pub prerelease: bool,
    /// Who created it.
    pub author: Option<Account>,
    /// Web address.
    pub html_url: Option<String>,
    /// Other fields.
    #[serde(flatten)]
    pub extra: Extra,
}

/// A GitHub Actions workflow run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WorkflowRun {
    /// Numeric id.
    pub id: u64,
    /// The workflow's name.
    pub name: Option<String>,
    /// Branch, absent for runs on tags.
    pub head_branch: Option<String>,
    /// Commit SHA.
    pub head_sha: String,
    /// Run number within the workflow.
    pub run_number: u64,
    /// What triggered it (`push`, `pull_request`, …).
    pub event: String,
    /// `requested`, `in_progress`, `completed`, ….
    pub status: Option<String>,
    /// `success`, `failure`, …, once completed.
    pub conclusion: Option<String>,
    /// The workflow's id.
    pub workflow_id: u64,
    /// Web address.
    pub html_url: Option<String>,
    /// Pull requests the run's head belongs to.
    pub pull_requests: Vec<Value>,
    /// Other fields.
    #[serde(flatten)]
    pub extra: Extra,
}

/// A check run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CheckRun {
    /// Numeric id.
    pub id: u64,
    /// Name.
    pub name: String,
    /// Commit SHA.
    pub head_sha: String,
    /// `queued`, `in_progress`, `completed`, ….
    pub status: Option<String>,
    /// `success`, `failure`, …, once completed.
    pub conclusion: Option<String>,
    /// The integrator's own reference.
    pub external_id: Option<String>,
    /// The integrator's page for it.
    pub details_url: Option<String>,
    /// Web address.
    pub html_url: Option<String>,
    /// The suite it belongs to.
    pub check_suite: Option<Value>,
    /// The App that made it.
    pub app: Option<Value>,
    /// Pull requests its head belongs to.
    pub pull_requests: Vec<Value>,
    /// Other fields.
    #[serde(flatten)]
    pub extra: Extra,
}

/// A pull request review.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Review {
    /// Numeric id.
    pub id: u64,
    /// Reviewer (absent for a deleted account).
    pub user: Option<Account>,
    /// Text, when there is one.
    pub body: Option<String>,
    /// `approved`, `changes_requested`, `commented`, `dismissed` (lower case in webhooks).
    pub state: String,
    /// The commit reviewed.
    pub commit_id: Option<String>,
    /// When it was submitted.
    pub submitted_at: Option<GitHubTime>,
    /// Web address.
    pub html_url: Option<String>,
    /// Other fields.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `push`: commits pushed to a branch or tag.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PushEvent {
    /// Full ref (`refs/heads/main`).
    #[serde(rename = "ref")]
    pub git_ref: String,
    /// SHA before the push.
    pub before: String,
    /// SHA after the push.
    pub after: String,
    /// Whether the ref was created.
    pub created: bool,
    /// Whether the ref was deleted.
    pub deleted: bool,
    /// Whether it was a force push.
    pub forced: bool,
    /// Pushed commits (at most 2048).
    pub commits: Vec<PushCommit>,
    /// The most recent commit.
    pub head_commit: Option<PushCommit>,
    /// Repository.
    pub repository: Repository,
    /// Who pushed.
    pub sender: Account,
    /// The App installation, for App deliveries.
    pub installation: Option<InstallationRef>,
    /// Other fields.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `pull_request`: a pull request was opened, edited, synchronized, closed, ….
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PullRequestEvent {
    /// `opened`, `synchronize`, `closed`, ….
    pub action: String,
    /// Pull request number.
    pub number: u64,
    /// The pull request.
    pub pull_request: PullRequest,
    /// Repository.
    pub repository: Repository,
    /// Who acted.
    pub sender: Account,
    /// The App installation, for App deliveries.
    pub installation: Option<InstallationRef>,
    /// Other fields (`changes`, `label`, `requested_reviewer`, …).
    #[serde(flatten)]
    pub extra: Extra,
}

/// `issues`: an issue was opened, edited, labeled, closed, ….
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IssuesEvent {
    /// `opened`, `labeled`, `closed`, ….
    pub action: String,
    /// The issue.
    pub issue: Issue,
    /// Repository.
    pub repository: Repository,
    /// Who acted.
    pub sender: Account,
    /// The App installation, for App deliveries.
    pub installation: Option<InstallationRef>,
    /// Other fields (`label`, `changes`, `assignee`, …).
    #[serde(flatten)]
    pub extra: Extra,
}

/// `issue_comment`: a comment on an issue or pull request was created, edited or deleted.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IssueCommentEvent {
    /// `created`, `edited` or `deleted`.
    pub action: String,
    /// The issue (or pull request) commented on.
    pub issue: Issue,
    /// The comment.
    pub comment: Comment,
    /// Repository.
    pub repository: Repository,
    /// Who acted.
    pub sender: Account,
    /// The App installation, for App deliveries.
    pub installation: Option<InstallationRef>,
    /// Other fields.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `installation`: the App was installed, uninstalled, suspended, ….
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InstallationEvent {
    /// `created`, `deleted`, `suspend`, `unsuspend`, `new_permissions_accepted`.
    pub action: String,
    /// The installation.
    pub installation: Installation,
    /// Repositories the installation can access, when listed.
    pub repositories: Option<Vec<RepositorySummary>>,
    /// Who acted.
    pub sender: Account,
    /// Other fields.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `installation_repositories`: repositories were added to or removed from an installation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InstallationRepositoriesEvent {
    /// `added` or `removed`.
    pub action: String,
    /// The installation.
    pub installation: Installation,
    /// `all` or `selected`.
    pub repository_selection: String,
    /// Repositories added.
    pub repositories_added: Vec<RepositorySummary>,
    /// Repositories removed.
    pub repositories_removed: Vec<RepositorySummary>,
    /// Who acted.
    pub sender: Account,
    /// Other fields.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `check_suite`: a check suite was requested, rerequested or completed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CheckSuiteEvent {
    /// `requested`, `rerequested` or `completed`.
    pub action: String,
    /// The check suite.
    pub check_suite: CheckSuite,
    /// Repository.
    pub repository: Repository,
    /// Who acted.
    pub sender: Account,
    /// The App installation, for App deliveries.
    pub installation: Option<InstallationRef>,
    /// Other fields.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `ping`: sent when a webhook is created, to check the endpoint.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PingEvent {
    /// A GitHub zen saying.
    pub zen: String,
    /// The hook's id.
    pub hook_id: Option<u64>,
    /// The hook's configuration.
    pub hook: Option<Hook>,
    /// Repository, for repository hooks.
    pub repository: Option<Repository>,
    /// Who created the hook.
    pub sender: Option<Account>,
    /// Other fields.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `release`: a release was published, created, edited, deleted, ….
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReleaseEvent {
    /// `published`, `created`, `released`, ….
    pub action: String,
    /// The release.
    pub release: Release,
    /// Repository.
    pub repository: Repository,
    /// Who acted.
    pub sender: Account,
    /// The App installation, for App deliveries.
    pub installation: Option<InstallationRef>,
    /// Other fields (`changes`, …).
    #[serde(flatten)]
    pub extra: Extra,
}

/// `workflow_run`: a GitHub Actions run was requested, started or completed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WorkflowRunEvent {
    /// `requested`, `in_progress` or `completed`.
    pub action: String,
    /// The run.
    pub workflow_run: WorkflowRun,
    /// The workflow.
    pub workflow: Option<Value>,
    /// Repository.
    pub repository: Repository,
    /// Who acted.
    pub sender: Account,
    /// The App installation, for App deliveries.
    pub installation: Option<InstallationRef>,
    /// Other fields.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `check_run`: a check run was created, completed, rerequested, or a requested action was clicked.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CheckRunEvent {
    /// `created`, `completed`, `rerequested` or `requested_action`.
    pub action: String,
    /// The check run.
    pub check_run: CheckRun,
    /// The action the user asked for, with `requested_action` (absent otherwise, and kept absent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requested_action: Option<Value>,
    /// Repository.
    pub repository: Repository,
    /// Who acted.
    pub sender: Account,
    /// The App installation, for App deliveries.
    pub installation: Option<InstallationRef>,
    /// Other fields.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `pull_request_review`: a review was submitted, edited or dismissed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PullRequestReviewEvent {
    /// `submitted`, `edited` or `dismissed`.
    pub action: String,
    /// The review.
    pub review: Review,
    /// The pull request reviewed.
    pub pull_request: PullRequest,
    /// Repository.
    pub repository: Repository,
    /// Who acted.
    pub sender: Account,
    /// The App installation, for App deliveries.
    pub installation: Option<InstallationRef>,
    /// Other fields.
    #[serde(flatten)]
    pub extra: Extra,
}

deserialize_with_extra!(Account {
    required login: "login",
    required id: "id",
    optional kind: "type",
});

deserialize_with_extra!(Repository {
    required id: "id",
    required name: "name",
    required full_name: "full_name",
    optional private: "private",
    required owner: "owner",
    optional default_branch: "default_branch",
    optional html_url: "html_url",
});

deserialize_with_extra!(RepositorySummary {
    required id: "id",
    required name: "name",
    required full_name: "full_name",
    optional private: "private",
});

deserialize_with_extra!(InstallationRef {
    required id: "id",
});

deserialize_with_extra!(Installation {
    required id: "id",
    required account: "account",
    optional app_id: "app_id",
    optional repository_selection: "repository_selection",
    optional permissions: "permissions",
    optional events: "events",
    optional created_at: "created_at",
    optional updated_at: "updated_at",
    optional suspended_at: "suspended_at",
    optional suspended_by: "suspended_by",
});

deserialize_with_extra!(Label {
    required id: "id",
    required name: "name",
    optional color: "color",
});

deserialize_with_extra!(Issue {
    required id: "id",
    required number: "number",
    required title: "title",
    optional body: "body",
    required state: "state",
    required user: "user",
    optional labels: "labels",
    optional pull_request: "pull_request",
    optional html_url: "html_url",
});

deserialize_with_extra!(PullRequestRef {
    optional label: "label",
    required branch: "ref",
    required sha: "sha",
    optional repo: "repo",
});

deserialize_with_extra!(PullRequest {
    required id: "id",
    required number: "number",
    required title: "title",
    optional body: "body",
    required state: "state",
    optional draft: "draft",
    optional merged: "merged",
    required user: "user",
    required head: "head",
    required base: "base",
    optional labels: "labels",
    optional html_url: "html_url",
});

deserialize_with_extra!(Comment {
    required id: "id",
    required body: "body",
    required user: "user",
    optional html_url: "html_url",
});

deserialize_with_extra!(CommitAuthor {
    required name: "name",
    optional email: "email",
    optional username: "username",
});

deserialize_with_extra!(PushCommit {
    required id: "id",
    required message: "message",
    optional timestamp: "timestamp",
    required author: "author",
    optional added: "added",
    optional removed: "removed",
    optional modified: "modified",
});

deserialize_with_extra!(CheckSuite {
    required id: "id",
    optional head_branch: "head_branch",
    required head_sha: "head_sha",
    optional status: "status",
    optional conclusion: "conclusion",
    optional pull_requests: "pull_requests",
});

deserialize_with_extra!(Hook {
    required id: "id",
    optional kind: "type",
    optional active: "active",
    optional events: "events",
});

deserialize_with_extra!(PushEvent {
    required git_ref: "ref",
    required before: "before",
    required after: "after",
    optional created: "created",
    optional deleted: "deleted",
    optional forced: "forced",
    optional commits: "commits",
    optional head_commit: "head_commit",
    required repository: "repository",
    required sender: "sender",
    optional installation: "installation",
});

deserialize_with_extra!(PullRequestEvent {
    required action: "action",
    required number: "number",
    required pull_request: "pull_request",
    required repository: "repository",
    required sender: "sender",
    optional installation: "installation",
});

deserialize_with_extra!(IssuesEvent {
    required action: "action",
    required issue: "issue",
    required repository: "repository",
    required sender: "sender",
    optional installation: "installation",
});

deserialize_with_extra!(IssueCommentEvent {
    required action: "action",
    required issue: "issue",
    required comment: "comment",
    required repository: "repository",
    required sender: "sender",
    optional installation: "installation",
});

deserialize_with_extra!(InstallationEvent {
    required action: "action",
    required installation: "installation",
    optional repositories: "repositories",
    required sender: "sender",
});

deserialize_with_extra!(InstallationRepositoriesEvent {
    required action: "action",
    required installation: "installation",
    required repository_selection: "repository_selection",
    optional repositories_added: "repositories_added",
    optional repositories_removed: "repositories_removed",
    required sender: "sender",
});

deserialize_with_extra!(CheckSuiteEvent {
    required action: "action",
    required check_suite: "check_suite",
    required repository: "repository",
    required sender: "sender",
    optional installation: "installation",
});

deserialize_with_extra!(PingEvent {
    required zen: "zen",
    optional hook_id: "hook_id",
    optional hook: "hook",
    optional repository: "repository",
    optional sender: "sender",
});

deserialize_with_extra!(Release {
    required id: "id",
    required tag_name: "tag_name",
    optional target_commitish: "target_commitish",
    optional name: "name",
    optional body: "body",
    optional draft: "draft",
    optional prerelease: "prerelease",
    optional author: "author",
    optional html_url: "html_url",
});

deserialize_with_extra!(WorkflowRun {
    required id: "id",
    optional name: "name",
    optional head_branch: "head_branch",
    required head_sha: "head_sha",
    optional run_number: "run_number",
    optional event: "event",
    optional status: "status",
    optional conclusion: "conclusion",
    optional workflow_id: "workflow_id",
    optional html_url: "html_url",
    optional pull_requests: "pull_requests",
});

deserialize_with_extra!(CheckRun {
    required id: "id",
    required name: "name",
    required head_sha: "head_sha",
    optional status: "status",
    optional conclusion: "conclusion",
    optional external_id: "external_id",
    optional details_url: "details_url",
    optional html_url: "html_url",
    optional check_suite: "check_suite",
    optional app: "app",
    optional pull_requests: "pull_requests",
});

deserialize_with_extra!(Review {
    required id: "id",
    optional user: "user",
    optional body: "body",
    required state: "state",
    optional commit_id: "commit_id",
    optional submitted_at: "submitted_at",
    optional html_url: "html_url",
});

deserialize_with_extra!(ReleaseEvent {
    required action: "action",
    required release: "release",
    required repository: "repository",
    required sender: "sender",
    optional installation: "installation",
});

deserialize_with_extra!(WorkflowRunEvent {
    required action: "action",
    required workflow_run: "workflow_run",
    optional workflow: "workflow",
    required repository: "repository",
    required sender: "sender",
    optional installation: "installation",
});

deserialize_with_extra!(CheckRunEvent {
    required action: "action",
    required check_run: "check_run",
    optional requested_action: "requested_action",
    required repository: "repository",
    required sender: "sender",
    optional installation: "installation",
});

deserialize_with_extra!(PullRequestReviewEvent {
    required action: "action",
    required review: "review",
    required pull_request: "pull_request",
    required repository: "repository",
    required sender: "sender",
    optional installation: "installation",
});
