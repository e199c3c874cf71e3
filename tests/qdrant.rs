//! Qdrant through the binary: the index mirrored into a collection
//! (chunks, BM25 terms, vectors), searched there with no local index, and
//! a cluster that loses a node while ingesting and while searching.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use shirabe::index::qdrant::{live_points, QdrantConfig, QdrantIndex};

use crate::util::{file_name, json_of, tiny_bert, Sandbox};

/// The single test server's gRPC URL (`.ci/run` starts one).
fn server_url() -> String {
    std::env::var("QDRANT_URL").unwrap_or_else(|_| {
        panic!("QDRANT_URL is not set: start a Qdrant server (../shared/qdrant/run-qdrant.sh start DIR, as .ci/run does) and export its gRPC URL")
    })
}

/// A collection name no other run uses.
fn unique(what: &str) -> String {
    format!(
        "shirabe-test-{what}-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

#[test]
fn qdrant_mirrors_the_index_and_matches_the_embedded_store() {
    let url = server_url();
    let sb = Sandbox::new();
    let corpus = sb.corpus();
    let c = corpus.to_str().unwrap();
    let model = tiny_bert(&sb);
    let collection = unique("mirror");
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
    let cfg = QdrantConfig::new(url.clone(), collection.clone());
    let q = QdrantIndex::open_existing(&cfg).unwrap();
    assert_eq!(q.count().unwrap(), chunks - 1);
    q.drop_collection().unwrap();
}

#[test]
fn a_collection_alone_serves_search_ask_and_eval() {
    let url = server_url();
    let sb = Sandbox::new();
    let corpus = sb.corpus();
    let model = tiny_bert(&sb);
    let collection = unique("alone");
    let q = [
        "--qdrant",
        url.as_str(),
        "--qdrant-collection",
        collection.as_str(),
    ];
    let mut args = vec![
        "ingest",
        corpus.to_str().unwrap(),
        "--embed-model",
        &model,
        "--json",
    ];
    args.extend_from_slice(&q);
    let out = json_of(&sb.expect(&args, 1));
    let chunks = out["qdrant"]["upserted"].as_u64().unwrap();
    assert!(chunks >= 5, "{out}");
    assert_eq!(
        out["qdrant"]["without_vectors"].as_u64().unwrap(),
        0,
        "{out}"
    );
    // BM25 through the local index, for comparison.
    let local = sb.search_json("Osaka warehouse budget", &["--mode", "bm25", "-k", "3"]);

    // Another machine: no index, only the collection.
    let remote = Sandbox::new();
    let search = |query: &str, extra: &[&str]| -> Vec<serde_json::Value> {
        let mut args = vec!["search", query, "--json"];
        args.extend_from_slice(&q);
        args.extend_from_slice(extra);
        remote
            .expect(&args, 0)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let bm25 = search("Osaka warehouse budget", &["--mode", "bm25", "-k", "3"]);
    let names = |h: &[serde_json::Value]| h.iter().map(file_name).collect::<Vec<_>>();
    assert_eq!(
        names(&bm25),
        names(&local),
        "Qdrant's BM25 ranks as tantivy's"
    );
    assert!(bm25[0]["text"].as_str().unwrap().contains("Osaka"));
    let hybrid = search("Osaka warehouse budget", &["-k", "3"]);
    assert!(hybrid.iter().all(|h| h["mode"] == "hybrid"), "{hybrid:?}");
    let dense = search("Osaka warehouse budget", &["--mode", "dense", "-k", "3"]);
    assert_eq!(dense.len(), 3);
    // Filters and phrases.
    let minutes = search("budget", &["--doc", "*minutes*", "--mode", "bm25"]);
    assert!(!minutes.is_empty() && minutes.iter().all(|h| file_name(h).contains("minutes")));
    let phrase = search("\"automated picking\"", &["--mode", "bm25"]);
    assert!(!phrase.is_empty());
    assert!(phrase
        .iter()
        .all(|h| h["text"].as_str().unwrap().contains("automated picking")));
    // A citation with its page, from the payload.
    let mut args = vec![
        "ask",
        "What budget did the board approve for the Osaka warehouse?",
        "--json",
    ];
    args.extend_from_slice(&q);
    let answer = json_of(&remote.expect(&args, 0));
    let cites = answer["citations"].as_array().unwrap();
    let path_of = |c: &serde_json::Value| {
        let n = c["n"].as_u64().unwrap() as usize;
        answer["passages"][n - 1]["path"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert!(
        cites
            .iter()
            .any(|c| path_of(c).ends_with("meeting-minutes.pdf") && c["page"] == 1),
        "{answer}"
    );
    // Recall through the collection equals the local index's.
    let queries =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("corpora/queries/sample.jsonl");
    let eval = |sb: &Sandbox, extra: &[&str]| -> serde_json::Value {
        let mut args = vec![
            "eval",
            queries.to_str().unwrap(),
            "--json",
            "--modes",
            "bm25",
        ];
        args.extend_from_slice(extra);
        json_of(&sb.expect(&args, 0))
    };
    let there = eval(&remote, &q);
    sb.expect(&["migrate", "--to", "embedded"], 0);
    let here = eval(&sb, &[]);
    let recall = |v: &serde_json::Value| {
        v.as_array()?.iter().find(|r| r["group"] == "all")?["recall_10"].as_f64()
    };
    assert!(recall(&there).is_some(), "{there}");
    assert!(
        (recall(&there).unwrap() - recall(&here).unwrap()).abs() <= 0.01,
        "{there} vs {here}"
    );
    // Without a collection name there is nothing to search.
    let out = remote.run(&["search", "budget", "--qdrant", url.as_str()]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--qdrant-collection"));
    QdrantIndex::open_existing(&QdrantConfig::new(url, collection))
        .unwrap()
        .drop_collection()
        .unwrap();
}

/// A Qdrant cluster on loopback, stopped when dropped.
struct Cluster {
    script: PathBuf,
    dir: tempfile::TempDir,
    env: Vec<(String, String)>,
}

/// Where `run-qdrant.sh` is: `SHIRABE_QDRANT_SCRIPT`, or the shared
/// fixture beside the clone.
fn qdrant_script() -> PathBuf {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let candidates = [
        std::env::var_os("SHIRABE_QDRANT_SCRIPT").map(PathBuf::from),
        Some(root.join("../shared/qdrant/run-qdrant.sh")),
        Some(PathBuf::from("/work/shared/qdrant/run-qdrant.sh")),
    ];
    candidates
        .into_iter()
        .flatten()
        .find(|p| p.exists())
        .unwrap_or_else(|| {
            panic!("no run-qdrant.sh: set SHIRABE_QDRANT_SCRIPT to the Qdrant fixture's script (../shared/qdrant)")
        })
}

impl Cluster {
    fn start(nodes: usize, base: u16) -> Cluster {
        let script = qdrant_script();
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new(&script)
            .args(["cluster", &nodes.to_string()])
            .arg(dir.path())
            .env("QDRANT_CLUSTER_BASE", base.to_string())
            .output()
            .unwrap();
        assert!(out.status.success(), "cluster: {out:?}");
        let env = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Cluster { script, dir, env }
    }

    fn var(&self, k: &str) -> String {
        self.env.iter().find(|(n, _)| n == k).unwrap().1.clone()
    }

    /// Kills node `k` outright (SIGKILL).
    fn kill(&self, k: usize) {
        let pid_file = PathBuf::from(self.var(&format!("QDRANT_NODE{k}_DIR"))).join("qdrant.pid");
        let pid = std::fs::read_to_string(&pid_file).unwrap();
        let st = Command::new("kill")
            .args(["-9", pid.trim()])
            .status()
            .unwrap();
        assert!(st.success());
        std::fs::remove_file(pid_file).unwrap();
    }

    fn rejoin(&self, k: usize) {
        let out = Command::new(&self.script)
            .arg("rejoin")
            .arg(self.dir.path())
            .arg(k.to_string())
            .output()
            .unwrap();
        assert!(out.status.success(), "rejoin: {out:?}");
    }

    /// Waits until every replica of `collection` is active again.
    fn wait_healthy(&self, collection: &str) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let mut healthy = true;
            for k in 1..=3 {
                let url = format!(
                    "{}/collections/{collection}/cluster",
                    self.var(&format!("QDRANT_NODE{k}_REST_URL"))
                );
                let out = Command::new("curl").args(["-fsS", &url]).output().unwrap();
                let body = String::from_utf8_lossy(&out.stdout);
                let states = ["Dead", "Partial", "Initializing", "Listener", "Recovery"];
                if !out.status.success() || states.iter().any(|s| body.contains(s)) {
                    healthy = false;
                }
            }
            if healthy {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "replicas of {collection} did not recover"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new(&self.script)
            .arg("cluster-stop")
            .arg(self.dir.path())
            .output();
    }
}

#[test]
fn a_cluster_loses_a_node_while_ingesting_and_searching_and_nothing_is_lost() {
    let cluster = Cluster::start(3, 17333);
    let urls = (1..=3)
        .map(|k| cluster.var(&format!("QDRANT_NODE{k}_URL")))
        .collect::<Vec<_>>()
        .join(",");
    let sb = Sandbox::new();
    // Enough chunks that writes reach every shard: the sample and 120 notes.
    let corpus = sb.corpus();
    for i in 0..120 {
        std::fs::write(
            corpus.join(format!("note-{i:03}.md")),
            format!("# Note {i}\n\nShipment {i} left the Osaka warehouse on day {i}; crate {} held spare parts.\n", i * 7),
        )
        .unwrap();
    }
    let collection = unique("cluster");
    let q = [
        "--qdrant",
        urls.as_str(),
        "--qdrant-collection",
        collection.as_str(),
        "--qdrant-shards",
        "3",
        "--qdrant-replication",
        "2",
    ];
    // Node 3 goes down as the ingest starts; the writes go on.
    let mut args = vec!["ingest", corpus.to_str().unwrap(), "--no-embed", "--json"];
    args.extend_from_slice(&q);
    let child = sb
        .cmd(&args)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    cluster.kill(3);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}"); // damaged.pdf
    let report = json_of(&String::from_utf8_lossy(&out.stdout));
    let chunks = report["qdrant"]["upserted"].as_u64().unwrap();
    assert!(chunks > 120, "{report}");
    // Searching with node 3 down.
    let search = |sb: &Sandbox| {
        let mut args = vec![
            "search",
            "crate 637 spare parts",
            "--mode",
            "bm25",
            "--json",
            "-k",
            "3",
        ];
        args.extend_from_slice(&q[..4]);
        let hits: Vec<serde_json::Value> = sb
            .expect(&args, 0)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(file_name(&hits[0]), "note-091.md", "{hits:?}");
    };
    let remote = Sandbox::new();
    search(&remote);
    cluster.rejoin(3);
    cluster.wait_healthy(&collection);
    // Node 1, the first URL, goes down while searching: the next answers.
    cluster.kill(1);
    search(&remote);
    search(&sb);
    cluster.rejoin(1);
    cluster.wait_healthy(&collection);
    // Every node holds every point, with the index's content.
    let index = shirabe::index::ShirabeIndex::open(&sb.index()).unwrap();
    let want = live_points(&index).unwrap();
    assert_eq!(want.len() as u64, chunks);
    for k in 1..=3 {
        let cfg = QdrantConfig::new(
            cluster.var(&format!("QDRANT_NODE{k}_URL")),
            collection.clone(),
        );
        let node = QdrantIndex::open_existing(&cfg).unwrap();
        assert_eq!(node.count().unwrap(), chunks, "node {k}");
        assert_eq!(node.content_hashes().unwrap(), want, "node {k}");
    }
}
