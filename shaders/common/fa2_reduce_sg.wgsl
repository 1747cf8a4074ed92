// Sums of a query's four partial scores by two butterfly shuffles (common/fa2_core.wgsl). A
// query's four lanes are four consecutive lanes of one subgroup, numbered from the subgroup
// builtins (`fa2_lane`), not the workgroup index, so this holds whatever the driver's lane order;
// subgroups of 4 lanes or more.
fn reduce_one(lid: u32, x: f32) -> f32 {
    var s = x;
    s += subgroupShuffleXor(s, 1u);
    s += subgroupShuffleXor(s, 2u);
    return s;
}

fn reduce_scores(lid: u32) {
    for (var j = 0u; j < KT; j++) {
        sc[j] = reduce_one(lid, sc[j]);
    }
}
