// Online-softmax machinery shared by the flash-style kernels (softmax attention, RAT's
// inter-chunk attention). Each invocation owns QL queries (slot qi = 0 … QL−1); keys and values
// arrive in tiles of BK; each query keeps a running max `fm`, a running sum `fl` and an
// accumulator `acc`, all f32.
//
// How keys reach the invocations is the job of one of two snippets, included by the kernel file
// before its body: `flash_tiles.wgsl` (a tile in workgroup memory on GPUs, or read from storage
// by every invocation) or `flash_subgroup.wgsl` (CPU drivers with 8-lane subgroups: each lane
// loads a vec4 of the key and subgroupBroadcast shares it). They define `flash_load_tile`,
// `key_dots(j)` (the slots' scores against key j of the tile) and `value_fold(j, p, seen)`. The
// kernel body defines `fn key_visible(qi: u32, key: u32) -> bool` for query slot qi,
// `flash_k(j, i)` / `flash_v(j, i)` (vec4 i of key / value j of the tile, from storage) and
// `tile_key_valid(j)` (key j of the tile exists).
//
// QL: queries per invocation, 1 or 2. GPUs: 1 (registers are the scarce thing). CPU adapters: 2.
// There every storage or workgroup load is a loop over the SIMD lanes and costs far more than
// the multiply-adds it feeds, so each key vec4 loaded serves both queries: attention at T = 4096
// 1.65 s → 0.89 s on lavapipe with tiles read from storage; with subgroup broadcasts two queries
// beat one as well (0.29–0.47 s vs 0.60–0.76 s, interleaved runs). (Four queries: the head-dim
// loops, holding four dot products, were no longer unrolled and ran into llvmpipe's loop limiter;
// split in halves to avoid that, they were slower than two queries.)
override QL: u32 = 1u;

const BK: u32 = 16u;
const MAX_QL: u32 = 2u;
const MAX_DH4: u32 = 32u; // head dims up to 128, in vec4s
const NEG_BIG: f32 = -3.4028234663852886e38;
// The head dimension in vec4s, fixed per pipeline: loops over it get a constant trip count, so
// compilers unroll them (and llvmpipe's loop-iteration limiter, which silently stops loops after
// ~65k iterations per invocation, all loops counted together, is never reached).
override DH4: u32 = 16u;

var<private> qv: array<array<vec4<f32>, MAX_DH4>, MAX_QL>; // the queries, pre-scaled
var<private> acc: array<array<vec4<f32>, MAX_DH4>, MAX_QL>;
// Per-slot scalars, slot qi in component qi.
var<private> fm: vec2<f32>;
var<private> fl: vec2<f32>;

fn flash_init() {
    fm = vec2<f32>(NEG_BIG);
    fl = vec2<f32>(0.0);
    for (var i = 0u; i < DH4; i++) {
        acc[0][i] = vec4<f32>(0.0);
        acc[1][i] = vec4<f32>(0.0);
    }
}

// Starts slot qi's softmax with one entry already in it: score `s`, value `val` (RAT's own state).
fn flash_seed(qi: u32, s: f32, val: ptr<function, array<vec4<f32>, MAX_DH4>>) {
    fm[qi] = s;
    fl[qi] = 1.0;
    for (var i = 0u; i < DH4; i++) {
        acc[qi][i] = (*val)[i];
    }
}

// exp of the slots in use (GPUs, QL = 1, pay for one).
fn slot_exp(x: vec2<f32>) -> vec2<f32> {
    if (QL == 1u) {
        return vec2<f32>(exp(x.x), 0.0);
    }
    return exp(x);
}

// The slots' dot products with key vec4 i, `kk`. Callers pass constant or unrolled i: a slot or
// vec4 index that stays a variable would put qv and acc in indexed memory.
fn slot_dots(i: u32, kk: vec4<f32>) -> vec2<f32> {
    var d = vec2<f32>(dot(qv[0][i], kk), 0.0);
    if (QL > 1u) {
        d.y = dot(qv[1][i], kk);
    }
    return d;
}

// acc[slot][i] *= a[slot].
fn slot_scale(i: u32, a: vec2<f32>) {
    acc[0][i] *= a.x;
    if (QL > 1u) {
        acc[1][i] *= a.y;
    }
}

// acc[slot][i] += w[slot] · vv.
fn slot_add(i: u32, w: vec2<f32>, vv: vec4<f32>) {
    acc[0][i] += w.x * vv;
    if (QL > 1u) {
        acc[1][i] += w.y * vv;
    }
}

// slot_add where `seen` only: a value of a key a slot does not see must add nothing, not 0 · vv
// (a NaN there would become NaN for the slot: 0 · NaN = NaN).
fn slot_add_seen(i: u32, w: vec2<f32>, seen: vec2<bool>, vv: vec4<f32>) {
    acc[0][i] += select(vec4<f32>(0.0), w.x * vv, seen.x);
    if (QL > 1u) {
        acc[1][i] += select(vec4<f32>(0.0), w.y * vv, seen.y);
    }
}

// Folds the tile of BK keys starting at key index `k0` into every slot's running softmax: the
// scores first, then one rescale, then the values. The slots are written out, not looped over,
// and switched off by the constant QL: llvmpipe unrolls the head-dim loops only when they hold no
// inner loop and a small body, and a loop left standing runs into its loop limiter. No branch
// depends on the invocation (invisible keys weigh 0): the subgroup snippet needs every lane.
fn flash_fold(k0: u32) {
    var s: array<vec2<f32>, BK>;
    var tile_max = vec2<f32>(NEG_BIG);
    for (var j = 0u; j < BK; j++) {
        let vis = vec2<bool>(key_visible(0u, k0 + j), QL > 1u && key_visible(1u, k0 + j));
        s[j] = select(vec2<f32>(NEG_BIG), key_dots(j), vis);
        tile_max = max(tile_max, s[j]);
    }
    // A slot that has seen no key yet keeps m = NEG_BIG, corr = 1, and adds nothing below.
    let m_new = max(fm, tile_max);
    let corr = slot_exp(fm - m_new);
    fl *= corr;
    for (var i = 0u; i < DH4; i++) {
        slot_scale(i, corr);
    }
    fm = m_new;
    for (var j = 0u; j < BK; j++) {
        let seen = s[j] > vec2<f32>(-3.0e38);
        let pj = select(vec2<f32>(0.0), slot_exp(s[j] - m_new), seen);
        fl += pj;
        value_fold(j, pj, seen);
    }
}

fn flash_out(qi: u32, i: u32) -> vec4<f32> {
    return acc[qi][i] / fl[qi];
}
