//! RMSNorm over the last dimension (torch `nn.RMSNorm`: eps inside the square root, learned weight).

use crate::error::{Error, Result};
use crate::kernels::KernelKey;
use crate::record::Recording;
use crate::tensor::Tensor;

use super::{check_u32, grid_1d, row_workgroup, same_dtype};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    d: u32,
    eps: f32,
    _pad: u32,
}

/// `y = x / sqrt(mean(x²) + eps) ⊙ w` for `x [..., D]`, `w [D]`.
pub fn rmsnorm(rec: &mut Recording, x: &Tensor, w: &Tensor, eps: f32) -> Result<Tensor> {
    let dtype = same_dtype("rmsnorm", &[x, w])?;
    let d = x.last_dim();
    if w.shape() != [d] {
        return Err(Error::shape(
            "rmsnorm",
            format!(
                "weight must be [{d}] for x {:?}, got {:?}",
                x.shape(),
                w.shape()
            ),
        ));
    }
    if !(eps >= 0.0 && eps.is_finite()) {
        return Err(Error::invalid(
            "rmsnorm",
            format!("eps must be finite and >= 0, got {eps}"),
        ));
    }
    let ctx = rec.context().clone();
    let y = ctx.alloc(x.shape(), dtype)?;
    let rows = x.numel() / d.max(1);
    if rows == 0 || d == 0 {
        return Ok(y);
    }
    let params = Params {
        rows: check_u32("rmsnorm", rows)?,
        d: check_u32("rmsnorm", d)?,
        eps,
        _pad: 0,
    };
    // CPU adapters: a row per invocation (shaders/rmsnorm_rows.wgsl); GPUs: a workgroup per row.
    let (kernel, groups) = if ctx.cpu_schedules() && d.is_multiple_of(4) {
        let kernel = ctx.kernel(&KernelKey::new("rmsnorm_rows.wgsl", "rmsnorm_rows", dtype))?;
        (
            kernel,
            grid_1d(&ctx, "rmsnorm", (rows as u64).div_ceil(64))?,
        )
    } else {
        let wg = row_workgroup(d);
        let kernel =
            ctx.kernel(&KernelKey::new("rmsnorm.wgsl", "rmsnorm", dtype).with("WG", wg as f64))?;
        (kernel, grid_1d(&ctx, "rmsnorm", rows as u64)?)
    };
    rec.dispatch(&kernel, bytemuck::bytes_of(&params), &[x, w, &y], groups)?;
    Ok(y)
}
