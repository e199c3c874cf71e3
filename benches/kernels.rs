//! Developer benchmarks of the model kernels, kept out of the shipped
//! `shirabe` binary: model speed with random weights in a real model's
//! shapes (`model`), decode attention alone (`attention`) and one
//! projection alone (`linear`), each against the read-bandwidth yardstick.
//!
//! ```sh
//! cargo bench --features bench-internals --bench kernels -- model --preset qwen3-0.6b
//! cargo bench --features bench-internals --bench kernels -- attention --ctx 2048,8192
//! cargo bench --features bench-internals --bench kernels -- linear --cold
//! ```
//!
//! The `bench-internals` feature makes `shirabe::models::kernels` public
//! for this binary; without it the kernels are private to the library.

use std::io::Write;
use std::time::Instant;

use anyhow::Result;
use clap::{Parser, Subcommand};
use serde_json::json;

use shirabe::models::config::Config;
use shirabe::models::qwen3::KvType;
use shirabe::rng::Rng;

/// Developer benchmarks of shirabe's model kernels.
#[derive(Debug, Parser)]
#[command(name = "kernels")]
struct Cli {
    #[command(subcommand)]
    what: What,
}

#[derive(Debug, Subcommand)]
enum What {
    /// Model speed with random weights in a real model's shapes.
    Model {
        /// qwen3-embedding-0.6b, qwen3-0.6b or qwen3-4b (or tiny: a toy
        /// model of the same layout, to check the benchmark itself).
        #[arg(long, default_value = "qwen3-0.6b")]
        preset: String,
        /// Weight types to measure, comma-separated (f32, bf16, f16, q8_0, q4_k).
        #[arg(long, default_value = "f32,bf16,q8_0")]
        dtypes: String,
        /// A real GGUF file instead of random weights (`--preset` and
        /// `--dtypes` are then ignored): its own weights, shapes and KV
        /// cache type.
        #[arg(long, value_name = "FILE")]
        gguf: Option<std::path::PathBuf>,
        /// Prompt lengths for prefill, comma-separated ('' for none).
        #[arg(long, default_value = "512,2048,8192")]
        prefill: String,
        /// Embedding batch sizes (512-token passages), comma-separated
        /// ('' for none).
        #[arg(long, default_value = "1,8,32")]
        embed_batch: String,
        /// Tokens to decode after the prompt (`--decode-after`; 0 for none).
        #[arg(long, default_value_t = 16)]
        decode: usize,
        /// The prompt's length before decode (decode's speed falls as the
        /// KV cache it reads grows).
        #[arg(long, default_value_t = 2048, value_name = "TOKENS")]
        decode_after: usize,
        /// KV cache type for prefill and decode: auto (the weights' own:
        /// bf16/f16 for such weights, q8 for quantized on an AVX-512 or
        /// AVX2 CPU, f32 for f32), f32, bf16, f16 or q8.
        #[arg(long, default_value = "auto", value_name = "TYPE")]
        cache_dtype: String,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Decode attention alone: one new query per step over every layer's
    /// KV cache (random keys and values in a model's shapes), and the rate
    /// it reads the cache at against the read-bandwidth yardstick.
    Attention {
        /// qwen3-0.6b or qwen3-4b (heads, key heads, layers).
        #[arg(long, default_value = "qwen3-0.6b")]
        preset: String,
        /// Cached tokens, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "2048,8192")]
        ctx: Vec<usize>,
        /// Cache types, comma-separated.
        #[arg(long, value_enum, value_delimiter = ',', default_value = "bf16,q8")]
        cache_dtypes: Vec<KvType>,
        /// Decode steps to time (each over all layers); the median counts.
        #[arg(long, default_value_t = 20)]
        steps: usize,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// One projection alone (`x · wᵀ`, random weights packed as the model
    /// packs them): milliseconds per call, multiply-add rate and weight
    /// read rate, for the shapes of prefill/embedding blocks and decode.
    Linear {
        /// Shapes as ROWSxINPUTSxOUTPUTS, comma-separated.
        #[arg(
            long,
            default_value = "512x1024x6144,512x3072x1024,1x1024x6144,1x3072x1024"
        )]
        shapes: String,
        /// Weight types, comma-separated (f32, bf16, f16, q8_0).
        #[arg(long, default_value = "bf16,f32")]
        dtypes: String,
        /// Calls to time; the median counts.
        #[arg(long, default_value_t = 20)]
        reps: usize,
        /// Rotate through copies of the weights (1 GB in all) so every call
        /// reads them from memory, as a decode step does, instead of the
        /// same matrix from cache.
        #[arg(long)]
        cold: bool,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> Result<()> {
    // `cargo bench` passes `--bench`; the benchmarks take no such flag.
    let args = std::env::args_os().filter(|a| a != "--bench");
    match Cli::parse_from(args).what {
        What::Model {
            preset,
            dtypes,
            gguf,
            prefill,
            embed_batch,
            decode,
            decode_after,
            cache_dtype,
            json,
        } => model(
            &preset,
            &dtypes,
            gguf.as_deref(),
            &prefill,
            &embed_batch,
            (decode, decode_after),
            &cache_dtype,
            json,
        ),
        What::Attention {
            preset,
            ctx,
            cache_dtypes,
            steps,
            json,
        } => attention_bench(&preset, &ctx, &cache_dtypes, steps, json),
        What::Linear {
            shapes,
            dtypes,
            reps,
            cold,
            json,
        } => linear_bench(&shapes, &dtypes, reps, cold, json),
    }
}

/// A comma-separated list of sizes; an empty one (`--prefill ''`) runs
/// none.
fn list(spec: &str, flag: &str) -> Result<Vec<usize>> {
    if spec.trim().is_empty() {
        return Ok(Vec::new());
    }
    spec.split(',')
        .map(|x| {
            x.trim()
                .parse::<usize>()
                .map_err(|_| anyhow::anyhow!("{flag}: bad number {x:?}"))
        })
        .collect()
}

/// The process's peak resident memory, in MB (Linux).
fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// The memory-bandwidth yardstick: every core streams its share of a
/// 256 MB buffer (far past any cache, 2 MB pages where the kernel allows,
/// as the packed weights), read as the decode kernels read weights (wide
/// loads, software prefetch). The buffer is kept, so the figure can be
/// taken again between decode steps without allocating.
struct Yardstick(shirabe::models::kernels::Buf<f32>);

impl Yardstick {
    fn new() -> Yardstick {
        let mut src = shirabe::models::kernels::Buf::<f32>::zeroed(64 << 20);
        src.fill(1.0);
        Yardstick(src)
    }

    /// Read bandwidth in GB/s: the best pass of two with each prefetch
    /// hint (the best hint differs between CPUs).
    fn gbs(&self) -> f64 {
        self.best().0
    }

    /// The best of [`Yardstick::gbs`]'s passes and the hint that made it.
    fn best(&self) -> (f64, shirabe::models::kernels::StreamHint) {
        use shirabe::models::kernels::StreamHint;
        let mut best = (0.0, StreamHint::None);
        for hint in StreamHint::ALL {
            for _ in 0..2 {
                let gbs = self.once(hint);
                if gbs > best.0 {
                    best = (gbs, hint);
                }
            }
        }
        best
    }

    /// One pass over the buffer with `hint`, in GB/s.
    fn once(&self, hint: shirabe::models::kernels::StreamHint) -> f64 {
        use rayon::prelude::*;
        let t = Instant::now();
        let s: f32 = self
            .0
            .par_chunks(1 << 20)
            .map(|c| shirabe::models::kernels::stream_sum(c, hint))
            .sum();
        std::hint::black_box(s);
        (self.0.len() * 4) as f64 / t.elapsed().as_secs_f64() / 1e9
    }
}

/// One layer's KV cache for the attention bench: keys and values of
/// `kv_heads × cap × dim` elements, with block scales for int8.
struct BenchCache<K> {
    k: Vec<K>,
    v: Vec<K>,
    scales: Option<(Vec<f32>, Vec<f32>)>,
}

fn bench_cache<K: Copy>(
    rng: &mut Rng,
    n: usize,
    dim: usize,
    from: impl Fn(f32) -> K,
    int8: bool,
) -> BenchCache<K> {
    let values = |rng: &mut Rng| -> Vec<f32> {
        (0..n)
            .map(|_| (rng.below(2001) as f32 - 1000.0) / 1000.0)
            .collect()
    };
    let (k, v) = (values(rng), values(rng));
    if !int8 {
        return BenchCache {
            k: k.into_iter().map(&from).collect(),
            v: v.into_iter().map(&from).collect(),
            scales: None,
        };
    }
    let block = shirabe::models::kernels::kv_block(dim);
    let round = |x: &[f32]| {
        let (mut q, mut s) = (vec![0i8; n], vec![0f32; n / block]);
        shirabe::models::kernels::quantize_rows(x, block, &mut q, &mut s);
        (q, s)
    };
    let ((kq, ks), (vq, vs)) = (round(&k), round(&v));
    // K is i8 here: the values pass through as their own f32 images.
    BenchCache {
        k: kq.into_iter().map(|x| from(x as f32)).collect(),
        v: vq.into_iter().map(|x| from(x as f32)).collect(),
        scales: Some((ks, vs)),
    }
}

/// Median seconds of one decode step's attention over `caches` (a layer
/// each), run as decode runs it (on a pool worker, the others polling).
fn time_attention<K: shirabe::models::kernels::Elem>(
    caches: &[BenchCache<K>],
    q: &[f32],
    shape: shirabe::models::kernels::AttnShape,
    steps: usize,
) -> f64 {
    use shirabe::models::kernels;
    let valid = vec![vec![true; shape.keys]];
    let scale = 1.0 / (shape.dim as f32).sqrt();
    let step = || {
        kernels::on_pool(true, || {
            for c in caches {
                let scales = c.scales.as_ref().map(|(k, v)| (&k[..], &v[..]));
                let out = kernels::attention_scaled(q, &c.k, &c.v, scales, &valid, shape, scale);
                std::hint::black_box(out);
            }
        })
    };
    step();
    let mut times = Vec::with_capacity(steps);
    for _ in 0..steps.max(1) {
        let t = Instant::now();
        step();
        times.push(t.elapsed().as_secs_f64());
    }
    median(times)
}

fn attention_bench(
    preset: &str,
    ctx: &[usize],
    cache_dtypes: &[shirabe::models::qwen3::KvType],
    steps: usize,
    json: bool,
) -> Result<()> {
    use half::{bf16, f16};
    use shirabe::models::kernels::AttnShape;
    let cfg = Config::qwen3_preset(preset)?;
    let (heads, kv_heads, dim, layers) = (
        cfg.num_attention_heads,
        cfg.num_key_value_heads,
        cfg.head_dim(),
        cfg.num_hidden_layers,
    );
    let yardstick = Yardstick::new();
    let mut out = std::io::stdout().lock();
    let mut rows = Vec::new();
    let mut rng = Rng::new(0xa77e);
    for &n in ctx {
        anyhow::ensure!(n > 0, "--ctx: a cache needs at least one token");
        let keys = n + 1;
        let shape = AttnShape {
            batch: 1,
            heads,
            kv_heads,
            t: 1,
            dim,
            past: n,
            keys,
            cap: keys,
        };
        let q: Vec<f32> = (0..heads * dim)
            .map(|_| (rng.below(2001) as f32 - 1000.0) / 1000.0)
            .collect();
        let len = kv_heads * keys * dim;
        for &kv in cache_dtypes {
            use candle_core::DType;
            use shirabe::models::qwen3::KvType;
            let name = kv.to_string();
            let (secs, elem_bytes) = match kv {
                KvType::Float(DType::F32) => {
                    let c: Vec<_> = (0..layers)
                        .map(|_| bench_cache(&mut rng, len, dim, |x| x, false))
                        .collect();
                    (time_attention(&c, &q, shape, steps), 4.0)
                }
                KvType::Float(DType::BF16) => {
                    let c: Vec<_> = (0..layers)
                        .map(|_| bench_cache(&mut rng, len, dim, bf16::from_f32, false))
                        .collect();
                    (time_attention(&c, &q, shape, steps), 2.0)
                }
                KvType::Float(DType::F16) => {
                    let c: Vec<_> = (0..layers)
                        .map(|_| bench_cache(&mut rng, len, dim, f16::from_f32, false))
                        .collect();
                    (time_attention(&c, &q, shape, steps), 2.0)
                }
                KvType::Q8 => {
                    let c: Vec<_> = (0..layers)
                        .map(|_| bench_cache(&mut rng, len, dim, |x| x as i8, true))
                        .collect();
                    let block = shirabe::models::kernels::kv_block(dim) as f64;
                    (time_attention(&c, &q, shape, steps), 1.0 + 4.0 / block)
                }
                other => anyhow::bail!("--cache-dtypes: {other} is not benchmarked"),
            };
            let bw = yardstick.gbs();
            let bytes = (layers * 2 * len) as f64 * elem_bytes;
            let gbs = bytes / secs / 1e9;
            rows.push(json!({
                "ctx": n, "cache": name, "step_ms": secs * 1e3,
                "read_gbs": gbs, "yardstick_gbs": bw, "fraction": gbs / bw,
            }));
            if !json {
                writeln!(
                    out,
                    "  {name:4} cache, {n:>6} tokens: {:.2} ms per step ({layers} layers), \
                     {gbs:.1} GB/s read, {:.0}% of the yardstick ({bw:.1} GB/s)",
                    secs * 1e3,
                    100.0 * gbs / bw
                )?;
            }
        }
    }
    if json {
        serde_json::to_writer(&mut out, &json!({"preset": preset, "runs": rows}))?;
        writeln!(out)?;
    }
    Ok(())
}

/// `bench linear`: one packed projection at a time, on the pool as the
/// model runs it (pollers for decode-sized calls).
fn linear_bench(shapes: &str, dtypes: &str, reps: usize, cold: bool, json: bool) -> Result<()> {
    use shirabe::models::kernels::{on_pool, Packed, GEMV_MAX_ROWS};
    let mut out = std::io::stdout().lock();
    let mut rows = Vec::new();
    let mut rng = Rng::new(0x11ea);
    // Cold reads are set against the machine's bandwidth, taken again
    // around each timing (a shared host's swings by 2x between minutes).
    let yardstick = cold.then(Yardstick::new);
    #[cfg(target_arch = "x86_64")]
    let ceiling = shirabe::models::kernels::amx_ceiling().map(|c| {
        json!({"block_gflops_one_core": c.block_gflops, "multiply_ns": c.multiply_ns, "tile_load_ns": c.load_ns})
    });
    #[cfg(not(target_arch = "x86_64"))]
    let ceiling: Option<serde_json::Value> = None;
    if let (Some(c), false) = (&ceiling, json) {
        writeln!(
            out,
            "  AMX on one core, all in L1: {:.0} GFLOP/s per 32x32 block; a tile multiply {:.1} ns, a 1 KB tile load {:.1} ns",
            c["block_gflops_one_core"].as_f64().unwrap_or(0.0),
            c["multiply_ns"].as_f64().unwrap_or(0.0),
            c["tile_load_ns"].as_f64().unwrap_or(0.0)
        )?;
    }
    for shape in shapes.split(',').map(str::trim) {
        let dims: Vec<usize> = shape
            .split('x')
            .map(|d| d.parse::<usize>().ok().filter(|&d| d > 0))
            .collect::<Option<_>>()
            .filter(|d: &Vec<usize>| d.len() == 3)
            .ok_or_else(|| anyhow::anyhow!("--shapes: {shape:?} is not ROWSxINPUTSxOUTPUTS"))?;
        let (m, k, n) = (dims[0], dims[1], dims[2]);
        let mut uniform = |len: usize| -> Vec<f32> {
            (0..len)
                .map(|_| (rng.below(2001) as f32 - 1000.0) / 16000.0)
                .collect()
        };
        let x = uniform(m * k);
        let w = uniform(n * k);
        for name in dtypes.split(',').map(str::trim) {
            let elem_bytes = match name {
                "f32" => 4.0,
                "bf16" | "f16" => 2.0,
                // 34 bytes per 32 weights.
                "q8_0" => 34.0 / 32.0,
                other => anyhow::bail!("--dtypes: {other:?} is not f32, bf16, f16 or q8_0"),
            };
            anyhow::ensure!(
                name != "q8_0" || k.is_multiple_of(32),
                "--shapes: q8_0 needs inputs in blocks of 32"
            );
            let pack = || -> Result<Packed> {
                Ok(match name {
                    "f32" => Packed::from_f32(&w, n, k),
                    "bf16" => {
                        let w: Vec<_> = w.iter().map(|&v| half::bf16::from_f32(v)).collect();
                        Packed::from_bf16(&w, n, k)
                    }
                    "f16" => {
                        let w: Vec<_> = w.iter().map(|&v| half::f16::from_f32(v)).collect();
                        Packed::from_f16(&w, n, k)
                    }
                    _ => {
                        // GGUF Q8_0 blocks, as the model packs a GGUF file's.
                        use candle_core::quantized::{GgmlDType, QTensor};
                        let t =
                            candle_core::Tensor::from_slice(&w, (n, k), &candle_core::Device::Cpu)?;
                        let q = QTensor::quantize(&t, GgmlDType::Q8_0)?;
                        Packed::from_q8_0(&q.data()?, n, k)
                    }
                })
            };
            let copies = if cold {
                ((1usize << 30) as f64 / ((n * k) as f64 * elem_bytes)).ceil() as usize
            } else {
                1
            };
            let packs = (0..copies.max(1))
                .map(|_| pack())
                .collect::<Result<Vec<Packed>>>()?;
            let before = yardstick.as_ref().map(Yardstick::gbs);
            let times = on_pool(m <= GEMV_MAX_ROWS, || {
                let mut times = Vec::with_capacity(reps + 1);
                for i in 0..=reps.max(1) {
                    let packed = &packs[i % packs.len()];
                    let t = Instant::now();
                    std::hint::black_box(packed.linear(&x, m));
                    times.push(t.elapsed().as_secs_f64());
                }
                times
            });
            // The first call warms the caches and the pool.
            let secs = median(times[1..].to_vec());
            let gflops = 2.0 * (m * k * n) as f64 / secs / 1e9;
            let gbs = (n * k) as f64 * elem_bytes / secs / 1e9;
            // The higher of the two figures around the timing: the
            // stricter comparison.
            let bw = before
                .zip(yardstick.as_ref().map(Yardstick::gbs))
                .map(|(a, b)| a.max(b));
            rows.push(json!({
                "m": m, "k": k, "n": n, "dtype": name, "ms": secs * 1e3,
                "gflops": gflops, "weight_gbs": gbs, "yardstick_gbs": bw,
            }));
            if !json {
                let of = bw
                    .map(|bw| format!(" ({:.0}% of the yardstick's {bw:.1})", 100.0 * gbs / bw))
                    .unwrap_or_default();
                writeln!(
                    out,
                    "  {name:4} {m:>5} x {k:>5} -> {n:>6}: {:.3} ms, {gflops:.0} GFLOP/s, \
                     weights read at {gbs:.1} GB/s{of}",
                    secs * 1e3
                )?;
            }
        }
    }
    if json {
        serde_json::to_writer(&mut out, &json!({"amx": ceiling, "runs": rows}))?;
        writeln!(out)?;
    }
    Ok(())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

#[allow(clippy::too_many_arguments)]
fn model(
    preset: &str,
    dtypes: &str,
    gguf: Option<&std::path::Path>,
    prefill: &str,
    embed_batch: &str,
    (decode, after): (usize, usize),
    cache_dtype: &str,
    json: bool,
) -> Result<()> {
    use candle_core::{DType, Device};
    anyhow::ensure!(
        after > 0 || decode == 0,
        "--decode-after: the prompt needs a token"
    );
    use shirabe::models::qwen3::{Cache, Model};
    use shirabe::models::weights::Random;
    let mut cfg = Config::qwen3_preset(preset)?;
    let kv_choice = match cache_dtype {
        "auto" => None,
        name => Some(
            <shirabe::models::qwen3::KvType as clap::ValueEnum>::from_str(name, true).map_err(
                |_| anyhow::anyhow!("--cache-dtype: {name:?} is not auto, f32, bf16, f16 or q8"),
            )?,
        ),
    };
    let prefill = list(prefill, "--prefill")?;
    let batches = list(embed_batch, "--embed-batch")?;
    let yardstick = Yardstick::new();
    let bw = yardstick.gbs();
    let mut rng = Rng::new(0x5eed);
    let mut tokens = |n: usize| -> Vec<u32> { (0..n).map(|_| rng.below(151_000) as u32).collect() };
    let mut results = Vec::new();
    let mut out = std::io::stdout().lock();
    let preset = match gguf {
        Some(path) => path.display().to_string(),
        None => preset.to_string(),
    };
    if !json {
        let what = match gguf {
            Some(_) => "its own weights",
            None => "random weights in the real shapes",
        };
        writeln!(
            out,
            "{preset}, {what}; read bandwidth {bw:.1} GB/s (all cores)"
        )?;
    }
    let names: Vec<&str> = match gguf {
        Some(_) => vec!["gguf"],
        None => dtypes.split(',').map(str::trim).collect(),
    };
    for name in names {
        use candle_core::quantized::GgmlDType;
        let (m, bytes_per_param) = if let Some(path) = gguf {
            // The file's own model: its shapes set the KV bytes below.
            let file = shirabe::models::weights::Gguf::open(path, &Device::Cpu)?;
            let m = shirabe::models::model_of_gguf(&file)?;
            cfg = m.config().clone();
            let bytes = std::fs::metadata(path)?.len() as f64;
            let per_param = bytes / m.parameter_count().max(1) as f64;
            (m, per_param)
        } else {
            let (weights, bytes_per_param) = match name {
                "f32" => (Random::new(DType::F32, &Device::Cpu), 4.0),
                "bf16" => (Random::new(DType::BF16, &Device::Cpu), 2.0),
                "f16" => (Random::new(DType::F16, &Device::Cpu), 2.0),
                // 34 bytes per 32 weights.
                "q8_0" => (
                    Random::quantized(GgmlDType::Q8_0, &Device::Cpu),
                    34.0 / 32.0,
                ),
                // 144 bytes per 256 weights.
                "q4_k" => (
                    Random::quantized(GgmlDType::Q4K, &Device::Cpu),
                    144.0 / 256.0,
                ),
                other => anyhow::bail!("--dtypes: {other:?} is not f32, bf16, f16, q8_0 or q4_k"),
            };
            (Model::new(&cfg, &weights)?, bytes_per_param)
        };
        let kv = kv_choice.unwrap_or(m.cache_dtype());
        let params = m.parameter_count();
        let mut row = json!({"dtype": name, "parameters": params, "cache": kv.to_string()});
        // One untimed pass first, as the PyTorch side does: first-touch
        // page faults here, oneDNN's kernel generation there.
        if !batches.is_empty() || !prefill.is_empty() {
            let mut cache = Cache::new(&m, kv);
            cache.reserve(512);
            m.forward(&[tokens(512)], &[vec![true; 512]], &mut cache)?;
        }
        // Embedding: 512-token passages, last-token pooling.
        for &b in &batches {
            let ids: Vec<Vec<u32>> = (0..b).map(|_| tokens(512)).collect();
            let valid = vec![vec![true; 512]; b];
            let mut cache = Cache::new(&m, kv);
            cache.reserve(512);
            let t = Instant::now();
            let h = m.forward(&ids, &valid, &mut cache)?;
            Model::last_hidden(&h)?;
            let secs = t.elapsed().as_secs_f64();
            row[format!("embed_batch{b}_passages_per_s")] = (b as f64 / secs).into();
            row[format!("embed_batch{b}_tokens_per_s")] = ((b * 512) as f64 / secs).into();
            if !json {
                writeln!(
                    out,
                    "  {name:5} embed batch {b:>2}: {:.2} passages/s, {:.0} tokens/s",
                    b as f64 / secs,
                    (b * 512) as f64 / secs
                )?;
            }
        }
        for &n in &prefill {
            let mut cache = Cache::new(&m, kv);
            cache.reserve(n);
            let t = Instant::now();
            m.forward(&[tokens(n)], &[vec![true; n]], &mut cache)?;
            let rate = n as f64 / t.elapsed().as_secs_f64();
            row[format!("prefill_{n}_tokens_per_s")] = rate.into();
            if !json {
                writeln!(out, "  {name:5} prefill {n:>5} tokens: {rate:.0} tokens/s")?;
            }
        }
        if decode > 0 {
            let mut cache = Cache::new(&m, kv);
            // As `generate` does: room for the prompt and the answer.
            cache.reserve(after + decode);
            let h = m.forward(&[tokens(after)], &[vec![true; after]], &mut cache)?;
            let mut logits = m.logits(&Model::last_hidden(&h)?)?;
            let weight_bytes = params as f64 * bytes_per_param;
            // Keys and values of every layer for the cached tokens.
            let kv_bytes = (after + decode / 2) as f64
                * (2 * cfg.num_hidden_layers * cfg.num_key_value_heads * cfg.head_dim()) as f64
                * kv.bytes_per_element(cfg.head_dim());
            // A shared machine's memory bandwidth swings by 2x within a
            // second (bursts of up to half a second), so the bound is taken
            // again after every token: one pass of the yardstick with the
            // best hint, and each token against the higher of the passes
            // either side (the stricter bound). The fraction is the median
            // over tokens. The mean rate against the best pass of the whole
            // run is the fraction a run that stayed in a burst would keep.
            // The best hint, then single passes only (the first as well,
            // so every step's bound is the same kind of reading).
            let (_, hint) = yardstick.best();
            let first = yardstick.once(hint);
            let (mut secs, mut before, mut best) = (0.0, first, first);
            let (mut fractions, mut fractions_kv, mut bws, mut steps) =
                (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for _ in 0..decode {
                let t = Instant::now();
                let next = logits.argmax(candle_core::D::Minus1)?.to_vec1::<u32>()?[0];
                let h = m.forward(&[vec![next]], &[vec![true]], &mut cache)?;
                logits = m.logits(&Model::last_hidden(&h)?)?;
                let step = t.elapsed().as_secs_f64();
                let reading = yardstick.once(hint);
                let bw = before.max(reading);
                fractions.push(weight_bytes / step / (bw * 1e9));
                fractions_kv.push((weight_bytes + kv_bytes) / step / (bw * 1e9));
                bws.push(bw);
                steps.push(json!({"secs": step, "yardstick_gbs": [before, reading]}));
                (secs, before, best) = (secs + step, reading, best.max(reading));
            }
            let rate = decode as f64 / secs;
            let (fraction, fraction_kv, bw) =
                (median(fractions), median(fractions_kv), median(bws));
            let bound = bw * 1e9 / weight_bytes;
            let of_best = rate / (best * 1e9 / weight_bytes);
            row["decode_after"] = after.into();
            row["decode_tokens_per_s"] = rate.into();
            row["decode_read_bandwidth_gbs"] = bw.into();
            row["decode_bandwidth_bound_tokens_per_s"] = bound.into();
            row["decode_fraction_of_bound"] = fraction.into();
            row["decode_fraction_of_bound_with_kv"] = fraction_kv.into();
            row["decode_best_read_bandwidth_gbs"] = best.into();
            row["decode_fraction_of_best_bound"] = of_best.into();
            row["decode_steps"] = steps.into();
            if !json {
                writeln!(
                    out,
                    "  {name:5} decode after {after} ({kv} cache): {rate:.2} tokens/s; {:.0}% of the bound set by the weights \
                     ({bound:.2} tokens/s at the median {bw:.1} GB/s read), {:.0}% counting the KV cache \
                     read too (medians over tokens, the yardstick read after each); {:.0}% of the bound at \
                     the run's best read ({best:.1} GB/s)",
                    100.0 * fraction,
                    100.0 * fraction_kv,
                    100.0 * of_best
                )?;
            }
        }
        row["peak_rss_mb"] = peak_rss_mb().into();
        results.push(row);
    }
    if json {
        serde_json::to_writer(
            &mut out,
            &json!({"preset": preset, "gguf": gguf.is_some(), "bandwidth_gbs": bw, "runs": results}),
        )?;
        writeln!(out)?;
    } else if let Some(rss) = peak_rss_mb() {
        writeln!(out, "  peak RSS {rss:.0} MB")?;
    }
    Ok(())
}
