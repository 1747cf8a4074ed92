// RAT's inter-chunk attention for GPUs (rat_attention_fa2.wgsl, rat_attention_fa2_sg.wgsl) on the
// FlashAttention-2-style core of common/fa2_core.wgsl. Token t's query (its group's row of qr)
// attends over the final states of the chunks before its own (kc, vc: [B, H, chunks, dh]) and its
// own running state (kr, sv at t), which seeds the online softmax. A workgroup owns 64
// consecutive tokens of one (batch, head); the workgroups with the most chunks to see run first.
//
// Passes: a dispatch folds chunks [k_begin, k_end); tokens whose chunk lies past k_end carry
// (acc, m, l) to the next pass, so no invocation walks more than a pass of chunks whatever T is.
#include "common/fa2_core.wgsl"
#include "common/rat_attention_io.wgsl"
@group(0) @binding(7) var<storage, read_write> carry_acc: array<vec4<f32>>;
@group(0) @binding(8) var<storage, read_write> carry_ml: array<vec2<f32>>;

var<private> cq: u32;  // the chunk of this lane's token: it sees chunks 0 … cq − 1
var<private> kvh: u32; // chunk 0 of this (batch, head)

fn fa2_visible(j: u32) -> bool {
    return j < cq && j >= p.k_begin && j < p.k_end;
}

fn fa2_key_exists(j: u32) -> bool {
    return j < p.chunks;
}

fn fa2_key(j: u32, i: u32) -> vec4<f32> {
    return vec4<f32>(kc[(kvh + j) * DH4 + i]);
}

fn fa2_value(j: u32, i: u32) -> vec4<f32> {
    return vec4<f32>(vc[(kvh + j) * DH4 + i]);
}

fn rat_attention_fa2_main(wid: vec3<u32>, lid: u32, slot: u32) {
    let b = wid.y / p.h;
    let hh = wid.y % p.h;
    fa2_init(slot % LP);
    let t0 = (p.g0 + p.ngroups - 1u - wid.x) * BQ;
    let t = t0 + slot / LP;
    let tc = min(t, p.t - 1u);
    cq = tc / p.l;
    kvh = (b * p.h + hh) * p.chunks;
    let row = p.h * DH4;
    let base = (b * p.t + tc) * row + hh * DH4;
    let qbase = (b * p.t + tc) * p.groups * DH4 + (hh % p.groups) * DH4;
    // Tokens whose chunks all came before this pass finished in an earlier one.
    let live = t < p.t && (p.k_begin == 0u || cq > p.k_begin);
    var own = 0.0;
    for (var ii = 0u; ii < NPART; ii++) {
        let i = fa2_dim(ii);
        if (i < DH4) {
            let qq = vec4<f32>(qr[qbase + i]) * p.scale;
            qv[ii] = qq;
            if (p.k_begin == 0u) {
                own += dot(qq, vec4<f32>(kr[base + i]));
                acc[ii] = vec4<f32>(sv[base + i]);
            } else if (live) {
                acc[ii] = carry_acc[base + i];
            }
        }
    }
    if (p.k_begin == 0u) {
        // The own state seeds the softmax: score q·k_t, value s_t.
        fm = reduce_one(lid, own);
        fl = 1.0;
    } else if (live) {
        let ml = carry_ml[base / DH4];
        fm = ml.x;
        fl = ml.y;
    }
    // Chunks any token of the workgroup sees in this pass.
    let c_end = min((min(t0 + BQ, p.t) - 1u) / p.l, p.k_end);
    for (var kt = (p.k_begin / KT) * KT; kt < c_end; kt += KT) {
        fa2_fold_tile(lid, kt);
    }
    if (live) {
        for (var ii = 0u; ii < NPART; ii++) {
            let i = fa2_dim(ii);
            if (i < DH4) {
                if (cq <= p.k_end) {
                    o[base + i] = vec4<ST>(fa2_out(ii));
                } else {
                    carry_acc[base + i] = acc[ii];
                }
            }
        }
        if (cq > p.k_end && part == 0u) {
            carry_ml[base / DH4] = vec2<f32>(fm, fl);
        }
    }
}
