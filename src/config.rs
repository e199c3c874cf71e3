//! The configuration file: defaults for the command-line flags.
//!
//! Read from `--config FILE`, else `$SHIRABE_CONFIG`, else the XDG location
//! (`~/.config/shirabe/config.toml` on Linux). Flags and environment
//! variables override it. Example:
//!
//! ```toml
//! index = "/data/archive-index"
//! color = "auto"            # auto | always | never
//!
//! [ingest]
//! tokenizer = "Qwen/Qwen3-Embedding-0.6B"   # file, model dir, HF repo id, or "estimate"
//! chunk_tokens = 512
//! chunk_overlap = 64
//! jobs = 0                  # 0 = one worker per core
//! ocr = "auto"              # auto | always | never: pages without a text layer
//! ocr_languages = "jpn+eng" # Tesseract languages; default: from the script
//! tesseract = "/usr/bin/tesseract"
//!
//! [watch]
//! folders = ["~/minutes", "/srv/archive"]   # what `shirabe watch` watches by default
//!
//! [embed]
//! model = "Qwen/Qwen3-Embedding-0.6B"   # directory or HF repo id
//! dtype = "auto"            # weights: auto | f32 | bf16 | f16
//! vector_dtype = "f16"      # store: f16 | f32
//!
//! [qdrant]
//! url = "http://localhost:6334"  # gRPC; the index is mirrored and searched there
//! collection = "my-archive"      # default: shirabe-<digest of the index dir>
//! shards = 3                     # a new collection's shards (a cluster's nodes)
//! replication = 2                # and copies of each
//!
//! [search]
//! limit = 10
//! mode = "hybrid"           # bm25 | dense | hybrid
//! ```

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::{Error, Result};

/// `[ingest]` settings.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct IngestSection {
    /// Tokenizer spec.
    pub tokenizer: Option<String>,
    /// Target tokens per chunk.
    pub chunk_tokens: Option<usize>,
    /// Overlap tokens between chunks.
    pub chunk_overlap: Option<usize>,
    /// Worker threads.
    pub jobs: Option<usize>,
    /// When to OCR pages without a text layer.
    pub ocr: Option<crate::ingest::ocr::OcrMode>,
    /// Tesseract languages ("eng", "jpn+eng").
    pub ocr_languages: Option<String>,
    /// The `tesseract` program, if not the one on PATH.
    pub tesseract: Option<PathBuf>,
}

/// `[watch]` settings.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WatchSection {
    /// Folders `shirabe watch` watches when given none.
    #[serde(default)]
    pub folders: Vec<PathBuf>,
}

/// `[embed]` settings.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EmbedSection {
    /// Embedding model.
    pub model: Option<String>,
    /// Weight type.
    pub dtype: Option<crate::models::EmbedDtype>,
    /// Matryoshka dimensions.
    pub dims: Option<usize>,
    /// Store type.
    pub vector_dtype: Option<crate::index::vectors::VectorDtype>,
}

/// `[qdrant]` settings.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct QdrantSection {
    /// gRPC URL.
    pub url: Option<String>,
    /// API key (better: `QDRANT_API_KEY`).
    pub api_key: Option<String>,
    /// Collection.
    pub collection: Option<String>,
    /// Shards of a new collection.
    pub shards: Option<u32>,
    /// Replication factor of a new collection.
    pub replication: Option<u32>,
}

/// `[search]` settings.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SearchSection {
    /// Hits to show.
    pub limit: Option<usize>,
    /// Ranking mode: bm25, dense or hybrid.
    pub mode: Option<crate::retrieve::Mode>,
}

/// The whole file.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// Index directory.
    pub index: Option<PathBuf>,
    /// `auto`, `always` or `never`.
    pub color: Option<String>,
    /// Ingest defaults.
    #[serde(default)]
    pub ingest: IngestSection,
    /// `[watch]`.
    #[serde(default)]
    pub watch: WatchSection,
    /// Embedding defaults.
    #[serde(default)]
    pub embed: EmbedSection,
    /// Qdrant.
    #[serde(default)]
    pub qdrant: QdrantSection,
    /// Search defaults.
    #[serde(default)]
    pub search: SearchSection,
}

impl ConfigFile {
    /// The XDG location of the config file.
    pub fn default_path() -> Option<PathBuf> {
        directories::ProjectDirs::from("", "", "shirabe")
            .map(|d| d.config_dir().join("config.toml"))
    }

    /// Loads `explicit` (which must exist) or the default file (which may not).
    pub fn load(explicit: Option<&Path>) -> Result<ConfigFile> {
        let (path, required) = match explicit {
            Some(p) => (p.to_path_buf(), true),
            None => match Self::default_path() {
                Some(p) => (p, false),
                None => return Ok(ConfigFile::default()),
            },
        };
        match std::fs::read_to_string(&path) {
            Ok(s) => {
                toml::from_str(&s).map_err(|e| Error::Config(format!("{}: {e}", path.display())))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {
                Ok(ConfigFile::default())
            }
            Err(e) => Err(Error::io(path, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects_unknown_keys() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, "index = \"/x\"\n[ingest]\nchunk_tokens = 300\n").unwrap();
        let c = ConfigFile::load(Some(&p)).unwrap();
        assert_eq!(c.index.as_deref(), Some(Path::new("/x")));
        assert_eq!(c.ingest.chunk_tokens, Some(300));
        std::fs::write(&p, "[ingest]\nchunk_size = 3\n").unwrap();
        let err = ConfigFile::load(Some(&p)).unwrap_err().to_string();
        assert!(err.contains("chunk_size"), "{err}");
        assert!(ConfigFile::load(Some(&dir.path().join("missing.toml"))).is_err());
    }

    #[test]
    fn dtypes_parse_with_the_flags_names() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, "[embed]\ndtype = \"bf16\"\nvector_dtype = \"f32\"\n").unwrap();
        let c = ConfigFile::load(Some(&p)).unwrap();
        assert_eq!(c.embed.dtype, Some(crate::models::EmbedDtype::Bf16));
        assert_eq!(
            c.embed.vector_dtype,
            Some(crate::index::vectors::VectorDtype::F32)
        );
        std::fs::write(&p, "[embed]\ndtype = \"bf17\"\n").unwrap();
        let err = ConfigFile::load(Some(&p)).unwrap_err().to_string();
        assert!(err.contains("bf17") && err.contains("bf16"), "{err}");
    }

    #[test]
    fn ocr_settings_parse_with_the_flags_names() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(
            &p,
            "[ingest]
ocr = \"always\"\nocr_languages = \"jpn+eng\"\n",
        )
        .unwrap();
        let c = ConfigFile::load(Some(&p)).unwrap();
        assert_eq!(c.ingest.ocr, Some(crate::ingest::ocr::OcrMode::Always));
        assert_eq!(c.ingest.ocr_languages.as_deref(), Some("jpn+eng"));
        std::fs::write(&p, "[ingest]\nocr = \"sometimes\"\n").unwrap();
        let err = ConfigFile::load(Some(&p)).unwrap_err().to_string();
        assert!(err.contains("sometimes") || err.contains("ocr"), "{err}");
    }
}
