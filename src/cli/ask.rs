//! `shirabe ask`: retrieve, pack the passages into a Qwen prompt by exact
//! token count, answer (a local Qwen model, or extractively without one),
//! check the citations and print the sources.

use std::io::Write;
use std::time::Instant;

use anyhow::{Context, Result};
use serde_json::json;

use shirabe::answer::{check, check_with, Checked};
use shirabe::index::ShirabeIndex;
use shirabe::ingest::tokens::TokenCounter;
use shirabe::prompt::{pack_with, Packed};
use shirabe::retrieve::{self, Mode};

use super::args::{AskArgs, BackendArgs};
use super::style::Style;
use super::{Settings, Status};

/// Context window when nothing says otherwise (Qwen3 with YaRN).
const DEFAULT_CTX: usize = 131_072;

pub fn run(s: &Settings, a: &AskArgs) -> Result<Status> {
    let question = a.question.join(" ");
    anyhow::ensure!(!question.trim().is_empty(), "the question is empty");
    let t0 = Instant::now();
    let index = ShirabeIndex::open(&s.index)?;
    let asked = a.mode.as_deref().map(Mode::parse).transpose()?;
    let (mode, backend) = super::commands::search_backend(s, &index, asked)?;
    let hits = super::commands::retrieve_passages(
        &index,
        mode,
        backend.as_ref(),
        &question,
        a.passages,
        a.doc.clone(),
    )?;
    let retrieved = t0.elapsed().as_secs_f64();

    // The model (if any) decides the tokenizer and the window.
    let mut writer = Writer::new(index.manifest.as_ref(), &a.b)?;
    let prefill_speed = writer.fit_to_wait(&a.b, !s.quiet && !a.json)?;
    let embed = backend
        .as_ref()
        .map(|(e, _)| move |t: &[&str]| e.embed(t, false, 8));
    let embed_ref = embed.as_ref().map(|f| f as shirabe::answer::EmbedFn<'_>);
    let mut out = std::io::stdout().lock();
    let st = Style::new(s.color);
    let stream = !a.json;
    let mut failed: Option<std::io::Error> = None;
    let cancel = super::commands::interrupt_flag();
    let show = |packed: &Packed| {
        if a.show_context {
            eprintln!("{}", packed.prompt);
        }
        if !s.quiet && !a.json {
            match prefill_speed {
                Some(tps) if writer.generator.is_some() => eprintln!(
                    "{}; time to first token ~{:.0}s",
                    packed.summary(),
                    packed.tokens as f64 / tps
                ),
                _ => eprintln!("{}", packed.summary()),
            }
        }
    };
    let r = answer_hits(
        &writer,
        &a.b,
        &question,
        &hits,
        embed_ref,
        cancel,
        &AnswerHooks {
            on_packed: &show,
            on_note: &|note: &str| {
                if !s.quiet {
                    eprintln!("note: {note}");
                }
            },
        },
        &mut |piece| {
            if stream && failed.is_none() {
                let piece = shirabe::sanitize::multiline(piece);
                if let Err(e) = out.write_all(piece.as_bytes()).and_then(|_| out.flush()) {
                    cancel.store(true, std::sync::atomic::Ordering::Relaxed);
                    failed = Some(e);
                }
            }
        },
    )?;
    if let Some(e) = failed {
        return Err(e.into());
    }
    if stream && !r.extractive {
        writeln!(out)?;
    }
    let answer_secs = t0.elapsed().as_secs_f64();
    let (checked, packed) = (&r.checked, &r.packed);
    if a.json {
        let v = json!({
            "question": question,
            "answer": checked.answer,
            "language": r.language,
            "language_ok": r.language_ok,
            "retried": r.retried,
            "backend": match (&writer.generator, &writer.endpoint) {
                (Some(_), _) => a.b.model.clone(),
                (None, Some(ep)) => Some(format!("{} ({})", ep.model, ep.base_url)),
                _ => Some("extractive".to_string()),
            },
            "mode": mode.name(),
            "citations": checked.citations,
            "invalid_citations": checked.invalid,
            "unsupported": checked.unsupported,
            "meta_sentences": checked.meta,
            "refused": checked.refused,
            "passages": packed.passages,
            "context": {"tokens": packed.tokens, "budget": packed.budget, "window": writer.window,
                        "documents": packed.documents, "left_out": packed.left_out,
                        "prefill_tokens_per_s_estimate": prefill_speed},
            "usage": r.usage,
            "timings": {"retrieve_s": retrieved, "pack_s": r.pack_s,
                        "first_token_s": r.first_token_s.map(|t| t + retrieved), "total_s": answer_secs},
        });
        serde_json::to_writer(&mut out, &v)?;
        writeln!(out)?;
        out.flush()?;
        return Ok(status(checked, r.interrupted));
    }
    if r.extractive {
        if checked.answer.is_empty() {
            writeln!(out, "{}", shirabe::answer::NO_ANSWER)?;
        } else {
            writeln!(out, "{}", shirabe::sanitize::multiline(&checked.answer))?;
        }
        if !s.quiet {
            writeln!(
                out,
                "{}",
                st.dim("(extractive answer: the most relevant sentences; pass --model for a written one)")
            )?;
        }
    }
    if !r.language_ok {
        writeln!(
            out,
            "{} the answer is not in {}, the question's language",
            st.error("warning:"),
            r.language.name()
        )?;
    }
    print_checks(&mut out, &st, checked)?;
    print_sources(&mut out, &st, &packed.passages, checked)?;
    out.flush()?;
    Ok(status(checked, r.interrupted))
}

/// What an answer's caller hears before and beside the streamed text.
pub(super) struct AnswerHooks<'a> {
    /// The packed prompt, before the model reads it.
    pub on_packed: &'a dyn Fn(&Packed),
    /// Notes for the user (a retry).
    pub on_note: &'a dyn Fn(&str),
}

/// One answered question.
pub(super) struct Answered {
    pub packed: Packed,
    pub checked: Checked,
    /// No model wrote it.
    pub extractive: bool,
    /// The question's language, and whether the answer is in it.
    pub language: shirabe::answer::Lang,
    pub language_ok: bool,
    /// Written twice (the first answer was in another language).
    pub retried: bool,
    pub interrupted: bool,
    /// Tokens and speeds, as JSON.
    pub usage: Option<serde_json::Value>,
    /// Seconds from the call to the first piece of text.
    pub first_token_s: Option<f64>,
    pub pack_s: f64,
    /// The text as written, before the citations were checked.
    pub raw: String,
}

/// Packs `hits` for `question`, has the writer's model answer (streaming
/// pieces to `on_text`; once more, told firmly, when the answer is not in
/// the question's language) or answers extractively, and checks the
/// citations (by meaning too, with `embed`).
#[allow(clippy::too_many_arguments)]
pub(super) fn answer_hits(
    writer: &Writer,
    b: &BackendArgs,
    question: &str,
    hits: &[retrieve::Hit],
    embed: Option<shirabe::answer::EmbedFn<'_>>,
    cancel: &std::sync::atomic::AtomicBool,
    hooks: &AnswerHooks<'_>,
    on_text: &mut dyn FnMut(&str),
) -> Result<Answered> {
    let t0 = Instant::now();
    let counter = &writer.counter;
    let budget = writer.window.saturating_sub(b.max_tokens);
    let system = match &b.system_prompt {
        Some(f) => std::fs::read_to_string(f)
            .with_context(|| format!("reading the system prompt {}", f.display()))?,
        None => shirabe::prompt::SYSTEM_PROMPT.to_string(),
    };
    let system = system.trim();
    let mut packed = pack_with(system, hits, question, counter, budget, &[]);
    let pack_s = t0.elapsed().as_secs_f64();
    (hooks.on_packed)(&packed);
    let language = shirabe::answer::Lang::of(question);
    let mut first_token: Option<f64> = None;
    let mut usage: Option<serde_json::Value> = None;
    let interrupted = std::cell::Cell::new(false);
    let mut retried = false;
    let extractive =
        packed.passages.is_empty() || (writer.generator.is_none() && writer.endpoint.is_none());
    let raw = if extractive {
        shirabe::answer::extractive_with(question, &packed.passages, 5, embed)?
    } else {
        let mut attempt = |user: &str, on_text: &mut dyn FnMut(&str)| -> Result<String> {
            let mut piece = |t: &str| {
                first_token.get_or_insert_with(|| t0.elapsed().as_secs_f64());
                on_text(t);
            };
            if let Some(g) = &writer.generator {
                // The model's own template (the same text as packed.prompt
                // for Qwen, which the packer counted).
                let ids = g.encode(&g.chat(Some(system), &[], user))?;
                let params = shirabe::models::generate::SamplingParams {
                    max_tokens: b.max_tokens,
                    temperature: b.temperature,
                    ..Default::default()
                };
                let r = g.generate(&ids, &params, cancel, &mut piece)?;
                writer.learn(&r);
                interrupted.set(r.stop == shirabe::models::generate::StopReason::Cancelled);
                usage = Some(json!({
                    "prompt_tokens": r.prompt_tokens, "completion_tokens": r.completion_tokens,
                    "prefill_tokens_per_s": r.prefill_tokens_per_s, "decode_tokens_per_s": r.decode_tokens_per_s,
                }));
                return Ok(r.text);
            }
            let ep = writer.endpoint.as_ref().expect("a model or an endpoint");
            let r = ep
                .complete(
                    system,
                    user,
                    b.max_tokens,
                    b.temperature,
                    cancel,
                    &mut piece,
                )
                .map_err(anyhow::Error::from)?;
            interrupted.set(r.cancelled);
            usage = Some(json!({
                "prompt_tokens": r.prompt_tokens, "completion_tokens": r.completion_tokens,
                "first_token_s": r.first_token_s, "total_s": r.total_s, "attempts": r.attempts,
            }));
            Ok(r.text)
        };
        let first = match attempt(&packed.user, on_text) {
            Err(e)
                if matches!(
                    e.downcast_ref::<shirabe::answer::openai::CompletionError>(),
                    Some(shirabe::answer::openai::CompletionError::ContextTooLong(_))
                ) =>
            {
                // One more try with half the context.
                (hooks.on_note)(&format!("{e}; retrying with half the context"));
                packed = pack_with(system, hits, question, counter, packed.budget / 2, &[]);
                (hooks.on_packed)(&packed);
                attempt(&packed.user, on_text)?
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
            attempt(&user, on_text)?
        } else {
            first
        }
    };
    let checked = check_with(&raw, &packed.passages, embed)?;
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
    })
}

/// The model side of a command, from its backend flags: a local Qwen or an
/// endpoint (or neither: extractive), the token counter that matches it,
/// and the context window.
pub(super) struct Writer {
    pub generator: Option<shirabe::models::generate::Generator>,
    pub endpoint: Option<shirabe::answer::openai::Endpoint>,
    pub counter: TokenCounter,
    pub window: usize,
    /// The key of the model's prefill speed (local CPU models).
    speed_key: Option<String>,
}

impl Writer {
    pub fn new(
        manifest: Option<&shirabe::index::manifest::Manifest>,
        b: &BackendArgs,
    ) -> Result<Writer> {
        let endpoint = endpoint_of(b)?;
        let mut generator = match &b.model {
            Some(m) if !b.extractive && endpoint.is_none() => Some(
                shirabe::models::generate::Generator::load(
                    m,
                    super::parse_dtype(&b.dtype, "--dtype")?,
                    &shirabe::models::default_device(),
                )
                .with_context(|| format!("loading the model {m}"))?,
            ),
            _ => None,
        };
        if let (Some(g), Some(kv)) = (generator.as_mut(), &b.cache_dtype) {
            g.cache_dtype = super::parse_cache_dtype(kv, "--cache-dtype")?;
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
        let window = b
            .ctx
            .or(generator.as_ref().map(|g| g.context_window()))
            .unwrap_or(DEFAULT_CTX);
        let speed_key = generator
            .as_ref()
            .filter(|g| g.on_cpu())
            .map(|_| format!("{}|{}", b.model.as_deref().unwrap_or_default(), b.dtype));
        Ok(Writer {
            generator,
            endpoint,
            counter,
            window,
            speed_key,
        })
    }

    /// On a local CPU, which prefills tens to hundreds of tokens per
    /// second, shrinks the window (unless `--ctx` was given) so that the
    /// expected time to first token stays within `--max-wait` at the
    /// model's prefill speed (see [`shirabe::answer::window`]); says so
    /// when `note`. Returns the estimated prefill speed, if there is one.
    pub fn fit_to_wait(&mut self, b: &BackendArgs, note: bool) -> Result<Option<f64>> {
        use shirabe::answer::window::{affordable_window, PrefillSpeeds, PROBE_TOKENS};
        let Some(g) = &self.generator else {
            return Ok(None);
        };
        if b.ctx.is_some() || !g.on_cpu() {
            return Ok(None);
        }
        let key = self.speed_key.clone().unwrap_or_default();
        let mut speeds = PrefillSpeeds::user();
        let tps = match speeds.estimate(&key) {
            Some(tps) => tps,
            None => {
                if note {
                    eprintln!("measuring the model's prefill speed (once)...");
                }
                let tps = g.measure_prefill(PROBE_TOKENS)?;
                speeds.record(&key, PROBE_TOKENS, tps);
                tps
            }
        };
        let affordable = affordable_window(tps, b.max_wait, b.max_tokens, self.window);
        if affordable < self.window {
            if note {
                eprintln!(
                    "note: local CPU prefill runs at ~{tps:.0} tokens/s: using a {affordable}-token context to answer within ~{:.0}s (--ctx N or --max-wait S to change)",
                    b.max_wait
                );
            }
            self.window = affordable;
        }
        Ok(Some(tps))
    }

    /// Keeps the prefill speed a real answer measured, so the next window
    /// is sized by what the model does, not by one probe.
    pub fn learn(&self, g: &shirabe::models::generate::Generation) {
        if let Some(key) = &self.speed_key {
            shirabe::answer::window::PrefillSpeeds::user().record(
                key,
                g.prompt_tokens,
                g.prefill_tokens_per_s,
            );
        }
    }

    /// The backend, if there is a model.
    pub fn backend<'a>(
        &'a self,
        cancel: &'a std::sync::atomic::AtomicBool,
        temperature: f32,
    ) -> Option<Box<dyn shirabe::answer::Backend + 'a>> {
        use shirabe::answer::{EndpointBackend, LocalBackend};
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
}

/// The OpenAI-compatible endpoint the flags name, if any.
pub(super) fn endpoint_of(a: &BackendArgs) -> Result<Option<shirabe::answer::openai::Endpoint>> {
    use shirabe::answer::openai::{Endpoint, DASHSCOPE_BASE};
    if a.extractive {
        return Ok(None);
    }
    let (base, key, default_model) = if a.dashscope {
        let key = std::env::var("DASHSCOPE_API_KEY")
            .ok()
            .or(a.api_key.clone())
            .context("--dashscope needs DASHSCOPE_API_KEY (or --api-key)")?;
        (DASHSCOPE_BASE.to_string(), Some(key), Some("qwen-plus"))
    } else {
        match &a.endpoint {
            Some(url) => (url.clone(), a.api_key.clone(), None),
            None => return Ok(None),
        }
    };
    let model = a
        .model
        .clone()
        .or(default_model.map(str::to_string))
        .context("--endpoint needs --model NAME (the model the server serves)")?;
    Ok(Some(Endpoint {
        base_url: base,
        api_key: key,
        model,
        timeout: std::time::Duration::from_secs(a.timeout),
        retries: 3,
        backoff: std::time::Duration::from_millis(
            std::env::var("SHIRABE_RETRY_BACKOFF_MS")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(1000),
        ),
    }))
}

fn status(checked: &Checked, interrupted: bool) -> Status {
    if interrupted {
        Status::Interrupted
    } else if checked.answer.trim().is_empty() {
        Status::Partial
    } else {
        Status::Success
    }
}

pub(super) fn print_checks(out: &mut impl Write, st: &Style, c: &Checked) -> Result<()> {
    if !c.invalid.is_empty() {
        writeln!(
            out,
            "{} citations to passages that do not exist were removed: {}",
            st.error("warning:"),
            c.invalid
                .iter()
                .map(|n| format!("[{n}]"))
                .collect::<Vec<_>>()
                .join(", ")
        )?;
    }
    let mut added: Vec<&shirabe::answer::CheckedCitation> = c.attributed().collect();
    added.dedup_by_key(|x| (x.sentence, x.n));
    for x in added {
        writeln!(
            out,
            "{} [{}] for: {}",
            st.dim("cited by shirabe:"),
            x.n,
            clip(&st.text(c.answer[x.sentence.0..x.sentence.1].trim()), 100)
        )?;
    }
    for u in &c.unsupported {
        let text = st.text(c.answer[u.sentence.0..u.sentence.1].trim());
        writeln!(
            out,
            "{} not supported by the passages ({:.0}% of its words found): {text}",
            st.error("unsupported:"),
            100.0 * u.support
        )?;
    }
    Ok(())
}

/// `text` cut to `max` characters, with an ellipsis.
fn clip(text: &str, max: usize) -> String {
    let short: String = text.chars().take(max).collect();
    if short.len() < text.len() {
        format!("{short}…")
    } else {
        short
    }
}

pub(super) fn print_sources(
    out: &mut impl Write,
    st: &Style,
    passages: &[shirabe::prompt::Passage],
    c: &Checked,
) -> Result<()> {
    let cited = c.cited();
    if cited.is_empty() {
        // An answer never goes without sources: when nothing in it could
        // be tied to a passage, show what it was given.
        if c.answer.trim().is_empty() || c.refused || passages.is_empty() {
            return Ok(());
        }
        writeln!(
            out,
            "\n{} {}",
            st.bold("Passages given"),
            st.dim("(no sentence of the answer could be tied to one)")
        )?;
        for p in passages.iter().take(3) {
            writeln!(
                out,
                "[{}] {} — {}  {}",
                p.n,
                st.path(&p.title),
                st.page(&p.pages()),
                st.dim(&p.path)
            )?;
        }
        return Ok(());
    }
    writeln!(out, "\n{}", st.bold("Sources"))?;
    for n in cited {
        let passage = &passages[n - 1];
        // The quote that supports its claim best: supported first, then
        // the most of the claim's words, then the closest in meaning.
        let best = c.citations.iter().filter(|x| x.n == n).max_by(|a, b| {
            (a.supported, a.quote_support, a.similarity.unwrap_or(0.0))
                .partial_cmp(&(b.supported, b.quote_support, b.similarity.unwrap_or(0.0)))
                .unwrap_or(std::cmp::Ordering::Equal)
        });
        let page = best.map_or_else(
            || passage.pages(),
            |x| {
                shirabe::prompt::page_range(
                    x.located.page,
                    x.located.page,
                    x.located.page_label.as_deref(),
                )
            },
        );
        writeln!(
            out,
            "[{n}] {} — {}  {}",
            st.path(&passage.title),
            st.page(&page),
            st.dim(&passage.path)
        )?;
        if let Some(x) = best.filter(|x| !x.quote_text.is_empty()) {
            writeln!(out, "    “{}”", clip(&st.text(&x.quote_text), 240))?;
        }
    }
    Ok(())
}

/// A summary and what it cost.
pub(super) struct Summarized {
    pub passages: Vec<shirabe::prompt::Passage>,
    pub checked: Checked,
    pub calls: usize,
    pub levels: usize,
    pub extractive: bool,
}

/// Summarizes the chunks `hits` (in reading order): map-reduce through the
/// model when there is one, else the most characteristic sentences;
/// citations checked.
pub(super) fn summarize_hits(
    hits: &[retrieve::Hit],
    meeting: bool,
    writer: &Writer,
    b: &BackendArgs,
    cancel: &std::sync::atomic::AtomicBool,
    on_text: &mut dyn FnMut(&str),
) -> Result<Summarized> {
    use shirabe::answer::summarize::{
        extractive_summary, summarize, MEETING_PROMPT, SUMMARY_PROMPT,
    };
    let passages = shirabe::prompt::passages_of(hits);
    anyhow::ensure!(
        !passages.is_empty(),
        "the document has no text in the index"
    );
    let task = if meeting {
        MEETING_PROMPT
    } else {
        SUMMARY_PROMPT
    };
    let boxed = writer.backend(cancel, b.temperature);
    let (text, calls, levels) = match boxed.as_deref() {
        Some(m) => {
            let r = summarize(
                &passages,
                task,
                m,
                &writer.counter,
                writer.window,
                b.max_tokens,
                on_text,
            )?;
            (r.text, r.calls, r.levels)
        }
        None => (extractive_summary(&passages, 8), 0, 0),
    };
    Ok(Summarized {
        checked: check(&text, &passages),
        passages,
        calls,
        levels,
        extractive: boxed.is_none(),
    })
}

/// `shirabe summarize DOC | --all QUERY`.
pub fn summarize(s: &Settings, a: &super::args::SummarizeArgs) -> Result<Status> {
    let index = ShirabeIndex::open(&s.index)?;
    let hits = match (&a.doc, &a.all) {
        (Some(doc), _) => {
            let keys = retrieve::matching_docs(&index, doc)?;
            anyhow::ensure!(
                !keys.is_empty(),
                "no indexed document matches {doc:?} (see `shirabe status --files`)"
            );
            retrieve::document_chunks(&index, &keys)?
        }
        (None, Some(q)) => {
            let (mode, backend) = super::commands::search_backend(s, &index, None)?;
            let mut hits =
                super::commands::retrieve_passages(&index, mode, backend.as_ref(), q, 40, None)?;
            // In document and page order, so the summary reads in order.
            hits.sort_by(|x, y| (&x.path, x.page_start).cmp(&(&y.path, y.page_start)));
            hits
        }
        (None, None) => anyhow::bail!("give a DOC or --all QUERY"),
    };
    let writer = Writer::new(index.manifest.as_ref(), &a.b)?;
    let cancel = super::commands::interrupt_flag();
    let t = Instant::now();
    let Summarized {
        passages,
        checked,
        calls,
        levels,
        extractive,
    } = summarize_hits(&hits, a.meeting, &writer, &a.b, cancel, &mut |_| {})?;
    let mut out = std::io::stdout().lock();
    if a.json {
        let v = json!({
            "summary": checked.answer,
            "citations": checked.citations,
            "invalid_citations": checked.invalid,
            "unsupported": checked.unsupported,
            "passages": passages,
            "calls": calls,
            "levels": levels,
            "seconds": t.elapsed().as_secs_f64(),
        });
        serde_json::to_writer(&mut out, &v)?;
        writeln!(out)?;
        return Ok(Status::Success);
    }
    let st = Style::new(s.color);
    writeln!(out, "{}", checked.answer.trim())?;
    if extractive && !s.quiet {
        writeln!(
            out,
            "{}",
            st.dim("(extractive summary: the most characteristic sentences; pass --model for a written one)")
        )?;
    } else if !s.quiet {
        eprintln!(
            "{} passages, {calls} model calls in {levels} level(s), {:.1}s",
            passages.len(),
            t.elapsed().as_secs_f64()
        );
    }
    print_checks(&mut out, &st, &checked)?;
    print_sources(&mut out, &st, &passages, &checked)?;
    Ok(Status::Success)
}
