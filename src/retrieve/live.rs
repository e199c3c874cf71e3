//! An index that long-running readers (`serve`, the TUI, `chat`) keep
//! open while a writer (`watch`, `ingest`, `embed-index`) commits to it.
//!
//! A [`Live`] hands out [`Snapshot`]s: an opened index with its manifest
//! and the [`Retriever`] over it, all from one manifest generation. At
//! most once per [`Live::CHECK_EVERY`] a request for a snapshot looks at
//! the manifest file (a `stat`; the file is read only when it changed) and,
//! when its generation moved on, opens the index again and reopens the
//! retriever, keeping the embedding model it already has. The writer
//! saves the manifest only after the commit and the vector rows it names
//! are on disk, so a snapshot's manifest and vectors always belong
//! together (BM25 reads tantivy's latest commit, which holds whole files:
//! between a commit and its manifest it may run ahead); a reload
//! that fails (the writer mid-rename, a damaged file) keeps the last good
//! snapshot and says why in a note.
//!
//! Requests never wait for a reload: one caller reloads while the others
//! go on with the snapshot they have.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use super::retriever::{Retriever, RetrieverConfig};
use crate::index::ShirabeIndex;
use crate::Result;

/// One consistent view of the index.
pub struct Snapshot {
    /// The index as of `generation`.
    pub index: ShirabeIndex,
    /// How it is searched.
    pub retriever: Retriever,
    /// The manifest generation it was opened at (0: no manifest yet).
    pub generation: u64,
}

/// What the manifest file looked like at the last check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    len: u64,
    modified: Option<SystemTime>,
}

fn stamp_of(path: &Path) -> Option<Stamp> {
    let m = std::fs::metadata(path).ok()?;
    Some(Stamp {
        len: m.len(),
        modified: m.modified().ok(),
    })
}

/// The reload bookkeeping (behind one lock, taken with `try_lock` so a
/// request never waits for another's reload).
struct Check {
    at: Instant,
    stamp: Option<Stamp>,
    /// The last failure noted.
    said: Option<String>,
}

/// Where a [`Live`] says why it searches with less than it could.
pub type NoteSink = Box<dyn FnMut(&str) + Send>;

/// An index kept current for a long-running reader.
pub struct Live {
    dir: PathBuf,
    cfg: RetrieverConfig,
    current: RwLock<Arc<Snapshot>>,
    check: Mutex<Check>,
    notes: Mutex<NoteSink>,
}

impl Live {
    /// How often a snapshot request may look at the manifest.
    pub const CHECK_EVERY: Duration = Duration::from_secs(1);

    /// Opens the index in `dir` with the retriever `cfg` asks for;
    /// `on_note` hears why it searches with less than it could, now and
    /// at every reload.
    pub fn open(dir: &Path, cfg: RetrieverConfig, mut on_note: NoteSink) -> Result<Live> {
        let stamp = stamp_of(&dir.join("manifest.json"));
        let index = ShirabeIndex::open(dir)?;
        let retriever = Retriever::open(&index, &cfg, &mut *on_note)?;
        Ok(Live::with(index, retriever, cfg, stamp, on_note))
    }

    /// A live view over an index and retriever opened already.
    pub fn from_parts(
        index: ShirabeIndex,
        retriever: Retriever,
        cfg: RetrieverConfig,
        on_note: NoteSink,
    ) -> Live {
        // The manifest may have changed while the models loaded: the
        // first look reopens the index (cheaply, if it did not).
        Live::with(index, retriever, cfg, None, on_note)
    }

    fn with(
        index: ShirabeIndex,
        retriever: Retriever,
        cfg: RetrieverConfig,
        stamp: Option<Stamp>,
        on_note: NoteSink,
    ) -> Live {
        let generation = index.manifest.as_ref().map_or(0, |m| m.generation);
        Live {
            dir: index.dir.clone(),
            cfg,
            current: RwLock::new(Arc::new(Snapshot {
                index,
                retriever,
                generation,
            })),
            check: Mutex::new(Check {
                at: Instant::now(),
                stamp,
                said: None,
            }),
            notes: Mutex::new(on_note),
        }
    }

    /// The index directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The snapshot as it is now, without looking for changes.
    pub fn current(&self) -> Arc<Snapshot> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The latest snapshot: reloaded first when the manifest changed and
    /// the last look was [`Live::CHECK_EVERY`] ago or more.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        if let Ok(mut check) = self.check.try_lock() {
            if check.at.elapsed() >= Self::CHECK_EVERY {
                self.look(&mut check);
            }
        }
        self.current()
    }

    /// Looks for a new generation now (waiting for a reload in progress);
    /// true when the snapshot changed.
    pub fn refresh(&self) -> bool {
        let mut check = self.check.lock().unwrap_or_else(|e| e.into_inner());
        self.look(&mut check)
    }

    fn look(&self, check: &mut Check) -> bool {
        check.at = Instant::now();
        let stamp = stamp_of(&self.dir.join("manifest.json"));
        if stamp == check.stamp {
            return false;
        }
        match self.reload() {
            Ok(changed) => {
                check.stamp = stamp;
                check.said = None;
                changed
            }
            Err(e) => {
                // Keep the last good snapshot; try again at the next look
                // (saying so once per distinct failure).
                let text = format!(
                    "reloading {}: {e}; still searching the index as it was",
                    self.dir.display()
                );
                if check.said.as_deref() != Some(text.as_str()) {
                    self.note(&text);
                    check.said = Some(text);
                }
                false
            }
        }
    }

    fn note(&self, text: &str) {
        let mut f = self.notes.lock().unwrap_or_else(|e| e.into_inner());
        (*f)(text);
    }

    /// Opens the index again if its generation moved on.
    fn reload(&self) -> Result<bool> {
        let old = self.current();
        let index = ShirabeIndex::open(&self.dir)?;
        let generation = index.manifest.as_ref().map_or(0, |m| m.generation);
        if generation == old.generation {
            return Ok(false);
        }
        let retriever = {
            let mut notes = self.notes.lock().unwrap_or_else(|e| e.into_inner());
            old.retriever.reopen(&index, &self.cfg, &mut **notes)?
        };
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(Snapshot {
            index,
            retriever,
            generation,
        });
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::IngestOptions;

    fn ingest(docs: &Path, index: &Path) {
        crate::ingest::run(
            &IngestOptions::new(vec![docs.to_path_buf()], index),
            &|_| {},
        )
        .unwrap();
    }

    type Notes = Arc<Mutex<Vec<String>>>;

    /// An index of one file, its folder, a `Live` over it and its notes.
    fn one_file_index() -> (tempfile::TempDir, tempfile::TempDir, Live, Notes) {
        let docs = tempfile::tempdir().unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(docs.path().join("a.txt"), "The granary holds barley.\n").unwrap();
        ingest(docs.path(), dir.path());
        let notes: Notes = Arc::default();
        let heard = notes.clone();
        let live = Live::open(
            dir.path(),
            RetrieverConfig::default(),
            Box::new(move |n| heard.lock().unwrap().push(n.to_string())),
        )
        .unwrap();
        (docs, dir, live, notes)
    }

    #[test]
    fn a_new_commit_is_seen_and_an_unchanged_manifest_is_not_reread() {
        let (docs, dir, live, notes) = one_file_index();
        let first = live.snapshot();
        let hits =
            |s: &Snapshot, q: &str| s.retriever.retrieve(Some(&s.index), q, 5, None).unwrap();
        assert!(hits(&first, "sorghum").is_empty());
        assert!(!live.refresh(), "nothing changed");

        std::fs::write(docs.path().join("b.txt"), "The silo holds sorghum.\n").unwrap();
        ingest(docs.path(), dir.path());
        assert!(live.refresh());
        let second = live.snapshot();
        assert!(second.generation > first.generation);
        assert_eq!(hits(&second, "sorghum").len(), 1);
        // The old snapshot is still whole for whoever holds it.
        assert_eq!(first.index.manifest.as_ref().unwrap().files.len(), 1);
        assert_eq!(second.index.manifest.as_ref().unwrap().files.len(), 2);
        assert!(notes.lock().unwrap().is_empty(), "{:?}", notes.lock());
    }

    #[test]
    fn a_damaged_manifest_keeps_the_last_good_snapshot() {
        let (_docs, dir, live, notes) = one_file_index();
        let manifest = dir.path().join("manifest.json");
        let good = std::fs::read(&manifest).unwrap();
        std::fs::write(&manifest, b"{ not json").unwrap();
        assert!(!live.refresh());
        assert_eq!(
            live.snapshot().index.manifest.as_ref().unwrap().files.len(),
            1
        );
        assert!(notes.lock().unwrap()[0].contains("still searching"));
        std::fs::write(&manifest, good).unwrap();
    }
}
