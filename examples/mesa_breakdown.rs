//! Where a Mesa layer's forward spends its time: each kernel family of the layer timed alone (GPU
//! timestamps where the adapter has them), in the order the layer runs them, at the layer shape of
//! BENCHMARKS.md (D = 256 as 4 heads of 64, chunk 16, 30 CG steps unless given).
//!
//! `cargo run --release --example mesa_breakdown -- [T] [CG steps]` (defaults 16384, 30)

use chunkwise::bench::{print_breakdown, Part};
use chunkwise::ops::gemm::Linear;
use chunkwise::ops::mesa::{self as mops, MesaState, Solver};
use chunkwise::{Context, DType, Result};

fn main() -> Result<()> {
    let arg = |i: usize, default: usize| -> usize {
        std::env::args()
            .nth(i)
            .map(|s| s.parse().expect("arguments are numbers"))
            .unwrap_or(default)
    };
    let (t, iters) = (arg(1, 16384), arg(2, 30));
    let (d, h, dh) = (256usize, 4usize, 64usize);
    let ctx = Context::new_blocking()?;
    let act = |shape: &[usize], scale: f32| {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n)
            .map(|i| ((i * 7919 % 2000) as f32 / 1000.0 - 1.0) * scale)
            .collect();
        ctx.upload(&v, shape, DType::F32)
    };
    let x = act(&[1, t, d], 0.5)?;
    // The layer's fused input projection [q | k | v | g | a | b] (W = 4·D + 2·H), gated.
    let width = 4 * d + 2 * h;
    let layout = mops::StepLayout {
        heads: h,
        head_dim: dh,
        a_col: 4 * d,
        g_col: Some(3 * d),
    };
    let weight = |n: usize, k: usize| -> Result<Linear> {
        let w: Vec<f32> = (0..n * k).map(|i| (i % 13) as f32 * 0.01 - 0.06).collect();
        Linear::new(&ctx, ctx.upload(&w, &[n, k], DType::F32)?)
    };
    let (w_in, w_out) = (weight(width, d)?, weight(d, d)?);
    let proj = ctx.run(|rec| w_in.forward(rec, &x))?;
    let conv_w = act(&[d, 1, 4], 0.5)?;
    let conv = ctx.upload(&vec![0.0; 2 * d * 4], &[1, 2 * d, 4], DType::F32)?;
    let lamb = ctx.upload(&vec![0.25; h * dh], &[h, dh], DType::F32)?;
    let bias = ctx.upload(&vec![0.0; 2 * h], &[2 * h], DType::F32)?;
    let ones = ctx.upload(&vec![1.0; dh], &[dh], DType::F32)?;
    let gates = ctx.run(|rec| mops::step_gates(rec, t, &lamb, &bias))?;
    let conv_w2 = [&conv_w, &conv_w];
    // The core op's inputs as the layer hands them over: unit-norm q and k, gates in range.
    let [q, k, v] = ctx.run(|rec| mops::seq_prep(rec, &proj, layout, conv_w2, &conv, &gates))?;
    let heads_x = x.reshape(&[1, t, h, dh])?;

    let parts: Vec<Part> = vec![
        (
            "input projection (q, k, v, g, a, b in one)",
            1,
            Box::new(|rec| w_in.forward(rec, &x)),
        ),
        (
            "conv + SiLU + L2 norms + gates",
            1,
            Box::new(|rec| {
                mops::seq_prep(rec, &proj, layout, conv_w2, &conv, &gates).map(|[q, ..]| q)
            }),
        ),
        (
            "conv cache",
            1,
            Box::new(|rec| {
                mops::conv_advance(rec, &proj, layout, &conv)?;
                Ok(conv.clone())
            }),
        ),
        (
            "core: states + CG + read-out",
            1,
            Box::new(|rec| {
                let state = MesaState::zeros_in(rec, 1, h, dh)?;
                mops::core_prepared(rec, [&q, &k, &v], &gates, &state, iters, Solver::Reference)
                    .map(|s| s.o)
            }),
        ),
        (
            "output norm × silu(g)",
            1,
            Box::new(|rec| mops::step_out(rec, &heads_x, &ones, 1e-6, &proj, layout)),
        ),
        (
            "output projection",
            1,
            Box::new(|rec| w_out.forward(rec, &x)),
        ),
    ];
    println!(
        "Mesa layer parts at T = {t}, D = {d}, {h} heads of {dh}, {iters} CG steps on {}",
        ctx.adapter_info().name
    );
    print_breakdown(&ctx, 3, &parts);
    Ok(())
}
