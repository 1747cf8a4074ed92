// mesa_cg (shaders/mesa.wgsl) for CPU drivers whose subgroups are their 8 SIMD lanes (lavapipe
// at 256 bits). Like mesa_cg_lanes, one lane owns one position t of the chunk and runs its whole
// CG in private vec4 arrays, with no workgroup memory and no barrier. What every lane needs alike
// (the chunk-start states S_kk, S_kv, the chunk's keys and values, λ) mesa_cg_lanes reads with
// scalar loads at lane-independent addresses, and on these drivers each such load is a loop over
// the 8 lanes: ~6k of them per CG iteration at D = 64. Here a row of D values is loaded as two
// vec4 loads, lane l taking vec4s l and 8 + l, and subgroupBroadcast (an extract and a splat)
// hands each vec4 to every lane: 32× fewer load instructions. Rows are read as vec4s, so D is a
// multiple of 4, up to 64 (DIM4 ≤ 16; the broadcast lanes are constants, written out). Every lane
// takes part in every broadcast: no lane leaves early, positions past T compute and store nothing.
// Same bindings, launch and results (to rounding) as mesa_cg.

#include "common/mesa_common.wgsl"
#include "common/cg_rule.wgsl"
#include "common/cg_vec4.wgsl"

// The bindings of mesa.wgsl that mesa_cg reads, viewed as vec4s where rows are read.
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<vec4<ST>>;   // [B, T, H, D]
@group(0) @binding(2) var<storage, read> k: array<vec4<ST>>;   // [B, T, H, D]
@group(0) @binding(3) var<storage, read> v: array<vec4<ST>>;   // [B, T, H, D]
@group(0) @binding(4) var<storage, read> gates: array<f32>;    // g, β, λ (common/mesa_gates.wgsl)
@group(0) @binding(7) var<storage, read_write> starts: array<vec4<f32>>; // [B·H, nseg, 2, D, D]
@group(0) @binding(10) var<storage, read_write> o: array<vec4<ST>>; // [B, T, H, D]
@group(0) @binding(11) var<storage, read_write> iters_out: array<f32>; // [B, T, H]

override DIM4: u32 = DIM / 4u;

var<private> sg_lane: u32;
var<private> acc: array<vec4<f32>, 16>;

fn row4(b: u32, t: u32, hh: u32) -> u32 {
    return ((b * p.t + t) * p.h + hh) * DIM4;
}

// A row of D values spread over the subgroup: lane l holds vec4 l in `a` and vec4 8 + l in `b`.
struct Row {
    a: vec4<f32>,
    b: vec4<f32>,
}

fn lane_vec(l: u32) -> u32 {
    return min(l, DIM4 - 1u);
}

// Key (value: `from_v`) of chunk position s; positions past T read the last token (weighted 0).
fn chunk_row(b: u32, first: u32, hh: u32, s: u32, from_v: bool) -> Row {
    let base = row4(b, min(first + s, p.t - 1u), hh);
    var r: Row;
    if (from_v) {
        r.a = vec4<f32>(v[base + lane_vec(sg_lane)]);
        if (DIM4 > 8u) {
            r.b = vec4<f32>(v[base + lane_vec(8u + sg_lane)]);
        }
    } else {
        r.a = vec4<f32>(k[base + lane_vec(sg_lane)]);
        if (DIM4 > 8u) {
            r.b = vec4<f32>(k[base + lane_vec(8u + sg_lane)]);
        }
    }
    return r;
}

// Row i of the chunk-start state (S_kv, which follows S_kk, when not solving).
fn state_row(sbase4: u32, i: u32, solving: bool) -> Row {
    let base = sbase4 + select(DIM * DIM4, 0u, solving) + i * DIM4;
    var r: Row;
    r.a = starts[base + lane_vec(sg_lane)];
    if (DIM4 > 8u) {
        r.b = starts[base + lane_vec(8u + sg_lane)];
    }
    return r;
}

// Element (j, j) of S_kk, for the Jacobi start.
fn state_diag(sbase4: u32, j: u32) -> f32 {
    return starts[sbase4 + j * DIM4 + j / 4u][j % 4u];
}

// cg_p · row.
fn dot_row(r: Row) -> f32 {
    var d = 0.0;
    d += dot(cg_p[0], subgroupBroadcast(r.a, 0u));
    if (DIM4 > 1u) {
        d += dot(cg_p[1], subgroupBroadcast(r.a, 1u));
    }
    if (DIM4 > 2u) {
        d += dot(cg_p[2], subgroupBroadcast(r.a, 2u));
    }
    if (DIM4 > 3u) {
        d += dot(cg_p[3], subgroupBroadcast(r.a, 3u));
    }
    if (DIM4 > 4u) {
        d += dot(cg_p[4], subgroupBroadcast(r.a, 4u));
    }
    if (DIM4 > 5u) {
        d += dot(cg_p[5], subgroupBroadcast(r.a, 5u));
    }
    if (DIM4 > 6u) {
        d += dot(cg_p[6], subgroupBroadcast(r.a, 6u));
    }
    if (DIM4 > 7u) {
        d += dot(cg_p[7], subgroupBroadcast(r.a, 7u));
    }
    if (DIM4 > 8u) {
        d += dot(cg_p[8], subgroupBroadcast(r.b, 0u));
    }
    if (DIM4 > 9u) {
        d += dot(cg_p[9], subgroupBroadcast(r.b, 1u));
    }
    if (DIM4 > 10u) {
        d += dot(cg_p[10], subgroupBroadcast(r.b, 2u));
    }
    if (DIM4 > 11u) {
        d += dot(cg_p[11], subgroupBroadcast(r.b, 3u));
    }
    if (DIM4 > 12u) {
        d += dot(cg_p[12], subgroupBroadcast(r.b, 4u));
    }
    if (DIM4 > 13u) {
        d += dot(cg_p[13], subgroupBroadcast(r.b, 5u));
    }
    if (DIM4 > 14u) {
        d += dot(cg_p[14], subgroupBroadcast(r.b, 6u));
    }
    if (DIM4 > 15u) {
        d += dot(cg_p[15], subgroupBroadcast(r.b, 7u));
    }
    return d;
}

// row ∘ row (each lane squares its own vec4s before they are broadcast).
fn square_row(r: ptr<function, Row>) {
    (*r).a *= (*r).a;
    (*r).b *= (*r).b;
}

// acc += w · row.
fn axpy_row(w: f32, r: Row) {
    acc[0] += w * subgroupBroadcast(r.a, 0u);
    if (DIM4 > 1u) {
        acc[1] += w * subgroupBroadcast(r.a, 1u);
    }
    if (DIM4 > 2u) {
        acc[2] += w * subgroupBroadcast(r.a, 2u);
    }
    if (DIM4 > 3u) {
        acc[3] += w * subgroupBroadcast(r.a, 3u);
    }
    if (DIM4 > 4u) {
        acc[4] += w * subgroupBroadcast(r.a, 4u);
    }
    if (DIM4 > 5u) {
        acc[5] += w * subgroupBroadcast(r.a, 5u);
    }
    if (DIM4 > 6u) {
        acc[6] += w * subgroupBroadcast(r.a, 6u);
    }
    if (DIM4 > 7u) {
        acc[7] += w * subgroupBroadcast(r.a, 7u);
    }
    if (DIM4 > 8u) {
        acc[8] += w * subgroupBroadcast(r.b, 0u);
    }
    if (DIM4 > 9u) {
        acc[9] += w * subgroupBroadcast(r.b, 1u);
    }
    if (DIM4 > 10u) {
        acc[10] += w * subgroupBroadcast(r.b, 2u);
    }
    if (DIM4 > 11u) {
        acc[11] += w * subgroupBroadcast(r.b, 3u);
    }
    if (DIM4 > 12u) {
        acc[12] += w * subgroupBroadcast(r.b, 4u);
    }
    if (DIM4 > 13u) {
        acc[13] += w * subgroupBroadcast(r.b, 5u);
    }
    if (DIM4 > 14u) {
        acc[14] += w * subgroupBroadcast(r.b, 6u);
    }
    if (DIM4 > 15u) {
        acc[15] += w * subgroupBroadcast(r.b, 7u);
    }
}

// cg_a = e_t · Sᵀ cg_p + Σ_s M[t][s] (k_s·cg_p) w_s (+ λ ∘ cg_p when solving), with S = S_kk and w = k
// while solving, S = S_kv and w = v for the read-out.
fn lane_apply(b: u32, first: u32, hh: u32, sbase4: u32, et: f32, solving: bool) {
    var c: array<f32, 16>;
    for (var s = 0u; s < CH; s++) {
        c[s] = lm[s] * dot_row(chunk_row(b, first, hh, s, false));
    }
    for (var n = 0u; n < DIM4; n++) {
        acc[n] = vec4<f32>(0.0);
    }
    for (var i4 = 0u; i4 < DIM4; i4++) {
        let pv = cg_p[i4] * et;
        axpy_row(pv.x, state_row(sbase4, 4u * i4, solving));
        axpy_row(pv.y, state_row(sbase4, 4u * i4 + 1u, solving));
        axpy_row(pv.z, state_row(sbase4, 4u * i4 + 2u, solving));
        axpy_row(pv.w, state_row(sbase4, 4u * i4 + 3u, solving));
    }
    for (var s = 0u; s < CH; s++) {
        axpy_row(c[s], chunk_row(b, first, hh, s, !solving));
    }
    for (var n = 0u; n < DIM4; n++) {
        cg_a[n] = acc[n];
    }
    if (solving) {
        var r: Row;
        r.a = lambda4_at(hh * DIM4 + lane_vec(sg_lane));
        if (DIM4 > 8u) {
            r.b = lambda4_at(hh * DIM4 + lane_vec(8u + sg_lane));
        }
        cg_a[0] += subgroupBroadcast(r.a, 0u) * cg_p[0];
        if (DIM4 > 1u) {
            cg_a[1] += subgroupBroadcast(r.a, 1u) * cg_p[1];
        }
        if (DIM4 > 2u) {
            cg_a[2] += subgroupBroadcast(r.a, 2u) * cg_p[2];
        }
        if (DIM4 > 3u) {
            cg_a[3] += subgroupBroadcast(r.a, 3u) * cg_p[3];
        }
        if (DIM4 > 4u) {
            cg_a[4] += subgroupBroadcast(r.a, 4u) * cg_p[4];
        }
        if (DIM4 > 5u) {
            cg_a[5] += subgroupBroadcast(r.a, 5u) * cg_p[5];
        }
        if (DIM4 > 6u) {
            cg_a[6] += subgroupBroadcast(r.a, 6u) * cg_p[6];
        }
        if (DIM4 > 7u) {
            cg_a[7] += subgroupBroadcast(r.a, 7u) * cg_p[7];
        }
        if (DIM4 > 8u) {
            cg_a[8] += subgroupBroadcast(r.b, 0u) * cg_p[8];
        }
        if (DIM4 > 9u) {
            cg_a[9] += subgroupBroadcast(r.b, 1u) * cg_p[9];
        }
        if (DIM4 > 10u) {
            cg_a[10] += subgroupBroadcast(r.b, 2u) * cg_p[10];
        }
        if (DIM4 > 11u) {
            cg_a[11] += subgroupBroadcast(r.b, 3u) * cg_p[11];
        }
        if (DIM4 > 12u) {
            cg_a[12] += subgroupBroadcast(r.b, 4u) * cg_p[12];
        }
        if (DIM4 > 13u) {
            cg_a[13] += subgroupBroadcast(r.b, 5u) * cg_p[13];
        }
        if (DIM4 > 14u) {
            cg_a[14] += subgroupBroadcast(r.b, 6u) * cg_p[14];
        }
        if (DIM4 > 15u) {
            cg_a[15] += subgroupBroadcast(r.b, 7u) * cg_p[15];
        }
    }
}

@compute @workgroup_size(CH)
fn mesa_cg_sg(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32,
              @builtin(subgroup_invocation_id) lane: u32) {
    sg_lane = lane;
    let bh = wid.y;
    let b = bh / p.h;
    let hh = bh % p.h;
    let n = wid.x;
    let first = (p.n0 + n) * CH;
    let valid = first + lid < p.t;
    let tr = min(first + lid, p.t - 1u);
    let sbase4 = start_kk(bh, n) / 4u;

    let et = exp(lane_decays(b, first, hh, lid));

    // The start: x0 = 0 (reference) or the Jacobi guess (paper), r = q − A x0, p = r.
    for (var i = 0u; i < DIM4; i++) {
        var qv = vec4<f32>(q[row4(b, tr, hh) + i]);
        if (!valid) {
            qv = vec4<f32>(0.0);
        }
        cg_r[i] = qv;
        cg_x[i] = vec4<f32>(0.0);
    }
    if (cg_paper()) {
        // diag(H_t + Λ)_j = e_t S_kk[j][j] + Σ_s M[t][s] k_s[j]² + λ_j
        for (var i = 0u; i < DIM4; i++) {
            acc[i] = et * vec4<f32>(state_diag(sbase4, 4u * i), state_diag(sbase4, 4u * i + 1u),
                                    state_diag(sbase4, 4u * i + 2u), state_diag(sbase4, 4u * i + 3u));
        }
        for (var s = 0u; s < CH; s++) {
            var r = chunk_row(b, first, hh, s, false);
            square_row(&r);
            axpy_row(lm[s], r);
        }
        var lr: Row;
        lr.a = lambda4_at(hh * DIM4 + lane_vec(sg_lane));
        if (DIM4 > 8u) {
            lr.b = lambda4_at(hh * DIM4 + lane_vec(8u + sg_lane));
        }
        axpy_row(1.0, lr);
        for (var i = 0u; i < DIM4; i++) {
            cg_x[i] = cg_r[i] / acc[i];
            cg_p[i] = cg_x[i];
        }
        lane_apply(b, first, hh, sbase4, et, true);
    } else {
        for (var i = 0u; i < DIM4; i++) {
            cg_a[i] = vec4<f32>(0.0);
        }
    }
    var delta = cg_start_residual();
    let delta0 = delta;
    var going = !cg_converged(delta, delta0);
    var steps = 0u;
    for (var it = 0u; it < p.iters; it++) {
        // Every lane takes part in every broadcast: the subgroup stops once all its lanes have.
        if (cg_paper() && !subgroupAny(going)) {
            break;
        }
        lane_apply(b, first, hh, sbase4, et, true);
        let alpha = cg_alpha(delta, cg_dot(&cg_p, &cg_a), going);
        delta = cg_step(delta, alpha);
        if (alpha == 0.0) {
            going = false;
        }
        if (going) {
            steps += 1u;
            going = !cg_converged(delta, delta0);
        }
    }
    if (valid) {
        iters_out[gate_index(b, tr, hh)] = f32(steps);
    }
    // o_t = e_t · S_kv[n]ᵀ x_t + Σ_{s ≤ t} M[t][s] (x_t·k_s) v_s
    for (var i = 0u; i < DIM4; i++) {
        cg_p[i] = cg_x[i];
    }
    lane_apply(b, first, hh, sbase4, et, false);
    if (valid) {
        for (var j = 0u; j < DIM4; j++) {
            o[row4(b, tr, hh) + j] = vec4<ST>(cg_a[j]);
        }
    }
}
