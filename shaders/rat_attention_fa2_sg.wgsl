// RAT's inter-chunk attention for GPUs with subgroups (common/rat_attention_fa2_body.wgsl): a
// token's four partial scores summed by shuffles within its subgroup.
#include "common/rat_attention_fa2_body.wgsl"
#include "common/fa2_reduce_sg.wgsl"

@compute @workgroup_size(256)
fn rat_attention_fa2(@builtin(workgroup_id) wid: vec3<u32>,
                     @builtin(local_invocation_index) lid: u32,
                     @builtin(subgroup_invocation_id) lane: u32,
                     @builtin(subgroup_size) sgs: u32,
                     @builtin(subgroup_id) sgid: u32) {
    rat_attention_fa2_main(wid, lid, sgid * sgs + lane);
}
