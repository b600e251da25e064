//! `chitty-gateway`: the OpenAI-compatible gateway, served from a configuration file.
//!
//! ```sh
//! cargo install chitty            # or: cargo run --release --bin chitty-gateway -- --config gateway.toml
//! chitty-gateway --config gateway.toml --check   # validate and exit
//! chitty-gateway --config gateway.toml --addr 0.0.0.0:8080
//! ```
//!
//! The file's format is `chitty_providers::config::GatewayFile` (see `examples/gateway.toml`); providers of
//! kind `openai`, `anthropic` and `ollama` are built in. Logs go to standard error (`RUST_LOG`, default `info`;
//! `--log-format json` for one JSON object per line), one line per finished request on target `chitty::request`.
//!
//! Built with feature `opentelemetry-otlp`, it exports its request spans over OTLP (HTTP/protobuf) when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set, as service
//! `OTEL_SERVICE_NAME` (default `chitty-gateway`), parented to each client's `traceparent`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use chitty::providers::config::GatewayFile;
use clap::Parser;
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// An OpenAI-compatible LLM gateway built from chitty.
#[derive(Debug, Parser)]
#[command(name = "chitty-gateway", version)]
struct Args {
    /// Configuration file (TOML).
    #[arg(long, env = "CHITTY_CONFIG", default_value = "chitty.toml")]
    config: PathBuf,
    /// Address to listen on (overrides the file's `server.addr`).
    #[arg(long, env = "CHITTY_ADDR")]
    addr: Option<SocketAddr>,
    /// Threads serving HTTP (overrides the file's `server.workers`; default one per core).
    #[arg(long, env = "CHITTY_WORKERS")]
    workers: Option<usize>,
    /// Check the configuration (syntax, names, key digests, provider kinds) and exit.
    #[arg(long)]
    check: bool,
    /// Log lines as `text` or `json` (one JSON object per line; each finished request is one, on target
    /// `chitty::request`).
    #[arg(long, env = "CHITTY_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    /// Human-readable.
    Text,
    /// One JSON object per line.
    Json,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    // The filter is the log lines' own: an OpenTelemetry layer next to them filters for itself.
    let logs = match args.log_format {
        LogFormat::Text => logs.with_filter(filter).boxed(),
        LogFormat::Json => logs.json().flatten_event(true).with_filter(filter).boxed(),
    };
    let subscriber = tracing_subscriber::registry().with(logs);
    // Declared before the runtime, so dropped after it: the last spans are flushed outside it.
    #[cfg(feature = "opentelemetry-otlp")]
    let (subscriber, _otel) = match chitty::providers::otel::OtelConfig::from_env() {
        None => (subscriber.with(None), None),
        Some(config) => match chitty::providers::otel::layer(&config) {
            Ok((otel, guard)) => (subscriber.with(Some(otel)), Some(guard)),
            Err(e) => {
                eprintln!("chitty-gateway: {e}");
                return ExitCode::FAILURE;
            }
        },
    };
    subscriber.init();
    // HTTP is served on threads of its own (PerCoreServer); this runtime runs the backends' connections.
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("chitty-gateway: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("chitty-gateway: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let file = GatewayFile::load(&args.config)?;
    if args.check {
        let config = file.gateway_config()?;
        for provider in &file.providers {
            provider.build()?;
        }
        println!(
            "{}: ok ({} providers, {} models, {} prefixes, {} tenants)",
            args.config.display(),
            file.providers.len(),
            config.models.len(),
            config.prefixes.len(),
            config.tenants.len()
        );
        return Ok(());
    }
    let bound = file.build().await?.bind(args.addr, args.workers)?;
    if let Some(metrics) = bound.metrics_addr() {
        tracing::info!(%metrics, "metrics on their own address");
    }
    // One plain line on standard output, for scripts that start the gateway on port 0.
    println!("listening on http://{}", bound.local_addr());
    tracing::info!(addr = %bound.local_addr(), workers = bound.workers(), "chitty gateway listening");
    bound.serve().await?;
    tracing::info!("shut down: in-flight requests drained");
    Ok(())
}
