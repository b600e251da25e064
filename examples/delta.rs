//! `delta`: the `chitty-delta` command line (compress, decompress, verify, inspect, analyze; see
//! `chitty-delta --help`), plus `generate`, which writes a realistic base/fine-tune safetensors pair from the
//! testkit to try it on, as two files or (with `--base-shards`/`--target-shards`) as two model repositories
//! laid out as on the Hugging Face Hub, sharded differently.
//!
//! ```text
//! cargo run --release --example delta --features delta -- generate --bytes 1G BASE_OUT TARGET_OUT
//! cargo run --release --example delta --features delta -- generate --bytes 1G --base-shards 5 --target-shards 3 BASE_DIR TARGET_DIR
//! cargo run --release --example delta --features delta -- compress BASE TARGET -o OUT|- [--kind auto|model|dataset]
//! cargo run --release --example delta --features delta -- decompress BASE ARCHIVE -o OUT|-
//! ```
//!
//! Every command but `generate` is the installable binary's own code (`chitty-delta/src/bin/chitty-delta.rs`,
//! `cargo install --path chitty-delta --features cli`): the same arguments, reports, exit codes and atomic
//! outputs. `generate` prints one `key=value` line and exits 0, 2 on a usage error, or 6 when writing fails.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use chitty_testkit::model_pairs::{FloatDtype, ModelPairSpec, RepoPairSpec, write_pair, write_repo_pair};
use clap::Parser;

#[allow(dead_code, unreachable_pub)]
#[path = "../chitty-delta/src/bin/chitty-delta.rs"]
mod cli;

/// `generate`'s arguments.
#[derive(Parser)]
#[command(
    name = "delta generate",
    about = "Write a realistic base/fine-tune safetensors pair (files, or repositories)"
)]
struct Generate {
    /// The base: a file, or a directory with `--base-shards`/`--target-shards`.
    base_out: PathBuf,
    /// The fine-tune: a file, or a directory with `--base-shards`/`--target-shards`.
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
    /// Write model repositories (directories as on the Hub): the base in this many safetensors shards
    /// (1 is a single `model.safetensors`; more come with `model.safetensors.index.json`), beside config,
    /// tokenizer, generation config and README files.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=999))]
    base_shards: Option<u16>,
    /// Repositories: the fine-tune in this many shards (cut at other tensors than the base's when the
    /// counts differ). Either option alone takes 1 for the other.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=999))]
    target_shards: Option<u16>,
}

/// `64M`, `1G`, `1500` bytes.
fn parse_size(s: &str) -> Option<u64> {
    let (digits, unit) = s.trim().split_at(s.trim().find(|c: char| !c.is_ascii_digit()).unwrap_or(s.trim().len()));
    let n: u64 = digits.parse().ok()?;
    let scale = match unit.to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" | "KB" => 1 << 10,
        "M" | "MB" => 1 << 20,
        "G" | "GB" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(scale)
}

fn generate(args: Generate) -> ExitCode {
    let dtype = match args.dtype.as_str() {
        "bf16" => FloatDtype::BF16,
        "f16" => FloatDtype::F16,
        "f32" => FloatDtype::F32,
        other => {
            eprintln!("result=error op=generate exit_code=2 message=unknown dtype `{other}`");
            return ExitCode::from(2);
        }
    };
    let Some(bytes) = parse_size(&args.bytes) else {
        eprintln!("result=error op=generate exit_code=2 message=`{}` is not a size (e.g. 64M, 1G)", args.bytes);
        return ExitCode::from(2);
    };
    let spec = ModelPairSpec::with_target_bytes(dtype, bytes, args.seed).delta_scale(args.delta_scale);
    let start = Instant::now();
    if args.base_shards.is_some() || args.target_shards.is_some() {
        let (base_shards, target_shards) = (args.base_shards.unwrap_or(1), args.target_shards.unwrap_or(1));
        let repo =
            RepoPairSpec { model: spec.clone(), base_shards: base_shards.into(), target_shards: target_shards.into() };
        return match write_repo_pair(&repo, &args.base_out, &args.target_out) {
            Ok(()) => {
                println!(
                    "result=ok op=generate kind=repository base_shards={base_shards} target_shards={target_shards} \
                     base_bytes={} target_bytes={} hidden={} layers={} seconds={:.1}",
                    dir_bytes(&args.base_out),
                    dir_bytes(&args.target_out),
                    spec.hidden,
                    spec.layers,
                    start.elapsed().as_secs_f64()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("result=error op=generate exit_code=6 message=writing the repositories: {e}");
                ExitCode::from(6)
            }
        };
    }
    match write_pair(&spec, &args.base_out, &args.target_out) {
        Ok(sizes) => {
            println!(
                "result=ok op=generate base_bytes={} target_bytes={} hidden={} layers={} seconds={:.1}",
                sizes.base_bytes,
                sizes.target_bytes,
                spec.hidden,
                spec.layers,
                start.elapsed().as_secs_f64()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("result=error op=generate exit_code=6 message=writing the pair: {e}");
            ExitCode::from(6)
        }
    }
}

/// Bytes of the regular files under `dir` (0 for what cannot be read: the figure is informative).
fn dir_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_bytes(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map_or(0, |m| m.len()),
            _ => 0,
        })
        .sum()
}

fn main() -> ExitCode {
    let mut args = std::env::args_os();
    if args.nth(1).is_some_and(|command| command == "generate") {
        // `delta generate …` parses as `delta-generate …`: the subcommand's name stands in for the program.
        return generate(Generate::parse_from(std::env::args_os().skip(1)));
    }
    cli::main()
}
