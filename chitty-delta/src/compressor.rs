//! [`ModelDeltaCompressor`]: safetensors fine-tunes stored as deltas against their base.

use std::io::{Read, Write};
use std::sync::Arc;

use chitty_core::{DecodeReport, EncodeReport, PartReport};
use rayon::prelude::*;
use sha2::{Digest, Sha256};

use crate::codec::{decode_section, encode_literal_section, encode_section, take};
use crate::error::DeltaError;
use crate::format::{
    self, BaseFingerprint, CheckedTensor, FORMAT, Manifest, Method, RawFrame, TensorRecord, VERSION, VERSION_MAC,
};
use crate::lossy;
use crate::mac::{ArchiveMac, MAC_ALGORITHM, MAC_LEN, MacKey};
use crate::packed16;
use crate::pipeline::run_ordered;
use crate::safetensors::{Dtype, SafetensorsLayout};
use crate::shards::{self, BaseFiles};
use crate::transform;

/// Default elements per chunk: 1 Mi elements (2 MiB of BF16), the unit of parallel work and of checks.
pub const DEFAULT_CHUNK_ELEMENTS: u64 = 1 << 20;
/// Default zstd level (the measurements in `docs/delta.md` chose it).
pub const DEFAULT_ZSTD_LEVEL: i32 = 1;

/// How tensors that changed against the base are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Mode {
    /// Bit-exact: ordered-integer difference as packed codes, zstd per plane.
    Lossless,
    /// Lossy: keep the largest deltas (a fraction set by [`ModelDeltaCompressorBuilder::sparse_keep`]).
    Sparse,
    /// Lossy: 8-bit delta with one absmax scale per row.
    Int8,
    /// Lossy: 4-bit delta with one absmax scale per row.
    Int4,
    /// Lossy: sign of the delta with one scale per matrix (BitDelta).
    OneBit,
}

impl Mode {
    /// Parses `lossless`, `sparse`, `int8`, `int4` or `1bit`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "lossless" => Some(Mode::Lossless),
            "sparse" => Some(Mode::Sparse),
            "int8" => Some(Mode::Int8),
            "int4" => Some(Mode::Int4),
            "1bit" => Some(Mode::OneBit),
            _ => None,
        }
    }

    /// Whether the mode loses information.
    pub fn is_lossy(self) -> bool {
        self != Mode::Lossless
    }

    fn method(self) -> Method {
        match self {
            Mode::Lossless => Method::Delta,
            Mode::Sparse => Method::Sparse,
            Mode::Int8 => Method::Int8,
            Mode::Int4 => Method::Int4,
            Mode::OneBit => Method::OneBit,
        }
    }
}

/// Tensors a lossy default mode leaves lossless unless a rule says otherwise: embeddings and norms, whose
/// errors every token goes through.
pub const LOSSLESS_BY_DEFAULT: [&str; 2] = ["*embed*", "*norm*"];

/// A rule of the per-tensor policy: tensors whose name matches `pattern` are stored in `mode`.
///
/// Patterns are globs where `*` matches any run of characters, e.g. `*.mlp.*` or `model.embed_tokens*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyRule {
    /// The glob.
    pub pattern: String,
    /// The mode for matching tensors.
    pub mode: Mode,
}

/// Whether `name` matches the glob `pattern` (`*` is the only wildcard).
pub fn glob_matches(pattern: &str, name: &str) -> bool {
    let (p, n) = (pattern.as_bytes(), name.as_bytes());
    let (mut pi, mut ni) = (0, 0);
    let mut backtrack: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && p[pi] == b'*' {
            backtrack = Some((pi, ni));
            pi += 1;
        } else if pi < p.len() && p[pi] == n[ni] {
            pi += 1;
            ni += 1;
        } else if let Some((star, matched)) = backtrack {
            pi = star + 1;
            ni = matched + 1;
            backtrack = Some((star, matched + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// Encodes safetensors fine-tunes against their base and decodes them back, verifying every part.
///
/// ```
/// use chitty_core::Compressor;
/// use chitty_delta::ModelDeltaCompressor;
/// use chitty_testkit::model_pairs::{ModelPairSpec, generate_pair};
///
/// let pair = generate_pair(&ModelPairSpec::tiny(7));
/// let compressor = ModelDeltaCompressor::builder().build()?;
/// let mut archive = Vec::new();
/// let report = compressor.encode(Some(&pair.base), &pair.target, &mut archive)?;
/// assert!(report.output_bytes < report.input_bytes / 2);
/// let mut restored = Vec::new();
/// compressor.decode(Some(&pair.base), &mut archive.as_slice(), &mut restored)?;
/// assert_eq!(restored, pair.target);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct ModelDeltaCompressor {
    mode: Mode,
    rules: Vec<PolicyRule>,
    sparse_keep: f64,
    zstd_level: i32,
    chunk_elements: u64,
    max_rel_error: Option<f64>,
    pool: Option<Arc<rayon::ThreadPool>>,
    mac_key: Option<MacKey>,
}

/// Builds a [`ModelDeltaCompressor`].
#[derive(Debug, Clone)]
pub struct ModelDeltaCompressorBuilder {
    mode: Mode,
    rules: Vec<PolicyRule>,
    sparse_keep: f64,
    zstd_level: i32,
    chunk_elements: u64,
    max_rel_error: Option<f64>,
    threads: Option<usize>,
    mac_key: Option<MacKey>,
}

impl Default for ModelDeltaCompressorBuilder {
    fn default() -> Self {
        ModelDeltaCompressorBuilder {
            mode: Mode::Lossless,
            rules: Vec::new(),
            sparse_keep: 0.1,
            zstd_level: DEFAULT_ZSTD_LEVEL,
            chunk_elements: DEFAULT_CHUNK_ELEMENTS,
            max_rel_error: None,
            threads: None,
            mac_key: None,
        }
    }
}

impl ModelDeltaCompressorBuilder {
    /// The mode for changed float tensors that no rule matches (default: lossless).
    pub fn mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }

    /// Adds a policy rule; the first matching rule wins, before the default mode.
    pub fn rule(mut self, pattern: impl Into<String>, mode: Mode) -> Self {
        self.rules.push(PolicyRule { pattern: pattern.into(), mode });
        self
    }

    /// Fraction of each chunk's elements the sparse mode keeps (0 < keep <= 1; default 0.1).
    pub fn sparse_keep(mut self, keep: f64) -> Self {
        self.sparse_keep = keep;
        self
    }

    /// The zstd level for every plane (-7 ..= 22; default 1).
    pub fn zstd_level(mut self, level: i32) -> Self {
        self.zstd_level = level;
        self
    }

    /// Elements per chunk, the unit of parallel work and of verification (64 ..= 16 Mi).
    pub fn chunk_elements(mut self, elements: u64) -> Self {
        self.chunk_elements = elements;
        self
    }

    /// Calibrated lossy storage: each changed matrix no rule names is stored in the smallest of sparse,
    /// int8, int4, 1-bit and lossless whose relative Frobenius error over the whole tensor stays at or
    /// under `max_rel_error` (lossless, error 0, always qualifies). The choice encodes each such tensor in
    /// every mode first: about five times the CPU of one mode. Overrides [`Self::mode`] for matrices.
    pub fn max_rel_error(mut self, max_rel_error: f64) -> Self {
        self.max_rel_error = Some(max_rel_error);
        self
    }

    /// Worker threads in a pool of this compressor's own (default: rayon's global pool).
    pub fn threads(mut self, threads: usize) -> Self {
        self.threads = Some(threads);
        self
    }

    /// Authenticates archives with HMAC-SHA256 under `key`: encoding appends a MAC (container version 2),
    /// decoding requires and checks one ([`DeltaError::MacKeyNeeded`], [`DeltaError::MacMissing`],
    /// [`DeltaError::MacMismatch`]). Without a key, archives carry no MAC and one that does is refused.
    pub fn mac_key(mut self, key: MacKey) -> Self {
        self.mac_key = Some(key);
        self
    }

    /// Checks the configuration and builds the compressor.
    pub fn build(self) -> Result<ModelDeltaCompressor, DeltaError> {
        let invalid = |reason: String| DeltaError::InvalidConfig { reason };
        if !(self.sparse_keep > 0.0 && self.sparse_keep <= 1.0) {
            return Err(invalid(format!("sparse keep {} is not in (0, 1]", self.sparse_keep)));
        }
        if let Some(e) = self.max_rel_error
            && !(e.is_finite() && e >= 0.0)
        {
            return Err(invalid(format!("maximum relative error {e} is not a finite number >= 0")));
        }
        if !(-7..=22).contains(&self.zstd_level) {
            return Err(invalid(format!("zstd level {} is not in -7..=22", self.zstd_level)));
        }
        if !(64..=format::MAX_CHUNK_ELEMENTS).contains(&self.chunk_elements) {
            return Err(invalid(format!("chunk of {} elements is not in 64..=16Mi", self.chunk_elements)));
        }
        let pool = match self.threads {
            None => None,
            Some(0) => return Err(invalid("zero threads".to_owned())),
            Some(n) => Some(Arc::new(
                rayon::ThreadPoolBuilder::new()
                    .num_threads(n)
                    .thread_name(|i| format!("chitty-delta-{i}"))
                    .build()
                    .map_err(|e| invalid(format!("thread pool: {e}")))?,
            )),
        };
        Ok(ModelDeltaCompressor {
            mode: self.mode,
            rules: self.rules,
            sparse_keep: self.sparse_keep,
            zstd_level: self.zstd_level,
            chunk_elements: self.chunk_elements,
            max_rel_error: self.max_rel_error,
            pool,
            mac_key: self.mac_key,
        })
    }
}

/// A part encoded into its frame.
struct EncodedPart {
    part: PartRef,
    frame: Vec<u8>,
    /// SHA-256 of the reconstructed part (also in the frame), for the MAC.
    sha: [u8; 32],
    /// Error sums of lossy chunks.
    errors: Option<lossy::ErrorSums>,
}

/// Parameters of lossy chunk `chunk` of `t`.
fn lossy_params(t: &CheckedTensor, chunk: u64) -> lossy::LossyParams {
    let (begin, end) = t.chunk_range(chunk);
    lossy::LossyParams {
        method: t.method,
        dtype: t.dtype,
        keep: t.keep,
        scale: t.scale,
        begin,
        end,
        row_len: t.row_len,
    }
}

/// One unit of work: the safetensors header, or one chunk of one tensor.
#[derive(Debug, Clone, Copy)]
enum PartRef {
    Header,
    Chunk { tensor: usize, chunk: u64 },
}

/// Bytes produced for a part: borrowed from the base for references, owned otherwise.
enum PartBytes<'a> {
    Borrowed(&'a [u8]),
    Owned(Vec<u8>),
}

impl PartBytes<'_> {
    fn as_slice(&self) -> &[u8] {
        match self {
            PartBytes::Borrowed(b) => b,
            PartBytes::Owned(v) => v,
        }
    }
}

/// A manifest ready to be written, its tensors checked, and the bytes behind them.
struct Prepared<'a> {
    manifest: Manifest,
    tensors: Vec<CheckedTensor>,
    sources: Sources<'a>,
}

/// What [`ModelDeltaCompressor::estimate_sharded`] expects an archive to take.
#[derive(Debug, Clone, PartialEq)]
pub struct SizeEstimate {
    /// Bytes of the target file.
    pub target_bytes: u64,
    /// Estimated bytes of the archive.
    pub archive_bytes: u64,
    /// Per tensor, in file order.
    pub tensors: Vec<TensorEstimate>,
}

/// One tensor of a [`SizeEstimate`].
#[derive(Debug, Clone, PartialEq)]
pub struct TensorEstimate {
    /// Tensor name.
    pub name: String,
    /// The method the archive would use.
    pub method: Method,
    /// Bytes of the tensor.
    pub original_bytes: u64,
    /// Estimated bytes of its frames.
    pub stored_bytes: u64,
    /// For lossy methods: the relative error measured on the sample.
    pub relative_error: Option<f64>,
}

/// Where the bytes of each tensor of the target live, and the base's.
struct Sources<'a> {
    target: &'a [u8],
    target_data_start: u64,
    /// Target offset (relative to its data section) of each manifest tensor.
    target_begin: Vec<u64>,
    base: BaseFiles<'a>,
}

impl ModelDeltaCompressor {
    /// A builder with the defaults: lossless, zstd level 1, 1 Mi-element chunks, rayon's global pool.
    pub fn builder() -> ModelDeltaCompressorBuilder {
        ModelDeltaCompressorBuilder::default()
    }

    /// What decides the bytes of an archive besides its inputs (not the thread count): a resumed run
    /// reuses parts only when this is unchanged. A MAC key enters as a tag made with it, never itself.
    pub(crate) fn settings_id(&self) -> Result<String, DeltaError> {
        let mac = match &self.mac_key {
            Some(key) => hex::encode(ArchiveMac::new(key, b"chitty-delta settings")?.tag()),
            None => "none".to_owned(),
        };
        Ok(format!(
            "model mode={:?} rules={:?} keep={} level={} chunk={} max_rel_error={:?} mac={mac}",
            self.mode, self.rules, self.sparse_keep, self.zstd_level, self.chunk_elements, self.max_rel_error
        ))
    }

    /// How many parts may be in flight: what bounds memory.
    fn window(&self) -> usize {
        let threads = self.pool.as_ref().map_or_else(rayon::current_num_threads, |p| p.current_num_threads());
        2 * threads + 2
    }

    fn install<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        match &self.pool {
            Some(pool) => pool.install(f),
            None => f(),
        }
    }

    /// The mode the policy gives a tensor of this name: the first matching rule, else lossless for
    /// [`LOSSLESS_BY_DEFAULT`] names, else the default mode.
    pub fn mode_for(&self, name: &str) -> Mode {
        if let Some(rule) = self.rules.iter().find(|r| glob_matches(&r.pattern, name)) {
            return rule.mode;
        }
        if LOSSLESS_BY_DEFAULT.iter().any(|p| glob_matches(p, name)) {
            return Mode::Lossless;
        }
        self.mode
    }

    /// The method for a changed float tensor with a base of the same shape: lossy modes apply to
    /// matrices only (vectors are biases and scales).
    fn method_for(&self, t: &crate::safetensors::TensorInfo) -> Method {
        match self.mode_for(&t.name) {
            mode if mode.is_lossy() && t.shape.len() < 2 => Method::Delta,
            mode => mode.method(),
        }
    }

    /// [`Compressor::encode`](chitty_core::Compressor::encode) with a callback told the number of target bytes done after each part.
    pub fn encode_with_progress(
        &self,
        base: Option<&[u8]>,
        target: &[u8],
        out: &mut dyn Write,
        progress: &mut dyn FnMut(u64),
    ) -> Result<EncodeReport, DeltaError> {
        self.encode_sharded(base.as_slice(), target, out, progress)
    }

    /// Encodes `target` against a base given as the shards of a sharded checkpoint, in the order decoding
    /// will give them: each tensor is matched by name in whichever shard holds it (the first, when several
    /// do). One shard is [`ModelDeltaCompressor::encode_with_progress`]; none, no base.
    pub fn encode_sharded(
        &self,
        base: &[&[u8]],
        target: &[u8],
        out: &mut dyn Write,
        progress: &mut dyn FnMut(u64),
    ) -> Result<EncodeReport, DeltaError> {
        let Prepared { manifest, tensors, sources } = self.prepare(base, target, None)?;
        let target_layout_data_start = sources.target_data_start;
        let preamble = format::write_preamble(&manifest)?;
        out.write_all(&preamble).map_err(|e| DeltaError::io("writing the archive", e))?;
        let mut mac = self.mac_key.as_ref().map(|key| ArchiveMac::new(key, &preamble)).transpose()?;
        let mut report = EncodeReport {
            input_bytes: target.len() as u64,
            output_bytes: preamble.len() as u64,
            parts: Vec::with_capacity(tensors.len() + 1),
        };
        report.parts.push(PartReport {
            name: "safetensors header".to_owned(),
            method: "header+zstd".to_owned(),
            original_bytes: target_layout_data_start,
            stored_bytes: preamble.len() as u64,
            relative_error: None,
        });
        for t in &tensors {
            report.parts.push(PartReport {
                name: t.name.clone(),
                method: t.method.as_str().to_owned(),
                original_bytes: t.byte_len,
                stored_bytes: 0,
                relative_error: None,
            });
        }

        let mut parts = part_refs(&tensors);
        let mut seq = 0u32;
        let mut done = 0u64;
        let mut error_sums = vec![lossy::ErrorSums::default(); tensors.len() + 1];
        run_ordered(
            self.pool.as_deref(),
            self.window(),
            || {
                let next = parts.next().map(|p| (seq, p));
                seq = seq.wrapping_add(1);
                Ok(next)
            },
            |(seq, part)| self.encode_part(&tensors, &sources, seq, part),
            |EncodedPart { part, frame, sha, errors }| {
                out.write_all(&frame).map_err(|e| DeltaError::io("writing the archive", e))?;
                if let Some(mac) = mac.as_mut() {
                    mac.part(&sha);
                }
                report.output_bytes += frame.len() as u64;
                let (slot, raw) = match part {
                    PartRef::Header => (0, sources.target_data_start),
                    PartRef::Chunk { tensor, chunk } => {
                        let t = &tensors[tensor];
                        let (b, e) = t.chunk_range(chunk);
                        (tensor + 1, (e - b) * t.dtype.size_bytes())
                    }
                };
                report.parts[slot].stored_bytes += frame.len() as u64;
                if let Some(e) = errors {
                    error_sums[slot].add(e);
                    report.parts[slot].relative_error = Some(error_sums[slot].relative());
                }
                done += raw;
                progress(done);
                Ok(())
            },
        )?;
        if let Some(mac) = mac {
            out.write_all(&mac.tag()).map_err(|e| DeltaError::io("writing the archive", e))?;
            report.output_bytes += MAC_LEN as u64;
            report.parts[0].stored_bytes += MAC_LEN as u64;
        }
        out.flush().map_err(|e| DeltaError::io("writing the archive", e))?;
        Ok(report)
    }

    /// The manifest of `target` against `base` with every tensor's method chosen, and where each part's
    /// bytes are. With `sample`, a calibrated choice ([`ModelDeltaCompressorBuilder::max_rel_error`])
    /// measures that many chunks of each tensor instead of all.
    fn prepare<'a>(
        &self,
        base: &[&'a [u8]],
        target: &'a [u8],
        sample: Option<usize>,
    ) -> Result<Prepared<'a>, DeltaError> {
        let target_layout = SafetensorsLayout::parse(target)?;
        let base_files = BaseFiles::new(base);
        let base_layouts = base_files.layouts()?;
        let fingerprint = base_files.fingerprint().map_err(|len| DeltaError::Internal {
            reason: format!("a parsed base of {len} bytes has no safetensors header"),
        })?;
        let base_by_name = shards::index_by_name(&base_files, &base_layouts);

        let records: Vec<TensorRecord> = self.install(|| {
            target_layout
                .tensors
                .par_iter()
                .map(|t| -> Result<TensorRecord, DeltaError> {
                    let target_bytes = target_layout.tensor_bytes(target, t);
                    let matched = base_by_name.get(t.name.as_str());
                    let (method, base_offset, base_bytes) = match matched {
                        Some(b) if b.info.dtype == t.dtype => {
                            let offset = b.offset;
                            if b.info.shape == t.shape {
                                if b.bytes == target_bytes {
                                    (Method::Reference, Some(offset), None)
                                } else if t.dtype.is_delta_float() {
                                    (self.choose_method(t, b.bytes, target_bytes, sample)?, Some(offset), None)
                                } else {
                                    (Method::Whole, None, None)
                                }
                            } else if t.dtype.is_delta_float()
                                && !t.shape.is_empty()
                                && b.info.shape.len() == t.shape.len()
                                && b.info.shape[1..] == t.shape[1..]
                            {
                                // Resized along the first axis (a grown vocabulary): the common rows are a
                                // delta, the rest is stored whole.
                                let common = b.info.byte_len().min(t.byte_len());
                                (Method::Delta, Some(offset), Some(common))
                            } else {
                                (Method::Whole, None, None)
                            }
                        }
                        _ => (Method::Whole, None, None),
                    };
                    Ok(TensorRecord {
                        name: t.name.clone(),
                        dtype: t.dtype.as_str().to_owned(),
                        shape: t.shape.clone(),
                        byte_len: t.byte_len(),
                        method,
                        base_offset,
                        base_bytes: base_bytes.filter(|&b| b != t.byte_len()),
                        keep: (method == Method::Sparse).then_some(self.sparse_keep),
                        scale: match (method, matched) {
                            (Method::OneBit, Some(b)) => Some(lossy::mean_abs_delta(t.dtype, b.bytes, target_bytes)),
                            _ => None,
                        },
                    })
                })
                .collect::<Result<Vec<_>, DeltaError>>()
        })?;
        let manifest = Manifest {
            format: FORMAT.to_owned(),
            version: if self.mac_key.is_some() { VERSION_MAC } else { VERSION },
            chunk_elements: self.chunk_elements,
            base: fingerprint,
            target_len: target_layout.file_len,
            header_len: target_layout.data_start,
            tensors: records,
            mac: self.mac_key.as_ref().map(|_| MAC_ALGORITHM.to_owned()),
        };
        let tensors = manifest.check()?;
        let sources = Sources {
            target,
            target_data_start: target_layout.data_start,
            target_begin: target_layout.tensors.iter().map(|t| t.begin).collect(),
            base: base_files,
        };

        Ok(Prepared { manifest, tensors, sources })
    }

    /// The method for a changed float tensor `t` of the same shape as its base: a rule's mode; under a
    /// maximum relative error, the smallest mode within it (matrices no rule names); else
    /// [`Self::method_for`].
    fn choose_method(
        &self,
        t: &crate::safetensors::TensorInfo,
        base: &[u8],
        target: &[u8],
        sample: Option<usize>,
    ) -> Result<Method, DeltaError> {
        let ruled = self.rules.iter().any(|r| glob_matches(&r.pattern, &t.name));
        let Some(limit) = self.max_rel_error.filter(|_| !ruled && t.shape.len() >= 2) else {
            return Ok(self.method_for(t));
        };
        let mut best = (self.trial(Method::Delta, t, base, target, sample)?.0, Method::Delta);
        for method in [Method::Sparse, Method::Int8, Method::Int4, Method::OneBit] {
            let (bytes, error) = self.trial(method, t, base, target, sample)?;
            if error <= limit && bytes < best.0 {
                best = (bytes, method);
            }
        }
        Ok(best.1)
    }

    /// Bytes of the frames and relative error of storing tensor `t` with `method` (the same shape as its
    /// base), measured by encoding its chunks: all of them, or `sample` spread evenly (sizes then scaled
    /// to the whole tensor).
    fn trial(
        &self,
        method: Method,
        t: &crate::safetensors::TensorInfo,
        base: &[u8],
        target: &[u8],
        sample: Option<usize>,
    ) -> Result<(u64, f64), DeltaError> {
        let width = t.dtype.size_bytes() as usize;
        let elements = (target.len() / width) as u64;
        let row_len = format::row_len(&t.shape);
        let chunk_len = format::chunk_len(self.chunk_elements, row_len);
        let chunks = elements.div_ceil(chunk_len).max(1);
        let picked: Vec<u64> = match sample {
            Some(k) if (k as u64) < chunks => (0..k as u64).map(|i| i * chunks / k as u64).collect(),
            _ => (0..chunks).collect(),
        };
        let scale = if method == Method::OneBit { lossy::mean_abs_delta(t.dtype, base, target) } else { 0.0 };
        let measured = picked
            .par_iter()
            .map(|&k| -> Result<(u64, u64, lossy::ErrorSums), DeltaError> {
                let (begin, end) = (k * chunk_len, ((k + 1) * chunk_len).min(elements));
                let range = begin as usize * width..end as usize * width;
                let (b, tg) = (&base[range.clone()], &target[range]);
                let mut payload = Vec::new();
                let sums = if method == Method::Delta {
                    encode_delta(width, b, tg, self.zstd_level, &mut payload)?;
                    lossy::ErrorSums::default()
                } else {
                    let params = lossy::LossyParams {
                        method,
                        dtype: t.dtype,
                        keep: self.sparse_keep,
                        scale,
                        begin,
                        end,
                        row_len,
                    };
                    let mut recon = vec![0u8; tg.len()];
                    lossy::encode(&params, b, tg, self.zstd_level, &mut payload, &mut recon)?
                };
                Ok(((payload.len() + format::FRAME_HEAD_LEN + 32) as u64, end - begin, sums))
            })
            .collect::<Result<Vec<_>, DeltaError>>()?;
        let mut sums = lossy::ErrorSums::default();
        let (mut bytes, mut sampled) = (0u64, 0u64);
        for (b, n, s) in measured {
            bytes += b;
            sampled += n;
            sums.add(s);
        }
        let scaled =
            if sampled == 0 { bytes } else { (bytes as f64 * elements as f64 / sampled as f64).round() as u64 };
        Ok((scaled, sums.relative()))
    }

    /// Estimates the archive [`ModelDeltaCompressor::encode_sharded`] would write, from `sample_chunks`
    /// chunks of each tensor (spread evenly; all of a tensor with no more), each encoded as the archive
    /// would encode it; the header and manifest are exact. What `chitty-delta analyze` reports per mode.
    pub fn estimate_sharded(
        &self,
        base: &[&[u8]],
        target: &[u8],
        sample_chunks: usize,
    ) -> Result<SizeEstimate, DeltaError> {
        let sample = sample_chunks.max(1);
        self.install(|| {
            let Prepared { manifest, tensors, sources } = self.prepare(base, target, Some(sample))?;
            let preamble = format::write_preamble(&manifest)?.len() as u64;
            let header = self.encode_part(&tensors, &sources, 0, PartRef::Header)?.frame.len() as u64;
            let estimates = tensors
                .par_iter()
                .enumerate()
                .map(|(i, t)| -> Result<TensorEstimate, DeltaError> {
                    let picked: Vec<u64> = if (sample as u64) < t.chunks {
                        (0..sample as u64).map(|j| j * t.chunks / sample as u64).collect()
                    } else {
                        (0..t.chunks).collect()
                    };
                    let (mut bytes, mut elements, mut sums) = (0u64, 0u64, lossy::ErrorSums::default());
                    for &k in &picked {
                        let part = self.encode_part(&tensors, &sources, 0, PartRef::Chunk { tensor: i, chunk: k })?;
                        let (b, e) = t.chunk_range(k);
                        bytes += part.frame.len() as u64;
                        elements += e - b;
                        if let Some(s) = part.errors {
                            sums.add(s);
                        }
                    }
                    let stored = if elements == 0 {
                        bytes
                    } else {
                        (bytes as f64 * t.elements() as f64 / elements as f64).round() as u64
                    };
                    Ok(TensorEstimate {
                        name: t.name.clone(),
                        method: t.method,
                        original_bytes: t.byte_len,
                        stored_bytes: stored,
                        relative_error: t.method.is_lossy().then(|| sums.relative()),
                    })
                })
                .collect::<Result<Vec<_>, DeltaError>>()?;
            let mac = if manifest.mac.is_some() { MAC_LEN as u64 } else { 0 };
            Ok(SizeEstimate {
                target_bytes: manifest.target_len,
                archive_bytes: preamble + header + mac + estimates.iter().map(|t| t.stored_bytes).sum::<u64>(),
                tensors: estimates,
            })
        })
    }

    fn encode_part(
        &self,
        tensors: &[CheckedTensor],
        src: &Sources<'_>,
        seq: u32,
        part: PartRef,
    ) -> Result<EncodedPart, DeltaError> {
        let mut payload = Vec::new();
        let mut errors = None;
        let sha = match part {
            PartRef::Header => {
                let header = &src.target[..src.target_data_start as usize];
                encode_section(header, self.zstd_level, &mut payload)?;
                Sha256::digest(header)
            }
            PartRef::Chunk { tensor, chunk } => {
                let t = &tensors[tensor];
                let width = t.dtype.size_bytes() as usize;
                let (b, e) = t.chunk_range(chunk);
                let start = (src.target_data_start + src.target_begin[tensor]) as usize;
                let target = &src.target[start + b as usize * width..start + e as usize * width];
                // Elements of this chunk that have a base counterpart.
                let with_base = t.base_elements.clamp(b, e) - b;
                let base = match t.base_offset {
                    Some(offset) => base_range(&src.base, offset, b, with_base, width, &t.part_name(chunk))?,
                    None => &[][..],
                };
                match t.method {
                    Method::Reference => Sha256::digest(target),
                    Method::Delta | Method::Whole => {
                        let split = base.len();
                        if split > 0 {
                            encode_delta(width, base, &target[..split], self.zstd_level, &mut payload)?;
                        }
                        if split < target.len() {
                            encode_whole(t.dtype, &target[split..], self.zstd_level, &mut payload)?;
                        }
                        Sha256::digest(target)
                    }
                    Method::Sparse | Method::Int8 | Method::Int4 | Method::OneBit => {
                        let params = lossy_params(t, chunk);
                        let mut recon = vec![0u8; target.len()];
                        errors = Some(lossy::encode(&params, base, target, self.zstd_level, &mut payload, &mut recon)?);
                        Sha256::digest(&recon)
                    }
                }
            }
        };
        Ok(EncodedPart { part, frame: format::frame_bytes(seq, &sha, &payload)?, sha: sha.into(), errors })
    }

    /// [`Compressor::decode`](chitty_core::Compressor::decode) with a callback told the number of bytes written after each part.
    pub fn decode_with_progress(
        &self,
        base: Option<&[u8]>,
        archive: &mut dyn Read,
        out: &mut dyn Write,
        progress: &mut dyn FnMut(u64),
    ) -> Result<DecodeReport, DeltaError> {
        self.decode_sharded(base.as_slice(), archive, out, progress)
    }

    /// Decodes an archive made by [`ModelDeltaCompressor::encode_sharded`] against the same shards, in
    /// the same order; a different set (another count, header or length) is [`DeltaError::WrongBase`].
    pub fn decode_sharded(
        &self,
        base: &[&[u8]],
        archive: &mut dyn Read,
        out: &mut dyn Write,
        progress: &mut dyn FnMut(u64),
    ) -> Result<DecodeReport, DeltaError> {
        let mut input = CountingReader { inner: archive, count: 0 };
        let format::Preamble { manifest, bytes: preamble } = format::read_preamble(&mut input)?;
        let tensors = manifest.check()?;
        // Decided before anything is written: a key always means an authenticated output.
        let mut mac = match (&self.mac_key, &manifest.mac) {
            (Some(key), Some(_)) => Some(ArchiveMac::new(key, &preamble)?),
            (Some(_), None) => return Err(DeltaError::MacMissing),
            (None, Some(_)) => return Err(DeltaError::MacKeyNeeded),
            (None, None) => None,
        };
        let base = check_base(manifest.base.as_ref(), base)?;
        let expected_base = manifest.base.as_ref().map(ToString::to_string).unwrap_or_default();

        let mut parts = part_refs(&tensors);
        let mut seq = 0u32;
        let mut report = DecodeReport::default();
        let header_len = manifest.header_len;
        let buffers = BufferPool::default();
        run_ordered(
            self.pool.as_deref(),
            self.window(),
            || {
                let Some(part) = parts.next() else { return Ok(None) };
                let (name, raw_len) = part_name_and_len(&tensors, part, header_len);
                let frame = format::read_frame(&mut input, seq, max_payload(raw_len), &name)?;
                if let Some(mac) = mac.as_mut() {
                    mac.part(frame.part_sha());
                }
                seq = seq.wrapping_add(1);
                Ok(Some((part, name, frame)))
            },
            |(part, name, frame)| {
                decode_part(&buffers, &tensors, &base, header_len, part, &name, &frame, &expected_base)
            },
            |bytes| {
                out.write_all(bytes.as_slice()).map_err(|e| DeltaError::io("writing the output", e))?;
                report.output_bytes += bytes.as_slice().len() as u64;
                report.parts_verified += 1;
                progress(report.output_bytes);
                if let PartBytes::Owned(buf) = bytes {
                    buffers.give(buf);
                }
                Ok(())
            },
        )?;
        if let Some(mac) = mac {
            mac.verify(&format::read_mac(&mut input)?)?;
        }
        format::expect_end(&mut input)?;
        out.flush().map_err(|e| DeltaError::io("writing the output", e))?;
        report.input_bytes = input.count;
        Ok(report)
    }
}

/// What an archive holds, as [`inspect`] reads it without the base.
#[derive(Debug, Clone, PartialEq)]
pub struct ArchiveSummary {
    /// Format name.
    pub format: String,
    /// Container version.
    pub version: u32,
    /// The base the archive needs, described, or `None` when it needs none.
    pub base: Option<String>,
    /// Bytes of the reconstructed file.
    pub target_bytes: u64,
    /// Bytes of the archive.
    pub archive_bytes: u64,
    /// Elements per chunk.
    pub chunk_elements: u64,
    /// The MAC the archive ends with (`hmac-sha256`), or `None`; [`inspect`] reads it but, without the
    /// key, cannot check it.
    pub mac: Option<String>,
    /// Per tensor, in file order.
    pub tensors: Vec<TensorSummary>,
}

/// How one tensor is stored in an archive.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorSummary {
    /// Tensor name.
    pub name: String,
    /// Its dtype.
    pub dtype: String,
    /// Its shape.
    pub shape: Vec<u64>,
    /// How it is stored.
    pub method: Method,
    /// Bytes of the tensor.
    pub original_bytes: u64,
    /// Bytes of its frames.
    pub stored_bytes: u64,
    /// For lossy methods: relative Frobenius norm of the delta's reconstruction error.
    pub relative_error: Option<f64>,
}

/// Reads an archive's manifest and frames, checking each frame's own checksum (no base needed, nothing
/// decoded), and sums up what each tensor takes.
pub fn inspect(archive: &mut dyn Read) -> Result<ArchiveSummary, DeltaError> {
    let mut input = CountingReader { inner: archive, count: 0 };
    let manifest = format::read_preamble(&mut input)?.manifest;
    let tensors = manifest.check()?;
    let mut summaries: Vec<TensorSummary> = manifest
        .tensors
        .iter()
        .map(|t| TensorSummary {
            name: t.name.clone(),
            dtype: t.dtype.clone(),
            shape: t.shape.clone(),
            method: t.method,
            original_bytes: t.byte_len,
            stored_bytes: 0,
            relative_error: None,
        })
        .collect();
    let mut sums = vec![lossy::ErrorSums::default(); tensors.len()];
    for (seq, part) in part_refs(&tensors).enumerate() {
        let (name, raw_len) = part_name_and_len(&tensors, part, manifest.header_len);
        let seq = u32::try_from(seq).map_err(|_| DeltaError::corrupt(&name, "too many parts"))?;
        let frame = format::read_frame(&mut input, seq, max_payload(raw_len), &name)?;
        if !frame.is_intact() {
            return Err(DeltaError::corrupt(&name, "frame checksum mismatch"));
        }
        if let PartRef::Chunk { tensor, .. } = part {
            summaries[tensor].stored_bytes += (format::FRAME_HEAD_LEN + frame.payload.len() + 32) as u64;
            if tensors[tensor].method.is_lossy() {
                sums[tensor].add(lossy::read_sums(&mut frame.payload.as_slice(), &name)?);
                summaries[tensor].relative_error = Some(sums[tensor].relative());
            }
        }
    }
    if manifest.mac.is_some() {
        format::read_mac(&mut input)?;
    }
    format::expect_end(&mut input)?;
    Ok(ArchiveSummary {
        format: manifest.format,
        version: manifest.version,
        base: manifest.base.as_ref().map(ToString::to_string),
        target_bytes: manifest.target_len,
        archive_bytes: input.count,
        chunk_elements: manifest.chunk_elements,
        mac: manifest.mac,
        tensors: summaries,
    })
}

fn part_refs(tensors: &[CheckedTensor]) -> impl Iterator<Item = PartRef> + '_ {
    std::iter::once(PartRef::Header).chain(
        tensors
            .iter()
            .enumerate()
            .flat_map(|(i, t)| (0..t.chunks).map(move |chunk| PartRef::Chunk { tensor: i, chunk })),
    )
}

fn part_name_and_len(tensors: &[CheckedTensor], part: PartRef, header_len: u64) -> (String, u64) {
    match part {
        PartRef::Header => ("safetensors header".to_owned(), header_len),
        PartRef::Chunk { tensor, chunk } => {
            let t = &tensors[tensor];
            let (b, e) = t.chunk_range(chunk);
            (t.part_name(chunk), (e - b) * t.dtype.size_bytes())
        }
    }
}

/// The largest payload a part of `raw_len` bytes can have: what a reader may allocate for it.
fn max_payload(raw_len: u64) -> usize {
    usize::try_from(raw_len.saturating_mul(4).saturating_add(4096)).unwrap_or(usize::MAX)
}

/// Checks the base given against the archive's fingerprint before anything is written.
fn check_base<'a>(fingerprint: Option<&BaseFingerprint>, base: &[&'a [u8]]) -> Result<BaseFiles<'a>, DeltaError> {
    let Some(fp) = fingerprint else { return Ok(BaseFiles::new(&[])) };
    let files = BaseFiles::new(base);
    if files.is_empty() {
        return Err(DeltaError::MissingBase);
    }
    let found = match files.fingerprint() {
        Ok(Some(found)) => found,
        Ok(None) => return Err(DeltaError::MissingBase),
        Err(len) => {
            return Err(DeltaError::WrongBase {
                expected: fp.to_string(),
                found: format!("a {len}-byte file that is not safetensors"),
            });
        }
    };
    if &found != fp {
        return Err(DeltaError::WrongBase { expected: fp.to_string(), found: found.to_string() });
    }
    Ok(files)
}

/// The base bytes of `with_base` elements of a tensor whose base starts at `offset`, from element `begin`.
fn base_range<'a>(
    base: &BaseFiles<'a>,
    offset: u64,
    begin: u64,
    with_base: u64,
    width: usize,
    part: &str,
) -> Result<&'a [u8], DeltaError> {
    let from = offset.checked_add(begin * width as u64);
    let len = usize::try_from(with_base).ok().and_then(|n| n.checked_mul(width));
    from.zip(len)
        .and_then(|(from, len)| base.get(from, len))
        .ok_or_else(|| DeltaError::corrupt(part, "base range is not within one base file"))
}

#[allow(clippy::too_many_arguments)]
fn decode_part<'a>(
    buffers: &BufferPool,
    tensors: &[CheckedTensor],
    base: &BaseFiles<'a>,
    header_len: u64,
    part: PartRef,
    name: &str,
    frame: &RawFrame,
    expected_base: &str,
) -> Result<PartBytes<'a>, DeltaError> {
    if !frame.is_intact() {
        return Err(DeltaError::corrupt(name, "frame checksum mismatch"));
    }
    let mut payload = frame.payload.as_slice();
    let (bytes, uses_base) = match part {
        PartRef::Header => {
            let mut header = Vec::new();
            decode_section(&mut payload, header_len as usize, &mut header, name)?;
            if header.len() as u64 != header_len {
                return Err(DeltaError::corrupt(name, "header length differs from the manifest"));
            }
            (PartBytes::Owned(header), false)
        }
        PartRef::Chunk { tensor, chunk } => {
            let t = &tensors[tensor];
            let width = t.dtype.size_bytes() as usize;
            let (b, e) = t.chunk_range(chunk);
            let n = (e - b) as usize;
            let with_base = (t.base_elements.clamp(b, e) - b) as usize;
            let base_chunk = match t.base_offset {
                Some(offset) => base_range(base, offset, b, with_base as u64, width, name)?,
                None => &[][..],
            };
            let bytes = match t.method {
                Method::Reference => PartBytes::Borrowed(base_chunk),
                Method::Delta | Method::Whole => {
                    let mut out = buffers.take(n * width);
                    let split = base_chunk.len();
                    if split > 0 {
                        decode_delta(width, base_chunk, &mut payload, &mut out[..split], name)?;
                    }
                    if split < out.len() {
                        decode_whole(t.dtype, &mut payload, &mut out[split..], name)?;
                    }
                    PartBytes::Owned(out)
                }
                Method::Sparse | Method::Int8 | Method::Int4 | Method::OneBit => {
                    let mut out = buffers.take(n * width);
                    lossy::decode(&lossy_params(t, chunk), base_chunk, &mut payload, &mut out, name)?;
                    PartBytes::Owned(out)
                }
            };
            (bytes, t.method.uses_base())
        }
    };
    if !payload.is_empty() {
        return Err(DeltaError::corrupt(name, format!("{} unexpected bytes after the payload", payload.len())));
    }
    if Sha256::digest(bytes.as_slice())[..] != *frame.part_sha() {
        // The frame is intact, so the archive holds what the encoder wrote: the base must differ.
        return Err(if uses_base {
            DeltaError::WrongBase {
                expected: expected_base.to_owned(),
                found: format!("a base whose {name} differs from the one the archive was made against"),
            }
        } else {
            DeltaError::corrupt(name, "reconstructed bytes do not match their checksum")
        });
    }
    Ok(bytes)
}

/// Appends the lossless delta of `target` against `base` (same length) to `payload`.
///
/// 16-bit floats: a code-width byte, then the packed codes and the two escape planes (see
/// [`transform::pack_codes`]); 32-bit floats: the two low byte planes, then the high 16 bits the same way
/// as 16-bit numbers.
fn encode_delta(width: usize, base: &[u8], target: &[u8], level: i32, payload: &mut Vec<u8>) -> Result<(), DeltaError> {
    let n = target.len() / width;
    if width == 2 {
        SCRATCH.with_borrow_mut(|s| -> Result<(), DeltaError> {
            let k = packed16::choose_code_bits16(base, target);
            s.packed.clear();
            s.esc_lo.clear();
            s.esc_hi.clear();
            packed16::pack16(k, base, target, &mut s.packed, &mut s.esc_lo, &mut s.esc_hi);
            payload.push(k);
            for plane in [&s.packed, &s.esc_lo, &s.esc_hi] {
                encode_literal_section(plane, level, payload)?;
            }
            Ok(())
        })?;
    } else {
        let (mut p0, mut p1) = (vec![0u8; n], vec![0u8; n]);
        SCRATCH.with_borrow_mut(|s| -> Result<(), DeltaError> {
            s.z.clear();
            s.z.resize(n, 0);
            transform::diff32_split(base, target, &mut p0, &mut p1, &mut s.z);
            encode_literal_section(&p0, level, payload)?;
            encode_literal_section(&p1, level, payload)?;
            encode_codes(s, level, payload)
        })?;
    }
    Ok(())
}

/// Appends the code width, the packed codes of `s.z` and the two escape planes.
fn encode_codes(s: &mut Scratch, level: i32, payload: &mut Vec<u8>) -> Result<(), DeltaError> {
    let k = transform::choose_code_bits(&s.z);
    s.esc_lo.clear();
    s.esc_hi.clear();
    transform::pack_codes(&s.z, k, &mut s.packed, &mut s.esc_lo, &mut s.esc_hi);
    payload.push(k);
    for plane in [&s.packed, &s.esc_lo, &s.esc_hi] {
        encode_literal_section(plane, level, payload)?;
    }
    Ok(())
}

/// Reads what [`encode_codes`] wrote into `s.z` (`n` numbers).
fn decode_codes(s: &mut Scratch, payload: &mut &[u8], n: usize, part: &str) -> Result<(), DeltaError> {
    let k = take(payload, 1, part)?[0];
    if !transform::CODE_BITS.contains(&k) {
        return Err(DeltaError::corrupt(part, format!("code width {k}")));
    }
    read_plane_into(payload, n.div_ceil(8 / usize::from(k)), &mut s.packed, part)?;
    s.z.clear();
    s.z.resize(n, 0);
    let escapes = transform::unpack_codes(&s.packed, k, &mut s.z);
    read_plane_into(payload, escapes, &mut s.esc_lo, part)?;
    read_plane_into(payload, escapes, &mut s.esc_hi, part)?;
    transform::apply_escapes(&mut s.z, k, &s.esc_lo, &s.esc_hi);
    Ok(())
}

/// Inverse of [`encode_delta`], writing into `out` (as long as `base`).
fn decode_delta(width: usize, base: &[u8], payload: &mut &[u8], out: &mut [u8], part: &str) -> Result<(), DeltaError> {
    let n = out.len() / width;
    SCRATCH.with_borrow_mut(|s| -> Result<(), DeltaError> {
        if width == 2 {
            decode_codes16(s, base, payload, out, part)?;
        } else {
            let mut p0 = Vec::new();
            let mut p1 = Vec::new();
            read_plane_into(payload, n, &mut p0, part)?;
            read_plane_into(payload, n, &mut p1, part)?;
            decode_codes(s, payload, n, part)?;
            transform::undiff32_split(base, &p0, &p1, &s.z, out);
        }
        Ok(())
    })
}

/// Reads the code width, codes and escapes of a 16-bit delta and rebuilds `out` from them and `base`.
fn decode_codes16(
    s: &mut Scratch,
    base: &[u8],
    payload: &mut &[u8],
    out: &mut [u8],
    part: &str,
) -> Result<(), DeltaError> {
    let n = out.len() / 2;
    let k = take(payload, 1, part)?[0];
    if !transform::CODE_BITS.contains(&k) {
        return Err(DeltaError::corrupt(part, format!("code width {k}")));
    }
    read_plane_into(payload, n.div_ceil(8 / usize::from(k)), &mut s.packed, part)?;
    // At most one escape per element; the codes say how many there are, checked below.
    s.esc_lo.clear();
    decode_section(payload, n, &mut s.esc_lo, part)?;
    read_plane_into(payload, s.esc_lo.len(), &mut s.esc_hi, part)?;
    let escapes = packed16::unpack16(k, base, &s.packed, &s.esc_lo, &s.esc_hi, out);
    if escapes != s.esc_lo.len() {
        return Err(DeltaError::corrupt(part, format!("{escapes} escape codes but {} escapes", s.esc_lo.len())));
    }
    Ok(())
}

/// Appends `target` stored whole: floats as exponent / sign-mantissa byte planes, others as bytes.
fn encode_whole(dtype: Dtype, target: &[u8], level: i32, payload: &mut Vec<u8>) -> Result<(), DeltaError> {
    let width = if dtype.is_delta_float() { dtype.size_bytes() as usize } else { 1 };
    let mut planes = vec![vec![0u8; target.len() / width]; width];
    transform::rotate_split(width, target, &mut planes);
    for plane in &planes {
        encode_section(plane, level, payload)?;
    }
    Ok(())
}

/// Inverse of [`encode_whole`].
fn decode_whole(dtype: Dtype, payload: &mut &[u8], out: &mut [u8], part: &str) -> Result<(), DeltaError> {
    let width = if dtype.is_delta_float() { dtype.size_bytes() as usize } else { 1 };
    let planes = read_planes(payload, width, out.len() / width, part)?;
    let refs: Vec<&[u8]> = planes.iter().map(Vec::as_slice).collect();
    transform::rotate_join(width, &refs, out);
    Ok(())
}

/// Per-thread buffers reused from chunk to chunk: fresh multi-MB allocations cost page faults.
#[derive(Default)]
struct Scratch {
    z: Vec<u16>,
    packed: Vec<u8>,
    esc_lo: Vec<u8>,
    esc_hi: Vec<u8>,
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::new(Scratch::default());
}

/// Output buffers handed from workers to the writer and back.
#[derive(Default)]
struct BufferPool(std::sync::Mutex<Vec<Vec<u8>>>);

impl BufferPool {
    /// A buffer of `len` bytes, reusing a returned one when there is one. Its contents are stale: every
    /// decoder overwrites all of it (and the part's SHA-256 would catch one that did not).
    fn take(&self, len: usize) -> Vec<u8> {
        let mut buf = self.0.lock().ok().and_then(|mut v| v.pop()).unwrap_or_default();
        buf.truncate(len);
        buf.resize(len, 0);
        buf
    }

    fn give(&self, buf: Vec<u8>) {
        if let Ok(mut v) = self.0.lock() {
            v.push(buf);
        }
    }
}

fn read_plane_into(payload: &mut &[u8], len: usize, plane: &mut Vec<u8>, part: &str) -> Result<(), DeltaError> {
    plane.clear();
    decode_section(payload, len, plane, part)?;
    if plane.len() != len {
        return Err(DeltaError::corrupt(part, format!("plane of {} bytes, expected {len}", plane.len())));
    }
    Ok(())
}

fn read_planes(payload: &mut &[u8], count: usize, len: usize, part: &str) -> Result<Vec<Vec<u8>>, DeltaError> {
    (0..count)
        .map(|_| {
            let mut plane = Vec::new();
            decode_section(payload, len, &mut plane, part)?;
            if plane.len() != len {
                return Err(DeltaError::corrupt(part, format!("plane of {} bytes, expected {len}", plane.len())));
            }
            Ok(plane)
        })
        .collect()
}

/// A reader that counts the bytes read through it (an archive's size, for the reports).
pub(crate) struct CountingReader<'a> {
    pub(crate) inner: &'a mut dyn Read,
    pub(crate) count: u64,
}

impl Read for CountingReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        Ok(n)
    }
}

delta_codec_impls!(ModelDeltaCompressor, FORMAT);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_like_shells() {
        assert!(glob_matches("*", "anything"));
        assert!(glob_matches("*.mlp.*", "model.layers.0.mlp.up_proj.weight"));
        assert!(glob_matches("model.embed*", "model.embed_tokens.weight"));
        assert!(!glob_matches("*.mlp.*", "model.layers.0.self_attn.q_proj.weight"));
        assert!(glob_matches("a*b*c", "aXXbYYc"));
        assert!(!glob_matches("a*b*c", "aXXbYY"));
        assert!(glob_matches("", ""));
        assert!(!glob_matches("", "x"));
    }

    #[test]
    fn builder_refuses_out_of_range_settings() {
        assert!(ModelDeltaCompressor::builder().zstd_level(30).build().is_err());
        assert!(ModelDeltaCompressor::builder().chunk_elements(1).build().is_err());
        assert!(ModelDeltaCompressor::builder().threads(0).build().is_err());
        assert!(ModelDeltaCompressor::builder().threads(1).build().is_ok());
    }
}
