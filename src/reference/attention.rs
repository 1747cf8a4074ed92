//! Reference softmax attention over `[B, T, D]` tensors with `D = heads × dh`.

/// Causal attention; `window = Some(W)`: query t sees keys t−W … t.
#[allow(clippy::too_many_arguments)]
pub fn attention(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    b: usize,
    t: usize,
    heads: usize,
    window: Option<usize>,
    scale: f64,
) -> Vec<f64> {
    let d = q.len() / (b * t);
    let rows = Rows {
        t,
        d,
        dh: d / heads,
    };
    let mut o = vec![0.0; q.len()];
    for bi in 0..b {
        for h in 0..heads {
            for tq in 0..t {
                let at = (bi * t + tq) * d + h * rows.dh;
                o[at..at + rows.dh].copy_from_slice(&attention_row(
                    q,
                    k,
                    v,
                    rows,
                    (bi, h, tq),
                    window,
                    scale,
                ));
            }
        }
    }
    o
}

/// Where the rows of `[B, T, D]` tensors lie, `D = heads × dh`.
#[derive(Clone, Copy, Debug)]
pub struct Rows {
    pub t: usize,
    pub d: usize,
    pub dh: usize,
}

/// One output row of [`attention`]: query `tq` of head `h` in sequence `bi`. For checking a few
/// rows of a long sequence without the whole T² reference.
pub fn attention_row(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    rows: Rows,
    (bi, h, tq): (usize, usize, usize),
    window: Option<usize>,
    scale: f64,
) -> Vec<f64> {
    let Rows { t, d, dh } = rows;
    let lo = window.map_or(0, |w| tq.saturating_sub(w));
    let idx = |tt: usize, i: usize| (bi * t + tt) * d + h * dh + i;
    let scores: Vec<f64> = (lo..=tq)
        .map(|tk| {
            (0..dh)
                .map(|i| q[idx(tq, i)] as f64 * k[idx(tk, i)] as f64)
                .sum::<f64>()
                * scale
        })
        .collect();
    let m = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let w: Vec<f64> = scores.iter().map(|s| (s - m).exp()).collect();
    let sum: f64 = w.iter().sum();
    (0..dh)
        .map(|i| {
            (lo..=tq)
                .zip(&w)
                .map(|(tk, wk)| wk * v[idx(tk, i)] as f64)
                .sum::<f64>()
                / sum
        })
        .collect()
}

/// Shape of a flash-decoding call: `B` sequences of `H` heads, caches of `cap` slots of `dh`,
/// the first `len` slots filled.
#[derive(Clone, Copy, Debug)]
pub struct DecodeShape {
    pub b: usize,
    pub h: usize,
    pub cap: usize,
    pub dh: usize,
    pub len: usize,
}

/// One query per sequence and head, `q [B, H·dh]`, against the first `len` slots of
/// `k, v [B, H, cap, dh]`.
pub fn decode(q: &[f32], k: &[f32], v: &[f32], s: DecodeShape, scale: f64) -> Vec<f64> {
    let DecodeShape { b, h, cap, dh, len } = s;
    let mut o = vec![0.0; b * h * dh];
    for bh in 0..b * h {
        let key = |j: usize, i: usize| (bh * cap + j) * dh + i;
        let scores: Vec<f64> = (0..len)
            .map(|j| {
                (0..dh)
                    .map(|i| q[bh * dh + i] as f64 * k[key(j, i)] as f64)
                    .sum::<f64>()
                    * scale
            })
            .collect();
        let m = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let w: Vec<f64> = scores.iter().map(|x| (x - m).exp()).collect();
        let z: f64 = w.iter().sum();
        for i in 0..dh {
            o[bh * dh + i] = (0..len).map(|j| w[j] * v[key(j, i)] as f64).sum::<f64>() / z;
        }
    }
    o
}
