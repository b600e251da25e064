//! Lossless round trips on generated fine-tunes: methods chosen per tensor, sizes, reports.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use chitty_core::Compressor;
use chitty_delta::{Method, ModelDeltaCompressor};
use chitty_testkit::compressor as suite;
use chitty_testkit::model_pairs::{FloatDtype, ModelPairSpec, generate_pair};

#[test]
fn each_tensor_gets_the_method_its_change_calls_for() {
    let pair = generate_pair(&ModelPairSpec::small(31));
    let c = ModelDeltaCompressor::builder().build().unwrap();
    let report = suite::round_trip(&c, Some(&pair.base), &pair.target);
    let method = |name: &str| report.parts.iter().find(|p| p.name == name).unwrap().method.clone();
    assert_eq!(method("model.layers.0.mlp.up_proj.weight"), Method::Reference.as_str(), "frozen layer");
    assert_eq!(method("model.position_ids"), Method::Reference.as_str(), "unchanged integers");
    assert_eq!(method("model.layers.1.mlp.up_proj.weight"), Method::Delta.as_str(), "fine-tuned");
    assert_eq!(method("model.embed_tokens.weight"), Method::Delta.as_str(), "resized: common rows as a delta");
    let part = |name: &str| report.parts.iter().find(|p| p.name == name).unwrap().clone();
    let (embed, head) = (part("model.embed_tokens.weight"), part("score.weight"));
    assert!(
        (embed.stored_bytes as f64 / embed.original_bytes as f64)
            < 0.5 * (head.stored_bytes as f64 / head.original_bytes as f64),
        "the resized embedding costs far less than a whole tensor"
    );
    assert_eq!(method("score.weight"), Method::Whole.as_str(), "new head");
    assert_eq!(report.parts.iter().map(|p| p.original_bytes).sum::<u64>(), pair.target.len() as u64);
    assert!(report.parts.iter().all(|p| p.relative_error.is_none()));
    let stored: u64 = report.parts.iter().map(|p| p.stored_bytes).sum();
    assert!(stored >= report.output_bytes - 64, "parts account for the archive");
}

#[test]
fn deltas_are_much_smaller_than_the_fine_tune_in_every_dtype() {
    for (dtype, bound) in [(FloatDtype::BF16, 0.35), (FloatDtype::F16, 0.45), (FloatDtype::F32, 0.65)] {
        let pair = generate_pair(&ModelPairSpec::small(32).dtype(dtype));
        let c = ModelDeltaCompressor::builder().build().unwrap();
        let report = suite::round_trip(&c, Some(&pair.base), &pair.target);
        let ratio = report.output_bytes as f64 / report.input_bytes as f64;
        assert!(ratio < bound, "{dtype:?}: {ratio:.3}");
        let delta = report.parts.iter().find(|p| p.name == "model.layers.2.self_attn.q_proj.weight").unwrap();
        let whole = report.parts.iter().find(|p| p.name == "score.weight").unwrap();
        let ratio_of = |p: &chitty_core::PartReport| p.stored_bytes as f64 / p.original_bytes as f64;
        assert!(ratio_of(delta) < ratio_of(whole) * 0.7, "{dtype:?}: a delta beats the whole tensor");
    }
}

#[test]
fn output_does_not_depend_on_threads_or_chunking_only_on_settings() {
    let pair = generate_pair(&ModelPairSpec::small(33));
    let encode = |c: &ModelDeltaCompressor| {
        let mut a = Vec::new();
        c.encode(Some(&pair.base), &pair.target, &mut a).unwrap();
        a
    };
    let one = encode(&ModelDeltaCompressor::builder().threads(1).build().unwrap());
    let two = encode(&ModelDeltaCompressor::builder().threads(2).build().unwrap());
    assert_eq!(one, two, "archives are deterministic");
    let small_chunks = ModelDeltaCompressor::builder().chunk_elements(1000).build().unwrap();
    let report = suite::round_trip(&small_chunks, Some(&pair.base), &pair.target);
    assert!(report.output_bytes > 0);
}

#[test]
fn progress_reaches_the_whole_target() {
    let pair = generate_pair(&ModelPairSpec::tiny(34));
    let c = ModelDeltaCompressor::builder().chunk_elements(64).build().unwrap();
    let mut seen = Vec::new();
    let mut archive = Vec::new();
    c.encode_with_progress(Some(&pair.base), &pair.target, &mut archive, &mut |n| seen.push(n)).unwrap();
    assert!(seen.windows(2).all(|w| w[0] < w[1] || w[1] == w[0]));
    assert_eq!(seen.last().copied(), Some(pair.target.len() as u64));
    let mut out = Vec::new();
    let mut last = 0;
    c.decode_with_progress(Some(&pair.base), &mut archive.as_slice(), &mut out, &mut |n| last = n).unwrap();
    assert_eq!(last, pair.target.len() as u64);
}

#[test]
fn invalid_targets_are_typed_errors_naming_the_tensor() {
    let pair = generate_pair(&ModelPairSpec::tiny(35));
    let c = ModelDeltaCompressor::builder().build().unwrap();
    let mut bad = pair.target.clone();
    bad.truncate(bad.len() - 1);
    let err = c.encode(Some(&pair.base), &bad, &mut Vec::new()).unwrap_err();
    assert!(
        matches!(&err, chitty_core::CompressorError::InvalidInput { reason, .. } if reason.contains("score.weight")),
        "{err}"
    );
}
