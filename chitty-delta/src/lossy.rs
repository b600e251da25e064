//! Lossy deltas of float matrices, each reporting its error.
//!
//! The delta `Δ = target − base` is taken in f32, approximated, added back to the base and rounded to the
//! dtype. What is stored reconstructs exactly the bytes the encoder checksummed, because encoder and
//! decoder run the same [`reconstruct`] on the same stored numbers.
//!
//! - `sparse`: per chunk, the `keep` fraction of elements with the largest `|Δ|` is stored exactly (as
//!   the lossless transform of those elements), the rest take the base value;
//! - `int8` / `int4`: `round(Δ / s)` with one absmax scale `s` per row (per row segment when a row spans
//!   chunks), 8 or 4 bits per element;
//! - `1bit` (BitDelta): the sign of `Δ` and one scale per matrix, the mean `|Δ|`.
//!
//! Every chunk payload starts with the sums of squared error and squared delta (f64), so that reports and
//! `inspect` give the relative Frobenius error `‖Δ̂ − Δ‖ / ‖Δ‖` per tensor.

use crate::codec::{decode_section, encode_section, take};
use crate::error::DeltaError;
use crate::format::Method;
use crate::safetensors::Dtype;
use crate::transform;

/// Sums of squares of one chunk.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct ErrorSums {
    /// `Σ (Δ̂ − Δ)²`.
    pub(crate) error: f64,
    /// `Σ Δ²`.
    pub(crate) delta: f64,
}

impl ErrorSums {
    pub(crate) fn add(&mut self, other: ErrorSums) {
        self.error += other.error;
        self.delta += other.delta;
    }

    /// Relative Frobenius norm of the error (0 when the delta is 0).
    pub(crate) fn relative(&self) -> f64 {
        if self.delta > 0.0 { (self.error / self.delta).sqrt() } else { self.error.sqrt() }
    }
}

fn load(dtype: Dtype, e: &[u8]) -> f32 {
    match dtype {
        Dtype::BF16 => half::bf16::from_bits(u16::from_le_bytes([e[0], e[1]])).to_f32(),
        Dtype::F16 => half::f16::from_bits(u16::from_le_bytes([e[0], e[1]])).to_f32(),
        _ => f32::from_le_bytes([e[0], e[1], e[2], e[3]]),
    }
}

fn store(dtype: Dtype, v: f32, out: &mut [u8]) {
    match dtype {
        Dtype::BF16 => out.copy_from_slice(&half::bf16::from_f32(v).to_le_bytes()),
        Dtype::F16 => out.copy_from_slice(&half::f16::from_f32(v).to_le_bytes()),
        _ => out.copy_from_slice(&v.to_le_bytes()),
    }
}

/// The stored approximation of a chunk's delta.
enum Approximation {
    /// Kept positions (bitmap) and the exact lossless codes of those elements.
    Sparse { bitmap: Vec<u8>, kept: Vec<Vec<u8>> },
    /// Quantized values (one byte each, or two 4-bit values per byte) and one scale per row segment.
    Quantized { bits: u8, scales: Vec<f32>, codes: Vec<u8> },
    /// Signs (bit set: positive) and one scale.
    Signs { scale: f32, bits: Vec<u8> },
}

/// Row segments of a chunk of elements `[begin, end)` with rows of `row_len`: `(offset, len)` in the chunk.
fn segments(begin: u64, end: u64, row_len: u64) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut at = begin;
    while at < end {
        let row_end = ((at / row_len) + 1) * row_len;
        let stop = row_end.min(end);
        out.push(((at - begin) as usize, (stop - at) as usize));
        at = stop;
    }
    out
}

/// Mean `|Δ|` of a whole tensor: the 1-bit scale.
pub(crate) fn mean_abs_delta(dtype: Dtype, base: &[u8], target: &[u8]) -> f32 {
    let w = dtype.size_bytes() as usize;
    let n = target.len() / w;
    if n == 0 {
        return 0.0;
    }
    let sum: f64 = base
        .chunks_exact(w)
        .zip(target.chunks_exact(w))
        .map(|(b, t)| f64::from((load(dtype, t) - load(dtype, b)).abs()))
        .sum();
    (sum / n as f64) as f32
}

/// Parameters of a lossy method for one chunk.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LossyParams {
    pub(crate) method: Method,
    pub(crate) dtype: Dtype,
    /// Fraction of elements the sparse method keeps.
    pub(crate) keep: f64,
    /// The tensor's 1-bit scale.
    pub(crate) scale: f32,
    /// Element range of the chunk within its tensor, and the tensor's row length.
    pub(crate) begin: u64,
    pub(crate) end: u64,
    pub(crate) row_len: u64,
}

/// Encodes a chunk: appends the payload, writes the reconstruction into `out`, returns the error sums.
pub(crate) fn encode(
    p: &LossyParams,
    base: &[u8],
    target: &[u8],
    level: i32,
    payload: &mut Vec<u8>,
    out: &mut [u8],
) -> Result<ErrorSums, DeltaError> {
    let w = p.dtype.size_bytes() as usize;
    let n = target.len() / w;
    let delta: Vec<f32> =
        base.chunks_exact(w).zip(target.chunks_exact(w)).map(|(b, t)| load(p.dtype, t) - load(p.dtype, b)).collect();
    let approx = match p.method {
        Method::Sparse => {
            let keep = ((n as f64 * p.keep).ceil() as usize).min(n);
            let mut bitmap = vec![0u8; n.div_ceil(8)];
            if keep > 0 {
                let mut mags: Vec<f32> = delta.iter().map(|d| d.abs()).collect();
                let (_, &mut threshold, _) = mags.select_nth_unstable_by(n - keep, f32::total_cmp);
                let mut kept = 0;
                for (i, d) in delta.iter().enumerate() {
                    // Ties at the threshold are kept until the budget is used; zero deltas never are.
                    if d.abs() >= threshold && *d != 0.0 && kept < keep {
                        bitmap[i / 8] |= 1 << (i % 8);
                        kept += 1;
                    }
                }
            }
            let kept = kept_planes(w, &bitmap, base, target, n);
            Approximation::Sparse { bitmap, kept }
        }
        Method::Int8 | Method::Int4 => {
            let bits = if p.method == Method::Int8 { 8 } else { 4 };
            let qmax = if bits == 8 { 127.0 } else { 7.0 };
            let segs = segments(p.begin, p.end, p.row_len);
            let mut scales = Vec::with_capacity(segs.len());
            let mut q = vec![0i8; n];
            for &(at, len) in &segs {
                let absmax = delta[at..at + len].iter().fold(0.0f32, |m, d| m.max(d.abs()));
                let s = if absmax > 0.0 { absmax / qmax } else { 0.0 };
                scales.push(s);
                if s > 0.0 {
                    for (qv, d) in q[at..at + len].iter_mut().zip(&delta[at..at + len]) {
                        *qv = (d / s).round().clamp(-qmax, qmax) as i8;
                    }
                }
            }
            let codes = if bits == 8 {
                q.iter().map(|&v| v as u8).collect()
            } else {
                q.chunks(2).map(|c| ((c[0] + 8) as u8) | (c.get(1).map_or(8, |&v| (v + 8) as u8) << 4)).collect()
            };
            Approximation::Quantized { bits, scales, codes }
        }
        _ => {
            let mut bits = vec![0u8; n.div_ceil(8)];
            for (i, d) in delta.iter().enumerate() {
                if *d > 0.0 {
                    bits[i / 8] |= 1 << (i % 8);
                }
            }
            Approximation::Signs { scale: p.scale, bits }
        }
    };
    reconstruct(p, base, &approx, out)?;
    let mut sums = ErrorSums::default();
    for ((d, o), b) in delta.iter().zip(out.chunks_exact(w)).zip(base.chunks_exact(w)) {
        let approx_delta = f64::from(load(p.dtype, o)) - f64::from(load(p.dtype, b));
        sums.error += (approx_delta - f64::from(*d)).powi(2);
        sums.delta += f64::from(*d).powi(2);
    }
    payload.extend_from_slice(&sums.error.to_le_bytes());
    payload.extend_from_slice(&sums.delta.to_le_bytes());
    match &approx {
        Approximation::Sparse { bitmap, kept } => {
            encode_section(bitmap, level, payload)?;
            for plane in kept {
                encode_section(plane, level, payload)?;
            }
        }
        Approximation::Quantized { scales, codes, .. } => {
            let raw: Vec<u8> = scales.iter().flat_map(|s| s.to_le_bytes()).collect();
            encode_section(&raw, level, payload)?;
            encode_section(codes, level, payload)?;
        }
        Approximation::Signs { bits, .. } => encode_section(bits, level, payload)?,
    }
    Ok(sums)
}

/// The lossless codes (byte planes of the zigzag difference) of the elements whose bit is set.
fn kept_planes(w: usize, bitmap: &[u8], base: &[u8], target: &[u8], n: usize) -> Vec<Vec<u8>> {
    let mut tb = Vec::new();
    let mut bb = Vec::new();
    for i in (0..n).filter(|i| bitmap[i / 8] >> (i % 8) & 1 == 1) {
        tb.extend_from_slice(&target[i * w..(i + 1) * w]);
        bb.extend_from_slice(&base[i * w..(i + 1) * w]);
    }
    let mut planes = vec![vec![0u8; tb.len() / w]; w];
    match &mut planes[..] {
        [lo, hi] => transform::diff16(&bb, &tb, lo, hi),
        four => transform::diff32(&bb, &tb, four),
    }
    planes
}

/// Reads a chunk payload, rebuilds the chunk into `out`; returns the error sums recorded by the encoder.
pub(crate) fn decode(
    p: &LossyParams,
    base: &[u8],
    payload: &mut &[u8],
    out: &mut [u8],
    part: &str,
) -> Result<ErrorSums, DeltaError> {
    let sums = read_sums(payload, part)?;
    let w = p.dtype.size_bytes() as usize;
    let n = out.len() / w;
    let read = |payload: &mut &[u8], len: usize| -> Result<Vec<u8>, DeltaError> {
        let mut v = Vec::new();
        decode_section(payload, len, &mut v, part)?;
        if v.len() != len {
            return Err(DeltaError::corrupt(part, format!("section of {} bytes, expected {len}", v.len())));
        }
        Ok(v)
    };
    let approx = match p.method {
        Method::Sparse => {
            let bitmap = read(payload, n.div_ceil(8))?;
            if !n.is_multiple_of(8) && bitmap.last().is_some_and(|&b| b >> (n % 8) != 0) {
                return Err(DeltaError::corrupt(part, "bitmap marks elements past the chunk"));
            }
            let kept_n: usize = bitmap.iter().map(|b| b.count_ones() as usize).sum();
            let kept = (0..w).map(|_| read(payload, kept_n)).collect::<Result<Vec<_>, _>>()?;
            Approximation::Sparse { bitmap, kept }
        }
        Method::Int8 | Method::Int4 => {
            let bits = if p.method == Method::Int8 { 8 } else { 4 };
            let segs = segments(p.begin, p.end, p.row_len).len();
            let raw = read(payload, segs * 4)?;
            let scales = raw.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
            let codes = read(payload, if bits == 8 { n } else { n.div_ceil(2) })?;
            Approximation::Quantized { bits, scales, codes }
        }
        _ => Approximation::Signs { scale: p.scale, bits: read(payload, n.div_ceil(8))? },
    };
    reconstruct(p, base, &approx, out).map_err(|_| DeltaError::corrupt(part, "inconsistent lossy payload"))?;
    Ok(sums)
}

/// The error sums at the front of a lossy payload.
pub(crate) fn read_sums(payload: &mut &[u8], part: &str) -> Result<ErrorSums, DeltaError> {
    let raw = take(payload, 16, part)?;
    let f = |b: &[u8]| f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
    Ok(ErrorSums { error: f(&raw[..8]), delta: f(&raw[8..]) })
}

/// `base + Δ̂`, rounded to the dtype, into `out`.
fn reconstruct(p: &LossyParams, base: &[u8], approx: &Approximation, out: &mut [u8]) -> Result<(), DeltaError> {
    let w = p.dtype.size_bytes() as usize;
    let elems = out.chunks_exact_mut(w).zip(base.chunks_exact(w));
    match approx {
        Approximation::Sparse { bitmap, kept } => {
            out.copy_from_slice(base);
            let idx: Vec<usize> = (0..base.len() / w).filter(|i| bitmap[i / 8] >> (i % 8) & 1 == 1).collect();
            let mut bb = Vec::with_capacity(idx.len() * w);
            for &i in &idx {
                bb.extend_from_slice(&base[i * w..(i + 1) * w]);
            }
            let mut tb = vec![0u8; bb.len()];
            match &kept[..] {
                [lo, hi] => transform::undiff16(&bb, lo, hi, &mut tb),
                [a, b, c, d] => transform::undiff32(&bb, [a, b, c, d], &mut tb),
                _ => return Err(DeltaError::Internal { reason: "sparse planes".to_owned() }),
            }
            for (k, &i) in idx.iter().enumerate() {
                out[i * w..(i + 1) * w].copy_from_slice(&tb[k * w..(k + 1) * w]);
            }
        }
        Approximation::Quantized { bits, scales, codes } => {
            let segs = segments(p.begin, p.end, p.row_len);
            let mut scale_of = vec![0f32; base.len() / w];
            for (&(at, len), &s) in segs.iter().zip(scales) {
                scale_of[at..at + len].fill(s);
            }
            for (i, (o, b)) in elems.enumerate() {
                let q = if *bits == 8 {
                    f32::from(codes[i] as i8)
                } else {
                    f32::from(((codes[i / 2] >> (4 * (i % 2))) & 15) as i8 - 8)
                };
                store(p.dtype, load(p.dtype, b) + q * scale_of[i], o);
            }
        }
        Approximation::Signs { scale, bits } => {
            for (i, (o, b)) in elems.enumerate() {
                let sign = if bits[i / 8] >> (i % 8) & 1 == 1 { 1.0 } else { -1.0 };
                store(p.dtype, load(p.dtype, b) + sign * scale, o);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_split_at_row_boundaries() {
        assert_eq!(segments(0, 10, 4), vec![(0, 4), (4, 4), (8, 2)]);
        assert_eq!(segments(6, 9, 4), vec![(0, 2), (2, 1)]);
        assert_eq!(segments(0, 0, 4), vec![]);
    }
}
