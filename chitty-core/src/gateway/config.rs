//! Gateway configuration: models, routes, prices, cache policy, tenants, routing defaults.
//!
//! Plain data with serde, so hosts can load it from any format (chitty-providers reads TOML).

use std::collections::HashSet;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::keys::CachePolicy;
use crate::money::{ModelPrice, NanoUsd};

/// Everything the gateway decides with.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// Public models.
    #[serde(default)]
    pub models: Vec<ModelConfig>,
    /// Models resolved by name prefix (`openai/gpt-4o` → provider `openai`, upstream model `gpt-4o`).
    #[serde(default)]
    pub prefixes: Vec<PrefixConfig>,
    /// Tenants and their keys.
    #[serde(default)]
    pub tenants: Vec<TenantConfig>,
    /// Routing, retry, cache and budget defaults.
    #[serde(default)]
    pub defaults: Defaults,
    /// `[[routers]]`: virtual models that pick one of their candidate models per request (see
    /// [`crate::router`]).
    #[serde(default)]
    pub routers: Vec<crate::router::RouterConfig>,
}

/// What a public model is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    /// Chat and legacy completions.
    #[default]
    Chat,
    /// Embeddings.
    Embedding,
}

/// Which request field carries the output cap the gateway sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputCapField {
    /// `max_tokens` (understood by every OpenAI-compatible server).
    #[default]
    MaxTokens,
    /// `max_completion_tokens` (required by OpenAI's reasoning models).
    MaxCompletionTokens,
}

/// One upstream that can serve a public model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Provider name, as registered with the gateway builder.
    pub provider: String,
    /// Model name the provider knows.
    pub model: String,
    /// Share of traffic within its group under `balance = "weighted"` (default 1; 0 takes none but is still
    /// tried last in its group).
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Fallback group: a model's routes are tried group by group, lowest first, so a group that is down falls
    /// back to the next (default 0: one group). Under `balance = "ordered"` routes are tried as listed.
    #[serde(default)]
    pub group: u32,
}

fn default_weight() -> u32 {
    1
}

impl RouteConfig {
    /// A route to `model` on `provider`, weight 1, group 0.
    pub fn new(provider: impl Into<String>, model: impl Into<String>) -> RouteConfig {
        RouteConfig { provider: provider.into(), model: model.into(), weight: 1, group: 0 }
    }
}

/// A public model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Name clients use.
    pub name: String,
    /// Chat or embedding.
    #[serde(default)]
    pub kind: ModelKind,
    /// Primary route first, then fallbacks in order.
    pub routes: Vec<RouteConfig>,
    /// How a request picks among the routes of one group: `ordered` (as listed, the default), `weighted`
    /// (random by `weight`) or `least_outstanding` (fewest requests in flight).
    #[serde(default)]
    pub balance: crate::balance::BalancePolicy,
    /// Prices.
    #[serde(default)]
    pub price: ModelPrice,
    /// Cache policy.
    #[serde(default)]
    pub cache: CachePolicy,
    /// Cache TTL in seconds (the default's when unset).
    #[serde(default)]
    pub cache_ttl_secs: Option<u64>,
    /// Most output tokens the model can produce: the cap used when a client sends none
    /// ([`DEFAULT_MAX_OUTPUT_TOKENS`] when unset).
    #[serde(default = "default_max_output_tokens")]
    pub max_output_tokens: u32,
    /// Which field carries a cap the gateway sets.
    #[serde(default)]
    pub output_cap_field: OutputCapField,
    /// Bounds on request sizes that upstreams turn into work (`n`, `best_of`, `dimensions`, …).
    #[serde(default)]
    pub limits: RequestLimits,
    /// When a streamed chat answer breaks after its first token, ask the next deployment to continue it (the
    /// text so far sent as a trailing assistant message) and keep streaming as one answer (`docs/resilience.md`).
    #[serde(default)]
    pub continue_streams: bool,
    /// This model's total deadline per request, milliseconds ([`Defaults::deadline_ms`] when unset).
    #[serde(default)]
    pub deadline_ms: Option<u64>,
    /// With `cache = "semantic"`: least cosine similarity between two prompts' embeddings for one to be
    /// answered with the other's answer.
    #[serde(default = "default_semantic_threshold")]
    pub semantic_threshold: f32,
    /// With `cache = "semantic"`: the configured embedding model that embeds prompts, called through the
    /// gateway (the tenant's budget and rate limits apply).
    #[serde(default)]
    pub semantic_embedding_model: Option<String>,
    /// With `cache = "semantic"`: requests sampling above this temperature are not answered from it (an unset
    /// temperature counts as OpenAI's default, 1).
    #[serde(default = "default_semantic_max_temperature")]
    pub semantic_max_temperature: f64,
    /// With `cache = "semantic"`: most prompts kept per tenant (least recently used go first).
    #[serde(default = "default_semantic_max_entries")]
    pub semantic_max_entries: usize,
}

/// The similarity a semantic cache answers at when the model sets none.
pub const DEFAULT_SEMANTIC_THRESHOLD: f32 = 0.95;

fn default_semantic_threshold() -> f32 {
    DEFAULT_SEMANTIC_THRESHOLD
}

fn default_semantic_max_temperature() -> f64 {
    1.0
}

/// Prompts a semantic cache keeps per tenant when the model sets no bound: 62 MB per tenant and model at
/// 1,536 dimensions. Lookups past 2,000 prompts per partition go through an HNSW graph (0.1–0.2 ms at 10,000,
/// under 1 ms at 100,000: `benches/routing.rs`, docs/benchmarks.md), so a higher bound is fast; its cost is
/// memory (100,000: 614 MB per tenant and model).
pub const DEFAULT_SEMANTIC_MAX_ENTRIES: usize = 10_000;

fn default_semantic_max_entries() -> usize {
    DEFAULT_SEMANTIC_MAX_ENTRIES
}

/// The output cap of a model or prefix family whose configuration sets none.
pub const DEFAULT_MAX_OUTPUT_TOKENS: u32 = 4_096;

fn default_max_output_tokens() -> u32 {
    DEFAULT_MAX_OUTPUT_TOKENS
}

impl ModelConfig {
    /// A chat model named `name` with no routes yet and default settings.
    pub fn new(name: impl Into<String>) -> ModelConfig {
        ModelConfig {
            name: name.into(),
            kind: ModelKind::Chat,
            routes: Vec::new(),
            balance: Default::default(),
            price: Default::default(),
            cache: Default::default(),
            cache_ttl_secs: None,
            max_output_tokens: DEFAULT_MAX_OUTPUT_TOKENS,
            output_cap_field: OutputCapField::MaxTokens,
            limits: RequestLimits::default(),
            continue_streams: false,
            deadline_ms: None,
            semantic_threshold: DEFAULT_SEMANTIC_THRESHOLD,
            semantic_embedding_model: None,
            semantic_max_temperature: 1.0,
            semantic_max_entries: DEFAULT_SEMANTIC_MAX_ENTRIES,
        }
    }
}

/// Bounds on what a client may ask one upstream call to generate, per model: a request over any of them is
/// refused with a 400 naming the parameter, before anything is reserved or sent.
///
/// The defaults are the OpenAI API's own limits, and for `dimensions` twice the widest embedding models
/// serve today; lower them for upstreams whose limits are smaller, or to keep single requests cheap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RequestLimits {
    /// Most choices per prompt (`n`).
    pub n: u32,
    /// Most candidates per prompt (`best_of`, legacy completions; vLLM also reads it on chat). Every candidate
    /// is generated and billed, so the reservation covers `max(n, best_of)` of them.
    pub best_of: u32,
    /// Most top log-probabilities per token (`top_logprobs` on chat, `logprobs` on legacy completions).
    pub top_logprobs: u32,
    /// Most embedding dimensions (`dimensions`).
    pub dimensions: u32,
    /// Most items in one request's `input` (embeddings) or `prompt` array (legacy completions).
    pub inputs: u32,
    /// Most outputs one request may have generated: the larger of `n` and `best_of`, times the prompts.
    pub generations: u32,
}

impl Default for RequestLimits {
    fn default() -> Self {
        RequestLimits { n: 128, best_of: 20, top_logprobs: 20, dimensions: 8_192, inputs: 2_048, generations: 2_048 }
    }
}

/// A family of models resolved by prefix: any name `<prefix><upstream>` routes to `provider` as `<upstream>`.
///
/// Tenants allow a family with the entry `<prefix>*` in `allowed_models`. Prefix models are not listed by
/// `/v1/models` (they cannot be enumerated) and serve every endpoint the provider supports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrefixConfig {
    /// The prefix, e.g. `openai/`.
    pub prefix: String,
    /// Provider name.
    pub provider: String,
    /// Prices charged for every model of the family.
    #[serde(default)]
    pub price: ModelPrice,
    /// Cache policy.
    #[serde(default)]
    pub cache: CachePolicy,
    /// Most output tokens; the cap when a client sends none ([`DEFAULT_MAX_OUTPUT_TOKENS`] when unset).
    #[serde(default = "default_max_output_tokens")]
    pub max_output_tokens: u32,
    /// Which field carries a cap the gateway sets.
    #[serde(default)]
    pub output_cap_field: OutputCapField,
    /// Bounds on request sizes for every model of the family.
    #[serde(default)]
    pub limits: RequestLimits,
}

/// A tenant.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    /// Stable identifier (in metrics, budgets, cache scopes).
    pub id: String,
    /// SHA-256 of each API key, lower-case hex. Plain keys never live in configuration.
    pub key_sha256: Vec<String>,
    /// Spend limit in nano-USD; no budget enforcement when unset.
    #[serde(default)]
    pub budget_nano_usd: Option<NanoUsd>,
    /// Public models the tenant may use; every model when unset.
    #[serde(default)]
    pub allowed_models: Option<Vec<String>>,
    /// Requests per minute; unlimited when unset.
    #[serde(default)]
    pub requests_per_minute: Option<u32>,
    /// Tokens per minute (prompt plus output cap at admission, corrected at settlement); unlimited when unset.
    #[serde(default)]
    pub tokens_per_minute: Option<u32>,
    /// Burst above the steady rate (defaults to the per-minute rate / 6, at least 1).
    #[serde(default)]
    pub burst: Option<u32>,
    /// Share cache entries with every tenant naming the same group; tenant-private when unset.
    #[serde(default)]
    pub cache_group: Option<String>,
}

impl TenantConfig {
    /// A tenant with one key digest, no budget, no rate limit and access to every model.
    pub fn new(id: impl Into<String>, key_sha256: &str) -> TenantConfig {
        TenantConfig {
            id: id.into(),
            key_sha256: vec![key_sha256.to_owned()],
            budget_nano_usd: None,
            allowed_models: None,
            requests_per_minute: None,
            tokens_per_minute: None,
            burst: None,
            cache_group: None,
        }
    }
}

impl std::fmt::Debug for TenantConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Key digests are not secrets, but they identify keys: print only how many there are.
        f.debug_struct("TenantConfig")
            .field("id", &self.id)
            .field("keys", &self.key_sha256.len())
            .field("budget_nano_usd", &self.budget_nano_usd)
            .field("allowed_models", &self.allowed_models)
            .field("requests_per_minute", &self.requests_per_minute)
            .field("cache_group", &self.cache_group)
            .finish()
    }
}

/// Routing, retry, cache and budget defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Defaults {
    /// Per-attempt upstream timeout, milliseconds (to the first byte for streams).
    pub timeout_ms: u64,
    /// Attempts per route before moving to the next route.
    pub attempts_per_route: u32,
    /// Bound of the first retry's backoff, milliseconds; the bound doubles per retry and each wait is drawn
    /// uniformly below it (full jitter), so replicas retrying one failing provider do not retry in step.
    pub backoff_base_ms: u64,
    /// Largest backoff bound (and longest `Retry-After` honoured), milliseconds.
    pub backoff_max_ms: u64,
    /// Consecutive failures that open a route's circuit.
    pub breaker_failures: u32,
    /// How long an open circuit stays open before one probe is let through, milliseconds.
    pub breaker_open_ms: u64,
    /// Cache TTL, seconds.
    pub cache_ttl_secs: u64,
    /// Budget reservation lease, seconds: longer than the longest request, so live requests keep it.
    pub lease_secs: u64,
    /// Fewest output tokens worth calling a provider for; a budget that cannot pay this is exhausted.
    pub min_output_tokens: u32,
    /// Retries each deployment may take: `percent` of its requests over `window_secs`, plus `min_per_sec`
    /// per second of window. A refused retry moves on to the next route.
    pub retry_budget: crate::retry::RetryBudgetConfig,
    /// Total deadline per request, milliseconds: no attempt, retry or fallback starts past it, and each
    /// attempt's timeout is shortened to what is left (for streams it bounds the wait for the first chunk).
    pub deadline_ms: u64,
}

impl Default for Defaults {
    fn default() -> Self {
        Defaults {
            timeout_ms: 60_000,
            attempts_per_route: 2,
            backoff_base_ms: 100,
            backoff_max_ms: 5_000,
            breaker_failures: 5,
            breaker_open_ms: 30_000,
            cache_ttl_secs: 3_600,
            lease_secs: 900,
            min_output_tokens: 16,
            retry_budget: crate::retry::RetryBudgetConfig::default(),
            deadline_ms: 120_000,
        }
    }
}

impl Defaults {
    /// Per-attempt timeout.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    /// Total deadline per request.
    pub fn deadline(&self) -> Duration {
        Duration::from_millis(self.deadline_ms)
    }

    /// The backoff before retry number `retry` (0-based): full jitter below the doubling bound, drawn by `random`.
    pub fn backoff(&self, retry: u32, random: u64) -> Duration {
        let (base, cap) = (Duration::from_millis(self.backoff_base_ms), Duration::from_millis(self.backoff_max_ms));
        crate::upstream::full_jitter_backoff(base, cap, retry, random)
    }
}

impl Defaults {
    /// The checks on the defaults: a deadline and a retry budget window that can hold anything.
    fn validate(&self) -> Result<(), ConfigIssue> {
        if self.deadline_ms == 0 {
            return Err(issue("defaults.deadline_ms", "must be at least 1"));
        }
        let window = self.retry_budget.window_secs;
        if !(1..=3_600).contains(&window) {
            return Err(issue(
                "defaults.retry_budget.window_secs",
                format!("must be 1 to 3600 seconds (got {window})"),
            ));
        }
        Ok(())
    }
}

/// A configuration mistake, naming the key where it is (`models[2].routes[0].provider`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {reason}")]
pub struct ConfigIssue {
    /// Where: the key path, as a TOML or JSON file would spell it.
    pub key: String,
    /// What is wrong.
    pub reason: String,
}

fn issue(key: impl Into<String>, reason: impl Into<String>) -> ConfigIssue {
    ConfigIssue { key: key.into(), reason: reason.into() }
}

impl GatewayConfig {
    /// Checks everything serde cannot: routes to known `providers`, names defined once, well-formed key
    /// digests used by one tenant each, allow-lists naming configured models. The one set of rules: the
    /// builder runs it, and so does the TOML loader, to report a mistake at load time.
    pub fn validate(&self, providers: &[&str]) -> Result<(), ConfigIssue> {
        let known = |p: &str| providers.contains(&p);
        self.defaults.validate()?;
        let mut names = HashSet::new();
        for (i, m) in self.models.iter().enumerate() {
            if m.routes.is_empty() {
                return Err(issue(
                    format!("models[{i}].routes"),
                    format!("model `{}` needs at least one route", m.name),
                ));
            }
            for (j, r) in m.routes.iter().enumerate() {
                if !known(&r.provider) {
                    return Err(issue(
                        format!("models[{i}].routes[{j}].provider"),
                        format!(
                            "model `{}` routes to unknown provider `{}` (known: {})",
                            m.name,
                            r.provider,
                            providers.join(", ")
                        ),
                    ));
                }
            }
            if m.deadline_ms == Some(0) {
                return Err(issue(format!("models[{i}].deadline_ms"), "must be at least 1 (unset: the default's)"));
            }
            if !names.insert(m.name.as_str()) {
                return Err(issue(format!("models[{i}].name"), format!("model `{}` is defined twice", m.name)));
            }
        }
        for (i, m) in self.models.iter().enumerate() {
            self.validate_semantic(i, m)?;
        }
        for (i, r) in self.routers.iter().enumerate() {
            if names.contains(r.name.as_str()) || self.routers[..i].iter().any(|earlier| earlier.name == r.name) {
                return Err(issue(format!("routers[{i}].name"), format!("`{}` is already a model or router", r.name)));
            }
            let is_model = |name: &str| self.models.iter().any(|m| m.name == name);
            crate::router::SmartRouter::new(r, is_model)
                .map_err(|e| issue(format!("routers[{i}].{}", e.key), e.reason))?;
            let Some(embedding) = &r.embedding_model else { continue };
            if self.models.iter().any(|m| &m.name == embedding && m.kind != ModelKind::Embedding) {
                return Err(issue(
                    format!("routers[{i}].embedding_model"),
                    format!("`{embedding}` is not an embedding model (`kind = \"embedding\"`)"),
                ));
            }
        }
        for (i, p) in self.prefixes.iter().enumerate() {
            if p.prefix.is_empty() {
                return Err(issue(format!("prefixes[{i}].prefix"), "a prefix model family needs a non-empty prefix"));
            }
            if p.cache == CachePolicy::Semantic {
                return Err(issue(
                    format!("prefixes[{i}].cache"),
                    "a prefix family has no semantic cache: configure the model under [[models]]",
                ));
            }
            if !known(&p.provider) {
                return Err(issue(
                    format!("prefixes[{i}].provider"),
                    format!("prefix `{}` routes to unknown provider `{}`", p.prefix, p.provider),
                ));
            }
        }
        let mut tenants = HashSet::new();
        let mut digests = HashSet::new();
        for (i, t) in self.tenants.iter().enumerate() {
            if !tenants.insert(t.id.as_str()) {
                return Err(issue(format!("tenants[{i}].id"), format!("tenant `{}` is defined twice", t.id)));
            }
            if t.key_sha256.is_empty() {
                return Err(issue(format!("tenants[{i}]"), format!("tenant `{}` has no API key digest", t.id)));
            }
            for (j, digest) in t.key_sha256.iter().enumerate() {
                let digest = digest.trim();
                if digest.len() != 64 || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(issue(
                        format!("tenants[{i}].key_sha256[{j}]"),
                        "must be 64 hex characters (a SHA-256 digest)",
                    ));
                }
                if !digests.insert(digest.to_ascii_lowercase()) {
                    return Err(issue(
                        format!("tenants[{i}].key_sha256[{j}]"),
                        format!("tenant `{}` reuses another tenant's key", t.id),
                    ));
                }
            }
            if let Some(allowed) = &t.allowed_models
                && let Some(unknown) = allowed.iter().find(|a| {
                    !names.contains(a.as_str())
                        && !self.routers.iter().any(|r| &r.name == *a)
                        && !a.strip_suffix('*').is_some_and(|p| self.prefixes.iter().any(|f| f.prefix == p))
                })
            {
                return Err(issue(
                    format!("tenants[{i}].allowed_models"),
                    format!("tenant `{}` allows unknown model `{unknown}`", t.id),
                ));
            }
        }
        Ok(())
    }
}

impl GatewayConfig {
    /// `cache = "semantic"` names an embedding model of this configuration and a threshold in (0, 1].
    fn validate_semantic(&self, i: usize, m: &ModelConfig) -> Result<(), ConfigIssue> {
        if m.cache != CachePolicy::Semantic {
            return Ok(());
        }
        if m.kind != ModelKind::Chat {
            return Err(issue(format!("models[{i}].cache"), "the semantic cache is for chat models"));
        }
        if !(m.semantic_threshold > 0.0 && m.semantic_threshold <= 1.0) {
            return Err(issue(format!("models[{i}].semantic_threshold"), "a cosine similarity in (0, 1]"));
        }
        let Some(embedding) = &m.semantic_embedding_model else {
            return Err(issue(
                format!("models[{i}].semantic_embedding_model"),
                "`cache = \"semantic\"` needs the embedding model that embeds prompts",
            ));
        };
        match self.models.iter().find(|e| &e.name == embedding) {
            Some(e) if e.kind == ModelKind::Embedding => Ok(()),
            Some(_) => Err(issue(
                format!("models[{i}].semantic_embedding_model"),
                format!("`{embedding}` is not an embedding model (`kind = \"embedding\"`)"),
            )),
            None => Err(issue(format!("models[{i}].semantic_embedding_model"), format!("unknown model `{embedding}`"))),
        }
    }
}

/// SHA-256 of an API key, lower-case hex: the form tenants' keys take in configuration.
pub fn api_key_digest(api_key: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(api_key.as_bytes()))
}
