//! Typed actions: comment on an issue or pull request, add and remove labels, create and update
//! check runs.

use chitty_core::Timestamp;
use reqwest::Method;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::{Map, Value};

use super::transport::{ApiRequest, AuthScope};
use super::{ClientError, InstallationClient, encode_json};

/// A comment on an issue or pull request, as GitHub returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct IssueComment {
    /// Comment ID.
    pub id: u64,
    /// Markdown body.
    #[serde(default)]
    pub body: Option<String>,
    /// Link to the comment on github.com.
    #[serde(default)]
    pub html_url: Option<String>,
    /// Every other field GitHub sent.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A label on an issue or pull request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Label {
    /// Label ID.
    #[serde(default)]
    pub id: Option<u64>,
    /// Label name.
    pub name: String,
    /// Hex colour without `#`.
    #[serde(default)]
    pub color: Option<String>,
    /// Every other field GitHub sent.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Where a check run is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum CheckRunStatus {
    /// Created, not started.
    Queued,
    /// Running.
    InProgress,
    /// Finished: a conclusion is required.
    Completed,
    /// Waiting (GitHub Actions only).
    Waiting,
    /// Requested (GitHub Actions only).
    Requested,
    /// Pending (GitHub Actions only).
    Pending,
    /// A status this version does not know.
    #[serde(other)]
    Unknown,
}

/// How a completed check run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum CheckConclusion {
    /// Needs action from the user (set `details_url`).
    ActionRequired,
    /// Cancelled.
    Cancelled,
    /// Failed.
    Failure,
    /// Neither passed nor failed.
    Neutral,
    /// Passed.
    Success,
    /// Skipped.
    Skipped,
    /// Marked stale by GitHub.
    Stale,
    /// Timed out.
    TimedOut,
    /// A conclusion this version does not know.
    #[serde(other)]
    Unknown,
}

/// Severity of a check-run annotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum CheckAnnotationLevel {
    /// Informational.
    Notice,
    /// A warning.
    Warning,
    /// A failure.
    Failure,
}

/// A comment pinned to lines of a file in a check run's output (GitHub takes at most 50 per request).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct CheckAnnotation {
    /// Path of the file, relative to the repository root.
    pub path: String,
    /// First line (1-based).
    pub start_line: u32,
    /// Last line.
    pub end_line: u32,
    /// First column, only when on a single line.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_column: Option<u32>,
    /// Last column, only when on a single line.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_column: Option<u32>,
    /// Severity.
    pub annotation_level: CheckAnnotationLevel,
    /// What is wrong.
    pub message: String,
    /// Short title.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Details shown on expansion.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raw_details: Option<String>,
}

impl CheckAnnotation {
    /// An annotation on `path`, lines `start_line..=end_line`.
    pub fn new(
        path: impl Into<String>,
        start_line: u32,
        end_line: u32,
        level: CheckAnnotationLevel,
        message: impl Into<String>,
    ) -> Self {
        CheckAnnotation {
            path: path.into(),
            start_line,
            end_line,
            start_column: None,
            end_column: None,
            annotation_level: level,
            message: message.into(),
            title: None,
            raw_details: None,
        }
    }

    /// Sets the title.
    pub fn with_title(mut self, title: impl Into<String>) -> Self {
        self.title = Some(title.into());
        self
    }
}

/// The report a check run shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct CheckRunOutput {
    /// Title.
    pub title: String,
    /// Summary (Markdown).
    pub summary: String,
    /// Details (Markdown).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Line annotations.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub annotations: Vec<CheckAnnotation>,
}

impl CheckRunOutput {
    /// An output with a title and a summary.
    pub fn new(title: impl Into<String>, summary: impl Into<String>) -> Self {
        CheckRunOutput { title: title.into(), summary: summary.into(), text: None, annotations: Vec::new() }
    }

    /// Adds an annotation.
    pub fn with_annotation(mut self, annotation: CheckAnnotation) -> Self {
        self.annotations.push(annotation);
        self
    }
}

/// Serializes a time as RFC 3339 (`2026-11-22T08:00:00Z`), GitHub's format.
fn rfc3339<S: Serializer>(at: &Option<Timestamp>, serializer: S) -> Result<S::Ok, S::Error> {
    let Some(at) = at else {
        return serializer.serialize_none();
    };
    let nanos = i128::from(at.0) * 1_000_000;
    let text = time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .map_err(serde::ser::Error::custom)?
        .format(&time::format_description::well_known::Rfc3339)
        .map_err(serde::ser::Error::custom)?;
    serializer.serialize_str(&text)
}

/// `POST /repos/{owner}/{repo}/check-runs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct CreateCheckRun {
    /// Name of the check (e.g. `review`).
    pub name: String,
    /// The commit to attach it to.
    pub head_sha: String,
    /// Link to the integrator's page for this run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details_url: Option<String>,
    /// The integrator's own ID for this run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    /// Initial status (GitHub's default: queued).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<CheckRunStatus>,
    /// When it started.
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "rfc3339")]
    pub started_at: Option<Timestamp>,
    /// Conclusion; setting it completes the run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conclusion: Option<CheckConclusion>,
    /// When it completed.
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "rfc3339")]
    pub completed_at: Option<Timestamp>,
    /// The report.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<CheckRunOutput>,
}

impl CreateCheckRun {
    /// A queued check run called `name` on commit `head_sha`.
    pub fn new(name: impl Into<String>, head_sha: impl Into<String>) -> Self {
        CreateCheckRun {
            name: name.into(),
            head_sha: head_sha.into(),
            details_url: None,
            external_id: None,
            status: None,
            started_at: None,
            conclusion: None,
            completed_at: None,
            output: None,
        }
    }

    /// Sets the status.
    pub fn with_status(mut self, status: CheckRunStatus) -> Self {
        self.status = Some(status);
        self
    }

    /// Sets the start time.
    pub fn with_started_at(mut self, at: Timestamp) -> Self {
        self.started_at = Some(at);
        self
    }

    /// Sets the external ID.
    pub fn with_external_id(mut self, id: impl Into<String>) -> Self {
        self.external_id = Some(id.into());
        self
    }

    /// Sets the output.
    pub fn with_output(mut self, output: CheckRunOutput) -> Self {
        self.output = Some(output);
        self
    }
}

/// `PATCH /repos/{owner}/{repo}/check-runs/{id}`: only the fields set are changed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct UpdateCheckRun {
    /// New name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// New details URL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details_url: Option<String>,
    /// New external ID.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    /// New status.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<CheckRunStatus>,
    /// When it started.
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "rfc3339")]
    pub started_at: Option<Timestamp>,
    /// Conclusion; setting it completes the run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conclusion: Option<CheckConclusion>,
    /// When it completed.
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "rfc3339")]
    pub completed_at: Option<Timestamp>,
    /// New report.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<CheckRunOutput>,
}

impl UpdateCheckRun {
    /// Marks the run as in progress.
    pub fn in_progress() -> Self {
        UpdateCheckRun { status: Some(CheckRunStatus::InProgress), ..Default::default() }
    }

    /// Completes the run with `conclusion`.
    pub fn completed(conclusion: CheckConclusion) -> Self {
        UpdateCheckRun { status: Some(CheckRunStatus::Completed), conclusion: Some(conclusion), ..Default::default() }
    }

    /// Sets the completion time.
    pub fn with_completed_at(mut self, at: Timestamp) -> Self {
        self.completed_at = Some(at);
        self
    }

    /// Sets the output.
    pub fn with_output(mut self, output: CheckRunOutput) -> Self {
        self.output = Some(output);
        self
    }
}

/// A check run, as GitHub returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct CheckRun {
    /// Check run ID (for [`InstallationClient::update_check_run`]).
    pub id: u64,
    /// Name.
    #[serde(default)]
    pub name: Option<String>,
    /// Commit.
    #[serde(default)]
    pub head_sha: Option<String>,
    /// Status.
    #[serde(default)]
    pub status: Option<CheckRunStatus>,
    /// Conclusion, once completed.
    #[serde(default)]
    pub conclusion: Option<CheckConclusion>,
    /// Link on github.com.
    #[serde(default)]
    pub html_url: Option<String>,
    /// Every other field GitHub sent.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Serialize)]
struct NewComment<'a> {
    body: &'a str,
}

#[derive(Serialize)]
struct NewLabels<'a> {
    labels: &'a [&'a str],
}

impl InstallationClient {
    /// Comments on issue or pull request `number` (pull requests are issues for comments).
    pub async fn create_comment(
        &self,
        owner: &str,
        repo: &str,
        number: u64,
        body: &str,
    ) -> Result<IssueComment, ClientError> {
        let url = self.inner.url(&["repos", owner, repo, "issues", &number.to_string(), "comments"]);
        self.action(ApiRequest::new(Method::POST, url, Some(encode_json(&NewComment { body })?))).await
    }

    /// Adds `labels` to issue or pull request `number`, creating unknown labels; returns all its labels.
    pub async fn add_labels(
        &self,
        owner: &str,
        repo: &str,
        number: u64,
        labels: &[&str],
    ) -> Result<Vec<Label>, ClientError> {
        let url = self.inner.url(&["repos", owner, repo, "issues", &number.to_string(), "labels"]);
        let mut request = ApiRequest::new(Method::POST, url, Some(encode_json(&NewLabels { labels })?));
        // Adding a label twice leaves one label, so this POST may be retried after a 5xx.
        request.idempotent = true;
        self.action(request).await
    }

    /// Removes label `name` from issue or pull request `number`; returns the labels left.
    /// GitHub answers 404 ([`ClientError::is_not_found`]) when the label was not there.
    pub async fn remove_label(
        &self,
        owner: &str,
        repo: &str,
        number: u64,
        name: &str,
    ) -> Result<Vec<Label>, ClientError> {
        let url = self.inner.url(&["repos", owner, repo, "issues", &number.to_string(), "labels", name]);
        self.action(ApiRequest::new(Method::DELETE, url, None)).await
    }

    /// Creates a check run.
    pub async fn create_check_run(
        &self,
        owner: &str,
        repo: &str,
        run: &CreateCheckRun,
    ) -> Result<CheckRun, ClientError> {
        let url = self.inner.url(&["repos", owner, repo, "check-runs"]);
        self.action(ApiRequest::new(Method::POST, url, Some(encode_json(run)?))).await
    }

    /// Updates check run `check_run_id`.
    pub async fn update_check_run(
        &self,
        owner: &str,
        repo: &str,
        check_run_id: u64,
        update: &UpdateCheckRun,
    ) -> Result<CheckRun, ClientError> {
        let url = self.inner.url(&["repos", owner, repo, "check-runs", &check_run_id.to_string()]);
        self.action(ApiRequest::new(Method::PATCH, url, Some(encode_json(update)?))).await
    }

    async fn action<T: serde::de::DeserializeOwned>(&self, request: ApiRequest) -> Result<T, ClientError> {
        self.inner.execute(AuthScope::Installation(self.installation), request).await?.json()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn check_run_requests_serialize_like_githubs_docs() {
        let run = CreateCheckRun::new("review", "abc")
            .with_status(CheckRunStatus::InProgress)
            .with_started_at(Timestamp(1_468_275_250_000))
            .with_output(CheckRunOutput::new("t", "s").with_annotation(CheckAnnotation::new(
                "src/lib.rs",
                3,
                4,
                CheckAnnotationLevel::Warning,
                "m",
            )));
        let json = serde_json::to_value(&run).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "name": "review", "head_sha": "abc", "status": "in_progress", "started_at": "2016-07-11T22:14:10Z",
                "output": { "title": "t", "summary": "s", "annotations": [
                    {
                        "path": "src/lib.rs", "start_line": 3, "end_line": 4,
                        "annotation_level": "warning", "message": "m",
                    }
                ] }
            })
        );
        let update = serde_json::to_value(UpdateCheckRun::completed(CheckConclusion::TimedOut)).unwrap();
        assert_eq!(update, serde_json::json!({ "status": "completed", "conclusion": "timed_out" }));
    }

    #[test]
    fn unknown_statuses_still_decode() {
        let run: CheckRun =
            serde_json::from_str(r#"{"id":1,"status":"brand_new","conclusion":"startup_failure","x":1}"#).unwrap();
        assert_eq!(run.status, Some(CheckRunStatus::Unknown));
        assert_eq!(run.conclusion, Some(CheckConclusion::Unknown));
        assert_eq!(run.extra["x"], 1);
    }
}
