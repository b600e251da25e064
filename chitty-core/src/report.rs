//! The cost report over the gateway's JSON-lines request log (`chitty-report`): spend, cache hit rate and
//! tokens per tenant and model, and the requests a cheaper candidate of a smart router would have served.
//! Pure: the caller reads the log and the configuration and hands in lines.
//!
//! The log line does not carry the prompt, so of the router's [`RequestFeatures`] only the prompt token
//! count is known (the upstream's reported count; the live router uses the gateway's bound, which is never
//! below it). Rules whose condition names tools, JSON mode, a JSON schema, images or the quality hint cannot
//! be evaluated and **do not fire**; the hint stage is skipped (no hint), and a router with a classifier
//! (`embedding_model`) leaves every request its rules do not decide unknown, so none of those is counted.
//!
//! ```
//! use chitty_core::report::{CostReport, ReportFilter, SavingsEstimator};
//! use chitty_core::router::RouterConfig;
//! use chitty_core::ModelPrice;
//!
//! let router: RouterConfig = serde_json::from_value(serde_json::json!({
//!     "name": "auto",
//!     "candidates": [{"model": "small"}, {"model": "large"}],
//!     "rules": [{"name": "short", "when": {"prompt_tokens_at_most": 1000}, "model": "small"}],
//! }))?;
//! let price = |m: &str| match m {
//!     "small" => Some(ModelPrice::from_micros_per_mtok(150_000, 600_000)),
//!     "large" => Some(ModelPrice::from_micros_per_mtok(2_500_000, 10_000_000)),
//!     _ => None,
//! };
//! let estimator = SavingsEstimator::new(&router, price)?;
//! let mut report = CostReport::new(ReportFilter::default(), Some(estimator));
//! report.add_line(r#"{"kind":"request","at_ms":1,"tenant":"acme","model":"large","endpoint":"chat.completions",
//!     "status":200,"cache":"miss","prompt_tokens":100,"completion_tokens":10,"cost_nano_usd":350000,"stream":false}"#);
//! let summary = report.summary();
//! assert_eq!(summary.total.savings.requests, 1);
//! // 100 × $0.15/M + 10 × $0.60/M = 21,000 nano-USD instead of 350,000 on large.
//! assert_eq!(summary.total.savings.saving_nano_usd, 329_000);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::gateway::ConfigIssue;
use crate::money::{ModelPrice, NanoUsd};
use crate::router::{RequestFeatures, RouterConfig, RouterStep, RuleCondition, SmartRouter};
use crate::time::Timestamp;

/// The fields of one `"kind": "request"` line of the request log that the report reads (others are ignored).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct LoggedRequest {
    /// When it finished, in milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// Tenant identifier.
    pub tenant: String,
    /// Public model name requested.
    pub model: String,
    /// `chat.completions`, `completions` or `embeddings`.
    pub endpoint: String,
    /// HTTP status returned to the client.
    pub status: u16,
    /// `hit`, `miss`, `bypass` or `semantic`.
    pub cache: String,
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Completion tokens.
    pub completion_tokens: u64,
    /// Cost charged to the tenant, nano-USD.
    pub cost_nano_usd: u64,
    /// Whether the answer was streamed.
    #[serde(default)]
    pub stream: bool,
}

/// What one line of the log turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogLine {
    /// A finished request.
    Request(LoggedRequest),
    /// Another event (fallback, circuit change, …), or an empty line.
    Other,
    /// Not a JSON object, or a request line missing a field: the reason.
    Malformed(String),
}

impl LogLine {
    /// Parses one line of the log. Never panics.
    pub fn parse(line: &str) -> LogLine {
        if line.trim().is_empty() {
            return LogLine::Other;
        }
        let value: serde_json::Value = match serde_json::from_str(line) {
            Ok(v) => v,
            Err(e) => return LogLine::Malformed(e.to_string()),
        };
        match value.get("kind").and_then(|k| k.as_str()) {
            Some("request") => match LoggedRequest::deserialize(&value) {
                Ok(r) => LogLine::Request(r),
                Err(e) => LogLine::Malformed(e.to_string()),
            },
            Some(_) => LogLine::Other,
            None => LogLine::Malformed("no `kind` field".into()),
        }
    }
}

/// Which requests count: finished in `[since, until)` and, when set, of one tenant.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReportFilter {
    /// Earliest finish time counted (inclusive).
    pub since: Option<Timestamp>,
    /// Finish time from which requests are no longer counted (exclusive).
    pub until: Option<Timestamp>,
    /// The only tenant counted.
    pub tenant: Option<String>,
}

impl ReportFilter {
    /// Whether `r` is counted.
    pub fn admits(&self, r: &LoggedRequest) -> bool {
        self.since.is_none_or(|s| r.at_ms >= s.0)
            && self.until.is_none_or(|u| r.at_ms < u.0)
            && self.tenant.as_ref().is_none_or(|t| *t == r.tenant)
    }
}

/// A request a cheaper candidate would have served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Saving {
    /// The cheaper candidate.
    pub to_model: Arc<str>,
    /// The router's reason (`rule:<name>`, `default`, `<…>+floor:<rule>`).
    pub reason: String,
    /// The request's tokens priced at the cheaper candidate's price.
    pub repriced: NanoUsd,
    /// Logged cost minus `repriced` (zero when the cheaper price is not lower for these tokens).
    pub saving: NanoUsd,
}

/// The smart router's rules as far as the log can evaluate them, with each candidate's price.
#[derive(Debug, Clone)]
pub struct SavingsEstimator {
    router: SmartRouter,
    prices: Vec<ModelPrice>,
    evaluated_rules: Vec<String>,
    unevaluated_rules: Vec<String>,
    classifier: bool,
}

/// Whether a rule's condition uses only what the log carries (the prompt token bounds).
fn evaluable(when: &RuleCondition) -> bool {
    when.tools.is_none()
        && when.json.is_none()
        && when.json_schema.is_none()
        && when.images.is_none()
        && when.quality.is_none()
}

impl SavingsEstimator {
    /// Builds the estimator from a router and the configured models' prices (`price(model)`: `None` for a
    /// model that is not configured). A candidate's own `price` in the router wins over its model's price.
    pub fn new(
        config: &RouterConfig,
        price: impl Fn(&str) -> Option<ModelPrice>,
    ) -> Result<SavingsEstimator, ConfigIssue> {
        // Checked against the full configuration first, so a mistake in a rule we skip is still reported.
        SmartRouter::new(config, |m| price(m).is_some())?;
        let rule_name = |i: usize, r: &crate::router::RuleConfig| r.name.clone().unwrap_or(format!("rule-{i}"));
        let mut evaluated_rules = Vec::new();
        let mut unevaluated_rules = Vec::new();
        let mut kept = config.clone();
        kept.rules.clear();
        for (i, r) in config.rules.iter().enumerate() {
            let mut r = r.clone();
            let name = rule_name(i, &r);
            if evaluable(&r.when) {
                // Named explicitly so that reasons keep the original position's default name.
                r.name = Some(name.clone());
                evaluated_rules.push(name);
                kept.rules.push(r);
            } else {
                unevaluated_rules.push(name);
            }
        }
        let router = SmartRouter::new(&kept, |m| price(m).is_some())?;
        let mut prices = Vec::with_capacity(config.candidates.len());
        for (i, c) in config.candidates.iter().enumerate() {
            let p = c.price.or_else(|| price(&c.model)).ok_or_else(|| ConfigIssue {
                key: format!("candidates[{i}].model"),
                reason: format!("unknown model `{}`", c.model),
            })?;
            prices.push(p);
        }
        Ok(SavingsEstimator {
            router,
            prices,
            evaluated_rules,
            unevaluated_rules,
            classifier: config.embedding_model.is_some(),
        })
    }

    /// The router's candidates, cheapest first.
    pub fn candidates(&self) -> &[Arc<str>] {
        self.router.candidates()
    }

    /// The router's public name.
    pub fn name(&self) -> &str {
        self.router.name()
    }

    /// Rules evaluated from the log (prompt token bounds only).
    pub fn evaluated_rules(&self) -> &[String] {
        &self.evaluated_rules
    }

    /// Rules that need what the log does not carry (tools, JSON mode, images, the hint): they never fire.
    pub fn unevaluated_rules(&self) -> &[String] {
        &self.unevaluated_rules
    }

    /// Whether the router has a classifier (whose decisions the log cannot reproduce).
    pub fn has_classifier(&self) -> bool {
        self.classifier
    }

    /// The cheaper candidate that would have served `r`, if any: a successful chat request that was not a
    /// cache hit, logged on one of the router's candidates, for which the rules pick a cheaper one.
    pub fn estimate(&self, r: &LoggedRequest) -> Option<Saving> {
        if r.endpoint != "chat.completions"
            || !(200..300).contains(&r.status)
            || matches!(r.cache.as_str(), "hit" | "semantic")
        {
            return None;
        }
        let served = self.router.candidates().iter().position(|c| **c == *r.model)?;
        let features = RequestFeatures { prompt_tokens: r.prompt_tokens, ..RequestFeatures::default() };
        let RouterStep::Decided(decision) = self.router.decide(&features) else {
            // The classifier would decide: unknown from the log, so not counted.
            return None;
        };
        if decision.candidate >= served {
            return None;
        }
        let repriced = self.prices.get(decision.candidate)?.cost(r.prompt_tokens, r.completion_tokens);
        Some(Saving {
            to_model: decision.model,
            reason: decision.reason.to_string(),
            repriced,
            saving: NanoUsd(r.cost_nano_usd).saturating_sub(repriced),
        })
    }
}

/// Requests that would change model, and what that would save.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SavingsTotals {
    /// Requests a cheaper candidate would have served.
    pub requests: u64,
    /// `requests` over all requests counted in the same row (0 when there are none).
    pub share: f64,
    /// What those requests cost as logged, nano-USD.
    pub logged_nano_usd: u64,
    /// What they would have cost on the cheaper candidates, nano-USD.
    pub repriced_nano_usd: u64,
    /// The estimated saving, nano-USD.
    pub saving_nano_usd: u64,
    /// The saving in USD, exact, as a decimal string (`"0.000329000"`).
    pub saving_usd: String,
    /// Requests per cheaper candidate.
    pub to_models: BTreeMap<String, u64>,
}

/// Totals of a row, a tenant or the whole log.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Totals {
    /// Requests counted (every status).
    pub requests: u64,
    /// Requests answered with status 400 or above.
    pub errors: u64,
    /// Spend, nano-USD (the logged `cost_nano_usd`, summed).
    pub spend_nano_usd: u64,
    /// Spend in USD, exact, as a decimal string (`"1.250000000"`).
    pub spend_usd: String,
    /// Requests answered from the cache.
    pub cache_hits: u64,
    /// Cache lookups that found nothing.
    pub cache_misses: u64,
    /// Requests that did not look in the cache.
    pub cache_bypass: u64,
    /// `cache_hits / (cache_hits + cache_misses)`; `null` without a lookup.
    pub cache_hit_rate: Option<f64>,
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Completion tokens.
    pub completion_tokens: u64,
    /// The savings candidates.
    pub savings: SavingsTotals,
}

impl Totals {
    fn add(&mut self, r: &LoggedRequest, saving: Option<&Saving>) {
        self.requests += 1;
        self.errors += u64::from(r.status >= 400);
        self.spend_nano_usd = self.spend_nano_usd.saturating_add(r.cost_nano_usd);
        match r.cache.as_str() {
            "hit" | "semantic" => self.cache_hits += 1,
            "miss" => self.cache_misses += 1,
            _ => self.cache_bypass += 1,
        }
        self.prompt_tokens = self.prompt_tokens.saturating_add(r.prompt_tokens);
        self.completion_tokens = self.completion_tokens.saturating_add(r.completion_tokens);
        if let Some(s) = saving {
            let t = &mut self.savings;
            t.requests += 1;
            t.logged_nano_usd = t.logged_nano_usd.saturating_add(r.cost_nano_usd);
            t.repriced_nano_usd = t.repriced_nano_usd.saturating_add(s.repriced.0);
            t.saving_nano_usd = t.saving_nano_usd.saturating_add(s.saving.0);
            *t.to_models.entry(s.to_model.to_string()).or_default() += 1;
        }
    }

    /// Fills the derived fields (decimal strings, rates).
    fn finish(&mut self) {
        self.spend_usd = NanoUsd(self.spend_nano_usd).decimal().to_string();
        let lookups = self.cache_hits + self.cache_misses;
        self.cache_hit_rate = (lookups > 0).then(|| self.cache_hits as f64 / lookups as f64);
        self.savings.saving_usd = NanoUsd(self.savings.saving_nano_usd).decimal().to_string();
        self.savings.share = if self.requests == 0 { 0.0 } else { self.savings.requests as f64 / self.requests as f64 };
    }
}

/// One tenant and model.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelRow {
    /// Tenant identifier.
    pub tenant: String,
    /// Public model name.
    pub model: String,
    /// Its totals.
    #[serde(flatten)]
    pub totals: Totals,
}

/// One tenant, all models.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TenantRow {
    /// Tenant identifier.
    pub tenant: String,
    /// Its totals.
    #[serde(flatten)]
    pub totals: Totals,
}

/// How the log's lines were used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct LineCounts {
    /// Lines read.
    pub read: u64,
    /// Request lines counted.
    pub requests: u64,
    /// Request lines left out by `--since`, `--until` or `--tenant`.
    pub filtered_out: u64,
    /// Other events and empty lines, ignored.
    pub other: u64,
    /// Lines that did not parse.
    pub skipped: u64,
}

/// The router the savings were estimated against.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RouterSummary {
    /// The router's public name.
    pub name: String,
    /// Candidates, cheapest first.
    pub candidates: Vec<String>,
    /// Rules evaluated from the log.
    pub evaluated_rules: Vec<String>,
    /// Rules that need what the log does not carry; they never fire in the estimate.
    pub unevaluated_rules: Vec<String>,
    /// Whether the router has a classifier (requests it would decide are not counted).
    pub classifier: bool,
}

/// The finished report: what `--json` prints.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReportSummary {
    /// How the log's lines were used.
    pub lines: LineCounts,
    /// The first few malformed lines: `(line number, reason)`.
    pub first_skipped: Vec<SkippedLine>,
    /// The router, when savings were estimated.
    pub router: Option<RouterSummary>,
    /// Per tenant and model, sorted by tenant then model.
    pub rows: Vec<ModelRow>,
    /// Per tenant, sorted.
    pub tenants: Vec<TenantRow>,
    /// Everything counted.
    pub total: Totals,
}

/// A line that did not parse.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SkippedLine {
    /// 1-based line number.
    pub line: u64,
    /// Why.
    pub reason: String,
}

/// How many malformed lines the summary names (the count covers all of them).
pub const SKIPPED_SHOWN: usize = 5;

/// Accumulates the report line by line.
#[derive(Debug, Clone)]
pub struct CostReport {
    filter: ReportFilter,
    estimator: Option<SavingsEstimator>,
    lines: LineCounts,
    first_skipped: Vec<SkippedLine>,
    rows: BTreeMap<(String, String), Totals>,
}

impl CostReport {
    /// An empty report; savings are estimated when `estimator` is given.
    pub fn new(filter: ReportFilter, estimator: Option<SavingsEstimator>) -> CostReport {
        CostReport { filter, estimator, lines: LineCounts::default(), first_skipped: Vec::new(), rows: BTreeMap::new() }
    }

    /// Reads one line of the log.
    pub fn add_line(&mut self, line: &str) {
        self.lines.read += 1;
        match LogLine::parse(line) {
            LogLine::Request(r) => self.add_request(&r),
            LogLine::Other => self.lines.other += 1,
            LogLine::Malformed(reason) => self.skip(reason),
        }
    }

    /// Counts a line that could not even be read as text (invalid UTF-8, say).
    pub fn add_unreadable_line(&mut self, reason: String) {
        self.lines.read += 1;
        self.skip(reason);
    }

    fn skip(&mut self, reason: String) {
        self.lines.skipped += 1;
        if self.first_skipped.len() < SKIPPED_SHOWN {
            self.first_skipped.push(SkippedLine { line: self.lines.read, reason });
        }
    }

    /// Counts one request (if the filter admits it).
    pub fn add_request(&mut self, r: &LoggedRequest) {
        if !self.filter.admits(r) {
            self.lines.filtered_out += 1;
            return;
        }
        self.lines.requests += 1;
        let saving = self.estimator.as_ref().and_then(|e| e.estimate(r));
        self.rows.entry((r.tenant.clone(), r.model.clone())).or_default().add(r, saving.as_ref());
    }

    /// The report so far.
    pub fn summary(&self) -> ReportSummary {
        let mut tenants: BTreeMap<&str, Totals> = BTreeMap::new();
        let mut total = Totals::default();
        for ((tenant, _), row) in &self.rows {
            for t in [tenants.entry(tenant).or_default(), &mut total] {
                merge(t, row);
            }
        }
        let finish = |mut t: Totals| {
            t.finish();
            t
        };
        ReportSummary {
            lines: self.lines,
            first_skipped: self.first_skipped.clone(),
            router: self.estimator.as_ref().map(|e| RouterSummary {
                name: e.name().to_owned(),
                candidates: e.candidates().iter().map(|c| c.to_string()).collect(),
                evaluated_rules: e.evaluated_rules().to_vec(),
                unevaluated_rules: e.unevaluated_rules().to_vec(),
                classifier: e.has_classifier(),
            }),
            rows: self
                .rows
                .iter()
                .map(|((tenant, model), t)| ModelRow {
                    tenant: tenant.clone(),
                    model: model.clone(),
                    totals: finish(t.clone()),
                })
                .collect(),
            tenants: tenants
                .into_iter()
                .map(|(tenant, t)| TenantRow { tenant: tenant.to_owned(), totals: finish(t) })
                .collect(),
            total: finish(total),
        }
    }
}

fn merge(into: &mut Totals, row: &Totals) {
    into.requests += row.requests;
    into.errors += row.errors;
    into.spend_nano_usd = into.spend_nano_usd.saturating_add(row.spend_nano_usd);
    into.cache_hits += row.cache_hits;
    into.cache_misses += row.cache_misses;
    into.cache_bypass += row.cache_bypass;
    into.prompt_tokens = into.prompt_tokens.saturating_add(row.prompt_tokens);
    into.completion_tokens = into.completion_tokens.saturating_add(row.completion_tokens);
    let (s, r) = (&mut into.savings, &row.savings);
    s.requests += r.requests;
    s.logged_nano_usd = s.logged_nano_usd.saturating_add(r.logged_nano_usd);
    s.repriced_nano_usd = s.repriced_nano_usd.saturating_add(r.repriced_nano_usd);
    s.saving_nano_usd = s.saving_nano_usd.saturating_add(r.saving_nano_usd);
    for (m, n) in &r.to_models {
        *s.to_models.entry(m.clone()).or_default() += n;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::json;

    use super::*;

    fn prices(m: &str) -> Option<ModelPrice> {
        match m {
            "small" => Some(ModelPrice::from_micros_per_mtok(1_000_000, 2_000_000)),
            "large" => Some(ModelPrice::from_micros_per_mtok(10_000_000, 20_000_000)),
            _ => None,
        }
    }

    fn estimator(rules: serde_json::Value) -> SavingsEstimator {
        let config: RouterConfig = serde_json::from_value(json!({
            "name": "auto",
            "candidates": [{"model": "small"}, {"model": "large"}],
            "rules": rules,
        }))
        .unwrap();
        SavingsEstimator::new(&config, prices).unwrap()
    }

    fn request(prompt: u64) -> LoggedRequest {
        LoggedRequest {
            at_ms: 10,
            tenant: "t".into(),
            model: "large".into(),
            endpoint: "chat.completions".into(),
            status: 200,
            cache: "miss".into(),
            prompt_tokens: prompt,
            completion_tokens: 10,
            cost_nano_usd: prices("large").unwrap().cost(prompt, 10).0,
            stream: false,
        }
    }

    #[test]
    fn a_prompt_bound_rule_moves_short_requests_and_reprices_them() {
        let e = estimator(json!([{"name": "short", "when": {"prompt_tokens_at_most": 500}, "model": "small"}]));
        let s = e.estimate(&request(100)).unwrap();
        assert_eq!((&*s.to_model, s.reason.as_str()), ("small", "rule:short"));
        assert_eq!(s.repriced, NanoUsd(100 * 1_000 + 10 * 2_000));
        assert_eq!(s.saving, NanoUsd(100 * 10_000 + 10 * 20_000 - 120_000));
        // The default is the strongest candidate: a long prompt stays.
        assert_eq!(e.estimate(&request(501)), None);
    }

    #[test]
    fn rules_the_log_cannot_evaluate_never_fire() {
        let e = estimator(json!([
            {"name": "json", "when": {"json": true}, "model": "small"},
            {"name": "hint", "when": {"quality": "low"}, "model": "small"},
        ]));
        assert_eq!(e.unevaluated_rules(), ["json", "hint"]);
        assert_eq!(e.estimate(&request(10)), None);
    }

    #[test]
    fn failures_hits_and_other_endpoints_are_not_candidates() {
        let e = estimator(json!([{"when": {"prompt_tokens_at_most": 500}, "model": "small"}]));
        assert_eq!(e.estimate(&request(10)).unwrap().reason, "rule:rule-0");
        for change in [
            |r: &mut LoggedRequest| r.status = 429,
            |r: &mut LoggedRequest| r.cache = "hit".into(),
            |r: &mut LoggedRequest| r.endpoint = "embeddings".into(),
            |r: &mut LoggedRequest| r.model = "small".into(),
            |r: &mut LoggedRequest| r.model = "elsewhere".into(),
        ] {
            let mut r = request(10);
            change(&mut r);
            assert_eq!(e.estimate(&r), None, "{r:?}");
        }
    }

    #[test]
    fn a_classifier_leaves_undecided_requests_unknown() {
        let config: RouterConfig = serde_json::from_value(json!({
            "name": "auto", "candidates": [{"model": "small"}, {"model": "large"}],
            "embedding_model": "small", "default": "small",
        }))
        .unwrap();
        let e = SavingsEstimator::new(&config, prices).unwrap();
        assert!(e.has_classifier());
        assert_eq!(e.estimate(&request(10)), None);
    }

    #[test]
    fn lines_are_parsed_without_panicking() {
        assert!(matches!(LogLine::parse("{not json"), LogLine::Malformed(_)));
        assert!(matches!(LogLine::parse(r#"{"kind":"request","tenant":"t"}"#), LogLine::Malformed(_)));
        assert!(matches!(LogLine::parse(r#"[1]"#), LogLine::Malformed(_)));
        assert_eq!(LogLine::parse(r#"{"kind":"fallback","model":"m"}"#), LogLine::Other);
        assert_eq!(LogLine::parse("   "), LogLine::Other);
    }

    #[test]
    fn totals_roll_up_per_tenant_and_filter() {
        let filter = ReportFilter { since: Some(Timestamp(5)), until: Some(Timestamp(20)), tenant: None };
        let mut report = CostReport::new(filter, None);
        let mut r = request(100);
        report.add_request(&r);
        r.cache = "hit".into();
        r.cost_nano_usd = 0;
        report.add_request(&r);
        r.at_ms = 20;
        report.add_request(&r);
        report.add_line("garbage");
        let s = report.summary();
        assert_eq!((s.lines.requests, s.lines.filtered_out, s.lines.skipped), (2, 1, 1));
        assert_eq!(s.first_skipped[0].line, 1);
        assert_eq!(s.tenants[0].totals.cache_hit_rate, Some(0.5));
        assert_eq!(s.total.spend_nano_usd, prices("large").unwrap().cost(100, 10).0);
        assert_eq!(s.total.spend_usd, "0.001200000");
    }
}
