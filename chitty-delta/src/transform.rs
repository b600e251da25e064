//! Bit-exact transforms of float tensors into byte planes that entropy-code well.
//!
//! - Against a base: the *ordered-integer difference*. Each float's bit pattern is mapped to an integer
//!   that orders like the sign-magnitude value (`x ^ 0x7fff` for negatives, a bijection), the base's is
//!   subtracted with wrapping arithmetic, and the difference is zigzag-coded so that small changes of
//!   either sign become small unsigned numbers. Plane `k` holds byte `k` of those numbers. A fine-tune
//!   moves most weights by a few units in the last place, so the high planes are almost all zero.
//!   `docs/delta.md` compares this with XOR and other splits on generated fine-tunes.
//! - Without a base (new or reshaped tensors): the bits rotated left by one, so that the top plane holds
//!   the exponent (all 8 bits for BF16 and F32) and the sign joins the mantissa planes.
//!
//! Elements are read with `from_le_bytes`: tensor data in a safetensors file is not aligned.

use std::collections::VecDeque;

/// Maps a 16-bit float pattern to an integer ordered like its value (an involution).
#[inline]
pub(crate) fn ordered16(x: u16) -> u16 {
    x ^ ((((x as i16) >> 15) as u16) & 0x7fff)
}

/// Maps a 32-bit float pattern to an integer ordered like its value (an involution).
#[inline]
pub(crate) fn ordered32(x: u32) -> u32 {
    x ^ ((((x as i32) >> 31) as u32) & 0x7fff_ffff)
}

#[inline]
fn zigzag16(d: u16) -> u16 {
    (d << 1) ^ (((d as i16) >> 15) as u16)
}

#[inline]
fn unzigzag16(z: u16) -> u16 {
    (z >> 1) ^ 0u16.wrapping_sub(z & 1)
}

#[inline]
fn zigzag32(d: u32) -> u32 {
    (d << 1) ^ (((d as i32) >> 31) as u32)
}

#[inline]
fn unzigzag32(z: u32) -> u32 {
    (z >> 1) ^ 0u32.wrapping_sub(z & 1)
}

/// Writes the zigzag ordered-integer difference of 16-bit `target` against `base` into two planes.
pub(crate) fn diff16(base: &[u8], target: &[u8], lo: &mut [u8], hi: &mut [u8]) {
    let elems = target.chunks_exact(2).zip(base.chunks_exact(2));
    for (((t, b), l), h) in elems.zip(lo.iter_mut()).zip(hi.iter_mut()) {
        let t = u16::from_le_bytes([t[0], t[1]]);
        let b = u16::from_le_bytes([b[0], b[1]]);
        let z = zigzag16(ordered16(t).wrapping_sub(ordered16(b)));
        *l = z as u8;
        *h = (z >> 8) as u8;
    }
}

/// Inverse of [`diff16`]: rebuilds 16-bit elements into `out` from `base` and the planes.
pub(crate) fn undiff16(base: &[u8], lo: &[u8], hi: &[u8], out: &mut [u8]) {
    let elems = out.chunks_exact_mut(2).zip(base.chunks_exact(2));
    for (((o, b), &l), &h) in elems.zip(lo).zip(hi) {
        let b = u16::from_le_bytes([b[0], b[1]]);
        let d = unzigzag16(u16::from_le_bytes([l, h]));
        o.copy_from_slice(&ordered16(ordered16(b).wrapping_add(d)).to_le_bytes());
    }
}

/// The zigzag ordered-integer difference of one 16-bit element.
#[inline(always)]
pub(crate) fn diff_one(t: [u8; 2], b: [u8; 2]) -> u16 {
    zigzag16(ordered16(u16::from_le_bytes(t)).wrapping_sub(ordered16(u16::from_le_bytes(b))))
}

/// Inverse of [`diff_one`].
#[inline(always)]
pub(crate) fn undiff_one(b: [u8; 2], z: u16) -> [u8; 2] {
    ordered16(ordered16(u16::from_le_bytes(b)).wrapping_add(unzigzag16(z))).to_le_bytes()
}

/// The zigzag ordered-integer difference of 16-bit `target` against `base`, one number per element.
pub(crate) fn diff16_z(base: &[u8], target: &[u8], z: &mut [u16]) {
    // `as_chunks` gives `[u8; 2]` elements, which the compiler loads as whole vectors (indexing bytes
    // one by one made it gather them).
    let (t2, _) = target.as_chunks::<2>();
    let (b2, _) = base.as_chunks::<2>();
    for ((z, &t), &b) in z.iter_mut().zip(t2).zip(b2) {
        *z = diff_one(t, b);
    }
}

/// Inverse of [`diff16_z`] (the fused kernels' reference in tests).
#[cfg(test)]
pub(crate) fn undiff16_z(base: &[u8], z: &[u16], out: &mut [u8]) {
    let (o2, _) = out.as_chunks_mut::<2>();
    let (b2, _) = base.as_chunks::<2>();
    for ((o, &b), &z) in o2.iter_mut().zip(b2).zip(z) {
        *o = undiff_one(b, z);
    }
}

/// Code widths [`pack_codes`] supports.
pub(crate) const CODE_BITS: [u8; 3] = [2, 4, 8];

/// Picks the code width for `z` that minimises the estimated packed size: the expected length of a
/// Huffman code (what zstd's literal stage builds) over packed bytes of independent codes, plus the
/// order-0 entropy of the escapes. Small widths put several codes in a byte, which lets the Huffman stage
/// go below one bit per element where most elements barely change.
pub(crate) fn choose_code_bits(z: &[u16]) -> u8 {
    // Every third element is plenty to rank three widths, at a third of the cost.
    let mut hist = [0u64; 257];
    for &v in z.iter().step_by(3) {
        hist[usize::from(v.min(256))] += 1;
    }
    choose_code_bits_from_histogram(&hist)
}

/// [`choose_code_bits`] from a histogram of `min(z, 256)`.
pub(crate) fn choose_code_bits_from_histogram(hist: &[u64; 257]) -> u8 {
    let n = hist.iter().sum::<u64>().max(1) as f64;
    let mut best = (f64::INFINITY, 8u8);
    for k in CODE_BITS {
        let max = (1usize << k) - 1;
        let escapes: u64 = hist[max..].iter().sum();
        let marginal: Vec<f64> = (0..=max).map(|v| if v == max { escapes } else { hist[v] } as f64 / n).collect();
        let per_byte = 8 / usize::from(k);
        let mut joint = vec![1.0f64];
        for _ in 0..per_byte {
            joint = joint.iter().flat_map(|&a| marginal.iter().map(move |&b| a * b)).collect();
        }
        let code_bits =
            huffman_bits_per_symbol(&mut joint) * n / per_byte as f64 * width_penalty(k, hist[0] as f64 / n);
        let tail: u64 = hist[max..256].iter().sum::<u64>() + hist[256];
        let escape_bits = if tail == 0 {
            0.0
        } else {
            let mut h = 0.0;
            for &c in hist[max..].iter().filter(|&&c| c > 0) {
                h -= c as f64 * (c as f64 / tail as f64).log2();
            }
            h + hist[256] as f64 * 8.0
        };
        let cost = code_bits + escape_bits;
        if cost < best.0 {
            best = (cost, k);
        }
    }
    best.1
}

/// How much more than the Huffman estimate zstd stores codes of width `k`, relative to 2-bit codes, when
/// `zero_share` of the numbers are zero.
///
/// Measured on 1 Mi-element chunks (`docs/delta.md`): where most numbers are zero (BF16, 1e-3 updates:
/// 78%) zstd stored 2-bit codes 2.5% above the estimate, 4-bit codes 13.5% and 8-bit codes 24% above
/// it, so estimated ties went either way by sampling noise and 4 bits cost 11% more; where fewer are
/// (F16 1e-3, BF16 1e-2) every width came within 2-4% of it.
fn width_penalty(k: u8, zero_share: f64) -> f64 {
    match k {
        _ if zero_share < 0.5 => 1.0,
        2 => 1.0,
        4 => 1.1,
        _ => 1.2,
    }
}

/// Expected bits per symbol of a Huffman code for `weights` (probabilities; reordered in place).
fn huffman_bits_per_symbol(weights: &mut Vec<f64>) -> f64 {
    weights.retain(|&w| w > 0.0);
    if weights.len() < 2 {
        // zstd stores a single repeated symbol as a run: next to nothing per symbol.
        return 0.0;
    }
    weights.sort_by(f64::total_cmp);
    // Two-queue Huffman: the cost is the sum of the weights of all merged nodes.
    let mut leaves: VecDeque<f64> = weights.iter().copied().collect();
    let mut merged: VecDeque<f64> = VecDeque::with_capacity(weights.len());
    let pop = |leaves: &mut VecDeque<f64>, merged: &mut VecDeque<f64>| match (leaves.front(), merged.front()) {
        (Some(l), Some(m)) if m < l => merged.pop_front(),
        (Some(_), _) => leaves.pop_front(),
        (None, _) => merged.pop_front(),
    };
    let mut cost = 0.0;
    while leaves.len() + merged.len() > 1 {
        let (Some(a), Some(b)) = (pop(&mut leaves, &mut merged), pop(&mut leaves, &mut merged)) else { break };
        cost += a + b;
        merged.push_back(a + b);
    }
    cost
}

/// Packs `min(z, 2^k - 1)` in `k`-bit codes, low bits first; each `z >= 2^k - 1` also appends
/// `z - (2^k - 1)` to the escape planes (low byte, high byte).
pub(crate) fn pack_codes(z: &[u16], k: u8, packed: &mut Vec<u8>, esc_lo: &mut Vec<u8>, esc_hi: &mut Vec<u8>) {
    let max = (1u16 << k) - 1;
    let code = |v: u16| v.min(max) as u8;
    packed.clear();
    match k {
        2 => {
            let mut groups = z.chunks_exact(4);
            packed.extend(groups.by_ref().map(|g| code(g[0]) | code(g[1]) << 2 | code(g[2]) << 4 | code(g[3]) << 6));
            let rest = groups.remainder();
            if !rest.is_empty() {
                packed.push(rest.iter().enumerate().fold(0, |b, (i, &v)| b | code(v) << (2 * i)));
            }
        }
        4 => {
            let mut pairs = z.chunks_exact(2);
            packed.extend(pairs.by_ref().map(|p| code(p[0]) | code(p[1]) << 4));
            if let [v] = pairs.remainder() {
                packed.push(code(*v));
            }
        }
        _ => packed.extend(z.iter().map(|&v| code(v))),
    }
    for &v in z.iter().filter(|&&v| v >= max) {
        let e = v - max;
        esc_lo.push(e as u8);
        esc_hi.push((e >> 8) as u8);
    }
}

/// Unpacks `z.len()` codes of `k` bits from `packed` (which must hold exactly enough bytes), escapes not
/// yet applied; returns how many codes are escapes.
pub(crate) fn unpack_codes(packed: &[u8], k: u8, z: &mut [u16]) -> usize {
    let max = (1u16 << k) - 1;
    match k {
        2 => {
            let mut groups = z.chunks_exact_mut(4);
            for (g, &b) in groups.by_ref().zip(packed) {
                let b = u16::from(b);
                (g[0], g[1], g[2], g[3]) = (b & 3, (b >> 2) & 3, (b >> 4) & 3, b >> 6);
            }
            let last = packed.last().copied().map_or(0, u16::from);
            for (i, v) in groups.into_remainder().iter_mut().enumerate() {
                *v = (last >> (2 * i)) & 3;
            }
        }
        4 => {
            let mut pairs = z.chunks_exact_mut(2);
            for (p, &b) in pairs.by_ref().zip(packed) {
                (p[0], p[1]) = (u16::from(b & 15), u16::from(b >> 4));
            }
            if let [v] = pairs.into_remainder() {
                *v = packed.last().copied().map_or(0, |b| u16::from(b & 15));
            }
        }
        _ => z.iter_mut().zip(packed).for_each(|(v, &b)| *v = u16::from(b)),
    }
    z.iter().filter(|&&v| v == max).count()
}

/// Adds the escapes to the codes equal to `2^k - 1` (as many as the escape planes hold).
pub(crate) fn apply_escapes(z: &mut [u16], k: u8, esc_lo: &[u8], esc_hi: &[u8]) {
    let max = (1u16 << k) - 1;
    let mut escapes = esc_lo.iter().zip(esc_hi);
    // Escapes are a few per cent of elements: skip the blocks without any (a vectorised test).
    for block in z.chunks_mut(32) {
        if !block.iter().fold(false, |any, &v| any | (v == max)) {
            continue;
        }
        for v in block.iter_mut().filter(|v| **v == max) {
            let Some((&lo, &hi)) = escapes.next() else { return };
            *v = max.wrapping_add(u16::from_le_bytes([lo, hi]));
        }
    }
}

/// Writes the zigzag ordered-integer difference of 32-bit `target` against `base` into four planes.
pub(crate) fn diff32(base: &[u8], target: &[u8], planes: &mut [Vec<u8>]) {
    let [p0, p1, p2, p3] = planes else { return };
    let elems = target.chunks_exact(4).zip(base.chunks_exact(4));
    let outs = p0.iter_mut().zip(p1.iter_mut()).zip(p2.iter_mut()).zip(p3.iter_mut());
    for ((t, b), (((o0, o1), o2), o3)) in elems.zip(outs) {
        let t = u32::from_le_bytes([t[0], t[1], t[2], t[3]]);
        let b = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        let z = zigzag32(ordered32(t).wrapping_sub(ordered32(b))).to_le_bytes();
        (*o0, *o1, *o2, *o3) = (z[0], z[1], z[2], z[3]);
    }
}

/// The zigzag ordered-integer difference of 32-bit `target` against `base`: the low 16 bits as two byte
/// planes, the high 16 bits as numbers (which [`pack_codes`] packs: they are mostly zero).
pub(crate) fn diff32_split(base: &[u8], target: &[u8], p0: &mut [u8], p1: &mut [u8], high: &mut [u16]) {
    let elems = target.chunks_exact(4).zip(base.chunks_exact(4));
    for (((t, b), (o0, o1)), h) in elems.zip(p0.iter_mut().zip(p1.iter_mut())).zip(high.iter_mut()) {
        let t = u32::from_le_bytes([t[0], t[1], t[2], t[3]]);
        let b = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        let z = zigzag32(ordered32(t).wrapping_sub(ordered32(b)));
        (*o0, *o1, *h) = (z as u8, (z >> 8) as u8, (z >> 16) as u16);
    }
}

/// Inverse of [`diff32_split`].
pub(crate) fn undiff32_split(base: &[u8], p0: &[u8], p1: &[u8], high: &[u16], out: &mut [u8]) {
    let ins = p0.iter().zip(p1).zip(high);
    for ((o, b), ((&a0, &a1), &h)) in out.chunks_exact_mut(4).zip(base.chunks_exact(4)).zip(ins) {
        let b = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        let d = unzigzag32(u32::from(a0) | u32::from(a1) << 8 | u32::from(h) << 16);
        o.copy_from_slice(&ordered32(ordered32(b).wrapping_add(d)).to_le_bytes());
    }
}

/// Inverse of [`diff32`].
pub(crate) fn undiff32(base: &[u8], planes: [&[u8]; 4], out: &mut [u8]) {
    let [p0, p1, p2, p3] = planes;
    let ins = p0.iter().zip(p1).zip(p2).zip(p3);
    for ((o, b), (((&a0, &a1), &a2), &a3)) in out.chunks_exact_mut(4).zip(base.chunks_exact(4)).zip(ins) {
        let b = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        let d = unzigzag32(u32::from_le_bytes([a0, a1, a2, a3]));
        o.copy_from_slice(&ordered32(ordered32(b).wrapping_add(d)).to_le_bytes());
    }
}

/// Splits elements of `width` bytes, rotated left by one bit, into `width` planes (no base).
pub(crate) fn rotate_split(width: usize, data: &[u8], planes: &mut [Vec<u8>]) {
    match width {
        2 => {
            let (lo, rest) = planes.split_at_mut(1);
            for ((e, l), h) in data.chunks_exact(2).zip(lo[0].iter_mut()).zip(rest[0].iter_mut()) {
                let r = u16::from_le_bytes([e[0], e[1]]).rotate_left(1).to_le_bytes();
                (*l, *h) = (r[0], r[1]);
            }
        }
        4 => {
            for (i, e) in data.chunks_exact(4).enumerate() {
                let r = u32::from_le_bytes([e[0], e[1], e[2], e[3]]).rotate_left(1).to_le_bytes();
                for (plane, byte) in planes.iter_mut().zip(r) {
                    plane[i] = byte;
                }
            }
        }
        _ => {
            if let Some(plane) = planes.first_mut() {
                plane.copy_from_slice(data);
            }
        }
    }
}

/// Inverse of [`rotate_split`].
pub(crate) fn rotate_join(width: usize, planes: &[&[u8]], out: &mut [u8]) {
    match width {
        2 => {
            for ((o, &l), &h) in out.chunks_exact_mut(2).zip(planes[0]).zip(planes[1]) {
                o.copy_from_slice(&u16::from_le_bytes([l, h]).rotate_right(1).to_le_bytes());
            }
        }
        4 => {
            for (i, o) in out.chunks_exact_mut(4).enumerate() {
                let r = [planes[0][i], planes[1][i], planes[2][i], planes[3][i]];
                o.copy_from_slice(&u32::from_le_bytes(r).rotate_right(1).to_le_bytes());
            }
        }
        _ => out.copy_from_slice(planes[0]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordered_maps_are_involutions_that_order_like_the_values() {
        for x in [0u16, 1, 0x7fff, 0x8000, 0x8001, 0xffff, 0x3f80, 0xbf80] {
            assert_eq!(ordered16(ordered16(x)), x);
        }
        let vals = [-2.0f32, -1.0, -0.0, 0.0, 1e-30, 1.0, 3.5];
        let ord: Vec<i32> = vals.iter().map(|v| ordered32(v.to_bits()) as i32).collect();
        assert!(ord.windows(2).all(|w| w[0] < w[1]), "{ord:?}");
    }

    #[test]
    fn diff_and_rotate_round_trip_every_16_bit_pattern() {
        let target: Vec<u8> = (0..=u16::MAX).flat_map(|x| x.to_le_bytes()).collect();
        let base: Vec<u8> = (0..=u16::MAX).flat_map(|x| x.wrapping_mul(40503).to_le_bytes()).collect();
        let n = target.len() / 2;
        let (mut lo, mut hi) = (vec![0; n], vec![0; n]);
        diff16(&base, &target, &mut lo, &mut hi);
        let mut out = vec![0; target.len()];
        undiff16(&base, &lo, &hi, &mut out);
        assert_eq!(out, target);
        let mut planes = vec![vec![0; n], vec![0; n]];
        rotate_split(2, &target, &mut planes);
        let mut out = vec![0; target.len()];
        rotate_join(2, &[&planes[0], &planes[1]], &mut out);
        assert_eq!(out, target);
    }

    #[test]
    fn blocked_16_bit_diff_matches_the_planes_and_round_trips_at_odd_lengths() {
        for n in [0usize, 1, 31, 32, 33, 100] {
            let target: Vec<u8> = (0..n as u16).flat_map(|x| x.wrapping_mul(7919).to_le_bytes()).collect();
            let base: Vec<u8> = (0..n as u16).flat_map(|x| x.wrapping_mul(40_503).to_le_bytes()).collect();
            let mut z = vec![0u16; n];
            diff16_z(&base, &target, &mut z);
            let (mut lo, mut hi) = (vec![0; n], vec![0; n]);
            diff16(&base, &target, &mut lo, &mut hi);
            assert!(z.iter().zip(lo.iter().zip(&hi)).all(|(&z, (&l, &h))| z == u16::from_le_bytes([l, h])));
            let mut out = vec![0u8; 2 * n];
            undiff16_z(&base, &z, &mut out);
            assert_eq!(out, target);
        }
    }

    #[test]
    fn packed_codes_round_trip_at_every_width() {
        let z: Vec<u16> =
            (0..1001u32).map(|i| if i % 7 == 0 { (i * 37 % 65535) as u16 } else { (i % 5) as u16 }).collect();
        for k in CODE_BITS {
            let (mut packed, mut lo, mut hi) = (Vec::new(), Vec::new(), Vec::new());
            pack_codes(&z, k, &mut packed, &mut lo, &mut hi);
            assert_eq!(packed.len(), z.len().div_ceil(8 / usize::from(k)));
            let mut back = vec![0u16; z.len()];
            assert_eq!(unpack_codes(&packed, k, &mut back), lo.len());
            apply_escapes(&mut back, k, &lo, &hi);
            assert_eq!(back, z, "k={k}");
        }
        let mostly_zero: Vec<u16> = (0..1000u16).map(|i| u16::from(i % 9 == 0)).collect();
        assert_eq!(choose_code_bits(&mostly_zero), 2);
        let mut w = vec![0.5, 0.25, 0.25];
        assert!((huffman_bits_per_symbol(&mut w) - 1.5).abs() < 1e-9);
        assert_eq!(choose_code_bits(&(0..1000u16).map(|i| i % 200).collect::<Vec<_>>()), 8);
    }

    #[test]
    fn diff32_round_trips_and_small_changes_stay_in_the_low_plane() {
        let base: Vec<u8> =
            [1.0f32, -1.0, 0.0, -0.0, f32::MAX, f32::NAN].iter().flat_map(|v| v.to_le_bytes()).collect();
        let target: Vec<u8> =
            [1.0000001f32, -1.0000001, -0.0, 1e-45, f32::MIN, 2.0].iter().flat_map(|v| v.to_le_bytes()).collect();
        let n = base.len() / 4;
        let mut planes = [vec![0; n], vec![0; n], vec![0; n], vec![0; n]];
        diff32(&base, &target, &mut planes);
        assert_eq!(planes[0][0], 2);
        assert_eq!(planes[1][0], 0);
        let mut out = vec![0; target.len()];
        undiff32(&base, [&planes[0], &planes[1], &planes[2], &planes[3]], &mut out);
        assert_eq!(out, target);
        let (mut p0, mut p1, mut high) = (vec![0; n], vec![0; n], vec![0u16; n]);
        diff32_split(&base, &target, &mut p0, &mut p1, &mut high);
        assert_eq!(high[0], 0, "a one-unit change stays in the low bytes");
        let mut out = vec![0; target.len()];
        undiff32_split(&base, &p0, &p1, &high, &mut out);
        assert_eq!(out, target);
        let mut rot = vec![vec![0; n]; 4];
        rotate_split(4, &target, &mut rot);
        let mut out = vec![0; target.len()];
        rotate_join(4, &[&rot[0], &rot[1], &rot[2], &rot[3]], &mut out);
        assert_eq!(out, target);
    }
}
