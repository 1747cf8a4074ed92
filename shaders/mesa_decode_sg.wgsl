// The Mesa decode step (common/mesa_decode_body.wgsl) for GPUs with subgroups: a workgroup sum is
// a subgroupAdd per subgroup, then the few subgroup sums through workgroup memory (right for any
// subgroup size and any grouping of the invocations).

#include "common/mesa_decode_body.wgsl"

var<workgroup> sums: array<f32, MAX_D>; // one per subgroup (at least one lane each)
var<private> sg_lane: u32;
var<private> sg_id: u32;
var<private> sg_count: u32;

fn dot_all(x: f32, lid: u32) -> f32 {
    let s = subgroupAdd(x);
    if (sg_lane == 0u) {
        sums[sg_id] = s;
    }
    workgroupBarrier();
    var t = 0.0;
    for (var i = 0u; i < sg_count; i++) {
        t += sums[i];
    }
    workgroupBarrier();
    return t;
}

@compute @workgroup_size(WG)
fn mesa_decode_sg(@builtin(workgroup_id) wid: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32,
                  @builtin(subgroup_invocation_id) lane: u32,
                  @builtin(subgroup_id) sgid: u32,
                  @builtin(num_subgroups) nsg: u32) {
    sg_lane = lane;
    sg_id = sgid;
    sg_count = nsg;
    decode_step(wid.x, lid);
}
