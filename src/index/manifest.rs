//! The index manifest: `manifest.json` beside the tantivy files.
//!
//! It says how the index was built (schema version, analyzer, tokenizer,
//! chunk parameters) and what is in it (per file: content hash, size, mtime,
//! pages, status and error). It is written after each tantivy commit, always
//! by writing a temporary file and renaming it over the old one, so a crash
//! leaves either the old or the new manifest, never a torn one. If the
//! process dies between a commit and the manifest write, the next ingest
//! redoes the files the manifest does not know (re-indexing a file first
//! deletes all its chunks, so nothing is duplicated).
//!
//! The manifest also records the embedded vector stores
//! ([`VectorState`]): each store's committed row count is only ever
//! advanced here, after its rows are on disk, and every save bumps one
//! `generation` number, so the tantivy commit, the vector rows and the file
//! records a reader sees always belong together.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::index::vectors::VectorDtype;
use crate::ingest::chunk::ChunkParams;
use crate::ingest::tokens::TokenizerInfo;
use crate::{Error, Result};

/// Version of the index layout; an index of another version must be rebuilt.
pub const SCHEMA_VERSION: u32 = 3;

/// How a file fared at its last ingest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileStatus {
    /// Indexed.
    Ok,
    /// Read, but it has no text (a scanned PDF without a text layer).
    Empty,
    /// Could not be read; `error` says why.
    Failed,
}

/// What the index knows of one file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileRecord {
    /// The path as given to `ingest`.
    pub path: String,
    /// BLAKE3 of the content (hex).
    pub hash: String,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, seconds since the Unix epoch.
    pub mtime: u64,
    /// Number of pages (1 for text files).
    pub pages: u32,
    /// Number of chunks indexed.
    pub chunks: u32,
    /// Outcome.
    pub status: FileStatus,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Problems that cost some text.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// Document title.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Pages whose text was read by OCR.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub ocr_pages: u32,
    /// Pages without a text layer that were not read (no OCR engine,
    /// `--ocr never`, or OCR failed).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub ocr_pending: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// One embedded vector store (the vectors of one embedding model).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VectorState {
    /// The model id ([`crate::models::embed::TextEmbedder::id`]).
    pub model: String,
    /// How to load the model again (a repo id or a directory).
    pub spec: String,
    /// Width of the vectors.
    pub dims: usize,
    /// How values are stored.
    pub dtype: VectorDtype,
    /// Committed rows.
    pub rows: u64,
    /// Which generation of files holds them (compaction makes a new one).
    #[serde(default)]
    pub file_gen: u64,
    /// Tokens embedded so far, and the seconds it took (the throughput the
    /// ETA is computed from).
    #[serde(default)]
    pub embedded_tokens: u64,
    /// See `embedded_tokens`.
    #[serde(default)]
    pub embed_seconds: f64,
}

impl VectorState {
    /// Measured tokens per second, if anything was embedded.
    pub fn tokens_per_second(&self) -> Option<f64> {
        (self.embed_seconds > 0.0 && self.embedded_tokens > 0)
            .then(|| self.embedded_tokens as f64 / self.embed_seconds)
    }
}

/// The manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// [`SCHEMA_VERSION`] of the writer.
    pub schema_version: u32,
    /// The text analyzer of the BM25 fields.
    pub analyzer: String,
    /// The tokenizer that counted chunk tokens.
    pub tokenizer: TokenizerInfo,
    /// Chunk sizes.
    pub chunking: ChunkParams,
    /// Files, by canonical absolute path.
    pub files: BTreeMap<String, FileRecord>,
    /// Bumped by every save.
    #[serde(default)]
    pub generation: u64,
    /// Vector stores, by directory name under `vectors/`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub vectors: BTreeMap<String, VectorState>,
    /// The store search uses (the last model the index was embedded with).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_vectors: Option<String>,
    /// The Qdrant collection that mirrors the active store, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qdrant: Option<QdrantState>,
    /// The folders ingested (absolute), which `watch` watches by default.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roots: Vec<String>,
}

/// Where an index's vectors are mirrored in Qdrant (the API key is never
/// written down: it comes from the flag or `QDRANT_API_KEY` each time).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QdrantState {
    /// gRPC URL.
    pub url: String,
    /// Collection.
    pub collection: String,
    /// The vector store it mirrors.
    pub store: String,
}

impl Manifest {
    /// Reads `path`; `None` if it does not exist.
    pub fn load(path: &Path) -> Result<Option<Manifest>> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(Error::index(format!(
                    "{}: unreadable manifest",
                    path.display()
                ))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(path, e)),
        }
    }

    /// A manifest for a new index.
    pub fn new(analyzer: String, tokenizer: TokenizerInfo, chunking: ChunkParams) -> Manifest {
        Manifest {
            schema_version: SCHEMA_VERSION,
            analyzer,
            tokenizer,
            chunking,
            files: BTreeMap::new(),
            generation: 0,
            vectors: BTreeMap::new(),
            active_vectors: None,
            qdrant: None,
            roots: Vec::new(),
        }
    }

    /// The store search uses, with its directory name.
    pub fn active_store(&self) -> Option<(&str, &VectorState)> {
        let key = self.active_vectors.as_deref()?;
        self.vectors.get(key).map(|v| (key, v))
    }

    /// Bumps the generation and writes atomically (temporary file, fsync,
    /// rename).
    pub fn save(&mut self, path: &Path) -> Result<()> {
        self.generation += 1;
        let tmp = path.with_extension("json.tmp");
        let json = serde_json::to_vec_pretty(self).map_err(Error::index_lib)?;
        let mut f = std::fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
        f.write_all(&json).map_err(|e| Error::io(&tmp, e))?;
        f.sync_all().map_err(|e| Error::io(&tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("manifest.json");
        assert_eq!(Manifest::load(&path).unwrap(), None);
        let mut m = Manifest::new(
            "a".into(),
            TokenizerInfo {
                kind: "estimate".into(),
                source: "x".into(),
            },
            ChunkParams::default(),
        );
        m.files.insert(
            "/a.pdf".into(),
            FileRecord {
                path: "a.pdf".into(),
                hash: "h".into(),
                size: 1,
                mtime: 2,
                pages: 3,
                chunks: 4,
                status: FileStatus::Failed,
                error: Some("damaged".into()),
                warnings: vec![],
                title: None,
                ocr_pages: 0,
                ocr_pending: 0,
            },
        );
        m.save(&path).unwrap();
        assert_eq!(m.generation, 1);
        assert_eq!(Manifest::load(&path).unwrap(), Some(m.clone()));
        m.save(&path).unwrap();
        assert_eq!(Manifest::load(&path).unwrap().unwrap().generation, 2);
        assert!(!path.with_extension("json.tmp").exists());
    }
}
