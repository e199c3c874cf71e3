//! The on-disk index: a tantivy BM25 index of chunks plus its manifest.
//!
//! Layout of the index directory: `tantivy/` holds tantivy's files,
//! `manifest.json` the [`manifest::Manifest`]. One tantivy document is one
//! chunk; `doc_key` (the canonical path of the source file) ties chunks to
//! their file, so re-indexing a file is "delete by doc_key, add chunks" and
//! is idempotent. `vectors/` holds the embedded vector stores
//! ([`vectors`]), and `lock` is held by the one process writing (ingest or
//! embed-index).

pub mod analyzer;
pub mod doctor;
pub mod hnsw;
pub mod manifest;
pub mod qdrant;
pub mod vectors;

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use tantivy::collector::DocSetCollector;
use tantivy::query::TermQuery;
use tantivy::schema::{
    Field, IndexRecordOption, Schema, TextFieldIndexing, TextOptions, FAST, INDEXED, STORED, STRING,
};
use tantivy::{
    DocAddress, Index, IndexReader, IndexWriter, ReloadPolicy, Searcher, TantivyDocument, Term,
};

use crate::ingest::chunk::Chunk;
use crate::{Error, Result};
use manifest::{Manifest, VectorState, SCHEMA_VERSION};
use vectors::{Key, VectorStore};

/// A chunk's stored fields, as a hit is made from them (read from the
/// tantivy index, or from a Qdrant point's payload).
#[derive(Debug, Clone, Default)]
pub struct StoredChunk {
    /// `<doc id>-<ordinal>`.
    pub chunk_id: String,
    /// Canonical absolute path of the source file.
    pub doc_key: String,
    /// Path as given to ingest.
    pub path: String,
    /// Document title.
    pub title: Option<String>,
    /// Section heading at the chunk's start.
    pub section: Option<String>,
    /// Sections starting inside the chunk, JSON `[[offset, heading]...]`.
    pub sections: String,
    /// Source spans, JSON (see [`crate::ingest::chunk::Span`]).
    pub spans: String,
    /// Chunk text.
    pub text: String,
    /// First page.
    pub page_start: u32,
    /// Last page.
    pub page_end: u32,
    /// Position in its document.
    pub ordinal: u64,
}

/// A chunk in the index, as [`ShirabeIndex::live_keys`] lists it.
#[derive(Debug, Clone, Copy)]
pub struct LiveChunk {
    /// Where it is.
    pub addr: DocAddress,
    /// Its content key.
    pub key: Key,
    /// Its tokens.
    pub tokens: u64,
}

/// The write lock of an index directory, released when dropped.
#[derive(Debug)]
pub struct WriteLock(std::fs::File);

impl WriteLock {
    /// Says who holds the lock (`watch <pid>`), for the processes it
    /// turns away.
    pub fn announce(&self, owner: &str) -> std::io::Result<()> {
        use std::io::{Seek, Write};
        let mut f = &self.0;
        f.set_len(0)?;
        f.seek(std::io::SeekFrom::Start(0))?;
        f.write_all(owner.as_bytes())?;
        f.flush()
    }
}

/// Who holds the write lock of `dir`, as announced, if someone does.
pub fn lock_owner(dir: &Path) -> Option<String> {
    let path = dir.join("lock");
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .ok()?;
    match f.try_lock() {
        Ok(()) => None,
        Err(_) => Some(
            std::fs::read_to_string(&path)
                .ok()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "another shirabe process".into()),
        ),
    }
}

/// Memory budget of the index writer.
const WRITER_HEAP_BYTES: usize = 128 << 20;

/// The fields of the schema.
#[derive(Debug, Clone, Copy)]
pub struct Fields {
    /// `<doc id>-<ordinal>`, unique per chunk.
    pub chunk_id: Field,
    /// Canonical absolute path of the source file.
    pub doc_key: Field,
    /// Path as given to ingest.
    pub path: Field,
    /// Document title (searchable).
    pub title: Field,
    /// Section heading (searchable).
    pub section: Field,
    /// Chunk text (searchable, stored for snippets).
    pub text: Field,
    /// First page.
    pub page_start: Field,
    /// Last page.
    pub page_end: Field,
    /// Printed page labels, JSON array.
    pub page_labels: Field,
    /// Source spans, JSON array of [`crate::ingest::chunk::Span`].
    pub spans: Field,
    /// Sections starting inside the chunk, JSON array of [offset, heading].
    pub sections: Field,
    /// BLAKE3 of the chunk text (hex, 32 chars).
    pub content_hash: Field,
    /// Position of the chunk in its document.
    pub ordinal: Field,
    /// Token count of the chunk.
    pub tokens: Field,
}

fn schema() -> (Schema, Fields) {
    let mut b = Schema::builder();
    let text_opts = |stored: bool| {
        let o = TextOptions::default().set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer(analyzer::ANALYZER_NAME)
                .set_index_option(IndexRecordOption::WithFreqsAndPositions),
        );
        if stored {
            o.set_stored()
        } else {
            o
        }
    };
    let fields = Fields {
        chunk_id: b.add_text_field("chunk_id", STRING | STORED | FAST),
        doc_key: b.add_text_field("doc_key", STRING | STORED | FAST),
        path: b.add_text_field("path", STORED),
        title: b.add_text_field("title", text_opts(true)),
        section: b.add_text_field("section", text_opts(true)),
        text: b.add_text_field("text", text_opts(true)),
        page_start: b.add_u64_field("page_start", INDEXED | STORED | FAST),
        page_end: b.add_u64_field("page_end", INDEXED | STORED | FAST),
        page_labels: b.add_text_field("page_labels", STORED),
        spans: b.add_text_field("spans", STORED),
        sections: b.add_text_field("sections", STORED),
        content_hash: b.add_text_field("content_hash", STRING | STORED | FAST),
        ordinal: b.add_u64_field("ordinal", STORED | FAST),
        tokens: b.add_u64_field("tokens", STORED | FAST),
    };
    (b.build(), fields)
}

/// An open index directory.
pub struct ShirabeIndex {
    /// The index directory.
    pub dir: PathBuf,
    /// The tantivy index.
    pub index: Index,
    /// Schema fields.
    pub fields: Fields,
    /// The manifest as last saved (or a fresh one).
    pub manifest: Option<Manifest>,
}

/// Takes the write lock of the index directory `dir`, or says which
/// process has it.
pub fn lock_dir(dir: &Path) -> Result<WriteLock> {
    let path = dir.join("lock");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| Error::io(&path, e))?;
    match f.try_lock() {
        Ok(()) => {
            // Nobody owns it now: clear what the last owner announced.
            let _ = f.set_len(0);
            Ok(WriteLock(f))
        }
        Err(std::fs::TryLockError::WouldBlock) => Err(Error::Index(format!(
            "{} is being written by another shirabe process (ingest or embed-index); wait for it or stop it",
            dir.display()
        ))),
        Err(std::fs::TryLockError::Error(e)) => Err(Error::io(&path, e)),
    }
}

impl ShirabeIndex {
    fn tantivy_dir(dir: &Path) -> PathBuf {
        dir.join("tantivy")
    }

    /// Path of the manifest file.
    pub fn manifest_path(&self) -> PathBuf {
        self.dir.join("manifest.json")
    }

    /// Opens the index in `dir`, creating it if needed. A manifest that
    /// lists files beside no BM25 index is damage, not a new index (else
    /// every file would count as unchanged and nothing be searchable).
    pub fn open_or_create(dir: &Path) -> Result<ShirabeIndex> {
        let tdir = Self::tantivy_dir(dir);
        if !tdir.join("meta.json").exists() {
            Self::check_not_lost(dir)?;
        }
        std::fs::create_dir_all(&tdir).map_err(|e| Error::io(&tdir, e))?;
        let (schema, fields) = schema();
        let mmap = tantivy::directory::MmapDirectory::open(&tdir)?;
        let index = Index::open_or_create(mmap, schema).map_err(|e| match e {
            tantivy::TantivyError::SchemaError(m) => Error::IndexMismatch(format!(
                "{}: written by another version of shirabe ({m}); remove the directory and ingest again",
                dir.display()
            )),
            other => Error::from(other),
        })?;
        Self::finish(dir, index, fields)
    }

    /// An error when the manifest in `dir` lists files but the BM25
    /// index is gone.
    fn check_not_lost(dir: &Path) -> Result<()> {
        let manifest = Manifest::load(&dir.join("manifest.json"))
            .map_err(|e| Error::damaged(dir, "the manifest", e))?;
        match manifest {
            Some(m) if !m.files.is_empty() => Err(Error::damaged(
                dir,
                "the BM25 index",
                format!(
                    "tantivy/meta.json is missing while the manifest lists {} files",
                    m.files.len()
                ),
            )),
            _ => Ok(()),
        }
    }

    /// Opens an existing index; a clear error if there is none, and one
    /// that names the damaged part if a part cannot be read.
    pub fn open(dir: &Path) -> Result<ShirabeIndex> {
        let tdir = Self::tantivy_dir(dir);
        if !tdir.join("meta.json").exists() {
            Self::check_not_lost(dir)?;
            return Err(Error::NoIndex(dir.to_path_buf()));
        }
        let index = Index::open_in_dir(&tdir).map_err(|e| match e {
            tantivy::TantivyError::SchemaError(m) => Error::IndexMismatch(format!(
                "{}: written by another version of shirabe ({m}); remove the directory and ingest again",
                dir.display()
            )),
            other => Error::damaged(dir, "the BM25 index", other),
        })?;
        let (expected, fields) = schema();
        if index.schema() != expected {
            return Err(Error::IndexMismatch(format!(
                "{}: written by another version of shirabe; remove the directory and ingest again",
                dir.display()
            )));
        }
        Self::finish(dir, index, fields)
    }

    fn finish(dir: &Path, index: Index, fields: Fields) -> Result<ShirabeIndex> {
        index
            .tokenizers()
            .register(analyzer::ANALYZER_NAME, analyzer::analyzer());
        let manifest = Manifest::load(&dir.join("manifest.json"))
            .map_err(|e| Error::damaged(dir, "the manifest", e))?;
        if let Some(m) = &manifest {
            if m.schema_version != SCHEMA_VERSION {
                return Err(Error::IndexMismatch(format!(
                    "{}: index schema version {} but this shirabe writes version {SCHEMA_VERSION}; remove the directory and ingest again",
                    dir.display(),
                    m.schema_version
                )));
            }
        }
        Ok(ShirabeIndex {
            dir: dir.to_path_buf(),
            index,
            fields,
            manifest,
        })
    }

    /// Takes the write lock, or says which process has it.
    pub fn lock(&self) -> Result<WriteLock> {
        lock_dir(&self.dir)
    }

    /// Opens the vector store `key` of the manifest at its committed
    /// length, for reading.
    pub fn open_store(&self, key: &str, state: &VectorState) -> Result<VectorStore> {
        VectorStore::open_read_gen(
            &self.dir.join("vectors").join(key),
            state.dims,
            state.dtype,
            state.rows as usize,
            state.file_gen,
        )
        .map_err(|e| Error::damaged(&self.dir, format!("the vector store {key}"), e))
    }

    /// Opens the vector store `key` for appending (hold [`Self::lock`]).
    pub fn open_store_for_write(&self, key: &str, state: &VectorState) -> Result<VectorStore> {
        VectorStore::open_gen(
            &self.dir.join("vectors").join(key),
            state.dims,
            state.dtype,
            state.rows as usize,
            state.file_gen,
        )
        .map_err(|e| Error::damaged(&self.dir, format!("the vector store {key}"), e))
    }

    /// The active vector store (the one search uses), if the index has one.
    pub fn active_store(&self) -> Result<Option<(VectorState, VectorStore)>> {
        let Some((key, state)) = self.manifest.as_ref().and_then(|m| m.active_store()) else {
            return Ok(None);
        };
        Ok(Some((state.clone(), self.open_store(key, state)?)))
    }

    /// The content key and token count of every live chunk.
    pub fn live_keys(&self, searcher: &Searcher) -> Result<Vec<LiveChunk>> {
        let mut out = Vec::with_capacity(searcher.num_docs() as usize);
        let mut hex = String::new();
        for (seg_ord, seg) in searcher.segment_readers().iter().enumerate() {
            let col = seg
                .fast_fields()
                .str("content_hash")?
                .ok_or_else(|| Error::Index("content_hash is not a fast field".into()))?;
            let tokens = seg.fast_fields().u64("tokens")?;
            for doc in seg.doc_ids_alive() {
                for ord in col.term_ords(doc) {
                    hex.clear();
                    col.ord_to_str(ord, &mut hex).map_err(Error::index_lib)?;
                    if let Some(key) = vectors::key_from_hex(&hex) {
                        out.push(LiveChunk {
                            addr: DocAddress::new(seg_ord as u32, doc),
                            key,
                            tokens: tokens.first(doc).unwrap_or(0),
                        });
                    }
                }
            }
        }
        Ok(out)
    }

    /// A string fast column's value for a chunk.
    fn fast_str(&self, searcher: &Searcher, addr: DocAddress, field: &str) -> Result<String> {
        let seg = searcher.segment_reader(addr.segment_ord);
        let col = seg
            .fast_fields()
            .str(field)?
            .ok_or_else(|| Error::Index(format!("{field} is not a fast field")))?;
        let mut out = String::new();
        if let Some(ord) = col.term_ords(addr.doc_id).next() {
            col.ord_to_str(ord, &mut out).map_err(Error::index_lib)?;
        }
        Ok(out)
    }

    /// The chunk id of a live chunk (from the fast column).
    pub fn chunk_id_of(&self, searcher: &Searcher, addr: DocAddress) -> Result<String> {
        self.fast_str(searcher, addr, "chunk_id")
    }

    /// The doc key (file) of a live chunk (from the fast column).
    pub fn doc_key_of(&self, searcher: &Searcher, addr: DocAddress) -> Result<String> {
        self.fast_str(searcher, addr, "doc_key")
    }

    /// The stored fields of a chunk's document.
    pub fn stored_chunk(&self, doc: &TantivyDocument) -> StoredChunk {
        use tantivy::schema::Value as _;
        let f = self.fields;
        let text = |field| {
            doc.get_first(field)
                .and_then(|v| v.as_str())
                .map(str::to_string)
        };
        let num = |field| doc.get_first(field).and_then(|v| v.as_u64()).unwrap_or(0);
        StoredChunk {
            chunk_id: text(f.chunk_id).unwrap_or_default(),
            doc_key: text(f.doc_key).unwrap_or_default(),
            path: text(f.path).unwrap_or_default(),
            title: text(f.title),
            section: text(f.section),
            sections: text(f.sections).unwrap_or_default(),
            spans: text(f.spans).unwrap_or_default(),
            text: text(f.text).unwrap_or_default(),
            page_start: num(f.page_start) as u32,
            page_end: num(f.page_end) as u32,
            ordinal: num(f.ordinal),
        }
    }

    /// The mean number of analysed tokens per chunk (BM25's `avgdl`).
    pub fn mean_chunk_length(&self) -> Result<f32> {
        let reader = self.reader()?;
        let searcher = reader.searcher();
        let mut tokens = 0u64;
        let mut docs = 0u64;
        for seg in searcher.segment_readers() {
            tokens += seg.inverted_index(self.fields.text)?.total_num_tokens();
            docs += u64::from(seg.max_doc());
        }
        Ok(if docs == 0 {
            1.0
        } else {
            tokens as f32 / docs as f32
        })
    }

    /// The live chunk with this chunk id.
    pub fn chunk_by_id(&self, searcher: &Searcher, chunk_id: &str) -> Result<Option<DocAddress>> {
        let q = TermQuery::new(
            Term::from_field_text(self.fields.chunk_id, chunk_id),
            IndexRecordOption::Basic,
        );
        Ok(searcher.search(&q, &DocSetCollector)?.into_iter().min())
    }

    /// The live chunks whose text has `key`.
    pub fn docs_with_key(&self, searcher: &Searcher, key: &Key) -> Result<Vec<DocAddress>> {
        let q = TermQuery::new(
            Term::from_field_text(self.fields.content_hash, &vectors::key_hex(key)),
            IndexRecordOption::Basic,
        );
        let mut docs: Vec<DocAddress> =
            searcher.search(&q, &DocSetCollector)?.into_iter().collect();
        docs.sort();
        Ok(docs)
    }

    /// A writer (holds tantivy's lock until dropped).
    pub fn writer(&self) -> Result<IndexWriter> {
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(4);
        self.index
            .writer_with_num_threads(threads, WRITER_HEAP_BYTES * threads)
            .map_err(|e| match e {
                tantivy::TantivyError::LockFailure(..) => Error::Index(format!(
                    "{} is being written by another shirabe process",
                    self.dir.display()
                )),
                other => other.into(),
            })
    }

    /// A reader that sees the latest commit.
    pub fn reader(&self) -> Result<IndexReader> {
        self.index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()
            .map_err(|e| Error::damaged(&self.dir, "the BM25 index", e))
    }

    /// Every doc_key that has chunks in the index (deleted ones may linger
    /// until segments merge; deleting them again is harmless).
    pub fn doc_keys(&self) -> Result<HashSet<String>> {
        let reader = self.reader()?;
        let searcher = reader.searcher();
        let mut out = HashSet::new();
        for seg in searcher.segment_readers() {
            let inv = seg.inverted_index(self.fields.doc_key)?;
            let mut terms = inv.terms().stream().map_err(Error::index_lib)?;
            while terms.advance() {
                out.insert(String::from_utf8_lossy(terms.key()).into_owned());
            }
        }
        Ok(out)
    }

    /// Deletes every chunk of a file.
    pub fn delete_doc(&self, writer: &IndexWriter, doc_key: &str) {
        writer.delete_term(Term::from_field_text(self.fields.doc_key, doc_key));
    }

    /// Adds a file's chunks.
    pub fn add_chunks(
        &self,
        writer: &IndexWriter,
        doc_key: &str,
        path: &str,
        title: Option<&str>,
        chunks: &[Chunk],
    ) -> Result<()> {
        let f = &self.fields;
        let doc_id = &blake3::hash(doc_key.as_bytes()).to_hex()[..12];
        for c in chunks {
            let mut d = TantivyDocument::default();
            d.add_text(f.chunk_id, format!("{doc_id}-{}", c.ordinal));
            d.add_text(f.doc_key, doc_key);
            d.add_text(f.path, path);
            if let Some(t) = title {
                d.add_text(f.title, t);
            }
            if let Some(s) = &c.section {
                d.add_text(f.section, s);
            }
            for r in &c.running {
                d.add_text(f.section, r);
            }
            d.add_text(f.text, &c.text);
            d.add_u64(f.page_start, u64::from(c.page_start));
            d.add_u64(f.page_end, u64::from(c.page_end));
            d.add_text(
                f.page_labels,
                serde_json::to_string(&c.page_labels).unwrap_or_default(),
            );
            d.add_text(f.spans, serde_json::to_string(&c.spans).unwrap_or_default());
            d.add_text(
                f.sections,
                serde_json::to_string(&c.sections).unwrap_or_default(),
            );
            d.add_text(
                f.content_hash,
                &blake3::hash(c.text.as_bytes()).to_hex()[..32],
            );
            d.add_u64(f.ordinal, u64::from(c.ordinal));
            d.add_u64(f.tokens, c.tokens as u64);
            writer.add_document(d)?;
        }
        Ok(())
    }
}
