//! The case runner behind `chunkwise run CASE.json` (contract: shared/golden/README.md): one code
//! path that reads a case, builds the layer from its weights by their upstream names, runs it on
//! the GPU, and compares each output with the expected tensor of the same name.

#[cfg(not(target_arch = "wasm32"))]
use std::path::Path;

use serde_json::Value;

use crate::context::read_back;
use crate::error::{Error, Result};
use crate::input::Keys;
use crate::layers::{AttentionConfig, AttentionLayer, RatConfig, RatLayer, SequenceLayer};
use crate::model::Checkpoint;
use crate::ops::mesa::{IterationStats, Solver};
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
    /// Mesa cases: the CG rule and the steps it took over every solve of the case.
    pub cg: Option<(Solver, IterationStats)>,
}

/// What a caller may override in a case.
#[derive(Clone, Copy, Debug, Default)]
pub struct RunOptions {
    /// Mesa's CG rule instead of the case's `solver` / `cg_tolerance` keys.
    pub solver: Option<Solver>,
}

/// CG step counts summed over several solves.
#[derive(Default)]
struct StepTally {
    max: u32,
    sum: f64,
    rows: usize,
}

impl StepTally {
    async fn add(&mut self, ctx: &Context, iterations: &crate::Tensor) -> Result<()> {
        let v = read_back(ctx, iterations).await?;
        self.max = self.max.max(v.iter().fold(0.0f32, |m, &x| m.max(x)) as u32);
        self.sum += v.iter().map(|&x| x as f64).sum::<f64>();
        self.rows += v.len();
        Ok(())
    }
    fn stats(&self) -> IterationStats {
        IterationStats {
            max: self.max,
            mean: self.sum / self.rows.max(1) as f64,
        }
    }
}

struct Case {
    /// The JSON file's path as errors name it.
    file: String,
    json: Value,
    ckpt: Checkpoint,
    /// Mesa's CG rule: the caller's, else the case's `solver` / `cg_tolerance`.
    solver: Solver,
}

impl Case {
    fn err(&self, msg: impl Into<String>) -> Error {
        Error::Case {
            file: self.file.clone(),
            msg: msg.into(),
        }
    }
    /// The keys of one object of the case (`""` for the top level), read strictly: a present key
    /// must be valid (crate::input).
    fn keys(&self, object: &str) -> Result<Keys<'_>> {
        match object {
            "" => Keys::new(&self.file, "", &self.json),
            "config" => Keys::new(&self.file, "config.", &self.json["config"]),
            "shapes" => Keys::new(&self.file, "shapes.", &self.json["shapes"]),
            "layer_config" => Keys::new(&self.file, "layer_config.", &self.json["layer_config"]),
            other => Err(self.err(format!("no object '{other}' is read from cases"))),
        }
    }
    fn cfg_usize(&self, key: &str) -> Result<usize> {
        self.keys("config")?.require_usize_in(key, 0..=usize::MAX)
    }
    /// `cg_iterations` (1 ..= ops::mesa::MAX_ITERS, 30 when absent).
    fn cg_iterations(&self) -> Result<usize> {
        Ok(self
            .keys("")?
            .usize_in("cg_iterations", 1..=crate::ops::mesa::MAX_ITERS)?
            .unwrap_or(30))
    }
    /// The number of prompt tokens before decoding, within 0..=t (0: decode from an empty
    /// cache), when the case decodes.
    fn prefill(&self, object: &str, key: &str, t: usize) -> Result<Option<usize>> {
        self.keys(object)?.usize_in(key, 0..=t)
    }
}

/// A case from its JSON file and the safetensors file beside it (the `file` key, else the
/// JSON's stem).
#[cfg(not(target_arch = "wasm32"))]
fn load(json_path: &Path) -> Result<Case> {
    let text = std::fs::read_to_string(json_path).map_err(|source| Error::Io {
        path: json_path.display().to_string(),
        source,
    })?;
    parse(
        json_path.display().to_string(),
        &text,
        |named| match named {
            Some(f) => Checkpoint::open(&json_path.with_file_name(f)),
            None => Checkpoint::open(&json_path.with_extension("safetensors")),
        },
    )
}

/// A case from its JSON text (`file` names it in errors); `open(file key)` gives its tensors.
fn parse(
    file: String,
    text: &str,
    open: impl FnOnce(Option<&str>) -> Result<Checkpoint>,
) -> Result<Case> {
    let json: Value = serde_json::from_str(text).map_err(|e| Error::Case {
        file: file.clone(),
        msg: format!("not valid JSON: {e}"),
    })?;
    let top = Keys::new(&file, "", &json)?;
    let ckpt = open(top.str("file")?)?;
    let solver = Solver::parse(
        top.str("solver")?.unwrap_or("reference"),
        top.f64("cg_tolerance")?,
    )
    .map_err(|e| Error::Case {
        file: file.clone(),
        msg: format!("keys 'solver' / 'cg_tolerance': {e}"),
    })?;
    Ok(Case {
        file,
        json,
        ckpt,
        solver,
    })
}

/// Runs the case at `json_path` and checks every output that has an expected tensor.
#[cfg(not(target_arch = "wasm32"))]
pub fn run_case(ctx: &Context, json_path: &Path) -> Result<CaseRun> {
    run_case_with(ctx, json_path, RunOptions::default())
}

/// [`run_case`] with overrides. With the paper's CG rule, Mesa cases write (and check) the
/// exact-solve outputs, `o_exact_f64` / `y_exact_f64` over all positions, within 1e-4 of their
/// scale.
#[cfg(not(target_arch = "wasm32"))]
pub fn run_case_with(ctx: &Context, json_path: &Path, opts: RunOptions) -> Result<CaseRun> {
    // The read-backs block here, so every await in `run_loaded` is ready at once.
    pollster::block_on(run_loaded(ctx, load(json_path)?, opts))
}

/// [`run_case_with`] for a case already in memory (a page or Node fetched it): its JSON text,
/// named `file` in errors, and the bytes of the safetensors file it names. Read-backs are
/// awaited in a browser.
pub async fn run_case_in_memory(
    ctx: &Context,
    file: &str,
    json: &str,
    safetensors: &[u8],
    opts: RunOptions,
) -> Result<CaseRun> {
    let case = parse(file.to_string(), json, |named| {
        Checkpoint::from_bytes(named.unwrap_or("(the case's safetensors)"), safetensors)
    })?;
    run_loaded(ctx, case, opts).await
}

async fn run_loaded(ctx: &Context, mut case: Case, opts: RunOptions) -> Result<CaseRun> {
    if let Some(solver) = opts.solver {
        case.solver = solver;
    }
    let mut tally = StepTally::default();
    let top = case.keys("")?;
    let kind = match top.str("layer")? {
        Some(k) => Some(k.to_string()),
        None => top.str("kind")?.map(str::to_string),
    };
    let outputs = match kind.as_deref() {
        Some("local_attention") => run_attention_layer(ctx, &case).await?,
        Some("rat") => run_rat_layer(ctx, &case).await?,
        Some("model") => run_model(ctx, &case).await?,
        Some("core_op") => run_mesa_core(ctx, &case, false, &mut tally).await?,
        Some("core_decode") => run_mesa_core(ctx, &case, true, &mut tally).await?,
        Some("layer") => run_mesa_layer(ctx, &case, false, &mut tally).await?,
        Some("layer_decode") => run_mesa_layer(ctx, &case, true, &mut tally).await?,
        Some(other) => return Err(case.err(format!("unknown case kind '{other}'"))),
        None => {
            return Err(case.err("the JSON names no case kind (expected a `layer` or `kind` field)"))
        }
    };
    let checks = outputs
        .iter()
        .filter_map(|(name, shape, got)| check(&case, name, shape, got).transpose())
        .collect::<Result<_>>()?;
    let cg = (tally.rows > 0).then(|| (case.solver, tally.stats()));
    Ok(CaseRun {
        outputs,
        checks,
        cg,
    })
}

/// The name of a Mesa output: the reference rule's `{stem}_cg{iters}_f64`, or the exact solve's
/// `{exact}_exact_f64` for the paper's.
fn mesa_output(case: &Case, stem: &str, exact: &str, iters: usize) -> String {
    match case.solver {
        Solver::Reference => format!("{stem}_cg{iters}_f64"),
        Solver::Paper { .. } => format!("{exact}_exact_f64"),
    }
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
    // Mesa cases (a `kind` field): 1e-5 relative to the output scale, the bound the Mesa golden
    // README gives for an f32 port of the same CG iteration; 1e-4 for the paper's rule against
    // the exact solve (its f32 residual, not the iteration, limits it).
    if case.json["kind"].is_string() {
        let scale = want.iter().fold(0.0f64, |m, w| m.max(w.abs()));
        let rel = match case.solver {
            Solver::Reference => 1e-5,
            Solver::Paper { .. } => 1e-4,
        };
        return Ok(Some(finish(name, got, &want, rel * scale.max(1.0))));
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
    Ok(Some(finish(name, got, &want, 1e-4 * scale.max(1.0))))
}

fn finish(name: &str, got: &[f32], want: &[f64], tol: f64) -> Check {
    let max_abs = got
        .iter()
        .zip(want)
        .map(|(&g, &w)| (g as f64 - w).abs())
        .fold(0.0, f64::max);
    let finite = got.iter().all(|v| v.is_finite());
    Check {
        name: name.into(),
        max_abs,
        rel_rms: rel_rms(got, want),
        tol,
        ok: finite && max_abs <= tol,
    }
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
/// prefill `x[:, :P]` (nothing when P = 0: an empty cache) then one step per remaining token →
/// `y_decode`.
async fn run_layer<L: SequenceLayer>(
    ctx: &Context,
    case: &Case,
    layer: &L,
    x: &[f32],
    xs: &[usize],
) -> Result<Vec<Output>> {
    let (b, t, d) = (xs[0], xs[1], xs[2]);
    let xt = ctx.upload(x, xs, DType::F32)?;
    let y = ctx.run(|rec| layer.forward(rec, &xt))?;
    let mut out = vec![("y".to_string(), xs.to_vec(), read_back(ctx, &y).await?)];
    if let Some(p) = case.prefill("config", "prefill_len", t)? {
        let tokens = |lo: usize, hi: usize| -> Vec<f32> {
            (0..b)
                .flat_map(|bi| x[(bi * t + lo) * d..(bi * t + hi) * d].to_vec())
                .collect()
        };
        let mut cache = if p == 0 {
            layer.new_cache(ctx, b, DType::F32)?
        } else {
            let pt = ctx.upload(&tokens(0, p), &[b, p, d], DType::F32)?;
            ctx.run(|rec| layer.prefill(rec, &pt))?.1
        };
        let mut steps = vec![Vec::new(); b];
        for i in p..t {
            let xi = ctx.upload(&tokens(i, i + 1), &[b, 1, d], DType::F32)?;
            let y = ctx.run(|rec| layer.step(rec, &mut cache, &xi))?;
            for (bi, row) in read_back(ctx, &y).await?.chunks(d).enumerate() {
                steps[bi].extend_from_slice(row);
            }
        }
        out.push(("y_decode".to_string(), vec![b, t - p, d], steps.concat()));
    }
    Ok(out)
}

async fn run_attention_layer(ctx: &Context, case: &Case) -> Result<Vec<Output>> {
    let c = case.keys("config")?;
    let d = case.cfg_usize("d_model")?;
    let (x, xs) = layer_input(case, d)?;
    let cfg = AttentionConfig {
        d_model: d,
        heads: case.cfg_usize("num_head")?,
        window: c.usize("window_size")?,
        rope_base: c.positive_f64("rope_base")?.unwrap_or(10000.0),
        eps: c.positive_f64("rms_eps")?.unwrap_or(1e-6) as f32,
        max_positions: xs[1].max(1),
        scale: c.positive_f64("softmax_scale")?.map(|s| s as f32),
    };
    let layer = AttentionLayer::load(ctx, cfg, &case.ckpt, "", DType::F32)?;
    run_layer(ctx, case, &layer, &x, &xs).await
}

async fn run_rat_layer(ctx: &Context, case: &Case) -> Result<Vec<Output>> {
    let c = case.keys("config")?;
    let d = case.cfg_usize("d_model")?;
    let (x, xs) = layer_input(case, d)?;
    let cfg = RatConfig {
        d_model: d,
        heads: case.cfg_usize("num_head")?,
        groups: c.usize("ngroups")?.unwrap_or(2),
        chunk: case.cfg_usize("chunk_size")?,
        rope_base: c.positive_f64("rope_base")?.unwrap_or(10000.0),
        eps: c.positive_f64("rms_eps")?.unwrap_or(1e-6) as f32,
        max_positions: xs[1].max(1),
        scale: c.positive_f64("softmax_scale")?.map(|s| s as f32),
    };
    let layer = RatLayer::load(ctx, cfg, &case.ckpt, "", DType::F32)?;
    run_layer(ctx, case, &layer, &x, &xs).await
}

async fn run_model(ctx: &Context, case: &Case) -> Result<Vec<Output>> {
    let kind = case.keys("")?.str("model_kind")?;
    let cfg = crate::model::ModelConfig::from_json(&case.file, &case.json["config"], kind)?;
    let (ids, shape) = case.ckpt.numbers("input_ids", None)?;
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
    let mut out = vec![(
        "logits".to_string(),
        vec![b, t, v],
        read_back(ctx, &logits).await?,
    )];
    if let Some(p) = case.prefill("config", "prefill_len", t)? {
        if p == 0 {
            return Err(case.err(
                "config.prefill_len 0: a model decodes after a prompt of at least one token",
            ));
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
            for (bi, row) in read_back(ctx, &l).await?.chunks(v).enumerate() {
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

/// Mesa core cases: q k v g beta lamb (+ h_kk_init h_kv_init) → o_cg30_f64 and the final states;
/// with `decode`, the first `shapes.T_prefill` tokens run the parallel path and the rest one decode
/// step each → o_decode_cg30_f64.
async fn run_mesa_core(
    ctx: &Context,
    case: &Case,
    decode: bool,
    tally: &mut StepTally,
) -> Result<Vec<Output>> {
    use crate::ops::mesa::{self as mops, MesaState};
    let iters = case.cg_iterations()?;
    let (q, qs) = case.ckpt.f32("q", None)?;
    if qs.len() != 4 {
        return Err(case.err(format!(
            "tensor 'q' has shape {qs:?}, expected [B, T, H, D]"
        )));
    }
    let (b, t, h, d) = (qs[0], qs[1], qs[2], qs[3]);
    let get = |n: &str, s: &[usize]| -> Result<Vec<f32>> { Ok(case.ckpt.f32(n, Some(s))?.0) };
    let (k, v) = (get("k", &qs)?, get("v", &qs)?);
    let (g, beta, lamb) = (
        get("g", &[b, t, h])?,
        get("beta", &[b, t, h])?,
        get("lamb", &[h, d])?,
    );
    let state = if case.ckpt.contains("h_kk_init") {
        MesaState::from_host(
            ctx,
            &get("h_kk_init", &[b, h, d, d])?,
            &get("h_kv_init", &[b, h, d, d])?,
            b,
            h,
            d,
        )?
    } else {
        MesaState::zeros(ctx, b, h, d)?
    };
    // Decoding from an empty state when T_prefill is 0: the parallel path then runs no token.
    let p = if decode {
        case.prefill("shapes", "T_prefill", t)?
            .ok_or_else(|| case.err("required key 'shapes.T_prefill' is missing"))?
    } else {
        t
    };
    let cols = |x: &[f32], w: usize, lo: usize, hi: usize| -> Vec<f32> {
        (0..b)
            .flat_map(|bi| x[(bi * t + lo) * w..(bi * t + hi) * w].to_vec())
            .collect()
    };
    let up = |x: Vec<f32>, s: &[usize]| ctx.upload(&x, s, DType::F32);
    let lam = up(lamb, &[h, d])?;
    let (hd, n) = (h * d, t - p);
    let sh = [b, p, h, d];
    let (qt, kt, vt) = (
        up(cols(&q, hd, 0, p), &sh)?,
        up(cols(&k, hd, 0, p), &sh)?,
        up(cols(&v, hd, 0, p), &sh)?,
    );
    let (gt, bt) = (
        up(cols(&g, h, 0, p), &[b, p, h])?,
        up(cols(&beta, h, 0, p), &[b, p, h])?,
    );
    let o = if p == 0 {
        None
    } else {
        let solved = ctx.run(|rec| {
            mops::core_with(
                rec,
                &mops::MesaInputs {
                    q: &qt,
                    k: &kt,
                    v: &vt,
                    g: &gt,
                    beta: &bt,
                    lamb: &lam,
                },
                &state,
                iters,
                case.solver,
            )
        })?;
        tally.add(ctx, &solved.iterations).await?;
        Some(read_back(ctx, &solved.o).await?)
    };
    let mut out = Vec::new();
    if decode {
        let mut steps = vec![Vec::new(); b];
        for i in p..t {
            let s1 = [b, 1, h, d];
            let (qi, ki, vi) = (
                up(cols(&q, hd, i, i + 1), &s1)?,
                up(cols(&k, hd, i, i + 1), &s1)?,
                up(cols(&v, hd, i, i + 1), &s1)?,
            );
            let (gi, bi_) = (
                up(cols(&g, h, i, i + 1), &[b, 1, h])?,
                up(cols(&beta, h, i, i + 1), &[b, 1, h])?,
            );
            let oi = ctx.run(|rec| {
                mops::decode_step_with(
                    rec,
                    &mops::MesaInputs {
                        q: &qi,
                        k: &ki,
                        v: &vi,
                        g: &gi,
                        beta: &bi_,
                        lamb: &lam,
                    },
                    &state,
                    iters,
                    case.solver,
                )
            })?;
            tally.add(ctx, &oi.iterations).await?;
            for (bi, row) in read_back(ctx, &oi.o).await?.chunks(hd).enumerate() {
                steps[bi].extend_from_slice(row);
            }
        }
        if case.solver == Solver::Reference {
            out.push((
                format!("o_decode_cg{iters}_f64"),
                vec![b, n, h, d],
                steps.concat(),
            ));
        } else {
            // The exact solve covers every position: the prompt's outputs, then the steps'.
            let prompt = o.unwrap_or_default();
            let all: Vec<f32> = (0..b)
                .flat_map(|bi| {
                    let head = prompt.get(bi * p * hd..(bi + 1) * p * hd).unwrap_or(&[]);
                    head.iter().chain(&steps[bi]).copied().collect::<Vec<_>>()
                })
                .collect();
            out.push(("o_exact_f64".into(), vec![b, t, h, d], all));
        }
    } else if let Some(o) = o {
        out.push((mesa_output(case, "o", "o", iters), vec![b, t, h, d], o));
    }
    out.push((
        "h_kk_final".into(),
        vec![b, h, d, d],
        read_back(ctx, &state.kk).await?,
    ));
    out.push((
        "h_kv_final".into(),
        vec![b, h, d, d],
        read_back(ctx, &state.kv).await?,
    ));
    Ok(out)
}

/// Mesa layer cases: x → y_cg30_f64; with `decode`, prefill `shapes.T_prefill` tokens then one step
/// per token → y_prefill_decode_cg30_f64 over all positions, plus the final states and conv caches.
async fn run_mesa_layer(
    ctx: &Context,
    case: &Case,
    decode: bool,
    tally: &mut StepTally,
) -> Result<Vec<Output>> {
    use crate::layers::{MesaConfig, MesaLayer};
    let lc = case.keys("layer_config")?;
    let num = |k: &str| lc.require_usize_in(k, 1..=usize::MAX);
    let iters = case.cg_iterations()?;
    let cg = |k: &str| -> Result<usize> {
        Ok(lc
            .usize_in(k, 1..=crate::ops::mesa::MAX_ITERS)?
            .unwrap_or(iters))
    };
    let cfg = MesaConfig {
        hidden: num("hidden_size")?,
        heads: num("num_heads")?,
        head_dim: num("head_dim")?,
        norm_eps: lc.positive_f64("norm_eps")?.unwrap_or(1e-5) as f32,
        cg_iters_prefill: cg("max_cg_step_training")?,
        cg_iters_decode: cg("max_cg_step_decoding")?,
        solver: case.solver,
    };
    let (x, xs) = layer_input(case, cfg.hidden)?;
    let (b, t, dm) = (xs[0], xs[1], xs[2]);
    let (h, d) = (cfg.heads, cfg.head_dim);
    let layer = MesaLayer::load(ctx, cfg, &case.ckpt, "", DType::F32)?;
    if !decode {
        let xt = ctx.upload(&x, &xs, DType::F32)?;
        let (y, its) = ctx.run(|rec| layer.forward_solved(rec, &xt))?;
        tally.add(ctx, &its).await?;
        return Ok(vec![(
            mesa_output(case, "y", "y", iters),
            xs.clone(),
            read_back(ctx, &y).await?,
        )]);
    }
    let p = case
        .prefill("shapes", "T_prefill", t)?
        .ok_or_else(|| case.err("required key 'shapes.T_prefill' is missing"))?;
    let rows = |lo: usize, hi: usize| -> Vec<f32> {
        (0..b)
            .flat_map(|bi| x[(bi * t + lo) * dm..(bi * t + hi) * dm].to_vec())
            .collect()
    };
    // T_prefill 0: every token is a decode step from an empty cache.
    let (mut ys, mut cache): (Vec<Vec<f32>>, _) = if p == 0 {
        (vec![Vec::new(); b], layer.new_cache(ctx, b)?)
    } else {
        let pt = ctx.upload(&rows(0, p), &[b, p, dm], DType::F32)?;
        let (yp, cache) = ctx.run(|rec| layer.prefill(rec, &pt))?;
        let yp = read_back(ctx, &yp).await?;
        let ys = (0..b)
            .map(|bi| yp[bi * p * dm..(bi + 1) * p * dm].to_vec())
            .collect();
        (ys, cache)
    };
    for i in p..t {
        let xi = ctx.upload(&rows(i, i + 1), &[b, 1, dm], DType::F32)?;
        let (y, its) = ctx.run(|rec| layer.step_solved(rec, &mut cache, &xi))?;
        tally.add(ctx, &its).await?;
        for (bi, row) in read_back(ctx, &y).await?.chunks(dm).enumerate() {
            ys[bi].extend_from_slice(row);
        }
    }
    // Per sequence the cache holds q's channels, then k's.
    let conv = read_back(ctx, cache.conv_cache()).await?;
    let (mut cq, mut ck) = (Vec::new(), Vec::new());
    for seq in conv.chunks(2 * h * d * 4) {
        cq.extend_from_slice(&seq[..h * d * 4]);
        ck.extend_from_slice(&seq[h * d * 4..]);
    }
    Ok(vec![
        (
            mesa_output(case, "y_prefill_decode", "y", iters),
            xs.clone(),
            ys.concat(),
        ),
        (
            "h_kk_final".into(),
            vec![b, h, d, d],
            read_back(ctx, &cache.state().kk).await?,
        ),
        (
            "h_kv_final".into(),
            vec![b, h, d, d],
            read_back(ctx, &cache.state().kv).await?,
        ),
        ("conv_state_q_final".into(), vec![b, h * d, 4], cq),
        ("conv_state_k_final".into(), vec![b, h * d, 4], ck),
    ])
}
