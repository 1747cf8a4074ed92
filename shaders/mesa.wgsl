// The Mesa core op, chunkwise (spec/mesa.md §4). Two passes over a segment of chunks:
//  * mesa_states: the chunk-start states S_kk[n], S_kv[n] (sequential over the segment's chunks,
//    parallel over batch·head and state elements), carrying the running state across segments;
//  * mesa_cg: one workgroup per (chunk, batch·head) solves (H_t + diag λ) x_t = q_t for all C
//    positions of the chunk at once with the reference CG (x0 = 0, 1e-5 in both denominators,
//    a fixed iteration count), then writes o_t = G_tᵀ x_t.
// Within a chunk, with Γ_t the chunk-local cumulative log decay and e_t = exp(Γ_t):
//   H_t p_t = e_t · S_kk[n]ᵀ p_t + Σ_{s ≤ t} exp(Γ_t − Γ_s) β_s (k_s·p_t) k_s.
// The decay matrix M[t][s] = exp(Γ_t − Γ_s) β_s is formed by selection for s ≤ t: the unused upper
// triangle has a positive exponent that overflows under strong forgetting, and inf·0 would be NaN.

#include "common/mesa_common.wgsl"

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<ST>;     // [B, T, H, D]
@group(0) @binding(2) var<storage, read> k: array<ST>;     // [B, T, H, D]
@group(0) @binding(3) var<storage, read> v: array<ST>;     // [B, T, H, D]
@group(0) @binding(4) var<storage, read> g: array<f32>;    // [B, T, H] log decay
@group(0) @binding(5) var<storage, read> beta: array<f32>; // [B, T, H]
@group(0) @binding(6) var<storage, read> lamb: array<f32>; // [H, D]
@group(0) @binding(7) var<storage, read_write> starts_kk: array<f32>; // [B·H, nseg, D, D]
@group(0) @binding(8) var<storage, read_write> starts_kv: array<f32>;
@group(0) @binding(9) var<storage, read_write> state_kk: array<f32>;  // running [B·H, D, D]
@group(0) @binding(10) var<storage, read_write> state_kv: array<f32>;
@group(0) @binding(11) var<storage, read_write> o: array<ST>;  // [B, T, H, D]


fn vec_index(b: u32, t: u32, hh: u32, i: u32) -> u32 {
    return ((b * p.t + t) * p.h + hh) * DIM + i;
}

@compute @workgroup_size(256)
fn mesa_states(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let e = wid.x * 256u + lid;
    if (e >= DIM * DIM) {
        return;
    }
    let i = e / DIM;
    let j = e % DIM;
    let bh = wid.y;
    let b = bh / p.h;
    let hh = bh % p.h;
    var skk = state_kk[bh * DIM * DIM + e];
    var skv = state_kv[bh * DIM * DIM + e];
    for (var n = 0u; n < p.nseg; n++) {
        let so = (bh * p.nseg + n) * DIM * DIM + e;
        starts_kk[so] = skk;
        starts_kv[so] = skv;
        let first = (p.n0 + n) * CH;
        let last = min(first + CH, p.t);
        // Walk the chunk backwards: `suffix` is Γ_last − Γ_s when token s is reached.
        var suffix = 0.0;
        var add_kk = 0.0;
        var add_kv = 0.0;
        for (var s = last; s > first; s--) {
            let gi = gate_index(b, s - 1u, hh);
            let w = beta[gi] * exp(suffix);
            let ki = f32(k[vec_index(b, s - 1u, hh, i)]);
            add_kk += w * ki * f32(k[vec_index(b, s - 1u, hh, j)]);
            add_kv += w * ki * f32(v[vec_index(b, s - 1u, hh, j)]);
            suffix += g[gi];
        }
        let decay = exp(suffix);
        skk = decay * skk + add_kk;
        skv = decay * skv + add_kv;
    }
    state_kk[bh * DIM * DIM + e] = skk;
    state_kv[bh * DIM * DIM + e] = skv;
}

const WG: u32 = 256u;
const MAX_CD: u32 = 1024u; // C·D ≤ 1024: the chunk length is chosen so (see ops/mesa.rs)
const MAX_EPI: u32 = 8u;   // elements per invocation: ceil(D / (256 / C)) ≤ 8

var<workgroup> pw: array<f32, MAX_CD>;   // the CG direction p (later x), [C][D]
var<workgroup> kw: array<f32, MAX_CD>;   // the chunk's keys (later values), [C][D]
var<workgroup> mw: array<f32, 256>;      // M[t][s], [C][C]
var<workgroup> ww: array<f32, 256>;      // M ∘ (P Kᵀ), [C][C]
var<workgroup> ew: array<f32, 32>;       // e_t
var<workgroup> part: array<f32, WG>;     // per-invocation partial row sums

// Sum over the IPR invocations of row `row` (all of them call this).
fn row_sum(v: f32, lid: u32, row: u32, ipr: u32) -> f32 {
    part[lid] = v;
    workgroupBarrier();
    var s = 0.0;
    for (var u = 0u; u < ipr; u++) {
        s += part[row * ipr + u];
    }
    workgroupBarrier();
    return s;
}

// ww[t][s] = M[t][s] · (vec[t] · kw[s]) for the invocation's share of (t, s).
fn decayed_scores(row: u32, col: u32, ipr: u32) {
    for (var s = col; s < CH; s += ipr) {
        var d = 0.0;
        for (var i = 0u; i < DIM; i++) {
            d += pw[row * DIM + i] * kw[s * DIM + i];
        }
        ww[row * CH + s] = mw[row * CH + s] * d;
    }
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
    let sbase = (bh * p.nseg + n) * DIM * DIM;

    // Chunk keys, decay factors and the decay matrix.
    for (var u = lid; u < CH * DIM; u += WG) {
        let s = u / DIM;
        var kv = 0.0;
        if (first + s < p.t) {
            kv = f32(k[vec_index(b, first + s, hh, u % DIM)]);
        }
        kw[u] = kv;
    }
    if (lid == 0u) {
        var gam = 0.0;
        for (var s = 0u; s < CH; s++) {
            if (first + s < p.t) {
                gam += g[gate_index(b, first + s, hh)];
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
            m = exp(ew[t] - ew[s]) * beta[gate_index(b, first + s, hh)];
        }
        mw[u] = m;
    }
    workgroupBarrier();
    if (lid < CH) {
        ew[lid] = exp(ew[lid]);
    }

    // x = 0, r = q, p = r.
    var x: array<f32, MAX_EPI>;
    var r: array<f32, MAX_EPI>;
    var a: array<f32, MAX_EPI>;
    var rr = 0.0;
    for (var m = 0u; m < MAX_EPI; m++) {
        let j = col + m * ipr;
        if (j < DIM) {
            var qv = 0.0;
            if (valid) {
                qv = f32(q[vec_index(b, tr, hh, j)]);
            }
            r[m] = qv;
            pw[row * DIM + j] = qv;
            rr += qv * qv;
        }
    }
    var delta = row_sum(rr, lid, row, ipr);
    let et = ew[row];

    for (var it = 0u; it < p.iters; it++) {
        decayed_scores(row, col, ipr);
        workgroupBarrier();
        // a = H_t p + λ ∘ p, for this invocation's columns.
        var pa = 0.0;
        for (var m = 0u; m < MAX_EPI; m++) {
            let j = col + m * ipr;
            if (j < DIM) {
                var acc = 0.0;
                for (var i = 0u; i < DIM; i++) {
                    acc += pw[row * DIM + i] * starts_kk[sbase + i * DIM + j];
                }
                acc *= et;
                for (var s = 0u; s < CH; s++) {
                    acc += ww[row * CH + s] * kw[s * DIM + j];
                }
                let pj = pw[row * DIM + j];
                acc += lamb[hh * DIM + j] * pj;
                a[m] = acc;
                pa += pj * acc;
            }
        }
        let alpha = delta / (row_sum(pa, lid, row, ipr) + 1e-5);
        var rn = 0.0;
        for (var m = 0u; m < MAX_EPI; m++) {
            let j = col + m * ipr;
            if (j < DIM) {
                x[m] += alpha * pw[row * DIM + j];
                r[m] -= alpha * a[m];
                rn += r[m] * r[m];
            }
        }
        let delta_new = row_sum(rn, lid, row, ipr);
        let conj = delta_new / (delta + 1e-5);
        for (var m = 0u; m < MAX_EPI; m++) {
            let j = col + m * ipr;
            if (j < DIM) {
                pw[row * DIM + j] = r[m] + conj * pw[row * DIM + j];
            }
        }
        delta = delta_new;
        workgroupBarrier();
    }

    // o_t = e_t · S_kv[n]ᵀ x_t + Σ_{s ≤ t} M[t][s] (x_t·k_s) v_s
    for (var m = 0u; m < MAX_EPI; m++) {
        let j = col + m * ipr;
        if (j < DIM) {
            pw[row * DIM + j] = x[m];
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
        kw[u] = vv;
    }
    workgroupBarrier();
    if (valid) {
        for (var m = 0u; m < MAX_EPI; m++) {
            let j = col + m * ipr;
            if (j < DIM) {
                var acc = 0.0;
                for (var i = 0u; i < DIM; i++) {
                    acc += pw[row * DIM + i] * starts_kv[sbase + i * DIM + j];
                }
                acc *= et;
                for (var s = 0u; s < CH; s++) {
                    acc += ww[row * CH + s] * kw[s * DIM + j];
                }
                o[vec_index(b, tr, hh, j)] = ST(acc);
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
    let sbase = (bh * p.nseg + n) * DIM * DIM;

    let et = exp(lane_decays(b, first, hh, lid));

    var delta = 0.0;
    for (var i = 0u; i < DIM; i++) {
        var qv = 0.0;
        if (valid) {
            qv = f32(q[vec_index(b, tr, hh, i)]);
        }
        lx[i] = 0.0;
        lr[i] = qv;
        lp[i] = qv;
        delta += qv * qv;
    }
    for (var it = 0u; it < p.iters; it++) {
        lane_apply(b, first, hh, sbase, et, true);
        var pa = 0.0;
        for (var i = 0u; i < DIM; i++) {
            pa += lp[i] * la[i];
        }
        let alpha = delta / (pa + 1e-5);
        var rn = 0.0;
        for (var i = 0u; i < DIM; i++) {
            lx[i] += alpha * lp[i];
            lr[i] -= alpha * la[i];
            rn += lr[i] * lr[i];
        }
        let conj = rn / (delta + 1e-5);
        for (var i = 0u; i < DIM; i++) {
            lp[i] = lr[i] + conj * lp[i];
        }
        delta = rn;
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
    for (var j0 = 0u; j0 < DIM; j0 += 8u) {
        var acc: array<f32, 8>;
        for (var i = 0u; i < DIM; i++) {
            let pi = lp[i];
            let row = sbase + i * DIM + j0;
            for (var jj = 0u; jj < 8u; jj++) {
                if (j0 + jj < DIM) {
                    var sij: f32;
                    if (solving) {
                        sij = starts_kk[row + jj];
                    } else {
                        sij = starts_kv[row + jj];
                    }
                    acc[jj] += pi * sij;
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
                    a += lamb[hh * DIM + j] * lp[j];
                }
                la[j] = a;
            }
        }
    }
}
