// Data movement for RAT decode. `tile_groups` expands grouped queries [B, n, G·dh] to heads
// [B, n, H·dh] (head h takes group h mod G). `chunk_gather` fills a chunk cache [B, H, cap, dh]
// after a prefill of P tokens: slot j ← src at token min(jL + L − 1, P − 1), for j = 0 … (P−1)/L,
// i.e. each completed chunk's final state and the running state of the current one.
#include "common/grid.wgsl"

struct Params {
    b: u32,
    n: u32,     // tokens in src
    h: u32,
    groups: u32,
    dh4: u32,
    l: u32,
    cap: u32,
    _p: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<vec4<ST>>;
@group(0) @binding(2) var<storage, read_write> dst: array<vec4<ST>>;

@compute @workgroup_size(64)
fn tile_groups(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let e = flat_group(wid, nwg) * 64u + lid; // over [B·n, H, dh4]
    if (e >= p.b * p.n * p.h * p.dh4) {
        return;
    }
    let i = e % p.dh4;
    let hh = (e / p.dh4) % p.h;
    let row = e / (p.dh4 * p.h);
    dst[e] = src[(row * p.groups + hh % p.groups) * p.dh4 + i];
}

@compute @workgroup_size(64)
fn chunk_gather(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let chunks = (p.n + p.l - 1u) / p.l;
    let e = flat_group(wid, nwg) * 64u + lid; // over [B, H, chunks, dh4]
    if (e >= p.b * p.h * chunks * p.dh4) {
        return;
    }
    let i = e % p.dh4;
    let j = (e / p.dh4) % chunks;
    let hh = (e / (p.dh4 * chunks)) % p.h;
    let b = e / (p.dh4 * chunks * p.h);
    let tok = min(j * p.l + p.l - 1u, p.n - 1u);
    dst[((b * p.h + hh) * p.cap + j) * p.dh4 + i] = src[((b * p.n + tok) * p.h + hh) * p.dh4 + i];
}
