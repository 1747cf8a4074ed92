// The CPU-adapter GEMM (gemm_direct.wgsl) for drivers whose subgroups are the 8 SIMD lanes
// (lavapipe/llvmpipe at 256 bits). There every storage load is a loop over the lanes that costs
// the same whether the lanes read one address or eight, and in gemm_direct the 8 uniform x loads
// per 4 steps of k are two thirds of the loads. Here lane l loads the vec4 of rows l and 8 + l and
// subgroupBroadcast (an extract and a splat) hands them to the other lanes, so a workgroup takes
// 16 rows; each lane computes BLOCKS blocks of 4 columns, DIRECT_WG vec4s apart (so that the
// lanes' W loads stay contiguous): with two, 10 loads per 4 steps of k feed 512 multiply-adds per
// lane (gemm_direct: 12 for 128). Measured on lavapipe at 16384×256×256, interleaved runs: 8 / 16
// / 32 rows per workgroup with one column block gave 24 / 31–35 / 29–41 GFLOP/s (32 spills its
// accumulators; the machine is noisy); 16 rows with two blocks 39–40, with three 35, 32 rows with
// two 10; at K = 2048 two blocks were half as fast as one (the launch wrapper picks). Same layout
// and results as gemm_direct; every lane of a subgroup must take part in the broadcasts, so none
// returns early.
#include "common/gemm_io.wgsl"

@group(0) @binding(1) var<storage, read> x: array<vec4<ST>>; // [batch, M, K/4]
@group(0) @binding(2) var<storage, read> w: array<vec4<ST>>; // Wᵀ, [batch or 1, K, N4]

override DIRECT_WG: u32 = 64u;
// Column blocks per lane, 1 or 2: two where the workgroup's block of Wᵀ stays small enough for the
// CPU's caches (the launch wrapper decides; ops/gemm.rs).
override BLOCKS: u32 = 2u;

@compute @workgroup_size(DIRECT_WG)
fn gemm_direct_sg(@builtin(local_invocation_index) lid: u32,
                  @builtin(workgroup_id) wid: vec3<u32>,
                  @builtin(subgroup_invocation_id) lane: u32) {
    let b = wid.z;
    // Row blocks run along x, the fastest grid dimension: workgroups that run one after the other
    // share their column block of Wᵀ, which then stays in the CPU's cache (1024³: 3× faster).
    let m0 = wid.x * 16u;
    let c4 = wid.y * BLOCKS * DIRECT_WG + lid; // this lane's first vec4 of columns
    let n0 = c4 * 4u;
    let k4 = p.k / 4u;
    let n4 = p.w_ld / 4u;
    // Blocks past N read the last column block of the slice and store nothing.
    let last = (p.n + 3u) / 4u - 1u;
    let wb = (b * p.w_bstride + p.w_off) / 4u + min(c4, last);
    let wb2 = (b * p.w_bstride + p.w_off) / 4u + min(c4 + DIRECT_WG, last);
    let xr = b * p.x_bstride / 4u + min(m0 + lane, p.m - 1u) * k4;
    let xr2 = b * p.x_bstride / 4u + min(m0 + 8u + lane, p.m - 1u) * k4;
    var acc: array<vec4<f32>, 16>;
    var acd: array<vec4<f32>, 16>;
    for (var kq = 0u; kq < k4; kq++) {
        let wk = wb + kq * 4u * n4;
        let b0 = vec4<f32>(w[wk]);
        let b1 = vec4<f32>(w[wk + n4]);
        let b2 = vec4<f32>(w[wk + 2u * n4]);
        let b3 = vec4<f32>(w[wk + 3u * n4]);
        let xl = vec4<f32>(x[xr + kq]);
        let x0 = subgroupBroadcast(xl, 0u);
        acc[0] = fold_row(acc[0], x0, b0, b1, b2, b3);
        let x1 = subgroupBroadcast(xl, 1u);
        acc[1] = fold_row(acc[1], x1, b0, b1, b2, b3);
        let x2 = subgroupBroadcast(xl, 2u);
        acc[2] = fold_row(acc[2], x2, b0, b1, b2, b3);
        let x3 = subgroupBroadcast(xl, 3u);
        acc[3] = fold_row(acc[3], x3, b0, b1, b2, b3);
        let x4 = subgroupBroadcast(xl, 4u);
        acc[4] = fold_row(acc[4], x4, b0, b1, b2, b3);
        let x5 = subgroupBroadcast(xl, 5u);
        acc[5] = fold_row(acc[5], x5, b0, b1, b2, b3);
        let x6 = subgroupBroadcast(xl, 6u);
        acc[6] = fold_row(acc[6], x6, b0, b1, b2, b3);
        let x7 = subgroupBroadcast(xl, 7u);
        acc[7] = fold_row(acc[7], x7, b0, b1, b2, b3);
        let xl2 = vec4<f32>(x[xr2 + kq]);
        let x8 = subgroupBroadcast(xl2, 0u);
        acc[8] = fold_row(acc[8], x8, b0, b1, b2, b3);
        let x9 = subgroupBroadcast(xl2, 1u);
        acc[9] = fold_row(acc[9], x9, b0, b1, b2, b3);
        let x10 = subgroupBroadcast(xl2, 2u);
        acc[10] = fold_row(acc[10], x10, b0, b1, b2, b3);
        let x11 = subgroupBroadcast(xl2, 3u);
        acc[11] = fold_row(acc[11], x11, b0, b1, b2, b3);
        let x12 = subgroupBroadcast(xl2, 4u);
        acc[12] = fold_row(acc[12], x12, b0, b1, b2, b3);
        let x13 = subgroupBroadcast(xl2, 5u);
        acc[13] = fold_row(acc[13], x13, b0, b1, b2, b3);
        let x14 = subgroupBroadcast(xl2, 6u);
        acc[14] = fold_row(acc[14], x14, b0, b1, b2, b3);
        let x15 = subgroupBroadcast(xl2, 7u);
        acc[15] = fold_row(acc[15], x15, b0, b1, b2, b3);
        if (BLOCKS > 1u) {
            let wk2 = wb2 + kq * 4u * n4;
            let c0 = vec4<f32>(w[wk2]);
            let c1 = vec4<f32>(w[wk2 + n4]);
            let c2 = vec4<f32>(w[wk2 + 2u * n4]);
            let c3 = vec4<f32>(w[wk2 + 3u * n4]);
            acd[0] = fold_row(acd[0], x0, c0, c1, c2, c3);
            acd[1] = fold_row(acd[1], x1, c0, c1, c2, c3);
            acd[2] = fold_row(acd[2], x2, c0, c1, c2, c3);
            acd[3] = fold_row(acd[3], x3, c0, c1, c2, c3);
            acd[4] = fold_row(acd[4], x4, c0, c1, c2, c3);
            acd[5] = fold_row(acd[5], x5, c0, c1, c2, c3);
            acd[6] = fold_row(acd[6], x6, c0, c1, c2, c3);
            acd[7] = fold_row(acd[7], x7, c0, c1, c2, c3);
            acd[8] = fold_row(acd[8], x8, c0, c1, c2, c3);
            acd[9] = fold_row(acd[9], x9, c0, c1, c2, c3);
            acd[10] = fold_row(acd[10], x10, c0, c1, c2, c3);
            acd[11] = fold_row(acd[11], x11, c0, c1, c2, c3);
            acd[12] = fold_row(acd[12], x12, c0, c1, c2, c3);
            acd[13] = fold_row(acd[13], x13, c0, c1, c2, c3);
            acd[14] = fold_row(acd[14], x14, c0, c1, c2, c3);
            acd[15] = fold_row(acd[15], x15, c0, c1, c2, c3);
        }
    }
    if (n0 < p.n) {
        for (var i = 0u; i < 16u; i++) {
            store_row_plain(acc[i], m0 + i, n0, b * p.y_bstride);
        }
    }
    let n1 = n0 + 4u * DIRECT_WG;
    if (BLOCKS > 1u && n1 < p.n) {
        for (var i = 0u; i < 16u; i++) {
            store_row_plain(acd[i], m0 + i, n1, b * p.y_bstride);
        }
    }
}
