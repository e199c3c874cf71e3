//! `shirabe doctor`: every damaged part is named, with the command that
//! repairs it, and that command works.

use std::path::Path;

use crate::util::Sandbox;

/// An ingested sample corpus with vectors, and a copy of its sound index.
fn ingested() -> (Sandbox, std::path::PathBuf) {
    let sb = Sandbox::new();
    let corpus = sb.corpus();
    let model = crate::util::tiny_bert(&sb);
    sb.expect(
        &["ingest", corpus.to_str().unwrap(), "--embed-model", &model],
        1,
    );
    (sb, corpus)
}

/// Every file directly in `dir` whose name ends with one of `ends`.
fn files(dir: &Path, ends: &[&str]) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| ends.iter().any(|e| p.to_string_lossy().ends_with(e)))
        .collect()
}

/// `search` fails naming the part and `doctor --repair`; `doctor` finds
/// it (exit 1); `--repair` mends it (exit 0); then search answers and
/// `doctor` finds nothing.
fn mended(sb: &Sandbox, part: &str) {
    let out = sb.run(&["search", "budget", "--mode", "bm25"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(part) && err.contains("doctor --repair"),
        "{err}"
    );
    let found = sb.expect(&["doctor"], 1);
    assert!(found.contains(part), "{found}");
    let v: serde_json::Value =
        serde_json::from_str(&sb.expect(&["doctor", "--repair", "--json"], 0)).unwrap();
    assert!(v["after"]["findings"].as_array().unwrap().is_empty(), "{v}");
    assert!(!sb.search_json("budget", &["--mode", "bm25"]).is_empty());
    assert!(sb.expect(&["doctor"], 0).contains("no damage found"));
    sb.expect(&["status"], 0);
}

#[test]
fn a_truncated_vector_store_is_dropped_then_embedded_again() {
    let (sb, _) = ingested();
    let vectors = sb.index().join("vectors");
    let store = std::fs::read_dir(&vectors)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    for f in files(&store, &["vectors.bin"]) {
        std::fs::OpenOptions::new()
            .write(true)
            .open(f)
            .unwrap()
            .set_len(10)
            .unwrap();
    }
    let out = sb.run(&["search", "budget"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("vector store") && err.contains("doctor --repair"),
        "{err}"
    );
    let repaired = sb.expect(&["doctor", "--repair"], 0);
    assert!(repaired.contains("embed-index"), "{repaired}");
    // BM25 works at once, and embed-index brings the vectors back.
    assert!(!sb.search_json("budget", &["--mode", "bm25"]).is_empty());
    let model = sb.path().join("tiny-bert");
    sb.expect(
        &["embed-index", "--embed-model", model.to_str().unwrap()],
        0,
    );
    assert!(!sb.search_json("budget", &["--mode", "dense"]).is_empty());
    assert!(sb.expect(&["doctor"], 0).contains("no damage found"));
}

#[test]
fn a_lost_meta_json_is_found_and_rebuilt() {
    let (sb, corpus) = ingested();
    std::fs::remove_file(sb.index().join("tantivy/meta.json")).unwrap();
    // Ingesting again does not pretend every file is unchanged.
    let out = sb.run(&["ingest", corpus.to_str().unwrap(), "--no-embed"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("doctor --repair"));
    mended(&sb, "BM25 index");
}

#[test]
fn garbled_segments_are_found_and_rebuilt() {
    let (sb, _) = ingested();
    for f in files(&sb.index().join("tantivy"), &[".store", ".idx", ".term"]) {
        let mut b = std::fs::read(&f).unwrap();
        for (i, x) in b.iter_mut().enumerate() {
            if i % 7 == 0 {
                *x ^= 0x5a;
            }
        }
        std::fs::write(&f, b).unwrap();
    }
    mended(&sb, "BM25 index");
}

#[test]
fn an_unreadable_manifest_is_rebuilt() {
    let (sb, _) = ingested();
    std::fs::write(sb.index().join("manifest.json"), "{garbage").unwrap();
    mended(&sb, "manifest");
}
