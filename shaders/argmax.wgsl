// Row argmax over the last dimension (greedy sampling on the GPU): one workgroup per row, the
// index of the first maximum, written as f32 (exact below 2^24, far above any vocabulary).
// NaN never wins (comparisons with NaN are false), matching the CPU sampler.
#include "common/grid.wgsl"
#include "common/reduce.wgsl"

override WG: u32 = 256u;

struct Params {
    rows: u32,
    d: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<ST>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(WG)
fn argmax(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let row = flat_group(wid, nwg);
    let base = min(row, p.rows - 1u) * p.d;
    var m = -3.4028234663852886e38;
    for (var i = lid; i < p.d; i += WG) {
        let v = f32(x[base + i]);
        if (v > m) {
            m = v;
        }
    }
    let row_max = wg_max(m, lid);
    // The smallest index holding the maximum, as a max over negated indices.
    var first = -3.4028234663852886e38;
    for (var i = lid; i < p.d; i += WG) {
        if (f32(x[base + i]) == row_max) {
            first = -f32(i);
            break;
        }
    }
    let best = wg_max(first, lid);
    if (row < p.rows && lid == 0u) {
        y[row] = select(0.0, -best, best > -3.4028234663852886e38);
    }
}
