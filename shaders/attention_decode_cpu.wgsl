// attention_decode (shaders/attention_decode.wgsl) for CPU adapters: the same splits, partials
// and reduction, with fewer barriers per tile of 64 keys (two instead of four) and the weighted
// sum of values taken by dh/4 lanes only, which on a CPU driver, where a workgroup's lanes run
// one SIMD group after another and idle lanes are masked off, costs less than sharing it out
// (measured on lavapipe at 4097 keys: 8.7 ms here, 10–17 ms with the GPU kernel). Scores are
// computed one key per invocation, the weighted sum of values one vec4 of the head dimension
// per invocation. With one split the first pass writes the output itself.

#include "common/attention_decode_io.wgsl"

var<workgroup> qs: array<vec4<f32>, MAX_DH4>;
var<workgroup> sc: array<f32, WG>;

@compute @workgroup_size(WG)
fn attention_decode_cpu(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let dh4 = DH4;
    let sp = wid.x;
    let bh = wid.y;
    let cache = bh * p.cap * dh4;
    if (lid < dh4) {
        qs[lid] = vec4<f32>(q[bh * dh4 + lid]) * p.scale;
    }
    workgroupBarrier();
    let k_begin = sp * p.split;
    let k_end = min(k_begin + p.split, p.len);
    var m = -3.4028234663852886e38;
    var l = 0.0;
    var acc = vec4<f32>(0.0);
    for (var kt = k_begin; kt < k_end; kt += WG) {
        let j = kt + lid;
        var s = -3.4028234663852886e38;
        if (j < k_end) {
            var d = 0.0;
            for (var i = 0u; i < dh4; i++) {
                d += dot(qs[i], vec4<f32>(kc[cache + j * dh4 + i]));
            }
            s = d;
        }
        sc[lid] = s;
        workgroupBarrier();
        let n = min(WG, k_end - kt);
        var tile_max = -3.4028234663852886e38;
        for (var jj = 0u; jj < n; jj++) {
            tile_max = max(tile_max, sc[jj]);
        }
        let m_new = max(m, tile_max);
        let corr = exp(m - m_new);
        l *= corr;
        acc *= corr;
        for (var jj = 0u; jj < n; jj++) {
            let pj = exp(sc[jj] - m_new);
            l += pj;
            if (lid < dh4) {
                acc += pj * vec4<f32>(vc[cache + (kt + jj) * dh4 + lid]);
            }
        }
        m = m_new;
        workgroupBarrier();
    }
    if (p.nsplit == 1u) {
        if (lid < dh4) {
            o[bh * dh4 + lid] = vec4<ST>(acc / l);
        }
        return;
    }
    let slot = bh * p.nsplit + sp;
    if (lid == 0u) {
        part_ml[slot] = vec2<f32>(m, l);
    }
    if (lid < dh4) {
        part_acc[slot * dh4 + lid] = acc;
    }
}
