// Loaders of the GPU GEMM tiles for any K: scalar loads (common/gemm_tile_body.wgsl).
#include "common/gemm_io.wgsl"

@group(0) @binding(1) var<storage, read> x: array<ST>; // [batch, M, K]
@group(0) @binding(2) var<storage, read> w: array<ST>; // W [batch or 1, N_total, K]; from w_off

fn load_x4(r: u32, k: u32, xb: u32) -> vec4<f32> {
    var v = vec4<f32>(0.0);
    if (r < p.m) {
        for (var j = 0u; j < 4u; j++) {
            if (k + j < p.k) {
                v[j] = f32(x[xb + r * p.k + k + j]);
            }
        }
    }
    return v;
}

fn load_w4(r: u32, k: u32, wb: u32) -> vec4<f32> {
    var v = vec4<f32>(0.0);
    if (r < p.n) {
        for (var j = 0u; j < 4u; j++) {
            if (k + j < p.k) {
                v[j] = f32(w[wb + r * p.k + k + j]);
            }
        }
    }
    return v;
}
