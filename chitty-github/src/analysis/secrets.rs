//! A scanner for secrets in added lines: cloud keys, private keys and tokens, by the common
//! patterns (as gitleaks and GitHub's secret scanning publish them), each match kept only when it
//! looks random enough (Shannon entropy), so that placeholders such as `AKIAXXXXXXXXXXXXXXXX` and
//! AWS's documented `…EXAMPLE` keys pass.
//!
//! A finding never carries the secret itself: only where it is and a redacted form.
//!
//! ```
//! use chitty_github::analysis::secrets::SecretScanner;
//!
//! let scanner = SecretScanner::new();
//! let found = scanner.scan_line(r#"aws_access_key_id = "AKIAZ4X7Q2LM9PVB3KTR""#);
//! assert_eq!(found.len(), 1);
//! assert_eq!(found[0].rule, "aws-access-key-id");
//! assert_eq!((found[0].start_column, found[0].end_column), (22, 41));
//! assert!(!found[0].redacted.contains("9PVB3KTR"));
//! assert!(scanner.scan_line("aws_access_key_id = AKIAXXXXXXXXXXXXXXXX").is_empty());
//! ```

use regex::Regex;

/// How bad a finding is: failures fail the check run, warnings make it neutral.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// Worth a look (a generic `password = "…"` assignment, an oversized file).
    Warning,
    /// A credential by a known format.
    Failure,
}

/// One secret found in a line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretFinding {
    /// The rule's id (`aws-access-key-id`).
    pub rule: &'static str,
    /// What the rule finds (`AWS access key ID`).
    pub description: &'static str,
    /// How bad it is.
    pub severity: Severity,
    /// First column of the secret (1-based, in characters).
    pub start_column: u32,
    /// Last column of the secret (1-based, inclusive).
    pub end_column: u32,
    /// The secret's first four characters and its length (`AKIA… (20 characters)`).
    pub redacted: String,
}

/// One pattern: the capture group holding the secret and the entropy it must reach.
#[derive(Debug)]
struct Rule {
    id: &'static str,
    description: &'static str,
    regex: Regex,
    group: usize,
    min_entropy: f64,
    severity: Severity,
}

/// `(id, description, pattern, capture group, least entropy in bits per character, severity)`.
const RULES: &[(&str, &str, &str, usize, f64, Severity)] = &[
    ("private-key", "private key", r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----", 0, 0.0, Severity::Failure),
    (
        "aws-access-key-id",
        "AWS access key ID",
        r"\b((?:AKIA|ASIA|ABIA|ACCA|A3T[A-Z0-9])[A-Z0-9]{16})\b",
        1,
        3.0,
        Severity::Failure,
    ),
    (
        "aws-secret-access-key",
        "AWS secret access key",
        r#"(?i)aws.{0,30}?(?:secret|key).{0,10}?[:=]\s*['"]?([A-Za-z0-9/+]{40})(?:['"\s,;]|$)"#,
        1,
        4.0,
        Severity::Failure,
    ),
    ("github-token", "GitHub token", r"\b(gh[pousr]_[A-Za-z0-9]{36,255})\b", 1, 3.5, Severity::Failure),
    (
        "github-fine-grained-token",
        "GitHub fine-grained personal access token",
        r"\b(github_pat_[A-Za-z0-9_]{82})\b",
        1,
        3.5,
        Severity::Failure,
    ),
    ("slack-token", "Slack token", r"\b(xox[abposr]-[A-Za-z0-9-]{10,250})\b", 1, 3.0, Severity::Failure),
    (
        "slack-webhook",
        "Slack incoming webhook URL",
        r"(https://hooks\.slack\.com/services/T[A-Z0-9]{8,}/B[A-Z0-9]{8,}/[A-Za-z0-9]{20,})",
        1,
        3.0,
        Severity::Failure,
    ),
    ("google-api-key", "Google API key", r"\b(AIza[0-9A-Za-z_-]{35})\b", 1, 3.5, Severity::Failure),
    (
        "stripe-secret-key",
        "Stripe live secret key",
        r"\b((?:sk|rk)_live_[0-9A-Za-z]{24,247})\b",
        1,
        3.5,
        Severity::Failure,
    ),
    (
        "generic-secret",
        "secret assigned in code",
        r#"(?i)\b(?:api[_-]?key|secret|token|passw(?:or)?d|client[_-]?secret)\b["']?\s*[:=]\s*["']([^"'\s]{16,200})["']"#,
        1,
        4.0,
        Severity::Warning,
    ),
];

/// Scans lines for secrets. Build once and share: the patterns are compiled in [`SecretScanner::new`].
#[derive(Debug)]
pub struct SecretScanner {
    rules: Vec<Rule>,
}

impl Default for SecretScanner {
    fn default() -> Self {
        SecretScanner::new()
    }
}

impl SecretScanner {
    /// The scanner with every built-in rule.
    pub fn new() -> Self {
        // The patterns are constants; a test checks that every one compiles.
        let rules = RULES
            .iter()
            .filter_map(|&(id, description, pattern, group, min_entropy, severity)| {
                Regex::new(pattern).ok().map(|regex| Rule { id, description, regex, group, min_entropy, severity })
            })
            .collect();
        SecretScanner { rules }
    }

    /// The secrets in one line, left to right; where rules overlap, the more specific (earlier) one wins.
    pub fn scan_line(&self, line: &str) -> Vec<SecretFinding> {
        let mut taken: Vec<(usize, usize)> = Vec::new();
        let mut findings = Vec::new();
        for rule in &self.rules {
            for captures in rule.regex.captures_iter(line) {
                let Some(secret) = captures.get(rule.group) else {
                    continue;
                };
                let (start, end) = (secret.start(), secret.end());
                let text = secret.as_str();
                if taken.iter().any(|&(s, e)| start < e && s < end) || is_placeholder(text) {
                    continue;
                }
                if rule.min_entropy > 0.0 && shannon_entropy(text) < rule.min_entropy {
                    continue;
                }
                taken.push((start, end));
                findings.push(SecretFinding {
                    rule: rule.id,
                    description: rule.description,
                    severity: rule.severity,
                    start_column: column(line, start),
                    end_column: column(line, end).saturating_sub(1).max(column(line, start)),
                    redacted: redact(text),
                });
            }
        }
        findings.sort_by_key(|f| f.start_column);
        findings
    }
}

/// AWS documents its example keys with `EXAMPLE` in them; templates use runs of `x` or `*`.
fn is_placeholder(text: &str) -> bool {
    let upper = text.to_ascii_uppercase();
    upper.contains("EXAMPLE") || upper.contains("XXXXXXXX") || text.contains("********")
}

/// The 1-based character column of byte offset `at`.
fn column(line: &str, at: usize) -> u32 {
    let chars = line.get(..at).map_or(0, |prefix| prefix.chars().count());
    u32::try_from(chars).unwrap_or(u32::MAX).saturating_add(1)
}

/// The first four characters and the length: enough to find it, not enough to use it.
fn redact(secret: &str) -> String {
    let head: String = secret.chars().take(4).collect();
    format!("{head}… ({} characters)", secret.chars().count())
}

/// Shannon entropy of `text` in bits per character (0 for empty text).
pub fn shannon_entropy(text: &str) -> f64 {
    let mut counts = [0u32; 256];
    for byte in text.bytes() {
        counts[usize::from(byte)] += 1;
    }
    let total = text.len() as f64;
    if total == 0.0 {
        return 0.0;
    }
    counts
        .iter()
        .filter(|&&count| count > 0)
        .map(|&count| {
            let p = f64::from(count) / total;
            -p * p.log2()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(line: &str) -> Vec<&'static str> {
        SecretScanner::new().scan_line(line).into_iter().map(|f| f.rule).collect()
    }

    #[test]
    fn every_rule_compiles() {
        assert_eq!(SecretScanner::new().rules.len(), RULES.len());
    }

    #[test]
    fn each_kind_of_secret_is_found() {
        // Made-up values of the right shapes; none is a real credential.
        let cases = [
            ("-----BEGIN RSA PRIVATE KEY-----", "private-key"),
            ("key: -----BEGIN OPENSSH PRIVATE KEY-----", "private-key"),
            ("AWS_ACCESS_KEY_ID=AKIAZ4X7Q2LM9PVB3KTR", "aws-access-key-id"),
            (r#"aws_secret_access_key = "q8Vz3kP1xR7mN2bT5wY9cF4hJ6gL0dS2aE8uI1oQ""#, "aws-secret-access-key"),
            ("token = ghp_R8x2Kq9ZmT4vW7yB1nC5dF3gH6jL0pS2aE8u", "github-token"),
            (
                "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",
                "github-fine-grained-token",
            ),
            ("SLACK=xoxb-2048193745-4820193847561-Zq8Vx3kP1mR7nT2bW5yC", "slack-token"),
            ("https://hooks.slack.com/services/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", "slack-webhook"),
            ("maps_key = AIzaSyD4x8Kq2ZmT9vW7yB1nC5dF3gH6jL0pS2a", "google-api-key"),
            ("STRIPE=sk_live_4eC39HqLyjWDarjtT1zdp7dcQ8x2", "stripe-secret-key"),
            (r#"password = "k9#Qz!7vLm2@Xw4$Rt8&""#, "generic-secret"),
        ];
        for (line, rule) in cases {
            assert_eq!(rules(line), [rule], "{line}");
        }
    }

    #[test]
    fn placeholders_and_plain_text_are_not_secrets() {
        for line in [
            "AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE",
            "AWS_ACCESS_KEY_ID=AKIAXXXXXXXXXXXXXXXX",
            "AWS_ACCESS_KEY_ID=AKIAAAAAAAAAAAAAAAAA",
            r#"password = "changeme-changeme-changeme""#,
            r#"token = "<your token here>""#,
            "let secret = read_secret(path)?;",
            "ghp_ is the prefix of classic tokens",
            "",
        ] {
            assert_eq!(rules(line), Vec::<&str>::new(), "{line}");
        }
    }

    #[test]
    fn columns_count_characters_and_the_secret_is_never_shown() {
        let line = "é = AKIAZ4X7Q2LM9PVB3KTR";
        let found = SecretScanner::new().scan_line(line);
        assert_eq!((found[0].start_column, found[0].end_column), (5, 24));
        assert_eq!(found[0].redacted, "AKIA… (20 characters)");
        assert!(!format!("{found:?}").contains("LM9PVB3KTR"));
    }

    #[test]
    fn entropy_separates_random_from_repeated_text() {
        assert_eq!(shannon_entropy(""), 0.0);
        assert_eq!(shannon_entropy("aaaa"), 0.0);
        assert!((shannon_entropy("abcd") - 2.0).abs() < 1e-9);
        assert!(shannon_entropy("q8Vz3kP1xR7mN2bT5wY9cF4hJ6gL0dS2aE8uI1oQ") > 4.5);
    }

    proptest::proptest! {
        #[test]
        fn any_line_scans_without_panicking(line in "\\PC{0,300}") {
            // Compiled once: debug-build regex compilation per case would dominate the run.
            static SCANNER: std::sync::LazyLock<SecretScanner> = std::sync::LazyLock::new(SecretScanner::new);
            for finding in SCANNER.scan_line(&line) {
                proptest::prop_assert!(finding.start_column <= finding.end_column);
            }
        }
    }
}
