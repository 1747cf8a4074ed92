//! Rotate-half (GPT-NeoX) rotary position embedding at arbitrary position indices.
//!
//! The cos/sin table is computed on the host in f64 and stored in f32, like the reference code's
//! float32 tables, so results do not depend on the GPU's transcendental precision.

use crate::context::Context;
use crate::error::{Error, Result};
use crate::kernels::KernelKey;
use crate::record::Recording;
use crate::tensor::{DType, Tensor};

use super::{check_u32, grid_1d};

const WG: u64 = 256;

/// cos/sin rows for positions `0..max_positions` of a head dimension `dh`.
#[derive(Clone, Debug)]
pub struct RopeTable {
    table: Tensor, // [max_positions, dh]: cos in [0, dh/2), sin in [dh/2, dh)
    dh: usize,
    max_positions: usize,
}

/// Position indices validated against a table, stored on the GPU.
#[derive(Clone, Debug)]
pub struct Positions {
    tensor: Tensor,
}

impl Positions {
    pub fn len(&self) -> usize {
        self.tensor.numel()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The host-side table (f64), shared with the CPU reference: `[pos][i]` angle `pos · base^(−2i/dh)`.
pub fn table_f64(dh: usize, max_positions: usize, base: f64) -> Vec<f64> {
    let half = dh / 2;
    let mut t = vec![0.0; max_positions * dh];
    for pos in 0..max_positions {
        for i in 0..half {
            let inv_freq = base.powf(-2.0 * i as f64 / dh as f64);
            let a = pos as f64 * inv_freq;
            t[pos * dh + i] = a.cos();
            t[pos * dh + half + i] = a.sin();
        }
    }
    t
}

impl RopeTable {
    /// A table for head dimension `dh` (even) and positions `0..max_positions`, frequency base `base` (10000 upstream).
    pub fn new(ctx: &Context, dh: usize, max_positions: usize, base: f64) -> Result<RopeTable> {
        if dh == 0 || !dh.is_multiple_of(2) {
            return Err(Error::invalid(
                "rope",
                format!("head dim must be even and > 0, got {dh}"),
            ));
        }
        if !(base > 1.0 && base.is_finite()) {
            return Err(Error::invalid(
                "rope",
                format!("base must be finite and > 1, got {base}"),
            ));
        }
        let t: Vec<f32> = table_f64(dh, max_positions, base)
            .iter()
            .map(|&v| v as f32)
            .collect();
        let table = ctx.upload(&t, &[max_positions, dh], DType::F32)?;
        Ok(RopeTable {
            table,
            dh,
            max_positions,
        })
    }

    /// The table itself, `[max_positions, dh]` f32 (cos, then sin), for kernels that rotate as
    /// part of other work (shaders/decode_prep.wgsl).
    pub(crate) fn tensor(&self) -> &Tensor {
        &self.table
    }
    pub fn dh(&self) -> usize {
        self.dh
    }
    pub fn max_positions(&self) -> usize {
        self.max_positions
    }

    /// Uploads position indices after checking each is inside the table.
    pub fn positions(&self, ctx: &Context, pos: &[usize]) -> Result<Positions> {
        if let Some(&p) = pos.iter().find(|&&p| p >= self.max_positions) {
            return Err(Error::invalid(
                "rope",
                format!("position {p} is outside the table (max_positions {}); build a larger RopeTable", self.max_positions),
            ));
        }
        let f: Vec<f32> = pos.iter().map(|&p| p as f32).collect();
        Ok(Positions {
            tensor: ctx.upload(&f, &[pos.len()], DType::F32)?,
        })
    }
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    heads: u32,
    dh: u32,
    npos: u32,
}

/// Rotates `x [..., D]` (D = heads × dh, head-major channels). Row `r` (a flattened leading index)
/// uses position `positions[r mod len]`: pass `T` positions for `[B, T, D]`, or `B·T` for per-sequence positions.
pub fn rope(
    rec: &mut Recording,
    x: &Tensor,
    table: &RopeTable,
    positions: &Positions,
) -> Result<Tensor> {
    let d = x.last_dim();
    if !d.is_multiple_of(table.dh) {
        return Err(Error::shape(
            "rope",
            format!(
                "last dim {d} of x {:?} is not a multiple of the head dim {}",
                x.shape(),
                table.dh
            ),
        ));
    }
    let rows = x.numel() / d.max(1);
    let npos = positions.len();
    if npos == 0 || !rows.is_multiple_of(npos) {
        return Err(Error::shape(
            "rope",
            format!(
                "{npos} positions do not tile the {rows} rows of x {:?}",
                x.shape()
            ),
        ));
    }
    let ctx = rec.context().clone();
    let y = ctx.alloc(x.shape(), x.dtype())?;
    let heads = d / table.dh;
    // Four pairs per invocation where each half of a head is whole vec4s.
    let (entry, per) = if table.dh.is_multiple_of(8) {
        ("rope4", 4)
    } else {
        ("rope", 1)
    };
    let pairs = rows * heads * table.dh / 2 / per;
    let kernel = ctx.kernel(&KernelKey::new("rope.wgsl", entry, x.dtype()))?;
    let params = Params {
        rows: check_u32("rope", rows)?,
        heads: check_u32("rope", heads)?,
        dh: check_u32("rope", table.dh)?,
        npos: check_u32("rope", npos)?,
    };
    let groups = grid_1d(&ctx, "rope", (pairs as u64).div_ceil(WG))?;
    rec.dispatch(
        &kernel,
        bytemuck::bytes_of(&params),
        &[x, &table.table, &positions.tensor, &y],
        groups,
    )?;
    Ok(y)
}
