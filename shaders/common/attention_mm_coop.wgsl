// The two products of common/attention_mm_body.wgsl on cooperative matrices (tensor cores):
// each subgroup takes CM × CM blocks of the product in turn, A row-major (Q, P) and B as Kᵀ
// (column-major: K's rows) or V (row-major), all from workgroup memory, C in f32 stored row-major
// to workgroup memory. Every subgroup runs the same number of rounds (control flow uniform across
// the workgroup); a block past the product loads block 0 and stores into the spare block.
//
// The including file defines CM and the matrix types MA, MB, MC.

fn mm_scores(lid: u32, sgid: u32, nsg: u32) {
    let per_row = KT / CM;
    let blocks = (BQ / CM) * per_row;
    let rounds = (blocks + nsg - 1u) / nsg;
    for (var round = 0u; round < rounds; round++) {
        let blk = sgid + round * nsg;
        let inside = blk < blocks;
        let bm = select(0u, (blk / per_row) * CM, inside);
        let bn = select(0u, (blk % per_row) * CM, inside);
        var c = MC();
        for (var d0 = 0u; d0 < DH; d0 += CM) {
            let a = coopLoadT<MA>(&qs[bm * DH + d0], DH);
            let kt = coopLoad<MB>(&kv[bn * DH + d0], DH);
            c = coopMultiplyAdd(a, kt, c);
        }
        coopStoreT(c, &st[select(BQ * KT, bm * KT + bn, inside)], KT);
    }
}

fn mm_pv(lid: u32, sgid: u32, nsg: u32) {
    let per_row = DH / CM;
    let blocks = (BQ / CM) * per_row;
    let rounds = (blocks + nsg - 1u) / nsg;
    for (var round = 0u; round < rounds; round++) {
        let blk = sgid + round * nsg;
        let inside = blk < blocks;
        let bm = select(0u, (blk / per_row) * CM, inside);
        let bn = select(0u, (blk % per_row) * CM, inside);
        var c = MC();
        for (var j0 = 0u; j0 < KT; j0 += CM) {
            let a = coopLoadT<MA>(&ps[bm * KT + j0], KT);
            let vb = coopLoadT<MB>(&kv[j0 * DH + bn], DH);
            c = coopMultiplyAdd(a, vb, c);
        }
        coopStoreT(c, &ot[select(BQ * DH, bm * DH + bn, inside)], DH);
    }
}
