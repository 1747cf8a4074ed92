// Bindings and loaders of the gemv kernels for K a multiple of 4: vec4 loads; the weight
// slice's offset and the gate's offset and stride are then multiples of 4 too.
#include "common/gemm_io.wgsl"

@group(0) @binding(1) var<storage, read> x: array<vec4<ST>>; // [M, K/4]
@group(0) @binding(2) var<storage, read> w: array<vec4<ST>>; // W [N_total, K/4]; from w_off
@group(0) @binding(5) var<storage, read> z: array<vec4<ST>>; // gate source (flags & 2)
@group(0) @binding(6) var<storage, read> nw: array<vec4<ST>>; // norm weight (flags & 4)

fn load_x4(i: u32, kq: u32) -> vec4<f32> {
    return vec4<f32>(x[i * (p.k / 4u) + kq]);
}

fn load_w4(n: u32, kq: u32) -> vec4<f32> {
    return vec4<f32>(w[(p.w_off + n * p.k) / 4u + kq]);
}

fn load_z4(i: u32, kq: u32) -> vec4<f32> {
    return vec4<f32>(z[(p.z_off + i * p.z_ld) / 4u + kq]);
}

fn load_n4(kq: u32) -> vec4<f32> {
    return vec4<f32>(nw[kq]);
}
