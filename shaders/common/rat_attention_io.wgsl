// Parameters and bindings of RAT's inter-chunk attention, shared by its CPU-adapter kernels
// (common/rat_attention_body.wgsl) and its GPU kernel (common/rat_attention_fa2_body.wgsl, which
// adds the carry between passes); one launch wrapper (ops::rat::inter_chunk_attention) drives both.
struct Params {
    b: u32,
    t: u32,
    h: u32,
    groups: u32, // query groups (GQA): head h reads group h % groups
    l: u32,
    scale: f32,
    chunks: u32,
    _p: u32,
    // The GPU kernel's pass: chunks [k_begin, k_end), token groups g0 … g0 + ngroups − 1.
    k_begin: u32,
    k_end: u32,
    g0: u32,
    ngroups: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> qr: array<vec4<ST>>;
@group(0) @binding(2) var<storage, read> kr: array<vec4<ST>>;
@group(0) @binding(3) var<storage, read> sv: array<vec4<ST>>;
@group(0) @binding(4) var<storage, read> kc: array<vec4<ST>>; // chunk finals of kr, [B, H, chunks, dh]
@group(0) @binding(5) var<storage, read> vc: array<vec4<ST>>; // chunk finals of sv
@group(0) @binding(6) var<storage, read_write> o: array<vec4<ST>>;
