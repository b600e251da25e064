//! The `delta` example's command-line contract, through the built binary: outputs that would destroy an
//! input or are not regular files are refused before anything is written, `-o -` streams to standard
//! output, SIGINT and SIGTERM leave no temporary file, `inspect` escapes control characters, the optional
//! keyed MAC, and dataset deltas chosen by content.
//!
//! The binary is `target/<profile>/examples/delta`, which `cargo test --features delta` builds along with
//! this test. Selecting this test alone does not build it: `cargo build --features delta --example delta`
//! first.
#![cfg(unix)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use chitty_testkit::model_pairs::{FloatDtype, ModelPairSpec, write_pair};

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
        assert!(out.status.success(), "{}: {}", out.status, text(&out.stderr));
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
    assert!(o.status.success(), "{}: {}", o.status, text(&o.stderr));
    assert_eq!(fs::read(&restored).unwrap(), fs::read(&pair.target).unwrap());
}

fn mkfifo(path: &Path) {
    let status = Command::new("mkfifo").arg(path).status().unwrap();
    assert!(status.success());
}

#[test]
fn outputs_that_are_not_regular_files_are_refused() {
    let pair = Pair::tiny(74);
    let archive = pair.archive("ft.delta", &[]);
    let fifo = pair.path("fifo");
    mkfifo(&fifo);
    let to_fifo = pair.path("symlink-to-fifo");
    std::os::unix::fs::symlink(&fifo, &to_fifo).unwrap();
    let dir = pair.path("a-directory");
    fs::create_dir(&dir).unwrap();
    for out in [&fifo, &to_fifo, &dir] {
        let o = pair.run(&[&"compress", &pair.base, &pair.target, &"-o", out]);
        assert_refused(&o, 8, &[], pair.dir.path());
        assert!(text(&o.stderr).contains("not a regular file"), "{}", text(&o.stderr));
        let o = pair.run(&[&"decompress", &pair.base, &archive, &"-o", out]);
        assert_refused(&o, 8, &[], pair.dir.path());
    }
    assert!(fs::metadata(&fifo).unwrap().file_type().is_fifo());
    assert!(fs::metadata(&dir).unwrap().is_dir());
}

#[test]
fn dash_streams_to_standard_output_and_the_summary_goes_to_standard_error() {
    let pair = Pair::tiny(75);
    let archive = pair.archive("ft.delta", &[]);
    let o = pair.run(&[&"compress", &pair.base, &pair.target, &"-o", &"-"]);
    assert!(o.status.success(), "{}: {}", o.status, text(&o.stderr));
    assert_eq!(o.stdout, fs::read(&archive).unwrap());
    assert!(last_line(&o.stderr).starts_with("result=ok op=compress"), "{}", text(&o.stderr));

    let o = pair.run(&[&"decompress", &pair.base, &archive, &"-o", &"-"]);
    assert!(o.status.success(), "{}: {}", o.status, text(&o.stderr));
    assert_eq!(o.stdout, fs::read(&pair.target).unwrap());
    assert!(last_line(&o.stderr).starts_with("result=ok op=decompress"), "{}", text(&o.stderr));

    // A wrong base is found before anything is written, and the error line stays off the data stream.
    let o = pair.run(&[&"decompress", &pair.target, &archive, &"-o", &"-"]);
    assert_eq!(o.status.code(), Some(5));
    assert!(o.stdout.is_empty(), "{}", text(&o.stdout));
    assert_eq!(last_line(&o.stderr), "result=error exit_code=5");
    assert!(!pair.path("-").exists());
}

#[test]
fn standard_output_that_is_an_input_is_refused_too() {
    let pair = Pair::tiny(73);
    let base = fs::read(&pair.base).unwrap();
    let appending = fs::File::options().append(true).open(&pair.base).unwrap();
    let o = delta()
        .current_dir(pair.dir.path())
        .arg("compress")
        .arg(&pair.base)
        .arg(&pair.target)
        .args(["-o", "-"])
        .stdout(Stdio::from(appending))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(7), "{}", text(&o.stderr));
    assert_eq!(fs::read(&pair.base).unwrap(), base);
}

/// Polls `dir` until a temporary output appears (or `child` ends), with a deadline generous enough for a
/// loaded machine.
fn wait_for_temporary_file(child: &mut Child, dir: &Path) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while leftovers(dir).is_empty() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("delta ended ({status}) before its temporary file was seen: make the input larger");
        }
        assert!(Instant::now() < deadline, "no temporary file within 120 s");
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill").arg(format!("-{name}")).arg(child.id().to_string()).status().unwrap();
    assert!(status.success());
}

#[test]
fn sigterm_and_sigint_remove_the_temporary_output_and_exit_non_zero() {
    // Large enough that compressing at level 19 on one thread takes seconds even in a release build.
    let pair = Pair::new(&ModelPairSpec::with_target_bytes(FloatDtype::BF16, 48 << 20, 76));
    let out = pair.path("ft.delta");
    let mut child = delta()
        .arg("compress")
        .arg(&pair.base)
        .arg(&pair.target)
        .arg("-o")
        .arg(&out)
        .args(["--threads", "1", "--level", "19"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_temporary_file(&mut child, pair.dir.path());
    signal(&child, "TERM");
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(143), "{status}");
    assert!(leftovers(pair.dir.path()).is_empty(), "{:?}", leftovers(pair.dir.path()));
    assert!(!out.exists());

    let archive = pair.archive("archive.delta", &[]);
    let restored = pair.path("restored.safetensors");
    let mut child = delta()
        .arg("decompress")
        .arg(&pair.base)
        .arg(&archive)
        .arg("-o")
        .arg(&restored)
        .args(["--threads", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_temporary_file(&mut child, pair.dir.path());
    signal(&child, "INT");
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "{status}");
    assert!(leftovers(pair.dir.path()).is_empty(), "{:?}", leftovers(pair.dir.path()));
    assert!(!restored.exists());
}

/// A safetensors file of F32 vectors, built by hand so that names can hold anything.
fn safetensors(tensors: &[(&str, &str, &[f32])]) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    let mut data = Vec::new();
    for (name, dtype, values) in tensors {
        let begin = data.len();
        data.extend(values.iter().flat_map(|v| v.to_le_bytes()));
        header.insert(
            (*name).to_owned(),
            serde_json::json!({"dtype": dtype, "shape": [values.len()], "data_offsets": [begin, data.len()]}),
        );
    }
    let header = serde_json::to_vec(&header).unwrap();
    let mut file = (header.len() as u64).to_le_bytes().to_vec();
    file.extend_from_slice(&header);
    file.extend_from_slice(&data);
    file
}

const HOSTILE: &str = "w\u{1b}]0;owned\u{7}\u{1b}[2J\u{202e}gnp.exe\u{9b}31m";

fn assert_no_raw_controls(what: &str, s: &str) {
    for c in ['\u{1b}', '\u{7}', '\u{202e}', '\u{9b}'] {
        assert!(!s.contains(c), "{what} holds a raw {:?}: {s:?}", c);
    }
}

#[test]
fn inspect_and_verbose_listings_escape_control_characters_of_archive_text() {
    let dir = tempfile::tempdir().unwrap();
    let (base, target, archive) =
        (dir.path().join("base.safetensors"), dir.path().join("ft.safetensors"), dir.path().join("ft.delta"));
    fs::write(&base, safetensors(&[("other", "F32", &[1.0, 2.0])])).unwrap();
    fs::write(&target, safetensors(&[(HOSTILE, "F32", &[1.0, 2.0, 3.0])])).unwrap();

    let o = run_in(dir.path(), &[&"compress", &base, &target, &"-o", &archive, &"--verbose"]);
    assert!(o.status.success(), "{}: {}", o.status, text(&o.stderr));
    assert_no_raw_controls("compress --verbose", &text(&o.stdout));
    assert!(text(&o.stdout).contains("w\\u{1b}]0;owned\\u{7}"), "{}", text(&o.stdout));

    let o = run_in(dir.path(), &[&"inspect", &archive]);
    assert!(o.status.success(), "{}: {}", o.status, text(&o.stderr));
    assert_no_raw_controls("inspect", &text(&o.stdout));
    assert!(text(&o.stdout).contains("\\u{202e}gnp.exe"), "{}", text(&o.stdout));

    // The base description comes from the manifest too: a hostile one (checksums recomputed) is escaped.
    let bytes = fs::read(&archive).unwrap();
    let len = u32::from_le_bytes(bytes[12..16].try_into().unwrap()) as usize;
    let manifest = text(&bytes[48..48 + len]);
    let sha_at = manifest.find("\"header_sha256\":\"").unwrap() + "\"header_sha256\":\"".len();
    let hostile = format!("{}\\u001b[2J{}", &manifest[..sha_at], &manifest[sha_at..]);
    let mut forged = bytes[..12].to_vec();
    forged.extend_from_slice(&(hostile.len() as u32).to_le_bytes());
    use sha2::Digest as _;
    forged.extend_from_slice(&sha2::Sha256::digest(hostile.as_bytes()));
    forged.extend_from_slice(hostile.as_bytes());
    forged.extend_from_slice(&bytes[48 + len..]);
    let forged_path = dir.path().join("forged.delta");
    fs::write(&forged_path, forged).unwrap();
    let o = run_in(dir.path(), &[&"inspect", &forged_path]);
    assert!(o.status.success(), "{}: {}", o.status, text(&o.stderr));
    assert_no_raw_controls("inspect of a hostile base description", &text(&o.stdout));
    // And errors that name it or a tensor.
    let o = run_in(dir.path(), &[&"verify", &base, &forged_path]);
    assert_eq!(o.status.code(), Some(5));
    assert_no_raw_controls("a wrong-base error", &text(&o.stderr));

    let bad = dir.path().join("bad.safetensors");
    fs::write(&bad, safetensors(&[(HOSTILE, "X9", &[1.0])])).unwrap();
    let o = run_in(dir.path(), &[&"compress", &base, &bad, &"-o", &dir.path().join("bad.delta")]);
    assert_eq!(o.status.code(), Some(3));
    assert_no_raw_controls("an input error", &text(&o.stderr));
    assert!(text(&o.stderr).contains("\\u{1b}"), "{}", text(&o.stderr));
}

#[test]
fn a_mac_key_authenticates_archives_and_its_absence_or_mismatch_has_its_own_exit_code() {
    let pair = Pair::tiny(77);
    let key = pair.path("mac.key");
    fs::write(&key, b"0123456789abcdef0123456789abcdef").unwrap();
    let other_key = pair.path("other.key");
    fs::write(&other_key, b"fedcba9876543210fedcba9876543210").unwrap();
    let keyed = pair.archive("keyed.delta", &["--mac-key-file", key.to_str().unwrap()]);
    let plain = pair.archive("plain.delta", &[]);
    let restored = pair.path("restored.safetensors");

    let o = pair.run(&[&"decompress", &pair.base, &keyed, &"-o", &restored, &"--mac-key-file", &key]);
    assert!(o.status.success(), "{}: {}", o.status, text(&o.stderr));
    assert_eq!(fs::read(&restored).unwrap(), fs::read(&pair.target).unwrap());
    fs::remove_file(&restored).unwrap();
    let o = pair.run(&[&"verify", &pair.base, &keyed, &"--mac-key-file", &key]);
    assert!(o.status.success(), "{}: {}", o.status, text(&o.stderr));

    for (archive, key, needle) in [
        (&keyed, None, "needs the key"),
        (&keyed, Some(&other_key), "MAC mismatch"),
        (&plain, Some(&key), "carries no MAC"),
    ] {
        let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![&"decompress", &pair.base, archive, &"-o", &restored];
        if let Some(k) = key {
            args.extend([&"--mac-key-file" as &dyn AsRef<std::ffi::OsStr>, k]);
        }
        let o = pair.run(&args);
        assert_eq!(o.status.code(), Some(9), "{}", text(&o.stderr));
        assert!(text(&o.stderr).contains(needle), "{}", text(&o.stderr));
        assert!(!restored.exists());
        assert!(leftovers(pair.dir.path()).is_empty());
    }
    // The key never shows, whatever fails.
    let o = pair.run(&[&"decompress", &pair.base, &keyed, &"-o", &restored, &"--mac-key-file", &other_key]);
    assert!(!text(&o.stderr).contains("fedcba98") && !text(&o.stdout).contains("fedcba98"));

    let o = pair.run(&[&"verify", &pair.base, &keyed]);
    assert_eq!(o.status.code(), Some(9), "{}", text(&o.stderr));
    // A stream would carry parts before the MAC at the end is checked.
    let o = pair.run(&[&"decompress", &pair.base, &keyed, &"-o", &"-", &"--mac-key-file", &key]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o.stderr));
    assert!(o.stdout.is_empty());

    let o = pair.run(&[&"inspect", &keyed]);
    assert!(o.status.success(), "{}: {}", o.status, text(&o.stderr));
    assert!(text(&o.stdout).contains("hmac-sha256"), "{}", text(&o.stdout));

    let short = pair.path("short.key");
    fs::write(&short, b"tiny").unwrap();
    let o = pair.run(&[&"compress", &pair.base, &pair.target, &"-o", &pair.path("x.delta"), &"--mac-key-file", &short]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o.stderr));
    assert!(!pair.path("x.delta").exists());
}

/// A CSV pair is a dataset delta by content (`--kind auto`) and round-trips through the binary; decompress
/// and verify read the kind from the archive; a wrong base is exit code 5; a MAC key on a dataset is a
/// usage error.
#[test]
fn csv_pairs_are_dataset_deltas() {
    use chitty_testkit::dataset_pairs::{DatasetEdit, RowFormat, derive, generate_rows};
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let base = generate_rows(RowFormat::Csv, 5_000, 3);
    let target = derive(&base, RowFormat::Csv, DatasetEdit::EditRows { percent: 1 }, 3);
    fs::write(d.join("base.csv"), &base).unwrap();
    fs::write(d.join("target.csv"), &target).unwrap();
    let out = run_in(d, &[&"compress", &"base.csv", &"target.csv", &"-o", &"t.delta", &"--verbose"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("zstd-prefix"), "{}", text(&out.stdout));
    let archive_len = fs::metadata(d.join("t.delta")).unwrap().len();
    assert!(archive_len * 50 < target.len() as u64, "{archive_len} bytes");
    let out = run_in(d, &[&"decompress", &"base.csv", &"t.delta", &"-o", &"restored.csv"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(fs::read(d.join("restored.csv")).unwrap(), target);
    let out = run_in(d, &[&"verify", &"base.csv", &"t.delta"]);
    assert!(last_line(&out.stdout).starts_with("result=ok op=verify"), "{}", text(&out.stdout));
    let out = run_in(d, &[&"inspect", &"t.delta"]);
    assert!(last_line(&out.stdout).contains(&format!("archive_bytes={archive_len}")), "{}", text(&out.stdout));
    let out = run_in(d, &[&"decompress", &"target.csv", &"t.delta", &"-o", &"wrong.csv"]);
    assert_eq!(out.status.code(), Some(5), "{}", text(&out.stderr));
    assert!(!d.join("wrong.csv").exists());
    fs::write(d.join("key"), [7u8; 32]).unwrap();
    let out = run_in(d, &[&"compress", &"base.csv", &"target.csv", &"-o", &"k.delta", &"--mac-key-file", &"key"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    // `--kind dataset` forces it for any file, here a model pair's files.
    let out = run_in(d, &[&"compress", &"base.csv", &"target.csv", &"-o", &"k.delta", &"--kind", &"dataset"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}
