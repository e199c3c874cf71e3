//! Models through the binary: tokenizers, `embed`, `generate`, hybrid
//! search as embeddings arrive, `eval`, rerank, `models pull`.

use std::time::Duration;

use crate::util::Sandbox;
use crate::util::{json_of, tiny_bert, tiny_model};

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
    let texts = [
        "The Osaka warehouse moved to automated picking in August.",
        "本日の会議では予算案を承認した。",
    ];
    let embed = |dtype: &str| -> Vec<Vec<f32>> {
        let mut args = vec!["embed", "--embed-model", dir.to_str().unwrap()];
        args.extend(["--dtype", dtype]);
        args.extend(texts);
        sb.expect(&args, 0)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let vecs = embed("f32");
    assert_eq!(vecs.len(), 2);
    for (v, w) in vecs.iter().zip(want) {
        assert_eq!(v.len(), 384);
        for (a, b) in v.iter().zip(w) {
            assert!((a - b).abs() < 1e-4, "{:?} vs {w:?}", &v[..8]);
        }
    }
    // The default (`auto`: bf16 products where the CPU has AVX512-BF16)
    // and bf16 keep the direction of f32's vectors.
    for dtype in ["auto", "bf16"] {
        for (v, f) in embed(dtype).iter().zip(&vecs) {
            let cos: f32 = v.iter().zip(f).map(|(a, b)| a * b).sum();
            assert!(cos > 0.9999, "{dtype}: cosine {cos} with f32's vector");
        }
    }
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
                let req = crate::util::Request::read(&stream);
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
