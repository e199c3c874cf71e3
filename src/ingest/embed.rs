//! Embedding the index: vectors for every chunk that has none yet.
//!
//! [`embed_index`] runs after BM25 ingest (inside `ingest`, or later as
//! `shirabe embed-index`), so search works at once and turns hybrid as
//! vectors arrive. It lists the live chunks, skips every one whose text
//! already has a vector in the model's store (the store is keyed by
//! content hash, so that is the embedding cache), embeds the rest in
//! document order, appends them and commits every couple of seconds by
//! saving the manifest with the store's new length. Stopping it at any
//! point (Ctrl-C, a kill) loses at most the uncommitted batch, and the next
//! run resumes where it stopped.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use tantivy::schema::Value;
use tantivy::TantivyDocument;

use crate::index::hnsw::Params;
use crate::index::manifest::{Manifest, VectorState};
use crate::index::vectors::{Key, VectorDtype, ANN_MIN_ROWS};
use crate::index::ShirabeIndex;
use crate::models::embed::{TextEmbedder, INDEX_BATCH};
use crate::{Error, Result};

/// Settings of an embedding run.
#[derive(Debug, Clone)]
pub struct EmbedOptions {
    /// Commit at most this often.
    pub commit_interval: Duration,
    /// How vectors are stored (for a new store).
    pub dtype: VectorDtype,
    /// How the model is loaded again at search time.
    pub spec: String,
    /// Aim for batches that take about this long, so a stop request is
    /// honoured promptly whatever the model's speed.
    pub batch_seconds: f64,
    /// Embed at most this many chunks (None: all).
    pub limit: Option<usize>,
}

impl Default for EmbedOptions {
    fn default() -> Self {
        EmbedOptions {
            commit_interval: Duration::from_secs(2),
            dtype: VectorDtype::F16,
            spec: String::new(),
            batch_seconds: 2.0,
            limit: None,
        }
    }
}

/// Progress of an embedding run.
#[derive(Debug, Clone)]
pub enum EmbedEvent {
    /// The work is known.
    Started {
        /// Chunks to embed.
        pending: usize,
        /// Their tokens.
        pending_tokens: u64,
        /// Live chunks whose vector was already in the store.
        cached: usize,
    },
    /// The HNSW graph is being extended (large stores only).
    Graph {
        /// Rows added so far.
        done: usize,
        /// Rows to add.
        total: usize,
    },
    /// A batch is done.
    Batch {
        /// Chunks embedded so far in this run.
        done: usize,
        /// Their tokens.
        tokens: u64,
    },
}

/// What an embedding run did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct EmbedReport {
    /// The model id.
    pub model: String,
    /// Live chunks in the index.
    pub chunks: usize,
    /// Of them, with a vector now.
    pub with_vectors: usize,
    /// Texts embedded in this run.
    pub embedded: usize,
    /// Chunks that needed no embedding (text already in the store).
    pub cached: usize,
    /// Tokens embedded in this run.
    pub tokens: u64,
    /// Seconds spent embedding.
    pub seconds: f64,
    /// Stopped before the end (Ctrl-C or `limit`).
    pub stopped: bool,
    /// Stale vectors dropped from the store.
    pub compacted: usize,
    /// Rows added to the HNSW graph.
    pub graph_rows_added: usize,
}

struct Pending {
    key: Key,
    text: String,
    tokens: u64,
}

/// Directory name of a model's store.
pub fn store_key(model_id: &str) -> String {
    model_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Embeds every live chunk of `index` that has no vector for `embedder`'s
/// model. The caller holds the index lock; `manifest` is the one it saves.
pub fn embed_index(
    index: &ShirabeIndex,
    manifest: &mut Manifest,
    embedder: &dyn TextEmbedder,
    opts: &EmbedOptions,
    cancel: &AtomicBool,
    progress: &dyn Fn(&EmbedEvent),
) -> Result<EmbedReport> {
    let key = store_key(embedder.id());
    let state = manifest
        .vectors
        .entry(key.clone())
        .or_insert_with(|| VectorState {
            model: embedder.id().to_string(),
            spec: opts.spec.clone(),
            dims: embedder.dims(),
            dtype: opts.dtype,
            rows: 0,
            file_gen: 0,
            embedded_tokens: 0,
            embed_seconds: 0.0,
        });
    if state.dims != embedder.dims() {
        return Err(Error::IndexMismatch(format!(
            "vector store {key}: {} dimensions recorded, the model gives {}",
            state.dims,
            embedder.dims()
        )));
    }
    if !opts.spec.is_empty() {
        state.spec = opts.spec.clone();
    }
    let mut store = index.open_store_for_write(&key, state)?;
    manifest.active_vectors = Some(key.clone());

    let reader = index.reader()?;
    let searcher = reader.searcher();
    let live = index.live_keys(&searcher)?;
    let live_set: HashSet<Key> = live.iter().map(|c| c.key).collect();
    // Keep stale vectors as a cache, but not without bound.
    let mut report = EmbedReport {
        model: embedder.id().to_string(),
        chunks: live.len(),
        ..EmbedReport::default()
    };
    let stale = store.len() - live_set.iter().filter(|k| store.contains(k)).count();
    if stale > 1024 && stale > live_set.len() {
        let old = store.generation();
        report.compacted = store.compact(&live_set)?;
        if let Some(st) = manifest.vectors.get_mut(&key) {
            st.file_gen = store.generation();
        }
        save(index, manifest, &key, store.len())?;
        store.remove_generation(old);
    }

    let mut wanted: Vec<(tantivy::DocAddress, Key)> = Vec::new();
    let mut queued = HashSet::new();
    for c in &live {
        if store.contains(&c.key) {
            report.cached += 1;
        } else if queued.insert(c.key) {
            wanted.push((c.addr, c.key));
        }
    }
    let f = index.fields;
    let mut pending: Vec<(String, u64, Pending)> = Vec::with_capacity(wanted.len());
    for (addr, k) in wanted {
        let doc: TantivyDocument = searcher.doc(addr)?;
        let text = doc
            .get_first(f.text)
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string();
        let doc_key = doc
            .get_first(f.doc_key)
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string();
        let ordinal = doc
            .get_first(f.ordinal)
            .and_then(|v| v.as_u64())
            .unwrap_or(0);
        let tokens = doc
            .get_first(f.tokens)
            .and_then(|v| v.as_u64())
            .unwrap_or(0);
        pending.push((
            doc_key,
            ordinal,
            Pending {
                key: k,
                text,
                tokens,
            },
        ));
    }
    // Document order: each file becomes searchable by meaning as a whole.
    pending.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
    let mut pending: Vec<Pending> = pending.into_iter().map(|p| p.2).collect();
    if let Some(limit) = opts.limit {
        if pending.len() > limit {
            pending.truncate(limit);
            report.stopped = true;
        }
    }
    progress(&EmbedEvent::Started {
        pending: pending.len(),
        pending_tokens: pending.iter().map(|p| p.tokens).sum(),
        cached: report.cached,
    });

    let started = Instant::now();
    let mut last_commit = Instant::now();
    let mut uncommitted = false;
    let mut at = 0;
    let mut batch = 1usize;
    while at < pending.len() {
        if cancel.load(Ordering::Relaxed) {
            report.stopped = true;
            break;
        }
        let group = &pending[at..(at + batch).min(pending.len())];
        let t0 = Instant::now();
        let texts: Vec<&str> = group.iter().map(|p| p.text.as_str()).collect();
        let vecs = embedder.embed(&texts, false, INDEX_BATCH)?;
        let secs = t0.elapsed().as_secs_f64();
        let items: Vec<(Key, Vec<f32>)> = group.iter().map(|p| p.key).zip(vecs).collect();
        store.append(&items)?;
        let tokens: u64 = group.iter().map(|p| p.tokens).sum();
        report.embedded += group.len();
        report.tokens += tokens;
        let state = manifest.vectors.get_mut(&key).expect("inserted above");
        state.embedded_tokens += tokens;
        state.embed_seconds += secs;
        uncommitted = true;
        at += group.len();
        // Size the next batch to take about `batch_seconds`.
        let per_chunk = secs / group.len() as f64;
        batch = ((opts.batch_seconds / per_chunk.max(1e-6)) as usize).clamp(1, 64);
        if last_commit.elapsed() >= opts.commit_interval {
            save(index, manifest, &key, store.len())?;
            last_commit = Instant::now();
            uncommitted = false;
        }
        progress(&EmbedEvent::Batch {
            done: report.embedded,
            tokens: report.tokens,
        });
    }
    if uncommitted || manifest.vectors[&key].rows != store.len() as u64 {
        save(index, manifest, &key, store.len())?;
    } else {
        manifest.save(&index.manifest_path())?;
    }
    // Large stores get an HNSW graph, extended to the new rows. It is saved
    // after the rows are committed and checked against them on open, so a
    // crash here costs only the graph's new part.
    if store.len() >= ANN_MIN_ROWS
        && store.ann_rows() < store.len()
        && !cancel.load(Ordering::Relaxed)
    {
        report.graph_rows_added = store.build_ann(Params::default(), cancel, &|done, total| {
            progress(&EmbedEvent::Graph { done, total })
        })?;
    }
    report.seconds = started.elapsed().as_secs_f64();
    report.with_vectors = live.iter().filter(|c| store.contains(&c.key)).count();
    Ok(report)
}

fn save(index: &ShirabeIndex, manifest: &mut Manifest, key: &str, rows: usize) -> Result<()> {
    if let Some(s) = manifest.vectors.get_mut(key) {
        s.rows = rows as u64;
    }
    manifest.save(&index.manifest_path())
}

/// How far the active store is: live chunks, those with vectors, and the
/// tokens still to embed.
#[derive(Debug, Clone, Serialize)]
pub struct Coverage {
    /// The model id.
    pub model: String,
    /// How to load it.
    pub spec: String,
    /// Live chunks.
    pub chunks: usize,
    /// With a vector.
    pub with_vectors: usize,
    /// Tokens of the chunks without one.
    pub pending_tokens: u64,
    /// Measured embedding speed, tokens per second.
    pub tokens_per_second: Option<f64>,
    /// Seconds left at that speed.
    pub eta_seconds: Option<f64>,
    /// Rows in the store (live and cached).
    pub rows: usize,
    /// Bytes of the store on disk.
    pub bytes: u64,
}

/// The active store's [`Coverage`], if the index has one.
pub fn coverage(index: &ShirabeIndex) -> Result<Option<Coverage>> {
    let Some((state, store)) = index.active_store()? else {
        return Ok(None);
    };
    let reader = index.reader()?;
    let searcher = reader.searcher();
    let live = index.live_keys(&searcher)?;
    let mut with = 0;
    let mut pending_tokens = 0;
    let mut counted = HashSet::new();
    for c in &live {
        if store.contains(&c.key) {
            with += 1;
        } else if counted.insert(c.key) {
            pending_tokens += c.tokens;
        }
    }
    let rate = state.tokens_per_second();
    Ok(Some(Coverage {
        model: state.model.clone(),
        spec: state.spec.clone(),
        chunks: live.len(),
        with_vectors: with,
        pending_tokens,
        tokens_per_second: rate,
        eta_seconds: rate.map(|r| pending_tokens as f64 / r),
        rows: store.len(),
        bytes: store.disk_bytes(),
    }))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::ingest::{run, IngestOptions};
    use crate::retrieve::{search, DenseQuery, Mode, SearchRequest};
    use std::path::Path;
    use std::sync::atomic::AtomicUsize;

    /// Vectors from a hash of the text: identical texts, identical vectors.
    pub(crate) struct Fake {
        pub texts: AtomicUsize,
    }

    impl TextEmbedder for Fake {
        fn id(&self) -> &str {
            "fake@1"
        }
        fn dims(&self) -> usize {
            16
        }
        fn embed(&self, texts: &[&str], _query: bool, _batch: usize) -> Result<Vec<Vec<f32>>> {
            self.texts.fetch_add(texts.len(), Ordering::Relaxed);
            Ok(texts
                .iter()
                .map(|t| {
                    let h = blake3::hash(str::as_bytes(t));
                    let v: Vec<f32> = h.as_bytes()[..16]
                        .iter()
                        .map(|&b| b as f32 - 127.5)
                        .collect();
                    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
                    v.into_iter().map(|x| x / n).collect()
                })
                .collect())
        }
    }

    fn ingest(dir: &Path, index: &Path) {
        let opts = IngestOptions {
            paths: vec![dir.to_path_buf()],
            index_dir: index.to_path_buf(),
            prune: true,
            tokenizer: Some("estimate".into()),
            chunking: crate::ingest::chunk::ChunkParams {
                target_tokens: 32,
                overlap_tokens: 4,
            },
            jobs: 1,
            commit_interval: Duration::from_secs(60),
            ocr: Default::default(),
            forget: Vec::new(),
            isolation: Default::default(),
        };
        run(&opts, &|_| {}).unwrap();
    }

    fn embed(index_dir: &Path, fake: &Fake, limit: Option<usize>) -> EmbedReport {
        let index = ShirabeIndex::open(index_dir).unwrap();
        let _lock = index.lock().unwrap();
        let mut manifest = index.manifest.clone().unwrap();
        let opts = EmbedOptions {
            spec: "fake".into(),
            limit,
            ..EmbedOptions::default()
        };
        embed_index(
            &index,
            &mut manifest,
            fake,
            &opts,
            &AtomicBool::new(false),
            &|_| {},
        )
        .unwrap()
    }

    fn write_docs(dir: &Path) {
        std::fs::create_dir_all(dir).unwrap();
        for (name, words) in [("a.txt", "alpha"), ("b.txt", "beta"), ("c.md", "gamma")] {
            let text: String = (0..60).map(|i| format!("{words}{i} ")).collect();
            std::fs::write(dir.join(name), text).unwrap();
        }
    }

    #[test]
    fn resumes_caches_by_content_and_searches() {
        let tmp = tempfile::tempdir().unwrap();
        let (docs, index_dir) = (tmp.path().join("docs"), tmp.path().join("index"));
        write_docs(&docs);
        ingest(&docs, &index_dir);
        let fake = Fake {
            texts: AtomicUsize::new(0),
        };
        // A limited run stops early and commits what it did.
        let first = embed(&index_dir, &fake, Some(2));
        assert!(first.stopped);
        assert_eq!((first.embedded, first.with_vectors), (2, 2));
        let total = first.chunks;
        assert!(total > 6, "{total} chunks");
        let cov = coverage(&ShirabeIndex::open(&index_dir).unwrap())
            .unwrap()
            .unwrap();
        assert_eq!((cov.chunks, cov.with_vectors), (total, 2));
        assert!(cov.pending_tokens > 0 && cov.eta_seconds.is_some());
        // The next run does the rest, and only the rest.
        let second = embed(&index_dir, &fake, None);
        assert_eq!(second.embedded, total - 2);
        assert_eq!(second.with_vectors, total);
        assert_eq!(fake.texts.load(Ordering::Relaxed), total);
        // Unchanged, moved and copied text is never embedded again.
        ingest(&docs, &index_dir);
        std::fs::rename(docs.join("a.txt"), docs.join("moved.txt")).unwrap();
        std::fs::copy(docs.join("b.txt"), docs.join("copy.txt")).unwrap();
        ingest(&docs, &index_dir);
        let third = embed(&index_dir, &fake, None);
        assert_eq!(third.embedded, 0);
        assert_eq!(fake.texts.load(Ordering::Relaxed), total);
        assert!(third.chunks > total, "the copy adds chunks");
        assert_eq!(third.with_vectors, third.chunks);
        // A changed file embeds only its new text.
        let text = std::fs::read_to_string(docs.join("c.md")).unwrap();
        std::fs::write(docs.join("c.md"), text + " delta epsilon").unwrap();
        ingest(&docs, &index_dir);
        let fourth = embed(&index_dir, &fake, None);
        assert!(fourth.embedded >= 1, "{fourth:?}");
        assert!(
            fourth.cached >= third.chunks - 6,
            "the rest is reused: {fourth:?}"
        );

        // Dense search: a chunk's own text finds it first.
        let index = ShirabeIndex::open(&index_dir).unwrap();
        let (_, store) = index.active_store().unwrap().unwrap();
        let bm25 = search(&index, &SearchRequest::new("beta7", 1), None).unwrap();
        let target = &bm25[0];
        let vector = fake
            .embed(&[target.text.as_str()], true, 1)
            .unwrap()
            .remove(0);
        let dense = DenseQuery {
            store: &store,
            vector,
        };
        let req = SearchRequest {
            mode: Mode::Dense,
            ..SearchRequest::new("beta7", 3)
        };
        let hits = search(&index, &req, Some(&dense)).unwrap();
        assert_eq!(hits[0].text, target.text);
        assert!((hits[0].explain.similarity.unwrap() - 1.0).abs() < 1e-3);
        // b.txt and its copy have the same first chunk: both are found.
        assert_eq!(hits[1].text, target.text);
        assert_ne!(hits[0].path, hits[1].path);
        // --doc narrows dense search too.
        let only_copy = SearchRequest {
            doc_glob: Some("copy.txt".into()),
            ..req.clone()
        };
        let hits = search(&index, &only_copy, Some(&dense)).unwrap();
        assert!(
            hits.iter().all(|h| h.path.ends_with("copy.txt")),
            "{hits:?}"
        );
        // Hybrid explains both ranks.
        let hybrid = SearchRequest {
            mode: Mode::Hybrid,
            neighbors: 1,
            ..SearchRequest::new("beta7", 3)
        };
        let hits = search(&index, &hybrid, Some(&dense)).unwrap();
        let e = &hits[0].explain;
        assert!(
            e.bm25_rank.is_some() && e.dense_rank.is_some() && e.fused.is_some(),
            "{e:?}"
        );
        assert!(!hits[0].neighbors.is_empty());
        assert!(hits[0].neighbors.iter().all(|n| n.offset.abs() == 1));
    }

    #[test]
    fn dense_search_over_only_stale_vectors_ends_empty() {
        let tmp = tempfile::tempdir().unwrap();
        let (docs, index_dir) = (tmp.path().join("docs"), tmp.path().join("index"));
        std::fs::create_dir_all(&docs).unwrap();
        let text: String = (0..400).map(|i| format!("word{i} ")).collect();
        std::fs::write(docs.join("a.txt"), text).unwrap();
        ingest(&docs, &index_dir);
        let fake = Fake {
            texts: AtomicUsize::new(0),
        };
        let r = embed(&index_dir, &fake, None);
        assert!(
            r.embedded > 18,
            "more rows than the first look takes: {r:?}"
        );
        // Every chunk goes away; the vectors stay as cache entries.
        std::fs::remove_file(docs.join("a.txt")).unwrap();
        std::fs::write(docs.join("b.txt"), "unrelated").unwrap();
        ingest(&docs, &index_dir);
        let index = ShirabeIndex::open(&index_dir).unwrap();
        let (_, store) = index.active_store().unwrap().unwrap();
        assert!(store.len() > 18);
        let vector = fake.embed(&["word1 word2"], true, 1).unwrap().remove(0);
        let dense = DenseQuery {
            store: &store,
            vector,
        };
        let req = SearchRequest {
            mode: Mode::Dense,
            ..SearchRequest::new("word1", 1)
        };
        // Terminates, and finds nothing stale.
        let hits = search(&index, &req, Some(&dense)).unwrap();
        assert!(hits.iter().all(|h| h.path.ends_with("b.txt")), "{hits:?}");
    }

    #[test]
    fn stop_request_commits_what_is_done() {
        let tmp = tempfile::tempdir().unwrap();
        let (docs, index_dir) = (tmp.path().join("docs"), tmp.path().join("index"));
        write_docs(&docs);
        ingest(&docs, &index_dir);
        let index = ShirabeIndex::open(&index_dir).unwrap();
        let mut manifest = index.manifest.clone().unwrap();
        let stop = AtomicBool::new(true);
        let fake = Fake {
            texts: AtomicUsize::new(0),
        };
        let r = embed_index(
            &index,
            &mut manifest,
            &fake,
            &EmbedOptions::default(),
            &stop,
            &|_| {},
        )
        .unwrap();
        assert!(r.stopped);
        assert_eq!(r.embedded, 0);
        // The store exists, empty, and the next run starts from zero.
        let again = embed(&index_dir, &fake, None);
        assert_eq!(again.embedded, again.chunks);
    }
}
