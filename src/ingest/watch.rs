//! Keeping an index in step with folders: filesystem events (inotify,
//! FSEvents...; polling for network mounts), debounced, become small
//! ingests of what changed.
//!
//! [`watch`] holds the index's write lock for as long as it runs and
//! announces itself in the lock file, so an `ingest` started meanwhile
//! can hand it its paths ([`hand_over`]) instead of failing. It starts
//! with a catch-up pass over its folders (files changed while nobody
//! watched), then:
//! - a created or changed file is ingested once its size and modification
//!   time have held still for [`WatchOptions::settle`] (files still being
//!   written wait);
//! - a deleted file, or a folder moved away, has its entries removed; a
//!   moved file is a removal and a creation, and the creation re-uses the
//!   chunks' vectors, which are cached by their text (nothing is embedded
//!   twice);
//! - a watched folder that disappears keeps its entries (an unmounted
//!   disk is not a deletion) and is caught up when it comes back;
//! - a batch that fails (a full disk) is reported and retried with
//!   backoff; the ingest it runs is crash-safe, so a kill at any moment
//!   leaves an index the next run finishes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};

use super::{FileKind, IngestOptions, IngestReport};
use crate::index::WriteLock;
use crate::{Error, Result};

/// How long changes may be held back by others still changing.
const STARVED: Duration = Duration::from_secs(10);

/// Where `ingest` leaves paths for the watcher that owns the index.
pub const INBOX: &str = "watch-inbox";

/// How a watch runs.
#[derive(Debug, Clone)]
pub struct WatchOptions {
    /// The folders (or files) watched.
    pub roots: Vec<PathBuf>,
    /// The ingest each batch runs (its `paths` and `forget` are set per batch).
    pub ingest: IngestOptions,
    /// Quiet time after the last event before a batch runs.
    pub debounce: Duration,
    /// How long a file's size and modification time must hold still.
    pub settle: Duration,
    /// Poll every so often instead of using the platform's events (for
    /// network mounts, where events do not arrive).
    pub poll: Option<Duration>,
    /// Do the catch-up pass and return.
    pub once: bool,
}

/// What a watch reports as it goes.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum WatchEvent {
    /// Watching these folders (after the catch-up pass).
    Watching {
        /// The roots being watched.
        roots: Vec<String>,
        /// Roots that do not exist now (caught up when they appear).
        missing: Vec<String>,
        /// "events" (inotify, FSEvents...) or "poll".
        backend: String,
    },
    /// A batch of changes was ingested.
    Batch {
        /// Files (re)indexed.
        indexed: usize,
        /// Entries removed.
        removed: usize,
        /// Failed files.
        failed: usize,
        /// The paths of the batch.
        paths: Vec<String>,
        /// Seconds the batch took.
        seconds: f64,
        /// Milliseconds from the first change seen to the batch committed.
        latency_ms: u64,
        /// The ingest report.
        #[serde(skip)]
        report: Box<IngestReport>,
    },
    /// Paths an `ingest` handed over.
    HandedOver {
        /// The paths.
        paths: Vec<String>,
    },
    /// A watched root went away (its entries are kept).
    RootGone {
        /// The root.
        root: String,
    },
    /// A watched root came back; it is caught up.
    RootBack {
        /// The root.
        root: String,
    },
    /// A folder handed over by `ingest` (or the TUI) is watched from now on.
    Added {
        /// The folder.
        root: String,
    },
    /// Changes still settling or waiting for the quiet time.
    Pending {
        /// How many paths.
        paths: usize,
    },
    /// Something failed; the watch goes on (and retries).
    Error {
        /// What.
        message: String,
    },
}

/// The file in the index directory where a running watcher publishes its
/// [`WatchState`].
pub const STATE_FILE: &str = "watch.json";

/// A running watcher's state, for `status` and the TUI.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WatchState {
    /// The watcher's process id.
    pub pid: u32,
    /// The folders watched.
    pub roots: Vec<String>,
    /// Those not there now.
    pub missing: Vec<String>,
    /// "events" or "poll".
    pub backend: String,
    /// When it started (seconds since the Unix epoch).
    pub started: u64,
    /// When it last ingested a change (seconds since the Unix epoch).
    pub last_change: Option<u64>,
    /// Files of the last batch: indexed, removed, failed.
    pub last_batch: Option<(usize, usize, usize)>,
    /// Paths seen changing and not ingested yet.
    pub pending: usize,
    /// The last error, while retrying.
    pub error: Option<String>,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The state of the watcher that owns the index at `index_dir`, if one
/// runs (a state file left by a killed watcher is not believed).
pub fn state(index_dir: &Path) -> Option<WatchState> {
    // The announcement first: the lock is probed (briefly taken when free,
    // which a writer starting at that instant would see) only when it
    // names a watcher.
    let said = std::fs::read_to_string(index_dir.join("lock")).ok()?;
    said.trim().strip_prefix("watch ")?;
    let owner = crate::index::lock_owner(index_dir)?;
    let pid: u32 = owner.strip_prefix("watch ")?.trim().parse().ok()?;
    let body = std::fs::read(index_dir.join(STATE_FILE)).ok()?;
    let st: WatchState = serde_json::from_slice(&body).ok()?;
    (st.pid == pid).then_some(st)
}

/// Keeps [`STATE_FILE`] up to date as events pass.
struct Publisher {
    path: PathBuf,
    state: WatchState,
    written: Option<Instant>,
    /// A change not written yet.
    dirty: bool,
}

impl Publisher {
    fn new(index_dir: &Path) -> Publisher {
        Publisher {
            path: index_dir.join(STATE_FILE),
            state: WatchState {
                pid: std::process::id(),
                backend: "catching up".into(),
                started: unix_now(),
                ..WatchState::default()
            },
            written: None,
            dirty: false,
        }
    }

    /// Records `ev`, publishes, and passes it on.
    fn emit(&mut self, ev: &WatchEvent, on_event: &mut dyn FnMut(&WatchEvent)) {
        match ev {
            WatchEvent::Watching {
                roots,
                missing,
                backend,
            } => {
                self.state.roots = roots.clone();
                self.state.missing = missing.clone();
                self.state.backend = backend.clone();
            }
            WatchEvent::Batch {
                indexed,
                removed,
                failed,
                ..
            } => {
                if indexed + removed + failed > 0 {
                    self.state.last_change = Some(unix_now());
                }
                self.state.last_batch = Some((*indexed, *removed, *failed));
                self.state.error = None;
            }
            WatchEvent::RootGone { root } => self.state.missing.push(root.clone()),
            WatchEvent::RootBack { root } => self.state.missing.retain(|m| m != root),
            WatchEvent::Added { root } => self.state.roots.push(root.clone()),
            WatchEvent::Error { message } => self.state.error = Some(message.clone()),
            WatchEvent::HandedOver { .. } | WatchEvent::Pending { .. } => {}
        }
        self.write();
        on_event(ev);
    }

    /// The number of pending paths, published at most twice a second
    /// (a count held back is written at a later call).
    fn pending(&mut self, n: usize) {
        if n != self.state.pending {
            self.state.pending = n;
            self.dirty = true;
        }
        if self.dirty
            && self
                .written
                .is_none_or(|w| w.elapsed() >= Duration::from_millis(500))
        {
            self.write();
        }
    }

    fn write(&mut self) {
        self.written = Some(Instant::now());
        self.dirty = false;
        let tmp = self.path.with_extension("json.tmp");
        if let Ok(body) = serde_json::to_vec_pretty(&self.state) {
            if std::fs::write(&tmp, body).is_ok() {
                let _ = std::fs::rename(&tmp, &self.path);
            }
        }
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Hands `paths` to the watcher that owns the index at `index_dir`: they
/// are ingested by its next batch. Returns where the request was left.
pub fn hand_over(index_dir: &Path, paths: &[PathBuf]) -> Result<PathBuf> {
    let inbox = index_dir.join(INBOX);
    std::fs::create_dir_all(&inbox).map_err(|e| Error::io(&inbox, e))?;
    let abs: Vec<String> = paths
        .iter()
        .map(|p| {
            std::path::absolute(p)
                .unwrap_or_else(|_| p.clone())
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let tmp = inbox.join(format!(".{nanos}-{}.tmp", std::process::id()));
    let body = serde_json::to_vec(&abs).map_err(Error::index_lib)?;
    std::fs::write(&tmp, body).map_err(|e| Error::io(&tmp, e))?;
    let done = inbox.join(format!("{nanos}-{}.json", std::process::id()));
    std::fs::rename(&tmp, &done).map_err(|e| Error::io(&done, e))?;
    Ok(done)
}

/// The requests left by `ingest` in the inbox: read once, removed only
/// when the batches that took them have committed (a watcher killed
/// before then reads them again at its next start).
#[derive(Default)]
struct Inbox {
    /// Request files read and not yet removed.
    taken: BTreeSet<PathBuf>,
}

impl Inbox {
    /// The paths of the requests not read before.
    fn take(&mut self, index_dir: &Path) -> Vec<PathBuf> {
        let Ok(entries) = std::fs::read_dir(index_dir.join(INBOX)) else {
            return Vec::new();
        };
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .filter(|p| !self.taken.contains(p))
            .collect();
        files.sort();
        let mut out = Vec::new();
        for f in files {
            if let Ok(body) = std::fs::read(&f) {
                if let Ok(paths) = serde_json::from_slice::<Vec<String>>(&body) {
                    out.extend(paths.into_iter().map(PathBuf::from));
                }
            }
            self.taken.insert(f);
        }
        out
    }

    /// Everything taken is committed: the requests go.
    fn done(&mut self) {
        for f in std::mem::take(&mut self.taken) {
            let _ = std::fs::remove_file(&f);
        }
    }
}

/// A path seen changing: when, and its size and mtime then.
#[derive(Debug, Clone)]
struct Seen {
    first: Instant,
    last: Instant,
    stamp: Option<(u64, SystemTime)>,
}

fn stamp(p: &Path) -> Option<(u64, SystemTime)> {
    let m = std::fs::metadata(p).ok()?;
    Some((m.len(), m.modified().ok()?))
}

/// True for paths a watch acts on: files shirabe reads, and folders (or
/// what is gone, which may have been either); never the index itself.
fn relevant(p: &Path, index_dir: &Path) -> bool {
    if p.starts_with(index_dir) {
        return false;
    }
    let hidden = p
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with('.') || n.ends_with('~'));
    !hidden && (FileKind::of(p).is_some() || p.is_dir() || !p.exists())
}

/// Watches `opts.roots` until `stop` is set (or, with `once`, after the
/// catch-up pass), ingesting changes under `lock`.
pub fn watch(
    opts: &WatchOptions,
    lock: &WriteLock,
    stop: &AtomicBool,
    on_event: &mut dyn FnMut(&WatchEvent),
) -> Result<()> {
    let index_dir = std::path::absolute(&opts.ingest.index_dir)
        .unwrap_or_else(|_| opts.ingest.index_dir.clone());
    let _ = lock.announce(&format!("watch {}", std::process::id()));
    let mut publisher = Publisher::new(&index_dir);
    let mut emit = |ev: WatchEvent, p: &mut Publisher| p.emit(&ev, on_event);
    let roots: Vec<PathBuf> = opts
        .roots
        .iter()
        .map(|r| std::path::absolute(r).unwrap_or_else(|_| r.clone()))
        .collect();

    publisher.state.roots = roots.iter().map(|r| r.display().to_string()).collect();
    publisher.write();
    let mut inbox = Inbox::default();
    // Catch-up: every root that exists, and what was handed over.
    let mut catch_up = |publisher: &mut Publisher,
                        emit: &mut dyn FnMut(WatchEvent, &mut Publisher)| {
        let present: Vec<PathBuf> = roots.iter().filter(|r| r.exists()).cloned().collect();
        let mut paths = present.clone();
        paths.extend(inbox.take(&index_dir));
        let (ok, ev) = run_batch(opts, lock, paths, present, Instant::now());
        if let Some(ev) = ev {
            emit(ev, publisher);
        }
        if ok {
            inbox.done();
        }
        ok
    };
    if opts.once {
        return if catch_up(&mut publisher, &mut emit) {
            Ok(())
        } else {
            Err(Error::Index(
                "the catch-up pass failed (see the error above)".into(),
            ))
        };
    }

    let (tx, rx) = mpsc::channel::<notify::Result<notify::Event>>();
    let (mut watcher, backend): (Box<dyn notify::Watcher>, &str) = match opts.poll {
        Some(every) => (
            Box::new(
                notify::PollWatcher::new(tx, notify::Config::default().with_poll_interval(every))
                    .map_err(Error::index("cannot poll the folders"))?,
            ),
            "poll",
        ),
        None => (
            Box::new(
                notify::recommended_watcher(tx)
                    .map_err(Error::index("cannot watch the folders"))?,
            ),
            "events",
        ),
    };
    let mut watched: BTreeMap<PathBuf, bool> = BTreeMap::new();
    for r in &roots {
        let ok = watcher.watch(r, notify::RecursiveMode::Recursive).is_ok();
        watched.insert(r.clone(), ok);
    }
    // Watching first, then catching up: nothing saved meanwhile is missed.
    catch_up(&mut publisher, &mut emit);
    let mut roots = roots;
    emit(
        WatchEvent::Watching {
            roots: roots.iter().map(|r| r.display().to_string()).collect(),
            missing: watched
                .iter()
                .filter(|(_, ok)| !**ok)
                .map(|(r, _)| r.display().to_string())
                .collect(),
            backend: backend.into(),
        },
        &mut publisher,
    );

    let mut pending: BTreeMap<PathBuf, Seen> = BTreeMap::new();
    let mut last_roots_check = Instant::now();
    let mut backoff = Duration::ZERO;
    let mut retry_at = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(Ok(ev)) => {
                let now = Instant::now();
                // Reads (ours included: a batch opens the files it hashes)
                // change nothing, nor does a folder's own timestamp.
                let kind = ev.kind;
                let rescan = ev.need_rescan();
                let mut paths = if matches!(kind, notify::EventKind::Access(_)) {
                    Vec::new()
                } else {
                    ev.paths
                };
                // Events were lost (the kernel's queue overflowed in a
                // burst): every folder is looked at again.
                if rescan {
                    paths.extend(
                        watched
                            .iter()
                            .filter(|(_, ok)| **ok)
                            .map(|(r, _)| r.clone()),
                    );
                }
                for p in paths {
                    let folder_touched = matches!(
                        kind,
                        notify::EventKind::Modify(notify::event::ModifyKind::Metadata(_))
                    ) && p.is_dir();
                    if !folder_touched && relevant(&p, &index_dir) {
                        let s = pending.entry(p.clone()).or_insert(Seen {
                            first: now,
                            last: now,
                            stamp: None,
                        });
                        s.last = now;
                        s.stamp = stamp(&p);
                    }
                }
            }
            Ok(Err(e)) => emit(
                WatchEvent::Error {
                    message: format!("watching: {e}"),
                },
                &mut publisher,
            ),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        // Handed-over paths join the batch at once.
        let handed = inbox.take(&index_dir);
        if !handed.is_empty() {
            emit(
                WatchEvent::HandedOver {
                    paths: handed.iter().map(|p| p.display().to_string()).collect(),
                },
                &mut publisher,
            );
            let now = Instant::now()
                .checked_sub(opts.debounce + opts.settle)
                .unwrap_or_else(Instant::now);
            for p in handed {
                // A folder outside the watched ones is watched from now on.
                let p = std::path::absolute(&p).unwrap_or(p);
                if p.is_dir()
                    && !roots.iter().any(|r| p.starts_with(r))
                    && watcher.watch(&p, notify::RecursiveMode::Recursive).is_ok()
                {
                    roots.push(p.clone());
                    watched.insert(p.clone(), true);
                    emit(
                        WatchEvent::Added {
                            root: p.display().to_string(),
                        },
                        &mut publisher,
                    );
                }
                let st = stamp(&p);
                pending.insert(
                    p,
                    Seen {
                        first: now,
                        last: now,
                        stamp: st,
                    },
                );
            }
        }
        // Roots that went away or came back.
        if last_roots_check.elapsed() >= Duration::from_secs(1) {
            last_roots_check = Instant::now();
            for (r, ok) in watched.iter_mut() {
                let exists = r.exists();
                if *ok && !exists {
                    *ok = false;
                    let _ = watcher.unwatch(r);
                    // Its files are not deletions: drop what is pending under it.
                    pending.retain(|p, _| !p.starts_with(r.as_path()));
                    emit(
                        WatchEvent::RootGone {
                            root: r.display().to_string(),
                        },
                        &mut publisher,
                    );
                } else if !*ok
                    && exists
                    && watcher.watch(r, notify::RecursiveMode::Recursive).is_ok()
                {
                    *ok = true;
                    emit(
                        WatchEvent::RootBack {
                            root: r.display().to_string(),
                        },
                        &mut publisher,
                    );
                    let batch = vec![r.clone()];
                    if let Some(ev) = run_batch(opts, lock, batch.clone(), batch, Instant::now()).1
                    {
                        emit(ev, &mut publisher);
                    }
                }
            }
        }
        publisher.pending(pending.len());
        // A batch: after the quiet time, of the paths that have settled.
        let now = Instant::now();
        // Bursts are gathered until all is quiet; but a file written
        // without end (a log) must not hold the others back for ever.
        let quiet = pending
            .values()
            .all(|s| now.duration_since(s.last) >= opts.debounce);
        let waited_long = pending
            .values()
            .any(|s| now.duration_since(s.first) >= (opts.debounce * 5).max(STARVED));
        if pending.is_empty() || !(quiet || waited_long) || now < retry_at {
            continue;
        }
        let mut ready = Vec::new();
        let mut forget = Vec::new();
        let mut first = now;
        let keys: Vec<PathBuf> = pending.keys().cloned().collect();
        for p in keys {
            let s = pending[&p].clone();
            if now.duration_since(s.last) < opts.debounce {
                continue;
            }
            let current = stamp(&p);
            let settled = match (current, s.stamp) {
                (None, _) => true,
                (Some(c), Some(was)) => {
                    // (A modification time in the future counts as old.)
                    c == was
                        && SystemTime::now()
                            .duration_since(c.1)
                            .map_or(true, |age| age >= opts.settle)
                }
                (Some(_), None) => false,
            };
            if !settled {
                // Still being written: look again later.
                let e = pending.get_mut(&p).expect("key");
                e.stamp = current;
                e.last = now;
                continue;
            }
            pending.remove(&p);
            first = first.min(s.first);
            if p.is_dir() {
                // A folder (moved in, or looked at again): what is under
                // it is ingested, and what is gone from it forgotten.
                forget.push(p.clone());
                ready.push(p);
            } else if p.exists() {
                ready.push(p);
            } else {
                forget.push(p);
            }
        }
        if ready.is_empty() && forget.is_empty() {
            emit(
                WatchEvent::Pending {
                    paths: pending.len(),
                },
                &mut publisher,
            );
            continue;
        }
        let failed_paths: Vec<PathBuf> = ready.iter().chain(&forget).cloned().collect();
        let (ok, ev) = run_batch(opts, lock, ready, forget, first);
        if ok && pending.is_empty() {
            inbox.done();
        }
        publisher.state.pending = pending.len();
        if let Some(ev) = ev {
            emit(ev, &mut publisher);
        }
        if !ok {
            // Retry the whole batch with backoff (a full disk, say).
            backoff = (backoff * 2).clamp(Duration::from_secs(1), Duration::from_secs(60));
            retry_at = Instant::now() + backoff;
            for p in failed_paths {
                pending.insert(
                    p,
                    Seen {
                        first,
                        last: first,
                        stamp: None,
                    },
                );
            }
        } else {
            backoff = Duration::ZERO;
        }
    }
    Ok(())
}

/// Ingests `paths` and forgets `forget`: whether the ingest went
/// through, and the event that says how.
fn run_batch(
    opts: &WatchOptions,
    lock: &WriteLock,
    paths: Vec<PathBuf>,
    forget: Vec<PathBuf>,
    first: Instant,
) -> (bool, Option<WatchEvent>) {
    let unique: BTreeSet<PathBuf> = paths.into_iter().collect();
    let batch = IngestOptions {
        paths: unique.into_iter().collect(),
        forget,
        prune: false,
        ..opts.ingest.clone()
    };
    let started = Instant::now();
    match super::run_locked(&batch, lock, &|_| {}) {
        Ok(report) => {
            let mut names: Vec<String> = batch
                .paths
                .iter()
                .chain(&batch.forget)
                .map(|p| p.display().to_string())
                .collect();
            names.truncate(100);
            let ev = WatchEvent::Batch {
                indexed: report.indexed,
                removed: report.pruned.len(),
                failed: report.failed.len(),
                paths: names,
                seconds: started.elapsed().as_secs_f64(),
                latency_ms: first.elapsed().as_millis() as u64,
                report: Box::new(report),
            };
            (true, Some(ev))
        }
        Err(e) => {
            // The index writer's own error hides the cause when the disk
            // fills up: say it.
            let full = match free_bytes(&opts.ingest.index_dir) {
                Some(free) if free < 1 << 20 => format!(
                    " (the disk holding {} has {} KB free)",
                    opts.ingest.index_dir.display(),
                    free >> 10
                ),
                _ => String::new(),
            };
            (
                false,
                Some(WatchEvent::Error {
                    message: format!("ingesting {} paths: {e}{full}", batch.paths.len()),
                }),
            )
        }
    }
}

/// Bytes free for an unprivileged writer on the file system of `path`.
#[cfg(unix)]
fn free_bytes(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs(3) with a NUL-terminated path and a zeroed struct it
    // fills; the struct is read only when the call succeeded.
    unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        (libc::statvfs(c.as_ptr(), &mut st) == 0).then(|| st.f_bavail as u64 * st.f_frsize as u64)
    }
}

#[cfg(not(unix))]
fn free_bytes(_path: &Path) -> Option<u64> {
    None
}
