//! Rate limits, retries, conditional GETs, pagination and pacing.

use std::time::Duration;

use chitty_core::Clock;
use chitty_github::client::{ClientError, Method, RateLimitKind, RateLimitPolicy, RateLimitResource};
use chitty_testkit::github_api::Fault;
use serde_json::{Value, json};

use super::{Harness, START, api_status, jittered};

const CORE: RateLimitResource = RateLimitResource::CORE;

#[tokio::test]
async fn sends_githubs_headers_and_a_bearer_token() {
    let h = Harness::new().await;
    h.github.set_resource("/repos/o/r", json!({ "id": 1 }));
    h.repo().get::<Value>("/repos/o/r").await.unwrap();
    let get = h.rest_requests().pop().unwrap();
    assert_eq!(get.header("accept"), Some("application/vnd.github+json"));
    assert_eq!(get.header("x-github-api-version"), Some("2022-11-28"));
    assert_eq!(get.header("user-agent"), Some("chitty-tests"));
    assert!(get.credential().unwrap().starts_with("ghs_"));
    let snapshot = h.repo().rate_limit(&CORE).unwrap();
    assert_eq!((snapshot.limit, snapshot.remaining), (Some(5000), 4999));
}

#[tokio::test]
async fn enterprise_server_base_url_with_a_path_works() {
    let h = Harness::at_path("/api/v3", |_| {}).await;
    h.github.set_resource("/repos/o/r/issues", json!((0..150).collect::<Vec<_>>()));
    let items: Vec<u32> = h.repo().list("/repos/o/r/issues").await.unwrap();
    assert_eq!(items.len(), 150);
    assert_eq!(h.github.token_exchanges(super::INSTALLATION.0), 1);
    assert!(h.github.requests().iter().all(|r| r.path.starts_with("/api/v3/")));
}

#[tokio::test]
async fn a_spent_primary_budget_waits_for_the_reset_without_wasting_a_request() {
    let h = Harness::new().await;
    h.github.set_rate_limit(2);
    for n in 0..3 {
        h.github.set_resource(&format!("/repos/o/r/issues/{n}"), json!({ "number": n }));
    }
    h.repo().get::<Value>("/repos/o/r/issues/0").await.unwrap();
    h.repo().get::<Value>("/repos/o/r/issues/1").await.unwrap();
    assert_eq!(h.repo().rate_limit(&CORE).unwrap().remaining, 0);
    let reset = h.github.rate_limit_reset().unwrap();
    let third: Value = h.repo().get("/repos/o/r/issues/2").await.unwrap();
    assert_eq!(third["number"], 2);
    assert!(h.clock.now() >= reset, "waited for x-ratelimit-reset");
    assert!(h.clock.now() <= reset.plus(Duration::from_secs(2)));
    assert_eq!(h.rest_requests().len(), 3, "no request was spent on a 403");
}

#[tokio::test]
async fn an_unexpected_primary_limit_is_waited_out() {
    let h = Harness::new().await;
    h.github.set_resource("/repos/o/r", json!({ "id": 1 }));
    h.app.installation_token(super::INSTALLATION).await.unwrap();
    h.github.exhaust_rate_limit();
    h.repo().get::<Value>("/repos/o/r").await.unwrap();
    assert_eq!(h.github.count(Method::GET, "/repos/o/r"), 2, "one 403, then success after the reset");
    assert!(h.elapsed() >= Duration::from_secs(3600));
}

#[tokio::test]
async fn fail_fast_policy_reports_the_primary_limit_without_waiting() {
    let h = Harness::with_config(|c| c.rate_limit_policy = RateLimitPolicy::FailFast).await;
    h.github.set_resource("/repos/o/r", json!({ "id": 1 }));
    h.app.installation_token(super::INSTALLATION).await.unwrap();
    h.github.exhaust_rate_limit();
    let err = h.repo().get::<Value>("/repos/o/r").await.unwrap_err();
    let ClientError::RateLimited { kind, retry_after } = err else { panic!("{err:?}") };
    assert_eq!(kind, RateLimitKind::Primary);
    assert!(retry_after >= Duration::from_secs(3599) && retry_after <= Duration::from_secs(3601));
    assert_eq!(h.elapsed(), Duration::ZERO);
    // Known exhausted now: the next call fails without a request.
    let before = h.rest_requests().len();
    assert!(matches!(h.repo().get::<Value>("/repos/o/r").await, Err(ClientError::RateLimited { .. })));
    assert_eq!(h.rest_requests().len(), before);
    let core: chitty_core::Error = ClientError::RateLimited { kind, retry_after }.into();
    assert!(core.is_retryable());
}

#[tokio::test]
async fn a_wait_longer_than_the_policy_allows_fails() {
    let h = Harness::with_config(|c| c.rate_limit_policy = RateLimitPolicy::Wait { max_wait: Duration::from_secs(10) })
        .await;
    h.github.set_resource("/repos/o/r", json!({ "id": 1 }));
    h.github.inject(Fault::SecondaryRateLimit { status: 429, retry_after: Some(Duration::from_secs(30)) });
    let err = h.repo().get::<Value>("/repos/o/r").await.unwrap_err();
    assert!(matches!(err, ClientError::RateLimited { kind: RateLimitKind::Secondary, retry_after }
            if retry_after == Duration::from_secs(30)));
    assert_eq!(h.elapsed(), Duration::ZERO);
}

#[tokio::test]
async fn secondary_limit_honours_retry_after() {
    let h = Harness::new().await;
    h.github.set_resource("/repos/o/r", json!({ "id": 1 }));
    h.github.inject(Fault::SecondaryRateLimit { status: 403, retry_after: Some(Duration::from_secs(3)) });
    h.repo().get::<Value>("/repos/o/r").await.unwrap();
    assert_eq!(h.elapsed(), Duration::from_secs(3));
    assert_eq!(h.github.count(Method::GET, "/repos/o/r"), 2);
}

#[tokio::test]
async fn secondary_limit_without_hint_waits_a_minute_then_backs_off() {
    let h = Harness::new().await;
    h.github.set_resource("/repos/o/r", json!({ "id": 1 }));
    h.github.inject_on(None, None, Fault::SecondaryRateLimit { status: 429, retry_after: None }, 1);
    h.github.inject_on(None, None, Fault::SecondaryRateLimit { status: 403, retry_after: None }, 1);
    h.repo().get::<Value>("/repos/o/r").await.unwrap();
    assert_eq!(h.elapsed(), Duration::from_secs(60 + 120));
    assert_eq!(h.github.count(Method::GET, "/repos/o/r"), 3);
}

#[tokio::test]
async fn secondary_limit_retries_are_bounded() {
    let h = Harness::new().await;
    h.github.set_resource("/repos/o/r", json!({ "id": 1 }));
    h.github.inject_on(
        None,
        None,
        Fault::SecondaryRateLimit { status: 403, retry_after: Some(Duration::from_secs(1)) },
        100,
    );
    let err = h.repo().get::<Value>("/repos/o/r").await.unwrap_err();
    assert!(matches!(err, ClientError::RateLimited { kind: RateLimitKind::Secondary, .. }));
    assert_eq!(h.github.count(Method::GET, "/repos/o/r"), 4, "1 + 3 retries");
}

#[tokio::test]
async fn other_client_errors_are_not_retried() {
    let h = Harness::new().await;
    assert_eq!(api_status(h.repo().get::<Value>("/repos/o/missing").await), 404);
    assert_eq!(h.github.count(Method::GET, "/repos/o/missing"), 1);

    let invalid = h.repo().post::<_, Value>("/repos/o/r/issues/1/comments", &json!({ "text": "wrong field" })).await;
    let err = invalid.unwrap_err();
    assert!(matches!(&err, ClientError::Api { status: 422, message, .. } if message == "Validation Failed"));
    assert_eq!(h.github.count(Method::POST, "/repos/o/r/issues/1/comments"), 1);

    h.github.set_resource("/repos/o/r", json!({ "id": 1 }));
    h.github.inject(Fault::status(403, "Resource not accessible by integration"));
    assert_eq!(api_status(h.repo().get::<Value>("/repos/o/r").await), 403);
    assert_eq!(h.github.count(Method::GET, "/repos/o/r"), 1);
    assert_eq!(h.elapsed(), Duration::ZERO);
}

#[tokio::test]
async fn server_errors_are_retried_with_backoff_only_when_safe() {
    let h = Harness::new().await;
    h.github.set_resource("/repos/o/r", json!({ "id": 1 }));
    h.github.inject_on(Some(Method::GET), None, Fault::status(502, "Server Error"), 2);
    h.repo().get::<Value>("/repos/o/r").await.unwrap();
    assert_eq!(h.github.count(Method::GET, "/repos/o/r"), 3);
    let waited = jittered(Duration::from_secs(1), &[0, 1]);
    assert_eq!(h.elapsed(), waited, "full jitter drawn from the injected source");
    assert!(waited <= Duration::from_secs(1 + 2), "each wait is at most 1 s, then 2 s: {waited:?}");

    // A comment may have been posted despite the 502: never sent twice.
    h.github.inject(Fault::status(502, "Server Error"));
    let err = h.repo().create_comment("o", "r", 1, "hello").await.unwrap_err();
    assert_eq!(err.status(), Some(502));
    assert_eq!(h.github.count(Method::POST, "/repos/o/r/issues/1/comments"), 1);

    // Bounded for safe requests too.
    h.github.inject_on(Some(Method::GET), None, Fault::status(500, "boom"), 100);
    assert_eq!(api_status(h.repo().get::<Value>("/repos/o/r").await), 500);
    assert_eq!(h.github.count(Method::GET, "/repos/o/r"), 3 + 4);
}

#[tokio::test]
async fn conditional_get_serves_304_from_cache_without_spending_rate_limit() {
    let h = Harness::new().await;
    h.github.set_resource("/repos/o/r", json!({ "id": 1, "name": "r" }));
    let first = h.repo().fetch::<Value>("/repos/o/r").await.unwrap();
    assert!(!first.not_modified);
    let remaining = h.repo().rate_limit(&CORE).unwrap().remaining;

    let second = h.repo().fetch::<Value>("/repos/o/r").await.unwrap();
    assert!(second.not_modified);
    assert_eq!(second.value, first.value);
    assert_eq!(h.repo().rate_limit(&CORE).unwrap().remaining, remaining, "a 304 costs nothing");
    let revalidation = h.rest_requests().pop().unwrap();
    assert!(revalidation.header("if-none-match").is_some_and(|etag| etag.starts_with('"')));

    h.github.set_resource("/repos/o/r", json!({ "id": 1, "name": "renamed" }));
    let third = h.repo().fetch::<Value>("/repos/o/r").await.unwrap();
    assert!(!third.not_modified);
    assert_eq!(third.value["name"], "renamed");
}

#[tokio::test]
async fn etag_cache_can_be_turned_off() {
    let h = Harness::with_config(|c| c.etag_cache_bytes = 0).await;
    h.github.set_resource("/repos/o/r", json!({ "id": 1 }));
    h.repo().get::<Value>("/repos/o/r").await.unwrap();
    h.repo().get::<Value>("/repos/o/r").await.unwrap();
    assert!(h.rest_requests().iter().all(|r| r.header("if-none-match").is_none()));
}

#[tokio::test]
async fn list_follows_link_next_across_three_pages() {
    let h = Harness::new().await;
    let items: Vec<Value> = (0..250).map(|n| json!({ "number": n })).collect();
    h.github.set_resource("/repos/o/r/issues", Value::Array(items.clone()));
    let listed: Vec<Value> = h.repo().list("/repos/o/r/issues").await.unwrap();
    assert_eq!(listed, items);
    let queries: Vec<_> = h.rest_requests().into_iter().map(|r| r.query.unwrap_or_default()).collect();
    assert_eq!(queries, ["per_page=100", "per_page=100&page=2", "per_page=100&page=3"]);

    // Listed again: every page revalidates to a 304.
    let again: Vec<Value> = h.repo().list("/repos/o/r/issues").await.unwrap();
    assert_eq!(again, items);
    assert_eq!(h.rest_requests().iter().filter(|r| r.header("if-none-match").is_some()).count(), 3);
}

#[tokio::test]
async fn list_refuses_to_truncate_past_max_pages() {
    let h = Harness::with_config(|c| c.max_pages = 2).await;
    h.github.set_resource("/repos/o/r/issues", json!((0..30).collect::<Vec<_>>()));
    let err = h.repo().list::<u32>("/repos/o/r/issues?per_page=10").await.unwrap_err();
    assert!(matches!(err, ClientError::InvalidResponse { .. }), "{err:?}");
    let ok: Vec<u32> = h.repo().list("/repos/o/r/issues?per_page=15").await.unwrap();
    assert_eq!(ok.len(), 30);
}

#[tokio::test]
async fn mutations_of_an_installation_are_paced_and_reads_are_not() {
    let h = Harness::new().await;
    h.github.set_resource("/repos/o/r", json!({ "id": 1 }));
    for n in 0..3 {
        h.repo().create_comment("o", "r", 1, &format!("comment {n}")).await.unwrap();
        h.repo().get::<Value>("/repos/o/r").await.unwrap();
    }
    let posts: Vec<_> = h.rest_requests().into_iter().filter(|r| r.method == Method::POST).collect();
    assert_eq!(posts.len(), 3);
    for pair in posts.windows(2) {
        assert!(pair[1].at.since(pair[0].at) >= Duration::from_secs(1), "{:?} then {:?}", pair[0].at, pair[1].at);
    }
    assert_eq!(h.elapsed(), Duration::from_secs(2), "only the mutations waited");

    // Another installation has its own pace.
    let other = h.app.installation(chitty_github::client::InstallationId(7));
    other.create_comment("o", "r", 2, "x").await.unwrap();
    assert_eq!(h.elapsed(), Duration::from_secs(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_mutations_are_serialised_and_spaced() {
    let h = Harness::with_config(|c| c.mutation_interval = Duration::from_millis(1500)).await;
    let tasks: Vec<_> = (0..4)
        .map(|n| {
            let repo = h.repo();
            tokio::spawn(async move { repo.create_comment("o", "r", 1, &format!("c{n}")).await })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let mut times: Vec<_> = h.rest_requests().into_iter().map(|r| r.at).collect();
    times.sort();
    assert_eq!(times.len(), 4);
    for pair in times.windows(2) {
        assert!(pair[1].since(pair[0]) >= Duration::from_millis(1500));
    }
    assert!(h.clock.now() >= START.plus(Duration::from_millis(4500)));
}

#[tokio::test]
async fn bodiless_mutations_send_content_length_zero() {
    // The mock answers 411 to a POST, PUT or PATCH with neither a body nor `Content-Length: 0`.
    let h = Harness::new().await;
    h.github.set_resource("/repos/o/r/issues/1", json!({ "number": 1, "locked": false }));
    h.app.installation_token(super::INSTALLATION).await.unwrap();
    h.repo().send::<(), ()>(Method::PUT, "/repos/o/r/issues/1/lock", None).await.unwrap();
    assert_eq!(h.github.resource("/repos/o/r/issues/1").unwrap()["locked"], true);
    for sent in h.github.requests() {
        if sent.method != Method::GET {
            assert_eq!(sent.header("content-length"), Some("0"), "{} {}", sent.method, sent.path);
        }
    }
}

#[tokio::test]
async fn a_spent_search_budget_does_not_hold_back_core_requests() {
    let wait = RateLimitPolicy::Wait { max_wait: Duration::from_secs(3600) };
    for policy in [wait, RateLimitPolicy::FailFast] {
        let h = Harness::with_config(|c| c.rate_limit_policy = policy).await;
        h.github.set_rate_limit_of("search", 1);
        h.github.set_resource("/search/issues", json!({ "total_count": 0, "incomplete_results": false, "items": [] }));
        h.github.set_resource("/repos/o/r", json!({ "id": 1 }));
        h.repo().get::<Value>("/search/issues?q=is%3Aopen").await.unwrap();
        let repo: Value = h.repo().get("/repos/o/r").await.unwrap();
        assert_eq!(repo["id"], 1, "{policy:?}");
        assert_eq!(h.elapsed(), Duration::ZERO, "{policy:?}: a core request waited for the search bucket");
        // Each bucket reports its own numbers.
        let core = h.repo().rate_limit(&CORE).unwrap();
        assert_eq!((core.limit, core.remaining), (Some(5000), 4999));
        let search = h.repo().rate_limit(&RateLimitResource::SEARCH).unwrap();
        assert_eq!((search.limit, search.remaining), (Some(1), 0));
        assert_eq!(h.repo().rate_limit(&RateLimitResource::CODE_SEARCH), None);
    }
}

#[tokio::test]
async fn a_spent_core_budget_holds_back_core_requests_only() {
    let h = Harness::new().await;
    h.github.set_rate_limit(1);
    h.github.set_rate_limit_of("search", 1);
    h.github.set_resource("/search/issues", json!({ "total_count": 0, "incomplete_results": false, "items": [] }));
    h.github.set_resource("/repos/o/r", json!({ "id": 1 }));
    h.github.set_resource("/repos/o/r/issues/1", json!({ "number": 1 }));
    h.repo().get::<Value>("/repos/o/r").await.unwrap();
    let core_reset = h.github.rate_limit_reset().unwrap();

    // Core is spent; a search goes at once.
    h.repo().get::<Value>("/search/issues?q=a").await.unwrap();
    assert_eq!(h.elapsed(), Duration::ZERO, "a search waited for the core bucket");

    // Search is spent too: the next search waits for its own (one-minute) reset, not core's.
    let search_reset = h.github.rate_limit_reset_of("search").unwrap();
    h.repo().get::<Value>("/search/issues?q=b").await.unwrap();
    assert!(h.clock.now() >= search_reset && h.clock.now() < core_reset, "{:?}", h.elapsed());

    // A core request still waits for core's reset, without spending a request on a 403.
    h.repo().get::<Value>("/repos/o/r/issues/1").await.unwrap();
    assert!(h.clock.now() >= core_reset && h.clock.now() <= core_reset.plus(Duration::from_secs(2)));
    assert_eq!(h.github.count(Method::GET, "/search/issues"), 2);
    assert_eq!(h.github.count(Method::GET, "/repos/o/r/issues/1"), 1);
}

#[tokio::test]
async fn validation_errors_say_which_field() {
    let h = Harness::new().await;
    let err = h.repo().post::<_, Value>("/repos/o/r/issues/1/comments", &json!({ "text": "wrong field" })).await;
    let err = err.unwrap_err();
    let shown = err.to_string();
    assert!(
        shown.contains("Validation Failed") && shown.contains("body") && shown.contains("missing_field"),
        "{shown}"
    );
    let ClientError::Api { status: 422, errors, .. } = err else { panic!("{err:?}") };
    let [detail] = errors.as_slice() else { panic!("{errors:?}") };
    assert_eq!(
        (detail.resource.as_deref(), detail.field.as_deref(), detail.code.as_deref(), detail.message.as_deref()),
        (Some("Request"), Some("body"), Some("missing_field"), None)
    );
}
