//! The one public error type of chitty-delta and its conversion into [`CompressorError`], the error of the
//! [`chitty_core::Compressor`] trait.

use chitty_core::CompressorError;

/// What went wrong while reading a safetensors file, encoding or decoding a delta archive.
///
/// Every variant about a tensor names it, so that a script can say which tensor of which file is at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeltaError {
    /// The file is shorter than its 8-byte header length, or than the header it announces.
    #[error("safetensors file truncated: {what}")]
    Truncated {
        /// What could not be read in full.
        what: String,
    },
    /// The header announces more bytes than the limit allows.
    #[error("safetensors header of {len} bytes exceeds the limit of {limit} bytes")]
    HeaderTooLarge {
        /// Announced header length.
        len: u64,
        /// The limit.
        limit: u64,
    },
    /// The header is not UTF-8.
    #[error("safetensors header is not UTF-8: {source}")]
    HeaderNotUtf8 {
        /// The decoding error.
        #[source]
        source: std::str::Utf8Error,
    },
    /// The header is not the JSON object safetensors expects.
    #[error("safetensors header is not valid JSON of the expected shape: {source}")]
    HeaderJson {
        /// The parser's error.
        #[source]
        source: serde_json::Error,
    },
    /// A tensor entry of the header is not `{dtype, shape, data_offsets}`.
    #[error("tensor `{tensor}` has an invalid header entry: {source}")]
    InvalidTensorEntry {
        /// Tensor name.
        tensor: String,
        /// The parser's error.
        #[source]
        source: serde_json::Error,
    },
    /// Two entries of the header have the same name.
    #[error("tensor `{tensor}` appears more than once in the header")]
    DuplicateTensor {
        /// The repeated name.
        tensor: String,
    },
    /// A tensor has a dtype this crate does not know.
    #[error("tensor `{tensor}` has unknown dtype `{dtype}`")]
    UnknownDtype {
        /// Tensor name.
        tensor: String,
        /// The dtype string found.
        dtype: String,
    },
    /// The element count or byte size of a tensor overflows 64 bits.
    #[error("tensor `{tensor}`: shape {shape:?} overflows")]
    ShapeOverflow {
        /// Tensor name.
        tensor: String,
        /// The shape found.
        shape: Vec<u64>,
    },
    /// `data_offsets` do not span `dtype × shape` bytes.
    #[error("tensor `{tensor}`: dtype and shape need {expected} bytes but its offsets span {actual}")]
    SpanMismatch {
        /// Tensor name.
        tensor: String,
        /// Bytes implied by dtype and shape.
        expected: u64,
        /// Bytes between the offsets.
        actual: u64,
    },
    /// `data_offsets` are inverted or point beyond the data section.
    #[error("tensor `{tensor}`: offsets [{begin}, {end}) are not within the data section of {data_len} bytes")]
    OffsetsOutOfRange {
        /// Tensor name.
        tensor: String,
        /// Start offset.
        begin: u64,
        /// End offset.
        end: u64,
        /// Length of the data section.
        data_len: u64,
    },
    /// A tensor's bytes overlap the previous tensor's (in offset order).
    #[error("tensor `{tensor}` overlaps tensor `{previous}`")]
    Overlap {
        /// Tensor name.
        tensor: String,
        /// The tensor it overlaps.
        previous: String,
    },
    /// The tensors leave bytes of the data section uncovered.
    #[error("data bytes [{begin}, {end}) are not covered by any tensor (next tensor: {next})")]
    Gap {
        /// First uncovered byte.
        begin: u64,
        /// End of the uncovered range.
        end: u64,
        /// The tensor after the gap, or `end of file`.
        next: String,
    },
    /// The archive is damaged: a checksum, a length or a field does not match.
    #[error("corrupt archive in {part}: {reason}")]
    Corrupt {
        /// The part at fault: `archive header`, `manifest`, a tensor name with its chunk.
        part: String,
        /// What check failed.
        reason: String,
    },
    /// The base given to decode is not the base the archive was made against.
    #[error("wrong base: the archive was made against {expected}, this base is {found}")]
    WrongBase {
        /// What the archive recorded.
        expected: String,
        /// What the base given is.
        found: String,
    },
    /// The archive needs a base and none was given.
    #[error("this archive was made against a base; decoding needs that base")]
    MissingBase,
    /// A MAC key was given but the archive carries no MAC: it was written without a key, or its MAC was
    /// removed. Refused, so that a key always means an authenticated output.
    #[error("the archive carries no MAC but a MAC key was given: it was written without a key, or its MAC was removed")]
    MacMissing,
    /// The archive carries a MAC and no key was given to check it.
    #[error("the archive is authenticated with a keyed MAC (hmac-sha256): decoding it needs the key")]
    MacKeyNeeded,
    /// The archive's MAC does not match: the key is wrong, or the archive was altered.
    #[error("MAC mismatch: the key is wrong or the archive was altered")]
    MacMismatch,
    /// A configuration value is out of range.
    #[error("invalid configuration: {reason}")]
    InvalidConfig {
        /// What is wrong.
        reason: String,
    },
    /// A bug in this crate (a worker panicked); the archive and output are not to be trusted.
    #[error("internal error: {reason}")]
    Internal {
        /// What happened.
        reason: String,
    },
    /// The output path resolves to one of the inputs (the same path, a hard link or a symlink to it):
    /// replacing it would destroy an input, so nothing was written.
    #[error("the output {} is the input {}: writing it would destroy that input", output.display(), input.display())]
    OutputIsInput {
        /// The output path given.
        output: std::path::PathBuf,
        /// The input it resolves to.
        input: std::path::PathBuf,
    },
    /// The output path exists and is not a regular file (a FIFO, a device, a directory, a socket): only
    /// regular files are replaced, so nothing was written.
    #[error("the output {} is {kind}, not a regular file", output.display())]
    OutputNotRegularFile {
        /// The output path given.
        output: std::path::PathBuf,
        /// What it is, e.g. `a FIFO`.
        kind: &'static str,
    },
    /// A model repository or dataset directory cannot be stored or rebuilt as given (a name that is not
    /// UTF-8, an unsafe path in an archive, a file where a directory is expected, an output directory in
    /// use).
    #[error("{path}: {reason}")]
    InvalidRepository {
        /// The file or directory at fault.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// An error about one file of a directory archive: `source` says what, `path` (relative to the
    /// directory) says where.
    #[error("`{path}`: {source}")]
    InFile {
        /// The file, relative to the directory.
        path: String,
        /// What went wrong with it.
        #[source]
        source: Box<DeltaError>,
    },
    /// Reading or writing failed.
    #[error("I/O error while {context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

impl DeltaError {
    /// Shorthand for [`DeltaError::Corrupt`].
    pub(crate) fn corrupt(part: impl Into<String>, reason: impl Into<String>) -> Self {
        DeltaError::Corrupt { part: part.into(), reason: reason.into() }
    }

    /// The error itself, or for [`DeltaError::InFile`] the error about the file: what decides how a
    /// caller reacts (an exit code, a retry).
    pub fn innermost(&self) -> &DeltaError {
        match self {
            DeltaError::InFile { source, .. } => source.innermost(),
            other => other,
        }
    }

    /// This error as about the file `path` of a directory.
    pub(crate) fn in_file(self, path: &str) -> Self {
        DeltaError::InFile { path: path.to_owned(), source: Box::new(self) }
    }

    /// Shorthand for [`DeltaError::Io`].
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        DeltaError::Io { context: context.into(), source }
    }
}

impl From<DeltaError> for CompressorError {
    fn from(e: DeltaError) -> Self {
        match e {
            DeltaError::InFile { path, source } => match CompressorError::from(*source) {
                CompressorError::Corrupt { part, reason } => {
                    CompressorError::Corrupt { part: format!("`{path}` {part}"), reason }
                }
                other => other,
            },
            e @ DeltaError::InvalidRepository { .. } => {
                CompressorError::InvalidInput { what: "directory".to_owned(), reason: e.to_string() }
            }
            DeltaError::Corrupt { part, reason } => CompressorError::Corrupt { part, reason },
            DeltaError::WrongBase { expected, found } => CompressorError::WrongBase { expected, found },
            DeltaError::MissingBase => CompressorError::MissingBase,
            DeltaError::Io { context, source } => CompressorError::Io { context, source },
            DeltaError::MacMismatch => CompressorError::corrupt("archive MAC", e.to_string()),
            DeltaError::MacMissing | DeltaError::MacKeyNeeded => {
                CompressorError::InvalidInput { what: "MAC key".to_owned(), reason: e.to_string() }
            }
            DeltaError::InvalidConfig { .. } => {
                CompressorError::InvalidInput { what: "compressor configuration".to_owned(), reason: e.to_string() }
            }
            e @ (DeltaError::OutputIsInput { .. } | DeltaError::OutputNotRegularFile { .. }) => {
                CompressorError::InvalidInput { what: "output path".to_owned(), reason: e.to_string() }
            }
            e @ DeltaError::Internal { .. } => {
                CompressorError::Backend { backend: "chitty-delta", source: Box::new(e) }
            }
            other => CompressorError::InvalidInput { what: "safetensors file".to_owned(), reason: other.to_string() },
        }
    }
}
