//! Checking an index directory part by part, and rebuilding the damaged
//! parts from those that are not.
//!
//! An index has three parts, and each can be rebuilt from the others and
//! the files themselves:
//!
//! - **the manifest** (`manifest.json`): which files are indexed, their
//!   hashes, the vector stores' committed rows. Lost or unreadable, it is
//!   rebuilt by ingesting again the files the BM25 index lists; the vector
//!   stores' row counts went with it, so they are dropped too.
//! - **the BM25 index** (`tantivy/`): missing, unreadable, or holding a
//!   different number of chunks than the manifest says. It is rebuilt by
//!   ingesting again the files the manifest lists; vectors are keyed by
//!   chunk content, so nothing is embedded twice.
//! - **a vector store** (`vectors/<model>/`): truncated or missing files.
//!   It is dropped (files and manifest entry); `embed-index` embeds again.
//!
//! [`diagnose`] reads everything (every stored chunk, every fast column,
//! every committed vector row) and names what is wrong; [`repair`] does
//! the rebuilds above under the index's write lock.

use std::path::{Path, PathBuf};

use serde::Serialize;
use tantivy::TantivyDocument;

use super::manifest::Manifest;
use super::ShirabeIndex;
use crate::ingest::{self, IngestOptions, IngestReport};
use crate::{Error, Result};

/// A part of the index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "part", content = "name", rename_all = "snake_case")]
pub enum Part {
    /// `manifest.json`.
    Manifest,
    /// `tantivy/`.
    Bm25,
    /// `vectors/<name>/`.
    Vectors(String),
}

impl std::fmt::Display for Part {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Part::Manifest => write!(f, "the manifest"),
            Part::Bm25 => write!(f, "the BM25 index"),
            Part::Vectors(name) => write!(f, "the vector store {name}"),
        }
    }
}

/// One damaged part.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    /// Which part.
    #[serde(flatten)]
    pub part: Part,
    /// What is wrong.
    pub problem: String,
    /// What `repair` will do about it.
    pub repair: String,
}

/// What [`diagnose`] found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Diagnosis {
    /// Files the manifest lists (when it is readable).
    pub files: usize,
    /// Chunks the manifest lists.
    pub manifest_chunks: u64,
    /// Chunks the BM25 index holds (when it is readable).
    pub index_chunks: Option<u64>,
    /// Vector stores checked.
    pub vector_stores: usize,
    /// The damaged parts (none: the index is sound).
    pub findings: Vec<Finding>,
}

impl Diagnosis {
    /// Whether `part` is damaged.
    pub fn damaged(&self, part: &Part) -> bool {
        self.findings.iter().any(|f| &f.part == part)
    }
}

/// What [`repair`] did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Repair {
    /// Vector stores dropped (embed again with `embed-index`).
    pub dropped_stores: Vec<String>,
    /// Whether the manifest was rebuilt.
    pub manifest_rebuilt: bool,
    /// The ingest that rebuilt the BM25 index, if one ran.
    pub reingest: Option<IngestReport>,
}

/// Checks every part of the index in `dir`.
pub fn diagnose(dir: &Path) -> Result<Diagnosis> {
    if !dir.join("manifest.json").exists() && !dir.join("tantivy").join("meta.json").exists() {
        return Err(Error::NoIndex(dir.to_path_buf()));
    }
    let mut d = Diagnosis::default();
    let manifest = match Manifest::load(&dir.join("manifest.json")) {
        Ok(Some(m)) => Some(m),
        Ok(None) => {
            d.findings.push(Finding {
                part: Part::Manifest,
                problem: "manifest.json is missing".into(),
                repair: MANIFEST_REPAIR.into(),
            });
            None
        }
        Err(e) => {
            d.findings.push(Finding {
                part: Part::Manifest,
                problem: e.to_string(),
                repair: MANIFEST_REPAIR.into(),
            });
            None
        }
    };
    if let Some(m) = &manifest {
        d.files = m.files.len();
        d.manifest_chunks = m.files.values().map(|r| r.chunks as u64).sum();
    }
    match read_bm25(dir) {
        Ok(n) => {
            d.index_chunks = Some(n);
            if manifest.is_some() && n != d.manifest_chunks {
                d.findings.push(Finding {
                    part: Part::Bm25,
                    problem: format!(
                        "it holds {n} chunks where the manifest lists {}",
                        d.manifest_chunks
                    ),
                    repair: bm25_repair(d.files),
                });
            }
        }
        Err(problem) => d.findings.push(Finding {
            part: Part::Bm25,
            problem,
            repair: bm25_repair(d.files),
        }),
    }
    if let Some(m) = &manifest {
        for (key, state) in &m.vectors {
            d.vector_stores += 1;
            let store = super::vectors::VectorStore::open_read_gen(
                &dir.join("vectors").join(key),
                state.dims,
                state.dtype,
                state.rows as usize,
                state.file_gen,
            );
            if let Err(e) = store {
                d.findings.push(Finding {
                    part: Part::Vectors(key.clone()),
                    problem: e.to_string(),
                    repair: "dropped; `shirabe embed-index` embeds the chunks again".into(),
                });
            }
        }
    }
    Ok(d)
}

const MANIFEST_REPAIR: &str = "rebuilt by ingesting again the files the BM25 index lists \
     (vector stores are dropped with it; `shirabe embed-index` embeds again)";

fn bm25_repair(files: usize) -> String {
    format!("rebuilt by ingesting again the {files} files the manifest lists")
}

/// Opens the BM25 index and reads every live chunk's stored fields and
/// fast columns; the number of chunks, or what failed.
fn read_bm25(dir: &Path) -> std::result::Result<u64, String> {
    let tdir = dir.join("tantivy");
    if !tdir.join("meta.json").exists() {
        return Err("tantivy/meta.json is missing".into());
    }
    let fail = |e: &dyn std::fmt::Display| e.to_string();
    let index = tantivy::Index::open_in_dir(&tdir).map_err(|e| fail(&e))?;
    let (expected, fields) = super::schema();
    if index.schema() != expected {
        return Err("its schema is not this shirabe's".into());
    }
    let idx = ShirabeIndex {
        dir: dir.to_path_buf(),
        index,
        fields,
        manifest: None,
    };
    let reader = idx.reader().map_err(|e| fail(&e))?;
    let searcher = reader.searcher();
    let mut n = 0u64;
    for seg in searcher.segment_readers() {
        let store = seg.get_store_reader(1).map_err(|e| fail(&e))?;
        for doc in store.iter::<TantivyDocument>(seg.alive_bitset()) {
            doc.map_err(|e| fail(&e))?;
            n += 1;
        }
    }
    idx.live_keys(&searcher).map_err(|e| fail(&e))?;
    Ok(n)
}

/// The files the BM25 index lists (by their keys), whatever the manifest
/// says.
fn files_in_bm25(dir: &Path) -> Result<Vec<String>> {
    let index = tantivy::Index::open_in_dir(dir.join("tantivy"))
        .map_err(|e| Error::damaged(dir, "the BM25 index", e))?;
    let (_, fields) = super::schema();
    let idx = ShirabeIndex {
        dir: dir.to_path_buf(),
        index,
        fields,
        manifest: None,
    };
    let mut keys: Vec<String> = idx.doc_keys()?.into_iter().collect();
    keys.sort();
    Ok(keys)
}

/// Moves `path` aside as `<name>.damaged` (replacing an older one), so
/// nothing is deleted before the rebuild has its replacement.
fn set_aside(path: &Path) -> Result<()> {
    if !path.exists() {
        return Ok(());
    }
    let mut aside = path.as_os_str().to_owned();
    aside.push(".damaged");
    let aside = PathBuf::from(aside);
    if aside.is_dir() {
        std::fs::remove_dir_all(&aside).map_err(|e| Error::io(&aside, e))?;
    } else if aside.exists() {
        std::fs::remove_file(&aside).map_err(|e| Error::io(&aside, e))?;
    }
    std::fs::rename(path, &aside).map_err(|e| Error::io(path, e))
}

/// Rebuilds the damaged parts `d` names (see the module docs), under the
/// write lock; `opts` are the ingest settings for a rebuild (its paths are
/// replaced by the files to read again).
pub fn repair(
    dir: &Path,
    d: &Diagnosis,
    opts: &IngestOptions,
    progress: &dyn Fn(&ingest::Event),
) -> Result<Repair> {
    let mut done = Repair::default();
    if d.findings.is_empty() {
        return Ok(done);
    }
    let lock = super::lock_dir(dir)?;
    let manifest_path = dir.join("manifest.json");
    let bm25_lost = d.damaged(&Part::Bm25);
    let files: Vec<String> = if d.damaged(&Part::Manifest) {
        if bm25_lost {
            return Err(Error::damaged(
                dir,
                "the index",
                "both the manifest and the BM25 index are damaged, so nothing says which files \
                 were indexed: remove the directory and ingest the folders again",
            ));
        }
        let keys = files_in_bm25(dir)?;
        set_aside(&manifest_path)?;
        // Without a manifest, no vector store's committed rows are known.
        for entry in std::fs::read_dir(dir.join("vectors")).into_iter().flatten() {
            let entry = entry.map_err(|e| Error::io(dir.join("vectors"), e))?;
            done.dropped_stores
                .push(entry.file_name().to_string_lossy().into_owned());
        }
        set_aside(&dir.join("vectors"))?;
        done.manifest_rebuilt = true;
        keys
    } else {
        let mut m = Manifest::load(&manifest_path)?
            .unwrap_or_else(|| unreachable!("diagnose found the manifest readable"));
        for f in &d.findings {
            if let Part::Vectors(key) = &f.part {
                set_aside(&dir.join("vectors").join(key))?;
                m.vectors.remove(key);
                if m.active_vectors.as_deref() == Some(key) {
                    m.active_vectors = None;
                }
                done.dropped_stores.push(key.clone());
            }
        }
        let keys: Vec<String> = m.files.keys().cloned().collect();
        if bm25_lost {
            // Every file is read again into an empty BM25 index.
            m.files.clear();
        }
        m.save(&manifest_path)?;
        keys
    };
    if bm25_lost || done.manifest_rebuilt {
        set_aside(&dir.join("tantivy"))?;
        drop(lock);
        let opts = IngestOptions {
            paths: files.iter().map(|k| ingest::path_of_key(k)).collect(),
            index_dir: dir.to_path_buf(),
            ..opts.clone()
        };
        done.reingest = Some(ingest::run(&opts, progress)?);
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sound_index() -> (tempfile::TempDir, PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let docs = tmp.path().join("docs");
        std::fs::create_dir(&docs).unwrap();
        std::fs::write(docs.join("a.txt"), "alpha apples and apricots").unwrap();
        std::fs::write(docs.join("b.md"), "# B\n\nbeta bananas").unwrap();
        let dir = tmp.path().join("idx");
        let mut opts = IngestOptions::new(vec![docs], &dir);
        opts.tokenizer = Some("estimate".into());
        ingest::run(&opts, &|_| {}).unwrap();
        (tmp, dir)
    }

    fn opts(dir: &Path) -> IngestOptions {
        let mut o = IngestOptions::new(Vec::new(), dir);
        o.tokenizer = Some("estimate".into());
        o
    }

    #[test]
    fn a_sound_index_has_no_findings() {
        let (_tmp, dir) = sound_index();
        let d = diagnose(&dir).unwrap();
        assert!(d.findings.is_empty(), "{d:?}");
        assert_eq!(
            (d.files, d.manifest_chunks, d.index_chunks),
            (2, 2, Some(2))
        );
    }

    #[test]
    fn lost_meta_json_is_found_and_rebuilt() {
        let (_tmp, dir) = sound_index();
        std::fs::remove_file(dir.join("tantivy/meta.json")).unwrap();
        // Opening says which part and what to run, for reading and writing.
        for e in [
            ShirabeIndex::open(&dir).err().unwrap(),
            ShirabeIndex::open_or_create(&dir).err().unwrap(),
        ] {
            assert!(matches!(e, Error::Damaged { .. }), "{e}");
            assert!(e.to_string().contains("doctor --repair"), "{e}");
        }
        let d = diagnose(&dir).unwrap();
        assert!(d.damaged(&Part::Bm25), "{d:?}");
        let r = repair(&dir, &d, &opts(&dir), &|_| {}).unwrap();
        assert_eq!(r.reingest.unwrap().indexed, 2);
        assert!(diagnose(&dir).unwrap().findings.is_empty());
    }

    #[test]
    fn an_unreadable_manifest_is_rebuilt_from_the_bm25_index() {
        let (_tmp, dir) = sound_index();
        std::fs::write(dir.join("manifest.json"), "{garbage").unwrap();
        let e = ShirabeIndex::open(&dir).err().unwrap();
        assert!(matches!(e, Error::Damaged { .. }), "{e}");
        let d = diagnose(&dir).unwrap();
        assert!(d.damaged(&Part::Manifest), "{d:?}");
        let r = repair(&dir, &d, &opts(&dir), &|_| {}).unwrap();
        assert!(r.manifest_rebuilt);
        assert_eq!(r.reingest.unwrap().indexed, 2);
        let d = diagnose(&dir).unwrap();
        assert!(d.findings.is_empty(), "{d:?}");
        assert_eq!(d.files, 2);
    }
}
