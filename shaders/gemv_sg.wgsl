// gemv_sg (subgroup sums) for any K, scalar loads: common/gemv_body.wgsl.
#include "common/gemv_load.wgsl"
#include "common/gemv_body.wgsl"
#include "common/gemv_sg_entry.wgsl"
