// Op codes and their maps, shared by the scalar (elementwise.wgsl) and vec4 (elementwise4.wgsl)
// elementwise kernels; the numbers are ops::elementwise's Unary / Binary discriminants.
#include "common/math.wgsl"

const OP_SIGMOID: u32 = 0u;
const OP_SILU: u32 = 1u;
const OP_GELU: u32 = 2u;
const OP_LOGSIGMOID: u32 = 3u;
const OP_SOFTPLUS: u32 = 4u;
const OP_MUL: u32 = 16u;
const OP_ADD: u32 = 17u;
const OP_SIGMOID_MUL: u32 = 18u; // sigmoid(a) · b: an output gate in one pass

struct Params {
    n: u32,
    nb: u32,
    op: u32,
    _pad: u32,
}

fn apply_unary(op: u32, v: f32) -> f32 {
    switch op {
        case OP_SIGMOID: { return sigmoid(v); }
        case OP_SILU: { return silu(v); }
        case OP_GELU: { return gelu(v); }
        case OP_LOGSIGMOID: { return logsigmoid(v); }
        case OP_SOFTPLUS: { return softplus(v); }
        default: { return v; }
    }
}

fn apply_binary(op: u32, u: f32, v: f32) -> f32 {
    switch op {
        case OP_MUL: { return u * v; }
        case OP_SIGMOID_MUL: { return sigmoid(u) * v; }
        default: { return u + v; }
    }
}
