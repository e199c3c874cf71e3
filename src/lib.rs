//! shirabe (調べ, "an inquiry"): ask your PDF archives questions from a
//! terminal and get answers that cite the document and page.
//!
//! The library is organised as the data flows:
//! [`ingest`] (files -> pages -> chunks, then embeddings) -> [`index`]
//! (tantivy BM25 index, vector store, manifest) -> [`retrieve`] (BM25, dense
//! and hybrid ranking) -> [`prompt`] (passages packed by token count) ->
//! [`answer`] (citations checked, extractive answers); [`models`] runs the
//! embedding and Qwen models.
#![warn(missing_docs)]

pub mod answer;
pub mod config;
pub mod error;
pub mod index;
pub mod ingest;
pub mod models;
pub mod prompt;
pub mod retrieve;
pub mod rng;
pub mod samples;
pub mod sanitize;
pub mod tui;

pub use error::{Error, Result};
