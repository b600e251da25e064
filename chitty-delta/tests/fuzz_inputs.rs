//! The inputs of `fuzz/fuzz_targets/dataset_archive.rs`, driven by proptest on stable: the same body, so
//! that CI exercises what the fuzz target checks without nightly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use chitty_core::{Compressor, CompressorError};
use chitty_delta::DatasetDeltaCompressor;
use proptest::prelude::*;

const BASE: &[u8] = b"id,name,score\n1,ada,3\n2,grace,5\n3,barbara,8\n4,edsger,13\n";

/// The fuzz target's body: an odd first byte decodes the rest as an archive, an even one round-trips a
/// base/target split of it.
fn fuzz_body(data: &[u8]) -> Result<(), TestCaseError> {
    let Some((&mode, rest)) = data.split_first() else { return Ok(()) };
    let c =
        DatasetDeltaCompressor::builder().chunk_sizes(64, 256, 1024).part_bytes(64 << 10).threads(1).build().unwrap();
    if mode & 1 == 1 {
        let mut out = Vec::new();
        match c.decode(Some(BASE), &mut &rest[..], &mut out) {
            Ok(report) => prop_assert_eq!(report.output_bytes, out.len() as u64),
            Err(CompressorError::Corrupt { .. } | CompressorError::WrongBase { .. } | CompressorError::MissingBase) => {
            }
            Err(other) => prop_assert!(false, "unexpected error kind: {other}"),
        }
    } else {
        let (base, target) = rest.split_at(rest.len() / 2);
        let mut archive = Vec::new();
        c.encode(Some(base), target, &mut archive).unwrap();
        let mut out = Vec::new();
        c.decode(Some(base), &mut archive.as_slice(), &mut out).unwrap();
        prop_assert!(out == target);
    }
    Ok(())
}

/// A valid archive of the fuzz target's base, to mutate.
fn valid_archive() -> Vec<u8> {
    let target = b"id,name,score\n1,ada,3\n2,grace,6\n3,barbara,8\n5,alan,21\n";
    let c =
        DatasetDeltaCompressor::builder().chunk_sizes(64, 256, 1024).part_bytes(64 << 10).threads(1).build().unwrap();
    let mut archive = vec![1u8];
    c.encode(Some(BASE), target, &mut archive).unwrap();
    archive
}

/// `archive` with a byte flipped at each of `flips` (never the leading selector byte) and cut short by `cut`.
fn damaged(mut archive: Vec<u8>, flips: &[(usize, u8)], cut: usize) -> Vec<u8> {
    for &(at, byte) in flips {
        let i = 1 + at % (archive.len() - 1);
        archive[i] ^= byte | 1;
    }
    archive.truncate(1 + cut % archive.len());
    archive
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_fuzz_inputs_never_panic(data in proptest::collection::vec(any::<u8>(), 0..6000)) {
        fuzz_body(&data)?;
    }

    #[test]
    fn mutated_valid_archives_never_panic(flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8), cut in any::<usize>()) {
        fuzz_body(&damaged(valid_archive(), &flips, cut))?;
    }
}

/// The inputs of `fuzz/fuzz_targets/parquet_archive.rs`, the same body (feature `parquet`).
#[cfg(feature = "parquet")]
mod parquet_inputs {
    use std::sync::Arc;

    use arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray};
    use chitty_core::{Compressor, CompressorError};
    use chitty_delta::DatasetDeltaCompressor;
    use chitty_delta::parquet::ParquetDeltaCompressor;
    use proptest::prelude::*;

    /// A Parquet file of the rows whose bit in `keep` is set (all when `keep` is empty).
    fn table(values: &[u8], keep: &[u8]) -> Vec<u8> {
        let rows: Vec<(i64, String)> = values
            .chunks(2)
            .enumerate()
            .filter(|(i, _)| keep.is_empty() || keep[i / 8 % keep.len()] >> (i % 8) & 1 == 1)
            .map(|(i, v)| (i64::from(v[0]) * 1000 + i as i64, format!("n{}", v.get(1).copied().unwrap_or(0) % 17)))
            .collect();
        let ids: ArrayRef = Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0)));
        let names: ArrayRef = Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.1.as_str())));
        let batch = RecordBatch::try_from_iter([("id", ids), ("name", names)]).unwrap();
        let mut out = Vec::new();
        let mut w = parquet::arrow::ArrowWriter::try_new(&mut out, batch.schema(), None).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
        out
    }

    fn compressor() -> ParquetDeltaCompressor {
        let dataset = DatasetDeltaCompressor::builder().chunk_sizes(64, 256, 1024).part_bytes(64 << 10).threads(1);
        ParquetDeltaCompressor::new(dataset.build().unwrap())
    }

    fn base() -> Vec<u8> {
        table(&(0..=255).collect::<Vec<u8>>(), &[])
    }

    fn fuzz_body(data: &[u8]) -> Result<(), TestCaseError> {
        let Some((&mode, rest)) = data.split_first() else { return Ok(()) };
        let c = compressor();
        if mode & 1 == 1 {
            let mut out = Vec::new();
            match c.decode(Some(&base()), &mut &rest[..], &mut out) {
                Ok(report) => prop_assert_eq!(report.output_bytes, out.len() as u64),
                Err(
                    CompressorError::Corrupt { .. } | CompressorError::WrongBase { .. } | CompressorError::MissingBase,
                ) => {}
                Err(other) => prop_assert!(false, "unexpected error kind: {other}"),
            }
        } else {
            let (values, keep) = rest.split_at(rest.len() * 3 / 4);
            let (base, target) = (table(values, &[]), table(values, keep));
            let mut archive = Vec::new();
            c.encode(Some(&base), &target, &mut archive).unwrap();
            let mut out = Vec::new();
            c.decode(Some(&base), &mut archive.as_slice(), &mut out).unwrap();
            prop_assert!(out == target);
        }
        Ok(())
    }

    /// A valid value-level archive against the fuzz target's base, to mutate.
    fn valid_archive() -> Vec<u8> {
        let values: Vec<u8> = (0..=255).collect();
        let target = table(&values, &[0b1110_1111, 0b1111_1101]);
        let mut archive = vec![1u8];
        let report = compressor().encode(Some(&base()), &target, &mut archive).unwrap();
        assert_eq!(report.parts[0].method, "parquet-rows");
        archive
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

        #[test]
        fn arbitrary_parquet_fuzz_inputs_never_panic(data in proptest::collection::vec(any::<u8>(), 0..3000)) {
            fuzz_body(&data)?;
        }

        #[test]
        fn mutated_parquet_archives_never_panic(flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8), cut in any::<usize>()) {
            fuzz_body(&super::damaged(valid_archive(), &flips, cut))?;
        }
    }
}
