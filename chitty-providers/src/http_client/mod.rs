//! [`UpstreamClient`]: the pooled HTTP client the upstream providers share.
//!
//! By default it keeps **one connection pool per thread** that calls it: on a multi-thread runtime that is
//! one per worker, and a server that runs one current-thread runtime per core
//! ([`crate::server::serve_per_core`]) never hands a request to another thread.
//! - `http://` upstreams (vLLM, llama.cpp, Ollama on a private network) get HTTP/1.1 over hyper's own
//!   connections, kept idle per upstream and reused once a response has arrived whole. A body dropped with
//!   data still to come closes its connection (within 50 ms), which cancels the upstream's work.
//! - `https://` upstreams go through hyper-util's pooling client over rustls (aws-lc-rs and the platform's
//!   certificate verifier), with HTTP/2 where TLS negotiates it.
//!
//! reqwest, which the client used before, re-parsed each request's URL twice in its redirect layer and cost
//! a fifth of the gateway's CPU per proxied request; hyper-util's pool cost about an eighth on plain HTTP
//! (`docs/benchmarks.md`).
//!
//! When `HTTPS_PROXY`, `HTTP_PROXY` or `ALL_PROXY` (or their lower-case forms) is set, the default
//! client is a `reqwest::Client` instead, which speaks to proxies and honours `NO_PROXY`. A host can
//! also hand in its own `reqwest::Client` ([`UpstreamClient::from`]).
//!
//! ```
//! use std::time::Duration;
//! use chitty_providers::http_client::UpstreamClient;
//! use chitty_providers::openai::OpenAiProvider;
//!
//! // One client (and its pools) shared by two providers.
//! let client = UpstreamClient::builder().pool_max_idle_per_host(16).pool_idle_timeout(Duration::from_secs(30)).build()?;
//! let vllm = OpenAiProvider::builder("vllm").with_base_url("http://127.0.0.1:8000/v1").with_client(client.clone()).build()?;
//! let groq = OpenAiProvider::builder("groq").with_base_url("https://api.groq.com/openai/v1").with_client(client).build()?;
//! # let _ = (vllm, groq);
//! # Ok::<(), chitty_core::Error>(())
//! ```

use std::cell::RefCell;
use std::fmt;
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use chitty_core::{Error, Result};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

mod plain;
use plain::{IdleConnections, PlainSettings};

pub(crate) use chitty_core::BoxError;
/// The body of a response from [`UpstreamClient::send`], whichever transport carried it.
pub type ResponseBody = UnsyncBoxBody<Bytes, BoxError>;

type Connector = hyper_rustls::HttpsConnector<HttpConnector>;
type HyperClient = Client<Connector, Full<Bytes>>;

/// The environment variables that route HTTP through a proxy (reqwest reads the same ones).
const PROXY_VARIABLES: [&str; 6] = ["HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"];

/// A pooled HTTP client for upstream calls; cheap to clone (clones share the pools).
#[derive(Clone)]
pub struct UpstreamClient {
    transport: Transport,
}

#[derive(Clone)]
enum Transport {
    Hyper(Arc<HyperPools>),
    Reqwest(reqwest::Client),
}

impl fmt::Debug for UpstreamClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let transport = match &self.transport {
            Transport::Hyper(_) => "hyper, a pool per thread",
            Transport::Reqwest(_) => "reqwest",
        };
        f.debug_struct("UpstreamClient").field("transport", &transport).finish()
    }
}

impl From<reqwest::Client> for UpstreamClient {
    /// Sends every request through `client` (its proxies, TLS settings and pool).
    fn from(client: reqwest::Client) -> UpstreamClient {
        UpstreamClient { transport: Transport::Reqwest(client) }
    }
}

/// Builds an [`UpstreamClient`].
#[derive(Debug, Clone)]
pub struct UpstreamClientBuilder {
    pool_max_idle_per_host: usize,
    pool_idle_timeout: Duration,
    connect_timeout: Duration,
    honour_proxy_env: bool,
}

impl Default for UpstreamClientBuilder {
    fn default() -> Self {
        UpstreamClientBuilder {
            // A burst (say 1,000 streams) must not leave a thousand idle connections and their buffers behind:
            // keep enough warm connections for steady traffic (per thread) and let the rest close soon.
            pool_max_idle_per_host: 32,
            pool_idle_timeout: Duration::from_secs(15),
            connect_timeout: Duration::from_secs(10),
            honour_proxy_env: true,
        }
    }
}

impl UpstreamClientBuilder {
    /// Idle connections kept per upstream host, in each thread's pool (default 32).
    pub fn pool_max_idle_per_host(mut self, connections: usize) -> Self {
        self.pool_max_idle_per_host = connections;
        self
    }

    /// How long an idle connection stays open (default 15 s).
    pub fn pool_idle_timeout(mut self, timeout: Duration) -> Self {
        self.pool_idle_timeout = timeout;
        self
    }

    /// How long a TCP connect may take, per address a name resolves to (default 10 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Whether a proxy set in the environment selects the reqwest transport (default on); off keeps the
    /// direct transport and ignores the proxy variables.
    pub fn honour_proxy_env(mut self, on: bool) -> Self {
        self.honour_proxy_env = on;
        self
    }

    /// The client; fails when the platform's certificate store cannot be loaded.
    pub fn build(self) -> Result<UpstreamClient> {
        let proxied = self.honour_proxy_env && PROXY_VARIABLES.iter().any(|v| std::env::var_os(v).is_some());
        if proxied {
            let client = reqwest::Client::builder()
                .pool_max_idle_per_host(self.pool_max_idle_per_host)
                .pool_idle_timeout(self.pool_idle_timeout)
                .connect_timeout(self.connect_timeout)
                .tcp_nodelay(true)
                .build()
                .map_err(|e| Error::backend("http client", e))?;
            return Ok(UpstreamClient::from(client));
        }
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(self.connect_timeout));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .try_with_platform_verifier()
            .map_err(|e| Error::backend("TLS certificate verifier", e))?
            .https_or_http()
            .enable_all_versions()
            .wrap_connector(http.clone());
        let mut builder = Client::builder(TokioExecutor::new());
        builder
            .pool_max_idle_per_host(self.pool_max_idle_per_host)
            .pool_idle_timeout(self.pool_idle_timeout)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new());
        let shared = builder.build(connector.clone());
        let plain = PlainSettings {
            // A zero idle timeout keeps nothing idle.
            max_idle_per_host: if self.pool_idle_timeout.is_zero() { 0 } else { self.pool_max_idle_per_host },
            idle_timeout: self.pool_idle_timeout,
            connector: http,
        };
        Ok(UpstreamClient { transport: Transport::Hyper(Arc::new(HyperPools { builder, connector, shared, plain })) })
    }
}

impl UpstreamClient {
    /// A client with the defaults (see [`UpstreamClientBuilder`]).
    pub fn new() -> Result<UpstreamClient> {
        UpstreamClient::builder().build()
    }

    /// A builder with the defaults: 32 idle connections per host and thread for 15 s, a 10 s connect timeout.
    pub fn builder() -> UpstreamClientBuilder {
        UpstreamClientBuilder::default()
    }

    /// Sends `request` (an absolute `http://` or `https://` URI) through this thread's pool and returns the
    /// response once its headers arrived; any status is a response, and timeouts are the caller's. The
    /// providers use it; so can a host's own [`Provider`](chitty_core::Provider) or proxy route.
    ///
    /// Read the body to its end (or drop it once it has arrived whole) to give the connection back; a body
    /// dropped earlier closes its connection.
    ///
    /// ```no_run
    /// use bytes::Bytes;
    /// use http_body_util::BodyExt;
    /// use chitty_providers::http_client::UpstreamClient;
    ///
    /// # async fn models() -> Result<(), chitty_core::BoxError> {
    /// let client = UpstreamClient::new()?;
    /// let request = http::Request::get("http://127.0.0.1:8000/v1/models").body(Bytes::new())?;
    /// let response = client.send(request).await?;
    /// let status = response.status();
    /// let body = response.into_body().collect().await?.to_bytes();
    /// println!("{status}: {} bytes", body.len());
    /// # Ok(())
    /// # }
    /// ```
    pub async fn send(
        &self,
        request: http::Request<Bytes>,
    ) -> std::result::Result<http::Response<ResponseBody>, BoxError> {
        match &self.transport {
            Transport::Hyper(pools) => pools.send(request).await,
            Transport::Reqwest(client) => {
                let request = reqwest::Request::try_from(request.map(reqwest::Body::from))?;
                let response = http::Response::from(client.execute(request).await?);
                Ok(response.map(|body| body.map_err(|e| -> BoxError { Box::new(e) }).boxed_unsync()))
            }
        }
    }
}

/// The hyper transport: plain `http://` goes over [`plain`]'s HTTP/1.1 connections; `https://` over
/// hyper-util's client, from a template to build per-thread pools from, and a shared pool for threads that
/// are shutting down (whose thread-locals are gone).
struct HyperPools {
    builder: hyper_util::client::legacy::Builder,
    connector: Connector,
    shared: HyperClient,
    plain: PlainSettings,
}

/// One client's pools on one thread.
struct ThreadPools {
    owner: Weak<HyperPools>,
    tls: HyperClient,
    plain: IdleConnections,
}

thread_local! {
    /// This thread's pools of each live client, found by pointer (a thread rarely holds more than a few).
    static POOLS: RefCell<Vec<ThreadPools>> = const { RefCell::new(Vec::new()) };
}

impl HyperPools {
    async fn send(
        self: &Arc<Self>,
        request: http::Request<Bytes>,
    ) -> std::result::Result<http::Response<ResponseBody>, BoxError> {
        if request.uri().scheme() == Some(&http::uri::Scheme::HTTP) {
            return plain::send(self, request).await;
        }
        let response = self.tls_request(request.map(Full::new)).await?;
        Ok(response.map(|body| body.map_err(|e| -> BoxError { Box::new(e) }).boxed_unsync()))
    }

    fn tls_request(
        self: &Arc<Self>,
        request: http::Request<Full<Bytes>>,
    ) -> hyper_util::client::legacy::ResponseFuture {
        match self.with_thread_pools(|pools| pools.tls.clone()) {
            Some(client) => client.request(request),
            None => self.shared.request(request),
        }
    }

    /// Runs `f` on this thread's pools of this client, made on first use; `None` when the thread's locals are
    /// gone (the thread is exiting) or already borrowed further up the stack.
    fn with_thread_pools<R>(self: &Arc<Self>, f: impl FnOnce(&mut ThreadPools) -> R) -> Option<R> {
        let me = Arc::as_ptr(self);
        POOLS
            .try_with(|pools| {
                let mut pools = pools.try_borrow_mut().ok()?;
                let index = match pools.iter().position(|p| std::ptr::eq(p.owner.as_ptr(), me)) {
                    Some(index) => index,
                    None => {
                        // Pools of dropped clients go when a new one is made, so a thread never accumulates them.
                        pools.retain(|p| p.owner.strong_count() > 0);
                        let tls = self.builder.build(self.connector.clone());
                        pools.push(ThreadPools { owner: Arc::downgrade(self), tls, plain: IdleConnections::default() });
                        pools.len() - 1
                    }
                };
                Some(f(&mut pools[index]))
            })
            .ok()
            .flatten()
    }
}
