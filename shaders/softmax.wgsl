// Row softmax over the last dimension with a temperature: y = softmax(x / temperature).
// One workgroup per row; max-subtracted, so large logits do not overflow.
#include "common/grid.wgsl"
#include "common/reduce.wgsl"

override WG: u32 = 256u;

struct Params {
    rows: u32,
    d: u32,
    inv_temp: f32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<ST>;
@group(0) @binding(2) var<storage, read_write> y: array<ST>;

@compute @workgroup_size(WG)
fn softmax(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
    let row = flat_group(wid, nwg);
    let live = row < p.rows;
    let base = min(row, p.rows - 1u) * p.d;
    var m = -3.4028234663852886e38;
    for (var i = lid; i < p.d; i += WG) {
        m = max(m, f32(x[base + i]) * p.inv_temp);
    }
    let row_max = wg_max(m, lid);
    var s = 0.0;
    for (var i = lid; i < p.d; i += WG) {
        s += exp(f32(x[base + i]) * p.inv_temp - row_max);
    }
    let inv_sum = 1.0 / wg_sum(s, lid);
    if (live) {
        for (var i = lid; i < p.d; i += WG) {
            y[base + i] = ST(exp(f32(x[base + i]) * p.inv_temp - row_max) * inv_sum);
        }
    }
}
