// Key delivery for common/flash.wgsl by tiles. KV_FROM_STORAGE picks where a tile is read from.
// GPUs (false): the workgroup loads it once into workgroup memory (`ks`, `vs`) and all its queries
// share it. CPU adapters without 8-lane subgroups (true): every invocation reads it from storage,
// with no barrier; on lavapipe a workgroup-memory load costs like a gather even when all lanes read
// the same address, and this was 1.5× faster (attention at T = 4096).
#include "common/flash.wgsl"

override KV_FROM_STORAGE: bool = false;

var<workgroup> ks: array<vec4<f32>, 512>; // BK * MAX_DH4
var<workgroup> vs: array<vec4<f32>, 512>;

fn tile_k(j: u32, i: u32) -> vec4<f32> {
    if (KV_FROM_STORAGE) {
        return flash_k(j, i);
    }
    return ks[j * MAX_DH4 + i];
}

fn tile_v(j: u32, i: u32) -> vec4<f32> {
    if (KV_FROM_STORAGE) {
        return flash_v(j, i);
    }
    return vs[j * MAX_DH4 + i];
}

// Fills ks / vs with the tile (GPUs only), zeros for keys that do not exist; the barriers keep the
// previous tile alive until every query has folded it.
fn flash_load_tile(lid: u32, wg: u32) {
    if (KV_FROM_STORAGE) {
        return;
    }
    workgroupBarrier();
    for (var e = lid; e < BK * DH4; e += wg) {
        let j = e / DH4;
        let i = e % DH4;
        var kk = vec4<f32>(0.0);
        var vv = vec4<f32>(0.0);
        if (tile_key_valid(j)) {
            kk = flash_k(j, i);
            vv = flash_v(j, i);
        }
        ks[j * MAX_DH4 + i] = kk;
        vs[j * MAX_DH4 + i] = vv;
    }
    workgroupBarrier();
}

fn key_dots(j: u32) -> vec2<f32> {
    var d = vec2<f32>(0.0);
    for (var i = 0u; i < DH4; i++) {
        d += slot_dots(i, tile_k(j, i));
    }
    return d;
}

// Branches on what the slots see, not selects per multiply-add: the head-dim loops must stay
// small enough to unroll (llvmpipe, head dim 128), and a key a slot does not see must add nothing.
fn value_fold(j: u32, pj: vec2<f32>, seen: vec2<bool>) {
    if (seen.x && (QL == 1u || seen.y)) {
        for (var i = 0u; i < DH4; i++) {
            slot_add(i, pj, tile_v(j, i));
        }
    } else if (seen.x) {
        for (var i = 0u; i < DH4; i++) {
            acc[0][i] += pj.x * tile_v(j, i);
        }
    } else if (QL > 1u && seen.y) {
        for (var i = 0u; i < DH4; i++) {
            acc[1][i] += pj.y * tile_v(j, i);
        }
    }
}
