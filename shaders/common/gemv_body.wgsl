// The GPU schedule of y = x · Wᵀ for few rows of x (decode steps: M ≤ 16), shared by gemv.wgsl
// (any K, scalar loads) and gemv4.wgsl (K a multiple of 4, vec4 loads). A padded 64×64 tile would
// compute 64 rows to keep one and give N = 1024 only 16 workgroups; here every W row is read once,
// by lanes walking K side by side (neighbouring lanes read neighbouring addresses), and feeds the
// M rows of x. A workgroup takes ROWS rows of W:
//  * gemv_sg: each subgroup takes whole rows (its lanes along K) and reduces them with
//    subgroupAdd, so it is right for any subgroup size (4 … 128) and any grouping of lanes;
//  * gemv_wg: for devices without subgroups, the workgroup takes one row at a time and reduces
//    through workgroup memory.
// The including file defines load_w4(n, kq), load_x4(i, kq), load_z4(i, kq) and load_n4(kq): 4
// consecutive values from k = 4·kq (zero past K) of W row n (within the slice), of x row i, of the
// gate row i and of the norm weight.
#include "common/grid.wgsl"

override MR: u32 = 1u;    // rows of x, ≤ 16
override ROWS: u32 = 8u;  // rows of W per workgroup
const WGV: u32 = 64u;

var<workgroup> red: array<f32, 1024>; // [16][WGV] partial sums (gemv_wg)

fn sig4(v: vec4<f32>) -> vec4<f32> {
    return 1.0 / (1.0 + exp(-v));
}

// x row i at k = 4·kq, gated by sigmoid(z) where flags & 2, times the norm weight where
// flags & 4 (the row's 1/rms is applied to the sum).
fn xg4(i: u32, kq: u32) -> vec4<f32> {
    var v = load_x4(i, kq);
    if ((p.flags & 2u) != 0u) {
        v *= sig4(load_z4(i, kq));
    }
    if ((p.flags & 4u) != 0u) {
        v *= load_n4(kq);
    }
    return v;
}

// Σ x² of row i over kq = first, first + step, …
fn sum_squares(i: u32, first: u32, step: u32) -> f32 {
    var ss = 0.0;
    for (var kq = first; kq < (p.k + 3u) / 4u; kq += step) {
        let v = load_x4(i, kq);
        ss += dot(v, v);
    }
    return ss;
}

fn inv_rms(ss: f32) -> f32 {
    return inverseSqrt(ss / f32(p.k) + p.eps);
}

// Partial dot products of W row n with the MR rows of x over kq = first, first + step, …
fn partial(n: u32, first: u32, step: u32) -> array<f32, 16> {
    var acc: array<f32, 16>;
    let k4n = (p.k + 3u) / 4u;
    for (var kq = first; kq < k4n; kq += step) {
        let wv = load_w4(n, kq);
        for (var i = 0u; i < MR; i++) {
            acc[i] += dot(wv, xg4(i, kq));
        }
    }
    return acc;
}

// red[i · WGV] ← Σ over the workgroup of red[i · WGV + lane], for every row i of x.
fn tree_sum(lid: u32) {
    for (var s = WGV / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            for (var i = 0u; i < MR; i++) {
                red[i * WGV + lid] += red[i * WGV + lid + s];
            }
        }
        workgroupBarrier();
    }
}

@compute @workgroup_size(WGV)
fn gemv_sg(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(subgroup_invocation_id) lane: u32, @builtin(subgroup_size) sgs: u32,
           @builtin(subgroup_id) sgid: u32, @builtin(num_subgroups) nsg: u32) {
    let base = flat_group(wid, nwg) * ROWS;
    var scale: array<f32, 16>;
    for (var i = 0u; i < MR; i++) {
        scale[i] = 1.0;
        if ((p.flags & 4u) != 0u) {
            scale[i] = inv_rms(subgroupAdd(sum_squares(i, lane, sgs)));
        }
    }
    for (var r = sgid; r < ROWS; r += nsg) {
        let n = base + r;
        // The same n on every lane of the subgroup: the reduction below stays within it.
        if (n < p.n) {
            let acc = partial(n, lane, sgs);
            for (var i = 0u; i < MR; i++) {
                let s = subgroupAdd(acc[i]);
                if (lane == 0u) {
                    store_one(s * scale[i], i, n, 0u);
                }
            }
        }
    }
}

@compute @workgroup_size(WGV)
fn gemv_wg(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
    let base = flat_group(wid, nwg) * ROWS;
    var scale: array<f32, 16>;
    for (var i = 0u; i < MR; i++) {
        red[i * WGV + lid] = sum_squares(i, lid, WGV);
    }
    workgroupBarrier();
    tree_sum(lid);
    for (var i = 0u; i < MR; i++) {
        scale[i] = select(1.0, inv_rms(red[i * WGV]), (p.flags & 4u) != 0u);
    }
    workgroupBarrier();
    for (var r = 0u; r < ROWS; r++) {
        let n = base + r;
        if (n >= p.n) {
            break;
        }
        let acc = partial(n, lid, WGV);
        for (var i = 0u; i < MR; i++) {
            red[i * WGV + lid] = acc[i];
        }
        workgroupBarrier();
        tree_sum(lid);
        if (lid < MR) {
            store_one(red[lid * WGV] * scale[lid], lid, n, 0u);
        }
        workgroupBarrier();
    }
}
