//! The pure routing decisions of issue 19, with no gateway around them: the smart router's rule path
//! (features read from a request, then rules and hint), its classifier (k nearest of 1,000 labelled examples
//! of 1,536 dimensions, excluding the embedding call), the balancer, the retry budget, the cascade's schema
//! check, and the semantic cache's index over 1k, 10k and 100k entries of 1,536 dimensions (all in one
//! tenant and partition: the worst case) as shipped (flat up to 2,000 rows, an HNSW graph above), its insert
//! cost at 100k, and the flat scan alone at 100k.
//!
//! `cargo bench --bench routing`

// A bench that cannot build its fixtures has nothing to measure: failing loudly is the point.
#![allow(clippy::expect_used)]

use std::hint::black_box;
use std::time::Duration;

use chitty::core::balance::{BalancePolicy, Balancer, Deployment};
use chitty::core::retry::{FullJitter, RetryBudget, RetryBudgetConfig, RetryPolicy};
use chitty::core::router::{
    AnswerExpectations, CascadeConfig, ExampleIndex, QualityHint, RequestFeatures, RouterConfig, RouterStep,
    SmartRouter,
};
use chitty::core::semantic::{DEFAULT_APPROXIMATE_ABOVE, PartitionKey, SemanticIndex, SemanticIndexConfig};
use chitty::core::wire::{ChatCompletionRequest, ChatCompletionResponse};
use chitty::core::{RandomSource, SeededRandom, Timestamp};
use criterion::{Criterion, criterion_group, criterion_main};

const DIMS: usize = 1_536;

fn vector(random: &SeededRandom) -> Vec<f32> {
    (0..DIMS).map(|_| (random.next_u64() % 20_001) as f32 / 10_000.0 - 1.0).collect()
}

fn router() -> SmartRouter {
    let config: RouterConfig = serde_json::from_value(serde_json::json!({
        "name": "auto",
        "candidates": [{"model": "mini"}, {"model": "mid"}, {"model": "max"}],
        "rules": [
            {"name": "long", "when": {"prompt_tokens_above": 30000}, "model": "max"},
            {"name": "images", "when": {"images": true}, "at_least": "mid"},
            {"name": "schema", "when": {"json_schema": true}, "at_least": "mid"},
            {"name": "tools", "when": {"tools": true}, "at_least": "max"},
            {"name": "short-low", "when": {"prompt_tokens_at_most": 200, "quality": "low"}, "model": "mini"}
        ],
        "embedding_model": "embed",
        "cascade": {}
    }))
    .expect("router config");
    SmartRouter::new(&config, |_| true).expect("router")
}

fn request() -> ChatCompletionRequest {
    serde_json::from_value(serde_json::json!({
        "model": "auto",
        "messages": [
            {"role": "system", "content": "You are a helpful assistant. Answer briefly and cite sources when you can."},
            {"role": "user", "content": "What is the capital of France, and what is it known for?"},
            {"role": "assistant", "content": "Paris: the Louvre, the Eiffel Tower, and its cafés."},
            {"role": "user", "content": "Give me three museums there as a JSON list with names and arrondissements."}
        ],
        "response_format": {"type": "json_schema", "json_schema": {"name": "museums", "schema": {
            "type": "object", "required": ["museums"], "additionalProperties": false,
            "properties": {"museums": {"type": "array", "maxItems": 3, "items": {"type": "object",
                "required": ["name", "arrondissement"], "additionalProperties": false,
                "properties": {"name": {"type": "string"}, "arrondissement": {"type": "integer", "minimum": 1, "maximum": 20}}}}}}}},
        "temperature": 0
    }))
    .expect("request")
}

fn bench_router(c: &mut Criterion) {
    let router = router();
    let request = request();
    let mut group = c.benchmark_group("router");
    group.bench_function("rules_path", |b| {
        b.iter(|| {
            let features = RequestFeatures::of(black_box(&request), QualityHint::from_header(black_box("high")));
            black_box(router.decide(&features))
        })
    });
    let random = SeededRandom::new(19);
    let mut index = ExampleIndex::new(DIMS);
    for i in 0..1_000 {
        let class = ["smalltalk", "code", "maths", "extraction"][i % 4];
        let model = ["mini", "mid", "max", "mid"][i % 4];
        index.add(class, model, &vector(&random)).expect("example");
    }
    let query = vector(&random);
    let features = RequestFeatures::of(&request, None);
    group.bench_function("knn_1000x1536", |b| {
        b.iter(|| {
            let RouterStep::Classify(pending) = router.decide(&features) else { panic!("expected the classifier") };
            black_box(router.classify(pending, &index, black_box(&query)))
        })
    });
    let answer: ChatCompletionResponse = serde_json::from_value(serde_json::json!({
        "id": "a", "object": "chat.completion", "created": 0, "model": "mini",
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content":
            "{\"museums\": [{\"name\": \"Louvre\", \"arrondissement\": 1}, {\"name\": \"Orsay\", \"arrondissement\": 7}, {\"name\": \"Rodin\", \"arrondissement\": 7}]}"}}]
    }))
    .expect("answer");
    let expect = AnswerExpectations::of(&request);
    let cascade = CascadeConfig::default();
    group.bench_function("cascade_schema_check", |b| b.iter(|| black_box(cascade.check(&expect, black_box(&answer)))));
    group.finish();
}

fn bench_balance_and_retry(c: &mut Criterion) {
    let mut group = c.benchmark_group("balance");
    let random = SeededRandom::new(7);
    let deployments = vec![Deployment::new(0, 3), Deployment::new(0, 1), Deployment::new(0, 2), Deployment::new(1, 1)];
    for policy in [BalancePolicy::Ordered, BalancePolicy::Weighted, BalancePolicy::LeastOutstanding] {
        let balancer = Balancer::new(policy, deployments.clone());
        group.bench_function(format!("{policy:?}_4_routes"), |b| {
            b.iter(|| black_box(balancer.attempt_order(|i| i != 1, |i| i as u64, &random)))
        });
    }
    group.finish();
    let mut group = c.benchmark_group("retry");
    let policy =
        RetryPolicy { max_attempts: 3, jitter: FullJitter::new(Duration::from_millis(100), Duration::from_secs(5)) };
    let mut budget = RetryBudget::new(RetryBudgetConfig::default());
    let mut now = Timestamp(1_700_000_000_000);
    group.bench_function("record_and_decide", |b| {
        b.iter(|| {
            now = Timestamp(now.0 + 1);
            budget.record_request(now);
            black_box(policy.decide(1, now, now.plus(Duration::from_secs(60)), None, &mut budget, &random))
        })
    });
    group.finish();
}

/// An index of 1,536-dimension rows holding up to `entries`, all of which may be one tenant's.
fn semantic_index(entries: usize, approximate_above: usize) -> SemanticIndex<u64> {
    SemanticIndex::new(SemanticIndexConfig {
        dims: DIMS,
        max_entries: entries,
        max_entries_per_tenant: entries,
        approximate_above,
    })
}

fn bench_semantic(c: &mut Criterion) {
    let mut group = c.benchmark_group("semantic_lookup");
    group.sample_size(10).measurement_time(Duration::from_secs(5)).warm_up_time(Duration::from_secs(1));
    let random = SeededRandom::new(2026);
    let now = Timestamp(1_700_000_000_000);
    let partition = PartitionKey([3; 16]);
    let ttl = Duration::from_secs(3_600);
    let build = |entries: usize, approximate_above: usize| {
        let mut index = semantic_index(entries, approximate_above);
        let mut stored = Vec::new();
        for i in 0..entries {
            let v = vector(&random);
            index.insert("bench", partition, &v, i as u64, now, ttl).expect("insert");
            if i % 97 == 0 {
                stored.push((i as u64, v));
            }
        }
        (index, stored)
    };
    // A miss (a random query: nothing near it) and a hit (a stored row with noise, cosine ~0.97).
    let query = vector(&random);
    let near = |v: &[f32]| -> Vec<f32> {
        v.iter().map(|x| x + 0.25 * ((random.next_u64() % 2_001) as f32 / 1_000.0 - 1.0)).collect()
    };
    let mut big = None;
    for entries in [1_000usize, 10_000, 100_000] {
        // The index as shipped: flat up to DEFAULT_APPROXIMATE_ABOVE rows per shard, a graph above.
        let (mut index, stored) = build(entries, DEFAULT_APPROXIMATE_ABOVE);
        group.bench_function(format!("{entries}x1536"), |b| {
            b.iter(|| black_box(index.lookup("bench", partition, black_box(&query), 0.95, now).expect("lookup")))
        });
        let hits: Vec<Vec<f32>> = stored.iter().map(|(_, v)| near(v)).collect();
        // Recall of the index as shipped on these near duplicates, printed beside the timings.
        let found = stored
            .iter()
            .zip(&hits)
            .filter(|((i, _), q)| {
                let hit = index.lookup("bench", partition, q, 0.9, now).expect("lookup");
                hit.is_some_and(|h| h.value == *i)
            })
            .count();
        eprintln!("semantic_lookup/{entries}x1536: {found} of {} near duplicates found", stored.len());
        let mut n = 0;
        group.bench_function(format!("{entries}x1536_hit"), |b| {
            b.iter(|| {
                n += 1;
                let hit = index.lookup("bench", partition, black_box(&hits[n % hits.len()]), 0.9, now).expect("lookup");
                black_box(hit)
            })
        });
        if entries == 100_000 {
            big = Some(index);
        }
    }
    // The flat scan alone at 100k, for the side-by-side.
    let (mut flat, _) = build(100_000, usize::MAX);
    group.bench_function("flat_100000x1536", |b| {
        b.iter(|| black_box(flat.lookup("bench", partition, black_box(&query), 0.95, now).expect("lookup")))
    });
    group.finish();
    drop(flat);

    // Insert at the cap of 100k: each one evicts the least recently used entry (a tombstone in the graph).
    let Some(mut index) = big else { return };
    let fresh: Vec<Vec<f32>> = (0..1_000).map(|_| vector(&random)).collect();
    let mut n = 0;
    let mut group = c.benchmark_group("semantic_insert");
    group.sample_size(10).measurement_time(Duration::from_secs(5)).warm_up_time(Duration::from_secs(1));
    group.bench_function("100000x1536", |b| {
        b.iter(|| {
            n += 1;
            index.insert("bench", partition, &fresh[n % fresh.len()], n as u64, now, ttl).expect("insert")
        })
    });
    group.finish();
    drop(index);

    // The worst single call while a graph fills: a lookup on a shard that has just crossed the bound, which also
    // inserts the next GRAPH_ROWS_PER_CALL (32) rows into its graph (63 such calls catch up 2,001 rows; the
    // bench starts over after 60).
    let rows: Vec<Vec<f32>> = (0..=DEFAULT_APPROXIMATE_ABOVE).map(|_| vector(&random)).collect();
    let fill = || {
        let mut index = semantic_index(100_000, DEFAULT_APPROXIMATE_ABOVE);
        for (i, v) in rows.iter().enumerate() {
            index.insert("bench", partition, v, i as u64, now, ttl).expect("insert");
        }
        index
    };
    let mut group = c.benchmark_group("semantic_graph_step");
    group.sample_size(10).measurement_time(Duration::from_secs(5)).warm_up_time(Duration::from_secs(1));
    group.bench_function("lookup_2001x1536", |b| {
        b.iter_custom(|iters| {
            let (mut index, mut calls, mut total) = (fill(), 0, Duration::ZERO);
            for _ in 0..iters {
                if calls == 60 {
                    (index, calls) = (fill(), 0);
                }
                let start = std::time::Instant::now();
                black_box(index.lookup("bench", partition, black_box(&query), 0.95, now).expect("lookup"));
                total += start.elapsed();
                calls += 1;
            }
            total
        })
    });
    group.finish();

    // Printed: every call timed while 10,000 rows are stored (the graph follows the inserts), then while the
    // graph is rebuilt after 6,000 of them expire at once (compaction, then 4,000 rows at 32 per call).
    let mut index = semantic_index(10_000, DEFAULT_APPROXIMATE_ABOVE);
    let expiring = Duration::from_secs(60);
    let mut inserts = Vec::new();
    for i in 0..10_000u64 {
        let v = vector(&random);
        let start = std::time::Instant::now();
        index.insert("bench", partition, &v, i, now, if i < 6_000 { expiring } else { ttl }).expect("insert");
        inserts.push(start.elapsed());
    }
    let later = now.plus(expiring);
    let start = std::time::Instant::now();
    index.purge_expired(later);
    let mut rebuild = vec![start.elapsed()];
    // 4,000 live rows at 32 per call: 125 calls, the purge's included; a few more show the graph serving.
    for _ in 0..130 {
        let start = std::time::Instant::now();
        black_box(index.lookup("bench", partition, &query, 0.95, later).expect("lookup"));
        rebuild.push(start.elapsed());
    }
    let summary = |calls: &mut Vec<Duration>| {
        calls.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        format!(
            "median {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            ms(calls[calls.len() / 2]),
            ms(calls[calls.len() * 99 / 100]),
            ms(calls[calls.len() - 1])
        )
    };
    eprintln!("semantic_graph_step: 10,000 inserts of 1,536 dims, each call: {}", summary(&mut inserts));
    eprintln!(
        "semantic_graph_step: purge of 6,000 + 130 lookups while 4,000 rows are rebuilt: {}",
        summary(&mut rebuild)
    );
}

criterion_group! {
    name = routing;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = bench_router, bench_balance_and_retry, bench_semantic
}
criterion_main!(routing);
