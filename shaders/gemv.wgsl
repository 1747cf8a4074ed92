// gemv_wg (workgroup-memory sums) for any K, scalar loads: common/gemv_body.wgsl.
#include "common/gemv_load.wgsl"
#include "common/gemv_body.wgsl"
#include "common/gemv_wg_entry.wgsl"
