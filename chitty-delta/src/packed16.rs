//! Fused 16-bit kernels of the lossless delta: difference, code packing and escapes in one pass over
//! blocks of 64 elements, and the inverse, so no array of numbers leaves the L1 cache between steps.
//!
//! The bytes are those of [`transform::diff16_z`] followed by [`transform::pack_codes`] (and the
//! inverse of both); the tests hold the kernels to that. Each kernel has one portable body; on x86-64
//! the same body is also compiled for AVX2 and chosen at run time (the workspace builds for generic
//! x86-64, where the 16-bit loops get SSE2 only).

use crate::transform::{self, diff_one, undiff_one};

/// Elements per block: a whole number of 64-bit words of packed codes at every width.
const BLOCK: usize = 64;

/// Chunks of at least this many elements choose their code width from a sample of their blocks.
const SAMPLE_FROM: usize = 1 << 16;

/// Blocks in a run of a sample: 4 KiB of elements, long enough for the hardware prefetcher (single
/// blocks one in eight apart left the sampling loop waiting on memory, at 18% of compress time).
const SAMPLE_RUN: usize = 32;

/// One run in this many is sampled to choose the code width of a large chunk.
const SAMPLE_STRIDE: usize = 16;

/// The four 2-bit codes of a byte in the four 16-bit lanes of a `u64`, low code first.
static SPREAD2: [u64; 256] = {
    let mut table = [0u64; 256];
    let mut byte = 0;
    while byte < 256 {
        let mut lane = 0;
        while lane < 4 {
            table[byte] |= (((byte >> (2 * lane)) & 3) as u64) << (16 * lane);
            lane += 1;
        }
        byte += 1;
    }
    table
};

/// The two 4-bit codes of a byte in the two 16-bit lanes of a `u32`, low code first.
static SPREAD4: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut byte = 0;
    while byte < 256 {
        table[byte] = (byte as u32 & 15) | ((byte as u32 >> 4) << 16);
        byte += 1;
    }
    table
};

/// One bit per code of `w` (at the code's lowest bit, or its highest for 8-bit codes) that is set when
/// the code is all ones, i.e. an escape.
#[inline(always)]
fn escape_mask<const K: u32>(w: u64) -> u64 {
    match K {
        2 => w & (w >> 1) & 0x5555_5555_5555_5555,
        4 => w & (w >> 1) & (w >> 2) & (w >> 3) & 0x1111_1111_1111_1111,
        _ => {
            // A byte of `!w` is zero exactly when the byte of `w` is 0xff (no carry crosses bytes).
            let y = !w;
            !(((y & 0x7f7f_7f7f_7f7f_7f7f).wrapping_add(0x7f7f_7f7f_7f7f_7f7f)) | y) & 0x8080_8080_8080_8080
        }
    }
}

/// Spreads the `64 / K` codes of `w` into `z`.
#[inline(always)]
fn unpack_word<const K: u32>(w: u64, z: &mut [u16]) {
    let bytes = w.to_le_bytes();
    match K {
        2 => {
            for (lanes, &byte) in z.chunks_exact_mut(4).zip(&bytes) {
                let v = SPREAD2[usize::from(byte)];
                for (l, lane) in lanes.iter_mut().enumerate() {
                    *lane = (v >> (16 * l)) as u16;
                }
            }
        }
        4 => {
            for (lanes, &byte) in z.chunks_exact_mut(2).zip(&bytes) {
                let v = SPREAD4[usize::from(byte)];
                (lanes[0], lanes[1]) = (v as u16, (v >> 16) as u16);
            }
        }
        _ => z.iter_mut().zip(bytes).for_each(|(lane, byte)| *lane = u16::from(byte)),
    }
}

/// The escape value `z - max` of escape `i`, when the planes hold it.
#[inline(always)]
fn escape(esc_lo: &[u8], esc_hi: &[u8], i: usize) -> Option<u16> {
    Some(u16::from_le_bytes([*esc_lo.get(i)?, *esc_hi.get(i)?]))
}

#[inline(always)]
fn pack16_k<const K: u32>(
    base: &[u8],
    target: &[u8],
    packed: &mut Vec<u8>,
    esc_lo: &mut Vec<u8>,
    esc_hi: &mut Vec<u8>,
) {
    let max = (1u16 << K) - 1;
    let per_byte = (8 / K) as usize;
    let per_word = (64 / K) as usize;
    let block_bytes = 8 * K as usize;
    let (t_blocks, t_tail) = target.as_chunks::<{ 2 * BLOCK }>();
    let (b_blocks, b_tail) = base.as_chunks::<{ 2 * BLOCK }>();
    let mut z = [0u16; BLOCK];
    let mut bytes = [0u8; 8 * 8];
    for (t, b) in t_blocks.iter().zip(b_blocks) {
        let (t2, _) = t.as_chunks::<2>();
        let (b2, _) = b.as_chunks::<2>();
        for ((z, &t), &b) in z.iter_mut().zip(t2).zip(b2) {
            *z = diff_one(t, b);
        }
        let bytes = &mut bytes[..block_bytes];
        for (byte, codes) in bytes.iter_mut().zip(z.chunks_exact(per_byte)) {
            *byte = codes.iter().enumerate().fold(0u8, |acc, (l, &v)| acc | (v.min(max) as u8) << (K as usize * l));
        }
        packed.extend_from_slice(bytes);
        let (words, _) = bytes.as_chunks::<8>();
        for (h, w) in words.iter().enumerate() {
            let mut bits = escape_mask::<K>(u64::from_le_bytes(*w));
            while bits != 0 {
                let e = z[h * per_word + (bits.trailing_zeros() / K) as usize].wrapping_sub(max);
                esc_lo.push(e as u8);
                esc_hi.push((e >> 8) as u8);
                bits &= bits - 1;
            }
        }
    }
    let (t2, _) = t_tail.as_chunks::<2>();
    let (b2, _) = b_tail.as_chunks::<2>();
    let (mut acc, mut filled) = (0u8, 0usize);
    for (&t, &b) in t2.iter().zip(b2) {
        let z = diff_one(t, b);
        acc |= (z.min(max) as u8) << (K as usize * filled);
        if z >= max {
            let e = z - max;
            esc_lo.push(e as u8);
            esc_hi.push((e >> 8) as u8);
        }
        filled += 1;
        if filled == per_byte {
            packed.push(acc);
            (acc, filled) = (0, 0);
        }
    }
    if filled > 0 {
        packed.push(acc);
    }
}

#[inline(always)]
fn unpack16_k<const K: u32>(base: &[u8], packed: &[u8], esc_lo: &[u8], esc_hi: &[u8], out: &mut [u8]) -> usize {
    let max = (1u16 << K) - 1;
    let per_word = (64 / K) as usize;
    let mut escapes = 0usize;
    let (o_blocks, o_tail) = out.as_chunks_mut::<{ 2 * BLOCK }>();
    let (b_blocks, b_tail) = base.as_chunks::<{ 2 * BLOCK }>();
    let mut z = [0u16; BLOCK];
    let mut blocks = 0usize;
    for ((o, b), p) in o_blocks.iter_mut().zip(b_blocks).zip(packed.chunks_exact(8 * K as usize)) {
        let (words, _) = p.as_chunks::<8>();
        for (w, z) in words.iter().zip(z.chunks_exact_mut(per_word)) {
            unpack_word::<K>(u64::from_le_bytes(*w), z);
        }
        for (h, w) in words.iter().enumerate() {
            let mut bits = escape_mask::<K>(u64::from_le_bytes(*w));
            while bits != 0 {
                if let Some(e) = escape(esc_lo, esc_hi, escapes) {
                    z[h * per_word + (bits.trailing_zeros() / K) as usize] = max.wrapping_add(e);
                }
                escapes += 1;
                bits &= bits - 1;
            }
        }
        let (o2, _) = o.as_chunks_mut::<2>();
        let (b2, _) = b.as_chunks::<2>();
        for ((o, &b), &z) in o2.iter_mut().zip(b2).zip(&z) {
            *o = undiff_one(b, z);
        }
        blocks += 1;
    }
    let (o2, _) = o_tail.as_chunks_mut::<2>();
    let (b2, _) = b_tail.as_chunks::<2>();
    for (i, (o, &b)) in o2.iter_mut().zip(b2).enumerate() {
        let bit = (blocks * BLOCK + i) * K as usize;
        let code = packed.get(bit / 8).map_or(0, |&byte| (u16::from(byte) >> (bit % 8)) & max);
        let z = if code == max {
            escapes += 1;
            escape(esc_lo, esc_hi, escapes - 1).map_or(max, |e| max.wrapping_add(e))
        } else {
            code
        };
        *o = undiff_one(b, z);
    }
    escapes
}

#[inline(always)]
fn pack16_any(k: u8, base: &[u8], target: &[u8], packed: &mut Vec<u8>, esc_lo: &mut Vec<u8>, esc_hi: &mut Vec<u8>) {
    match k {
        2 => pack16_k::<2>(base, target, packed, esc_lo, esc_hi),
        4 => pack16_k::<4>(base, target, packed, esc_lo, esc_hi),
        _ => pack16_k::<8>(base, target, packed, esc_lo, esc_hi),
    }
}

#[inline(always)]
fn unpack16_any(k: u8, base: &[u8], packed: &[u8], esc_lo: &[u8], esc_hi: &[u8], out: &mut [u8]) -> usize {
    match k {
        2 => unpack16_k::<2>(base, packed, esc_lo, esc_hi, out),
        4 => unpack16_k::<4>(base, packed, esc_lo, esc_hi, out),
        _ => unpack16_k::<8>(base, packed, esc_lo, esc_hi, out),
    }
}

fn pack16_portable(k: u8, base: &[u8], target: &[u8], packed: &mut Vec<u8>, lo: &mut Vec<u8>, hi: &mut Vec<u8>) {
    pack16_any(k, base, target, packed, lo, hi);
}

fn unpack16_portable(k: u8, base: &[u8], packed: &[u8], lo: &[u8], hi: &[u8], out: &mut [u8]) -> usize {
    unpack16_any(k, base, packed, lo, hi, out)
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    /// Whether this CPU has the features the AVX2 builds below are compiled for.
    pub(super) fn detected() -> bool {
        std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("bmi1")
            && std::arch::is_x86_feature_detected!("bmi2")
    }

    #[target_feature(enable = "avx2,bmi1,bmi2")]
    fn pack16(k: u8, base: &[u8], target: &[u8], packed: &mut Vec<u8>, lo: &mut Vec<u8>, hi: &mut Vec<u8>) {
        super::pack16_any(k, base, target, packed, lo, hi);
    }

    #[target_feature(enable = "avx2,bmi1,bmi2")]
    fn unpack16(k: u8, base: &[u8], packed: &[u8], lo: &[u8], hi: &[u8], out: &mut [u8]) -> usize {
        super::unpack16_any(k, base, packed, lo, hi, out)
    }

    /// Runs the AVX2 build of [`super::pack16`] if the CPU has AVX2; `false` when it did not run.
    #[allow(unsafe_code)]
    pub(super) fn try_pack16(
        k: u8,
        base: &[u8],
        target: &[u8],
        packed: &mut Vec<u8>,
        lo: &mut Vec<u8>,
        hi: &mut Vec<u8>,
    ) -> bool {
        if !detected() {
            return false;
        }
        // SAFETY: `detected()` has just found AVX2, BMI1 and BMI2 on this CPU, all `pack16` is built for.
        unsafe { pack16(k, base, target, packed, lo, hi) };
        true
    }

    /// Runs the AVX2 build of [`super::unpack16`] if the CPU has AVX2; `None` when it did not run.
    #[allow(unsafe_code)]
    pub(super) fn try_unpack16(
        k: u8,
        base: &[u8],
        packed: &[u8],
        lo: &[u8],
        hi: &[u8],
        out: &mut [u8],
    ) -> Option<usize> {
        // SAFETY: `detected()` has just found AVX2, BMI1 and BMI2 on this CPU, all `unpack16` is built for.
        detected().then(|| unsafe { unpack16(k, base, packed, lo, hi, out) })
    }
}

/// Appends the `k`-bit codes of the zigzag ordered-integer difference of 16-bit `target` against `base`
/// (same length) to `packed`, and its escapes to `esc_lo` / `esc_hi`: the bytes of
/// [`transform::diff16_z`] then [`transform::pack_codes`] (`k` is 2, 4 or 8).
pub(crate) fn pack16(k: u8, base: &[u8], target: &[u8], packed: &mut Vec<u8>, lo: &mut Vec<u8>, hi: &mut Vec<u8>) {
    let n = target.len() / 2;
    packed.reserve(n.div_ceil(usize::from(8 / k.max(1))));
    #[cfg(target_arch = "x86_64")]
    if x86::try_pack16(k, base, target, packed, lo, hi) {
        return;
    }
    pack16_portable(k, base, target, packed, lo, hi);
}

/// Rebuilds 16-bit elements into `out` (as long as `base`) from `base`, the `k`-bit codes in `packed`
/// (exactly enough bytes) and the escape planes; returns how many codes are escapes, which the caller
/// compares with the planes' length (codes past the end of the planes are left unescaped).
pub(crate) fn unpack16(k: u8, base: &[u8], packed: &[u8], lo: &[u8], hi: &[u8], out: &mut [u8]) -> usize {
    #[cfg(target_arch = "x86_64")]
    if let Some(escapes) = x86::try_unpack16(k, base, packed, lo, hi, out) {
        return escapes;
    }
    unpack16_portable(k, base, packed, lo, hi, out)
}

/// The code width for the difference of 16-bit `target` against `base`, as [`transform::choose_code_bits`]
/// picks it, from a histogram of one run of blocks in [`SAMPLE_STRIDE`] of a large chunk (every element of a
/// small one), computed without storing the numbers.
pub(crate) fn choose_code_bits16(base: &[u8], target: &[u8]) -> u8 {
    let (t_blocks, t_tail) = target.as_chunks::<{ 2 * BLOCK }>();
    let (b_blocks, b_tail) = base.as_chunks::<{ 2 * BLOCK }>();
    let stride = if target.len() / 2 >= SAMPLE_FROM { SAMPLE_STRIDE } else { 1 };
    // Four tables, so that runs of one value do not wait on their own previous increment.
    let mut hists = [[0u32; 257]; 4];
    let mut count = |t: &[u8], b: &[u8]| {
        let (t2, _) = t.as_chunks::<2>();
        let (b2, _) = b.as_chunks::<2>();
        for (i, (&t, &b)) in t2.iter().zip(b2).enumerate() {
            hists[i & 3][usize::from(diff_one(t, b).min(256))] += 1;
        }
    };
    for (i, (t, b)) in t_blocks.iter().zip(b_blocks).enumerate() {
        if (i / SAMPLE_RUN).is_multiple_of(stride) {
            count(t, b);
        }
    }
    if stride == 1 {
        count(t_tail, b_tail);
    }
    let mut hist = [0u64; 257];
    for (i, h) in hist.iter_mut().enumerate() {
        *h = hists.iter().map(|t| u64::from(t[i])).sum();
    }
    transform::choose_code_bits_from_histogram(&hist)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::transform::CODE_BITS;

    /// A base and a target that differs from it mostly by a few units, sometimes by anything.
    fn pair() -> impl Strategy<Value = (Vec<u8>, Vec<u8>)> {
        prop::collection::vec((any::<u16>(), prop_oneof![8 => -3i16..=3, 1 => any::<i16>()]), 0..700).prop_map(|v| {
            let base = v.iter().flat_map(|&(b, _)| b.to_le_bytes()).collect();
            let target = v.iter().flat_map(|&(b, d)| b.wrapping_add_signed(d).to_le_bytes()).collect();
            (base, target)
        })
    }

    fn reference(k: u8, base: &[u8], target: &[u8]) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
        let mut z = vec![0u16; target.len() / 2];
        transform::diff16_z(base, target, &mut z);
        let (mut packed, mut lo, mut hi) = (Vec::new(), Vec::new(), Vec::new());
        transform::pack_codes(&z, k, &mut packed, &mut lo, &mut hi);
        (packed, lo, hi)
    }

    proptest! {
        #[test]
        fn kernels_match_the_reference_and_round_trip((base, target) in pair(), k in prop::sample::select(CODE_BITS.to_vec())) {
            let expected = reference(k, &base, &target);
            let (mut packed, mut lo, mut hi) = (Vec::new(), Vec::new(), Vec::new());
            pack16_portable(k, &base, &target, &mut packed, &mut lo, &mut hi);
            prop_assert_eq!(&(packed.clone(), lo.clone(), hi.clone()), &expected);
            let (mut p2, mut lo2, mut hi2) = (Vec::new(), Vec::new(), Vec::new());
            pack16(k, &base, &target, &mut p2, &mut lo2, &mut hi2);
            prop_assert_eq!(&(p2, lo2, hi2), &expected);

            let mut out = vec![0u8; target.len()];
            prop_assert_eq!(unpack16_portable(k, &base, &packed, &lo, &hi, &mut out), lo.len());
            prop_assert_eq!(&out, &target);
            let mut out = vec![0u8; target.len()];
            prop_assert_eq!(unpack16(k, &base, &packed, &lo, &hi, &mut out), lo.len());
            prop_assert_eq!(&out, &target);
        }

        #[test]
        fn missing_escapes_are_counted_not_invented((base, target) in pair(), k in prop::sample::select(CODE_BITS.to_vec())) {
            let (packed, lo, hi) = reference(k, &base, &target);
            prop_assume!(!lo.is_empty());
            let mut out = vec![0u8; target.len()];
            let found = unpack16(k, &base, &packed, &lo[..lo.len() - 1], &hi[..hi.len() - 1], &mut out);
            prop_assert_eq!(found, lo.len());
            let mut out2 = vec![0u8; target.len()];
            prop_assert_eq!(unpack16_portable(k, &base, &packed, &lo[..lo.len() - 1], &hi, &mut out2), lo.len());
            prop_assert_eq!(out, out2);
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_avx2_build_runs_here_when_the_cpu_has_it() {
        let base: Vec<u8> = (0..5000u16).flat_map(|i| i.wrapping_mul(40_503).to_le_bytes()).collect();
        let target: Vec<u8> = base
            .chunks_exact(2)
            .enumerate()
            .flat_map(|(i, b)| (u16::from_le_bytes([b[0], b[1]]) ^ (i % 5) as u16).to_le_bytes())
            .collect();
        for k in CODE_BITS {
            let (mut packed, mut lo, mut hi) = (Vec::new(), Vec::new(), Vec::new());
            let ran = x86::try_pack16(k, &base, &target, &mut packed, &mut lo, &mut hi);
            assert_eq!(ran, x86::detected());
            if ran {
                assert_eq!((packed.clone(), lo.clone(), hi.clone()), reference(k, &base, &target));
                let mut out = vec![0u8; target.len()];
                assert_eq!(x86::try_unpack16(k, &base, &packed, &lo, &hi, &mut out), Some(lo.len()));
                assert_eq!(out, target);
            }
        }
    }

    #[test]
    fn sampled_width_choice_agrees_with_the_full_one_on_uniform_data() {
        let n = 1 << 17;
        let base: Vec<u8> =
            (0..n as u32).flat_map(|i| ((i.wrapping_mul(2_654_435_761) >> 16) as u16).to_le_bytes()).collect();
        for spread in [1u32, 6, 200] {
            let target: Vec<u8> = base
                .chunks_exact(2)
                .enumerate()
                .flat_map(|(i, b)| {
                    let d = (i as u32).wrapping_mul(2_246_822_519) >> 7;
                    u16::from_le_bytes([b[0], b[1]])
                        .wrapping_add((d % (2 * spread + 1)) as u16)
                        .wrapping_sub(spread as u16)
                        .to_le_bytes()
                })
                .collect();
            let mut z = vec![0u16; n];
            transform::diff16_z(&base, &target, &mut z);
            assert_eq!(choose_code_bits16(&base, &target), transform::choose_code_bits(&z), "spread {spread}");
        }
    }
}
