//! A running gateway from a configuration file, in three lines:
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use chitty_providers::config::GatewayFile;
//!
//! let file = GatewayFile::load("gateway.toml".as_ref())?;
//! let bound = file.build().await?.bind(None, None)?;
//! bound.serve().await?; // until SIGINT or SIGTERM, in-flight requests drained
//! # Ok(())
//! # }
//! ```
//!
//! [`GatewayFile::build`] makes the providers of the kinds this build knows, the `[cache]` and `[budgets]`
//! backends, Prometheus metrics (feature `prometheus`), the request log when `server.request_log` is on (one
//! structured line per finished request on target `chitty::request`, see [`crate::request_log`]), the
//! JSON-lines event log when `server.event_log` names a file, and the router; [`GatewayApp::bind`] binds
//! `server.addr` (or the address given) with one serving thread per core ([`PerCoreServer`]) and
//! `server.metrics_addr` if set.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use chitty_core::gateway::{Gateway, GatewayBuilder};
use chitty_core::runtime::TokioRuntimeExt;
use chitty_core::{EventSink, FanOutSink, Provider, SpendArchive};

use super::{PerCoreServer, Server, ServerOptions, router, shutdown_signal};
use crate::access_sync::AccessSync;
use crate::config::{BackendSection, ConfigError, GatewayFile, ServerSection, StoreSection};
use crate::memory::{MemoryAccessStore, MemoryBudgetStore, MemoryCache};

fn invalid(key: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { key: key.to_owned(), reason: reason.into() }
}

/// The gateway a [`GatewayFile`] describes, with its routes, not yet bound to an address.
#[derive(Debug)]
pub struct GatewayApp {
    /// The gateway, for in-process calls beside the HTTP API.
    pub gateway: Gateway,
    /// The API routes, with `/metrics` merged in unless `server.metrics_addr` gives it an address of its own.
    pub router: Router,
    /// `/metrics` for its own address (`server.metrics_addr`), behind `server.metrics_token` if set.
    pub metrics_router: Option<Router>,
    server: ServerSection,
    /// Keeps the gateway's tenants and keys current while the app lives (with a shared store).
    access_sync: Option<AccessSync>,
    background: Background,
}

/// Tasks that run beside the gateway while it is up (the metrics' gauge refresh); aborted when dropped.
#[derive(Debug, Default)]
struct Background(Vec<tokio::task::AbortHandle>);

impl Drop for Background {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// What to start once the gateway exists (the metrics' gauge refresh needs the gateway it reads).
type StartWithGateway = Option<Box<dyn FnOnce(&Gateway) -> Background + Send>>;

/// The label values the metrics know from the configuration: models, tenants and providers.
#[cfg_attr(not(feature = "prometheus"), allow(dead_code))]
struct MetricLabels {
    models: Vec<String>,
    tenants: Vec<String>,
    providers: Vec<String>,
}

impl GatewayFile {
    /// Builds the gateway this file describes: providers, backends, metrics and routes, as a [`GatewayApp`].
    pub async fn build(&self) -> Result<GatewayApp, ConfigError> {
        self.build_with(Vec::new()).await
    }

    /// [`GatewayFile::build`], with providers the host built itself: each replaces the `[[providers]]` section
    /// of the same name, which is how kinds this crate does not build (a mock, a host's own) are served.
    pub async fn build_with(&self, host_providers: Vec<Arc<dyn Provider>>) -> Result<GatewayApp, ConfigError> {
        let config = self.gateway_config()?;
        let config_for_admin = config.clone();
        let mut providers: Vec<String> =
            config.models.iter().flat_map(|m| &m.routes).map(|r| r.provider.clone()).collect();
        providers.extend(config.prefixes.iter().map(|p| p.provider.clone()));
        providers.sort_unstable();
        providers.dedup();
        let labels = MetricLabels {
            models: config.models.iter().map(|m| m.name.clone()).collect(),
            tenants: config.tenants.iter().map(|t| t.id.clone()).collect(),
            providers,
        };
        let mut builder = Gateway::builder(config).tokio_runtime();
        for section in &self.providers {
            if !host_providers.iter().any(|p| p.name() == section.name) {
                builder = builder.provider(section.build()?);
            }
        }
        for provider in host_providers {
            builder = builder.provider(provider);
        }
        builder = with_cache(builder, &self.cache).await?;
        let admin_keys = self.admin_keys(&config_for_admin)?;
        let (builder_with_store, changes, archive) = with_store(builder, &self.store, !admin_keys.is_empty()).await?;
        builder = with_budgets(builder_with_store, &self.budgets, archive, &self.store).await?;
        builder = with_rate_limits(builder, &self.rate_limits).await?;
        let (builder, metrics, start) = event_sinks(builder, labels, &self.server)?;
        let gateway = builder.build().await.map_err(|e| invalid("gateway", e.to_string()))?;
        let background = start.map(|start| start(&gateway)).unwrap_or_default();
        let options = ServerOptions { body_limit: self.server.body_limit_bytes, ..ServerOptions::default() };
        let mut api = router(gateway.clone(), options);
        if !admin_keys.is_empty() {
            let admin =
                super::admin_router(gateway.clone(), admin_keys).map_err(|e| invalid("admin", e.to_string()))?;
            api = api.merge(admin);
        }
        let access_sync = changes.map(|changes| {
            let every = std::time::Duration::from_secs(self.store.refresh_secs.max(1));
            AccessSync::spawn(gateway.clone(), changes, every)
        });
        let metrics_router = match (metrics, &self.server.metrics_addr) {
            (Some(metrics), None) => {
                api = api.merge(metrics);
                None
            }
            (metrics, _) => metrics,
        };
        Ok(GatewayApp { gateway, router: api, metrics_router, server: self.server.clone(), access_sync, background })
    }
}

#[cfg(feature = "redis")]
async fn redis(key: &str, section: &BackendSection) -> Result<crate::redis::RedisConnection, ConfigError> {
    let url = section.url.as_ref().ok_or_else(|| invalid(key, "`url` is required for backend \"redis\""))?;
    crate::redis::RedisConnection::connect(url.expose()).await.map_err(|e| invalid(key, e.to_string()))
}

async fn with_cache(builder: GatewayBuilder, section: &BackendSection) -> Result<GatewayBuilder, ConfigError> {
    match section.backend.as_str() {
        "memory" => Ok(builder.cache(Arc::new(MemoryCache::new(section.max_bytes)))),
        "none" => Ok(builder),
        #[cfg(feature = "redis")]
        "redis" => Ok(builder.cache(Arc::new(crate::redis::RedisCache::new(redis("cache", section).await?, "chitty")))),
        other => Err(invalid(
            "cache.backend",
            format!("`{other}` is not a cache backend of this build (memory, none, redis with feature `redis`)"),
        )),
    }
}

/// The budget store `[budgets]` names; Redis budgets save spend into the access store, when there is one, and
/// re-seed from it what Redis loses.
async fn with_budgets(
    builder: GatewayBuilder,
    section: &BackendSection,
    archive: Option<Arc<dyn SpendArchive>>,
    store: &StoreSection,
) -> Result<GatewayBuilder, ConfigError> {
    #[cfg(not(feature = "redis"))]
    let _ = (archive, store);
    match section.backend.as_str() {
        "memory" => Ok(builder.budgets(Arc::new(MemoryBudgetStore::new()))),
        #[cfg(feature = "redis")]
        "redis" => {
            let mut budgets = crate::redis::RedisBudgetStore::new(redis("budgets", section).await?, "chitty");
            if let Some(archive) = archive {
                let every = std::time::Duration::from_secs(store.spend_save_secs.max(1));
                budgets = budgets.with_archive(archive, every);
            }
            Ok(builder.budgets(Arc::new(budgets)))
        }
        other => Err(invalid(
            "budgets.backend",
            format!("`{other}` is not a budget backend of this build (memory, redis with feature `redis`)"),
        )),
    }
}

async fn with_rate_limits(builder: GatewayBuilder, section: &BackendSection) -> Result<GatewayBuilder, ConfigError> {
    match section.backend.as_str() {
        "memory" => Ok(builder),
        #[cfg(feature = "redis")]
        "redis" => {
            let limiter = crate::redis::RedisRateLimiter::new(redis("rate_limits", section).await?, "chitty");
            Ok(builder.rate_limiter(Arc::new(limiter)))
        }
        other => Err(invalid(
            "rate_limits.backend",
            format!("`{other}` is not a rate-limit backend of this build (memory, redis with feature `redis`)"),
        )),
    }
}

/// A change stream a gateway reloads its keys on (`None` inside: only the interval), when it has a shared store.
type Changes = Option<Option<futures::stream::BoxStream<'static, ()>>>;

/// The access store `[store]` names: none for a file-only gateway without `[admin]`, memory with `[admin]`,
/// or PostgreSQL (feature `postgres`) with its change notifications; with the store as a spend archive.
async fn with_store(
    builder: GatewayBuilder,
    section: &StoreSection,
    admin: bool,
) -> Result<(GatewayBuilder, Changes, Option<Arc<dyn SpendArchive>>), ConfigError> {
    match section.backend.as_str() {
        "memory" if admin => {
            let store = Arc::new(MemoryAccessStore::new());
            Ok((builder.access(store.clone()), None, Some(store)))
        }
        "memory" => Ok((builder, None, None)),
        #[cfg(feature = "postgres")]
        "postgres" => {
            let url =
                section.url.as_ref().ok_or_else(|| invalid("store.url", "is required for backend \"postgres\""))?;
            let store = crate::postgres::PostgresAccessStore::connect(url.expose())
                .await
                .map_err(|e| invalid("store.url", e.to_string()))?;
            let changes = store.changes().await.map_err(|e| invalid("store.url", e.to_string()))?;
            let store = Arc::new(store);
            Ok((builder.access(store.clone()), Some(Some(changes)), Some(store)))
        }
        other => Err(invalid(
            "store.backend",
            format!("`{other}` is not a store backend of this build (memory, postgres with feature `postgres`)"),
        )),
    }
}

/// How often the metrics' gauges (remaining budgets, circuit states, the known tenants) are refreshed.
#[cfg(feature = "prometheus")]
const GAUGE_REFRESH: std::time::Duration = std::time::Duration::from_secs(5);

/// The Prometheus sink and `/metrics` (feature `prometheus`): labels only configured model names and known
/// tenants, so client-chosen names cannot blow up cardinality; behind `server.metrics_token` when one is set.
/// Once the gateway exists, a task refreshes the gauges every [`GAUGE_REFRESH`] (and the known tenants, which
/// an access store may change).
#[cfg(feature = "prometheus")]
fn metrics(
    labels: MetricLabels,
    server: &ServerSection,
) -> (Option<Arc<dyn EventSink>>, Option<Router>, StartWithGateway) {
    use crate::prometheus::{PrometheusSink, Registry, metrics_router};
    let mut registry = Registry::default();
    let sink =
        PrometheusSink::new(&mut registry, labels.models).with_tenants(labels.tenants).with_providers(labels.providers);
    let mut metrics = metrics_router(Arc::new(registry));
    if let Some(token) = &server.metrics_token {
        metrics = super::require_bearer(metrics, token.expose());
    }
    let refreshing = sink.clone();
    let start: StartWithGateway = Some(Box::new(move |gateway: &Gateway| {
        // Without a runtime (a host building outside tokio) the gauges stay as events leave them.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return Background::default() };
        let gateway = gateway.clone();
        let task = runtime.spawn(async move {
            let mut ticks = tokio::time::interval(GAUGE_REFRESH);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                if let Err(e) = refreshing.refresh(&gateway).await {
                    tracing::warn!(error = %e, "metrics: refreshing the budget gauges failed");
                }
            }
        });
        Background(vec![task.abort_handle()])
    }));
    (Some(Arc::new(sink)), Some(metrics), start)
}

#[cfg(not(feature = "prometheus"))]
fn metrics(_: MetricLabels, _: &ServerSection) -> (Option<Arc<dyn EventSink>>, Option<Router>, StartWithGateway) {
    (None, None, None)
}

/// Where events go: the metrics, the request log when `server.request_log` is on, and `server.event_log` when
/// set.
fn event_sinks(
    builder: GatewayBuilder,
    labels: MetricLabels,
    server: &ServerSection,
) -> Result<(GatewayBuilder, Option<Router>, StartWithGateway), ConfigError> {
    let (metrics_sink, metrics_router, start) = metrics(labels, server);
    let mut sinks: Vec<Arc<dyn EventSink>> = metrics_sink.into_iter().collect();
    if server.request_log {
        sinks.push(Arc::new(crate::request_log::TracingSink));
    }
    if let Some(path) = &server.event_log {
        let log = crate::request_log::JsonLinesSink::create(path.as_ref(), EVENT_LOG_QUEUE)
            .map_err(|e| invalid("server.event_log", format!("`{path}`: {e}")))?;
        sinks.push(Arc::new(log));
    }
    // One sink is used as it is: the fan-out would add a boxed call per event to every request.
    let sink: Arc<dyn EventSink> = match sinks.len() {
        1 => sinks.remove(0),
        _ => Arc::new(FanOutSink::new(sinks)),
    };
    Ok((builder.events(sink), metrics_router, start))
}

/// Events the event log's writer may fall behind by before it refuses more (about 20 MB of lines).
const EVENT_LOG_QUEUE: usize = 65_536;

impl GatewayApp {
    /// Binds `addr` (or the file's `server.addr`) with `workers` serving threads (or `server.workers`, or one per
    /// core), and `server.metrics_addr` when set.
    pub fn bind(self, addr: Option<SocketAddr>, workers: Option<usize>) -> Result<BoundGateway, ConfigError> {
        let addr = match addr {
            Some(a) => a,
            None => {
                self.server.addr.parse().map_err(|e| invalid("server.addr", format!("`{}`: {e}", self.server.addr)))?
            }
        };
        let workers = workers
            .or(self.server.workers)
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, std::num::NonZero::get));
        let limits = self.server.connection_limits();
        let server = PerCoreServer::bind(addr, workers)
            .map_err(|e| invalid("server.addr", format!("cannot listen on {addr}: {e}")))?
            .with_limits(limits);
        let metrics = match (&self.server.metrics_addr, self.metrics_router) {
            (Some(metrics_addr), Some(router)) => {
                let listener = std::net::TcpListener::bind(metrics_addr)
                    .and_then(|l| l.set_nonblocking(true).map(|()| l))
                    .map_err(|e| invalid("server.metrics_addr", format!("cannot listen on {metrics_addr}: {e}")))?;
                Some((listener, router))
            }
            _ => None,
        };
        Ok(BoundGateway {
            server,
            router: self.router,
            metrics,
            limits,
            workers,
            _access_sync: self.access_sync,
            _background: self.background,
        })
    }
}

/// A [`GatewayApp`] bound to its addresses, ready to serve.
#[derive(Debug)]
pub struct BoundGateway {
    server: PerCoreServer,
    router: Router,
    metrics: Option<(std::net::TcpListener, Router)>,
    limits: super::ConnectionLimits,
    workers: usize,
    _access_sync: Option<AccessSync>,
    /// Runs while the gateway is bound; dropped (and stopped) with it.
    _background: Background,
}

impl BoundGateway {
    /// The API's address (the port chosen when the configuration asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// `/metrics`' own address, when it has one.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().and_then(|(l, _)| l.local_addr().ok())
    }

    /// Threads serving the API.
    pub fn workers(&self) -> usize {
        self.workers
    }

    /// Serves until SIGINT or SIGTERM, then lets in-flight requests and streams finish.
    pub async fn serve(self) -> std::io::Result<()> {
        let metrics = match self.metrics {
            Some((listener, router)) => {
                let listener = tokio::net::TcpListener::from_std(listener)?;
                let serving = Server::new(self.limits);
                Some(tokio::spawn(async move { serving.serve(listener, router, shutdown_signal()).await }))
            }
            None => None,
        };
        self.server.serve(self.router, shutdown_signal()).await?;
        if let Some(metrics) = metrics {
            metrics.await.map_err(std::io::Error::other)??;
        }
        Ok(())
    }
}
