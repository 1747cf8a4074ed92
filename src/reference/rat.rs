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

/// Head layout and chunking of RAT's ops: `B` sequences of `T` tokens, `heads` heads of `dh`,
/// queries and keys shared by `groups` groups (head h uses group h mod G), chunks of `chunk`.
#[derive(Clone, Copy, Debug)]
pub struct RatDims {
    pub b: usize,
    pub t: usize,
    pub heads: usize,
    pub groups: usize,
    pub dh: usize,
    pub chunk: usize,
}

impl RatDims {
    fn d(&self) -> usize {
        self.heads * self.dh
    }
}

/// The gated scans (spec §2): `g = sigmoid(g_pre + g_bias)`, `h_t = g h_{t−1} + (1 − g) u_t`
/// restarting at every chunk start, for values `v [B, T, D]` and keys `k_grp [B, T, G·dh]`
/// (tiled to the heads). Token `tt` of a sequence sits at position `pos0 + tt`; a token that
/// does not start a chunk continues from `init = (sv, sk)` `[B, D]` (or zeros) at `tt = 0`.
/// Returns (gate, scanned values, scanned keys), each `[B, T, D]`.
pub fn scan(
    s: RatDims,
    v: &[f64],
    g_pre: &[f64],
    g_bias: &[f64],
    k_grp: &[f64],
    pos0: usize,
    init: Option<(&[f64], &[f64])>,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let (d, dg) = (s.d(), s.groups * s.dh);
    let n = s.b * s.t * d;
    let (mut g, mut sv, mut sk) = (vec![0.0; n], vec![0.0; n], vec![0.0; n]);
    for bi in 0..s.b {
        for tt in 0..s.t {
            let r = bi * s.t + tt;
            for ch in 0..d {
                let kc = ((ch / s.dh) % s.groups) * s.dh + ch % s.dh;
                let gg = sigmoid(g_pre[r * d + ch] + g_bias[ch]);
                g[r * d + ch] = gg;
                let (pv, pk) = if (pos0 + tt).is_multiple_of(s.chunk) {
                    (0.0, 0.0)
                } else if tt > 0 {
                    (sv[(r - 1) * d + ch], sk[(r - 1) * d + ch])
                } else {
                    init.map_or((0.0, 0.0), |(iv, ik)| (iv[bi * d + ch], ik[bi * d + ch]))
                };
                sv[r * d + ch] = gg * pv + (1.0 - gg) * v[r * d + ch];
                sk[r * d + ch] = gg * pk + (1.0 - gg) * k_grp[(bi * s.t + tt) * dg + kc];
            }
        }
    }
    (g, sv, sk)
}

/// The inter-chunk attention (spec §2): token t of chunk c attends to the final scanned key and
/// value of every earlier chunk and to its own running state, in one softmax. `q [B, T, G·dh]`,
/// `k, v [B, T, D]`. With `rope_base`, queries are rotated at their chunk index c and keys at
/// theirs (a chunk's final at j, the own key at c); without, the inputs come rotated.
pub fn inter_chunk(
    s: RatDims,
    q: &[f64],
    k: &[f64],
    v: &[f64],
    rope_base: Option<f64>,
) -> Vec<f64> {
    let (d, dh, dg) = (s.d(), s.dh, s.groups * s.dh);
    let rotate = |x: Vec<f64>, pos: usize| match rope_base {
        Some(base) => rot(&x, pos, base),
        None => x,
    };
    let scale = 1.0 / (dh as f64).sqrt();
    let mut o = vec![0.0; s.b * s.t * d];
    for bi in 0..s.b {
        for tt in 0..s.t {
            let r = bi * s.t + tt;
            let c = tt / s.chunk;
            for h in 0..s.heads {
                let grp = h % s.groups;
                let qr = rotate(q[r * dg + grp * dh..r * dg + (grp + 1) * dh].to_vec(), c);
                let head = |row: usize, src: &[f64]| {
                    src[row * d + h * dh..row * d + (h + 1) * dh].to_vec()
                };
                // Keys and values seen: earlier chunks' finals, then the own running state.
                let rows: Vec<(usize, usize)> = (0..c)
                    .map(|j| (bi * s.t + j * s.chunk + s.chunk - 1, j))
                    .chain([(r, c)])
                    .collect();
                let scores: Vec<f64> = rows
                    .iter()
                    .map(|&(row, pos)| {
                        let kr = rotate(head(row, k), pos);
                        qr.iter().zip(&kr).map(|(a, b)| a * b).sum::<f64>() * scale
                    })
                    .collect();
                let m = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = scores.iter().map(|x| (x - m).exp()).collect();
                let z: f64 = e.iter().sum();
                for i in 0..dh {
                    o[r * d + h * dh + i] = rows
                        .iter()
                        .zip(&e)
                        .map(|(&(row, _), ej)| ej * v[row * d + h * dh + i])
                        .sum::<f64>()
                        / z;
                }
            }
        }
    }
    o
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
    // The projection's column blocks [z | x | g | q | k] as separate [B·T, width] tensors.
    let cols = |lo: usize, width: usize| -> Vec<f64> {
        (0..b * t)
            .flat_map(|r| p[r * rows + lo..r * rows + lo + width].to_vec())
            .collect()
    };
    let z: Vec<f64> = cols(0, d).into_iter().map(sigmoid).collect();
    let bias: Vec<f64> = w.gate_bias.iter().map(|&v| v as f64).collect();
    let s = RatDims {
        b,
        t,
        heads: w.heads,
        groups: w.groups,
        dh,
        chunk: w.chunk,
    };
    let (g, sv, sk) = scan(
        s,
        &cols(d, d),
        &cols(2 * d, d),
        &bias,
        &cols(3 * d + dg, dg),
        0,
        None,
    );
    let attn = inter_chunk(s, &cols(3 * d, dg), &sk, &sv, Some(w.rope_base));
    let mut y = vec![0.0; b * t * d];
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
