// Flash-style causal softmax attention, optionally with a sliding window, never holding a T×T matrix.
// q, k, v, o are [B, T, H, dh] (the [B, T, D] projection layout, head-major channels).
// A workgroup takes BQ consecutive queries of one (batch, head), one query per invocation; K and V
// stream through workgroup memory in tiles of BK keys, shared by the BQ queries; each query keeps an
// online softmax (running max m, running sum l, accumulator acc) in f32.
// With a window W, query t sees keys t−W … t; key tiles wholly outside every query's window are
// skipped, so the cost is O(T·W). Without one (W = 0xffffffff) it is plain causal attention.

const BQ: u32 = 64u;
const BK: u32 = 16u;
const MAX_DH4: u32 = 32u;
// The head dimension in vec4s, fixed per pipeline: loops over it get a constant trip count, so
// compilers unroll them (and llvmpipe's per-invocation loop-iteration limiter, which silently
// truncates long-running loops, is not reached).
override DH4: u32 = 16u; // head dims up to 128, in vec4s

struct Params {
    b: u32,
    t: u32,
    h: u32,
    dh: u32,
    window: u32,
    scale: f32,
    _p0: u32,
    _p1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<vec4<ST>>;
@group(0) @binding(2) var<storage, read> k: array<vec4<ST>>;
@group(0) @binding(3) var<storage, read> v: array<vec4<ST>>;
@group(0) @binding(4) var<storage, read_write> o: array<vec4<ST>>;

var<workgroup> ks: array<vec4<f32>, 512>; // BK * MAX_DH4
var<workgroup> vs: array<vec4<f32>, 512>;

@compute @workgroup_size(64)
fn attention_fwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let dh4 = DH4;
    let bh = wid.y;
    let b = bh / p.h;
    let hh = bh % p.h;
    let t0 = wid.x * BQ;
    let tq = t0 + lid;
    let live = tq < p.t;
    let tqc = min(tq, p.t - 1u);
    let row = p.h * dh4; // vec4s per token
    let qbase = (b * p.t + tqc) * row + hh * dh4;
    var qv: array<vec4<f32>, MAX_DH4>;
    var acc: array<vec4<f32>, MAX_DH4>;
    for (var i = 0u; i < dh4; i++) {
        qv[i] = vec4<f32>(q[qbase + i]) * p.scale;
        acc[i] = vec4<f32>(0.0);
    }
    var m = -3.4028235e38;
    var l = 0.0;
    // Keys any query of this tile can see: [max(0, t0 − W), last query].
    let t_last = min(t0 + BQ, p.t) - 1u;
    var k_lo = 0u;
    if (p.window != 0xffffffffu && t0 > p.window) {
        k_lo = t0 - p.window;
    }
    k_lo = (k_lo / BK) * BK;
    for (var kt = k_lo; kt <= t_last; kt += BK) {
        // Cooperative load of BK keys and values (zeros past the end).
        for (var e = lid; e < BK * dh4; e += 64u) {
            let j = e / dh4;
            let i = e % dh4;
            let tk = kt + j;
            var kk = vec4<f32>(0.0);
            var vv = vec4<f32>(0.0);
            if (tk < p.t) {
                let kb = (b * p.t + tk) * row + hh * dh4 + i;
                kk = vec4<f32>(k[kb]);
                vv = vec4<f32>(v[kb]);
            }
            ks[j * MAX_DH4 + i] = kk;
            vs[j * MAX_DH4 + i] = vv;
        }
        workgroupBarrier();
        // Scores of this tile, then one rescale of the accumulator per tile.
        var s: array<f32, BK>;
        var tile_max = -3.4028235e38;
        for (var j = 0u; j < BK; j++) {
            let tk = kt + j;
            let visible = tk <= tq && (p.window == 0xffffffffu || tq - tk <= p.window);
            var d = 0.0;
            for (var i = 0u; i < dh4; i++) {
                d += dot(qv[i], ks[j * MAX_DH4 + i]);
            }
            s[j] = select(-3.4028235e38, d, visible);
            tile_max = max(tile_max, s[j]);
        }
        if (tile_max > -3.0e38) {
            let m_new = max(m, tile_max);
            let corr = exp(m - m_new);
            l *= corr;
            for (var i = 0u; i < dh4; i++) {
                acc[i] *= corr;
            }
            for (var j = 0u; j < BK; j++) {
                if (s[j] > -3.0e38) {
                    let pj = exp(s[j] - m_new);
                    l += pj;
                    for (var i = 0u; i < dh4; i++) {
                        acc[i] += pj * vs[j * MAX_DH4 + i];
                    }
                }
            }
            m = m_new;
        }
        workgroupBarrier();
    }
    if (live) {
        let inv = 1.0 / l;
        for (var i = 0u; i < dh4; i++) {
            o[qbase + i] = vec4<ST>(acc[i] * inv);
        }
    }
}
