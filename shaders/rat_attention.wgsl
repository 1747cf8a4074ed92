// RAT's inter-chunk attention (spec/rat.md §2.6), flash-style. Token t in chunk c = t / L attends,
// in one softmax, to the final states of chunks 0 … c−1 (key: scanned key at token jL+L−1, rotated
// at chunk position j; value: scanned value there) and to its own running state (score q·k̃_t,
// value ṽ_t). The own state seeds the online softmax; chunk keys stream through workgroup memory in
// tiles of BK chunks (common/flash.wgsl). No T×C score matrix is formed.
// qr: queries rotated at chunk positions, [B, T, G·dh] (head h uses group h mod G);
// kr: scanned keys rotated at chunk positions, [B, T, D]; sv: scanned values, [B, T, D].
#include "common/flash.wgsl"

const BQ: u32 = 64u;

struct Params {
    b: u32,
    t: u32,
    h: u32,
    groups: u32,
    l: u32,
    scale: f32,
    _p0: u32,
    _p1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> qr: array<vec4<ST>>;
@group(0) @binding(2) var<storage, read> kr: array<vec4<ST>>;
@group(0) @binding(3) var<storage, read> sv: array<vec4<ST>>;
@group(0) @binding(4) var<storage, read_write> o: array<vec4<ST>>;

var<private> cq: u32; // chunk of this invocation's query
var<private> kv0: u32;    // vec4 offset of the final state of the tile's first chunk
var<private> kt_end: u32; // chunks of the current tile that are visible to some query
var<private> krow: u32;   // vec4s between consecutive chunk finals (L tokens)

fn flash_k(j: u32, i: u32) -> vec4<f32> {
    return vec4<f32>(kr[kv0 + j * krow + i]);
}

fn flash_v(j: u32, i: u32) -> vec4<f32> {
    return vec4<f32>(sv[kv0 + j * krow + i]);
}

fn tile_key_valid(j: u32) -> bool {
    return j < kt_end;
}

fn key_visible(j: u32) -> bool {
    return j < cq;
}

@compute @workgroup_size(64)
fn rat_attention(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let b = wid.y / p.h;
    let hh = wid.y % p.h;
    let t0 = wid.x * BQ;
    let tq = min(t0 + lid, p.t - 1u);
    cq = tq / p.l;
    let row = p.h * DH4;
    krow = p.l * row;
    let base = (b * p.t + tq) * row + hh * DH4;
    let qbase = (b * p.t + tq) * p.groups * DH4 + (hh % p.groups) * DH4;
    var own: array<vec4<f32>, MAX_DH4>;
    var s = 0.0;
    for (var i = 0u; i < DH4; i++) {
        qv[i] = vec4<f32>(qr[qbase + i]) * p.scale;
        s += dot(qv[i], vec4<f32>(kr[base + i]));
        own[i] = vec4<f32>(sv[base + i]);
    }
    flash_seed(s, &own);
    // Chunks any query of this tile can see: 0 … c(last query) − 1.
    let c_end = (min(t0 + BQ, p.t) - 1u) / p.l;
    for (var j0 = 0u; j0 < c_end; j0 += BK) {
        kv0 = (b * p.t + j0 * p.l + p.l - 1u) * row + hh * DH4;
        kt_end = min(BK, c_end - j0);
        flash_load_tile(lid, 64u);
        flash_fold(j0);
    }
    if (t0 + lid < p.t) {
        for (var i = 0u; i < DH4; i++) {
            o[base + i] = vec4<ST>(flash_out(i));
        }
    }
}
