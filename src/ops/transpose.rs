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

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct SplitParams {
    b: u32,
    t: u32,
    h: u32,
    dh4: u32,
}

/// `[B, T, H·dh] → [B, H, T, dh]`: each head's rows contiguous (shaders/split_heads.wgsl).
/// Needs dh % 4 == 0.
pub fn split_heads(rec: &mut Recording, x: &Tensor, heads: usize) -> Result<Tensor> {
    let s = x.shape();
    if s.len() != 3
        || heads == 0
        || !s[2].is_multiple_of(heads)
        || !(s[2] / heads).is_multiple_of(4)
    {
        return Err(Error::shape(
            "split_heads",
            format!("need [B, T, H·dh] with dh a multiple of 4 for {heads} heads, got {s:?}"),
        ));
    }
    let (b, t, dh) = (s[0], s[1], s[2] / heads);
    let ctx = rec.context().clone();
    let y = ctx.alloc(&[b, heads, t, dh], x.dtype())?;
    if x.numel() == 0 {
        return Ok(y);
    }
    let kernel = ctx.kernel(&KernelKey::new(
        "split_heads.wgsl",
        "split_heads",
        x.dtype(),
    ))?;
    let params = SplitParams {
        b: check_u32("split_heads", b)?,
        t: check_u32("split_heads", t)?,
        h: check_u32("split_heads", heads)?,
        dh4: (dh / 4) as u32,
    };
    let groups = super::grid_1d(&ctx, "split_heads", (x.numel() as u64 / 4).div_ceil(64))?;
    rec.dispatch(&kernel, bytemuck::bytes_of(&params), &[x, &y], groups)?;
    Ok(y)
}
