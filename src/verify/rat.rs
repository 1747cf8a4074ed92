//! Cases of RAT's kernels: the fused gate + intra-chunk scan, its one-token step, and the
//! inter-chunk attention.

use super::{rand, stored, to_f64, Case, Check};
use crate::error::Result;
use crate::ops::rat::{self as rops, Heads};
use crate::reference::rat::{self as rr, RatDims};
use crate::{Context, DType, Tensor};

pub(super) fn cases(dtype: DType) -> Vec<Case> {
    let mut all = Vec::new();
    let dims = |b, t, heads, groups, dh, chunk| RatDims {
        b,
        t,
        heads,
        groups,
        dh,
        chunk,
    };
    // (B, T, H, G, dh, L): ragged T, L = 1, L > T, groups < heads, head dims 16 … 128.
    for (s, long) in [
        (dims(1, 37, 2, 2, 32, 16), false),
        (dims(2, 50, 4, 2, 16, 8), false),
        (dims(3, 19, 2, 1, 16, 1), false),
        (dims(1, 100, 2, 2, 60, 7), false),
        (dims(1, 300, 4, 4, 16, 256), false),
        (dims(1, 40, 2, 1, 128, 16), false),
        (dims(1, 8192, 2, 2, 64, 64), true),
    ] {
        let c = Case::new("rat_scan", shape(&s), dtype, Scan { s, dtype });
        all.push(if long { c.long() } else { c });
    }
    for (s, long) in [
        (dims(1, 37, 2, 2, 32, 16), false),
        (dims(2, 50, 4, 2, 16, 8), false),
        (dims(1, 100, 2, 2, 60, 7), false),
        (dims(1, 65, 1, 1, 128, 4), false),
        (dims(2, 33, 2, 1, 64, 1), false),
        (dims(1, 4096, 2, 1, 64, 4), true),
    ] {
        let c = Attention {
            s,
            dtype,
            variant: None,
        };
        let c = Case::new("rat_attention", shape(&s), dtype, c);
        all.push(if long { c.long() } else { c });
    }
    // Every GPU kernel, forced (`chunkwise tune` checks a variant with these cases before timing
    // it): T not a multiple of the chunk, chunks not a multiple of the key tile, grouped queries,
    // head dims 60 and 128.
    for variant in crate::tune::rat_attention_variants() {
        for s in [dims(1, 100, 2, 2, 60, 7), dims(2, 65, 2, 1, 128, 4)] {
            let label = format!("{} {}", shape(&s), super::fwd_variant_label(variant));
            let c = Attention {
                s,
                dtype,
                variant: Some(variant),
            };
            all.push(Case::new("rat_attention", label, dtype, c));
        }
    }
    // One decode token: continuing the running state, or starting a chunk.
    for (s, reset, long) in [
        (dims(1, 1, 2, 2, 32, 16), false, false),
        (dims(3, 1, 4, 2, 16, 16), true, false),
        (dims(2, 1, 2, 2, 60, 16), false, false),
        (dims(16, 1, 16, 2, 128, 16), false, false),
        (dims(256, 1, 16, 2, 128, 16), true, true),
    ] {
        let name = format!(
            "{} {}",
            shape(&s),
            if reset { "chunk start" } else { "continuing" }
        );
        let c = Case::new("rat_step", name, dtype, Step { s, reset, dtype });
        all.push(if long { c.long() } else { c });
    }
    all
}

fn shape(s: &RatDims) -> String {
    format!(
        "b{} t{} h{} g{} dh{} L{}",
        s.b, s.t, s.heads, s.groups, s.dh, s.chunk
    )
}

fn heads(s: &RatDims) -> Result<Heads> {
    Heads::new(s.heads * s.dh, s.heads, s.groups)
}

/// v and g_pre `[B, T, D]`, the gate bias `[D]`, the grouped keys `[B, T, G·dh]`.
fn scan_inputs(s: &RatDims, seed: u64, dtype: DType) -> [Vec<f32>; 4] {
    let (d, dg, bt) = (s.heads * s.dh, s.groups * s.dh, s.b * s.t);
    [
        stored(&rand(bt * d, seed, 1.5), dtype),
        stored(&rand(bt * d, seed + 1, 3.0), dtype),
        stored(
            &rand(d, seed + 2, 1.0)
                .iter()
                .map(|v| 1.5 + v)
                .collect::<Vec<_>>(),
            dtype,
        ),
        stored(&rand(bt * dg, seed + 3, 1.5), dtype),
    ]
}

struct Scan {
    s: RatDims,
    dtype: DType,
}

impl Check for Scan {
    fn gpu(&self, ctx: &Context) -> Result<Vec<Tensor>> {
        let s = &self.s;
        let [v, g, bias, k] = scan_inputs(s, 5, self.dtype);
        let (d, dg) = (s.heads * s.dh, s.groups * s.dh);
        let up = |x: &[f32], sh: &[usize]| ctx.upload(x, sh, self.dtype);
        let (vt, gt) = (up(&v, &[s.b, s.t, d])?, up(&g, &[s.b, s.t, d])?);
        let (bt, kt) = (up(&bias, &[d])?, up(&k, &[s.b, s.t, dg])?);
        let (sv, sk) = ctx.run(|rec| rops::scan(rec, &vt, &gt, &bt, &kt, heads(s)?, s.chunk))?;
        Ok(vec![sv, sk])
    }
    fn reference(&self) -> Vec<f64> {
        let [v, g, bias, k] = scan_inputs(&self.s, 5, self.dtype);
        let (_, mut sv, sk) = rr::scan(
            self.s,
            &to_f64(&v),
            &to_f64(&g),
            &to_f64(&bias),
            &to_f64(&k),
            0,
            None,
        );
        sv.extend(sk);
        sv
    }
}

struct Attention {
    s: RatDims,
    dtype: DType,
    /// Forces this GPU kernel (`ops::rat::inter_chunk_attention_with`).
    variant: Option<crate::ops::attention::FwdVariant>,
}

impl Attention {
    /// Rotated queries `[B, T, G·dh]`, rotated scanned keys and scanned values `[B, T, D]`.
    fn inputs(&self) -> [Vec<f32>; 3] {
        let s = &self.s;
        let (d, dg, bt) = (s.heads * s.dh, s.groups * s.dh, s.b * s.t);
        [
            stored(&rand(bt * dg, 21, 1.0), self.dtype),
            stored(&rand(bt * d, 22, 1.0), self.dtype),
            stored(&rand(bt * d, 23, 1.0), self.dtype),
        ]
    }
}

impl Check for Attention {
    fn gpu(&self, ctx: &Context) -> Result<Vec<Tensor>> {
        let s = &self.s;
        let [q, k, v] = self.inputs();
        let (d, dg) = (s.heads * s.dh, s.groups * s.dh);
        let qt = ctx.upload(&q, &[s.b, s.t, dg], self.dtype)?;
        let kt = ctx.upload(&k, &[s.b, s.t, d], self.dtype)?;
        let vt = ctx.upload(&v, &[s.b, s.t, d], self.dtype)?;
        let hs = heads(s)?;
        let o = ctx.run(|rec| {
            rops::inter_chunk_attention_with(rec, &qt, &kt, &vt, hs, s.chunk, None, self.variant)
        })?;
        Ok(vec![o])
    }
    fn reference(&self) -> Vec<f64> {
        let [q, k, v] = self.inputs();
        rr::inter_chunk(self.s, &to_f64(&q), &to_f64(&k), &to_f64(&v), None)
    }
}

struct Step {
    s: RatDims,
    reset: bool,
    dtype: DType,
}

impl Step {
    /// The running states before the step, `[B, D]` each.
    fn states(&self) -> [Vec<f32>; 2] {
        let n = self.s.b * self.s.heads * self.s.dh;
        [31, 32].map(|seed| stored(&rand(n, seed, 1.0), self.dtype))
    }
}

impl Check for Step {
    fn gpu(&self, ctx: &Context) -> Result<Vec<Tensor>> {
        let s = &self.s;
        let [v, g, bias, k] = scan_inputs(s, 9, self.dtype);
        let [sv0, sk0] = self.states();
        let (d, dg) = (s.heads * s.dh, s.groups * s.dh);
        let up = |x: &[f32], sh: &[usize]| ctx.upload(x, sh, self.dtype);
        let (vt, gt) = (up(&v, &[s.b, 1, d])?, up(&g, &[s.b, 1, d])?);
        let (bt, kt) = (up(&bias, &[d])?, up(&k, &[s.b, 1, dg])?);
        let (sv, sk) = (up(&sv0, &[s.b, 1, d])?, up(&sk0, &[s.b, 1, d])?);
        ctx.run(|rec| rops::step(rec, &vt, &gt, &bt, &kt, &sv, &sk, heads(s)?, self.reset))?;
        Ok(vec![sv, sk])
    }
    fn reference(&self) -> Vec<f64> {
        let [v, g, bias, k] = scan_inputs(&self.s, 9, self.dtype);
        let [sv0, sk0] = self.states();
        // Position 0 of chunks of 2 starts a chunk; position 1 continues from the states.
        let s = RatDims { chunk: 2, ..self.s };
        let pos0 = if self.reset { 0 } else { 1 };
        let init = (to_f64(&sv0), to_f64(&sk0));
        let (_, mut sv, sk) = rr::scan(
            s,
            &to_f64(&v),
            &to_f64(&g),
            &to_f64(&bias),
            &to_f64(&k),
            pos0,
            Some((&init.0, &init.1)),
        );
        sv.extend(sk);
        sv
    }
}
