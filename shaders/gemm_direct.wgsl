// GEMM schedule for CPU adapters (llvmpipe/lavapipe), where workgroup barriers are expensive
// coroutine switches and the CPU caches already give the reuse: each invocation computes a 4×4
// block of y straight from storage, with no workgroup memory and no barriers.
//
// `w` holds Wᵀ as [batch or 1, K, N4] with rows padded to N4 = 4·ceil(N/4) (the launch wrapper
// transposes W first), so neighbouring invocations take neighbouring vec4 columns: whole-vector
// loads on a SIMD CPU, and x is one broadcast vec4 per row and 4 steps of k. Needs K % 4 == 0
// (the wrapper uses the tiled schedule otherwise).
#include "common/gemm_io.wgsl"

@group(0) @binding(1) var<storage, read> x: array<vec4<ST>>; // [batch, M, K/4]
@group(0) @binding(2) var<storage, read> w: array<vec4<ST>>;

override DIRECT_WG_X: u32 = 8u;
override DIRECT_WG_Y: u32 = 8u;

@compute @workgroup_size(DIRECT_WG_X, DIRECT_WG_Y)
fn gemm_direct(@builtin(global_invocation_id) gid: vec3<u32>) {
    let b = gid.z;
    let m0 = gid.y * 4u;
    let n0 = gid.x * 4u;
    if (m0 >= p.m || n0 >= p.n) {
        return;
    }
    let k4 = p.k / 4u;
    let xb = b * p.x_bstride / 4u;
    let n4 = (p.n + 3u) / 4u;
    let wb = b * p.w_bstride / 4u + gid.x;
    // Rows past the edge re-read the last valid row; their results are never stored.
    var xr: array<u32, 4>;
    for (var i = 0u; i < 4u; i++) {
        xr[i] = xb + min(m0 + i, p.m - 1u) * k4;
    }
    var acc: array<vec4<f32>, 4>;
    for (var kq = 0u; kq < k4; kq++) {
        let a0 = vec4<f32>(x[xr[0] + kq]);
        let a1 = vec4<f32>(x[xr[1] + kq]);
        let a2 = vec4<f32>(x[xr[2] + kq]);
        let a3 = vec4<f32>(x[xr[3] + kq]);
        for (var j = 0u; j < 4u; j++) {
            let bv = vec4<f32>(w[wb + (kq * 4u + j) * n4]);
            acc[0] += a0[j] * bv;
            acc[1] += a1[j] * bv;
            acc[2] += a2[j] * bv;
            acc[3] += a3[j] * bv;
        }
    }
    store_block(acc, m0, n0, b * p.y_bstride);
}
