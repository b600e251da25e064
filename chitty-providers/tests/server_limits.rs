//! The server against hostile and careless clients, over real sockets: slow and idle connections are closed
//! on time, unauthenticated bodies are never read, and past the connection cap new clients get a 503 at once.

#![cfg(feature = "server")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chitty_core::gateway::{Gateway, GatewayConfig, ModelConfig, RouteConfig, TenantConfig, api_key_digest};
use chitty_providers::runtime::TokioRuntimeExt;
use chitty_providers::server::{ConnectionLimits, PerCoreServer, Server, ServerOptions, router};
use chitty_testkit::mock::MockProvider;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const BODY_LIMIT: usize = 64 * 1024;

async fn gateway() -> Gateway {
    let config = GatewayConfig {
        models: vec![ModelConfig { routes: vec![RouteConfig::new("mock", "m")], ..ModelConfig::new("chat") }],
        tenants: vec![TenantConfig::new("acme", &api_key_digest("sk-acme"))],
        ..Default::default()
    };
    Gateway::builder(config).provider(Arc::new(MockProvider::new("mock"))).tokio_runtime().build().await.unwrap()
}

/// The gateway's router served by a [`Server`] with `limits`; returns its address and the server.
async fn serve(limits: ConnectionLimits) -> (SocketAddr, Server) {
    serve_app(router(gateway().await, ServerOptions { body_limit: BODY_LIMIT, ..ServerOptions::default() }), limits)
        .await
}

/// `app` served by a [`Server`] with `limits` on 127.0.0.1.
async fn serve_app(app: axum::Router, limits: ConnectionLimits) -> (SocketAddr, Server) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = Server::new(limits);
    let serving = server.clone();
    tokio::spawn(async move { serving.serve(listener, app, std::future::pending()).await });
    (addr, server)
}

fn limits() -> ConnectionLimits {
    ConnectionLimits::default()
        .with_header_read_timeout(Duration::from_millis(400))
        .with_body_read_timeout(Duration::from_millis(400))
        .with_min_body_rate(1_000)
        .with_idle_timeout(Duration::from_millis(400))
        .with_max_connections(1_000)
}

const CHAT: &str = r#"{"model":"chat","messages":[{"role":"user","content":"hi"}]}"#;

fn post_head(key: &str, length: usize) -> String {
    format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: test\r\nauthorization: Bearer {key}\r\n\
         content-type: application/json\r\ncontent-length: {length}\r\n\r\n"
    )
}

/// Reads until the peer closes or `within` passes; returns what arrived and whether the peer closed.
async fn read_until_close(stream: &mut TcpStream, within: Duration) -> (String, bool) {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return (String::from_utf8_lossy(&seen).into_owned(), false),
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&seen).into_owned(), true),
            Ok(Ok(n)) => seen.extend_from_slice(&buf[..n]),
        }
    }
}

fn status(response: &str) -> Option<u16> {
    response.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

#[tokio::test]
async fn a_slow_request_head_is_closed_within_the_header_timeout() {
    // A long idle timeout: the head's own clock closes it.
    let (addr, _server) = serve(limits().with_idle_timeout(Duration::from_secs(30))).await;
    let mut slow = TcpStream::connect(addr).await.unwrap();
    let started = Instant::now();
    let head = post_head("sk-acme", CHAT.len());
    let mut closed_at = None;
    // One byte every 50 ms: the head would take seconds; the server gives it 400 ms.
    for byte in head.as_bytes() {
        if slow.write_all(&[*byte]).await.is_err() {
            closed_at = Some(started.elapsed());
            break;
        }
        let mut probe = [0u8; 1];
        if let Ok(Ok(0)) = tokio::time::timeout(Duration::from_millis(50), slow.read(&mut probe)).await {
            closed_at = Some(started.elapsed());
            break;
        }
    }
    let closed_at = closed_at.expect("the server never closed a head sent one byte at a time");
    assert!(closed_at < Duration::from_secs(3), "closed after {closed_at:?}");

    // On a kept-alive connection, the next head's clock starts at its first byte.
    let mut kept = TcpStream::connect(addr).await.unwrap();
    kept.write_all(b"GET /healthz HTTP/1.1\r\nhost: test\r\n\r\n").await.unwrap();
    let mut buf = [0u8; 1024];
    let n = kept.read(&mut buf).await.unwrap();
    assert_eq!(status(&String::from_utf8_lossy(&buf[..n])), Some(200));
    kept.write_all(b"GET /hea").await.unwrap();
    let started = Instant::now();
    let (_, closed) = read_until_close(&mut kept, Duration::from_secs(5)).await;
    assert!(closed && started.elapsed() < Duration::from_secs(3), "a dawdling second head: {:?}", started.elapsed());

    // A connection that sends nothing at all is held to the same timeout.
    let mut silent = TcpStream::connect(addr).await.unwrap();
    let (_, closed) = read_until_close(&mut silent, Duration::from_secs(3)).await;
    assert!(closed, "a silent connection stayed open");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout_and_a_busy_one_is_not() {
    // A long header timeout: the idle clock, which starts when a response ends, closes it.
    let (addr, _server) = serve(limits().with_header_read_timeout(Duration::from_secs(30))).await;
    let mut client = TcpStream::connect(addr).await.unwrap();
    client.write_all(b"GET /healthz HTTP/1.1\r\nhost: test\r\n\r\n").await.unwrap();
    let mut buf = [0u8; 1024];
    let n = client.read(&mut buf).await.unwrap();
    assert_eq!(status(&String::from_utf8_lossy(&buf[..n])), Some(200));
    // Requests spaced under the idle timeout keep the connection.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        client.write_all(b"GET /healthz HTTP/1.1\r\nhost: test\r\n\r\n").await.unwrap();
        let n = client.read(&mut buf).await.unwrap();
        assert_eq!(status(&String::from_utf8_lossy(&buf[..n])), Some(200));
    }
    let idle_from = Instant::now();
    let (_, closed) = read_until_close(&mut client, Duration::from_secs(3)).await;
    assert!(closed, "an idle connection stayed open");
    assert!(idle_from.elapsed() >= Duration::from_millis(300), "closed too early: {:?}", idle_from.elapsed());
}

#[tokio::test]
async fn a_body_sent_too_slowly_is_answered_408_and_closed() {
    let (addr, _server) = serve(limits()).await;
    let mut client = TcpStream::connect(addr).await.unwrap();
    client.write_all(post_head("sk-acme", CHAT.len()).as_bytes()).await.unwrap();
    // One byte every 100 ms against an allowance of 400 ms plus a second per 1,000 bytes.
    let mut answer = String::new();
    for byte in CHAT.as_bytes() {
        if client.write_all(&[*byte]).await.is_err() {
            break;
        }
        let mut buf = [0u8; 4096];
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(100), client.read(&mut buf)).await {
            answer.push_str(&String::from_utf8_lossy(&buf[..n]));
            break;
        }
    }
    let (rest, closed) = read_until_close(&mut client, Duration::from_secs(3)).await;
    answer.push_str(&rest);
    assert_eq!(status(&answer), Some(408), "{answer}");
    assert!(answer.contains("request_timeout") && closed, "{answer}");

    // The same body sent at once is answered.
    let mut client = TcpStream::connect(addr).await.unwrap();
    client.write_all(format!("{}{CHAT}", post_head("sk-acme", CHAT.len())).as_bytes()).await.unwrap();
    let mut buf = [0u8; 8192];
    let n = client.read(&mut buf).await.unwrap();
    assert_eq!(status(&String::from_utf8_lossy(&buf[..n])), Some(200));
}

#[tokio::test]
async fn unauthenticated_and_oversized_bodies_are_refused_from_the_headers_without_being_read() {
    // Long body timeouts: any answer that comes while the body is held back was decided from the headers.
    let patient = limits().with_body_read_timeout(Duration::from_secs(30)).with_min_body_rate(1);
    let (addr, _server) = serve(patient).await;
    let eight_mb = 8 * 1024 * 1024;
    let mut held = Vec::new();
    for key in ["sk-wrong", ""] {
        for _ in 0..20 {
            let mut client = TcpStream::connect(addr).await.unwrap();
            client.write_all(post_head(key, eight_mb).as_bytes()).await.unwrap();
            client.write_all(&[b'x'; 1024]).await.unwrap();
            held.push(client);
        }
    }
    for client in &mut held {
        let (answer, closed) = read_until_close(client, Duration::from_secs(3)).await;
        assert_eq!(status(&answer), Some(401), "{answer}");
        assert!(answer.to_ascii_lowercase().contains("connection: close") && closed, "{answer}");
    }

    // A valid key with a declared length over the body limit: 413 at once, nothing read.
    let mut client = TcpStream::connect(addr).await.unwrap();
    client.write_all(post_head("sk-acme", BODY_LIMIT + 1).as_bytes()).await.unwrap();
    let (answer, closed) = read_until_close(&mut client, Duration::from_secs(3)).await;
    assert_eq!(status(&answer), Some(413), "{answer}");
    assert!(closed);
}

#[tokio::test]
async fn past_the_connection_cap_new_clients_get_503_and_are_served_again_once_it_frees() {
    let capped = limits().with_header_read_timeout(Duration::from_secs(30)).with_max_connections(3);
    let (addr, server) = serve(capped).await;
    let mut holders = Vec::new();
    for _ in 0..3 {
        holders.push(TcpStream::connect(addr).await.unwrap());
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while server.open_connections() < 3 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(server.open_connections(), 3);
    for _ in 0..5 {
        let started = Instant::now();
        let mut client = TcpStream::connect(addr).await.unwrap();
        client.write_all(b"GET /healthz HTTP/1.1\r\nhost: test\r\n\r\n").await.unwrap();
        let (answer, closed) = read_until_close(&mut client, Duration::from_secs(3)).await;
        assert_eq!(status(&answer), Some(503), "{answer}");
        assert!(answer.contains("retry-after: 1") && closed, "{answer}");
        assert!(started.elapsed() < Duration::from_secs(1), "refused at once, not left in the backlog");
    }
    assert_eq!(server.open_connections(), 3, "refused connections do not count");

    holders.pop();
    let deadline = Instant::now() + Duration::from_secs(5);
    while server.open_connections() >= 3 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut client = TcpStream::connect(addr).await.unwrap();
    client.write_all(b"GET /healthz HTTP/1.1\r\nhost: test\r\n\r\n").await.unwrap();
    let mut buf = [0u8; 1024];
    let n = client.read(&mut buf).await.unwrap();
    assert_eq!(status(&String::from_utf8_lossy(&buf[..n])), Some(200));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_core_server_applies_the_same_limits_across_threads() {
    let server = PerCoreServer::bind("127.0.0.1:0".parse().unwrap(), 2)
        .unwrap()
        .with_limits(limits().with_header_read_timeout(Duration::from_secs(30)).with_max_connections(2));
    let addr = server.local_addr();
    let app = router(gateway().await, ServerOptions::default());
    tokio::spawn(server.serve(app, std::future::pending()));
    let mut holders = Vec::new();
    for _ in 0..2 {
        let mut c = TcpStream::connect(addr).await.unwrap();
        c.write_all(b"GET /healthz HTTP/1.1\r\nhost: test\r\n\r\n").await.unwrap();
        let mut buf = [0u8; 1024];
        let n = c.read(&mut buf).await.unwrap();
        assert_eq!(status(&String::from_utf8_lossy(&buf[..n])), Some(200));
        holders.push(c);
    }
    // Two connections are open across the threads' sockets: a third is refused whichever thread accepts it.
    for _ in 0..4 {
        let mut client = TcpStream::connect(addr).await.unwrap();
        client.write_all(b"GET /healthz HTTP/1.1\r\nhost: test\r\n\r\n").await.unwrap();
        let (answer, _) = read_until_close(&mut client, Duration::from_secs(3)).await;
        assert_eq!(status(&answer), Some(503), "{answer}");
    }
    // The held connections are idle keep-alives: closed after the idle timeout, and the cap frees.
    let (_, closed) = read_until_close(&mut holders[0], Duration::from_secs(3)).await;
    assert!(closed);
}

/// A router answering `GET /big` with `BIG` bytes in one body, served with `limits`.
const BIG: usize = 8 * 1024 * 1024;

async fn serve_big(limits: ConnectionLimits) -> (SocketAddr, Server) {
    serve_app(axum::Router::new().route("/big", axum::routing::get(|| async { vec![b'x'; BIG] })), limits).await
}

#[tokio::test]
async fn a_large_answer_read_slowly_is_sent_whole_despite_a_short_idle_timeout() {
    // The whole body is handed to hyper at once; sending it to a slow reader takes far longer than the idle
    // timeout, which must not count while the send is moving.
    let limits = limits().with_idle_timeout(Duration::from_millis(200)).with_send_timeout(Duration::from_secs(5));
    let (addr, _server) = serve_big(limits).await;
    let mut client = TcpStream::connect(addr).await.unwrap();
    client.write_all(b"GET /big HTTP/1.1\r\nhost: test\r\n\r\n").await.unwrap();
    let started = Instant::now();
    let mut received = 0usize;
    let mut buf = vec![0u8; 256 * 1024];
    while received < BIG {
        // About 2.5 MB/s: some 3 s for the whole answer.
        tokio::time::sleep(Duration::from_millis(100)).await;
        match client.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => received += n,
        }
    }
    assert!(received > BIG, "the answer was cut after {received} bytes, {:?} in", started.elapsed());
    assert!(started.elapsed() > Duration::from_millis(600), "the read was not slow: {:?}", started.elapsed());
}

#[tokio::test]
async fn a_client_that_stops_reading_its_answer_is_closed_after_the_send_timeout() {
    let limits = limits().with_idle_timeout(Duration::from_secs(30)).with_send_timeout(Duration::from_millis(400));
    let (addr, server) = serve_big(limits).await;
    let mut client = TcpStream::connect(addr).await.unwrap();
    client.write_all(b"GET /big HTTP/1.1\r\nhost: test\r\n\r\n").await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while server.open_connections() == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Reads nothing: the socket buffers fill and the server's writes stall.
    while server.open_connections() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(server.open_connections(), 0, "the stalled connection is still open");
    let (answer, closed) = read_until_close(&mut client, Duration::from_secs(3)).await;
    assert!(closed && answer.len() < BIG, "{} bytes, closed: {closed}", answer.len());
}
