// The GPU schedule of y = x · Wᵀ for few rows of x (decode steps: M ≤ 16), shared by gemv.wgsl
// (any K, scalar loads) and gemv4.wgsl (K a multiple of 4, vec4 loads). A padded 64×64 tile would
// compute 64 rows to keep one and give N = 1024 only 16 workgroups; here every W row is read once,
// by lanes walking K side by side (neighbouring lanes read neighbouring addresses), and feeds the
// M rows of x. A workgroup takes ROWS rows of W:
//  * gemv_sg (gemv_sg.wgsl, gemv4_sg.wgsl): each subgroup takes whole rows (its lanes along K)
//    and reduces them with subgroupAdd, so it is right for any subgroup size (4 … 128) and any
//    grouping of lanes;
//  * gemv_wg (gemv.wgsl, gemv4.wgsl): for devices without subgroups, the workgroup takes one row
//    at a time and reduces through workgroup memory.
// The two live in separate files because wgpu validates a whole module against the device: a
// subgroup entry point beside gemv_wg would keep gemv_wg off devices without subgroups.
// The including file defines load_w4(n, kq), load_x4(i, kq), load_z4(i, kq) and load_n4(kq): 4
// consecutive values from k = 4·kq (zero past K) of W row n (within the slice), of x row i, of the
// gate row i and of the norm weight.
#include "common/grid.wgsl"

override MR: u32 = 1u;    // rows of x, ≤ 16
override ROWS: u32 = 8u;  // rows of W per workgroup
const WGV: u32 = 64u;


fn sig4(v: vec4<f32>) -> vec4<f32> {
    return 1.0 / (1.0 + exp(-v));
}

// x row i at k = 4·kq, gated by sigmoid(z) where flags & 2.
fn xg4(i: u32, kq: u32) -> vec4<f32> {
    var v = load_x4(i, kq);
    if ((p.flags & 2u) != 0u) {
        v *= sig4(load_z4(i, kq));
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
        // The norm weight where flags & 4 (each row's 1/rms scales its sum): (x ⊙ nw)·w is
        // x·(w ⊙ nw), one multiply per weight load instead of one per row of x.
        var wv = load_w4(n, kq);
        if ((p.flags & 4u) != 0u) {
            wv *= load_n4(kq);
        }
        for (var i = 0u; i < MR; i++) {
            acc[i] += dot(wv, xg4(i, kq));
        }
    }
    return acc;
}

