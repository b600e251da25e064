//! Dataset deltas: the testkit's Compressor suite, the size of deltas on derived CSV and JSON Lines files,
//! and arbitrary bytes as archives.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use chitty_core::{Compressor, CompressorError};
use chitty_delta::{DatasetDeltaCompressor, LineMode};
use chitty_testkit::compressor as suite;
use chitty_testkit::dataset_pairs::{DatasetEdit, RowFormat, derive, generate_rows};
use proptest::prelude::*;

/// Small chunks and parts, so that a 100 KB file spans several parts as big files do.
fn small() -> DatasetDeltaCompressor {
    DatasetDeltaCompressor::builder().chunk_sizes(256, 1024, 4096).part_bytes(64 << 10).build().unwrap()
}

#[test]
fn conformance_against_a_base() {
    let base = generate_rows(RowFormat::Csv, 1_500, 1);
    let target = derive(&base, RowFormat::Csv, DatasetEdit::EditRows { percent: 2 }, 1);
    let other = generate_rows(RowFormat::Csv, 1_500, 2);
    suite::run_all(&small(), Some(&base), Some(&other), &target, 200);
    suite::wrong_base_is_refused(&small(), &base, b"", &target);
    // Same length, one byte changed: parts are decoded while the base's SHA-256 runs, and fail their
    // checks, but the error is the base and nothing is written.
    let mut near = base.clone();
    near[base.len() / 2] ^= 1;
    suite::wrong_base_is_refused(&small(), &base, &near, &target);
    let threaded = DatasetDeltaCompressor::builder().chunk_sizes(256, 1024, 4096).part_bytes(64 << 10).threads(3);
    suite::wrong_base_is_refused(&threaded.build().unwrap(), &base, &near, &target);
}

#[test]
fn conformance_without_a_base_and_on_binary_data() {
    let target = generate_rows(RowFormat::JsonLines, 800, 3);
    suite::run_all(&small(), None, None, &target, 150);
    let noise: Vec<u8> = (0..70_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8).collect();
    let mut edited = noise.clone();
    edited[30_000..30_100].fill(7);
    suite::run_all(&small(), Some(&noise), Some(&edited), &edited, 100);
    suite::round_trip(&small(), Some(&noise), b"");
    suite::round_trip(&small(), Some(b""), &noise);
}

fn archive_len(c: &DatasetDeltaCompressor, base: &[u8], target: &[u8]) -> usize {
    suite::round_trip(c, Some(base), target).output_bytes as usize
}

fn zstd_alone(target: &[u8]) -> usize {
    zstd::bulk::compress(target, chitty_delta::dataset::DEFAULT_DATASET_ZSTD_LEVEL).unwrap().len()
}

/// Each derived file is stored in a small share of its size, and in a fraction of what zstd makes of it
/// alone: both fail if chunks were not matched or new bytes were not compressed against the base.
#[test]
fn derived_files_are_small_deltas() {
    let c = DatasetDeltaCompressor::builder().build().unwrap();
    // (edit, largest share of the target, largest share of zstd alone)
    let cases = [
        (DatasetEdit::AppendRows { percent: 10 }, 0.04, 0.12),
        (DatasetEdit::EditRows { percent: 1 }, 0.005, 0.02),
        (DatasetEdit::FilterRows { percent: 10 }, 0.01, 0.03),
        (DatasetEdit::AddColumn, 0.1, 0.35),
    ];
    for format in [RowFormat::Csv, RowFormat::JsonLines] {
        let base = generate_rows(format, 20_000, 5);
        for (edit, max_share, max_vs_zstd) in cases {
            let target = derive(&base, format, edit, 5);
            let stored = archive_len(&c, &base, &target);
            let share = stored as f64 / target.len() as f64;
            let vs_zstd = stored as f64 / zstd_alone(&target) as f64;
            println!(
                "{format:?} {edit:?}: {stored} of {} bytes ({:.3} %), {vs_zstd:.3} of zstd alone",
                target.len(),
                share * 100.0
            );
            assert!(share <= max_share, "{format:?} {edit:?}: {:.3} % of the target", share * 100.0);
            assert!(vs_zstd <= max_vs_zstd, "{format:?} {edit:?}: {vs_zstd:.3} of zstd alone");
        }
    }
}

/// Chunks found in the base are copies (zstd alone would also make an identical file small, so the
/// methods are what shows matching works); an unrelated target costs no more than zstd.
/// Files of several 4 MiB segments and several rounds of them, chunked in parallel: the archive is the
/// same byte for byte with one thread or three (segments are joined into the serial chunk sequence), and
/// round trips.
#[test]
fn archives_do_not_depend_on_the_number_of_threads() {
    let base = generate_rows(RowFormat::Csv, 200_000, 11);
    assert!(base.len() > 16 << 20, "{}", base.len());
    let mut target = derive(&base, RowFormat::Csv, DatasetEdit::EditRows { percent: 1 }, 11);
    target.drain(9_000_000..9_100_000);
    for lines in [LineMode::Auto, LineMode::Bytes] {
        let archive = |threads: usize| {
            let c = DatasetDeltaCompressor::builder().lines(lines).threads(threads).build().unwrap();
            let mut out = Vec::new();
            c.encode(Some(&base), &target, &mut out).unwrap();
            out
        };
        let one = archive(1);
        assert_eq!(one, archive(3), "{lines:?}");
        assert!(one.len() < target.len() / 50, "{lines:?}: {} bytes", one.len());
        let c = DatasetDeltaCompressor::builder().build().unwrap();
        let mut restored = Vec::new();
        c.decode(Some(&base), &mut one.as_slice(), &mut restored).unwrap();
        assert!(restored == target, "{lines:?}: round trip differs");
    }
}

/// An archive written before new bytes were grouped (manifest version 1: one base window per part, and
/// SHA-256 digests as in version 2) still decodes; what is written now is version 3, with BLAKE3 digests.
#[test]
fn version_1_archives_still_decode() {
    let fixture = |name: &str| std::fs::read(format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let (base, target, archive) =
        (fixture("dataset-v1.base.csv"), fixture("dataset-v1.target.csv"), fixture("dataset-v1.delta"));
    let manifest = |a: &[u8]| -> serde_json::Value {
        let len = u32::from_le_bytes(a[12..16].try_into().unwrap()) as usize;
        serde_json::from_slice(&a[48..48 + len]).unwrap()
    };
    let manifest_version = |a: &[u8]| manifest(a)["version"].as_u64().unwrap();
    assert_eq!(manifest_version(&archive), 1);
    let c = DatasetDeltaCompressor::builder().build().unwrap();
    let mut restored = Vec::new();
    c.decode(Some(&base), &mut archive.as_slice(), &mut restored).unwrap();
    assert!(restored == target);
    let again = suite::round_trip(&c, Some(&base), &target);
    assert!(again.output_bytes < 700, "{}", again.output_bytes);
    let mut now = Vec::new();
    c.encode(Some(&base), &target, &mut now).unwrap();
    assert_eq!(manifest_version(&now), 3);
    let m = manifest(&now);
    assert_eq!(m["target_blake3"].as_str().map(str::len), Some(64), "{m}");
    assert_eq!(m["base"]["blake3"].as_str().map(str::len), Some(64), "{m}");
    assert!(m.get("target_sha256").is_none() && m["base"].get("sha256").is_none(), "{m}");
    assert_eq!(m["target_blake3"].as_str(), Some(blake3::hash(&target).to_hex().as_str()));
}

#[test]
fn identical_and_unrelated_targets() {
    let c = DatasetDeltaCompressor::builder().build().unwrap();
    let base = generate_rows(RowFormat::Csv, 20_000, 8);
    let report = suite::round_trip(&c, Some(&base), &base);
    assert!(report.output_bytes < 1_000);
    assert!(report.parts.iter().all(|p| p.method == "copy"), "{:?}", report.parts);
    let appended = derive(&base, RowFormat::Csv, DatasetEdit::AppendRows { percent: 10 }, 8);
    let report = suite::round_trip(&small(), Some(&base), &appended);
    let copied: u64 = report.parts.iter().filter(|p| p.method == "copy").map(|p| p.original_bytes).sum();
    assert!(copied * 100 >= base.len() as u64 * 95, "{copied} of {} bytes copied", base.len());
    let unrelated = generate_rows(RowFormat::JsonLines, 5_000, 9);
    assert!(archive_len(&c, &base, &unrelated) < zstd_alone(&unrelated) * 11 / 10 + 1_000);
}

/// Line-aware chunking keeps chunks after an inserted row identical, so a row inserted near the start
/// costs about one chunk; both modes round-trip.
#[test]
fn line_mode_is_detected_and_both_modes_round_trip() {
    let base = generate_rows(RowFormat::Csv, 20_000, 10);
    let mut target = base[..5_000].to_vec();
    target.extend_from_slice(b"99999,2024-01-01T00:00:00Z,zed1,US,toys,1.00,0000000000000000,\"new\"\n");
    target.extend_from_slice(&base[5_000..]);
    let auto = DatasetDeltaCompressor::builder().build().unwrap();
    assert!(auto.is_line_aware(&target));
    assert!(!auto.is_line_aware(&[0u8; 100]));
    for mode in [LineMode::Lines, LineMode::Bytes] {
        let c = DatasetDeltaCompressor::builder().lines(mode).build().unwrap();
        assert!(archive_len(&c, &base, &target) < 2_000, "{mode:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Arbitrary bytes as an archive: a typed error, no output, no panic.
    #[test]
    fn arbitrary_archives_are_errors(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let base = b"id,name\n1,a\n";
        let mut out = Vec::new();
        let r = small().decode(Some(base), &mut bytes.as_slice(), &mut out);
        let refused = matches!(r, Err(CompressorError::Corrupt { .. }));
        prop_assert!(refused);
        prop_assert!(out.is_empty());
    }

    /// A valid archive with one stretch overwritten: an error naming a part, or (never) wrong output.
    #[test]
    fn mutated_archives_are_errors(at in 0usize..100_000, junk in proptest::collection::vec(any::<u8>(), 1..64)) {
        let (base, archive) = fixture();
        let mut damaged = archive.clone();
        let at = at % damaged.len();
        let end = (at + junk.len()).min(damaged.len());
        damaged[at..end].copy_from_slice(&junk[..end - at]);
        let mut out = Vec::new();
        let r = small().decode(Some(base), &mut damaged.as_slice(), &mut out);
        let refused = matches!(r, Err(CompressorError::Corrupt { .. }));
        prop_assert!(damaged == *archive || refused, "{:?}", r);
    }

    /// Random edits at random places round-trip bit-exactly.
    #[test]
    fn random_edits_round_trip(seed in any::<u64>(), cuts in proptest::collection::vec((0usize..60_000, 0usize..300, proptest::collection::vec(any::<u8>(), 0..200)), 0..6)) {
        let base = generate_rows(RowFormat::JsonLines, 300, seed);
        let mut target = base.clone();
        for (at, remove, insert) in cuts {
            let at = at % (target.len() + 1);
            let end = (at + remove).min(target.len());
            target.splice(at..end, insert);
        }
        let mut archive = Vec::new();
        small().encode(Some(&base), &target, &mut archive).unwrap();
        let mut out = Vec::new();
        small().decode(Some(&base), &mut archive.as_slice(), &mut out).unwrap();
        prop_assert_eq!(out, target);
    }
}

fn fixture() -> &'static (Vec<u8>, Vec<u8>) {
    static F: std::sync::OnceLock<(Vec<u8>, Vec<u8>)> = std::sync::OnceLock::new();
    F.get_or_init(|| {
        let base = generate_rows(RowFormat::Csv, 1_000, 11);
        let target = derive(&base, RowFormat::Csv, DatasetEdit::AddColumn, 11);
        let mut archive = Vec::new();
        small().encode(Some(&base), &target, &mut archive).unwrap();
        (base, archive)
    })
}

/// Ratios on a real line-oriented file named by `CHITTY_DATASET_FILE` (its first `CHITTY_DATASET_BYTES`
/// bytes, 16 MB by default), printed for the record (the sizes in `docs/delta.md`). Edits are made line by line
/// whatever the format: 1 % of lines get 4 bytes changed in their middle, 10 % are dropped, every line gets
/// a field (`\t` and a number) at its end, or the first 90 % is the base of the whole.
#[test]
#[ignore = "a measurement, not a check: CHITTY_DATASET_FILE=<a CSV or TSV> cargo test --test dataset -- --ignored --nocapture"]
fn real_file_ratios() {
    let path = std::env::var("CHITTY_DATASET_FILE").expect("set CHITTY_DATASET_FILE to a line-oriented file");
    let limit: usize = std::env::var("CHITTY_DATASET_BYTES").ok().and_then(|v| v.parse().ok()).unwrap_or(16 << 20);
    let data = std::fs::read(&path).unwrap();
    let cut = data[..limit.min(data.len())].iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let full = &data[..cut];
    let lines: Vec<&[u8]> = full.split_inclusive(|&b| b == b'\n').collect();
    let c = DatasetDeltaCompressor::builder().build().unwrap();
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let head: Vec<u8> = lines[..lines.len() * 9 / 10].concat();
    let mut edited = Vec::new();
    let mut filtered = Vec::new();
    let mut widened = Vec::new();
    for line in &lines {
        let mut l = line.to_vec();
        if next() % 100 == 0 && l.len() > 8 {
            let mid = l.len() / 2;
            l[mid - 2..mid + 2].copy_from_slice(b"EDIT");
        }
        edited.extend_from_slice(&l);
        if next() % 10 != 0 {
            filtered.extend_from_slice(line);
        }
        widened.extend_from_slice(line.strip_suffix(b"\n").unwrap_or(line));
        widened.extend_from_slice(format!("\t{}\n", next() % 1000).as_bytes());
    }
    let cases: [(&str, &[u8], &[u8]); 4] = [
        ("rows appended (last 10 %)", &head, full),
        ("1 % of rows edited", full, &edited),
        ("10 % of rows filtered out", full, &filtered),
        ("a column added", full, &widened),
    ];
    for (case, base, target) in cases {
        let stored = archive_len(&c, base, target);
        let z = zstd_alone(target);
        println!(
            "{path}: {case}: {stored} of {} bytes = {:.3} % (zstd -{} alone {:.2} %)",
            target.len(),
            stored as f64 * 100.0 / target.len() as f64,
            chitty_delta::dataset::DEFAULT_DATASET_ZSTD_LEVEL,
            z as f64 * 100.0 / target.len() as f64
        );
    }
}
