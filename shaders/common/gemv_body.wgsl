// The GPU schedule of y = x · Wᵀ for few rows of x (decode steps: M ≤ 16), shared by gemv.wgsl
// (any K, scalar loads) and gemv4.wgsl (K a multiple of 4, vec4 loads). A padded 64×64 tile would
// compute 64 rows to keep one and give N = 1024 only 16 workgroups; here every W row is read once,
// by lanes walking K side by side (neighbouring lanes read neighbouring addresses), and feeds the
// M rows of x. A workgroup takes ROWS rows of W, RB at a time (the entry files set RB, at most
// 16 / MR so that the RB·MR sums stay in registers): each value of x (gated, where a gate is folded in) is loaded once per pass for all
// RB rows, not once per row, and the sums keep the lane split and order of one row at a time.
//  * gemv_sg (gemv_sg.wgsl, gemv4_sg.wgsl): each subgroup takes a block of whole rows (its lanes
//    along K) and reduces them with subgroupAdd, so it is right for any subgroup size (4 … 128)
//    and any grouping of lanes; a folded norm's Σx² comes from the same loads;
//  * gemv_wg (gemv.wgsl, gemv4.wgsl): for devices without subgroups, the workgroup takes RB rows
//    per pass and reduces all RB·MR sums in one tree through workgroup memory.
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

// A pass's partial sums: acc[j·MR + i] of W row n0 + j with x row i, ss[i] of x row i's Σx².
struct Sums {
    acc: array<f32, 16>,
    ss: array<f32, 16>,
}

// Partial dot products of W rows n0 … n0 + nr − 1 (nr ≤ RB) with the MR rows of x over kq =
// first, first + step, …; with `with_ss` also each row of x's Σx² over the same kq (what
// sum_squares gives for that lane).
fn partial_rows(n0: u32, nr: u32, first: u32, step: u32, with_ss: bool) -> Sums {
    var out: Sums;
    var wv: array<vec4<f32>, 16>; // the pass's rows of W at one kq
    let k4n = (p.k + 3u) / 4u;
    let normed = (p.flags & 4u) != 0u;
    let gated = (p.flags & 2u) != 0u;
    for (var kq = first; kq < k4n; kq += step) {
        // The norm weight where flags & 4 (each row's 1/rms scales its sum): (x ⊙ nw)·w is
        // x·(w ⊙ nw), one multiply per weight load instead of one per row of x.
        for (var j = 0u; j < RB; j++) {
            if (j < nr) {
                var w4 = load_w4(n0 + j, kq);
                if (normed) {
                    w4 *= load_n4(kq);
                }
                wv[j] = w4;
            }
        }
        for (var i = 0u; i < MR; i++) {
            var xv = load_x4(i, kq);
            if (with_ss) {
                out.ss[i] += dot(xv, xv);
            }
            if (gated) {
                xv *= sig4(load_z4(i, kq));
            }
            for (var j = 0u; j < RB; j++) {
                if (j < nr) {
                    out.acc[j * MR + i] += dot(wv[j], xv);
                }
            }
        }
    }
    return out;
}
