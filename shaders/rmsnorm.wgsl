// RMSNorm over the last dimension: y = x / sqrt(mean(x^2) + eps) * w. One workgroup per row.
#include "common/grid.wgsl"
#include "common/reduce.wgsl"

override WG: u32 = 256u;

struct Params {
    rows: u32,
    d: u32,
    eps: f32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<ST>;
@group(0) @binding(2) var<storage, read> w: array<ST>;
@group(0) @binding(3) var<storage, read_write> y: array<ST>;

@compute @workgroup_size(WG)
fn rmsnorm(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
    let row = flat_group(wid, nwg);
    // Every invocation of a workgroup takes the same path, so the barriers in wg_sum stay uniform.
    let live = row < p.rows;
    let base = min(row, p.rows - 1u) * p.d;
    var ss = 0.0;
    for (var i = lid; i < p.d; i += WG) {
        let v = f32(x[base + i]);
        ss += v * v;
    }
    let total = wg_sum(ss, lid);
    let inv = inverseSqrt(total / f32(p.d) + p.eps);
    if (live) {
        for (var i = lid; i < p.d; i += WG) {
            y[base + i] = ST(f32(x[base + i]) * inv * f32(w[i]));
        }
    }
}
