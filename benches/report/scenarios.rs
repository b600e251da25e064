//! The four scenarios: cache, mixed 70/20/10 through the smart router, fallback, budget.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use rand::SeedableRng;
use rand::rngs::SmallRng;
use serde_json::json;

use crate::load::{self, ADMIN_KEY, BoxError, Gateway, Outcome, percentile_ms};
use crate::{chart, image_dir, setting};

/// gpt-4o-mini's price, $ per million input and output tokens.
const MINI: (f64, f64) = (0.15, 0.60);
/// gpt-4o's price.
const LARGE: (f64, f64) = (2.50, 10.00);
/// Marks a configuration line that only issue 19's features read: dropped when this build refuses it.
const NEW: &str = "# issue-19";

const TOPICS: [&str; 20] = [
    "TCP congestion control",
    "the Rust borrow checker",
    "PostgreSQL vacuum",
    "Kubernetes pod scheduling",
    "Redis eviction",
    "TLS handshakes",
    "garbage collection",
    "B-tree indexes",
    "consistent hashing",
    "Raft consensus",
    "vector clocks",
    "bloom filters",
    "JIT compilation",
    "CPU caches",
    "DNS resolution",
    "HTTP/2 multiplexing",
    "gradient descent",
    "transformer attention",
    "zstd compression",
    "OAuth device flow",
];
const ASPECTS: [&str; 10] = [
    "main ideas",
    "typical failure modes",
    "performance costs",
    "history",
    "security risks",
    "common misconceptions",
    "best practices",
    "key tradeoffs",
    "debugging tips",
    "alternatives",
];

/// The 200 distinct prompts of the cache scenario.
fn base_prompt(i: usize) -> String {
    format!("What are the {} of {}?", ASPECTS[i % ASPECTS.len()], TOPICS[i / ASPECTS.len()])
}

/// Three rewordings of prompt `i`: the first two keep its words (a semantic hit at 0.92), the third adds one
/// ("in detail"), which a bag-of-words embedding puts just under 0.92: some paraphrases miss, as in life.
fn paraphrase(i: usize, variant: usize) -> String {
    let (aspect, topic) = (ASPECTS[i % ASPECTS.len()], TOPICS[i / ASPECTS.len()]);
    match variant {
        0 => format!("Tell me about the {aspect} of {topic}, please."),
        1 => format!("{topic}: {aspect}?"),
        _ => format!("Could you explain the {aspect} of {topic} in detail?"),
    }
}

fn chat_body(model: &str, prompt: &str, stream: bool, max_tokens: u32) -> serde_json::Value {
    let mut body = json!({
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "temperature": 0,
        "max_tokens": max_tokens,
    });
    if stream {
        body["stream"] = json!(true);
        body["stream_options"] = json!({"include_usage": true});
    }
    body
}

/// A configuration with issue 19's lines, or without them.
fn reduce(toml: &str) -> String {
    toml.lines()
        .filter(|l| !l.trim_end().ends_with(NEW))
        .map(|l| l.replace("cache = \"semantic\"", "cache = \"deterministic\""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Starts `toml`; when this build refuses an issue-19 key, starts it without them and returns the refusal.
async fn start(toml: &str) -> Result<(Gateway, Option<String>), BoxError> {
    match Gateway::start(toml).await {
        Ok(g) => Ok((g, None)),
        Err(e) if load::is_unknown_key(&e) => {
            let text = e.to_string();
            let line = text.lines().find(|l| l.contains("unknown")).unwrap_or(&text);
            let reason = line.split(", expected").next().unwrap_or(line).trim().to_owned();
            eprintln!("report: this build refuses an issue-19 key ({reason}); running without them");
            Ok((Gateway::start(&reduce(toml)).await?, Some(reason)))
        }
        Err(e) => Err(e),
    }
}

fn tenant_toml(id: &str, key: &str, budget: Option<&str>) -> String {
    let budget = budget.map(|b| format!("budget_usd = \"{b}\"\n")).unwrap_or_default();
    format!("[[tenants]]\nid = \"{id}\"\nkey_sha256 = [\"{}\"]\n{budget}\n", load::key_digest(key))
}

fn provider_toml(name: &str, base_url: &str) -> String {
    format!("[[providers]]\nname = \"{name}\"\nkind = \"openai\"\nbase_url = \"{base_url}\"\napi_key = \"sk-mock\"\n\n")
}

fn head_toml(budgets: &str) -> String {
    format!(
        "[server]\naddr = \"127.0.0.1:0\"\n\n[cache]\nbackend = \"memory\"\n\n{budgets}\n\n[admin]\nkey_sha256 = [\"{}\"]\n\n\
         [defaults]\ntimeout_ms = 30000\nattempts_per_route = 2\n\
         deadline_ms = 30000 {NEW}\nretry_budget = {{ percent = 20, min_per_sec = 10, window_secs = 10 }} {NEW}\n\n",
        load::key_digest(ADMIN_KEY)
    )
}

/// Runs `requests` (key and body) with at most `concurrency` in flight, spread over `urls` in turn; the
/// outcomes come back in the order of the requests.
async fn drive(
    client: &reqwest::Client,
    urls: &[String],
    requests: Vec<(String, serde_json::Value)>,
    concurrency: usize,
) -> Vec<Outcome> {
    let urls = Arc::new(urls.to_vec());
    let mut outcomes = futures::stream::iter(requests.into_iter().enumerate())
        .map(|(i, (key, body))| {
            let urls = urls.clone();
            let client = client.clone();
            async move { (i, load::send(&client, &urls[i % urls.len()], &key, &body).await) }
        })
        .buffer_unordered(concurrency)
        .collect::<Vec<_>>()
        .await;
    outcomes.sort_unstable_by_key(|(i, _)| *i);
    outcomes.into_iter().map(|(_, o)| o).collect()
}

fn client() -> Result<reqwest::Client, BoxError> {
    Ok(reqwest::Client::builder().pool_max_idle_per_host(4096).timeout(Duration::from_secs(120)).build()?)
}

fn note_missing(missing: &Option<String>, what: &str) {
    if let Some(reason) = missing {
        println!("\n> Not in this build: {what}. The gateway refused the configuration with `{reason}`;");
        println!("> this run used the configuration without issue 19's keys.");
    }
}

fn pct(part: usize, whole: usize) -> f64 {
    if whole == 0 { 0.0 } else { 100.0 * part as f64 / whole as f64 }
}

fn verdict(ok: bool) -> &'static str {
    if ok { "PASS" } else { "MISS" }
}

fn header(title: &str, detail: &str) {
    println!(
        "\n### {title}\n\n{} UTC, {} cores, load average {}; {detail}\n",
        time_now(),
        std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
        std::fs::read_to_string("/proc/loadavg")
            .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
            .unwrap_or_default()
    );
}

fn time_now() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M"])
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

// ------------------------------------------------------------------------------------------------ cache

/// Zipf over 200 prompts plus paraphrases: hit rates, cost saved, latency of hits and misses.
pub(crate) async fn cache() -> Result<(), BoxError> {
    let requests = setting("CACHE_REQUESTS", 10_000);
    let concurrency = setting("CACHE_CONCURRENCY", 8);
    let mut rng = SmallRng::seed_from_u64(setting("SEED", 19) as u64);
    let upstream = load::chat_upstream("mini").await?;
    let embedder = load::embedding_upstream().await?;
    let mut toml = head_toml("[budgets]\nbackend = \"memory\"");
    toml += &provider_toml("upstream-mini", upstream.base_url());
    toml += &provider_toml("embedder", embedder.base_url());
    toml += &format!(
        "[[models]]\nname = \"mini\"\nroutes = [{{ provider = \"upstream-mini\", model = \"gpt-4o-mini\" }}]\n\
         price = {{ input = \"0.15\", output = \"0.60\" }}\ncache = \"semantic\"\nmax_output_tokens = 256\n\
         semantic_threshold = 0.92 {NEW}\nsemantic_embedding_model = \"embed\" {NEW}\n\n\
         [[models]]\nname = \"embed\"\nkind = \"embedding\"\n\
         routes = [{{ provider = \"embedder\", model = \"text-embedding-3-small\" }}]\n\
         price = {{ input = \"0.02\", output = \"0\" }}\n\n"
    );
    toml += &tenant_toml("bench", "sk-bench-cache", None);
    let (gateway, missing) = start(&toml).await?;
    let client = client()?;
    std::fs::create_dir_all(image_dir())?;

    // 80 % of requests ask one of the 200 prompts as written, 20 % a rewording of one; both Zipf(1.0).
    let picks = load::zipf(200, 1.0, requests, &mut rng);
    let texts: Vec<String> = picks
        .iter()
        .map(|&i| {
            use rand::Rng;
            if rng.random::<f64>() < 0.2 { paraphrase(i, rng.random_range(0..3)) } else { base_prompt(i) }
        })
        .collect();
    let bodies = texts.iter().map(|t| ("sk-bench-cache".to_owned(), chat_body("mini", t, false, 256))).collect();
    let started = Instant::now();
    let outcomes = drive(&client, &[gateway.chat_url()], bodies, concurrency).await;
    let elapsed = started.elapsed();

    let count = |f: &dyn Fn(&Outcome) -> bool| outcomes.iter().filter(|o| f(o)).count();
    let ok = count(&|o| o.complete);
    let exact = count(&|o| o.complete && o.cache.as_deref() == Some("hit"));
    let semantic = count(&|o| o.complete && o.cache.as_deref() == Some("semantic"));
    let misses = ok - exact - semantic;
    let lat = |f: &dyn Fn(&Outcome) -> bool| -> Vec<Duration> {
        outcomes.iter().filter(|o| o.complete && f(o)).map(|o| o.total).collect()
    };
    let (hit_lat, sem_lat, miss_lat) = (
        lat(&|o| o.cache.as_deref() == Some("hit")),
        lat(&|o| o.cache.as_deref() == Some("semantic")),
        lat(&|o| !o.cached()),
    );
    // Without a gateway every request is a paid call; with it, only the misses (plus the embeddings).
    let no_gateway: f64 = outcomes.iter().filter_map(|o| o.usage).map(|u| load::cost(u, MINI)).sum();
    let paid: f64 = outcomes.iter().filter(|o| !o.cached()).filter_map(|o| o.usage).map(|u| load::cost(u, MINI)).sum();
    let (recorded, _) = gateway.spend(&client, "bench").await.unwrap_or((paid, None));
    let hit_rate = pct(exact + semantic, ok);
    let cached_p95 = percentile_ms(&hit_lat, 0.95);
    // The same hits one at a time: the gateway's own latency, without queueing behind the other requests.
    let mut alone = Vec::new();
    for i in 0..2_000 {
        let o = load::send(
            &client,
            &gateway.chat_url(),
            "sk-bench-cache",
            &chat_body("mini", &base_prompt(i % 50), false, 256),
        )
        .await;
        if o.complete && o.cache.as_deref() == Some("hit") {
            alone.push(o.total);
        }
    }
    let alone_p95 = percentile_ms(&alone, 0.95);

    header(
        "Cache: Zipf(1.0) over 200 prompts, 20 % reworded",
        &format!(
            "{requests} non-streamed requests, {concurrency} in flight, in {:.1} s; `scripts/bench-report.sh cache`",
            elapsed.as_secs_f64()
        ),
    );
    println!("| measure | value | target | verdict |\n|---|---|---|---|");
    println!("| answered 200 | {ok} / {requests} | | |");
    println!("| hit rate, exact + semantic | **{hit_rate:.1} %** | ≥ 80 % | {} |", verdict(hit_rate >= 80.0));
    println!("| exact hits | {exact} ({:.1} %) | | |", pct(exact, ok));
    println!("| semantic hits (≥ 0.92 cosine) | {semantic} ({:.1} %) | | |", pct(semantic, ok));
    println!("| misses (paid upstream calls) | {misses} ({:.1} %) | | |", pct(misses, ok));
    println!("| cost without a gateway (gpt-4o-mini prices) | ${no_gateway:.4} | | |");
    println!("| cost through the gateway (its recorded spend, embeddings included) | ${recorded:.4} | | |");
    println!("| saved | **{:.1} %** | | |", 100.0 * (1.0 - recorded / no_gateway.max(1e-12)));
    println!(
        "| exact hit latency under the run's load, p50 / p95 (ms) | {:.2} / **{cached_p95:.2}** | p95 ≤ 1 ms | {} |",
        percentile_ms(&hit_lat, 0.5),
        verdict(cached_p95 <= 1.0)
    );
    println!(
        "| exact hit latency, one request at a time ({} hits), p50 / p95 / p99 (ms) | {:.2} / **{alone_p95:.2}** / {:.2} | p95 ≤ 1 ms | {} |",
        alone.len(),
        percentile_ms(&alone, 0.5),
        percentile_ms(&alone, 0.99),
        verdict(alone_p95 <= 1.0)
    );
    if !sem_lat.is_empty() {
        println!(
            "| semantic hit latency p50 / p95 (ms, one 20 ms embedding call included) | {:.1} / {:.1} | | |",
            percentile_ms(&sem_lat, 0.5),
            percentile_ms(&sem_lat, 0.95)
        );
        let lowest = outcomes.iter().filter_map(|o| o.similarity).fold(f32::MAX, f32::min);
        println!("| lowest similarity answered from the cache (`x-chitty-cache-similarity`) | {lowest:.3} | | |");
    }
    println!(
        "| miss latency p50 / p95 (ms) | {:.0} / {:.0} | | |",
        percentile_ms(&miss_lat, 0.5),
        percentile_ms(&miss_lat, 0.95)
    );
    note_missing(&missing, "the semantic cache (`cache = \"semantic\"`); rewordings could only hit exactly");
    let path = image_dir().join("bench-cache.svg");
    chart::latency_cdf(
        &path,
        "cache: latency of exact hits, semantic hits and misses",
        &[("exact hit".into(), hit_lat), ("semantic hit".into(), sem_lat), ("miss".into(), miss_lat)],
    )?;
    println!("\nChart: `docs/img/bench-cache.svg`.");
    Ok(())
}

// ------------------------------------------------------------------------------------------------ mixed

/// A labelled prompt of `benches/data/routing_labelled.jsonl`.
#[derive(Debug, Clone, serde::Deserialize)]
struct Labelled {
    prompt: String,
    class: String,
    split: String,
    quality: HashMap<String, f64>,
}

fn labelled_set() -> Result<Vec<Labelled>, BoxError> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/data/routing_labelled.jsonl");
    let text = std::fs::read_to_string(path)?;
    Ok(text.lines().filter(|l| !l.trim().is_empty()).map(serde_json::from_str).collect::<Result<_, _>>()?)
}

/// The `[[routers]]` table of the mixed scenario: long prompts to the large model, the rest by the classes of
/// the labelled set's training split (k nearest of their embeddings).
fn router_toml(set: &[Labelled]) -> String {
    let mut out = format!(
        "[[routers]] {NEW}\nname = \"auto\" {NEW}\ncandidates = [{{ model = \"mini\" }}, {{ model = \"large\" }}] {NEW}\n\
         embedding_model = \"embed\" {NEW}\nneighbours = 5 {NEW}\n\
         rules = [{{ name = \"long-context\", when = {{ prompt_tokens_above = 2000 }}, model = \"large\" }}] {NEW}\n"
    );
    let mut classes: Vec<&str> = set.iter().map(|l| l.class.as_str()).collect();
    classes.sort_unstable();
    classes.dedup();
    for class in classes {
        let rows: Vec<&Labelled> = set.iter().filter(|l| l.class == class && l.split == "train").collect();
        // The class goes to the cheaper model when it answers at least 90 % as well as the strong one.
        let mini = rows.iter().map(|l| l.quality["mini"]).sum::<f64>();
        let large = rows.iter().map(|l| l.quality["large"]).sum::<f64>();
        let model = if mini >= 0.9 * large { "mini" } else { "large" };
        let prompts: Vec<String> = rows.iter().map(|l| format!("{:?}", l.prompt)).collect();
        out += &format!(
            "[[routers.examples]] {NEW}\nclass = \"{class}\" {NEW}\nmodel = \"{model}\" {NEW}\nprompts = [{}] {NEW}\n",
            prompts.join(", ")
        );
    }
    out
}

/// 70 % repeated prompts, 20 % short unique ones (the labelled test split), 10 % long-context, to `auto`.
pub(crate) async fn mixed() -> Result<(), BoxError> {
    let requests = setting("MIXED_REQUESTS", 2_000);
    let concurrency = setting("MIXED_CONCURRENCY", 32);
    let mut rng = SmallRng::seed_from_u64(setting("SEED", 19) as u64 + 1);
    let set = labelled_set()?;
    let mini_up = load::chat_upstream("mini").await?;
    let large_up = load::chat_upstream("large").await?;
    let embedder = load::embedding_upstream().await?;
    let mut toml = head_toml("[budgets]\nbackend = \"memory\"");
    toml += &provider_toml("upstream-mini", mini_up.base_url());
    toml += &provider_toml("upstream-large", large_up.base_url());
    toml += &provider_toml("embedder", embedder.base_url());
    for (name, model, price) in [("mini", "gpt-4o-mini", ("0.15", "0.60")), ("large", "gpt-4o", ("2.50", "10.00"))] {
        toml += &format!(
            "[[models]]\nname = \"{name}\"\nroutes = [{{ provider = \"upstream-{name}\", model = \"{model}\" }}]\n\
             price = {{ input = \"{}\", output = \"{}\" }}\ncache = \"deterministic\"\nmax_output_tokens = 256\n\n",
            price.0, price.1
        );
    }
    toml += "[[models]]\nname = \"embed\"\nkind = \"embedding\"\n\
             routes = [{ provider = \"embedder\", model = \"text-embedding-3-small\" }]\n\
             price = { input = \"0.02\", output = \"0\" }\n\n";
    toml += &tenant_toml("bench", "sk-bench-mixed", None);
    toml += &router_toml(&set);
    let (gateway, missing) = start(&toml).await?;
    header(
        "Mixed 70/20/10 through the smart router (`model = \"auto\"`)",
        &format!("{requests} streamed requests, {concurrency} in flight; `scripts/bench-report.sh mixed`"),
    );
    // The table is checked against chitty-core's `RouterConfig` now, so a mistake shows before the gateway reads it.
    #[derive(serde::Deserialize)]
    struct Routers {
        routers: Vec<chitty::core::router::RouterConfig>,
    }
    let tables: Routers = toml::from_str(&router_toml(&set))?;
    for config in &tables.routers {
        chitty::core::router::SmartRouter::new(config, |m| ["mini", "large", "embed"].contains(&m))
            .map_err(|e| format!("the scenario's router table: {}: {}", e.key, e.reason))?;
    }
    // Without `[[routers]]` there is no `auto`; the reduced configuration has none either.
    let routers = chitty::providers::config::GatewayFile::parse("[[routers]]\nname = \"auto\"\ncandidates = []\n");
    if let Err(e) = routers {
        println!("Not run: this build's gateway does not read `[[routers]]`, the smart router's table, so there is no");
        println!(
            "`model = \"auto\"` to send the traffic to (`{}`).",
            e.to_string()
                .lines()
                .find(|l| l.contains("unknown"))
                .unwrap_or("")
                .split(", expected")
                .next()
                .unwrap_or("")
                .trim()
        );
        println!("The router's decisions on the same labelled set, in process: `scripts/bench-routing.sh`.");
        return Ok(());
    }
    if let Some(reason) = &missing {
        println!(
            "Not run: this build refuses another of issue 19's keys (`{reason}`), and the scenario needs them all."
        );
        return Ok(());
    }
    let client = client()?;
    std::fs::create_dir_all(image_dir())?;
    let tests: Vec<&Labelled> = set.iter().filter(|l| l.split == "test").collect();
    let filler = "the request log shows a retry after a timeout on the upstream connection pool ";
    // Kind of each request: 0 repeated, 1 labelled short unique, 2 long-context.
    let mut kinds = Vec::with_capacity(requests);
    let mut bodies = Vec::with_capacity(requests);
    let repeated = load::zipf(50, 1.0, requests, &mut rng);
    for (i, pick) in repeated.iter().enumerate() {
        use rand::Rng;
        let roll: f64 = rng.random();
        let (kind, prompt) = if roll < 0.7 {
            (0, base_prompt(*pick * 4))
        } else if roll < 0.9 {
            let l = tests[rng.random_range(0..tests.len())];
            (1, format!("{} (ticket {i})", l.prompt))
        } else {
            (2, format!("Summarise this incident log {i}: {}", filler.repeat(300)))
        };
        kinds.push((kind, if kind == 1 { Some(prompt.clone()) } else { None }));
        bodies.push(("sk-bench-mixed".to_owned(), chat_body("auto", &prompt, true, 256)));
    }
    let started = Instant::now();
    let outcomes = drive(&client, &[gateway.chat_url()], bodies, concurrency).await;
    let elapsed = started.elapsed();
    let is_large = |o: &Outcome| o.route.as_deref().is_some_and(|r| r.starts_with("upstream-large"));
    let ok = outcomes.iter().filter(|o| o.complete).count();
    let paid: Vec<&Outcome> = outcomes.iter().filter(|o| o.complete && !o.cached()).collect();
    let routed_cost: f64 =
        paid.iter().filter_map(|o| o.usage.map(|u| load::cost(u, if is_large(o) { LARGE } else { MINI }))).sum();
    let all_large: f64 = paid.iter().filter_map(|o| o.usage.map(|u| load::cost(u, LARGE))).sum();
    let no_gateway: f64 = outcomes.iter().filter_map(|o| o.usage.map(|u| load::cost(u, LARGE))).sum();
    let saved = 100.0 * (1.0 - routed_cost / all_large.max(1e-12));
    // Quality on the labelled requests: the chosen model's score over the strong model's.
    let by_prompt: HashMap<&str, &Labelled> = tests.iter().map(|l| (l.prompt.as_str(), *l)).collect();
    let (mut got, mut best, mut labelled) = (0.0, 0.0, 0usize);
    for ((kind, prompt), o) in kinds.iter().zip(&outcomes) {
        let Some(prompt) = prompt.as_deref().filter(|_| *kind == 1 && o.complete) else { continue };
        let original = prompt.rsplit_once(" (ticket").map_or(prompt, |(p, _)| p);
        let Some(l) = by_prompt.get(original) else { continue };
        got += l.quality[if is_large(o) { "large" } else { "mini" }];
        best += l.quality["large"];
        labelled += 1;
    }
    let quality = 100.0 * got / best.max(1e-12);
    let lat = |k: usize| -> Vec<Duration> {
        kinds.iter().zip(&outcomes).filter(|((kind, _), o)| *kind == k && o.complete).map(|(_, o)| o.total).collect()
    };
    println!("Ran in {:.1} s.\n", elapsed.as_secs_f64());
    let mut reasons: HashMap<String, usize> = HashMap::new();
    for o in outcomes.iter().filter(|o| !o.cached()) {
        // `knn:lookup` and `knn:proof` count apart; the similarity a reason may carry does not.
        *reasons.entry(o.router.clone().unwrap_or_else(|| "(none)".into())).or_default() += 1;
    }
    let mut reasons: Vec<(String, usize)> = reasons.into_iter().collect();
    reasons.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let reasons: Vec<String> = reasons.iter().take(8).map(|(r, n)| format!("`{r}` {n}")).collect();
    println!("| measure | value | target | verdict |\n|---|---|---|---|");
    println!("| answered whole | {ok} / {requests} | | |");
    println!("| answered from the cache | {} ({:.1} %) | | |", ok - paid.len(), pct(ok - paid.len(), ok));
    println!(
        "| paid answers on gpt-4o-mini / gpt-4o | {} / {} | | |",
        paid.iter().filter(|o| !is_large(o)).count(),
        paid.iter().filter(|o| is_large(o)).count()
    );
    println!("| router decisions of paid answers (`x-chitty-router`, top 8) | {} | | |", reasons.join(", "));
    println!("| cost, everything on gpt-4o without a gateway | ${no_gateway:.4} | | |");
    println!("| cost, everything on gpt-4o with the cache | ${all_large:.4} | | |");
    println!("| cost, routed with the cache | ${routed_cost:.4} | | |");
    println!("| saved by routing on top of caching | **{saved:.1} %** | ≥ 20 % | {} |", verdict(saved >= 20.0));
    println!(
        "| quality on the {labelled} labelled requests (vs gpt-4o = 100 %) | **{quality:.1} %** | ≥ 85 % | {} |",
        verdict(quality >= 85.0)
    );
    for (k, name) in [(0, "repeated"), (1, "short unique"), (2, "long-context")] {
        let l = lat(k);
        println!(
            "| {name}: p50 / p95 to the last byte (ms) | {:.0} / {:.0} | | |",
            percentile_ms(&l, 0.5),
            percentile_ms(&l, 0.95)
        );
    }
    let path = image_dir().join("bench-mixed.svg");
    chart::latency_cdf(
        &path,
        "mixed 70/20/10 via model=auto: latency by kind of request",
        &[
            ("repeated (70 %)".into(), lat(0)),
            ("short unique (20 %)".into(), lat(1)),
            ("long-context (10 %)".into(), lat(2)),
        ],
    )?;
    println!("\nChart: `docs/img/bench-mixed.svg`.");
    Ok(())
}

// ------------------------------------------------------------------------------------------------ fallback

/// Primary down, then 30 % errors, then streams cut mid-way; a healthy secondary behind each.
pub(crate) async fn fallback() -> Result<(), BoxError> {
    let requests = setting("FALLBACK_REQUESTS", 2_000);
    let concurrency = setting("FALLBACK_CONCURRENCY", 64);
    let seed = setting("SEED", 19) as u64;
    let healthy = load::chat_upstream("primary").await?;
    let flaky = load::chat_upstream("primary").await?;
    flaky.faults().set_error_rate(0.3, 503, seed);
    let cutting = load::chat_upstream("primary").await?;
    // A third of the streams break after the role chunk and four tokens.
    cutting.faults().set_cut_rate(0.3, 5, seed + 1);
    let secondary = load::chat_upstream("secondary").await?;
    // A port nothing listens on: connections are refused, as from a provider that is down.
    let down = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        format!("http://{}/v1", listener.local_addr()?)
    };
    let mut toml = head_toml("[budgets]\nbackend = \"memory\"");
    for (name, url) in [
        ("healthy", healthy.base_url()),
        ("down", down.as_str()),
        ("flaky", flaky.base_url()),
        ("cutting", cutting.base_url()),
        ("secondary", secondary.base_url()),
    ] {
        toml += &provider_toml(name, url);
    }
    for phase in ["healthy", "down", "flaky", "cutting"] {
        toml += &format!(
            "[[models]]\nname = \"chat-{phase}\"\nbalance = \"ordered\"\n\
             routes = [{{ provider = \"{phase}\", model = \"gpt-4o-mini\", group = 0 }}, \
             {{ provider = \"secondary\", model = \"gpt-4o-mini\", group = 1 }}]\n\
             price = {{ input = \"0.15\", output = \"0.60\" }}\ncache = \"off\"\nmax_output_tokens = 256\n\
             continue_streams = true {NEW}\n\n"
        );
    }
    toml += &tenant_toml("bench", "sk-bench-fallback", None);
    let (gateway, missing) = start(&toml).await?;
    let client = client()?;
    header(
        "Fallback: primary down, flaky (30 % errors), cutting 30 % of streams mid-way",
        &format!(
            "{requests} streamed requests per phase, {concurrency} in flight, a healthy secondary behind the primary; \
             `scripts/bench-report.sh fallback`"
        ),
    );
    println!(
        "| phase | answered whole | success rate | TTFT p50 / p95 (ms) | added TTFT p50 / p95 (ms) | total p50 / p95 (ms) | more than one attempt | calls to the secondary | target | verdict |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let mut series = Vec::new();
    let mut base = (0.0, 0.0);
    std::fs::create_dir_all(image_dir())?;
    let mut all_ok = true;
    for phase in ["healthy", "down", "flaky", "cutting"] {
        let secondary_before = secondary.received();
        let model = format!("chat-{phase}");
        let bodies = (0..requests)
            .map(|i| {
                (
                    "sk-bench-fallback".to_owned(),
                    chat_body(&model, &format!("{} #{i}", base_prompt(i % 200)), true, 256),
                )
            })
            .collect();
        let outcomes = drive(&client, &[gateway.chat_url()], bodies, concurrency).await;
        let ok = outcomes.iter().filter(|o| o.complete).count();
        let ttft: Vec<Duration> = outcomes.iter().filter(|o| o.complete).map(|o| o.first_token).collect();
        let total: Vec<Duration> = outcomes.iter().filter(|o| o.complete).map(|o| o.total).collect();
        let retried = outcomes.iter().filter(|o| o.attempts.is_some_and(|a| a > 1)).count();
        let (p50, p95) = (percentile_ms(&ttft, 0.5), percentile_ms(&ttft, 0.95));
        if phase == "healthy" {
            base = (p50, p95);
        }
        let rate = pct(ok, requests);
        let target = phase != "healthy";
        all_ok &= !target || rate >= 99.99;
        println!(
            "| {phase} | {ok} / {requests} | **{rate:.2} %** | {p50:.0} / {p95:.0} | {:+.0} / {:+.0} | {:.0} / {:.0} | {retried} | {} | {} | {} |",
            p50 - base.0,
            p95 - base.1,
            percentile_ms(&total, 0.5),
            percentile_ms(&total, 0.95),
            secondary.received() - secondary_before,
            if target { "≥ 99.99 %" } else { "" },
            if target { verdict(rate >= 99.99) } else { "" },
        );
        series.push((format!("{phase} ({rate:.2} % whole)"), total));
    }
    println!(
        "\nA request counts as answered whole when its stream ended with `[DONE]` and no error event. \
         \"Calls to the secondary\" are fallbacks (before the first token) and, with `continue_streams`, \
         continuations of streams the primary cut after it (30 % of them in the last phase)."
    );
    note_missing(&missing, "mid-stream continuation (`continue_streams`), the deadline and the retry budget");
    if !all_ok {
        println!("\nSome phase missed 99.99 %: see the table.");
    }
    let path = image_dir().join("bench-fallback.svg");
    chart::latency_cdf(&path, "fallback: latency to the last byte by phase", &series)?;
    println!("\nChart: `docs/img/bench-fallback.svg`.");
    Ok(())
}

// ------------------------------------------------------------------------------------------------ budget

/// 20 tenants with small budgets, 2,000 requests at once across two replicas sharing Redis.
pub(crate) async fn budget() -> Result<(), BoxError> {
    let requests = setting("BUDGET_REQUESTS", 2_000);
    let redis = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let upstream = load::chat_upstream("large").await?;
    // Fresh tenant names each run: spend already in Redis from an earlier run does not count.
    let run = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
    let tenants: Vec<String> = (0..20).map(|i| format!("bench-{run}-t{i:02}")).collect();
    let limit = 0.01;
    let backend = format!("[budgets]\nbackend = \"redis\"\nurl = \"{redis}\"");
    let mut toml = head_toml(&backend).replace("[cache]\nbackend = \"memory\"", "[cache]\nbackend = \"none\"");
    toml += &provider_toml("upstream-large", upstream.base_url());
    toml += "[[models]]\nname = \"large\"\nroutes = [{ provider = \"upstream-large\", model = \"gpt-4o\" }]\n\
             price = { input = \"2.50\", output = \"10.00\" }\ncache = \"off\"\nmax_output_tokens = 64\n\n";
    let limit_text = format!("{limit}");
    for t in &tenants {
        toml += &tenant_toml(t, &format!("sk-{t}"), Some(&limit_text));
    }
    let (a, missing_a) = start(&toml).await?;
    let (b, _) = start(&toml).await?;
    let client = client()?;
    std::fs::create_dir_all(image_dir())?;
    let bodies: Vec<(String, serde_json::Value)> = (0..requests)
        .map(|i| {
            let t = &tenants[i % tenants.len()];
            (format!("sk-{t}"), chat_body("large", &format!("{} (request {i})", base_prompt(i % 200)), false, 64))
        })
        .collect();
    let keys: Vec<String> = bodies.iter().map(|(k, _)| k.clone()).collect();
    // Wave after wave of the same 2,000 at once: the first shows a burst's refusals, the later ones push every
    // tenant to its limit.
    let waves = setting("BUDGET_WAVES", 5).max(1);
    let started = Instant::now();
    let mut outcomes = Vec::with_capacity(requests * waves);
    let mut first_wave_ok = 0;
    for wave in 0..waves {
        let answers = drive(&client, &[a.chat_url(), b.chat_url()], bodies.clone(), requests).await;
        if wave == 0 {
            first_wave_ok = answers.iter().filter(|o| o.complete).count();
        }
        outcomes.extend(answers);
    }
    let keys: Vec<String> = (0..waves).flat_map(|_| keys.iter().cloned()).collect();
    let requests = requests * waves;
    let elapsed = started.elapsed();
    let ok = outcomes.iter().filter(|o| o.complete).count();
    let mut statuses: HashMap<u16, usize> = HashMap::new();
    for o in &outcomes {
        *statuses.entry(o.status).or_default() += 1;
    }
    let mut statuses: Vec<(u16, usize)> = statuses.into_iter().collect();
    statuses.sort_unstable();
    // Spend per tenant: as the shared store recorded it (read through replica A), and from the answers' usage.
    let mut recorded = Vec::new();
    let mut answered = Vec::new();
    let mut overruns = 0;
    let mut most = 0.0f64;
    for t in &tenants {
        let (spent, _) = a.spend(&client, t).await?;
        let key = format!("sk-{t}");
        let from_usage: f64 = keys
            .iter()
            .zip(&outcomes)
            .filter(|(k, o)| **k == key && o.complete)
            .filter_map(|(_, o)| o.usage.map(|u| load::cost(u, LARGE)))
            .sum();
        if spent > limit + 1e-12 || from_usage > limit + 1e-12 {
            overruns += 1;
        }
        most = most.max(spent.max(from_usage) / limit);
        recorded.push(spent);
        answered.push(from_usage);
    }
    header(
        "Budget: 20 tenants, $0.01 each, two replicas on one Redis",
        &format!(
            "{waves} waves of {} non-streamed requests sent at once (alternating replicas, gpt-4o prices, 64-token \
             cap), {requests} in all, in {:.1} s; `scripts/bench-report.sh budget`",
            requests / waves,
            elapsed.as_secs_f64()
        ),
    );
    println!("| measure | value | target | verdict |\n|---|---|---|---|");
    println!("| answered, first wave | {first_wave_ok} / {} | | |", requests / waves);
    println!("| answered, all waves | {ok} / {requests} | | |");
    println!("| statuses | {} | | |", statuses.iter().map(|(s, n)| format!("{s}: {n}")).collect::<Vec<_>>().join(", "));
    println!("| refused (not 200) | {} | | |", requests - ok);
    println!("| tenants over their limit | **{overruns}** / 20 | 0 | {} |", verdict(overruns == 0));
    println!("| highest spend / limit | {:.1} % | ≤ 100 % | {} |", most * 100.0, verdict(most <= 1.0 + 1e-9));
    println!(
        "| spend / limit, all tenants (recorded) | ${:.4} / ${:.2} ({:.1} %) | | |",
        recorded.iter().sum::<f64>(),
        limit * 20.0,
        100.0 * recorded.iter().sum::<f64>() / (limit * 20.0)
    );
    println!("| spend from the answers' usage, all tenants | ${:.4} | | |", answered.iter().sum::<f64>());
    note_missing(&missing_a, "issue 19's `[defaults]` keys");
    let names: Vec<String> = (0..tenants.len()).map(|i| format!("t{i:02}")).collect();
    let path = image_dir().join("bench-budget.svg");
    chart::grouped_bars(
        &path,
        "budget: spend per tenant against its $0.01 limit (two replicas, one Redis)",
        "dollars",
        &names,
        &[("limit".into(), vec![limit; tenants.len()]), ("spent (recorded)".into(), recorded)],
    )?;
    println!("\nChart: `docs/img/bench-budget.svg`.");
    Ok(())
}
