//! An HTTP/1.1 server loop that slow, idle and numerous clients cannot lock out (feature `serve`).
//!
//! [`Server::serve`] accepts connections on a [`TcpListener`] and serves any tower service (an
//! `axum::Router`, say) on them, like `axum::serve`, with the limits `axum::serve` lacks:
//!
//! - **header read timeout**: a request head must arrive whole within [`ConnectionLimits::header_read_timeout`]
//!   of its first byte (and a new connection must start one within that time);
//! - **body read timeout and minimum rate**: a request body must arrive within
//!   [`ConnectionLimits::body_read_timeout`] plus one second per [`ConnectionLimits::min_body_rate`] bytes
//!   received, so one byte a second cannot hold a connection; the handler reading it gets a
//!   [`BodyReadTimeout`] error;
//! - **idle keep-alive timeout**: a connection with no request in flight is closed after
//!   [`ConnectionLimits::idle_timeout`];
//! - **send timeout**: a connection whose client has not read a byte of its response for
//!   [`ConnectionLimits::send_timeout`] is closed, request in flight or not (a dropped stream settles for what
//!   was produced);
//! - **connection cap**: past [`ConnectionLimits::max_connections`] open connections, a new one is accepted,
//!   answered `503 Service Unavailable` with `Retry-After` and closed at once, instead of being left in the
//!   accept queue until the process runs out of file descriptors.
//!
//! A streamed response (server-sent events) runs as long as it needs: only reading is timed. Cloned
//! [`Server`]s share one connection count, so several listeners (one per core) stay under one cap.
//!
//! ```no_run
//! # async fn run() -> std::io::Result<()> {
//! use chitty_core::serve::{ConnectionLimits, Server};
//!
//! # let app = tower::service_fn(|_req: http::Request<chitty_core::serve::RequestBody>| async {
//! #     Ok::<_, std::convert::Infallible>(http::Response::new(String::from("hello")))
//! # });
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! let server = Server::new(ConnectionLimits::default());
//! server.serve(listener, app, std::future::pending()).await
//! # }
//! ```

mod body;
mod conn;

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, watch};

pub use body::{BodyReadTimeout, RequestBody};

/// A tower service a [`Server`] can serve (an `axum::Router` is one): it takes requests whose body is a
/// [`RequestBody`] and never fails (errors are responses).
pub trait HttpService<B>:
    tower_service::Service<
        http::Request<RequestBody>,
        Response = http::Response<B>,
        Error = Infallible,
        Future: Send + 'static,
    > + Clone
    + Send
    + 'static
{
}

impl<S, B> HttpService<B> for S where
    S: tower_service::Service<
            http::Request<RequestBody>,
            Response = http::Response<B>,
            Error = Infallible,
            Future: Send + 'static,
        > + Clone
        + Send
        + 'static
{
}

/// A response body a [`Server`] can send.
pub trait ResponseBody:
    http_body::Body<Data = Bytes, Error: Into<Box<dyn std::error::Error + Send + Sync>>> + Send + 'static
{
}

impl<B> ResponseBody for B where
    B: http_body::Body<Data = Bytes, Error: Into<Box<dyn std::error::Error + Send + Sync>>> + Send + 'static
{
}

/// Timeouts and the connection cap of a [`Server`]. The defaults suit a public API endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnectionLimits {
    /// Time allowed for a request head, from its first byte (or from the accept, for a connection's first
    /// request). Default 10 s.
    pub header_read_timeout: Duration,
    /// Time allowed for a request body before [`Self::min_body_rate`] extends it. Default 10 s.
    pub body_read_timeout: Duration,
    /// Bytes per second a body must average past [`Self::body_read_timeout`]: every this many bytes received
    /// allow one more second. Default 32 KiB/s. Zero disables the extension (the timeout is then absolute).
    pub min_body_rate: u64,
    /// How long a connection with no request in flight stays open. Default 60 s.
    pub idle_timeout: Duration,
    /// How long a response may wait for the client to read any of it before the connection is closed. Default
    /// 60 s.
    pub send_timeout: Duration,
    /// Open connections beyond which new ones are answered 503 and closed. Default half the process's file
    /// descriptor limit (the other half for upstream connections and files), between 64 and 16,384.
    pub max_connections: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(10),
            min_body_rate: 32 * 1024,
            idle_timeout: Duration::from_secs(60),
            send_timeout: Duration::from_secs(60),
            max_connections: default_max_connections(),
        }
    }
}

impl ConnectionLimits {
    /// Sets [`Self::header_read_timeout`].
    pub fn with_header_read_timeout(mut self, timeout: Duration) -> Self {
        self.header_read_timeout = timeout;
        self
    }

    /// Sets [`Self::body_read_timeout`].
    pub fn with_body_read_timeout(mut self, timeout: Duration) -> Self {
        self.body_read_timeout = timeout;
        self
    }

    /// Sets [`Self::min_body_rate`], bytes per second.
    pub fn with_min_body_rate(mut self, bytes_per_sec: u64) -> Self {
        self.min_body_rate = bytes_per_sec;
        self
    }

    /// Sets [`Self::idle_timeout`].
    pub fn with_idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// Sets [`Self::send_timeout`].
    pub fn with_send_timeout(mut self, timeout: Duration) -> Self {
        self.send_timeout = timeout;
        self
    }

    /// Sets [`Self::max_connections`] (at least one).
    pub fn with_max_connections(mut self, max: usize) -> Self {
        self.max_connections = max.max(1);
        self
    }
}

/// Half the soft limit on open files, within 64..=16,384 (16,384 when unlimited); 4,096 off Unix.
fn default_max_connections() -> usize {
    #[cfg(unix)]
    {
        let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile).current;
        limit.map_or(16_384, |n| usize::try_from(n / 2).unwrap_or(usize::MAX).clamp(64, 16_384))
    }
    #[cfg(not(unix))]
    {
        4_096
    }
}

/// What a connection over the cap is answered with before it is closed.
const OVER_CAPACITY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
retry-after: 1\r\nconnection: close\r\ncontent-length: 123\r\n\r\n\
{\"error\":{\"message\":\"the server is at its connection limit; retry shortly\",\"type\":\"server_error\",\"param\":null,\"code\":null}}";

/// Refused connections whose request is still drained before closing (a close with unread data sends a
/// reset, which can destroy the 503 before the client reads it); past this many they are closed at once.
const LINGERING_MAX: usize = 256;
/// How long a refused connection is drained at most.
const LINGER_FOR: Duration = Duration::from_millis(500);

/// The accept loop: serves connections under [`ConnectionLimits`]. Clones share the connection count.
#[derive(Debug, Clone)]
pub struct Server {
    limits: ConnectionLimits,
    shared: Arc<Shared>,
    nodelay: bool,
}

/// What the clones of a [`Server`] share.
#[derive(Debug)]
struct Shared {
    /// One permit per connection the cap allows; a connection holds its permit until it ends.
    open: Arc<Semaphore>,
    refused: AtomicUsize,
    /// One permit per refused connection being drained before it is closed.
    lingering: Arc<Semaphore>,
}

impl Server {
    /// A server enforcing `limits`, with `TCP_NODELAY` on every connection (SSE frames are small).
    pub fn new(limits: ConnectionLimits) -> Server {
        let shared = Shared {
            open: Arc::new(Semaphore::new(limits.max_connections.min(Semaphore::MAX_PERMITS))),
            refused: AtomicUsize::new(0),
            lingering: Arc::new(Semaphore::new(LINGERING_MAX)),
        };
        Server { limits, shared: Arc::new(shared), nodelay: true }
    }

    /// Whether connections get `TCP_NODELAY` (default on).
    pub fn with_nodelay(mut self, nodelay: bool) -> Server {
        self.nodelay = nodelay;
        self
    }

    /// The limits enforced.
    pub fn limits(&self) -> &ConnectionLimits {
        &self.limits
    }

    /// Connections refused with a 503 so far because the cap was reached.
    pub fn refused_connections(&self) -> usize {
        self.shared.refused.load(Ordering::Relaxed)
    }

    /// Connections open now, across every listener this server (and its clones) serves.
    pub fn open_connections(&self) -> usize {
        self.limits.max_connections.min(Semaphore::MAX_PERMITS) - self.shared.open.available_permits()
    }

    /// Serves `service` on `listener` until `shutdown` resolves, then stops accepting, lets idle connections
    /// close and waits for in-flight requests and streams to finish.
    ///
    /// Returns an error only if the listener fails in a way retrying cannot fix; accept errors from single
    /// connections (resets, aborts) and transient ones (out of file descriptors) are logged and survived.
    pub async fn serve<S, B>(
        &self,
        listener: TcpListener,
        service: S,
        shutdown: impl Future<Output = ()> + Send,
    ) -> io::Result<()>
    where
        S: HttpService<B>,
        B: ResponseBody,
    {
        let (stop, stopping) = watch::channel(false);
        // Each connection task holds a sender; when the last one is dropped, every connection has finished.
        let (alive, mut finished) = mpsc::channel::<()>(1);
        tokio::pin!(shutdown);
        loop {
            let (stream, _peer) = tokio::select! {
                () = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok(pair) => pair,
                    Err(e) if is_connection_error(&e) => continue,
                    Err(e) => {
                        // Out of file descriptors and the like: wait for connections to close rather than spin.
                        tracing::error!(error = %e, "accept failed; retrying in 1 s");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                },
            };
            let Ok(slot) = self.shared.open.clone().try_acquire_owned() else {
                self.refuse(stream);
                continue;
            };
            if self.nodelay
                && let Err(e) = stream.set_nodelay(true)
            {
                tracing::warn!(error = %e, "could not set TCP_NODELAY");
            }
            let (service, stopping, alive) = (service.clone(), stopping.clone(), alive.clone());
            conn::spawn(stream, service, self.limits, stopping, (slot, alive));
        }
        drop(listener);
        let _ = stop.send(true);
        drop(alive);
        let _ = finished.recv().await;
        Ok(())
    }

    /// Answers 503 on a connection over the cap and closes it, draining what the client sent for a moment so
    /// that the close is not a reset (at most [`LINGERING_MAX`] at a time; beyond that, closed at once).
    fn refuse(&self, mut stream: TcpStream) {
        // One line per thousand refusals: a flood must not turn into a flood of logs.
        let refused = self.shared.refused.fetch_add(1, Ordering::Relaxed);
        if refused.is_multiple_of(1_000) {
            tracing::warn!(
                max = self.limits.max_connections,
                refused_so_far = refused + 1,
                "connection limit reached; answering new connections 503"
            );
        }
        let Ok(permit) = self.shared.lingering.clone().try_acquire_owned() else {
            // Too many refusals lingering: one attempt without waiting (an accepted socket may not be known
            // writable to the runtime yet, in which case nothing is sent), then close.
            let _ = stream.try_write(OVER_CAPACITY);
            return;
        };
        tokio::spawn(async move {
            let _permit = permit;
            // The answer fits any socket buffer: it goes out at once, or the client is gone.
            if tokio::time::timeout(LINGER_FOR, stream.write_all(OVER_CAPACITY)).await.is_err() {
                return;
            }
            let _ = stream.shutdown().await;
            let mut sink = [0u8; 4096];
            let drain = async {
                let mut left: usize = 64 * 1024;
                while left > 0 {
                    match stream.read(&mut sink).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => left = left.saturating_sub(n),
                    }
                }
            };
            let _ = tokio::time::timeout(LINGER_FOR, drain).await;
        });
    }
}

/// `at + by`, or a time decades away when that overflows (a limit configured as "never").
fn later(at: tokio::time::Instant, by: Duration) -> tokio::time::Instant {
    at.checked_add(by).unwrap_or_else(|| at + Duration::from_secs(86_400 * 365 * 30))
}

/// Errors of one accepted connection (not of the listener), which the loop skips.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_refusal_is_a_well_formed_response() {
        let text = std::str::from_utf8(OVER_CAPACITY).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 503 "));
        let length: usize = head.lines().find_map(|l| l.strip_prefix("content-length: ")).unwrap().parse().unwrap();
        assert_eq!(length, body.len());
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["error"]["type"], "server_error");
    }

    #[test]
    fn limits_of_never_do_not_overflow_the_clock() {
        let now = tokio::time::Instant::now();
        assert!(later(now, Duration::MAX) > now + Duration::from_secs(86_400 * 365));
        assert_eq!(later(now, Duration::from_secs(1)), now + Duration::from_secs(1));
    }

    #[test]
    fn default_cap_follows_the_file_limit_within_bounds() {
        let max = ConnectionLimits::default().max_connections;
        assert!((64..=16_384).contains(&max), "{max}");
        assert_eq!(ConnectionLimits::default().with_max_connections(0).max_connections, 1);
    }
}
