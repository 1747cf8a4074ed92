// GPU GEMM tiles for K a multiple of 4 (vec4 loads): common/gemm_tile_body.wgsl with the tile
// shape as override constants (ops::gemm::Tile sets BM × BN: 64×64, 128×64, 128×128).
#include "common/gemm_tile_load4.wgsl"
#include "common/gemm_tile_body.wgsl"
