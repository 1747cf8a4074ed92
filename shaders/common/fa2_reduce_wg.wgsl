// Sums of a query's four partial scores through workgroup memory (no subgroups), four keys per
// round (common/fa2_core.wgsl). Lanes 4q … 4q + 3 work query q.
var<workgroup> red: array<vec4<f32>, 256>; // [lane]: partial scores of 4 keys

fn reduce4(lid: u32, v: vec4<f32>) -> vec4<f32> {
    let q0 = (lid / LP) * LP;
    red[lid] = v;
    workgroupBarrier();
    let s = red[q0] + red[q0 + 1u] + red[q0 + 2u] + red[q0 + 3u];
    workgroupBarrier();
    return s;
}

fn reduce_scores(lid: u32) {
    for (var j = 0u; j < KT; j += 4u) {
        let s = reduce4(lid, vec4<f32>(sc[j], sc[j + 1u], sc[j + 2u], sc[j + 3u]));
        sc[j] = s.x;
        sc[j + 1u] = s.y;
        sc[j + 2u] = s.z;
        sc[j + 3u] = s.w;
    }
}

fn reduce_one(lid: u32, x: f32) -> f32 {
    return reduce4(lid, vec4<f32>(x, 0.0, 0.0, 0.0)).x;
}
