// Flash attention forward for GPUs without subgroups (common/attention_fa2_body.wgsl): a query's
// four partial scores summed through workgroup memory.
#include "common/attention_fa2_body.wgsl"
#include "common/fa2_reduce_wg.wgsl"

@compute @workgroup_size(256)
fn attention_fa2(@builtin(workgroup_id) wid: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    attention_fa2_main(wid, lid, lid);
}
