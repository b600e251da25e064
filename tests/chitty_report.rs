//! The `chitty-report` binary over a log written by the real `JsonLinesSink`: per-tenant spend, hit rate and
//! the savings of a router rule computed here independently; malformed lines; the `--json` shape; filters;
//! exit code 2 for a missing log or a bad configuration.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use chitty::core::{CacheStatus, Endpoint, Event, EventSink, NanoUsd, RequestEvent, Timestamp};
use chitty::providers::request_log::JsonLinesSink;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_chitty-report");

/// 2025-06-15T15:06:40Z.
const T0: u64 = 1_750_000_000_000;

// Prices in micro-USD per million tokens, as in CONFIG below.
const SMALL: (u64, u64) = (150_000, 600_000);
const LARGE: (u64, u64) = (2_500_000, 10_000_000);

const CONFIG: &str = r#"
[[providers]]
name = "up"
kind = "openai"
base_url = "http://127.0.0.1:9"

[[models]]
name = "small"
routes = [{ provider = "up", model = "s" }]
price = { input = "0.15", output = "0.60" }

[[models]]
name = "large"
routes = [{ provider = "up", model = "l" }]
price = { input = "2.50", output = "10" }
"#;

const ROUTER: &str = r#"
name = "auto"
candidates = [{ model = "small" }, { model = "large" }]

[[rules]]
name = "short"
when = { prompt_tokens_at_most = 1000 }
model = "small"

[[rules]]
name = "tools"
when = { tools = true }
at_least = "large"
"#;

/// Cost in nano-USD, computed here without chitty's pricing code: each part rounded up.
fn cost((input, output): (u64, u64), prompt: u64, completion: u64) -> u64 {
    // micro-USD per Mtok × 1000 = nano-USD per Mtok; per token / 10⁶, rounded up.
    (prompt * input * 1000).div_ceil(1_000_000) + (completion * output * 1000).div_ceil(1_000_000)
}

struct Case {
    dir: tempfile::TempDir,
}

impl Case {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn run(&self, extra: &[&str]) -> Output {
        let mut cmd = Command::new(BIN);
        cmd.arg(self.path("events.jsonl"))
            .arg("--config")
            .arg(self.path("gateway.toml"))
            .arg("--router")
            .arg(self.path("router.toml"))
            .args(extra);
        cmd.output().unwrap()
    }

    fn json(&self, extra: &[&str]) -> Value {
        let out = self.run(&[&["--json"], extra].concat());
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

#[allow(clippy::too_many_arguments)]
fn request(at: u64, tenant: &str, model: &str, status: u16, cache: CacheStatus, p: u64, c: u64, cost: u64) -> Event {
    Event::Request(RequestEvent {
        at: Timestamp(at),
        request_id: format!("r{at}"),
        tenant: tenant.into(),
        key_id: None,
        model: model.into(),
        endpoint: Endpoint::ChatCompletions,
        provider: Some("up".into()),
        cache,
        status,
        latency: Duration::from_millis(20),
        prompt_tokens: p,
        completion_tokens: c,
        cost: NanoUsd(cost),
        stream: false,
        error_code: (status == 429).then_some("insufficient_quota"),
        route_index: (status == 200).then_some(0),
        time_to_first_token: None,
        overhead: Duration::from_micros(50),
        attempts: 1,
        continuations: 0,
        router: None,
    })
}

/// The log, written by the gateway's own sink.
fn case() -> Case {
    let dir = tempfile::tempdir().unwrap();
    let case = Case { dir };
    std::fs::write(case.path("gateway.toml"), CONFIG).unwrap();
    std::fs::write(case.path("router.toml"), ROUTER).unwrap();
    let events = vec![
        // acme: one short request on large (a candidate), one long (stays), one cache hit, one on small.
        request(T0, "acme", "large", 200, CacheStatus::Miss, 100, 50, cost(LARGE, 100, 50)),
        request(T0 + 1, "acme", "large", 200, CacheStatus::Miss, 5_000, 100, cost(LARGE, 5_000, 100)),
        request(T0 + 2, "acme", "large", 200, CacheStatus::Hit, 100, 50, 0),
        request(T0 + 3, "acme", "small", 200, CacheStatus::Bypass, 200, 20, cost(SMALL, 200, 20)),
        Event::Fallback { model: "large".into(), from_model: "up/l".into(), to_model: "up/l2".into() },
        // beta, ten seconds later: a short request at the rule's bound (a candidate), and a refusal.
        request(T0 + 10_000, "beta", "large", 200, CacheStatus::Miss, 1_000, 1, cost(LARGE, 1_000, 1)),
        request(T0 + 10_001, "beta", "large", 429, CacheStatus::Bypass, 0, 0, 0),
    ];
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let sink = JsonLinesSink::create(&case.path("events.jsonl"), 100).unwrap();
    rt.block_on(async {
        for e in events {
            sink.record(e).await.unwrap();
        }
    });
    drop(sink);
    case
}

fn row<'a>(report: &'a Value, tenant: &str, model: &str) -> &'a Value {
    report["rows"].as_array().unwrap().iter().find(|r| r["tenant"] == tenant && r["model"] == model).unwrap()
}

fn tenant<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["tenants"].as_array().unwrap().iter().find(|r| r["tenant"] == name).unwrap()
}

#[test]
fn spend_hit_rate_and_savings_per_tenant() {
    let case = case();
    let report = case.json(&[]);
    let acme_spend = cost(LARGE, 100, 50) + cost(LARGE, 5_000, 100) + cost(SMALL, 200, 20);
    let beta_spend = cost(LARGE, 1_000, 1);
    assert_eq!(tenant(&report, "acme")["spend_nano_usd"], acme_spend);
    assert_eq!(tenant(&report, "beta")["spend_nano_usd"], beta_spend);
    assert_eq!(report["total"]["spend_nano_usd"], acme_spend + beta_spend);
    assert_eq!(report["total"]["requests"], 6);
    assert_eq!(tenant(&report, "beta")["errors"], 1);
    // acme: one hit and two misses (the bypass is not a lookup).
    let rate = tenant(&report, "acme")["cache_hit_rate"].as_f64().unwrap();
    assert!((rate - 1.0 / 3.0).abs() < 1e-12, "{rate}");
    assert_eq!(row(&report, "acme", "large")["cache_hits"], 1);
    assert_eq!(row(&report, "acme", "small")["cache_hit_rate"], Value::Null);

    // Savings: acme's 100-token request and beta's 1,000-token request move to small.
    let acme_saving = cost(LARGE, 100, 50) - cost(SMALL, 100, 50);
    let beta_saving = cost(LARGE, 1_000, 1) - cost(SMALL, 1_000, 1);
    let acme_large = &row(&report, "acme", "large")["savings"];
    assert_eq!(acme_large["requests"], 1);
    assert_eq!(acme_large["saving_nano_usd"], acme_saving);
    assert_eq!(acme_large["repriced_nano_usd"], cost(SMALL, 100, 50));
    assert_eq!(acme_large["to_models"]["small"], 1);
    assert!((acme_large["share"].as_f64().unwrap() - 1.0 / 3.0).abs() < 1e-12);
    assert_eq!(tenant(&report, "beta")["savings"]["saving_nano_usd"], beta_saving);
    assert_eq!(tenant(&report, "beta")["savings"]["share"], 0.5);
    let total = &report["total"]["savings"];
    assert_eq!(total["saving_nano_usd"], acme_saving + beta_saving);
    assert_eq!((total["requests"].as_u64(), total["share"].as_f64()), (Some(2), Some(2.0 / 6.0)));
    // The dollar strings are exact.
    let usd =
        format!("{}.{:09}", (acme_saving + beta_saving) / 1_000_000_000, (acme_saving + beta_saving) % 1_000_000_000);
    assert_eq!(total["saving_usd"], usd);

    assert_eq!(report["router"]["unevaluated_rules"], serde_json::json!(["tools"]));
    assert_eq!(report["router"]["evaluated_rules"], serde_json::json!(["short"]));
    assert_eq!((report["lines"]["read"].as_u64(), report["lines"]["other"].as_u64()), (Some(7), Some(1)));
    assert_eq!(report["lines"]["skipped"], 0);

    // The table says the same.
    let out = case.run(&[]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let usd_spend = (acme_spend + beta_spend) as f64 / 1e9;
    assert!(text.contains(&format!("{usd_spend:.9}")), "{text}");
    assert!(text.contains("2 requests would move to a cheaper model"), "{text}");
    assert!(text.contains("never fire): tools"), "{text}");
    assert!(text.contains("0 lines skipped"), "{text}");
}

#[test]
fn json_shape_is_stable() {
    let report = case().json(&[]);
    let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(&report), ["first_skipped", "lines", "router", "rows", "tenants", "total"]);
    let totals = [
        "cache_bypass",
        "cache_hit_rate",
        "cache_hits",
        "cache_misses",
        "completion_tokens",
        "errors",
        "prompt_tokens",
        "requests",
        "savings",
        "spend_nano_usd",
        "spend_usd",
    ];
    let mut row_keys: Vec<&str> = totals.to_vec();
    row_keys.extend(["model", "tenant"]);
    row_keys.sort();
    assert_eq!(keys(&report["rows"][0]), row_keys);
    assert_eq!(keys(&report["total"]), totals);
    assert_eq!(
        keys(&report["total"]["savings"]),
        ["logged_nano_usd", "repriced_nano_usd", "requests", "saving_nano_usd", "saving_usd", "share", "to_models"]
    );
    assert_eq!(keys(&report["lines"]), ["filtered_out", "other", "read", "requests", "skipped"]);
}

#[test]
fn malformed_lines_are_counted_not_fatal() {
    let case = case();
    let before = case.json(&[]);
    let mut log = std::fs::read(case.path("events.jsonl")).unwrap();
    log.extend_from_slice(b"not json at all\n{\"kind\":\"request\",\"tenant\":\"acme\"}\n\xff\xfe\n{\"kind\":\"req");
    std::fs::write(case.path("events.jsonl"), log).unwrap();
    let out = case.run(&["--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("4 lines skipped"));
    let after: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(after["lines"]["skipped"], 4);
    assert_eq!(after["first_skipped"][0]["line"], 8);
    assert_eq!(after["total"], before["total"]);
}

#[test]
fn since_until_and_tenant_filter() {
    let case = case();
    let report = case.json(&["--since", "2025-06-15T15:06:45Z"]);
    assert_eq!(report["total"]["requests"], 2);
    assert_eq!(report["lines"]["filtered_out"], 4);
    let report = case.json(&["--until", "2025-06-15T15:06:45Z", "--tenant", "acme"]);
    assert_eq!(report["total"]["requests"], 4);
    let report = case.json(&["--tenant", "beta"]);
    assert_eq!(report["tenants"].as_array().unwrap().len(), 1);
    assert_eq!(report["total"]["spend_nano_usd"], cost(LARGE, 1_000, 1));
    let out = case.run(&["--since", "yesterday"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn missing_log_and_bad_config_exit_2() {
    let case = case();
    let missing = Command::new(BIN).arg(case.path("nope.jsonl")).output().unwrap();
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("cannot read the log"));

    std::fs::write(case.path("gateway.toml"), "[[models]]\nname = 3\n").unwrap();
    let out = case.run(&[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("configuration"), "{}", String::from_utf8_lossy(&out.stderr));

    std::fs::write(case.path("gateway.toml"), CONFIG).unwrap();
    std::fs::write(case.path("router.toml"), ROUTER.replace("\"small\" }", "\"tiny\" }")).unwrap();
    let out = case.run(&[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown model `tiny`"));
}

#[test]
fn help_names_every_option_and_version_prints() {
    let help = Command::new(BIN).arg("--help").output().unwrap();
    let text = String::from_utf8(help.stdout).unwrap();
    for option in ["--config", "--router", "--since", "--until", "--tenant", "--json", "--version", "<LOG>"] {
        assert!(text.contains(option), "{option} missing from\n{text}");
    }
    let version = Command::new(BIN).arg("--version").output().unwrap();
    assert!(String::from_utf8(version.stdout).unwrap().starts_with("chitty-report "));
}
