// mesa_decode (shaders/mesa_decode.wgsl) for CPU drivers. mesa_decode spreads one (batch, head)
// over a workgroup, a column per invocation, and every CG dot product is a workgroup-memory
// reduction between two barriers; on drivers that compile each load to a loop over the SIMD lanes
// and each barrier to a coroutine switch, that is most of the step. Here one invocation runs the
// whole step of one (batch, head) in private memory: the state update, the Jacobi start, the CG
// and the read-out, with no workgroup memory and no barrier; the lanes of a SIMD group are eight
// (batch, head) pairs. Each state row is read as vec4s, and the loops over a row are written out
// (`if (DIM4 > n)`, constant after specialisation): only the loops over rows and CG iterations
// count against llvmpipe's loop limiter. Same bindings, algorithm and results (to rounding) as
// mesa_decode; D a multiple of 4, up to 64.

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
@group(0) @binding(1) var<storage, read> q: array<vec4<ST>>;     // [B, H, D]
@group(0) @binding(2) var<storage, read> k: array<vec4<ST>>;     // [B, H, D]
@group(0) @binding(3) var<storage, read> v: array<vec4<ST>>;     // [B, H, D]
@group(0) @binding(4) var<storage, read> gates: array<f32>;      // g, β [B, H], λ (common/mesa_gates.wgsl)
@group(0) @binding(7) var<storage, read_write> state_kk: array<vec4<f32>>; // [B, H, D, D]
@group(0) @binding(8) var<storage, read_write> state_kv: array<vec4<f32>>;
@group(0) @binding(9) var<storage, read_write> o: array<vec4<ST>>; // [B, H, D]
@group(0) @binding(10) var<storage, read_write> iters_out: array<f32>; // [B, H] CG steps run

override DIM: u32 = 64u;
override DIM4: u32 = DIM / 4u;
const LANES: u32 = 8u;

#include "common/cg_rule.wgsl"
#include "common/mesa_gates.wgsl"

fn gate_count() -> u32 {
    return p.b * p.h;
}
#include "common/cg_vec4.wgsl"

// λ, k and v of the (batch, head), as vec4s (the CG's vectors are in cg_vec4.wgsl).
var<private> lam: array<vec4<f32>, 16>;
var<private> kv4: array<vec4<f32>, 16>;
var<private> vv4: array<vec4<f32>, 16>;

// Vec4 i of S_kv (`from_kv`) or S_kk. Called with a constant `from_kv`: the branch folds away.
fn state_vec(i: u32, from_kv: bool) -> vec4<f32> {
    if (from_kv) {
        return state_kv[i];
    }
    return state_kk[i];
}

// cg_a += w · (row of S_kv or S_kk at vec4 offset row4).
fn row_axpy(row4: u32, w: f32, from_kv: bool) {
    cg_a[0] += w * state_vec(row4, from_kv);
    if (DIM4 > 1u) {
        cg_a[1] += w * state_vec(row4 + 1u, from_kv);
    }
    if (DIM4 > 2u) {
        cg_a[2] += w * state_vec(row4 + 2u, from_kv);
    }
    if (DIM4 > 3u) {
        cg_a[3] += w * state_vec(row4 + 3u, from_kv);
    }
    if (DIM4 > 4u) {
        cg_a[4] += w * state_vec(row4 + 4u, from_kv);
    }
    if (DIM4 > 5u) {
        cg_a[5] += w * state_vec(row4 + 5u, from_kv);
    }
    if (DIM4 > 6u) {
        cg_a[6] += w * state_vec(row4 + 6u, from_kv);
    }
    if (DIM4 > 7u) {
        cg_a[7] += w * state_vec(row4 + 7u, from_kv);
    }
    if (DIM4 > 8u) {
        cg_a[8] += w * state_vec(row4 + 8u, from_kv);
    }
    if (DIM4 > 9u) {
        cg_a[9] += w * state_vec(row4 + 9u, from_kv);
    }
    if (DIM4 > 10u) {
        cg_a[10] += w * state_vec(row4 + 10u, from_kv);
    }
    if (DIM4 > 11u) {
        cg_a[11] += w * state_vec(row4 + 11u, from_kv);
    }
    if (DIM4 > 12u) {
        cg_a[12] += w * state_vec(row4 + 12u, from_kv);
    }
    if (DIM4 > 13u) {
        cg_a[13] += w * state_vec(row4 + 13u, from_kv);
    }
    if (DIM4 > 14u) {
        cg_a[14] += w * state_vec(row4 + 14u, from_kv);
    }
    if (DIM4 > 15u) {
        cg_a[15] += w * state_vec(row4 + 15u, from_kv);
    }
}

// cg_a = Sᵀ cg_p over the state at vec4 offset base4: S_kk (symmetric) while solving, with λ ∘ cg_p
// added, S_kv for the read-out.
fn apply(base4: u32, solving: bool) {
    for (var j = 0u; j < DIM4; j++) {
        cg_a[j] = select(vec4<f32>(0.0), lam[j] * cg_p[j], solving);
    }
    for (var i4 = 0u; i4 < DIM4; i4++) {
        let pv = cg_p[i4];
        let row4 = base4 + 4u * i4 * DIM4;
        row_axpy(row4, pv.x, !solving);
        row_axpy(row4 + DIM4, pv.y, !solving);
        row_axpy(row4 + 2u * DIM4, pv.z, !solving);
        row_axpy(row4 + 3u * DIM4, pv.w, !solving);
    }
}

// S ← γ S + β k_i (k, v) for the 4 rows from vec4 offset row4; wk = β k_i per row.
fn update_row(row4: u32, gamma: f32, wk: f32) {
    state_kk[row4 + 0u] = gamma * state_kk[row4 + 0u] + wk * kv4[0];
    state_kv[row4 + 0u] = gamma * state_kv[row4 + 0u] + wk * vv4[0];
    if (DIM4 > 1u) {
        state_kk[row4 + 1u] = gamma * state_kk[row4 + 1u] + wk * kv4[1];
        state_kv[row4 + 1u] = gamma * state_kv[row4 + 1u] + wk * vv4[1];
    }
    if (DIM4 > 2u) {
        state_kk[row4 + 2u] = gamma * state_kk[row4 + 2u] + wk * kv4[2];
        state_kv[row4 + 2u] = gamma * state_kv[row4 + 2u] + wk * vv4[2];
    }
    if (DIM4 > 3u) {
        state_kk[row4 + 3u] = gamma * state_kk[row4 + 3u] + wk * kv4[3];
        state_kv[row4 + 3u] = gamma * state_kv[row4 + 3u] + wk * vv4[3];
    }
    if (DIM4 > 4u) {
        state_kk[row4 + 4u] = gamma * state_kk[row4 + 4u] + wk * kv4[4];
        state_kv[row4 + 4u] = gamma * state_kv[row4 + 4u] + wk * vv4[4];
    }
    if (DIM4 > 5u) {
        state_kk[row4 + 5u] = gamma * state_kk[row4 + 5u] + wk * kv4[5];
        state_kv[row4 + 5u] = gamma * state_kv[row4 + 5u] + wk * vv4[5];
    }
    if (DIM4 > 6u) {
        state_kk[row4 + 6u] = gamma * state_kk[row4 + 6u] + wk * kv4[6];
        state_kv[row4 + 6u] = gamma * state_kv[row4 + 6u] + wk * vv4[6];
    }
    if (DIM4 > 7u) {
        state_kk[row4 + 7u] = gamma * state_kk[row4 + 7u] + wk * kv4[7];
        state_kv[row4 + 7u] = gamma * state_kv[row4 + 7u] + wk * vv4[7];
    }
    if (DIM4 > 8u) {
        state_kk[row4 + 8u] = gamma * state_kk[row4 + 8u] + wk * kv4[8];
        state_kv[row4 + 8u] = gamma * state_kv[row4 + 8u] + wk * vv4[8];
    }
    if (DIM4 > 9u) {
        state_kk[row4 + 9u] = gamma * state_kk[row4 + 9u] + wk * kv4[9];
        state_kv[row4 + 9u] = gamma * state_kv[row4 + 9u] + wk * vv4[9];
    }
    if (DIM4 > 10u) {
        state_kk[row4 + 10u] = gamma * state_kk[row4 + 10u] + wk * kv4[10];
        state_kv[row4 + 10u] = gamma * state_kv[row4 + 10u] + wk * vv4[10];
    }
    if (DIM4 > 11u) {
        state_kk[row4 + 11u] = gamma * state_kk[row4 + 11u] + wk * kv4[11];
        state_kv[row4 + 11u] = gamma * state_kv[row4 + 11u] + wk * vv4[11];
    }
    if (DIM4 > 12u) {
        state_kk[row4 + 12u] = gamma * state_kk[row4 + 12u] + wk * kv4[12];
        state_kv[row4 + 12u] = gamma * state_kv[row4 + 12u] + wk * vv4[12];
    }
    if (DIM4 > 13u) {
        state_kk[row4 + 13u] = gamma * state_kk[row4 + 13u] + wk * kv4[13];
        state_kv[row4 + 13u] = gamma * state_kv[row4 + 13u] + wk * vv4[13];
    }
    if (DIM4 > 14u) {
        state_kk[row4 + 14u] = gamma * state_kk[row4 + 14u] + wk * kv4[14];
        state_kv[row4 + 14u] = gamma * state_kv[row4 + 14u] + wk * vv4[14];
    }
    if (DIM4 > 15u) {
        state_kk[row4 + 15u] = gamma * state_kk[row4 + 15u] + wk * kv4[15];
        state_kv[row4 + 15u] = gamma * state_kv[row4 + 15u] + wk * vv4[15];
    }
}

@compute @workgroup_size(LANES)
fn mesa_decode_lanes(@builtin(workgroup_id) wid: vec3<u32>,
                     @builtin(local_invocation_index) lid: u32) {
    let bh = wid.x * LANES + lid;
    if (bh >= p.b * p.h) {
        return;
    }
    let hh = bh % p.h;
    let base4 = bh * DIM * DIM4;
    let gamma = exp(gate_g(bh));
    let bt = gate_beta(bh);
    for (var j = 0u; j < DIM4; j++) {
        kv4[j] = vec4<f32>(k[bh * DIM4 + j]);
        vv4[j] = vec4<f32>(v[bh * DIM4 + j]);
        lam[j] = lambda4_at(hh * DIM4 + j);
    }
    for (var i4 = 0u; i4 < DIM4; i4++) {
        let wk = bt * kv4[i4];
        let row4 = base4 + 4u * i4 * DIM4;
        update_row(row4, gamma, wk.x);
        update_row(row4 + DIM4, gamma, wk.y);
        update_row(row4 + 2u * DIM4, gamma, wk.z);
        update_row(row4 + 3u * DIM4, gamma, wk.w);
    }
    // Jacobi start x0 = q / (diag(S_kk) + λ (+ 1e-5)), then r = q − (S_kk + diag λ) x0.
    for (var j = 0u; j < DIM4; j++) {
        let d0 = base4 + 4u * j * DIM4 + j;
        let diag = vec4<f32>(state_kk[d0].x, state_kk[d0 + DIM4].y, state_kk[d0 + 2u * DIM4].z,
                             state_kk[d0 + 3u * DIM4].w);
        let qj = vec4<f32>(q[bh * DIM4 + j]);
        cg_x[j] = qj / (diag + lam[j] + cg_guard());
        cg_r[j] = qj;
        cg_p[j] = cg_x[j];
    }
    apply(base4, true);
    var delta = cg_start_residual();
    let delta0 = delta;
    var steps = 0u;
    for (var it = 0u; it < p.iters; it++) {
        if (cg_converged(delta, delta0)) {
            break;
        }
        apply(base4, true);
        let alpha = cg_alpha(delta, cg_dot(&cg_p, &cg_a), true);
        if (alpha == 0.0) {
            break;
        }
        delta = cg_step(delta, alpha);
        steps += 1u;
    }
    iters_out[bh] = f32(steps);
    // o = S_kvᵀ x.
    for (var j = 0u; j < DIM4; j++) {
        cg_p[j] = cg_x[j];
    }
    apply(base4, false);
    for (var j = 0u; j < DIM4; j++) {
        o[bh * DIM4 + j] = vec4<ST>(cg_a[j]);
    }
}
