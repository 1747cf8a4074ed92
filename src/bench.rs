//! Timing helpers shared by `chunkwise bench` and the criterion benches.

use crate::error::Result;
use crate::ops::gemm::{self, GemmSchedule};
use crate::{Context, DType};

/// Total GPU time of `iters` recordings of `f`, one submit each (for criterion's `iter_custom`).
pub fn gpu_time(
    ctx: &Context,
    iters: u64,
    f: &dyn Fn(&mut crate::Recording) -> Result<crate::Tensor>,
) -> std::time::Duration {
    let mut t = 0.0;
    for _ in 0..iters {
        let mut rec = ctx.record();
        f(&mut rec).expect("benchmark op failed");
        t += rec.submit_timed().expect("timed submit failed");
    }
    std::time::Duration::from_secs_f64(t)
}

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
    let median = if v.len() % 2 == 1 {
        v[v.len() / 2]
    } else {
        0.5 * (v[v.len() / 2 - 1] + v[v.len() / 2])
    };
    Summary {
        median_ms: median,
        min_ms: v[0],
        max_ms: v[v.len() - 1],
    }
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
pub fn gemm(
    ctx: &Context,
    m: usize,
    n: usize,
    k: usize,
    dtype: DType,
    schedule: GemmSchedule,
    samples: usize,
) -> Result<GemmResult> {
    let x: Vec<f32> = (0..m * k)
        .map(|i| ((i * 7919 % 1000) as f32 / 1000.0) - 0.5)
        .collect();
    let w: Vec<f32> = (0..n * k)
        .map(|i| ((i * 104729 % 1000) as f32 / 1000.0) - 0.5)
        .collect();
    let xt = ctx.upload(&x, &[1, m, k], dtype)?;
    let wt = ctx.upload(&w, &[n, k], dtype)?;
    let y = ctx.run(|rec| gemm::gemm_with(rec, &xt, &wt, schedule))?;
    let out = ctx.download(&y)?;
    if out.iter().any(|v| !v.is_finite()) {
        return Err(crate::Error::Readback(
            "GEMM warm-up produced non-finite values".into(),
        ));
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

/// One attention measurement (kernel only: q, k, v already projected).
#[derive(Clone, Debug, serde::Serialize)]
pub struct AttentionResult {
    pub mode: &'static str,
    pub batch: usize,
    pub seq_len: usize,
    pub d_model: usize,
    pub heads: usize,
    pub window: Option<usize>,
    #[serde(flatten)]
    pub time: Summary,
    pub gflops: f64,
}

fn checked_finite(ctx: &Context, t: &crate::Tensor, what: &str) -> Result<()> {
    if ctx.download(t)?.iter().any(|v| !v.is_finite()) {
        return Err(crate::Error::Readback(format!(
            "{what} warm-up produced non-finite values"
        )));
    }
    Ok(())
}

/// Causal (or windowed) attention forward over `[batch, t, d]`: FLOPs counted as 2·T²·D for
/// causal, 4·T·(W+1)·D for a window (QKᵀ and PV over the visible keys).
pub fn attention_forward(
    ctx: &Context,
    batch: usize,
    t: usize,
    d: usize,
    heads: usize,
    window: Option<usize>,
    samples: usize,
) -> Result<AttentionResult> {
    use crate::ops::attention as attn;
    let n = batch * t * d;
    let q = ctx.upload(
        &(0..n)
            .map(|i| ((i * 7919 % 1000) as f32 / 1000.0) - 0.5)
            .collect::<Vec<_>>(),
        &[batch, t, d],
        DType::F32,
    )?;
    let k = ctx.upload(
        &(0..n)
            .map(|i| ((i * 104729 % 1000) as f32 / 1000.0) - 0.5)
            .collect::<Vec<_>>(),
        &[batch, t, d],
        DType::F32,
    )?;
    let o = ctx.run(|rec| attn::attention(rec, &q, &k, &q, heads, window, None))?;
    checked_finite(ctx, &o, "attention")?;
    if window.is_none() {
        // The last query sees every key: flash-decoding over the same keys, a different kernel,
        // must agree, so a run that silently computed nothing is never timed.
        let dh = d / heads;
        let (kc, vc) = (
            ctx.alloc(&[batch, heads, t, dh], DType::F32)?,
            ctx.alloc(&[batch, heads, t, dh], DType::F32)?,
        );
        let last = ctx.run(|rec| {
            attn::kv_write(rec, &k, 0, &kc, 0)?;
            attn::kv_write(rec, &q, 0, &vc, 0)?;
            let ql = ctx.alloc(&[batch, 1, d], DType::F32)?;
            for b in 0..batch {
                rec.copy_region(
                    &q,
                    ((b * t + t - 1) * d) as u64,
                    &ql,
                    (b * d) as u64,
                    d as u64,
                )?;
            }
            attn::decode(rec, &ql, &kc, &vc, t, None)
        })?;
        let want = ctx.download(&last)?;
        let all = ctx.download(&o)?;
        let got: Vec<f32> = (0..batch)
            .flat_map(|b| all[(b * t + t - 1) * d..(b * t + t) * d].to_vec())
            .collect();
        let err =
            crate::reference::rel_rms(&got, &want.iter().map(|&v| v as f64).collect::<Vec<_>>());
        if !(err < 1e-4) {
            return Err(crate::Error::Readback(format!(
                "attention forward disagrees with decode at the last token (rel_rms {err:.2e})"
            )));
        }
    }
    let mut times = Vec::new();
    for _ in 0..samples.max(1) {
        let mut rec = ctx.record();
        attn::attention(&mut rec, &q, &k, &q, heads, window, None)?;
        times.push(rec.submit_timed()?);
    }
    let time = summarize(&times);
    let flops = match window {
        None => attn::causal_flops(batch, t, d),
        Some(w) => 4.0 * batch as f64 * t as f64 * (w + 1).min(t) as f64 * d as f64,
    };
    Ok(AttentionResult {
        mode: "forward",
        batch,
        seq_len: t,
        d_model: d,
        heads,
        window,
        gflops: flops / (time.median_ms * 1e-3) / 1e9,
        time,
    })
}

/// One decode step at `position` (a cache of `position + 1` entries): 4·(position+1)·D FLOPs per sequence.
pub fn attention_decode(
    ctx: &Context,
    batch: usize,
    position: usize,
    d: usize,
    heads: usize,
    samples: usize,
) -> Result<AttentionResult> {
    use crate::ops::attention as attn;
    let dh = d / heads;
    let cap = position + 1;
    let cache: Vec<f32> = (0..batch * heads * cap * dh)
        .map(|i| ((i * 7919 % 1000) as f32 / 1000.0) - 0.5)
        .collect();
    let kc = ctx.upload(&cache, &[batch, heads, cap, dh], DType::F32)?;
    let q = ctx.upload(&vec![0.1; batch * d], &[batch, 1, d], DType::F32)?;
    let o = ctx.run(|rec| attn::decode(rec, &q, &kc, &kc, cap, None))?;
    checked_finite(ctx, &o, "attention decode")?;
    let mut times = Vec::new();
    for _ in 0..samples.max(1) {
        let mut rec = ctx.record();
        attn::decode(&mut rec, &q, &kc, &kc, cap, None)?;
        times.push(rec.submit_timed()?);
    }
    let time = summarize(&times);
    let flops = 4.0 * batch as f64 * cap as f64 * d as f64;
    Ok(AttentionResult {
        mode: "decode",
        batch,
        seq_len: cap,
        d_model: d,
        heads,
        window: None,
        gflops: flops / (time.median_ms * 1e-3) / 1e9,
        time,
    })
}
