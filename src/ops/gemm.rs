//! GEMM `y = x · Wᵀ` in the Linear layout of the reference implementations (weight `[out, in]`).

use crate::error::{Error, Result};
use crate::kernels::KernelKey;
use crate::record::Recording;
use crate::tensor::Tensor;

use super::{check_u32, same_dtype};

/// Which schedule of `shaders/gemm.wgsl` to run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum GemmSchedule {
    /// `DirectSubgroup` on CPU adapters (lavapipe, llvmpipe, WARP), `Tiled` on GPUs.
    #[default]
    Auto,
    /// Workgroup-memory tiling with 4×4 register blocks (the GPU schedule).
    Tiled,
    /// Register blocks straight from storage, no barriers, over a transposed copy of W (the
    /// CPU-adapter schedule: contiguous loads across SIMD lanes). Needs K % 4 == 0; other K run tiled.
    Direct,
    /// `Direct` with each x row loaded by one lane and handed to the others by subgroup
    /// broadcast, 16 rows per workgroup and 8 columns per lane (5× fewer storage loads per
    /// multiply-add; 2.2–3× faster at 16384×256×256 on lavapipe). Needs subgroups of exactly 8 lanes; elsewhere it runs `Direct`.
    DirectSubgroup,
}

impl GemmSchedule {
    /// The concrete schedule `Auto` stands for on this adapter.
    pub fn resolve(self, ctx: &crate::Context) -> GemmSchedule {
        match self {
            GemmSchedule::Auto if ctx.cpu_schedules() => GemmSchedule::DirectSubgroup.resolve(ctx),
            GemmSchedule::Auto => GemmSchedule::Tiled,
            GemmSchedule::DirectSubgroup if ctx.subgroup_size() != Some(8) => GemmSchedule::Direct,
            s => s,
        }
    }
    /// Whether the schedule reads a transposed W (`Direct`, `DirectSubgroup`).
    pub fn is_direct(self) -> bool {
        matches!(self, GemmSchedule::Direct | GemmSchedule::DirectSubgroup)
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
    _p: [u32; 2],
}

/// `y = x · Wᵀ` for `x [..., K]` and `w [N, K]`: the Linear layer. Returns `[..., N]`.
pub fn linear(rec: &mut Recording, x: &Tensor, w: &Tensor) -> Result<Tensor> {
    linear_impl(rec, x, w, None)
}

fn linear_impl(rec: &mut Recording, x: &Tensor, w: &Tensor, wt: Option<&Tensor>) -> Result<Tensor> {
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
    let y = gemm_impl(rec, &x.reshape(&[1, m, k])?, w, wt, GemmSchedule::Auto)?;
    let mut shape = x.shape().to_vec();
    *shape.last_mut().unwrap() = w.shape()[0];
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
    gemm_impl(rec, x, w, None, schedule)
}

/// A Linear layer's weight `[out, in]`, prepared once for this adapter's GEMM schedule: where
/// the direct schedule runs (CPU adapters), Wᵀ is made at construction instead of on every call,
/// which matters for decode steps (few rows of x, the same W every step).
pub struct Linear {
    w: Tensor,
    wt: Option<Tensor>,
}

impl Linear {
    pub fn new(ctx: &crate::Context, w: Tensor) -> Result<Linear> {
        if w.shape().len() != 2 {
            return Err(Error::shape(
                "linear",
                format!("weight must be [out, in], got {:?}", w.shape()),
            ));
        }
        let direct = GemmSchedule::Auto.resolve(ctx).is_direct() && w.shape()[1].is_multiple_of(4);
        let wt = if direct {
            Some(ctx.run(|rec| super::transpose::transpose_padded(rec, &w, 4))?)
        } else {
            None
        };
        Ok(Linear { w, wt })
    }
    pub fn weight(&self) -> &Tensor {
        &self.w
    }
    /// `y = x · Wᵀ` for `x [..., in]`, returning `[..., out]`.
    pub fn forward(&self, rec: &mut Recording, x: &Tensor) -> Result<Tensor> {
        linear_impl(rec, x, &self.w, self.wt.as_ref())
    }
}

/// `y = x · Wᵀ` with an optional prepared Wᵀ (`transpose_padded(w, 4)`, what [`Linear`] keeps) for
/// the direct schedules; without one they transpose W first.
pub(crate) fn gemm_impl(
    rec: &mut Recording,
    x: &Tensor,
    w: &Tensor,
    wt: Option<&Tensor>,
    schedule: GemmSchedule,
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
    let (wb, n, wk) = match ws.len() {
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
    let ctx = rec.context().clone();
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
    let params = Params {
        m: check_u32("gemm", m)?,
        n: check_u32("gemm", n)?,
        k: check_u32("gemm", k)?,
        x_bstride: check_u32("gemm", m * k)?,
        w_bstride: if wb == 1 {
            0
        } else {
            check_u32("gemm", n * k)?
        },
        y_bstride: check_u32("gemm", m * n)?,
        _p: [0; 2],
    };
    let batch = u32::try_from(b)
        .ok()
        .filter(|&b| b <= ctx.limits().max_compute_workgroups_per_dimension);
    let batch = batch.ok_or_else(|| Error::LimitExceeded {
        what: format!("gemm batch {b}"),
        requested: b as u64,
        limit_name: "max_compute_workgroups_per_dimension",
        limit: ctx.limits().max_compute_workgroups_per_dimension as u64,
    })?;
    // The direct schedule reads x as vec4 along K.
    let schedule = schedule.resolve(&ctx);
    if schedule == GemmSchedule::Tiled || k % 4 != 0 {
        let kernel = ctx.kernel(&KernelKey::new("gemm.wgsl", "gemm_tiled", dtype))?;
        let groups = [n.div_ceil(64) as u32, m.div_ceil(64) as u32, batch];
        rec.dispatch(&kernel, bytemuck::bytes_of(&params), &[x, w, &y], groups)?;
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
        let params = Params {
            w_bstride: if wb == 1 {
                0
            } else {
                check_u32("gemm", k * n.div_ceil(4) * 4)?
            },
            ..params
        };
        // Rows and columns per lane's block: 8×4 (16×8 with subgroups), or 1×4 for M < 8
        // (decode), where a block of rows would compute rows to drop.
        let (file, entry, rows, cols) = if m < 8 {
            ("gemm_direct.wgsl", "gemm_direct_row", 1, 4)
        } else if schedule == GemmSchedule::DirectSubgroup {
            // Two column blocks per lane while a workgroup's share of Wᵀ (K × 512 columns at most)
            // stays within about 2 MiB: 10–20% faster up to K = 1024, half as fast at K = 2048.
            let cols = if k <= 1024 { 8 } else { 4 };
            ("gemm_direct_sg.wgsl", "gemm_direct_sg", 16, cols)
        } else {
            ("gemm_direct.wgsl", "gemm_direct", 8, 4)
        };
        // DIRECT_WG lanes × `cols` columns by `rows` rows per workgroup: up to 64 lanes, as few
        // (a multiple of 8, the subgroup) as cover N in that many column groups, so that no lane
        // computes columns past N (at N = 128, q and k of a RAT layer, half of a 64-lane
        // workgroup did; at N = 768, 512 + 256 columns left a quarter of the lanes idle).
        let col_groups = n.div_ceil(cols * 64);
        let lanes = n.div_ceil(cols * col_groups).next_multiple_of(8);
        let mut key = KernelKey::new(file, entry, dtype).with("DIRECT_WG", lanes as f64);
        if entry == "gemm_direct_sg" {
            key = key.with("BLOCKS", (cols / 4) as f64);
        }
        let kernel = ctx.kernel(&key)?;
        let row_groups = m.div_ceil(rows) as u64;
        let limit = ctx.limits().max_compute_workgroups_per_dimension as u64;
        if row_groups > limit {
            return Err(Error::LimitExceeded {
                what: format!("gemm with {m} rows ({rows} per workgroup)"),
                requested: row_groups,
                limit_name: "max_compute_workgroups_per_dimension",
                limit,
            });
        }
        // Row blocks along x, the fastest-varying grid dimension (see gemm_direct.wgsl).
        let groups = [row_groups as u32, n.div_ceil(cols * lanes) as u32, batch];
        debug_assert!(lanes <= 64 && n.div_ceil(cols * lanes) == col_groups);
        rec.dispatch(&kernel, bytemuck::bytes_of(&params), &[x, wt, &y], groups)?;
    }
    Ok(y)
}

/// FLOPs of a GEMM (multiply and add counted separately).
pub fn flops(b: usize, m: usize, n: usize, k: usize) -> f64 {
    2.0 * b as f64 * m as f64 * n as f64 * k as f64
}
