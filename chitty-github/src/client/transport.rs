//! One REST call with everything GitHub asks of a well-behaved App: credentials, rate limits,
//! retries, conditional GETs and pacing of mutations.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use chitty_core::upstream::{error_message, full_jitter_backoff};
use chitty_core::{Clock, RandomSource, Timer, Timestamp};
use futures::future::BoxFuture;
use reqwest::header::{self, HeaderValue};
use reqwest::{Method, StatusCode, Url};
use serde::de::DeserializeOwned;

use super::config::{ClientConfig, RateLimitPolicy};
use super::error::{ApiErrorDetail, ClientError, RateLimitKind};
use super::jwt::AppCredentials;
use super::rate_limit::{RateLimitResource, RateLimitSnapshot, classify};
use super::token::{AccessTokenResponse, InstallationId, InstallationToken, TokenCache, parse_expires_at};

/// Whose credential a request carries; rate limits are tracked per scope and bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum AuthScope {
    /// The App's JWT (`/app/...` endpoints).
    App,
    /// An installation token.
    Installation(InstallationId),
}

impl fmt::Display for AuthScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuthScope::App => f.write_str("app"),
            AuthScope::Installation(id) => write!(f, "installation {id}"),
        }
    }
}

/// A request before credentials are attached.
#[derive(Debug, Clone)]
pub(crate) struct ApiRequest {
    pub(crate) method: Method,
    pub(crate) url: Url,
    /// JSON body.
    pub(crate) body: Option<Bytes>,
    /// Whether sending it twice has the same effect as once (so a 5xx or a broken connection may be retried).
    pub(crate) idempotent: bool,
}

impl ApiRequest {
    /// A request whose idempotency follows its method (POST is not, the others are).
    pub(crate) fn new(method: Method, url: Url, body: Option<Bytes>) -> Self {
        let idempotent = method != Method::POST;
        ApiRequest { method, url, body, idempotent }
    }
}

/// A successful answer (2xx, or 304 served from the ETag cache).
#[derive(Debug, Clone)]
pub(crate) struct ApiResponse {
    pub(crate) body: Bytes,
    /// The `Link` header, for pagination.
    pub(crate) link: Option<String>,
    /// Whether the body came from the ETag cache after a 304.
    pub(crate) not_modified: bool,
}

impl ApiResponse {
    /// The body decoded as `T`; an empty body (204 No Content) reads as `null`, so `()` and `Option` fit.
    pub(crate) fn json<T: DeserializeOwned>(&self) -> Result<T, ClientError> {
        let body: &[u8] = if self.body.is_empty() { b"null" } else { &self.body };
        serde_json::from_slice(body)
            .map_err(|e| ClientError::Decode { what: std::any::type_name::<T>(), source: Box::new(e) })
    }
}

/// A body kept for conditional GETs.
#[derive(Debug)]
struct CachedGet {
    etag: HeaderValue,
    body: Bytes,
    link: Option<String>,
}

/// Time of the last mutation of one installation; the mutex also makes its mutations serial.
type Pacer = Arc<tokio::sync::Mutex<Option<Timestamp>>>;

/// Most rate-limit buckets remembered per scope (GitHub has about a dozen); a new name past this is not kept.
const MAX_BUCKETS_PER_SCOPE: usize = 32;

/// Everything one App client shares between its installations.
pub(crate) struct AppInner {
    pub(crate) credentials: AppCredentials,
    pub(crate) config: ClientConfig,
    pub(crate) base: Url,
    pub(crate) http: reqwest::Client,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) timer: Arc<dyn Timer>,
    random: Arc<dyn RandomSource>,
    tokens: TokenCache,
    limits: Mutex<HashMap<AuthScope, HashMap<RateLimitResource, RateLimitSnapshot>>>,
    pacers: Mutex<HashMap<InstallationId, Pacer>>,
    etags: Option<moka::future::Cache<String, Arc<CachedGet>>>,
}

impl fmt::Debug for AppInner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GitHubApp")
            .field("credentials", &self.credentials)
            .field("base_url", &self.base.as_str())
            .finish_non_exhaustive()
    }
}

/// GitHub's error body: the message any HTTP client reads (`chitty_core::upstream::error_message`), and
/// GitHub's own `documentation_url` and `errors`; the reason phrase when the body says nothing.
pub(crate) fn github_message(body: &[u8], status: StatusCode) -> GitHubErrorBody {
    /// The GitHub-specific fields of its error schema.
    #[derive(serde::Deserialize)]
    struct Wire {
        documentation_url: Option<String>,
        // Read loosely: one odd entry must not lose the message.
        errors: Option<serde_json::Value>,
    }
    let Wire { documentation_url, errors } =
        serde_json::from_slice(body).unwrap_or(Wire { documentation_url: None, errors: None });
    GitHubErrorBody {
        message: error_message(body).unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_owned()),
        documentation_url,
        errors: ApiErrorDetail::list_from_json(errors.as_ref()),
    }
}

/// What GitHub's error body says.
#[derive(Debug)]
pub(crate) struct GitHubErrorBody {
    pub(crate) message: String,
    pub(crate) documentation_url: Option<String>,
    pub(crate) errors: Vec<ApiErrorDetail>,
}

fn bearer(secret: &str) -> Result<HeaderValue, ClientError> {
    let mut value = HeaderValue::try_from(format!("Bearer {secret}"))
        .map_err(|_| ClientError::InvalidResponse { reason: "credential is not a valid header value".to_owned() })?;
    // Keeps the credential out of the HTTP stack's Debug output.
    value.set_sensitive(true);
    Ok(value)
}

impl AppInner {
    pub(crate) fn new(
        credentials: AppCredentials,
        config: ClientConfig,
        base: Url,
        http: reqwest::Client,
        clock: Arc<dyn Clock>,
        timer: Arc<dyn Timer>,
        random: Arc<dyn RandomSource>,
    ) -> Self {
        let etags = (config.etag_cache_bytes > 0).then(|| {
            moka::future::Cache::builder()
                .max_capacity(config.etag_cache_bytes)
                .weigher(|key: &String, value: &Arc<CachedGet>| {
                    u32::try_from(key.len() + value.body.len()).unwrap_or(u32::MAX)
                })
                .build()
        });
        AppInner {
            credentials,
            config,
            base,
            http,
            clock,
            timer,
            random,
            tokens: TokenCache::default(),
            limits: Mutex::new(HashMap::new()),
            pacers: Mutex::new(HashMap::new()),
            etags,
        }
    }

    /// `base` joined with `segments`, each percent-encoded as one path segment.
    pub(crate) fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    /// `base` joined with a caller's path such as `/repos/octo/hello/pulls?state=open`.
    pub(crate) fn url_for_path(&self, path: &str) -> Result<Url, ClientError> {
        if !path.starts_with('/') {
            return Err(ClientError::InvalidConfig { reason: format!("API path must start with `/`: {path:?}") });
        }
        let joined = format!("{}{path}", self.base.as_str().trim_end_matches('/'));
        let url = Url::parse(&joined)
            .map_err(|e| ClientError::InvalidConfig { reason: format!("invalid API path {path:?}: {e}") })?;
        self.same_origin(url)
    }

    /// Refuses URLs (such as a `Link` target) on another origin: credentials go to GitHub only.
    pub(crate) fn same_origin(&self, url: Url) -> Result<Url, ClientError> {
        if url.origin() == self.base.origin() {
            Ok(url)
        } else {
            Err(ClientError::InvalidResponse {
                reason: format!("refusing to follow a URL on another host: {}", url.origin().ascii_serialization()),
            })
        }
    }

    /// The last rate-limit headers seen for `scope` from `resource`'s bucket.
    pub(crate) fn rate_limit(&self, scope: AuthScope, resource: &RateLimitResource) -> Option<RateLimitSnapshot> {
        self.limits.lock().unwrap_or_else(|p| p.into_inner()).get(&scope)?.get(resource).copied()
    }

    fn record_rate_limit(&self, scope: AuthScope, resource: RateLimitResource, snapshot: RateLimitSnapshot) {
        let mut limits = self.limits.lock().unwrap_or_else(|p| p.into_inner());
        let buckets = limits.entry(scope).or_default();
        if buckets.len() < MAX_BUCKETS_PER_SCOPE || buckets.contains_key(&resource) {
            buckets.insert(resource, snapshot);
        }
    }

    /// The bucket a request to `url` spends, from its path below the API root (GHES's `/api/v3`).
    fn resource_for(&self, url: &Url) -> RateLimitResource {
        let root = self.base.path().trim_end_matches('/');
        RateLimitResource::for_path(url.path().strip_prefix(root).unwrap_or(url.path()))
    }

    fn pacer(&self, id: InstallationId) -> Pacer {
        let mut pacers = self.pacers.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(pacers.entry(id).or_default())
    }

    /// A valid installation token: cached, or exchanged once for all concurrent callers.
    pub(crate) async fn installation_token(&self, id: InstallationId) -> Result<InstallationToken, ClientError> {
        self.tokens.get_or_mint(id, || self.clock.now(), self.config.token_refresh_margin, || self.exchange(id)).await
    }

    /// `POST /app/installations/{id}/access_tokens` with the App JWT (boxed: it recurses into [`Self::execute`]).
    fn exchange(&self, id: InstallationId) -> BoxFuture<'_, Result<InstallationToken, ClientError>> {
        Box::pin(async move {
            let url = self.url(&["app", "installations", &id.to_string(), "access_tokens"]);
            // Minting twice is harmless, so a 5xx may be retried.
            let request = ApiRequest { method: Method::POST, url, body: None, idempotent: true };
            let response = self.execute(AuthScope::App, request).await?;
            let minted: AccessTokenResponse = response.json()?;
            let expires_at = parse_expires_at(&minted.expires_at)?;
            tracing::debug!(installation = id.0, expires_at = expires_at.0, "minted an installation token");
            Ok(InstallationToken::new(minted.token, expires_at, self.clock.now()))
        })
    }

    /// Sends `request` as `scope`, pacing mutations of an installation.
    pub(crate) async fn execute(&self, scope: AuthScope, request: ApiRequest) -> Result<ApiResponse, ClientError> {
        let mutation = !matches!(request.method, Method::GET | Method::HEAD);
        let AuthScope::Installation(id) = scope else {
            return self.execute_unpaced(scope, &request).await;
        };
        if !mutation || self.config.mutation_interval.is_zero() {
            return self.execute_unpaced(scope, &request).await;
        }
        // Held across the call: GitHub asks for mutations to be serial and spaced.
        let mut last = self.pacer(id).lock_owned().await;
        if let Some(last) = *last {
            let next = last.plus(self.config.mutation_interval);
            let now = self.clock.now();
            if now < next {
                self.timer.sleep(next.since(now)).await;
            }
        }
        let result = self.execute_unpaced(scope, &request).await;
        *last = Some(self.clock.now());
        result
    }

    /// Full jitter over `base · 2^retry`: replicas retrying the same outage spread out instead of retrying in step.
    fn backoff(&self, base: Duration, retry: u32) -> Duration {
        // No cap beyond the configured retry counts, as before jitter.
        full_jitter_backoff(base, Duration::MAX, retry, self.random.next_u64())
    }

    /// Waits out a rate limit if the policy allows it.
    async fn wait_for_rate_limit(
        &self,
        scope: AuthScope,
        kind: RateLimitKind,
        wait: Duration,
    ) -> Result<(), ClientError> {
        match self.config.rate_limit_policy {
            RateLimitPolicy::Wait { max_wait } if wait <= max_wait => {
                tracing::warn!(%scope, ?kind, wait_secs = wait.as_secs(), "GitHub rate limit: waiting");
                self.timer.sleep(wait).await;
                Ok(())
            }
            _ => Err(ClientError::RateLimited { kind, retry_after: wait }),
        }
    }

    async fn execute_unpaced(&self, scope: AuthScope, request: &ApiRequest) -> Result<ApiResponse, ClientError> {
        let config = &self.config;
        let cache_key = (request.method == Method::GET).then(|| format!("{scope}|{}", request.url));
        let resource = self.resource_for(&request.url);
        let mut rate_limit_retries = 0u32;
        let mut secondary_backoff = config.secondary_limit_backoff;
        let mut server_retries = 0u32;
        let mut fresh_token_retries = 0u32;
        let mut reminted = false;
        loop {
            // A spent budget is known from its bucket's last answer: wait for the reset instead of spending a 403.
            if let Some(wait) = self.rate_limit(scope, &resource).and_then(|s| s.wait_at(self.clock.now())) {
                self.wait_for_rate_limit(scope, RateLimitKind::Primary, wait).await?;
            }
            let token = match scope {
                AuthScope::App => None,
                AuthScope::Installation(id) => Some(self.installation_token(id).await?),
            };
            let authorization = match &token {
                Some(token) => bearer(token.expose_secret())?,
                None => bearer(self.credentials.jwt(self.clock.now())?.expose_secret())?,
            };
            let cached = match (&cache_key, &self.etags) {
                (Some(key), Some(etags)) => etags.get(key).await,
                _ => None,
            };

            let mut builder = self
                .http
                .request(request.method.clone(), request.url.clone())
                .header(header::ACCEPT, "application/vnd.github+json")
                .header("x-github-api-version", config.api_version.as_str())
                .header(header::AUTHORIZATION, authorization);
            if let Some(cached) = &cached {
                builder = builder.header(header::IF_NONE_MATCH, cached.etag.clone());
            }
            match &request.body {
                Some(body) => builder = builder.header(header::CONTENT_TYPE, "application/json").body(body.clone()),
                // hyper omits the length of an empty body, and GitHub answers such a POST/PUT/PATCH with 411.
                None if matches!(request.method, Method::POST | Method::PUT | Method::PATCH) => {
                    builder = builder.header(header::CONTENT_LENGTH, "0");
                }
                None => {}
            }

            let sent = match builder.send().await {
                Ok(response) => {
                    let status = response.status();
                    let headers = response.headers().clone();
                    response.bytes().await.map(|body| (status, headers, body))
                }
                Err(error) => Err(error),
            };
            let (status, headers, body) = match sent {
                Ok(answer) => answer,
                Err(error) => {
                    // A refused connection never reached GitHub, so even a POST may go again.
                    let may_retry = request.idempotent || error.is_connect();
                    if may_retry && server_retries < config.max_server_error_retries {
                        let wait = self.backoff(config.server_error_backoff, server_retries);
                        server_retries += 1;
                        let path = request.url.path();
                        tracing::warn!(%scope, method = %request.method, path, "GitHub unreachable; retrying");
                        self.timer.sleep(wait).await;
                        continue;
                    }
                    if error.is_timeout() {
                        return Err(ClientError::Timeout { timeout: config.request_timeout });
                    }
                    return Err(ClientError::Transport { source: Box::new(error.without_url()) });
                }
            };
            let now = self.clock.now();
            if let Some(snapshot) = RateLimitSnapshot::from_headers(&headers) {
                // GitHub names the bucket it counted; the path's bucket stands in when it does not.
                let counted = RateLimitResource::from_headers(&headers).unwrap_or_else(|| resource.clone());
                self.record_rate_limit(scope, counted, snapshot);
            }
            let link = headers.get(header::LINK).and_then(|v| v.to_str().ok()).map(str::to_owned);

            if status == StatusCode::NOT_MODIFIED {
                return match cached {
                    Some(cached) => {
                        Ok(ApiResponse { body: cached.body.clone(), link: cached.link.clone(), not_modified: true })
                    }
                    None => Err(ClientError::InvalidResponse {
                        reason: "304 Not Modified to an unconditional request".to_owned(),
                    }),
                };
            }
            if status.is_success() {
                if let (Some(key), Some(etags), Some(etag)) = (&cache_key, &self.etags, headers.get(header::ETAG)) {
                    let entry = CachedGet { etag: etag.clone(), body: body.clone(), link: link.clone() };
                    etags.insert(key.clone(), Arc::new(entry)).await;
                }
                return Ok(ApiResponse { body, link, not_modified: false });
            }

            let GitHubErrorBody { message, documentation_url, errors } = github_message(&body, status);
            if status == StatusCode::UNAUTHORIZED {
                if let (AuthScope::Installation(id), Some(token)) = (scope, &token) {
                    // GitHub may refuse a token for a moment after minting it (replication lag).
                    let young = now.since(token.minted_at()) < config.fresh_token_window;
                    if young && fresh_token_retries < config.fresh_token_retries {
                        let wait = self.backoff(config.fresh_token_backoff, fresh_token_retries);
                        fresh_token_retries += 1;
                        tracing::debug!(installation = id.0, "fresh installation token refused; retrying");
                        self.timer.sleep(wait).await;
                        continue;
                    }
                    // An older token may have been revoked or expired early: mint a new one, once.
                    if !reminted {
                        reminted = true;
                        self.tokens.invalidate(id, token).await;
                        continue;
                    }
                }
            } else if let Some(hit) = classify(status, &headers, &message, now) {
                let wait = match hit.wait {
                    Some(wait) => wait,
                    None => {
                        let wait = secondary_backoff;
                        secondary_backoff = secondary_backoff.saturating_mul(2);
                        wait
                    }
                };
                if rate_limit_retries >= config.max_rate_limit_retries {
                    return Err(ClientError::RateLimited { kind: hit.kind, retry_after: wait });
                }
                rate_limit_retries += 1;
                self.wait_for_rate_limit(scope, hit.kind, wait).await?;
                continue;
            } else if status.is_server_error() && request.idempotent && server_retries < config.max_server_error_retries
            {
                let wait = self.backoff(config.server_error_backoff, server_retries);
                server_retries += 1;
                let path = request.url.path();
                tracing::warn!(%scope, status = status.as_u16(), path, "GitHub server error; retrying");
                self.timer.sleep(wait).await;
                continue;
            }
            return Err(ClientError::Api {
                method: request.method.to_string(),
                path: request.url.path().to_owned(),
                status: status.as_u16(),
                message,
                documentation_url,
                errors,
            });
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn empty_bodies_decode_as_unit_or_none() {
        let empty = ApiResponse { body: Bytes::new(), link: None, not_modified: false };
        empty.json::<()>().unwrap();
        assert_eq!(empty.json::<Option<u32>>().unwrap(), None);
        assert!(matches!(empty.json::<Vec<u32>>(), Err(ClientError::Decode { .. })));
    }

    #[test]
    fn error_bodies_fall_back_to_the_reason_phrase() {
        let found =
            github_message(br#"{"message":"Not Found","documentation_url":"https://d"}"#, StatusCode::NOT_FOUND);
        assert_eq!((found.message.as_str(), found.documentation_url.as_deref()), ("Not Found", Some("https://d")));
        assert!(found.errors.is_empty());
        let empty = github_message(b"", StatusCode::BAD_GATEWAY);
        assert_eq!((empty.message.as_str(), empty.documentation_url), ("Bad Gateway", None));
        // A proxy's page is quoted (briefly), so the error says who answered.
        let html = github_message(b"<html>upstream connect error</html>", StatusCode::BAD_GATEWAY);
        assert_eq!(html.message, "<html>upstream connect error</html>");
        let other = github_message(br#"{"error":{"message":"not GitHub's shape"}}"#, StatusCode::BAD_GATEWAY);
        assert_eq!(other.message, "not GitHub's shape");
        // An `errors` GitHub did not shape as usual keeps the message.
        let odd = github_message(br#"{"message":"Validation Failed","errors":{"x":1}}"#, StatusCode::BAD_REQUEST);
        assert_eq!((odd.message.as_str(), odd.errors.len()), ("Validation Failed", 0));
    }
}
