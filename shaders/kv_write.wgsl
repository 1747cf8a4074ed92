// Writes tokens first .. first+n of k or v, [B, n_src, H, dh], into a cache [B, H, cap, dh]; the
// i-th written token goes to slot (pos0 + i) mod cap: a growing cache when cap exceeds every
// position, a ring buffer otherwise.
#include "common/grid.wgsl"

struct Params {
    b: u32,
    n_src: u32,
    first: u32,
    n: u32,
    h: u32,
    dh4: u32,
    cap: u32,
    pos0: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<vec4<ST>>;
@group(0) @binding(2) var<storage, read_write> cache: array<vec4<ST>>;

@compute @workgroup_size(64)
fn kv_write(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    let e = flat_group(wid, nwg) * 64u + lid;
    if (e >= p.b * p.n * p.h * p.dh4) {
        return;
    }
    let i = e % p.dh4;
    let hh = (e / p.dh4) % p.h;
    let tok = (e / (p.dh4 * p.h)) % p.n;
    let b = e / (p.dh4 * p.h * p.n);
    let slot = (p.pos0 + tok) % p.cap;
    let si = ((b * p.n_src + p.first + tok) * p.h + hh) * p.dh4 + i;
    cache[((b * p.h + hh) * p.cap + slot) * p.dh4 + i] = src[si];
}
