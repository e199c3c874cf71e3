//! `watch` end to end: a watcher in one process, `search`, `ingest` and
//! `status` in others, as a user's shell and cron would run them.

use std::io::BufRead;
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::util::Sandbox;

/// A running `shirabe watch --json` and its events.
struct Watcher {
    child: Child,
    events: mpsc::Receiver<serde_json::Value>,
}

impl Watcher {
    fn start(sb: &Sandbox, dir: &Path) -> Watcher {
        Watcher::start_with(sb, dir, &["--no-embed"])
    }

    fn start_with(sb: &Sandbox, dir: &Path, extra: &[&str]) -> Watcher {
        let mut args = vec![
            "watch",
            dir.to_str().unwrap(),
            "--json",
            "--debounce",
            "200",
            "--settle",
            "300",
        ];
        args.extend_from_slice(extra);
        Watcher::spawn(sb.cmd(&args))
    }

    /// Runs `cmd` (a `watch --json`) and waits for it to be watching.
    fn spawn(mut cmd: std::process::Command) -> Watcher {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start watch");
        let out = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                    let _ = tx.send(v);
                }
            }
        });
        let w = Watcher { child, events: rx };
        w.wait_for("watching", Duration::from_secs(30));
        w
    }

    fn wait_for(&self, event: &str, within: Duration) -> serde_json::Value {
        let end = Instant::now() + within;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(v) if v["event"] == event => return v,
                Ok(_) => {}
                Err(_) => panic!("no {event} event within {within:?}"),
            }
        }
    }

    fn stop(mut self) -> std::process::ExitStatus {
        // SAFETY: kill(2) with a valid pid of our own child.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGINT);
        }
        self.child.wait().unwrap()
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

/// The file names `search` finds for `query` (another process).
fn found(sb: &Sandbox, query: &str) -> Vec<String> {
    sb.search_json(query, &["--mode", "bm25"])
        .iter()
        .map(crate::util::file_name)
        .collect()
}

/// Waits until `found(query)` satisfies `ok`.
fn eventually(sb: &Sandbox, query: &str, ok: impl Fn(&[String]) -> bool) -> Vec<String> {
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        let f = found(sb, query);
        if ok(&f) {
            return f;
        }
        assert!(Instant::now() < end, "search {query:?} still gives {f:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// An empty folder `name` in the sandbox.
fn folder(sb: &Sandbox, name: &str) -> std::path::PathBuf {
    let dir = sb.path().join(name);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A folder `notes` holding `old.txt` (about kumquats).
fn notes(sb: &Sandbox) -> std::path::PathBuf {
    let dir = folder(sb, "notes");
    std::fs::write(
        dir.join("old.txt"),
        "The kumquat harvest was recorded in March.",
    )
    .unwrap();
    dir
}

#[test]
fn files_created_changed_moved_and_deleted_are_seen_by_search() {
    let sb = Sandbox::new();
    let dir = notes(&sb);
    sb.expect(&["ingest", dir.to_str().unwrap(), "--no-embed"], 0);
    let w = Watcher::start(&sb, &dir);

    // Created.
    std::fs::write(
        dir.join("a.txt"),
        "The quokka census counted forty animals.",
    )
    .unwrap();
    eventually(&sb, "quokka", |f| f == ["a.txt"]);
    // Changed.
    std::fs::write(dir.join("a.txt"), "The wombat census counted nine animals.").unwrap();
    eventually(&sb, "wombat", |f| f == ["a.txt"]);
    eventually(&sb, "quokka", |f| f.is_empty());
    // Moved.
    std::fs::rename(dir.join("a.txt"), dir.join("b.txt")).unwrap();
    eventually(&sb, "wombat", |f| f == ["b.txt"]);
    // Deleted.
    std::fs::remove_file(dir.join("b.txt")).unwrap();
    eventually(&sb, "wombat", |f| f.is_empty());
    // A folder with files, then the folder removed.
    let sub = dir.join("sub");
    std::fs::create_dir_all(&sub).unwrap();
    std::fs::write(
        sub.join("c.md"),
        "# Axolotl\n\nThe axolotl tank was cleaned.",
    )
    .unwrap();
    eventually(&sb, "axolotl", |f| f == ["c.md"]);
    std::fs::remove_dir_all(&sub).unwrap();
    eventually(&sb, "axolotl", |f| f.is_empty());
    // The file that was there before is untouched.
    assert_eq!(found(&sb, "kumquat"), ["old.txt"]);

    // An ingest meanwhile hands its paths to the watcher.
    let other = sb.path().join("other.txt");
    std::fs::write(&other, "The pangolin report arrived late.").unwrap();
    let out = sb.expect(&["ingest", other.to_str().unwrap()], 0);
    assert!(out.contains("handed it 1 path"), "{out}");
    eventually(&sb, "pangolin", |f| f == ["other.txt"]);

    assert!(w.stop().success());
    // The lock is free again.
    sb.expect(&["ingest", dir.to_str().unwrap(), "--no-embed"], 0);
}

#[test]
fn a_file_still_being_written_waits_until_it_settles() {
    let sb = Sandbox::new();
    let dir = folder(&sb, "inbox");
    let w = Watcher::start(&sb, &dir);
    let path = dir.join("growing.txt");
    let mut f = std::fs::File::create(&path).unwrap();
    use std::io::Write;
    for i in 0..8 {
        writeln!(
            f,
            "Line {i} of the growing report about the narwhal survey."
        )
        .unwrap();
        f.flush().unwrap();
        // Longer than the debounce (200 ms), shorter than the settle time
        // (300 ms): only the settling holds the batch back.
        std::thread::sleep(Duration::from_millis(250));
    }
    writeln!(f, "The final line names the dugong.").unwrap();
    drop(f);
    let batch = w.wait_for("batch", Duration::from_secs(30));
    // One batch, after the last write: it holds the whole file.
    assert_eq!(batch["indexed"], 1, "{batch}");
    eventually(&sb, "dugong", |f| f == ["growing.txt"]);
    w.stop();
}

#[test]
fn a_killed_watcher_restarted_ends_equal_to_a_clean_ingest() {
    let sb = Sandbox::new();
    let dir = folder(&sb, "burst");
    let mut w = Watcher::start(&sb, &dir);
    for i in 0..400 {
        std::fs::write(
            dir.join(format!("f{i:03}.txt")),
            format!("Burst file {i}: the cassowary count was {}.", i * 7),
        )
        .unwrap();
    }
    // Kill it mid-burst, without warning.
    std::thread::sleep(Duration::from_millis(900));
    w.child.kill().unwrap();
    w.child.wait().unwrap();
    drop(w);
    // `watch --once` catches up and exits.
    sb.expect(&["watch", dir.to_str().unwrap(), "--once", "--no-embed"], 0);
    let status = |sb: &Sandbox| -> (u64, u64) {
        let v: serde_json::Value =
            serde_json::from_str(&sb.expect(&["status", "--json"], 0)).unwrap();
        (v["files"].as_u64().unwrap(), v["chunks"].as_u64().unwrap())
    };
    let clean = Sandbox::new();
    clean.expect(&["ingest", dir.to_str().unwrap(), "--no-embed"], 0);
    assert_eq!(status(&sb), status(&clean));
    assert_eq!(status(&sb).0, 400);
}

#[test]
fn watch_without_folders_says_what_to_do_and_defaults_to_ingested_ones() {
    let sb = Sandbox::new();
    let out = sb.run(&["watch", "--once"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("nothing to watch"), "{err}");
    // After an ingest, its folder is the default.
    let dir = folder(&sb, "docs");
    std::fs::write(dir.join("x.txt"), "The ibis nest was moved.").unwrap();
    sb.expect(&["ingest", dir.to_str().unwrap(), "--no-embed"], 0);
    std::fs::write(dir.join("y.txt"), "The heron nest stayed.").unwrap();
    sb.expect(&["watch", "--once", "--no-embed"], 0);
    assert_eq!(found(&sb, "heron"), ["y.txt"]);
}

/// A hit of `serve`'s `/v1/search`: file name, and whether the BM25
/// and the dense side ranked it.
#[derive(Debug, PartialEq)]
struct Served {
    file: String,
    bm25: bool,
    dense: bool,
}

fn served(url: &str, query: &str) -> Vec<Served> {
    let body = serde_json::json!({"query": query, "limit": 5}).to_string();
    let (code, out) = crate::serve::http(url, "POST", "/v1/search", &body, None);
    assert_eq!(code, 200, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| Served {
            file: crate::util::file_name(h),
            bm25: !h["explain"]["bm25_rank"].is_null(),
            dense: !h["explain"]["dense_rank"].is_null(),
        })
        .collect()
}

/// True when `file` is found by both sides.
fn both(hits: &[Served], file: &str) -> bool {
    hits.iter().any(|h| h.file == file && h.bm25 && h.dense)
}

#[test]
fn a_server_left_running_sees_every_change_and_its_vectors() {
    let sb = Sandbox::new();
    let dir = notes(&sb);
    let model = crate::util::tiny_bert(&sb);
    sb.expect(
        &["ingest", dir.to_str().unwrap(), "--embed-model", &model],
        0,
    );
    // One reader process for the whole test, started before the watcher.
    let (mut server, url) = crate::serve::start_serve(&sb, &[]);
    assert!(both(&served(&url, "kumquat"), "old.txt"));
    let w = Watcher::start_with(&sb, &dir, &[]);

    // `status` in another process sees the watcher and what it watches.
    let st: serde_json::Value = serde_json::from_str(&sb.expect(&["status", "--json"], 0)).unwrap();
    assert_eq!(st["watch"]["running"], true, "{st}");
    let folders = st["watch"]["folders"].to_string();
    assert!(folders.contains("notes"), "{folders}");

    let wait = |query: &str, ok: &dyn Fn(&[Served]) -> bool| {
        let end = Instant::now() + Duration::from_secs(60);
        loop {
            let hits = served(&url, query);
            if ok(&hits) {
                return;
            }
            assert!(
                Instant::now() < end,
                "serve: {query:?} still gives {hits:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    // Created: searchable, and its vector is searched too (the server
    // reloaded the store the watcher embedded into).
    std::fs::write(
        dir.join("a.txt"),
        "The quokka census counted forty animals.",
    )
    .unwrap();
    wait("quokka", &|h| both(h, "a.txt"));
    // Changed.
    std::fs::write(dir.join("a.txt"), "The wombat census counted nine animals.").unwrap();
    wait("wombat", &|h| both(h, "a.txt"));
    wait("quokka", &|h| h.iter().all(|x| !x.bm25));
    // Moved.
    std::fs::rename(dir.join("a.txt"), dir.join("b.txt")).unwrap();
    wait("wombat", &|h| {
        both(h, "b.txt") && h.iter().all(|x| x.file != "a.txt")
    });
    // Deleted.
    std::fs::remove_file(dir.join("b.txt")).unwrap();
    wait("wombat", &|h| h.iter().all(|x| x.file == "old.txt"));
    assert!(both(&served(&url, "kumquat"), "old.txt"));

    assert!(w.stop().success());
    let st: serde_json::Value = serde_json::from_str(&sb.expect(&["status", "--json"], 0)).unwrap();
    assert_eq!(st["watch"]["running"], false, "{st}");
    assert!(!sb.index().join("watch.json").exists());
    server.kill().unwrap();
    server.wait().unwrap();
}

#[test]
fn a_watcher_at_rest_stays_at_rest() {
    // The batch's own reads of the files (inotify access events) must not
    // start another batch: an idle watcher does nothing.
    let sb = Sandbox::new();
    let dir = folder(&sb, "notes");
    for i in 0..5 {
        std::fs::write(
            dir.join(format!("n{i}.txt")),
            format!("Note {i} on barley."),
        )
        .unwrap();
    }
    sb.expect(&["ingest", dir.to_str().unwrap(), "--no-embed"], 0);
    let w = Watcher::start(&sb, &dir);
    std::fs::write(
        dir.join("a.txt"),
        "The quokka census counted forty animals.",
    )
    .unwrap();
    let b = w.wait_for("batch", Duration::from_secs(30));
    assert_eq!(b["paths"].as_array().unwrap().len(), 1, "{b}");
    let end = Instant::now() + Duration::from_secs(3);
    while let Ok(ev) = w
        .events
        .recv_timeout(end.saturating_duration_since(Instant::now()))
    {
        assert_ne!(ev["event"], "batch", "a batch with nothing changed: {ev}");
    }
    assert!(w.stop().success());
}

#[test]
#[ignore = "mounts a tmpfs, so it needs root: sudo -E cargo test --release -- --ignored a_full_disk"]
fn a_full_disk_is_reported_retried_and_never_corrupts() {
    let sb = Sandbox::new();
    let mnt = sb.path().join("small-disk");
    std::fs::create_dir_all(&mnt).unwrap();
    let mounted = std::process::Command::new("mount")
        .args([
            "-t",
            "tmpfs",
            "-o",
            "size=8m",
            "tmpfs",
            mnt.to_str().unwrap(),
        ])
        .status()
        .unwrap();
    assert!(mounted.success(), "mount needs root");
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(mnt.clone());
    let index = mnt.join("index");
    let dir = folder(&sb, "notes");
    std::fs::write(dir.join("old.txt"), "The barley store holds ten tonnes.").unwrap();
    let with_index = |args: &[&str]| {
        let mut c = sb.cmd(args);
        c.env("SHIRABE_INDEX", &index);
        c
    };
    let ok = with_index(&["ingest", dir.to_str().unwrap(), "--no-embed", "-q"])
        .status()
        .unwrap();
    assert!(ok.success());
    let w = Watcher::spawn(with_index(&[
        "watch",
        dir.to_str().unwrap(),
        "--json",
        "--debounce",
        "200",
        "--settle",
        "300",
        "--no-embed",
    ]));
    // Fill the disk, then save a file big enough to need room.
    let filler = mnt.join("filler");
    let _ = std::process::Command::new("dd")
        .args([
            "if=/dev/zero",
            &format!("of={}", filler.display()),
            "bs=64k",
        ])
        .stderr(Stdio::null())
        .status();
    let words: Vec<String> = (0..60_000).map(|i| format!("sorghum{i} quokka")).collect();
    std::fs::write(dir.join("big.txt"), words.join(" ")).unwrap();
    let e = w.wait_for("error", Duration::from_secs(30));
    assert!(e["message"].as_str().unwrap().contains("KB free"), "{e}");
    // The index as it was: readable, undamaged.
    let search = |q: &str| {
        let out = with_index(&["search", q, "--json", "--mode", "bm25"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(search("barley").contains("old.txt"));
    let doctor = with_index(&["doctor"]).output().unwrap();
    assert!(doctor.status.success(), "{doctor:?}");
    // Room again: the retry goes through.
    std::fs::remove_file(&filler).unwrap();
    w.wait_for("batch", Duration::from_secs(90));
    assert!(search("sorghum5").contains("big.txt"));
    assert!(w.stop().success());
}

#[test]
fn a_burst_that_overflows_the_event_queue_misses_nothing() {
    // The watcher is stopped while 20,000 files are written: more events
    // than the kernel queues (16,384 by default), so some are lost and the
    // watcher is told to look again.
    let sb = Sandbox::new();
    let dir = folder(&sb, "burst");
    let w = Watcher::start(&sb, &dir);
    let pid = w.child.id() as i32;
    // SAFETY: kill(2) with a valid pid of our own child.
    unsafe {
        libc::kill(pid, libc::SIGSTOP);
    }
    for i in 0..20_000 {
        std::fs::write(
            dir.join(format!("b{i:05}.txt")),
            format!("Burst note {i}: crate {} of barley.", i * 7),
        )
        .unwrap();
    }
    // SAFETY: as above.
    unsafe {
        libc::kill(pid, libc::SIGCONT);
    }
    let end = Instant::now() + Duration::from_secs(120);
    loop {
        let v: serde_json::Value =
            serde_json::from_str(&sb.expect(&["status", "--json"], 0)).unwrap();
        if v["files"] == 20_000 {
            break;
        }
        assert!(
            Instant::now() < end,
            "{} of 20000 files indexed",
            v["files"]
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(found(&sb, "139993"), ["b19999.txt"]);
    assert!(w.stop().success());
}
