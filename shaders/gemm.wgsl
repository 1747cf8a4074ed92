// y = x · Wᵀ (the Linear layout: x [batch, M, K], W [batch or 1, N, K], y [batch, M, N]).
// Two schedules of the same product, picked per adapter by the launch wrapper:
//  * gemm_tiled: the GPU schedule. A 16×16 workgroup computes a 64×64 tile of y, each invocation a
//    4×4 register block; K is walked in steps of 16 through workgroup memory, so every global value
//    is read once per tile instead of once per output.
//  * gemm_direct: for CPU adapters (llvmpipe/lavapipe), where workgroup barriers are expensive
//    coroutine switches and the CPU caches already give the reuse. Each invocation computes a 4×4
//    block straight from storage, with no workgroup memory and no barriers.
// Accumulation is f32 for both storage dtypes.

struct Params {
    m: u32,
    n: u32,
    k: u32,
    x_bstride: u32,
    w_bstride: u32,
    y_bstride: u32,
    _p0: u32,
    _p1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<ST>;
@group(0) @binding(2) var<storage, read> w: array<ST>;
@group(0) @binding(3) var<storage, read_write> y: array<ST>;

const TILE: u32 = 64u;   // output tile edge (16 invocations × 4)
const BK: u32 = 16u;     // K step held in workgroup memory
const T4: u32 = 16u;     // TILE / 4

// [k][m/4] and [k][n/4]: one vec4 read gives an invocation its 4 rows (or columns) at one k.
var<workgroup> xs: array<vec4<f32>, 256>; // BK * T4
var<workgroup> ws: array<vec4<f32>, 256>;

fn store_block(acc: array<vec4<f32>, 4>, m0: u32, n0: u32, yb: u32) {
    for (var i = 0u; i < 4u; i++) {
        let r = m0 + i;
        if (r < p.m) {
            for (var j = 0u; j < 4u; j++) {
                if (n0 + j < p.n) {
                    y[yb + r * p.n + n0 + j] = ST(acc[i][j]);
                }
            }
        }
    }
}

@compute @workgroup_size(16, 16)
fn gemm_tiled(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid3: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let b = wid.z;
    let xb = b * p.x_bstride;
    let wb = b * p.w_bstride;
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
    let xb = b * p.x_bstride;
    let wb = b * p.w_bstride;
    // Rows past the edge re-read the last valid row; their results are never stored.
    var xr: array<u32, 4>;
    var wr: array<u32, 4>;
    for (var i = 0u; i < 4u; i++) {
        xr[i] = xb + min(m0 + i, p.m - 1u) * p.k;
        wr[i] = wb + min(n0 + i, p.n - 1u) * p.k;
    }
    var acc: array<vec4<f32>, 4>;
    for (var k = 0u; k < p.k; k++) {
        let bv = vec4<f32>(f32(w[wr[0] + k]), f32(w[wr[1] + k]), f32(w[wr[2] + k]), f32(w[wr[3] + k]));
        acc[0] += f32(x[xr[0] + k]) * bv;
        acc[1] += f32(x[xr[1] + k]) * bv;
        acc[2] += f32(x[xr[2] + k]) * bv;
        acc[3] += f32(x[xr[3] + k]) * bv;
    }
    store_block(acc, m0, n0, b * p.y_bstride);
}
