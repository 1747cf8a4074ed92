// The Mesa decode step (common/mesa_decode_body.wgsl) for GPUs with subgroups: a workgroup sum is
// a subgroupAdd per subgroup, then the few subgroup sums through workgroup memory (right for any
// subgroup size and any grouping of the invocations).

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

var<workgroup> sums: array<f32, MAX_D>; // one per subgroup (at least one lane each)
var<private> sg_lane: u32;
var<private> sg_id: u32;
var<private> sg_count: u32;

fn dot_all(x: f32, lid: u32) -> f32 {
    let s = subgroupAdd(x);
    if (sg_lane == 0u) {
        sums[sg_id] = s;
    }
    workgroupBarrier();
    var t = 0.0;
    for (var i = 0u; i < sg_count; i++) {
        t += sums[i];
    }
    workgroupBarrier();
    return t;
}

@compute @workgroup_size(WG)
fn mesa_decode_sg(@builtin(workgroup_id) wid: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32,
                  @builtin(subgroup_invocation_id) lane: u32,
                  @builtin(subgroup_id) sgid: u32,
                  @builtin(num_subgroups) nsg: u32) {
    sg_lane = lane;
    sg_id = sgid;
    sg_count = nsg;
    decode_step(wid.x, lid);
}
