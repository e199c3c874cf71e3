//! The terminal UI (`shirabe tui`): search as you type, ask with a
//! streaming cited answer, preview the cited passage, browse and ingest
//! documents.
//!
//! Three parts, so that everything but the terminal itself is testable:
//! - [`app`]: the state and its event handling. Keys and worker messages go
//!   in; [`app::Action`]s (search, ask, open a PDF, ...) come out. No I/O.
//! - [`ui`]: draws an [`app::App`] on a ratatui frame; snapshot-tested on
//!   ratatui's `TestBackend`.
//! - [`run`]: the terminal and the tokio loop. Keys, mouse and resize
//!   events arrive as a stream; the work of an action runs on tokio's
//!   blocking pool through the [`Engine`] and reports back by messages, so
//!   the keyboard never waits. The screen redraws on every event and at
//!   least 30 times a second while an answer streams or an ingest runs.
//!   The terminal is restored on exit, on error and on panic.
//!
//! The [`Engine`] is the seam to the rest of shirabe: the binary implements
//! it over the index, the retrievers and the answer backends.

pub mod app;
mod run;
mod system;
pub mod ui;

use std::path::Path;
use std::sync::atomic::AtomicBool;

use crate::answer::{Checked, Phase};
use crate::index::manifest::FileRecord;
use crate::prompt::Passage;
use crate::retrieve::Hit;

pub use run::{run, Options};

/// Errors from the engine are shown to the user, not handled.
pub type EngineResult<T> = std::result::Result<T, String>;

/// What the TUI asks of shirabe. Each call runs on a worker thread.
pub trait Engine: Send + Sync {
    /// Index and backend figures for the status bar.
    fn info(&self) -> Info;

    /// The best `limit` chunks for `query`.
    fn search(&self, query: &str, limit: usize) -> EngineResult<Vec<Hit>>;

    /// Answers `question` after the earlier turns of the conversation
    /// (question, answer), with the documents at `pinned` (paths as
    /// indexed) read whole when they fit, naming each phase to `on_phase`
    /// as it starts and handing text to `on_text` as it is produced.
    fn ask(
        &self,
        question: &str,
        history: &[(String, String)],
        pinned: &[String],
        cancel: &AtomicBool,
        on_phase: &dyn Fn(&Phase),
        on_text: &mut dyn FnMut(&str),
    ) -> EngineResult<Answer>;

    /// Summarizes one indexed document (its path as the manifest has it);
    /// `meeting` asks for decisions, action items and open questions.
    fn summarize(
        &self,
        path: &str,
        meeting: bool,
        cancel: &AtomicBool,
        on_phase: &dyn Fn(&Phase),
        on_text: &mut dyn FnMut(&str),
    ) -> EngineResult<Answer>;

    /// The ingested files.
    fn documents(&self) -> EngineResult<Vec<FileRecord>>;

    /// Where the file a result or passage names is now (paths are kept as
    /// given to ingest, which may be relative to another directory).
    fn locate(&self, path: &str) -> String {
        path.to_string()
    }

    /// Ingests `path` (file or directory) and embeds what is new;
    /// `progress(done, total, current)` as files finish. Returns a one-line
    /// report.
    fn ingest(
        &self,
        path: &Path,
        cancel: &AtomicBool,
        progress: &(dyn Fn(usize, usize, &str) + Sync),
    ) -> EngineResult<String>;
}

/// Figures for the status bar.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Info {
    /// Indexed documents.
    pub documents: usize,
    /// Indexed chunks.
    pub chunks: u64,
    /// Chunks that have a vector.
    pub embedded: u64,
    /// Search mode (`bm25`, `hybrid`, ...).
    pub mode: String,
    /// What writes answers: a model name, an endpoint, or `extractive`.
    pub backend: String,
    /// The context window answers are packed into, in tokens.
    pub window: usize,
    /// Why the window is that size (`60 s at 102 tok/s`), when the CPU's
    /// speed chose it.
    pub window_why: String,
    /// The model while it loads in the background (`loading … 12 s`).
    pub loading: Option<String>,
    /// The watcher keeping the index current, when one runs.
    pub watch: Option<WatchInfo>,
}

/// A running watcher, as the status bar shows it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WatchInfo {
    /// Folders watched.
    pub folders: usize,
    /// Changed paths not ingested yet.
    pub pending: usize,
    /// Seconds since it last ingested a change.
    pub last_change_secs: Option<u64>,
}

/// A finished answer or summary.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The passages it was given, numbered as it cites them.
    pub passages: Vec<Passage>,
    /// Its text with citations checked (invalid ones removed).
    pub checked: Checked,
    /// Prompt tokens used.
    pub tokens: usize,
    /// The token budget they had to fit.
    pub budget: usize,
    /// Written by the extractive fallback (no model).
    pub extractive: bool,
    /// A note for the status bar (`context: ...`, model calls, ...).
    pub note: String,
}
