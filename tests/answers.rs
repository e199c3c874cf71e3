//! Answers without a model: attribution, page-precise quotes, sanitized
//! sources, and `eval --answers` on the sample's labelled set.

use crate::util::Sandbox;

fn ingested() -> Sandbox {
    let sb = Sandbox::new();
    let corpus = sb.corpus();
    sb.expect(&["ingest", corpus.to_str().unwrap()], 1); // damaged.pdf fails
    sb
}

#[test]
fn extractive_answers_cite_the_page_of_their_sentence() {
    let sb = ingested();
    let out = sb.expect(
        &[
            "ask",
            "Who is getting the tender paperwork ready for the warehouse?",
            "--json",
        ],
        0,
    );
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let answer = v["answer"].as_str().unwrap();
    assert!(
        answer.contains("Kenji Sato will prepare the tender documents"),
        "{answer}"
    );
    let c = v["citations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| {
            c["quote_text"]
                .as_str()
                .unwrap()
                .contains("tender documents")
        })
        .expect("the tender sentence is quoted");
    assert_eq!(c["page"], 1);
    assert_eq!(c["supported"], true);
    assert_eq!(c["by"], "model"); // the extractive writer cites as it quotes
    let (s, e) = (
        c["page_chars"][0].as_u64().unwrap() as usize,
        c["page_chars"][1].as_u64().unwrap() as usize,
    );
    // The span is that sentence on its page, as `extract` gives the page.
    let corpus = sb.path().join("sample");
    let pages = sb.expect(
        &[
            "extract",
            corpus.join("meeting-minutes.pdf").to_str().unwrap(),
        ],
        0,
    );
    let page1: String = pages
        .split('\x0c')
        .next()
        .unwrap()
        .chars()
        .skip(s)
        .take(e - s)
        .collect();
    assert!(page1.starts_with("Kenji Sato will prepare"), "{page1:?}");
    assert_eq!(v["language"], "en");
}

#[test]
fn a_question_the_archive_cannot_answer_is_declined_with_its_reason() {
    let sb = ingested();
    let q = "How do I deploy Kubernetes clusters on bare metal?";
    let out = sb.expect(&["ask", q, "--json"], 1);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["answer"], "");
    assert_eq!(v["refused"], true);
    let why = v["declined"].as_str().unwrap();
    assert!(
        why.contains("never mention") && why.contains("Kubernetes"),
        "{why}"
    );
    assert_eq!(v["grounding"]["unknown_words"][1], "Kubernetes");
    // In text: the refusal, its reason, and the nearest passages to judge.
    let out = sb.expect(&["ask", q, "--color", "never"], 1);
    assert!(out.contains("do not seem to contain an answer"), "{out}");
    assert!(
        out.contains("never mention") && out.contains("“Kubernetes”"),
        "{out}"
    );
    assert!(out.contains("Nearest passages"), "{out}");
    // --always-answer leaves it to the writer (the extractive one finds
    // nothing to quote either).
    let out = sb.expect(&["ask", q, "--always-answer", "--json"], 1);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(v["declined"].is_null(), "{v}");
    // A question it can answer is not declined.
    let out = sb.expect(
        &[
            "ask",
            "How much was the budget for the Osaka warehouse expansion?",
            "--json",
        ],
        0,
    );
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(v["declined"].is_null(), "{v}");
}

#[test]
fn eval_scores_answers_on_a_labelled_set() {
    let sb = ingested();
    let set = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpora/queries/sample-answers.jsonl");
    let out = sb.expect(&["eval", set.to_str().unwrap(), "--answers", "--json"], 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["backend"], "extractive");
    let all = &v["report"]["all"];
    assert_eq!(all["answerable"], 7);
    assert_eq!(all["unanswerable"], 1);
    // The sample's questions are answered from their page, in their
    // language, every answer with its sources.
    assert!(all["correct"].as_f64().unwrap() >= 0.85, "{all}");
    assert!(all["page_cited"].as_f64().unwrap() >= 0.85, "{all}");
    assert_eq!(all["without_sources"], 0);
    assert_eq!(all["right_language"], 1.0);
    assert_eq!(v["report"]["groups"]["lang:ja"]["answerable"], 2);
    assert_eq!(v["answers"].as_array().unwrap().len(), 8);
    // The unanswerable one is declined.
    assert_eq!(all["refused_unanswerable"], 1.0, "{all}");
    // The oracle row: only the answer pages as context.
    let out = sb.expect(
        &[
            "eval",
            set.to_str().unwrap(),
            "--answers",
            "--oracle",
            "--json",
        ],
        0,
    );
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["oracle"], true);
    assert_eq!(v["report"]["all"]["page_given"], 1.0);
    // The same set scores retrieval: answerable questions only, grouped
    // by language.
    let out = sb.expect(&["eval", set.to_str().unwrap()], 0);
    let all = out.lines().find(|l| l.starts_with("all ")).unwrap();
    assert!(all.contains(" 7 "), "{out}");
    assert!(out.lines().any(|l| l.starts_with("lang:ja ")), "{out}");
}

#[test]
fn sources_never_drive_the_terminal() {
    let sb = Sandbox::new();
    let docs = sb.path().join("docs");
    std::fs::create_dir_all(&docs).unwrap();
    let name = "minutes \x1b]0;pwned\x07\x1b[2J.md";
    std::fs::write(
        docs.join(name),
        "# Title \x1b]52;c;ZXZpbA==\x07\n\nThe warehouse budget was approved in October.\n",
    )
    .unwrap();
    let out = sb.run(&["ingest", docs.to_str().unwrap()]);
    assert!(
        !out.stdout.contains(&0x1b),
        "{:?}",
        String::from_utf8_lossy(&out.stdout)
    );
    for args in [
        vec!["ask", "When was the warehouse budget approved?"],
        vec!["search", "warehouse budget"],
        vec!["status", "--files"],
    ] {
        let out = sb.run(&args);
        assert!(out.status.success(), "{args:?}");
        for stream in [&out.stdout, &out.stderr] {
            assert!(
                !stream.contains(&0x1b) && !stream.contains(&0x07),
                "{args:?}: {:?}",
                String::from_utf8_lossy(stream)
            );
        }
    }
}
