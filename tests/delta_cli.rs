//! The `delta` example's command-line contract, through the built binary: outputs that would destroy an
//! input or are not regular files are refused before anything is written, `-o -` streams to standard
//! output, SIGINT and SIGTERM leave no temporary file, `inspect` escapes control characters, and the
//! optional keyed MAC.
//!
//! The binary is `target/<profile>/examples/delta`, which `cargo test --features delta` builds along with
//! this test. Selecting this test alone does not build it: `cargo build --features delta --example delta`
//! first.
#![cfg(unix)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use chitty_testkit::model_pairs::{ModelPairSpec, write_pair};

/// The `delta` example next to this test's own binary (`target/<profile>/deps/delta_cli-…`).
fn delta_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(Path::parent).unwrap();
    let bin = profile_dir.join("examples").join(format!("delta{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.is_file(),
        "{} is missing: `cargo test --features delta` builds it, or `cargo build --features delta --example delta`",
        bin.display()
    );
    bin
}

fn delta() -> Command {
    Command::new(delta_bin())
}

/// Runs `delta` in `dir`, so that an output named `-` by mistake would land there.
fn run_in(dir: &Path, args: &[&dyn AsRef<std::ffi::OsStr>]) -> Output {
    delta().current_dir(dir).args(args.iter().map(|a| a.as_ref())).output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn last_line(bytes: &[u8]) -> String {
    text(bytes).lines().last().unwrap_or_default().to_owned()
}

/// Names of temporary outputs left in `dir`.
fn leftovers(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".chitty-delta-"))
        .collect()
}

struct Pair {
    dir: tempfile::TempDir,
    base: PathBuf,
    target: PathBuf,
}

impl Pair {
    fn tiny(seed: u64) -> Pair {
        Pair::new(&ModelPairSpec::tiny(seed))
    }

    fn new(spec: &ModelPairSpec) -> Pair {
        let dir = tempfile::tempdir().unwrap();
        let (base, target) = (dir.path().join("base.safetensors"), dir.path().join("ft.safetensors"));
        write_pair(spec, &base, &target).unwrap();
        Pair { dir, base, target }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn run(&self, args: &[&dyn AsRef<std::ffi::OsStr>]) -> Output {
        run_in(self.dir.path(), args)
    }

    /// Compresses the pair into `name`, which must succeed.
    fn archive(&self, name: &str, extra: &[&str]) -> PathBuf {
        let archive = self.path(name);
        let out = delta()
            .arg("compress")
            .arg(&self.base)
            .arg(&self.target)
            .arg("-o")
            .arg(&archive)
            .args(extra)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        archive
    }
}

/// Asserts a refusal with `code` that changed none of `files` and left no temporary file.
fn assert_refused(out: &Output, code: i32, files: &[(&Path, &[u8])], dir: &Path) {
    assert_eq!(out.status.code(), Some(code), "stderr: {}", text(&out.stderr));
    assert_eq!(last_line(&out.stdout), format!("result=error exit_code={code}"));
    for (path, before) in files {
        assert_eq!(&fs::read(path).unwrap(), before, "{} changed", path.display());
    }
    assert!(leftovers(dir).is_empty(), "{:?}", leftovers(dir));
}

#[test]
fn compress_refuses_an_output_that_is_one_of_its_inputs() {
    let pair = Pair::tiny(71);
    let (base, target) = (fs::read(&pair.base).unwrap(), fs::read(&pair.target).unwrap());
    let hard = pair.path("hard-link-to-base");
    fs::hard_link(&pair.base, &hard).unwrap();
    let soft = pair.path("symlink-to-target");
    std::os::unix::fs::symlink(&pair.target, &soft).unwrap();
    let dotted = pair.dir.path().join(".").join("base.safetensors");
    for out in [&pair.base, &pair.target, &hard, &soft, &dotted] {
        let o = pair.run(&[&"compress", &pair.base, &pair.target, &"-o", out]);
        assert_refused(&o, 7, &[(&pair.base, &base), (&pair.target, &target)], pair.dir.path());
        assert!(text(&o.stderr).contains("input"), "{}", text(&o.stderr));
    }
    assert!(fs::symlink_metadata(&soft).unwrap().file_type().is_symlink());
}

#[test]
fn decompress_refuses_an_output_that_is_one_of_its_inputs_and_the_archive_still_decodes() {
    let pair = Pair::tiny(72);
    let archive = pair.archive("ft.delta", &[]);
    let (base, bytes) = (fs::read(&pair.base).unwrap(), fs::read(&archive).unwrap());
    let hard = pair.path("hard-link-to-archive");
    fs::hard_link(&archive, &hard).unwrap();
    let soft = pair.path("symlink-to-base");
    std::os::unix::fs::symlink(&pair.base, &soft).unwrap();
    for out in [&pair.base, &archive, &hard, &soft] {
        let o = pair.run(&[&"decompress", &pair.base, &archive, &"-o", out]);
        assert_refused(&o, 7, &[(&pair.base, &base), (&archive, &bytes)], pair.dir.path());
    }
    let restored = pair.path("restored.safetensors");
    let o = pair.run(&[&"decompress", &pair.base, &archive, &"-o", &restored]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(fs::read(&restored).unwrap(), fs::read(&pair.target).unwrap());
}
