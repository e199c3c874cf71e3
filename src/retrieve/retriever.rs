//! The retrieval policy every front end shares: where to search (the
//! local index, or the Qdrant collection that mirrors it, which needs no
//! local index at all), in which mode, with which embedder, and when to
//! fall back to BM25.
//!
//! Asked for no mode, a [`Retriever`] searches hybrid when the index has
//! vectors and their model loads, else BM25, and says why in a note;
//! asked for dense or hybrid, anything missing is an error. Notes go to
//! the caller, which decides whether to print them.

use super::remote::Remote;
use super::{search, DenseQuery, Hit, Mode, SearchRequest, TermRarity};
use crate::index::qdrant::{QdrantConfig, QdrantIndex};
use crate::index::vectors::VectorStore;
use crate::index::ShirabeIndex;
use crate::models::embed::TextEmbedder;
use crate::{Error, Result};

/// What a [`Retriever`] is built from (flags, environment, config).
#[derive(Debug, Clone)]
pub struct RetrieverConfig {
    /// The mode asked for; `None` picks the best the index supports.
    pub mode: Option<Mode>,
    /// The embedding model, if not the one the index was embedded with.
    pub embed_model: Option<String>,
    /// The embedding model's weight type.
    pub embed_dtype: crate::models::EmbedDtype,
    /// Matryoshka dimensions (Qwen3-Embedding).
    pub dims: Option<usize>,
    /// The Qdrant collection to search, if any: the index's mirror, or
    /// the only index there is.
    pub qdrant: Option<QdrantConfig>,
}

impl Default for RetrieverConfig {
    fn default() -> Self {
        RetrieverConfig {
            mode: None,
            embed_model: None,
            embed_dtype: crate::models::EmbedDtype::Auto,
            dims: None,
            qdrant: None,
        }
    }
}

/// The query embedder and the local vector store it searches.
pub struct Dense {
    /// Embeds queries (and, for the citation checks, sentences); shared
    /// with the retriever a reopened index gets ([`Retriever::reopen`]).
    pub embedder: std::sync::Arc<dyn TextEmbedder>,
    /// Finds the nearest live chunks.
    pub vectors: VectorStore,
}

/// Searches one index in one mode.
pub struct Retriever {
    /// The mode it searches in.
    pub mode: Mode,
    /// How hybrid fuses its lists.
    pub fusion: super::Fusion,
    dense: Option<Dense>,
    /// Searches go to this Qdrant collection instead of the local index.
    remote: Option<Remote>,
    /// The query embedder of a remote search.
    remote_embedder: Option<std::sync::Arc<dyn TextEmbedder>>,
}

impl Retriever {
    /// BM25 only.
    pub fn bm25() -> Retriever {
        Retriever {
            mode: Mode::Bm25,
            fusion: super::Fusion::default(),
            dense: None,
            remote: None,
            remote_embedder: None,
        }
    }

    /// A retriever over a Qdrant collection alone (no local index): the
    /// model that embedded it comes from its metadata, unless `cfg` names
    /// one.
    pub fn open_remote(cfg: &RetrieverConfig, on_note: &mut dyn FnMut(&str)) -> Result<Retriever> {
        let q = cfg.qdrant.as_ref().ok_or_else(|| {
            Error::Config("searching without a local index needs a Qdrant collection".into())
        })?;
        Self::remote(q, cfg, None, on_note)
    }

    fn remote(
        q: &QdrantConfig,
        cfg: &RetrieverConfig,
        previous: Option<&Retriever>,
        on_note: &mut dyn FnMut(&str),
    ) -> Result<Retriever> {
        let asked = cfg.mode;
        let qdrant = QdrantIndex::open_existing(q)?;
        let layout = qdrant.layout().dense.clone();
        let bm25 = |qdrant| Retriever {
            mode: Mode::Bm25,
            fusion: super::Fusion::default(),
            dense: None,
            remote: Some(Remote { qdrant }),
            remote_embedder: None,
        };
        if asked == Some(Mode::Bm25) {
            return Ok(bm25(qdrant));
        }
        let Some(layout) = layout else {
            if let Some(m) = asked {
                return Err(Error::Config(format!(
                    "{} search needs embeddings, and the collection {} has none (run `shirabe embed-index` where the index is)",
                    m.name(),
                    q.collection
                )));
            }
            return Ok(bm25(qdrant));
        };
        let what = format!("the collection {}", q.collection);
        let wanted = Wanted {
            spec: &layout.spec,
            model: &layout.model,
            dims: layout.dims,
            what: &what,
        };
        Ok(match embedder(&wanted, cfg, previous, on_note)? {
            Some(e) => Retriever {
                mode: asked.unwrap_or(Mode::Hybrid),
                fusion: super::Fusion::default(),
                dense: None,
                remote: Some(Remote { qdrant }),
                remote_embedder: Some(e),
            },
            None => bm25(qdrant),
        })
    }

    /// The retriever `cfg` asks for over `index`; `on_note` hears why it
    /// searches with less than it could (no vectors, a model that does not
    /// load, Qdrant out of reach).
    pub fn open(
        index: &ShirabeIndex,
        cfg: &RetrieverConfig,
        on_note: &mut dyn FnMut(&str),
    ) -> Result<Retriever> {
        Self::open_reusing(index, cfg, None, on_note)
    }

    /// The retriever for `index` reopened after a commit (new chunks, new
    /// vectors): as [`Retriever::open`], but the embedding model of
    /// `self` is kept when the index still uses it, so a reload costs an
    /// index open, not a model load.
    pub fn reopen(
        &self,
        index: &ShirabeIndex,
        cfg: &RetrieverConfig,
        on_note: &mut dyn FnMut(&str),
    ) -> Result<Retriever> {
        Self::open_reusing(index, cfg, Some(self), on_note)
    }

    fn open_reusing(
        index: &ShirabeIndex,
        cfg: &RetrieverConfig,
        previous: Option<&Retriever>,
        on_note: &mut dyn FnMut(&str),
    ) -> Result<Retriever> {
        let asked = cfg.mode;
        if let Some(q) = &cfg.qdrant {
            // The collection mirrors this index once a sync has run.
            let synced = index
                .manifest
                .as_ref()
                .and_then(|m| m.qdrant.as_ref())
                .is_some_and(|k| k.collection == q.collection);
            if synced {
                match Self::remote(q, cfg, previous, on_note) {
                    Ok(r) => return Ok(r),
                    Err(e) if asked.is_none() => {
                        on_note(&format!("{e}; searching the local index"));
                    }
                    Err(e) => return Err(e),
                }
            } else {
                on_note(&format!(
                    "the Qdrant collection {} does not mirror this index yet (`shirabe migrate --to qdrant {}`); searching the local index",
                    q.collection, q.url
                ));
            }
        }
        if asked == Some(Mode::Bm25) {
            return Ok(Retriever::bm25());
        }
        let store = index.active_store()?.filter(|(_, st)| !st.is_empty());
        let Some((state, store)) = store else {
            if let Some(m) = asked {
                return Err(Error::Config(format!(
                    "{} search needs embeddings, and this index has none yet (run `shirabe embed-index`)",
                    m.name()
                )));
            }
            return Ok(Retriever::bm25());
        };
        let wanted = Wanted {
            spec: &state.spec,
            model: &state.model,
            dims: state.dims,
            what: "the index",
        };
        Ok(match embedder(&wanted, cfg, previous, on_note)? {
            Some(embedder) => Retriever {
                mode: asked.unwrap_or(Mode::Hybrid),
                fusion: super::Fusion::default(),
                dense: Some(Dense {
                    embedder,
                    vectors: store,
                }),
                remote: None,
                remote_embedder: None,
            },
            None => Retriever::bm25(),
        })
    }

    /// The embedder, when the mode uses one.
    pub fn embedder(&self) -> Option<&dyn TextEmbedder> {
        self.embedder_arc_ref().map(|e| e.as_ref())
    }

    fn embedder_arc_ref(&self) -> Option<&std::sync::Arc<dyn TextEmbedder>> {
        match &self.dense {
            Some(d) => Some(&d.embedder),
            None => self.remote_embedder.as_ref(),
        }
    }

    fn embedder_arc(&self) -> Option<std::sync::Arc<dyn TextEmbedder>> {
        self.embedder_arc_ref().cloned()
    }

    /// Embeds passage-side texts (for the citation checks and the
    /// extractive answer), when there is an embedder.
    pub fn check_embedder(&self) -> Option<Box<crate::answer::EmbedBox<'_>>> {
        self.embedder()
            .map(|e| Box::new(move |t: &[&str]| e.embed(t, false, 8)) as Box<_>)
    }

    /// The Qdrant collection searched instead of a local index, if any.
    pub fn remote_index(&self) -> Option<&Remote> {
        self.remote.as_ref()
    }

    /// The `limit` best passages for `query` (in the documents `doc_glob`
    /// matches, when given). A query without searchable words finds
    /// nothing rather than failing.
    pub fn retrieve(
        &self,
        index: Option<&ShirabeIndex>,
        query: &str,
        limit: usize,
        doc_glob: Option<String>,
    ) -> Result<Vec<Hit>> {
        let req = SearchRequest {
            doc_glob,
            fusion: self.fusion,
            ..SearchRequest::new(query, limit)
        };
        match self.search(index, req) {
            Ok(h) => Ok(h),
            Err(Error::Query(_)) => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    /// The embedder and vector index, when the mode uses them.
    pub fn dense(&self) -> Option<&Dense> {
        self.dense.as_ref()
    }

    /// Searches with every knob of a [`SearchRequest`] (its mode is this
    /// retriever's); a query without searchable words is an error.
    pub fn search(&self, index: Option<&ShirabeIndex>, req: SearchRequest) -> Result<Vec<Hit>> {
        let req = SearchRequest {
            mode: self.mode,
            ..req
        };
        self.search_as(index, &req, None)
    }

    /// Searches in `req.mode` (which this retriever must support), with
    /// the query's embedding when the caller has it already.
    pub fn search_as(
        &self,
        index: Option<&ShirabeIndex>,
        req: &SearchRequest,
        vector: Option<Vec<f32>>,
    ) -> Result<Vec<Hit>> {
        let vector = match (vector, self.embedder()) {
            (Some(v), _) => Some(v),
            (None, Some(e)) if req.mode != Mode::Bm25 => Some(
                e.embed(&[req.query.as_str()], true, 1)?
                    .pop()
                    .ok_or_else(|| Error::Model("the embedder returned no vector".into()))?,
            ),
            _ => None,
        };
        if let Some(r) = &self.remote {
            return r.search(req, vector);
        }
        let dense = match (&self.dense, vector) {
            (Some(d), Some(vector)) if req.mode != Mode::Bm25 => Some(DenseQuery {
                store: &d.vectors,
                vector,
            }),
            _ => None,
        };
        search(local(index)?, req, dense.as_ref())
    }

    /// How common `question`'s terms are where this retriever searches.
    pub fn term_rarity(&self, index: Option<&ShirabeIndex>, question: &str) -> Result<TermRarity> {
        match &self.remote {
            Some(r) => r.term_rarity(question),
            None => super::term_rarity(local(index)?, question),
        }
    }

    /// The doc keys `glob` selects where this retriever searches.
    pub fn matching_docs(&self, index: Option<&ShirabeIndex>, glob: &str) -> Result<Vec<String>> {
        match &self.remote {
            Some(r) => r.matching_docs(glob),
            None => super::matching_docs(local(index)?, glob),
        }
    }

    /// Every chunk of the documents `doc_keys`, in order.
    pub fn document_chunks(
        &self,
        index: Option<&ShirabeIndex>,
        doc_keys: &[String],
    ) -> Result<Vec<Hit>> {
        match &self.remote {
            Some(r) => r.document_chunks(doc_keys),
            None => super::document_chunks(local(index)?, doc_keys),
        }
    }
}

/// The embedding model vectors were made with.
struct Wanted<'a> {
    /// How it was loaded (a repo id or a directory).
    spec: &'a str,
    /// Its id.
    model: &'a str,
    /// Its width.
    dims: usize,
    /// What holds the vectors, for messages ("the index").
    what: &'a str,
}

/// The query embedder for vectors made by `w`: `previous`'s when it is
/// that model, else loaded (from `cfg`'s model if given). `None`, after a
/// note, when it does not load or is another model and no mode was asked
/// for (BM25 then); an error when one was.
fn embedder(
    w: &Wanted<'_>,
    cfg: &RetrieverConfig,
    previous: Option<&Retriever>,
    on_note: &mut dyn FnMut(&str),
) -> Result<Option<std::sync::Arc<dyn TextEmbedder>>> {
    let spec = cfg.embed_model.clone().unwrap_or(w.spec.to_string());
    let kept = previous
        .and_then(|p| p.embedder_arc())
        .filter(|e| e.id() == w.model && e.dims() == w.dims);
    let loaded = match kept {
        Some(e) => Ok(e),
        None => crate::models::embed::load(
            &spec,
            cfg.embed_dtype,
            &crate::models::default_device(),
            cfg.dims.or(Some(w.dims)),
        )
        .map(std::sync::Arc::from),
    };
    match loaded {
        Ok(e) if e.id() == w.model => Ok(Some(e)),
        Ok(e) => {
            let why = format!(
                "{} was embedded with {}, but {spec} is {}",
                w.what,
                w.model,
                e.id()
            );
            if cfg.mode.is_some() {
                return Err(Error::Config(why));
            }
            on_note(&format!("{why}; searching with BM25 only"));
            Ok(None)
        }
        Err(e) if cfg.mode.is_none() => {
            on_note(&format!(
                "loading the embedding model {spec}: {e}; searching with BM25 only"
            ));
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// The local index a local search needs.
fn local(index: Option<&ShirabeIndex>) -> Result<&ShirabeIndex> {
    index.ok_or_else(|| Error::Config("no local index to search (and no Qdrant collection)".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asked_for_dense_without_vectors_is_an_error_and_none_falls_back() {
        let dir = tempfile::tempdir().unwrap();
        let index = ShirabeIndex::open_or_create(dir.path()).unwrap();
        let mut notes = Vec::new();
        let r = Retriever::open(&index, &RetrieverConfig::default(), &mut |n| {
            notes.push(n.to_string())
        })
        .unwrap();
        assert_eq!(r.mode, Mode::Bm25);
        assert!(r.embedder().is_none());
        let cfg = RetrieverConfig {
            mode: Some(Mode::Hybrid),
            ..RetrieverConfig::default()
        };
        let e = Retriever::open(&index, &cfg, &mut |_| {}).err().unwrap();
        assert!(e.to_string().contains("embed-index"), "{e}");
        // A query with no searchable words finds nothing.
        assert!(r.retrieve(Some(&index), "!!!", 5, None).unwrap().is_empty());
    }
}
