//! The whole GitHub App: install flow, webhook, installations, push analysis, pull request review
//! and issue triage, with any OpenAI-compatible model (a chitty gateway, OpenAI, a local Ollama).
//!
//! ```sh
//! cargo run --release --example github_app --features github
//! ```
//!
//! With no GitHub variables it runs offline, against the testkit's mock GitHub API and a built-in
//! model: it sends itself a signed `pull_request` delivery, prints the review that gets posted, and
//! prints a `curl` command to send more. Otherwise:
//!
//! - `GITHUB_APP_ID` (or `GITHUB_APP_CLIENT_ID`), `GITHUB_APP_PRIVATE_KEY_PATH` (or
//!   `GITHUB_APP_PRIVATE_KEY`), `GITHUB_WEBHOOK_SECRET`, `GITHUB_API_URL` (GitHub Enterprise; default
//!   api.github.com): an App registered by hand;
//! - or `PUBLIC_URL` (the address GitHub reaches this server at, e.g. a tunnel's) without them: the
//!   manifest flow; the server prints a one-time setup link, saves the App's credentials to
//!   `CHITTY_GITHUB_CREDENTIALS` (default `github-app.json`, mode 0600) and uses them from then on;
//! - `DATABASE_URL`: installations in PostgreSQL (in memory otherwise);
//! - `CHITTY_LLM_BASE_URL`, `CHITTY_LLM_API_KEY`, `CHITTY_LLM_MODEL`, `CHITTY_EMBED_MODEL`: the model
//!   for reviews and triage (without a base URL, only push analysis runs);
//! - `CHITTY_GITHUB_CONFIG`: a TOML file whose `[github.review]`, `[github.triage]` and
//!   `[github.push_analysis]` sections say which handlers run and how (see `HandlersConfig`); without
//!   it, push analysis runs, and review and triage with the model above.
//!
//! Listens on `GITHUB_APP_ADDR` (default 127.0.0.1:8081): the webhook at `/api/github/webhooks`, the
//! setup pages at `/github/setup`, `/github/setup/callback` and `/github/callback`.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chitty_core::wire::{ChatCompletionRequest, ChatCompletionResponse};
use chitty_core::{Capabilities, Capability, Provider};
use chitty_github::analysis::review::ReviewConfig;
use chitty_github::analysis::triage::TriageConfig;
use chitty_github::analysis::{HandlerSection, HandlersConfig, PushAnalysisConfig};
use chitty_github::client::{AppCredentials, ClientConfig, GitHubApp};
use chitty_github::credentials::{CredentialsStore, FileCredentialsStore};
use chitty_github::installations::{
    InstallationStore, InstallationSync, MemoryInstallationStore, PostgresInstallationStore,
};
use chitty_github::intake::WebhookIntake;
use chitty_github::manifest::DEFAULT_WEBHOOK_PATH;
use chitty_github::processor::Processor;
use chitty_github::queue::InProcessQueue;
use chitty_github::server::{ConnectionLimits, Server, shutdown_signal, webhook_router};
use chitty_github::setup::{AppSetup, random_token};
use chitty_github::signature::WebhookSecret;
use chitty_github::testing::{SignedDelivery, TEST_SECRET, fixtures};
use chitty_providers::openai::OpenAiProvider;
use chitty_testkit::github_api::MockGitHub;
use serde_json::json;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The App's name in the manifest.
const APP_NAME: &str = "chitty-app";
/// The offline demo's private key: a test key registered with no real App.
const OFFLINE_KEY: &[u8] = include_bytes!("../chitty-github/tests/fixtures/test-app-private-key.pem");
/// The offline demo's pull request (the `pull_request.opened` fixture's).
const OFFLINE_PULL: &str = "/repos/Codertocat/Hello-World/pulls/2";

/// A model for the offline demo: every review says the same, with one comment on an added line.
#[derive(Debug)]
struct OfflineModel;

#[async_trait]
impl Provider for OfflineModel {
    fn name(&self) -> &str {
        "offline"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::of(&[Capability::Chat])
    }

    async fn chat(&self, request: ChatCompletionRequest) -> chitty_core::Result<ChatCompletionResponse> {
        let review = json!({
            "summary": "The README gains a line; nothing risky.",
            "risk": "low",
            "comments": [{ "path": "README.md", "line": 2, "body": "Consider a link to the docs here." }]
        });
        let response = json!({
            "id": "offline-1", "object": "chat.completion", "created": 0, "model": request.model,
            "choices": [{ "index": 0, "message": { "role": "assistant", "content": review.to_string() }, "finish_reason": "stop" }],
            "usage": { "prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0 }
        });
        serde_json::from_value(response).map_err(|e| chitty_core::Error::backend("offline model", e))
    }
}

/// The model for reviews and triage: the provider, the chat model, and the embedding model if any.
struct Model {
    provider: Arc<dyn Provider>,
    chat: String,
    embedding: Option<String>,
}

/// The model from `CHITTY_LLM_*`, if a base URL is set.
fn model_from_env() -> Result<Option<Model>, BoxError> {
    let Ok(base_url) = std::env::var("CHITTY_LLM_BASE_URL") else {
        return Ok(None);
    };
    let mut builder = OpenAiProvider::builder("llm").with_base_url(base_url);
    if let Ok(key) = std::env::var("CHITTY_LLM_API_KEY") {
        builder = builder.with_api_key(key);
    }
    let model = std::env::var("CHITTY_LLM_MODEL").unwrap_or_else(|_| "gpt-4.1-mini".to_owned());
    let embedding = std::env::var("CHITTY_EMBED_MODEL").ok();
    Ok(Some(Model { provider: Arc::new(builder.build()?), chat: model, embedding }))
}

/// The handlers to run: from `CHITTY_GITHUB_CONFIG` when it names a file; otherwise push analysis,
/// and review and triage with `model`'s chat model (triage's duplicates with its embedding model).
fn handlers_config(model: Option<&Model>) -> Result<HandlersConfig, BoxError> {
    if let Ok(path) = std::env::var("CHITTY_GITHUB_CONFIG") {
        let text = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
        // The file may hold the host's other settings too; the App reads its `[github]` table.
        let mut file: toml::Table = toml::from_str(&text).map_err(|e| format!("{path}: {e}"))?;
        let github = file.remove("github").unwrap_or_else(|| toml::Value::Table(toml::Table::new()));
        return Ok(github.try_into::<HandlersConfig>().map_err(|e| format!("{path}: [github]: {e}"))?);
    }
    let mut config = HandlersConfig::default();
    config.push_analysis = HandlerSection::Enabled(PushAnalysisConfig::default());
    if let Some(model) = model {
        config.review = HandlerSection::Enabled(ReviewConfig::new(&model.chat));
        let mut triage = TriageConfig::new(&model.chat);
        if let Some(embedding) = &model.embedding {
            triage = triage.with_embedding_model(embedding);
        }
        config.triage = HandlerSection::Enabled(triage);
    }
    Ok(config)
}

/// The processor: installations kept in sync, and the handlers `config` enables.
fn processor(
    app: GitHubApp,
    installations: Arc<dyn InstallationStore>,
    config: &HandlersConfig,
    model: Option<Arc<dyn Provider>>,
) -> chitty_github::Result<Processor> {
    let builder = InstallationSync::new(installations).register(Processor::builder().github_app(app));
    let enabled = [
        ("review", config.review.is_enabled()),
        ("triage", config.triage.is_enabled()),
        ("push_analysis", config.push_analysis.is_enabled()),
    ];
    let enabled: Vec<&str> = enabled.into_iter().filter_map(|(name, on)| on.then_some(name)).collect();
    tracing::info!(handlers = ?enabled, "ready-made handlers");
    config.register(builder, model)?.try_build()
}

/// The App serving on `listener`: the webhook (signed with `secret`) next to `pages`, and a worker
/// running `processor` on what the webhook queues. The server stops on Ctrl-C or SIGTERM; the worker
/// then drains the queue and stops.
struct Serving {
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    worker: std::thread::JoinHandle<()>,
}

fn serve(
    listener: tokio::net::TcpListener,
    secret: WebhookSecret,
    processor: Arc<Processor>,
    pages: axum::Router,
) -> Result<Serving, BoxError> {
    let (queue, deliveries) = InProcessQueue::bounded(10_000);
    let intake = WebhookIntake::builder([secret]).queue(Arc::new(queue)).build()?;
    let router = webhook_router(DEFAULT_WEBHOOK_PATH, Arc::new(intake)).merge(pages);
    // Handlers run after the 202, on their own thread and runtime: parsing payloads and calling GitHub
    // and the model never take the threads that answer GitHub.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let worker = std::thread::Builder::new()
        .name("github-app-worker".into())
        .spawn(move || runtime.block_on(processor.run(deliveries)))?;
    let server = tokio::spawn(async move {
        Server::new(ConnectionLimits::default()).serve(listener, router, shutdown_signal()).await
    });
    Ok(Serving { server, worker })
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    let addr = std::env::var("GITHUB_APP_ADDR").unwrap_or_else(|_| "127.0.0.1:8081".to_owned());
    let installations: Arc<dyn InstallationStore> = match std::env::var("DATABASE_URL") {
        Ok(url) => Arc::new(PostgresInstallationStore::connect(&url).await?),
        Err(_) => Arc::new(MemoryInstallationStore::new()),
    };
    let by_hand = std::env::var("GITHUB_APP_ID").is_ok() || std::env::var("GITHUB_APP_CLIENT_ID").is_ok();
    let public_url = std::env::var("PUBLIC_URL").ok();
    if !by_hand && public_url.is_none() {
        return offline_demo(&addr, installations).await;
    }
    let public_url = public_url.unwrap_or_else(|| format!("http://{addr}"));
    let (app, secret, setup) = if by_hand {
        let secret = std::env::var("GITHUB_WEBHOOK_SECRET").map_err(|_| "GITHUB_WEBHOOK_SECRET is not set")?;
        let app = GitHubApp::builder_from_env()?.with_user_agent(APP_NAME).build()?;
        let setup = AppSetup::builder(APP_NAME, &public_url)
            .app(app.clone())
            .installation_store(installations.clone())
            .build()?;
        (app, WebhookSecret::new(secret), setup)
    } else {
        let path = std::env::var("CHITTY_GITHUB_CREDENTIALS").unwrap_or_else(|_| "github-app.json".to_owned());
        let credentials = Arc::new(FileCredentialsStore::new(path));
        let mut builder = AppSetup::builder(APP_NAME, &public_url)
            .credentials_store(credentials.clone())
            .installation_store(installations.clone())
            .setup_token(random_token());
        if let Ok(api) = std::env::var("GITHUB_API_URL") {
            builder = builder.api_url(api);
        }
        let setup = builder.build()?;
        let registration = credentials.load().await?;
        let (Some(registration), Some(app)) = (registration.clone(), setup.app().await?) else {
            let router = setup.router();
            tracing::info!("no GitHub App yet: register it at {}", setup.setup_url());
            tracing::info!("then restart this server: it will use the saved credentials");
            let listener = tokio::net::TcpListener::bind(&addr).await?;
            Server::new(ConnectionLimits::default()).serve(listener, router, shutdown_signal()).await?;
            return Ok(());
        };
        let secret = registration.webhook_secret().ok_or("the saved App has no webhook secret")?;
        (app, secret, setup)
    };
    let model = model_from_env()?;
    let config = handlers_config(model.as_ref())?;
    let processor = Arc::new(processor(app, installations, &config, model.map(|m| m.provider))?);
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    let serving = serve(listener, secret, processor.clone(), setup.router())?;
    tracing::info!("listening on http://{addr}{DEFAULT_WEBHOOK_PATH}; GitHub reaches it at {public_url}");
    serving.server.await??;
    // The server (and with it the queue's sender) is gone: the worker drains what is queued.
    let worker = serving.worker;
    tokio::task::spawn_blocking(move || worker.join()).await?.map_err(|_| "the worker thread panicked")?;
    tracing::info!(stats = ?processor.stats(), "stopped");
    Ok(())
}

/// The offline demo, running: the mock GitHub API, and the App's server on `local`.
pub struct OfflineDemo {
    /// The mock GitHub API the App talks to.
    pub github: MockGitHub,
    /// Where the App listens.
    pub local: std::net::SocketAddr,
    serving: Serving,
}

/// Starts the offline demo on `addr`: the mock GitHub API with one pull request, the built-in model,
/// and the App's webhook.
pub async fn start_offline(addr: &str, installations: Arc<dyn InstallationStore>) -> Result<OfflineDemo, BoxError> {
    let github = MockGitHub::start(Arc::new(chitty_core::runtime::SystemClock)).await?;
    github.set_resource(
        &format!("{OFFLINE_PULL}/files"),
        json!([{ "filename": "README.md", "status": "modified", "additions": 1, "deletions": 0, "changes": 1,
                 "patch": "@@ -1 +1,2 @@\n # Hello-World\n+Update the README with new information." }]),
    );
    github.set_resource(&format!("{OFFLINE_PULL}/reviews"), json!([]));
    let mut config = ClientConfig::default();
    config.base_url = github.base_url().to_owned();
    config.mutation_interval = Duration::ZERO;
    let app =
        GitHubApp::builder(AppCredentials::from_pem("Iv23liOfflineDemo", OFFLINE_KEY)?).with_config(config).build()?;
    let model = Model { provider: Arc::new(OfflineModel), chat: "offline".to_owned(), embedding: None };
    let config = handlers_config(Some(&model))?;
    let processor = Arc::new(processor(app, installations, &config, Some(model.provider))?);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let serving = serve(listener, WebhookSecret::new(TEST_SECRET), processor, axum::Router::new())?;
    Ok(OfflineDemo { github, local, serving })
}

impl OfflineDemo {
    /// Sends a signed `pull_request` delivery over HTTP and waits (up to 5 s) for the review the App
    /// posts on the mock API: its status code and the review.
    pub async fn send_sample(&self) -> Result<(u16, Option<serde_json::Value>), BoxError> {
        let request = SignedDelivery::new("pull_request", fixtures::PULL_REQUEST_OPENED).to_request();
        let mut post = reqwest::Client::new().post(format!("http://{}{DEFAULT_WEBHOOK_PATH}", self.local));
        for (name, value) in request.headers() {
            post = post.header(name.as_str(), value.as_bytes());
        }
        let status = post.body(request.into_body()).send().await?.status().as_u16();
        for _ in 0..50 {
            let reviews = format!("{OFFLINE_PULL}/reviews");
            let posted = self.github.requests().into_iter().find(|r| r.path == reviews && r.method == "POST");
            if let Some(review) = posted.and_then(|r| r.json()) {
                return Ok((status, Some(review)));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok((status, None))
    }

    /// Stops the server; the worker stops once it has drained the queue.
    pub fn stop(self) {
        self.serving.server.abort();
    }
}

/// Offline: the demo, one signed `pull_request` sent to ourselves, the review printed.
async fn offline_demo(addr: &str, installations: Arc<dyn InstallationStore>) -> Result<(), BoxError> {
    let demo = start_offline(addr, installations).await?;
    let local = demo.local;
    tracing::info!(
        "offline: mock GitHub at {}, webhook at http://{local}{DEFAULT_WEBHOOK_PATH}",
        demo.github.base_url()
    );
    let (status, review) = demo.send_sample().await?;
    tracing::info!(status, "sent a signed pull_request delivery");
    match review {
        Some(review) => {
            println!("\nReview posted on Codertocat/Hello-World#2:\n{}\n", review["body"].as_str().unwrap_or_default());
            println!("Inline comments: {}\n", review["comments"]);
        }
        None => println!("\nNo review was posted within 5 s; see the log above.\n"),
    }
    println!("Send another (a new delivery id; the same head commit is reviewed once):");
    println!(
        "  BODY=$(cat chitty-github/tests/fixtures/pull_request.opened.json)\n  \
         SIG=\"sha256=$(printf '%s' \"$BODY\" | openssl dgst -sha256 -hmac '{TEST_SECRET}' | sed 's/^.* //')\"\n  \
         curl -i http://{local}{DEFAULT_WEBHOOK_PATH} -H 'Content-Type: application/json' \
         -H 'X-GitHub-Event: pull_request' -H \"X-GitHub-Delivery: $(cat /proc/sys/kernel/random/uuid)\" \
         -H \"X-Hub-Signature-256: $SIG\" --data-binary \"$BODY\"\n"
    );
    println!("Ctrl-C stops the server.");
    demo.serving.server.await??;
    Ok(())
}
