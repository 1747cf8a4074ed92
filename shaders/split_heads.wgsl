// [B, T, H, dh] → [B, H, T, dh]: each head's rows made contiguous. The flash attention forward
// streams every key of its head once per block of queries; read in place, a head's keys lie a
// whole token row apart, and on CPU adapters the pages they span outgrow the TLB at long T
// (lavapipe: 33 GFLOP/s at T = 4096 fell to 15 at T = 16384 before this).
#include "common/grid.wgsl"

struct Params {
    b: u32,
    t: u32,
    h: u32,
    dh4: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<vec4<ST>>;
@group(0) @binding(2) var<storage, read_write> y: array<vec4<ST>>;

@compute @workgroup_size(64)
fn split_heads(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let e = flat_group(wid, nwg) * 64u + lid; // over y: [B, H, T, dh4]
    if (e >= p.b * p.h * p.t * p.dh4) {
        return;
    }
    let i = e % p.dh4;
    let t = (e / p.dh4) % p.t;
    let hh = (e / (p.dh4 * p.t)) % p.h;
    let b = e / (p.dh4 * p.t * p.h);
    y[e] = x[((b * p.t + t) * p.h + hh) * p.dh4 + i];
}
