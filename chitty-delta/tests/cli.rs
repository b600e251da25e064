//! The `chitty-delta` binary: the argument order kept from the example, `--json` reports, `--version`,
//! enumerated options in `--help`, a dataset round trip and exit codes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::{Command, Output};

use chitty_testkit::dataset_pairs::{DatasetEdit, RowFormat, derive, generate_rows};
use serde_json::Value;

fn run(args: &[&dyn AsRef<std::ffi::OsStr>]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_chitty-delta")).args(args.iter().map(|a| a.as_ref())).output().unwrap()
}

/// The report: the last line of stdout, as JSON.
fn report(out: &Output) -> Value {
    let stdout = String::from_utf8(out.stdout.clone()).unwrap();
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|e| panic!("{e}: {stdout:?}"))
}

fn pair(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf, Vec<u8>) {
    let base = generate_rows(RowFormat::Csv, 5_000, 3);
    let target = derive(&base, RowFormat::Csv, DatasetEdit::EditRows { percent: 2 }, 3);
    let (b, t) = (dir.join("base.csv"), dir.join("target.csv"));
    std::fs::write(&b, &base).unwrap();
    std::fs::write(&t, &target).unwrap();
    (b, t, target)
}

#[test]
fn a_dataset_round_trips_through_compress_verify_decompress_and_inspect() {
    let dir = tempfile::tempdir().unwrap();
    let (base, target, bytes) = pair(dir.path());
    let (archive, restored) = (dir.path().join("a.delta"), dir.path().join("restored.csv"));

    let out = run(&[&"--json", &"compress", &base, &target, &"-o", &archive]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r = report(&out);
    assert_eq!(
        (r["result"].as_str(), r["op"].as_str(), r["kind"].as_str()),
        (Some("ok"), Some("compress"), Some("dataset"))
    );
    assert_eq!(r["input_bytes"].as_u64(), Some(bytes.len() as u64));
    assert!(r["output_bytes"].as_u64().unwrap() * 20 < bytes.len() as u64, "{r}");
    let parts = r["parts"].as_array().unwrap();
    assert!(!parts.is_empty() && parts.iter().all(|p| p["method"].as_str().is_some_and(|m| m.contains("copy"))), "{r}");

    let out = run(&[&"verify", &base, &archive, &"--json"]);
    assert!(out.status.success());
    assert_eq!(report(&out)["output_bytes"].as_u64(), Some(bytes.len() as u64));

    // Without --json the report is key=value pairs.
    let out = run(&[&"decompress", &base, &archive, &"-o", &restored]);
    assert!(out.status.success());
    let line = String::from_utf8(out.stdout).unwrap();
    assert!(line.starts_with("result=ok op=decompress"), "{line}");
    assert!(std::fs::read(&restored).unwrap() == bytes);

    let out = run(&[&"--json", &"inspect", &archive]);
    let r = report(&out);
    assert_eq!(r["format"].as_str(), Some("chitty-dataset-delta"));
    assert_eq!(r["target_bytes"].as_u64(), Some(bytes.len() as u64));
}

#[test]
fn failures_exit_with_their_codes_and_report_them_in_json() {
    let dir = tempfile::tempdir().unwrap();
    let (base, target, _) = pair(dir.path());
    let archive = dir.path().join("a.delta");
    assert!(run(&[&"compress", &base, &target, &"-o", &archive]).status.success());

    // The target as the base: refused as the wrong base, before anything is written.
    let out = run(&[&"--json", &"decompress", &target, &archive, &"-o", &dir.path().join("x")]);
    assert_eq!(out.status.code(), Some(5));
    let r = report(&out);
    assert_eq!((r["result"].as_str(), r["exit_code"].as_u64()), (Some("error"), Some(5)));
    assert!(!dir.path().join("x").exists());

    let mut bytes = std::fs::read(&archive).unwrap();
    let at = bytes.len() - 40;
    bytes[at] ^= 1;
    std::fs::write(&archive, &bytes).unwrap();
    assert_eq!(run(&[&"verify", &base, &archive]).status.code(), Some(4));

    assert_eq!(run(&[&"compress", &base, &target, &"-o", &archive, &"--kind", &"tensor"]).status.code(), Some(2));
    let out = run(&[&"compress", &base, &target, &"-o", &archive, &"--kind", &"dataset", &"--mode", &"int8"]);
    assert_eq!(out.status.code(), Some(3));
}

#[test]
fn version_and_help_list_what_can_be_chosen() {
    let out = run(&[&"--version"]);
    assert!(out.status.success());
    assert_eq!(String::from_utf8(out.stdout).unwrap().trim(), format!("chitty-delta {}", env!("CARGO_PKG_VERSION")));
    let help = String::from_utf8(run(&[&"compress", &"--help"]).stdout).unwrap();
    for word in ["auto", "model", "dataset", "lossless", "sparse", "int8", "int4", "1bit", "--json", "--threads"] {
        assert!(help.contains(word), "`{word}` missing from:\n{help}");
    }
}

#[test]
fn a_model_repository_round_trips_through_the_binary_with_directory_arguments() {
    use chitty_testkit::model_pairs::{RepoPairSpec, write_repo_pair};
    let dir = tempfile::tempdir().unwrap();
    let (base, target) = (dir.path().join("base"), dir.path().join("ft"));
    // The base in 3 shards, the fine-tune in 2: no shard lines up.
    write_repo_pair(&RepoPairSpec::small(11), &base, &target).unwrap();
    let (archive, restored) = (dir.path().join("ft.delta"), dir.path().join("restored"));

    let out = run(&[&"--json", &"compress", &base, &target, &"-o", &archive]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r = report(&out);
    assert_eq!((r["kind"].as_str(), r["files_reused"].as_u64()), (Some("repository"), Some(0)), "{r}");
    let files = r["entries"].as_array().unwrap();
    assert!(files.iter().any(|e| e["path"] == "model.safetensors.index.json" && e["kind"] == "dataset"), "{r}");
    assert!(r["output_bytes"].as_u64().unwrap() * 2 < r["input_bytes"].as_u64().unwrap(), "{r}");

    let out = run(&[&"--json", &"verify", &base, &archive]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(report(&out)["files"].as_u64(), Some(files.len() as u64));

    let out = run(&[&"--json", &"inspect", &archive]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r = report(&out);
    assert_eq!(r["format"].as_str(), Some("chitty-repo-delta"));
    assert_eq!(r["base_shards"].as_array().map(Vec::len), Some(3));

    let out = run(&[&"decompress", &base, &archive, &"-o", &restored]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let names = chitty_delta::repo::scan_dir(&target).unwrap();
    assert_eq!(chitty_delta::repo::scan_dir(&restored).unwrap(), names);
    for n in &names {
        assert!(std::fs::read(target.join(n)).unwrap() == std::fs::read(restored.join(n)).unwrap(), "{n}");
    }

    // The fine-tune as the base: refused as the wrong base (exit 5), nothing written.
    let out = run(&[&"decompress", &target, &archive, &"-o", &dir.path().join("x")]);
    assert_eq!(out.status.code(), Some(5), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!dir.path().join("x").exists());
    // A file against a directory is a usage error.
    let out = run(&[&"compress", &base, &target.join("config.json"), &"-o", &dir.path().join("y")]);
    assert_eq!(out.status.code(), Some(3));
}

#[test]
fn max_rel_error_reports_each_choice_and_analyze_estimates_every_mode() {
    use chitty_testkit::model_pairs::{ModelPairSpec, generate_pair};
    let dir = tempfile::tempdir().unwrap();
    let pair = generate_pair(&ModelPairSpec::small(12));
    let (base, target, archive) =
        (dir.path().join("b.safetensors"), dir.path().join("t.safetensors"), dir.path().join("a.delta"));
    std::fs::write(&base, &pair.base).unwrap();
    std::fs::write(&target, &pair.target).unwrap();

    let out = run(&[&"--json", &"compress", &base, &target, &"-o", &archive, &"--max-rel-error", &"0.5"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r = report(&out);
    let parts = r["parts"].as_array().unwrap();
    for p in parts.iter().filter(|p| p["relative_error"].is_f64()) {
        assert!(p["relative_error"].as_f64().unwrap() <= 0.5, "{p}");
    }
    let savings = r["savings_by_method"].as_array().unwrap();
    let shares: f64 = savings.iter().map(|s| s["share_of_saved"].as_f64().unwrap()).sum();
    assert!((shares - 1.0).abs() < 1e-9, "{r}");

    let out = run(&[&"--json", &"analyze", &base, &target, &"--estimates-only", &"--max-rel-error", &"0.5"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r2 = report(&out);
    let estimates = r2["estimates"].as_array().unwrap();
    let modes: Vec<&str> = estimates.iter().map(|e| e["mode"].as_str().unwrap()).collect();
    assert_eq!(modes, ["lossless", "sparse", "int8", "int4", "1bit", "max-rel-error=0.5"]);
    let real = r["output_bytes"].as_f64().unwrap();
    let est = estimates[5]["archive_bytes"].as_f64().unwrap();
    assert!((est - real).abs() / real <= 0.10, "estimated {est} for {real}");
}

/// A table of `n` rows (keeping those `keep` accepts) as `parquet`'s `ArrowWriter` writes it, in calls of
/// 8,192 rows.
fn parquet_file(n: i64, keep: &dyn Fn(i64) -> bool) -> Vec<u8> {
    use std::sync::Arc;
    let ids: Vec<i64> = (0..n).filter(|&i| keep(i)).collect();
    let names: Vec<String> = ids.iter().map(|i| format!("customer-{}", i % 97)).collect();
    let batch = arrow::array::RecordBatch::try_from_iter([
        ("id", Arc::new(arrow::array::Int64Array::from(ids)) as arrow::array::ArrayRef),
        ("name", Arc::new(arrow::array::StringArray::from(names)) as _),
    ])
    .unwrap();
    common::write_parquet(&batch, None, 8192)
}

#[test]
fn a_parquet_rewrite_round_trips_through_the_binary_by_value() {
    let dir = tempfile::tempdir().unwrap();
    let (base, target) = (dir.path().join("base.parquet"), dir.path().join("target.parquet"));
    std::fs::write(&base, parquet_file(60_000, &|_| true)).unwrap();
    let bytes = parquet_file(60_000, &|i| i % 20 != 7);
    std::fs::write(&target, &bytes).unwrap();
    let (archive, restored) = (dir.path().join("p.delta"), dir.path().join("restored.parquet"));

    let out = run(&[&"--json", &"compress", &base, &target, &"-o", &archive]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(report(&out)["parts"][0]["method"], "parquet-rows", "{}", report(&out));
    assert!(std::fs::metadata(&archive).unwrap().len() * 3 < bytes.len() as u64);
    let out = run(&[&"--json", &"verify", &base, &archive]);
    assert!(out.status.success(), "verify: {}", String::from_utf8_lossy(&out.stderr));
    let out = run(&[&"--json", &"decompress", &base, &archive, &"-o", &restored]);
    assert!(out.status.success(), "decompress: {}", String::from_utf8_lossy(&out.stderr));
    assert!(std::fs::read(&restored).unwrap() == bytes, "the restored file differs");
}
