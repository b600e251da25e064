//! How the App client behaves: base URL, headers, margins, pacing, retries and rate-limit policy.

use std::time::Duration;

/// `https://api.github.com`; for GitHub Enterprise Server use `https://HOST/api/v3`.
pub const DEFAULT_BASE_URL: &str = "https://api.github.com";
/// The REST API version the typed actions are written against.
pub const DEFAULT_API_VERSION: &str = "2022-11-28";

/// What to do when a rate limit asks us to wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RateLimitPolicy {
    /// Wait (on the injected timer) when the wait is at most `max_wait`; fail otherwise.
    Wait {
        /// The longest single wait accepted.
        max_wait: Duration,
    },
    /// Never wait: fail with [`ClientError::RateLimited`](super::ClientError::RateLimited) at once.
    FailFast,
}

/// Settings of a [`GitHubApp`](super::GitHubApp) client. Start from [`ClientConfig::default`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClientConfig {
    /// API root: [`DEFAULT_BASE_URL`] or `https://HOST/api/v3` for GitHub Enterprise Server.
    pub base_url: String,
    /// `User-Agent` (GitHub rejects requests without one; name your App).
    pub user_agent: String,
    /// `X-GitHub-Api-Version`.
    pub api_version: String,
    /// Refresh an installation token this long before its `expires_at` (default 5 min; at most half
    /// the token's lifetime).
    pub token_refresh_margin: Duration,
    /// Least time between two mutating requests of one installation (default 1 s, as GitHub asks).
    pub mutation_interval: Duration,
    /// What to do when rate limited (default: wait up to 61 min, a full primary window).
    pub rate_limit_policy: RateLimitPolicy,
    /// Retries after rate-limit answers before giving up (default 3).
    pub max_rate_limit_retries: u32,
    /// First wait after a secondary limit that gave no hint; doubles each time (default 60 s).
    pub secondary_limit_backoff: Duration,
    /// Retries after 5xx answers or broken connections, for requests safe to repeat (default 3).
    pub max_server_error_retries: u32,
    /// Bound of the first wait after a 5xx, doubling each time; each wait is drawn from 0 to the bound
    /// (full jitter, default 1 s).
    pub server_error_backoff: Duration,
    /// Retries of a token GitHub refused with 401 right after minting it (default 3).
    pub fresh_token_retries: u32,
    /// Bound of the first wait before retrying a freshly minted token, doubling each time; each wait is
    /// drawn from 0 to the bound (full jitter, default 500 ms).
    pub fresh_token_backoff: Duration,
    /// A token younger than this that gets a 401 is assumed not yet replicated (default 30 s).
    pub fresh_token_window: Duration,
    /// Timeout of one HTTP request (default 30 s).
    pub request_timeout: Duration,
    /// Bytes of bodies kept for conditional GETs (ETag); 0 turns the cache off (default 8 MiB).
    pub etag_cache_bytes: u64,
    /// Most pages [`InstallationClient::list`](super::InstallationClient::list) follows (default 100).
    pub max_pages: usize,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            base_url: DEFAULT_BASE_URL.to_owned(),
            user_agent: concat!("chitty-github/", env!("CARGO_PKG_VERSION")).to_owned(),
            api_version: DEFAULT_API_VERSION.to_owned(),
            token_refresh_margin: Duration::from_secs(5 * 60),
            mutation_interval: Duration::from_secs(1),
            // A full primary window plus skew: by default a spent budget is waited out.
            rate_limit_policy: RateLimitPolicy::Wait { max_wait: Duration::from_secs(61 * 60) },
            max_rate_limit_retries: 3,
            secondary_limit_backoff: Duration::from_secs(60),
            max_server_error_retries: 3,
            server_error_backoff: Duration::from_secs(1),
            fresh_token_retries: 3,
            fresh_token_backoff: Duration::from_millis(500),
            fresh_token_window: Duration::from_secs(30),
            request_timeout: Duration::from_secs(30),
            etag_cache_bytes: 8 * 1024 * 1024,
            max_pages: 100,
        }
    }
}
