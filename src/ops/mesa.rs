//! The Mesa core op (spec/mesa.md): chunkwise-parallel forward with the reference conjugate
//! gradient, and the recurrent decode step.
//!
//! Chunk length: the result does not depend on it (spec §5), so it is chosen to fit workgroup
//! memory. A CG workgroup keeps the direction p and the chunk's keys, C × D each, plus two C × C
//! matrices, in workgroup memory; C · D ≤ 1024 (C = 16 for D ≤ 64, else 8) keeps that under
//! 10 KiB, inside the 16 KiB every WebGPU adapter guarantees. The D × D chunk-start states stay in
//! global memory, where every CG iteration re-reads them (they are cache-resident on GPUs).

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

/// Chunk length used for head dim `d` (see the module comment).
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

/// Counted loop iterations per CG iteration of each CG kernel, if none of its loops unrolled.
/// `mesa_cg` measured on lavapipe: right up to 190 iterations at D = 64 and 80 at D = 128, wrong
/// from 200 and 100 (the estimate admits 123 and 62).
fn loops_per_cg_iteration(entry: &str, d: usize) -> usize {
    match entry {
        "mesa_cg_sg" => 2 * chunk_len(d) + 6 * d / 4 + 8,
        "mesa_cg_lanes" => d * d / 8 + 4 * d + 16,
        "mesa_decode" => 4 * d + 8,
        // The loop over rows in each product and four vector loops (the row loops are written out).
        "mesa_decode_lanes" => 6 * d / 4 + 8,
        _ => 6 * d + 16,
    }
}

fn within_cpu_budget(entry: &str, d: usize, iters: usize) -> bool {
    iters * loops_per_cg_iteration(entry, d) + 8 * d <= CPU_LOOP_BUDGET
}

/// The refusal when no CG kernel can run `iters` iterations on a CPU adapter.
fn too_many_cpu_iterations(entries: &[&str], d: usize, iters: usize) -> Error {
    let limit = entries
        .iter()
        .map(|e| CPU_LOOP_BUDGET.saturating_sub(8 * d) / loops_per_cg_iteration(e, d))
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

/// The CG kernel for this adapter, head dim and iteration count: (file, entry point). CPU drivers
/// with 8-lane subgroups take `mesa_cg_sg` (shaders/mesa_cg_sg.wgsl: rows shared by subgroup
/// broadcast) for D a multiple of 4 up to 64; other CPU adapters `mesa_cg_lanes` (one lane per
/// position, 3.5× faster than `mesa_cg` on lavapipe at D = 64) for D ≤ 64; each while it fits the
/// loop budget, then `mesa_cg`, then an error. GPUs take `mesa_cg`.
pub(crate) fn cg_kernel(
    ctx: &crate::Context,
    d: usize,
    iters: usize,
) -> Result<(&'static str, &'static str)> {
    let sched = ctx.cpu_schedules();
    let sg = sched && ctx.subgroup_size() == Some(8) && d.is_multiple_of(4) && d <= 64;
    let lanes = sched && d <= 64;
    // Only CPU drivers cut long loops short.
    let fits = |entry| !ctx.is_cpu_adapter() || within_cpu_budget(entry, d, iters);
    if sg && fits("mesa_cg_sg") {
        Ok(("mesa_cg_sg.wgsl", "mesa_cg_sg"))
    } else if lanes && fits("mesa_cg_lanes") {
        Ok(("mesa.wgsl", "mesa_cg_lanes"))
    } else if fits("mesa_cg") {
        Ok(("mesa.wgsl", "mesa_cg"))
    } else {
        let mut tried = vec!["mesa_cg"];
        if sg {
            tried.push("mesa_cg_sg");
        }
        if lanes {
            tried.push("mesa_cg_lanes");
        }
        Err(too_many_cpu_iterations(&tried, d, iters))
    }
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
    _p: [u32; 2],
}

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

/// The chunkwise-parallel core op: `o [B, T, H, D]`. `state` holds the initial states and is
/// advanced to the final ones.
pub fn core(
    rec: &mut Recording,
    inp: &MesaInputs,
    state: &MesaState,
    iters: usize,
) -> Result<Tensor> {
    let Dims { b, t, h, d } = check(inp, state, iters)?;
    let MesaInputs {
        q,
        k,
        v,
        g,
        beta,
        lamb,
    } = *inp;
    let ctx = rec.context().clone();
    let o = ctx.alloc(q.shape(), q.dtype())?;
    if t == 0 || b == 0 {
        return Ok(o);
    }
    let c = chunk_len(d);
    let chunks = t.div_ceil(c);
    // Chunk-start states for a segment of chunks at a time: bounded by the binding limit.
    let per_chunk = (b * h * d * d * 4) as u64;
    let limit = ctx.limits().max_storage_buffer_binding_size;
    let max_groups = ctx.limits().max_compute_workgroups_per_dimension as usize;
    let mut nseg_max = ((limit / per_chunk) as usize).min(max_groups).min(chunks);
    if ctx.is_cpu_adapter() {
        // The states kernels walk a segment's chunks in one invocation (a chunk is the C-token
        // loop plus a few short ones): a segment stays within llvmpipe's loop limit.
        nseg_max = nseg_max.min(CPU_LOOP_BUDGET / (c + 10));
    }
    if nseg_max == 0 {
        return Err(Error::LimitExceeded {
            what: format!("mesa chunk-start states for B={b}, H={h}, D={d}"),
            requested: per_chunk,
            limit_name: "max_storage_buffer_binding_size",
            limit,
        });
    }
    let bh = check_u32("mesa", b * h)?;
    let starts_kk = ctx.alloc(&[b * h, nseg_max, d, d], DType::F32)?;
    let starts_kv = ctx.alloc(&[b * h, nseg_max, d, d], DType::F32)?;
    let key = |file, entry| {
        KernelKey::new(file, entry, q.dtype())
            .with("DIM", d as f64)
            .with("CH", c as f64)
    };
    // CPU adapters walk the states in 4×4 blocks per invocation (shaders/mesa_states_rows.wgsl:
    // 16× fewer load instructions per token; Mesa's forward at T = 4096 on lavapipe 605 → 445 ms).
    let (k_states, states_groups) = if ctx.cpu_schedules() && d % 4 == 0 {
        let blocks = (d / 4) * (d / 4);
        (
            ctx.kernel(&key("mesa_states_rows.wgsl", "mesa_states_rows"))?,
            blocks.div_ceil(64),
        )
    } else {
        (
            ctx.kernel(&key("mesa.wgsl", "mesa_states"))?,
            (d * d).div_ceil(256),
        )
    };
    let (cg_file, cg_entry) = cg_kernel(&ctx, d, iters)?;
    let k_cg = ctx.kernel(&key(cg_file, cg_entry))?;
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
            _p: [0; 2],
        };
        rec.dispatch(
            &k_states,
            bytemuck::bytes_of(&params),
            &[k, v, g, beta, &starts_kk, &starts_kv, &state.kk, &state.kv],
            [states_groups as u32, bh, 1],
        )?;
        rec.dispatch(
            &k_cg,
            bytemuck::bytes_of(&params),
            &[q, k, v, g, beta, lamb, &starts_kk, &starts_kv, &o],
            [nseg as u32, bh, 1],
        )?;
        n0 += nseg;
    }
    Ok(o)
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct DecodeParams {
    b: u32,
    h: u32,
    iters: u32,
    _p: u32,
}

/// One decode token per sequence (inputs with T = 1): updates `state` in place and returns
/// `o [B, 1, H, D]` (Jacobi-started CG, spec §7). Any batch size.
pub fn decode_step(
    rec: &mut Recording,
    inp: &MesaInputs,
    state: &MesaState,
    iters: usize,
) -> Result<Tensor> {
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
    let ctx = rec.context().clone();
    // CPU adapters: one invocation per (batch, head) (shaders/mesa_decode_lanes.wgsl) for D a
    // multiple of 4 up to 64 while it fits the loop budget, then mesa_decode, then an error.
    let lanes = ctx.cpu_schedules() && d % 4 == 0 && d <= 64;
    let fits = |entry| !ctx.is_cpu_adapter() || within_cpu_budget(entry, d, iters);
    let (file, entry, groups) = if lanes && fits("mesa_decode_lanes") {
        (
            "mesa_decode_lanes.wgsl",
            "mesa_decode_lanes",
            (b * h).div_ceil(8),
        )
    } else if fits("mesa_decode") {
        ("mesa_decode.wgsl", "mesa_decode", b * h)
    } else {
        let mut tried = vec!["mesa_decode"];
        if lanes {
            tried.push("mesa_decode_lanes");
        }
        return Err(too_many_cpu_iterations(&tried, d, iters));
    };
    let o = ctx.alloc(q.shape(), q.dtype())?;
    let params = DecodeParams {
        b: b as u32,
        h: h as u32,
        iters: iters as u32,
        _p: 0,
    };
    let kernel = ctx.kernel(&KernelKey::new(file, entry, q.dtype()).with("DIM", d as f64))?;
    rec.dispatch(
        &kernel,
        bytemuck::bytes_of(&params),
        &[q, k, v, g, beta, lamb, &state.kk, &state.kv, &o],
        [check_u32("mesa", groups)?, 1, 1],
    )?;
    Ok(o)
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct PrepParams {
    b: u32,
    t: u32,
    c: u32,
    d: u32,
    eps: f32,
    _p: [u32; 3],
}

fn prep_params(
    op: &'static str,
    x: &Tensor,
    d: usize,
    eps: f32,
) -> Result<(PrepParams, usize, usize, usize)> {
    let s = x.shape();
    if s.len() != 3 {
        return Err(Error::shape(op, format!("x must be [B, T, C], got {s:?}")));
    }
    let (b, t, c) = (s[0], s[1], s[2]);
    let p = PrepParams {
        b: check_u32(op, b)?,
        t: check_u32(op, t)?,
        c: check_u32(op, c)?,
        d: d as u32,
        eps,
        _p: [0; 3],
    };
    Ok((p, b, t, c))
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

/// Causal depthwise convolution (kernel 4, zero history) then SiLU, over `x [B, T, C]`.
pub fn short_conv(rec: &mut Recording, x: &Tensor, w: &Tensor) -> Result<Tensor> {
    let (params, b, t, c) = prep_params("mesa short conv", x, 1, 0.0)?;
    check_conv_weight(w, c)?;
    let ctx = rec.context().clone();
    let y = ctx.alloc(x.shape(), x.dtype())?;
    let kernel = ctx.kernel(&KernelKey::new("mesa_prep.wgsl", "short_conv", x.dtype()))?;
    let groups = super::grid_1d(&ctx, "mesa short conv", ((b * t * c) as u64).div_ceil(256))?;
    rec.dispatch(&kernel, bytemuck::bytes_of(&params), &[x, w, &y], groups)?;
    Ok(y)
}

/// After a prefill over `x [B, T, C]`: `cache [B, C, 4]` ← the last 4 inputs (zeros before the start).
pub fn conv_cache_fill(rec: &mut Recording, x: &Tensor, cache: &Tensor) -> Result<()> {
    let (params, b, _, c) = prep_params("mesa conv cache", x, 1, 0.0)?;
    if cache.shape() != [b, c, 4] {
        return Err(Error::shape(
            "mesa conv cache",
            format!("cache must be [{b}, {c}, 4], got {:?}", cache.shape()),
        ));
    }
    let ctx = rec.context().clone();
    let kernel = ctx.kernel(&KernelKey::new(
        "mesa_prep.wgsl",
        "conv_cache_fill",
        x.dtype(),
    ))?;
    let groups = super::grid_1d(&ctx, "mesa conv cache", ((b * c * 4) as u64).div_ceil(256))?;
    rec.dispatch(&kernel, bytemuck::bytes_of(&params), &[x, cache], groups)
}

/// One token `x [B, 1, C]` through the conv cache `[B, C, 4]` (updated in place), then SiLU.
pub fn conv_step(rec: &mut Recording, x: &Tensor, w: &Tensor, cache: &Tensor) -> Result<Tensor> {
    let (params, b, t, c) = prep_params("mesa conv step", x, 1, 0.0)?;
    check_conv_weight(w, c)?;
    if t != 1 || cache.shape() != [b, c, 4] {
        return Err(Error::shape(
            "mesa conv step",
            format!(
                "need x [B, 1, C] and cache [B, C, 4]; got {:?}, {:?}",
                x.shape(),
                cache.shape()
            ),
        ));
    }
    let ctx = rec.context().clone();
    let y = ctx.alloc(x.shape(), x.dtype())?;
    let kernel = ctx.kernel(&KernelKey::new("mesa_prep.wgsl", "conv_step", x.dtype()))?;
    let groups = super::grid_1d(&ctx, "mesa conv step", ((b * c) as u64).div_ceil(256))?;
    rec.dispatch(
        &kernel,
        bytemuck::bytes_of(&params),
        &[x, w, cache, &y],
        groups,
    )?;
    Ok(y)
}

/// `x / sqrt(Σ x² + eps)` over every `d` consecutive values of `x [B, T, C]` (per head).
pub fn l2norm(rec: &mut Recording, x: &Tensor, d: usize, eps: f32) -> Result<Tensor> {
    let (params, b, t, c) = prep_params("l2norm", x, d, eps)?;
    if d == 0 || c % d != 0 {
        return Err(Error::shape(
            "l2norm",
            format!("head dim {d} does not divide {c} channels"),
        ));
    }
    let ctx = rec.context().clone();
    let y = ctx.alloc(x.shape(), x.dtype())?;
    let kernel = ctx.kernel(&KernelKey::new("mesa_prep.wgsl", "l2norm", x.dtype()))?;
    let groups = super::grid_1d(&ctx, "l2norm", ((b * t * c / d) as u64).div_ceil(256))?;
    rec.dispatch(&kernel, bytemuck::bytes_of(&params), &[x, &y], groups)?;
    Ok(y)
}
