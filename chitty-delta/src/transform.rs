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
        let mut rot = vec![vec![0; n]; 4];
        rotate_split(4, &target, &mut rot);
        let mut out = vec![0; target.len()];
        rotate_join(4, &[&rot[0], &rot[1], &rot[2], &rot[3]], &mut out);
        assert_eq!(out, target);
    }
}
