// Online-softmax machinery shared by the flash-style kernels (softmax attention, RAT's
// inter-chunk attention). One query per invocation; keys and values arrive in tiles of BK; each
// query keeps a running max `fm`, a running sum `fl` and an accumulator `acc`, all f32. The
// including kernel defines `fn key_visible(key: u32) -> bool` for the query of the invocation,
// `flash_k(j, i)` / `flash_v(j, i)` (vec4 i of key / value j of the tile, read from storage) and
// `tile_key_valid(j)` (key j of the tile exists).
//
// KV_FROM_STORAGE picks where the tile is read from. GPUs (false): the workgroup loads it once
// into workgroup memory (`ks`, `vs`) and all its queries share it. CPU adapters (true): every
// invocation reads it from storage, with no barrier; on lavapipe a workgroup-memory load costs
// like a gather even when all lanes read the same address, and this is 1.5× faster (measured,
// attention at T = 4096).
override KV_FROM_STORAGE: bool = false;

const BK: u32 = 16u;
const MAX_DH4: u32 = 32u; // head dims up to 128, in vec4s
const NEG_BIG: f32 = -3.4028235e38;
// The head dimension in vec4s, fixed per pipeline: loops over it get a constant trip count, so
// compilers unroll them (and llvmpipe's loop-iteration limiter, which silently stops a loop after
// ~65k iterations per invocation, is never reached).
override DH4: u32 = 16u;

var<workgroup> ks: array<vec4<f32>, 512>; // BK * MAX_DH4
var<workgroup> vs: array<vec4<f32>, 512>;

var<private> qv: array<vec4<f32>, MAX_DH4>; // the query, pre-scaled
var<private> acc: array<vec4<f32>, MAX_DH4>;
var<private> fm: f32 = NEG_BIG;
var<private> fl: f32 = 0.0;

// Starts the softmax with one entry already in it: score `s`, value `val` (RAT's own state).
fn flash_seed(s: f32, val: ptr<function, array<vec4<f32>, MAX_DH4>>) {
    fm = s;
    fl = 1.0;
    for (var i = 0u; i < DH4; i++) {
        acc[i] = (*val)[i];
    }
}

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

fn flash_key_score(j: u32) -> f32 {
    var d = 0.0;
    for (var i = 0u; i < DH4; i++) {
        d += dot(qv[i], tile_k(j, i));
    }
    return d;
}

// Folds the tile of BK keys starting at key index `k0` into the running softmax: the scores
// first, then a single rescale of the accumulator.
fn flash_fold(k0: u32) {
    var s: array<f32, BK>;
    var tile_max = NEG_BIG;
    for (var j = 0u; j < BK; j++) {
        s[j] = select(NEG_BIG, flash_key_score(j), key_visible(k0 + j));
        tile_max = max(tile_max, s[j]);
    }
    if (tile_max <= -3.0e38) {
        return;
    }
    let m_new = max(fm, tile_max);
    let corr = exp(fm - m_new);
    fl *= corr;
    for (var i = 0u; i < DH4; i++) {
        acc[i] *= corr;
    }
    for (var j = 0u; j < BK; j++) {
        if (s[j] > -3.0e38) {
            let pj = exp(s[j] - m_new);
            fl += pj;
            for (var i = 0u; i < DH4; i++) {
                acc[i] += pj * tile_v(j, i);
            }
        }
    }
    fm = m_new;
}

fn flash_out(i: u32) -> vec4<f32> {
    return acc[i] / fl;
}
