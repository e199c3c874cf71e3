//! An HNSW graph (Malkov & Yashunin, 2016) over the rows of a vector store,
//! for approximate nearest-neighbour search in large archives.
//!
//! The graph holds only links: similarities are computed on the store's
//! rows through closures that score a batch of rows at a time (so the
//! store's four-row SIMD kernel does the work), and vectors are never
//! copied. Nodes are the rows
//! `0..len()`, a prefix of the store; rows appended later are searched
//! exactly and merged (see [`crate::index::vectors::VectorStore::search_ann`]),
//! so the graph may lag the store without losing anything. Neighbours are
//! chosen with the paper's heuristic (a candidate is kept only if it is
//! closer to the new node than to any neighbour already kept), which keeps
//! the graph navigable on clustered data.
//!
//! On disk (`hnsw.bin`): a header (magic, parameters, node count, entry
//! point, the key of the last indexed row to detect a store that was
//! rewritten), then per node its level and its neighbour lists. It is
//! written to a temporary file and renamed over the old one.

use std::collections::BinaryHeap;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;

use crate::{Error, Result};

const MAGIC: &[u8; 8] = b"SHNSW001";

/// Highest layer a node may have.
const MAX_LEVEL: usize = 16;

/// Build and search parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Params {
    /// Links per node above layer 0.
    pub m: usize,
    /// Links per node in layer 0.
    pub m0: usize,
    /// Candidate list size while inserting.
    pub ef_construction: usize,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            m: 16,
            m0: 32,
            ef_construction: 100,
        }
    }
}

/// Similarities of a batch of rows to one vector: `f(rows, out)`.
pub type Sims<'a> = &'a dyn Fn(&[u32], &mut [f32]);
/// Similarities of one row to a batch of rows: `f(a, rows, out)`.
pub type PairSims<'a> = &'a dyn Fn(u32, &[u32], &mut [f32]);

fn one(sim: Sims<'_>, x: u32) -> f32 {
    let mut out = [0f32];
    sim(&[x], &mut out);
    out[0]
}

/// A scored node; ordered by similarity.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Scored(f32, u32);

impl Eq for Scored {}
impl PartialOrd for Scored {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Scored {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&o.0).then_with(|| o.1.cmp(&self.1))
    }
}

/// The graph.
#[derive(Debug, Clone)]
pub struct Hnsw {
    params: Params,
    /// `links[node][layer]`.
    links: Vec<Vec<Vec<u32>>>,
    entry: Option<u32>,
    top: usize,
    rng: crate::rng::Rng,
    /// Visit stamps, reused between searches.
    visited: Vec<u32>,
    stamp: u32,
}

impl Hnsw {
    /// An empty graph.
    pub fn new(params: Params) -> Hnsw {
        Hnsw {
            params,
            links: Vec::new(),
            entry: None,
            top: 0,
            rng: crate::rng::Rng::new(0x2545_f491_4f6c_dd1d),
            visited: Vec::new(),
            stamp: 0,
        }
    }

    /// Nodes in the graph (rows `0..len()`).
    pub fn len(&self) -> usize {
        self.links.len()
    }

    /// True if the graph has no nodes.
    pub fn is_empty(&self) -> bool {
        self.links.is_empty()
    }

    /// The parameters.
    pub fn params(&self) -> Params {
        self.params
    }

    fn random_level(&mut self) -> usize {
        let u = self.rng.open_unit();
        let ml = 1.0 / (self.params.m as f64).ln();
        ((-u.ln() * ml) as usize).min(MAX_LEVEL)
    }

    fn next_stamp(&mut self) -> u32 {
        if self.visited.len() < self.links.len() {
            self.visited.resize(self.links.len(), 0);
        }
        self.stamp = self.stamp.wrapping_add(1);
        if self.stamp == 0 {
            self.visited.iter_mut().for_each(|v| *v = 0);
            self.stamp = 1;
        }
        self.stamp
    }

    /// The `ef` best nodes of `layer` reachable from `entry`, best first.
    fn search_layer(
        &mut self,
        sim: Sims<'_>,
        entry: &[Scored],
        ef: usize,
        layer: usize,
    ) -> Vec<Scored> {
        let mut fresh: Vec<u32> = Vec::new();
        let mut scores: Vec<f32> = Vec::new();
        let stamp = self.next_stamp();
        let mut candidates: BinaryHeap<Scored> = BinaryHeap::new();
        let mut results: BinaryHeap<std::cmp::Reverse<Scored>> = BinaryHeap::new();
        for &e in entry {
            self.visited[e.1 as usize] = stamp;
            candidates.push(e);
            results.push(std::cmp::Reverse(e));
        }
        while results.len() > ef {
            results.pop();
        }
        while let Some(c) = candidates.pop() {
            let worst = results.peek().map_or(f32::NEG_INFINITY, |r| r.0 .0);
            if c.0 < worst && results.len() >= ef {
                break;
            }
            let Some(nbrs) = self.links[c.1 as usize].get(layer) else {
                continue;
            };
            fresh.clear();
            for &n in nbrs {
                let v = &mut self.visited[n as usize];
                if *v != stamp {
                    *v = stamp;
                    fresh.push(n);
                }
            }
            scores.resize(fresh.len(), 0.0);
            sim(&fresh, &mut scores);
            for (&n, &s) in fresh.iter().zip(&scores) {
                let worst = results.peek().map_or(f32::NEG_INFINITY, |r| r.0 .0);
                if results.len() < ef || s > worst {
                    candidates.push(Scored(s, n));
                    results.push(std::cmp::Reverse(Scored(s, n)));
                    if results.len() > ef {
                        results.pop();
                    }
                }
            }
        }
        let mut out: Vec<Scored> = results.into_iter().map(|r| r.0).collect();
        out.sort_by(|a, b| b.cmp(a));
        out
    }

    /// Picks up to `m` of `candidates` (best first) by the neighbour
    /// heuristic, filling up with the best of the rest.
    fn select(candidates: &[Scored], m: usize, pair: PairSims<'_>) -> Vec<u32> {
        let mut kept: Vec<Scored> = Vec::with_capacity(m);
        let mut kept_ids: Vec<u32> = Vec::with_capacity(m);
        let mut to_kept = vec![0f32; m];
        let mut pruned = Vec::new();
        for &c in candidates {
            if kept.len() >= m {
                break;
            }
            let s = &mut to_kept[..kept.len()];
            pair(c.1, &kept_ids, s);
            if s.iter().all(|&x| x < c.0) {
                kept.push(c);
                kept_ids.push(c.1);
            } else {
                pruned.push(c);
            }
        }
        for p in pruned {
            if kept.len() >= m {
                break;
            }
            kept.push(p);
        }
        kept.into_iter().map(|s| s.1).collect()
    }

    /// Adds the next row (`len()`). `to_new(x)` is the similarity of row
    /// `x` to the new row; `pair(a, b)` that of two rows.
    pub fn insert(&mut self, to_new: Sims<'_>, pair: PairSims<'_>) {
        let id = self.links.len() as u32;
        let level = self.random_level();
        self.links.push(vec![Vec::new(); level + 1]);
        let Some(mut ep) = self.entry else {
            self.entry = Some(id);
            self.top = level;
            return;
        };
        let mut cur = Scored(one(to_new, ep), ep);
        for layer in (level + 1..=self.top).rev() {
            cur = self.search_layer(to_new, &[cur], 1, layer)[0];
        }
        ep = cur.1;
        let mut entry = vec![Scored(one(to_new, ep), ep)];
        for layer in (0..=level.min(self.top)).rev() {
            let found = self.search_layer(to_new, &entry, self.params.ef_construction, layer);
            let max = if layer == 0 {
                self.params.m0
            } else {
                self.params.m
            };
            let chosen = Self::select(&found, self.params.m, pair);
            for &n in &chosen {
                let list = &mut self.links[n as usize][layer];
                list.push(id);
                if list.len() > max {
                    let ids = list.clone();
                    let mut sims = vec![0f32; ids.len()];
                    pair(n, &ids, &mut sims);
                    let mut scored: Vec<Scored> =
                        ids.iter().zip(&sims).map(|(&x, &s)| Scored(s, x)).collect();
                    scored.sort_by(|a, b| b.cmp(a));
                    let keep = Self::select(&scored, max, pair);
                    self.links[n as usize][layer] = keep;
                }
            }
            self.links[id as usize][layer] = chosen;
            entry = found;
        }
        if level > self.top {
            self.top = level;
            self.entry = Some(id);
        }
    }

    /// The `k` best nodes for a query (`sim(x)` = similarity of row `x`),
    /// exploring `ef` candidates; best first, as (row, similarity).
    pub fn search(&mut self, sim: Sims<'_>, k: usize, ef: usize) -> Vec<(u32, f32)> {
        let Some(ep) = self.entry else {
            return Vec::new();
        };
        let mut cur = Scored(one(sim, ep), ep);
        for layer in (1..=self.top).rev() {
            cur = self.search_layer(sim, &[cur], 1, layer)[0];
        }
        let mut found = self.search_layer(sim, &[cur], ef.max(k), 0);
        found.truncate(k);
        found.into_iter().map(|s| (s.1, s.0)).collect()
    }

    /// Writes the graph; `last_key` identifies the store prefix it indexes.
    pub fn save(&self, path: &Path, last_key: &[u8; 16]) -> Result<()> {
        let tmp = path.with_extension("bin.tmp");
        let io = |e| Error::io(&tmp, e);
        let file = std::fs::File::create(&tmp).map_err(io)?;
        let mut w = BufWriter::new(&file);
        let mut put = |b: &[u8]| w.write_all(b);
        let p = self.params;
        (|| -> std::io::Result<()> {
            put(MAGIC)?;
            for x in [p.m, p.m0, p.ef_construction, self.links.len(), self.top] {
                put(&(x as u64).to_le_bytes())?;
            }
            put(&self.entry.map_or(u32::MAX, |e| e).to_le_bytes())?;
            put(last_key)?;
            for node in &self.links {
                put(&[node.len() as u8])?;
                for list in node {
                    put(&(list.len() as u16).to_le_bytes())?;
                    for &n in list {
                        put(&n.to_le_bytes())?;
                    }
                }
            }
            Ok(())
        })()
        .map_err(io)?;
        w.flush().map_err(io)?;
        drop(w);
        file.sync_all().map_err(io)?;
        std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
    }

    /// Reads a graph and the key it was saved with; `None` if there is no
    /// file or it is not one of ours (the caller rebuilds).
    pub fn load(path: &Path) -> Result<Option<(Hnsw, [u8; 16])>> {
        let file = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(path, e)),
        };
        let file_len = file.metadata().map_err(|e| Error::io(path, e))?.len() as usize;
        let mut r = BufReader::new(file);
        let parsed = (|| -> std::io::Result<Option<(Hnsw, [u8; 16])>> {
            let mut magic = [0u8; 8];
            r.read_exact(&mut magic)?;
            if &magic != MAGIC {
                return Ok(None);
            }
            let mut u64s = [0u64; 5];
            for x in &mut u64s {
                let mut b = [0u8; 8];
                r.read_exact(&mut b)?;
                *x = u64::from_le_bytes(b);
            }
            let [m, m0, efc, n, top] = u64s.map(|x| x as usize);
            // Every node takes at least three bytes: a count larger than
            // the file allows is damage, not a reason to allocate.
            if n > file_len / 3 || top > MAX_LEVEL || m < 2 || m0 < 2 {
                return Ok(None);
            }
            let mut b4 = [0u8; 4];
            r.read_exact(&mut b4)?;
            let entry = Some(u32::from_le_bytes(b4)).filter(|&e| e != u32::MAX);
            let mut key = [0u8; 16];
            r.read_exact(&mut key)?;
            let mut links: Vec<Vec<Vec<u32>>> = Vec::with_capacity(n);
            for _ in 0..n {
                let mut l = [0u8; 1];
                r.read_exact(&mut l)?;
                let levels = l[0] as usize;
                if levels == 0 || levels > MAX_LEVEL + 1 {
                    return Ok(None);
                }
                let mut node = Vec::with_capacity(levels);
                for _ in 0..levels {
                    let mut c = [0u8; 2];
                    r.read_exact(&mut c)?;
                    let count = u16::from_le_bytes(c) as usize;
                    let mut list = Vec::with_capacity(count.min(m0.max(m) + 1));
                    for _ in 0..count {
                        r.read_exact(&mut b4)?;
                        let x = u32::from_le_bytes(b4);
                        if x as usize >= n {
                            return Ok(None);
                        }
                        list.push(x);
                    }
                    node.push(list);
                }
                links.push(node);
            }
            // Links must point at nodes that have the layer they are in,
            // and the entry point must be on the top layer.
            for node in &links {
                for (layer, list) in node.iter().enumerate() {
                    if list.iter().any(|&x| links[x as usize].len() <= layer) {
                        return Ok(None);
                    }
                }
            }
            match entry {
                Some(e) if (e as usize) < n && links[e as usize].len() == top + 1 => {}
                None if n == 0 => {}
                _ => return Ok(None),
            }
            let mut g = Hnsw::new(Params {
                m,
                m0,
                ef_construction: efc,
            });
            g.links = links;
            g.entry = entry;
            g.top = top;
            Ok(Some((g, key)))
        })();
        match parsed {
            Ok(x) => Ok(x),
            // A short or garbled file: not usable, rebuild.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(None),
            Err(e) => Err(Error::io(path, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vecs(n: usize, d: usize) -> Vec<Vec<f32>> {
        let mut rng = crate::rng::Rng::new(0x9E37_79B9_7F4A_7C15);
        (0..n)
            .map(|_| {
                let mut v: Vec<f32> = (0..d).map(|_| rng.uniform() - 0.5).collect();
                let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
                v.iter_mut().for_each(|x| *x /= n);
                v
            })
            .collect()
    }

    fn dot(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    #[test]
    fn recall_against_exact_and_round_trip() {
        let (n, d) = (3000, 24);
        let data = vecs(n + 50, d);
        let (base, queries) = data.split_at(n);
        let mut g = Hnsw::new(Params::default());
        let sims = |q: &[f32], rows: &[u32], out: &mut [f32]| {
            for (o, &r) in out.iter_mut().zip(rows) {
                *o = dot(&base[r as usize], q);
            }
        };
        for new in base {
            g.insert(&|rows, out| sims(new, rows, out), &|a, rows, out| {
                sims(&base[a as usize], rows, out)
            });
        }
        assert_eq!(g.len(), n);
        let mut hit = 0;
        for q in queries {
            let got = g.search(&|rows, out| sims(q, rows, out), 10, 64);
            let mut exact: Vec<(f32, u32)> = base
                .iter()
                .enumerate()
                .map(|(i, v)| (dot(v, q), i as u32))
                .collect();
            exact.sort_by(|a, b| b.0.total_cmp(&a.0));
            let want: Vec<u32> = exact.iter().take(10).map(|x| x.1).collect();
            hit += got.iter().filter(|(r, _)| want.contains(r)).count();
            assert!(got.windows(2).all(|w| w[0].1 >= w[1].1), "sorted");
        }
        let recall = hit as f64 / (10 * queries.len()) as f64;
        assert!(recall > 0.9, "recall@10 {recall}");

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hnsw.bin");
        g.save(&path, &[7; 16]).unwrap();
        let (mut h, key) = Hnsw::load(&path).unwrap().unwrap();
        assert_eq!(key, [7; 16]);
        let q = &queries[0];
        assert_eq!(
            g.search(&|rows, out| sims(q, rows, out), 10, 64),
            h.search(&|rows, out| sims(q, rows, out), 10, 64)
        );
        // A damaged file is ignored, not trusted.
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        assert!(Hnsw::load(&path).unwrap().is_none());
        std::fs::write(&path, b"nonsense").unwrap();
        assert!(Hnsw::load(&path).unwrap().is_none());
        // A header claiming more nodes than the file can hold, or a huge
        // top layer, is refused before anything is allocated or walked.
        for (n, top) in [(u64::MAX / 2, 0u64), (10, 1 << 40)] {
            let mut bad = MAGIC.to_vec();
            for x in [16u64, 32, 100, n, top] {
                bad.extend_from_slice(&x.to_le_bytes());
            }
            bad.extend_from_slice(&[0u8; 20]);
            std::fs::write(&path, &bad).unwrap();
            assert!(Hnsw::load(&path).unwrap().is_none());
        }
        // A link to a node without that layer is refused too.
        let mut bad = MAGIC.to_vec();
        for x in [16u64, 32, 100, 2, 1] {
            bad.extend_from_slice(&x.to_le_bytes());
        }
        bad.extend_from_slice(&0u32.to_le_bytes()); // entry 0
        bad.extend_from_slice(&[0u8; 16]);
        // node 0: 2 levels, layer 0 -> [1], layer 1 -> [1]; node 1: 1 level.
        bad.extend_from_slice(&[2, 1, 0, 1, 0, 0, 0, 1, 0, 1, 0, 0, 0]);
        bad.extend_from_slice(&[1, 0, 0]);
        std::fs::write(&path, &bad).unwrap();
        assert!(Hnsw::load(&path).unwrap().is_none());
    }
}
