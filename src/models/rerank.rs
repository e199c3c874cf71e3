//! Qwen3-Reranker: how well a passage answers a query, as a probability.
//!
//! The recipe of the Qwen3-Reranker model card: the pair is written into a
//! chat prompt that asks for "yes" or "no", the decoder runs over it, and
//! the score is P(yes) from the two logits at the last position,
//! softmax([no, yes]). Passages are cut to `max_passage_tokens`; pairs are
//! batched with left padding and a real attention mask (so a pair scores
//! the same alone or in a batch).

use candle_core::{DType, Device, IndexOp};

use super::qwen3::{left_padded, Cache, Model};
use crate::{Error, Result};

/// The default instruction.
pub const DEFAULT_INSTRUCTION: &str =
    "Given a question, retrieve passages from the documents that answer it";

const PREFIX: &str = "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the Instruct provided. Note that the answer can only be \"yes\" or \"no\".<|im_end|>\n<|im_start|>user\n";
const SUFFIX: &str = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n";

/// A reranking model with its tokenizer.
pub struct Reranker {
    model: Model,
    tokenizer: tokenizers::Tokenizer,
    yes: u32,
    no: u32,
    /// The task instruction.
    pub instruction: String,
    /// Longest passage in tokens (longer ones are cut).
    pub max_passage_tokens: usize,
    /// Pairs per forward pass.
    pub batch: usize,
}

impl Reranker {
    /// Loads a model directory or cached repo id.
    pub fn load(spec: &str, dtype: DType, device: &Device) -> Result<Reranker> {
        let files = super::find_or_pull(spec)?;
        let tokenizer = files.load_tokenizer()?;
        let id = |t: &str| {
            tokenizer.token_to_id(t).ok_or_else(|| {
                Error::Model(format!(
                    "{spec}: the tokenizer has no {t:?} token; is this a Qwen3-Reranker?"
                ))
            })
        };
        let (yes, no) = (id("yes")?, id("no")?);
        Reranker::new(files.load(dtype, device)?, tokenizer, yes, no)
    }

    /// Wraps a loaded causal LM, with the ids of the "yes" and "no" tokens.
    pub fn new(
        model: Model,
        tokenizer: tokenizers::Tokenizer,
        yes: u32,
        no: u32,
    ) -> Result<Reranker> {
        let vocab = model.config().vocab_size as u32;
        if yes >= vocab || no >= vocab {
            return Err(Error::Model(
                "yes/no token ids outside the vocabulary".into(),
            ));
        }
        Ok(Reranker {
            model,
            tokenizer,
            yes,
            no,
            instruction: DEFAULT_INSTRUCTION.into(),
            max_passage_tokens: 1024,
            batch: 4,
        })
    }

    fn encode(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self
            .tokenizer
            .encode(text, false)
            .map_err(Error::tokenizer_lib)?
            .get_ids()
            .to_vec())
    }

    /// The prompt token ids of one pair.
    pub fn pair_ids(&self, query: &str, passage: &str) -> Result<Vec<u32>> {
        let mut passage_ids = self.encode(passage)?;
        passage_ids.truncate(self.max_passage_tokens);
        let mut ids = self.encode(&format!(
            "{PREFIX}<Instruct>: {}\n<Query>: {query}\n<Document>: ",
            self.instruction
        ))?;
        ids.extend(passage_ids);
        ids.extend(self.encode(SUFFIX)?);
        Ok(ids)
    }

    /// P(yes) for each passage, in the order given.
    pub fn score(&self, query: &str, passages: &[&str]) -> Result<Vec<f32>> {
        let ids: Vec<Vec<u32>> = passages
            .iter()
            .map(|p| self.pair_ids(query, p))
            .collect::<Result<_>>()?;
        self.score_ids(&ids)
    }

    /// P(yes) for prepared pairs.
    pub fn score_ids(&self, ids: &[Vec<u32>]) -> Result<Vec<f32>> {
        let err = |e: candle_core::Error| Error::model_lib(e);
        let mut order: Vec<usize> = (0..ids.len()).collect();
        order.sort_by_key(|&i| ids[i].len());
        let mut out = vec![0f32; ids.len()];
        let mut cache = Cache::new(&self.model, self.model.float_cache_dtype());
        for group in order.chunks(self.batch.max(1)) {
            let (rows, valid) = left_padded(ids, group);
            cache.reset();
            cache.reserve(rows.first().map_or(0, Vec::len));
            let hidden = self.model.forward(&rows, &valid, &mut cache)?;
            let logits = self.model.logits(&Model::last_hidden(&hidden)?)?;
            for (j, &i) in group.iter().enumerate() {
                let row = logits.i(j).map_err(err)?;
                let yes: f32 = row
                    .i(self.yes as usize)
                    .and_then(|t| t.to_scalar())
                    .map_err(err)?;
                let no: f32 = row
                    .i(self.no as usize)
                    .and_then(|t| t.to_scalar())
                    .map_err(err)?;
                // softmax([no, yes])[1], computed stably.
                out[i] = 1.0 / (1.0 + (no - yes).exp());
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::testing::{tiny_config, write_tiny};
    use crate::models::ModelFiles;

    #[test]
    fn scores_are_probabilities_and_batching_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        write_tiny(dir.path(), &tiny_config("qwen3", None), true).unwrap();
        let model = ModelFiles::from_dir(dir.path())
            .unwrap()
            .load(DType::F32, &Device::Cpu)
            .unwrap();
        let tokenizer = crate::models::testing::tiny_tokenizer(64);
        let mut r = Reranker::new(model, tokenizer, 7, 9).unwrap();
        let ids = vec![
            vec![5u32, 6, 7, 8],
            vec![9; 13],
            vec![3, 4],
            vec![11, 12, 13],
        ];
        r.batch = 1;
        let single = r.score_ids(&ids).unwrap();
        r.batch = 4;
        let batched = r.score_ids(&ids).unwrap();
        for (a, b) in single.iter().zip(&batched) {
            assert!((0.0..=1.0).contains(a));
            assert!((a - b).abs() < 1e-4, "{single:?} vs {batched:?}");
        }
        assert!(single.windows(2).any(|w| w[0] != w[1]), "{single:?}");
    }
}
