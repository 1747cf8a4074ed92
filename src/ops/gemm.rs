//! GEMM `y = x · Wᵀ` in the Linear layout of the reference implementations (weight `[out, in]`).

use std::ops::Range;

use crate::error::{Error, Result};
use crate::kernels::KernelKey;
use crate::record::Recording;
use crate::tensor::{DType, Tensor};

use super::{check_u32, same_dtype};

/// Which schedule runs the product.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum GemmSchedule {
    /// CPU schedules: `DirectSubgroup`; GPU schedules: `Gemv` up to 16 rows of x, else `Tiled`.
    #[default]
    Auto,
    /// Workgroup-memory tiles with register blocks (the GPU schedule); the tile shape tuned for
    /// the adapter ([`crate::tune`]), else [`Tile::default_for`].
    Tiled,
    /// `Tiled` with this tile shape (tuning and tests).
    TiledAs(Tile),
    /// Few rows of x (decode steps, M ≤ 16; more fall back to `Tiled`): each row of W read once
    /// by lanes along K, reduced with subgroup sums where the device has subgroups
    /// (shaders/gemv.wgsl).
    Gemv,
    /// Register blocks straight from storage, no barriers, over a transposed copy of W (the
    /// CPU-adapter schedule: contiguous loads across SIMD lanes). Needs K % 4 == 0; other K run tiled.
    Direct,
    /// `Direct` with each x row loaded by one lane and handed to the others by subgroup
    /// broadcast, 16 rows per workgroup and 8 columns per lane (5× fewer storage loads per
    /// multiply-add; 2.2–3× faster at 16384×256×256 on lavapipe). Needs subgroups of exactly 8 lanes; elsewhere it runs `Direct`.
    DirectSubgroup,
}

/// Rows of x (all batches together) up to which the GPU schedule takes `Gemv`.
pub const GEMV_MAX_ROWS: usize = 16;

impl GemmSchedule {
    /// The concrete schedule `Auto` stands for on this adapter (`Tiled` on GPUs, where rows of x
    /// up to [`GEMV_MAX_ROWS`] then take `Gemv`).
    pub fn resolve(self, ctx: &crate::Context) -> GemmSchedule {
        match self {
            GemmSchedule::Auto if ctx.cpu_schedules() => GemmSchedule::DirectSubgroup.resolve(ctx),
            GemmSchedule::Auto => GemmSchedule::Tiled,
            GemmSchedule::DirectSubgroup if ctx.subgroup_size() != Some(8) => GemmSchedule::Direct,
            s => s,
        }
    }
    /// The schedule a product with `rows_x` rows of x (all batches) and a shared W runs:
    /// [`GemmSchedule::resolve`], with `Gemv` for few rows on GPU schedules (or when asked).
    pub fn effective(self, ctx: &crate::Context, rows_x: usize, shared_w: bool) -> GemmSchedule {
        let gemv = match self {
            GemmSchedule::Gemv => true,
            GemmSchedule::Auto => !ctx.cpu_schedules(),
            _ => false,
        } && shared_w
            && rows_x <= GEMV_MAX_ROWS;
        if gemv {
            GemmSchedule::Gemv
        } else if self == GemmSchedule::Gemv {
            GemmSchedule::Tiled.resolve(ctx)
        } else {
            self.resolve(ctx)
        }
    }
    /// Whether the schedule reads a transposed W (`Direct`, `DirectSubgroup`).
    pub fn is_direct(self) -> bool {
        matches!(self, GemmSchedule::Direct | GemmSchedule::DirectSubgroup)
    }
}

/// Output tile of the GPU GEMM (`shaders/gemm_t*.wgsl`): rows of x × rows of W per 256-lane
/// workgroup, each lane an (rows / 16) × (columns / 16) register block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Tile {
    T64x64,
    T128x64,
    T128x128,
    /// Tensor cores: 64 × 64 tiles of 16 × 16 × 16 cooperative matrices (`gemm_coop16.wgsl`).
    Coop16,
    /// Tensor cores: 64 × 64 tiles of 8 × 8 × 8 cooperative matrices (Apple's simdgroup
    /// matrices; `gemm_coop8.wgsl`).
    Coop8,
}

impl Tile {
    pub const ALL: [Tile; 5] = [
        Tile::T64x64,
        Tile::T128x64,
        Tile::T128x128,
        Tile::Coop16,
        Tile::Coop8,
    ];

    /// (rows of y, columns of y) per workgroup.
    pub fn dims(self) -> (usize, usize) {
        match self {
            Tile::T64x64 | Tile::Coop16 | Tile::Coop8 => (64, 64),
            Tile::T128x64 => (128, 64),
            Tile::T128x128 => (128, 128),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Tile::T64x64 => "64x64",
            Tile::T128x64 => "128x64",
            Tile::T128x128 => "128x128",
            Tile::Coop16 => "coop16",
            Tile::Coop8 => "coop8",
        }
    }

    /// The cooperative-matrix edge of a tensor-core tile.
    pub fn coop_size(self) -> Option<usize> {
        match self {
            Tile::Coop16 => Some(16),
            Tile::Coop8 => Some(8),
            _ => None,
        }
    }

    pub fn entry(self) -> &'static str {
        if self.coop_size().is_some() {
            "gemm_coop"
        } else {
            "gemm_tiled"
        }
    }

    /// Whether this tile can run `[b, m, k] · [n, k]ᵀ` in `dtype` on `ctx`, and if not, why. The
    /// register-blocked tiles run anything; the tensor-core tiles need the device's cooperative
    /// matrices of their size for `dtype` (f32 accumulation), subgroups, 17 KiB of workgroup
    /// memory, and M, N, K multiples of their edge.
    pub fn usable(
        self,
        ctx: &crate::Context,
        dtype: crate::DType,
        m: usize,
        n: usize,
        k: usize,
    ) -> Result<()> {
        let Some(cs) = self.coop_size() else {
            return Ok(());
        };
        let what = format!("the {} tensor-core GEMM tile in {dtype:?}", self.name());
        if !ctx.has_coop_matrix(cs as u32, dtype) || !ctx.subgroups_enabled() {
            return Err(Error::MissingFeature {
                what: format!(
                    "{what} ({cs}×{cs}×{cs} {dtype:?} inputs, f32 accumulator, subgroups)"
                ),
                feature: "EXPERIMENTAL_COOPERATIVE_MATRIX",
            });
        }
        let need = (4096 + cs * cs) * 4;
        let have = ctx.limits().max_compute_workgroup_storage_size as usize;
        if have < need {
            return Err(Error::LimitExceeded {
                what: format!("{what}: workgroup memory"),
                requested: need as u64,
                limit_name: "max_compute_workgroup_storage_size",
                limit: have as u64,
            });
        }
        if ![m, n, k].iter().all(|v| v.is_multiple_of(cs)) {
            return Err(Error::shape(
                "gemm",
                format!("{what} needs M, N and K multiples of {cs}; got {m}, {n}, {k}"),
            ));
        }
        Ok(())
    }

    pub fn parse(s: &str) -> Option<Tile> {
        Tile::ALL.into_iter().find(|t| t.name() == s)
    }

    /// The kernel file: vec4 loads when K is a multiple of 4.
    pub fn file(self, vec4: bool) -> &'static str {
        match (self, vec4) {
            (Tile::Coop16, _) => "gemm_coop16.wgsl",
            (Tile::Coop8, _) => "gemm_coop8.wgsl",
            (_, false) => "gemm_tiled.wgsl",
            (_, true) => "gemm_tiled_v4.wgsl",
        }
    }

    /// The pipeline of this tile: the register-blocked tiles are one kernel with the shape as
    /// override constants (BM × BN), the tensor-core tiles a file each.
    pub fn key(self, vec4: bool, dtype: DType) -> KernelKey {
        let key = KernelKey::new(self.file(vec4), self.entry(), dtype);
        if self.coop_size().is_some() {
            return key;
        }
        let (bm, bn) = self.dims();
        key.with("BM", bm as f64).with("BN", bn as f64)
    }

    /// Workgroups of a `[b, m, k] · [n, k]ᵀ` product with this tile.
    pub fn workgroups(self, b: usize, m: usize, n: usize) -> usize {
        let (bm, bn) = self.dims();
        b * m.div_ceil(bm) * n.div_ceil(bn)
    }

    /// Without a tuned choice: the largest tile that still gives 256 workgroups or more (a big
    /// GPU has over 100 compute units, each wanting two or more workgroups in flight), else the
    /// one with the most workgroups. Larger tiles read each operand fewer times (x once per BN
    /// columns of y, W once per BM rows) and do more multiply-adds per workgroup-memory read.
    pub fn default_for(b: usize, m: usize, n: usize) -> Tile {
        [Tile::T128x128, Tile::T128x64]
            .into_iter()
            .find(|t| t.workgroups(b, m, n) >= 256)
            .unwrap_or(Tile::T64x64)
    }
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    m: u32,
    n: u32,
    k: u32,
    x_bstride: u32,
    w_bstride: u32,
    y_bstride: u32,
    w_off: u32,
    w_ld: u32,
    flags: u32,
    z_off: u32,
    z_ld: u32,
    eps: f32,
}

/// Work folded into a product (decode steps: fewer dispatches).
#[derive(Clone, Copy, Default)]
pub struct Fused<'a> {
    /// `RMSNorm(x)·w` (weight `[K]`, epsilon) in place of x: a layer's input norm.
    pub norm: Option<(&'a Tensor, f32)>,
    /// `y = residual + x·Wᵀ`; the residual has y's shape.
    pub residual: Option<&'a Tensor>,
    /// `x ⊙ sigmoid(z)` in place of x, z read from a slice: element `offset + row·ld + k` of the
    /// tensor (a part of a fused projection's output, read in place).
    pub gate: Option<Slice<'a>>,
}

/// A column range of a row-major tensor, read in place: element `offset + row·ld + i`.
#[derive(Clone, Copy)]
pub struct Slice<'a> {
    pub tensor: &'a Tensor,
    pub offset: usize,
    pub ld: usize,
}

/// `y = x · Wᵀ` for `x [..., K]` and `w [N, K]`: the Linear layer. Returns `[..., N]`.
pub fn linear(rec: &mut Recording, x: &Tensor, w: &Tensor) -> Result<Tensor> {
    let n = w.shape().first().copied().unwrap_or(0);
    linear_impl(rec, x, w, None, 0..n, Fused::default())
}

fn linear_impl(
    rec: &mut Recording,
    x: &Tensor,
    w: &Tensor,
    wt: Option<&Tensor>,
    rows: Range<usize>,
    fused: Fused,
) -> Result<Tensor> {
    if x.shape().is_empty() || w.shape().len() != 2 {
        return Err(Error::shape(
            "linear",
            format!(
                "need x [..., K] and w [N, K], got x {:?}, w {:?}",
                x.shape(),
                w.shape()
            ),
        ));
    }
    let k = x.last_dim();
    let m = x.numel() / k.max(1);
    let x3 = x.reshape(&[1, m, k])?;
    let mut shape = x.shape().to_vec();
    *shape.last_mut().unwrap() = rows.len();
    let residual = fused
        .residual
        .map(|r| r.reshape(&[1, m, rows.len()]))
        .transpose()?;
    let fused = Fused {
        residual: residual.as_ref(),
        ..fused
    };
    let y = gemm_impl(rec, &x3, w, wt, rows, GemmSchedule::Auto, fused)?;
    y.reshape(&shape)
}

/// Batched `y[b] = x[b] · W[b]ᵀ` for `x [B, M, K]` and `w [N, K]` (shared) or `[B, N, K]`. Returns `[B, M, N]`.
pub fn gemm(rec: &mut Recording, x: &Tensor, w: &Tensor) -> Result<Tensor> {
    gemm_with(rec, x, w, GemmSchedule::Auto)
}

/// [`gemm`] with an explicit schedule.
pub fn gemm_with(
    rec: &mut Recording,
    x: &Tensor,
    w: &Tensor,
    schedule: GemmSchedule,
) -> Result<Tensor> {
    let n = w.shape().iter().rev().nth(1).copied().unwrap_or(0);
    gemm_impl(rec, x, w, None, 0..n, schedule, Fused::default())
}

/// A Linear layer's weight `[out, in]`, prepared once for this adapter's GEMM schedule: where
/// the direct schedule runs (CPU adapters), Wᵀ is made at construction instead of on every call,
/// which matters for decode steps (few rows of x, the same W every step). A layer keeps its
/// projections as one concatenated weight; [`Linear::rows`] gives a block of its outputs without
/// a copy. A weight larger than one storage binding is kept as blocks of rows that each fit
/// (one product per block, placed in its columns of y), and an x or y larger than one binding is
/// processed in blocks of rows ([`super::shards::row_blocks`]).
#[derive(Clone)]
pub struct Linear {
    parts: Vec<Part>,
    out: usize,
}

/// Outputs `first … first + rows.len() − 1` of a Linear: rows `rows` of `w`.
#[derive(Clone)]
struct Part {
    first: usize,
    w: Tensor,
    wt: Option<Tensor>,
    rows: Range<usize>,
}

impl Part {
    fn new(ctx: &crate::Context, first: usize, w: Tensor) -> Result<Part> {
        let direct = GemmSchedule::Auto.resolve(ctx).is_direct() && w.shape()[1].is_multiple_of(4);
        let wt = if direct {
            Some(ctx.run(|rec| super::transpose::transpose_padded(rec, &w, 4))?)
        } else {
            None
        };
        let rows = 0..w.shape()[0];
        Ok(Part { first, w, wt, rows })
    }
}

impl Linear {
    pub fn new(ctx: &crate::Context, w: Tensor) -> Result<Linear> {
        if w.shape().len() != 2 {
            return Err(Error::shape(
                "linear",
                format!("weight must be [out, in], got {:?}", w.shape()),
            ));
        }
        let (n, k) = (w.shape()[0], w.shape()[1]);
        if w.padded_bytes() <= ctx.binding_limit() {
            return Ok(Linear {
                parts: vec![Part::new(ctx, 0, w)?],
                out: n,
            });
        }
        // Copied into blocks that each fit one binding; `w` itself is freed when the caller drops it.
        let blocks = super::shards::RowShards::build(ctx, n, k, w.dtype(), |r| {
            let t = ctx.alloc(&[r.len(), k], w.dtype())?;
            ctx.run(|rec| rec.copy_region(&w, (r.start * k) as u64, &t, 0, (r.len() * k) as u64))?;
            Ok(t)
        })?;
        Linear::from_blocks(ctx, blocks.blocks())
    }

    /// The Linear whose weight is the row blocks `(first row, [n, in])`, in order (a tied LM head
    /// shares the embedding table's blocks).
    pub fn from_blocks(ctx: &crate::Context, blocks: &[(usize, Tensor)]) -> Result<Linear> {
        let mut parts = Vec::with_capacity(blocks.len());
        let mut next = 0;
        for (first, w) in blocks {
            let fits = w.shape().len() == 2
                && *first == next
                && w.shape()[1] == blocks[0].1.shape()[1]
                && w.dtype() == blocks[0].1.dtype();
            if !fits {
                return Err(Error::shape(
                    "linear",
                    format!(
                        "weight block {:?} {:?} at row {first} does not continue the blocks \
                         before it (next row {next})",
                        w.dtype(),
                        w.shape()
                    ),
                ));
            }
            next += w.shape()[0];
            parts.push(Part::new(ctx, *first, w.clone())?);
        }
        Ok(Linear { parts, out: next })
    }

    /// Outputs `range` of this weight (rows of W) as a Linear of its own, sharing the prepared
    /// weight (the direct schedules read a block from a multiple of 4 in place; others run tiled).
    pub fn rows(&self, range: Range<usize>) -> Result<Linear> {
        if range.start > range.end || range.end > self.out {
            return Err(Error::invalid(
                "linear",
                format!(
                    "rows {range:?} are not a block of this weight's {} outputs",
                    self.out
                ),
            ));
        }
        let parts = self
            .parts
            .iter()
            .filter_map(|p| {
                let (lo, hi) = (
                    p.first.max(range.start),
                    (p.first + p.rows.len()).min(range.end),
                );
                (lo < hi).then(|| Part {
                    first: lo - range.start,
                    rows: p.rows.start + lo - p.first..p.rows.start + hi - p.first,
                    ..p.clone()
                })
            })
            .collect();
        Ok(Linear {
            parts,
            out: range.len(),
        })
    }
    /// Output features.
    pub fn out_features(&self) -> usize {
        self.out
    }
    /// Weight blocks (1 unless the weight is larger than one binding).
    pub fn blocks(&self) -> usize {
        self.parts.len()
    }
    /// `y = x · Wᵀ` for `x [..., in]`, returning `[..., out]`.
    pub fn forward(&self, rec: &mut Recording, x: &Tensor) -> Result<Tensor> {
        self.forward_fused(rec, x, Fused::default())
    }
    /// [`Linear::forward`] with a residual and/or an input gate folded into the product where
    /// its kernel takes them (few rows of x), else applied by separate maps.
    pub fn forward_fused(&self, rec: &mut Recording, x: &Tensor, fused: Fused) -> Result<Tensor> {
        let k = x.last_dim();
        let m = x.numel() / k.max(1);
        let width = k.max(self.out);
        let per = super::shards::rows_per_binding(rec.context(), width, x.dtype());
        if m <= per {
            return self.forward_rows(rec, x, fused);
        }
        let mut shape = x.shape().to_vec();
        *shape.last_mut().unwrap_or(&mut 0) = self.out;
        let x2 = x.reshape(&[m, k])?;
        let residual = fused
            .residual
            .map(|r| r.reshape(&[m, self.out]))
            .transpose()?;
        let y = super::shards::row_blocks(rec, &x2, self.out, per, |rec, r, xb| {
            let rb = match &residual {
                Some(res) => Some(super::shards::copy_rows(rec, res, r.clone())?),
                None => None,
            };
            let gate = fused.gate.map(|g| Slice {
                offset: g.offset + r.start * g.ld,
                ..g
            });
            let f = Fused {
                norm: fused.norm,
                residual: rb.as_ref(),
                gate,
            };
            self.forward_rows(rec, xb, f)
        })?;
        y.reshape(&shape)
    }

    /// `forward_fused` for an x and y within one binding: one product per weight block.
    fn forward_rows(&self, rec: &mut Recording, x: &Tensor, fused: Fused) -> Result<Tensor> {
        if let [p] = self.parts.as_slice() {
            return linear_impl(rec, x, &p.w, p.wt.as_ref(), p.rows.clone(), fused);
        }
        let k = x.last_dim();
        let m = x.numel() / k.max(1);
        let mut shape = x.shape().to_vec();
        *shape.last_mut().unwrap_or(&mut 0) = self.out;
        // The folds apply to all of x or y; with several blocks they run once, as maps.
        let mut x = x.reshape(&[m, k])?;
        if let Some((nw, eps)) = fused.norm {
            x = super::norm::rmsnorm(rec, &x, nw, eps)?;
        }
        if let Some(g) = &fused.gate {
            x = gate_input(rec, &x, g, m, k)?;
        }
        let y = rec.context().alloc(&[m, self.out], x.dtype())?;
        for p in &self.parts {
            let part = linear_impl(
                rec,
                &x,
                &p.w,
                p.wt.as_ref(),
                p.rows.clone(),
                Fused::default(),
            )?;
            super::shards::place_columns(rec, &part, &y, p.first)?;
        }
        let y = match fused.residual {
            Some(r) => super::elementwise::add(rec, &y, &r.reshape(&[m, self.out])?)?,
            None => y,
        };
        y.reshape(&shape)
    }
}

/// `x ⊙ sigmoid(z)` with z's rows gathered from the slice `g` (`rows` rows of `k`).
fn gate_input(rec: &mut Recording, x: &Tensor, g: &Slice, rows: usize, k: usize) -> Result<Tensor> {
    let z = rec.context().alloc(x.shape(), x.dtype())?;
    for r in 0..rows {
        rec.copy_region(
            g.tensor,
            (g.offset + r * g.ld) as u64,
            &z,
            (r * k) as u64,
            k as u64,
        )?;
    }
    super::elementwise::sigmoid_mul(rec, &z, x)
}

/// `y = x · W[rows]ᵀ` with an optional prepared Wᵀ (`transpose_padded(w, 4)`, what [`Linear`]
/// keeps) for the direct schedules; without one they transpose W first.
pub(crate) fn gemm_impl(
    rec: &mut Recording,
    x: &Tensor,
    w: &Tensor,
    wt: Option<&Tensor>,
    rows: Range<usize>,
    schedule: GemmSchedule,
    fused: Fused,
) -> Result<Tensor> {
    let dtype = same_dtype("gemm", &[x, w])?;
    let (xs, ws) = (x.shape(), w.shape());
    if xs.len() != 3 {
        return Err(Error::shape(
            "gemm",
            format!("x must be [batch, M, K], got {xs:?}"),
        ));
    }
    let (b, m, k) = (xs[0], xs[1], xs[2]);
    let (wb, n_total, wk) = match ws.len() {
        2 => (1, ws[0], ws[1]),
        3 => (ws[0], ws[1], ws[2]),
        _ => {
            return Err(Error::shape(
                "gemm",
                format!("w must be [N, K] or [batch, N, K], got {ws:?}"),
            ))
        }
    };
    if wk != k {
        return Err(Error::shape(
            "gemm",
            format!("inner dimensions differ: x {xs:?} has K={k}, w {ws:?} has K={wk}"),
        ));
    }
    if wb != 1 && wb != b {
        return Err(Error::shape(
            "gemm",
            format!("w batch {wb} must be 1 or equal x batch {b}"),
        ));
    }
    if rows.end > n_total || rows.start > rows.end {
        return Err(Error::shape(
            "gemm",
            format!("rows {rows:?} of a weight with {n_total} rows"),
        ));
    }
    let n = rows.len();
    let ctx = rec.context().clone();
    if let Some(r) = fused.residual {
        if r.shape() != [b, m, n] || r.dtype() != dtype {
            return Err(Error::shape(
                "gemm",
                format!(
                    "the residual must be {dtype:?} [{b}, {m}, {n}], got {:?} {:?}",
                    r.dtype(),
                    r.shape()
                ),
            ));
        }
    }
    if let Some(g) = &fused.gate {
        let last = g.offset + (b * m).saturating_sub(1) * g.ld + k;
        if g.tensor.dtype() != dtype || last > g.tensor.numel() || (b * m > 1 && g.ld < k) {
            return Err(Error::shape(
                "gemm",
                format!(
                    "the gate slice (offset {}, row stride {}) does not fit its {:?} tensor {:?} for \
                     {} rows of {k}",
                    g.offset,
                    g.ld,
                    g.tensor.dtype(),
                    g.tensor.shape(),
                    b * m
                ),
            ));
        }
    }
    let y = ctx.alloc(&[b, m, n], dtype)?;
    if b * m * n == 0 {
        return Ok(y);
    }
    if k == 0 {
        return Err(Error::shape(
            "gemm",
            "K = 0: the product is empty; fill zeros instead",
        ));
    }
    let batch = u32::try_from(b)
        .ok()
        .filter(|&b| b <= ctx.limits().max_compute_workgroups_per_dimension);
    let batch = batch.ok_or_else(|| Error::LimitExceeded {
        what: format!("gemm batch {b}"),
        requested: b as u64,
        limit_name: "max_compute_workgroups_per_dimension",
        limit: ctx.limits().max_compute_workgroups_per_dimension as u64,
    })?;
    let rows_x = b * m;
    let schedule = schedule.effective(&ctx, rows_x, wb == 1);
    let gemv = schedule == GemmSchedule::Gemv;
    // The direct schedules read Wᵀ's columns as vec4s from the block's first column.
    let direct = schedule.is_direct() && k % 4 == 0 && rows.start.is_multiple_of(4);
    // What the chosen kernel folds in; the rest runs as maps after it.
    let row_kernel = direct && m < 8;
    let aligned = |g: &Slice| g.offset.is_multiple_of(4) && g.ld.is_multiple_of(4);
    let gate_folded = gemv || (row_kernel && fused.gate.as_ref().is_some_and(aligned));
    // The norm folds in where the gate does (the kernels that take one row of x at a time).
    let norm_folded = gemv || row_kernel;
    let normed;
    let x = match (fused.norm, norm_folded) {
        (Some((nw, eps)), false) => {
            normed = super::norm::rmsnorm(rec, x, nw, eps)?;
            &normed
        }
        _ => x,
    };
    if let (Some((nw, eps)), true) = (fused.norm, norm_folded) {
        if nw.shape() != [k] || nw.dtype() != dtype || !(eps >= 0.0 && eps.is_finite()) {
            return Err(Error::shape(
                "gemm",
                format!("the norm weight must be {dtype:?} [{k}] with a finite eps ≥ 0"),
            ));
        }
    }
    let x_in;
    let x = match (&fused.gate, gate_folded) {
        (Some(g), false) => {
            // Unfolded: gather the gate's rows and apply sigmoid(z) ⊙ x first.
            x_in = gate_input(rec, x, g, b * m, k)?;
            &x_in
        }
        _ => x,
    };
    let placeholder = ctx.placeholder()?;
    let residual = fused.residual.unwrap_or(&placeholder);
    let gate = match (&fused.gate, gate_folded) {
        (Some(g), true) => Some(*g),
        _ => None,
    };
    let z = gate.map_or(&placeholder, |g| g.tensor);
    let u32_ = |v: usize| check_u32("gemm", v);
    let mut params = Params {
        m: u32_(m)?,
        n: u32_(n)?,
        k: u32_(k)?,
        x_bstride: u32_(m * k)?,
        w_bstride: if wb == 1 { 0 } else { u32_(n_total * k)? },
        y_bstride: u32_(m * n)?,
        w_off: u32_(rows.start * k)?,
        w_ld: u32_(k)?,
        flags: u32::from(fused.residual.is_some())
            | (u32::from(gate.is_some()) << 1)
            | (u32::from(norm_folded && fused.norm.is_some()) << 2),
        z_off: u32_(gate.map_or(0, |g| g.offset))?,
        z_ld: u32_(gate.map_or(0, |g| g.ld))?,
        eps: fused.norm.map_or(0.0, |n| n.1),
    };
    let nw = match (fused.norm, norm_folded) {
        (Some((w, _)), true) => w,
        _ => &placeholder,
    };
    if gemv {
        // All rows of x together (W is shared): one pass over W.
        params.m = u32_(rows_x)?;
        let (file, entry) = match (k % 4 == 0, ctx.subgroups_enabled()) {
            (true, true) => ("gemv4_sg.wgsl", "gemv_sg"),
            (true, false) => ("gemv4.wgsl", "gemv_wg"),
            (false, true) => ("gemv_sg.wgsl", "gemv_sg"),
            (false, false) => ("gemv.wgsl", "gemv_wg"),
        };
        // gemv_sg: four rows of W per subgroup, each load of x serving all four, so a 64-lane
        // workgroup takes four per subgroup: 8 rows at 32 lanes (NVIDIA, Apple), 4 at 64 (AMD's
        // wave64), 32 at 8 (llvmpipe). gemv_wg: 8, in passes of up to 16 / MR rows.
        let rows_per_group = if ctx.subgroups_enabled() {
            let lanes = ctx.adapter_info().subgroup_min_size.clamp(1, 64) as usize;
            (4 * 64 / lanes).clamp(4, 32)
        } else {
            8
        };
        let kernel = ctx.kernel(
            &KernelKey::new(file, entry, dtype)
                .with("MR", rows_x as f64)
                .with("ROWS", rows_per_group as f64),
        )?;
        let groups = super::grid_1d(&ctx, "gemv", n.div_ceil(rows_per_group) as u64)?;
        rec.dispatch(
            &kernel,
            bytemuck::bytes_of(&params),
            &[x, w, &y, residual, z, nw],
            groups,
        )?;
    } else if !direct {
        let tile = match schedule {
            GemmSchedule::TiledAs(t) => {
                t.usable(&ctx, dtype, m, n, k)?;
                t
            }
            _ => crate::tune::gemm_tile(&ctx, dtype, b, m, n, k),
        };
        let (bm, bn) = tile.dims();
        let kernel = ctx.kernel(&tile.key(k % 4 == 0, dtype))?;
        let groups = [n.div_ceil(bn) as u64, m.div_ceil(bm) as u64];
        let limit = ctx.limits().max_compute_workgroups_per_dimension as u64;
        if groups.iter().any(|&g| g > limit) {
            return Err(Error::LimitExceeded {
                what: format!("gemm [{m}, {k}]·[{n}, {k}]ᵀ in {} tiles", tile.name()),
                requested: groups[0].max(groups[1]),
                limit_name: "max_compute_workgroups_per_dimension",
                limit,
            });
        }
        let groups = [groups[0] as u32, groups[1] as u32, batch];
        rec.dispatch(
            &kernel,
            bytemuck::bytes_of(&params),
            &[x, w, &y, residual],
            groups,
        )?;
    } else {
        // The transpose costs N·K reads and writes against M·N·K multiply-adds; a `Linear` has it made once.
        let made;
        let wt = match wt {
            Some(t) => t,
            None => {
                made = super::transpose::transpose_padded(rec, w, 4)?;
                &made
            }
        };
        let ld = n_total.div_ceil(4) * 4;
        params.w_ld = u32_(ld)?;
        params.w_off = u32_(rows.start)?;
        params.w_bstride = if wb == 1 { 0 } else { u32_(k * ld)? };
        // Rows and columns per lane's block: 8×4 (16×8 with subgroups), or 1×4 for M < 8
        // (decode), where a block of rows would compute rows to drop.
        let (file, entry, rows_per, cols) = if row_kernel {
            ("gemm_direct.wgsl", "gemm_direct_row", 1, 4)
        } else if schedule == GemmSchedule::DirectSubgroup {
            // Two column blocks per lane while a workgroup's share of Wᵀ (K × 512 columns at most)
            // stays within about 2 MiB: 10–20% faster up to K = 1024, half as fast at K = 2048.
            let cols = if k <= 1024 { 8 } else { 4 };
            ("gemm_direct_sg.wgsl", "gemm_direct_sg", 16, cols)
        } else {
            ("gemm_direct.wgsl", "gemm_direct", 8, 4)
        };
        // DIRECT_WG lanes × `cols` columns by `rows_per` rows per workgroup: up to 64 lanes, as
        // few (a multiple of 8, the subgroup) as cover N in that many column groups, so that no
        // lane computes columns past N (at N = 128, q and k of a RAT layer, half of a 64-lane
        // workgroup did; at N = 768, 512 + 256 columns left a quarter of the lanes idle).
        let col_groups = n.div_ceil(cols * 64);
        let lanes = n.div_ceil(cols * col_groups).next_multiple_of(8);
        let mut key = KernelKey::new(file, entry, dtype).with("DIRECT_WG", lanes as f64);
        if entry == "gemm_direct_sg" {
            key = key.with("BLOCKS", (cols / 4) as f64);
        }
        let kernel = ctx.kernel(&key)?;
        let row_groups = m.div_ceil(rows_per) as u64;
        let limit = ctx.limits().max_compute_workgroups_per_dimension as u64;
        if row_groups > limit {
            return Err(Error::LimitExceeded {
                what: format!("gemm with {m} rows ({rows_per} per workgroup)"),
                requested: row_groups,
                limit_name: "max_compute_workgroups_per_dimension",
                limit,
            });
        }
        // Row blocks along x, the fastest-varying grid dimension (see gemm_direct.wgsl).
        let groups = [row_groups as u32, n.div_ceil(cols * lanes) as u32, batch];
        debug_assert!(lanes <= 64 && n.div_ceil(cols * lanes) == col_groups);
        if row_kernel {
            rec.dispatch(
                &kernel,
                bytemuck::bytes_of(&params),
                &[x, wt, &y, residual, z, nw],
                groups,
            )?;
        } else {
            // The many-row direct kernels store without the residual (see store_row_plain in
            // shaders/common/gemm_io.wgsl); it is added in a pass of its own.
            params.flags &= !1;
            rec.dispatch(&kernel, bytemuck::bytes_of(&params), &[x, wt, &y], groups)?;
            if let Some(r) = fused.residual {
                return super::elementwise::add(rec, &y, r);
            }
        }
    }
    Ok(y)
}

/// FLOPs of a GEMM (multiply and add counted separately).
pub fn flops(b: usize, m: usize, n: usize, k: usize) -> f64 {
    2.0 * b as f64 * m as f64 * n as f64 * k as f64
}
