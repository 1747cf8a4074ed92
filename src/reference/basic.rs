//! References for the basic families: GEMM, RMSNorm, elementwise, softmax, RoPE.

/// `y[b] = x[b] · w[b or 0]ᵀ`; x `[b, m, k]`, w `[n, k]` (shared) or `[b, n, k]`.
pub fn gemm(x: &[f32], w: &[f32], b: usize, m: usize, n: usize, k: usize) -> Vec<f64> {
    let w_batched = w.len() == b * n * k && b > 1;
    let mut y = vec![0.0; b * m * n];
    for bi in 0..b {
        let wo = if w_batched { bi * n * k } else { 0 };
        for i in 0..m {
            for j in 0..n {
                let mut s = 0.0f64;
                for l in 0..k {
                    s += x[bi * m * k + i * k + l] as f64 * w[wo + j * k + l] as f64;
                }
                y[bi * m * n + i * n + j] = s;
            }
        }
    }
    y
}

pub fn rmsnorm(x: &[f32], w: &[f32], eps: f64) -> Vec<f64> {
    let d = w.len();
    let mut y = vec![0.0; x.len()];
    for (row, out) in x.chunks(d).zip(y.chunks_mut(d)) {
        let ms = row.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / d as f64;
        let inv = 1.0 / (ms + eps).sqrt();
        for i in 0..d {
            out[i] = row[i] as f64 * inv * w[i] as f64;
        }
    }
    y
}

pub fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}
pub fn softplus(x: f64) -> f64 {
    x.max(0.0) + (-x.abs()).exp().ln_1p()
}
pub fn silu(x: f64) -> f64 {
    x * sigmoid(x)
}
pub fn logsigmoid(x: f64) -> f64 {
    -softplus(-x)
}
/// erf by its Maclaurin series (|x| < 3) or asymptotic continued fraction: f64-accurate enough for an oracle.
pub fn erf(x: f64) -> f64 {
    let z = x.abs();
    let r = if z < 3.0 {
        let mut term = z;
        let mut sum = z;
        let mut n = 0;
        while term.abs() > 1e-17 * sum.abs() && n < 200 {
            n += 1;
            term *= -z * z / n as f64;
            sum += term / (2 * n + 1) as f64;
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    } else {
        // erfc via Lentz's continued fraction
        let mut f = z;
        for k in (1..60).rev() {
            f = z + (k as f64 / 2.0) / f;
        }
        1.0 - (-z * z).exp() / (f * std::f64::consts::PI.sqrt())
    };
    r.copysign(x)
}
pub fn gelu(x: f64) -> f64 {
    0.5 * x * (1.0 + erf(x / std::f64::consts::SQRT_2))
}

pub fn softmax(x: &[f32], d: usize, temperature: f64) -> Vec<f64> {
    let mut y = vec![0.0; x.len()];
    for (row, out) in x.chunks(d).zip(y.chunks_mut(d)) {
        let m = row
            .iter()
            .map(|&v| v as f64 / temperature)
            .fold(f64::NEG_INFINITY, f64::max);
        let s: f64 = row
            .iter()
            .map(|&v| (v as f64 / temperature - m).exp())
            .sum();
        for i in 0..d {
            out[i] = (row[i] as f64 / temperature - m).exp() / s;
        }
    }
    y
}

/// Rotate-half RoPE of `x [rows, heads·dh]`, row r at `positions[r mod len]`, frequency base `base`.
pub fn rope(x: &[f32], dh: usize, heads: usize, positions: &[usize], base: f64) -> Vec<f64> {
    let d = heads * dh;
    let half = dh / 2;
    let mut y = vec![0.0; x.len()];
    for (r, (row, out)) in x.chunks(d).zip(y.chunks_mut(d)).enumerate() {
        let pos = positions[r % positions.len()] as f64;
        for h in 0..heads {
            for i in 0..half {
                let a = pos * base.powf(-2.0 * i as f64 / dh as f64);
                let (s, c) = a.sin_cos();
                let lo = row[h * dh + i] as f64;
                let hi = row[h * dh + half + i] as f64;
                out[h * dh + i] = lo * c - hi * s;
                out[h * dh + half + i] = hi * c + lo * s;
            }
        }
    }
    y
}

/// Index of the first maximum of a row; NaN never wins (the greedy sampler's rule).
pub fn argmax(row: &[f32]) -> usize {
    row.iter()
        .enumerate()
        .fold(
            (0, f32::NEG_INFINITY),
            |b, (i, &v)| if v > b.1 { (i, v) } else { b },
        )
        .0
}

/// Rows of `table [V, D]` at `ids`.
pub fn embedding(table: &[f32], d: usize, ids: &[u32]) -> Vec<f64> {
    ids.iter()
        .flat_map(|&i| {
            table[i as usize * d..(i as usize + 1) * d]
                .iter()
                .map(|&v| v as f64)
        })
        .collect()
}
