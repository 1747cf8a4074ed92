//! Verification cases: every kernel family against the crate's float64 reference
//! (`crate::reference`) at a handful of shapes, in f32 and f16. One registry serves
//! `chunkwise check` (any adapter, from the release binary alone) and the kernel tests, so a
//! case is written once.
//!
//! A case runs its op through the public launch wrappers, so it checks whatever variant the
//! context's schedule picks there; the kernels it dispatched are traced and reported as its
//! variant (`record::trace_kernels`).

mod attention;
mod basic;
pub use attention::fwd_variant_label;
pub use basic::tile_label;
mod mesa;
mod rat;

#[cfg(not(target_arch = "wasm32"))]
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
#[cfg(not(target_arch = "wasm32"))]
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::record::trace_kernels;
use crate::reference::{max_abs, rel_rms};
use crate::{Context, DType, Tensor};

pub use mesa::{plan_label, random_states, MesaHost, MesaTensors, CG30, CG30_DECODE};

/// rel-RMS bound for f32 storage: rms(gpu − ref) / rms(ref) (README "Precision").
pub const TOL_F32: f64 = 1e-5;
/// rel-RMS bound for f16 storage, against the reference evaluated on the f16-rounded inputs: f32
/// accumulation plus one f16 rounding of the output (2⁻¹¹ relative at most).
pub const TOL_F16: f64 = 1e-3;

/// The rel-RMS bound of a dtype.
pub fn tolerance(dtype: DType) -> f64 {
    match dtype {
        DType::F32 => TOL_F32,
        DType::F16 => TOL_F16,
    }
}

/// Deterministic uniform values in [-scale, scale) (an LCG: inputs are the same on every machine).
pub fn rand(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

/// Rounds to what a tensor of `dtype` stores, so that references see the kernel's inputs.
pub fn stored(v: &[f32], dtype: DType) -> Vec<f32> {
    match dtype {
        DType::F32 => v.to_vec(),
        DType::F16 => v.iter().map(|&x| half::f16::from_f32(x).to_f32()).collect(),
    }
}

fn to_f64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

/// One op at one shape: what runs on the GPU and what the reference says it must give.
pub trait Check: Send + Sync {
    /// Runs the op and returns its outputs, read back and concatenated by the caller (so that
    /// a page can await the read-backs where the CLI blocks on them).
    fn gpu(&self, ctx: &Context) -> Result<Vec<Tensor>>;
    /// The float64 reference of the same outputs.
    fn reference(&self) -> Vec<f64>;
}

/// A verification case of the registry.
pub struct Case {
    /// Kernel family (`chunkwise check --family`).
    pub family: &'static str,
    /// The shape and anything else that tells the case from its siblings, e.g. `b2 t130 h2 dh64`.
    pub shape: String,
    pub dtype: DType,
    /// A case sized to reach loop and tile limits; `check --quick` leaves these out.
    pub long: bool,
    /// rel-RMS bound (0 for exact results: data movement, argmax).
    pub bound: f64,
    check: Box<dyn Check>,
    want: OnceLock<Vec<f64>>,
}

impl Case {
    fn new(family: &'static str, shape: String, dtype: DType, check: impl Check + 'static) -> Case {
        Case {
            family,
            shape,
            dtype,
            long: false,
            bound: tolerance(dtype),
            check: Box::new(check),
            want: OnceLock::new(),
        }
    }
    fn long(mut self) -> Case {
        self.long = true;
        self
    }
    fn exact(mut self) -> Case {
        self.bound = 0.0;
        self
    }

    /// Runs the case on `ctx`, blocking on the read-backs (no timeout; [`run_cases`] adds one).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn run(&self, ctx: &Context) -> Outcome {
        let read = |ts: Vec<Tensor>| {
            std::future::ready(
                ts.iter()
                    .map(|t| ctx.download(t))
                    .collect::<Result<Vec<_>>>(),
            )
        };
        // Every await is ready at once: the downloads above block.
        pollster::block_on(self.run_with(ctx, read))
    }

    /// [`Case::run`] for an async caller (a web page, Node with Dawn): read-backs are awaited.
    pub async fn run_async(&self, ctx: &Context) -> Outcome {
        let read = |ts: Vec<Tensor>| async move {
            let mut parts = Vec::with_capacity(ts.len());
            for t in &ts {
                parts.push(ctx.download_async(t).await?);
            }
            Ok(parts)
        };
        self.run_with(ctx, read).await
    }

    async fn run_with<F: std::future::Future<Output = Result<Vec<Vec<f32>>>>>(
        &self,
        ctx: &Context,
        read: impl FnOnce(Vec<Tensor>) -> F,
    ) -> Outcome {
        let mut out = Outcome::blank(self.family, &self.shape, self.dtype, self.bound, ctx);
        if self.dtype == DType::F16 && !ctx.supports_f16() {
            out.skipped = Some("the adapter has no SHADER_F16".into());
            return out;
        }
        let t0 = web_time::Instant::now();
        let (made, trace) = trace_kernels(|| self.check.gpu(ctx));
        let got = match made {
            Ok(ts) => read(ts).await.map(|parts| parts.concat()),
            Err(e) => Err(e),
        };
        out.ms = t0.elapsed().as_secs_f64() * 1e3;
        out.variant = trace.joined();
        out.schedule = schedule_label(ctx, trace.subgroups);
        match got {
            Ok(got) => {
                let want = self.want.get_or_init(|| self.check.reference());
                out.judge(&got, want);
            }
            // The adapter cannot hold this size (a limit, not a wrong result), or lacks the
            // feature a variant needs (tensor cores): skipped with why.
            Err(
                e @ (Error::LimitExceeded { .. }
                | Error::OutOfMemory { .. }
                | Error::MissingFeature { .. }),
            ) => out.skipped = Some(e.to_string()),
            Err(e) => out.error = Some(e.to_string()),
        }
        out
    }
}

/// `cpu`/`gpu` kernels, with `/sgN` where the case ran subgroup kernels of size N.
fn schedule_label(ctx: &Context, subgroups: bool) -> String {
    let base = if ctx.cpu_schedules() { "cpu" } else { "gpu" };
    match (subgroups, ctx.subgroup_size()) {
        (true, Some(n)) => format!("{base}/sg{n}"),
        (true, None) => format!("{base}/sg"),
        _ => base.to_string(),
    }
}

/// What one case gave: a row of `chunkwise check`'s table and of its JSON Lines.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Outcome {
    pub family: String,
    /// `cpu` or `gpu` kernels, `/sgN` when subgroup kernels ran.
    pub schedule: String,
    /// The kernels the case dispatched, joined by `+`.
    pub variant: String,
    pub shape: String,
    pub dtype: DType,
    pub rel_rms: Option<f64>,
    pub max_abs: Option<f64>,
    /// The bound `metric` is held to.
    pub bound: f64,
    /// `rel_rms` for kernel cases, `max_abs` for golden cases (their README's bound).
    pub metric: &'static str,
    pub pass: bool,
    /// Why the case did not run (an adapter feature or limit); never counted as passed.
    pub skipped: Option<String>,
    /// An error, panic, timeout or non-finite output: a failure.
    pub error: Option<String>,
    /// Wall time of the GPU part (upload, run, read-back; the reference is not counted).
    pub ms: f64,
}

impl Outcome {
    fn blank(family: &str, shape: &str, dtype: DType, bound: f64, ctx: &Context) -> Outcome {
        Outcome {
            family: family.to_string(),
            schedule: schedule_label(ctx, false),
            variant: String::new(),
            shape: shape.to_string(),
            dtype,
            rel_rms: None,
            max_abs: None,
            bound,
            metric: "rel_rms",
            pass: false,
            skipped: None,
            error: None,
            ms: 0.0,
        }
    }
    fn judge(&mut self, got: &[f32], want: &[f64]) {
        if got.len() != want.len() {
            self.error = Some(format!(
                "{} outputs where the reference has {}",
                got.len(),
                want.len()
            ));
            return;
        }
        let e = rel_rms(got, want);
        self.rel_rms = Some(e);
        self.max_abs = Some(max_abs(got, want));
        if let Some(i) = got.iter().position(|v| !v.is_finite()) {
            self.error = Some(format!("non-finite output {} at index {i}", got[i]));
            return;
        }
        self.pass = e <= self.bound;
    }
    /// `PASS`, `FAIL` or `skipped`.
    pub fn status(&self) -> &'static str {
        if self.skipped.is_some() {
            "skipped"
        } else if self.pass {
            "PASS"
        } else {
            "FAIL"
        }
    }
    pub fn failed(&self) -> bool {
        self.skipped.is_none() && !self.pass
    }
    /// The measured error of the case's metric.
    pub fn error_value(&self) -> Option<f64> {
        match self.metric {
            "max_abs" => self.max_abs,
            _ => self.rel_rms,
        }
    }
    /// One line for a test failure or a log.
    pub fn describe(&self) -> String {
        let what = format!(
            "{} [{} {}] {} {:?}",
            self.family, self.schedule, self.variant, self.shape, self.dtype
        );
        match (&self.error, &self.skipped, self.error_value()) {
            (Some(e), _, _) => format!("{what}: {e}"),
            (_, Some(s), _) => format!("{what}: skipped ({s})"),
            (_, _, Some(v)) => format!(
                "{what}: {} {v:.3e} (bound {:.0e}) {}",
                self.metric,
                self.bound,
                self.status()
            ),
            _ => what,
        }
    }
}

/// Every case of every family, in family order.
pub fn registry() -> Vec<Arc<Case>> {
    let mut all = Vec::new();
    for dtype in [DType::F32, DType::F16] {
        all.extend(basic::cases(dtype));
        all.extend(attention::cases(dtype));
        all.extend(rat::cases(dtype));
        all.extend(mesa::cases(dtype));
    }
    // Families in registry order, f32 then f16 within each.
    let order = families_of(&all);
    all.sort_by_key(|c| order.iter().position(|f| *f == c.family));
    all.into_iter().map(Arc::new).collect()
}

fn families_of(cases: &[Case]) -> Vec<&'static str> {
    let mut fams: Vec<&'static str> = Vec::new();
    for c in cases {
        if !fams.contains(&c.family) {
            fams.push(c.family);
        }
    }
    fams
}

/// The family names, in registry order.
pub fn families() -> Vec<&'static str> {
    let mut fams = Vec::new();
    for c in registry() {
        if !fams.contains(&c.family) {
            fams.push(c.family);
        }
    }
    fams
}

/// How much of the registry `chunkwise check` runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Every case.
    Full,
    /// Every case but the long ones.
    Quick,
    /// The first case of each family in each dtype: for drivers that compile slowly (llvmpipe's
    /// GL driver takes minutes for some kernels at a new head dim), and CI's second backend.
    Smoke,
}

/// The cases of `names` (all families when empty) within `scope`; an unknown family is an error.
pub fn select(names: &[String], scope: Scope) -> Result<Vec<Arc<Case>>> {
    let known = families();
    if let Some(bad) = names.iter().find(|n| !known.contains(&n.as_str())) {
        return Err(Error::invalid(
            "check",
            format!(
                "unknown family '{bad}'; the families are: {}",
                known.join(", ")
            ),
        ));
    }
    Ok(registry()
        .into_iter()
        .filter(|c| names.is_empty() || names.iter().any(|n| n == c.family))
        .filter(|c| scope == Scope::Full || !c.long)
        .fold(Vec::new(), |mut kept: Vec<Arc<Case>>, c| {
            let seen = kept
                .iter()
                .any(|k| k.family == c.family && k.dtype == c.dtype);
            if scope != Scope::Smoke || !seen {
                kept.push(c);
            }
            kept
        }))
}

#[cfg(not(target_arch = "wasm32"))]
/// Runs one case with a deadline: a case that panics, or does not finish within `timeout`, is a
/// failure. The flag is true when the case timed out (its thread may still hold the GPU: the
/// caller should stop).
pub fn run_with_timeout(ctx: &Context, case: &Arc<Case>, timeout: Duration) -> (Outcome, bool) {
    let blank = Outcome::blank(case.family, &case.shape, case.dtype, case.bound, ctx);
    let (c, k) = (ctx.clone(), case.clone());
    with_deadline(blank, timeout, move || k.run(&c))
}

#[cfg(not(target_arch = "wasm32"))]
/// Runs `f` on a thread of its own and waits at most `timeout`; a panic, a thread that ends
/// without a result, or the deadline give `blank` with the error filled in.
fn with_deadline(
    blank: Outcome,
    timeout: Duration,
    f: impl FnOnce() -> Outcome + Send + 'static,
) -> (Outcome, bool) {
    let (tx, rx) = std::sync::mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name(format!("check {}", blank.family))
        .spawn(move || {
            let _ = tx.send(std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)));
        });
    let failed = |msg: String| Outcome {
        error: Some(msg),
        ..blank.clone()
    };
    if let Err(e) = spawned {
        return (
            failed(format!("could not start the case's thread: {e}")),
            false,
        );
    }
    match rx.recv_timeout(timeout) {
        Ok(Ok(outcome)) => (outcome, false),
        Ok(Err(panic)) => {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".into());
            (failed(format!("panicked: {msg}")), false)
        }
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => (
            failed(format!("did not finish within {} s", timeout.as_secs_f64())),
            true,
        ),
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => (
            failed("the case's thread ended without a result".into()),
            false,
        ),
    }
}

#[cfg(not(target_arch = "wasm32"))]
/// Whether a JSON file is a case (it names a `layer` or `kind`), not an index or notes. A file
/// that does not parse counts as a case, so that the runner reports it.
fn is_case(path: &Path) -> bool {
    match std::fs::read_to_string(path).map(|t| serde_json::from_str::<serde_json::Value>(&t)) {
        Ok(Ok(v)) => v["layer"].is_string() || v["kind"].is_string(),
        _ => true,
    }
}

#[cfg(not(target_arch = "wasm32"))]
/// Every case (`*.json` naming a `layer` or `kind`) under `dir` and its sub-folders, sorted.
pub fn golden_cases(dir: &Path) -> Result<Vec<PathBuf>> {
    let io = |e| Error::Io {
        path: dir.display().to_string(),
        source: e,
    };
    let mut found = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).map_err(io)? {
            let p = entry.map_err(io)?.path();
            if p.is_dir() {
                todo.push(p);
            } else if p.extension().is_some_and(|e| e == "json") && is_case(&p) {
                found.push(p);
            }
        }
    }
    found.sort();
    if found.is_empty() {
        return Err(Error::invalid(
            "check",
            format!("{} holds no golden case (*.json)", dir.display()),
        ));
    }
    Ok(found)
}

#[cfg(not(target_arch = "wasm32"))]
/// A golden case through `chunkwise run`'s path: one row whose error is the worst output's
/// max|ours − expected| against that output's bound (shared/golden/README.md).
pub fn run_golden(ctx: &Context, path: &Path, root: &Path, timeout: Duration) -> (Outcome, bool) {
    let shape = path
        .strip_prefix(root)
        .unwrap_or(path)
        .display()
        .to_string();
    let mut blank = Outcome::blank("golden", &shape, DType::F32, 0.0, ctx);
    blank.metric = "max_abs";
    let (c, p, b) = (ctx.clone(), path.to_path_buf(), blank.clone());
    with_deadline(blank, timeout, move || {
        let mut out = b;
        let t0 = Instant::now();
        let (run, trace) = trace_kernels(|| crate::golden::run_case(&c, &p));
        out.ms = t0.elapsed().as_secs_f64() * 1e3;
        out.variant = trace.joined();
        out.schedule = schedule_label(&c, trace.subgroups);
        match run {
            Ok(run) if run.checks.is_empty() => {
                out.error = Some("the case holds no expected tensor".into())
            }
            Ok(run) => {
                // The output nearest its bound speaks for the case.
                let worst = run
                    .checks
                    .iter()
                    .max_by(|a, b| (a.max_abs / a.tol).total_cmp(&(b.max_abs / b.tol)))
                    .expect("checks are not empty");
                out.max_abs = Some(worst.max_abs);
                out.rel_rms = Some(worst.rel_rms);
                out.bound = worst.tol;
                out.pass = run.checks.iter().all(|c| c.ok);
                if !worst.max_abs.is_finite() {
                    out.error = Some(format!("{}: non-finite output", worst.name));
                }
            }
            Err(e) => out.error = Some(e.to_string()),
        }
        out
    })
}

#[cfg(not(target_arch = "wasm32"))]
/// Runs `cases` on `ctx`, each with `timeout`; then, where the device has subgroups and a case
/// ran subgroup kernels, runs that case again with the subgroup kernels off (the kernels an
/// adapter without them gets). Calls `report` with every outcome as it comes. Stops after a
/// timeout (the GPU may still be busy with the hung case). Returns every outcome.
pub fn run_cases(
    ctx: &Context,
    cases: &[Arc<Case>],
    timeout: Duration,
    mut report: impl FnMut(&Outcome),
) -> Vec<Outcome> {
    let mut all = Vec::new();
    let mut again = Vec::new();
    for case in cases {
        let (o, hung) = run_with_timeout(ctx, case, timeout);
        if o.schedule.contains("/sg") {
            again.push(case.clone());
        }
        report(&o);
        all.push(o);
        if hung {
            return all;
        }
    }
    if !again.is_empty() {
        ctx.set_subgroup_kernels(false);
        for case in &again {
            let (o, hung) = run_with_timeout(ctx, case, timeout);
            report(&o);
            all.push(o);
            if hung {
                break;
            }
        }
        ctx.set_subgroup_kernels(true);
    }
    all
}
