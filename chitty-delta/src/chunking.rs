//! Content-defined chunking and matching for dataset deltas, in parallel and cut exactly where a serial
//! pass cuts.
//!
//! A chunk's end is a function of its start alone (FastCDC restarts its gear hash at every chunk, and the
//! move to the next line end looks no further than the largest chunk). So a segment of a file can be
//! chunked from its own start as if a chunk began there; the serial sequence, continued past the previous
//! segment, soon lands on one of that segment's cut points, and from there the two agree. [`Stitcher`]
//! does that join, so the chunks, and with them the archive, do not depend on the number of threads.
//!
//! Matching a target against the base follows runs: once a target chunk is found in the base, the base's
//! next chunks are compared with the target's next bytes, and every base chunk whose bytes — all those
//! its cut looked at — are the same in the target is the target's next chunk, without running FastCDC or
//! hashing it. Only the regions around changes are chunked and looked up. Chunks are identified by
//! XXH3-128 (and compared byte for byte before use); SHA-256 is kept for what the archive promises.

use std::collections::HashMap;

use fastcdc::v2020::FastCDC;
use rayon::prelude::*;

/// FastCDC parameters as chunking uses them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CutParams {
    pub(crate) min_size: usize,
    pub(crate) avg_size: usize,
    pub(crate) max_size: usize,
    /// Cut points moved to just after the next line break.
    pub(crate) line_aware: bool,
}

/// Bytes per segment chunked on its own (the unit of parallel work).
pub(crate) const SEGMENT_BYTES: usize = 4 << 20;
/// Bytes compared at a time when a run of identical bytes is extended.
const RUN_STEP: usize = 256 << 10;
/// Bytes compared with one `==` while looking for the first difference.
const COMPARE_BLOCK: usize = 4 << 10;

/// Finds the end of the chunk that starts at a given offset of one buffer.
pub(crate) struct Cutter<'a> {
    cdc: FastCDC<'a>,
    data: &'a [u8],
    max: usize,
    line_aware: bool,
}

impl<'a> Cutter<'a> {
    /// A cutter over `data`; the sizes were checked by the builder or the manifest.
    pub(crate) fn new(data: &'a [u8], params: CutParams) -> Self {
        let cdc = FastCDC::new(data, params.min_size, params.avg_size, params.max_size);
        Cutter { cdc, data, max: params.max_size, line_aware: params.line_aware }
    }

    /// End of the chunk starting at `start` (`start < data.len()`).
    pub(crate) fn cut(&self, start: usize) -> usize {
        let (_, mut end) = self.cdc.cut(start, self.data.len() - start);
        if self.line_aware && end < self.data.len() && self.data[end - 1] != b'\n' {
            // The next line end, if the chunk stays within the largest size; else FastCDC's cut stands.
            let limit = (start + self.max).min(self.data.len());
            if let Some(i) = self.data.get(end..limit).and_then(|s| s.iter().position(|&b| b == b'\n')) {
                end += i + 1;
            }
        }
        end
    }

    /// End of the bytes `cut(start)` read to give `end`: beyond them the data may change without moving it.
    /// FastCDC tests a cut after reading the byte at it, so that byte counts too.
    fn examined(&self, start: usize, end: usize) -> usize {
        if self.line_aware && end < self.data.len() && self.data[end - 1] != b'\n' {
            (start + self.max).min(self.data.len())
        } else {
            (end + 1).min(self.data.len())
        }
    }

    /// Ends of the chunks from `from` until the first end at or past `until`.
    fn ends(&self, from: usize, until: usize) -> Vec<usize> {
        let mut ends = Vec::with_capacity((until - from) / (self.max / 8).max(1) + 1);
        let mut at = from;
        while at < until {
            at = self.cut(at);
            ends.push(at);
        }
        ends
    }
}

/// Joins chunk lists of consecutive segments, each cut from its own start, into the serial sequence.
pub(crate) struct Stitcher {
    /// End of the last chunk of the serial sequence so far (0 before any).
    at: usize,
}

impl Stitcher {
    /// A sequence starting at `start`.
    pub(crate) fn new(start: usize) -> Self {
        Stitcher { at: start }
    }

    /// Appends to `out` the serial chunks covering `list` (cut from `start`): chunks cut one by one with
    /// `cut_one` from the sequence's end until it meets `start` or an end in `list`, then the rest of
    /// `list`. When the sequence has passed `list`'s last end, nothing of it is used.
    pub(crate) fn push<T>(
        &mut self,
        start: usize,
        list: Vec<T>,
        end_of: impl Fn(&T) -> usize,
        mut cut_one: impl FnMut(usize) -> T,
        out: &mut Vec<T>,
    ) {
        loop {
            if self.at == start {
                out.extend(list);
                break;
            }
            match list.binary_search_by_key(&self.at, &end_of) {
                Ok(i) => {
                    out.extend(list.into_iter().skip(i + 1));
                    break;
                }
                Err(i) if i < list.len() => {
                    let chunk = cut_one(self.at);
                    self.at = end_of(&chunk);
                    out.push(chunk);
                }
                Err(_) => return,
            }
        }
        if let Some(last) = out.last() {
            self.at = self.at.max(end_of(last));
        }
    }
}

/// Ends of every chunk of `data`, cut in parallel segments and joined into the serial sequence.
pub(crate) fn chunk_ends(data: &[u8], params: CutParams) -> Vec<usize> {
    let cutter = Cutter::new(data, params);
    let lists: Vec<(usize, Vec<usize>)> = (0..data.len().div_ceil(SEGMENT_BYTES))
        .into_par_iter()
        .map(|i| {
            let start = i * SEGMENT_BYTES;
            (start, cutter.ends(start, (start + SEGMENT_BYTES).min(data.len())))
        })
        .collect();
    let mut ends = Vec::with_capacity(data.len() / params.avg_size + 1);
    let mut stitcher = Stitcher::new(0);
    for (start, list) in lists {
        stitcher.push(start, list, |&e| e, |at| cutter.cut(at), &mut ends);
    }
    ends
}

/// Index key of a chunk (matches are then compared byte for byte).
fn chunk_key(chunk: &[u8]) -> u128 {
    xxhash_rust::xxh3::xxh3_128(chunk)
}

/// A chunk of the base whose key is unique in the base, or the first of those sharing it.
const NO_CHUNK: usize = usize::MAX;

/// The base's chunks and where each one's bytes are first found.
pub(crate) struct BaseIndex<'a> {
    base: &'a [u8],
    cutter: Cutter<'a>,
    /// End of each chunk; chunk `k` starts where chunk `k - 1` ends.
    ends: Vec<usize>,
    /// Chunk number by key: the first chunk with that key.
    by_key: HashMap<u128, usize>,
    /// For each chunk, the first chunk with the same bytes, as a lookup by its key finds it (`NO_CHUNK`
    /// when that first chunk's key is the same but its bytes are not).
    first_copy: Vec<usize>,
}

impl<'a> BaseIndex<'a> {
    /// Chunks and indexes `base`: about 40 bytes per chunk.
    pub(crate) fn build(base: &'a [u8], params: CutParams) -> Self {
        let ends = chunk_ends(base, params);
        let keys: Vec<u128> =
            (0..ends.len()).into_par_iter().map(|k| chunk_key(&base[start_of(&ends, k)..ends[k]])).collect();
        let mut by_key = HashMap::with_capacity(ends.len());
        let mut first_copy = Vec::with_capacity(ends.len());
        for (k, key) in keys.into_iter().enumerate() {
            let first = *by_key.entry(key).or_insert(k);
            let same = first == k || base[start_of(&ends, first)..ends[first]] == base[start_of(&ends, k)..ends[k]];
            first_copy.push(if same { first } else { NO_CHUNK });
        }
        BaseIndex { base, cutter: Cutter::new(base, params), ends, by_key, first_copy }
    }

    /// Number of chunks.
    pub(crate) fn chunks(&self) -> usize {
        self.ends.len()
    }

    /// Offset and length of chunk `k`.
    pub(crate) fn range(&self, k: usize) -> (u64, u32) {
        let start = start_of(&self.ends, k);
        (start as u64, (self.ends[k] - start) as u32)
    }

    /// The first base chunk with exactly these bytes, if the index finds one.
    fn find(&self, chunk: &[u8]) -> Option<usize> {
        let &k = self.by_key.get(&chunk_key(chunk))?;
        (self.base[start_of(&self.ends, k)..self.ends[k]] == *chunk).then_some(k)
    }
}

fn start_of(ends: &[usize], k: usize) -> usize {
    if k == 0 { 0 } else { ends[k - 1] }
}

/// A chunk of the target and the first base chunk with its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TargetChunk {
    /// End offset in the target.
    pub(crate) end: usize,
    /// Base chunk number.
    pub(crate) found: Option<usize>,
}

/// Target bytes known to equal base bytes: `target[t..t + len] == base[o..o + len]`.
struct Run {
    t: usize,
    o: usize,
    len: usize,
    /// The base chunk that should come next in the target.
    next: usize,
}

/// Cuts the target into chunks and finds them in a [`BaseIndex`].
pub(crate) struct Matcher<'i, 'a> {
    index: &'i BaseIndex<'a>,
    target: &'a [u8],
    cutter: Cutter<'a>,
    max: usize,
}

impl<'i, 'a> Matcher<'i, 'a> {
    /// A matcher of `target` against the index's base, cutting with the same parameters.
    pub(crate) fn new(index: &'i BaseIndex<'a>, target: &'a [u8], params: CutParams) -> Self {
        Matcher { index, target, cutter: Cutter::new(target, params), max: params.max_size }
    }

    /// The chunk at `start` by FastCDC and a lookup.
    pub(crate) fn cut_and_find(&self, start: usize) -> TargetChunk {
        let end = self.cutter.cut(start);
        TargetChunk { end, found: self.index.find(&self.target[start..end]) }
    }

    /// The chunks from `from` until the first end at or past `until`, following runs of base chunks.
    pub(crate) fn segment(&self, from: usize, until: usize) -> Vec<TargetChunk> {
        let mut chunks = Vec::with_capacity((until - from) / (self.max / 8).max(1) + 1);
        let mut run: Option<Run> = None;
        let mut at = from;
        while at < until {
            let chunk = match run.as_mut().and_then(|r| self.follow(r, at)) {
                Some(chunk) => chunk,
                None => {
                    let chunk = self.cut_and_find(at);
                    run = chunk.found.map(|k| Run { t: chunk.end, o: self.index.ends[k], len: 0, next: k + 1 });
                    chunk
                }
            };
            at = chunk.end;
            chunks.push(chunk);
        }
        chunks
    }

    /// The target chunk at `at` when it is the run's next base chunk, with every byte its cut reads the
    /// same; the run then moves on.
    fn follow(&self, run: &mut Run, at: usize) -> Option<TargetChunk> {
        let index = self.index;
        let k = run.next;
        let end = *index.ends.get(k)?;
        let start = start_of(&index.ends, k);
        // Near either end a cut also depends on how many bytes remain: leave those to FastCDC.
        if start + self.max > index.base.len() || at + self.max > self.target.len() {
            return None;
        }
        debug_assert_eq!(at - run.t, start - run.o);
        let need = index.cutter.examined(start, end) - run.o;
        if run.len < need {
            let want = (need + RUN_STEP).min(index.base.len() - run.o).min(self.target.len() - run.t);
            run.len +=
                common_prefix(&self.target[run.t + run.len..run.t + want], &index.base[run.o + run.len..run.o + want]);
            if run.len < need {
                return None;
            }
        }
        run.next += 1;
        Some(TargetChunk { end: at + (end - start), found: Some(index.first_copy[k]).filter(|&f| f != NO_CHUNK) })
    }
}

/// Length of the common prefix of `a` and `b` (of equal length).
fn common_prefix(a: &[u8], b: &[u8]) -> usize {
    let mut same = 0;
    for (x, y) in a.chunks(COMPARE_BLOCK).zip(b.chunks(COMPARE_BLOCK)) {
        if x != y {
            return same + x.iter().zip(y).position(|(p, q)| p != q).unwrap_or(x.len());
        }
        same += x.len();
    }
    same
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(line_aware: bool) -> CutParams {
        CutParams { min_size: 256, avg_size: 1024, max_size: 4096, line_aware }
    }

    fn rows(n: usize, seed: usize) -> Vec<u8> {
        (0..n).flat_map(|i| format!("{i},user{},{}\n", (i + seed) * 31 % 977, i * 7).into_bytes()).collect()
    }

    fn serial(data: &[u8], p: CutParams) -> Vec<usize> {
        let cutter = Cutter::new(data, p);
        cutter.ends(0, data.len())
    }

    #[test]
    fn parallel_chunking_cuts_where_the_serial_pass_cuts() {
        for line_aware in [false, true] {
            let data = rows(1_500_000, 3);
            assert!(data.len() > 4 * SEGMENT_BYTES);
            let p = params(line_aware);
            let expected = serial(&data, p);
            assert_eq!(chunk_ends(&data, p), expected);
            assert_eq!(*expected.last().unwrap(), data.len());
        }
    }

    #[test]
    fn stitching_resynchronises_from_any_segment_start() {
        let data = rows(50_000, 1);
        let p = params(true);
        let cutter = Cutter::new(&data, p);
        let expected = serial(&data, p);
        for step in [1000, 4097, 65_536, 300_001] {
            let mut out = Vec::new();
            let mut stitcher = Stitcher::new(0);
            for start in (0..data.len()).step_by(step) {
                let list = cutter.ends(start, (start + step).min(data.len()));
                stitcher.push(start, list, |&e| e, |at| cutter.cut(at), &mut out);
            }
            assert_eq!(out, expected, "segments of {step} bytes");
        }
    }

    /// What a serial pass finds: every chunk cut by FastCDC and looked up.
    fn serial_matches(index: &BaseIndex<'_>, target: &[u8], p: CutParams) -> Vec<TargetChunk> {
        let m = Matcher::new(index, target, p);
        let mut at = 0;
        let mut out = Vec::new();
        while at < target.len() {
            let c = m.cut_and_find(at);
            at = c.end;
            out.push(c);
        }
        out
    }

    #[test]
    fn following_runs_finds_what_cutting_every_chunk_finds() {
        let base = rows(200_000, 0);
        let mut target = base.clone();
        // An edit, a deletion, an insertion and a changed tail.
        target[100_000..100_004].copy_from_slice(b"XXXX");
        target.drain(500_000..503_000);
        target.splice(900_000..900_000, rows(300, 9));
        let n = target.len();
        target[n - 10] = b'#';
        for line_aware in [false, true] {
            let p = params(line_aware);
            let index = BaseIndex::build(&base, p);
            assert!(index.chunks() > 100);
            let m = Matcher::new(&index, &target, p);
            let expected = serial_matches(&index, &target, p);
            assert!(expected.iter().filter(|c| c.found.is_some()).count() * 10 > expected.len() * 9);
            assert_eq!(m.segment(0, target.len()), expected);
            let mut stitched = Vec::new();
            let mut stitcher = Stitcher::new(0);
            for start in (0..target.len()).step_by(70_000) {
                let list = m.segment(start, (start + 70_000).min(target.len()));
                stitcher.push(start, list, |c| c.end, |at| m.cut_and_find(at), &mut stitched);
            }
            assert_eq!(stitched, expected);
        }
    }

    #[test]
    fn a_change_just_past_a_cut_is_not_missed() {
        let base = rows(20_000, 2);
        for line_aware in [false, true] {
            let p = params(line_aware);
            let index = BaseIndex::build(&base, p);
            for k in (1..index.chunks() - 2).step_by(7).take(40) {
                let (offset, len) = index.range(k);
                for at in [offset as usize + len as usize, offset as usize + len as usize - 1] {
                    let mut target = base.clone();
                    target[at] ^= 0x55;
                    let m = Matcher::new(&index, &target, p);
                    assert_eq!(m.segment(0, target.len()), serial_matches(&index, &target, p), "byte {at}");
                }
            }
        }
    }

    #[test]
    fn repeated_base_chunks_point_to_their_first_copy() {
        let block = rows(2_000, 4);
        let base = [block.clone(), block.clone(), block].concat();
        let p = params(true);
        let index = BaseIndex::build(&base, p);
        let found = serial_matches(&index, &base, p);
        let third = found.iter().position(|c| c.end > 2 * base.len() / 3 + 4096).unwrap();
        assert!(found[third].found.unwrap() < index.chunks() / 3 + 1);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]

        /// Edits (replaced, inserted, deleted bytes) at and next to the base's cut points, where a
        /// change may or may not move a cut, and any segment size: following runs and stitching
        /// segments give exactly the chunks and matches of cutting and looking up every chunk serially.
        #[test]
        fn runs_and_segments_match_the_serial_pass(
            seed in 0usize..1000,
            line_aware in proptest::bool::ANY,
            edits in proptest::collection::vec(
                (0usize..1000, -2isize..=2, 0usize..3, proptest::collection::vec(proptest::num::u8::ANY, 0..3)),
                0..8,
            ),
            step in 3_000usize..60_000,
        ) {
            let base = rows(4_000, seed);
            let p = params(line_aware);
            let index = BaseIndex::build(&base, p);
            let mut target = base.clone();
            // From the last cut backwards, so that earlier edits do not move later positions.
            let mut at: Vec<(usize, usize, Vec<u8>)> = edits
                .into_iter()
                .map(|(k, d, cut, insert)| {
                    let (o, l) = index.range(k % index.chunks());
                    ((o as usize + l as usize).saturating_add_signed(d).min(base.len()), cut, insert)
                })
                .collect();
            at.sort_by_key(|e| std::cmp::Reverse(e.0));
            for (pos, cut, insert) in at {
                let end = (pos + cut).min(target.len());
                target.splice(pos.min(end)..end, insert);
            }
            let m = Matcher::new(&index, &target, p);
            let expected = serial_matches(&index, &target, p);
            proptest::prop_assert_eq!(&m.segment(0, target.len()), &expected);
            let mut stitched = Vec::new();
            let mut stitcher = Stitcher::new(0);
            for start in (0..target.len()).step_by(step) {
                let list = m.segment(start, (start + step).min(target.len()));
                stitcher.push(start, list, |c| c.end, |at| m.cut_and_find(at), &mut stitched);
            }
            proptest::prop_assert_eq!(stitched, expected);
        }
    }

    #[test]
    fn common_prefix_finds_the_first_difference() {
        let a = vec![7u8; 10_000];
        let mut b = a.clone();
        assert_eq!(common_prefix(&a, &b), 10_000);
        b[5_000] = 0;
        assert_eq!(common_prefix(&a, &b), 5_000);
        b[0] = 0;
        assert_eq!(common_prefix(&a, &b), 0);
    }
}
