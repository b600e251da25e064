//! What every HTTP client of chitty shares about its upstreams (LLM providers, GitHub's API): when to try
//! again ([`full_jitter_backoff`], [`retry_after`]) and what an error answer says ([`error_message`]).
//!
//! ```
//! use std::time::Duration;
//! use chitty_core::upstream::{full_jitter_backoff, retry_after};
//!
//! // The third retry waits anywhere from 0 to min(cap, base * 2^2): replicas spread out instead of
//! // retrying a dying provider in step.
//! let base = Duration::from_millis(100);
//! let cap = Duration::from_secs(5);
//! let wait = full_jitter_backoff(base, cap, 2, 0x9e37_79b9_7f4a_7c15);
//! assert!(wait <= Duration::from_millis(400));
//!
//! let mut headers = http::HeaderMap::new();
//! headers.insert("retry-after", http::HeaderValue::from_static("3"));
//! assert_eq!(retry_after(&headers), Some(Duration::from_secs(3)));
//! ```

use std::time::Duration;

use http::HeaderMap;

/// Characters of a non-JSON error body quoted in a message.
const QUOTED_BODY_CHARS: usize = 512;

/// The exponential bound for retry number `retry` (0-based): `base · 2^retry`, at most `cap`.
pub fn backoff_bound(base: Duration, cap: Duration, retry: u32) -> Duration {
    base.saturating_mul(1u32 << retry.min(31)).min(cap)
}

/// Full jitter (AWS Architecture Blog, "Exponential Backoff and Jitter"): a wait drawn uniformly from
/// `[0, min(cap, base · 2^retry)]` by `random`, a value from the caller's injected random source.
pub fn full_jitter_backoff(base: Duration, cap: Duration, retry: u32, random: u64) -> Duration {
    let bound = u64::try_from(backoff_bound(base, cap, retry).as_micros()).unwrap_or(u64::MAX);
    // The modulo bias of `random % (bound + 1)` is under bound / 2^64: negligible.
    Duration::from_micros(random % bound.saturating_add(1))
}

/// `retry-after-ms` (OpenAI) or `Retry-After` in seconds. HTTP-date values are ignored: neither the LLM
/// providers nor GitHub send them, and honouring one needs a clock this crate does not read.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    if let Some(ms) = header("retry-after-ms").and_then(|v| v.parse::<f64>().ok())
        && (0.0..1e12).contains(&ms)
    {
        return Some(Duration::from_secs_f64(ms / 1000.0));
    }
    let secs = header("retry-after")?.parse::<f64>().ok()?;
    (0.0..1e9).contains(&secs).then(|| Duration::from_secs_f64(secs))
}

/// The message inside an error body: OpenAI's and Anthropic's `{"error": {"message"}}`, Ollama's
/// `{"error": "…"}`, GitHub's and FastAPI's `{"message"}` or `{"detail"}`; otherwise the start of the body.
pub fn error_message(body: &[u8]) -> Option<String> {
    if let Ok(json) = serde_json::from_slice::<serde_json::Value>(body) {
        let candidates = [
            json.pointer("/error/message"),
            json.get("error").filter(|e| e.is_string()),
            json.get("message"),
            json.get("detail"),
        ];
        if let Some(found) = candidates.into_iter().flatten().next() {
            return Some(match found {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            });
        }
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    Some(text.chars().take(QUOTED_BODY_CHARS).collect())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use http::HeaderValue;

    use super::*;

    #[test]
    fn full_jitter_stays_under_the_exponential_bound_and_spreads() {
        let (base, cap) = (Duration::from_millis(100), Duration::from_secs(5));
        assert_eq!(backoff_bound(base, cap, 0), base);
        assert_eq!(backoff_bound(base, cap, 3), Duration::from_millis(800));
        assert_eq!(backoff_bound(base, cap, 40), cap);
        assert_eq!(full_jitter_backoff(base, cap, 0, 0), Duration::ZERO);
        assert_eq!(full_jitter_backoff(base, cap, 0, 100_000), base, "the bound itself is reachable");
        // Many replicas with different random draws wait different times (not in step).
        let mut seed = 1u64;
        let waits: std::collections::BTreeSet<_> = (0..64)
            .map(|_| {
                seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
                let w = full_jitter_backoff(base, cap, 3, seed);
                assert!(w <= Duration::from_millis(800));
                w
            })
            .collect();
        assert!(waits.len() > 50, "{} distinct waits of 64", waits.len());
    }

    #[test]
    fn error_messages_from_common_envelopes() {
        assert_eq!(error_message(br#"{"error":{"message":"bad key","type":"x"}}"#).as_deref(), Some("bad key"));
        assert_eq!(
            error_message(br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#).as_deref(),
            Some("Overloaded")
        );
        assert_eq!(error_message(br#"{"error":"model not found"}"#).as_deref(), Some("model not found"));
        assert_eq!(error_message(br#"{"message":"Not Found","documentation_url":"x"}"#).as_deref(), Some("Not Found"));
        assert_eq!(error_message(br#"{"detail":"nope"}"#).as_deref(), Some("nope"));
        assert_eq!(error_message(b"  upstream exploded \n").as_deref(), Some("upstream exploded"));
        assert_eq!(error_message(b""), None);
    }

    #[test]
    fn retry_after_headers() {
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert("retry-after", HeaderValue::from_static("3"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(3)));
        h.insert("retry-after-ms", HeaderValue::from_static("250"));
        assert_eq!(retry_after(&h), Some(Duration::from_millis(250)));
        let mut h = HeaderMap::new();
        h.insert("retry-after", HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"));
        assert_eq!(retry_after(&h), None);
        h.insert("retry-after", HeaderValue::from_static("-1"));
        assert_eq!(retry_after(&h), None);
    }
}
