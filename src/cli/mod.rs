//! The command-line front end: arguments become [`Settings`] once, then each
//! command runs on the library and writes to stdout.

pub mod args;
mod bench;
mod commands;
mod style;

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
    if let Command::Ingest(a) = &cli.command {
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
    })
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> Result<Status> {
    let settings = build_settings(&cli)?;
    match cli.command {
        Command::Ingest(a) => commands::ingest(&settings, &a),
        Command::Search(a) => commands::search(&settings, &a),
        Command::Extract(a) => commands::extract(&settings, &a),
        Command::Status(a) => commands::status(&settings, &a),
        Command::Embed(a) => commands::embed(&settings, &a),
        Command::Generate(a) => commands::generate(&settings, &a),
        Command::Models(a) => commands::models(&settings, &a),
        Command::Bench(a) => bench::run(&settings, &a),
        Command::SampleCorpus { dir } => commands::sample_corpus(&settings, &dir),
    }
}
