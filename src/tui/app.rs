//! The TUI's state and its event handling, with no terminal: keys, mouse
//! and workers' reports change the [`App`] and return [`Action`]s for the
//! event loop to carry out.

use std::time::{Duration, Instant};

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers, MouseEvent, MouseEventKind};
use ratatui::layout::{Position, Rect};

use super::{Answer, Info};
use crate::answer::conversation::{cited_sources, to_markdown, Turn};
use crate::index::manifest::FileRecord;
use crate::prompt::Passage;
use crate::retrieve::Hit;

/// How long typing must pause before the query is searched.
pub const DEBOUNCE: Duration = Duration::from_millis(150);

/// Results shown for a search.
pub const RESULT_LIMIT: usize = 30;

/// The pane that has the keyboard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Focus {
    /// The query line: keys type.
    Query,
    /// Results, sources or documents.
    List,
    /// The answer.
    Answer,
    /// The passage preview.
    Preview,
}

impl Focus {
    fn next(self) -> Focus {
        match self {
            Focus::Query => Focus::List,
            Focus::List => Focus::Answer,
            Focus::Answer => Focus::Preview,
            Focus::Preview => Focus::Query,
        }
    }

    fn prev(self) -> Focus {
        match self {
            Focus::Query => Focus::Preview,
            Focus::List => Focus::Query,
            Focus::Answer => Focus::List,
            Focus::Preview => Focus::Answer,
        }
    }
}

/// What the list pane shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListView {
    /// Search results for the query.
    Results,
    /// The passages the answer was given (its sources).
    Sources,
    /// The ingested documents.
    Documents,
}

/// A one-line prompt over the status bar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prompt {
    /// A path to ingest.
    Ingest(String),
    /// A file to save the conversation to.
    Save(String),
}

/// Work for the event loop.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Search `query`; the result comes back as [`Report::Results`] with `seq`.
    Search {
        /// Sequence number (older results are dropped).
        seq: u64,
        /// The query.
        query: String,
    },
    /// Answer `question` after `history`.
    Ask {
        /// Sequence number.
        seq: u64,
        /// The question.
        question: String,
        /// Earlier (question, answer) turns.
        history: Vec<(String, String)>,
        /// Documents pinned whole before the question (paths as indexed).
        pinned: Vec<String>,
    },
    /// Summarize the document at `path`.
    Summarize {
        /// Sequence number.
        seq: u64,
        /// Its path as indexed.
        path: String,
        /// As meeting minutes: decisions, action items, open questions.
        meeting: bool,
    },
    /// Stop the running answer.
    Cancel,
    /// Reload the document list.
    LoadDocuments,
    /// Ingest a path in the background.
    Ingest(String),
    /// Open a file at a page with the system viewer.
    Open {
        /// The file.
        path: String,
        /// Its (physical) page.
        page: u32,
    },
    /// Put text on the clipboard.
    Copy(String),
    /// Write the conversation as Markdown.
    Save {
        /// The file.
        path: String,
        /// Its content.
        markdown: String,
    },
    /// Leave the TUI.
    Quit,
}

/// What the workers report.
#[derive(Debug, Clone)]
pub enum Report {
    /// Results of [`Action::Search`].
    Results {
        /// Its sequence number.
        seq: u64,
        /// The query searched.
        query: String,
        /// The hits.
        hits: Vec<Hit>,
    },
    /// A piece of a streaming answer.
    Text {
        /// The answer's sequence number.
        seq: u64,
        /// The text.
        text: String,
    },
    /// The answer is complete.
    Answered {
        /// Its sequence number.
        seq: u64,
        /// The answer.
        answer: Box<Answer>,
    },
    /// A search or an answer failed.
    Failed {
        /// Its sequence number.
        seq: u64,
        /// Why.
        error: String,
    },
    /// The document list.
    Documents(Result<Vec<FileRecord>, String>),
    /// Ingest progress.
    IngestProgress {
        /// Files done.
        done: usize,
        /// Files in all.
        total: usize,
        /// The file just done.
        current: String,
    },
    /// The ingest finished (its report) or failed.
    IngestDone(Result<String, String>),
    /// New status bar figures.
    Info(Info),
    /// What an answer is doing (before and beside its text).
    Phase {
        /// The answer's sequence number.
        seq: u64,
        /// The phase, for the user.
        text: String,
        /// How far it is (0–1), when it can tell (reading the prompt, a
        /// summary's parts).
        progress: Option<f64>,
    },
    /// The outcome of an action the loop carried out itself (open, copy,
    /// save): a note, or an error.
    Note(Result<String, String>),
}

/// A running or finished answer.
#[derive(Debug, Clone)]
pub struct AnswerView {
    /// Its sequence number.
    pub seq: u64,
    /// The question (or `summary of PATH`).
    pub question: String,
    /// Text so far; the checked text once done.
    pub text: String,
    /// Set when done.
    pub answer: Option<Answer>,
    /// When it started.
    pub started: Instant,
    /// Stopped by the user.
    pub cancelled: bool,
    /// Whether it is a conversation turn (summaries are not).
    pub turn: bool,
    /// What it is doing now (`reading the prompt: …`), and how far.
    pub phase: Option<(String, Option<f64>)>,
    /// Pieces of text streamed (about one per token), and when the first
    /// came: the writing speed.
    pub pieces: usize,
    /// When the first piece came.
    pub first_text: Option<Instant>,
}

impl AnswerView {
    /// Still streaming.
    pub fn running(&self) -> bool {
        self.answer.is_none()
    }

    /// Pieces of text a second since the first, once there are enough to
    /// tell.
    pub fn pieces_per_s(&self, now: Instant) -> Option<f64> {
        let secs = now
            .saturating_duration_since(self.first_text?)
            .as_secs_f64();
        (self.pieces >= 8 && secs >= 0.5).then(|| (self.pieces - 1) as f64 / secs)
    }
}

/// The status bar's line: a note, or an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusLine {
    /// The text.
    pub text: String,
    /// Shown as an error.
    pub error: bool,
}

/// A running ingest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestView {
    /// What is ingested.
    pub path: String,
    /// Files done.
    pub done: usize,
    /// Files in all (0 until known).
    pub total: usize,
    /// The file just done.
    pub current: String,
}

/// A pane's scrolling: automatic (the answer's end while it streams, the
/// cited sentence in the preview) until the user scrolls, and kept within
/// what was last drawn.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Scroll {
    /// The user's offset, in lines, when not automatic.
    pub offset: u16,
    /// Not scrolled by the user since the content changed.
    pub manual: bool,
    /// The offset last drawn.
    pub drawn: u16,
    /// The largest useful offset at the last draw.
    pub max: u16,
}

impl Scroll {
    /// Back to automatic (new content).
    pub fn reset(&mut self) {
        *self = Scroll {
            drawn: 0,
            max: self.max,
            ..Scroll::default()
        };
    }

    /// Scrolls by `delta` lines from what is on screen.
    pub fn by(&mut self, delta: i32) {
        let from = if self.manual { self.offset } else { self.drawn };
        self.offset = (i32::from(from) + delta).clamp(0, i32::from(self.max)) as u16;
        self.manual = true;
    }

    /// To the first line.
    pub fn top(&mut self) {
        self.offset = 0;
        self.manual = true;
    }

    /// To the last screenful.
    pub fn bottom(&mut self) {
        self.offset = self.max;
        self.manual = true;
    }

    /// The offset to draw, given the automatic one and the largest; noted
    /// for the next scroll.
    pub fn resolve(&mut self, automatic: u16, max: u16) -> u16 {
        self.max = max;
        self.drawn = if self.manual { self.offset } else { automatic }.min(max);
        self.drawn
    }
}

/// Where the panes were drawn last (for the mouse).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Areas {
    /// Query line.
    pub query: Rect,
    /// List pane.
    pub list: Rect,
    /// Answer pane.
    pub answer: Rect,
    /// Preview pane.
    pub preview: Rect,
}

/// The whole state of the TUI.
#[derive(Debug, Clone)]
pub struct App {
    /// The query line.
    pub query: String,
    /// Documents every question reads whole (paths as indexed; `p`).
    pub pinned: Vec<String>,
    /// Cursor in the query line, in characters.
    pub cursor: usize,
    /// The focused pane.
    pub focus: Focus,
    /// What the list shows.
    pub list: ListView,
    /// Search results.
    pub results: Vec<Hit>,
    /// The query the results are for.
    pub results_query: String,
    /// Selected result.
    pub result_sel: usize,
    /// Selected source.
    pub source_sel: usize,
    /// Ingested documents.
    pub documents: Vec<FileRecord>,
    /// Selected document.
    pub doc_sel: usize,
    /// The current answer.
    pub answer: Option<AnswerView>,
    /// Finished turns of the conversation.
    pub turns: Vec<Turn>,
    /// Answer pane scroll (follows the end while an answer streams).
    pub answer_scroll: Scroll,
    /// Preview pane scroll (starts at the cited sentence).
    pub preview_scroll: Scroll,
    /// The key help is shown.
    pub help: bool,
    /// An open one-line prompt.
    pub prompt: Option<Prompt>,
    /// The status bar's line.
    pub status_line: Option<StatusLine>,
    /// Status-bar figures.
    pub info: Info,
    /// A running ingest.
    pub ingest: Option<IngestView>,
    /// Colours allowed (`NO_COLOR` unset).
    pub color: bool,
    /// Where the panes were drawn.
    pub areas: Areas,
    /// Set when the user quits.
    pub quit: bool,
    seq: u64,
    search_seq: u64,
    search_due: Option<Instant>,
    searching: bool,
}

impl App {
    /// A fresh session.
    pub fn new(info: Info, color: bool) -> App {
        App {
            query: String::new(),
            pinned: Vec::new(),
            cursor: 0,
            focus: Focus::Query,
            list: ListView::Results,
            results: Vec::new(),
            results_query: String::new(),
            result_sel: 0,
            source_sel: 0,
            documents: Vec::new(),
            doc_sel: 0,
            answer: None,
            turns: Vec::new(),
            answer_scroll: Scroll::default(),
            preview_scroll: Scroll::default(),
            help: false,
            prompt: None,
            status_line: None,
            info,
            ingest: None,
            color,
            areas: Areas::default(),
            quit: false,
            seq: 0,
            search_seq: 0,
            search_due: None,
            searching: false,
        }
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// Puts `query` on the query line and searches it without waiting.
    pub fn set_query(&mut self, query: &str, now: Instant) {
        self.query = query.to_string();
        self.cursor = query.chars().count();
        self.search_due = Some(now);
    }

    /// An answer is streaming.
    pub fn generating(&self) -> bool {
        self.answer.as_ref().is_some_and(AnswerView::running)
    }

    /// A search is on its way.
    pub fn searching(&self) -> bool {
        self.searching || self.search_due.is_some()
    }

    /// Something is running that changes the screen by itself, so it must
    /// be redrawn often.
    pub fn busy(&self) -> bool {
        self.generating() || self.ingest.is_some()
    }

    /// When the pending search is due, if one is.
    pub fn search_due(&self) -> Option<Instant> {
        self.search_due
    }

    /// The debounced search, once typing has paused long enough.
    pub fn tick(&mut self, now: Instant) -> Option<Action> {
        let due = self.search_due?;
        if now < due {
            return None;
        }
        self.search_due = None;
        let query = self.query.trim().to_string();
        if query.is_empty() {
            // Whatever search is on its way is for an older query.
            self.search_seq = self.next_seq();
            self.searching = false;
            self.results.clear();
            self.results_query.clear();
            return None;
        }
        self.search_seq = self.next_seq();
        self.searching = true;
        Some(Action::Search {
            seq: self.search_seq,
            query,
        })
    }

    fn show_info(&mut self, text: impl Into<String>) {
        self.status_line = Some(StatusLine {
            text: text.into(),
            error: false,
        });
    }

    fn show_error(&mut self, text: impl Into<String>) {
        self.status_line = Some(StatusLine {
            text: text.into(),
            error: true,
        });
    }

    /// The passage the preview shows: the selected source, result or
    /// nothing (documents).
    pub fn previewed(&self) -> Option<Preview<'_>> {
        match self.list {
            ListView::Sources => {
                let a = self.answer.as_ref()?.answer.as_ref()?;
                let p = a.passages.get(self.source_sel)?;
                let quotes = a
                    .checked
                    .citations
                    .iter()
                    .filter(|c| c.n == p.n)
                    .map(|c| c.quote)
                    .collect();
                Some(Preview::Passage {
                    passage: p,
                    query: self.answer.as_ref().map_or("", |a| a.question.as_str()),
                    quotes,
                })
            }
            ListView::Results => self.results.get(self.result_sel).map(|h| Preview::Hit {
                hit: h,
                query: &self.results_query,
            }),
            ListView::Documents => self.documents.get(self.doc_sel).map(Preview::Document),
        }
    }

    /// The file and page of the previewed passage.
    fn previewed_page(&self) -> Option<(String, u32)> {
        match self.previewed()? {
            Preview::Passage { passage, .. } => {
                // The page of the quote that supports its claim best.
                let page = self
                    .answer
                    .as_ref()
                    .and_then(|a| a.answer.as_ref())
                    .and_then(|a| {
                        a.checked
                            .citations
                            .iter()
                            .filter(|c| c.n == passage.n)
                            .max_by(|x, y| {
                                (x.supported, x.quote_support)
                                    .partial_cmp(&(y.supported, y.quote_support))
                                    .unwrap_or(std::cmp::Ordering::Equal)
                            })
                            .map(|c| c.located.page)
                    })
                    .unwrap_or(passage.page_start);
                Some((passage.path.clone(), page))
            }
            Preview::Hit { hit, .. } => Some((hit.path.clone(), hit.page)),
            Preview::Document(d) => Some((d.path.clone(), 1)),
        }
    }

    fn list_len(&self) -> usize {
        match self.list {
            ListView::Results => self.results.len(),
            ListView::Sources => self.sources().len(),
            ListView::Documents => self.documents.len(),
        }
    }

    /// The answer's passages (empty while it streams).
    pub fn sources(&self) -> &[Passage] {
        self.answer
            .as_ref()
            .and_then(|a| a.answer.as_ref())
            .map_or(&[], |a| a.passages.as_slice())
    }

    fn selected_mut(&mut self) -> &mut usize {
        match self.list {
            ListView::Results => &mut self.result_sel,
            ListView::Sources => &mut self.source_sel,
            ListView::Documents => &mut self.doc_sel,
        }
    }

    /// The selection in the list pane.
    pub fn selected(&self) -> usize {
        match self.list {
            ListView::Results => self.result_sel,
            ListView::Sources => self.source_sel,
            ListView::Documents => self.doc_sel,
        }
    }

    fn move_selection(&mut self, by: isize) {
        let len = self.list_len();
        if len == 0 {
            return;
        }
        let sel = self.selected_mut();
        *sel = (*sel as isize + by).clamp(0, len as isize - 1) as usize;
        self.preview_scroll.reset();
    }

    fn scroll(&mut self, pane: Focus, by: i32) {
        match pane {
            Focus::Answer => self.answer_scroll.by(by),
            Focus::Preview => self.preview_scroll.by(by),
            Focus::List => self.move_selection(by as isize),
            Focus::Query => {}
        }
    }

    /// Jumps the preview to passage `n` of the answer (or result `n`).
    fn jump(&mut self, n: usize) {
        if n == 0 {
            return;
        }
        if !self.sources().is_empty() {
            if n <= self.sources().len() {
                self.list = ListView::Sources;
                self.source_sel = n - 1;
                self.preview_scroll.reset();
            } else {
                self.show_error(format!("there is no passage [{n}]"));
            }
        } else if n <= self.results.len() {
            self.list = ListView::Results;
            self.result_sel = n - 1;
            self.preview_scroll.reset();
        }
    }

    /// Moves to the next (or previous) passage the answer cites.
    fn cycle_citation(&mut self, forward: bool) {
        let Some(a) = self.answer.as_ref().and_then(|a| a.answer.as_ref()) else {
            return;
        };
        let mut cited: Vec<usize> = a.checked.citations.iter().map(|c| c.n).collect();
        cited.sort_unstable();
        cited.dedup();
        if cited.is_empty() {
            return;
        }
        let current = self.source_sel + 1;
        let next = if forward {
            cited.iter().find(|&&n| n > current).unwrap_or(&cited[0])
        } else {
            cited
                .iter()
                .rev()
                .find(|&&n| n < current)
                .unwrap_or(&cited[cited.len() - 1])
        };
        self.jump(*next);
    }

    fn schedule_search(&mut self, now: Instant) {
        self.search_due = Some(now + DEBOUNCE);
    }

    fn history(&self) -> Vec<(String, String)> {
        self.turns
            .iter()
            .map(|t| (t.question.clone(), t.answer.clone()))
            .collect()
    }

    fn start_answer(&mut self, question: String, turn: bool, now: Instant) -> u64 {
        let seq = self.next_seq();
        self.answer = Some(AnswerView {
            seq,
            question,
            text: String::new(),
            answer: None,
            started: now,
            cancelled: false,
            turn,
            phase: None,
            pieces: 0,
            first_text: None,
        });
        self.answer_scroll.reset();
        self.status_line = None;
        seq
    }

    fn ask(&mut self, now: Instant) -> Vec<Action> {
        let question = self.query.trim().to_string();
        if question.is_empty() {
            return vec![];
        }
        let mut out = Vec::new();
        if self.generating() {
            out.push(Action::Cancel);
        }
        let history = self.history();
        let seq = self.start_answer(question.clone(), true, now);
        // The keys now read the answer (1-9, ]); `/` types a follow-up.
        self.focus = Focus::Answer;
        out.push(Action::Ask {
            seq,
            question,
            history,
            pinned: self.pinned.clone(),
        });
        out
    }

    /// The document the list has selected (its path as indexed).
    fn selected_document(&self) -> Option<String> {
        match self.list {
            ListView::Documents => self.documents.get(self.doc_sel).map(|d| d.path.clone()),
            ListView::Results => self.results.get(self.result_sel).map(|h| h.path.clone()),
            ListView::Sources => self.sources().get(self.source_sel).map(|p| p.path.clone()),
        }
    }

    /// Pins the selected document (every question then reads it whole,
    /// and the prompt cache keeps it), or unpins it.
    fn toggle_pin(&mut self) {
        let Some(path) = self.selected_document() else {
            self.show_error("select a document to pin");
            return;
        };
        let name = path.rsplit('/').next().unwrap_or(&path).to_string();
        if let Some(i) = self.pinned.iter().position(|p| *p == path) {
            self.pinned.remove(i);
            self.show_info(format!("unpinned {name}"));
        } else {
            self.pinned.push(path);
            self.show_info(format!(
                "pinned {name}: questions read it whole, and it is read once (p again to unpin)"
            ));
        }
    }

    fn summarize_selected(&mut self, meeting: bool, now: Instant) -> Vec<Action> {
        let Some(path) = self.selected_document() else {
            self.show_error("select a document to summarize");
            return vec![];
        };
        let mut out = Vec::new();
        if self.generating() {
            out.push(Action::Cancel);
        }
        let what = if meeting {
            "Meeting summary"
        } else {
            "Summary"
        };
        let seq = self.start_answer(format!("{what} of {path}"), false, now);
        out.push(Action::Summarize { seq, path, meeting });
        out
    }

    /// The answer and its cited sources as plain text (for `y`).
    pub fn answer_with_sources(&self) -> Option<String> {
        let view = self.answer.as_ref()?;
        let a = view.answer.as_ref()?;
        let mut s = format!("{}\n", a.checked.answer.trim());
        let sources = cited_sources(&a.passages, &a.checked);
        if !sources.is_empty() {
            s.push_str("\nSources\n");
            for line in sources {
                s.push_str(&line);
                s.push('\n');
            }
        }
        Some(s)
    }

    /// The conversation as Markdown (for `w`).
    pub fn markdown(&self) -> String {
        to_markdown("shirabe session", &self.turns)
    }

    /// Handles a key press.
    pub fn on_key(&mut self, key: KeyEvent, now: Instant) -> Vec<Action> {
        if key.kind == KeyEventKind::Release {
            return vec![];
        }
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        // Ctrl-C stops an answer, else quits; Ctrl-Q always quits.
        match key.code {
            KeyCode::Char('c') if ctrl => {
                return if self.generating() {
                    self.cancel()
                } else {
                    self.quit = true;
                    vec![Action::Quit]
                };
            }
            KeyCode::Char('q') if ctrl => {
                self.quit = true;
                return vec![Action::Quit];
            }
            _ => {}
        }
        if self.help {
            self.help = false;
            return vec![];
        }
        if let Some(p) = &mut self.prompt {
            let text = match p {
                Prompt::Ingest(t) | Prompt::Save(t) => t,
            };
            match key.code {
                KeyCode::Esc => self.prompt = None,
                KeyCode::Backspace => {
                    text.pop();
                }
                KeyCode::Char('u') if ctrl => text.clear(),
                KeyCode::Char(c) if !ctrl => text.push(c),
                KeyCode::Enter => {
                    let p = self.prompt.take().expect("prompt is open");
                    return self.submit_prompt(p);
                }
                _ => {}
            }
            return vec![];
        }
        match key.code {
            KeyCode::F(1) => {
                self.help = true;
                return vec![];
            }
            KeyCode::Tab => {
                self.focus = self.focus.next();
                return vec![];
            }
            KeyCode::BackTab => {
                self.focus = self.focus.prev();
                return vec![];
            }
            KeyCode::Esc if self.generating() => return self.cancel(),
            _ => {}
        }
        if self.focus == Focus::Query {
            return self.on_query_key(key, now);
        }
        let page = 10;
        match key.code {
            KeyCode::Esc => {
                if self.list == ListView::Documents {
                    self.list = ListView::Results;
                } else {
                    self.focus = Focus::Query;
                }
            }
            KeyCode::Char('q') => {
                self.quit = true;
                return vec![Action::Quit];
            }
            KeyCode::Char('?') => self.help = true,
            KeyCode::Char('/') => self.focus = Focus::Query,
            KeyCode::Down | KeyCode::Char('j') => self.scroll(self.focus, 1),
            KeyCode::Up | KeyCode::Char('k') => self.scroll(self.focus, -1),
            KeyCode::PageDown => self.scroll(self.focus, page),
            KeyCode::PageUp => self.scroll(self.focus, -page),
            KeyCode::Char('d') if ctrl => self.scroll(self.focus, page),
            KeyCode::Char('u') if ctrl => self.scroll(self.focus, -page),
            KeyCode::Home | KeyCode::Char('g') => match self.focus {
                Focus::List => *self.selected_mut() = 0,
                Focus::Answer => self.answer_scroll.top(),
                _ => self.preview_scroll.top(),
            },
            KeyCode::End | KeyCode::Char('G') => match self.focus {
                Focus::List => *self.selected_mut() = self.list_len().saturating_sub(1),
                // While an answer streams, the end is followed again.
                Focus::Answer if self.generating() => self.answer_scroll.reset(),
                Focus::Answer => self.answer_scroll.bottom(),
                _ => self.preview_scroll.bottom(),
            },
            KeyCode::Left | KeyCode::Char('h') => self.focus = self.focus.prev(),
            KeyCode::Right | KeyCode::Char('l') => self.focus = self.focus.next(),
            KeyCode::Char(']') | KeyCode::Char('n') => self.cycle_citation(true),
            KeyCode::Char('[') | KeyCode::Char('N') => self.cycle_citation(false),
            KeyCode::Char(c @ '1'..='9') => self.jump(c as usize - '0' as usize),
            KeyCode::Enter => match self.list {
                ListView::Documents => {
                    if let Some(d) = self.documents.get(self.doc_sel) {
                        self.show_info(format!(
                            "{}: {} pages, {} chunks — s summarizes it, o opens it",
                            d.path, d.pages, d.chunks
                        ));
                    }
                }
                _ => self.focus = Focus::Preview,
            },
            KeyCode::Char('s') => return self.summarize_selected(false, now),
            KeyCode::Char('m') => return self.summarize_selected(true, now),
            KeyCode::Char('p') => self.toggle_pin(),
            KeyCode::Char('r') => {
                self.list = ListView::Results;
                self.preview_scroll.reset();
            }
            KeyCode::Char('c') if !self.sources().is_empty() => {
                self.list = ListView::Sources;
                self.preview_scroll.reset();
            }
            KeyCode::Char('d') => {
                if self.list == ListView::Documents {
                    self.list = ListView::Results;
                } else {
                    self.list = ListView::Documents;
                    self.focus = Focus::List;
                    return vec![Action::LoadDocuments];
                }
            }
            KeyCode::Char('i') => {
                if self.ingest.is_some() {
                    self.show_error("an ingest is already running");
                } else {
                    self.prompt = Some(Prompt::Ingest(String::new()));
                }
            }
            KeyCode::Char('w') => {
                if self.turns.is_empty() {
                    self.show_error("nothing to save yet: ask a question first");
                } else {
                    self.prompt = Some(Prompt::Save("shirabe-session.md".into()));
                }
            }
            KeyCode::Char('o') => match self.previewed_page() {
                Some((path, page)) => return vec![Action::Open { path, page }],
                None => self.show_error("nothing selected to open"),
            },
            KeyCode::Char('y') => match self.answer_with_sources() {
                Some(text) => return vec![Action::Copy(text)],
                None => self.show_error("no finished answer to copy"),
            },
            _ => {}
        }
        vec![]
    }

    fn on_query_key(&mut self, key: KeyEvent, now: Instant) -> Vec<Action> {
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        let byte_at = |s: &str, chars: usize| s.char_indices().nth(chars).map_or(s.len(), |c| c.0);
        let before = self.query.clone();
        match key.code {
            KeyCode::Enter => return self.ask(now),
            KeyCode::Esc => self.focus = Focus::List,
            KeyCode::Down => self.focus = Focus::List,
            KeyCode::Left => self.cursor = self.cursor.saturating_sub(1),
            KeyCode::Right => self.cursor = (self.cursor + 1).min(self.query.chars().count()),
            KeyCode::Home => self.cursor = 0,
            KeyCode::Char('a') if ctrl => self.cursor = 0,
            KeyCode::End => self.cursor = self.query.chars().count(),
            KeyCode::Char('e') if ctrl => self.cursor = self.query.chars().count(),
            KeyCode::Char('u') if ctrl => {
                let at = byte_at(&self.query, self.cursor);
                self.query.replace_range(..at, "");
                self.cursor = 0;
            }
            KeyCode::Char('w') if ctrl => {
                let chars: Vec<char> = self.query.chars().collect();
                let mut start = self.cursor;
                while start > 0 && chars[start - 1].is_whitespace() {
                    start -= 1;
                }
                while start > 0 && !chars[start - 1].is_whitespace() {
                    start -= 1;
                }
                let (a, b) = (
                    byte_at(&self.query, start),
                    byte_at(&self.query, self.cursor),
                );
                self.query.replace_range(a..b, "");
                self.cursor = start;
            }
            KeyCode::Backspace if self.cursor > 0 => {
                let at = byte_at(&self.query, self.cursor - 1);
                self.query.remove(at);
                self.cursor -= 1;
            }
            KeyCode::Delete if self.cursor < self.query.chars().count() => {
                let at = byte_at(&self.query, self.cursor);
                self.query.remove(at);
            }
            // Alt-letter is no letter (and Esc then a fast key reads as it).
            KeyCode::Char(c) if !ctrl && !key.modifiers.contains(KeyModifiers::ALT) => {
                let at = byte_at(&self.query, self.cursor);
                self.query.insert(at, c);
                self.cursor += 1;
            }
            _ => {}
        }
        if self.query != before {
            self.schedule_search(now);
        }
        vec![]
    }

    fn submit_prompt(&mut self, p: Prompt) -> Vec<Action> {
        match p {
            Prompt::Ingest(path) => {
                let path = path.trim().to_string();
                if path.is_empty() {
                    return vec![];
                }
                self.ingest = Some(IngestView {
                    path: path.clone(),
                    done: 0,
                    total: 0,
                    current: String::new(),
                });
                vec![Action::Ingest(path)]
            }
            Prompt::Save(path) => {
                let path = path.trim().to_string();
                if path.is_empty() {
                    return vec![];
                }
                vec![Action::Save {
                    path,
                    markdown: self.markdown(),
                }]
            }
        }
    }

    fn cancel(&mut self) -> Vec<Action> {
        if let Some(a) = &mut self.answer {
            if a.running() {
                a.cancelled = true;
                self.show_info("stopping the answer…");
                return vec![Action::Cancel];
            }
        }
        vec![]
    }

    /// Handles a mouse event: the wheel scrolls the pane under the
    /// pointer, a click focuses it.
    pub fn on_mouse(&mut self, m: MouseEvent) {
        let at = Position::new(m.column, m.row);
        let a = self.areas;
        let pane = [
            (a.query, Focus::Query),
            (a.list, Focus::List),
            (a.answer, Focus::Answer),
            (a.preview, Focus::Preview),
        ]
        .into_iter()
        .find(|(r, _)| r.contains(at))
        .map(|(_, f)| f);
        let Some(pane) = pane else { return };
        match m.kind {
            MouseEventKind::ScrollDown => {
                self.scroll(pane, if pane == Focus::List { 1 } else { 3 })
            }
            MouseEventKind::ScrollUp => {
                self.scroll(pane, if pane == Focus::List { -1 } else { -3 })
            }
            MouseEventKind::Down(_) => {
                self.focus = pane;
                if pane == Focus::List {
                    // Items take two rows under the border; the list is
                    // scrolled just enough to show the selection.
                    let shown = (usize::from(a.list.height.saturating_sub(2)) / 2).max(1);
                    let offset = (self.selected() + 1).saturating_sub(shown);
                    let row = offset + usize::from(m.row.saturating_sub(a.list.y + 1)) / 2;
                    if row < self.list_len() {
                        *self.selected_mut() = row;
                        self.preview_scroll.reset();
                    }
                }
            }
            _ => {}
        }
    }

    /// Handles a worker's report.
    pub fn on_report(&mut self, msg: Report) {
        match msg {
            Report::Results { seq, query, hits } => {
                if seq != self.search_seq {
                    return;
                }
                self.searching = false;
                self.results = hits;
                self.results_query = query;
                self.result_sel = 0;
                self.preview_scroll.reset();
                // Typing a new query asks for its results.
                if self.list == ListView::Documents
                    || (self.list == ListView::Sources && !self.generating())
                {
                    self.list = ListView::Results;
                }
            }
            Report::Phase {
                seq,
                text,
                progress,
            } => {
                if let Some(a) = self.answer.as_mut().filter(|a| a.seq == seq && a.running()) {
                    a.phase = Some((text, progress));
                }
            }
            Report::Text { seq, text } => {
                if let Some(a) = self.answer.as_mut().filter(|a| a.seq == seq && a.running()) {
                    a.pieces += 1;
                    a.first_text.get_or_insert_with(Instant::now);
                    a.text.push_str(&text);
                }
            }
            Report::Answered { seq, answer } => {
                let Some(view) = self.answer.as_mut().filter(|a| a.seq == seq) else {
                    return;
                };
                view.text = answer.checked.answer.trim().to_string();
                if view.text.is_empty() {
                    view.text = crate::answer::NO_ANSWER.into();
                }
                let note = answer.note.clone();
                if view.turn && !view.cancelled {
                    self.turns.push(Turn {
                        question: view.question.clone(),
                        answer: view.text.clone(),
                        sources: cited_sources(&answer.passages, &answer.checked),
                    });
                }
                let cancelled = view.cancelled;
                view.answer = Some(*answer);
                self.source_sel = 0;
                if !self.sources().is_empty() {
                    self.list = ListView::Sources;
                    // The first cited passage.
                    let first = self
                        .answer
                        .as_ref()
                        .and_then(|a| a.answer.as_ref())
                        .and_then(|a| a.checked.citations.iter().map(|c| c.n).min());
                    self.source_sel = first.map_or(0, |n| n - 1);
                }
                self.preview_scroll.reset();
                if cancelled {
                    self.show_info("answer stopped");
                } else {
                    self.show_info(note);
                }
            }
            Report::Failed { seq, error } => {
                if seq == self.search_seq {
                    self.searching = false;
                    self.show_error(format!("search failed: {error}"));
                } else if let Some(a) = self.answer.as_ref().filter(|a| a.seq == seq) {
                    let what = if a.turn { "answer" } else { "summary" };
                    self.answer = None;
                    self.show_error(format!("{what} failed: {error}"));
                }
            }
            Report::Documents(Ok(docs)) => {
                self.documents = docs;
                self.doc_sel = self.doc_sel.min(self.documents.len().saturating_sub(1));
            }
            Report::Documents(Err(e)) => self.show_error(format!("listing documents failed: {e}")),
            Report::IngestProgress {
                done,
                total,
                current,
            } => {
                if let Some(i) = &mut self.ingest {
                    i.done = done;
                    i.total = total;
                    i.current = current;
                }
            }
            Report::IngestDone(r) => {
                self.ingest = None;
                match r {
                    Ok(report) => self.show_info(report),
                    Err(e) => self.show_error(format!("ingest failed: {e}")),
                }
            }
            Report::Info(info) => self.info = info,
            Report::Note(Ok(n)) => self.show_info(n),
            Report::Note(Err(e)) => self.show_error(e),
        }
    }
}

/// What the preview pane shows.
#[derive(Debug, Clone)]
pub enum Preview<'a> {
    /// A passage of the answer, with the spans its citations quote.
    Passage {
        /// The passage.
        passage: &'a Passage,
        /// The question (its terms are highlighted).
        query: &'a str,
        /// Quoted byte ranges of the passage text.
        quotes: Vec<(usize, usize)>,
    },
    /// A search result.
    Hit {
        /// The hit.
        hit: &'a Hit,
        /// The query (its terms are highlighted).
        query: &'a str,
    },
    /// A document of the browser.
    Document(&'a FileRecord),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::answer::check;

    fn key(c: KeyCode) -> KeyEvent {
        KeyEvent::new(c, KeyModifiers::NONE)
    }

    fn ctrl(c: char) -> KeyEvent {
        KeyEvent::new(KeyCode::Char(c), KeyModifiers::CONTROL)
    }

    fn typed(app: &mut App, text: &str, now: Instant) {
        for c in text.chars() {
            assert!(app.on_key(key(KeyCode::Char(c)), now).is_empty());
        }
    }

    /// Presses Enter; the answer's sequence number.
    fn ask(app: &mut App, t: Instant) -> u64 {
        match app.on_key(key(KeyCode::Enter), t).as_slice() {
            [Action::Ask { seq, .. }] => *seq,
            other => panic!("{other:?}"),
        }
    }

    fn passage(n: usize, text: &str) -> Passage {
        Passage {
            n,
            path: format!("doc{n}.pdf"),
            title: format!("Doc {n}"),
            page_start: n as u32,
            page_end: n as u32,
            page_label: None,
            text: text.into(),
            chunk_ids: vec![format!("c{n}")],
            page_map: Vec::new(),
            rank: n,
        }
    }

    fn answer(text: &str, passages: Vec<Passage>) -> Answer {
        Answer {
            checked: check(text, &passages),
            passages,
            tokens: 900,
            budget: 4000,
            extractive: true,
            note: "context: 900 / 4,000 tokens".into(),
        }
    }

    #[test]
    fn typing_searches_once_after_a_pause() {
        let t0 = Instant::now();
        let mut app = App::new(Info::default(), true);
        typed(&mut app, "osaka", t0);
        assert_eq!(app.query, "osaka");
        assert!(app.searching());
        assert_eq!(app.tick(t0 + DEBOUNCE / 2), None);
        let Some(Action::Search { seq, query }) = app.tick(t0 + DEBOUNCE) else {
            panic!("no search after the pause")
        };
        assert_eq!(query, "osaka");
        assert_eq!(app.tick(t0 + DEBOUNCE * 3), None, "searched twice");
        // A stale result (an older sequence number) is dropped.
        app.on_report(Report::Results {
            seq: seq + 7,
            query: "old".into(),
            hits: vec![],
        });
        assert!(app.searching());
        app.on_report(Report::Results {
            seq,
            query: query.clone(),
            hits: vec![],
        });
        assert!(!app.searching());
        assert_eq!(app.results_query, "osaka");
    }

    #[test]
    fn p_pins_the_selected_document_for_every_question() {
        let t = Instant::now();
        let mut app = App::new(Info::default(), true);
        typed(&mut app, "osaka", t);
        let Some(Action::Search { seq, query }) = app.tick(t + DEBOUNCE) else {
            panic!("no search")
        };
        let mut hit = crate::prompt::tests::hit("minutes", 0, 1, "The budget.");
        hit.path = "docs/minutes.pdf".into();
        app.on_report(Report::Results {
            seq,
            query,
            hits: vec![hit],
        });
        app.focus = Focus::List;
        app.on_key(key(KeyCode::Char('p')), t);
        assert_eq!(app.pinned, ["docs/minutes.pdf"]);
        assert!(app
            .status_line
            .as_ref()
            .unwrap()
            .text
            .starts_with("pinned minutes.pdf"));
        app.focus = Focus::Query;
        let actions = app.on_key(key(KeyCode::Enter), t);
        let [Action::Ask { pinned, .. }] = actions.as_slice() else {
            panic!("{actions:?}")
        };
        assert_eq!(pinned, &["docs/minutes.pdf"]);
        // Again: unpinned.
        app.focus = Focus::List;
        app.list = ListView::Results;
        app.on_key(key(KeyCode::Char('p')), t);
        assert!(app.pinned.is_empty());
    }

    #[test]
    fn the_query_line_edits_by_character() {
        let t = Instant::now();
        let mut app = App::new(Info::default(), true);
        typed(&mut app, "大阪の倉庫", t);
        app.on_key(key(KeyCode::Left), t);
        app.on_key(key(KeyCode::Backspace), t);
        assert_eq!(app.query, "大阪の庫");
        assert_eq!(app.cursor, 3);
        app.on_key(key(KeyCode::Home), t);
        app.on_key(key(KeyCode::Delete), t);
        assert_eq!(app.cursor, 0);
        typed(&mut app, "x ", t);
        app.on_key(key(KeyCode::End), t);
        app.on_key(ctrl('w'), t);
        assert_eq!(app.query, "x ");
        app.on_key(ctrl('u'), t);
        assert_eq!(app.query, "");
        // q and ? are letters in the query line.
        typed(&mut app, "q?", t);
        assert!(!app.quit && !app.help);
    }

    #[test]
    fn enter_asks_and_the_answer_streams_then_shows_its_sources() {
        let t = Instant::now();
        let mut app = App::new(Info::default(), true);
        typed(&mut app, "What was the budget?", t);
        let actions = app.on_key(key(KeyCode::Enter), t);
        let [Action::Ask {
            seq,
            question,
            history,
            pinned,
        }] = actions.as_slice()
        else {
            panic!("{actions:?}")
        };
        assert_eq!(question, "What was the budget?");
        assert!(history.is_empty());
        assert!(pinned.is_empty());
        assert!(app.generating() && app.busy());
        app.on_report(Report::Text {
            seq: *seq,
            text: "The budget was ".into(),
        });
        app.on_report(Report::Text {
            seq: *seq,
            text: "1.8 million euros [2].".into(),
        });
        assert_eq!(
            app.answer.as_ref().unwrap().text,
            "The budget was 1.8 million euros [2]."
        );
        let a = answer(
            "The budget was 1.8 million euros [2]. Bogus [9].",
            vec![
                passage(1, "Other things."),
                passage(2, "The budget was 1.8 million euros for the warehouse."),
            ],
        );
        app.on_report(Report::Answered {
            seq: *seq,
            answer: Box::new(a),
        });
        assert!(!app.generating());
        assert_eq!(app.list, ListView::Sources);
        assert_eq!(
            app.source_sel, 1,
            "the preview starts at the first cited passage"
        );
        let Some(Preview::Passage {
            passage, quotes, ..
        }) = app.previewed()
        else {
            panic!("no passage preview")
        };
        assert_eq!(passage.n, 2);
        assert_eq!(quotes.len(), 1);
        assert_eq!(app.turns.len(), 1);
        assert_eq!(app.turns[0].sources, vec!["[2] Doc 2 — p. 2 (doc2.pdf)"]);
        // A follow-up carries the history.
        app.focus = Focus::Query;
        app.on_key(ctrl('u'), t);
        typed(&mut app, "And when?", t);
        let actions = app.on_key(key(KeyCode::Enter), t);
        let [Action::Ask { history, .. }] = actions.as_slice() else {
            panic!("{actions:?}")
        };
        assert_eq!(history.len(), 1);
        assert!(history[0].1.contains("1.8 million"));
    }

    #[test]
    fn digits_and_brackets_jump_between_cited_passages() {
        let t = Instant::now();
        let mut app = App::new(Info::default(), true);
        typed(&mut app, "q", t);
        let seq = ask(&mut app, t);
        let ps = (1..=4)
            .map(|n| passage(n, &format!("alpha beta {n}")))
            .collect();
        app.on_report(Report::Answered {
            seq,
            answer: Box::new(answer("Alpha beta 1 [1]. Alpha beta 3 [3].", ps)),
        });
        app.focus = Focus::Answer;
        assert_eq!(app.source_sel, 0);
        app.on_key(key(KeyCode::Char(']')), t);
        assert_eq!(app.source_sel, 2);
        app.on_key(key(KeyCode::Char(']')), t);
        assert_eq!(app.source_sel, 0, "wraps around");
        app.on_key(key(KeyCode::Char('[')), t);
        assert_eq!(app.source_sel, 2);
        app.on_key(key(KeyCode::Char('4')), t);
        assert_eq!(app.source_sel, 3);
        app.on_key(key(KeyCode::Char('9')), t);
        assert!(app.status_line.as_ref().unwrap().error);
        assert_eq!(app.source_sel, 3);
        // o opens the previewed passage's file at its page.
        assert_eq!(
            app.on_key(key(KeyCode::Char('o')), t),
            vec![Action::Open {
                path: "doc4.pdf".into(),
                page: 4
            }]
        );
        let actions = app.on_key(key(KeyCode::Char('y')), t);
        let [Action::Copy(text)] = actions.as_slice() else {
            panic!("{actions:?}")
        };
        assert!(text.contains("Sources\n[1] Doc 1 — p. 1 (doc1.pdf)\n[3] Doc 3"));
    }

    #[test]
    fn escape_cancels_and_a_late_answer_is_not_a_turn() {
        let t = Instant::now();
        let mut app = App::new(Info::default(), true);
        typed(&mut app, "budget", t);
        let seq = ask(&mut app, t);
        assert_eq!(app.on_key(key(KeyCode::Esc), t), vec![Action::Cancel]);
        app.on_report(Report::Answered {
            seq,
            answer: Box::new(answer("Part", vec![passage(1, "Part")])),
        });
        assert!(app.turns.is_empty());
        assert_eq!(app.status_line.as_ref().unwrap().text, "answer stopped");
        // With nothing running, Ctrl-C quits.
        assert_eq!(app.on_key(ctrl('c'), t), vec![Action::Quit]);
        assert!(app.quit);
    }

    #[test]
    fn panes_keys_help_and_prompts() {
        let t = Instant::now();
        let mut app = App::new(Info::default(), true);
        app.on_key(key(KeyCode::Tab), t);
        assert_eq!(app.focus, Focus::List);
        app.on_key(key(KeyCode::Char('?')), t);
        assert!(app.help);
        app.on_key(key(KeyCode::Char('x')), t);
        assert!(!app.help, "any key closes the help");
        assert_eq!(
            app.on_key(key(KeyCode::Char('d')), t),
            vec![Action::LoadDocuments]
        );
        assert_eq!(app.list, ListView::Documents);
        app.on_report(Report::Documents(Ok(vec![])));
        // Nothing to summarize, nothing to save: said, not done.
        assert!(app.on_key(key(KeyCode::Char('s')), t).is_empty());
        assert!(app.status_line.as_ref().unwrap().error);
        assert!(app.on_key(key(KeyCode::Char('w')), t).is_empty());
        app.on_key(key(KeyCode::Char('i')), t);
        assert_eq!(app.prompt, Some(Prompt::Ingest(String::new())));
        for c in "corpora/x".chars() {
            app.on_key(key(KeyCode::Char(c)), t);
        }
        assert!(!app.quit, "q... in a prompt is typed");
        assert_eq!(
            app.on_key(key(KeyCode::Enter), t),
            vec![Action::Ingest("corpora/x".into())]
        );
        assert!(app.busy());
        app.on_report(Report::IngestProgress {
            done: 1,
            total: 3,
            current: "a.pdf".into(),
        });
        assert_eq!(app.ingest.as_ref().unwrap().done, 1);
        app.on_report(Report::IngestDone(Ok("3 files: 3 indexed".into())));
        assert!(app.ingest.is_none() && !app.busy());
        app.on_key(key(KeyCode::Esc), t);
        assert_eq!(app.list, ListView::Results);
        app.on_key(key(KeyCode::Char('q')), t);
        assert!(app.quit);
    }

    #[test]
    fn save_writes_the_conversation_with_sources() {
        let t = Instant::now();
        let mut app = App::new(Info::default(), true);
        typed(&mut app, "budget?", t);
        let seq = ask(&mut app, t);
        app.on_report(Report::Answered {
            seq,
            answer: Box::new(answer("Alpha beta [1].", vec![passage(1, "alpha beta")])),
        });
        app.focus = Focus::List;
        app.on_key(key(KeyCode::Char('w')), t);
        let actions = app.on_key(key(KeyCode::Enter), t);
        let [Action::Save { path, markdown }] = actions.as_slice() else {
            panic!("{actions:?}")
        };
        assert_eq!(path, "shirabe-session.md");
        assert_eq!(
            markdown,
            "# shirabe session\n\n## budget?\n\nAlpha beta [1].\n\nSources:\n\n- [1] Doc 1 — p. 1 (doc1.pdf)\n"
        );
    }

    #[test]
    fn the_mouse_scrolls_the_pane_under_it() {
        let mut app = App::new(Info::default(), true);
        app.areas = Areas {
            query: Rect::new(0, 0, 80, 3),
            list: Rect::new(0, 3, 40, 20),
            answer: Rect::new(40, 3, 40, 10),
            preview: Rect::new(40, 13, 40, 10),
        };
        let ev = |kind, column, row| MouseEvent {
            kind,
            column,
            row,
            modifiers: KeyModifiers::NONE,
        };
        // As drawn: both panes have 40 lines more than they show.
        app.preview_scroll.resolve(0, 40);
        app.answer_scroll.resolve(0, 40);
        app.on_mouse(ev(MouseEventKind::ScrollDown, 50, 15));
        assert_eq!(
            (app.preview_scroll.offset, app.answer_scroll.offset),
            (3, 0)
        );
        app.on_mouse(ev(MouseEventKind::ScrollDown, 50, 5));
        app.on_mouse(ev(MouseEventKind::ScrollUp, 50, 15));
        assert_eq!(
            (app.preview_scroll.offset, app.answer_scroll.offset),
            (0, 3)
        );
        // Scrolling stops at the last screenful, and at the top.
        for _ in 0..30 {
            app.on_mouse(ev(MouseEventKind::ScrollDown, 50, 5));
        }
        assert_eq!(app.answer_scroll.offset, 40);
        app.on_mouse(ev(MouseEventKind::ScrollUp, 50, 15));
        assert_eq!(app.preview_scroll.offset, 0);
        app.on_mouse(ev(
            MouseEventKind::Down(crossterm::event::MouseButton::Left),
            5,
            5,
        ));
        assert_eq!(app.focus, Focus::List);
    }

    #[test]
    fn a_failed_answer_is_reported() {
        let t = Instant::now();
        let mut app = App::new(Info::default(), true);
        typed(&mut app, "x", t);
        let seq = ask(&mut app, t);
        app.on_report(Report::Failed {
            seq,
            error: "the endpoint refused".into(),
        });
        assert!(app.answer.is_none());
        let m = app.status_line.clone().unwrap();
        assert!(m.error && m.text == "answer failed: the endpoint refused");
    }
}
