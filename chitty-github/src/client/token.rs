//! Installation tokens and their per-installation, single-flight cache.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chitty_core::Timestamp;
use serde::{Deserialize, Serialize};

use super::error::ClientError;

/// The numeric ID of one installation of the App (on an account or organization).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct InstallationId(pub u64);

impl fmt::Display for InstallationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// An installation access token (`ghs_…`) with its expiry. `Debug` redacts the secret.
#[derive(Clone)]
pub struct InstallationToken {
    secret: Arc<str>,
    expires_at: Timestamp,
    minted_at: Timestamp,
}

impl fmt::Debug for InstallationToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InstallationToken")
            .field("secret", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .field("minted_at", &self.minted_at)
            .finish()
    }
}

impl InstallationToken {
    /// A token GitHub issued at `minted_at` (our clock) that expires at `expires_at`.
    pub fn new(secret: impl Into<Arc<str>>, expires_at: Timestamp, minted_at: Timestamp) -> Self {
        InstallationToken { secret: secret.into(), expires_at, minted_at }
    }

    /// The token, for an `Authorization` header or a git remote. Do not log it.
    pub fn expose_secret(&self) -> &str {
        &self.secret
    }

    /// When GitHub stops accepting it.
    pub fn expires_at(&self) -> Timestamp {
        self.expires_at
    }

    /// When this process received it.
    pub fn minted_at(&self) -> Timestamp {
        self.minted_at
    }

    /// Whether it can still be used at `now` while keeping `margin` before expiry (at most half its
    /// lifetime, so that a short-lived token is not refreshed on every call).
    pub fn is_fresh(&self, now: Timestamp, margin: Duration) -> bool {
        let margin = margin.min(self.expires_at.since(self.minted_at) / 2);
        now.plus(margin) < self.expires_at
    }

    /// Whether two values are the same issued token.
    pub(crate) fn same_as(&self, other: &InstallationToken) -> bool {
        Arc::ptr_eq(&self.secret, &other.secret) || self.secret == other.secret
    }
}

/// GitHub's answer to `POST /app/installations/{id}/access_tokens`.
#[derive(Deserialize)]
pub(crate) struct AccessTokenResponse {
    pub(crate) token: String,
    pub(crate) expires_at: String,
}

/// Parses GitHub's `expires_at` (RFC 3339, e.g. `2016-07-11T22:14:10Z`).
pub(crate) fn parse_expires_at(text: &str) -> Result<Timestamp, ClientError> {
    let invalid = || ClientError::InvalidResponse { reason: format!("`expires_at` is not an RFC 3339 time: {text:?}") };
    let at =
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).map_err(|_| invalid())?;
    let millis = u64::try_from(at.unix_timestamp_nanos() / 1_000_000).map_err(|_| invalid())?;
    Ok(Timestamp(millis))
}

/// Least lifetime left for a token to be used when refreshing it failed.
const STALE_TOKEN_MIN_LIFETIME: Duration = Duration::from_secs(30);

/// One slot per installation; the async mutex makes concurrent callers share one exchange.
type Slot = Arc<tokio::sync::Mutex<Option<InstallationToken>>>;

/// Installation tokens by installation, refreshed `margin` before they expire.
#[derive(Debug, Default)]
pub(crate) struct TokenCache {
    slots: Mutex<HashMap<InstallationId, Slot>>,
}

impl TokenCache {
    fn slot(&self, id: InstallationId) -> Slot {
        // A poisoned map only means another caller panicked between two lines that cannot leave it torn.
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(slots.entry(id).or_default())
    }

    /// The cached token if it is fresh at `now`, else the one `mint` produces (once for all
    /// concurrent callers of the same installation); if minting fails, the cached token while it
    /// has at least 30 s left.
    pub(crate) async fn get_or_mint<F, Fut>(
        &self,
        id: InstallationId,
        now: impl Fn() -> Timestamp,
        margin: Duration,
        mint: F,
    ) -> Result<InstallationToken, ClientError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<InstallationToken, ClientError>>,
    {
        let slot = self.slot(id);
        let mut cached = slot.lock().await;
        // Read the clock after the lock: a caller that waited sees the token the first one minted.
        if let Some(token) = cached.as_ref().filter(|t| t.is_fresh(now(), margin)) {
            return Ok(token.clone());
        }
        match mint().await {
            Ok(token) => {
                *cached = Some(token.clone());
                Ok(token)
            }
            // GitHub failing during the refresh margin must not fail calls the current token can still make.
            Err(error) => match cached.as_ref().filter(|t| t.is_fresh(now(), STALE_TOKEN_MIN_LIFETIME)) {
                Some(current) => {
                    tracing::warn!(installation = id.0, %error, "token refresh failed; using the current token");
                    Ok(current.clone())
                }
                None => Err(error),
            },
        }
    }

    /// Drops `token` if it is still the cached one (GitHub refused it); a newer token stays.
    pub(crate) async fn invalidate(&self, id: InstallationId, token: &InstallationToken) {
        let slot = self.slot(id);
        let mut cached = slot.lock().await;
        if cached.as_ref().is_some_and(|t| t.same_as(token)) {
            *cached = None;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_github_expiry() {
        assert_eq!(parse_expires_at("2016-07-11T22:14:10Z").unwrap(), Timestamp(1_468_275_250_000));
        assert!(parse_expires_at("tomorrow").is_err());
        assert!(parse_expires_at("").is_err());
    }

    proptest::proptest! {
        #[test]
        fn expiry_parsing_never_panics(text in ".{0,40}") {
            let _ = parse_expires_at(&text);
        }
    }

    #[test]
    fn freshness_keeps_the_margin() {
        let token = InstallationToken::new("ghs_x", Timestamp(3_600_000), Timestamp(0));
        let margin = Duration::from_secs(300);
        assert!(token.is_fresh(Timestamp(3_600_000 - 300_001), margin));
        assert!(!token.is_fresh(Timestamp(3_600_000 - 300_000), margin));
        assert!(!format!("{token:?}").contains("ghs_x"));

        let short_lived = InstallationToken::new("ghs_y", Timestamp(240_000), Timestamp(0));
        assert!(short_lived.is_fresh(Timestamp(119_999), margin), "refreshed at half life, not on every call");
        assert!(!short_lived.is_fresh(Timestamp(120_000), margin));
    }
}
