// The Mesa decode step (common/mesa_decode_body.wgsl) for GPUs without subgroups: the
// workgroup's sums go through workgroup memory, two barriers each.

struct Params {
    b: u32,
    h: u32,
    iters: u32,
    paper: u32,
    tol2: f32,
    _p0: u32,
    _p1: u32,
    _p2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<ST>;     // [B, H, D]
@group(0) @binding(2) var<storage, read> k: array<ST>;     // [B, H, D]
@group(0) @binding(3) var<storage, read> v: array<ST>;     // [B, H, D]
@group(0) @binding(4) var<storage, read> g: array<f32>;    // [B, H]
@group(0) @binding(5) var<storage, read> beta: array<f32>; // [B, H]
@group(0) @binding(6) var<storage, read> lamb: array<f32>; // [H, D]
@group(0) @binding(7) var<storage, read_write> state_kk: array<f32>; // [B, H, D, D]
@group(0) @binding(8) var<storage, read_write> state_kv: array<f32>;
@group(0) @binding(9) var<storage, read_write> o: array<ST>; // [B, H, D]
@group(0) @binding(10) var<storage, read_write> iters_out: array<f32>; // [B, H] CG steps run

#include "common/mesa_decode_body.wgsl"

var<workgroup> red: array<f32, MAX_D>;

fn dot_all(x: f32, lid: u32) -> f32 {
    red[lid] = x;
    workgroupBarrier();
    var s = 0.0;
    for (var i = 0u; i < WG; i++) {
        s += red[i];
    }
    workgroupBarrier();
    return s;
}

@compute @workgroup_size(WG)
fn mesa_decode(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    decode_step(wid.x, lid);
}
