// Bindings and loaders of the gemv kernels for any K: scalar loads.
#include "common/gemm_io.wgsl"

@group(0) @binding(1) var<storage, read> x: array<ST>; // [M, K]
@group(0) @binding(2) var<storage, read> w: array<ST>; // W [N_total, K]; the slice from w_off
@group(0) @binding(5) var<storage, read> z: array<ST>; // gate source (flags & 2)
@group(0) @binding(6) var<storage, read> nw: array<ST>; // norm weight (flags & 4)

fn load_x4(i: u32, kq: u32) -> vec4<f32> {
    var v = vec4<f32>(0.0);
    for (var e = 0u; e < 4u; e++) {
        let k = 4u * kq + e;
        if (k < p.k) {
            v[e] = f32(x[i * p.k + k]);
        }
    }
    return v;
}

fn load_w4(n: u32, kq: u32) -> vec4<f32> {
    var v = vec4<f32>(0.0);
    for (var e = 0u; e < 4u; e++) {
        let k = 4u * kq + e;
        if (k < p.k) {
            v[e] = f32(w[p.w_off + n * p.k + k]);
        }
    }
    return v;
}

fn load_z4(i: u32, kq: u32) -> vec4<f32> {
    var v = vec4<f32>(0.0);
    for (var e = 0u; e < 4u; e++) {
        let k = 4u * kq + e;
        if (k < p.k) {
            v[e] = f32(z[p.z_off + i * p.z_ld + k]);
        }
    }
    return v;
}

fn load_n4(kq: u32) -> vec4<f32> {
    var v = vec4<f32>(0.0);
    for (var e = 0u; e < 4u; e++) {
        let k = 4u * kq + e;
        if (k < p.k) {
            v[e] = f32(nw[k]);
        }
    }
    return v;
}
