// Loaders of the GPU GEMM tiles for K a multiple of 4: one vec4 load per call (the batch strides
// and the weight slice's offset are then multiples of 4 too). K tiles start at multiples of 4, so
// a vec4 is either inside K or past it.
#include "common/gemm_io.wgsl"

@group(0) @binding(1) var<storage, read> x: array<vec4<ST>>; // [batch, M, K/4]
@group(0) @binding(2) var<storage, read> w: array<vec4<ST>>; // W [batch or 1, N_total, K/4]

fn load_x4(r: u32, k: u32, xb: u32) -> vec4<f32> {
    if (r < p.m && k < p.k) {
        return vec4<f32>(x[(xb + r * p.k + k) / 4u]);
    }
    return vec4<f32>(0.0);
}

fn load_w4(r: u32, k: u32, wb: u32) -> vec4<f32> {
    if (r < p.n && k < p.k) {
        return vec4<f32>(w[(wb + r * p.k + k) / 4u]);
    }
    return vec4<f32>(0.0);
}
