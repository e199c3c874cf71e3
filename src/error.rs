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
    /// A model could not be found, loaded or run, because a library it
    /// rests on (candle, hf-hub, serde_json, ureq) failed: `source` is that
    /// library's error, kept for [`std::error::Error::source`].
    #[error("model: {}", with_context(context, source))]
    ModelFailed {
        /// What was being done.
        context: String,
        /// The library's error.
        #[source]
        source: BoxError,
    },
    /// A tokenizer could not be loaded or run (the tokenizers crate's
    /// error kept as `source`).
    #[error("tokenizer: {}", with_context(context, source))]
    TokenizerFailed {
        /// What was being done.
        context: String,
        /// The library's error.
        #[source]
        source: BoxError,
    },
    /// The index (its manifest, or a Qdrant collection) could not be read,
    /// written or queried, because of `source`.
    #[error("index error: {}", with_context(context, source))]
    IndexFailed {
        /// What was being done.
        context: String,
        /// The library's error.
        #[source]
        source: BoxError,
    },
}

/// `context: source`, or the source alone without a context.
fn with_context(context: &str, source: &BoxError) -> String {
    match context {
        "" => source.to_string(),
        _ => format!("{context}: {source}"),
    }
}

/// Another library's error, kept whole as a cause.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

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

    /// A model's library error as [`Error::ModelFailed`], without context.
    pub fn model_lib(e: impl Into<BoxError>) -> Error {
        Error::model("")(e)
    }

    /// A tokenizer's error as [`Error::TokenizerFailed`], without context.
    pub fn tokenizer_lib(e: impl Into<BoxError>) -> Error {
        Error::tokenizer("")(e)
    }

    /// An index library's error as [`Error::IndexFailed`], without context.
    pub fn index_lib(e: impl Into<BoxError>) -> Error {
        Error::index("")(e)
    }

    /// `map_err` for a model's library error: [`Error::ModelFailed`] with
    /// `context` (its message shows the source after it).
    pub fn model<E: Into<BoxError>>(context: impl Into<String>) -> impl FnOnce(E) -> Error {
        let context = context.into();
        move |e| Error::ModelFailed {
            context,
            source: e.into(),
        }
    }

    /// `map_err` for a tokenizer's error: [`Error::TokenizerFailed`].
    pub fn tokenizer<E: Into<BoxError>>(context: impl Into<String>) -> impl FnOnce(E) -> Error {
        let context = context.into();
        move |e| Error::TokenizerFailed {
            context,
            source: e.into(),
        }
    }

    /// `map_err` for an index library's error: [`Error::IndexFailed`].
    pub fn index<E: Into<BoxError>>(context: impl Into<String>) -> impl FnOnce(E) -> Error {
        let context = context.into();
        move |e| Error::IndexFailed {
            context,
            source: e.into(),
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
        Error::index_lib(e)
    }
}

impl From<tantivy::directory::error::OpenDirectoryError> for Error {
    fn from(e: tantivy::directory::error::OpenDirectoryError) -> Self {
        Error::index_lib(e)
    }
}

/// An error and its causes as one line, `outer: cause: its cause`, leaving
/// out a cause whose text the line already holds (shirabe's errors show
/// their source in their own message and also keep it as
/// [`std::error::Error::source`]).
pub fn chain_text(err: &(dyn std::error::Error + 'static)) -> String {
    let mut line = err.to_string();
    let mut cause = err.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        cause = c.source();
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn library_errors_keep_their_source_and_print_it_once() {
        let json = serde_json::from_str::<u32>("x").unwrap_err();
        let text = json.to_string();
        let err = Error::model("config.json")(json);
        let source = std::error::Error::source(&err).expect("kept");
        assert!(source.downcast_ref::<serde_json::Error>().is_some());
        assert_eq!(err.to_string(), format!("model: config.json: {text}"));
        // Wrapped once more (as anyhow's context does), each text once.
        let outer = anyhow::Error::new(err).context("loading the model");
        assert_eq!(
            chain_text(outer.as_ref()),
            format!("loading the model: model: config.json: {text}")
        );
    }
}
