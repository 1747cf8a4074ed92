// RAT's inter-chunk attention (spec/rat.md §2.6), flash-style. Token t in chunk c = t / L attends,
// in one softmax, to the final states of chunks 0 … c−1 (key: scanned key at token jL+L−1, rotated
// at chunk position j; value: scanned value there) and to its own running state (score q·k̃_t,
// value ṽ_t). The own state seeds the online softmax; chunk keys stream through workgroup memory in
// tiles of BK chunks (common/flash.wgsl). No T×C score matrix is formed.
// qr: queries rotated at chunk positions, [B, T, G·dh] (head h uses group h mod G);
// kr: scanned keys rotated at chunk positions, [B, T, D]; sv: scanned values, [B, T, D].
#include "common/flash.wgsl"

const BQ: u32 = 64u;

struct Params {
    b: u32,
    t: u32,
    h: u32,
    groups: u32,
    l: u32,
    scale: f32,
    _p0: u32,
    _p1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> qr: array<vec4<ST>>;
@group(0) @binding(2) var<storage, read> kr: array<vec4<ST>>;
@group(0) @binding(3) var<storage, read> sv: array<vec4<ST>>;
@group(0) @binding(4) var<storage, read_write> o: array<vec4<ST>>;

var<private> cq: u32; // chunk of this invocation's query

fn key_visible(j: u32) -> bool {
    return j < cq;
}

@compute @workgroup_size(64)
fn rat_attention(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let b = wid.y / p.h;
    let hh = wid.y % p.h;
    let t0 = wid.x * BQ;
    let tq = min(t0 + lid, p.t - 1u);
    cq = tq / p.l;
    let row = p.h * DH4;
    let base = (b * p.t + tq) * row + hh * DH4;
    let qbase = (b * p.t + tq) * p.groups * DH4 + (hh % p.groups) * DH4;
    var own: array<vec4<f32>, MAX_DH4>;
    var s = 0.0;
    for (var i = 0u; i < DH4; i++) {
        qv[i] = vec4<f32>(qr[qbase + i]) * p.scale;
        s += dot(qv[i], vec4<f32>(kr[base + i]));
        own[i] = vec4<f32>(sv[base + i]);
    }
    flash_seed(s, &own);
    // Chunks any query of this tile can see: 0 … c(last query) − 1.
    let c_end = (min(t0 + BQ, p.t) - 1u) / p.l;
    for (var j0 = 0u; j0 < c_end; j0 += BK) {
        for (var e = lid; e < BK * DH4; e += 64u) {
            let j = e / DH4;
            let i = e % DH4;
            var kk = vec4<f32>(0.0);
            var vv = vec4<f32>(0.0);
            if (j0 + j < c_end) {
                let kb = (b * p.t + (j0 + j) * p.l + p.l - 1u) * row + hh * DH4 + i;
                kk = vec4<f32>(kr[kb]);
                vv = vec4<f32>(sv[kb]);
            }
            ks[j * MAX_DH4 + i] = kk;
            vs[j * MAX_DH4 + i] = vv;
        }
        workgroupBarrier();
        flash_fold(j0);
        workgroupBarrier();
    }
    if (t0 + lid < p.t) {
        for (var i = 0u; i < DH4; i++) {
            o[base + i] = vec4<ST>(flash_out(i));
        }
    }
}
