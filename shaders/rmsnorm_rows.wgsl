// RMSNorm for CPU adapters: one row per invocation, vec4 loads, no workgroup memory. rmsnorm.wgsl
// gives each row a workgroup and sums it with a tree through workgroup memory; on CPU drivers its
// barriers are coroutine switches and its workgroup loads loops over the SIMD lanes, and it took
// as long as a 256×256 projection of the same rows (lavapipe, 16384 rows of 256). Needs D % 4 == 0.
#include "common/grid.wgsl"

struct Params {
    rows: u32,
    d: u32,
    eps: f32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<vec4<ST>>;
@group(0) @binding(2) var<storage, read> w: array<vec4<ST>>;
@group(0) @binding(3) var<storage, read_write> y: array<vec4<ST>>;

@compute @workgroup_size(64)
fn rmsnorm_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let row = flat_group(wid, nwg) * 64u + lid;
    if (row >= p.rows) {
        return;
    }
    let d4 = p.d / 4u;
    let base = row * d4;
    var ss = 0.0;
    for (var i = 0u; i < d4; i++) {
        let v = vec4<f32>(x[base + i]);
        ss += dot(v, v);
    }
    let inv = inverseSqrt(ss / f32(p.d) + p.eps);
    for (var i = 0u; i < d4; i++) {
        y[base + i] = vec4<ST>(vec4<f32>(x[base + i]) * inv * vec4<f32>(w[i]));
    }
}
