//! Calibrated lossy storage (`max_rel_error`) and the per-mode archive estimates `analyze` reports, both
//! checked against real archives.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use chitty_core::Compressor;
use chitty_delta::{Method, Mode, ModelDeltaCompressor, inspect};
use chitty_testkit::model_pairs::{FloatDtype, ModelPairSpec, generate_pair};

fn archive(c: &ModelDeltaCompressor, base: &[u8], target: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    c.encode(Some(base), target, &mut out).unwrap();
    out
}

#[test]
fn each_tensor_takes_the_smallest_encoding_within_the_error_bound() {
    let pair = generate_pair(&ModelPairSpec::small(21));
    let chunked = || ModelDeltaCompressor::builder().chunk_elements(8192);
    let lossless = inspect(&mut archive(&chunked().build().unwrap(), &pair.base, &pair.target).as_slice()).unwrap();
    let mut previous = u64::MAX;
    let mut lossy_seen = false;
    for limit in [0.0, 0.05, 0.2, 0.5, 1.0, 1.5] {
        let c = chunked().max_rel_error(limit).build().unwrap();
        let bytes = archive(&c, &pair.base, &pair.target);
        let s = inspect(&mut bytes.as_slice()).unwrap();
        for (t, exact) in s.tensors.iter().zip(&lossless.tensors) {
            assert_eq!(t.name, exact.name);
            if t.method.is_lossy() {
                lossy_seen = true;
                let e = t.relative_error.unwrap();
                assert!(e <= limit + 1e-9, "{} {:?}: error {e} over {limit}", t.name, t.method);
                assert!(t.stored_bytes < exact.stored_bytes, "{} {:?} is not smaller than lossless", t.name, t.method);
            } else if exact.method == Method::Delta && t.shape.len() >= 2 {
                assert_eq!(t.method, Method::Delta);
            }
        }
        assert!(s.archive_bytes <= previous, "a looser bound never makes the archive larger ({limit})");
        previous = s.archive_bytes;
        if limit == 0.0 {
            // Nothing lossy under a zero bound: the archive decodes to the target exactly.
            assert!(s.tensors.iter().all(|t| !t.method.is_lossy()));
            let mut out = Vec::new();
            c.decode(Some(&pair.base), &mut bytes.as_slice(), &mut out).unwrap();
            assert!(out == pair.target);
        }
    }
    assert!(lossy_seen, "some bound admitted a lossy encoding");
    assert!(previous < lossless.archive_bytes, "the loosest bound saved bytes");
}

#[test]
fn estimates_are_within_ten_percent_of_the_real_archive_in_every_mode() {
    let pairs = [
        ("small BF16, 4 Ki-element chunks", generate_pair(&ModelPairSpec::small(22)), 4096),
        (
            "4 MB F16, 8 Ki-element chunks",
            generate_pair(&ModelPairSpec::with_target_bytes(FloatDtype::F16, 4 << 20, 23)),
            8192,
        ),
        (
            "2 MB F32, 4 Ki-element chunks",
            generate_pair(&ModelPairSpec::with_target_bytes(FloatDtype::F32, 2 << 20, 24)),
            4096,
        ),
    ];
    for (what, pair, chunk) in &pairs {
        let builders: Vec<(String, _)> = [Mode::Lossless, Mode::Sparse, Mode::Int8, Mode::Int4, Mode::OneBit]
            .into_iter()
            .map(|m| (format!("{m:?}"), ModelDeltaCompressor::builder().chunk_elements(*chunk).mode(m)))
            .chain([(
                "within 0.3".to_owned(),
                ModelDeltaCompressor::builder().chunk_elements(*chunk).max_rel_error(0.3),
            )])
            .collect();
        for (mode, b) in builders {
            let c = b.build().unwrap();
            let est = c.estimate_sharded(&[&pair.base], &pair.target, 4).unwrap();
            let sampled = est.tensors.len();
            let real = archive(&c, &pair.base, &pair.target).len() as u64;
            let off = (est.archive_bytes as f64 - real as f64).abs() / real as f64;
            assert!(off <= 0.10, "{what}, {mode}: estimated {} for {real} ({:.1} %)", est.archive_bytes, 100.0 * off);
            assert!(sampled > 10);
        }
    }
}
