// Tensor-core GEMM with 16 × 16 × 16 cooperative matrices (Vulkan: NVIDIA, AMD RDNA3, Intel
// Arc list f16·f16 + f32 at this size): common/gemm_coop_body.wgsl.
const CM: u32 = 16u;
alias MA = coop_mat16x16<ST, A>;
alias MB = coop_mat16x16<ST, B>;
alias MC = coop_mat16x16<f32, C>;
#include "common/gemm_coop_body.wgsl"
