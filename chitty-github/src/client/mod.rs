//! The GitHub App client: act on GitHub as an App, politely.
//!
//! [`GitHubApp`](crate::client::GitHubApp) signs RS256 JWTs with the App's private key, exchanges them
//! for installation tokens that it caches per installation and refreshes before they expire (one
//! exchange however many callers ask at once), and sends REST calls the way GitHub asks integrators to:
//! it waits out primary and secondary rate limits (or fails fast, by
//! [`RateLimitPolicy`](crate::client::RateLimitPolicy)), each request on the bucket it spends
//! ([`RateLimitResource`](crate::client::RateLimitResource): core, search, code_search, graphql, …,
//! as `x-ratelimit-resource` names them), sends `Content-Length: 0` on bodiless mutations (GitHub
//! answers 411 without it), keeps GitHub's `errors` array in
//! [`ClientError::Api`](crate::client::ClientError::Api), retries 5xx answers only for requests that are
//! safe to repeat, never retries other 4xx, revalidates GETs with `ETag` (a 304 costs no rate limit),
//! follows `Link` pagination, and spaces mutating requests of an installation at least a second apart.
//! Time comes from an injected [`chitty_core::Clock`] and waiting goes through an injected
//! [`chitty_core::Timer`], so tests run retry schedules instantly.
//!
//! ```no_run
//! use chitty_github::client::{
//!     AppCredentials, CheckConclusion, CreateCheckRun, GitHubApp, InstallationId, UpdateCheckRun,
//! };
//!
//! # async fn run() -> Result<(), chitty_github::client::ClientError> {
//! let pem = std::fs::read("my-app.private-key.pem").map_err(|e| {
//!     chitty_github::client::ClientError::InvalidConfig { reason: e.to_string() }
//! })?;
//! let app = GitHubApp::builder(AppCredentials::from_pem("Iv23liExampleClientId", &pem)?)
//!     // GitHub Enterprise Server: .with_base_url("https://github.example.com/api/v3")
//!     .with_user_agent("my-review-bot")
//!     .build()?;
//!
//! let repo = app.installation(InstallationId(42));
//! repo.create_comment("octo-org", "hello", 7, "Thanks! Review to follow.").await?;
//! repo.add_labels("octo-org", "hello", 7, &["triage"]).await?;
//! let run = repo
//!     .create_check_run("octo-org", "hello", &CreateCheckRun::new("review", "6dcb09b5b578"))
//!     .await?;
//! let done = UpdateCheckRun::completed(CheckConclusion::Success);
//! repo.update_check_run("octo-org", "hello", run.id, &done).await?;
//! let open_pulls: Vec<serde_json::Value> = repo.list("/repos/octo-org/hello/pulls?state=open").await?;
//! # let _ = open_pulls;
//! # Ok(())
//! # }
//! ```

mod actions;
mod config;
mod error;
mod jwt;
mod link;
mod manifest;
mod rate_limit;
mod token;
mod transport;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chitty_core::{Clock, RandomSource, Timer};
use reqwest::Url;
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use actions::{
    CheckAnnotation, CheckAnnotationLevel, CheckConclusion, CheckRun, CheckRunOutput, CheckRunStatus, CreateCheckRun,
    IssueComment, Label, UpdateCheckRun,
};
pub use config::{ClientConfig, DEFAULT_API_VERSION, DEFAULT_BASE_URL, RateLimitPolicy};
pub use error::{ApiErrorDetail, ClientError, RateLimitKind};
pub use jwt::{AppCredentials, AppJwt, JWT_BACKDATE, JWT_LIFETIME};
pub use manifest::convert_manifest_code;
pub use rate_limit::{RateLimitResource, RateLimitSnapshot};
/// The HTTP method type [`InstallationClient::send`] takes.
pub use reqwest::Method;
pub use token::{InstallationId, InstallationToken};

use transport::{ApiRequest, AppInner, AuthScope};

/// How long to wait for a TCP/TLS connection to GitHub.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A GitHub App: its credentials, token cache, rate-limit state and HTTP connections.
///
/// Cheap to clone (shared state). Build one per App with [`GitHubApp::builder`].
#[derive(Clone)]
pub struct GitHubApp {
    inner: Arc<AppInner>,
}

impl fmt::Debug for GitHubApp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.fmt(f)
    }
}

/// Builds a [`GitHubApp`].
#[derive(Debug)]
pub struct GitHubAppBuilder {
    credentials: AppCredentials,
    config: ClientConfig,
    clock: Option<Arc<dyn Clock>>,
    timer: Option<Arc<dyn Timer>>,
    random: Option<Arc<dyn RandomSource>>,
}

impl GitHubAppBuilder {
    /// Replaces the whole configuration.
    pub fn with_config(mut self, config: ClientConfig) -> Self {
        self.config = config;
        self
    }

    /// API root, e.g. `https://github.example.com/api/v3` for GitHub Enterprise Server.
    pub fn with_base_url(mut self, base_url: impl Into<String>) -> Self {
        self.config.base_url = base_url.into();
        self
    }

    /// The `User-Agent` header (GitHub asks for the App's name).
    pub fn with_user_agent(mut self, user_agent: impl Into<String>) -> Self {
        self.config.user_agent = user_agent.into();
        self
    }

    /// The clock for JWT claims, token expiry and pacing (default: the wall clock).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// The timer for back-offs, rate-limit waits and pacing (default: tokio's).
    pub fn with_timer(mut self, timer: Arc<dyn Timer>) -> Self {
        self.timer = Some(timer);
        self
    }

    /// The random source of retry jitter (default: [`chitty_core::runtime::SystemRandom`]; a
    /// [`chitty_core::SeededRandom`] in tests).
    pub fn with_random(mut self, random: Arc<dyn RandomSource>) -> Self {
        self.random = Some(random);
        self
    }

    /// Checks the configuration and builds the client.
    pub fn build(self) -> Result<GitHubApp, ClientError> {
        let base = Url::parse(&self.config.base_url)
            .map_err(|e| ClientError::InvalidConfig { reason: format!("base URL {:?}: {e}", self.config.base_url) })?;
        if !matches!(base.scheme(), "https" | "http") || base.cannot_be_a_base() {
            return Err(ClientError::InvalidConfig {
                reason: format!("base URL {:?} must be an http(s) URL", self.config.base_url),
            });
        }
        let http = reqwest::Client::builder()
            .user_agent(self.config.user_agent.clone())
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(self.config.request_timeout)
            .build()
            .map_err(|e| ClientError::InvalidConfig { reason: format!("HTTP client: {e}") })?;
        let clock = self.clock.unwrap_or_else(|| Arc::new(chitty_core::runtime::SystemClock));
        let timer = self.timer.unwrap_or_else(|| Arc::new(chitty_core::runtime::TokioTimer));
        let random = self.random.unwrap_or_else(|| Arc::new(chitty_core::runtime::SystemRandom::new()));
        let inner = AppInner::new(self.credentials, self.config, base, http, clock, timer, random);
        Ok(GitHubApp { inner: Arc::new(inner) })
    }
}

impl GitHubApp {
    /// A builder with [`ClientConfig::default`] (api.github.com, wall clock, tokio timer).
    pub fn builder(credentials: AppCredentials) -> GitHubAppBuilder {
        GitHubAppBuilder { credentials, config: ClientConfig::default(), clock: None, timer: None, random: None }
    }

    /// A builder from the environment: the issuer from `GITHUB_APP_CLIENT_ID` (or `GITHUB_APP_ID`),
    /// the key from `GITHUB_APP_PRIVATE_KEY` (PEM text; `\n` escapes allowed) or the file named by
    /// `GITHUB_APP_PRIVATE_KEY_PATH`, and the base URL from `GITHUB_API_URL` when set.
    pub fn builder_from_env() -> Result<GitHubAppBuilder, ClientError> {
        Self::builder_from_vars(|name| std::env::var(name).ok())
    }

    /// Like [`builder_from_env`](Self::builder_from_env), reading variables through `var`.
    pub fn builder_from_vars(var: impl Fn(&str) -> Option<String>) -> Result<GitHubAppBuilder, ClientError> {
        let missing = |what: &str| ClientError::InvalidConfig { reason: format!("{what} is not set") };
        let issuer = var("GITHUB_APP_CLIENT_ID")
            .or_else(|| var("GITHUB_APP_ID"))
            .ok_or_else(|| missing("GITHUB_APP_CLIENT_ID (or GITHUB_APP_ID)"))?;
        let pem = match (var("GITHUB_APP_PRIVATE_KEY"), var("GITHUB_APP_PRIVATE_KEY_PATH")) {
            // .env files often carry the PEM on one line with `\n` escapes.
            (Some(text), _) => text.replace("\\n", "\n").into_bytes(),
            (None, Some(path)) => std::fs::read(&path).map_err(|e| ClientError::InvalidConfig {
                reason: format!("reading the private key at {path}: {e}"),
            })?,
            (None, None) => return Err(missing("GITHUB_APP_PRIVATE_KEY (or GITHUB_APP_PRIVATE_KEY_PATH)")),
        };
        let builder = GitHubApp::builder(AppCredentials::from_pem(issuer, &pem)?);
        Ok(match var("GITHUB_API_URL") {
            Some(base_url) => builder.with_base_url(base_url),
            None => builder,
        })
    }

    /// The configuration in use.
    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// A fresh App JWT, for `/app/...` endpoints this client does not wrap.
    pub fn jwt(&self) -> Result<AppJwt, ClientError> {
        self.inner.credentials.jwt(self.inner.clock.now())
    }

    /// A valid token for `installation` (cached; refreshed before expiry), e.g. for `git clone`.
    pub async fn installation_token(&self, installation: InstallationId) -> Result<InstallationToken, ClientError> {
        self.inner.installation_token(installation).await
    }

    /// A client acting as `installation`.
    pub fn installation(&self, installation: InstallationId) -> InstallationClient {
        InstallationClient { inner: Arc::clone(&self.inner), installation }
    }
}

/// A GET answer and whether it was served from the ETag cache after a `304 Not Modified`.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Fetched<T> {
    /// The decoded body.
    pub value: T,
    /// `true` when GitHub answered 304 and the cached body was used (no rate limit spent).
    pub not_modified: bool,
}

/// REST calls authenticated as one installation of the App. Cheap to clone.
#[derive(Clone)]
pub struct InstallationClient {
    inner: Arc<AppInner>,
    installation: InstallationId,
}

impl fmt::Debug for InstallationClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InstallationClient")
            .field("installation", &self.installation)
            .field("base_url", &self.inner.base.as_str())
            .finish()
    }
}

impl InstallationClient {
    /// The installation this client acts as.
    pub fn installation_id(&self) -> InstallationId {
        self.installation
    }

    /// This installation's token (cached; refreshed before expiry).
    pub async fn token(&self) -> Result<InstallationToken, ClientError> {
        self.inner.installation_token(self.installation).await
    }

    /// The rate limit of `resource`'s bucket (e.g. [`RateLimitResource::CORE`]) as of this
    /// installation's last answer from it.
    pub fn rate_limit(&self, resource: &RateLimitResource) -> Option<RateLimitSnapshot> {
        self.inner.rate_limit(AuthScope::Installation(self.installation), resource)
    }

    /// `GET path` (e.g. `/repos/octo/hello`), revalidated with `ETag` when cached.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        Ok(self.fetch(path).await?.value)
    }

    /// Like [`get`](Self::get), also saying whether GitHub answered `304 Not Modified`.
    pub async fn fetch<T: DeserializeOwned>(&self, path: &str) -> Result<Fetched<T>, ClientError> {
        let url = self.inner.url_for_path(path)?;
        let response = self.execute(ApiRequest::new(Method::GET, url, None)).await?;
        Ok(Fetched { value: response.json()?, not_modified: response.not_modified })
    }

    /// Every item of a paginated list endpoint (one answering a JSON array), following `Link:
    /// rel="next"`; asks for 100 per page unless `path` sets `per_page`.
    ///
    /// Fails with [`ClientError::InvalidResponse`] rather than truncate past
    /// [`ClientConfig::max_pages`] pages.
    pub async fn list<T: DeserializeOwned>(&self, path: &str) -> Result<Vec<T>, ClientError> {
        let mut url = self.inner.url_for_path(path)?;
        if !url.query_pairs().any(|(key, _)| key == "per_page") {
            url.query_pairs_mut().append_pair("per_page", "100");
        }
        let mut items = Vec::new();
        for _ in 0..self.inner.config.max_pages {
            let response = self.execute(ApiRequest::new(Method::GET, url.clone(), None)).await?;
            items.extend(response.json::<Vec<T>>()?);
            let Some(next) = response.link.as_deref().and_then(link::next_link) else {
                return Ok(items);
            };
            let next = Url::parse(next)
                .map_err(|e| ClientError::InvalidResponse { reason: format!("unparseable `Link` target: {e}") })?;
            url = self.inner.same_origin(next)?;
        }
        Err(ClientError::InvalidResponse {
            reason: format!("more than {} pages at {}", self.inner.config.max_pages, url.path()),
        })
    }

    /// `GET` of the path made of `segments` (each percent-encoded as one segment, so a file path
    /// or branch name cannot change the route) with `query`.
    pub(crate) async fn get_segments<T: DeserializeOwned>(
        &self,
        segments: &[&str],
        query: &[(&str, &str)],
    ) -> Result<T, ClientError> {
        let mut url = self.inner.url(segments);
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        self.execute(ApiRequest::new(Method::GET, url, None)).await?.json()
    }

    /// `POST path` with a JSON body (not retried after a 5xx: it may have taken effect).
    pub async fn post<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        self.send(Method::POST, path, Some(body)).await
    }

    /// `PATCH path` with a JSON body.
    pub async fn patch<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        self.send(Method::PATCH, path, Some(body)).await
    }

    /// Any method with an optional JSON body; mutations are paced, GETs are revalidated. Use `T = ()`
    /// for answers without a body (204).
    pub async fn send<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, ClientError> {
        let url = self.inner.url_for_path(path)?;
        let body = body.map(encode_json).transpose()?;
        self.execute(ApiRequest::new(method, url, body)).await?.json()
    }

    async fn execute(&self, request: ApiRequest) -> Result<transport::ApiResponse, ClientError> {
        self.inner.execute(AuthScope::Installation(self.installation), request).await
    }
}

/// A request body as JSON bytes.
fn encode_json<B: Serialize + ?Sized>(body: &B) -> Result<Bytes, ClientError> {
    serde_json::to_vec(body)
        .map(Bytes::from)
        .map_err(|e| ClientError::InvalidConfig { reason: format!("request body is not JSON-serializable: {e}") })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Test-only key (see tests/fixtures/README.md).
    const KEY: &[u8] = include_bytes!("../../tests/fixtures/test-app-private-key.pem");

    fn app(base_url: &str) -> Result<GitHubApp, ClientError> {
        GitHubApp::builder(AppCredentials::from_pem("1", KEY).unwrap()).with_base_url(base_url).build()
    }

    #[test]
    fn enterprise_urls_keep_the_prefix_and_encode_segments() {
        let app = app("https://ghe.example.com/api/v3/").unwrap();
        let url = app.inner.url(&["repos", "o", "r", "issues", "1", "labels", "needs review/x"]);
        assert_eq!(url.as_str(), "https://ghe.example.com/api/v3/repos/o/r/issues/1/labels/needs%20review%2Fx");
        let url = app.inner.url_for_path("/repos/o/r/pulls?state=open").unwrap();
        assert_eq!(url.as_str(), "https://ghe.example.com/api/v3/repos/o/r/pulls?state=open");
        assert!(app.inner.url_for_path("repos/o/r").is_err());
    }

    #[test]
    fn credentials_never_go_to_another_origin() {
        let app = app("https://api.github.com").unwrap();
        let elsewhere = Url::parse("https://evil.example.com/repos?page=2").unwrap();
        assert!(matches!(app.inner.same_origin(elsewhere), Err(ClientError::InvalidResponse { .. })));
        let downgraded = Url::parse("http://api.github.com/repos?page=2").unwrap();
        assert!(app.inner.same_origin(downgraded).is_err());
        let same = Url::parse("https://api.github.com/repositories/1/issues?page=2").unwrap();
        assert!(app.inner.same_origin(same).is_ok());
    }

    #[test]
    fn builds_from_environment_variables() {
        let pem = String::from_utf8(KEY.to_vec()).unwrap().replace('\n', "\\n");
        let vars = |name: &str| match name {
            "GITHUB_APP_ID" => Some("12345".to_owned()),
            "GITHUB_APP_PRIVATE_KEY" => Some(pem.clone()),
            "GITHUB_API_URL" => Some("https://ghe.example.com/api/v3".to_owned()),
            _ => None,
        };
        let app = GitHubApp::builder_from_vars(vars).unwrap().build().unwrap();
        assert_eq!(app.config().base_url, "https://ghe.example.com/api/v3");
        assert_eq!(app.inner.credentials.issuer(), "12345");

        let err = GitHubApp::builder_from_vars(|_| None).unwrap_err();
        assert!(err.to_string().contains("GITHUB_APP_CLIENT_ID"));
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/test-app-private-key.pem");
        let from_file = |name: &str| match name {
            "GITHUB_APP_CLIENT_ID" => Some("Iv23li".to_owned()),
            "GITHUB_APP_PRIVATE_KEY_PATH" => Some(path.to_owned()),
            _ => None,
        };
        let app = GitHubApp::builder_from_vars(from_file).unwrap().build().unwrap();
        assert_eq!(app.config().base_url, DEFAULT_BASE_URL);
        let missing_file = |name: &str| {
            (name == "GITHUB_APP_ID")
                .then(|| "1".to_owned())
                .or_else(|| (name == "GITHUB_APP_PRIVATE_KEY_PATH").then(|| "/nonexistent/key.pem".to_owned()))
        };
        assert!(matches!(GitHubApp::builder_from_vars(missing_file), Err(ClientError::InvalidConfig { .. })));
    }

    #[test]
    fn unusable_base_urls_are_refused() {
        assert!(matches!(app("not a url"), Err(ClientError::InvalidConfig { .. })));
        assert!(matches!(app("ftp://example.com"), Err(ClientError::InvalidConfig { .. })));
        assert!(matches!(app("mailto:someone@example.com"), Err(ClientError::InvalidConfig { .. })));
    }
}
