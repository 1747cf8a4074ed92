//! `config.json` of a model folder: the keys of the reference configs (see
//! shared/models/rat-tiny-pystdlib/config.json) plus `model_kind`. Unknown keys are ignored with a
//! warning; a missing required key is an error naming it.

use serde_json::Value;

use crate::error::{Error, Result};

/// Which stack of sequence layers the model has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelKind {
    /// Every layer RAT.
    Rat,
    /// Layer i is RAT when i % interleave_step == 0, else sliding-window attention.
    Hybrid,
    /// Every layer full causal attention.
    Attention,
    /// MesaNet in the flash-linear-attention layout (spec/mesa.md §3.1): pre-norm Mesa layers and
    /// SwiGLU MLPs.
    MesaNet,
}

#[derive(Clone, Debug)]
pub struct ModelConfig {
    pub kind: ModelKind,
    pub vocab_size: usize,
    pub d_model: usize,
    pub num_layers: usize,
    pub num_head: usize,
    pub ngroups: usize,
    pub chunk_size: usize,
    pub window_size: Option<usize>,
    pub interleave_step: usize,
    pub d_ffn: usize,
    pub norm_eps: f32,
    pub rope_base: f64,
    pub max_seq_len: usize,
    pub tie_embedding: bool,
    /// Head dimension (`d_head`, else d_model / num_head).
    pub d_head: usize,
    /// Mesa CG iterations on the parallel and decode paths (`max_cg_step_training`, `max_cg_step_decoding`).
    pub cg_steps_prefill: usize,
    pub cg_steps_decode: usize,
}

const KNOWN: &[&str] = &[
    "model_kind",
    "vocab_size",
    "d_model",
    "num_layers",
    "num_head",
    "d_head",
    "ngroups",
    "chunk_size",
    "window_size",
    "interleave_step",
    "d_ffn",
    "act_fn",
    "ffn_bias",
    "norm_eps",
    "norm",
    "tie_embedding",
    "rope_base",
    "max_seq_len",
    "tokenizer",
    "seq_len",
    "prefill_len",
    "batch",
    "bias",
    "rope_dim",
];

impl ModelConfig {
    /// Parses a config object; `file` names it in errors. `kind` overrides `model_kind` (the golden
    /// cases keep it outside their `config`).
    pub fn from_json(file: &str, v: &Value, kind: Option<&str>) -> Result<ModelConfig> {
        let err = |msg: String| Error::Case {
            file: file.into(),
            msg,
        };
        let obj = v
            .as_object()
            .ok_or_else(|| err("the config is not a JSON object".into()))?;
        for k in obj.keys().filter(|k| !KNOWN.contains(&k.as_str())) {
            log::warn!("{file}: ignoring unknown config key '{k}'");
        }
        let req = |k: &str| -> Result<usize> {
            obj.get(k)
                .and_then(Value::as_u64)
                .map(|x| x as usize)
                .ok_or_else(|| {
                    err(format!(
                        "required key '{k}' is missing or not a positive integer"
                    ))
                })
        };
        let opt = |k: &str| obj.get(k).and_then(Value::as_u64).map(|x| x as usize);
        let kind_s = kind.map(str::to_string).or_else(|| {
            obj.get("model_kind")
                .and_then(Value::as_str)
                .map(str::to_string)
        });
        let kind = match kind_s.as_deref() {
            Some("rat") => ModelKind::Rat,
            Some("hybrid") => ModelKind::Hybrid,
            Some("attention") => ModelKind::Attention,
            Some("mesanet") => ModelKind::MesaNet,
            Some(other) => {
                return Err(err(format!(
                    "unknown model_kind '{other}' (rat, hybrid, attention, mesanet)"
                )))
            }
            None => return Err(err("required key 'model_kind' is missing".into())),
        };
        let d_model = req("d_model")?;
        let num_head = req("num_head")?;
        // MesaNet's key width H·D is free; the other stacks split d_model into heads.
        if let (Some(dh), false) = (opt("d_head"), kind == ModelKind::MesaNet) {
            if dh * num_head != d_model {
                return Err(err(format!(
                    "d_head {dh} × num_head {num_head} ≠ d_model {d_model}"
                )));
            }
        }
        let cfg = ModelConfig {
            kind,
            vocab_size: req("vocab_size")?,
            d_model,
            num_layers: req("num_layers")?,
            num_head,
            ngroups: opt("ngroups").unwrap_or(2),
            chunk_size: if matches!(kind, ModelKind::Attention | ModelKind::MesaNet) {
                opt("chunk_size").unwrap_or(1)
            } else {
                req("chunk_size")?
            },
            window_size: opt("window_size"),
            interleave_step: opt("interleave_step").unwrap_or(2),
            d_ffn: opt("d_ffn").unwrap_or(4 * d_model),
            norm_eps: obj.get("norm_eps").and_then(Value::as_f64).unwrap_or(1e-6) as f32,
            rope_base: obj
                .get("rope_base")
                .and_then(Value::as_f64)
                .unwrap_or(10000.0),
            max_seq_len: opt("max_seq_len")
                .or_else(|| opt("seq_len"))
                .unwrap_or(4096),
            tie_embedding: obj
                .get("tie_embedding")
                .and_then(Value::as_bool)
                .unwrap_or(true),
            d_head: opt("d_head").unwrap_or(d_model / num_head.max(1)),
            cg_steps_prefill: opt("max_cg_step_training").unwrap_or(30),
            cg_steps_decode: opt("max_cg_step_decoding").unwrap_or(30),
        };
        if kind == ModelKind::Hybrid && cfg.window_size.is_none() {
            return Err(err("a hybrid model needs 'window_size'".into()));
        }
        if cfg.interleave_step == 0 {
            return Err(err("'interleave_step' must be at least 1".into()));
        }
        Ok(cfg)
    }

    /// Whether layer `i` is a RAT layer.
    pub fn is_rat(&self, i: usize) -> bool {
        match self.kind {
            ModelKind::Rat => true,
            ModelKind::Hybrid => i % self.interleave_step == 0,
            ModelKind::Attention | ModelKind::MesaNet => false,
        }
    }
}
