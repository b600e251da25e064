//! A Xet-style baseline for `scripts/bench-dataset-delta.sh`: content-defined chunks of 64 KiB on
//! average (8 KiB to 128 KiB, FastCDC 2020, as Xet cuts), deduplicated against the base and within the
//! target, the new chunks compressed with zstd level 3 in 64 MiB groups (as Xet packs chunks into
//! "xorbs"), plus 48 bytes of reconstruction metadata per term (a run of chunks consecutive in the base,
//! or of consecutive new chunks). No base prefix: an edit costs its whole chunk.
//!
//! ```text
//! cargo run --release -p chitty-delta --example xet_baseline -- BASE TARGET
//! ```
//! Prints `result=ok op=xet target_bytes=… stored_bytes=… chunks=… new_chunks=… terms=… seconds=…`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::time::Instant;

use fastcdc::v2020::FastCDC;

/// Bytes of metadata per term of the file's reconstruction (a 32-byte hash, a chunk range, a length).
const TERM_BYTES: usize = 48;
/// New chunks are compressed in groups of this size.
const GROUP_BYTES: usize = 64 << 20;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [base, target] = args.as_slice() else {
        eprintln!("usage: xet_baseline BASE TARGET");
        std::process::exit(2);
    };
    let base = std::fs::read(base).expect("reading BASE");
    let target = std::fs::read(target).expect("reading TARGET");
    let start = Instant::now();
    let chunks = |data: &[u8]| -> Vec<(usize, usize)> {
        FastCDC::new(data, 8 << 10, 64 << 10, 128 << 10).map(|c| (c.offset, c.offset + c.length)).collect()
    };
    let mut known: HashMap<u128, usize> = HashMap::new();
    for (i, &(s, e)) in chunks(&base).iter().enumerate() {
        known.entry(xxhash_rust::xxh3::xxh3_128(&base[s..e])).or_insert(i);
    }
    let base_chunks = known.len();
    let (mut terms, mut new_chunks, mut stored) = (0usize, 0usize, 0usize);
    let mut group = Vec::new();
    // What the previous chunk was: Some(base chunk number) or None for new.
    let mut previous: Option<Option<usize>> = None;
    let target_chunks = chunks(&target);
    for &(s, e) in &target_chunks {
        let key = xxhash_rust::xxh3::xxh3_128(&target[s..e]);
        let this = match known.get(&key) {
            Some(&i) => Some(i),
            None => {
                // New chunks get numbers after the base's, so consecutive new chunks form one term.
                known.insert(key, base_chunks + new_chunks);
                group.extend_from_slice(&target[s..e]);
                new_chunks += 1;
                if group.len() >= GROUP_BYTES {
                    stored += zstd::bulk::compress(&group, 3).unwrap().len();
                    group.clear();
                }
                Some(base_chunks + new_chunks - 1)
            }
        };
        let continues = matches!((previous, this), (Some(Some(p)), Some(t)) if t == p + 1);
        if !continues {
            terms += 1;
        }
        previous = Some(this);
    }
    if !group.is_empty() {
        stored += zstd::bulk::compress(&group, 3).unwrap().len();
    }
    stored += terms * TERM_BYTES;
    println!(
        "result=ok op=xet target_bytes={} stored_bytes={stored} chunks={} new_chunks={new_chunks} terms={terms} seconds={:.3}",
        target.len(),
        target_chunks.len(),
        start.elapsed().as_secs_f64()
    );
}
