// GPU GEMM, 128×128 tiles of y, K step 8 (any K, scalar loads): common/gemm_tile_body.wgsl.
const BM: u32 = 128u;
const BN: u32 = 128u;
const BK: u32 = 8u;
#include "common/gemm_tile_load.wgsl"
#include "common/gemm_tile_body.wgsl"
