// gemv_wg: workgroup-memory sums, for devices without subgroups (see common/gemv_body.wgsl).

var<workgroup> red: array<f32, 1024>; // [16][WGV] partial sums (gemv_wg)

// red[i · WGV] ← Σ over the workgroup of red[i · WGV + lane], for every row i of x.
fn tree_sum(lid: u32) {
    for (var s = WGV / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            for (var i = 0u; i < MR; i++) {
                red[i * WGV + lid] += red[i * WGV + lid + s];
            }
        }
        workgroupBarrier();
    }
}

@compute @workgroup_size(WGV)
fn gemv_wg(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
    let base = flat_group(wid, nwg) * ROWS;
    var scale: array<f32, 16>;
    for (var i = 0u; i < MR; i++) {
        scale[i] = 1.0;
    }
    // The rows' norms only where asked (p is uniform, so is the branch and its barriers).
    if ((p.flags & 4u) != 0u) {
        for (var i = 0u; i < MR; i++) {
            red[i * WGV + lid] = sum_squares(i, lid, WGV);
        }
        workgroupBarrier();
        tree_sum(lid);
        for (var i = 0u; i < MR; i++) {
            scale[i] = inv_rms(red[i * WGV]);
        }
        workgroupBarrier();
    }
    for (var r = 0u; r < ROWS; r++) {
        let n = base + r;
        if (n >= p.n) {
            break;
        }
        let acc = partial(n, lid, WGV);
        for (var i = 0u; i < MR; i++) {
            red[i * WGV + lid] = acc[i];
        }
        workgroupBarrier();
        tree_sum(lid);
        if (lid < MR) {
            store_one(red[lid * WGV] * scale[lid], lid, n, 0u);
        }
        workgroupBarrier();
    }
}
