//! Text generation with a Qwen decoder: chunked prefill, sampling, stop
//! conditions, and tokens streamed out as text that never splits a
//! character.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use serde::Serialize;

use super::prompt_cache::{DiskStore, PromptCache};
use super::qwen3::{Cache, KvType, Model};
use crate::{Error, Result};

/// Answer tokens the KV cache is sized for up front at most.
const RESERVED_ANSWER: usize = 4096;

/// How to pick tokens.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// 0 = greedy.
    pub temperature: f32,
    /// Nucleus sampling mass (1 = off).
    pub top_p: f32,
    /// Keep the k most likely tokens (0 = off).
    pub top_k: usize,
    /// Penalty for tokens already generated (1 = off).
    pub repeat_penalty: f32,
    /// Random seed.
    pub seed: u64,
    /// Most tokens to generate.
    pub max_tokens: usize,
    /// Prompt tokens per prefill step.
    pub prefill_block: usize,
    /// The text must open with words: no first token that starts (after
    /// spaces) with `[`. Small models asked to cite often answer with
    /// markers alone (`[1] [2] [3]`); barred from opening with one, they
    /// write the answer and cite after it.
    pub words_first: bool,
    /// Close every sentence with a passage marker the model chooses among
    /// valid ones ([`super::cite`]); `None` leaves markers to the model.
    pub cite: Option<super::cite::CiteRule>,
    /// Keep the prompt's first this many tokens (its stable prefix: the
    /// pinned documents) in the disk cache ([`super::prompt_cache`]) so a
    /// new process skips reading them; 0 keeps nothing on disk.
    pub persist_prefix: usize,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: 0.0,
            top_p: 1.0,
            top_k: 0,
            repeat_penalty: 1.0,
            seed: 42,
            max_tokens: 512,
            prefill_block: 512,
            words_first: false,
            cite: None,
            persist_prefix: 0,
        }
    }
}

/// Why generation stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// An end-of-turn or end-of-text token.
    EndOfText,
    /// `max_tokens` reached.
    MaxTokens,
    /// The caller cancelled.
    Cancelled,
}

/// What a generation produced.
#[derive(Debug, Clone, Serialize)]
pub struct Generation {
    /// The text (thinking, if any, removed).
    pub text: String,
    /// Generated token ids (the stop token excluded).
    pub ids: Vec<u32>,
    /// Prompt length in tokens.
    pub prompt_tokens: usize,
    /// Prompt tokens whose keys and values came from the prompt cache
    /// (not read again).
    pub cached_tokens: usize,
    /// Whether they came from a file (else from memory).
    pub cached_from_disk: bool,
    /// Seconds from the call to the first token's logits (restoring the
    /// cache and reading the rest of the prompt).
    pub prefill_s: f64,
    /// Generated tokens.
    pub completion_tokens: usize,
    /// Prefill speed.
    pub prefill_tokens_per_s: f64,
    /// Decode speed.
    pub decode_tokens_per_s: f64,
    /// Why it stopped.
    pub stop: StopReason,
}

/// A model with its tokenizer, ready to generate.
pub struct Generator {
    model: Model,
    tokenizer: tokenizers::Tokenizer,
    stop_ids: Vec<u32>,
    /// How the key/value cache stores its rows (default: the model's
    /// [`Model::cache_dtype`]).
    pub cache_dtype: KvType,
    /// The model's own chat template, when its tokenizer_config.json has one.
    template: Option<super::template::ChatTemplate>,
    /// Each token's bytes, for byte-level vocabularies (keeps the text
    /// valid UTF-8; built on first use).
    token_bytes: std::sync::OnceLock<Option<super::utf8::TokenBytes>>,
    /// The tokens that open with `[` after spaces (see
    /// [`SamplingParams::words_first`]; built on first use).
    bracket_openers: std::sync::OnceLock<Vec<u32>>,
    /// The tokens citation markers are spelled with (built on first use).
    cite_tokens: std::sync::OnceLock<Option<super::cite::CiteTokens>>,
    /// Keys and values of earlier prompts ([`super::prompt_cache`]).
    prompt_cache: std::sync::Mutex<PromptCache>,
}

use crate::rng::Rng;

/// Picks the next token from logits.
fn sample(logits: &mut [f32], history: &[u32], p: &SamplingParams, rng: &mut Rng) -> u32 {
    if p.repeat_penalty != 1.0 {
        for &id in history {
            if let Some(l) = logits.get_mut(id as usize) {
                *l = if *l > 0.0 {
                    *l / p.repeat_penalty
                } else {
                    *l * p.repeat_penalty
                };
            }
        }
    }
    let argmax = || {
        logits
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map_or(0, |(i, _)| i as u32)
    };
    if p.temperature <= 0.0 {
        return argmax();
    }
    let mut idx: Vec<usize> = (0..logits.len()).collect();
    idx.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
    if p.top_k > 0 {
        idx.truncate(p.top_k);
    }
    let max = logits[idx[0]];
    let mut probs: Vec<f32> = idx
        .iter()
        .map(|&i| ((logits[i] - max) / p.temperature).exp())
        .collect();
    let sum: f32 = probs.iter().sum();
    probs.iter_mut().for_each(|x| *x /= sum);
    if p.top_p < 1.0 {
        let mut acc = 0.0;
        let keep = probs
            .iter()
            .position(|&x| {
                acc += x;
                acc >= p.top_p
            })
            .map_or(probs.len(), |i| i + 1);
        probs.truncate(keep);
        idx.truncate(keep);
        let sum: f32 = probs.iter().sum();
        probs.iter_mut().for_each(|x| *x /= sum);
    }
    let r = rng.uniform();
    let mut acc = 0.0;
    for (i, &pr) in probs.iter().enumerate() {
        acc += pr;
        if r < acc {
            return idx[i] as u32;
        }
    }
    idx[probs.len() - 1] as u32
}

/// Drops `<think>…</think>` (Qwen3's reasoning) from a finished answer.
pub fn strip_thinking(text: &str) -> String {
    match (text.find("<think>"), text.find("</think>")) {
        (Some(a), Some(b)) if a < b => format!("{}{}", &text[..a], text[b + 8..].trim_start()),
        (None, Some(b)) => text[b + 8..].trim_start().to_string(),
        _ => text.to_string(),
    }
}

impl Generator {
    /// Wraps a model and its tokenizer; stop tokens are the config's
    /// `eos_token_id`s plus `<|im_end|>` and `<|endoftext|>`.
    pub fn new(model: Model, tokenizer: tokenizers::Tokenizer) -> Generator {
        let cache_dtype = model.cache_dtype();
        let mut stop_ids = model.config().eos_ids();
        for t in ["<|im_end|>", "<|endoftext|>"] {
            if let Some(id) = tokenizer.token_to_id(t) {
                stop_ids.push(id);
            }
        }
        Generator {
            model,
            tokenizer,
            stop_ids,
            cache_dtype,
            template: None,
            token_bytes: std::sync::OnceLock::new(),
            bracket_openers: std::sync::OnceLock::new(),
            cite_tokens: std::sync::OnceLock::new(),
            prompt_cache: std::sync::Mutex::new(PromptCache::default()),
        }
    }

    /// Keeps prompt caches on disk in `store` too (else in memory only).
    pub fn with_disk_cache(self, store: Option<DiskStore>) -> Generator {
        *self.prompt_cache.lock().unwrap_or_else(|e| e.into_inner()) = PromptCache::new(store);
        self
    }

    /// How many of the first tokens of `prompt_ids` the prompt cache
    /// holds (they will not be read again).
    pub fn cached_prefix(&self, prompt_ids: &[u32]) -> usize {
        self.cache_lock().peek(prompt_ids, self.cache_dtype)
    }

    fn cache_lock(&self) -> std::sync::MutexGuard<'_, PromptCache> {
        self.prompt_cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Uses the chat template of the `tokenizer_config.json` at `path`, if
    /// it has one.
    pub fn with_template_from(mut self, path: &std::path::Path) -> Result<Generator> {
        self.template = super::template::ChatTemplate::from_tokenizer_config(path)?;
        Ok(self)
    }

    /// Loads a model directory, a cached repo id, or a `.gguf` file (with
    /// its embedded tokenizer, or a `tokenizer.json` beside it).
    pub fn load(spec: &str, dtype: DType, device: &Device) -> Result<Generator> {
        let path = std::path::Path::new(spec);
        if path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
        {
            // A tokenizer.json beside the file wins; else the one llama.cpp
            // embedded in it.
            // One read of the file's header for the model and its tokenizer;
            // a tokenizer.json beside the file wins over the embedded one.
            let gguf = super::weights::Gguf::open(path, device)?;
            let tok = path.with_file_name("tokenizer.json");
            let tokenizer = if tok.is_file() {
                tokenizers::Tokenizer::from_file(&tok)
                    .map_err(Error::tokenizer(format!("{}", tok.display())))?
            } else {
                gguf.tokenizer()?.ok_or_else(|| {
                    Error::Model(format!(
                        "{}: the GGUF file has no Qwen tokenizer; put the model's tokenizer.json at {}",
                        path.display(),
                        tok.display()
                    ))
                })?
            };
            let disk = super::prompt_cache::model_key(&[path.to_path_buf()])
                .and_then(|k| DiskStore::user(&k));
            return Ok(Generator::new(super::model_of_gguf(&gguf)?, tokenizer)
                .with_template_from(&path.with_file_name("tokenizer_config.json"))?
                .with_disk_cache(disk));
        }
        let files = super::find_or_pull(spec)?;
        let mut weights: Vec<std::path::PathBuf> = std::fs::read_dir(&files.dir)
            .map(|rd| rd.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        weights.retain(|p| {
            p.extension().is_some_and(|x| x == "safetensors")
                || p.file_name().is_some_and(|n| n == "config.json")
        });
        weights.sort();
        let disk = super::prompt_cache::model_key(&weights)
            .map(|k| format!("{k}-{}", dtype.as_str()))
            .and_then(|k| DiskStore::user(&k));
        Ok(
            Generator::new(files.load(dtype, device)?, files.load_tokenizer()?)
                .with_template_from(&files.dir.join("tokenizer_config.json"))?
                .with_disk_cache(disk),
        )
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &tokenizers::Tokenizer {
        &self.tokenizer
    }

    /// Measures prefill speed (tokens/s) on `n` tokens. Prefill per token
    /// slows as the context grows (attention), so this is optimistic for
    /// long prompts; callers leave a margin.
    pub fn measure_prefill(&self, n: usize) -> Result<f64> {
        let n = n.clamp(8, 4096);
        let vocab = self.model.config().vocab_size as u32;
        let ids: Vec<u32> = (0..n as u32).map(|i| (1000 + i * 7) % vocab).collect();
        // A warm-up pass first: the first touches the (mapped) weights and
        // the allocator, and read half the real speed.
        let mut cache = Cache::new(&self.model, self.cache_dtype);
        self.model
            .forward(&[ids[..8].to_vec()], &[vec![true; 8]], &mut cache)?;
        // Then the prompt in the blocks generation uses.
        let mut cache = Cache::new(&self.model, self.cache_dtype);
        let t = Instant::now();
        for block in ids.chunks(SamplingParams::default().prefill_block.max(1)) {
            self.model
                .forward(&[block.to_vec()], &[vec![true; block.len()]], &mut cache)?;
        }
        Ok(n as f64 / t.elapsed().as_secs_f64().max(1e-9))
    }

    /// True when the model runs on the CPU.
    pub fn on_cpu(&self) -> bool {
        self.model.device().is_cpu()
    }

    /// The context window the model's config declares.
    pub fn context_window(&self) -> usize {
        self.model.config().max_position_embeddings
    }

    /// A one-turn chat prompt (see [`Generator::chat`]).
    pub fn chat_prompt(&self, system: Option<&str>, user: &str) -> String {
        self.chat(system, &[], user)
    }

    /// The prompt for `user` after the earlier (question, answer) turns:
    /// the model's own chat template when it has one (rendered with Qwen3's
    /// thinking off), else ChatML as Qwen's template writes it. A template
    /// that fails to render falls back to ChatML, with a warning.
    pub fn chat(&self, system: Option<&str>, history: &[(String, String)], user: &str) -> String {
        if let Some(t) = &self.template {
            use super::template::Message;
            let mut msgs: Vec<Message<'_>> = Vec::with_capacity(2 + 2 * history.len());
            if let Some(s) = system {
                msgs.push(Message {
                    role: "system",
                    content: s,
                });
            }
            for (q, a) in history {
                msgs.push(Message {
                    role: "user",
                    content: q,
                });
                msgs.push(Message {
                    role: "assistant",
                    content: a,
                });
            }
            msgs.push(Message {
                role: "user",
                content: user,
            });
            match t.render(&msgs, true) {
                Ok(p) => return p,
                Err(e) => tracing::warn!("{e}; writing ChatML instead"),
            }
        }
        let mut p = String::new();
        if let Some(s) = system {
            p.push_str(&format!("<|im_start|>system\n{s}<|im_end|>\n"));
        }
        for (q, a) in history {
            p.push_str(&format!(
                "<|im_start|>user\n{q}<|im_end|>\n<|im_start|>assistant\n{a}<|im_end|>\n"
            ));
        }
        p.push_str(&format!(
            "<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"
        ));
        if self.model.config().is_qwen3() {
            p.push_str("<think>\n\n</think>\n\n");
        }
        p
    }

    /// Tokenizes a prompt (special tokens in the text are honoured).
    pub fn encode(&self, prompt: &str) -> Result<Vec<u32>> {
        Ok(self
            .tokenizer
            .encode(prompt, false)
            .map_err(Error::tokenizer_lib)?
            .get_ids()
            .to_vec())
    }

    /// Generates after `prompt_ids`, calling `on_text` with each new piece
    /// of text as soon as it forms whole characters. `cancel` stops it.
    pub fn generate(
        &self,
        prompt_ids: &[u32],
        params: &SamplingParams,
        cancel: &AtomicBool,
        on_text: impl FnMut(&str),
    ) -> Result<Generation> {
        self.generate_observed(prompt_ids, params, cancel, on_text, &|_, _| {})
    }

    /// [`Generator::generate`], telling `on_prefill(done, total)` after
    /// each block of the prompt is read.
    pub fn generate_observed(
        &self,
        prompt_ids: &[u32],
        params: &SamplingParams,
        cancel: &AtomicBool,
        mut on_text: impl FnMut(&str),
        on_prefill: &dyn Fn(usize, usize),
    ) -> Result<Generation> {
        if prompt_ids.is_empty() {
            return Err(Error::Model("the prompt is empty".into()));
        }
        // Room for the answer (growing copies the cache), within reason:
        // `max_tokens` may come from a request, and past the reservation
        // the buffers still double as they fill.
        let reserve = prompt_ids
            .len()
            .saturating_add(params.max_tokens.min(RESERVED_ANSWER))
            .min(self.context_window());
        let started = Instant::now();
        // What an earlier prompt left that this one shares.
        let reused = self
            .cache_lock()
            .take(prompt_ids, &self.model, self.cache_dtype, reserve);
        let (mut cache, cached, from_disk) = match reused {
            Some(r) => (r.cache, r.tokens, r.from_disk),
            None => (Cache::new(&self.model, self.cache_dtype), 0, false),
        };
        cache.reserve(reserve);
        let mut hidden = None;
        let mut done = cached;
        on_prefill(done, prompt_ids.len());
        for block in prompt_ids[cached..].chunks(params.prefill_block.max(1)) {
            if cancel.load(Ordering::Relaxed) {
                // What was read is kept for the next try.
                self.cache_lock().put(prompt_ids[..done].to_vec(), cache);
                return Ok(self.finish(
                    Vec::new(),
                    prompt_ids.len(),
                    0.0,
                    0.0,
                    StopReason::Cancelled,
                ));
            }
            hidden = Some(self.model.forward(
                &[block.to_vec()],
                &[vec![true; block.len()]],
                &mut cache,
            )?);
            done += block.len();
            on_prefill(done, prompt_ids.len());
        }
        let prefill_s = started.elapsed().as_secs_f64();
        if params.persist_prefix > 0 {
            match self
                .cache_lock()
                .persist(prompt_ids, params.persist_prefix, &cache)
            {
                Ok(_) => {}
                Err(e) => tracing::warn!("keeping the prompt cache on disk: {e}"),
            }
        }
        let mut logits = self.last_logits(hidden.as_ref().expect("non-empty prompt"))?;
        let mut rng = Rng::new(params.seed);
        let mut ids: Vec<u32> = Vec::new();
        let mut emitted = 0usize; // bytes of decoded text already sent
        let token_bytes = self
            .token_bytes
            .get_or_init(|| super::utf8::TokenBytes::of(&self.tokenizer))
            .as_ref();
        let mut pending = super::utf8::Pending::default();
        // Resampling after a rejected token: the penalty is applied once.
        let again = SamplingParams {
            repeat_penalty: 1.0,
            ..params.clone()
        };
        let mut guide = params.cite.and_then(|rule| {
            let tb = token_bytes?;
            let tokens = self
                .cite_tokens
                .get_or_init(|| {
                    super::cite::CiteTokens::find(tb, self.model.config().vocab_size as u32)
                })
                .as_ref()?;
            Some(super::cite::CiteGuide::new(rule, tokens))
        });
        let mut text_now = String::new();
        let decode_start = Instant::now();
        let stop = loop {
            if cancel.load(Ordering::Relaxed) {
                break StopReason::Cancelled;
            }
            if ids.len() >= params.max_tokens {
                break StopReason::MaxTokens;
            }
            if params.words_first && ids.is_empty() {
                if let Some(tb) = token_bytes {
                    for &id in self.bracket_openers(tb) {
                        logits[id as usize] = f32::NEG_INFINITY;
                    }
                }
            }
            let constrained = guide.as_ref().is_some_and(|g| g.mask(&mut logits));
            let mut next = sample(&mut logits, &ids, params, &mut rng);
            if let Some(tb) = token_bytes.filter(|_| !constrained) {
                // Never a token that breaks a character, nor the end
                // while one is unfinished.
                let mut tries = 0;
                while tries < 64
                    && if self.stop_ids.contains(&next) {
                        pending.is_open()
                    } else {
                        !pending.accepts(tb.get(next))
                    }
                {
                    logits[next as usize] = f32::NEG_INFINITY;
                    next = sample(&mut logits, &ids, &again, &mut rng);
                    tries += 1;
                }
            }
            // A sentence ended without a marker: the decoder opens one.
            let mut forced = false;
            if let (Some(g), Some(tb)) = (&guide, token_bytes) {
                if let Some(f) =
                    g.replace(&text_now, next, tb.get(next), self.stop_ids.contains(&next))
                {
                    next = f;
                    forced = true;
                }
            }
            if self.stop_ids.contains(&next) {
                break StopReason::EndOfText;
            }
            if let Some(tb) = token_bytes {
                pending.push(tb.get(next));
            }
            if let Some(g) = guide.as_mut() {
                g.push(next, forced);
            }
            ids.push(next);
            let text = self.decode(&ids)?;
            // Hold back a trailing partial character (shown as U+FFFD).
            if !text.ends_with('\u{fffd}') && text.len() > emitted && text.is_char_boundary(emitted)
            {
                on_text(&text[emitted..]);
                emitted = text.len();
            }
            text_now = text;
            let h = self
                .model
                .forward(&[vec![next]], &[vec![true]], &mut cache)?;
            logits = self.last_logits(&h)?;
        };
        // Whatever is still held back (a character left unfinished when
        // the tokens ran out is dropped, not shown as U+FFFD).
        let text = self.decode(&ids)?;
        let text = text.trim_end_matches('\u{fffd}');
        if text.len() > emitted && text.is_char_boundary(emitted) {
            on_text(&text[emitted..]);
        }
        let decode_s = decode_start.elapsed().as_secs_f64();
        let read = prompt_ids.len() - cached;
        let prefill_rate = read as f64 / prefill_s.max(1e-9);
        let decode_rate = ids.len() as f64 / decode_s.max(1e-9);
        let mut all = prompt_ids.to_vec();
        all.extend_from_slice(&ids);
        self.cache_lock().put(all, cache);
        let mut g = self.finish(ids, prompt_ids.len(), prefill_rate, decode_rate, stop);
        g.cached_tokens = cached;
        g.cached_from_disk = from_disk;
        g.prefill_s = prefill_s;
        Ok(g)
    }

    /// The tokens whose text opens with `[` once leading spaces are
    /// skipped (`[`, ` [`, `[1`, ` [[`, …), within the model's logits.
    fn bracket_openers(&self, tb: &super::utf8::TokenBytes) -> &[u32] {
        self.bracket_openers.get_or_init(|| {
            let n = self.model.config().vocab_size as u32;
            (0..n)
                .filter(|&id| !self.stop_ids.contains(&id))
                .filter(|&id| {
                    tb.get(id)
                        .iter()
                        .find(|b| !b.is_ascii_whitespace())
                        .is_some_and(|&b| b == b'[')
                })
                .collect()
        })
    }

    fn finish(
        &self,
        ids: Vec<u32>,
        prompt: usize,
        prefill: f64,
        decode: f64,
        stop: StopReason,
    ) -> Generation {
        let text = self.decode(&ids).unwrap_or_default();
        Generation {
            text: strip_thinking(text.trim_end_matches('\u{fffd}')),
            completion_tokens: ids.len(),
            ids,
            prompt_tokens: prompt,
            cached_tokens: 0,
            cached_from_disk: false,
            prefill_s: 0.0,
            prefill_tokens_per_s: prefill,
            decode_tokens_per_s: decode,
            stop,
        }
    }

    fn decode(&self, ids: &[u32]) -> Result<String> {
        self.tokenizer
            .decode(ids, true)
            .map_err(Error::tokenizer_lib)
    }

    fn last_logits(&self, hidden: &Tensor) -> Result<Vec<f32>> {
        let last = Model::last_hidden(hidden)?;
        self.model
            .logits(&last)?
            .squeeze(0)
            .and_then(|l| l.to_vec1::<f32>())
            .map_err(Error::model_lib)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::testing::{tiny_config, write_tiny};
    use crate::models::ModelFiles;

    fn tiny_generator() -> Generator {
        let dir = tempfile::tempdir().unwrap();
        write_tiny(dir.path(), &tiny_config("qwen3", None), true).unwrap();
        let model = ModelFiles::from_dir(dir.path())
            .unwrap()
            .load(DType::F32, &Device::Cpu)
            .unwrap();
        Generator::new(model, crate::models::testing::tiny_tokenizer(64))
    }

    #[test]
    fn a_follow_up_reads_only_its_new_tokens_and_answers_the_same() {
        let g = tiny_generator();
        let never = AtomicBool::new(false);
        let params = SamplingParams {
            max_tokens: 6,
            prefill_block: 7,
            ..Default::default()
        };
        let prompt: Vec<u32> = (0..40).map(|i| (i * 5 + 3) % 60 + 3).collect();
        let first = g.generate(&prompt, &params, &never, |_| {}).unwrap();
        assert_eq!(first.cached_tokens, 0);
        let again = g.generate(&prompt, &params, &never, |_| {}).unwrap();
        assert_eq!(again.cached_tokens, prompt.len() - 1);
        assert_eq!(again.ids, first.ids);
        // A follow-up: the prompt, the answer, and more.
        let mut longer = prompt.clone();
        longer.extend(&first.ids);
        longer.extend([7, 8, 9]);
        let follow = g.generate(&longer, &params, &never, |_| {}).unwrap();
        assert_eq!(follow.cached_tokens, prompt.len() + first.ids.len());
        let fresh = tiny_generator()
            .generate(&longer, &params, &never, |_| {})
            .unwrap();
        assert_eq!(follow.cached_tokens + 3, fresh.prompt_tokens);
        assert_eq!(follow.ids, fresh.ids);
    }

    #[test]
    fn chat_prompts_come_from_the_model_template_when_it_has_one() {
        let g = tiny_generator();
        let history = [("Q1".to_string(), "A1".to_string())];
        let built_in = g.chat(Some("S"), &history, "Q2");
        assert_eq!(
            built_in,
            "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nQ1<|im_end|>\n<|im_start|>assistant\nA1<|im_end|>\n<|im_start|>user\nQ2<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
        );
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("tokenizer_config.json");
        std::fs::write(
            &cfg,
            r#"{"chat_template": "{% for m in messages %}[{{ m.role }}] {{ m.content }}\n{% endfor %}{% if add_generation_prompt %}[assistant]{% endif %}"}"#,
        )
        .unwrap();
        let g = g.with_template_from(&cfg).unwrap();
        assert_eq!(
            g.chat(Some("S"), &history, "Q2"),
            "[system] S\n[user] Q1\n[assistant] A1\n[user] Q2\n[assistant]"
        );
        // A template that cannot render falls back to ChatML.
        std::fs::write(&cfg, r#"{"chat_template": "{{ raise_exception('no') }}"}"#).unwrap();
        let g = g.with_template_from(&cfg).unwrap();
        assert_eq!(g.chat(Some("S"), &history, "Q2"), built_in);
    }

    #[test]
    fn greedy_is_deterministic_and_prefill_block_does_not_matter() {
        let g = tiny_generator();
        let never = AtomicBool::new(false);
        let prompt = [3u32, 17, 42, 8, 9, 10, 11];
        let p = SamplingParams {
            max_tokens: 8,
            ..SamplingParams::default()
        };
        let a = g.generate(&prompt, &p, &never, |_| {}).unwrap();
        let b = g
            .generate(
                &prompt,
                &SamplingParams {
                    prefill_block: 2,
                    ..p.clone()
                },
                &never,
                |_| {},
            )
            .unwrap();
        assert_eq!(a.ids, b.ids);
        assert!(matches!(
            a.stop,
            StopReason::MaxTokens | StopReason::EndOfText
        ));
        assert_eq!(a.prompt_tokens, 7);
    }

    #[test]
    fn sampling_respects_seed_and_top_k() {
        let mut rng = Rng::new(7);
        let p = SamplingParams {
            temperature: 1.0,
            top_k: 1,
            ..SamplingParams::default()
        };
        let mut logits = vec![0.0, 5.0, 1.0];
        assert_eq!(sample(&mut logits, &[], &p, &mut rng), 1);
        let p = SamplingParams {
            temperature: 1.0,
            ..SamplingParams::default()
        };
        let draw = |seed| {
            let mut rng = Rng::new(seed);
            (0..20)
                .map(|_| sample(&mut [1.0, 1.1, 0.9, 1.0], &[], &p, &mut rng))
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(3), draw(3));
        assert_ne!(draw(3), draw(4));
        // Repetition penalty pushes a repeated token down.
        let p = SamplingParams {
            repeat_penalty: 10.0,
            ..SamplingParams::default()
        };
        assert_eq!(sample(&mut [2.0, 1.5], &[0], &p, &mut Rng::new(1)), 1);
    }

    #[test]
    fn cancellation_stops() {
        let g = tiny_generator();
        let cancel = AtomicBool::new(true);
        let out = g
            .generate(&[1, 2, 3], &SamplingParams::default(), &cancel, |_| {})
            .unwrap();
        assert_eq!(out.stop, StopReason::Cancelled);
        assert!(out.ids.is_empty());
    }

    #[test]
    fn thinking_is_stripped() {
        assert_eq!(
            strip_thinking("<think>\nhmm\n</think>\n\nAnswer [1]."),
            "Answer [1]."
        );
        assert_eq!(strip_thinking("Plain."), "Plain.");
    }
}
