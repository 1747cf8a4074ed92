// The CPU-adapter GEMM (gemm_direct.wgsl) for drivers whose subgroups are the 8 SIMD lanes
// (lavapipe/llvmpipe at 256 bits). There every storage load is a loop over the lanes that costs
// the same whether the lanes read one address or eight, and in gemm_direct the 8 uniform x loads
// per 4 steps of k are two thirds of the loads. Here lane l loads the vec4 of rows l and 8 + l and
// subgroupBroadcast (an extract and a splat) hands them to the other lanes, so a workgroup takes
// 16 rows: 6 loads per 4 steps of k feed 256 multiply-adds per lane (gemm_direct: 12 for 128).
// Measured on lavapipe at 16384×256×256, interleaved runs: 8 / 16 / 32 rows per workgroup gave
// 24 / 31–35 / 29–41 GFLOP/s (32 spills its accumulators; the machine is noisy). Same layout and
// results as gemm_direct; every lane of a subgroup must take part, so none returns early.
#include "common/gemm_io.wgsl"

@group(0) @binding(1) var<storage, read> x: array<vec4<ST>>; // [batch, M, K/4]
@group(0) @binding(2) var<storage, read> w: array<vec4<ST>>; // Wᵀ, [batch or 1, K, N4]

override DIRECT_WG: u32 = 64u;

@compute @workgroup_size(DIRECT_WG)
fn gemm_direct_sg(@builtin(local_invocation_index) lid: u32,
                  @builtin(workgroup_id) wid: vec3<u32>,
                  @builtin(subgroup_invocation_id) lane: u32) {
    let b = wid.z;
    // Row blocks run along x, the fastest grid dimension: workgroups that run one after the other
    // share their column block of Wᵀ, which then stays in the CPU's cache (1024³: 3× faster).
    let m0 = wid.x * 16u;
    let c4 = wid.y * DIRECT_WG + lid; // this lane's vec4 of columns
    let n0 = c4 * 4u;
    let k4 = p.k / 4u;
    let n4 = (p.n + 3u) / 4u;
    // Lanes past N read column block n4 − 1 and store nothing.
    let wb = b * p.w_bstride / 4u + min(c4, n4 - 1u);
    let xr = b * p.x_bstride / 4u + min(m0 + lane, p.m - 1u) * k4;
    let xr2 = b * p.x_bstride / 4u + min(m0 + 8u + lane, p.m - 1u) * k4;
    var acc: array<vec4<f32>, 16>;
    for (var kq = 0u; kq < k4; kq++) {
        let wk = wb + kq * 4u * n4;
        let b0 = vec4<f32>(w[wk]);
        let b1 = vec4<f32>(w[wk + n4]);
        let b2 = vec4<f32>(w[wk + 2u * n4]);
        let b3 = vec4<f32>(w[wk + 3u * n4]);
        let xl = vec4<f32>(x[xr + kq]);
        acc[0] = fold_row(acc[0], subgroupBroadcast(xl, 0u), b0, b1, b2, b3);
        acc[1] = fold_row(acc[1], subgroupBroadcast(xl, 1u), b0, b1, b2, b3);
        acc[2] = fold_row(acc[2], subgroupBroadcast(xl, 2u), b0, b1, b2, b3);
        acc[3] = fold_row(acc[3], subgroupBroadcast(xl, 3u), b0, b1, b2, b3);
        acc[4] = fold_row(acc[4], subgroupBroadcast(xl, 4u), b0, b1, b2, b3);
        acc[5] = fold_row(acc[5], subgroupBroadcast(xl, 5u), b0, b1, b2, b3);
        acc[6] = fold_row(acc[6], subgroupBroadcast(xl, 6u), b0, b1, b2, b3);
        acc[7] = fold_row(acc[7], subgroupBroadcast(xl, 7u), b0, b1, b2, b3);
        let xl2 = vec4<f32>(x[xr2 + kq]);
        acc[8] = fold_row(acc[8], subgroupBroadcast(xl2, 0u), b0, b1, b2, b3);
        acc[9] = fold_row(acc[9], subgroupBroadcast(xl2, 1u), b0, b1, b2, b3);
        acc[10] = fold_row(acc[10], subgroupBroadcast(xl2, 2u), b0, b1, b2, b3);
        acc[11] = fold_row(acc[11], subgroupBroadcast(xl2, 3u), b0, b1, b2, b3);
        acc[12] = fold_row(acc[12], subgroupBroadcast(xl2, 4u), b0, b1, b2, b3);
        acc[13] = fold_row(acc[13], subgroupBroadcast(xl2, 5u), b0, b1, b2, b3);
        acc[14] = fold_row(acc[14], subgroupBroadcast(xl2, 6u), b0, b1, b2, b3);
        acc[15] = fold_row(acc[15], subgroupBroadcast(xl2, 7u), b0, b1, b2, b3);
    }
    if (n0 >= p.n) {
        return;
    }
    for (var i = 0u; i < 16u; i++) {
        store_row(acc[i], m0 + i, n0, b * p.y_bstride);
    }
}
