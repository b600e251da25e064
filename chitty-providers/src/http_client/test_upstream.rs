//! A loopback HTTP/1.1 upstream for the transports' tests, scripted per connection.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::UpstreamClient;

/// How the test upstream answers.
#[derive(Clone, Copy, PartialEq)]
pub(super) enum Answer {
    /// `200` with a `Content-Length` body, keeping the connection open.
    KeepAlive,
    /// Chunked: the head and one chunk, then silence until the client goes.
    StalledStream,
    /// The connection closed once the request is read, without an answer.
    Hangup,
    /// Bytes that are not an HTTP response.
    Garbage,
    /// A head promising 100 bytes, 5 of them, then the connection closed.
    CutBody,
}

pub(super) const BODY: &str = r#"{"ok":true}"#;
/// The head of every chunked event-stream answer the test upstream gives.
const EVENT_STREAM_HEAD: &str =
    "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";

/// A loopback HTTP/1.1 upstream that counts the connections it accepted and saw closed, and keeps the
/// head of every request.
pub(super) struct TestUpstream {
    pub(super) port: u16,
    accepted: Arc<AtomicUsize>,
    pub(super) closed: Arc<AtomicUsize>,
    pub(super) heads: Arc<Mutex<Vec<String>>>,
}

impl TestUpstream {
    pub(super) async fn start(answer: Answer, delay: Duration) -> TestUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (accepted, closed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let heads = Arc::new(Mutex::new(Vec::new()));
        let upstream = TestUpstream { port, accepted: accepted.clone(), closed: closed.clone(), heads: heads.clone() };
        tokio::spawn(async move {
            loop {
                let (socket, _) = listener.accept().await.unwrap();
                // Each write goes out at once: the tests time the upstream's answers.
                socket.set_nodelay(true).unwrap();
                accepted.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve(socket, answer, delay, closed.clone(), heads.clone()));
            }
        });
        upstream
    }

    pub(super) fn url(&self) -> String {
        format!("http://127.0.0.1:{}/v1/chat/completions", self.port)
    }

    pub(super) fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Waits up to 3 s for `n` connections to have been closed by the client; the count reached.
    pub(super) async fn wait_closed(&self, n: usize) -> usize {
        for _ in 0..300 {
            if self.closed.load(Ordering::SeqCst) >= n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.closed.load(Ordering::SeqCst)
    }
}

async fn serve(
    mut socket: TcpStream,
    answer: Answer,
    delay: Duration,
    closed: Arc<AtomicUsize>,
    heads: Arc<Mutex<Vec<String>>>,
) {
    let mut buffer = Vec::new();
    loop {
        let head_end = loop {
            if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                break end + 4;
            }
            let mut chunk = [0u8; 4096];
            match socket.read(&mut chunk).await {
                Ok(0) | Err(_) => {
                    closed.fetch_add(1, Ordering::SeqCst);
                    return;
                }
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buffer[..head_end]).to_ascii_lowercase();
        let length: usize =
            head.lines().find_map(|l| l.strip_prefix("content-length:")).map_or(0, |v| v.trim().parse().unwrap());
        while buffer.len() < head_end + length {
            let mut chunk = [0u8; 4096];
            let n = socket.read(&mut chunk).await.unwrap();
            buffer.extend_from_slice(&chunk[..n]);
        }
        buffer.drain(..head_end + length);
        heads.lock().unwrap().push(head);
        tokio::time::sleep(delay).await;
        match answer {
            Answer::Hangup => return,
            Answer::Garbage => {
                socket.write_all(b"SMTP READY\r\n\r\n").await.unwrap();
                return;
            }
            Answer::CutBody => {
                socket.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n12345").await.unwrap();
                return;
            }
            _ => {}
        }
        if answer == Answer::StalledStream {
            socket.write_all(format!("{EVENT_STREAM_HEAD}6\r\ndata: \r\n").as_bytes()).await.unwrap();
            let mut rest = [0u8; 64];
            while matches!(socket.read(&mut rest).await, Ok(n) if n > 0) {}
            closed.fetch_add(1, Ordering::SeqCst);
            return;
        }
        let response = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{BODY}",
            BODY.len()
        );
        socket.write_all(response.as_bytes()).await.unwrap();
    }
}

pub(super) fn post(url: &str) -> http::Request<Bytes> {
    let mut request = http::Request::new(Bytes::from_static(b"{\"model\":\"m\"}"));
    *request.method_mut() = http::Method::POST;
    *request.uri_mut() = url.parse().unwrap();
    request
}

/// Sends one request and reads its whole body.
pub(super) async fn exchange(client: &UpstreamClient, url: &str) -> String {
    let response = client.send(post(url)).await.unwrap();
    assert_eq!(response.status(), 200);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(body.to_vec()).unwrap()
}
