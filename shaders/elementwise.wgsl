// Elementwise maps. `unary` applies one activation chosen by `op`; `binary` combines a with b,
// where b is broadcast by repetition (b index = i mod nb: a bias or gate vector over rows);
// `glu` takes rows of a as [gate (nb) | up (nb)] (a fused gate/up projection's output) and writes
// act(gate) · up, n = rows · nb values.
// elementwise4.wgsl is the same on vec4s, for sizes that allow it.
#include "common/grid.wgsl"
#include "common/elementwise_ops.wgsl"

override WG: u32 = 256u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<ST>;
@group(0) @binding(2) var<storage, read> b: array<ST>; // binary only
@group(0) @binding(3) var<storage, read_write> y: array<ST>;

@compute @workgroup_size(WG)
fn unary(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) lid: u32) {
    let i = flat_group(wid, nwg) * WG + lid;
    if (i < p.n) {
        y[i] = ST(apply_unary(p.op, f32(a[i])));
    }
}

@compute @workgroup_size(WG)
fn glu(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
       @builtin(local_invocation_index) lid: u32) {
    let i = flat_group(wid, nwg) * WG + lid;
    if (i < p.n) {
        let g = i / p.nb * 2u * p.nb + i % p.nb;
        y[i] = ST(apply_unary(p.op, f32(a[g])) * f32(a[g + p.nb]));
    }
}

@compute @workgroup_size(WG)
fn binary(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let i = flat_group(wid, nwg) * WG + lid;
    if (i < p.n) {
        y[i] = ST(apply_binary(p.op, f32(a[i]), f32(b[i % p.nb])));
    }
}
