//! The one error type of the shirabe library, and its `Result` alias.
//!
//! Library code returns [`Error`]; the binary wraps it in `anyhow` at the edge
//! and prints the whole cause chain. Variants say what the caller can do:
//! a per-file problem ([`Error::Pdf`], [`Error::Unsupported`]) is reported and
//! the run goes on, while index problems stop the command.

use std::path::PathBuf;

/// Everything that can go wrong in the shirabe library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing a file failed.
    #[error("{}: {source_error}", path.display())]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The underlying error (shown in the message, so not chained again).
        source_error: std::io::Error,
    },
    /// A PDF could not be read at all (damaged, encrypted, not a PDF).
    #[error("{0}")]
    Pdf(String),
    /// A file type shirabe does not ingest.
    #[error("unsupported file type (shirabe reads .pdf, .txt and .md files)")]
    Unsupported,
    /// There is no index in the directory.
    #[error("no index at {} (run `shirabe ingest PATH...` first, or pass --index DIR)", .0.display())]
    NoIndex(PathBuf),
    /// The search index could not be opened, written or queried.
    #[error("index error: {0}")]
    Index(String),
    /// The index on disk was written by an incompatible version or settings.
    #[error("{0}")]
    IndexMismatch(String),
    /// A part of the index is damaged (unreadable, truncated, missing);
    /// `shirabe doctor --repair` rebuilds it from the parts that are not.
    #[error("{}: {part} is damaged: {detail} (`shirabe doctor` says more; `shirabe doctor --repair` rebuilds it)", dir.display())]
    Damaged {
        /// The index directory.
        dir: PathBuf,
        /// Which part: "the manifest", "the BM25 index", "the vector store …".
        part: String,
        /// What is wrong with it.
        detail: String,
    },
    /// A tokenizer file could not be found or loaded.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// A model could not be found, loaded or run.
    #[error("model: {0}")]
    Model(String),
    /// The configuration (file, flags or environment) is invalid.
    #[error("configuration: {0}")]
    Config(String),
    /// An OpenAI-compatible endpoint failed.
    #[error(transparent)]
    Endpoint(#[from] crate::answer::openai::CompletionError),
    /// A query could not be understood.
    #[error("query: {0}")]
    Query(String),
}

/// The `Result` of every fallible library function.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// A damaged part of the index in `dir`.
    pub fn damaged(dir: &std::path::Path, part: impl Into<String>, detail: impl ToString) -> Self {
        Error::Damaged {
            dir: dir.to_path_buf(),
            part: part.into(),
            detail: detail.to_string(),
        }
    }

    /// Wraps an I/O error with the path it happened on.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source_error: source,
        }
    }
}

impl From<tantivy::TantivyError> for Error {
    fn from(e: tantivy::TantivyError) -> Self {
        Error::Index(e.to_string())
    }
}

impl From<tantivy::directory::error::OpenDirectoryError> for Error {
    fn from(e: tantivy::directory::error::OpenDirectoryError) -> Self {
        Error::Index(e.to_string())
    }
}
