// Blocked-product flash attention forward (FlashAttention-2 with whole-tile products), shared by
// attention_mm.wgsl (the products in plain WGSL: any GPU, and CPU adapters, where it is tested)
// and attention_coop16.wgsl / attention_coop8.wgsl (the products on cooperative matrices).
//
// A workgroup of WG = 64 lanes owns BQ = 16 consecutive queries of one (batch, head). Q, then per
// tile of KT keys K and V, are staged in workgroup memory in the storage dtype, zero past T (so any
// T works and no cooperative load leaves its array). Per key tile:
//   1. S = Q·Kᵀ [BQ × KT] into f32 workgroup memory (`mm_scores`);
//   2. lane r < BQ runs the online softmax of row r over the tile (scale, causal / window mask,
//      running max and sum), writes P in the storage dtype and the row's rescale factor; the other
//      lanes meanwhile stage V over K;
//   3. O_tile = P·V [BQ × dh] into f32 workgroup memory (`mm_pv`);
//   4. lane (r, part) does acc = acc·alpha_r + O_tile on its quarter of row r (≤ 32 floats of
//      private memory at dh = 128).
// Tiles past the block's last query (causal) and before its first query's window are skipped,
// and the workgroups of the longest rows are dispatched first. Passes and carries as
// attention_fa2 (common/attention_fwd_io.wgsl): one launch wrapper drives both.
//
// The including file defines SPARE (floats after S and O_tile where out-of-range cooperative
// blocks are stored unread) and `mm_scores(lid, sgid, nsg)`, `mm_pv(lid, sgid, nsg)`, called
// with workgroup-uniform control flow (cooperative operations need it).
#include "common/attention_fwd_io.wgsl"

override DH: u32 = 64u; // head dim: a multiple of 4 (of CM for the cooperative kernels)
override KT: u32 = 32u; // keys per tile: 16 or 32 (a multiple of CM)
const BQ: u32 = 16u;    // queries per workgroup
const WG: u32 = 64u;    // lanes per workgroup
const LPR: u32 = WG / BQ; // lanes per query row of the accumulator
const MAX_PART: u32 = 8u; // accumulator vec4s per lane at dh = 128
const NEG_BIG: f32 = -3.4028234663852886e38;
override DH4: u32 = DH / 4u;
override NPART: u32 = (DH4 + LPR - 1u) / LPR;

var<workgroup> qs: array<ST, BQ * DH>;          // Q [query][dh]
var<workgroup> kv: array<ST, KT * DH>;          // K, then V, of the tile [key][dh]
var<workgroup> st: array<f32, BQ * KT + SPARE>; // S [query][key]
var<workgroup> ps: array<ST, BQ * KT>;          // P [query][key]
var<workgroup> ot: array<f32, BQ * DH + SPARE>; // P·V [query][dh]
var<workgroup> rowf: array<f32, BQ>;            // per row: the tile's rescale factor, then 1 / l

var<private> acc: array<vec4<f32>, MAX_PART>; // lane (r, part): vec4s part + LPR·ii of row r
var<private> fm: f32;                         // lanes r < BQ: running max of row r
var<private> fl: f32;                         // and running sum

fn mm_visible(tq: u32, tk: u32) -> bool {
    return tk <= tq && tk >= p.k_begin && tk < p.k_end && tk < p.t
        && (p.window == 0xffffffffu || tq - tk <= p.window);
}

// Stages keys (which = 0) or values (1) kt … kt + KT − 1 of the head starting at token kvh.
fn mm_stage(lid: u32, kvh: u32, kt: u32, which: u32) {
    for (var e = lid; e < KT * DH4; e += WG) {
        let key = kt + e / DH4;
        let i = e % DH4;
        var x = vec4<ST>(0.0);
        if (key < p.t) {
            if (which == 0u) {
                x = k[(kvh + key) * DH4 + i];
            } else {
                x = v[(kvh + key) * DH4 + i];
            }
        }
        let at = (e / DH4) * DH + 4u * i;
        kv[at] = x.x;
        kv[at + 1u] = x.y;
        kv[at + 2u] = x.z;
        kv[at + 3u] = x.w;
    }
}

// The online softmax of query row `r` (lane r < BQ) over the tile's scores.
fn mm_softmax_row(r: u32, tq: u32, kt: u32) {
    var m_tile = NEG_BIG;
    for (var j = 0u; j < KT; j++) {
        if (mm_visible(tq, kt + j)) {
            m_tile = max(m_tile, st[r * KT + j] * p.scale);
        }
    }
    var a = 1.0;
    if (m_tile > NEG_BIG) {
        let m_new = max(fm, m_tile);
        a = exp(fm - m_new);
        fm = m_new;
    }
    fl *= a;
    for (var j = 0u; j < KT; j++) {
        var pj = ST(0.0);
        if (mm_visible(tq, kt + j)) {
            pj = ST(exp(st[r * KT + j] * p.scale - fm));
        }
        ps[r * KT + j] = pj;
        fl += f32(pj);
    }
    rowf[r] = a;
}

fn attention_mm_main(wid: vec3<u32>, lid: u32, sgid: u32, nsg: u32) {
    let b = wid.y / p.h;
    let hh = wid.y % p.h;
    // Last groups (longest rows) first.
    let t0 = (p.g0 + p.groups - 1u - wid.x) * BQ;
    let kvh = (b * p.h + hh) * p.t;
    let row = p.h * DH4; // vec4s per token of q and o
    let lr = lid / LPR;
    let part = lid % LPR;
    let tq = t0 + lr;
    let base = (b * p.t + min(tq, p.t - 1u)) * row + hh * DH4;
    let live = tq < p.t && tq >= p.k_begin;
    for (var ii = 0u; ii < MAX_PART; ii++) {
        acc[ii] = vec4<f32>(0.0);
    }
    if (p.k_begin > 0u && live) {
        for (var ii = 0u; ii < NPART; ii++) {
            let i = part + LPR * ii;
            if (i < DH4) {
                acc[ii] = carry_acc[base + i];
            }
        }
    }
    // Lane r < BQ: the softmax state of row t0 + r.
    let sq = t0 + lid;
    fm = NEG_BIG;
    fl = 0.0;
    if (lid < BQ && p.k_begin > 0u && sq < p.t && sq >= p.k_begin) {
        let ml = carry_ml[(b * p.t + sq) * p.h + hh];
        fm = ml.x;
        fl = ml.y;
    }
    for (var e = lid; e < BQ * DH4; e += WG) {
        let t = t0 + e / DH4;
        let i = e % DH4;
        var x = vec4<ST>(0.0);
        if (t < p.t) {
            x = q[(b * p.t + t) * row + hh * DH4 + i];
        }
        let at = (e / DH4) * DH + 4u * i;
        qs[at] = x.x;
        qs[at + 1u] = x.y;
        qs[at + 2u] = x.z;
        qs[at + 3u] = x.w;
    }
    // Keys any query of the workgroup can see in this pass.
    let t_last = min(min(t0 + BQ, p.t), p.k_end) - 1u;
    var k_lo = p.k_begin;
    if (p.window != 0xffffffffu && t0 > p.window) {
        k_lo = max(k_lo, t0 - p.window);
    }
    for (var kt = (k_lo / KT) * KT; kt <= t_last; kt += KT) {
        workgroupBarrier(); // the last tile's readers of kv, ot and rowf are done
        mm_stage(lid, kvh, kt, 0u);
        workgroupBarrier();
        mm_scores(lid, sgid, nsg);
        workgroupBarrier();
        if (lid < BQ) {
            mm_softmax_row(lid, sq, kt);
        }
        mm_stage(lid, kvh, kt, 1u);
        workgroupBarrier();
        mm_pv(lid, sgid, nsg);
        workgroupBarrier();
        let a = rowf[lr];
        for (var ii = 0u; ii < NPART; ii++) {
            let at = lr * DH + 4u * min(part + LPR * ii, DH4 - 1u);
            let ov = vec4<f32>(ot[at], ot[at + 1u], ot[at + 2u], ot[at + 3u]);
            acc[ii] = acc[ii] * a + ov;
        }
    }
    workgroupBarrier();
    if (lid < BQ) {
        rowf[lid] = select(0.0, 1.0 / fl, fl > 0.0);
        if (sq < p.t && sq >= p.k_end && sq >= p.k_begin) {
            carry_ml[(b * p.t + sq) * p.h + hh] = vec2<f32>(fm, fl);
        }
    }
    workgroupBarrier();
    if (live) {
        let inv = rowf[lr];
        for (var ii = 0u; ii < NPART; ii++) {
            let i = part + LPR * ii;
            if (i < DH4) {
                if (tq < p.k_end) {
                    o[base + i] = vec4<ST>(acc[ii] * inv);
                } else {
                    carry_acc[base + i] = acc[ii];
                }
            }
        }
    }
}
