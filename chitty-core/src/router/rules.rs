//! The smart router's first stage: features of a request that cost nothing to compute, and rules over them.
//!
//! ```
//! use chitty_core::router::{QualityHint, RequestFeatures, RuleCondition};
//! use chitty_core::wire::ChatCompletionRequest;
//!
//! let request: ChatCompletionRequest = serde_json::from_str(
//!     r#"{"model": "auto", "messages": [{"role": "user", "content": "List three colours as JSON"}],
//!         "response_format": {"type": "json_object"}}"#,
//! )?;
//! let features = RequestFeatures::of(&request, QualityHint::from_header("high"));
//! assert!(features.json_mode && !features.tools && !features.images);
//! let when = RuleCondition { json: Some(true), ..RuleCondition::default() };
//! assert!(when.matches(&features));
//! # Ok::<(), serde_json::Error>(())
//! ```

use serde::{Deserialize, Serialize};

use crate::tokens::estimate_chat_prompt;
use crate::wire::{ChatCompletionRequest, MessageContent, Role};

/// The client's hint `x-chitty-quality: low|standard|high`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QualityHint {
    /// The cheapest candidate the rules allow.
    Low,
    /// Let the router decide (the same as no hint).
    Standard,
    /// The strongest candidate.
    High,
}

impl QualityHint {
    /// The header's name.
    pub const HEADER: &'static str = "x-chitty-quality";

    /// Reads the header's value (case-insensitive, surrounding spaces ignored); `None` for anything else,
    /// so a typo costs the client its hint, never its request.
    pub fn from_header(value: &str) -> Option<QualityHint> {
        let value = value.trim();
        [("low", QualityHint::Low), ("standard", QualityHint::Standard), ("high", QualityHint::High)]
            .into_iter()
            .find(|(name, _)| value.eq_ignore_ascii_case(name))
            .map(|(_, hint)| hint)
    }

    /// The header value's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            QualityHint::Low => "low",
            QualityHint::Standard => "standard",
            QualityHint::High => "high",
        }
    }
}

/// What the rules look at: read from the request in one pass over its messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RequestFeatures {
    /// Upper bound on the prompt's tokens ([`estimate_chat_prompt`]: the same bound budgets reserve).
    pub prompt_tokens: u64,
    /// The request offers tools.
    pub tools: bool,
    /// `response_format` is `json_object` or `json_schema`.
    pub json_mode: bool,
    /// `response_format` is `json_schema`.
    pub json_schema: bool,
    /// A message has an image part.
    pub images: bool,
    /// The client's hint.
    pub quality: Option<QualityHint>,
}

impl RequestFeatures {
    /// The features of `request`, with the client's `quality` hint.
    pub fn of(request: &ChatCompletionRequest, quality: Option<QualityHint>) -> RequestFeatures {
        let format = request.response_format.as_ref().and_then(|f| f.get("type")).and_then(|t| t.as_str());
        let images = request.messages.iter().any(|m| match &m.content {
            Some(MessageContent::Parts(parts)) => {
                parts.iter().any(|p| matches!(p.kind.as_str(), "image_url" | "input_image" | "image"))
            }
            _ => false,
        });
        RequestFeatures {
            prompt_tokens: estimate_chat_prompt(request),
            tools: request.tools.as_ref().is_some_and(|t| !t.is_empty()),
            json_mode: matches!(format, Some("json_object" | "json_schema")),
            json_schema: format == Some("json_schema"),
            images,
            quality,
        }
    }
}

/// The text the classifier embeds: the last user message's text (truncated to `max_bytes` on a character
/// boundary, so a long document does not dominate the embedding call's cost). `None` without a user message.
pub fn classifier_text(request: &ChatCompletionRequest, max_bytes: usize) -> Option<String> {
    let message = request.messages.iter().rev().find(|m| m.role == Role::User)?;
    let mut text = message.text_content();
    if text.len() > max_bytes {
        let cut = (0..=max_bytes).rev().find(|&i| text.is_char_boundary(i)).unwrap_or(0);
        text.truncate(cut);
    }
    Some(text)
}

/// When a rule applies: every condition set must hold (an empty condition always holds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuleCondition {
    /// The prompt bound is above this many tokens.
    pub prompt_tokens_above: Option<u64>,
    /// The prompt bound is at most this many tokens.
    pub prompt_tokens_at_most: Option<u64>,
    /// Tools are (or are not) offered.
    pub tools: Option<bool>,
    /// JSON mode (object or schema) is (or is not) asked for.
    pub json: Option<bool>,
    /// A JSON schema is (or is not) given.
    pub json_schema: Option<bool>,
    /// The prompt has (or has no) images.
    pub images: Option<bool>,
    /// The client's hint is this one.
    pub quality: Option<QualityHint>,
}

impl RuleCondition {
    /// Whether `features` satisfy every condition set.
    pub fn matches(&self, features: &RequestFeatures) -> bool {
        let flag = |want: Option<bool>, have: bool| want.is_none_or(|w| w == have);
        self.prompt_tokens_above.is_none_or(|n| features.prompt_tokens > n)
            && self.prompt_tokens_at_most.is_none_or(|n| features.prompt_tokens <= n)
            && flag(self.tools, features.tools)
            && flag(self.json, features.json_mode)
            && flag(self.json_schema, features.json_schema)
            && flag(self.images, features.images)
            && self.quality.is_none_or(|q| features.quality == Some(q))
    }
}

/// One routing rule: `[[routers.rules]] name = "long" when = { prompt_tokens_above = 30000 } model = "big"`.
/// Exactly one of `model` (use this candidate) or `at_least` (never go below it) is set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// The rule's name in the router's reason (`rule:<name>`); `rule-<i>` when unset. Letters, digits,
    /// `-`, `_` and `.` only, since it travels in a header.
    #[serde(default)]
    pub name: Option<String>,
    /// When the rule applies.
    #[serde(default)]
    pub when: RuleCondition,
    /// The candidate that serves matching requests; the first matching rule with `model` decides.
    #[serde(default)]
    pub model: Option<String>,
    /// The cheapest candidate allowed for matching requests; floors from every matching rule combine.
    #[serde(default)]
    pub at_least: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(json: &str) -> ChatCompletionRequest {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn features_are_read_from_the_request() {
        let plain = request(r#"{"model":"auto","messages":[{"role":"user","content":"hi"}]}"#);
        let f = RequestFeatures::of(&plain, None);
        assert!(!f.tools && !f.json_mode && !f.json_schema && !f.images && f.quality.is_none());
        assert!(f.prompt_tokens >= 3, "{f:?}");
        let rich = request(
            r#"{"model":"auto","messages":[{"role":"user","content":[{"type":"text","text":"what is this"},
                {"type":"image_url","image_url":{"url":"data:image/png;base64,AAAA"}}]}],
                "tools":[{"type":"function","function":{"name":"f"}}],
                "response_format":{"type":"json_schema","json_schema":{"name":"x","schema":{"type":"object"}}}}"#,
        );
        let f = RequestFeatures::of(&rich, Some(QualityHint::Low));
        assert!(f.tools && f.json_mode && f.json_schema && f.images && f.quality == Some(QualityHint::Low));
        let empty_tools = request(r#"{"model":"auto","messages":[],"tools":[],"response_format":{"type":"text"}}"#);
        let f = RequestFeatures::of(&empty_tools, None);
        assert!(!f.tools && !f.json_mode);
    }

    #[test]
    fn the_quality_header_is_read_leniently() {
        assert_eq!(QualityHint::from_header(" HIGH "), Some(QualityHint::High));
        assert_eq!(QualityHint::from_header("standard"), Some(QualityHint::Standard));
        assert_eq!(QualityHint::from_header("low"), Some(QualityHint::Low));
        assert_eq!(QualityHint::from_header("best"), None);
        assert_eq!(QualityHint::High.as_str(), "high");
    }

    #[test]
    fn conditions_combine_with_and() {
        let f = RequestFeatures {
            prompt_tokens: 5_000,
            tools: true,
            quality: Some(QualityHint::High),
            ..Default::default()
        };
        assert!(RuleCondition::default().matches(&f));
        assert!(RuleCondition { prompt_tokens_above: Some(4_999), ..Default::default() }.matches(&f));
        assert!(!RuleCondition { prompt_tokens_above: Some(5_000), ..Default::default() }.matches(&f));
        assert!(RuleCondition { prompt_tokens_at_most: Some(5_000), ..Default::default() }.matches(&f));
        assert!(!RuleCondition { prompt_tokens_at_most: Some(4_999), ..Default::default() }.matches(&f));
        assert!(
            RuleCondition { tools: Some(true), quality: Some(QualityHint::High), ..Default::default() }.matches(&f)
        );
        assert!(!RuleCondition { tools: Some(true), images: Some(true), ..Default::default() }.matches(&f));
        assert!(RuleCondition { images: Some(false), json: Some(false), ..Default::default() }.matches(&f));
        assert!(!RuleCondition { quality: Some(QualityHint::Low), ..Default::default() }.matches(&f));
        assert!(!RuleCondition { json_schema: Some(true), ..Default::default() }.matches(&f));
    }

    #[test]
    fn the_classifier_embeds_the_last_user_message_cut_on_a_character() {
        let r = request(
            r#"{"model":"auto","messages":[{"role":"system","content":"be brief"},{"role":"user","content":"first"},
                {"role":"assistant","content":"ok"},{"role":"user","content":"héllo"}]}"#,
        );
        assert_eq!(classifier_text(&r, 100).as_deref(), Some("héllo"));
        assert_eq!(classifier_text(&r, 2).as_deref(), Some("h"), "é is two bytes: cut before it");
        let none = request(r#"{"model":"auto","messages":[{"role":"system","content":"x"}]}"#);
        assert_eq!(classifier_text(&none, 100), None);
    }
}
