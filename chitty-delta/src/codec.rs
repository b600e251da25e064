//! Sections: byte strings stored zero-length (all zeros), raw or zstd-compressed, whichever is smallest.
//!
//! A section is `encoding u8 | raw_len u32 LE | stored_len u32 LE | stored bytes`.

use std::cell::RefCell;
use std::io::Cursor;

use crate::error::DeltaError;

const ZERO: u8 = 0;
const RAW: u8 = 1;
const ZSTD: u8 = 2;

/// Bytes of a section's own header.
pub(crate) const SECTION_HEADER_LEN: usize = 9;

/// zstd's shortest match for [`encode_literal_section`]: its largest, so that runs in noise-like codes
/// stay literals (shorter spurious matches cost more than the Huffman code of the bytes they cover).
const LITERAL_MIN_MATCH: u32 = 7;
/// zstd's hash table for [`encode_literal_section`]: 1 Ki entries, which stay in the L1 cache.
const LITERAL_HASH_LOG: u32 = 10;

type CachedCompressor = RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>>;

thread_local! {
    static COMPRESSOR: CachedCompressor = const { RefCell::new(None) };
    static LITERAL_COMPRESSOR: CachedCompressor = const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
}

/// Appends `raw` to `out` as a section, choosing the smallest of zero, raw and zstd at `level`.
pub(crate) fn encode_section(raw: &[u8], level: i32, out: &mut Vec<u8>) -> Result<(), DeltaError> {
    encode_with(&COMPRESSOR, &[], raw, level, out)
}

/// [`encode_section`] for planes of packed delta codes and escapes, which are noise-like: zstd tuned to
/// leave them to its Huffman literal coder. On the 1 GB BF16 pair this stored 1.2% less than plain
/// level 1 and halved zstd's time (`docs/delta.md`).
pub(crate) fn encode_literal_section(raw: &[u8], level: i32, out: &mut Vec<u8>) -> Result<(), DeltaError> {
    let params = [
        zstd::zstd_safe::CParameter::MinMatch(LITERAL_MIN_MATCH),
        zstd::zstd_safe::CParameter::HashLog(LITERAL_HASH_LOG),
    ];
    encode_with(&LITERAL_COMPRESSOR, &params, raw, level, out)
}

fn encode_with(
    cache: &'static std::thread::LocalKey<CachedCompressor>,
    params: &[zstd::zstd_safe::CParameter],
    raw: &[u8],
    level: i32,
    out: &mut Vec<u8>,
) -> Result<(), DeltaError> {
    let raw_len = u32::try_from(raw.len())
        .map_err(|_| DeltaError::InvalidConfig { reason: "a section exceeds 4 GiB".to_owned() })?;
    let header_at = out.len();
    out.push(ZERO);
    out.extend_from_slice(&raw_len.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    if raw.iter().all(|&b| b == 0) {
        return Ok(());
    }
    let body_at = out.len();
    out.reserve(zstd::zstd_safe::compress_bound(raw.len()));
    let compressed = cache.with(|cell| -> std::io::Result<usize> {
        let mut slot = cell.borrow_mut();
        if !matches!(&*slot, Some((l, _)) if *l == level) {
            let mut compressor = zstd::bulk::Compressor::new(level)?;
            for &param in params {
                compressor.set_parameter(param)?;
            }
            *slot = Some((level, compressor));
        }
        let mut cursor = Cursor::new(&mut *out);
        cursor.set_position(body_at as u64);
        match slot.as_mut() {
            Some((_, compressor)) => compressor.compress_to_buffer(raw, &mut cursor),
            None => Err(std::io::Error::other("no zstd compressor")),
        }
    });
    let (encoding, stored_len) = match compressed {
        Ok(n) if n < raw.len() => (ZSTD, n),
        _ => {
            out.truncate(body_at);
            out.extend_from_slice(raw);
            (RAW, raw.len())
        }
    };
    out[header_at] = encoding;
    // stored_len <= raw_len, which fits in u32.
    out[header_at + 5..header_at + 9].copy_from_slice(&(stored_len as u32).to_le_bytes());
    Ok(())
}

/// Reads one section from the front of `input` (advancing it) and appends its raw bytes to `out`.
///
/// `max_raw_len` bounds what a corrupt section can make the decoder allocate.
pub(crate) fn decode_section(
    input: &mut &[u8],
    max_raw_len: usize,
    out: &mut Vec<u8>,
    part: &str,
) -> Result<usize, DeltaError> {
    let header: [u8; SECTION_HEADER_LEN] = take(input, SECTION_HEADER_LEN, part)?
        .try_into()
        .map_err(|_| DeltaError::corrupt(part, "short section header"))?;
    let encoding = header[0];
    let raw_len = u32::from_le_bytes([header[1], header[2], header[3], header[4]]) as usize;
    let stored_len = u32::from_le_bytes([header[5], header[6], header[7], header[8]]) as usize;
    if raw_len > max_raw_len {
        return Err(DeltaError::corrupt(part, format!("section of {raw_len} bytes exceeds {max_raw_len}")));
    }
    let stored = take(input, stored_len, part)?;
    match encoding {
        ZERO if stored_len == 0 => out.resize(out.len() + raw_len, 0),
        RAW if stored_len == raw_len => out.extend_from_slice(stored),
        ZSTD => {
            let start = out.len();
            out.reserve(raw_len);
            let written = DECOMPRESSOR.with(|cell| -> std::io::Result<usize> {
                let mut slot = cell.borrow_mut();
                if slot.is_none() {
                    *slot = Some(zstd::bulk::Decompressor::new()?);
                }
                let Some(decompressor) = slot.as_mut() else {
                    return Err(std::io::Error::other("no zstd decompressor"));
                };
                let mut cursor = Cursor::new(&mut *out);
                cursor.set_position(start as u64);
                decompressor.decompress_to_buffer(stored, &mut cursor)
            });
            match written {
                Ok(n) if n == raw_len => {}
                Ok(n) => {
                    out.truncate(start);
                    return Err(DeltaError::corrupt(part, format!("zstd gave {n} bytes, expected {raw_len}")));
                }
                Err(e) => {
                    out.truncate(start);
                    return Err(DeltaError::corrupt(part, format!("zstd: {e}")));
                }
            }
        }
        _ => {
            return Err(DeltaError::corrupt(
                part,
                format!("invalid section encoding {encoding} with {stored_len} of {raw_len} bytes"),
            ));
        }
    }
    Ok(raw_len)
}

/// Splits `n` bytes off the front of `input`.
pub(crate) fn take<'a>(input: &mut &'a [u8], n: usize, part: &str) -> Result<&'a [u8], DeltaError> {
    if input.len() < n {
        return Err(DeltaError::corrupt(part, format!("payload ends {} bytes early", n - input.len())));
    }
    let (head, rest) = input.split_at(n);
    *input = rest;
    Ok(head)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_round_trip_in_each_encoding() {
        let zeros = vec![0u8; 1000];
        let text = b"abcabcabcabcabcabcabcabcabcabcabcabcabc".repeat(20);
        let noise: Vec<u8> = (0..1000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
        let mut out = Vec::new();
        for raw in [&zeros[..], &text[..], &noise[..], &[][..]] {
            encode_section(raw, 3, &mut out).unwrap();
        }
        assert_eq!(out[0], ZERO);
        let mut input = &out[..];
        for raw in [&zeros[..], &text[..], &noise[..], &[][..]] {
            let mut got = Vec::new();
            decode_section(&mut input, 1000, &mut got, "t").unwrap();
            assert_eq!(got, raw);
        }
        assert!(input.is_empty());
    }

    #[test]
    fn corrupt_sections_are_errors() {
        let mut out = Vec::new();
        encode_section(&b"hello hello hello hello hello".repeat(10), 3, &mut out).unwrap();
        let mut got = Vec::new();
        assert!(decode_section(&mut &out[..], 10, &mut got, "t").is_err());
        assert!(decode_section(&mut &out[..out.len() - 1], 1000, &mut got, "t").is_err());
        let mut bad = out.clone();
        bad[0] = 7;
        assert!(decode_section(&mut &bad[..], 1000, &mut got, "t").is_err());
        let mut bad = out.clone();
        bad[1] ^= 1;
        assert!(decode_section(&mut &bad[..], 1000, &mut got, "t").is_err());
    }
}
