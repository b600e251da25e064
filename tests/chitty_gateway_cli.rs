//! The `chitty-gateway` binary: `--version`, `--check` on a good and a bad file, and serving a chat completion
//! from a configuration file alone.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;

use chitty::core::gateway::api_key_digest;
use chitty_testkit::mock::MockProvider;
use chitty_testkit::mock_upstream::MockOpenAi;

const BIN: &str = env!("CARGO_BIN_EXE_chitty-gateway");

/// Kills the gateway when the test ends, passed or not.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn config(upstream: &str, route_provider: &str) -> String {
    format!(
        r#"
[server]
addr = "127.0.0.1:0"
workers = 1

[[providers]]
name = "up"
kind = "openai"
base_url = "{upstream}"

[[models]]
name = "chat"
routes = [{{ provider = "{route_provider}", model = "mock-chat" }}]
price = {{ input = "1", output = "2" }}

[[tenants]]
id = "t"
key_sha256 = ["{}"]
budget_usd = "1"
"#,
        api_key_digest("sk-cli")
    )
}

fn run(args: &[&str], file: &tempfile::NamedTempFile) -> Output {
    Command::new(BIN).args(args).arg("--config").arg(file.path()).output().unwrap()
}

fn file_with(text: &str) -> tempfile::NamedTempFile {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), text).unwrap();
    file
}

#[test]
fn version_and_check() {
    let version = Command::new(BIN).arg("--version").output().unwrap();
    assert!(version.status.success());
    assert_eq!(
        String::from_utf8_lossy(&version.stdout).trim(),
        format!("chitty-gateway {}", env!("CARGO_PKG_VERSION"))
    );

    let good = run(&["--check"], &file_with(&config("http://127.0.0.1:9/v1", "up")));
    assert!(good.status.success(), "{}", String::from_utf8_lossy(&good.stderr));
    let said = String::from_utf8_lossy(&good.stdout);
    assert!(said.contains("ok (1 providers, 1 models, 0 prefixes, 1 tenants)"), "{said}");

    let bad = run(&["--check"], &file_with(&config("http://127.0.0.1:9/v1", "ghost")));
    assert!(!bad.status.success());
    let said = String::from_utf8_lossy(&bad.stderr);
    assert!(said.contains("models[0].routes[0].provider") && said.contains("ghost"), "{said}");

    let missing = Command::new(BIN).args(["--check", "--config", "/nonexistent/chitty.toml"]).output().unwrap();
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("/nonexistent/chitty.toml"));
}

#[tokio::test]
async fn serves_from_the_file_alone() {
    let upstream = MockOpenAi::serve(Arc::new(MockProvider::new("mock"))).await.unwrap();
    let events = tempfile::NamedTempFile::new().unwrap();
    let text = config(upstream.base_url(), "up").replace(
        "workers = 1",
        &format!("workers = 1\nrequest_log = true\nevent_log = {:?}", events.path().display().to_string()),
    );
    let file = file_with(&text);
    let mut child = Command::new(BIN)
        .args(["--log-format", "json", "--config"])
        .arg(file.path())
        .env("RUST_LOG", "warn,chitty::request=info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut gateway = Running(child);
    let base = line.trim().strip_prefix("listening on ").unwrap_or_else(|| panic!("unexpected first line {line:?}"));

    let client = reqwest::Client::new();
    let ready = client.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let answer = client
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth("sk-cli")
        .json(&serde_json::json!({"model": "chat", "messages": [{"role": "user", "content": "hello"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    assert!(answer.headers().contains_key("x-chitty-cost-nano-usd"), "budgets are on: the cost is reported");
    let body: serde_json::Value = answer.json().await.unwrap();
    assert_eq!(body["model"], "mock-chat");
    let refused = client.post(format!("{base}/v1/chat/completions")).bearer_auth("sk-wrong").send().await.unwrap();
    assert_eq!(refused.status(), 401);

    // The event log's writer thread writes soon after the answer, not before it: wait for it, then stop.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !std::fs::read_to_string(events.path()).unwrap().contains("\"kind\":\"request\"") {
        assert!(std::time::Instant::now() < deadline, "the event log never got the request");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }

    // One JSON log line for the finished request, with its id and cost, and no key anywhere.
    let _ = gateway.0.kill();
    let _ = gateway.0.wait();
    let mut logs = String::new();
    std::io::Read::read_to_string(&mut BufReader::new(stderr), &mut logs).unwrap();
    let requests: Vec<serde_json::Value> = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|l| l["target"] == "chitty::request")
        .collect();
    assert_eq!(requests.len(), 1, "{logs}");
    let logged = &requests[0];
    assert_eq!(
        (logged["tenant"].as_str(), logged["model"].as_str(), logged["status"].as_u64()),
        (Some("t"), Some("chat"), Some(200))
    );
    assert_eq!(logged["cache"], "bypass", "not cacheable: no temperature 0");
    assert!(logged["cost_nano_usd"].as_u64().is_some_and(|c| c > 0), "{logged}");
    assert!(logged["request_id"].as_str().is_some_and(|id| !id.is_empty()), "{logged}");
    assert!(!logs.contains("sk-cli") && !logs.contains("sk-wrong") && !logs.contains("hello"), "{logs}");

    // The same request in the JSON-lines event log (`server.event_log`).
    let written = std::fs::read_to_string(events.path()).unwrap();
    let lines: Vec<serde_json::Value> = written.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let request = lines.iter().find(|l| l["kind"] == "request").unwrap_or_else(|| panic!("{written}"));
    assert_eq!((request["model"].as_str(), &request["request_id"]), (Some("chat"), &logged["request_id"]));
    assert_eq!(request["cost_nano_usd"], logged["cost_nano_usd"]);
}
