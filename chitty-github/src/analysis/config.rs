//! The ready-made handlers enabled from a host's configuration file instead of code.

use std::sync::Arc;

use chitty_core::Provider;
use serde::Deserialize;
use serde::de::{DeserializeOwned, Deserializer, Error as _};
use serde_json::Value;

use super::push::{PushAnalysis, PushAnalysisConfig};
use super::review::{PullRequestReviewer, ReviewConfig};
use super::triage::{IssueTriage, TriageConfig};
use crate::error::Error;
use crate::processor::ProcessorBuilder;

/// The ready-made handlers to enable, as a host's `[github]` table holds them:
///
/// ```toml
/// [github.review]            # pull request review (needs a model)
/// model = "gpt-4.1-mini"
/// max_tokens = 2048          # every field but `model` has a default
///
/// [github.triage]            # issue triage (needs a model)
/// model = "gpt-4.1-mini"
/// embedding_model = "text-embedding-3-small"
///
/// [github.push_analysis]     # secrets and oversized files on the default branch (no model)
/// enabled = true
/// ```
///
/// A section that is absent, or has `enabled = false`, is off; one that is present is on unless it
/// says otherwise. Unknown sections and fields are refused, so a typo is an error at start-up rather
/// than a handler that silently never runs. [`register`](Self::register) adds the enabled handlers to
/// a processor builder.
///
/// ```
/// use chitty_github::analysis::HandlersConfig;
/// use chitty_github::processor::Processor;
///
/// let config: HandlersConfig = serde_json::from_value(serde_json::json!({
///     "push_analysis": { "max_file_bytes": 1048576 },
///     "review": { "enabled": false },
/// }))?;
/// assert!(config.push_analysis.is_enabled() && !config.review.is_enabled());
/// let processor = config.register(Processor::builder(), None)?.try_build()?;
/// # drop(processor);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct HandlersConfig {
    /// `[github.review]`: [`PullRequestReviewer`] with a [`ReviewConfig`].
    #[serde(default)]
    pub review: HandlerSection<ReviewConfig>,
    /// `[github.triage]`: [`IssueTriage`] with a [`TriageConfig`].
    #[serde(default)]
    pub triage: HandlerSection<TriageConfig>,
    /// `[github.push_analysis]`: [`PushAnalysis`] with a [`PushAnalysisConfig`].
    #[serde(default)]
    pub push_analysis: HandlerSection<PushAnalysisConfig>,
}

/// One handler's section: off, or on with its configuration.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub enum HandlerSection<T> {
    /// Absent, or `enabled = false` (whatever else the section holds).
    #[default]
    Disabled,
    /// Present (with `enabled = true` or no `enabled`), with the handler's configuration.
    Enabled(T),
}

impl<T> HandlerSection<T> {
    /// Whether the handler is on.
    pub fn is_enabled(&self) -> bool {
        matches!(self, HandlerSection::Enabled(_))
    }

    /// The handler's configuration, when it is on.
    pub fn config(&self) -> Option<&T> {
        match self {
            HandlerSection::Enabled(config) => Some(config),
            HandlerSection::Disabled => None,
        }
    }
}

impl<'de, T: DeserializeOwned> Deserialize<'de> for HandlerSection<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // Through a JSON value, so that `enabled` can be taken out before the handler's own
        // configuration (which refuses unknown fields) sees the rest; any self-describing format works.
        let Value::Object(mut fields) = Value::deserialize(deserializer)? else {
            return Err(D::Error::custom("a handler section must be a table"));
        };
        let enabled = match fields.remove("enabled") {
            None => true,
            Some(Value::Bool(enabled)) => enabled,
            Some(other) => return Err(D::Error::custom(format!("`enabled` must be true or false, not {other}"))),
        };
        if !enabled {
            return Ok(HandlerSection::Disabled);
        }
        T::deserialize(Value::Object(fields)).map(HandlerSection::Enabled).map_err(D::Error::custom)
    }
}

impl HandlersConfig {
    /// Registers the enabled handlers on `builder`: review and triage ask `model` (an error if
    /// either is enabled without one), push analysis needs none. Each needs the processor's GitHub
    /// App ([`ProcessorBuilder::github_app`]) at run time.
    pub fn register(
        &self,
        builder: ProcessorBuilder,
        model: Option<Arc<dyn Provider>>,
    ) -> Result<ProcessorBuilder, Error> {
        let invalid = |reason: String| Error::InvalidConfig { reason };
        let needs_model = |section: &str, name: &str| match (&model, name.trim().is_empty()) {
            (_, true) => Err(invalid(format!("[github.{section}] needs a `model`"))),
            (None, false) => Err(invalid(format!("[github.{section}] is enabled but no model provider was given"))),
            (Some(provider), false) => Ok(provider.clone()),
        };
        let mut builder = builder;
        if let Some(config) = self.review.config() {
            let provider = needs_model("review", &config.model)?;
            if config.max_tokens == 0 {
                return Err(invalid("[github.review] max_tokens must be at least 1".to_owned()));
            }
            builder = PullRequestReviewer::new(provider, config.clone()).register(builder);
        }
        if let Some(config) = self.triage.config() {
            let provider = needs_model("triage", &config.model)?;
            if config.max_tokens == 0 {
                return Err(invalid("[github.triage] max_tokens must be at least 1".to_owned()));
            }
            if !(0.0..=1.0).contains(&config.duplicate_threshold) {
                return Err(invalid("[github.triage] duplicate_threshold must be between 0 and 1".to_owned()));
            }
            builder = IssueTriage::new(provider, config.clone()).register(builder);
        }
        if let Some(config) = self.push_analysis.config() {
            builder = PushAnalysis::new(config.clone()).register(builder);
        }
        Ok(builder)
    }
}
