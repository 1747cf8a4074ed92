//! `config.json` of a model folder, in either of two forms:
//! - the keys of the reference configs (see shared/models/rat-tiny-pystdlib/config.json) plus
//!   `model_kind`;
//! - the `config.json` flash-linear-attention saves for MesaNet models (`model_type: "mesa_net"`
//!   and the keys of fla's `MesaNetConfig`), read with fla's defaults where a key is absent
//!   (`head_dim` 128, the MLP width from `hidden_ratio`), since that is the model fla built.
//!
//! fla's names are accepted in either form next to ours; one setting given under both names must
//! agree. Unknown keys are ignored with a warning; a missing required key is an error naming it;
//! an fla setting chunkwise cannot honour (another conv size or lambda bound, hybrid attention
//! layers) is refused by name, never run as a different model than the one trained.

use serde_json::Value;

use crate::error::{Error, Result};
use crate::input::Keys;
use crate::tensor::DType;

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
    /// Storage precision the config asks for (`dtype`, or the `torch_dtype` Hugging Face configs
    /// carry): `float32`/`f32`, `float16`/`f16`/`half`, and `bfloat16`/`bf16`, which is stored as
    /// f16 since no kernel reads bf16. `None` when the config does not say.
    pub dtype: Option<DType>,
    /// Whether the Mesa layers have an output gate, as the config declares it (fla's
    /// `use_output_gate`, or `use_gate` in fla's configs before July 2025); `None` when it does
    /// not say. The checkpoint is what decides (`g_proj.weight`), so a declared value has to agree
    /// with it.
    pub use_output_gate: Option<bool>,
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
    "dtype",
    // flash-linear-attention's `MesaNetConfig` and the Hugging Face config around it: settings
    // chunkwise reads or checks.
    "model_type",
    "hidden_size",
    "num_heads",
    "head_dim",
    "num_hidden_layers",
    "intermediate_size",
    "hidden_ratio",
    "hidden_act",
    "max_position_embeddings",
    "tie_word_embeddings",
    "conv_size",
    "use_output_gate",
    "use_gate",
    "lambda_lower_bound",
    "attn",
    "attnres_block_size",
    "torch_dtype",
    // ... and settings that change nothing chunkwise computes: the kernel flavour of training,
    // fused-kernel switches, losses, initialisation, special-token ids (the tokenizer has them),
    // bookkeeping. fla ignores `use_short_conv` too: its layer always applies both convs.
    "attn_mode",
    "use_short_conv",
    "use_cache",
    "initializer_range",
    "fuse_norm",
    "fuse_swiglu",
    "fuse_cross_entropy",
    "fuse_linear_cross_entropy",
    "use_l2warp",
    "pad_token_id",
    "bos_token_id",
    "eos_token_id",
    "architectures",
    "transformers_version",
    "_name_or_path",
    "auto_map",
];

/// More CG iterations than this is a config mistake, not a request: the reference uses 30, and
/// every iteration is a pass over all states.
pub const MAX_CG_STEPS: usize = crate::ops::mesa::MAX_ITERS;

/// Longest sequence a config may declare; positions beyond it would not fit a RoPE table or cache
/// that a single device can hold anyway.
pub const MAX_SEQ_LEN: usize = 1 << 22;

/// The short-conv kernel length the Mesa layer's kernels and decode cache are built for.
pub const MESA_CONV_SIZE: usize = 4;

/// The bound the Mesa layer adds to `softplus(lambda_params)` (spec/mesa.md §3.2).
pub const MESA_LAMBDA_LOWER_BOUND: f64 = 0.25;

/// fla's `MesaNetConfig` default head dimension: an fla config without `head_dim` means 128 (not
/// hidden / heads).
pub const FLA_HEAD_DIM: usize = 128;

/// The MLP width fla's `GatedMLP` derives when `intermediate_size` is not given: two thirds of
/// `hidden_ratio` × hidden (so the three SwiGLU matrices hold about as many weights as a plain
/// MLP of that ratio), truncated, then rounded up to a multiple of 256. `None` when that is no
/// usable width.
pub fn fla_intermediate_size(hidden: usize, hidden_ratio: f64) -> Option<usize> {
    // The same operations in the same order as fla, so the truncation lands where fla's does.
    let n = (hidden as f64 * hidden_ratio * 2.0 / 3.0).trunc();
    if !(n >= 1.0 && n <= (1u64 << 40) as f64) {
        return None;
    }
    (n as usize).div_ceil(256).checked_mul(256)
}

/// A `dtype` / `torch_dtype` value as storage.
fn parse_dtype(s: &str) -> Option<DType> {
    let s = s.strip_prefix("torch.").unwrap_or(s);
    match s.to_ascii_lowercase().as_str() {
        "bfloat16" | "bf16" => Some(DType::F16),
        other => other.parse().ok(),
    }
}

/// One setting under our key and fla's: either may be given, both only when they agree. Returns
/// the value with the key it came from, for errors about it.
fn one_of<T: PartialEq + std::fmt::Debug>(
    file: &str,
    (ours, a): (&'static str, Option<T>),
    (fla, b): (&'static str, Option<T>),
) -> Result<Option<(T, &'static str)>> {
    match (a, b) {
        (Some(a), Some(b)) if a != b => Err(Error::Case {
            file: file.into(),
            msg: format!(
                "keys '{ours}' = {a:?} and '{fla}' = {b:?} disagree (one setting under two \
                 names): keep one of them"
            ),
        }),
        (Some(a), _) => Ok(Some((a, ours))),
        (None, b) => Ok(b.map(|b| (b, fla))),
    }
}

impl ModelConfig {
    /// A config from the text of a `config.json` (`file` names it in errors).
    pub fn parse(file: &str, text: &str) -> Result<ModelConfig> {
        let json: Value = serde_json::from_str(text).map_err(|e| Error::Case {
            file: file.to_string(),
            msg: format!("not valid JSON: {e}"),
        })?;
        Self::from_json(file, &json, None)
    }

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
        let usize2 = |ours: &'static str, fla: &'static str| {
            one_of(file, (ours, opt(ours)?), (fla, opt(fla)?))
        };
        let req2 = |ours: &'static str, fla: &'static str| -> Result<(usize, &'static str)> {
            usize2(ours, fla)?.ok_or_else(|| {
                err(format!(
                    "required key '{ours}' (or fla's '{fla}') is missing"
                ))
            })
        };
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
        // fla's configs say what they are by `model_type` and are read with fla's defaults.
        let model_type = keys.str("model_type")?;
        if let Some(t) = model_type.filter(|t| *t != "mesa_net") {
            return Err(err(format!(
                "key 'model_type' = \"{t}\": the only model_type chunkwise reads is \
                 flash-linear-attention's \"mesa_net\"; other models say what they are by \
                 'model_kind' (rat, hybrid, attention, mesanet)"
            )));
        }
        let fla = model_type.is_some();
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
            None if fla => ModelKind::MesaNet,
            None => {
                return Err(err(
                    "required key 'model_kind' is missing (or 'model_type': \"mesa_net\" for \
                     a flash-linear-attention MesaNet config)"
                        .into(),
                ))
            }
        };
        if fla && kind != ModelKind::MesaNet {
            return Err(err(format!(
                "key 'model_type' = \"mesa_net\" contradicts model_kind '{}'",
                kind_s.unwrap_or_default()
            )));
        }
        let (d_model, dm_key) = req2("d_model", "hidden_size")?;
        let d_model = positive(dm_key, d_model)?;
        let (num_head, nh_key) = req2("num_head", "num_heads")?;
        let num_head = positive(nh_key, num_head)?;
        let d_head = match usize2("d_head", "head_dim")? {
            Some((dh, k)) => positive(k, dh)?,
            None if fla => FLA_HEAD_DIM,
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
        let (num_layers, nl_key) = req2("num_layers", "num_hidden_layers")?;
        let num_layers = positive(nl_key, num_layers)?;
        let d_ffn = {
            let ratio = keys.positive_f64("hidden_ratio")?;
            // The rule sizes a SwiGLU; the other stacks' MLPs are plain.
            if ratio.is_some() && kind != ModelKind::MesaNet {
                return Err(err(
                    "key 'hidden_ratio' sizes fla's SwiGLU MLP of MesaNet; give 'd_ffn' for \
                     this model_kind"
                        .into(),
                ));
            }
            let from_ratio = |r: f64| {
                fla_intermediate_size(d_model, r).ok_or_else(|| {
                    err(format!(
                        "key 'hidden_ratio' = {r} gives no usable MLP width for hidden size \
                         {d_model}"
                    ))
                })
            };
            match usize2("d_ffn", "intermediate_size")? {
                Some((f, k)) => {
                    // As in fla, a given width wins: fla's saved configs keep `hidden_ratio: 4`
                    // next to any `intermediate_size`, so a mismatch is not a contradiction.
                    if let Some(r) = ratio {
                        if fla_intermediate_size(d_model, r) != Some(f) {
                            log::warn!(
                                "{file}: '{k}' = {f} is used; 'hidden_ratio' = {r} (which would \
                                 give {:?}) is ignored, as fla ignores it",
                                fla_intermediate_size(d_model, r)
                            );
                        }
                    }
                    positive(k, f)?
                }
                None if fla || ratio.is_some() => from_ratio(ratio.unwrap_or(4.0))?,
                None => 4 * d_model,
            }
        };
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
        let (max_seq_len, len_key) = match usize2("max_seq_len", "max_position_embeddings")? {
            Some(n) => Some(n),
            None => opt("seq_len")?.map(|n| (n, "seq_len")),
        }
        .unwrap_or((4096, "max_seq_len"));
        if max_seq_len == 0 || max_seq_len > MAX_SEQ_LEN {
            return Err(err(format!(
                "key '{len_key}' = {max_seq_len} is outside 1..={MAX_SEQ_LEN}"
            )));
        }
        let tie_embedding = one_of(
            file,
            ("tie_embedding", keys.bool("tie_embedding")?),
            ("tie_word_embeddings", keys.bool("tie_word_embeddings")?),
        )?
        .map_or(!fla, |(t, _)| t);
        let use_output_gate = one_of(
            file,
            ("use_output_gate", keys.bool("use_output_gate")?),
            ("use_gate", keys.bool("use_gate")?),
        )?
        .map(|(g, _)| g);
        let dtype_of = |k: &'static str| -> Result<Option<(DType, &str)>> {
            keys.str(k)?
                .map(|s| match parse_dtype(s) {
                    Some(d) => Ok((d, s)),
                    None => Err(err(format!(
                        "key '{k}' = \"{s}\" is not a storage type chunkwise has (float32 / \
                         f32, float16 / f16, bfloat16 / bf16, which is stored as f16)"
                    ))),
                })
                .transpose()
        };
        // Newer transformers write `dtype` where older ones wrote `torch_dtype`; spellings of
        // one storage type agree.
        let dtype = match (dtype_of("dtype")?, dtype_of("torch_dtype")?) {
            (Some((a, sa)), Some((b, sb))) if a != b => {
                return Err(err(format!(
                    "keys 'dtype' = \"{sa}\" and 'torch_dtype' = \"{sb}\" disagree (one \
                     setting under two names): keep one of them"
                )))
            }
            (a, b) => a.or(b).map(|(d, _)| d),
        };
        if kind == ModelKind::MesaNet {
            Self::check_fla_mesa(&keys, &err)?;
        }
        let cfg = ModelConfig {
            kind,
            vocab_size: positive("vocab_size", req("vocab_size")?)?,
            d_model,
            num_layers,
            num_head,
            ngroups: positive("ngroups", opt("ngroups")?.unwrap_or(2))?,
            chunk_size: positive("chunk_size", chunk_size)?,
            window_size: opt("window_size")?
                .map(|w| positive("window_size", w))
                .transpose()?,
            interleave_step: positive("interleave_step", opt("interleave_step")?.unwrap_or(2))?,
            d_ffn,
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
            dtype,
            use_output_gate,
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

    /// fla settings that would make fla compute a model other than the one chunkwise runs: each
    /// refused by name instead of being run differently from what was trained.
    fn check_fla_mesa(keys: &Keys, err: &dyn Fn(String) -> Error) -> Result<()> {
        if let Some(c) = keys.usize("conv_size")? {
            if c != MESA_CONV_SIZE {
                return Err(err(format!(
                    "key 'conv_size' = {c}: chunkwise's Mesa layer implements the short \
                     convolution of kernel {MESA_CONV_SIZE} only"
                )));
            }
        }
        if let Some(b) = keys.f64("lambda_lower_bound")? {
            if b != MESA_LAMBDA_LOWER_BOUND {
                return Err(err(format!(
                    "key 'lambda_lower_bound' = {b}: chunkwise's Mesa layer adds \
                     {MESA_LAMBDA_LOWER_BOUND} to softplus(lambda_params), fla's default; other \
                     bounds are not implemented"
                )));
            }
        }
        if let Some(a) = keys.str("hidden_act")? {
            if !matches!(a, "swish" | "silu") {
                return Err(err(format!(
                    "key 'hidden_act' = \"{a}\": chunkwise's MLPs are SwiGLU (\"swish\") only"
                )));
            }
        }
        let empty = |v: &Value| {
            v.as_array().is_some_and(|a| a.is_empty())
                || v.as_object().is_some_and(|o| o.is_empty())
        };
        if keys.get("attn").is_some_and(|v| !empty(v)) {
            return Err(err(
                "key 'attn': fla's hybrid models (attention layers among the Mesa layers) are \
                 not supported; chunkwise runs MesaNet with Mesa layers only"
                    .into(),
            ));
        }
        if let Some(v) = keys.get("attnres_block_size") {
            return Err(err(format!(
                "key 'attnres_block_size' = {v}: fla's attention residuals (AttnRes) are not \
                 supported"
            )));
        }
        Ok(())
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
