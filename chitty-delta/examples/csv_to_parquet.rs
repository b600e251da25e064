//! `csv_to_parquet IN.csv OUT.parquet [--drop-one-in N] [--seed S] [--compression none|zstd|snappy]`:
//! converts a CSV file with a header to Parquet with the `parquet` crate's `ArrowWriter` (types inferred
//! from the first 10,000 rows), optionally dropping about one row in N (seeded), for
//! `scripts/bench-dataset-delta.sh`'s "Parquet file rewritten with a filter" case. Rows are written in
//! batches of 8,192 (a multiple of the writer's 1,024-row mini-batches).
//! Prints `result=ok rows=… bytes=…`.

use std::fs::File;
use std::io::{BufReader, Seek};
use std::sync::Arc;

use arrow::array::{BooleanArray, RecordBatch};
use arrow::compute::{concat_batches, filter_record_batch};
use arrow::csv::ReaderBuilder;
use arrow::csv::reader::Format;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

type Error = Box<dyn std::error::Error>;

fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [input, output, options @ ..] = args.as_slice() else {
        return Err(
            "usage: csv_to_parquet IN.csv OUT.parquet [--drop-one-in N] [--seed S] [--compression none|zstd|snappy]"
                .into(),
        );
    };
    let (mut drop_one_in, mut seed, mut compression) = (0u64, 21u64, Compression::UNCOMPRESSED);
    for pair in options.chunks(2) {
        match (pair[0].as_str(), pair.get(1)) {
            ("--drop-one-in", Some(v)) => drop_one_in = v.parse()?,
            ("--seed", Some(v)) => seed = v.parse()?,
            ("--compression", Some(v)) => {
                compression = match v.as_str() {
                    "none" => Compression::UNCOMPRESSED,
                    "zstd" => Compression::ZSTD(ZstdLevel::default()),
                    "snappy" => Compression::SNAPPY,
                    other => return Err(format!("unknown compression {other}").into()),
                }
            }
            (other, _) => return Err(format!("unknown option {other}").into()),
        }
    }
    let mut file = File::open(input)?;
    let (schema, _) = Format::default().with_header(true).infer_schema(BufReader::new(&file), Some(10_000))?;
    file.rewind()?;
    let schema = Arc::new(schema);
    let reader = ReaderBuilder::new(Arc::clone(&schema)).with_header(true).with_batch_size(8192).build(file)?;
    let mut batches = Vec::new();
    let mut row = 0u64;
    for batch in reader {
        let batch = batch?;
        // SplitMix64 of the row number: the same rows dropped on every run.
        let keep: BooleanArray = (0..batch.num_rows() as u64)
            .map(|i| Some(drop_one_in == 0 || !splitmix(seed ^ (row + i)).is_multiple_of(drop_one_in)))
            .collect();
        row += batch.num_rows() as u64;
        batches.push(filter_record_batch(&batch, &keep)?);
    }
    let all: RecordBatch = concat_batches(&schema, &batches)?;
    let props = WriterProperties::builder().set_compression(compression).build();
    let out = File::create(output)?;
    let mut writer = ArrowWriter::try_new(out, Arc::clone(&schema), Some(props))?;
    let mut at = 0;
    while at < all.num_rows() {
        let n = 8192.min(all.num_rows() - at);
        writer.write(&all.slice(at, n))?;
        at += n;
    }
    writer.close()?;
    println!("result=ok rows={} bytes={}", all.num_rows(), std::fs::metadata(output)?.len());
    Ok(())
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}
