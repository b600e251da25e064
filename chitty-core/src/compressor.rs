//! The [`Compressor`] trait: encode a target against an optional base, decode it back, and its own error,
//! [`CompressorError`].

use std::fmt::Debug;
use std::io::{Read, Write};

use crate::error::BoxError;

/// What went wrong while encoding or decoding: the error of every [`Compressor`].
///
/// Implementations keep their own richer error and convert into this one with `From`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CompressorError {
    /// The archive is damaged or truncated: a checksum, a length or a field does not match.
    #[error("corrupt data in {part}: {reason}")]
    Corrupt {
        /// Which part (tensor name, chunk index, header …).
        part: String,
        /// What check failed.
        reason: String,
    },
    /// Decoding was given a different base than the one used to encode.
    #[error("wrong base: the archive was made against {expected}, this base is {found}")]
    WrongBase {
        /// Digest recorded in the archive.
        expected: String,
        /// Digest of the base given.
        found: String,
    },
    /// The archive was made against a base and none was given.
    #[error("this archive was made against a base; decoding needs that base")]
    MissingBase,
    /// The input (target, base, key, configuration, output) is not what this compressor accepts.
    #[error("invalid input ({what}): {reason}")]
    InvalidInput {
        /// What was being read.
        what: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Reading the input or writing the output failed.
    #[error("I/O error while {context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The implementation failed for a reason of its own (a worker panicked, a backend broke).
    #[error("{backend} error: {source}")]
    Backend {
        /// Which implementation or backend.
        backend: &'static str,
        /// Its error.
        #[source]
        source: BoxError,
    },
}

impl CompressorError {
    /// Shorthand for [`CompressorError::Corrupt`].
    pub fn corrupt(part: impl Into<String>, reason: impl Into<String>) -> Self {
        CompressorError::Corrupt { part: part.into(), reason: reason.into() }
    }
}

impl From<std::io::Error> for CompressorError {
    fn from(source: std::io::Error) -> Self {
        CompressorError::Io { context: "reading or writing".to_owned(), source }
    }
}

/// What an encode produced.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct EncodeReport {
    /// Bytes of the target read.
    pub input_bytes: u64,
    /// Bytes of archive written.
    pub output_bytes: u64,
    /// Per-part details (tensors, chunks), in archive order.
    pub parts: Vec<PartReport>,
}

/// What a decode produced.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DecodeReport {
    /// Bytes of archive read.
    pub input_bytes: u64,
    /// Bytes of reconstructed target written.
    pub output_bytes: u64,
    /// Parts decoded and verified.
    pub parts_verified: u64,
}

/// How one part (a tensor, a chunk run) was stored.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PartReport {
    /// Part name (tensor name, chunk index).
    pub name: String,
    /// How it was stored, e.g. `xor-planes+zstd`, `reference`, `whole`, `int8`.
    pub method: String,
    /// Bytes of the original part.
    pub original_bytes: u64,
    /// Bytes it takes in the archive.
    pub stored_bytes: u64,
    /// For lossy methods: relative Frobenius norm of the reconstruction error of the delta.
    pub relative_error: Option<f64>,
}

/// Encodes a target against an optional base into an archive, and decodes the archive back.
///
/// Contract (checked by `chitty_testkit::compressor` for every implementation):
/// - `decode(base, encode(base, target))` writes exactly `target` for lossless configurations.
/// - `decode` verifies every checksum it wrote and never writes bytes it has not verified as a whole part;
///   a corrupt or truncated archive is [`CompressorError::Corrupt`] naming the part, a different base than
///   the one used to encode is [`CompressorError::WrongBase`], and a base missing when one is needed is
///   [`CompressorError::MissingBase`].
/// - Inputs are untrusted: no input makes an implementation panic or allocate without bound.
///
/// Base and target are byte slices so that callers can pass memory maps: an implementation reads only the
/// parts it needs, and memory stays bounded by the parts in flight, not the file.
pub trait Compressor: Send + Sync + Debug + 'static {
    /// Short name of the format, e.g. `chitty-model-delta`.
    fn format(&self) -> &str;

    /// Encodes `target` against `base` into `out`.
    fn encode(&self, base: Option<&[u8]>, target: &[u8], out: &mut dyn Write) -> Result<EncodeReport, CompressorError>;

    /// Decodes the archive read from `archive` against `base` into `out`.
    fn decode(
        &self,
        base: Option<&[u8]>,
        archive: &mut dyn Read,
        out: &mut dyn Write,
    ) -> Result<DecodeReport, CompressorError>;
}
