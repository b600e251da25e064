//! The smart router: a virtual model (`[[routers]] name = "auto"`) that picks, per request, the cheapest
//! candidate model expected to answer well enough. Pure: the caller computes the request's features, makes
//! the embedding call when asked to, and sends the answer back for the cascade's checks.
//!
//! The decision, in order:
//! 1. **rules** over [`RequestFeatures`] (prompt token bound, tools, JSON mode or schema, images, the client's
//!    `x-chitty-quality` hint): the first matching rule with `model` decides; rules with `at_least` raise a
//!    floor that every later stage respects;
//! 2. the **hint**: `high` takes the strongest candidate, `low` the cheapest the floor allows;
//! 3. the **classifier** ([`ExampleIndex`], k nearest labelled examples): [`SmartRouter::decide`] returns
//!    [`RouterStep::Classify`] and the caller embeds [`classifier_text`] with the configured embedding model;
//! 4. the **default** candidate (the strongest unless `default` names one).
//!
//! Each decision carries a [`RouterReason`] whose text (`rule:long-context`, `hint:low`,
//! `knn:smalltalk+floor:tools`, `default`) goes in the `x-chitty-router` header and the request event. An
//! optional [`CascadeConfig`] escalates a non-streamed answer that fails its checks to the next candidate.
//!
//! ```
//! use chitty_core::router::{RequestFeatures, RouterConfig, RouterStep, SmartRouter};
//!
//! let config: RouterConfig = serde_json::from_value(serde_json::json!({
//!     "name": "auto",
//!     "candidates": [{"model": "small"}, {"model": "large", "price": {"input": "2.50", "output": "10"}}],
//!     "rules": [{"name": "long", "when": {"prompt_tokens_above": 30000}, "model": "large"},
//!               {"name": "tools", "when": {"tools": true}, "at_least": "large"}],
//!     "default": "small"
//! }))?;
//! let router = SmartRouter::new(&config, |_| true)?;
//! let features = RequestFeatures { prompt_tokens: 50_000, ..RequestFeatures::default() };
//! let RouterStep::Decided(decision) = router.decide(&features) else { unreachable!("no classifier") };
//! assert_eq!((&*decision.model, decision.reason.to_string().as_str()), ("large", "rule:long"));
//!
//! let short = RequestFeatures { prompt_tokens: 200, ..RequestFeatures::default() };
//! let RouterStep::Decided(decision) = router.decide(&short) else { unreachable!() };
//! assert_eq!((&*decision.model, decision.reason.to_string().as_str()), ("small", "default"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod cascade;
pub mod classifier;
pub mod rules;

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use cascade::{AnswerExpectations, CascadeCheck, CascadeConfig, Escalation, REFUSAL_OPENINGS, schema_violation};
pub use classifier::{ExampleIndex, ExampleIndexes, NearestClass};
pub use rules::{QualityHint, RequestFeatures, RuleCondition, RuleConfig, classifier_text};

use crate::embedding::EmbeddingError;
use crate::gateway::ConfigIssue;
use crate::money::ModelPrice;

/// `[[routers]]`: a virtual model and how it chooses among its candidates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouterConfig {
    /// The public name clients use as `model` (e.g. `auto`).
    pub name: String,
    /// The models it may send a request to, **cheapest first** (the cascade escalates along this order).
    pub candidates: Vec<CandidateConfig>,
    /// Rules over request features, in order.
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
    /// Labelled example prompts for the classifier.
    #[serde(default)]
    pub examples: Vec<ExampleSetConfig>,
    /// The embedding model (a configured public model) for the classifier; no classifier when unset.
    #[serde(default)]
    pub embedding_model: Option<String>,
    /// Neighbours that vote (`k`).
    #[serde(default = "default_neighbours")]
    pub neighbours: usize,
    /// Least cosine similarity of the nearest example for the classifier to decide; below it the default
    /// candidate answers.
    #[serde(default)]
    pub min_similarity: f32,
    /// The candidate when nothing else decides; the strongest (last) when unset.
    #[serde(default)]
    pub default: Option<String>,
    /// Escalation of non-streamed answers that fail their checks; off when unset.
    #[serde(default)]
    pub cascade: Option<CascadeConfig>,
}

fn default_neighbours() -> usize {
    5
}

/// One candidate model of a router.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CandidateConfig {
    /// A configured public model.
    pub model: String,
    /// Prices per million tokens for cost estimates; the model's own configured price when unset.
    #[serde(default)]
    pub price: Option<ModelPrice>,
}

/// Example prompts of one class and the candidate that serves them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExampleSetConfig {
    /// The class's name, in the router's reason (`knn:<class>`).
    pub class: String,
    /// The candidate serving the class.
    pub model: String,
    /// Example prompts, embedded with the router's embedding model when the gateway starts.
    pub prompts: Vec<String>,
}

/// A compiled rule: names resolved to candidate positions.
#[derive(Debug, Clone)]
struct Rule {
    name: Arc<str>,
    when: RuleCondition,
    action: RuleAction,
}

#[derive(Debug, Clone, Copy)]
enum RuleAction {
    Use(usize),
    AtLeast(usize),
}

/// A router built from its [`RouterConfig`]: names resolved, ready to decide.
#[derive(Debug, Clone)]
pub struct SmartRouter {
    name: Arc<str>,
    candidates: Vec<Arc<str>>,
    prices: Vec<Option<ModelPrice>>,
    rules: Vec<Rule>,
    default: usize,
    neighbours: usize,
    min_similarity: f32,
    embedding_model: Option<Arc<str>>,
    cascade: Option<CascadeConfig>,
}

/// Why the router chose its candidate; `Display` gives the short form for headers and events.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum RouterReason {
    /// A rule with `model` matched: `rule:<name>`.
    Rule(Arc<str>),
    /// The client's hint: `hint:low` or `hint:high`.
    Hint(QualityHint),
    /// The classifier's class: `knn:<class>`.
    Nearest {
        /// The class.
        class: Arc<str>,
        /// Similarity of its closest example.
        similarity: f32,
    },
    /// Nothing else decided: `default`.
    Default,
    /// A rule's `at_least` raised the choice of `then`: `<then>+floor:<rule>`.
    Floor {
        /// What chose before the floor applied.
        then: Box<RouterReason>,
        /// The rule that raised it.
        rule: Arc<str>,
    },
    /// The cascade escalated from the previous candidate: `<then>+escalated:<label>`.
    Escalated {
        /// The reason of the previous candidate.
        then: Box<RouterReason>,
        /// The failed check ([`Escalation::label`]).
        check: &'static str,
    },
}

impl fmt::Display for RouterReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RouterReason::Rule(name) => write!(f, "rule:{name}"),
            RouterReason::Hint(hint) => write!(f, "hint:{}", hint.as_str()),
            RouterReason::Nearest { class, .. } => write!(f, "knn:{class}"),
            RouterReason::Default => f.write_str("default"),
            RouterReason::Floor { then, rule } => write!(f, "{then}+floor:{rule}"),
            RouterReason::Escalated { then, check } => write!(f, "{then}+escalated:{check}"),
        }
    }
}

/// The router's choice for one request.
#[derive(Debug, Clone, PartialEq)]
pub struct RouterDecision {
    /// Position among the candidates (0 is the cheapest).
    pub candidate: usize,
    /// The chosen public model.
    pub model: Arc<str>,
    /// Why.
    pub reason: RouterReason,
}

/// What [`SmartRouter::decide`] needs next.
#[derive(Debug, Clone, PartialEq)]
pub enum RouterStep {
    /// Decided without the classifier.
    Decided(RouterDecision),
    /// The classifier decides: embed [`classifier_text`] with [`SmartRouter::embedding_model`], then call
    /// [`SmartRouter::classify`] (or [`SmartRouter::finish`] when there is nothing to embed).
    Classify(PendingClassification),
}

/// A decision waiting for the classifier; holds the floor the rules set.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingClassification {
    floor: Option<(usize, Arc<str>)>,
}

impl SmartRouter {
    /// Builds the router; `is_model(name)` says whether a public model of that name is configured (every
    /// candidate, and the embedding model, must be).
    pub fn new(config: &RouterConfig, is_model: impl Fn(&str) -> bool) -> Result<SmartRouter, ConfigIssue> {
        let issue = |key: String, reason: String| ConfigIssue { key, reason };
        if config.candidates.is_empty() {
            return Err(issue("candidates".into(), format!("router `{}` needs at least one candidate", config.name)));
        }
        for (i, c) in config.candidates.iter().enumerate() {
            if !is_model(&c.model) {
                return Err(issue(format!("candidates[{i}].model"), format!("unknown model `{}`", c.model)));
            }
            if config.candidates[..i].iter().any(|earlier| earlier.model == c.model) {
                return Err(issue(format!("candidates[{i}].model"), format!("`{}` is listed twice", c.model)));
            }
        }
        let total = |p: &ModelPrice| p.input_per_mtok.saturating_add(p.output_per_mtok);
        let priced: Vec<(usize, &ModelPrice)> =
            config.candidates.iter().enumerate().filter_map(|(i, c)| c.price.as_ref().map(|p| (i, p))).collect();
        if let Some(pair) = priced.windows(2).find(|w| total(w[1].1) < total(w[0].1)) {
            return Err(issue(
                format!("candidates[{}].price", pair[1].0),
                "candidates are listed cheapest first: this one costs less than an earlier one".into(),
            ));
        }
        let position = |key: String, model: &str| {
            config
                .candidates
                .iter()
                .position(|c| c.model == model)
                .ok_or_else(|| issue(key, format!("`{model}` is not one of the router's candidates")))
        };
        let mut rules = Vec::with_capacity(config.rules.len());
        for (i, r) in config.rules.iter().enumerate() {
            let name: Arc<str> = match &r.name {
                Some(n) if is_label(n) => n.as_str().into(),
                Some(n) => {
                    return Err(issue(
                        format!("rules[{i}].name"),
                        format!("`{n}`: use letters, digits, `-`, `_` and `.` (it travels in a header)"),
                    ));
                }
                None => format!("rule-{i}").into(),
            };
            let action = match (&r.model, &r.at_least) {
                (Some(m), None) => RuleAction::Use(position(format!("rules[{i}].model"), m)?),
                (None, Some(m)) => RuleAction::AtLeast(position(format!("rules[{i}].at_least"), m)?),
                _ => return Err(issue(format!("rules[{i}]"), "set exactly one of `model` and `at_least`".into())),
            };
            rules.push(Rule { name, when: r.when, action });
        }
        for (i, set) in config.examples.iter().enumerate() {
            if !is_label(&set.class) {
                return Err(issue(
                    format!("examples[{i}].class"),
                    format!("`{}`: letters, digits, `-`, `_`, `.`", set.class),
                ));
            }
            position(format!("examples[{i}].model"), &set.model)?;
        }
        if let Some(model) = &config.embedding_model
            && !is_model(model)
        {
            return Err(issue("embedding_model".into(), format!("unknown model `{model}`")));
        }
        if !config.examples.is_empty() && config.embedding_model.is_none() {
            return Err(issue("embedding_model".into(), "examples need an embedding model to be classified".into()));
        }
        if !(-1.0..=1.0).contains(&config.min_similarity) {
            return Err(issue("min_similarity".into(), "a cosine similarity is between -1 and 1".into()));
        }
        let default = match &config.default {
            Some(m) => position("default".into(), m)?,
            None => config.candidates.len() - 1,
        };
        Ok(SmartRouter {
            name: config.name.as_str().into(),
            candidates: config.candidates.iter().map(|c| Arc::from(c.model.as_str())).collect(),
            prices: config.candidates.iter().map(|c| c.price).collect(),
            rules,
            default,
            neighbours: config.neighbours.max(1),
            min_similarity: config.min_similarity,
            embedding_model: config.embedding_model.as_deref().map(Arc::from),
            cascade: config.cascade.clone(),
        })
    }

    /// The router's public name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Candidate models, cheapest first.
    pub fn candidates(&self) -> &[Arc<str>] {
        &self.candidates
    }

    /// The price configured for candidate `i` (`None`: use the model's own price).
    pub fn candidate_price(&self, i: usize) -> Option<ModelPrice> {
        self.prices.get(i).copied().flatten()
    }

    /// The embedding model the classifier needs, if the router has one.
    pub fn embedding_model(&self) -> Option<&str> {
        self.embedding_model.as_deref()
    }

    /// The cascade, if configured.
    pub fn cascade(&self) -> Option<&CascadeConfig> {
        self.cascade.as_ref()
    }

    /// Rules, then the hint; [`RouterStep::Classify`] when the classifier should decide.
    pub fn decide(&self, features: &RequestFeatures) -> RouterStep {
        let mut floor: Option<(usize, Arc<str>)> = None;
        for rule in self.rules.iter().filter(|r| r.when.matches(features)) {
            match rule.action {
                RuleAction::Use(i) => {
                    return RouterStep::Decided(self.decision(i, RouterReason::Rule(rule.name.clone())));
                }
                RuleAction::AtLeast(i) if floor.as_ref().is_none_or(|(f, _)| i > *f) => {
                    floor = Some((i, rule.name.clone()));
                }
                RuleAction::AtLeast(_) => {}
            }
        }
        let pending = PendingClassification { floor };
        match features.quality {
            Some(QualityHint::High) => {
                RouterStep::Decided(self.decision(self.candidates.len() - 1, RouterReason::Hint(QualityHint::High)))
            }
            Some(QualityHint::Low) => {
                RouterStep::Decided(self.floored(&pending, 0, RouterReason::Hint(QualityHint::Low)))
            }
            _ if self.embedding_model.is_some() => RouterStep::Classify(pending),
            _ => RouterStep::Decided(self.finish(pending, None)),
        }
    }

    /// Completes a pending decision with the classifier's answer (`None`: no embedding or an empty index).
    /// A class below `min_similarity`, or whose model is not a candidate, leaves the default in charge.
    pub fn finish(&self, pending: PendingClassification, nearest: Option<&NearestClass>) -> RouterDecision {
        let chosen = nearest.filter(|n| n.similarity >= self.min_similarity).and_then(|n| {
            let i = self.candidates.iter().position(|c| *c == n.model)?;
            Some((i, RouterReason::Nearest { class: n.class.clone(), similarity: n.similarity }))
        });
        let (i, reason) = chosen.unwrap_or((self.default, RouterReason::Default));
        self.floored(&pending, i, reason)
    }

    /// Classifies `embedding` (of [`classifier_text`]) with `index` and completes the decision. A vector the
    /// index cannot compare (wrong dimension, not finite) leaves the default in charge, as an empty index does.
    pub fn classify(&self, pending: PendingClassification, index: &ExampleIndex, embedding: &[f32]) -> RouterDecision {
        let nearest: Result<Option<NearestClass>, EmbeddingError> = index.classify(embedding, self.neighbours);
        self.finish(pending, nearest.ok().flatten().as_ref())
    }

    /// The candidate after `decision`'s when its answer failed `check`, if the cascade allows another step
    /// (`escalations_so_far` already made for this request).
    pub fn escalate(
        &self,
        decision: &RouterDecision,
        check: &Escalation,
        escalations_so_far: u32,
    ) -> Option<RouterDecision> {
        let cascade = self.cascade.as_ref()?;
        if escalations_so_far >= cascade.max_escalations {
            return None;
        }
        let next = decision.candidate + 1;
        let model = self.candidates.get(next)?.clone();
        let reason = RouterReason::Escalated { then: Box::new(decision.reason.clone()), check: check.label() };
        Some(RouterDecision { candidate: next, model, reason })
    }

    /// `i`, raised to the floor if the rules set a higher one.
    fn floored(&self, pending: &PendingClassification, i: usize, reason: RouterReason) -> RouterDecision {
        match &pending.floor {
            Some((floor, rule)) if *floor > i => {
                self.decision(*floor, RouterReason::Floor { then: Box::new(reason), rule: rule.clone() })
            }
            _ => self.decision(i, reason),
        }
    }

    fn decision(&self, candidate: usize, reason: RouterReason) -> RouterDecision {
        RouterDecision { candidate, model: self.candidates[candidate].clone(), reason }
    }
}

/// Whether `s` is safe in a header value and unambiguous in a reason: `[A-Za-z0-9._-]+`.
fn is_label(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn router(config: serde_json::Value) -> SmartRouter {
        let config: RouterConfig = serde_json::from_value(config).unwrap();
        SmartRouter::new(&config, |m| ["mini", "mid", "max", "embed"].contains(&m)).unwrap()
    }

    fn three() -> serde_json::Value {
        json!({
            "name": "auto",
            "candidates": [{"model": "mini"}, {"model": "mid"}, {"model": "max"}],
            "rules": [
                {"name": "long", "when": {"prompt_tokens_above": 30000}, "model": "max"},
                {"name": "images", "when": {"images": true}, "at_least": "mid"},
                {"name": "schema", "when": {"json_schema": true}, "at_least": "mid"},
                {"name": "tools", "when": {"tools": true}, "at_least": "max"}
            ],
            "examples": [{"class": "smalltalk", "model": "mini", "prompts": ["hi"]},
                         {"class": "maths", "model": "max", "prompts": ["prove"]}],
            "embedding_model": "embed",
            "min_similarity": 0.5,
            "cascade": {}
        })
    }

    fn decided(step: RouterStep) -> (String, String) {
        match step {
            RouterStep::Decided(d) => (d.model.to_string(), d.reason.to_string()),
            RouterStep::Classify(_) => ("classify".into(), String::new()),
        }
    }

    fn features() -> RequestFeatures {
        RequestFeatures { prompt_tokens: 100, ..RequestFeatures::default() }
    }

    #[test]
    fn rules_pin_and_floor() {
        let r = router(three());
        let long = RequestFeatures { prompt_tokens: 40_000, images: true, ..features() };
        assert_eq!(decided(r.decide(&long)), ("max".into(), "rule:long".into()), "a pin wins over floors");
        let low_images = RequestFeatures { images: true, quality: Some(QualityHint::Low), ..features() };
        assert_eq!(decided(r.decide(&low_images)), ("mid".into(), "hint:low+floor:images".into()));
        let low_everything = RequestFeatures {
            tools: true,
            json_schema: true,
            json_mode: true,
            quality: Some(QualityHint::Low),
            ..features()
        };
        assert_eq!(
            decided(r.decide(&low_everything)),
            ("max".into(), "hint:low+floor:tools".into()),
            "the highest floor holds"
        );
        let low = RequestFeatures { quality: Some(QualityHint::Low), ..features() };
        assert_eq!(decided(r.decide(&low)), ("mini".into(), "hint:low".into()));
        let high = RequestFeatures { quality: Some(QualityHint::High), ..features() };
        assert_eq!(decided(r.decide(&high)), ("max".into(), "hint:high".into()));
        let standard = RequestFeatures { quality: Some(QualityHint::Standard), ..features() };
        assert_eq!(decided(r.decide(&standard)).0, "classify");
    }

    #[test]
    fn the_classifier_decides_above_its_threshold_and_under_the_floor() {
        let r = router(three());
        let mut index = ExampleIndex::new(2);
        index.add("smalltalk", "mini", &[1.0, 0.0]).unwrap();
        index.add("maths", "max", &[0.0, 1.0]).unwrap();
        let RouterStep::Classify(pending) = r.decide(&features()) else { panic!("expected the classifier") };
        let d = r.classify(pending.clone(), &index, &[0.9, 0.1]);
        assert_eq!((&*d.model, d.reason.to_string()), ("mini", "knn:smalltalk".to_owned()));
        let d = r.classify(pending.clone(), &index, &[0.1, 0.9]);
        assert_eq!((&*d.model, d.reason.to_string()), ("max", "knn:maths".to_owned()));
        // Far from every example: the default (the strongest) answers.
        let d = r.classify(pending.clone(), &index, &[-1.0, -1.0]);
        assert_eq!((&*d.model, d.reason.to_string()), ("max", "default".to_owned()));
        // A vector of the wrong size or an empty index: the default, not an error.
        assert_eq!(r.classify(pending.clone(), &index, &[1.0]).reason, RouterReason::Default);
        assert_eq!(r.classify(pending, &ExampleIndex::new(2), &[1.0, 0.0]).reason, RouterReason::Default);
        let images = RequestFeatures { images: true, ..features() };
        let RouterStep::Classify(pending) = r.decide(&images) else { panic!("expected the classifier") };
        let d = r.classify(pending, &index, &[1.0, 0.0]);
        assert_eq!((&*d.model, d.reason.to_string()), ("mid", "knn:smalltalk+floor:images".to_owned()));
    }

    #[test]
    fn without_a_classifier_the_default_answers() {
        let r = router(json!({"name": "auto", "candidates": [{"model": "mini"}, {"model": "max"}]}));
        assert_eq!(decided(r.decide(&features())), ("max".into(), "default".into()));
        let r = router(json!({"name": "auto", "candidates": [{"model": "mini"}, {"model": "max"}], "default": "mini"}));
        assert_eq!(decided(r.decide(&features())), ("mini".into(), "default".into()));
        assert!(r.cascade().is_none());
        assert_eq!(
            r.escalate(
                &RouterDecision { candidate: 0, model: "mini".into(), reason: RouterReason::Default },
                &Escalation::Empty,
                0
            ),
            None
        );
    }

    #[test]
    fn the_cascade_escalates_along_the_candidates_within_its_limit() {
        let r = router(three());
        let first = r.finish(PendingClassification { floor: None }, None);
        let first = RouterDecision { candidate: 0, model: "mini".into(), ..first };
        let second = r.escalate(&first, &Escalation::InvalidJson, 0).unwrap();
        assert_eq!((&*second.model, second.reason.to_string()), ("mid", "default+escalated:invalid_json".to_owned()));
        assert_eq!(r.escalate(&second, &Escalation::Empty, 1), None, "max_escalations = 1");
        let last = RouterDecision { candidate: 2, model: "max".into(), reason: RouterReason::Default };
        assert_eq!(r.escalate(&last, &Escalation::Empty, 0), None, "nothing above the strongest");
    }

    #[test]
    fn configuration_mistakes_are_named() {
        let build = |v: serde_json::Value| {
            let config: RouterConfig = serde_json::from_value(v).unwrap();
            SmartRouter::new(&config, |m| ["mini", "max", "embed"].contains(&m)).map(|_| ()).map_err(|e| e.key)
        };
        let base = |extra: serde_json::Value| {
            let mut v = json!({"name": "auto", "candidates": [{"model": "mini"}, {"model": "max"}]});
            v.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
            v
        };
        assert_eq!(build(base(json!({}))), Ok(()));
        assert_eq!(build(json!({"name": "auto", "candidates": []})), Err("candidates".into()));
        assert_eq!(
            build(json!({"name": "auto", "candidates": [{"model": "gpt-9"}]})),
            Err("candidates[0].model".into())
        );
        assert_eq!(
            build(json!({"name": "auto", "candidates": [{"model": "mini"}, {"model": "mini"}]})),
            Err("candidates[1].model".into())
        );
        assert_eq!(
            build(json!({"name": "auto", "candidates": [{"model": "mini", "price": {"input": "1", "output": "1"}},
                {"model": "max", "price": {"input": "0.1", "output": "0.1"}}]})),
            Err("candidates[1].price".into())
        );
        assert_eq!(build(base(json!({"rules": [{"model": "mid"}]}))), Err("rules[0].model".into()));
        assert_eq!(build(base(json!({"rules": [{"model": "max", "at_least": "max"}]}))), Err("rules[0]".into()));
        assert_eq!(build(base(json!({"rules": [{}]}))), Err("rules[0]".into()));
        assert_eq!(build(base(json!({"rules": [{"name": "two words", "model": "max"}]}))), Err("rules[0].name".into()));
        assert_eq!(
            build(base(json!({"examples": [{"class": "a", "model": "max", "prompts": []}]}))),
            Err("embedding_model".into())
        );
        assert_eq!(build(base(json!({"embedding_model": "nope"}))), Err("embedding_model".into()));
        assert_eq!(build(base(json!({"default": "mid"}))), Err("default".into()));
        assert_eq!(build(base(json!({"min_similarity": 2.0}))), Err("min_similarity".into()));
        let unknown: Result<RouterConfig, _> = serde_json::from_value(base(json!({"candidate": []})));
        assert!(unknown.is_err(), "unknown keys are refused");
    }

    #[test]
    fn the_config_reads_from_toml_shaped_data() {
        let config: RouterConfig = serde_json::from_value(three()).unwrap();
        assert_eq!(config.neighbours, 5);
        assert_eq!(config.cascade, Some(CascadeConfig::default()));
        assert_eq!(config.rules[0].when.prompt_tokens_above, Some(30_000));
        let back: RouterConfig = serde_json::from_value(serde_json::to_value(&config).unwrap()).unwrap();
        assert_eq!(back, config);
    }
}
