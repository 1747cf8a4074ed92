//! Language models. The RAT reference code's (spec/rat.md §6): embedding → per block a sequence
//! layer (with its own pre-norm and residual) then a GELU FFN (`h + fc2(GELU(fc1(RMSNorm(h))))`) →
//! final RMSNorm → tied head. MesaNet in the flash-linear-attention layout (spec/mesa.md §3.1):
//! per block `h + attn(attn_norm(h))` then `h + down(silu(gate(u)) ⊙ up(u))` with `u = mlp_norm(h)`.

use std::path::Path;

use crate::context::Context;
use crate::error::{Error, Result};
use crate::layers::{
    AnyCache, AnyLayer, AttentionConfig, AttentionLayer, MesaConfig, MesaLayer, RatConfig,
    RatLayer, SequenceLayer,
};
use crate::model::{Checkpoint, ModelConfig};
use crate::ops::embedding::{embedding_sharded, gather_rows, TokenIds};
use crate::ops::gemm::Linear;
use crate::ops::shards::{RowShards, ShardedLinear};
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
    /// `h + down(silu(gate(u)) ⊙ up(u))`, `u = RMSNorm(h)`
    SwiGlu {
        norm: Tensor,
        gate: Linear,
        up: Linear,
        down: Linear,
    },
}

struct Block {
    /// MesaNet's `attn_norm`: the mixer gets RMSNorm(h) and its output is added to h. RAT-style
    /// layers carry their own norm and residual (None).
    pre_norm: Option<Tensor>,
    mixer: AnyLayer,
    ffn: Ffn,
}

/// A loaded model.
pub struct Model {
    cfg: ModelConfig,
    /// The embedding table and the LM head are stored as blocks of vocabulary rows that each
    /// fit a binding (one block unless the table is larger than the adapter binds at once).
    wte: RowShards,
    head: ShardedLinear,
    final_norm: Tensor,
    blocks: Vec<Block>,
    /// Bytes of the uploaded weights.
    weights: u64,
}

/// The decode state of a whole model.
pub struct ModelCache {
    layers: Vec<AnyCache>,
    position: usize,
}

impl ModelCache {
    pub fn position(&self) -> usize {
        self.position
    }
    /// GPU bytes held by all layer caches.
    pub fn bytes(&self) -> u64 {
        self.layers.iter().map(AnyCache::bytes).sum()
    }
    /// Moves every layer's cache to `position` without filling it (benchmarks: a step's cost
    /// depends on the cache length, not on its values).
    #[doc(hidden)]
    pub fn bench_seek(&mut self, position: usize) {
        for l in &mut self.layers {
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
        let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| Error::Case {
            file: cfg_path.display().to_string(),
            msg: format!("not valid JSON: {e}"),
        })?;
        let mut cfg = ModelConfig::from_json(&cfg_path.display().to_string(), &json, None)?;
        edit(&mut cfg);
        let dtype = dtype.or(cfg.dtype).unwrap_or(DType::F32);
        let ckpt = Checkpoint::open_dir(dir)?;
        let model = Self::load(ctx, cfg, &ckpt, dtype)?;
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
            blocks.push(Block {
                pre_norm: None,
                mixer,
                ffn,
            });
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
            blocks.push(Block {
                pre_norm: Some(vec(&format!("{p}attn_norm.weight"))?),
                mixer: AnyLayer::Mesa(MesaLayer::load(ctx, mc, ckpt, &format!("{p}attn."), dtype)?),
                ffn: Ffn::SwiGlu {
                    norm: vec(&format!("{p}mlp_norm.weight"))?,
                    gate: lin(&format!("{p}mlp.gate_proj.weight"), [f, d])?,
                    up: lin(&format!("{p}mlp.up_proj.weight"), [f, d])?,
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
        let layers = self
            .blocks
            .iter()
            .map(|b| b.mixer.new_cache(ctx, batch, self.dtype()))
            .collect::<Result<_>>()?;
        Ok(ModelCache {
            layers,
            position: 0,
        })
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
        let width = self.cfg.d_ffn.max(self.cfg.d_model);
        let rows = h.numel() / h.last_dim().max(1);
        let per = rows_per_binding(rec.context(), width, h.dtype());
        if rows <= per {
            return self.ffn_rows(rec, f, h);
        }
        let out = in_row_blocks(rec, h, h.last_dim(), per, |rec, x| self.ffn_rows(rec, f, x))?;
        out.reshape(h.shape())
    }

    fn ffn_rows(&self, rec: &mut Recording, f: &Ffn, h: &Tensor) -> Result<Tensor> {
        let eps = self.cfg.norm_eps;
        let o = match f {
            Ffn::Gelu { ln, fc1, fc2 } => {
                let u = norm::rmsnorm(rec, h, ln, eps)?;
                let a = fc1.forward(rec, &u)?;
                let a = ew::gelu(rec, &a)?;
                fc2.forward(rec, &a)?
            }
            Ffn::SwiGlu {
                norm: n,
                gate,
                up,
                down,
            } => {
                let u = norm::rmsnorm(rec, h, n, eps)?;
                let g = gate.forward(rec, &u)?;
                let g = ew::silu(rec, &g)?;
                let a = up.forward(rec, &u)?;
                let a = ew::mul(rec, &g, &a)?;
                down.forward(rec, &a)?
            }
        };
        ew::add(rec, h, &o)
    }

    /// The mixer's contribution: its output, plus the residual where the block holds the norm.
    fn mix(&self, rec: &mut Recording, b: &Block, h: &Tensor, y: Tensor) -> Result<Tensor> {
        match b.pre_norm {
            Some(_) => ew::add(rec, h, &y),
            None => Ok(y),
        }
    }

    fn mixer_input(&self, rec: &mut Recording, b: &Block, h: &Tensor) -> Result<Tensor> {
        match &b.pre_norm {
            Some(n) => norm::rmsnorm(rec, h, n, self.cfg.norm_eps),
            None => Ok(h.clone()),
        }
    }

    /// Logits `[.., V]` of hidden states `h [.., D]`, in blocks of rows when the whole
    /// `[rows, V]` would pass the binding limit (a 4096-token prompt with a 32,000-entry
    /// vocabulary is 524 MB in f32): the result is then only read back or copied, never bound.
    fn logits(&self, rec: &mut Recording, h: &Tensor) -> Result<Tensor> {
        let v = self.cfg.vocab_size;
        let rows = h.numel() / h.last_dim().max(1);
        let per = rows_per_binding(rec.context(), v, h.dtype());
        let mut shape = h.shape().to_vec();
        *shape.last_mut().unwrap_or(&mut 0) = v;
        let head = |rec: &mut Recording, x: &Tensor| -> Result<Tensor> {
            let u = norm::rmsnorm(rec, x, &self.final_norm, self.cfg.norm_eps)?;
            self.head.forward(rec, &u)
        };
        if rows <= per {
            return head(rec, h);
        }
        in_row_blocks(rec, h, v, per, head)?.reshape(&shape)
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

    /// Logits `[B, T, V]` of the parallel forward. Each block's commands are submitted when the
    /// block is recorded ([`Recording::flush`]), so that memory holds one block's intermediates.
    pub fn forward(&self, rec: &mut Recording, ids: &TokenIds) -> Result<Tensor> {
        self.check_len(ids.shape()[1])?;
        let mut h = embedding_sharded(rec, &self.wte, ids)?;
        for b in &self.blocks {
            let u = self.mixer_input(rec, b, &h)?;
            let y = b.mixer.forward(rec, &u)?;
            h = self.mix(rec, b, &h, y)?;
            h = self.ffn(rec, &b.ffn, &h)?;
            // One block's intermediates at a time (see Recording::flush).
            rec.flush()?;
        }
        self.logits(rec, &h)
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
        self.check_len(ids.shape()[1])?;
        let mut h = embedding_sharded(rec, &self.wte, ids)?;
        let mut layers = Vec::with_capacity(self.blocks.len());
        for b in &self.blocks {
            let u = self.mixer_input(rec, b, &h)?;
            let (y, c) = b.mixer.prefill(rec, &u)?;
            layers.push(c);
            h = self.mix(rec, b, &h, y)?;
            h = self.ffn(rec, &b.ffn, &h)?;
            rec.flush()?;
        }
        let (batch, p) = (ids.shape()[0], ids.shape()[1]);
        if last_only {
            let last: Vec<usize> = (0..batch).map(|b| b * p + p - 1).collect();
            h = gather_rows(rec, &h, &last)?.reshape(&[batch, 1, self.cfg.d_model])?;
        }
        Ok((
            self.logits(rec, &h)?,
            ModelCache {
                layers,
                position: ids.shape()[1],
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
        if ids.shape().len() != 2 || ids.shape()[1] != 1 {
            return Err(Error::shape(
                "model step",
                format!("ids must be [B, 1], got {:?}", ids.shape()),
            ));
        }
        self.check_len(cache.position + 1)?;
        let mut h = embedding_sharded(rec, &self.wte, ids)?;
        for (b, c) in self.blocks.iter().zip(cache.layers.iter_mut()) {
            let u = self.mixer_input(rec, b, &h)?;
            let y = b.mixer.step(rec, c, &u)?;
            h = self.mix(rec, b, &h, y)?;
            h = self.ffn(rec, &b.ffn, &h)?;
        }
        cache.position += 1;
        self.logits(rec, &h)
    }
}

/// Rows of `width` values of `dtype` that one binding holds (at least 1).
fn rows_per_binding(ctx: &Context, width: usize, dtype: DType) -> usize {
    ((ctx.binding_limit() / (width.max(1) * dtype.size()) as u64) as usize).max(1)
}

/// `f` over blocks of at most `per` rows of `x [.., D]`, each block's `[rows, width]` result
/// copied into one `[rows(x), width]` output (which may be larger than a binding: it is only
/// copied into, never bound). Copies move whole 4-byte words: where a row of the output is not
/// (f16 with an odd width), blocks have an even number of rows, so every block starts on a word
/// and only the last may end inside one (copied into the buffers' padding, see
/// `Recording::copy_region`).
fn in_row_blocks(
    rec: &mut Recording,
    x: &Tensor,
    width: usize,
    per: usize,
    mut f: impl FnMut(&mut Recording, &Tensor) -> Result<Tensor>,
) -> Result<Tensor> {
    let d = x.last_dim();
    let rows = x.numel() / d.max(1);
    let odd_rows = !(width * x.dtype().size()).is_multiple_of(4);
    let per = if odd_rows { (per / 2 * 2).max(2) } else { per };
    let out = rec.context().alloc(&[rows, width], x.dtype())?;
    let mut start = 0;
    while start < rows {
        let r = start..(start + per).min(rows);
        let idx: Vec<usize> = r.clone().collect();
        let xb = gather_rows(rec, x, &idx)?;
        let yb = f(rec, &xb)?;
        if yb.numel() != r.len() * width {
            return Err(Error::shape(
                "row blocks",
                format!("a block of {} rows gave {:?}", r.len(), yb.shape()),
            ));
        }
        rec.copy_region(
            &yb,
            0,
            &out,
            (r.start * width) as u64,
            (r.len() * width) as u64,
        )?;
        // A block's intermediates are freed before the next is recorded.
        rec.flush()?;
        start = r.end;
    }
    Ok(out)
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
) -> Result<(RowShards, ShardedLinear)> {
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
