//! The base of a model delta as one address space: one safetensors file, or every shard of a sharded
//! checkpoint laid end to end in order, so that a tensor of any target shard can name its base tensor in
//! any base shard by one offset. A single file is the special case whose offsets are the file's own, so
//! archives made against one file are what they always were.

use sha2::{Digest, Sha256};

use crate::error::DeltaError;
use crate::format::BaseFingerprint;
use crate::safetensors::{MAX_HEADER_LEN, SafetensorsLayout, TensorInfo};

/// The files of a base, each starting where the previous one ends.
#[derive(Debug, Clone)]
pub(crate) struct BaseFiles<'a> {
    files: Vec<&'a [u8]>,
    /// Offset of each file in the joined address space.
    starts: Vec<u64>,
}

impl<'a> BaseFiles<'a> {
    pub(crate) fn new(files: &[&'a [u8]]) -> Self {
        let mut starts = Vec::with_capacity(files.len());
        let mut at = 0u64;
        for f in files {
            starts.push(at);
            at += f.len() as u64;
        }
        BaseFiles { files: files.to_vec(), starts }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    pub(crate) fn files(&self) -> &[&'a [u8]] {
        &self.files
    }

    /// Offset of file `i` in the joined address space.
    pub(crate) fn start(&self, i: usize) -> u64 {
        self.starts[i]
    }

    /// `len` bytes at `offset`, or `None` when they are not within one file.
    pub(crate) fn get(&self, offset: u64, len: usize) -> Option<&'a [u8]> {
        let i = self.starts.partition_point(|&s| s <= offset).checked_sub(1)?;
        let from = usize::try_from(offset - self.starts[i]).ok()?;
        self.files[i].get(from..from.checked_add(len)?)
    }

    /// The fingerprint an archive records: for one file its length and the SHA-256 of its header; for
    /// several, their total length, the SHA-256 of their headers in order, and their count. `None` when
    /// a file is not framed like safetensors (the length of the first such file is returned).
    pub(crate) fn fingerprint(&self) -> Result<Option<BaseFingerprint>, u64> {
        if self.files.is_empty() {
            return Ok(None);
        }
        let mut sha = Sha256::new();
        for f in &self.files {
            let end = header_end(f).ok_or(f.len() as u64)?;
            sha.update(&f[..end]);
        }
        Ok(Some(BaseFingerprint {
            file_len: self.files.iter().map(|f| f.len() as u64).sum(),
            header_sha256: hex::encode(sha.finalize()),
            shards: (self.files.len() > 1).then_some(self.files.len() as u64),
        }))
    }

    /// The layout of every file, each validated as untrusted input.
    pub(crate) fn layouts(&self) -> Result<Vec<SafetensorsLayout>, DeltaError> {
        self.files.iter().map(|f| SafetensorsLayout::parse(f)).collect()
    }
}

/// A base tensor found by name: its header entry, absolute offset and bytes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BaseTensor<'a> {
    pub(crate) info: &'a TensorInfo,
    pub(crate) offset: u64,
    pub(crate) bytes: &'a [u8],
}

/// Indexes the tensors of every base file by name (the first shard holding a name wins).
pub(crate) fn index_by_name<'a>(
    base: &BaseFiles<'a>,
    layouts: &'a [SafetensorsLayout],
) -> std::collections::HashMap<&'a str, BaseTensor<'a>> {
    let mut by_name = std::collections::HashMap::new();
    for (i, (file, layout)) in base.files().iter().zip(layouts).enumerate() {
        for t in &layout.tensors {
            by_name.entry(t.name.as_str()).or_insert_with(|| BaseTensor {
                info: t,
                offset: base.start(i) + layout.data_start + t.begin,
                bytes: layout.tensor_bytes(file, t),
            });
        }
    }
    by_name
}

/// End of a safetensors file's header (8-byte length plus JSON), when it is framed like one.
fn header_end(file: &[u8]) -> Option<usize> {
    file.get(..8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_le_bytes)
        .filter(|&len| len <= MAX_HEADER_LEN)
        .map(|len| 8 + len as usize)
        .filter(|&end| end <= file.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_resolve_within_one_file_only() {
        let (a, b) = ([1u8, 2, 3], [4u8, 5]);
        let set = BaseFiles::new(&[&a, &b]);
        assert_eq!(set.get(0, 3), Some(&a[..]));
        assert_eq!(set.get(3, 2), Some(&b[..]));
        assert_eq!(set.get(4, 1), Some(&b[1..]));
        assert_eq!(set.get(2, 2), None, "spans two files");
        assert_eq!(set.get(5, 1), None);
        assert_eq!(set.get(u64::MAX, 1), None);
    }
}
