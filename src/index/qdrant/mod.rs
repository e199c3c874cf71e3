//! Qdrant as the whole search index, for archives that outgrow one
//! machine.
//!
//! One collection per index. Each chunk is a point with a sparse vector
//! `bm25` (its analysed terms as BM25 weights, see [`sparse`]; the
//! collection's IDF modifier completes the score), a dense vector `dense`
//! when the chunk has been embedded, and a payload holding everything a
//! hit shows: text, path, title, section, pages and their spans, chunk id,
//! content hash, and the chunk's distinct terms (for the term statistics
//! the answer's grounding check reads). Keyword indexes on `doc_key`,
//! `path` and `terms` serve `--doc` filters and those statistics. The
//! collection's metadata names the embedding model and BM25's mean chunk
//! length, so a process with no local index can search it: one batch of
//! a sparse and a dense query, fused as a local index fuses its two lists
//! ([`QdrantIndex::search`]).
//!
//! The local index stays the source: [`QdrantIndex::sync`] makes the
//! collection match its live chunks (upserting new or changed points in
//! batches, deleting the points of chunks that are gone), and `ingest
//! --qdrant`, `embed-index --qdrant` and `migrate --to qdrant` all end
//! with one. Point ids are UUIDs made from the chunk id.
//!
//! In a cluster the collection gets shards and replicas (see
//! [`QdrantConfig`]); every call is retried with backoff and, when
//! several URLs are given, moves to the next node, so a node going down
//! costs a pause, not an error.

pub mod sparse;

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use qdrant_client::qdrant::{
    point_id::PointIdOptions, value::Kind, Condition, CountPointsBuilder, CreateCollectionBuilder,
    CreateFieldIndexCollectionBuilder, DeletePointsBuilder, Distance, FacetCountsBuilder,
    FieldType, Filter, Modifier, PointId, PointStruct, PointsIdsList, Query,
    QueryBatchPointsBuilder, QueryPointsBuilder, ScrollPointsBuilder, SparseVectorParamsBuilder,
    SparseVectorsConfigBuilder, UpsertPointsBuilder, Vector, VectorInput, VectorParamsBuilder,
    VectorsConfigBuilder,
};
use qdrant_client::{Qdrant, QdrantError};
use serde::Serialize;
use tantivy::{DocAddress, TantivyDocument};

use crate::index::vectors::{key_hex, VectorStore};
use crate::index::{ShirabeIndex, StoredChunk};
use crate::{Error, Result};

/// The name of the dense vector in each point.
pub const VECTOR_NAME: &str = "dense";
/// The name of the sparse (BM25) vector.
pub const SPARSE_NAME: &str = "bm25";
/// The layout this version writes (collection metadata `shirabe`).
const LAYOUT_VERSION: i64 = 2;

/// Points per upsert request.
const UPSERT_BATCH: usize = 128;
/// Attempts per call before an error reaches the caller.
const ATTEMPTS: u32 = 8;

/// The payload fields a hit is made of.
const HIT_FIELDS: &[&str] = &[
    "chunk_id",
    "doc_key",
    "path",
    "title",
    "section",
    "sections",
    "spans",
    "text",
    "page_start",
    "page_end",
    "ordinal",
    "content_hash",
];

/// Where the collection is.
#[derive(Debug, Clone)]
pub struct QdrantConfig {
    /// gRPC URL, e.g. `http://localhost:6334` (https for TLS); several,
    /// comma-separated, are nodes of one cluster, tried in turn.
    pub url: String,
    /// API key, if the server wants one.
    pub api_key: Option<String>,
    /// Collection name.
    pub collection: String,
    /// Shards of a new collection (default: Qdrant's, one per node).
    pub shards: Option<u32>,
    /// Copies of each shard in a new collection (2 or more survives a
    /// node going down).
    pub replication: Option<u32>,
}

impl QdrantConfig {
    /// A configuration for `url` and `collection` with the server's
    /// defaults for new collections.
    pub fn new(url: impl Into<String>, collection: impl Into<String>) -> QdrantConfig {
        QdrantConfig {
            url: url.into(),
            api_key: None,
            collection: collection.into(),
            shards: None,
            replication: None,
        }
    }

    /// The default collection name of an index: `shirabe-` and a digest of
    /// its directory, so two indexes never share a collection.
    pub fn default_collection(index: &ShirabeIndex) -> String {
        let dir = std::fs::canonicalize(&index.dir).unwrap_or_else(|_| index.dir.clone());
        let h = blake3::hash(dir.to_string_lossy().as_bytes());
        format!("shirabe-{}", &h.to_hex()[..12])
    }
}

/// The embedding model whose vectors a collection holds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DenseLayout {
    /// The model id ([`crate::models::embed::TextEmbedder::id`]).
    pub model: String,
    /// How the model was loaded (a repo id or a directory).
    pub spec: String,
    /// Vector width.
    pub dims: usize,
}

/// What a collection holds, from its metadata.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Layout {
    /// The dense vectors' model, if the collection has them.
    pub dense: Option<DenseLayout>,
    /// BM25's mean chunk length, fixed when the collection was made.
    pub avgdl: f32,
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
    /// Live chunks without a dense vector yet (sent with BM25 only).
    pub without_vectors: usize,
    /// The collection was made again (it had another layout or model).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub recreated: bool,
}

/// A chunk found by [`QdrantIndex::search`].
#[derive(Debug, Clone)]
pub struct Found {
    /// The fused score (or BM25 / cosine when one list is searched).
    pub score: f32,
    /// The chunk, from the payload.
    pub chunk: StoredChunk,
    /// Its rank (from 1) and score in the BM25 and the dense list, when
    /// two lists were fused.
    pub lists: [Option<(usize, f32)>; 2],
}

/// One search of the collection.
#[derive(Debug, Clone, Default)]
pub struct RemoteQuery {
    /// The query's BM25 terms ([`sparse::query`]); empty: no BM25 list.
    pub sparse: Vec<(u32, f32)>,
    /// The embedded query; `None`: no dense list.
    pub dense: Option<Vec<f32>>,
    /// Only these documents (doc keys), when given.
    pub doc_keys: Option<Vec<String>>,
    /// Results wanted.
    pub limit: usize,
    /// Candidates per list before fusion.
    pub depth: usize,
    /// How the two lists are fused.
    pub fusion: crate::retrieve::Fusion,
    /// Weights of the BM25 and dense lists in the fusion.
    pub weights: (f32, f32),
    /// RRF constant.
    pub rrf_k: f32,
}

/// A connected collection.
pub struct QdrantIndex {
    clients: Vec<Qdrant>,
    /// The client that answered last.
    current: AtomicUsize,
    rt: tokio::runtime::Runtime,
    collection: String,
    layout: Layout,
}

/// [`QdrantIndex::call`] of one client method with a request built once
/// (cloned for each attempt).
macro_rules! request {
    ($index:expr, $method:ident, $req:expr) => {{
        let req = &$req;
        $index.call(|c| async move { c.$method(req.clone()).await })
    }};
}

/// An error of the Qdrant client (or its runtime), kept as the source.
fn err(e: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::index("qdrant")(e)
}

/// Whether trying again (or another node) may help.
fn transient(e: &QdrantError) -> bool {
    match e {
        QdrantError::ResponseError { status } => {
            // gRPC codes that no retry changes: InvalidArgument 3,
            // NotFound 5, AlreadyExists 6, PermissionDenied 7,
            // Unimplemented 12, Unauthenticated 16.
            !matches!(status.code() as i32, 3 | 5 | 6 | 7 | 12 | 16)
        }
        QdrantError::ResourceExhaustedError { .. } => true,
        _ => false,
    }
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

type Payload = HashMap<String, qdrant_client::qdrant::Value>;

fn payload_str<'a>(payload: &'a Payload, key: &str) -> Option<&'a str> {
    match payload.get(key)?.kind.as_ref()? {
        Kind::StringValue(s) => Some(s),
        _ => None,
    }
}

fn payload_u64(payload: &Payload, key: &str) -> u64 {
    match payload.get(key).and_then(|v| v.kind.as_ref()) {
        Some(Kind::IntegerValue(n)) => (*n).max(0) as u64,
        Some(Kind::DoubleValue(x)) => x.max(0.0) as u64,
        _ => 0,
    }
}

fn payload_bool(payload: &Payload, key: &str) -> bool {
    matches!(
        payload.get(key).and_then(|v| v.kind.as_ref()),
        Some(Kind::BoolValue(true))
    )
}

/// A hit's chunk from its payload.
fn stored_chunk(p: &Payload) -> StoredChunk {
    let s = |k| payload_str(p, k).unwrap_or_default().to_string();
    let opt = |k| {
        payload_str(p, k)
            .filter(|v| !v.is_empty())
            .map(str::to_string)
    };
    StoredChunk {
        chunk_id: s("chunk_id"),
        doc_key: s("doc_key"),
        path: s("path"),
        title: opt("title"),
        section: opt("section"),
        sections: s("sections"),
        spans: s("spans"),
        text: s("text"),
        page_start: payload_u64(p, "page_start") as u32,
        page_end: payload_u64(p, "page_end") as u32,
        ordinal: payload_u64(p, "ordinal"),
    }
}

/// The filter that keeps `doc_keys`.
fn docs_filter(doc_keys: &[String]) -> Filter {
    Filter::must([Condition::matches("doc_key", doc_keys.to_vec())])
}

/// A metadata value as JSON.
fn meta_json(v: &qdrant_client::qdrant::Value) -> serde_json::Value {
    match v.kind.as_ref() {
        Some(Kind::StringValue(s)) => serde_json::Value::from(s.clone()),
        Some(Kind::IntegerValue(n)) => serde_json::Value::from(*n),
        Some(Kind::DoubleValue(x)) => serde_json::Value::from(*x),
        Some(Kind::BoolValue(b)) => serde_json::Value::from(*b),
        _ => serde_json::Value::Null,
    }
}

impl QdrantIndex {
    /// Connects to an existing collection made by shirabe, for searching
    /// (nothing is created).
    pub fn open_existing(cfg: &QdrantConfig) -> Result<QdrantIndex> {
        let mut this = Self::client(cfg)?;
        // A server that is down is reported at once (a search then falls
        // back to the local index), not after every retry's backoff.
        this.any_node_answers().map_err(|e| unreachable(e, cfg))?;
        match this.read_layout().map_err(|e| unreachable(e, cfg))? {
            Some(Ok(layout)) => {
                this.layout = layout;
                Ok(this)
            }
            Some(Err(why)) => Err(Error::Index(format!(
                "qdrant: collection {} {why} (run `shirabe migrate --to qdrant URL` where the index is)",
                cfg.collection
            ))),
            None => Err(Error::Index(format!(
                "qdrant: collection {} does not exist (run `shirabe migrate --to qdrant URL` where the index is)",
                cfg.collection
            ))),
        }
    }

    /// Connects for writing: creates the collection (with its payload
    /// indexes) if it does not exist, and makes it again, empty, if it was
    /// made with another layout or holds another model's vectors.
    /// `avgdl` is used for a new collection only.
    pub fn connect(
        cfg: &QdrantConfig,
        dense: Option<&DenseLayout>,
        avgdl: f32,
    ) -> Result<(QdrantIndex, bool)> {
        let mut this = Self::client(cfg)?;
        let current = this.read_layout().map_err(|e| unreachable(e, cfg))?;
        let keep = match &current {
            Some(Ok(l)) => match (&l.dense, dense) {
                (_, None) => true,
                (Some(have), Some(want)) => have == want,
                (None, Some(_)) => false,
            },
            _ => false,
        };
        if keep {
            this.layout = current.expect("kept").expect("kept");
            if let (None, Some(d)) = (&this.layout.dense, dense) {
                this.layout.dense = Some(d.clone());
            }
            return Ok((this, false));
        }
        let existed = current.is_some();
        if existed {
            this.drop_collection()?;
        }
        this.layout = Layout {
            dense: dense.cloned(),
            avgdl: avgdl.max(1.0),
        };
        this.create(cfg)?;
        Ok((this, existed))
    }

    fn client(cfg: &QdrantConfig) -> Result<QdrantIndex> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(err)?;
        let mut clients = Vec::new();
        for url in cfg.url.split(',').map(str::trim).filter(|u| !u.is_empty()) {
            let mut builder = Qdrant::from_url(url)
                .timeout(Duration::from_secs(60))
                .connect_timeout(Duration::from_secs(5))
                .skip_compatibility_check();
            if let Some(k) = &cfg.api_key {
                builder = builder.api_key(k.clone());
            }
            clients.push(builder.build().map_err(err)?);
        }
        if clients.is_empty() {
            return Err(Error::Config("qdrant: no URL given".into()));
        }
        Ok(QdrantIndex {
            clients,
            current: AtomicUsize::new(0),
            rt,
            collection: cfg.collection.clone(),
            layout: Layout {
                dense: None,
                avgdl: 1.0,
            },
        })
    }

    /// Whether some node answers at all: one try each, no backoff.
    fn any_node_answers(&self) -> Result<()> {
        let mut last = None;
        for c in &self.clients {
            match self.rt.block_on(c.health_check()) {
                Ok(_) => return Ok(()),
                Err(e) => last = Some(e),
            }
        }
        Err(err(last.expect("a client per URL, at least one")))
    }

    /// Runs one request, retried with backoff on errors a retry may cure,
    /// moving to the next node each time.
    fn call<T, F, Fut>(&self, f: F) -> Result<T>
    where
        F: Fn(Qdrant) -> Fut,
        Fut: Future<Output = std::result::Result<T, QdrantError>>,
    {
        let mut wait = Duration::from_millis(200);
        let mut attempt = 1;
        loop {
            let i = self.current.load(Ordering::Relaxed) % self.clients.len();
            match self.rt.block_on(f(self.clients[i].clone())) {
                Ok(v) => return Ok(v),
                Err(e) if attempt < ATTEMPTS && transient(&e) => {
                    self.current.store(i + 1, Ordering::Relaxed);
                    std::thread::sleep(wait);
                    wait = (wait * 2).min(Duration::from_secs(4));
                    attempt += 1;
                }
                Err(e) => return Err(err(e)),
            }
        }
    }

    /// The collection's layout: `None` if it does not exist, `Some(Err)`
    /// if it was not made by this version of shirabe.
    fn read_layout(&self) -> Result<Option<std::result::Result<Layout, String>>> {
        let name = self.collection.clone();
        if !request!(self, collection_exists, name)? {
            return Ok(None);
        }
        let info = request!(self, collection_info, name)?;
        let Some(config) = info.result.and_then(|r| r.config) else {
            return Ok(Some(Err("has no configuration".into())));
        };
        let meta: HashMap<String, serde_json::Value> = config
            .metadata
            .iter()
            .map(|(k, v)| (k.clone(), meta_json(v)))
            .collect();
        if meta.get("shirabe").and_then(|v| v.as_i64()) != Some(LAYOUT_VERSION) {
            return Ok(Some(Err(
                "was made by another version of shirabe (or not by shirabe)".into(),
            )));
        }
        let s = |k: &str| meta.get(k).and_then(|v| v.as_str()).unwrap_or_default();
        let dims = meta.get("dims").and_then(|v| v.as_u64()).unwrap_or(0) as usize;
        Ok(Some(Ok(Layout {
            dense: (dims > 0).then(|| DenseLayout {
                model: s("model").to_string(),
                spec: s("spec").to_string(),
                dims,
            }),
            avgdl: meta.get("avgdl").and_then(|v| v.as_f64()).unwrap_or(1.0) as f32,
        })))
    }

    fn create(&self, cfg: &QdrantConfig) -> Result<()> {
        let name = &self.collection;
        let mut sparse = SparseVectorsConfigBuilder::default();
        sparse.add_named_vector_params(
            SPARSE_NAME,
            SparseVectorParamsBuilder::default().modifier(Modifier::Idf),
        );
        let mut meta: HashMap<String, serde_json::Value> = HashMap::from([
            ("shirabe".into(), LAYOUT_VERSION.into()),
            ("avgdl".into(), (self.layout.avgdl as f64).into()),
        ]);
        let mut builder = CreateCollectionBuilder::new(name).sparse_vectors_config(sparse);
        if let Some(d) = &self.layout.dense {
            let mut vectors = VectorsConfigBuilder::default();
            vectors.add_named_vector_params(
                VECTOR_NAME,
                VectorParamsBuilder::new(d.dims as u64, Distance::Cosine),
            );
            builder = builder.vectors_config(vectors);
            meta.insert("model".into(), d.model.clone().into());
            meta.insert("spec".into(), d.spec.clone().into());
            meta.insert("dims".into(), (d.dims as u64).into());
        }
        if let Some(n) = cfg.shards {
            builder = builder.shard_number(n);
        }
        if let Some(n) = cfg.replication {
            builder = builder.replication_factor(n);
        }
        let req = builder.metadata(meta).build();
        request!(self, create_collection, req)?;
        for field in ["doc_key", "path", "terms"] {
            let req = CreateFieldIndexCollectionBuilder::new(name, field, FieldType::Keyword)
                .wait(true)
                .build();
            request!(self, create_field_index, req)?;
        }
        Ok(())
    }

    /// The collection name.
    pub fn collection(&self) -> &str {
        &self.collection
    }

    /// What the collection holds.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Every point `filter` selects (all without one), with the payload
    /// `fields`, page by page.
    fn scroll_all(
        &self,
        filter: Option<Filter>,
        fields: &[&str],
        mut each: impl FnMut(&qdrant_client::qdrant::RetrievedPoint),
    ) -> Result<()> {
        let mut offset: Option<PointId> = None;
        loop {
            let mut req = ScrollPointsBuilder::new(&self.collection)
                .limit(1000)
                .with_payload(include(fields))
                .with_vectors(false);
            if let Some(f) = &filter {
                req = req.filter(f.clone());
            }
            if let Some(o) = offset.take() {
                req = req.offset(o);
            }
            let req = req.build();
            let page = request!(self, scroll, req)?;
            page.result.iter().for_each(&mut each);
            match page.next_page_offset {
                Some(o) => offset = Some(o),
                None => return Ok(()),
            }
        }
    }

    /// Every point's id, content hash and whether it has a dense vector.
    fn existing(&self) -> Result<HashMap<String, (String, bool)>> {
        let mut out = HashMap::new();
        self.scroll_all(None, &["content_hash", "dense"], |p| {
            if let Some(id) = id_string(&p.id) {
                let hash = payload_str(&p.payload, "content_hash").unwrap_or_default();
                out.insert(id, (hash.to_string(), payload_bool(&p.payload, "dense")));
            }
        })?;
        Ok(out)
    }

    /// Makes the collection hold exactly the live chunks of `index`, each
    /// with its BM25 vector and, when `store` has it, its dense vector.
    /// `rewrite`: every point is written again.
    pub fn sync(
        &self,
        index: &ShirabeIndex,
        store: Option<&VectorStore>,
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
        let with_dense = self.layout.dense.is_some();
        let mut todo: Vec<(DocAddress, String, crate::index::vectors::Key, bool)> = Vec::new();
        for c in index.live_keys(&searcher)? {
            let dense = with_dense && store.is_some_and(|s| s.contains(&c.key));
            if !dense {
                report.without_vectors += 1;
            }
            let chunk_id = index.chunk_id_of(&searcher, c.addr)?;
            let id = point_id(&chunk_id);
            let hash = key_hex(&c.key);
            match existing.remove(&id) {
                Some((h, d)) if h == hash && d == dense && !rewrite => report.unchanged += 1,
                _ => todo.push((c.addr, id, c.key, dense)),
            }
        }
        let total = todo.len();
        for batch in todo.chunks(UPSERT_BATCH) {
            let mut points = Vec::with_capacity(batch.len());
            for (addr, id, key, dense) in batch {
                let doc: TantivyDocument = searcher.doc(*addr)?;
                let chunk = index.stored_chunk(&doc);
                let (bm25, terms) = sparse::document(
                    &chunk.text,
                    chunk.section.as_deref().unwrap_or_default(),
                    chunk.title.as_deref().unwrap_or_default(),
                    self.layout.avgdl,
                );
                let payload = serde_json::json!({
                    "chunk_id": chunk.chunk_id,
                    "doc_key": chunk.doc_key,
                    "path": chunk.path,
                    "title": chunk.title.unwrap_or_default(),
                    "section": chunk.section.unwrap_or_default(),
                    "sections": chunk.sections,
                    "spans": chunk.spans,
                    "text": chunk.text,
                    "page_start": chunk.page_start,
                    "page_end": chunk.page_end,
                    "ordinal": chunk.ordinal,
                    "content_hash": key_hex(key),
                    "dense": *dense,
                    "terms": terms,
                });
                let payload = qdrant_client::Payload::try_from(payload).map_err(err)?;
                let mut vectors: HashMap<String, Vector> =
                    HashMap::from([(SPARSE_NAME.to_string(), Vector::from(bm25))]);
                if *dense {
                    let s = store.expect("dense implies a store");
                    let row = s.row_of(key).expect("checked above");
                    vectors.insert(VECTOR_NAME.to_string(), Vector::from(s.vector(row)));
                }
                points.push(PointStruct::new(id.clone(), vectors, payload));
            }
            let req = UpsertPointsBuilder::new(&self.collection, points)
                .wait(true)
                .build();
            request!(self, upsert_points, req)?;
            report.upserted += batch.len();
            progress(report.upserted, total);
        }
        // What is left in `existing` is no longer in the index.
        let gone: Vec<PointId> = existing.into_keys().map(PointId::from).collect();
        for batch in gone.chunks(1000) {
            let req = DeletePointsBuilder::new(&self.collection)
                .points(PointsIdsList {
                    ids: batch.to_vec(),
                })
                .wait(true)
                .build();
            request!(self, delete_points, req)?;
            report.deleted += batch.len();
        }
        Ok(report)
    }

    /// The best chunks for `q`: one call. With both lists, one batch of
    /// two queries returns `depth` candidates from each, fused
    /// here exactly as a local index fuses them ([`crate::retrieve::fusion`]);
    /// with one list, it is searched directly.
    pub fn search(&self, q: &RemoteQuery) -> Result<Vec<Found>> {
        if q.doc_keys.as_ref().is_some_and(|k| k.is_empty()) {
            return Ok(Vec::new());
        }
        let filter = q.doc_keys.as_deref().map(docs_filter);
        let sparse = (!q.sparse.is_empty()).then(|| {
            VectorInput::new_sparse(
                q.sparse.iter().map(|x| x.0).collect::<Vec<_>>(),
                q.sparse.iter().map(|x| x.1).collect::<Vec<_>>(),
            )
        });
        let dense = match (&q.dense, &self.layout.dense) {
            (Some(v), Some(_)) => Some(VectorInput::new_dense(v.clone())),
            (Some(_), None) => {
                return Err(Error::Config(format!(
                    "qdrant: collection {} holds no dense vectors (run `shirabe embed-index` where the index is)",
                    self.collection
                )))
            }
            _ => None,
        };
        let one = |input: VectorInput, using: &str, limit: usize| {
            let mut req = QueryPointsBuilder::new(&self.collection)
                .query(Query::new_nearest(input))
                .using(using)
                .limit(limit.max(1) as u64)
                .with_payload(include(HIT_FIELDS));
            if let Some(f) = &filter {
                req = req.filter(f.clone());
            }
            req.build()
        };
        let found = |points: Vec<qdrant_client::qdrant::ScoredPoint>| -> Vec<Found> {
            points
                .into_iter()
                .map(|p| Found {
                    score: p.score,
                    chunk: stored_chunk(&p.payload),
                    lists: [None, None],
                })
                .collect()
        };
        let (s, d) = match (sparse, dense) {
            (None, None) => return Ok(Vec::new()),
            (Some(input), None) => {
                let req = one(input, SPARSE_NAME, q.limit);
                return Ok(found(request!(self, query, req)?.result));
            }
            (None, Some(input)) => {
                let req = one(input, VECTOR_NAME, q.limit);
                return Ok(found(request!(self, query, req)?.result));
            }
            (Some(s), Some(d)) => (s, d),
        };
        let depth = q.depth.max(q.limit);
        let req = QueryBatchPointsBuilder::new(
            &self.collection,
            vec![one(s, SPARSE_NAME, depth), one(d, VECTOR_NAME, depth)],
        )
        .build();
        let mut results = request!(self, query_batch, req)?.result.into_iter();
        let mut next = || found(results.next().map(|r| r.result).unwrap_or_default());
        let (lexical, semantic) = (next(), next());
        let key = |l: &[Found]| -> Vec<(String, f32)> {
            l.iter()
                .map(|f| (f.chunk.chunk_id.clone(), f.score))
                .collect()
        };
        let (lk, sk) = (key(&lexical), key(&semantic));
        let fused = q
            .fusion
            .fuse(&[(q.weights.0, &lk), (q.weights.1, &sk)], q.rrf_k);
        let mut chunks: HashMap<String, StoredChunk> = lexical
            .into_iter()
            .chain(semantic)
            .map(|f| (f.chunk.chunk_id.clone(), f.chunk))
            .collect();
        let score_at = |l: &[(String, f32)], rank: Option<usize>| rank.map(|r| (r, l[r - 1].1));
        Ok(fused
            .into_iter()
            .take(q.limit)
            .filter_map(|f| {
                Some(Found {
                    score: f.score,
                    lists: [score_at(&lk, f.ranks[0]), score_at(&sk, f.ranks[1])],
                    chunk: chunks.remove(&f.item)?,
                })
            })
            .collect())
    }

    /// Points in the collection, and how many hold each of `terms` (the
    /// statistics of [`crate::retrieve::term_rarity`]).
    pub fn term_counts(&self, terms: &[String]) -> Result<(u64, Vec<u64>)> {
        let total = self.count()?;
        let mut out = Vec::with_capacity(terms.len());
        for t in terms {
            let req = CountPointsBuilder::new(&self.collection)
                .filter(Filter::must([Condition::matches("terms", t.clone())]))
                .exact(true)
                .build();
            let r = request!(self, count, req)?;
            out.push(r.result.map_or(0, |c| c.count));
        }
        Ok((total, out))
    }

    /// Every document in the collection: doc key and path.
    pub fn documents(&self) -> Result<Vec<(String, String)>> {
        let values = |key: &str| -> Result<Vec<String>> {
            let req = FacetCountsBuilder::new(&self.collection, key)
                .limit(u32::MAX as u64)
                .exact(true)
                .build();
            let r = request!(self, facet, req)?;
            Ok(r.hits
                .into_iter()
                .filter_map(|h| match h.value?.variant? {
                    qdrant_client::qdrant::facet_value::Variant::StringValue(s) => Some(s),
                    _ => None,
                })
                .collect())
        };
        // A document's path: one of its chunks says it.
        let mut out = Vec::new();
        for key in values("doc_key")? {
            let req = ScrollPointsBuilder::new(&self.collection)
                .filter(docs_filter(std::slice::from_ref(&key)))
                .limit(1)
                .with_payload(include(&["path"]))
                .with_vectors(false)
                .build();
            let page = request!(self, scroll, req)?;
            let path = page
                .result
                .first()
                .and_then(|p| payload_str(&p.payload, "path"))
                .unwrap_or_default()
                .to_string();
            out.push((key, path));
        }
        out.sort();
        Ok(out)
    }

    /// Every chunk of the documents `doc_keys`, in document then chunk
    /// order.
    pub fn document_chunks(&self, doc_keys: &[String]) -> Result<Vec<StoredChunk>> {
        let mut out = Vec::new();
        for key in doc_keys {
            let mut chunks = Vec::new();
            let filter = docs_filter(std::slice::from_ref(key));
            self.scroll_all(Some(filter), HIT_FIELDS, |p| {
                chunks.push(stored_chunk(&p.payload))
            })?;
            chunks.sort_by_key(|c| c.ordinal);
            out.extend(chunks);
        }
        Ok(out)
    }

    /// Every point's id and content hash (to compare a collection with
    /// its index).
    pub fn content_hashes(&self) -> Result<Vec<(String, String)>> {
        let mut out: Vec<(String, String)> = self
            .existing()?
            .into_iter()
            .map(|(id, (hash, _))| (id, hash))
            .collect();
        out.sort();
        Ok(out)
    }

    /// Points in the collection.
    pub fn count(&self) -> Result<u64> {
        let req = CountPointsBuilder::new(&self.collection)
            .exact(true)
            .build();
        let r = request!(self, count, req)?;
        Ok(r.result.map_or(0, |c| c.count))
    }

    /// Deletes the collection.
    pub fn drop_collection(&self) -> Result<()> {
        let name = self.collection.clone();
        request!(self, delete_collection, name)?;
        Ok(())
    }
}

/// An error reaching the server, with a hint where it should be.
fn unreachable(e: Error, cfg: &QdrantConfig) -> Error {
    Error::Index(format!(
        "{e} (is a Qdrant server listening on {}? it takes the gRPC port, usually 6334)",
        cfg.url
    ))
}

/// Every live chunk of `index` as the point id and content hash its
/// point should have, sorted (to compare a collection with its index).
pub fn live_points(index: &ShirabeIndex) -> Result<Vec<(String, String)>> {
    let reader = index.reader()?;
    let searcher = reader.searcher();
    let mut out = index
        .live_keys(&searcher)?
        .into_iter()
        .map(|c| {
            Ok((
                point_id(&index.chunk_id_of(&searcher, c.addr)?),
                key_hex(&c.key),
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn point_ids_are_stable_uuids() {
        let a = point_id("doc-0001");
        assert_eq!(a, point_id("doc-0001"));
        assert_ne!(a, point_id("doc-0002"));
        let parts: Vec<usize> = a.split('-').map(str::len).collect();
        assert_eq!(parts, [8, 4, 4, 4, 12]);
    }
}
