// Large 1-D problems are dispatched as a 2-D grid of workgroups (each dimension is capped at
// max_compute_workgroups_per_dimension, 65535 on most adapters); this flattens the group id back.
fn flat_group(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.y * nwg.x + wid.x;
}
