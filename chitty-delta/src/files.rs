//! Whole-file operations: memory-mapped inputs and atomic outputs. The `delta` example is a thin CLI over
//! these functions.
//!
//! Outputs are written to a temporary file in the destination's directory, flushed, `fsync`ed and renamed
//! over the destination (then the directory is synced), so a reader sees the old file or the complete
//! new one, never a partial or unverified one: a failed decode leaves no output.
//!
//! Before anything is written, an output path that resolves to one of the inputs (the same path, a hard
//! link, a symlink to it) is refused with [`DeltaError::OutputIsInput`], and one that exists but is not a
//! regular file (a FIFO, a device, a directory, a socket) with [`DeltaError::OutputNotRegularFile`].
//! A process stopped by a signal removes its temporary files with [`abandon_pending_outputs`].
//!
//! ```no_run
//! use chitty_delta::{ModelDeltaCompressor, files};
//! use std::path::Path;
//!
//! let c = ModelDeltaCompressor::builder().build()?;
//! files::compress_file(&c, Some(Path::new("base.safetensors")), Path::new("ft.safetensors"),
//!                      Path::new("ft.delta"), &mut |_| {})?;
//! files::decompress_file(&c, Some(Path::new("base.safetensors")), Path::new("ft.delta"),
//!                        Path::new("ft.restored.safetensors"), &mut |_| {})?;
//! # Ok::<(), chitty_delta::DeltaError>(())
//! ```

use std::fs::{self, File};
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

use chitty_core::{DecodeReport, EncodeReport};

use crate::compressor::{ArchiveSummary, inspect};
use crate::error::DeltaError;

/// What makes two paths the same file: device and inode on Unix (hard links and symlinks included), the
/// canonical path elsewhere.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileIdentity {
    #[cfg(unix)]
    dev_ino: (u64, u64),
    #[cfg(not(unix))]
    canonical: PathBuf,
}

impl FileIdentity {
    #[cfg(unix)]
    fn of(_path: &Path, metadata: &fs::Metadata) -> Self {
        use std::os::unix::fs::MetadataExt;
        FileIdentity { dev_ino: (metadata.dev(), metadata.ino()) }
    }

    #[cfg(not(unix))]
    fn of(path: &Path, _metadata: &fs::Metadata) -> Self {
        FileIdentity { canonical: fs::canonicalize(path).unwrap_or_else(|_| path.to_owned()) }
    }
}

/// An input already opened: its path for messages and the identity of the file actually read.
#[derive(Debug)]
struct InputFile {
    path: PathBuf,
    identity: FileIdentity,
}

/// Refuses, before anything is written, an output that resolves to one of `inputs` or that exists and is
/// not a regular file. An absent output (or a dangling symlink, which the rename replaces) is fine.
fn check_output(out: &Path, inputs: &[&InputFile]) -> Result<(), DeltaError> {
    // Follows symlinks: a link to an input, or to a FIFO, is what would be destroyed or misused.
    let metadata = match fs::metadata(out) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(DeltaError::io(format!("checking the output {}", out.display()), e)),
    };
    let identity = FileIdentity::of(out, &metadata);
    if let Some(input) = inputs.iter().find(|i| i.identity == identity) {
        return Err(DeltaError::OutputIsInput { output: out.to_owned(), input: input.path.clone() });
    }
    if !metadata.is_file() {
        return Err(DeltaError::OutputNotRegularFile { output: out.to_owned(), kind: file_kind(&metadata) });
    }
    Ok(())
}

/// What a file that is not a regular file is, for messages.
fn file_kind(metadata: &fs::Metadata) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        let t = metadata.file_type();
        if t.is_fifo() {
            return "a FIFO";
        } else if t.is_char_device() {
            return "a character device";
        } else if t.is_block_device() {
            return "a block device";
        } else if t.is_socket() {
            return "a socket";
        }
    }
    if metadata.is_dir() { "a directory" } else { "not a regular file" }
}

/// A read-only memory map of a whole file (empty files need no map).
#[derive(Debug)]
pub struct MappedFile {
    map: Option<memmap2::Mmap>,
    input: InputFile,
}

impl MappedFile {
    /// Maps `path` read-only.
    ///
    /// The map is only sound while no other process truncates or rewrites the file; the bytes are in any
    /// case treated as untrusted, and every output part is checked against its SHA-256.
    pub fn open(path: &Path) -> Result<Self, DeltaError> {
        let context = || format!("opening {}", path.display());
        let file = File::open(path).map_err(|e| DeltaError::io(context(), e))?;
        let metadata = file.metadata().map_err(|e| DeltaError::io(context(), e))?;
        let len = metadata.len();
        let map = if len == 0 {
            None
        } else {
            // SAFETY: the file is opened read-only and mapped privately; concurrent modification by
            // another process is the caller's documented responsibility (see above).
            #[allow(unsafe_code)]
            // Not populated: MAP_POPULATE filled 1 GB of page tables page by page on the calling thread
            // (0.2 s before any work); the workers' faults map whole page-cache folios, in parallel.
            let map = unsafe { memmap2::MmapOptions::new().map(&file) }.map_err(|e| DeltaError::io(context(), e))?;
            Some(map)
        };
        let identity = FileIdentity::of(path, &metadata);
        Ok(MappedFile { map, input: InputFile { path: path.to_owned(), identity } })
    }

    /// The file's bytes.
    pub fn bytes(&self) -> &[u8] {
        self.map.as_deref().unwrap_or(&[])
    }

    /// The path mapped.
    pub fn path(&self) -> &Path {
        &self.input.path
    }
}

/// Starts writing `path` atomically after refusing it when it resolves to one of `inputs` or exists as
/// anything but a regular file.
pub(crate) fn create_output(path: &Path, inputs: &[&MappedFile]) -> Result<AtomicFile, DeltaError> {
    check_output(path, &inputs.iter().map(|m| &m.input).collect::<Vec<_>>())?;
    AtomicFile::create(path)
}

/// Temporary files of this process's uncommitted [`AtomicFile`]s, so that [`abandon_pending_outputs`] can
/// remove them from a signal-handling thread.
static PENDING: Mutex<PendingOutputs> = Mutex::new(PendingOutputs { paths: Vec::new(), abandoned: false });

#[derive(Debug)]
struct PendingOutputs {
    paths: Vec<PathBuf>,
    /// Set by [`abandon_pending_outputs`]: no temporary file is created or committed after it.
    abandoned: bool,
}

fn pending() -> MutexGuard<'static, PendingOutputs> {
    // Every change under the lock is one push, retain or flag, so a poisoned list is still consistent.
    PENDING.lock().unwrap_or_else(PoisonError::into_inner)
}

fn abandoned(context: String) -> DeltaError {
    DeltaError::io(context, std::io::Error::new(std::io::ErrorKind::Interrupted, "the process is exiting"))
}

/// A temporary file's entry in [`PENDING`], removed when its [`AtomicFile`] is committed or dropped.
#[derive(Debug)]
struct Registration(PathBuf);

impl Drop for Registration {
    fn drop(&mut self) {
        pending().paths.retain(|p| *p != self.0);
    }
}

/// Removes the temporary file of every [`AtomicFile`] of this process not yet committed, and makes every
/// later [`AtomicFile::create`] and [`AtomicFile::commit`] fail. For a process about to exit on a signal
/// (the `delta` CLI calls it on SIGINT and SIGTERM): an interrupted run then leaves neither a temporary
/// file nor a partial output. Returns how many files it removed.
pub fn abandon_pending_outputs() -> usize {
    let mut pending = pending();
    pending.abandoned = true;
    pending.paths.iter().filter(|p| fs::remove_file(p).is_ok()).count()
}

/// A file that appears at its path only when [`AtomicFile::commit`] succeeds.
#[derive(Debug)]
pub struct AtomicFile {
    writer: BufWriter<tempfile::NamedTempFile>,
    path: PathBuf,
    registration: Registration,
}

impl AtomicFile {
    /// Starts writing a new version of `path` (in a temporary file next to it).
    pub fn create(path: &Path) -> Result<Self, DeltaError> {
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let context = || format!("creating a temporary file in {}", dir.display());
        // Created under the lock, so that abandon_pending_outputs either sees the file or refuses it.
        let mut pending = pending();
        if pending.abandoned {
            return Err(abandoned(context()));
        }
        let tmp = tempfile::Builder::new()
            .prefix(".chitty-delta-")
            .suffix(".tmp")
            .tempfile_in(dir)
            .map_err(|e| DeltaError::io(context(), e))?;
        // Absolute, so that removing it does not depend on the working directory at that time.
        let registered = std::path::absolute(tmp.path()).unwrap_or_else(|_| tmp.path().to_owned());
        pending.paths.push(registered.clone());
        Ok(AtomicFile {
            writer: BufWriter::with_capacity(1 << 20, tmp),
            path: path.to_owned(),
            registration: Registration(registered),
        })
    }

    /// Flushes, syncs and renames the file into place, then syncs the directory.
    pub fn commit(self) -> Result<(), DeltaError> {
        let AtomicFile { writer, path, registration } = self;
        let context = || format!("writing {}", path.display());
        let tmp = writer.into_inner().map_err(|e| DeltaError::io(context(), e.into_error()))?;
        tmp.as_file().sync_all().map_err(|e| DeltaError::io(context(), e))?;
        {
            // Renamed under the lock: once outputs are abandoned, none appears.
            let pending = pending();
            if pending.abandoned {
                return Err(abandoned(context()));
            }
            tmp.persist(&path).map_err(|e| DeltaError::io(context(), e.error))?;
        }
        drop(registration);
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            // Directory fsync makes the rename durable; some file systems refuse it, which is harmless.
            let _ = File::open(dir).and_then(|d| d.sync_all());
        }
        Ok(())
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.writer.write(buf)
    }

    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.writer.write_all(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.writer.flush()
    }
}

/// Standard output may not be one of the inputs either (`>> base`): refused before anything is written.
fn check_stdout(inputs: &[&InputFile]) -> Result<(), DeltaError> {
    #[cfg(unix)]
    {
        use std::os::fd::AsFd;
        let context = "checking standard output";
        // A duplicate of the descriptor gives the metadata of whatever standard output is, safely.
        let fd = std::io::stdout().as_fd().try_clone_to_owned().map_err(|e| DeltaError::io(context, e))?;
        let metadata = File::from(fd).metadata().map_err(|e| DeltaError::io(context, e))?;
        let identity = FileIdentity::of(Path::new("-"), &metadata);
        if let Some(input) = inputs.iter().find(|i| i.identity == identity) {
            return Err(DeltaError::OutputIsInput { output: "standard output".into(), input: input.path.clone() });
        }
    }
    #[cfg(not(unix))]
    let _ = inputs;
    Ok(())
}

/// Where a compressed or decompressed result goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output<'a> {
    /// A file, written atomically: on any error it is left untouched. It may not be an input, nor exist as
    /// anything but a regular file.
    File(&'a Path),
    /// Standard output, streamed as parts are done (the format needs no seeking); it may not be an input
    /// (`>> base`). A decode that fails part-way has written the parts verified before it, so a consumer must
    /// check the exit status before trusting what it read.
    Stdout,
}

impl Output<'_> {
    /// Checks the output against the `inputs`, then opens it; nothing is written when a check fails.
    fn open(self, inputs: &[&InputFile]) -> Result<Sink, DeltaError> {
        match self {
            Output::File(path) => {
                check_output(path, inputs)?;
                Ok(Sink::File(AtomicFile::create(path)?))
            }
            Output::Stdout => {
                check_stdout(inputs)?;
                Ok(Sink::Stdout(BufWriter::with_capacity(1 << 20, std::io::stdout().lock())))
            }
        }
    }
}

/// An opened [`Output`].
enum Sink {
    File(AtomicFile),
    Stdout(BufWriter<std::io::StdoutLock<'static>>),
}

impl Sink {
    /// Makes the output whole (a file committed, standard output flushed) while another thread drops `maps`:
    /// unmapping 2 GB of inputs takes the kernel about 0.15 s, which then overlaps the fsync.
    fn finish<M: Send>(self, maps: M) -> Result<(), DeltaError> {
        match self {
            Sink::File(file) => std::thread::scope(|scope| {
                scope.spawn(move || drop(maps));
                file.commit()
            }),
            Sink::Stdout(mut out) => out.flush().map_err(|e| DeltaError::io("writing standard output", e)),
        }
    }
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Sink::File(file) => file.write(buf),
            Sink::Stdout(out) => out.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Sink::File(file) => file.flush(),
            Sink::Stdout(out) => out.flush(),
        }
    }
}

/// Compresses `target` (against `base`) into `output`; the output may not be an input.
pub fn compress_to(
    compressor: &dyn DeltaFileCodec,
    base: Option<&Path>,
    target: &Path,
    output: Output<'_>,
    progress: &mut dyn FnMut(u64),
) -> Result<EncodeReport, DeltaError> {
    let base = base.map(MappedFile::open).transpose()?;
    let target = MappedFile::open(target)?;
    let mut sink = output.open(&base.iter().chain([&target]).map(|m| &m.input).collect::<Vec<_>>())?;
    let report =
        compressor.encode_with_progress(base.as_ref().map(MappedFile::bytes), target.bytes(), &mut sink, progress)?;
    sink.finish((base, target))?;
    Ok(report)
}

/// Decodes `archive` (against `base`) into `output`, each part written once verified; the output may not be an
/// input.
pub fn decompress_to(
    compressor: &dyn DeltaFileCodec,
    base: Option<&Path>,
    archive: &Path,
    output: Output<'_>,
    progress: &mut dyn FnMut(u64),
) -> Result<DecodeReport, DeltaError> {
    let base = base.map(MappedFile::open).transpose()?;
    let (mut input, archive) = open_archive(archive)?;
    let mut sink = output.open(&base.iter().map(|m| &m.input).chain([&archive]).collect::<Vec<_>>())?;
    let report =
        compressor.decode_with_progress(base.as_ref().map(MappedFile::bytes), &mut input, &mut sink, progress)?;
    sink.finish(base)?;
    Ok(report)
}

/// Compresses `target` (against `base`) into the archive `out`, atomically: [`compress_to`] a file.
pub fn compress_file(
    compressor: &dyn DeltaFileCodec,
    base: Option<&Path>,
    target: &Path,
    out: &Path,
    progress: &mut dyn FnMut(u64),
) -> Result<EncodeReport, DeltaError> {
    compress_to(compressor, base, target, Output::File(out), progress)
}

/// Decodes `archive` (against `base`) into `out`, atomically: [`decompress_to`] a file.
pub fn decompress_file(
    compressor: &dyn DeltaFileCodec,
    base: Option<&Path>,
    archive: &Path,
    out: &Path,
    progress: &mut dyn FnMut(u64),
) -> Result<DecodeReport, DeltaError> {
    decompress_to(compressor, base, archive, Output::File(out), progress)
}

/// Decodes `archive` against `base` without writing anything: checks every part.
pub fn verify_file(
    compressor: &dyn DeltaFileCodec,
    base: Option<&Path>,
    archive: &Path,
    progress: &mut dyn FnMut(u64),
) -> Result<DecodeReport, DeltaError> {
    let base = base.map(MappedFile::open).transpose()?;
    let (mut input, _) = open_archive(archive)?;
    compressor.decode_with_progress(base.as_ref().map(MappedFile::bytes), &mut input, &mut std::io::sink(), progress)
}

/// The size of the file `archive` rebuilds, read from its manifest only (for progress bars).
pub fn archive_target_len(archive: &Path) -> Result<u64, DeltaError> {
    let manifest = archive_manifest(archive)?;
    // Model and dataset manifests say `target_len`; Parquet manifests `target: {len, sha256}`.
    manifest
        .get("target_len")
        .or_else(|| manifest.get("target").and_then(|t| t.get("len")))
        .and_then(serde_json::Value::as_u64)
        .ok_or_else(|| DeltaError::corrupt("manifest", "no target length"))
}

/// The format `archive` is in (`chitty-model-delta`, `chitty-dataset-delta`), read from its manifest only:
/// which compressor decodes it.
pub fn archive_format(archive: &Path) -> Result<String, DeltaError> {
    archive_manifest(archive)?
        .get("format")
        .and_then(serde_json::Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| DeltaError::corrupt("manifest", "no format name"))
}

/// The manifest of `archive`, as JSON, without reading further.
fn archive_manifest(archive: &Path) -> Result<serde_json::Value, DeltaError> {
    let (manifest, _): (serde_json::Value, _) = crate::format::read_json_preamble(&mut open_archive(archive)?.0)?;
    Ok(manifest)
}

/// A compressor of this crate as the functions above drive it: encoding and decoding with a progress
/// callback (told the bytes of target read or output written so far) and this crate's error.
pub trait DeltaFileCodec: chitty_core::Compressor {
    /// [`chitty_core::Compressor::encode`] with progress.
    fn encode_with_progress(
        &self,
        base: Option<&[u8]>,
        target: &[u8],
        out: &mut dyn Write,
        progress: &mut dyn FnMut(u64),
    ) -> Result<EncodeReport, DeltaError>;

    /// [`chitty_core::Compressor::decode`] with progress.
    fn decode_with_progress(
        &self,
        base: Option<&[u8]>,
        archive: &mut dyn std::io::Read,
        out: &mut dyn Write,
        progress: &mut dyn FnMut(u64),
    ) -> Result<DecodeReport, DeltaError>;
}

/// Reads the manifest and every frame of `archive` (checking each frame's own checksum, no base needed).
pub fn inspect_file(archive: &Path) -> Result<ArchiveSummary, DeltaError> {
    inspect(&mut open_archive(archive)?.0)
}

fn open_archive(path: &Path) -> Result<(BufReader<File>, InputFile), DeltaError> {
    let context = || format!("opening {}", path.display());
    let file = File::open(path).map_err(|e| DeltaError::io(context(), e))?;
    let metadata = file.metadata().map_err(|e| DeltaError::io(context(), e))?;
    let input = InputFile { path: path.to_owned(), identity: FileIdentity::of(path, &metadata) };
    Ok((BufReader::with_capacity(1 << 20, file), input))
}
