// Input preparation of the Mesa layer (spec/mesa.md §3.2, §7): the causal depthwise short
// convolution (kernel 4) followed by SiLU, applied to q and k; the conv cache a prefill leaves
// (the last 4 pre-activation inputs, most recent last; a decode step runs the one-token form,
// shaders/mesa_step.wgsl); and the per-head L2 normalisation with the epsilon inside the square
// root.
#include "common/grid.wgsl"
#include "common/math.wgsl"

const KW: u32 = 4u;

struct Params {
    b: u32,
    t: u32,
    c: u32,     // channels (H·D)
    d: u32,     // head dim (l2norm)
    eps: f32,
    cache_c: u32, // conv_cache_fill: channels of the cache
    cache_at: u32, // and the first one x fills
    _p2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<ST>;        // [B, T, C]
@group(0) @binding(2) var<storage, read> w: array<ST>;        // [C, 1, 4]
@group(0) @binding(3) var<storage, read_write> cache: array<ST>; // [B, cache_c, 4]
@group(0) @binding(4) var<storage, read_write> y: array<ST>;  // [B, T, C]

fn flat(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return flat_group(wid, nwg) * 256u + lid;
}

@compute @workgroup_size(256)
fn short_conv(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let e = flat(wid, nwg, lid);
    if (e >= p.b * p.t * p.c) {
        return;
    }
    let ch = e % p.c;
    let t = (e / p.c) % p.t;
    let b = e / (p.c * p.t);
    var acc = 0.0;
    for (var i = 0u; i < KW; i++) {
        // tap i sees input t − 3 + i
        if (t + i >= KW - 1u) {
            acc += f32(w[ch * KW + i]) * f32(x[(b * p.t + t + i + 1u - KW) * p.c + ch]);
        }
    }
    y[e] = ST(silu(acc));
}

// After a prefill of T tokens: the cache holds inputs T−4 … T−1 (zeros before the start).
@compute @workgroup_size(256)
fn conv_cache_fill(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
    let e = flat(wid, nwg, lid);
    if (e >= p.b * p.c * KW) {
        return;
    }
    let i = e % KW;
    let ch = (e / KW) % p.c;
    let b = e / (KW * p.c);
    var val = 0.0;
    if (p.t + i >= KW) {
        val = f32(x[(b * p.t + p.t + i - KW) * p.c + ch]);
    }
    cache[(b * p.cache_c + p.cache_at + ch) * KW + i] = ST(val);
}

// y = x / sqrt(Σ x² + eps) per head row of d values.
@compute @workgroup_size(256)
fn l2norm(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let r = flat(wid, nwg, lid);
    if (r * p.d >= p.b * p.t * p.c) {
        return;
    }
    var ss = 0.0;
    for (var i = 0u; i < p.d; i++) {
        let v = f32(x[r * p.d + i]);
        ss += v * v;
    }
    let inv = inverseSqrt(ss + p.eps);
    for (var i = 0u; i < p.d; i++) {
        y[r * p.d + i] = ST(f32(x[r * p.d + i]) * inv);
    }
}
