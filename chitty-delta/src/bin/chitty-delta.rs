//! `chitty-delta`: store a fine-tuned safetensors model, or a derived dataset (CSV, JSON Lines, any
//! file), as a delta against its base, and get it back, bit-exact.
//!
//! ```text
//! cargo install chitty-delta --features cli
//! chitty-delta compress BASE TARGET -o ARCHIVE|- [--kind auto|model|dataset] [--mode lossless|sparse|int8|int4|1bit]
//! chitty-delta compress BASE_DIR TARGET_DIR -o ARCHIVE     # a model repository: resumable, one archive
//! chitty-delta decompress BASE ARCHIVE -o OUTPUT|-
//! chitty-delta decompress BASE_DIR ARCHIVE -o OUT_DIR      # resumable
//! chitty-delta verify BASE ARCHIVE
//! chitty-delta inspect ARCHIVE
//! chitty-delta analyze BASE TARGET            # model transforms compared
//! chitty-delta --json …                       # the report as one JSON object
//! ```
//!
//! The argument order above is a contract. The last line of stdout is the report: `key=value` pairs, or
//! with `--json` one JSON object (sizes, ratio, timings, and per part its method and error); with `-o -`
//! it goes to stderr so that stdout holds only the data. Outputs are atomic (temporary file, fsync,
//! rename). Exit codes: 0 success; 2 usage error; 3 invalid input; 4 corrupt or truncated archive;
//! 5 wrong or missing base; 6 I/O error; 7 the output resolves to an input; 8 the output exists and is not
//! a regular file; 9 MAC refused; 70 internal error; 130 and 143 interrupted by SIGINT or SIGTERM, after
//! removing the temporary output.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use chitty_core::{DecodeReport, EncodeReport};
use chitty_delta::analysis::study_transforms;
use chitty_delta::files::{self, DeltaFileCodec, MappedFile};
use chitty_delta::repo::{self, RepoCompressor, RepoEvent};
use chitty_delta::{DatasetDeltaCompressor, DeltaError, MacKey, Mode, ModelDeltaCompressor};
use clap::{Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};

#[derive(Parser)]
#[command(
    name = "chitty-delta",
    version,
    about = "Model-weight and dataset deltas against a base: compress, decompress, verify, inspect, analyze"
)]
struct Cli {
    /// Print the report as one JSON object instead of `key=value` pairs.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

/// What kind of delta `compress` makes.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Kind {
    /// A model delta when TARGET is framed like a safetensors file, else a dataset delta.
    Auto,
    /// Tensors matched by name (safetensors files).
    Model,
    /// Content-defined chunks found in the base; any file, line-aware for text.
    Dataset,
}

/// How changed model weights are stored.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum CliMode {
    /// Bit-exact.
    Lossless,
    /// Lossy: the largest 10 % of each chunk's changes kept exactly, the rest from the base.
    Sparse,
    /// Lossy: 8-bit deltas, one scale per row.
    Int8,
    /// Lossy: 4-bit deltas, one scale per row.
    Int4,
    /// Lossy: the sign of each delta, one scale per matrix (BitDelta).
    #[value(name = "1bit")]
    OneBit,
}

impl From<CliMode> for Mode {
    fn from(m: CliMode) -> Mode {
        match m {
            CliMode::Lossless => Mode::Lossless,
            CliMode::Sparse => Mode::Sparse,
            CliMode::Int8 => Mode::Int8,
            CliMode::Int4 => Mode::Int4,
            CliMode::OneBit => Mode::OneBit,
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Compress TARGET as a delta against BASE into ARCHIVE. With two directories (model repositories
    /// as on the Hugging Face Hub), every safetensors file is a model delta against all of BASE's shards
    /// and every other file a dataset delta against BASE's file of the same path; an interrupted run
    /// resumes from ARCHIVE.chitty-partial/.
    Compress {
        /// The file or directory TARGET is derived from.
        base: PathBuf,
        /// The file or directory to store (a directory when BASE is one).
        target: PathBuf,
        /// The archive, or `-` for standard output (files only).
        #[arg(short, long)]
        output: PathBuf,
        /// Which kind of delta; for directories, `dataset` stores safetensors files as dataset deltas too.
        #[arg(long, value_enum, default_value_t = Kind::Auto)]
        kind: Kind,
        /// How changed 2-D weights are stored (model deltas; dataset deltas are always lossless).
        #[arg(long, value_enum, default_value_t = CliMode::Lossless)]
        mode: CliMode,
        /// Calibrated lossy storage: each changed matrix that no --rule names is stored in the smallest of
        /// sparse, int8, int4, 1bit and lossless whose relative error (Frobenius norm of the error over that
        /// of the change) stays at or under E; the report gives each tensor's choice and error, and the
        /// share of the bytes saved by each choice. Overrides --mode for matrices.
        #[arg(long, value_name = "E")]
        max_rel_error: Option<f64>,
        /// Per-tensor policy, PATTERN=MODE (glob with `*`); the first match wins. Repeatable.
        #[arg(long = "rule", value_name = "PATTERN=MODE")]
        rules: Vec<String>,
        /// zstd level of every plane (model) or of new bytes (dataset); default: each kind's own.
        #[arg(long)]
        level: Option<i32>,
        /// Worker threads (default: one per core).
        #[arg(long)]
        threads: Option<usize>,
        /// Print one line per tensor or part.
        #[arg(long)]
        verbose: bool,
        /// Authenticate the archive with HMAC-SHA256 under the key in this file (all of its bytes, 16 at
        /// least; model deltas).
        #[arg(long, value_name = "PATH")]
        mac_key_file: Option<PathBuf>,
    },
    /// Rebuild the target from BASE and ARCHIVE into OUTPUT, verifying every part. A directory archive
    /// rebuilds a directory (OUTPUT must not exist or be empty), resuming from OUTPUT.chitty-partial/.
    Decompress {
        /// The base file or directory the archive was made against.
        base: PathBuf,
        /// The archive.
        archive: PathBuf,
        /// The rebuilt file or directory, or `-` for standard output (files only).
        #[arg(short, long)]
        output: PathBuf,
        /// Worker threads (default: one per core).
        #[arg(long)]
        threads: Option<usize>,
        /// Require and check the archive's MAC under the key in this file.
        #[arg(long, value_name = "PATH")]
        mac_key_file: Option<PathBuf>,
    },
    /// Decode ARCHIVE against BASE and check every checksum, writing nothing.
    Verify {
        /// The base file or directory the archive was made against.
        base: PathBuf,
        /// The archive.
        archive: PathBuf,
        /// Worker threads (default: one per core).
        #[arg(long)]
        threads: Option<usize>,
        /// Require and check the archive's MAC under the key in this file.
        #[arg(long, value_name = "PATH")]
        mac_key_file: Option<PathBuf>,
    },
    /// Show what an archive holds (no base needed).
    Inspect {
        /// The archive.
        archive: PathBuf,
    },
    /// Estimate the archive of a model pair in each mode (lossless, sparse, int8, int4, 1bit, and within
    /// --max-rel-error when given) from a sample of each tensor's chunks, and measure candidate transforms
    /// (XOR, byte planes, integer difference) per zstd level.
    Analyze {
        /// The base model.
        base: PathBuf,
        /// The fine-tuned model.
        target: PathBuf,
        /// zstd levels to try, comma separated.
        #[arg(long, default_value = "1,3,9")]
        levels: String,
        /// Chunks of each tensor encoded for the estimates (spread evenly; a tensor with no more is
        /// encoded whole).
        #[arg(long, default_value_t = 4)]
        sample_chunks: usize,
        /// Also estimate the calibrated choice under this maximum relative error (as compress takes it).
        #[arg(long, value_name = "E")]
        max_rel_error: Option<f64>,
        /// Skip the transform study (only the per-mode estimates).
        #[arg(long)]
        estimates_only: bool,
    },
}

/// Whether stdout carries the data (`-o -`): reports then go to stderr.
static STDOUT_IS_DATA: AtomicBool = AtomicBool::new(false);

/// Prints a report line to stdout, or to stderr when stdout is the data; a closed pipe
/// (`chitty-delta inspect … | head`) is not an error worth a panic.
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

fn is_stdout(output: &Path) -> bool {
    output.as_os_str() == "-"
}

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
        // A directory archive's error about one file is classed by what went wrong with that file.
        let code = match e.innermost() {
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

/// The report of a command: ordered fields for the `key=value` line, and what only JSON carries.
struct Report {
    fields: Vec<(&'static str, Value)>,
    extra: Vec<(&'static str, Value)>,
}

impl Report {
    fn new(op: &str) -> Self {
        Report { fields: vec![("result", json!("ok")), ("op", json!(op))], extra: Vec::new() }
    }

    fn field(mut self, key: &'static str, value: Value) -> Self {
        self.fields.push((key, value));
        self
    }

    /// What every compress reports: sizes, ratio, time, speed, and the worst relative error of a lossy part.
    fn encoded(self, report: &EncodeReport, secs: f64) -> Self {
        let worst = report.parts.iter().filter_map(|p| p.relative_error).reduce(f64::max);
        let out = self
            .field("input_bytes", json!(report.input_bytes))
            .field("output_bytes", json!(report.output_bytes))
            .field("ratio", json!(ratio(report.output_bytes, report.input_bytes)))
            .field("seconds", json!(secs))
            .field("gb_per_s", json!(gbps(report.input_bytes, secs)));
        match worst {
            Some(w) => out.field("max_rel_error", json!(w)),
            None => out,
        }
    }

    fn print(self, as_json: bool) {
        if as_json {
            let mut map = serde_json::Map::new();
            for (k, v) in self.fields.into_iter().chain(self.extra) {
                map.insert(k.to_owned(), v);
            }
            out!("{}", Value::Object(map));
        } else {
            let line: Vec<String> = self
                .fields
                .iter()
                .map(|(k, v)| match v {
                    Value::String(s) => format!("{k}={}", printable(s)),
                    Value::Number(n) if n.is_f64() => format!("{k}={:.4}", n.as_f64().unwrap_or(0.0)),
                    other => format!("{k}={other}"),
                })
                .collect();
            out!("{}", line.join(" "));
        }
    }
}

/// Runs the command line; public so that the workspace's `delta` example serves the same commands.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Compress { output, .. } | Command::Decompress { output, .. } = &cli.command {
        STDOUT_IS_DATA.store(is_stdout(output), Ordering::Relaxed);
    }
    let writes_files = matches!(cli.command, Command::Compress { .. } | Command::Decompress { .. });
    let as_json = cli.json;
    let outcome = if writes_files { remove_temporary_output_on_signals(as_json) } else { Ok(()) };
    match outcome.and_then(|()| run(cli.command, as_json)) {
        Ok(report) => {
            report.print(as_json);
            ExitCode::SUCCESS
        }
        Err(f) => {
            eprintln!("error: {}", printable(&f.message));
            print_error(f.code, &f.message, as_json);
            ExitCode::from(f.code)
        }
    }
}

fn print_error(code: u8, message: &str, as_json: bool) {
    if as_json {
        out!("{}", json!({"result": "error", "exit_code": code, "message": message}));
    } else {
        out!("result=error exit_code={code}");
    }
}

/// On SIGINT or SIGTERM, removes the temporary output and exits 130 or 143 (128 + the signal number): the
/// default action would kill the process and leave the temporary file behind.
fn remove_temporary_output_on_signals(as_json: bool) -> Result<(), Failure> {
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
            let message = format!("interrupted by {name}{cleanup}");
            eprintln!("error: {message}");
            print_error(code, &message, as_json);
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

fn model_compressor(
    mode: Mode,
    rules: &[(String, Mode)],
    level: i32,
    threads: Option<usize>,
    mac_key_file: Option<&Path>,
) -> Result<ModelDeltaCompressor, Failure> {
    model_compressor_within(mode, None, rules, level, threads, mac_key_file)
}

fn model_compressor_within(
    mode: Mode,
    max_rel_error: Option<f64>,
    rules: &[(String, Mode)],
    level: i32,
    threads: Option<usize>,
    mac_key_file: Option<&Path>,
) -> Result<ModelDeltaCompressor, Failure> {
    let mut builder = ModelDeltaCompressor::builder().mode(mode).zstd_level(level);
    if let Some(e) = max_rel_error {
        builder = builder.max_rel_error(e);
    }
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
    if files::archive_format(archive)? == chitty_delta::parquet::PARQUET_FORMAT {
        if mac_key_file.is_some() {
            return Err(usage("dataset archives carry no MAC: --mac-key-file does not apply"));
        }
        let mut builder = DatasetDeltaCompressor::builder();
        if let Some(t) = threads {
            builder = builder.threads(t);
        }
        return Ok(Box::new(chitty_delta::parquet::ParquetDeltaCompressor::new(builder.build()?)));
    }
    if files::archive_format(archive)? == "chitty-dataset-delta" {
        if mac_key_file.is_some() {
            return Err(usage("dataset archives carry no MAC: --mac-key-file does not apply"));
        }
        let mut builder = DatasetDeltaCompressor::builder();
        if let Some(t) = threads {
            builder = builder.threads(t);
        }
        return Ok(Box::new(builder.build()?));
    }
    Ok(Box::new(model_compressor(Mode::Lossless, &[], 1, threads, mac_key_file)?))
}

/// Whether `path` starts and ends with Parquet's magic (`PAR1`).
fn is_parquet_file(path: &Path) -> Result<bool, Failure> {
    use std::io::{Read, Seek, SeekFrom};
    let io = |e: std::io::Error| Failure { code: 6, message: format!("{}: {e}", path.display()) };
    let mut file = std::fs::File::open(path).map_err(io)?;
    let len = file.metadata().map_err(io)?.len();
    if len < 12 {
        return Ok(false);
    }
    let (mut head, mut tail) = ([0u8; 4], [0u8; 4]);
    file.read_exact(&mut head).map_err(io)?;
    file.seek(SeekFrom::End(-4)).map_err(io)?;
    file.read_exact(&mut tail).map_err(io)?;
    Ok(&head == b"PAR1" && &tail == b"PAR1")
}

/// Whether `path` is framed like a safetensors file (a little-endian header length that fits the file,
/// then `{`): such a file is a model even when its header is invalid, so that the error says why.
fn is_safetensors(path: &Path) -> Result<bool, Failure> {
    let file = MappedFile::open(path)?;
    let bytes = file.bytes();
    let header_len = bytes.get(..8).and_then(|b| b.try_into().ok()).map(u64::from_le_bytes);
    Ok(bytes.get(8) == Some(&b'{') && header_len.is_some_and(|l| l <= bytes.len() as u64 - 8))
}

fn gbps(bytes: u64, seconds: f64) -> f64 {
    bytes as f64 / seconds.max(1e-9) / 1e9
}

fn ratio(a: u64, b: u64) -> f64 {
    a as f64 / b.max(1) as f64
}

fn parts_json(report: &EncodeReport) -> Value {
    report
        .parts
        .iter()
        .map(|p| {
            json!({
                "name": p.name,
                "method": p.method,
                "original_bytes": p.original_bytes,
                "stored_bytes": p.stored_bytes,
                "relative_error": p.relative_error,
            })
        })
        .collect()
}

fn decode_report(op: &str, report: &DecodeReport, secs: f64) -> Report {
    Report::new(op)
        .field("input_bytes", json!(report.input_bytes))
        .field("output_bytes", json!(report.output_bytes))
        .field("parts_verified", json!(report.parts_verified))
        .field("seconds", json!(secs))
        .field("gb_per_s", json!(gbps(report.output_bytes, secs)))
}

fn run(command: Command, as_json: bool) -> Result<Report, Failure> {
    match command {
        Command::Compress {
            base,
            target,
            output,
            kind,
            mode,
            max_rel_error,
            rules,
            level,
            threads,
            verbose,
            mac_key_file,
        } => {
            // A calibrated choice is reported tensor by tensor.
            let verbose = verbose || max_rel_error.is_some();
            let rules = rules
                .iter()
                .map(|r| {
                    let (p, m) = r.split_once('=').ok_or_else(|| usage(format!("rule `{r}` is not PATTERN=MODE")))?;
                    Ok((p.to_owned(), Mode::parse(m).ok_or_else(|| usage(format!("unknown mode `{m}`")))?))
                })
                .collect::<Result<Vec<_>, Failure>>()?;
            match (base.is_dir(), target.is_dir()) {
                (true, true) => {
                    let model = model_compressor_within(
                        mode.into(),
                        max_rel_error,
                        &rules,
                        level.unwrap_or(chitty_delta::DEFAULT_ZSTD_LEVEL),
                        threads,
                        mac_key_file.as_deref(),
                    )?;
                    let repo = repo_compressor(model, level, threads, kind == Kind::Dataset)?;
                    return compress_dir(&repo, &base, &target, &output, verbose, as_json);
                }
                (false, false) => {}
                _ => return Err(usage("BASE and TARGET must both be files or both be directories")),
            }
            let dataset = match kind {
                Kind::Model => false,
                Kind::Dataset => true,
                Kind::Auto => !is_safetensors(&target)?,
            };
            let c: Box<dyn DeltaFileCodec> = if dataset {
                if mode != CliMode::Lossless || !rules.is_empty() || mac_key_file.is_some() || max_rel_error.is_some() {
                    return Err(usage(
                        "dataset deltas are lossless and take no --mode, --max-rel-error, --rule or --mac-key-file",
                    ));
                }
                let mut builder = DatasetDeltaCompressor::builder();
                if let Some(level) = level {
                    builder = builder.zstd_level(level);
                }
                if let Some(t) = threads {
                    builder = builder.threads(t);
                }
                // A Parquet target is matched by values, falling back to bytes when its rows do not
                // re-encode to its exact bytes.
                if is_parquet_file(&target)? {
                    Box::new(chitty_delta::parquet::ParquetDeltaCompressor::new(builder.build()?))
                } else {
                    Box::new(builder.build()?)
                }
            } else {
                let level = level.unwrap_or(chitty_delta::DEFAULT_ZSTD_LEVEL);
                Box::new(model_compressor_within(
                    mode.into(),
                    max_rel_error,
                    &rules,
                    level,
                    threads,
                    mac_key_file.as_deref(),
                )?)
            };
            let bar = progress_bar(file_len(&target)?, "compress");
            let start = Instant::now();
            let progress = &mut |n| bar.set_position(n);
            let report = files::compress_to(c.as_ref(), Some(&base), &target, output_of(&output), progress)?;
            let secs = start.elapsed().as_secs_f64();
            bar.finish_and_clear();
            if verbose && !as_json {
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
            let mut out = Report::new("compress")
                .field("kind", json!(if dataset { "dataset" } else { "model" }))
                .encoded(&report, secs);
            out.extra.push(("parts", parts_json(&report)));
            out.extra.push(("savings_by_method", savings_by_method(&report, as_json || !verbose)));
            Ok(out)
        }
        Command::Decompress { base, archive, output, threads, mac_key_file } if repo::is_repo_archive(&archive)? => {
            if is_stdout(&output) {
                return Err(usage("a directory archive rebuilds a directory: -o names it, not `-`"));
            }
            let repo = repo_decoder(threads, mac_key_file.as_deref())?;
            let bar = progress_bar(repo::repo_target_len(&archive)?, "decompress");
            let start = Instant::now();
            let report = repo.decompress(&base, &archive, &output, &mut repo_events(&bar))?;
            bar.finish_and_clear();
            Ok(repo_decode_report("decompress", &report, start.elapsed().as_secs_f64()))
        }
        Command::Verify { base, archive, threads, mac_key_file } if repo::is_repo_archive(&archive)? => {
            let repo = repo_decoder(threads, mac_key_file.as_deref())?;
            let bar = progress_bar(repo::repo_target_len(&archive)?, "verify");
            let start = Instant::now();
            let report = repo.verify(&base, &archive, &mut repo_events(&bar))?;
            bar.finish_and_clear();
            Ok(repo_decode_report("verify", &report, start.elapsed().as_secs_f64()))
        }
        Command::Inspect { archive } if repo::is_repo_archive(&archive)? => inspect_dir(&archive, as_json),
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
            Ok(decode_report("decompress", &report, secs))
        }
        Command::Verify { base, archive, threads, mac_key_file } => {
            let c = decoder_for(&archive, threads, mac_key_file.as_deref())?;
            let bar = progress_bar(files::archive_target_len(&archive)?, "verify");
            let start = Instant::now();
            let report = files::verify_file(c.as_ref(), Some(&base), &archive, &mut |n| bar.set_position(n))?;
            let secs = start.elapsed().as_secs_f64();
            bar.finish_and_clear();
            Ok(decode_report("verify", &report, secs))
        }
        Command::Inspect { archive } if files::archive_format(&archive)? == "chitty-dataset-delta" => {
            // Dataset parts are copies and new bytes, not named tensors: the totals say what there is.
            let (target_bytes, archive_bytes) = (files::archive_target_len(&archive)?, file_len(&archive)?);
            if !as_json {
                out!("format chitty-dataset-delta; per-part details: compress --verbose or --json");
            }
            Ok(Report::new("inspect")
                .field("format", json!("chitty-dataset-delta"))
                .field("target_bytes", json!(target_bytes))
                .field("archive_bytes", json!(archive_bytes))
                .field("ratio", json!(ratio(archive_bytes, target_bytes))))
        }
        Command::Inspect { archive } => {
            let s = files::inspect_file(&archive)?;
            if !as_json {
                // Every text below comes from the archive: escaped.
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
                        100.0 * ratio(t.stored_bytes, t.original_bytes),
                        t.relative_error.map(|e| format!("{e:.5}")).unwrap_or_else(|| "-".to_owned()),
                    );
                }
            }
            let tensors: Value = s.tensors.iter().map(tensor_json).collect();
            let mut report = Report::new("inspect")
                .field("format", json!(s.format))
                .field("tensors", json!(s.tensors.len()))
                .field("target_bytes", json!(s.target_bytes))
                .field("archive_bytes", json!(s.archive_bytes))
                .field("ratio", json!(ratio(s.archive_bytes, s.target_bytes)));
            report.extra.push(("mac", json!(s.mac)));
            report.extra.push(("tensor_details", tensors));
            Ok(report)
        }
        Command::Analyze { base, target, levels, sample_chunks, max_rel_error, estimates_only } => {
            let levels: Vec<i32> = levels
                .split(',')
                .map(|l| l.trim().parse().map_err(|_| usage(format!("bad level `{l}`"))))
                .collect::<Result<_, _>>()?;
            if base.is_dir() || target.is_dir() {
                return Err(usage("analyze takes two safetensors files"));
            }
            let (base, target) = (MappedFile::open(&base)?, MappedFile::open(&target)?);
            let estimates = estimate_modes(base.bytes(), target.bytes(), sample_chunks, max_rel_error, as_json)?;
            if estimates_only {
                let mut report = Report::new("analyze").field("target_bytes", json!(target.bytes().len()));
                report.extra.push(("estimates", estimates));
                return Ok(report);
            }
            let study = study_transforms(base.bytes(), target.bytes(), &levels)?;
            let pct = |b: f64| 100.0 * b / study.compared_bytes.max(1) as f64;
            let mut rows = Vec::new();
            for t in &study.transforms {
                for p in &t.planes {
                    let sizes: Vec<Value> =
                        p.zstd_bytes.iter().map(|&(l, b)| json!({"level": l, "pct": pct(b as f64)})).collect();
                    if !as_json {
                        let cells: Vec<String> =
                            p.zstd_bytes.iter().map(|&(_, b)| format!("{:.2}", pct(b as f64))).collect();
                        out!(
                            "| {} | {} | {} | {:.2} | {} | {:.2} |",
                            t.dtype,
                            t.name,
                            p.name,
                            pct(p.entropy_bytes),
                            cells.join(" | "),
                            pct(p.best_bytes() as f64)
                        );
                    }
                    rows.push(json!({
                        "dtype": t.dtype.to_string(),
                        "transform": t.name,
                        "plane": p.name,
                        "h0_pct": pct(p.entropy_bytes),
                        "zstd": sizes,
                        "best_pct": pct(p.best_bytes() as f64),
                    }));
                }
            }
            let best = study.transforms.iter().min_by_key(|t| t.best_bytes()).map(|t| t.name).unwrap_or("-");
            let mut report = Report::new("analyze")
                .field("best", json!(best))
                .field("compared_bytes", json!(study.compared_bytes))
                .field("recipe_file_bytes", json!(study.recipe_file_bytes))
                .field("target_bytes", json!(study.target_bytes));
            report.extra.push(("planes", Value::Array(rows)));
            report.extra.push(("estimates", estimates));
            Ok(report)
        }
    }
}

fn repo_compressor(
    model: ModelDeltaCompressor,
    level: Option<i32>,
    threads: Option<usize>,
    all_dataset: bool,
) -> Result<RepoCompressor, Failure> {
    let mut dataset = DatasetDeltaCompressor::builder();
    if let Some(level) = level {
        dataset = dataset.zstd_level(level);
    }
    if let Some(t) = threads {
        dataset = dataset.threads(t);
    }
    Ok(RepoCompressor::builder().model(model).dataset(dataset.build()?).all_dataset(all_dataset).build()?)
}

/// The decoder of directory archives: every setting that matters is in the archive.
fn repo_decoder(threads: Option<usize>, mac_key_file: Option<&Path>) -> Result<RepoCompressor, Failure> {
    let model = model_compressor(Mode::Lossless, &[], 1, threads, mac_key_file)?;
    repo_compressor(model, None, threads, false)
}

/// Progress of a directory run on `bar`.
fn repo_events(bar: &ProgressBar) -> impl FnMut(RepoEvent<'_>) -> Result<(), DeltaError> + '_ {
    move |event| {
        if let RepoEvent::Bytes(n) = event {
            bar.set_position(n);
        }
        Ok(())
    }
}

fn entries_json(entries: &[repo::EntrySummary]) -> Value {
    entries
        .iter()
        .map(|e| {
            json!({
                "path": e.path,
                "kind": e.kind.as_str(),
                "original_bytes": e.original_bytes,
                "stored_bytes": e.stored_bytes,
                "reused": e.reused,
            })
        })
        .collect()
}

fn compress_dir(
    repo: &RepoCompressor,
    base: &Path,
    target: &Path,
    output: &Path,
    verbose: bool,
    as_json: bool,
) -> Result<Report, Failure> {
    if is_stdout(output) {
        return Err(usage("a directory archive is assembled from resumable parts: -o - is for files only"));
    }
    let total = repo::scan_dir(target)?
        .iter()
        .map(|p| file_len(&p.split('/').fold(target.to_owned(), |d, c| d.join(c))))
        .sum::<Result<u64, Failure>>()?;
    let bar = progress_bar(total, "compress");
    let start = Instant::now();
    let r = repo.compress(base, target, output, &mut repo_events(&bar))?;
    let secs = start.elapsed().as_secs_f64();
    bar.finish_and_clear();
    if verbose && !as_json {
        for p in &r.report.parts {
            let err = p.relative_error.map(|e| format!(" rel_error={e:.4}")).unwrap_or_default();
            out!("{:<70} {:<20} {:>12} -> {:>12}{err}", printable(&p.name), p.method, p.original_bytes, p.stored_bytes);
        }
    }
    let report = &r.report;
    let mut out = Report::new("compress")
        .field("kind", json!("repository"))
        .field("files", json!(r.entries.len()))
        .field("files_reused", json!(r.entries.iter().filter(|e| e.reused).count()))
        .encoded(report, secs);
    out.extra.push(("entries", entries_json(&r.entries)));
    out.extra.push(("parts", parts_json(report)));
    out.extra.push(("savings_by_method", savings_by_method(report, as_json || !verbose)));
    Ok(out)
}

fn repo_decode_report(op: &str, r: &repo::RepoDecodeReport, secs: f64) -> Report {
    let mut out = decode_report(op, &r.report, secs)
        .field("files", json!(r.entries.len()))
        .field("files_reused", json!(r.entries.iter().filter(|e| e.reused).count()));
    out.extra.push(("entries", entries_json(&r.entries)));
    out
}

fn inspect_dir(archive: &Path, as_json: bool) -> Result<Report, Failure> {
    let s = RepoCompressor::builder().build()?.inspect(archive)?;
    if !as_json {
        out!("format {}; base shards: {}", repo::REPO_FORMAT, s.base_shards.len());
        out!("{:<60} {:<8} {:>12} {:>12} {:>7}", "file", "kind", "bytes", "stored", "ratio");
        for e in &s.entries {
            out!(
                "{:<60} {:<8} {:>12} {:>12} {:>6.2}%",
                printable(&e.path),
                e.kind.as_str(),
                e.original_bytes,
                e.stored_bytes,
                100.0 * ratio(e.stored_bytes, e.original_bytes)
            );
        }
    }
    let entries: Value = s
        .entries
        .iter()
        .map(|e| {
            let tensors: Value = e.tensors.iter().map(tensor_json).collect();
            json!({
                "path": e.path,
                "kind": e.kind.as_str(),
                "original_bytes": e.original_bytes,
                "stored_bytes": e.stored_bytes,
                "tensors": tensors,
            })
        })
        .collect();
    let mut report = Report::new("inspect")
        .field("format", json!(repo::REPO_FORMAT))
        .field("files", json!(s.entries.len()))
        .field("target_bytes", json!(s.target_bytes))
        .field("archive_bytes", json!(s.archive_bytes))
        .field("ratio", json!(ratio(s.archive_bytes, s.target_bytes)));
    report.extra.push(("base_shards", json!(s.base_shards)));
    report.extra.push(("entries", entries));
    Ok(report)
}

/// Per method: the tensors stored with it, their bytes before and after, and the share of all bytes saved
/// that it saved; printed as one line per method unless `quiet`.
fn savings_by_method(report: &EncodeReport, quiet: bool) -> Value {
    let mut by: std::collections::BTreeMap<&str, (u64, u64, u64)> = std::collections::BTreeMap::new();
    for p in &report.parts {
        let e = by.entry(p.method.as_str()).or_default();
        e.0 += 1;
        e.1 += p.original_bytes;
        e.2 += p.stored_bytes;
    }
    let saved_total: u64 = by.values().map(|&(_, o, s)| o.saturating_sub(s)).sum();
    by.iter()
        .map(|(method, &(parts, original, stored))| {
            let saved = original.saturating_sub(stored);
            let share = ratio(saved, saved_total);
            if !quiet {
                out!(
                    "method {:<20} parts {parts:>5}  {original:>12} -> {stored:>12} bytes, {:5.1}% of the bytes saved",
                    printable(method),
                    100.0 * share
                );
            }
            json!({
                "method": method,
                "parts": parts,
                "original_bytes": original,
                "stored_bytes": stored,
                "saved_bytes": saved,
                "share_of_saved": share,
            })
        })
        .collect()
}

/// The estimated archive of `target` against `base` in every mode (and within `max_rel_error`), one line
/// each unless `as_json`.
fn estimate_modes(
    base: &[u8],
    target: &[u8],
    sample_chunks: usize,
    max_rel_error: Option<f64>,
    as_json: bool,
) -> Result<Value, Failure> {
    let mut modes: Vec<(String, ModelDeltaCompressor)> = Vec::new();
    for (name, mode) in [
        ("lossless", Mode::Lossless),
        ("sparse", Mode::Sparse),
        ("int8", Mode::Int8),
        ("int4", Mode::Int4),
        ("1bit", Mode::OneBit),
    ] {
        modes.push((name.to_owned(), ModelDeltaCompressor::builder().mode(mode).build()?));
    }
    if let Some(e) = max_rel_error {
        modes.push((format!("max-rel-error={e}"), ModelDeltaCompressor::builder().max_rel_error(e).build()?));
    }
    let mut rows = Vec::new();
    for (name, c) in modes {
        let est = c.estimate_sharded(&[base], target, sample_chunks)?;
        let worst = est.tensors.iter().filter_map(|t| t.relative_error).reduce(f64::max);
        if !as_json {
            let err = worst.map(|w| format!(" max_rel_error={w:.4}")).unwrap_or_default();
            out!(
                "estimate mode={name} archive_bytes={} ratio={:.4}{err}",
                est.archive_bytes,
                ratio(est.archive_bytes, est.target_bytes)
            );
        }
        let tensors: Value = est
            .tensors
            .iter()
            .map(|t| {
                json!({
                    "name": t.name,
                    "method": t.method.as_str(),
                    "original_bytes": t.original_bytes,
                    "stored_bytes": t.stored_bytes,
                    "relative_error": t.relative_error,
                })
            })
            .collect();
        rows.push(json!({
            "mode": name,
            "archive_bytes": est.archive_bytes,
            "ratio": ratio(est.archive_bytes, est.target_bytes),
            "max_rel_error": worst,
            "tensors": tensors,
        }));
    }
    Ok(Value::Array(rows))
}

/// One tensor of an archive's summary, as `inspect --json` lists it.
fn tensor_json(t: &chitty_delta::TensorSummary) -> Value {
    json!({
        "name": t.name,
        "dtype": t.dtype,
        "shape": t.shape,
        "method": t.method.as_str(),
        "original_bytes": t.original_bytes,
        "stored_bytes": t.stored_bytes,
        "relative_error": t.relative_error,
    })
}
