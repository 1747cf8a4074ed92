//! The Mesa core op (spec/mesa.md): chunkwise-parallel forward and the recurrent decode step,
//! with either CG rule ([`Solver`]).
//!
//! GPU schedule (shaders/mesa.wgsl): the chunk-start states come from every chunk's update at
//! once (a batched product) and a scan over chunks that is sequential only over T/C steps, so the
//! work spreads over B·H·D² elements whatever T is; then one workgroup per (chunk, batch·head)
//! solves all C positions of the chunk. The chunk length does not change the result (spec §5), so
//! it is chosen from the device's workgroup memory: the CG workgroup keeps the direction and the
//! chunk's keys (C × (D + 1) each) and two C × C matrices there, and, where the device grants
//! enough, the chunk's S_kk too, which every iteration reads ([`cg_plans`]: C = 32 and S_kk kept
//! with 48 KiB at D = 64; C = 16 within WebGPU's 16 KiB).
//! CPU schedule (CPU adapters): the states walk the chunks token by token in 4×4 blocks
//! (mesa_states_rows.wgsl) and one lane solves one position (mesa_cg_lanes / mesa_cg_sg), C = 16
//! (8 past D = 64).

use crate::context::Context;
use crate::error::{Error, Result};
use crate::kernels::KernelKey;
use crate::record::Recording;
use crate::tensor::{DType, Tensor};

use super::check_u32;

/// The two recurrent states of a Mesa layer, f32, `[B, H, D, D]` each.
#[derive(Clone, Debug)]
pub struct MesaState {
    pub kk: Tensor,
    pub kv: Tensor,
}

impl MesaState {
    /// Zero states.
    pub fn zeros(ctx: &Context, b: usize, h: usize, d: usize) -> Result<MesaState> {
        ctx.run(|rec| Self::zeros_in(rec, b, h, d))
    }
    /// Zero states whose zeroing is recorded into `rec` (no submit of its own).
    pub fn zeros_in(rec: &mut Recording, b: usize, h: usize, d: usize) -> Result<MesaState> {
        let ctx = rec.context().clone();
        let st = MesaState {
            kk: ctx.alloc(&[b, h, d, d], DType::F32)?,
            kv: ctx.alloc(&[b, h, d, d], DType::F32)?,
        };
        rec.zero(&st.kk);
        rec.zero(&st.kv);
        Ok(st)
    }
    /// States from host data (`[B, H, D, D]` each).
    pub fn from_host(
        ctx: &Context,
        kk: &[f32],
        kv: &[f32],
        b: usize,
        h: usize,
        d: usize,
    ) -> Result<MesaState> {
        Ok(MesaState {
            kk: ctx.upload(kk, &[b, h, d, d], DType::F32)?,
            kv: ctx.upload(kv, &[b, h, d, d], DType::F32)?,
        })
    }
    pub fn bytes(&self) -> u64 {
        self.kk.bytes() + self.kv.bytes()
    }
}

/// The inputs of the core op: `q, k, v [B, T, H, D]` (q and k already L2-normalised), log decays
/// `g` and input gates `beta [B, T, H]`, and `lamb [H, D]`; gates and lambda in f32.
#[derive(Clone, Copy)]
pub struct MesaInputs<'a> {
    pub q: &'a Tensor,
    pub k: &'a Tensor,
    pub v: &'a Tensor,
    pub g: &'a Tensor,
    pub beta: &'a Tensor,
    pub lamb: &'a Tensor,
}

/// How the CG solves (H_t + Λ) x_t = q_t (spec/mesa.md §5).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum Solver {
    /// fla's iteration, which the goldens follow: x0 = 0 on the parallel path and the Jacobi
    /// guess q / (diag(H) + λ + 1e-5) in decode, 1e-5 added to both denominators, exactly the
    /// given number of steps. About 1e-3 from the exact solve (it stalls; spec §5).
    #[default]
    Reference,
    /// MesaNet's own solver (Appendix C, Algorithm 1): the Jacobi start q / diag(H + Λ), no
    /// guards, and a row stops once sqrt(δ) ≤ tol·sqrt(δ0) (δ the squared residual, δ0 that of
    /// the start); the step count is a cap. Converges to the exact solve.
    Paper { tol: f32 },
}

impl Solver {
    /// The paper solver's default tolerance ε.
    pub const DEFAULT_TOL: f32 = 1e-6;

    /// From a name (`reference` or `paper`) and, for `paper`, a tolerance (the default when None).
    pub fn parse(name: &str, tol: Option<f64>) -> Result<Solver> {
        match name {
            "reference" => Ok(Solver::Reference),
            "paper" => {
                let tol = tol.unwrap_or(Self::DEFAULT_TOL as f64);
                if !(tol.is_finite() && (0.0..1.0).contains(&tol)) {
                    return Err(Error::invalid(
                        "mesa",
                        format!("CG tolerance {tol} must be at least 0 and below 1"),
                    ));
                }
                Ok(Solver::Paper { tol: tol as f32 })
            }
            other => Err(Error::invalid(
                "mesa",
                format!("unknown CG solver '{other}' (use reference or paper)"),
            )),
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Solver::Reference => "reference",
            Solver::Paper { .. } => "paper",
        }
    }
    /// (`paper`, ε²) as the kernels' parameters take them.
    fn params(self) -> (u32, f32) {
        match self {
            Solver::Reference => (0, 0.0),
            Solver::Paper { tol } => (1, tol * tol),
        }
    }
}

/// The output of a solve and the CG steps each row took, `[B, T, H]` (f32 counts; for the
/// reference rule every row takes the given count).
pub struct Solved {
    pub o: Tensor,
    pub iterations: Tensor,
}

/// The largest and the mean step count of a solve, read back.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct IterationStats {
    pub max: u32,
    pub mean: f64,
}

impl IterationStats {
    #[cfg(not(target_arch = "wasm32"))]
    pub fn read(ctx: &Context, iterations: &Tensor) -> Result<IterationStats> {
        let v = ctx.download(iterations)?;
        Ok(IterationStats {
            max: v.iter().fold(0.0f32, |m, &x| m.max(x)) as u32,
            mean: v.iter().map(|&x| x as f64).sum::<f64>() / v.len().max(1) as f64,
        })
    }
}

/// Chunk length of the CPU schedule (and the nominal one of the FLOP model) for head dim `d`.
pub fn chunk_len(d: usize) -> usize {
    if d <= 64 {
        16
    } else {
        8
    }
}

// A CG run past llvmpipe's loop limit returns a half-finished solve: the CPU schedules below are
// admitted only while their loops, counted as if none were unrolled, stay within the budget.
use super::CPU_LOOP_BUDGET;

/// Chunks per segment of the chunkwise forward (every adapter; CPU adapters may take fewer): the scan's walk per invocation
/// (a load, a store and an exp per chunk), and the chunks each CG dispatch solves. 1024 chunks
/// (16384 tokens at C = 16) keep a segment's CG dispatch at B·H·1024 workgroups, enough to fill
/// any GPU, while its length no longer grows with T.
pub(crate) const GPU_CHUNKS_PER_PASS: usize = 1024;

/// Counted loop iterations per CG iteration of each CG kernel, if none of its loops unrolled.
/// `mesa_cg` measured on lavapipe at C = 16: right up to 190 iterations at D = 64 and 80 at
/// D = 128, wrong from 200 and 100 (the estimate admits 123 and 62); its loops over the chunk
/// grow with C.
fn loops_per_cg_iteration(entry: &str, d: usize, c: usize) -> usize {
    match entry {
        "mesa_cg_sg" => 2 * chunk_len(d) + 6 * d / 4 + 8,
        "mesa_cg_lanes" => d * d / 8 + 4 * d + 16,
        "mesa_decode" | "mesa_decode_sg" => 4 * d + 8,
        // The loop over rows in each product and four vector loops (the row loops are written out).
        "mesa_decode_lanes" => 6 * d / 4 + 8,
        _ => (6 * d + 16) * c.max(16) / 16,
    }
}

/// Products beyond the CG steps: the paper's start applies the operator once more.
fn start_products(solver: Solver) -> usize {
    usize::from(solver != Solver::Reference)
}

/// Whether `iters` CG steps of `entry` fit the loop budget.
fn within_cpu_budget(entry: &str, d: usize, c: usize, iters: usize, solver: Solver) -> bool {
    (iters + start_products(solver)) * loops_per_cg_iteration(entry, d, c) + 8 * d
        <= CPU_LOOP_BUDGET
}

/// The refusal when no CG kernel can run `iters` iterations on a CPU adapter.
fn too_many_cpu_iterations(
    entries: &[&str],
    d: usize,
    c: usize,
    iters: usize,
    solver: Solver,
) -> Error {
    let limit = entries
        .iter()
        .map(|e| {
            (CPU_LOOP_BUDGET.saturating_sub(8 * d) / loops_per_cg_iteration(e, d, c))
                .saturating_sub(start_products(solver))
        })
        .max()
        .unwrap_or(0);
    Error::LimitExceeded {
        what: format!(
            "Mesa CG with {iters} iterations at head dim {d} on a CPU adapter (its driver stops \
             loops after ~65k iterations, which would cut the solve short; use fewer CG steps)"
        ),
        requested: iters as u64,
        limit_name: "CG iterations on this CPU adapter",
        limit: limit as u64,
    }
}

/// A CG kernel picked for an adapter, and the chunk length it runs at.
struct CgPick {
    kernel: std::sync::Arc<crate::kernels::Kernel>,
    chunk: usize,
    /// One lane per chunk position (CPU kernels) rather than one 256-invocation workgroup.
    lanes: bool,
}

/// The GPU CG kernel's configurations, best first: (chunk length, S_kk kept in workgroup memory).
/// Longer chunks mean fewer chunk states and more positions sharing each state read; keeping
/// S_kk saves reading D² values per CG step. C·D ≤ 2048 keeps a row's columns within 8 per
/// invocation. Each costs 4·(2·C·(D + 1) + 2·C² + 2·C + 257) bytes of workgroup memory, plus
/// 4·D² with S_kk (D = 64: C = 32 with S_kk 42 KiB, without 26 KiB; C = 16 with 28 KiB, without
/// 11 KiB).
pub fn cg_plans(d: usize) -> Vec<(usize, bool)> {
    [32, 16, 8]
        .into_iter()
        .filter(|c| c * d <= 2048)
        .flat_map(|c| [(c, true), (c, false)])
        .collect()
}

/// How this context picks the Mesa CG kernel, in words (`chunkwise info`).
pub fn cg_rule(ctx: &crate::Context) -> String {
    if ctx.cpu_schedules() {
        return "mesa_cg_sg (8-lane subgroups) or mesa_cg_lanes up to D 64 at C = 16, mesa_cg \
                above; CG steps bounded by the CPU driver's loop limit"
            .into();
    }
    let order: Vec<String> = cg_plans(64).into_iter().map(plan_name).collect();
    let tuned = ctx.tuning().map_or(0, |t| t.classes("mesa_cg"));
    format!(
        "mesa_cg at the tuned plan of the head dim ({tuned} classes tuned), else the first of {} \
         (C·D ≤ 2048) the device's workgroup memory holds; segments of ≤ {GPU_CHUNKS_PER_PASS} \
         chunks",
        order.join(", ")
    )
}

/// A plan's name in the tune cache and check-case labels: `c32+skk` (C = 32, S_kk kept), `c16`.
pub fn plan_name((c, keep): (usize, bool)) -> String {
    format!("c{c}{}", if keep { "+skk" } else { "" })
}

/// The plan [`plan_name`] names.
pub fn parse_plan(name: &str) -> Option<(usize, bool)> {
    let (c, keep) = match name.strip_suffix("+skk") {
        Some(c) => (c, true),
        None => (name, false),
    };
    Some((c.strip_prefix('c')?.parse().ok()?, keep))
}

/// The plan the GPU schedule runs at on this device: the tuned choice for the head dim
/// (`chunkwise tune`) where the device grants its workgroup memory, else the first of
/// [`cg_plans`] it grants.
pub fn gpu_cg_plan(ctx: &crate::Context, d: usize, dtype: DType) -> Result<(usize, bool)> {
    let mut last = None;
    for plan in plans_to_try(ctx, d, dtype) {
        match ctx.kernel(&gpu_cg_key(dtype, d, plan)) {
            Ok(_) => return Ok(plan),
            Err(e @ Error::LimitExceeded { .. }) => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| Error::invalid("mesa", format!("no CG plan for head dim {d}"))))
}

/// The GPU schedule's plans in the order it tries them: the tuned one for the head dim (if it is a
/// plan at all), then [`cg_plans`] longest chunk first; the first the device holds runs.
fn plans_to_try(ctx: &crate::Context, d: usize, dtype: DType) -> Vec<(usize, bool)> {
    let tuned = crate::tune::mesa_plan(ctx, d, dtype).filter(|p| cg_plans(d).contains(p));
    tuned.into_iter().chain(cg_plans(d)).collect()
}

/// The GPU CG kernel at plan (C, S_kk kept).
fn gpu_cg_key(dtype: DType, d: usize, (c, keep): (usize, bool)) -> KernelKey {
    KernelKey::new("mesa.wgsl", "mesa_cg", dtype)
        .with("DIM", d as f64)
        .with("CH", c as f64)
        .with("SKK", if keep { (d * d) as f64 } else { 1.0 })
}

/// The CG kernel for this adapter, head dim, step count and rule. CPU schedules: `mesa_cg_sg`
/// (8-lane subgroups: rows shared by broadcast) for D a multiple of 4 up to 64, else
/// `mesa_cg_lanes` (one lane per position, 3.5× faster than `mesa_cg` on lavapipe at D = 64) for
/// D ≤ 64, each while it fits llvmpipe's loop budget, then `mesa_cg` at C = 16, then an error.
/// GPU schedule: `mesa_cg` at the tuned plan, else the first of [`cg_plans`] the device's
/// workgroup memory holds. `forced`: `mesa_cg` at that plan, whatever the schedule (checks and
/// `chunkwise tune`).
fn cg_kernel(
    ctx: &crate::Context,
    dtype: DType,
    d: usize,
    iters: usize,
    solver: Solver,
    forced: Option<(usize, bool)>,
) -> Result<CgPick> {
    if let Some(plan) = forced {
        if !cg_plans(d).contains(&plan) {
            return Err(Error::invalid(
                "mesa",
                format!(
                    "CG plan {} does not exist at head dim {d} (C·D must be at most 2048)",
                    plan_name(plan)
                ),
            ));
        }
        if ctx.is_cpu_adapter() && !within_cpu_budget("mesa_cg", d, plan.0, iters, solver) {
            return Err(too_many_cpu_iterations(
                &["mesa_cg"],
                d,
                plan.0,
                iters,
                solver,
            ));
        }
        return Ok(CgPick {
            kernel: ctx.kernel(&gpu_cg_key(dtype, d, plan))?,
            chunk: plan.0,
            lanes: false,
        });
    }
    let c = chunk_len(d);
    let key = |file, entry| {
        KernelKey::new(file, entry, dtype)
            .with("DIM", d as f64)
            .with("CH", c as f64)
    };
    let lanes = |kernel| -> Result<CgPick> {
        Ok(CgPick {
            kernel: ctx.kernel(&kernel)?,
            chunk: c,
            lanes: true,
        })
    };
    if ctx.cpu_schedules() {
        let sg = ctx.subgroup_size() == Some(8) && d.is_multiple_of(4) && d <= 64;
        // Only CPU drivers cut long loops short.
        let fits = |entry| !ctx.is_cpu_adapter() || within_cpu_budget(entry, d, c, iters, solver);
        if sg && fits("mesa_cg_sg") {
            return lanes(key("mesa_cg_sg.wgsl", "mesa_cg_sg"));
        }
        if d <= 64 && fits("mesa_cg_lanes") {
            return lanes(key("mesa.wgsl", "mesa_cg_lanes"));
        }
        if fits("mesa_cg") {
            return Ok(CgPick {
                kernel: ctx.kernel(&gpu_cg_key(dtype, d, (c, false)))?,
                chunk: c,
                lanes: false,
            });
        }
        let mut tried = vec!["mesa_cg"];
        if sg {
            tried.push("mesa_cg_sg");
        }
        if d <= 64 {
            tried.push("mesa_cg_lanes");
        }
        return Err(too_many_cpu_iterations(&tried, d, c, iters, solver));
    }
    let mut last = None;
    for plan in plans_to_try(ctx, d, dtype) {
        if ctx.is_cpu_adapter() && !within_cpu_budget("mesa_cg", d, plan.0, iters, solver) {
            last = Some(too_many_cpu_iterations(
                &["mesa_cg"],
                d,
                plan.0,
                iters,
                solver,
            ));
            continue;
        }
        match ctx.kernel(&gpu_cg_key(dtype, d, plan)) {
            Ok(kernel) => {
                return Ok(CgPick {
                    kernel,
                    chunk: plan.0,
                    lanes: false,
                })
            }
            // Too much workgroup memory for this device: the next plan asks for less.
            Err(e @ Error::LimitExceeded { .. }) => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| Error::invalid("mesa", format!("no CG plan for head dim {d}"))))
}

/// Largest CG iteration count accepted (a guard against absurd values).
pub const MAX_ITERS: usize = 1000;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    b: u32,
    t: u32,
    h: u32,
    iters: u32,
    n0: u32,
    nseg: u32,
    paper: u32,
    tol2: f32,
}

#[derive(Clone, Copy)]
struct Dims {
    b: usize,
    t: usize,
    h: usize,
    d: usize,
}

fn check(inp: &MesaInputs, st: &MesaState, iters: usize) -> Result<Dims> {
    let MesaInputs {
        q,
        k,
        v,
        g,
        beta,
        lamb,
    } = *inp;
    let Dims { b, t, h, d } = check_qkv(q, k, v, st, iters)?;
    for (name, x, want) in [
        ("g", g, vec![b, t, h]),
        ("beta", beta, vec![b, t, h]),
        ("lamb", lamb, vec![h, d]),
    ] {
        if x.shape() != want {
            return Err(Error::shape(
                "mesa",
                format!("{name} must be {want:?}, got {:?}", x.shape()),
            ));
        }
        if x.dtype() != DType::F32 {
            return Err(Error::DType {
                op: "mesa (gates and lambda)",
                expected: DType::F32,
                got: x.dtype(),
            });
        }
    }
    Ok(Dims { b, t, h, d })
}

/// q, k, v `[B, T, H, D]` of one dtype, states to match, an accepted iteration count.
fn check_qkv(q: &Tensor, k: &Tensor, v: &Tensor, st: &MesaState, iters: usize) -> Result<Dims> {
    super::same_dtype("mesa", &[q, k, v])?;
    let s = q.shape();
    if s.len() != 4 || k.shape() != s || v.shape() != s {
        return Err(Error::shape(
            "mesa",
            format!(
                "q, k, v must be [B, T, H, D]; got {s:?}, {:?}, {:?}",
                k.shape(),
                v.shape()
            ),
        ));
    }
    let (b, t, h, d) = (s[0], s[1], s[2], s[3]);
    if d == 0 || d > 128 {
        return Err(Error::invalid(
            "mesa",
            format!("head dim {d} is not supported (1 ..= 128)"),
        ));
    }
    let ss = [b, h, d, d];
    if st.kk.shape() != ss
        || st.kv.shape() != ss
        || st.kk.dtype() != DType::F32
        || st.kv.dtype() != DType::F32
    {
        return Err(Error::shape(
            "mesa",
            format!(
                "states must be f32 {ss:?}, got {:?} and {:?}",
                st.kk.shape(),
                st.kv.shape()
            ),
        ));
    }
    if iters > MAX_ITERS {
        return Err(Error::invalid(
            "mesa",
            format!("{iters} CG iterations is more than the {MAX_ITERS} accepted"),
        ));
    }
    Ok(Dims { b, t, h, d })
}

/// The chunkwise-parallel core op with the reference CG (`iters` steps): `o [B, T, H, D]`.
/// `state` holds the initial states and is advanced to the final ones.
pub fn core(
    rec: &mut Recording,
    inp: &MesaInputs,
    state: &MesaState,
    iters: usize,
) -> Result<Tensor> {
    Ok(core_with(rec, inp, state, iters, Solver::Reference)?.o)
}

/// The chunkwise-parallel core op with either CG rule (`iters` steps, or at most that many):
/// `o [B, T, H, D]` and the steps each row took. `state` holds the initial states and is advanced
/// to the final ones.
pub fn core_with(
    rec: &mut Recording,
    inp: &MesaInputs,
    state: &MesaState,
    iters: usize,
    solver: Solver,
) -> Result<Solved> {
    core_unpacked(rec, inp, state, iters, solver, None)
}

/// The core op on separate g, β, λ tensors: checked, packed into one gates buffer, run.
fn core_unpacked(
    rec: &mut Recording,
    inp: &MesaInputs,
    state: &MesaState,
    iters: usize,
    solver: Solver,
    plan: Option<(usize, bool)>,
) -> Result<Solved> {
    let dims = check(inp, state, iters)?;
    let gates = pack_gates(rec, inp.g, inp.beta, inp.lamb)?;
    let qkv_gates = [inp.q, inp.k, inp.v, &gates];
    core_impl(rec, qkv_gates, state, dims, iters, solver, plan)
}

/// The core op on inputs from [`seq_prep`]: q, k, v `[B, T, H, D]` and the gates buffer it
/// filled (`[g | β | λ | ..]`, common/mesa_gates.wgsl). `state` is advanced as in [`core_with`].
pub fn core_prepared(
    rec: &mut Recording,
    [q, k, v]: [&Tensor; 3],
    gates: &Tensor,
    state: &MesaState,
    iters: usize,
    solver: Solver,
) -> Result<Solved> {
    let dims = check_qkv(q, k, v, state, iters)?;
    let Dims { b, t, h, d } = dims;
    check_gates("mesa", gates, b * t * h, h * d)?;
    core_impl(rec, [q, k, v, gates], state, dims, iters, solver, None)
}

/// A packed gates buffer holds at least `[g (n) | β (n) | λ (λs)]`, f32.
fn check_gates(op: &'static str, gates: &Tensor, n: usize, lambdas: usize) -> Result<()> {
    if gates.dtype() != DType::F32 || gates.numel() < 2 * n + lambdas {
        return Err(Error::shape(
            op,
            format!(
                "need f32 gates of at least {} values (g and β of {n} token-heads, λ); got {:?} {:?}",
                2 * n + lambdas,
                gates.dtype(),
                gates.shape()
            ),
        ));
    }
    Ok(())
}

/// [`core_with`] with the GPU CG kernel at a forced plan (C, S_kk kept), on any schedule: what
/// the plan's check cases and `chunkwise tune` run. A plan the device cannot hold is
/// `Error::LimitExceeded`.
pub fn core_with_plan(
    rec: &mut Recording,
    inp: &MesaInputs,
    state: &MesaState,
    iters: usize,
    solver: Solver,
    plan: (usize, bool),
) -> Result<Solved> {
    core_unpacked(rec, inp, state, iters, solver, Some(plan))
}

/// The chunkwise core on checked inputs and a packed gates buffer.
fn core_impl(
    rec: &mut Recording,
    [q, k, v, gates]: [&Tensor; 4],
    state: &MesaState,
    Dims { b, t, h, d }: Dims,
    iters: usize,
    solver: Solver,
    plan: Option<(usize, bool)>,
) -> Result<Solved> {
    let ctx = rec.context().clone();
    let o = ctx.alloc(q.shape(), q.dtype())?;
    let iterations = ctx.alloc(&[b, t, h], DType::F32)?;
    if t == 0 || b == 0 {
        return Ok(Solved { o, iterations });
    }
    let cg = cg_kernel(&ctx, q.dtype(), d, iters, solver, plan)?;
    let c = cg.chunk;
    let chunks = t.div_ceil(c);
    // Chunk-start states for a segment of chunks at a time: bounded by the binding limit.
    let per_chunk = (b * h * 2 * d * d * 4) as u64;
    let limit = ctx.binding_limit();
    let max_groups = ctx.limits().max_compute_workgroups_per_dimension as usize;
    let mut nseg_max = ((limit / per_chunk) as usize).min(max_groups).min(chunks);
    if ctx.is_cpu_adapter() {
        // The states kernels walk a segment's chunks in one invocation (a chunk is at most the
        // C-token loop plus a few short ones): a segment stays within llvmpipe's loop limit.
        nseg_max = nseg_max.min(CPU_LOOP_BUDGET / (c + 10));
    }
    // GPUs too: the scan walks a segment's chunks in one invocation, and without a bound a long
    // sequence of a small state (the binding limit alone allows 65535 chunks) makes one dispatch
    // run for as long as the sequence is; OS watchdogs reset such a GPU.
    nseg_max = nseg_max.min(GPU_CHUNKS_PER_PASS);
    if nseg_max == 0 {
        return Err(Error::LimitExceeded {
            what: format!("mesa chunk-start states for B={b}, H={h}, D={d}"),
            requested: per_chunk,
            limit_name: "max_storage_buffer_binding_size",
            limit,
        });
    }
    let bh = check_u32("mesa", b * h)?;
    let starts = ctx.alloc(&[b * h, nseg_max, 2, d, d], DType::F32)?;
    let key = |file, entry| {
        KernelKey::new(file, entry, q.dtype())
            .with("DIM", d as f64)
            .with("CH", c as f64)
    };
    // The states: on CPU adapters in 4×4 blocks per invocation walking the chunks (16× fewer
    // load instructions per token; Mesa's forward at T = 4096 on lavapipe 605 → 445 ms), else
    // every chunk's update at once and a scan over the chunks.
    let rows = ctx.cpu_schedules() && d % 4 == 0;
    let (updates, scan, decays) = if rows {
        (None, None, None)
    } else {
        (
            Some(ctx.kernel(&key("mesa.wgsl", "mesa_chunk_updates"))?),
            Some(ctx.kernel(&key("mesa.wgsl", "mesa_scan"))?),
            Some(ctx.alloc(&[b * h, nseg_max], DType::F32)?),
        )
    };
    let k_rows = if rows {
        Some(ctx.kernel(&key("mesa_states_rows.wgsl", "mesa_states_rows"))?)
    } else {
        None
    };
    let (paper, tol2) = solver.params();
    let mut n0 = 0;
    while n0 < chunks {
        let nseg = nseg_max.min(chunks - n0);
        let params = Params {
            b: b as u32,
            t: check_u32("mesa", t)?,
            h: h as u32,
            iters: iters as u32,
            n0: n0 as u32,
            nseg: nseg as u32,
            paper,
            tol2,
        };
        let pb = bytemuck::bytes_of(&params);
        match (&k_rows, &updates, &scan, &decays) {
            (Some(kr), _, _, _) => rec.dispatch(
                kr,
                pb,
                &[k, v, gates, &starts, &state.kk, &state.kv],
                [(d / 4 * (d / 4)).div_ceil(64) as u32, bh, 1],
            )?,
            (None, Some(ku), Some(ks), Some(dec)) => {
                let tiles = d.div_ceil(64) * (2 * d).div_ceil(64);
                rec.dispatch(
                    ku,
                    pb,
                    &[k, v, gates, &starts, dec],
                    [tiles as u32, nseg as u32, bh],
                )?;
                let elems = (b * h * 2 * d * d) as u64;
                let groups = super::grid_1d(&ctx, "mesa scan", elems.div_ceil(64))?;
                rec.dispatch(ks, pb, &[&starts, &state.kk, &state.kv, dec], groups)?;
            }
            _ => unreachable!("one states schedule is prepared"),
        }
        rec.dispatch(
            &cg.kernel,
            pb,
            &[q, k, v, gates, &starts, &o, &iterations],
            [nseg as u32, bh, 1],
        )?;
        n0 += nseg;
    }
    debug_assert!(cg.lanes || !ctx.cpu_schedules() || c == chunk_len(d) || plan.is_some());
    Ok(Solved { o, iterations })
}

/// `g`, `beta` and `lamb` in the one buffer every Mesa kernel reads them from,
/// `[g (B·T·H) | β (B·T·H) | λ (H·D)]` (shaders/common/mesa_gates.wgsl): one binding instead of
/// three keeps the kernels within WebGPU's default 8 storage buffers per stage. The copies move
/// 2·B·T·H + H·D floats, nothing next to the kernels' D² work per token.
fn pack_gates(rec: &mut Recording, g: &Tensor, beta: &Tensor, lamb: &Tensor) -> Result<Tensor> {
    let (n, l) = (g.numel() as u64, lamb.numel() as u64);
    let gates = rec.context().alloc(&[(2 * n + l) as usize], DType::F32)?;
    rec.copy_region(g, 0, &gates, 0, n)?;
    rec.copy_region(beta, 0, &gates, n, n)?;
    rec.copy_region(lamb, 0, &gates, 2 * n, l)?;
    Ok(gates)
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct DecodeParams {
    b: u32,
    h: u32,
    iters: u32,
    paper: u32,
    tol2: f32,
    _p: [u32; 3],
}

/// One decode token per sequence (inputs with T = 1) with the reference CG: updates `state` in
/// place and returns `o [B, 1, H, D]` (Jacobi-started CG, spec §7). Any batch size.
pub fn decode_step(
    rec: &mut Recording,
    inp: &MesaInputs,
    state: &MesaState,
    iters: usize,
) -> Result<Tensor> {
    Ok(decode_step_with(rec, inp, state, iters, Solver::Reference)?.o)
}

/// [`decode_step`] with either CG rule; also returns the steps each (batch, head) took, `[B, 1, H]`.
pub fn decode_step_with(
    rec: &mut Recording,
    inp: &MesaInputs,
    state: &MesaState,
    iters: usize,
    solver: Solver,
) -> Result<Solved> {
    let Dims { b, t, h, d } = check(inp, state, iters)?;
    let MesaInputs {
        q,
        k,
        v,
        g,
        beta,
        lamb,
    } = *inp;
    if t != 1 {
        return Err(Error::shape(
            "mesa decode",
            format!("one token per sequence expected, got T = {t}"),
        ));
    }
    let gates = pack_gates(rec, g, beta, lamb)?;
    decode_launch(
        rec,
        [q, k, v, &gates],
        state,
        Dims { b, t, h, d },
        iters,
        solver,
    )
}

/// The decode kernel over q, k, v `[B, 1, H, D]` and a packed gates buffer (common/mesa_gates.wgsl),
/// shapes already checked.
fn decode_launch(
    rec: &mut Recording,
    [q, k, v, gates]: [&Tensor; 4],
    state: &MesaState,
    Dims { b, h, d, .. }: Dims,
    iters: usize,
    solver: Solver,
) -> Result<Solved> {
    let ctx = rec.context().clone();
    // CPU adapters: one invocation per (batch, head) (shaders/mesa_decode_lanes.wgsl) for D a
    // multiple of 4 up to 64 while it fits the loop budget, then mesa_decode, then an error.
    let lanes = ctx.cpu_schedules()
        && d % 4 == 0
        && d <= 64
        && ctx.variant_allowed("mesa_decode_lanes.wgsl", "mesa_decode_lanes");
    let fits = |entry| !ctx.is_cpu_adapter() || within_cpu_budget(entry, d, 16, iters, solver);
    let (file, entry, groups) = if lanes && fits("mesa_decode_lanes") {
        (
            "mesa_decode_lanes.wgsl",
            "mesa_decode_lanes",
            (b * h).div_ceil(8),
        )
    } else if fits("mesa_decode") {
        if ctx.subgroups_enabled() {
            ("mesa_decode_sg.wgsl", "mesa_decode_sg", b * h)
        } else {
            ("mesa_decode.wgsl", "mesa_decode", b * h)
        }
    } else {
        let mut tried = vec!["mesa_decode"];
        if lanes {
            tried.push("mesa_decode_lanes");
        }
        return Err(too_many_cpu_iterations(&tried, d, 16, iters, solver));
    };
    let o = ctx.alloc(q.shape(), q.dtype())?;
    let iterations = ctx.alloc(&[b, 1, h], DType::F32)?;
    let (paper, tol2) = solver.params();
    let params = DecodeParams {
        b: b as u32,
        h: h as u32,
        iters: iters as u32,
        paper,
        tol2,
        _p: [0; 3],
    };
    let kernel = ctx.kernel(&KernelKey::new(file, entry, q.dtype()).with("DIM", d as f64))?;
    rec.dispatch(
        &kernel,
        bytemuck::bytes_of(&params),
        &[q, k, v, gates, &state.kk, &state.kv, &o, &iterations],
        [check_u32("mesa", groups)?, 1, 1],
    )?;
    Ok(Solved { o, iterations })
}

fn check_conv_weight(w: &Tensor, c: usize) -> Result<()> {
    if w.shape() != [c, 1, 4] {
        return Err(Error::shape(
            "mesa short conv",
            format!("weight must be [{c}, 1, 4], got {:?}", w.shape()),
        ));
    }
    Ok(())
}

/// Where a Mesa layer's inputs sit in its fused projection rows (`[B, T, ld]`): q at column 0,
/// k at H·D, v at 2·H·D, the gate g (gated layers) at `g_col`, a at `a_col` and b at
/// `a_col + H`.
#[derive(Clone, Copy, Debug)]
pub struct StepLayout {
    pub heads: usize,
    pub head_dim: usize,
    pub a_col: usize,
    pub g_col: Option<usize>,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct StepParams {
    b: u32,
    h: u32,
    d: u32,
    ld: u32,
    a_col: u32,
    g_col: u32,
    eps: f32,
    t: u32,
}

impl StepLayout {
    /// The kernel parameters for `proj [B, T, ld]` (`b` = B, `t` = T), after checking that the
    /// layout fits its rows; returns them with B and T.
    fn params(
        &self,
        op: &'static str,
        proj: &Tensor,
        eps: f32,
    ) -> Result<(StepParams, usize, usize)> {
        let (h, d) = (self.heads, self.head_dim);
        let s = proj.shape();
        let ld = proj.last_dim();
        let end = [
            3 * h * d,
            self.a_col + 2 * h,
            self.g_col.map_or(0, |g| g + h * d),
        ];
        if s.len() != 3 || h == 0 || d == 0 || d > 128 || end.iter().any(|&e| e > ld) {
            return Err(Error::shape(
                op,
                format!(
                    "projection {s:?} must be [B, T, ld] holding q, k, v ({h} heads of {d}, \
                     head dim 1 ..= 128), a at {}, g at {:?}",
                    self.a_col, self.g_col
                ),
            ));
        }
        let (b, t) = (s[0], s[1]);
        let p = StepParams {
            b: check_u32(op, b)?,
            h: h as u32,
            d: d as u32,
            ld: check_u32(op, ld)?,
            a_col: check_u32(op, self.a_col)?,
            g_col: self.g_col.map_or(Ok(u32::MAX), |g| check_u32(op, g))?,
            eps,
            t: check_u32(op, t)?,
        };
        Ok((p, b, t))
    }

    /// Both conv weights `[H·D, 1, 4]`, a conv cache `[b, 2·H·D, 4]` of the projection's dtype,
    /// and f32 gates for `n` tokens ([`step_gates`]).
    fn check_prep(
        &self,
        op: &'static str,
        proj: &Tensor,
        [q_conv, k_conv]: [&Tensor; 2],
        conv: &Tensor,
        gates: &Tensor,
        (b, n): (usize, usize),
    ) -> Result<()> {
        let (h, d) = (self.heads, self.head_dim);
        super::same_dtype(op, &[proj, q_conv, k_conv, conv])?;
        check_conv_weight(q_conv, h * d)?;
        check_conv_weight(k_conv, h * d)?;
        let want = 2 * n * h + h * d + 2 * h;
        if conv.shape() != [b, 2 * h * d, 4] || gates.dtype() != DType::F32 || gates.numel() != want
        {
            return Err(Error::shape(
                op,
                format!(
                    "need the conv cache [{b}, {}, 4] and f32 gates of {want} values; got {:?} and {:?}",
                    2 * h * d,
                    conv.shape(),
                    gates.shape()
                ),
            ));
        }
        Ok(())
    }
}

/// The gates buffer that [`step_prep`] (`n` = B sequences) or [`seq_prep`] (`n` = B·T tokens)
/// fills: `[g (n·H) | β (n·H) | λ (H·D) | a_bias (H) | b_bias (H)]`, f32. The tail (`lamb
/// [H, D]`, `bias [2H]` = a's then b's) is copied here once; the prep kernels write the head.
pub fn step_gates(rec: &mut Recording, n: usize, lamb: &Tensor, bias: &Tensor) -> Result<Tensor> {
    let (h, d) = match lamb.shape() {
        &[h, d] => (h, d),
        other => {
            return Err(Error::shape(
                "mesa step gates",
                format!("lambda must be [H, D], got {other:?}"),
            ))
        }
    };
    if bias.shape() != [2 * h] || lamb.dtype() != DType::F32 || bias.dtype() != DType::F32 {
        return Err(Error::shape(
            "mesa step gates",
            format!(
                "need f32 lambda [H, D] and biases [2H]; got {:?} {:?} and {:?} {:?}",
                lamb.dtype(),
                lamb.shape(),
                bias.dtype(),
                bias.shape()
            ),
        ));
    }
    let nh = (n * h) as u64;
    let gates = rec
        .context()
        .alloc(&[2 * n * h + h * d + 2 * h], DType::F32)?;
    rec.copy_region(lamb, 0, &gates, 2 * nh, (h * d) as u64)?;
    rec.copy_region(bias, 0, &gates, 2 * nh + (h * d) as u64, 2 * h as u64)?;
    Ok(gates)
}

/// A decode step's inputs from the fused projection `proj [B, 1, ld]` ([`StepLayout`]), in one
/// dispatch (shaders/mesa_step.wgsl): q and k through the short conv (cache `conv [B, 2·H·D, 4]`,
/// q's channels then k's, updated in place) and SiLU, L2-normalised per head; v; and the gates
/// written into `gates` ([`step_gates`] for B). Returns q, k, v `[B, 1, H, D]`.
pub fn step_prep(
    rec: &mut Recording,
    proj: &Tensor,
    layout: StepLayout,
    conv_w: [&Tensor; 2],
    conv: &Tensor,
    gates: &Tensor,
) -> Result<[Tensor; 3]> {
    let op = "mesa step";
    let (params, b, t) = layout.params(op, proj, 1e-6)?;
    if t != 1 {
        return Err(Error::shape(
            op,
            format!("one token per sequence expected, got T = {t} (seq_prep takes a block)"),
        ));
    }
    layout.check_prep(op, proj, conv_w, conv, gates, (b, b))?;
    prep_launch(
        rec,
        "mesa_step_prep",
        proj,
        params,
        layout,
        conv_w,
        conv,
        gates,
    )
}

/// [`step_prep`] for a block of T tokens per sequence, `proj [B, T, ld]` (the parallel path):
/// the convolution reads the block's earlier tokens and, before its start, the inputs `conv`
/// holds (zeros for new sequences), and leaves `conv` as it is ([`conv_advance`] moves it on).
/// `gates`: [`step_gates`] for B·T. Returns q, k, v `[B, T, H, D]`, one dispatch.
pub fn seq_prep(
    rec: &mut Recording,
    proj: &Tensor,
    layout: StepLayout,
    conv_w: [&Tensor; 2],
    conv: &Tensor,
    gates: &Tensor,
) -> Result<[Tensor; 3]> {
    let op = "mesa prep";
    let (params, b, t) = layout.params(op, proj, 1e-6)?;
    layout.check_prep(op, proj, conv_w, conv, gates, (b, b * t))?;
    // CPU adapters: an invocation per (token, head), no barriers (shaders/mesa_step.wgsl).
    let entry = if rec.context().cpu_schedules() {
        "mesa_seq_prep_rows"
    } else {
        "mesa_seq_prep"
    };
    prep_launch(rec, entry, proj, params, layout, conv_w, conv, gates)
}

#[allow(clippy::too_many_arguments)] // the kernel's bindings, each checked by its caller
fn prep_launch(
    rec: &mut Recording,
    entry: &'static str,
    proj: &Tensor,
    params: StepParams,
    layout: StepLayout,
    [q_conv, k_conv]: [&Tensor; 2],
    conv: &Tensor,
    gates: &Tensor,
) -> Result<[Tensor; 3]> {
    let s = proj.shape();
    let (h, d) = (layout.heads, layout.head_dim);
    let ctx = rec.context().clone();
    let out = || ctx.alloc(&[s[0], s[1], h, d], proj.dtype());
    let (q, k, v) = (out()?, out()?, out()?);
    let kernel = ctx.kernel(&KernelKey::new("mesa_step.wgsl", entry, proj.dtype()))?;
    let n = (s[0] * s[1] * h) as u64;
    let per_group = if entry.ends_with("_rows") { 64 } else { 1 };
    let groups = super::grid_1d(&ctx, entry, n.div_ceil(per_group))?;
    rec.dispatch(
        &kernel,
        bytemuck::bytes_of(&params),
        &[proj, q_conv, k_conv, conv, gates, &q, &k, &v],
        groups,
    )?;
    Ok([q, k, v])
}

/// After [`seq_prep`] of `proj [B, T, ld]`: the conv cache `[B, 2·H·D, 4]` ← the last 4
/// pre-activation q and k inputs (older entries shifted in where T < 4). One dispatch.
pub fn conv_advance(
    rec: &mut Recording,
    proj: &Tensor,
    layout: StepLayout,
    conv: &Tensor,
) -> Result<()> {
    let op = "mesa conv cache";
    let (params, b, _) = layout.params(op, proj, 0.0)?;
    let c2 = 2 * layout.heads * layout.head_dim;
    super::same_dtype(op, &[proj, conv])?;
    if conv.shape() != [b, c2, 4] {
        return Err(Error::shape(
            op,
            format!("cache must be [{b}, {c2}, 4], got {:?}", conv.shape()),
        ));
    }
    let ctx = rec.context().clone();
    let kernel = ctx.kernel(&KernelKey::new(
        "mesa_step.wgsl",
        "mesa_conv_advance",
        proj.dtype(),
    ))?;
    let groups = super::grid_1d(&ctx, op, ((b * c2) as u64).div_ceil(64))?;
    rec.dispatch(&kernel, bytemuck::bytes_of(&params), &[proj, conv], groups)
}

/// The output projection's input after a solve's `o [B, T, H, D]`: per-head RMSNorm with
/// `o_norm [D]` (epsilon `eps`), times silu(g) read in place from `proj [B, T, ld]` on gated
/// layers ([`StepLayout::g_col`]). One dispatch (shaders/mesa_step.wgsl); returns `[B, T, H·D]`.
pub fn step_out(
    rec: &mut Recording,
    o: &Tensor,
    o_norm: &Tensor,
    eps: f32,
    proj: &Tensor,
    layout: StepLayout,
) -> Result<Tensor> {
    let op = "mesa output";
    let (mut params, b, t) = layout.params(op, proj, eps)?;
    let (h, d) = (layout.heads, layout.head_dim);
    super::same_dtype(op, &[o, o_norm, proj])?;
    if o.shape() != [b, t, h, d] || o_norm.shape() != [d] {
        return Err(Error::shape(
            op,
            format!(
                "need o [{b}, {t}, {h}, {d}] and o_norm [{d}]; got {:?} and {:?}",
                o.shape(),
                o_norm.shape()
            ),
        ));
    }
    // The kernel walks rows: B·T of them.
    params.b = check_u32(op, b * t)?;
    let ctx = rec.context().clone();
    let y = ctx.alloc(&[b, t, h * d], o.dtype())?;
    // CPU adapters: an invocation per (token, head), no barriers (shaders/mesa_step.wgsl).
    let (entry, per_group) = if ctx.cpu_schedules() {
        ("mesa_step_out_rows", 64)
    } else {
        ("mesa_step_out", 1)
    };
    let kernel = ctx.kernel(&KernelKey::new("mesa_step.wgsl", entry, o.dtype()))?;
    let groups = super::grid_1d(&ctx, op, ((b * t * h) as u64).div_ceil(per_group))?;
    rec.dispatch(
        &kernel,
        bytemuck::bytes_of(&params),
        &[proj, o, o_norm, &y],
        groups,
    )?;
    Ok(y)
}

/// The decode step on inputs from [`step_prep`]: q, k, v `[B, 1, H, D]` and the gates buffer it
/// filled. Updates `state` in place, as [`decode_step_with`].
pub fn decode_step_prepared(
    rec: &mut Recording,
    [q, k, v]: [&Tensor; 3],
    gates: &Tensor,
    state: &MesaState,
    iters: usize,
    solver: Solver,
) -> Result<Solved> {
    let dims = check_qkv(q, k, v, state, iters)?;
    let Dims { b, t, h, d } = dims;
    if t != 1 {
        return Err(Error::shape(
            "mesa decode",
            format!("q must be [B, 1, H, D], got {:?}", q.shape()),
        ));
    }
    check_gates("mesa decode", gates, b * h, h * d)?;
    decode_launch(rec, [q, k, v, gates], state, dims, iters, solver)
}
