//! `chitty-report`: the cost report over the gateway's JSON-lines request log (`[server] event_log`).
//!
//! ```sh
//! chitty-report events.jsonl                                   # spend, hit rate, tokens per tenant and model
//! chitty-report events.jsonl --config gateway.toml --router router.toml   # plus the savings candidates
//! chitty-report events.jsonl --since 2025-06-01T00:00:00Z --tenant acme --json
//! ```
//!
//! The logic is `chitty_core::report` (pure); this binary reads the files and prints. Exit code 0 on success,
//! 2 for a missing or unreadable log, a bad configuration or a bad option.

use std::io::BufRead as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use chitty::core::ModelPrice;
use chitty::core::Timestamp;
use chitty::core::report::{CostReport, ReportFilter, ReportSummary, SavingsEstimator, Totals};
use chitty::core::router::RouterConfig;
use chitty::providers::config::GatewayFile;
use clap::Parser;

/// Cost report over the gateway's JSON-lines request log: per tenant and model, requests, spend (USD, exact),
/// cache hit rate and tokens; with a router, the requests a cheaper candidate would have served.
///
/// Savings: the log carries no prompt, so only the router's prompt token bounds (`prompt_tokens_above`,
/// `prompt_tokens_at_most`) are evaluated, against the logged prompt tokens. Rules that need tools, JSON mode,
/// a JSON schema, images or the `x-chitty-quality` hint never fire; no hint is assumed; with a classifier
/// (`embedding_model`) a request the rules leave undecided is not counted. A candidate is a successful chat
/// request, not a cache hit, logged on a router candidate, for which the rules pick a cheaper candidate; it is
/// re-priced from its logged token counts at the cheaper price (the candidate's `price` in the router, else the
/// model's `[[models]]` price).
#[derive(Debug, Parser)]
#[command(name = "chitty-report", version)]
struct Args {
    /// The request log: one JSON object per line, as `[server] event_log` writes it.
    log: PathBuf,
    /// The gateway's configuration file (TOML): its `[[models]]` prices re-price the savings candidates.
    #[arg(long)]
    config: Option<PathBuf>,
    /// A TOML file holding one router (the fields of a `[[routers]]` entry at top level: `name`, `candidates`,
    /// `[[rules]]`, …); the gateway file has no `[[routers]]` section yet. Needs `--config`.
    #[arg(long, requires = "config")]
    router: Option<PathBuf>,
    /// Count requests finished at or after this time (RFC 3339, e.g. `2025-06-01T00:00:00Z`).
    #[arg(long, value_parser = rfc3339)]
    since: Option<Timestamp>,
    /// Count requests finished before this time (RFC 3339).
    #[arg(long, value_parser = rfc3339)]
    until: Option<Timestamp>,
    /// Count only this tenant's requests.
    #[arg(long)]
    tenant: Option<String>,
    /// Print the report as one JSON object (stable field names) instead of tables.
    #[arg(long)]
    json: bool,
}

fn rfc3339(text: &str) -> Result<Timestamp, String> {
    let at = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map_err(|e| format!("not an RFC 3339 time ({e})"))?;
    let ms = at.unix_timestamp_nanos() / 1_000_000;
    u64::try_from(ms).map(Timestamp).map_err(|_| "before 1970".to_owned())
}

/// Why the report could not be made.
#[derive(Debug)]
enum ReportError {
    /// The log could not be opened or read.
    Log(PathBuf, std::io::Error),
    /// The gateway configuration is unreadable or wrong.
    Config(chitty::providers::config::ConfigError),
    /// The router file is unreadable or wrong.
    Router(PathBuf, String),
}

impl std::fmt::Display for ReportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReportError::Log(path, e) => write!(f, "cannot read the log {}: {e}", path.display()),
            ReportError::Config(e) => write!(f, "configuration: {e}"),
            ReportError::Router(path, e) => write!(f, "router {}: {e}", path.display()),
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("chitty-report: {e}");
            ExitCode::from(2)
        }
    }
}

fn run(args: &Args) -> Result<(), ReportError> {
    let estimator = match (&args.config, &args.router) {
        (Some(config), Some(router)) => Some(estimator(config, router)?),
        (Some(config), None) => {
            // Checked even without a router, so a wrong file is reported rather than ignored.
            GatewayFile::load(config).map_err(ReportError::Config)?;
            None
        }
        _ => None,
    };
    let filter = ReportFilter { since: args.since, until: args.until, tenant: args.tenant.clone() };
    let mut report = CostReport::new(filter, estimator);
    let file = std::fs::File::open(&args.log).map_err(|e| ReportError::Log(args.log.clone(), e))?;
    let mut reader = std::io::BufReader::new(file);
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line).map_err(|e| ReportError::Log(args.log.clone(), e))?;
        if n == 0 {
            break;
        }
        match std::str::from_utf8(&line) {
            Ok(text) => report.add_line(text),
            Err(e) => report.add_unreadable_line(format!("not UTF-8: {e}")),
        }
    }
    let summary = report.summary();
    if args.json {
        match serde_json::to_string_pretty(&summary) {
            Ok(text) => println!("{text}"),
            // Serialising plain structs of numbers and strings cannot fail; report rather than panic anyway.
            Err(e) => eprintln!("chitty-report: {e}"),
        }
    } else {
        print!("{}", table(&summary));
    }
    if summary.lines.skipped > 0 {
        eprintln!("chitty-report: {} lines skipped (not a request log line)", summary.lines.skipped);
    }
    Ok(())
}

fn estimator(config: &Path, router: &Path) -> Result<SavingsEstimator, ReportError> {
    let file = GatewayFile::load(config).map_err(ReportError::Config)?;
    let text = std::fs::read_to_string(router).map_err(|e| ReportError::Router(router.to_owned(), e.to_string()))?;
    let router_config: RouterConfig =
        toml::from_str(&text).map_err(|e| ReportError::Router(router.to_owned(), e.to_string()))?;
    let price = |m: &str| -> Option<ModelPrice> { file.models.iter().find(|x| x.name == m).map(|x| x.price) };
    SavingsEstimator::new(&router_config, price).map_err(|e| ReportError::Router(router.to_owned(), e.to_string()))
}

fn rate(r: Option<f64>) -> String {
    r.map_or_else(|| "-".to_owned(), |r| format!("{:.1}%", r * 100.0))
}

/// The report as aligned text tables.
fn table(s: &ReportSummary) -> String {
    let header = [
        "tenant",
        "model",
        "requests",
        "errors",
        "spend_usd",
        "hit_rate",
        "prompt_tok",
        "compl_tok",
        "cheaper",
        "share",
        "saving_usd",
    ];
    let cells = |tenant: &str, model: &str, t: &Totals| -> Vec<String> {
        vec![
            tenant.to_owned(),
            model.to_owned(),
            t.requests.to_string(),
            t.errors.to_string(),
            t.spend_usd.clone(),
            rate(t.cache_hit_rate),
            t.prompt_tokens.to_string(),
            t.completion_tokens.to_string(),
            t.savings.requests.to_string(),
            rate(Some(t.savings.share)),
            t.savings.saving_usd.clone(),
        ]
    };
    let mut rows: Vec<Vec<String>> = vec![header.iter().map(|h| (*h).to_owned()).collect()];
    rows.extend(s.rows.iter().map(|r| cells(&r.tenant, &r.model, &r.totals)));
    rows.extend(s.tenants.iter().map(|r| cells(&r.tenant, "(all)", &r.totals)));
    rows.push(cells("(all)", "(all)", &s.total));
    let widths: Vec<usize> =
        (0..header.len()).map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for (i, row) in rows.iter().enumerate() {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(c, (cell, w))| if c < 2 { format!("{cell:<w$}") } else { format!("{cell:>w$}") })
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
        if i == 0 {
            out.push_str(&"-".repeat(widths.iter().sum::<usize>() + 2 * (widths.len() - 1)));
            out.push('\n');
        }
    }
    if let Some(r) = &s.router {
        out.push_str(&format!(
            "\nrouter `{}` (candidates, cheapest first: {}): {} requests would move to a cheaper model, saving ${} \
             of ${} ({}); {}\n",
            r.name,
            r.candidates.join(", "),
            s.total.savings.requests,
            s.total.savings.saving_usd,
            s.total.spend_usd,
            s.total.savings.to_models.iter().map(|(m, n)| format!("{n} to {m}")).collect::<Vec<_>>().join(", "),
            if r.unevaluated_rules.is_empty() {
                "every rule evaluated from the log".to_owned()
            } else {
                format!("rules not evaluable from the log (never fire): {}", r.unevaluated_rules.join(", "))
            },
        ));
        if r.classifier {
            out.push_str(
                "the router's classifier is not reproducible from the log: requests it would decide are not counted\n",
            );
        }
    }
    out.push_str(&format!(
        "\n{} lines read: {} requests counted, {} filtered out, {} other events, {} lines skipped\n",
        s.lines.read, s.lines.requests, s.lines.filtered_out, s.lines.other, s.lines.skipped
    ));
    for skipped in &s.first_skipped {
        out.push_str(&format!("  line {}: {}\n", skipped.line, skipped.reason));
    }
    out
}
