// RAT's intra-chunk gated linear recurrence (spec/rat.md §2.4), fused with the forget gate:
//   g_t = σ(g_pre_t + b_g),  s_t = g_t ⊙ s_{t−1} + (1 − g_t) ⊙ u_t,  reset at every chunk start,
// applied with the same gate to the values and to the head-tiled keys (head h uses key group
// h mod G). `rat_scan` runs one invocation per (batch, chunk, channel) over the chunk's L tokens (a
// ragged last chunk just has fewer); `rat_step` advances the running states by one token (decode).
#include "common/grid.wgsl"
#include "common/math.wgsl"

struct Params {
    b: u32,
    t: u32,
    d: u32,
    l: u32,
    groups: u32,
    dh: u32,
    reset: u32, // rat_step: 1 when the token starts a chunk
    _p: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> v: array<ST>;      // [B, T, D]
@group(0) @binding(2) var<storage, read> g_pre: array<ST>;  // [B, T, D]
@group(0) @binding(3) var<storage, read> g_bias: array<ST>; // [D]
@group(0) @binding(4) var<storage, read> k_grp: array<ST>;  // [B, T, G·dh]
@group(0) @binding(5) var<storage, read_write> sv: array<ST>; // scanned values [B, T, D] (rat_step: [B, D])
@group(0) @binding(6) var<storage, read_write> sk: array<ST>; // scanned keys, tiled, un-rotated

fn key_channel(ch: u32) -> u32 {
    let h = ch / p.dh;
    return (h % p.groups) * p.dh + ch % p.dh;
}

@compute @workgroup_size(64)
fn rat_scan(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    let e = flat_group(wid, nwg) * 64u + lid;
    let chunks = (p.t + p.l - 1u) / p.l;
    if (e >= p.b * chunks * p.d) {
        return;
    }
    let ch = e % p.d;
    let c = (e / p.d) % chunks;
    let b = e / (p.d * chunks);
    let kc = key_channel(ch);
    let kd = p.groups * p.dh;
    let bias = f32(g_bias[ch]);
    var s_v = 0.0;
    var s_k = 0.0;
    let end = min(c * p.l + p.l, p.t);
    for (var t = c * p.l; t < end; t++) {
        let i = (b * p.t + t) * p.d + ch;
        let g = sigmoid(f32(g_pre[i]) + bias);
        s_v = g * s_v + (1.0 - g) * f32(v[i]);
        s_k = g * s_k + (1.0 - g) * f32(k_grp[(b * p.t + t) * kd + kc]);
        sv[i] = ST(s_v);
        sk[i] = ST(s_k);
    }
}

@compute @workgroup_size(64)
fn rat_step(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    let e = flat_group(wid, nwg) * 64u + lid;
    if (e >= p.b * p.d) {
        return;
    }
    let ch = e % p.d;
    let b = e / p.d;
    let g = sigmoid(f32(g_pre[e]) + f32(g_bias[ch]));
    let keep = select(g, 0.0, p.reset == 1u);
    sv[e] = ST(keep * f32(sv[e]) + (1.0 - g) * f32(v[e]));
    sk[e] = ST(keep * f32(sk[e]) + (1.0 - g) * f32(k_grp[b * p.groups * p.dh + key_channel(ch)]));
}
