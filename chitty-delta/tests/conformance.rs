//! The testkit's Compressor conformance suite, run on generated pairs in every float dtype.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use chitty_delta::ModelDeltaCompressor;
use chitty_testkit::compressor as suite;
use chitty_testkit::model_pairs::{FloatDtype, ModelPairSpec, generate_pair};

fn compressor() -> ModelDeltaCompressor {
    // Small chunks so that tensors span several parts, as big ones do.
    ModelDeltaCompressor::builder().chunk_elements(256).build().unwrap()
}

#[test]
fn lossless_conformance_in_each_dtype() {
    for dtype in [FloatDtype::BF16, FloatDtype::F16, FloatDtype::F32] {
        let pair = generate_pair(&ModelPairSpec::tiny(11).dtype(dtype));
        let other = generate_pair(&ModelPairSpec::tiny(12).dtype(dtype));
        suite::run_all(&compressor(), Some(&pair.base), Some(&other.base), &pair.target, 200);
    }
}

#[test]
fn conformance_without_a_base() {
    let pair = generate_pair(&ModelPairSpec::tiny(13));
    suite::run_all(&compressor(), None, None, &pair.target, 150);
}

#[test]
fn a_base_of_another_layout_is_refused_before_any_output() {
    let pair = generate_pair(&ModelPairSpec::tiny(14));
    let mut other = ModelPairSpec::tiny(14);
    other.hidden = 24;
    let other = generate_pair(&other);
    suite::wrong_base_is_refused(&compressor(), &pair.base, &other.base, &pair.target);
    suite::wrong_base_is_refused(&compressor(), &pair.base, b"not a model", &pair.target);
}
