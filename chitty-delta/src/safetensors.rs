//! A validating reader of safetensors layouts, for files that are untrusted input.
//!
//! A safetensors file is `u64 LE header length`, a JSON header, then a data section. This module checks
//! everything a decoder will later rely on, and names the tensor at fault in each error:
//! the header length limit, UTF-8, the JSON shape, known dtypes, `dtype × shape` equal to the byte span
//! (checked arithmetic), offsets inside the data section, no duplicate names, and tensors that, sorted by
//! offset, neither overlap nor leave gaps, covering the data section exactly.
//!
//! The data section is not aligned for any dtype: read elements with `from_le_bytes`, never by casting.
//!
//! ```
//! use chitty_delta::safetensors::{Dtype, SafetensorsLayout};
//!
//! let header = br#"{"w":{"dtype":"BF16","shape":[2],"data_offsets":[0,4]}}"#;
//! let mut file = (header.len() as u64).to_le_bytes().to_vec();
//! file.extend_from_slice(header);
//! file.extend_from_slice(&[0x80, 0x3f, 0x00, 0x40]);
//! let layout = SafetensorsLayout::parse(&file)?;
//! assert_eq!(layout.tensors[0].dtype, Dtype::BF16);
//! assert_eq!(layout.tensor_bytes(&file, &layout.tensors[0]), &[0x80, 0x3f, 0x00, 0x40]);
//! # Ok::<(), chitty_delta::DeltaError>(())
//! ```

use std::collections::HashSet;
use std::fmt;

use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

use crate::error::DeltaError;

/// Largest header accepted, in bytes (the limit the reference implementation uses).
pub const MAX_HEADER_LEN: u64 = 100_000_000;

/// Element types of safetensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Dtype {
    /// Boolean, one byte.
    Bool,
    /// Unsigned 8-bit integer.
    U8,
    /// Signed 8-bit integer.
    I8,
    /// 8-bit float, 5 exponent bits.
    F8E5M2,
    /// 8-bit float, 4 exponent bits.
    F8E4M3,
    /// Signed 16-bit integer.
    I16,
    /// Unsigned 16-bit integer.
    U16,
    /// IEEE half precision.
    F16,
    /// bfloat16.
    BF16,
    /// Signed 32-bit integer.
    I32,
    /// Unsigned 32-bit integer.
    U32,
    /// IEEE single precision.
    F32,
    /// IEEE double precision.
    F64,
    /// Signed 64-bit integer.
    I64,
    /// Unsigned 64-bit integer.
    U64,
}

impl Dtype {
    /// Parses the dtype string of a safetensors header.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "BOOL" => Dtype::Bool,
            "U8" => Dtype::U8,
            "I8" => Dtype::I8,
            "F8_E5M2" => Dtype::F8E5M2,
            "F8_E4M3" => Dtype::F8E4M3,
            "I16" => Dtype::I16,
            "U16" => Dtype::U16,
            "F16" => Dtype::F16,
            "BF16" => Dtype::BF16,
            "I32" => Dtype::I32,
            "U32" => Dtype::U32,
            "F32" => Dtype::F32,
            "F64" => Dtype::F64,
            "I64" => Dtype::I64,
            "U64" => Dtype::U64,
            _ => return None,
        })
    }

    /// The dtype string of a safetensors header.
    pub fn as_str(self) -> &'static str {
        match self {
            Dtype::Bool => "BOOL",
            Dtype::U8 => "U8",
            Dtype::I8 => "I8",
            Dtype::F8E5M2 => "F8_E5M2",
            Dtype::F8E4M3 => "F8_E4M3",
            Dtype::I16 => "I16",
            Dtype::U16 => "U16",
            Dtype::F16 => "F16",
            Dtype::BF16 => "BF16",
            Dtype::I32 => "I32",
            Dtype::U32 => "U32",
            Dtype::F32 => "F32",
            Dtype::F64 => "F64",
            Dtype::I64 => "I64",
            Dtype::U64 => "U64",
        }
    }

    /// Bytes per element.
    pub fn size_bytes(self) -> u64 {
        match self {
            Dtype::Bool | Dtype::U8 | Dtype::I8 | Dtype::F8E5M2 | Dtype::F8E4M3 => 1,
            Dtype::I16 | Dtype::U16 | Dtype::F16 | Dtype::BF16 => 2,
            Dtype::I32 | Dtype::U32 | Dtype::F32 => 4,
            Dtype::F64 | Dtype::I64 | Dtype::U64 => 8,
        }
    }

    /// Whether tensors of this dtype get the float delta transforms (the others are stored whole).
    pub fn is_delta_float(self) -> bool {
        matches!(self, Dtype::F16 | Dtype::BF16 | Dtype::F32)
    }
}

impl fmt::Display for Dtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One tensor of a validated layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    /// Tensor name.
    pub name: String,
    /// Element type.
    pub dtype: Dtype,
    /// Shape (empty for a scalar).
    pub shape: Vec<u64>,
    /// First byte, relative to the data section.
    pub begin: u64,
    /// One past the last byte, relative to the data section.
    pub end: u64,
}

impl TensorInfo {
    /// Bytes of the tensor.
    pub fn byte_len(&self) -> u64 {
        self.end - self.begin
    }

    /// Number of elements.
    pub fn element_count(&self) -> u64 {
        self.byte_len() / self.dtype.size_bytes()
    }

    /// Elements per row of the tensor seen as a matrix `[shape[0], rest]` (1 for scalars and 1-D tensors
    /// are seen as a single row).
    pub fn row_len(&self) -> u64 {
        match self.shape.len() {
            0 => 1,
            1 => self.shape[0].max(1),
            _ => self.shape[1..].iter().product::<u64>().max(1),
        }
    }
}

/// The validated layout of a safetensors file: where its header ends and where each tensor lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SafetensorsLayout {
    /// Bytes before the data section: the 8-byte length and the JSON header.
    pub data_start: u64,
    /// Length of the whole file.
    pub file_len: u64,
    /// Tensors sorted by offset; they cover the data section exactly.
    pub tensors: Vec<TensorInfo>,
}

#[derive(Deserialize)]
struct RawTensorInfo {
    dtype: String,
    shape: Vec<u64>,
    data_offsets: (u64, u64),
}

/// Header entries in file order, keeping duplicates so that they can be refused.
struct HeaderEntries(Vec<(String, serde_json::Value)>);

impl<'de> Deserialize<'de> for HeaderEntries {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EntriesVisitor;
        impl<'de> Visitor<'de> for EntriesVisitor {
            type Value = HeaderEntries;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object of tensor entries")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<HeaderEntries, A::Error> {
                let mut entries = Vec::new();
                while let Some((key, value)) = map.next_entry::<String, serde_json::Value>()? {
                    entries.push((key, value));
                }
                Ok(HeaderEntries(entries))
            }
        }
        deserializer.deserialize_map(EntriesVisitor)
    }
}

impl SafetensorsLayout {
    /// Validates the header of `file` and returns its layout.
    pub fn parse(file: &[u8]) -> Result<Self, DeltaError> {
        let file_len = file.len() as u64;
        let len_bytes: [u8; 8] = file
            .get(..8)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| DeltaError::Truncated { what: "the 8-byte header length".to_owned() })?;
        let header_len = u64::from_le_bytes(len_bytes);
        if header_len > MAX_HEADER_LEN {
            return Err(DeltaError::HeaderTooLarge { len: header_len, limit: MAX_HEADER_LEN });
        }
        let data_start = 8 + header_len;
        let header = usize::try_from(data_start).ok().and_then(|end| file.get(8..end)).ok_or_else(|| {
            DeltaError::Truncated { what: format!("a header of {header_len} bytes in a file of {file_len} bytes") }
        })?;
        let text = std::str::from_utf8(header).map_err(|source| DeltaError::HeaderNotUtf8 { source })?;
        let HeaderEntries(entries) = serde_json::from_str(text).map_err(|source| DeltaError::HeaderJson { source })?;
        let data_len = file_len - data_start;

        let mut seen = HashSet::with_capacity(entries.len());
        let mut tensors = Vec::with_capacity(entries.len());
        for (name, value) in entries {
            if !seen.insert(name.clone()) {
                return Err(DeltaError::DuplicateTensor { tensor: name });
            }
            if name == "__metadata__" {
                continue;
            }
            let raw: RawTensorInfo = serde_json::from_value(value)
                .map_err(|source| DeltaError::InvalidTensorEntry { tensor: name.clone(), source })?;
            let dtype = Dtype::parse(&raw.dtype)
                .ok_or_else(|| DeltaError::UnknownDtype { tensor: name.clone(), dtype: raw.dtype.clone() })?;
            let (begin, end) = raw.data_offsets;
            if begin > end || end > data_len {
                return Err(DeltaError::OffsetsOutOfRange { tensor: name, begin, end, data_len });
            }
            let expected = raw
                .shape
                .iter()
                .try_fold(1u64, |acc, &d| acc.checked_mul(d))
                .and_then(|n| n.checked_mul(dtype.size_bytes()))
                .ok_or_else(|| DeltaError::ShapeOverflow { tensor: name.clone(), shape: raw.shape.clone() })?;
            if expected != end - begin {
                return Err(DeltaError::SpanMismatch { tensor: name, expected, actual: end - begin });
            }
            tensors.push(TensorInfo { name, dtype, shape: raw.shape, begin, end });
        }

        tensors.sort_by_key(|t| (t.begin, t.end));
        let mut covered = 0u64;
        let mut previous: Option<&str> = None;
        for t in &tensors {
            if t.begin < covered {
                return Err(DeltaError::Overlap {
                    tensor: t.name.clone(),
                    previous: previous.unwrap_or_default().to_owned(),
                });
            }
            if t.begin > covered {
                return Err(DeltaError::Gap { begin: covered, end: t.begin, next: format!("`{}`", t.name) });
            }
            covered = t.end;
            previous = Some(&t.name);
        }
        if covered != data_len {
            return Err(DeltaError::Gap { begin: covered, end: data_len, next: "end of file".to_owned() });
        }
        Ok(SafetensorsLayout { data_start, file_len, tensors })
    }

    /// The 8-byte length and the JSON header of `file`.
    pub fn header_bytes<'a>(&self, file: &'a [u8]) -> &'a [u8] {
        &file[..self.data_start as usize]
    }

    /// The bytes of `tensor` in `file` (the file this layout was parsed from).
    pub fn tensor_bytes<'a>(&self, file: &'a [u8], tensor: &TensorInfo) -> &'a [u8] {
        &file[(self.data_start + tensor.begin) as usize..(self.data_start + tensor.end) as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(header: &str, data_len: usize) -> Vec<u8> {
        let mut f = (header.len() as u64).to_le_bytes().to_vec();
        f.extend_from_slice(header.as_bytes());
        f.resize(f.len() + data_len, 0);
        f
    }

    fn err(header: &str, data_len: usize) -> DeltaError {
        SafetensorsLayout::parse(&file(header, data_len)).unwrap_err()
    }

    #[test]
    fn accepts_a_valid_file_in_any_key_order() {
        let h = r#"{"__metadata__":{"format":"pt"},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]},
                    "a":{"dtype":"BF16","shape":[2],"data_offsets":[0,4]},"e":{"dtype":"F16","shape":[0],"data_offsets":[12,12]}}"#;
        let l = SafetensorsLayout::parse(&file(h, 12)).unwrap();
        let names: Vec<_> = l.tensors.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "e"]);
        assert_eq!(l.tensors[1].element_count(), 2);
    }

    #[test]
    fn each_violation_is_typed_and_names_the_tensor() {
        assert!(matches!(SafetensorsLayout::parse(&[1, 2]), Err(DeltaError::Truncated { .. })));
        let mut huge = u64::MAX.to_le_bytes().to_vec();
        huge.push(b'{');
        assert!(matches!(SafetensorsLayout::parse(&huge), Err(DeltaError::HeaderTooLarge { .. })));
        let mut short = 100u64.to_le_bytes().to_vec();
        short.extend_from_slice(b"{}");
        assert!(matches!(SafetensorsLayout::parse(&short), Err(DeltaError::Truncated { .. })));
        let mut bad_utf8 = 2u64.to_le_bytes().to_vec();
        bad_utf8.extend_from_slice(&[0xff, 0xfe]);
        assert!(matches!(SafetensorsLayout::parse(&bad_utf8), Err(DeltaError::HeaderNotUtf8 { .. })));
        assert!(matches!(err("[1,2]", 0), DeltaError::HeaderJson { .. }));
        let dup = r#"{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}"#;
        assert!(matches!(err(dup, 2), DeltaError::DuplicateTensor { tensor } if tensor == "a"));
        let entry = r#"{"a":{"dtype":"U8","shape":[-1],"data_offsets":[0,1]}}"#;
        assert!(matches!(err(entry, 1), DeltaError::InvalidTensorEntry { tensor, .. } if tensor == "a"));
        let dtype = r#"{"a":{"dtype":"Q4","shape":[1],"data_offsets":[0,1]}}"#;
        assert!(matches!(err(dtype, 1), DeltaError::UnknownDtype { tensor, .. } if tensor == "a"));
        let overflow = r#"{"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,1]}}"#;
        assert!(matches!(err(overflow, 1), DeltaError::ShapeOverflow { tensor, .. } if tensor == "a"));
        let span = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}"#;
        assert!(matches!(err(span, 4), DeltaError::SpanMismatch { tensor, expected: 8, actual: 4 } if tensor == "a"));
        let range = r#"{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]}}"#;
        assert!(matches!(err(range, 2), DeltaError::OffsetsOutOfRange { tensor, .. } if tensor == "a"));
        let inverted = r#"{"a":{"dtype":"U8","shape":[0],"data_offsets":[2,1]}}"#;
        assert!(matches!(err(inverted, 2), DeltaError::OffsetsOutOfRange { .. }));
        let overlap = r#"{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"b":{"dtype":"U8","shape":[2],"data_offsets":[1,3]}}"#;
        assert!(
            matches!(err(overlap, 3), DeltaError::Overlap { tensor, previous } if tensor == "b" && previous == "a")
        );
        let gap = r#"{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"b":{"dtype":"U8","shape":[1],"data_offsets":[2,3]}}"#;
        assert!(matches!(err(gap, 3), DeltaError::Gap { begin: 1, end: 2, next } if next == "`b`"));
        let tail = r#"{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}"#;
        assert!(matches!(err(tail, 3), DeltaError::Gap { begin: 1, end: 3, .. }));
    }
}
