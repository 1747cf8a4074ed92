//! Matrices larger than one storage binding, kept as blocks of rows that each fit: an embedding
//! table or LM head of 32,000 × 2048 f32 is 262 MB, twice what lavapipe, browsers and some laptop
//! GPUs bind at once (128 MiB). The embedding gathers from each block
//! ([`super::embedding::embedding_sharded`]); the head runs one product per block and places
//! each block's logits in its columns ([`ShardedLinear`]).

use std::ops::Range;

use crate::context::Context;
use crate::error::{Error, Result};
use crate::kernels::KernelKey;
use crate::record::Recording;
use crate::tensor::{DType, Tensor};

use super::gemm::Linear;
use super::{check_u32, grid_1d};

/// A `[rows, cols]` matrix as blocks of rows, each within the context's binding limit.
#[derive(Clone)]
pub struct RowShards {
    /// (first row, block `[n, cols]`)
    blocks: Vec<(usize, Tensor)>,
    rows: usize,
    cols: usize,
    dtype: DType,
}

impl RowShards {
    /// Rows per block for `cols` columns of `dtype` on this context: as many as one binding
    /// holds, a multiple of 4 (the CPU schedules' Wᵀ pads rows to 4, and must fit too).
    pub fn rows_per_block(ctx: &Context, cols: usize, dtype: DType) -> Result<usize> {
        let row = (cols.max(1) * ctx.resolve_dtype(dtype).size()) as u64;
        let n = (ctx.binding_limit() / row) as usize / 4 * 4;
        if n == 0 {
            return Err(Error::LimitExceeded {
                what: format!("four rows of {cols} {dtype:?} values (one block of a split matrix)"),
                requested: 4 * row,
                limit_name: "max_storage_buffer_binding_size",
                limit: ctx.binding_limit(),
            });
        }
        Ok(n)
    }

    /// Builds the blocks with `block(range of rows)`, which returns that block `[len, cols]`.
    pub fn build(
        ctx: &Context,
        rows: usize,
        cols: usize,
        dtype: DType,
        mut block: impl FnMut(Range<usize>) -> Result<Tensor>,
    ) -> Result<RowShards> {
        let per = Self::rows_per_block(ctx, cols, dtype)?;
        let mut blocks = Vec::with_capacity(rows.div_ceil(per));
        let mut first = 0;
        while first < rows {
            let r = first..(first + per).min(rows);
            let t = block(r.clone())?;
            if t.shape() != [r.len(), cols] {
                return Err(Error::shape(
                    "row shards",
                    format!(
                        "block {r:?} came back as {:?}, expected [{}, {cols}]",
                        t.shape(),
                        r.len()
                    ),
                ));
            }
            blocks.push((first, t));
            first = r.end;
        }
        Ok(RowShards {
            blocks,
            rows,
            cols,
            dtype: ctx.resolve_dtype(dtype),
        })
    }

    /// Uploads host data `[rows, cols]`.
    pub fn upload(
        ctx: &Context,
        data: &[f32],
        rows: usize,
        cols: usize,
        dtype: DType,
    ) -> Result<RowShards> {
        if data.len() != rows * cols {
            return Err(Error::shape(
                "row shards",
                format!("{} values do not form [{rows}, {cols}]", data.len()),
            ));
        }
        Self::build(ctx, rows, cols, dtype, |r| {
            ctx.upload(&data[r.start * cols..r.end * cols], &[r.len(), cols], dtype)
        })
    }

    /// (first row, block) pairs in row order.
    pub fn blocks(&self) -> &[(usize, Tensor)] {
        &self.blocks
    }
    pub fn rows(&self) -> usize {
        self.rows
    }
    pub fn cols(&self) -> usize {
        self.cols
    }
    pub fn dtype(&self) -> DType {
        self.dtype
    }
    /// Bytes of all blocks.
    pub fn bytes(&self) -> u64 {
        self.blocks.iter().map(|(_, t)| t.bytes()).sum()
    }

    /// The Linear layer with this matrix as its weight `[out, in]` (a tied LM head shares the
    /// embedding's buffers).
    pub fn linear(&self, ctx: &Context) -> Result<ShardedLinear> {
        let parts = self
            .blocks
            .iter()
            .map(|(first, t)| Ok((*first, Linear::new(ctx, t.clone())?)))
            .collect::<Result<_>>()?;
        Ok(ShardedLinear {
            parts,
            out: self.rows,
        })
    }
}

/// `y = x · Wᵀ` with W `[out, in]` split into row blocks ([`RowShards::linear`]).
pub struct ShardedLinear {
    parts: Vec<(usize, Linear)>,
    out: usize,
}

impl ShardedLinear {
    pub fn out_features(&self) -> usize {
        self.out
    }
    /// Weight blocks.
    pub fn parts(&self) -> usize {
        self.parts.len()
    }
    /// `x [..., in]` → `[..., out]`: one product per block, each placed in its columns.
    pub fn forward(&self, rec: &mut Recording, x: &Tensor) -> Result<Tensor> {
        if let [(_, lin)] = self.parts.as_slice() {
            return lin.forward(rec, x);
        }
        let k = x.last_dim();
        let m = x.numel() / k.max(1);
        let mut shape = x.shape().to_vec();
        *shape
            .last_mut()
            .ok_or_else(|| Error::shape("linear", "x must have at least one dimension"))? =
            self.out;
        let y = rec.context().alloc(&[m, self.out], x.dtype())?;
        for (first, lin) in &self.parts {
            let part = lin.forward(rec, &x.reshape(&[m, k])?)?;
            place_columns(rec, &part, &y, *first)?;
        }
        y.reshape(&shape)
    }
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    n: u32,
    ld: u32,
    off: u32,
}

/// Writes `x [rows, n]` into columns `off … off + n − 1` of `y [rows, ld]`.
pub fn place_columns(rec: &mut Recording, x: &Tensor, y: &Tensor, off: usize) -> Result<()> {
    let n = x.last_dim();
    let rows = x.numel() / n.max(1);
    let ld = y.last_dim();
    if y.numel() != rows * ld || off + n > ld || x.dtype() != y.dtype() {
        return Err(Error::shape(
            "place_columns",
            format!(
                "x {:?} {:?} does not fit columns from {off} of y {:?} {:?}",
                x.dtype(),
                x.shape(),
                y.dtype(),
                y.shape()
            ),
        ));
    }
    let ctx = rec.context().clone();
    let kernel = ctx.kernel(&KernelKey::new(
        "place_columns.wgsl",
        "place_columns",
        x.dtype(),
    ))?;
    let params = Params {
        rows: check_u32("place_columns", rows)?,
        n: check_u32("place_columns", n)?,
        ld: check_u32("place_columns", ld)?,
        off: check_u32("place_columns", off)?,
    };
    let groups = grid_1d(&ctx, "place_columns", ((rows * n) as u64).div_ceil(256))?;
    rec.dispatch(&kernel, bytemuck::bytes_of(&params), &[x, y], groups)
}
