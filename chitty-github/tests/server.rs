//! The axum route and the webhook example's router, driven over HTTP semantics (tower) and over a
//! real socket.
#![cfg(feature = "server")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

#[allow(dead_code, unreachable_pub)]
#[path = "../../examples/webhook.rs"]
mod example;

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use bytes::Bytes;
use chitty_github::intake::WebhookIntake;
use chitty_github::queue::InProcessQueue;
use chitty_github::server::webhook_route;
use common::{SECRET, fixture, secret, signed_builder};
use http::StatusCode;
use http_body_util::BodyExt;
use tower::ServiceExt;

async fn send(router: &Router, request: http::Request<Body>) -> (StatusCode, http::HeaderMap, Bytes) {
    let response = router.clone().oneshot(request).await.unwrap();
    let (parts, body) = response.into_parts();
    (parts.status, parts.headers, body.collect().await.unwrap().to_bytes())
}

#[tokio::test]
async fn the_example_router_accepts_a_signed_ping_and_the_worker_processes_it() {
    let (router, processor, deliveries) = example::build_app(&["a newer secret", SECRET]).unwrap();
    let body = fixture("ping.json");
    // The same request as the README's curl: JSON body, event, delivery GUID, signature.
    let request = signed_builder("ping", "d9a1c4f0-5bd1-11ee-8c99-0242ac120002", &body)
        .uri(example::WEBHOOK_PATH)
        .body(Body::from(body.clone()))
        .unwrap();
    let (status, headers, response) = send(&router, request).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{response:?}");
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(&response[..], br#"{"status":"accepted"}"#);

    let unsigned = http::Request::post(example::WEBHOOK_PATH)
        .header("content-type", "application/json")
        .header("x-github-event", "ping")
        .header("x-github-delivery", "e0b3f8a2-5bd1-11ee-8c99-0242ac120002")
        .header("x-hub-signature-256", "sha256=0000000000000000000000000000000000000000000000000000000000000000")
        .body(Body::from(body))
        .unwrap();
    assert_eq!(send(&router, unsigned).await.0, StatusCode::UNAUTHORIZED);
    let wrong_path = http::Request::post("/other").body(Body::empty()).unwrap();
    assert_eq!(send(&router, wrong_path).await.0, StatusCode::NOT_FOUND);
    let get = http::Request::get(example::WEBHOOK_PATH).body(Body::empty()).unwrap();
    assert_eq!(send(&router, get).await.0, StatusCode::METHOD_NOT_ALLOWED);

    drop(router);
    processor.clone().run(deliveries).await;
    assert_eq!(processor.stats().handled, 1);
}

#[tokio::test]
async fn the_route_mounts_at_any_path_in_a_router_with_state() {
    let (queue, mut deliveries) = InProcessQueue::bounded(8);
    let intake = Arc::new(WebhookIntake::builder([secret()]).queue(Arc::new(queue)).build().unwrap());
    #[derive(Clone)]
    struct HostState;
    let router: Router = Router::new()
        .route("/healthz", axum::routing::get(|| async { "ok" }))
        .route("/hooks/{tenant}/github", webhook_route(intake))
        .with_state(HostState);
    let body = fixture("push.json");
    let request = signed_builder("push", "guid-1", &body).uri("/hooks/acme/github").body(Body::from(body)).unwrap();
    assert_eq!(send(&router, request).await.0, StatusCode::ACCEPTED);
    assert!(deliveries.recv().await.is_some());
}

#[tokio::test]
async fn bodies_over_the_cap_get_413_however_they_are_sent() {
    let (queue, _deliveries) = InProcessQueue::bounded(8);
    let intake =
        WebhookIntake::builder([secret()]).queue(Arc::new(queue)).max_body_bytes(4 * 1024 * 1024).build().unwrap();
    let router = chitty_github::server::webhook_router("/hooks", Arc::new(intake));
    // 3 MB is over axum's 2 MB default: the intake's own cap applies, not axum's.
    let mut big = br#"{"zen":"z","padding":""#.to_vec();
    big.resize(3 * 1024 * 1024, b'x');
    big.extend_from_slice(br#""}"#);
    let request = signed_builder("ping", "guid-big", &big).uri("/hooks").body(Body::from(big.clone())).unwrap();
    assert_eq!(send(&router, request).await.0, StatusCode::ACCEPTED);

    let mut huge = big;
    huge.resize(4 * 1024 * 1024 + 1, b' ');
    // A streamed body without Content-Length is cut at the cap too.
    let stream = futures::stream::iter(
        huge.chunks(64 * 1024).map(|c| Ok::<_, std::io::Error>(Bytes::copy_from_slice(c))).collect::<Vec<_>>(),
    );
    let request = signed_builder("ping", "guid-huge", &huge).uri("/hooks").body(Body::from_stream(stream)).unwrap();
    let (status, _, body) = send(&router, request).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body:?}");
    assert!(String::from_utf8_lossy(&body).contains("4194304"));
}

#[tokio::test]
async fn a_full_queue_answers_503_with_retry_after_over_a_real_socket() {
    let (queue, _deliveries) = InProcessQueue::bounded(1);
    let intake = WebhookIntake::builder([secret()]).queue(Arc::new(queue)).build().unwrap();
    let router = chitty_github::server::webhook_router("/hooks", Arc::new(intake));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, router).await });

    let body = fixture("ping.json");
    let mut statuses = Vec::new();
    for n in 0..2 {
        let raw = raw_post(addr, &format!("guid-{n}"), &body).await;
        statuses.push(raw);
    }
    server.abort();
    assert!(statuses[0].starts_with("HTTP/1.1 202"), "{}", statuses[0]);
    assert!(statuses[1].starts_with("HTTP/1.1 503"), "{}", statuses[1]);
    assert!(statuses[1].to_ascii_lowercase().contains("retry-after: 1"), "{}", statuses[1]);
}

/// A minimal HTTP/1.1 client, so the test exercises the real server stack without a client crate.
async fn raw_post(addr: std::net::SocketAddr, delivery: &str, body: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /hooks HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\nx-github-event: ping\r\n\
         x-github-delivery: {delivery}\r\nx-hub-signature-256: {}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        secret().sign(body),
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response
}

/// Serves `intake` at `/hooks` on 127.0.0.1 with `axum::serve`.
async fn serve(intake: Arc<WebhookIntake>) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let router = chitty_github::server::webhook_router("/hooks", intake);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    (addr, server)
}

/// Headers of a delivery declaring `length` body bytes, with `signature` as X-Hub-Signature-256.
fn head(addr: std::net::SocketAddr, delivery: &str, signature: &str, length: usize) -> String {
    format!(
        "POST /hooks HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\nx-github-event: ping\r\n\
         x-github-delivery: {delivery}\r\nx-hub-signature-256: {signature}\r\ncontent-length: {length}\r\n\r\n"
    )
}

/// Reads a response until the server closes the connection, failing after five seconds.
async fn read_until_closed(stream: &mut tokio::net::TcpStream) -> String {
    use tokio::io::AsyncReadExt;
    let mut response = Vec::new();
    let read = tokio::time::timeout(std::time::Duration::from_secs(5), stream.read_to_end(&mut response)).await;
    assert!(
        read.is_ok(),
        "no answer (or the connection stayed open) within 5 s: {:?}",
        String::from_utf8_lossy(&response)
    );
    String::from_utf8_lossy(&response).into_owned()
}

#[tokio::test]
async fn invalid_headers_are_refused_before_the_body_is_sent() {
    use tokio::io::AsyncWriteExt;
    let (queue, _deliveries) = InProcessQueue::bounded(8);
    let intake = Arc::new(WebhookIntake::builder([secret()]).queue(Arc::new(queue)).build().unwrap());
    let (addr, server) = serve(intake).await;
    // 20 MB declared, under the 25 MB cap, and not one byte of it sent.
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(head(addr, "guid-early", "sha256=not-hex", 20_000_000).as_bytes()).await.unwrap();
    let response = read_until_closed(&mut stream).await;
    server.abort();
    assert!(response.starts_with("HTTP/1.1 401"), "{response}");
    assert!(response.to_ascii_lowercase().contains("connection: close"), "{response}");
}

/// Polls `condition` every millisecond, failing after five seconds.
async fn eventually(what: &str, condition: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    while !condition() {
        assert!(tokio::time::Instant::now() < deadline, "not within 5 s: {what}");
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
}

#[tokio::test]
async fn held_back_bodies_fill_the_unverified_bound_and_the_next_request_gets_503_at_once() {
    use tokio::io::AsyncWriteExt;
    const CAP: usize = 64 * 1024;
    let (queue, mut deliveries) = InProcessQueue::bounded(8);
    let intake = WebhookIntake::builder([secret()])
        .queue(Arc::new(queue))
        .max_body_bytes(CAP)
        .unverified_bytes_in_flight(4 * CAP)
        .build()
        .unwrap();
    let intake = Arc::new(intake);
    let (addr, server) = serve(intake.clone()).await;
    // Well-formed headers, so each passes the early checks and reserves its declared length.
    let signature = secret().sign(b"never sent");
    let mut held = Vec::new();
    for n in 0..4 {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream.write_all(head(addr, &format!("guid-held-{n}"), &signature, CAP).as_bytes()).await.unwrap();
        held.push(stream);
    }
    eventually("four bodies reserved", || intake.unverified_bytes_in_flight() == 4 * CAP).await;

    let mut next = tokio::net::TcpStream::connect(addr).await.unwrap();
    next.write_all(head(addr, "guid-next", &signature, 1_000).as_bytes()).await.unwrap();
    let response = read_until_closed(&mut next).await.to_ascii_lowercase();
    assert!(response.starts_with("http/1.1 503"), "{response}");
    assert!(response.contains("retry-after: 1\r\n"), "{response}");
    assert!(response.contains("connection: close"), "{response}");

    // Closed mid-body, the held requests give their room back.
    drop(held);
    eventually("reservations released", || intake.unverified_bytes_in_flight() == 0).await;
    let accepted = raw_post(addr, "guid-after", &fixture("ping.json")).await;
    server.abort();
    assert!(accepted.starts_with("HTTP/1.1 202"), "{accepted}");
    assert!(deliveries.recv().await.is_some());
}

#[tokio::test]
async fn served_with_connection_limits_slow_senders_are_closed_and_excess_connections_get_503() {
    use chitty_github::server::{ConnectionLimits, Server};
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let (queue, _deliveries) = InProcessQueue::bounded(8);
    let intake = Arc::new(WebhookIntake::builder([secret()]).queue(Arc::new(queue)).build().unwrap());
    let router = chitty_github::server::webhook_router("/hooks", intake);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let limits = ConnectionLimits::default()
        .with_header_read_timeout(Duration::from_millis(300))
        .with_body_read_timeout(Duration::from_millis(300))
        .with_min_body_rate(1_000)
        .with_max_connections(4);
    let server = Server::new(limits);
    let serving = server.clone();
    let task = tokio::spawn(async move { serving.serve(listener, router, std::future::pending()).await });

    // A forged delivery whose body trickles in (a valid-looking signature, so it is read): closed on time.
    let body = vec![b' '; 4_000];
    let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
    slow.write_all(head(addr, "guid-slow", &secret().sign(&body), body.len()).as_bytes()).await.unwrap();
    let started = std::time::Instant::now();
    let mut answer = Vec::new();
    for chunk in body.chunks(10) {
        if slow.write_all(chunk).await.is_err() {
            break;
        }
        let mut buf = [0u8; 1024];
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(100), slow.read(&mut buf)).await {
            answer.extend_from_slice(&buf[..n]);
            break;
        }
    }
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 4"), "a body sent too slowly is refused: {answer}");
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());

    // Silent connections fill the cap; the next one is answered 503 at once; the silent ones time out.
    let mut silent = Vec::new();
    for _ in 0..4 {
        silent.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    eventually("the cap is reached", || server.open_connections() == 4).await;
    let mut refused = tokio::net::TcpStream::connect(addr).await.unwrap();
    refused.write_all(head(addr, "guid-refused", &secret().sign(b"{}"), 2).as_bytes()).await.unwrap();
    let response = read_until_closed(&mut refused).await;
    assert!(response.starts_with("HTTP/1.1 503"), "{response}");
    for stream in &mut silent {
        let closed = read_until_closed(stream).await;
        assert!(closed.is_empty(), "a silent connection gets no answer, only a close: {closed}");
    }
    eventually("the cap frees", || server.open_connections() == 0).await;
    let accepted = raw_post(addr, "guid-after", br#"{"zen":"ok","hook_id":1}"#).await;
    assert!(accepted.starts_with("HTTP/1.1 202"), "{accepted}");
    task.abort();
}
