// y = x · Wᵀ (the Linear layout: x [batch, M, K], W [batch or 1, N, K], y [batch, M, N]).
// Two schedules of the same product, picked per adapter by the launch wrapper:
//  * gemm_tiled: the GPU schedule. A 16×16 workgroup computes a 64×64 tile of y, each invocation a
//    4×4 register block; K is walked in steps of 16 through workgroup memory, so every global value
//    is read once per tile instead of once per output.
//  * gemm_direct (gemm_direct.wgsl): the schedule for CPU adapters.
// Accumulation is f32 for both storage dtypes.

#include "common/gemm_io.wgsl"

@group(0) @binding(1) var<storage, read> x: array<ST>; // [batch, M, K]
@group(0) @binding(2) var<storage, read> w: array<ST>; // W [batch or 1, N, K]

const TILE: u32 = 64u;   // output tile edge (16 invocations × 4)
const BK: u32 = 16u;     // K step held in workgroup memory
const T4: u32 = 16u;     // TILE / 4

// [k][m/4] and [k][n/4]: one vec4 read gives an invocation its 4 rows (or columns) at one k.
var<workgroup> xs: array<vec4<f32>, 256>; // BK * T4
var<workgroup> ws: array<vec4<f32>, 256>;

@compute @workgroup_size(16, 16)
fn gemm_tiled(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid3: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let b = wid.z;
    let xb = b * p.x_bstride;
    let wb = b * p.w_bstride + p.w_off;
    let tm = wid.y * TILE;
    let tn = wid.x * TILE;
    var acc: array<vec4<f32>, 4>;
    for (var k0 = 0u; k0 < p.k; k0 += BK) {
        // 64 rows × 16 k of each operand: 4 values per invocation, 16 neighbours read 16 consecutive k.
        for (var l = 0u; l < 4u; l++) {
            let e = lid + l * 256u;
            let r = e / BK;
            let c = e % BK;
            let gk = k0 + c;
            var xv = 0.0;
            if (tm + r < p.m && gk < p.k) {
                xv = f32(x[xb + (tm + r) * p.k + gk]);
            }
            xs[c * T4 + r / 4u][r % 4u] = xv;
            var wv = 0.0;
            if (tn + r < p.n && gk < p.k) {
                wv = f32(w[wb + (tn + r) * p.k + gk]);
            }
            ws[c * T4 + r / 4u][r % 4u] = wv;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < BK; kk++) {
            let a = xs[kk * T4 + lid3.y];
            let bv = ws[kk * T4 + lid3.x];
            acc[0] += a[0] * bv;
            acc[1] += a[1] * bv;
            acc[2] += a[2] * bv;
            acc[3] += a[3] * bv;
        }
        workgroupBarrier();
    }
    store_block(acc, tm + lid3.y * 4u, tn + lid3.x * 4u, b * p.y_bstride);
}
