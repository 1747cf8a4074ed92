// RAT's inter-chunk attention for GPUs without subgroups (common/rat_attention_fa2_body.wgsl):
// a token's four partial scores summed through workgroup memory.
#include "common/rat_attention_fa2_body.wgsl"
#include "common/fa2_reduce_wg.wgsl"

@compute @workgroup_size(256)
fn rat_attention_fa2(@builtin(workgroup_id) wid: vec3<u32>,
                     @builtin(local_invocation_index) lid: u32) {
    rat_attention_fa2_main(wid, lid, lid);
}
