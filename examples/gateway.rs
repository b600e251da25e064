//! The main job: an OpenAI-compatible gateway on 127.0.0.1:8080 that works offline.
//!
//! `cargo run --release --example gateway [-- --addr HOST:PORT --config PATH]`
//!
//! It reads `examples/gateway.toml` (or the copy embedded in the binary when the file is not there). Providers of
//! kind `mock` are served by an in-process mock OpenAI upstream backed by the testkit's deterministic provider,
//! so the models `chitty-mock` and `chitty-mock-embed` answer without a network. With `OPENAI_API_KEY` set, model
//! names `openai/<name>` are also routed to `OPENAI_BASE_URL` (default OpenAI's API) as `<name>`.
//! The demo tenant's key is `sk-chitty-demo`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use chitty::core::gateway::{Gateway, PrefixConfig};
use chitty::core::keys::CachePolicy;
use chitty::core::{ModelPrice, Provider};
use chitty::providers::config::GatewayFile;
use chitty::providers::memory::{MemoryBudgetStore, MemoryCache};
use chitty::providers::openai::OpenAiProvider;
use chitty::providers::prometheus::{PrometheusSink, Registry, metrics_router};
use chitty::providers::redis::{RedisBudgetStore, RedisCache, RedisConnection};
use chitty::providers::runtime::TokioRuntimeExt;
use chitty::providers::server::{PerCoreServer, Server, ServerOptions, require_bearer, router, shutdown_signal};
use chitty_testkit::mock::MockProvider;
use chitty_testkit::mock_upstream::{MockOpenAi, MockServer};
use clap::Parser;

/// jemalloc returns freed memory to the OS (configured in `.cargo/config.toml`); glibc would keep a burst's peak.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const DEFAULT_CONFIG: &str = "examples/gateway.toml";
const EMBEDDED_CONFIG: &str = include_str!("gateway.toml");

/// An OpenAI-compatible LLM gateway built from chitty.
#[derive(Debug, Parser)]
struct Args {
    /// Address to listen on (overrides the file's `server.addr`).
    #[arg(long, env = "CHITTY_ADDR")]
    addr: Option<SocketAddr>,
    /// Configuration file.
    #[arg(long, default_value = DEFAULT_CONFIG)]
    config: PathBuf,
    /// Threads serving HTTP (overrides the file's `server.workers`; default one per core).
    #[arg(long, env = "CHITTY_WORKERS")]
    workers: Option<usize>,
}

// HTTP is served on threads of its own (PerCoreServer); this runtime only runs the mock upstream and the
// Redis connections.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    let args = Args::parse();

    let file = if args.config.exists() {
        GatewayFile::load(&args.config)?
    } else if args.config.as_path() == std::path::Path::new(DEFAULT_CONFIG) {
        tracing::info!("{DEFAULT_CONFIG} not found; using the embedded default configuration");
        GatewayFile::parse(EMBEDDED_CONFIG)?
    } else {
        return Err(format!("configuration file {} does not exist", args.config.display()).into());
    };
    let mut config = file.gateway_config()?;

    // Mock upstreams live as long as the gateway: keep their handles.
    let mut mocks: Vec<MockServer> = Vec::new();
    let mut providers: Vec<Arc<dyn Provider>> = Vec::new();
    for section in &file.providers {
        if section.kind == "mock" {
            let server = MockOpenAi::serve(Arc::new(MockProvider::new(section.name.clone()))).await?;
            let upstream = OpenAiProvider::builder(section.name.clone()).with_base_url(server.base_url()).build()?;
            tracing::info!(provider = %section.name, url = %server.base_url(), "started the mock OpenAI upstream");
            mocks.push(server);
            providers.push(Arc::new(upstream));
        } else {
            providers.push(section.build()?);
        }
    }

    if std::env::var("OPENAI_API_KEY").is_ok_and(|k| !k.is_empty()) && !providers.iter().any(|p| p.name() == "openai") {
        let openai = OpenAiProvider::from_env("openai").build()?;
        tracing::info!(base_url = %openai.base_url(), "OPENAI_API_KEY is set: routing `openai/<model>`");
        providers.push(Arc::new(openai));
        config.prefixes.push(PrefixConfig {
            prefix: "openai/".into(),
            provider: "openai".into(),
            // Budgets need a price for unknown names: GPT-4o's list price is a conservative default.
            price: ModelPrice::from_micros_per_mtok(2_500_000, 10_000_000),
            cache: CachePolicy::Deterministic,
            max_output_tokens: 4_096,
            output_cap_field: Default::default(),
            limits: Default::default(),
        });
    }

    // Metrics label only configured model names, so user-chosen names cannot blow up cardinality.
    let mut registry = Registry::default();
    let sink = PrometheusSink::new(&mut registry, config.models.iter().map(|m| m.name.clone()));
    let registry = Arc::new(registry);

    let mut builder = Gateway::builder(config).events(Arc::new(sink)).tokio_runtime();
    for p in providers {
        builder = builder.provider(p);
    }
    let redis = |section: &'static str, url: Option<&chitty::providers::config::Secret>| {
        let url = url.map(|u| u.expose().to_owned());
        async move {
            let url = url.ok_or_else(|| format!("{section}.url is required for backend \"redis\""))?;
            RedisConnection::connect(&url).await.map_err(|e| format!("{section}: {e}"))
        }
    };
    builder = match file.cache.backend.as_str() {
        "memory" => builder.cache(Arc::new(MemoryCache::new(file.cache.max_bytes))),
        "redis" => builder.cache(Arc::new(RedisCache::new(redis("cache", file.cache.url.as_ref()).await?, "chitty"))),
        "none" => builder,
        other => return Err(format!("cache.backend: `{other}` is not one of memory, redis, none").into()),
    };
    builder = match file.budgets.backend.as_str() {
        "memory" => builder.budgets(Arc::new(MemoryBudgetStore::new())),
        "redis" => builder
            .budgets(Arc::new(RedisBudgetStore::new(redis("budgets", file.budgets.url.as_ref()).await?, "chitty"))),
        other => return Err(format!("budgets.backend: `{other}` is not one of memory, redis").into()),
    };
    let gateway = builder.build().await?;

    let addr: SocketAddr = match args.addr {
        Some(a) => a,
        None => file.server.addr.parse().map_err(|e| format!("server.addr `{}`: {e}", file.server.addr))?,
    };
    let options = ServerOptions { body_limit: file.server.body_limit_bytes, ..ServerOptions::default() };
    let workers = args
        .workers
        .or(file.server.workers)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, std::num::NonZero::get));
    let server = PerCoreServer::bind(addr, workers)?.with_limits(file.server.connection_limits());
    let local = server.local_addr();

    // `/metrics` names tenants and models: behind a token when one is set, on its own address when one is set.
    let mut metrics = metrics_router(registry);
    if let Some(token) = &file.server.metrics_token {
        metrics = require_bearer(metrics, token.expose());
    }
    let mut app = router(gateway, options);
    let metrics_server = match &file.server.metrics_addr {
        Some(metrics_addr) => {
            let listener = tokio::net::TcpListener::bind(metrics_addr)
                .await
                .map_err(|e| format!("server.metrics_addr `{metrics_addr}`: {e}"))?;
            println!("metrics on http://{}/metrics", listener.local_addr()?);
            let serving = Server::new(file.server.connection_limits());
            Some(tokio::spawn(async move { serving.serve(listener, metrics, shutdown_signal()).await }))
        }
        None => {
            app = app.merge(metrics);
            None
        }
    };
    println!(
        "chitty gateway listening on http://{local} with {workers} worker thread(s)  (models: chitty-mock, chitty-mock-embed; key: sk-chitty-demo)"
    );
    println!();
    println!("  curl http://{local}/v1/chat/completions \\");
    println!("    -H 'Authorization: Bearer sk-chitty-demo' -H 'Content-Type: application/json' \\");
    println!("    -d '{{\"model\": \"chitty-mock\", \"messages\": [{{\"role\": \"user\", \"content\": \"Hello\"}}]}}'");
    println!();
    println!(
        "  python3 -c 'from openai import OpenAI; c = OpenAI(base_url=\"http://{local}/v1\", api_key=\"sk-chitty-demo\"); \\"
    );
    println!(
        "    print(c.chat.completions.create(model=\"chitty-mock\", messages=[{{\"role\": \"user\", \"content\": \"Hello\"}}]).choices[0].message.content)'"
    );
    println!();

    server.serve(app, shutdown_signal()).await?;
    if let Some(metrics_server) = metrics_server {
        metrics_server.await??;
    }
    tracing::info!("shut down: in-flight requests drained");
    drop(mocks);
    Ok(())
}
