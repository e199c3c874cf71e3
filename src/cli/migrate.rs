//! `shirabe migrate`, and the Qdrant mirror `ingest` and `embed-index`
//! keep in step.

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};

use shirabe::index::ShirabeIndex;

use shirabe::index::qdrant::{QdrantConfig, QdrantIndex, SyncReport};

use super::args::MigrateArgs;
use super::{Settings, Status};

/// The Qdrant collection of `index`: given by flag, environment or config,
/// else the one the manifest remembers. `None`: the index does not use Qdrant.
pub(super) fn qdrant_config(s: &Settings, index: &ShirabeIndex) -> Option<QdrantConfig> {
    let known = index.manifest.as_ref().and_then(|m| m.qdrant.clone());
    let url = s
        .qdrant
        .url
        .clone()
        .or(known.as_ref().map(|k| k.url.clone()))?;
    let collection = s
        .qdrant
        .collection
        .clone()
        .or(known.map(|k| k.collection))
        .unwrap_or_else(|| QdrantConfig::default_collection(index));
    Some(QdrantConfig {
        url,
        api_key: s.qdrant.api_key.clone(),
        collection,
    })
}

/// Mirrors the active vector store into Qdrant, if the index uses it.
pub(super) fn sync_qdrant(s: &Settings) -> Result<Option<SyncReport>> {
    let index = ShirabeIndex::open(&s.index)?;
    let Some(cfg) = qdrant_config(s, &index) else {
        return Ok(None);
    };
    let _lock = index.lock()?;
    let index = ShirabeIndex::open(&s.index)?;
    let Some((key, state)) = index
        .manifest
        .as_ref()
        .and_then(|m| m.active_store())
        .map(|(k, v)| (k.to_string(), v.clone()))
    else {
        if !s.quiet {
            println!("note: no vectors yet, nothing to send to Qdrant");
        }
        return Ok(None);
    };
    let store = index.open_store(&key, &state)?;
    let q = QdrantIndex::connect(&cfg, state.dims)?;
    // Another store's (model's) vectors in the collection: write all again.
    let rewrite = index
        .manifest
        .as_ref()
        .and_then(|m| m.qdrant.as_ref())
        .is_some_and(|known| known.store != key && known.collection == cfg.collection);
    let bar = s.progress.then(|| {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner:.green} [{elapsed_precise}] {bar:30.cyan/blue} {pos}/{len} points to Qdrant · ETA {eta}",
            )
            .expect("valid template"),
        );
        bar
    });
    let report = q.sync(&index, &store, rewrite, &|done, total| {
        if let Some(bar) = &bar {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        }
    })?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let mut manifest = index.manifest.clone().expect("has a store");
    manifest.qdrant = Some(shirabe::index::manifest::QdrantState {
        url: cfg.url.clone(),
        collection: cfg.collection.clone(),
        store: key,
    });
    manifest.save(&index.manifest_path())?;
    Ok(Some(report))
}

pub(super) fn print_sync_report(s: &Settings, r: &SyncReport) {
    if !s.quiet {
        println!(
            "qdrant ({}): {} points written, {} removed, {} unchanged{}",
            r.collection,
            r.upserted,
            r.deleted,
            r.unchanged,
            if r.without_vectors > 0 {
                format!("; {} chunks have no vector yet", r.without_vectors)
            } else {
                String::new()
            }
        );
    }
}

pub fn run(s: &Settings, a: &MigrateArgs) -> Result<Status> {
    if a.to.first().map(String::as_str) == Some("embedded") {
        let index = ShirabeIndex::open(&s.index)?;
        let _lock = index.lock()?;
        let index = ShirabeIndex::open(&s.index)?;
        let mut manifest = index
            .manifest
            .clone()
            .context("the index has no manifest")?;
        let old = manifest.qdrant.take();
        manifest.save(&index.manifest_path())?;
        if !s.quiet {
            match old {
                Some(q) => println!(
                    "search uses the embedded store again; the Qdrant collection {} at {} is left as it is",
                    q.collection, q.url
                ),
                None => println!("the index already uses the embedded store"),
            }
        }
        return Ok(Status::Success);
    }
    let report = sync_qdrant(s)?
        .context("the index has no vectors to migrate (run `shirabe embed-index`)")?;
    if a.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_sync_report(s, &report);
    }
    Ok(Status::Success)
}
