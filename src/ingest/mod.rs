//! Ingest: from files on disk to chunks in the index.
//!
//! [`run`] finds the files under the given paths, and, in parallel across
//! documents, reads, hashes, extracts and chunks every new or changed one;
//! a single writer adds the chunks to the index and commits every couple of
//! seconds, saving the manifest after each commit (see
//! [`crate::index::manifest`] for why that is crash-safe). A file that
//! cannot be read is reported and recorded, and the run goes on.

pub mod chunk;
pub mod document;
pub mod embed;
pub mod isolate;
pub mod ocr;
pub mod pdf;
pub mod text;
pub mod tokens;
pub mod watch;

use std::collections::{BTreeMap, HashSet};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rayon::prelude::*;
use serde::Serialize;

use crate::index::analyzer::ANALYZER_DESCRIPTION;
use crate::index::manifest::{FileRecord, FileStatus, Manifest};
use crate::index::ShirabeIndex;
use crate::{Error, Result};
use chunk::{Chunk, ChunkParams};
use document::ExtractedDoc;
use tokens::TokenCounter;

/// Stack size of extraction threads: deeply nested PDF objects recurse in
/// the parser, and a stack overflow cannot be caught.
pub const WORKER_STACK_BYTES: usize = 256 << 20;

/// What kind of file a path is, by extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// `.pdf`
    Pdf,
    /// `.txt`
    Text,
    /// `.md`, `.markdown`
    Markdown,
}

impl FileKind {
    /// The kind of `path`, if shirabe reads it.
    pub fn of(path: &Path) -> Option<FileKind> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "pdf" => Some(FileKind::Pdf),
            "txt" | "text" => Some(FileKind::Text),
            "md" | "markdown" => Some(FileKind::Markdown),
            _ => None,
        }
    }
}

/// Reads and extracts one file. Never panics: a panic inside a parser
/// becomes an error naming the file's problem.
pub fn load_file(path: &Path) -> Result<ExtractedDoc> {
    let kind = FileKind::of(path).ok_or(Error::Unsupported)?;
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    load_bytes(&bytes, kind)
}

fn load_bytes(bytes: &[u8], kind: FileKind) -> Result<ExtractedDoc> {
    match kind {
        FileKind::Pdf => catch_unwind(AssertUnwindSafe(|| pdf::extract(bytes)))
            .unwrap_or_else(|_| Err(Error::Pdf("damaged PDF: the parser gave up on it".into()))),
        FileKind::Text => Ok(text::load(bytes, false)),
        FileKind::Markdown => Ok(text::load(bytes, true)),
    }
}

/// Reads a PDF's text, then OCRs the pages `settings` asks for. Panics in
/// either become an error or a warning; what no `catch_unwind` can stop
/// is what [`isolate`] is for.
pub(crate) fn read_pdf(
    bytes: &[u8],
    settings: &ocr::OcrSettings,
    engine: &ocr::Lazy,
    on_page: &(dyn Fn() + Sync),
) -> Result<(ExtractedDoc, ocr::OcrOutcome)> {
    let mut doc = load_bytes(bytes, FileKind::Pdf)?;
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        ocr::ocr_pdf(bytes, &mut doc, settings, engine, false, on_page)
    }));
    let outcome = outcome.unwrap_or_else(|_| {
        doc.warnings
            .push("OCR: the page images could not be read (the decoder gave up)".into());
        ocr::OcrOutcome {
            read: 0,
            pending: doc.pages.iter().filter(|p| ocr::needs_ocr(p)).count() as u32,
        }
    });
    Ok((doc, outcome))
}

/// Settings of one ingest run.
#[derive(Debug, Clone)]
pub struct IngestOptions {
    /// Files and directories to ingest (directories recursively).
    pub paths: Vec<PathBuf>,
    /// The index directory.
    pub index_dir: PathBuf,
    /// Remove files that no longer exist from the index.
    pub prune: bool,
    /// Tokenizer spec (see [`TokenCounter::find`]).
    pub tokenizer: Option<String>,
    /// Chunk sizes.
    pub chunking: ChunkParams,
    /// Worker threads (0 = one per core).
    pub jobs: usize,
    /// Commit at most this often.
    pub commit_interval: Duration,
    /// When and how to OCR pages without a text layer.
    pub ocr: ocr::OcrSettings,
    /// Files or folders gone from disk whose entries are removed (what
    /// `watch` saw deleted or moved away); only entries whose file no
    /// longer exists go.
    pub forget: Vec<PathBuf>,
    /// Where PDFs are parsed: in-process, or in worker processes a file
    /// cannot bring down (see [`isolate`]).
    pub isolation: isolate::Isolation,
}

impl IngestOptions {
    /// Ingest `paths` into the index at `index_dir`, with the default
    /// tokenizer and chunk sizes, one worker per core, no pruning.
    pub fn new(paths: Vec<PathBuf>, index_dir: impl Into<PathBuf>) -> IngestOptions {
        IngestOptions {
            paths,
            index_dir: index_dir.into(),
            prune: false,
            tokenizer: None,
            chunking: ChunkParams::default(),
            jobs: 0,
            commit_interval: Duration::from_secs(2),
            ocr: ocr::OcrSettings::default(),
            forget: Vec::new(),
            isolation: isolate::Isolation::InProcess,
        }
    }
}

/// Progress events for a progress bar.
#[derive(Debug, Clone)]
pub enum Event {
    /// Files found; `todo` of them will be read.
    Started {
        /// Files found.
        files: usize,
    },
    /// One page of a file was read by OCR.
    OcrPage {
        /// Path as given.
        path: String,
    },
    /// One file is done.
    FileDone {
        /// Path as given.
        path: String,
        /// Pages read (0 when unchanged or failed).
        pages: u32,
    },
}

/// One file that failed.
#[derive(Debug, Clone, Serialize)]
pub struct Failure {
    /// Path as given.
    pub path: String,
    /// Why.
    pub error: String,
}

/// The outcome of an ingest run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct IngestReport {
    /// Files found.
    pub files: usize,
    /// Files (re)indexed.
    pub indexed: usize,
    /// Files skipped because their content did not change.
    pub unchanged: usize,
    /// Files with no extractable text.
    pub empty: Vec<String>,
    /// Files that could not be read.
    pub failed: Vec<Failure>,
    /// Files removed from the index (`--prune`).
    pub pruned: Vec<String>,
    /// Pages read.
    pub pages: u64,
    /// Chunks written.
    pub chunks: u64,
    /// Pages read by OCR.
    pub ocr_pages: u64,
    /// Pages without a text layer left unread (see the notes for why).
    pub ocr_pending: u64,
    /// The OCR engine used, if one was found ("tesseract 5.3.0").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ocr_engine: Option<String>,
    /// Wall time in seconds.
    pub seconds: f64,
    /// Which tokenizer counted tokens.
    pub tokenizer: String,
    /// Things the user should know once.
    pub notes: Vec<String>,
}

struct Candidate {
    given: String,
    path: PathBuf,
    key: String,
}

enum Outcome {
    Unchanged,
    /// Chunks of a big text file, sent as it is read (its `Indexed`
    /// follows with the record).
    Part {
        title: Option<String>,
        chunks: Vec<Chunk>,
    },
    Indexed {
        record: FileRecord,
        title: Option<String>,
        chunks: Vec<Chunk>,
    },
    Failed(FileRecord),
}

/// The manifest key of a file: its canonical path as text. A path that
/// is not UTF-8 is keyed by its bytes (a NUL, then the bytes in hex), so
/// two names that differ only in bytes that are not text never share a
/// key, and [`path_of_key`] leads back to the file.
pub fn key_of(path: &Path) -> String {
    let real = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    match real.to_str() {
        Some(s) => s.to_string(),
        None => {
            #[cfg(unix)]
            {
                use std::os::unix::ffi::OsStrExt;
                let bytes = real.as_os_str().as_bytes();
                let mut key = String::with_capacity(1 + 2 * bytes.len());
                key.push('\0');
                for b in bytes {
                    key.push_str(&format!("{b:02x}"));
                }
                key
            }
            #[cfg(not(unix))]
            {
                real.to_string_lossy().into_owned()
            }
        }
    }
}

/// The key a path that may no longer exist would have: its parent
/// canonicalized (the file itself cannot be), else the path made absolute.
pub fn absolute_key(path: &Path) -> String {
    if path.exists() {
        return key_of(path);
    }
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    match (
        abs.parent().and_then(|p| std::fs::canonicalize(p).ok()),
        abs.file_name(),
    ) {
        (Some(parent), Some(name)) => parent.join(name).to_string_lossy().into_owned(),
        _ => abs.to_string_lossy().into_owned(),
    }
}

/// The file a manifest key names (see [`key_of`]).
pub fn path_of_key(key: &str) -> PathBuf {
    #[cfg(unix)]
    if let Some(hex) = key.strip_prefix('\0') {
        use std::os::unix::ffi::OsStringExt;
        let bytes: Option<Vec<u8>> = (0..hex.len() / 2)
            .map(|i| {
                hex.get(2 * i..2 * i + 2)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
            })
            .collect();
        if let Some(bytes) = bytes.filter(|_| hex.len() % 2 == 0) {
            return PathBuf::from(std::ffi::OsString::from_vec(bytes));
        }
    }
    PathBuf::from(key)
}

/// Finds the files to ingest; paths that do not exist or cannot be read
/// are returned as failures. Symbolic links inside a folder are followed
/// (a file reached twice is ingested once); a link that loops back to a
/// folder above it is skipped with a note.
fn discover(paths: &[PathBuf]) -> (Vec<Candidate>, Vec<Failure>, Vec<String>) {
    let mut out = Vec::new();
    let mut failed = Vec::new();
    let mut notes = Vec::new();
    let mut seen = HashSet::new();
    let mut add = |given: String, path: PathBuf, out: &mut Vec<Candidate>| {
        let key = key_of(&path);
        if seen.insert(key.clone()) {
            out.push(Candidate { given, path, key });
        }
    };
    for root in paths {
        let meta = match std::fs::metadata(root) {
            Ok(m) => m,
            Err(e) => {
                failed.push(Failure {
                    path: root.display().to_string(),
                    error: e.to_string(),
                });
                continue;
            }
        };
        if meta.is_file() {
            add(root.display().to_string(), root.clone(), &mut out);
            continue;
        }
        let mut files: Vec<PathBuf> = Vec::new();
        for entry in walkdir::WalkDir::new(root).follow_links(true) {
            match entry {
                Ok(e) if e.file_type().is_file() && FileKind::of(e.path()).is_some() => {
                    files.push(e.into_path())
                }
                Ok(_) => {}
                Err(e) if e.loop_ancestor().is_some() => notes.push(format!(
                    "{}: a symbolic link back to {}; not followed",
                    e.path().map_or(String::new(), |p| p.display().to_string()),
                    e.loop_ancestor()
                        .map_or(String::new(), |p| p.display().to_string()),
                )),
                Err(e) => failed.push(Failure {
                    path: e
                        .path()
                        .map_or(root.display().to_string(), |p| p.display().to_string()),
                    error: e
                        .io_error()
                        .map_or_else(|| e.to_string(), |io| io.to_string()),
                }),
            }
        }
        files.sort();
        for f in files {
            add(f.display().to_string(), f, &mut out);
        }
    }
    (out, failed, notes)
}

fn mtime_secs(meta: &std::fs::Metadata) -> u64 {
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs())
}

/// What every worker shares.
struct Work<'a> {
    manifest: &'a BTreeMap<String, FileRecord>,
    force: bool,
    counter: &'a TokenCounter,
    params: ChunkParams,
    ocr: &'a ocr::OcrSettings,
    engine: &'a ocr::Lazy,
    workers: Option<&'a isolate::Workers>,
}

fn process(
    c: &Candidate,
    w: &Work<'_>,
    on_ocr_page: &(dyn Fn() + Sync),
    on_part: &dyn Fn(Option<String>, Vec<Chunk>),
) -> Outcome {
    let Work {
        counter, params, ..
    } = *w;
    let mut record = FileRecord {
        path: c.given.clone(),
        hash: String::new(),
        size: 0,
        mtime: 0,
        pages: 0,
        chunks: 0,
        status: FileStatus::Failed,
        error: None,
        warnings: Vec::new(),
        title: None,
        ocr_pages: 0,
        ocr_pending: 0,
    };
    let fail = |mut record: FileRecord, e: Error| {
        record.error = Some(e.to_string());
        Outcome::Failed(record)
    };
    let Some(kind) = FileKind::of(&c.path) else {
        return fail(record, Error::Unsupported);
    };
    if kind != FileKind::Pdf
        && std::fs::metadata(&c.path).is_ok_and(|m| m.len() > text::STREAM_BYTES)
    {
        return match process_big_text(c, w, record.clone(), kind, on_part) {
            Ok(o) => o,
            Err(e) => fail(record, e),
        };
    }
    let bytes = match std::fs::read(&c.path) {
        Ok(b) => b,
        Err(e) => return fail(record, Error::io(&c.path, e)),
    };
    record.size = bytes.len() as u64;
    record.mtime = std::fs::metadata(&c.path)
        .map(|m| mtime_secs(&m))
        .unwrap_or(0);
    record.hash = blake3::hash(&bytes).to_hex().to_string();
    if unchanged(c, w, &record) {
        return Outcome::Unchanged;
    }
    let read = match (kind, w.workers) {
        (FileKind::Pdf, Some(workers)) => workers.read(&bytes, w.ocr, on_ocr_page, || {
            read_pdf(&bytes, w.ocr, w.engine, on_ocr_page)
        }),
        (FileKind::Pdf, None) => read_pdf(&bytes, w.ocr, w.engine, on_ocr_page),
        _ => load_bytes(&bytes, kind).map(|d| (d, ocr::OcrOutcome::default())),
    };
    let mut doc = match read {
        Ok((doc, o)) => {
            record.ocr_pages = o.read;
            record.ocr_pending = o.pending;
            doc
        }
        Err(e) => return fail(record, e),
    };
    drop(bytes);
    // Passages are made of the body text: no running headers, footers or
    // page numbers between their sentences.
    doc.strip_furniture();
    let title = doc
        .title
        .clone()
        .or_else(|| c.path.file_stem().map(|s| s.to_string_lossy().into_owned()));
    let chunks =
        catch_unwind(AssertUnwindSafe(|| chunk::chunk(&doc, counter, params))).unwrap_or_default();
    record.pages = doc.pages.len() as u32;
    record.chunks = chunks.len() as u32;
    record.warnings = doc.warnings;
    record.title = title.clone();
    record.status = if chunks.is_empty() {
        FileStatus::Empty
    } else {
        FileStatus::Ok
    };
    Outcome::Indexed {
        record,
        title,
        chunks,
    }
}

/// True when the file the manifest knows is the same and needs nothing.
fn unchanged(c: &Candidate, w: &Work<'_>, record: &FileRecord) -> bool {
    w.manifest.get(&c.key).is_some_and(|old| {
        !w.force
            && old.hash == record.hash
            && old.status != FileStatus::Failed
            && old.path == c.given
            // Pages left for OCR are read once an engine is there.
            && !(old.ocr_pending > 0
                && w.ocr.mode != ocr::OcrMode::Never
                && w.engine.get().is_some())
    })
}

/// A text file over [`text::STREAM_BYTES`]: hashed as a stream, then read
/// and chunked a section at a time, each section's chunks sent to the
/// writer as they are made, so memory stays bounded whatever the size.
fn process_big_text(
    c: &Candidate,
    w: &Work<'_>,
    mut record: FileRecord,
    kind: FileKind,
    on_part: &dyn Fn(Option<String>, Vec<Chunk>),
) -> Result<Outcome> {
    let meta = std::fs::metadata(&c.path).map_err(|e| Error::io(&c.path, e))?;
    record.size = meta.len();
    record.mtime = mtime_secs(&meta);
    let mut hasher = blake3::Hasher::new();
    let mut f = std::fs::File::open(&c.path).map_err(|e| Error::io(&c.path, e))?;
    std::io::copy(&mut f, &mut hasher).map_err(|e| Error::io(&c.path, e))?;
    record.hash = hasher.finalize().to_hex().to_string();
    if unchanged(c, w, &record) {
        return Ok(Outcome::Unchanged);
    }
    let stem = c.path.file_stem().map(|s| s.to_string_lossy().into_owned());
    let mut title = None;
    let mut ordinal = 0u32;
    let mut first = true;
    text::for_each_section(&c.path, kind == FileKind::Markdown, &mut |doc, at| {
        if first {
            first = false;
            title = doc.title.clone().or_else(|| stem.clone());
        }
        let mut chunks = catch_unwind(AssertUnwindSafe(|| chunk::chunk(&doc, w.counter, w.params)))
            .unwrap_or_default();
        for ch in &mut chunks {
            ch.ordinal += ordinal;
            for sp in &mut ch.spans {
                sp.start += at;
                sp.end += at;
            }
        }
        ordinal += chunks.len() as u32;
        if !chunks.is_empty() {
            on_part(title.clone(), chunks);
        }
        Ok(())
    })?;
    record.title = title.or(stem);
    record.pages = 1;
    record.chunks = ordinal;
    record.status = if ordinal == 0 {
        FileStatus::Empty
    } else {
        FileStatus::Ok
    };
    Ok(Outcome::Indexed {
        title: record.title.clone(),
        record,
        chunks: Vec::new(),
    })
}

/// Runs an ingest; `progress` is called from the writer thread.
pub fn run(opts: &IngestOptions, progress: &dyn Fn(&Event)) -> Result<IngestReport> {
    let index = ShirabeIndex::open_or_create(&opts.index_dir)?;
    let lock = index.lock()?;
    drop(index);
    run_locked(opts, &lock, progress)
}

/// [`run`] for a caller that holds the index's write lock already (`watch`).
pub fn run_locked(
    opts: &IngestOptions,
    _lock: &crate::index::WriteLock,
    progress: &dyn Fn(&Event),
) -> Result<IngestReport> {
    let started = Instant::now();
    let counter = TokenCounter::find(opts.tokenizer.as_deref())?;
    let index = ShirabeIndex::open_or_create(&opts.index_dir)?;
    // The manifest as of now, under the lock.
    let index = ShirabeIndex::open(&opts.index_dir).or(Ok::<_, Error>(index))?;
    let mut report = IngestReport {
        tokenizer: format!("{} ({})", counter.info().kind, counter.info().source),
        ..IngestReport::default()
    };
    let mut manifest = index.manifest.clone().unwrap_or_else(|| {
        Manifest::new(ANALYZER_DESCRIPTION.into(), counter.info(), opts.chunking)
    });
    let force = manifest.tokenizer != counter.info() || manifest.chunking != opts.chunking;
    let (mut candidates, mut failed, found_notes) = discover(&opts.paths);
    report.notes.extend(found_notes);
    if force && !manifest.files.is_empty() {
        report.notes.push(
            "tokenizer or chunk settings changed since the last ingest: re-chunking every file"
                .into(),
        );
        let have: HashSet<String> = candidates.iter().map(|c| c.key.clone()).collect();
        for (key, rec) in &manifest.files {
            if !have.contains(key) && path_of_key(key).exists() {
                candidates.push(Candidate {
                    given: rec.path.clone(),
                    path: path_of_key(key),
                    key: key.clone(),
                });
            }
        }
    }
    let mut new_root = false;
    for p in &opts.paths {
        if p.is_dir() {
            let root = key_of(p);
            // A folder inside one already recorded is not another root.
            let inside = manifest.roots.iter().any(|r| {
                root == *r
                    || root
                        .strip_prefix(r.as_str())
                        .is_some_and(|rest| rest.starts_with(std::path::MAIN_SEPARATOR))
            });
            if !inside {
                manifest.roots.push(root);
                new_root = true;
            }
        }
    }
    manifest.tokenizer = counter.info();
    manifest.chunking = opts.chunking;
    manifest.analyzer = ANALYZER_DESCRIPTION.into();
    report.files = candidates.len() + failed.len();
    progress(&Event::Started {
        files: report.files,
    });

    let mut writer = index.writer()?;
    // Chunks of files the manifest does not know are left over from a run
    // that died between a commit and its manifest write: remove them.
    let known: HashSet<&String> = manifest.files.keys().collect();
    let mut dirty = false;
    for key in index.doc_keys()? {
        if !known.contains(&key) {
            index.delete_doc(&writer, &key);
            dirty = true;
        }
    }

    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(opts.jobs)
        .stack_size(WORKER_STACK_BYTES)
        .build()
        .map_err(Error::index("cannot start worker threads"))?;
    let engine = ocr::Lazy::new(opts.ocr.program.clone());
    let workers = match &opts.isolation {
        isolate::Isolation::Workers(program) => Some(isolate::Workers::new(
            program.clone(),
            pool.current_num_threads(),
        )),
        isolate::Isolation::InProcess => None,
    };
    let (tx, rx) = mpsc::sync_channel::<(usize, Option<Outcome>)>(2 * pool.current_num_threads());
    let snapshot = manifest.files.clone();
    let mut last_commit = Instant::now();
    // Big text files whose chunks are coming in parts.
    let mut streamed: HashSet<usize> = HashSet::new();
    let result: Result<()> = std::thread::scope(|s| {
        let cands = &candidates;
        let work = Work {
            manifest: &snapshot,
            force,
            counter: &counter,
            params: opts.chunking,
            ocr: &opts.ocr,
            engine: &engine,
            workers: workers.as_ref(),
        };
        s.spawn(move || {
            pool.install(|| {
                cands
                    .par_iter()
                    .enumerate()
                    .for_each_with(tx, |tx, (i, c)| {
                        // Pages read by OCR are reported as they finish.
                        let page_tx = std::sync::Mutex::new(tx.clone());
                        let on_page = move || {
                            if let Ok(t) = page_tx.lock() {
                                let _ = t.send((i, None));
                            }
                        };
                        let part_tx = tx.clone();
                        let on_part = move |title, chunks| {
                            let _ = part_tx.send((i, Some(Outcome::Part { title, chunks })));
                        };
                        let out = process(c, &work, &on_page, &on_part);
                        let _ = tx.send((i, Some(out)));
                    })
            })
        });
        for (i, outcome) in rx {
            let c = &candidates[i];
            let Some(outcome) = outcome else {
                progress(&Event::OcrPage {
                    path: c.given.clone(),
                });
                continue;
            };
            let mut pages = 0;
            match outcome {
                Outcome::Unchanged => report.unchanged += 1,
                Outcome::Part { title, chunks } => {
                    // A big file's first part replaces its old chunks (a
                    // file the manifest does not know has none: leftovers
                    // of a killed run were removed above).
                    if streamed.insert(i) && manifest.files.contains_key(&c.key) {
                        index.delete_doc(&writer, &c.key);
                    }
                    index.add_chunks(&writer, &c.key, &c.given, title.as_deref(), &chunks)?;
                    report.chunks += chunks.len() as u64;
                    continue;
                }
                Outcome::Indexed {
                    record,
                    title,
                    chunks,
                } => {
                    if !streamed.remove(&i) {
                        index.delete_doc(&writer, &c.key);
                    }
                    index.add_chunks(&writer, &c.key, &c.given, title.as_deref(), &chunks)?;
                    pages = record.pages;
                    report.pages += u64::from(record.pages);
                    report.ocr_pages += u64::from(record.ocr_pages);
                    report.ocr_pending += u64::from(record.ocr_pending);
                    report.chunks += chunks.len() as u64;
                    report.indexed += 1;
                    if record.status == FileStatus::Empty {
                        report.empty.push(c.given.clone());
                    }
                    manifest.files.insert(c.key.clone(), record);
                    dirty = true;
                }
                Outcome::Failed(record) => {
                    streamed.remove(&i);
                    index.delete_doc(&writer, &c.key);
                    failed.push(Failure {
                        path: c.given.clone(),
                        error: record.error.clone().unwrap_or_default(),
                    });
                    manifest.files.insert(c.key.clone(), record);
                    dirty = true;
                }
            }
            progress(&Event::FileDone {
                path: c.given.clone(),
                pages,
            });
            // Never while a big file is half sent: a commit holds whole files.
            if dirty && streamed.is_empty() && last_commit.elapsed() >= opts.commit_interval {
                writer.commit()?;
                manifest.save(&index.manifest_path())?;
                last_commit = Instant::now();
                dirty = false;
            }
        }
        Ok(())
    });
    result?;

    if opts.prune || !opts.forget.is_empty() {
        let forget: Vec<String> = opts.forget.iter().map(|p| absolute_key(p)).collect();
        let gone: Vec<String> = manifest
            .files
            .keys()
            .filter(|k| {
                opts.prune
                    || forget.iter().any(|f| {
                        k.as_str() == f
                            || k.strip_prefix(f.as_str())
                                .is_some_and(|rest| rest.starts_with(std::path::MAIN_SEPARATOR))
                    })
            })
            .filter(|k| !path_of_key(k).exists())
            .cloned()
            .collect();
        for key in gone {
            index.delete_doc(&writer, &key);
            if let Some(rec) = manifest.files.remove(&key) {
                report.pruned.push(rec.path);
            }
            dirty = true;
        }
    }
    if dirty || new_root || index.manifest.is_none() {
        writer.commit()?;
        manifest.save(&index.manifest_path())?;
    }
    writer.wait_merging_threads()?;
    report.ocr_engine = engine.looked().flatten().map(|e| e.version.clone());
    if report.ocr_pending > 0 {
        let n = report.ocr_pending;
        let pages = if n == 1 { "page has" } else { "pages have" };
        report.notes.push(match (engine.looked().flatten(), opts.ocr.mode) {
            (_, ocr::OcrMode::Never) => {
                format!("{n} {pages} no text layer and need OCR (--ocr never: not read)")
            }
            (None, _) => format!("{n} {pages} no text layer and need OCR; {}", ocr::INSTALL_HINT),
            (Some(_), _) => format!(
                "{n} {pages} no text layer and could not be read by OCR (see `shirabe status --files`)"
            ),
        });
    }
    report.failed = failed;
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// Seconds since the Unix epoch (for tests and records).
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
