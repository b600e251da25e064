//! Base / derivative dataset pairs (CSV and JSON Lines), deterministic from a seed.
//!
//! Rows look like an orders export: an id, an ISO timestamp, a customer, a country, a category, an
//! amount, a hex token and a short comment, so that a file compresses on its own about as well as real
//! exports do (to roughly a third with zstd) and a delta that fails to use the base shows. Each
//! [`DatasetEdit`] derives a target the way dataset versions derive from each other.
//!
//! ```
//! use chitty_testkit::dataset_pairs::{DatasetEdit, RowFormat, generate_rows, derive};
//!
//! let base = generate_rows(RowFormat::Csv, 1_000, 7);
//! let target = derive(&base, RowFormat::Csv, DatasetEdit::FilterRows { percent: 10 }, 7);
//! assert!(target.len() < base.len());
//! assert!(target.ends_with(b"\n"));
//! ```

use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

/// The text format of the rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RowFormat {
    /// Comma-separated values with a header line.
    Csv,
    /// One JSON object per line.
    JsonLines,
}

/// How a target is derived from a base.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DatasetEdit {
    /// New rows appended: `percent` of the base's row count.
    AppendRows {
        /// Rows added, in percent of the base's rows.
        percent: u32,
    },
    /// One field changed in place in `percent` of the rows.
    EditRows {
        /// Rows edited, in percent.
        percent: u32,
    },
    /// `percent` of the rows dropped, the rest kept in order.
    FilterRows {
        /// Rows dropped, in percent.
        percent: u32,
    },
    /// A column added to every row (a derived flag and a score).
    AddColumn,
    /// The rows in a random order (the header, if any, first).
    ShuffleRows,
}

const COUNTRIES: [&str; 12] = ["US", "DE", "FR", "GB", "JP", "BR", "IN", "CA", "ES", "IT", "NL", "SE"];
const CATEGORIES: [&str; 8] = ["books", "electronics", "garden", "toys", "grocery", "sports", "music", "health"];
const WORDS: [&str; 16] = [
    "fast", "delivery", "late", "gift", "returned", "great", "broken", "repeat", "customer", "happy", "box", "damaged",
    "express", "promo", "bulk", "order",
];
const NAMES: [&str; 12] =
    ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy", "mallory", "oscar"];

struct Row {
    id: u64,
    ts: u64,
    customer: String,
    country: &'static str,
    category: &'static str,
    amount_cents: u64,
    token: u64,
    comment: String,
}

fn random_row(rng: &mut SmallRng, id: u64) -> Row {
    let words = rng.random_range(1..=4);
    let comment: Vec<&str> = (0..words).map(|_| WORDS[rng.random_range(0..WORDS.len())]).collect();
    Row {
        id,
        ts: 1_700_000_000 + id * 37 + rng.random_range(0..30),
        customer: format!("{}{}", NAMES[rng.random_range(0..NAMES.len())], rng.random_range(0..5000)),
        country: COUNTRIES[rng.random_range(0..COUNTRIES.len())],
        category: CATEGORIES[rng.random_range(0..CATEGORIES.len())],
        amount_cents: rng.random_range(100..500_000),
        token: rng.random(),
        comment: comment.join(" "),
    }
}

fn iso(ts: u64) -> String {
    // Days since 1970 to a civil date (Howard Hinnant's algorithm), enough for realistic timestamps.
    let (days, secs) = (ts / 86_400, ts % 86_400);
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", secs / 3600, secs / 60 % 60, secs % 60)
}

fn render(format: RowFormat, r: &Row) -> String {
    let amount = format!("{}.{:02}", r.amount_cents / 100, r.amount_cents % 100);
    match format {
        RowFormat::Csv => format!(
            "{},{},{},{},{},{amount},{:016x},\"{}\"\n",
            r.id,
            iso(r.ts),
            r.customer,
            r.country,
            r.category,
            r.token,
            r.comment
        ),
        RowFormat::JsonLines => format!(
            "{{\"id\":{},\"ts\":\"{}\",\"customer\":\"{}\",\"country\":\"{}\",\"category\":\"{}\",\"amount\":{amount},\"token\":\"{:016x}\",\"comment\":\"{}\"}}\n",
            r.id,
            iso(r.ts),
            r.customer,
            r.country,
            r.category,
            r.token,
            r.comment
        ),
    }
}

fn header(format: RowFormat) -> &'static str {
    match format {
        RowFormat::Csv => "id,ts,customer,country,category,amount,token,comment\n",
        RowFormat::JsonLines => "",
    }
}

/// `rows` rows in `format` (CSV with its header line), deterministic from `seed`.
pub fn generate_rows(format: RowFormat, rows: u64, seed: u64) -> Vec<u8> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut out = header(format).as_bytes().to_vec();
    for id in 0..rows {
        out.extend_from_slice(render(format, &random_row(&mut rng, id)).as_bytes());
    }
    out
}

/// Splits text into its header (CSV) and its lines, each with its `\n`.
fn lines(data: &[u8], format: RowFormat) -> (&[u8], Vec<&[u8]>) {
    let skip = match format {
        RowFormat::Csv => data.iter().position(|&b| b == b'\n').map_or(data.len(), |i| i + 1),
        RowFormat::JsonLines => 0,
    };
    let (head, body) = data.split_at(skip);
    (head, body.split_inclusive(|&b| b == b'\n').collect())
}

/// The target `edit` makes of `base` (rows from [`generate_rows`] in the same `format`), deterministic from
/// `seed`.
pub fn derive(base: &[u8], format: RowFormat, edit: DatasetEdit, seed: u64) -> Vec<u8> {
    let mut rng = SmallRng::seed_from_u64(seed ^ 0xda7a);
    let (head, rows) = lines(base, format);
    let mut out = head.to_vec();
    let pick = |rng: &mut SmallRng, percent: u32| rng.random_range(0..100u32) < percent;
    match edit {
        DatasetEdit::AppendRows { percent } => {
            out.extend(rows.concat());
            let added = rows.len() as u64 * u64::from(percent) / 100;
            for id in 0..added {
                out.extend_from_slice(render(format, &random_row(&mut rng, rows.len() as u64 + id)).as_bytes());
            }
        }
        DatasetEdit::EditRows { percent } => {
            for row in rows {
                if pick(&mut rng, percent) {
                    // A new amount: same shape, other digits.
                    let text = String::from_utf8_lossy(row);
                    let amount = format!("{}.{:02}", rng.random_range(100..5000u32), rng.random_range(0..100u32));
                    let edited = match format {
                        RowFormat::Csv => {
                            let mut f: Vec<&str> = text.splitn(8, ',').collect();
                            if f.len() == 8 {
                                f[5] = &amount;
                            }
                            f.join(",")
                        }
                        RowFormat::JsonLines => match (text.find("\"amount\":"), text.find(",\"token\"")) {
                            (Some(a), Some(b)) => format!("{}\"amount\":{amount}{}", &text[..a], &text[b..]),
                            _ => text.into_owned(),
                        },
                    };
                    out.extend_from_slice(edited.as_bytes());
                } else {
                    out.extend_from_slice(row);
                }
            }
        }
        DatasetEdit::FilterRows { percent } => {
            for row in rows {
                if !pick(&mut rng, percent) {
                    out.extend_from_slice(row);
                }
            }
        }
        DatasetEdit::AddColumn => {
            if format == RowFormat::Csv {
                out.truncate(out.len().saturating_sub(1));
                out.extend_from_slice(b",flagged,score\n");
            }
            for row in rows {
                let body = row.strip_suffix(b"\n").unwrap_or(row);
                let flagged = rng.random_range(0..10u32) == 0;
                let score = rng.random_range(0..100u32);
                out.extend_from_slice(body);
                match format {
                    RowFormat::Csv => out.extend_from_slice(format!(",{flagged},{score}\n").as_bytes()),
                    RowFormat::JsonLines => {
                        out.truncate(out.len().saturating_sub(1));
                        out.extend_from_slice(format!(",\"flagged\":{flagged},\"score\":{score}}}\n").as_bytes());
                    }
                }
            }
        }
        DatasetEdit::ShuffleRows => {
            let mut rows = rows;
            rows.shuffle(&mut rng);
            out.extend(rows.concat());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edits_keep_the_row_structure() {
        for format in [RowFormat::Csv, RowFormat::JsonLines] {
            let base = generate_rows(format, 500, 1);
            assert_eq!(base, generate_rows(format, 500, 1));
            let count = |d: &[u8]| d.iter().filter(|&&b| b == b'\n').count();
            let head = usize::from(format == RowFormat::Csv);
            let appended = derive(&base, format, DatasetEdit::AppendRows { percent: 10 }, 1);
            assert!(appended.starts_with(&base));
            assert_eq!(count(&appended), 550 + head);
            let edited = derive(&base, format, DatasetEdit::EditRows { percent: 10 }, 1);
            assert_eq!(count(&edited), 500 + head);
            assert_ne!(edited, base);
            let filtered = derive(&base, format, DatasetEdit::FilterRows { percent: 10 }, 1);
            assert!(count(&filtered) < 500 && count(&filtered) > 400);
            let widened = derive(&base, format, DatasetEdit::AddColumn, 1);
            assert_eq!(count(&widened), 500 + head);
            assert!(widened.len() > base.len());
            let shuffled = derive(&base, format, DatasetEdit::ShuffleRows, 1);
            assert_eq!(shuffled.len(), base.len());
        }
        assert!(iso(1_700_000_000).starts_with("2023-11-14T22:13:20Z"));
    }
}
