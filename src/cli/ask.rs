//! `shirabe ask`: retrieve, pack the passages into a Qwen prompt by exact
//! token count, answer (a local Qwen model, or extractively without one),
//! check the citations and print the sources.

use std::io::Write;
use std::time::Instant;

use anyhow::{Context, Result};
use serde_json::json;

use shirabe::answer::{
    check, AnswerConfig, AnswerHooks, Answerer, Checked, LocalModel, Phase, Question, WindowFit,
};
use shirabe::index::manifest::Manifest;
use shirabe::index::ShirabeIndex;
use shirabe::prompt::Packed;
use shirabe::retrieve;

use super::args::{AskArgs, BackendArgs};
use super::style::Style;
use super::{Settings, Status};

pub fn run(s: &Settings, a: &AskArgs) -> Result<Status> {
    let question = a.question.join(" ");
    anyhow::ensure!(!question.trim().is_empty(), "the question is empty");
    let t0 = Instant::now();
    // Without a local index, a named Qdrant collection is searched alone.
    let index = super::search::open_index(s)?;
    let asked = a.mode;
    let retriever = super::search::retriever(s, index.as_ref(), asked)?;
    let mode = retriever.mode;
    let phases = super::phases::PhaseLine::new(s.quiet);
    phases.show(&Phase::Retrieving);
    let hits = retriever.retrieve(index.as_ref(), &question, a.passages, doc_glob(&a.doc))?;
    let retrieved = t0.elapsed().as_secs_f64();

    // The model (if any) decides the tokenizer and the window.
    let manifest = index.as_ref().and_then(|i| i.manifest.as_ref());
    let mut answerer = answerer_shown(manifest, &a.backend, &phases)?;
    let pinned = if a.no_pin || !answerer.has_model() {
        None
    } else {
        pinned_chunks(&retriever, index.as_ref(), &a.doc)?
    };
    // Pinned documents are read whole whatever the wait (once: the
    // prompt cache keeps them), so the window note is for retrieval.
    let prefill_speed = fit_window(&mut answerer, !s.quiet && !a.json && pinned.is_none())?;
    let embed = retriever.check_embedder();
    let embed_ref = embed.as_deref();
    let mut out = std::io::stdout().lock();
    let st = Style::new(s.color);
    let stream = !a.json;
    let mut failed: Option<std::io::Error> = None;
    let cancel = super::generate::interrupt_flag();
    let show = |packed: &Packed| {
        phases.done();
        if a.show_context {
            // The prompt as the local model will read it (its own chat
            // template), else as packed.
            match &answerer.generator {
                Some(g) => eprintln!("{}", g.chat(Some(&packed.system), &[], &packed.user)),
                None => eprintln!("{}", packed.prompt),
            }
        }
        if !s.quiet && !a.json {
            // Tokens the prompt cache holds are not read again.
            let cached = answerer.generator.as_ref().map_or(0, |g| {
                g.encode(&g.chat(Some(&packed.system), &[], &packed.user))
                    .map_or(0, |ids| g.cached_prefix(&ids))
            });
            let held = match cached {
                0 => String::new(),
                n => format!(" ({} cached)", shirabe::prompt::thousands(n)),
            };
            let speed = prefill_speed.or_else(|| answerer.prefill_estimate());
            match speed {
                Some(tps) if answerer.generator.is_some() => eprintln!(
                    "{}{held}; time to first token ~{:.0}s",
                    packed.summary(),
                    packed.tokens.saturating_sub(cached) as f64 / tps
                ),
                _ => eprintln!("{}{held}", packed.summary()),
            }
        }
    };
    let rarity = retriever.term_rarity(index.as_ref(), &question)?;
    let r = answerer.answer(
        &Question {
            text: &question,
            hits: &hits,
            embed: embed_ref,
            cancel,
            max_answer_tokens: None,
            rarity: Some(&rarity),
            written: None,
            history: &[],
            pinned: pinned.as_deref(),
        },
        &AnswerHooks {
            on_packed: &show,
            on_note: &|note: &str| {
                phases.done();
                if !s.quiet {
                    eprintln!("note: {note}");
                }
            },
            on_phase: &|p| phases.show(p),
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
    phases.done();
    if let Some(e) = failed {
        return Err(e.into());
    }
    if stream && (!r.extractive || r.replaced.is_some()) && r.declined.is_none() {
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
            "backend": match (&answerer.generator, &answerer.endpoint) {
                (Some(_), _) => a.backend.model.clone(),
                (None, Some(ep)) => Some(format!("{} ({})", ep.model, ep.base_url)),
                _ => Some("extractive".to_string()),
            },
            "mode": mode.name(),
            "citations": checked.citations,
            "invalid_citations": checked.invalid,
            "unverified_citations": checked.unverified,
            "unsupported": checked.unsupported,
            "meta_sentences": checked.meta,
            "refused": checked.refused,
            "declined": r.declined,
            "replaced": r.replaced,
            "grounding": r.grounding,
            "passages": packed.passages,
            "context": {"tokens": packed.tokens, "budget": packed.budget, "window": answerer.window,
                        "documents": packed.documents, "left_out": packed.left_out,
                        "pinned": packed.pinned, "cached_tokens": r.cached_tokens,
                        "prefill_tokens_per_s_estimate": prefill_speed},
            "usage": r.usage,
            "timings": {"retrieve_s": retrieved, "pack_s": r.pack_s,
                        "ttft_s": r.first_token_s.map(|t| t + retrieved),
                        "first_token_s": r.first_token_s.map(|t| t + retrieved), "total_s": answer_secs},
        });
        serde_json::to_writer(&mut out, &v)?;
        writeln!(out)?;
        out.flush()?;
        return Ok(status(checked, r.interrupted));
    }
    if let Some(why) = &r.declined {
        writeln!(out, "{}", shirabe::answer::NO_ANSWER)?;
        writeln!(
            out,
            "{}",
            st.dim(&format!("({})", shirabe::sanitize::terminal(why)))
        )?;
    } else if r.extractive {
        if checked.answer.is_empty() {
            writeln!(out, "{}", shirabe::answer::NO_ANSWER)?;
        } else {
            writeln!(out, "{}", shirabe::sanitize::multiline(&checked.answer))?;
        }
        if !s.quiet {
            let why = if r.replaced.is_some() {
                "(the passages' own sentences: no sentence of the model's answer was supported)"
            } else {
                shirabe::answer::MODEL_HINT
            };
            writeln!(out, "{}", st.dim(why))?;
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

/// One glob for the `--doc` values: the value itself, or several as
/// alternatives (`{a,b}`).
pub(super) fn doc_glob(docs: &[String]) -> Option<String> {
    match docs {
        [] => None,
        [one] => Some(one.clone()),
        many => Some(format!("{{{}}}", many.join(","))),
    }
}

/// Every chunk of the documents `docs` name (paths, file names or globs),
/// each document in order, documents by key: what `--doc` pins. `None`
/// without `--doc`; an error when a value matches no document.
pub(super) fn pinned_chunks(
    retriever: &retrieve::Retriever,
    index: Option<&ShirabeIndex>,
    docs: &[String],
) -> Result<Option<Vec<retrieve::Hit>>> {
    if docs.is_empty() {
        return Ok(None);
    }
    let mut keys = Vec::new();
    for d in docs {
        let found = retriever.matching_docs(index, d)?;
        anyhow::ensure!(
            !found.is_empty(),
            "no indexed document matches {d:?} (see `shirabe status --files`)"
        );
        keys.extend(found);
    }
    keys.sort();
    keys.dedup();
    Ok(Some(retriever.document_chunks(index, &keys)?))
}

/// The answerer the backend flags ask for: a local model, an endpoint,
/// or neither (extractive answers).
pub(super) fn answerer(manifest: Option<&Manifest>, b: &BackendArgs) -> Result<Answerer> {
    let endpoint = endpoint_of(b)?;
    let model = match &b.model {
        Some(m) if !b.extractive && endpoint.is_none() => Some(LocalModel {
            spec: m.clone(),
            dtype: b.dtype.into(),
            cache_dtype: b.cache_dtype,
        }),
        _ => None,
    };
    let system_prompt = match &b.system_prompt {
        Some(f) => Some(
            std::fs::read_to_string(f)
                .with_context(|| format!("reading the system prompt {}", f.display()))?,
        ),
        None => None,
    };
    let config = AnswerConfig {
        max_answer_tokens: b.max_answer_tokens,
        temperature: b.temperature,
        system_prompt,
        ctx: b.ctx,
        max_wait: b.max_wait,
        decline: !b.always_answer,
        guided_citations: b.guided_citations,
    };
    let what = model.as_ref().map(|m| m.spec.clone());
    Answerer::new(model.as_ref(), endpoint, manifest, config).with_context(|| match what {
        Some(m) => format!("loading the model {m}"),
        None => "loading the token counter".to_string(),
    })
}

/// [`answerer`], with the local model's load shown on `phases`.
fn answerer_shown(
    manifest: Option<&Manifest>,
    b: &BackendArgs,
    phases: &super::phases::PhaseLine,
) -> Result<Answerer> {
    if let Some(what) = super::local_model_label(b) {
        phases.show(&Phase::LoadingModel {
            what,
            elapsed_s: 0.0,
        });
    }
    let answerer = answerer(manifest, b);
    phases.done();
    answerer
}

/// Sizes a local CPU model's window by its prefill speed and `--max-wait`
/// (saying so on stderr when `note`); the estimated speed, if known.
pub(super) fn fit_window(w: &mut Answerer, note: bool) -> Result<Option<f64>> {
    let fit = w.fit_to_wait(&|n| {
        if note {
            eprintln!("{n}");
        }
    })?;
    if let Some(WindowFit {
        tokens_per_s,
        shrunk_to: Some(window),
    }) = fit
    {
        if note {
            eprintln!(
                "note: local CPU prefill runs at ~{tokens_per_s:.0} tokens/s: using a {window}-token context to answer within ~{:.0}s (--ctx N or --max-wait S to change)",
                w.config.max_wait
            );
        }
    }
    Ok(fit.map(|f| f.tokens_per_s))
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
    if !c.unverified.is_empty() {
        writeln!(
            out,
            "{} the model's citations of {} were removed: no sentence there holds the claim",
            st.dim("checked:"),
            c.unverified
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
        // be tied to a passage, show what it was given; a refusal shows
        // the nearest passages, for the user to judge.
        if passages.is_empty() {
            return Ok(());
        }
        let (head, why) = if c.answer.trim().is_empty() || c.refused {
            ("Nearest passages", "(none seems to answer the question)")
        } else {
            (
                "Passages given",
                "(no sentence of the answer could be tied to one)",
            )
        };
        writeln!(out, "\n{} {}", st.bold(head), st.dim(why))?;
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
                shirabe::prompt::ocr_mark(
                    shirabe::prompt::page_range(
                        x.located.page,
                        x.located.page,
                        x.located.page_label.as_deref(),
                    ),
                    x.located.ocr,
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
    answerer: &Answerer,
    cancel: &std::sync::atomic::AtomicBool,
    on_phase: &dyn Fn(&Phase),
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
    let boxed = answerer.backend(cancel);
    let (text, calls, levels) = match boxed.as_deref() {
        Some(m) => {
            let r = summarize(
                &passages,
                task,
                m,
                shirabe::answer::summarize::Room {
                    counter: &answerer.counter,
                    window: answerer.window,
                    max_answer_tokens: answerer.config.max_answer_tokens,
                },
                on_phase,
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
            let mut hits = super::search::retriever(s, Some(&index), None)?.retrieve(
                Some(&index),
                q,
                40,
                None,
            )?;
            // In document and page order, so the summary reads in order.
            hits.sort_by(|x, y| (&x.path, x.page_start).cmp(&(&y.path, y.page_start)));
            hits
        }
        (None, None) => anyhow::bail!("give a DOC or --all QUERY"),
    };
    let phases = super::phases::PhaseLine::new(s.quiet);
    let answerer = answerer_shown(index.manifest.as_ref(), &a.backend, &phases)?;
    let cancel = super::generate::interrupt_flag();
    let t = Instant::now();
    let summarized = summarize_hits(
        &hits,
        a.meeting,
        &answerer,
        cancel,
        &|p| phases.show(p),
        &mut |_| {},
    );
    phases.done();
    let Summarized {
        passages,
        checked,
        calls,
        levels,
        extractive,
    } = summarized?;
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
