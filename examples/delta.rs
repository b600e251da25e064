//! `delta`: the `chitty-delta` command line (compress, decompress, verify, inspect, analyze; see
//! `chitty-delta --help`), plus `generate`, which writes a realistic base/fine-tune safetensors pair from the
//! testkit to try it on.
//!
//! ```text
//! cargo run --release --example delta --features delta -- generate --bytes 1G BASE_OUT TARGET_OUT
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

use chitty_testkit::model_pairs::{FloatDtype, ModelPairSpec, write_pair};
use clap::Parser;

#[allow(dead_code, unreachable_pub)]
#[path = "../chitty-delta/src/bin/chitty-delta.rs"]
mod cli;

/// `generate`'s arguments.
#[derive(Parser)]
#[command(name = "delta generate", about = "Write a realistic base/fine-tune safetensors pair")]
struct Generate {
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

fn main() -> ExitCode {
    let mut args = std::env::args_os();
    if args.nth(1).is_some_and(|command| command == "generate") {
        // `delta generate …` parses as `delta-generate …`: the subcommand's name stands in for the program.
        return generate(Generate::parse_from(std::env::args_os().skip(1)));
    }
    cli::main()
}
