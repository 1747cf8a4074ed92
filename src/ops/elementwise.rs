//! Elementwise activations and binary maps.

use crate::error::{Error, Result};
use crate::kernels::KernelKey;
use crate::record::Recording;
use crate::tensor::Tensor;

use super::{check_u32, grid_1d, map_workgroup, same_dtype};

/// The activations of `shaders/elementwise.wgsl` (the numbers are the shader's op codes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unary {
    Sigmoid = 0,
    Silu = 1,
    /// Exact erf form.
    Gelu = 2,
    LogSigmoid = 3,
    Softplus = 4,
}

/// [`unary`] with an f32 result whatever `x`'s storage dtype (`shaders/unary_f32.wgsl`).
pub fn unary_f32(rec: &mut Recording, x: &Tensor, op: Unary) -> Result<Tensor> {
    if x.dtype() == crate::DType::F32 {
        return unary(rec, x, op);
    }
    let y = rec.context().alloc(x.shape(), crate::DType::F32)?;
    let file = ("unary_f32.wgsl", "unary_f32");
    launch(rec, file, x.dtype(), [x.numel(), 1], op as u32, &[x, &y])?;
    Ok(y)
}

/// Binary maps; `b` is broadcast over `a` by repetition (its shape must be a suffix of `a`'s).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Binary {
    Mul = 16,
    Add = 17,
    /// sigmoid(a) · b (an output gate, one pass instead of two).
    SigmoidMul = 18,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    nb: u32,
    op: u32,
    _pad: u32,
}

/// One map over `n` lanes (values, or vec4s in the `4` files), `nb` the kernel's second count
/// (b's length, or glu's half row), with op code `op`.
fn launch(
    rec: &mut Recording,
    (file, entry): (&'static str, &'static str),
    dtype: crate::DType,
    [n, nb]: [usize; 2],
    op: u32,
    bindings: &[&Tensor],
) -> Result<()> {
    let ctx = rec.context().clone();
    let wg = map_workgroup(n);
    let kernel = ctx.kernel(&KernelKey::new(file, entry, dtype).with("WG", wg as f64))?;
    let params = Params {
        n: check_u32(entry, n)?,
        nb: check_u32(entry, nb)?,
        op,
        _pad: 0,
    };
    let groups = grid_1d(&ctx, entry, (n as u64).div_ceil(wg as u64))?;
    rec.dispatch(&kernel, bytemuck::bytes_of(&params), bindings, groups)
}

/// `y = f(x)` elementwise.
pub fn unary(rec: &mut Recording, x: &Tensor, op: Unary) -> Result<Tensor> {
    let y = rec.context().alloc(x.shape(), x.dtype())?;
    let n = x.numel();
    // vec4s where the size allows (elementwise4.wgsl).
    let (file, entry, lanes) = if n.is_multiple_of(4) {
        ("elementwise4.wgsl", "unary4", n / 4)
    } else {
        ("elementwise.wgsl", "unary", n)
    };
    launch(
        rec,
        (file, entry),
        x.dtype(),
        [lanes, 1],
        op as u32,
        &[x, &y],
    )?;
    Ok(y)
}

/// `y = a op b`, with `b` repeated over the leading dimensions of `a`.
pub fn binary(rec: &mut Recording, a: &Tensor, b: &Tensor, op: Binary) -> Result<Tensor> {
    let dtype = same_dtype("binary", &[a, b])?;
    let (sa, sb) = (a.shape(), b.shape());
    if sb.len() > sa.len() || sa[sa.len() - sb.len()..] != *sb {
        return Err(Error::shape(
            "binary",
            format!("b {sb:?} must equal a {sa:?} or a trailing part of it (b is repeated over the leading dimensions)"),
        ));
    }
    let y = rec.context().alloc(sa, dtype)?;
    let n = a.numel();
    if n == 0 {
        return Ok(y);
    }
    let nb = b.numel();
    let (file, entry, lanes, lanes_b) = if n.is_multiple_of(4) && nb.is_multiple_of(4) {
        ("elementwise4.wgsl", "binary4", n / 4, nb / 4)
    } else {
        ("elementwise.wgsl", "binary", n, nb)
    };
    launch(
        rec,
        (file, entry),
        dtype,
        [lanes, lanes_b],
        op as u32,
        &[a, b, &y],
    )?;
    Ok(y)
}

/// `act(x[..., :F]) · x[..., F:]` for `x [..., 2F]` (a fused gate/up projection): `[..., F]`.
pub fn glu(rec: &mut Recording, x: &Tensor, act: Unary) -> Result<Tensor> {
    let w = x.last_dim();
    if x.shape().is_empty() || !w.is_multiple_of(2) {
        return Err(Error::shape(
            "glu",
            format!("x must be [..., 2F], got {:?}", x.shape()),
        ));
    }
    let f = w / 2;
    let mut shape = x.shape().to_vec();
    *shape.last_mut().unwrap_or(&mut 0) = f;
    let y = rec.context().alloc(&shape, x.dtype())?;
    let n = y.numel();
    if n == 0 {
        return Ok(y);
    }
    let (file, entry, lanes, lanes_f) = if f.is_multiple_of(4) {
        ("elementwise4.wgsl", "glu4", n / 4, f / 4)
    } else {
        ("elementwise.wgsl", "glu", n, f)
    };
    launch(
        rec,
        (file, entry),
        x.dtype(),
        [lanes, lanes_f],
        act as u32,
        &[x, &y],
    )?;
    Ok(y)
}

pub fn sigmoid(rec: &mut Recording, x: &Tensor) -> Result<Tensor> {
    unary(rec, x, Unary::Sigmoid)
}
pub fn silu(rec: &mut Recording, x: &Tensor) -> Result<Tensor> {
    unary(rec, x, Unary::Silu)
}
pub fn gelu(rec: &mut Recording, x: &Tensor) -> Result<Tensor> {
    unary(rec, x, Unary::Gelu)
}
pub fn logsigmoid(rec: &mut Recording, x: &Tensor) -> Result<Tensor> {
    unary(rec, x, Unary::LogSigmoid)
}
pub fn softplus(rec: &mut Recording, x: &Tensor) -> Result<Tensor> {
    unary(rec, x, Unary::Softplus)
}
pub fn mul(rec: &mut Recording, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    binary(rec, a, b, Binary::Mul)
}
pub fn add(rec: &mut Recording, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    binary(rec, a, b, Binary::Add)
}
/// `sigmoid(a) · b`.
pub fn sigmoid_mul(rec: &mut Recording, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    binary(rec, a, b, Binary::SigmoidMul)
}
