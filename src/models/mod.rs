//! Models: finding Qwen checkpoints and running them with candle.
//!
//! - [`config`]: `config.json` as a typed, validated [`config::Config`];
//! - [`qwen3`]: the Qwen3/Qwen2 decoder (padding mask, owned KV cache,
//!   YaRN, block-wise attention);
//! - [`embed`]: Qwen3-Embedding: batched, length-sorted, left-padded,
//!   last-token pooling, L2 normalisation, query instruction, MRL;
//! - this file: locating a model (a directory, or a repo id in the Hugging
//!   Face cache) and loading its weights.

pub mod bert;
pub mod cite;
pub mod config;
pub mod embed;
pub mod embed_endpoint;
pub mod generate;
#[cfg(feature = "bench-internals")]
#[doc(hidden)]
pub mod kernels;
#[cfg(not(feature = "bench-internals"))]
pub(crate) mod kernels;
mod proj;
pub mod prompt_cache;
pub mod qwen3;
pub mod rerank;
pub mod sentence;
pub mod template;
pub mod utf8;
pub mod weights;

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use candle_nn::VarBuilder;

use crate::ingest::tokens::hf_cache_dirs;
use crate::{Error, Result};
use config::Config;

/// The type a model's weights are computed in (`--dtype`,
/// `--embed-dtype`, `[embed] dtype`): the command line and the config
/// read the same enum.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum WeightDtype {
    /// Single precision.
    #[default]
    F32,
    /// bfloat16.
    Bf16,
    /// IEEE half precision.
    F16,
}

impl std::fmt::Display for WeightDtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(DType::from(*self).as_str())
    }
}

impl From<WeightDtype> for DType {
    fn from(d: WeightDtype) -> DType {
        match d {
            WeightDtype::F32 => DType::F32,
            WeightDtype::Bf16 => DType::BF16,
            WeightDtype::F16 => DType::F16,
        }
    }
}

/// The weight type of an embedding model (`--embed-dtype`, `[embed]
/// dtype`, `embed --dtype`): a [`WeightDtype`], or `auto`, the fastest
/// type whose vectors match f32's.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum EmbedDtype {
    /// bf16 products for a BERT-family encoder on a CPU with AVX512-BF16
    /// (vectors within cosine 0.9999 of f32's, retrieval unchanged;
    /// docs/benchmarks.md), f32 otherwise.
    #[default]
    Auto,
    /// Single precision.
    F32,
    /// bfloat16.
    Bf16,
    /// IEEE half precision.
    F16,
}

impl EmbedDtype {
    /// The type asked for, or `None` for `auto`.
    pub fn fixed(self) -> Option<DType> {
        match self {
            EmbedDtype::Auto => None,
            EmbedDtype::F32 => Some(DType::F32),
            EmbedDtype::Bf16 => Some(DType::BF16),
            EmbedDtype::F16 => Some(DType::F16),
        }
    }
}

impl std::fmt::Display for EmbedDtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.fixed() {
            Some(d) => f.write_str(d.as_str()),
            None => f.write_str("auto"),
        }
    }
}

/// `--cache-dtype f32|bf16|f16|q8` (also `q8_0`, `int8`), parsed by clap.
impl clap::ValueEnum for qwen3::KvType {
    fn value_variants<'a>() -> &'a [Self] {
        &[
            qwen3::KvType::Float(DType::F32),
            qwen3::KvType::Float(DType::BF16),
            qwen3::KvType::Float(DType::F16),
            qwen3::KvType::Q8,
        ]
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        use clap::builder::PossibleValue;
        Some(match self {
            qwen3::KvType::Float(DType::F32) => PossibleValue::new("f32"),
            qwen3::KvType::Float(DType::BF16) => PossibleValue::new("bf16"),
            qwen3::KvType::Float(DType::F16) => PossibleValue::new("f16"),
            qwen3::KvType::Q8 => PossibleValue::new("q8").aliases(["q8_0", "int8"]),
            qwen3::KvType::Float(_) => return None,
        })
    }
}

/// The default reranking model.
pub const DEFAULT_RERANK_MODEL: &str = "Qwen/Qwen3-Reranker-0.6B";

/// The default embedding model.
pub const DEFAULT_EMBED_MODEL: &str = "Qwen/Qwen3-Embedding-0.6B";

/// The files of a model on disk.
#[derive(Debug, Clone)]
pub struct ModelFiles {
    /// Where they were found.
    pub dir: PathBuf,
    /// `config.json`.
    pub config: PathBuf,
    /// The safetensors shards.
    pub weights: Vec<PathBuf>,
    /// `tokenizer.json`, if present.
    pub tokenizer: Option<PathBuf>,
}

/// Finds a model: a local directory, or a repo id (`Org/Name`) in the
/// Hugging Face cache. The error names every place looked at and how to
/// fetch the model.
pub fn find(spec: &str) -> Result<ModelFiles> {
    find_in(spec, &hf_cache_dirs())
}

/// [`find`], and when a repo id is not cached, download it (unless
/// `HF_HUB_OFFLINE` is set); if that fails too, both reasons are given.
pub fn find_or_pull(spec: &str) -> Result<ModelFiles> {
    match find(spec) {
        Ok(files) => Ok(files),
        Err(not_found) => {
            let is_repo =
                spec.contains('/') && !Path::new(spec).exists() && !spec.starts_with(['/', '.']);
            let offline =
                std::env::var_os("HF_HUB_OFFLINE").is_some_and(|v| v != "0" && !v.is_empty());
            if !is_repo || offline {
                return Err(not_found);
            }
            // Both messages inside one model error, each without its own
            // "model: " prefix.
            let text = |e: Error| match e {
                Error::Model(m) => m,
                other => other.to_string(),
            };
            pull(spec).map_err(|e| {
                Error::Model(format!(
                    "{}; downloading failed too: {}",
                    text(not_found),
                    text(e)
                ))
            })
        }
    }
}

/// Downloads a model repo into the Hugging Face cache with hf-hub:
/// `config.json`, the tokenizer files and every safetensors shard.
pub fn pull(repo_id: &str) -> Result<ModelFiles> {
    // Into the first cache `find` looks in (hf-hub alone would ignore
    // HF_HUB_CACHE), from HF_ENDPOINT when set (a mirror).
    let mut builder = match hf_cache_dirs().into_iter().next() {
        Some(dir) => hf_hub::api::sync::ApiBuilder::from_cache(hf_hub::Cache::new(dir)),
        None => hf_hub::api::sync::ApiBuilder::from_env(),
    };
    if let Ok(endpoint) = std::env::var("HF_ENDPOINT") {
        builder = builder.with_endpoint(endpoint);
    }
    if let Ok(token) = std::env::var("HF_TOKEN") {
        builder = builder.with_token(Some(token));
    }
    let api = builder
        .with_progress(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .build()
        .map_err(Error::model("Hugging Face hub"))?;
    let repo = api.model(repo_id.to_string());
    let get = |name: &str| {
        repo.get(name)
            .map_err(Error::model(format!("{repo_id}/{name}")))
    };
    let config = get("config.json")?;
    for optional in [
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
    ] {
        let _ = repo.get(optional);
    }
    match get("model.safetensors.index.json") {
        Ok(index) => {
            let text = std::fs::read_to_string(&index).map_err(|e| Error::io(&index, e))?;
            let v: serde_json::Value = serde_json::from_str(&text)
                .map_err(Error::model(format!("{}", index.display())))?;
            let mut shards: Vec<&str> = v["weight_map"]
                .as_object()
                .map(|m| m.values().filter_map(|f| f.as_str()).collect())
                .unwrap_or_default();
            shards.sort();
            shards.dedup();
            for shard in shards {
                get(shard)?;
            }
        }
        Err(_) => {
            get("model.safetensors")?;
        }
    }
    let dir = config.parent().unwrap_or(Path::new(".")).to_path_buf();
    ModelFiles::from_dir(&dir)
}

/// A model found in the local Hugging Face cache.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CachedModel {
    /// `Org/Name`.
    pub repo: String,
    /// The snapshot directory.
    pub path: PathBuf,
    /// Bytes of weights.
    pub weight_bytes: u64,
    /// `model_type` from config.json.
    pub model_type: Option<String>,
    /// Whether shirabe can load it (a Qwen2/Qwen3 with safetensors).
    pub loadable: bool,
}

/// Models in the local Hugging Face cache.
pub fn list_cached() -> Vec<CachedModel> {
    list_in(&hf_cache_dirs())
}

fn list_in(caches: &[PathBuf]) -> Vec<CachedModel> {
    let mut out = Vec::new();
    for cache in caches {
        let Ok(entries) = std::fs::read_dir(cache) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(rest) = name.strip_prefix("models--") else {
                continue;
            };
            let repo = rest.replacen("--", "/", 1);
            if out.iter().any(|m: &CachedModel| m.repo == repo) {
                continue;
            }
            let Ok(files) = find_in(&repo, std::slice::from_ref(cache)) else {
                continue;
            };
            let weight_bytes = files
                .weights
                .iter()
                .filter_map(|w| std::fs::metadata(w).ok())
                .map(|m| m.len())
                .sum();
            let config = files.config().ok();
            let model_type = std::fs::read_to_string(&files.config)
                .ok()
                .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
                .and_then(|v| v["model_type"].as_str().map(str::to_string));
            out.push(CachedModel {
                repo,
                path: files.dir,
                weight_bytes,
                model_type,
                loadable: config.is_some(),
            });
        }
    }
    out.sort_by(|a, b| a.repo.cmp(&b.repo));
    out
}

fn find_in(spec: &str, caches: &[PathBuf]) -> Result<ModelFiles> {
    let mut looked = Vec::new();
    let p = Path::new(spec);
    if p.is_dir() {
        return ModelFiles::from_dir(p);
    }
    looked.push(p.display().to_string());
    if let Some((org, name)) = spec
        .split_once('/')
        .filter(|_| !spec.starts_with(['/', '.']))
    {
        for cache in caches {
            let repo = cache.join(format!("models--{org}--{name}"));
            looked.push(repo.display().to_string());
            let mut snapshots = Vec::new();
            if let Ok(rev) = std::fs::read_to_string(repo.join("refs/main")) {
                snapshots.push(repo.join("snapshots").join(rev.trim()));
            }
            if let Ok(dir) = std::fs::read_dir(repo.join("snapshots")) {
                let mut more: Vec<PathBuf> = dir.flatten().map(|e| e.path()).collect();
                more.sort();
                snapshots.extend(more);
            }
            if let Some(snap) = snapshots
                .into_iter()
                .find(|s| s.join("config.json").is_file())
            {
                return ModelFiles::from_dir(&snap);
            }
        }
    }
    Err(Error::Model(format!(
        "{spec:?} not found; looked in: {}. Download it with `shirabe models pull {spec}` (or `huggingface-cli download {spec}`), or pass a local directory",
        looked.join(", ")
    )))
}

impl ModelFiles {
    /// Reads a model directory (single or sharded safetensors).
    pub fn from_dir(dir: &Path) -> Result<ModelFiles> {
        let config = dir.join("config.json");
        if !config.is_file() {
            return Err(Error::Model(format!("{}: no config.json", dir.display())));
        }
        let index = dir.join("model.safetensors.index.json");
        let weights = if index.is_file() {
            let text = std::fs::read_to_string(&index).map_err(|e| Error::io(&index, e))?;
            let v: serde_json::Value = serde_json::from_str(&text)
                .map_err(Error::model(format!("{}", index.display())))?;
            let mut files: Vec<PathBuf> = v["weight_map"]
                .as_object()
                .ok_or_else(|| Error::Model(format!("{}: no weight_map", index.display())))?
                .values()
                .filter_map(|f| f.as_str())
                .map(|f| dir.join(f))
                .collect();
            files.sort();
            files.dedup();
            files
        } else {
            let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
                .map_err(|e| Error::io(dir, e))?
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
                .collect();
            files.sort();
            files
        };
        if weights.is_empty() {
            return Err(Error::Model(format!(
                "{}: no *.safetensors weights",
                dir.display()
            )));
        }
        if let Some(missing) = weights.iter().find(|w| !w.is_file()) {
            return Err(Error::Model(format!(
                "{}: shard {} is missing",
                dir.display(),
                missing.display()
            )));
        }
        let tokenizer = Some(dir.join("tokenizer.json")).filter(|t| t.is_file());
        Ok(ModelFiles {
            dir: dir.to_path_buf(),
            config,
            weights,
            tokenizer,
        })
    }

    /// Loads `tokenizer.json` (an error if the directory has none).
    pub fn load_tokenizer(&self) -> Result<tokenizers::Tokenizer> {
        let tok = self
            .tokenizer
            .as_ref()
            .ok_or_else(|| Error::Model(format!("{}: no tokenizer.json", self.dir.display())))?;
        tokenizers::Tokenizer::from_file(tok)
            .map_err(Error::tokenizer(format!("{}", tok.display())))
    }

    /// A short digest that changes when the model does: of `config.json`
    /// and, per weight file, its size and first and last 64 KiB (reading
    /// whole multi-gigabyte files for an id would cost seconds).
    pub fn fingerprint(&self) -> Result<String> {
        use std::io::{Read, Seek, SeekFrom};
        let mut h = blake3::Hasher::new();
        h.update(&std::fs::read(&self.config).map_err(|e| Error::io(&self.config, e))?);
        for w in &self.weights {
            let mut f = std::fs::File::open(w).map_err(|e| Error::io(w, e))?;
            let len = f.metadata().map_err(|e| Error::io(w, e))?.len();
            h.update(&len.to_le_bytes());
            let mut buf = vec![0u8; 64 << 10];
            let n = f.read(&mut buf).map_err(|e| Error::io(w, e))?;
            h.update(&buf[..n]);
            if len > 128 << 10 {
                f.seek(SeekFrom::End(-(64 << 10)))
                    .map_err(|e| Error::io(w, e))?;
                f.read_exact(&mut buf).map_err(|e| Error::io(w, e))?;
                h.update(&buf);
            }
        }
        Ok(h.finalize().to_hex()[..12].to_string())
    }

    /// Parses `config.json`.
    pub fn config(&self) -> Result<Config> {
        let text = std::fs::read_to_string(&self.config).map_err(|e| Error::io(&self.config, e))?;
        Config::from_json(&text)
    }

    /// Loads the decoder with weights in `dtype` on `device`.
    pub fn load(&self, dtype: DType, device: &Device) -> Result<qwen3::Model> {
        let cfg = self.config()?;
        // SAFETY: the files are memory-mapped read-only; shirabe does not
        // modify them while the model is loaded.
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&self.weights, dtype, device) }
            .map_err(Error::model(format!("{}", self.dir.display())))?;
        qwen3::Model::new(&cfg, &weights::Safetensors::new(vb)?)
    }
}

/// Loads a GGUF file (Q8_0, Q4_K_M, …) as a decoder with quantized matrices.
pub fn load_gguf(path: &Path, device: &Device) -> Result<qwen3::Model> {
    model_of_gguf(&weights::Gguf::open(path, device)?)
}

/// The model in an opened GGUF file.
pub fn model_of_gguf(gguf: &weights::Gguf) -> Result<qwen3::Model> {
    qwen3::Model::new(&gguf.config()?, gguf)
}

/// The device to run on: CUDA or Metal when built with them, else the CPU.
pub fn default_device() -> Device {
    #[cfg(feature = "cuda")]
    if let Ok(d) = Device::new_cuda(0) {
        return d;
    }
    #[cfg(feature = "metal")]
    if let Ok(d) = Device::new_metal(0) {
        return d;
    }
    Device::Cpu
}

#[doc(hidden)]
pub mod testing;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_model_names_the_places_searched() {
        let dir = tempfile::tempdir().unwrap();
        let err = find_in("Org/Absent", &[dir.path().to_path_buf()])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("models--Org--Absent") && err.contains("huggingface-cli download"),
            "{err}"
        );
    }

    #[test]
    fn malformed_directories_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let err = ModelFiles::from_dir(dir.path()).unwrap_err().to_string();
        assert!(err.contains("config.json"), "{err}");
        std::fs::write(dir.path().join("config.json"), "{").unwrap();
        let err = ModelFiles::from_dir(dir.path()).unwrap_err().to_string();
        assert!(err.contains("safetensors"), "{err}");
        std::fs::write(dir.path().join("model.safetensors"), b"not safetensors").unwrap();
        let files = ModelFiles::from_dir(dir.path()).unwrap();
        assert!(files.config().is_err());
    }

    #[test]
    fn finds_and_lists_models_in_the_hf_cache() {
        let cache = tempfile::tempdir().unwrap();
        let snap = cache.path().join("models--Org--Tiny/snapshots/rev1");
        testing::write_tiny(&snap, &testing::tiny_config("qwen3", None), true).unwrap();
        let files = find_in("Org/Tiny", &[cache.path().to_path_buf()]).unwrap();
        assert_eq!(files.dir, snap);
        files.load(DType::F32, &Device::Cpu).unwrap();
        let listed = list_in(&[cache.path().to_path_buf()]);
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].repo, "Org/Tiny");
        assert!(listed[0].loadable && listed[0].weight_bytes > 0);
        assert_eq!(listed[0].model_type.as_deref(), Some("qwen3"));
    }
}
