//! Reading streamed upstream answers: [`sse`] for server-sent events (OpenAI, Anthropic), [`ndjson`] for
//! newline-delimited JSON (Ollama), and what every provider's stream shares: failures as chitty-core errors,
//! one idle timeout, one way to say a stream was interrupted.

use std::time::Duration;

use bytes::Bytes;
use chitty_core::{BoxError, Error, Result, UpstreamFailure};
use futures::stream::BoxStream;
use futures::{Stream, StreamExt};

use crate::http_provider;

pub mod ndjson;
pub mod sse;

/// The error for a stream that broke or ended before its upstream said it was done.
pub(crate) fn interrupted(provider: &str, why: &str) -> Error {
    Error::upstream(provider, UpstreamFailure::Interrupted, format!("stream interrupted: {why}"))
}

/// A body that failed mid-stream: the transport's kind when it gave one, otherwise an interruption.
fn body_failure(provider: &str, idle: Duration, e: BoxError) -> Error {
    match http_provider::body_error(provider, idle, e) {
        Error::Upstream { failure: UpstreamFailure::Interrupted, message, .. } => interrupted(provider, &message),
        other => other,
    }
}

/// The server-sent events of a response body, failures as errors (a broken body interrupted, an oversized
/// event undecodable), silence beyond `idle` a timeout; it ends after its first error.
pub(crate) fn sse_events<S>(
    provider: &str,
    idle: Duration,
    max_event_bytes: usize,
    body: S,
) -> BoxStream<'static, Result<sse::SseEvent>>
where
    S: Stream<Item = std::result::Result<Bytes, BoxError>> + Send + Unpin + 'static,
{
    let name = provider.to_owned();
    let events = sse::decode(body, max_event_bytes).map(move |event| {
        event.map_err(|e| match e {
            sse::SseError::Body(e) => body_failure(&name, idle, e),
            e => http_provider::malformed(&name, "event stream", e),
        })
    });
    idle_timeout(provider, idle, events)
}

/// The NDJSON lines of a response body, failures as errors (a broken body interrupted, an oversized line
/// undecodable), silence beyond `idle` a timeout; it ends after its first error.
// Only Ollama's native API streams NDJSON; builds with `openai` alone still test it.
#[cfg_attr(not(feature = "ollama"), allow(dead_code))]
pub(crate) fn ndjson_lines<S>(provider: &str, idle: Duration, body: S) -> BoxStream<'static, Result<Bytes>>
where
    S: Stream<Item = std::result::Result<Bytes, BoxError>> + Send + Unpin + 'static,
{
    let name = provider.to_owned();
    let lines = ndjson::lines(body).map(move |line| {
        line.map_err(|e| match e {
            ndjson::LineError::Body(e) => body_failure(&name, idle, e),
            e => http_provider::malformed(&name, "NDJSON stream", e),
        })
    });
    idle_timeout(provider, idle, lines)
}

/// `stream`'s items until it ends or errs, or until it stays silent for `idle`: then one
/// [`Error::UpstreamTimeout`] ends it.
pub(crate) fn idle_timeout<T, S>(provider: &str, idle: Duration, stream: S) -> BoxStream<'static, Result<T>>
where
    T: Send + 'static,
    S: Stream<Item = Result<T>> + Send + 'static,
{
    struct State<S> {
        items: std::pin::Pin<Box<S>>,
        provider: String,
        ended: bool,
    }
    let state = State { items: Box::pin(stream), provider: provider.to_owned(), ended: false };
    Box::pin(futures::stream::unfold(state, move |mut st| async move {
        if st.ended {
            return None;
        }
        let item = match tokio::time::timeout(idle, st.items.next()).await {
            Ok(item) => item?,
            Err(_) => Err(Error::UpstreamTimeout { provider: st.provider.clone(), timeout: idle }),
        };
        st.ended = item.is_err();
        Some((item, st))
    }))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::http_client::{TransportError, TransportErrorKind};

    fn body(
        parts: Vec<std::result::Result<&'static str, BoxError>>,
    ) -> impl Stream<Item = std::result::Result<Bytes, BoxError>> + Send + Unpin + 'static {
        futures::stream::iter(parts.into_iter().map(|p| p.map(|s| Bytes::from_static(s.as_bytes()))))
    }

    #[tokio::test]
    async fn silence_beyond_the_idle_timeout_ends_the_stream_with_a_timeout() {
        let silent = futures::stream::iter([Ok(1)]).chain(futures::stream::pending());
        let items: Vec<_> = idle_timeout("p", Duration::from_millis(20), silent).collect().await;
        assert!(matches!(items[..], [Ok(1), Err(Error::UpstreamTimeout { .. })]), "{items:?}");
    }

    #[tokio::test]
    async fn a_broken_body_keeps_its_kind_and_ends_the_stream() {
        let reset: BoxError = "connection reset".into();
        let items: Vec<_> =
            sse_events("p", Duration::from_secs(1), 1024, body(vec![Ok("data: 1\n\n"), Err(reset), Ok("data: 2\n\n")]))
                .collect()
                .await;
        assert_eq!(items.len(), 2, "{items:?}");
        assert!(
            matches!(&items[1], Err(Error::Upstream { failure: UpstreamFailure::Interrupted, message, .. }) if message.contains("connection reset")),
            "{items:?}"
        );
        let garbled: BoxError = Box::new(TransportError::new(TransportErrorKind::Decode, "bad chunk size"));
        let items: Vec<_> =
            ndjson_lines("p", Duration::from_secs(1), body(vec![Ok("{}\n"), Err(garbled)])).collect().await;
        assert!(matches!(&items[1], Err(Error::Upstream { failure: UpstreamFailure::Decode, .. })), "{items:?}");
        assert!(!items[1].as_ref().unwrap_err().is_retryable());
    }

    #[tokio::test]
    async fn an_oversized_event_is_undecodable_not_interrupted() {
        let items: Vec<_> =
            sse_events("p", Duration::from_secs(1), 8, body(vec![Ok("data: 0123456789\n\n")])).collect().await;
        assert!(matches!(&items[..], [Err(Error::Upstream { failure: UpstreamFailure::Decode, .. })]), "{items:?}");
    }
}
