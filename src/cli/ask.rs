//! `shirabe ask`: retrieve, pack the passages into a Qwen prompt by exact
//! token count, answer (a local Qwen model, or extractively without one),
//! check the citations and print the sources.

use std::io::Write;
use std::time::Instant;

use anyhow::{Context, Result};
use serde_json::json;

use shirabe::answer::{check, check_with, extractive_with, Checked};
use shirabe::index::ShirabeIndex;
use shirabe::ingest::tokens::TokenCounter;
use shirabe::prompt::{pack, Packed};
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
    let window = writer.window;
    let (generator, endpoint, counter) = (&writer.generator, &writer.endpoint, &writer.counter);
    let budget = window.saturating_sub(a.b.max_tokens);
    let t1 = Instant::now();
    let mut packed = pack(&hits, &question, counter, budget, &[]);
    let pack_secs = t1.elapsed().as_secs_f64();
    if a.show_context {
        eprintln!("{}", packed.prompt);
    }
    if !s.quiet && !a.json {
        match prefill_speed {
            Some(tps) if generator.is_some() => eprintln!(
                "{}; time to first token ~{:.0}s",
                packed.summary(),
                packed.tokens as f64 / tps
            ),
            _ => eprintln!("{}", packed.summary()),
        }
    }

    let embed = backend
        .as_ref()
        .map(|(e, _)| move |t: &[&str]| e.embed(t, false, 8));
    let embed_ref = embed.as_ref().map(|f| f as shirabe::answer::EmbedFn<'_>);
    let mut first_token: Option<f64> = None;
    let mut out = std::io::stdout().lock();
    let st = Style::new(s.color);
    let mut remote: Option<serde_json::Value> = None;
    let (raw, gen_stats, interrupted) = match generator {
        Some(g) if !packed.passages.is_empty() => {
            // The model's own template (the same text as packed.prompt for
            // Qwen3, which the packer counted).
            let ids = g.encode(&g.chat(Some(shirabe::prompt::SYSTEM_PROMPT), &[], &packed.user))?;
            let params = shirabe::models::generate::SamplingParams {
                max_tokens: a.b.max_tokens,
                temperature: a.b.temperature,
                ..Default::default()
            };
            let cancel = super::commands::interrupt_flag();
            let stream = !a.json;
            let mut failed: Option<std::io::Error> = None;
            let r = g.generate(&ids, &params, cancel, |piece| {
                first_token.get_or_insert_with(|| t0.elapsed().as_secs_f64());
                if stream && failed.is_none() {
                    if let Err(e) = out.write_all(piece.as_bytes()).and_then(|_| out.flush()) {
                        cancel.store(true, std::sync::atomic::Ordering::Relaxed);
                        failed = Some(e);
                    }
                }
            })?;
            if let Some(e) = failed {
                return Err(e.into());
            }
            if stream {
                writeln!(out)?;
            }
            writer.learn(&r);
            let stopped = r.stop == shirabe::models::generate::StopReason::Cancelled;
            (r.text.clone(), Some(r), stopped)
        }
        _ => match endpoint {
            Some(ep) if !packed.passages.is_empty() => {
                let cancel = super::commands::interrupt_flag();
                let stream = !a.json;
                let mut call = |p: &Packed, out: &mut std::io::StdoutLock<'_>| {
                    ep.complete(
                        shirabe::prompt::SYSTEM_PROMPT,
                        &p.user,
                        a.b.max_tokens,
                        a.b.temperature,
                        cancel,
                        |piece| {
                            first_token.get_or_insert_with(|| t0.elapsed().as_secs_f64());
                            if stream {
                                let _ = out.write_all(piece.as_bytes()).and_then(|_| out.flush());
                            }
                        },
                    )
                };
                let r = match call(&packed, &mut out) {
                    Err(shirabe::answer::openai::CompletionError::ContextTooLong(why)) => {
                        // One more try with half the context.
                        if !s.quiet {
                            eprintln!("note: {why}; retrying with half the context");
                        }
                        packed = pack(&hits, &question, counter, packed.budget / 2, &[]);
                        call(&packed, &mut out)
                    }
                    other => other,
                }
                .map_err(|e| anyhow::anyhow!("{e}"))?;
                if stream {
                    writeln!(out)?;
                }
                remote = Some(json!({
                    "prompt_tokens": r.prompt_tokens, "completion_tokens": r.completion_tokens,
                    "first_token_s": r.first_token_s, "total_s": r.total_s, "attempts": r.attempts,
                }));
                (r.text, None, r.cancelled)
            }
            _ => (
                extractive_with(&question, &packed.passages, 5, embed_ref)?,
                None,
                false,
            ),
        },
    };
    // With an embedding model at hand, paraphrased claims are checked by
    // meaning too.
    let checked = check_with(&raw, &packed.passages, embed_ref)?;
    let answer_secs = t0.elapsed().as_secs_f64();
    if a.json {
        let v = json!({
            "question": question,
            "answer": checked.answer,
            "backend": match (generator, endpoint) {
                (Some(_), _) => a.b.model.clone(),
                (None, Some(ep)) => Some(format!("{} ({})", ep.model, ep.base_url)),
                _ => Some("extractive".to_string()),
            },
            "mode": mode.name(),
            "citations": checked.citations,
            "invalid_citations": checked.invalid,
            "unsupported": checked.unsupported,
            "passages": packed.passages,
            "context": {"tokens": packed.tokens, "budget": packed.budget, "window": window,
                        "documents": packed.documents, "left_out": packed.left_out,
                        "prefill_tokens_per_s_measured": prefill_speed},
            "usage": gen_stats.as_ref().map(|g| json!({
                "prompt_tokens": g.prompt_tokens, "completion_tokens": g.completion_tokens,
                "prefill_tokens_per_s": g.prefill_tokens_per_s, "decode_tokens_per_s": g.decode_tokens_per_s,
            })).or(remote),
            "timings": {"retrieve_s": retrieved, "pack_s": pack_secs,
                        "first_token_s": first_token, "total_s": answer_secs},
        });
        serde_json::to_writer(&mut out, &v)?;
        writeln!(out)?;
        out.flush()?;
        return Ok(status(&checked, interrupted));
    }
    if generator.is_none() && endpoint.is_none() {
        if checked.answer.is_empty() {
            writeln!(out, "{}", shirabe::answer::NO_ANSWER)?;
        } else {
            writeln!(out, "{}", checked.answer)?;
        }
        if !s.quiet {
            writeln!(
                out,
                "{}",
                st.dim("(extractive answer: the most relevant sentences; pass --model for a written one)")
            )?;
        }
    }
    print_checks(&mut out, &st, &checked)?;
    print_sources(&mut out, &st, &packed.passages, &checked)?;
    out.flush()?;
    Ok(status(&checked, interrupted))
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
            clip(c.answer[x.sentence.0..x.sentence.1].trim(), 100)
        )?;
    }
    for u in &c.unsupported {
        let text = c.answer[u.sentence.0..u.sentence.1].trim();
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
                st.path(&shirabe::sanitize::terminal(&p.title)),
                st.page(&p.pages()),
                st.dim(&shirabe::sanitize::terminal(&p.path))
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
            st.path(&shirabe::sanitize::terminal(&passage.title)),
            st.page(&page),
            st.dim(&shirabe::sanitize::terminal(&passage.path))
        )?;
        if let Some(x) = best.filter(|x| !x.quote_text.is_empty()) {
            writeln!(
                out,
                "    “{}”",
                clip(&shirabe::sanitize::terminal(&x.quote_text), 240)
            )?;
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
