//! The direct transport's path to plain `http://` upstreams (vLLM, llama.cpp, Ollama on a private network):
//! hyper's own HTTP/1.1 connections, kept idle in a list per thread and upstream.
//!
//! hyper-util's pooled client spent about 11k of the gateway's 90k instructions per proxied request on its
//! side of the exchange (callgrind, `docs/benchmarks.md`): a pool checkout and return through a mutex and a
//! hash map on `(scheme, authority)`, the `Host` header formatted anew, a task spawned per request to watch
//! for the connection going idle. Here a request pops the most recently used idle connection of its upstream
//! off this thread's list, its `Host` value is kept with the list, and the connection goes back when the
//! response body ends. `https://` upstreams keep hyper-util's client, which negotiates HTTP/2 over TLS.
//!
//! A connection is reused only once its response has arrived whole. A body dropped with data still to come
//! closes its connection, which is also how a cancelled stream cancels its upstream request; one dropped
//! with only the end to come waits up to [`END_GRACE`] for it.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{HOST, HeaderValue};
use http::uri::{Authority, PathAndQuery};
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use tower_service::Service;

use super::hyper_transport::HyperPools;
use super::{BoxError, ResponseBody, TransportError, TransportErrorKind};

type Sender = http1::SendRequest<Full<Bytes>>;

/// How the plain path pools connections; the builder's settings.
#[derive(Debug, Clone)]
pub(super) struct PlainSettings {
    /// Zero when `idle_timeout` is zero.
    pub(super) max_idle_per_host: usize,
    pub(super) idle_timeout: Duration,
    /// hyper-util's connector: name resolution, a connect timeout per address, IPv6/IPv4 fallback, no delay.
    pub(super) connector: HttpConnector,
}

/// This thread's idle connections of one client, per upstream.
#[derive(Default)]
pub(super) struct IdleConnections {
    upstreams: Vec<UpstreamIdle>,
}

/// The idle connections to one upstream (`host:port`, compared as written), most recently used last.
struct UpstreamIdle {
    authority: Authority,
    host: HeaderValue,
    idle: Vec<Connection>,
}

/// A connection's sender and the state it shares with the task that drives it.
struct Connection {
    sender: Sender,
    state: Arc<ConnectionState>,
}

/// Whether a connection is in use, idle (and since when), or closed by its idle timer. Both the pool and
/// the connection's task change it, so that a connection is never closed as it is taken for a request.
struct ConnectionState(AtomicU64);

/// The state values besides "idle since N ms after [`clock_origin`] (plus one)".
const IN_USE: u64 = 0;
const CLOSED: u64 = u64::MAX;

/// The instant idle times are counted from; one per process.
fn clock_origin() -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

/// `now` as an idle state value: milliseconds since [`clock_origin`], plus one.
fn idle_stamp(now: Instant) -> u64 {
    // Saturates after 584 million years; `+ 1` keeps the stamp of the first millisecond apart from IN_USE.
    u64::try_from(now.duration_since(clock_origin()).as_millis()).unwrap_or(CLOSED - 1).min(CLOSED - 2) + 1
}

impl ConnectionState {
    /// Marks an idle connection as taken; false when its idle timer closed it first, or when it has been
    /// idle for `timeout` already (it is marked closed then, and closes as its sender goes).
    fn take(&self, timeout: Duration, now: Instant) -> bool {
        let current = self.0.load(Ordering::Acquire);
        if current == CLOSED || current == IN_USE {
            return false;
        }
        let next = if idle_for(current, now) >= timeout { CLOSED } else { IN_USE };
        self.0.compare_exchange(current, next, Ordering::AcqRel, Ordering::Acquire).is_ok() && next == IN_USE
    }

    fn set_idle(&self, now: Instant) {
        self.0.store(idle_stamp(now), Ordering::Release);
    }

    /// Marks the connection closed when it has been idle for `timeout`: `None` when the caller must close
    /// it, otherwise how long until it may have been (the whole timeout while it is in use).
    fn close_if_idle_for(&self, timeout: Duration, now: Instant) -> Option<Duration> {
        let current = self.0.load(Ordering::Acquire);
        if current == CLOSED {
            return None;
        }
        if current == IN_USE {
            return Some(timeout);
        }
        let idle = idle_for(current, now);
        if idle < timeout {
            return Some(timeout - idle);
        }
        match self.0.compare_exchange(current, CLOSED, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => None,
            // Taken (or put back) in between: look again after a whole timeout.
            Err(_) => Some(timeout),
        }
    }
}

/// How long a connection with idle state `stamp` has been idle at `now`.
fn idle_for(stamp: u64, now: Instant) -> Duration {
    Duration::from_millis(idle_stamp(now).saturating_sub(stamp))
}

impl IdleConnections {
    /// The most recently used idle connection to `authority` younger than `timeout`, preferring one that is
    /// ready for a request (`true`) to one still finishing its last exchange (`false`); and the upstream's
    /// `Host` value when it is known. Closed and expired connections are dropped on the way.
    fn take(
        &mut self,
        authority: &Authority,
        timeout: Duration,
        now: Instant,
    ) -> (Option<(Connection, bool)>, Option<HeaderValue>) {
        let Some(upstream) = self.upstreams.iter_mut().find(|u| u.authority.as_str() == authority.as_str()) else {
            return (None, None);
        };
        let host = Some(upstream.host.clone());
        let mut index = upstream.idle.len();
        while index > 0 {
            index -= 1;
            let sender = &upstream.idle[index].sender;
            if sender.is_closed() {
                upstream.idle.remove(index);
            } else if sender.is_ready() {
                let connection = upstream.idle.remove(index);
                if connection.state.take(timeout, now) {
                    return (Some((connection, true)), host);
                }
            }
        }
        // Every one left is still ending an exchange: on a multi-thread runtime its task may be doing so on
        // another worker.
        while let Some(connection) = upstream.idle.pop() {
            if connection.state.take(timeout, now) {
                return (Some((connection, false)), host);
            }
        }
        (None, host)
    }

    /// Keeps `connection` for the next request to `authority`, unless `max_idle` are kept already.
    fn put(&mut self, authority: Authority, connection: Connection, max_idle: usize, now: Instant) {
        let index = match self.upstreams.iter().position(|u| u.authority.as_str() == authority.as_str()) {
            Some(index) => index,
            None => {
                let Ok(host) = host_header(&authority) else { return };
                // Upstreams with nothing idle go, so that a client sent to many hosts does not collect them.
                self.upstreams.retain(|u| !u.idle.is_empty());
                self.upstreams.push(UpstreamIdle { authority, host, idle: Vec::new() });
                self.upstreams.len() - 1
            }
        };
        let idle = &mut self.upstreams[index].idle;
        if idle.len() >= max_idle {
            // Connections that closed while idle (the upstream's keep-alive timeout, the idle timer) make room.
            idle.retain(|c| !c.sender.is_closed());
        }
        if idle.len() < max_idle {
            connection.state.set_idle(now);
            idle.push(connection);
        }
    }
}

/// `Host` as the URI names it, without user information or the default port (as hyper-util writes it).
fn host_header(authority: &Authority) -> Result<HeaderValue, http::header::InvalidHeaderValue> {
    let host_and_port = authority.as_str().rsplit('@').next().unwrap_or_default();
    let host = match authority.port_u16() {
        Some(80) => host_and_port.strip_suffix(":80").unwrap_or(host_and_port),
        _ => host_and_port,
    };
    HeaderValue::from_str(host)
}

/// Sends `request` (an absolute `http://` URI) over a pooled HTTP/1.1 connection of this thread.
pub(super) async fn send(
    pools: &Arc<HyperPools>,
    request: http::Request<Bytes>,
) -> Result<http::Response<ResponseBody>, TransportError> {
    let refused = |why: String| TransportError::new(TransportErrorKind::Request, why);
    let (mut parts, body) = request.into_parts();
    if !matches!(parts.version, http::Version::HTTP_10 | http::Version::HTTP_11) {
        return Err(refused(format!(
            "{:?} was asked for; plain http:// upstreams are spoken to in HTTP/1.1",
            parts.version
        )));
    }
    let authority = parts.uri.authority().cloned().ok_or_else(|| refused("the request URI names no host".into()))?;
    parts.uri = parts.uri.path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/")).into();
    let mut request = http::Request::from_parts(parts, Full::new(body));
    let Some(settings) = pools.plain.as_ref() else { return Err(refused("the plain pool is off".into())) };
    loop {
        let now = Instant::now();
        let (idle, host) = pools
            .with_thread_pools(|pools| pools.plain.take(&authority, settings.idle_timeout, now))
            .unwrap_or((None, None));
        if !request.headers().contains_key(HOST) {
            let host = host.map_or_else(|| host_header(&authority), Ok).map_err(|e| refused(e.to_string()))?;
            request.headers_mut().insert(HOST, host);
        }
        let reused = idle.is_some();
        let mut connection = match idle {
            Some((connection, true)) => connection,
            Some((mut connection, false)) => match tokio::time::timeout(READY_WAIT, connection.sender.ready()).await {
                Ok(Ok(())) => connection,
                // Closed, or still busy with its last exchange (an answer that came before the request was
                // written whole): it closes as it goes, and the next one or a fresh one is taken.
                _ => continue,
            },
            None => connect(&authority, settings).await?,
        };
        match connection.sender.try_send_request(request).await {
            Ok(response) => {
                let lease = Lease { connection, pools: Arc::downgrade(pools), authority };
                return Ok(response.map(|body| PooledBody { body: Some(body), lease: Some(lease) }.boxed_unsync()));
            }
            Err(mut failed) => match failed.take_message() {
                // Not written to the wire: an idle connection the upstream had just closed. A fresh one is
                // tried, as hyper-util's client does; a request that failed on a fresh connection is not.
                Some(unsent) if reused => request = unsent,
                _ => return Err(TransportError::new(TransportErrorKind::Interrupted, failed.into_error())),
            },
        }
    }
}

/// Opens a connection to `authority` and spawns the task that drives it.
async fn connect(authority: &Authority, settings: &PlainSettings) -> Result<Connection, TransportError> {
    let connect_error = |e| TransportError::new(TransportErrorKind::Connect, e);
    let uri = http::Uri::builder()
        .scheme("http")
        .authority(authority.clone())
        .path_and_query("/")
        .build()
        .map_err(|e| TransportError::new(TransportErrorKind::Request, e))?;
    let io = settings.connector.clone().call(uri).await.map_err(|e| connect_error(Box::new(e) as BoxError))?;
    let (sender, connection) = http1::handshake(io).await.map_err(|e| connect_error(Box::new(e) as BoxError))?;
    let state = Arc::new(ConnectionState(AtomicU64::new(IN_USE)));
    tokio::spawn(drive(connection, Arc::clone(&state), settings.idle_timeout));
    Ok(Connection { sender, state })
}

/// Runs a connection until the upstream closes it, every sender is gone, or it stays idle for `idle_timeout`.
async fn drive(
    connection: http1::Connection<TokioIo<tokio::net::TcpStream>, Full<Bytes>>,
    state: Arc<ConnectionState>,
    idle_timeout: Duration,
) {
    let mut connection = std::pin::pin!(connection);
    if idle_timeout.is_zero() {
        // Never kept idle (see `put`): no timer needed.
        let _ = connection.await;
        return;
    }
    let mut timer = std::pin::pin!(tokio::time::sleep(idle_timeout));
    let mut armed = false;
    std::future::poll_fn(|cx| {
        // An error here reaches the request it belongs to through its response; nothing is left to report.
        if connection.as_mut().poll(cx).is_ready() {
            return Poll::Ready(());
        }
        // Once armed, the timer wakes this task when it fires: it is not polled on every exchange.
        if armed && !timer.is_elapsed() {
            return Poll::Pending;
        }
        loop {
            if timer.as_mut().poll(cx).is_pending() {
                armed = true;
                return Poll::Pending;
            }
            // Returning drops the connection, which closes its socket.
            let Some(next_check) = state.close_if_idle_for(idle_timeout, Instant::now()) else {
                return Poll::Ready(());
            };
            timer.as_mut().reset(tokio::time::Instant::now() + next_check);
        }
    })
    .await;
}

/// A connection lent to one exchange, and where it goes back to.
struct Lease {
    connection: Connection,
    pools: Weak<HyperPools>,
    authority: Authority,
}

impl Lease {
    /// Puts the connection in the idle list of the thread that finished the body; on a per-core server that
    /// is the thread that sent the request.
    fn release(self) {
        let Some(pools) = self.pools.upgrade() else { return };
        let Some(max_idle) = pools.plain.as_ref().map(|p| p.max_idle_per_host) else { return };
        let _ = pools.with_thread_pools(|thread| {
            thread.plain.put(self.authority, self.connection, max_idle, Instant::now());
        });
    }
}

/// How long a request waits for an idle connection that is still ending its last exchange before it takes
/// another one instead.
const READY_WAIT: Duration = Duration::from_millis(20);

/// How long a body dropped at its last event may wait for the end of the response (an event stream's
/// terminating chunk often comes in its own packet) before its connection is closed instead of kept.
const END_GRACE: Duration = Duration::from_millis(50);

/// A response body that gives its connection back to the pool once the response has arrived whole.
struct PooledBody {
    /// `None` only once dropped.
    body: Option<Incoming>,
    lease: Option<Lease>,
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let Some(body) = self.body.as_mut() else { return Poll::Ready(None) };
        let frame = ready!(Pin::new(&mut *body).poll_frame(cx));
        let ended = body.is_end_stream();
        match &frame {
            Some(Ok(_)) if !ended => {}
            // A broken exchange leaves the connection in an unknown state: it is not reused.
            Some(Err(_)) => self.lease = None,
            _ => {
                if let Some(lease) = self.lease.take() {
                    lease.release();
                }
            }
        }
        Poll::Ready(frame.map(|f| f.map_err(|e| -> BoxError { Box::new(e) })))
    }

    fn is_end_stream(&self) -> bool {
        self.body.as_ref().is_none_or(Incoming::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.body.as_ref().map(Incoming::size_hint).unwrap_or_default()
    }
}

impl Drop for PooledBody {
    fn drop(&mut self) {
        let (Some(lease), Some(mut body)) = (self.lease.take(), self.body.take()) else { return };
        // A provider drops an event stream at its `data: [DONE]`, before the end of the response was polled.
        // If only the end is left, the connection is kept; if more data is, the reader gave up mid-stream and
        // the connection closes, so that the upstream stops generating.
        let mut cx = Context::from_waker(std::task::Waker::noop());
        loop {
            if body.is_end_stream() {
                return lease.release();
            }
            match Pin::new(&mut body).poll_frame(&mut cx) {
                Poll::Ready(None) => return lease.release(),
                Poll::Ready(Some(Ok(frame))) if frame.is_trailers() => {}
                Poll::Ready(Some(_)) => return,
                Poll::Pending => break,
            }
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        runtime.spawn(async move {
            if let Ok(None) = tokio::time::timeout(END_GRACE, body.frame()).await {
                lease.release();
            }
        });
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use tokio::net::TcpListener;

    use super::super::UpstreamClient;
    use super::super::test_upstream::{Answer, BODY, TestUpstream, exchange, post};
    use super::*;

    /// Builds a client over the plain pool from a builder's settings.
    struct Plain(super::super::UpstreamClientBuilder);

    fn builder() -> Plain {
        Plain(UpstreamClient::builder())
    }

    impl Plain {
        fn pool_idle_timeout(self, timeout: Duration) -> Plain {
            Plain(self.0.pool_idle_timeout(timeout))
        }

        fn pool_max_idle_per_host(self, connections: usize) -> Plain {
            Plain(self.0.pool_max_idle_per_host(connections))
        }

        fn build(self) -> Result<UpstreamClient, chitty_core::Error> {
            Ok(UpstreamClient::with_transport(super::super::hyper_transport::HyperTransport::new(&self.0, true)?))
        }
    }

    #[tokio::test]
    async fn requests_in_turn_share_one_connection_and_name_the_host() {
        let upstream = TestUpstream::start(Answer::KeepAlive, Duration::ZERO).await;
        let client = builder().build().unwrap();
        for _ in 0..5 {
            assert_eq!(exchange(&client, &upstream.url()).await, BODY);
        }
        assert_eq!(upstream.accepted(), 1, "every request after the first reuses the connection");
        let heads = upstream.heads.lock().unwrap().clone();
        assert_eq!(heads.len(), 5);
        for head in heads {
            assert!(head.starts_with("post /v1/chat/completions http/1.1\r\n"), "origin-form: {head}");
            assert!(head.contains(&format!("\r\nhost: 127.0.0.1:{}\r\n", upstream.port)), "{head}");
        }
    }

    #[tokio::test]
    async fn a_body_dropped_before_its_end_closes_its_connection() {
        let upstream = TestUpstream::start(Answer::StalledStream, Duration::ZERO).await;
        let client = builder().build().unwrap();
        let response = client.send(post(&upstream.url())).await.unwrap();
        let mut body = response.into_body();
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(&first[..], b"data: ");
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(upstream.closed.load(Ordering::SeqCst), 0, "open while the stream is read");
        drop(body);
        assert_eq!(upstream.wait_closed(1).await, 1, "the upstream sees the cancelled stream go");
        let _next = client.send(post(&upstream.url())).await.unwrap();
        assert_eq!(upstream.accepted(), 2, "a half-read connection is never reused");
    }

    #[tokio::test]
    async fn a_stream_dropped_just_before_its_end_arrives_gives_its_connection_back() {
        let upstream = TestUpstream::start(Answer::LateEnd, Duration::ZERO).await;
        let client = builder().build().unwrap();
        for _ in 0..3 {
            let mut body = client.send(post(&upstream.url())).await.unwrap().into_body();
            assert_eq!(&body.frame().await.unwrap().unwrap().into_data().unwrap()[..], b"data: ");
            drop(body);
            // The end comes 5 ms later, within the grace a dropped body waits for it.
            tokio::time::sleep(END_GRACE).await;
        }
        assert_eq!(upstream.accepted(), 1);
    }

    #[tokio::test]
    async fn the_idle_timer_leaves_a_slow_exchange_alone() {
        let upstream = TestUpstream::start(Answer::SlowStream, Duration::ZERO).await;
        let timeout = Duration::from_millis(30);
        let client = builder().pool_idle_timeout(timeout).build().unwrap();
        // 200 ms of a stream that is silent for 40 ms at a time, longer than the idle timeout.
        assert_eq!(exchange(&client, &upstream.url()).await, "xxxxx");
        assert_eq!(upstream.closed.load(Ordering::SeqCst), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bodies_read_on_other_threads_give_their_connections_back() {
        let upstream = TestUpstream::start(Answer::KeepAlive, Duration::ZERO).await;
        let client = builder().build().unwrap();
        for _ in 0..10 {
            let (client, url) = (client.clone(), upstream.url());
            // Each exchange runs as a task of its own, on whichever worker takes it.
            tokio::spawn(async move { exchange(&client, &url).await }).await.unwrap();
            // Time for the connection to finish its exchange: the check is that it comes back, not how fast (a
            // loaded CI machine can take longer than the 20 ms a new request waits for it).
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // At most one connection per worker thread's pool.
        assert!(upstream.accepted() <= 2, "{} connections for 10 requests in turn", upstream.accepted());
    }

    #[tokio::test]
    async fn versions_other_than_http_1_are_refused_before_any_connection() {
        let upstream = TestUpstream::start(Answer::KeepAlive, Duration::ZERO).await;
        let client = builder().build().unwrap();
        for version in [http::Version::HTTP_09, http::Version::HTTP_2, http::Version::HTTP_3] {
            let mut request = post(&upstream.url());
            *request.version_mut() = version;
            let err = client.send(request).await.unwrap_err();
            assert!(crate::http_provider::describe(&err).contains("HTTP/1.1"), "{err}");
        }
        assert_eq!(upstream.accepted(), 0);
    }

    #[tokio::test]
    async fn a_connection_the_upstream_closed_is_not_reused() {
        let upstream = TestUpstream::start(Answer::ThenClose, Duration::ZERO).await;
        let client = builder().build().unwrap();
        for _ in 0..3 {
            assert_eq!(exchange(&client, &upstream.url()).await, BODY);
            // Time for the connection's task to read the upstream's close, as it would between real requests.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(upstream.accepted(), 3);
    }

    #[tokio::test]
    async fn an_idle_connection_closes_after_the_idle_timeout() {
        let upstream = TestUpstream::start(Answer::KeepAlive, Duration::ZERO).await;
        let timeout = Duration::from_millis(100);
        let client = builder().pool_idle_timeout(timeout).build().unwrap();
        let started = Instant::now();
        exchange(&client, &upstream.url()).await;
        assert_eq!(upstream.wait_closed(1).await, 1, "the idle connection is closed");
        assert!(started.elapsed() >= timeout, "not before the timeout: {:?}", started.elapsed());
        exchange(&client, &upstream.url()).await;
        assert_eq!(upstream.accepted(), 2, "the closed connection is not taken again");
    }

    #[tokio::test]
    async fn a_zero_idle_timeout_keeps_no_connection() {
        let upstream = TestUpstream::start(Answer::KeepAlive, Duration::ZERO).await;
        let client = builder().pool_idle_timeout(Duration::ZERO).build().unwrap();
        for _ in 0..3 {
            assert_eq!(exchange(&client, &upstream.url()).await, BODY);
        }
        assert_eq!(upstream.accepted(), 3);
        assert_eq!(upstream.wait_closed(3).await, 3, "each closes once its answer is read");
    }

    #[tokio::test]
    async fn connections_beyond_the_idle_limit_close_when_their_answers_end() {
        // Answers 100 ms late, so that three requests at once need three connections.
        let upstream = TestUpstream::start(Answer::KeepAlive, Duration::from_millis(100)).await;
        let client = builder().pool_max_idle_per_host(1).build().unwrap();
        let url = upstream.url();
        let answers = futures::future::join_all((0..3).map(|_| exchange(&client, &url))).await;
        assert!(answers.iter().all(|a| a == BODY));
        assert_eq!(upstream.accepted(), 3);
        assert_eq!(upstream.wait_closed(2).await, 2, "one connection stays idle, two close");
        exchange(&client, &url).await;
        assert_eq!(upstream.accepted(), 3, "the idle one is reused");
    }

    #[tokio::test]
    async fn a_refused_connection_says_so_without_the_address() {
        let port = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap().port();
        let client = builder().build().unwrap();
        let err = client.send(post(&format!("http://127.0.0.1:{port}/v1/x"))).await.unwrap_err();
        assert_eq!(err.kind(), TransportErrorKind::Connect);
        let message = crate::http_provider::describe(&err);
        assert!(message.starts_with("connecting to the upstream") && message.contains("refused"), "{message}");
        assert!(!message.contains(&port.to_string()), "{message}");
    }

    #[test]
    fn an_idle_connection_is_either_taken_or_closed_never_both() {
        let (origin, second) = (clock_origin(), Duration::from_secs(1));
        let state = ConnectionState(AtomicU64::new(IN_USE));
        assert_eq!(state.close_if_idle_for(second, origin), Some(second), "a connection in use is never closed");
        assert!(!state.take(second, origin), "nor taken twice");
        state.set_idle(origin);
        let at = |ms| origin + Duration::from_millis(ms);
        assert_eq!(state.close_if_idle_for(second, at(400)), Some(Duration::from_millis(600)), "checked again at 1 s");
        assert_eq!(state.close_if_idle_for(second, at(1000)), None);
        assert!(!state.take(second, at(1000)), "a closed connection cannot be taken");
        let state = ConnectionState(AtomicU64::new(IN_USE));
        state.set_idle(origin);
        assert!(state.take(second, at(999)));
        assert_eq!(state.close_if_idle_for(second, at(60_000)), Some(second), "taken: left alone");
        let state = ConnectionState(AtomicU64::new(IN_USE));
        state.set_idle(origin);
        assert!(!state.take(second, at(1000)), "idle for the whole timeout: not taken, even before its timer fires");
        assert_eq!(state.close_if_idle_for(second, at(1000)), None, "and marked closed");
    }

    #[test]
    fn the_host_header_leaves_out_user_information() {
        let authority: Authority = "user:secret@vllm.internal:8000".parse().unwrap();
        assert_eq!(host_header(&authority).unwrap(), "vllm.internal:8000");
        assert_eq!(host_header(&"[::1]:11434".parse().unwrap()).unwrap(), "[::1]:11434");
        assert_eq!(host_header(&"llama.internal:80".parse().unwrap()).unwrap(), "llama.internal", "default port");
        assert_eq!(host_header(&"[::1]:80".parse().unwrap()).unwrap(), "[::1]");
    }
}
