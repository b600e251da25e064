//! A GitHub App against the mock GitHub API on virtual time: what the handler tests (review,
//! triage, push analysis, typed handlers, setup) start from.

use std::sync::Arc;

use chitty_core::{ManualClock, ManualTimer, Timestamp};
use chitty_github::client::{AppCredentials, ClientConfig, GitHubApp};
use chitty_github::processor::{ProcessorBuilder, RetryPolicy};
use chitty_testkit::github_api::MockGitHub;

/// The test App's private key (registered with no real App).
pub const PRIVATE_KEY: &str = include_str!("../fixtures/test-app-private-key.pem");
/// Where the virtual clock starts.
pub const START: Timestamp = Timestamp(1_790_000_000_000);

/// The mock GitHub API, an App client talking to it, and the virtual clock both run on.
pub struct MockApp {
    pub github: MockGitHub,
    pub app: GitHubApp,
    pub clock: ManualClock,
}

impl MockApp {
    /// The mock and an App (client id `Iv23liTest`) whose requests go to it.
    pub async fn start() -> MockApp {
        MockApp::start_as("Iv23liTest").await
    }

    /// The mock and an App identified as `issuer` (an App id or a client id).
    pub async fn start_as(issuer: &str) -> MockApp {
        let clock = ManualClock::new(START);
        let github = MockGitHub::start(Arc::new(clock.clone())).await.unwrap();
        let mut config = ClientConfig::default();
        config.base_url = github.base_url().to_owned();
        let app = GitHubApp::builder(AppCredentials::from_pem(issuer, PRIVATE_KEY.as_bytes()).unwrap())
            .with_config(config)
            .with_clock(Arc::new(clock.clone()))
            .with_timer(Arc::new(ManualTimer::new(clock.clone())))
            .build()
            .unwrap();
        MockApp { github, app, clock }
    }

    /// A timer on the virtual clock: retries' backoffs take no real time.
    pub fn timer(&self) -> Arc<ManualTimer> {
        Arc::new(ManualTimer::new(self.clock.clone()))
    }

    /// A processor builder with the App, `attempts` attempts per delivery, and backoffs on virtual time.
    pub fn processor(&self, attempts: u32) -> ProcessorBuilder {
        chitty_github::processor::Processor::builder()
            .github_app(self.app.clone())
            .retry(RetryPolicy { max_attempts: attempts, ..RetryPolicy::default() })
            .timer(self.timer())
    }
}
