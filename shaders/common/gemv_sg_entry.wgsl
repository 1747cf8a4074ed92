// gemv_sg: subgroup sums (see common/gemv_body.wgsl).

// Rows of W per pass: the four a subgroup takes (ops::gemm sizes ROWS so), fewer where MR rows of
// x would need more than 16 sums.
override RB: u32 = min(4u, 16u / MR);

@compute @workgroup_size(WGV)
fn gemv_sg(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(subgroup_invocation_id) lane: u32, @builtin(subgroup_size) sgs: u32,
           @builtin(subgroup_id) sgid: u32, @builtin(num_subgroups) nsg: u32) {
    let base = flat_group(wid, nwg) * ROWS;
    // The subgroup's block of the workgroup's rows, RB per pass.
    let per = (ROWS + nsg - 1u) / nsg;
    let r_end = min(sgid * per + per, ROWS);
    let normed = (p.flags & 4u) != 0u;
    for (var r0 = sgid * per; r0 < r_end; r0 += RB) {
        let n0 = base + r0;
        // The same n0 on every lane of the subgroup: the reductions below stay within it.
        if (n0 >= p.n) {
            break;
        }
        let nr = min(min(RB, r_end - r0), p.n - n0);
        // A folded norm's Σx² from the pass's own loads of x: no pass over x of its own.
        let sums = partial_rows(n0, nr, lane, sgs, normed);
        var scale: array<f32, 16>;
        for (var i = 0u; i < MR; i++) {
            scale[i] = 1.0;
            if (normed) {
                scale[i] = inv_rms(subgroupAdd(sums.ss[i]));
            }
        }
        for (var j = 0u; j < RB; j++) {
            if (j < nr) {
                for (var i = 0u; i < MR; i++) {
                    let s = subgroupAdd(sums.acc[j * MR + i]);
                    if (lane == 0u) {
                        store_one(s * scale[i], i, n0 + j, 0u);
                    }
                }
            }
        }
    }
}
