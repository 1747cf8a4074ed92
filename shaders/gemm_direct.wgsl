// GEMM schedule for CPU adapters (llvmpipe/lavapipe), where workgroup barriers are expensive
// coroutine switches and the CPU caches already give the reuse: no workgroup memory, no barriers.
//
// CPU drivers run a workgroup's invocations as SIMD lanes, and every storage load is a loop over
// the lanes (llvmpipe: a bounds check and a branch per lane), so what counts is multiply-adds per
// load instruction. A workgroup owns 8 rows of y (from its id: the x loads have the same address
// on every lane) and its lanes run along N, each lane a vec4 of 4 columns: per 4 steps of k, 12
// vec4 loads (8 of x, 4 of Wᵀ) feed 128 multiply-adds. 8 rows is the measured optimum here
// (4 rows: 0.8×, 16 rows: 0.55×, the accumulators spill). Where subgroups are the 8 lanes,
// gemm_direct_sg.wgsl loads each x row once and broadcasts it, and runs 2–3× faster.
//
// `w` holds Wᵀ as [batch or 1, K, LD] with rows padded to a multiple of 4 (the launch wrapper
// transposes W first); the product reads its N columns from column w_off on (a slice of a fused
// weight). Needs K % 4 == 0 (the wrapper uses the tiled schedule otherwise).
#include "common/gemm_io.wgsl"

@group(0) @binding(1) var<storage, read> x: array<vec4<ST>>; // [batch, M, K/4]
@group(0) @binding(2) var<storage, read> w: array<vec4<ST>>;

override DIRECT_WG: u32 = 64u;

@compute @workgroup_size(DIRECT_WG)
fn gemm_direct(@builtin(local_invocation_index) lid: u32,
               @builtin(workgroup_id) wid: vec3<u32>) {
    let b = wid.z;
    // Row blocks run along x, the fastest grid dimension: workgroups that run one after the other
    // share their column block of Wᵀ, which then stays in the CPU's cache (1024³: 3× faster).
    let m0 = wid.x * 8u;
    let c4 = wid.y * DIRECT_WG + lid; // this lane's vec4 of columns
    let n0 = c4 * 4u;
    if (n0 >= p.n) {
        return;
    }
    let k4 = p.k / 4u;
    let xb = b * p.x_bstride / 4u;
    let n4 = p.w_ld / 4u;
    let wb = (b * p.w_bstride + p.w_off) / 4u + c4;
    var r: array<u32, 8>;
    for (var i = 0u; i < 8u; i++) {
        r[i] = xb + min(m0 + i, p.m - 1u) * k4;
    }
    var acc: array<vec4<f32>, 8>;
    for (var kq = 0u; kq < k4; kq++) {
        let wk = wb + kq * 4u * n4;
        let b0 = vec4<f32>(w[wk]);
        let b1 = vec4<f32>(w[wk + n4]);
        let b2 = vec4<f32>(w[wk + 2u * n4]);
        let b3 = vec4<f32>(w[wk + 3u * n4]);
        for (var i = 0u; i < 8u; i++) {
            let a = vec4<f32>(x[r[i] + kq]);
            acc[i] = fold_row(acc[i], a, b0, b1, b2, b3);
        }
    }
    for (var i = 0u; i < 8u; i++) {
        store_row_plain(acc[i], m0 + i, n0, b * p.y_bstride);
    }
}


@group(0) @binding(5) var<storage, read> z: array<vec4<ST>>; // gate source (flags & 2)
@group(0) @binding(6) var<storage, read> nw: array<vec4<ST>>; // norm weight (flags & 4)

// One row per workgroup, for M < 8 (decode steps): the 8-row kernel would compute 8 rows to keep
// one. Same layout and lanes; with flags & 2 the row is gated by sigmoid(z) first (z_off and z_ld
// multiples of 4), with flags & 4 it is RMS-normalised (every lane sums the row's squares: the
// loads are the same addresses as the product's).
@compute @workgroup_size(DIRECT_WG)
fn gemm_direct_row(@builtin(local_invocation_index) lid: u32,
                   @builtin(workgroup_id) wid: vec3<u32>) {
    let b = wid.z;
    let m0 = wid.x;
    let c4 = wid.y * DIRECT_WG + lid;
    let n0 = c4 * 4u;
    if (n0 >= p.n || m0 >= p.m) {
        return;
    }
    let k4 = p.k / 4u;
    let n4 = p.w_ld / 4u;
    let wb = (b * p.w_bstride + p.w_off) / 4u + c4;
    let r0 = b * p.x_bstride / 4u + m0 * k4;
    let gate = (p.flags & 2u) != 0u;
    let norm = (p.flags & 4u) != 0u;
    let zr = (p.z_off + (b * p.m + m0) * p.z_ld) / 4u;
    var scale = 1.0;
    if (norm) {
        var ss = 0.0;
        for (var kq = 0u; kq < k4; kq++) {
            let a = vec4<f32>(x[r0 + kq]);
            ss += dot(a, a);
        }
        scale = inverseSqrt(ss / f32(p.k) + p.eps);
    }
    var acc = vec4<f32>(0.0);
    for (var kq = 0u; kq < k4; kq++) {
        let wk = wb + kq * 4u * n4;
        var a = vec4<f32>(x[r0 + kq]);
        if (gate) {
            a *= 1.0 / (1.0 + exp(-vec4<f32>(z[zr + kq])));
        }
        if (norm) {
            a *= vec4<f32>(nw[kq]);
        }
        acc = fold_row(acc, a, vec4<f32>(w[wk]), vec4<f32>(w[wk + n4]), vec4<f32>(w[wk + 2u * n4]),
                       vec4<f32>(w[wk + 3u * n4]));
    }
    store_row(acc * scale, m0, n0, b * p.y_bstride);
}
