//! Where a RAT layer's forward spends its time: each kernel family of the layer timed alone (GPU
//! timestamps where the adapter has them), in the order the layer runs them, at the layer shape of
//! BENCHMARKS.md (D = 256 as 4 heads of 64, 2 groups, L = 16).
//!
//! `cargo run --release --example rat_breakdown -- [T]` (T defaults to 16384)

use chunkwise::bench::{print_breakdown, Part};
use chunkwise::ops::gemm::Linear;
use chunkwise::ops::rat::{self as rops, Heads};
use chunkwise::ops::{elementwise as ew, norm, rope};
use chunkwise::{Context, DType, Result};

fn main() -> Result<()> {
    let t: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse().expect("T must be a number"))
        .unwrap_or(16384);
    let (d, l) = (256usize, 16usize);
    let ctx = Context::new_blocking()?;
    let heads = Heads::new(d, 4, 2)?;
    let act = |cols: usize| {
        let v: Vec<f32> = (0..t * cols)
            .map(|i| ((i * 7919 % 2000) as f32 / 1000.0 - 1.0) * 0.5)
            .collect();
        ctx.upload(&v, &[1, t, cols], DType::F32)
    };
    let (x, v, g, k, q) = (
        act(d)?,
        act(d)?,
        act(d)?,
        act(heads.dg())?,
        act(heads.dg())?,
    );
    let ones = ctx.upload(&vec![1.0; d], &[d], DType::F32)?;
    let weight = |n: usize| -> Result<Linear> {
        let w: Vec<f32> = (0..n * d).map(|i| (i % 13) as f32 * 0.01 - 0.06).collect();
        Linear::new(&ctx, ctx.upload(&w, &[n, d], DType::F32)?)
    };
    let (w_full, w_group) = (weight(d)?, weight(heads.dg())?);
    let table = rope::RopeTable::new(&ctx, heads.dh, t.div_ceil(l), 10000.0)?;
    let pos = table.positions(&ctx, &(0..t).map(|i| i / l).collect::<Vec<_>>())?;

    let parts: Vec<Part> = vec![
        (
            "rmsnorm",
            1,
            Box::new(|rec| norm::rmsnorm(rec, &x, &ones, 1e-6)),
        ),
        (
            "projections D→D (z, v, g, out)",
            4,
            Box::new(|rec| w_full.forward(rec, &x)),
        ),
        (
            "projections D→G·dh (q, k)",
            2,
            Box::new(|rec| w_group.forward(rec, &x)),
        ),
        (
            "gated scan",
            1,
            Box::new(|rec| Ok(rops::scan(rec, &v, &g, &ones, &k, heads, l)?.0)),
        ),
        (
            "rope (q and keys)",
            2,
            Box::new(|rec| rope::rope(rec, &x, &table, &pos)),
        ),
        (
            "inter-chunk attention",
            1,
            Box::new(|rec| rops::inter_chunk_attention(rec, &q, &v, &g, heads, l, None)),
        ),
        (
            "sigmoid gate",
            1,
            Box::new(|rec| ew::sigmoid_mul(rec, &v, &g)),
        ),
        ("residual add", 1, Box::new(|rec| ew::add(rec, &x, &v))),
    ];
    println!(
        "RAT layer parts at T = {t}, D = {d}, 4 heads, 2 groups, L = {l} on {}",
        ctx.adapter_info().name
    );
    print_breakdown(&ctx, 3, &parts);
    Ok(())
}
