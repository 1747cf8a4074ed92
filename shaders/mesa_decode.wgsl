// The Mesa decode step (common/mesa_decode_body.wgsl) for GPUs without subgroups: the
// workgroup's sums go through workgroup memory, two barriers each.

#include "common/mesa_decode_body.wgsl"

var<workgroup> red: array<f32, MAX_D>;

fn dot_all(x: f32, lid: u32) -> f32 {
    red[lid] = x;
    workgroupBarrier();
    var s = 0.0;
    for (var i = 0u; i < WG; i++) {
        s += red[i];
    }
    workgroupBarrier();
    return s;
}

@compute @workgroup_size(WG)
fn mesa_decode(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    decode_step(wid.x, lid);
}
