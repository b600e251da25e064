//! The load driver's pieces: mock upstreams with realistic pacing, gateways started in-process from TOML,
//! one client request measured end to end, and latency statistics.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chitty::providers::config::GatewayFile;
use chitty_testkit::mock::{MockEmbedding, MockProvider};
use chitty_testkit::mock_upstream::{MockOpenAi, MockServer};
use sha2::{Digest, Sha256};

/// Time to the first token of the mock chat upstreams.
pub(crate) const FIRST_TOKEN: Duration = Duration::from_millis(300);
/// One token every 33 ms: about 30 tokens/s.
pub(crate) const TOKEN_INTERVAL: Duration = Duration::from_millis(33);
/// Latency of the mock embedding upstream (a real one answers in tens of milliseconds).
pub(crate) const EMBED_LATENCY: Duration = Duration::from_millis(20);

/// Key of the admin API of every gateway the driver starts; only its digest is in the configuration.
pub(crate) const ADMIN_KEY: &str = "sk-bench-admin";

/// A boxed error: the driver reports and exits.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// SHA-256 of `key`, hex, as `key_sha256` wants it.
pub(crate) fn key_digest(key: &str) -> String {
    Sha256::digest(key.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// A chat upstream: 300 ms to the first token, then ~30 tokens/s, streamed or not (plain answers are paced
/// the same), answering from the testkit's deterministic provider.
pub(crate) async fn chat_upstream(name: &str) -> Result<MockServer, BoxError> {
    let server = MockOpenAi::serve(Arc::new(MockProvider::new(name))).await?;
    server.faults().set_latency(FIRST_TOKEN);
    server.faults().set_event_delay(TOKEN_INTERVAL);
    server.faults().set_paced_bodies(true);
    Ok(server)
}

/// An embedding upstream whose vectors put paraphrases close (hashed bag of words), 20 ms per call.
pub(crate) async fn embedding_upstream() -> Result<MockServer, BoxError> {
    let provider = MockProvider::new("embedder").with_embedding(MockEmbedding::BagOfWords);
    let server = MockOpenAi::serve(Arc::new(provider)).await?;
    server.faults().set_latency(EMBED_LATENCY);
    Ok(server)
}

/// A gateway started in-process from `toml`, serving on one thread of its own on a free port.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Gateway {
    /// Where it listens.
    pub(crate) addr: SocketAddr,
}

impl Gateway {
    /// Parses, builds and binds `toml`; the error says what the file or this build refused.
    pub(crate) async fn start(toml: &str) -> Result<Gateway, BoxError> {
        let file = GatewayFile::parse(toml)?;
        let bound = file.build().await?.bind(Some(SocketAddr::from(([127, 0, 0, 1], 0))), Some(1))?;
        let addr = bound.local_addr();
        // Serves until the process exits: one scenario per process.
        tokio::spawn(bound.serve());
        Ok(Gateway { addr })
    }

    /// `/v1/chat/completions`.
    pub(crate) fn chat_url(&self) -> String {
        format!("http://{}/v1/chat/completions", self.addr)
    }

    /// A tenant's spend as the admin API reports it: (spent, limit) in dollars.
    pub(crate) async fn spend(&self, client: &reqwest::Client, tenant: &str) -> Result<(f64, Option<f64>), BoxError> {
        let body: serde_json::Value = client
            .get(format!("http://{}/admin/v1/tenants/{tenant}/spend", self.addr))
            .bearer_auth(ADMIN_KEY)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let dollars = |key: &str| body.get(key).and_then(|v| v.as_str()).and_then(|s| s.parse::<f64>().ok());
        Ok((dollars("spent_usd").unwrap_or(0.0), dollars("limit_usd")))
    }
}

/// The TOML of a gateway start that this build refused because a key is unknown to it (a feature of issue
/// 19 not merged yet): the reduced configuration is tried instead, and the report says so.
pub(crate) fn is_unknown_key(error: &BoxError) -> bool {
    let text = error.to_string();
    text.contains("unknown field") || text.contains("unknown variant")
}

/// What one request's answer showed.
#[derive(Debug, Clone, Default)]
pub(crate) struct Outcome {
    /// HTTP status (0: no answer at all).
    pub(crate) status: u16,
    /// The answer arrived whole: a plain body that parsed, or a stream that ended with `[DONE]` and no error.
    pub(crate) complete: bool,
    /// Time to the first content token (streams), or to the whole body.
    pub(crate) first_token: Duration,
    /// Time to the last byte.
    pub(crate) total: Duration,
    /// `x-chitty-cache`.
    pub(crate) cache: Option<String>,
    /// `x-chitty-cache-similarity`.
    pub(crate) similarity: Option<f32>,
    /// `x-chitty-route`.
    pub(crate) route: Option<String>,
    /// `x-chitty-router`.
    pub(crate) router: Option<String>,
    /// `x-chitty-attempts`.
    pub(crate) attempts: Option<u32>,
    /// Usage the answer reported: (prompt, completion) tokens.
    pub(crate) usage: Option<(u64, u64)>,
    /// Content tokens (chunks with content) received.
    pub(crate) content_chunks: usize,
}

impl Outcome {
    /// Answered from the cache, exactly or semantically.
    pub(crate) fn cached(&self) -> bool {
        matches!(self.cache.as_deref(), Some("hit" | "semantic"))
    }
}

/// Sends one chat request (`body` as JSON, streamed when `body.stream` is true) with `key` and measures it.
pub(crate) async fn send(client: &reqwest::Client, url: &str, key: &str, body: &serde_json::Value) -> Outcome {
    let start = Instant::now();
    let stream = body.get("stream").and_then(serde_json::Value::as_bool) == Some(true);
    let response = match client.post(url).bearer_auth(key).json(body).send().await {
        Ok(r) => r,
        Err(_) => return Outcome { total: start.elapsed(), ..Outcome::default() },
    };
    let header = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let mut outcome = Outcome {
        status: response.status().as_u16(),
        cache: header("x-chitty-cache"),
        similarity: header("x-chitty-cache-similarity").and_then(|s| s.parse().ok()),
        route: header("x-chitty-route"),
        router: header("x-chitty-router"),
        attempts: header("x-chitty-attempts").and_then(|s| s.parse().ok()),
        ..Outcome::default()
    };
    let ok = response.status().is_success();
    if !stream {
        let bytes = response.bytes().await;
        outcome.total = start.elapsed();
        outcome.first_token = outcome.total;
        if let Ok(value) = bytes.as_deref().map(serde_json::from_slice::<serde_json::Value>) {
            let value = value.unwrap_or_default();
            outcome.usage = usage_of(&value);
            outcome.complete = ok && value.pointer("/choices/0/message").is_some();
            outcome.content_chunks = usize::from(outcome.complete);
        }
        return outcome;
    }
    let mut response = response;
    let mut pending = Vec::<u8>::new();
    let mut done = false;
    let mut failed = false;
    loop {
        match response.chunk().await {
            Ok(Some(bytes)) => pending.extend_from_slice(&bytes),
            Ok(None) => break,
            Err(_) => {
                failed = true;
                break;
            }
        }
        while let Some(end) = pending.windows(2).position(|w| w == b"\n\n") {
            let event: Vec<u8> = pending.drain(..end + 2).collect();
            for line in String::from_utf8_lossy(&event).lines() {
                let Some(data) = line.strip_prefix("data:").map(str::trim) else { continue };
                if data == "[DONE]" {
                    done = true;
                    continue;
                }
                let Ok(value) = serde_json::from_str::<serde_json::Value>(data) else {
                    failed = true;
                    continue;
                };
                if value.get("error").is_some() {
                    failed = true;
                }
                if value.pointer("/choices/0/delta/content").and_then(serde_json::Value::as_str).is_some() {
                    if outcome.content_chunks == 0 {
                        outcome.first_token = start.elapsed();
                    }
                    outcome.content_chunks += 1;
                }
                if let Some(usage) = usage_of(&value) {
                    outcome.usage = Some(usage);
                }
            }
        }
    }
    outcome.total = start.elapsed();
    outcome.complete = ok && done && !failed;
    outcome
}

fn usage_of(value: &serde_json::Value) -> Option<(u64, u64)> {
    let usage = value.get("usage")?;
    Some((usage.get("prompt_tokens")?.as_u64()?, usage.get("completion_tokens")?.as_u64()?))
}

/// Dollars for `usage` at `price` ($ per million input and output tokens).
pub(crate) fn cost(usage: (u64, u64), price: (f64, f64)) -> f64 {
    (usage.0 as f64 * price.0 + usage.1 as f64 * price.1) / 1e6
}

/// The `q` quantile (0 to 1) of `samples` in milliseconds (nearest rank); 0 when there are none.
pub(crate) fn percentile_ms(samples: &[Duration], q: f64) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    let mut sorted: Vec<Duration> = samples.to_vec();
    sorted.sort_unstable();
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1].as_secs_f64() * 1e3
}

/// `n` samples of a Zipf distribution over `0..items` with exponent `s`, from a seeded generator.
pub(crate) fn zipf(items: usize, s: f64, n: usize, rng: &mut impl rand::Rng) -> Vec<usize> {
    let weights: Vec<f64> = (1..=items).map(|k| 1.0 / (k as f64).powf(s)).collect();
    let total: f64 = weights.iter().sum();
    let mut cdf = Vec::with_capacity(items);
    let mut acc = 0.0;
    for w in &weights {
        acc += w / total;
        cdf.push(acc);
    }
    (0..n)
        .map(|_| {
            let u: f64 = rng.random();
            cdf.partition_point(|c| *c < u).min(items - 1)
        })
        .collect()
}
