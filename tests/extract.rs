//! `shirabe extract`: pages, labels, boxes, ligatures, columns, CJK fonts.

use crate::util::json_of;
use crate::util::Sandbox;

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
