// Parameters and bindings of the flash attention forward, shared by its CPU-adapter kernels
// (common/attention_fwd_body.wgsl) and its GPU kernel (common/attention_fa2_body.wgsl): one
// launch wrapper (ops::attention::attention) drives both.
struct Params {
    b: u32,
    t: u32,
    h: u32,
    dh: u32,
    window: u32,
    scale: f32,
    // This pass folds keys [k_begin, k_end) (one pass: 0, T). Queries before k_begin finished in
    // an earlier pass; those past k_end carry their running softmax to the next pass.
    k_begin: u32,
    k_end: u32,
    g0: u32,     // first query group of the pass
    groups: u32, // query groups in this dispatch (the GPU kernel walks them last first)
    _p1: u32,
    _p2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<vec4<ST>>;
@group(0) @binding(2) var<storage, read> k: array<vec4<ST>>; // [B, H, T, dh] (ops::transpose::split_heads)
@group(0) @binding(3) var<storage, read> v: array<vec4<ST>>;
@group(0) @binding(4) var<storage, read_write> o: array<vec4<ST>>;
// The running softmax of queries that go on in the next pass: acc [B, T, H, dh], (m, l) [B, T, H].
@group(0) @binding(5) var<storage, read_write> carry_acc: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read_write> carry_ml: array<vec2<f32>>;
