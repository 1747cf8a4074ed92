// Constants, parameters and bindings of the decode attention kernels (attention_decode.wgsl for
// GPUs, attention_decode_cpu.wgsl for CPU adapters): one launch wrapper (ops::attention::decode)
// drives both, and the reduction pass reads what either wrote.
const WG: u32 = 64u;
const MAX_DH4: u32 = 32u;
// The head dimension in vec4s, fixed per pipeline: loops over it get a constant trip count, so
// compilers unroll them (and llvmpipe's per-invocation loop-iteration limiter, which silently
// truncates long-running loops, is not reached).
override DH4: u32 = 16u;

struct Params {
    b: u32,
    h: u32,
    dh: u32,
    cap: u32,
    len: u32,
    split: u32,
    nsplit: u32,
    scale: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<vec4<ST>>;      // [B, H, dh]
@group(0) @binding(2) var<storage, read> kc: array<vec4<ST>>;     // [B, H, cap, dh]
@group(0) @binding(3) var<storage, read> vc: array<vec4<ST>>;     // [B, H, cap, dh]
@group(0) @binding(4) var<storage, read_write> part_ml: array<vec2<f32>>;  // [B, H, nsplit]
@group(0) @binding(5) var<storage, read_write> part_acc: array<vec4<f32>>; // [B, H, nsplit, dh]
@group(0) @binding(6) var<storage, read_write> o: array<vec4<ST>>; // [B, H, dh]
