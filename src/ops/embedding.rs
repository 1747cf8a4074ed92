//! Token embedding lookup.

use crate::context::Context;
use crate::error::{Error, Result};
use crate::kernels::KernelKey;
use crate::record::Recording;
use crate::tensor::{DType, Tensor};

use super::{check_u32, grid_1d};

/// Token ids on the GPU, checked against a vocabulary size. Shape `[B, T]`.
#[derive(Clone, Debug)]
pub struct TokenIds {
    tensor: Tensor,
}

impl TokenIds {
    pub fn new(ctx: &Context, ids: &[u32], shape: &[usize], vocab: usize) -> Result<TokenIds> {
        if let Some(&bad) = ids.iter().find(|&&i| i as usize >= vocab) {
            return Err(Error::invalid(
                "embedding",
                format!("token id {bad} is outside the vocabulary of {vocab}"),
            ));
        }
        let f: Vec<f32> = ids.iter().map(|&i| i as f32).collect();
        Ok(TokenIds {
            tensor: ctx.upload(&f, shape, DType::F32)?,
        })
    }
    pub fn shape(&self) -> &[usize] {
        self.tensor.shape()
    }
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    d: u32,
    _p: [u32; 2],
}

/// `table [V, D]` looked up at `ids [..]`: returns `[.., D]`.
pub fn embedding(rec: &mut Recording, table: &Tensor, ids: &TokenIds) -> Result<Tensor> {
    if table.shape().len() != 2 {
        return Err(Error::shape(
            "embedding",
            format!("table must be [V, D], got {:?}", table.shape()),
        ));
    }
    let d = table.shape()[1];
    let rows = ids.tensor.numel();
    let mut shape = ids.shape().to_vec();
    shape.push(d);
    let ctx = rec.context().clone();
    let out = ctx.alloc(&shape, table.dtype())?;
    let kernel = ctx.kernel(&KernelKey::new(
        "embedding.wgsl",
        "embedding",
        table.dtype(),
    ))?;
    let params = Params {
        rows: check_u32("embedding", rows)?,
        d: check_u32("embedding", d)?,
        _p: [0; 2],
    };
    let groups = grid_1d(&ctx, "embedding", ((rows * d) as u64).div_ceil(256))?;
    rec.dispatch(
        &kernel,
        bytemuck::bytes_of(&params),
        &[table, &ids.tensor, &out],
        groups,
    )?;
    Ok(out)
}
