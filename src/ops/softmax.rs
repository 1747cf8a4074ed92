//! Row softmax over the last dimension with a temperature.

use crate::error::{Error, Result};
use crate::kernels::KernelKey;
use crate::record::Recording;
use crate::tensor::Tensor;

use super::{check_u32, grid_1d, row_workgroup};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    d: u32,
    inv_temp: f32,
    _pad: u32,
}

/// `y = softmax(x / temperature)` over the last dimension of `x`.
pub fn softmax(rec: &mut Recording, x: &Tensor, temperature: f32) -> Result<Tensor> {
    if !(temperature > 0.0 && temperature.is_finite()) {
        return Err(Error::invalid(
            "softmax",
            format!("temperature must be finite and > 0, got {temperature}"),
        ));
    }
    let d = x.last_dim();
    let ctx = rec.context().clone();
    let y = ctx.alloc(x.shape(), x.dtype())?;
    let rows = x.numel() / d.max(1);
    if rows == 0 || d == 0 {
        return Ok(y);
    }
    let wg = row_workgroup(d);
    let kernel =
        ctx.kernel(&KernelKey::new("softmax.wgsl", "softmax", x.dtype()).with("WG", wg as f64))?;
    let params = Params {
        rows: check_u32("softmax", rows)?,
        d: check_u32("softmax", d)?,
        inv_temp: 1.0 / temperature,
        _pad: 0,
    };
    let groups = grid_1d(&ctx, "softmax", rows as u64)?;
    rec.dispatch(&kernel, bytemuck::bytes_of(&params), &[x, &y], groups)?;
    Ok(y)
}
