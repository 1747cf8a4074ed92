//! Token embedding lookup.

use crate::context::Context;
use crate::error::{Error, Result};
use crate::kernels::KernelKey;
use crate::record::Recording;
use crate::tensor::{DType, Tensor};

use super::shards::RowShards;
use super::{check_u32, grid_1d};

/// Token ids on the GPU, checked against a vocabulary size. Shape `[B, T]`.
#[derive(Clone, Debug)]
pub struct TokenIds {
    tensor: Tensor,
    /// The vocabulary the ids were checked against.
    vocab: usize,
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
            vocab,
        })
    }
    pub fn shape(&self) -> &[usize] {
        self.tensor.shape()
    }
    /// Sequences `r` of ids `[B, T]`: `[r.len(), T]` (a model runs a large batch in groups).
    pub fn sequences(&self, rec: &mut Recording, r: std::ops::Range<usize>) -> Result<TokenIds> {
        let s = self.tensor.shape();
        if s.len() != 2 || r.start > r.end || r.end > s[0] {
            return Err(Error::shape(
                "token ids",
                format!("sequences {r:?} of ids {s:?}"),
            ));
        }
        let rows = super::shards::copy_rows(rec, &self.tensor, r.clone())?;
        Ok(TokenIds {
            tensor: rows,
            vocab: self.vocab,
        })
    }
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    d: u32,
    v_lo: u32,
    v_hi: u32,
}

/// `table [V, D]` looked up at `ids [..]`: returns `[.., D]`.
pub fn embedding(rec: &mut Recording, table: &Tensor, ids: &TokenIds) -> Result<Tensor> {
    if table.shape().len() != 2 {
        return Err(Error::shape(
            "embedding",
            format!("table must be [V, D], got {:?}", table.shape()),
        ));
    }
    check_vocab(ids, table.shape()[0])?;
    let out = output(rec, ids, table.shape()[1], table.dtype())?;
    gather(rec, table, 0, ids, &out)?;
    Ok(out)
}

/// [`embedding`] from a table stored as blocks of rows ([`RowShards`]: a vocabulary larger than
/// one binding): one dispatch per block, each writing the tokens whose ids it holds.
pub fn embedding_sharded(rec: &mut Recording, table: &RowShards, ids: &TokenIds) -> Result<Tensor> {
    check_vocab(ids, table.rows())?;
    let out = output(rec, ids, table.cols(), table.dtype())?;
    for (first, block) in table.blocks() {
        gather(rec, block, *first, ids, &out)?;
    }
    Ok(out)
}

/// Rows `rows` (flat indices over all leading dimensions) of `x [.., D]`: `[rows.len(), D]`
/// (each sequence's last position before the LM head). Any dtype, any D.
pub fn gather_rows(rec: &mut Recording, x: &Tensor, rows: &[usize]) -> Result<Tensor> {
    let d = x.last_dim();
    let n = x.numel() / d.max(1);
    let ids: Vec<u32> = rows
        .iter()
        .map(|&r| check_u32("gather_rows", r))
        .collect::<Result<_>>()?;
    let ids = TokenIds::new(rec.context(), &ids, &[1, rows.len()], n)?;
    let table = x.reshape(&[n, d])?;
    let out = embedding(rec, &table, &ids)?;
    out.reshape(&[rows.len(), d])
}

/// Ids checked against a larger vocabulary than the table has could name rows it lacks.
fn check_vocab(ids: &TokenIds, rows: usize) -> Result<()> {
    if ids.vocab > rows {
        return Err(Error::shape(
            "embedding",
            format!(
                "ids were checked against a vocabulary of {} but the table has {rows} rows",
                ids.vocab
            ),
        ));
    }
    Ok(())
}

fn output(rec: &Recording, ids: &TokenIds, d: usize, dtype: crate::DType) -> Result<Tensor> {
    let mut shape = ids.shape().to_vec();
    shape.push(d);
    rec.context().alloc(&shape, dtype)
}

/// Writes `out[r] = table[ids[r] − first]` for the ids in `first … first + rows(table) − 1`.
fn gather(
    rec: &mut Recording,
    table: &Tensor,
    first: usize,
    ids: &TokenIds,
    out: &Tensor,
) -> Result<()> {
    let d = table.shape()[1];
    let rows = ids.tensor.numel();
    let ctx = rec.context().clone();
    let kernel = ctx.kernel(&KernelKey::new(
        "embedding.wgsl",
        "embedding",
        table.dtype(),
    ))?;
    let params = Params {
        rows: check_u32("embedding", rows)?,
        d: check_u32("embedding", d)?,
        v_lo: check_u32("embedding", first)?,
        v_hi: check_u32("embedding", first + table.shape()[0])?,
    };
    let groups = grid_1d(&ctx, "embedding", ((rows * d) as u64).div_ceil(256))?;
    rec.dispatch(
        &kernel,
        bytemuck::bytes_of(&params),
        &[table, &ids.tensor, out],
        groups,
    )
}
