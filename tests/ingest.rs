//! Ingest and search end to end: the sample corpus, page labels, big and
//! bad inputs, incremental runs, odd names, symlinks, kills, pipes, errors.

use std::time::Duration;

use crate::util::{file_name, Sandbox};

#[test]
fn ingest_and_search_the_sample_corpus() {
    let sb = Sandbox::new();
    let corpus = sb.corpus();
    // The damaged file fails: exit 1, the rest is indexed.
    let out = sb.expect(&["ingest", corpus.to_str().unwrap()], 1);
    assert!(out.contains("damaged.pdf"), "{out}");

    let hits = sb.search_json("Osaka warehouse", &[]);
    assert!(!hits.is_empty());
    for key in [
        "path",
        "page_start",
        "page_end",
        "page_label",
        "chunk_id",
        "score",
        "text",
        "snippet",
    ] {
        assert!(hits[0].get(key).is_some(), "missing {key}");
    }
    let names: Vec<String> = hits.iter().map(file_name).collect();
    assert!(
        names.iter().any(|n| n == "quarterly-report.pdf"),
        "{names:?}"
    );
    // The section shown is the one the matching text is in.
    let report = hits
        .iter()
        .find(|h| file_name(h) == "quarterly-report.pdf")
        .unwrap();
    assert_eq!(report["section"], "2. Operating costs");

    // Japanese queries, typed without spaces.
    let hits = sb.search_json("大阪倉庫の拡張計画", &[]);
    assert_eq!(file_name(&hits[0]), "japanese-minutes.pdf");
    let hits = sb.search_json("決定事項", &[]);
    assert!(hits
        .iter()
        .take(3)
        .any(|h| file_name(h) == "japanese-minutes.pdf"));
    let hits = sb.search_json("销售额增长", &[]);
    assert_eq!(file_name(&hits[0]), "chinese-notice.pdf");

    // --doc restricts to matching files.
    let hits = sb.search_json("budget", &["--doc", "*minutes*"]);
    assert!(!hits.is_empty());
    assert!(hits.iter().all(|h| file_name(h).contains("minutes")));

    // No hits: exit 1 and no output.
    assert_eq!(sb.expect(&["search", "xylophonequartz"], 1), "");
}

#[test]
fn search_reports_printed_page_labels() {
    let sb = Sandbox::new();
    let corpus = sb.corpus();
    sb.expect(
        &[
            "ingest",
            corpus.join("quarterly-report.pdf").to_str().unwrap(),
        ],
        0,
    );
    // "expect" is only on the last page (physical 4, printed "3").
    let hits = sb.search_json("expect", &["-k", "1"]);
    let h = &hits[0];
    assert_eq!(h["page"], 4);
    assert_eq!(h["page_label"], "3");
    // The cover page is labelled "i".
    let hits = sb.search_json("unaudited", &["-k", "1"]);
    assert_eq!(hits[0]["page"], 1);
    assert_eq!(hits[0]["page_label"], "i");
}

#[test]
fn markdown_headings_become_sections() {
    let sb = Sandbox::new();
    let corpus = sb.corpus();
    sb.expect(&["ingest", corpus.join("notes.md").to_str().unwrap()], 0);
    let hits = sb.search_json("Osaka", &[]);
    assert!(hits[0]["section"].as_str().is_some(), "{:?}", hits[0]);
}

#[test]
fn a_big_text_file_is_indexed_in_parts_and_replaced_whole() {
    // Over 16 MiB: read and chunked a section at a time.
    let sb = Sandbox::new();
    let path = sb.path().join("ledger.md");
    let write = |last: &str| {
        let mut text = String::from("# Grain ledger\n\nThe ledger opens with the emmer count.\n\n");
        let mut n = 0;
        while text.len() < 17 << 20 {
            text.push_str(&format!("Crate {n} of barley was weighed at the depot.\n"));
            n += 1;
            if n == 200_000 {
                text.push_str("\nMidway the inspector found spelt.\n\n");
            }
        }
        text.push_str(&format!("\nThe ledger closes with {last}.\n"));
        std::fs::write(&path, text).unwrap();
    };
    write("millet");
    sb.expect(&["ingest", path.to_str().unwrap(), "--no-embed"], 0);
    for (word, section) in [
        ("emmer", "Grain ledger"),
        ("spelt", "Grain ledger"),
        ("millet", "Grain ledger"),
    ] {
        let hits = sb.search_json(word, &["--mode", "bm25"]);
        assert_eq!(hits.len(), 1, "{word}: {hits:?}");
        assert_eq!(hits[0]["section"], section, "{word}");
        assert_eq!(hits[0]["title"], "Grain ledger", "{word}");
    }
    let status: serde_json::Value =
        serde_json::from_str(&sb.expect(&["status", "--json"], 0)).unwrap();
    let chunks = status["chunks"].as_u64().unwrap();
    assert!(chunks > 5_000, "{status}");
    // Changed: every old chunk goes, the new ones come in.
    write("sorghum");
    sb.expect(&["ingest", path.to_str().unwrap(), "--no-embed"], 0);
    assert!(sb.search_json("millet", &["--mode", "bm25"]).is_empty());
    assert_eq!(sb.search_json("sorghum", &["--mode", "bm25"]).len(), 1);
    let status: serde_json::Value =
        serde_json::from_str(&sb.expect(&["status", "--json"], 0)).unwrap();
    assert_eq!(status["chunks"].as_u64().unwrap(), chunks);
    assert_eq!(status["files"], 1);
}

#[test]
fn bad_inputs_are_reported_and_skipped() {
    let sb = Sandbox::new();
    let bad = sb.path().join("bad");
    let files = shirabe::samples::write_bad_inputs(&bad).unwrap();
    std::fs::write(
        bad.join("good.txt"),
        "a perfectly readable file about zebras",
    )
    .unwrap();
    let out = sb.run(&["ingest", bad.to_str().unwrap(), "--json"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stderr.is_empty() || !String::from_utf8_lossy(&out.stderr).contains("panicked"));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let failed: Vec<String> = report["failed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| format!("{} {}", f["path"], f["error"]))
        .collect();
    let joined = failed.join("\n");
    for name in ["empty.pdf", "not-a-pdf.pdf", "encrypted-secret.pdf"] {
        assert!(joined.contains(name), "{name} not reported:\n{joined}");
    }
    assert!(joined.contains("password"), "{joined}");
    assert!(joined.contains("not a PDF"), "{joined}");
    // The good file and the readable ones went in.
    assert_eq!(file_name(&sb.search_json("zebras", &[])[0]), "good.txt");
    let hits = sb.search_json("\"encrypted but readable\"", &[]);
    assert_eq!(file_name(&hits[0]), "encrypted-empty-password.pdf");
    let hits = sb.search_json("\"second page survives\"", &[]);
    assert_eq!(file_name(&hits[0]), "garbage-stream.pdf");
    // Page trees that claim 10^14 pages, or 2^40 paths to one page, are
    // read page by page (they used to abort the whole run).
    let hits = sb.search_json("\"survives the lying count\"", &[]);
    assert_eq!(file_name(&hits[0]), "page-count-bomb.pdf");
    assert_eq!(hits[0]["page_end"], 2);
    let hits = sb.search_json("\"doubling page DAG\"", &[]);
    assert_eq!(file_name(&hits[0]), "page-dag.pdf");
    assert!(files.len() >= 10);
}

/// A file whose parse would take gigabytes (an object stream holding 40
/// million numbers, 80 KB on disk) is read in a worker held to its
/// allowance: the worker dies, the file is reported, the run goes on.
/// Read in-process, the same file took the whole run down with it.
#[test]
fn a_pdf_that_exhausts_its_allowance_costs_only_itself() {
    let sb = Sandbox::new();
    let dir = sb.path().join("docs");
    std::fs::create_dir_all(&dir).unwrap();
    let bomb = shirabe::samples::objstm_array_bomb(40_000_000).unwrap();
    assert!(bomb.len() < 1 << 20, "{} bytes", bomb.len());
    std::fs::write(dir.join("objstm-bomb.pdf"), bomb).unwrap();
    std::fs::write(
        dir.join("count-bomb.pdf"),
        shirabe::samples::page_count_bomb().unwrap(),
    )
    .unwrap();
    let out = sb.run(&["ingest", dir.to_str().unwrap(), "--json"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let failed = report["failed"].as_array().unwrap();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert!(failed[0]["path"]
        .as_str()
        .unwrap()
        .ends_with("objstm-bomb.pdf"));
    let error = failed[0]["error"].as_str().unwrap();
    assert!(error.contains("needed more memory than the 5"), "{error}");
    // The other file went in, and the failure is on record.
    let hits = sb.search_json("\"survives the lying count\"", &[]);
    assert_eq!(file_name(&hits[0]), "count-bomb.pdf");
    let status: serde_json::Value =
        serde_json::from_str(&sb.expect(&["status", "--json"], 0)).unwrap();
    assert_eq!(status["failed"], 1, "{status}");
}

#[test]
fn huge_pdf_is_fine() {
    let sb = Sandbox::new();
    let path = sb.path().join("long.pdf");
    std::fs::write(&path, shirabe::samples::long_pdf(1200)).unwrap();
    sb.expect(&["ingest", path.to_str().unwrap()], 0);
    let hits = sb.search_json("keyword1117", &[]);
    assert_eq!(hits[0]["page"], 1117);
}

#[test]
fn incremental_ingest_skips_updates_and_prunes() {
    let sb = Sandbox::new();
    let docs = sb.path().join("docs");
    std::fs::create_dir(&docs).unwrap();
    std::fs::write(docs.join("a.txt"), "alpha apples").unwrap();
    std::fs::write(docs.join("b.md"), "# B\n\nbeta bananas").unwrap();
    let d = docs.to_str().unwrap();
    let report = |args: &[&str]| -> serde_json::Value {
        let mut a = vec!["ingest", d, "--json"];
        a.extend_from_slice(args);
        serde_json::from_slice(&sb.run(&a).stdout).unwrap()
    };
    let r = report(&[]);
    assert_eq!(
        (r["indexed"].as_u64(), r["unchanged"].as_u64()),
        (Some(2), Some(0))
    );
    let r = report(&[]);
    assert_eq!(
        (r["indexed"].as_u64(), r["unchanged"].as_u64()),
        (Some(0), Some(2))
    );
    // Change one file: only it is re-indexed, and old text is gone.
    std::fs::write(docs.join("a.txt"), "alpha apricots").unwrap();
    let r = report(&[]);
    assert_eq!(
        (r["indexed"].as_u64(), r["unchanged"].as_u64()),
        (Some(1), Some(1))
    );
    assert!(sb.search_json("apples", &[]).is_empty());
    assert_eq!(sb.search_json("apricots", &[]).len(), 1);
    // Delete one: without --prune it stays, with --prune it goes.
    std::fs::remove_file(docs.join("b.md")).unwrap();
    report(&[]);
    assert_eq!(sb.search_json("bananas", &[]).len(), 1);
    let r = report(&["--prune"]);
    assert_eq!(r["pruned"].as_array().unwrap().len(), 1);
    assert!(sb.search_json("bananas", &[]).is_empty());
    let status: serde_json::Value =
        serde_json::from_str(&sb.expect(&["status", "--json"], 0)).unwrap();
    assert_eq!(status["files"], 1);
    assert_eq!(status["chunks"], 1);
}

/// Names that are not UTF-8 are keyed by their bytes: `a\xfe.txt` and
/// `a\xff.txt` are two files, both indexed, and `--prune` keeps them while
/// they exist.
#[cfg(unix)]
#[test]
fn names_that_are_not_utf8_never_collide_and_are_not_pruned() {
    use std::os::unix::ffi::OsStrExt;
    let sb = Sandbox::new();
    let docs = sb.path().join("docs");
    std::fs::create_dir(&docs).unwrap();
    for (b, word) in [(0xfe_u8, "ferns"), (0xff, "figs")] {
        let bytes = [b'a', b, b'.', b't', b'x', b't'];
        let name = std::ffi::OsStr::from_bytes(&bytes);
        std::fs::write(docs.join(name), format!("notes on {word}")).unwrap();
    }
    let d = docs.to_str().unwrap();
    let r: serde_json::Value =
        serde_json::from_str(&sb.expect(&["ingest", d, "--json"], 0)).unwrap();
    assert_eq!(r["indexed"], 2, "{r}");
    for _ in 0..2 {
        let r: serde_json::Value =
            serde_json::from_str(&sb.expect(&["ingest", d, "--prune", "--json"], 0)).unwrap();
        assert_eq!(
            (r["unchanged"].as_u64(), r["indexed"].as_u64()),
            (Some(2), Some(0)),
            "{r}"
        );
        assert!(r["pruned"].as_array().unwrap().is_empty(), "{r}");
    }
    assert_eq!(sb.search_json("ferns", &[]).len(), 1);
    assert_eq!(sb.search_json("figs", &[]).len(), 1);
    // Gone from the disk, pruned.
    let name = std::ffi::OsStr::from_bytes(b"a\xfe.txt");
    std::fs::remove_file(docs.join(name)).unwrap();
    let r: serde_json::Value =
        serde_json::from_str(&sb.expect(&["ingest", d, "--prune", "--json"], 0)).unwrap();
    assert_eq!(r["pruned"].as_array().unwrap().len(), 1, "{r}");
    assert!(sb.search_json("ferns", &[]).is_empty());
}

/// Symbolic links inside an ingested folder are followed; a file reached
/// twice is indexed once, and a link that loops is skipped with a note.
#[cfg(unix)]
#[test]
fn symlinks_are_followed_once_and_loops_noted() {
    let sb = Sandbox::new();
    let docs = sb.path().join("docs");
    let elsewhere = sb.path().join("elsewhere");
    std::fs::create_dir_all(docs.join("sub")).unwrap();
    std::fs::create_dir(&elsewhere).unwrap();
    std::fs::write(
        elsewhere.join("linked.txt"),
        "quinces from the linked folder",
    )
    .unwrap();
    std::fs::write(docs.join("own.txt"), "plums of our own").unwrap();
    std::os::unix::fs::symlink(&elsewhere, docs.join("to-elsewhere")).unwrap();
    std::os::unix::fs::symlink(docs.join("own.txt"), docs.join("same.txt")).unwrap();
    std::os::unix::fs::symlink(&docs, docs.join("sub/loop")).unwrap();
    let out = sb.run(&["ingest", docs.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}{err}");
    assert!(
        format!("{text}{err}").contains("not followed"),
        "{text}{err}"
    );
    assert_eq!(sb.search_json("quinces", &[]).len(), 1);
    assert_eq!(
        sb.search_json("plums", &[]).len(),
        1,
        "one file, reached twice"
    );
}

#[test]
fn sigkill_during_ingest_then_recovery() {
    let sb = Sandbox::new();
    let docs = sb.path().join("many");
    std::fs::create_dir(&docs).unwrap();
    let n = 40;
    for i in 0..n {
        std::fs::write(
            docs.join(format!("doc{i:03}.pdf")),
            shirabe::samples::long_pdf(150),
        )
        .unwrap();
    }
    let d = docs.to_str().unwrap();
    // Kill at several moments; each time the index must open and search.
    for delay_ms in [150u64, 400, 900] {
        let mut child = sb
            .cmd(&["ingest", d, "--quiet", "--jobs", "2"])
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let out = sb.run(&["search", "keyword7", "--json"]);
        assert!(matches!(out.status.code(), Some(0) | Some(1) | Some(2)));
        if sb.index().join("tantivy/meta.json").exists() {
            assert_ne!(
                out.status.code(),
                Some(2),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    // The next ingest completes the job without duplicates.
    sb.expect(&["ingest", d, "--quiet"], 0);
    let status: serde_json::Value =
        serde_json::from_str(&sb.expect(&["status", "--json", "--files"], 0)).unwrap();
    assert_eq!(status["files"], n);
    // The index holds exactly the chunks the manifest lists: no duplicates.
    let listed: u64 = status["file_list"]
        .as_object()
        .unwrap()
        .values()
        .map(|f| f["chunks"].as_u64().unwrap())
        .sum();
    assert_eq!(status["chunks"].as_u64().unwrap(), listed);
    let hits = sb.search_json("keyword7", &["-k", "1000"]);
    let mut ids: Vec<&str> = hits
        .iter()
        .map(|h| h["chunk_id"].as_str().unwrap())
        .collect();
    let total = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), total, "duplicate chunks");
    let mut paths: Vec<&str> = hits.iter().map(|h| h["path"].as_str().unwrap()).collect();
    paths.sort();
    paths.dedup();
    assert_eq!(paths.len(), n, "every document found once more");
}

#[test]
fn head_closing_the_pipe_is_not_an_error() {
    let sb = Sandbox::new();
    let corpus = sb.corpus();
    sb.run(&["ingest", corpus.to_str().unwrap()]);
    let mut child = sb
        .cmd(&[
            "extract",
            corpus.join("quarterly-report.pdf").to_str().unwrap(),
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take()); // the reader goes away at once
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn missing_index_and_bad_flags_are_clear_errors() {
    let sb = Sandbox::new();
    let out = sb.run(&["search", "anything"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no index") && err.contains("shirabe ingest"),
        "{err}"
    );
    let out = sb.run(&["ingest", "x", "--chunk-tokens", "5"]);
    assert_eq!(out.status.code(), Some(2));
    let out = sb.run(&["extract", "nope.pdf"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nope.pdf"));
}
