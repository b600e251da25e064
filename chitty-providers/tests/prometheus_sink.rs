//! The Prometheus sink: recorded events show up in the exposition text with exact values, bounded labels.
#![cfg(feature = "prometheus")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use chitty_core::{CacheStatus, Endpoint, Event, EventSink, NanoUsd, RequestEvent, Timestamp};
use chitty_providers::prometheus::{PrometheusSink, Registry, encode_text};
use chitty_testkit::events;

/// Counts each thread's allocations, so that a test can check what recording an event allocates.
struct CountingAllocator;

thread_local! {
    static ALLOCATIONS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

// SAFETY: every call is forwarded unchanged to the system allocator; counting touches a const thread-local
// `Cell`, which neither allocates nor panics (`try_with` skips threads being torn down).
#[allow(unsafe_code)]
unsafe impl std::alloc::GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        // SAFETY: the caller's contract for `alloc` is passed on as it is.
        unsafe { std::alloc::System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        // SAFETY: `ptr` came from `System.alloc` above with this layout.
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

fn allocations() -> u64 {
    ALLOCATIONS.with(std::cell::Cell::get)
}

/// Records `event`, whose future must be ready at its first poll (the sink never waits).
fn record_now(sink: &PrometheusSink, event: Event) {
    let mut recording = sink.record(event);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match recording.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(result) => result.unwrap(),
        std::task::Poll::Pending => panic!("the sink waited"),
    }
}

fn request(model: &str, status: u16, cache: CacheStatus, latency_ms: u64, cost: u64) -> Event {
    Event::Request(RequestEvent {
        at: Timestamp(1_700_000_000_000),
        request_id: "req-1".into(),
        tenant: "acme".into(),
        key_id: None,
        model: model.into(),
        endpoint: Endpoint::ChatCompletions,
        provider: Some("openai".into()),
        cache,
        status,
        latency: Duration::from_millis(latency_ms),
        prompt_tokens: 10,
        completion_tokens: 5,
        cost: NanoUsd(cost),
        stream: false,
        error_code: None,
        route_index: Some(0),
        time_to_first_token: None,
        overhead: Duration::from_micros(90),
        attempts: 1,
        continuations: 0,
        router: None,
    })
}

/// The sample lines of `metric` (its name followed by `{` or a space), in order.
fn samples<'a>(text: &'a str, metric: &str) -> Vec<&'a str> {
    text.lines().filter(|l| l.strip_prefix(metric).is_some_and(|rest| rest.starts_with(['{', ' ']))).collect()
}

#[tokio::test]
async fn exposition_has_exact_counts_types_and_other_bucketing() {
    let mut registry = Registry::default();
    let sink = PrometheusSink::new(&mut registry, ["gpt-4o-mini", "claude-sonnet"]).with_tenants(["acme"]);
    sink.record(request("gpt-4o-mini", 200, CacheStatus::Miss, 12, 1_500)).await.unwrap();
    sink.record(request("gpt-4o-mini", 200, CacheStatus::Miss, 30, 2_500)).await.unwrap();
    sink.record(request("gpt-4o-mini", 200, CacheStatus::Hit, 1, 0)).await.unwrap();
    sink.record(request("made-up-by-a-client", 404, CacheStatus::Bypass, 2, 0)).await.unwrap();
    sink.record(request("another\"one\nwith junk", 404, CacheStatus::Bypass, 3, 0)).await.unwrap();
    sink.record(request("claude-sonnet", 200, CacheStatus::Miss, 5_000, 7)).await.unwrap();
    for _ in 0..3 {
        sink.record(Event::UpstreamFailure { provider: "openai".into(), model: "gpt-4o-mini".into(), status: 502 })
            .await
            .unwrap();
    }
    sink.record(Event::CircuitOpened { provider: "openai".into() }).await.unwrap();
    let text = encode_text(&registry).unwrap();

    for type_line in [
        "# TYPE chitty_requests counter",
        "# TYPE chitty_tokens counter",
        "# TYPE chitty_cost_nano_usd counter",
        "# TYPE chitty_upstream_failures counter",
        "# TYPE chitty_circuit_opened counter",
        "# TYPE chitty_request_duration_seconds histogram",
        "# UNIT chitty_request_duration_seconds seconds",
    ] {
        assert!(text.lines().any(|l| l == type_line), "missing `{type_line}` in:\n{text}");
    }
    assert!(text.ends_with("# EOF\n"), "OpenMetrics text ends with # EOF");

    let mut requests = samples(&text, "chitty_requests_total");
    requests.sort_unstable();
    assert_eq!(
        requests,
        [
            r#"chitty_requests_total{model="claude-sonnet",tenant="acme",endpoint="chat.completions",status="200",cache="miss"} 1"#,
            r#"chitty_requests_total{model="gpt-4o-mini",tenant="acme",endpoint="chat.completions",status="200",cache="hit"} 1"#,
            r#"chitty_requests_total{model="gpt-4o-mini",tenant="acme",endpoint="chat.completions",status="200",cache="miss"} 2"#,
            r#"chitty_requests_total{model="other",tenant="acme",endpoint="chat.completions",status="404",cache="bypass"} 2"#,
        ],
        "{text}"
    );
    assert!(!text.contains("made-up") && !text.contains("junk"), "unlisted model names never become labels");

    let mut tokens = samples(&text, "chitty_tokens_total");
    tokens.sort_unstable();
    assert_eq!(
        tokens,
        [
            r#"chitty_tokens_total{model="claude-sonnet",tenant="acme",kind="completion"} 5"#,
            r#"chitty_tokens_total{model="claude-sonnet",tenant="acme",kind="prompt"} 10"#,
            r#"chitty_tokens_total{model="gpt-4o-mini",tenant="acme",kind="completion"} 15"#,
            r#"chitty_tokens_total{model="gpt-4o-mini",tenant="acme",kind="prompt"} 30"#,
            r#"chitty_tokens_total{model="other",tenant="acme",kind="completion"} 10"#,
            r#"chitty_tokens_total{model="other",tenant="acme",kind="prompt"} 20"#,
        ]
    );
    let mut cost = samples(&text, "chitty_cost_nano_usd_total");
    cost.sort_unstable();
    assert_eq!(
        cost,
        [
            r#"chitty_cost_nano_usd_total{model="claude-sonnet",tenant="acme"} 7"#,
            r#"chitty_cost_nano_usd_total{model="gpt-4o-mini",tenant="acme"} 4000"#,
            r#"chitty_cost_nano_usd_total{model="other",tenant="acme"} 0"#,
        ]
    );
    assert_eq!(
        samples(&text, "chitty_upstream_failures_total"),
        [r#"chitty_upstream_failures_total{provider="openai"} 3"#]
    );
    assert_eq!(samples(&text, "chitty_circuit_opened_total"), [r#"chitty_circuit_opened_total{provider="openai"} 1"#]);

    let gpt = r#"{model="gpt-4o-mini",endpoint="chat.completions"}"#;
    let hist = |suffix: &str| samples(&text, &format!("chitty_request_duration_seconds_{suffix}"));
    assert!(hist("count").contains(&format!("chitty_request_duration_seconds_count{gpt} 3").as_str()), "{text}");
    assert!(hist("sum").contains(&format!("chitty_request_duration_seconds_sum{gpt} 0.043").as_str()), "{text}");
    // Buckets are cumulative: 1 ms and 12 ms are within 20 ms, 30 ms is not; all three within +Inf.
    let bucket = |le: &str| {
        format!(
            r#"chitty_request_duration_seconds_bucket{{le="{le}",model="gpt-4o-mini",endpoint="chat.completions"}}"#
        )
    };
    let buckets = hist("bucket");
    assert!(buckets.contains(&format!("{} 1", bucket("0.005")).as_str()), "{text}");
    assert!(buckets.contains(&format!("{} 2", bucket("0.02")).as_str()), "{text}");
    assert!(buckets.contains(&format!("{} 3", bucket("0.04")).as_str()), "{text}");
    assert!(buckets.contains(&format!("{} 3", bucket("+Inf")).as_str()), "{text}");
    assert_eq!(buckets.iter().filter(|l| l.contains("le=\"+Inf\"")).count(), 3, "one +Inf per series");
}

#[tokio::test]
async fn a_thousand_client_model_names_make_one_series() {
    let mut registry = Registry::default();
    let sink = PrometheusSink::new(&mut registry, ["gpt-4o-mini"]);
    for i in 0..1_000 {
        sink.record(request(&format!("random-model-{i}"), 200, CacheStatus::Miss, 1, 1)).await.unwrap();
    }
    let text = encode_text(&registry).unwrap();
    assert_eq!(
        samples(&text, "chitty_requests_total"),
        [
            r#"chitty_requests_total{model="other",tenant="other",endpoint="chat.completions",status="200",cache="miss"} 1000"#
        ]
    );
    assert_eq!(
        samples(&text, "chitty_cost_nano_usd_total"),
        [r#"chitty_cost_nano_usd_total{model="other",tenant="other"} 1000"#]
    );
}

#[tokio::test]
async fn each_endpoint_has_its_own_duration_series_and_clones_share_them() {
    let mut registry = Registry::default();
    let sink = PrometheusSink::new(&mut registry, ["m"]).with_tenants(["acme"]);
    let clone = sink.clone();
    let at = |endpoint, latency_ms| {
        let Event::Request(mut r) = request("m", 200, CacheStatus::Miss, latency_ms, 1) else { unreachable!() };
        r.endpoint = endpoint;
        Event::Request(r)
    };
    sink.record(at(Endpoint::ChatCompletions, 1)).await.unwrap();
    clone.record(at(Endpoint::ChatCompletions, 2)).await.unwrap();
    sink.record(at(Endpoint::Completions, 3)).await.unwrap();
    clone.record(at(Endpoint::Embeddings, 4)).await.unwrap();
    let text = encode_text(&registry).unwrap();
    let mut counts = samples(&text, "chitty_request_duration_seconds_count");
    counts.sort_unstable();
    assert_eq!(
        counts,
        [
            r#"chitty_request_duration_seconds_count{model="m",endpoint="chat.completions"} 2"#,
            r#"chitty_request_duration_seconds_count{model="m",endpoint="completions"} 1"#,
            r#"chitty_request_duration_seconds_count{model="m",endpoint="embeddings"} 1"#,
        ],
        "{text}"
    );
    assert!(
        text.contains("chitty_request_duration_seconds_sum{model=\"m\",endpoint=\"embeddings\"} 0.004\n"),
        "{text}"
    );
    assert_eq!(
        samples(&text, "chitty_cost_nano_usd_total"),
        [r#"chitty_cost_nano_usd_total{model="m",tenant="acme"} 4"#]
    );
    let mut tokens = samples(&text, "chitty_tokens_total");
    tokens.sort_unstable();
    assert_eq!(
        tokens,
        [
            r#"chitty_tokens_total{model="m",tenant="acme",kind="completion"} 20"#,
            r#"chitty_tokens_total{model="m",tenant="acme",kind="prompt"} 40"#
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink_conformance_and_concurrent_writers_count_exactly() {
    let mut registry = Registry::default();
    let sink = Arc::new(PrometheusSink::new(&mut registry, ["chitty-mock"]).with_tenants(["acme"]));
    events::accepts_every_kind(sink.as_ref()).await;
    events::concurrent_writers(sink.clone() as Arc<dyn EventSink>, 8, 100).await;
    let text = encode_text(&registry).unwrap();
    // One sample of each of the four kinds, then 8 writers × 100 events cycling through them.
    let n = 1 + 8 * 25;
    assert_eq!(
        samples(&text, "chitty_requests_total"),
        [format!(
            r#"chitty_requests_total{{model="chitty-mock",tenant="acme",endpoint="chat.completions",status="200",cache="miss"}} {n}"#
        )]
    );
    assert!(text.contains(&format!(
        "chitty_tokens_total{{model=\"chitty-mock\",tenant=\"acme\",kind=\"prompt\"}} {}\n",
        42 * n
    )));
    assert!(
        text.contains(&format!("chitty_cost_nano_usd_total{{model=\"chitty-mock\",tenant=\"acme\"}} {}\n", 1_234 * n))
    );
    assert!(text.contains(&format!("chitty_cache_misses_total{{model=\"chitty-mock\"}} {n}\n")), "{text}");
    assert!(text.contains(&format!("chitty_overhead_seconds_count {n}\n")), "{text}");
    assert!(text.contains(&format!("chitty_upstream_failures_total{{provider=\"mock\"}} {n}\n")));
    assert!(text.contains(&format!("chitty_circuit_opened_total{{provider=\"mock\"}} {n}\n")));
}

#[cfg(feature = "server")]
#[tokio::test]
async fn metrics_router_serves_the_registry_as_openmetrics_text() {
    use chitty_providers::prometheus::{OPENMETRICS_CONTENT_TYPE, metrics_router};

    let mut registry = Registry::default();
    let sink = PrometheusSink::new(&mut registry, ["gpt-4o-mini"]);
    sink.record(request("gpt-4o-mini", 200, CacheStatus::Hit, 1, 0)).await.unwrap();
    let app = axum::Router::new().merge(metrics_router(Arc::new(registry)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let response = reqwest::get(format!("http://{addr}/metrics")).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], OPENMETRICS_CONTENT_TYPE);
    let body = response.text().await.unwrap();
    assert!(
        body.contains(
            r#"chitty_requests_total{model="gpt-4o-mini",tenant="other",endpoint="chat.completions",status="200",cache="hit"} 1"#
        ),
        "{body}"
    );
    assert!(body.ends_with("# EOF\n"));
    server.abort();
}

#[tokio::test]
async fn metrics_behind_a_bearer_token_refuse_scrapes_without_it() {
    use chitty_providers::prometheus::metrics_router;
    use chitty_providers::server::require_bearer;

    let mut registry = Registry::default();
    let sink = PrometheusSink::new(&mut registry, ["gpt-4o-mini"]);
    sink.record(request("gpt-4o-mini", 200, CacheStatus::Hit, 1, 0)).await.unwrap();
    let app = require_bearer(metrics_router(Arc::new(registry)), "scrape-me");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let http = reqwest::Client::new();
    let url = format!("http://{addr}/metrics");
    for token in [None, Some("wrong"), Some("scrape-m"), Some("scrape-me-too")] {
        let mut request = http.get(&url);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 401, "{token:?}");
        let body = response.text().await.unwrap();
        assert!(!body.contains("gpt-4o-mini"), "nothing of the registry leaks: {body}");
    }
    let response = http.get(&url).bearer_auth("scrape-me").send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.text().await.unwrap().contains("gpt-4o-mini"));
    server.abort();

    // An empty token lets nothing through, least of all a request without one.
    let app = require_bearer(axum::Router::new().route("/m", axum::routing::get(|| async { "open" })), "");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    for request in [http.get(format!("http://{addr}/m")), http.get(format!("http://{addr}/m")).bearer_auth("")] {
        assert_eq!(request.send().await.unwrap().status(), 401);
    }
    server.abort();
}

/// A request event from `tenant`, adjusted by `change`.
fn from(tenant: &str, model: &str, change: impl FnOnce(&mut RequestEvent)) -> Event {
    let Event::Request(mut r) = request(model, 200, CacheStatus::Miss, 10, 100) else { unreachable!() };
    r.tenant = tenant.into();
    change(&mut r);
    Event::Request(r)
}

#[tokio::test]
async fn tenants_outside_the_known_set_fold_into_other_until_they_are_known() {
    let mut registry = Registry::default();
    let sink = PrometheusSink::new(&mut registry, ["m"]).with_tenants(["acme"]);
    sink.record(from("acme", "m", |_| {})).await.unwrap();
    sink.record(from("newco", "m", |_| {})).await.unwrap();
    sink.record(from("a\"tenant\nwith junk", "unlisted", |_| {})).await.unwrap();
    sink.set_tenants(["acme", "newco"]);
    sink.record(from("newco", "m", |_| {})).await.unwrap();
    sink.record(from("acme", "m", |_| {})).await.unwrap();
    let text = encode_text(&registry).unwrap();
    let mut cost = samples(&text, "chitty_cost_nano_usd_total");
    cost.sort_unstable();
    assert_eq!(
        cost,
        [
            r#"chitty_cost_nano_usd_total{model="m",tenant="acme"} 200"#,
            r#"chitty_cost_nano_usd_total{model="m",tenant="newco"} 100"#,
            r#"chitty_cost_nano_usd_total{model="m",tenant="other"} 100"#,
            r#"chitty_cost_nano_usd_total{model="other",tenant="other"} 100"#,
        ],
        "a tenant keeps its series across a refresh and unknown ones are `other`: {text}"
    );
    assert!(!text.contains("junk") && !text.contains("unlisted"), "{text}");
    // Dropping a tenant from the set folds its later requests into `other`.
    sink.set_tenants(["newco"]);
    sink.record(from("acme", "m", |_| {})).await.unwrap();
    let text = encode_text(&registry).unwrap();
    assert!(text.contains("chitty_cost_nano_usd_total{model=\"m\",tenant=\"other\"} 200\n"), "{text}");
    assert!(text.contains("chitty_cost_nano_usd_total{model=\"m\",tenant=\"acme\"} 200\n"), "{text}");
}

#[tokio::test]
async fn cache_hits_and_misses_count_per_model_and_bypasses_count_as_neither() {
    let mut registry = Registry::default();
    let sink = PrometheusSink::new(&mut registry, ["m"]).with_tenants(["acme"]);
    for cache in [CacheStatus::Hit, CacheStatus::Hit, CacheStatus::Hit, CacheStatus::Miss, CacheStatus::Bypass] {
        sink.record(from("acme", "m", |r| r.cache = cache)).await.unwrap();
    }
    sink.record(from("acme", "elsewhere", |r| r.cache = CacheStatus::Hit)).await.unwrap();
    let text = encode_text(&registry).unwrap();
    let mut hits = samples(&text, "chitty_cache_hits_total");
    hits.sort_unstable();
    assert_eq!(hits, [r#"chitty_cache_hits_total{model="m"} 3"#, r#"chitty_cache_hits_total{model="other"} 1"#]);
    assert_eq!(samples(&text, "chitty_cache_misses_total"), [r#"chitty_cache_misses_total{model="m"} 1"#]);
}

#[tokio::test]
async fn refusals_are_told_apart_by_their_error_code() {
    let mut registry = Registry::default();
    let sink = PrometheusSink::new(&mut registry, ["m"]).with_tenants(["acme", "broke"]);
    let refused = |tenant, code| {
        from(tenant, "m", |r| {
            r.status = 429;
            r.cache = CacheStatus::Bypass;
            r.error_code = Some(code);
        })
    };
    sink.record(refused("broke", "insufficient_quota")).await.unwrap();
    sink.record(refused("broke", "insufficient_quota")).await.unwrap();
    sink.record(refused("acme", "rate_limit_exceeded")).await.unwrap();
    sink.record(refused("stranger", "rate_limit_exceeded")).await.unwrap();
    sink.record(refused("acme", "model_not_found")).await.unwrap();
    let text = encode_text(&registry).unwrap();
    assert_eq!(
        samples(&text, "chitty_budget_rejections_total"),
        [r#"chitty_budget_rejections_total{tenant="broke"} 2"#]
    );
    let mut limited = samples(&text, "chitty_rate_limited_total");
    limited.sort_unstable();
    assert_eq!(
        limited,
        [r#"chitty_rate_limited_total{tenant="acme"} 1"#, r#"chitty_rate_limited_total{tenant="other"} 1"#]
    );
    assert!(
        text.contains(
            "chitty_requests_total{model=\"m\",tenant=\"broke\",endpoint=\"chat.completions\",status=\"429\",cache=\"bypass\"} 2\n"
        ),
        "{text}"
    );
}

#[tokio::test]
async fn time_to_first_token_is_observed_for_streams_only_and_overhead_for_every_request() {
    let mut registry = Registry::default();
    let sink = PrometheusSink::new(&mut registry, ["m"]).with_tenants(["acme"]);
    sink.record(from("acme", "m", |r| {
        r.stream = true;
        r.time_to_first_token = Some(Duration::from_millis(3));
        r.overhead = Duration::from_micros(50);
    }))
    .await
    .unwrap();
    sink.record(from("acme", "m", |r| {
        r.stream = true;
        r.time_to_first_token = Some(Duration::from_millis(5));
        r.overhead = Duration::from_micros(150);
    }))
    .await
    .unwrap();
    // A whole answer never feeds the TTFT histogram, even with a value set; a stream that failed first has none.
    sink.record(from("acme", "m", |r| r.time_to_first_token = Some(Duration::from_secs(9)))).await.unwrap();
    sink.record(from("acme", "m", |r| r.stream = true)).await.unwrap();
    let text = encode_text(&registry).unwrap();
    assert!(text.lines().any(|l| l == "# TYPE chitty_time_to_first_token_seconds histogram"), "{text}");
    assert_eq!(
        samples(&text, "chitty_time_to_first_token_seconds_count"),
        [r#"chitty_time_to_first_token_seconds_count{model="m"} 2"#]
    );
    assert_eq!(
        samples(&text, "chitty_time_to_first_token_seconds_sum"),
        [r#"chitty_time_to_first_token_seconds_sum{model="m"} 0.008"#]
    );
    assert!(text.lines().any(|l| l == "# TYPE chitty_overhead_seconds histogram"), "{text}");
    assert_eq!(samples(&text, "chitty_overhead_seconds_count"), ["chitty_overhead_seconds_count 4"]);
    // 50 µs falls in the 80 µs bucket, 150 µs does not; the other two events carry 90 µs.
    assert!(text.contains("chitty_overhead_seconds_bucket{le=\"0.00008\"} 1\n"), "{text}");
    assert!(text.contains("chitty_overhead_seconds_bucket{le=\"0.00016\"} 4\n"), "{text}");
}

#[tokio::test]
async fn fallbacks_and_circuit_states_move_their_series() {
    use chitty_core::events::CircuitState;

    let mut registry = Registry::default();
    let sink = PrometheusSink::new(&mut registry, ["m"]).with_providers(["openai", "azure"]);
    let fallback =
        || Event::Fallback { model: "m".into(), from_model: "openai/gpt-4o".into(), to_model: "azure/gpt-4o".into() };
    sink.record(fallback()).await.unwrap();
    sink.record(fallback()).await.unwrap();
    let text = encode_text(&registry).unwrap();
    assert_eq!(
        samples(&text, "chitty_fallback_events_total"),
        [r#"chitty_fallback_events_total{from_model="openai/gpt-4o",to_model="azure/gpt-4o"} 2"#]
    );
    let state = |text: &str, provider: &str| {
        let prefix = format!("chitty_circuit_state{{provider=\"{provider}\"}} ");
        text.lines().find_map(|l| l.strip_prefix(prefix.as_str()).map(str::to_owned))
    };
    assert_eq!((state(&text, "openai").as_deref(), state(&text, "azure").as_deref()), (Some("0"), Some("0")));
    let change = |model: &str, state| Event::CircuitChanged { provider: "openai".into(), model: model.into(), state };
    sink.record(change("gpt-4o", CircuitState::Open)).await.unwrap();
    sink.record(change("gpt-4o-mini", CircuitState::HalfOpen)).await.unwrap();
    assert_eq!(state(&encode_text(&registry).unwrap(), "openai").as_deref(), Some("2"), "the worst route shows");
    sink.record(change("gpt-4o", CircuitState::Closed)).await.unwrap();
    assert_eq!(state(&encode_text(&registry).unwrap(), "openai").as_deref(), Some("1"));
    sink.record(change("gpt-4o-mini", CircuitState::Closed)).await.unwrap();
    let text = encode_text(&registry).unwrap();
    assert_eq!((state(&text, "openai").as_deref(), state(&text, "azure").as_deref()), (Some("0"), Some("0")));
    assert!(text.lines().any(|l| l == "# TYPE chitty_circuit_state gauge"), "{text}");
}

#[tokio::test]
async fn budget_remaining_is_a_gauge_for_known_tenants_only() {
    let mut registry = Registry::default();
    let sink = PrometheusSink::new(&mut registry, ["m"]).with_tenants(["acme"]);
    sink.set_budget_remaining("acme", NanoUsd(1_000_000_000));
    sink.set_budget_remaining("acme", NanoUsd(999_000_000));
    sink.set_budget_remaining("stranger", NanoUsd(5));
    let text = encode_text(&registry).unwrap();
    assert_eq!(
        samples(&text, "chitty_budget_remaining_nano_usd"),
        [r#"chitty_budget_remaining_nano_usd{tenant="acme"} 999000000"#]
    );
    assert!(text.lines().any(|l| l == "# TYPE chitty_budget_remaining_nano_usd gauge"), "{text}");
}

#[cfg(feature = "memory")]
#[tokio::test]
async fn refresh_reads_tenants_budgets_and_circuits_from_the_gateway() {
    use chitty_core::gateway::{Gateway, GatewayConfig, ModelConfig, RequestContext, RouteConfig, TenantConfig};
    use chitty_core::keys::CacheDirective;
    use chitty_core::wire::{ChatCompletionRequest, ChatMessage};
    use chitty_core::{ManualClock, ManualTimer, ModelPrice};
    use chitty_providers::memory::MemoryBudgetStore;
    use chitty_providers::runtime::TokioSpawner;
    use chitty_testkit::mock::MockProvider;

    let digest = chitty_core::gateway::api_key_digest;
    let config = GatewayConfig {
        models: vec![ModelConfig {
            routes: vec![RouteConfig::new("mock", "up")],
            price: ModelPrice::from_micros_per_mtok(1_000_000, 2_000_000),
            ..ModelConfig::new("m")
        }],
        tenants: vec![
            TenantConfig { budget_nano_usd: Some(NanoUsd::ONE_USD), ..TenantConfig::new("acme", &digest("sk-a")) },
            TenantConfig::new("unbudgeted", &digest("sk-u")),
        ],
        ..Default::default()
    };
    let clock = ManualClock::new(Timestamp(1_700_000_000_000));
    let gateway = Gateway::builder(config)
        .provider(Arc::new(MockProvider::new("mock")))
        .budgets(Arc::new(MemoryBudgetStore::new()))
        .runtime(Arc::new(clock.clone()), Arc::new(ManualTimer::new(clock.clone())), Arc::new(TokioSpawner))
        .build()
        .await
        .unwrap();
    let ctx = RequestContext::new(gateway.authenticate("sk-a").unwrap(), "req-1", CacheDirective::Default);
    let ask =
        ChatCompletionRequest { model: "m".into(), messages: vec![ChatMessage::user("spend")], ..Default::default() };
    let spent = gateway.chat(&ctx, ask).await.unwrap().meta.cost;
    assert!(spent > NanoUsd::ZERO);

    let mut registry = Registry::default();
    // Nothing known up front: refresh learns the tenants and the route from the gateway.
    let sink = PrometheusSink::new(&mut registry, ["m"]);
    sink.record(from("acme", "m", |_| {})).await.unwrap();
    sink.refresh(&gateway).await.unwrap();
    sink.record(from("acme", "m", |_| {})).await.unwrap();
    let text = encode_text(&registry).unwrap();
    assert_eq!(
        samples(&text, "chitty_budget_remaining_nano_usd"),
        [format!(r#"chitty_budget_remaining_nano_usd{{tenant="acme"}} {}"#, NanoUsd::ONE_USD.0 - spent.0)],
        "the limit minus what was spent, for budgeted tenants only: {text}"
    );
    assert_eq!(samples(&text, "chitty_circuit_state"), [r#"chitty_circuit_state{provider="mock"} 0"#]);
    let mut cost = samples(&text, "chitty_cost_nano_usd_total");
    cost.sort_unstable();
    assert_eq!(
        cost,
        [
            r#"chitty_cost_nano_usd_total{model="m",tenant="acme"} 100"#,
            r#"chitty_cost_nano_usd_total{model="m",tenant="other"} 100"#
        ],
        "before the refresh `acme` was unknown"
    );
}

#[test]
fn recording_a_request_allocates_nothing_but_the_boxed_future_once_its_series_exist() {
    let mut registry = Registry::default();
    let sink = PrometheusSink::new(&mut registry, ["m"]).with_tenants(["acme"]);
    let streamed = from("acme", "m", |r| {
        r.stream = true;
        r.time_to_first_token = Some(Duration::from_millis(4));
    });
    let refused = from("stranger", "unlisted", |r| {
        (r.status, r.cache, r.error_code) = (429, CacheStatus::Bypass, Some("rate_limit_exceeded"));
    });
    let hit = from("acme", "m", |r| r.cache = CacheStatus::Hit);
    // The first of each creates its series.
    for event in [streamed.clone(), refused.clone(), hit.clone()] {
        record_now(&sink, event);
    }
    let events: Vec<Event> = [streamed, refused, hit].into_iter().cycle().take(300).collect();
    let before = allocations();
    for event in events {
        record_now(&sink, event);
    }
    let allocated = allocations() - before;
    // async_trait boxes each call's future; the sink itself allocates nothing per event.
    assert_eq!(allocated, 300, "one boxed future per event and nothing else");
    let text = encode_text(&registry).unwrap();
    assert!(text.contains("chitty_rate_limited_total{tenant=\"other\"} 101\n"), "{text}");
}
