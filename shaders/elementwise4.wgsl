// elementwise.wgsl on vec4s: n and nb count vec4s. The launch wrapper takes it when both sizes
// are multiples of 4: a storage load or store on CPU drivers is a loop over the SIMD lanes, so
// one vec4 access instead of four scalar ones is most of the cost of these memory-bound maps.
#include "common/grid.wgsl"
#include "common/elementwise_ops.wgsl"

override WG: u32 = 256u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<vec4<ST>>;
@group(0) @binding(2) var<storage, read> b: array<vec4<ST>>; // binary only
@group(0) @binding(3) var<storage, read_write> y: array<vec4<ST>>;

@compute @workgroup_size(WG)
fn unary4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let i = flat_group(wid, nwg) * WG + lid;
    if (i < p.n) {
        let u = vec4<f32>(a[i]);
        y[i] = vec4<ST>(vec4<f32>(apply_unary(p.op, u.x), apply_unary(p.op, u.y),
                                  apply_unary(p.op, u.z), apply_unary(p.op, u.w)));
    }
}

@compute @workgroup_size(WG)
fn glu4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = flat_group(wid, nwg) * WG + lid;
    if (i < p.n) {
        let g = i / p.nb * 2u * p.nb + i % p.nb;
        let u = vec4<f32>(a[g]);
        y[i] = vec4<ST>(vec4<f32>(apply_unary(p.op, u.x), apply_unary(p.op, u.y),
                                  apply_unary(p.op, u.z), apply_unary(p.op, u.w))
                        * vec4<f32>(a[g + p.nb]));
    }
}

@compute @workgroup_size(WG)
fn binary4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
    let i = flat_group(wid, nwg) * WG + lid;
    if (i < p.n) {
        let u = vec4<f32>(a[i]);
        let v = vec4<f32>(b[i % p.nb]);
        y[i] = vec4<ST>(vec4<f32>(apply_binary(p.op, u.x, v.x), apply_binary(p.op, u.y, v.y),
                                  apply_binary(p.op, u.z, v.z), apply_binary(p.op, u.w, v.w)));
    }
}
