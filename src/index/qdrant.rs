//! Qdrant as the vector index, for archives that outgrow one machine.
//!
//! One collection per index, with one named dense vector (`dense`, cosine)
//! per chunk and a payload of document key, path, pages, chunk id and
//! content hash (a keyword index on `doc_key` serves `--doc` filters).
//! Point ids are UUIDs made from the chunk id, so the same chunk always
//! lands on the same point.
//!
//! The embedded store stays the source of the vectors (it is the embedding
//! cache); [`QdrantIndex::sync`] makes the collection match the live chunks
//! that have vectors: it upserts the missing or changed points in batches
//! and deletes points of chunks that are gone (re-ingested or pruned
//! files). `ingest --qdrant`, `embed-index --qdrant` and `migrate --to
//! qdrant` all end with a sync, so the collection never lags the index.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use qdrant_client::qdrant::{
    point_id::PointIdOptions, value::Kind, Condition, CreateCollectionBuilder,
    CreateFieldIndexCollectionBuilder, DeletePointsBuilder, Distance, FieldType, Filter, PointId,
    PointStruct, PointsIdsList, QueryPointsBuilder, ScrollPointsBuilder, UpsertPointsBuilder,
    VectorParamsBuilder, VectorsConfigBuilder,
};
use qdrant_client::Qdrant;
use serde::Serialize;
use tantivy::schema::Value as _;
use tantivy::{DocAddress, Searcher, TantivyDocument};

use crate::index::vectors::{key_hex, VectorStore};
use crate::index::ShirabeIndex;
use crate::retrieve::VectorIndex;
use crate::{Error, Result};

/// The name of the dense vector in each point.
pub const VECTOR_NAME: &str = "dense";

/// Points per upsert request.
const UPSERT_BATCH: usize = 256;

/// Where the collection is.
#[derive(Debug, Clone)]
pub struct QdrantConfig {
    /// gRPC URL, e.g. `http://localhost:6334` (https for TLS).
    pub url: String,
    /// API key, if the server wants one.
    pub api_key: Option<String>,
    /// Collection name.
    pub collection: String,
}

impl QdrantConfig {
    /// The default collection name of an index: `shirabe-` and a digest of
    /// its directory, so two indexes never share a collection.
    pub fn default_collection(index: &ShirabeIndex) -> String {
        let dir = std::fs::canonicalize(&index.dir).unwrap_or_else(|_| index.dir.clone());
        let h = blake3::hash(dir.to_string_lossy().as_bytes());
        format!("shirabe-{}", &h.to_hex()[..12])
    }
}

/// What a sync did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SyncReport {
    /// The collection.
    pub collection: String,
    /// Points written.
    pub upserted: usize,
    /// Points removed.
    pub deleted: usize,
    /// Points already right.
    pub unchanged: usize,
    /// Live chunks without a vector yet (not sent).
    pub without_vectors: usize,
}

/// A connected collection.
pub struct QdrantIndex {
    client: Qdrant,
    rt: tokio::runtime::Runtime,
    collection: String,
}

/// An error of the Qdrant client (or its runtime), kept as the source.
fn err(e: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::index("qdrant")(e)
}

/// The point id of a chunk.
pub fn point_id(chunk_id: &str) -> String {
    let h = blake3::hash(chunk_id.as_bytes());
    let x = h.to_hex();
    format!(
        "{}-{}-{}-{}-{}",
        &x[..8],
        &x[8..12],
        &x[12..16],
        &x[16..20],
        &x[20..32]
    )
}

fn include(fields: &[&str]) -> qdrant_client::qdrant::PayloadIncludeSelector {
    qdrant_client::qdrant::PayloadIncludeSelector {
        fields: fields.iter().map(|f| f.to_string()).collect(),
    }
}

fn id_string(id: &Option<PointId>) -> Option<String> {
    match id.as_ref()?.point_id_options.as_ref()? {
        PointIdOptions::Uuid(u) => Some(u.clone()),
        PointIdOptions::Num(n) => Some(n.to_string()),
    }
}

fn payload_str<'a>(
    payload: &'a HashMap<String, qdrant_client::qdrant::Value>,
    key: &str,
) -> Option<&'a str> {
    match payload.get(key)?.kind.as_ref()? {
        Kind::StringValue(s) => Some(s),
        _ => None,
    }
}

impl QdrantIndex {
    /// Connects to an existing collection (for searching: nothing is
    /// created).
    pub fn open_existing(cfg: &QdrantConfig, dims: usize) -> Result<QdrantIndex> {
        Self::connect_with(cfg, dims, false)
    }

    /// Connects, and creates the collection (and its payload index) if it
    /// does not exist; an existing collection must have `dims` dimensions.
    pub fn connect(cfg: &QdrantConfig, dims: usize) -> Result<QdrantIndex> {
        Self::connect_with(cfg, dims, true)
    }

    fn connect_with(cfg: &QdrantConfig, dims: usize, create: bool) -> Result<QdrantIndex> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(err)?;
        let mut builder = Qdrant::from_url(&cfg.url)
            .timeout(Duration::from_secs(60))
            .connect_timeout(Duration::from_secs(10))
            .skip_compatibility_check();
        if let Some(k) = &cfg.api_key {
            builder = builder.api_key(k.clone());
        }
        let client = builder.build().map_err(err)?;
        let this = QdrantIndex {
            client,
            rt,
            collection: cfg.collection.clone(),
        };
        this.ensure_collection(dims, create).map_err(|e| {
            Error::Index(format!(
                "{e} (is a Qdrant server listening on {}? it takes the gRPC port, usually 6334)",
                cfg.url
            ))
        })?;
        Ok(this)
    }

    fn ensure_collection(&self, dims: usize, create: bool) -> Result<()> {
        let name = &self.collection;
        self.rt.block_on(async {
            if self.client.collection_exists(name).await.map_err(err)? {
                let info = self.client.collection_info(name).await.map_err(err)?;
                let size = info
                    .result
                    .and_then(|r| r.config)
                    .and_then(|c| c.params)
                    .and_then(|p| p.vectors_config)
                    .and_then(|v| v.config)
                    .and_then(|c| match c {
                        qdrant_client::qdrant::vectors_config::Config::ParamsMap(m) => {
                            m.map.get(VECTOR_NAME).map(|p| p.size)
                        }
                        qdrant_client::qdrant::vectors_config::Config::Params(_) => None,
                    });
                return match size {
                    Some(s) if s as usize == dims => Ok(()),
                    Some(s) => Err(Error::Index(format!(
                        "qdrant: collection {name} holds {s}-dimensional vectors, this index {dims} (pick another with --qdrant-collection)"
                    ))),
                    None => Err(Error::Index(format!(
                        "qdrant: collection {name} has no dense vector named {VECTOR_NAME:?}; it was not made by shirabe"
                    ))),
                };
            }
            if !create {
                return Err(Error::Index(format!(
                    "qdrant: collection {name} does not exist (run `shirabe migrate --to qdrant URL`)"
                )));
            }
            let mut vectors = VectorsConfigBuilder::default();
            vectors.add_named_vector_params(
                VECTOR_NAME,
                VectorParamsBuilder::new(dims as u64, Distance::Cosine),
            );
            self.client
                .create_collection(CreateCollectionBuilder::new(name).vectors_config(vectors))
                .await
                .map_err(err)?;
            self.client
                .create_field_index(
                    CreateFieldIndexCollectionBuilder::new(name, "doc_key", FieldType::Keyword)
                        .wait(true),
                )
                .await
                .map_err(err)?;
            Ok(())
        })
    }

    /// The collection name.
    pub fn collection(&self) -> &str {
        &self.collection
    }

    /// Every point's id and content hash.
    fn existing(&self) -> Result<HashMap<String, String>> {
        let mut out = HashMap::new();
        let mut offset: Option<PointId> = None;
        loop {
            let mut req = ScrollPointsBuilder::new(&self.collection)
                .limit(1000)
                .with_payload(include(&["content_hash"]))
                .with_vectors(false);
            if let Some(o) = offset.take() {
                req = req.offset(o);
            }
            let page = self.rt.block_on(self.client.scroll(req)).map_err(err)?;
            for p in &page.result {
                if let Some(id) = id_string(&p.id) {
                    out.insert(
                        id,
                        payload_str(&p.payload, "content_hash")
                            .unwrap_or_default()
                            .to_string(),
                    );
                }
            }
            match page.next_page_offset {
                Some(o) => offset = Some(o),
                None => return Ok(out),
            }
        }
    }

    /// Makes the collection hold exactly the live chunks of `index` that
    /// have a vector in `store`. `rewrite`: every point is written again
    /// (the collection held another store's vectors, e.g. another model's).
    pub fn sync(
        &self,
        index: &ShirabeIndex,
        store: &VectorStore,
        rewrite: bool,
        progress: &dyn Fn(usize, usize),
    ) -> Result<SyncReport> {
        let reader = index.reader()?;
        let searcher = reader.searcher();
        let mut existing = self.existing()?;
        let mut report = SyncReport {
            collection: self.collection.clone(),
            ..SyncReport::default()
        };
        let f = index.fields;
        let mut todo: Vec<(DocAddress, String, crate::index::vectors::Key)> = Vec::new();
        for c in index.live_keys(&searcher)? {
            if !store.contains(&c.key) {
                report.without_vectors += 1;
                continue;
            }
            let chunk_id = index.chunk_id_of(&searcher, c.addr)?;
            let id = point_id(&chunk_id);
            let hash = key_hex(&c.key);
            match existing.remove(&id) {
                Some(h) if h == hash && !rewrite => report.unchanged += 1,
                _ => todo.push((c.addr, id, c.key)),
            }
        }
        let total = todo.len();
        for batch in todo.chunks(UPSERT_BATCH) {
            let mut points = Vec::with_capacity(batch.len());
            for (addr, id, key) in batch {
                let doc: TantivyDocument = searcher.doc(*addr)?;
                let s = |field| {
                    doc.get_first(field)
                        .and_then(|v| v.as_str())
                        .unwrap_or_default()
                        .to_string()
                };
                let n = |field| doc.get_first(field).and_then(|v| v.as_u64()).unwrap_or(0);
                let payload = serde_json::json!({
                    "chunk_id": s(f.chunk_id),
                    "doc_key": s(f.doc_key),
                    "path": s(f.path),
                    "title": s(f.title),
                    "page_start": n(f.page_start),
                    "page_end": n(f.page_end),
                    "content_hash": key_hex(key),
                });
                let payload = qdrant_client::Payload::try_from(payload).map_err(err)?;
                let row = store.row_of(key).expect("checked above");
                let vectors: HashMap<String, Vec<f32>> =
                    [(VECTOR_NAME.to_string(), store.vector(row))].into();
                points.push(PointStruct::new(id.clone(), vectors, payload));
            }
            self.rt
                .block_on(
                    self.client.upsert_points(
                        UpsertPointsBuilder::new(&self.collection, points).wait(true),
                    ),
                )
                .map_err(err)?;
            report.upserted += batch.len();
            progress(report.upserted, total);
        }
        // What is left in `existing` is no longer in the index.
        let gone: Vec<PointId> = existing.into_keys().map(PointId::from).collect();
        for batch in gone.chunks(1000) {
            self.rt
                .block_on(
                    self.client.delete_points(
                        DeletePointsBuilder::new(&self.collection)
                            .points(PointsIdsList {
                                ids: batch.to_vec(),
                            })
                            .wait(true),
                    ),
                )
                .map_err(err)?;
            report.deleted += batch.len();
        }
        Ok(report)
    }

    /// Points in the collection.
    pub fn count(&self) -> Result<u64> {
        let r = self
            .rt
            .block_on(self.client.count(
                qdrant_client::qdrant::CountPointsBuilder::new(&self.collection).exact(true),
            ))
            .map_err(err)?;
        Ok(r.result.map_or(0, |c| c.count))
    }

    /// Deletes the collection.
    pub fn drop_collection(&self) -> Result<()> {
        self.rt
            .block_on(self.client.delete_collection(&self.collection))
            .map_err(err)?;
        Ok(())
    }
}

impl VectorIndex for QdrantIndex {
    fn nearest(
        &self,
        index: &ShirabeIndex,
        searcher: &Searcher,
        vector: &[f32],
        docs: Option<&HashSet<String>>,
        depth: usize,
    ) -> Result<Vec<(DocAddress, f32)>> {
        let mut req = QueryPointsBuilder::new(&self.collection)
            .query(vector.to_vec())
            .using(VECTOR_NAME)
            .limit(depth as u64)
            .with_payload(include(&["chunk_id", "content_hash"]));
        if let Some(keys) = docs {
            if keys.is_empty() {
                return Ok(Vec::new());
            }
            let keys: Vec<String> = keys.iter().cloned().collect();
            req = req.filter(Filter::must([Condition::matches("doc_key", keys)]));
        }
        let res = self.rt.block_on(self.client.query(req)).map_err(err)?;
        let mut out = Vec::with_capacity(res.result.len());
        for p in res.result {
            let Some(chunk_id) = payload_str(&p.payload, "chunk_id") else {
                continue;
            };
            // A point whose chunk is gone or whose text changed since the
            // last sync is skipped: its vector is not this chunk's.
            let hash = payload_str(&p.payload, "content_hash").unwrap_or_default();
            if let Some(addr) = index.chunk_by_id(searcher, chunk_id)? {
                let doc: TantivyDocument = searcher.doc(addr)?;
                let live = doc
                    .get_first(index.fields.content_hash)
                    .and_then(|v| v.as_str())
                    .unwrap_or_default();
                if live == hash {
                    out.push((addr, p.score));
                }
            }
        }
        Ok(out)
    }
}
