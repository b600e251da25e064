//! Lossy modes: sizes, reported errors, policy, and the corruption clauses of the conformance suite.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use chitty_core::{Compressor, EncodeReport, PartReport};
use chitty_delta::{Method, Mode, ModelDeltaCompressor};
use chitty_testkit::compressor as suite;
use chitty_testkit::model_pairs::{FloatDtype, ModelPair, ModelPairSpec, generate_pair};

fn run(mode: Mode, pair: &ModelPair) -> (EncodeReport, Vec<u8>) {
    let c = ModelDeltaCompressor::builder().mode(mode).build().unwrap();
    let (archive, report) = suite::encode(&c, Some(&pair.base), &pair.target);
    let restored = suite::decode(&c, Some(&pair.base), &archive);
    assert_eq!(restored.len(), pair.target.len());
    (report, restored)
}

fn matrices(report: &EncodeReport, method: Method) -> Vec<&PartReport> {
    report.parts.iter().filter(|p| p.method == method.as_str()).collect()
}

/// Relative Frobenius error of the restored file's deltas, measured independently of the report.
fn measured_error(pair: &ModelPair, restored: &[u8], name: &str) -> f64 {
    let layout = chitty_delta::safetensors::SafetensorsLayout::parse(&pair.target).unwrap();
    let base_layout = chitty_delta::safetensors::SafetensorsLayout::parse(&pair.base).unwrap();
    let t = layout.tensors.iter().find(|t| t.name == name).unwrap();
    let b = base_layout.tensors.iter().find(|t| t.name == name).unwrap();
    let f = |x: &[u8]| f32::from_le_bytes([x[0], x[1], x[2], x[3]]) as f64;
    let (mut err, mut norm) = (0.0, 0.0);
    let tb = layout.tensor_bytes(&pair.target, t).chunks_exact(4);
    let rb = layout.tensor_bytes(restored, t).chunks_exact(4);
    let bb = base_layout.tensor_bytes(&pair.base, b).chunks_exact(4);
    for ((t, r), b) in tb.zip(rb).zip(bb) {
        err += (f(r) - f(t)).powi(2);
        norm += (f(t) - f(b)).powi(2);
    }
    (err / norm).sqrt()
}

#[test]
fn each_lossy_mode_reports_the_error_it_makes() {
    let pair = generate_pair(&ModelPairSpec::small(41).dtype(FloatDtype::F32));
    let name = "model.layers.2.mlp.up_proj.weight";
    let mut errors = Vec::new();
    for (mode, method, max_error) in [
        (Mode::Int8, Method::Int8, 0.02),
        (Mode::Int4, Method::Int4, 0.3),
        (Mode::Sparse, Method::Sparse, 0.95),
        (Mode::OneBit, Method::OneBit, 0.7),
    ] {
        let (report, restored) = run(mode, &pair);
        let parts = matrices(&report, method);
        assert!(parts.len() >= 7 * 2, "{mode:?}: every changed matrix of the unfrozen layers");
        let part = parts.iter().find(|p| p.name == name).unwrap();
        let reported = part.relative_error.unwrap();
        let measured = measured_error(&pair, &restored, name);
        assert!((reported - measured).abs() < 1e-6 * (1.0 + measured), "{mode:?}: {reported} vs {measured}");
        assert!(reported < max_error && reported > 0.0, "{mode:?}: error {reported}");
        errors.push(reported);
    }
    assert!(errors[0] < errors[1], "int8 is more accurate than int4: {errors:?}");
}

#[test]
fn one_bit_is_at_least_ten_times_smaller_than_the_fine_tune_for_matrices() {
    for dtype in [FloatDtype::BF16, FloatDtype::F32] {
        let pair = generate_pair(&ModelPairSpec::small(42).dtype(dtype));
        let (report, _) = run(Mode::OneBit, &pair);
        let parts = matrices(&report, Method::OneBit);
        let original: u64 = parts.iter().map(|p| p.original_bytes).sum();
        let stored: u64 = parts.iter().map(|p| p.stored_bytes).sum();
        assert!(stored * 10 <= original, "{dtype:?}: {stored} of {original}");
    }
}

#[test]
fn the_policy_keeps_embeddings_norms_and_vectors_lossless_unless_a_rule_says_otherwise() {
    let pair = generate_pair(&ModelPairSpec::small(43).dtype(FloatDtype::F32));
    let (report, _) = run(Mode::Int4, &pair);
    let method = |name: &str| report.parts.iter().find(|p| p.name == name).unwrap().method.clone();
    assert_eq!(method("model.embed_tokens.weight"), Method::Delta.as_str());
    assert_eq!(method("model.layers.1.input_layernorm.weight"), Method::Delta.as_str());
    assert_eq!(method("model.layers.1.self_attn.q_proj.weight"), Method::Int4.as_str());
    assert_eq!(method("model.layers.0.self_attn.q_proj.weight"), Method::Reference.as_str(), "frozen stays exact");
    assert!(report.parts.iter().filter(|p| p.method == "delta-planes+zstd").all(|p| p.relative_error.is_none()));

    let c = ModelDeltaCompressor::builder()
        .mode(Mode::Int8)
        .rule("*.mlp.*", Mode::Lossless)
        .rule("lm_head*", Mode::OneBit)
        .build()
        .unwrap();
    let (_, report) = suite::encode(&c, Some(&pair.base), &pair.target);
    let method = |name: &str| report.parts.iter().find(|p| p.name == name).unwrap().method.clone();
    assert_eq!(method("model.layers.1.mlp.down_proj.weight"), Method::Delta.as_str());
    assert_eq!(method("model.layers.1.self_attn.o_proj.weight"), Method::Int8.as_str());
    assert_eq!(method("lm_head.weight"), Method::OneBit.as_str());
}

#[test]
fn lossy_archives_meet_the_corruption_clauses() {
    let pair = generate_pair(&ModelPairSpec::tiny(44).dtype(FloatDtype::F32));
    let other = generate_pair(&ModelPairSpec::tiny(45).dtype(FloatDtype::F32));
    for mode in [Mode::Sparse, Mode::Int8, Mode::Int4, Mode::OneBit] {
        let c = ModelDeltaCompressor::builder().mode(mode).chunk_elements(128).build().unwrap();
        // Byte flips on two payload layouts (bitmap + planes, scales + nibbles) keep this fast; the
        // frame checks that catch them do not depend on the mode. Truncation and bases: all modes.
        if matches!(mode, Mode::Sparse | Mode::Int4) {
            suite::flipped_bytes_are_detected(&c, Some(&pair.base), &pair.target, 40);
        }
        suite::truncation_is_detected(&c, Some(&pair.base), &pair.target, 60);
        suite::wrong_base_is_refused(&c, &pair.base, &other.base, &pair.target);
        suite::missing_base_is_refused(&c, &pair.base, &pair.target);
    }
}

#[test]
fn inspect_reads_methods_sizes_and_errors_without_the_base() {
    let pair = generate_pair(&ModelPairSpec::small(46).dtype(FloatDtype::F32));
    let c = ModelDeltaCompressor::builder().mode(Mode::Int8).build().unwrap();
    let mut archive = Vec::new();
    let report = c.encode(Some(&pair.base), &pair.target, &mut archive).unwrap();
    let summary = chitty_delta::inspect(&mut archive.as_slice()).unwrap();
    assert_eq!(summary.archive_bytes, archive.len() as u64);
    assert_eq!(summary.target_bytes, pair.target.len() as u64);
    for t in &summary.tensors {
        let part = report.parts.iter().find(|p| p.name == t.name).unwrap();
        assert_eq!(t.method.as_str(), part.method);
        assert_eq!(t.stored_bytes, part.stored_bytes);
        assert_eq!(t.relative_error, part.relative_error, "{}", t.name);
    }
}
