//! Shared by the Parquet tests: files written the way `parquet`'s `ArrowWriter` users write them.

// Each test binary compiles this module and uses only its own part of it.
#![allow(dead_code)]

use arrow::array::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;

/// `batch` as `ArrowWriter` writes it with `props`, handed over in `write()` calls of `call_rows` rows (the call
/// size decides where pages end, so the tests choose it).
pub(crate) fn write_parquet(batch: &RecordBatch, props: Option<WriterProperties>, call_rows: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut out, batch.schema(), props).unwrap();
    let mut at = 0;
    while at < batch.num_rows() {
        let n = call_rows.min(batch.num_rows() - at);
        writer.write(&batch.slice(at, n)).unwrap();
        at += n;
    }
    writer.close().unwrap();
    out
}
