// y[r, off + c] = x[r, c] for x [rows, n] and y of row length ld: one block of columns written
// into a wider matrix (the logits of one vocabulary block of an LM head split at the binding
// limit). Elementwise, so any dtype and any offset work (buffer copies need 4-byte alignment,
// which f16 rows of odd length do not have).
#include "common/grid.wgsl"

struct Params {
    rows: u32,
    n: u32,
    ld: u32,
    off: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<ST>;
@group(0) @binding(2) var<storage, read_write> y: array<ST>;

@compute @workgroup_size(256)
fn place_columns(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    let e = flat_group(wid, nwg) * 256u + lid;
    if (e >= p.rows * p.n) {
        return;
    }
    y[(e / p.n) * p.ld + p.off + e % p.n] = x[e];
}
