//! Softmax attention layers of the RAT reference code (spec/rat.md §5): `LocalAttention`
//! (sliding window) and full causal `Attention`. Both: pre-RMSNorm (`input_norm.weight`),
//! `in_proj.weight [3D, D]` split as value, query, key; token-level rotate-half RoPE; `out_proj.weight`;
//! residual on the un-normalised input.

use crate::context::Context;
use crate::error::{Error, Result};
use crate::model::Checkpoint;
use crate::ops::gemm::{Fused, Linear};
use crate::ops::{attention as attn, elementwise as ew, norm, rope::RopeTable};
use crate::record::Recording;
use crate::tensor::{DType, Tensor};

/// Shape and hyper-parameters of an attention layer.
#[derive(Clone, Debug)]
pub struct AttentionConfig {
    pub d_model: usize,
    pub heads: usize,
    /// `Some(W)`: query t sees keys t−W … t. `None`: full causal attention.
    pub window: Option<usize>,
    pub rope_base: f64,
    pub eps: f32,
    /// Largest position the layer will see (sizes the RoPE table and the full-attention cache).
    pub max_positions: usize,
    /// Softmax scale; `None` is `dh^-1/2`.
    pub scale: Option<f32>,
}

impl AttentionConfig {
    pub fn head_dim(&self) -> usize {
        self.d_model / self.heads.max(1)
    }
}

/// The layer, its weights on the GPU.
pub struct AttentionLayer {
    cfg: AttentionConfig,
    norm_w: Tensor,
    /// The fused input projection [v | q | k] (3D × D, the upstream order), and its blocks.
    w_in: Linear,
    w_v: Linear,
    w_q: Linear,
    w_k: Linear,
    w_out: Linear,
    rope: RopeTable,
}

/// Rotated keys and values of the tokens seen so far: a ring of W+1 slots for a window W, else
/// a growing cache of `max_positions` slots. Position `pos` lives in slot `pos mod capacity`.
pub struct KvCache {
    k: Tensor,
    v: Tensor,
    next_pos: usize,
}

impl KvCache {
    /// For benchmarks: continue as if `position` tokens had been decoded, keeping whatever the
    /// cache holds (zeros for a new cache). Outputs are then not those of any real prompt.
    #[doc(hidden)]
    pub fn bench_seek(&mut self, position: usize) {
        self.next_pos = position;
    }

    /// The position the next step decodes.
    pub fn position(&self) -> usize {
        self.next_pos
    }
    pub fn capacity(&self) -> usize {
        self.k.shape()[2]
    }
    /// Bytes held on the GPU for this cache.
    pub fn bytes(&self) -> u64 {
        self.k.bytes() + self.v.bytes()
    }
}

impl AttentionLayer {
    /// Values per token of the widest activation it binds (the fused input projection's output).
    pub fn token_width(&self) -> usize {
        self.w_in.out_features()
    }
    /// Bytes per sequence of its largest cache tensor (the key cache).
    pub fn cache_bytes_per_sequence(&self, dtype: DType) -> u64 {
        (self.cache_capacity() * self.cfg.d_model * dtype.size()) as u64
    }
    fn cache_capacity(&self) -> usize {
        match self.cfg.window {
            Some(w) => (w + 1).min(self.cfg.max_positions),
            None => self.cfg.max_positions,
        }
    }
    /// Builds the layer from a checkpoint; `prefix` is prepended to the parameter names
    /// (`""` for a standalone layer, `backbone.layers.{i}.seq_layer.` inside a model).
    pub fn load(
        ctx: &Context,
        cfg: AttentionConfig,
        ckpt: &Checkpoint,
        prefix: &str,
        dtype: DType,
    ) -> Result<AttentionLayer> {
        let d = cfg.d_model;
        if cfg.heads == 0 || !d.is_multiple_of(cfg.heads) {
            return Err(Error::invalid(
                "attention layer",
                format!("{} heads do not divide d_model {d}", cfg.heads),
            ));
        }
        attn::check_head_dim("attention layer", cfg.head_dim())?;
        let (w_in, _) = ckpt.f32(&format!("{prefix}in_proj.weight"), Some(&[3 * d, d]))?;
        let (norm_w, _) = ckpt.f32(&format!("{prefix}input_norm.weight"), Some(&[d]))?;
        let (w_out, _) = ckpt.f32(&format!("{prefix}out_proj.weight"), Some(&[d, d]))?;
        let w_in = Linear::new(ctx, ctx.upload(&w_in, &[3 * d, d], dtype)?)?;
        Ok(AttentionLayer {
            w_v: w_in.rows(0..d)?,
            w_q: w_in.rows(d..2 * d)?,
            w_k: w_in.rows(2 * d..3 * d)?,
            w_in,
            norm_w: ctx.upload(&norm_w, &[d], dtype)?,
            w_out: Linear::new(ctx, ctx.upload(&w_out, &[d, d], dtype)?)?,
            rope: RopeTable::new(ctx, cfg.head_dim(), cfg.max_positions, cfg.rope_base)?,
            cfg,
        })
    }

    pub fn config(&self) -> &AttentionConfig {
        &self.cfg
    }

    fn check_input(&self, x: &Tensor, pos0: usize) -> Result<(usize, usize)> {
        let s = x.shape();
        if s.len() != 3 || s[2] != self.cfg.d_model {
            return Err(Error::shape(
                "attention layer",
                format!("input must be [B, T, {}], got {s:?}", self.cfg.d_model),
            ));
        }
        if pos0 + s[1] > self.cfg.max_positions {
            return Err(Error::invalid(
                "attention layer",
                format!(
                    "positions up to {} exceed max_positions {}",
                    pos0 + s[1],
                    self.cfg.max_positions
                ),
            ));
        }
        Ok((s[0], s[1]))
    }

    /// Normalised input projected to rotated q, k and v, each `[B, T, D]`, for tokens at `pos0..`.
    fn qkv(
        &self,
        rec: &mut Recording,
        x: &Tensor,
        pos0: usize,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let t = x.shape()[1];
        let ctx = rec.context().clone();
        let positions = self
            .rope
            .positions(&ctx, &(pos0..pos0 + t).collect::<Vec<_>>())?;
        let u = norm::rmsnorm(rec, x, &self.norm_w, self.cfg.eps)?;
        let v = self.w_v.forward(rec, &u)?;
        let q = self.w_q.forward(rec, &u)?;
        let q = crate::ops::rope::rope(rec, &q, &self.rope, &positions)?;
        let k = self.w_k.forward(rec, &u)?;
        let k = crate::ops::rope::rope(rec, &k, &self.rope, &positions)?;
        Ok((q, k, v))
    }

    fn output(&self, rec: &mut Recording, x: &Tensor, o: &Tensor) -> Result<Tensor> {
        let y = self.w_out.forward(rec, o)?;
        ew::add(rec, x, &y)
    }

    /// The parallel pass: output, and the rotated keys and values (for a cache).
    fn parallel(&self, rec: &mut Recording, x: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
        self.check_input(x, 0)?;
        let (q, k, v) = self.qkv(rec, x, 0)?;
        let c = &self.cfg;
        let o = attn::attention(rec, &q, &k, &v, c.heads, c.window, c.scale)?;
        Ok((self.output(rec, x, &o)?, k, v))
    }

    /// Parallel forward over `x [B, T, D]` at positions `0..T`.
    pub fn forward(&self, rec: &mut Recording, x: &Tensor) -> Result<Tensor> {
        Ok(self.parallel(rec, x)?.0)
    }

    /// An empty cache for `batch` sequences.
    pub fn new_cache(&self, ctx: &Context, batch: usize, dtype: DType) -> Result<KvCache> {
        ctx.run(|rec| self.cache_in(rec, batch, dtype))
    }

    /// An empty cache whose zeroing is recorded into `rec` (no submit of its own).
    fn cache_in(&self, rec: &mut Recording, batch: usize, dtype: DType) -> Result<KvCache> {
        let ctx = rec.context().clone();
        let shape = [
            batch,
            self.cfg.heads,
            self.cache_capacity(),
            self.cfg.head_dim(),
        ];
        let cache = KvCache {
            k: ctx.alloc(&shape, dtype)?,
            v: ctx.alloc(&shape, dtype)?,
            next_pos: 0,
        };
        // Zeros, so a cache is never read uninitialised (pool buffers hold old data).
        rec.zero(&cache.k);
        rec.zero(&cache.v);
        Ok(cache)
    }

    /// Parallel forward over the prompt `x [B, P, D]` that also fills a new cache.
    pub fn prefill(&self, rec: &mut Recording, x: &Tensor) -> Result<(Tensor, KvCache)> {
        let (b, p) = self.check_input(x, 0)?;
        let mut cache = self.cache_in(rec, b, self.norm_w.dtype())?;
        let (y, k, v) = self.parallel(rec, x)?;
        // Only the last `capacity` tokens survive in a ring; earlier ones would be overwritten.
        let first = p - p.min(cache.capacity());
        attn::kv_write(rec, &k, first, &cache.k, 0)?;
        attn::kv_write(rec, &v, first, &cache.v, 0)?;
        cache.next_pos = p;
        Ok((y, cache))
    }

    /// One token per sequence, `x [B, 1, D]`, at the cache's position; advances the cache.
    pub fn step(&self, rec: &mut Recording, cache: &mut KvCache, x: &Tensor) -> Result<Tensor> {
        let (b, t) = self.check_input(x, cache.next_pos)?;
        if t != 1 || cache.k.shape()[0] != b {
            return Err(Error::shape(
                "attention step",
                format!(
                    "input must be [{}, 1, D], got {:?}",
                    cache.k.shape()[0],
                    x.shape()
                ),
            ));
        }
        // At most five dispatches: one projection for q, k and v with the input norm folded in,
        // their rotation and the cache writes, flash-decoding (one pass for a short cache, two
        // for a long one), and the output projection with the residual.
        let pos = cache.next_pos;
        let normed = Fused {
            norm: Some((&self.norm_w, self.cfg.eps)),
            ..Fused::default()
        };
        let proj = self.w_in.forward_fused(rec, x, normed)?;
        let slot = pos % cache.capacity();
        let q = attn::step_prep(rec, &proj, &self.rope, pos, &cache.k, &cache.v, slot)?;
        let len = (pos + 1).min(cache.capacity());
        let o = attn::decode(rec, &q, &cache.k, &cache.v, len, self.cfg.scale)?;
        cache.next_pos += 1;
        self.w_out.forward_fused(
            rec,
            &o,
            Fused {
                residual: Some(x),
                ..Fused::default()
            },
        )
    }
}
