//! Where a decode step of a RAT layer and of an attention layer spends its time: each dispatch of
//! the step timed alone (GPU timestamps where the adapter has them), at the layer shape of
//! BENCHMARKS.md (D = 256 as 4 heads of 64, RAT L = 16 with 2 groups) and a cache position.
//!
//! `cargo run --release --example decode_breakdown -- [position] [batch]` (defaults 4096, 1)

use chunkwise::bench::{print_breakdown, Part};
use chunkwise::ops::attention as attn;
use chunkwise::ops::gemm::{Fused, Linear, Slice};
use chunkwise::ops::rat::{self as rops, Heads};
use chunkwise::ops::rope;
use chunkwise::{Context, DType, Result};

fn main() -> Result<()> {
    let arg = |i: usize, default: usize| -> usize {
        std::env::args()
            .nth(i)
            .map(|s| s.parse().expect("arguments are numbers"))
            .unwrap_or(default)
    };
    let (pos, b) = (arg(1, 4096), arg(2, 1));
    let (d, l) = (256usize, 16usize);
    let heads = Heads::new(d, 4, 2)?;
    let ctx = Context::new_blocking()?;
    let act = |shape: &[usize], scale: f32| {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n)
            .map(|i| ((i * 7919 % 2000) as f32 / 1000.0 - 1.0) * scale)
            .collect();
        ctx.upload(&v, shape, DType::F32)
    };
    let weight = |n: usize| -> Result<Linear> {
        let w: Vec<f32> = (0..n * d).map(|i| (i % 13) as f32 * 0.01 - 0.06).collect();
        Linear::new(&ctx, ctx.upload(&w, &[n, d], DType::F32)?)
    };
    let x = act(&[b, 1, d], 0.5)?;
    let ones = ctx.upload(&vec![1.0; d], &[d], DType::F32)?;
    let p_rat = 3 * d + 2 * heads.dg();
    let (w_rat, w_att, w_out) = (weight(p_rat)?, weight(3 * d)?, weight(d)?);
    let proj_rat = act(&[b, 1, p_rat], 0.5)?;
    let proj_att = act(&[b, 1, 3 * d], 0.5)?;
    let slots = pos / l + 1;
    let (rk, rv) = (act(&[b, 4, slots, 64], 0.5)?, act(&[b, 4, slots, 64], 0.5)?);
    let (ak, av) = (
        act(&[b, 4, pos + 1, 64], 0.5)?,
        act(&[b, 4, pos + 1, 64], 0.5)?,
    );
    let (last_v, last_k) = (act(&[b, 1, d], 0.1)?, act(&[b, 1, d], 0.1)?);
    let rat_table = rope::RopeTable::new(&ctx, 64, slots, 10000.0)?;
    let att_table = rope::RopeTable::new(&ctx, 64, pos + 1, 10000.0)?;
    let c = pos / l;
    let normed = Fused {
        norm: Some((&ones, 1e-6)),
        ..Fused::default()
    };
    let rat: Vec<Part> = vec![
        (
            "norm + projection z|x|g|q|k",
            1,
            Box::new(|rec| w_rat.forward_fused(rec, &x, normed)),
        ),
        (
            "step: gate, scan, rope, cache",
            1,
            Box::new(|rec| {
                rops::step_prep(
                    rec, &proj_rat, &ones, &rat_table, c, false, &last_v, &last_k, &rk, &rv, heads,
                )
            }),
        ),
        (
            "flash-decoding over the chunk cache",
            1,
            Box::new(|rec| attn::decode(rec, &x, &rk, &rv, c + 1, None)),
        ),
        (
            "output projection, gate, residual",
            1,
            Box::new(|rec| {
                let gate = Slice {
                    tensor: &proj_rat,
                    offset: 0,
                    ld: p_rat,
                };
                let fused = Fused {
                    norm: None,
                    residual: Some(&x),
                    gate: Some(gate),
                };
                w_out.forward_fused(rec, &x, fused)
            }),
        ),
    ];
    let att: Vec<Part> = vec![
        (
            "norm + projection v|q|k",
            1,
            Box::new(|rec| w_att.forward_fused(rec, &x, normed)),
        ),
        (
            "rope, cache writes",
            1,
            Box::new(|rec| attn::step_prep(rec, &proj_att, &att_table, pos, &ak, &av, pos)),
        ),
        (
            "flash-decoding over the KV cache",
            1,
            Box::new(|rec| attn::decode(rec, &x, &ak, &av, pos + 1, None)),
        ),
        (
            "output projection, residual",
            1,
            Box::new(|rec| {
                let fused = Fused {
                    residual: Some(&x),
                    ..Fused::default()
                };
                w_out.forward_fused(rec, &x, fused)
            }),
        ),
    ];
    println!(
        "decode step at position {pos}, batch {b}, D = {d}, 4 heads of 64 on {} ({})",
        ctx.adapter_info().name,
        ctx.schedule_summary()
    );
    println!("RAT (L = {l}, 2 groups):");
    print_breakdown(&ctx, 15, &rat);
    println!("attention:");
    print_breakdown(&ctx, 15, &att);
    Ok(())
}
