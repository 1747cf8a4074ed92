//! `config.json` of a model folder: the keys of the reference configs (see
//! shared/models/rat-tiny-pystdlib/config.json) plus `model_kind`. Unknown keys are ignored with a
//! warning; a missing required key is an error naming it.

use serde_json::Value;

use crate::error::{Error, Result};
use crate::input::Keys;

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
    /// Mesa CG iterations on the parallel and decode paths (`max_cg_step_training`,
    /// `max_cg_step_decoding`; `cg_iterations` sets both): the count, or the paper rule's cap.
    pub cg_steps_prefill: usize,
    pub cg_steps_decode: usize,
    /// Mesa's CG rule (`solver`: `reference` or `paper`, with `cg_tolerance`).
    pub solver: crate::ops::mesa::Solver,
    /// `"bytes"` for byte-level models; otherwise the folder's `tokenizer.json` is used.
    pub tokenizer: Option<String>,
}

/// Every key a config may hold (others are warned about and ignored).
pub const KNOWN: &[&str] = &[
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
    "max_cg_step_training",
    "max_cg_step_decoding",
    "cg_iterations",
    "solver",
    "cg_tolerance",
];

/// More CG iterations than this is a config mistake, not a request: the reference uses 30, and
/// every iteration is a pass over all states.
pub const MAX_CG_STEPS: usize = crate::ops::mesa::MAX_ITERS;

/// Longest sequence a config may declare; positions beyond it would not fit a RoPE table or cache
/// that a single device can hold anyway.
pub const MAX_SEQ_LEN: usize = 1 << 22;

impl ModelConfig {
    /// Parses a config object; `file` names it in errors. `kind` overrides `model_kind` (the golden
    /// cases keep it outside their `config`).
    pub fn from_json(file: &str, v: &Value, kind: Option<&str>) -> Result<ModelConfig> {
        let err = |msg: String| Error::Case {
            file: file.into(),
            msg,
        };
        if !v.is_object() {
            return Err(err("the config is not a JSON object".into()));
        }
        // A key that is present must be well-formed: a negative or fractional value is an error
        // naming the key, never silently replaced by a default (crate::input).
        let keys = Keys::new(file, "", v)?;
        for k in keys.names().filter(|k| !KNOWN.contains(&k.as_str())) {
            log::warn!("{file}: ignoring unknown config key '{k}'");
        }
        let opt = |k: &str| keys.usize(k);
        let req = |k: &str| -> Result<usize> {
            opt(k)?.ok_or_else(|| err(format!("required key '{k}' is missing")))
        };
        let positive = |k: &str, v: usize| -> Result<usize> {
            if v == 0 {
                Err(err(format!("key '{k}' must be at least 1")))
            } else {
                Ok(v)
            }
        };
        let float =
            |k: &str, default: f64| -> Result<f64> { Ok(keys.positive_f64(k)?.unwrap_or(default)) };
        let kind_s = match kind {
            Some(k) => Some(k.to_string()),
            None => keys.str("model_kind")?.map(str::to_string),
        };
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
        let d_model = positive("d_model", req("d_model")?)?;
        let num_head = positive("num_head", req("num_head")?)?;
        let d_head = match opt("d_head")? {
            Some(dh) => positive("d_head", dh)?,
            None if d_model % num_head != 0 => {
                return Err(err(format!(
                    "num_head {num_head} does not divide d_model {d_model}: change num_head or give 'd_head'"
                )))
            }
            None => d_model / num_head,
        };
        // MesaNet's key width H·D is free; the other stacks split d_model into heads.
        if kind != ModelKind::MesaNet && d_head * num_head != d_model {
            return Err(err(format!(
                "d_head {d_head} × num_head {num_head} ≠ d_model {d_model}"
            )));
        }
        let chunk_size = match (kind, opt("chunk_size")?) {
            (ModelKind::Attention | ModelKind::MesaNet, c) => c.unwrap_or(1),
            (_, c) => c.ok_or_else(|| err("required key 'chunk_size' is missing".into()))?,
        };
        let cg_default = keys
            .usize_in("cg_iterations", 1..=MAX_CG_STEPS)?
            .unwrap_or(30);
        let cg = |k: &str| -> Result<usize> {
            Ok(keys.usize_in(k, 1..=MAX_CG_STEPS)?.unwrap_or(cg_default))
        };
        let tol = keys.f64("cg_tolerance")?;
        let solver =
            crate::ops::mesa::Solver::parse(keys.str("solver")?.unwrap_or("reference"), tol)
                .map_err(|e| err(format!("keys 'solver' / 'cg_tolerance': {e}")))?;
        if tol.is_some() && solver == crate::ops::mesa::Solver::Reference {
            return Err(err(
                "key 'cg_tolerance' applies to \"solver\": \"paper\" only (the reference CG \
                 runs a fixed count)"
                    .into(),
            ));
        }
        let max_seq_len = match opt("max_seq_len")? {
            Some(n) => Some(n),
            None => opt("seq_len")?,
        }
        .unwrap_or(4096);
        if max_seq_len == 0 || max_seq_len > MAX_SEQ_LEN {
            return Err(err(format!(
                "key 'max_seq_len' = {max_seq_len} is outside 1..={MAX_SEQ_LEN}"
            )));
        }
        let tie_embedding = keys.bool("tie_embedding")?.unwrap_or(true);
        let cfg = ModelConfig {
            kind,
            vocab_size: positive("vocab_size", req("vocab_size")?)?,
            d_model,
            num_layers: positive("num_layers", req("num_layers")?)?,
            num_head,
            ngroups: positive("ngroups", opt("ngroups")?.unwrap_or(2))?,
            chunk_size: positive("chunk_size", chunk_size)?,
            window_size: opt("window_size")?
                .map(|w| positive("window_size", w))
                .transpose()?,
            interleave_step: positive("interleave_step", opt("interleave_step")?.unwrap_or(2))?,
            d_ffn: positive("d_ffn", opt("d_ffn")?.unwrap_or(4 * d_model))?,
            norm_eps: {
                // Stored as f32: a positive f64 below f32's range would become 0 (found by
                // tests/fuzz.rs).
                let eps = float("norm_eps", 1e-6)? as f32;
                if !(eps > 0.0 && eps.is_finite()) {
                    return Err(err(format!(
                        "key 'norm_eps' = {eps} must be a positive f32 (at least about 1e-38)"
                    )));
                }
                eps
            },
            rope_base: float("rope_base", 10000.0)?,
            max_seq_len,
            tie_embedding,
            d_head,
            cg_steps_prefill: cg("max_cg_step_training")?,
            cg_steps_decode: cg("max_cg_step_decoding")?,
            solver,
            tokenizer: keys.str("tokenizer")?.map(str::to_string),
        };
        if kind == ModelKind::Hybrid && cfg.window_size.is_none() {
            return Err(err("a hybrid model needs 'window_size'".into()));
        }
        if matches!(kind, ModelKind::Rat | ModelKind::Hybrid) && num_head % cfg.ngroups != 0 {
            return Err(err(format!(
                "ngroups {} does not divide num_head {num_head}",
                cfg.ngroups
            )));
        }
        Ok(cfg)
    }

    /// Whether layer `i` is a RAT layer.
    pub fn is_rat(&self, i: usize) -> bool {
        match self.kind {
            ModelKind::Rat => true,
            ModelKind::Hybrid => i.is_multiple_of(self.interleave_step),
            ModelKind::Attention | ModelKind::MesaNet => false,
        }
    }
}
