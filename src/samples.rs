//! placeholder until the generator lands
use std::path::{Path, PathBuf};
/// placeholder
pub fn write_sample_corpus(_dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    Ok(Vec::new())
}
