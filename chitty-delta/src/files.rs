//! Whole-file operations: memory-mapped inputs and atomic outputs. The `delta` example is a thin CLI over
//! these functions.
//!
//! Outputs are written to a temporary file in the destination's directory, flushed, `fsync`ed and renamed
//! over the destination (then the directory is synced), so a reader sees the old file or the complete
//! new one, never a partial or unverified one: a failed decode leaves no output.
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

use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use chitty_core::{DecodeReport, EncodeReport};

use crate::compressor::{ArchiveSummary, ModelDeltaCompressor, inspect};
use crate::error::DeltaError;

/// A read-only memory map of a whole file (empty files need no map).
#[derive(Debug)]
pub struct MappedFile {
    map: Option<memmap2::Mmap>,
    path: PathBuf,
}

impl MappedFile {
    /// Maps `path` read-only.
    ///
    /// The map is only sound while no other process truncates or rewrites the file; the bytes are in any
    /// case treated as untrusted, and every output part is checked against its SHA-256.
    pub fn open(path: &Path) -> Result<Self, DeltaError> {
        let context = || format!("opening {}", path.display());
        let file = File::open(path).map_err(|e| DeltaError::io(context(), e))?;
        let len = file.metadata().map_err(|e| DeltaError::io(context(), e))?.len();
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
        Ok(MappedFile { map, path: path.to_owned() })
    }

    /// The file's bytes.
    pub fn bytes(&self) -> &[u8] {
        self.map.as_deref().unwrap_or(&[])
    }

    /// The path mapped.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// A file that appears at its path only when [`AtomicFile::commit`] succeeds.
#[derive(Debug)]
pub struct AtomicFile {
    writer: BufWriter<tempfile::NamedTempFile>,
    path: PathBuf,
}

impl AtomicFile {
    /// Starts writing a new version of `path` (in a temporary file next to it).
    pub fn create(path: &Path) -> Result<Self, DeltaError> {
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let tmp = tempfile::Builder::new()
            .prefix(".chitty-delta-")
            .suffix(".tmp")
            .tempfile_in(dir)
            .map_err(|e| DeltaError::io(format!("creating a temporary file in {}", dir.display()), e))?;
        Ok(AtomicFile { writer: BufWriter::with_capacity(1 << 20, tmp), path: path.to_owned() })
    }

    /// Flushes, syncs and renames the file into place, then syncs the directory.
    pub fn commit(self) -> Result<(), DeltaError> {
        let context = || format!("writing {}", self.path.display());
        let tmp = self.writer.into_inner().map_err(|e| DeltaError::io(context(), e.into_error()))?;
        tmp.as_file().sync_all().map_err(|e| DeltaError::io(context(), e))?;
        tmp.persist(&self.path).map_err(|e| DeltaError::io(context(), e.error))?;
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
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

/// Compresses `target` (against `base`) into the archive `out`, atomically.
pub fn compress_file(
    compressor: &ModelDeltaCompressor,
    base: Option<&Path>,
    target: &Path,
    out: &Path,
    progress: &mut dyn FnMut(u64),
) -> Result<EncodeReport, DeltaError> {
    let base = base.map(MappedFile::open).transpose()?;
    let target = MappedFile::open(target)?;
    let mut file = AtomicFile::create(out)?;
    let report =
        compressor.encode_with_progress(base.as_ref().map(MappedFile::bytes), target.bytes(), &mut file, progress)?;
    commit_unmapping(file, (base, target))?;
    Ok(report)
}

/// Commits `file` while another thread drops `maps`: unmapping 2 GB of inputs takes the kernel about
/// 0.15 s, which then overlaps the fsync instead of following it.
fn commit_unmapping<M: Send>(file: AtomicFile, maps: M) -> Result<(), DeltaError> {
    std::thread::scope(|scope| {
        scope.spawn(move || drop(maps));
        file.commit()
    })
}

/// Decodes `archive` (against `base`) into `out`, atomically: on any error `out` is left untouched.
pub fn decompress_file(
    compressor: &ModelDeltaCompressor,
    base: Option<&Path>,
    archive: &Path,
    out: &Path,
    progress: &mut dyn FnMut(u64),
) -> Result<DecodeReport, DeltaError> {
    let base = base.map(MappedFile::open).transpose()?;
    let mut input = open_archive(archive)?;
    let mut file = AtomicFile::create(out)?;
    let report =
        compressor.decode_with_progress(base.as_ref().map(MappedFile::bytes), &mut input, &mut file, progress)?;
    commit_unmapping(file, base)?;
    Ok(report)
}

/// Decodes `archive` against `base` without writing anything: checks every part.
pub fn verify_file(
    compressor: &ModelDeltaCompressor,
    base: Option<&Path>,
    archive: &Path,
    progress: &mut dyn FnMut(u64),
) -> Result<DecodeReport, DeltaError> {
    let base = base.map(MappedFile::open).transpose()?;
    let mut input = open_archive(archive)?;
    compressor.decode_with_progress(base.as_ref().map(MappedFile::bytes), &mut input, &mut std::io::sink(), progress)
}

/// The size of the file `archive` rebuilds, read from its manifest only (for progress bars).
pub fn archive_target_len(archive: &Path) -> Result<u64, DeltaError> {
    crate::format::read_preamble(&mut open_archive(archive)?).map(|m| m.target_len)
}

/// Reads the manifest and every frame of `archive` (checking each frame's own checksum, no base needed).
pub fn inspect_file(archive: &Path) -> Result<ArchiveSummary, DeltaError> {
    inspect(&mut open_archive(archive)?)
}

fn open_archive(path: &Path) -> Result<BufReader<File>, DeltaError> {
    let file = File::open(path).map_err(|e| DeltaError::io(format!("opening {}", path.display()), e))?;
    Ok(BufReader::with_capacity(1 << 20, file))
}
