//! The Parquet delta container (`chitty_delta::parquet`) from both sides. An odd first byte: the rest is
//! an archive decoded against a fixed Parquet base, which must be a typed error or a verified output,
//! never a panic (forged rows included). An even one: the rest becomes the values of a small table and a
//! filter; the filtered rewrite's archive must decode back to it bit for bit.
#![no_main]

use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use chitty_core::{Compressor, CompressorError};
use chitty_delta::DatasetDeltaCompressor;
use chitty_delta::parquet::ParquetDeltaCompressor;
use libfuzzer_sys::fuzz_target;

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
    let batch = RecordBatch::try_from_iter([("id", ids), ("name", names)]).expect("two columns of one length");
    let mut out = Vec::new();
    let mut w = parquet::arrow::ArrowWriter::try_new(&mut out, batch.schema(), None).expect("writer");
    w.write(&batch).expect("write");
    w.close().expect("close");
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let dataset = DatasetDeltaCompressor::builder().chunk_sizes(64, 256, 1024).part_bytes(64 << 10).threads(1);
    let c = ParquetDeltaCompressor::new(dataset.build().expect("valid settings"));
    if mode & 1 == 1 {
        let base = table(&(0..=255).collect::<Vec<u8>>(), &[]);
        let mut out = Vec::new();
        match c.decode(Some(&base), &mut &rest[..], &mut out) {
            Ok(report) => assert_eq!(report.output_bytes, out.len() as u64),
            Err(CompressorError::Corrupt { .. } | CompressorError::WrongBase { .. } | CompressorError::MissingBase) => {}
            Err(other) => panic!("unexpected error kind: {other}"),
        }
    } else {
        let (values, keep) = rest.split_at(rest.len() * 3 / 4);
        let (base, target) = (table(values, &[]), table(values, keep));
        let mut archive = Vec::new();
        c.encode(Some(&base), &target, &mut archive).expect("encoding into a Vec succeeds");
        let mut out = Vec::new();
        c.decode(Some(&base), &mut archive.as_slice(), &mut out).expect("its own archive decodes");
        assert!(out == target, "round trip differs");
    }
});
