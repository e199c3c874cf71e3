//! The retrieval policy every front end shares: which mode to search in,
//! with which embedder and vector index (the local store, or Qdrant when it
//! mirrors that store), and when to fall back to BM25.
//!
//! Asked for no mode, a [`Retriever`] searches hybrid when the index has
//! vectors and their model loads, else BM25, and says why in a note;
//! asked for dense or hybrid, anything missing is an error. Notes go to
//! the caller, which decides whether to print them.

use candle_core::DType;

use super::{search, DenseQuery, Hit, Mode, SearchRequest, VectorIndex};
use crate::index::qdrant::{QdrantConfig, QdrantIndex};
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
    pub embed_dtype: DType,
    /// Matryoshka dimensions (Qwen3-Embedding).
    pub dims: Option<usize>,
    /// The Qdrant collection the index uses, if any.
    pub qdrant: Option<QdrantConfig>,
}

impl Default for RetrieverConfig {
    fn default() -> Self {
        RetrieverConfig {
            mode: None,
            embed_model: None,
            embed_dtype: DType::F32,
            dims: None,
            qdrant: None,
        }
    }
}

/// The query embedder and the vector index it searches.
pub struct Dense {
    /// Embeds queries (and, for the citation checks, sentences); shared
    /// with the retriever a reopened index gets ([`Retriever::reopen`]).
    pub embedder: std::sync::Arc<dyn TextEmbedder>,
    /// Finds the nearest live chunks.
    pub vectors: Box<dyn VectorIndex>,
}

/// Searches one index in one mode.
pub struct Retriever {
    /// The mode it searches in.
    pub mode: Mode,
    dense: Option<Dense>,
}

impl Retriever {
    /// BM25 only.
    pub fn bm25() -> Retriever {
        Retriever {
            mode: Mode::Bm25,
            dense: None,
        }
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
        let spec = cfg.embed_model.clone().unwrap_or(state.spec.clone());
        // Qdrant only when it mirrors this very store (same model, synced).
        let active_key = index
            .manifest
            .as_ref()
            .and_then(|m| m.active_vectors.clone())
            .unwrap_or_default();
        let synced = index
            .manifest
            .as_ref()
            .and_then(|m| m.qdrant.as_ref())
            .is_some_and(|q| q.store == active_key);
        let vectors: Box<dyn VectorIndex> = match &cfg.qdrant {
            Some(q) if synced => match QdrantIndex::open_existing(q, state.dims) {
                Ok(q) => Box::new(q),
                Err(e) if asked.is_none() => {
                    on_note(&format!("{e}; searching the local vector store"));
                    Box::new(store)
                }
                Err(e) => return Err(e),
            },
            Some(q) => {
                on_note(&format!(
                    "the Qdrant collection {} does not mirror this index's vectors yet (`shirabe migrate --to qdrant {}`); searching the local vector store",
                    q.collection, q.url
                ));
                Box::new(store)
            }
            None => Box::new(store),
        };
        let kept = previous
            .and_then(|p| p.dense.as_ref())
            .filter(|d| d.embedder.id() == state.model && d.embedder.dims() == state.dims)
            .map(|d| d.embedder.clone());
        let loaded = match kept {
            Some(e) => Ok(e),
            None => crate::models::embed::load(
                &spec,
                cfg.embed_dtype,
                &crate::models::default_device(),
                cfg.dims.or(Some(state.dims)),
            )
            .map(std::sync::Arc::from),
        };
        match loaded {
            Ok(embedder) if embedder.id() == state.model => Ok(Retriever {
                mode: asked.unwrap_or(Mode::Hybrid),
                dense: Some(Dense { embedder, vectors }),
            }),
            Ok(e) => {
                let why = format!(
                    "the index was embedded with {}, but {spec} is {}",
                    state.model,
                    e.id()
                );
                if asked.is_some() {
                    return Err(Error::Config(why));
                }
                on_note(&format!("{why}; searching with BM25 only"));
                Ok(Retriever::bm25())
            }
            Err(e) if asked.is_none() => {
                on_note(&format!(
                    "loading the embedding model {spec}: {e}; searching with BM25 only"
                ));
                Ok(Retriever::bm25())
            }
            Err(e) => Err(e),
        }
    }

    /// The embedder, when the mode uses one.
    pub fn embedder(&self) -> Option<&dyn TextEmbedder> {
        self.dense.as_ref().map(|d| d.embedder.as_ref())
    }

    /// Embeds passage-side texts (for the citation checks and the
    /// extractive answer), when there is an embedder.
    pub fn check_embedder(&self) -> Option<Box<crate::answer::EmbedBox<'_>>> {
        self.embedder()
            .map(|e| Box::new(move |t: &[&str]| e.embed(t, false, 8)) as Box<_>)
    }

    /// The `limit` best passages for `query` (in the documents `doc_glob`
    /// matches, when given). A query without searchable words finds
    /// nothing rather than failing.
    pub fn retrieve(
        &self,
        index: &ShirabeIndex,
        query: &str,
        limit: usize,
        doc_glob: Option<String>,
    ) -> Result<Vec<Hit>> {
        let req = SearchRequest {
            doc_glob,
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
    pub fn search(&self, index: &ShirabeIndex, req: SearchRequest) -> Result<Vec<Hit>> {
        let req = SearchRequest {
            mode: self.mode,
            ..req
        };
        let dense = match &self.dense {
            Some(d) if req.mode != Mode::Bm25 => Some(DenseQuery {
                store: d.vectors.as_ref(),
                vector: d
                    .embedder
                    .embed(&[req.query.as_str()], true, 1)?
                    .pop()
                    .ok_or_else(|| Error::Model("the embedder returned no vector".into()))?,
            }),
            _ => None,
        };
        search(index, &req, dense.as_ref())
    }
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
        assert!(r.retrieve(&index, "!!!", 5, None).unwrap().is_empty());
    }
}
