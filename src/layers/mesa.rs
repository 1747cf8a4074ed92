//! The Mesa layer of MesaNet (spec/mesa.md §3, flash-linear-attention's `MesaNet`, state_dict
//! names exact): q/k/v projections; causal short conv (kernel 4) + SiLU on q and k only; per-head
//! L2 norm (eps 1e-6 inside the sqrt); forget gate `logsigmoid(a_proj x)`, input gate
//! `sigmoid(b_proj x)`; `λ = softplus(lambda_params) + 0.25`; the core op with the reference CG;
//! per-head RMSNorm with `o_norm.weight` (gated by `silu(g_proj x)` when the checkpoint has
//! `g_proj.weight`); `o_proj`. Standalone (fla's layer, the goldens) it has no residual and no
//! pre-norm; in a MesaNet model it takes its block's `attn_norm` and residual
//! ([`MesaLayer::with_block_norm`]), as the RAT and attention layers carry theirs.

use crate::context::Context;
use crate::error::{Error, Result};
use crate::model::Checkpoint;
use crate::ops::gemm::{Fused, Linear};
use crate::ops::mesa::{self as mops, MesaState};
use crate::ops::shards::{copy_rows, rows_per_binding};
use crate::record::Recording;
use crate::tensor::{DType, Tensor};
use std::ops::Range;

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
    /// All input projections in one weight, run as one product (where each sits: `layout`).
    w_in: Linear,
    layout: mops::StepLayout,
    q_conv: Tensor,
    k_conv: Tensor,
    lamb: Tensor,
    /// a's and b's biases, f32 (2·H values): the tail of every gates buffer.
    gate_bias: Tensor,
    o_norm: Tensor,
    o: Linear,
    /// In a MesaNet block, the block's `attn_norm` (weight `[hidden]`, epsilon): the layer then
    /// computes `x + layer(RMSNorm(x)·w)`, the norm folded into the input projection and the
    /// residual into the output projection ([`MesaLayer::with_block_norm`]).
    block_norm: Option<(Tensor, f32)>,
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

    /// Sequences `r`'s states and conv inputs, copied out (the parallel path's pieces).
    fn sequences(&self, rec: &mut Recording, r: Range<usize>) -> Result<(MesaState, Tensor)> {
        let ctx = rec.context().clone();
        let s = self.state.kk.shape();
        let (h, d) = (s[1], s[2]);
        let c = self.conv.shape()[1];
        let state = MesaState {
            kk: ctx.alloc(&[r.len(), h, d, d], DType::F32)?,
            kv: ctx.alloc(&[r.len(), h, d, d], DType::F32)?,
        };
        let conv = ctx.alloc(&[r.len(), c, 4], self.conv.dtype())?;
        let pairs = [
            (&self.state.kk, &state.kk),
            (&self.state.kv, &state.kv),
            (&self.conv, &conv),
        ];
        for (whole, part) in pairs {
            let per = (whole.numel() / s[0]) as u64;
            rec.copy_region(whole, r.start as u64 * per, part, 0, r.len() as u64 * per)?;
        }
        Ok((state, conv))
    }

    /// Writes [`MesaCache::sequences`]' copies back as sequences `first ..`.
    fn put_sequences(
        &self,
        rec: &mut Recording,
        first: usize,
        (state, conv): &(MesaState, Tensor),
    ) -> Result<()> {
        let n = state.kk.shape()[0];
        let b = self.state.kk.shape()[0];
        let pairs = [
            (&state.kk, &self.state.kk),
            (&state.kv, &self.state.kv),
            (conv, &self.conv),
        ];
        for (part, whole) in pairs {
            let per = (whole.numel() / b) as u64;
            rec.copy_region(part, 0, whole, first as u64 * per, n as u64 * per)?;
        }
        Ok(())
    }
}

impl MesaLayer {
    /// Values per token of the widest activation it binds: all input projections together.
    pub fn token_width(&self) -> usize {
        self.w_in.out_features()
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
            q_conv: vec("q_conv1d.weight", &[hd, 1, 4])?,
            k_conv: vec("k_conv1d.weight", &[hd, 1, 4])?,
            lamb: ctx.upload(&lamb, &[h, d], DType::F32)?,
            o_norm: vec("o_norm.weight", &[d])?,
            o: lin("o_proj.weight", [dm, hd])?,
            w_in,
            cfg,
            block_norm: None,
        })
    }

    /// The layer as a MesaNet block's mixer half: `x + layer(RMSNorm(x)·norm)` (the block's
    /// `attn_norm`, epsilon `eps`) from every method, at no dispatch more than the layer alone.
    pub fn with_block_norm(mut self, norm: Tensor, eps: f32) -> Result<MesaLayer> {
        if norm.shape() != [self.cfg.hidden] || norm.dtype() != self.o_norm.dtype() {
            return Err(Error::shape(
                "mesa block norm",
                format!(
                    "weight must be [{}] of the layer's dtype, got {:?} {:?}",
                    self.cfg.hidden,
                    norm.dtype(),
                    norm.shape()
                ),
            ));
        }
        self.block_norm = Some((norm, eps));
        Ok(self)
    }

    pub fn config(&self) -> &MesaConfig {
        &self.cfg
    }

    fn check_input(&self, x: &Tensor) -> Result<(usize, usize)> {
        let s = x.shape();
        if s.len() != 3 || s[2] != self.cfg.hidden || s[0] == 0 || s[1] == 0 {
            return Err(Error::shape(
                "mesa layer",
                format!(
                    "input must be [B, T, {}] with at least one sequence and token, got {s:?}",
                    self.cfg.hidden
                ),
            ));
        }
        Ok((s[0], s[1]))
    }

    /// `x [B, T, hidden]` (its projection within one binding) from the states and conv inputs
    /// given, which it advances in place:
    /// one product for every input projection, one kernel for the conv + SiLU + L2 norms +
    /// gates (and one moving the conv cache on), the chunkwise core, one kernel for the output
    /// norm (and gate), the output projection; a block norm and residual fold into the products.
    fn advance_block(
        &self,
        rec: &mut Recording,
        x: &Tensor,
        (state, conv): (&MesaState, &Tensor),
    ) -> Result<(Tensor, Tensor)> {
        let (b, t) = self.check_input(x)?;
        let proj = self.input(rec, x)?;
        let gates = mops::step_gates(rec, b * t, &self.lamb, &self.gate_bias)?;
        let conv_w = [&self.q_conv, &self.k_conv];
        let [q, k, v] = mops::seq_prep(rec, &proj, self.layout, conv_w, conv, &gates)?;
        mops::conv_advance(rec, &proj, self.layout, conv)?;
        let solved = mops::core_prepared(
            rec,
            [&q, &k, &v],
            &gates,
            state,
            self.cfg.cg_iters_prefill,
            self.cfg.solver,
        )?;
        Ok((self.output(rec, &solved.o, &proj, x)?, solved.iterations))
    }

    /// Every input projection in one product `[.., 4·H·D + 2·H]` (`layout`), the block norm
    /// folded in where the layer has one.
    fn input(&self, rec: &mut Recording, x: &Tensor) -> Result<Tensor> {
        let norm = Fused {
            norm: self.block_norm.as_ref().map(|(w, eps)| (w, *eps)),
            ..Fused::default()
        };
        self.w_in.forward_fused(rec, x, norm)
    }

    /// The output projection of the solve's `o`: per-head RMSNorm (× silu(g) read from `proj`)
    /// in one kernel, then the product, with the block's residual `x` folded in where the layer
    /// has a block norm.
    fn output(&self, rec: &mut Recording, o: &Tensor, proj: &Tensor, x: &Tensor) -> Result<Tensor> {
        let eps = self.cfg.norm_eps;
        let on = mops::step_out(rec, o, &self.o_norm, eps, proj, self.layout)?;
        let residual = Fused {
            residual: self.block_norm.as_ref().map(|_| x),
            ..Fused::default()
        };
        self.o.forward_fused(rec, &on, residual)
    }

    /// [`MesaLayer::advance_block`] over any `x [B, T, hidden]`: in pieces whose projection
    /// fits one binding, groups of whole sequences or, for a sequence longer than that, blocks
    /// of its tokens (its cache carries the states and conv inputs from one block to the next).
    /// Returns the output and the CG steps per (sequence, token, head), `[B, T, H]`.
    fn advance(
        &self,
        rec: &mut Recording,
        x: &Tensor,
        cache: &mut MesaCache,
    ) -> Result<(Tensor, Tensor)> {
        let (b, t) = self.check_input(x)?;
        if cache.conv.shape()[0] != b {
            return Err(Error::shape(
                "mesa layer",
                format!(
                    "the cache holds {} sequences, the input {b}",
                    cache.conv.shape()[0]
                ),
            ));
        }
        let ctx = rec.context().clone();
        let per = rows_per_binding(&ctx, self.token_width(), x.dtype());
        if b * t <= per {
            let out = self.advance_block(rec, x, (&cache.state, &cache.conv))?;
            cache.next_pos += t;
            return Ok(out);
        }
        let (dm, h) = (self.cfg.hidden, self.cfg.heads);
        // Sequences per group, and tokens per block (a multiple of 64 where that fits).
        let group = (per / t.max(1)).max(1);
        let block = if t <= per {
            t
        } else if per >= 64 {
            per / 64 * 64
        } else {
            per
        };
        let x_rows = x.reshape(&[b * t, dm])?;
        let y = ctx.alloc(&[b, t, dm], x.dtype())?;
        let iterations = ctx.alloc(&[b, t, h], DType::F32)?;
        let mut b0 = 0;
        while b0 < b {
            let nb = group.min(b - b0);
            let sub = cache.sequences(rec, b0..b0 + nb)?;
            let mut t0 = 0;
            while t0 < t {
                let nt = block.min(t - t0);
                let row = b0 * t + t0;
                let rows = nb * nt;
                let xb = copy_rows(rec, &x_rows, row..row + rows)?.reshape(&[nb, nt, dm])?;
                let (yb, ib) = self.advance_block(rec, &xb, (&sub.0, &sub.1))?;
                rec.copy_region(&yb, 0, &y, (row * dm) as u64, (rows * dm) as u64)?;
                rec.copy_region(&ib, 0, &iterations, (row * h) as u64, (rows * h) as u64)?;
                t0 += nt;
            }
            cache.put_sequences(rec, b0, &sub)?;
            b0 += nb;
        }
        cache.next_pos += t;
        Ok((y, iterations))
    }

    /// Parallel forward over `x [B, T, hidden]` from zero states.
    pub fn forward(&self, rec: &mut Recording, x: &Tensor) -> Result<Tensor> {
        Ok(self.forward_solved(rec, x)?.0)
    }

    /// [`MesaLayer::forward`], and the CG steps each (batch, position, head) took, `[B, T, H]`
    /// (read them with `ops::mesa::IterationStats::read` once the recording has run).
    pub fn forward_solved(&self, rec: &mut Recording, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let (b, _) = self.check_input(x)?;
        let mut cache = self.cache_in(rec, b)?;
        self.advance(rec, x, &mut cache)
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
        let (b, _) = self.check_input(x)?;
        let mut cache = self.cache_in(rec, b)?;
        let (y, _) = self.advance(rec, x, &mut cache)?;
        Ok((y, cache))
    }

    /// More tokens per sequence after those `cache` holds, `x [B, T, hidden]`, in parallel (as
    /// [`MesaLayer::prefill`] from an empty cache): the output, and the cache advanced past them.
    pub fn extend(&self, rec: &mut Recording, cache: &mut MesaCache, x: &Tensor) -> Result<Tensor> {
        Ok(self.advance(rec, x, cache)?.0)
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
        self.step_in(rec, cache, x)
    }

    fn step_in(
        &self,
        rec: &mut Recording,
        cache: &mut MesaCache,
        x: &Tensor,
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
        let proj = self.input(rec, x)?;
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
        cache.next_pos += 1;
        Ok((self.output(rec, &solved.o, &proj, x)?, solved.iterations))
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
