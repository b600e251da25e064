//! Realistic base / fine-tune pairs of safetensors files, deterministic from a seed.
//!
//! The layout is a small Llama-style decoder: embeddings, per layer four attention projections, three MLP
//! matrices and two norms, a final norm, an LM head and an integer buffer. The fine-tune, like a real one:
//! - moves most float tensors by small roughly Gaussian updates, computed in f32 and rounded to the
//!   dtype, with a standard deviation of `delta_scale` (default 1e-3) times the tensor's weight scale,
//!   so that most BF16 exponents stay unchanged and many elements do not change at all;
//! - leaves the first `frozen_layers` layers and the integer buffer bit-identical;
//! - resizes the embedding by `added_vocab` rows (new rows near the mean embedding);
//! - adds a new classification head `score.weight`.
//!
//! Sizes go from a few KB ([`ModelPairSpec::tiny`]) to GBs ([`ModelPairSpec::with_target_bytes`]);
//! [`write_pair`] streams to files with bounded memory.
//!
//! ```
//! use chitty_testkit::model_pairs::{FloatDtype, ModelPairSpec, generate_pair};
//!
//! let pair = generate_pair(&ModelPairSpec::tiny(42).dtype(FloatDtype::F16));
//! assert_ne!(pair.base, pair.target);
//! assert_eq!(pair, generate_pair(&ModelPairSpec::tiny(42).dtype(FloatDtype::F16)));
//! ```

use std::collections::BTreeMap;
use std::io::{self, BufWriter, Write};
use std::path::Path;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// Float dtype of the generated weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FloatDtype {
    /// bfloat16.
    BF16,
    /// IEEE half.
    F16,
    /// IEEE single.
    F32,
}

impl FloatDtype {
    /// The safetensors dtype string.
    pub fn as_str(self) -> &'static str {
        match self {
            FloatDtype::BF16 => "BF16",
            FloatDtype::F16 => "F16",
            FloatDtype::F32 => "F32",
        }
    }

    /// Bytes per element.
    pub fn size_bytes(self) -> usize {
        match self {
            FloatDtype::BF16 | FloatDtype::F16 => 2,
            FloatDtype::F32 => 4,
        }
    }

    /// Rounds `v` to this dtype and appends its little-endian bytes.
    fn push(self, v: f32, out: &mut Vec<u8>) {
        match self {
            FloatDtype::BF16 => out.extend_from_slice(&half::bf16::from_f32(v).to_le_bytes()),
            FloatDtype::F16 => out.extend_from_slice(&half::f16::from_f32(v).to_le_bytes()),
            FloatDtype::F32 => out.extend_from_slice(&v.to_le_bytes()),
        }
    }

    /// `v` rounded to this dtype, back as f32.
    fn round(self, v: f32) -> f32 {
        match self {
            FloatDtype::BF16 => half::bf16::from_f32(v).to_f32(),
            FloatDtype::F16 => half::f16::from_f32(v).to_f32(),
            FloatDtype::F32 => v,
        }
    }
}

/// What to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelPairSpec {
    /// Dtype of every float tensor.
    pub dtype: FloatDtype,
    /// Seed: the same spec always gives the same bytes.
    pub seed: u64,
    /// Hidden size.
    pub hidden: usize,
    /// MLP intermediate size.
    pub intermediate: usize,
    /// Decoder layers.
    pub layers: usize,
    /// Vocabulary of the base.
    pub vocab: usize,
    /// Rows the fine-tune appends to the embedding.
    pub added_vocab: usize,
    /// Rows of the fine-tune's new classification head.
    pub head_labels: usize,
    /// Leading layers the fine-tune leaves unchanged.
    pub frozen_layers: usize,
    /// Standard deviation of the update relative to the tensor's weight scale.
    pub delta_scale: f32,
}

impl ModelPairSpec {
    /// About 18 KB per file (BF16): for suites that decode thousands of times.
    pub fn tiny(seed: u64) -> Self {
        ModelPairSpec {
            dtype: FloatDtype::BF16,
            seed,
            hidden: 16,
            intermediate: 40,
            layers: 2,
            vocab: 48,
            added_vocab: 8,
            head_labels: 4,
            frozen_layers: 1,
            delta_scale: 1e-3,
        }
    }

    /// About 1.5 MB per file (BF16): for integration tests.
    pub fn small(seed: u64) -> Self {
        ModelPairSpec {
            hidden: 128,
            intermediate: 344,
            layers: 3,
            vocab: 512,
            added_vocab: 16,
            head_labels: 8,
            ..Self::tiny(seed)
        }
    }

    /// A model of about `bytes` bytes per file in `dtype`: for benches (hidden size grows to 2048).
    pub fn with_target_bytes(dtype: FloatDtype, bytes: u64, seed: u64) -> Self {
        let params = bytes / dtype.size_bytes() as u64;
        let mut hidden = 64u64;
        for h in [128u64, 256, 512, 1024, 2048] {
            let vocab = (16 * h).min(32_000);
            if 2 * vocab * h + 12 * h * h * 4 <= params {
                hidden = h;
            }
        }
        let vocab = (16 * hidden).min(32_000);
        let intermediate = hidden * 11 / 4;
        let per_layer = 4 * hidden * hidden + 3 * hidden * intermediate + 2 * hidden;
        let layers = (params.saturating_sub(2 * vocab * hidden) / per_layer).max(1);
        ModelPairSpec {
            dtype,
            hidden: hidden as usize,
            intermediate: intermediate as usize,
            layers: layers as usize,
            vocab: vocab as usize,
            added_vocab: 64,
            head_labels: 16,
            frozen_layers: 1,
            ..Self::tiny(seed)
        }
    }

    /// The same spec in another dtype.
    pub fn dtype(mut self, dtype: FloatDtype) -> Self {
        self.dtype = dtype;
        self
    }

    /// The same spec with another update scale.
    pub fn delta_scale(mut self, scale: f32) -> Self {
        self.delta_scale = scale;
        self
    }

    fn plan(&self) -> Vec<PlannedTensor> {
        let (h, i) = (self.hidden, self.intermediate);
        let mut plan = vec![PlannedTensor::float(
            "model.embed_tokens.weight",
            [self.vocab, h],
            0.02,
            Role::Resized { added_rows: self.added_vocab },
        )];
        for layer in 0..self.layers {
            let role = if layer < self.frozen_layers { Role::Frozen } else { Role::FineTuned };
            let p = format!("model.layers.{layer}");
            plan.push(PlannedTensor::norm(format!("{p}.input_layernorm.weight"), h, role));
            for proj in ["q_proj", "k_proj", "v_proj", "o_proj"] {
                plan.push(PlannedTensor::float(format!("{p}.self_attn.{proj}.weight"), [h, h], 0.02, role));
            }
            plan.push(PlannedTensor::float(format!("{p}.mlp.gate_proj.weight"), [i, h], 0.02, role));
            plan.push(PlannedTensor::float(format!("{p}.mlp.up_proj.weight"), [i, h], 0.02, role));
            plan.push(PlannedTensor::float(format!("{p}.mlp.down_proj.weight"), [h, i], 0.02, role));
            plan.push(PlannedTensor::norm(format!("{p}.post_attention_layernorm.weight"), h, role));
        }
        plan.push(PlannedTensor::norm("model.norm.weight".to_owned(), h, Role::FineTuned));
        plan.push(PlannedTensor::float("lm_head.weight", [self.vocab, h], 0.02, Role::FineTuned));
        plan.push(PlannedTensor {
            name: "model.position_ids".to_owned(),
            rows: 1,
            cols: 64,
            kind: Kind::PositionIds,
            role: Role::Frozen,
        });
        plan.push(PlannedTensor::float("score.weight", [self.head_labels, h], 0.02, Role::New));
        plan
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Role {
    FineTuned,
    Frozen,
    Resized { added_rows: usize },
    New,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    /// Gaussian around `mean` with standard deviation `std`.
    Float { mean: f32, std: f32 },
    /// I64 positions 0..cols.
    PositionIds,
}

#[derive(Debug, Clone)]
struct PlannedTensor {
    name: String,
    rows: usize,
    cols: usize,
    kind: Kind,
    role: Role,
}

impl PlannedTensor {
    fn float(name: impl Into<String>, [rows, cols]: [usize; 2], std: f32, role: Role) -> Self {
        PlannedTensor { name: name.into(), rows, cols, kind: Kind::Float { mean: 0.0, std }, role }
    }

    fn norm(name: String, len: usize, role: Role) -> Self {
        PlannedTensor { name, rows: 1, cols: len, kind: Kind::Float { mean: 1.0, std: 0.05 }, role }
    }

    fn rows_in(&self, target: bool) -> Option<usize> {
        match (self.role, target) {
            (Role::New, false) => None,
            (Role::Resized { added_rows }, true) => Some(self.rows + added_rows),
            _ => Some(self.rows),
        }
    }

    fn shape(&self, rows: usize) -> Vec<usize> {
        if self.rows == 1 && !matches!(self.role, Role::Resized { .. }) && self.kind != Kind::PositionIds {
            vec![self.cols]
        } else {
            vec![rows, self.cols]
        }
    }

    fn elem_size(&self, dtype: FloatDtype) -> usize {
        match self.kind {
            Kind::Float { .. } => dtype.size_bytes(),
            Kind::PositionIds => 8,
        }
    }
}

/// A generated pair, in memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelPair {
    /// The base model file.
    pub base: Vec<u8>,
    /// The fine-tuned model file.
    pub target: Vec<u8>,
}

/// Sizes of a written pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PairSizes {
    /// Bytes of the base file.
    pub base_bytes: u64,
    /// Bytes of the target file.
    pub target_bytes: u64,
}

/// Generates a pair in memory (use [`write_pair`] for big ones).
pub fn generate_pair(spec: &ModelPairSpec) -> ModelPair {
    let (mut base, mut target) = (Vec::new(), Vec::new());
    // Writing to a Vec cannot fail.
    let _ = write_pair_to(spec, &mut base, &mut target);
    ModelPair { base, target }
}

/// Streams a pair to two files, holding at most one block of rows in memory.
pub fn write_pair(spec: &ModelPairSpec, base_path: &Path, target_path: &Path) -> io::Result<PairSizes> {
    let mut base = BufWriter::with_capacity(1 << 20, std::fs::File::create(base_path)?);
    let mut target = BufWriter::with_capacity(1 << 20, std::fs::File::create(target_path)?);
    let sizes = write_pair_to(spec, &mut base, &mut target)?;
    base.into_inner().map_err(io::IntoInnerError::into_error)?.sync_all()?;
    target.into_inner().map_err(io::IntoInnerError::into_error)?.sync_all()?;
    Ok(sizes)
}

/// Streams a pair to two writers.
pub fn write_pair_to(spec: &ModelPairSpec, base: &mut dyn Write, target: &mut dyn Write) -> io::Result<PairSizes> {
    let plan = spec.plan();
    let base_header = header(&plan, spec.dtype, false);
    let target_header = header(&plan, spec.dtype, true);
    base.write_all(&base_header)?;
    target.write_all(&target_header)?;
    let mut sizes = PairSizes { base_bytes: base_header.len() as u64, target_bytes: target_header.len() as u64 };
    let (mut base_buf, mut target_buf) = (Vec::new(), Vec::new());
    for (index, t) in plan.iter().enumerate() {
        let mut rng = SmallRng::seed_from_u64(spec.seed ^ (index as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let target_rows = t.rows_in(true).unwrap_or(0);
        let rows_per_block = (1usize << 16).div_ceil(t.cols.max(1)).max(1);
        let mut row = 0;
        while row < target_rows {
            let rows = rows_per_block.min(target_rows - row);
            base_buf.clear();
            target_buf.clear();
            fill_block(spec, t, row, rows, &mut rng, &mut base_buf, &mut target_buf);
            base.write_all(&base_buf)?;
            target.write_all(&target_buf)?;
            sizes.base_bytes += base_buf.len() as u64;
            sizes.target_bytes += target_buf.len() as u64;
            row += rows;
        }
    }
    base.flush()?;
    target.flush()?;
    Ok(sizes)
}

/// Appends rows `first..first + rows` of a tensor to the base and target buffers.
fn fill_block(
    spec: &ModelPairSpec,
    t: &PlannedTensor,
    first: usize,
    rows: usize,
    rng: &mut SmallRng,
    base: &mut Vec<u8>,
    target: &mut Vec<u8>,
) {
    let dtype = spec.dtype;
    match t.kind {
        Kind::PositionIds => {
            for c in 0..t.cols {
                base.extend_from_slice(&(c as i64).to_le_bytes());
                target.extend_from_slice(&(c as i64).to_le_bytes());
            }
        }
        Kind::Float { mean, std } => {
            let delta_std = spec.delta_scale * std.max(mean.abs() * 0.05);
            let mut gauss = Gaussian::default();
            for r in first..first + rows {
                let new_row = r >= t.rows;
                for _ in 0..t.cols {
                    let w = dtype.round(mean + std * gauss.sample(rng));
                    let d = delta_std * gauss.sample(rng);
                    match t.role {
                        Role::New => dtype.push(w, target),
                        Role::Frozen => {
                            dtype.push(w, base);
                            dtype.push(w, target);
                        }
                        Role::Resized { .. } if new_row => dtype.push(w * 0.5, target),
                        Role::FineTuned | Role::Resized { .. } => {
                            dtype.push(w, base);
                            dtype.push(w + d, target);
                        }
                    }
                }
            }
        }
    }
}

/// Box–Muller normal samples, two per draw.
#[derive(Default)]
struct Gaussian {
    spare: Option<f32>,
}

impl Gaussian {
    fn sample(&mut self, rng: &mut SmallRng) -> f32 {
        if let Some(s) = self.spare.take() {
            return s;
        }
        let u1 = ((rng.random::<u32>() >> 8) as f32 + 1.0) * (1.0 / 16_777_216.0);
        let u2 = (rng.random::<u32>() >> 8) as f32 * (1.0 / 16_777_216.0);
        let r = (-2.0 * u1.ln()).sqrt();
        let (s, c) = (std::f32::consts::TAU * u2).sin_cos();
        self.spare = Some(r * s);
        r * c
    }
}

/// The 8-byte length and the JSON header of one file of the pair, padded with spaces to 8 bytes.
fn header(plan: &[PlannedTensor], dtype: FloatDtype, target: bool) -> Vec<u8> {
    let mut entries = BTreeMap::new();
    let mut offset = 0usize;
    for t in plan {
        let Some(rows) = t.rows_in(target) else { continue };
        let len = rows * t.cols * t.elem_size(dtype);
        let dtype_str = match t.kind {
            Kind::Float { .. } => dtype.as_str(),
            Kind::PositionIds => "I64",
        };
        entries.insert(
            t.name.clone(),
            serde_json::json!({"dtype": dtype_str, "shape": t.shape(rows), "data_offsets": [offset, offset + len]}),
        );
        offset += len;
    }
    entries.insert("__metadata__".to_owned(), serde_json::json!({"format": "pt", "generator": "chitty-testkit"}));
    let mut json = serde_json::to_vec(&entries).unwrap_or_default();
    while json.len() % 8 != 0 {
        json.push(b' ');
    }
    let mut out = (json.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&json);
    out
}

/// A base and a fine-tune laid out as model repositories on the Hugging Face Hub.
#[derive(Debug, Clone, PartialEq)]
pub struct RepoPairSpec {
    /// The weights (as [`generate_pair`] makes them).
    pub model: ModelPairSpec,
    /// Safetensors shards of the base: 1 is a single `model.safetensors`, more come with
    /// `model.safetensors.index.json`.
    pub base_shards: usize,
    /// Safetensors shards of the fine-tune, cut at other tensors than the base's when the counts differ.
    pub target_shards: usize,
}

impl RepoPairSpec {
    /// A small repository pair: the base in 3 shards, the fine-tune in 2 (so no shard lines up).
    pub fn small(seed: u64) -> Self {
        RepoPairSpec { model: ModelPairSpec::small(seed), base_shards: 3, target_shards: 2 }
    }
}

/// Writes a repository pair into two directories (created if missing): the weights sharded as the spec
/// says, `config.json` and `tokenizer.json` (the fine-tune's vocabulary grown by the added rows),
/// `generation_config.json` (identical), `README.md` (the fine-tune's own card), `training_args.json`
/// (only in the fine-tune) and `original/notes.txt` (in a subdirectory, edited by the fine-tune).
pub fn write_repo_pair(spec: &RepoPairSpec, base_dir: &Path, target_dir: &Path) -> io::Result<()> {
    let pair = generate_pair(&spec.model);
    let m = &spec.model;
    for (dir, file, shards, vocab, is_target) in [
        (base_dir, &pair.base, spec.base_shards, m.vocab, false),
        (target_dir, &pair.target, spec.target_shards, m.vocab + m.added_vocab, true),
    ] {
        std::fs::create_dir_all(dir.join("original"))?;
        for (name, bytes) in shard_safetensors(file, shards)? {
            std::fs::write(dir.join(name), bytes)?;
        }
        let config = serde_json::json!({
            "architectures": ["LlamaForCausalLM"],
            "hidden_size": m.hidden,
            "intermediate_size": m.intermediate,
            "num_hidden_layers": m.layers,
            "vocab_size": vocab,
            "torch_dtype": m.dtype.as_str(),
        });
        std::fs::write(dir.join("config.json"), serde_json::to_vec_pretty(&config).map_err(io::Error::other)?)?;
        let tokens: serde_json::Map<String, serde_json::Value> =
            (0..vocab).map(|i| (format!("tok{i}_{}", i.wrapping_mul(2_654_435_761) % 9973), i.into())).collect();
        let tokenizer = serde_json::json!({"version": "1.0", "model": {"type": "BPE", "vocab": tokens}});
        std::fs::write(dir.join("tokenizer.json"), serde_json::to_vec_pretty(&tokenizer).map_err(io::Error::other)?)?;
        std::fs::write(dir.join("generation_config.json"), b"{\n  \"bos_token_id\": 1,\n  \"eos_token_id\": 2\n}\n")?;
        let card = if is_target {
            "# A fine-tune\n\nFine-tuned from the base on generated data.\n"
        } else {
            "# A base model\n\nGenerated by chitty-testkit.\n"
        };
        std::fs::write(dir.join("README.md"), card)?;
        let notes: String = (0..400)
            .map(|i| format!("note {i}: {}\n", if is_target && i % 97 == 0 { "edited" } else { "kept" }))
            .collect();
        std::fs::write(dir.join("original").join("notes.txt"), notes)?;
        if is_target {
            std::fs::write(dir.join("training_args.json"), b"{\"learning_rate\": 0.0002, \"epochs\": 3}\n")?;
        }
    }
    Ok(())
}

/// Splits a safetensors file into `shards` files of about equal size, cut between tensors, named as the
/// Hub names them (`model-00001-of-00003.safetensors`), followed by `model.safetensors.index.json`; one
/// shard is the file itself as `model.safetensors`.
pub fn shard_safetensors(file: &[u8], shards: usize) -> io::Result<Vec<(String, Vec<u8>)>> {
    let invalid = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_owned());
    if shards <= 1 {
        return Ok(vec![("model.safetensors".to_owned(), file.to_vec())]);
    }
    let header_len =
        file.get(..8).and_then(|b| b.try_into().ok()).map(u64::from_le_bytes).ok_or_else(|| invalid("no header"))?;
    let data_start = 8 + usize::try_from(header_len).map_err(|_| invalid("header length"))?;
    let header: BTreeMap<String, serde_json::Value> =
        serde_json::from_slice(file.get(8..data_start).ok_or_else(|| invalid("truncated header"))?)
            .map_err(io::Error::other)?;
    let data = &file[data_start..];
    let mut tensors: Vec<(String, serde_json::Value, usize, usize)> = Vec::new();
    for (name, entry) in &header {
        if name == "__metadata__" {
            continue;
        }
        let offsets = entry["data_offsets"].as_array().ok_or_else(|| invalid("data_offsets"))?;
        let at = |i: usize| offsets.get(i).and_then(serde_json::Value::as_u64).map(|v| v as usize);
        let (begin, end) = at(0).zip(at(1)).ok_or_else(|| invalid("data_offsets"))?;
        tensors.push((name.clone(), entry.clone(), begin, end));
    }
    tensors.sort_by_key(|t| t.2);
    let per_shard = data.len().div_ceil(shards);
    let mut groups: Vec<Vec<&(String, serde_json::Value, usize, usize)>> = vec![Vec::new(); shards];
    for t in &tensors {
        groups[(t.2 / per_shard.max(1)).min(shards - 1)].push(t);
    }
    let names: Vec<String> = (1..=shards).map(|i| format!("model-{i:05}-of-{shards:05}.safetensors")).collect();
    let mut weight_map = BTreeMap::new();
    let mut out = Vec::new();
    for (group, name) in groups.iter().zip(&names) {
        let mut entries = BTreeMap::new();
        let mut body = Vec::new();
        for (tensor, entry, begin, end) in group {
            let mut entry = entry.clone();
            entry["data_offsets"] = serde_json::json!([body.len(), body.len() + (end - begin)]);
            body.extend_from_slice(data.get(*begin..*end).ok_or_else(|| invalid("tensor beyond the data"))?);
            entries.insert(tensor.clone(), entry);
            weight_map.insert(tensor.clone(), name.clone());
        }
        entries.insert("__metadata__".to_owned(), serde_json::json!({"format": "pt"}));
        let mut json = serde_json::to_vec(&entries).map_err(io::Error::other)?;
        while json.len() % 8 != 0 {
            json.push(b' ');
        }
        let mut shard = (json.len() as u64).to_le_bytes().to_vec();
        shard.extend_from_slice(&json);
        shard.extend_from_slice(&body);
        out.push((name.clone(), shard));
    }
    let index = serde_json::json!({"metadata": {"total_size": data.len()}, "weight_map": weight_map});
    out.push(("model.safetensors.index.json".to_owned(), serde_json::to_vec_pretty(&index).map_err(io::Error::other)?));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_are_deterministic_and_sized_as_promised() {
        let spec = ModelPairSpec::tiny(3);
        let pair = generate_pair(&spec);
        assert_eq!(pair, generate_pair(&spec));
        assert_ne!(pair, generate_pair(&ModelPairSpec::tiny(4)));
        assert!(pair.target.len() > pair.base.len(), "the target has the resized embedding and a head");
        let big = ModelPairSpec::with_target_bytes(FloatDtype::BF16, 1 << 30, 1);
        let params =
            big.vocab * big.hidden * 2 + big.layers * (4 * big.hidden * big.hidden + 3 * big.hidden * big.intermediate);
        let bytes = params as f64 * 2.0;
        assert!((0.8e9..1.2e9).contains(&bytes), "{bytes} for {big:?}");
    }

    #[test]
    fn most_bf16_elements_keep_their_exponent() {
        let pair = generate_pair(&ModelPairSpec::small(5));
        let data = |f: &[u8]| 8 + u64::from_le_bytes(f[..8].try_into().unwrap()) as usize;
        // The embedding comes first in the data and its first rows are fine-tuned in place.
        let n = 512 * 128;
        let (bs, ts) = (data(&pair.base), data(&pair.target));
        let (b, t) = (&pair.base[bs..bs + 2 * n], &pair.target[ts..ts + 2 * n]);
        let mut same_exp = 0;
        let mut same = 0;
        for (x, y) in b.chunks_exact(2).zip(t.chunks_exact(2)) {
            let (x, y) = (u16::from_le_bytes([x[0], x[1]]), u16::from_le_bytes([y[0], y[1]]));
            same_exp += usize::from((x >> 7) == (y >> 7));
            same += usize::from(x == y);
        }
        assert!(same_exp as f64 > 0.95 * n as f64, "{same_exp} of {n}");
        assert!(same < n, "the fine-tune changes something");
    }
}
