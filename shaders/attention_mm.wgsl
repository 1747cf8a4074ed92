// Blocked-product flash attention forward (common/attention_mm_body.wgsl) with its two products
// in plain WGSL: the twin of attention_coop16 / attention_coop8 that runs on any adapter (and is
// how the shared body is tested on CPU adapters).
const SPARE: u32 = 0u;
#include "common/attention_mm_body.wgsl"

// S = Q·Kᵀ: each lane a few scores, a vec4 of the head dim per step.
fn mm_scores(lid: u32, sgid: u32, nsg: u32) {
    for (var e = lid; e < BQ * KT; e += WG) {
        let qa = (e / KT) * DH;
        let ka = (e % KT) * DH;
        var d = 0.0;
        for (var i = 0u; i < DH; i += 4u) {
            let x = vec4<f32>(f32(qs[qa + i]), f32(qs[qa + i + 1u]), f32(qs[qa + i + 2u]),
                              f32(qs[qa + i + 3u]));
            let y = vec4<f32>(f32(kv[ka + i]), f32(kv[ka + i + 1u]), f32(kv[ka + i + 2u]),
                              f32(kv[ka + i + 3u]));
            d += dot(x, y);
        }
        st[e] = d;
    }
}

// O_tile = P·V: each lane a vec4 of a row of the output tile per step.
fn mm_pv(lid: u32, sgid: u32, nsg: u32) {
    for (var e = lid; e < BQ * DH4; e += WG) {
        let r = e / DH4;
        let c = 4u * (e % DH4);
        var s = vec4<f32>(0.0);
        for (var j = 0u; j < KT; j++) {
            let at = j * DH + c;
            s += f32(ps[r * KT + j])
                * vec4<f32>(f32(kv[at]), f32(kv[at + 1u]), f32(kv[at + 2u]), f32(kv[at + 3u]));
        }
        let o_at = r * DH + c;
        ot[o_at] = s.x;
        ot[o_at + 1u] = s.y;
        ot[o_at + 2u] = s.z;
        ot[o_at + 3u] = s.w;
    }
}

@compute @workgroup_size(64)
fn attention_mm(@builtin(workgroup_id) wid: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    attention_mm_main(wid, lid, 0u, 1u);
}
