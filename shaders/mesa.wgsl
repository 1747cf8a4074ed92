// The Mesa core op, chunkwise (spec/mesa.md §4), over a segment of chunks:
//  * mesa_chunk_updates: for every chunk n of the segment at once, the update it makes to the
//    states, U_kk[n] = Σ_s w_s k_s k_sᵀ and U_kv[n] = Σ_s w_s k_s v_sᵀ with w_s = β_s·e^(Γ_last − Γ_s),
//    and its total log decay Γ_last: a batched product, parallel over chunks, batch·head and
//    64×64 tiles of the [D × 2D] output;
//  * mesa_scan: S[n+1] = e^(Γ_last[n]) S[n] + U[n] in place of the updates, leaving each chunk's
//    start state; sequential only over the segment's chunks, parallel over every state element;
//  * mesa_cg: one workgroup per (chunk, batch·head) solves (H_t + diag λ) x_t = q_t for all C
//    positions of the chunk at once (the rule of common/cg_rule.wgsl), then writes o_t = G_tᵀ x_t.
// Within a chunk, with Γ_t the chunk-local cumulative log decay and e_t = exp(Γ_t):
//   H_t p_t = e_t · S_kk[n]ᵀ p_t + Σ_{s ≤ t} exp(Γ_t − Γ_s) β_s (k_s·p_t) k_s.
// The decay matrix M[t][s] = exp(Γ_t − Γ_s) β_s is formed by selection for s ≤ t: the unused upper
// triangle has a positive exponent that overflows under strong forgetting, and inf·0 would be NaN.
// CPU adapters take mesa_states_rows.wgsl for the states and mesa_cg_lanes (below) or
// mesa_cg_sg.wgsl for the solve.

#include "common/mesa_common.wgsl"
#include "common/cg_rule.wgsl"

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<ST>;     // [B, T, H, D]
@group(0) @binding(2) var<storage, read> k: array<ST>;     // [B, T, H, D]
@group(0) @binding(3) var<storage, read> v: array<ST>;     // [B, T, H, D]
@group(0) @binding(4) var<storage, read> gates: array<f32>; // g, β, λ (common/mesa_gates.wgsl)
@group(0) @binding(7) var<storage, read_write> starts: array<f32>;   // [B·H, nseg, 2, D, D]
@group(0) @binding(8) var<storage, read_write> state_kk: array<f32>; // running [B·H, D, D]
@group(0) @binding(9) var<storage, read_write> state_kv: array<f32>;
@group(0) @binding(10) var<storage, read_write> o: array<ST>;        // [B, T, H, D]
@group(0) @binding(11) var<storage, read_write> iters_out: array<f32>; // [B, T, H] CG steps run
@group(0) @binding(12) var<storage, read_write> decays: array<f32>;  // [B·H, nseg] Γ_last

fn vec_index(b: u32, t: u32, hh: u32, i: u32) -> u32 {
    return ((b * p.t + t) * p.h + hh) * DIM + i;
}

// ---- chunk updates -----------------------------------------------------------------------------

const UT: u32 = 64u;       // output tile edge
const US: u32 = 16u;       // chunk positions per pass through workgroup memory
var<workgroup> ua: array<vec4<f32>, 256>; // [US][UT / 4]: w_s k_s, rows of the tile
var<workgroup> ub: array<vec4<f32>, 256>; // [US][UT / 4]: k_s or v_s, columns of the tile
var<workgroup> uw: array<f32, 64>;        // w_s (CH ≤ 64)

// Element `c` (0 ≤ c < 2D) of [k_s | v_s] for token t, 0 past the row.
fn kv_col(b: u32, t: u32, hh: u32, c: u32) -> f32 {
    if (c < DIM) {
        return f32(k[vec_index(b, t, hh, c)]);
    }
    if (c < 2u * DIM) {
        return f32(v[vec_index(b, t, hh, c - DIM)]);
    }
    return 0.0;
}

@compute @workgroup_size(256)
fn mesa_chunk_updates(@builtin(workgroup_id) wid: vec3<u32>,
                      @builtin(local_invocation_index) lid: u32) {
    let tiles_j = (2u * DIM + UT - 1u) / UT;
    let i0 = (wid.x / tiles_j) * UT;
    let j0 = (wid.x % tiles_j) * UT;
    let n = wid.y;
    let bh = wid.z;
    let b = bh / p.h;
    let hh = bh % p.h;
    let first = (p.n0 + n) * CH;
    let len = min(CH, p.t - first);
    if (lid == 0u) {
        // Walk the chunk backwards: `suffix` is Γ_last − Γ_s when token s is reached.
        var suffix = 0.0;
        for (var s = CH; s > 0u; s--) {
            var w = 0.0;
            if (s - 1u < len) {
                let gi = gate_index(b, first + s - 1u, hh);
                w = gate_beta(gi) * exp(suffix);
                suffix += gate_g(gi);
            }
            uw[s - 1u] = w;
        }
        if (wid.x == 0u) {
            decays[bh * p.nseg + n] = suffix;
        }
    }
    workgroupBarrier();
    // Invocation (ty, tx) owns rows i0 + 4ty … +3 and columns j0 + 4tx … +3 of the tile.
    let ty = lid / 16u;
    let tx = lid % 16u;
    var acc: array<vec4<f32>, 4>;
    for (var s0 = 0u; s0 < CH; s0 += US) {
        let s = s0 + lid / 16u;
        let c4 = lid % 16u;
        var a = vec4<f32>(0.0);
        var bv = vec4<f32>(0.0);
        if (s < len) {
            let t = first + s;
            let w = uw[s];
            for (var e = 0u; e < 4u; e++) {
                let i = i0 + 4u * c4 + e;
                if (i < DIM) {
                    a[e] = w * f32(k[vec_index(b, t, hh, i)]);
                }
                bv[e] = kv_col(b, t, hh, j0 + 4u * c4 + e);
            }
        }
        ua[lid] = a;
        ub[lid] = bv;
        workgroupBarrier();
        // Rows past the chunk's CH positions are zeros (CH = 8 at D = 128): not multiplied.
        for (var u = 0u; u < min(US, CH); u++) {
            let ai = ua[u * 16u + ty];
            let bj = ub[u * 16u + tx];
            acc[0] += ai.x * bj;
            acc[1] += ai.y * bj;
            acc[2] += ai.z * bj;
            acc[3] += ai.w * bj;
        }
        workgroupBarrier();
    }
    let base = start_kk(bh, n);
    for (var r = 0u; r < 4u; r++) {
        let i = i0 + 4u * ty + r;
        for (var e = 0u; e < 4u; e++) {
            let c = j0 + 4u * tx + e;
            if (i < DIM && c < 2u * DIM) {
                // Columns past D are S_kv's, which follows S_kk.
                starts[base + select(0u, DIM * DIM, c >= DIM) + i * DIM + c % DIM] = acc[r][e];
            }
        }
    }
}

// ---- scan over chunks --------------------------------------------------------------------------

@compute @workgroup_size(64)
fn mesa_scan(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
    let e = (wid.y * nwg.x + wid.x) * 64u + lid;
    let dd = DIM * DIM;
    if (e >= p.b * p.h * 2u * dd) {
        return;
    }
    let bh = e / (2u * dd);
    let half = (e / dd) % 2u; // 0: S_kk, 1: S_kv
    let el = e % dd;
    var s: f32;
    if (half == 0u) {
        s = state_kk[bh * dd + el];
    } else {
        s = state_kv[bh * dd + el];
    }
    for (var n = 0u; n < p.nseg; n++) {
        let at = start_kk(bh, n) + half * dd + el;
        let u = starts[at];
        starts[at] = s;
        s = exp(decays[bh * p.nseg + n]) * s + u;
    }
    if (half == 0u) {
        state_kk[bh * dd + el] = s;
    } else {
        state_kv[bh * dd + el] = s;
    }
}

// ---- the chunkwise CG (GPUs) -------------------------------------------------------------------

const WG: u32 = 256u;
const MAX_EPI: u32 = 8u;   // columns per invocation: C·D ≤ 2048 (ops/mesa.rs chooses C so)
const MAX_S: u32 = 16u;    // positions s per invocation in the C × C scores: C² / WG, C ≤ 64
// Row stride of the [C][D] matrices in workgroup memory: D + 1 puts the invocations of a row,
// which walk positions s at the same column, on different banks.
override RS: u32 = DIM + 1u;
override CD: u32 = CH * RS;
override CC: u32 = CH * CH;
// DIM² when the chunk's S_kk is kept in workgroup memory for the whole solve (where the device
// grants enough: ops/mesa.rs), else 1 and every iteration reads it from the states buffer.
override SKK: u32 = 1u;
// Positions s per invocation in the C × C scores, and columns per invocation: the loops' trip
// counts, constants once the pipeline is made (unrolled without guards to spare).
override NS: u32 = (CH * CH + WG - 1u) / WG;
override NE: u32 = (DIM * CH + WG - 1u) / WG;

var<workgroup> pw: array<f32, CD>;   // the CG direction p (later x), [C][D]
var<workgroup> kw: array<f32, CD>;   // the chunk's keys (later values), [C][D]
var<workgroup> mw: array<f32, CC>;   // M[t][s], [C][C]
var<workgroup> ww: array<f32, CC>;   // M ∘ (P Kᵀ), [C][C]
var<workgroup> ew: array<f32, CH>;   // e_t
var<workgroup> part: array<f32, WG>; // per-invocation partial row sums
var<workgroup> skw: array<f32, SKK>; // S_kk of the chunk, [D][D]
var<workgroup> running: array<u32, CH>; // rows still iterating
var<workgroup> n_running: u32;

var<private> cx: array<f32, MAX_EPI>;
var<private> cr: array<f32, MAX_EPI>;
var<private> ca: array<f32, MAX_EPI>;
var<private> cs: array<f32, MAX_S>;

// The products below walk the shared dimension outermost, each value of the row read once into a
// register and used for all of the invocation's columns (loads per multiply-add ≈ 1 + 1/columns,
// not 2); each sum still adds its terms in the same order, so results are unchanged to the bit.

// Sum over the IPR invocations of row `row` (all of them call this).
fn row_sum(val: f32, lid: u32, row: u32, ipr: u32) -> f32 {
    part[lid] = val;
    workgroupBarrier();
    var s = 0.0;
    for (var u = 0u; u < ipr; u++) {
        s += part[row * ipr + u];
    }
    workgroupBarrier();
    return s;
}

// ww[t][s] = M[t][s] · (p_t · kw[s]) for the invocation's share of (t, s): s = col, col + ipr, …
fn decayed_scores(row: u32, col: u32, ipr: u32) {
    for (var m = 0u; m < NS; m++) {
        cs[m] = 0.0;
    }
    for (var i = 0u; i < DIM; i++) {
        let pv = pw[row * RS + i];
        for (var m = 0u; m < NS; m++) {
            let s = col + m * ipr;
            if (s < CH) {
                cs[m] += pv * kw[s * RS + i];
            }
        }
    }
    for (var m = 0u; m < NS; m++) {
        let s = col + m * ipr;
        if (s < CH) {
            ww[row * CH + s] = mw[row * CH + s] * cs[m];
        }
    }
}

// ca[m] = e_t · Σ_i p_t[i] · S[i][j] + Σ_s ww[t][s] · kw[s][j] for the invocation's columns
// j = col + m·ipr, S the D × D matrix at `base` of the states buffer (or the cached S_kk).
fn row_times_state(row: u32, col: u32, ipr: u32, et: f32, base: u32, cached: bool) {
    for (var m = 0u; m < NE; m++) {
        ca[m] = 0.0;
    }
    for (var i = 0u; i < DIM; i++) {
        let pv = pw[row * RS + i];
        for (var m = 0u; m < NE; m++) {
            let j = col + m * ipr;
            if (j < DIM) {
                var sv = 0.0;
                if (cached) {
                    sv = skk_at(base, i, j);
                } else {
                    sv = starts[base + i * DIM + j];
                }
                ca[m] += pv * sv;
            }
        }
    }
    for (var m = 0u; m < NE; m++) {
        ca[m] *= et;
    }
    for (var s = 0u; s < CH; s++) {
        let wv = ww[row * CH + s];
        for (var m = 0u; m < NE; m++) {
            let j = col + m * ipr;
            if (j < DIM) {
                ca[m] += wv * kw[s * RS + j];
            }
        }
    }
}

fn skk_at(sbase: u32, i: u32, j: u32) -> f32 {
    if (SKK > 1u) {
        return skw[i * DIM + j];
    }
    return starts[sbase + i * DIM + j];
}

// ca = (H_t + diag λ) p_t for the invocation's columns, p in pw; returns its share of p·ca.
// Every invocation calls it (barriers inside).
fn apply_rows(row: u32, col: u32, ipr: u32, et: f32, sbase: u32, hh: u32) -> f32 {
    decayed_scores(row, col, ipr);
    workgroupBarrier();
    row_times_state(row, col, ipr, et, sbase, true);
    var pa = 0.0;
    for (var m = 0u; m < NE; m++) {
        let j = col + m * ipr;
        if (j < DIM) {
            let pj = pw[row * RS + j];
            ca[m] += lambda_at(hh * DIM + j) * pj;
            pa += pj * ca[m];
        }
    }
    workgroupBarrier();
    return pa;
}

@compute @workgroup_size(256)
fn mesa_cg(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let ipr = WG / CH;          // invocations per row
    let row = lid / ipr;        // the chunk position t this invocation works on
    let col = lid % ipr;        // its first column; it owns columns col, col + ipr, …
    let bh = wid.y;
    let b = bh / p.h;
    let hh = bh % p.h;
    let n = wid.x;
    let first = (p.n0 + n) * CH;
    let valid = first + row < p.t;
    let tr = min(first + row, p.t - 1u);
    let sbase = start_kk(bh, n);

    // Chunk keys, S_kk where it is cached, decay factors and the decay matrix.
    for (var u = lid; u < CH * DIM; u += WG) {
        let s = u / DIM;
        var kv = 0.0;
        if (first + s < p.t) {
            kv = f32(k[vec_index(b, first + s, hh, u % DIM)]);
        }
        kw[s * RS + u % DIM] = kv;
    }
    if (SKK > 1u) {
        for (var u = lid; u < DIM * DIM; u += WG) {
            skw[u] = starts[sbase + u];
        }
    }
    if (lid == 0u) {
        var gam = 0.0;
        for (var s = 0u; s < CH; s++) {
            if (first + s < p.t) {
                gam += gate_g(gate_index(b, first + s, hh));
            }
            ew[s] = gam; // Γ_s for now
        }
    }
    workgroupBarrier();
    for (var u = lid; u < CH * CH; u += WG) {
        let t = u / CH;
        let s = u % CH;
        var m = 0.0;
        if (s <= t && first + s < p.t) {
            m = exp(ew[t] - ew[s]) * gate_beta(gate_index(b, first + s, hh));
        }
        mw[u] = m;
    }
    workgroupBarrier();
    let et = exp(ew[row]);

    // The start: x0 = 0 (reference), or the Jacobi guess q / diag(H_t + Λ) (paper) and
    // r = q − (H_t + Λ) x0.
    var rr = 0.0;
    for (var m = 0u; m < NE; m++) {
        let j = col + m * ipr;
        if (j < DIM) {
            var qv = 0.0;
            if (valid) {
                qv = f32(q[vec_index(b, tr, hh, j)]);
            }
            var x0 = 0.0;
            if (cg_paper()) {
                var dg = et * skk_at(sbase, j, j) + lambda_at(hh * DIM + j);
                for (var s = 0u; s < CH; s++) {
                    let kj = kw[s * RS + j];
                    dg += mw[row * CH + s] * kj * kj;
                }
                x0 = qv / dg;
            }
            cx[m] = x0;
            cr[m] = qv;
            pw[row * RS + j] = x0;
        }
    }
    workgroupBarrier();
    if (cg_paper()) {
        apply_rows(row, col, ipr, et, sbase, hh);
        for (var m = 0u; m < NE; m++) {
            cr[m] -= ca[m];
        }
    }
    for (var m = 0u; m < NE; m++) {
        let j = col + m * ipr;
        if (j < DIM) {
            pw[row * RS + j] = cr[m];
            rr += cr[m] * cr[m];
        }
    }
    var delta = row_sum(rr, lid, row, ipr);
    let delta0 = delta;
    // Rows agree on their δ, so `going` is uniform within a row; the workgroup leaves the loop
    // once no row is going (workgroup-uniform).
    var going = !cg_converged(delta, delta0);
    var steps = 0u;

    for (var it = 0u; it < p.iters; it++) {
        if (cg_paper()) {
            if (col == 0u) {
                running[row] = u32(going);
            }
            workgroupBarrier();
            if (lid == 0u) {
                var c = 0u;
                for (var r = 0u; r < CH; r++) {
                    c += running[r];
                }
                n_running = c;
            }
            if (workgroupUniformLoad(&n_running) == 0u) {
                break;
            }
        }
        let pa = row_sum(apply_rows(row, col, ipr, et, sbase, hh), lid, row, ipr);
        let alpha = cg_alpha(delta, pa, going);
        if (alpha == 0.0) {
            going = false;
        }
        var rn = 0.0;
        for (var m = 0u; m < NE; m++) {
            let j = col + m * ipr;
            if (j < DIM) {
                cx[m] += alpha * pw[row * RS + j];
                cr[m] -= alpha * ca[m];
                rn += cr[m] * cr[m];
            }
        }
        let delta_new = row_sum(rn, lid, row, ipr);
        if (going) {
            let conj = delta_new / (delta + cg_guard());
            for (var m = 0u; m < NE; m++) {
                let j = col + m * ipr;
                if (j < DIM) {
                    pw[row * RS + j] = cr[m] + conj * pw[row * RS + j];
                }
            }
            delta = delta_new;
            steps += 1u;
            going = !cg_converged(delta, delta0);
        }
        workgroupBarrier();
    }
    if (valid && col == 0u) {
        iters_out[gate_index(b, tr, hh)] = f32(steps);
    }

    // o_t = e_t · S_kv[n]ᵀ x_t + Σ_{s ≤ t} M[t][s] (x_t·k_s) v_s
    for (var m = 0u; m < NE; m++) {
        let j = col + m * ipr;
        if (j < DIM) {
            pw[row * RS + j] = cx[m];
        }
    }
    workgroupBarrier();
    decayed_scores(row, col, ipr);
    workgroupBarrier();
    for (var u = lid; u < CH * DIM; u += WG) {
        let s = u / DIM;
        var vv = 0.0;
        if (first + s < p.t) {
            vv = f32(v[vec_index(b, first + s, hh, u % DIM)]);
        }
        kw[s * RS + u % DIM] = vv;
    }
    workgroupBarrier();
    row_times_state(row, col, ipr, et, sbase + DIM * DIM, false);
    if (valid) {
        for (var m = 0u; m < NE; m++) {
            let j = col + m * ipr;
            if (j < DIM) {
                o[vec_index(b, tr, hh, j)] = ST(ca[m]);
            }
        }
    }
}

// ---- CPU-adapter schedule of mesa_cg ------------------------------------------------------------
// On CPU drivers (lavapipe) workgroup-memory loads and barriers dominate mesa_cg (0.7 GFLOP/s).
// Here one lane owns one position t of the chunk and runs its whole CG alone: x, r, p and
// a = (H_t + diag λ) p live in private arrays (per-lane stack on a CPU), every dot product is a
// lane-local loop, and the chunk data every lane needs (S_kk, S_kv, the chunk's keys and values)
// is read from storage at lane-independent addresses. No workgroup memory, no barrier. Each of
// those loads is still a loop over the SIMD lanes on CPU drivers; where subgroups are the 8 lanes,
// mesa_cg_sg.wgsl shares them by broadcast instead (Mesa layer at T = 16384: 3.4–4.2× faster).
// GPUs take mesa_cg.

const LANE_MAX_D: u32 = 128u;

var<private> lx: array<f32, LANE_MAX_D>;
var<private> lr: array<f32, LANE_MAX_D>;
var<private> lp: array<f32, LANE_MAX_D>;
var<private> la: array<f32, LANE_MAX_D>;

// The chunk's key (or value) s, element i; positions past T read the last token (weighted 0).
fn chunk_k(b: u32, first: u32, hh: u32, s: u32, i: u32) -> f32 {
    return f32(k[vec_index(b, min(first + s, p.t - 1u), hh, i)]);
}

fn chunk_v(b: u32, first: u32, hh: u32, s: u32, i: u32) -> f32 {
    return f32(v[vec_index(b, min(first + s, p.t - 1u), hh, i)]);
}

@compute @workgroup_size(CH)
fn mesa_cg_lanes(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let bh = wid.y;
    let b = bh / p.h;
    let hh = bh % p.h;
    let n = wid.x;
    let first = (p.n0 + n) * CH;
    let valid = first + lid < p.t;
    let tr = min(first + lid, p.t - 1u);
    let sbase = start_kk(bh, n);

    let et = exp(lane_decays(b, first, hh, lid));

    // The start: x0 = 0 (reference) or the Jacobi guess (paper), r = q − A x0, p = r.
    for (var i = 0u; i < DIM; i++) {
        var qv = 0.0;
        if (valid) {
            qv = f32(q[vec_index(b, tr, hh, i)]);
        }
        var x0 = 0.0;
        if (cg_paper()) {
            var dg = et * starts[sbase + i * DIM + i] + lambda_at(hh * DIM + i);
            for (var s = 0u; s < CH; s++) {
                let ks = chunk_k(b, first, hh, s, i);
                dg += lm[s] * ks * ks;
            }
            x0 = qv / dg;
        }
        lx[i] = x0;
        lr[i] = qv;
        lp[i] = x0;
    }
    if (cg_paper()) {
        lane_apply(b, first, hh, sbase, et, true);
        for (var i = 0u; i < DIM; i++) {
            lr[i] -= la[i];
        }
    }
    var delta = 0.0;
    for (var i = 0u; i < DIM; i++) {
        lp[i] = lr[i];
        delta += lr[i] * lr[i];
    }
    let delta0 = delta;
    var steps = 0u;
    for (var it = 0u; it < p.iters; it++) {
        if (cg_converged(delta, delta0)) {
            break;
        }
        lane_apply(b, first, hh, sbase, et, true);
        var pa = 0.0;
        for (var i = 0u; i < DIM; i++) {
            pa += lp[i] * la[i];
        }
        let alpha = cg_alpha(delta, pa, true);
        if (alpha == 0.0) {
            break;
        }
        var rn = 0.0;
        for (var i = 0u; i < DIM; i++) {
            lx[i] += alpha * lp[i];
            lr[i] -= alpha * la[i];
            rn += lr[i] * lr[i];
        }
        let conj = rn / (delta + cg_guard());
        for (var i = 0u; i < DIM; i++) {
            lp[i] = lr[i] + conj * lp[i];
        }
        delta = rn;
        steps += 1u;
    }
    if (valid) {
        iters_out[gate_index(b, tr, hh)] = f32(steps);
    }
    // o_t = e_t · S_kv[n]ᵀ x_t + Σ_{s ≤ t} M[t][s] (x_t·k_s) v_s
    for (var i = 0u; i < DIM; i++) {
        lp[i] = lx[i];
    }
    lane_apply(b, first, hh, sbase, et, false);
    if (valid) {
        for (var j = 0u; j < DIM; j++) {
            o[vec_index(b, tr, hh, j)] = ST(la[j]);
        }
    }
}

// la = e_t · Sᵀ lp + Σ_s M[t][s] (k_s·lp) w_s (+ λ ∘ lp when solving), with S = S_kk and w = k
// while solving, S = S_kv and w = v for the read-out. Loops are blocked so that the inner ones
// (over 8 columns, over the CH chunk positions) unroll: llvmpipe stops a loop silently after ~65k
// counted iterations per invocation, and this keeps one call near 600 (ops/mesa.rs bounds the
// iteration count accordingly). The 8 accumulators also reuse each lp[i] 8 times.
fn lane_apply(b: u32, first: u32, hh: u32, sbase: u32, et: f32, solving: bool) {
    var c: array<f32, 16>;
    for (var i = 0u; i < DIM; i++) {
        let pi = lp[i];
        for (var s = 0u; s < CH; s++) {
            c[s] += chunk_k(b, first, hh, s, i) * pi;
        }
    }
    for (var s = 0u; s < CH; s++) {
        c[s] *= lm[s];
    }
    let base = sbase + select(DIM * DIM, 0u, solving);
    for (var j0 = 0u; j0 < DIM; j0 += 8u) {
        // Zeroed by an explicit initializer: WGSL re-zeroes a declaration each pass, but Tint
        // (Chromium, Dawn) zeroes an uninitialised one only on function entry.
        var acc = array<f32, 8>();
        for (var i = 0u; i < DIM; i++) {
            let pi = lp[i];
            let row = base + i * DIM + j0;
            for (var jj = 0u; jj < 8u; jj++) {
                if (j0 + jj < DIM) {
                    acc[jj] += pi * starts[row + jj];
                }
            }
        }
        for (var jj = 0u; jj < 8u; jj++) {
            let j = j0 + jj;
            if (j < DIM) {
                var a = acc[jj] * et;
                for (var s = 0u; s < CH; s++) {
                    var w: f32;
                    if (solving) {
                        w = chunk_k(b, first, hh, s, j);
                    } else {
                        w = chunk_v(b, first, hh, s, j);
                    }
                    a += c[s] * w;
                }
                if (solving) {
                    a += lambda_at(hh * DIM + j) * lp[j];
                }
                la[j] = a;
            }
        }
    }
}
