// gemv_wg (workgroup-memory sums) for K a multiple of 4, vec4 loads: common/gemv_body.wgsl.
#include "common/gemv_load4.wgsl"
#include "common/gemv_body.wgsl"
#include "common/gemv_wg_entry.wgsl"
