//! `shirabe models`: the local models, and downloading one.

use std::io::{BufWriter, Write};

use anyhow::Result;

use super::args::{ModelsAction, ModelsArgs};
use super::style::Style;
use super::{Settings, Status};

pub fn run(s: &Settings, a: &ModelsArgs) -> Result<Status> {
    let mut out = BufWriter::new(std::io::stdout().lock());
    match &a.action {
        ModelsAction::List { json } => {
            let models = shirabe::models::list_cached();
            if *json {
                serde_json::to_writer(&mut out, &models)?;
                writeln!(out)?;
            } else if models.is_empty() {
                writeln!(
                    out,
                    "no models in the Hugging Face cache (try `shirabe models pull {}`)",
                    shirabe::models::DEFAULT_EMBED_MODEL
                )?;
            } else {
                let st = Style::new(s.color);
                for m in &models {
                    writeln!(
                        out,
                        "{:40} {:>8.1} MB  {:8} {}{}",
                        st.path(&m.repo),
                        m.weight_bytes as f64 / 1e6,
                        m.model_type.as_deref().unwrap_or("?"),
                        m.path.display(),
                        if m.loadable {
                            ""
                        } else {
                            "  (not loadable by shirabe)"
                        }
                    )?;
                }
            }
        }
        ModelsAction::Pull { repo } => {
            let files = shirabe::models::pull(repo)?;
            writeln!(
                out,
                "{repo}: {} ({} weight files)",
                files.dir.display(),
                files.weights.len()
            )?;
        }
    }
    out.flush()?;
    Ok(Status::Success)
}
