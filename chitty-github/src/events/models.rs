//! The payload types. Each keeps the fields handlers commonly need as typed fields and every other
//! field in `extra`, so nothing GitHub sends is lost and new fields never break parsing.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Fields of a payload object that have no typed field.
pub type Extra = Map<String, Value>;

/// A user, organization or bot account.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Account {
    /// Login (`octocat`, `my-app[bot]`).
    pub login: String,
    /// Numeric id.
    pub id: u64,
    /// `User`, `Organization` or `Bot`.
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    /// Other fields.
    #[serde(flatten)]
    pub extra: Extra,
}

/// A repository, as embedded in most payloads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Repository {
    /// Numeric id.
    pub id: u64,
    /// Name (`hello-world`).
    pub name: String,
    /// `owner/name`.
    pub full_name: String,
    /// Whether it is private.
    #[serde(default)]
    pub private: bool,
    /// The owning account.
    pub owner: Account,
    /// Default branch (`main`).
    #[serde(default)]
    pub default_branch: Option<String>,
    /// Web address.
    #[serde(default)]
    pub html_url: Option<String>,
    /// Other fields.
    #[serde(flatten)]
    pub extra: Extra,
}

/// The short repository form in installation payloads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RepositorySummary {
    /// Numeric id.
    pub id: u64,
    /// Name.
    pub name: String,
    /// `owner/name`.
    pub full_name: String,
    /// Whether it is private.
    #[serde(default)]
    pub private: bool,
    /// Other fields.
    #[serde(flatten)]
    pub extra: Extra,
}

/// The installation reference carried by events sent to an App.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstallationRef {
    /// Installation id, used to mint an installation token.
    pub id: u64,
    /// Other fields.
    #[serde(flatten)]
    pub extra: Extra,
}

/// A full installation, in `installation` and `installation_repositories` payloads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Installation {
    /// Installation id.
    pub id: u64,
    /// The account the App is installed on.
    pub account: Account,
    /// The App's id.
    #[serde(default)]
    pub app_id: Option<u64>,
    /// `all` or `selected`.
    #[serde(default)]
    pub repository_selection: Option<String>,
    /// Granted permissions (`issues: write`, …).
    #[serde(default)]
    pub permissions: Map<String, Value>,
    /// Subscribed events.
    #[serde(default)]
    pub events: Vec<String>,
    /// Other fields.
    #[serde(flatten)]
    pub extra: Extra,
}

/// A label.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Label {
    /// Numeric id.
    pub id: u64,
    /// Name.
    pub name: String,
    /// Hex colour without `#`.
    #[serde(default)]
    pub color: Option<String>,
    /// Other fields.
    #[serde(flatten)]
    pub extra: Extra,
}

/// An issue (also the issue side of a pull request in `issue_comment`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Issue {
    /// Numeric id.
    pub id: u64,
    /// Number within the repository.
    pub number: u64,
    /// Title.
    pub title: String,
    /// Body, when there is one.
    #[serde(default)]
    pub body: Option<String>,
    /// `open` or `closed`.
    pub state: String,
    /// Author.
    pub user: Account,
    /// Labels.
    #[serde(default)]
    pub labels: Vec<Label>,
    /// Present when the issue is a pull request.
    #[serde(default)]
    pub pull_request: Option<Value>,
    /// Web address.
    #[serde(default)]
    pub html_url: Option<String>,
    /// Other fields.
    #[serde(flatten)]
    pub extra: Extra,
}

/// One side of a pull request (head or base).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PullRequestRef {
    /// `owner:branch`.
    #[serde(default)]
    pub label: Option<String>,
    /// Branch name.
    #[serde(rename = "ref")]
    pub branch: String,
    /// Commit SHA.
    pub sha: String,
    /// The repository (absent when a fork was deleted).
    #[serde(default)]
    pub repo: Option<Repository>,
    /// Other fields.
    #[serde(flatten)]
    pub extra: Extra,
}

/// A pull request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PullRequest {
    /// Numeric id.
    pub id: u64,
    /// Number within the repository.
    pub number: u64,
    /// Title.
    pub title: String,
    /// Description, when there is one.
    #[serde(default)]
    pub body: Option<String>,
    /// `open` or `closed`.
    pub state: String,
    /// Whether it is a draft.
    #[serde(default)]
    pub draft: Option<bool>,
    /// Whether it was merged.
    #[serde(default)]
    pub merged: Option<bool>,
    /// Author.
    pub user: Account,
    /// The branch to merge.
    pub head: PullRequestRef,
    /// The branch merged into.
    pub base: PullRequestRef,
    /// Labels.
    #[serde(default)]
    pub labels: Vec<Label>,
    /// Web address.
    #[serde(default)]
    pub html_url: Option<String>,
    /// Other fields.
    #[serde(flatten)]
    pub extra: Extra,
}

/// A comment on an issue or pull request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comment {
    /// Numeric id.
    pub id: u64,
    /// Text.
    pub body: String,
    /// Author.
    pub user: Account,
    /// Web address.
    #[serde(default)]
    pub html_url: Option<String>,
    /// Other fields.
    #[serde(flatten)]
    pub extra: Extra,
}

/// A commit author or committer in a push.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommitAuthor {
    /// Name.
    pub name: String,
    /// Email address, when shared.
    #[serde(default)]
    pub email: Option<String>,
    /// GitHub login, when the email maps to one.
    #[serde(default)]
    pub username: Option<String>,
    /// Other fields.
    #[serde(flatten)]
    pub extra: Extra,
}

/// A commit in a push.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PushCommit {
    /// SHA.
    pub id: String,
    /// Message.
    pub message: String,
    /// ISO 8601 time.
    #[serde(default)]
    pub timestamp: Option<String>,
    /// Author.
    pub author: CommitAuthor,
    /// Paths added.
    #[serde(default)]
    pub added: Vec<String>,
    /// Paths removed.
    #[serde(default)]
    pub removed: Vec<String>,
    /// Paths modified.
    #[serde(default)]
    pub modified: Vec<String>,
    /// Other fields.
    #[serde(flatten)]
    pub extra: Extra,
}

/// A check suite.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckSuite {
    /// Numeric id.
    pub id: u64,
    /// Branch, absent for suites on tags or forks.
    #[serde(default)]
    pub head_branch: Option<String>,
    /// Commit SHA.
    pub head_sha: String,
    /// `requested`, `in_progress`, `completed`, ….
    #[serde(default)]
    pub status: Option<String>,
    /// `success`, `failure`, …, once completed.
    #[serde(default)]
    pub conclusion: Option<String>,
    /// Pull requests the suite's head belongs to.
    #[serde(default)]
    pub pull_requests: Vec<Value>,
    /// Other fields.
    #[serde(flatten)]
    pub extra: Extra,
}

/// A webhook's configuration, in `ping`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hook {
    /// Hook id.
    pub id: u64,
    /// `Repository`, `Organization` or `App`.
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    /// Whether it is active.
    #[serde(default)]
    pub active: bool,
    /// Subscribed events.
    #[serde(default)]
    pub events: Vec<String>,
    /// Other fields.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `push`: commits pushed to a branch or tag.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PushEvent {
    /// Full ref (`refs/heads/main`).
    #[serde(rename = "ref")]
    pub git_ref: String,
    /// SHA before the push.
    pub before: String,
    /// SHA after the push.
    pub after: String,
    /// Whether the ref was created.
    #[serde(default)]
    pub created: bool,
    /// Whether the ref was deleted.
    #[serde(default)]
    pub deleted: bool,
    /// Whether it was a force push.
    #[serde(default)]
    pub forced: bool,
    /// Pushed commits (at most 2048).
    #[serde(default)]
    pub commits: Vec<PushCommit>,
    /// The most recent commit.
    #[serde(default)]
    pub head_commit: Option<PushCommit>,
    /// Repository.
    pub repository: Repository,
    /// Who pushed.
    pub sender: Account,
    /// The App installation, for App deliveries.
    #[serde(default)]
    pub installation: Option<InstallationRef>,
    /// Other fields.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `pull_request`: a pull request was opened, edited, synchronized, closed, ….
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    #[serde(default)]
    pub installation: Option<InstallationRef>,
    /// Other fields (`changes`, `label`, `requested_reviewer`, …).
    #[serde(flatten)]
    pub extra: Extra,
}

/// `issues`: an issue was opened, edited, labeled, closed, ….
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    #[serde(default)]
    pub installation: Option<InstallationRef>,
    /// Other fields (`label`, `changes`, `assignee`, …).
    #[serde(flatten)]
    pub extra: Extra,
}

/// `issue_comment`: a comment on an issue or pull request was created, edited or deleted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    #[serde(default)]
    pub installation: Option<InstallationRef>,
    /// Other fields.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `installation`: the App was installed, uninstalled, suspended, ….
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstallationEvent {
    /// `created`, `deleted`, `suspend`, `unsuspend`, `new_permissions_accepted`.
    pub action: String,
    /// The installation.
    pub installation: Installation,
    /// Repositories the installation can access, when listed.
    #[serde(default)]
    pub repositories: Option<Vec<RepositorySummary>>,
    /// Who acted.
    pub sender: Account,
    /// Other fields.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `installation_repositories`: repositories were added to or removed from an installation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstallationRepositoriesEvent {
    /// `added` or `removed`.
    pub action: String,
    /// The installation.
    pub installation: Installation,
    /// `all` or `selected`.
    pub repository_selection: String,
    /// Repositories added.
    #[serde(default)]
    pub repositories_added: Vec<RepositorySummary>,
    /// Repositories removed.
    #[serde(default)]
    pub repositories_removed: Vec<RepositorySummary>,
    /// Who acted.
    pub sender: Account,
    /// Other fields.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `check_suite`: a check suite was requested, rerequested or completed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    #[serde(default)]
    pub installation: Option<InstallationRef>,
    /// Other fields.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `ping`: sent when a webhook is created, to check the endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PingEvent {
    /// A GitHub zen saying.
    pub zen: String,
    /// The hook's id.
    #[serde(default)]
    pub hook_id: Option<u64>,
    /// The hook's configuration.
    #[serde(default)]
    pub hook: Option<Hook>,
    /// Repository, for repository hooks.
    #[serde(default)]
    pub repository: Option<Repository>,
    /// Who created the hook.
    #[serde(default)]
    pub sender: Option<Account>,
    /// Other fields.
    #[serde(flatten)]
    pub extra: Extra,
}
