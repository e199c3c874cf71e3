//! Qwen3-Embedding: text -> unit vector.
//!
//! The recipe of the Qwen3-Embedding model card: queries (only queries) are
//! wrapped as `Instruct: {task}\nQuery:{text}`; texts are tokenized with the
//! model's tokenizer (which appends `<|endoftext|>`), sorted by length and
//! batched with left padding and a real attention mask; the last token's
//! hidden state is the embedding, L2-normalised, optionally cut to its first
//! `dims` values (Matryoshka) and normalised again. Because padding is
//! masked and positions count real tokens only, a text's vector is the same
//! alone or in a batch.
//!
//! [`TextEmbedder`] is the seam the index and search use: this Qwen model
//! and the sentence-transformers encoders of [`super::sentence`] both
//! implement it, and [`load`] picks one by the model's `config.json`.

use candle_core::{DType, Device};

use super::qwen3::{l2_normalize, left_padded, Cache, Model};
use crate::{Error, Result};

/// The instruction for search queries.
pub const DEFAULT_TASK: &str =
    "Given a question, retrieve passages from the documents that answer it";

/// A model that turns texts into unit vectors.
pub trait TextEmbedder: Send + Sync {
    /// Identifies the model and its settings: vectors of different ids are
    /// never mixed, and the embedding cache is keyed by it.
    fn id(&self) -> &str;
    /// Width of the vectors.
    fn dims(&self) -> usize;
    /// Embeds passages (`query == false`) or search queries, `batch` texts
    /// per forward pass.
    fn embed(&self, texts: &[&str], query: bool, batch: usize) -> Result<Vec<Vec<f32>>>;
}

/// Texts per forward pass when embedding for the index.
pub const INDEX_BATCH: usize = 8;

struct Named<T> {
    id: String,
    dims: usize,
    inner: T,
}

impl TextEmbedder for Named<Embedder> {
    fn id(&self) -> &str {
        &self.id
    }
    fn dims(&self) -> usize {
        self.dims
    }
    fn embed(&self, texts: &[&str], query: bool, batch: usize) -> Result<Vec<Vec<f32>>> {
        self.inner.embed(texts, query, batch)
    }
}

impl TextEmbedder for Named<super::sentence::SentenceEncoder> {
    fn id(&self) -> &str {
        &self.id
    }
    fn dims(&self) -> usize {
        self.dims
    }
    fn embed(&self, texts: &[&str], query: bool, batch: usize) -> Result<Vec<Vec<f32>>> {
        self.inner.embed(texts, query, batch)
    }
}

/// A Qwen embedder under a given id (for models built in memory, such as
/// the random-weight ones of the benchmarks).
pub fn named(inner: Embedder, id: String) -> Box<dyn TextEmbedder> {
    let dims = inner
        .dims
        .unwrap_or_else(|| inner.model().config().hidden_size);
    Box::new(Named { id, dims, inner })
}

/// Loads an embedding model: a Qwen3-Embedding checkpoint, a
/// sentence-transformers BERT / XLM-RoBERTa model, or (a spec that is a
/// URL) an OpenAI-compatible embeddings endpoint
/// ([`super::embed_endpoint`]). `dims` keeps only the
/// first values (Qwen3-Embedding's Matryoshka dimensions). `auto`
/// weights are f32 for Qwen3-Embedding.
pub fn load(
    spec: &str,
    dtype: super::EmbedDtype,
    device: &Device,
    dims: Option<usize>,
) -> Result<Box<dyn TextEmbedder>> {
    if super::embed_endpoint::is_endpoint(spec) {
        let e = super::embed_endpoint::EndpointEmbedder::connect(spec)?;
        if dims.is_some_and(|d| d != e.dims()) {
            return Err(Error::Model(format!(
                "{spec} gives {}-value vectors, not {}",
                e.dims(),
                dims.unwrap_or_default()
            )));
        }
        return Ok(Box::new(e));
    }
    let files = super::find_or_pull(spec)?;
    let name = if std::path::Path::new(spec).exists() {
        files
            .dir
            .file_name()
            .map_or(spec.to_string(), |n| n.to_string_lossy().into_owned())
    } else {
        spec.to_string()
    };
    let fingerprint = files.fingerprint()?;
    if super::sentence::is_sentence_model(&files.dir) {
        let inner = super::sentence::SentenceEncoder::load(&files, dtype, device)?;
        if dims.is_some_and(|d| d != inner.dims()) {
            return Err(Error::Model(format!(
                "{spec}: --dims applies to Qwen3-Embedding models only"
            )));
        }
        return Ok(Box::new(Named {
            id: format!("{name}@{fingerprint}"),
            dims: inner.dims(),
            inner,
        }));
    }
    let tokenizer = files.load_tokenizer()?;
    let dtype = dtype.fixed().unwrap_or(DType::F32);
    let mut inner = Embedder::new(files.load(dtype, device)?, tokenizer);
    let full = inner.model().config().hidden_size;
    if let Some(d) = dims {
        if d == 0 || d > full {
            return Err(Error::Model(format!(
                "{spec}: --dims must be between 1 and {full}"
            )));
        }
    }
    inner.dims = dims;
    let d = dims.unwrap_or(full);
    let id = if d == full {
        format!("{name}@{fingerprint}")
    } else {
        format!("{name}@{fingerprint}/{d}")
    };
    Ok(Box::new(Named { id, dims: d, inner }))
}

/// An embedding model with its tokenizer.
pub struct Embedder {
    model: Model,
    tokenizer: tokenizers::Tokenizer,
    /// The task instruction put before queries.
    pub task: String,
    /// Longest input in tokens (longer texts are cut).
    pub max_tokens: usize,
    /// Keep only the first `dims` values (Matryoshka); `None` keeps all.
    pub dims: Option<usize>,
}

impl Embedder {
    /// Loads a model directory or cached repo id.
    pub fn load(spec: &str, dtype: DType, device: &Device) -> Result<Embedder> {
        let files = super::find_or_pull(spec)?;
        let tokenizer = files.load_tokenizer()?;
        Ok(Embedder::new(files.load(dtype, device)?, tokenizer))
    }

    /// Wraps a loaded model and tokenizer.
    pub fn new(model: Model, tokenizer: tokenizers::Tokenizer) -> Embedder {
        Embedder {
            model,
            tokenizer,
            task: DEFAULT_TASK.into(),
            max_tokens: 8192,
            dims: None,
        }
    }

    /// Embeds passages (`query == false`) or queries.
    pub fn embed(&self, texts: &[&str], query: bool, batch: usize) -> Result<Vec<Vec<f32>>> {
        let mut ids = Vec::with_capacity(texts.len());
        for t in texts {
            let text = if query {
                format!("Instruct: {}\nQuery:{t}", self.task)
            } else {
                t.to_string()
            };
            let enc = self
                .tokenizer
                .encode(text, true)
                .map_err(Error::tokenizer_lib)?;
            let mut v = enc.get_ids().to_vec();
            if v.len() > self.max_tokens {
                // Keep the final (end-of-text) token the pooling reads.
                let last = *v.last().expect("non-empty");
                v.truncate(self.max_tokens.saturating_sub(1));
                v.push(last);
            }
            if v.is_empty() {
                return Err(Error::Model("cannot embed an empty text".into()));
            }
            ids.push(v);
        }
        self.embed_ids(&ids, batch)
    }

    /// Embeds token-id sequences, in length-sorted batches of `batch`.
    pub fn embed_ids(&self, ids: &[Vec<u32>], batch: usize) -> Result<Vec<Vec<f32>>> {
        let mut order: Vec<usize> = (0..ids.len()).collect();
        order.sort_by_key(|&i| ids[i].len());
        let mut out = vec![Vec::new(); ids.len()];
        let mut cache = Cache::new(&self.model, self.model.float_cache_dtype());
        for group in order.chunks(batch.max(1)) {
            let (rows, valid) = left_padded(ids, group);
            cache.reset();
            cache.reserve(rows.first().map_or(0, Vec::len));
            let hidden = self.model.forward(&rows, &valid, &mut cache)?;
            let mut pooled = Model::last_hidden(&hidden)?;
            if let Some(d) = self.dims {
                let n = pooled.dim(1).map_err(Error::model_lib)?;
                pooled = pooled.narrow(1, 0, d.min(n)).map_err(Error::model_lib)?;
            }
            let vecs: Vec<Vec<f32>> = l2_normalize(&pooled)?.to_vec2().map_err(Error::model_lib)?;
            for (&i, v) in group.iter().zip(vecs) {
                out[i] = v;
            }
        }
        Ok(out)
    }

    /// The model.
    pub fn model(&self) -> &Model {
        &self.model
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::testing::{tiny_config, write_tiny};
    use crate::models::ModelFiles;

    fn tiny_embedder() -> Embedder {
        let dir = tempfile::tempdir().unwrap();
        write_tiny(dir.path(), &tiny_config("qwen3", None), false).unwrap();
        let model = ModelFiles::from_dir(dir.path())
            .unwrap()
            .load(DType::F32, &Device::Cpu)
            .unwrap();
        let tokenizer = crate::models::testing::tiny_tokenizer(64);
        Embedder::new(model, tokenizer)
    }

    #[test]
    fn batch_equals_single() {
        let e = tiny_embedder();
        let ids: Vec<Vec<u32>> = vec![
            vec![5, 6, 7],
            vec![9; 11],
            vec![3, 4],
            vec![1, 2, 3, 4, 5, 6, 7],
        ];
        let batched = e.embed_ids(&ids, 8).unwrap();
        for (i, row) in ids.iter().enumerate() {
            let single = e.embed_ids(std::slice::from_ref(row), 1).unwrap();
            let diff = single[0]
                .iter()
                .zip(&batched[i])
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(diff <= 1e-4, "row {i}: max abs diff {diff}");
        }
        let norm: f32 = batched[0].iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5);
    }

    #[test]
    fn queries_get_the_instruction_and_mrl_truncates() {
        let mut e = tiny_embedder();
        let p = e.embed(&["w5 w6 w7"], false, 4).unwrap();
        let q = e.embed(&["w5 w6 w7"], true, 4).unwrap();
        assert_ne!(p, q, "the query instruction changes the vector");
        e.dims = Some(16);
        let short = e.embed(&["w5 w6 w7"], false, 4).unwrap();
        assert_eq!(short[0].len(), 16);
        let norm: f32 = short[0].iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5);
    }
}
