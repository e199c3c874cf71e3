//! `shirabe serve`: an OpenAI-compatible API over the index.
//!
//! `GET /v1/models` lists `shirabe` and the configured model;
//! `POST /v1/chat/completions` (streaming or not) answers model `shirabe`
//! with retrieval, packing, the configured backend (or an extractive
//! answer) and checked citations, the sources appended to the answer and
//! the details under a `shirabe` key; any other model name passes straight
//! to the configured backend. A streamed reply sends the text as the model
//! writes it, then the sources (and any citations removed) in a last chunk. It listens on loopback unless told otherwise,
//! and then only with a bearer token. Requests are served one at a time
//! (the model is the bottleneck); a plain HTTP/1.1 loop on the standard
//! library is all it needs.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::AtomicBool;

use anyhow::{Context, Result};
use serde_json::{json, Value};

use shirabe::answer::{AnswerHooks, Answerer, Backend, Question};
use shirabe::index::ShirabeIndex;
use shirabe::retrieve::Retriever;

use super::args::ServeArgs;
use super::{Settings, Status};

/// The model name that answers from the index.
const SHIRABE_MODEL: &str = "shirabe";

struct Server<'a> {
    a: &'a ServeArgs,
    index: &'a ShirabeIndex,
    retriever: &'a Retriever,
    answerer: &'a Answerer,
    backend: Option<&'a dyn Backend>,
    backend_name: Option<String>,
}

pub fn run(s: &Settings, a: &ServeArgs) -> Result<Status> {
    let loopback = a.host == "127.0.0.1" || a.host == "localhost" || a.host == "::1";
    anyhow::ensure!(
        loopback || a.token.is_some(),
        "serving on {} (not loopback) needs --token (or SHIRABE_SERVE_TOKEN) for bearer auth",
        a.host
    );
    let index = ShirabeIndex::open(&s.index)?;
    let mut writer = super::ask::answerer(index.manifest.as_ref(), &a.b)?;
    super::ask::fit_window(&mut writer, !s.quiet)?;
    static NEVER: AtomicBool = AtomicBool::new(false);
    let boxed = writer.backend(&NEVER);
    let listener = TcpListener::bind((a.host.as_str(), a.port))
        .with_context(|| format!("binding {}:{}", a.host, a.port))?;
    let addr = listener.local_addr()?;
    println!("listening on http://{addr}/v1");
    std::io::stdout().flush()?;
    // The query embedder and vector store are loaded once, not per request
    // (BM25 sees new commits anyway; restart to see new vectors).
    let retriever = super::search::retriever(s, &index, None)?;
    let server = Server {
        a,
        index: &index,
        retriever: &retriever,
        answerer: &writer,
        backend: boxed.as_deref(),
        backend_name: a.b.model.clone(),
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

/// A finished answer.
struct Reply {
    /// The whole text (citations checked, sources appended).
    content: String,
    /// What a stream sends after the generated text.
    appendix: String,
    /// Citation details (model `shirabe`).
    extra: Value,
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
                if body["stream"].as_bool() == Some(true) {
                    return self.stream_reply(&stream, &body);
                }
                match self.complete(&body, &mut |_| {}) {
                    Ok(r) => self.send(&stream, &body, &r.content, r.extra),
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

    /// The answer; generated text goes to `sink` as it comes.
    fn complete(&self, body: &Value, sink: &mut dyn FnMut(&str)) -> Result<Reply> {
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
            let text = backend.stream(&system, &user, max_tokens, sink)?;
            return Ok(Reply {
                content: text,
                appendix: String::new(),
                extra: Value::Null,
            });
        }
        let question = text_of("user").last().cloned().context("no user message")?;
        let hits = self
            .retriever
            .retrieve(self.index, &question, self.a.passages, None)?;
        let embed = self.retriever.check_embedder();
        static NEVER: AtomicBool = AtomicBool::new(false);
        let rarity = shirabe::retrieve::term_rarity(self.index, &question)?;
        let r = self.answerer.answer(
            &Question {
                text: &question,
                hits: &hits,
                embed: embed.as_deref(),
                cancel: &NEVER,
                max_tokens: Some(max_tokens),
                rarity: Some(&rarity),
                written: None,
            },
            &AnswerHooks::silent(),
            sink,
        )?;
        let (checked, packed) = (&r.checked, &r.packed);
        if r.replaced.is_some() {
            // After the model's streamed text.
            sink("\n\n(no sentence of the model's answer was supported; the passages' own sentences:)\n");
        }
        if r.extractive {
            sink(if checked.answer.trim().is_empty() {
                shirabe::answer::NO_ANSWER
            } else {
                checked.answer.as_str()
            });
        }
        let mut content = if checked.answer.trim().is_empty() {
            shirabe::answer::NO_ANSWER.to_string()
        } else {
            checked.answer.clone()
        };
        // What follows the streamed text: notes on removed citations, and
        // the sources.
        let mut appendix = String::new();
        if !checked.invalid.is_empty() {
            appendix.push_str(&format!(
                "\n\n(removed citations to passages that do not exist: {})",
                checked
                    .invalid
                    .iter()
                    .map(|n| format!("[{n}]"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        let mut cited: Vec<usize> = checked.citations.iter().map(|c| c.n).collect();
        cited.sort();
        cited.dedup();
        let mut sources = String::new();
        if !cited.is_empty() {
            sources.push_str("\n\nSources:\n");
            for n in &cited {
                let p = &packed.passages[n - 1];
                sources.push_str(&format!("[{n}] {} — {}\n", p.title, p.pages()));
            }
        }
        content.push_str(&sources);
        appendix.push_str(&sources);
        let extra = json!({
            "citations": checked.citations,
            "invalid_citations": checked.invalid,
            "unverified_citations": checked.unverified,
            "unsupported": checked.unsupported,
            "passages": packed.passages,
            "context_tokens": packed.tokens,
        });
        Ok(Reply {
            content,
            appendix,
            extra,
        })
    }

    /// A streamed reply: text as the model writes it, then the appendix
    /// (sources, removed citations), the finish chunk and `[DONE]`.
    fn stream_reply(&self, stream: &TcpStream, body: &Value) -> Result<()> {
        let model = body["model"].as_str().unwrap_or(SHIRABE_MODEL).to_string();
        let created = shirabe::ingest::now_secs();
        let id = format!("chatcmpl-{created}");
        let mut w = stream;
        write!(
            w,
            "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nConnection: close\r\n\r\n"
        )?;
        let chunk = |delta: Value, finish: Value| {
            let c = json!({
                "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            });
            format!("data: {c}\n\n")
        };
        let mut first = true;
        let mut failed = false;
        let mut sink = |piece: &str| {
            let delta = if first {
                json!({"role": "assistant", "content": piece})
            } else {
                json!({"content": piece})
            };
            first = false;
            if !failed
                && w.write_all(chunk(delta, Value::Null).as_bytes())
                    .and_then(|_| w.flush())
                    .is_err()
            {
                failed = true;
            }
        };
        match self.complete(body, &mut sink) {
            Ok(r) => {
                if !r.appendix.is_empty() {
                    sink(&r.appendix);
                }
                w.write_all(chunk(json!({}), json!("stop")).as_bytes())?;
            }
            Err(e) => {
                w.write_all(format!("data: {}\n\n", error_json(&format!("{e:#}"))).as_bytes())?;
            }
        }
        w.write_all(b"data: [DONE]\n\n")?;
        w.flush()?;
        Ok(())
    }

    fn send(&self, stream: &TcpStream, body: &Value, content: &str, extra: Value) -> Result<()> {
        let model = body["model"].as_str().unwrap_or(SHIRABE_MODEL);
        let created = shirabe::ingest::now_secs();
        let id = format!("chatcmpl-{created}");
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
