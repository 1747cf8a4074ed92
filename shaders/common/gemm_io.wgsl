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
