// One Mesa decode step (spec/mesa.md §7) for one token per sequence, for GPUs: one workgroup per
// (batch, head), invocation j owns column j. The states are updated in place, and column j of the
// updated S_kk stays in the invocation's registers for the whole solve (it is read D times per CG
// step); the CG runs from the Jacobi guess x0 = q / (diag(H) + λ (+ 1e-5 under the reference
// rule)) with the rule of common/cg_rule.wgsl, then o = G_tᵀ x. The direction p is shared through
// workgroup memory. The workgroup is WG invocations (DIM rounded up to 64: whole subgroups on
// every GPU); those past DIM hold zeros and store nothing. The including file (mesa_decode.wgsl,
// mesa_decode_sg.wgsl) defines dot_all(x, lid): the sum of x over the workgroup.

#include "common/cg_rule.wgsl"

struct Params {
    b: u32,
    h: u32,
    iters: u32,
    paper: u32,
    tol2: f32,
    _p0: u32,
    _p1: u32,
    _p2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<ST>;     // [B, H, D]
@group(0) @binding(2) var<storage, read> k: array<ST>;     // [B, H, D]
@group(0) @binding(3) var<storage, read> v: array<ST>;     // [B, H, D]
@group(0) @binding(4) var<storage, read> gates: array<f32>; // g, β [B, H], λ (common/mesa_gates.wgsl)
@group(0) @binding(7) var<storage, read_write> state_kk: array<f32>; // [B, H, D, D]
@group(0) @binding(8) var<storage, read_write> state_kv: array<f32>;
@group(0) @binding(9) var<storage, read_write> o: array<ST>; // [B, H, D]
@group(0) @binding(10) var<storage, read_write> iters_out: array<f32>; // [B, H] CG steps run

override DIM: u32 = 64u;

#include "common/mesa_gates.wgsl"

fn gate_count() -> u32 {
    return p.b * p.h;
}
override WG: u32 = (DIM + 63u) / 64u * 64u;
const MAX_D: u32 = 128u;

var<workgroup> pv: array<f32, MAX_D>;
var<workgroup> still: u32;
var<private> col: array<f32, MAX_D>; // column j of S_kk

// (H p)_j + λ_j p_j with p in workgroup memory.
fn apply(j: u32, lam: f32) -> f32 {
    var acc = 0.0;
    for (var i = 0u; i < DIM; i++) {
        acc += col[i] * pv[i];
    }
    return acc + lam * pv[j];
}

fn decode_step(bh: u32, lid: u32) {
    let live = lid < DIM;
    let j = min(lid, DIM - 1u);
    let hh = bh % p.h;
    let base = bh * DIM * DIM;
    let gamma = exp(gate_g(bh));
    let bt = gate_beta(bh);
    let kj = f32(k[bh * DIM + j]);
    let vj = f32(v[bh * DIM + j]);
    // The diagonal taken on the way: reading col[j] after, at an index no loop fixes, would make
    // compilers keep `col` in local memory rather than registers.
    var diag = 0.0;
    for (var i = 0u; i < DIM; i++) {
        let ki = f32(k[bh * DIM + i]);
        let skk = gamma * state_kk[base + i * DIM + j] + bt * ki * kj;
        col[i] = skk;
        diag = select(diag, skk, i == j);
        if (live) {
            state_kk[base + i * DIM + j] = skk;
            state_kv[base + i * DIM + j] = gamma * state_kv[base + i * DIM + j] + bt * ki * vj;
        }
    }
    storageBarrier();
    let lam = lambda_at(hh * DIM + j);
    let qj = select(0.0, f32(q[bh * DIM + j]), live);
    var x = qj / (diag + lam + cg_guard());
    if (live) {
        pv[j] = x;
    }
    workgroupBarrier();
    var r = select(0.0, qj - apply(j, lam), live);
    workgroupBarrier();
    if (live) {
        pv[j] = r;
    }
    var delta = dot_all(r * r, lid);
    let delta0 = delta;
    // Every invocation holds the same δ: the step's state is uniform across the workgroup.
    var going = !cg_converged(delta, delta0);
    var steps = 0u;
    for (var it = 0u; it < p.iters; it++) {
        if (cg_paper()) {
            if (lid == 0u) {
                still = u32(going);
            }
            if (workgroupUniformLoad(&still) == 0u) {
                break;
            }
        }
        let a = select(0.0, apply(j, lam), live);
        let pj = pv[j];
        let alpha = cg_alpha(delta, dot_all(select(0.0, pj * a, live), lid), going);
        x += alpha * pj;
        r -= alpha * a;
        let delta_new = dot_all(select(0.0, r * r, live), lid);
        if (alpha == 0.0) {
            going = false;
        }
        if (going) {
            if (live) {
                pv[j] = r + (delta_new / (delta + cg_guard())) * pj;
            }
            delta = delta_new;
            steps += 1u;
            going = !cg_converged(delta, delta0);
        }
        workgroupBarrier();
    }
    if (lid == 0u) {
        iters_out[bh] = f32(steps);
    }
    if (live) {
        pv[j] = x;
    }
    workgroupBarrier();
    if (live) {
        var acc = 0.0;
        for (var i = 0u; i < DIM; i++) {
            acc += pv[i] * state_kv[base + i * DIM + j];
        }
        o[bh * DIM + j] = ST(acc);
    }
}
