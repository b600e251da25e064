//! The `custom_provider` example as a program: it serves, and a chat through it, plain and streamed, reaches
//! the echo provider and is charged from its usage.
//!
//! The binary is `target/<profile>/examples/custom_provider`, which `cargo test` builds along with this test.
//! Selecting this test alone does not build it: `cargo build --example custom_provider` first.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// Kills the example when the test ends, passed or not.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the example on a free port and returns it with its base URL.
fn start_example() -> (Running, String) {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(Path::parent).unwrap();
    let bin = profile_dir.join("examples").join(format!("custom_provider{}", std::env::consts::EXE_SUFFIX));
    assert!(bin.is_file(), "{} is missing: `cargo build --example custom_provider` builds it", bin.display());
    let mut child =
        Command::new(bin).env("CHITTY_ADDR", "127.0.0.1:0").stdout(Stdio::piped()).spawn().expect("the example starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let running = Running(child);
    let url = line.trim().strip_prefix("listening on ").unwrap_or_else(|| panic!("unexpected first line {line:?}"));
    (running, url.to_owned())
}

#[tokio::test]
async fn the_example_serves_its_own_provider_plain_and_streamed() {
    let (_example, url) = start_example();
    let client = reqwest::Client::new();
    let chat = |stream: bool| {
        client.post(format!("{url}/v1/chat/completions")).bearer_auth("sk-echo").json(&serde_json::json!({
            "model": "echo", "stream": stream, "messages": [{"role": "user", "content": "hello there gateway"}]
        }))
    };

    let response = chat(false).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let answer: serde_json::Value = response.json().await.unwrap();
    assert_eq!(answer["choices"][0]["message"]["content"], "echo: hello there gateway");
    assert_eq!(answer["model"], "echo-rules", "the upstream model the route names");
    assert_eq!(answer["usage"]["total_tokens"], 3 + 4);

    let streamed = chat(true).send().await.unwrap();
    assert_eq!(streamed.status(), 200);
    let text = streamed.text().await.unwrap();
    let words: String = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|data| serde_json::from_str::<serde_json::Value>(data).ok())
        .filter_map(|chunk| chunk["choices"][0]["delta"]["content"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(words, "echo: hello there gateway", "{text}");
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");

    let refused = client.post(format!("{url}/v1/chat/completions")).bearer_auth("sk-wrong").send().await.unwrap();
    assert_eq!(refused.status(), 401);
}
