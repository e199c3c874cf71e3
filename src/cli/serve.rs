//! `shirabe serve`: an OpenAI-compatible API over the index.
//!
//! `GET /v1/models` lists `shirabe` and the configured model;
//! `POST /v1/chat/completions` (streaming or not) answers model `shirabe`
//! with retrieval, packing, the configured backend (or an extractive
//! answer) and checked citations, the sources appended to the answer and
//! the details under a `shirabe` key; any other model name passes straight
//! to the configured backend. It listens on loopback unless told otherwise,
//! and then only with a bearer token. Requests are served one at a time
//! (the model is the bottleneck); a plain HTTP/1.1 loop on the standard
//! library is all it needs.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::AtomicBool;

use anyhow::{Context, Result};
use serde_json::{json, Value};

use shirabe::answer::{check, extractive, Backend};
use shirabe::index::ShirabeIndex;
use shirabe::ingest::tokens::TokenCounter;
use shirabe::prompt::{pack, SYSTEM_PROMPT};

use super::args::ServeArgs;
use super::{Settings, Status};

/// The model name that answers from the index.
const SHIRABE_MODEL: &str = "shirabe";

struct Server<'a> {
    s: &'a Settings,
    a: &'a ServeArgs,
    backend: Option<&'a dyn Backend>,
    backend_name: Option<String>,
    counter: &'a TokenCounter,
    window: usize,
}

pub fn run(s: &Settings, a: &ServeArgs) -> Result<Status> {
    let loopback = a.host == "127.0.0.1" || a.host == "localhost" || a.host == "::1";
    anyhow::ensure!(
        loopback || a.token.is_some(),
        "serving on {} (not loopback) needs --token (or SHIRABE_SERVE_TOKEN) for bearer auth",
        a.host
    );
    let index = ShirabeIndex::open(&s.index)?;
    let writer = super::ask::Writer::new(&index, &a.b)?;
    static NEVER: AtomicBool = AtomicBool::new(false);
    let boxed = writer.backend(&NEVER, a.b.temperature);
    let listener = TcpListener::bind((a.host.as_str(), a.port))
        .with_context(|| format!("binding {}:{}", a.host, a.port))?;
    let addr = listener.local_addr()?;
    println!("listening on http://{addr}/v1");
    std::io::stdout().flush()?;
    let server = Server {
        s,
        a,
        backend: boxed.as_deref(),
        backend_name: a.b.model.clone(),
        counter: &writer.counter,
        window: writer.window,
    };
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        if let Err(e) = server.handle(stream) {
            if !s.quiet {
                eprintln!("serve: {e:#}");
            }
        }
    }
    Ok(Status::Success)
}

struct Request {
    method: String,
    path: String,
    auth: Option<String>,
    body: Vec<u8>,
}

fn read_request(stream: &TcpStream) -> Result<Request> {
    let mut r = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    r.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let path = parts.next().unwrap_or_default().to_string();
    let (mut len, mut auth) = (0usize, None);
    loop {
        let mut h = String::new();
        if r.read_line(&mut h)? == 0 || h == "\r\n" || h == "\n" {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            match k.trim().to_ascii_lowercase().as_str() {
                "content-length" => len = v.trim().parse().unwrap_or(0),
                "authorization" => auth = Some(v.trim().to_string()),
                _ => {}
            }
        }
    }
    anyhow::ensure!(len <= 64 << 20, "request body too large");
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)?;
    Ok(Request {
        method,
        path,
        auth,
        body,
    })
}

fn respond(mut stream: &TcpStream, code: u16, content_type: &str, body: &str) -> Result<()> {
    let reason = match code {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        _ => "Internal Server Error",
    };
    write!(
        stream,
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()?;
    Ok(())
}

fn error_json(message: &str) -> String {
    json!({"error": {"message": message, "type": "invalid_request_error"}}).to_string()
}

impl Server<'_> {
    fn handle(&self, stream: TcpStream) -> Result<()> {
        let req = read_request(&stream)?;
        if let Some(token) = &self.a.token {
            if req.auth.as_deref() != Some(&format!("Bearer {token}")) {
                return respond(
                    &stream,
                    401,
                    "application/json",
                    &error_json("bad or missing bearer token"),
                );
            }
        }
        match (req.method.as_str(), req.path.trim_end_matches('/')) {
            ("GET", "/v1/models") => {
                let mut data =
                    vec![json!({"id": SHIRABE_MODEL, "object": "model", "owned_by": "shirabe"})];
                if let Some(m) = &self.backend_name {
                    data.push(json!({"id": m, "object": "model", "owned_by": "shirabe"}));
                }
                respond(
                    &stream,
                    200,
                    "application/json",
                    &json!({"object": "list", "data": data}).to_string(),
                )
            }
            ("POST", "/v1/chat/completions") => {
                let body: Value = match serde_json::from_slice(&req.body) {
                    Ok(v) => v,
                    Err(e) => {
                        return respond(
                            &stream,
                            400,
                            "application/json",
                            &error_json(&format!("bad JSON: {e}")),
                        )
                    }
                };
                match self.complete(&body) {
                    Ok((content, extra)) => self.send(&stream, &body, &content, extra),
                    Err(e) => respond(
                        &stream,
                        500,
                        "application/json",
                        &error_json(&format!("{e:#}")),
                    ),
                }
            }
            _ => respond(
                &stream,
                404,
                "application/json",
                &error_json("no such endpoint"),
            ),
        }
    }

    /// The answer text and, for model `shirabe`, the citation details.
    fn complete(&self, body: &Value) -> Result<(String, Value)> {
        let model = body["model"].as_str().unwrap_or(SHIRABE_MODEL);
        let messages = body["messages"].as_array().cloned().unwrap_or_default();
        let text_of = |role: &str| -> Vec<String> {
            messages
                .iter()
                .filter(|m| m["role"] == role)
                .filter_map(|m| m["content"].as_str().map(str::to_string))
                .collect()
        };
        let max_tokens = body["max_tokens"]
            .as_u64()
            .map_or(self.a.b.max_tokens, |n| n as usize);
        if model != SHIRABE_MODEL {
            let backend = self.backend.context(
                "no model is configured to pass this request to (start serve with --model)",
            )?;
            let system = text_of("system").join("\n");
            let user = text_of("user").last().cloned().unwrap_or_default();
            return Ok((backend.complete(&system, &user, max_tokens)?, Value::Null));
        }
        let question = text_of("user").last().cloned().context("no user message")?;
        let index = ShirabeIndex::open(&self.s.index)?;
        let (mode, dense_backend) = super::commands::search_backend(self.s, &index, None)?;
        let hits = super::commands::retrieve_passages(
            &index,
            mode,
            dense_backend.as_ref(),
            &question,
            self.a.passages,
            None,
        )?;
        let packed = pack(
            &hits,
            &question,
            self.counter,
            self.window.saturating_sub(max_tokens),
            &[],
        );
        let raw = match self.backend {
            Some(b) if !packed.passages.is_empty() => {
                b.complete(SYSTEM_PROMPT, &packed.user, max_tokens)?
            }
            _ => extractive(&question, &packed.passages, 5),
        };
        let checked = check(&raw, &packed.passages);
        let mut content = if checked.answer.trim().is_empty() {
            "The indexed documents do not seem to contain an answer to this question.".to_string()
        } else {
            checked.answer.clone()
        };
        let mut cited: Vec<usize> = checked.citations.iter().map(|c| c.n).collect();
        cited.sort();
        cited.dedup();
        if !cited.is_empty() {
            content.push_str("\n\nSources:\n");
            for n in &cited {
                let p = &packed.passages[n - 1];
                content.push_str(&format!("[{n}] {} — {}\n", p.title, p.pages()));
            }
        }
        let extra = json!({
            "citations": checked.citations,
            "invalid_citations": checked.invalid,
            "unsupported": checked.unsupported,
            "passages": packed.passages,
            "context_tokens": packed.tokens,
        });
        Ok((content, extra))
    }

    fn send(&self, stream: &TcpStream, body: &Value, content: &str, extra: Value) -> Result<()> {
        let model = body["model"].as_str().unwrap_or(SHIRABE_MODEL);
        let created = shirabe::ingest::now_secs();
        let id = format!("chatcmpl-{created}");
        if body["stream"].as_bool() == Some(true) {
            // The answer is checked before it is sent, so it arrives as one
            // chunk (then the finish chunk).
            let mut sse = String::new();
            for delta in [json!({"role": "assistant", "content": content}), json!({})] {
                let finish = if delta.as_object().is_some_and(|o| o.is_empty()) {
                    json!("stop")
                } else {
                    Value::Null
                };
                let chunk = json!({
                    "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
                });
                sse.push_str(&format!("data: {chunk}\n\n"));
            }
            sse.push_str("data: [DONE]\n\n");
            return respond(stream, 200, "text/event-stream", &sse);
        }
        let mut v = json!({
            "id": id, "object": "chat.completion", "created": created, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        });
        if !extra.is_null() {
            v["shirabe"] = extra;
        }
        respond(stream, 200, "application/json", &v.to_string())
    }
}
