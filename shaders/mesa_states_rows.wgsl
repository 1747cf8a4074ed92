// The chunk-start states for CPU drivers, in one pass: an invocation owns a 4×4 block (rows
// i..i+3, columns j..j+3) of both S_kk and S_kv and walks the segment's chunks token by token,
// storing each chunk's start state. A token costs it three vec4 loads (k_j.., v_j.., k_i..) plus
// β and g for 32 multiply-adds; on drivers that compile each load to a loop over the SIMD lanes,
// loads are the whole cost. GPUs take the chunk-parallel mesa_chunk_updates + mesa_scan
// (shaders/mesa.wgsl), whose parallelism does not depend on T. Same bindings, state layout and
// results (to rounding) as those; D must be a multiple of 4.

#include "common/mesa_common.wgsl"

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(2) var<storage, read> k: array<vec4<ST>>;   // [B, T, H, D]
@group(0) @binding(3) var<storage, read> v: array<vec4<ST>>;   // [B, T, H, D]
@group(0) @binding(4) var<storage, read> gates: array<f32>;    // g, β, λ (common/mesa_gates.wgsl)
@group(0) @binding(7) var<storage, read_write> starts: array<vec4<f32>>;   // [B·H, nseg, 2, D, D]
@group(0) @binding(8) var<storage, read_write> state_kk: array<vec4<f32>>; // running [B·H, D, D]
@group(0) @binding(9) var<storage, read_write> state_kv: array<vec4<f32>>;

override DIM4: u32 = DIM / 4u;
// Invocations per workgroup; blocks per head are DIM4², so a head fills DIM4² / BLOCKS_WG groups.
override BLOCKS_WG: u32 = 64u;

fn row4(b: u32, t: u32, hh: u32) -> u32 {
    return ((b * p.t + t) * p.h + hh) * DIM4;
}

@compute @workgroup_size(BLOCKS_WG)
fn mesa_states_rows(@builtin(workgroup_id) wid: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
    let e = wid.x * BLOCKS_WG + lid;
    if (e >= DIM4 * DIM4) {
        return;
    }
    let i4 = e / DIM4;
    let j4 = e % DIM4;
    let bh = wid.y;
    let b = bh / p.h;
    let hh = bh % p.h;
    // vec4 index of row 4·i4 + r, column block j4, in a [D, D] matrix: + r · DIM4.
    let at = 4u * i4 * DIM4 + j4;
    let sbase = bh * DIM * DIM4 + at;
    var skk: array<vec4<f32>, 4>;
    var skv: array<vec4<f32>, 4>;
    for (var r = 0u; r < 4u; r++) {
        skk[r] = state_kk[sbase + r * DIM4];
        skv[r] = state_kv[sbase + r * DIM4];
    }
    for (var n = 0u; n < p.nseg; n++) {
        let so = start_kk(bh, n) / 4u + at;
        for (var r = 0u; r < 4u; r++) {
            starts[so + r * DIM4] = skk[r];
            starts[so + DIM * DIM4 + r * DIM4] = skv[r];
        }
        let first = (p.n0 + n) * CH;
        let last = min(first + CH, p.t);
        // Walk the chunk backwards: `suffix` is Γ_last − Γ_s when token s is reached.
        var suffix = 0.0;
        var add_kk = array<vec4<f32>, 4>();
        var add_kv = array<vec4<f32>, 4>();
        for (var s = last; s > first; s--) {
            let gi = gate_index(b, s - 1u, hh);
            let w = gate_beta(gi) * exp(suffix);
            let base = row4(b, s - 1u, hh);
            let ki = w * vec4<f32>(k[base + i4]);
            let kj = vec4<f32>(k[base + j4]);
            let vj = vec4<f32>(v[base + j4]);
            add_kk[0] += ki.x * kj;
            add_kk[1] += ki.y * kj;
            add_kk[2] += ki.z * kj;
            add_kk[3] += ki.w * kj;
            add_kv[0] += ki.x * vj;
            add_kv[1] += ki.y * vj;
            add_kv[2] += ki.z * vj;
            add_kv[3] += ki.w * vj;
            suffix += gate_g(gi);
        }
        let decay = exp(suffix);
        for (var r = 0u; r < 4u; r++) {
            skk[r] = decay * skk[r] + add_kk[r];
            skv[r] = decay * skv[r] + add_kv[r];
        }
    }
    for (var r = 0u; r < 4u; r++) {
        state_kk[sbase + r * DIM4] = skk[r];
        state_kv[sbase + r * DIM4] = skv[r];
    }
}
