// gemv_sg: subgroup sums (see common/gemv_body.wgsl).

var<workgroup> scale_sh: array<f32, 16>; // each row of x's 1/rms (flags & 4)

@compute @workgroup_size(WGV)
fn gemv_sg(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(subgroup_invocation_id) lane: u32, @builtin(subgroup_size) sgs: u32,
           @builtin(subgroup_id) sgid: u32, @builtin(num_subgroups) nsg: u32) {
    let base = flat_group(wid, nwg) * ROWS;
    var scale: array<f32, 16>;
    for (var i = 0u; i < MR; i++) {
        scale[i] = 1.0;
    }
    // The rows' norms once per workgroup, a row per subgroup in turn (every subgroup taking
    // every row costs as much as the product itself where subgroups are narrow: 8 on llvmpipe).
    if ((p.flags & 4u) != 0u) {
        for (var i = sgid; i < MR; i += nsg) {
            let s = inv_rms(subgroupAdd(sum_squares(i, lane, sgs)));
            if (lane == 0u) {
                scale_sh[i] = s;
            }
        }
        workgroupBarrier();
        for (var i = 0u; i < MR; i++) {
            scale[i] = scale_sh[i];
        }
    }
    for (var r = sgid; r < ROWS; r += nsg) {
        let n = base + r;
        // The same n on every lane of the subgroup: the reduction below stays within it.
        if (n < p.n) {
            let acc = partial(n, lane, sgs);
            for (var i = 0u; i < MR; i++) {
                let s = subgroupAdd(acc[i]);
                if (lane == 0u) {
                    store_one(s * scale[i], i, n, 0u);
                }
            }
        }
    }
}
