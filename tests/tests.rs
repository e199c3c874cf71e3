//! Integration tests: run the `shirabe` binary on the generated corpus.

mod answers;
mod ask;
mod doctor;
mod fuzz;
mod ocr;
mod real_models;
mod serve;
mod tui;
mod util;
mod watch;

use std::time::Duration;

use util::{file_name, Sandbox};

#[test]
fn extract_prints_pages_separated_by_form_feeds() {
    let sb = Sandbox::new();
    let corpus = sb.corpus();
    let pdf = corpus.join("quarterly-report.pdf");
    let out = sb.expect(&["extract", pdf.to_str().unwrap()], 0);
    let pages: Vec<&str> = out.split('\x0c').collect();
    // N pages, each followed by a form feed.
    assert!(pages.len() >= 3, "{out}");
    assert_eq!(pages.last(), Some(&""));
    assert!(out.contains("Osaka"), "{out}");
}

#[test]
fn extract_json_has_pages_labels_and_metadata() {
    let sb = Sandbox::new();
    let corpus = sb.corpus();
    let pdf = corpus.join("quarterly-report.pdf");
    let out = sb.expect(&["extract", pdf.to_str().unwrap(), "--json"], 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["title"], "Northwind Quarterly Report Q3 2025");
    assert_eq!(v["author"], "Finance Office");
    let pages = v["pages"].as_array().unwrap();
    assert_eq!(pages[0]["page"], 1);
    assert_eq!(pages[0]["label"], "i");
    assert_eq!(pages[1]["label"], "1");
    assert_eq!(pages[2]["label"], "2");
}

#[test]
fn running_footers_and_page_numbers_are_tagged_and_left_out_of_passages() {
    let sb = Sandbox::new();
    let corpus = sb.corpus();
    let pdf = corpus.join("quarterly-report.pdf");
    let v = json_of(&sb.expect(&["extract", pdf.to_str().unwrap(), "--json"], 0));
    for p in v["pages"].as_array().unwrap() {
        let text = p["text"].as_str().unwrap().as_bytes();
        let tagged: Vec<String> = p["furniture"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                let (s, e) = (
                    r[0].as_u64().unwrap() as usize,
                    r[1].as_u64().unwrap() as usize,
                );
                String::from_utf8(text[s..e].to_vec()).unwrap()
            })
            .collect();
        let label = p["label"].as_str().unwrap();
        assert_eq!(
            tagged,
            [label, "Northwind Logistics - internal use only"],
            "page {}",
            p["page"]
        );
    }
    // `extract --body` is the text passages are made of.
    let body = sb.expect(&["extract", pdf.to_str().unwrap(), "--body"], 0);
    assert!(!body.contains("internal use only"), "{body}");
    assert!(body.contains("Operating costs fell"), "{body}");
    // Indexed passages leave the footer out of their text, while a search
    // for it still finds the pages (it is indexed with the section).
    sb.expect(&["ingest", "--no-embed", pdf.to_str().unwrap()], 0);
    let hits = sb.search_json("Operating costs fell", &[]);
    let text = hits[0]["text"].as_str().unwrap();
    assert!(text.contains("Operating costs fell"), "{text}");
    assert!(!text.contains("internal use only"), "{text}");
    let hits = sb.search_json("internal use only", &[]);
    assert!(!hits.is_empty());
}

#[test]
fn extract_boxes_map_words_to_the_page() {
    let sb = Sandbox::new();
    let corpus = sb.corpus();
    for (file, word) in [
        ("quarterly-report.pdf", "Osaka"),
        ("two-column-paper.pdf", "rarity"),
        ("japanese-minutes.pdf", "議事録"),
    ] {
        let pdf = corpus.join(file);
        let v = json_of(&sb.expect(&["extract", pdf.to_str().unwrap(), "--json", "--boxes"], 0));
        let mut found = false;
        for p in v["pages"].as_array().unwrap() {
            let text = p["text"].as_str().unwrap();
            let boxes = p["boxes"].as_array().unwrap();
            assert!(!boxes.is_empty() || text.is_empty(), "{file}: no boxes");
            let mut last_end = 0;
            for b in boxes {
                let n: Vec<f64> = b
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_f64().unwrap())
                    .collect();
                let (s, e) = (n[0] as usize, n[1] as usize);
                // Byte ranges in text order, on character boundaries, each a
                // word without spaces; rectangles on an A4/letter page.
                assert!(s >= last_end && s < e && e <= text.len(), "{file}: {n:?}");
                last_end = e;
                let w = &text[s..e];
                assert!(!w.contains(' ') && !w.contains('\n'), "{file}: {w:?}");
                assert!(n[2] <= n[4] && n[3] <= n[5], "{file}: {n:?}");
                assert!(
                    n[2] >= 0.0 && n[4] <= 700.0 && n[3] >= 0.0 && n[5] <= 900.0,
                    "{file}: {n:?}"
                );
                found |= w.contains(word);
            }
        }
        assert!(found, "{file}: no box holds {word:?}");
    }
    // Without --boxes there are none; --boxes needs --json.
    let pdf = corpus.join("quarterly-report.pdf");
    let v = json_of(&sb.expect(&["extract", pdf.to_str().unwrap(), "--json"], 0));
    assert!(v["pages"][0].get("boxes").is_none());
    sb.expect(&["extract", pdf.to_str().unwrap(), "--boxes"], 2);
}

#[test]
fn ligatures_and_hyphenation_are_resolved() {
    let sb = Sandbox::new();
    let corpus = sb.corpus();
    let pdf = corpus.join("quarterly-report.pdf");
    let out = sb.expect(&["extract", pdf.to_str().unwrap()], 0);
    assert!(out.contains("profit"), "{out}");
    assert!(!out.contains('\u{fb01}') && !out.contains('\u{fb02}'));
    assert!(out.contains("infrastructure"), "{out}");
    assert!(!out.contains("infra-"), "{out}");
}

#[test]
fn two_column_paper_reads_columns_in_order_with_spaces() {
    let sb = Sandbox::new();
    let corpus = sb.corpus();
    let pdf = corpus.join("two-column-paper.pdf");
    let out = sb.expect(&["extract", pdf.to_str().unwrap(), "--pages", "1"], 0);
    let lexical = out
        .find("Lexical retrieval ranks")
        .expect("left column text");
    let dense = out
        .find("Dense retrieval embeds")
        .expect("right column text");
    let left_heading = out.find("1 Lexical retrieval").expect("left heading");
    let right_heading = out.find("2 Dense retrieval").expect("right heading");
    assert!(
        left_heading < lexical && lexical < right_heading && right_heading < dense,
        "{out}"
    );
    assert!(lexical < dense, "left column must come first:\n{out}");
    // Words come from TJ gaps, not space characters: none may run together.
    let longest = out
        .split_whitespace()
        .map(|w| w.chars().count())
        .max()
        .unwrap();
    assert!(longest < 25, "words ran together:\n{out}");
}

#[test]
fn japanese_cid_font_round_trips() {
    let sb = Sandbox::new();
    let corpus = sb.corpus();
    let pdf = corpus.join("japanese-minutes.pdf");
    let out = sb.expect(&["extract", pdf.to_str().unwrap()], 0);
    assert!(out.contains("議事録"), "{out}");
    assert!(out.contains("決定事項"), "{out}");
    let zh = corpus.join("chinese-notice.pdf");
    let out = sb.expect(&["extract", zh.to_str().unwrap()], 0);
    assert!(
        out.chars()
            .filter(|c| ('\u{4e00}'..='\u{9fff}').contains(c))
            .count()
            > 20,
        "{out}"
    );
}

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

#[test]
fn real_qwen_tokenizer_counts_when_available() {
    let tok =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("corpora/models/qwen3-tokenizer");
    if !tok.join("tokenizer.json").exists() {
        panic!("the real Qwen tokenizer is missing: run corpora/fetch-qwen-tokenizer.sh (.ci/run does)");
    }
    let sb = Sandbox::new();
    let corpus = sb.corpus();
    sb.expect(
        &[
            "ingest",
            corpus.to_str().unwrap(),
            "--tokenizer",
            tok.to_str().unwrap(),
            "--chunk-tokens",
            "120",
        ],
        1,
    );
    let status: serde_json::Value =
        serde_json::from_str(&sb.expect(&["status", "--json"], 0)).unwrap();
    assert_eq!(status["tokenizer"]["kind"], "huggingface");
    let counter = shirabe::ingest::tokens::TokenCounter::load(&tok.join("tokenizer.json")).unwrap();
    for h in sb.search_json("the", &["-k", "200"]) {
        let n = counter.count(h["text"].as_str().unwrap());
        assert!(n <= 160, "chunk of {n} tokens exceeds the target");
    }
}

#[test]
fn embed_command_with_a_tiny_model_and_the_real_tokenizer() {
    let sb = Sandbox::new();
    let cfg = shirabe::models::testing::tiny_config_with_vocab("qwen3", None, 151_936);
    let Some(model) = tiny_model(&sb, "tiny-embedding", &cfg, false, "the embed command test")
    else {
        return;
    };
    let m = model.to_str().unwrap();
    let parse = |out: String| -> Vec<Vec<f32>> {
        out.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let both = parse(sb.expect(
        &[
            "embed",
            "--embed-model",
            m,
            "Osaka warehouse",
            "大阪倉庫の拡張計画",
        ],
        0,
    ));
    assert_eq!(both.len(), 2);
    assert_eq!(both[0].len(), 32);
    let norm: f32 = both[1].iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() < 1e-4);
    // The same vector alone as in a batch.
    let alone = parse(sb.expect(&["embed", "--embed-model", m, "大阪倉庫の拡張計画"], 0));
    let diff = alone[0]
        .iter()
        .zip(&both[1])
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(diff <= 1e-4, "{diff}");
    let query = parse(sb.expect(
        &[
            "embed",
            "--embed-model",
            m,
            "--query",
            "--dims",
            "8",
            "Osaka warehouse",
        ],
        0,
    ));
    assert_eq!(query[0].len(), 8);
    // A missing model is a clear error.
    let out = sb.run(&["embed", "--embed-model", "Org/Missing", "x"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not found"));
}

#[test]
fn generate_streams_whole_characters_matching_the_final_text() {
    let sb = Sandbox::new();
    let cfg = shirabe::models::testing::tiny_config_with_vocab("qwen3", None, 151_936);
    let Some(model) = tiny_model(&sb, "tiny-lm", &cfg, true, "the generate command test") else {
        return;
    };
    let m = model.to_str().unwrap();
    let args = [
        "generate",
        "--model",
        m,
        "--prompt",
        "会議の決定事項を日本語でまとめてください",
        "--max-tokens",
        "40",
    ];
    let streamed = sb.expect(&args, 0);
    let mut json_args = args.to_vec();
    json_args.push("--json");
    let v: serde_json::Value = serde_json::from_str(sb.expect(&json_args, 0).trim()).unwrap();
    assert_eq!(streamed.trim_end_matches('\n'), v["text"].as_str().unwrap());
    assert_eq!(
        v["completion_tokens"].as_u64().unwrap() as usize,
        v["ids"].as_array().unwrap().len()
    );
    assert!(v["prompt_tokens"].as_u64().unwrap() > 5);
    assert!(v["decode_tokens_per_s"].as_f64().unwrap() > 0.0);
    // The int8 KV cache generates too; an unknown cache type is an error.
    let mut q8_args = json_args.clone();
    q8_args.extend(["--cache-dtype", "q8"]);
    let v8: serde_json::Value = serde_json::from_str(sb.expect(&q8_args, 0).trim()).unwrap();
    assert!(v8["completion_tokens"].as_u64().unwrap() > 0);
    let mut bad = args.to_vec();
    bad.extend(["--cache-dtype", "q4"]);
    let out = sb.cmd(&bad).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--cache-dtype"));
}

#[test]
fn ctrl_c_stops_generate_cleanly() {
    use std::io::Read;
    let sb = Sandbox::new();
    // No end-of-text ids in reach of the tiny model, so only Ctrl-C stops it.
    let cfg = shirabe::models::testing::tiny_config_with_vocab("qwen3", None, 151_936)
        .replace(r#""eos_token_id":[1,2]"#, r#""eos_token_id":[151935]"#);
    let Some(model) = tiny_model(&sb, "tiny-lm", &cfg, true, "the Ctrl-C test") else {
        return;
    };
    let mut child = sb
        .cmd(&[
            "generate",
            "--model",
            model.to_str().unwrap(),
            "--prompt",
            "hello",
            "--max-tokens",
            "100000",
            "--raw",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Interrupt once text streams.
    let mut first = [0u8; 1];
    child
        .stdout
        .as_mut()
        .unwrap()
        .read_exact(&mut first)
        .unwrap();
    let pid = child.id().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap()
        .success());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("interrupted after"), "{stderr}");
}

/// A tiny random-weight Qwen model directory `name` in the sandbox, with the
/// real Qwen3 tokenizer; `None` (saying which test is skipped) when
/// `corpora/fetch-qwen-tokenizer.sh` has not fetched it.
fn tiny_model(
    sb: &Sandbox,
    name: &str,
    cfg: &str,
    lm_head: bool,
    test: &str,
) -> Option<std::path::PathBuf> {
    let tok = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpora/models/qwen3-tokenizer/tokenizer.json");
    if !tok.exists() {
        panic!("{test} needs the real Qwen tokenizer: run corpora/fetch-qwen-tokenizer.sh (.ci/run does)");
    }
    let model = sb.path().join(name);
    shirabe::models::testing::write_tiny(&model, cfg, lm_head).unwrap();
    std::fs::copy(&tok, model.join("tokenizer.json")).unwrap();
    // Its chat template too: prompts are rendered from it, as for a real
    // checkpoint.
    let _ = std::fs::copy(
        tok.with_file_name("tokenizer_config.json"),
        model.join("tokenizer_config.json"),
    );
    Some(model)
}

/// A tiny random BERT (sentence-transformers layout) in the sandbox.
fn tiny_bert(sb: &Sandbox) -> String {
    let dir = sb.path().join("tiny-bert");
    std::fs::create_dir_all(&dir).unwrap();
    shirabe::models::testing::write_tiny_bert(&dir, "mean");
    dir.to_str().unwrap().to_string()
}

/// The JSON document a command printed (pretty or on its last line).
fn json_of(out: &str) -> serde_json::Value {
    serde_json::from_str(out)
        .or_else(|_| serde_json::from_str(out.lines().last().unwrap_or_default()))
        .unwrap_or_else(|e| panic!("{e}: {out}"))
}

#[test]
fn embeddings_arrive_later_and_search_turns_hybrid() {
    let sb = Sandbox::new();
    let corpus = sb.corpus();
    let c = corpus.to_str().unwrap();
    let model = tiny_bert(&sb);
    let out = sb.expect(&["ingest", c, "--no-embed"], 1);
    assert_eq!(out.matches("BM25-only").count(), 1, "{out}");
    let status = json_of(&sb.expect(&["status", "--json"], 0));
    assert!(status["embeddings"].is_null());
    let hits = sb.search_json("Osaka warehouse", &[]);
    assert_eq!(hits[0]["mode"], "bm25");
    let err = sb.run(&["search", "Osaka", "--mode", "dense"]);
    assert_eq!(err.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&err.stderr).contains("embed-index"));

    // Part of the work, then the rest: it resumes.
    let first = json_of(&sb.expect(
        &[
            "embed-index",
            "--embed-model",
            &model,
            "--limit",
            "2",
            "--json",
        ],
        0,
    ));
    assert_eq!(first["embedded"], 2);
    assert_eq!(first["stopped"], true);
    let status = json_of(&sb.expect(&["status", "--json"], 0));
    let chunks = status["chunks"].as_u64().unwrap();
    assert_eq!(status["embeddings"]["with_vectors"], 2);
    assert!(status["embeddings"]["eta_seconds"].as_f64().is_some());
    let human = sb.expect(&["status"], 0);
    assert!(human.contains(&format!("2/{chunks} chunks")), "{human}");
    assert!(human.contains("ETA"), "{human}");
    // No model flag: the index remembers its model.
    let rest = json_of(&sb.expect(&["embed-index", "--json"], 0));
    assert_eq!(rest["embedded"].as_u64().unwrap(), chunks - 2);
    assert_eq!(rest["with_vectors"].as_u64().unwrap(), chunks);

    // Search is hybrid by default now, and explains itself.
    let hits = sb.search_json("Osaka warehouse", &["--explain"]);
    assert_eq!(hits[0]["mode"], "hybrid");
    let e = &hits[0]["explain"];
    assert!(e["fused"].as_f64().unwrap() > 0.0, "{e}");
    assert!(hits.iter().any(|h| !h["explain"]["dense_rank"].is_null()));
    let text = sb.expect(&["search", "Osaka warehouse", "--explain", "-k", "2"], 0);
    assert!(
        text.contains("bm25 #") && text.contains("dense #") && text.contains("fused"),
        "{text}"
    );
    // Dense: a chunk's own text is its nearest neighbour.
    let target = &sb.search_json("tender documents", &["--mode", "bm25", "-k", "1"])[0];
    let dense = sb.search_json(
        target["text"].as_str().unwrap(),
        &["--mode", "dense", "-k", "1"],
    );
    assert_eq!(dense[0]["chunk_id"], target["chunk_id"]);
    // Neighbour expansion.
    let with_n = sb.search_json("Osaka", &["--neighbors", "1", "-k", "3"]);
    assert!(with_n
        .iter()
        .all(|h| h["neighbors"].is_array() || h["neighbors"].is_null()));

    // Re-ingesting unchanged files embeds nothing.
    let again = json_of(&sb.expect(&["ingest", c, "--json"], 1));
    assert_eq!(again["embedding"]["embedded"], 0, "{again}");
    assert_eq!(again["embedding"]["with_vectors"].as_u64().unwrap(), chunks);
}

#[test]
fn eval_reports_metrics_for_each_mode() {
    let sb = Sandbox::new();
    let corpus = sb.corpus();
    let model = tiny_bert(&sb);
    sb.expect(
        &["ingest", corpus.to_str().unwrap(), "--embed-model", &model],
        1,
    );
    let queries = sb.path().join("q.jsonl");
    std::fs::write(
        &queries,
        r#"{"query": "Osaka warehouse expansion budget", "doc": "meeting-minutes.pdf", "page": 1}
{"query": "operating costs fell", "doc": "quarterly-report.pdf", "tags": ["copied"]}
{"query": "予算案", "doc": "japanese-minutes.pdf", "tags": ["ja"]}
{"query": "no such thing anywhere xyzzy", "doc": "notes.md"}
"#,
    )
    .unwrap();
    let rows: Vec<serde_json::Value> =
        serde_json::from_str(&sb.expect(&["eval", queries.to_str().unwrap(), "--json"], 0))
            .unwrap();
    let get = |group: &str, mode: &str| {
        rows.iter()
            .find(|r| r["group"] == group && r["mode"] == mode)
            .unwrap_or_else(|| panic!("{group}/{mode} in {rows:?}"))
            .clone()
    };
    let bm25 = get("all", "bm25");
    assert_eq!(bm25["queries"], 4);
    assert_eq!(bm25["recall_10"], 0.75, "{bm25}");
    assert_eq!(get("ja", "bm25")["recall_1"], 1.0);
    for mode in ["dense", "hybrid"] {
        let r = get("all", mode);
        let x = r["ndcg_10"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&x), "{r}");
    }
    let table = sb.expect(&["eval", queries.to_str().unwrap(), "--modes", "bm25"], 0);
    assert!(
        table.contains("R@10") && table.contains("MRR@10"),
        "{table}"
    );
    assert!(!table.contains("dense"), "{table}");
    // A malformed line is a clear error.
    std::fs::write(&queries, "{\"query\": 3}\n").unwrap();
    let out = sb.run(&["eval", queries.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("q.jsonl:1"));
}

#[test]
fn sigkill_during_embedding_keeps_the_store_consistent() {
    let sb = Sandbox::new();
    let docs = sb.path().join("many");
    std::fs::create_dir(&docs).unwrap();
    // Thousands of distinct small chunks: enough work that the kills land
    // mid-run in a release build too, and a row per chunk.
    for i in 0..6 {
        let text: String = (0..800)
            .map(|j| {
                format!(
                    "Document {i} paragraph {j} mentions item {} of batch {}.\n\n",
                    j * 7 + i,
                    j % 13
                )
            })
            .collect();
        std::fs::write(docs.join(format!("doc{i:03}.txt")), text).unwrap();
    }
    let model = tiny_bert(&sb);
    sb.expect(
        &[
            "ingest",
            docs.to_str().unwrap(),
            "--quiet",
            "--no-embed",
            "--chunk-tokens",
            "24",
            "--chunk-overlap",
            "0",
        ],
        0,
    );
    let mut before = 0;
    for delay_ms in [150u64, 400, 900] {
        let mut child = sb
            .cmd(&["embed-index", "--embed-model", &model, "--quiet"])
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let status = json_of(&sb.expect(&["status", "--json"], 0));
        let e = &status["embeddings"];
        if e.is_null() {
            continue; // killed before the first commit
        }
        let with = e["with_vectors"].as_u64().unwrap();
        assert!(with <= status["chunks"].as_u64().unwrap());
        assert!(with >= before, "committed vectors never go away");
        assert!(e["rows"].as_u64().unwrap() >= with);
        before = with;
    }
    let done = json_of(&sb.expect(&["embed-index", "--embed-model", &model, "--json"], 0));
    let status = json_of(&sb.expect(&["status", "--json"], 0));
    assert_eq!(done["with_vectors"], status["chunks"]);
    assert_eq!(status["embeddings"]["with_vectors"], status["chunks"]);
    // Killed runs left no duplicate or orphan rows behind.
    assert!(status["embeddings"]["rows"].as_u64().unwrap() <= status["chunks"].as_u64().unwrap());
    assert!(
        before < status["chunks"].as_u64().unwrap(),
        "a kill landed mid-run"
    );
}

#[test]
fn real_minilm_matches_sentence_transformers() {
    // Reference: transformers 5.24 + PyTorch 2.15, mean pooling over the
    // attention mask, L2-normalised (what sentence-transformers computes
    // for this model); first 8 values.
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("corpora/models/all-MiniLM-L6-v2");
    assert!(
        dir.join("model.safetensors").exists(),
        "all-MiniLM-L6-v2 is missing: run corpora/fetch-minilm.sh (.ci/run does)"
    );
    let want: [[f32; 8]; 2] = [
        [
            -0.047985, -0.058556, 0.039228, 0.04623, 0.047112, -0.023043, 0.021664, -0.019808,
        ],
        [
            0.017445, 0.114365, 0.065872, 0.017946, -0.013449, 0.033805, 0.091256, 0.051208,
        ],
    ];
    let sb = Sandbox::new();
    let out = sb.expect(
        &[
            "embed",
            "--embed-model",
            dir.to_str().unwrap(),
            "The Osaka warehouse moved to automated picking in August.",
            "本日の会議では予算案を承認した。",
        ],
        0,
    );
    let vecs: Vec<Vec<f32>> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(vecs.len(), 2);
    for (v, w) in vecs.iter().zip(want) {
        assert_eq!(v.len(), 384);
        for (a, b) in v.iter().zip(w) {
            assert!((a - b).abs() < 1e-4, "{:?} vs {w:?}", &v[..8]);
        }
    }
}

#[test]
fn qdrant_mirrors_the_index_and_matches_the_embedded_store() {
    let Ok(url) = std::env::var("QDRANT_URL") else {
        panic!("QDRANT_URL is not set: start a Qdrant server (../shared/qdrant/run-qdrant.sh start DIR, as .ci/run does) and export its gRPC URL");
    };
    let sb = Sandbox::new();
    let corpus = sb.corpus();
    let c = corpus.to_str().unwrap();
    let model = tiny_bert(&sb);
    let collection = format!(
        "shirabe-test-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let q = [
        "--qdrant",
        url.as_str(),
        "--qdrant-collection",
        collection.as_str(),
    ];
    let mut args = vec!["ingest", c, "--embed-model", &model, "--json"];
    args.extend_from_slice(&q);
    let out = json_of(&sb.expect(&args, 1));
    let chunks = out["embedding"]["with_vectors"].as_u64().unwrap();
    assert_eq!(out["qdrant"]["upserted"].as_u64().unwrap(), chunks, "{out}");
    // The manifest remembers the collection: plain search uses Qdrant.
    let via_qdrant = sb.search_json("Osaka warehouse budget", &["--mode", "dense", "-k", "5"]);
    let filtered = sb.search_json(
        "Osaka warehouse budget",
        &["--mode", "dense", "--doc", "*minutes*"],
    );
    assert!(!filtered.is_empty());
    assert!(filtered.iter().all(|h| file_name(h).contains("minutes")));
    sb.expect(&["migrate", "--to", "embedded"], 0);
    let embedded = sb.search_json("Osaka warehouse budget", &["--mode", "dense", "-k", "5"]);
    let ids = |hits: &[serde_json::Value]| -> Vec<String> {
        hits.iter()
            .map(|h| h["chunk_id"].as_str().unwrap().to_string())
            .collect()
    };
    // The same hits with the same similarities; the embedded store keeps
    // f16 vectors and Qdrant f32, so near-ties may come in either order
    // (or swap at the cut-off).
    let scores = |hits: &[serde_json::Value]| -> std::collections::HashMap<String, f64> {
        hits.iter()
            .map(|h| {
                (
                    h["chunk_id"].as_str().unwrap().to_string(),
                    h["score"].as_f64().unwrap(),
                )
            })
            .collect()
    };
    let (sq, se) = (scores(&via_qdrant), scores(&embedded));
    let last = |hits: &[serde_json::Value]| hits.last().unwrap()["score"].as_f64().unwrap();
    for (id, a) in &sq {
        match se.get(id) {
            Some(b) => assert!((a - b).abs() < 2e-3, "{id}: {a} vs {b}"),
            None => assert!((a - last(&embedded)).abs() < 2e-3, "{id} only via Qdrant"),
        }
    }
    for (id, b) in &se {
        if !sq.contains_key(id) {
            assert!((b - last(&via_qdrant)).abs() < 2e-3, "{id} only embedded");
        }
    }
    assert_eq!(ids(&via_qdrant).len(), ids(&embedded).len());
    // Migrating back finds everything in place.
    let mut args = vec!["migrate", "--to", "qdrant", url.as_str(), "--json"];
    args.extend_from_slice(&q[2..]);
    let back = json_of(&sb.expect(&args, 0));
    assert_eq!(back["unchanged"].as_u64().unwrap(), chunks);
    // Removing a file and pruning removes its points.
    std::fs::remove_file(corpus.join("notes.md")).unwrap();
    let out = json_of(&sb.expect(&["ingest", c, "--prune", "--json"], 1));
    assert!(out["qdrant"]["deleted"].as_u64().unwrap() >= 1, "{out}");
    let hits = sb.search_json(
        "warehouse automation notes",
        &["--mode", "dense", "-k", "20"],
    );
    assert!(hits.iter().all(|h| file_name(h) != "notes.md"));
    // Clean up the collection.
    let cfg = shirabe::index::qdrant::QdrantConfig {
        url: url.clone(),
        api_key: None,
        collection: collection.clone(),
    };
    let q = shirabe::index::qdrant::QdrantIndex::connect(&cfg, 32).unwrap();
    assert_eq!(q.count().unwrap(), chunks - 1);
    q.drop_collection().unwrap();
}

#[test]
fn rerank_reorders_the_top_hits_and_shows_its_cost() {
    let sb = Sandbox::new();
    let cfg = shirabe::models::testing::tiny_config_with_vocab("qwen3", None, 151_936);
    let Some(model) = tiny_model(&sb, "tiny-reranker", &cfg, true, "the rerank test") else {
        return;
    };
    let corpus = sb.corpus();
    sb.expect(&["ingest", corpus.to_str().unwrap(), "--no-embed"], 1);
    let m = model.to_str().unwrap();
    let args = [
        "search",
        "Osaka warehouse",
        "--rerank",
        "--rerank-model",
        m,
        "--rerank-depth",
        "2",
        "-k",
        "3",
        "--explain",
        "--json",
    ];
    let out = sb.run(&args);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("reranked 2 passages"));
    let hits: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(hits.len(), 3);
    let scores: Vec<f64> = hits[..2]
        .iter()
        .map(|h| h["explain"]["rerank"].as_f64().unwrap())
        .collect();
    assert!(scores.iter().all(|s| (0.0..=1.0).contains(s)), "{scores:?}");
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");
    assert!(
        hits[2]["explain"]["rerank"].is_null(),
        "the 3rd was not reranked"
    );
    // The reranked set is the BM25 top 2.
    let bm25 = sb.search_json("Osaka warehouse", &["-k", "2"]);
    let mut a: Vec<&str> = bm25
        .iter()
        .map(|h| h["chunk_id"].as_str().unwrap())
        .collect();
    let mut b: Vec<&str> = hits[..2]
        .iter()
        .map(|h| h["chunk_id"].as_str().unwrap())
        .collect();
    a.sort();
    b.sort();
    assert_eq!(a, b);
}

#[test]
fn background_embedding_fills_in_vectors_after_ingest_returns() {
    let sb = Sandbox::new();
    let corpus = sb.corpus();
    let model = tiny_bert(&sb);
    let out = sb.expect(
        &[
            "ingest",
            corpus.to_str().unwrap(),
            "--embed-model",
            &model,
            "--background",
        ],
        1,
    );
    assert!(out.contains("embedding in the background"), "{out}");
    // BM25 works at once.
    assert!(!sb.search_json("Osaka", &["--mode", "bm25"]).is_empty());
    let mut done = false;
    for _ in 0..300 {
        let status = json_of(&sb.expect(&["status", "--json"], 0));
        if status["embeddings"]["with_vectors"] == status["chunks"] {
            done = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(done, "the background run finished");
    // Wait for it to release the lock, then the index is hybrid.
    for _ in 0..100 {
        if sb.run(&["embed-index", "--json"]).status.code() == Some(0) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(sb.search_json("Osaka", &[])[0]["mode"], "hybrid");
    let log = std::fs::read_to_string(sb.index().join("embed.log")).unwrap();
    assert!(log.contains("embedded"), "{log}");
}

/// A Hugging Face hub on loopback serving the files of `dir` as repo
/// `repo` (the `resolve/main` routes hf-hub uses, with its ETag, commit
/// and Content-Range headers); returns its endpoint.
fn mock_hub(repo: &str, dir: std::path::PathBuf) -> String {
    use std::io::Write;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let prefix = format!("/{repo}/resolve/main/");
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let (dir, prefix) = (dir.clone(), prefix.clone());
            std::thread::spawn(move || {
                let req = util::Request::read(&stream);
                let request = req.line.clone();
                let range = req
                    .header("range")
                    .and_then(|r| r.strip_prefix("bytes="))
                    .unwrap_or_default()
                    .to_string();
                let path = request.split_whitespace().nth(1).unwrap_or_default();
                let mut s = stream;
                let Some(file) = path
                    .strip_prefix(&prefix)
                    .map(|f| dir.join(f))
                    .filter(|f| f.is_file())
                else {
                    let _ = s.write_all(
                        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    );
                    return;
                };
                let data = std::fs::read(&file).unwrap();
                let etag = format!(
                    "{:x}",
                    data.len() as u64 * 2654435761 + data.first().copied().unwrap_or(0) as u64
                );
                let start = range
                    .split('-')
                    .next()
                    .and_then(|n| n.parse::<usize>().ok())
                    .unwrap_or(0)
                    .min(data.len());
                // The metadata request asks for one byte ("0-0").
                let end = if range == "0-0" {
                    1.min(data.len())
                } else {
                    data.len()
                };
                let head = format!(
                    "HTTP/1.1 206 Partial Content\r\nETag: \"{etag}\"\r\nX-Repo-Commit: 0123456789abcdef0123456789abcdef01234567\r\nContent-Range: bytes {start}-{}/{}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    end.saturating_sub(1),
                    data.len(),
                    end - start
                );
                let _ = s.write_all(head.as_bytes());
                let _ = s.write_all(&data[start..end]);
            });
        }
    });
    url
}

#[test]
fn models_pull_downloads_a_repo_into_the_cache_and_it_loads_offline() {
    let sb = Sandbox::new();
    let cfg = shirabe::models::testing::tiny_config_with_vocab("qwen3", None, 151_936);
    let Some(model) = tiny_model(&sb, "hub-files", &cfg, true, "the models pull test") else {
        return;
    };
    let hub = mock_hub("Org/Tiny-Qwen3", model);
    let out = sb
        .cmd(&["models", "pull", "Org/Tiny-Qwen3"])
        .env("HF_ENDPOINT", &hub)
        .env_remove("HF_HUB_OFFLINE")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("Org/Tiny-Qwen3") && stdout.contains("1 weight files"),
        "{stdout}"
    );
    // In the cache now, in the Hugging Face layout: listed, and loaded with
    // the hub offline.
    let listed = json_of(&sb.expect(&["models", "list", "--json"], 0));
    let m = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["repo"] == "Org/Tiny-Qwen3")
        .unwrap_or_else(|| panic!("{listed}"));
    assert_eq!(m["loadable"], true, "{m}");
    let v = json_of(&sb.expect(
        &[
            "generate",
            "--model",
            "Org/Tiny-Qwen3",
            "--prompt",
            "hello",
            "--max-tokens",
            "3",
            "--json",
        ],
        0,
    ));
    assert!(v["prompt_tokens"].as_u64().unwrap() > 0, "{v}");
}

#[test]
fn the_committed_sample_corpus_is_what_the_generator_writes() {
    let sb = Sandbox::new();
    let fresh = sb.corpus();
    let committed = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("corpora/sample");
    for entry in std::fs::read_dir(&fresh).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap();
        let ours = std::fs::read(committed.join(name))
            .unwrap_or_else(|_| panic!("corpora/sample lacks {name:?}"));
        assert!(
            ours == std::fs::read(&path).unwrap(),
            "corpora/sample/{} is stale: run `shirabe sample-corpus corpora/sample`",
            name.to_string_lossy()
        );
    }
}

/// The developer benchmark of the model (`benches/kernels.rs`, built with
/// the `bench-internals` feature by the same cargo), on a toy model of
/// Qwen3's layout: every figure of `--json` present and positive.
#[test]
fn bench_model_reports_every_figure_and_step_on_the_tiny_preset() {
    let out = std::process::Command::new(env!("CARGO"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "bench",
            "--quiet",
            "--features",
            "bench-internals",
            "--bench",
            "kernels",
        ])
        .args(["--", "model", "--preset", "tiny", "--dtypes", "f32,q8_0"])
        .args(["--prefill", "64", "--embed-batch", "1", "--decode", "3"])
        .args(["--decode-after", "64", "--json"])
        .output()
        .expect("cargo runs");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}\n--- stderr\n{stderr}");
    let out = stdout;
    let doc: serde_json::Value = serde_json::from_str(out.trim()).expect("one JSON document");
    assert!(doc["bandwidth_gbs"].as_f64().unwrap() > 0.0, "{doc}");
    let runs = doc["runs"].as_array().unwrap();
    let dtypes: Vec<&str> = runs.iter().map(|r| r["dtype"].as_str().unwrap()).collect();
    assert_eq!(dtypes, ["f32", "q8_0"]);
    let figure = |r: &serde_json::Value, k: &str| {
        let x = r[k].as_f64().unwrap_or(f64::NAN);
        assert!(x.is_finite() && x > 0.0, "{k} in {r}");
        x
    };
    for r in runs {
        for k in [
            "embed_batch1_passages_per_s",
            "embed_batch1_tokens_per_s",
            "prefill_64_tokens_per_s",
            "decode_tokens_per_s",
            "decode_read_bandwidth_gbs",
            "decode_best_read_bandwidth_gbs",
        ] {
            figure(r, k);
        }
        // Counting the cache's bytes raises the fraction; the run's best
        // reading is at least the median one.
        assert!(
            figure(r, "decode_fraction_of_bound_with_kv") > figure(r, "decode_fraction_of_bound")
        );
        assert!(
            figure(r, "decode_best_read_bandwidth_gbs") >= figure(r, "decode_read_bandwidth_gbs")
        );
        // Every step with its time and the readings either side, each
        // step's "before" the previous step's "after".
        assert_eq!(r["decode_after"], 64);
        let steps = r["decode_steps"].as_array().unwrap();
        assert_eq!(steps.len(), 3, "{r}");
        for pair in steps.windows(2) {
            assert_eq!(pair[0]["yardstick_gbs"][1], pair[1]["yardstick_gbs"][0]);
        }
        for step in steps {
            figure(step, "secs");
        }
    }
}
