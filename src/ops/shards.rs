//! Matrices larger than one storage binding, kept as blocks of rows that each fit: an embedding
//! table or LM head of 32,000 × 2048 f32 is 262 MB, twice what lavapipe, browsers and some laptop
//! GPUs bind at once (128 MiB). The embedding gathers from each block
//! ([`super::embedding::embedding_sharded`]); the head runs one product per block and places
//! each block's logits in its columns ([`RowShards::linear`]).

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
    pub fn linear(&self, ctx: &Context) -> Result<Linear> {
        Linear::from_blocks(ctx, &self.blocks)
    }
}

/// Rows of `width` values of `dtype` that one binding holds (at least 1).
pub fn rows_per_binding(ctx: &Context, width: usize, dtype: DType) -> usize {
    let row = (width.max(1) * ctx.resolve_dtype(dtype).size()) as u64;
    ((ctx.binding_limit() / row) as usize).max(1)
}

/// Rows `r` of `x [rows, D]` as a tensor of their own `[r.len(), D]`, by a buffer copy (no
/// binding, so `x` may be larger than one). With f16 and an odd D, `r.start` must be even.
pub fn copy_rows(rec: &mut Recording, x: &Tensor, r: Range<usize>) -> Result<Tensor> {
    let d = x.last_dim();
    let out = rec.context().alloc(&[r.len(), d], x.dtype())?;
    rec.copy_region(x, (r.start * d) as u64, &out, 0, (r.len() * d) as u64)?;
    Ok(out)
}

/// `f(rows, block)` over blocks of at most `per` rows of `x [.., D]`, each block's
/// `[rows, width]` result copied into one `[rows(x), width]` output. Blocks move by buffer
/// copies, never bindings, so `x` and the output may be larger than one binding (a long
/// prompt's logits, a wide activation). Copies move whole 4-byte words: where a row is not one
/// (f16 with an odd D or width), blocks have an even number of rows, so every block starts on a
/// word and only the last may end inside one (copied into the buffers' padding, see
/// `Recording::copy_region`). Each block is submitted before the next is recorded, so memory
/// holds one block's intermediates.
pub fn row_blocks(
    rec: &mut Recording,
    x: &Tensor,
    width: usize,
    per: usize,
    mut f: impl FnMut(&mut Recording, Range<usize>, &Tensor) -> Result<Tensor>,
) -> Result<Tensor> {
    let d = x.last_dim();
    let rows = x.numel() / d.max(1);
    let es = x.dtype().size();
    let odd = !(width * es).is_multiple_of(4) || !(d * es).is_multiple_of(4);
    let per = if odd {
        (per / 2 * 2).max(2)
    } else {
        per.max(1)
    };
    let x = x.reshape(&[rows, d])?;
    let out = rec.context().alloc(&[rows, width], x.dtype())?;
    let mut start = 0;
    while start < rows {
        let r = start..(start + per).min(rows);
        let xb = copy_rows(rec, &x, r.clone())?;
        let yb = f(rec, r.clone(), &xb)?;
        if yb.numel() != r.len() * width || yb.dtype() != out.dtype() {
            return Err(Error::shape(
                "row blocks",
                format!(
                    "a block of {} rows gave {:?} {:?}, expected {:?} [{}, {width}]",
                    r.len(),
                    yb.dtype(),
                    yb.shape(),
                    out.dtype(),
                    r.len()
                ),
            ));
        }
        rec.copy_region(
            &yb,
            0,
            &out,
            (r.start * width) as u64,
            (r.len() * width) as u64,
        )?;
        rec.flush()?;
        start = r.end;
    }
    Ok(out)
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
