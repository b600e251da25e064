//! The file-level functions the `delta` example is built on: memory-mapped inputs, atomic outputs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;

use chitty_delta::files::{compress_file, decompress_file, inspect_file, verify_file};
use chitty_delta::{DeltaError, Mode, ModelDeltaCompressor};
use chitty_testkit::model_pairs::{ModelPairSpec, write_pair};

#[test]
fn compress_decompress_verify_inspect_on_files() {
    let dir = tempfile::tempdir().unwrap();
    let (base, target) = (dir.path().join("base.safetensors"), dir.path().join("ft.safetensors"));
    let sizes = write_pair(&ModelPairSpec::small(51), &base, &target).unwrap();
    assert_eq!(fs::metadata(&target).unwrap().len(), sizes.target_bytes);
    let c = ModelDeltaCompressor::builder().build().unwrap();
    let archive = dir.path().join("ft.delta");
    let mut last = 0;
    let report = compress_file(&c, Some(&base), &target, &archive, &mut |n| last = n).unwrap();
    assert_eq!(last, sizes.target_bytes);
    assert_eq!(fs::metadata(&archive).unwrap().len(), report.output_bytes);

    let restored = dir.path().join("restored.safetensors");
    let decoded = decompress_file(&c, Some(&base), &archive, &restored, &mut |_| {}).unwrap();
    assert_eq!(fs::read(&restored).unwrap(), fs::read(&target).unwrap());
    assert_eq!(decoded.output_bytes, sizes.target_bytes);

    let verified = verify_file(&c, Some(&base), &archive, &mut |_| {}).unwrap();
    assert_eq!(verified.parts_verified, decoded.parts_verified);
    let summary = inspect_file(&archive).unwrap();
    assert_eq!(summary.archive_bytes, report.output_bytes);
    assert!(summary.base.is_some());
}

#[test]
fn a_failed_decode_leaves_the_destination_untouched_and_no_temporary_file() {
    let dir = tempfile::tempdir().unwrap();
    let (base, target) = (dir.path().join("base.safetensors"), dir.path().join("ft.safetensors"));
    write_pair(&ModelPairSpec::tiny(52), &base, &target).unwrap();
    let other = dir.path().join("other.safetensors");
    write_pair(&ModelPairSpec::tiny(53), &other, &dir.path().join("other-ft.safetensors")).unwrap();
    let c = ModelDeltaCompressor::builder().mode(Mode::Lossless).build().unwrap();
    let archive = dir.path().join("ft.delta");
    compress_file(&c, Some(&base), &target, &archive, &mut |_| {}).unwrap();

    let out = dir.path().join("out.safetensors");
    fs::write(&out, b"previous contents").unwrap();
    let err = decompress_file(&c, Some(&other), &archive, &out, &mut |_| {}).unwrap_err();
    assert!(matches!(err, DeltaError::WrongBase { .. }), "{err}");
    assert_eq!(fs::read(&out).unwrap(), b"previous contents");

    let mut damaged = fs::read(&archive).unwrap();
    let at = damaged.len() / 2;
    damaged[at] ^= 0x40;
    fs::write(&archive, &damaged).unwrap();
    let err = decompress_file(&c, Some(&base), &archive, &out, &mut |_| {}).unwrap_err();
    assert!(matches!(err, DeltaError::Corrupt { .. }), "{err}");
    assert_eq!(fs::read(&out).unwrap(), b"previous contents");

    let leftovers: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".chitty-delta-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn missing_inputs_are_io_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let c = ModelDeltaCompressor::builder().build().unwrap();
    let missing = dir.path().join("nope.safetensors");
    let err = compress_file(&c, None, &missing, &dir.path().join("x.delta"), &mut |_| {}).unwrap_err();
    assert!(matches!(&err, DeltaError::Io { context, .. } if context.contains("nope.safetensors")), "{err}");
    assert!(!dir.path().join("x.delta").exists());
}

#[test]
fn an_output_that_resolves_to_an_input_is_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let (base, target) = (dir.path().join("base.safetensors"), dir.path().join("ft.safetensors"));
    write_pair(&ModelPairSpec::tiny(54), &base, &target).unwrap();
    let before = fs::read(&base).unwrap();
    let c = ModelDeltaCompressor::builder().build().unwrap();
    let link = dir.path().join("link");
    fs::hard_link(&base, &link).unwrap();
    for out in [&base, &link] {
        let err = compress_file(&c, Some(&base), &target, out, &mut |_| {}).unwrap_err();
        assert!(matches!(&err, DeltaError::OutputIsInput { input, .. } if *input == base), "{err}");
    }
    assert_eq!(fs::read(&base).unwrap(), before);

    let archive = dir.path().join("ft.delta");
    compress_file(&c, Some(&base), &target, &archive, &mut |_| {}).unwrap();
    let err = decompress_file(&c, Some(&base), &archive, &archive, &mut |_| {}).unwrap_err();
    assert!(matches!(&err, DeltaError::OutputIsInput { input, .. } if *input == archive), "{err}");
    let restored = dir.path().join("restored");
    decompress_file(&c, Some(&base), &archive, &restored, &mut |_| {}).unwrap();
    assert_eq!(fs::read(&restored).unwrap(), fs::read(&target).unwrap());
}

#[test]
fn an_output_that_is_not_a_regular_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (base, target) = (dir.path().join("base.safetensors"), dir.path().join("ft.safetensors"));
    write_pair(&ModelPairSpec::tiny(55), &base, &target).unwrap();
    let c = ModelDeltaCompressor::builder().build().unwrap();
    let err = compress_file(&c, Some(&base), &target, dir.path(), &mut |_| {}).unwrap_err();
    assert!(matches!(&err, DeltaError::OutputNotRegularFile { kind: "a directory", .. }), "{err}");
    let names: Vec<_> = fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names.len(), 2, "{names:?}");
}
