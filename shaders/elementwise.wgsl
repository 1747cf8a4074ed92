// Elementwise maps. `unary` applies one activation chosen by `op`; `binary` combines a with b,
// where b is broadcast by repetition (b index = i mod nb: a bias or gate vector over rows).
#include "common/grid.wgsl"
#include "common/math.wgsl"

override WG: u32 = 256u;

const OP_SIGMOID: u32 = 0u;
const OP_SILU: u32 = 1u;
const OP_GELU: u32 = 2u;
const OP_LOGSIGMOID: u32 = 3u;
const OP_SOFTPLUS: u32 = 4u;
const OP_MUL: u32 = 16u;
const OP_ADD: u32 = 17u;

struct Params {
    n: u32,
    nb: u32,
    op: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<ST>;
@group(0) @binding(2) var<storage, read> b: array<ST>; // binary only
@group(0) @binding(3) var<storage, read_write> y: array<ST>;

fn apply_unary(op: u32, v: f32) -> f32 {
    switch op {
        case OP_SIGMOID: { return sigmoid(v); }
        case OP_SILU: { return silu(v); }
        case OP_GELU: { return gelu(v); }
        case OP_LOGSIGMOID: { return logsigmoid(v); }
        case OP_SOFTPLUS: { return softplus(v); }
        default: { return v; }
    }
}

@compute @workgroup_size(WG)
fn unary(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) lid: u32) {
    let i = flat_group(wid, nwg) * WG + lid;
    if (i < p.n) {
        y[i] = ST(apply_unary(p.op, f32(a[i])));
    }
}

@compute @workgroup_size(WG)
fn binary(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let i = flat_group(wid, nwg) * WG + lid;
    if (i < p.n) {
        let u = f32(a[i]);
        let v = f32(b[i % p.nb]);
        var r = u + v;
        if (p.op == OP_MUL) {
            r = u * v;
        }
        y[i] = ST(r);
    }
}
