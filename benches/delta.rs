//! Throughput of the model delta compressor, per mode, on a generated BF16 pair.
//!
//! `CHITTY_DELTA_BENCH_BYTES` sets the size of each file (default 64 MiB; `scripts/bench-delta.sh` runs
//! the 1 GB figures through the CLI). Throughput is bytes of the target model per second.
//!
//! ```text
//! cargo bench --bench delta --features delta,testkit
//! ```

use std::hint::black_box;

use chitty::core::Compressor;
use chitty::delta::{Mode, ModelDeltaCompressor};
use chitty::testkit::model_pairs::{FloatDtype, ModelPairSpec, generate_pair};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn bench_modes(c: &mut Criterion) {
    let bytes = std::env::var("CHITTY_DELTA_BENCH_BYTES").ok().and_then(|v| v.parse().ok()).unwrap_or(64u64 << 20);
    let pair = generate_pair(&ModelPairSpec::with_target_bytes(FloatDtype::BF16, bytes, 1));
    let mut group = c.benchmark_group("delta");
    group.sample_size(10);
    group.throughput(Throughput::Bytes(pair.target.len() as u64));
    let modes = [
        ("lossless", Mode::Lossless),
        ("sparse", Mode::Sparse),
        ("int8", Mode::Int8),
        ("int4", Mode::Int4),
        ("1bit", Mode::OneBit),
    ];
    for (name, mode) in modes {
        let compressor = match ModelDeltaCompressor::builder().mode(mode).build() {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        };
        let mut archive = Vec::with_capacity(pair.target.len());
        if let Err(e) = compressor.encode(Some(&pair.base), &pair.target, &mut archive) {
            panic!("{e}");
        }
        group.bench_function(format!("{name}/encode"), |b| {
            b.iter(|| {
                let mut out = Vec::with_capacity(archive.len() + (1 << 20));
                black_box(compressor.encode(Some(&pair.base), &pair.target, &mut out).is_ok())
            })
        });
        group.bench_function(format!("{name}/decode"), |b| {
            b.iter(|| {
                black_box(compressor.decode(Some(&pair.base), &mut archive.as_slice(), &mut std::io::sink()).is_ok())
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_modes);
criterion_main!(benches);
