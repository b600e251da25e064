//! Push analysis: on a push to the default branch, the added lines of the pushed range are scanned
//! for secrets and the files too big to diff are measured, and the result is a check run on the
//! pushed commit, with one annotation per finding on its line.

use std::fmt::Write as _;
use std::sync::Arc;

use chitty_core::BoxError;
use serde::Deserialize;

use super::diff::added_lines;
use super::secrets::{SecretScanner, Severity};
use crate::client::{
    CheckAnnotation, CheckAnnotationLevel, CheckConclusion, CheckRunOutput, CheckRunStatus, ClientError,
    CreateCheckRun, InstallationClient, UpdateCheckRun,
};
use crate::events::PushEvent;
use crate::processor::{EventContext, ProcessorBuilder};

/// GitHub lists at most this many files in a comparison.
const MAX_COMPARED_FILES: usize = 300;
/// GitHub takes at most 50 annotations per check-run request; more go in later updates.
const ANNOTATIONS_PER_REQUEST: usize = 50;

/// What push analysis looks for and how far it goes. In a configuration file,
/// `[github.push_analysis]` (see [`HandlersConfig`](super::HandlersConfig)): every field has its default.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct PushAnalysisConfig {
    /// The check run's name (default `chitty push analysis`).
    pub check_name: String,
    /// Files larger than this are reported (default 5 MiB; GitHub warns at 50 MB and refuses 100 MB).
    pub max_file_bytes: u64,
    /// Most files whose size is looked up (those GitHub gives no diff for: binary or too large; default 20).
    pub max_size_lookups: usize,
    /// Most bytes of diff scanned per push (default 8 MiB); the check run says when the rest was not.
    pub max_scanned_bytes: usize,
}

impl Default for PushAnalysisConfig {
    fn default() -> Self {
        PushAnalysisConfig {
            check_name: "chitty push analysis".to_owned(),
            max_file_bytes: 5 * 1024 * 1024,
            max_size_lookups: 20,
            max_scanned_bytes: 8 * 1024 * 1024,
        }
    }
}

/// What a finding is.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FindingKind {
    /// A secret in an added line.
    Secret {
        /// The scanner rule (`aws-access-key-id`).
        rule: &'static str,
    },
    /// A file over [`PushAnalysisConfig::max_file_bytes`].
    OversizedFile {
        /// Its size.
        bytes: u64,
    },
}

/// One finding, placed on a line of a file of the pushed commit.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Finding {
    /// The file's path.
    pub path: String,
    /// The line (1 for a whole file).
    pub line: u32,
    /// First and last column, for a secret.
    pub columns: Option<(u32, u32)>,
    /// How bad it is.
    pub severity: Severity,
    /// What it is.
    pub kind: FindingKind,
    /// The annotation's title.
    pub title: String,
    /// The annotation's message (never the secret itself).
    pub message: String,
}

/// The outcome of one analysis.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PushReport {
    /// The findings, by file and line.
    pub findings: Vec<Finding>,
    /// The check run's conclusion: failure for a secret, neutral for warnings only, success otherwise.
    pub conclusion: CheckConclusion,
    /// The check run created.
    pub check_run_id: u64,
    /// Whether part of the diff was not scanned ([`PushAnalysisConfig::max_scanned_bytes`], or
    /// GitHub's 300 files per comparison).
    pub truncated: bool,
}

/// GitHub's `compare` answer, as far as the analysis reads it.
#[derive(Debug, Deserialize)]
struct Comparison {
    #[serde(default)]
    files: Vec<ComparedFile>,
}

#[derive(Debug, Deserialize)]
struct ComparedFile {
    filename: String,
    #[serde(default)]
    status: String,
    /// Absent for binary files and diffs too large for GitHub to show.
    #[serde(default)]
    patch: Option<String>,
}

/// GitHub's list of a commit's check runs.
#[derive(Debug, Deserialize)]
struct CheckRunList {
    #[serde(default)]
    check_runs: Vec<NamedCheckRun>,
}

#[derive(Debug, Deserialize)]
struct NamedCheckRun {
    #[serde(default)]
    name: String,
}

#[derive(Debug, Deserialize)]
struct ContentMetadata {
    #[serde(default)]
    size: u64,
}

/// The push handler: register it with [`PushAnalysis::register`] on a processor that has a GitHub App
/// ([`ProcessorBuilder::github_app`]). Needs the `checks: write` and `contents: read` permissions.
#[derive(Debug, Clone)]
pub struct PushAnalysis {
    config: PushAnalysisConfig,
    scanner: Arc<SecretScanner>,
}

impl Default for PushAnalysis {
    fn default() -> Self {
        PushAnalysis::new(PushAnalysisConfig::default())
    }
}

/// Git's object name of "nothing" (a created or deleted ref).
fn is_null_sha(sha: &str) -> bool {
    sha.bytes().all(|b| b == b'0')
}

/// A full commit SHA (SHA-1 or SHA-256), so that it is safe in a path.
fn is_sha(sha: &str) -> bool {
    matches!(sha.len(), 40 | 64) && sha.bytes().all(|b| b.is_ascii_hexdigit())
}

impl PushAnalysis {
    /// The analysis with `config`.
    pub fn new(config: PushAnalysisConfig) -> Self {
        PushAnalysis { config, scanner: Arc::new(SecretScanner::new()) }
    }

    /// Registers the handler for `push` on `builder`.
    pub fn register(self, builder: ProcessorBuilder) -> ProcessorBuilder {
        let analysis = Arc::new(self);
        builder.on_push(move |push: PushEvent, cx: EventContext| {
            let analysis = analysis.clone();
            async move { analysis.handle(&push, &cx).await }
        })
    }

    async fn handle(&self, push: &PushEvent, cx: &EventContext) -> Result<(), BoxError> {
        if !self.should_analyze(push) {
            tracing::debug!(git_ref = %push.git_ref, "push analysis: not a new commit range on the default branch");
            return Ok(());
        }
        let Some(report) = self.analyze(cx.github()?, push).await? else {
            return Ok(());
        };
        tracing::info!(
            repository = %push.repository.full_name,
            after = %push.after,
            findings = report.findings.len(),
            conclusion = ?report.conclusion,
            check_run = report.check_run_id,
            "push analysed"
        );
        Ok(())
    }

    /// Whether the push moves the repository's default branch from one commit to another (not a
    /// branch created or deleted, nor another branch or a tag).
    pub fn should_analyze(&self, push: &PushEvent) -> bool {
        let Some(default_branch) = push.repository.default_branch.as_deref() else {
            return false;
        };
        push.git_ref.strip_prefix("refs/heads/") == Some(default_branch)
            && !push.deleted
            && !is_null_sha(&push.before)
            && !is_null_sha(&push.after)
            && is_sha(&push.before)
            && is_sha(&push.after)
    }

    /// Compares `before...after` in the push's repository, scans it, and creates the check run on
    /// `after`; acts on that repository only. `None` when `after` already has this check run (a
    /// redelivery, or a retry after a later step failed), so that a push is reported once.
    pub async fn analyze(
        &self,
        client: &InstallationClient,
        push: &PushEvent,
    ) -> Result<Option<PushReport>, ClientError> {
        let (owner, repo) = (push.repository.owner.login.as_str(), push.repository.name.as_str());
        let existing: CheckRunList = client
            .get_segments(
                &["repos", owner, repo, "commits", &push.after, "check-runs"],
                &[("check_name", self.config.check_name.as_str())],
            )
            .await?;
        if existing.check_runs.iter().any(|run| run.name == self.config.check_name) {
            tracing::debug!(after = %push.after, "push analysis: the commit already has its check run");
            return Ok(None);
        }
        let range = format!("{}...{}", push.before, push.after);
        let comparison: Comparison = client.get_segments(&["repos", owner, repo, "compare", &range], &[]).await?;
        let (mut findings, unseen, mut truncated, scanned_lines) = self.scan(&comparison);
        // GitHub lists at most 300 files of a comparison.
        truncated |= comparison.files.len() >= MAX_COMPARED_FILES;

        // Git refuses `.`, `..` and empty path components; a URL would resolve them, so such a name is not looked up.
        let sizable = unseen.iter().filter(|path| path.split('/').all(|c| !matches!(c, "" | "." | "..")));
        for path in sizable.take(self.config.max_size_lookups) {
            let mut segments = vec!["repos", owner, repo, "contents"];
            segments.extend(path.split('/'));
            match client.get_segments::<ContentMetadata>(&segments, &[("ref", push.after.as_str())]).await {
                Ok(metadata) if metadata.size > self.config.max_file_bytes => {
                    findings.push(self.oversized(path, metadata.size));
                }
                Ok(_) => {}
                // A file removed by a later commit of the range, or a submodule: nothing to measure.
                Err(error) if error.is_not_found() => {}
                Err(error) => return Err(error),
            }
        }
        findings.sort_by(|a, b| (&a.path, a.line).cmp(&(&b.path, b.line)));

        let conclusion = match findings.iter().map(|f| f.severity).max() {
            Some(Severity::Failure) => CheckConclusion::Failure,
            Some(Severity::Warning) => CheckConclusion::Neutral,
            None => CheckConclusion::Success,
        };
        let (title, summary) = self.summary(&findings, comparison.files.len(), scanned_lines, truncated, push);
        let annotations: Vec<CheckAnnotation> = findings.iter().map(annotation).collect();
        let mut batches = annotations.chunks(ANNOTATIONS_PER_REQUEST);
        let mut output = CheckRunOutput::new(&title, &summary);
        output.annotations = batches.next().map(<[_]>::to_vec).unwrap_or_default();
        let mut run = CreateCheckRun::new(&self.config.check_name, &push.after).with_output(output);
        run.status = Some(CheckRunStatus::Completed);
        run.conclusion = Some(conclusion);
        let created = client.create_check_run(owner, repo, &run).await?;
        for batch in batches {
            let mut output = CheckRunOutput::new(&title, &summary);
            output.annotations = batch.to_vec();
            client.update_check_run(owner, repo, created.id, &UpdateCheckRun::default().with_output(output)).await?;
        }
        Ok(Some(PushReport { findings, conclusion, check_run_id: created.id, truncated }))
    }

    /// Secrets in the added lines; the paths GitHub gave no diff for; whether scanning stopped early;
    /// the number of added lines scanned.
    fn scan(&self, comparison: &Comparison) -> (Vec<Finding>, Vec<String>, bool, usize) {
        let (mut findings, mut unseen) = (Vec::new(), Vec::new());
        let (mut budget, mut truncated, mut scanned) = (self.config.max_scanned_bytes, false, 0);
        for file in &comparison.files {
            if file.status == "removed" {
                continue;
            }
            let Some(patch) = &file.patch else {
                unseen.push(file.filename.clone());
                continue;
            };
            if patch.len() > budget {
                truncated = true;
                continue;
            }
            budget -= patch.len();
            for added in added_lines(patch) {
                scanned += 1;
                for secret in self.scanner.scan_line(added.text) {
                    findings.push(Finding {
                        path: file.filename.clone(),
                        line: added.line,
                        columns: Some((secret.start_column, secret.end_column)),
                        severity: secret.severity,
                        kind: FindingKind::Secret { rule: secret.rule },
                        title: format!("Possible {}", secret.description),
                        message: format!(
                            "A {} ({}) was added on this line. Revoke and rotate it: a pushed secret stays in the \
                             history even after the line is removed.",
                            secret.description, secret.redacted
                        ),
                    });
                }
            }
        }
        (findings, unseen, truncated, scanned)
    }

    fn oversized(&self, path: &str, bytes: u64) -> Finding {
        Finding {
            path: path.to_owned(),
            line: 1,
            columns: None,
            severity: Severity::Warning,
            kind: FindingKind::OversizedFile { bytes },
            title: "Oversized file".to_owned(),
            message: format!(
                "This file is {bytes} bytes, over this repository's limit of {} bytes. Large files belong in \
                 Git LFS or a release asset.",
                self.config.max_file_bytes
            ),
        }
    }

    fn summary(
        &self,
        findings: &[Finding],
        files: usize,
        lines: usize,
        truncated: bool,
        push: &PushEvent,
    ) -> (String, String) {
        let secrets = findings.iter().filter(|f| matches!(f.kind, FindingKind::Secret { .. })).count();
        let oversized = findings.len() - secrets;
        let title = match findings.len() {
            0 => "No secrets or oversized files".to_owned(),
            1 => "1 finding".to_owned(),
            n => format!("{n} findings"),
        };
        let short = |sha: &str| sha.get(..7).unwrap_or(sha).to_owned();
        let mut summary = format!(
            "Scanned {lines} added lines in {files} changed files of {}...{}: {secrets} possible secrets, \
             {oversized} oversized files.",
            short(&push.before),
            short(&push.after)
        );
        if truncated {
            let _ =
                write!(summary, " Part of the diff was not scanned (over {} bytes).", self.config.max_scanned_bytes);
        }
        (title, summary)
    }
}

fn annotation(finding: &Finding) -> CheckAnnotation {
    let level = match finding.severity {
        Severity::Failure => CheckAnnotationLevel::Failure,
        Severity::Warning => CheckAnnotationLevel::Warning,
    };
    let mut annotation = CheckAnnotation::new(&finding.path, finding.line, finding.line, level, &finding.message)
        .with_title(&finding.title);
    if let Some((start, end)) = finding.columns {
        annotation.start_column = Some(start);
        annotation.end_column = Some(end);
    }
    annotation
}
