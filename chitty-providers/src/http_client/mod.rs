//! [`UpstreamClient`]: the HTTP client the upstream providers share, over a swappable [`HttpTransport`].
//!
//! - By default every upstream, `http://` and `https://`, goes through hyper-util's pooled client over
//!   rustls (aws-lc-rs and the platform's certificate verifier), with HTTP/2 where TLS negotiates it. It keeps
//!   **one pool per thread** that calls it: on a multi-thread runtime one per worker, and a server that runs
//!   one current-thread runtime per core (`chitty_providers::server::PerCoreServer`) never hands a request
//!   to another thread.
//! - When `HTTPS_PROXY`, `HTTP_PROXY` or `ALL_PROXY` (or their lower-case forms) is set, the default
//!   transport is reqwest instead, which speaks to proxies and honours `NO_PROXY`. A host can also hand in
//!   its own `reqwest::Client` ([`UpstreamClient::from`]).
//! - A host may plug in a transport of its own ([`UpstreamClient::with_transport`]): a test double, a
//!   client with its own TLS or service mesh settings.
//!
//! Cancelling is dropping: a response body dropped before its end closes its connection (HTTP/1.1) or resets
//! its stream (HTTP/2), which stops the upstream's work. A failure says how it failed
//! ([`TransportErrorKind`]), so that routing retries a refused or reset connection but not a malformed answer.
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

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chitty_core::{Error, Result};
use http_body_util::combinators::UnsyncBoxBody;

mod hyper_transport;
mod reqwest_transport;
#[cfg(test)]
mod test_upstream;

pub use chitty_core::BoxError;

/// The body of a response from [`UpstreamClient::send`], whichever transport carried it; a body error that
/// is a [`TransportError`] keeps its kind, any other counts as [`TransportErrorKind::Interrupted`].
pub type ResponseBody = UnsyncBoxBody<Bytes, BoxError>;

/// The environment variables that route HTTP through a proxy (reqwest reads the same ones).
const PROXY_VARIABLES: [&str; 6] = ["HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"];

/// What carries upstream requests: one HTTP exchange at a time, cancelled by dropping the response body.
///
/// Implementations classify their failures ([`TransportErrorKind`]) and leave timeouts of a whole request
/// to the caller.
#[async_trait]
pub trait HttpTransport: Send + Sync + fmt::Debug + 'static {
    /// Sends `request` (an absolute `http://` or `https://` URI) and returns the response once its headers
    /// arrived; any status is a response.
    async fn send(
        &self,
        request: http::Request<Bytes>,
    ) -> std::result::Result<http::Response<ResponseBody>, TransportError>;
}

/// How an exchange with an upstream failed before an answer could be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TransportErrorKind {
    /// No connection could be made: refused, name resolution, TLS handshake, connect timeout.
    Connect,
    /// The request could not be sent as built (an invalid URI or header, an unsupported version).
    Request,
    /// The connection broke while the request or the answer was in flight.
    Interrupted,
    /// The transport's own timeout elapsed (a host's client with a request timeout).
    Timeout,
    /// The answer arrived but is not HTTP the transport can read.
    Decode,
}

impl fmt::Display for TransportErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TransportErrorKind::Connect => "connecting to the upstream failed",
            TransportErrorKind::Request => "the request could not be sent as built",
            TransportErrorKind::Interrupted => "the connection to the upstream broke",
            TransportErrorKind::Timeout => "the transport timed out",
            TransportErrorKind::Decode => "the upstream's answer is not readable HTTP",
        })
    }
}

/// A failed exchange: its [`TransportErrorKind`] and the transport's own error (never the request URL, which
/// may carry a credential in its query).
#[derive(Debug, thiserror::Error)]
#[error("{kind}")]
pub struct TransportError {
    kind: TransportErrorKind,
    #[source]
    source: BoxError,
}

impl TransportError {
    /// An error of `kind` caused by `source`.
    pub fn new(kind: TransportErrorKind, source: impl Into<BoxError>) -> TransportError {
        TransportError { kind, source: source.into() }
    }

    /// How the exchange failed.
    pub fn kind(&self) -> TransportErrorKind {
        self.kind
    }
}

/// The HTTP client for upstream calls: a shared [`HttpTransport`]; cheap to clone (clones share its pools).
#[derive(Clone, Debug)]
pub struct UpstreamClient {
    transport: Arc<dyn HttpTransport>,
}

impl From<reqwest::Client> for UpstreamClient {
    /// Sends every request through `client` (its proxies, TLS settings and pool).
    fn from(client: reqwest::Client) -> UpstreamClient {
        UpstreamClient::with_transport(reqwest_transport::ReqwestTransport::new(client))
    }
}

/// Builds an [`UpstreamClient`] over the default transports.
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
        let transport = hyper_transport::HyperTransport::new(&self)?;
        Ok(UpstreamClient::with_transport(transport))
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

    /// A client over a transport of the host's own.
    pub fn with_transport(transport: impl HttpTransport) -> UpstreamClient {
        UpstreamClient { transport: Arc::new(transport) }
    }

    /// Sends `request` (an absolute `http://` or `https://` URI) and returns the response once its headers
    /// arrived; any status is a response, and timeouts are the caller's. The providers use it; so can a host's
    /// own [`Provider`](chitty_core::Provider) or proxy route.
    ///
    /// Read the body to its end to give the connection back; a body dropped earlier closes its connection.
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
    ) -> std::result::Result<http::Response<ResponseBody>, TransportError> {
        self.transport.send(request).await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    /// A transport that answers every request itself.
    #[derive(Debug)]
    struct Canned;

    #[async_trait]
    impl HttpTransport for Canned {
        async fn send(
            &self,
            request: http::Request<Bytes>,
        ) -> std::result::Result<http::Response<ResponseBody>, TransportError> {
            use http_body_util::{BodyExt, Full};
            if request.uri().host() == Some("refused.invalid") {
                return Err(TransportError::new(TransportErrorKind::Connect, "refused"));
            }
            Ok(http::Response::new(Full::new(request.into_body()).map_err(|never| match never {}).boxed_unsync()))
        }
    }

    #[tokio::test]
    async fn a_hosts_transport_carries_the_requests() {
        use http_body_util::BodyExt;
        let client = UpstreamClient::with_transport(Canned);
        let request = http::Request::post("http://echo.invalid/").body(Bytes::from_static(b"ping")).unwrap();
        let body = client.send(request).await.unwrap().into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"ping");
        let request = http::Request::post("http://refused.invalid/").body(Bytes::new()).unwrap();
        let err = client.send(request).await.unwrap_err();
        assert_eq!(err.kind(), TransportErrorKind::Connect);
        assert!(format!("{client:?}").contains("Canned"));
    }
}
