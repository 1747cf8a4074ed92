//! One typed launch wrapper per kernel family. Each checks shapes and dtypes, allocates its output
//! from the pool, and records a dispatch; nothing runs until the recording is submitted.

pub mod attention;
pub mod elementwise;
pub mod embedding;
pub mod gemm;
pub mod mesa;
pub mod norm;
pub mod rat;
pub mod rope;
pub mod sample;
pub mod shards;
pub mod softmax;
pub mod transpose;

use crate::context::Context;
use crate::error::{Error, Result};
use crate::tensor::{DType, Tensor};

/// llvmpipe, the CPU driver behind lavapipe, stops the loops of an invocation after ~65k counted
/// iterations in total, silently (the rest of the work is skipped, with wrong results). Every op
/// whose invocations loop for a length given by its arguments keeps that count, on CPU adapters,
/// within this budget (a margin under 65,536): by admitting a kernel only while it fits (Mesa's
/// CG), by splitting the work (attention's key passes, Mesa's state segments) or by refusing with
/// `LimitExceeded` (RAT's chunk walks).
pub(crate) const CPU_LOOP_BUDGET: usize = 50_000;

/// Workgroup counts for `groups` workgroups of a 1-D problem, folded into 2-D when one dimension
/// is not enough (kernels flatten it back with `flat_group`).
pub(crate) fn grid_1d(ctx: &Context, what: &str, groups: u64) -> Result<[u32; 3]> {
    let max = ctx.limits().max_compute_workgroups_per_dimension as u64;
    if groups <= max {
        return Ok([groups as u32, 1, 1]);
    }
    let y = groups.div_ceil(max);
    if y > max {
        return Err(Error::LimitExceeded {
            what: format!("{what}: {groups} workgroups"),
            requested: groups,
            limit_name: "max_compute_workgroups_per_dimension (squared)",
            limit: max * max,
        });
    }
    Ok([max as u32, y as u32, 1])
}

/// All tensors of one op share a storage dtype.
pub(crate) fn same_dtype(op: &'static str, ts: &[&Tensor]) -> Result<DType> {
    let d = ts[0].dtype();
    for t in &ts[1..] {
        if t.dtype() != d {
            return Err(Error::DType {
                op,
                expected: d,
                got: t.dtype(),
            });
        }
    }
    Ok(d)
}

/// Element counts must fit the u32 indices the kernels use.
pub(crate) fn check_u32(op: &'static str, n: usize) -> Result<u32> {
    u32::try_from(n).map_err(|_| {
        Error::shape(
            op,
            format!("{n} elements exceed the 2^32 index range of the kernels"),
        )
    })
}

/// Invocations per workgroup for an elementwise map over `lanes` invocations: 256, or 64 where
/// 256 would leave fewer than 256 workgroups, so that a small map (a gate over [B, T, H]) still
/// spreads over the compute units of a large GPU.
pub(crate) fn map_workgroup(lanes: usize) -> u32 {
    if lanes < 256 * 256 {
        64
    } else {
        256
    }
}

/// Workgroup size for one-row-per-workgroup reductions: a power of two in 32..=256 giving each
/// invocation about 4 elements (fewer reduction rounds, each a barrier, for the same memory traffic).
pub(crate) fn row_workgroup(d: usize) -> u32 {
    (d.div_ceil(4).next_power_of_two().clamp(32, 256)) as u32
}
