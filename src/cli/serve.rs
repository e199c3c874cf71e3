//! `shirabe serve`: an OpenAI-compatible API over the index, on hyper and
//! axum.
//!
//! - `GET /health`: liveness and load (no token needed).
//! - `GET /v1/models`: `shirabe` and the configured model.
//! - `POST /v1/chat/completions` (streaming or not): model `shirabe`
//!   answers with retrieval, packing, the configured backend (or an
//!   extractive answer) and checked citations, the sources appended to the
//!   answer and the details under a `shirabe` key; any other model name
//!   passes straight to the configured backend. A streamed reply sends the
//!   text as the model writes it, then the sources in a last chunk.
//! - `POST /v1/search`: `{"query": ..., "limit": N}`, the ranked passages.
//! - `POST /v1/embeddings`: the index's embedding model, OpenAI-style
//!   (`"input_type": "query"` for queries), one batch at a time.
//!
//! Every connection is a task of its own, so a slow or idle client holds
//! only its own socket: headers and bodies must arrive within
//! `--read-timeout`, bodies are capped at `--max-body` (a `Content-Length`
//! over it is refused before a byte is read), and the bearer token is
//! checked before any body is read. Answers run on a bounded pool of
//! `--workers` (the model is the bottleneck) with at most `--queue`
//! waiting; searches run beside them. Ctrl-C or SIGTERM stops accepting
//! and lets the answers in flight finish (`--grace`). It listens on
//! loopback unless told otherwise, and then only with a token.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Value};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use shirabe::answer::{conversation, AnswerHooks, Answerer, Question};
use shirabe::index::ShirabeIndex;
use shirabe::retrieve::Live;

use super::args::ServeArgs;
use super::{Settings, Status};

/// The model name that answers from the index.
const SHIRABE_MODEL: &str = "shirabe";
/// Messages one request may carry.
const MAX_MESSAGES: usize = 256;
/// Earlier turns of a conversation a request's answer may read.
const MAX_TURNS: usize = 4;
/// Characters kept of each side of an earlier turn.
const MAX_TURN_CHARS: usize = 4000;
/// Passages one search may ask for.
const MAX_SEARCH_LIMIT: usize = 100;
/// Searches run at once (beside the answers).
const SEARCH_WORKERS: usize = 8;
/// Texts one embeddings request may carry.
const MAX_EMBED_INPUTS: usize = 2048;

/// What every request handler shares.
struct Shared {
    /// The index and its retriever, reloaded when a writer commits.
    live: Live,
    answerer: Answerer,
    backend_name: Option<String>,
    token: Option<String>,
    passages: usize,
    max_answer_tokens: usize,
    max_body: usize,
    max_question: usize,
    read_timeout: Duration,
    cors: Option<String>,
    answers: Arc<Semaphore>,
    searches: Arc<Semaphore>,
    /// One embedding batch at a time (it takes every core).
    embeds: Arc<Semaphore>,
    queue: usize,
    queued: AtomicUsize,
    in_flight: AtomicUsize,
}

pub fn run(s: &Settings, a: &ServeArgs) -> Result<Status> {
    let loopback = a.host == "127.0.0.1" || a.host == "localhost" || a.host == "::1";
    anyhow::ensure!(
        loopback || a.token.is_some(),
        "serving on {} (not loopback) needs --token (or SHIRABE_SERVE_TOKEN) for bearer auth",
        a.host
    );
    let index = ShirabeIndex::open(&s.index)?;
    let mut answerer = super::ask::answerer(index.manifest.as_ref(), &a.backend)?;
    super::ask::fit_window(&mut answerer, !s.quiet)?;
    // The query embedder is loaded once; a commit (a watcher's, an
    // ingest's) brings new chunks and vectors without a restart.
    let live = super::search::live(s, index)?;
    // A local model has the CPU to itself; extractive answers (sentence
    // scoring, embeddings) are CPU-bound too, one per core; an endpoint's
    // answers wait on the network.
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let workers = a
        .workers
        .unwrap_or(match (&answerer.generator, &answerer.endpoint) {
            (Some(_), _) => 1,
            (None, Some(_)) => 4,
            (None, None) => cores,
        })
        .max(1);
    let shared = Arc::new(Shared {
        live,
        backend_name: a.backend.model.clone(),
        answerer,
        token: a.token.clone(),
        passages: a.passages,
        max_answer_tokens: a.backend.max_answer_tokens,
        max_body: a.max_body,
        max_question: a.max_question,
        read_timeout: Duration::from_secs(a.read_timeout.max(1)),
        cors: a.cors.clone(),
        answers: Arc::new(Semaphore::new(workers)),
        searches: Arc::new(Semaphore::new(SEARCH_WORKERS)),
        embeds: Arc::new(Semaphore::new(1)),
        queue: a.queue,
        queued: AtomicUsize::new(0),
        in_flight: AtomicUsize::new(0),
    });
    let listener = std::net::TcpListener::bind((a.host.as_str(), a.port))
        .with_context(|| format!("binding {}:{}", a.host, a.port))?;
    listener.set_nonblocking(true)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the server's runtime")?;
    let limits = (
        a.max_connections.max(1),
        Duration::from_secs(a.grace),
        shared.read_timeout,
    );
    rt.block_on(serve(listener, shared, limits, s.quiet))?;
    Ok(Status::Success)
}

/// Accepts connections until Ctrl-C or SIGTERM, then lets the answers in
/// flight finish.
async fn serve(
    listener: std::net::TcpListener,
    shared: Arc<Shared>,
    (max_connections, grace, read_timeout): (usize, Duration, Duration),
    quiet: bool,
) -> Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use std::io::Write;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let addr = listener.local_addr()?;
    println!("listening on http://{addr}/v1");
    std::io::stdout().flush()?;
    let app = router(shared.clone());
    let connections = Arc::new(Semaphore::new(max_connections));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut stop = std::pin::pin!(shutdown_signal());
    loop {
        let (stream, _) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                // Out of descriptors and the like: wait, do not spin.
                Err(e) => {
                    if !quiet {
                        eprintln!("serve: accepting a connection: {e}");
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut stop => break,
        };
        // Over the cap the connection is closed at once.
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(read_timeout)
            .keep_alive(true)
            .serve_connection(TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            // A client that goes away mid-request is its own business.
            let _ = conn.await;
            drop(permit);
        });
    }
    drop(listener);
    let busy = shared.in_flight.load(Ordering::SeqCst);
    if !quiet {
        eprintln!(
            "serve: stopping; {busy} answer(s) in flight may finish (up to {} s)",
            grace.as_secs()
        );
    }
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(grace) => {
            if !quiet {
                eprintln!("serve: gave up waiting for the answers in flight");
            }
        }
    }
    Ok(())
}

/// Resolves on Ctrl-C or (on Unix) SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/v1/models", get(models))
        .route("/v1/chat/completions", post(chat))
        .route("/v1/search", post(search))
        .route("/v1/embeddings", post(embeddings))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such endpoint") })
        .layer(middleware::from_fn_with_state(shared.clone(), guard))
        .layer(middleware::from_fn_with_state(shared.clone(), cors))
        .with_state(shared)
}

/// An error as OpenAI clients expect it.
struct ApiError {
    status: StatusCode,
    message: String,
    retry_after: Option<u64>,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            retry_after: None,
        }
    }

    fn bad(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let kind = match self.status.as_u16() {
            401 => "authentication_error",
            429 | 503 => "server_busy",
            500 => "server_error",
            _ => "invalid_request_error",
        };
        let body = json!({"error": {"message": self.message, "type": kind}}).to_string();
        let mut r = (
            self.status,
            [(header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response();
        if let Some(s) = self.retry_after {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        r
    }
}

fn json_response(v: &Value) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        v.to_string(),
    )
        .into_response()
}

/// The bearer token, checked before a handler reads any body.
async fn guard(State(s): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    if let Some(token) = &s.token {
        let public = req.uri().path() == "/health" || req.method() == Method::OPTIONS;
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if !public && !same(given.as_bytes(), token.as_bytes()) {
            return ApiError::new(StatusCode::UNAUTHORIZED, "bad or missing bearer token")
                .into_response();
        }
    }
    next.run(req).await
}

/// Compares secrets in time that does not depend on where they differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

/// CORS headers for the one origin `--cors` allows (none without it).
async fn cors(State(s): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    let Some(allowed) = &s.cors else {
        return next.run(req).await;
    };
    let origin = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let ok = origin
        .as_deref()
        .is_some_and(|o| allowed == "*" || o == allowed);
    let preflight = req.method() == Method::OPTIONS;
    let mut r = if preflight {
        StatusCode::NO_CONTENT.into_response()
    } else {
        next.run(req).await
    };
    if let (true, Some(o)) = (ok, origin) {
        let h = r.headers_mut();
        if let Ok(v) = HeaderValue::from_str(if allowed == "*" { "*" } else { &o }) {
            h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
        }
        h.insert(header::VARY, HeaderValue::from_static("Origin"));
        if preflight {
            h.insert(
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static("GET, POST, OPTIONS"),
            );
            h.insert(
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                HeaderValue::from_static("authorization, content-type"),
            );
        }
    }
    r
}

/// The JSON body, within the size and time limits.
async fn read_json(s: &Shared, headers: &HeaderMap, body: Body) -> Result<Value, ApiError> {
    let too_big = |what: String| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("{what}; at most {} bytes are accepted", s.max_body),
        )
    };
    let claimed = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if let Some(n) = claimed.filter(|&n| n > s.max_body as u64) {
        return Err(too_big(format!("the body is {n} bytes")));
    }
    let bytes =
        match tokio::time::timeout(s.read_timeout, axum::body::to_bytes(body, s.max_body)).await {
            Err(_) => {
                return Err(ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    format!(
                        "the body did not arrive within {} s",
                        s.read_timeout.as_secs()
                    ),
                ))
            }
            Ok(Err(e)) if format!("{e:#}").contains("length limit") => {
                return Err(too_big("the body is larger".into()))
            }
            Ok(Err(e)) => return Err(ApiError::bad(format!("reading the body: {e}"))),
            Ok(Ok(b)) => b,
        };
    serde_json::from_slice(&bytes).map_err(|e| ApiError::bad(format!("bad JSON: {e}")))
}

async fn health(State(s): State<Arc<Shared>>) -> Response {
    json_response(&json!({
        "status": "ok",
        "model": s.backend_name.as_deref().unwrap_or("extractive"),
        "answers_in_flight": s.in_flight.load(Ordering::SeqCst),
        "queued": s.queued.load(Ordering::SeqCst),
    }))
}

async fn models(State(s): State<Arc<Shared>>) -> Response {
    let mut data = vec![json!({"id": SHIRABE_MODEL, "object": "model", "owned_by": "shirabe"})];
    if let Some(m) = &s.backend_name {
        data.push(json!({"id": m, "object": "model", "owned_by": "shirabe"}));
    }
    json_response(&json!({"object": "list", "data": data}))
}

async fn search(State(s): State<Arc<Shared>>, headers: HeaderMap, body: Body) -> Response {
    let v = match read_json(&s, &headers, body).await {
        Ok(v) => v,
        Err(e) => return e.into_response(),
    };
    let Some(query) = v["query"].as_str().map(str::to_string) else {
        return ApiError::bad("\"query\": a string is required").into_response();
    };
    if query.chars().count() > s.max_question {
        return ApiError::bad(format!(
            "the query is {} characters; at most {} are accepted",
            query.chars().count(),
            s.max_question
        ))
        .into_response();
    }
    let limit = v["limit"]
        .as_u64()
        .map_or(10, |n| n as usize)
        .clamp(1, MAX_SEARCH_LIMIT);
    let Ok(permit) = s.searches.clone().acquire_owned().await else {
        return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "shutting down").into_response();
    };
    let task = {
        let s = s.clone();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let snap = s.live.snapshot();
            snap.retriever
                .retrieve(Some(&snap.index), &query, limit, None)
        })
    };
    task_response(task.await, "search", |hits| {
        json_response(&json!({"object": "list", "data": hits}))
    })
}

/// The response for a blocking task's outcome.
fn task_response<T, E: std::fmt::Display>(
    r: Result<Result<T, E>, tokio::task::JoinError>,
    what: &str,
    ok: impl FnOnce(T) -> Response,
) -> Response {
    match r {
        Ok(Ok(v)) => ok(v),
        Ok(Err(e)) => {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")).into_response()
        }
        Err(e) => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("{what} failed: {e}"),
        )
        .into_response(),
    }
}

/// `POST /v1/embeddings`: the index's embedding model as an
/// OpenAI-compatible endpoint. `input` is a string or a list of them;
/// `"input_type": "query"` embeds them as search queries (with the model's
/// query prompt), else as passages.
async fn embeddings(State(s): State<Arc<Shared>>, headers: HeaderMap, body: Body) -> Response {
    let v = match read_json(&s, &headers, body).await {
        Ok(v) => v,
        Err(e) => return e.into_response(),
    };
    let snap = s.live.current();
    let Some(embedder) = snap.retriever.embedder() else {
        return ApiError::bad(
            "this index has no embedding model (ingest with one, or `shirabe embed-index`)",
        )
        .into_response();
    };
    let id = embedder.id().to_string();
    if let Some(m) = v["model"].as_str().filter(|m| !m.is_empty() && *m != id) {
        return ApiError::bad(format!("model {m:?}: this server embeds with {id:?}"))
            .into_response();
    }
    let texts: Vec<String> = match &v["input"] {
        Value::String(t) => vec![t.clone()],
        Value::Array(items) => match items
            .iter()
            .map(|i| i.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
        {
            Some(t) => t,
            None => {
                return ApiError::bad("\"input\": strings only (not token ids)").into_response()
            }
        },
        _ => return ApiError::bad("\"input\": a string or a list of strings").into_response(),
    };
    if texts.is_empty() || texts.len() > MAX_EMBED_INPUTS {
        return ApiError::bad(format!(
            "\"input\": 1 to {MAX_EMBED_INPUTS} texts, not {}",
            texts.len()
        ))
        .into_response();
    }
    let query = v["input_type"].as_str() == Some("query");
    let Ok(permit) = s.embeds.clone().acquire_owned().await else {
        return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "shutting down").into_response();
    };
    let task = {
        let s = s.clone();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let embedder = snap.retriever.embedder().expect("checked above");
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            let tokens: usize = texts.iter().map(|t| s.answerer.counter.count(t)).sum();
            embedder
                .embed(&refs, query, shirabe::models::embed::INDEX_BATCH)
                .map(|v| (v, tokens))
        })
    };
    task_response(task.await, "embedding", |(vectors, tokens)| {
        let data: Vec<Value> = vectors
            .into_iter()
            .enumerate()
            .map(|(i, e)| json!({"object": "embedding", "index": i, "embedding": e}))
            .collect();
        json_response(&json!({
            "object": "list", "data": data, "model": id,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }))
    })
}

/// A chat request, checked.
struct Chat {
    model: String,
    /// The system messages, joined.
    system: String,
    /// The last user message.
    question: String,
    /// Earlier (question, answer) pairs of the conversation, newest last:
    /// at most [`MAX_TURNS`], each side cut to [`MAX_TURN_CHARS`].
    turns: Vec<(String, String)>,
    max_tokens: usize,
    stream: bool,
}

/// The text of a message's `content` (a string, or OpenAI's list of
/// parts).
fn content_text(c: &Value) -> Option<String> {
    match c {
        Value::String(s) => Some(s.clone()),
        Value::Array(parts) => Some(
            parts
                .iter()
                .filter(|p| p["type"] == "text")
                .filter_map(|p| p["text"].as_str())
                .collect::<Vec<_>>()
                .join("\n"),
        ),
        _ => None,
    }
}

impl Chat {
    fn parse(v: &Value, s: &Shared) -> Result<Chat, ApiError> {
        let messages = v["messages"]
            .as_array()
            .ok_or_else(|| ApiError::bad("\"messages\": an array is required"))?;
        if messages.len() > MAX_MESSAGES {
            return Err(ApiError::bad(format!(
                "{} messages; at most {MAX_MESSAGES} are accepted",
                messages.len()
            )));
        }
        let text_of = |role: &str| -> Vec<String> {
            messages
                .iter()
                .filter(|m| m["role"] == role)
                .filter_map(|m| content_text(&m["content"]))
                .collect()
        };
        let question = text_of("user")
            .pop()
            .filter(|q| !q.trim().is_empty())
            .ok_or_else(|| ApiError::bad("no user message"))?;
        let system = text_of("system").join("\n");
        // Each user message answered by the assistant message after it.
        let cut = |t: String| match t.char_indices().nth(MAX_TURN_CHARS) {
            Some((at, _)) => t[..at].to_string(),
            None => t,
        };
        let mut turns = Vec::new();
        let mut asked: Option<String> = None;
        let last_user = messages.iter().rposition(|m| m["role"] == "user");
        for (i, m) in messages.iter().enumerate() {
            if Some(i) == last_user {
                break;
            }
            let Some(text) = content_text(&m["content"]) else {
                continue;
            };
            match m["role"].as_str() {
                Some("user") => asked = Some(text),
                Some("assistant") => {
                    if let Some(q) = asked.take() {
                        turns.push((cut(q), cut(text)));
                    }
                }
                _ => {}
            }
        }
        let keep = turns.len().saturating_sub(MAX_TURNS);
        turns.drain(..keep);
        let chars = question.chars().count() + system.chars().count();
        if chars > s.max_question {
            return Err(ApiError::bad(format!(
                "the question is {chars} characters; at most {} are accepted",
                s.max_question
            )));
        }
        // A request may ask for fewer tokens than the server's limit, not
        // more.
        let max_tokens = v["max_tokens"]
            .as_u64()
            .or_else(|| v["max_completion_tokens"].as_u64())
            .map_or(s.max_answer_tokens, |n| {
                (n as usize).clamp(1, s.max_answer_tokens)
            });
        Ok(Chat {
            model: v["model"].as_str().unwrap_or(SHIRABE_MODEL).to_string(),
            system,
            question,
            turns,
            max_tokens,
            stream: v["stream"].as_bool() == Some(true),
        })
    }
}

/// Counts a request as waiting for an answer worker while it lives.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Counts an answer in flight while it lives.
struct Busy(Arc<Shared>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Stops the answer when the request is dropped (the client went away).
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

impl Shared {
    /// A worker for an answer: at once, after waiting in the queue, or a
    /// 503 when the queue is full.
    async fn answer_permit(self: &Arc<Self>) -> Result<OwnedSemaphorePermit, ApiError> {
        if let Ok(p) = self.answers.clone().try_acquire_owned() {
            return Ok(p);
        }
        if self.queued.fetch_add(1, Ordering::SeqCst) >= self.queue {
            self.queued.fetch_sub(1, Ordering::SeqCst);
            let mut e = ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "{} questions are waiting already; try again soon",
                    self.queue
                ),
            );
            e.retry_after = Some(5);
            return Err(e);
        }
        let _waiting = Waiting(&self.queued);
        self.answers
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "shutting down"))
    }

    fn busy(self: &Arc<Self>) -> Busy {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        Busy(self.clone())
    }

    /// The answer; generated text goes to `sink` as it comes.
    fn complete(
        &self,
        req: &Chat,
        cancel: &AtomicBool,
        sink: &mut dyn FnMut(&str),
    ) -> Result<Reply> {
        if req.model != SHIRABE_MODEL {
            let backend = self.answerer.backend(cancel).context(
                "no model is configured to pass this request to (start serve with --model)",
            )?;
            let text = backend.stream(&req.system, &req.question, req.max_tokens, sink)?;
            return Ok(Reply {
                content: text,
                appendix: String::new(),
                extra: Value::Null,
            });
        }
        let question = &req.question;
        // A follow-up is searched as a standalone question, and the
        // conversation so far goes into the prompt (as `chat` does).
        let query = conversation::search_query(&self.answerer, question, &req.turns, cancel);
        let history = conversation::history(&self.answerer, &req.turns);
        let snap = self.live.snapshot();
        let hits = snap
            .retriever
            .retrieve(Some(&snap.index), &query, self.passages, None)?;
        let embed = snap.retriever.check_embedder();
        let rarity = snap.retriever.term_rarity(Some(&snap.index), &query)?;
        let r = self.answerer.answer(
            &Question {
                text: question,
                hits: &hits,
                embed: embed.as_deref(),
                cancel,
                max_answer_tokens: Some(req.max_tokens),
                rarity: Some(&rarity),
                written: None,
                history: &history,
                pinned: None,
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

async fn chat(State(s): State<Arc<Shared>>, headers: HeaderMap, body: Body) -> Response {
    let v = match read_json(&s, &headers, body).await {
        Ok(v) => v,
        Err(e) => return e.into_response(),
    };
    let req = match Chat::parse(&v, &s) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let permit = match s.answer_permit().await {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let created = shirabe::ingest::now_secs();
    let id = format!("chatcmpl-{created}");
    let cancel = Arc::new(AtomicBool::new(false));
    if req.stream {
        return stream_reply(s, req, permit, cancel, id, created);
    }
    // The answer stops if the client goes away.
    let _stop = CancelOnDrop(cancel.clone());
    let task = {
        let s = s.clone();
        let busy = s.busy();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let _busy = busy;
            s.complete(&req, &cancel, &mut |_| {})
                .map(|r| (r, req.model))
        })
    };
    task_response(task.await, "answer", |(r, model)| {
        let mut v = json!({
            "id": id, "object": "chat.completion", "created": created, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": r.content}, "finish_reason": "stop"}],
        });
        if !r.extra.is_null() {
            v["shirabe"] = r.extra;
        }
        json_response(&v)
    })
}

/// A streamed reply: text as the model writes it, then the appendix
/// (sources, removed citations), the finish chunk and `[DONE]`. The
/// channel never blocks the writer, so a client that reads slowly holds
/// nobody else up; one that goes away stops the answer.
fn stream_reply(
    s: Arc<Shared>,
    req: Chat,
    permit: OwnedSemaphorePermit,
    cancel: Arc<AtomicBool>,
    id: String,
    created: u64,
) -> Response {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let busy = s.busy();
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let _busy = busy;
        let model = req.model.clone();
        let chunk = |delta: Value, finish: Value| {
            let c = json!({
                "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            });
            format!("data: {c}\n\n")
        };
        let mut first = true;
        let mut send = |piece: &str| {
            let delta = if first {
                json!({"role": "assistant", "content": piece})
            } else {
                json!({"content": piece})
            };
            first = false;
            if tx.send(chunk(delta, Value::Null)).is_err() {
                cancel.store(true, Ordering::Relaxed);
            }
        };
        match s.complete(&req, &cancel, &mut send) {
            Ok(r) => {
                if !r.appendix.is_empty() {
                    send(&r.appendix);
                }
                let _ = tx.send(chunk(json!({}), json!("stop")));
            }
            Err(e) => {
                let err = json!({"error": {"message": format!("{e:#}"), "type": "server_error"}});
                let _ = tx.send(format!("data: {err}\n\n"));
            }
        }
        let _ = tx.send("data: [DONE]\n\n".to_string());
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|t| (Ok::<_, Infallible>(t), rx))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|e| {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_compare_whole() {
        assert!(same(b"t0k", b"t0k"));
        assert!(!same(b"t0k", b"t0K"));
        assert!(!same(b"t0k", b"t0kk"));
        assert!(!same(b"", b"x"));
    }

    #[test]
    fn message_content_may_be_parts() {
        assert_eq!(content_text(&json!("hi")).as_deref(), Some("hi"));
        let parts = json!([{"type": "text", "text": "a"}, {"type": "image_url"}, {"type": "text", "text": "b"}]);
        assert_eq!(content_text(&parts).as_deref(), Some("a\nb"));
        assert_eq!(content_text(&json!(3)), None);
    }
}
