//! Embeddings from an OpenAI-compatible `/v1/embeddings` endpoint (another
//! `shirabe serve`, TEI, vLLM, Ollama, llama.cpp's server), so that one
//! machine with the model can embed for many.
//!
//! An embedding model spec that is a URL (`http://host:8088/v1`, with
//! `#MODEL` to name the model the server should use) loads this instead
//! of a local model. The model's identity is what the server reports
//! (`shirabe serve` reports its local model's id, so an index embedded in
//! process can be searched through an endpoint and the other way round);
//! its width is measured with one probe. Texts go in batches, a few
//! requests in flight, each retried with exponential backoff on transport
//! errors, 429 and 5xx.

use std::time::Duration;

use serde_json::{json, Value};

use super::embed::TextEmbedder;
use crate::{Error, Result};

/// Texts per request.
const BATCH: usize = 64;
/// Requests in flight.
const IN_FLIGHT: usize = 3;
/// Retries after the first attempt.
const RETRIES: u32 = 4;

/// Whether an embedding model spec names an endpoint.
pub fn is_endpoint(spec: &str) -> bool {
    spec.starts_with("http://") || spec.starts_with("https://")
}

/// An endpoint that embeds.
pub struct EndpointEmbedder {
    url: String,
    model: Option<String>,
    api_key: Option<String>,
    id: String,
    dims: usize,
    agent: ureq::Agent,
    backoff: Duration,
}

impl EndpointEmbedder {
    /// Connects to `spec` (`URL` or `URL#MODEL`): one probe learns the
    /// model's id and width. The key, if any, comes from
    /// `SHIRABE_EMBED_API_KEY`.
    pub fn connect(spec: &str) -> Result<EndpointEmbedder> {
        let (base, model) = match spec.split_once('#') {
            Some((b, m)) if !m.is_empty() => (b, Some(m.to_string())),
            _ => (spec.trim_end_matches('#'), None),
        };
        let url = format!("{}/embeddings", base.trim_end_matches('/'));
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(10))
            .timeout(Duration::from_secs(300))
            .build();
        let mut e = EndpointEmbedder {
            url,
            model,
            api_key: std::env::var("SHIRABE_EMBED_API_KEY").ok(),
            id: String::new(),
            dims: 0,
            agent,
            backoff: Duration::from_millis(500),
        };
        let (vectors, reported) = e.request(&["dimensions probe"], false)?;
        e.dims = vectors.first().map_or(0, Vec::len);
        if e.dims == 0 {
            return Err(Error::Model(format!("{}: an empty embedding", e.url)));
        }
        e.id = reported
            .or_else(|| e.model.clone())
            .unwrap_or_else(|| base.to_string());
        Ok(e)
    }

    /// One request: the vectors in order, and the model the server names.
    fn request(&self, texts: &[&str], query: bool) -> Result<(Vec<Vec<f32>>, Option<String>)> {
        let mut body = json!({
            "input": texts,
            "input_type": if query { "query" } else { "passage" },
        });
        if let Some(m) = &self.model {
            body["model"] = json!(m);
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut req = self.agent.post(&self.url);
            if let Some(k) = &self.api_key {
                req = req.set("Authorization", &format!("Bearer {k}"));
            }
            let transient = match req.send_json(body.clone()) {
                Ok(resp) => {
                    let v: Value = resp
                        .into_json()
                        .map_err(Error::model(format!("{}: bad JSON", self.url)))?;
                    return parse(&v, texts.len())
                        .map_err(|why| Error::Model(format!("{}: {why}", self.url)));
                }
                Err(ureq::Error::Status(code, resp)) if code == 429 || code >= 500 => {
                    format!(
                        "HTTP {code}: {}",
                        resp.into_string()
                            .unwrap_or_default()
                            .chars()
                            .take(300)
                            .collect::<String>()
                    )
                }
                Err(ureq::Error::Status(code, resp)) => {
                    return Err(Error::Model(format!(
                        "{}: HTTP {code}: {}",
                        self.url,
                        resp.into_string()
                            .unwrap_or_default()
                            .chars()
                            .take(500)
                            .collect::<String>()
                    )))
                }
                Err(ureq::Error::Transport(t)) => t.to_string(),
            };
            if attempt > RETRIES {
                return Err(Error::Model(format!(
                    "{}: {transient} (after {attempt} attempts)",
                    self.url
                )));
            }
            std::thread::sleep(self.backoff * 2u32.pow(attempt - 1));
        }
    }
}

/// The vectors of an embeddings reply (placed by their `index`).
fn parse(v: &Value, n: usize) -> std::result::Result<(Vec<Vec<f32>>, Option<String>), String> {
    let data = v["data"].as_array().ok_or("no \"data\" in the reply")?;
    if data.len() != n {
        return Err(format!("{} vectors for {n} texts", data.len()));
    }
    let mut out = vec![Vec::new(); n];
    for (i, d) in data.iter().enumerate() {
        let at = d["index"].as_u64().map_or(i, |x| x as usize);
        let slot = out.get_mut(at).ok_or("an index out of range")?;
        *slot = d["embedding"]
            .as_array()
            .ok_or("an embedding that is not a list of numbers")?
            .iter()
            .map(|x| x.as_f64().map(|f| f as f32))
            .collect::<Option<Vec<f32>>>()
            .ok_or("an embedding that is not a list of numbers")?;
    }
    Ok((out, v["model"].as_str().map(str::to_string)))
}

impl TextEmbedder for EndpointEmbedder {
    fn id(&self) -> &str {
        &self.id
    }

    fn dims(&self) -> usize {
        self.dims
    }

    fn embed(&self, texts: &[&str], query: bool, _batch: usize) -> Result<Vec<Vec<f32>>> {
        let batches: Vec<&[&str]> = texts.chunks(BATCH).collect();
        let mut results: Vec<Option<Result<Vec<Vec<f32>>>>> =
            (0..batches.len()).map(|_| None).collect();
        // A few requests in flight: each worker takes every IN_FLIGHT-th
        // batch.
        std::thread::scope(|scope| {
            let workers: Vec<_> = (0..IN_FLIGHT.min(batches.len()))
                .map(|w| {
                    let batches = &batches;
                    scope.spawn(move || {
                        (w..batches.len())
                            .step_by(IN_FLIGHT)
                            .map(|i| (i, self.request(batches[i], query).map(|r| r.0)))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            for w in workers {
                for (i, r) in w.join().unwrap_or_default() {
                    results[i] = Some(r);
                }
            }
        });
        let mut out = Vec::with_capacity(texts.len());
        for r in results {
            let vectors =
                r.ok_or_else(|| Error::Model("an embedding request did not finish".into()))??;
            for v in vectors {
                if v.len() != self.dims {
                    return Err(Error::Model(format!(
                        "{}: a vector of {} values, the model's are {}",
                        self.url,
                        v.len(),
                        self.dims
                    )));
                }
                out.push(v);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_are_placed_by_index_and_checked() {
        let v = json!({"data": [
            {"index": 1, "embedding": [0.0, 1.0]},
            {"index": 0, "embedding": [1.0, 0.0]},
        ], "model": "m@abc"});
        let (vs, model) = parse(&v, 2).unwrap();
        assert_eq!(vs, vec![vec![1.0, 0.0], vec![0.0, 1.0]]);
        assert_eq!(model.as_deref(), Some("m@abc"));
        assert!(parse(&v, 3).unwrap_err().contains("2 vectors for 3"));
        assert!(parse(&json!({"data": [{"embedding": "x"}]}), 1).is_err());
        assert!(parse(&json!({}), 1).is_err());
    }

    #[test]
    fn specs_that_are_urls_are_endpoints() {
        assert!(is_endpoint("http://127.0.0.1:8088/v1"));
        assert!(is_endpoint("https://example.org/v1#bge-m3"));
        assert!(!is_endpoint("intfloat/multilingual-e5-small"));
        assert!(!is_endpoint("./models/e5"));
    }
}
