// The GPU GEMM y = x · Wᵀ: a 16×16 workgroup computes a BM × BN tile of y, each invocation a
// TM × TN register block (TM = BM / 16, TN = BN / 16) made of 4 × 4 sub-blocks 64 rows or columns
// apart: rows 4·ly + 64·gm + i, columns 4·lx + 64·gn + j. Per k an invocation reads one vec4 of x
// and one of W per sub-block (8×8: 4 vec4 reads for 64 multiply-adds); the 16 lanes of a row
// read 16 consecutive vec4s of W's tile (no bank conflicts) and share x's (a broadcast), and
// they store 4 consecutive columns of y each (coalesced). K is walked BK at a time through
// k-major workgroup tiles whose rows are padded by one vec4, so the transposing stores of the
// loaders conflict at most 2-way. The next K tile is loaded into registers while the current one
// is multiplied, so global latency hides behind BK·TM·TN multiply-adds.
//
// The tile shape is set per pipeline (override constants, so `chunkwise tune` picks among shapes
// of one kernel): BM, BN in {64, 128}; the K step BK follows (16, or 8 for 128 × 128, keeping the
// two tiles within 8.4 KiB of workgroup memory; BM·BK and BN·BK stay multiples of 1024, so every
// invocation loads whole vec4s). The including file adds a loader (common/gemm_tile_load.wgsl or
// gemm_tile_load4.wgsl) with load_x4(row, k, xb) / load_w4(row, k, wb): 4 consecutive k of a row,
// zero past M, N or K. WGSL sizes private arrays only by constants, so the register blocks are
// declared at the largest shape and the loops run to the pipeline's own bounds (constants once
// the overrides are applied: compilers unroll them and keep only the elements used).

override BM: u32 = 64u;
override BN: u32 = 64u;
override BK: u32 = select(16u, 8u, BM * BN > 8192u);
override TM: u32 = BM / 16u;
override GM: u32 = BM / 64u;          // 4-row sub-blocks per invocation
override GN: u32 = BN / 64u;          // 4-column sub-blocks per invocation
override KQ: u32 = BK / 4u;           // vec4s along k in one tile row
override LX: u32 = BM * BK / 1024u;   // vec4 loads of x per invocation and tile
override LW: u32 = BN * BK / 1024u;
override PX: u32 = BM / 4u + 1u;      // row pitch of the k-major tiles, in vec4s
override PW: u32 = BN / 4u + 1u;
const MAX_TM: u32 = 8u;
const MAX_GN: u32 = 2u;
const MAX_L: u32 = 2u;

var<workgroup> xs: array<vec4<f32>, BK * PX>; // [k][m / 4]
var<workgroup> ws: array<vec4<f32>, BK * PW>; // [k][n / 4]

@compute @workgroup_size(16, 16)
fn gemm_tiled(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid3: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let b = wid.z;
    let xb = b * p.x_bstride;
    let wb = b * p.w_bstride + p.w_off;
    let tm = wid.y * BM;
    let tn = wid.x * BN;
    // acc[4·gm + i][gn]: row 4·ly + 64·gm + i, columns 4·lx + 64·gn … + 3.
    var acc: array<array<vec4<f32>, MAX_GN>, MAX_TM>;
    var xr: array<vec4<f32>, MAX_L>;
    var wr: array<vec4<f32>, MAX_L>;
    for (var l = 0u; l < LX; l++) {
        let e = lid + l * 256u;
        xr[l] = load_x4(tm + e / KQ, (e % KQ) * 4u, xb);
    }
    for (var l = 0u; l < LW; l++) {
        let e = lid + l * 256u;
        wr[l] = load_w4(tn + e / KQ, (e % KQ) * 4u, wb);
    }
    for (var k0 = 0u; k0 < p.k; k0 += BK) {
        for (var l = 0u; l < LX; l++) {
            let e = lid + l * 256u;
            let r = e / KQ;
            let at = (e % KQ) * 4u * PX + r / 4u;
            let q = r % 4u;
            xs[at][q] = xr[l].x;
            xs[at + PX][q] = xr[l].y;
            xs[at + 2u * PX][q] = xr[l].z;
            xs[at + 3u * PX][q] = xr[l].w;
        }
        for (var l = 0u; l < LW; l++) {
            let e = lid + l * 256u;
            let r = e / KQ;
            let at = (e % KQ) * 4u * PW + r / 4u;
            let q = r % 4u;
            ws[at][q] = wr[l].x;
            ws[at + PW][q] = wr[l].y;
            ws[at + 2u * PW][q] = wr[l].z;
            ws[at + 3u * PW][q] = wr[l].w;
        }
        workgroupBarrier();
        // The next tile's loads are issued before the math that hides them.
        let k1 = k0 + BK;
        if (k1 < p.k) {
            for (var l = 0u; l < LX; l++) {
                let e = lid + l * 256u;
                xr[l] = load_x4(tm + e / KQ, k1 + (e % KQ) * 4u, xb);
            }
            for (var l = 0u; l < LW; l++) {
                let e = lid + l * 256u;
                wr[l] = load_w4(tn + e / KQ, k1 + (e % KQ) * 4u, wb);
            }
        }
        for (var kk = 0u; kk < BK; kk++) {
            var bv: array<vec4<f32>, MAX_GN>;
            for (var gn = 0u; gn < GN; gn++) {
                bv[gn] = ws[kk * PW + lid3.x + 16u * gn];
            }
            for (var gm = 0u; gm < GM; gm++) {
                let a = xs[kk * PX + lid3.y + 16u * gm];
                for (var gn = 0u; gn < GN; gn++) {
                    acc[4u * gm][gn] = fma(vec4<f32>(a.x), bv[gn], acc[4u * gm][gn]);
                    acc[4u * gm + 1u][gn] = fma(vec4<f32>(a.y), bv[gn], acc[4u * gm + 1u][gn]);
                    acc[4u * gm + 2u][gn] = fma(vec4<f32>(a.z), bv[gn], acc[4u * gm + 2u][gn]);
                    acc[4u * gm + 3u][gn] = fma(vec4<f32>(a.w), bv[gn], acc[4u * gm + 3u][gn]);
                }
            }
        }
        workgroupBarrier();
    }
    let yb = b * p.y_bstride;
    for (var gm = 0u; gm < GM; gm++) {
        for (var i = 0u; i < 4u; i++) {
            let r = tm + 4u * (lid3.y + 16u * gm) + i;
            for (var gn = 0u; gn < GN; gn++) {
                store_row(acc[4u * gm + i][gn], r, tn + 4u * (lid3.x + 16u * gn), yb);
            }
        }
    }
}
