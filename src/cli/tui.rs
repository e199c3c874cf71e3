//! `shirabe tui` (and `shirabe` alone in a terminal): the terminal UI over
//! the same retrieval, answering and ingest as the other commands. This
//! module implements the UI's [`Engine`] with them.
//!
//! Searching and answering hold separate locks, so search as you type
//! keeps working while an answer is written; an ingest reopens the index
//! when it is done.

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::Result;

use shirabe::answer::conversation::{reply, Lookup};
use shirabe::answer::{Answerer, Phase};
use shirabe::index::manifest::{FileRecord, FileStatus};
use shirabe::index::ShirabeIndex;
use shirabe::retrieve::{self, Live, Snapshot};
use shirabe::tui::{Answer, Engine, EngineResult, Info, WatchInfo};

use super::args::TuiArgs;
use super::{Settings, Status};

struct CliEngine {
    settings: Settings,
    args: TuiArgs,
    /// The index and how it is searched, reloaded when a writer (this
    /// TUI's ingest, a watcher) commits; None until there is an index.
    /// Workers take a snapshot and let go of the lock at once.
    search: Mutex<Option<Arc<Live>>>,
    /// When the TUI last looked for an index that was not there.
    looked: Mutex<Instant>,
    /// The status bar's counts, for the snapshot generation they were
    /// counted at.
    counts: Mutex<Option<(u64, Counts)>>,
    /// The answerer: None while it loads in the background (the
    /// first frame does not wait for a model).
    answerer: Mutex<Option<Answerer>>,
    /// How the load goes; `loaded` is signalled when it is done.
    load: Mutex<Load>,
    loaded: Condvar,
}

/// The answerer's loading state.
enum Load {
    Loading {
        /// The model or endpoint.
        what: String,
        since: Instant,
    },
    Done {
        /// What writes answers.
        backend: String,
        /// Its context window (fixed from now on).
        window: usize,
        /// Why the window is that size.
        why: String,
    },
}

/// Seconds the background load sleeps first (a test hook: the first frame
/// and the keys typed meanwhile must not wait for the model).
const SLOW_LOAD: &str = "SHIRABE_TEST_SLOW_LOAD";

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic in a worker is reported by it; the state stays usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn open_search(s: &Settings) -> Result<Option<Arc<Live>>> {
    let index = match ShirabeIndex::open(&s.index) {
        Ok(i) => i,
        Err(shirabe::Error::NoIndex(_)) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let live = super::search::live(s, index)?;
    Ok(Some(Arc::new(live)))
}

/// Documents, chunks and embedded chunks.
type Counts = (usize, u64, u64);

/// The [`Counts`] of a snapshot.
fn counts(s: &Snapshot) -> Counts {
    let documents = s.index.manifest.as_ref().map_or(0, |m| {
        m.files
            .values()
            .filter(|f| f.status == FileStatus::Ok)
            .count()
    });
    let chunks = s
        .index
        .reader()
        .map(|r| r.searcher().num_docs())
        .unwrap_or(0);
    let embedded = shirabe::ingest::embed::coverage(&s.index)
        .ok()
        .flatten()
        .map_or(0, |c| c.with_vectors as u64);
    (documents, chunks, embedded)
}

/// The watcher of the index at `dir`, for the status bar.
fn watch_info(dir: &Path) -> Option<WatchInfo> {
    let w = shirabe::ingest::watch::state(dir)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    Some(WatchInfo {
        folders: w.roots.len(),
        pending: w.pending,
        last_change_secs: w.last_change.map(|t| now.saturating_sub(t)),
    })
}

fn text_of(e: anyhow::Error) -> String {
    shirabe::error::chain_text(e.as_ref())
}

const NO_INDEX: &str = "there is no index yet: press i (outside the query line) to ingest a folder";

impl CliEngine {
    /// The index as last committed (the lock is held only to clone it);
    /// an index created meanwhile (by a watcher, an ingest elsewhere) is
    /// opened, looking at most once a second.
    fn current(&self) -> Option<Arc<Snapshot>> {
        let live = lock(&self.search).clone();
        if let Some(live) = live {
            return Some(live.snapshot());
        }
        {
            let mut looked = lock(&self.looked);
            if looked.elapsed() < Live::CHECK_EVERY {
                return None;
            }
            *looked = Instant::now();
        }
        let opened = open_search(&self.settings).ok().flatten()?;
        *lock(&self.search) = Some(opened.clone());
        Some(opened.snapshot())
    }

    fn with_search<T>(&self, f: impl FnOnce(&Snapshot) -> Result<T>) -> EngineResult<T> {
        let s = self.current().ok_or_else(|| NO_INDEX.to_string())?;
        f(&s).map_err(text_of)
    }

    fn retrieve(
        &self,
        query: &str,
        limit: usize,
        doc: Option<String>,
    ) -> Result<Vec<retrieve::Hit>> {
        let s = self.current().ok_or_else(|| anyhow::anyhow!(NO_INDEX))?;
        Ok(s.retriever.retrieve(Some(&s.index), query, limit, doc)?)
    }
}

impl CliEngine {
    /// Loads the answerer (the model, the endpoint or the extractive
    /// fallback) and sizes its window; on failure answers are extractive
    /// and the status bar says why.
    fn load_answerer(&self, manifest: Option<&shirabe::index::manifest::Manifest>) {
        if let Some(secs) = std::env::var(SLOW_LOAD).ok().and_then(|v| v.parse().ok()) {
            std::thread::sleep(Duration::from_secs_f64(secs));
        }
        let b = &self.args.backend;
        let loaded = super::ask::answerer(manifest, b).and_then(|mut w| {
            let speed = super::ask::fit_window(&mut w, false)?;
            Ok((w, speed))
        });
        let (answerer, backend, why) = match loaded {
            Ok((w, speed)) => {
                let backend = match (&w.generator, &w.endpoint) {
                    (Some(_), _) => super::model_label(b.model.as_deref().unwrap_or_default()),
                    (None, Some(ep)) => format!("{} ({})", ep.model, ep.base_url),
                    _ => "extractive".to_string(),
                };
                let why = match speed {
                    Some(tps) if b.ctx.is_none() => {
                        format!("{:.0} s at {tps:.0} tok/s", w.config.max_wait)
                    }
                    _ => String::new(),
                };
                (w, backend, why)
            }
            Err(e) => {
                // The model failed: answer extractively, and say why.
                let mut plain = b.clone();
                plain.model = None;
                plain.endpoint = None;
                plain.dashscope = false;
                match super::ask::answerer(manifest, &plain) {
                    Ok(w) => (
                        w,
                        format!(
                            "extractive ({}: {})",
                            b.model.as_deref().unwrap_or("model"),
                            text_of(e)
                        ),
                        String::new(),
                    ),
                    Err(e2) => {
                        *lock(&self.load) = Load::Done {
                            backend: format!("no writer: {}; {}", text_of(e), text_of(e2)),
                            window: 0,
                            why: String::new(),
                        };
                        self.loaded.notify_all();
                        return;
                    }
                }
            }
        };
        let window = answerer.window;
        *lock(&self.answerer) = Some(answerer);
        *lock(&self.load) = Load::Done {
            backend,
            window,
            why,
        };
        self.loaded.notify_all();
    }

    /// Waits for the answerer to load, naming the wait; false if stopped.
    fn wait_for_answerer(&self, cancel: &AtomicBool, on_phase: &dyn Fn(&Phase)) -> bool {
        let mut load = lock(&self.load);
        while let Load::Loading { what, since } = &*load {
            if cancel.load(std::sync::atomic::Ordering::Relaxed) {
                return false;
            }
            on_phase(&Phase::LoadingModel {
                what: what.clone(),
                elapsed_s: since.elapsed().as_secs_f64(),
            });
            load = self
                .loaded
                .wait_timeout(load, Duration::from_millis(500))
                .map(|(g, _)| g)
                .unwrap_or_else(|e| e.into_inner().0);
        }
        true
    }
}

impl Engine for CliEngine {
    fn info(&self) -> Info {
        let (backend, window, window_why, loading) = match &*lock(&self.load) {
            Load::Loading { what, since } => (
                what.clone(),
                0,
                String::new(),
                Some(format!(
                    "loading {what}… {:.0} s",
                    since.elapsed().as_secs_f64()
                )),
            ),
            Load::Done {
                backend,
                window,
                why,
            } => (backend.clone(), *window, why.clone(), None),
        };
        let Some(s) = self.current() else {
            return Info {
                mode: "no index".into(),
                backend,
                window,
                window_why,
                loading,
                ..Info::default()
            };
        };
        let counts = {
            // Counting vectors reads every live chunk: once per generation.
            let mut cache = lock(&self.counts);
            match *cache {
                Some((generation, counts)) if generation == s.generation => counts,
                _ => {
                    let counts = counts(&s);
                    *cache = Some((s.generation, counts));
                    counts
                }
            }
        };
        let (documents, chunks, embedded) = counts;
        Info {
            documents,
            chunks,
            embedded,
            watch: watch_info(&self.settings.index),
            mode: s.retriever.mode.name().to_string(),
            backend,
            window,
            window_why,
            loading,
        }
    }

    fn search(&self, query: &str, limit: usize) -> EngineResult<Vec<retrieve::Hit>> {
        self.retrieve(query, limit, None).map_err(text_of)
    }

    fn ask(
        &self,
        question: &str,
        history: &[(String, String)],
        pinned: &[String],
        cancel: &AtomicBool,
        on_phase: &dyn Fn(&Phase),
        on_text: &mut dyn FnMut(&str),
    ) -> EngineResult<Answer> {
        // A question asked while the model loads waits for it.
        if !self.wait_for_answerer(cancel, on_phase) {
            return Err("stopped while the model loaded".into());
        }
        let retrieve = |q: &str| {
            self.retrieve(q, self.args.passages, None)
                .map_err(|e| shirabe::Error::Index(format!("{e:#}")))
        };
        let guard = lock(&self.answerer);
        let answerer = guard.as_ref().ok_or("no answer writer loaded")?;
        // Paraphrased claims are checked by meaning too, when there is an
        // embedder.
        let snapshot = self.current();
        let embed = snapshot.as_ref().and_then(|s| s.retriever.check_embedder());
        let rarity = |q: &str| match &snapshot {
            Some(s) => s.retriever.term_rarity(Some(&s.index), q),
            None => Err(shirabe::Error::Index(NO_INDEX.into())),
        };
        // Pinned documents: their paths, matched literally.
        let pinned_docs: Vec<String> = pinned.iter().map(|p| globset::escape(p)).collect();
        let pinned_hits = match &snapshot {
            Some(s) if !pinned.is_empty() => {
                super::ask::pinned_chunks(&s.retriever, Some(&s.index), &pinned_docs)
                    .map_err(|e| format!("{e:#}"))?
            }
            _ => None,
        };
        let r = reply(
            Lookup {
                retrieve: &retrieve,
                embed: embed.as_deref(),
                rarity: snapshot
                    .as_ref()
                    .map(|_| &rarity as &dyn Fn(&str) -> shirabe::Result<_>),
                pinned: pinned_hits.as_deref(),
            },
            answerer,
            question,
            history,
            cancel,
            on_phase,
            on_text,
        )
        .map_err(|e| e.to_string())?;
        drop(guard);
        let checked = r.checked;
        Ok(Answer {
            note: match (&r.declined, &r.replaced) {
                (Some(why), _) => format!("{}; {why}", r.packed.summary()),
                (None, Some(_)) => format!(
                    "{}; no sentence of the model's answer was supported: the passages' own sentences",
                    r.packed.summary()
                ),
                (None, None) => r.packed.summary(),
            },
            tokens: r.packed.tokens,
            budget: r.packed.budget,
            passages: r.packed.passages,
            checked,
            // The hint to start with a model is for runs without one.
            extractive: r.extractive && r.replaced.is_none(),
        })
    }

    fn summarize(
        &self,
        path: &str,
        meeting: bool,
        cancel: &AtomicBool,
        on_phase: &dyn Fn(&Phase),
        on_text: &mut dyn FnMut(&str),
    ) -> EngineResult<Answer> {
        let hits = self.with_search(|s| {
            let keys: Vec<String> = s
                .index
                .manifest
                .as_ref()
                .map(|m| {
                    m.files
                        .iter()
                        // The path as ingested, or its canonical key.
                        .filter(|(key, f)| f.path == path || key.as_str() == path)
                        .map(|(k, _)| k.clone())
                        .collect()
                })
                .unwrap_or_default();
            anyhow::ensure!(!keys.is_empty(), "{path} is not in the index");
            Ok(retrieve::document_chunks(&s.index, &keys)?)
        })?;
        if !self.wait_for_answerer(cancel, on_phase) {
            return Err("stopped while the model loaded".into());
        }
        let guard = lock(&self.answerer);
        let answerer = guard.as_ref().ok_or("no answer writer loaded")?;
        let t = std::time::Instant::now();
        let r = super::ask::summarize_hits(&hits, meeting, answerer, cancel, on_phase, on_text)
            .map_err(text_of)?;
        let tokens = r
            .passages
            .iter()
            .map(|p| answerer.counter.count(&p.render()))
            .sum();
        drop(guard);
        Ok(Answer {
            note: if r.extractive {
                format!("summary of {path}: {} passages", r.passages.len())
            } else {
                format!(
                    "summary of {path}: {} passages, {} model calls in {} level(s), {:.1}s",
                    r.passages.len(),
                    r.calls,
                    r.levels,
                    t.elapsed().as_secs_f64()
                )
            },
            tokens,
            budget: 0,
            passages: r.passages,
            checked: r.checked,
            extractive: r.extractive,
        })
    }

    fn documents(&self) -> EngineResult<Vec<FileRecord>> {
        Ok(self
            .current()
            .and_then(|s| {
                s.index
                    .manifest
                    .as_ref()
                    .map(|m| m.files.values().cloned().collect())
            })
            .unwrap_or_default())
    }

    fn locate(&self, path: &str) -> String {
        if Path::new(path).exists() {
            return path.to_string();
        }
        // The manifest's key is the file's canonical path.
        self.current()
            .and_then(|s| {
                s.index.manifest.as_ref().and_then(|m| {
                    m.files
                        .iter()
                        .find(|(_, f)| f.path == path)
                        .map(|(key, _)| key.clone())
                })
            })
            .unwrap_or_else(|| path.to_string())
    }

    fn ingest(
        &self,
        path: &Path,
        _cancel: &AtomicBool,
        progress: &(dyn Fn(usize, usize, &str) + Sync),
    ) -> EngineResult<String> {
        // `~/papers` as a shell would read it.
        let expanded = match (path.strip_prefix("~"), directories::BaseDirs::new()) {
            (Ok(rest), Some(d)) => d.home_dir().join(rest),
            _ => path.to_path_buf(),
        };
        let path = expanded.as_path();
        if !path.exists() {
            return Err(format!("{} does not exist", path.display()));
        }
        let s = &self.settings;
        // A watcher owns the index: it ingests the path and watches it.
        if let Some(w) = shirabe::ingest::watch::state(&s.index) {
            shirabe::ingest::watch::hand_over(&s.index, &[path.to_path_buf()])
                .map_err(|e| e.to_string())?;
            return Ok(format!(
                "handed {} to the watcher (pid {}): it is ingested and watched from now on",
                path.display(),
                w.pid
            ));
        }
        let opts = shirabe::ingest::IngestOptions {
            paths: vec![path.to_path_buf()],
            index_dir: s.index.clone(),
            prune: false,
            tokenizer: s.tokenizer.clone(),
            chunking: s.chunking,
            jobs: s.jobs,
            commit_interval: std::time::Duration::from_secs(2),
            ocr: s.ocr.clone(),
            forget: Vec::new(),
            isolation: s.isolation.clone(),
        };
        let total = std::sync::atomic::AtomicUsize::new(0);
        let done = std::sync::atomic::AtomicUsize::new(0);
        let report = shirabe::ingest::run(&opts, &|e| match e {
            shirabe::ingest::Event::Started { files } => {
                total.store(*files, std::sync::atomic::Ordering::Relaxed);
                progress(0, *files, "");
            }
            shirabe::ingest::Event::FileDone { path, .. } => {
                let d = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                progress(d, total.load(std::sync::atomic::Ordering::Relaxed), path);
            }
            shirabe::ingest::Event::OcrPage { path } => {
                let d = done.load(std::sync::atomic::Ordering::Relaxed);
                let t = total.load(std::sync::atomic::Ordering::Relaxed);
                progress(d, t, &format!("{path} (OCR)"));
            }
        })
        .map_err(|e| e.to_string())?;
        // Vectors for what is new (when the index has an embedding model),
        // then the index reopened so searches see it all.
        let embedded = match super::embedding::run_embedding(s, None, false, false) {
            Ok((Ok(r), _)) if r.embedded > 0 => format!(", {} chunks embedded", r.embedded),
            Ok(_) => String::new(),
            Err(e) => format!(" (embedding failed: {})", text_of(e)),
        };
        match lock(&self.search).clone() {
            Some(live) => {
                live.refresh();
            }
            None => *lock(&self.search) = open_search(s).map_err(text_of)?,
        }
        let mut line = format!(
            "ingested {}: {} files, {} indexed, {} unchanged, {} failed; {} pages, {} chunks{embedded}",
            path.display(),
            report.files,
            report.indexed,
            report.unchanged,
            report.failed.len(),
            report.pages,
            report.chunks
        );
        if let Some(f) = report.failed.first() {
            line.push_str(&format!(" — {}: {}", f.path, f.error));
        }
        Ok(line)
    }
}

pub fn run(s: &Settings, a: TuiArgs) -> Result<Status> {
    use std::io::IsTerminal;
    anyhow::ensure!(
        std::io::stdout().is_terminal() && std::io::stdin().is_terminal(),
        "the TUI needs a terminal (for scripts, use `shirabe search`, `ask` or `chat`)"
    );
    // Opening the index prints its notes before the screen is taken over;
    // the model loads in the background, after the first frame.
    let search = open_search(s)?;
    let manifest = search
        .as_ref()
        .and_then(|x| x.current().index.manifest.clone());
    let what = match (
        super::local_model_label(&a.backend),
        &a.backend.model,
        &a.backend.endpoint,
    ) {
        _ if a.backend.extractive => "extractive".to_string(),
        (Some(local), _, _) => local,
        (None, Some(m), Some(url)) => format!("{m} ({url})"),
        (None, None, Some(url)) => url.clone(),
        _ => "extractive".to_string(),
    };
    let mut settings = s.clone();
    settings.quiet = true;
    settings.progress = false;
    let color = s.color;
    let log =
        directories::ProjectDirs::from("", "", "shirabe").map(|d| d.cache_dir().join("tui.log"));
    let opts = shirabe::tui::Options {
        color,
        mouse: !a.no_mouse,
        log,
        query: (!a.query.is_empty()).then(|| a.query.join(" ")),
    };
    let engine = Arc::new(CliEngine {
        settings,
        args: a,
        search: Mutex::new(search),
        looked: Mutex::new(Instant::now()),
        counts: Mutex::new(None),
        answerer: Mutex::new(None),
        load: Mutex::new(Load::Loading {
            what,
            since: Instant::now(),
        }),
        loaded: Condvar::new(),
    });
    let loader = Arc::clone(&engine);
    std::thread::spawn(move || loader.load_answerer(manifest.as_ref()));
    shirabe::tui::run(engine, opts)?;
    Ok(Status::Success)
}
