//! Causal attention with online softmax over key tiles (see the module
//! docs of `kernels`), and its exp and max helpers.

use super::*;

/// Causal attention. `q` is (batch, heads, t, dim) f32; `k` and `v` are the
/// cache buffers (batch, kv_heads, cap, dim), of which the first `keys`
/// rows are filled; `valid[b][j]` says whether key j of sequence b is a real
/// token. Query i attends to keys `j <= past + i` that are valid, and always
/// to itself. Returns (batch, t, heads × dim).
pub fn attention<K: Elem>(
    q: &[f32],
    k: &[K],
    v: &[K],
    valid: &[Vec<bool>],
    s: AttnShape,
    scale: f32,
) -> Vec<f32> {
    attention_scaled(q, k, v, None, valid, s, scale)
}

/// [`attention`] over a cache whose rows carry a scale per [`kv_block`]
/// (the int8 cache; `block_scales` for keys and values, (batch, kv_heads,
/// cap, dim / block) each): every key and value is its integers times its
/// blocks' scales, applied to each block as the kernels widen it.
pub fn attention_scaled<K: Elem>(
    q: &[f32],
    k: &[K],
    v: &[K],
    block_scales: Option<(&[f32], &[f32])>,
    valid: &[Vec<bool>],
    s: AttnShape,
    scale: f32,
) -> Vec<f32> {
    let AttnShape {
        batch: b,
        heads: h,
        kv_heads: kvh,
        t,
        dim: d,
        past,
        keys,
        cap,
    } = s;
    assert_eq!(q.len(), b * h * t * d, "queries");
    assert!(k.len() >= b * kvh * cap * d && v.len() >= b * kvh * cap * d);
    assert!(keys <= cap && past + t == keys && h % kvh == 0 && valid.len() == b);
    // Block scales per row of an int8 cache.
    let nb = d / kv_block(d);
    assert!(
        block_scales.is_some() || std::any::TypeId::of::<K>() != std::any::TypeId::of::<i8>(),
        "an int8 cache needs its scales"
    );
    if let Some((ks, vs)) = block_scales {
        assert!(
            ks.len() >= b * kvh * cap * nb && vs.len() >= b * kvh * cap * nb,
            "int8 cache scales"
        );
    }
    let rep = h / kvh;
    // Query positions per head in one task.
    let per_head = (QUERY_ROWS / rep).max(1).min(t);
    let blocks = t.div_ceil(per_head);
    // Key masks per sequence: 0 for a real token, -inf for padding.
    // Sequences with no padding have none.
    let masks: Vec<Option<Vec<f32>>> = valid
        .iter()
        .map(|row| {
            row.iter().take(keys).any(|&ok| !ok).then(|| {
                row.iter()
                    .take(keys)
                    .map(|&ok| if ok { 0.0 } else { f32::NEG_INFINITY })
                    .collect()
            })
        })
        .collect();
    // Decode's two-row scores at this CPU's widest width, for heads that
    // are a multiple of 32 (queries `prepare`d for that width).
    let two_rows = K::kernels().scores2.filter(|_| d.is_multiple_of(32));
    // Every output row is written once, by its task (or, split, by the
    // merge): no zeroing first.
    let mut out = Vec::<f32>::with_capacity(b * t * h * d);
    let dst = SendPtr(out.as_mut_ptr());
    // Output row (sequence, time, head) = `acc` × `inv`.
    let store = |bi: usize, ti: usize, hh: usize, acc: &[f32], inv: f32| {
        // SAFETY: each (bi, ti, hh) is stored once, by one task or by the
        // merge; the row lies inside `out`'s capacity (batch × t × heads
        // × dim), and `acc` has `d` values.
        let o = unsafe { dst.get().add(((bi * t + ti) * h + hh) * d) };
        for (c, a) in acc[..d].iter().enumerate() {
            // SAFETY: as above, c < d.
            unsafe { o.add(c).write(a * inv) };
        }
    };
    // Decode has a task per key head: too few to keep the cores busy to
    // the end (8 on two cores keep one waiting for up to a task; on 16
    // cores, half of them idle). So few query rows split their keys into
    // ranges of whole tiles, whose partial softmax sums (running maximum,
    // sum of exponentials, weighted values) are merged afterwards.
    let groups = b * kvh * blocks;
    let span = if blocks == 1 && t * rep <= SMALL_ROWS {
        let want = (8 * rayon::current_num_threads()).div_ceil(groups.max(1));
        keys.div_ceil(want.max(1))
            .max(MIN_SPLIT_KEYS)
            .next_multiple_of(KEY_TILE_SMALL)
    } else {
        keys.max(1)
    };
    // The last range takes the rest (up to two spans), so none is short.
    let splits = (keys / span).max(1);
    // Per task of a split group: its rows' maxima, sums, then weighted values.
    let part_len = per_head * rep * (d + 2);
    let mut parts = match splits {
        1 => Vec::new(),
        _ => vec![0f32; groups * splits * part_len],
    };
    let parts_dst = SendPtr(parts.as_mut_ptr());
    let tasks = groups * splits;
    // One task per split of the range: rayon would otherwise cut it into a
    // piece or two per thread, and a core that finished early could not
    // take the other's remaining key groups.
    (0..tasks).into_par_iter().with_max_len(1).for_each(|task| {
        let (group, part) = (task / splits, task % splits);
        let bi = group / (kvh * blocks);
        let g = group / blocks % kvh;
        let t0 = group % blocks * per_head;
        let t1 = (t0 + per_head).min(t);
        let rows = (t1 - t0) * rep;
        // Gather this group's query rows, scaled: row r = head g*rep + r / n, time t0 + r % n.
        let n = t1 - t0;
        let mut qb = vec![0f32; rows * d];
        for r in 0..rows {
            let (hh, ti) = (g * rep + r / n, t0 + r % n);
            let src = &q[((bi * h + hh) * t + ti) * d..][..d];
            for (o, x) in qb[r * d..(r + 1) * d].iter_mut().zip(src) {
                *o = x * scale;
            }
        }
        let base = (bi * kvh + g) * cap * d;
        let kend = past + t1;
        let mut m = vec![f32::NEG_INFINITY; rows];
        let mut l = vec![0f32; rows];
        let mut acc = vec![0f32; rows * d];
        let mut sc = vec![0f32; rows * KEY_TILE];
        let mut kbuf = Vec::new();
        let mut vbuf = Vec::new();
        // A lone int8 query row's discarded twin scores.
        let mut twin: Vec<f32> = Vec::new();
        let mask = masks[bi].as_deref();
        let small = rows <= SMALL_ROWS;
        let qprep: Vec<Vec<f32>> = if small {
            (0..rows)
                .map(|r| K::prepare(&qb[r * d..(r + 1) * d]))
                .collect()
        } else {
            Vec::new()
        };
        // Many rows over a bf16 cache, with AVX512-BF16: scores and
        // weighted sums by the projections' `vdpbf16ps` tiles (queries and
        // probabilities rounded to bf16, as PyTorch's bf16 attention does).
        #[cfg(target_arch = "x86_64")]
        let bf16_dp = d % 32 == 0 && K::as_bf16(k).is_some() && has_avx512bf16();
        #[cfg(not(target_arch = "x86_64"))]
        let bf16_dp = false;
        let bf16_tiles = !small && bf16_dp;
        let mut qx: Vec<u32> = Vec::new();
        #[cfg(target_arch = "x86_64")]
        if bf16_dp {
            qx = vec![0u32; rows * d / 2];
            for (r, row) in qx.chunks_exact_mut(d / 2).enumerate() {
                // SAFETY: AVX512-BF16 was checked above.
                unsafe { x86::bf16::to_pairs(&qb[r * d..(r + 1) * d], row) };
            }
        }
        // The tiles' own order of the queries, once for every key tile.
        #[cfg(target_arch = "x86_64")]
        let qt = if bf16_tiles {
            x86::bf16::queries_in_tiles(&qx, rows, d / 2)
        } else {
            Vec::new()
        };
        // Few rows over an int8 cache, with AVX512-VNNI: integer scores,
        // the queries rounded to int8 per block as the keys are.
        #[cfg(target_arch = "x86_64")]
        let qi8: Vec<x86::vnni::QueryI8> =
            if small && K::as_i8(k).is_some() && x86::vnni::vnni_scores_run(d) {
                (0..rows)
                    .map(|r| x86::vnni::QueryI8::new(&qb[r * d..(r + 1) * d]))
                    .collect()
            } else {
                Vec::new()
            };
        #[cfg(target_arch = "x86_64")]
        let mut scratch = x86::bf16::Scratch::default();
        let tile_len = if small { KEY_TILE_SMALL } else { KEY_TILE };
        // This task's keys: whole tiles from a tile's start, the last
        // range to the end (all keys when unsplit).
        let mut j0 = (part * span).min(kend);
        let jend = match part + 1 == splits {
            true => kend,
            false => ((part + 1) * span).min(kend),
        };
        while j0 < jend {
            let jl = tile_len.min(jend - j0);
            let st = &mut sc[..rows * jl];
            let ks = &k[base + j0 * d..base + (j0 + jl) * d];
            let vs = &v[base + j0 * d..base + (j0 + jl) * d];
            // An int8 cache: the tile's block scales (empty otherwise).
            let (ksc, vsc) = block_scales.map_or((&[][..], &[][..]), |(ksc, vsc)| {
                let at = (base / d + j0) * nb..(base / d + j0 + jl) * nb;
                (&ksc[at.clone()], &vsc[at])
            });
            if small {
                // Few rows (decode): stream the keys once, four at a time,
                // two query rows per pass where the CPU allows.
                let mut pairs = 0;
                #[cfg(target_arch = "x86_64")]
                if !qi8.is_empty() {
                    // Both rows of each pair; a lone last row twice, its
                    // twin's scores discarded.
                    pairs = rows.div_ceil(2);
                    let keys = K::as_i8(ks).unwrap_or(&[]);
                    twin.resize(jl, 0.0);
                    for (pr, q2) in st.chunks_mut(2 * jl).zip(qi8.chunks(2)) {
                        let (a, b) = pr.split_at_mut(jl.min(pr.len()));
                        let (qa, qb2) = (&q2[0], q2.get(1).unwrap_or(&q2[0]));
                        let b = if b.is_empty() { &mut twin[..jl] } else { b };
                        let done = x86::vnni::scores2_vnni([qa, qb2], keys, ksc, d, [a, b]);
                        debug_assert!(done, "checked with the queries");
                    }
                } else if bf16_dp && x86::bf16::scores2_fits(d) {
                    // Over a bf16 cache, queries rounded to bf16 as the
                    // tiles round them: one `vdpbf16ps` per 32 elements.
                    pairs = rows / 2;
                    let keys = K::as_bf16(ks).unwrap_or(&[]);
                    for (pr, q2) in st.chunks_exact_mut(2 * jl).zip(qx.chunks_exact(d)) {
                        let (a, b) = pr.split_at_mut(jl);
                        let (qa, qb) = q2.split_at(d / 2);
                        // SAFETY: AVX512-BF16 was checked for `bf16_dp`.
                        unsafe { x86::bf16::scores2([qa, qb], keys, d, [a, b]) };
                    }
                } else if let Some(two) = two_rows {
                    pairs = rows / 2;
                    for (pr, q2) in st.chunks_exact_mut(2 * jl).zip(qprep.chunks_exact(2)) {
                        let (a, b) = pr.split_at_mut(jl);
                        // SAFETY: the table holds kernels this CPU runs; they
                        // check the lengths.
                        unsafe { two([&q2[0], &q2[1]], ks, ksc, d, [a, b]) };
                    }
                }
                for (r, qr) in qprep.iter().enumerate().skip(2 * pairs) {
                    let srow = &mut st[r * jl..(r + 1) * jl];
                    if !ksc.is_empty() {
                        // int8: the two-row kernel on this row twice, where
                        // it runs; else the portable loop.
                        if let Some(two) = two_rows {
                            twin.resize(jl, 0.0);
                            // SAFETY: as above.
                            unsafe { two([qr, qr], ks, ksc, d, [srow, &mut twin[..jl]]) };
                            continue;
                        }
                        portable::scores_scaled(qr, ks, ksc, srow);
                        continue;
                    }
                    let mut j = 0;
                    while j < jl {
                        let key = |o: usize| &ks[(j + o).min(jl - 1) * d..][..d];
                        let dots = K::dot4(qr, [key(0), key(1), key(2), key(3)]);
                        let take = (jl - j).min(4);
                        srow[j..j + take].copy_from_slice(&dots[..take]);
                        j += 4;
                    }
                }
            } else if bf16_tiles {
                #[cfg(target_arch = "x86_64")]
                x86::bf16::scores(
                    &qx,
                    &qt,
                    rows,
                    d,
                    K::as_bf16(ks).unwrap_or(&[]),
                    jl,
                    st,
                    &mut scratch,
                );
            } else {
                let kt = tile(ks, ksc, &mut kbuf);
                // SAFETY: qb is rows × d, kt is jl × d (read transposed), st is rows × jl.
                unsafe {
                    matmul(
                        rows,
                        jl,
                        d,
                        st.as_mut_ptr(),
                        jl,
                        false,
                        &qb,
                        d,
                        kt,
                        1,
                        d,
                        gemm::Parallelism::None,
                    );
                }
            }
            for r in 0..rows {
                let me = past + t0 + r % n;
                let srow = &mut st[r * jl..(r + 1) * jl];
                // Keys after this query are not seen; padding keys are masked
                // except the query's own position.
                let seen = (me + 1).saturating_sub(j0).min(jl);
                let own = me.checked_sub(j0).filter(|&o| o < jl).map(|o| srow[o]);
                if let Some(mask) = mask {
                    for (sv, mv) in srow[..seen].iter_mut().zip(&mask[j0..j0 + seen]) {
                        *sv += mv;
                    }
                }
                if let Some(o) = own {
                    srow[me - j0] = o;
                }
                let mx = max_of(&srow[..seen]);
                let mnew = m[r].max(mx);
                if mnew == f32::NEG_INFINITY {
                    srow.iter_mut().for_each(|x| *x = 0.0);
                    continue;
                }
                let sum = exp_shifted(&mut srow[..seen], mnew);
                srow[seen..].iter_mut().for_each(|x| *x = 0.0);
                let factor = if m[r] == f32::NEG_INFINITY {
                    0.0
                } else {
                    (m[r] - mnew).exp()
                };
                if factor != 1.0 {
                    acc[r * d..(r + 1) * d]
                        .iter_mut()
                        .for_each(|a| *a *= factor);
                }
                l[r] = l[r] * factor + sum;
                m[r] = mnew;
            }
            if small {
                // The values with the next tile's after them, which the
                // AVX2 kernel prefetches while it works on this one.
                let ahead = &v[base + j0 * d..base + (j0 + 2 * jl).min(kend) * d];
                K::pv_rows(&mut acc, d, st, jl, jl, ahead, vsc);
            } else if bf16_tiles {
                #[cfg(target_arch = "x86_64")]
                x86::bf16::weighted(
                    st,
                    rows,
                    jl,
                    K::as_bf16(vs).unwrap_or(&[]),
                    d,
                    &mut acc,
                    &mut scratch,
                );
            } else {
                let vt = tile(vs, vsc, &mut vbuf);
                // SAFETY: st is rows × jl, vt is jl × d, acc is rows × d.
                unsafe {
                    matmul(
                        rows,
                        d,
                        jl,
                        acc.as_mut_ptr(),
                        d,
                        true,
                        st,
                        jl,
                        vt,
                        d,
                        1,
                        gemm::Parallelism::None,
                    );
                }
            }
            j0 += jl;
        }
        if splits > 1 {
            // SAFETY: `part_len` floats from this task's offset are its
            // own, inside `parts` (tasks × part_len); rows × (d + 2) fit.
            let o = unsafe {
                std::slice::from_raw_parts_mut(parts_dst.get().add(task * part_len), part_len)
            };
            o[..rows].copy_from_slice(&m);
            o[rows..2 * rows].copy_from_slice(&l);
            o[2 * rows..2 * rows + rows * d].copy_from_slice(&acc);
            return;
        }
        for r in 0..rows {
            let (hh, ti) = (g * rep + r / n, t0 + r % n);
            store(bi, ti, hh, &acc[r * d..(r + 1) * d], 1.0 / l[r]);
        }
    });
    if splits > 1 {
        // One block of positions per group here (`span` splits only then),
        // so a group's rows are its heads × t.
        let rows = rep * t;
        let mut row = vec![0f32; d];
        for group in 0..groups {
            let (bi, g) = (group / kvh, group % kvh);
            let part = |s: usize| &parts[(group * splits + s) * part_len..][..part_len];
            for r in 0..rows {
                let (hh, ti) = (g * rep + r / t, r % t);
                let top = (0..splits)
                    .map(|s| part(s)[r])
                    .fold(f32::NEG_INFINITY, f32::max);
                row.fill(0.0);
                let mut sum = 0f32;
                for s in 0..splits {
                    let p = part(s);
                    // A range with no key seen (all padding, or past the
                    // causal end) adds nothing.
                    if p[r] == f32::NEG_INFINITY {
                        continue;
                    }
                    let w = (p[r] - top).exp();
                    sum += w * p[rows + r];
                    for (o, a) in row.iter_mut().zip(&p[2 * rows + r * d..][..d]) {
                        *o += w * a;
                    }
                }
                store(bi, ti, hh, &row, 1.0 / sum);
            }
        }
    }
    // SAFETY: the tasks (or, split, the merge) cover every (sequence, key
    // head, block of positions), so every row of every head was written.
    unsafe { out.set_len(b * t * h * d) };
    out
}

/// A key or value tile as f32: the cache itself when it is f32, else
/// widened (and, for an int8 cache, each block times its `scales`).
pub(super) fn tile<'a, K: Elem>(src: &'a [K], scales: &[f32], buf: &'a mut Vec<f32>) -> &'a [f32] {
    if !scales.is_empty() {
        buf.resize(src.len(), 0.0);
        K::widen(src, buf);
        let block = src.len() / scales.len();
        for (b, s) in buf.chunks_exact_mut(block).zip(scales) {
            b.iter_mut().for_each(|x| *x *= s);
        }
        return buf;
    }
    match K::as_f32(src) {
        Some(s) => s,
        None => {
            buf.resize(src.len(), 0.0);
            K::widen(src, buf);
            buf
        }
    }
}

/// The largest of `xs` (−inf when empty), kept in 16 lanes so the loop
/// vectorises: a plain `fold(f32::max)` is one dependent scalar `max` per
/// score, which for decode was as slow as reading the keys.
pub(super) fn max_of(xs: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if has_avx512() {
        // SAFETY: the CPU supports AVX-512F (checked above).
        return unsafe { max_of_avx512(xs) };
    }
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: the CPU supports AVX2 (checked above).
        return unsafe { max_of_avx2(xs) };
    }
    max_of_body(xs)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn max_of_avx2(xs: &[f32]) -> f32 {
    max_of_body(xs)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn max_of_avx512(xs: &[f32]) -> f32 {
    max_of_body(xs)
}

#[inline(always)]
pub(crate) fn max_of_body(xs: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; 16];
    let chunks = xs.chunks_exact(16);
    let tail = chunks.remainder();
    for c in chunks {
        for l in 0..16 {
            lanes[l] = if c[l] > lanes[l] { c[l] } else { lanes[l] };
        }
    }
    tail.iter()
        .chain(&lanes)
        .copied()
        .fold(f32::NEG_INFINITY, f32::max)
}

/// Replaces each x with exp(x − shift) and returns their sum. A polynomial
/// exp written without branches so the loop vectorises (relative error
/// below 1e-6 over the range softmax sees).
pub(super) fn exp_shifted(xs: &mut [f32], shift: f32) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if has_avx512() {
        // SAFETY: the CPU supports AVX-512F (checked above).
        return unsafe { exp_shifted_avx512(xs, shift) };
    }
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: the CPU supports AVX2 and FMA (checked above).
        return unsafe { exp_shifted_avx2(xs, shift) };
    }
    exp_shifted_body::<8>(xs, shift)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn exp_shifted_avx2(xs: &mut [f32], shift: f32) -> f32 {
    exp_shifted_body::<8>(xs, shift)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn exp_shifted_avx512(xs: &mut [f32], shift: f32) -> f32 {
    exp_shifted_body::<16>(xs, shift)
}

/// `L` lanes: the vector width the loop is written for (8 for AVX2, 16
/// for AVX-512).
#[inline(always)]
pub(super) fn exp_shifted_body<const L: usize>(xs: &mut [f32], shift: f32) -> f32 {
    let mut lanes = [0f32; L];
    let mut chunks = xs.chunks_exact_mut(L);
    for c in &mut chunks {
        for l in 0..L {
            c[l] = fast_exp(c[l] - shift);
            lanes[l] += c[l];
        }
    }
    let mut sum: f32 = lanes.iter().sum();
    for x in chunks.into_remainder() {
        *x = fast_exp(*x - shift);
        sum += *x;
    }
    sum
}
