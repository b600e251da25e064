//! The Prometheus sink: recorded events show up in the exposition text with exact values, bounded labels.
#![cfg(feature = "prometheus")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use chitty_core::{CacheStatus, Endpoint, Event, EventSink, NanoUsd, RequestEvent, Timestamp};
use chitty_providers::prometheus::{PrometheusSink, Registry, encode_text};
use chitty_testkit::events;

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
    })
}

/// The sample lines of `metric` (its name followed by `{` or a space), in order.
fn samples<'a>(text: &'a str, metric: &str) -> Vec<&'a str> {
    text.lines().filter(|l| l.strip_prefix(metric).is_some_and(|rest| rest.starts_with(['{', ' ']))).collect()
}

#[tokio::test]
async fn exposition_has_exact_counts_types_and_other_bucketing() {
    let mut registry = Registry::default();
    let sink = PrometheusSink::new(&mut registry, ["gpt-4o-mini", "claude-sonnet"]);
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
            r#"chitty_requests_total{model="claude-sonnet",endpoint="chat.completions",status="200",cache="miss"} 1"#,
            r#"chitty_requests_total{model="gpt-4o-mini",endpoint="chat.completions",status="200",cache="hit"} 1"#,
            r#"chitty_requests_total{model="gpt-4o-mini",endpoint="chat.completions",status="200",cache="miss"} 2"#,
            r#"chitty_requests_total{model="other",endpoint="chat.completions",status="404",cache="bypass"} 2"#,
        ],
        "{text}"
    );
    assert!(!text.contains("made-up") && !text.contains("junk"), "unlisted model names never become labels");

    let mut tokens = samples(&text, "chitty_tokens_total");
    tokens.sort_unstable();
    assert_eq!(
        tokens,
        [
            r#"chitty_tokens_total{model="claude-sonnet",kind="completion"} 5"#,
            r#"chitty_tokens_total{model="claude-sonnet",kind="prompt"} 10"#,
            r#"chitty_tokens_total{model="gpt-4o-mini",kind="completion"} 15"#,
            r#"chitty_tokens_total{model="gpt-4o-mini",kind="prompt"} 30"#,
            r#"chitty_tokens_total{model="other",kind="completion"} 10"#,
            r#"chitty_tokens_total{model="other",kind="prompt"} 20"#,
        ]
    );
    let mut cost = samples(&text, "chitty_cost_nano_usd_total");
    cost.sort_unstable();
    assert_eq!(
        cost,
        [
            r#"chitty_cost_nano_usd_total{model="claude-sonnet"} 7"#,
            r#"chitty_cost_nano_usd_total{model="gpt-4o-mini"} 4000"#,
            r#"chitty_cost_nano_usd_total{model="other"} 0"#,
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
        [r#"chitty_requests_total{model="other",endpoint="chat.completions",status="200",cache="miss"} 1000"#]
    );
    assert_eq!(samples(&text, "chitty_cost_nano_usd_total"), [r#"chitty_cost_nano_usd_total{model="other"} 1000"#]);
}

#[tokio::test]
async fn each_endpoint_has_its_own_duration_series_and_clones_share_them() {
    let mut registry = Registry::default();
    let sink = PrometheusSink::new(&mut registry, ["m"]);
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
    assert_eq!(samples(&text, "chitty_cost_nano_usd_total"), [r#"chitty_cost_nano_usd_total{model="m"} 4"#]);
    let mut tokens = samples(&text, "chitty_tokens_total");
    tokens.sort_unstable();
    assert_eq!(
        tokens,
        [
            r#"chitty_tokens_total{model="m",kind="completion"} 20"#,
            r#"chitty_tokens_total{model="m",kind="prompt"} 40"#
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink_conformance_and_concurrent_writers_count_exactly() {
    let mut registry = Registry::default();
    let sink = Arc::new(PrometheusSink::new(&mut registry, ["chitty-mock"]));
    events::accepts_every_kind(sink.as_ref()).await;
    events::concurrent_writers(sink.clone() as Arc<dyn EventSink>, 8, 100).await;
    let text = encode_text(&registry).unwrap();
    // One sample of each of the four kinds, then 8 writers × 100 events cycling through them.
    let n = 1 + 8 * 25;
    assert_eq!(
        samples(&text, "chitty_requests_total"),
        [format!(
            r#"chitty_requests_total{{model="chitty-mock",endpoint="chat.completions",status="200",cache="miss"}} {n}"#
        )]
    );
    assert!(text.contains(&format!("chitty_tokens_total{{model=\"chitty-mock\",kind=\"prompt\"}} {}\n", 42 * n)));
    assert!(text.contains(&format!("chitty_cost_nano_usd_total{{model=\"chitty-mock\"}} {}\n", 1_234 * n)));
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
            r#"chitty_requests_total{model="gpt-4o-mini",endpoint="chat.completions",status="200",cache="hit"} 1"#
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
