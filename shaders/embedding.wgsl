// Embedding lookup: out[r, :] = table[ids[r] - v_lo, :] for every token r whose id lies in
// v_lo … v_hi − 1, the vocabulary rows this table holds (a table past the binding limit is
// bound one block of rows at a time). Ids arrive as f32 (exact below 2^24) and were
// range-checked on the host. Also gathers rows of activations (the last position of each
// sequence) with the row indices as ids.
#include "common/grid.wgsl"

struct Params {
    rows: u32,
    d: u32,
    v_lo: u32,
    v_hi: u32,
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
    let id = u32(ids[e / p.d]);
    if (id < p.v_lo || id >= p.v_hi) {
        return;
    }
    out[e] = table[(id - p.v_lo) * p.d + e % p.d];
}
