//! The main job: an OpenAI-compatible gateway on 127.0.0.1:8080 that works offline.
//!
//! `cargo run --release --example gateway [-- --addr HOST:PORT --config PATH]`
//!
//! It reads `examples/gateway.toml` (or the copy embedded in the binary when the file is not there). Providers of
//! kind `mock` are served by an in-process mock OpenAI upstream backed by the testkit's deterministic provider,
//! so the models `chitty-mock` and `chitty-mock-embed` answer without a network. With `OPENAI_API_KEY` set, model
//! names `openai/<name>` are also routed to `OPENAI_BASE_URL` (default OpenAI's API) as `<name>`.
//! The demo tenant's key is `sk-chitty-demo`.
//!
//! With feature `opentelemetry-otlp` and `OTEL_EXPORTER_OTLP_ENDPOINT` set (say `http://127.0.0.1:4318`), request
//! spans are exported to that collector, parented to each client's `traceparent`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use chitty::core::gateway::PrefixConfig;
use chitty::core::keys::CachePolicy;
use chitty::core::{ModelPrice, Provider};
use chitty::providers::config::{GatewayFile, ProviderSection, Secret};
use chitty::providers::openai::OpenAiProvider;
use chitty_testkit::mock::MockProvider;
use chitty_testkit::mock_upstream::{MockOpenAi, MockServer};
use clap::Parser;
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

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
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let subscriber = tracing_subscriber::registry().with(tracing_subscriber::fmt::layer().with_filter(filter));
    // Offline unless asked: spans are exported only when an OTLP endpoint is set in the environment.
    #[cfg(feature = "opentelemetry-otlp")]
    let (subscriber, otel) = match chitty::providers::otel::OtelConfig::from_env() {
        Some(config) => {
            let (layer, guard) = chitty::providers::otel::layer(&config)?;
            (subscriber.with(Some(layer)), Some(guard))
        }
        None => (subscriber.with(None), None),
    };
    subscriber.init();
    let args = Args::parse();

    let file = if args.config.exists() {
        GatewayFile::load(&args.config)?
    } else if args.config.as_path() == std::path::Path::new(DEFAULT_CONFIG) {
        tracing::info!("{DEFAULT_CONFIG} not found; using the embedded default configuration");
        GatewayFile::parse(EMBEDDED_CONFIG)?
    } else {
        return Err(format!("configuration file {} does not exist", args.config.display()).into());
    };
    let mut file = file;

    // Mock upstreams live as long as the gateway: keep their handles.
    let mut mocks: Vec<MockServer> = Vec::new();
    let mut host_providers: Vec<Arc<dyn Provider>> = Vec::new();
    for section in file.providers.iter().filter(|s| s.kind == "mock") {
        let server = MockOpenAi::serve(Arc::new(MockProvider::new(section.name.clone()))).await?;
        let upstream = OpenAiProvider::builder(section.name.clone()).with_base_url(server.base_url()).build()?;
        tracing::info!(provider = %section.name, url = %server.base_url(), "started the mock OpenAI upstream");
        mocks.push(server);
        host_providers.push(Arc::new(upstream));
    }

    if let Ok(key) = std::env::var("OPENAI_API_KEY")
        && !key.is_empty()
        && !file.providers.iter().any(|p| p.name == "openai")
    {
        let base_url = std::env::var("OPENAI_BASE_URL").unwrap_or_else(|_| "https://api.openai.com/v1".into());
        tracing::info!(%base_url, "OPENAI_API_KEY is set: routing `openai/<model>`");
        file.providers.push(ProviderSection {
            name: "openai".into(),
            kind: "openai".into(),
            // OpenAI itself speaks the Responses API; a compatible server behind OPENAI_BASE_URL may not.
            responses_api: base_url.starts_with("https://api.openai.com/"),
            base_url: Some(base_url),
            api_key: Some(Secret::new(key)),
            headers: Default::default(),
            timeout_secs: None,
        });
        file.prefixes.push(PrefixConfig {
            prefix: "openai/".into(),
            provider: "openai".into(),
            // Budgets need a price for unknown names: GPT-4o's list price is a conservative default.
            price: ModelPrice::from_micros_per_mtok(2_500_000, 10_000_000),
            cache: CachePolicy::Deterministic,
            max_output_tokens: chitty::core::gateway::DEFAULT_MAX_OUTPUT_TOKENS,
            output_cap_field: Default::default(),
            limits: Default::default(),
        });
    }

    let bound = file.build_with(host_providers).await?.bind(args.addr, args.workers)?;
    let (local, workers) = (bound.local_addr(), bound.workers());
    if let Some(metrics) = bound.metrics_addr() {
        println!("metrics on http://{metrics}/metrics");
    }
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

    bound.serve().await?;
    tracing::info!("shut down: in-flight requests drained");
    drop(mocks);
    // Flushing waits for the collector: off the runtime's thread.
    #[cfg(feature = "opentelemetry-otlp")]
    tokio::task::spawn_blocking(move || drop(otel)).await?;
    Ok(())
}
