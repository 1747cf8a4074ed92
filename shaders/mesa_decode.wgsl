// One Mesa decode step (spec/mesa.md §7) for one token per sequence: one workgroup per
// (batch, head), invocation j owns column j. The states are updated in place, then the reference
// CG runs from the Jacobi guess x0 = q / (diag(H) + λ + 1e-5) for a fixed number of iterations,
// then o = G_tᵀ x.

struct Params {
    b: u32,
    h: u32,
    iters: u32,
    _p: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<ST>;     // [B, H, D]
@group(0) @binding(2) var<storage, read> k: array<ST>;     // [B, H, D]
@group(0) @binding(3) var<storage, read> v: array<ST>;     // [B, H, D]
@group(0) @binding(4) var<storage, read> g: array<f32>;    // [B, H]
@group(0) @binding(5) var<storage, read> beta: array<f32>; // [B, H]
@group(0) @binding(6) var<storage, read> lamb: array<f32>; // [H, D]
@group(0) @binding(7) var<storage, read_write> state_kk: array<f32>; // [B, H, D, D]
@group(0) @binding(8) var<storage, read_write> state_kv: array<f32>;
@group(0) @binding(9) var<storage, read_write> o: array<ST>; // [B, H, D]

override DIM: u32 = 64u;
const MAX_D: u32 = 128u;

var<workgroup> pv: array<f32, MAX_D>;
var<workgroup> red: array<f32, MAX_D>;

fn dot_all(x: f32, j: u32) -> f32 {
    red[j] = x;
    workgroupBarrier();
    var s = 0.0;
    for (var i = 0u; i < DIM; i++) {
        s += red[i];
    }
    workgroupBarrier();
    return s;
}

// (H p)_j + λ_j p_j with p in workgroup memory.
fn apply(j: u32, base: u32, lam: f32) -> f32 {
    var acc = 0.0;
    for (var i = 0u; i < DIM; i++) {
        acc += state_kk[base + i * DIM + j] * pv[i];
    }
    return acc + lam * pv[j];
}

@compute @workgroup_size(MAX_D)
fn mesa_decode(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let bh = wid.x;
    let hh = bh % p.h;
    let live = lid < DIM;
    let j = min(lid, DIM - 1u);
    let base = bh * DIM * DIM;
    let gamma = exp(g[bh]);
    let bt = beta[bh];
    let kj = f32(k[bh * DIM + j]);
    let vj = f32(v[bh * DIM + j]);
    if (live) {
        for (var i = 0u; i < DIM; i++) {
            let ki = f32(k[bh * DIM + i]);
            state_kk[base + i * DIM + j] = gamma * state_kk[base + i * DIM + j] + bt * ki * kj;
            state_kv[base + i * DIM + j] = gamma * state_kv[base + i * DIM + j] + bt * ki * vj;
        }
    }
    storageBarrier();
    workgroupBarrier();
    let lam = lamb[hh * DIM + j];
    let qj = select(0.0, f32(q[bh * DIM + j]), live);
    var x = qj / (state_kk[base + j * DIM + j] + lam + 1e-5);
    if (live) {
        pv[j] = x;
    }
    workgroupBarrier();
    var r = select(0.0, qj - apply(j, base, lam), live);
    workgroupBarrier();
    if (live) {
        pv[j] = r;
    }
    var delta = dot_all(select(0.0, r * r, live), lid);
    for (var it = 0u; it < p.iters; it++) {
        let a = select(0.0, apply(j, base, lam), live);
        let pj = pv[j];
        let alpha = delta / (dot_all(select(0.0, pj * a, live), lid) + 1e-5);
        x += alpha * pj;
        r -= alpha * a;
        let delta_new = dot_all(select(0.0, r * r, live), lid);
        if (live) {
            pv[j] = r + (delta_new / (delta + 1e-5)) * pj;
        }
        delta = delta_new;
        workgroupBarrier();
    }
    if (live) {
        pv[j] = x;
    }
    workgroupBarrier();
    if (live) {
        var acc = 0.0;
        for (var i = 0u; i < DIM; i++) {
            acc += pv[i] * state_kv[base + i * DIM + j];
        }
        o[bh * DIM + j] = ST(acc);
    }
}
