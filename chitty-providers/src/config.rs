//! The gateway's configuration file (TOML): providers, models, tenants, cache and budget backends.
//!
//! Validated at load: syntax and type errors name the line, column and key; semantic errors (an unknown
//! provider, a bad key digest) name the key path. `${VAR}` in provider URLs, keys and headers and in backend
//! URLs is replaced from the environment, so secrets stay out of the file. Plain tenant API keys are accepted
//! only through environment variables (`api_key_env`); the file holds SHA-256 digests. Secrets are never
//! printed: [`Secret`] redacts itself in `Debug` and `Display`.
//!
//! ```
//! use chitty_providers::config::GatewayFile;
//!
//! let file = GatewayFile::parse(r#"
//!     [[providers]]
//!     name = "openai"
//!     kind = "openai"
//!     base_url = "https://api.openai.com/v1"
//!
//!     [[models]]
//!     name = "gpt-4o-mini"
//!     routes = [{ provider = "openai", model = "gpt-4o-mini" }]
//!     price = { input = "0.15", output = "0.60" }
//!
//!     [[tenants]]
//!     id = "search-team"
//!     key_sha256 = ["9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"]
//!     budget_usd = "25.00"
//! "#)?;
//! let config = file.gateway_config()?;
//! assert_eq!(config.models[0].price.output_per_mtok.0, 600_000_000);
//! # Ok::<(), chitty_providers::config::ConfigError>(())
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use chitty_core::NanoUsd;
use chitty_core::gateway::{Defaults, GatewayConfig, ModelConfig, PrefixConfig, TenantConfig, api_key_digest};
use serde::Deserialize;

/// A configuration problem, naming where it is.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Syntax or type error (the message carries line, column and key).
    #[error("{path}: {message}")]
    Parse {
        /// The file, or `<string>`.
        path: String,
        /// The parser's message.
        message: String,
    },
    /// A value is wrong for what it configures.
    #[error("{key}: {reason}")]
    Invalid {
        /// Key path, e.g. `models[2].routes[0].provider`.
        key: String,
        /// What is wrong.
        reason: String,
    },
}

fn invalid(key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { key: key.into(), reason: reason.into() }
}

/// A string that must not be printed (API keys, URLs with credentials).
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret read from elsewhere (the environment, a vault).
    pub fn new(secret: impl Into<String>) -> Secret {
        Secret(secret.into())
    }

    /// The secret itself, for handing to a client library.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// `[server]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSection {
    /// Listen address.
    pub addr: String,
    /// Largest request body, bytes.
    pub body_limit_bytes: usize,
    /// Threads serving HTTP, each with its own runtime and socket ([`crate::server::PerCoreServer`]); unset
    /// means one per core.
    pub workers: Option<usize>,
    /// Time allowed for a request head, milliseconds (default 10,000).
    pub header_read_timeout_ms: Option<u64>,
    /// Time allowed for a request body before the minimum rate extends it, milliseconds (default 10,000).
    pub body_read_timeout_ms: Option<u64>,
    /// Bytes per second a slow body must average past `body_read_timeout_ms` (default 32,768).
    pub min_body_bytes_per_sec: Option<u64>,
    /// How long an idle keep-alive connection stays open, milliseconds (default 60,000).
    pub idle_timeout_ms: Option<u64>,
    /// How long a response may wait for the client to read any of it, milliseconds (default 60,000).
    pub send_timeout_ms: Option<u64>,
    /// Open connections past which new ones are answered 503 (default half the file descriptor limit).
    pub max_connections: Option<usize>,
    /// Where `/metrics` is served: its own address (keep it private), or, when unset, the main `addr`.
    pub metrics_addr: Option<String>,
    /// A bearer token `/metrics` requires (`${VAR}` allowed); open when unset.
    pub metrics_token: Option<Secret>,
    /// One structured log line per finished request (target `chitty::request`, see
    /// [`crate::request_log::TracingSink`]); off by default: formatting a line costs about a third of a proxied
    /// request's CPU (callgrind: 91.7k → 121.7k instructions with the text formatter).
    pub request_log: bool,
    /// A file every event is appended to as one JSON line (requests with their cost, upstream failures,
    /// opened circuits), for offline analysis; none when unset.
    pub event_log: Option<String>,
}

impl Default for ServerSection {
    fn default() -> Self {
        ServerSection {
            addr: "127.0.0.1:8080".into(),
            body_limit_bytes: 8 * 1024 * 1024,
            workers: None,
            header_read_timeout_ms: None,
            body_read_timeout_ms: None,
            min_body_bytes_per_sec: None,
            idle_timeout_ms: None,
            send_timeout_ms: None,
            max_connections: None,
            metrics_addr: None,
            metrics_token: None,
            request_log: false,
            event_log: None,
        }
    }
}

#[cfg(feature = "server")]
impl ServerSection {
    /// The connection limits this section sets, the rest at [`crate::server::ConnectionLimits`]'s defaults.
    pub fn connection_limits(&self) -> crate::server::ConnectionLimits {
        use std::time::Duration;
        let mut limits = crate::server::ConnectionLimits::default();
        if let Some(ms) = self.header_read_timeout_ms {
            limits = limits.with_header_read_timeout(Duration::from_millis(ms));
        }
        if let Some(ms) = self.body_read_timeout_ms {
            limits = limits.with_body_read_timeout(Duration::from_millis(ms));
        }
        if let Some(rate) = self.min_body_bytes_per_sec {
            limits = limits.with_min_body_rate(rate);
        }
        if let Some(ms) = self.idle_timeout_ms {
            limits = limits.with_idle_timeout(Duration::from_millis(ms));
        }
        if let Some(ms) = self.send_timeout_ms {
            limits = limits.with_send_timeout(Duration::from_millis(ms));
        }
        if let Some(max) = self.max_connections {
            limits = limits.with_max_connections(max);
        }
        limits
    }
}

/// `[cache]` and `[budgets]`: which backend holds the state.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackendSection {
    /// `memory` or `none` (cache only); other backends when their feature is built.
    pub backend: String,
    /// Bound of an in-memory cache, bytes.
    pub max_bytes: u64,
    /// Connection URL of a networked backend (`${VAR}` allowed).
    pub url: Option<Secret>,
}

impl Default for BackendSection {
    fn default() -> Self {
        BackendSection { backend: "memory".into(), max_bytes: 256 * 1024 * 1024, url: None }
    }
}

/// `[admin]`: the admin API (tenants and keys at run time, see [`crate::server::admin_router`]).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSection {
    /// SHA-256 digests (hex) of the admin keys; plain admin keys never live in the file.
    #[serde(default)]
    pub key_sha256: Vec<String>,
}

/// `[store]`: where tenants and keys live.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSection {
    /// `memory` (one process; the file's tenants and what the admin API adds until restart) or `postgres`
    /// (feature `postgres`; shared by replicas, changes pushed with `LISTEN/NOTIFY`).
    pub backend: String,
    /// Connection URL of the database (`${DATABASE_URL}`).
    pub url: Option<Secret>,
    /// Seconds between full reloads, the backstop behind change notifications (default 30).
    pub refresh_secs: u64,
    /// Seconds between saves of settled spend from Redis budgets into this store, which re-seeds a period
    /// Redis lost (default 5): at most this much settled spend can be forgotten.
    pub spend_save_secs: u64,
}

impl Default for StoreSection {
    fn default() -> Self {
        StoreSection { backend: "memory".into(), url: None, refresh_secs: 30, spend_save_secs: 5 }
    }
}

/// `[[providers]]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderSection {
    /// Name routes refer to.
    pub name: String,
    /// `openai`, `anthropic`, `ollama`, or a kind the host application builds itself (e.g. `mock`).
    pub kind: String,
    /// Base URL (`${VAR}` allowed).
    #[serde(default)]
    pub base_url: Option<String>,
    /// API key (`${VAR}` allowed; write `${OPENAI_API_KEY}`, never the key).
    #[serde(default)]
    pub api_key: Option<Secret>,
    /// Extra headers sent upstream (`${VAR}` allowed in values).
    #[serde(default)]
    pub headers: BTreeMap<String, Secret>,
    /// Per-request timeout, seconds.
    #[serde(default)]
    pub timeout_secs: Option<u64>,
    /// `kind = "openai"` only: whether the upstream speaks OpenAI's Responses API (`{base_url}/responses`),
    /// as OpenAI and Azure OpenAI do (default false). When true, `/v1/responses` requests routed here are
    /// passed through as the client sent them (only `model` rewritten) instead of translated to chat.
    #[serde(default)]
    pub responses_api: bool,
}

/// `[[tenants]]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantSection {
    /// Identifier.
    pub id: String,
    /// SHA-256 digests of the tenant's keys, hex.
    #[serde(default)]
    pub key_sha256: Vec<String>,
    /// Environment variables holding plain keys (hashed at load, never stored).
    #[serde(default)]
    pub api_key_env: Vec<String>,
    /// Budget in dollars (`"25.00"`); unlimited when unset.
    #[serde(default)]
    pub budget_usd: Option<String>,
    /// Allowed public models; all when unset.
    #[serde(default)]
    pub allowed_models: Option<Vec<String>>,
    /// Requests per minute.
    #[serde(default)]
    pub requests_per_minute: Option<u32>,
    /// Tokens per minute (prompt plus output cap at admission, corrected at settlement).
    #[serde(default)]
    pub tokens_per_minute: Option<u32>,
    /// Burst.
    #[serde(default)]
    pub burst: Option<u32>,
    /// Shared cache group.
    #[serde(default)]
    pub cache_group: Option<String>,
}

/// The whole file.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayFile {
    /// `[server]`.
    #[serde(default)]
    pub server: ServerSection,
    /// `[cache]`.
    #[serde(default)]
    pub cache: BackendSection,
    /// `[budgets]`.
    #[serde(default)]
    pub budgets: BackendSection,
    /// `[rate_limits]`: where requests- and tokens-per-minute state lives (`memory` for one replica, `redis`
    /// to share the limits between replicas).
    #[serde(default)]
    pub rate_limits: BackendSection,
    /// `[admin]`: serve the admin API (`/admin/v1/…`) to these keys.
    #[serde(default)]
    pub admin: Option<AdminSection>,
    /// `[store]`: where tenants and keys live.
    #[serde(default)]
    pub store: StoreSection,
    /// `[[providers]]`.
    #[serde(default)]
    pub providers: Vec<ProviderSection>,
    /// `[[models]]`: read as [`ModelConfig`] (prices as dollar strings, `limits`, `output_cap_field`, …).
    #[serde(default)]
    pub models: Vec<ModelConfig>,
    /// `[[prefixes]]`: read as [`PrefixConfig`].
    #[serde(default)]
    pub prefixes: Vec<PrefixConfig>,
    /// `[[tenants]]`.
    #[serde(default)]
    pub tenants: Vec<TenantSection>,
    /// `[defaults]`.
    #[serde(default)]
    pub defaults: Defaults,
    /// `[[routers]]`: virtual models read as [`chitty_core::router::RouterConfig`].
    #[serde(default)]
    pub routers: Vec<chitty_core::router::RouterConfig>,
}

/// Replaces every `${VAR}` in `value` from the environment.
pub fn interpolate(key: &str, value: &str) -> Result<String, ConfigError> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find('}').ok_or_else(|| invalid(key, "unterminated `${`"))?;
        let var = &after[..end];
        if var.is_empty() || !var.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(invalid(key, format!("`${{{var}}}` is not an environment variable name")));
        }
        let v = std::env::var(var).map_err(|_| invalid(key, format!("environment variable {var} is not set")))?;
        out.push_str(&v);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn dollars(key: &str, s: &str) -> Result<NanoUsd, ConfigError> {
    s.parse().map_err(|e: chitty_core::money::ParseUsdError| invalid(key, e.to_string()))
}

impl ProviderSection {
    /// Builds the provider for the kinds this build includes (`openai`, `anthropic`, `ollama`, each behind its
    /// feature). Other kinds (such as the example's `mock`) are the host application's to build.
    pub fn build(&self) -> Result<std::sync::Arc<dyn chitty_core::Provider>, ConfigError> {
        #[cfg(any(feature = "openai", feature = "anthropic", feature = "ollama"))]
        fn shared(provider: impl chitty_core::Provider) -> std::sync::Arc<dyn chitty_core::Provider> {
            std::sync::Arc::new(provider)
        }
        if self.responses_api && self.kind != "openai" {
            return Err(invalid(
                format!("providers.{}.responses_api", self.name),
                format!("only `kind = \"openai\"` providers speak the Responses API, not `{}`", self.kind),
            ));
        }
        let built: Option<chitty_core::Result<std::sync::Arc<dyn chitty_core::Provider>>> = match self.kind.as_str() {
            #[cfg(feature = "openai")]
            "openai" => Some(
                self.configure(crate::openai::OpenAiProvider::builder(&self.name))
                    .with_responses_api(self.responses_api)
                    .build()
                    .map(shared),
            ),
            #[cfg(feature = "anthropic")]
            "anthropic" => {
                Some(self.configure(crate::anthropic::AnthropicProvider::builder(&self.name)).build().map(shared))
            }
            #[cfg(feature = "ollama")]
            "ollama" => Some(self.configure(crate::ollama::OllamaProvider::builder(&self.name)).build().map(shared)),
            _ => None,
        };
        match built {
            Some(result) => result.map_err(|e| invalid(format!("providers.{}", self.name), e.to_string())),
            None => Err(invalid(
                format!("providers.{}.kind", self.name),
                format!(
                    "`{}` is not a provider kind this build knows (openai, anthropic, ollama behind their features)",
                    self.kind
                ),
            )),
        }
    }

    /// This section's URL, key, headers and timeout on the builder of any HTTP provider.
    #[cfg(any(feature = "openai", feature = "anthropic", feature = "ollama"))]
    fn configure<O>(
        &self,
        mut builder: crate::http_provider::ProviderBuilder<O>,
    ) -> crate::http_provider::ProviderBuilder<O> {
        if let Some(url) = &self.base_url {
            builder = builder.with_base_url(url.clone());
        }
        if let Some(key) = &self.api_key {
            builder = builder.with_api_key(key.expose());
        }
        for (name, value) in &self.headers {
            builder = builder.with_header(name.clone(), value.expose());
        }
        if let Some(secs) = self.timeout_secs {
            builder = builder.with_timeout(std::time::Duration::from_secs(secs));
        }
        builder
    }
}

impl GatewayFile {
    /// Reads and parses a file.
    pub fn load(path: &Path) -> Result<GatewayFile, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.display().to_string(), source })?;
        GatewayFile::parse_named(&text, &path.display().to_string())
    }

    /// Parses TOML text.
    pub fn parse(text: &str) -> Result<GatewayFile, ConfigError> {
        GatewayFile::parse_named(text, "<string>")
    }

    fn parse_named(text: &str, path: &str) -> Result<GatewayFile, ConfigError> {
        let mut file: GatewayFile =
            toml::from_str(text).map_err(|e| ConfigError::Parse { path: path.to_owned(), message: e.to_string() })?;
        for (i, p) in file.providers.iter_mut().enumerate() {
            if let Some(url) = &p.base_url {
                p.base_url = Some(interpolate(&format!("providers[{i}].base_url"), url)?);
            }
            if let Some(key) = &p.api_key {
                p.api_key = Some(Secret(interpolate(&format!("providers[{i}].api_key"), key.expose())?));
            }
            for (name, value) in p.headers.iter_mut() {
                *value = Secret(interpolate(&format!("providers[{i}].headers.{name}"), value.expose())?);
            }
        }
        if let Some(token) = &file.server.metrics_token {
            let token = interpolate("server.metrics_token", token.expose())?;
            if token.is_empty() {
                // An empty token would match a request without one: refuse rather than serve metrics openly.
                return Err(invalid("server.metrics_token", "is empty; remove it to serve /metrics without a token"));
            }
            file.server.metrics_token = Some(Secret(token));
        }
        for (section, name) in
            [(&mut file.cache, "cache"), (&mut file.budgets, "budgets"), (&mut file.rate_limits, "rate_limits")]
        {
            if let Some(url) = &section.url {
                section.url = Some(Secret(interpolate(&format!("{name}.url"), url.expose())?));
            }
        }
        if let Some(url) = &file.store.url {
            file.store.url = Some(Secret(interpolate("store.url", url.expose())?));
        }
        Ok(file)
    }

    /// The gateway's configuration: tenant keys from the environment hashed, budgets parsed, and everything
    /// checked by [`GatewayConfig::validate`] against the file's providers, so a mistake is reported at load.
    pub fn gateway_config(&self) -> Result<GatewayConfig, ConfigError> {
        let mut tenants = Vec::new();
        for (i, t) in self.tenants.iter().enumerate() {
            let mut keys: Vec<String> = t.key_sha256.iter().map(|d| d.to_ascii_lowercase()).collect();
            for (j, var) in t.api_key_env.iter().enumerate() {
                let key = std::env::var(var).map_err(|_| {
                    invalid(format!("tenants[{i}].api_key_env[{j}]"), format!("environment variable {var} is not set"))
                })?;
                keys.push(api_key_digest(&key));
            }
            if keys.is_empty() {
                return Err(invalid(format!("tenants[{i}]"), "needs key_sha256 or api_key_env"));
            }
            let budget_nano_usd =
                t.budget_usd.as_deref().map(|b| dollars(&format!("tenants[{i}].budget_usd"), b)).transpose()?;
            tenants.push(TenantConfig {
                key_sha256: keys,
                budget_nano_usd,
                allowed_models: t.allowed_models.clone(),
                requests_per_minute: t.requests_per_minute,
                tokens_per_minute: t.tokens_per_minute,
                burst: t.burst,
                cache_group: t.cache_group.clone(),
                ..TenantConfig::new(t.id.clone(), "")
            });
        }
        let config = GatewayConfig {
            models: self.models.clone(),
            prefixes: self.prefixes.clone(),
            tenants,
            defaults: self.defaults.clone(),
            routers: self.routers.clone(),
        };
        let providers: Vec<&str> = self.providers.iter().map(|p| p.name.as_str()).collect();
        config.validate(&providers).map_err(|issue| invalid(issue.key, issue.reason))?;
        self.admin_keys(&config)?;
        Ok(config)
    }

    /// The admin key digests of `[admin]` (none without the section): 64 hex characters each, at least one,
    /// and none a tenant's key, so a tenant key can never reach the admin API.
    pub fn admin_keys(&self, config: &GatewayConfig) -> Result<Vec<chitty_core::access::KeyDigest>, ConfigError> {
        let Some(admin) = &self.admin else { return Ok(Vec::new()) };
        if admin.key_sha256.is_empty() {
            return Err(invalid("admin.key_sha256", "needs at least one digest (or remove [admin])"));
        }
        let mut digests = Vec::new();
        for (i, hex_digest) in admin.key_sha256.iter().enumerate() {
            let key = format!("admin.key_sha256[{i}]");
            let digest = chitty_core::access::KeyDigest::from_hex(hex_digest)
                .ok_or_else(|| invalid(key.clone(), "must be 64 hex characters (SHA-256 of the admin key)"))?;
            let tenant_key =
                config.tenants.iter().flat_map(|t| &t.key_sha256).any(|d| d.eq_ignore_ascii_case(&digest.to_hex()));
            if tenant_key {
                return Err(invalid(key, "is also a tenant's key; admin keys must be kept apart"));
            }
            digests.push(digest);
        }
        Ok(digests)
    }
}

#[cfg(test)]
mod tests {
    use chitty_core::gateway::{OutputCapField, RequestLimits};
    use chitty_core::keys::CachePolicy;

    use super::*;

    const GOOD: &str = r#"
[server]
addr = "127.0.0.1:9999"
idle_timeout_ms = 5000
max_connections = 100
metrics_token = "${CHITTY_CONFIG_TEST_KEY}"

[[providers]]
name = "up"
kind = "openai"
base_url = "http://127.0.0.1:1/v1"
api_key = "${CHITTY_CONFIG_TEST_KEY}"

[[models]]
name = "m"
routes = [{ provider = "up", model = "m-upstream" }]
price = { input = "2.50", output = "10", cached_input = "1.25" }
cache = "always"
limits = { n = 4, dimensions = 1024 }

[[tenants]]
id = "t"
api_key_env = ["CHITTY_CONFIG_TEST_TENANT"]
budget_usd = "$5"
allowed_models = ["m"]
"#;

    #[test]
    fn balance_weight_and_group_are_read_and_unknown_policies_refused() {
        let text = r#"
[[providers]]
name = "a"
kind = "mock"

[[models]]
name = "m"
balance = "least_outstanding"
routes = [{ provider = "a", model = "x", weight = 3, group = 1 }, { provider = "a", model = "y" }]
"#;
        let file = GatewayFile::parse(text).unwrap();
        let model = &file.models[0];
        assert_eq!(model.balance, chitty_core::balance::BalancePolicy::LeastOutstanding);
        assert_eq!((model.routes[0].weight, model.routes[0].group), (3, 1));
        assert_eq!((model.routes[1].weight, model.routes[1].group), (1, 0), "weight 1 and group 0 by default");
        let error = GatewayFile::parse(&text.replace("least_outstanding", "fastest")).unwrap_err().to_string();
        assert!(error.contains("balance") || error.contains("fastest"), "{error}");
    }

    #[test]
    fn parses_interpolates_and_hashes() {
        unsafe_env_set("CHITTY_CONFIG_TEST_KEY", "sk-upstream-secret");
        unsafe_env_set("CHITTY_CONFIG_TEST_TENANT", "sk-tenant");
        let file = GatewayFile::parse(GOOD).unwrap();
        assert_eq!(file.server.addr, "127.0.0.1:9999");
        assert_eq!(file.server.metrics_token.as_ref().unwrap().expose(), "sk-upstream-secret");
        #[cfg(feature = "server")]
        {
            let limits = file.server.connection_limits();
            let defaults = crate::server::ConnectionLimits::default();
            assert_eq!((limits.idle_timeout, limits.max_connections), (std::time::Duration::from_secs(5), 100));
            assert_eq!(limits.header_read_timeout, defaults.header_read_timeout, "unset keys keep their defaults");
        }
        assert_eq!(file.providers[0].api_key.as_ref().unwrap().expose(), "sk-upstream-secret");
        let debug = format!("{file:?}");
        assert!(!debug.contains("sk-upstream-secret"), "secrets never in Debug: {debug}");
        let config = file.gateway_config().unwrap();
        assert_eq!(config.models[0].price.input_per_mtok, NanoUsd(2_500_000_000));
        assert_eq!(config.models[0].cache, CachePolicy::Always);
        let limits = config.models[0].limits;
        assert_eq!((limits.n, limits.dimensions, limits.best_of), (4, 1024, RequestLimits::default().best_of));
        assert_eq!(config.tenants[0].key_sha256, vec![api_key_digest("sk-tenant")]);
        assert_eq!(config.tenants[0].budget_nano_usd, Some(NanoUsd::from_usd(5)));
    }

    #[test]
    fn errors_name_the_line_or_key() {
        let err = GatewayFile::parse("[[models]]\nname = 3\n").unwrap_err().to_string();
        assert!(err.contains("line 2") && err.contains("name"), "{err}");
        let err = GatewayFile::parse("[[models]]\nname = \"m\"\nroutes = []\nbogus = 1\n").unwrap_err().to_string();
        assert!(err.contains("bogus"), "{err}");
        let err = GatewayFile::parse("[[models]]\nname = \"m\"\nroutes = []\nlimits = { dimension = 8 }\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("dimension") && err.contains("limits"), "a misspelt limit is refused: {err}");
        let err = GatewayFile::parse(
            "[[providers]]\nname = \"p\"\nkind = \"openai\"\napi_key = \"${CHITTY_SURELY_UNSET_VAR}\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("providers[0].api_key") && err.contains("CHITTY_SURELY_UNSET_VAR"), "{err}");
        let file = GatewayFile::parse("[[models]]\nname = \"m\"\nroutes = [{ provider = \"ghost\", model = \"x\" }]\n")
            .unwrap();
        let err = file.gateway_config().unwrap_err().to_string();
        assert!(err.contains("models[0].routes[0].provider") && err.contains("ghost"), "{err}");
        let err = GatewayFile::parse(
            "[[providers]]\nname=\"p\"\nkind=\"openai\"\n[[models]]\nname = \"m\"\nroutes = [{ provider = \"p\", model = \"x\" }]\nprice = { input = \"1.5.0\", output = \"1\" }\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("line 7") && err.contains("1.5.0") && err.contains("not a dollar amount"), "{err}");
        let file = GatewayFile::parse(
            "[[providers]]\nname=\"p\"\nkind=\"openai\"\n[[prefixes]]\nprefix = \"p/\"\nprovider = \"p\"\noutput_cap_field = \"max_completion_tokens\"\n",
        )
        .unwrap();
        let config = file.gateway_config().unwrap();
        assert_eq!(config.prefixes[0].output_cap_field, OutputCapField::MaxCompletionTokens, "not dropped");
        assert_eq!(config.prefixes[0].max_output_tokens, chitty_core::gateway::DEFAULT_MAX_OUTPUT_TOKENS);
        let err = GatewayFile::parse("[server]\nmetrics_token = \"\"\n").unwrap_err().to_string();
        assert!(err.contains("server.metrics_token") && err.contains("empty"), "{err}");
        let file = GatewayFile::parse("[[tenants]]\nid = \"t\"\nkey_sha256 = [\"abc\"]\n").unwrap();
        assert!(file.gateway_config().unwrap_err().to_string().contains("tenants[0].key_sha256[0]"));
    }

    fn unsafe_env_set(key: &str, value: &str) {
        // Setting the environment is unsafe in edition 2024 because other threads may read it; these
        // variables are read only by this module's tests.
        #[allow(unsafe_code)]
        unsafe {
            std::env::set_var(key, value);
        }
    }
}
