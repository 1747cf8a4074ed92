//! Tuned variant choices per adapter (the autotune of CubeCL, keyed per device): `chunkwise tune`
//! verifies each candidate variant of a family against the float64 reference, times the ones that
//! pass at representative shapes, and writes the fastest per shape class to a cache file keyed
//! by adapter, backend, driver and chunkwise version. A new [`crate::Context`] loads the entries
//! for its adapter (from [`default_cache_path`] or `CHUNKWISE_TUNE_CACHE`); shape classes the
//! cache lacks, and contexts without a cache, take the defaults per device class (GPUs:
//! [`crate::ops::gemm::Tile::default_for`]; CPU adapters: the 64×64 tile).
//!
//! Families tuned today: the GPU GEMM's tile shape (`gemm`, per product shape class), the GPU
//! flash forward's kernel (`attention`: key tile, score reduction, the blocked-product and
//! tensor-core kernels; per sequence length, head dim and dtype) and the GPU Mesa CG's plan
//! (`mesa_cg`: chunk length and whether S_kk stays in workgroup memory; per head dim and dtype).
//! A variant that failed its check on the adapter is written with its error and is never chosen.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::context::Context;
use crate::error::{Error, Result};
use crate::ops::attention::{self as attn, FwdVariant};
use crate::ops::gemm::Tile;
#[cfg(not(target_arch = "wasm32"))]
use crate::ops::gemm::{self, GemmSchedule};
use crate::tensor::DType;

/// The environment variable naming the cache file (`off` disables tuning).
pub const ENV: &str = "CHUNKWISE_TUNE_CACHE";

/// Cache file format version; files of another version are ignored with a warning.
const FORMAT: u32 = 1;

/// `$XDG_CACHE_HOME/chunkwise/tune.json` (else `~/.cache/…`; `~/Library/Caches/…` on macOS,
/// `%LOCALAPPDATA%\chunkwise\tune.json` on Windows); `None` where no home is known (wasm).
pub fn default_cache_path() -> Option<PathBuf> {
    let var = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    let base = if cfg!(windows) {
        var("LOCALAPPDATA")
    } else if cfg!(target_os = "macos") {
        var("HOME").map(|h| h.join("Library").join("Caches"))
    } else {
        var("XDG_CACHE_HOME").or_else(|| var("HOME").map(|h| h.join(".cache")))
    };
    base.map(|b| b.join("chunkwise").join("tune.json"))
}

/// The cache a new context reads: `CHUNKWISE_TUNE_CACHE` (a path, or `off`), else the default.
pub fn cache_path_from_env() -> Option<PathBuf> {
    match std::env::var(ENV) {
        Ok(v) if v.trim().eq_ignore_ascii_case("off") => None,
        Ok(v) if !v.trim().is_empty() => Some(PathBuf::from(v)),
        _ => default_cache_path(),
    }
}

/// What identifies an adapter in the cache: a driver update or a new chunkwise re-tunes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdapterKey {
    pub name: String,
    pub backend: String,
    pub driver: String,
    pub driver_info: String,
    pub vendor: u32,
    pub device: u32,
    pub chunkwise: String,
}

impl AdapterKey {
    pub fn of(info: &wgpu::AdapterInfo) -> AdapterKey {
        AdapterKey {
            name: info.name.clone(),
            backend: format!("{:?}", info.backend),
            driver: info.driver.clone(),
            driver_info: info.driver_info.clone(),
            vendor: info.vendor,
            device: info.device,
            chunkwise: env!("CARGO_PKG_VERSION").to_string(),
        }
    }
}

/// One tuned shape class: the winner and every candidate's median time (or why it was left out).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Choice {
    pub choice: String,
    /// The shape that was timed for the class.
    pub shape: String,
    /// Candidate → median milliseconds.
    pub ms: BTreeMap<String, f64>,
    /// Candidate → why it was not timed (its check failed, or it did not fit the adapter).
    #[serde(default)]
    pub rejected: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct AdapterEntry {
    adapter: AdapterKey,
    /// "family/class" → choice.
    choices: BTreeMap<String, Choice>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct CacheFile {
    format: u32,
    adapters: Vec<AdapterEntry>,
}

fn read_cache(path: &Path) -> Result<CacheFile> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::invalid("tune cache", format!("{}: {e}", path.display())))?;
    let file: CacheFile = serde_json::from_str(&text).map_err(|e| {
        Error::invalid(
            "tune cache",
            format!(
                "{}: {e} (delete it, or run `chunkwise tune` again)",
                path.display()
            ),
        )
    })?;
    if file.format != FORMAT {
        return Err(Error::invalid(
            "tune cache",
            format!(
                "{}: format {} (this chunkwise writes {FORMAT}); run `chunkwise tune` again",
                path.display(),
                file.format
            ),
        ));
    }
    Ok(file)
}

/// The tuned choices for one adapter, as a context holds them.
#[derive(Clone, Debug, Default)]
pub struct Tuning {
    /// The file they came from.
    pub source: Option<PathBuf>,
    choices: BTreeMap<String, Choice>,
}

impl Tuning {
    /// The entries of `path` for this adapter; `Ok(None)` when the file does not exist or has
    /// none for it. A file that cannot be read is an error naming it.
    pub fn load(path: &Path, info: &wgpu::AdapterInfo) -> Result<Option<Tuning>> {
        if !path.exists() {
            return Ok(None);
        }
        let key = AdapterKey::of(info);
        Ok(read_cache(path)?
            .adapters
            .into_iter()
            .find(|a| a.adapter == key)
            .map(|a| Tuning {
                source: Some(path.to_path_buf()),
                choices: a.choices,
            }))
    }

    /// How many shape classes are tuned.
    pub fn len(&self) -> usize {
        self.choices.len()
    }

    /// How many shape classes of `family` are tuned.
    pub fn classes(&self, family: &str) -> usize {
        let prefix = format!("{family}/");
        self.choices
            .keys()
            .filter(|k| k.starts_with(&prefix))
            .count()
    }

    pub fn is_empty(&self) -> bool {
        self.choices.is_empty()
    }

    /// The tuned choice for a family's shape class.
    pub fn get(&self, family: &str, class: &str) -> Option<&Choice> {
        self.choices.get(&format!("{family}/{class}"))
    }

    pub fn insert(&mut self, family: &str, class: &str, choice: Choice) {
        self.choices.insert(format!("{family}/{class}"), choice);
    }

    /// Adds `other`'s choices (another family's), replacing classes both hold.
    pub fn extend(&mut self, other: Tuning) {
        self.choices.extend(other.choices);
    }

    /// Writes these choices for `info`'s adapter into `path`, keeping other adapters' entries.
    pub fn save(&self, path: &Path, info: &wgpu::AdapterInfo) -> Result<()> {
        let mut file = match read_cache(path) {
            Ok(f) => f,
            Err(e) => {
                if path.exists() {
                    log::warn!("replacing the unreadable tune cache: {e}");
                }
                CacheFile {
                    format: FORMAT,
                    adapters: vec![],
                }
            }
        };
        let key = AdapterKey::of(info);
        file.adapters.retain(|a| a.adapter != key);
        file.adapters.push(AdapterEntry {
            adapter: key,
            choices: self.choices.clone(),
        });
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                Error::invalid(
                    "tune cache",
                    format!("cannot create {}: {e}", dir.display()),
                )
            })?;
        }
        let text = serde_json::to_string_pretty(&file)
            .map_err(|e| Error::invalid("tune cache", e.to_string()))?;
        std::fs::write(path, text)
            .map_err(|e| Error::invalid("tune cache", format!("{}: {e}", path.display())))
    }
}

/// A size bucket: the power of two at or above `v`.
fn bucket(v: usize) -> usize {
    v.max(1).next_power_of_two()
}

fn dtype_name(dtype: DType) -> &'static str {
    match dtype {
        DType::F32 => "f32",
        DType::F16 => "f16",
    }
}

/// The GEMM shape class of `[rows, k] · [n, k]ᵀ` (rows of x over all batches) in `dtype` (the
/// storage dtype decides which tensor-core sizes exist: NVIDIA's take f16 inputs only).
pub fn gemm_class(rows: usize, n: usize, k: usize, dtype: DType) -> String {
    let dt = dtype_name(dtype);
    format!("r{} n{} k{} {dt}", bucket(rows), bucket(n), bucket(k))
}

/// The flash forward's shape class: sequence length (bucketed), head dim and dtype.
pub fn attention_class(t: usize, dh: usize, dtype: DType) -> String {
    format!("t{} dh{dh} {}", bucket(t), dtype_name(dtype))
}

/// RAT's inter-chunk attention's shape class: chunks per sequence (its keys; bucketed), head dim
/// and dtype.
pub fn rat_attention_class(chunks: usize, dh: usize, dtype: DType) -> String {
    format!("c{} dh{dh} {}", bucket(chunks), dtype_name(dtype))
}

/// The Mesa CG's shape class: head dim and dtype (the plan's workgroup memory and the state
/// reads it saves depend on these, not on T).
pub fn mesa_class(d: usize, dtype: DType) -> String {
    format!("d{d} {}", dtype_name(dtype))
}

/// The tuned GPU CG plan (chunk length, S_kk kept) for head dim `d`, if the cache has one;
/// `ops::mesa` still checks that the device holds it.
pub fn mesa_plan(ctx: &Context, d: usize, dtype: DType) -> Option<(usize, bool)> {
    ctx.tuning().and_then(|tu| {
        tu.get("mesa_cg", &mesa_class(d, ctx.resolve_dtype(dtype)))
            .and_then(|c| crate::ops::mesa::parse_plan(&c.choice))
    })
}

/// The GPU flash forward's kernel for `t` tokens of head dim `dh`: the tuned choice for its
/// class where it can run here, else the default rule ([`attn::default_fwd_variant`]).
pub fn attention_variant(ctx: &Context, dtype: DType, t: usize, dh: usize) -> FwdVariant {
    let class = attention_class(t, dh, ctx.resolve_dtype(dtype));
    tuned_variant(ctx, "attention", &class, (dtype, dh))
        .unwrap_or_else(|| attn::default_fwd_variant(ctx, dtype, dh))
}

/// A flash family's tuned variant for `class`, where the cache has one this device can run at
/// (dtype, head dim).
fn tuned_variant(
    ctx: &Context,
    family: &str,
    class: &str,
    (dtype, dh): (DType, usize),
) -> Option<FwdVariant> {
    ctx.tuning()
        .and_then(|tu| {
            tu.get(family, class)
                .and_then(|c| FwdVariant::parse(&c.choice))
        })
        .filter(|v| v.usable(ctx, dtype, dh).is_ok())
}

/// RAT's GPU inter-chunk attention kernel over `chunks` chunk finals of head dim `dh`: the tuned
/// fa2 variant for its class where it can run here, else the flash forward's default fa2 plan
/// (the largest key tile the workgroup memory holds, subgroup sums where there are subgroups).
pub fn rat_attention_variant(ctx: &Context, dtype: DType, chunks: usize, dh: usize) -> FwdVariant {
    let class = rat_attention_class(chunks, dh, ctx.resolve_dtype(dtype));
    tuned_variant(ctx, "rat_attention", &class, (dtype, dh))
        .filter(|v| matches!(v, FwdVariant::Fa2 { .. }))
        .unwrap_or_else(|| {
            let (kt, sg) = attn::fa2_plan(ctx, dh);
            FwdVariant::Fa2 { kt, sg }
        })
}

/// The fa2 variants RAT's inter-chunk attention is tuned among.
pub fn rat_attention_variants() -> Vec<FwdVariant> {
    FwdVariant::all()
        .into_iter()
        .filter(|v| matches!(v, FwdVariant::Fa2 { .. }))
        .collect()
}

/// The GPU GEMM tile for a product: the tuned choice for its shape class, else the default.
pub fn gemm_tile(ctx: &Context, dtype: DType, b: usize, m: usize, n: usize, k: usize) -> Tile {
    ctx.tuning()
        .and_then(|t| {
            t.get("gemm", &gemm_class(b * m, n, k, ctx.resolve_dtype(dtype)))
                .and_then(|c| Tile::parse(&c.choice))
        })
        // A tensor-core choice holds for the sizes and dtype it can take.
        .filter(|t| t.usable(ctx, dtype, m, n, k).is_ok())
        .unwrap_or_else(|| {
            if ctx.is_cpu_adapter() {
                // Measured on lavapipe: 64×64 is the fastest tile at every size (larger register
                // blocks only add spills on a CPU).
                Tile::T64x64
            } else {
                Tile::default_for(b, m, n)
            }
        })
}

/// How this context picks the GPU GEMM's tile, in words (`chunkwise info`).
pub fn gemm_rule(ctx: &Context) -> String {
    let default = if ctx.is_cpu_adapter() {
        "64x64 (the CPU-adapter default)"
    } else {
        "the largest of 128x128 / 128x64 giving ≥ 256 workgroups, else 64x64 (the GPU default)"
    };
    let schedule = if ctx.cpu_schedules() {
        "direct kernels; tiles where K % 4 != 0: "
    } else {
        "tiles above 16 rows of x (GEMV below): "
    };
    match ctx.tuning().map_or(0, |t| t.classes("gemm")) {
        n if n > 0 => {
            format!("{schedule}tuned per shape class ({n} classes); other classes {default}")
        }
        _ => format!("{schedule}{default}; untuned (`chunkwise tune`)"),
    }
}

/// The storage dtypes a tune times: f32 and, where the adapter has it (and not `quick`), f16.
fn tuned_dtypes(ctx: &Context, quick: bool) -> &'static [DType] {
    if !quick && ctx.supports_f16() {
        &[DType::F32, DType::F16]
    } else {
        &[DType::F32]
    }
}

#[cfg(not(target_arch = "wasm32"))]
/// Files a timed class: the fastest candidate becomes the choice (a class no candidate could run
/// in is left out, so the default rule serves it).
fn settle(
    tuning: &mut Tuning,
    family: &str,
    class: String,
    mut choice: Choice,
    progress: &mut impl FnMut(&str, &Choice),
) {
    let Some((best, _)) = choice.ms.iter().min_by(|a, b| a.1.total_cmp(b.1)) else {
        return;
    };
    choice.choice = best.clone();
    progress(&class, &choice);
    tuning.insert(family, &class, choice);
}

/// A shape `chunkwise tune` times: the products of the benchmarked layers and models.
#[derive(Clone, Copy, Debug)]
pub struct GemmShape {
    pub rows: usize,
    pub n: usize,
    pub k: usize,
    pub dtype: DType,
}

/// The shapes tuned by default: a layer's projections (D → D, D → 4D, 4D → D at D = 256 and
/// 1024) at prefill lengths 1024 … 16384, in f32 and, where the adapter has it, f16. `quick`:
/// D = 256, two lengths, f32 only.
pub fn gemm_shapes(ctx: &Context, quick: bool) -> Vec<GemmShape> {
    let dtypes = tuned_dtypes(ctx, quick);
    let dims: &[usize] = if quick { &[256] } else { &[256, 1024] };
    let rows: &[usize] = if quick {
        &[1024, 16384]
    } else {
        &[1024, 4096, 16384]
    };
    let mut out = vec![];
    for &dtype in dtypes {
        for &d in dims {
            for &r in rows {
                for (n, k) in [(d, d), (4 * d, d), (d, 4 * d)] {
                    out.push(GemmShape {
                        rows: r,
                        n,
                        k,
                        dtype,
                    });
                }
            }
        }
    }
    out
}

#[cfg(not(target_arch = "wasm32"))]
/// Runs the check cases of a tile on this adapter (the `chunkwise check` cases that force it:
/// ragged M, N and K, both loaders, f32 and, where the adapter has it, f16). `Err` says why the
/// tile is not a candidate here.
pub fn check_tile(ctx: &Context, tile: Tile) -> std::result::Result<(), String> {
    check_forced(
        ctx,
        |family| family == "gemm",
        &crate::verify::tile_label(tile),
    )
}

#[cfg(not(target_arch = "wasm32"))]
/// Runs the check cases that force a flash-forward kernel (causal and windowed, ragged T, the
/// head dims it takes, f32 and f16 where the adapter has it). `Err` says why it is not a
/// candidate here.
pub fn check_fwd_variant(ctx: &Context, v: FwdVariant) -> std::result::Result<(), String> {
    check_forced(
        ctx,
        |family| family.starts_with("attention"),
        &crate::verify::fwd_variant_label(v),
    )
}

#[cfg(not(target_arch = "wasm32"))]
/// The variants whose check fails here, with why (never timed).
fn checked_variants(
    variants: &[FwdVariant],
    check: impl Fn(FwdVariant) -> std::result::Result<(), String>,
) -> BTreeMap<String, String> {
    variants
        .iter()
        .filter_map(|&v| check(v).err().map(|why| (v.name(), why)))
        .collect()
}

#[cfg(not(target_arch = "wasm32"))]
/// A flash family's choice at one shape: each variant neither rejected by its check nor
/// unusable at (dtype, head dim) here, timed running `run`.
fn time_variants(
    ctx: &Context,
    (variants, rejected): (&[FwdVariant], &BTreeMap<String, String>),
    shape: String,
    samples: usize,
    (dtype, dh): (DType, usize),
    run: impl Fn(&mut crate::Recording, FwdVariant) -> Result<()>,
) -> Result<Choice> {
    let mut choice = Choice {
        choice: String::new(),
        shape,
        ms: BTreeMap::new(),
        rejected: rejected.clone(),
    };
    for &v in variants {
        if choice.rejected.contains_key(&v.name()) {
            continue;
        }
        if let Err(why) = v.usable(ctx, dtype, dh) {
            choice.rejected.insert(v.name(), why);
            continue;
        }
        let timed = time_median(ctx, samples, |rec| run(rec, v));
        record_timing(&mut choice, v.name(), timed)?;
    }
    Ok(choice)
}

#[cfg(not(target_arch = "wasm32"))]
/// Runs the check cases that force one of RAT's inter-chunk attention kernels.
pub fn check_rat_variant(ctx: &Context, v: FwdVariant) -> std::result::Result<(), String> {
    check_forced(
        ctx,
        |family| family == "rat_attention",
        &crate::verify::fwd_variant_label(v),
    )
}

#[cfg(not(target_arch = "wasm32"))]
/// Runs the check cases of the families `family` admits whose shape label ends with `label`
/// (the cases forcing one variant).
fn check_forced(
    ctx: &Context,
    family: impl Fn(&str) -> bool,
    label: &str,
) -> std::result::Result<(), String> {
    let cases: Vec<_> = crate::verify::registry()
        .into_iter()
        .filter(|c| family(c.family) && c.shape.ends_with(label))
        .collect();
    debug_assert!(!cases.is_empty(), "no check case forces {label}");
    let mut passed = 0;
    let mut skipped = None;
    for case in cases {
        let out = case.run(ctx);
        if out.failed() {
            return Err(format!("its check failed: {}", out.describe()));
        }
        if out.pass {
            passed += 1;
        } else {
            skipped = out.skipped;
        }
    }
    // A variant none of whose cases could run here (a tensor-core kernel without the device's
    // cooperative matrices) is not a candidate.
    match (passed, skipped) {
        (0, Some(why)) => Err(format!("not available here: {why}")),
        _ => Ok(()),
    }
}

#[cfg(not(target_arch = "wasm32"))]
/// Files one candidate's timing into `choice`: its median, or (for a size this adapter cannot
/// take) why it was left out of this class. Other errors end the tuning.
fn record_timing(choice: &mut Choice, name: String, timed: Result<f64>) -> Result<()> {
    match timed {
        Ok(ms) => {
            choice.ms.insert(name, ms);
            Ok(())
        }
        Err(
            e @ (Error::LimitExceeded { .. }
            | Error::OutOfMemory { .. }
            | Error::MissingFeature { .. }
            | Error::Shape { .. }),
        ) => {
            choice.rejected.insert(name, e.to_string());
            Ok(())
        }
        Err(e) => Err(e),
    }
}

#[cfg(not(target_arch = "wasm32"))]
/// Median milliseconds of `run` (one recording per call), after one warm-up.
fn time_median(
    ctx: &Context,
    samples: usize,
    run: impl Fn(&mut crate::Recording) -> Result<()>,
) -> Result<f64> {
    let once = || -> Result<f64> {
        let mut rec = ctx.record();
        run(&mut rec)?;
        rec.submit_timed()
    };
    once()?;
    let times = (0..samples.max(1))
        .map(|_| once())
        .collect::<Result<Vec<_>>>()?;
    Ok(crate::bench::summarize(&times).median_ms)
}

#[cfg(not(target_arch = "wasm32"))]
/// Tunes the GPU GEMM tile on `ctx` at `shapes`: every tile is checked once, then timed at each
/// shape; `progress` hears each shape's result. Returns the choices (not yet saved).
pub fn tune_gemm(
    ctx: &Context,
    shapes: &[GemmShape],
    samples: usize,
    mut progress: impl FnMut(&str, &Choice),
) -> Result<Tuning> {
    let mut rejected = BTreeMap::new();
    for tile in Tile::ALL {
        if let Err(why) = check_tile(ctx, tile) {
            rejected.insert(tile.name().to_string(), why);
        }
    }
    let mut tuning = Tuning::default();
    for &shape in shapes {
        let mut choice = Choice {
            choice: String::new(),
            shape: format!("{}x{}x{} {:?}", shape.rows, shape.n, shape.k, shape.dtype),
            ms: BTreeMap::new(),
            rejected: rejected.clone(),
        };
        // One input per shape for every tile; plain values, since pooled buffers may hold
        // denormals or NaNs, which CPU adapters run slowly.
        let (r, n, k) = (shape.rows, shape.n, shape.k);
        let x = ctx.upload(&vec![0.5; r * k], &[1, r, k], shape.dtype)?;
        let w = ctx.upload(&vec![0.25; n * k], &[n, k], shape.dtype)?;
        for tile in Tile::ALL {
            if rejected.contains_key(tile.name()) {
                continue;
            }
            let timed = time_median(ctx, samples, |rec| {
                gemm::gemm_with(rec, &x, &w, GemmSchedule::TiledAs(tile)).map(drop)
            });
            record_timing(&mut choice, tile.name().to_string(), timed)?;
        }
        let class = gemm_class(shape.rows, shape.n, shape.k, shape.dtype);
        settle(&mut tuning, "gemm", class, choice, &mut progress);
    }
    Ok(tuning)
}

/// A flash-forward shape `chunkwise tune` times: causal attention over `t` tokens of `heads`
/// heads of `dh`.
#[derive(Clone, Copy, Debug)]
pub struct AttentionShape {
    pub t: usize,
    pub heads: usize,
    pub dh: usize,
    pub dtype: DType,
}

/// The flash-forward shapes tuned by default: the benchmarked layers' heads (4 of 64, as at
/// D = 256; 2 of 128) at 1024, 4096 and 16384 tokens, in f32 and, where the adapter has it, f16.
/// `quick`: 4 heads of 64 at 1024 tokens, f32.
pub fn attention_shapes(ctx: &Context, quick: bool) -> Vec<AttentionShape> {
    if quick {
        return vec![AttentionShape {
            t: 1024,
            heads: 4,
            dh: 64,
            dtype: DType::F32,
        }];
    }
    let dtypes = tuned_dtypes(ctx, false);
    let mut out = vec![];
    for &dtype in dtypes {
        for (heads, dh) in [(4, 64), (2, 128)] {
            for t in [1024, 4096, 16384] {
                out.push(AttentionShape {
                    t,
                    heads,
                    dh,
                    dtype,
                });
            }
        }
    }
    out
}

#[cfg(not(target_arch = "wasm32"))]
/// Tunes the GPU flash forward's kernel on `ctx` at `shapes`: every variant is checked once, then
/// timed at each shape where it can run; `progress` hears each class's result.
pub fn tune_attention(
    ctx: &Context,
    shapes: &[AttentionShape],
    samples: usize,
    mut progress: impl FnMut(&str, &Choice),
) -> Result<Tuning> {
    let variants = FwdVariant::all();
    let rejected = checked_variants(&variants, |v| check_fwd_variant(ctx, v));
    let mut tuning = Tuning::default();
    for &AttentionShape {
        t,
        heads,
        dh,
        dtype,
    } in shapes
    {
        // Plain values (see tune_gemm); a uniform softmax does the work any other would.
        let x = ctx.upload(&vec![0.25; t * heads * dh], &[1, t, heads * dh], dtype)?;
        let shape = format!("t{t} {heads}x{dh} causal {dtype:?}");
        let choice = time_variants(
            ctx,
            (&variants, &rejected),
            shape,
            samples,
            (dtype, dh),
            |rec, v| attn::attention_with(rec, &x, &x, &x, heads, None, None, Some(v)).map(drop),
        )?;
        let class = attention_class(t, dh, dtype);
        settle(&mut tuning, "attention", class, choice, &mut progress);
    }
    Ok(tuning)
}

/// A Mesa shape `chunkwise tune` times: the chunkwise forward (reference CG, 30 steps) over `t`
/// tokens of `heads` heads of `d`.
#[derive(Clone, Copy, Debug)]
pub struct CgShape {
    pub t: usize,
    pub heads: usize,
    pub d: usize,
    pub dtype: DType,
}

/// The Mesa shapes tuned by default: 4 heads of 64 and 2 of 128 over 4096 tokens, f32 and,
/// where the adapter has it, f16. `quick`: 4 heads of 64 over 512 tokens, f32.
pub fn cg_shapes(ctx: &Context, quick: bool) -> Vec<CgShape> {
    if quick {
        return vec![CgShape {
            t: 512,
            heads: 4,
            d: 64,
            dtype: DType::F32,
        }];
    }
    let dtypes = tuned_dtypes(ctx, false);
    let mut out = vec![];
    for &dtype in dtypes {
        for (heads, d) in [(4, 64), (2, 128)] {
            out.push(CgShape {
                t: 4096,
                heads,
                d,
                dtype,
            });
        }
    }
    out
}

#[cfg(not(target_arch = "wasm32"))]
/// Tunes the GPU Mesa CG's plan on `ctx` at `shapes`: every plan is checked once (its forced
/// check cases), then the chunkwise forward is timed with each plan the head dim admits.
pub fn tune_mesa(
    ctx: &Context,
    shapes: &[CgShape],
    samples: usize,
    mut progress: impl FnMut(&str, &Choice),
) -> Result<Tuning> {
    use crate::ops::mesa::{cg_plans, core_with_plan, plan_name, MesaState, Solver};
    let mut plans: Vec<(usize, bool)> = shapes.iter().flat_map(|s| cg_plans(s.d)).collect();
    plans.sort();
    plans.dedup();
    let mut rejected = BTreeMap::new();
    for &plan in &plans {
        let label = crate::verify::plan_label(plan);
        if let Err(why) = check_forced(ctx, |family| family == "mesa_cg", &label) {
            rejected.insert(plan_name(plan), why);
        }
    }
    let mut tuning = Tuning::default();
    for &CgShape { t, heads, d, dtype } in shapes {
        let mut choice = Choice {
            choice: String::new(),
            shape: format!("t{t} {heads}x{d} {dtype:?}"),
            ms: BTreeMap::new(),
            rejected: rejected.clone(),
        };
        let host = crate::verify::MesaHost::random(
            crate::reference::mesa::MesaShape {
                b: 1,
                t,
                h: heads,
                d,
            },
            1,
            (0.9, 0.99),
            dtype,
        );
        let up = host.upload(ctx, dtype)?;
        let state = MesaState::zeros(ctx, 1, heads, d)?;
        for plan in cg_plans(d) {
            if choice.rejected.contains_key(&plan_name(plan)) {
                continue;
            }
            let timed = time_median(ctx, samples, |rec| {
                core_with_plan(rec, &up.inputs(), &state, 30, Solver::Reference, plan).map(drop)
            });
            record_timing(&mut choice, plan_name(plan), timed)?;
        }
        let class = mesa_class(d, dtype);
        settle(&mut tuning, "mesa_cg", class, choice, &mut progress);
    }
    Ok(tuning)
}

/// A RAT inter-chunk attention shape `chunkwise tune` times: `t` tokens in chunks of `chunk`,
/// `heads` heads of `dh` (one query group per head).
#[derive(Clone, Copy, Debug)]
pub struct RatShape {
    pub t: usize,
    pub chunk: usize,
    pub heads: usize,
    pub dh: usize,
    pub dtype: DType,
}

/// The RAT shapes tuned by default: chunks of 16 (the paper's L) over 4096 and 16384 tokens (256
/// and 1024 chunk finals), 4 heads of 64 and 2 of 128, f32 and, where the adapter has it, f16.
/// `quick`: 4 heads of 64 over 1024 tokens, f32.
pub fn rat_shapes(ctx: &Context, quick: bool) -> Vec<RatShape> {
    let one = |t, heads, dh, dtype| RatShape {
        t,
        chunk: 16,
        heads,
        dh,
        dtype,
    };
    if quick {
        return vec![one(1024, 4, 64, DType::F32)];
    }
    let mut out = vec![];
    for &dtype in tuned_dtypes(ctx, false) {
        for (heads, dh) in [(4, 64), (2, 128)] {
            for t in [4096, 16384] {
                out.push(one(t, heads, dh, dtype));
            }
        }
    }
    out
}

#[cfg(not(target_arch = "wasm32"))]
/// Tunes RAT's GPU inter-chunk attention kernel on `ctx` at `shapes`: each fa2 variant is
/// checked once (its forced check cases), then timed at each shape where it can run.
pub fn tune_rat(
    ctx: &Context,
    shapes: &[RatShape],
    samples: usize,
    mut progress: impl FnMut(&str, &Choice),
) -> Result<Tuning> {
    use crate::ops::rat::{inter_chunk_attention_with, Heads};
    let variants = rat_attention_variants();
    let rejected = checked_variants(&variants, |v| check_rat_variant(ctx, v));
    let mut tuning = Tuning::default();
    for &RatShape {
        t,
        chunk,
        heads,
        dh,
        dtype,
    } in shapes
    {
        // As many query groups as heads: q, k and v are one [1, T, H·dh] tensor.
        let hd = Heads::new(heads * dh, heads, heads)?;
        // Plain values (see tune_gemm): the kernels' work does not depend on them.
        let x = ctx.upload(&vec![0.25; t * heads * dh], &[1, t, heads * dh], dtype)?;
        let shape = format!("t{t} L{chunk} {heads}x{dh} {dtype:?}");
        let choice = time_variants(
            ctx,
            (&variants, &rejected),
            shape,
            samples,
            (dtype, dh),
            |rec, v| {
                inter_chunk_attention_with(rec, &x, &x, &x, hd, chunk, None, Some(v)).map(drop)
            },
        )?;
        let class = rat_attention_class(t.div_ceil(chunk), dh, dtype);
        settle(&mut tuning, "rat_attention", class, choice, &mut progress);
    }
    Ok(tuning)
}
