//! The App's identity and the RS256 JWT that proves it.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use chitty_core::Timestamp;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;

use super::error::ClientError;

/// How far `iat` is back-dated, to absorb clock drift between this host and GitHub.
pub const JWT_BACKDATE: Duration = Duration::from_secs(60);
/// How long after `now` the JWT expires: GitHub's ceiling is 10 minutes after `iat`, we stay under it.
pub const JWT_LIFETIME: Duration = Duration::from_secs(9 * 60);

/// A GitHub App's identity: its issuer (client ID or App ID) and its RSA private key.
///
/// `Debug` shows the issuer only; the key is never printed or logged.
#[derive(Clone)]
pub struct AppCredentials {
    issuer: String,
    key: Arc<EncodingKey>,
}

impl fmt::Debug for AppCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AppCredentials").field("issuer", &self.issuer).field("key", &"<redacted>").finish()
    }
}

impl AppCredentials {
    /// Credentials from the App's client ID (`Iv23…`, preferred by GitHub) or numeric App ID, and the
    /// private key in PEM form as downloaded from the App's settings (PKCS#1 or PKCS#8).
    pub fn from_pem(issuer: impl Into<String>, private_key_pem: &[u8]) -> Result<Self, ClientError> {
        let key = EncodingKey::from_rsa_pem(private_key_pem)
            .map_err(|e| ClientError::InvalidPrivateKey { source: Box::new(e) })?;
        Ok(AppCredentials { issuer: issuer.into(), key: Arc::new(key) })
    }

    /// The `iss` claim: the client ID or App ID.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// A JWT for `now`: `iat` = now − 60 s, `exp` = now + 9 min, `iss` = the issuer, signed RS256.
    pub fn jwt(&self, now: Timestamp) -> Result<AppJwt, ClientError> {
        let now = now.as_secs();
        let claims = AppClaims {
            iat: now.saturating_sub(JWT_BACKDATE.as_secs()),
            exp: now.saturating_add(JWT_LIFETIME.as_secs()),
            iss: &self.issuer,
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, &self.key)
            .map_err(|e| ClientError::Jwt { source: Box::new(e) })?;
        Ok(AppJwt { token, expires_at: Timestamp(claims.exp.saturating_mul(1000)) })
    }
}

/// The claims GitHub reads from an App JWT.
#[derive(Serialize)]
struct AppClaims<'a> {
    iat: u64,
    exp: u64,
    iss: &'a str,
}

/// A signed App JWT, for the `/app/...` endpoints. `Debug` redacts it.
#[derive(Clone)]
pub struct AppJwt {
    token: String,
    expires_at: Timestamp,
}

impl fmt::Debug for AppJwt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AppJwt").field("token", &"<redacted>").field("expires_at", &self.expires_at).finish()
    }
}

impl AppJwt {
    /// The encoded JWT, for an `Authorization: Bearer` header. Do not log it.
    pub fn expose_secret(&self) -> &str {
        &self.token
    }

    /// When GitHub stops accepting it.
    pub fn expires_at(&self) -> Timestamp {
        self.expires_at
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn garbage_key_is_a_typed_error_that_does_not_quote_the_key() {
        let err = AppCredentials::from_pem("1", b"-----BEGIN RSA PRIVATE KEY-----\nsecretstuff\n").unwrap_err();
        assert!(matches!(err, ClientError::InvalidPrivateKey { .. }));
        assert!(!format!("{err} {err:?}").contains("secretstuff"));
    }
}
