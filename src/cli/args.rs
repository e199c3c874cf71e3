//! Command-line arguments as typed (clap), before any validation.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

const AFTER_HELP: &str = "\
Exit status: 0 on success; 1 when a search finds nothing, the documents do \
not answer a question, or some files could not be ingested; 2 on error; 130 \
when Ctrl-C stopped the work (what was done is kept).

Examples:
  shirabe ingest corpora/sample
  shirabe ask \"How much was the budget for the Osaka warehouse?\"
  shirabe search \"Osaka warehouse\" -k 5 --explain
  shirabe search '\"budget approved\"' --doc '*minutes*' --json
  shirabe extract report.pdf | less";

/// shirabe (調べ): search your PDF archives from the terminal, with every
/// passage traced to its document and page.
#[derive(Debug, Parser)]
#[command(name = "shirabe", version, after_help = AFTER_HELP, max_term_width = 100)]
pub struct Cli {
    /// Index directory.
    #[arg(long, global = true, env = "SHIRABE_INDEX", value_name = "DIR")]
    pub index: Option<PathBuf>,
    /// Config file (default: ~/.config/shirabe/config.toml).
    #[arg(long, global = true, env = "SHIRABE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// No progress bars or notes; errors only.
    #[arg(long, short, global = true)]
    pub quiet: bool,
    /// When to use colours (NO_COLOR is respected in auto mode).
    #[arg(long, global = true, value_enum, value_name = "WHEN")]
    pub color: Option<ColorChoice>,
    /// The command to run (`tui` when none is given in a terminal).
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Colour choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorChoice {
    /// Colour when writing to a terminal.
    Auto,
    /// Always colour.
    Always,
    /// Never colour.
    Never,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Add PDFs, text and Markdown files to the index (directories recursively).
    Ingest(IngestArgs),
    /// Search the index and print ranked passages with their pages.
    Search(SearchArgs),
    /// Answer a question from the index, with checked [n] citations and the
    /// sources (extractive without a model).
    Ask(AskArgs),
    /// Summarize a document (or what the archive says about a query), cited.
    Summarize(SummarizeArgs),
    /// Serve an OpenAI-compatible API (model "shirabe" answers from the index).
    Serve(ServeArgs),
    /// Keep the index in step with folders: new and changed files are
    /// ingested (and embedded), deleted and moved ones removed, as they
    /// happen. Holds the index's write lock; an `ingest` meanwhile hands
    /// its paths over.
    Watch(WatchArgs),
    /// A conversation: follow-up questions, /save FILE.md, /quit.
    Chat(ChatArgs),
    /// The terminal UI: search as you type, ask with streaming cited
    /// answers, preview the cited page, browse and ingest documents.
    Tui(Box<TuiArgs>),
    /// Print the text of a file page by page, as the index sees it.
    Extract(ExtractArgs),
    /// Show what is in the index.
    Status(StatusArgs),
    /// Check every part of the index; --repair rebuilds the damaged ones.
    Doctor(DoctorArgs),
    /// List local models or download one.
    Models(ModelsArgs),
    /// Generate text with a Qwen model (streams to stdout).
    Generate(GenerateArgs),
    /// Embed texts with an embedding model (Qwen3-Embedding or
    /// sentence-transformers); one JSON vector per line.
    Embed(EmbedArgs),
    /// Embed the indexed chunks that have no vector yet (resumable).
    EmbedIndex(EmbedIndexArgs),
    /// Measure retrieval quality on labelled queries (Recall@k, MRR, nDCG).
    Eval(EvalArgs),
    /// Move the index's vectors to Qdrant (or back to the embedded store).
    Migrate(MigrateArgs),
    /// Measure shirabe's speed.
    Bench(BenchArgs),
    /// Write the generated sample corpus to DIR (used by tests).
    #[command(hide = true)]
    SampleCorpus {
        /// Where to write it.
        dir: PathBuf,
        /// Write scanned pages instead (for OCR): PDFs of rasterised text
        /// through every image filter, each beside a `.truth` file of its
        /// text. Needs fonts-dejavu-core and fonts-ipafont-gothic (and
        /// opj_compress for JPEG 2000).
        #[arg(long)]
        scanned: bool,
    },
}

/// `ingest`
#[derive(Debug, Args)]
pub struct IngestArgs {
    /// Files and directories to ingest.
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Also remove indexed files that no longer exist.
    #[arg(long)]
    pub prune: bool,
    /// Tokenizer for chunk sizes: a tokenizer.json, a model directory, a Hugging
    /// Face repo id (looked up in the local cache), or "estimate".
    #[arg(long, value_name = "SPEC")]
    pub tokenizer: Option<String>,
    /// Target tokens per chunk [default: 512].
    #[arg(long, value_name = "N")]
    pub chunk_tokens: Option<usize>,
    /// Tokens shared by consecutive chunks [default: 64].
    #[arg(long, value_name = "N")]
    pub chunk_overlap: Option<usize>,
    /// Worker threads [default: one per core].
    #[arg(long, short, value_name = "N")]
    pub jobs: Option<usize>,
    /// OCR pages that have no text layer: auto (when Tesseract is
    /// installed), always (every page with images, replacing its text
    /// layer) or never (count them only). Default from the config, else auto.
    #[arg(long, value_enum, value_name = "WHEN")]
    pub ocr: Option<shirabe::ingest::ocr::OcrMode>,
    /// Tesseract languages for OCR, e.g. "eng", "jpn+eng"; default: from
    /// the document's script.
    #[arg(long, value_name = "LANGS")]
    pub ocr_lang: Option<String>,
    /// Parse PDFs in this process instead of worker processes: a little
    /// less overhead, but a file that exhausts memory ends the run.
    #[arg(long)]
    pub in_process: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
    /// Embedding options.
    #[command(flatten)]
    pub embed: EmbedModelArgs,
    /// Do not embed: a BM25-only index (`embed-index` can add vectors later).
    #[arg(long)]
    pub no_embed: bool,
    /// Return once BM25 is ready and embed in a background process
    /// (`shirabe status` shows its progress; the log is INDEX/embed.log).
    #[arg(long, conflicts_with = "no_embed")]
    pub background: bool,
    /// Qdrant options.
    #[command(flatten)]
    pub qdrant: QdrantArgs,
}

/// Which embedding model, and how to run it.
#[derive(Debug, Args, Clone, Default)]
pub struct EmbedModelArgs {
    /// Embedding model: a directory or Hugging Face repo id (Qwen3-Embedding,
    /// or a sentence-transformers BERT/XLM-RoBERTa model) [default: the
    /// index's model, else Qwen/Qwen3-Embedding-0.6B if it is cached].
    #[arg(long, env = "SHIRABE_EMBED_MODEL", value_name = "MODEL")]
    pub embed_model: Option<String>,
    /// Weight type of the embedding model [default: auto: bf16 for a
    /// BERT-family model on a CPU with AVX512-BF16, else f32].
    #[arg(long, value_enum, value_name = "DTYPE")]
    pub embed_dtype: Option<shirabe::models::EmbedDtype>,
    /// Keep only the first N dimensions (Qwen3-Embedding, Matryoshka).
    #[arg(long, value_name = "N")]
    pub dims: Option<usize>,
    /// How the store keeps vectors [default: f16].
    #[arg(long, value_enum, value_name = "DTYPE")]
    pub vector_dtype: Option<shirabe::index::vectors::VectorDtype>,
}

/// Where a Qdrant server is.
#[derive(Debug, Args, Clone, Default)]
pub struct QdrantArgs {
    /// Mirror the index in this Qdrant server (chunks, BM25 terms and
    /// vectors) and search there (gRPC URL, e.g. http://localhost:6334;
    /// https for TLS; several, comma-separated, for a cluster's nodes).
    #[arg(long, env = "SHIRABE_QDRANT_URL", value_name = "URL")]
    pub qdrant: Option<String>,
    /// Qdrant API key.
    #[arg(
        long,
        env = "QDRANT_API_KEY",
        value_name = "KEY",
        hide_env_values = true
    )]
    pub qdrant_api_key: Option<String>,
    /// Qdrant collection [default: shirabe-<digest of the index directory>].
    #[arg(long, value_name = "NAME")]
    pub qdrant_collection: Option<String>,
    /// Shards of a new collection [default: Qdrant's].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub qdrant_shards: Option<u32>,
    /// Copies of each shard of a new collection (2 survives a node down).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub qdrant_replication: Option<u32>,
}

/// `migrate`
#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// Where the vectors go: "qdrant URL", or "embedded" to stop using Qdrant.
    #[arg(long, value_name = "TARGET", num_args = 1..=2, required = true)]
    pub to: Vec<String>,
    /// Qdrant options.
    #[command(flatten)]
    pub qdrant: QdrantArgs,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `embed-index`
#[derive(Debug, Args)]
pub struct EmbedIndexArgs {
    /// Qdrant options.
    #[command(flatten)]
    pub qdrant: QdrantArgs,
    /// Embedding options.
    #[command(flatten)]
    pub embed: EmbedModelArgs,
    /// Embed at most N chunks, then stop (run again to go on).
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `eval`
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// JSON lines: {"query": "...", "doc": "file name or glob", "page": N}
    /// (`page` optional; `pages: [..]` also accepted).
    #[arg(value_name = "QUERIES.jsonl")]
    pub queries: PathBuf,
    /// Modes to compare, comma-separated [default: every mode the index supports].
    #[arg(long, value_enum, value_name = "MODES", value_delimiter = ',')]
    pub modes: Vec<shirabe::retrieve::Mode>,
    /// Print per-query results too.
    #[arg(long, short)]
    pub verbose: bool,
    /// How hybrid fuses the BM25 and dense rankings.
    #[arg(long, value_enum, value_name = "HOW", default_value_t = shirabe::retrieve::Fusion::Rrf)]
    pub fusion: shirabe::retrieve::Fusion,
    /// Weight of the BM25 ranking (hybrid).
    #[arg(long, value_name = "W", default_value_t = 1.0)]
    pub bm25_weight: f32,
    /// Weight of the dense ranking (hybrid).
    #[arg(long, value_name = "W", default_value_t = 1.0)]
    pub dense_weight: f32,
    /// RRF constant k (with --fusion rrf).
    #[arg(long, value_name = "K", default_value_t = 60.0)]
    pub rrf_k: f32,
    /// Qdrant options.
    #[command(flatten)]
    pub qdrant: QdrantArgs,
    /// JSON output.
    #[arg(long)]
    pub json: bool,
    /// The file is an answer set ({"id", "question", "lang", "doc",
    /// "pages", "facts": [[alternatives]]} or "answerable": false): score
    /// answers, not rankings.
    #[arg(long)]
    pub answers: bool,
    /// With --answers: give the model only the chunks of the answer pages
    /// (the oracle row: generation without retrieval's losses).
    #[arg(long, requires = "answers")]
    pub oracle: bool,
    /// With --answers: only the first N questions.
    #[arg(long, value_name = "N", requires = "answers")]
    pub limit: Option<usize>,
    /// With --answers: take each answer as written in an earlier run's
    /// --json output (its `raw` text, by question id) instead of writing
    /// it, and check it again: scores a new checker or grounding rule
    /// without running the model (give the same --model, --ctx and
    /// --max-tokens, so the passages are the same).
    #[arg(long, value_name = "RUN.json", requires = "answers")]
    pub replay: Option<PathBuf>,
    /// With --answers: passages to retrieve per question.
    #[arg(long, default_value_t = 40, value_name = "N")]
    pub passages: usize,
    /// With --answers: the model that answers (none: extractive).
    #[command(flatten)]
    pub backend: BackendArgs,
}

/// `search`
#[derive(Debug, Args)]
pub struct SearchArgs {
    /// Words to look for; "quoted text" must appear as a phrase.
    #[arg(required = true, value_name = "QUERY")]
    pub query: Vec<String>,
    /// Number of passages [default: 10].
    #[arg(short = 'k', long = "limit", value_name = "N")]
    pub limit: Option<usize>,
    /// Only documents whose path or file name matches this glob.
    #[arg(long = "doc", value_name = "GLOB")]
    pub doc: Option<String>,
    /// How to rank [default: hybrid when the index has vectors].
    #[arg(long, value_enum, value_name = "MODE")]
    pub mode: Option<shirabe::retrieve::Mode>,
    /// Show each hit's BM25 rank and score, dense rank and similarity, and
    /// fused score.
    #[arg(long)]
    pub explain: bool,
    /// Also show the N chunks before and after each hit.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub neighbors: usize,
    /// How hybrid fuses the BM25 and dense rankings: reciprocal rank (each
    /// list's first hit kept in the top four), or the weighted sum of each
    /// list's min-max-normalized scores.
    #[arg(long, value_enum, value_name = "HOW", default_value_t = shirabe::retrieve::Fusion::Rrf)]
    pub fusion: shirabe::retrieve::Fusion,
    /// Weight of the BM25 ranking (hybrid).
    #[arg(long, value_name = "W", default_value_t = 1.0)]
    pub bm25_weight: f32,
    /// Weight of the dense ranking (hybrid).
    #[arg(long, value_name = "W", default_value_t = 1.0)]
    pub dense_weight: f32,
    /// RRF constant k (with --fusion rrf).
    #[arg(long, value_name = "K", default_value_t = 60.0)]
    pub rrf_k: f32,
    /// Rerank the top hits with a Qwen3-Reranker (slow on a CPU: the cost is
    /// printed).
    #[arg(long)]
    pub rerank: bool,
    /// The reranking model.
    #[arg(
        long,
        env = "SHIRABE_RERANK_MODEL",
        default_value = shirabe::models::DEFAULT_RERANK_MODEL,
        value_name = "MODEL"
    )]
    pub rerank_model: String,
    /// How many of the top hits to rerank.
    #[arg(long, default_value_t = 20, value_name = "N")]
    pub rerank_depth: usize,
    /// Qdrant options.
    #[command(flatten)]
    pub qdrant: QdrantArgs,
    /// One JSON object per line.
    #[arg(long)]
    pub json: bool,
}

/// `ask`
#[derive(Debug, Args)]
pub struct AskArgs {
    /// The question.
    #[arg(required = true, value_name = "QUESTION")]
    pub question: Vec<String>,
    /// Passages to retrieve before packing.
    #[arg(long, default_value_t = 40, value_name = "N")]
    pub passages: usize,
    /// Ask about these documents (a path, file name or glob; repeat for
    /// more). With a model, when they fit its window, every page of them
    /// goes in the prompt before the question, and is kept in the prompt
    /// cache so the next question about them reads only itself; else the
    /// passages are retrieved from them.
    #[arg(long = "doc", value_name = "FILE|GLOB")]
    pub doc: Vec<String>,
    /// With --doc, retrieve passages from the documents even when they
    /// would fit whole.
    #[arg(long)]
    pub no_pin: bool,
    /// How to rank [default: hybrid when the index has vectors].
    #[arg(long, value_enum, value_name = "MODE")]
    pub mode: Option<shirabe::retrieve::Mode>,
    /// Print the packed prompt (to stderr) before answering.
    #[arg(long)]
    pub show_context: bool,
    /// One JSON object: answer, citations with support, passages, usage, timings.
    #[arg(long)]
    pub json: bool,
    /// The model and how to run it.
    /// Qdrant options.
    #[command(flatten)]
    pub qdrant: QdrantArgs,
    #[command(flatten)]
    pub backend: BackendArgs,
}

/// What writes answers and summaries.
#[derive(Debug, Args, Clone)]
pub struct BackendArgs {
    /// A Qwen model to write the answer (directory, Hugging Face repo id or
    /// GGUF file); without one the answer is extractive.
    #[arg(long, env = "SHIRABE_MODEL", value_name = "MODEL")]
    pub model: Option<String>,
    /// Answer extractively even if a model is configured.
    #[arg(long)]
    pub extractive: bool,
    /// An OpenAI-compatible endpoint (vLLM, Ollama, llama.cpp, …) to answer
    /// with; --model is then the model name it serves.
    #[arg(long, env = "OPENAI_BASE_URL", value_name = "URL")]
    pub endpoint: Option<String>,
    /// The endpoint's API key.
    #[arg(
        long,
        env = "OPENAI_API_KEY",
        value_name = "KEY",
        hide_env_values = true
    )]
    pub api_key: Option<String>,
    /// Use DashScope's OpenAI-compatible mode (key from DASHSCOPE_API_KEY;
    /// model default qwen-plus).
    #[arg(long)]
    pub dashscope: bool,
    /// Endpoint timeout in seconds.
    #[arg(long, default_value_t = 300, value_name = "SECONDS")]
    pub timeout: u64,
    /// Context window in tokens [default: the model's, else 131072].
    #[arg(long, value_name = "TOKENS")]
    pub ctx: Option<usize>,
    /// Tokens reserved for the answer (its longest; the prompt gets the
    /// rest of the window).
    #[arg(long = "max-tokens", default_value_t = 1024, value_name = "N")]
    pub max_answer_tokens: usize,
    /// On a CPU, size the context so the prompt's prefill takes at most
    /// this long (seconds; measured prefill speed, cached). Ignored with --ctx.
    #[arg(long, default_value_t = 60.0, value_name = "SECONDS")]
    pub max_wait: f64,
    /// Sampling temperature (0 = greedy).
    #[arg(long, default_value_t = 0.0, value_name = "T")]
    pub temperature: f32,
    /// Weight type of the model.
    #[arg(long, value_enum, default_value_t, value_name = "DTYPE")]
    pub dtype: shirabe::models::WeightDtype,
    /// KV cache type of a local model: f32, bf16, f16, or q8 (int8 with a
    /// scale per 32 elements, 56% of the memory of f16; CPU only).
    /// Default: bf16/f16 for such weights, q8 for quantized ones on an
    /// AVX-512 or AVX2 CPU (else f16), f32 for f32.
    #[arg(
        long,
        env = "SHIRABE_CACHE_DTYPE",
        value_enum,
        ignore_case = true,
        value_name = "TYPE"
    )]
    pub cache_dtype: Option<shirabe::models::qwen3::KvType>,
    /// The answering instructions, from a file, instead of the built-in
    /// system prompt (`ask` and `eval --answers`).
    #[arg(long, value_name = "FILE")]
    pub system_prompt: Option<std::path::PathBuf>,
    /// Answer even when no passage seems to cover the question (by
    /// default such a question is declined, naming the words the index
    /// lacks, and the nearest passages are shown).
    #[arg(long)]
    pub always_answer: bool,
    /// Give every sentence a local model ends without a citation marker
    /// one, whose passage number the model chooses among the passages
    /// given (by default the model places its own markers, and markers
    /// naming no passage are removed when the answer is checked).
    #[arg(long)]
    pub guided_citations: bool,
}

/// `chat`
#[derive(Debug, Args)]
pub struct ChatArgs {
    /// Passages to retrieve per question.
    #[arg(long, default_value_t = 40, value_name = "N")]
    pub passages: usize,
    /// Talk about these documents (as `ask --doc`): pinned whole when
    /// they fit the model's window, read once for the whole conversation.
    #[arg(long = "doc", value_name = "FILE|GLOB")]
    pub doc: Vec<String>,
    /// One JSON object per answer (its citations, context and timings).
    #[arg(long)]
    pub json: bool,
    /// The model and how to run it.
    #[command(flatten)]
    pub backend: BackendArgs,
}

/// `tui`
#[derive(Debug, Args)]
pub struct TuiArgs {
    /// A query to start with.
    #[arg(value_name = "QUERY")]
    pub query: Vec<String>,
    /// Passages to retrieve per question.
    #[arg(long, default_value_t = 40, value_name = "N")]
    pub passages: usize,
    /// Leave the mouse to the terminal (text selection) instead of
    /// scrolling panes with it.
    #[arg(long)]
    pub no_mouse: bool,
    /// The model and how to run it.
    #[command(flatten)]
    pub backend: BackendArgs,
}

/// `serve`
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on (loopback by default).
    #[arg(long, default_value = "127.0.0.1", value_name = "HOST")]
    pub host: String,
    /// Port (0 = any free one; the address is printed).
    #[arg(long, default_value_t = 8088, value_name = "N")]
    pub port: u16,
    /// Bearer token clients must send (required off loopback).
    #[arg(
        long,
        env = "SHIRABE_SERVE_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
    /// Passages to retrieve per question.
    #[arg(long, default_value_t = 40, value_name = "N")]
    pub passages: usize,
    /// Answers written at once (default: 1 with a local model, which has
    /// the CPU to itself; 4 with an endpoint; one per core for extractive
    /// answers). Searches run beside them.
    #[arg(long, value_name = "N")]
    pub workers: Option<usize>,
    /// Answer requests that may wait for a worker; more get 503 and a
    /// Retry-After.
    #[arg(long, default_value_t = 64, value_name = "N")]
    pub queue: usize,
    /// Connections held open at once; more are closed at once.
    #[arg(long, default_value_t = 512, value_name = "N")]
    pub max_connections: usize,
    /// Largest request body, in bytes.
    #[arg(long, default_value_t = 1 << 20, value_name = "BYTES")]
    pub max_body: usize,
    /// Longest question, in characters.
    #[arg(long, default_value_t = 8_000, value_name = "CHARS")]
    pub max_question: usize,
    /// Seconds a client may take to send a request's headers, and again
    /// its body.
    #[arg(long, default_value_t = 10, value_name = "SECS")]
    pub read_timeout: u64,
    /// Seconds to let answers in flight finish after Ctrl-C or SIGTERM.
    #[arg(long, default_value_t = 120, value_name = "SECS")]
    pub grace: u64,
    /// Allow browsers on this origin (`*` for any) to call the API (CORS
    /// is off by default).
    #[arg(long, value_name = "ORIGIN")]
    pub cors: Option<String>,
    /// The model and how to run it.
    #[command(flatten)]
    pub backend: BackendArgs,
}

/// `summarize`
#[derive(Debug, Args)]
pub struct SummarizeArgs {
    /// The document: a file name, path or glob (see `status --files`).
    #[arg(value_name = "DOC", required_unless_present = "all")]
    pub doc: Option<String>,
    /// Summarize what the whole archive says about QUERY instead.
    #[arg(long, value_name = "QUERY", conflicts_with = "doc")]
    pub all: Option<String>,
    /// Meeting minutes: decisions, action items (owner, due date), open questions.
    #[arg(long)]
    pub meeting: bool,
    /// JSON output: summary, citations, passages, calls, levels.
    #[arg(long)]
    pub json: bool,
    /// The model and how to run it.
    #[command(flatten)]
    pub backend: BackendArgs,
}

/// `watch`
#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Folders to watch; default: `[watch] folders` in the config and
    /// the folders already ingested into this index.
    #[arg(value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Catch up once (ingest what changed, remove what is gone) and exit:
    /// for cron or systemd timers.
    #[arg(long)]
    pub once: bool,
    /// One JSON object per event on stdout: watching, batch, embedded,
    /// handed_over, added, root_gone, root_back, pending, error.
    #[arg(long)]
    pub json: bool,
    /// Milliseconds of quiet after the last change before a batch runs.
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    pub debounce: u64,
    /// Milliseconds a file's size and modification time must hold still
    /// (files still being written wait).
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    pub settle: u64,
    /// Poll the folders every SECS seconds instead of using filesystem
    /// events (network mounts, where events do not arrive).
    #[arg(long, value_name = "SECS")]
    pub poll: Option<f64>,
    /// Do not embed new chunks (BM25 only).
    #[arg(long)]
    pub no_embed: bool,
    /// OCR pages without a text layer (as `ingest --ocr`).
    #[arg(long, value_enum, value_name = "WHEN")]
    pub ocr: Option<shirabe::ingest::ocr::OcrMode>,
}

/// `extract`
#[derive(Debug, Args)]
pub struct ExtractArgs {
    /// A PDF, text or Markdown file.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Only these pages, e.g. "1-3,7".
    #[arg(long, value_name = "RANGES")]
    pub pages: Option<String>,
    /// JSON: {"path", "pages": [{"page", "label", "text", "furniture"}], ...};
    /// "furniture" lists the byte ranges of running headers, footers and
    /// page numbers.
    #[arg(long)]
    pub json: bool,
    /// With --json, each page's word boxes: [start, end, x0, y0, x1, y1]
    /// (byte range of the text; PDF points, origin bottom left).
    #[arg(long, requires = "json", conflicts_with = "body")]
    pub boxes: bool,
    /// The text passages are made of: running headers, footers and page
    /// numbers left out.
    #[arg(long)]
    pub body: bool,
    /// OCR pages that have no text layer: auto (when Tesseract is
    /// installed), always (every page with images, replacing its text
    /// layer) or never (count them only). Default: never for extract.
    #[arg(long, value_enum, value_name = "WHEN")]
    pub ocr: Option<shirabe::ingest::ocr::OcrMode>,
    /// Tesseract languages for OCR, e.g. "eng", "jpn+eng"; default: from
    /// the document's script.
    #[arg(long, value_name = "LANGS")]
    pub ocr_lang: Option<String>,
}

/// `embed`
#[derive(Debug, Args)]
pub struct EmbedArgs {
    /// Texts to embed; without any, one text per line of standard input.
    #[arg(value_name = "TEXT")]
    pub texts: Vec<String>,
    /// Model: a local directory or a Hugging Face repo id in the local cache.
    #[arg(
        long,
        env = "SHIRABE_EMBED_MODEL",
        default_value = "Qwen/Qwen3-Embedding-0.6B",
        value_name = "MODEL"
    )]
    pub embed_model: String,
    /// Embed as search queries (adds the retrieval instruction).
    #[arg(long)]
    pub query: bool,
    /// Keep only the first N dimensions (Matryoshka), renormalised.
    #[arg(long, value_name = "N")]
    pub dims: Option<usize>,
    /// Weight type of the model (auto: bf16 for a BERT-family model on a
    /// CPU with AVX512-BF16, else f32).
    #[arg(long, value_enum, default_value_t, value_name = "DTYPE")]
    pub dtype: shirabe::models::EmbedDtype,
    /// Texts per batch.
    #[arg(long, default_value_t = 8, value_name = "N")]
    pub batch: usize,
}

/// `models`
#[derive(Debug, Args)]
pub struct ModelsArgs {
    /// What to do.
    #[command(subcommand)]
    pub action: ModelsAction,
}

/// `models` actions.
#[derive(Debug, Subcommand)]
pub enum ModelsAction {
    /// Models in the local Hugging Face cache.
    List {
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Download a model repo (config, tokenizer, safetensors) into the cache.
    Pull {
        /// Repo id, e.g. Qwen/Qwen3-Embedding-0.6B.
        repo: String,
    },
}

/// `generate`
#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// Model: a local directory or a Hugging Face repo id in the local cache.
    #[arg(
        long,
        env = "SHIRABE_MODEL",
        default_value = "Qwen/Qwen3-0.6B",
        value_name = "MODEL"
    )]
    pub model: String,
    /// The prompt (sent as one user turn of Qwen's chat format unless --raw).
    #[arg(long, value_name = "TEXT")]
    pub prompt: String,
    /// A system message for the chat format.
    #[arg(long, value_name = "TEXT")]
    pub system: Option<String>,
    /// Use the prompt as it is, without the chat format.
    #[arg(long)]
    pub raw: bool,
    /// Most tokens to generate.
    #[arg(long, default_value_t = 256, value_name = "N")]
    pub max_tokens: usize,
    /// Sampling temperature (0 = greedy).
    #[arg(long, default_value_t = 0.0, value_name = "T")]
    pub temperature: f32,
    /// Nucleus sampling mass.
    #[arg(long, default_value_t = 1.0, value_name = "P")]
    pub top_p: f32,
    /// Sample among the K most likely tokens (0 = all).
    #[arg(long, default_value_t = 0, value_name = "K")]
    pub top_k: usize,
    /// Penalty for repeating generated tokens (1 = none).
    #[arg(long, default_value_t = 1.0, value_name = "X")]
    pub repeat_penalty: f32,
    /// Random seed.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Weight type of the model.
    #[arg(long, value_enum, default_value_t, value_name = "DTYPE")]
    pub dtype: shirabe::models::WeightDtype,
    /// KV cache type: f32, bf16, f16, or q8 (int8 with a scale per 32
    /// elements, 56% of the memory of f16; CPU only). Default: bf16/f16
    /// for such weights, q8 for quantized ones on an AVX-512 or AVX2 CPU
    /// (else f16), f32 for f32.
    #[arg(long, value_enum, ignore_case = true, value_name = "TYPE")]
    pub cache_dtype: Option<shirabe::models::qwen3::KvType>,
    /// Print one JSON object at the end: text, token ids, counts, speeds.
    #[arg(long)]
    pub json: bool,
}

/// `doctor`
#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Rebuild the damaged parts: a damaged vector store is dropped (then
    /// `embed-index`), a damaged BM25 index or manifest is rebuilt by
    /// reading the indexed files again.
    #[arg(long)]
    pub repair: bool,
    /// JSON output.
    #[arg(long)]
    pub json: bool,
}

/// `status`
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// List every file.
    #[arg(long)]
    pub files: bool,
    /// JSON output.
    #[arg(long)]
    pub json: bool,
}

/// `bench`
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// What to measure.
    #[command(subcommand)]
    pub what: BenchWhat,
}

/// Benchmarks.
#[derive(Debug, Subcommand)]
pub enum BenchWhat {
    /// Dense search latency (p50/p99) over random unit vectors in the
    /// embedded store, and its size on disk.
    Vectors {
        /// Store sizes, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "100000,1000000")]
        rows: Vec<usize>,
        /// Dimensions.
        #[arg(long, default_value_t = 1024)]
        dims: usize,
        /// How the store keeps vectors.
        #[arg(long, value_enum, default_value = "f16")]
        dtype: shirabe::index::vectors::VectorDtype,
        /// Queries to time per size.
        #[arg(long, default_value_t = 200)]
        queries: usize,
        /// Also build an HNSW graph (and time ANN search, recall@10 against
        /// exact) for sizes up to this (graph building is single-threaded).
        #[arg(long, default_value_t = 200_000)]
        ann_max_rows: usize,
        /// Candidates an HNSW search explores.
        #[arg(long, default_value_t = shirabe::index::vectors::ANN_EF)]
        ef: usize,
        /// Vectors around 1,000 random centres (like real embeddings, which
        /// have few intrinsic dimensions) instead of uniform on the sphere
        /// (the worst case for any ANN index).
        #[arg(long)]
        clustered: bool,
        /// Where to build the stores [default: a temporary directory].
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Ingest embedding throughput: a random-weight model in real shapes
    /// embeds synthetic 512-token chunks through the whole pipeline
    /// (tokenizer, batches, store, commits). Needs the real Qwen3 tokenizer
    /// (corpora/fetch-qwen-tokenizer.sh).
    IngestEmbed {
        /// qwen3-embedding-0.6b or qwen3-4b.
        #[arg(long, default_value = "qwen3-embedding-0.6b")]
        preset: String,
        /// Weight type.
        #[arg(long, value_enum, default_value = "bf16")]
        dtype: shirabe::models::WeightDtype,
        /// Chunks to embed.
        #[arg(long, default_value_t = 16)]
        chunks: usize,
        /// The tokenizer.json.
        #[arg(long, default_value = "corpora/models/qwen3-tokenizer/tokenizer.json")]
        tokenizer: PathBuf,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Time to first token of `ask`'s prompt (packing, tokenizing, prefill)
    /// with a random-weight model in real shapes, at several windows.
    Ttft {
        /// qwen3-0.6b or qwen3-4b.
        #[arg(long, default_value = "qwen3-0.6b")]
        preset: String,
        /// Weight type.
        #[arg(long, value_enum, default_value = "bf16")]
        dtype: shirabe::models::WeightDtype,
        /// Windows in tokens, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "1024,4096,8192")]
        ctx: Vec<usize>,
        /// The tokenizer.json.
        #[arg(long, default_value = "corpora/models/qwen3-tokenizer/tokenizer.json")]
        tokenizer: PathBuf,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// TUI frame time while an answer streams: the real draw and the real
    /// terminal backend (writing to a sink), with 30 results and a long
    /// answer growing by a few words each frame.
    Tui {
        /// Terminal columns.
        #[arg(long, default_value_t = 200)]
        width: u16,
        /// Terminal rows.
        #[arg(long, default_value_t = 60)]
        height: u16,
        /// Frames to draw.
        #[arg(long, default_value_t = 2_000)]
        frames: usize,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Context packing time for a full window of retrieved passages, with
    /// the real Qwen3 tokenizer.
    Pack {
        /// The window in tokens.
        #[arg(long, default_value_t = 131_072)]
        ctx: usize,
        /// Retrieved passages of ~512 tokens to choose from.
        #[arg(long, default_value_t = 400)]
        passages: usize,
        /// The tokenizer.json.
        #[arg(long, default_value = "corpora/models/qwen3-tokenizer/tokenizer.json")]
        tokenizer: PathBuf,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Search latency (p50/p99) on a synthetic index of many chunks.
    Search {
        /// Chunks in the synthetic index.
        #[arg(long, default_value_t = 100_000)]
        chunks: usize,
        /// Queries to time.
        #[arg(long, default_value_t = 2_000)]
        queries: usize,
        /// Keep the synthetic index here (reused if it exists).
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
}
