// The tensor-core GEMM y = x · Wᵀ (cooperative matrices, wgpu's EXPERIMENTAL_COOPERATIVE_MATRIX:
// Vulkan VK_KHR_cooperative_matrix, Metal simdgroup matrices). A workgroup of 128 invocations
// computes a 64 × 64 tile of y; each subgroup takes CM × CM blocks of it in turn (subgroup-uniform
// loop), walking K in steps of CM with A = x's block loaded row-major, B = Wᵀ's block loaded
// column-major straight from W's rows (W is [N, K] row-major, so Wᵀ is column-major with stride
// K), and C accumulated in f32. The blocks are staged in f32 workgroup memory, then written to y
// in the storage dtype with the residual. M, N and K must be multiples of CM (the launch wrapper
// picks this variant only then, and only after `chunkwise tune` checked it on the adapter), so no
// load leaves its matrix; blocks past M or N are skipped whole.
//
// The including file defines CM (8 or 16) and the matrix types MA, MB, MC.
#include "common/gemm_io.wgsl"

@group(0) @binding(1) var<storage, read> x: array<ST>; // [batch, M, K]
@group(0) @binding(2) var<storage, read> w: array<ST>; // W [batch or 1, N_total, K]; from w_off

const TILE: u32 = 64u;
const PER_ROW: u32 = TILE / CM;
const BLOCKS: u32 = PER_ROW * PER_ROW;

// [TILE][TILE] row-major, then one CM × CM block where blocks past M or N are stored unread.
var<workgroup> ct: array<f32, 4096 + CM * CM>;

@compute @workgroup_size(128)
fn gemm_coop(@builtin(workgroup_id) wid: vec3<u32>,
             @builtin(local_invocation_index) lid: u32,
             @builtin(subgroup_id) sgid: u32,
             @builtin(num_subgroups) nsg: u32) {
    let b = wid.z;
    let xb = b * p.x_bstride;
    let wb = b * p.w_bstride + p.w_off;
    let tm = wid.y * TILE;
    let tn = wid.x * TILE;
    let kstride = p.k;
    let tstride = TILE;
    // Cooperative operations need control flow uniform across the workgroup: every subgroup runs
    // the same number of rounds and the same K loop; a block past M or N (or past the tile, in a
    // last round) loads a block inside the matrices and stores into the spare block.
    let rounds = (BLOCKS + nsg - 1u) / nsg;
    for (var round = 0u; round < rounds; round++) {
        let blk = sgid + round * nsg;
        let bm = (blk / PER_ROW) * CM;
        let bn = (blk % PER_ROW) * CM;
        let inside = blk < BLOCKS && tm + bm < p.m && tn + bn < p.n;
        let rm = select(0u, tm + bm, inside);
        let rn = select(0u, tn + bn, inside);
        var c = MC(); // explicit zero each round (see the note on `acc` in mesa.wgsl's lane_apply)
        for (var k0 = 0u; k0 < p.k; k0 += CM) {
            let a = coopLoadT<MA>(&x[xb + rm * p.k + k0], kstride);
            let bt = coopLoad<MB>(&w[wb + rn * p.k + k0], kstride);
            c = coopMultiplyAdd(a, bt, c);
        }
        let at = select(4096u, bm * TILE + bn, inside);
        coopStoreT(c, &ct[at], tstride);
    }
    workgroupBarrier();
    let yb = b * p.y_bstride;
    for (var e = lid; e < TILE * TILE; e += 128u) {
        let r = tm + e / TILE;
        let col = tn + e % TILE;
        if (r < p.m && col < p.n) {
            store_one(ct[e], r, col, yb);
        }
    }
}
