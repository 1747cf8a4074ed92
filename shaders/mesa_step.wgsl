// What a Mesa layer (spec/mesa.md §3, §7) does around its CG solve, reading the layer's fused
// input projection [q | k | v | g (gated layers) | a | b] in place (rows of `ld` values). One
// workgroup per (token, head): the prep and output sides end in a sum over the head dimension
// (the L2 norms of q and k, the output RMSNorm), which a workgroup reduces in workgroup memory.
//  * mesa_step_prep (a decode step, one token per sequence): shifts the token's pre-activation q
//    and k into the conv cache, convolves (kernel 4) and applies SiLU, L2-normalises q and k per
//    head (eps inside the square root), copies v out, and writes the gates the CG kernel reads:
//    g = logsigmoid(a + a_bias), β = sigmoid(b + b_bias). The biases sit in the gates buffer's
//    tail (after λ), put there once when the buffer is made, so the kernel stays within 8
//    storage buffers.
//  * mesa_seq_prep (a block of T tokens per sequence, the parallel path): the same for every
//    token at once, the convolution reading the block's earlier rows of the projection and,
//    before the block's start, the conv cache (the inputs that preceded it; zeros for a new
//    sequence), which it leaves as it is;
//  * mesa_conv_advance: then the cache ← the last 4 inputs (older cache entries shifted in
//    where the block is shorter than 4);
//  * mesa_step_out: per-head RMSNorm of the solve's output times o_norm's weight, times
//    silu(g) on gated layers: the input of the output projection (any number of tokens).
// CPU adapters take mesa_seq_prep_rows and mesa_step_out_rows: one invocation per (token, head),
// its sums and (prep) its row of q and k private. llvmpipe runs a workgroup's invocations in turn
// around every barrier: the workgroup forms made the Mesa layer's forward at T = 512 1.6× slower
// (37 → 58 ms), and recomputing the convolutions instead of keeping the row made the prep 1.5×.
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
    t: u32,      // mesa_seq_prep, mesa_conv_advance: tokens per sequence in the block (b: sequences)
}

const KW: u32 = 4u;
const WG: u32 = 64u;
const MAX_D: u32 = 128u;
const NO_GATE: u32 = 0xffffffffu;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> proj: array<ST>;          // [B, T, ld]
@group(0) @binding(2) var<storage, read> q_conv: array<ST>;        // [H·D, 1, 4]
@group(0) @binding(3) var<storage, read> k_conv: array<ST>;        // [H·D, 1, 4]
@group(0) @binding(4) var<storage, read_write> conv: array<ST>;    // [B, 2·H·D, 4]: q's channels, then k's
@group(0) @binding(5) var<storage, read_write> gates: array<f32>;  // [g (n) | β (n) | λ (H·D) | a_bias (H) | b_bias (H)], n = B·T·H
@group(0) @binding(6) var<storage, read_write> q_out: array<ST>;   // [B, T, H, D]
@group(0) @binding(7) var<storage, read_write> k_out: array<ST>;
@group(0) @binding(8) var<storage, read_write> v_out: array<ST>;
@group(0) @binding(9) var<storage, read> o_in: array<ST>;          // [rows, H, D]
@group(0) @binding(10) var<storage, read> o_norm: array<ST>;       // [D]
@group(0) @binding(11) var<storage, read_write> y: array<ST>;      // [rows, H·D]

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

// g and β of token-head `i` (of n) from the projection row starting at `row`.
fn write_gates(i: u32, row: u32, hh: u32, n: u32) {
    let bias = 2u * n + p.h * p.d;
    gates[i] = logsigmoid(f32(proj[row + p.a_col + hh]) + gates[bias + hh]);
    gates[n + i] = sigmoid(f32(proj[row + p.a_col + p.h + hh]) + gates[bias + p.h + hh]);
}

// SiLU of the convolution of q's (or, `is_k`, k's) channel `ch` at token `ti` of sequence `bi`:
// tap i sees the input at block time ti + i − 3, which before the block's start is conv cache
// slot ti + i + 1 (q's channels, then k's, as in the projection row). `shift` (a decode step,
// T = 1): the cache moves left and takes the token last, tap by tap (slot i + 1 is read before
// it is written).
fn conv_act(bi: u32, ti: u32, ch: u32, is_k: bool, shift: bool) -> f32 {
    let col = select(ch, p.h * p.d + ch, is_k);
    let slot = (bi * 2u * p.h * p.d + col) * KW;
    var acc = 0.0;
    for (var i = 0u; i < KW; i++) {
        var val = 0.0;
        if (ti + i + 1u >= KW) {
            val = f32(proj[(bi * p.t + ti + i + 1u - KW) * p.ld + col]);
        } else {
            val = f32(conv[slot + ti + i + 1u]);
        }
        if (shift) {
            conv[slot + i] = ST(val);
        }
        var w = 0.0;
        if (is_k) {
            w = f32(k_conv[ch * KW + i]);
        } else {
            w = f32(q_conv[ch * KW + i]);
        }
        acc += w * val;
    }
    return silu(acc);
}

// Token-head `i` of n (token = sequence · T + time) by the workgroup: conv + SiLU of its q and k
// channels, their L2 norms, v copied out, the gates.
fn prep_head(i: u32, n: u32, lid: u32, shift: bool) {
    let r = i / p.h;
    let hh = i % p.h;
    let bi = r / p.t;
    let ti = r % p.t;
    let row = r * p.ld;
    var ss = vec2<f32>(0.0);
    for (var j = lid; j < p.d; j += WG) {
        let ch = hh * p.d + j;
        let yq = conv_act(bi, ti, ch, false, shift);
        let yk = conv_act(bi, ti, ch, true, shift);
        qa[j] = yq;
        ka[j] = yk;
        ss += vec2<f32>(yq * yq, yk * yk);
        v_out[i * p.d + j] = proj[row + 2u * p.h * p.d + ch];
    }
    let inv = inverseSqrt(sum_all(ss, lid) + p.eps);
    for (var j = lid; j < p.d; j += WG) {
        q_out[i * p.d + j] = ST(qa[j] * inv.x);
        k_out[i * p.d + j] = ST(ka[j] * inv.y);
    }
    if (lid == 0u) {
        write_gates(i, row, hh, n);
    }
}

@compute @workgroup_size(WG)
fn mesa_step_prep(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    let i = flat_group(wid, nwg);
    if (i < p.b * p.h) {
        prep_head(i, p.b * p.h, lid, true);
    }
}

@compute @workgroup_size(WG)
fn mesa_seq_prep(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    let i = flat_group(wid, nwg);
    if (i < p.b * p.t * p.h) {
        prep_head(i, p.b * p.t * p.h, lid, false);
    }
}

var<private> row_q: array<f32, MAX_D>;
var<private> row_k: array<f32, MAX_D>;

@compute @workgroup_size(WG)
fn mesa_seq_prep_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                      @builtin(local_invocation_index) lid: u32) {
    let i = flat_group(wid, nwg) * WG + lid;
    let n = p.b * p.t * p.h;
    if (i >= n) {
        return;
    }
    let r = i / p.h;
    let hh = i % p.h;
    let bi = r / p.t;
    let ti = r % p.t;
    let hd = p.h * p.d;
    let row = r * p.ld;
    var ss = vec2<f32>(0.0);
    for (var j = 0u; j < p.d; j++) {
        let ch = hh * p.d + j;
        let yq = conv_act(bi, ti, ch, false, false);
        let yk = conv_act(bi, ti, ch, true, false);
        row_q[j] = yq;
        row_k[j] = yk;
        ss += vec2<f32>(yq * yq, yk * yk);
        v_out[i * p.d + j] = proj[row + 2u * hd + ch];
    }
    let inv = inverseSqrt(ss + p.eps);
    for (var j = 0u; j < p.d; j++) {
        q_out[i * p.d + j] = ST(row_q[j] * inv.x);
        k_out[i * p.d + j] = ST(row_k[j] * inv.y);
    }
    write_gates(i, row, hh, n);
}

// One invocation per (sequence, channel of q and k): its 4 slots in order, so a slot reads the
// older entry it shifts in (slot + T) before that one is overwritten.
@compute @workgroup_size(WG)
fn mesa_conv_advance(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                     @builtin(local_invocation_index) lid: u32) {
    let e = flat_group(wid, nwg) * WG + lid;
    let c2 = 2u * p.h * p.d;
    if (e >= p.b * c2) {
        return;
    }
    let bi = e / c2;
    let col = e % c2;
    for (var i = 0u; i < KW; i++) {
        if (p.t + i >= KW) {
            conv[e * KW + i] = proj[(bi * p.t + p.t + i - KW) * p.ld + col];
        } else {
            conv[e * KW + i] = conv[e * KW + i + p.t];
        }
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

@compute @workgroup_size(WG)
fn mesa_step_out_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                      @builtin(local_invocation_index) lid: u32) {
    let bh = flat_group(wid, nwg) * WG + lid;
    if (bh >= p.b * p.h) {
        return;
    }
    let bi = bh / p.h;
    let hh = bh % p.h;
    var ss = 0.0;
    for (var i = 0u; i < p.d; i++) {
        let v = f32(o_in[bh * p.d + i]);
        ss += v * v;
    }
    let r = inverseSqrt(ss / f32(p.d) + p.eps);
    for (var i = 0u; i < p.d; i++) {
        var v = f32(o_in[bh * p.d + i]) * r * f32(o_norm[i]);
        if (p.g_col != NO_GATE) {
            v *= silu(f32(proj[bi * p.ld + p.g_col + hh * p.d + i]));
        }
        y[bh * p.d + i] = ST(v);
    }
}
