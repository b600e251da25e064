//! A tiny, fast OpenAI-compatible upstream for load benchmarks: `scripts/bench-gateway.sh` measures the
//! gateway against it and against nothing (the same requests sent here directly).
//!
//! `cargo run --release --example static_upstream -- --addr 127.0.0.1:9100 --stream-chunks 50 --chunk-delay-ms 200`
//!
//! `POST /v1/chat/completions` answers a canned completion with `usage`, echoing the request's model. With
//! `"stream": true` it streams SSE: `--stream-chunks` content chunks `--chunk-delay-ms` apart (so long-lived
//! streams can be held open), the usage chunk when `stream_options.include_usage` is set, then `data: [DONE]`.
//! `GET /v1/models` and `GET /healthz` answer too. Responses are built from bytes prepared at start, so the
//! upstream costs as little as possible of the machine it shares with the gateway and the load generator.
//!
//! With `--forward URL` it is a bare pass-through proxy instead: each request's body and `Content-Type` go to
//! `URL` + path, and the answer comes back as it is, served by the gateway's own [`PerCoreServer`] over the
//! [`UpstreamClient`] the gateway's providers use. The benchmark runs it next to the gateway to show what the
//! HTTP stack alone costs, without authentication, budgets, parsing or metrics. It is a benchmark tool: bodies
//! are read whole, with no size limit.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use chitty::providers::http_client::UpstreamClient;
use chitty::providers::server::{PerCoreServer, shutdown_signal};
use clap::Parser;
use http_body_util::BodyExt;
use serde_json::Value;

/// A canned OpenAI-compatible upstream for benchmarks.
#[derive(Debug, Parser)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9100")]
    addr: SocketAddr,
    /// Content chunks per streamed answer.
    #[arg(long, default_value_t = 8)]
    stream_chunks: u32,
    /// Pause between two streamed chunks, milliseconds (0: the whole stream is sent at once).
    #[arg(long, default_value_t = 0)]
    chunk_delay_ms: u64,
    /// Tokio worker threads (default: one per core); with `--forward`, serving threads.
    #[arg(long)]
    workers: Option<usize>,
    /// Forward every request to this base URL (e.g. `http://127.0.0.1:9100`) instead of answering.
    #[arg(long)]
    forward: Option<http::Uri>,
}

/// The prepared pieces of every answer; the model name is spliced in per request.
struct Canned {
    /// Plain completion: before and after the model name.
    plain: (Bytes, Bytes),
    /// First chunk (role): before and after the model name.
    first: (Bytes, Bytes),
    /// A content chunk.
    content: (Bytes, Bytes),
    /// The last content chunk, with `finish_reason`.
    last: (Bytes, Bytes),
    /// The usage chunk.
    usage: (Bytes, Bytes),
    stream_chunks: u32,
    chunk_delay: Duration,
}

/// Splits `template` at its `{MODEL}` placeholder.
fn split(template: String) -> (Bytes, Bytes) {
    let (before, after) = template.split_once("{MODEL}").unwrap_or((&template, ""));
    (Bytes::copy_from_slice(before.as_bytes()), Bytes::copy_from_slice(after.as_bytes()))
}

impl Canned {
    fn new(stream_chunks: u32, chunk_delay: Duration) -> Canned {
        let created = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let head = format!(
            r#"{{"id":"chatcmpl-static","object":"chat.completion.chunk","created":{created},"model":{{MODEL}},"#
        );
        let chunk = |choices: &str| split(format!("data: {head}{choices}}}\n\n"));
        let completion_tokens = stream_chunks.max(1);
        Canned {
            plain: split(format!(
                r#"{{"id":"chatcmpl-static","object":"chat.completion","created":{created},"model":{{MODEL}},"choices":[{{"index":0,"message":{{"role":"assistant","content":"This is a canned answer from the static upstream."}},"logprobs":null,"finish_reason":"stop"}}],"usage":{{"prompt_tokens":12,"completion_tokens":10,"total_tokens":22}}}}"#
            )),
            first: chunk(r#""choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]"#),
            content: chunk(r#""choices":[{"index":0,"delta":{"content":"token "},"finish_reason":null}]"#),
            last: chunk(r#""choices":[{"index":0,"delta":{},"finish_reason":"stop"}]"#),
            usage: chunk(&format!(
                r#""choices":[],"usage":{{"prompt_tokens":12,"completion_tokens":{completion_tokens},"total_tokens":{}}}"#,
                12 + completion_tokens
            )),
            stream_chunks,
            chunk_delay,
        }
    }
}

/// `(before, after)` with the JSON-encoded model in between.
fn with_model((before, after): &(Bytes, Bytes), model: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(before.len() + model.len() + after.len());
    out.extend_from_slice(before);
    out.extend_from_slice(model);
    out.extend_from_slice(after);
    out.into()
}

async fn chat(State(canned): State<Arc<Canned>>, body: Bytes) -> Response {
    let request: serde_json::Map<String, Value> = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            let message = serde_json::json!({"error": {"message": format!("invalid JSON body: {e}"), "type": "invalid_request_error"}});
            return (StatusCode::BAD_REQUEST, axum::Json(message)).into_response();
        }
    };
    let model = Bytes::from(serde_json::to_vec(request.get("model").unwrap_or(&Value::Null)).unwrap_or_default());
    let stream = request.get("stream").and_then(Value::as_bool).unwrap_or(false);
    if !stream {
        let json = HeaderValue::from_static("application/json");
        return ([(header::CONTENT_TYPE, json)], with_model(&canned.plain, &model)).into_response();
    }
    let include_usage =
        request.get("stream_options").and_then(|o| o.get("include_usage")).and_then(Value::as_bool).unwrap_or(false);

    // Frames in order: role, N content chunks, finish, [usage], [DONE]; the pause goes before every
    // content chunk, so a stream of N chunks stays open N × delay.
    let frames = 2 + canned.stream_chunks as usize + usize::from(include_usage) + 1;
    let frame = move |canned: &Canned, i: usize| -> (Bytes, bool) {
        let n = canned.stream_chunks as usize;
        match i {
            0 => (with_model(&canned.first, &model), false),
            i if i <= n => (with_model(&canned.content, &model), true),
            i if i == n + 1 => (with_model(&canned.last, &model), false),
            i if i == n + 2 && include_usage => (with_model(&canned.usage, &model), false),
            _ => (Bytes::from_static(b"data: [DONE]\n\n"), false),
        }
    };
    let body = if canned.chunk_delay.is_zero() {
        let all: Vec<u8> = (0..frames).flat_map(|i| frame(&canned, i).0).collect();
        Body::from(all)
    } else {
        let stream = futures::stream::unfold(0usize, move |i| {
            let canned = canned.clone();
            let frame = frame.clone();
            async move {
                if i >= frames {
                    return None;
                }
                let (bytes, paced) = frame(&canned, i);
                if paced {
                    tokio::time::sleep(canned.chunk_delay).await;
                }
                Some((Ok::<_, Infallible>(bytes), i + 1))
            }
        });
        Body::from_stream(stream)
    };
    let sse = HeaderValue::from_static("text/event-stream");
    ([(header::CONTENT_TYPE, sse), (header::CACHE_CONTROL, HeaderValue::from_static("no-cache"))], body).into_response()
}

async fn models() -> impl IntoResponse {
    axum::Json(
        serde_json::json!({"object": "list", "data": [{"id": "static", "object": "model", "created": 0, "owned_by": "chitty"}]}),
    )
}

/// The pass-through proxy's state: the pooled client and where it forwards to.
#[derive(Clone)]
struct Forward {
    client: UpstreamClient,
    base: String,
}

async fn forward(State(to): State<Forward>, request: axum::extract::Request) -> Response {
    let bad_gateway = |e: &dyn std::fmt::Display| (StatusCode::BAD_GATEWAY, e.to_string()).into_response();
    let (parts, body) = request.into_parts();
    let body = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) => return bad_gateway(&e),
    };
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut upstream = http::Request::new(body);
    *upstream.method_mut() = parts.method;
    *upstream.uri_mut() = match format!("{}{path}", to.base).parse() {
        Ok(uri) => uri,
        Err(e) => return bad_gateway(&e),
    };
    if let Some(content_type) = parts.headers.get(header::CONTENT_TYPE) {
        upstream.headers_mut().insert(header::CONTENT_TYPE, content_type.clone());
    }
    match to.client.send(upstream).await {
        Ok(response) => response.map(Body::new),
        Err(e) => bad_gateway(&e),
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    if let Some(base) = &args.forward {
        return serve_forward(&args, base);
    }
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(workers) = args.workers {
        runtime.worker_threads(workers);
    }
    runtime.enable_all().build()?.block_on(serve(args))
}

/// The pass-through proxy on the gateway's serving layout (one current-thread runtime per serving thread).
fn serve_forward(args: &Args, base: &http::Uri) -> Result<(), Box<dyn std::error::Error>> {
    let client = UpstreamClient::builder().honour_proxy_env(false).build()?;
    let base = base.to_string().trim_end_matches('/').to_owned();
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .fallback(forward)
        .with_state(Forward { client, base: base.clone() });
    let server = PerCoreServer::bind(args.addr, args.workers.unwrap_or(1))?;
    println!(
        "pass-through proxy listening on http://{} to {base} ({} thread(s))",
        server.local_addr(),
        server.threads()
    );
    // The serving threads have runtimes of their own; this one only waits for the signal.
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(server.serve(app, shutdown_signal()))?;
    Ok(())
}

async fn serve(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let canned = Arc::new(Canned::new(args.stream_chunks, Duration::from_millis(args.chunk_delay_ms)));
    let app = Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/models", get(models))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(canned);
    let listener = tokio::net::TcpListener::bind(args.addr).await?;
    let local = listener.local_addr()?;
    // Small answers must leave at once: Nagle's algorithm would hold them for the client's delayed ACK.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    println!(
        "static upstream listening on http://{local}/v1  (stream: {} chunks, {} ms apart)",
        args.stream_chunks, args.chunk_delay_ms
    );
    axum::serve(listener, app).await?;
    Ok(())
}
