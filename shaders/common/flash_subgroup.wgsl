// Key delivery for common/flash.wgsl on CPU drivers whose subgroups are their 8 SIMD lanes
// (lavapipe at 256 bits). There every storage load is a loop over the lanes that costs the same
// whether the lanes read one address or eight; reading a tile from storage, all lanes of an
// invocation group load the same key vec4, 32 loads per key at head dim 64. Here lane l loads
// vec4s l and 8 + l of the key (2 loads) and subgroupBroadcast, an extract and a splat, hands each
// vec4 to every lane. The vec4 indices are written out (broadcast lanes must be constants), for
// head dims up to 64 (DH4 ≤ 16). Every lane must take part: flash.wgsl has no per-invocation
// branch, and the kernel body none before the fold; keys a slot does not see are masked by
// select (slot_add_seen).
#include "common/flash.wgsl"

var<private> sg_lane: u32; // set by the entry point from @builtin(subgroup_invocation_id)

fn flash_load_tile(lid: u32, wg: u32) {}

// Lane l's share of key (values: `from_v`) j: vec4 part·8 + l, clamped into the row.
fn lane_kv(j: u32, part: u32, from_v: bool) -> vec4<f32> {
    let i = min(part * 8u + sg_lane, DH4 - 1u);
    if (from_v) {
        return flash_v(j, i);
    }
    return flash_k(j, i);
}

fn key_dots(j: u32) -> vec2<f32> {
    let a = lane_kv(j, 0u, false);
    var b = vec4<f32>(0.0);
    if (DH4 > 8u) {
        b = lane_kv(j, 1u, false);
    }
    var d = slot_dots(0u, subgroupBroadcast(a, 0u));
    if (DH4 > 1u) {
        d += slot_dots(1u, subgroupBroadcast(a, 1u));
    }
    if (DH4 > 2u) {
        d += slot_dots(2u, subgroupBroadcast(a, 2u));
    }
    if (DH4 > 3u) {
        d += slot_dots(3u, subgroupBroadcast(a, 3u));
    }
    if (DH4 > 4u) {
        d += slot_dots(4u, subgroupBroadcast(a, 4u));
    }
    if (DH4 > 5u) {
        d += slot_dots(5u, subgroupBroadcast(a, 5u));
    }
    if (DH4 > 6u) {
        d += slot_dots(6u, subgroupBroadcast(a, 6u));
    }
    if (DH4 > 7u) {
        d += slot_dots(7u, subgroupBroadcast(a, 7u));
    }
    if (DH4 > 8u) {
        d += slot_dots(8u, subgroupBroadcast(b, 0u));
    }
    if (DH4 > 9u) {
        d += slot_dots(9u, subgroupBroadcast(b, 1u));
    }
    if (DH4 > 10u) {
        d += slot_dots(10u, subgroupBroadcast(b, 2u));
    }
    if (DH4 > 11u) {
        d += slot_dots(11u, subgroupBroadcast(b, 3u));
    }
    if (DH4 > 12u) {
        d += slot_dots(12u, subgroupBroadcast(b, 4u));
    }
    if (DH4 > 13u) {
        d += slot_dots(13u, subgroupBroadcast(b, 5u));
    }
    if (DH4 > 14u) {
        d += slot_dots(14u, subgroupBroadcast(b, 6u));
    }
    if (DH4 > 15u) {
        d += slot_dots(15u, subgroupBroadcast(b, 7u));
    }
    return d;
}

fn value_fold(j: u32, pj: vec2<f32>, seen: vec2<bool>) {
    let a = lane_kv(j, 0u, true);
    var b = vec4<f32>(0.0);
    if (DH4 > 8u) {
        b = lane_kv(j, 1u, true);
    }
    slot_add_seen(0u, pj, seen, subgroupBroadcast(a, 0u));
    if (DH4 > 1u) {
        slot_add_seen(1u, pj, seen, subgroupBroadcast(a, 1u));
    }
    if (DH4 > 2u) {
        slot_add_seen(2u, pj, seen, subgroupBroadcast(a, 2u));
    }
    if (DH4 > 3u) {
        slot_add_seen(3u, pj, seen, subgroupBroadcast(a, 3u));
    }
    if (DH4 > 4u) {
        slot_add_seen(4u, pj, seen, subgroupBroadcast(a, 4u));
    }
    if (DH4 > 5u) {
        slot_add_seen(5u, pj, seen, subgroupBroadcast(a, 5u));
    }
    if (DH4 > 6u) {
        slot_add_seen(6u, pj, seen, subgroupBroadcast(a, 6u));
    }
    if (DH4 > 7u) {
        slot_add_seen(7u, pj, seen, subgroupBroadcast(a, 7u));
    }
    if (DH4 > 8u) {
        slot_add_seen(8u, pj, seen, subgroupBroadcast(b, 0u));
    }
    if (DH4 > 9u) {
        slot_add_seen(9u, pj, seen, subgroupBroadcast(b, 1u));
    }
    if (DH4 > 10u) {
        slot_add_seen(10u, pj, seen, subgroupBroadcast(b, 2u));
    }
    if (DH4 > 11u) {
        slot_add_seen(11u, pj, seen, subgroupBroadcast(b, 3u));
    }
    if (DH4 > 12u) {
        slot_add_seen(12u, pj, seen, subgroupBroadcast(b, 4u));
    }
    if (DH4 > 13u) {
        slot_add_seen(13u, pj, seen, subgroupBroadcast(b, 5u));
    }
    if (DH4 > 14u) {
        slot_add_seen(14u, pj, seen, subgroupBroadcast(b, 6u));
    }
    if (DH4 > 15u) {
        slot_add_seen(15u, pj, seen, subgroupBroadcast(b, 7u));
    }
}
