//! The App client against the in-process mock GitHub API, on virtual time (no real sleeping).

#![cfg(feature = "client")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use chitty_core::upstream::full_jitter_backoff;
use chitty_core::{ManualClock, ManualTimer, RandomSource, SeededRandom, Timestamp};
use chitty_github::client::{AppCredentials, ClientConfig, ClientError, GitHubApp, InstallationClient, InstallationId};
use chitty_testkit::github_api::MockGitHub;

mod actions;
mod auth;
mod rest;

/// Test-only RSA key pair (see tests/fixtures/README.md): registered with no real App.
const PRIVATE_KEY: &[u8] = include_bytes!("../fixtures/test-app-private-key.pem");
const PUBLIC_KEY: &[u8] = include_bytes!("../fixtures/test-app-public-key.pem");
/// 2026-09-20T…: a realistic "now" so that JWT times look like GitHub's.
const START: Timestamp = Timestamp(1_790_000_000_000);
const ISSUER: &str = "Iv23liTestClientId";
const INSTALLATION: InstallationId = InstallationId(42);
/// Seed of the client's retry jitter, so that waits on the virtual clock are exact.
const JITTER_SEED: u64 = 0x5eed;

/// What the client's seeded jitter waits in all for retries `retries` (0-based, in the order they
/// happen) of a backoff starting at `base`; each is at most `base · 2^retry`. In whole milliseconds,
/// as the virtual clock counts.
fn jittered(base: Duration, retries: &[u32]) -> Duration {
    let random = SeededRandom::new(JITTER_SEED);
    let wait = |retry| full_jitter_backoff(base, Duration::MAX, retry, random.next_u64());
    retries.iter().map(|&retry| Duration::from_millis(wait(retry).as_millis() as u64)).sum()
}

/// The mock, a client pointed at it, and the virtual clock both share.
struct Harness {
    clock: ManualClock,
    github: MockGitHub,
    app: GitHubApp,
}

impl Harness {
    async fn new() -> Harness {
        Harness::with_config(|_| {}).await
    }

    async fn with_config(configure: impl FnOnce(&mut ClientConfig)) -> Harness {
        Harness::at_path("", configure).await
    }

    /// A harness whose client uses `base_url + prefix` (e.g. `/api/v3` for GitHub Enterprise Server).
    async fn at_path(prefix: &str, configure: impl FnOnce(&mut ClientConfig)) -> Harness {
        let clock = ManualClock::new(START);
        let github = MockGitHub::start(Arc::new(clock.clone())).await.unwrap();
        let mut config = ClientConfig::default();
        config.base_url = format!("{}{prefix}", github.base_url());
        config.user_agent = "chitty-tests".to_owned();
        configure(&mut config);
        let app = GitHubApp::builder(AppCredentials::from_pem(ISSUER, PRIVATE_KEY).unwrap())
            .with_config(config)
            .with_clock(Arc::new(clock.clone()))
            .with_timer(Arc::new(ManualTimer::new(clock.clone())))
            .with_random(Arc::new(SeededRandom::new(JITTER_SEED)))
            .build()
            .unwrap();
        Harness { clock, github, app }
    }

    fn repo(&self) -> InstallationClient {
        self.app.installation(INSTALLATION)
    }

    fn elapsed(&self) -> Duration {
        chitty_core::Clock::now(&self.clock).since(START)
    }

    /// Requests to REST paths (everything but the App's `/app/...` endpoints).
    fn rest_requests(&self) -> Vec<chitty_testkit::github_api::RecordedRequest> {
        self.github.requests().into_iter().filter(|r| !r.path.starts_with("/app")).collect()
    }
}

fn api_status(result: Result<impl std::fmt::Debug, ClientError>) -> u16 {
    result.unwrap_err().status().expect("an API error")
}
