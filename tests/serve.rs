//! `shirabe serve`: the OpenAI-compatible API, and a server that no
//! client can stall: slow or idle sockets, oversized bodies, bad tokens,
//! many clients at once, and a clean stop on SIGTERM.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::util::{mock_server, sse, Sandbox};

/// Starts `shirabe serve` with `extra` flags; returns the child and its
/// base URL.
pub fn start_serve(sb: &Sandbox, extra: &[&str]) -> (std::process::Child, String) {
    use std::io::BufRead;
    let mut args = vec!["serve", "--port", "0"];
    args.extend_from_slice(extra);
    let mut child = sb
        .cmd(&args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("{line:?}"))
        .to_string();
    (child, url)
}

/// A raw HTTP request; returns (status code, body).
pub fn http(url: &str, method: &str, path: &str, body: &str, auth: Option<&str>) -> (u16, String) {
    let host = url.trim_start_matches("http://").split('/').next().unwrap();
    let mut s = std::net::TcpStream::connect(host).unwrap();
    // A server that stalls fails the test instead of hanging it.
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let auth = auth.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\n{auth}Connection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let code = out.split_whitespace().nth(1).unwrap().parse().unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    (code, body)
}

/// The payload of a chunked HTTP/1.1 body.
fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).expect("a chunk size");
        if n == 0 {
            break;
        }
        out.push_str(&tail[..n]);
        rest = &tail[n + 2..];
    }
    out
}

#[test]
fn serve_answers_as_shirabe_and_passes_other_models_through() {
    let sb = Sandbox::new();
    let corpus = sb.corpus();
    sb.expect(&["ingest", corpus.to_str().unwrap(), "--no-embed"], 1);
    // No model: model "shirabe" answers extractively, with sources.
    let (mut plain, url) = start_serve(&sb, &[]);
    let (code, models) = http(&url, "GET", "/v1/models", "", None);
    assert_eq!(code, 200);
    assert!(models.contains("\"shirabe\""), "{models}");
    let q = r#"{"model": "shirabe", "messages": [{"role": "user", "content": "How much was the budget for the Osaka warehouse expansion?"}]}"#;
    let (code, body) = http(&url, "POST", "/v1/chat/completions", q, None);
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let content = v["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(
        content.contains("1.8 million euros") && content.contains("Sources:"),
        "{content}"
    );
    assert!(!v["shirabe"]["citations"].as_array().unwrap().is_empty());
    // Streaming: SSE chunks ending in [DONE].
    let qs = q.replace("\"messages\"", "\"stream\": true, \"messages\"");
    let (code, sse) = http(&url, "POST", "/v1/chat/completions", &qs, None);
    assert_eq!(code, 200);
    assert!(
        sse.contains("chat.completion.chunk") && sse.trim_end().ends_with("data: [DONE]"),
        "{sse}"
    );
    assert!(
        sse.contains("Sources:") && sse.contains("\"finish_reason\":\"stop\""),
        "{sse}"
    );
    // Another model with none configured: a clear error, not a hang.
    let (code, body) = http(
        &url,
        "POST",
        "/v1/chat/completions",
        &q.replace("\"shirabe\"", "\"other\""),
        None,
    );
    assert_eq!(code, 500);
    assert!(body.contains("no model is configured"), "{body}");
    let (code, _) = http(&url, "POST", "/v1/nothing", "{}", None);
    assert_eq!(code, 404);
    plain.kill().unwrap();
    plain.wait().unwrap();
    // A token is enforced.
    let (mut guarded, url) = start_serve(&sb, &["--token", "t0k"]);
    assert_eq!(http(&url, "GET", "/v1/models", "", None).0, 401);
    assert_eq!(http(&url, "GET", "/v1/models", "", Some("t0k")).0, 200);
    guarded.kill().unwrap();
    guarded.wait().unwrap();
    // Off loopback without a token: refused.
    let out = sb.run(&["serve", "--host", "0.0.0.0", "--port", "0"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--token"));
    // End to end through the OpenAI client: ask --endpoint talks to serve,
    // which runs a tiny local model.
    let cfg = shirabe::models::testing::tiny_config_with_vocab("qwen3", None, 151_936);
    let Some(model) =
        crate::util::tiny_model(&sb, "tiny-lm", &cfg, true, "the serve end-to-end test")
    else {
        return;
    };
    let m = model.to_str().unwrap();
    let (mut local, url) = start_serve(&sb, &["--model", m, "--max-tokens", "8"]);
    let v = crate::util::json_of(&sb.expect(
        &[
            "ask",
            "Osaka warehouse budget",
            "--endpoint",
            &url,
            "--model",
            "tiny",
            "--max-tokens",
            "8",
            "--json",
        ],
        0,
    ));
    assert!(v["backend"].as_str().unwrap().starts_with("tiny"), "{v}");
    assert!(!v["passages"].as_array().unwrap().is_empty());
    local.kill().unwrap();
    local.wait().unwrap();
}

/// A conversation sent to `/v1/chat/completions` is answered as `chat`
/// answers it: the follow-up rewritten into a standalone search, the
/// earlier turn in the prompt.
#[test]
fn serve_answers_follow_ups_with_the_conversation() {
    let sb = Sandbox::new();
    let corpus = sb.corpus();
    sb.expect(&["ingest", corpus.to_str().unwrap(), "--no-embed"], 1);
    let (endpoint, seen) = mock_server(vec![
        sse(&["Kenji Sato tender documents"]),
        sse(&["Kenji Sato prepares them [1]."]),
    ]);
    let (mut child, url) = start_serve(&sb, &["--endpoint", &endpoint, "--model", "m"]);
    let q = r#"{"model": "shirabe", "messages": [
        {"role": "user", "content": "What was the Osaka warehouse budget?"},
        {"role": "assistant", "content": "The budget was 1.8 million euros [1]."},
        {"role": "user", "content": "And who prepares them?"}]}"#;
    let (code, body) = http(&url, "POST", "/v1/chat/completions", q, None);
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let content = v["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(content.contains("Kenji Sato prepares them"), "{content}");
    let reqs = seen.lock().unwrap().clone();
    assert_eq!(reqs.len(), 2, "{reqs:?}");
    assert!(reqs[0].contains("Rewrite the follow-up"), "{}", reqs[0]);
    assert!(
        reqs[1].contains("Earlier question: What was the Osaka warehouse budget?"),
        "{}",
        reqs[1]
    );
}

/// The host:port of a base URL.
fn host_of(url: &str) -> String {
    url.trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap()
        .to_string()
}

/// Sends `raw` on a new connection and reads the reply's status code
/// (None if the server closed the connection without one).
fn raw_status(host: &str, raw: &[u8]) -> Option<u16> {
    let mut s = TcpStream::connect(host).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    s.write_all(raw).unwrap();
    let mut buf = [0u8; 512];
    let n = s.read(&mut buf).expect("a reply or a close, not a stall");
    String::from_utf8_lossy(&buf[..n])
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
}

#[test]
fn serve_is_not_stalled_by_slow_idle_or_oversized_clients() {
    let sb = Sandbox::new();
    let corpus = sb.corpus();
    sb.expect(&["ingest", corpus.to_str().unwrap(), "--no-embed"], 1);
    let (mut server, url) = start_serve(
        &sb,
        &[
            "--token",
            "t0k",
            "--read-timeout",
            "2",
            "--max-question",
            "200",
        ],
    );
    let host = host_of(&url);
    // Half-sent requests and idle connections hold sockets...
    let mut loris: Vec<TcpStream> = (0..2)
        .map(|_| {
            let mut s = TcpStream::connect(&host).unwrap();
            s.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")
                .unwrap();
            s
        })
        .collect();
    let _idle: Vec<TcpStream> = (0..2).map(|_| TcpStream::connect(&host).unwrap()).collect();
    // ...while everyone else is answered.
    for _ in 0..4 {
        assert_eq!(http(&url, "GET", "/v1/models", "", Some("t0k")).0, 200);
    }
    let q = r#"{"model": "shirabe", "messages": [{"role": "user", "content": "How much was the budget for the Osaka warehouse expansion?"}]}"#;
    let (code, body) = http(&url, "POST", "/v1/chat/completions", q, Some("t0k"));
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("1.8 million euros"), "{body}");
    // Search alone.
    let (code, body) = http(
        &url,
        "POST",
        "/v1/search",
        r#"{"query": "tender documents", "limit": 3}"#,
        Some("t0k"),
    );
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let hits = v["data"].as_array().unwrap();
    assert!(!hits.is_empty() && hits.len() <= 3, "{body}");
    // The slow ones are closed once the header timeout passes.
    for s in &mut loris {
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let mut rest = Vec::new();
        s.read_to_end(&mut rest)
            .expect("closed by the server, not left open");
    }
    // A bad token is refused before a claimed 100 GB body is read.
    let huge = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000000000\r\n\r\n{";
    assert_eq!(raw_status(&host, huge), Some(401));
    // With the token, the size alone is refused.
    let authed = String::from_utf8_lossy(huge)
        .replace("Host: x\r\n", "Host: x\r\nAuthorization: Bearer t0k\r\n");
    assert_eq!(raw_status(&host, authed.as_bytes()), Some(413));
    // A body that stops coming: 408 after the read timeout.
    let short = "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t0k\r\nContent-Length: 100\r\n\r\n{\"model\":";
    assert_eq!(raw_status(&host, short.as_bytes()), Some(408));
    // A question longer than --max-question.
    let long = format!(
        r#"{{"model": "shirabe", "messages": [{{"role": "user", "content": "{}"}}]}}"#,
        "budget ".repeat(100)
    );
    let (code, body) = http(&url, "POST", "/v1/chat/completions", &long, Some("t0k"));
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("at most 200"), "{body}");
    // Health needs no token.
    let (code, body) = http(&url, "GET", "/health", "", None);
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"status\":\"ok\""), "{body}");
    // SIGTERM: a clean stop.
    // SAFETY: sends a signal to the child this test started.
    assert_eq!(
        unsafe { libc::kill(server.id() as libc::pid_t, libc::SIGTERM) },
        0
    );
    let t0 = Instant::now();
    let status = server.wait().unwrap();
    assert!(status.success(), "{status:?} after {:?}", t0.elapsed());
}

#[test]
fn serve_sends_cors_headers_only_when_asked() {
    let sb = Sandbox::new();
    let corpus = sb.corpus();
    sb.expect(&["ingest", corpus.to_str().unwrap(), "--no-embed"], 1);
    let preflight = |host: &str| {
        let mut s = TcpStream::connect(host).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        s.write_all(b"OPTIONS /v1/chat/completions HTTP/1.1\r\nHost: x\r\nOrigin: http://app.example\r\nAccess-Control-Request-Method: POST\r\nConnection: close\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out.to_ascii_lowercase()
    };
    let (mut off, url) = start_serve(&sb, &[]);
    assert!(!preflight(&host_of(&url)).contains("access-control-allow-origin"));
    off.kill().unwrap();
    off.wait().unwrap();
    let (mut on, url) = start_serve(&sb, &["--cors", "http://app.example"]);
    let reply = preflight(&host_of(&url));
    assert!(reply.starts_with("http/1.1 204"), "{reply}");
    assert!(
        reply.contains("access-control-allow-origin: http://app.example"),
        "{reply}"
    );
    on.kill().unwrap();
    on.wait().unwrap();
}

/// The sample ingested with a tiny BERT's vectors, and that model.
fn embedded_sample() -> (Sandbox, String) {
    let sb = Sandbox::new();
    let corpus = sb.corpus();
    let model = crate::util::tiny_bert(&sb);
    sb.expect(
        &["ingest", corpus.to_str().unwrap(), "--embed-model", &model],
        1,
    );
    (sb, model)
}

#[test]
fn serve_embeds_with_the_index_model_as_embed_does() {
    let (sb, model) = embedded_sample();
    let (mut server, url) = start_serve(&sb, &[]);
    let (code, body) = http(
        &url,
        "POST",
        "/v1/embeddings",
        r#"{"input": ["Osaka warehouse budget", "tender documents"]}"#,
        None,
    );
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let data = v["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    let served: Vec<f64> = data[0]["embedding"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    // The same vector `shirabe embed` computes in process.
    let local = sb.expect(
        &["embed", "--embed-model", &model, "Osaka warehouse budget"],
        0,
    );
    let local: Vec<f64> = serde_json::from_str(local.lines().next().unwrap()).unwrap();
    assert_eq!(served.len(), local.len());
    for (a, b) in served.iter().zip(&local) {
        assert!((a - b).abs() < 1e-5, "{a} vs {b}");
    }
    // Token ids and empty lists are refused with a reason.
    let (code, body) = http(
        &url,
        "POST",
        "/v1/embeddings",
        r#"{"input": [[1, 2]]}"#,
        None,
    );
    assert_eq!(code, 400, "{body}");
    let (code, _) = http(&url, "POST", "/v1/embeddings", r#"{"input": []}"#, None);
    assert_eq!(code, 400);
    server.kill().unwrap();
    server.wait().unwrap();
}

#[test]
fn ingest_embeds_through_another_serve() {
    // One index embedded in process, served...
    let (sb, _) = embedded_sample();
    let (mut server, url) = start_serve(&sb, &[]);
    // ...embeds for a second index, whose searches embed through it too.
    let other = Sandbox::new();
    let corpus2 = other.corpus();
    other.expect(
        &["ingest", corpus2.to_str().unwrap(), "--embed-model", &url],
        1,
    );
    let status = other.expect(&["status", "--json"], 0);
    assert!(status.contains("tiny-bert"), "{status}");
    let q = "Osaka warehouse budget";
    let names = |sb: &Sandbox| -> Vec<String> {
        sb.search_json(q, &["--mode", "dense"])
            .iter()
            .map(crate::util::file_name)
            .collect()
    };
    let (here, there) = (names(&sb), names(&other));
    assert!(!here.is_empty());
    assert_eq!(here, there);
    // A server that is gone: a clear error after the retries.
    server.kill().unwrap();
    server.wait().unwrap();
    let out = other.run(&["search", q, "--mode", "dense"]);
    assert_ne!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/embeddings"), "{err}");
}
