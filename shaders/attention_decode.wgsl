// Decode attention (flash-decoding): one new query per (batch, head) against a KV cache
// [B, H, cap, dh] holding `len` valid entries. The cache is cut into splits of `split` keys so a
// long cache fills the GPU (ops::attention::decode_split chooses them from the cache length and
// the adapter); each workgroup folds its split into a partial (max, sum, accumulator), and
// `attention_decode_reduce` combines the splits. With one split the first pass writes the output
// itself and the reduction is not dispatched.
// Every lane works in both passes: a tile of 64 keys is scored one key per lane, each weight
// exp(s − m) is computed once (by the key's lane), and the weighted sum of values is split over
// the lanes as (key group, vec4 of the head dim): 64 / (dh/4) groups of keys, each lane summing
// its group's keys for one vec4; the groups are added once at the end. The reduction splits its
// partials over the lanes the same way.

#include "common/attention_decode_io.wgsl"

var<workgroup> qs: array<vec4<f32>, MAX_DH4>;
var<workgroup> sc: array<f32, WG>;          // the tile's scores, then its weights
var<workgroup> accs: array<vec4<f32>, WG>;  // each lane's partial value sum

const NEG: f32 = -3.4028234663852886e38; // "no key yet": finite, so NEG − NEG is 0, not NaN

// Sum of the key groups' partials for vec4 `c` (lanes 0 … DH4 − 1 call it after a barrier).
fn group_sum(c: u32) -> vec4<f32> {
    var s = vec4<f32>(0.0);
    for (var g = 0u; g < WG / DH4; g++) {
        s += accs[g * DH4 + c];
    }
    return s;
}

@compute @workgroup_size(WG)
fn attention_decode(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let sp = wid.x;
    let bh = wid.y;
    let cache = bh * p.cap * DH4;
    // This lane's share of the value sum: keys g, g + KG, … of a tile, vec4 c of the head dim.
    let kg = WG / DH4;
    let g = lid / DH4;
    let c = lid % DH4;
    if (lid < DH4) {
        qs[lid] = vec4<f32>(q[bh * DH4 + lid]) * p.scale;
    }
    workgroupBarrier();
    let k_begin = sp * p.split;
    let k_end = min(k_begin + p.split, p.len);
    var m = NEG;
    var l = 0.0;
    var acc = vec4<f32>(0.0);
    for (var kt = k_begin; kt < k_end; kt += WG) {
        let n = min(WG, k_end - kt);
        var s = NEG;
        if (lid < n) {
            var d = 0.0;
            for (var i = 0u; i < DH4; i++) {
                d += dot(qs[i], vec4<f32>(kc[cache + (kt + lid) * DH4 + i]));
            }
            s = d;
        }
        sc[lid] = s;
        workgroupBarrier();
        var tile_max = NEG;
        for (var jj = 0u; jj < n; jj++) {
            tile_max = max(tile_max, sc[jj]);
        }
        let m_new = max(m, tile_max);
        workgroupBarrier();
        sc[lid] = select(0.0, exp(s - m_new), lid < n);
        workgroupBarrier();
        var tile_l = 0.0;
        for (var jj = 0u; jj < n; jj++) {
            tile_l += sc[jj];
        }
        let corr = exp(m - m_new);
        l = l * corr + tile_l;
        acc *= corr;
        if (g < kg) {
            for (var jj = g; jj < n; jj += kg) {
                acc += sc[jj] * vec4<f32>(vc[cache + (kt + jj) * DH4 + c]);
            }
        }
        m = m_new;
        workgroupBarrier();
    }
    accs[lid] = select(vec4<f32>(0.0), acc, g < kg);
    workgroupBarrier();
    if (lid < DH4) {
        let total = group_sum(lid);
        if (p.nsplit == 1u) {
            o[bh * DH4 + lid] = vec4<ST>(total / l);
        } else {
            let slot = bh * p.nsplit + sp;
            part_acc[slot * DH4 + lid] = total;
            if (lid == 0u) {
                part_ml[slot] = vec2<f32>(m, l);
            }
        }
    }
}

@compute @workgroup_size(WG)
fn attention_decode_reduce(@builtin(workgroup_id) wid: vec3<u32>,
                           @builtin(local_invocation_index) lid: u32) {
    let bh = wid.x;
    let kg = WG / DH4;
    let g = lid / DH4;
    let c = lid % DH4;
    var m = NEG;
    for (var s = 0u; s < p.nsplit; s++) {
        m = max(m, part_ml[bh * p.nsplit + s].x);
    }
    var l = 0.0;
    for (var s = 0u; s < p.nsplit; s++) {
        let ml = part_ml[bh * p.nsplit + s];
        l += ml.y * exp(ml.x - m);
    }
    var acc = vec4<f32>(0.0);
    if (g < kg) {
        for (var s = g; s < p.nsplit; s += kg) {
            let w = exp(part_ml[bh * p.nsplit + s].x - m);
            acc += w * part_acc[(bh * p.nsplit + s) * DH4 + c];
        }
    }
    accs[lid] = select(vec4<f32>(0.0), acc, g < kg);
    workgroupBarrier();
    if (lid < DH4) {
        o[bh * DH4 + lid] = vec4<ST>(group_sum(lid) / l);
    }
}
