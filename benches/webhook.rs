//! Webhook intake hot paths: `X-Hub-Signature-256` verification throughput for 1 KB, 25 KB and
//! 1 MB bodies (target ≥ 1 GB/s per core on large bodies), verify + parse + de-duplicate + enqueue
//! for 8 KB deliveries (target ≥ 50,000 deliveries/s per core) and 25 KB ones, and the worker's
//! typed parse of a 25 KB `pull_request` payload.
//!
//! ```sh
//! cargo bench --bench webhook --features github
//! # Per-core figures on a shared machine: time on a CPU of the bench thread instead of wall time.
//! CHITTY_BENCH_CLOCK=thread-cpu cargo bench --bench webhook --features github
//! ```

// A bench has no caller to report to: a setup failure aborts it.
#![allow(clippy::expect_used)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chitty_github::events::WebhookEvent;
use chitty_github::intake::{IntakeOutcome, WebhookIntake};
use chitty_github::queue::InProcessQueue;
use chitty_github::signature::{SignatureVerifier, WebhookSecret};
use criterion::measurement::{Measurement, ValueFormatter, WallTime};
use criterion::{BenchmarkId, Criterion, Throughput};
use http::{HeaderMap, HeaderValue};

const SECRET: &str = "bench-webhook-secret";

/// A JSON object of exactly `size` bytes shaped like a GitHub payload (an `action`, nested
/// objects, a long text field).
fn payload(size: usize) -> Bytes {
    let head = r#"{"action":"opened","number":2,"pull_request":{"id":279147437,"number":2,"state":"open","title":"Update the README","user":{"login":"Codertocat","id":21031067,"type":"User"},"body":""#;
    let tail = r#""},"repository":{"id":186853002,"name":"Hello-World","full_name":"Codertocat/Hello-World","private":false},"sender":{"login":"Codertocat","id":21031067},"installation":{"id":2311213}}"#;
    let filler = "Lorem ipsum dolor sit amet, consectetur adipiscing elit. ";
    let mut body = String::with_capacity(size);
    body.push_str(head);
    while body.len() + tail.len() < size {
        let room = size - tail.len() - body.len();
        body.push_str(&filler[..room.min(filler.len())]);
    }
    body.push_str(tail);
    Bytes::from(body)
}

fn verification<M: Measurement>(c: &mut Criterion<M>, clock: &str) {
    let secret = WebhookSecret::new(SECRET);
    let verifier = SignatureVerifier::new([secret.clone()]).expect("one secret");
    let mut group = c.benchmark_group(format!("webhook_verify{clock}"));
    for (label, size) in [("1KB", 1024), ("25KB", 25 * 1024), ("1MB", 1024 * 1024)] {
        let body = payload(size);
        let signature = secret.sign(&body);
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter(label), &body, |b, body| {
            b.iter(|| verifier.verify(black_box(body), black_box(signature.as_bytes())).expect("valid"))
        });
    }
    group.finish();
}

fn intake<M: Measurement>(c: &mut Criterion<M>, clock: &str) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let secret = WebhookSecret::new(SECRET);
    let (queue, mut receiver) = InProcessQueue::bounded(1024);
    let intake = WebhookIntake::builder([secret.clone()])
        .queue(Arc::new(queue))
        // A short TTL keeps the de-duplication map small over millions of unique deliveries.
        .dedup_ttl(Duration::from_secs(1))
        .build()
        .expect("intake");
    let mut group = c.benchmark_group(format!("webhook_intake{clock}"));
    group.throughput(Throughput::Elements(1));
    let mut n: u64 = 0;
    for (label, size) in [("verify_parse_dedup_enqueue_8KB", 8 * 1024), ("verify_parse_dedup_enqueue_25KB", 25 * 1024)]
    {
        let body = payload(size);
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        headers.insert("x-github-event", HeaderValue::from_static("pull_request"));
        headers.insert("x-github-hook-id", HeaderValue::from_static("109948940"));
        headers.insert("x-hub-signature-256", HeaderValue::from_str(&secret.sign(&body)).expect("ascii"));
        group.bench_function(label, |b| {
            b.iter(|| {
                n += 1;
                // A fresh GUID per delivery, so each one is claimed and enqueued, not a duplicate.
                headers.insert("x-github-delivery", HeaderValue::from(n));
                let outcome = runtime.block_on(intake.handle_parts(&headers, body.clone()));
                assert!(matches!(outcome, IntakeOutcome::Accepted { .. }), "{outcome:?}");
                black_box(receiver.try_recv().expect("enqueued"));
            })
        });
    }
    group.finish();
}

/// What the worker does with each delivery before handlers run: the typed parse of a realistic
/// `pull_request` payload padded to 25 KB in the description.
fn typed_parse<M: Measurement>(c: &mut Criterion<M>, clock: &str) {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/chitty-github/tests/fixtures/pull_request.opened.json");
    let mut payload: serde_json::Value = serde_json::from_slice(&std::fs::read(path).expect("fixture")).expect("json");
    payload["pull_request"]["body"] = serde_json::Value::from("");
    let base = serde_json::to_vec(&payload).expect("json").len();
    payload["pull_request"]["body"] = serde_json::Value::from("x".repeat(25 * 1024 - base));
    let body = serde_json::to_vec(&payload).expect("json");
    let mut group = c.benchmark_group(format!("webhook_parse{clock}"));
    group.throughput(Throughput::Elements(1));
    group.bench_function(format!("pull_request_{}KB", body.len() / 1024), |b| {
        b.iter(|| black_box(WebhookEvent::parse("pull_request", black_box(&body)).expect("parses")))
    });
    group.finish();
}

/// Time the bench thread spent on a CPU (`CLOCK_THREAD_CPUTIME_ID`): figures per core even when
/// other processes compete for the machine's cores. Every measured step runs on the bench thread
/// (the intake on a current-thread runtime), so nothing is left out.
#[cfg(unix)]
struct ThreadCpuTime;

#[cfg(unix)]
impl Measurement for ThreadCpuTime {
    type Intermediate = Duration;
    type Value = Duration;

    fn start(&self) -> Duration {
        thread_cpu_time()
    }
    fn end(&self, start: Duration) -> Duration {
        thread_cpu_time().saturating_sub(start)
    }
    fn add(&self, a: &Duration, b: &Duration) -> Duration {
        *a + *b
    }
    fn zero(&self) -> Duration {
        Duration::ZERO
    }
    fn to_f64(&self, value: &Duration) -> f64 {
        value.as_nanos() as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        // Values are nanoseconds, as for wall time.
        static WALL_TIME: WallTime = WallTime;
        WALL_TIME.formatter()
    }
}

#[cfg(unix)]
fn thread_cpu_time() -> Duration {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(now.tv_sec.unsigned_abs(), u32::try_from(now.tv_nsec).unwrap_or(0))
}

fn run<M: Measurement>(mut criterion: Criterion<M>, clock: &str) {
    verification(&mut criterion, clock);
    intake(&mut criterion, clock);
    typed_parse(&mut criterion, clock);
    criterion.final_summary();
}

fn main() {
    match std::env::var("CHITTY_BENCH_CLOCK").as_deref() {
        #[cfg(unix)]
        Ok("thread-cpu") => {
            run(Criterion::default().with_measurement(ThreadCpuTime).configure_from_args(), "_thread_cpu")
        }
        _ => run(Criterion::default().configure_from_args(), ""),
    }
}
