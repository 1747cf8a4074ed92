// Body of the flash attention forward (attention_fwd.wgsl, attention_fwd_sg.wgsl): the key layout
// for common/flash.wgsl and the work of one workgroup. The kernel file includes a key-delivery
// snippet first and defines the entry point.

#include "common/attention_fwd_io.wgsl"

var<private> tq: array<u32, MAX_QL>;
var<private> kv0: u32;    // vec4 offset of key 0 of the current tile, this (batch, head)
var<private> kt_end: u32; // keys of the current tile that exist: kt_end − tile start

fn flash_k(j: u32, i: u32) -> vec4<f32> {
    return vec4<f32>(k[kv0 + j * DH4 + i]);
}

fn flash_v(j: u32, i: u32) -> vec4<f32> {
    return vec4<f32>(v[kv0 + j * DH4 + i]);
}

fn tile_key_valid(j: u32) -> bool {
    return j < kt_end;
}

fn key_visible(qi: u32, tk: u32) -> bool {
    let t = tq[qi];
    return tk <= t && tk >= p.k_begin && tk < p.k_end
        && (p.window == 0xffffffffu || t - tk <= p.window);
}

// Slot qi's query (token tq[qi]) into qv. Called with constant slots, never in a loop over them:
// a slot index that is not a constant would put qv and acc in indexed memory (common/flash.wgsl).
fn load_query(qi: u32, b: u32, hh: u32, row: u32) {
    let qbase = (b * p.t + min(tq[qi], p.t - 1u)) * row + hh * DH4;
    for (var i = 0u; i < DH4; i++) {
        qv[qi][i] = vec4<f32>(q[qbase + i]) * p.scale;
    }
}

// Where slot qi's state goes after this pass: its output if its query saw its last key, else the
// carry; nothing for queries past T or finished in an earlier pass.
fn store_output(qi: u32, b: u32, hh: u32, row: u32) {
    let t = tq[qi];
    if (t < p.t && t >= p.k_begin) {
        let obase = (b * p.t + t) * row + hh * DH4;
        if (t < p.k_end) {
            for (var i = 0u; i < DH4; i++) {
                o[obase + i] = vec4<ST>(flash_out(qi, i));
            }
        } else {
            for (var i = 0u; i < DH4; i++) {
                carry_acc[obase + i] = acc[qi][i];
            }
            carry_ml[obase / DH4] = vec2<f32>(fm[qi], fl[qi]);
        }
    }
}

// Slot qi resumes the running softmax an earlier pass carried (queries that began in this pass
// have none).
fn resume_slot(qi: u32, b: u32, hh: u32, row: u32) {
    let t = tq[qi];
    if (p.k_begin > 0u && t < p.t && t >= p.k_begin) {
        let obase = (b * p.t + t) * row + hh * DH4;
        for (var i = 0u; i < DH4; i++) {
            acc[qi][i] = carry_acc[obase + i];
        }
        let ml = carry_ml[obase / DH4];
        fm[qi] = ml.x;
        fl[qi] = ml.y;
    }
}

fn attention_fwd_main(wid: vec3<u32>, lid: u32) {
    let b = wid.y / p.h;
    let hh = wid.y % p.h;
    let t0 = (p.g0 + wid.x) * 64u * QL;
    let row = p.h * DH4; // vec4s per token
    flash_init();
    tq[0] = t0 + lid;
    tq[1] = t0 + lid + 64u;
    load_query(0u, b, hh, row);
    resume_slot(0u, b, hh, row);
    if (QL > 1u) {
        load_query(1u, b, hh, row);
        resume_slot(1u, b, hh, row);
    }
    // Keys any query of this tile can see in this pass: [max(t0 − W, k_begin), min(last query,
    // k_end − 1)].
    let t_last = min(min(t0 + 64u * QL, p.t), p.k_end) - 1u;
    var k_lo = p.k_begin;
    if (p.window != 0xffffffffu && t0 > p.window) {
        k_lo = max(k_lo, t0 - p.window);
    }
    for (var kt = (k_lo / BK) * BK; kt <= t_last; kt += BK) {
        // Keys past the end are masked by key_visible (no query sees them); the tile load
        // zero-fills them and storage reads of them are clamped by bounds checks.
        kv0 = ((b * p.h + hh) * p.t + kt) * DH4;
        kt_end = min(BK, p.t - kt);
        flash_load_tile(lid, 64u);
        flash_fold(kt);
    }
    store_output(0u, b, hh, row);
    if (QL > 1u) {
        store_output(1u, b, hh, row);
    }
}
