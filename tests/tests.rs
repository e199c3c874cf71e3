//! Integration tests: run the `shirabe` binary on the generated corpus,
//! one module per topic; here, the committed sample and the developer
//! benchmark.

mod answers;
mod ask;
mod doctor;
mod extract;
mod fuzz;
mod ingest;
mod models;
mod ocr;
mod qdrant;
mod real_models;
mod serve;
mod tui;
mod util;
mod watch;

use util::Sandbox;

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
