//! Reading PDFs in worker processes, so that no file can end a run.
//!
//! A PDF is the one input whose parsing can fail in ways `catch_unwind`
//! never sees: an allocation sized by the file (the process aborts), a
//! stack overflow, a loop. Read in a worker process that is held to a
//! memory allowance, any of these costs one file: the worker dies, the file
//! is reported and recorded as damaged, and a new worker takes the next
//! file. The allowance also bounds what a hostile file may take from the
//! machine ([`allowance`]: a floor plus a multiple of the file's size).
//! Workers leave the terminal's process group (Ctrl-C is the ingest's to
//! handle) and die with the ingest (`PR_SET_PDEATHSIG`).
//!
//! A worker is the `shirabe` binary started with [`WORKER_ARG`]. It reads
//! requests on stdin and answers on stdout, one file at a time, and lives
//! for the whole ingest run (one per ingest thread). A request is one JSON
//! line (the OCR settings), the file's length as 8 little-endian bytes,
//! then the file. The answer is a run of frames, each a tag byte:
//! `p` (one page read by OCR; nothing follows), then either `d` (8-byte
//! length, the document as JSON) or `e` (8-byte length, the error message).
//!
//! Library users read in-process unless they name the program
//! ([`Isolation::Workers`]); the `shirabe` binary always uses workers.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::document::{ExtractedDoc, OcrInfo, PageText};
use super::ocr::{self, OcrOutcome, OcrSettings};
use crate::{Error, Result};

/// The argument that makes the `shirabe` binary a PDF worker.
pub const WORKER_ARG: &str = "__pdf-worker";

/// Where PDFs are parsed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Isolation {
    /// In the ingest's own threads (panics are still caught).
    #[default]
    InProcess,
    /// In worker processes: this program, started with [`WORKER_ARG`].
    Workers(PathBuf),
}

/// Memory floor of a worker's allowance, beside what it holds at rest.
const FLOOR: u64 = 512 << 20;
/// Allowance per byte of the file. The 55 PDFs of the Debian corpus peak
/// at 8–21× their size plus ~12 MB of RSS (`docs/benchmarks.md`); the
/// limit counts reserved memory too, so it leaves room above that.
const PER_BYTE: u64 = 32;

/// The memory (private writable mappings: heap, stacks) a worker may add
/// to what it holds at rest, to read a file of `len` bytes.
pub fn allowance(len: usize) -> u64 {
    FLOOR.saturating_add(PER_BYTE.saturating_mul(len as u64))
}

/// How long a worker may go without a sign of progress (a page read by
/// OCR counts) before it is given up: five minutes, and a second more
/// per megabyte of the file.
pub fn patience(len: usize) -> Duration {
    Duration::from_secs(300 + (len as u64 >> 20))
}

/// A page as it travels between processes (every field, unlike the JSON
/// `extract --json` prints).
#[derive(Serialize, Deserialize)]
struct WirePage {
    page: u32,
    label: Option<String>,
    text: String,
    headings: Vec<(usize, String)>,
    furniture: Vec<(usize, usize)>,
    running: Vec<String>,
    image_cover: f32,
    ocr: Option<(String, String, f32)>,
}

/// A document and what OCR did to it.
#[derive(Serialize, Deserialize)]
struct WireDoc {
    title: Option<String>,
    author: Option<String>,
    created: Option<String>,
    modified: Option<String>,
    pages: Vec<WirePage>,
    warnings: Vec<String>,
    ocr_read: u32,
    ocr_pending: u32,
}

impl WireDoc {
    fn from(doc: ExtractedDoc, o: &OcrOutcome) -> WireDoc {
        WireDoc {
            title: doc.title,
            author: doc.author,
            created: doc.created,
            modified: doc.modified,
            pages: doc
                .pages
                .into_iter()
                .map(|p| WirePage {
                    page: p.page,
                    label: p.label,
                    text: p.text,
                    headings: p.headings,
                    furniture: p.furniture,
                    running: p.running,
                    image_cover: p.image_cover,
                    ocr: p.ocr.map(|o| (o.engine, o.languages, o.confidence)),
                })
                .collect(),
            warnings: doc.warnings,
            ocr_read: o.read,
            ocr_pending: o.pending,
        }
    }

    fn into_doc(self) -> (ExtractedDoc, OcrOutcome) {
        let doc = ExtractedDoc {
            title: self.title,
            author: self.author,
            created: self.created,
            modified: self.modified,
            pages: self
                .pages
                .into_iter()
                .map(|p| PageText {
                    page: p.page,
                    label: p.label,
                    text: p.text,
                    headings: p.headings,
                    furniture: p.furniture,
                    boxes: Vec::new(),
                    running: p.running,
                    image_cover: p.image_cover,
                    ocr: p.ocr.map(|(engine, languages, confidence)| OcrInfo {
                        engine,
                        languages,
                        confidence,
                    }),
                })
                .collect(),
            warnings: self.warnings,
        };
        let outcome = OcrOutcome {
            read: self.ocr_read,
            pending: self.ocr_pending,
        };
        (doc, outcome)
    }
}

/// What a request carries beside the file.
#[derive(Serialize, Deserialize)]
struct Request {
    ocr: OcrSettings,
    /// Threads the worker may OCR pages on.
    threads: usize,
}

/// Workers for one ingest run: started when first needed, reused from
/// file to file, replaced when one dies, stopped when dropped.
#[derive(Debug)]
pub(crate) struct Workers {
    program: PathBuf,
    /// The ingest's threads: pages OCR'd at once across all workers stay
    /// about this many (see [`Workers::read`]).
    jobs: usize,
    busy: std::sync::atomic::AtomicUsize,
    idle: Mutex<Vec<Worker>>,
    /// Why workers cannot start, once known (files are then read in-process).
    broken: Mutex<Option<String>>,
}

impl Workers {
    pub(crate) fn new(program: PathBuf, jobs: usize) -> Workers {
        Workers {
            program,
            jobs: jobs.max(1),
            busy: std::sync::atomic::AtomicUsize::new(0),
            idle: Mutex::new(Vec::new()),
            broken: Mutex::new(None),
        }
    }

    /// An idle worker that is still alive, or a new one.
    fn take(&self) -> std::result::Result<Worker, String> {
        loop {
            let idle = self.idle.lock().ok().and_then(|mut v| v.pop());
            match idle {
                // One that died between files (the OOM killer, a signal)
                // is not blamed on the next file.
                Some(mut w) => match w.child.try_wait() {
                    Ok(None) => return Ok(w),
                    _ => w.stop(),
                },
                None => break,
            }
        }
        if let Some(why) = self.broken.lock().ok().and_then(|b| b.clone()) {
            return Err(why);
        }
        Worker::start(&self.program).map_err(|e| {
            let why = format!(
                "the PDF worker ({}) could not be started: {e}",
                self.program.display()
            );
            if let Ok(mut b) = self.broken.lock() {
                *b = Some(why.clone());
            }
            why
        })
    }

    /// Reads the PDF in `bytes` (text, then OCR as `settings` asks) in a
    /// worker. A worker that cannot be started leaves the file to
    /// `in_process`, with a warning on the document.
    ///
    /// A worker OCRs on as many threads as the ingest has that no other
    /// worker is using when the file starts, so one scanned book gets every
    /// core, and many at once get one each.
    pub(crate) fn read(
        &self,
        bytes: &[u8],
        settings: &OcrSettings,
        on_page: &(dyn Fn() + Sync),
        in_process: impl FnOnce() -> Result<(ExtractedDoc, OcrOutcome)>,
    ) -> Result<(ExtractedDoc, OcrOutcome)> {
        use std::sync::atomic::Ordering;
        let others = self.busy.fetch_add(1, Ordering::SeqCst);
        let _busy = Busy(&self.busy);
        let threads = self.jobs.saturating_sub(others).max(1);
        let mut fresh = false;
        // Why a first worker died on this file, when a second one reads it.
        let mut first_death: Option<String> = None;
        loop {
            let mut worker = match self.take() {
                Ok(w) => w,
                Err(why) => {
                    let mut read = in_process()?;
                    read.0.warnings.push(format!("read in-process: {why}"));
                    return Ok(read);
                }
            };
            match worker.read(bytes, settings, threads, on_page) {
                Ok(answer) => {
                    if let Ok(mut idle) = self.idle.lock() {
                        idle.push(worker);
                    }
                    return answer.map(|mut read| {
                        if let Some(why) = first_death {
                            read.0.warnings.push(format!(
                                "a first PDF worker stopped on this file ({why}); a second read it"
                            ));
                        }
                        read
                    });
                }
                // It never read the file: another worker tries, once. (A
                // worker retires with a clean exit after an answer; one
                // that did so as this file was sent never read it.)
                Err(Death::Unsent) if !fresh => {
                    worker.stop();
                    fresh = true;
                }
                Err(Death::Gone) if !fresh && worker.retired() => {
                    worker.stop();
                    fresh = true;
                }
                // Any other death (a signal from outside, a crash) is
                // blamed on the file only when a second worker dies too;
                // a file that hangs is not given a second five minutes.
                Err(death @ (Death::Gone | Death::Garbled(_))) if !fresh => {
                    first_death = Some(worker.bury(death, bytes.len()));
                    fresh = true;
                }
                Err(death) => return Err(Error::Pdf(worker.bury(death, bytes.len()))),
            }
        }
    }
}

/// Counts a file being read while it lives.
struct Busy<'a>(&'a std::sync::atomic::AtomicUsize);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        let idle = std::mem::take(self.idle.get_mut().unwrap_or_else(|p| p.into_inner()));
        for w in idle {
            w.stop();
        }
    }
}

/// How a worker stopped answering.
#[derive(Debug)]
enum Death {
    /// The file could not be sent: the worker was gone before it read it.
    Unsent,
    /// Its pipes closed or broke (it exited or was killed).
    Gone,
    /// It showed no progress for this long and was killed.
    Stuck(Duration),
    /// It sent something that is not an answer.
    Garbled(String),
}

#[derive(Debug)]
struct Worker {
    child: Child,
    stdin: ChildStdin,
    stdout: ChildStdout,
    /// The end of the worker's stderr (what a dying process says).
    stderr_tail: Arc<Mutex<Vec<u8>>>,
    /// The thread that keeps it; it ends when the worker does.
    drain: std::thread::JoinHandle<()>,
}

/// Bytes of a worker's stderr kept from its start and from its end.
const KEPT: usize = 4096;

impl Worker {
    fn start(program: &std::path::Path) -> std::io::Result<Worker> {
        let mut cmd = Command::new(program);
        cmd.arg(WORKER_ARG)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        #[cfg(unix)]
        {
            use std::os::unix::process::CommandExt;
            // Out of the terminal's process group: Ctrl-C is the ingest's
            // to handle (`watch` finishes its batch), not the workers'.
            cmd.process_group(0);
            // And gone with the ingest, even one killed outright.
            #[cfg(target_os = "linux")]
            // SAFETY: the closure runs between fork and exec and only calls
            // prctl and getppid, which are async-signal-safe.
            unsafe {
                let parent = libc::getpid();
                cmd.pre_exec(move || {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    if libc::getppid() != parent {
                        return Err(std::io::Error::other("the ingest is gone"));
                    }
                    Ok(())
                });
            }
        }
        let mut child = cmd.spawn()?;
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut stderr = child.stderr.take().expect("piped stderr");
        let tail = Arc::new(Mutex::new(Vec::new()));
        let keep = Arc::clone(&tail);
        // Drained on a thread of its own, so a chatty worker never blocks
        // on a full pipe; the first and the last few kilobytes are kept
        // (what failed comes first, then perhaps a long backtrace).
        let drain = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = stderr.read(&mut buf) {
                if let Ok(mut t) = keep.lock() {
                    t.extend_from_slice(&buf[..n]);
                    let len = t.len();
                    if len > 3 * KEPT {
                        t.drain(KEPT..len - KEPT);
                    }
                }
            }
        });
        Ok(Worker {
            child,
            stdin,
            stdout,
            stderr_tail: tail,
            drain,
        })
    }

    /// Sends one file and waits for its answer. The outer error is the
    /// worker's death; the inner result is the file's.
    fn read(
        &mut self,
        bytes: &[u8],
        settings: &OcrSettings,
        threads: usize,
        on_page: &(dyn Fn() + Sync),
    ) -> std::result::Result<Result<(ExtractedDoc, OcrOutcome)>, Death> {
        let request = Request {
            ocr: settings.clone(),
            threads,
        };
        if let Ok(mut t) = self.stderr_tail.lock() {
            t.clear();
        }
        let mut header = serde_json::to_vec(&request).map_err(|e| Death::Garbled(e.to_string()))?;
        header.push(b'\n');
        header.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
        let sent = self
            .stdin
            .write_all(&header)
            .and_then(|()| self.stdin.write_all(bytes))
            .and_then(|()| self.stdin.flush());
        if sent.is_err() {
            return Err(Death::Unsent);
        }
        let patience = patience(bytes.len());
        let mut deadline = Instant::now() + patience;
        loop {
            let mut tag = [0u8; 1];
            self.read_by(&mut tag, deadline, patience)?;
            match tag[0] {
                b'p' => {
                    on_page();
                    deadline = Instant::now() + patience;
                }
                b'd' | b'e' => {
                    let mut len = [0u8; 8];
                    self.read_by(&mut len, deadline, patience)?;
                    let len = u64::from_le_bytes(len);
                    if len > 1 << 32 {
                        return Err(Death::Garbled(format!("a {len}-byte answer")));
                    }
                    let mut body = Vec::new();
                    body.try_reserve_exact(len as usize)
                        .map_err(|e| Death::Garbled(e.to_string()))?;
                    body.resize(len as usize, 0);
                    self.read_by(&mut body, deadline, patience)?;
                    if tag[0] == b'e' {
                        return Ok(Err(Error::Pdf(String::from_utf8_lossy(&body).into_owned())));
                    }
                    let wire: WireDoc =
                        serde_json::from_slice(&body).map_err(|e| Death::Garbled(e.to_string()))?;
                    return Ok(Ok(wire.into_doc()));
                }
                other => return Err(Death::Garbled(format!("frame tag {other:#04x}"))),
            }
        }
    }

    /// Fills `buf` from the worker's stdout, or gives up at `deadline`.
    fn read_by(
        &mut self,
        buf: &mut [u8],
        deadline: Instant,
        patience: Duration,
    ) -> std::result::Result<(), Death> {
        let mut at = 0;
        while at < buf.len() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || !readable(&self.stdout, left) {
                return Err(Death::Stuck(patience));
            }
            match self.stdout.read(&mut buf[at..]) {
                Ok(0) => return Err(Death::Gone),
                Ok(n) => at += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return Err(Death::Gone),
            }
        }
        Ok(())
    }

    /// True when the worker has exited of its own accord, cleanly (it
    /// retires so only between files). Waits for the exit a moment.
    fn retired(&mut self) -> bool {
        let until = Instant::now() + Duration::from_secs(1);
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return status.success(),
                Ok(None) if Instant::now() < until => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                _ => return false,
            }
        }
    }

    /// Kills what is left of a worker that stopped answering and says why,
    /// in words for the file's record.
    fn bury(mut self, death: Death, len: usize) -> String {
        let _ = self.child.kill();
        let status = self.child.wait().ok();
        // The stderr thread ends with the process (at most a second more:
        // a grandchild could hold the pipe open).
        let until = Instant::now() + Duration::from_secs(1);
        while !self.drain.is_finished() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(5));
        }
        let said = self
            .stderr_tail
            .lock()
            .map(|t| String::from_utf8_lossy(&t).into_owned())
            .unwrap_or_default();
        let mb = |b: u64| b as f64 / 1e6;
        if said.contains("memory allocation of") {
            return format!(
                "damaged or hostile PDF: reading it needed more memory than the {:.0} MB \
                 a {:.1} MB file may use",
                mb(allowance(len)),
                mb(len as u64)
            );
        }
        if said.contains("has overflowed its stack") {
            return "damaged PDF: its objects nest too deeply to read".into();
        }
        match death {
            Death::Stuck(d) => format!(
                "damaged PDF: reading it made no progress for {} s, so it was given up",
                d.as_secs()
            ),
            Death::Garbled(what) => format!("the PDF worker sent a garbled answer ({what})"),
            Death::Gone | Death::Unsent => {
                let how = status.map_or_else(|| "it vanished".to_string(), describe_exit);
                // What the worker last said, if anything.
                let last = said
                    .lines()
                    .rev()
                    .map(str::trim)
                    .find(|l| !l.is_empty())
                    .map(|l| format!(": {}", crate::sanitize::terminal(l)))
                    .unwrap_or_default();
                format!("damaged PDF: the process reading it stopped ({how}){last}")
            }
        }
    }

    /// Closes the worker's stdin (it exits at the end of its input) and
    /// waits a little for it, then kills it.
    fn stop(mut self) {
        drop(self.stdin);
        let until = Instant::now() + Duration::from_secs(2);
        while Instant::now() < until {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn describe_exit(status: std::process::ExitStatus) -> String {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(sig) = status.signal() {
            let name = match sig {
                libc::SIGABRT => "aborted",
                libc::SIGKILL => "killed, perhaps for lack of memory",
                libc::SIGSEGV => "a memory fault",
                libc::SIGBUS => "a bus error",
                _ => "a signal",
            };
            return format!("{name}, signal {sig}");
        }
    }
    match status.code() {
        Some(c) => format!("exit status {c}"),
        None => "no exit status".into(),
    }
}

/// True when `pipe` has data (or its end) within `wait`.
#[cfg(unix)]
fn readable(pipe: &ChildStdout, wait: Duration) -> bool {
    use std::os::fd::AsRawFd;
    let mut fds = libc::pollfd {
        fd: pipe.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let until = Instant::now() + wait;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        let ms = left.as_millis().clamp(1, i32::MAX as u128) as i32;
        // SAFETY: `fds` is one valid pollfd for the duration of the call.
        let n = unsafe { libc::poll(&mut fds, 1, ms) };
        if n >= 0 {
            return n > 0;
        }
        if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            // A pipe that cannot be polled is read (and fails) directly.
            return true;
        }
    }
}

#[cfg(not(unix))]
fn readable(_: &ChildStdout, _: Duration) -> bool {
    true
}

/// Private writable memory the process maps now (what `RLIMIT_DATA`
/// counts), in bytes.
#[cfg(target_os = "linux")]
fn data_now() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmData:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// The memory limit a worker found when it started (soft, hard), restored
/// for the programs it starts.
#[cfg(target_os = "linux")]
static FOUND_LIMIT: std::sync::OnceLock<(libc::rlim_t, libc::rlim_t)> = std::sync::OnceLock::new();

#[cfg(not(target_os = "linux"))]
fn data_now() -> Option<u64> {
    None
}

/// Holds the process to `bytes` more of private writable memory than it
/// has now: past that, allocations fail (and the process aborts). False
/// when the limit could not be set.
#[cfg(target_os = "linux")]
fn limit_memory(bytes: u64) -> bool {
    let Some(now) = data_now() else { return false };
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write one rlimit struct we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_DATA, &mut old) != 0 {
            return false;
        }
        let found = *FOUND_LIMIT.get_or_init(|| (old.rlim_cur, old.rlim_max));
        // Never above what the user allowed the ingest.
        let new = libc::rlimit {
            rlim_cur: now.saturating_add(bytes).min(found.0).min(old.rlim_max),
            rlim_max: old.rlim_max,
        };
        libc::setrlimit(libc::RLIMIT_DATA, &new) == 0
    }
}

#[cfg(not(target_os = "linux"))]
fn limit_memory(_: u64) -> bool {
    false
}

/// In a worker, gives a program it starts (Tesseract) the memory limit
/// the worker itself was started with: limits are inherited, and
/// Tesseract's needs are not the file's. Elsewhere it does nothing.
pub(crate) fn unlimit_child(cmd: &mut Command) {
    #[cfg(target_os = "linux")]
    if let Some(&(soft, hard)) = FOUND_LIMIT.get() {
        use std::os::unix::process::CommandExt;
        // SAFETY: the closure runs between fork and exec and only calls
        // setrlimit, which is async-signal-safe.
        unsafe {
            cmd.pre_exec(move || {
                let l = libc::rlimit {
                    rlim_cur: soft,
                    rlim_max: hard,
                };
                libc::setrlimit(libc::RLIMIT_DATA, &l);
                Ok(())
            });
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = cmd;
}

/// The worker's side: answers requests on stdin until it closes. Returns
/// the process's exit code.
pub fn serve_worker() -> i32 {
    let stdin = std::io::stdin();
    let out = Mutex::new(std::io::stdout());
    let mut input = BufReader::new(stdin.lock());
    let mut engine: Option<(Option<PathBuf>, ocr::Lazy)> = None;
    loop {
        match answer_one(&mut input, &out, &mut engine) {
            Ok(true) => {}
            Ok(false) => return 0,
            Err(e) => {
                eprintln!("pdf worker: {e}");
                return 1;
            }
        }
        // A worker whose heap kept more than its floor after a file (freed
        // memory malloc could not return) retires; the next file gets a
        // fresh one.
        trim();
        if heap_held().is_some_and(|b| b > FLOOR) {
            return 0;
        }
    }
}

/// Bytes the allocator holds from the system outside large mappings (in
/// use or free), across its arenas.
fn heap_held() -> Option<u64> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallinfo2 only reads the allocator's statistics.
        let m = unsafe { libc::mallinfo2() };
        Some(m.arena as u64)
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    None
}

/// Returns the heap's free memory to the system.
fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free heap memory to the system.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Reads one request and answers it; false at the end of the input.
fn answer_one(
    input: &mut impl BufRead,
    out: &Mutex<std::io::Stdout>,
    engine: &mut Option<(Option<PathBuf>, ocr::Lazy)>,
) -> std::io::Result<bool> {
    let mut line = Vec::new();
    if input.read_until(b'\n', &mut line)? == 0 {
        return Ok(false);
    }
    let request: Request = serde_json::from_slice(&line)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
    let mut len = [0u8; 8];
    input.read_exact(&mut len)?;
    let len = usize::try_from(u64::from_le_bytes(len))
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
    trim();
    let settings = request.ocr;
    if engine.as_ref().is_none_or(|(p, _)| *p != settings.program) {
        *engine = Some((
            settings.program.clone(),
            ocr::Lazy::new(settings.program.clone()),
        ));
    }
    let lazy = &engine.as_ref().expect("set above").1;
    let send = |tag: u8, body: &[u8]| -> std::io::Result<()> {
        let mut o = out.lock().unwrap_or_else(|p| p.into_inner());
        o.write_all(&[tag])?;
        if tag != b'p' {
            o.write_all(&(body.len() as u64).to_le_bytes())?;
            o.write_all(body)?;
        }
        o.flush()
    };
    let on_page = || {
        let _ = send(b'p', &[]);
    };
    // Parsing and OCR run on threads with the ingest's deep stacks (nested
    // objects recurse in the parser), made before the limit is measured so
    // their reserved stacks do not count against the file, and joined
    // before the answer is sent.
    let answer = rayon::ThreadPoolBuilder::new()
        .num_threads(request.threads.clamp(1, 256))
        .stack_size(super::WORKER_STACK_BYTES)
        .build_scoped(
            |thread| thread.run(),
            |pool| -> std::io::Result<_> {
                if !limit_memory(allowance(len)) {
                    eprintln!("pdf worker: the memory limit could not be set");
                }
                let mut bytes = vec![0u8; len];
                input.read_exact(&mut bytes)?;
                Ok(pool.install(|| super::read_pdf(&bytes, &settings, lazy, &on_page)))
            },
        )
        .map_err(std::io::Error::other)??;
    match answer {
        Ok((doc, outcome)) => {
            let body = serde_json::to_vec(&WireDoc::from(doc, &outcome))
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
            send(b'd', &body)?;
        }
        Err(e) => send(b'e', e.to_string().as_bytes())?,
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_document_crosses_the_wire_whole() {
        let doc = ExtractedDoc {
            title: Some("Minutes".into()),
            author: None,
            created: Some("2025-03-14".into()),
            modified: None,
            pages: vec![PageText {
                page: 2,
                label: Some("ii".into()),
                text: "Budget: 4.2 million yen.\n予算".into(),
                headings: vec![(0, "Budget".into())],
                furniture: vec![(3, 9)],
                boxes: Vec::new(),
                running: vec!["Header".into()],
                image_cover: 0.25,
                ocr: Some(OcrInfo {
                    engine: "tesseract 5".into(),
                    languages: "jpn".into(),
                    confidence: 91.5,
                }),
            }],
            warnings: vec!["a warning".into()],
        };
        let outcome = OcrOutcome {
            read: 1,
            pending: 2,
        };
        let json = serde_json::to_vec(&WireDoc::from(doc.clone(), &outcome)).unwrap();
        let (back, o) = serde_json::from_slice::<WireDoc>(&json).unwrap().into_doc();
        assert_eq!(back.pages, doc.pages);
        assert_eq!(back.pages[0].headings, doc.pages[0].headings);
        assert_eq!(back.pages[0].running, doc.pages[0].running);
        assert_eq!(back.pages[0].image_cover, 0.25);
        assert_eq!(back.title, doc.title);
        assert_eq!(back.created, doc.created);
        assert_eq!(back.warnings, doc.warnings);
        assert_eq!(o, outcome);
    }

    #[test]
    fn the_allowance_grows_with_the_file() {
        assert_eq!(allowance(0), 512 << 20);
        assert_eq!(allowance(10 << 20), (512 << 20) + (320 << 20));
        assert!(allowance(usize::MAX) > allowance(1 << 40));
    }
}
