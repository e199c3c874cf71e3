//! The embedded vector store: chunk embeddings inside the index directory.
//!
//! A store holds the vectors of one embedding model, addressed by the
//! BLAKE3 hash of the chunk text (the `content_hash` of the chunk in the
//! tantivy index), so it is also the embedding cache: a chunk whose text is
//! already in the store, because the file was re-ingested unchanged, moved
//! or copied, is never embedded again.
//!
//! Layout of `vectors/<store key>/`: `keys.bin` (16 bytes of hash per row)
//! and `vectors.bin` (`dims` little-endian f16 or f32 values per row), both
//! append-only; compaction writes `keys-N.bin` / `vectors-N.bin` beside
//! them and the manifest's `file_gen` says which generation is current. The number of committed rows lives in the index manifest
//! (see [`crate::index::manifest::VectorState`]), next to the generation
//! number the manifest bumps on every save: rows past it are the remains of
//! a write the process did not live to commit, and are cut off on open. So
//! a crash at any moment leaves the store at its last committed state.
//!
//! Which chunks a vector serves is never stored here: search resolves each
//! hash through the tantivy index, which knows what is live. A vector whose
//! chunks were all deleted is a cache entry search skips (and
//! [`VectorStore::compact`] drops).
//!
//! Search is exact: a scan of every row with SIMD dot products (the
//! kernels of [`crate::models::kernels`]), split over all cores, keeping the
//! best `k` per thread.

use std::collections::{BinaryHeap, HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use half::f16;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::index::hnsw::{Hnsw, Params};
use crate::models::kernels::Elem;
use crate::{Error, Result};

/// A content hash: the first 16 bytes of BLAKE3 of the chunk text.
pub type Key = [u8; 16];

/// Rows scanned per task.
const SCAN_BLOCK: usize = 4096;

/// The key of a chunk text.
pub fn key_of(text: &str) -> Key {
    let h = blake3::hash(text.as_bytes());
    h.as_bytes()[..16].try_into().expect("16 bytes")
}

/// A key as the 32 hex digits the tantivy index stores.
pub fn key_hex(key: &Key) -> String {
    key.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses [`key_hex`]'s output.
pub fn key_from_hex(hex: &str) -> Option<Key> {
    if hex.len() != 32 || !hex.is_ascii() {
        return None;
    }
    let mut key = [0u8; 16];
    for (i, b) in key.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(key)
}

/// How vector values are stored (`--vector-dtype`, `[embed] vector_dtype`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum VectorDtype {
    /// Half precision (the default: half the disk and scan bandwidth; unit
    /// vectors lose nothing that changes a ranking).
    #[default]
    F16,
    /// Single precision.
    F32,
}

impl VectorDtype {
    /// Bytes per value.
    pub fn size(self) -> usize {
        match self {
            VectorDtype::F16 => 2,
            VectorDtype::F32 => 4,
        }
    }
}

/// One hit of a dense search.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DenseHit {
    /// Row in the store.
    pub row: u32,
    /// Cosine similarity (vectors are unit length).
    pub score: f32,
}

/// Stores with at least this many rows get an HNSW graph (below it an
/// exact scan takes a few milliseconds anyway).
pub const ANN_MIN_ROWS: usize = 50_000;

/// Candidates an ANN search explores (at least `k`).
pub const ANN_EF: usize = 128;

/// An open store.
pub struct VectorStore {
    dir: PathBuf,
    dims: usize,
    dtype: VectorDtype,
    keys: Vec<Key>,
    rows_of: HashMap<Key, u32>,
    map: Option<memmap2::Mmap>,
    ann: Option<std::sync::Mutex<Hnsw>>,
    /// Which generation of files: compaction writes a new one beside the
    /// old, which stays valid until the manifest names the new one.
    gen: u64,
}

/// The path of a store file of generation `gen`.
fn file_of(dir: &Path, name: &str, gen: u64) -> PathBuf {
    if gen == 0 {
        dir.join(format!("{name}.bin"))
    } else {
        dir.join(format!("{name}-{gen}.bin"))
    }
}

impl std::fmt::Debug for VectorStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VectorStore")
            .field("dir", &self.dir)
            .field("dims", &self.dims)
            .field("dtype", &self.dtype)
            .field("rows", &self.keys.len())
            .finish()
    }
}

impl VectorStore {
    /// Opens the store in `dir` for writing (the caller holds the index
    /// lock), creating it if needed, with `rows` committed rows; anything
    /// past them (a write that was never committed) is cut off.
    pub fn open(dir: &Path, dims: usize, dtype: VectorDtype, rows: usize) -> Result<VectorStore> {
        Self::open_with(dir, dims, dtype, rows, 0, true)
    }

    /// [`VectorStore::open`] of the files of generation `gen`.
    pub fn open_gen(
        dir: &Path,
        dims: usize,
        dtype: VectorDtype,
        rows: usize,
        gen: u64,
    ) -> Result<VectorStore> {
        Self::open_with(dir, dims, dtype, rows, gen, true)
    }

    /// [`VectorStore::open_read`] of the files of generation `gen`.
    pub fn open_read_gen(
        dir: &Path,
        dims: usize,
        dtype: VectorDtype,
        rows: usize,
        gen: u64,
    ) -> Result<VectorStore> {
        Self::open_with(dir, dims, dtype, rows, gen, false)
    }

    /// Opens the store for reading: the first `rows` rows, leaving the
    /// files alone (a writer may be appending to them at this moment).
    pub fn open_read(
        dir: &Path,
        dims: usize,
        dtype: VectorDtype,
        rows: usize,
    ) -> Result<VectorStore> {
        Self::open_with(dir, dims, dtype, rows, 0, false)
    }

    fn open_with(
        dir: &Path,
        dims: usize,
        dtype: VectorDtype,
        rows: usize,
        gen: u64,
        write: bool,
    ) -> Result<VectorStore> {
        if dims == 0 {
            return Err(Error::Index("vector store: zero dimensions".into()));
        }
        let keys_path = file_of(dir, "keys", gen);
        let data_path = file_of(dir, "vectors", gen);
        let row_bytes = dims * dtype.size();
        if !write && rows == 0 && !keys_path.exists() {
            return Ok(VectorStore {
                dir: dir.to_path_buf(),
                dims,
                dtype,
                keys: Vec::new(),
                rows_of: HashMap::new(),
                map: None,
                ann: None,
                gen,
            });
        }
        if write {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        for (path, width) in [(&keys_path, 16), (&data_path, row_bytes)] {
            let f = OpenOptions::new()
                .create(write)
                .truncate(false)
                .read(true)
                .write(write)
                .open(path)
                .map_err(|e| Error::io(path, e))?;
            let len = f.metadata().map_err(|e| Error::io(path, e))?.len();
            let want = (rows * width) as u64;
            if len < want {
                return Err(Error::Index(format!(
                    "{}: {} rows committed but the file holds {}",
                    path.display(),
                    rows,
                    len / width as u64
                )));
            }
            if len > want && write {
                f.set_len(want).map_err(|e| Error::io(path, e))?;
            }
        }
        let mut raw = std::fs::read(&keys_path).map_err(|e| Error::io(&keys_path, e))?;
        raw.truncate(rows * 16);
        let keys: Vec<Key> = raw
            .chunks_exact(16)
            .map(|c| c.try_into().expect("16 bytes"))
            .collect();
        let rows_of = keys
            .iter()
            .enumerate()
            .map(|(i, k)| (*k, i as u32))
            .collect();
        let ann = match Hnsw::load(&dir.join("hnsw.bin"))? {
            Some((g, last))
                if g.len() <= keys.len() && (g.is_empty() || keys[g.len() - 1] == last) =>
            {
                Some(std::sync::Mutex::new(g))
            }
            _ => None,
        };
        let mut store = VectorStore {
            dir: dir.to_path_buf(),
            dims,
            dtype,
            keys,
            rows_of,
            map: None,
            ann,
            gen,
        };
        store.remap()?;
        Ok(store)
    }

    fn data_path(&self) -> PathBuf {
        file_of(&self.dir, "vectors", self.gen)
    }

    /// The generation of the files in use.
    pub fn generation(&self) -> u64 {
        self.gen
    }

    /// Deletes the files of another generation (after the manifest names
    /// this one).
    pub fn remove_generation(&self, gen: u64) {
        if gen != self.gen {
            for name in ["keys", "vectors"] {
                let _ = std::fs::remove_file(file_of(&self.dir, name, gen));
            }
        }
    }

    fn remap(&mut self) -> Result<()> {
        self.map = None;
        if self.keys.is_empty() {
            return Ok(());
        }
        let path = self.data_path();
        let f = File::open(&path).map_err(|e| Error::io(&path, e))?;
        // SAFETY: the file is only ever appended to (and cut back to the
        // committed length on open) by the process that holds the index
        // lock; the mapped prefix is never modified while it is mapped.
        let map =
            unsafe { memmap2::MmapOptions::new().map(&f) }.map_err(|e| Error::io(&path, e))?;
        if map.len() < self.keys.len() * self.row_bytes() {
            return Err(Error::Index(format!("{}: truncated", path.display())));
        }
        self.map = Some(map);
        Ok(())
    }

    fn row_bytes(&self) -> usize {
        self.dims * self.dtype.size()
    }

    /// Dimensions of the vectors.
    pub fn dims(&self) -> usize {
        self.dims
    }

    /// How values are stored.
    pub fn dtype(&self) -> VectorDtype {
        self.dtype
    }

    /// Rows in the store.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// True if the store has no rows.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The row holding `key`'s vector.
    pub fn row_of(&self, key: &Key) -> Option<u32> {
        self.rows_of.get(key).copied()
    }

    /// True if the store has a vector for `key`.
    pub fn contains(&self, key: &Key) -> bool {
        self.rows_of.contains_key(key)
    }

    /// The key of a row.
    pub fn key(&self, row: u32) -> Key {
        self.keys[row as usize]
    }

    fn bytes(&self) -> &[u8] {
        self.map
            .as_deref()
            .map_or(&[][..], |m| &m[..self.keys.len() * self.row_bytes()])
    }

    fn f16_rows(&self) -> &[f16] {
        bytemuck::cast_slice(self.bytes())
    }

    fn f32_rows(&self) -> &[f32] {
        bytemuck::cast_slice(self.bytes())
    }

    /// A row's vector as f32.
    pub fn vector(&self, row: u32) -> Vec<f32> {
        let (d, r) = (self.dims, row as usize);
        match self.dtype {
            VectorDtype::F16 => self.f16_rows()[r * d..(r + 1) * d]
                .iter()
                .map(|v| v.to_f32())
                .collect(),
            VectorDtype::F32 => self.f32_rows()[r * d..(r + 1) * d].to_vec(),
        }
    }

    /// Appends vectors (keys already present are skipped) and makes them
    /// durable; they count as committed once the caller has saved the
    /// manifest with the new [`VectorStore::len`].
    pub fn append(&mut self, items: &[(Key, Vec<f32>)]) -> Result<usize> {
        let mut fresh: Vec<&(Key, Vec<f32>)> = Vec::new();
        let mut seen = HashSet::new();
        for it in items {
            if it.1.len() != self.dims {
                return Err(Error::Index(format!(
                    "vector store: a vector of {} dimensions in a store of {}",
                    it.1.len(),
                    self.dims
                )));
            }
            if !self.rows_of.contains_key(&it.0) && seen.insert(it.0) {
                fresh.push(it);
            }
        }
        if fresh.is_empty() {
            return Ok(0);
        }
        let keys_path = file_of(&self.dir, "keys", self.gen);
        let data_path = self.data_path();
        let open = |p: &Path| {
            OpenOptions::new()
                .append(true)
                .open(p)
                .map_err(|e| Error::io(p, e))
        };
        let (kf, df) = (open(&keys_path)?, open(&data_path)?);
        let mut kw = BufWriter::new(&kf);
        let mut dw = BufWriter::new(&df);
        for (key, v) in &fresh {
            kw.write_all(key).map_err(|e| Error::io(&keys_path, e))?;
            let mut buf = Vec::with_capacity(self.row_bytes());
            match self.dtype {
                VectorDtype::F16 => {
                    for x in v {
                        buf.extend_from_slice(&f16::from_f32(*x).to_le_bytes());
                    }
                }
                VectorDtype::F32 => {
                    for x in v {
                        buf.extend_from_slice(&x.to_le_bytes());
                    }
                }
            }
            dw.write_all(&buf).map_err(|e| Error::io(&data_path, e))?;
        }
        kw.flush().map_err(|e| Error::io(&keys_path, e))?;
        dw.flush().map_err(|e| Error::io(&data_path, e))?;
        drop((kw, dw));
        df.sync_data().map_err(|e| Error::io(&data_path, e))?;
        kf.sync_data().map_err(|e| Error::io(&keys_path, e))?;
        for (key, _) in &fresh {
            self.rows_of.insert(*key, self.keys.len() as u32);
            self.keys.push(*key);
        }
        self.remap()?;
        Ok(fresh.len())
    }

    /// The `k` rows most similar to `query` (a unit vector of [`dims`]
    /// values) among those `allow` accepts, best first.
    ///
    /// [`dims`]: VectorStore::dims
    pub fn search(
        &self,
        query: &[f32],
        k: usize,
        allow: Option<&(dyn Fn(u32) -> bool + Sync)>,
    ) -> Result<Vec<DenseHit>> {
        if query.len() != self.dims {
            return Err(Error::Query(format!(
                "query vector has {} dimensions, the index {}",
                query.len(),
                self.dims
            )));
        }
        let k = k.min(self.len());
        if k == 0 {
            return Ok(Vec::new());
        }
        let hits = match self.dtype {
            VectorDtype::F16 => scan(query, self.f16_rows(), self.dims, k, allow),
            VectorDtype::F32 => scan(query, self.f32_rows(), self.dims, k, allow),
        };
        Ok(hits)
    }

    /// Rows the HNSW graph covers (0 without one).
    pub fn ann_rows(&self) -> usize {
        self.ann
            .as_ref()
            .map_or(0, |g| g.lock().map_or(0, |g| g.len()))
    }

    /// Similarities of `rows` to a [`Elem::prepare`]d query.
    fn sims(&self, q: &[f32], rows: &[u32], out: &mut [f32]) {
        match self.dtype {
            VectorDtype::F16 => sims_of(q, self.f16_rows(), self.dims, rows, out),
            VectorDtype::F32 => sims_of(q, self.f32_rows(), self.dims, rows, out),
        }
    }

    fn prepared(&self, v: &[f32]) -> Vec<f32> {
        match self.dtype {
            VectorDtype::F16 => f16::prepare(v),
            VectorDtype::F32 => f32::prepare(v),
        }
    }

    /// Extends the HNSW graph to every row (building it if there is none)
    /// and saves it; `progress(done, total)` is called as rows go in.
    /// Returns the rows added.
    pub fn build_ann(
        &mut self,
        params: Params,
        cancel: &std::sync::atomic::AtomicBool,
        progress: &dyn Fn(usize, usize),
    ) -> Result<usize> {
        let mut g = match self.ann.take() {
            Some(m) => m.into_inner().unwrap_or_else(|e| e.into_inner()),
            None => Hnsw::new(params),
        };
        let start = g.len();
        let total = self.len();
        let path = self.dir.join("hnsw.bin");
        let mut saved = start;
        for r in start..total {
            if cancel.load(std::sync::atomic::Ordering::Relaxed) {
                break;
            }
            let new = self.prepared(&self.vector(r as u32));
            g.insert(&|rows, out| self.sims(&new, rows, out), &|a, rows, out| {
                let pa = self.prepared(&self.vector(a));
                self.sims(&pa, rows, out)
            });
            if (r + 1) % 1024 == 0 || r + 1 == total {
                progress(r + 1 - start, total - start);
            }
            // A graph of a prefix is a valid graph: save now and then, so
            // a stop loses little.
            if g.len() - saved >= 100_000 {
                g.save(&path, &self.keys[g.len() - 1])?;
                saved = g.len();
            }
        }
        if g.len() > saved {
            g.save(&path, &self.keys[g.len() - 1])?;
        }
        let added = g.len() - start;
        self.ann = Some(std::sync::Mutex::new(g));
        Ok(added)
    }

    /// Like [`VectorStore::search`], through the HNSW graph when there is
    /// one (approximate, exploring `ef` candidates), with rows the graph
    /// does not cover yet scanned exactly and merged in.
    pub fn search_ann(&self, query: &[f32], k: usize, ef: usize) -> Result<Vec<DenseHit>> {
        let k = k.min(self.len());
        let Some(ann) = &self.ann else {
            return self.search(query, k, None);
        };
        if query.len() != self.dims {
            return self.search(query, k, None);
        }
        let mut g = ann.lock().unwrap_or_else(|e| e.into_inner());
        let covered = g.len() as u32;
        let q = self.prepared(query);
        let mut hits: Vec<DenseHit> = g
            .search(&|rows, out| self.sims(&q, rows, out), k, ef.max(k))
            .into_iter()
            .map(|(row, score)| DenseHit { row, score })
            .collect();
        drop(g);
        if (covered as usize) < self.len() {
            let tail = self.search(query, k, Some(&|r| r >= covered))?;
            hits.extend(tail);
            hits.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.row.cmp(&b.row)));
            hits.truncate(k);
        }
        Ok(hits)
    }

    /// Writes the store again keeping only `keep`'s vectors, as the next
    /// generation of files, and switches to it; returns the rows dropped.
    /// The old files stay untouched (and valid for the old manifest) until
    /// the caller has saved the manifest with the new generation and length
    /// and calls [`VectorStore::remove_generation`].
    pub fn compact(&mut self, keep: &HashSet<Key>) -> Result<usize> {
        let rows: Vec<usize> = (0..self.keys.len())
            .filter(|&r| keep.contains(&self.keys[r]))
            .collect();
        let dropped = self.keys.len() - rows.len();
        if dropped == 0 {
            return Ok(0);
        }
        let rb = self.row_bytes();
        let next = self.gen + 1;
        let new_keys = file_of(&self.dir, "keys", next);
        let new_data = file_of(&self.dir, "vectors", next);
        {
            let write = |path: &Path, f: &dyn Fn(&mut dyn Write) -> std::io::Result<()>| {
                let file = File::create(path).map_err(|e| Error::io(path, e))?;
                let mut w = BufWriter::new(&file);
                f(&mut w).map_err(|e| Error::io(path, e))?;
                w.flush().map_err(|e| Error::io(path, e))?;
                drop(w);
                file.sync_all().map_err(|e| Error::io(path, e))
            };
            let bytes = self.bytes();
            write(&new_data, &|w| {
                rows.iter()
                    .try_for_each(|&r| w.write_all(&bytes[r * rb..(r + 1) * rb]))
            })?;
            write(&new_keys, &|w| {
                rows.iter().try_for_each(|&r| w.write_all(&self.keys[r]))
            })?;
        }
        self.map = None;
        // Row numbers change: the graph no longer fits.
        self.ann = None;
        let _ = std::fs::remove_file(self.dir.join("hnsw.bin"));
        self.gen = next;
        self.keys = rows.iter().map(|&r| self.keys[r]).collect();
        self.rows_of = self
            .keys
            .iter()
            .enumerate()
            .map(|(i, k)| (*k, i as u32))
            .collect();
        self.remap()?;
        Ok(dropped)
    }

    /// Bytes on disk.
    pub fn disk_bytes(&self) -> u64 {
        (self.keys.len() * (16 + self.row_bytes())) as u64
    }
}

/// A scored row ordered so that a `BinaryHeap` pops the worst first.
#[derive(Clone, Copy, PartialEq)]
struct Worst(f32, u32);

impl Eq for Worst {}

impl PartialOrd for Worst {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Worst {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        // Reverse: lower score = "greater" = popped first; ties by row.
        other
            .0
            .total_cmp(&self.0)
            .then_with(|| self.1.cmp(&other.1))
    }
}

/// Keeps the best `k` of what it is offered.
struct TopK {
    k: usize,
    heap: BinaryHeap<Worst>,
}

impl TopK {
    fn new(k: usize) -> TopK {
        TopK {
            k,
            heap: BinaryHeap::with_capacity(k + 1),
        }
    }

    #[inline]
    fn offer(&mut self, score: f32, row: u32) {
        if self.heap.len() < self.k {
            self.heap.push(Worst(score, row));
        } else if let Some(w) = self.heap.peek() {
            if score > w.0 || (score == w.0 && row < w.1) {
                self.heap.pop();
                self.heap.push(Worst(score, row));
            }
        }
    }

    fn merge(mut self, other: TopK) -> TopK {
        for w in other.heap {
            self.offer(w.0, w.1);
        }
        self
    }

    fn sorted(self) -> Vec<DenseHit> {
        let mut v: Vec<DenseHit> = self
            .heap
            .into_iter()
            .map(|w| DenseHit {
                row: w.1,
                score: w.0,
            })
            .collect();
        v.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.row.cmp(&b.row)));
        v
    }
}

/// Similarities of some rows to a prepared query, four at a time.
fn sims_of<W: Elem>(q: &[f32], data: &[W], dims: usize, rows: &[u32], out: &mut [f32]) {
    let row = |r: u32| &data[r as usize * dims..(r as usize + 1) * dims];
    let mut i = 0;
    while i < rows.len() {
        let pick = |j: usize| row(rows[(i + j).min(rows.len() - 1)]);
        let s = W::dot4(q, [pick(0), pick(1), pick(2), pick(3)]);
        for (j, &v) in s.iter().enumerate().take(rows.len() - i) {
            out[i + j] = v;
        }
        i += 4;
    }
}

/// Exact top-k by dot product over `rows` (row-major, `dims` wide).
fn scan<W: Elem>(
    query: &[f32],
    rows: &[W],
    dims: usize,
    k: usize,
    allow: Option<&(dyn Fn(u32) -> bool + Sync)>,
) -> Vec<DenseHit> {
    let q = W::prepare(query);
    let n = rows.len() / dims;
    let blocks = n.div_ceil(SCAN_BLOCK);
    (0..blocks)
        .into_par_iter()
        .fold(
            || TopK::new(k),
            |mut top, b| {
                let lo = b * SCAN_BLOCK;
                let hi = (lo + SCAN_BLOCK).min(n);
                let row = |r: usize| &rows[r * dims..(r + 1) * dims];
                let mut r = lo;
                while r + 4 <= hi {
                    let s = W::dot4(&q, [row(r), row(r + 1), row(r + 2), row(r + 3)]);
                    for (j, &sj) in s.iter().enumerate() {
                        let id = (r + j) as u32;
                        if allow.is_none_or(|f| f(id)) {
                            top.offer(sj, id);
                        }
                    }
                    r += 4;
                }
                while r < hi {
                    let s = W::dot4(&q, [row(r), row(r), row(r), row(r)])[0];
                    let id = r as u32;
                    if allow.is_none_or(|f| f(id)) {
                        top.offer(s, id);
                    }
                    r += 1;
                }
                top
            },
        )
        .reduce(|| TopK::new(k), TopK::merge)
        .sorted()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(seed: u64, dims: usize) -> Vec<f32> {
        let mut rng = crate::rng::Rng::new(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let mut v: Vec<f32> = (0..dims).map(|_| rng.uniform() - 0.5).collect();
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter_mut().for_each(|x| *x /= n);
        v
    }

    fn naive(q: &[f32], vs: &[Vec<f32>], k: usize) -> Vec<u32> {
        let mut s: Vec<(f32, u32)> = vs
            .iter()
            .enumerate()
            .map(|(i, v)| (v.iter().zip(q).map(|(a, b)| a * b).sum(), i as u32))
            .collect();
        s.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        s.into_iter().take(k).map(|x| x.1).collect()
    }

    #[test]
    fn hex_round_trip() {
        let k = key_of("some text");
        assert_eq!(key_from_hex(&key_hex(&k)), Some(k));
        assert_eq!(key_from_hex("zz"), None);
        assert_eq!(
            key_hex(&k),
            &blake3::hash(b"some text").to_hex()[..32],
            "the index stores the same hex"
        );
    }

    #[test]
    fn exact_search_matches_naive_in_both_dtypes() {
        for dtype in [VectorDtype::F32, VectorDtype::F16] {
            let dir = tempfile::tempdir().unwrap();
            let dims = 72;
            let mut store = VectorStore::open(dir.path(), dims, dtype, 0).unwrap();
            let vs: Vec<Vec<f32>> = (0..9001).map(|i| unit(i, dims)).collect();
            let items: Vec<(Key, Vec<f32>)> = vs
                .iter()
                .enumerate()
                .map(|(i, v)| (key_of(&i.to_string()), v.clone()))
                .collect();
            assert_eq!(store.append(&items).unwrap(), vs.len());
            for qi in [3u64, 77, 5000] {
                let q = unit(qi + 100_000, dims);
                let got: Vec<u32> = store
                    .search(&q, 10, None)
                    .unwrap()
                    .iter()
                    .map(|h| h.row)
                    .collect();
                let want = naive(&q, &vs, 10);
                if dtype == VectorDtype::F32 {
                    assert_eq!(got, want);
                } else {
                    // f16 rounding may swap near-ties: compare as sets.
                    let overlap = got.iter().filter(|r| want.contains(r)).count();
                    assert!(overlap >= 9, "{dtype:?}: {got:?} vs {want:?}");
                }
            }
            // A stored vector finds itself first.
            let hit = store.search(&vs[1234], 1, None).unwrap()[0];
            assert_eq!(hit.row, 1234);
            assert!((hit.score - 1.0).abs() < 2e-3);
            // The filter is honoured.
            let even = |r: u32| r.is_multiple_of(2);
            let hits = store.search(&vs[1235], 5, Some(&even)).unwrap();
            assert!(hits.iter().all(|h| h.row.is_multiple_of(2)));
        }
    }

    #[test]
    fn uncommitted_rows_are_cut_off_and_duplicates_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = VectorStore::open(dir.path(), 8, VectorDtype::F16, 0).unwrap();
        let a = (key_of("a"), unit(1, 8));
        let b = (key_of("b"), unit(2, 8));
        assert_eq!(store.append(&[a.clone(), a.clone()]).unwrap(), 1);
        assert_eq!(store.append(&[a.clone(), b.clone()]).unwrap(), 1);
        assert_eq!(store.len(), 2);
        drop(store);
        // Only one row was committed: the second is a torn write.
        let store = VectorStore::open(dir.path(), 8, VectorDtype::F16, 1).unwrap();
        assert_eq!(store.len(), 1);
        assert!(store.contains(&a.0) && !store.contains(&b.0));
        assert_eq!(
            std::fs::metadata(dir.path().join("vectors.bin"))
                .unwrap()
                .len(),
            16
        );
        // A reader sees the committed rows and leaves a writer's tail alone.
        let mut writer = store;
        writer.append(std::slice::from_ref(&b)).unwrap();
        let reader = VectorStore::open_read(dir.path(), 8, VectorDtype::F16, 1).unwrap();
        assert_eq!(reader.len(), 1);
        assert!(!reader.contains(&b.0));
        assert_eq!(
            std::fs::metadata(dir.path().join("keys.bin"))
                .unwrap()
                .len(),
            32,
            "the reader truncated nothing"
        );
        drop((writer, reader));
        // More rows committed than on disk is damage, reported (the
        // index names the store and the repair around it).
        let err = VectorStore::open(dir.path(), 8, VectorDtype::F16, 5).unwrap_err();
        assert!(err.to_string().contains("5 rows committed"), "{err}");
    }

    #[test]
    fn ann_search_finds_what_exact_search_finds() {
        let dir = tempfile::tempdir().unwrap();
        let dims = 32;
        let mut store = VectorStore::open(dir.path(), dims, VectorDtype::F16, 0).unwrap();
        let vs: Vec<Vec<f32>> = (0..2000).map(|i| unit(i, dims)).collect();
        let items: Vec<(Key, Vec<f32>)> = vs
            .iter()
            .enumerate()
            .map(|(i, v)| (key_of(&i.to_string()), v.clone()))
            .collect();
        store.append(&items[..1500]).unwrap();
        assert_eq!(
            store
                .build_ann(
                    Params::default(),
                    &std::sync::atomic::AtomicBool::new(false),
                    &|_, _| {}
                )
                .unwrap(),
            1500
        );
        // Rows added after the graph are found by the exact tail scan.
        store.append(&items[1500..]).unwrap();
        assert_eq!(store.ann_rows(), 1500);
        let hit = store.search_ann(&vs[1900], 1, ANN_EF).unwrap()[0];
        assert_eq!(hit.row, 1900);
        let mut overlap = 0;
        for qi in 0..20u64 {
            let q = unit(qi + 50_000, dims);
            let exact: Vec<u32> = store
                .search(&q, 10, None)
                .unwrap()
                .iter()
                .map(|h| h.row)
                .collect();
            let ann = store.search_ann(&q, 10, ANN_EF).unwrap();
            overlap += ann.iter().filter(|h| exact.contains(&h.row)).count();
        }
        assert!(overlap >= 180, "recall@10 {}", overlap as f64 / 200.0);
        // The graph is saved and reloaded with the store; extending it
        // covers the new rows.
        drop(store);
        let mut store = VectorStore::open(dir.path(), dims, VectorDtype::F16, 2000).unwrap();
        assert_eq!(store.ann_rows(), 1500);
        assert_eq!(
            store
                .build_ann(
                    Params::default(),
                    &std::sync::atomic::AtomicBool::new(false),
                    &|_, _| {}
                )
                .unwrap(),
            500
        );
        // A store cut back below the graph (a crash) drops the graph.
        drop(store);
        let store = VectorStore::open(dir.path(), dims, VectorDtype::F16, 1000).unwrap();
        assert_eq!(store.ann_rows(), 0);
    }

    #[test]
    fn compact_keeps_only_live_keys() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = VectorStore::open(dir.path(), 8, VectorDtype::F32, 0).unwrap();
        let items: Vec<(Key, Vec<f32>)> = (0..10)
            .map(|i| (key_of(&i.to_string()), unit(i, 8)))
            .collect();
        store.append(&items).unwrap();
        let keep: HashSet<Key> = items.iter().step_by(3).map(|x| x.0).collect();
        assert_eq!(store.compact(&keep).unwrap(), 6);
        assert_eq!(store.len(), 4);
        assert_eq!(store.generation(), 1);
        let r = store.row_of(&items[3].0).unwrap();
        assert_eq!(store.vector(r), items[3].1);
        // Until the manifest moves on, the old generation is intact.
        let old = VectorStore::open_read(dir.path(), 8, VectorDtype::F32, 10).unwrap();
        assert_eq!(old.len(), 10);
        let reopened = VectorStore::open_gen(dir.path(), 8, VectorDtype::F32, 4, 1).unwrap();
        assert_eq!(reopened.vector(r), items[3].1);
        reopened.remove_generation(0);
        assert!(!dir.path().join("keys.bin").exists());
    }
}
