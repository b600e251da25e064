//! Repository analysis that needs no model: the added lines of a diff ([`diff`]), a secret scanner
//! over them ([`secrets`]), and, with feature `client`, the push handler that reports both as a
//! check run (`PushAnalysis`) and the pull request review by any model behind chitty-core's
//! `Provider` (`review`) and issue triage by one (`triage`). `HandlersConfig` enables any of the
//! three from a host's configuration file (`[github.review]`, `[github.triage]`,
//! `[github.push_analysis]`).

#[cfg(feature = "client")]
mod config;
pub mod diff;
#[cfg(feature = "client")]
mod once;
#[cfg(feature = "client")]
mod push;
#[cfg(feature = "client")]
pub mod review;
pub mod secrets;
#[cfg(feature = "client")]
pub mod triage;

#[cfg(feature = "client")]
pub use config::{HandlerSection, HandlersConfig};
#[cfg(feature = "client")]
pub use push::{Finding, FindingKind, PushAnalysis, PushAnalysisConfig, PushReport};

#[cfg(feature = "client")]
use crate::client::ClientError;

/// Why a review or a triage failed; the processor retries, then dead-letters. Nothing is posted or
/// applied on failure.
#[cfg(feature = "client")]
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AnalysisError {
    /// Reading or writing through the GitHub API failed (boxed: the error is large and rare).
    #[error(transparent)]
    GitHub(Box<ClientError>),
    /// The model could not be asked.
    #[error("the model failed: {0}")]
    Model(#[source] Box<chitty_core::Error>),
    /// The model's answer does not match the schema (or its limits).
    #[error("the model's answer is not a valid {task}: {reason}")]
    InvalidAnswer {
        /// What was asked for: `review` or `triage`.
        task: &'static str,
        /// What is wrong with the answer.
        reason: String,
    },
    /// The event names a repository the REST paths cannot carry.
    #[error("unexpected repository name {0:?}")]
    InvalidRepository(String),
}

/// Asks `provider` and logs the tokens the answer cost (`task` names the handler in the log line); the
/// answer's text, empty when it has none.
#[cfg(feature = "client")]
async fn ask_model(
    provider: &dyn chitty_core::Provider,
    request: chitty_core::wire::ChatCompletionRequest,
    task: &'static str,
) -> Result<String, AnalysisError> {
    let response = provider.chat(request).await.map_err(AnalysisError::model)?;
    if let Some(usage) = &response.usage {
        tracing::info!(
            model = %response.model,
            prompt_tokens = usage.prompt_tokens,
            completion_tokens = usage.completion_tokens,
            task,
            "model usage"
        );
    }
    Ok(response.choices.first().map(|c| c.message.text_content()).unwrap_or_default())
}

#[cfg(feature = "client")]
impl From<ClientError> for AnalysisError {
    fn from(error: ClientError) -> Self {
        AnalysisError::GitHub(Box::new(error))
    }
}

#[cfg(feature = "client")]
impl AnalysisError {
    fn model(error: chitty_core::Error) -> Self {
        AnalysisError::Model(Box::new(error))
    }
}

/// Whether a repository owner or name can go into a REST path as it is (GitHub's own alphabet).
#[cfg(feature = "client")]
pub(crate) fn is_path_safe(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// The event's repository owner and name, checked to be path-safe.
#[cfg(feature = "client")]
fn repository_path(repository: &crate::events::Repository) -> Result<(&str, &str), AnalysisError> {
    let (owner, repo) = (repository.owner.login.as_str(), repository.name.as_str());
    for name in [owner, repo] {
        if !is_path_safe(name) {
            return Err(AnalysisError::InvalidRepository(name.to_owned()));
        }
    }
    Ok((owner, repo))
}
