//! The TUI end to end: the real binary in a real terminal (tmux), driven
//! by send-keys and read back with capture-pane, on the sample corpus with
//! the extractive backend.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::util::Sandbox;

/// A tmux server of its own, killed on drop.
struct Tmux {
    socket: String,
    /// Its config: no status line, so the pane is the window's full size
    /// from the start. (With one, a program that reads the size before
    /// tmux takes the line away draws a row too many, off screen.)
    conf: std::path::PathBuf,
}

impl Tmux {
    fn cmd(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .args(["-L", &self.socket, "-f"])
            .arg(&self.conf)
            .args(args)
            .output()
            .expect("run tmux");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn screen(&self) -> String {
        self.cmd(&["capture-pane", "-p", "-t", "t"])
    }

    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "t"];
        args.extend_from_slice(keys);
        self.cmd(&args);
    }

    fn type_text(&self, text: &str) {
        self.cmd(&["send-keys", "-t", "t", "-l", text]);
    }

    /// Waits until the screen shows all of `wanted`; returns it.
    fn wait_for(&self, wanted: &[&str]) -> String {
        self.wait_until(&format!("{wanted:?}"), |s| {
            wanted.iter().all(|w| s.contains(w))
        })
    }

    /// Waits until `ok(screen)`; returns the screen.
    fn wait_until(&self, what: &str, ok: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            let s = self.screen();
            if ok(&s) {
                return s;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "the screen never showed {what}:\n{s}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        self.cmd(&["kill-server"]);
    }
}

/// Starts `shirabe ARGS` in the sandbox, in a 120×40 tmux pane; the
/// pane shows `exit status N` when it ends.
fn start_tui(sb: &Sandbox, args: &[&str]) -> Tmux {
    start_tui_with(sb, args, &[])
}

/// [`start_tui`] with extra environment variables.
fn start_tui_with(sb: &Sandbox, args: &[&str], env: &[(&str, &str)]) -> Tmux {
    let mut c = sb.cmd(args);
    for (k, v) in env {
        c.env(k, v);
    }
    let mut script = String::from("#!/bin/sh\n");
    for (k, v) in c.get_envs() {
        match v {
            Some(v) => script.push_str(&format!(
                "export {}='{}'\n",
                k.to_string_lossy(),
                v.to_string_lossy()
            )),
            None => script.push_str(&format!("unset {}\n", k.to_string_lossy())),
        }
    }
    let quoted: Vec<String> = args.iter().map(|a| format!("'{a}'")).collect();
    script.push_str(&format!(
        "cd '{}'\n'{}' {}\necho \"exit status $?\"\nsleep 60\n",
        sb.path().display(),
        Path::new(c.get_program()).display(),
        quoted.join(" ")
    ));
    let run = sb.path().join("run-tui.sh");
    std::fs::write(&run, script).unwrap();
    Command::new("chmod").arg("+x").arg(&run).status().unwrap();
    let conf = sb.path().join("tmux.conf");
    std::fs::write(&conf, "set -g status off\n").unwrap();
    let t = Tmux {
        socket: format!(
            "shirabe-test-{}-{}-{}",
            std::process::id(),
            args.len(),
            env.len()
        ),
        conf,
    };
    t.cmd(&[
        "new-session",
        "-d",
        "-s",
        "t",
        "-x",
        "120",
        "-y",
        "40",
        run.to_str().unwrap(),
    ]);
    t
}

/// An OpenAI-compatible endpoint that streams `first`, then " more" every
/// 200 ms for a minute: an answer that is still being written.
fn slow_endpoint(first: &'static str) -> String {
    use std::io::Write;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            std::thread::spawn(move || {
                let _ = crate::util::Request::read(&stream);
                let mut s = stream;
                let event = |text: &str| {
                    format!(
                        "data: {}\n\n",
                        serde_json::json!({"choices": [{"delta": {"content": text}}]})
                    )
                };
                let _ = s.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n",
                );
                let _ = s.write_all(event(first).as_bytes());
                for _ in 0..300 {
                    std::thread::sleep(Duration::from_millis(200));
                    if s.write_all(event(" more").as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    url
}

#[test]
fn tui_streams_an_endpoint_answer_and_escape_stops_it() {
    let Some(sb) = indexed_sample() else { return };
    let url = slow_endpoint("The budget is 1.8 million euros [2]. Osaka");
    let t = start_tui(
        &sb,
        &[
            "tui",
            "--endpoint",
            &url,
            "--model",
            "qwen-test",
            "Osaka warehouse budget",
        ],
    );
    // The starting query is searched at once.
    t.wait_for(&["Results (", "qwen-test"]);
    t.keys(&["Enter"]);
    // Mid-stream: the text so far, and the pane says it is writing.
    t.wait_for(&[
        "1.8 million euros [2]",
        "writing…",
        "more more",
        "Esc stops",
    ]);
    t.keys(&["Escape"]);
    // The partial answer is checked like any other: [2] is a source.
    t.wait_until("the answer stopped, with its sources", |s| {
        s.contains("answer stopped") && s.contains("Sources (") && !s.contains("writing…")
    });
    t.keys(&["C-q"]);
    t.wait_for(&["exit status 0"]);
    // stderr went to the log while the screen was the TUI's; it has the
    // frame rate while the answer streamed.
    let log = std::fs::read_to_string(sb.path().join("cache/shirabe/tui.log")).unwrap_or_default();
    assert!(log.contains("frames/s"), "{log}");
    eprintln!("{}", log.trim());
}

#[test]
fn the_first_frame_does_not_wait_for_the_model() {
    let Some(sb) = indexed_sample() else { return };
    // The writer's load is held back 8 s by a test hook.
    let t = start_tui_with(&sb, &["tui"], &[("SHIRABE_TEST_SLOW_LOAD", "8")]);
    // Drawn at once, the load named in the status bar.
    t.wait_for(&["loading extractive…"]);
    // Keys typed meanwhile are kept: they search, and Enter asks, which
    // waits for the writer and says so.
    t.type_text("Osaka warehouse budget");
    t.wait_for(&["Results (", "Board Meeting Minutes"]);
    t.keys(&["Enter"]);
    t.wait_for(&["loading the model extractive…"]);
    // Once loaded, the question queued is answered.
    t.wait_until("the answer", |s| {
        s.contains("1.8 million euros") && !s.contains("loading extractive")
    });
    t.keys(&["C-q"]);
    t.wait_for(&["exit status 0"]);
}

#[test]
fn a_panic_restores_the_terminal_and_prints_the_error() {
    let Some(sb) = indexed_sample() else { return };
    let t = start_tui_with(
        &sb,
        &["tui"],
        &[("SHIRABE_TEST_PANIC", "1"), ("RUST_BACKTRACE", "0")],
    );
    let s = t.wait_for(&["exit status 101"]);
    assert!(
        s.contains("SHIRABE_TEST_PANIC is set"),
        "the panic message reached the terminal:\n{s}"
    );
    assert!(
        !s.contains("shirabe — ask or search"),
        "the screen was not restored:\n{s}"
    );
}

/// A sandbox with the sample corpus indexed (BM25), when tmux is there to
/// run the TUI in.
fn indexed_sample() -> Option<Sandbox> {
    if !have_tmux() {
        panic!("tmux is not installed: apt-get install tmux (.ci/run installs it)");
    }
    let sb = Sandbox::new();
    let corpus = sb.corpus();
    sb.expect(&["ingest", "--no-embed", corpus.to_str().unwrap()], 1);
    Some(sb)
}

fn have_tmux() -> bool {
    Command::new("tmux")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn tui_searches_asks_previews_browses_and_ingests_in_a_real_terminal() {
    let Some(sb) = indexed_sample() else { return };
    let extra = sb.path().join("extra");
    std::fs::create_dir_all(&extra).unwrap();
    std::fs::write(
        extra.join("ferry.md"),
        "# Ferry timetable\n\nThe Kobe ferry leaves at 07:40 from pier four.\n",
    )
    .unwrap();
    // `o` runs SHIRABE_VIEWER: here a script that notes what it was asked.
    let viewer = sb.path().join("viewer.sh");
    let opened = sb.path().join("opened.txt");
    std::fs::write(
        &viewer,
        format!("#!/bin/sh\necho \"$@\" > '{}'\n", opened.display()),
    )
    .unwrap();
    Command::new("chmod")
        .arg("+x")
        .arg(&viewer)
        .status()
        .unwrap();
    let template = format!("{} --page {{page}} {{path}}", viewer.display());
    // `shirabe` with no command, in a terminal, is the TUI.
    let t = start_tui_with(&sb, &[], &[("SHIRABE_VIEWER", template.as_str())]);
    t.wait_for(&[
        "shirabe — ask or search",
        "7 docs",
        "extractive",
        "ctx 0 / 128K",
    ]);

    // Search as you type.
    t.type_text("Osaka warehouse budget");
    t.wait_for(&[
        "Results (",
        "Board Meeting Minutes",
        "> Osaka warehouse budget",
    ]);

    // Ask: a cited extractive answer, its sources, the cited passage, and
    // the packing in the status bar. (Everything is waited for: a capture
    // can catch a frame half drawn.)
    t.keys(&["Enter"]);
    t.wait_for(&[
        "1.8 million euros",
        "Sources (",
        "Passage [",
        "cited sentence marked",
        "meeting-minutes.pdf",
        "context: ",
    ]);

    // The cited passage opens at its page.
    t.keys(&["o"]);
    t.wait_for(&["with viewer.sh"]);
    // The status says so as the viewer starts; it writes its file soon after.
    let start = Instant::now();
    let written = || std::fs::read_to_string(&opened).is_ok_and(|a| a.ends_with('\n'));
    while !written() && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let args = std::fs::read_to_string(&opened).unwrap();
    // (The extractive answer cites the notes' sentence on the Osaka
    // warehouse first, then the minutes' budget.)
    assert!(
        args.starts_with("--page 1 ")
            && (args.trim_end().ends_with("notes.md")
                || args.trim_end().ends_with("meeting-minutes.pdf")),
        "{args}"
    );

    // Help, then any key closes it.
    t.keys(&["Tab", "?"]);
    t.wait_for(&[" Keys ", "copy the answer with its sources"]);
    t.keys(&["x"]);
    t.wait_until("the help closed", |s| !s.contains(" Keys "));

    // The document browser shows the failed file and why.
    t.keys(&["d"]);
    t.wait_for(&["Documents (8)", "damaged.pdf", "failed:"]);

    // Ingest a folder from inside the TUI; its text is then searchable.
    t.keys(&["i"]);
    t.wait_for(&["ingest (file or folder):"]);
    t.type_text(extra.to_str().unwrap());
    t.keys(&["Enter"]);
    t.wait_for(&["ingested", "1 indexed", "8 docs"]);
    t.keys(&["/", "C-u"]);
    t.type_text("Kobe ferry");
    t.wait_for(&["Ferry timetable", "07:40"]);

    // Quit: the program ends cleanly and leaves the alternate screen.
    t.keys(&["Tab", "q"]);
    let s = t.wait_for(&["exit status 0"]);
    assert!(
        !s.contains("shirabe — ask or search"),
        "the screen was not restored:\n{s}"
    );
}

#[test]
fn tui_follows_a_watcher_and_hands_it_new_folders() {
    assert!(
        have_tmux(),
        "tmux is not installed: apt-get install tmux (.ci/run installs it)"
    );
    let sb = Sandbox::new();
    let notes = sb.path().join("notes");
    let extra = sb.path().join("extra");
    std::fs::create_dir_all(&notes).unwrap();
    std::fs::create_dir_all(&extra).unwrap();
    std::fs::write(notes.join("old.txt"), "The kumquat harvest was in March.").unwrap();
    sb.expect(&["ingest", "--no-embed", notes.to_str().unwrap()], 0);
    let mut watcher = sb
        .cmd(&[
            "watch",
            notes.to_str().unwrap(),
            "--no-embed",
            "--debounce",
            "200",
            "--settle",
            "300",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let t = start_tui(&sb, &["tui", "--extractive"]);
    t.wait_for(&["1 docs", "watching 1 folder"]);

    // A file saved meanwhile reaches the open TUI's status bar and search.
    std::fs::write(
        notes.join("a.txt"),
        "The quokka census counted forty animals.",
    )
    .unwrap();
    t.wait_for(&["2 docs", "changed "]);
    t.type_text("quokka census");
    t.wait_for(&["Results (1)", "a.txt"]);

    // `i` with a watcher running hands the folder over: it is ingested
    // and watched from now on.
    std::fs::write(extra.join("ferry.md"), "The Kobe ferry leaves at 07:40.\n").unwrap();
    t.keys(&["Tab", "i"]);
    t.wait_for(&["ingest (file or folder):"]);
    t.type_text(extra.to_str().unwrap());
    t.keys(&["Enter"]);
    t.wait_for(&["handed", "3 docs", "watching 2 folders"]);
    std::fs::write(extra.join("tram.md"), "The harbour tram runs hourly.\n").unwrap();
    t.wait_for(&["4 docs"]);
    t.keys(&["/", "C-u"]);
    t.type_text("harbour tram");
    t.wait_for(&["Results (1)", "tram.md"]);

    t.keys(&["Tab", "q"]);
    t.wait_for(&["exit status 0"]);
    // SAFETY: kill(2) with a valid pid of our own child.
    unsafe {
        libc::kill(watcher.id() as i32, libc::SIGINT);
    }
    assert!(watcher.wait().unwrap().success());
}
