// What the Mesa core kernels share (mesa.wgsl, mesa_cg_sg.wgsl, mesa_states_rows.wgsl):
// parameters, the pipeline constants, the layout of the chunk-start states, and each lane's view
// of its chunk's decays. The including file declares the bindings (`p`, `gates`, ...), whose
// element types differ between them.

#include "common/mesa_gates.wgsl"

struct Params {
    b: u32,
    t: u32,
    h: u32,
    iters: u32,
    n0: u32,     // first chunk of the segment
    nseg: u32,   // chunks in the segment
    paper: u32,  // the CG rule (common/cg_rule.wgsl)
    tol2: f32,
}

// Head dim and chunk length are pipeline constants: every inner loop has a constant trip count.
override DIM: u32 = 64u;
override CH: u32 = 16u;

fn gate_count() -> u32 {
    return p.b * p.t * p.h;
}

fn gate_index(b: u32, t: u32, hh: u32) -> u32 {
    return (b * p.t + t) * p.h + hh;
}

// The chunk-start states of a segment, one buffer [B·H, nseg, 2, D, D]: S_kk of chunk n of
// batch·head bh, then its S_kv. Offset (in f32s) of S_kk; S_kv follows DIM² later.
fn start_kk(bh: u32, n: u32) -> u32 {
    return (bh * p.nseg + n) * 2u * DIM * DIM;
}

var<private> lm: array<f32, 16>; // M[t][s], s < CH, for the lane's position t

// For the lane at chunk position `lid` of the chunk starting at token `first`: fills lm with
// M[t][s] = exp(Γ_t − Γ_s) β_s for s ≤ t (0 above, and past T) and returns Γ_t, the chunk-local
// cumulative log decay at t (every lane walks all Γ_s alike).
fn lane_decays(b: u32, first: u32, hh: u32, lid: u32) -> f32 {
    var gam_t = 0.0;
    var gam = 0.0;
    var gams: array<f32, 16>;
    for (var s = 0u; s < CH; s++) {
        if (first + s < p.t) {
            gam += gate_g(gate_index(b, first + s, hh));
        }
        gams[s] = gam;
        if (s == lid) {
            gam_t = gam;
        }
    }
    for (var s = 0u; s < CH; s++) {
        var m = 0.0;
        if (s <= lid && first + s < p.t) {
            m = exp(gam_t - gams[s]) * gate_beta(gate_index(b, first + s, hh));
        }
        lm[s] = m;
    }
    return gam_t;
}
