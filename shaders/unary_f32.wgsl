// `unary` of elementwise.wgsl with an f32 output whatever the input's storage: in an f16 model,
// Mesa's log-decay and beta gates, which its kernels read as f32 (their input, the gate
// projection, is already f16; this keeps the activation from adding a second rounding).
#include "common/grid.wgsl"
#include "common/elementwise_ops.wgsl"

override WG: u32 = 256u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<ST>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(WG)
fn unary_f32(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
    let i = flat_group(wid, nwg) * WG + lid;
    if (i < p.n) {
        y[i] = apply_unary(p.op, f32(a[i]));
    }
}
