// Flash attention forward for GPUs (attention_fa2.wgsl, attention_fa2_sg.wgsl) on the
// FlashAttention-2-style core of common/fa2_core.wgsl: a workgroup owns 64 consecutive queries
// of one (batch, head). Tiles past its last query (causal) or before its first query's window are
// skipped, and the workgroups with the longest rows (the last queries) are dispatched first, so
// the tail of the dispatch is short rows.
//
// Passes: as attention_fwd (common/attention_fwd_body.wgsl), a dispatch folds keys
// [k_begin, k_end); queries past k_end carry (acc, m, l) to the next pass. The launch wrapper
// bounds every pass, so no invocation walks more than a pass of keys (OS watchdogs reset GPUs
// whose dispatches run for seconds).
#include "common/fa2_core.wgsl"
#include "common/attention_fwd_io.wgsl"

var<private> tq: u32;  // this lane's query
var<private> kvh: u32; // key 0 of this (batch, head)

fn fa2_visible(tk: u32) -> bool {
    return tk <= tq && tk >= p.k_begin && tk < p.k_end && tk < p.t
        && (p.window == 0xffffffffu || tq - tk <= p.window);
}

fn fa2_key_exists(key: u32) -> bool {
    return key < p.t;
}

fn fa2_key(key: u32, i: u32) -> vec4<f32> {
    return vec4<f32>(k[(kvh + key) * DH4 + i]);
}

fn fa2_value(key: u32, i: u32) -> vec4<f32> {
    return vec4<f32>(v[(kvh + key) * DH4 + i]);
}

// `slot`: this lane's place among the workgroup's 256 (its query slot / 4, its part slot % 4;
// the four lanes of a query must be the ones `reduce_scores` combines).
fn attention_fa2_main(wid: vec3<u32>, lid: u32, slot: u32) {
    let b = wid.y / p.h;
    let hh = wid.y % p.h;
    fa2_init(slot % LP);
    // Last groups (longest rows) first.
    let t0 = (p.g0 + p.groups - 1u - wid.x) * BQ;
    tq = t0 + slot / LP;
    kvh = (b * p.h + hh) * p.t;
    let row = p.h * DH4; // vec4s per token of q and o
    let base = (b * p.t + min(tq, p.t - 1u)) * row + hh * DH4;
    let live = tq < p.t && tq >= p.k_begin;
    for (var ii = 0u; ii < NPART; ii++) {
        let i = fa2_dim(ii);
        if (i < DH4) {
            qv[ii] = vec4<f32>(q[base + i]) * p.scale;
            if (p.k_begin > 0u && live) {
                acc[ii] = carry_acc[base + i];
            }
        }
    }
    if (p.k_begin > 0u && live) {
        let ml = carry_ml[base / DH4];
        fm = ml.x;
        fl = ml.y;
    }
    // Keys any query of the workgroup can see in this pass.
    let t_last = min(min(t0 + BQ, p.t), p.k_end) - 1u;
    var k_lo = p.k_begin;
    if (p.window != 0xffffffffu && t0 > p.window) {
        k_lo = max(k_lo, t0 - p.window);
    }
    for (var kt = (k_lo / KT) * KT; kt <= t_last; kt += KT) {
        fa2_fold_tile(lid, kt);
    }
    if (live) {
        for (var ii = 0u; ii < NPART; ii++) {
            let i = fa2_dim(ii);
            if (i < DH4) {
                if (tq < p.k_end) {
                    o[base + i] = vec4<ST>(fa2_out(ii));
                } else {
                    carry_acc[base + i] = acc[ii];
                }
            }
        }
        if (tq >= p.k_end && part == 0u) {
            carry_ml[base / DH4] = vec2<f32>(fm, fl);
        }
    }
}
