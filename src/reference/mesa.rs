//! Reference Mesa core op (spec/mesa.md §2, §4, §7) in float64, token by token: the states are
//! materialised per token and the system solved either exactly (Cholesky) or by the reference CG
//! iteration. Chunking does not change the CG result (spec §5), so this is also the oracle of the
//! chunked GPU path.

/// Shapes: q, k, v `[B, T, H, D]`; g, beta `[B, T, H]`; lamb `[H, D]`; states `[B, H, D, D]`.
#[derive(Clone, Copy, Debug)]
pub struct MesaShape {
    pub b: usize,
    pub t: usize,
    pub h: usize,
    pub d: usize,
}

/// How the per-token system is solved.
#[derive(Clone, Copy, Debug)]
pub enum Solve {
    /// Exact solve.
    Exact,
    /// The reference CG: `iters` iterations, `+1e-5` in both denominators; x0 = 0 (parallel
    /// path) or the Jacobi guess q / (diag(H) + lamb + 1e-5) (decode path).
    Cg { iters: usize, jacobi: bool },
    /// The paper's CG (MesaNet, Appendix C, Algorithm 1): x0 = q / diag(H + Λ), no guards, stop
    /// once sqrt(δ) ≤ tol·sqrt(δ0), at most `max_iters` steps.
    Paper { max_iters: usize, tol: f64 },
}

/// Solves (Hm + diag(lamb)) x = q.
pub fn solve(hm: &[f64], lamb: &[f64], q: &[f64], how: Solve) -> Vec<f64> {
    solve_counted(hm, lamb, q, how).0
}

/// [`solve`], and the CG steps taken (0 for the exact solve).
pub fn solve_counted(hm: &[f64], lamb: &[f64], q: &[f64], how: Solve) -> (Vec<f64>, usize) {
    let d = q.len();
    let apply = |p: &[f64]| -> Vec<f64> {
        (0..d)
            .map(|i| (0..d).map(|j| hm[i * d + j] * p[j]).sum::<f64>() + lamb[i] * p[i])
            .collect()
    };
    match how {
        Solve::Exact => {
            // Cholesky of A = Hm + diag(lamb) (SPD).
            let mut l = vec![0.0; d * d];
            for i in 0..d {
                for j in 0..=i {
                    let mut s = hm[i * d + j] + if i == j { lamb[i] } else { 0.0 };
                    for k in 0..j {
                        s -= l[i * d + k] * l[j * d + k];
                    }
                    l[i * d + j] = if i == j { s.sqrt() } else { s / l[j * d + j] };
                }
            }
            let mut y = vec![0.0; d];
            for i in 0..d {
                y[i] = (q[i] - (0..i).map(|k| l[i * d + k] * y[k]).sum::<f64>()) / l[i * d + i];
            }
            let mut x = vec![0.0; d];
            for i in (0..d).rev() {
                x[i] = (y[i] - (i + 1..d).map(|k| l[k * d + i] * x[k]).sum::<f64>()) / l[i * d + i];
            }
            (x, 0)
        }
        Solve::Paper { max_iters, tol } => {
            let mut x: Vec<f64> = (0..d).map(|i| q[i] / (hm[i * d + i] + lamb[i])).collect();
            let ax = apply(&x);
            let mut r: Vec<f64> = (0..d).map(|i| q[i] - ax[i]).collect();
            let mut p = r.clone();
            let mut delta: f64 = r.iter().map(|v| v * v).sum();
            let delta0 = delta;
            let mut steps = 0;
            while steps < max_iters && delta > tol * tol * delta0 {
                let a = apply(&p);
                let pa: f64 = p.iter().zip(&a).map(|(u, v)| u * v).sum();
                if pa <= 0.0 {
                    break;
                }
                let alpha = delta / pa;
                for i in 0..d {
                    x[i] += alpha * p[i];
                    r[i] -= alpha * a[i];
                }
                let dn: f64 = r.iter().map(|v| v * v).sum();
                let beta = dn / delta;
                for i in 0..d {
                    p[i] = r[i] + beta * p[i];
                }
                delta = dn;
                steps += 1;
            }
            (x, steps)
        }
        Solve::Cg { iters, jacobi } => {
            let mut x: Vec<f64> = if jacobi {
                (0..d)
                    .map(|i| q[i] / (hm[i * d + i] + lamb[i] + 1e-5))
                    .collect()
            } else {
                vec![0.0; d]
            };
            let ax = apply(&x);
            let mut r: Vec<f64> = (0..d).map(|i| q[i] - ax[i]).collect();
            let mut p = r.clone();
            let mut delta: f64 = r.iter().map(|v| v * v).sum();
            for _ in 0..iters {
                let a = apply(&p);
                let alpha = delta / (p.iter().zip(&a).map(|(u, v)| u * v).sum::<f64>() + 1e-5);
                for i in 0..d {
                    x[i] += alpha * p[i];
                    r[i] -= alpha * a[i];
                }
                let dn: f64 = r.iter().map(|v| v * v).sum();
                let beta = dn / (delta + 1e-5);
                for i in 0..d {
                    p[i] = r[i] + beta * p[i];
                }
                delta = dn;
            }
            (x, iters)
        }
    }
}

/// Output `[B, T, H, D]` and final states `(h_kk, h_kv)` `[B, H, D, D]`. With `decode_from = Some(P)`,
/// tokens from P on use the decode solve (Jacobi start) and tokens before P the parallel one.
#[allow(clippy::too_many_arguments)]
pub fn core(
    s: MesaShape,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    g: &[f32],
    beta: &[f32],
    lamb: &[f32],
    init: Option<(&[f32], &[f32])>,
    parallel: Solve,
    decode: Option<(usize, Solve)>,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let MesaShape { b, t, h, d } = s;
    let mut o = vec![0.0; b * t * h * d];
    let mut fkk = vec![0.0; b * h * d * d];
    let mut fkv = vec![0.0; b * h * d * d];
    for bi in 0..b {
        for hh in 0..h {
            let st = (bi * h + hh) * d * d;
            let mut hkk: Vec<f64> = init.map_or(vec![0.0; d * d], |(kk, _)| {
                kk[st..st + d * d].iter().map(|&x| x as f64).collect()
            });
            let mut hkv: Vec<f64> = init.map_or(vec![0.0; d * d], |(_, kv)| {
                kv[st..st + d * d].iter().map(|&x| x as f64).collect()
            });
            let lam: Vec<f64> = lamb[hh * d..(hh + 1) * d]
                .iter()
                .map(|&x| x as f64)
                .collect();
            for tt in 0..t {
                let row = ((bi * t + tt) * h + hh) * d;
                let gi = (bi * t + tt) * h + hh;
                let (gamma, bt) = ((g[gi] as f64).exp(), beta[gi] as f64);
                for i in 0..d {
                    for j in 0..d {
                        hkk[i * d + j] =
                            gamma * hkk[i * d + j] + bt * k[row + i] as f64 * k[row + j] as f64;
                        hkv[i * d + j] =
                            gamma * hkv[i * d + j] + bt * k[row + i] as f64 * v[row + j] as f64;
                    }
                }
                let qv: Vec<f64> = q[row..row + d].iter().map(|&x| x as f64).collect();
                let how = match decode {
                    Some((p, how)) if tt >= p => how,
                    _ => parallel,
                };
                let x = solve(&hkk, &lam, &qv, how);
                for j in 0..d {
                    o[row + j] = (0..d).map(|i| x[i] * hkv[i * d + j]).sum();
                }
            }
            fkk[st..st + d * d].copy_from_slice(&hkk);
            fkv[st..st + d * d].copy_from_slice(&hkv);
        }
    }
    (o, fkk, fkv)
}
