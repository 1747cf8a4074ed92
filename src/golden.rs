//! The case runner behind `chunkwise run CASE.json` (contract: shared/golden/README.md): one code
//! path that reads a case, builds the layer from its weights by their upstream names, runs it on
//! the GPU, and compares each output with the expected tensor of the same name.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::error::{Error, Result};
use crate::layers::{AttentionConfig, AttentionLayer, RatConfig, RatLayer, SequenceLayer};
use crate::model::Checkpoint;
use crate::reference::rel_rms;
use crate::{Context, DType};

/// One compared output.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Check {
    pub name: String,
    pub max_abs: f64,
    pub rel_rms: f64,
    pub tol: f64,
    pub ok: bool,
}

impl std::fmt::Display for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}  max_abs={:.3e}  rel_rms={:.3e}  tol={:.3e}  {}",
            self.name,
            self.max_abs,
            self.rel_rms,
            self.tol,
            if self.ok { "ok" } else { "FAIL" }
        )
    }
}

/// What a case run produced: outputs under the expected tensors' names, and their checks.
/// An output: name, shape, f32 data.
pub type Output = (String, Vec<usize>, Vec<f32>);

pub struct CaseRun {
    pub outputs: Vec<Output>,
    pub checks: Vec<Check>,
}

struct Case {
    json_path: PathBuf,
    json: Value,
    ckpt: Checkpoint,
}

impl Case {
    fn err(&self, msg: impl Into<String>) -> Error {
        Error::Case {
            file: self.json_path.display().to_string(),
            msg: msg.into(),
        }
    }
    fn cfg_usize(&self, key: &str) -> Result<usize> {
        self.json["config"][key]
            .as_u64()
            .map(|v| v as usize)
            .ok_or_else(|| self.err(format!("config.{key} is missing or not an integer")))
    }
    fn cfg_f64(&self, key: &str) -> Option<f64> {
        self.json["config"][key].as_f64()
    }
}

fn load(json_path: &Path) -> Result<Case> {
    let text = std::fs::read_to_string(json_path).map_err(|source| Error::Io {
        path: json_path.display().to_string(),
        source,
    })?;
    let json: Value = serde_json::from_str(&text).map_err(|e| Error::Case {
        file: json_path.display().to_string(),
        msg: format!("not valid JSON: {e}"),
    })?;
    let st = match json["file"].as_str() {
        Some(f) => json_path.with_file_name(f),
        None => json_path.with_extension("safetensors"),
    };
    let ckpt = Checkpoint::open(&st)?;
    Ok(Case {
        json_path: json_path.to_path_buf(),
        json,
        ckpt,
    })
}

/// Runs the case at `json_path` and checks every output that has an expected tensor.
pub fn run_case(ctx: &Context, json_path: &Path) -> Result<CaseRun> {
    let case = load(json_path)?;
    let kind = case.json["layer"]
        .as_str()
        .or_else(|| case.json["kind"].as_str())
        .map(str::to_string);
    let outputs = match kind.as_deref() {
        Some("local_attention") => run_attention_layer(ctx, &case)?,
        Some("rat") => run_rat_layer(ctx, &case)?,
        Some("model") => run_model(ctx, &case)?,
        Some(k @ ("core_op" | "core_decode" | "layer" | "layer_decode")) => {
            return Err(case.err(format!(
                "case kind '{k}' is not implemented yet in this version of chunkwise"
            )))
        }
        Some(other) => return Err(case.err(format!("unknown case kind '{other}'"))),
        None => {
            return Err(case.err("the JSON names no case kind (expected a `layer` or `kind` field)"))
        }
    };
    let checks = outputs
        .iter()
        .filter_map(|(name, shape, got)| check(&case, name, shape, got).transpose())
        .collect::<Result<_>>()?;
    Ok(CaseRun { outputs, checks })
}

/// max|ours − expected| ≤ 1e-4 · max(1, scale): the golden README's bound for an f32
/// implementation, relative to the output scale (a layer's residual branch max|y − x|, a model's max|logit|). Compared with the f64
/// tensor when the case has one.
fn check(case: &Case, name: &str, shape: &[usize], got: &[f32]) -> Result<Option<Check>> {
    let want_name = if case.ckpt.contains(&format!("{name}_f64")) {
        format!("{name}_f64")
    } else {
        name.to_string()
    };
    if !case.ckpt.contains(&want_name) {
        return Ok(None);
    }
    let (want, want_shape) = case.ckpt.f64(&want_name)?;
    if want_shape != shape {
        return Err(case.err(format!(
            "output '{name}' has shape {shape:?} but the expected tensor is {want_shape:?}"
        )));
    }
    // Layer cases: the residual branch y − x, aligned by token when the output covers only the
    // decoded tokens. Model cases (no `x`): the output itself.
    let mut scale = 0.0f64;
    if case.ckpt.contains("x") {
        let (x, _) = case.ckpt.f64("x")?;
        let d = *shape.last().unwrap_or(&1);
        let t_in = x.len() / d / shape[0].max(1);
        let t_o = want.len() / d / shape[0].max(1);
        for (i, w) in want.iter().enumerate() {
            let (b, rest) = (i / (t_o * d), i % (t_o * d));
            scale = scale.max((w - x[b * t_in * d + (t_in - t_o) * d + rest]).abs());
        }
    } else {
        scale = want.iter().fold(0.0, |m, w| m.max(w.abs()));
    }
    let tol = 1e-4 * scale.max(1.0);
    let max_abs = got
        .iter()
        .zip(&want)
        .map(|(&g, &w)| (g as f64 - w).abs())
        .fold(0.0, f64::max);
    let finite = got.iter().all(|v| v.is_finite());
    Ok(Some(Check {
        name: name.into(),
        max_abs,
        rel_rms: rel_rms(got, &want),
        tol,
        ok: finite && max_abs <= tol,
    }))
}

/// `x` of a layer case, checked against `d_model`: (data, [B, T, D]).
fn layer_input(case: &Case, d: usize) -> Result<(Vec<f32>, Vec<usize>)> {
    let (x, xs) = case.ckpt.f32("x", None)?;
    if xs.len() != 3 || xs[2] != d {
        return Err(case.err(format!("tensor 'x' has shape {xs:?}, expected [B, T, {d}]")));
    }
    Ok((x, xs))
}

/// The layer protocol of the golden README: forward over `x` → `y`; with `config.prefill_len` P,
/// prefill `x[:, :P]` then one step per remaining token → `y_decode`.
fn run_layer<L: SequenceLayer>(
    ctx: &Context,
    case: &Case,
    layer: &L,
    x: &[f32],
    xs: &[usize],
) -> Result<Vec<Output>> {
    let (b, t, d) = (xs[0], xs[1], xs[2]);
    let xt = ctx.upload(x, xs, DType::F32)?;
    let y = ctx.run(|rec| layer.forward(rec, &xt))?;
    let mut out = vec![("y".to_string(), xs.to_vec(), ctx.download(&y)?)];
    if let Ok(p) = case.cfg_usize("prefill_len") {
        if p == 0 || p > t {
            return Err(case.err(format!("config.prefill_len {p} must be in 1..={t}")));
        }
        let tokens = |lo: usize, hi: usize| -> Vec<f32> {
            (0..b)
                .flat_map(|bi| x[(bi * t + lo) * d..(bi * t + hi) * d].to_vec())
                .collect()
        };
        let pt = ctx.upload(&tokens(0, p), &[b, p, d], DType::F32)?;
        let (_, mut cache) = ctx.run(|rec| layer.prefill(rec, &pt))?;
        let mut steps = vec![Vec::new(); b];
        for i in p..t {
            let xi = ctx.upload(&tokens(i, i + 1), &[b, 1, d], DType::F32)?;
            let y = ctx.run(|rec| layer.step(rec, &mut cache, &xi))?;
            for (bi, row) in ctx.download(&y)?.chunks(d).enumerate() {
                steps[bi].extend_from_slice(row);
            }
        }
        out.push(("y_decode".to_string(), vec![b, t - p, d], steps.concat()));
    }
    Ok(out)
}

fn run_attention_layer(ctx: &Context, case: &Case) -> Result<Vec<Output>> {
    let d = case.cfg_usize("d_model")?;
    let (x, xs) = layer_input(case, d)?;
    let cfg = AttentionConfig {
        d_model: d,
        heads: case.cfg_usize("num_head")?,
        window: case.cfg_usize("window_size").ok(),
        rope_base: case.cfg_f64("rope_base").unwrap_or(10000.0),
        eps: case.cfg_f64("rms_eps").unwrap_or(1e-6) as f32,
        max_positions: xs[1].max(1),
        scale: case.cfg_f64("softmax_scale").map(|s| s as f32),
    };
    let layer = AttentionLayer::load(ctx, cfg, &case.ckpt, "", DType::F32)?;
    run_layer(ctx, case, &layer, &x, &xs)
}

fn run_rat_layer(ctx: &Context, case: &Case) -> Result<Vec<Output>> {
    let d = case.cfg_usize("d_model")?;
    let (x, xs) = layer_input(case, d)?;
    let cfg = RatConfig {
        d_model: d,
        heads: case.cfg_usize("num_head")?,
        groups: case.cfg_usize("ngroups").unwrap_or(2),
        chunk: case.cfg_usize("chunk_size")?,
        rope_base: case.cfg_f64("rope_base").unwrap_or(10000.0),
        eps: case.cfg_f64("rms_eps").unwrap_or(1e-6) as f32,
        max_positions: xs[1].max(1),
        scale: case.cfg_f64("softmax_scale").map(|s| s as f32),
    };
    let layer = RatLayer::load(ctx, cfg, &case.ckpt, "", DType::F32)?;
    run_layer(ctx, case, &layer, &x, &xs)
}

fn run_model(ctx: &Context, case: &Case) -> Result<Vec<Output>> {
    let kind = case.json["model_kind"]
        .as_str()
        .or_else(|| case.json["config"]["model_kind"].as_str());
    let cfg = crate::model::ModelConfig::from_json(
        &case.json_path.display().to_string(),
        &case.json["config"],
        kind,
    )?;
    let (ids, shape) = case.ckpt.f32("input_ids", None)?;
    if shape.len() != 2 {
        return Err(case.err(format!(
            "tensor 'input_ids' has shape {shape:?}, expected [B, T]"
        )));
    }
    let (b, t) = (shape[0], shape[1]);
    let ids: Vec<u32> = ids.iter().map(|&v| v as u32).collect();
    let cfg = crate::model::ModelConfig {
        max_seq_len: cfg.max_seq_len.max(t),
        ..cfg
    };
    let v = cfg.vocab_size;
    let model = crate::model::Model::load(ctx, cfg, &case.ckpt, DType::F32)?;
    let all = model.tokens(ctx, &ids, b)?;
    let logits = ctx.run(|rec| model.forward(rec, &all))?;
    let mut out = vec![("logits".to_string(), vec![b, t, v], ctx.download(&logits)?)];
    if let Ok(p) = case.cfg_usize("prefill_len") {
        if p == 0 || p > t {
            return Err(case.err(format!("config.prefill_len {p} must be in 1..={t}")));
        }
        let cols = |lo: usize, hi: usize| -> Vec<u32> {
            (0..b)
                .flat_map(|bi| ids[bi * t + lo..bi * t + hi].to_vec())
                .collect()
        };
        let prompt = model.tokens(ctx, &cols(0, p), b)?;
        let (_, mut cache) = ctx.run(|rec| model.prefill(rec, &prompt))?;
        let mut steps = vec![Vec::new(); b];
        for i in p..t {
            let tok = model.tokens(ctx, &cols(i, i + 1), b)?;
            let l = ctx.run(|rec| model.step(rec, &mut cache, &tok))?;
            for (bi, row) in ctx.download(&l)?.chunks(v).enumerate() {
                steps[bi].extend_from_slice(row);
            }
        }
        out.push((
            "logits_decode".to_string(),
            vec![b, t - p, v],
            steps.concat(),
        ));
    }
    Ok(out)
}
