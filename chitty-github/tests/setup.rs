//! The install flow against the mock GitHub API: the setup page and its manifest, the code
//! exchange (good, bad, replayed, from another browser), and the post-installation callback
//! (verified, replayed, bogus, GitHub failing).
#![cfg(all(feature = "server", feature = "client"))]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use chitty_core::{ManualClock, ManualTimer};
use chitty_github::credentials::{CredentialsStore, MemoryCredentialsStore};
use chitty_github::installations::{InstallationStore, MemoryInstallationStore};
use chitty_github::manifest::AppManifest;
use chitty_github::setup::{AppSetup, AppSetupBuilder, STATE_COOKIE, random_token};
use chitty_testkit::github_api::{Fault, MockGitHub};
use http::{Method, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

use common::app::{MockApp, PRIVATE_KEY, START};

const PUBLIC_URL: &str = "https://bot.example.com";
const CODE: &str = "a180b1a3d263c81bc6441d7b990bae27d4c10679";

struct Harness {
    github: MockGitHub,
    credentials: Arc<MemoryCredentialsStore>,
    installations: Arc<MemoryInstallationStore>,
    setup: AppSetup,
    router: Router,
}

impl Harness {
    async fn new() -> Harness {
        Harness::with(|builder| builder).await
    }

    async fn with(configure: impl FnOnce(AppSetupBuilder) -> AppSetupBuilder) -> Harness {
        let clock = ManualClock::new(START);
        let github = MockGitHub::start(Arc::new(clock.clone())).await.unwrap();
        let credentials = Arc::new(MemoryCredentialsStore::new());
        let installations = Arc::new(MemoryInstallationStore::new());
        let builder = AppSetup::builder("chitty-test-bot", PUBLIC_URL)
            .api_url(github.base_url())
            .credentials_store(credentials.clone())
            .installation_store(installations.clone())
            .clock(Arc::new(clock.clone()))
            .timer(Arc::new(ManualTimer::new(clock)));
        let setup = configure(builder).build().unwrap();
        let router = setup.router();
        Harness { github, credentials, installations, setup, router }
    }

    async fn get(&self, uri: &str, cookie: Option<&str>) -> Page {
        let mut request = http::Request::get(uri);
        if let Some(cookie) = cookie {
            request = request.header("cookie", cookie);
        }
        let response = self.router.clone().oneshot(request.body(Body::empty()).unwrap()).await.unwrap();
        let (parts, body) = response.into_parts();
        let body = String::from_utf8(body.collect().await.unwrap().to_bytes().to_vec()).unwrap();
        Page { status: parts.status, headers: parts.headers, body }
    }

    /// Opens the setup page and returns the `state` its form and cookie carry.
    async fn start_setup(&self) -> String {
        let page = self.get("/github/setup", None).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        let state = page.state_cookie().expect("a state cookie");
        assert!(page.body.contains(&format!("/settings/apps/new?state={state}")), "{}", page.body);
        state
    }

    /// Runs the whole manifest flow with the mock's conversion of [`CODE`].
    async fn register(&self) -> Page {
        self.github.add_manifest_code(CODE, conversion());
        let state = self.start_setup().await;
        self.get(&format!("/github/setup/callback?code={CODE}&state={state}"), Some(&format!("{STATE_COOKIE}={state}")))
            .await
    }

    fn conversions(&self) -> usize {
        self.github.requests().iter().filter(|r| r.path.starts_with("/app-manifests/")).count()
    }
}

struct Page {
    status: StatusCode,
    headers: http::HeaderMap,
    body: String,
}

impl Page {
    fn state_cookie(&self) -> Option<String> {
        let cookie = self.headers.get("set-cookie")?.to_str().ok()?;
        assert!(
            cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax") && cookie.contains("Secure"),
            "{cookie}"
        );
        let value = cookie.strip_prefix(&format!("{STATE_COOKIE}="))?.split(';').next()?;
        Some(value.to_owned())
    }

    /// The hidden `manifest` field of the setup form, unescaped.
    fn manifest(&self) -> Value {
        let start = self.body.find("name=\"manifest\" value=\"").unwrap() + "name=\"manifest\" value=\"".len();
        let end = start + self.body[start..].find('"').unwrap();
        let text = self.body[start..end].replace("&quot;", "\"").replace("&#39;", "'").replace("&amp;", "&");
        serde_json::from_str(&text).unwrap()
    }
}

/// GitHub's answer to a manifest conversion (its documented shape), with the test key.
fn conversion() -> Value {
    json!({
        "id": 31415,
        "slug": "chitty-test-bot",
        "node_id": "A_kwHOAGk2DM4AAew_",
        "owner": { "login": "octo-org", "id": 6811672, "type": "Organization" },
        "name": "chitty-test-bot",
        "description": "",
        "external_url": PUBLIC_URL,
        "html_url": "https://github.com/apps/chitty-test-bot",
        "created_at": "2026-09-20T12:00:00Z",
        "updated_at": "2026-09-20T12:00:00Z",
        "permissions": { "contents": "read", "metadata": "read" },
        "events": ["push"],
        "client_id": "Iv23liTestClientId",
        "client_secret": "client-secret-0123456789",
        "webhook_secret": "webhook-secret-0123456789",
        "pem": PRIVATE_KEY,
    })
}

/// GitHub's answer to `GET /app/installations/{id}`.
fn installation(id: u64) -> Value {
    json!({
        "id": id,
        "account": { "login": "octo-org", "id": 6811672, "type": "Organization" },
        "app_id": 31415,
        "repository_selection": "selected",
        "permissions": { "contents": "read", "pull_requests": "write" },
        "events": ["pull_request", "push"],
        "created_at": "2026-09-20T12:05:00Z",
        "updated_at": "2026-09-20T12:05:00Z",
        "suspended_at": null,
        "suspended_by": null,
    })
}

#[tokio::test]
async fn the_setup_page_posts_the_manifest_to_github_with_a_state() {
    let harness = Harness::new().await;
    let page = harness.get("/github/setup", None).await;
    assert_eq!(page.status, StatusCode::OK);
    let state = page.state_cookie().unwrap();
    assert_eq!(state.len(), 64);
    assert!(
        page.body.contains(&format!("action=\"https://github.com/settings/apps/new?state={state}\" method=\"post\"")),
        "{}",
        page.body
    );
    let manifest = page.manifest();
    assert_eq!(manifest, serde_json::to_value(AppManifest::new("chitty-test-bot", PUBLIC_URL)).unwrap());
    assert_eq!(manifest["redirect_url"], "https://bot.example.com/github/setup/callback");
    assert_eq!(manifest["setup_url"], "https://bot.example.com/github/callback");
    assert_eq!(page.headers["referrer-policy"], "no-referrer");
    assert!(
        page.headers["content-security-policy"].to_str().unwrap().contains("form-action 'self' https://github.com")
    );
    let again = harness.get("/github/setup", None).await.state_cookie().unwrap();
    assert_ne!(again, state, "every visit gets its own state");

    let org = harness.get("/github/setup?organization=octo-org", None).await;
    let state = org.state_cookie().unwrap();
    assert!(org.body.contains(&format!("https://github.com/organizations/octo-org/settings/apps/new?state={state}")));
    let hostile = harness.get("/github/setup?organization=%22%3E%3Cscript%3E", None).await;
    assert_eq!(hostile.status, StatusCode::BAD_REQUEST);
    assert!(!hostile.body.contains("<script>"));
}

#[tokio::test]
async fn github_enterprise_gets_the_form_and_the_api_on_its_host() {
    let harness = Harness::with(|b| b.github_enterprise("https://ghe.example.com/").organization("platform")).await;
    let page = harness.get("/github/setup", None).await;
    let state = page.state_cookie().unwrap();
    assert!(
        page.body.contains(&format!("https://ghe.example.com/organizations/platform/settings/apps/new?state={state}")),
        "{}",
        page.body
    );
    let default_api = AppSetup::builder("x", PUBLIC_URL)
        .github_enterprise("https://ghe.example.com")
        .credentials_store(Arc::new(MemoryCredentialsStore::new()))
        .build()
        .unwrap();
    assert!(format!("{default_api:?}").contains("https://ghe.example.com/api/v3"), "{default_api:?}");
    let bad = AppSetup::builder("x", "not a url").credentials_store(Arc::new(MemoryCredentialsStore::new())).build();
    assert!(matches!(bad, Err(chitty_github::Error::InvalidConfig { .. })));
    let no_store = AppSetup::builder("x", PUBLIC_URL).build();
    assert!(matches!(no_store, Err(chitty_github::Error::InvalidConfig { .. })));
}

#[tokio::test]
async fn the_callback_exchanges_the_code_and_saves_the_credentials() {
    let harness = Harness::new().await;
    let page = harness.register().await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(page.body.contains("https://github.com/apps/chitty-test-bot/installations/new"), "{}", page.body);
    for secret in ["client-secret-0123456789", "webhook-secret-0123456789", "PRIVATE KEY"] {
        assert!(!page.body.contains(secret), "the page shows {secret}");
    }
    assert!(page.headers["set-cookie"].to_str().unwrap().contains("Max-Age=0"), "the state cookie is cleared");

    let saved = harness.credentials.load().await.unwrap().expect("saved");
    assert_eq!((saved.app_id, saved.client_id.as_str()), (31415, "Iv23liTestClientId"));
    assert_eq!(saved.owner.as_deref(), Some("octo-org"));
    assert_eq!(saved.client_secret.expose_secret(), "client-secret-0123456789");
    assert_eq!(saved.webhook_secret.as_ref().unwrap().expose_secret(), "webhook-secret-0123456789");
    assert_eq!(saved.private_key_pem.expose_secret(), PRIVATE_KEY);
    assert!(!format!("{saved:?}").contains("secret-0123456789"));

    let exchange = harness.github.requests().into_iter().find(|r| r.path.starts_with("/app-manifests/")).unwrap();
    assert_eq!(
        (&exchange.method, exchange.path.as_str()),
        (&Method::POST, format!("/app-manifests/{CODE}/conversions").as_str())
    );
    assert_eq!(exchange.credential(), None, "the conversion is unauthenticated");

    // Registered: the setup pages refuse to replace the App's credentials.
    let again = harness.get("/github/setup", None).await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    assert!(again.body.contains("chitty-test-bot"));
    assert!(harness.setup.app().await.unwrap().is_some(), "the App client is ready");
}

#[tokio::test]
async fn a_bad_code_is_refused_and_nothing_is_saved() {
    let harness = Harness::new().await;
    let state = harness.start_setup().await;
    let cookie = format!("{STATE_COOKIE}={state}");
    let page = harness.get(&format!("/github/setup/callback?code=deadbeef&state={state}"), Some(&cookie)).await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST, "{}", page.body);
    assert!(page.body.contains("GitHub refused the code"), "{}", page.body);
    assert_eq!(harness.credentials.load().await.unwrap(), None);
    assert_eq!(harness.conversions(), 1);

    // A code that cannot be one never reaches GitHub.
    let state = harness.start_setup().await;
    let cookie = format!("{STATE_COOKIE}={state}");
    let page = harness.get(&format!("/github/setup/callback?code=..%2Fapp&state={state}"), Some(&cookie)).await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    assert_eq!(harness.conversions(), 1);

    let missing = harness.get("/github/setup/callback", None).await;
    assert_eq!(missing.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_callback_whose_state_did_not_start_in_this_browser_is_refused() {
    let harness = Harness::with(|b| b.allow_reregistration(true)).await;
    harness.github.add_manifest_code(CODE, conversion());
    let state = harness.start_setup().await;
    let uri = format!("/github/setup/callback?code={CODE}&state={state}");
    // Forged: no cookie, another browser's cookie, a state never issued.
    assert_eq!(harness.get(&uri, None).await.status, StatusCode::FORBIDDEN);
    let other = harness.start_setup().await;
    assert_eq!(harness.get(&uri, Some(&format!("{STATE_COOKIE}={other}"))).await.status, StatusCode::FORBIDDEN);
    let invented = "0".repeat(64);
    let forged = format!("/github/setup/callback?code={CODE}&state={invented}");
    assert_eq!(harness.get(&forged, Some(&format!("{STATE_COOKIE}={invented}"))).await.status, StatusCode::FORBIDDEN);
    assert_eq!(harness.conversions(), 0, "no refused callback reaches GitHub");
    assert_eq!(harness.credentials.load().await.unwrap(), None);

    // A refused attempt used the state up: the right cookie is too late now.
    assert_eq!(harness.get(&uri, Some(&format!("{STATE_COOKIE}={state}"))).await.status, StatusCode::FORBIDDEN);
    // A fresh flow works, once; replaying its callback URL is refused.
    let state = harness.start_setup().await;
    let uri = format!("/github/setup/callback?code={CODE}&state={state}");
    let cookie = format!("{STATE_COOKIE}={state}");
    assert_eq!(harness.get(&uri, Some(&cookie)).await.status, StatusCode::OK);
    assert_eq!(harness.get(&uri, Some(&cookie)).await.status, StatusCode::FORBIDDEN);
    assert_eq!(harness.conversions(), 1);
}

#[tokio::test]
async fn the_install_callback_records_a_verified_installation_once() {
    let harness = Harness::new().await;
    assert_eq!(harness.register().await.status, StatusCode::OK);
    harness.github.add_installation(installation(4242));
    let uri = "/github/callback?installation_id=4242&setup_action=install";
    let page = harness.get(uri, None).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(page.body.contains("octo-org"));
    let verify = harness.github.requests().into_iter().find(|r| r.path == "/app/installations/4242").unwrap();
    assert!(verify.credential().is_some_and(|jwt| jwt.split('.').count() == 3), "verified with the App JWT");

    let recorded = harness.installations.get(4242).await.unwrap().expect("recorded");
    assert_eq!((recorded.account.login.as_str(), recorded.app_id), ("octo-org", Some(31415)));
    assert_eq!(recorded.permissions["pull_requests"], "write");
    assert!(recorded.is_active());

    // Replayed (a reload, or the same link again): the same record, once.
    for action in ["install", "update"] {
        let page = harness.get(&format!("/github/callback?installation_id=4242&setup_action={action}"), None).await;
        assert_eq!(page.status, StatusCode::OK);
    }
    assert_eq!(harness.installations.list().await.unwrap(), [recorded]);
}

#[tokio::test]
async fn a_bogus_installation_id_records_nothing() {
    let harness = Harness::new().await;
    assert_eq!(harness.register().await.status, StatusCode::OK);
    let page = harness.get("/github/callback?installation_id=999&setup_action=install", None).await;
    assert_eq!(page.status, StatusCode::NOT_FOUND, "{}", page.body);
    assert!(page.body.contains("knows no installation 999"), "{}", page.body);
    for bad in [
        "installation_id=abc&setup_action=install",
        "installation_id=0&setup_action=install",
        "installation_id=1",
        "installation_id=1&setup_action=delete",
    ] {
        assert_eq!(
            harness.get(&format!("/github/callback?{bad}"), None).await.status,
            StatusCode::BAD_REQUEST,
            "{bad}"
        );
    }
    let requested = harness.get("/github/callback?setup_action=request", None).await;
    assert_eq!(requested.status, StatusCode::OK);
    assert!(harness.installations.list().await.unwrap().is_empty());
    assert!(harness.installations.get(999).await.unwrap().is_none());
}

#[tokio::test]
async fn github_failing_during_verification_records_nothing() {
    let harness = Harness::new().await;
    assert_eq!(harness.register().await.status, StatusCode::OK);
    harness.github.add_installation(installation(4242));
    harness.github.inject_on(Some(Method::GET), Some("/app/installations/4242"), Fault::status(502, "Bad Gateway"), 10);
    let page = harness.get("/github/callback?installation_id=4242&setup_action=install", None).await;
    assert_eq!(page.status, StatusCode::BAD_GATEWAY, "{}", page.body);
    assert!(harness.installations.get(4242).await.unwrap().is_none());
}

#[tokio::test]
async fn the_install_callback_needs_a_registered_app() {
    let harness = Harness::new().await;
    harness.github.add_installation(installation(4242));
    let page = harness.get("/github/callback?installation_id=4242&setup_action=install", None).await;
    assert_eq!(page.status, StatusCode::SERVICE_UNAVAILABLE, "{}", page.body);
    assert!(harness.installations.get(4242).await.unwrap().is_none());
}

#[tokio::test]
async fn a_setup_token_keeps_the_page_to_whoever_has_the_printed_link() {
    let token = random_token();
    let harness = Harness::with(|b| b.setup_token(token.clone())).await;
    assert_eq!(harness.get("/github/setup", None).await.status, StatusCode::FORBIDDEN);
    assert_eq!(harness.get("/github/setup?token=guess", None).await.status, StatusCode::FORBIDDEN);
    let link = harness.setup.setup_url();
    assert_eq!(link, format!("{PUBLIC_URL}/github/setup?token={token}"));
    let page = harness.get(link.strip_prefix(PUBLIC_URL).unwrap(), None).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(page.body.contains(&format!("name=\"token\" value=\"{token}\"")), "the organisation form keeps it");
    let org = harness.get(&format!("/github/setup?organization=octo-org&token={token}"), None).await;
    assert_eq!(org.status, StatusCode::OK);

    let short = AppSetup::builder("x", PUBLIC_URL)
        .credentials_store(Arc::new(MemoryCredentialsStore::new()))
        .setup_token("short")
        .build();
    assert!(matches!(short, Err(chitty_github::Error::InvalidConfig { .. })));
}

#[tokio::test]
async fn an_app_registered_by_hand_needs_no_store_and_blocks_the_setup_pages() {
    let MockApp { github, app, .. } = MockApp::start_as("31415").await;
    let installations = Arc::new(MemoryInstallationStore::new());
    let setup = AppSetup::builder("x", PUBLIC_URL).app(app).installation_store(installations.clone()).build().unwrap();
    let router: Router = setup.router();
    let get = |uri: &'static str| {
        let router = router.clone();
        async move { router.oneshot(http::Request::get(uri).body(Body::empty()).unwrap()).await.unwrap().status() }
    };
    assert_eq!(get("/github/setup").await, StatusCode::CONFLICT);
    github.add_installation(installation(77));
    assert_eq!(get("/github/callback?installation_id=77&setup_action=install").await, StatusCode::OK);
    assert!(installations.get(77).await.unwrap().is_some());
}
