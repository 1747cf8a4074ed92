//! Greedy sampling on the GPU: the argmax of each row, so only one number per sequence is read
//! back instead of a row of logits.

use crate::error::Result;
use crate::kernels::KernelKey;
use crate::record::Recording;
use crate::tensor::{DType, Tensor};

use super::{check_u32, grid_1d, row_workgroup};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    d: u32,
    _pad0: u32,
    _pad1: u32,
}

/// Index of the first maximum of every row of `x [.., d]`, as f32 values `[rows]`.
pub fn argmax(rec: &mut Recording, x: &Tensor) -> Result<Tensor> {
    let d = x.last_dim();
    let rows = x.numel() / d.max(1);
    let ctx = rec.context().clone();
    let y = ctx.alloc(&[rows], DType::F32)?;
    if rows == 0 || d == 0 {
        return Ok(y);
    }
    let wg = row_workgroup(d);
    let kernel =
        ctx.kernel(&KernelKey::new("argmax.wgsl", "argmax", x.dtype()).with("WG", wg as f64))?;
    let params = Params {
        rows: check_u32("argmax", rows)?,
        d: check_u32("argmax", d)?,
        _pad0: 0,
        _pad1: 0,
    };
    let groups = grid_1d(&ctx, "argmax", rows as u64)?;
    rec.dispatch(&kernel, bytemuck::bytes_of(&params), &[x, &y], groups)?;
    Ok(y)
}
