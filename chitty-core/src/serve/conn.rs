//! One connection: hyper's HTTP/1.1 state machine on one task, and a watchdog on another that aborts it when
//! it idles or dawdles over a request head.
//!
//! The watchdog reads three facts the connection keeps in atomics: how many requests are in flight (from the
//! service call until the response body is dropped), when the last one finished, and when the first byte of
//! a head arrived while none was in flight (marked by the socket wrapper on read). It runs apart because the
//! connection's task is woken several times per request: a timer and a notification polled there on every
//! wake cost 4 % more instructions per proxied request (callgrind: 85.7k, against 82.1k with `axum::serve`
//! and 81.2k this way). Nothing wakes it: it sleeps until the earliest moment a deadline could fall.

use std::convert::Infallible;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

use super::body::RequestBody;
use super::{ConnectionLimits, HttpService, later};

/// `head_started_ms` and `send_stalled_ms` when unset.
const UNSET: u64 = u64::MAX;
/// Set in `in_flight` by the watchdog when it closes an idle connection: a request arriving after it is not
/// started.
const CLOSING: u32 = 1 << 31;
/// The watchdog never looks again sooner than this (a zero timeout must not make it spin).
const MIN_CHECK_INTERVAL: Duration = Duration::from_millis(5);

/// Why the watchdog closes a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Overdue {
    /// Idle too long, or a head sent too slowly: closed only if no request has started meanwhile.
    Quiet,
    /// A response the client has not read for the send timeout: closed even with the request in flight.
    SendStalled,
}

/// What the watchdog needs to know about a connection, updated by the socket, the service and the bodies.
struct ConnState {
    epoch: Instant,
    /// Requests whose response has not been sent (from the service call until the body is dropped), plus
    /// [`CLOSING`] once the watchdog has decided to close.
    in_flight: AtomicU32,
    served: AtomicU32,
    /// Milliseconds after `epoch` when the last request finished or its last write went out (0: the accept).
    quiet_since_ms: AtomicU64,
    /// Milliseconds after `epoch` when bytes arrived with no request in flight, or [`UNSET`].
    head_started_ms: AtomicU64,
    /// Milliseconds after `epoch` since when a write has been waiting for the client to read, or [`UNSET`].
    send_stalled_ms: AtomicU64,
}

impl ConnState {
    fn new() -> ConnState {
        ConnState {
            epoch: Instant::now(),
            in_flight: AtomicU32::new(0),
            served: AtomicU32::new(0),
            quiet_since_ms: AtomicU64::new(0),
            head_started_ms: AtomicU64::new(UNSET),
            send_stalled_ms: AtomicU64::new(UNSET),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(UNSET - 1)
    }

    fn at(&self, ms: u64) -> Instant {
        later(self.epoch, Duration::from_millis(ms))
    }

    /// Bytes arrived: with nothing in flight they start a head, whose clock starts now.
    fn on_read(&self) {
        if self.in_flight.load(Ordering::Acquire) == 0 && self.head_started_ms.load(Ordering::Relaxed) == UNSET {
            self.head_started_ms.store(self.now_ms(), Ordering::Relaxed);
        }
    }

    /// A write could not go out: the client is not reading. The clock starts at the first such write.
    fn on_write_blocked(&self) {
        if self.send_stalled_ms.load(Ordering::Relaxed) == UNSET {
            self.send_stalled_ms.store(self.now_ms(), Ordering::Relaxed);
        }
    }

    /// A write went out: whatever was stalled moves again, and an idle connection is idle from now.
    fn on_write_done(&self) {
        if self.send_stalled_ms.load(Ordering::Relaxed) != UNSET {
            self.quiet_since_ms.store(self.now_ms(), Ordering::Relaxed);
            self.send_stalled_ms.store(UNSET, Ordering::Relaxed);
        }
    }

    /// A request head arrived. False when the watchdog is closing the connection: the request must not start.
    fn on_request(&self) -> bool {
        let before = self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.served.fetch_add(1, Ordering::Relaxed);
        self.head_started_ms.store(UNSET, Ordering::Relaxed);
        before & CLOSING == 0
    }

    fn on_response_done(&self) {
        self.quiet_since_ms.store(self.now_ms(), Ordering::Relaxed);
        if self.in_flight.fetch_sub(1, Ordering::AcqRel) & !CLOSING == 1 {
            self.head_started_ms.store(UNSET, Ordering::Relaxed);
        }
    }

    /// When the connection must close if nothing changes, and why; `None` while a request is in flight and
    /// its response is moving.
    fn deadline(&self, limits: &ConnectionLimits) -> Option<(Instant, Overdue)> {
        let stalled = self.send_stalled_ms.load(Ordering::Relaxed);
        if stalled != UNSET {
            return Some((later(self.at(stalled), limits.send_timeout), Overdue::SendStalled));
        }
        if self.in_flight.load(Ordering::Acquire) & !CLOSING > 0 {
            return None;
        }
        let head = self.head_started_ms.load(Ordering::Relaxed);
        let due = if head != UNSET {
            later(self.at(head), limits.header_read_timeout)
        } else if self.served.load(Ordering::Relaxed) == 0 {
            // A connection that has sent nothing yet is held to the header timeout, not the idle one.
            later(self.epoch, limits.header_read_timeout)
        } else {
            later(self.at(self.quiet_since_ms.load(Ordering::Relaxed)), limits.idle_timeout)
        };
        Some((due, Overdue::Quiet))
    }

    /// When the watchdog must look next so as never to miss a deadline, given that nothing tells it when a
    /// request starts or ends: whatever happens from now on (a head starting, a response ending, a write
    /// stalling) can set no deadline earlier than the shortest of the timeouts from now.
    fn next_check(&self, limits: &ConnectionLimits) -> Instant {
        let shortest = limits.header_read_timeout.min(limits.idle_timeout).min(limits.send_timeout);
        let soonest_new = later(Instant::now(), shortest.max(MIN_CHECK_INTERVAL));
        self.deadline(limits).map_or(soonest_new, |(due, _)| due.min(soonest_new))
    }

    /// Whether the connection may be closed now for `why`: a stalled send always; a quiet connection only if
    /// no request has started, which [`CLOSING`] then keeps from starting.
    fn close_for(&self, why: Overdue) -> bool {
        match why {
            Overdue::SendStalled => true,
            Overdue::Quiet => self.in_flight.compare_exchange(0, CLOSING, Ordering::AcqRel, Ordering::Acquire).is_ok(),
        }
    }
}

/// Serves one accepted connection on its own task, with a watchdog task that aborts it when it idles or sends
/// a head too slowly. `keep` (the connection's place under the cap) is dropped when the connection ends.
pub(super) fn spawn<S, B>(
    stream: TcpStream,
    service: S,
    limits: ConnectionLimits,
    stopping: watch::Receiver<bool>,
    keep: impl Send + 'static,
) where
    S: HttpService<B>,
    B: super::ResponseBody,
{
    let state = Arc::new(ConnState::new());
    let (ended, connection_ended) = oneshot::channel::<()>();
    let connection = tokio::spawn(serve_connection(stream, service, limits, stopping, state.clone(), (keep, ended)));
    tokio::spawn(watch_connection(state, limits, connection.abort_handle(), connection_ended));
}

/// Serves the connection until it ends or the server stops; `keep` is dropped with it, even when aborted.
async fn serve_connection<S, B>(
    stream: TcpStream,
    service: S,
    limits: ConnectionLimits,
    mut stopping: watch::Receiver<bool>,
    state: Arc<ConnState>,
    keep: impl Send,
) where
    S: HttpService<B>,
    B: super::ResponseBody,
{
    let _keep = keep;
    let io = TokioIo::new(WatchedStream { stream, state: state.clone() });
    let service = ConnService { inner: service, state, limits, body: PhantomData };
    let mut http = hyper::server::conn::http1::Builder::new();
    // The watchdog times heads from their first byte; hyper's own timer would also count idle time.
    http.header_read_timeout(None).keep_alive(true);
    let conn = http.serve_connection(io, service);
    tokio::pin!(conn);
    let mut draining = *stopping.borrow();
    if draining {
        conn.as_mut().graceful_shutdown();
    }
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            changed = stopping.changed(), if !draining => {
                draining = true;
                if changed.is_err() || *stopping.borrow() {
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// Aborts the connection's task once a deadline passes (an idle or dawdling connection with nothing in flight,
/// or a response the client stopped reading); returns when the connection ends.
async fn watch_connection(
    state: Arc<ConnState>,
    limits: ConnectionLimits,
    connection: tokio::task::AbortHandle,
    mut connection_ended: oneshot::Receiver<()>,
) {
    loop {
        tokio::select! {
            _ = &mut connection_ended => return,
            () = tokio::time::sleep_until(state.next_check(&limits)) => {
                let overdue = state.deadline(&limits).filter(|(due, _)| *due <= Instant::now());
                if let Some((_, why)) = overdue
                    && state.close_for(why)
                {
                    tracing::debug!(?why, "closing a connection that idled, sent its head too slowly or stopped reading");
                    connection.abort();
                    return;
                }
            }
        }
    }
}

/// The socket, marking when a head starts arriving and when writes stall.
struct WatchedStream {
    stream: TcpStream,
    state: Arc<ConnState>,
}

impl AsyncRead for WatchedStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.state.on_read();
        }
        polled
    }
}

impl WatchedStream {
    fn note_write(&self, polled: &Poll<std::io::Result<usize>>) {
        match polled {
            Poll::Pending => self.state.on_write_blocked(),
            Poll::Ready(Ok(n)) if *n > 0 => self.state.on_write_done(),
            Poll::Ready(_) => {}
        }
    }
}

impl AsyncWrite for WatchedStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write(cx, data);
        self.note_write(&polled);
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        self.note_write(&polled);
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// The host's service as hyper calls it: request bodies timed, requests counted until their response ends.
struct ConnService<S, B> {
    inner: S,
    state: Arc<ConnState>,
    limits: ConnectionLimits,
    /// The response body type, which the service's bound alone does not pin down for the impl.
    body: PhantomData<fn() -> B>,
}

impl<S, B> hyper::service::Service<http::Request<Incoming>> for ConnService<S, B>
where
    S: HttpService<B>,
    B: super::ResponseBody,
{
    type Response = http::Response<GuardedBody<B>>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, request: http::Request<Incoming>) -> Self::Future {
        let admitted = self.state.on_request();
        let guard = InFlight(self.state.clone());
        if !admitted {
            // The watchdog is closing this connection and aborts it in a moment: start nothing.
            return Box::pin(async move {
                let _guard = guard;
                std::future::pending().await
            });
        }
        let request =
            request.map(|body| RequestBody::new(body, self.limits.body_read_timeout, self.limits.min_body_rate));
        let mut service = self.inner.clone();
        Box::pin(async move {
            std::future::poll_fn(|cx| service.poll_ready(cx)).await?;
            let response = service.call(request).await?;
            Ok(response.map(|body| GuardedBody { inner: body, _in_flight: guard }))
        })
    }
}

/// Counts a request as in flight until dropped.
struct InFlight(Arc<ConnState>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.on_response_done();
    }
}

pin_project_lite::pin_project! {
    /// A response body that keeps its request in flight until hyper has taken all of it (or dropped it); what
    /// hyper then still has to write is watched by the socket wrapper.
    pub(super) struct GuardedBody<B> {
        #[pin]
        inner: B,
        _in_flight: InFlight,
    }
}

impl<B> Body for GuardedBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.project().inner.poll_frame(cx).map(|frame| frame.map(|r| r.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
