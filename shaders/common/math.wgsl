// Scalar activation functions, in f32. Written to be stable for large |x| (no overflow to inf/inf).

fn sigmoid(x: f32) -> f32 {
    // Branch on the sign so exp never overflows.
    if (x >= 0.0) {
        return 1.0 / (1.0 + exp(-x));
    }
    let e = exp(x);
    return e / (1.0 + e);
}

fn softplus(x: f32) -> f32 {
    // log(1 + e^x) = max(x, 0) + log(1 + e^-|x|)
    return max(x, 0.0) + log(1.0 + exp(-abs(x)));
}

fn logsigmoid(x: f32) -> f32 {
    return -softplus(-x);
}

fn silu(x: f32) -> f32 {
    return x * sigmoid(x);
}

// erf(x) to about 1.2e-7 relative error (Numerical Recipes' erfc Chebyshev fit): WGSL has no erf.
fn erf_f32(x: f32) -> f32 {
    let z = abs(x);
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 +
        t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 +
        t * (-0.82215223 + t * 0.17087277))))))));
    let r = 1.0 - t * exp(poly);
    return select(-r, r, x >= 0.0);
}

// GELU, exact erf form (torch's default `approximate='none'`).
fn gelu(x: f32) -> f32 {
    return 0.5 * x * (1.0 + erf_f32(x * 0.7071067811865476));
}
