// gemv_wg: workgroup-memory sums, for devices without subgroups (see common/gemv_body.wgsl).

var<workgroup> red: array<f32, 1024>; // [16][WGV] partial sums (gemv_wg)

// Rows of W per pass: all of the workgroup's where the RB·MR sums fit 16.
override RB: u32 = min(ROWS, 16u / MR);

// red[u · WGV] ← Σ over the workgroup of red[u · WGV + lane], for u < n (every sum of a pass:
// RB·MR, or MR for the norms).
fn tree_sum(lid: u32, n: u32) {
    for (var s = WGV / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            for (var u = 0u; u < n; u++) {
                red[u * WGV + lid] += red[u * WGV + lid + s];
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
        tree_sum(lid, MR);
        for (var i = 0u; i < MR; i++) {
            scale[i] = inv_rms(red[i * WGV]);
        }
        workgroupBarrier();
    }
    // RB rows per pass: one tree for all their sums (7 barriers per pass, not per row).
    for (var r0 = 0u; r0 < ROWS; r0 += RB) {
        let n0 = base + r0;
        if (n0 >= p.n) {
            break;
        }
        let nr = min(min(RB, ROWS - r0), p.n - n0);
        let sums = partial_rows(n0, nr, lid, WGV, false);
        for (var u = 0u; u < RB * MR; u++) {
            red[u * WGV + lid] = sums.acc[u];
        }
        workgroupBarrier();
        tree_sum(lid, RB * MR);
        if (lid < nr * MR) {
            let i = lid % MR;
            store_one(red[lid * WGV] * scale[i], i, n0 + lid / MR, 0u);
        }
        workgroupBarrier();
    }
}
