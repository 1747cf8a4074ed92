//! Cases of the Mesa core op (chunk-start states, chunkwise CG) and its decode step, and the
//! random inputs the Mesa tests share with them.

use super::{rand, stored, Case, Check};
use crate::error::Result;
use crate::ops::mesa::{self as mops, MesaInputs, MesaState, Solver};
use crate::reference::mesa::{core, MesaShape, Solve};
use crate::{Context, DType, Tensor};

/// The reference iteration of the parallel path (x0 = 0) and of decode (Jacobi start), 30 steps.
pub const CG30: Solve = Solve::Cg {
    iters: 30,
    jacobi: false,
};
pub const CG30_DECODE: Solve = Solve::Cg {
    iters: 30,
    jacobi: true,
};

/// Host inputs of the core op: q and k with unit rows, log decays drawn from a range, input
/// gates in (0, 1), positive lambdas.
#[derive(Clone, Debug)]
pub struct MesaHost {
    pub s: MesaShape,
    pub q: Vec<f32>,
    pub k: Vec<f32>,
    pub v: Vec<f32>,
    pub g: Vec<f32>,
    pub beta: Vec<f32>,
    pub lamb: Vec<f32>,
}

fn unit_rows(x: &mut [f32], d: usize) {
    for row in x.chunks_mut(d) {
        let n = (row.iter().map(|v| v * v).sum::<f32>() + 1e-6).sqrt();
        row.iter_mut().for_each(|v| *v /= n);
    }
}

impl MesaHost {
    /// `gate`: the decay range, e.g. (0.95, 0.999) slow and (0.01, 0.1) fast forgetting. q, k
    /// and v are rounded to `dtype` (the storage of the GPU run).
    pub fn random(s: MesaShape, seed: u64, gate: (f32, f32), dtype: DType) -> MesaHost {
        let n = s.b * s.t * s.h * s.d;
        let mut q = rand(n, seed, 1.0);
        let mut k = rand(n, seed + 1, 1.0);
        unit_rows(&mut q, s.d);
        unit_rows(&mut k, s.d);
        let ng = s.b * s.t * s.h;
        let g = rand(ng, seed + 3, 1.0)
            .iter()
            .map(|u| (gate.0 + (u * 0.5 + 0.5) * (gate.1 - gate.0)).ln())
            .collect();
        let beta = rand(ng, seed + 4, 3.0)
            .iter()
            .map(|x| 1.0 / (1.0 + (-x).exp()))
            .collect();
        let lamb = rand(s.h * s.d, seed + 5, 1.0)
            .iter()
            .map(|x| (1.0 + x.exp()).ln() + 0.25)
            .collect();
        MesaHost {
            s,
            q: stored(&q, dtype),
            k: stored(&k, dtype),
            v: stored(&rand(n, seed + 2, 1.5), dtype),
            g,
            beta,
            lamb,
        }
    }

    /// The float64 reference: output `[B, T, H, D]` and final states.
    pub fn reference(
        &self,
        init: Option<(&[f32], &[f32])>,
        parallel: Solve,
        decode: Option<(usize, Solve)>,
    ) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
        core(
            self.s, &self.q, &self.k, &self.v, &self.g, &self.beta, &self.lamb, init, parallel,
            decode,
        )
    }

    /// The inputs on the GPU, q, k and v stored as `dtype`.
    pub fn upload(&self, ctx: &Context, dtype: DType) -> Result<MesaTensors> {
        let MesaShape { b, t, h, d } = self.s;
        let sh = [b, t, h, d];
        Ok(MesaTensors {
            q: ctx.upload(&self.q, &sh, dtype)?,
            k: ctx.upload(&self.k, &sh, dtype)?,
            v: ctx.upload(&self.v, &sh, dtype)?,
            g: ctx.upload(&self.g, &[b, t, h], DType::F32)?,
            beta: ctx.upload(&self.beta, &[b, t, h], DType::F32)?,
            lamb: ctx.upload(&self.lamb, &[h, d], DType::F32)?,
        })
    }
}

/// [`MesaHost`] uploaded.
pub struct MesaTensors {
    pub q: Tensor,
    pub k: Tensor,
    pub v: Tensor,
    pub g: Tensor,
    pub beta: Tensor,
    pub lamb: Tensor,
}

impl MesaTensors {
    pub fn inputs(&self) -> MesaInputs<'_> {
        MesaInputs {
            q: &self.q,
            k: &self.k,
            v: &self.v,
            g: &self.g,
            beta: &self.beta,
            lamb: &self.lamb,
        }
    }
}

/// Symmetric positive semi-definite `h_kk` (a sum of 4 outer products per head) and any `h_kv`,
/// `[B, H, D, D]` each: states a prefill could have left.
pub fn random_states(b: usize, h: usize, d: usize, seed: u64) -> (Vec<f32>, Vec<f32>) {
    let n = b * h * d * d;
    let basis = rand(b * h * 4 * d, seed, 1.0);
    let mut kk = vec![0.0f32; n];
    for bh in 0..b * h {
        for r in 0..4 {
            let u = &basis[(bh * 4 + r) * d..(bh * 4 + r + 1) * d];
            for i in 0..d {
                for j in 0..d {
                    kk[bh * d * d + i * d + j] += u[i] * u[j];
                }
            }
        }
    }
    (kk, rand(n, seed + 1, 0.5))
}

pub(super) fn cases(dtype: DType) -> Vec<Case> {
    let mut all = Vec::new();
    let shape = |b, t, h, d| MesaShape { b, t, h, d };
    // (shape, decay range, initial states): odd T, head dims 16 … 128, strong and weak forgetting.
    let core_cases = [
        (shape(1, 37, 2, 16), (0.85, 0.95), false, false),
        (shape(2, 50, 2, 32), (0.95, 0.999), false, false),
        (shape(2, 40, 2, 32), (0.85, 0.95), true, false),
        (shape(1, 45, 1, 60), (0.01, 0.1), false, false),
        (shape(1, 70, 2, 64), (0.85, 0.95), false, false),
        (shape(1, 21, 1, 128), (0.95, 0.999), false, false),
        (shape(1, 2048, 2, 64), (0.95, 0.999), false, true),
    ];
    for (i, (s, gate, init, long)) in core_cases.into_iter().enumerate() {
        let name = format!(
            "b{} t{} h{} d{} decay {}–{}{}",
            s.b,
            s.t,
            s.h,
            s.d,
            gate.0,
            gate.1,
            if init { " from states" } else { "" }
        );
        for states in [true, false] {
            let c = Core {
                host: MesaHost::random(s, 10 * i as u64 + 1, gate, dtype),
                init: init.then(|| random_states(s.b, s.h, s.d, 5)),
                states,
                solver: Solver::Reference,
                dtype,
                plan: None,
            };
            let family = if states { "mesa_states" } else { "mesa_cg" };
            let c = Case::new(family, name.clone(), dtype, c);
            all.push(if long { c.long() } else { c });
        }
    }
    // The paper's rule against the exact solve: it must reach it (to f32 rounding), stopping
    // early where it can.
    for (i, (s, gate)) in [
        (shape(1, 37, 2, 16), (0.5, 0.9)),
        (shape(2, 45, 2, 60), (0.85, 0.95)),
        (shape(1, 70, 2, 64), (0.9, 0.99)),
        (shape(1, 21, 1, 128), (0.5, 0.9)),
    ]
    .into_iter()
    .enumerate()
    {
        let name = format!(
            "b{} t{} h{} d{} decay {}–{} paper",
            s.b, s.t, s.h, s.d, gate.0, gate.1
        );
        let c = Core {
            host: MesaHost::random(s, 70 + i as u64, gate, dtype),
            init: None,
            states: false,
            solver: Solver::Paper { tol: 1e-6 },
            dtype,
            plan: None,
        };
        all.push(Case::new("mesa_cg", name, dtype, c));
    }
    // Every GPU CG plan, forced (the GPU schedule takes the tuned one or the first the device
    // holds; `chunkwise tune` checks a plan with these cases before timing it): T not a multiple
    // of the chunk, from initial states, a head dim that is not a multiple of 4. Both head dims
    // keep every plan within 32 KiB of workgroup memory (at D = 60, C = 32 with S_kk needs 39 KiB);
    // on a device with less, a plan that does not fit is skipped with the limit.
    for (i, d) in [16, 30].into_iter().enumerate() {
        for plan in mops::cg_plans(d) {
            let s = shape(1, 2 * plan.0 + 5, 2, d);
            let name = format!("b1 t{} h2 d{d} {}", s.t, plan_label(plan));
            let c = Core {
                host: MesaHost::random(s, 90 + i as u64, (0.85, 0.95), dtype),
                init: Some(random_states(s.b, s.h, s.d, 7)),
                states: false,
                solver: Solver::Reference,
                dtype,
                plan: Some(plan),
            };
            all.push(Case::new("mesa_cg", name, dtype, c));
        }
    }
    // One decode token per sequence from earlier states; several (batch, head) pairs.
    for (i, (b, h, d, long)) in [
        (1, 2, 32, false),
        (3, 2, 16, false),
        (5, 2, 60, false),
        (2, 1, 64, false),
        (1, 2, 128, false),
        (16, 4, 64, true),
    ]
    .into_iter()
    .enumerate()
    {
        for solver in [Solver::Reference, Solver::Paper { tol: 1e-6 }] {
            let c = Decode {
                host: MesaHost::random(shape(b, 1, h, d), 50 + i as u64, (0.85, 0.95), dtype),
                init: random_states(b, h, d, 60 + i as u64),
                solver,
                dtype,
            };
            let name = format!("b{b} h{h} d{d} {}", solver.name());
            let c = Case::new("mesa_decode", name, dtype, c);
            all.push(if long { c.long() } else { c });
        }
    }
    // The layer's kernels around the solve: 3 heads of 30 (no vec4 alignment) and 2 of 128, a
    // conv history already in the cache, gated and not; one token (a decode step's kernel) and
    // blocks of 2 (shorter than the conv: part of each window, and of the new cache, comes from
    // the old cache) and 7 tokens (the parallel path's).
    for (b, t, h, d, gated) in [
        (2, 1, 3, 30, true),
        (1, 1, 2, 128, false),
        (2, 2, 3, 30, false),
        (3, 7, 3, 30, true),
        (1, 7, 2, 128, false),
    ] {
        let name = format!(
            "b{b} t{t} h{h} d{d} {} + output{}",
            if t == 1 { "step prep" } else { "block prep" },
            if gated { " gated" } else { "" }
        );
        let c = StepKernels::random(b, t, h, d, gated, dtype);
        all.push(Case::new("mesa_decode", name, dtype, c));
    }
    all
}

/// A Mesa layer's prep and output kernels on projection rows wider than the blocks they read:
/// a decode step's (`ops::mesa::step_prep`, T = 1) or a block's (`seq_prep` then
/// `conv_advance`), and `step_out`, with the gates buffer of `step_gates`. Outputs: q, k, v, the
/// updated conv cache, the output norm (and gate), the gates buffer. The reference runs the
/// tokens one at a time (what a decode step does).
struct StepKernels {
    layout: mops::StepLayout,
    b: usize,
    t: usize,
    dtype: DType,
    /// In the storage dtype's values: `[B, T, ld]`, q's and k's conv weights `[H·D, 1, 4]`, the
    /// conv cache `[B, 2·H·D, 4]`, the solve's output `[B, T, H, D]`, o_norm's weight `[D]`.
    proj: Vec<f32>,
    conv_w: [Vec<f32>; 2],
    conv: Vec<f32>,
    o: Vec<f32>,
    o_norm: Vec<f32>,
    /// f32: λ `[H, D]` and the biases of a and b `[2H]`.
    lamb: Vec<f32>,
    bias: Vec<f32>,
}

impl StepKernels {
    fn random(b: usize, t: usize, h: usize, d: usize, gated: bool, dtype: DType) -> StepKernels {
        let hd = h * d;
        let ld = 4 * hd + 2 * h + 3;
        let st = |v: Vec<f32>| stored(&v, dtype);
        StepKernels {
            layout: mops::StepLayout {
                heads: h,
                head_dim: d,
                a_col: 4 * hd + 1,
                g_col: gated.then_some(3 * hd),
            },
            b,
            t,
            dtype,
            proj: st(rand(b * t * ld, 1, 1.5)),
            conv_w: [st(rand(hd * 4, 2, 0.8)), st(rand(hd * 4, 3, 0.8))],
            conv: st(rand(b * 2 * hd * 4, 4, 1.0)),
            o: st(rand(b * t * hd, 7, 1.0)),
            o_norm: st(rand(d, 8, 1.0)),
            lamb: rand(hd, 5, 1.0),
            bias: rand(2 * h, 6, 1.0),
        }
    }
    fn ld(&self) -> usize {
        self.proj.len() / (self.b * self.t)
    }
}

impl Check for StepKernels {
    fn gpu(&self, ctx: &Context) -> Result<Vec<Tensor>> {
        let (b, t, dt) = (self.b, self.t, self.dtype);
        let (h, d) = (self.layout.heads, self.layout.head_dim);
        let hd = h * d;
        let proj = ctx.upload(&self.proj, &[b, t, self.ld()], dt)?;
        let conv = ctx.upload(&self.conv, &[b, 2 * hd, 4], dt)?;
        let qw = ctx.upload(&self.conv_w[0], &[hd, 1, 4], dt)?;
        let kw = ctx.upload(&self.conv_w[1], &[hd, 1, 4], dt)?;
        let o = ctx.upload(&self.o, &[b, t, h, d], dt)?;
        let o_norm = ctx.upload(&self.o_norm, &[d], dt)?;
        let lamb = ctx.upload(&self.lamb, &[h, d], DType::F32)?;
        let bias = ctx.upload(&self.bias, &[2 * h], DType::F32)?;
        ctx.run(|rec| {
            let gates = mops::step_gates(rec, b * t, &lamb, &bias)?;
            let conv_w = [&qw, &kw];
            let [q, k, v] = if t == 1 {
                mops::step_prep(rec, &proj, self.layout, conv_w, &conv, &gates)?
            } else {
                let qkv = mops::seq_prep(rec, &proj, self.layout, conv_w, &conv, &gates)?;
                mops::conv_advance(rec, &proj, self.layout, &conv)?;
                qkv
            };
            let y = mops::step_out(rec, &o, &o_norm, 1e-5, &proj, self.layout)?;
            Ok(vec![q, k, v, conv, y, gates])
        })
    }
    fn reference(&self) -> Vec<f64> {
        let (b, tn, l) = (self.b, self.t, self.layout);
        let (h, d, ld) = (l.heads, l.head_dim, self.ld());
        let hd = h * d;
        let n = b * tn * h;
        let f = |x: f32| x as f64;
        let silu = |x: f64| x / (1.0 + (-x).exp());
        let sigmoid = |x: f64| 1.0 / (1.0 + (-x).exp());
        let (mut q, mut k, mut v, mut y) = (vec![], vec![], vec![], vec![]);
        let mut conv: Vec<f64> = self.conv.iter().copied().map(f).collect();
        let mut gates = vec![0.0; 2 * n];
        for (r, row) in self.proj.chunks(ld).enumerate() {
            let bi = r / tn;
            for hh in 0..h {
                // q's channels, then k's: shift in the token, convolve, SiLU, L2 norm.
                for (which, out) in [&mut q, &mut k].into_iter().enumerate() {
                    let mut vals = Vec::with_capacity(d);
                    for i in 0..d {
                        let ch = hh * d + i;
                        let slot = (bi * 2 * hd + which * hd + ch) * 4;
                        conv.copy_within(slot + 1..slot + 4, slot);
                        conv[slot + 3] = f(row[which * hd + ch]);
                        let w = &self.conv_w[which][ch * 4..ch * 4 + 4];
                        vals.push(silu((0..4).map(|t| f(w[t]) * conv[slot + t]).sum()));
                    }
                    let inv = 1.0 / (vals.iter().map(|x| x * x).sum::<f64>() + 1e-6).sqrt();
                    out.extend(vals.iter().map(|x| x * inv));
                }
                v.extend(
                    row[2 * hd + hh * d..2 * hd + (hh + 1) * d]
                        .iter()
                        .copied()
                        .map(f),
                );
                let a = f(row[l.a_col + hh]) + f(self.bias[hh]);
                let bb = f(row[l.a_col + h + hh]) + f(self.bias[h + hh]);
                gates[r * h + hh] = sigmoid(a).ln();
                gates[n + r * h + hh] = sigmoid(bb);
                let oh = &self.o[(r * h + hh) * d..(r * h + hh + 1) * d];
                let r =
                    1.0 / (oh.iter().map(|&x| f(x) * f(x)).sum::<f64>() / d as f64 + 1e-5).sqrt();
                y.extend((0..d).map(|i| {
                    let gate = l.g_col.map_or(1.0, |g| silu(f(row[g + hh * d + i])));
                    f(oh[i]) * r * f(self.o_norm[i]) * gate
                }));
            }
        }
        gates.extend(self.lamb.iter().chain(&self.bias).copied().map(f));
        [q, k, v, conv, y, gates].concat()
    }
}

/// The core op; `states`: check the final states (the chunk-start states' walk), else the output
/// (the chunkwise CG): the reference rule against the f64 reference iteration, the paper's
/// against the exact solve.
struct Core {
    host: MesaHost,
    init: Option<(Vec<f32>, Vec<f32>)>,
    states: bool,
    solver: Solver,
    dtype: DType,
    /// Forces this GPU CG plan (`ops::mesa::core_with_plan`).
    plan: Option<(usize, bool)>,
}

/// The shape-label suffix of a case that forces a GPU CG plan.
pub fn plan_label(plan: (usize, bool)) -> String {
    format!("plan {}", mops::plan_name(plan))
}

/// What the f64 reference solves with for a rule: the same iteration, or (paper) the exact solve
/// that rule converges to.
fn reference_solve(solver: Solver, decode: bool) -> crate::reference::mesa::Solve {
    match (solver, decode) {
        (Solver::Paper { .. }, _) => crate::reference::mesa::Solve::Exact,
        (Solver::Reference, false) => CG30,
        (Solver::Reference, true) => CG30_DECODE,
    }
}

fn initial(ctx: &Context, s: MesaShape, init: Option<&(Vec<f32>, Vec<f32>)>) -> Result<MesaState> {
    match init {
        Some((kk, kv)) => MesaState::from_host(ctx, kk, kv, s.b, s.h, s.d),
        None => MesaState::zeros(ctx, s.b, s.h, s.d),
    }
}

fn init_ref(init: &Option<(Vec<f32>, Vec<f32>)>) -> Option<(&[f32], &[f32])> {
    init.as_ref().map(|(kk, kv)| (kk.as_slice(), kv.as_slice()))
}

impl Check for Core {
    fn gpu(&self, ctx: &Context) -> Result<Vec<Tensor>> {
        let st = initial(ctx, self.host.s, self.init.as_ref())?;
        let up = self.host.upload(ctx, self.dtype)?;
        let o = ctx
            .run(|rec| match self.plan {
                Some(plan) => mops::core_with_plan(rec, &up.inputs(), &st, 30, self.solver, plan),
                None => mops::core_with(rec, &up.inputs(), &st, 30, self.solver),
            })?
            .o;
        if self.states {
            Ok(vec![st.kk, st.kv])
        } else {
            Ok(vec![o])
        }
    }
    fn reference(&self) -> Vec<f64> {
        let solve = reference_solve(self.solver, false);
        let (o, mut kk, kv) = self.host.reference(init_ref(&self.init), solve, None);
        if self.states {
            kk.extend(kv);
            kk
        } else {
            o
        }
    }
}

/// One decode step: the output and both updated states.
struct Decode {
    host: MesaHost,
    init: (Vec<f32>, Vec<f32>),
    solver: Solver,
    dtype: DType,
}

impl Check for Decode {
    fn gpu(&self, ctx: &Context) -> Result<Vec<Tensor>> {
        let st = initial(ctx, self.host.s, Some(&self.init))?;
        let up = self.host.upload(ctx, self.dtype)?;
        let o = ctx
            .run(|rec| mops::decode_step_with(rec, &up.inputs(), &st, 30, self.solver))?
            .o;
        Ok(vec![o, st.kk, st.kv])
    }
    fn reference(&self) -> Vec<f64> {
        let init = Some((self.init.0.as_slice(), self.init.1.as_slice()));
        let solve = reference_solve(self.solver, true);
        let (mut o, kk, kv) = self.host.reference(init, CG30, Some((0, solve)));
        o.extend(kk);
        o.extend(kv);
        o
    }
}
