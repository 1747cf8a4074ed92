//! Batched 2-D transpose of the last two dimensions.

use crate::error::{Error, Result};
use crate::kernels::KernelKey;
use crate::record::Recording;
use crate::tensor::Tensor;

use super::check_u32;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    cols: u32,
    ld: u32,
    _p: u32,
}

/// `[..., R, C] → [..., C, R]`.
pub fn transpose(rec: &mut Recording, x: &Tensor) -> Result<Tensor> {
    transpose_padded(rec, x, 1)
}

/// `[..., R, C] → [..., C, R']` with `R'` = R rounded up to a multiple of `multiple`, zero-filled.
pub fn transpose_padded(rec: &mut Recording, x: &Tensor, multiple: usize) -> Result<Tensor> {
    let s = x.shape();
    if s.len() < 2 {
        return Err(Error::shape(
            "transpose",
            format!("need at least 2 dimensions, got {s:?}"),
        ));
    }
    let (r, c) = (s[s.len() - 2], s[s.len() - 1]);
    let batch = x.numel() / (r * c).max(1);
    let ld = r.div_ceil(multiple.max(1)) * multiple.max(1);
    let mut out = s.to_vec();
    let n = out.len();
    out[n - 2] = c;
    out[n - 1] = ld;
    let ctx = rec.context().clone();
    let y = ctx.alloc(&out, x.dtype())?;
    let kernel = ctx.kernel(&KernelKey::new("transpose.wgsl", "transpose", x.dtype()))?;
    let params = Params {
        rows: check_u32("transpose", r)?,
        cols: check_u32("transpose", c)?,
        ld: check_u32("transpose", ld)?,
        _p: 0,
    };
    let groups = [
        c.div_ceil(16) as u32,
        ld.div_ceil(16) as u32,
        check_u32("transpose", batch)?,
    ];
    rec.dispatch(&kernel, bytemuck::bytes_of(&params), &[x, &y], groups)?;
    Ok(y)
}
