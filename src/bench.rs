//! Timing helpers shared by `chunkwise bench` and the criterion benches.

use crate::error::Result;
use crate::ops::gemm::{self, GemmSchedule};
use crate::{Context, DType};

/// Median, min and max of a set of samples, in milliseconds.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct Summary {
    pub median_ms: f64,
    pub min_ms: f64,
    pub max_ms: f64,
}

pub fn summarize(samples_s: &[f64]) -> Summary {
    let mut v: Vec<f64> = samples_s.iter().map(|s| s * 1e3).collect();
    v.sort_by(f64::total_cmp);
    let median = if v.len() % 2 == 1 { v[v.len() / 2] } else { 0.5 * (v[v.len() / 2 - 1] + v[v.len() / 2]) };
    Summary { median_ms: median, min_ms: v[0], max_ms: v[v.len() - 1] }
}

/// One GEMM measurement.
#[derive(Clone, Debug, serde::Serialize)]
pub struct GemmResult {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub dtype: DType,
    pub schedule: String,
    #[serde(flatten)]
    pub time: Summary,
    pub gflops: f64,
}

/// Times `y = x · Wᵀ` at `m×n×k`: one warm-up, then `samples` timed runs (GPU timestamps where
/// available). The warm-up result is read back and checked finite, so a failed run is never timed.
pub fn gemm(ctx: &Context, m: usize, n: usize, k: usize, dtype: DType, schedule: GemmSchedule, samples: usize) -> Result<GemmResult> {
    let x: Vec<f32> = (0..m * k).map(|i| ((i * 7919 % 1000) as f32 / 1000.0) - 0.5).collect();
    let w: Vec<f32> = (0..n * k).map(|i| ((i * 104729 % 1000) as f32 / 1000.0) - 0.5).collect();
    let xt = ctx.upload(&x, &[1, m, k], dtype)?;
    let wt = ctx.upload(&w, &[n, k], dtype)?;
    let y = ctx.run(|rec| gemm::gemm_with(rec, &xt, &wt, schedule))?;
    let out = ctx.download(&y)?;
    if out.iter().any(|v| !v.is_finite()) {
        return Err(crate::Error::Readback("GEMM warm-up produced non-finite values".into()));
    }
    let mut times = Vec::with_capacity(samples);
    for _ in 0..samples.max(1) {
        let mut rec = ctx.record();
        gemm::gemm_with(&mut rec, &xt, &wt, schedule)?;
        times.push(rec.submit_timed()?);
    }
    let time = summarize(&times);
    let schedule = format!("{:?}", schedule.resolve(ctx)).to_lowercase();
    Ok(GemmResult {
        m,
        n,
        k,
        dtype: ctx.resolve_dtype(dtype),
        schedule,
        gflops: gemm::flops(1, m, n, k) / (time.median_ms * 1e-3) / 1e9,
        time,
    })
}
