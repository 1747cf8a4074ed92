// Parameters, the y binding and the 4×4 block store shared by the GEMM schedules; each kernel
// file declares its own x (binding 1) and w (binding 2), whose layouts differ between schedules.
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
@group(0) @binding(3) var<storage, read_write> y: array<ST>;

// Row r of y, columns n0 … n0 + 3, where they exist.
fn store_row(v: vec4<f32>, r: u32, n0: u32, yb: u32) {
    if (r < p.m) {
        for (var j = 0u; j < 4u; j++) {
            if (n0 + j < p.n) {
                y[yb + r * p.n + n0 + j] = ST(v[j]);
            }
        }
    }
}

fn store_block(acc: array<vec4<f32>, 4>, m0: u32, n0: u32, yb: u32) {
    for (var i = 0u; i < 4u; i++) {
        store_row(acc[i], m0 + i, n0, yb);
    }
}

// acc + a·B for one row: a = x[row, k … k+3], B = Wᵀ rows k … k+3 (4 columns each).
fn fold_row(acc: vec4<f32>, a: vec4<f32>, b0: vec4<f32>, b1: vec4<f32>, b2: vec4<f32>,
            b3: vec4<f32>) -> vec4<f32> {
    return acc + a.x * b0 + a.y * b1 + a.z * b2 + a.w * b3;
}
