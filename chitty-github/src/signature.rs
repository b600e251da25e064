//! `X-Hub-Signature-256` verification: HMAC-SHA256 over the raw body, in constant time, against
//! one or several secrets (so a secret can be rotated without dropping deliveries).
//!
//! ```
//! use chitty_github::signature::{SignatureVerifier, WebhookSecret};
//!
//! // GitHub's documented test vector.
//! let verifier = SignatureVerifier::new([WebhookSecret::new("It's a Secret to Everybody")])?;
//! verifier.verify(
//!     b"Hello, World!",
//!     b"sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
//! )?;
//! assert!(verifier.verify(b"Hello, World?", b"sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17").is_err());
//! # Ok::<(), chitty_github::Error>(())
//! ```

use std::fmt;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::error::{Error, Result};

type HmacSha256 = Hmac<Sha256>;

/// The prefix GitHub puts before the hex digest.
const PREFIX: &[u8] = b"sha256=";
/// Length of a SHA-256 digest in bytes.
const DIGEST_LEN: usize = 32;

/// A webhook secret. Its `Debug` output never shows the secret.
#[derive(Clone)]
pub struct WebhookSecret(Box<[u8]>);

impl WebhookSecret {
    /// A secret from its bytes (GitHub uses the UTF-8 bytes of the text typed in the settings).
    pub fn new(secret: impl AsRef<[u8]>) -> Self {
        WebhookSecret(secret.as_ref().into())
    }

    /// The secret's bytes.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// Signs `body` the way GitHub does: `sha256=` followed by the lowercase hex HMAC-SHA256.
    ///
    /// For tests, load generators and clients of a webhook endpoint.
    pub fn sign(&self, body: &[u8]) -> String {
        let mut mac = keyed(&self.0);
        mac.update(body);
        format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    }
}

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebhookSecret(<redacted>)")
    }
}

/// The keyed HMAC state for `secret`.
#[allow(clippy::expect_used)] // HMAC takes keys of any length: long keys are hashed, short ones padded.
fn keyed(secret: &[u8]) -> HmacSha256 {
    HmacSha256::new_from_slice(secret).expect("HMAC accepts keys of any length")
}

/// Verifies `X-Hub-Signature-256` values against one or more secrets.
///
/// The keyed HMAC state of each secret is computed once, so verifying a delivery costs one
/// pass over the body per secret tried (the current secret first, then older ones).
#[derive(Clone)]
pub struct SignatureVerifier {
    keyed: Vec<HmacSha256>,
}

impl SignatureVerifier {
    /// A verifier that accepts signatures made with any of `secrets`, tried in order.
    ///
    /// Fails with [`Error::InvalidConfig`] when `secrets` is empty or a secret is empty.
    pub fn new(secrets: impl IntoIterator<Item = WebhookSecret>) -> Result<Self> {
        let mut keyed_states = Vec::new();
        for secret in secrets {
            if secret.0.is_empty() {
                return Err(Error::InvalidConfig { reason: "a webhook secret is empty".into() });
            }
            keyed_states.push(keyed(&secret.0));
        }
        if keyed_states.is_empty() {
            return Err(Error::InvalidConfig { reason: "no webhook secret configured".into() });
        }
        Ok(SignatureVerifier { keyed: keyed_states })
    }

    /// Number of secrets accepted.
    pub fn secret_count(&self) -> usize {
        self.keyed.len()
    }

    /// Checks that `signature` (the raw `X-Hub-Signature-256` value) signs `body`.
    ///
    /// The digest comparison is constant time. Errors: [`Error::MalformedSignature`] when the
    /// value is not `sha256=` and 64 hex digits, [`Error::SignatureMismatch`] when no secret matches.
    pub fn verify(&self, body: &[u8], signature: &[u8]) -> Result<()> {
        let expected = parse_signature(signature)?;
        for state in &self.keyed {
            let mut mac = state.clone();
            mac.update(body);
            if mac.verify_slice(&expected).is_ok() {
                return Ok(());
            }
        }
        Err(Error::SignatureMismatch)
    }
}

impl fmt::Debug for SignatureVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignatureVerifier").field("secrets", &self.keyed.len()).finish()
    }
}

/// Parses `sha256=<64 hex digits>` strictly into the digest bytes.
pub fn parse_signature(value: &[u8]) -> Result<[u8; DIGEST_LEN]> {
    let hex_digits =
        value.strip_prefix(PREFIX).ok_or(Error::MalformedSignature { reason: "expected the prefix `sha256=`" })?;
    if hex_digits.len() != DIGEST_LEN * 2 {
        return Err(Error::MalformedSignature { reason: "expected 64 hex digits" });
    }
    let mut digest = [0u8; DIGEST_LEN];
    hex::decode_to_slice(hex_digits, &mut digest)
        .map_err(|_| Error::MalformedSignature { reason: "expected hex digits" })?;
    Ok(digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    const VECTOR_SIGNATURE: &[u8] = b"sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

    fn github_secret() -> WebhookSecret {
        WebhookSecret::new("It's a Secret to Everybody")
    }

    #[test]
    fn github_documented_test_vector_verifies() {
        let verifier = SignatureVerifier::new([github_secret()]).unwrap();
        verifier.verify(b"Hello, World!", VECTOR_SIGNATURE).unwrap();
        assert_eq!(github_secret().sign(b"Hello, World!").as_bytes(), VECTOR_SIGNATURE);
    }

    #[test]
    fn tampered_body_or_signature_is_a_mismatch() {
        let verifier = SignatureVerifier::new([github_secret()]).unwrap();
        assert!(matches!(verifier.verify(b"Hello, World?", VECTOR_SIGNATURE), Err(Error::SignatureMismatch)));
        let mut flipped = VECTOR_SIGNATURE.to_vec();
        let last = flipped.len() - 1;
        flipped[last] = b'0';
        assert!(matches!(verifier.verify(b"Hello, World!", &flipped), Err(Error::SignatureMismatch)));
    }

    #[test]
    fn any_rotated_secret_is_accepted() {
        let old = WebhookSecret::new("old secret");
        let verifier = SignatureVerifier::new([WebhookSecret::new("new secret"), old.clone()]).unwrap();
        let body = br#"{"zen":"Keep it logically awesome."}"#;
        verifier.verify(body, old.sign(body).as_bytes()).unwrap();
        let other = WebhookSecret::new("someone else");
        assert!(verifier.verify(body, other.sign(body).as_bytes()).is_err());
        assert_eq!(verifier.secret_count(), 2);
    }

    #[test]
    fn parsing_is_strict() {
        for bad in [
            &b""[..],
            b"sha256=",
            b"sha1=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
            b"SHA256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
            b"sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e1",
            b"sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17 ",
            b" sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
            b"sha256=z57107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
        ] {
            assert!(
                matches!(parse_signature(bad), Err(Error::MalformedSignature { .. })),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn secrets_are_redacted_and_required() {
        let secret = github_secret();
        assert_eq!(format!("{secret:?}"), "WebhookSecret(<redacted>)");
        let verifier = SignatureVerifier::new([secret]).unwrap();
        assert!(!format!("{verifier:?}").contains("Secret to"));
        assert!(matches!(SignatureVerifier::new([]), Err(Error::InvalidConfig { .. })));
        assert!(matches!(SignatureVerifier::new([WebhookSecret::new("")]), Err(Error::InvalidConfig { .. })));
    }
}
