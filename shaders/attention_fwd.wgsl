// Flash-style causal softmax attention, optionally with a sliding window, never holding a T×T matrix.
// q, k, v, o are [B, T, H, dh] (the [B, T, D] projection layout, head-major channels).
// A workgroup takes BQ consecutive queries of one (batch, head), one query per invocation; K and V
// stream through workgroup memory in tiles of BK keys shared by the BQ queries (common/flash.wgsl).
// With a window W, query t sees keys t−W … t; key tiles wholly outside every query's window are
// skipped, so the cost is O(T·W). Without one (W = 0xffffffff) it is plain causal attention.
#include "common/flash.wgsl"

const BQ: u32 = 64u;

struct Params {
    b: u32,
    t: u32,
    h: u32,
    dh: u32,
    window: u32,
    scale: f32,
    _p0: u32,
    _p1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<vec4<ST>>;
@group(0) @binding(2) var<storage, read> k: array<vec4<ST>>;
@group(0) @binding(3) var<storage, read> v: array<vec4<ST>>;
@group(0) @binding(4) var<storage, read_write> o: array<vec4<ST>>;

var<private> tq: u32;
var<private> kv0: u32;    // vec4 offset of key 0 of the current tile, this (batch, head)
var<private> kt_end: u32; // keys of the current tile that exist: kt_end − tile start
var<private> krow: u32;   // vec4s per token

fn flash_k(j: u32, i: u32) -> vec4<f32> {
    return vec4<f32>(k[kv0 + j * krow + i]);
}

fn flash_v(j: u32, i: u32) -> vec4<f32> {
    return vec4<f32>(v[kv0 + j * krow + i]);
}

fn tile_key_valid(j: u32) -> bool {
    return j < kt_end;
}

fn key_visible(tk: u32) -> bool {
    return tk <= tq && (p.window == 0xffffffffu || tq - tk <= p.window);
}

@compute @workgroup_size(64)
fn attention_fwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let b = wid.y / p.h;
    let hh = wid.y % p.h;
    let t0 = wid.x * BQ;
    tq = t0 + lid;
    let row = p.h * DH4; // vec4s per token
    krow = row;
    let qbase = (b * p.t + min(tq, p.t - 1u)) * row + hh * DH4;
    for (var i = 0u; i < DH4; i++) {
        qv[i] = vec4<f32>(q[qbase + i]) * p.scale;
    }
    // Keys any query of this tile can see: [max(0, t0 − W), last query].
    let t_last = min(t0 + BQ, p.t) - 1u;
    var k_lo = 0u;
    if (p.window != 0xffffffffu && t0 > p.window) {
        k_lo = t0 - p.window;
    }
    for (var kt = (k_lo / BK) * BK; kt <= t_last; kt += BK) {
        // Keys past the end are masked by key_visible (no query sees them); the tile load
        // zero-fills them and storage reads of them are clamped by bounds checks.
        kv0 = (b * p.t + kt) * row + hh * DH4;
        kt_end = min(BK, p.t - kt);
        flash_load_tile(lid, 64u);
        flash_fold(kt);
    }
    if (tq < p.t) {
        for (var i = 0u; i < DH4; i++) {
            o[qbase + i] = vec4<ST>(flash_out(i));
        }
    }
}
