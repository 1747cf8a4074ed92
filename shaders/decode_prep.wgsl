// What a decode step does between its fused input projection and its attention, in one dispatch
// per layer (ops::attention::step_prep, ops::rat::step_prep): everything here is per channel, so
// one invocation takes one rotation pair (i, i + dh/2) of one head of one sequence and nothing
// waits on anything else.
//  * attention_step_prep: from the projection row [v | q | k] (the upstream in_proj order),
//    rotates q and k at the token's position, writes k and v into the cache slot and q out.
//  * rat_step_prep: from the projection row [z | x | g | q | k] (grouped q and k), runs the gated
//    recurrent step of values and keys (g = sigmoid(g_pre + bias), starting over at a chunk start),
//    keeps the running states, writes the running key (rotated at the chunk index) and value into
//    the chunk's cache slot, and writes the query of every head (its group's, rotated) out.
// The cos/sin table row is RoPE's (ops::rope): cos in [0, dh/2), sin in [dh/2, dh).
#include "common/grid.wgsl"
#include "common/math.wgsl"

struct Params {
    b: u32,
    h: u32,
    dh: u32,
    groups: u32,
    ld: u32,     // row length of the projection
    pos: u32,    // table row: the token's position (attention), its chunk index (RAT)
    slot: u32,   // cache slot written
    cap: u32,    // cache slots
    reset: u32,  // RAT: the token starts a chunk
    _p0: u32,
    _p1: u32,
    _p2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> proj: array<ST>;       // [B, ld]
@group(0) @binding(2) var<storage, read> table: array<f32>;     // [positions, dh]
@group(0) @binding(3) var<storage, read> gate_bias: array<ST>;  // [D] (RAT)
@group(0) @binding(4) var<storage, read_write> last_v: array<ST>; // [B, D] running states (RAT)
@group(0) @binding(5) var<storage, read_write> last_k: array<ST>;
@group(0) @binding(6) var<storage, read_write> cache_k: array<ST>; // [B, H, cap, dh]
@group(0) @binding(7) var<storage, read_write> cache_v: array<ST>;
@group(0) @binding(8) var<storage, read_write> q_out: array<ST>;   // [B, D]

struct Pair {
    b: u32,
    hh: u32,
    i: u32,     // first of the pair (i < dh/2)
    half: u32,
    c: f32,
    s: f32,
    live: bool,
}

fn pair(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> Pair {
    var r: Pair;
    r.half = p.dh / 2u;
    let idx = flat_group(wid, nwg) * 64u + lid;
    r.live = idx < p.b * p.h * r.half;
    let e = min(idx, p.b * p.h * r.half - 1u);
    r.i = e % r.half;
    r.hh = (e / r.half) % p.h;
    r.b = e / (r.half * p.h);
    r.c = table[p.pos * p.dh + r.i];
    r.s = table[p.pos * p.dh + r.half + r.i];
    return r;
}

// (lo, hi) rotated by the pair's angle.
fn rotate(r: Pair, lo: f32, hi: f32) -> vec2<f32> {
    return vec2<f32>(lo * r.c - hi * r.s, hi * r.c + lo * r.s);
}

fn cache_at(r: Pair, j: u32) -> u32 {
    return ((r.b * p.h + r.hh) * p.cap + p.slot) * p.dh + j;
}

@compute @workgroup_size(64)
fn attention_step_prep(@builtin(workgroup_id) wid: vec3<u32>,
                       @builtin(num_workgroups) nwg: vec3<u32>,
                       @builtin(local_invocation_index) lid: u32) {
    let r = pair(wid, nwg, lid);
    if (!r.live) {
        return;
    }
    let d = p.h * p.dh;
    let row = r.b * p.ld + r.hh * p.dh;
    let lo = r.i;
    let hi = r.i + r.half;
    let q = rotate(r, f32(proj[row + d + lo]), f32(proj[row + d + hi]));
    let k = rotate(r, f32(proj[row + 2u * d + lo]), f32(proj[row + 2u * d + hi]));
    q_out[r.b * d + r.hh * p.dh + lo] = ST(q.x);
    q_out[r.b * d + r.hh * p.dh + hi] = ST(q.y);
    cache_k[cache_at(r, lo)] = ST(k.x);
    cache_k[cache_at(r, hi)] = ST(k.y);
    cache_v[cache_at(r, lo)] = proj[row + lo];
    cache_v[cache_at(r, hi)] = proj[row + hi];
}

@compute @workgroup_size(64)
fn rat_step_prep(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    let r = pair(wid, nwg, lid);
    if (!r.live) {
        return;
    }
    let d = p.h * p.dh;
    let dg = p.groups * p.dh;
    let row = r.b * p.ld;
    let grp = (r.hh % p.groups) * p.dh;
    var sk = vec2<f32>(0.0);
    var sv = vec2<f32>(0.0);
    for (var e = 0u; e < 2u; e++) {
        let j = r.i + e * r.half;   // channel within the head
        let ch = r.hh * p.dh + j;   // channel within D
        let g = sigmoid(f32(proj[row + 2u * d + ch]) + f32(gate_bias[ch]));
        var pv = 0.0;
        var pk = 0.0;
        if (p.reset == 0u) {
            pv = f32(last_v[r.b * d + ch]);
            pk = f32(last_k[r.b * d + ch]);
        }
        let v = g * pv + (1.0 - g) * f32(proj[row + d + ch]);
        let k = g * pk + (1.0 - g) * f32(proj[row + 3u * d + dg + grp + j]);
        // Stored as the state dtype, and the rest computed from what is stored, as the scan does.
        last_v[r.b * d + ch] = ST(v);
        last_k[r.b * d + ch] = ST(k);
        sv[e] = f32(ST(v));
        sk[e] = f32(ST(k));
    }
    let kr = rotate(r, sk.x, sk.y);
    let q = rotate(r, f32(proj[row + 3u * d + grp + r.i]), f32(proj[row + 3u * d + grp + r.i + r.half]));
    cache_k[cache_at(r, r.i)] = ST(kr.x);
    cache_k[cache_at(r, r.i + r.half)] = ST(kr.y);
    cache_v[cache_at(r, r.i)] = ST(sv.x);
    cache_v[cache_at(r, r.i + r.half)] = ST(sv.y);
    q_out[r.b * d + r.hh * p.dh + r.i] = ST(q.x);
    q_out[r.b * d + r.hh * p.dh + r.i + r.half] = ST(q.y);
}
