// The FlashAttention-2-style core shared by the GPU attention kernels (attention_fa2*.wgsl,
// rat_attention_fa2*.wgsl). A workgroup of 256 lanes owns BQ = 64 queries; each query is worked by
// LP = 4 lanes that split the head dim (lane part π holds vec4s π, π + 4, π + 8, … of the query
// and of its accumulator: at dh = 128 that is 32 + 32 floats per lane, where a
// one-query-per-lane kernel holds 256 and spills). Keys and values stream through workgroup
// memory in tiles of KT keys (KT sized from the head dim and the device's workgroup memory by the
// launch wrapper). Per tile a lane computes its partial scores against all KT keys, the four
// partials of a query are summed (`reduce_scores` of common/fa2_reduce_sg.wgsl or
// fa2_reduce_wg.wgsl), the online softmax is rescaled once per tile (not once per key), and P·V
// accumulates the lane's part of the head dim.
//
// The kernel body defines, for its lane's query: `fa2_visible(key) -> bool`, and for the tile
// loads `fa2_key_exists(key)`, `fa2_key(key, i)`, `fa2_value(key, i)` (vec4 i of a key / value).

override DH4: u32 = 16u; // head dim / 4
override KT: u32 = 16u;  // keys per tile (≤ MAX_KT, a multiple of 4)
const LP: u32 = 4u;      // lanes per query
const BQ: u32 = 64u;     // queries per workgroup
const MAX_PART: u32 = 8u; // vec4s per lane at dh = 128
const MAX_KT: u32 = 16u;
const NEG_BIG: f32 = -3.4028234663852886e38;
// vec4s of the head dim lane part π holds: π + 4·ii for ii < NPART (the last may be absent).
override NPART: u32 = (DH4 + LP - 1u) / LP;

var<workgroup> ks: array<vec4<f32>, KT * DH4>; // [key][dh / 4]
var<workgroup> vs: array<vec4<f32>, KT * DH4>;

var<private> qv: array<vec4<f32>, MAX_PART>;  // this lane's part of the query, pre-scaled
var<private> acc: array<vec4<f32>, MAX_PART>; // and of its accumulator
var<private> sc: array<f32, MAX_KT>;          // scores of the tile's keys
var<private> fm: f32;
var<private> fl: f32;
var<private> part: u32;                       // this lane's head-dim part

fn fa2_init(p_: u32) {
    part = p_;
    for (var ii = 0u; ii < MAX_PART; ii++) {
        qv[ii] = vec4<f32>(0.0);
        acc[ii] = vec4<f32>(0.0);
    }
    fm = NEG_BIG;
    fl = 0.0;
}

// The head-dim vec4 index of this lane's ii-th part, or DH4 where it has none.
fn fa2_dim(ii: u32) -> u32 {
    return min(part + LP * ii, DH4);
}

// Folds the tile of keys kt … kt + KT − 1 into the lane's query. Every lane of the workgroup
// calls it with the same kt (barriers, and subgroup operations in the reduction).
fn fa2_fold_tile(lid: u32, kt: u32) {
    workgroupBarrier();
    for (var e = lid; e < KT * DH4; e += BQ * LP) {
        let key = kt + e / DH4;
        var kk = vec4<f32>(0.0);
        var vv = vec4<f32>(0.0);
        if (fa2_key_exists(key)) {
            kk = fa2_key(key, e % DH4);
            vv = fa2_value(key, e % DH4);
        }
        ks[e] = kk;
        vs[e] = vv;
    }
    workgroupBarrier();
    for (var j = 0u; j < KT; j++) {
        var d = 0.0;
        for (var ii = 0u; ii < NPART; ii++) {
            let i = fa2_dim(ii);
            if (i < DH4) {
                d += dot(qv[ii], ks[j * DH4 + i]);
            }
        }
        sc[j] = d;
    }
    reduce_scores(lid);
    // One online-softmax update for the tile (the four lanes of a query agree on it).
    var m_tile = NEG_BIG;
    for (var j = 0u; j < KT; j++) {
        if (fa2_visible(kt + j)) {
            m_tile = max(m_tile, sc[j]);
        }
    }
    if (m_tile > NEG_BIG) {
        let m_new = max(fm, m_tile);
        let a = exp(fm - m_new);
        fm = m_new;
        fl *= a;
        for (var ii = 0u; ii < NPART; ii++) {
            acc[ii] *= a;
        }
        for (var j = 0u; j < KT; j++) {
            if (fa2_visible(kt + j)) {
                let pj = exp(sc[j] - m_new);
                fl += pj;
                for (var ii = 0u; ii < NPART; ii++) {
                    let i = fa2_dim(ii);
                    if (i < DH4) {
                        acc[ii] += pj * vs[j * DH4 + i];
                    }
                }
            }
        }
    }
}

// The lane's part ii of the normalized output.
fn fa2_out(ii: u32) -> vec4<f32> {
    return acc[ii] * select(0.0, 1.0 / fl, fl > 0.0);
}
