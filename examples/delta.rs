//! `delta`: store a fine-tuned safetensors model, or a derived dataset (CSV, JSON Lines, any file), as a
//! delta against its base, and get it back.
//!
//! ```text
//! cargo run --release --example delta --features delta -- compress BASE TARGET -o OUT|- [--kind auto|model|dataset] [--mode lossless] [--mac-key-file KEY]
//! cargo run --release --example delta --features delta -- decompress BASE ARCHIVE -o OUT|- [--mac-key-file KEY]
//! cargo run --release --example delta --features delta -- inspect ARCHIVE
//! cargo run --release --example delta --features delta -- verify BASE ARCHIVE [--mac-key-file KEY]
//! cargo run --release --example delta --features delta -- generate --bytes 1G BASE_OUT TARGET_OUT
//! cargo run --release --example delta --features delta -- analyze BASE TARGET
//! ```
//!
//! `compress --kind auto` (the default) makes a model delta when TARGET is a safetensors file and a dataset
//! delta otherwise; `decompress` and `verify` read the kind from the archive. Dataset archives take no
//! `--mode`, `--rule` or MAC key.
//!
//! Outputs are atomic (temporary file, fsync, rename): a failed or interrupted run leaves no partial
//! file. `-o -` streams to standard output instead (a failed decompress stops after the last verified
//! part). A progress bar shows on a terminal. The last line of stdout of every command is `key=value`
//! pairs for scripts; with `-o -` that line and every other report go to stderr, so stdout holds only
//! the data. Text read from files and archives (tensor names, errors naming them) is printed with
//! control characters escaped.
//!
//! Exit codes: 0 success; 2 usage error; 3 invalid input (not a valid safetensors file, bad option);
//! 4 corrupt or truncated archive; 5 wrong or missing base; 6 I/O error; 7 the output resolves to an
//! input (same file, hard link or symlink); 8 the output exists and is not a regular file; 9 MAC refused
//! (wrong key or altered archive, a key given for an archive without a MAC, or an authenticated archive
//! without its key); 70 internal error; 130 and 143 interrupted by SIGINT or SIGTERM, after removing the
//! temporary output. Output refusals (7, 8) and MAC presence checks happen before anything is written.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use chitty::delta::analysis::study_transforms;
use chitty::delta::files::DeltaFileCodec;
use chitty::delta::files::{self, MappedFile};
use chitty::delta::{DatasetDeltaCompressor, DeltaError, MacKey, Mode, ModelDeltaCompressor};
use chitty_testkit::model_pairs::{FloatDtype, ModelPairSpec, write_pair};
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Parser)]
#[command(
    name = "delta",
    about = "Model-weight and dataset deltas against a base: compress, decompress, inspect, verify"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Compress TARGET as a delta against BASE into an archive.
    Compress {
        base: PathBuf,
        target: PathBuf,
        /// The archive, or `-` for standard output.
        #[arg(short, long)]
        output: PathBuf,
        /// auto (a model delta for a safetensors TARGET, else a dataset delta), model or dataset.
        #[arg(long, default_value = "auto")]
        kind: String,
        /// lossless (default), or a lossy mode for changed 2-D weights (model deltas only).
        #[arg(long, default_value = "lossless")]
        mode: String,
        /// Per-tensor policy, PATTERN=MODE (glob with `*`); the first match wins. Repeatable.
        #[arg(long = "rule")]
        rules: Vec<String>,
        /// zstd level of every plane (model) or of new bytes (dataset); default: each kind's own.
        #[arg(long)]
        level: Option<i32>,
        /// Worker threads (default: one per core).
        #[arg(long)]
        threads: Option<usize>,
        /// Print one line per tensor.
        #[arg(long)]
        verbose: bool,
        /// Authenticate the archive with HMAC-SHA256 under the key in this file (all of its bytes, 16 at
        /// least).
        #[arg(long, value_name = "PATH")]
        mac_key_file: Option<PathBuf>,
    },
    /// Rebuild the target from BASE and ARCHIVE, verifying every part.
    Decompress {
        base: PathBuf,
        archive: PathBuf,
        /// The rebuilt file, or `-` for standard output.
        #[arg(short, long)]
        output: PathBuf,
        #[arg(long)]
        threads: Option<usize>,
        /// Require and check the archive's MAC under the key in this file.
        #[arg(long, value_name = "PATH")]
        mac_key_file: Option<PathBuf>,
    },
    /// Show what an archive holds, per tensor (no base needed).
    Inspect { archive: PathBuf },
    /// Decode ARCHIVE against BASE and check every checksum, writing nothing.
    Verify {
        base: PathBuf,
        archive: PathBuf,
        #[arg(long)]
        threads: Option<usize>,
        /// Require and check the archive's MAC under the key in this file.
        #[arg(long, value_name = "PATH")]
        mac_key_file: Option<PathBuf>,
    },
    /// Write a synthetic base / fine-tune pair (for benchmarks and trials).
    Generate {
        base_out: PathBuf,
        target_out: PathBuf,
        /// Approximate size of each file, e.g. 64M or 1G.
        #[arg(long, default_value = "64M")]
        bytes: String,
        /// bf16, f16 or f32.
        #[arg(long, default_value = "bf16")]
        dtype: String,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Update standard deviation relative to the weights' scale.
        #[arg(long, default_value_t = 1e-3)]
        delta_scale: f32,
    },
    /// Measure candidate transforms (XOR, the plain recipe, integer difference) on a pair.
    Analyze {
        base: PathBuf,
        target: PathBuf,
        /// zstd levels to try, comma separated.
        #[arg(long, default_value = "1,3,9")]
        levels: String,
    },
}

/// Whether stdout carries the data (`-o -`): reports then go to stderr.
static STDOUT_IS_DATA: AtomicBool = AtomicBool::new(false);

/// Prints a report line to stdout, or to stderr when stdout is the data; a closed pipe (`delta inspect … |
/// head`) is not an error worth a panic.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if STDOUT_IS_DATA.load(Ordering::Relaxed) {
            let _ = writeln!(std::io::stderr().lock(), $($arg)*);
        } else {
            let _ = writeln!(std::io::stdout().lock(), $($arg)*);
        }
    }};
}

/// `text` with control characters and other non-printables escaped (`\u{1b}`, and `\\` for a backslash),
/// so that a name read from a file or an archive cannot drive the terminal or reorder what follows.
fn printable(text: &str) -> Cow<'_, str> {
    // escape_debug leaves printable characters alone; quotes are fine here.
    let plain = |c: char| matches!(c, '\'' | '"') || c.escape_debug().len() == 1;
    if text.chars().all(plain) {
        return Cow::Borrowed(text);
    }
    let mut escaped = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if plain(c) {
            escaped.push(c);
        } else {
            escaped.extend(c.escape_debug());
        }
    }
    Cow::Owned(escaped)
}

/// Whether an output argument means standard output.
fn is_stdout(output: &Path) -> bool {
    output.as_os_str() == "-"
}

/// `-o PATH` as the library's output: `-` is standard output.
fn output_of(output: &Path) -> files::Output<'_> {
    if is_stdout(output) { files::Output::Stdout } else { files::Output::File(output) }
}

/// A failure with the exit code a script can rely on.
struct Failure {
    code: u8,
    message: String,
}

impl From<DeltaError> for Failure {
    fn from(e: DeltaError) -> Self {
        let code = match &e {
            DeltaError::Corrupt { .. } => 4,
            DeltaError::WrongBase { .. } | DeltaError::MissingBase => 5,
            DeltaError::Io { .. } => 6,
            DeltaError::OutputIsInput { .. } => 7,
            DeltaError::OutputNotRegularFile { .. } => 8,
            DeltaError::MacMissing | DeltaError::MacKeyNeeded | DeltaError::MacMismatch => 9,
            DeltaError::Internal { .. } => 70,
            _ => 3,
        };
        Failure { code, message: e.to_string() }
    }
}

fn usage(message: impl Into<String>) -> Failure {
    Failure { code: 3, message: message.into() }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Compress { output, .. } | Command::Decompress { output, .. } = &cli.command {
        STDOUT_IS_DATA.store(is_stdout(output), Ordering::Relaxed);
    }
    let writes_files = matches!(cli.command, Command::Compress { .. } | Command::Decompress { .. });
    let outcome = if writes_files { remove_temporary_output_on_signals() } else { Ok(()) };
    match outcome.and_then(|()| run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("error: {}", printable(&f.message));
            out!("result=error exit_code={}", f.code);
            ExitCode::from(f.code)
        }
    }
}

/// On SIGINT or SIGTERM, removes the temporary output and exits 130 or 143 (128 + the signal number): the
/// default action would kill the process and leave the temporary file behind.
fn remove_temporary_output_on_signals() -> Result<(), Failure> {
    let failure = |e: std::io::Error| Failure { code: 70, message: format!("installing signal handlers: {e}") };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_io().build().map_err(failure)?;
    #[cfg(unix)]
    let mut signals = {
        use tokio::signal::unix::{SignalKind, signal};
        // Registered here, before any output exists, not lazily in the thread.
        let _context = runtime.enter();
        (signal(SignalKind::interrupt()).map_err(failure)?, signal(SignalKind::terminate()).map_err(failure)?)
    };
    std::thread::Builder::new()
        .name("signals".to_owned())
        .spawn(move || {
            #[cfg(unix)]
            let (code, name) = runtime.block_on(async {
                tokio::select! {
                    _ = signals.0.recv() => (130u8, "SIGINT"),
                    _ = signals.1.recv() => (143u8, "SIGTERM"),
                }
            });
            #[cfg(not(unix))]
            let (code, name) = {
                let _ = runtime.block_on(tokio::signal::ctrl_c());
                (130u8, "Ctrl-C")
            };
            let removed = files::abandon_pending_outputs();
            let cleanup = if removed > 0 { "; the temporary output was removed" } else { "" };
            eprintln!("error: interrupted by {name}{cleanup}");
            out!("result=error exit_code={code}");
            std::process::exit(i32::from(code));
        })
        .map_err(failure)?;
    Ok(())
}

fn progress_bar(total: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(total);
    if let Ok(style) =
        ProgressStyle::with_template("{msg} [{bar:40}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(what.to_owned());
    bar
}

fn file_len(path: &Path) -> Result<u64, Failure> {
    std::fs::metadata(path)
        .map(|m| m.len())
        .map_err(|e| Failure { code: 6, message: format!("{}: {e}", path.display()) })
}

fn compressor(
    mode: Mode,
    rules: &[(String, Mode)],
    level: i32,
    threads: Option<usize>,
    mac_key_file: Option<&Path>,
) -> Result<ModelDeltaCompressor, Failure> {
    let mut builder = ModelDeltaCompressor::builder().mode(mode).zstd_level(level);
    if let Some(path) = mac_key_file {
        builder = builder.mac_key(MacKey::from_file(path)?);
    }
    for (pattern, mode) in rules {
        builder = builder.rule(pattern.clone(), *mode);
    }
    if let Some(t) = threads {
        builder = builder.threads(t);
    }
    Ok(builder.build()?)
}

/// The compressor that decodes `archive`, from the format its manifest names.
fn decoder_for(
    archive: &Path,
    threads: Option<usize>,
    mac_key_file: Option<&Path>,
) -> Result<Box<dyn DeltaFileCodec>, Failure> {
    if files::archive_format(archive)? == "chitty-dataset-delta" {
        if mac_key_file.is_some() {
            return Err(usage("dataset archives carry no MAC: --mac-key-file does not apply"));
        }
        return Ok(Box::new(DatasetDeltaCompressor::builder().build()?));
    }
    Ok(Box::new(compressor(Mode::Lossless, &[], 1, threads, mac_key_file)?))
}

/// Whether `path` is framed like a safetensors file (a little-endian header length that fits the file,
/// then `{`): such a file is a model even when its header is invalid, so that the error says why.
fn is_safetensors(path: &Path) -> Result<bool, Failure> {
    let file = MappedFile::open(path)?;
    let bytes = file.bytes();
    let header_len = bytes.get(..8).and_then(|b| b.try_into().ok()).map(u64::from_le_bytes);
    Ok(bytes.get(8) == Some(&b'{') && header_len.is_some_and(|l| l <= bytes.len() as u64 - 8))
}

fn parse_mode(s: &str) -> Result<Mode, Failure> {
    Mode::parse(s).ok_or_else(|| usage(format!("unknown mode `{s}`")))
}

fn parse_size(s: &str) -> Result<u64, Failure> {
    let (digits, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = digits.parse().map_err(|_| usage(format!("bad size `{s}`")))?;
    let mult = match unit {
        "" => 1,
        "K" | "k" => 1 << 10,
        "M" | "m" => 1 << 20,
        "G" | "g" => 1 << 30,
        _ => return Err(usage(format!("bad size unit in `{s}`"))),
    };
    Ok(n * mult)
}

fn gbps(bytes: u64, seconds: f64) -> f64 {
    bytes as f64 / seconds.max(1e-9) / 1e9
}

fn run(command: Command) -> Result<(), Failure> {
    match command {
        Command::Compress { base, target, output, kind, mode, rules, level, threads, verbose, mac_key_file } => {
            let rules = rules
                .iter()
                .map(|r| {
                    let (p, m) = r.split_once('=').ok_or_else(|| usage(format!("rule `{r}` is not PATTERN=MODE")))?;
                    Ok((p.to_owned(), parse_mode(m)?))
                })
                .collect::<Result<Vec<_>, Failure>>()?;
            let dataset = match kind.as_str() {
                "model" => false,
                "dataset" => true,
                "auto" => !is_safetensors(&target)?,
                other => return Err(usage(format!("unknown kind `{other}` (auto, model or dataset)"))),
            };
            let c: Box<dyn DeltaFileCodec> = if dataset {
                if mode != "lossless" || !rules.is_empty() || mac_key_file.is_some() {
                    return Err(usage("dataset deltas are lossless and take no --mode, --rule or --mac-key-file"));
                }
                let mut builder = DatasetDeltaCompressor::builder();
                if let Some(level) = level {
                    builder = builder.zstd_level(level);
                }
                Box::new(builder.build()?)
            } else {
                let level = level.unwrap_or(chitty::delta::DEFAULT_ZSTD_LEVEL);
                Box::new(compressor(parse_mode(&mode)?, &rules, level, threads, mac_key_file.as_deref())?)
            };
            let bar = progress_bar(file_len(&target)?, "compress");
            let start = Instant::now();
            let progress = &mut |n| bar.set_position(n);
            let report = files::compress_to(c.as_ref(), Some(&base), &target, output_of(&output), progress)?;
            let secs = start.elapsed().as_secs_f64();
            bar.finish_and_clear();
            if verbose {
                for p in &report.parts {
                    let err = p.relative_error.map(|e| format!(" rel_error={e:.4}")).unwrap_or_default();
                    out!(
                        "{:<60} {:<20} {:>12} -> {:>12}{err}",
                        printable(&p.name),
                        p.method,
                        p.original_bytes,
                        p.stored_bytes
                    );
                }
            }
            let worst = report
                .parts
                .iter()
                .filter_map(|p| p.relative_error)
                .fold(None, |a: Option<f64>, e| Some(a.map_or(e, |a| a.max(e))));
            out!(
                "result=ok op=compress input_bytes={} output_bytes={} ratio={:.4} seconds={:.3} gb_per_s={:.3}{}",
                report.input_bytes,
                report.output_bytes,
                report.output_bytes as f64 / report.input_bytes.max(1) as f64,
                secs,
                gbps(report.input_bytes, secs),
                worst.map(|w| format!(" max_rel_error={w:.5}")).unwrap_or_default(),
            );
        }
        Command::Decompress { base, archive, output, threads, mac_key_file } => {
            if mac_key_file.is_some() && is_stdout(&output) {
                // The MAC ends the archive: a stream would carry parts before they are authenticated.
                return Err(usage(
                    "--mac-key-file with -o - would write parts before the MAC at the end of the archive is \
                     checked; decompress to a file (written only once authenticated) instead",
                ));
            }
            let c = decoder_for(&archive, threads, mac_key_file.as_deref())?;
            let bar = progress_bar(files::archive_target_len(&archive)?, "decompress");
            let start = Instant::now();
            let progress = &mut |n| bar.set_position(n);
            let report = files::decompress_to(c.as_ref(), Some(&base), &archive, output_of(&output), progress)?;
            let secs = start.elapsed().as_secs_f64();
            bar.finish_and_clear();
            out!(
                "result=ok op=decompress input_bytes={} output_bytes={} parts_verified={} seconds={:.3} gb_per_s={:.3}",
                report.input_bytes,
                report.output_bytes,
                report.parts_verified,
                secs,
                gbps(report.output_bytes, secs)
            );
        }
        Command::Verify { base, archive, threads, mac_key_file } => {
            let c = decoder_for(&archive, threads, mac_key_file.as_deref())?;
            let bar = progress_bar(files::archive_target_len(&archive)?, "verify");
            let start = Instant::now();
            let report = files::verify_file(c.as_ref(), Some(&base), &archive, &mut |n| bar.set_position(n))?;
            let secs = start.elapsed().as_secs_f64();
            bar.finish_and_clear();
            out!(
                "result=ok op=verify input_bytes={} output_bytes={} parts_verified={} seconds={:.3} gb_per_s={:.3}",
                report.input_bytes,
                report.output_bytes,
                report.parts_verified,
                secs,
                gbps(report.output_bytes, secs)
            );
        }
        Command::Inspect { archive } if files::archive_format(&archive)? == "chitty-dataset-delta" => {
            // Dataset parts are copies and new bytes, not named tensors: the totals say what there is.
            let (target_bytes, archive_bytes) = (files::archive_target_len(&archive)?, file_len(&archive)?);
            out!("format chitty-dataset-delta; per-part details: compress --verbose");
            out!(
                "result=ok op=inspect target_bytes={target_bytes} archive_bytes={archive_bytes} ratio={:.4}",
                archive_bytes as f64 / target_bytes.max(1) as f64
            );
        }
        Command::Inspect { archive } => {
            let s = files::inspect_file(&archive)?;
            // Every text below comes from the archive: escaped (the MAC name too, though the manifest
            // check admits only a known one).
            let mac = match &s.mac {
                Some(m) => format!("{} (not checked: inspect reads no key)", printable(m)),
                None => "none".to_owned(),
            };
            out!(
                "format {} v{}; base: {}; mac: {mac}",
                printable(&s.format),
                s.version,
                printable(s.base.as_deref().unwrap_or("none")),
            );
            out!(
                "{:<60} {:>6} {:<20} {:>12} {:>12} {:>7} {:>9}",
                "tensor",
                "dtype",
                "method",
                "bytes",
                "stored",
                "ratio",
                "rel_err"
            );
            for t in &s.tensors {
                out!(
                    "{:<60} {:>6} {:<20} {:>12} {:>12} {:>6.2}% {:>9}",
                    printable(&t.name),
                    printable(&t.dtype),
                    t.method.as_str(),
                    t.original_bytes,
                    t.stored_bytes,
                    100.0 * t.stored_bytes as f64 / t.original_bytes.max(1) as f64,
                    t.relative_error.map(|e| format!("{e:.5}")).unwrap_or_else(|| "-".to_owned()),
                );
            }
            out!(
                "result=ok op=inspect tensors={} target_bytes={} archive_bytes={} ratio={:.4}",
                s.tensors.len(),
                s.target_bytes,
                s.archive_bytes,
                s.archive_bytes as f64 / s.target_bytes.max(1) as f64
            );
        }
        Command::Generate { base_out, target_out, bytes, dtype, seed, delta_scale } => {
            let dtype = match dtype.as_str() {
                "bf16" => FloatDtype::BF16,
                "f16" => FloatDtype::F16,
                "f32" => FloatDtype::F32,
                other => return Err(usage(format!("unknown dtype `{other}`"))),
            };
            let spec = ModelPairSpec::with_target_bytes(dtype, parse_size(&bytes)?, seed).delta_scale(delta_scale);
            let start = Instant::now();
            let sizes = write_pair(&spec, &base_out, &target_out)
                .map_err(|e| Failure { code: 6, message: format!("writing the pair: {e}") })?;
            out!(
                "result=ok op=generate base_bytes={} target_bytes={} hidden={} layers={} seconds={:.1}",
                sizes.base_bytes,
                sizes.target_bytes,
                spec.hidden,
                spec.layers,
                start.elapsed().as_secs_f64()
            );
        }
        Command::Analyze { base, target, levels } => {
            let levels: Vec<i32> = levels
                .split(',')
                .map(|l| l.trim().parse().map_err(|_| usage(format!("bad level `{l}`"))))
                .collect::<Result<_, _>>()?;
            let (base, target) = (MappedFile::open(&base)?, MappedFile::open(&target)?);
            let study = study_transforms(base.bytes(), target.bytes(), &levels)?;
            let pct = |b: f64| 100.0 * b / study.compared_bytes.max(1) as f64;
            out!("compared tensors: {} bytes of a {}-byte target", study.compared_bytes, study.target_bytes);
            let level_heads: Vec<String> = levels.iter().map(|l| format!("zstd-{l}")).collect();
            out!("| dtype | transform | plane | H0 % | {} | best % |", level_heads.join(" % | ") + " %");
            for t in &study.transforms {
                for p in &t.planes {
                    let sizes: Vec<String> =
                        p.zstd_bytes.iter().map(|&(_, b)| format!("{:.2}", pct(b as f64))).collect();
                    out!(
                        "| {} | {} | {} | {:.2} | {} | {:.2} |",
                        t.dtype,
                        t.name,
                        p.name,
                        pct(p.entropy_bytes),
                        sizes.join(" | "),
                        pct(p.best_bytes() as f64)
                    );
                }
                let totals: Vec<String> = levels.iter().map(|&l| format!("{:.2}", pct(t.bytes_at(l) as f64))).collect();
                out!(
                    "| {} | {} | **total** | {:.2}{} | {} | {:.2} |",
                    t.dtype,
                    t.name,
                    pct(t.entropy_bytes()),
                    t.symbol_entropy_bytes.map(|s| format!(" (symbols {:.2})", pct(s))).unwrap_or_default(),
                    totals.join(" | "),
                    pct(t.best_bytes() as f64)
                );
            }
            let best = study.transforms.iter().min_by_key(|t| t.best_bytes()).map(|t| t.name).unwrap_or("-");
            // What the lossless mode stores and the plain recipe, summed over dtypes, as % of the changed
            // tensors.
            let sum = |pick: &dyn Fn(&chitty::delta::analysis::TransformStudy) -> bool,
                       f: &dyn Fn(&chitty::delta::analysis::TransformStudy) -> f64| {
                pct(study.transforms.iter().filter(|t| pick(t)).map(f).sum())
            };
            let ours = |t: &chitty::delta::analysis::TransformStudy| t.name == "intdiff-packed";
            let recipe = |t: &chitty::delta::analysis::TransformStudy| t.name == "xor-exp|sign-mant";
            out!(
                "result=ok op=analyze best={best} compared_bytes={} packed_h0_pct={:.2} packed_best_pct={:.2} \
                 recipe_h0_pct={:.2} recipe_zstd3_pct={:.2} recipe_file_bytes={} recipe_ratio={:.4} target_bytes={}",
                study.compared_bytes,
                sum(&ours, &|t| t.entropy_bytes()),
                sum(&ours, &|t| t.best_bytes() as f64),
                sum(&recipe, &|t| t.entropy_bytes()),
                // zstd-3 is the recipe's level: without it in --levels there is no figure (-1).
                if levels.contains(&3) { sum(&recipe, &|t| t.bytes_at(3) as f64) } else { -1.0 },
                study.recipe_file_bytes,
                study.recipe_file_bytes as f64 / study.target_bytes.max(1) as f64,
                study.target_bytes
            );
        }
    }
    Ok(())
}
