//! Model repositories as one archive: sharded differently, single files, wrong bases, corruption, and
//! runs that resume after an interruption without trusting what they find.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use chitty_delta::DeltaError;
use chitty_delta::repo::{RepoCompressor, RepoEvent, partial_dir, scan_dir};
use chitty_testkit::model_pairs::{ModelPairSpec, RepoPairSpec, write_repo_pair};

struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
    base: PathBuf,
    target: PathBuf,
}

fn fixture(spec: &RepoPairSpec) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_owned();
    let (base, target) = (root.join("base"), root.join("ft"));
    write_repo_pair(spec, &base, &target).unwrap();
    Fixture { _dir: dir, root, base, target }
}

fn assert_same_tree(a: &Path, b: &Path) {
    let (files_a, files_b) = (scan_dir(a).unwrap(), scan_dir(b).unwrap());
    assert_eq!(files_a, files_b);
    for f in &files_a {
        assert!(std::fs::read(a.join(f)).unwrap() == std::fs::read(b.join(f)).unwrap(), "{f} differs");
    }
}

fn no_events() -> impl FnMut(RepoEvent<'_>) -> Result<(), DeltaError> {
    |_| Ok(())
}

/// Fails the run once `n` files have been done (not reused): an interruption at a file boundary.
fn stop_after(n: usize) -> impl FnMut(RepoEvent<'_>) -> Result<(), DeltaError> {
    let mut done = 0;
    move |e| {
        if let RepoEvent::FileDone { reused: false, .. } = e {
            done += 1;
            if done == n {
                return Err(DeltaError::Internal { reason: "simulated interruption".into() });
            }
        }
        Ok(())
    }
}

fn repo() -> RepoCompressor {
    RepoCompressor::builder().build().unwrap()
}

#[test]
fn a_fine_tune_sharded_differently_round_trips_and_matches_tensors_across_shards() {
    let f = fixture(&RepoPairSpec::small(3));
    let base_files = scan_dir(&f.base).unwrap();
    let target_files = scan_dir(&f.target).unwrap();
    assert!(base_files.contains(&"model-00003-of-00003.safetensors".to_owned()), "{base_files:?}");
    assert!(target_files.contains(&"model-00002-of-00002.safetensors".to_owned()), "{target_files:?}");

    let archive = f.root.join("ft.delta");
    let r = repo().compress(&f.base, &f.target, &archive, &mut no_events()).unwrap();
    assert_eq!(r.entries.len(), target_files.len());
    assert!(r.entries.iter().all(|e| !e.reused));
    // Every fine-tuned tensor found its base in some base shard: only the new head is stored whole.
    let whole: Vec<&str> =
        r.report.parts.iter().filter(|p| p.method.starts_with("whole")).map(|p| p.name.as_str()).collect();
    assert_eq!(whole.len(), 1, "{whole:?}");
    assert!(whole[0].ends_with(": score.weight"), "{whole:?}");
    let tensors: usize =
        r.report.parts.iter().filter(|p| p.name.contains(".safetensors: ") && p.method != "header+zstd").count();
    assert!(tensors > 20, "{tensors}");
    // Far smaller than the weights (the deltas are small), and the metadata files are dataset deltas.
    assert!(r.report.output_bytes * 2 < r.report.input_bytes, "{} of {}", r.report.output_bytes, r.report.input_bytes);
    assert!(!partial_dir(&archive).exists(), "the progress is removed on success");

    let out = f.root.join("restored");
    let d = repo().decompress(&f.base, &archive, &out, &mut no_events()).unwrap();
    assert_eq!(d.report.output_bytes, r.report.input_bytes);
    assert_same_tree(&f.target, &out);
    assert!(!partial_dir(&out).exists());

    let v = repo().verify(&f.base, &archive, &mut no_events()).unwrap();
    assert_eq!(v.report.parts_verified, d.report.parts_verified);
    let s = repo().inspect(&archive).unwrap();
    assert_eq!(s.base_shards.len(), 3);
    assert_eq!(s.archive_bytes, std::fs::metadata(&archive).unwrap().len());
    let shard = s.entries.iter().find(|e| e.path == "model-00001-of-00002.safetensors").unwrap();
    assert!(!shard.tensors.is_empty());
}

#[test]
fn single_file_and_mixed_layouts_round_trip() {
    for (base_shards, target_shards) in [(1, 1), (1, 3), (2, 1)] {
        let spec = RepoPairSpec { model: ModelPairSpec::tiny(5), base_shards, target_shards };
        let f = fixture(&spec);
        let archive = f.root.join("a.delta");
        let r = repo().compress(&f.base, &f.target, &archive, &mut no_events()).unwrap();
        let whole = r.report.parts.iter().filter(|p| p.method.starts_with("whole")).count();
        assert_eq!(whole, 1, "{base_shards} -> {target_shards}: {:?}", r.report.parts);
        let out = f.root.join("out");
        repo().decompress(&f.base, &archive, &out, &mut no_events()).unwrap();
        assert_same_tree(&f.target, &out);
    }
}

#[test]
fn a_wrong_or_incomplete_base_is_refused_before_anything_is_written() {
    let f = fixture(&RepoPairSpec::small(4));
    let archive = f.root.join("ft.delta");
    repo().compress(&f.base, &f.target, &archive, &mut no_events()).unwrap();
    let out = f.root.join("out");

    // The fine-tune as its own base: other shard names.
    let e = repo().decompress(&f.target, &archive, &out, &mut no_events()).unwrap_err();
    assert!(matches!(e.innermost(), DeltaError::WrongBase { .. }), "{e}");
    assert!(e.to_string().contains("model-00001-of-00003.safetensors"), "{e}");
    assert!(!out.exists() && !partial_dir(&out).exists());

    // Another base of the same layout: same names, other headers.
    let other = fixture(&RepoPairSpec { model: ModelPairSpec::small(4).delta_scale(0.0), ..RepoPairSpec::small(4) });
    let _ = std::fs::remove_file(other.base.join("model-00002-of-00003.safetensors"));
    std::fs::copy(
        other.target.join("model-00001-of-00002.safetensors"),
        other.base.join("model-00002-of-00003.safetensors"),
    )
    .unwrap();
    let e = repo().verify(&other.base, &archive, &mut no_events()).unwrap_err();
    assert!(matches!(e.innermost(), DeltaError::WrongBase { .. }), "{e}");

    // A dataset entry's base file edited: refused as the wrong base, naming the file.
    let base = f.root.join("base2");
    std::fs::create_dir(&base).unwrap();
    for p in scan_dir(&f.base).unwrap() {
        std::fs::create_dir_all(base.join(&p).parent().unwrap()).unwrap();
        std::fs::copy(f.base.join(&p), base.join(&p)).unwrap();
    }
    std::fs::write(base.join("config.json"), b"{\"hidden_size\": 1}").unwrap();
    let e = repo().decompress(&base, &archive, &out, &mut no_events()).unwrap_err();
    assert!(matches!(e.innermost(), DeltaError::WrongBase { .. }), "{e}");
    assert!(e.to_string().contains("config.json"), "{e}");
    assert!(!out.exists());
}

#[test]
fn corrupt_and_truncated_archives_are_errors_naming_the_part() {
    let f = fixture(&RepoPairSpec::small(6));
    let archive = f.root.join("ft.delta");
    repo().compress(&f.base, &f.target, &archive, &mut no_events()).unwrap();
    let bytes = std::fs::read(&archive).unwrap();

    let flipped = f.root.join("flipped.delta");
    let mut b = bytes.clone();
    let at = b.len() / 2;
    b[at] ^= 0x40;
    std::fs::write(&flipped, &b).unwrap();
    let e = repo().verify(&f.base, &flipped, &mut no_events()).unwrap_err();
    assert!(matches!(e.innermost(), DeltaError::Corrupt { .. }), "{e}");
    assert!(matches!(e, DeltaError::InFile { .. }), "names the file: {e}");
    assert!(repo().inspect(&flipped).is_err());

    let truncated = f.root.join("truncated.delta");
    std::fs::write(&truncated, &bytes[..bytes.len() - 10]).unwrap();
    let e = repo().verify(&f.base, &truncated, &mut no_events()).unwrap_err();
    assert!(matches!(e.innermost(), DeltaError::Corrupt { .. }), "{e}");
}

#[test]
fn an_interrupted_compress_resumes_with_the_files_it_finished_and_the_same_archive() {
    let f = fixture(&RepoPairSpec::small(7));
    let whole_run = f.root.join("whole.delta");
    repo().compress(&f.base, &f.target, &whole_run, &mut no_events()).unwrap();
    let files = scan_dir(&f.target).unwrap().len();

    let archive = f.root.join("ft.delta");
    let e = repo().compress(&f.base, &f.target, &archive, &mut stop_after(3)).unwrap_err();
    assert!(matches!(e, DeltaError::Internal { .. }), "{e}");
    assert!(!archive.exists() && partial_dir(&archive).join("state.json").exists());

    let r = repo().compress(&f.base, &f.target, &archive, &mut no_events()).unwrap();
    let reused = r.entries.iter().filter(|e| e.reused).count();
    assert_eq!((reused, r.entries.len()), (3, files));
    assert!(std::fs::read(&archive).unwrap() == std::fs::read(&whole_run).unwrap(), "the resumed archive is the same");
}

#[test]
fn a_resumed_compress_trusts_neither_a_tampered_part_nor_a_state_for_other_inputs() {
    let f = fixture(&RepoPairSpec::small(8));
    let whole_run = f.root.join("whole.delta");
    repo().compress(&f.base, &f.target, &whole_run, &mut no_events()).unwrap();
    let archive = f.root.join("ft.delta");
    let partial = partial_dir(&archive);

    // A finished part altered on disk: that part is redone, the other kept.
    repo().compress(&f.base, &f.target, &archive, &mut stop_after(2)).unwrap_err();
    let part = partial.join("entry-000000.delta");
    let mut bytes = std::fs::read(&part).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&part, &bytes).unwrap();
    let r = repo().compress(&f.base, &f.target, &archive, &mut no_events()).unwrap();
    assert_eq!(r.entries.iter().filter(|e| e.reused).count(), 1);
    assert!(std::fs::read(&archive).unwrap() == std::fs::read(&whole_run).unwrap());

    // A state whose inputs were rewritten: nothing reused.
    std::fs::remove_file(&archive).unwrap();
    repo().compress(&f.base, &f.target, &archive, &mut stop_after(2)).unwrap_err();
    let state_path = partial.join("state.json");
    let mut state: serde_json::Value = serde_json::from_slice(&std::fs::read(&state_path).unwrap()).unwrap();
    state["inputs"] = serde_json::json!("0".repeat(64));
    std::fs::write(&state_path, serde_json::to_vec(&state).unwrap()).unwrap();
    let r = repo().compress(&f.base, &f.target, &archive, &mut no_events()).unwrap();
    assert_eq!(r.entries.iter().filter(|e| e.reused).count(), 0);

    // A target file edited since the interruption: its part is redone, the others kept, and the archive
    // is the new target's.
    std::fs::remove_file(&archive).unwrap();
    repo().compress(&f.base, &f.target, &archive, &mut stop_after(3)).unwrap_err();
    std::fs::write(f.target.join("README.md"), b"# Edited after the interruption\n").unwrap();
    let r = repo().compress(&f.base, &f.target, &archive, &mut no_events()).unwrap();
    let reused: Vec<&str> = r.entries.iter().filter(|e| e.reused).map(|e| e.path.as_str()).collect();
    assert_eq!(reused, ["config.json", "generation_config.json"]);
    let out = f.root.join("out");
    repo().decompress(&f.base, &archive, &out, &mut no_events()).unwrap();
    assert_same_tree(&f.target, &out);
}

#[test]
fn an_interrupted_decompress_resumes_and_redoes_a_tampered_file() {
    let f = fixture(&RepoPairSpec::small(9));
    let archive = f.root.join("ft.delta");
    repo().compress(&f.base, &f.target, &archive, &mut no_events()).unwrap();
    let out = f.root.join("out");
    let partial = partial_dir(&out);

    repo().decompress(&f.base, &archive, &out, &mut stop_after(3)).unwrap_err();
    assert!(!out.exists(), "the directory appears only when complete");
    let r = repo().decompress(&f.base, &archive, &out, &mut no_events()).unwrap();
    assert_eq!(r.entries.iter().filter(|e| e.reused).count(), 3);
    assert_same_tree(&f.target, &out);

    // A file finished by the first run and then altered is rebuilt, not kept.
    std::fs::remove_dir_all(&out).unwrap();
    repo().decompress(&f.base, &archive, &out, &mut stop_after(2)).unwrap_err();
    let first = scan_dir(&f.target).unwrap()[0].clone();
    std::fs::write(partial.join(&first), b"tampered").unwrap();
    let r = repo().decompress(&f.base, &archive, &out, &mut no_events()).unwrap();
    assert_eq!(r.entries.iter().filter(|e| e.reused).count(), 1);
    assert_same_tree(&f.target, &out);

    // A non-empty output directory is refused.
    let e = repo().decompress(&f.base, &archive, &out, &mut no_events()).unwrap_err();
    assert!(matches!(e, DeltaError::InvalidRepository { .. }), "{e}");
}
