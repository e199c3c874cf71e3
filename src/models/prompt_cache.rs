//! Prefill once, ask many times: the keys and values of prompts a model
//! has read, kept so that a prompt sharing a prefix with an earlier one
//! (the same pinned documents, a chat follow-up, a retry) prefills only
//! its new tokens.
//!
//! **In memory** the last [`MEMORY_ENTRIES`] caches of a generator are
//! kept with the tokens they hold (prompt and answer). A new prompt takes
//! the one sharing its longest prefix, truncated to that prefix; the
//! generation puts it back, longer.
//!
//! **On disk** a generation may keep its prompt's stable prefix (the
//! pinned documents up to the question) in a file under the user's cache
//! directory, `kv/<model key>/<prefix hash>.kv`, so a new process skips
//! that prefill too. The model key hashes the weight files' paths, sizes
//! and modification times; the file holds the tokens and every layer's
//! rows in the cache's own type (int8 with block scales for GGUF models
//! on the CPU, which is llama.cpp's q8_0 cache). Files are written whole
//! and renamed into place, and the directory is kept under a size cap
//! ([`DISK_BYTES`], `SHIRABE_KV_CACHE_GB`), least recently used removed
//! first. `SHIRABE_KV_CACHE` names another directory, or `off`.

use std::fs;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};

use super::qwen3::{Cache, KvType, LayerRows, Model};
use crate::{Error, Result};

/// Caches kept in memory per generator.
pub const MEMORY_ENTRIES: usize = 3;

/// A cache in memory is taken for a prompt that shares at least this many
/// tokens with it and at least a quarter of it ([`worth_taking`]).
pub const MIN_REUSE_TOKENS: usize = 32;

/// Their bytes at most (the newest is kept whatever its size).
pub const MEMORY_BYTES: usize = 3 << 30;

/// The disk cache's default cap.
pub const DISK_BYTES: u64 = 8 << 30;

/// The shortest prefix worth a file, or worth reading one.
pub const MIN_DISK_TOKENS: usize = 256;

const MAGIC: &[u8; 8] = b"SHKVC\0\0\x01";

/// Whether a cache in memory of `held` tokens is taken by a prompt that
/// shares `shared` of them: the cache is cut to what is shared, so an
/// unrelated prompt (a follow-up's rewrite sharing only the chat
/// template's first tokens) must not cut long pinned documents away.
pub fn worth_taking(shared: usize, held: usize) -> bool {
    shared >= MIN_REUSE_TOKENS && shared * 4 >= held
}

/// Tokens two sequences share at their start.
pub fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// A cache file and the prefix of a prompt it holds.
type Found = (PathBuf, usize);

/// A cache taken for a new prompt.
pub struct Reused {
    /// The cache, holding the first `tokens` positions of the prompt.
    pub cache: Cache,
    /// Positions it holds.
    pub tokens: usize,
    /// Read from a file (else it was in memory).
    pub from_disk: bool,
}

struct Entry {
    ids: Vec<u32>,
    cache: Cache,
    used: u64,
}

/// A generator's caches: the recent ones in memory, the kept prefixes on
/// disk.
#[derive(Default)]
pub struct PromptCache {
    entries: Vec<Entry>,
    clock: u64,
    disk: Option<DiskStore>,
}

impl PromptCache {
    /// Caches in memory and, with `disk`, on disk.
    pub fn new(disk: Option<DiskStore>) -> PromptCache {
        PromptCache {
            entries: Vec::new(),
            clock: 0,
            disk,
        }
    }

    /// The cache sharing the longest prefix with `ids` — at most all but
    /// its last token, which must be read to give the next token's logits
    /// — truncated to that prefix, with room for `reserve` positions.
    /// `None` when nothing is shared.
    pub fn take(
        &mut self,
        ids: &[u32],
        model: &Model,
        kind: KvType,
        reserve: usize,
    ) -> Option<Reused> {
        let (mem, file) = self.lookup(ids, kind);
        if let (Some((path, n)), Some(disk)) = (file, &self.disk) {
            match disk.load(&path, n, model, kind, reserve) {
                Ok(cache) => {
                    return Some(Reused {
                        cache,
                        tokens: n,
                        from_disk: true,
                    })
                }
                Err(e) => {
                    tracing::warn!("{}: {e}; removing it", path.display());
                    let _ = fs::remove_file(&path);
                }
            }
        }
        let (i, n) = mem?;
        let mut e = self.entries.swap_remove(i);
        e.cache.truncate(n);
        e.cache.reserve(reserve);
        Some(Reused {
            cache: e.cache,
            tokens: n,
            from_disk: false,
        })
    }

    /// How many of `ids`' first tokens [`PromptCache::take`] would find,
    /// without taking them.
    pub fn peek(&self, ids: &[u32], kind: KvType) -> usize {
        match self.lookup(ids, kind) {
            (_, Some((_, n))) => n,
            (mem, None) => mem.map_or(0, |m| m.1),
        }
    }

    /// What [`PromptCache::take`] would use for `ids`: the entry in
    /// memory sharing the longest prefix (its index and that prefix), and
    /// a file when one shares a longer prefix of at least
    /// [`MIN_DISK_TOKENS`]. The directory is read only for prompts that
    /// long.
    fn lookup(&self, ids: &[u32], kind: KvType) -> (Option<(usize, usize)>, Option<Found>) {
        let limit = ids.len().saturating_sub(1);
        let mem = self
            .entries
            .iter()
            .enumerate()
            .filter(|(_, e)| e.cache.kind() == kind)
            .map(|(i, e)| (i, common_prefix(&e.ids, ids).min(limit), e.ids.len()))
            .filter(|&(_, n, held)| worth_taking(n, held))
            .map(|(i, n, _)| (i, n))
            .max_by_key(|&(_, n)| n);
        let mem_n = mem.map_or(0, |m| m.1);
        let file = self
            .disk
            .as_ref()
            .filter(|_| limit >= MIN_DISK_TOKENS)
            .and_then(|d| d.best(ids, limit, kind))
            .filter(|&(_, n)| n > mem_n && n >= MIN_DISK_TOKENS);
        (mem, file)
    }

    /// Keeps `cache`, which holds the positions of `ids`, for the next
    /// prompt; the least recently used go past [`MEMORY_ENTRIES`] or
    /// [`MEMORY_BYTES`].
    pub fn put(&mut self, ids: Vec<u32>, cache: Cache) {
        if cache.len() != ids.len() || ids.is_empty() {
            return;
        }
        self.clock += 1;
        // An entry this one extends says nothing more.
        self.entries.retain(|e| {
            !(e.cache.kind() == cache.kind() && common_prefix(&e.ids, &ids) == e.ids.len())
        });
        self.entries.push(Entry {
            ids,
            cache,
            used: self.clock,
        });
        loop {
            let bytes: usize = self.entries.iter().map(|e| e.cache.bytes()).sum();
            if self.entries.len() <= 1
                || (self.entries.len() <= MEMORY_ENTRIES && bytes <= MEMORY_BYTES)
            {
                break;
            }
            let oldest = self
                .entries
                .iter()
                .enumerate()
                .min_by_key(|(_, e)| e.used)
                .map(|(i, _)| i)
                .expect("non-empty");
            self.entries.remove(oldest);
        }
    }

    /// Writes the first `n` positions of `cache` (the tokens `ids[..n]`)
    /// to disk, unless a file already holds them. Returns whether a file
    /// was written.
    pub fn persist(&self, ids: &[u32], n: usize, cache: &Cache) -> Result<bool> {
        let Some(disk) = &self.disk else {
            return Ok(false);
        };
        let n = n.min(ids.len()).min(cache.len());
        if n < MIN_DISK_TOKENS {
            return Ok(false);
        }
        if disk
            .best(&ids[..n], n, cache.kind())
            .is_some_and(|(_, m)| m >= n)
        {
            return Ok(false);
        }
        disk.save(&ids[..n], cache)?;
        Ok(true)
    }
}

/// A directory of cache files for one model.
#[derive(Debug, Clone)]
pub struct DiskStore {
    dir: PathBuf,
    cap: u64,
}

/// What a cache file's header says.
#[derive(serde::Serialize, serde::Deserialize)]
struct Header {
    model: String,
    kind: String,
    layers: usize,
    tokens: usize,
    kv_heads: usize,
    head_dim: usize,
    /// Scale blocks per row (int8 rows), else 0.
    blocks: usize,
    dtype: String,
}

impl DiskStore {
    /// The store for the model `key` under `root`, capped at `cap` bytes.
    pub fn at(root: &Path, key: &str, cap: u64) -> DiskStore {
        DiskStore {
            dir: root.join(key),
            cap,
        }
    }

    /// The user's store for the model `key`: `SHIRABE_KV_CACHE` (`off`
    /// for none), else `kv/` under the user's cache directory.
    pub fn user(key: &str) -> Option<DiskStore> {
        let root = match std::env::var_os("SHIRABE_KV_CACHE") {
            Some(v) if v == "off" || v == "0" || v.is_empty() => return None,
            Some(v) => PathBuf::from(v),
            None => directories::ProjectDirs::from("", "", "shirabe")?
                .cache_dir()
                .join("kv"),
        };
        let cap = std::env::var("SHIRABE_KV_CACHE_GB")
            .ok()
            .and_then(|v| v.parse::<f64>().ok())
            .filter(|g| g.is_finite() && *g >= 0.0)
            .map_or(DISK_BYTES, |g| (g * (1u64 << 30) as f64) as u64);
        Some(DiskStore::at(&root, key, cap))
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn files(&self) -> Vec<PathBuf> {
        let Ok(rd) = fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        rd.flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "kv"))
            .collect()
    }

    /// The file sharing the longest prefix with `ids` (at most `limit`
    /// tokens) in the cache type `kind`, and that prefix.
    fn best(&self, ids: &[u32], limit: usize, kind: KvType) -> Option<Found> {
        self.files()
            .into_iter()
            .filter_map(|p| {
                let (h, tokens) = read_head(&p).ok()?;
                (h.kind == kind.to_string()).then(|| {
                    let n = common_prefix(&tokens, ids).min(limit);
                    (p, n)
                })
            })
            .max_by_key(|(_, n)| *n)
            .filter(|(_, n)| *n > 0)
    }

    /// Reads the first `n` positions of the file at `path`.
    fn load(
        &self,
        path: &Path,
        n: usize,
        model: &Model,
        kind: KvType,
        reserve: usize,
    ) -> Result<Cache> {
        let io = |e| Error::io(path, e);
        let mut r = BufReader::with_capacity(1 << 20, fs::File::open(path).map_err(io)?);
        let h = read_header(&mut r, path)?;
        skip(&mut r, 4 * h.tokens as u64).map_err(io)?;
        let dtype = dtype_of(&h.dtype).ok_or_else(|| bad(path, "an unknown dtype"))?;
        let cfg = model.config();
        if h.layers != cfg.num_hidden_layers
            || h.kv_heads != cfg.num_key_value_heads
            || h.head_dim != cfg.head_dim()
        {
            return Err(bad(path, "another model's shapes"));
        }
        let mut rows = Vec::with_capacity(h.layers);
        // Each tensor is (1, kv_heads, tokens, width): the first n
        // positions of each head, the rest skipped.
        let mut read = |width: usize, dt: DType| -> Result<Tensor> {
            let row = width * dt.size_in_bytes();
            let mut buf = vec![0u8; h.kv_heads * n * row];
            for head in 0..h.kv_heads {
                r.read_exact(&mut buf[head * n * row..(head + 1) * n * row])
                    .map_err(io)?;
                skip(&mut r, ((h.tokens - n) * row) as u64).map_err(io)?;
            }
            Tensor::from_raw_buffer(&buf, dt, &[1, h.kv_heads, n, width], &Device::Cpu)
                .map_err(|e| Error::Model(e.to_string()))
        };
        for _ in 0..h.layers {
            let k = read(h.head_dim, dtype)?;
            let v = read(h.head_dim, dtype)?;
            let scales = if h.blocks > 0 {
                Some((read(h.blocks, DType::F32)?, read(h.blocks, DType::F32)?))
            } else {
                None
            };
            rows.push(LayerRows { k, v, scales });
        }
        let device = model.device();
        if !device.is_cpu() {
            for l in &mut rows {
                let to = |t: &Tensor| t.to_device(device).map_err(|e| Error::Model(e.to_string()));
                l.k = to(&l.k)?;
                l.v = to(&l.v)?;
            }
        }
        // Used: the least recently used file goes first.
        let _ = fs::File::options()
            .append(true)
            .open(path)
            .and_then(|f| f.set_modified(std::time::SystemTime::now()));
        Cache::from_rows(model, kind, rows, reserve)
    }

    /// Writes the first `ids.len()` positions of `cache`.
    fn save(&self, ids: &[u32], cache: &Cache) -> Result<()> {
        let n = ids.len();
        let rows = cache
            .rows(n)
            .ok_or_else(|| Error::Model("only a one-sequence cache can be kept on disk".into()))?;
        let first = rows
            .first()
            .ok_or_else(|| Error::Model("an empty cache".into()))?;
        let (_, kv_heads, _, head_dim) =
            first.k.dims4().map_err(|e| Error::Model(e.to_string()))?;
        let header = Header {
            model: self
                .dir
                .file_name()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default(),
            kind: cache.kind().to_string(),
            layers: rows.len(),
            tokens: n,
            kv_heads,
            head_dim,
            blocks: first
                .scales
                .as_ref()
                .map_or(0, |(s, _)| s.dim(3).unwrap_or(0)),
            dtype: first.k.dtype().as_str().to_string(),
        };
        fs::create_dir_all(&self.dir).map_err(|e| Error::io(&self.dir, e))?;
        let name = blake3::hash(bytemuck::cast_slice(ids)).to_hex();
        let path = self.dir.join(format!("{}.kv", &name[..32]));
        let tmp = path.with_extension(format!("kv.{}.tmp", std::process::id()));
        let io = |e| Error::io(&tmp, e);
        {
            let mut w = BufWriter::with_capacity(1 << 20, fs::File::create(&tmp).map_err(io)?);
            let json = serde_json::to_vec(&header).expect("a plain header");
            w.write_all(MAGIC).map_err(io)?;
            w.write_all(&(json.len() as u32).to_le_bytes())
                .map_err(io)?;
            w.write_all(&json).map_err(io)?;
            w.write_all(bytemuck::cast_slice(ids)).map_err(io)?;
            for l in &rows {
                let mut ts = vec![&l.k, &l.v];
                if let Some((a, b)) = &l.scales {
                    ts.push(a);
                    ts.push(b);
                }
                for t in ts {
                    w.write_all(&bytes_of(t)?).map_err(io)?;
                }
            }
            w.into_inner()
                .map_err(|e| io(e.into_error()))?
                .sync_all()
                .map_err(io)?;
        }
        fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))?;
        self.evict();
        Ok(())
    }

    /// Removes the least recently used files until the directory's files
    /// (and its model's siblings') fit the cap.
    fn evict(&self) {
        let Some(root) = self.dir.parent() else {
            return;
        };
        let mut all: Vec<(std::time::SystemTime, u64, PathBuf)> = fs::read_dir(root)
            .into_iter()
            .flatten()
            .flatten()
            .flat_map(|d| fs::read_dir(d.path()).into_iter().flatten().flatten())
            .filter(|e| e.path().extension().is_some_and(|x| x == "kv"))
            .filter_map(|e| {
                let m = e.metadata().ok()?;
                Some((m.modified().ok()?, m.len(), e.path()))
            })
            .collect();
        all.sort();
        let mut total: u64 = all.iter().map(|f| f.1).sum();
        for (_, len, p) in all {
            if total <= self.cap {
                break;
            }
            if fs::remove_file(&p).is_ok() {
                total -= len;
            }
        }
    }
}

fn bad(path: &Path, what: &str) -> Error {
    Error::Model(format!("{}: a KV cache file with {what}", path.display()))
}

fn dtype_of(s: &str) -> Option<DType> {
    [DType::U8, DType::F32, DType::BF16, DType::F16]
        .into_iter()
        .find(|d| d.as_str() == s)
}

fn skip(r: &mut impl std::io::Seek, n: u64) -> std::io::Result<()> {
    if n > 0 {
        r.seek_relative(n as i64)?;
    }
    Ok(())
}

fn read_header(r: &mut impl Read, path: &Path) -> Result<Header> {
    let io = |e| Error::io(path, e);
    let mut magic = [0u8; 8];
    r.read_exact(&mut magic).map_err(io)?;
    if &magic != MAGIC {
        return Err(bad(path, "another format"));
    }
    let mut len = [0u8; 4];
    r.read_exact(&mut len).map_err(io)?;
    let len = u32::from_le_bytes(len) as usize;
    if len > 1 << 16 {
        return Err(bad(path, "a damaged header"));
    }
    let mut json = vec![0u8; len];
    r.read_exact(&mut json).map_err(io)?;
    serde_json::from_slice(&json).map_err(|_| bad(path, "a damaged header"))
}

/// A file's header and tokens.
fn read_head(path: &Path) -> Result<(Header, Vec<u32>)> {
    let mut r = BufReader::new(fs::File::open(path).map_err(|e| Error::io(path, e))?);
    let h = read_header(&mut r, path)?;
    if h.tokens > 1 << 24 {
        return Err(bad(path, "a damaged header"));
    }
    let mut raw = vec![0u8; 4 * h.tokens];
    r.read_exact(&mut raw).map_err(|e| Error::io(path, e))?;
    let tokens = raw
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Ok((h, tokens))
}

/// A contiguous tensor's bytes, little-endian.
fn bytes_of(t: &Tensor) -> Result<Vec<u8>> {
    let e = |e: candle_core::Error| Error::Model(e.to_string());
    let flat = t.flatten_all().map_err(e)?;
    Ok(match t.dtype() {
        DType::U8 => flat.to_vec1::<u8>().map_err(e)?,
        DType::F32 => bytemuck::cast_slice(&flat.to_vec1::<f32>().map_err(e)?).to_vec(),
        DType::BF16 => bytemuck::cast_slice(&flat.to_vec1::<half::bf16>().map_err(e)?).to_vec(),
        DType::F16 => bytemuck::cast_slice(&flat.to_vec1::<half::f16>().map_err(e)?).to_vec(),
        other => return Err(Error::Model(format!("a KV cache of {other:?}"))),
    })
}

/// A key for the weight files at `paths`: their canonical paths, sizes
/// and modification times, hashed (a changed file is another model).
pub fn model_key(paths: &[PathBuf]) -> Option<String> {
    let mut h = blake3::Hasher::new();
    for p in paths {
        let m = fs::metadata(p).ok()?;
        let canon = fs::canonicalize(p).unwrap_or_else(|_| p.clone());
        h.update(canon.to_string_lossy().as_bytes());
        h.update(&m.len().to_le_bytes());
        let t = m
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        h.update(&t.to_le_bytes());
    }
    Some(h.finalize().to_hex()[..24].to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::testing::{tiny_config, write_tiny};
    use crate::models::ModelFiles;

    fn tiny() -> Model {
        let dir = tempfile::tempdir().unwrap();
        write_tiny(dir.path(), &tiny_config("qwen2", None), true).unwrap();
        ModelFiles::from_dir(dir.path())
            .unwrap()
            .load(DType::F32, &Device::Cpu)
            .unwrap()
    }

    /// The last position's logits after reading `ids` into `cache`.
    fn read(m: &Model, ids: &[u32], cache: &mut Cache) -> Vec<f32> {
        let h = m
            .forward(&[ids.to_vec()], &[vec![true; ids.len()]], cache)
            .unwrap();
        m.logits(&Model::last_hidden(&h).unwrap())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    }

    fn prompt(n: usize, salt: u32) -> Vec<u32> {
        (0..n as u32).map(|i| (i * 7 + salt) % 60 + 3).collect()
    }

    #[test]
    fn a_restored_cache_gives_the_logits_of_a_fresh_prefill() {
        let m = tiny();
        let root = tempfile::tempdir().unwrap();
        let store = DiskStore::at(root.path(), "m", DISK_BYTES);
        let a = prompt(300, 3);
        let b = prompt(5, 11);
        let ab: Vec<u32> = a.iter().chain(&b).copied().collect();
        for kind in [KvType::Float(DType::F32), KvType::Q8] {
            // Fresh: a, then b.
            let mut fresh = Cache::new(&m, kind);
            read(&m, &a, &mut fresh);
            let want = read(&m, &b, &mut fresh);
            // All of it in one pass: the same up to rounding.
            let whole = read(&m, &ab, &mut Cache::new(&m, kind));
            let diff = want
                .iter()
                .zip(&whole)
                .map(|(x, y)| (x - y).abs())
                .fold(0f32, f32::max);
            assert!(diff < 2e-2, "{kind}: {diff}");

            // From disk, in a new cache (a new process): exactly.
            let mut c = Cache::new(&m, kind);
            read(&m, &a, &mut c);
            let pc = PromptCache::new(Some(store.clone()));
            assert!(pc.persist(&ab, a.len(), &c).unwrap());
            assert!(!pc.persist(&ab, a.len(), &c).unwrap(), "kept once");
            let mut pc = PromptCache::new(Some(store.clone()));
            let r = pc.take(&ab, &m, kind, 400).expect("found on disk");
            assert!(r.from_disk);
            assert_eq!(r.tokens, a.len());
            let mut restored = r.cache;
            assert_eq!(read(&m, &b, &mut restored), want, "{kind}");

            // In memory, after a longer prompt that went elsewhere: cut
            // back to what is shared, exactly.
            let mut pc = PromptCache::new(None);
            let mut c = Cache::new(&m, kind);
            let other: Vec<u32> = a.iter().chain(&[9, 9, 9]).copied().collect();
            read(&m, &other, &mut c);
            pc.put(other, c);
            let r = pc.take(&ab, &m, kind, 400).expect("found in memory");
            assert!(!r.from_disk);
            assert_eq!(r.tokens, a.len());
            let mut cut = r.cache;
            assert_eq!(read(&m, &b, &mut cut), want, "{kind}");
            // Taken: the next prompt starts afresh.
            assert!(pc.take(&ab, &m, kind, 400).is_none());
        }
    }

    #[test]
    fn a_prompt_never_takes_its_own_last_token_and_other_kinds_are_skipped() {
        let m = tiny();
        let a = prompt(40, 5);
        let mut pc = PromptCache::new(None);
        let mut c = Cache::new(&m, KvType::Q8);
        read(&m, &a, &mut c);
        pc.put(a.clone(), c);
        assert!(pc.take(&a, &m, KvType::Float(DType::F32), 64).is_none());
        // A prompt sharing only a little does not cut it away.
        let mut other = a[..5].to_vec();
        other.extend([1, 2, 3]);
        assert_eq!(pc.peek(&other, KvType::Q8), 0);
        assert!(pc.take(&other, &m, KvType::Q8, 64).is_none());
        assert_eq!(pc.peek(&a, KvType::Q8), a.len() - 1);
        let r = pc.take(&a, &m, KvType::Q8, 64).unwrap();
        assert_eq!(r.tokens, a.len() - 1);
        assert_eq!(r.cache.len(), a.len() - 1);
    }

    #[test]
    fn damaged_files_are_removed_and_the_directory_stays_under_its_cap() {
        let m = tiny();
        let root = tempfile::tempdir().unwrap();
        let kind = KvType::Q8;
        for salt in 0..3 {
            let a = prompt(300, salt);
            let mut c = Cache::new(&m, kind);
            read(&m, &a, &mut c);
            let store = DiskStore::at(root.path(), "m", 2 * 1024 * 1024);
            PromptCache::new(Some(store.clone()))
                .persist(&a, a.len(), &c)
                .unwrap();
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let store = DiskStore::at(root.path(), "m", DISK_BYTES);
        let one = fs::metadata(&store.files()[0]).unwrap().len();
        // A cap of two files' worth keeps the newest two.
        let capped = DiskStore::at(root.path(), "m", 2 * one + one / 2);
        capped.evict();
        assert_eq!(capped.files().len(), 2);
        let newest = prompt(300, 2);
        let mut pc = PromptCache::new(Some(capped.clone()));
        let q: Vec<u32> = newest.iter().chain(&[4, 4]).copied().collect();
        assert_eq!(pc.take(&q, &m, kind, 400).unwrap().tokens, 300);
        // A file cut short is reported and removed, and the prompt is
        // read afresh.
        for f in capped.files() {
            let len = fs::metadata(&f).unwrap().len();
            fs::OpenOptions::new()
                .write(true)
                .open(&f)
                .unwrap()
                .set_len(len / 2)
                .unwrap();
        }
        assert!(pc.take(&q, &m, kind, 400).is_none());
        assert_eq!(capped.files().len(), 1);
    }
}
