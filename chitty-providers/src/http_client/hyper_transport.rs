//! The default transport: hyper-util's pooled client over rustls, one pool per calling thread.

use std::cell::RefCell;
use std::fmt;
use std::sync::{Arc, Weak};

use async_trait::async_trait;
use bytes::Bytes;
use chitty_core::{Error, Result};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::{BoxError, HttpTransport, ResponseBody, TransportError, TransportErrorKind, UpstreamClientBuilder};

type Connector = hyper_rustls::HttpsConnector<HttpConnector>;
type HyperClient = Client<Connector, Full<Bytes>>;

/// hyper-util's client for `http://` and `https://`: a template to build per-thread pools from, and a shared
/// pool for threads that are shutting down (whose thread-locals are gone).
pub(super) struct HyperTransport {
    pools: Arc<HyperPools>,
}

struct HyperPools {
    builder: hyper_util::client::legacy::Builder,
    connector: Connector,
    shared: HyperClient,
}

impl fmt::Debug for HyperTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HyperTransport").field("pools", &"hyper-util, one per thread").finish()
    }
}

/// One client's pools on one thread.
struct ThreadPools {
    owner: Weak<HyperPools>,
    client: HyperClient,
}

thread_local! {
    /// This thread's pools of each live client, found by pointer (a thread rarely holds more than a few).
    static POOLS: RefCell<Vec<ThreadPools>> = const { RefCell::new(Vec::new()) };
}

impl HyperTransport {
    /// The transport with `settings`' pool sizes and timeouts; fails when the platform's certificate store
    /// cannot be loaded.
    pub(super) fn new(settings: &UpstreamClientBuilder) -> Result<HyperTransport> {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(settings.connect_timeout));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .try_with_platform_verifier()
            .map_err(|e| Error::backend("TLS certificate verifier", e))?
            .https_or_http()
            .enable_all_versions()
            .wrap_connector(http);
        let mut builder = Client::builder(TokioExecutor::new());
        builder
            .pool_max_idle_per_host(settings.pool_max_idle_per_host)
            .pool_idle_timeout(settings.pool_idle_timeout)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new());
        let shared = builder.build(connector.clone());
        Ok(HyperTransport { pools: Arc::new(HyperPools { builder, connector, shared }) })
    }
}

#[async_trait]
impl HttpTransport for HyperTransport {
    async fn send(
        &self,
        request: http::Request<Bytes>,
    ) -> std::result::Result<http::Response<ResponseBody>, TransportError> {
        let request = request.map(Full::new);
        let response = match self.pools.with_thread_pools(|pools| pools.client.clone()) {
            Some(client) => client.request(request).await,
            None => self.pools.shared.request(request).await,
        };
        let response = response.map_err(classify)?;
        Ok(response.map(|body| body.map_err(|e| -> BoxError { Box::new(e) }).boxed_unsync()))
    }
}

/// hyper-util's error as a [`TransportError`]: connect failures by hyper-util's own flag, and hyper's
/// reasons for the rest (an unparsable answer, a request hyper refused).
fn classify(e: hyper_util::client::legacy::Error) -> TransportError {
    let kind = if e.is_connect() {
        TransportErrorKind::Connect
    } else {
        let mut source = std::error::Error::source(&e);
        let mut kind = TransportErrorKind::Interrupted;
        while let Some(err) = source {
            if let Some(hyper_error) = err.downcast_ref::<hyper::Error>() {
                if hyper_error.is_parse() || hyper_error.is_parse_status() {
                    kind = TransportErrorKind::Decode;
                } else if hyper_error.is_user() {
                    kind = TransportErrorKind::Request;
                }
                break;
            }
            source = err.source();
        }
        kind
    };
    TransportError::new(kind, e)
}

impl HyperPools {
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
                        let client = self.builder.build(self.connector.clone());
                        pools.push(ThreadPools { owner: Arc::downgrade(self), client });
                        pools.len() - 1
                    }
                };
                Some(f(&mut pools[index]))
            })
            .ok()
            .flatten()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    use http_body_util::BodyExt;
    use tokio::net::TcpListener;

    use super::super::UpstreamClient;
    use super::super::test_upstream::{Answer, BODY, TestUpstream, exchange, post};
    use super::*;

    fn client() -> UpstreamClient {
        let settings = UpstreamClient::builder();
        UpstreamClient::with_transport(HyperTransport::new(&settings).unwrap())
    }

    #[tokio::test]
    async fn requests_in_turn_share_one_connection_and_name_the_host() {
        let upstream = TestUpstream::start(Answer::KeepAlive, Duration::ZERO).await;
        let client = client();
        for _ in 0..5 {
            assert_eq!(exchange(&client, &upstream.url()).await, BODY);
        }
        assert_eq!(upstream.accepted(), 1, "every request after the first reuses the connection");
        for head in upstream.heads.lock().unwrap().iter() {
            assert!(head.starts_with("post /v1/chat/completions http/1.1\r\n"), "origin-form: {head}");
            assert!(head.contains(&format!("\r\nhost: 127.0.0.1:{}\r\n", upstream.port)), "{head}");
        }
    }

    #[tokio::test]
    async fn a_body_dropped_before_its_end_closes_its_connection() {
        let upstream = TestUpstream::start(Answer::StalledStream, Duration::ZERO).await;
        let client = client();
        let mut body = client.send(post(&upstream.url())).await.unwrap().into_body();
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(&first[..], b"data: ");
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(upstream.closed.load(Ordering::SeqCst), 0, "open while the stream is read");
        drop(body);
        assert_eq!(upstream.wait_closed(1).await, 1, "the upstream sees the cancelled stream go");
        let _next = client.send(post(&upstream.url())).await.unwrap();
        assert_eq!(upstream.accepted(), 2, "a half-read connection is never reused");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bodies_read_on_other_threads_give_their_connections_back() {
        let upstream = TestUpstream::start(Answer::KeepAlive, Duration::ZERO).await;
        let client = client();
        for _ in 0..10 {
            let (client, url) = (client.clone(), upstream.url());
            // Each exchange runs as a task of its own, on whichever worker takes it.
            tokio::spawn(async move { exchange(&client, &url).await }).await.unwrap();
        }
        // At most one connection per worker thread's pool.
        assert!(upstream.accepted() <= 2, "{} connections for 10 requests in turn", upstream.accepted());
    }

    #[tokio::test]
    async fn failures_keep_their_kind_and_leave_the_address_out() {
        let port = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap().port();
        let err = client().send(post(&format!("http://127.0.0.1:{port}/v1/x"))).await.unwrap_err();
        assert_eq!(err.kind(), TransportErrorKind::Connect, "{err:?}");
        let message = crate::http_provider::describe(&err);
        assert!(message.starts_with("connecting to the upstream") && message.contains("refused"), "{message}");
        assert!(!message.contains(&port.to_string()), "{message}");

        let hangup = TestUpstream::start(Answer::Hangup, Duration::ZERO).await;
        let err = client().send(post(&hangup.url())).await.unwrap_err();
        assert_eq!(err.kind(), TransportErrorKind::Interrupted, "{err:?}");

        let garbage = TestUpstream::start(Answer::Garbage, Duration::ZERO).await;
        let err = client().send(post(&garbage.url())).await.unwrap_err();
        assert_eq!(err.kind(), TransportErrorKind::Decode, "{err:?}");

        let cut = TestUpstream::start(Answer::CutBody, Duration::ZERO).await;
        let response = client().send(post(&cut.url())).await.unwrap();
        assert!(response.into_body().collect().await.is_err(), "a body cut short is an error, not a short body");
    }
}
