// Body of RAT's inter-chunk attention (rat_attention.wgsl, rat_attention_sg.wgsl): the key layout
// for common/flash.wgsl and the work of one workgroup. The kernel file includes a
// key-delivery snippet first and defines the entry point.

#include "common/rat_attention_io.wgsl"

var<private> cq: array<u32, MAX_QL>; // chunk of each query slot
var<private> kv0: u32;    // vec4 offset in kc / vc of the tile's first chunk
var<private> kt_end: u32; // chunks of the current tile that are visible to some query

fn flash_k(j: u32, i: u32) -> vec4<f32> {
    return vec4<f32>(kc[kv0 + j * DH4 + i]);
}

fn flash_v(j: u32, i: u32) -> vec4<f32> {
    return vec4<f32>(vc[kv0 + j * DH4 + i]);
}

fn tile_key_valid(j: u32) -> bool {
    return j < kt_end;
}

fn key_visible(qi: u32, j: u32) -> bool {
    return j < cq[qi];
}

// Seeds slot qi (token t0 + lid + 64·qi) with its own state. Called with constant slots, never in
// a loop over them: a slot index that is not a constant would put qv and acc in indexed memory.
fn seed_slot(qi: u32, b: u32, hh: u32, row: u32, t0: u32, lid: u32) {
    let tq = min(t0 + lid + 64u * qi, p.t - 1u);
    cq[qi] = tq / p.l;
    let base = (b * p.t + tq) * row + hh * DH4;
    let qbase = (b * p.t + tq) * p.groups * DH4 + (hh % p.groups) * DH4;
    var own: array<vec4<f32>, MAX_DH4>;
    var s = 0.0;
    for (var i = 0u; i < DH4; i++) {
        let qq = vec4<f32>(qr[qbase + i]) * p.scale;
        qv[qi][i] = qq;
        s += dot(qq, vec4<f32>(kr[base + i]));
        own[i] = vec4<f32>(sv[base + i]);
    }
    flash_seed(qi, s, &own);
}

fn store_slot(qi: u32, b: u32, hh: u32, row: u32, t0: u32, lid: u32) {
    let tq = t0 + lid + 64u * qi;
    if (tq < p.t) {
        let base = (b * p.t + tq) * row + hh * DH4;
        for (var i = 0u; i < DH4; i++) {
            o[base + i] = vec4<ST>(flash_out(qi, i));
        }
    }
}

fn rat_attention_main(wid: vec3<u32>, lid: u32) {
    let b = wid.y / p.h;
    let hh = wid.y % p.h;
    let t0 = wid.x * 64u * QL;
    let row = p.h * DH4;
    flash_init();
    seed_slot(0u, b, hh, row, t0, lid);
    if (QL > 1u) {
        seed_slot(1u, b, hh, row, t0, lid);
    }
    // Chunks any query of this tile can see: 0 … c(last query) − 1.
    let c_end = (min(t0 + 64u * QL, p.t) - 1u) / p.l;
    for (var j0 = 0u; j0 < c_end; j0 += BK) {
        kv0 = ((b * p.h + hh) * p.chunks + j0) * DH4;
        kt_end = min(BK, c_end - j0);
        flash_load_tile(lid, 64u);
        flash_fold(j0);
    }
    store_slot(0u, b, hh, row, t0, lid);
    if (QL > 1u) {
        store_slot(1u, b, hh, row, t0, lid);
    }
}
