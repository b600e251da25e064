//! Dataset deltas: any file against any base file, bit-exact, by content-defined chunks.
//!
//! [`DatasetDeltaCompressor`] cuts base and target into content-defined chunks (FastCDC 2020), indexes
//! the base's chunks by XXH3-128 (a found chunk is compared byte for byte), and stores each target chunk
//! found in the base as a copy of a base range. Both files are chunked in parallel segments joined into
//! exactly the chunks a serial pass cuts, and the target is matched by following runs of base chunks,
//! so only the regions around changes are chunked and looked up: the archive is the same for any number
//! of threads. What is new is compressed with zstd using the base region it most likely came from as a
//! referenced prefix (what `zstd --patch-from` does), so an edit inside a chunk costs little more than
//! the edited bytes.
//!
//! Line-oriented text (CSV, JSON Lines) is chunked at line boundaries: each cut point FastCDC finds is
//! moved to just after the next `\n`, so chunks hold whole rows and an inserted or deleted row changes
//! one chunk, not the ones after it. [`LineMode::Auto`] (the default) chooses this when the target's
//! first 64 KiB hold no NUL byte and at least one line break per 4 KiB on average.
//!
//! The archive is the container model deltas use (`docs/delta.md`): a header with a checksummed JSON
//! manifest (the chunking parameters, the base's length and SHA-256, the target's length and SHA-256),
//! then one frame per part of the target (at most [`DatasetDeltaCompressorBuilder::part_bytes`] plus one
//! chunk), each with the SHA-256 of its reconstruction and of the frame. Decoding checks the whole base
//! before writing anything (a different base is [`chitty_core::CompressorError::WrongBase`], even when
//! parts rebuilt meanwhile failed their checks), checks each part before writing it, and the whole
//! output's SHA-256 at the end.
//!
//! Memory: encoding holds the base's chunk index (about 40 bytes per base chunk) and one round of
//! target segments (16 MiB per thread) with its parts; decoding `2 × threads + 2` parts in flight (each
//! with its frame and new bytes), rebuilt in parallel and written in order.
//!
//! ```
//! use chitty_core::Compressor;
//! use chitty_delta::DatasetDeltaCompressor;
//!
//! let base: String = (0..20_000).map(|i| format!("{i},name-{i},{}\n", i * 7 % 1000)).collect();
//! let mut target = base.replace("name-1234,", "renamed-1234,");
//! target.push_str("20000,name-20000,0\n");
//!
//! let compressor = DatasetDeltaCompressor::builder().build()?;
//! let mut archive = Vec::new();
//! compressor.encode(Some(base.as_bytes()), target.as_bytes(), &mut archive)?;
//! assert!(archive.len() < target.len() / 50);
//!
//! let mut restored = Vec::new();
//! compressor.decode(Some(base.as_bytes()), &mut archive.as_slice(), &mut restored)?;
//! assert_eq!(restored, target.as_bytes());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::io::{Read, Write};
use std::sync::Arc;

use chitty_core::{DecodeReport, EncodeReport, PartReport};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::chunking::{BaseIndex, CutParams, Matcher, SEGMENT_BYTES, Stitcher, TargetChunk};
use crate::error::DeltaError;
use crate::format;

/// The format name, also in the manifest.
pub(crate) const DATASET_FORMAT: &str = "chitty-dataset-delta";
/// The manifest version this module writes: 3 identifies the base, every part and the whole target by
/// BLAKE3 (SHA-256 bound compress to about 0.5 GB/s on 2 cores); 2 (still read) used SHA-256 and stored
/// a part's new bytes in groups, each compressed against a base window of its own, as 3 does; 1 (still
/// read) had one window per part.
const DATASET_VERSION: u32 = 3;
/// The first manifest version whose digests are BLAKE3.
const BLAKE3_VERSION: u32 = 3;
/// Inputs at least this long are hashed by BLAKE3 on several threads.
const PARALLEL_HASH_BYTES: usize = 1 << 20;
/// The container header's version (the frames' layout, shared with model deltas, is unchanged).
const CONTAINER_VERSION: u32 = 1;
/// Default smallest chunk.
pub const DEFAULT_MIN_CHUNK: u32 = 2 << 10;
/// Default average chunk.
pub const DEFAULT_AVG_CHUNK: u32 = 8 << 10;
/// Default largest chunk.
pub const DEFAULT_MAX_CHUNK: u32 = 64 << 10;
/// Default target bytes per archive part.
pub const DEFAULT_PART_BYTES: u32 = 4 << 20;
/// Default zstd level for new bytes: against a base prefix, 12 (btlazy2) stored 44 % less than 9 on a
/// 10 %-filtered 16 MB TSV and 35 % less with a column added, at about 1.3× the time (measured 2026-12-06 on the first 16 MB of /usr/share/package-lists/pypi.tsv).
pub const DEFAULT_DATASET_ZSTD_LEVEL: i32 = 12;
/// Largest part accepted, in target bytes (parts are checked before they are allocated).
const MAX_PART_BYTES: u32 = 64 << 20;
/// Largest base region used as a zstd prefix for one part.
const MAX_WINDOW: u64 = 32 << 20;
/// Base bytes added on each side of the estimated region, beyond a quarter of its length.
const WINDOW_MARGIN: u64 = 256 << 10;
/// Base bytes added on each side of new bytes that sit between copies, whose base region is known: zstd
/// indexes every byte of a window (at level 12, 16 KiB here took compress of a 1 GB pair with 1,100 edits
/// from 3.9 to 6.2 CPU s, for 1 % more archive).
const NEAR_MARGIN: u64 = 2 << 10;
/// New bytes between copies further apart than this in the base (rows moved) take the region after the
/// copy before them.
const NEAR_SPREAD: u64 = 1 << 20;
/// Runs of new bytes whose base windows are closer than this share one group (one zstd frame): more
/// prefix to index costs more time than the ~30 bytes of another group.
const GROUP_GAP: u64 = 64 << 10;
/// Groups of at most this many new bytes (an edited chunk or two between copies) are compressed at no
/// more than [`SMALL_GROUP_LEVEL`].
const SMALL_GROUP_BYTES: usize = 64 << 10;
/// For a small group the match is mostly the window itself, found at any level; level 12's binary tree
/// costs more: on a 1 GB CSV with 1,100 edited rows, 4.49 -> 3.73 CPU s for 90,680 -> 91,977 bytes.
const SMALL_GROUP_LEVEL: i32 = 9;
/// Below this zstd level, hash and chain tables are sized to the whole prefix (from 10 up, the level's
/// own tables already cover it and stored less: a column added to a 31 MB CSV, 3.57 MB against 4.00 MB
/// at level 12).
const FULL_PREFIX_LEVEL: i32 = 10;
/// Prefixes up to this size are indexed whole by every level's own tables (sized for small inputs).
const FULL_PREFIX_MIN: usize = 1 << 20;
/// zstd's window for a part: prefix plus part stay below this (the decoder accepts it).
const WINDOW_LOG_MAX: u32 = 27;
/// Bytes of the target sampled by [`LineMode::Auto`].
const SNIFF_BYTES: usize = 64 << 10;
/// [`LineMode::Auto`] wants at least one line break per this many bytes.
const SNIFF_BYTES_PER_LINE: usize = 4 << 10;

const OP_COPY: u8 = 0;
const OP_LITERAL: u8 = 1;

/// Whether chunk boundaries are moved to line ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum LineMode {
    /// Line-aware when the target looks like line-oriented text (no NUL in its first 64 KiB, and at
    /// least one `\n` per 4 KiB there).
    #[default]
    Auto,
    /// Always cut after a `\n` when one lies within the largest chunk size.
    Lines,
    /// Plain FastCDC cut points.
    Bytes,
}

/// FastCDC parameters, stored in the archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct ChunkParams {
    min_size: u32,
    avg_size: u32,
    max_size: u32,
    /// Cut points moved to just after the next line break.
    line_aware: bool,
}

impl ChunkParams {
    fn cut(self) -> CutParams {
        CutParams {
            min_size: self.min_size as usize,
            avg_size: self.avg_size as usize,
            max_size: self.max_size as usize,
            line_aware: self.line_aware,
        }
    }
}

/// The hash a manifest version uses for the base, every part and the whole target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DigestKind {
    /// Versions 1 and 2.
    Sha256,
    /// Version 3 on.
    Blake3,
}

impl DigestKind {
    fn of_version(version: u32) -> Self {
        if version >= BLAKE3_VERSION { DigestKind::Blake3 } else { DigestKind::Sha256 }
    }

    /// The digest of `bytes`; BLAKE3 hashes long inputs on the current rayon pool.
    fn digest(self, bytes: &[u8]) -> [u8; 32] {
        match self {
            DigestKind::Sha256 => Sha256::digest(bytes).into(),
            DigestKind::Blake3 if bytes.len() >= PARALLEL_HASH_BYTES => {
                *blake3::Hasher::new().update_rayon(bytes).finalize().as_bytes()
            }
            DigestKind::Blake3 => *blake3::hash(bytes).as_bytes(),
        }
    }

    fn hasher(self) -> WholeHasher {
        match self {
            DigestKind::Sha256 => WholeHasher::Sha256(Sha256::new()),
            DigestKind::Blake3 => WholeHasher::Blake3(Box::new(blake3::Hasher::new())),
        }
    }
}

/// The whole output's digest, fed part by part.
enum WholeHasher {
    Sha256(Sha256),
    Blake3(Box<blake3::Hasher>),
}

impl WholeHasher {
    fn update(&mut self, bytes: &[u8]) {
        match self {
            WholeHasher::Sha256(h) => h.update(bytes),
            WholeHasher::Blake3(h) => {
                h.update(bytes);
            }
        }
    }

    fn hex(self) -> String {
        match self {
            WholeHasher::Sha256(h) => hex::encode(h.finalize()),
            WholeHasher::Blake3(h) => h.finalize().to_hex().to_string(),
        }
    }
}

/// The base an archive was made against: its SHA-256 (versions 1, 2) or BLAKE3 (version 3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct BaseDigest {
    len: u64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    sha256: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    blake3: String,
}

impl std::fmt::Display for BaseDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.blake3.is_empty() {
            true => write!(f, "a {}-byte file with sha256 {}", self.len, self.sha256),
            false => write!(f, "a {}-byte file with blake3 {}", self.len, self.blake3),
        }
    }
}

impl BaseDigest {
    fn of(base: &[u8], kind: DigestKind) -> Self {
        let digest = hex::encode(kind.digest(base));
        let (sha256, blake3) = match kind {
            DigestKind::Sha256 => (digest, String::new()),
            DigestKind::Blake3 => (String::new(), digest),
        };
        BaseDigest { len: base.len() as u64, sha256, blake3 }
    }
}

/// Everything known about a dataset archive before its frames.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct DatasetManifest {
    format: String,
    version: u32,
    chunking: ChunkParams,
    /// Largest part, in target bytes.
    part_max_bytes: u32,
    base: Option<BaseDigest>,
    target_len: u64,
    /// Versions 1 and 2.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    target_sha256: String,
    /// Version 3 on.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    target_blake3: String,
}

impl DatasetManifest {
    fn check(&self) -> Result<(), DeltaError> {
        let bad = |reason: String| DeltaError::corrupt("manifest", reason);
        if self.format != DATASET_FORMAT {
            return Err(bad(format!("format {} is not {DATASET_FORMAT}", self.format)));
        }
        if !(1..=DATASET_VERSION).contains(&self.version) {
            return Err(bad(format!("unsupported version {}", self.version)));
        }
        if self.part_max_bytes == 0 || self.part_max_bytes > MAX_PART_BYTES {
            return Err(bad(format!("parts of {} bytes", self.part_max_bytes)));
        }
        let kind = DigestKind::of_version(self.version);
        let (digest, other) = match kind {
            DigestKind::Sha256 => (&self.target_sha256, &self.target_blake3),
            DigestKind::Blake3 => (&self.target_blake3, &self.target_sha256),
        };
        if digest.len() != 64 || !other.is_empty() {
            return Err(bad(format!("target checksum is not a {kind:?} digest")));
        }
        let base_ok = self.base.as_ref().is_none_or(|b| match kind {
            DigestKind::Sha256 => b.sha256.len() == 64 && b.blake3.is_empty(),
            DigestKind::Blake3 => b.blake3.len() == 64 && b.sha256.is_empty(),
        });
        if !base_ok {
            return Err(bad(format!("base checksum is not a {kind:?} digest")));
        }
        Ok(())
    }
}

/// What [`DatasetDeltaCompressor::match_stats`] found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MatchStats {
    /// Chunks of the base.
    pub base_chunks: u64,
    /// Chunks of the target.
    pub target_chunks: u64,
    /// Target bytes in chunks found in the base.
    pub copied_bytes: u64,
    /// Target bytes in chunks not found.
    pub new_bytes: u64,
}

/// Builds a [`DatasetDeltaCompressor`].
#[derive(Debug, Clone)]
pub struct DatasetDeltaCompressorBuilder {
    min_chunk: u32,
    avg_chunk: u32,
    max_chunk: u32,
    part_bytes: u32,
    zstd_level: i32,
    lines: LineMode,
    threads: Option<usize>,
}

impl Default for DatasetDeltaCompressorBuilder {
    fn default() -> Self {
        Self {
            min_chunk: DEFAULT_MIN_CHUNK,
            avg_chunk: DEFAULT_AVG_CHUNK,
            max_chunk: DEFAULT_MAX_CHUNK,
            part_bytes: DEFAULT_PART_BYTES,
            zstd_level: DEFAULT_DATASET_ZSTD_LEVEL,
            lines: LineMode::Auto,
            threads: None,
        }
    }
}

impl DatasetDeltaCompressorBuilder {
    /// FastCDC's smallest, average and largest chunk (even; 64 ≤ min ≤ avg ≤ max, 256 ≤ avg, 1 KiB ≤ max
    /// ≤ 16 MiB).
    pub fn chunk_sizes(mut self, min: u32, avg: u32, max: u32) -> Self {
        (self.min_chunk, self.avg_chunk, self.max_chunk) = (min, avg, max);
        self
    }

    /// Target bytes per archive part (the unit checked, and of memory in flight); 64 KiB to 64 MiB.
    pub fn part_bytes(mut self, bytes: u32) -> Self {
        self.part_bytes = bytes;
        self
    }

    /// zstd level for bytes not found in the base (1 to 22).
    pub fn zstd_level(mut self, level: i32) -> Self {
        self.zstd_level = level;
        self
    }

    /// Whether chunks end at line breaks.
    pub fn lines(mut self, mode: LineMode) -> Self {
        self.lines = mode;
        self
    }

    /// Worker threads in a pool of this compressor's own (default: rayon's global pool). The archive is
    /// the same for any number.
    pub fn threads(mut self, threads: usize) -> Self {
        self.threads = Some(threads);
        self
    }

    /// Checks the settings.
    pub fn build(self) -> Result<DatasetDeltaCompressor, DeltaError> {
        use fastcdc::v2020::{AVERAGE_MAX, AVERAGE_MIN, MAXIMUM_MAX, MAXIMUM_MIN, MINIMUM_MAX, MINIMUM_MIN};
        let (min, avg, max) = (self.min_chunk as usize, self.avg_chunk as usize, self.max_chunk as usize);
        let sizes_ok = (MINIMUM_MIN..=MINIMUM_MAX).contains(&min)
            && (AVERAGE_MIN..=AVERAGE_MAX).contains(&avg)
            && (MAXIMUM_MIN..=MAXIMUM_MAX).contains(&max)
            && min <= avg
            && avg <= max
            && [min, avg, max].iter().all(|s| s % 2 == 0);
        if !sizes_ok {
            return Err(DeltaError::InvalidConfig { reason: format!("chunk sizes {min}/{avg}/{max} out of range") });
        }
        if !(64 << 10..=MAX_PART_BYTES - self.max_chunk).contains(&self.part_bytes) {
            return Err(DeltaError::InvalidConfig { reason: format!("part of {} bytes", self.part_bytes) });
        }
        if !(1..=22).contains(&self.zstd_level) {
            return Err(DeltaError::InvalidConfig { reason: format!("zstd level {}", self.zstd_level) });
        }
        let pool = match self.threads {
            None => None,
            Some(0) => return Err(DeltaError::InvalidConfig { reason: "zero threads".to_owned() }),
            Some(n) => Some(Arc::new(
                rayon::ThreadPoolBuilder::new()
                    .num_threads(n)
                    .build()
                    .map_err(|e| DeltaError::InvalidConfig { reason: format!("thread pool: {e}") })?,
            )),
        };
        Ok(DatasetDeltaCompressor { settings: self, pool })
    }
}

/// Dataset deltas (CSV, JSON Lines, any file) by content-defined chunks: see the [module docs](self).
#[derive(Debug, Clone)]
pub struct DatasetDeltaCompressor {
    settings: DatasetDeltaCompressorBuilder,
    pool: Option<Arc<rayon::ThreadPool>>,
}

/// One step of a part's reconstruction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    /// `len` bytes of the base from `base_offset`.
    Copy { base_offset: u64, len: u32 },
    /// The next `len` bytes of the part's literals.
    Literal { len: u32 },
}

/// A part being assembled: its ops and its new bytes, with where they sit in the target.
#[derive(Default)]
struct PartBuilder {
    start: u64,
    len: u64,
    ops: Vec<Op>,
    literals: Vec<u8>,
    /// Target ranges of the literals, for the prefix estimate.
    literal_ranges: Vec<(u64, u64)>,
    /// First copy of the part: (target offset, base offset).
    first_copy: Option<(u64, u64)>,
}

impl PartBuilder {
    fn push_copy(&mut self, target_offset: u64, base_offset: u64, len: u32) {
        self.first_copy.get_or_insert((target_offset, base_offset));
        self.len += u64::from(len);
        if let Some(Op::Copy { base_offset: b, len: l }) = self.ops.last_mut()
            && *b + u64::from(*l) == base_offset
            && let Some(sum) = l.checked_add(len)
        {
            *l = sum;
            return;
        }
        self.ops.push(Op::Copy { base_offset, len });
    }

    fn push_literal(&mut self, target_offset: u64, bytes: &[u8]) {
        let len = bytes.len() as u32;
        self.len += u64::from(len);
        self.literals.extend_from_slice(bytes);
        match self.literal_ranges.last_mut() {
            Some((_, end)) if *end == target_offset => *end += u64::from(len),
            _ => self.literal_ranges.push((target_offset, target_offset + u64::from(len))),
        }
        if let Some(Op::Literal { len: l }) = self.ops.last_mut() {
            *l += len;
            return;
        }
        self.ops.push(Op::Literal { len });
    }
}

/// Where a target offset most likely sits in the base, given the last copy before it.
#[derive(Debug, Clone, Copy)]
struct Anchor {
    target_end: u64,
    base_end: u64,
}

/// Groups the target's chunks, in order, into parts of about `part_bytes`.
struct PartAssembler {
    part_bytes: u64,
    part: PartBuilder,
    /// The last copy so far.
    anchor: Option<Anchor>,
    /// The anchor the current part's prefix is estimated from: the last copy before the part.
    part_anchor: Option<Anchor>,
    /// A single found chunk between new bytes, held back: if new bytes follow, it joins them, since zstd
    /// stores it as one match against the prefix for less than a copy step and a broken literal run.
    pending: Option<(usize, usize, u64)>,
    /// Finished parts, each with the anchor of its prefix estimate.
    done: Vec<(PartBuilder, Option<Anchor>)>,
}

impl PartAssembler {
    fn new(part_bytes: u64) -> Self {
        PartAssembler {
            part_bytes,
            part: PartBuilder::default(),
            anchor: None,
            part_anchor: None,
            pending: None,
            done: Vec::new(),
        }
    }

    /// Adds the target chunk `start..end`, found at `found` (offset, length) in the base or new.
    fn push(&mut self, target: &[u8], start: usize, end: usize, found: Option<(u64, u32)>) {
        let part = &mut self.part;
        match found {
            Some((offset, len)) => {
                if let Some((ps, pe, po)) = self.pending.take() {
                    part.push_copy(ps as u64, po, (pe - ps) as u32);
                    part.push_copy(start as u64, offset, len);
                } else if matches!(part.ops.last(), Some(Op::Literal { .. })) {
                    self.pending = Some((start, end, offset));
                } else {
                    part.push_copy(start as u64, offset, len);
                }
                self.anchor = Some(Anchor { target_end: end as u64, base_end: offset + u64::from(len) });
            }
            None => {
                if let Some((ps, pe, _)) = self.pending.take() {
                    part.push_literal(ps as u64, &target[ps..pe]);
                }
                part.push_literal(start as u64, &target[start..end]);
            }
        }
        let held = self.pending.map_or(0, |(ps, pe, _)| pe - ps) as u64;
        if part.len + held >= self.part_bytes {
            self.flush_pending();
            self.close_part();
        }
    }

    fn flush_pending(&mut self) {
        if let Some((ps, pe, po)) = self.pending.take() {
            self.part.push_copy(ps as u64, po, (pe - ps) as u32);
        }
    }

    fn close_part(&mut self) {
        let done = std::mem::take(&mut self.part);
        self.part.start = done.start + done.len;
        self.done.push((done, self.part_anchor));
        self.part_anchor = self.anchor;
    }

    /// Closes the last part (after the last chunk).
    fn finish(&mut self) {
        self.flush_pending();
        if self.part.len > 0 {
            self.close_part();
        }
    }
}

impl DatasetDeltaCompressor {
    /// What decides the bytes of an archive besides its inputs (not the thread count): a resumed run
    /// reuses parts only when this is unchanged.
    pub(crate) fn settings_id(&self) -> String {
        let s = &self.settings;
        format!(
            "dataset chunks={}/{}/{} part={} level={} lines={:?}",
            s.min_chunk, s.avg_chunk, s.max_chunk, s.part_bytes, s.zstd_level, s.lines
        )
    }

    /// A builder with the defaults (2/8/64 KiB chunks, 4 MiB parts, zstd level 12, [`LineMode::Auto`]).
    pub fn builder() -> DatasetDeltaCompressorBuilder {
        DatasetDeltaCompressorBuilder::default()
    }

    fn params(&self, target: &[u8]) -> ChunkParams {
        let s = &self.settings;
        ChunkParams {
            min_size: s.min_chunk,
            avg_size: s.avg_chunk,
            max_size: s.max_chunk,
            line_aware: self.is_line_aware(target),
        }
    }

    /// Whether `target` would be chunked at line ends.
    pub fn is_line_aware(&self, target: &[u8]) -> bool {
        match self.settings.lines {
            LineMode::Lines => true,
            LineMode::Bytes => false,
            LineMode::Auto => looks_like_lines(target),
        }
    }

    /// [`Compressor::encode`](chitty_core::Compressor::encode) with this crate's error and a callback told the target bytes read after
    /// each part.
    pub fn encode_with_progress(
        &self,
        base: Option<&[u8]>,
        target: &[u8],
        out: &mut dyn Write,
        progress: &mut dyn FnMut(u64),
    ) -> Result<EncodeReport, DeltaError> {
        let s = &self.settings;
        let params = self.params(target);
        let base_bytes = base.unwrap_or(&[]);
        let cut = params.cut();
        // The two whole-file digests run beside the base's chunking.
        let kind = DigestKind::of_version(DATASET_VERSION);
        let ((base_digest, target_blake3), index) = self.in_pool(|| {
            rayon::join(
                || rayon::join(|| base.map(|b| BaseDigest::of(b, kind)), || hex::encode(kind.digest(target))),
                || BaseIndex::build(base_bytes, cut),
            )
        });
        let manifest = DatasetManifest {
            format: DATASET_FORMAT.to_owned(),
            version: DATASET_VERSION,
            chunking: params,
            part_max_bytes: s.part_bytes + s.max_chunk,
            base: base_digest,
            target_len: target.len() as u64,
            target_sha256: String::new(),
            target_blake3,
        };
        let preamble = format::write_json_preamble(CONTAINER_VERSION, &manifest)?;
        let write = |out: &mut dyn Write, bytes: &[u8]| {
            out.write_all(bytes).map_err(|e| DeltaError::io("writing the archive", e))
        };
        write(out, &preamble)?;
        let mut report =
            EncodeReport { input_bytes: target.len() as u64, output_bytes: preamble.len() as u64, parts: Vec::new() };

        let mut parts = PartAssembler::new(u64::from(s.part_bytes));
        let (mut chunk_start, mut seq) = (0usize, 0u32);
        self.match_target(&index, target, cut, &mut |chunks| {
            for c in chunks {
                parts.push(target, chunk_start, c.end, c.found.map(|k| index.range(k)));
                chunk_start = c.end;
            }
            self.write_parts(base_bytes, target, &mut parts.done, &mut seq, out, &mut report, progress)
        })?;
        parts.finish();
        self.write_parts(base_bytes, target, &mut parts.done, &mut seq, out, &mut report, progress)?;
        out.flush().map_err(|e| DeltaError::io("writing the archive", e))?;
        Ok(report)
    }

    /// What chunking and matching find in `target` against `base`, without hashing for integrity or
    /// compressing: the step whose speed the archive's size does not depend on (and what `encode` does
    /// first).
    pub fn match_stats(&self, base: Option<&[u8]>, target: &[u8]) -> MatchStats {
        let cut = self.params(target).cut();
        let index = self.in_pool(|| BaseIndex::build(base.unwrap_or(&[]), cut));
        let mut stats = MatchStats { base_chunks: index.chunks() as u64, ..MatchStats::default() };
        let mut chunk_start = 0;
        let counted = self.match_target(&index, target, cut, &mut |chunks| {
            for c in chunks {
                let len = (c.end - chunk_start) as u64;
                if c.found.is_some() {
                    stats.copied_bytes += len;
                } else {
                    stats.new_bytes += len;
                }
                stats.target_chunks += 1;
                chunk_start = c.end;
            }
            Ok(())
        });
        debug_assert!(counted.is_ok(), "the callback above never fails");
        stats
    }

    /// Cuts `target` into the chunks a serial pass would and finds them in `index`, a round of segments at
    /// a time in parallel, handing each round's chunks in order to `round`.
    fn match_target(
        &self,
        index: &BaseIndex<'_>,
        target: &[u8],
        cut: CutParams,
        round: &mut dyn FnMut(&[TargetChunk]) -> Result<(), DeltaError>,
    ) -> Result<(), DeltaError> {
        let matcher = Matcher::new(index, target, cut);
        // A few segments for each thread per round: enough to keep them busy, few enough to bound memory.
        let window = SEGMENT_BYTES * 4 * self.threads();
        let mut stitcher = Stitcher::new(0);
        let mut chunks = Vec::new();
        let mut pos = 0;
        while pos < target.len() {
            let end = (pos + window).min(target.len());
            let starts: Vec<usize> = (pos..end).step_by(SEGMENT_BYTES).collect();
            let lists: Vec<(usize, Vec<TargetChunk>)> = self.in_pool(|| {
                starts.into_par_iter().map(|s| (s, matcher.segment(s, (s + SEGMENT_BYTES).min(end)))).collect()
            });
            chunks.clear();
            for (start, list) in lists {
                stitcher.push(start, list, |c| c.end, |at| matcher.cut_and_find(at), &mut chunks);
            }
            round(&chunks)?;
            pos = end;
        }
        Ok(())
    }

    /// Encodes finished parts in parallel and writes their frames in order.
    #[allow(clippy::too_many_arguments)]
    fn write_parts(
        &self,
        base: &[u8],
        target: &[u8],
        done: &mut Vec<(PartBuilder, Option<Anchor>)>,
        seq: &mut u32,
        out: &mut dyn Write,
        report: &mut EncodeReport,
        progress: &mut dyn FnMut(u64),
    ) -> Result<(), DeltaError> {
        let first = *seq;
        let count = u32::try_from(done.len()).ok().and_then(|n| first.checked_add(n));
        *seq = count.ok_or_else(|| DeltaError::InvalidConfig { reason: "more than 2^32 parts".to_owned() })?;
        let frames: Vec<Result<(Vec<u8>, PartReport), DeltaError>> = self.in_pool(|| {
            done.par_iter()
                .enumerate()
                .map(|(i, (part, anchor))| self.encode_part(base, target, part, *anchor, first + i as u32))
                .collect()
        });
        for (frame, (part, _)) in frames.into_iter().zip(done.drain(..)) {
            let (frame, part_report) = frame?;
            out.write_all(&frame).map_err(|e| DeltaError::io("writing the archive", e))?;
            report.output_bytes += frame.len() as u64;
            report.parts.push(part_report);
            progress(part.start + part.len);
        }
        Ok(())
    }

    /// Worker threads the parallel steps use.
    fn threads(&self) -> usize {
        self.pool.as_ref().map_or_else(rayon::current_num_threads, |p| p.current_num_threads())
    }

    /// Runs `f` in this compressor's pool (or rayon's global one).
    fn in_pool<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        match &self.pool {
            Some(pool) => pool.install(f),
            None => f(),
        }
    }

    fn encode_part(
        &self,
        base: &[u8],
        target: &[u8],
        part: &PartBuilder,
        anchor: Option<Anchor>,
        seq: u32,
    ) -> Result<(Vec<u8>, PartReport), DeltaError> {
        let groups = literal_groups(base.len() as u64, target.len() as u64, part, anchor);
        let mut payload = Vec::with_capacity(64 + groups.len() * 24 + part.ops.len() * 13);
        payload.extend_from_slice(&(part.len as u32).to_le_bytes());
        payload.extend_from_slice(&(groups.len() as u32).to_le_bytes());
        for group in &groups {
            let prefix = &base[group.window_offset as usize..(group.window_offset + group.window_len) as usize];
            let literals = &part.literals[group.literals.clone()];
            let level = match literals.len() {
                n if n <= SMALL_GROUP_BYTES => self.settings.zstd_level.min(SMALL_GROUP_LEVEL),
                _ => self.settings.zstd_level,
            };
            let compressed = compress_with_prefix(literals, prefix, level, part.first_copy.is_none())
                .map_err(|e| DeltaError::Internal { reason: format!("zstd: {e}") })?;
            payload.extend_from_slice(&group.window_offset.to_le_bytes());
            payload.extend_from_slice(&(group.window_len as u32).to_le_bytes());
            payload.extend_from_slice(&(literals.len() as u32).to_le_bytes());
            payload.extend_from_slice(&(compressed.len() as u32).to_le_bytes());
            payload.extend_from_slice(&compressed);
        }
        payload.extend_from_slice(&(part.ops.len() as u32).to_le_bytes());
        crate::codec::encode_section(&encode_ops(&part.ops), self.settings.zstd_level, &mut payload)?;
        let range = part.start as usize..(part.start + part.len) as usize;
        let digest = DigestKind::of_version(DATASET_VERSION).digest(&target[range]);
        let frame = format::frame_bytes(seq, &digest, &payload)?;
        let copied: u64 = part.len - part.literals.len() as u64;
        let method = match (copied, part.literals.len()) {
            (_, 0) => "copy",
            (0, _) => "zstd-prefix",
            _ => "copy+zstd-prefix",
        };
        let report = PartReport {
            name: part_name(seq, part.start),
            method: method.to_owned(),
            original_bytes: part.len,
            stored_bytes: frame.len() as u64,
            relative_error: None,
        };
        Ok((frame, report))
    }

    /// [`Compressor::decode`](chitty_core::Compressor::decode) with this crate's error and a callback told the bytes written after each
    /// part.
    pub fn decode_with_progress(
        &self,
        base: Option<&[u8]>,
        archive: &mut dyn Read,
        out: &mut dyn Write,
        progress: &mut dyn FnMut(u64),
    ) -> Result<DecodeReport, DeltaError> {
        let mut input = crate::compressor::CountingReader { inner: archive, count: 0 };
        let (manifest, _): (DatasetManifest, _) = format::read_json_preamble(&mut input)?;
        manifest.check()?;
        let (base, expected) = match (&manifest.base, base) {
            (None, _) => (&[][..], None),
            (Some(_), None) => return Err(DeltaError::MissingBase),
            (Some(expected), Some(base)) => {
                if base.len() as u64 != expected.len {
                    let found = format!("a {}-byte file", base.len());
                    return Err(DeltaError::WrongBase { expected: expected.to_string(), found });
                }
                (base, Some(expected))
            }
        };
        let (target_len, version) = (manifest.target_len, manifest.version);
        let part_max = u64::from(manifest.part_max_bytes);
        let max_payload = manifest.part_max_bytes as usize * 2 + 4096;
        let mut report = DecodeReport::default();
        let kind = DigestKind::of_version(version);
        let mut whole = kind.hasher();
        std::thread::scope(|scope| {
            // The base's digest runs beside the first parts; nothing is written before it matched.
            let mut base_check = expected.map(|e| (scope.spawn(move || BaseDigest::of(base, kind)), e));
            let mut check_base = move || -> Result<(), DeltaError> {
                let Some((digest, expected)) = base_check.take() else { return Ok(()) };
                let found = digest
                    .join()
                    .map_err(|_| DeltaError::Internal { reason: "the base's SHA-256 thread panicked".to_owned() })?;
                if &found != expected {
                    return Err(DeltaError::WrongBase { expected: expected.to_string(), found: found.to_string() });
                }
                Ok(())
            };
            let (mut seq, mut produced) = (0u32, 0u64);
            let produce = || -> Result<Option<PartJob>, DeltaError> {
                if produced >= target_len {
                    return Ok(None);
                }
                let name = part_name(seq, produced);
                let frame = format::read_frame(&mut input, seq, max_payload, &name)?;
                if !frame.is_intact() {
                    return Err(DeltaError::corrupt(&name, "frame checksum mismatch"));
                }
                let limit = (target_len - produced).min(part_max) as usize;
                // The part's length leads its payload: the next part's name and limit depend on it.
                let raw_len = frame.payload.get(..4).map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
                if raw_len == 0 || raw_len as usize > limit {
                    return Err(DeltaError::corrupt(
                        &name,
                        format!("part of {raw_len} bytes where at most {limit} remain"),
                    ));
                }
                produced += u64::from(raw_len);
                seq = seq.checked_add(1).ok_or_else(|| DeltaError::corrupt(&name, "too many parts"))?;
                Ok(Some(PartJob { frame, limit, name }))
            };
            let work = |job: PartJob| -> Result<Vec<u8>, DeltaError> {
                let (mut literals, mut part_out) = (Vec::new(), Vec::new());
                decode_part(version, base, &job.frame.payload, job.limit, &mut literals, &mut part_out, &job.name)?;
                if kind.digest(&part_out)[..] != *job.frame.part_sha() {
                    return Err(DeltaError::corrupt(&job.name, "reconstruction checksum mismatch"));
                }
                Ok(part_out)
            };
            let consume = |part_out: Vec<u8>| -> Result<(), DeltaError> {
                check_base()?;
                out.write_all(&part_out).map_err(|e| DeltaError::io("writing the output", e))?;
                whole.update(&part_out);
                report.output_bytes += part_out.len() as u64;
                report.parts_verified += 1;
                progress(report.output_bytes);
                Ok(())
            };
            let window = 2 * self.threads() + 2;
            let decoded = crate::pipeline::run_ordered(self.pool.as_deref(), window, produce, work, consume);
            // A different base of the same length makes parts fail their checks: say so rather than
            // blaming the archive.
            check_base()?;
            decoded
        })?;
        format::expect_end(&mut input)?;
        let expected_whole = match kind {
            DigestKind::Sha256 => &manifest.target_sha256,
            DigestKind::Blake3 => &manifest.target_blake3,
        };
        if whole.hex() != *expected_whole {
            return Err(DeltaError::corrupt("whole reconstruction", format!("{kind:?} of the output does not match")));
        }
        out.flush().map_err(|e| DeltaError::io("writing the output", e))?;
        report.input_bytes = input.count;
        Ok(report)
    }
}

/// A frame read and checked, waiting for a worker to rebuild its part.
struct PartJob {
    frame: format::RawFrame,
    /// Most bytes the part may hold.
    limit: usize,
    name: String,
}

fn part_name(seq: u32, start: u64) -> String {
    format!("part {seq} (target byte {start})")
}

/// Whether the start of `data` looks like line-oriented text.
fn looks_like_lines(data: &[u8]) -> bool {
    let sample = &data[..data.len().min(SNIFF_BYTES)];
    let lines = sample.iter().filter(|&&b| b == b'\n').count();
    !sample.is_empty() && !sample.contains(&0) && lines * SNIFF_BYTES_PER_LINE >= sample.len()
}

/// New bytes of a part compressed as one zstd frame against one base window.
#[derive(Debug, Clone, PartialEq, Eq)]
struct LiteralGroup {
    window_offset: u64,
    window_len: u64,
    /// Range in the part's literals.
    literals: std::ops::Range<usize>,
}

/// The base windows a part's new bytes are compressed against, one per group of nearby runs.
///
/// A run of new bytes next to a copy (in the part, or the copy that ended the part before) most likely
/// came from the base bytes between that copy and the next: that region, plus [`NEAR_MARGIN`], is its
/// window. Other runs take the base offset reached by continuing from the last copy before them (or back
/// from the first copy after them, or in proportion to the file lengths), widened by [`WINDOW_MARGIN`]
/// and a quarter of their length. Runs whose windows lie within [`GROUP_GAP`] share a group; so zstd
/// indexes the base near the changes, not a whole part's span of it.
fn literal_groups(base_len: u64, target_len: u64, part: &PartBuilder, anchor: Option<Anchor>) -> Vec<LiteralGroup> {
    if part.literals.is_empty() {
        return Vec::new();
    }
    let estimate = |t: u64| -> u64 {
        let guess = match (anchor, part.first_copy) {
            (Some(a), _) => (a.base_end + t).saturating_sub(a.target_end),
            (None, Some((ct, cb))) => (cb + t).saturating_sub(ct),
            (None, None) => (u128::from(t) * u128::from(base_len) / u128::from(target_len.max(1))) as u64,
        };
        guess.min(base_len)
    };
    let mut groups: Vec<LiteralGroup> = Vec::new();
    let (mut target_at, mut literal_at) = (part.start, 0usize);
    // Base end of the copy just before the current step, if the step follows one.
    let mut copy_end = anchor.filter(|a| a.target_end == part.start).map(|a| a.base_end);
    for (i, op) in part.ops.iter().enumerate() {
        let len = match *op {
            Op::Copy { base_offset, len } => {
                copy_end = Some(base_offset + u64::from(len));
                target_at += u64::from(len);
                continue;
            }
            Op::Literal { len } => u64::from(len),
        };
        let next_copy = match part.ops.get(i + 1) {
            Some(Op::Copy { base_offset, .. }) => Some(*base_offset),
            _ => None,
        };
        let (lo, hi) = match (copy_end, next_copy) {
            (Some(b1), Some(b2)) if b2 >= b1 && b2 - b1 <= len + NEAR_SPREAD => {
                (b1.min(b2.saturating_sub(len)).saturating_sub(NEAR_MARGIN), b2.max(b1 + len) + NEAR_MARGIN)
            }
            (Some(b1), _) => (b1.saturating_sub(NEAR_MARGIN), b1 + len + NEAR_MARGIN),
            (None, Some(b2)) => (b2.saturating_sub(len + NEAR_MARGIN), b2 + NEAR_MARGIN),
            (None, None) => {
                let (lo, hi) = (estimate(target_at), estimate(target_at + len).max(estimate(target_at)));
                let margin = WINDOW_MARGIN + (hi - lo) / 4;
                (lo.saturating_sub(margin), hi + margin)
            }
        };
        let (lo, hi) = (lo.min(base_len), hi.min(base_len));
        let literals = literal_at..literal_at + len as usize;
        match groups.last_mut() {
            Some(g) if lo < g.window_offset + g.window_len + GROUP_GAP && hi + GROUP_GAP > g.window_offset => {
                let end = (g.window_offset + g.window_len).max(hi);
                g.window_offset = g.window_offset.min(lo);
                g.window_len = end - g.window_offset;
                g.literals.end = literals.end;
            }
            _ => groups.push(LiteralGroup { window_offset: lo, window_len: hi - lo, literals }),
        }
        literal_at += len as usize;
        target_at += len;
        copy_end = None;
    }
    for g in &mut groups {
        // The prefix and the group's literals must fit zstd's window.
        let room = (1u64 << WINDOW_LOG_MAX) - g.literals.len() as u64 - 1024;
        g.window_len = g.window_len.min(MAX_WINDOW).min(room);
    }
    groups
}

fn window_log(prefix_len: usize, literal_len: usize) -> u32 {
    let need = (prefix_len + literal_len).max(1 << 10) as u64;
    (64 - (need - 1).leading_zeros()).clamp(10, WINDOW_LOG_MAX)
}

/// `long` turns on zstd's long-distance matching: on the 16 MB TSV pairs it stored 30 % less for filtered
/// rows and 8 % less for an added column (parts with nothing found in the base), but 12 % more for rows
/// edited in place (parts mixing copies and new bytes), so it is used for parts without copies only.
fn compress_with_prefix(literals: &[u8], prefix: &[u8], level: i32, long: bool) -> Result<Vec<u8>, String> {
    use zstd::zstd_safe::{CCtx, CParameter};
    let err = |code: usize| zstd::zstd_safe::get_error_name(code).to_owned();
    let mut cctx = CCtx::try_create().ok_or("no zstd context")?;
    cctx.set_parameter(CParameter::CompressionLevel(level)).map_err(err)?;
    let wlog = window_log(prefix.len(), literals.len());
    cctx.set_parameter(CParameter::WindowLog(wlog)).map_err(err)?;
    if level < FULL_PREFIX_LEVEL && prefix.len() > FULL_PREFIX_MIN {
        // zstd indexes only the last 2^(max(hashLog + 3, chainLog + 1)) bytes of a prefix: tables sized to
        // the window let these levels see all of it (1 %-edited 31 MB CSV at level 3: 4.5 MB -> 71 KB).
        cctx.set_parameter(CParameter::HashLog(wlog.saturating_sub(3).max(12))).map_err(err)?;
        cctx.set_parameter(CParameter::ChainLog(wlog.saturating_sub(2).max(12))).map_err(err)?;
    }
    cctx.set_parameter(CParameter::ChecksumFlag(false)).map_err(err)?;
    cctx.set_parameter(CParameter::EnableLongDistanceMatching(long)).map_err(err)?;
    let mut out = Vec::with_capacity(zstd::zstd_safe::compress_bound(literals.len()));
    cctx.ref_prefix(prefix).map_err(err)?;
    cctx.compress2(&mut out, literals).map_err(err)?;
    Ok(out)
}

fn decompress_with_prefix(compressed: &[u8], prefix: &[u8], out: &mut Vec<u8>, len: usize) -> Result<(), String> {
    use zstd::zstd_safe::{DCtx, DParameter};
    let err = |code: usize| zstd::zstd_safe::get_error_name(code).to_owned();
    let mut dctx = DCtx::try_create().ok_or("no zstd context")?;
    dctx.set_parameter(DParameter::WindowLogMax(WINDOW_LOG_MAX)).map_err(err)?;
    dctx.ref_prefix(prefix).map_err(err)?;
    out.clear();
    out.reserve_exact(len);
    let n = dctx.decompress(out, compressed).map_err(err)?;
    if n != len {
        return Err(format!("zstd gave {n} bytes, expected {len}"));
    }
    Ok(())
}

/// Rebuilds one part into `out` from its payload, checking every field against `limit` and the base.
fn decode_part(
    version: u32,
    base: &[u8],
    payload: &[u8],
    limit: usize,
    literals: &mut Vec<u8>,
    out: &mut Vec<u8>,
    part: &str,
) -> Result<(), DeltaError> {
    let mut input = payload;
    let bad = |reason: String| DeltaError::corrupt(part, reason);
    let raw_len = read_u32(&mut input, part)? as usize;
    if raw_len == 0 || raw_len > limit {
        return Err(bad(format!("part of {raw_len} bytes where at most {limit} remain")));
    }
    let groups = if version == 1 { 1 } else { read_u32(&mut input, part)? as usize };
    // Each group holds at least one run of new bytes, between copies: as bounded as the steps below.
    if groups > raw_len / 64 + 2 {
        return Err(bad(format!("{groups} groups of new bytes for {raw_len} bytes")));
    }
    literals.clear();
    let mut scratch = Vec::new();
    for _ in 0..groups {
        let window_offset = read_u64(&mut input, part)?;
        let window_len = u64::from(read_u32(&mut input, part)?);
        let group_len = read_u32(&mut input, part)? as usize;
        let compressed_len = read_u32(&mut input, part)? as usize;
        if group_len > raw_len - literals.len() {
            return Err(bad(format!("{} new bytes in a part of {raw_len}", literals.len() + group_len)));
        }
        if version > 1 && group_len == 0 {
            return Err(bad("an empty group of new bytes".to_owned()));
        }
        let window_end = window_offset.checked_add(window_len).filter(|&e| e <= base.len() as u64);
        let Some(window_end) = window_end.filter(|_| window_len <= MAX_WINDOW) else {
            return Err(bad("prefix window beyond the base".to_owned()));
        };
        let compressed = crate::codec::take(&mut input, compressed_len, part)?;
        if group_len > 0 {
            let prefix = &base[window_offset as usize..window_end as usize];
            let into = if literals.is_empty() { &mut *literals } else { &mut scratch };
            decompress_with_prefix(compressed, prefix, into, group_len).map_err(|e| bad(format!("zstd: {e}")))?;
            if !scratch.is_empty() {
                literals.extend_from_slice(&scratch);
                scratch.clear();
            }
        } else if compressed_len != 0 {
            return Err(bad("compressed bytes for no new bytes".to_owned()));
        }
    }
    let literal_len = literals.len();
    let ops = read_u32(&mut input, part)? as usize;
    // Steps alternate copies and new bytes, each at least one chunk of 64 bytes or more (but the file's
    // last): more is corrupt, and this bounds what the steps may allocate.
    if ops > raw_len / 64 + 2 {
        return Err(bad(format!("{ops} steps for {raw_len} bytes")));
    }
    let mut steps = Vec::new();
    crate::codec::decode_section(&mut input, ops * MAX_OP_BYTES, &mut steps, part)?;
    let mut steps = steps.as_slice();
    out.clear();
    out.reserve_exact(raw_len);
    let mut used = 0usize;
    let mut expected = 0u64;
    for _ in 0..ops {
        let kind = crate::codec::take(&mut steps, 1, part)?[0];
        let len = read_varint(&mut steps, part)?;
        let len = usize::try_from(len).ok().filter(|&l| l > 0 && out.len() + l <= raw_len);
        let Some(len) = len else {
            return Err(bad("a step overruns the part".to_owned()));
        };
        match kind {
            OP_COPY => {
                let offset = expected.wrapping_add(unzigzag(read_varint(&mut steps, part)?));
                let range = usize::try_from(offset).ok().and_then(|o| Some(o..o.checked_add(len)?));
                let bytes = range.and_then(|r| base.get(r)).ok_or_else(|| bad("copy beyond the base".to_owned()))?;
                out.extend_from_slice(bytes);
                expected = offset + len as u64;
            }
            OP_LITERAL => {
                let bytes =
                    literals.get(used..used + len).ok_or_else(|| bad("more new bytes used than stored".to_owned()))?;
                out.extend_from_slice(bytes);
                used += len;
                expected = expected.wrapping_add(len as u64);
            }
            other => return Err(bad(format!("unknown step {other}"))),
        }
    }
    if !steps.is_empty() {
        return Err(bad(format!("{} bytes after the last step", steps.len())));
    }
    if out.len() != raw_len || used != literal_len || !input.is_empty() {
        return Err(bad(format!(
            "steps give {} of {raw_len} bytes, use {used} of {literal_len} new bytes, leave {} payload bytes",
            out.len(),
            input.len()
        )));
    }
    Ok(())
}

/// Most bytes one encoded step takes: a kind and two 10-byte varints.
const MAX_OP_BYTES: usize = 21;

/// Steps as `kind | varint len | (copy) zigzag varint of the offset minus the expected offset`, where the
/// expected offset is where the previous copy ended plus the new bytes since: 0 for a copy that resumes
/// the base after an edit of the same length.
fn encode_ops(ops: &[Op]) -> Vec<u8> {
    let mut out = Vec::with_capacity(ops.len() * 4);
    let mut expected = 0u64;
    for op in ops {
        match *op {
            Op::Copy { base_offset, len } => {
                out.push(OP_COPY);
                write_varint(&mut out, u64::from(len));
                write_varint(&mut out, zigzag(base_offset.wrapping_sub(expected)));
                expected = base_offset + u64::from(len);
            }
            Op::Literal { len } => {
                out.push(OP_LITERAL);
                write_varint(&mut out, u64::from(len));
                expected = expected.wrapping_add(u64::from(len));
            }
        }
    }
    out
}

fn zigzag(v: u64) -> u64 {
    (v << 1) ^ ((v as i64 >> 63) as u64)
}

fn unzigzag(v: u64) -> u64 {
    (v >> 1) ^ (v & 1).wrapping_neg()
}

fn write_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn read_varint(input: &mut &[u8], part: &str) -> Result<u64, DeltaError> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = crate::codec::take(input, 1, part)?[0];
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(DeltaError::corrupt(part, "varint longer than 10 bytes"))
}

fn read_u32(input: &mut &[u8], part: &str) -> Result<u32, DeltaError> {
    let b = crate::codec::take(input, 4, part)?;
    Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

fn read_u64(input: &mut &[u8], part: &str) -> Result<u64, DeltaError> {
    let b = crate::codec::take(input, 8, part)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(b);
    Ok(u64::from_le_bytes(a))
}

delta_codec_impls!(DatasetDeltaCompressor, DATASET_FORMAT);

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(n: usize) -> Vec<u8> {
        (0..n).flat_map(|i| format!("{i},user{},{}\n", i * 31 % 977, i * 7).into_bytes()).collect()
    }

    #[test]
    fn line_aware_chunks_end_at_line_breaks_and_cover_the_input() {
        let data = rows(20_000);
        let params = ChunkParams { min_size: 2048, avg_size: 8192, max_size: 65536, line_aware: true };
        let mut at = 0;
        for end in crate::chunking::chunk_ends(&data, params.cut()) {
            assert!(end > at);
            assert!(end == data.len() || data[end - 1] == b'\n');
            at = end;
        }
        assert_eq!(at, data.len());
    }

    #[test]
    fn auto_detects_text_with_lines() {
        assert!(looks_like_lines(&rows(100)));
        assert!(!looks_like_lines(&[0u8; 1000]));
        assert!(!looks_like_lines(&b"x".repeat(100_000)));
        assert!(!looks_like_lines(b""));
    }

    #[test]
    fn builder_refuses_out_of_range_settings() {
        assert!(DatasetDeltaCompressor::builder().chunk_sizes(10, 8192, 65536).build().is_err());
        assert!(DatasetDeltaCompressor::builder().chunk_sizes(4096, 2048, 65536).build().is_err());
        assert!(DatasetDeltaCompressor::builder().chunk_sizes(2047, 8192, 65536).build().is_err());
        assert!(DatasetDeltaCompressor::builder().part_bytes(10).build().is_err());
        assert!(DatasetDeltaCompressor::builder().zstd_level(0).build().is_err());
    }

    #[test]
    fn runs_of_new_bytes_between_copies_get_small_windows_of_their_own() {
        let mut part = PartBuilder::default();
        part.push_copy(0, 0, 1_000_000);
        part.push_literal(1_000_000, &[1u8; 8000]);
        part.push_copy(1_008_000, 1_008_000, 2_000_000);
        part.push_literal(3_008_000, &[2u8; 8000]);
        part.push_copy(3_016_000, 3_016_000, 1000);
        part.push_literal(3_017_000, &[3u8; 100]);
        let groups = literal_groups(10_000_000, 10_000_000, &part, None);
        let first = LiteralGroup {
            window_offset: 1_000_000 - NEAR_MARGIN,
            window_len: 8000 + 2 * NEAR_MARGIN,
            literals: 0..8000,
        };
        assert_eq!(groups[0], first);
        // The last two runs are 1000 bytes apart: one group.
        assert_eq!(groups.len(), 2, "{groups:?}");
        assert_eq!(groups[1].literals, 8000..16_100);
        assert_eq!(groups[1].window_offset, 3_008_000 - NEAR_MARGIN);
        assert_eq!(groups[1].window_len, 3_017_100 + NEAR_MARGIN - groups[1].window_offset);
    }

    #[test]
    fn new_bytes_far_from_any_copy_get_the_estimated_window() {
        let mut part = PartBuilder { start: 4_000_000, ..PartBuilder::default() };
        part.push_literal(4_000_000, &[0u8; 1_000_000]);
        let anchor = Anchor { target_end: 3_000_000, base_end: 3_300_000 };
        let groups = literal_groups(20_000_000, 20_000_000, &part, Some(anchor));
        let margin = WINDOW_MARGIN + 1_000_000 / 4;
        assert_eq!(groups.len(), 1);
        assert_eq!(groups[0].window_offset, 4_300_000 - margin);
        assert_eq!(groups[0].window_len, 1_000_000 + 2 * margin);
        assert!(literal_groups(20_000_000, 20_000_000, &PartBuilder::default(), None).is_empty());
    }

    #[test]
    fn prefix_round_trips() {
        let base = rows(1000);
        let target = rows(1001);
        let c = compress_with_prefix(&target, &base, 3, false).unwrap();
        assert!(c.len() < 200, "{}", c.len());
        let mut out = Vec::new();
        decompress_with_prefix(&c, &base, &mut out, target.len()).unwrap();
        assert_eq!(out, target);
    }
}
