//! OCR end to end: generated scans through every image filter, read by
//! the `tesseract` program, scored against the text that was typeset;
//! pages without a text layer counted when no engine is found; a fact
//! that exists only on a scanned page found by `search` and cited by `ask`.
//!
//! Needs Tesseract with English and Japanese data and the fonts the scans
//! are typeset in; `.ci/run` installs them (`apt install tesseract-ocr
//! tesseract-ocr-jpn tesseract-ocr-jpn-vert fonts-dejavu-core
//! fonts-ipafont-gothic libopenjp2-tools`). Without them these tests fail
//! and say so.

use std::collections::HashMap;
use std::path::PathBuf;

use unicode_normalization::UnicodeNormalization;

use crate::util::Sandbox;

fn require_tesseract() {
    let ok = std::process::Command::new("tesseract")
        .arg("--list-langs")
        .output()
        .map(|o| {
            let l = String::from_utf8_lossy(&o.stdout).into_owned();
            l.lines().any(|x| x == "eng") && l.lines().any(|x| x == "jpn")
        })
        .unwrap_or(false);
    assert!(
        ok,
        "Tesseract with eng and jpn data is needed: apt install tesseract-ocr tesseract-ocr-jpn \
         tesseract-ocr-jpn-vert (.ci/run installs it)"
    );
}

fn scans(sb: &Sandbox) -> PathBuf {
    let dir = sb.path().join("scans");
    shirabe::samples::scan::write_scans(&dir).expect(
        "scanned samples (fonts: apt install fonts-dejavu-core fonts-ipafont-gothic libopenjp2-tools)",
    );
    dir
}

fn counts<T: std::hash::Hash + Eq>(items: impl Iterator<Item = T>) -> HashMap<T, usize> {
    let mut m = HashMap::new();
    for i in items {
        *m.entry(i).or_insert(0) += 1;
    }
    m
}

/// F1 of two bags.
fn f1<T: std::hash::Hash + Eq + Clone>(got: Vec<T>, want: Vec<T>) -> f64 {
    let (g, w) = (counts(got.iter().cloned()), counts(want.iter().cloned()));
    let tp: usize = g
        .iter()
        .map(|(k, n)| (*n).min(*w.get(k).unwrap_or(&0)))
        .sum();
    if got.is_empty() || want.is_empty() {
        return 0.0;
    }
    let (p, r) = (tp as f64 / got.len() as f64, tp as f64 / want.len() as f64);
    if p + r == 0.0 {
        0.0
    } else {
        2.0 * p * r / (p + r)
    }
}

fn words(t: &str) -> Vec<String> {
    t.nfkc()
        .collect::<String>()
        .to_lowercase()
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect()
}

fn chars(t: &str) -> Vec<char> {
    t.nfkc().filter(|c| !c.is_whitespace()).collect()
}

#[test]
fn scans_in_every_filter_read_at_f1_095() {
    require_tesseract();
    let sb = Sandbox::new();
    let dir = scans(&sb);
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "pdf"))
        .collect();
    names.sort();
    assert!(names.len() >= 12, "{names:?}");
    for pdf in names {
        let out = sb.expect(
            &[
                "extract",
                "--ocr",
                "auto",
                "--json",
                "--boxes",
                pdf.to_str().unwrap(),
            ],
            0,
        );
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        let page = &v["pages"][0];
        let text = page["text"].as_str().unwrap();
        let truth = std::fs::read_to_string(format!("{}.truth", pdf.display())).unwrap();
        let name = pdf.file_name().unwrap().to_string_lossy().into_owned();
        let score = if name.contains("-ja-") {
            f1(chars(text), chars(&truth))
        } else {
            f1(words(text), words(&truth))
        };
        assert!(score >= 0.95, "{name}: F1 {score:.3}\n{text}");
        // Marked as OCR, with the engine and a confidence.
        assert!(
            page["ocr"]["engine"]
                .as_str()
                .unwrap()
                .starts_with("tesseract"),
            "{page}"
        );
        assert!(page["ocr"]["confidence"].as_f64().unwrap() > 50.0, "{page}");
        // Word boxes: byte ranges of the text, boxes on the page.
        let boxes = page["boxes"].as_array().unwrap();
        assert!(!boxes.is_empty(), "{name}");
        for b in boxes {
            let b: Vec<f64> = b
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect();
            let (s, e) = (b[0] as usize, b[1] as usize);
            assert!(
                text.get(s..e).is_some_and(|w| !w.trim().is_empty()),
                "{name}: {b:?}"
            );
            assert!(b[2] < b[4] && b[3] < b[5], "{name}: {b:?}");
            assert!(
                b[2] >= 0.0 && b[4] <= 842.0 && b[3] >= 0.0 && b[5] <= 842.0,
                "{b:?}"
            );
        }
    }
}

#[test]
fn a_word_box_lands_where_the_word_is_printed() {
    require_tesseract();
    let sb = Sandbox::new();
    let dir = scans(&sb);
    // The title is the first line, 72 pt from the top-left corner of A4,
    // on the upright page and on the one stored sideways with /Rotate 90.
    for name in ["scan-en-flate.pdf", "scan-en-rotated.pdf"] {
        let pdf = dir.join(name);
        let out = sb.expect(
            &[
                "extract",
                "--ocr",
                "auto",
                "--json",
                "--boxes",
                pdf.to_str().unwrap(),
            ],
            0,
        );
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        let page = &v["pages"][0];
        let text = page["text"].as_str().unwrap();
        let first = &page["boxes"][0];
        let b: Vec<f64> = first
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        assert_eq!(&text[b[0] as usize..b[1] as usize], "Archive", "{name}");
        if name.contains("rotated") {
            // The page is stored landscape and shown turned 90° clockwise:
            // the upright top-left corner is user space's origin, the
            // upright x axis runs up user space's y.
            assert!((b[3] - 72.0).abs() < 6.0, "{name}: {b:?}");
            assert!((b[2] - 72.0).abs() < 10.0, "{name}: {b:?}");
        } else {
            assert!((b[2] - 72.0).abs() < 6.0, "{name}: {b:?}");
            assert!((842.0 - b[5] - 72.0).abs() < 10.0, "{name}: {b:?}");
        }
    }
}

#[test]
fn pages_without_a_text_layer_are_counted_when_no_engine_is_found() {
    let sb = Sandbox::new();
    let dir = scans(&sb);
    // No tesseract on PATH.
    let out = sb
        .cmd(&["ingest", dir.to_str().unwrap(), "--no-embed"])
        .env("PATH", "/nonexistent")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("12 pages have no text layer and need OCR"),
        "{stdout}"
    );
    assert!(stdout.contains("apt install tesseract-ocr"), "{stdout}");
    assert!(stdout.contains("(12 need OCR)"), "{stdout}");
    let status = sb.expect(&["status", "--files"], 0);
    assert!(status.contains("12 need OCR"), "{status}");
    assert!(status.contains("(1 pages need OCR)"), "{status}");
    // `--ocr never` counts them and says why they were not read.
    let sb2 = Sandbox::new();
    let dir2 = scans(&sb2);
    let out = sb2.expect(
        &[
            "ingest",
            dir2.to_str().unwrap(),
            "--no-embed",
            "--ocr",
            "never",
        ],
        0,
    );
    assert!(out.contains("--ocr never: not read"), "{out}");
    // A later run with an engine reads the pages it left.
    if std::process::Command::new("tesseract")
        .arg("--version")
        .output()
        .is_ok()
    {
        let again = sb.expect(
            &["ingest", dir.to_str().unwrap(), "--no-embed", "-j", "2"],
            0,
        );
        assert!(again.contains("12 read by OCR"), "{again}");
        let status = sb.expect(&["status", "--files"], 0);
        assert!(!status.contains("need OCR"), "{status}");
    }
}

#[test]
fn a_fact_only_on_a_scanned_page_is_found_and_cited() {
    require_tesseract();
    let sb = Sandbox::new();
    let corpus = sb.corpus();
    let dir = scans(&sb);
    std::fs::copy(
        dir.join("scan-en-ccitt.pdf"),
        corpus.join("archive-letter.pdf"),
    )
    .unwrap();
    std::fs::copy(
        dir.join("scan-ja-flate.pdf"),
        corpus.join("hozon-oshirase.pdf"),
    )
    .unwrap();
    // The sample corpus holds a damaged PDF: exit 1.
    let out = sb.expect(&["ingest", corpus.to_str().unwrap(), "--no-embed"], 1);
    assert!(out.contains("2 read by OCR"), "{out}");
    let hits = sb.search_json("restoration budget damaged ledgers guilders", &[]);
    assert!(!hits.is_empty());
    assert!(
        hits[0]["path"]
            .as_str()
            .unwrap()
            .ends_with("archive-letter.pdf"),
        "{:?}",
        hits[0]
    );
    assert_eq!(hits[0]["ocr"], true, "{:?}", hits[0]);
    let text = sb.expect(&["search", "Verhoeven binding"], 0);
    assert!(text.contains("p. 1, OCR"), "{text}");
    let ja = sb.search_json("修復予算", &[]);
    assert!(
        ja[0]["path"]
            .as_str()
            .unwrap()
            .ends_with("hozon-oshirase.pdf"),
        "{:?}",
        ja[0]
    );
    let answer = sb.expect(
        &[
            "ask",
            "What was the restoration budget for the damaged ledgers?",
        ],
        0,
    );
    assert!(answer.contains("42,000 guilders"), "{answer}");
    assert!(
        answer.contains("archive-letter.pdf") && answer.contains("p. 1, OCR"),
        "{answer}"
    );
}
