//! The archive container: a fixed header, a JSON manifest, then one frame per part.
//!
//! ```text
//! archive  = magic "CHTYDLTA" | version u32 | manifest_len u32 | sha256(manifest) | manifest | frame*
//!            [ | mac ]                    (version 2 only: HMAC-SHA256, see `crate::mac`)
//! frame    = seq u32 | payload_len u32 | sha256(reconstructed part) | payload | sha256(frame so far)
//! ```
//!
//! Version 1 archives carry no MAC; version 2 is written only when a MAC key is set, so that an older
//! reader refuses it by its version instead of reporting its MAC as trailing garbage.
//!
//! Integers are little-endian. Part 0 is the target's safetensors header; then every tensor in offset
//! order, each split into chunks of whole rows. `docs/delta.md` has the full specification.

use std::io::Read;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::DeltaError;
use crate::mac::{MAC_ALGORITHM, MAC_LEN};
use crate::safetensors::{Dtype, MAX_HEADER_LEN};

/// The archive's magic bytes.
pub(crate) const MAGIC: &[u8; 8] = b"CHTYDLTA";
/// The container version of archives without a MAC (and of every archive before MACs existed).
pub(crate) const VERSION: u32 = 1;
/// The container version of archives that end with a MAC.
pub(crate) const VERSION_MAC: u32 = 2;
/// The format name, also in the manifest.
pub(crate) const FORMAT: &str = "chitty-model-delta";
/// Largest manifest accepted.
pub(crate) const MAX_MANIFEST_LEN: u32 = 64 << 20;
/// Largest chunk, in elements.
pub(crate) const MAX_CHUNK_ELEMENTS: u64 = 1 << 24;
/// Bytes of the fixed archive header.
pub(crate) const ARCHIVE_HEADER_LEN: usize = 8 + 4 + 4 + 32;
/// Bytes of a frame before its payload.
pub(crate) const FRAME_HEAD_LEN: usize = 4 + 4 + 32;

/// How one tensor is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Method {
    /// Identical to the base tensor of the same name: nothing stored but checksums.
    Reference,
    /// Lossless: zigzag ordered-integer difference against the base, in byte planes, zstd per plane.
    Delta,
    /// No usable base tensor (new, reshaped, other dtype, or not a float): the bytes, compressed.
    Whole,
    /// Lossy: the largest deltas by magnitude kept exactly, the rest dropped.
    Sparse,
    /// Lossy: the delta quantized to 8 bits with one absmax scale per row.
    Int8,
    /// Lossy: the delta quantized to 4 bits with one absmax scale per row.
    Int4,
    /// Lossy: the sign of the delta and one scale per matrix (BitDelta).
    #[serde(rename = "1bit")]
    OneBit,
}

impl Method {
    /// The name used in reports, e.g. `delta-planes+zstd`.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Reference => "reference",
            Method::Delta => "delta-planes+zstd",
            Method::Whole => "whole-planes+zstd",
            Method::Sparse => "sparse",
            Method::Int8 => "int8",
            Method::Int4 => "int4",
            Method::OneBit => "1bit",
        }
    }

    /// Whether decoding reads the base.
    pub fn uses_base(self) -> bool {
        !matches!(self, Method::Whole)
    }

    /// Whether reconstruction differs from the target.
    pub fn is_lossy(self) -> bool {
        matches!(self, Method::Sparse | Method::Int8 | Method::Int4 | Method::OneBit)
    }
}

/// What identifies the base an archive was made against.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct BaseFingerprint {
    /// Length of the base file.
    pub(crate) file_len: u64,
    /// SHA-256 of the base's safetensors header (length prefix and JSON), hex; of a sharded base, of
    /// every shard's header in order.
    pub(crate) header_sha256: String,
    /// Shards of a sharded base (absent for one file, so single-file archives are unchanged); `file_len`
    /// is then their total and tensor offsets address the shards laid end to end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) shards: Option<u64>,
}

impl std::fmt::Display for BaseFingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.shards {
            Some(n) => {
                write!(f, "{n} shards of {} bytes in all with header sha256 {}", self.file_len, self.header_sha256)
            }
            None => write!(f, "a {}-byte file with header sha256 {}", self.file_len, self.header_sha256),
        }
    }
}

/// One tensor of the target, in offset order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct TensorRecord {
    pub(crate) name: String,
    pub(crate) dtype: String,
    pub(crate) shape: Vec<u64>,
    pub(crate) byte_len: u64,
    pub(crate) method: Method,
    /// Absolute offset of the base tensor in the base file, for methods that read the base.
    pub(crate) base_offset: Option<u64>,
    /// Leading bytes of the tensor that have a base counterpart (rows common to a resized tensor);
    /// absent means all of them. The rest is stored whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) base_bytes: Option<u64>,
    /// Sparse: the fraction of elements kept per chunk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) keep: Option<f64>,
    /// 1-bit: the scale of the matrix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) scale: Option<f32>,
}

/// Everything known about the archive before its frames.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Manifest {
    pub(crate) format: String,
    pub(crate) version: u32,
    pub(crate) chunk_elements: u64,
    pub(crate) base: Option<BaseFingerprint>,
    pub(crate) target_len: u64,
    pub(crate) header_len: u64,
    pub(crate) tensors: Vec<TensorRecord>,
    /// The MAC that follows the last frame (`hmac-sha256`, version 2 only); absent, version 1 archives
    /// stay byte for byte what they were.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) mac: Option<String>,
}

/// A manifest tensor with its numbers checked.
#[derive(Debug, Clone)]
pub(crate) struct CheckedTensor {
    pub(crate) name: String,
    pub(crate) dtype: Dtype,
    pub(crate) byte_len: u64,
    pub(crate) method: Method,
    pub(crate) base_offset: Option<u64>,
    /// Leading elements with a base counterpart (0 when the method reads no base).
    pub(crate) base_elements: u64,
    /// Elements per chunk (whole rows when a row fits a chunk).
    pub(crate) chunk_len: u64,
    pub(crate) chunks: u64,
    /// Elements per row (the unit of a quantization scale).
    pub(crate) row_len: u64,
    pub(crate) keep: f64,
    pub(crate) scale: f32,
}

impl CheckedTensor {
    pub(crate) fn elements(&self) -> u64 {
        self.byte_len / self.dtype.size_bytes()
    }

    /// Element range of chunk `k`.
    pub(crate) fn chunk_range(&self, k: u64) -> (u64, u64) {
        let begin = k * self.chunk_len;
        (begin, (begin + self.chunk_len).min(self.elements()))
    }

    pub(crate) fn part_name(&self, k: u64) -> String {
        if self.chunks == 1 {
            format!("tensor `{}`", self.name)
        } else {
            format!("tensor `{}` chunk {}/{}", self.name, k + 1, self.chunks)
        }
    }
}

/// Elements per chunk of a tensor with rows of `row_len`: whole rows when a row fits.
pub(crate) fn chunk_len(chunk_elements: u64, row_len: u64) -> u64 {
    if row_len <= chunk_elements { chunk_elements / row_len * row_len } else { chunk_elements }
}

pub(crate) fn row_len(shape: &[u64]) -> u64 {
    match shape.len() {
        0 | 1 => shape.iter().product::<u64>().max(1),
        _ => shape[1..].iter().product::<u64>().max(1),
    }
}

impl Manifest {
    /// Checks every number a decoder relies on; the manifest is untrusted input.
    pub(crate) fn check(&self) -> Result<Vec<CheckedTensor>, DeltaError> {
        let bad = |reason: String| DeltaError::corrupt("manifest", reason);
        if self.format != FORMAT {
            return Err(bad(format!("format {} is not {FORMAT}", self.format)));
        }
        match (self.version, self.mac.as_deref()) {
            (VERSION, None) | (VERSION_MAC, Some(MAC_ALGORITHM)) => {}
            (version, mac) => {
                return Err(bad(format!("version {version} with MAC {}", mac.unwrap_or("none"))));
            }
        }
        if self.chunk_elements == 0 || self.chunk_elements > MAX_CHUNK_ELEMENTS {
            return Err(bad(format!("chunk of {} elements", self.chunk_elements)));
        }
        if self.header_len < 8 || self.header_len > 8 + MAX_HEADER_LEN {
            return Err(bad(format!("header of {} bytes", self.header_len)));
        }
        let mut total = self.header_len;
        let mut out = Vec::with_capacity(self.tensors.len());
        for t in &self.tensors {
            let bad_tensor = |reason: &str| DeltaError::corrupt(format!("manifest entry `{}`", t.name), reason);
            let dtype = Dtype::parse(&t.dtype).ok_or_else(|| bad_tensor("unknown dtype"))?;
            let bytes = t
                .shape
                .iter()
                .try_fold(1u64, |a, &d| a.checked_mul(d))
                .and_then(|n| n.checked_mul(dtype.size_bytes()))
                .ok_or_else(|| bad_tensor("shape overflows"))?;
            if bytes != t.byte_len {
                return Err(bad_tensor("byte length does not match dtype and shape"));
            }
            total = total.checked_add(bytes).ok_or_else(|| bad_tensor("lengths overflow"))?;
            let base_bytes = t.base_bytes.unwrap_or(bytes);
            match (t.method, t.base_offset, &self.base) {
                (Method::Whole, None, _) if t.base_bytes.is_none() => {}
                (m, Some(offset), Some(base)) if m.uses_base() => {
                    let end = offset.checked_add(base_bytes).ok_or_else(|| bad_tensor("base range overflows"))?;
                    if end > base.file_len {
                        return Err(bad_tensor("base range beyond the base file"));
                    }
                    if m != Method::Reference && !dtype.is_delta_float() {
                        return Err(bad_tensor("delta method on a non-float dtype"));
                    }
                    if base_bytes > bytes || base_bytes % dtype.size_bytes() != 0 {
                        return Err(bad_tensor("base prefix is not whole elements of the tensor"));
                    }
                    if base_bytes != bytes && m != Method::Delta {
                        return Err(bad_tensor("only lossless deltas take a partial base"));
                    }
                }
                _ => return Err(bad_tensor("method and base reference disagree")),
            }
            let keep = t.keep.unwrap_or(0.0);
            let scale = t.scale.unwrap_or(0.0);
            let params_ok = match t.method {
                Method::Sparse => keep > 0.0 && keep <= 1.0 && t.scale.is_none(),
                Method::OneBit => scale.is_finite() && scale >= 0.0 && t.keep.is_none(),
                _ => t.keep.is_none() && t.scale.is_none(),
            };
            if !params_ok {
                return Err(bad_tensor("lossy parameters do not fit the method"));
            }
            let row_len = row_len(&t.shape);
            let chunk_len = chunk_len(self.chunk_elements, row_len);
            let elements = bytes / dtype.size_bytes();
            let chunks = elements.div_ceil(chunk_len).max(1);
            out.push(CheckedTensor {
                name: t.name.clone(),
                dtype,
                byte_len: bytes,
                method: t.method,
                base_offset: t.base_offset,
                base_elements: if t.method.uses_base() { base_bytes / dtype.size_bytes() } else { 0 },
                chunk_len,
                chunks,
                row_len,
                keep,
                scale,
            });
        }
        if total != self.target_len {
            return Err(bad(format!("parts add up to {total} bytes, not {}", self.target_len)));
        }
        Ok(out)
    }
}

/// Serializes the fixed header and the manifest (the header's version is the manifest's).
pub(crate) fn write_preamble(manifest: &Manifest) -> Result<Vec<u8>, DeltaError> {
    write_json_preamble(manifest.version, manifest)
}

/// Serializes the fixed header and any manifest: the container every chitty delta format shares.
pub(crate) fn write_json_preamble(version: u32, manifest: &impl Serialize) -> Result<Vec<u8>, DeltaError> {
    let json = serde_json::to_vec(manifest)
        .map_err(|e| DeltaError::InvalidConfig { reason: format!("manifest does not serialize: {e}") })?;
    let len = u32::try_from(json.len())
        .ok()
        .filter(|&l| l <= MAX_MANIFEST_LEN)
        .ok_or_else(|| DeltaError::InvalidConfig { reason: "manifest exceeds 64 MiB".to_owned() })?;
    let mut out = Vec::with_capacity(ARCHIVE_HEADER_LEN + json.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&Sha256::digest(&json));
    out.extend_from_slice(&json);
    Ok(out)
}

/// The fixed header and the manifest, as read.
#[derive(Debug)]
pub(crate) struct Preamble {
    pub(crate) manifest: Manifest,
    /// The bytes read (header and manifest JSON): what the MAC covers first.
    pub(crate) bytes: Vec<u8>,
}

/// Reads and verifies the fixed header and the manifest.
pub(crate) fn read_preamble(input: &mut dyn Read) -> Result<Preamble, DeltaError> {
    let (manifest, bytes): (Manifest, _) = read_json_preamble(input)?;
    let version = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
    if manifest.version != version {
        return Err(DeltaError::corrupt(
            "archive header",
            format!("version {version} but the manifest says {}", manifest.version),
        ));
    }
    Ok(Preamble { manifest, bytes })
}

/// Reads the fixed header and a manifest of any delta format, checking the magic, the version (1 or 2)
/// and the manifest's checksum. Returns the manifest and the bytes read.
pub(crate) fn read_json_preamble<M: serde::de::DeserializeOwned>(
    input: &mut dyn Read,
) -> Result<(M, Vec<u8>), DeltaError> {
    let part = "archive header";
    let mut head = [0u8; ARCHIVE_HEADER_LEN];
    read_exact(input, &mut head, part)?;
    if &head[..8] != MAGIC {
        return Err(DeltaError::corrupt(part, "not a chitty delta archive (bad magic)"));
    }
    let version = u32::from_le_bytes([head[8], head[9], head[10], head[11]]);
    if version != VERSION && version != VERSION_MAC {
        return Err(DeltaError::corrupt(part, format!("unsupported version {version}")));
    }
    let len = u32::from_le_bytes([head[12], head[13], head[14], head[15]]);
    if len > MAX_MANIFEST_LEN {
        return Err(DeltaError::corrupt(part, format!("manifest of {len} bytes exceeds the limit")));
    }
    let json = read_bounded(input, len as usize, "manifest")?;
    if Sha256::digest(&json)[..] != head[16..48] {
        return Err(DeltaError::corrupt("manifest", "checksum mismatch"));
    }
    let manifest: M =
        serde_json::from_slice(&json).map_err(|e| DeltaError::corrupt("manifest", format!("invalid JSON: {e}")))?;
    let mut bytes = Vec::with_capacity(ARCHIVE_HEADER_LEN + json.len());
    bytes.extend_from_slice(&head);
    bytes.extend_from_slice(&json);
    Ok((manifest, bytes))
}

/// Reads the MAC that follows the last frame of a version 2 archive.
pub(crate) fn read_mac(input: &mut dyn Read) -> Result<[u8; MAC_LEN], DeltaError> {
    let mut mac = [0u8; MAC_LEN];
    read_exact(input, &mut mac, "archive MAC")?;
    Ok(mac)
}

/// A frame as read from the archive, not yet verified.
#[derive(Debug)]
pub(crate) struct RawFrame {
    pub(crate) head: [u8; FRAME_HEAD_LEN],
    pub(crate) payload: Vec<u8>,
    pub(crate) frame_sha: [u8; 32],
}

impl RawFrame {
    /// The recorded SHA-256 of the reconstructed part.
    pub(crate) fn part_sha(&self) -> &[u8] {
        &self.head[8..40]
    }

    /// Whether the frame's own checksum holds.
    pub(crate) fn is_intact(&self) -> bool {
        let mut h = Sha256::new();
        h.update(self.head);
        h.update(&self.payload);
        h.finalize()[..] == self.frame_sha
    }
}

/// Serializes a frame.
pub(crate) fn frame_bytes(seq: u32, part_sha: &[u8], payload: &[u8]) -> Result<Vec<u8>, DeltaError> {
    let len = u32::try_from(payload.len())
        .map_err(|_| DeltaError::InvalidConfig { reason: "a part exceeds 4 GiB".to_owned() })?;
    let mut out = Vec::with_capacity(FRAME_HEAD_LEN + payload.len() + 32);
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(part_sha);
    out.extend_from_slice(payload);
    let sha = Sha256::digest(&out);
    out.extend_from_slice(&sha);
    Ok(out)
}

/// Reads frame `seq`, refusing payloads longer than `max_payload`.
pub(crate) fn read_frame(
    input: &mut dyn Read,
    seq: u32,
    max_payload: usize,
    part: &str,
) -> Result<RawFrame, DeltaError> {
    let mut head = [0u8; FRAME_HEAD_LEN];
    read_exact(input, &mut head, part)?;
    let found = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
    if found != seq {
        return Err(DeltaError::corrupt(part, format!("frame number {found}, expected {seq}")));
    }
    let len = u32::from_le_bytes([head[4], head[5], head[6], head[7]]) as usize;
    if len > max_payload {
        return Err(DeltaError::corrupt(part, format!("payload of {len} bytes exceeds {max_payload}")));
    }
    let payload = read_bounded(input, len, part)?;
    let mut frame_sha = [0u8; 32];
    read_exact(input, &mut frame_sha, part)?;
    Ok(RawFrame { head, payload, frame_sha })
}

/// Reads exactly `len` bytes, growing the buffer as bytes arrive so a lying length cannot allocate them.
fn read_bounded(input: &mut dyn Read, len: usize, part: &str) -> Result<Vec<u8>, DeltaError> {
    let mut buf = Vec::with_capacity(len.min(1 << 20));
    let got = input.take(len as u64).read_to_end(&mut buf).map_err(|e| DeltaError::io("reading the archive", e))?;
    if got != len {
        return Err(DeltaError::corrupt(part, format!("archive truncated: {got} of {len} bytes")));
    }
    Ok(buf)
}

fn read_exact(input: &mut dyn Read, buf: &mut [u8], part: &str) -> Result<(), DeltaError> {
    input.read_exact(buf).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => DeltaError::corrupt(part, "archive truncated"),
        _ => DeltaError::io("reading the archive", e),
    })
}

/// Fails unless `input` is at its end.
pub(crate) fn expect_end(input: &mut dyn Read) -> Result<(), DeltaError> {
    let mut byte = [0u8; 1];
    loop {
        match input.read(&mut byte) {
            Ok(0) => return Ok(()),
            Ok(_) => return Err(DeltaError::corrupt("end of archive", "trailing bytes after the last part")),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(DeltaError::io("reading the archive", e)),
        }
    }
}
