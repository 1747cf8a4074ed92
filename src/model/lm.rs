//! The language models of the RAT reference code (spec/rat.md §6): embedding → per block a
//! sequence layer then a GELU FFN (`h + fc2(GELU(fc1(RMSNorm(h))))`) → final RMSNorm → tied head.

use std::path::Path;

use crate::context::Context;
use crate::error::{Error, Result};
use crate::layers::{
    AnyCache, AnyLayer, AttentionConfig, AttentionLayer, RatConfig, RatLayer, SequenceLayer,
};
use crate::model::{Checkpoint, ModelConfig};
use crate::ops::embedding::{embedding, TokenIds};
use crate::ops::gemm::Linear;
use crate::ops::{elementwise as ew, norm};
use crate::record::Recording;
use crate::tensor::{DType, Tensor};

struct Ffn {
    ln: Tensor,
    fc1: Linear,
    fc2: Linear,
}

/// A loaded model.
pub struct Model {
    cfg: ModelConfig,
    wte: Tensor,
    head: Linear,
    final_norm: Tensor,
    blocks: Vec<(AnyLayer, Ffn)>,
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
        let cfg_path = dir.join("config.json");
        let text = std::fs::read_to_string(&cfg_path).map_err(|source| Error::Io {
            path: cfg_path.display().to_string(),
            source,
        })?;
        let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| Error::Case {
            file: cfg_path.display().to_string(),
            msg: format!("not valid JSON: {e}"),
        })?;
        let cfg = ModelConfig::from_json(&cfg_path.display().to_string(), &json, None)?;
        let ckpt = Checkpoint::open(&dir.join("model.safetensors"))?;
        Self::load(ctx, cfg, &ckpt, dtype)
    }

    /// Builds the model from a checkpoint under the upstream names (a `_orig_mod.` prefix is not
    /// expected here: `scripts/convert_checkpoint.py` strips it). A missing `head.lm_head.weight`
    /// is tied to the embedding.
    pub fn load(ctx: &Context, cfg: ModelConfig, ckpt: &Checkpoint, dtype: DType) -> Result<Model> {
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
            let ffn = Ffn {
                ln: ctx.upload(&ln, &[d], dtype)?,
                fc1: Linear::new(ctx, ctx.upload(&fc1, &[cfg.d_ffn, d], dtype)?)?,
                fc2: Linear::new(ctx, ctx.upload(&fc2, &[d, cfg.d_ffn], dtype)?)?,
            };
            blocks.push((mixer, ffn));
        }
        Ok(Model {
            wte: ctx.upload(&wte, &[v, d], dtype)?,
            head: Linear::new(ctx, ctx.upload(&head_w, &[v, d], dtype)?)?,
            final_norm: ctx.upload(&final_norm, &[d], dtype)?,
            blocks,
            cfg,
        })
    }

    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    /// Token ids `[B, T]` checked against the vocabulary.
    pub fn tokens(&self, ctx: &Context, ids: &[u32], batch: usize) -> Result<TokenIds> {
        if batch == 0 || ids.len() % batch != 0 || ids.is_empty() {
            return Err(Error::shape(
                "model",
                format!("{} ids do not form {batch} non-empty sequences", ids.len()),
            ));
        }
        TokenIds::new(ctx, ids, &[batch, ids.len() / batch], self.cfg.vocab_size)
    }

    fn ffn(&self, rec: &mut Recording, f: &Ffn, h: &Tensor) -> Result<Tensor> {
        let u = norm::rmsnorm(rec, h, &f.ln, self.cfg.norm_eps)?;
        let a = f.fc1.forward(rec, &u)?;
        let a = ew::gelu(rec, &a)?;
        let o = f.fc2.forward(rec, &a)?;
        ew::add(rec, h, &o)
    }

    fn logits(&self, rec: &mut Recording, h: &Tensor) -> Result<Tensor> {
        let u = norm::rmsnorm(rec, h, &self.final_norm, self.cfg.norm_eps)?;
        self.head.forward(rec, &u)
    }

    /// Logits `[B, T, V]` of the parallel forward.
    pub fn forward(&self, rec: &mut Recording, ids: &TokenIds) -> Result<Tensor> {
        let mut h = embedding(rec, &self.wte, ids)?;
        for (m, f) in &self.blocks {
            h = m.forward(rec, &h)?;
            h = self.ffn(rec, f, &h)?;
        }
        self.logits(rec, &h)
    }

    /// Logits of the prompt `[B, P, V]` and the cache to decode from position P.
    pub fn prefill(&self, rec: &mut Recording, ids: &TokenIds) -> Result<(Tensor, ModelCache)> {
        let mut h = embedding(rec, &self.wte, ids)?;
        let mut layers = Vec::with_capacity(self.blocks.len());
        for (m, f) in &self.blocks {
            let (y, c) = m.prefill(rec, &h)?;
            layers.push(c);
            h = self.ffn(rec, f, &y)?;
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
        let mut h = embedding(rec, &self.wte, ids)?;
        for ((m, f), c) in self.blocks.iter().zip(cache.layers.iter_mut()) {
            let y = m.step(rec, c, &h)?;
            h = self.ffn(rec, f, &y)?;
        }
        cache.position += 1;
        self.logits(rec, &h)
    }
}
