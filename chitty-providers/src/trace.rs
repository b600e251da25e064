//! W3C Trace Context from the client to the upstreams: `traceparent` and `tracestate` read from each request
//! and sent on every upstream request made for it, retries and fallbacks included.
//!
//! [`TraceContextLayer`] (feature `server`; [`server::router`](crate::server::router) adds it) reads the
//! headers, ignores them when malformed (never an error), and runs the request in a `chitty.http` span
//! (debug level, with the request id) and in a task-local scope. The HTTP providers read that scope when they
//! build a request:
//!
//! - without feature `opentelemetry-otlp`, or with it but no [`otel::layer`](crate::otel::layer) installed, the
//!   client's `traceparent` and `tracestate` go upstream as received, and a request without a valid one sends
//!   none;
//! - with an OpenTelemetry layer installed, the client's context becomes the parent of the gateway's span,
//!   and the upstream's `traceparent` carries the same trace id with the gateway's own span id (a request
//!   without one starts a trace).
//!
//! A host that mounts its own routes adds the layer itself; one that calls the
//! [`Gateway`](chitty_core::gateway::Gateway) from its own handler can run the call in [`scope`]:
//!
//! ```
//! use axum::{Router, routing::get};
//! use chitty_providers::trace::{IncomingTrace, TraceContextLayer, TraceParent};
//!
//! let app: Router = Router::new().route("/ask", get(|| async { "ok" })).layer(TraceContextLayer);
//!
//! let mut headers = http::HeaderMap::new();
//! headers.insert("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".parse().unwrap());
//! let incoming = IncomingTrace::from_headers(&headers).unwrap();
//! assert_eq!(incoming.parent().trace_id()[0], 0x4b);
//! assert!(TraceParent::parse(b"00-00000000000000000000000000000000-00f067aa0ba902b7-01").is_none());
//! ```

use std::fmt;
use std::future::Future;

use http::header::{HeaderMap, HeaderName, HeaderValue};
use tokio::task::futures::TaskLocalFuture;

/// The `traceparent` header.
pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
/// The `tracestate` header.
pub const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// The longest `tracestate` forwarded, in bytes: 32 members of the longest allowed form would be far more,
/// but the specification lets a vendor drop a header over 512 characters.
const MAX_TRACESTATE: usize = 512;

tokio::task_local! {
    static INCOMING: Option<IncomingTrace>;
}

/// A valid W3C `traceparent`: trace id, parent (span) id and trace flags.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceParent {
    trace_id: [u8; 16],
    parent_id: [u8; 8],
    flags: u8,
}

impl TraceParent {
    /// A trace parent, or `None` when either id is all zeros (invalid in W3C Trace Context).
    pub fn new(trace_id: [u8; 16], parent_id: [u8; 8], flags: u8) -> Option<TraceParent> {
        (trace_id != [0; 16] && parent_id != [0; 8]).then_some(TraceParent { trace_id, parent_id, flags })
    }

    /// Parses a `traceparent` value: `version-traceid-parentid-flags` in lowercase hex. Version `00` must be
    /// exactly 55 bytes; a later version may append `-` and more fields, which are ignored; version `ff`,
    /// all-zero ids, uppercase or any other deviation is `None`.
    pub fn parse(value: &[u8]) -> Option<TraceParent> {
        if value.len() < 55 {
            return None;
        }
        let version = hex_byte(&value[0..2])?;
        let exact = version == 0 && value.len() == 55;
        let extended = version != 0 && version != 0xff && (value.len() == 55 || value[55] == b'-');
        if !(exact || extended) || value[2] != b'-' || value[35] != b'-' || value[52] != b'-' {
            return None;
        }
        let mut trace_id = [0; 16];
        for (i, byte) in trace_id.iter_mut().enumerate() {
            *byte = hex_byte(&value[3 + 2 * i..5 + 2 * i])?;
        }
        let mut parent_id = [0; 8];
        for (i, byte) in parent_id.iter_mut().enumerate() {
            *byte = hex_byte(&value[36 + 2 * i..38 + 2 * i])?;
        }
        TraceParent::new(trace_id, parent_id, hex_byte(&value[53..55])?)
    }

    /// The trace id (16 bytes, never all zeros).
    pub fn trace_id(&self) -> [u8; 16] {
        self.trace_id
    }

    /// The id of the caller's span (8 bytes, never all zeros).
    pub fn parent_id(&self) -> [u8; 8] {
        self.parent_id
    }

    /// The trace flags (bit 0: sampled).
    pub fn flags(&self) -> u8 {
        self.flags
    }

    /// Whether the caller sampled the trace (flag bit 0).
    pub fn is_sampled(&self) -> bool {
        self.flags & 1 == 1
    }

    /// As a version `00` header value (55 bytes).
    pub fn to_header(&self) -> HeaderValue {
        let mut text = [0u8; 55];
        let mut at = 0;
        let mut put = |bytes: &[u8], dash: bool| {
            for byte in bytes {
                text[at] = HEX[usize::from(byte >> 4)];
                text[at + 1] = HEX[usize::from(byte & 0xf)];
                at += 2;
            }
            if dash {
                text[at] = b'-';
                at += 1;
            }
        };
        put(&[0], true);
        put(&self.trace_id, true);
        put(&self.parent_id, true);
        put(&[self.flags], false);
        // Lowercase hex and dashes: always a valid header value.
        HeaderValue::from_bytes(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
    }
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.to_header().to_str().unwrap_or_default())
    }
}

impl fmt::Debug for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TraceParent({self})")
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Two lowercase hex digits as a byte.
fn hex_byte(pair: &[u8]) -> Option<u8> {
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    match pair {
        [hi, lo] => Some(digit(*hi)? << 4 | digit(*lo)?),
        _ => None,
    }
}

/// The trace context a request arrived with: a valid `traceparent`, kept as received, and its `tracestate`.
#[derive(Clone, Debug)]
pub struct IncomingTrace {
    parent: TraceParent,
    traceparent: HeaderValue,
    tracestate: Option<HeaderValue>,
}

impl IncomingTrace {
    /// The context in `headers`, or `None` when there is no `traceparent`, more than one, or an invalid one.
    /// A `tracestate` that is not visible ASCII or is longer than 512 bytes is dropped (the `traceparent`
    /// is kept); several `tracestate` headers are joined with commas, as the specification says.
    pub fn from_headers(headers: &HeaderMap) -> Option<IncomingTrace> {
        let mut values = headers.get_all(TRACEPARENT).iter();
        let traceparent = values.next()?;
        if values.next().is_some() {
            return None;
        }
        let parent = TraceParent::parse(traceparent.as_bytes())?;
        Some(IncomingTrace { parent, traceparent: traceparent.clone(), tracestate: tracestate(headers) })
    }

    /// The parsed `traceparent`.
    pub fn parent(&self) -> TraceParent {
        self.parent
    }

    /// The `traceparent` as received.
    pub fn traceparent(&self) -> &HeaderValue {
        &self.traceparent
    }

    /// The `tracestate`, when one was sent and is forwardable.
    pub fn tracestate(&self) -> Option<&HeaderValue> {
        self.tracestate.as_ref()
    }

    /// The context of the request the current task is serving, if it arrived with one (see [`scope`]).
    pub fn current() -> Option<IncomingTrace> {
        INCOMING.try_with(Option::clone).ok().flatten()
    }
}

/// The request's `tracestate` (several headers joined), or `None` when absent, empty or unfit to forward.
fn tracestate(headers: &HeaderMap) -> Option<HeaderValue> {
    let mut values = headers.get_all(TRACESTATE).iter().filter(|v| !v.is_empty());
    let first = values.next()?;
    let fit = |v: &HeaderValue| v.as_bytes().iter().all(|&b| b == b' ' || b == b'\t' || b.is_ascii_graphic());
    let Some(second) = values.next() else {
        return (first.len() <= MAX_TRACESTATE && fit(first)).then(|| first.clone());
    };
    // Rare: joined into a new value.
    let mut joined = Vec::with_capacity(first.len() + second.len() + 1);
    for value in [first, second].into_iter().chain(values) {
        if !fit(value) {
            return None;
        }
        if !joined.is_empty() {
            joined.push(b',');
        }
        joined.extend_from_slice(value.as_bytes());
        if joined.len() > MAX_TRACESTATE {
            return None;
        }
    }
    HeaderValue::from_bytes(&joined).ok()
}

/// Runs `future` with `trace` as the incoming context: upstream requests it makes carry it. The router's
/// [`TraceContextLayer`] does this for every request; use it when calling the gateway from a handler of
/// your own.
pub fn scope<F: Future>(trace: Option<IncomingTrace>, future: F) -> TaskLocalFuture<Option<IncomingTrace>, F> {
    INCOMING.scope(trace, future)
}

/// Adds the trace headers to an upstream request being built: the current OpenTelemetry span's context when
/// an OpenTelemetry layer is installed, otherwise the incoming context as received (nothing without one).
#[cfg(feature = "upstream-http")]
pub(crate) fn insert_upstream_headers(headers: &mut HeaderMap) {
    #[cfg(feature = "opentelemetry-otlp")]
    if crate::otel::insert_current_span(headers) {
        return;
    }
    let _outside_any_scope = INCOMING.try_with(|trace| {
        if let Some(trace) = trace {
            headers.insert(TRACEPARENT, trace.traceparent.clone());
            match &trace.tracestate {
                Some(state) => headers.insert(TRACESTATE, state.clone()),
                None => headers.remove(TRACESTATE),
            };
        }
    });
}

#[cfg(feature = "server")]
pub use layer::{TraceContextLayer, TraceContextService};

#[cfg(feature = "server")]
mod layer {
    use std::task::{Context, Poll};

    use tokio::task::futures::TaskLocalFuture;
    use tracing::Instrument;
    use tracing::instrument::Instrumented;

    use super::{INCOMING, IncomingTrace};

    /// Reads each request's trace context and serves it in a `chitty.http` span and in the context's scope
    /// (see the [module docs](super)). Malformed headers are ignored. When a subscriber records the span and
    /// the request has no usable `x-request-id`, one is generated and set on the request, so that the span
    /// and the answer carry the same id.
    #[derive(Debug, Clone, Copy, Default)]
    pub struct TraceContextLayer;

    impl<S> tower::Layer<S> for TraceContextLayer {
        type Service = TraceContextService<S>;

        fn layer(&self, inner: S) -> Self::Service {
            TraceContextService { inner }
        }
    }

    /// The service [`TraceContextLayer`] wraps around another.
    #[derive(Debug, Clone)]
    pub struct TraceContextService<S> {
        inner: S,
    }

    impl<S, B> tower::Service<http::Request<B>> for TraceContextService<S>
    where
        S: tower::Service<http::Request<B>>,
    {
        type Response = S::Response;
        type Error = S::Error;
        type Future = TaskLocalFuture<Option<IncomingTrace>, Instrumented<S::Future>>;

        fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            self.inner.poll_ready(cx)
        }

        fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
            let trace = IncomingTrace::from_headers(request.headers());
            // Debug level, like the pipeline's `chitty.request`: a level check unless a subscriber (an
            // OpenTelemetry layer, say) wants it. Field values are only evaluated when it does.
            let span = tracing::debug_span!(
                "chitty.http",
                otel.kind = "server",
                "http.request.method" = %request.method(),
                "url.path" = request.uri().path(),
                request_id = tracing::field::Empty,
            );
            if !span.is_disabled() {
                let id = crate::server::request_id(request.headers());
                span.record("request_id", id.as_str());
                let sent = request.headers().get(crate::server::X_REQUEST_ID).map(http::HeaderValue::as_bytes);
                if sent != Some(id.as_bytes())
                    && let Ok(value) = http::HeaderValue::from_str(&id)
                {
                    request.headers_mut().insert(crate::server::X_REQUEST_ID, value);
                }
                #[cfg(feature = "opentelemetry-otlp")]
                if let Some(trace) = &trace {
                    crate::otel::set_remote_parent(&span, trace.parent(), trace.tracestate());
                }
            }
            INCOMING.scope(trace, self.inner.call(request).instrument(span))
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(HeaderName::from_bytes(name.as_bytes()).unwrap(), HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn a_valid_traceparent_round_trips() {
        let parent = TraceParent::parse(VALID.as_bytes()).unwrap();
        assert_eq!(parent.trace_id()[..4], [0x4b, 0xf9, 0x2f, 0x35]);
        assert_eq!(parent.parent_id(), [0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7]);
        assert!(parent.is_sampled());
        assert_eq!(parent.to_header(), VALID);
        assert_eq!(parent.to_string(), VALID);
    }

    #[test]
    fn malformed_traceparents_are_refused() {
        let cases = [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "0g-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7_01",
            "00-4bf92f3577b34da6a3ce929d0e0e47-3600f067aa0ba902b7-01",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
        ];
        for case in cases {
            assert!(TraceParent::parse(case.as_bytes()).is_none(), "{case}");
        }
        // A later version may carry more fields after a dash.
        assert!(TraceParent::parse(b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra").is_some());
    }

    #[test]
    fn two_traceparents_are_ignored_and_tracestates_are_joined_or_dropped() {
        assert!(IncomingTrace::from_headers(&headers(&[("traceparent", VALID), ("traceparent", VALID)])).is_none());
        let one = IncomingTrace::from_headers(&headers(&[("traceparent", VALID), ("tracestate", "a=1")])).unwrap();
        assert_eq!(one.tracestate().unwrap(), "a=1");
        let joined = IncomingTrace::from_headers(&headers(&[
            ("traceparent", VALID),
            ("tracestate", "a=1"),
            ("tracestate", "b=2"),
        ]))
        .unwrap();
        assert_eq!(joined.tracestate().unwrap(), "a=1,b=2");
        let long = "k=".to_owned() + &"v".repeat(MAX_TRACESTATE);
        let dropped = IncomingTrace::from_headers(&headers(&[("traceparent", VALID), ("tracestate", &long)])).unwrap();
        assert!(dropped.tracestate().is_none(), "the traceparent stays, the state goes");
        assert!(IncomingTrace::from_headers(&headers(&[("tracestate", "a=1")])).is_none());
    }

    #[tokio::test]
    async fn the_scope_carries_the_context_and_nothing_leaks_out_of_it() {
        let incoming = IncomingTrace::from_headers(&headers(&[("traceparent", VALID)]));
        let inside = scope(incoming, async { IncomingTrace::current() }).await;
        assert_eq!(inside.unwrap().parent().to_string(), VALID);
        assert!(IncomingTrace::current().is_none());
    }

    #[cfg(feature = "upstream-http")]
    #[tokio::test]
    async fn upstream_headers_are_the_incoming_ones_as_received() {
        let incoming = IncomingTrace::from_headers(&headers(&[("traceparent", VALID), ("tracestate", "a=1")]));
        let mut sent = headers(&[("tracestate", "stale=1")]);
        scope(incoming, async { insert_upstream_headers(&mut sent) }).await;
        assert_eq!(sent[TRACEPARENT], VALID);
        assert_eq!(sent[TRACESTATE], "a=1");
        let mut outside = HeaderMap::new();
        insert_upstream_headers(&mut outside);
        scope(None, async { insert_upstream_headers(&mut outside) }).await;
        assert!(outside.is_empty());
    }

    proptest! {
        #[test]
        fn parsing_never_panics_and_accepts_only_what_it_can_write(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            if let Some(parent) = TraceParent::parse(&bytes) {
                let written = parent.to_header();
                prop_assert_eq!(TraceParent::parse(written.as_bytes()), Some(parent));
                prop_assert_eq!(&written.as_bytes()[3..55], &bytes[3..55]);
            }
        }

        #[test]
        fn near_valid_values_never_panic(at in 0usize..55, byte in any::<u8>()) {
            let mut value = VALID.as_bytes().to_vec();
            value[at] = byte;
            let parsed = TraceParent::parse(&value);
            let still_valid = VALID.as_bytes()[at] == byte
                || (![2, 35, 52].contains(&at) && matches!(byte, b'0'..=b'9' | b'a'..=b'f'));
            prop_assert_eq!(parsed.is_some(), still_valid);
        }
    }
}
