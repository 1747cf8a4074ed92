// One invocation's conjugate gradient over D-vectors held as DIM4 vec4s in private memory, for
// the kernels that give each lane a whole solve (mesa_cg_sg: a position of a chunk;
// mesa_decode_lanes: a batch·head pair). The including file declares the override DIM4 (≤ 16),
// includes common/cg_rule.wgsl, and sets cg_a = A cg_p before each step.

var<private> cg_x: array<vec4<f32>, 16>;
var<private> cg_r: array<vec4<f32>, 16>;
var<private> cg_p: array<vec4<f32>, 16>;
var<private> cg_a: array<vec4<f32>, 16>;

fn cg_dot(u: ptr<private, array<vec4<f32>, 16>>, w: ptr<private, array<vec4<f32>, 16>>) -> f32 {
    var s = 0.0;
    for (var i = 0u; i < DIM4; i++) {
        s += dot((*u)[i], (*w)[i]);
    }
    return s;
}

// One CG step with α (common/cg_rule.wgsl: cg_alpha), once cg_a = A cg_p: updates x, r and p
// and returns the new r·r (δ). α = 0 (a row that has stopped) leaves everything as it is.
fn cg_step(delta: f32, alpha: f32) -> f32 {
    if (alpha == 0.0) {
        return delta;
    }
    var rn = 0.0;
    for (var i = 0u; i < DIM4; i++) {
        cg_x[i] += alpha * cg_p[i];
        cg_r[i] -= alpha * cg_a[i];
        rn += dot(cg_r[i], cg_r[i]);
    }
    let conj = rn / (delta + cg_guard());
    for (var i = 0u; i < DIM4; i++) {
        cg_p[i] = cg_r[i] + conj * cg_p[i];
    }
    return rn;
}

// After cg_a = A x0 for the start x0 in cg_x (q in cg_r): r = q − A x0, p = r; returns δ0.
fn cg_start_residual() -> f32 {
    for (var j = 0u; j < DIM4; j++) {
        cg_r[j] -= cg_a[j];
        cg_p[j] = cg_r[j];
    }
    return cg_dot(&cg_r, &cg_r);
}
