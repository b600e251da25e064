//! [`RequestBody`]: a request body that must keep arriving at a minimum rate.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};

/// The error a handler reading a [`RequestBody`] gets when the client sent it too slowly (answer 408). A
/// framework may wrap it: look for it in the error's `source()` chain (`downcast_ref::<BodyReadTimeout>()`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyReadTimeout {
    /// Bytes that had arrived.
    pub received: u64,
    /// How long the server waited.
    pub waited: Duration,
}

impl fmt::Display for BodyReadTimeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the request body was sent too slowly ({} bytes in {} ms)", self.received, self.waited.as_millis())
    }
}

impl std::error::Error for BodyReadTimeout {}

/// A request body as the [`Server`](super::Server) hands it to the service: the connection's bytes, failing
/// with [`BodyReadTimeout`] once they arrive slower than the [`ConnectionLimits`](super::ConnectionLimits)
/// allow. The clock starts when the request head has arrived.
pub struct RequestBody {
    inner: Incoming,
    started: Instant,
    allowance: Duration,
    min_rate: u64,
    received: u64,
    /// Armed only when the body has to be waited for: most bodies arrive with their head.
    timer: Option<Pin<Box<Sleep>>>,
}

impl fmt::Debug for RequestBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestBody").field("received", &self.received).finish_non_exhaustive()
    }
}

impl RequestBody {
    pub(super) fn new(inner: Incoming, allowance: Duration, min_rate: u64) -> RequestBody {
        RequestBody { inner, started: Instant::now(), allowance, min_rate, received: 0, timer: None }
    }

    /// When the body must have arrived, given what has: the allowance, plus a second per `min_rate` bytes.
    fn deadline(&self) -> Instant {
        let earned = match self.min_rate {
            0 => Duration::ZERO,
            rate => Duration::try_from_secs_f64(self.received as f64 / rate as f64).unwrap_or(Duration::MAX),
        };
        super::later(self.started, self.allowance.saturating_add(earned))
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.received = this.received.saturating_add(data.len() as u64);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => loop {
                let deadline = this.deadline();
                let timer = this.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if timer.deadline() != deadline {
                    timer.as_mut().reset(deadline);
                }
                if timer.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                if Instant::now() >= this.deadline() {
                    let timeout = BodyReadTimeout { received: this.received, waited: this.started.elapsed() };
                    return Poll::Ready(Some(Err(Box::new(timeout))));
                }
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
