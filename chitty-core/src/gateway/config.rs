//! Gateway configuration: models, routes, prices, cache policy, tenants, routing defaults.
//!
//! Plain data with serde, so hosts can load it from any format (chitty-providers reads TOML).

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
    /// Prices.
    #[serde(default)]
    pub price: ModelPrice,
    /// Cache policy.
    #[serde(default)]
    pub cache: CachePolicy,
    /// Cache TTL in seconds (the default's when unset).
    #[serde(default)]
    pub cache_ttl_secs: Option<u64>,
    /// Most output tokens the model can produce: the cap used when a client sends none.
    #[serde(default = "default_max_output_tokens")]
    pub max_output_tokens: u32,
    /// Which field carries a cap the gateway sets.
    #[serde(default)]
    pub output_cap_field: OutputCapField,
    /// Bounds on request sizes that upstreams turn into work (`n`, `best_of`, `dimensions`, …).
    #[serde(default)]
    pub limits: RequestLimits,
}

fn default_max_output_tokens() -> u32 {
    4_096
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
    /// Most output tokens; the cap when a client sends none.
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
    /// Burst above the steady rate (defaults to the per-minute rate / 6, at least 1).
    #[serde(default)]
    pub burst: Option<u32>,
    /// Share cache entries with every tenant naming the same group; tenant-private when unset.
    #[serde(default)]
    pub cache_group: Option<String>,
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
    /// First retry backoff, milliseconds; doubles per attempt.
    pub backoff_base_ms: u64,
    /// Longest backoff (and longest `Retry-After` honoured), milliseconds.
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
        }
    }
}

impl Defaults {
    /// Per-attempt timeout.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    /// Backoff before retry number `retry` (0-based), capped.
    pub fn backoff(&self, retry: u32) -> Duration {
        let ms = self.backoff_base_ms.saturating_mul(1u64 << retry.min(20)).min(self.backoff_max_ms);
        Duration::from_millis(ms)
    }
}

/// SHA-256 of an API key, lower-case hex: the form tenants' keys take in configuration.
pub fn api_key_digest(api_key: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(api_key.as_bytes()))
}
