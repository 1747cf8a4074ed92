// What a Mesa decode step (spec/mesa.md §3, §7) does around its CG solve, in one dispatch on
// each side (ops::mesa::step_prep, ops::mesa::step_out), reading the layer's fused input
// projection row [q | k | v | g (gated layers) | a | b] in place. One workgroup per (sequence,
// head): both sides end in a sum over the head dimension (the L2 norms of q and k, the output
// RMSNorm), which a workgroup reduces in workgroup memory.
//  * mesa_step_prep: shifts the token's pre-activation q and k into the conv cache, convolves
//    (kernel 4) and applies SiLU, L2-normalises q and k per head (eps inside the square root),
//    copies v out, and writes the gates the CG kernel reads: g = logsigmoid(a + a_bias),
//    β = sigmoid(b + b_bias). The biases sit in the gates buffer's tail (after λ), put there once
//    when the cache is made, so the kernel stays within 8 storage buffers.
//  * mesa_step_out: per-head RMSNorm of the solve's output times o_norm's weight, times
//    silu(g) on gated layers: the input of the output projection.
#include "common/grid.wgsl"
#include "common/math.wgsl"

struct Params {
    b: u32,
    h: u32,
    d: u32,      // head dim
    ld: u32,     // projection row length
    a_col: u32,  // column of a in the row (b follows at a_col + h)
    g_col: u32,  // column of g in the row; NO_GATE when the layer has none
    eps: f32,    // l2norm (prep) or RMSNorm (out) epsilon
    _p0: u32,
}

const KW: u32 = 4u;
const WG: u32 = 64u;
const MAX_D: u32 = 128u;
const NO_GATE: u32 = 0xffffffffu;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> proj: array<ST>;          // [B, ld]
@group(0) @binding(2) var<storage, read> q_conv: array<ST>;        // [H·D, 1, 4]
@group(0) @binding(3) var<storage, read> k_conv: array<ST>;        // [H·D, 1, 4]
@group(0) @binding(4) var<storage, read_write> conv: array<ST>;    // [B, 2·H·D, 4]: q's channels, then k's
@group(0) @binding(5) var<storage, read_write> gates: array<f32>;  // [g (B·H) | β (B·H) | λ (H·D) | a_bias (H) | b_bias (H)]
@group(0) @binding(6) var<storage, read_write> q_out: array<ST>;   // [B, H, D]
@group(0) @binding(7) var<storage, read_write> k_out: array<ST>;
@group(0) @binding(8) var<storage, read_write> v_out: array<ST>;
@group(0) @binding(9) var<storage, read> o_in: array<ST>;          // [B, H, D]
@group(0) @binding(10) var<storage, read> o_norm: array<ST>;       // [D]
@group(0) @binding(11) var<storage, read_write> y: array<ST>;      // [B, H·D]

var<workgroup> qa: array<f32, MAX_D>;
var<workgroup> ka: array<f32, MAX_D>;
var<workgroup> red: array<vec2<f32>, WG>;

// The workgroup's sum of x (every lane gets it).
fn sum_all(x: vec2<f32>, lid: u32) -> vec2<f32> {
    red[lid] = x;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s /= 2u) {
        if (lid < s) {
            red[lid] += red[lid + s];
        }
        workgroupBarrier();
    }
    return red[0];
}

// Shifts one channel's cache left, appends x, and returns SiLU of the convolution.
fn conv_silu(w_tap: u32, slot: u32, x: f32, is_k: bool) -> f32 {
    var acc = 0.0;
    for (var i = 0u; i < KW; i++) {
        var val = x;
        if (i + 1u < KW) {
            val = f32(conv[slot + i + 1u]);
        }
        conv[slot + i] = ST(val);
        var w = 0.0;
        if (is_k) {
            w = f32(k_conv[w_tap + i]);
        } else {
            w = f32(q_conv[w_tap + i]);
        }
        acc += w * val;
    }
    return silu(acc);
}

@compute @workgroup_size(WG)
fn mesa_step_prep(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    let bh = flat_group(wid, nwg);
    if (bh >= p.b * p.h) {
        return;
    }
    let bi = bh / p.h;
    let hh = bh % p.h;
    let hd = p.h * p.d;
    let row = bi * p.ld;
    var ss = vec2<f32>(0.0);
    for (var i = lid; i < p.d; i += WG) {
        let ch = hh * p.d + i;
        let yq = conv_silu(ch * KW, (bi * 2u * hd + ch) * KW, f32(proj[row + ch]), false);
        let yk = conv_silu(ch * KW, (bi * 2u * hd + hd + ch) * KW, f32(proj[row + hd + ch]), true);
        qa[i] = yq;
        ka[i] = yk;
        ss += vec2<f32>(yq * yq, yk * yk);
        v_out[bh * p.d + i] = proj[row + 2u * hd + ch];
    }
    let inv = inverseSqrt(sum_all(ss, lid) + p.eps);
    for (var i = lid; i < p.d; i += WG) {
        q_out[bh * p.d + i] = ST(qa[i] * inv.x);
        k_out[bh * p.d + i] = ST(ka[i] * inv.y);
    }
    if (lid == 0u) {
        let n = p.b * p.h;
        let bias = 2u * n + hd;
        gates[bh] = logsigmoid(f32(proj[row + p.a_col + hh]) + gates[bias + hh]);
        gates[n + bh] = sigmoid(f32(proj[row + p.a_col + p.h + hh]) + gates[bias + p.h + hh]);
    }
}

@compute @workgroup_size(WG)
fn mesa_step_out(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    let bh = flat_group(wid, nwg);
    if (bh >= p.b * p.h) {
        return;
    }
    let bi = bh / p.h;
    let hh = bh % p.h;
    var ss = 0.0;
    for (var i = lid; i < p.d; i += WG) {
        let v = f32(o_in[bh * p.d + i]);
        ss += v * v;
    }
    let r = inverseSqrt(sum_all(vec2<f32>(ss, 0.0), lid).x / f32(p.d) + p.eps);
    for (var i = lid; i < p.d; i += WG) {
        var v = f32(o_in[bh * p.d + i]) * r * f32(o_norm[i]);
        if (p.g_col != NO_GATE) {
            v *= silu(f32(proj[bi * p.ld + p.g_col + hh * p.d + i]));
        }
        y[bh * p.d + i] = ST(v);
    }
}
