#![cfg_attr(docsrs, feature(doc_cfg))]
//! # chitty-delta
//!
//! Fine-tuned model weights and derivative datasets stored as deltas against their base: lossless
//! (bit-exact) by default, verified part by part, streamed.
//!
//! [`DatasetDeltaCompressor`] implements [`chitty_core::Compressor`] for any file against any base file
//! (CSV, JSON Lines, anything): content-defined chunks found in the base are copies, new bytes are
//! compressed with zstd against the base region they most likely came from; see [`dataset`].
//!
//! [`ModelDeltaCompressor`] implements [`chitty_core::Compressor`] for safetensors files. Base and target
//! arrive as byte slices (memory-map them: [`files`] does), the archive is written to any
//! [`std::io::Write`] and decoded from any [`std::io::Read`] tensor chunk by tensor chunk: every chunk's
//! SHA-256 is checked before its bytes are written, so a corrupt archive or a wrong base is an error
//! naming the part, never wrong output. `docs/delta.md` specifies the format and shows the measurements
//! behind the transform.
//!
//! - Lossless (default): the sign-magnitude integer difference against the base, packed as small codes
//!   and zstd-compressed per plane; identical tensors are references, new or reshaped ones stored whole,
//!   resized ones a delta on their common rows.
//! - Lossy ([`Mode::Sparse`], [`Mode::Int8`], [`Mode::Int4`], [`Mode::OneBit`]) for changed matrices, with
//!   the relative Frobenius error of each tensor in its [`chitty_core::PartReport`], and a per-tensor
//!   policy of glob rules ([`ModelDeltaCompressorBuilder::rule`]).
//! - The SHA-256 checks find corruption, not tampering: anyone can recompute them. An optional MAC
//!   ([`ModelDeltaCompressorBuilder::mac_key`], HMAC-SHA256 under a [`MacKey`]) finds tampering.
//! - [`safetensors`] validates headers as untrusted input; [`analysis`] measures candidate transforms;
//!   [`files`] maps inputs and writes outputs atomically.
//!
//! ```
//! use chitty_core::Compressor;
//! use chitty_delta::ModelDeltaCompressor;
//! use chitty_testkit::model_pairs::{ModelPairSpec, generate_pair};
//!
//! let pair = generate_pair(&ModelPairSpec::tiny(1));
//! let compressor = ModelDeltaCompressor::builder().build()?;
//! let mut archive = Vec::new();
//! compressor.encode(Some(&pair.base), &pair.target, &mut archive)?;
//! let mut restored = Vec::new();
//! compressor.decode(Some(&pair.base), &mut archive.as_slice(), &mut restored)?;
//! assert_eq!(restored, pair.target);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

/// `Compressor` and `files::DeltaFileCodec` for a compressor whose inherent `encode_with_progress` and
/// `decode_with_progress` do the work: the trait methods only forward (and convert the error).
macro_rules! delta_codec_impls {
    ($compressor:ty, $format:expr) => {
        impl chitty_core::Compressor for $compressor {
            fn format(&self) -> &str {
                $format
            }

            fn encode(
                &self,
                base: Option<&[u8]>,
                target: &[u8],
                out: &mut dyn std::io::Write,
            ) -> Result<chitty_core::EncodeReport, chitty_core::CompressorError> {
                Ok(<$compressor>::encode_with_progress(self, base, target, out, &mut |_| {})?)
            }

            fn decode(
                &self,
                base: Option<&[u8]>,
                archive: &mut dyn std::io::Read,
                out: &mut dyn std::io::Write,
            ) -> Result<chitty_core::DecodeReport, chitty_core::CompressorError> {
                Ok(<$compressor>::decode_with_progress(self, base, archive, out, &mut |_| {})?)
            }
        }

        impl crate::files::DeltaFileCodec for $compressor {
            fn encode_with_progress(
                &self,
                base: Option<&[u8]>,
                target: &[u8],
                out: &mut dyn std::io::Write,
                progress: &mut dyn FnMut(u64),
            ) -> Result<chitty_core::EncodeReport, crate::DeltaError> {
                <$compressor>::encode_with_progress(self, base, target, out, progress)
            }

            fn decode_with_progress(
                &self,
                base: Option<&[u8]>,
                archive: &mut dyn std::io::Read,
                out: &mut dyn std::io::Write,
                progress: &mut dyn FnMut(u64),
            ) -> Result<chitty_core::DecodeReport, crate::DeltaError> {
                <$compressor>::decode_with_progress(self, base, archive, out, progress)
            }
        }
    };
}

pub mod analysis;
mod chunking;
mod codec;
mod compressor;
pub mod dataset;
mod error;
pub mod files;
mod format;
mod lossy;
mod mac;
mod packed16;
#[cfg(feature = "parquet")]
#[cfg_attr(docsrs, doc(cfg(feature = "parquet")))]
pub mod parquet;
mod pipeline;
pub mod repo;
pub mod safetensors;
mod shards;
mod transform;

pub use compressor::{
    ArchiveSummary, DEFAULT_CHUNK_ELEMENTS, DEFAULT_ZSTD_LEVEL, LOSSLESS_BY_DEFAULT, Mode, ModelDeltaCompressor,
    ModelDeltaCompressorBuilder, PolicyRule, SizeEstimate, TensorEstimate, TensorSummary, glob_matches, inspect,
};
pub use dataset::{DatasetDeltaCompressor, DatasetDeltaCompressorBuilder, LineMode, MatchStats};
pub use error::DeltaError;
pub use format::Method;
pub use mac::MacKey;
