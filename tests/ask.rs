//! `ask`, `summarize` and `chat` end to end: extractive answers, a tiny
//! local model, an OpenAI-compatible endpoint (mocked), map-reduce
//! summaries and conversations.

use crate::util::{json_of, tiny_model};
use crate::util::{mock_server, sse, Sandbox};

#[test]
fn ask_answers_extractively_with_checked_citations() {
    let sb = Sandbox::new();
    let corpus = sb.corpus();
    sb.expect(&["ingest", corpus.to_str().unwrap(), "--no-embed"], 1);
    let out = sb.expect(
        &[
            "ask",
            "How much was the budget for the Osaka warehouse expansion?",
        ],
        0,
    );
    assert!(out.contains("1.8 million euros"), "{out}");
    assert!(
        out.contains("Sources") && out.contains("meeting-minutes.pdf"),
        "{out}"
    );
    let v = json_of(&sb.expect(
        &[
            "ask",
            "How much was the budget for the Osaka warehouse expansion?",
            "--json",
        ],
        0,
    ));
    assert_eq!(v["backend"], "extractive");
    let passages = v["passages"].as_array().unwrap();
    let cites = v["citations"].as_array().unwrap();
    assert!(!cites.is_empty());
    for c in cites {
        let n = c["n"].as_u64().unwrap() as usize;
        assert!(n >= 1 && n <= passages.len());
        assert!(c["support"].as_f64().unwrap() > 0.9, "{c}");
    }
    assert!(v["invalid_citations"].as_array().unwrap().is_empty());
    assert!(v["context"]["tokens"].as_u64().unwrap() <= v["context"]["budget"].as_u64().unwrap());
    // Japanese works as typed.
    let ja = sb.expect(&["ask", "大阪倉庫の拡張計画の予算"], 0);
    assert!(ja.contains("japanese-minutes.pdf"), "{ja}");
    // No answer in the documents: said plainly, exit 1.
    let none = sb.expect(&["ask", "What colour is the sky on Mars?"], 1);
    assert!(none.contains("do not seem to contain"), "{none}");
    // A tight window: the packed prompt still fits.
    let v = json_of(&sb.expect(
        &[
            "ask",
            "Osaka warehouse",
            "--ctx",
            "1400",
            "--max-tokens",
            "200",
            "--json",
        ],
        0,
    ));
    assert!(
        v["context"]["tokens"].as_u64().unwrap() <= 1200,
        "{}",
        v["context"]
    );
}

#[test]
fn ask_with_a_tiny_local_model_streams_and_checks() {
    let sb = Sandbox::new();
    // A window of 1,024 tokens: the instructions alone take ~200 of the
    // tiny config's 256.
    let cfg = shirabe::models::testing::tiny_config_with_vocab("qwen3", None, 151_936).replace(
        "\"max_position_embeddings\":256",
        "\"max_position_embeddings\":1024",
    );
    let Some(model) = tiny_model(&sb, "tiny-lm", &cfg, true, "the ask-with-a-model test") else {
        return;
    };
    let corpus = sb.corpus();
    sb.expect(&["ingest", corpus.to_str().unwrap(), "--no-embed"], 1);
    let m = model.to_str().unwrap();
    let out = sb.run(&[
        "ask",
        "Osaka warehouse budget",
        "--model",
        m,
        "--max-tokens",
        "12",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(0));
    // The prefill is named on stderr (off a terminal: one line), never in
    // the JSON on stdout.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("phase: reading the prompt ("), "{stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains("phase:"), "{stdout}");
    let v = json_of(&stdout);
    assert_eq!(v["backend"], m);
    assert_eq!(v["usage"]["completion_tokens"], 12);
    let prompt_tokens = v["usage"]["prompt_tokens"].as_u64().unwrap();
    assert_eq!(
        prompt_tokens,
        v["context"]["tokens"].as_u64().unwrap(),
        "the packer counted exactly what the model read"
    );
    // Random weights write noise: whatever it cites is checked, not trusted.
    for n in v["invalid_citations"].as_array().unwrap() {
        assert!(n.as_u64().unwrap() as usize > v["passages"].as_array().unwrap().len());
    }
    // The int8 KV cache answers the same question.
    let v8 = json_of(&sb.expect(
        &[
            "ask",
            "Osaka warehouse budget",
            "--model",
            m,
            "--max-tokens",
            "12",
            "--cache-dtype",
            "q8",
            "--json",
        ],
        0,
    ));
    assert_eq!(v8["usage"]["prompt_tokens"], v["usage"]["prompt_tokens"]);
    let shown = sb.run(&[
        "ask",
        "Osaka",
        "--model",
        m,
        "--max-tokens",
        "4",
        "--show-context",
    ]);
    let stderr = String::from_utf8_lossy(&shown.stderr);
    assert!(
        stderr.contains("<passage id=\"1\"") && stderr.contains("context: "),
        "{stderr}"
    );
}

#[test]
fn ask_through_an_openai_compatible_endpoint_retries_and_repacks() {
    let sb = Sandbox::new();
    let corpus = sb.corpus();
    sb.expect(&["ingest", corpus.to_str().unwrap(), "--no-embed"], 1);
    let busy =
        "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\nConnection: close\r\n\r\nbusy"
            .to_string();
    let answer = sse(&[
        "The board approved ",
        "1.8 million euros for the Osaka warehouse [1]",
        ". Also [9].",
    ]);
    let (url, seen) = mock_server(vec![busy, answer.clone()]);
    let out = sb
        .cmd(&[
            "ask",
            "Osaka warehouse budget",
            "--endpoint",
            &url,
            "--model",
            "qwen-test",
            "--api-key",
            "sekret",
            "--json",
        ])
        .env("SHIRABE_RETRY_BACKOFF_MS", "10")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = json_of(&stdout);
    assert!(
        v["answer"].as_str().unwrap().contains("1.8 million euros"),
        "{v}"
    );
    assert_eq!(v["invalid_citations"], serde_json::json!([9]));
    assert_eq!(v["usage"]["attempts"], 2);
    assert_eq!(v["usage"]["prompt_tokens"], 321);
    let reqs = seen.lock().unwrap();
    assert_eq!(reqs.len(), 2);
    let last = &reqs[1];
    assert!(
        last.to_ascii_lowercase()
            .contains("authorization: bearer sekret"),
        "{last}"
    );
    assert!(
        last.contains("\"model\":\"qwen-test\"") && last.contains("<passage id=\\\"1\\\""),
        "{last}"
    );
    drop(reqs);
    // Too long for the server: half the context, once more.
    let msg = r#"{"error": {"message": "This model's maximum context length is 512 tokens."}}"#;
    let too_long = format!(
        "HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{msg}",
        msg.len()
    );
    let (url, seen) = mock_server(vec![too_long, answer]);
    let out = sb.run(&[
        "ask",
        "Osaka warehouse budget",
        "--endpoint",
        &url,
        "--model",
        "m",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("retrying with half the context"),
        "{stderr}"
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("Sources"));
    assert_eq!(seen.lock().unwrap().len(), 2);
}

#[test]
fn summarize_whole_documents_and_map_reduce_keeps_citations() {
    let sb = Sandbox::new();
    let corpus = sb.corpus();
    sb.expect(
        &[
            "ingest",
            corpus.to_str().unwrap(),
            "--no-embed",
            "--chunk-tokens",
            "40",
            "--chunk-overlap",
            "4",
        ],
        1,
    );
    // Extractive, without a model.
    let out = sb.expect(&["summarize", "meeting-minutes.pdf"], 0);
    assert!(
        out.contains("1.8 million euros") && out.contains("Sources"),
        "{out}"
    );
    let err = sb.run(&["summarize", "no-such-file.pdf"]);
    assert_eq!(err.status.code(), Some(2));
    // A window far smaller than the document: map-reduce through a
    // (mock) endpoint whose every reply cites passage 2.
    let reply = sse(&["The board approved the budget [2]."]);
    let (url, seen) = mock_server(vec![reply; 60]);
    let v = json_of(&sb.expect(
        &[
            "summarize",
            "meeting-minutes.pdf",
            "--meeting",
            "--endpoint",
            &url,
            "--model",
            "m",
            "--ctx",
            "520",
            "--max-tokens",
            "64",
            "--json",
        ],
        0,
    ));
    assert!(v["levels"].as_u64().unwrap() >= 2, "{v}");
    let calls = v["calls"].as_u64().unwrap() as usize;
    assert!(calls >= 3);
    assert_eq!(seen.lock().unwrap().len(), calls);
    assert!(v["invalid_citations"].as_array().unwrap().is_empty());
    let cites = v["citations"].as_array().unwrap();
    assert!(!cites.is_empty() && cites.iter().all(|c| c["n"] == 2));
    // The meeting instructions reached the final call.
    assert!(seen
        .lock()
        .unwrap()
        .last()
        .unwrap()
        .contains("Action items"));
}

#[test]
fn chat_answers_follow_ups_and_saves_the_conversation() {
    use std::io::Write;
    let sb = Sandbox::new();
    let corpus = sb.corpus();
    sb.expect(&["ingest", corpus.to_str().unwrap(), "--no-embed"], 1);
    let md = sb.path().join("talk.md");
    let mut child = sb
        .cmd(&["chat"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let script = format!(
        "How much was the budget for the Osaka warehouse expansion?\nWho prepares the tender documents?\n/save {}\n/quit\n",
        md.display()
    );
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("1.8 million euros"), "{stdout}");
    assert!(
        stdout.contains("Kenji Sato will prepare the tender documents"),
        "{stdout}"
    );
    assert!(stdout.contains("saved 2 turns"), "{stdout}");
    let saved = std::fs::read_to_string(&md).unwrap();
    assert!(
        saved.contains("## Who prepares the tender documents?"),
        "{saved}"
    );
    assert!(saved.contains("meeting-minutes.pdf"), "{saved}");
}

/// Runs `chat` on the ingested sample against a mock endpoint that sends
/// `replies` in turn, with `input` on stdin; its stdout and the requests
/// the endpoint saw.
fn chat_with_endpoint(replies: Vec<String>, input: &str) -> (String, Vec<String>) {
    use std::io::Write;
    let sb = Sandbox::new();
    let corpus = sb.corpus();
    sb.expect(&["ingest", corpus.to_str().unwrap(), "--no-embed"], 1);
    let (url, seen) = mock_server(replies);
    let mut child = sb
        .cmd(&["chat", "--endpoint", &url, "--model", "m"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    let reqs = seen.lock().unwrap().clone();
    (stdout, reqs)
}

#[test]
fn chat_lets_the_model_rewrite_follow_ups() {
    let (stdout, reqs) = chat_with_endpoint(
        vec![
            sse(&["The budget was 1.8 million euros [1]."]),
            sse(&["Kenji Sato tender documents"]),
            sse(&["Kenji Sato prepares them [1]."]),
        ],
        "What was the Osaka warehouse budget?\nAnd who prepares them?\n",
    );
    assert!(stdout.contains("Kenji Sato prepares them"), "{stdout}");
    assert_eq!(reqs.len(), 3);
    assert!(reqs[1].contains("Rewrite the follow-up"), "{}", reqs[1]);
    // The answer call carries the earlier turn.
    assert!(reqs[2].contains("Earlier question: What was the Osaka warehouse budget?"));
}

#[test]
fn chat_asks_once_more_for_the_questions_language() {
    // The first answer comes in Chinese for a Japanese question.
    let (stdout, reqs) = chat_with_endpoint(
        vec![
            sse(&["大阪仓库扩建的预算已获批准 [1]。"]),
            sse(&["会議は大阪倉庫の拡張計画を承認しました [1]。"]),
        ],
        "大阪倉庫の拡張計画について何が決まりましたか？\n",
    );
    assert!(stdout.contains("承認しました"), "{stdout}");
    assert_eq!(reqs.len(), 2, "one retry");
}
