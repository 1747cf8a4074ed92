//! The RAT layer (spec/rat.md §2, §4): pre-RMSNorm (`input_norm.weight`), `in_proj.weight
//! [3D + 2·G·dh, D]` split as z, v, g, grouped q, grouped k; forget gate with `gate_bias`;
//! intra-chunk gated scan of values and head-tiled keys; chunk-level RoPE; one softmax over earlier
//! chunks' final states plus the own running state; output gate σ(z); `out_proj.weight`; residual.

use crate::context::Context;
use crate::error::{Error, Result};
use crate::model::Checkpoint;
use crate::ops::gemm::{Fused, Linear, Slice};
use crate::ops::rat::{self as rops, Heads};
use crate::ops::{attention as attn, elementwise as ew, norm, rope};
use crate::record::Recording;
use crate::tensor::{DType, Tensor};

/// Shape and hyper-parameters of a RAT layer.
#[derive(Clone, Debug)]
pub struct RatConfig {
    pub d_model: usize,
    pub heads: usize,
    /// Query/key projection groups (`ngroups`, 2 upstream); head h uses group h mod G.
    pub groups: usize,
    /// Chunk length L (1 … 256 or more).
    pub chunk: usize,
    pub rope_base: f64,
    pub eps: f32,
    /// Largest sequence length the layer will see (sizes the RoPE table and the decode cache).
    pub max_positions: usize,
    pub scale: Option<f32>,
}

/// The layer, its weights on the GPU.
pub struct RatLayer {
    cfg: RatConfig,
    heads: Heads,
    norm_w: Tensor,
    /// The fused input projection [z | x | g | q | k] (the upstream `in_proj`), and its blocks.
    w_in: Linear,
    w_z: Linear,
    w_v: Linear,
    w_g: Linear,
    w_q: Linear,
    w_k: Linear,
    gate_bias: Tensor,
    w_out: Linear,
    rope: rope::RopeTable, // chunk positions
}

/// Decode state of one RAT layer: rotated chunk keys and values `[B, H, maxC, dh]` (slot c holds
/// chunk c's final state once it is complete, the running state while it is current) and the raw
/// running states `[B, 1, D]`. It grows by one slot per L tokens: L times smaller than a KV cache.
pub struct RatCache {
    k: Tensor,
    v: Tensor,
    last_k: Tensor,
    last_v: Tensor,
    next_pos: usize,
    chunk: usize,
}

impl RatCache {
    /// For benchmarks: continue as if `position` tokens had been decoded, keeping whatever the
    /// cache holds (zeros for a new cache). Outputs are then not those of any real prompt.
    #[doc(hidden)]
    pub fn bench_seek(&mut self, position: usize) {
        self.next_pos = position;
    }

    pub fn position(&self) -> usize {
        self.next_pos
    }
    /// Bytes on the GPU (all slots allocated up front).
    pub fn bytes(&self) -> u64 {
        self.k.bytes() + self.v.bytes() + self.last_k.bytes() + self.last_v.bytes()
    }
    /// Bytes the cache needs at its current position (chunks touched so far).
    pub fn bytes_used(&self) -> u64 {
        let s = self.k.shape();
        let chunks = self.next_pos.div_ceil(self.chunk).max(1) as u64;
        2 * (s[0] * s[1] * s[3] * self.k.dtype().size()) as u64 * chunks
            + self.last_k.bytes()
            + self.last_v.bytes()
    }
}

impl RatLayer {
    /// Values per token of the widest activation it binds (the fused input projection's output).
    pub fn token_width(&self) -> usize {
        self.w_in.out_features()
    }
    /// Bytes per sequence of its largest cache tensor (the chunk-key cache).
    pub fn cache_bytes_per_sequence(&self, dtype: DType) -> u64 {
        let slots = self.cfg.max_positions.div_ceil(self.cfg.chunk).max(1);
        (self.heads.heads * slots * self.heads.dh * dtype.size()) as u64
    }
    /// Builds the layer from a checkpoint; `prefix` is prepended to the parameter names
    /// (`""` for a standalone layer, `backbone.layers.{i}.seq_layer.` inside a model).
    pub fn load(
        ctx: &Context,
        cfg: RatConfig,
        ckpt: &Checkpoint,
        prefix: &str,
        dtype: DType,
    ) -> Result<RatLayer> {
        let d = cfg.d_model;
        let heads = Heads::new(d, cfg.heads, cfg.groups)?;
        if cfg.chunk == 0 {
            return Err(Error::invalid("rat layer", "chunk_size must be at least 1"));
        }
        let dg = heads.dg();
        let (w_in, _) = ckpt.f32(
            &format!("{prefix}in_proj.weight"),
            Some(&[3 * d + 2 * dg, d]),
        )?;
        let (bias, _) = ckpt.f32(&format!("{prefix}gate_bias"), Some(&[d]))?;
        let (norm_w, _) = ckpt.f32(&format!("{prefix}input_norm.weight"), Some(&[d]))?;
        let (w_out, _) = ckpt.f32(&format!("{prefix}out_proj.weight"), Some(&[d, d]))?;
        let w_in = Linear::new(ctx, ctx.upload(&w_in, &[3 * d + 2 * dg, d], dtype)?)?;
        let max_chunks = cfg.max_positions.div_ceil(cfg.chunk).max(1);
        Ok(RatLayer {
            w_z: w_in.rows(0..d)?,
            w_v: w_in.rows(d..2 * d)?,
            w_g: w_in.rows(2 * d..3 * d)?,
            w_q: w_in.rows(3 * d..3 * d + dg)?,
            w_k: w_in.rows(3 * d + dg..3 * d + 2 * dg)?,
            w_in,
            gate_bias: ctx.upload(&bias, &[d], dtype)?,
            norm_w: ctx.upload(&norm_w, &[d], dtype)?,
            w_out: Linear::new(ctx, ctx.upload(&w_out, &[d, d], dtype)?)?,
            rope: rope::RopeTable::new(ctx, heads.dh, max_chunks, cfg.rope_base)?,
            heads,
            cfg,
        })
    }

    pub fn config(&self) -> &RatConfig {
        &self.cfg
    }

    fn check_input(&self, x: &Tensor, pos0: usize) -> Result<(usize, usize)> {
        let s = x.shape();
        if s.len() != 3 || s[2] != self.cfg.d_model {
            return Err(Error::shape(
                "rat layer",
                format!("input must be [B, T, {}], got {s:?}", self.cfg.d_model),
            ));
        }
        if pos0 + s[1] > self.cfg.max_positions {
            return Err(Error::invalid(
                "rat layer",
                format!(
                    "positions up to {} exceed max_positions {}",
                    pos0 + s[1],
                    self.cfg.max_positions
                ),
            ));
        }
        Ok((s[0], s[1]))
    }

    /// Chunk positions of tokens `pos0 .. pos0 + n`.
    fn chunk_positions(&self, ctx: &Context, pos0: usize, n: usize) -> Result<rope::Positions> {
        self.rope.positions(
            ctx,
            &(pos0..pos0 + n)
                .map(|t| t / self.cfg.chunk)
                .collect::<Vec<_>>(),
        )
    }

    /// z, v, g_pre, grouped q, grouped k from the normalised input.
    fn project(&self, rec: &mut Recording, x: &Tensor) -> Result<[Tensor; 5]> {
        let u = norm::rmsnorm(rec, x, &self.norm_w, self.cfg.eps)?;
        Ok([
            self.w_z.forward(rec, &u)?,
            self.w_v.forward(rec, &u)?,
            self.w_g.forward(rec, &u)?,
            self.w_q.forward(rec, &u)?,
            self.w_k.forward(rec, &u)?,
        ])
    }

    fn output(
        &self,
        rec: &mut Recording,
        x: &Tensor,
        z_pre: &Tensor,
        o: &Tensor,
    ) -> Result<Tensor> {
        let gated = ew::sigmoid_mul(rec, z_pre, o)?;
        let y = self.w_out.forward(rec, &gated)?;
        ew::add(rec, x, &y)
    }

    /// The parallel pass: output, rotated scanned keys and scanned values.
    fn parallel(
        &self,
        rec: &mut Recording,
        x: &Tensor,
    ) -> Result<(Tensor, Tensor, Tensor, Tensor)> {
        let (_, t) = self.check_input(x, 0)?;
        let ctx = rec.context().clone();
        let [z, v, g, q, k] = self.project(rec, x)?;
        let (sv, sk) = rops::scan(rec, &v, &g, &self.gate_bias, &k, self.heads, self.cfg.chunk)?;
        let pos = self.chunk_positions(&ctx, 0, t)?;
        let qr = rope::rope(rec, &q, &self.rope, &pos)?;
        let kr = rope::rope(rec, &sk, &self.rope, &pos)?;
        let o = rops::inter_chunk_attention(
            rec,
            &qr,
            &kr,
            &sv,
            self.heads,
            self.cfg.chunk,
            self.cfg.scale,
        )?;
        Ok((self.output(rec, x, &z, &o)?, kr, sk, sv))
    }

    /// Parallel forward over `x [B, T, D]` (any T, a ragged last chunk included).
    pub fn forward(&self, rec: &mut Recording, x: &Tensor) -> Result<Tensor> {
        Ok(self.parallel(rec, x)?.0)
    }

    /// An empty cache for `batch` sequences.
    pub fn new_cache(&self, ctx: &Context, batch: usize, dtype: DType) -> Result<RatCache> {
        ctx.run(|rec| self.cache_in(rec, batch, dtype))
    }

    /// An empty cache whose zeroing is recorded into `rec` (no submit of its own).
    fn cache_in(&self, rec: &mut Recording, batch: usize, dtype: DType) -> Result<RatCache> {
        let ctx = rec.context().clone();
        let slots = self.cfg.max_positions.div_ceil(self.cfg.chunk).max(1);
        let shape = [batch, self.heads.heads, slots, self.heads.dh];
        let d = self.cfg.d_model;
        let cache = RatCache {
            k: ctx.alloc(&shape, dtype)?,
            v: ctx.alloc(&shape, dtype)?,
            last_k: ctx.alloc(&[batch, 1, d], dtype)?,
            last_v: ctx.alloc(&[batch, 1, d], dtype)?,
            next_pos: 0,
            chunk: self.cfg.chunk,
        };
        // Zeros, so a cache is never read uninitialised (pool buffers hold old data).
        for t in [&cache.k, &cache.v, &cache.last_k, &cache.last_v] {
            rec.zero(t);
        }
        Ok(cache)
    }

    /// Parallel forward over the prompt `x [B, P, D]` that also fills a new cache.
    pub fn prefill(&self, rec: &mut Recording, x: &Tensor) -> Result<(Tensor, RatCache)> {
        let (b, p) = self.check_input(x, 0)?;
        let mut cache = self.cache_in(rec, b, self.norm_w.dtype())?;
        let (y, kr, sk, sv) = self.parallel(rec, x)?;
        rops::chunk_gather(rec, &kr, &cache.k, self.heads, self.cfg.chunk)?;
        rops::chunk_gather(rec, &sv, &cache.v, self.heads, self.cfg.chunk)?;
        let d = self.cfg.d_model as u64;
        for bi in 0..b as u64 {
            let last = (bi * p as u64 + p as u64 - 1) * d;
            rec.copy_region(&sk, last, &cache.last_k, bi * d, d)?;
            rec.copy_region(&sv, last, &cache.last_v, bi * d, d)?;
        }
        cache.next_pos = p;
        Ok((y, cache))
    }

    /// One token per sequence, `x [B, 1, D]`, at the cache's position; advances the cache.
    /// Inside the first chunk the output is the running value state (where upstream crashes).
    pub fn step(&self, rec: &mut Recording, cache: &mut RatCache, x: &Tensor) -> Result<Tensor> {
        let (b, t) = self.check_input(x, cache.next_pos)?;
        if t != 1 || cache.last_k.shape()[0] != b {
            return Err(Error::shape(
                "rat step",
                format!(
                    "input must be [{}, 1, D], got {:?}",
                    cache.last_k.shape()[0],
                    x.shape()
                ),
            ));
        }
        // At most five dispatches where the kernels fold everything in (GPU schedules, and CPU
        // ones below 8 sequences; else the norm and the gate run as maps): one projection for z,
        // x, g, q and k with the input norm folded in, the recurrent step with the rotations and
        // the cache writes, flash-decoding over the chunk cache (one pass for a short cache, two
        // for a long one), and the output projection with the gate sigmoid(z) (read in place from
        // the projection) and the residual.
        let pos = cache.next_pos;
        let c = pos / self.cfg.chunk;
        let normed = Fused {
            norm: Some((&self.norm_w, self.cfg.eps)),
            ..Fused::default()
        };
        let proj = self.w_in.forward_fused(rec, x, normed)?;
        let q = rops::step_prep(
            rec,
            &proj,
            &self.gate_bias,
            &self.rope,
            c,
            pos.is_multiple_of(self.cfg.chunk),
            &cache.last_v,
            &cache.last_k,
            &cache.k,
            &cache.v,
            self.heads,
        )?;
        let o = attn::decode(rec, &q, &cache.k, &cache.v, c + 1, self.cfg.scale)?;
        cache.next_pos += 1;
        let width = proj.last_dim();
        self.w_out.forward_fused(
            rec,
            &o,
            Fused {
                norm: None,
                residual: Some(x),
                gate: Some(Slice {
                    tensor: &proj,
                    offset: 0,
                    ld: width,
                }),
            },
        )
    }
}
