//! The product's four benchmark scenarios (issue 19), through the HTTP gateway against mock upstreams that
//! behave like real ones (300 ms to the first token, ~30 tokens/s, prices of two real tiers: gpt-4o-mini
//! $0.15/$0.60 and gpt-4o $2.50/$10.00 per million input/output tokens). Each scenario prints a Markdown
//! table and writes `docs/img/bench-<scenario>.svg`.
//!
//! ```sh
//! scripts/bench-report.sh [cache|mixed|fallback|budget|all]
//! cargo bench --bench report -- cache        # one scenario, what the script runs
//! ```
//!
//! Each run starts its gateways in this process from TOML (`chitty_providers::config::GatewayFile`, one serving
//! thread each) and its mock upstreams on loopback. The configurations use the keys of issue 19 as written
//! (`cache = "semantic"`, `continue_streams`, `deadline_ms`, `retry_budget`, `[[routers]]`); when this build's
//! gateway does not know one yet, the scenario runs without it where it still means something and says so,
//! or reports that it cannot run.
//!
//! Settings (environment): `CACHE_REQUESTS` (10000), `CACHE_CONCURRENCY` (8), `MIXED_REQUESTS` (2000),
//! `MIXED_CONCURRENCY` (32), `FALLBACK_REQUESTS` (2000 per phase), `FALLBACK_CONCURRENCY` (64),
//! `BUDGET_REQUESTS` (2000, all at once), `BUDGET_WAVES` (5), `REDIS_URL` (`redis://127.0.0.1:6379`), `SEED` (19).

// A benchmark that cannot set itself up has nothing to measure: it stops with the reason.
#![allow(clippy::expect_used)]

mod chart;
mod load;
mod scenarios;

use std::path::PathBuf;

use load::BoxError;

/// Where the charts go.
fn image_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs").join("img")
}

/// A number from the environment, or `default`.
fn setting(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

const SCENARIOS: [&str; 4] = ["cache", "mixed", "fallback", "budget"];

fn main() -> std::process::ExitCode {
    // `cargo bench` passes `--bench`; everything else names scenarios.
    let mut chosen: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    if chosen.is_empty() || chosen.iter().any(|c| c == "all") {
        chosen = SCENARIOS.iter().map(|s| (*s).to_owned()).collect();
    }
    if let Some(unknown) = chosen.iter().find(|c| !SCENARIOS.contains(&c.as_str())) {
        eprintln!("report: unknown scenario `{unknown}` (cache, mixed, fallback, budget, all)");
        return std::process::ExitCode::from(2);
    }
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("a Tokio runtime");
    let mut failed = false;
    for scenario in &chosen {
        let outcome: Result<(), BoxError> = runtime.block_on(async {
            match scenario.as_str() {
                "cache" => scenarios::cache().await,
                "mixed" => scenarios::mixed().await,
                "fallback" => scenarios::fallback().await,
                _ => scenarios::budget().await,
            }
        });
        if let Err(e) = outcome {
            eprintln!("report: scenario {scenario} failed: {e}");
            failed = true;
        }
    }
    if failed { std::process::ExitCode::FAILURE } else { std::process::ExitCode::SUCCESS }
}
