//! Whole model repositories (and any directory) as one archive against a base directory.
//!
//! A directory laid out as on the Hugging Face Hub — sharded safetensors with
//! `model.safetensors.index.json`, or one `model.safetensors`, beside config, tokenizer and README files
//! — is stored against its base directory by [`RepoCompressor::compress`]:
//! - every `*.safetensors` file of the target is a model delta ([`ModelDeltaCompressor::encode_sharded`])
//!   against **all** `*.safetensors` files of the base, so a tensor is found by name in whichever base
//!   shard holds it, however the two are sharded; a tensor no base shard holds is stored alone;
//! - every other file (the index included) is a dataset delta against the base file of the same
//!   relative path, or alone when the base has none.
//!
//! [`RepoCompressor::decompress`] recreates the directory exactly (names, bytes, subdirectories).
//!
//! ```text
//! archive  = the container header | manifest (JSON) | entry archive*      (in manifest order)
//! manifest = { format: "chitty-repo-delta", version: 1,
//!              base_shards: [{path, len, header_sha256}],                 (what model entries need)
//!              entries: [{path, kind: "model"|"dataset", base, target_len, target_sha256,
//!                         archive_len, archive_sha256}] }
//! ```
//!
//! Each entry archive is a complete model or dataset archive, with its own per-part SHA-256s; the
//! manifest adds the SHA-256 of each entry archive and of each rebuilt file, and its own checksum covers
//! them all. A base whose shards differ from those recorded is [`DeltaError::WrongBase`] naming the
//! shard, before anything is written.
//!
//! **Resumable.** Compressing writes each entry archive into `ARCHIVE.chitty-partial/` beside the
//! archive, with a `state.json` recording a SHA-256 of the base files and settings and, per finished
//! entry, the SHA-256 of its target file and of its archive. A run that stops (a crash, a signal, an
//! error) and is started again reuses each finished entry whose target file is unchanged and whose
//! archive still hashes to what the state says; a state made for another base or other settings, or one
//! that does not parse, is discarded. Decompressing builds
//! the directory in `OUT.chitty-partial/` and renames it to `OUT` when every file is there; a resumed run
//! keeps a file only when it hashes to the SHA-256 the *archive* records for it, so a tampered state or
//! file is never trusted. Both remove their partial directory on success.
//!
//! ```
//! use chitty_delta::repo::RepoCompressor;
//! use chitty_testkit::model_pairs::{RepoPairSpec, write_repo_pair};
//!
//! let dir = tempfile::tempdir()?;
//! let (base, target) = (dir.path().join("base"), dir.path().join("ft"));
//! write_repo_pair(&RepoPairSpec::small(1), &base, &target)?;
//! let repo = RepoCompressor::builder().build()?;
//! let archive = dir.path().join("ft.delta");
//! let report = repo.compress(&base, &target, &archive, &mut |_| Ok(()))?;
//! assert!(report.report.output_bytes < report.report.input_bytes / 2);
//! let out = dir.path().join("restored");
//! repo.decompress(&base, &archive, &out, &mut |_| Ok(()))?;
//! assert_eq!(std::fs::read(out.join("config.json"))?, std::fs::read(target.join("config.json"))?);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, File};
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use chitty_core::{DecodeReport, EncodeReport, PartReport};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::compressor::{ModelDeltaCompressor, TensorSummary, inspect};
use crate::dataset::DatasetDeltaCompressor;
use crate::error::DeltaError;
use crate::files::{AtomicFile, MappedFile, create_output};
use crate::format;

/// The format name, also in the manifest.
pub const REPO_FORMAT: &str = "chitty-repo-delta";
const REPO_VERSION: u32 = 1;
const CONTAINER_VERSION: u32 = 1;
/// Suffix of the directory beside an output where an interrupted run keeps its progress.
pub const PARTIAL_SUFFIX: &str = ".chitty-partial";
const STATE_FILE: &str = "state.json";
/// Format of the state files: a state of another version is discarded.
const STATE_VERSION: u32 = 1;
/// Deepest directory nesting scanned (a symlink loop ends here, as an error).
const MAX_DEPTH: usize = 32;
/// Most files in a directory archive.
const MAX_ENTRIES: usize = 100_000;

/// How an entry is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum EntryKind {
    /// A safetensors file: a model delta against every safetensors shard of the base.
    Model,
    /// Any other file: a dataset delta against the base file of the same path, or alone.
    Dataset,
}

impl EntryKind {
    /// `model` or `dataset`.
    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::Model => "model",
            EntryKind::Dataset => "dataset",
        }
    }
}

/// A base shard as the archive records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct ShardRecord {
    path: String,
    len: u64,
    header_sha256: String,
}

/// One file of the target directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct EntryRecord {
    path: String,
    kind: EntryKind,
    /// Dataset entries: the base file (same path) the delta is against.
    base: Option<String>,
    target_len: u64,
    target_sha256: String,
    archive_len: u64,
    archive_sha256: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct RepoManifest {
    format: String,
    version: u32,
    base_shards: Vec<ShardRecord>,
    entries: Vec<EntryRecord>,
}

impl RepoManifest {
    /// Checks what a decoder relies on; the manifest is untrusted input.
    fn check(&self) -> Result<(), DeltaError> {
        let bad = |reason: String| DeltaError::corrupt("manifest", reason);
        if self.format != REPO_FORMAT || self.version != REPO_VERSION {
            return Err(bad(format!(
                "format {} version {} is not {REPO_FORMAT} v{REPO_VERSION}",
                self.format, self.version
            )));
        }
        if self.entries.len() > MAX_ENTRIES {
            return Err(bad(format!("{} entries", self.entries.len())));
        }
        let mut seen = HashSet::new();
        for s in &self.base_shards {
            check_relative(&s.path).map_err(|r| bad(format!("base shard `{}`: {r}", s.path)))?;
            check_sha(&s.header_sha256).map_err(|r| bad(format!("base shard `{}`: {r}", s.path)))?;
        }
        let mut total = 0u64;
        for e in &self.entries {
            let bad_entry = |r: &str| bad(format!("entry `{}`: {r}", e.path));
            check_relative(&e.path).map_err(|r| bad_entry(&r))?;
            if let Some(b) = &e.base {
                check_relative(b).map_err(|r| bad_entry(&r))?;
            }
            if e.kind == EntryKind::Model && e.base.is_some() {
                return Err(bad_entry("a model entry names a base file"));
            }
            check_sha(&e.target_sha256).map_err(|r| bad_entry(&r))?;
            check_sha(&e.archive_sha256).map_err(|r| bad_entry(&r))?;
            // Case-folded too: a name twice, or differing only in case, would overwrite on some systems.
            if !seen.insert(e.path.to_lowercase()) {
                return Err(bad_entry("the path appears twice"));
            }
            total = total.checked_add(e.archive_len).ok_or_else(|| bad_entry("lengths overflow"))?;
        }
        // A file and a directory of the same name cannot both be rebuilt.
        for e in &self.entries {
            let mut prefix = String::new();
            for part in e.path.split('/').take(e.path.split('/').count() - 1) {
                prefix.push_str(part);
                if seen.contains(&prefix.to_lowercase()) {
                    return Err(bad(format!("entry `{}` is inside the file `{prefix}`", e.path)));
                }
                prefix.push('/');
            }
        }
        Ok(())
    }
}

/// A relative path of `/`-separated normal components: nothing absolute, no `..`, no `.`, no NUL.
fn check_relative(path: &str) -> Result<(), String> {
    if path.is_empty() || path.len() > 4096 {
        return Err("empty or overlong path".to_owned());
    }
    for part in path.split('/') {
        if part.is_empty() || part == "." || part == ".." || part.contains(['\0', '\\']) {
            return Err(format!("unsafe path `{}`", path.escape_debug()));
        }
    }
    Ok(())
}

fn check_sha(hex_sha: &str) -> Result<(), String> {
    if hex_sha.len() == 64 && hex_sha.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err("a checksum is not a SHA-256".to_owned())
    }
}

/// What happens during [`RepoCompressor::compress`] and [`RepoCompressor::decompress`], for progress
/// bars and logs; returning an error from the callback stops the run there (its progress is kept, so
/// the next run resumes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RepoEvent<'a> {
    /// Bytes of the target directory done so far (read when compressing, written when decompressing).
    Bytes(u64),
    /// A file is finished: stored or rebuilt now, or `reused` from an interrupted run's progress.
    FileDone {
        /// Its path in the directory.
        path: &'a str,
        /// Whether an earlier run's verified result was kept.
        reused: bool,
    },
}

/// One file of a directory archive, as a report lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct EntrySummary {
    /// Path in the directory (`/`-separated).
    pub path: String,
    /// How it is stored.
    pub kind: EntryKind,
    /// Bytes of the file.
    pub original_bytes: u64,
    /// Bytes of its archive.
    pub stored_bytes: u64,
    /// Whether an interrupted run's result was reused (compress, decompress) instead of redone.
    pub reused: bool,
    /// Model entries read by [`RepoCompressor::inspect`]: each tensor; empty otherwise.
    pub tensors: Vec<TensorSummary>,
}

/// What [`RepoCompressor::compress`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct RepoEncodeReport {
    /// Totals over the directory; its parts are every entry's parts, named `path: part`.
    pub report: EncodeReport,
    /// Per file, in archive order.
    pub entries: Vec<EntrySummary>,
}

/// What [`RepoCompressor::decompress`] or [`RepoCompressor::verify`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct RepoDecodeReport {
    /// Totals over the directory.
    pub report: DecodeReport,
    /// Per file, in archive order.
    pub entries: Vec<EntrySummary>,
}

/// What [`RepoCompressor::inspect`] read.
#[derive(Debug, Clone, PartialEq)]
pub struct RepoSummary {
    /// Bytes of the directory rebuilt.
    pub target_bytes: u64,
    /// Bytes of the archive.
    pub archive_bytes: u64,
    /// Safetensors shards of the base that model entries read.
    pub base_shards: Vec<String>,
    /// Per file, in archive order.
    pub entries: Vec<EntrySummary>,
}

/// Compresses, decompresses, verifies and inspects directory archives; see the [module docs](self).
#[derive(Debug, Clone)]
pub struct RepoCompressor {
    model: ModelDeltaCompressor,
    dataset: DatasetDeltaCompressor,
    models: bool,
}

/// Builds a [`RepoCompressor`].
#[derive(Debug, Clone, Default)]
pub struct RepoCompressorBuilder {
    model: Option<ModelDeltaCompressor>,
    dataset: Option<DatasetDeltaCompressor>,
    all_dataset: bool,
}

impl RepoCompressorBuilder {
    /// The compressor of safetensors files (default: [`ModelDeltaCompressor::builder`]'s defaults); its
    /// mode, policy rules and MAC key apply to every model entry.
    pub fn model(mut self, model: ModelDeltaCompressor) -> Self {
        self.model = Some(model);
        self
    }

    /// The compressor of every other file (default: [`DatasetDeltaCompressor::builder`]'s defaults).
    pub fn dataset(mut self, dataset: DatasetDeltaCompressor) -> Self {
        self.dataset = Some(dataset);
        self
    }

    /// Stores safetensors files as dataset deltas too (against the same-named base file), e.g. for
    /// weights that are not fine-tunes of the base.
    pub fn all_dataset(mut self, yes: bool) -> Self {
        self.all_dataset = yes;
        self
    }

    /// Builds the compressor with the defaults for what was not given.
    pub fn build(self) -> Result<RepoCompressor, DeltaError> {
        Ok(RepoCompressor {
            model: match self.model {
                Some(m) => m,
                None => ModelDeltaCompressor::builder().build()?,
            },
            dataset: match self.dataset {
                Some(d) => d,
                None => DatasetDeltaCompressor::builder().build()?,
            },
            models: !self.all_dataset,
        })
    }
}

/// Every regular file under `dir` (symlinks followed), as sorted `/`-separated relative paths.
pub fn scan_dir(dir: &Path) -> Result<Vec<String>, DeltaError> {
    let mut out = Vec::new();
    scan_into(dir, "", 0, &mut out)?;
    out.sort();
    Ok(out)
}

fn scan_into(dir: &Path, prefix: &str, depth: usize, out: &mut Vec<String>) -> Result<(), DeltaError> {
    let shown = || if prefix.is_empty() { dir.display().to_string() } else { prefix.to_owned() };
    if depth > MAX_DEPTH {
        return Err(DeltaError::InvalidRepository {
            path: shown(),
            reason: "nested too deep (a symlink loop?)".into(),
        });
    }
    let entries =
        fs::read_dir(dir).map_err(|e| DeltaError::io(format!("reading the directory {}", dir.display()), e))?;
    for entry in entries {
        let entry = entry.map_err(|e| DeltaError::io(format!("reading the directory {}", dir.display()), e))?;
        let name = entry.file_name();
        let name = name.to_str().ok_or_else(|| DeltaError::InvalidRepository {
            path: format!("{}/{}", shown(), name.to_string_lossy()),
            reason: "the name is not UTF-8".into(),
        })?;
        let rel = if prefix.is_empty() { name.to_owned() } else { format!("{prefix}/{name}") };
        check_relative(&rel).map_err(|reason| DeltaError::InvalidRepository { path: rel.clone(), reason })?;
        let path = entry.path();
        let metadata = fs::metadata(&path).map_err(|e| DeltaError::io(format!("reading {}", path.display()), e))?;
        if metadata.is_dir() {
            scan_into(&path, &rel, depth + 1, out)?;
        } else if metadata.is_file() {
            if out.len() >= MAX_ENTRIES {
                return Err(DeltaError::InvalidRepository { path: shown(), reason: "too many files".into() });
            }
            out.push(rel);
        } else {
            return Err(DeltaError::InvalidRepository { path: rel, reason: "not a regular file or directory".into() });
        }
    }
    Ok(())
}

fn join(dir: &Path, rel: &str) -> PathBuf {
    rel.split('/').fold(dir.to_owned(), |p, c| p.join(c))
}

fn is_model_file(path: &str) -> bool {
    path.ends_with(".safetensors")
}

/// `path` with `.chitty-partial` appended to its file name: where an interrupted run keeps its progress.
pub fn partial_dir(path: &Path) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_else(|| "output".into());
    name.push(PARTIAL_SUFFIX);
    path.with_file_name(name)
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A writer that hashes and counts what passes through it.
struct HashingWriter<W> {
    inner: W,
    sha: Sha256,
    count: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.sha.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// A reader that hashes what passes through it.
struct HashingReader<R> {
    inner: R,
    sha: Sha256,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.sha.update(&buf[..n]);
        Ok(n)
    }
}

/// Progress of an interrupted compress.
#[derive(Debug, Default, Serialize, Deserialize)]
struct CompressState {
    version: u32,
    /// SHA-256 of the inputs and settings the entries were made from.
    inputs: String,
    done: BTreeMap<String, DoneEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct DoneEntry {
    file: String,
    record: EntryRecord,
    parts: Vec<StoredPart>,
}

/// A [`PartReport`] as the state keeps it, so that a resumed run reports the same parts.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredPart {
    name: String,
    method: String,
    original_bytes: u64,
    stored_bytes: u64,
    relative_error: Option<f64>,
}

/// Progress of an interrupted decompress: only which files to check; each is kept only when it hashes
/// to what the archive records.
#[derive(Debug, Default, Serialize, Deserialize)]
struct DecompressState {
    version: u32,
    /// SHA-256 of the archive's header and manifest.
    archive: String,
    done: Vec<String>,
}

fn write_state(path: &Path, state: &impl Serialize) -> Result<(), DeltaError> {
    let mut file = AtomicFile::create(path)?;
    serde_json::to_writer(&mut file, state)
        .map_err(|e| DeltaError::io(format!("writing {}", path.display()), std::io::Error::other(e)))?;
    file.commit()
}

/// The state at `path` when it parses and is of this version; anything else is no state.
fn read_state<S: serde::de::DeserializeOwned>(path: &Path) -> Option<S> {
    let bytes = fs::read(path).ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn hash_file(path: &Path) -> Result<String, DeltaError> {
    Ok(sha256_hex(MappedFile::open(path)?.bytes()))
}

/// An opened directory archive: its manifest and where each entry starts.
struct OpenedArchive {
    manifest: RepoManifest,
    preamble_sha256: String,
    offsets: Vec<u64>,
    len: u64,
}

fn open_repo_archive(path: &Path) -> Result<OpenedArchive, DeltaError> {
    let context = || format!("opening {}", path.display());
    let file = File::open(path).map_err(|e| DeltaError::io(context(), e))?;
    let len = file.metadata().map_err(|e| DeltaError::io(context(), e))?.len();
    let (manifest, bytes): (RepoManifest, _) = format::read_json_preamble(&mut BufReader::new(file))?;
    manifest.check()?;
    let mut offsets = Vec::with_capacity(manifest.entries.len());
    let mut at = bytes.len() as u64;
    for e in &manifest.entries {
        offsets.push(at);
        at += e.archive_len;
    }
    if at != len {
        let reason = if at > len { "archive truncated" } else { "trailing bytes after the last entry" };
        return Err(DeltaError::corrupt("end of archive", format!("{reason}: {len} bytes, the manifest says {at}")));
    }
    Ok(OpenedArchive { manifest, preamble_sha256: sha256_hex(&bytes), offsets, len })
}

/// A reader of entry `i`'s archive bytes.
fn entry_reader(path: &Path, opened: &OpenedArchive, i: usize) -> Result<HashingReader<impl Read>, DeltaError> {
    let context = || format!("reading {}", path.display());
    let mut file = File::open(path).map_err(|e| DeltaError::io(context(), e))?;
    file.seek(SeekFrom::Start(opened.offsets[i])).map_err(|e| DeltaError::io(context(), e))?;
    let take = BufReader::with_capacity(1 << 20, file).take(opened.manifest.entries[i].archive_len);
    Ok(HashingReader { inner: take, sha: Sha256::new() })
}

/// Reads what is left of an entry's bytes and checks their SHA-256; after a decoder, which reads to its
/// own end, nothing may be left (`decoded`).
fn finish_entry_read<R: Read>(
    mut reader: HashingReader<R>,
    record: &EntryRecord,
    decoded: bool,
) -> Result<(), DeltaError> {
    let rest =
        std::io::copy(&mut reader, &mut std::io::sink()).map_err(|e| DeltaError::io("reading the archive", e))?;
    if decoded && rest != 0 {
        return Err(DeltaError::corrupt("entry archive", format!("{rest} bytes after its end")));
    }
    if hex::encode(reader.sha.finalize()) != record.archive_sha256 {
        return Err(DeltaError::corrupt("entry archive", "checksum mismatch"));
    }
    Ok(())
}

/// The base files an archive needs, mapped and checked against what it recorded.
struct MappedBase {
    shards: Vec<MappedFile>,
    by_path: HashMap<String, MappedFile>,
}

impl MappedBase {
    fn shard_bytes(&self) -> Vec<&[u8]> {
        self.shards.iter().map(MappedFile::bytes).collect()
    }
}

fn header_sha(bytes: &[u8]) -> Option<String> {
    let len = bytes.get(..8).and_then(|b| b.try_into().ok()).map(u64::from_le_bytes)?;
    let end = usize::try_from(len).ok()?.checked_add(8)?;
    bytes.get(..end).map(sha256_hex)
}

fn map_base(base_dir: &Path, manifest: &RepoManifest) -> Result<MappedBase, DeltaError> {
    let mut shards = Vec::with_capacity(manifest.base_shards.len());
    for s in &manifest.base_shards {
        let expected = format!("a {}-byte safetensors file with header sha256 {}", s.len, s.header_sha256);
        let path = join(base_dir, &s.path);
        if !path.is_file() {
            return Err(DeltaError::WrongBase { expected, found: "no such file".into() }.in_file(&s.path));
        }
        let mapped = MappedFile::open(&path)?;
        let found_sha = header_sha(mapped.bytes());
        if mapped.bytes().len() as u64 != s.len || found_sha.as_deref() != Some(s.header_sha256.as_str()) {
            let found = match found_sha {
                Some(sha) => format!("a {}-byte file with header sha256 {sha}", mapped.bytes().len()),
                None => format!("a {}-byte file that is not safetensors", mapped.bytes().len()),
            };
            return Err(DeltaError::WrongBase { expected, found }.in_file(&s.path));
        }
        shards.push(mapped);
    }
    let mut by_path = HashMap::new();
    for e in &manifest.entries {
        if let Some(b) = &e.base
            && !by_path.contains_key(b)
        {
            let path = join(base_dir, b);
            if !path.is_file() {
                return Err(DeltaError::MissingBase.in_file(b));
            }
            by_path.insert(b.clone(), MappedFile::open(&path)?);
        }
    }
    Ok(MappedBase { shards, by_path })
}

impl RepoCompressor {
    /// A builder with the defaults of both compressors.
    pub fn builder() -> RepoCompressorBuilder {
        RepoCompressorBuilder::default()
    }

    /// Stores the directory `target` against the directory `base` in the file `archive`, atomically,
    /// resuming from `ARCHIVE.chitty-partial/` when an earlier run left one for the same inputs.
    pub fn compress(
        &self,
        base: &Path,
        target: &Path,
        archive: &Path,
        events: &mut dyn FnMut(RepoEvent<'_>) -> Result<(), DeltaError>,
    ) -> Result<RepoEncodeReport, DeltaError> {
        let base_paths = scan_dir(base)?;
        let target_paths = scan_dir(target)?;
        let base_set: HashSet<&str> = base_paths.iter().map(String::as_str).collect();
        let shard_paths: Vec<&String> =
            if self.models { base_paths.iter().filter(|p| is_model_file(p)).collect() } else { Vec::new() };
        let map = |dir: &Path, rel: &str| MappedFile::open(&join(dir, rel)).map_err(|e| e.in_file(rel));
        let shards: Vec<MappedFile> = shard_paths.iter().map(|p| map(base, p)).collect::<Result<_, _>>()?;
        let targets: Vec<MappedFile> = target_paths.iter().map(|p| map(target, p)).collect::<Result<_, _>>()?;
        let mut base_files: HashMap<&str, MappedFile> = HashMap::new();
        for p in &target_paths {
            if base_set.contains(p.as_str()) && !(self.models && is_model_file(p)) {
                base_files.insert(p, map(base, p)?);
            }
        }
        let base_shards: Vec<ShardRecord> = shard_paths
            .iter()
            .zip(&shards)
            .map(|(p, m)| {
                let header_sha256 = header_sha(m.bytes())
                    .ok_or_else(|| DeltaError::Truncated { what: "the safetensors header".into() }.in_file(p))?;
                Ok(ShardRecord { path: (*p).clone(), len: m.bytes().len() as u64, header_sha256 })
            })
            .collect::<Result<_, DeltaError>>()?;

        // Every input's SHA-256: the manifest records the targets' (and a finished entry is reused only for
        // the same target bytes), the state is keyed by the settings and the base's.
        let target_sha: Vec<String> = targets.par_iter().map(|m| sha256_hex(m.bytes())).collect();
        let mut base_hashed: Vec<(&str, &[u8])> =
            shard_paths.iter().zip(&shards).map(|(p, m)| (p.as_str(), m.bytes())).collect();
        base_hashed.extend(base_files.iter().map(|(p, m)| (*p, m.bytes())));
        base_hashed.sort_by_key(|(p, _)| *p);
        let base_sha: Vec<(&str, String)> = base_hashed.par_iter().map(|(p, b)| (*p, sha256_hex(b))).collect();
        let inputs = {
            let mut h = Sha256::new();
            h.update(format!(
                "{REPO_FORMAT} v{REPO_VERSION}\n{}\n{}\n",
                self.model.settings_id()?,
                self.dataset.settings_id()
            ));
            h.update(format!("models={}\n", self.models));
            for (p, sha) in &base_sha {
                h.update(format!("base {p} {sha}\n"));
            }
            hex::encode(h.finalize())
        };

        let mut inputs_mapped: Vec<&MappedFile> = shards.iter().chain(&targets).collect();
        inputs_mapped.extend(base_files.values());
        // Checked before any work, and again when the archive is written.
        drop(create_output(archive, &inputs_mapped)?);
        let partial = partial_dir(archive);
        let state_path = partial.join(STATE_FILE);
        let mut state = match read_state::<CompressState>(&state_path) {
            Some(s) if s.version == STATE_VERSION && s.inputs == inputs => s,
            _ => {
                if partial.exists() {
                    fs::remove_dir_all(&partial)
                        .map_err(|e| DeltaError::io(format!("clearing {}", partial.display()), e))?;
                }
                CompressState { version: STATE_VERSION, inputs: inputs.clone(), done: BTreeMap::new() }
            }
        };
        fs::create_dir_all(&partial).map_err(|e| DeltaError::io(format!("creating {}", partial.display()), e))?;

        let shard_bytes: Vec<&[u8]> = shards.iter().map(MappedFile::bytes).collect();
        let mut records = Vec::with_capacity(targets.len());
        let mut entries = Vec::with_capacity(targets.len());
        let mut parts = Vec::new();
        let mut done_bytes = 0u64;
        for (i, (path, mapped)) in target_paths.iter().zip(&targets).enumerate() {
            let kind = if self.models && is_model_file(path) { EntryKind::Model } else { EntryKind::Dataset };
            let base_file = (kind == EntryKind::Dataset).then(|| base_files.get(path.as_str())).flatten();
            let file = format!("entry-{i:06}.delta");
            let reusable = state.done.get(path).filter(|d| {
                d.file == file
                    && d.record.kind == kind
                    && d.record.target_sha256 == target_sha[i]
                    && hash_file(&partial.join(&d.file)).is_ok_and(|sha| sha == d.record.archive_sha256)
            });
            let (done, reused) = match reusable {
                Some(d) => (d.clone(), true),
                None => {
                    let part_path = partial.join(&file);
                    let mut out =
                        HashingWriter { inner: AtomicFile::create(&part_path)?, sha: Sha256::new(), count: 0 };
                    let start = done_bytes;
                    let progress = &mut |n: u64| {
                        let _ = events(RepoEvent::Bytes(start + n));
                    };
                    let report = match kind {
                        EntryKind::Model => self.model.encode_sharded(&shard_bytes, mapped.bytes(), &mut out, progress),
                        EntryKind::Dataset => self.dataset.encode_with_progress(
                            base_file.map(MappedFile::bytes),
                            mapped.bytes(),
                            &mut out,
                            progress,
                        ),
                    }
                    .map_err(|e| e.in_file(path))?;
                    let HashingWriter { inner, sha, count } = out;
                    inner.commit()?;
                    let record = EntryRecord {
                        path: path.clone(),
                        kind,
                        base: base_file.map(|_| path.clone()),
                        target_len: mapped.bytes().len() as u64,
                        target_sha256: target_sha[i].clone(),
                        archive_len: count,
                        archive_sha256: hex::encode(sha.finalize()),
                    };
                    let parts = report
                        .parts
                        .into_iter()
                        .map(|p| StoredPart {
                            name: p.name,
                            method: p.method,
                            original_bytes: p.original_bytes,
                            stored_bytes: p.stored_bytes,
                            relative_error: p.relative_error,
                        })
                        .collect();
                    let done = DoneEntry { file: file.clone(), record, parts };
                    state.done.insert(path.clone(), done.clone());
                    write_state(&state_path, &state)?;
                    (done, false)
                }
            };
            done_bytes += done.record.target_len;
            events(RepoEvent::Bytes(done_bytes))?;
            parts.extend(done.parts.iter().map(|p| PartReport {
                name: format!("{path}: {}", p.name),
                method: p.method.clone(),
                original_bytes: p.original_bytes,
                stored_bytes: p.stored_bytes,
                relative_error: p.relative_error,
            }));
            entries.push(EntrySummary {
                path: path.clone(),
                kind,
                original_bytes: done.record.target_len,
                stored_bytes: done.record.archive_len,
                reused,
                tensors: Vec::new(),
            });
            records.push(done);
            events(RepoEvent::FileDone { path, reused })?;
        }

        let manifest = RepoManifest {
            format: REPO_FORMAT.to_owned(),
            version: REPO_VERSION,
            base_shards,
            entries: records.iter().map(|d| d.record.clone()).collect(),
        };
        let preamble = format::write_json_preamble(CONTAINER_VERSION, &manifest)?;
        let mut out = create_output(archive, &inputs_mapped)?;
        out.write_all(&preamble).map_err(|e| DeltaError::io("writing the archive", e))?;
        let mut output_bytes = preamble.len() as u64;
        for d in &records {
            let part_path = partial.join(&d.file);
            let mut part = HashingReader {
                inner: File::open(&part_path)
                    .map_err(|e| DeltaError::io(format!("opening {}", part_path.display()), e))?,
                sha: Sha256::new(),
            };
            let n = std::io::copy(&mut part, &mut out).map_err(|e| DeltaError::io("writing the archive", e))?;
            // The entry file may have changed since it was checked or written: the archive carries what the
            // manifest says or nothing.
            if n != d.record.archive_len || hex::encode(part.sha.finalize()) != d.record.archive_sha256 {
                return Err(DeltaError::corrupt("entry archive", "changed while the archive was written")
                    .in_file(&d.record.path));
            }
            output_bytes += n;
        }
        out.commit()?;
        fs::remove_dir_all(&partial).map_err(|e| DeltaError::io(format!("removing {}", partial.display()), e))?;
        Ok(RepoEncodeReport {
            report: EncodeReport {
                input_bytes: targets.iter().map(|m| m.bytes().len() as u64).sum(),
                output_bytes,
                parts,
            },
            entries,
        })
    }

    /// Rebuilds the directory `out` (which must not exist, or be empty) from the base directory and the
    /// archive: built in `OUT.chitty-partial/`, resumed from there, renamed to `out` when complete.
    pub fn decompress(
        &self,
        base: &Path,
        archive: &Path,
        out: &Path,
        events: &mut dyn FnMut(RepoEvent<'_>) -> Result<(), DeltaError>,
    ) -> Result<RepoDecodeReport, DeltaError> {
        let opened = open_repo_archive(archive)?;
        let mapped = map_base(base, &opened.manifest)?;
        match fs::read_dir(out) {
            Ok(mut entries) => {
                if entries.next().is_some() {
                    return Err(DeltaError::InvalidRepository {
                        path: out.display().to_string(),
                        reason: "the output directory exists and is not empty".into(),
                    });
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(DeltaError::io(format!("checking the output {}", out.display()), e)),
        }
        let partial = partial_dir(out);
        let state_path = partial.join(STATE_FILE);
        let mut state = match read_state::<DecompressState>(&state_path) {
            Some(s) if s.version == STATE_VERSION && s.archive == opened.preamble_sha256 => s,
            _ => {
                if partial.exists() {
                    fs::remove_dir_all(&partial)
                        .map_err(|e| DeltaError::io(format!("clearing {}", partial.display()), e))?;
                }
                DecompressState { version: STATE_VERSION, archive: opened.preamble_sha256.clone(), done: Vec::new() }
            }
        };
        fs::create_dir_all(&partial).map_err(|e| DeltaError::io(format!("creating {}", partial.display()), e))?;
        let claimed: HashSet<String> = state.done.iter().cloned().collect();
        let report = self.decode_entries(
            archive,
            &opened,
            &mapped,
            Some((&partial, &claimed)),
            &mut |path, reused| {
                if !reused {
                    state.done.push(path.to_owned());
                    write_state(&state_path, &state)?;
                }
                Ok(())
            },
            events,
        )?;
        fs::remove_file(&state_path).map_err(|e| DeltaError::io(format!("removing {}", state_path.display()), e))?;
        if out.exists() {
            fs::remove_dir(out).map_err(|e| DeltaError::io(format!("replacing the empty {}", out.display()), e))?;
        }
        fs::rename(&partial, out)
            .map_err(|e| DeltaError::io(format!("renaming {} to {}", partial.display(), out.display()), e))?;
        if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
            // Makes the rename durable; some file systems refuse a directory fsync, which is harmless.
            let _ = File::open(parent).and_then(|d| d.sync_all());
        }
        Ok(report)
    }

    /// Decodes every file of the archive against the base directory, checking every part and every
    /// file's SHA-256, writing nothing.
    pub fn verify(
        &self,
        base: &Path,
        archive: &Path,
        events: &mut dyn FnMut(RepoEvent<'_>) -> Result<(), DeltaError>,
    ) -> Result<RepoDecodeReport, DeltaError> {
        let opened = open_repo_archive(archive)?;
        let mapped = map_base(base, &opened.manifest)?;
        self.decode_entries(archive, &opened, &mapped, None, &mut |_, _| Ok(()), events)
    }

    #[allow(clippy::too_many_arguments)]
    fn decode_entries(
        &self,
        archive: &Path,
        opened: &OpenedArchive,
        base: &MappedBase,
        out: Option<(&Path, &HashSet<String>)>,
        on_done: &mut dyn FnMut(&str, bool) -> Result<(), DeltaError>,
        events: &mut dyn FnMut(RepoEvent<'_>) -> Result<(), DeltaError>,
    ) -> Result<RepoDecodeReport, DeltaError> {
        let shard_bytes = base.shard_bytes();
        let mut report = DecodeReport { input_bytes: opened.len, ..DecodeReport::default() };
        let mut entries = Vec::with_capacity(opened.manifest.entries.len());
        for (i, record) in opened.manifest.entries.iter().enumerate() {
            let path = record.path.as_str();
            let dest = out.map(|(dir, _)| join(dir, path));
            // A file an earlier run finished is kept only when it is what the archive says it is.
            let reused = match (&dest, out) {
                (Some(dest), Some((_, claimed))) if claimed.contains(path) => {
                    fs::metadata(dest).is_ok_and(|m| m.len() == record.target_len)
                        && hash_file(dest).is_ok_and(|sha| sha == record.target_sha256)
                }
                _ => false,
            };
            if !reused {
                let decoded = self.decode_entry(
                    archive,
                    opened,
                    base,
                    &shard_bytes,
                    i,
                    dest.as_deref(),
                    report.output_bytes,
                    events,
                );
                report.parts_verified += decoded.map_err(|e| e.in_file(path))?;
            }
            report.output_bytes += record.target_len;
            events(RepoEvent::Bytes(report.output_bytes))?;
            on_done(path, reused)?;
            entries.push(EntrySummary {
                path: record.path.clone(),
                kind: record.kind,
                original_bytes: record.target_len,
                stored_bytes: record.archive_len,
                reused,
                tensors: Vec::new(),
            });
            events(RepoEvent::FileDone { path, reused })?;
        }
        Ok(RepoDecodeReport { report, entries })
    }

    /// Decodes entry `i` into `dest` (atomically) or nowhere; returns the parts verified.
    #[allow(clippy::too_many_arguments)]
    fn decode_entry(
        &self,
        archive: &Path,
        opened: &OpenedArchive,
        base: &MappedBase,
        shard_bytes: &[&[u8]],
        i: usize,
        dest: Option<&Path>,
        done_before: u64,
        events: &mut dyn FnMut(RepoEvent<'_>) -> Result<(), DeltaError>,
    ) -> Result<u64, DeltaError> {
        let record = &opened.manifest.entries[i];
        let file = match dest {
            Some(dest) => {
                if let Some(parent) = dest.parent() {
                    fs::create_dir_all(parent)
                        .map_err(|e| DeltaError::io(format!("creating {}", parent.display()), e))?;
                }
                Some(AtomicFile::create(dest)?)
            }
            None => None,
        };
        let mut out = HashingWriter { inner: MaybeFile(file), sha: Sha256::new(), count: 0 };
        let mut reader = entry_reader(archive, opened, i)?;
        let progress = &mut |n: u64| {
            let _ = events(RepoEvent::Bytes(done_before + n));
        };
        let decoded = match record.kind {
            EntryKind::Model => self.model.decode_sharded(shard_bytes, &mut reader, &mut out, progress)?,
            EntryKind::Dataset => {
                let base = record.base.as_ref().and_then(|b| base.by_path.get(b)).map(MappedFile::bytes);
                self.dataset.decode_with_progress(base, &mut reader, &mut out, progress)?
            }
        };
        finish_entry_read(reader, record, true)?;
        let HashingWriter { inner, sha, count } = out;
        if count != record.target_len || hex::encode(sha.finalize()) != record.target_sha256 {
            return Err(DeltaError::corrupt("rebuilt file", "length or SHA-256 differs from the manifest"));
        }
        if let Some(file) = inner.0 {
            file.commit()?;
        }
        Ok(decoded.parts_verified)
    }

    /// Reads the manifest and every entry (each entry archive's SHA-256 checked, each model entry's frames
    /// checked and summed up per tensor); no base needed.
    pub fn inspect(&self, archive: &Path) -> Result<RepoSummary, DeltaError> {
        let opened = open_repo_archive(archive)?;
        let mut entries = Vec::with_capacity(opened.manifest.entries.len());
        for (i, record) in opened.manifest.entries.iter().enumerate() {
            let mut reader = entry_reader(archive, &opened, i)?;
            let (tensors, decoded) = match record.kind {
                EntryKind::Model => (inspect(&mut reader).map_err(|e| e.in_file(&record.path))?.tensors, true),
                EntryKind::Dataset => (Vec::new(), false),
            };
            finish_entry_read(reader, record, decoded).map_err(|e| e.in_file(&record.path))?;
            entries.push(EntrySummary {
                path: record.path.clone(),
                kind: record.kind,
                original_bytes: record.target_len,
                stored_bytes: record.archive_len,
                reused: false,
                tensors,
            });
        }
        Ok(RepoSummary {
            target_bytes: opened.manifest.entries.iter().map(|e| e.target_len).sum(),
            archive_bytes: opened.len,
            base_shards: opened.manifest.base_shards.iter().map(|s| s.path.clone()).collect(),
            entries,
        })
    }
}

/// A file being rebuilt, or nothing (verification: bytes only hashed).
struct MaybeFile(Option<AtomicFile>);

impl Write for MaybeFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match &mut self.0 {
            Some(f) => f.write(buf),
            None => Ok(buf.len()),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match &mut self.0 {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }
}

/// Bytes of the directory `archive` rebuilds, from its manifest (for progress bars).
pub fn repo_target_len(archive: &Path) -> Result<u64, DeltaError> {
    Ok(open_repo_archive(archive)?.manifest.entries.iter().map(|e| e.target_len).sum())
}

/// Whether the format named in `archive`'s manifest is a directory archive.
pub fn is_repo_archive(archive: &Path) -> Result<bool, DeltaError> {
    Ok(crate::files::archive_format(archive)? == REPO_FORMAT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsafe_paths_are_refused() {
        for bad in ["", "/etc/passwd", "../x", "a/../b", "a//b", "./a", "a\\b", "a\0b", "a/"] {
            assert!(check_relative(bad).is_err(), "{bad:?}");
        }
        for good in ["config.json", "original/params.json", "a.b/c..d"] {
            assert!(check_relative(good).is_ok(), "{good:?}");
        }
    }
}
