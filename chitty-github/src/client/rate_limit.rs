//! Reading GitHub's rate-limit headers and deciding how long to back off.

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

use chitty_core::Timestamp;
use reqwest::StatusCode;
use reqwest::header::HeaderMap;

use super::error::RateLimitKind;

/// Extra wait past `x-ratelimit-reset`, for clock skew between this host and GitHub.
const RESET_CUSHION: Duration = Duration::from_secs(1);

/// Longest bucket name taken from `x-ratelimit-resource` (GitHub's are under 30 characters).
const MAX_RESOURCE_NAME: usize = 64;

/// One of GitHub's rate-limit buckets, as `x-ratelimit-resource` names it: each has its own budget
/// (`core` 5,000 an hour for an installation, `search` 30 a minute, `code_search` 10 a minute, …).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RateLimitResource(Cow<'static, str>);

impl RateLimitResource {
    /// Every REST call that is not a search.
    pub const CORE: RateLimitResource = RateLimitResource(Cow::Borrowed("core"));
    /// `/search/*` except code search.
    pub const SEARCH: RateLimitResource = RateLimitResource(Cow::Borrowed("search"));
    /// `/search/code`.
    pub const CODE_SEARCH: RateLimitResource = RateLimitResource(Cow::Borrowed("code_search"));
    /// `/graphql`.
    pub const GRAPHQL: RateLimitResource = RateLimitResource(Cow::Borrowed("graphql"));

    /// A bucket by name; `None` unless it is 1 to 64 lowercase letters, digits or `_`, as GitHub's are.
    pub fn new(name: &str) -> Option<Self> {
        let valid = (1..=MAX_RESOURCE_NAME).contains(&name.len())
            && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !valid {
            return None;
        }
        Some(
            [Self::CORE, Self::SEARCH, Self::CODE_SEARCH, Self::GRAPHQL]
                .into_iter()
                .find(|known| known.as_str() == name)
                .unwrap_or_else(|| RateLimitResource(Cow::Owned(name.to_owned()))),
        )
    }

    /// The bucket a request to `path` (relative to the API root, without the query) spends, by
    /// GitHub's rules: `/search/code` → code_search, other `/search/...` → search, `/graphql` →
    /// graphql, everything else → core.
    pub fn for_path(path: &str) -> Self {
        if path == "/search/code" {
            Self::CODE_SEARCH
        } else if path.starts_with("/search/") {
            Self::SEARCH
        } else if path == "/graphql" {
            Self::GRAPHQL
        } else {
            Self::CORE
        }
    }

    /// The bucket named by an answer's `x-ratelimit-resource`, if it sent a valid one.
    pub fn from_headers(headers: &HeaderMap) -> Option<Self> {
        Self::new(headers.get("x-ratelimit-resource")?.to_str().ok()?.trim())
    }

    /// The name, as in `x-ratelimit-resource`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RateLimitResource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The rate limit of one bucket as of its last answer.
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
    if let Some(wait) = chitty_core::upstream::retry_after(headers) {
        return Some(RateLimitHit { kind, wait: Some(wait) });
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
    fn buckets_follow_githubs_paths_and_names() {
        assert_eq!(RateLimitResource::for_path("/search/code"), RateLimitResource::CODE_SEARCH);
        assert_eq!(RateLimitResource::for_path("/search/issues"), RateLimitResource::SEARCH);
        assert_eq!(RateLimitResource::for_path("/graphql"), RateLimitResource::GRAPHQL);
        assert_eq!(RateLimitResource::for_path("/repos/o/r/search/code"), RateLimitResource::CORE);
        assert_eq!(RateLimitResource::for_path("/search"), RateLimitResource::CORE);
        assert_eq!(RateLimitResource::new("search"), Some(RateLimitResource::SEARCH));
        assert_eq!(RateLimitResource::new("dependency_snapshots").unwrap().as_str(), "dependency_snapshots");
        for bad in ["", "Core", "core search", "core\n", &"x".repeat(65)] {
            assert_eq!(RateLimitResource::new(bad), None, "{bad:?}");
        }
        let h = headers(&[("x-ratelimit-resource", " code_search ")]);
        assert_eq!(RateLimitResource::from_headers(&h), Some(RateLimitResource::CODE_SEARCH));
        assert_eq!(RateLimitResource::from_headers(&HeaderMap::new()), None);
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
