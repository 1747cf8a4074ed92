// Rotate-half (GPT-NeoX) RoPE at arbitrary positions (rope; rope4 where dh % 8 == 0). x is
// [rows, H, dh]; row r uses table row positions[r mod npos]. The table holds cos in columns
// [0, dh/2) and sin in [dh/2, dh), built on the host in f64 so precision does not depend on the
// GPU's cos/sin (Vulkan allows 2^-11 error there).
#include "common/grid.wgsl"

override WG: u32 = 256u;

struct Params {
    rows: u32,
    heads: u32,
    dh: u32,
    npos: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<ST>;
@group(0) @binding(2) var<storage, read> table: array<f32>;
@group(0) @binding(3) var<storage, read> positions: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<ST>;
// rope4's views of the same bindings: four pairs per invocation where dh is a multiple of 8.
@group(0) @binding(1) var<storage, read> x4: array<vec4<ST>>;
@group(0) @binding(2) var<storage, read> table4: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> y4: array<vec4<ST>>;

@compute @workgroup_size(WG)
fn rope(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let half = p.dh / 2u;
    let idx = flat_group(wid, nwg) * WG + lid; // one pair (row, head, i < dh/2) per invocation
    if (idx >= p.rows * p.heads * half) {
        return;
    }
    let i = idx % half;
    let rh = idx / half; // row * heads + head
    let row = rh / p.heads;
    let pos = u32(positions[row % p.npos]);
    let c = table[pos * p.dh + i];
    let s = table[pos * p.dh + half + i];
    let base = rh * p.dh;
    let lo = f32(x[base + i]);
    let hi = f32(x[base + half + i]);
    y[base + i] = ST(lo * c - hi * s);
    y[base + half + i] = ST(hi * c + lo * s);
}

// rope for dh a multiple of 8: vec4 i4 < dh/8 of each half per invocation (a quarter of the
// invocations and loads; on CPU drivers each load is a loop over the SIMD lanes).
@compute @workgroup_size(WG)
fn rope4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) lid: u32) {
    let half4 = p.dh / 8u;
    let idx = flat_group(wid, nwg) * WG + lid;
    if (idx >= p.rows * p.heads * half4) {
        return;
    }
    let i4 = idx % half4;
    let rh = idx / half4;
    let row = rh / p.heads;
    let pos = u32(positions[row % p.npos]);
    let c = table4[pos * 2u * half4 + i4];
    let s = table4[pos * 2u * half4 + half4 + i4];
    let base = rh * 2u * half4;
    let lo = vec4<f32>(x4[base + i4]);
    let hi = vec4<f32>(x4[base + half4 + i4]);
    y4[base + i4] = vec4<ST>(lo * c - hi * s);
    y4[base + half4 + i4] = vec4<ST>(hi * c + lo * s);
}
