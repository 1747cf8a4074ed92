// One Mesa decode step (spec/mesa.md §7) for one token per sequence: one workgroup per
// (batch, head), invocation j owns column j. The states are updated in place, then the CG runs
// from the Jacobi guess x0 = q / (diag(H) + λ (+ 1e-5 under the reference rule)) with the rule of
// common/cg_rule.wgsl, then o = G_tᵀ x.

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
@group(0) @binding(4) var<storage, read> g: array<f32>;    // [B, H]
@group(0) @binding(5) var<storage, read> beta: array<f32>; // [B, H]
@group(0) @binding(6) var<storage, read> lamb: array<f32>; // [H, D]
@group(0) @binding(7) var<storage, read_write> state_kk: array<f32>; // [B, H, D, D]
@group(0) @binding(8) var<storage, read_write> state_kv: array<f32>;
@group(0) @binding(9) var<storage, read_write> o: array<ST>; // [B, H, D]
@group(0) @binding(10) var<storage, read_write> iters_out: array<f32>; // [B, H] CG steps run

#include "common/cg_rule.wgsl"

override DIM: u32 = 64u;
const MAX_D: u32 = 128u;

var<workgroup> pv: array<f32, MAX_D>;
var<workgroup> red: array<f32, MAX_D>;
var<workgroup> still: u32;

fn dot_all(x: f32, j: u32) -> f32 {
    red[j] = x;
    workgroupBarrier();
    var s = 0.0;
    for (var i = 0u; i < DIM; i++) {
        s += red[i];
    }
    workgroupBarrier();
    return s;
}

// (H p)_j + λ_j p_j with p in workgroup memory.
fn apply(j: u32, base: u32, lam: f32) -> f32 {
    var acc = 0.0;
    for (var i = 0u; i < DIM; i++) {
        acc += state_kk[base + i * DIM + j] * pv[i];
    }
    return acc + lam * pv[j];
}

@compute @workgroup_size(MAX_D)
fn mesa_decode(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let bh = wid.x;
    let hh = bh % p.h;
    let live = lid < DIM;
    let j = min(lid, DIM - 1u);
    let base = bh * DIM * DIM;
    let gamma = exp(g[bh]);
    let bt = beta[bh];
    let kj = f32(k[bh * DIM + j]);
    let vj = f32(v[bh * DIM + j]);
    if (live) {
        for (var i = 0u; i < DIM; i++) {
            let ki = f32(k[bh * DIM + i]);
            state_kk[base + i * DIM + j] = gamma * state_kk[base + i * DIM + j] + bt * ki * kj;
            state_kv[base + i * DIM + j] = gamma * state_kv[base + i * DIM + j] + bt * ki * vj;
        }
    }
    storageBarrier();
    workgroupBarrier();
    let lam = lamb[hh * DIM + j];
    let qj = select(0.0, f32(q[bh * DIM + j]), live);
    var x = qj / (state_kk[base + j * DIM + j] + lam + cg_guard());
    if (live) {
        pv[j] = x;
    }
    workgroupBarrier();
    var r = select(0.0, qj - apply(j, base, lam), live);
    workgroupBarrier();
    if (live) {
        pv[j] = r;
    }
    var delta = dot_all(select(0.0, r * r, live), lid);
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
        let a = select(0.0, apply(j, base, lam), live);
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
