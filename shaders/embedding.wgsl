// Embedding lookup: out[r, :] = table[ids[r], :] for every token r. Ids arrive as f32 (exact below
// 2^24) and were range-checked on the host.
#include "common/grid.wgsl"

struct Params {
    rows: u32,
    d: u32,
    _p0: u32,
    _p1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> table: array<ST>;
@group(0) @binding(2) var<storage, read> ids: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<ST>;

@compute @workgroup_size(256)
fn embedding(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
    let e = flat_group(wid, nwg) * 256u + lid;
    if (e >= p.rows * p.d) {
        return;
    }
    let r = e / p.d;
    out[e] = table[u32(ids[r]) * p.d + e % p.d];
}
