//! Tuned variant choices per adapter (the autotune of CubeCL, keyed per device): `chunkwise tune`
//! verifies each candidate variant of a family against the float64 reference, times the ones that
//! pass at representative shapes, and writes the fastest per shape class to a cache file keyed
//! by adapter, backend, driver and chunkwise version. A new [`crate::Context`] loads the entries
//! for its adapter (from [`default_cache_path`] or `CHUNKWISE_TUNE_CACHE`); shape classes the
//! cache lacks, and contexts without a cache, take the defaults per device class (GPUs:
//! [`crate::ops::gemm::Tile::default_for`]; CPU adapters: the 64×64 tile).
//!
//! Families tuned today: the GPU GEMM's tile shape (`gemm`). A variant that failed its check
//! on the adapter is written with its error and is never chosen.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::context::Context;
use crate::error::{Error, Result};
use crate::ops::gemm::Tile;
#[cfg(not(target_arch = "wasm32"))]
use crate::ops::gemm::{self, GemmSchedule};
use crate::tensor::DType;
#[cfg(not(target_arch = "wasm32"))]
use crate::tensor::Tensor;

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

/// The GEMM shape class of `[rows, k] · [n, k]ᵀ` (rows of x over all batches) in `dtype` (the
/// storage dtype decides which tensor-core sizes exist: NVIDIA's take f16 inputs only).
pub fn gemm_class(rows: usize, n: usize, k: usize, dtype: DType) -> String {
    let dt = match dtype {
        DType::F32 => "f32",
        DType::F16 => "f16",
    };
    format!("r{} n{} k{} {dt}", bucket(rows), bucket(n), bucket(k))
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
    match ctx.tuning() {
        Some(t) if !t.is_empty() => format!(
            "{schedule}tuned per shape class ({} classes); other classes {default}",
            t.len()
        ),
        _ => format!("{schedule}{default}; untuned (`chunkwise tune`)"),
    }
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
    let dtypes: &[DType] = if !quick && ctx.supports_f16() {
        &[DType::F32, DType::F16]
    } else {
        &[DType::F32]
    };
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
    let label = crate::verify::tile_label(tile);
    let cases: Vec<_> = crate::verify::registry()
        .into_iter()
        .filter(|c| c.family == "gemm" && c.shape.ends_with(&label))
        .collect();
    debug_assert!(!cases.is_empty());
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
    // A tile none of whose cases could run here (a tensor-core tile without the device's
    // cooperative matrices) is not a candidate.
    match (passed, skipped) {
        (0, Some(why)) => Err(format!("not available here: {why}")),
        _ => Ok(()),
    }
}

#[cfg(not(target_arch = "wasm32"))]
/// Median milliseconds of `x · wᵀ` with a forced tile (after one warm-up), timed as `bench` times:
/// GPU timestamps where the adapter has them, wall time otherwise.
fn time_tile(ctx: &Context, x: &Tensor, w: &Tensor, tile: Tile, samples: usize) -> Result<f64> {
    let run = || -> Result<f64> {
        let mut rec = ctx.record();
        gemm::gemm_with(&mut rec, x, w, GemmSchedule::TiledAs(tile))?;
        rec.submit_timed()
    };
    run()?;
    let times = (0..samples.max(1))
        .map(|_| run())
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
            match time_tile(ctx, &x, &w, tile, samples) {
                Ok(ms) => {
                    choice.ms.insert(tile.name().to_string(), ms);
                }
                // A size over the adapter's limits leaves the tile out of this class only.
                Err(
                    e @ (Error::LimitExceeded { .. }
                    | Error::OutOfMemory { .. }
                    | Error::MissingFeature { .. }
                    | Error::Shape { .. }),
                ) => {
                    choice
                        .rejected
                        .insert(tile.name().to_string(), e.to_string());
                }
                Err(e) => return Err(e),
            }
        }
        let Some((best, _)) = choice.ms.iter().min_by(|a, b| a.1.total_cmp(b.1)) else {
            continue;
        };
        choice.choice = best.clone();
        let class = gemm_class(shape.rows, shape.n, shape.k, shape.dtype);
        progress(&class, &choice);
        tuning.insert("gemm", &class, choice);
    }
    Ok(tuning)
}
