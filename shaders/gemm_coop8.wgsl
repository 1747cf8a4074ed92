// Tensor-core GEMM with 8 × 8 × 8 cooperative matrices (Metal's simdgroup matrices on Apple
// GPUs, M1 and later): common/gemm_coop_body.wgsl.
const CM: u32 = 8u;
alias MA = coop_mat8x8<ST, A>;
alias MB = coop_mat8x8<ST, B>;
alias MC = coop_mat8x8<f32, C>;
#include "common/gemm_coop_body.wgsl"
