//! Reference RAT layer (spec/rat.md §2), written as the spec reads: a sequential recurrence and an
//! explicit softmax over earlier chunk states plus the own running state, per token.

use super::basic::{rmsnorm, sigmoid};

/// Weights and shape of one RAT layer, in the upstream layout.
pub struct RatWeights<'a> {
    pub in_proj: &'a [f32],    // [3D + 2·G·dh, D]
    pub gate_bias: &'a [f32],  // [D]
    pub input_norm: &'a [f32], // [D]
    pub out_proj: &'a [f32],   // [D, D]
    pub heads: usize,
    pub groups: usize,
    pub chunk: usize,
    pub rope_base: f64,
    pub eps: f64,
}

/// Intermediates the golden cases also store (`dbg.*`), all `[B, T, D]`.
pub struct RatTrace {
    pub z: Vec<f64>,
    pub g: Vec<f64>,
    pub intra_v: Vec<f64>,
    pub intra_k: Vec<f64>,
    pub attn: Vec<f64>,
    pub y: Vec<f64>,
}

fn rot(v: &[f64], pos: usize, base: f64) -> Vec<f64> {
    let dh = v.len();
    let half = dh / 2;
    let mut out = vec![0.0; dh];
    for i in 0..half {
        let a = pos as f64 * base.powf(-2.0 * i as f64 / dh as f64);
        let (s, c) = a.sin_cos();
        out[i] = v[i] * c - v[i + half] * s;
        out[i + half] = v[i + half] * c + v[i] * s;
    }
    out
}

/// The layer on `x [B, T, D]`.
pub fn rat_layer(x: &[f32], b: usize, t: usize, w: &RatWeights) -> RatTrace {
    let d = w.gate_bias.len();
    let dh = d / w.heads;
    let dg = w.groups * dh;
    let rows = 3 * d + 2 * dg;
    let u = rmsnorm(x, w.input_norm, w.eps);
    let mut p = vec![0.0; b * t * rows];
    for r in 0..b * t {
        for o in 0..rows {
            p[r * rows + o] = (0..d)
                .map(|i| u[r * d + i] * w.in_proj[o * d + i] as f64)
                .sum();
        }
    }
    let at = |r: usize, o: usize| p[r * rows + o];
    let n = b * t * d;
    let (mut z, mut g, mut sv, mut sk, mut attn, mut y) = (
        vec![0.0; n],
        vec![0.0; n],
        vec![0.0; n],
        vec![0.0; n],
        vec![0.0; n],
        vec![0.0; n],
    );
    for bi in 0..b {
        for tt in 0..t {
            let r = bi * t + tt;
            for ch in 0..d {
                let kc = ((ch / dh) % w.groups) * dh + ch % dh;
                z[r * d + ch] = sigmoid(at(r, ch));
                let gg = sigmoid(at(r, 2 * d + ch) + w.gate_bias[ch] as f64);
                g[r * d + ch] = gg;
                let (pv, pk) = if tt % w.chunk == 0 {
                    (0.0, 0.0)
                } else {
                    (sv[(r - 1) * d + ch], sk[(r - 1) * d + ch])
                };
                sv[r * d + ch] = gg * pv + (1.0 - gg) * at(r, d + ch);
                sk[r * d + ch] = gg * pk + (1.0 - gg) * at(r, 3 * d + dg + kc);
            }
        }
        for tt in 0..t {
            let r = bi * t + tt;
            let c = tt / w.chunk;
            for h in 0..w.heads {
                let grp = h % w.groups;
                let q: Vec<f64> = (0..dh).map(|i| at(r, 3 * d + grp * dh + i)).collect();
                let qr = rot(&q, c, w.rope_base);
                let head = |row: usize, src: &Vec<f64>| -> Vec<f64> {
                    (0..dh).map(|i| src[row * d + h * dh + i]).collect()
                };
                let mut scores = Vec::new();
                let mut values = Vec::new();
                for j in 0..c {
                    let fr = bi * t + j * w.chunk + w.chunk - 1;
                    let kr = rot(&head(fr, &sk), j, w.rope_base);
                    scores.push(
                        qr.iter().zip(&kr).map(|(a, b)| a * b).sum::<f64>() / (dh as f64).sqrt(),
                    );
                    values.push(head(fr, &sv));
                }
                let own_k = head(r, &sk);
                scores.push(
                    q.iter().zip(&own_k).map(|(a, b)| a * b).sum::<f64>() / (dh as f64).sqrt(),
                );
                values.push(head(r, &sv));
                let m = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = scores.iter().map(|s| (s - m).exp()).collect();
                let zsum: f64 = e.iter().sum();
                for i in 0..dh {
                    attn[r * d + h * dh + i] = e
                        .iter()
                        .zip(&values)
                        .map(|(ej, vj)| ej * vj[i])
                        .sum::<f64>()
                        / zsum;
                }
            }
        }
    }
    for r in 0..b * t {
        for o in 0..d {
            let s: f64 = (0..d)
                .map(|i| z[r * d + i] * attn[r * d + i] * w.out_proj[o * d + i] as f64)
                .sum();
            y[r * d + o] = x[r * d + o] as f64 + s;
        }
    }
    RatTrace {
        z,
        g,
        intra_v: sv,
        intra_k: sk,
        attn,
        y,
    }
}
