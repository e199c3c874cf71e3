//! The command-line front end: arguments become [`Settings`] once, then each
//! command runs on the library and writes to stdout.

pub mod args;
mod ask;
mod bench;
mod chat;
mod doctor;
mod embedding;
mod eval;
mod eval_answers;
mod extract;
mod generate;
mod ingest;
mod migrate;
mod models;
mod phases;
mod search;
mod serve;
mod status;
mod style;
mod tui;
mod watch;

use std::path::PathBuf;

use anyhow::Result;
use shirabe::config::ConfigFile;
use shirabe::ingest::chunk::ChunkParams;

pub use args::Cli;
use args::{ColorChoice, Command};

/// Exit codes scripts can rely on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Everything worked (and a search found something).
    Success,
    /// A search found nothing, or some files failed to ingest.
    Partial,
    /// Ctrl-C stopped the work (what was done is kept).
    Interrupted,
}

/// Settings merged from flags, environment and config file.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Index directory.
    pub index: PathBuf,
    /// Quiet mode.
    pub quiet: bool,
    /// Colour output on stdout.
    pub color: bool,
    /// Progress bars on stderr.
    pub progress: bool,
    /// Tokenizer spec.
    pub tokenizer: Option<String>,
    /// Chunk sizes.
    pub chunking: ChunkParams,
    /// Worker threads (0 = cores).
    pub jobs: usize,
    /// Default search limit.
    pub limit: usize,
    /// Default search mode (None: hybrid when the index has vectors).
    pub mode: Option<shirabe::retrieve::Mode>,
    /// The embedding model.
    pub embed: EmbedSettings,
    /// Qdrant, when given by flag, environment or config file.
    pub qdrant: QdrantSettings,
    /// OCR for pages without a text layer.
    pub ocr: shirabe::ingest::ocr::OcrSettings,
    /// Where PDFs are parsed: worker processes of this binary.
    pub isolation: shirabe::ingest::isolate::Isolation,
    /// Folders `watch` watches when given none.
    pub watch_folders: Vec<PathBuf>,
}

/// Where a Qdrant server is, from flag, environment or config file (each
/// field unset when none says).
#[derive(Debug, Clone, Default)]
pub struct QdrantSettings {
    /// gRPC URL.
    pub url: Option<String>,
    /// API key.
    pub api_key: Option<String>,
    /// Collection name.
    pub collection: Option<String>,
    /// Shards of a new collection.
    pub shards: Option<u32>,
    /// Replication factor of a new collection.
    pub replication: Option<u32>,
}

/// Which embedding model to use, and how.
#[derive(Debug, Clone)]
pub struct EmbedSettings {
    /// Given by flag, environment or config file.
    pub model: Option<String>,
    /// Weight type.
    pub dtype: shirabe::models::EmbedDtype,
    /// Matryoshka dimensions.
    pub dims: Option<usize>,
    /// Store type for a new store.
    pub vector_dtype: shirabe::index::vectors::VectorDtype,
}

fn build_settings(cli: &Cli) -> Result<Settings> {
    use std::io::IsTerminal;
    let file = ConfigFile::load(cli.config.as_deref())?;
    let color_choice = match (cli.color, file.color.as_deref()) {
        (Some(c), _) => c,
        (None, Some("always")) => ColorChoice::Always,
        (None, Some("never")) => ColorChoice::Never,
        (None, Some("auto") | None) => ColorChoice::Auto,
        (None, Some(other)) => {
            anyhow::bail!("config: color must be auto, always or never, not {other:?}")
        }
    };
    let color = match color_choice {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => {
            std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
                && std::io::stdout().is_terminal()
        }
    };
    let mut chunking = ChunkParams::default();
    let (mut tokenizer, mut jobs) = (file.ingest.tokenizer.clone(), file.ingest.jobs.unwrap_or(0));
    if let Some(n) = file.ingest.chunk_tokens {
        chunking.target_tokens = n;
    }
    if let Some(n) = file.ingest.chunk_overlap {
        chunking.overlap_tokens = n;
    }
    if let Some(Command::Ingest(a)) = &cli.command {
        if let Some(n) = a.chunk_tokens {
            chunking.target_tokens = n;
        }
        if let Some(n) = a.chunk_overlap {
            chunking.overlap_tokens = n;
        }
        if a.tokenizer.is_some() {
            tokenizer = a.tokenizer.clone();
        }
        if let Some(j) = a.jobs {
            jobs = j;
        }
    }
    anyhow::ensure!(
        (16..=32_768).contains(&chunking.target_tokens),
        "--chunk-tokens must be between 16 and 32768 (got {})",
        chunking.target_tokens
    );
    anyhow::ensure!(
        chunking.overlap_tokens < chunking.target_tokens,
        "--chunk-overlap ({}) must be smaller than --chunk-tokens ({})",
        chunking.overlap_tokens,
        chunking.target_tokens
    );
    let flags = match &cli.command {
        Some(Command::Ingest(a)) => a.embed.clone(),
        Some(Command::EmbedIndex(a)) => a.embed.clone(),
        _ => args::EmbedModelArgs::default(),
    };
    let e = &file.embed;
    let embed = EmbedSettings {
        model: flags.embed_model.or(e.model.clone()),
        dtype: flags.embed_dtype.or(e.dtype).unwrap_or_default(),
        dims: flags.dims.or(e.dims),
        vector_dtype: flags.vector_dtype.or(e.vector_dtype).unwrap_or_default(),
    };
    let mut flags_q = match &cli.command {
        Some(Command::Ingest(a)) => a.qdrant.clone(),
        Some(Command::EmbedIndex(a)) => a.qdrant.clone(),
        Some(Command::Search(a)) => a.qdrant.clone(),
        Some(Command::Ask(a)) => a.qdrant.clone(),
        Some(Command::Eval(a)) => a.qdrant.clone(),
        Some(Command::Migrate(a)) => a.qdrant.clone(),
        _ => args::QdrantArgs::default(),
    };
    if let Some(Command::Migrate(a)) = &cli.command {
        match a.to.as_slice() {
            [t, url] if t == "qdrant" => flags_q.qdrant = Some(url.clone()),
            [t] if t == "qdrant" && flags_q.qdrant.is_some() => {}
            [t] if t == "embedded" => {}
            _ => anyhow::bail!("--to must be `qdrant URL` or `embedded`"),
        }
    }
    let qdrant = QdrantSettings {
        url: flags_q.qdrant.or(file.qdrant.url.clone()),
        api_key: flags_q.qdrant_api_key.or(file.qdrant.api_key.clone()),
        collection: flags_q.qdrant_collection.or(file.qdrant.collection.clone()),
        shards: flags_q.qdrant_shards.or(file.qdrant.shards),
        replication: flags_q.qdrant_replication.or(file.qdrant.replication),
    };
    let mode = file.search.mode;
    let (ocr_flag, lang_flag) = match &cli.command {
        Some(Command::Ingest(a)) => (a.ocr, a.ocr_lang.clone()),
        Some(Command::Watch(a)) => (a.ocr, None),
        Some(Command::Extract(a)) => (
            Some(a.ocr.unwrap_or(shirabe::ingest::ocr::OcrMode::Never)),
            a.ocr_lang.clone(),
        ),
        _ => (None, None),
    };
    let ocr = shirabe::ingest::ocr::OcrSettings {
        mode: ocr_flag.or(file.ingest.ocr).unwrap_or_default(),
        languages: lang_flag.or(file.ingest.ocr_languages.clone()),
        program: file.ingest.tesseract.clone(),
    };
    Ok(Settings {
        index: cli
            .index
            .clone()
            .or(file.index.clone())
            .unwrap_or_else(|| PathBuf::from("index")),
        quiet: cli.quiet,
        color,
        progress: !cli.quiet && std::io::stderr().is_terminal(),
        tokenizer,
        chunking,
        jobs,
        limit: file.search.limit.unwrap_or(10),
        mode,
        embed,
        qdrant,
        ocr,
        isolation: std::env::current_exe()
            .map(shirabe::ingest::isolate::Isolation::Workers)
            .unwrap_or_default(),
        watch_folders: file.watch.folders.iter().map(|f| expand_home(f)).collect(),
    })
}

/// `~/minutes` as a shell reads it (config files are not shell-expanded).
fn expand_home(p: &std::path::Path) -> PathBuf {
    match (p.strip_prefix("~"), directories::BaseDirs::new()) {
        (Ok(rest), Some(d)) => d.home_dir().join(rest),
        _ => p.to_path_buf(),
    }
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> Result<Status> {
    let settings = build_settings(&cli)?;
    let Some(command) = cli.command else {
        anyhow::bail!("no command given (see `shirabe --help`)");
    };
    match command {
        Command::Tui(a) => tui::run(&settings, *a),
        Command::Ingest(a) => ingest::run(&settings, &a),
        Command::Search(a) => search::run(&settings, &a),
        Command::Ask(a) => ask::run(&settings, &a),
        Command::Summarize(a) => ask::summarize(&settings, &a),
        Command::Serve(a) => serve::run(&settings, &a),
        Command::Watch(a) => watch::run(&settings, &a),
        Command::Chat(a) => chat::run(&settings, &a),
        Command::Extract(a) => extract::run(&settings, &a),
        Command::Status(a) => status::run(&settings, &a),
        Command::Doctor(a) => doctor::run(&settings, &a),
        Command::Embed(a) => embedding::embed(&settings, &a),
        Command::EmbedIndex(a) => embedding::embed_index(&settings, &a),
        Command::Eval(a) => eval::run(&settings, &a),
        Command::Migrate(a) => migrate::run(&settings, &a),
        Command::Generate(a) => generate::run(&settings, &a),
        Command::Models(a) => models::run(&settings, &a),
        Command::Bench(a) => bench::run(&settings, &a),
        Command::SampleCorpus { dir, scanned } => extract::sample_corpus(&settings, &dir, scanned),
    }
}

/// The local model `b` names, as a loading line shows it (a GGUF file by
/// its name and size); `None` when no local model will load (an endpoint,
/// `--extractive`, or no model).
pub(crate) fn local_model_label(b: &args::BackendArgs) -> Option<String> {
    let m = b
        .model
        .as_ref()
        .filter(|_| !b.extractive && b.endpoint.is_none() && !b.dashscope)?;
    Some(match std::fs::metadata(m).ok().filter(|f| f.is_file()) {
        Some(f) => format!("{} ({:.1} GB)", model_label(m), f.len() as f64 / 1e9),
        None => model_label(m),
    })
}

/// A model file by its name (status lines are narrow); a repo id or a
/// directory as given.
pub(crate) fn model_label(spec: &str) -> String {
    let p = std::path::Path::new(spec);
    match p.file_name() {
        Some(name) if p.is_file() => name.to_string_lossy().into_owned(),
        _ => spec.to_string(),
    }
}
