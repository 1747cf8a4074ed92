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
use crate::ops::embedding::{embedding, TokenIds};
use crate::ops::gemm::Linear;
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
    wte: Tensor,
    head: Linear,
    final_norm: Tensor,
    blocks: Vec<Block>,
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
        let ckpt = Checkpoint::open(&dir.join("model.safetensors"))?;
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
        let (wte, _) = ckpt.f32("embedding.wte.weight", Some(&[v, d]))?;
        let head_w = if ckpt.contains("head.lm_head.weight") {
            ckpt.f32("head.lm_head.weight", Some(&[v, d]))?.0
        } else {
            wte.clone()
        };
        let (final_norm, _) = ckpt.f32("backbone.ln.weight", Some(&[d]))?;
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
            let (ln, _) = ckpt.f32(&format!("{f}ln.weight"), Some(&[d]))?;
            let (fc1, _) = ckpt.f32(&format!("{f}fc1.weight"), Some(&[cfg.d_ffn, d]))?;
            let (fc2, _) = ckpt.f32(&format!("{f}fc2.weight"), Some(&[d, cfg.d_ffn]))?;
            let ffn = Ffn::Gelu {
                ln: ctx.upload(&ln, &[d], dtype)?,
                fc1: Linear::new(ctx, ctx.upload(&fc1, &[cfg.d_ffn, d], dtype)?)?,
                fc2: Linear::new(ctx, ctx.upload(&fc2, &[d, cfg.d_ffn], dtype)?)?,
            };
            blocks.push(Block {
                pre_norm: None,
                mixer,
                ffn,
            });
        }
        Ok(Model {
            wte: ctx.upload(&wte, &[v, d], dtype)?,
            head: Linear::new(ctx, ctx.upload(&head_w, &[v, d], dtype)?)?,
            final_norm: ctx.upload(&final_norm, &[d], dtype)?,
            blocks,
            cfg,
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
        let (wte, _) = ckpt.f32("model.embeddings.weight", Some(&[v, d]))?;
        let head_w = if ckpt.contains("lm_head.weight") {
            ckpt.f32("lm_head.weight", Some(&[v, d]))?.0
        } else {
            wte.clone()
        };
        let vec =
            |n: &str| -> Result<Tensor> { ctx.upload(&ckpt.f32(n, Some(&[d]))?.0, &[d], dtype) };
        let lin = |n: &str, shape: [usize; 2]| -> Result<Linear> {
            Linear::new(
                ctx,
                ctx.upload(&ckpt.f32(n, Some(&shape))?.0, &shape, dtype)?,
            )
        };
        let mut blocks = Vec::with_capacity(cfg.num_layers);
        for i in 0..cfg.num_layers {
            let p = format!("model.layers.{i}.");
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
            wte: ctx.upload(&wte, &[v, d], dtype)?,
            head: Linear::new(ctx, ctx.upload(&head_w, &[v, d], dtype)?)?,
            final_norm: vec("model.norm.weight")?,
            blocks,
            cfg,
        })
    }

    pub fn config(&self) -> &ModelConfig {
        &self.cfg
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

    fn ffn(&self, rec: &mut Recording, f: &Ffn, h: &Tensor) -> Result<Tensor> {
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

    fn logits(&self, rec: &mut Recording, h: &Tensor) -> Result<Tensor> {
        let u = norm::rmsnorm(rec, h, &self.final_norm, self.cfg.norm_eps)?;
        self.head.forward(rec, &u)
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
        let mut h = embedding(rec, &self.wte, ids)?;
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
        self.check_len(ids.shape()[1])?;
        let mut h = embedding(rec, &self.wte, ids)?;
        let mut layers = Vec::with_capacity(self.blocks.len());
        for b in &self.blocks {
            let u = self.mixer_input(rec, b, &h)?;
            let (y, c) = b.mixer.prefill(rec, &u)?;
            layers.push(c);
            h = self.mix(rec, b, &h, y)?;
            h = self.ffn(rec, &b.ffn, &h)?;
            rec.flush()?;
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
        let mut h = embedding(rec, &self.wte, ids)?;
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
