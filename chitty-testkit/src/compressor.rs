//! The conformance suite every [`Compressor`] runs.
//!
//! Each function checks one clause of the trait's contract and panics with a message saying which input
//! broke it. The clause behind all corruption checks: decoding either fails with a typed error, having
//! written only a prefix of the correct output (bytes it verified), or writes the correct output.
//!
//! ```
//! use chitty_core::{Compressor, CompressorError, DecodeReport, EncodeReport};
//! use std::io::{Read, Write};
//!
//! /// Stores the target whole behind a length and a checksum, ignoring the base.
//! #[derive(Debug)]
//! struct Stored;
//! impl Compressor for Stored {
//!     fn format(&self) -> &str { "stored" }
//!     fn encode(&self, _: Option<&[u8]>, target: &[u8], out: &mut dyn Write) -> Result<EncodeReport, CompressorError> {
//!         out.write_all(&(target.len() as u64).to_le_bytes())?;
//!         out.write_all(&sum(target).to_le_bytes())?;
//!         out.write_all(target)?;
//!         Ok(EncodeReport { input_bytes: target.len() as u64, output_bytes: target.len() as u64 + 16, parts: vec![] })
//!     }
//!     fn decode(&self, _: Option<&[u8]>, archive: &mut dyn Read, out: &mut dyn Write) -> Result<DecodeReport, CompressorError> {
//!         let corrupt = |reason: &str| CompressorError::corrupt("body", reason);
//!         let mut all = Vec::new();
//!         archive.read_to_end(&mut all)?;
//!         if all.len() < 16 { return Err(corrupt("short")); }
//!         let len = u64::from_le_bytes(all[..8].try_into().unwrap());
//!         let body = &all[16..];
//!         if body.len() as u64 != len || sum(body).to_le_bytes() != all[8..16] { return Err(corrupt("checksum")); }
//!         out.write_all(body)?;
//!         Ok(DecodeReport { input_bytes: all.len() as u64, output_bytes: len, parts_verified: 1 })
//!     }
//! }
//! fn sum(b: &[u8]) -> u64 { b.iter().fold(17u64, |h, &x| h.wrapping_mul(1_000_003).wrapping_add(x as u64)) }
//!
//! chitty_testkit::compressor::round_trip(&Stored, None, b"hello world");
//! chitty_testkit::compressor::flipped_bytes_are_detected(&Stored, None, b"hello world", 64);
//! chitty_testkit::compressor::truncation_is_detected(&Stored, None, b"hello world", 64);
//! chitty_testkit::compressor::garbage_is_refused(&Stored, None);
//! ```

use std::panic::{AssertUnwindSafe, catch_unwind};

use chitty_core::{Compressor, CompressorError, EncodeReport};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// Encodes `target` against `base`, or panics naming the compressor.
pub fn encode(c: &dyn Compressor, base: Option<&[u8]>, target: &[u8]) -> (Vec<u8>, EncodeReport) {
    let mut archive = Vec::new();
    let report = match c.encode(base, target, &mut archive) {
        Ok(r) => r,
        Err(e) => panic!("{}: encode failed: {e}", c.format()),
    };
    assert_eq!(report.output_bytes, archive.len() as u64, "{}: output_bytes must count the archive", c.format());
    assert_eq!(report.input_bytes, target.len() as u64, "{}: input_bytes must count the target", c.format());
    (archive, report)
}

/// Decodes, catching panics: `Ok(Ok(..))` on success, `Ok(Err(e))` on a typed error, `Err(written)` never.
fn decode_caught(c: &dyn Compressor, base: Option<&[u8]>, archive: &[u8]) -> (Vec<u8>, Result<(), CompressorError>) {
    let mut out = Vec::new();
    let mut input = archive;
    let result = catch_unwind(AssertUnwindSafe(|| c.decode(base, &mut input, &mut out)));
    match result {
        Ok(r) => (out, r.map(|_| ())),
        Err(_) => panic!("{}: decode panicked on an archive of {} bytes", c.format(), archive.len()),
    }
}

/// Decodes a valid archive and returns what was written.
pub fn decode(c: &dyn Compressor, base: Option<&[u8]>, archive: &[u8]) -> Vec<u8> {
    match decode_caught(c, base, archive) {
        (out, Ok(())) => out,
        (_, Err(e)) => panic!("{}: decode of a valid archive failed: {e}", c.format()),
    }
}

/// `decode(base, encode(base, target)) == target` (for lossless configurations), and reports add up.
pub fn round_trip(c: &dyn Compressor, base: Option<&[u8]>, target: &[u8]) -> EncodeReport {
    let (archive, report) = encode(c, base, target);
    let mut out = Vec::new();
    let decoded = c
        .decode(base, &mut archive.as_slice(), &mut out)
        .unwrap_or_else(|e| panic!("{}: decode failed: {e}", c.format()));
    assert!(out == target, "{}: round trip changed the bytes ({} in, {} out)", c.format(), target.len(), out.len());
    assert_eq!(decoded.output_bytes, target.len() as u64, "{}: output_bytes", c.format());
    assert_eq!(decoded.input_bytes, archive.len() as u64, "{}: input_bytes", c.format());
    report
}

/// The clause every corruption check rests on: an error, after writing at most a prefix of `expected`.
fn assert_safe_failure(
    c: &dyn Compressor,
    case: &str,
    written: &[u8],
    result: Result<(), CompressorError>,
    expected: &[u8],
) -> CompressorError {
    assert!(
        expected.starts_with(written),
        "{}: {case}: wrote {} bytes that are not a prefix of the correct output",
        c.format(),
        written.len()
    );
    match result {
        Ok(()) => panic!("{}: {case}: decode succeeded", c.format()),
        Err(e) => e,
    }
}

/// Positions to damage: every byte of short archives, else the first and last 256 and `samples` spread
/// evenly between (so every part of a structured archive gets hit).
fn positions(len: usize, samples: usize) -> Vec<usize> {
    if len <= 512 + samples {
        return (0..len).collect();
    }
    let mut p: Vec<usize> = (0..256).chain(len - 256..len).collect();
    p.extend((0..samples).map(|i| 256 + i * (len - 512) / samples));
    p
}

/// Flipping any one byte of the archive makes decode fail with [`CompressorError::Corrupt`] naming a part, having
/// written only verified bytes. `samples` bounds the positions tried beyond the first and last 256.
pub fn flipped_bytes_are_detected(c: &dyn Compressor, base: Option<&[u8]>, target: &[u8], samples: usize) {
    let (archive, _) = encode(c, base, target);
    let expected = decode(c, base, &archive);
    for pos in positions(archive.len(), samples) {
        for mask in [0x01u8, 0x80, 0xff] {
            let mut damaged = archive.clone();
            damaged[pos] ^= mask;
            let (written, result) = decode_caught(c, base, &damaged);
            let case = format!("byte {pos} of {} xor {mask:#04x}", archive.len());
            match assert_safe_failure(c, &case, &written, result, &expected) {
                CompressorError::Corrupt { part, .. } => {
                    assert!(!part.is_empty(), "{}: {case}: unnamed part", c.format())
                }
                other => panic!("{}: {case}: expected Corrupt, got {other}", c.format()),
            }
        }
    }
}

/// Every truncation of the archive (all of them for short archives, else a spread of `samples`) and
/// trailing bytes after it are [`CompressorError::Corrupt`], having written only verified bytes.
pub fn truncation_is_detected(c: &dyn Compressor, base: Option<&[u8]>, target: &[u8], samples: usize) {
    let (archive, _) = encode(c, base, target);
    let expected = decode(c, base, &archive);
    for cut in positions(archive.len(), samples) {
        let (written, result) = decode_caught(c, base, &archive[..cut]);
        let case = format!("archive cut to {cut} of {} bytes", archive.len());
        match assert_safe_failure(c, &case, &written, result, &expected) {
            CompressorError::Corrupt { part, .. } => assert!(!part.is_empty(), "{}: {case}: unnamed part", c.format()),
            other => panic!("{}: {case}: expected Corrupt, got {other}", c.format()),
        }
    }
    let mut longer = archive.clone();
    longer.extend_from_slice(b"trailing");
    let (written, result) = decode_caught(c, base, &longer);
    let e = assert_safe_failure(c, "trailing bytes", &written, result, &expected);
    assert!(matches!(e, CompressorError::Corrupt { .. }), "{}: trailing bytes: expected Corrupt, got {e}", c.format());
}

/// Decoding against `other_base` instead of `base` is [`CompressorError::WrongBase`], having written only bytes
/// that are correct.
pub fn wrong_base_is_refused(c: &dyn Compressor, base: &[u8], other_base: &[u8], target: &[u8]) {
    let (archive, _) = encode(c, Some(base), target);
    let expected = decode(c, Some(base), &archive);
    let (written, result) = decode_caught(c, Some(other_base), &archive);
    let e = assert_safe_failure(c, "wrong base", &written, result, &expected);
    assert!(matches!(e, CompressorError::WrongBase { .. }), "{}: wrong base: expected WrongBase, got {e}", c.format());
}

/// Decoding an archive made against a base without one is [`CompressorError::MissingBase`], writing nothing.
pub fn missing_base_is_refused(c: &dyn Compressor, base: &[u8], target: &[u8]) {
    let (archive, _) = encode(c, Some(base), target);
    let (written, result) = decode_caught(c, None, &archive);
    assert!(written.is_empty(), "{}: missing base: wrote {} bytes", c.format(), written.len());
    match result {
        Err(CompressorError::MissingBase) => {}
        Err(e) => panic!("{}: missing base: expected MissingBase, got {e}", c.format()),
        Ok(()) => panic!("{}: missing base: decode succeeded", c.format()),
    }
}

/// Empty input, random bytes and random bytes behind a valid prefix are refused without a panic and
/// without output; encoding garbage as a target does not panic either.
pub fn garbage_is_refused(c: &dyn Compressor, base: Option<&[u8]>) {
    let mut rng = SmallRng::seed_from_u64(0x5eed);
    let mut inputs: Vec<Vec<u8>> = vec![Vec::new(), vec![0; 64], vec![0xff; 4096]];
    for len in [1usize, 7, 48, 100, 1000, 10_000] {
        inputs.push((0..len).map(|_| rng.random()).collect());
    }
    for (i, input) in inputs.iter().enumerate() {
        let (written, result) = decode_caught(c, base, input);
        assert!(written.is_empty(), "{}: garbage #{i}: wrote {} bytes", c.format(), written.len());
        match result {
            Err(CompressorError::Corrupt { .. } | CompressorError::InvalidInput { .. }) => {}
            Err(e) => panic!("{}: garbage #{i}: expected Corrupt or InvalidInput, got {e}", c.format()),
            Ok(()) => panic!("{}: garbage #{i} ({} bytes) decoded", c.format(), input.len()),
        }
        let encoded = catch_unwind(AssertUnwindSafe(|| c.encode(base, input, &mut Vec::new())));
        assert!(encoded.is_ok(), "{}: encode panicked on garbage #{i}", c.format());
    }
}

/// Runs every check above on one case (`other_base` enables the wrong-base checks).
pub fn run_all(c: &dyn Compressor, base: Option<&[u8]>, other_base: Option<&[u8]>, target: &[u8], samples: usize) {
    round_trip(c, base, target);
    flipped_bytes_are_detected(c, base, target, samples);
    truncation_is_detected(c, base, target, samples);
    garbage_is_refused(c, base);
    if let Some(base) = base {
        missing_base_is_refused(c, base, target);
        if let Some(other) = other_base {
            wrong_base_is_refused(c, base, other, target);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use chitty_core::{DecodeReport, EncodeReport};

    use super::*;

    /// Stores the target behind its length, with no checksum: it writes damaged bytes unverified.
    #[derive(Debug)]
    struct Unchecked;

    impl Compressor for Unchecked {
        fn format(&self) -> &str {
            "unchecked"
        }

        fn encode(
            &self,
            _: Option<&[u8]>,
            target: &[u8],
            out: &mut dyn Write,
        ) -> Result<EncodeReport, CompressorError> {
            out.write_all(&(target.len() as u64).to_le_bytes())?;
            out.write_all(target)?;
            Ok(EncodeReport { input_bytes: target.len() as u64, output_bytes: target.len() as u64 + 8, parts: vec![] })
        }

        fn decode(
            &self,
            _: Option<&[u8]>,
            archive: &mut dyn Read,
            out: &mut dyn Write,
        ) -> Result<DecodeReport, CompressorError> {
            let mut all = Vec::new();
            archive.read_to_end(&mut all)?;
            let corrupt = || CompressorError::corrupt("body", "length");
            let len = all.get(..8).and_then(|b| b.try_into().ok()).map(u64::from_le_bytes).ok_or_else(corrupt)?;
            if all.len() as u64 != len + 8 {
                return Err(corrupt());
            }
            out.write_all(&all[8..])?;
            Ok(DecodeReport { input_bytes: all.len() as u64, output_bytes: len, parts_verified: 1 })
        }
    }

    #[test]
    fn the_suite_passes_what_it_should() {
        round_trip(&Unchecked, None, b"hello world");
        truncation_is_detected(&Unchecked, None, b"hello world", 16);
    }

    #[test]
    #[should_panic(expected = "not a prefix of the correct output")]
    fn the_suite_catches_a_compressor_that_writes_unverified_bytes() {
        flipped_bytes_are_detected(&Unchecked, None, b"hello world", 16);
    }

    #[test]
    #[should_panic(expected = "wrong base: decode succeeded")]
    fn the_suite_catches_a_compressor_that_ignores_its_base() {
        // The output is right (the base is ignored), but a different base must still be refused.
        wrong_base_is_refused(&Unchecked, b"base one", b"base two", b"target");
    }
}
