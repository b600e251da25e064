//! Measurements behind the choice of transform: sizes of candidate transforms against their order-0
//! entropy, per byte plane and zstd level, on any base / fine-tune pair.
//!
//! Candidates, applied to every tensor that has a base tensor of the same name, dtype and shape:
//! - `xor`: XOR of the bit patterns, split into little-endian byte planes;
//! - `xor-exp|sign-mant` (the plain recipe): XOR, rotated left by one bit so that one plane holds the
//!   exponent bits and the others the sign and mantissa;
//! - `intdiff`: the zigzag ordered-integer (sign-magnitude) difference in byte planes;
//! - `intdiff-packed`: the same numbers (for 32-bit dtypes their high 16 bits, after two low byte planes)
//!   as 2-, 4- or 8-bit codes packed into bytes, with escapes for larger ones, what the lossless mode
//!   stores: packing several small codes per byte lets zstd's Huffman stage go below one bit per element.
//!
//! ```
//! use chitty_delta::analysis::study_transforms;
//! use chitty_testkit::model_pairs::{ModelPairSpec, generate_pair};
//!
//! let pair = generate_pair(&ModelPairSpec::tiny(1));
//! let study = study_transforms(&pair.base, &pair.target, &[1, 3])?;
//! let best = study.transforms.iter().min_by_key(|t| t.best_bytes()).unwrap();
//! assert_eq!(best.name, "intdiff-packed");
//! # Ok::<(), chitty_delta::DeltaError>(())
//! ```

use std::collections::HashMap;

use rayon::prelude::*;

use crate::compressor::DEFAULT_CHUNK_ELEMENTS;
use crate::error::DeltaError;
use crate::safetensors::{Dtype, SafetensorsLayout};
use crate::transform;

/// One byte plane of one transform.
#[derive(Debug, Clone, PartialEq)]
pub struct PlaneStudy {
    /// Plane name, e.g. `byte 0` or `exponent`.
    pub name: String,
    /// Bytes in the plane.
    pub raw_bytes: u64,
    /// Order-0 entropy of the plane's bytes (one histogram over the whole plane), in bytes.
    pub entropy_bytes: f64,
    /// zstd size at each level studied (chunked like the archive), in the order given.
    pub zstd_bytes: Vec<(i32, u64)>,
}

impl PlaneStudy {
    /// The smallest of raw and every zstd level.
    pub fn best_bytes(&self) -> u64 {
        self.zstd_bytes.iter().map(|&(_, b)| b).chain([self.raw_bytes]).min().unwrap_or(self.raw_bytes)
    }
}

/// One candidate transform over all comparable tensors of one dtype.
#[derive(Debug, Clone, PartialEq)]
pub struct TransformStudy {
    /// Transform name.
    pub name: &'static str,
    /// The dtype studied.
    pub dtype: Dtype,
    /// Its planes.
    pub planes: Vec<PlaneStudy>,
    /// Order-0 entropy of whole symbols (16-bit dtypes only), in bytes.
    pub symbol_entropy_bytes: Option<f64>,
}

impl TransformStudy {
    /// Sum over planes of the best choice per plane.
    pub fn best_bytes(&self) -> u64 {
        self.planes.iter().map(PlaneStudy::best_bytes).sum()
    }

    /// Sum over planes of their order-0 entropy.
    pub fn entropy_bytes(&self) -> f64 {
        self.planes.iter().map(|p| p.entropy_bytes).sum()
    }

    /// Size at one zstd level (raw where zstd does not pay), summed over planes.
    pub fn bytes_at(&self, level: i32) -> u64 {
        self.planes
            .iter()
            .map(|p| p.zstd_bytes.iter().find(|&&(l, _)| l == level).map_or(p.raw_bytes, |&(_, b)| b.min(p.raw_bytes)))
            .sum()
    }
}

/// The study of one pair.
#[derive(Debug, Clone, PartialEq)]
pub struct PairStudy {
    /// Bytes of the target file.
    pub target_bytes: u64,
    /// Bytes of the tensors compared (those with a base of the same name, dtype and shape that changed).
    pub compared_bytes: u64,
    /// Candidates, per dtype found.
    pub transforms: Vec<TransformStudy>,
    /// The plain recipe on the whole file: XOR exponent / sign-mantissa planes + zstd-3 for tensors with a
    /// base, the same planes of the raw bits for the others, the header raw.
    pub recipe_file_bytes: u64,
}

/// Studies the candidate transforms of `target` against `base` at the given zstd levels.
pub fn study_transforms(base: &[u8], target: &[u8], levels: &[i32]) -> Result<PairStudy, DeltaError> {
    let base_layout = SafetensorsLayout::parse(base)?;
    let target_layout = SafetensorsLayout::parse(target)?;
    let by_name: HashMap<&str, _> = base_layout.tensors.iter().map(|t| (t.name.as_str(), t)).collect();
    let mut compared: Vec<(Dtype, &[u8], &[u8])> = Vec::new();
    let mut unmatched: Vec<(Dtype, &[u8])> = Vec::new();
    for t in &target_layout.tensors {
        let tb = target_layout.tensor_bytes(target, t);
        match by_name.get(t.name.as_str()).filter(|b| b.dtype == t.dtype && b.shape == t.shape) {
            Some(b) if t.dtype.is_delta_float() => {
                let bb = base_layout.tensor_bytes(base, b);
                if bb != tb {
                    compared.push((t.dtype, bb, tb));
                }
            }
            Some(_) => {}
            None => unmatched.push((t.dtype, tb)),
        }
    }
    let mut transforms = Vec::new();
    for dtype in [Dtype::BF16, Dtype::F16, Dtype::F32] {
        let pieces: Vec<(&[u8], &[u8])> =
            compared.iter().filter(|(d, _, _)| *d == dtype).map(|&(_, b, t)| (b, t)).collect();
        if pieces.is_empty() {
            continue;
        }
        for kind in [Kind::Xor, Kind::XorExpSignMant, Kind::IntDiff, Kind::IntDiffPacked] {
            transforms.push(study_one(kind, dtype, &pieces, levels));
        }
    }
    let recipe_matched: u64 = compared
        .par_iter()
        .flat_map(|&(d, b, t)| chunks(d, b, t))
        .map(|(d, b, t)| planes_size(&planes_of(Kind::XorExpSignMant, d, b, t), 3))
        .sum();
    let recipe_unmatched: u64 = unmatched
        .par_iter()
        .flat_map(|&(d, t)| chunks(d, t, t))
        .map(|(d, _, t)| {
            let width = if d.is_delta_float() { d.size_bytes() as usize } else { 1 };
            let mut planes = vec![vec![0u8; t.len() / width]; width];
            transform::rotate_split(width, t, &mut planes);
            planes_size(&planes, 3)
        })
        .sum();
    Ok(PairStudy {
        target_bytes: target.len() as u64,
        compared_bytes: compared.iter().map(|(_, _, t)| t.len() as u64).sum(),
        transforms,
        recipe_file_bytes: recipe_matched + recipe_unmatched + target_layout.data_start,
    })
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Xor,
    XorExpSignMant,
    IntDiff,
    IntDiffPacked,
}

fn chunks<'a>(dtype: Dtype, base: &'a [u8], target: &'a [u8]) -> Vec<(Dtype, &'a [u8], &'a [u8])> {
    let step = DEFAULT_CHUNK_ELEMENTS as usize * dtype.size_bytes() as usize;
    base.chunks(step).zip(target.chunks(step)).map(|(b, t)| (dtype, b, t)).collect()
}

fn planes_of(kind: Kind, dtype: Dtype, base: &[u8], target: &[u8]) -> Vec<Vec<u8>> {
    let width = dtype.size_bytes() as usize;
    let n = target.len() / width;
    let mut planes = vec![vec![0u8; n]; width];
    match kind {
        Kind::IntDiffPacked => {
            let mut z = vec![0u16; n];
            let mut low = Vec::new();
            if width == 2 {
                transform::diff16_z(base, target, &mut z);
            } else {
                let (mut p0, mut p1) = (vec![0u8; n], vec![0u8; n]);
                transform::diff32_split(base, target, &mut p0, &mut p1, &mut z);
                low = vec![p0, p1];
            }
            let k = transform::choose_code_bits(&z);
            let (mut packed, mut lo, mut hi) = (Vec::new(), Vec::new(), Vec::new());
            transform::pack_codes(&z, k, &mut packed, &mut lo, &mut hi);
            low.extend([packed, lo, hi]);
            return low;
        }
        Kind::IntDiff => match &mut planes[..] {
            [lo, hi] => transform::diff16(base, target, lo, hi),
            four => transform::diff32(base, target, four),
        },
        Kind::Xor | Kind::XorExpSignMant => {
            let xored: Vec<u8> = base.iter().zip(target).map(|(a, b)| a ^ b).collect();
            if matches!(kind, Kind::Xor) {
                for (i, e) in xored.chunks_exact(width).enumerate() {
                    for (plane, &byte) in planes.iter_mut().zip(e) {
                        plane[i] = byte;
                    }
                }
            } else {
                transform::rotate_split(width, &xored, &mut planes);
            }
        }
    }
    planes
}

fn planes_size(planes: &[Vec<u8>], level: i32) -> u64 {
    planes.iter().map(|p| zstd_size(p, level).min(p.len() as u64)).sum()
}

fn zstd_size(data: &[u8], level: i32) -> u64 {
    if data.iter().all(|&b| b == 0) {
        return 0;
    }
    zstd::bulk::compress(data, level).map_or(data.len() as u64, |c| c.len() as u64)
}

fn entropy_bytes(histogram: &[u64]) -> f64 {
    let total: u64 = histogram.iter().sum();
    if total == 0 {
        return 0.0;
    }
    let bits: f64 = histogram
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = c as f64 / total as f64;
            -(c as f64) * p.log2()
        })
        .sum();
    bits / 8.0
}

fn plane_names(kind: Kind, width: usize) -> Vec<String> {
    match (kind, width) {
        (Kind::XorExpSignMant, 2) => vec!["sign+mantissa".into(), "exponent".into()],
        (Kind::IntDiffPacked, 2) => vec!["codes".into(), "escape low".into(), "escape high".into()],
        (Kind::IntDiffPacked, _) => {
            vec!["byte 0".into(), "byte 1".into(), "high codes".into(), "escape low".into(), "escape high".into()]
        }
        (Kind::XorExpSignMant, _) => {
            vec!["sign+mantissa 0".into(), "mantissa 1".into(), "mantissa 2".into(), "exponent".into()]
        }
        _ => (0..width).map(|i| format!("byte {i}")).collect(),
    }
}

fn study_one(kind: Kind, dtype: Dtype, pieces: &[(&[u8], &[u8])], levels: &[i32]) -> TransformStudy {
    let width = dtype.size_bytes() as usize;
    let plane_count = match kind {
        Kind::IntDiffPacked => width + 1,
        _ => width,
    };
    let work: Vec<(&[u8], &[u8])> =
        pieces.iter().flat_map(|&(b, t)| chunks(dtype, b, t).into_iter().map(|(_, b, t)| (b, t))).collect();
    struct Partial {
        hist: Vec<[u64; 256]>,
        symbols: Vec<u64>,
        sizes: Vec<Vec<u64>>,
        raw: Vec<u64>,
    }
    let symbols_studied = width == 2 && !matches!(kind, Kind::IntDiffPacked);
    let empty = || Partial {
        hist: vec![[0; 256]; plane_count],
        symbols: if symbols_studied { vec![0; 1 << 16] } else { Vec::new() },
        sizes: vec![vec![0; levels.len()]; plane_count],
        raw: vec![0; plane_count],
    };
    let total = work
        .par_iter()
        .map(|&(b, t)| {
            let planes = planes_of(kind, dtype, b, t);
            let mut p = empty();
            for (k, plane) in planes.iter().enumerate() {
                p.raw[k] = plane.len() as u64;
                for &byte in plane {
                    p.hist[k][byte as usize] += 1;
                }
                for (j, &level) in levels.iter().enumerate() {
                    p.sizes[k][j] = zstd_size(plane, level);
                }
            }
            if symbols_studied {
                for (&lo, &hi) in planes[0].iter().zip(&planes[1]) {
                    p.symbols[usize::from(u16::from_le_bytes([lo, hi]))] += 1;
                }
            }
            p
        })
        .reduce(empty, |mut a, b| {
            for (x, y) in a.hist.iter_mut().zip(&b.hist) {
                x.iter_mut().zip(y).for_each(|(x, y)| *x += y);
            }
            a.symbols.iter_mut().zip(&b.symbols).for_each(|(x, y)| *x += y);
            for (x, y) in a.sizes.iter_mut().zip(&b.sizes) {
                x.iter_mut().zip(y).for_each(|(x, y)| *x += y);
            }
            a.raw.iter_mut().zip(&b.raw).for_each(|(x, y)| *x += y);
            a
        });
    let names = plane_names(kind, width);
    TransformStudy {
        name: match kind {
            Kind::Xor => "xor",
            Kind::XorExpSignMant => "xor-exp|sign-mant",
            Kind::IntDiff => "intdiff",
            Kind::IntDiffPacked => "intdiff-packed",
        },
        dtype,
        planes: (0..plane_count)
            .map(|k| PlaneStudy {
                name: names[k].clone(),
                raw_bytes: total.raw[k],
                entropy_bytes: entropy_bytes(&total.hist[k]),
                zstd_bytes: levels.iter().copied().zip(total.sizes[k].iter().copied()).collect(),
            })
            .collect(),
        symbol_entropy_bytes: symbols_studied.then(|| entropy_bytes(&total.symbols)),
    }
}
