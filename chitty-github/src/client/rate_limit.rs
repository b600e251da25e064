//! Reading GitHub's rate-limit headers and deciding how long to back off.

use std::time::Duration;

use chitty_core::Timestamp;
use reqwest::StatusCode;
use reqwest::header::HeaderMap;

use super::error::RateLimitKind;

/// Extra wait past `x-ratelimit-reset`, for clock skew between this host and GitHub.
const RESET_CUSHION: Duration = Duration::from_secs(1);

/// The primary rate limit as of the last answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitSnapshot {
    /// Requests allowed per window (`x-ratelimit-limit`), if sent.
    pub limit: Option<u32>,
    /// Requests left in the window (`x-ratelimit-remaining`).
    pub remaining: u32,
    /// When the window resets (`x-ratelimit-reset`).
    pub reset: Timestamp,
}

impl RateLimitSnapshot {
    /// Reads the headers of one answer; `None` when they are absent or malformed.
    pub fn from_headers(headers: &HeaderMap) -> Option<Self> {
        let remaining = header_u64(headers, "x-ratelimit-remaining")?;
        let reset = header_u64(headers, "x-ratelimit-reset")?;
        Some(RateLimitSnapshot {
            limit: header_u64(headers, "x-ratelimit-limit").and_then(|l| u32::try_from(l).ok()),
            remaining: u32::try_from(remaining).unwrap_or(u32::MAX),
            reset: Timestamp(reset.saturating_mul(1000)),
        })
    }

    /// How long a request must wait at `now` because the budget is spent; `None` if it may go.
    pub fn wait_at(&self, now: Timestamp) -> Option<Duration> {
        (self.remaining == 0 && now < self.reset).then(|| self.reset.since(now) + RESET_CUSHION)
    }
}

fn header_u64(headers: &HeaderMap, name: &str) -> Option<u64> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

/// A rate-limited answer: which limit, and how long GitHub asked us to wait if it said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RateLimitHit {
    pub(crate) kind: RateLimitKind,
    /// `None`: GitHub gave no hint; wait at least a minute, then back off exponentially.
    pub(crate) wait: Option<Duration>,
}

/// Whether a 403/429 answer is a rate limit, following GitHub's documented order: `Retry-After`,
/// then `x-ratelimit-remaining: 0` until `x-ratelimit-reset`, then "at least one minute".
pub(crate) fn classify(status: StatusCode, headers: &HeaderMap, message: &str, now: Timestamp) -> Option<RateLimitHit> {
    if status != StatusCode::FORBIDDEN && status != StatusCode::TOO_MANY_REQUESTS {
        return None;
    }
    let snapshot = RateLimitSnapshot::from_headers(headers);
    let exhausted = snapshot.is_some_and(|s| s.remaining == 0);
    let kind = if exhausted { RateLimitKind::Primary } else { RateLimitKind::Secondary };
    // GitHub sends Retry-After in seconds; an HTTP-date form falls through to the other hints.
    if let Some(seconds) = header_u64(headers, "retry-after") {
        return Some(RateLimitHit { kind, wait: Some(Duration::from_secs(seconds)) });
    }
    if let Some(snapshot) = snapshot.filter(|s| s.remaining == 0) {
        return Some(RateLimitHit { kind, wait: Some(snapshot.wait_at(now).unwrap_or(RESET_CUSHION)) });
    }
    let says_rate_limit = message.to_ascii_lowercase().contains("rate limit");
    (status == StatusCode::TOO_MANY_REQUESTS || says_rate_limit).then_some(RateLimitHit { kind, wait: None })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.insert(*k, v.parse().unwrap());
        }
        map
    }

    proptest::proptest! {
        #[test]
        fn hostile_headers_never_panic(
            remaining in ".{0,24}",
            reset in ".{0,24}",
            retry in ".{0,24}",
            now in proptest::prelude::any::<u64>(),
        ) {
            let mut map = HeaderMap::new();
            let pairs = [("x-ratelimit-remaining", &remaining), ("x-ratelimit-reset", &reset), ("retry-after", &retry)];
            for (name, value) in pairs {
                if let Ok(value) = value.parse() {
                    map.insert(name, value);
                }
            }
            let now = Timestamp(now);
            if let Some(snapshot) = RateLimitSnapshot::from_headers(&map) {
                let _ = snapshot.wait_at(now);
            }
            let _ = classify(StatusCode::FORBIDDEN, &map, &retry, now);
            let _ = classify(StatusCode::TOO_MANY_REQUESTS, &map, &reset, now);
        }
    }

    #[test]
    fn retry_after_wins() {
        let h = headers(&[("retry-after", "7"), ("x-ratelimit-remaining", "10"), ("x-ratelimit-reset", "99")]);
        let hit = classify(StatusCode::FORBIDDEN, &h, "secondary rate limit", Timestamp(0)).unwrap();
        assert_eq!(hit, RateLimitHit { kind: RateLimitKind::Secondary, wait: Some(Duration::from_secs(7)) });
    }

    #[test]
    fn exhausted_primary_waits_until_reset() {
        let h = headers(&[("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", "100")]);
        let hit = classify(StatusCode::FORBIDDEN, &h, "API rate limit exceeded", Timestamp(40_000)).unwrap();
        assert_eq!(hit.kind, RateLimitKind::Primary);
        assert_eq!(hit.wait, Some(Duration::from_secs(61)));
    }

    #[test]
    fn secondary_without_hints_and_plain_forbidden() {
        let h = headers(&[("x-ratelimit-remaining", "4000"), ("x-ratelimit-reset", "100")]);
        let hit =
            classify(StatusCode::FORBIDDEN, &h, "You have exceeded a secondary rate limit", Timestamp(0)).unwrap();
        assert_eq!(hit.wait, None);
        assert!(classify(StatusCode::TOO_MANY_REQUESTS, &HeaderMap::new(), "", Timestamp(0)).is_some());
        assert!(classify(StatusCode::FORBIDDEN, &h, "Resource not accessible by integration", Timestamp(0)).is_none());
        assert!(classify(StatusCode::NOT_FOUND, &h, "rate limit", Timestamp(0)).is_none());
    }
}
