// Blocked-product flash attention forward (common/attention_mm_body.wgsl) on 16 × 16 × 16
// cooperative matrices (Vulkan: NVIDIA, AMD RDNA3, Intel Arc; f16 inputs, f32 accumulator):
// common/attention_mm_coop.wgsl.
const CM: u32 = 16u;
alias MA = coop_mat16x16<ST, A>;
alias MB = coop_mat16x16<ST, B>;
alias MC = coop_mat16x16<f32, C>;
const SPARE: u32 = CM * CM;
#include "common/attention_mm_body.wgsl"
#include "common/attention_mm_coop.wgsl"

@compute @workgroup_size(64)
fn attention_coop(@builtin(workgroup_id) wid: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32,
                  @builtin(subgroup_id) sgid: u32,
                  @builtin(num_subgroups) nsg: u32) {
    attention_mm_main(wid, lid, sgid, nsg);
}
