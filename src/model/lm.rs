//! Language models. The RAT reference code's (spec/rat.md §6): embedding → per block a sequence
//! layer (with its own pre-norm and residual) then a GELU FFN (`h + fc2(GELU(fc1(RMSNorm(h))))`) →
//! final RMSNorm → tied head. MesaNet in the flash-linear-attention layout (spec/mesa.md §3.1):
//! per block `h + attn(attn_norm(h))` then `h + down(silu(gate(u)) ⊙ up(u))` with `u = mlp_norm(h)`.

use std::ops::Range;
use std::path::Path;

use crate::context::Context;
use crate::error::{Error, Result};
use crate::layers::{
    AnyCache, AnyLayer, AttentionConfig, AttentionLayer, MesaConfig, MesaLayer, RatConfig,
    RatLayer, SequenceLayer,
};
use crate::model::{Checkpoint, ModelConfig};
use crate::ops::embedding::{embedding_sharded, gather_rows, TokenIds};
use crate::ops::gemm::{Fused, Linear};
use crate::ops::shards::{copy_rows, row_blocks, rows_per_binding, RowShards};
use crate::ops::{elementwise as ew, norm};
use crate::record::Recording;
use crate::tensor::{DType, Tensor};

enum Ffn {
    /// `h + fc2(GELU(fc1(RMSNorm(h))))`
    Gelu {
        ln: Tensor,
        fc1: Linear,
        fc2: Linear,
    },
    /// `h + down(silu(gate(u)) ⊙ up(u))`, `u = RMSNorm(h)`; gate and up as one weight
    /// `[gate | up]` (one product).
    SwiGlu {
        norm: Tensor,
        gate_up: Linear,
        down: Linear,
    },
}

/// `h + mixer(h)` then `h + ffn(h)`: every mixer carries its own norm and residual (MesaNet's
/// `attn_norm` is its Mesa layer's block norm).
struct Block {
    mixer: AnyLayer,
    ffn: Ffn,
}

/// A loaded model.
pub struct Model {
    cfg: ModelConfig,
    /// The embedding table and the LM head are stored as blocks of vocabulary rows that each
    /// fit a binding (one block unless the table is larger than the adapter binds at once).
    wte: RowShards,
    head: Linear,
    final_norm: Tensor,
    blocks: Vec<Block>,
    /// Bytes of the uploaded weights.
    weights: u64,
}

/// The decode state of a whole model: the layers' caches for groups of sequences, each group's
/// largest cache tensor within one binding (one group unless a batch's caches are larger: the
/// KV cache of 16 sequences of 4096 tokens at d_model 2048 is 268 MB per layer in f16).
pub struct ModelCache {
    groups: Vec<CacheGroup>,
    position: usize,
}

struct CacheGroup {
    seqs: Range<usize>,
    layers: Vec<AnyCache>,
}

impl ModelCache {
    pub fn position(&self) -> usize {
        self.position
    }
    /// GPU bytes held by all layer caches.
    pub fn bytes(&self) -> u64 {
        self.groups
            .iter()
            .flat_map(|g| &g.layers)
            .map(AnyCache::bytes)
            .sum()
    }
    /// Groups of sequences stepped one after another (1 unless the batch's caches would pass
    /// one binding).
    pub fn groups(&self) -> usize {
        self.groups.len()
    }
    fn batch(&self) -> usize {
        self.groups.last().map_or(0, |g| g.seqs.end)
    }
    /// Moves every layer's cache to `position` without filling it (benchmarks: a step's cost
    /// depends on the cache length, not on its values).
    #[doc(hidden)]
    pub fn bench_seek(&mut self, position: usize) {
        for l in self.groups.iter_mut().flat_map(|g| &mut g.layers) {
            l.bench_seek(position);
        }
        self.position = position;
    }
}

impl Model {
    /// Loads `model.safetensors` + `config.json` from a model folder.
    pub fn open(ctx: &Context, dir: &Path, dtype: DType) -> Result<Model> {
        Self::open_with(ctx, dir, dtype, |_| {})
    }

    /// [`Model::open`], with `edit` applied to the folder's config first (e.g. a CG rule given on
    /// the command line).
    pub fn open_with(
        ctx: &Context,
        dir: &Path,
        dtype: DType,
        edit: impl FnOnce(&mut ModelConfig),
    ) -> Result<Model> {
        Self::open_as(ctx, dir, Some(dtype), edit)
    }

    /// [`Model::open_with`] where `dtype: None` takes the config's `dtype` (or `torch_dtype`),
    /// else f32.
    pub fn open_as(
        ctx: &Context,
        dir: &Path,
        dtype: Option<DType>,
        edit: impl FnOnce(&mut ModelConfig),
    ) -> Result<Model> {
        let cfg_path = dir.join("config.json");
        let text = std::fs::read_to_string(&cfg_path).map_err(|source| Error::Io {
            path: cfg_path.display().to_string(),
            source,
        })?;
        let mut cfg = ModelConfig::parse(&cfg_path.display().to_string(), &text)?;
        edit(&mut cfg);
        let ckpt = Checkpoint::open_dir(dir)?;
        Self::load_all(ctx, cfg, &ckpt, dtype)
    }

    /// A model from files already in memory (what a web page fetched): the text of its
    /// `config.json` and the bytes of its `model.safetensors`. `dtype: None` as in
    /// [`Model::open_as`].
    pub fn from_memory(
        ctx: &Context,
        config_json: &str,
        safetensors: &[u8],
        dtype: Option<DType>,
    ) -> Result<Model> {
        let cfg = ModelConfig::parse("config.json", config_json)?;
        let ckpt = Checkpoint::from_bytes("model.safetensors", safetensors)?;
        Self::load_all(ctx, cfg, &ckpt, dtype)
    }

    /// [`Model::load`], refusing a checkpoint with tensors the config does not use.
    fn load_all(
        ctx: &Context,
        cfg: ModelConfig,
        ckpt: &Checkpoint,
        dtype: Option<DType>,
    ) -> Result<Model> {
        let dtype = dtype.or(cfg.dtype).unwrap_or(DType::F32);
        let model = Self::load(ctx, cfg, ckpt, dtype)?;
        // Tensors the config did not ask for mean the config describes another model (more
        // layers, another kind): running it would silently drop weights.
        let extra = ckpt.unused();
        if !extra.is_empty() {
            let shown: Vec<&str> = extra.iter().take(4).map(String::as_str).collect();
            return Err(Error::Checkpoint {
                file: ckpt.file().to_string(),
                msg: format!(
                    "{} tensor(s) are not used by the model config.json describes ({:?}, {} layers): {}{}; \
                     check model_kind and num_layers",
                    extra.len(),
                    model.cfg.kind,
                    model.cfg.num_layers,
                    shown.join(", "),
                    if extra.len() > shown.len() { ", …" } else { "" }
                ),
            });
        }
        Ok(model)
    }

    /// Builds the model from a checkpoint under the upstream names (a `_orig_mod.` prefix is not
    /// expected here: `scripts/convert_checkpoint.py` strips it). A missing `head.lm_head.weight`
    /// is tied to the embedding.
    pub fn load(ctx: &Context, cfg: ModelConfig, ckpt: &Checkpoint, dtype: DType) -> Result<Model> {
        if cfg.kind == crate::model::ModelKind::MesaNet {
            return Self::load_mesanet(ctx, cfg, ckpt, dtype);
        }
        let (v, d) = (cfg.vocab_size, cfg.d_model);
        fits(ctx, ckpt, dtype)?;
        let (wte, head) = table_and_head(
            ctx,
            ckpt,
            "embedding.wte.weight",
            "head.lm_head.weight",
            [v, d],
            dtype,
            cfg.tie_embedding,
        )?;
        let final_norm = ckpt.upload(ctx, "backbone.ln.weight", &[d], dtype)?;
        let mut blocks = Vec::with_capacity(cfg.num_layers);
        for i in 0..cfg.num_layers {
            let prefix = format!("backbone.layers.{i}.seq_layer.");
            let mixer = if cfg.is_rat(i) {
                let rc = RatConfig {
                    d_model: d,
                    heads: cfg.num_head,
                    groups: cfg.ngroups,
                    chunk: cfg.chunk_size,
                    rope_base: cfg.rope_base,
                    eps: cfg.norm_eps,
                    max_positions: cfg.max_seq_len,
                    scale: None,
                };
                AnyLayer::Rat(RatLayer::load(ctx, rc, ckpt, &prefix, dtype)?)
            } else {
                let ac = AttentionConfig {
                    d_model: d,
                    heads: cfg.num_head,
                    window: if cfg.kind == crate::model::ModelKind::Hybrid {
                        cfg.window_size
                    } else {
                        None
                    },
                    rope_base: cfg.rope_base,
                    eps: cfg.norm_eps,
                    max_positions: cfg.max_seq_len,
                    scale: None,
                };
                AnyLayer::Attention(AttentionLayer::load(ctx, ac, ckpt, &prefix, dtype)?)
            };
            let f = format!("backbone.layers.{i}.hidden_layer.");
            let lin = |n: &str, shape: [usize; 2]| -> Result<Linear> {
                Linear::new(ctx, ckpt.upload(ctx, &format!("{f}{n}"), &shape, dtype)?)
            };
            let ffn = Ffn::Gelu {
                ln: ckpt.upload(ctx, &format!("{f}ln.weight"), &[d], dtype)?,
                fc1: lin("fc1.weight", [cfg.d_ffn, d])?,
                fc2: lin("fc2.weight", [d, cfg.d_ffn])?,
            };
            blocks.push(Block { mixer, ffn });
        }
        Ok(Model {
            wte,
            head,
            final_norm,
            blocks,
            cfg,
            weights: ckpt.upload_bytes(ctx.resolve_dtype(dtype), false),
        })
    }

    /// MesaNet under flash-linear-attention's names (`model.embeddings.weight`,
    /// `model.layers.{i}.{attn_norm,attn,mlp_norm,mlp}.*`, `model.norm.weight`, `lm_head.weight`,
    /// tied to the embedding when absent).
    fn load_mesanet(
        ctx: &Context,
        cfg: ModelConfig,
        ckpt: &Checkpoint,
        dtype: DType,
    ) -> Result<Model> {
        let (v, d, f) = (cfg.vocab_size, cfg.d_model, cfg.d_ffn);
        fits(ctx, ckpt, dtype)?;
        let (wte, head) = table_and_head(
            ctx,
            ckpt,
            "model.embeddings.weight",
            "lm_head.weight",
            [v, d],
            dtype,
            cfg.tie_embedding,
        )?;
        let vec = |n: &str| -> Result<Tensor> { ckpt.upload(ctx, n, &[d], dtype) };
        let lin = |n: &str, shape: [usize; 2]| -> Result<Linear> {
            Linear::new(ctx, ckpt.upload(ctx, n, &shape, dtype)?)
        };
        let mut blocks = Vec::with_capacity(cfg.num_layers);
        for i in 0..cfg.num_layers {
            let p = format!("model.layers.{i}.");
            let gate = format!("{p}attn.g_proj.weight");
            if let Some(want) = cfg.use_output_gate.filter(|&w| w != ckpt.contains(&gate)) {
                return Err(Error::Checkpoint {
                    file: ckpt.file().to_string(),
                    msg: format!(
                        "config.json says use_output_gate = {want} but the checkpoint {} '{gate}'",
                        if want { "lacks" } else { "has" }
                    ),
                });
            }
            let mc = MesaConfig {
                hidden: d,
                heads: cfg.num_head,
                head_dim: cfg.d_head,
                norm_eps: cfg.norm_eps,
                cg_iters_prefill: cfg.cg_steps_prefill,
                cg_iters_decode: cfg.cg_steps_decode,
                solver: cfg.solver,
            };
            let norm = vec(&format!("{p}attn_norm.weight"))?;
            let mixer = MesaLayer::load(ctx, mc, ckpt, &format!("{p}attn."), dtype)?
                .with_block_norm(norm, cfg.norm_eps)?;
            blocks.push(Block {
                mixer: AnyLayer::Mesa(mixer),
                ffn: Ffn::SwiGlu {
                    norm: vec(&format!("{p}mlp_norm.weight"))?,
                    gate_up: {
                        let mut w = ckpt
                            .f32(&format!("{p}mlp.gate_proj.weight"), Some(&[f, d]))?
                            .0;
                        w.extend(
                            ckpt.f32(&format!("{p}mlp.up_proj.weight"), Some(&[f, d]))?
                                .0,
                        );
                        Linear::new(ctx, ctx.upload(&w, &[2 * f, d], dtype)?)?
                    },
                    down: lin(&format!("{p}mlp.down_proj.weight"), [d, f])?,
                },
            });
        }
        Ok(Model {
            wte,
            head,
            final_norm: vec("model.norm.weight")?,
            blocks,
            cfg,
            weights: ckpt.upload_bytes(ctx.resolve_dtype(dtype), false),
        })
    }

    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    /// The storage dtype of the weights (f32 where f16 was asked for but the adapter has none).
    pub fn dtype(&self) -> DType {
        self.wte.dtype()
    }

    /// An empty (zeroed) cache for `batch` sequences at position 0.
    pub fn new_cache(&self, ctx: &Context, batch: usize) -> Result<ModelCache> {
        let size = self.cache_group_size(ctx);
        let groups = sequence_groups(batch, size)
            .into_iter()
            .map(|seqs| {
                let layers = self
                    .blocks
                    .iter()
                    .map(|b| b.mixer.new_cache(ctx, seqs.len(), self.dtype()))
                    .collect::<Result<_>>()?;
                Ok(CacheGroup { seqs, layers })
            })
            .collect::<Result<_>>()?;
        Ok(ModelCache {
            groups,
            position: 0,
        })
    }

    /// Sequences whose caches fit one binding (every layer's largest cache tensor).
    fn cache_group_size(&self, ctx: &Context) -> usize {
        let per = self
            .blocks
            .iter()
            .map(|b| b.mixer.cache_bytes_per_sequence(self.dtype()))
            .max()
            .unwrap_or(1)
            .max(1);
        self.word_aligned(((ctx.binding_limit() / per) as usize).max(1), 1)
    }

    /// `size` made even where a group's `[size, rows, V]` logits would not start on a 4-byte word
    /// (f16 and an odd `rows · V`): groups' logits are placed by buffer copies.
    fn word_aligned(&self, size: usize, rows: usize) -> usize {
        let row_bytes = rows * self.cfg.vocab_size * self.dtype().size();
        if size > 1 && !row_bytes.is_multiple_of(4) {
            size / 2 * 2
        } else {
            size
        }
    }

    /// Sequences of `t` tokens that one pass through the layers takes: as many as keep the
    /// widest activation (counted in f32, which covers the layers' f32 intermediates) and every
    /// cache tensor within one binding. Logits and FFN activations are blocked on their own.
    fn group_size(&self, ctx: &Context, t: usize) -> usize {
        let width = self
            .blocks
            .iter()
            .map(|b| b.mixer.token_width())
            .max()
            .unwrap_or(0)
            .max(self.cfg.d_model);
        let by_activation = rows_per_binding(ctx, width, DType::F32) / t.max(1);
        by_activation.min(self.cache_group_size(ctx)).max(1)
    }

    /// Token ids `[B, T]` checked against the vocabulary.
    pub fn tokens(&self, ctx: &Context, ids: &[u32], batch: usize) -> Result<TokenIds> {
        if batch == 0 || !ids.len().is_multiple_of(batch) || ids.is_empty() {
            return Err(Error::shape(
                "model",
                format!("{} ids do not form {batch} non-empty sequences", ids.len()),
            ));
        }
        TokenIds::new(ctx, ids, &[batch, ids.len() / batch], self.cfg.vocab_size)
    }

    /// `h + FFN(h)`; in blocks of rows when the widest activation `[rows, d_ffn]` would pass
    /// the binding limit (long prompts of wide models).
    fn ffn(&self, rec: &mut Recording, f: &Ffn, h: &Tensor) -> Result<Tensor> {
        // The widest activation bound: SwiGLU's gate | up rows are two FFN widths.
        let hidden = match f {
            Ffn::Gelu { .. } => self.cfg.d_ffn,
            Ffn::SwiGlu { .. } => 2 * self.cfg.d_ffn,
        };
        let width = hidden.max(self.cfg.d_model);
        let rows = h.numel() / h.last_dim().max(1);
        let per = rows_per_binding(rec.context(), width, h.dtype());
        if rows <= per {
            return self.ffn_rows(rec, f, h);
        }
        let out = row_blocks(rec, h, h.last_dim(), per, |rec, _, x| {
            self.ffn_rows(rec, f, x)
        })?;
        out.reshape(h.shape())
    }

    fn ffn_rows(&self, rec: &mut Recording, f: &Ffn, h: &Tensor) -> Result<Tensor> {
        // The norm folds into the first product and the residual into the last (three
        // dispatches at decode; as maps around the products where a kernel does not fold them).
        let eps = self.cfg.norm_eps;
        let normed = |n| Fused {
            norm: Some((n, eps)),
            ..Fused::default()
        };
        let (a, out) = match f {
            Ffn::Gelu { ln, fc1, fc2 } => {
                let a = fc1.forward_fused(rec, h, normed(ln))?;
                (ew::gelu(rec, &a)?, fc2)
            }
            Ffn::SwiGlu {
                norm: n,
                gate_up,
                down,
            } => {
                let gu = gate_up.forward_fused(rec, h, normed(n))?;
                (ew::glu(rec, &gu, ew::Unary::Silu)?, down)
            }
        };
        out.forward_fused(
            rec,
            &a,
            Fused {
                residual: Some(h),
                ..Fused::default()
            },
        )
    }

    /// Logits `[.., V]` of hidden states `h [.., D]`. The head runs in blocks of rows when
    /// the whole `[rows, V]` would pass the binding limit ([`Linear::forward`]): the result is
    /// then only read back or copied, never bound.
    fn logits(&self, rec: &mut Recording, h: &Tensor) -> Result<Tensor> {
        let u = norm::rmsnorm(rec, h, &self.final_norm, self.cfg.norm_eps)?;
        self.head.forward(rec, &u)
    }

    /// Blocks the embedding table is stored in (1 unless it is larger than one binding).
    pub fn vocab_blocks(&self) -> usize {
        self.wte.blocks().len()
    }

    /// Bytes of the weights on the GPU (prepared copies such as the CPU schedules' Wᵀ excluded).
    pub fn weight_bytes(&self) -> u64 {
        self.weights
    }

    /// Refuses positions past `max_seq_len` up front: RoPE tables and caches are sized by it, and
    /// MesaNet (which has neither) keeps the same contract so a config means the same everywhere.
    fn check_len(&self, end: usize) -> Result<()> {
        if end > self.cfg.max_seq_len {
            return Err(Error::invalid(
                "model",
                format!(
                    "positions up to {end} exceed the config's max_seq_len {}: shorten the input \
                     or raise max_seq_len in config.json",
                    self.cfg.max_seq_len
                ),
            ));
        }
        Ok(())
    }

    /// Hidden states after the last block for `ids`, and the layers' caches when `keep`.
    /// Each block's commands are submitted when the block is recorded ([`Recording::flush`]),
    /// so that memory holds one block's intermediates.
    fn hidden(
        &self,
        rec: &mut Recording,
        ids: &TokenIds,
        keep: bool,
    ) -> Result<(Tensor, Vec<AnyCache>)> {
        let mut h = embedding_sharded(rec, &self.wte, ids)?;
        let mut layers = Vec::new();
        for b in &self.blocks {
            h = if keep {
                let (y, c) = b.mixer.prefill(rec, &h)?;
                layers.push(c);
                y
            } else {
                b.mixer.forward(rec, &h)?
            };
            h = self.ffn(rec, &b.ffn, &h)?;
            rec.flush()?;
        }
        Ok((h, layers))
    }

    /// Groups of sequences of `ids [B, T]` one pass takes, each with its ids (the whole `ids`
    /// when one group takes them all).
    fn passes(
        &self,
        rec: &mut Recording,
        ids: &TokenIds,
        size: usize,
    ) -> Result<Vec<(Range<usize>, Option<TokenIds>)>> {
        let batch = ids.shape()[0];
        if size >= batch {
            return Ok(vec![(0..batch, None)]);
        }
        sequence_groups(batch, size)
            .into_iter()
            .map(|g| Ok((g.clone(), Some(ids.sequences(rec, g)?))))
            .collect()
    }

    /// The parallel forward's logits, handed to `sink` block by block: `sink(rows, logits)`
    /// with `rows` a range of the flattened `[B·T]` positions and logits `[rows.len(), V]`.
    /// Sequences go through the layers in groups that fit one binding, and each group's logits
    /// in blocks that fit one buffer, so any batch and length runs whatever the logits of all
    /// positions would take (4096 positions of a 32,000-entry vocabulary are 524 MB in f32).
    pub fn forward_blocks(
        &self,
        rec: &mut Recording,
        ids: &TokenIds,
        mut sink: impl FnMut(&mut Recording, Range<usize>, &Tensor) -> Result<()>,
    ) -> Result<()> {
        let t = ids.shape()[1];
        self.check_len(t)?;
        let (v, d) = (self.cfg.vocab_size, self.cfg.d_model);
        let es = self.dtype().size();
        let mut per = ((rec.context().buffer_limit() / (v.max(1) * es) as u64) as usize).max(1);
        if !(v * es).is_multiple_of(4) {
            per = (per / 2 * 2).max(2);
        }
        let size = self.word_aligned(self.group_size(rec.context(), t), t);
        for (g, sub) in self.passes(rec, ids, size)? {
            let (h, _) = self.hidden(rec, sub.as_ref().unwrap_or(ids), false)?;
            let rows = g.len() * t;
            let h = h.reshape(&[rows, d])?;
            let first = g.start * t;
            if rows <= per {
                let l = self.logits(rec, &h)?;
                sink(rec, first..first + rows, &l)?;
                continue;
            }
            for start in (0..rows).step_by(per) {
                let r = start..(start + per).min(rows);
                let hb = copy_rows(rec, &h, r.clone())?;
                let l = self.logits(rec, &hb)?;
                sink(rec, first + r.start..first + r.end, &l)?;
                rec.flush()?;
            }
        }
        Ok(())
    }

    /// Logits `[B, T, V]` of the parallel forward (one tensor: past the adapter's
    /// `max_buffer_size`, use [`Model::forward_blocks`]).
    pub fn forward(&self, rec: &mut Recording, ids: &TokenIds) -> Result<Tensor> {
        let (b, t, v) = (ids.shape()[0], ids.shape()[1], self.cfg.vocab_size);
        let mut whole = None;
        let mut out: Option<Tensor> = None;
        self.forward_blocks(rec, ids, |rec, rows, l| {
            if rows == (0..b * t) {
                whole = Some(l.clone());
                return Ok(());
            }
            if out.is_none() {
                out = Some(rec.context().alloc(&[b * t, v], l.dtype())?);
            }
            let o = out.as_ref().expect("allocated above");
            rec.copy_region(l, 0, o, (rows.start * v) as u64, (rows.len() * v) as u64)
        })?;
        whole
            .or(out)
            .ok_or_else(|| Error::shape("model", "no logits (an empty batch)"))?
            .reshape(&[b, t, v])
    }

    /// Logits of the prompt `[B, P, V]` and the cache to decode from position P (submitted block by
    /// block, as `forward`).
    pub fn prefill(&self, rec: &mut Recording, ids: &TokenIds) -> Result<(Tensor, ModelCache)> {
        self.prefill_impl(rec, ids, false)
    }

    /// [`Model::prefill`] with the logits of each prompt's last position only, `[B, 1, V]`:
    /// what generation needs (the head over all P positions is P× the work and memory).
    pub fn prefill_last(
        &self,
        rec: &mut Recording,
        ids: &TokenIds,
    ) -> Result<(Tensor, ModelCache)> {
        self.prefill_impl(rec, ids, true)
    }

    fn prefill_impl(
        &self,
        rec: &mut Recording,
        ids: &TokenIds,
        last_only: bool,
    ) -> Result<(Tensor, ModelCache)> {
        let (batch, p) = (ids.shape()[0], ids.shape()[1]);
        self.check_len(p)?;
        let (v, d) = (self.cfg.vocab_size, self.cfg.d_model);
        let width = if last_only { 1 } else { p };
        let size = self.word_aligned(self.group_size(rec.context(), p), width);
        let mut groups = Vec::new();
        let mut out: Option<Tensor> = None;
        for (g, sub) in self.passes(rec, ids, size)? {
            let (mut h, layers) = self.hidden(rec, sub.as_ref().unwrap_or(ids), true)?;
            let n = g.len();
            if last_only {
                let last: Vec<usize> = (0..n).map(|b| b * p + p - 1).collect();
                h = gather_rows(rec, &h, &last)?.reshape(&[n, 1, d])?;
            }
            let l = self.logits(rec, &h)?;
            if n == batch {
                out = Some(l);
            } else {
                if out.is_none() {
                    out = Some(rec.context().alloc(&[batch, width, v], l.dtype())?);
                }
                let o = out.as_ref().expect("allocated above");
                let per_seq = (width * v) as u64;
                rec.copy_region(&l, 0, o, g.start as u64 * per_seq, n as u64 * per_seq)?;
            }
            groups.push(CacheGroup { seqs: g, layers });
        }
        let logits = out.ok_or_else(|| Error::shape("model", "no logits (an empty batch)"))?;
        Ok((
            logits,
            ModelCache {
                groups,
                position: p,
            },
        ))
    }

    /// One token per sequence, `ids [B, 1]`: logits `[B, 1, V]`; advances the cache.
    pub fn step(
        &self,
        rec: &mut Recording,
        cache: &mut ModelCache,
        ids: &TokenIds,
    ) -> Result<Tensor> {
        if ids.shape().len() != 2 || ids.shape()[1] != 1 || ids.shape()[0] != cache.batch() {
            return Err(Error::shape(
                "model step",
                format!(
                    "ids must be [B, 1] with B = {} (the cache's batch), got {:?}",
                    cache.batch(),
                    ids.shape()
                ),
            ));
        }
        self.check_len(cache.position + 1)?;
        let (batch, v) = (cache.batch(), self.cfg.vocab_size);
        let logits = if let [g] = cache.groups.as_mut_slice() {
            self.step_group(rec, &mut g.layers, ids)?
        } else {
            let out = rec.context().alloc(&[batch, 1, v], self.dtype())?;
            for g in &mut cache.groups {
                let sub = ids.sequences(rec, g.seqs.clone())?;
                let l = self.step_group(rec, &mut g.layers, &sub)?;
                let n = g.seqs.len() as u64;
                rec.copy_region(&l, 0, &out, g.seqs.start as u64 * v as u64, n * v as u64)?;
            }
            out
        };
        cache.position += 1;
        Ok(logits)
    }

    fn step_group(
        &self,
        rec: &mut Recording,
        layers: &mut [AnyCache],
        ids: &TokenIds,
    ) -> Result<Tensor> {
        let mut h = embedding_sharded(rec, &self.wte, ids)?;
        for (b, c) in self.blocks.iter().zip(layers.iter_mut()) {
            h = b.mixer.step(rec, c, &h)?;
            h = self.ffn(rec, &b.ffn, &h)?;
        }
        self.logits(rec, &h)
    }
}

/// `0..batch` in consecutive groups of `size` (the last may be shorter).
fn sequence_groups(batch: usize, size: usize) -> Vec<Range<usize>> {
    (0..batch)
        .step_by(size.max(1))
        .map(|s| s..(s + size.max(1)).min(batch))
        .collect()
}

/// The embedding table `[V, D]` in vocabulary blocks and the LM head: `head` when the checkpoint
/// has it (the RAT reference saves its tied head too), else tied to the embedding (sharing its
/// buffers) where the config ties them; an untied model without its head is an error.
#[allow(clippy::too_many_arguments)]
fn table_and_head(
    ctx: &Context,
    ckpt: &Checkpoint,
    table: &str,
    head: &str,
    [v, d]: [usize; 2],
    dtype: DType,
    tied: bool,
) -> Result<(RowShards, Linear)> {
    if !tied && !ckpt.contains(head) {
        return Err(Error::Checkpoint {
            file: ckpt.file().to_string(),
            msg: format!(
                "tensor '{head}' is missing and the config does not tie it to the embedding \
                 (tie_embedding / tie_word_embeddings false)"
            ),
        });
    }
    let rows = |name: &str| {
        RowShards::build(ctx, v, d, dtype, |r| {
            ckpt.upload_rows(ctx, name, [v, d], r, dtype)
        })
    };
    let wte = rows(table)?;
    let lm = if ckpt.contains(head) {
        rows(head)?.linear(ctx)?
    } else {
        wte.linear(ctx)?
    };
    Ok((wte, lm))
}

/// Refuses, before anything is uploaded, a checkpoint larger than the memory the context may
/// use ([`Context::memory_available`]). The direct GEMM schedules (CPU adapters) also keep a
/// transposed copy of every projection weight.
fn fits(ctx: &Context, ckpt: &Checkpoint, dtype: DType) -> Result<()> {
    let dtype_s = ctx.resolve_dtype(dtype);
    let mut need = ckpt.upload_bytes(dtype_s, false);
    if crate::ops::gemm::GemmSchedule::Auto
        .resolve(ctx)
        .is_direct()
    {
        need = need.saturating_add(ckpt.upload_bytes(dtype_s, true));
    }
    if let Some((have, what)) = ctx.memory_available() {
        if need > have {
            return Err(Error::OutOfMemory {
                during: format!("loading {}", ckpt.file()),
                detail: format!(
                    "its weights need {need} bytes as {dtype:?} and {what} {have} bytes: use \
                     --dtype f16, a smaller model, or a device with more memory"
                ),
            });
        }
    }
    Ok(())
}
