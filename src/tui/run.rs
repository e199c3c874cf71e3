//! The terminal and the event loop: raw mode and the alternate screen
//! (restored on every exit, panics included), crossterm's event stream,
//! and the engine's work on tokio's blocking pool, reporting by messages.

use std::io::{Stdout, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossterm::event::{DisableMouseCapture, EnableMouseCapture, Event, EventStream, KeyEventKind};
use crossterm::terminal::{
    disable_raw_mode, enable_raw_mode, EnterAlternateScreen, LeaveAlternateScreen,
};
use futures_util::StreamExt;
use ratatui::backend::CrosstermBackend;
use ratatui::Terminal;
use tokio::sync::mpsc::{unbounded_channel, UnboundedSender};

use super::app::{Action, App, Report, RESULT_LIMIT};
use super::{system, Engine};
use crate::answer::Phase;

/// How the TUI runs.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Colours allowed.
    pub color: bool,
    /// Capture the mouse (wheel scrolling, click to focus).
    pub mouse: bool,
    /// Where stderr goes while the screen is ours (library notes, logs),
    /// so they cannot scribble over it.
    pub log: Option<PathBuf>,
    /// A query to start with.
    pub query: Option<String>,
}

/// Redraw period while an answer streams or an ingest runs.
const FRAME: Duration = Duration::from_millis(25);

/// How often the status bar is refreshed while the model loads.
const LOAD_POLL: Duration = Duration::from_millis(500);
/// How often it is refreshed after that (a watcher may be adding to the
/// index; the engine answers from a cache while nothing changed).
const INFO_POLL: Duration = Duration::from_secs(2);

/// Asks the engine for the status bar's figures off the UI thread (one
/// request at a time).
fn refresh_info(engine: &Arc<dyn Engine>, tx: &UnboundedSender<Report>, polling: &Arc<AtomicBool>) {
    if !polling.swap(true, Ordering::SeqCst) {
        let (engine, tx, polling) = (Arc::clone(engine), tx.clone(), Arc::clone(polling));
        tokio::task::spawn_blocking(move || {
            if let Ok(info) = guarded(|| Ok(engine.info())) {
                let _ = tx.send(Report::Info(info));
            }
            polling.store(false, Ordering::SeqCst);
        });
    }
}

/// Runs the TUI until the user quits.
pub fn run(engine: Arc<dyn Engine>, opts: Options) -> std::io::Result<()> {
    let mut app = App::new(engine.info(), opts.color);
    if let Some(q) = &opts.query {
        app.set_query(q, Instant::now());
    }
    // Without a log file stderr stays where it is (notes may then show
    // through until the next redraw).
    let _stderr = opts.log.as_deref().and_then(|p| StderrTo::file(p).ok());
    let mut term = TerminalGuard::enter(opts.mouse)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()?;
    let result = rt.block_on(event_loop(&mut term.terminal, &mut app, engine));
    drop(term);
    // Quitting does not wait for a running ingest or answer: an ingest
    // killed at any point leaves the index consistent.
    rt.shutdown_background();
    result
}

type PanicHook = Box<dyn Fn(&std::panic::PanicHookInfo<'_>) + Sync + Send + 'static>;

/// Raw mode, the alternate screen and mouse capture, undone on drop and
/// by the panic hook.
struct TerminalGuard {
    terminal: Terminal<CrosstermBackend<Stdout>>,
    mouse: bool,
    /// The panic hook before ours, put back on drop.
    previous: Arc<PanicHook>,
}

fn restore(mouse: bool) {
    let _ = disable_raw_mode();
    let mut out = std::io::stdout();
    if mouse {
        let _ = crossterm::execute!(out, DisableMouseCapture);
    }
    let _ = crossterm::execute!(out, LeaveAlternateScreen, crossterm::cursor::Show);
    let _ = out.flush();
}

impl TerminalGuard {
    fn enter(mouse: bool) -> std::io::Result<TerminalGuard> {
        // A panic on the UI thread gives the terminal and stderr back
        // before the message is printed; one in a worker is caught there
        // and reported on the screen.
        let previous: Arc<PanicHook> = Arc::new(std::panic::take_hook());
        let chained = Arc::clone(&previous);
        let ui = std::thread::current().id();
        std::panic::set_hook(Box::new(move |info| {
            if std::thread::current().id() == ui {
                restore(mouse);
                put_back_stderr();
            }
            chained(info);
        }));
        enable_raw_mode()?;
        let mut out = std::io::stdout();
        let entered = crossterm::execute!(out, EnterAlternateScreen).and_then(|_| {
            if mouse {
                crossterm::execute!(out, EnableMouseCapture)
            } else {
                Ok(())
            }
        });
        if let Err(e) = entered {
            restore(mouse);
            return Err(e);
        }
        match Terminal::new(CrosstermBackend::new(out)) {
            Ok(terminal) => Ok(TerminalGuard {
                terminal,
                mouse,
                previous,
            }),
            Err(e) => {
                restore(mouse);
                Err(e)
            }
        }
    }
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        restore(self.mouse);
        // The hook cannot be changed while unwinding (and is done by then).
        if !std::thread::panicking() {
            let previous = Arc::clone(&self.previous);
            std::panic::set_hook(Box::new(move |info| previous(info)));
        }
    }
}

/// The descriptor stderr was saved to while it goes to the log (-1: not
/// redirected).
static SAVED_STDERR: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(-1);

/// stderr sent to a file while the TUI runs, put back on drop.
struct StderrTo;

impl StderrTo {
    #[cfg(unix)]
    fn file(path: &std::path::Path) -> std::io::Result<StderrTo> {
        use std::os::fd::AsRawFd;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        // SAFETY: plain descriptor calls on descriptors this process owns;
        // failures are checked.
        unsafe {
            let saved = libc::dup(2);
            if saved < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::dup2(log.as_raw_fd(), 2) < 0 {
                let e = std::io::Error::last_os_error();
                libc::close(saved);
                return Err(e);
            }
            SAVED_STDERR.store(saved, Ordering::SeqCst);
        }
        Ok(StderrTo)
    }

    #[cfg(not(unix))]
    fn file(_path: &std::path::Path) -> std::io::Result<StderrTo> {
        Ok(StderrTo)
    }
}

/// Points stderr at the terminal again (once; later calls do nothing).
fn put_back_stderr() {
    let saved = SAVED_STDERR.swap(-1, Ordering::SeqCst);
    #[cfg(unix)]
    if saved >= 0 {
        // SAFETY: puts back the descriptor saved in `StderrTo::file`.
        unsafe {
            libc::dup2(saved, 2);
            libc::close(saved);
        }
    }
    #[cfg(not(unix))]
    let _ = saved;
}

impl Drop for StderrTo {
    fn drop(&mut self) {
        put_back_stderr();
    }
}

/// Runs a worker's job; a panic in it becomes an error the UI shows.
fn guarded<T>(job: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)).unwrap_or_else(|payload| {
        let why = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        Err(format!("internal error: {why} (please report it)"))
    })
}

async fn event_loop(
    terminal: &mut Terminal<CrosstermBackend<Stdout>>,
    app: &mut App,
    engine: Arc<dyn Engine>,
) -> std::io::Result<()> {
    let (tx, mut rx) = unbounded_channel::<Report>();
    let mut events = EventStream::new();
    let mut frame = tokio::time::interval(FRAME);
    frame.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    // While the model loads, the status bar asks how it goes.
    let mut poll = tokio::time::interval(LOAD_POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let polling = Arc::new(AtomicBool::new(false));
    // Then, less often: the index may grow under a watcher.
    let mut info_poll = tokio::time::interval(INFO_POLL);
    info_poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut cancel = Arc::new(AtomicBool::new(false));
    let mut pending: Vec<Action> = Vec::new();
    let mut stats = FrameStats::default();
    loop {
        for action in pending.drain(..) {
            if action == Action::Quit {
                // A local model stops at its next token.
                cancel.store(true, Ordering::Relaxed);
                app.quit = true;
                break;
            }
            carry_out(action, &engine, &tx, &mut cancel);
        }
        if app.quit {
            stats.report();
            return Ok(());
        }
        let t = Instant::now();
        terminal.draw(|f| super::ui::draw(f, app, std::time::Instant::now()))?;
        stats.frame(app.busy(), t);
        // For the end-to-end test of the panic path.
        if std::env::var_os("SHIRABE_TEST_PANIC").is_some() {
            panic!("SHIRABE_TEST_PANIC is set");
        }
        let due = app.search_due();
        tokio::select! {
            ev = events.next() => match ev {
                Some(Ok(Event::Key(k))) if k.kind != KeyEventKind::Release => {
                    pending.extend(app.on_key(k, Instant::now()));
                }
                Some(Ok(Event::Mouse(m))) => app.on_mouse(m),
                Some(Ok(_)) => {} // resize and focus: the next draw reflows
                Some(Err(e)) => return Err(e),
                None => return Ok(()),
            },
            Some(msg) = rx.recv() => {
                app.on_report(msg);
                // Tokens come in bursts: take all that are waiting, draw once.
                while let Ok(m) = rx.try_recv() {
                    app.on_report(m);
                }
            }
            _ = frame.tick(), if app.busy() => {}
            _ = poll.tick(), if app.info.loading.is_some() => refresh_info(&engine, &tx, &polling),
            _ = info_poll.tick(), if app.info.loading.is_none() => refresh_info(&engine, &tx, &polling),
            _ = sleep_until(due), if due.is_some() => {
                pending.extend(app.tick(Instant::now()));
            }
        }
    }
}

/// Frames drawn while an answer streamed or an ingest ran, for the log.
#[derive(Default)]
struct FrameStats {
    frames: u64,
    since: Option<Instant>,
    busy: Duration,
    slowest: Duration,
}

impl FrameStats {
    fn frame(&mut self, busy: bool, started: Instant) {
        let now = Instant::now();
        match (busy, self.since) {
            (true, None) => self.since = Some(started),
            (true, Some(_)) => {
                self.frames += 1;
                self.slowest = self.slowest.max(now - started);
            }
            (false, Some(s)) => {
                self.busy += now - s;
                self.since = None;
            }
            (false, None) => {}
        }
    }

    fn report(&mut self) {
        self.frame(false, Instant::now());
        if self.frames > 0 {
            eprintln!(
                "tui: {} frames in {:.1}s of streaming or ingest ({:.1} frames/s), slowest {:.1} ms",
                self.frames,
                self.busy.as_secs_f64(),
                self.frames as f64 / self.busy.as_secs_f64().max(1e-9),
                self.slowest.as_secs_f64() * 1e3
            );
        }
    }
}

async fn sleep_until(due: Option<Instant>) {
    if let Some(d) = due {
        tokio::time::sleep_until(d.into()).await;
    }
}

/// Runs an answer (or summary) on the blocking pool, its text streamed to
/// the UI as it comes, then the whole of it.
fn stream(
    seq: u64,
    tx: UnboundedSender<Report>,
    job: impl FnOnce(&dyn Fn(&Phase), &mut dyn FnMut(&str)) -> Result<super::Answer, String>
        + Send
        + 'static,
) {
    tokio::task::spawn_blocking(move || {
        let text_tx = tx.clone();
        let phase_tx = tx.clone();
        let r = guarded(|| {
            job(
                &|p| {
                    let progress = match *p {
                        Phase::Prefilling { done, total, .. } if total > 0 => {
                            Some(done as f64 / total as f64)
                        }
                        Phase::Summarizing { part, parts, .. } if parts > 0 => {
                            Some((part - 1) as f64 / parts as f64)
                        }
                        _ => None,
                    };
                    let _ = phase_tx.send(Report::Phase {
                        seq,
                        text: p.to_string(),
                        progress,
                    });
                },
                &mut |t| {
                    let _ = text_tx.send(Report::Text {
                        seq,
                        text: t.to_string(),
                    });
                },
            )
        });
        let _ = tx.send(match r {
            Ok(a) => Report::Answered {
                seq,
                answer: Box::new(a),
            },
            Err(error) => Report::Failed { seq, error },
        });
    });
}

/// Starts the work of one action.
fn carry_out(
    action: Action,
    engine: &Arc<dyn Engine>,
    tx: &UnboundedSender<Report>,
    cancel: &mut Arc<AtomicBool>,
) {
    let (engine, tx) = (Arc::clone(engine), tx.clone());
    match action {
        Action::Search { seq, query } => {
            tokio::task::spawn_blocking(move || {
                let _ = tx.send(match guarded(|| engine.search(&query, RESULT_LIMIT)) {
                    Ok(hits) => Report::Results { seq, query, hits },
                    Err(error) => Report::Failed { seq, error },
                });
            });
        }
        Action::Ask {
            seq,
            question,
            history,
            pinned,
        } => {
            *cancel = Arc::new(AtomicBool::new(false));
            let stop = Arc::clone(cancel);
            stream(seq, tx, move |on_phase, on_text| {
                engine.ask(&question, &history, &pinned, &stop, on_phase, on_text)
            });
        }
        Action::Summarize { seq, path, meeting } => {
            *cancel = Arc::new(AtomicBool::new(false));
            let stop = Arc::clone(cancel);
            stream(seq, tx, move |on_phase, on_text| {
                engine.summarize(&path, meeting, &stop, on_phase, on_text)
            });
        }
        Action::Cancel => cancel.store(true, Ordering::Relaxed),
        Action::LoadDocuments => {
            tokio::task::spawn_blocking(move || {
                let _ = tx.send(Report::Documents(guarded(|| engine.documents())));
            });
        }
        Action::Ingest(path) => {
            let stop = Arc::new(AtomicBool::new(false));
            tokio::task::spawn_blocking(move || {
                let progress_tx = tx.clone();
                let r = guarded(|| {
                    engine.ingest(
                        std::path::Path::new(&path),
                        &stop,
                        &|done, total, current| {
                            let _ = progress_tx.send(Report::IngestProgress {
                                done,
                                total,
                                current: current.to_string(),
                            });
                        },
                    )
                });
                let _ = tx.send(Report::IngestDone(r));
                if let Ok(info) = guarded(|| Ok(engine.info())) {
                    let _ = tx.send(Report::Info(info));
                }
                let _ = tx.send(Report::Documents(guarded(|| engine.documents())));
            });
        }
        // These wait on other programs or the disk: off the UI thread too.
        Action::Open { path, page } => {
            tokio::task::spawn_blocking(move || {
                let path = engine.locate(&path);
                let _ = tx.send(Report::Note(system::open_at_page(&path, page)));
            });
        }
        Action::Copy(text) => {
            tokio::task::spawn_blocking(move || {
                let _ = tx.send(Report::Note(system::copy(&text)));
            });
        }
        Action::Save { path, markdown } => {
            tokio::task::spawn_blocking(move || {
                let _ = tx.send(Report::Note(
                    std::fs::write(&path, markdown)
                        .map(|_| format!("saved the conversation to {path}"))
                        .map_err(|e| format!("saving {path}: {e}")),
                ));
            });
        }
        Action::Quit => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tui::{Answer, EngineResult, Info};

    /// Searches panic; the rest is empty.
    struct Faulty;

    impl Engine for Faulty {
        fn info(&self) -> Info {
            Info::default()
        }
        fn search(&self, _: &str, _: usize) -> EngineResult<Vec<crate::retrieve::Hit>> {
            panic!("index on fire")
        }
        fn ask(
            &self,
            _: &str,
            _: &[(String, String)],
            _: &[String],
            cancel: &AtomicBool,
            _: &dyn Fn(&Phase),
            on_text: &mut dyn FnMut(&str),
        ) -> EngineResult<Answer> {
            // Streams until cancelled.
            while !cancel.load(Ordering::Relaxed) {
                on_text("more ");
                std::thread::sleep(Duration::from_millis(5));
            }
            Err("stopped".into())
        }
        fn summarize(
            &self,
            _: &str,
            _: bool,
            _: &AtomicBool,
            _: &dyn Fn(&Phase),
            _: &mut dyn FnMut(&str),
        ) -> EngineResult<Answer> {
            Err("no".into())
        }
        fn documents(&self) -> EngineResult<Vec<crate::index::manifest::FileRecord>> {
            Ok(vec![])
        }
        fn ingest(
            &self,
            _: &std::path::Path,
            _: &AtomicBool,
            _: &(dyn Fn(usize, usize, &str) + Sync),
        ) -> EngineResult<String> {
            Ok(String::new())
        }
    }

    #[test]
    fn a_panicking_worker_is_reported_and_cancel_stops_a_stream() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async {
            let engine: Arc<dyn Engine> = Arc::new(Faulty);
            let (tx, mut rx) = unbounded_channel();
            let mut cancel = Arc::new(AtomicBool::new(false));
            carry_out(
                Action::Search {
                    seq: 7,
                    query: "x".into(),
                },
                &engine,
                &tx,
                &mut cancel,
            );
            match rx.recv().await {
                Some(Report::Failed { seq: 7, error }) => {
                    assert!(error.contains("internal error: index on fire"), "{error}")
                }
                other => panic!("{other:?}"),
            }
            carry_out(
                Action::Ask {
                    seq: 8,
                    question: "q".into(),
                    history: vec![],
                    pinned: vec![],
                },
                &engine,
                &tx,
                &mut cancel,
            );
            assert!(matches!(rx.recv().await, Some(Report::Text { seq: 8, .. })));
            carry_out(Action::Cancel, &engine, &tx, &mut cancel);
            loop {
                match rx.recv().await {
                    Some(Report::Text { .. }) => continue,
                    Some(Report::Failed { seq: 8, error }) => {
                        assert_eq!(error, "stopped");
                        break;
                    }
                    other => panic!("{other:?}"),
                }
            }
        });
    }
}
