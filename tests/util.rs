//! Helpers for the integration tests: temp dirs, running the binary,
//! the generated corpus.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A scratch directory with an index inside.
pub struct Sandbox {
    pub dir: tempfile::TempDir,
}

impl Sandbox {
    pub fn new() -> Sandbox {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("config.toml"), "# no settings\n").expect("config");
        Sandbox { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn index(&self) -> PathBuf {
        self.path().join("index")
    }

    /// The sample corpus, generated into this sandbox.
    pub fn corpus(&self) -> PathBuf {
        let dir = self.path().join("sample");
        shirabe::samples::write_sample_corpus(&dir).expect("sample corpus");
        dir
    }

    /// A command for the binary, run in the sandbox with its own index and
    /// no user config.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_shirabe"));
        c.current_dir(self.path())
            .env("SHIRABE_INDEX", self.index())
            .env("SHIRABE_CONFIG", self.path().join("config.toml"))
            .env_remove("HF_HOME")
            .env("HF_HUB_CACHE", self.path().join("no-hf-cache"))
            .env("HF_HUB_OFFLINE", "1")
            .env("XDG_CACHE_HOME", self.path().join("cache"))
            .env_remove("SHIRABE_KV_CACHE")
            .env("NO_COLOR", "1")
            .args(args);
        c
    }

    /// Runs and returns output, whatever the exit code.
    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("run shirabe")
    }

    /// Runs, expects exit code `code`, returns stdout.
    pub fn expect(&self, args: &[&str], code: i32) -> String {
        let out = self.run(args);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(
            out.status.code(),
            Some(code),
            "shirabe {args:?}\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
        );
        stdout
    }

    /// Search hits as JSON values.
    pub fn search_json(&self, query: &str, extra: &[&str]) -> Vec<serde_json::Value> {
        let mut args = vec!["search", query, "--json"];
        args.extend_from_slice(extra);
        let out = self.run(&args);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).expect("json line"))
            .collect()
    }
}

/// File name of a hit's path.
pub fn file_name(hit: &serde_json::Value) -> String {
    Path::new(hit["path"].as_str().unwrap_or_default())
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned()
}

/// One HTTP/1.1 request as the mock servers read it.
pub struct Request {
    /// `GET /path HTTP/1.1`.
    pub line: String,
    /// Header names (lowercase) and values.
    pub headers: Vec<(String, String)>,
    /// The body (by Content-Length).
    pub body: Vec<u8>,
}

impl Request {
    /// Reads a request from `stream`.
    pub fn read(stream: &std::net::TcpStream) -> Request {
        use std::io::{BufRead, BufReader, Read};
        let mut r = BufReader::new(stream);
        let mut line = String::new();
        let _ = r.read_line(&mut line);
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
        }
        let len = headers
            .iter()
            .find(|(k, _)| k == "content-length")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0u8; len];
        let _ = r.read_exact(&mut body);
        Request {
            line: line.trim_end().to_string(),
            headers,
            body,
        }
    }

    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A one-thread HTTP server answering each request with the next of
/// `replies` (status line + headers + body); returns its base URL and the
/// requests it saw.
pub fn mock_server(
    replies: Vec<String>,
) -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use std::io::Write;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for reply in replies {
            let Ok((stream, _)) = listener.accept() else {
                return;
            };
            let req = crate::util::Request::read(&stream);
            let head: String = req
                .headers
                .iter()
                .map(|(k, v)| format!("{k}: {v}\r\n"))
                .collect();
            log.lock().unwrap().push(format!(
                "{}\r\n{head}\n{}",
                req.line,
                String::from_utf8_lossy(&req.body)
            ));
            let mut s = stream;
            let _ = s.write_all(reply.as_bytes());
        }
    });
    (url, seen)
}

/// An OpenAI streaming reply of `pieces`, as a whole HTTP response.
pub fn sse(pieces: &[&str]) -> String {
    let mut body = String::new();
    for p in pieces {
        body.push_str(&format!(
            "data: {}\n\n",
            serde_json::json!({"choices": [{"delta": {"content": p}}]})
        ));
    }
    body.push_str("data: {\"choices\": [], \"usage\": {\"prompt_tokens\": 321, \"completion_tokens\": 9}}\n\ndata: [DONE]\n\n");
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// A tiny random-weight Qwen model directory `name` in the sandbox, with the
/// real Qwen3 tokenizer; `None` (saying which test is skipped) when
/// `corpora/fetch-qwen-tokenizer.sh` has not fetched it.
pub fn tiny_model(
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
pub fn tiny_bert(sb: &Sandbox) -> String {
    let dir = sb.path().join("tiny-bert");
    std::fs::create_dir_all(&dir).unwrap();
    shirabe::models::testing::write_tiny_bert(&dir, "mean");
    dir.to_str().unwrap().to_string()
}

/// The JSON document a command printed (pretty or on its last line).
pub fn json_of(out: &str) -> serde_json::Value {
    serde_json::from_str(out)
        .or_else(|_| serde_json::from_str(out.lines().last().unwrap_or_default()))
        .unwrap_or_else(|e| panic!("{e}: {out}"))
}
