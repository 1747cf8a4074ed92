// rat_attention.wgsl for CPU drivers with 8-lane subgroups: the chunk keys and values reach the
// invocations by subgroup broadcast (common/flash_subgroup.wgsl). Same bindings and launch.
#include "common/flash_subgroup.wgsl"
#include "common/rat_attention_body.wgsl"

@compute @workgroup_size(64)
fn rat_attention(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32,
                 @builtin(subgroup_invocation_id) lane: u32) {
    sg_lane = lane;
    rat_attention_main(wid, lid);
}
