//! The Mesa layer of MesaNet (spec/mesa.md §3, flash-linear-attention's `MesaNet`, state_dict
//! names exact): q/k/v projections; causal short conv (kernel 4) + SiLU on q and k only; per-head
//! L2 norm (eps 1e-6 inside the sqrt); forget gate `logsigmoid(a_proj x)`, input gate
//! `sigmoid(b_proj x)`; `λ = softplus(lambda_params) + 0.25`; the core op with the reference CG;
//! per-head RMSNorm with `o_norm.weight` (gated by `silu(g_proj x)` when the checkpoint has
//! `g_proj.weight`); `o_proj`. Unlike the RAT and attention layers it has no residual and no
//! pre-norm of its own (the model block adds those).

use crate::context::Context;
use crate::error::{Error, Result};
use crate::model::Checkpoint;
use crate::ops::gemm::{Fused, Linear};
use crate::ops::mesa::{self as mops, MesaState};
use crate::ops::{elementwise as ew, norm};
use crate::record::Recording;
use crate::tensor::{DType, Tensor};

/// Shape and hyper-parameters of a Mesa layer.
#[derive(Clone, Debug)]
pub struct MesaConfig {
    pub hidden: usize,
    pub heads: usize,
    pub head_dim: usize,
    /// Output RMSNorm epsilon (1e-5 standalone upstream, 1e-6 inside a model).
    pub norm_eps: f32,
    /// CG steps (the reference rule) or their cap (the paper's) on the parallel path and in decode.
    pub cg_iters_prefill: usize,
    pub cg_iters_decode: usize,
    /// The CG rule (`reference` by default: what the goldens and fla compute).
    pub solver: mops::Solver,
}

pub struct MesaLayer {
    cfg: MesaConfig,
    /// All input projections in one weight (decode steps run it as one product), and the blocks
    /// of it the parallel path runs.
    w_in: Linear,
    layout: mops::StepLayout,
    q: Linear,
    k: Linear,
    v: Linear,
    a: Linear,
    a_bias: Tensor,
    b: Linear,
    b_bias: Tensor,
    g: Option<Linear>,
    q_conv: Tensor,
    k_conv: Tensor,
    lamb: Tensor,
    /// a's and b's biases again, in f32 (2·H values): the tail of a decode cache's gates buffer.
    gate_bias: Tensor,
    o_norm: Tensor,
    o: Linear,
}

/// Decode state: the two D × D states per head, the conv cache (last 4 pre-activation inputs of
/// q's channels then k's, `[B, 2·H·D, 4]`) and the gates buffer the step's kernels share
/// (`ops::mesa::step_gates`).
pub struct MesaCache {
    state: MesaState,
    conv: Tensor,
    gates: Tensor,
    next_pos: usize,
}

impl MesaCache {
    pub fn position(&self) -> usize {
        self.next_pos
    }
    pub fn bytes(&self) -> u64 {
        self.state.bytes() + self.conv.bytes() + self.gates.bytes()
    }
    pub fn state(&self) -> &MesaState {
        &self.state
    }
    /// `[B, 2·H·D, 4]`: per sequence, q's H·D channels then k's.
    pub fn conv_cache(&self) -> &Tensor {
        &self.conv
    }
    #[doc(hidden)]
    pub fn bench_seek(&mut self, position: usize) {
        self.next_pos = position;
    }
}

impl MesaLayer {
    /// Values per token of the widest activation it binds: all input projections together.
    pub fn token_width(&self) -> usize {
        [&self.q, &self.k, &self.v, &self.a, &self.b]
            .into_iter()
            .chain(self.g.as_ref())
            .map(|l| l.out_features())
            .sum()
    }
    /// Bytes per sequence of its largest cache tensor (one of the two f32 states).
    pub fn cache_bytes_per_sequence(&self) -> u64 {
        (self.cfg.heads * self.cfg.head_dim * self.cfg.head_dim * 4) as u64
    }
    pub fn load(
        ctx: &Context,
        cfg: MesaConfig,
        ckpt: &Checkpoint,
        prefix: &str,
        dtype: DType,
    ) -> Result<MesaLayer> {
        let (dm, h, d) = (cfg.hidden, cfg.heads, cfg.head_dim);
        if h == 0 || d == 0 || d > 128 {
            return Err(Error::invalid(
                "mesa layer",
                format!("{h} heads of dim {d}: need at least one head, head dim 1 ..= 128"),
            ));
        }
        let hd = h * d;
        let name = |n: &str| format!("{prefix}{n}");
        let lin = |n: &str, shape: [usize; 2]| -> Result<Linear> {
            let (w, _) = ckpt.f32(&name(n), Some(&shape))?;
            Linear::new(ctx, ctx.upload(&w, &shape, dtype)?)
        };
        let vec = |n: &str, shape: &[usize]| -> Result<Tensor> {
            let (w, _) = ckpt.f32(&name(n), Some(shape))?;
            ctx.upload(&w, shape, dtype)
        };
        let (lp, _) = ckpt.f32(&name("lambda_params"), Some(&[hd]))?;
        // softplus as torch computes it (x itself above 20), then the 0.25 lower bound.
        let lamb: Vec<f32> = lp
            .iter()
            .map(|&x| if x > 20.0 { x } else { x.exp().ln_1p() } + 0.25)
            .collect();
        // The input projections as one weight [q | k | v | g (if any) | a | b], prepared once; the
        // layer reads blocks of it (no copies of the weights or of their outputs).
        let gated = ckpt.contains(&name("g_proj.weight"));
        let mut parts = vec![
            ("q_proj.weight", hd),
            ("k_proj.weight", hd),
            ("v_proj.weight", hd),
        ];
        if gated {
            parts.push(("g_proj.weight", hd));
        }
        parts.extend([("a_proj.weight", h), ("b_proj.weight", h)]);
        let mut all = Vec::new();
        let mut at = Vec::new();
        for (n, rows) in &parts {
            at.push(all.len() / dm);
            all.extend(ckpt.f32(&name(n), Some(&[*rows, dm]))?.0);
        }
        let w_in = Linear::new(ctx, ctx.upload(&all, &[all.len() / dm, dm], dtype)?)?;
        let block = |i: usize| w_in.rows(at[i]..at[i] + parts[i].1);
        let ab = if gated { 4 } else { 3 };
        let mut gate_bias = ckpt.f32(&name("a_proj.bias"), Some(&[h]))?.0;
        gate_bias.extend(ckpt.f32(&name("b_proj.bias"), Some(&[h]))?.0);
        Ok(MesaLayer {
            layout: mops::StepLayout {
                heads: h,
                head_dim: d,
                a_col: at[ab],
                g_col: gated.then(|| at[3]),
            },
            gate_bias: ctx.upload(&gate_bias, &[2 * h], DType::F32)?,
            q: block(0)?,
            k: block(1)?,
            v: block(2)?,
            g: if gated { Some(block(3)?) } else { None },
            a: block(ab)?,
            a_bias: vec("a_proj.bias", &[h])?,
            b: block(ab + 1)?,
            b_bias: vec("b_proj.bias", &[h])?,
            q_conv: vec("q_conv1d.weight", &[hd, 1, 4])?,
            k_conv: vec("k_conv1d.weight", &[hd, 1, 4])?,
            lamb: ctx.upload(&lamb, &[h, d], DType::F32)?,
            o_norm: vec("o_norm.weight", &[d])?,
            o: lin("o_proj.weight", [dm, hd])?,
            w_in,
            cfg,
        })
    }

    pub fn config(&self) -> &MesaConfig {
        &self.cfg
    }

    fn check_input(&self, x: &Tensor) -> Result<(usize, usize)> {
        let s = x.shape();
        if s.len() != 3 || s[2] != self.cfg.hidden {
            return Err(Error::shape(
                "mesa layer",
                format!("input must be [B, T, {}], got {s:?}", self.cfg.hidden),
            ));
        }
        Ok((s[0], s[1]))
    }

    /// Pre-activation q, k projections, v, and the gates `g` (log decay), `beta`, shaped for the core op.
    fn project(&self, rec: &mut Recording, x: &Tensor) -> Result<[Tensor; 5]> {
        let (b, t) = self.check_input(x)?;
        let h = self.cfg.heads;
        let qp = self.q.forward(rec, x)?;
        let kp = self.k.forward(rec, x)?;
        let v = self.v.forward(rec, x)?;
        let al = self.a.forward(rec, x)?;
        let al = ew::add(rec, &al, &self.a_bias)?;
        // The gates as the Mesa kernels read them: f32 whatever the storage.
        let g = ew::unary_f32(rec, &al, ew::Unary::LogSigmoid)?.reshape(&[b, t, h])?;
        let bl = self.b.forward(rec, x)?;
        let bl = ew::add(rec, &bl, &self.b_bias)?;
        let beta = ew::unary_f32(rec, &bl, ew::Unary::Sigmoid)?.reshape(&[b, t, h])?;
        Ok([qp, kp, v, g, beta])
    }

    fn heads(&self, x: &Tensor) -> Result<Tensor> {
        let s = x.shape();
        x.reshape(&[s[0], s[1], self.cfg.heads, self.cfg.head_dim])
    }

    /// L2 norm per head, shaped `[B, T, H, D]`.
    fn normalized(&self, rec: &mut Recording, x: &Tensor) -> Result<Tensor> {
        let n = mops::l2norm(rec, x, self.cfg.head_dim, 1e-6)?;
        self.heads(&n)
    }

    fn output(&self, rec: &mut Recording, x: &Tensor, o: &Tensor) -> Result<Tensor> {
        let s = x.shape();
        let on = norm::rmsnorm(rec, o, &self.o_norm, self.cfg.norm_eps)?;
        let on = on.reshape(&[s[0], s[1], self.cfg.heads * self.cfg.head_dim])?;
        let on = match &self.g {
            Some(gp) => {
                let gate = gp.forward(rec, x)?;
                let gate = ew::silu(rec, &gate)?;
                ew::mul(rec, &on, &gate)?
            }
            None => on,
        };
        self.o.forward(rec, &on)
    }

    /// The parallel pass from the given initial state (advanced to the final one); also returns
    /// the pre-activation q and k projections for a conv cache, and the CG steps per row.
    fn parallel(
        &self,
        rec: &mut Recording,
        x: &Tensor,
        state: &MesaState,
    ) -> Result<(Tensor, Tensor, Tensor, Tensor)> {
        let [qp, kp, v, g, beta] = self.project(rec, x)?;
        let qa = mops::short_conv(rec, &qp, &self.q_conv)?;
        let ka = mops::short_conv(rec, &kp, &self.k_conv)?;
        let q = self.normalized(rec, &qa)?;
        let k = self.normalized(rec, &ka)?;
        let v = self.heads(&v)?;
        let solved = mops::core_with(
            rec,
            &mops::MesaInputs {
                q: &q,
                k: &k,
                v: &v,
                g: &g,
                beta: &beta,
                lamb: &self.lamb,
            },
            state,
            self.cfg.cg_iters_prefill,
            self.cfg.solver,
        )?;
        let y = self.output(rec, x, &solved.o)?;
        Ok((y, qp, kp, solved.iterations))
    }

    /// Parallel forward over `x [B, T, hidden]` from zero states.
    pub fn forward(&self, rec: &mut Recording, x: &Tensor) -> Result<Tensor> {
        Ok(self.forward_solved(rec, x)?.0)
    }

    /// [`MesaLayer::forward`], and the CG steps each (batch, position, head) took, `[B, T, H]`
    /// (read them with `ops::mesa::IterationStats::read` once the recording has run).
    pub fn forward_solved(&self, rec: &mut Recording, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let (b, _) = self.check_input(x)?;
        let state = MesaState::zeros_in(rec, b, self.cfg.heads, self.cfg.head_dim)?;
        let (y, _, _, iterations) = self.parallel(rec, x, &state)?;
        Ok((y, iterations))
    }

    /// An empty cache (zero states and conv history).
    pub fn new_cache(&self, ctx: &Context, batch: usize) -> Result<MesaCache> {
        ctx.run(|rec| self.cache_in(rec, batch))
    }

    /// An empty cache whose zeroing is recorded into `rec` (no submit of its own).
    fn cache_in(&self, rec: &mut Recording, batch: usize) -> Result<MesaCache> {
        let ctx = rec.context().clone();
        let hd = self.cfg.heads * self.cfg.head_dim;
        let cache = MesaCache {
            state: MesaState::zeros_in(rec, batch, self.cfg.heads, self.cfg.head_dim)?,
            conv: ctx.alloc(&[batch, 2 * hd, 4], self.q_conv.dtype())?,
            gates: mops::step_gates(rec, batch, &self.lamb, &self.gate_bias)?,
            next_pos: 0,
        };
        rec.zero(&cache.conv);
        Ok(cache)
    }

    /// Parallel forward over a prompt that also fills a new cache.
    pub fn prefill(&self, rec: &mut Recording, x: &Tensor) -> Result<(Tensor, MesaCache)> {
        let (b, t) = self.check_input(x)?;
        let mut cache = self.cache_in(rec, b)?;
        let (y, qp, kp, _) = self.parallel(rec, x, &cache.state)?;
        let hd = self.cfg.heads * self.cfg.head_dim;
        mops::conv_cache_fill(rec, &qp, &cache.conv, 0)?;
        mops::conv_cache_fill(rec, &kp, &cache.conv, hd)?;
        cache.next_pos = t;
        Ok((y, cache))
    }

    /// One token per sequence, `x [B, 1, hidden]`; any batch size.
    pub fn step(&self, rec: &mut Recording, cache: &mut MesaCache, x: &Tensor) -> Result<Tensor> {
        Ok(self.step_solved(rec, cache, x)?.0)
    }

    /// [`MesaLayer::step`], and the CG steps each (batch, head) took, `[B, 1, H]`.
    pub fn step_solved(
        &self,
        rec: &mut Recording,
        cache: &mut MesaCache,
        x: &Tensor,
    ) -> Result<(Tensor, Tensor)> {
        self.step_in_block(rec, cache, x, None)
    }

    /// A MesaNet block's mixer half at decode, `h + layer(RMSNorm(h)·w)` with `norm = (w, eps)`
    /// (the block's `attn_norm`): the norm folds into the input projection and the residual into
    /// the output projection, so the block costs no dispatch more than the layer's five.
    pub fn step_block(
        &self,
        rec: &mut Recording,
        cache: &mut MesaCache,
        h: &Tensor,
        norm: (&Tensor, f32),
    ) -> Result<Tensor> {
        Ok(self.step_in_block(rec, cache, h, Some(norm))?.0)
    }

    fn step_in_block(
        &self,
        rec: &mut Recording,
        cache: &mut MesaCache,
        x: &Tensor,
        block_norm: Option<(&Tensor, f32)>,
    ) -> Result<(Tensor, Tensor)> {
        let (b, t) = self.check_input(x)?;
        if t != 1 || cache.conv.shape()[0] != b {
            return Err(Error::shape(
                "mesa step",
                format!(
                    "input must be [{}, 1, hidden], got {:?}",
                    cache.conv.shape()[0],
                    x.shape()
                ),
            ));
        }
        // Five dispatches: every input projection in one product, the conv step + SiLU + L2
        // norms + gates in one kernel, the CG solve, the output norm (and gate) in one kernel,
        // the output projection.
        let proj = self.w_in.forward_fused(
            rec,
            x,
            Fused {
                norm: block_norm,
                ..Fused::default()
            },
        )?;
        let conv_w = [&self.q_conv, &self.k_conv];
        let [q, k, v] =
            mops::step_prep(rec, &proj, self.layout, conv_w, &cache.conv, &cache.gates)?;
        let solved = mops::decode_step_prepared(
            rec,
            [&q, &k, &v],
            &cache.gates,
            &cache.state,
            self.cfg.cg_iters_decode,
            self.cfg.solver,
        )?;
        let on = mops::step_out(
            rec,
            &solved.o,
            &self.o_norm,
            self.cfg.norm_eps,
            &proj,
            self.layout,
        )?;
        cache.next_pos += 1;
        let residual = Fused {
            residual: block_norm.map(|_| x),
            ..Fused::default()
        };
        Ok((self.o.forward_fused(rec, &on, residual)?, solved.iterations))
    }
}

impl super::SequenceLayer for MesaLayer {
    type Cache = MesaCache;
    fn forward(&self, rec: &mut Recording, x: &Tensor) -> Result<Tensor> {
        MesaLayer::forward(self, rec, x)
    }
    fn prefill(&self, rec: &mut Recording, x: &Tensor) -> Result<(Tensor, MesaCache)> {
        MesaLayer::prefill(self, rec, x)
    }
    fn step(&self, rec: &mut Recording, cache: &mut MesaCache, x: &Tensor) -> Result<Tensor> {
        MesaLayer::step(self, rec, cache, x)
    }
    /// The states are f32 whatever the dtype.
    fn new_cache(&self, ctx: &Context, batch: usize, _dtype: DType) -> Result<MesaCache> {
        MesaLayer::new_cache(self, ctx, batch)
    }
}
