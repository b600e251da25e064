//! The install flow as axum routes (features `server` and `client`): register the App from its
//! manifest, then record each installation GitHub redirects back with.
//!
//! - `GET /github/setup` ([`SETUP_PATH`]): a page whose form posts the [`AppManifest`] to GitHub
//!   (`{web}/settings/apps/new`, or `{web}/organizations/{org}/settings/apps/new` with
//!   `?organization=` or [`AppSetupBuilder::organization`]), with a one-use `state` that is also
//!   set in a `SameSite=Lax`, `HttpOnly` cookie.
//! - `GET /github/setup/callback?code=…&state=…` ([`SETUP_CALLBACK_PATH`]): checks the `state`
//!   against the cookie and the pending ones (CSRF; each is used once and lives an hour, as the
//!   code does), exchanges the code at `POST {api}/app-manifests/{code}/conversions`, and saves the
//!   App id, private key, webhook secret and client credentials through the [`CredentialsStore`].
//! - `GET /github/callback?installation_id=…&setup_action=install|update`
//!   ([`INSTALL_CALLBACK_PATH`]): reads the installation with the App JWT (`GET
//!   /app/installations/{id}`) before trusting the parameter, and records it in the
//!   [`InstallationStore`]; an id GitHub does not know for this App, or an API failure, gives an
//!   error page and records nothing.
//!
//! Once an App is registered (or given, registered by hand) the setup pages refuse to register
//! another (409), unless [`AppSetupBuilder::allow_reregistration`]: anyone who can reach them could
//! otherwise replace the App's credentials with those of an App of their own. Before that, whoever
//! reaches the setup page first registers the App: [`AppSetupBuilder::setup_token`] makes it need
//! the link [`AppSetup::setup_url`] gives, for the server to print at start-up. Pages send `Referrer-Policy: no-referrer`
//! (the callback's URL carries the code) and a restrictive `Content-Security-Policy`.
//!
//! ```
//! use std::sync::Arc;
//! use chitty_github::credentials::FileCredentialsStore;
//! use chitty_github::installations::MemoryInstallationStore;
//! use chitty_github::setup::AppSetup;
//!
//! let setup = AppSetup::builder("my-review-bot", "https://bot.example.com")
//!     .credentials_store(Arc::new(FileCredentialsStore::new("github-app.json")))
//!     .installation_store(Arc::new(MemoryInstallationStore::new()))
//!     .build()?;
//! let router: axum::Router = setup.router();
//! # drop(router);
//! # Ok::<(), chitty_github::Error>(())
//! ```

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use axum::Router;
use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chitty_core::runtime::SystemClock;
use chitty_core::{Clock, Timer, Timestamp};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use reqwest::Url;
use sha2::{Digest, Sha256};

use crate::client::{ClientConfig, ClientError, GitHubApp, InstallationId, convert_manifest_code};
use crate::credentials::{AppRegistration, CredentialsStore, MemoryCredentialsStore, SecretText};
use crate::error::{Error, Result};
use crate::installations::{InstallationChange, InstallationStore, MemoryInstallationStore};
use crate::manifest::{AppManifest, INSTALL_CALLBACK_PATH, SETUP_CALLBACK_PATH, SETUP_PATH};

/// github.com's web address.
pub const GITHUB_WEB_URL: &str = "https://github.com";
/// The cookie that binds a setup's `state` to the browser that started it.
pub const STATE_COOKIE: &str = "chitty_github_setup";
/// How long a setup's `state` stays valid: GitHub's manifest codes live an hour.
pub const STATE_TTL: Duration = Duration::from_secs(60 * 60);
/// Most setups pending at once; past it the setup page answers 503 (each costs a page load, not a login).
const MAX_PENDING_STATES: usize = 1024;

/// Builds an [`AppSetup`].
pub struct AppSetupBuilder {
    name: String,
    public_url: String,
    web_url: String,
    api_url: Option<String>,
    organization: Option<String>,
    manifest: Option<AppManifest>,
    credentials: Option<Arc<dyn CredentialsStore>>,
    installations: Option<Arc<dyn InstallationStore>>,
    app: Option<GitHubApp>,
    client_config: ClientConfig,
    clock: Option<Arc<dyn Clock>>,
    timer: Option<Arc<dyn Timer>>,
    allow_reregistration: bool,
    setup_token: Option<SecretText>,
}

impl fmt::Debug for AppSetupBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AppSetupBuilder")
            .field("name", &self.name)
            .field("public_url", &self.public_url)
            .field("web_url", &self.web_url)
            .field("api_url", &self.api_url)
            .field("organization", &self.organization)
            .finish_non_exhaustive()
    }
}

impl AppSetupBuilder {
    /// GitHub Enterprise Server at `web_url` (`https://ghe.example.com`): the form posts there and
    /// the API is `{web_url}/api/v3` (unless [`api_url`](Self::api_url) says otherwise).
    pub fn github_enterprise(mut self, web_url: impl Into<String>) -> Self {
        let web_url = web_url.into().trim_end_matches('/').to_owned();
        self.api_url = Some(format!("{web_url}/api/v3"));
        self.web_url = web_url;
        self
    }

    /// The REST API root (default `https://api.github.com`, or the Enterprise one): for a proxy or a test server.
    pub fn api_url(mut self, api_url: impl Into<String>) -> Self {
        self.api_url = Some(api_url.into());
        self
    }

    /// Registers the App for this organisation (login) by default, instead of the user's account.
    pub fn organization(mut self, login: impl Into<String>) -> Self {
        self.organization = Some(login.into());
        self
    }

    /// The manifest to post (default: [`AppManifest::new`] with the name and public URL).
    pub fn manifest(mut self, manifest: AppManifest) -> Self {
        self.manifest = Some(manifest);
        self
    }

    /// Where the App's credentials are saved (required, unless the App is given with [`app`](Self::app)).
    pub fn credentials_store(mut self, store: Arc<dyn CredentialsStore>) -> Self {
        self.credentials = Some(store);
        self
    }

    /// Where verified installations are recorded (default: in memory).
    pub fn installation_store(mut self, store: Arc<dyn InstallationStore>) -> Self {
        self.installations = Some(store);
        self
    }

    /// The App client, when the App was registered by hand (otherwise it is built from the saved
    /// credentials); the setup pages then refuse to register another.
    pub fn app(mut self, app: GitHubApp) -> Self {
        self.app = Some(app);
        self
    }

    /// The configuration of the App client built from saved credentials (its base URL is the API URL).
    pub fn client_config(mut self, config: ClientConfig) -> Self {
        self.client_config = config;
        self
    }

    /// The clock for `state` expiry and the App client (default: the system clock).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// The timer of the App client built from saved credentials (default: tokio's).
    pub fn timer(mut self, timer: Arc<dyn Timer>) -> Self {
        self.timer = Some(timer);
        self
    }

    /// Requires `?token=` with this value on the setup page (see [`random_token`] and
    /// [`AppSetup::setup_url`]): until the App is registered, whoever reaches the page first
    /// registers it, so a server reachable by others should print a one-time link instead.
    pub fn setup_token(mut self, token: impl Into<String>) -> Self {
        self.setup_token = Some(SecretText::new(token));
        self
    }

    /// Lets the setup pages register a new App when one is already saved (default: refused).
    pub fn allow_reregistration(mut self, allow: bool) -> Self {
        self.allow_reregistration = allow;
        self
    }

    /// Checks the URLs and builds the flow.
    pub fn build(self) -> Result<AppSetup> {
        let invalid = |reason: String| Error::InvalidConfig { reason };
        let public = http_url("public URL", &self.public_url).map_err(invalid)?;
        let web = http_url("GitHub web URL", &self.web_url).map_err(invalid)?;
        let api_url = match self.api_url {
            Some(api_url) => api_url,
            None if self.web_url.trim_end_matches('/') == GITHUB_WEB_URL => crate::client::DEFAULT_BASE_URL.to_owned(),
            None => format!("{}/api/v3", self.web_url.trim_end_matches('/')),
        };
        http_url("GitHub API URL", &api_url).map_err(invalid)?;
        if let Some(org) = &self.organization
            && !is_login(org)
        {
            return Err(invalid(format!("{org:?} is not a GitHub organisation login")));
        }
        let by_hand = self.app.is_some();
        let credentials = match (self.credentials, by_hand) {
            (Some(store), _) => store,
            // Registered by hand: nothing to save, and the setup pages refuse to register another App.
            (None, true) => Arc::new(MemoryCredentialsStore::new()) as Arc<dyn CredentialsStore>,
            (None, false) => {
                return Err(invalid("the install flow needs a credentials store for the App's credentials".into()));
            }
        };
        let public_root = public.as_str().trim_end_matches('/').to_owned();
        let manifest = self.manifest.unwrap_or_else(|| AppManifest::new(self.name, &public_root));
        let mut client_config = self.client_config;
        client_config.base_url = api_url.clone();
        if self.setup_token.as_ref().is_some_and(|t| t.expose_secret().len() < 16) {
            return Err(invalid("the setup token must be at least 16 characters".into()));
        }
        Ok(AppSetup {
            inner: Arc::new(SetupInner {
                by_hand,
                public_root,
                setup_token: self.setup_token,
                manifest,
                web_url: web.as_str().trim_end_matches('/').to_owned(),
                web_origin: web.origin().ascii_serialization(),
                organization: self.organization,
                credentials,
                installations: self.installations.unwrap_or_else(|| Arc::new(MemoryInstallationStore::new())),
                client_config,
                clock: self.clock.unwrap_or_else(|| Arc::new(SystemClock)),
                timer: self.timer,
                app: RwLock::new(self.app),
                states: Mutex::new(HashMap::new()),
                allow_reregistration: self.allow_reregistration,
                secure_cookie: public.scheme() == "https",
            }),
        })
    }
}

/// `text` as an absolute http(s) URL, or why not.
fn http_url(what: &str, text: &str) -> std::result::Result<Url, String> {
    let url = Url::parse(text).map_err(|e| format!("{what} {text:?}: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.cannot_be_a_base() || url.host().is_none() {
        return Err(format!("{what} {text:?} must be an http(s) URL"));
    }
    Ok(url)
}

/// GitHub logins: letters, digits and single hyphens, at most 39 characters.
fn is_login(login: &str) -> bool {
    (1..=39).contains(&login.len())
        && login.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !login.starts_with('-')
        && !login.ends_with('-')
}

/// The install flow: its pages and what they share. Cheap to clone.
#[derive(Clone)]
pub struct AppSetup {
    inner: Arc<SetupInner>,
}

struct SetupInner {
    /// An App client was given: the App was registered by hand.
    by_hand: bool,
    public_root: String,
    setup_token: Option<SecretText>,
    manifest: AppManifest,
    web_url: String,
    web_origin: String,
    organization: Option<String>,
    credentials: Arc<dyn CredentialsStore>,
    installations: Arc<dyn InstallationStore>,
    client_config: ClientConfig,
    clock: Arc<dyn Clock>,
    timer: Option<Arc<dyn Timer>>,
    app: RwLock<Option<GitHubApp>>,
    /// Pending `state` values and when each expires.
    states: Mutex<HashMap<String, Timestamp>>,
    allow_reregistration: bool,
    secure_cookie: bool,
}

impl fmt::Debug for AppSetup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = &self.inner;
        f.debug_struct("AppSetup")
            .field("app_name", &inner.manifest.name)
            .field("web_url", &inner.web_url)
            .field("api_url", &inner.client_config.base_url)
            .field("organization", &inner.organization)
            .field("credentials", &inner.credentials)
            .field("installations", &inner.installations)
            .finish_non_exhaustive()
    }
}

/// What the callback pages can end in, each with its status and a sentence for the user.
#[derive(Debug)]
struct PageError {
    status: StatusCode,
    title: &'static str,
    message: String,
}

impl PageError {
    fn new(status: StatusCode, title: &'static str, message: impl Into<String>) -> Self {
        PageError { status, title, message: message.into() }
    }
}

impl AppSetup {
    /// A builder for the App `name` served at `public_url`, on github.com.
    pub fn builder(name: impl Into<String>, public_url: impl Into<String>) -> AppSetupBuilder {
        AppSetupBuilder {
            name: name.into(),
            public_url: public_url.into(),
            web_url: GITHUB_WEB_URL.to_owned(),
            api_url: None,
            organization: None,
            manifest: None,
            credentials: None,
            installations: None,
            app: None,
            client_config: ClientConfig::default(),
            clock: None,
            timer: None,
            allow_reregistration: false,
            setup_token: None,
        }
    }

    /// The setup page's address, with the setup token when one is required: the link to print.
    pub fn setup_url(&self) -> String {
        let root = &self.inner.public_root;
        match &self.inner.setup_token {
            Some(token) => {
                let query: String = form_urlencoded::Serializer::new(String::new())
                    .append_pair("token", token.expose_secret())
                    .finish();
                format!("{root}{SETUP_PATH}?{query}")
            }
            None => format!("{root}{SETUP_PATH}"),
        }
    }

    /// Whether `given` is the setup token, when one is required (compared in constant time).
    fn token_accepted(&self, given: Option<&str>) -> bool {
        let Some(expected) = &self.inner.setup_token else {
            return true;
        };
        let Some(given) = given else {
            return false;
        };
        // Digests have one length, so the comparison's time says nothing about the token.
        let (a, b) = (Sha256::digest(expected.expose_secret().as_bytes()), Sha256::digest(given.as_bytes()));
        a.iter().zip(b.iter()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }

    /// The routes [`SETUP_PATH`], [`SETUP_CALLBACK_PATH`] and [`INSTALL_CALLBACK_PATH`], for any router state.
    pub fn router<S: Clone + Send + Sync + 'static>(&self) -> Router<S> {
        Router::new()
            .route(SETUP_PATH, get(setup_page))
            .route(SETUP_CALLBACK_PATH, get(setup_callback))
            .route(INSTALL_CALLBACK_PATH, get(install_callback))
            .with_state(self.clone())
    }

    /// The manifest the setup page posts.
    pub fn manifest(&self) -> &AppManifest {
        &self.inner.manifest
    }

    /// The installations recorded by the post-installation callback.
    pub fn installation_store(&self) -> &Arc<dyn InstallationStore> {
        &self.inner.installations
    }

    /// The App client: the one given, or one built from the saved credentials (`None` before registration).
    pub async fn app(&self) -> Result<Option<GitHubApp>> {
        if let Some(app) = self.inner.app.read().unwrap_or_else(|p| p.into_inner()).clone() {
            return Ok(Some(app));
        }
        let Some(registration) = self.inner.credentials.load().await? else {
            return Ok(None);
        };
        let app = self.app_from(&registration)?;
        *self.inner.app.write().unwrap_or_else(|p| p.into_inner()) = Some(app.clone());
        Ok(Some(app))
    }

    fn app_from(&self, registration: &AppRegistration) -> Result<GitHubApp> {
        let config_error = |e: ClientError| Error::InvalidConfig { reason: format!("the saved App credentials: {e}") };
        let mut builder = GitHubApp::builder(registration.app_credentials().map_err(config_error)?)
            .with_config(self.inner.client_config.clone())
            .with_clock(self.inner.clock.clone());
        if let Some(timer) = &self.inner.timer {
            builder = builder.with_timer(timer.clone());
        }
        builder.build().map_err(config_error)
    }

    /// Refuses a second registration unless allowed; says which App is registered.
    async fn check_unregistered(&self) -> std::result::Result<(), PageError> {
        if self.inner.allow_reregistration {
            return Ok(());
        }
        if self.inner.by_hand {
            return Err(PageError::new(
                StatusCode::CONFLICT,
                "Already registered",
                "This server already has a GitHub App, configured by hand.",
            ));
        }
        match self.inner.credentials.load().await {
            Ok(None) => Ok(()),
            Ok(Some(registration)) => {
                let install =
                    registration.install_url().map(|url| format!(" Install it from {url}.")).unwrap_or_default();
                let name = registration.name.or(registration.slug).unwrap_or_else(|| registration.app_id.to_string());
                Err(PageError::new(
                    StatusCode::CONFLICT,
                    "Already registered",
                    format!("This server already has a GitHub App: {name}.{install}"),
                ))
            }
            Err(error) => {
                tracing::error!(%error, "GitHub App setup: the credentials store failed");
                Err(PageError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Setup unavailable",
                    "The App's credentials store cannot be read right now; see the server's logs.",
                ))
            }
        }
    }

    /// A new pending `state`, or `None` when too many setups are pending.
    fn new_state(&self) -> Option<String> {
        let now = self.inner.clock.now();
        let mut states = self.inner.states.lock().unwrap_or_else(|p| p.into_inner());
        states.retain(|_, expires| *expires > now);
        if states.len() >= MAX_PENDING_STATES {
            return None;
        }
        let state = random_token();
        states.insert(state.clone(), now.plus(STATE_TTL));
        Some(state)
    }

    /// Takes `state` if it is pending and unexpired; it cannot be used again.
    fn take_state(&self, state: &str) -> bool {
        let now = self.inner.clock.now();
        let mut states = self.inner.states.lock().unwrap_or_else(|p| p.into_inner());
        states.remove(state).is_some_and(|expires| expires > now)
    }

    fn state_cookie(&self, value: &str, max_age: u64) -> HeaderValue {
        let secure = if self.inner.secure_cookie { "; Secure" } else { "" };
        let cookie =
            format!("{STATE_COOKIE}={value}; Path={SETUP_PATH}; Max-Age={max_age}; HttpOnly; SameSite=Lax{secure}");
        // Hex and fixed text: always a valid header value.
        HeaderValue::from_str(&cookie).unwrap_or_else(|_| HeaderValue::from_static("chitty_github_setup=; Max-Age=0"))
    }

    fn registration_form(&self, organization: Option<&str>) -> std::result::Result<Response, PageError> {
        let organization = organization.or(self.inner.organization.as_deref());
        let Some(state) = self.new_state() else {
            return Err(PageError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "Too many setups in progress",
                "Too many App registrations are in progress; try again in an hour.",
            ));
        };
        let web = &self.inner.web_url;
        let (action, owner) = match organization {
            Some(org) => (
                format!("{web}/organizations/{org}/settings/apps/new?state={state}"),
                format!("the organisation {org}"),
            ),
            None => (format!("{web}/settings/apps/new?state={state}"), "your account".to_owned()),
        };
        let manifest = &self.inner.manifest;
        let pretty = serde_json::to_string_pretty(manifest).unwrap_or_default();
        let body = format!(
            "<p>This creates the GitHub App <strong>{name}</strong> on {owner} from the manifest below. GitHub \
             then sends you back here and this server stores the App's credentials.</p>\
             <form action=\"{action}\" method=\"post\">\
             <input type=\"hidden\" name=\"manifest\" value=\"{manifest_json}\">\
             <button type=\"submit\">Create the GitHub App on GitHub</button></form>\
             <form action=\"{SETUP_PATH}\" method=\"get\"><label>Or for the organisation \
             <input name=\"organization\" pattern=\"[A-Za-z0-9-]{{1,39}}\" required></label>{token_field} \
             <button type=\"submit\">Use this organisation</button></form>\
             <p>GitHub also sends the App <code>installation</code> and <code>installation_repositories</code> \
             events, without a subscription.</p>\
             <details><summary>Manifest</summary><pre>{pretty}</pre></details>",
            name = escape(&manifest.name),
            owner = escape(&owner),
            action = escape(&action),
            manifest_json = escape(&manifest.to_json()),
            pretty = escape(&pretty),
            token_field = self
                .inner
                .setup_token
                .as_ref()
                .map(|t| format!("<input type=\"hidden\" name=\"token\" value=\"{}\">", escape(t.expose_secret())))
                .unwrap_or_default(),
        );
        let mut response = self.page(StatusCode::OK, "Register the GitHub App", &body);
        response.headers_mut().insert(header::SET_COOKIE, self.state_cookie(&state, STATE_TTL.as_secs()));
        Ok(response)
    }

    async fn finish_registration(
        &self,
        headers: &HeaderMap,
        query: &str,
    ) -> std::result::Result<AppRegistration, PageError> {
        self.check_unregistered().await?;
        let code = query_param(query, "code").ok_or_else(|| {
            PageError::new(StatusCode::BAD_REQUEST, "No code", "GitHub's redirect carried no `code`.")
        })?;
        let state = query_param(query, "state").unwrap_or_default();
        let cookie = cookie(headers, STATE_COOKIE).unwrap_or_default();
        // Both checks always run, so that a missing cookie does not leave the state usable.
        let taken = self.take_state(&state);
        if state.is_empty() || cookie != state || !taken {
            tracing::warn!("GitHub App setup: a callback with an unknown, expired or foreign state was refused");
            return Err(PageError::new(
                StatusCode::FORBIDDEN,
                "Setup link not valid",
                format!(
                    "This registration did not start in this browser, expired, or was already completed. \
                     Start again at {SETUP_PATH}."
                ),
            ));
        }
        let registration = convert_manifest_code(&self.inner.client_config, &code).await.map_err(|error| {
            tracing::warn!(%error, "GitHub App setup: the manifest code was not exchanged");
            match &error {
                ClientError::Api { status: 404 | 422, .. } | ClientError::InvalidConfig { .. } => PageError::new(
                    StatusCode::BAD_REQUEST,
                    "Code refused",
                    format!(
                        "GitHub refused the code (a code works once and for an hour). Start again at {SETUP_PATH}."
                    ),
                ),
                _ => PageError::new(
                    StatusCode::BAD_GATEWAY,
                    "GitHub unavailable",
                    format!("The code could not be exchanged with GitHub: {error}. Start again at {SETUP_PATH}."),
                ),
            }
        })?;
        if let Err(error) = self.inner.credentials.save(&registration).await {
            tracing::error!(%error, app_id = registration.app_id, "GitHub App setup: the credentials were not saved");
            return Err(PageError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Credentials not saved",
                "GitHub created the App, but this server could not save its credentials (see its logs). \
                 Generate a new private key in the App's settings and configure it by hand.",
            ));
        }
        match self.app_from(&registration) {
            Ok(app) => *self.inner.app.write().unwrap_or_else(|p| p.into_inner()) = Some(app),
            Err(error) => tracing::error!(%error, "GitHub App setup: no client from the new credentials"),
        }
        Ok(registration)
    }

    async fn record_installation(&self, query: &str) -> std::result::Result<Response, PageError> {
        let bad = |message: &str| PageError::new(StatusCode::BAD_REQUEST, "Not an installation", message.to_owned());
        match query_param(query, "setup_action").as_deref() {
            Some("install" | "update") => {}
            Some("request") => {
                let body = "<p>The installation was requested. An owner of the account must approve it on GitHub.</p>";
                return Ok(self.page(StatusCode::OK, "Installation requested", body));
            }
            _ => return Err(bad("`setup_action` must be install or update.")),
        }
        let id = query_param(query, "installation_id")
            .and_then(|id| id.parse::<u64>().ok())
            .filter(|id| *id > 0)
            .ok_or_else(|| bad("`installation_id` must be a positive number."))?;
        let app = match self.app().await {
            Ok(Some(app)) => app,
            Ok(None) => {
                return Err(PageError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "App not registered",
                    format!("This server has no GitHub App yet; register one at {SETUP_PATH}."),
                ));
            }
            Err(error) => {
                tracing::error!(%error, "GitHub App install callback: no App client");
                return Err(PageError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "App unavailable",
                    "The App's credentials cannot be used right now; see the server's logs.",
                ));
            }
        };
        let installation = app.fetch_installation(InstallationId(id)).await.map_err(|error| {
            if error.is_not_found() {
                tracing::warn!(installation = id, "install callback for an installation GitHub does not know");
                PageError::new(
                    StatusCode::NOT_FOUND,
                    "Unknown installation",
                    format!("GitHub knows no installation {id} of this App; nothing was recorded."),
                )
            } else {
                tracing::warn!(installation = id, %error, "install callback: the installation could not be verified");
                PageError::new(
                    StatusCode::BAD_GATEWAY,
                    "Installation not verified",
                    format!("GitHub could not confirm installation {id} ({error}); nothing was recorded. Reload to try again."),
                )
            }
        })?;
        // GitHub answered for this App's JWT, so this holds; checked again as it costs nothing.
        if installation.id != id {
            return Err(PageError::new(
                StatusCode::BAD_GATEWAY,
                "Installation not verified",
                "GitHub answered for another installation.",
            ));
        }
        let change = InstallationChange::from_installation(&installation, self.inner.clock.now());
        let outcome = self.inner.installations.apply(change).await.map_err(|error| {
            tracing::error!(installation = id, %error, "install callback: the installation was not recorded");
            PageError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Installation not recorded",
                "The installation is valid but could not be recorded; see the server's logs. Reload to try again.",
            )
        })?;
        tracing::info!(installation = id, account = %installation.account.login, ?outcome, "installation recorded from the callback");
        let body = format!(
            "<p>The App is installed on <strong>{}</strong> (installation {id}). Events from its repositories now reach this server.</p>",
            escape(&installation.account.login)
        );
        Ok(self.page(StatusCode::OK, "Installed", &body))
    }

    /// An HTML page with the headers every page of the flow carries.
    fn page(&self, status: StatusCode, title: &str, body: &str) -> Response {
        let html = format!(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title>\
             <style>body{{font-family:system-ui,sans-serif;max-width:42rem;margin:3rem auto;padding:0 1rem}}\
             pre{{overflow:auto;background:#f6f8fa;padding:1rem}}</style></head>\
             <body><h1>{title}</h1>{body}</body></html>",
            title = escape(title),
        );
        let mut response = (status, html).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
        headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
        headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        let csp = format!(
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self' {}; frame-ancestors 'none'",
            self.inner.web_origin
        );
        if let Ok(csp) = HeaderValue::from_str(&csp) {
            headers.insert(header::CONTENT_SECURITY_POLICY, csp);
        }
        response
    }

    fn error_page(&self, error: PageError) -> Response {
        self.page(error.status, error.title, &format!("<p>{}</p>", escape(&error.message)))
    }
}

async fn setup_page(State(setup): State<AppSetup>, RawQuery(query): RawQuery) -> Response {
    let query = query.unwrap_or_default();
    if !setup.token_accepted(query_param(&query, "token").as_deref()) {
        tracing::warn!("GitHub App setup: the setup page was opened without the setup token");
        let error = PageError::new(
            StatusCode::FORBIDDEN,
            "Setup link needed",
            "Open the setup link this server printed when it started (it carries a token).",
        );
        return setup.error_page(error);
    }
    if let Err(error) = setup.check_unregistered().await {
        return setup.error_page(error);
    }
    let organization = query_param(&query, "organization").filter(|o| !o.is_empty());
    if let Some(org) = &organization
        && !is_login(org)
    {
        let error =
            PageError::new(StatusCode::BAD_REQUEST, "Not an organisation", "`organization` is not a GitHub login.");
        return setup.error_page(error);
    }
    setup.registration_form(organization.as_deref()).unwrap_or_else(|error| setup.error_page(error))
}

async fn setup_callback(State(setup): State<AppSetup>, headers: HeaderMap, RawQuery(query): RawQuery) -> Response {
    match setup.finish_registration(&headers, &query.unwrap_or_default()).await {
        Ok(registration) => {
            let name = registration
                .name
                .clone()
                .or(registration.slug.clone())
                .unwrap_or_else(|| registration.app_id.to_string());
            let install = match registration.install_url() {
                Some(url) => format!("<p><a href=\"{0}\">Install it on your repositories</a>: {0}</p>", escape(&url)),
                None => "<p>Install it from its page in your GitHub settings.</p>".to_owned(),
            };
            let body = format!(
                "<p>The GitHub App <strong>{}</strong> (id {}) is registered and its credentials are saved on this server.</p>{install}",
                escape(&name),
                registration.app_id
            );
            let mut response = setup.page(StatusCode::OK, "App registered", &body);
            response.headers_mut().insert(header::SET_COOKIE, setup.state_cookie("", 0));
            response
        }
        Err(error) => setup.error_page(error),
    }
}

async fn install_callback(State(setup): State<AppSetup>, RawQuery(query): RawQuery) -> Response {
    setup.record_installation(&query.unwrap_or_default()).await.unwrap_or_else(|error| setup.error_page(error))
}

/// The first value of `name` in a query string, decoded.
fn query_param(query: &str, name: &str) -> Option<String> {
    form_urlencoded::parse(query.as_bytes()).find(|(key, _)| key == name).map(|(_, value)| value.into_owned())
}

/// A fresh setup token (32 random bytes, hex) for [`AppSetupBuilder::setup_token`].
pub fn random_token() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

/// The value of cookie `name` in the request's `Cookie` headers.
fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.to_owned())
}

/// `text` safe inside HTML text and double- or single-quoted attributes.
fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            c => escaped.push(c),
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_is_escaped_and_logins_checked() {
        assert_eq!(escape(r#"<a href="x">'&'</a>"#), "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;");
        assert!(is_login("octo-org") && is_login("a"));
        for bad in ["", "-x", "x-", "a/b", "a b", &"a".repeat(40), "\"><script>"] {
            assert!(!is_login(bad), "{bad}");
        }
    }

    #[test]
    fn cookies_and_query_parameters_are_read() {
        let mut headers = HeaderMap::new();
        headers.append(header::COOKIE, HeaderValue::from_static("a=1; chitty_github_setup=abc"));
        assert_eq!(cookie(&headers, STATE_COOKIE).as_deref(), Some("abc"));
        assert_eq!(cookie(&headers, "b"), None);
        assert_eq!(query_param("code=x%2By&state=s", "code").as_deref(), Some("x+y"));
        assert_eq!(query_param("", "code"), None);
    }
}
