// Parameters, the y / residual / gate bindings and the stores shared by the GEMM schedules; each
// kernel file declares its own x (binding 1) and w (binding 2), whose layouts differ between
// schedules.
//  * A weight slice: rows w_off … w_off + N − 1 of a concatenated weight (a layer's fused
//    projections), given as an element offset into w and, for the transposed Wᵀ of the direct
//    schedules, the full row length w_ld.
//  * flags & 1: y = r + x·Wᵀ (a residual, same layout as y).
//  * flags & 2: x ⊙ sigmoid(z) in place of x (RAT's output gate), z read as a slice: element
//    z_off + row · z_ld + k (gemv and gemm_direct_row only).
//  * flags & 4: RMSNorm(x) · nw in place of x (a layer's input norm; eps below): computed as
//    (x ⊙ nw)·Wᵀ scaled by each row's 1/rms (gemv and gemm_direct_row only).
struct Params {
    m: u32,
    n: u32,
    k: u32,
    x_bstride: u32,
    w_bstride: u32,
    y_bstride: u32,
    w_off: u32,
    w_ld: u32,
    flags: u32,
    z_off: u32,
    z_ld: u32,
    eps: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(3) var<storage, read_write> y: array<ST>;
@group(0) @binding(4) var<storage, read> res: array<ST>;

// Element (r, c) of y at batch offset yb, with the residual added where asked.
fn store_one(v: f32, r: u32, c: u32, yb: u32) {
    let at = yb + r * p.n + c;
    var out = v;
    if ((p.flags & 1u) != 0u) {
        out += f32(res[at]);
    }
    y[at] = ST(out);
}

// Row r of y, columns n0 … n0 + 3, where they exist.
fn store_row(v: vec4<f32>, r: u32, n0: u32, yb: u32) {
    if (r < p.m) {
        for (var j = 0u; j < 4u; j++) {
            if (n0 + j < p.n) {
                store_one(v[j], r, n0 + j, yb);
            }
        }
    }
}

// store_row without the residual, for the direct GEMMs' many-row blocks: with the residual's
// branch and loads inlined sixteen times, llvmpipe no longer unrolled their store loop, kept the
// accumulators in indexed memory and ran the whole kernel 2.3× slower (16384 × 256 × 256: 130 →
// 300 ms on lavapipe). Those products add a residual in a separate pass (ops::gemm).
fn store_row_plain(v: vec4<f32>, r: u32, n0: u32, yb: u32) {
    if (r < p.m) {
        for (var j = 0u; j < 4u; j++) {
            if (n0 + j < p.n) {
                y[yb + r * p.n + n0 + j] = ST(v[j]);
            }
        }
    }
}

// acc + a·B for one row: a = x[row, k … k+3], B = Wᵀ rows k … k+3 (4 columns each).
fn fold_row(acc: vec4<f32>, a: vec4<f32>, b0: vec4<f32>, b1: vec4<f32>, b2: vec4<f32>,
            b3: vec4<f32>) -> vec4<f32> {
    return acc + a.x * b0 + a.y * b1 + a.z * b2 + a.w * b3;
}
