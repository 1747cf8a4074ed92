//! Cases of softmax attention: flash forward (causal and sliding window), KV-cache writes and
//! flash-decoding.

use super::{rand, stored, Case, Check};
use crate::error::Result;
use crate::ops::attention as attn;
use crate::reference::attention as ra;
use crate::{Context, DType, Tensor};

pub(super) fn cases(dtype: DType) -> Vec<Case> {
    let mut all = Vec::new();
    // Causal (b, t, heads, dh): odd T, head dims 4 … 128 (60 among them), batch > 1.
    for &(b, t, h, dh, long) in &[
        (1, 37, 2, 32, false),
        (2, 130, 2, 64, false),
        (1, 70, 1, 128, false),
        (1, 65, 3, 60, false),
        (1, 1, 1, 4, false),
        (1, 2048, 1, 128, true),
    ] {
        let c = Fwd {
            b,
            t,
            h,
            dh,
            window: None,
            dtype,
            variant: None,
            pass_keys: None,
        };
        let c = Case::new("attention", c.shape(), dtype, c);
        all.push(if long { c.long() } else { c });
    }
    // Sliding windows (query t sees keys t−W … t), including W = 0 and windows around a tile.
    for &(b, t, h, dh, w, long) in &[
        (2, 150, 2, 32, 0, false),
        (2, 150, 2, 32, 1, false),
        (2, 150, 2, 32, 8, false),
        (2, 150, 2, 32, 63, false),
        (2, 150, 2, 32, 64, false),
        (2, 150, 2, 32, 200, false),
        (1, 65, 3, 60, 20, false),
        (1, 70, 1, 128, 33, false),
        (1, 4096, 2, 64, 256, true),
    ] {
        let c = Fwd {
            b,
            t,
            h,
            dh,
            window: Some(w),
            dtype,
            variant: None,
            pass_keys: None,
        };
        let c = Case::new("attention_window", c.shape(), dtype, c);
        all.push(if long { c.long() } else { c });
    }
    // Every GPU forward kernel, forced (`chunkwise tune` checks a variant with these cases before
    // timing it): T not a multiple of the query block or key tile, causal and windowed, head dims
    // the variant takes (the tensor-core ones multiples of their matrix edge); several passes at a
    // lowered pass length, and at a window longer than a pass.
    for variant in attn::FwdVariant::all() {
        let dhs: &[usize] = match variant.coop_size() {
            Some(_) => &[16, 32, 64],
            None => &[32, 60, 16],
        };
        for &(b, t, h, dh, window, pass_keys) in &[
            (1, 37, 2, dhs[0], None, None),
            (2, 130, 2, dhs[1], None, None),
            (1, 130, 3, dhs[2], Some(20), None),
            (1, 37, 1, 128, None, None),
            (2, 130, 1, 64, None, Some(48)),
            (1, 150, 2, dhs[0], Some(70), Some(40)),
        ] {
            let c = Fwd {
                b,
                t,
                h,
                dh,
                window,
                dtype,
                variant: Some(variant),
                pass_keys,
            };
            let family = if window.is_some() {
                "attention_window"
            } else {
                "attention"
            };
            all.push(Case::new(family, c.shape(), dtype, c));
        }
    }
    // KV writes (b, heads, dh, cap, tokens, first position): around the ring's end.
    for &(b, h, dh, cap, n, pos0, long) in &[
        (2, 2, 4, 5, 3, 4, false),
        (1, 3, 60, 16, 7, 13, false),
        (3, 2, 128, 40, 40, 0, false),
        (2, 16, 128, 4096, 4096, 100, true),
    ] {
        let shape = format!("b{b} h{h} dh{dh} cap{cap} n{n} pos{pos0}");
        let c = KvWrite {
            b,
            h,
            dh,
            cap,
            n,
            pos0,
            dtype,
        };
        let c = Case::new("kv_write", shape, dtype, c);
        all.push(if long { c.long() } else { c }.exact());
    }
    // Flash-decoding (b, heads, dh, cap, len): one key, several splits, ragged ends.
    for &(b, h, dh, cap, len, long) in &[
        (1, 2, 32, 40, 1, false),
        (3, 2, 64, 300, 257, false),
        (2, 3, 60, 200, 131, false),
        (1, 1, 128, 5000, 4999, false),
        (16, 4, 64, 4096, 4096, true),
    ] {
        let c = Decode {
            s: ra::DecodeShape { b, h, cap, dh, len },
            dtype,
        };
        let c = Case::new(
            "attention_decode",
            format!("b{b} h{h} dh{dh} cap{cap} len{len}"),
            dtype,
            c,
        );
        all.push(if long { c.long() } else { c });
    }
    all
}

struct Fwd {
    b: usize,
    t: usize,
    h: usize,
    dh: usize,
    window: Option<usize>,
    dtype: DType,
    /// Forces this GPU kernel (`attn::attention_with`).
    variant: Option<attn::FwdVariant>,
    /// Keys per pass, lowered to run several passes at small T.
    pass_keys: Option<usize>,
}

/// The shape-label suffix of a case that forces a GPU attention forward kernel.
pub fn fwd_variant_label(v: attn::FwdVariant) -> String {
    format!("variant {}", v.name())
}

impl Fwd {
    fn shape(&self) -> String {
        let w = self.window.map_or(String::new(), |w| format!(" w{w}"));
        let passes = self
            .pass_keys
            .map_or(String::new(), |n| format!(" passes of {n}"));
        let variant = self
            .variant
            .map_or(String::new(), |v| format!(" {}", fwd_variant_label(v)));
        format!(
            "b{} t{} h{} dh{}{w}{passes}{variant}",
            self.b, self.t, self.h, self.dh
        )
    }
    fn inputs(&self) -> [Vec<f32>; 3] {
        let n = self.b * self.t * self.h * self.dh;
        [1, 2, 3].map(|s| stored(&rand(n, s + self.t as u64, 1.0), self.dtype))
    }
}

impl Check for Fwd {
    fn gpu(&self, ctx: &Context) -> Result<Vec<Tensor>> {
        let [q, k, v] = self.inputs();
        let shape = [self.b, self.t, self.h * self.dh];
        let up = |x: &[f32]| ctx.upload(x, &shape, self.dtype);
        let (qt, kt, vt) = (up(&q)?, up(&k)?, up(&v)?);
        Ok(vec![ctx.run(|rec| {
            attn::attention_passes(
                rec,
                &qt,
                &kt,
                &vt,
                self.h,
                self.window,
                None,
                self.variant,
                self.pass_keys,
            )
        })?])
    }
    fn reference(&self) -> Vec<f64> {
        let [q, k, v] = self.inputs();
        let scale = 1.0 / (self.dh as f64).sqrt();
        ra::attention(&q, &k, &v, self.b, self.t, self.h, self.window, scale)
    }
}

/// Tokens of `src [B, n, H·dh]` written at positions pos0 … into a ring cache of `cap` slots
/// that already holds other values: the whole cache is compared.
struct KvWrite {
    b: usize,
    h: usize,
    dh: usize,
    cap: usize,
    n: usize,
    pos0: usize,
    dtype: DType,
}

impl KvWrite {
    fn inputs(&self) -> (Vec<f32>, Vec<f32>) {
        let cache = stored(
            &rand(self.b * self.h * self.cap * self.dh, 11, 1.0),
            self.dtype,
        );
        let src = stored(
            &rand(self.b * self.n * self.h * self.dh, 12, 1.0),
            self.dtype,
        );
        (cache, src)
    }
}

impl Check for KvWrite {
    fn gpu(&self, ctx: &Context) -> Result<Vec<Tensor>> {
        let (cache, src) = self.inputs();
        let ct = ctx.upload(&cache, &[self.b, self.h, self.cap, self.dh], self.dtype)?;
        let st = ctx.upload(&src, &[self.b, self.n, self.h * self.dh], self.dtype)?;
        ctx.run(|rec| attn::kv_write(rec, &st, 0, &ct, self.pos0))?;
        Ok(vec![ct])
    }
    fn reference(&self) -> Vec<f64> {
        let (cache, src) = self.inputs();
        let mut out: Vec<f64> = cache.iter().map(|&v| v as f64).collect();
        for bi in 0..self.b {
            for tok in 0..self.n {
                let slot = (self.pos0 + tok) % self.cap;
                for hh in 0..self.h {
                    for i in 0..self.dh {
                        out[((bi * self.h + hh) * self.cap + slot) * self.dh + i] =
                            src[((bi * self.n + tok) * self.h + hh) * self.dh + i] as f64;
                    }
                }
            }
        }
        out
    }
}

struct Decode {
    s: ra::DecodeShape,
    dtype: DType,
}

impl Decode {
    fn inputs(&self) -> [Vec<f32>; 3] {
        let ra::DecodeShape { b, h, cap, dh, len } = self.s;
        [
            stored(&rand(b * h * dh, len as u64, 1.0), self.dtype),
            stored(&rand(b * h * cap * dh, 7, 1.0), self.dtype),
            stored(&rand(b * h * cap * dh, 8, 1.0), self.dtype),
        ]
    }
}

impl Check for Decode {
    fn gpu(&self, ctx: &Context) -> Result<Vec<Tensor>> {
        let ra::DecodeShape { b, h, cap, dh, len } = self.s;
        let [q, k, v] = self.inputs();
        let qt = ctx.upload(&q, &[b, 1, h * dh], self.dtype)?;
        let kc = ctx.upload(&k, &[b, h, cap, dh], self.dtype)?;
        let vc = ctx.upload(&v, &[b, h, cap, dh], self.dtype)?;
        Ok(vec![
            ctx.run(|rec| attn::decode(rec, &qt, &kc, &vc, len, None))?
        ])
    }
    fn reference(&self) -> Vec<f64> {
        let [q, k, v] = self.inputs();
        ra::decode(&q, &k, &v, self.s, 1.0 / (self.s.dh as f64).sqrt())
    }
}
