//! The optional archive MAC: HMAC-SHA256 under a user's key, over the archive preamble (header and
//! manifest) and the SHA-256 of every reconstructed part, in order.
//!
//! The SHA-256 checks find corruption but anyone can recompute them; the MAC finds tampering by anyone
//! without the key. Authenticating the part checksums is enough to authenticate the output, because the
//! decoder already refuses any part whose reconstruction does not match its checksum.

use std::path::Path;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::error::DeltaError;

/// The MAC's name in the manifest of an authenticated archive.
pub(crate) const MAC_ALGORITHM: &str = "hmac-sha256";
/// Bytes of the MAC that follows the last frame.
pub(crate) const MAC_LEN: usize = 32;

/// A secret key for the archive MAC; its `Debug` output never shows the bytes.
///
/// ```
/// use chitty_delta::{MacKey, ModelDeltaCompressor};
///
/// let key = MacKey::new(*b"a key of at least sixteen bytes!")?;
/// assert_eq!(format!("{key:?}"), "MacKey(<redacted>)");
/// let keyed = ModelDeltaCompressor::builder().mac_key(key).build()?;
/// # Ok::<(), chitty_delta::DeltaError>(())
/// ```
#[derive(Clone)]
pub struct MacKey(Vec<u8>);

impl MacKey {
    /// The shortest key accepted, in bytes (32 random bytes are what HMAC-SHA256 can use in full).
    pub const MIN_LEN: usize = 16;

    /// A key from its bytes; shorter than [`MacKey::MIN_LEN`] is [`DeltaError::InvalidConfig`].
    pub fn new(bytes: impl Into<Vec<u8>>) -> Result<Self, DeltaError> {
        let bytes = bytes.into();
        if bytes.len() < Self::MIN_LEN {
            return Err(DeltaError::InvalidConfig {
                reason: format!("a MAC key of {} bytes is shorter than the {} required", bytes.len(), Self::MIN_LEN),
            });
        }
        Ok(MacKey(bytes))
    }

    /// Reads a key file: every byte of it is the key, a trailing newline included.
    pub fn from_file(path: &Path) -> Result<Self, DeltaError> {
        let bytes = std::fs::read(path)
            .map_err(|e| DeltaError::io(format!("reading the MAC key file {}", path.display()), e))?;
        Self::new(bytes)
    }
}

impl std::fmt::Debug for MacKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MacKey(<redacted>)")
    }
}

/// The MAC of one archive, fed as it is written or read.
pub(crate) struct ArchiveMac(Hmac<Sha256>);

impl ArchiveMac {
    /// Starts the MAC with the archive's preamble (fixed header and manifest, as stored).
    pub(crate) fn new(key: &MacKey, preamble: &[u8]) -> Result<Self, DeltaError> {
        // HMAC takes keys of any length, so this never fails; no panic path all the same.
        let mut mac = Hmac::<Sha256>::new_from_slice(&key.0)
            .map_err(|_| DeltaError::Internal { reason: "HMAC refused the key length".to_owned() })?;
        mac.update(preamble);
        Ok(ArchiveMac(mac))
    }

    /// Adds the next part's SHA-256.
    pub(crate) fn part(&mut self, part_sha: &[u8]) {
        self.0.update(part_sha);
    }

    /// The MAC to append after the last frame.
    pub(crate) fn tag(self) -> [u8; MAC_LEN] {
        self.0.finalize().into_bytes().into()
    }

    /// Checks the MAC read after the last frame, in constant time.
    pub(crate) fn verify(self, tag: &[u8]) -> Result<(), DeltaError> {
        self.0.verify_slice(tag).map_err(|_| DeltaError::MacMismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_keys_are_refused_and_keys_never_show() {
        assert!(matches!(MacKey::new(*b"fifteen bytes!!"), Err(DeltaError::InvalidConfig { .. })));
        let key = MacKey::new(*b"sixteen bytes!!!").unwrap();
        assert!(!format!("{key:?}").contains("sixteen"));
        let mac = |key: &MacKey| {
            let mut m = ArchiveMac::new(key, b"preamble").unwrap();
            m.part(&[7; 32]);
            m.tag()
        };
        let tag = mac(&key);
        assert_ne!(tag, mac(&MacKey::new(*b"sixteen bytes!!?").unwrap()));
        let mut m = ArchiveMac::new(&key, b"preamble").unwrap();
        m.part(&[7; 32]);
        m.verify(&tag).unwrap();
    }
}
