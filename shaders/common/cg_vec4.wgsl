// One invocation's conjugate gradient over D-vectors held as DIM4 vec4s in private memory, for
// the kernels that give each lane a whole solve (mesa_cg_sg: a position of a chunk;
// mesa_decode_lanes: a batch·head pair). The including file declares the override DIM4 (≤ 16)
// and sets cg_a = A cg_p before each step. The reference CG: x0 given, 1e-5 in both denominators,
// a fixed number of iterations.

var<private> cg_x: array<vec4<f32>, 16>;
var<private> cg_r: array<vec4<f32>, 16>;
var<private> cg_p: array<vec4<f32>, 16>;
var<private> cg_a: array<vec4<f32>, 16>;

// One CG step once cg_a = A cg_p: updates x, r and p, and returns the new r·r (δ).
fn cg_step(delta: f32) -> f32 {
    var pa = 0.0;
    for (var i = 0u; i < DIM4; i++) {
        pa += dot(cg_p[i], cg_a[i]);
    }
    let alpha = delta / (pa + 1e-5);
    var rn = 0.0;
    for (var i = 0u; i < DIM4; i++) {
        cg_x[i] += alpha * cg_p[i];
        cg_r[i] -= alpha * cg_a[i];
        rn += dot(cg_r[i], cg_r[i]);
    }
    let conj = rn / (delta + 1e-5);
    for (var i = 0u; i < DIM4; i++) {
        cg_p[i] = cg_r[i] + conj * cg_p[i];
    }
    return rn;
}
