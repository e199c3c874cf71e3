//! `shirabe migrate`, and the Qdrant mirror `ingest` and `embed-index`
//! keep in step.

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};

use shirabe::index::ShirabeIndex;

use shirabe::index::qdrant::{DenseLayout, QdrantConfig, QdrantIndex, SyncReport};

use super::args::MigrateArgs;
use super::{Settings, Status};

/// The Qdrant collection of `index`: given by flag, environment or config,
/// else the one the manifest remembers. `None`: the index does not use Qdrant.
/// Without a local index, the settings must name the collection.
pub(super) fn qdrant_config(s: &Settings, index: Option<&ShirabeIndex>) -> Option<QdrantConfig> {
    let known = index.and_then(|i| i.manifest.as_ref()?.qdrant.clone());
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
        .or_else(|| index.map(QdrantConfig::default_collection))?;
    Some(QdrantConfig {
        url,
        api_key: s.qdrant.api_key.clone(),
        collection,
        shards: s.qdrant.shards,
        replication: s.qdrant.replication,
    })
}

/// Mirrors the index (its chunks, their BM25 terms and, when it has
/// them, the active store's vectors) into Qdrant, if the index uses it.
pub(super) fn sync_qdrant(s: &Settings) -> Result<Option<SyncReport>> {
    let index = ShirabeIndex::open(&s.index)?;
    let Some(cfg) = qdrant_config(s, Some(&index)) else {
        return Ok(None);
    };
    let _lock = index.lock()?;
    let index = ShirabeIndex::open(&s.index)?;
    let active = index
        .manifest
        .as_ref()
        .and_then(|m| m.active_store())
        .map(|(k, v)| (k.to_string(), v.clone()));
    let store = match &active {
        Some((key, state)) => Some(index.open_store(key, state)?),
        None => None,
    };
    let dense = active.as_ref().map(|(_, st)| DenseLayout {
        model: st.model.clone(),
        spec: st.spec.clone(),
        dims: st.dims,
    });
    let (q, recreated) = QdrantIndex::connect(&cfg, dense.as_ref(), index.mean_chunk_length()?)?;
    let key = active.map(|(k, _)| k).unwrap_or_default();
    // Another store's (model's) vectors in the collection: write all again.
    let rewrite = recreated
        || index
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
    let mut report = q.sync(&index, store.as_ref(), rewrite, &|done, total| {
        if let Some(bar) = &bar {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        }
    })?;
    report.recreated = recreated;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let mut manifest = index
        .manifest
        .clone()
        .context("the index has no manifest")?;
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
                format!(
                    "; {} chunks searched by BM25 only (no vector yet)",
                    r.without_vectors
                )
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
    let report = sync_qdrant(s)?.context("no Qdrant server given (`--to qdrant URL`)")?;
    if a.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_sync_report(s, &report);
    }
    Ok(Status::Success)
}
