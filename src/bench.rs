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

/// One part of a layer in a breakdown: its name, how many times the layer runs it, the work.
pub type Part<'a> = (
    &'a str,
    usize,
    Box<dyn Fn(&mut crate::Recording) -> Result<crate::Tensor> + 'a>,
);

/// Times each part alone (one untimed warm-up that compiles its pipelines, then `reps` timed runs,
/// GPU timestamps where the adapter has them) and prints a line per part, its median and minimum
/// and how often the layer runs it, then the layer's sums of both.
pub fn print_breakdown(ctx: &Context, reps: u64, parts: &[Part]) {
    let width = parts.iter().map(|p| p.0.chars().count()).max().unwrap_or(0) + 2;
    let (mut total, mut total_min) = (0.0, 0.0);
    println!("{:<width$} {:>10} {:>10}", "", "median ms", "min ms");
    for (name, times, f) in parts {
        gpu_time(ctx, 1, f.as_ref());
        let samples: Vec<f64> = (0..reps.max(1))
            .map(|_| gpu_time(ctx, 1, f.as_ref()).as_secs_f64())
            .collect();
        let s = summarize(&samples);
        total += s.median_ms * *times as f64;
        total_min += s.min_ms * *times as f64;
        println!(
            "{name:<width$} {:>10.3} {:>10.3} × {times}",
            s.median_ms, s.min_ms
        );
    }
    println!("{:<width$} {total:>10.3} {total_min:>10.3}", "sum");
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
/// W is prepared once outside the timing (transposed for the direct schedules, as `Linear` does).
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
    // The weight is prepared once, untimed, as a `Linear` does: the direct schedules read Wᵀ.
    let effective = schedule.effective(ctx, m, true);
    let prepared = if effective.is_direct() && k.is_multiple_of(4) {
        Some(ctx.run(|rec| crate::ops::transpose::transpose_padded(rec, &wt, 4))?)
    } else {
        None
    };
    let product = |rec: &mut crate::Recording| {
        gemm::gemm_impl(
            rec,
            &xt,
            &wt,
            prepared.as_ref(),
            0..n,
            schedule,
            gemm::Fused::default(),
        )
    };
    let y = ctx.run(product)?;
    let out = ctx.download(&y)?;
    if out.iter().any(|v| !v.is_finite()) {
        return Err(crate::Error::Readback(
            "GEMM warm-up produced non-finite values".into(),
        ));
    }
    let mut times = Vec::with_capacity(samples);
    for _ in 0..samples.max(1) {
        let mut rec = ctx.record();
        product(&mut rec)?;
        times.push(rec.submit_timed()?);
    }
    let time = summarize(&times);
    let schedule = match (effective, effective.is_direct() && k.is_multiple_of(4)) {
        (GemmSchedule::TiledAs(t), _) => format!("tiled {}", t.name()),
        (GemmSchedule::Gemv, _) => "gemv".to_string(),
        // What a direct schedule cannot take (K not a multiple of 4) runs tiled too.
        (GemmSchedule::Tiled, _) | (_, false) => {
            format!(
                "tiled {}",
                crate::tune::gemm_tile(ctx, dtype, 1, m, n, k).name()
            )
        }
        _ => format!("{effective:?}").to_lowercase(),
    };
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
        if err.is_nan() || err >= 1e-4 {
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

/// Which layer `bench layers` measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LayerKind {
    Attention,
    Local,
    Rat,
    Mesa,
}

impl std::str::FromStr for LayerKind {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.trim() {
            "attention" => Ok(LayerKind::Attention),
            "local" => Ok(LayerKind::Local),
            "rat" => Ok(LayerKind::Rat),
            "mesa" => Ok(LayerKind::Mesa),
            other => Err(format!(
                "unknown layer '{other}' (use attention, local, rat, mesa)"
            )),
        }
    }
}

/// The shape every layer of one `bench layers` run shares.
#[derive(Clone, Debug)]
pub struct LayerShape {
    pub d_model: usize,
    pub heads: usize,
    /// RAT key/query groups.
    pub groups: usize,
    pub chunk: usize,
    pub window: usize,
    /// Mesa CG iterations (the count, or the paper rule's cap).
    pub cg_iters: usize,
    /// Mesa's CG rule.
    pub solver: crate::ops::mesa::Solver,
    pub dtype: DType,
}

/// One layer measurement; the field names are the JSON keys.
#[derive(Clone, Debug, serde::Serialize)]
pub struct LayerResult {
    pub layer: LayerKind,
    pub mode: &'static str,
    pub batch: usize,
    pub seq_len: usize,
    pub position: Option<usize>,
    pub d_model: usize,
    pub heads: usize,
    pub chunk: Option<usize>,
    pub window: Option<usize>,
    pub dtype: DType,
    #[serde(flatten)]
    pub time: Summary,
    pub gflops: f64,
    pub tokens_per_s: f64,
    /// Decode cache bytes per sequence at this position (what the layer must keep).
    pub cache_bytes: u64,
    /// Wall time from building the layer (weights uploaded, pipelines created unless an earlier
    /// case of the run already compiled them) to the first output read back.
    pub first_call_ms: f64,
    /// Compute dispatches in one timed run (a forward, or one decode step), counted from its
    /// recording.
    pub dispatches: usize,
    /// Workgroups of the smallest of those dispatches: how well the run can fill a large GPU.
    pub min_workgroups: u64,
    /// The kernel schedule (`Context::schedule_summary`).
    pub schedule: String,
    /// Mesa: the CG rule, and the largest and mean step count of the last timed run.
    pub cg_solver: Option<&'static str>,
    pub cg_iterations_max: Option<u32>,
    pub cg_iterations_mean: Option<f64>,
}

/// FLOPs of one layer, projections included (multiply-add = 2). `t` tokens processed, each seeing
/// `keys(t)` keys: forward sums over positions, decode is one token at `position`.
pub fn layer_flops(kind: LayerKind, s: &LayerShape, tokens: usize, keys_seen: f64) -> f64 {
    let d = s.d_model as f64;
    let t = tokens as f64;
    let dh = d / s.heads as f64;
    match kind {
        LayerKind::Rat => {
            2.0 * t * d * (3.0 * d + 2.0 * s.groups as f64 * dh)
                + 2.0 * t * d * d
                + 4.0 * keys_seen * d
        }
        LayerKind::Mesa => {
            // Projections (q, k, v, two gates, output), then per token and head: the two state
            // updates (2·2·D²), each CG iteration (the D×D state product 2·D² plus, in the chunked
            // form, the C×C decay-weighted products 4·C·D) and the read-out (2·D² + 4·C·D).
            let h = s.heads as f64;
            let c = if keys_seen > 0.0 {
                crate::ops::mesa::chunk_len(dh as usize) as f64
            } else {
                0.0
            };
            let per_head = s.cg_iters as f64 * (2.0 * dh * dh + 4.0 * c * dh)
                + 4.0 * dh * dh
                + 2.0 * dh * dh
                + 4.0 * c * dh;
            2.0 * t * d * (3.0 * d + 2.0 * h) + 2.0 * t * d * d + t * h * per_head
        }
        _ => 8.0 * t * d * d + 4.0 * keys_seen * d,
    }
}

/// Keys (or chunk entries) a token at position p attends to.
fn keys_at(kind: LayerKind, s: &LayerShape, p: usize) -> f64 {
    match kind {
        LayerKind::Attention => (p + 1) as f64,
        LayerKind::Local => (p + 1).min(s.window + 1) as f64,
        LayerKind::Rat => (p / s.chunk + 1) as f64,
        // Mesa has no keys; a positive value marks the chunked (forward) form in `layer_flops`.
        LayerKind::Mesa => 1.0,
    }
}

/// Cache bytes per sequence at `position` (f32 or f16 storage).
pub fn cache_bytes(kind: LayerKind, s: &LayerShape, position: usize) -> u64 {
    let e = (s.d_model * s.dtype.size()) as u64;
    match kind {
        LayerKind::Attention => 2 * e * (position + 1) as u64,
        LayerKind::Local => 2 * e * (position + 1).min(s.window + 1) as u64,
        LayerKind::Rat => 2 * e * ((position / s.chunk + 1) as u64 + 1),
        LayerKind::Mesa => {
            let dh = (s.d_model / s.heads) as u64;
            2 * s.heads as u64 * dh * dh * 4 + 2 * (s.d_model * 4 * 4) as u64
        }
    }
}

/// Deterministic random weights for one layer of `kind`: the layer's share of
/// [`crate::model::random::random_weights`] for a one-layer model, names without the model prefix.
pub fn random_layer_checkpoint(
    kind: LayerKind,
    s: &LayerShape,
) -> Result<crate::model::Checkpoint> {
    let (model_kind, prefix) = match kind {
        LayerKind::Mesa => ("mesanet", "model.layers.0.attn."),
        LayerKind::Rat => ("rat", "backbone.layers.0.seq_layer."),
        LayerKind::Attention | LayerKind::Local => ("attention", "backbone.layers.0.seq_layer."),
    };
    let json = serde_json::json!({
        "model_kind": model_kind, "vocab_size": 1, "d_model": s.d_model, "num_layers": 1,
        "num_head": s.heads, "d_head": s.d_model / s.heads.max(1), "ngroups": s.groups,
        "chunk_size": s.chunk, "d_ffn": 1,
    });
    let cfg = crate::model::ModelConfig::from_json("<bench layer>", &json, None)?;
    let layer = crate::model::random::random_weights(&cfg, 1)
        .into_iter()
        .filter_map(|(n, shape, v)| Some((n.strip_prefix(prefix)?.to_string(), shape, v)))
        .collect();
    crate::model::Checkpoint::from_f32("<random weights>", layer)
}

fn build_layer(
    ctx: &Context,
    kind: LayerKind,
    s: &LayerShape,
    max_positions: usize,
) -> Result<crate::layers::AnyLayer> {
    use crate::layers::{
        AnyLayer, AttentionConfig, AttentionLayer, MesaConfig, MesaLayer, RatConfig, RatLayer,
    };
    let ck = random_layer_checkpoint(kind, s)?;
    Ok(match kind {
        LayerKind::Mesa => AnyLayer::Mesa(MesaLayer::load(
            ctx,
            MesaConfig {
                hidden: s.d_model,
                heads: s.heads,
                head_dim: s.d_model / s.heads,
                norm_eps: 1e-6,
                cg_iters_prefill: s.cg_iters,
                cg_iters_decode: s.cg_iters,
                solver: s.solver,
            },
            &ck,
            "",
            s.dtype,
        )?),
        LayerKind::Rat => AnyLayer::Rat(RatLayer::load(
            ctx,
            RatConfig {
                d_model: s.d_model,
                heads: s.heads,
                groups: s.groups,
                chunk: s.chunk,
                rope_base: 1e4,
                eps: 1e-6,
                max_positions,
                scale: None,
            },
            &ck,
            "",
            s.dtype,
        )?),
        _ => AnyLayer::Attention(AttentionLayer::load(
            ctx,
            AttentionConfig {
                d_model: s.d_model,
                heads: s.heads,
                window: (kind == LayerKind::Local).then_some(s.window),
                rope_base: 1e4,
                eps: 1e-6,
                max_positions,
                scale: None,
            },
            &ck,
            "",
            s.dtype,
        )?),
    })
}

/// The input every layer of a `bench layers` size gets: `[b, t, d_model]`, deterministic.
pub fn layer_input(ctx: &Context, b: usize, t: usize, s: &LayerShape) -> Result<crate::Tensor> {
    let n = b * t * s.d_model;
    ctx.upload(
        &(0..n)
            .map(|i| ((i * 7919 % 2000) as f32 / 1000.0) - 1.0)
            .collect::<Vec<_>>(),
        &[b, t, s.d_model],
        s.dtype,
    )
}

/// An output's fingerprint: its length and a hash of its bits (a layer bench keeps this, not the
/// output: at the paper sizes an output is gigabytes, and every layer of a size is alive at once).
/// `None` if any value is not finite.
fn fingerprint(got: &[f32]) -> Option<(usize, u64)> {
    use std::hash::{Hash, Hasher};
    if got.iter().any(|v| !v.is_finite()) {
        return None;
    }
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for v in got {
        v.to_bits().hash(&mut h);
    }
    Some((got.len(), h.finish()))
}

/// One layer measurement in progress: the layer is built, its untimed warm-up run and checked,
/// and [`LayerBench::sample`] adds timed samples. `bench layers` interleaves the samples of the
/// layers it compares (one of each in turn), so that a slow phase of the machine falls on all of
/// them alike instead of on one layer's samples.
/// A timed run's recording counts and, for a Mesa layer, its CG steps per row.
type Counted = (crate::record::RecordingStats, Option<crate::Tensor>);

pub struct LayerBench {
    ctx: Context,
    kind: LayerKind,
    shape: LayerShape,
    mode: &'static str,
    batch: usize,
    /// Forward: the sequence length; decode: the position.
    n: usize,
    layer: crate::layers::AnyLayer,
    x: crate::Tensor,
    /// The warm-up output's fingerprint, which every timed run must reproduce.
    reference: (usize, u64),
    first_call_ms: f64,
    times: Vec<f64>,
    /// The recording of the last timed run, counted.
    stats: crate::record::RecordingStats,
    /// Mesa: the CG steps of the last timed run.
    cg: Option<crate::ops::mesa::IterationStats>,
}

impl LayerBench {
    /// Full-sequence forward of one layer, projections included. The untimed warm-up's output
    /// is checked finite, and every timed run must reproduce it bit for bit.
    /// `x` is `[batch, T, d_model]` ([`layer_input`]; the layers compared at one size share it).
    pub fn forward(
        ctx: &Context,
        kind: LayerKind,
        s: &LayerShape,
        x: &crate::Tensor,
    ) -> Result<LayerBench> {
        use crate::layers::SequenceLayer;
        let (batch, t) = (x.shape()[0], x.shape()[1]);
        let x = x.clone();
        ctx.sync()?;
        let t0 = std::time::Instant::now();
        let layer = build_layer(ctx, kind, s, t)?;
        let out = ctx.download(&ctx.run(|rec| layer.forward(rec, &x))?)?;
        let first_call_ms = t0.elapsed().as_secs_f64() * 1e3;
        let Some(reference) = fingerprint(&out) else {
            return Err(crate::Error::Readback(format!(
                "{kind:?} forward produced non-finite values"
            )));
        };
        Ok(LayerBench {
            ctx: ctx.clone(),
            kind,
            shape: s.clone(),
            mode: "forward",
            batch,
            n: t,
            layer,
            x,
            reference,
            first_call_ms,
            times: Vec::new(),
            stats: Default::default(),
            cg: None,
        })
    }

    /// One decode step at `position` with a cache of that length (zeros: the work does not depend
    /// on the values), for the `batch` sequences of `x [batch, 1, d_model]`; room for `samples`
    /// steps past it.
    pub fn decode(
        ctx: &Context,
        kind: LayerKind,
        s: &LayerShape,
        x: &crate::Tensor,
        position: usize,
        samples: usize,
    ) -> Result<LayerBench> {
        let batch = x.shape()[0];
        let x = x.clone();
        ctx.sync()?;
        let t0 = std::time::Instant::now();
        let layer = build_layer(ctx, kind, s, position + samples.max(1) + 2)?;
        let mut m = LayerBench {
            ctx: ctx.clone(),
            kind,
            shape: s.clone(),
            mode: "decode",
            batch,
            n: position,
            layer,
            x,
            reference: (0, 0),
            first_call_ms: 0.0,
            times: Vec::new(),
            stats: Default::default(),
            cg: None,
        };
        let warm = m.decode_step(None)?.0;
        let out = ctx.download(&warm)?;
        m.first_call_ms = t0.elapsed().as_secs_f64() * 1e3;
        let Some(reference) = fingerprint(&out) else {
            return Err(crate::Error::Readback(format!(
                "{kind:?} decode produced non-finite values"
            )));
        };
        m.reference = reference;
        Ok(m)
    }

    /// A step from a fresh cache placed at the position, with the same input every time (so each
    /// output must equal the warm-up's); timed into `times` when given. Returns the step's output
    /// and its recording's counts.
    fn decode_step(&self, times: Option<&mut Vec<f64>>) -> Result<(crate::Tensor, Counted)> {
        let mut cache = self
            .layer
            .new_cache(&self.ctx, self.batch, self.shape.dtype)?;
        cache.bench_seek(self.n);
        self.ctx.sync()?;
        let mut rec = self.ctx.record();
        let (y, iterations) = self.layer.step_solved(&mut rec, &mut cache, &self.x)?;
        let stats = rec.stats();
        match times {
            Some(times) => times.push(rec.submit_timed()?),
            None => rec.submit()?,
        }
        Ok((y, (stats, iterations)))
    }

    pub fn kind(&self) -> LayerKind {
        self.kind
    }

    /// One timed run; its output is read back (outside the timing) and must equal the warm-up's
    /// bit for bit: a run that failed or never ran cannot count.
    pub fn sample(&mut self) -> Result<()> {
        let mut times = std::mem::take(&mut self.times);
        let y = if self.mode == "forward" {
            let mut rec = self.ctx.record();
            self.layer
                .forward_solved(&mut rec, &self.x)
                .and_then(|(y, iterations)| {
                    let stats = rec.stats();
                    times.push(rec.submit_timed()?);
                    Ok((y, (stats, iterations)))
                })
        } else {
            self.decode_step(Some(&mut times))
        };
        self.times = times;
        let y = match y {
            Ok((y, (stats, iterations))) => {
                self.stats = stats;
                self.cg = iterations
                    .map(|t| crate::ops::mesa::IterationStats::read(&self.ctx, &t))
                    .transpose()?;
                Ok(y)
            }
            Err(e) => Err(e),
        };
        let what = format!("{:?} {}", self.kind, self.mode);
        if fingerprint(&self.ctx.download(&y?)?) != Some(self.reference) {
            return Err(crate::Error::Readback(format!(
                "{what}: a timed run did not reproduce the untimed run's output"
            )));
        }
        Ok(())
    }

    /// The measurement from the samples taken so far.
    pub fn result(&self) -> LayerResult {
        // GFLOP/s count the CG steps actually taken (fewer than the cap under the paper's rule).
        let counted = LayerShape {
            cg_iters: self
                .cg
                .map_or(self.shape.cg_iters, |c| c.mean.round() as usize),
            ..self.shape.clone()
        };
        let (kind, s, batch) = (self.kind, &counted, self.batch);
        let r = if self.mode == "forward" {
            let t = self.n;
            let keys: f64 = (0..t).map(|p| keys_at(kind, s, p)).sum();
            let flops = batch as f64 * layer_flops(kind, s, t, keys);
            layer_result(
                &self.ctx,
                kind,
                s,
                "forward",
                batch,
                t,
                None,
                &self.times,
                flops,
                batch * t,
            )
        } else {
            let position = self.n;
            let keys = if kind == LayerKind::Mesa {
                0.0
            } else {
                keys_at(kind, s, position)
            };
            let flops = batch as f64 * layer_flops(kind, s, 1, keys);
            layer_result(
                &self.ctx,
                kind,
                s,
                "decode",
                batch,
                position + 1,
                Some(position),
                &self.times,
                flops,
                batch,
            )
        };
        LayerResult {
            first_call_ms: self.first_call_ms,
            dispatches: self.stats.dispatches,
            min_workgroups: self.stats.min_workgroups,
            cg_solver: (kind == LayerKind::Mesa).then(|| s.solver.name()),
            cg_iterations_max: self.cg.map(|c| c.max),
            cg_iterations_mean: self.cg.map(|c| c.mean),
            ..r
        }
    }
}

/// Forward latency of one layer alone: [`LayerBench::forward`] and `samples` samples.
pub fn layer_forward(
    ctx: &Context,
    kind: LayerKind,
    s: &LayerShape,
    batch: usize,
    t: usize,
    samples: usize,
) -> Result<LayerResult> {
    let mut m = LayerBench::forward(ctx, kind, s, &layer_input(ctx, batch, t, s)?)?;
    for _ in 0..samples.max(1) {
        m.sample()?;
    }
    Ok(m.result())
}

/// Decode latency of one layer alone: [`LayerBench::decode`] and `samples` samples.
pub fn layer_decode(
    ctx: &Context,
    kind: LayerKind,
    s: &LayerShape,
    batch: usize,
    position: usize,
    samples: usize,
) -> Result<LayerResult> {
    let x = layer_input(ctx, batch, 1, s)?;
    let mut m = LayerBench::decode(ctx, kind, s, &x, position, samples)?;
    for _ in 0..samples.max(1) {
        m.sample()?;
    }
    Ok(m.result())
}

/// Assembles a measurement: times → summary, FLOPs → GFLOP/s, tokens → tokens/s.
#[allow(clippy::too_many_arguments)]
fn layer_result(
    ctx: &Context,
    kind: LayerKind,
    s: &LayerShape,
    mode: &'static str,
    batch: usize,
    seq_len: usize,
    position: Option<usize>,
    times: &[f64],
    flops: f64,
    tokens: usize,
) -> LayerResult {
    let time = summarize(times);
    LayerResult {
        layer: kind,
        mode,
        batch,
        seq_len,
        position,
        d_model: s.d_model,
        heads: s.heads,
        chunk: (kind == LayerKind::Rat).then_some(s.chunk),
        window: (kind == LayerKind::Local).then_some(s.window),
        dtype: ctx.resolve_dtype(s.dtype),
        gflops: flops / (time.median_ms * 1e-3) / 1e9,
        tokens_per_s: tokens as f64 / (time.median_ms * 1e-3),
        cache_bytes: cache_bytes(kind, s, position.unwrap_or(seq_len.saturating_sub(1))),
        time,
        first_call_ms: 0.0,
        dispatches: 0,
        min_workgroups: 0,
        schedule: ctx.schedule_summary(),
        cg_solver: None,
        cg_iterations_max: None,
        cg_iterations_mean: None,
    }
}

#[cfg(feature = "cli")]
/// Writes an SVG of forward latency against sequence length, log–log, one line per layer.
pub fn plot_forward(path: &std::path::Path, title: &str, results: &[LayerResult]) -> Result<()> {
    use plotters::prelude::*;
    let io = |e: String| crate::Error::Io {
        path: path.display().to_string(),
        source: std::io::Error::other(e),
    };
    let fwd: Vec<&LayerResult> = results.iter().filter(|r| r.mode == "forward").collect();
    if fwd.is_empty() {
        return Err(io(
            "no forward measurements to plot (use --mode forward or both)".into(),
        ));
    }
    let (tmin, tmax) = fwd.iter().fold((f64::MAX, 0.0f64), |(a, b), r| {
        (a.min(r.seq_len as f64), b.max(r.seq_len as f64))
    });
    let (ymin, ymax) = fwd.iter().fold((f64::MAX, 0.0f64), |(a, b), r| {
        (a.min(r.time.median_ms), b.max(r.time.median_ms))
    });
    let root = SVGBackend::new(path, (900, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| io(e.to_string()))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 16))
        .margin(20)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(
            (tmin * 0.8..tmax * 1.25).log_scale(),
            (ymin * 0.7..ymax * 1.4).log_scale(),
        )
        .map_err(|e| io(e.to_string()))?;
    chart
        .configure_mesh()
        .x_desc("sequence length T (tokens)")
        .y_desc("forward latency (ms, median)")
        .draw()
        .map_err(|e| io(e.to_string()))?;
    let colors = [RED, BLUE, GREEN, MAGENTA, BLACK];
    let mut kinds: Vec<LayerKind> = fwd.iter().map(|r| r.layer).collect();
    kinds.dedup();
    kinds.sort_by_key(|k| *k as u8);
    kinds.dedup();
    for (i, kind) in kinds.iter().enumerate() {
        let color = colors[i % colors.len()];
        let mut pts: Vec<(f64, f64)> = fwd
            .iter()
            .filter(|r| r.layer == *kind)
            .map(|r| (r.seq_len as f64, r.time.median_ms))
            .collect();
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        chart
            .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
            .map_err(|e| io(e.to_string()))?
            .label(format!("{kind:?}"))
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        chart
            .draw_series(pts.into_iter().map(|p| Circle::new(p, 4, color.filled())))
            .map_err(|e| io(e.to_string()))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .draw()
        .map_err(|e| io(e.to_string()))?;
    root.present().map_err(|e| io(e.to_string()))?;
    Ok(())
}

/// End-to-end generation with one model: prefill and decode tokens/s, and what picking the next
/// token costs on each side (CPU: read back the logits rows and take the argmax; GPU: argmax
/// kernel, read back one number per sequence).
#[derive(Clone, Debug, serde::Serialize)]
pub struct ModelResult {
    pub model: String,
    pub kind: String,
    pub layers: usize,
    pub d_model: usize,
    pub vocab: usize,
    pub batch: usize,
    pub prompt_len: usize,
    pub new_tokens: usize,
    pub prefill_ms: f64,
    pub prefill_tokens_per_s: f64,
    pub decode_ms_per_step: f64,
    pub decode_tokens_per_s: f64,
    /// A decode step with the token picked on the CPU (logits read back) / on the GPU.
    pub step_cpu_pick_ms: f64,
    pub step_gpu_pick_ms: f64,
    pub first_call_ms: f64,
    /// Dispatches of one decode step with the token picked on the GPU, counted from its recording.
    pub decode_dispatches: usize,
    /// The kernel schedule (`Context::schedule_summary`).
    pub schedule: String,
    pub adapter: String,
    pub backend: String,
    /// Storage dtype of the weights.
    pub dtype: crate::DType,
    /// Bytes of the weights on the GPU, and of the decode cache of `batch` sequences.
    pub weight_bytes: u64,
    pub cache_bytes: u64,
    /// Loading the model (read, convert, upload), and the process's peak resident host memory
    /// after it (Linux; filled in by the caller, which times the load).
    pub load_s: Option<f64>,
    pub peak_host_bytes: Option<u64>,
    /// One decode step (token picked on the GPU) with the cache at this position, median ms.
    pub position: Option<usize>,
    pub step_at_position_ms: Option<f64>,
}

/// Greedy generation of `new_tokens` after `batch` prompts of `prompt_len` tokens. A short run
/// first builds the pipelines (its time is `first_call_ms`); the timed run's tokens are checked
/// to lie in the vocabulary (a failed run never yields a time).
pub fn model_generation(
    ctx: &Context,
    model: &crate::model::Model,
    name: &str,
    batch: usize,
    prompt_len: usize,
    new_tokens: usize,
    position: Option<usize>,
) -> Result<ModelResult> {
    use crate::model::generate::generate;
    use crate::model::sampling::Sampler;
    let cfg = model.config();
    let v = cfg.vocab_size;
    // Printable ASCII for byte models (text-like), any id otherwise.
    let span = if v >= 128 { 95 } else { v as u32 };
    let base = if v >= 128 { 32 } else { 0 };
    let prompts: Vec<Vec<u32>> = (0..batch)
        .map(|b| {
            (0..prompt_len)
                .map(|i| base + ((i * 7919 + b * 104_729) as u32 % span))
                .collect()
        })
        .collect();
    let t0 = std::time::Instant::now();
    let short: Vec<Vec<u32>> = prompts
        .iter()
        .map(|p| p[..p.len().min(16)].to_vec())
        .collect();
    generate(ctx, model, &short, 2, &mut Sampler::greedy(), |_, _| {})?;
    let first_call_ms = t0.elapsed().as_secs_f64() * 1e3;
    let (out, stats) = generate(
        ctx,
        model,
        &prompts,
        new_tokens,
        &mut Sampler::greedy(),
        |_, _| {},
    )?;
    if out.iter().flatten().any(|&t| t as usize >= v) || out.iter().any(|o| o.len() != new_tokens) {
        return Err(crate::Error::Readback(format!(
            "{name}: generation returned tokens outside the vocabulary"
        )));
    }
    // Picking the next token, measured on whole decode steps (the step's own submit and read-back
    // included) so that the GPU side is charged nothing it would not pay in `generate`: CPU = read
    // back [B, V] logits and take the argmax; GPU = argmax in the step's recording, read back B ids.
    let p = prompt_len.min(64);
    let head: Vec<u32> = prompts.iter().flat_map(|q| q[..p].to_vec()).collect();
    let ids = model.tokens(ctx, &head, batch)?;
    let (_, mut cache) = ctx.run(|rec| model.prefill_last(rec, &ids))?;
    let mut tok: Vec<u32> = vec![base; batch];
    let steps = new_tokens.min(cfg.max_seq_len - p) / 2;
    let (mut cpu, mut gpu) = (Vec::new(), Vec::new());
    let mut dispatches = 0;
    for i in 0..steps {
        let t = std::time::Instant::now();
        let step_ids = model.tokens(ctx, &tok, batch)?;
        if i % 2 == 0 {
            let l = ctx.run(|rec| model.step(rec, &mut cache, &step_ids))?;
            let host = ctx.download(&l)?;
            tok = host
                .chunks(v)
                .map(|r| Sampler::greedy().sample(r))
                .collect();
            cpu.push(t.elapsed().as_secs_f64());
        } else {
            let a = ctx.run(|rec| {
                let l = model.step(rec, &mut cache, &step_ids)?;
                let a = crate::ops::sample::argmax(rec, &l)?;
                dispatches = rec.stats().dispatches;
                Ok(a)
            })?;
            tok = ctx.download(&a)?.iter().map(|&x| x as u32).collect();
            gpu.push(t.elapsed().as_secs_f64());
        }
    }
    if cpu.is_empty() || gpu.is_empty() {
        return Err(crate::Error::invalid(
            "bench model",
            "max_seq_len leaves no room for the token-picking steps",
        ));
    }
    let cache_bytes = cache.bytes();
    drop(cache);
    let step_at_position_ms = position
        .map(|pos| step_at(ctx, model, batch, pos, base))
        .transpose()?;
    let info = ctx.adapter_info();
    Ok(ModelResult {
        model: name.to_string(),
        kind: format!("{:?}", cfg.kind).to_lowercase(),
        layers: cfg.num_layers,
        d_model: cfg.d_model,
        vocab: v,
        batch,
        prompt_len,
        new_tokens,
        prefill_ms: stats.prefill_s * 1e3,
        prefill_tokens_per_s: stats.prefill_tokens_per_s(),
        decode_ms_per_step: stats.decode_s * 1e3 / new_tokens.max(1) as f64,
        decode_tokens_per_s: stats.decode_tokens_per_s(),
        step_cpu_pick_ms: summarize(&cpu).median_ms,
        step_gpu_pick_ms: summarize(&gpu).median_ms,
        first_call_ms,
        decode_dispatches: dispatches,
        schedule: ctx.schedule_summary(),
        adapter: info.name.clone(),
        backend: format!("{:?}", info.backend).to_lowercase(),
        dtype: model.dtype(),
        weight_bytes: model.weight_bytes(),
        cache_bytes,
        load_s: None,
        peak_host_bytes: None,
        position,
        step_at_position_ms,
    })
}

/// Median of 3 decode steps (after one untimed) from a cache placed at `position` without a
/// prompt: the cost of a step depends on how many entries the cache holds, not on their values,
/// and a real 4096-token prefill of a 1.3B model takes minutes on a CPU adapter.
fn step_at(
    ctx: &Context,
    model: &crate::model::Model,
    batch: usize,
    position: usize,
    token: u32,
) -> Result<f64> {
    let max = model.config().max_seq_len;
    if position + 4 > max {
        return Err(crate::Error::invalid(
            "bench model",
            format!(
                "a step at position {position} needs max_seq_len ≥ {} (it is {max})",
                position + 4
            ),
        ));
    }
    let mut cache = model.new_cache(ctx, batch)?;
    cache.bench_seek(position);
    let ids = model.tokens(ctx, &vec![token; batch], batch)?;
    let mut times = Vec::new();
    for i in 0..4 {
        let t = std::time::Instant::now();
        let a = ctx.run(|rec| {
            let l = model.step(rec, &mut cache, &ids)?;
            crate::ops::sample::argmax(rec, &l)
        })?;
        ctx.download(&a)?;
        if i > 0 {
            times.push(t.elapsed().as_secs_f64());
        }
    }
    Ok(summarize(&times).median_ms)
}
