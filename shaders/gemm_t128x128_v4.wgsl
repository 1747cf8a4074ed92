// GPU GEMM, 128×128 tiles of y, K step 8 (K a multiple of 4, vec4 loads): common/gemm_tile_body.wgsl.
const BM: u32 = 128u;
const BN: u32 = 128u;
const BK: u32 = 8u;
#include "common/gemm_tile_load4.wgsl"
#include "common/gemm_tile_body.wgsl"
