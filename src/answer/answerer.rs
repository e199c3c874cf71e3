//! The answering policy every front end shares: who writes the answer (a
//! local Qwen model, an OpenAI-compatible endpoint, or nobody, and then
//! the extractive answer), with which token counter and context window,
//! and what happens to the text before anyone sees it.
//!
//! [`Answerer::answer`] packs the retrieved passages into the prompt by
//! exact token count, has the model write (streaming pieces to the
//! caller), asks once more, firmly, when the answer is not in the
//! question's language, retries an endpoint that finds the prompt too long
//! with half the context, and checks the citations. On a local CPU the
//! window is sized so the first token comes within the wait the user
//! allows ([`super::window`]), by prefill speeds the answers themselves
//! measure. Given the rarity of the question's words in the index, a
//! question no passage covers is declined before any model writes
//! ([`super::grounding`]). Notes for the user go to the caller's hooks;
//! nothing here prints.

use std::cell::Cell;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use candle_core::DType;
use serde_json::json;

use super::grounding::{grounding, Grounding};
use super::lang::Lang;
use super::openai::{CompletionError, Endpoint};
use super::window::{affordable_window, PrefillSpeeds, PROBE_TOKENS};
use super::{check_answer, extractive_with, Checked, EmbedFn};
use crate::index::manifest::Manifest;
use crate::ingest::tokens::TokenCounter;
use crate::models::cite::CiteRule;
use crate::models::generate::{Generation, Generator, SamplingParams, StopReason};
use crate::models::qwen3::KvType;
use crate::prompt::{pack_pinned, pack_with, Packed, SYSTEM_PROMPT};
use crate::retrieve::{Hit, TermRarity};
use crate::{Error, Result};

/// Context window when nothing says otherwise (Qwen3 with YaRN).
pub const DEFAULT_CTX: usize = 131_072;

/// How many sentences the extractive answer quotes at most.
const EXTRACTIVE_SENTENCES: usize = 5;

/// A local model to load.
#[derive(Debug, Clone)]
pub struct LocalModel {
    /// A GGUF file, a safetensors directory or a Hugging Face repo id.
    pub spec: String,
    /// Weight type (safetensors).
    pub dtype: DType,
    /// KV cache type, when not the model's default.
    pub cache_dtype: Option<KvType>,
}

/// How answers are written.
#[derive(Debug, Clone)]
pub struct AnswerConfig {
    /// The longest answer, in tokens.
    pub max_answer_tokens: usize,
    /// Sampling temperature (0: greedy).
    pub temperature: f32,
    /// The system prompt (default [`SYSTEM_PROMPT`]).
    pub system_prompt: Option<String>,
    /// The context window, when fixed by the user.
    pub ctx: Option<usize>,
    /// Seconds the user is willing to wait for the first token on a local
    /// CPU (sizes the window when `ctx` is not fixed).
    pub max_wait: f64,
    /// Decline a question no passage covers ([`super::grounding`]) instead
    /// of answering it.
    pub decline: bool,
    /// A local model's sentences each end with a marker it chooses among
    /// the passages ([`crate::models::cite`]); off (the default, which
    /// measured better), the model places its own markers.
    pub guided_citations: bool,
}

impl Default for AnswerConfig {
    fn default() -> Self {
        AnswerConfig {
            max_answer_tokens: 512,
            temperature: 0.0,
            system_prompt: None,
            ctx: None,
            max_wait: 60.0,
            decline: true,
            guided_citations: false,
        }
    }
}

/// One question to answer.
pub struct Question<'a> {
    /// The question.
    pub text: &'a str,
    /// The retrieved passages, best first.
    pub hits: &'a [Hit],
    /// Embeds texts, to check citations by meaning too.
    pub embed: Option<EmbedFn<'a>>,
    /// Set to stop the model.
    pub cancel: &'a AtomicBool,
    /// The longest answer, when not the configured one.
    pub max_answer_tokens: Option<usize>,
    /// How common the question's words are in the index: with it, a
    /// question the passages do not cover is declined before any model
    /// writes ([`super::grounding`]).
    pub rarity: Option<&'a TermRarity>,
    /// An answer already written (replaying a recorded run): packed and
    /// checked as if the model had just written it.
    pub written: Option<&'a str>,
    /// Earlier turns of a conversation (question, answer), oldest first,
    /// that go into the prompt; empty for a single question.
    pub history: &'a [(String, String)],
    /// Whole documents to pin (all their chunks, each document in order):
    /// when a model answers and they fit its window, every page of them
    /// goes before the question ([`crate::prompt::pack_pinned`]) instead
    /// of `hits`, and the prompt cache keeps them for the next question.
    pub pinned: Option<&'a [Hit]>,
}

impl<'a> Question<'a> {
    /// A single question over `hits`, with nothing else set: no embedder,
    /// the configured answer length, no grounding check, no history.
    pub fn new(text: &'a str, hits: &'a [Hit], cancel: &'a AtomicBool) -> Question<'a> {
        Question {
            text,
            hits,
            embed: None,
            cancel,
            max_answer_tokens: None,
            rarity: None,
            written: None,
            history: &[],
            pinned: None,
        }
    }
}

/// What an answer's caller hears before and beside the streamed text.
pub struct AnswerHooks<'a> {
    /// The packed prompt, before the model reads it.
    pub on_packed: &'a dyn Fn(&Packed),
    /// Notes for the user (a retry).
    pub on_note: &'a dyn Fn(&str),
    /// Each phase as it starts (and the prefill as it goes).
    pub on_phase: &'a dyn Fn(&Phase),
}

impl AnswerHooks<'_> {
    /// Hooks that hear nothing.
    pub fn silent() -> AnswerHooks<'static> {
        AnswerHooks {
            on_packed: &|_| {},
            on_note: &|_| {},
            on_phase: &|_| {},
        }
    }
}

/// What answering is doing, for a progress display.
#[derive(Debug, Clone, PartialEq)]
pub enum Phase {
    /// Waiting for the model, which loads in the background.
    LoadingModel {
        /// What is loading.
        what: String,
        /// Seconds since it started.
        elapsed_s: f64,
    },
    /// Searching the index.
    Retrieving,
    /// The prompt is packed.
    Packed {
        /// Passages in it.
        passages: usize,
        /// Its tokens.
        tokens: usize,
    },
    /// The model reads the prompt.
    Prefilling {
        /// Tokens read.
        done: usize,
        /// Tokens in all.
        total: usize,
        /// Seconds so far.
        elapsed_s: f64,
        /// The expected speed (tokens/s) before any block is read.
        expected: Option<f64>,
    },
    /// A long document is summarized in parts: `part` of `parts` at
    /// `level` (1: the passages; 2 and up: notes on notes).
    Summarizing {
        /// The level.
        level: usize,
        /// The part being written.
        part: usize,
        /// Parts at this level.
        parts: usize,
    },
    /// The model writes (its text streams).
    Writing,
    /// The citations are checked.
    Checking,
}

impl Phase {
    /// Seconds left, from the speed measured so far (or expected).
    pub fn eta_s(&self) -> Option<f64> {
        let Phase::Prefilling {
            done,
            total,
            elapsed_s,
            expected,
        } = *self
        else {
            return None;
        };
        let rate = if done > 0 && elapsed_s > 0.0 {
            done as f64 / elapsed_s
        } else {
            expected?
        };
        (rate > 0.0).then(|| total.saturating_sub(done) as f64 / rate)
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Phase::LoadingModel { what, elapsed_s } => {
                write!(f, "loading the model {what}… {elapsed_s:.0} s")
            }
            Phase::Retrieving => write!(f, "retrieving passages…"),
            Phase::Packed { passages, tokens } => write!(
                f,
                "packed {passages} passage{} in {} tokens",
                if *passages == 1 { "" } else { "s" },
                crate::prompt::thousands(*tokens)
            ),
            Phase::Prefilling { done, total, .. } => {
                write!(
                    f,
                    "reading the prompt: {} / {} tokens",
                    crate::prompt::thousands(*done),
                    crate::prompt::thousands(*total)
                )?;
                if let Some(eta) = self.eta_s() {
                    write!(f, " · {eta:.0} s left")?;
                }
                Ok(())
            }
            Phase::Summarizing { level, part, parts } => write!(
                f,
                "summarizing: part {part} of {parts}{}…",
                if *level > 1 {
                    format!(" (notes, level {level})")
                } else {
                    String::new()
                }
            ),
            Phase::Writing => write!(f, "writing…"),
            Phase::Checking => write!(f, "checking citations…"),
        }
    }
}

/// One answered question.
pub struct Answered {
    /// The prompt the model read (or the passages the extractive answer
    /// quoted from).
    pub packed: Packed,
    /// The answer with its citations checked.
    pub checked: Checked,
    /// No model wrote it.
    pub extractive: bool,
    /// The question's language.
    pub language: Lang,
    /// Whether the answer is in it.
    pub language_ok: bool,
    /// Written twice (the first answer was in another language).
    pub retried: bool,
    /// The user stopped it.
    pub interrupted: bool,
    /// Tokens and speeds, as JSON.
    pub usage: Option<serde_json::Value>,
    /// Seconds from the call to the first piece of text.
    pub first_token_s: Option<f64>,
    /// Seconds spent packing the prompt.
    pub pack_s: f64,
    /// The text as written, before the citations were checked.
    pub raw: String,
    /// How well the passages cover the question (with a rarity).
    pub grounding: Option<Grounding>,
    /// Why the question was declined unanswered, when it was: the answer
    /// is then empty and `checked.refused` set.
    pub declined: Option<String>,
    /// The model's answer, when nothing in it was tied to a passage and
    /// the extractive answer replaced it (`extractive` is then set; `raw`
    /// holds the model's text).
    pub replaced: Option<String>,
    /// Prompt tokens the prompt cache held (not read again).
    pub cached_tokens: usize,
}

/// The window a local model was given ([`Answerer::fit_to_wait`]).
#[derive(Debug, Clone, Copy)]
pub struct WindowFit {
    /// Estimated prefill speed, tokens per second.
    pub tokens_per_s: f64,
    /// The window shrank to this many tokens to keep the wait.
    pub shrunk_to: Option<usize>,
}

/// Writes answers: the model side of `ask`, `chat`, `serve`, `eval` and
/// the TUI.
pub struct Answerer {
    /// The local model, if any.
    pub generator: Option<Generator>,
    /// The endpoint, if any (and no local model).
    pub endpoint: Option<Endpoint>,
    /// Counts tokens as the model does.
    pub counter: TokenCounter,
    /// The context window, in tokens (shrunk on a CPU to the wait).
    pub window: usize,
    /// The model's whole window (pinned documents may use all of it).
    pub full_window: usize,
    /// How answers are written.
    pub config: AnswerConfig,
    /// The key of the model's prefill speed (local CPU models).
    speed_key: Option<String>,
}

impl Answerer {
    /// Loads `model` (or uses `endpoint`; with neither, answers are
    /// extractive). The token counter is the model's, else the index's
    /// (from `manifest`), else the default one.
    pub fn new(
        model: Option<&LocalModel>,
        endpoint: Option<Endpoint>,
        manifest: Option<&Manifest>,
        config: AnswerConfig,
    ) -> Result<Answerer> {
        let mut generator = match model {
            Some(m) if endpoint.is_none() => Some(
                Generator::load(&m.spec, m.dtype, &crate::models::default_device())
                    .map_err(Error::model(format!("loading the model {}", m.spec)))?,
            ),
            _ => None,
        };
        if let (Some(g), Some(kv)) = (generator.as_mut(), model.and_then(|m| m.cache_dtype)) {
            g.cache_dtype = kv;
        }
        let counter = match &generator {
            Some(g) => {
                TokenCounter::from_tokenizer(g.tokenizer().clone(), std::path::Path::new("model"))
            }
            None => TokenCounter::find(
                manifest
                    .map(|m| m.tokenizer.source.as_str())
                    .filter(|s| std::path::Path::new(s).exists()),
            )?,
        };
        let window = config
            .ctx
            .or(generator.as_ref().map(|g| g.context_window()))
            .unwrap_or(DEFAULT_CTX);
        let speed_key = match (&generator, model) {
            (Some(g), Some(m)) if g.on_cpu() => Some(format!("{}|{}", m.spec, m.dtype.as_str())),
            _ => None,
        };
        Ok(Answerer {
            generator,
            endpoint,
            counter,
            window,
            full_window: window,
            config,
            speed_key,
        })
    }

    /// Whether a model writes the answers (else they are extractive).
    pub fn has_model(&self) -> bool {
        self.generator.is_some() || self.endpoint.is_some()
    }

    /// On a local CPU, which prefills tens to hundreds of tokens per
    /// second, shrinks the window (unless the config fixes it) so that the
    /// expected time to first token stays within `max_wait` at the model's
    /// prefill speed. Measures the speed once when it is not known yet
    /// (telling `on_note` first: it takes seconds). `None` when the window
    /// is not sized by speed.
    pub fn fit_to_wait(&mut self, on_note: &dyn Fn(&str)) -> Result<Option<WindowFit>> {
        let Some(g) = &self.generator else {
            return Ok(None);
        };
        if self.config.ctx.is_some() || !g.on_cpu() {
            return Ok(None);
        }
        let key = self.speed_key.clone().unwrap_or_default();
        let mut speeds = PrefillSpeeds::user();
        let tps = match speeds.estimate(&key) {
            Some(tps) => tps,
            None => {
                on_note("measuring the model's prefill speed (once)...");
                let tps = g.measure_prefill(PROBE_TOKENS)?;
                speeds.record(&key, PROBE_TOKENS, tps);
                tps
            }
        };
        let affordable = affordable_window(
            tps,
            self.config.max_wait,
            self.config.max_answer_tokens,
            self.window,
        );
        let shrunk_to = (affordable < self.window).then_some(affordable);
        if let Some(w) = shrunk_to {
            self.window = w;
        }
        Ok(Some(WindowFit {
            tokens_per_s: tps,
            shrunk_to,
        }))
    }

    /// The local CPU model's prefill speed as last measured (tokens/s),
    /// if known.
    pub fn prefill_estimate(&self) -> Option<f64> {
        PrefillSpeeds::user().estimate(self.speed_key.as_deref()?)
    }

    /// Keeps the prefill speed a real answer measured, so the next window
    /// is sized by what the model does, not by one probe.
    pub fn learn(&self, g: &Generation) {
        if let Some(key) = &self.speed_key {
            PrefillSpeeds::user().record(
                key,
                g.prompt_tokens - g.cached_tokens,
                g.prefill_tokens_per_s,
            );
        }
    }

    /// The window for a prompt after `history`: the wait-sized window,
    /// plus the tokens of the prompt's head (system turn and earlier turns)
    /// that the prompt cache already holds — they cost no prefill — up to
    /// the model's whole window.
    fn window_for(&self, system: &str, history: &[(String, String)]) -> usize {
        let Some(g) = self
            .generator
            .as_ref()
            .filter(|_| self.window < self.full_window)
        else {
            return self.window;
        };
        let cached = g
            .encode(&g.chat(Some(system), history, ""))
            .map_or(0, |head| g.cached_prefix(&head));
        (self.window + cached).min(self.full_window)
    }

    /// The system prompt in use.
    pub fn system_prompt(&self) -> &str {
        self.config
            .system_prompt
            .as_deref()
            .unwrap_or(SYSTEM_PROMPT)
            .trim()
    }

    /// The backend for free-form writing (summaries, conversations), if
    /// there is a model.
    pub fn backend<'a>(&'a self, cancel: &'a AtomicBool) -> Option<Box<dyn super::Backend + 'a>> {
        use super::{EndpointBackend, LocalBackend};
        let temperature = self.config.temperature;
        match (&self.generator, &self.endpoint) {
            (Some(g), _) => Some(Box::new(LocalBackend {
                generator: g,
                cancel,
                temperature,
            })),
            (None, Some(ep)) => Some(Box::new(EndpointBackend {
                endpoint: ep,
                cancel,
                temperature,
            })),
            _ => None,
        }
    }

    /// Answers `q` from its passages: packs them, has the model write
    /// (streaming pieces to `on_text`) or answers extractively, and checks
    /// the citations (by meaning too, with an embedder).
    pub fn answer(
        &self,
        q: &Question<'_>,
        hooks: &AnswerHooks<'_>,
        on_text: &mut dyn FnMut(&str),
    ) -> Result<Answered> {
        let t0 = Instant::now();
        let Question {
            text: question,
            hits,
            embed,
            cancel,
            ..
        } = *q;
        let max_tokens = q.max_answer_tokens.unwrap_or(self.config.max_answer_tokens);
        let system = self.system_prompt();
        let history = q.history;
        // The wait-sized budget (pinned documents use the whole window).
        let budget = || self.window_for(system, history).saturating_sub(max_tokens);
        let mut packed = match q.pinned.filter(|d| !d.is_empty() && self.has_model()) {
            Some(docs) => {
                let whole = self.full_window.saturating_sub(max_tokens);
                let p = pack_pinned(system, docs, question, &self.counter, whole, history);
                if p.left_out == 0 {
                    p
                } else {
                    (hooks.on_note)(&format!(
                        "the documents do not fit the model's {}-token window whole ({} of {} pages); \
                         answering from the passages retrieved in them",
                        self.full_window,
                        p.passages.len(),
                        p.passages.len() + p.left_out
                    ));
                    pack_with(system, hits, question, &self.counter, budget(), history)
                }
            }
            None => pack_with(system, hits, question, &self.counter, budget(), history),
        };
        let pack_s = t0.elapsed().as_secs_f64();
        (hooks.on_packed)(&packed);
        (hooks.on_phase)(&Phase::Packed {
            passages: packed.passages.len(),
            tokens: packed.tokens,
        });
        let language = Lang::of(question);
        let mut first_token: Option<f64> = None;
        let mut usage: Option<serde_json::Value> = None;
        let interrupted = Cell::new(false);
        let cached = Cell::new(0usize);
        let mut retried = false;
        let grounding = q.rarity.map(|r| grounding(r, &packed.passages));
        let declined = grounding
            .as_ref()
            .and_then(Grounding::decline)
            .filter(|_| self.config.decline);
        let extractive = packed.passages.is_empty() || !self.has_model();
        let raw = if declined.is_some() {
            String::new()
        } else if let Some(w) = q.written {
            w.to_string()
        } else if extractive {
            extractive_with(question, &packed.passages, EXTRACTIVE_SENTENCES, embed)?
        } else {
            let n_passages = packed.passages.len();
            // `sys` and `user` are the packed turns; `pinned` says the
            // system turn holds pinned documents.
            let mut attempt = |sys: &str,
                               user: &str,
                               pinned: bool,
                               on_text: &mut dyn FnMut(&str)|
             -> Result<String> {
                let mut piece = |t: &str| {
                    if first_token.is_none() {
                        first_token = Some(t0.elapsed().as_secs_f64());
                        (hooks.on_phase)(&Phase::Writing);
                    }
                    on_text(t);
                };
                if let Some(g) = &self.generator {
                    // The model's own template (the same text as
                    // packed.prompt for Qwen, which the packer counted).
                    let ids = g.encode(&g.chat(Some(sys), history, user))?;
                    // Pinned documents are kept on disk up to the question.
                    let persist_prefix = if pinned {
                        let head = g.encode(&g.chat(Some(sys), &[], ""))?;
                        crate::models::prompt_cache::common_prefix(&head, &ids)
                    } else {
                        0
                    };
                    let params = SamplingParams {
                        max_tokens,
                        temperature: self.config.temperature,
                        words_first: true,
                        cite: self.config.guided_citations.then_some(CiteRule {
                            passages: n_passages,
                            exempt: super::is_refusal,
                            force: true,
                        }),
                        persist_prefix,
                        ..Default::default()
                    };
                    let read = Instant::now();
                    let on_prefill = |done, total| {
                        (hooks.on_phase)(&Phase::Prefilling {
                            done,
                            total,
                            elapsed_s: read.elapsed().as_secs_f64(),
                            expected: None,
                        })
                    };
                    let r = g.generate_observed(&ids, &params, cancel, &mut piece, &on_prefill)?;
                    self.learn(&r);
                    interrupted.set(r.stop == StopReason::Cancelled);
                    cached.set(r.cached_tokens);
                    usage = Some(json!({
                        "prompt_tokens": r.prompt_tokens, "completion_tokens": r.completion_tokens,
                        "cached_tokens": r.cached_tokens, "cached_from_disk": r.cached_from_disk,
                        "prefill_s": r.prefill_s,
                        "prefill_tokens_per_s": r.prefill_tokens_per_s, "decode_tokens_per_s": r.decode_tokens_per_s,
                    }));
                    return Ok(r.text);
                }
                let ep = self.endpoint.as_ref().expect("a model or an endpoint");
                // An endpoint hears the conversation so far as text.
                let earlier: String = history
                    .iter()
                    .map(|(q, a)| format!("Earlier question: {q}\nEarlier answer: {a}\n\n"))
                    .collect();
                let r = ep.complete(
                    sys,
                    &format!("{earlier}{user}"),
                    max_tokens,
                    self.config.temperature,
                    cancel,
                    &mut piece,
                )?;
                interrupted.set(r.cancelled);
                usage = Some(json!({
                    "prompt_tokens": r.prompt_tokens, "completion_tokens": r.completion_tokens,
                    "first_token_s": r.first_token_s, "total_s": r.total_s, "attempts": r.attempts,
                }));
                Ok(r.text)
            };
            let first = match attempt(&packed.system, &packed.user, packed.pinned, on_text) {
                Err(Error::Endpoint(e @ CompletionError::ContextTooLong(_))) => {
                    // One more try with half the context.
                    (hooks.on_note)(&format!("{e}; retrying with half the context"));
                    packed = pack_with(
                        system,
                        hits,
                        question,
                        &self.counter,
                        packed.budget / 2,
                        history,
                    );
                    (hooks.on_packed)(&packed);
                    attempt(&packed.system, &packed.user, packed.pinned, on_text)?
                }
                other => other?,
            };
            if !interrupted.get() && !language.written_in(&first) {
                (hooks.on_note)(&format!(
                    "the answer was not in {}; asking once more",
                    language.name()
                ));
                on_text("\n");
                retried = true;
                let user = format!("{}\n{}", packed.user, language.insistence());
                attempt(&packed.system, &user, packed.pinned, on_text)?
            } else {
                first
            }
        };
        (hooks.on_phase)(&Phase::Checking);
        let mut checked = check_answer(question, &raw, &packed.passages, embed)?;
        checked.refused |= declined.is_some();
        // A written answer with no sentence a passage supports (markers
        // alone, a stray number, words the passages do not hold) never
        // stands alone: the passages' own sentences replace it.
        let mut replaced = None;
        let mut extractive = extractive;
        if !extractive
            && declined.is_none()
            && !interrupted.get()
            && !checked.refused
            && !checked.citations.iter().any(|c| c.supported)
        {
            let own = extractive_with(question, &packed.passages, EXTRACTIVE_SENTENCES, embed)?;
            if !own.is_empty() {
                (hooks.on_note)(
                    "no sentence of the model's answer is supported by a passage; \
                     the passages' own sentences instead",
                );
                replaced = Some(checked.answer.clone());
                checked = check_answer(question, &own, &packed.passages, embed)?;
                extractive = true;
            }
        }
        Ok(Answered {
            language_ok: extractive || language.written_in(&checked.answer),
            packed,
            checked,
            extractive,
            language,
            retried,
            interrupted: interrupted.get(),
            usage,
            first_token_s: first_token,
            pack_s,
            raw,
            grounding,
            declined,
            replaced,
            cached_tokens: cached.get(),
        })
    }
}
