//! An OpenAI-compatible chat endpoint as the answer backend (DashScope's
//! compatible mode, vLLM, Ollama, llama.cpp's server, …).
//!
//! `POST {base}/chat/completions` with `stream: true`; the reply is read as
//! server-sent events (`data: {…}` lines, `data: [DONE]` at the end) and
//! each `choices[0].delta.content` is passed on as it arrives. Connection
//! failures, 429 and 5xx answers are retried with exponential backoff
//! (1 s, 2 s, 4 s) as long as nothing has been streamed yet. A 400 that
//! says the prompt is too long becomes [`CompletionError::ContextTooLong`],
//! so the caller can pack a smaller context and try once more.

use std::io::{BufRead, BufReader};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::json;

/// DashScope's OpenAI-compatible endpoint (international).
pub const DASHSCOPE_BASE: &str = "https://dashscope-intl.aliyuncs.com/compatible-mode/v1";

/// Where and how to call.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// Base URL, e.g. `http://localhost:8000/v1`.
    pub base_url: String,
    /// Bearer token.
    pub api_key: Option<String>,
    /// Model name the server knows.
    pub model: String,
    /// Whole-request timeout.
    pub timeout: Duration,
    /// Retries on transient errors.
    pub retries: u32,
    /// First backoff (doubled each retry).
    pub backoff: Duration,
}

/// What the endpoint returned.
#[derive(Debug, Clone, Serialize)]
pub struct Completion {
    /// The text.
    pub text: String,
    /// Token usage, when the server reports it.
    pub prompt_tokens: Option<u64>,
    /// Completion tokens, when reported.
    pub completion_tokens: Option<u64>,
    /// Seconds to the first piece of text.
    pub first_token_s: f64,
    /// Seconds in all.
    pub total_s: f64,
    /// Attempts made.
    pub attempts: u32,
    /// Stopped by the caller.
    pub cancelled: bool,
}

/// Why a completion failed.
#[derive(Debug, thiserror::Error)]
pub enum CompletionError {
    /// The prompt is longer than the model's window.
    #[error("the endpoint says the prompt is too long: {0}")]
    ContextTooLong(String),
    /// The endpoint could not be reached (after retries); ureq's message
    /// names the URL.
    #[error("{source} (after {attempts} attempts)")]
    Unreachable {
        /// The completions URL.
        url: String,
        /// Requests tried.
        attempts: u32,
        /// The last connection error.
        #[source]
        source: Box<ureq::Transport>,
    },
    /// A reply that should have been JSON was not.
    #[error("bad JSON reply: {0}")]
    BadJson(#[source] serde_json::Error),
    /// The streamed reply broke off.
    #[error("reading the stream: {0}")]
    Stream(#[source] std::io::Error),
    /// Anything else the server said (after retries).
    #[error("{0}")]
    Failed(String),
}

fn is_context_error(body: &str) -> bool {
    let b = body.to_ascii_lowercase();
    [
        "context length",
        "context_length",
        "maximum context",
        "too long",
        "too many tokens",
        "range of input length",
    ]
    .iter()
    .any(|k| b.contains(k))
}

impl Endpoint {
    /// Streams a chat completion; `on_text` gets each piece.
    pub fn complete(
        &self,
        system: &str,
        user: &str,
        max_tokens: usize,
        temperature: f32,
        cancel: &AtomicBool,
        mut on_text: impl FnMut(&str),
    ) -> Result<Completion, CompletionError> {
        let url = format!("{}/chat/completions", self.base_url.trim_end_matches('/'));
        let body = json!({
            "model": self.model,
            "messages": [
                {"role": "system", "content": system},
                {"role": "user", "content": user},
            ],
            "stream": true,
            "stream_options": {"include_usage": true},
            "max_tokens": max_tokens,
            "temperature": temperature,
        });
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(10))
            .timeout(self.timeout)
            .build();
        let started = Instant::now();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut req = agent.post(&url).set("Accept", "text/event-stream");
            if let Some(k) = &self.api_key {
                req = req.set("Authorization", &format!("Bearer {k}"));
            }
            let transient = match req.send_json(body.clone()) {
                Ok(resp) => {
                    return self.read_stream(resp, started, attempt, cancel, &mut on_text);
                }
                Err(ureq::Error::Status(code, resp)) => {
                    let text = resp.into_string().unwrap_or_default();
                    if code == 400 && is_context_error(&text) {
                        return Err(CompletionError::ContextTooLong(text));
                    }
                    if code == 429 || code >= 500 {
                        format!(
                            "HTTP {code}: {}",
                            text.chars().take(300).collect::<String>()
                        )
                    } else {
                        return Err(CompletionError::Failed(format!(
                            "{url}: HTTP {code}: {}",
                            text.chars().take(500).collect::<String>()
                        )));
                    }
                }
                Err(ureq::Error::Transport(t)) => {
                    if attempt > self.retries || cancel.load(Ordering::Relaxed) {
                        return Err(CompletionError::Unreachable {
                            url,
                            attempts: attempt,
                            source: Box::new(t),
                        });
                    }
                    String::new()
                }
            };
            if attempt > self.retries || cancel.load(Ordering::Relaxed) {
                return Err(CompletionError::Failed(format!(
                    "{url}: {transient} (after {attempt} attempts)"
                )));
            }
            std::thread::sleep(self.backoff * 2u32.pow(attempt - 1));
        }
    }

    fn read_stream(
        &self,
        resp: ureq::Response,
        started: Instant,
        attempts: u32,
        cancel: &AtomicBool,
        on_text: &mut impl FnMut(&str),
    ) -> Result<Completion, CompletionError> {
        let mut out = Completion {
            text: String::new(),
            prompt_tokens: None,
            completion_tokens: None,
            first_token_s: 0.0,
            total_s: 0.0,
            attempts,
            cancelled: false,
        };
        let json_reply = resp.content_type().contains("json");
        let reader = BufReader::new(resp.into_reader());
        if json_reply {
            // A server that ignored `stream`: one JSON answer.
            let v: serde_json::Value =
                serde_json::from_reader(reader).map_err(CompletionError::BadJson)?;
            let text = v["choices"][0]["message"]["content"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            on_text(&text);
            out.text = text;
            out.prompt_tokens = v["usage"]["prompt_tokens"].as_u64();
            out.completion_tokens = v["usage"]["completion_tokens"].as_u64();
            out.first_token_s = started.elapsed().as_secs_f64();
            out.total_s = out.first_token_s;
            return Ok(out);
        }
        for line in reader.lines() {
            if cancel.load(Ordering::Relaxed) {
                out.cancelled = true;
                break;
            }
            let line = line.map_err(CompletionError::Stream)?;
            let Some(data) = line.strip_prefix("data:") else {
                continue;
            };
            let data = data.trim();
            if data == "[DONE]" {
                break;
            }
            let Ok(v) = serde_json::from_str::<serde_json::Value>(data) else {
                continue;
            };
            if let Some(e) = v.get("error") {
                let msg = e.to_string();
                if is_context_error(&msg) && out.text.is_empty() {
                    return Err(CompletionError::ContextTooLong(msg));
                }
                return Err(CompletionError::Failed(msg));
            }
            if let Some(piece) = v["choices"][0]["delta"]["content"].as_str() {
                if !piece.is_empty() {
                    if out.text.is_empty() {
                        out.first_token_s = started.elapsed().as_secs_f64();
                    }
                    out.text.push_str(piece);
                    on_text(piece);
                }
            }
            if let Some(u) = v.get("usage").filter(|u| !u.is_null()) {
                out.prompt_tokens = u["prompt_tokens"].as_u64();
                out.completion_tokens = u["completion_tokens"].as_u64();
            }
        }
        out.total_s = started.elapsed().as_secs_f64();
        Ok(out)
    }
}
