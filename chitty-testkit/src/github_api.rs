//! A mock GitHub REST API, in process, for testing GitHub App clients without the network.
//!
//! It listens on `127.0.0.1` at a random port and behaves like `api.github.com` where a client
//! can tell the difference: App JWTs are checked for shape and lifetime, installation tokens are
//! minted with an `expires_at`, expire by the injected [`Clock`] and are refused afterwards; every
//! response carries `x-ratelimit-*` headers (with `x-ratelimit-resource`) from real budgets that
//! run out, one per bucket as GitHub keeps them (`core`, `search`, `code_search`, `graphql`); a
//! `POST`, `PUT` or `PATCH` without a body and without `Content-Length: 0` gets
//! `411 Length Required`, as from GitHub's front end; `GET`s carry an
//! `ETag` and answer `304 Not Modified` (not counted) to a matching `If-None-Match`; JSON arrays
//! are paginated with `Link` headers. Faults are scripted: secondary rate limits with and without
//! `Retry-After`, arbitrary statuses, tokens refused right after minting (replication lag), tokens
//! revoked early. The install flow's endpoints are there too: manifest code conversions
//! ([`MockGitHub::add_manifest_code`]) and the App's installations ([`MockGitHub::add_installation`]);
//! a created check run is also listed under its commit (`GET /repos/{o}/{r}/commits/{sha}/check-runs`),
//! and a posted pull request review under its pull request (`GET /repos/{o}/{r}/pulls/{n}/reviews`).
//! Paths under `/api/v3` are served too, as by GitHub Enterprise Server. Every
//! request is recorded so tests can assert on what the client sent.
//!
//! ```
//! use std::sync::Arc;
//! use chitty_core::{ManualClock, Timestamp};
//! use chitty_testkit::github_api::{Fault, MockGitHub};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! let clock = ManualClock::new(Timestamp(1_790_000_000_000));
//! let github = MockGitHub::start(Arc::new(clock)).await?;
//! github.set_resource("/repos/octo/hello/issues/1/labels", serde_json::json!([]));
//! github.inject(Fault::SecondaryRateLimit { status: 403, retry_after: Some(std::time::Duration::from_secs(3)) });
//! assert!(github.base_url().starts_with("http://127.0.0.1:"));
//! assert!(github.requests().is_empty());
//! # Ok(())
//! # }
//! ```

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use chitty_core::{Clock, Timestamp};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// Largest request body the mock reads (GitHub's own REST limit is far above what tests send).
const MAX_BODY: usize = 4 * 1024 * 1024;
/// GitHub's page size when `per_page` is absent.
const DEFAULT_PER_PAGE: usize = 30;
/// GitHub's largest `per_page`.
const MAX_PER_PAGE: usize = 100;
/// Length of the primary rate-limit window (and of an installation token's life).
const RATE_WINDOW: Duration = Duration::from_secs(3600);
/// Length of the search buckets' windows.
const SEARCH_WINDOW: Duration = Duration::from_secs(60);
/// The bucket every REST path spends unless it is a search or GraphQL.
const CORE: &str = "core";
/// The path prefix of GitHub Enterprise Server's REST API (`https://HOST/api/v3`).
pub const GHES_PREFIX: &str = "/api/v3";
/// GitHub refuses App JWTs that live longer than this.
const MAX_JWT_LIFETIME_SECS: u64 = 600;

/// A scripted failure answered instead of the normal response.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fault {
    /// Answer with `status` and a GitHub-style `{"message": ...}` body.
    Status {
        /// HTTP status.
        status: u16,
        /// GitHub's `message` field.
        message: String,
    },
    /// A secondary rate limit: `status` (403 or 429), with `Retry-After` in seconds when given.
    SecondaryRateLimit {
        /// 403 or 429, as GitHub uses both.
        status: u16,
        /// The `Retry-After` header, if any.
        retry_after: Option<Duration>,
    },
}

impl Fault {
    /// Shorthand for [`Fault::Status`].
    pub fn status(status: u16, message: impl Into<String>) -> Self {
        Fault::Status { status, message: message.into() }
    }
}

/// One request as the mock received it.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    /// HTTP method.
    pub method: Method,
    /// Raw (percent-encoded) path.
    pub path: String,
    /// Raw query string, if any.
    pub query: Option<String>,
    /// Request headers.
    pub headers: HeaderMap,
    /// Request body.
    pub body: Bytes,
    /// The mock clock's time when the request arrived.
    pub at: Timestamp,
}

impl RecordedRequest {
    /// A header's value as text, if present and printable.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body parsed as JSON, if it is JSON.
    pub fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// The bearer or `token` credential from `Authorization`, if any.
    pub fn credential(&self) -> Option<&str> {
        let auth = self.header("authorization")?;
        auth.strip_prefix("Bearer ").or_else(|| auth.strip_prefix("token "))
    }
}

/// A fault waiting for a matching request.
#[derive(Debug)]
struct ScriptedFault {
    fault: Fault,
    method: Option<Method>,
    path_prefix: Option<String>,
    remaining: usize,
}

impl ScriptedFault {
    fn matches(&self, method: &Method, path: &str) -> bool {
        self.method.as_ref().is_none_or(|m| m == method)
            && self.path_prefix.as_deref().is_none_or(|p| path.starts_with(p))
    }
}

/// An installation token the mock has minted.
#[derive(Debug)]
struct IssuedToken {
    installation: u64,
    expires_at: Timestamp,
    /// How many more uses are refused with 401 (replication lag right after minting).
    refusals_left: u32,
    revoked: bool,
}

/// One rate-limit bucket's budget (GitHub's `x-ratelimit-resource`).
#[derive(Debug, Clone)]
struct Budget {
    limit: u32,
    remaining: u32,
    reset: Option<Timestamp>,
    window: Duration,
}

impl Budget {
    fn new(limit: u32, window: Duration) -> Self {
        Budget { limit, remaining: limit, reset: None, window }
    }

    /// GitHub's defaults for an installation: 5,000 an hour for core and GraphQL, 30 searches and
    /// 10 code searches a minute; other buckets get the core numbers.
    fn default_for(bucket: &str) -> Self {
        match bucket {
            "search" => Budget::new(30, SEARCH_WINDOW),
            "code_search" => Budget::new(10, SEARCH_WINDOW),
            _ => Budget::new(5_000, RATE_WINDOW),
        }
    }

    /// Starts a new window when the old one has passed.
    fn refresh(&mut self, now: Timestamp) {
        if self.reset.is_none_or(|reset| now >= reset) {
            self.reset = Some(now.plus(self.window));
            self.remaining = self.limit;
        }
    }
}

/// The bucket a REST path spends, by GitHub's rules: `/search/code` is `code_search`, other
/// `/search/...` paths `search`, `/graphql` `graphql`, everything else `core`.
pub fn rate_limit_bucket(path: &str) -> &'static str {
    if path == "/search/code" {
        "code_search"
    } else if path.starts_with("/search/") {
        "search"
    } else if path == "/graphql" {
        "graphql"
    } else {
        CORE
    }
}

#[derive(Debug)]
struct MockState {
    requests: Vec<RecordedRequest>,
    faults: VecDeque<ScriptedFault>,
    tokens: HashMap<String, IssuedToken>,
    tokens_minted: u64,
    token_ttl: Duration,
    fresh_token_refusals: u32,
    budgets: HashMap<String, Budget>,
    resources: HashMap<String, Value>,
    /// Manifest codes not yet converted, with the App each becomes.
    manifest_codes: HashMap<String, Value>,
    next_id: u64,
}

struct Shared {
    clock: Arc<dyn Clock>,
    base_url: String,
    state: Mutex<MockState>,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, MockState> {
        // A panicking test thread must not hide the recorded requests from the others.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl MockState {
    fn budget(&mut self, bucket: &str) -> &mut Budget {
        self.budgets.entry(bucket.to_owned()).or_insert_with(|| Budget::default_for(bucket))
    }
}

/// The running mock; the server stops when this is dropped.
pub struct MockGitHub {
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

impl fmt::Debug for MockGitHub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockGitHub").field("base_url", &self.shared.base_url).finish_non_exhaustive()
    }
}

impl Drop for MockGitHub {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl MockGitHub {
    /// Starts the mock on `127.0.0.1` at a random port; `clock` decides token expiry and rate-limit resets.
    pub async fn start(clock: Arc<dyn Clock>) -> std::io::Result<MockGitHub> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let base_url = format!("http://{}", listener.local_addr()?);
        let shared = Arc::new(Shared {
            clock,
            base_url,
            state: Mutex::new(MockState {
                requests: Vec::new(),
                faults: VecDeque::new(),
                tokens: HashMap::new(),
                tokens_minted: 0,
                token_ttl: RATE_WINDOW,
                fresh_token_refusals: 0,
                budgets: HashMap::new(),
                resources: HashMap::new(),
                manifest_codes: HashMap::new(),
                next_id: 1,
            }),
        });
        let app = Router::new().fallback(handle).with_state(Arc::clone(&shared));
        let server = tokio::spawn(async move {
            // The listener only fails when the test runtime shuts down.
            let _ = axum::serve(listener, app).await;
        });
        Ok(MockGitHub { shared, server })
    }

    /// The API root, e.g. `http://127.0.0.1:41234` (use it as the client's base URL).
    pub fn base_url(&self) -> &str {
        &self.shared.base_url
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.state().requests.clone()
    }

    /// How many requests had this method and exactly this path.
    pub fn count(&self, method: Method, path: &str) -> usize {
        self.shared.state().requests.iter().filter(|r| r.method == method && r.path == path).count()
    }

    /// How many installation tokens have been requested for `installation` (at the root or under
    /// [`GHES_PREFIX`]).
    pub fn token_exchanges(&self, installation: u64) -> usize {
        let path = format!("/app/installations/{installation}/access_tokens");
        self.shared
            .state()
            .requests
            .iter()
            .filter(|r| r.method == Method::POST && (r.path == path || r.path.strip_prefix(GHES_PREFIX) == Some(&path)))
            .count()
    }

    /// Stores `value` at `path` for `GET` (arrays are paginated); replaces what was there.
    pub fn set_resource(&self, path: &str, value: Value) {
        self.shared.state().resources.insert(path.to_owned(), value);
    }

    /// The value stored at `path`, as a `GET` (without pagination) would see it.
    pub fn resource(&self, path: &str) -> Option<Value> {
        self.shared.state().resources.get(path).cloned()
    }

    /// Makes `code` a manifest code that `POST /app-manifests/{code}/conversions` (unauthenticated,
    /// as on GitHub) turns into `app` once: the App with its `id`, `client_id`, `client_secret`,
    /// `webhook_secret` and `pem`. A code used or never made is answered 404.
    pub fn add_manifest_code(&self, code: &str, app: Value) {
        self.shared.state().manifest_codes.insert(code.to_owned(), app);
    }

    /// Makes `installation` (GitHub's installation object, with its `id`) one of the App's:
    /// `GET /app/installations/{id}` with an App JWT answers it; other ids are answered 404.
    pub fn add_installation(&self, installation: Value) {
        let id = installation["id"].as_u64().unwrap_or_default();
        self.shared.state().resources.insert(format!("/app/installations/{id}"), installation);
    }

    /// How long newly minted installation tokens live (GitHub: one hour).
    pub fn set_token_ttl(&self, ttl: Duration) {
        self.shared.state().token_ttl = ttl;
    }

    /// Each token minted from now on is refused with 401 for its first `uses` requests.
    pub fn refuse_fresh_tokens(&self, uses: u32) {
        self.shared.state().fresh_token_refusals = uses;
    }

    /// Revokes every token minted so far: using one answers 401, as after an early expiry.
    pub fn revoke_tokens(&self) {
        for token in self.shared.state().tokens.values_mut() {
            token.revoked = true;
        }
    }

    /// Sets the `core` rate limit per window and refills its budget.
    pub fn set_rate_limit(&self, limit: u32) {
        self.set_rate_limit_of(CORE, limit);
    }

    /// Empties the `core` budget until the current window resets.
    pub fn exhaust_rate_limit(&self) {
        self.exhaust_rate_limit_of(CORE);
    }

    /// When the current `core` window resets, if one has started.
    pub fn rate_limit_reset(&self) -> Option<Timestamp> {
        self.rate_limit_reset_of(CORE)
    }

    /// Sets the limit per window of `bucket` (`core`, `search`, `code_search`, `graphql`, …) and
    /// refills its budget.
    pub fn set_rate_limit_of(&self, bucket: &str, limit: u32) {
        let mut state = self.shared.state();
        let budget = state.budget(bucket);
        budget.limit = limit;
        budget.remaining = limit;
    }

    /// Empties the budget of `bucket` until its current window resets.
    pub fn exhaust_rate_limit_of(&self, bucket: &str) {
        let now = self.shared.clock.now();
        let mut state = self.shared.state();
        let budget = state.budget(bucket);
        budget.refresh(now);
        budget.remaining = 0;
    }

    /// When the current window of `bucket` resets, if one has started.
    pub fn rate_limit_reset_of(&self, bucket: &str) -> Option<Timestamp> {
        self.shared.state().budgets.get(bucket).and_then(|budget| budget.reset)
    }

    /// Answers the next REST request (not `/app/...`) with `fault`.
    pub fn inject(&self, fault: Fault) {
        self.inject_on(None, None, fault, 1);
    }

    /// Answers the next `times` requests matching `method` (any if `None`) and `path_prefix` (any
    /// REST path if `None`; App endpoints such as `/app/installations/1/access_tokens` only when
    /// the prefix names them) with `fault`.
    pub fn inject_on(&self, method: Option<Method>, path_prefix: Option<&str>, fault: Fault, times: usize) {
        self.shared.state().faults.push_back(ScriptedFault {
            fault,
            method,
            path_prefix: path_prefix.map(str::to_owned),
            remaining: times,
        });
    }
}

/// A GitHub-style JSON error.
fn error_response(status: u16, message: &str) -> Response {
    json_response(
        status,
        &json!({
            "message": message,
            "documentation_url": "https://docs.github.com/rest",
            "status": status.to_string(),
        }),
    )
}

fn json_response(status: u16, body: &Value) -> Response {
    let mut response = Response::new(Body::from(body.to_string()));
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json; charset=utf-8"));
    response
}

fn empty_response(status: u16) -> Response {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    response
}

fn set_header(response: &mut Response, name: &'static str, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        response.headers_mut().insert(name, value);
    }
}

fn rate_headers(response: &mut Response, bucket: &str, budget: &Budget) {
    let reset = budget.reset.map(Timestamp::as_secs).unwrap_or_default();
    set_header(response, "x-ratelimit-limit", &budget.limit.to_string());
    set_header(response, "x-ratelimit-remaining", &budget.remaining.to_string());
    set_header(response, "x-ratelimit-used", &(budget.limit - budget.remaining.min(budget.limit)).to_string());
    set_header(response, "x-ratelimit-reset", &reset.to_string());
    set_header(response, "x-ratelimit-resource", bucket);
}

/// Whether a request must carry `Content-Length` and does not: GitHub answers 411 to a `POST`,
/// `PUT` or `PATCH` sent with neither a length nor a chunked body.
fn lacks_length(parts: &axum::http::request::Parts) -> bool {
    matches!(parts.method, Method::POST | Method::PUT | Method::PATCH)
        && !parts.headers.contains_key(header::CONTENT_LENGTH)
        && !parts.headers.contains_key(header::TRANSFER_ENCODING)
}

async fn handle(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(body) => body,
        Err(_) => return error_response(413, "Request body too large"),
    };
    let now = shared.clock.now();
    let recorded = RecordedRequest {
        method: parts.method.clone(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().map(str::to_owned),
        headers: parts.headers.clone(),
        body,
        at: now,
    };
    let mut state = shared.state();
    state.requests.push(recorded.clone());
    if lacks_length(&parts) {
        return error_response(411, "Length Required");
    }
    // GitHub Enterprise Server serves the same API under `/api/v3`.
    let (api_root, routed) = match recorded.path.strip_prefix(GHES_PREFIX) {
        Some(rest) if rest.starts_with('/') => {
            (format!("{}{GHES_PREFIX}", shared.base_url), RecordedRequest { path: rest.to_owned(), ..recorded })
        }
        _ => (shared.base_url.clone(), recorded),
    };
    if let Some(rest) = routed.path.strip_prefix("/app-manifests/") {
        return manifest_conversion(&mut state, &routed.method, rest);
    }
    if routed.path.starts_with("/app") {
        return app_endpoint(&mut state, &routed, now);
    }
    rest_endpoint(&api_root, &mut state, &routed, now)
}

/// `POST /app-manifests/{code}/conversions`: the App the code was made for, once.
fn manifest_conversion(state: &mut MockState, method: &Method, rest: &str) -> Response {
    let code = match rest.split_once('/') {
        Some((code, "conversions")) if *method == Method::POST => code,
        _ => return error_response(404, "Not Found"),
    };
    match state.manifest_codes.remove(code) {
        Some(app) => json_response(201, &app),
        None => error_response(404, "Not Found"),
    }
}

/// The endpoints authenticated by the App's JWT.
fn app_endpoint(state: &mut MockState, request: &RecordedRequest, now: Timestamp) -> Response {
    let Some(jwt) = request.header("authorization").and_then(|a| a.strip_prefix("Bearer ")) else {
        return error_response(401, "A JSON web token could not be decoded");
    };
    if let Err(message) = check_jwt(jwt, now) {
        return error_response(401, message);
    }
    if let Some(fault) = take_fault(state, request) {
        return fault_response(state, &fault, request, now);
    }
    let segments: Vec<&str> = request.path.trim_matches('/').split('/').collect();
    match (&request.method, segments.as_slice()) {
        (&Method::GET, ["app"]) => {
            json_response(200, &json!({ "id": 1, "slug": "chitty-test", "name": "chitty test" }))
        }
        (&Method::GET, ["app", "installations", _]) => match state.resources.get(&request.path) {
            Some(installation) => json_response(200, installation),
            None => error_response(404, "Not Found"),
        },
        (&Method::POST, ["app", "installations", id, "access_tokens"]) => {
            let Ok(installation) = id.parse::<u64>() else {
                return error_response(404, "Not Found");
            };
            state.tokens_minted += 1;
            let token = format!("ghs_mock{installation}x{:012}", state.tokens_minted);
            let expires_at = now.plus(state.token_ttl);
            state.tokens.insert(
                token.clone(),
                IssuedToken { installation, expires_at, refusals_left: state.fresh_token_refusals, revoked: false },
            );
            json_response(
                201,
                &json!({
                    "token": token,
                    "expires_at": rfc3339(expires_at),
                    "permissions": { "issues": "write", "pull_requests": "write", "checks": "write" },
                    "repository_selection": "all",
                }),
            )
        }
        _ => error_response(404, "Not Found"),
    }
}

/// GitHub's checks on an App JWT: three parts, a readable payload, `iss`, and a lifetime of at
/// most ten minutes that has begun and not ended (the signature is left to the tests, which hold
/// the public key).
fn check_jwt(jwt: &str, now: Timestamp) -> Result<(), &'static str> {
    let parts: Vec<&str> = jwt.split('.').collect();
    let [_, payload, _] = parts.as_slice() else {
        return Err("A JSON web token could not be decoded");
    };
    let payload = URL_SAFE_NO_PAD.decode(payload).map_err(|_| "A JSON web token could not be decoded")?;
    let claims: Value = serde_json::from_slice(&payload).map_err(|_| "A JSON web token could not be decoded")?;
    let (Some(iat), Some(exp)) = (claims["iat"].as_u64(), claims["exp"].as_u64()) else {
        return Err("'Issued at' and 'Expiration time' claims are required");
    };
    if claims["iss"].is_null() {
        return Err("'Issuer' claim ('iss') must be an Integer or a String");
    }
    let now = now.as_secs();
    if iat > now + 60 {
        return Err("'Issued at' claim ('iat') must be an Integer representing a time in the past");
    }
    if exp <= now {
        return Err("'Expiration time' claim ('exp') must be a numeric value representing the future time \
             at which the assertion expires");
    }
    if exp.saturating_sub(iat) > MAX_JWT_LIFETIME_SECS {
        return Err("'Expiration time' claim ('exp') is too far in the future");
    }
    Ok(())
}

/// The endpoints authenticated by an installation token.
fn rest_endpoint(api_root: &str, state: &mut MockState, request: &RecordedRequest, now: Timestamp) -> Response {
    let Some(credential) = request.credential() else {
        return error_response(401, "Requires authentication");
    };
    let installation = match state.tokens.get_mut(credential) {
        Some(token) if token.refusals_left > 0 => {
            token.refusals_left -= 1;
            return error_response(401, "Bad credentials");
        }
        Some(token) if !token.revoked && now < token.expires_at => token.installation,
        _ => return error_response(401, "Bad credentials"),
    };

    if let Some(fault) = take_fault(state, request) {
        return fault_response(state, &fault, request, now);
    }

    let bucket = rate_limit_bucket(&request.path);
    state.budget(bucket).refresh(now);
    if state.budget(bucket).remaining == 0 {
        let message = format!("API rate limit exceeded for installation ID {installation}.");
        let mut response = error_response(403, &message);
        rate_headers(&mut response, bucket, state.budget(bucket));
        return response;
    }

    let mut response = route(api_root, state, request);
    let etag = response.headers().get(header::ETAG).cloned();
    if request.method == Method::GET
        && response.status() == StatusCode::OK
        && let Some(etag) = etag.filter(|etag| request.headers.get(header::IF_NONE_MATCH) == Some(etag))
    {
        // GitHub does not count a 304 against the primary limit.
        let mut not_modified = Response::new(Body::empty());
        *not_modified.status_mut() = StatusCode::NOT_MODIFIED;
        not_modified.headers_mut().insert(header::ETAG, etag);
        rate_headers(&mut not_modified, bucket, state.budget(bucket));
        return not_modified;
    }
    let budget = state.budget(bucket);
    budget.remaining = budget.remaining.saturating_sub(1);
    rate_headers(&mut response, bucket, budget);
    response
}

/// The first scripted fault matching `request`, used up once. Faults without a path only hit REST
/// paths, so a test scripting "the next request" is not surprised by a token exchange.
fn take_fault(state: &mut MockState, request: &RecordedRequest) -> Option<Fault> {
    let app = request.path.starts_with("/app");
    let index = state.faults.iter().position(|f| {
        f.matches(&request.method, &request.path)
            && (!app || f.path_prefix.as_deref().is_some_and(|p| p.starts_with("/app")))
    })?;
    let scripted = &mut state.faults[index];
    let fault = scripted.fault.clone();
    scripted.remaining = scripted.remaining.saturating_sub(1);
    if scripted.remaining == 0 {
        state.faults.remove(index);
    }
    Some(fault)
}

fn fault_response(state: &mut MockState, fault: &Fault, request: &RecordedRequest, now: Timestamp) -> Response {
    match fault {
        Fault::Status { status, message } => error_response(*status, message),
        Fault::SecondaryRateLimit { status, retry_after } => {
            let bucket = rate_limit_bucket(&request.path);
            let budget = state.budget(bucket);
            budget.refresh(now);
            let mut response = error_response(
                *status,
                "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.",
            );
            rate_headers(&mut response, bucket, budget);
            if let Some(after) = retry_after {
                set_header(&mut response, "retry-after", &after.as_secs().to_string());
            }
            response
        }
    }
}

/// The REST resources the mock implements.
fn route(api_root: &str, state: &mut MockState, request: &RecordedRequest) -> Response {
    let path = request.path.as_str();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let body = request.json().unwrap_or(Value::Null);
    match (&request.method, segments.as_slice()) {
        // A commit without check runs lists none (GitHub answers 404 only for an unknown commit).
        (&Method::GET, ["repos", _, _, "commits", _, "check-runs"]) if !state.resources.contains_key(path) => {
            json_response(200, &json!({ "total_count": 0, "check_runs": [] }))
        }
        (&Method::GET, _) => get_resource(api_root, state, path, request.query.as_deref()),
        (&Method::POST, ["repos", owner, repo, "issues", number, "comments"]) => {
            let Some(text) = body["body"].as_str() else {
                return validation_failed("body", "missing_field");
            };
            let id = next_id(state);
            let comment = json!({
                "id": id,
                "node_id": format!("IC_mock{id}"),
                "body": text,
                "html_url": format!("https://github.com/{owner}/{repo}/issues/{number}#issuecomment-{id}"),
                "user": { "login": "chitty-test[bot]", "type": "Bot" },
            });
            push_to_array(state, path, comment.clone());
            json_response(201, &comment)
        }
        (&Method::POST, ["repos", _, _, "issues", _, "labels"]) => {
            let Some(names) = body["labels"].as_array().filter(|l| l.iter().all(Value::is_string)) else {
                return validation_failed("labels", "invalid");
            };
            let names: Vec<String> = names.iter().filter_map(|n| n.as_str().map(str::to_owned)).collect();
            for name in names {
                let exists = state
                    .resources
                    .get(path)
                    .and_then(Value::as_array)
                    .is_some_and(|labels| labels.iter().any(|l| l["name"].as_str() == Some(name.as_str())));
                if !exists {
                    let id = next_id(state);
                    push_to_array(state, path, json!({ "id": id, "name": name, "color": "ededed", "default": false }));
                }
            }
            json_response(200, state.resources.get(path).unwrap_or(&json!([])))
        }
        (&Method::DELETE, ["repos", owner, repo, "issues", number, "labels", name]) => {
            let name = percent_encoding::percent_decode_str(name).decode_utf8_lossy().into_owned();
            let list_path = format!("/repos/{owner}/{repo}/issues/{number}/labels");
            let Some(labels) = state.resources.get_mut(&list_path).and_then(Value::as_array_mut) else {
                return error_response(404, "Label does not exist");
            };
            let before = labels.len();
            labels.retain(|l| l["name"].as_str() != Some(name.as_str()));
            if labels.len() == before {
                return error_response(404, "Label does not exist");
            }
            json_response(200, &Value::Array(labels.clone()))
        }
        (&Method::POST, ["repos", owner, repo, "check-runs"]) => {
            if !body["name"].is_string() || !body["head_sha"].is_string() {
                return validation_failed("name", "missing_field");
            }
            let id = next_id(state);
            let mut run = json!({ "id": id, "status": "queued", "conclusion": null });
            merge(&mut run, &body);
            state.resources.insert(format!("/repos/{owner}/{repo}/check-runs/{id}"), run.clone());
            // The commit's list, as `GET /repos/{o}/{r}/commits/{sha}/check-runs` answers it (runs as created).
            let sha = body["head_sha"].as_str().unwrap_or_default();
            let list = state
                .resources
                .entry(format!("/repos/{owner}/{repo}/commits/{sha}/check-runs"))
                .or_insert_with(|| json!({ "total_count": 0, "check_runs": [] }));
            if let Some(runs) = list["check_runs"].as_array_mut() {
                runs.push(run.clone());
                let count = runs.len();
                list["total_count"] = count.into();
            }
            json_response(201, &run)
        }
        (&Method::POST, ["repos", _, _, "pulls", _, "reviews"]) => {
            let review_state = match body["event"].as_str() {
                Some("APPROVE") => "APPROVED",
                Some("REQUEST_CHANGES") => "CHANGES_REQUESTED",
                Some("COMMENT") => "COMMENTED",
                _ => "PENDING",
            };
            let id = next_id(state);
            let review = json!({
                "id": id,
                "user": { "login": "chitty-test[bot]", "type": "Bot" },
                "body": body["body"],
                "state": review_state,
                "commit_id": body["commit_id"],
                "comments": body["comments"],
            });
            // Listed by `GET` on the same path, as GitHub lists a pull request's reviews.
            push_to_array(state, path, review.clone());
            json_response(200, &review)
        }
        (&Method::PUT | &Method::DELETE, ["repos", owner, repo, "issues", number, "lock"]) => {
            let locked = request.method == Method::PUT;
            if let Some(issue) = state.resources.get_mut(&format!("/repos/{owner}/{repo}/issues/{number}")) {
                merge(issue, &json!({ "locked": locked }));
            }
            empty_response(204)
        }
        (&Method::PATCH, ["repos", _, _, "check-runs", _]) => match state.resources.get_mut(path) {
            Some(run) => {
                merge(run, &body);
                json_response(200, run)
            }
            None => error_response(404, "Not Found"),
        },
        _ => error_response(404, "Not Found"),
    }
}

fn validation_failed(field: &str, code: &str) -> Response {
    json_response(
        422,
        &json!({
            "message": "Validation Failed",
            "errors": [{ "resource": "Request", "field": field, "code": code }],
            "documentation_url": "https://docs.github.com/rest",
        }),
    )
}

fn next_id(state: &mut MockState) -> u64 {
    state.next_id += 1;
    state.next_id
}

fn push_to_array(state: &mut MockState, path: &str, item: Value) {
    let entry = state.resources.entry(path.to_owned()).or_insert_with(|| json!([]));
    if let Some(items) = entry.as_array_mut() {
        items.push(item);
    }
}

/// Shallow merge of `patch`'s fields into `target` (check-run updates replace whole fields).
fn merge(target: &mut Value, patch: &Value) {
    if let (Some(target), Some(patch)) = (target.as_object_mut(), patch.as_object()) {
        for (key, value) in patch {
            target.insert(key.clone(), value.clone());
        }
    }
}

/// A stored resource, with `ETag` and, for arrays, `page`/`per_page` pagination and `Link`.
fn get_resource(api_root: &str, state: &MockState, path: &str, query: Option<&str>) -> Response {
    let Some(value) = state.resources.get(path) else {
        return error_response(404, "Not Found");
    };
    let params: HashMap<String, String> = query
        .map(|q| {
            q.split('&').filter_map(|pair| pair.split_once('=')).map(|(k, v)| (k.to_owned(), v.to_owned())).collect()
        })
        .unwrap_or_default();
    let (body, link) = match value.as_array() {
        Some(items) => {
            let per_page = params
                .get("per_page")
                .and_then(|p| p.parse::<usize>().ok())
                .unwrap_or(DEFAULT_PER_PAGE)
                .clamp(1, MAX_PER_PAGE);
            let page = params.get("page").and_then(|p| p.parse::<usize>().ok()).unwrap_or(1).max(1);
            let last = items.len().div_ceil(per_page).max(1);
            let slice: Vec<Value> = items.iter().skip((page - 1) * per_page).take(per_page).cloned().collect();
            let url = |n: usize| format!("<{api_root}{path}?per_page={per_page}&page={n}>");
            let mut links = Vec::new();
            if page < last {
                links.push(format!("{}; rel=\"next\"", url(page + 1)));
                links.push(format!("{}; rel=\"last\"", url(last)));
            }
            if page > 1 {
                links.push(format!("{}; rel=\"prev\"", url(page - 1)));
                links.push(format!("{}; rel=\"first\"", url(1)));
            }
            (Value::Array(slice), (!links.is_empty()).then(|| links.join(", ")))
        }
        None => (value.clone(), None),
    };
    let mut response = json_response(200, &body);
    let etag = format!("\"{}\"", hex::encode(Sha256::digest(body.to_string().as_bytes())));
    set_header(&mut response, "etag", &etag);
    if let Some(link) = link {
        set_header(&mut response, "link", &link);
    }
    response
}

/// `2026-09-20T12:00:00Z`: the form GitHub uses for `expires_at`.
fn rfc3339(at: Timestamp) -> String {
    let secs = i64::try_from(at.as_secs()).unwrap_or(i64::MAX);
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_spend_githubs_buckets() {
        assert_eq!(rate_limit_bucket("/search/code"), "code_search");
        assert_eq!(rate_limit_bucket("/search/issues"), "search");
        assert_eq!(rate_limit_bucket("/graphql"), "graphql");
        assert_eq!(rate_limit_bucket("/repos/o/r/search/code"), "core");
        assert_eq!(rate_limit_bucket("/search"), "core");
    }

    #[test]
    fn rfc3339_has_github_shape() {
        assert_eq!(rfc3339(Timestamp(1_468_275_250_000)), "2016-07-11T22:14:10Z");
    }

    #[test]
    fn jwt_lifetime_is_checked() {
        let now = Timestamp(1_000_000_000);
        let jwt = |iat: u64, exp: u64| {
            let payload = URL_SAFE_NO_PAD.encode(json!({ "iat": iat, "exp": exp, "iss": "1" }).to_string());
            format!("e30.{payload}.c2ln")
        };
        assert!(check_jwt(&jwt(999_940, 1_000_480), now).is_ok());
        assert!(check_jwt(&jwt(999_940, 1_000_700), now).is_err());
        assert!(check_jwt(&jwt(999_000, 999_500), now).is_err());
        assert!(check_jwt("not-a-jwt", now).is_err());
    }
}
