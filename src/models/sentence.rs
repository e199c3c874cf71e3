//! Sentence-transformers encoders (BERT and XLM-RoBERTa families:
//! all-MiniLM, bge, multilingual-e5, …) as embedding models.
//!
//! The encoder is candle-transformers' BERT or XLM-RoBERTa; this file adds
//! what sentence-transformers adds around it, read from the model
//! directory: the pooling of `1_Pooling/config.json` (CLS, mean, max or
//! mean-sqrt-len over real tokens), the input length of
//! `sentence_bert_config.json`, and the query/passage prompts of
//! `config_sentence_transformers.json` (e5's `query: ` / `passage: `).
//! Vectors are always L2-normalised: the vector store ranks by dot product.

use std::path::Path;

use candle_core::{DType, Device, Tensor, D};
use candle_nn::VarBuilder;
use candle_transformers::models::{bert, xlm_roberta};
use serde::Deserialize;

use super::{EmbedDtype, ModelFiles};
use crate::{Error, Result};

/// How token vectors become one sentence vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    /// The first token's vector.
    Cls,
    /// The mean over real tokens.
    Mean,
    /// The element-wise maximum over real tokens.
    Max,
    /// The sum over real tokens divided by √(tokens).
    MeanSqrtLen,
}

#[derive(Debug, Default, Deserialize)]
struct PoolingConfig {
    #[serde(default)]
    pooling_mode_cls_token: bool,
    #[serde(default)]
    pooling_mode_mean_tokens: bool,
    #[serde(default)]
    pooling_mode_max_tokens: bool,
    #[serde(default)]
    pooling_mode_mean_sqrt_len_tokens: bool,
}

impl Pooling {
    /// Reads `1_Pooling/config.json` (mean pooling when there is none, as
    /// sentence-transformers assumes for a bare Hugging Face model).
    pub fn from_dir(dir: &Path) -> Result<Pooling> {
        let path = dir.join("1_Pooling").join("config.json");
        let cfg: PoolingConfig = match std::fs::read_to_string(&path) {
            Ok(text) => {
                serde_json::from_str(&text).map_err(Error::model(format!("{}", path.display())))?
            }
            Err(_) => return Ok(Pooling::Mean),
        };
        let modes = [
            (cfg.pooling_mode_cls_token, Pooling::Cls),
            (cfg.pooling_mode_mean_tokens, Pooling::Mean),
            (cfg.pooling_mode_max_tokens, Pooling::Max),
            (cfg.pooling_mode_mean_sqrt_len_tokens, Pooling::MeanSqrtLen),
        ];
        let on: Vec<Pooling> = modes.iter().filter(|m| m.0).map(|m| m.1).collect();
        match on.as_slice() {
            [one] => Ok(*one),
            [] => Err(Error::Model(format!(
                "{}: no pooling mode is set",
                path.display()
            ))),
            _ => Err(Error::Model(format!(
                "{}: several pooling modes at once are not supported",
                path.display()
            ))),
        }
    }
}

enum Encoder {
    /// The project's own encoder on its CPU kernels ([`super::bert`]).
    Own(super::bert::Bert),
    /// candle-transformers' (on a GPU).
    Bert(bert::BertModel),
    XlmRoberta(xlm_roberta::XLMRobertaModel),
}

/// A sentence-transformers embedding model.
pub struct SentenceEncoder {
    encoder: Encoder,
    tokenizer: tokenizers::Tokenizer,
    pooling: Pooling,
    dims: usize,
    /// Longest input in tokens.
    pub max_tokens: usize,
    /// Put before queries.
    pub query_prefix: String,
    /// Put before passages.
    pub passage_prefix: String,
    device: Device,
}

#[derive(Deserialize)]
struct Head {
    model_type: Option<String>,
    hidden_size: usize,
    #[serde(default = "default_max_pos")]
    max_position_embeddings: usize,
    #[serde(default)]
    pad_token_id: usize,
}

fn default_max_pos() -> usize {
    512
}

/// True if `config.json` in `dir` describes an encoder this module runs.
pub fn is_sentence_model(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("config.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<Head>(&t).ok())
        .and_then(|h| h.model_type)
        .is_some_and(|t| matches!(t.as_str(), "bert" | "xlm-roberta"))
}

fn read_json(path: &Path) -> Option<serde_json::Value> {
    serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
}

/// Whether bf16 products beat f32 ones here: only with AVX512-BF16's
/// dot products (elsewhere bf16 weights are widened on every load).
fn bf16_products_pay() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        super::kernels::has_avx512bf16()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

impl SentenceEncoder {
    /// Loads a model directory. On the CPU the project's own encoder runs
    /// it ([`super::bert`]), its products' weights in f32 or bf16 (f16
    /// runs as f32). On a GPU candle-transformers' encoders run
    /// it, in f32: their BERT fills its attention mask with `f32::MIN`,
    /// which is -inf (and NaN vectors) in bf16/f16, and their XLM-RoBERTa
    /// rejects those types.
    /// `auto` takes bf16 where the project's encoder runs on a CPU with
    /// AVX512-BF16, f32 elsewhere.
    pub fn load(
        files: &ModelFiles,
        wanted: EmbedDtype,
        device: &Device,
    ) -> Result<SentenceEncoder> {
        let own = super::bert::runs_on(device) && std::env::var_os("SHIRABE_CANDLE_BERT").is_none();
        let dtype = wanted.fixed().unwrap_or(if own && bf16_products_pay() {
            DType::BF16
        } else {
            DType::F32
        });
        Self::load_as(files, dtype, device, own)
    }

    /// [`SentenceEncoder::load`], on the project's encoder (`own`) or
    /// candle-transformers'.
    fn load_as(
        files: &ModelFiles,
        wanted: DType,
        device: &Device,
        own: bool,
    ) -> Result<SentenceEncoder> {
        let dtype = DType::F32;
        let dir = &files.dir;
        let err = |e: candle_core::Error| Error::model(format!("{}", dir.display()))(e);
        let text =
            std::fs::read_to_string(&files.config).map_err(|e| Error::io(&files.config, e))?;
        let head: Head = serde_json::from_str(&text)
            .map_err(Error::model(format!("{}", files.config.display())))?;
        // SAFETY: the weights are memory-mapped read-only and not modified
        // while loaded.
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&files.weights, dtype, device) }
            .map_err(err)?;
        let encoder = match head.model_type.as_deref() {
            Some("bert" | "xlm-roberta") if own => {
                let cfg: super::bert::BertConfig = serde_json::from_str(&text)
                    .map_err(Error::model(format!("{}", files.config.display())))?;
                let products = if wanted == DType::BF16 { DType::BF16 } else { DType::F32 };
                Encoder::Own(super::bert::Bert::load(vb, &cfg, products)?)
            }
            Some("bert") => {
                let cfg: bert::Config = serde_json::from_str(&text)
                    .map_err(Error::model(format!("{}", files.config.display())))?;
                Encoder::Bert(bert::BertModel::load(vb, &cfg).map_err(err)?)
            }
            Some("xlm-roberta") => {
                let cfg: xlm_roberta::Config = serde_json::from_str(&text)
                    .map_err(Error::model(format!("{}", files.config.display())))?;
                let vb = if vb.contains_tensor("roberta.embeddings.word_embeddings.weight") {
                    vb.pp("roberta")
                } else {
                    vb
                };
                Encoder::XlmRoberta(xlm_roberta::XLMRobertaModel::new(&cfg, vb).map_err(err)?)
            }
            other => {
                return Err(Error::Model(format!(
                    "{}: model_type {other:?} is not a sentence encoder shirabe runs (bert, xlm-roberta)",
                    dir.display()
                )))
            }
        };
        let mut tokenizer = files.load_tokenizer()?;
        tokenizer.with_padding(None);
        let _ = tokenizer.with_truncation(None);
        // XLM-RoBERTa numbers positions from pad_token_id + 1.
        let positions = if head.model_type.as_deref() == Some("xlm-roberta") {
            head.max_position_embeddings
                .saturating_sub(head.pad_token_id + 1)
        } else {
            head.max_position_embeddings
        };
        let max_seq = read_json(&dir.join("sentence_bert_config.json"))
            .and_then(|v| v["max_seq_length"].as_u64())
            .map_or(positions, |n| n as usize)
            .min(positions)
            .max(2);
        let prompts = read_json(&dir.join("config_sentence_transformers.json"))
            .map(|v| v["prompts"].clone())
            .unwrap_or_default();
        let prompt = |name: &str| prompts[name].as_str().unwrap_or_default().to_string();
        Ok(SentenceEncoder {
            encoder,
            tokenizer,
            pooling: Pooling::from_dir(dir)?,
            dims: head.hidden_size,
            max_tokens: max_seq,
            query_prefix: prompt("query"),
            passage_prefix: Some(prompt("passage"))
                .filter(|p| !p.is_empty())
                .unwrap_or_else(|| prompt("document")),
            device: device.clone(),
        })
    }

    /// Width of the vectors.
    pub fn dims(&self) -> usize {
        self.dims
    }

    /// The pooling in use.
    pub fn pooling(&self) -> Pooling {
        self.pooling
    }

    /// Embeds passages (`query == false`) or queries, `batch` at a time.
    pub fn embed(&self, texts: &[&str], query: bool, batch: usize) -> Result<Vec<Vec<f32>>> {
        let prefix = if query {
            &self.query_prefix
        } else {
            &self.passage_prefix
        };
        let mut ids = Vec::with_capacity(texts.len());
        for t in texts {
            let enc = self
                .tokenizer
                .encode(format!("{prefix}{t}"), true)
                .map_err(Error::tokenizer_lib)?;
            let mut v = enc.get_ids().to_vec();
            let max = self.max_tokens.max(2);
            if v.len() > max {
                // Keep the closing [SEP] / </s>.
                let last = *v.last().expect("non-empty");
                v.truncate(max - 1);
                v.push(last);
            }
            ids.push(v);
        }
        let mut order: Vec<usize> = (0..ids.len()).collect();
        order.sort_by_key(|&i| ids[i].len());
        let mut out = vec![Vec::new(); ids.len()];
        for group in order.chunks(batch.max(1)) {
            let vecs = self.embed_group(group.iter().map(|&i| ids[i].as_slice()))?;
            for (&i, v) in group.iter().zip(vecs) {
                out[i] = v;
            }
        }
        Ok(out)
    }

    fn embed_group<'a>(&self, rows: impl Iterator<Item = &'a [u32]>) -> Result<Vec<Vec<f32>>> {
        let err = |e: candle_core::Error| Error::model_lib(e);
        let rows: Vec<&[u32]> = rows.collect();
        let width = rows.iter().map(|r| r.len()).max().unwrap_or(0).max(1);
        let (mut ids, mut mask) = (Vec::new(), Vec::new());
        for r in &rows {
            ids.extend_from_slice(r);
            ids.extend(std::iter::repeat_n(0u32, width - r.len()));
            mask.extend(std::iter::repeat_n(1u32, r.len()));
            mask.extend(std::iter::repeat_n(0u32, width - r.len()));
        }
        let shape = (rows.len(), width);
        if let Encoder::Own(m) = &self.encoder {
            // The project's encoder reads the token rows as they are.
            let lens: Vec<usize> = rows.iter().map(|r| r.len()).collect();
            let h = m.forward(&ids, &lens, width)?;
            let hidden =
                Tensor::from_vec(h, (rows.len(), width, m.hidden()), &self.device).map_err(err)?;
            let mask = Tensor::from_vec(mask, shape, &self.device).map_err(err)?;
            return self.pool(hidden, &mask);
        }
        let ids = Tensor::from_vec(ids, shape, &self.device).map_err(err)?;
        let mask = Tensor::from_vec(mask, shape, &self.device).map_err(err)?;
        let types = ids.zeros_like().map_err(err)?;
        let hidden = match &self.encoder {
            Encoder::Own(_) => unreachable!("run above"),
            Encoder::Bert(m) => m.forward(&ids, &types, Some(&mask)),
            Encoder::XlmRoberta(m) => m.forward(&ids, &mask, &types, None, None, None),
        }
        .map_err(err)?
        .to_dtype(DType::F32)
        .map_err(err)?;
        self.pool(hidden, &mask)
    }

    /// The pooled, L2-normalised vectors of `hidden` (batch, tokens,
    /// width) over the real tokens `mask` marks.
    fn pool(&self, hidden: Tensor, mask: &Tensor) -> Result<Vec<Vec<f32>>> {
        let err = |e: candle_core::Error| Error::model_lib(e);
        let m = mask
            .to_dtype(DType::F32)
            .and_then(|m| m.unsqueeze(2))
            .map_err(err)?;
        let pooled = match self.pooling {
            Pooling::Cls => hidden.narrow(1, 0, 1).and_then(|h| h.squeeze(1)),
            Pooling::Mean | Pooling::MeanSqrtLen => {
                let sum = hidden.broadcast_mul(&m).and_then(|h| h.sum(1));
                let count = m.sum(1);
                match (sum, count) {
                    (Ok(s), Ok(c)) => {
                        let c = c.clamp(1e-9, f64::MAX).map_err(err)?;
                        let c = if self.pooling == Pooling::MeanSqrtLen {
                            c.sqrt().map_err(err)?
                        } else {
                            c
                        };
                        s.broadcast_div(&c)
                    }
                    (Err(e), _) | (_, Err(e)) => Err(e),
                }
            }
            Pooling::Max => {
                // Padding gets a large negative value so it never wins.
                let neg = ((m.ones_like().map_err(err)? - &m).map_err(err)? * -1e9).map_err(err)?;
                hidden.broadcast_add(&neg).and_then(|h| h.max(1))
            }
        }
        .map_err(err)?;
        let norm = pooled
            .sqr()
            .and_then(|s| s.sum_keepdim(D::Minus1))
            .and_then(|s| s.sqrt())
            .and_then(|s| s.clamp(1e-12, f64::MAX))
            .map_err(err)?;
        pooled
            .broadcast_div(&norm)
            .and_then(|t| t.to_vec2())
            .map_err(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(pooling: &str) -> (tempfile::TempDir, SentenceEncoder) {
        let dir = tempfile::tempdir().unwrap();
        crate::models::testing::write_tiny_bert(dir.path(), pooling);
        let files = ModelFiles::from_dir(dir.path()).unwrap();
        let enc = SentenceEncoder::load(&files, EmbedDtype::F32, &Device::Cpu).unwrap();
        (dir, enc)
    }

    #[test]
    fn pooling_is_read_and_batches_equal_singles() {
        for (name, want) in [
            ("mean", Pooling::Mean),
            ("cls", Pooling::Cls),
            ("max", Pooling::Max),
            ("sqrt", Pooling::MeanSqrtLen),
        ] {
            let (_dir, enc) = load(name);
            assert_eq!(enc.pooling(), want);
            assert_eq!(enc.dims(), 32);
            let texts = ["w5 w6 w7", "w9 w10", "w11 w12 w13 w14 w15 w16 w17"];
            let batched = enc.embed(&texts, false, 8).unwrap();
            for (i, t) in texts.iter().enumerate() {
                let single = enc.embed(&[t], false, 1).unwrap();
                let diff = single[0]
                    .iter()
                    .zip(&batched[i])
                    .map(|(a, b)| (a - b).abs())
                    .fold(0f32, f32::max);
                assert!(diff < 1e-4, "{name}, text {i}: {diff}");
                let norm: f32 = batched[i].iter().map(|x| x * x).sum::<f32>().sqrt();
                assert!((norm - 1.0).abs() < 1e-5);
            }
            assert_ne!(batched[0], batched[1]);
        }
    }

    #[test]
    fn the_own_encoder_matches_candle_transformers() {
        for pooling in ["mean", "cls", "max"] {
            let dir = tempfile::tempdir().unwrap();
            crate::models::testing::write_tiny_bert(dir.path(), pooling);
            let files = ModelFiles::from_dir(dir.path()).unwrap();
            let own = SentenceEncoder::load_as(&files, DType::F32, &Device::Cpu, true).unwrap();
            let theirs = SentenceEncoder::load_as(&files, DType::F32, &Device::Cpu, false).unwrap();
            assert!(matches!(own.encoder, Encoder::Own(_)));
            assert!(matches!(theirs.encoder, Encoder::Bert(_)));
            let texts = [
                "w5 w6 w7",
                "w9",
                "w11 w12 w13 w14 w15 w16 w17 w18 w19 w20 w21",
            ];
            let a = own.embed(&texts, false, 8).unwrap();
            let b = theirs.embed(&texts, false, 8).unwrap();
            for (x, y) in a.iter().zip(&b) {
                let diff = x
                    .iter()
                    .zip(y)
                    .map(|(p, q)| (p - q).abs())
                    .fold(0f32, f32::max);
                assert!(diff < 1e-5, "{pooling}: {diff}");
            }
            // bf16 products: close, not equal.
            let half = SentenceEncoder::load_as(&files, DType::BF16, &Device::Cpu, true).unwrap();
            for (x, y) in half.embed(&texts, false, 8).unwrap().iter().zip(&b) {
                let cos: f32 = x.iter().zip(y).map(|(p, q)| p * q).sum();
                assert!(cos > 0.99, "{pooling}: cosine {cos}");
            }
        }
    }

    #[test]
    fn mean_pooling_is_the_masked_mean() {
        // With mean pooling, the vector of a text is the normalised mean of
        // its token vectors: check against the encoder output directly.
        let dir = tempfile::tempdir().unwrap();
        crate::models::testing::write_tiny_bert(dir.path(), "mean");
        let files = ModelFiles::from_dir(dir.path()).unwrap();
        let enc = SentenceEncoder::load_as(&files, DType::F32, &Device::Cpu, false).unwrap();
        let v = enc.embed(&["w5 w6"], false, 1).unwrap();
        let Encoder::Bert(m) = &enc.encoder else {
            unreachable!()
        };
        let tok = enc.tokenizer.encode("w5 w6", true).unwrap();
        assert_eq!(tok.get_ids().len(), 6, "[CLS] w ##5 w ##6 [SEP]");
        let ids = Tensor::new(tok.get_ids(), &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let h = m.forward(&ids, &ids.zeros_like().unwrap(), None).unwrap();
        let mean: Vec<f32> = h.mean(1).unwrap().squeeze(0).unwrap().to_vec1().unwrap();
        let n = mean.iter().map(|x| x * x).sum::<f32>().sqrt();
        for (a, b) in mean.iter().zip(&v[0]) {
            assert!((a / n - b).abs() < 1e-5);
        }
    }

    #[test]
    fn prompts_come_from_the_config() {
        let dir = tempfile::tempdir().unwrap();
        crate::models::testing::write_tiny_bert(dir.path(), "mean");
        std::fs::write(
            dir.path().join("config_sentence_transformers.json"),
            r#"{"prompts": {"query": "w20 "}}"#,
        )
        .unwrap();
        let files = ModelFiles::from_dir(dir.path()).unwrap();
        let enc = SentenceEncoder::load(&files, EmbedDtype::F32, &Device::Cpu).unwrap();
        assert_eq!(enc.query_prefix, "w20 ");
        let q = enc.embed(&["w5"], true, 1).unwrap();
        assert_eq!(q, enc.embed(&["w20 w5"], false, 1).unwrap());
        assert_ne!(q, enc.embed(&["w5"], false, 1).unwrap());
    }
}
