//! Throughput of dataset deltas on an unchanged-heavy pair: a CSV against itself with one row in 10,000
//! edited in place and 1 % of rows appended.
//!
//! `match` is chunking and matching alone (`DatasetDeltaCompressor::match_stats`); `encode` is the whole
//! archive (SHA-256 of both files and of every part, zstd of new bytes); `decode` rebuilds and verifies.
//! The pair is the testkit's generated orders export (default 256 MiB), or, with `CHITTY_DATASET_FILE`,
//! a real file (repeated up to `CHITTY_DELTA_BENCH_BYTES` bytes). Throughput is bytes of the target.
//!
//! ```text
//! cargo bench -p chitty-delta --bench dataset
//! CHITTY_DATASET_FILE=flights.csv CHITTY_DELTA_BENCH_BYTES=1073741824 cargo bench -p chitty-delta --bench dataset
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;

use chitty_core::Compressor;
use chitty_delta::DatasetDeltaCompressor;
use chitty_testkit::dataset_pairs::{RowFormat, generate_rows};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

/// The base (up to `bytes`, whole rows) and the target: every 10,000th row with one byte changed, and
/// the first 1 % of rows appended again at the end.
fn pair(bytes: usize) -> (Vec<u8>, Vec<u8>) {
    let base = match std::env::var_os("CHITTY_DATASET_FILE") {
        Some(path) => {
            let file = std::fs::read(path).expect("CHITTY_DATASET_FILE");
            let mut base = Vec::with_capacity(bytes);
            while base.len() < bytes {
                base.extend_from_slice(&file[..file.len().min(bytes - base.len())]);
            }
            base
        }
        None => {
            let mut base = generate_rows(RowFormat::Csv, (bytes / 90) as u64, 1);
            base.truncate(bytes);
            base
        }
    };
    let end = base.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let base = base[..end].to_vec();
    let mut target = base.clone();
    let mut row = 0usize;
    let mut at = 0usize;
    while let Some(i) = target[at..].iter().position(|&b| b == b'\n') {
        if row % 10_000 == 9_999 && i > 2 {
            target[at + i / 2] ^= 0x20;
        }
        row += 1;
        at += i + 1;
    }
    let appended = base[..base.len() / 100].to_vec();
    target.extend_from_slice(&appended[..appended.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1)]);
    (base, target)
}

fn bench_dataset(c: &mut Criterion) {
    let bytes = std::env::var("CHITTY_DELTA_BENCH_BYTES").ok().and_then(|v| v.parse().ok()).unwrap_or(256usize << 20);
    let (base, target) = pair(bytes);
    let compressor = DatasetDeltaCompressor::builder().build().unwrap();
    let mut archive = Vec::new();
    compressor.encode(Some(&base), &target, &mut archive).unwrap();
    let stats = compressor.match_stats(Some(&base), &target);
    eprintln!(
        "pair: base {} bytes, target {} bytes, archive {} bytes ({:.4} %), {} target chunks, {} new bytes",
        base.len(),
        target.len(),
        archive.len(),
        100.0 * archive.len() as f64 / target.len() as f64,
        stats.target_chunks,
        stats.new_bytes,
    );
    let mut group = c.benchmark_group("dataset");
    group.sample_size(10);
    group.throughput(Throughput::Bytes(target.len() as u64));
    group.bench_function("match", |b| b.iter(|| black_box(compressor.match_stats(Some(&base), &target))));
    group.bench_function("encode", |b| {
        b.iter(|| {
            let mut out = Vec::with_capacity(archive.len() + (1 << 20));
            black_box(compressor.encode(Some(&base), &target, &mut out).is_ok())
        })
    });
    group.bench_function("decode", |b| {
        b.iter(|| black_box(compressor.decode(Some(&base), &mut archive.as_slice(), &mut std::io::sink()).is_ok()))
    });
    group.finish();
}

criterion_group!(benches, bench_dataset);
criterion_main!(benches);
