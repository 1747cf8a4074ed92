// GPU GEMM, 64×64 tiles of y, K step 16 (any K, scalar loads): common/gemm_tile_body.wgsl.
const BM: u32 = 64u;
const BN: u32 = 64u;
const BK: u32 = 16u;
#include "common/gemm_tile_load.wgsl"
#include "common/gemm_tile_body.wgsl"
