//! Where a Mesa layer's forward spends its time: each kernel family of the layer timed alone (GPU
//! timestamps where the adapter has them), in the order the layer runs them, at the layer shape of
//! BENCHMARKS.md (D = 256 as 4 heads of 64, chunk 16, 30 CG steps unless given).
//!
//! `cargo run --release --example mesa_breakdown -- [T] [CG steps]` (defaults 16384, 30)

use chunkwise::bench::{print_breakdown, Part};
use chunkwise::ops::gemm::Linear;
use chunkwise::ops::mesa::{self as mops, MesaInputs, MesaState};
use chunkwise::ops::{elementwise as ew, norm};
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
    let gates = act(&[1, t, h], 0.5)?;
    let conv_w = act(&[d, 1, 4], 0.5)?;
    let bias = act(&[h], 0.1)?;
    let ones = ctx.upload(&vec![1.0; dh], &[dh], DType::F32)?;
    let weight = |n: usize| -> Result<Linear> {
        let w: Vec<f32> = (0..n * d).map(|i| (i % 13) as f32 * 0.01 - 0.06).collect();
        Linear::new(&ctx, ctx.upload(&w, &[n, d], DType::F32)?)
    };
    let (w_full, w_heads) = (weight(d)?, weight(h)?);
    // The core op's inputs as the layer hands them over: unit-norm q and k, gates in range.
    let unit = ctx.run(|rec| mops::l2norm(rec, &x, dh, 1e-6))?;
    let unit = unit.reshape(&[1, t, h, dh])?;
    let g = ctx.run(|rec| ew::logsigmoid(rec, &gates))?;
    let beta = ctx.run(|rec| ew::sigmoid(rec, &gates))?;
    let lamb = ctx.upload(&vec![0.25; h * dh], &[h, dh], DType::F32)?;
    let heads_x = x.reshape(&[1, t, h, dh])?;

    let parts: Vec<Part> = vec![
        (
            "projections D→D (q, k, v, gate, out)",
            5,
            Box::new(|rec| w_full.forward(rec, &x)),
        ),
        (
            "projections D→H (a, b)",
            2,
            Box::new(|rec| w_heads.forward(rec, &x)),
        ),
        (
            "gate bias + (log)sigmoid",
            2,
            Box::new(|rec| {
                let a = ew::add(rec, &gates, &bias)?;
                ew::sigmoid(rec, &a)
            }),
        ),
        (
            "short conv (q, k)",
            2,
            Box::new(|rec| mops::short_conv(rec, &x, &conv_w)),
        ),
        (
            "l2 norm (q, k)",
            2,
            Box::new(|rec| mops::l2norm(rec, &x, dh, 1e-6)),
        ),
        (
            "core: states + CG + read-out",
            1,
            Box::new(|rec| {
                let state = MesaState::zeros_in(rec, 1, h, dh)?;
                let inp = MesaInputs {
                    q: &unit,
                    k: &unit,
                    v: &heads_x,
                    g: &g,
                    beta: &beta,
                    lamb: &lamb,
                };
                mops::core(rec, &inp, &state, iters)
            }),
        ),
        (
            "rmsnorm per head",
            1,
            Box::new(|rec| norm::rmsnorm(rec, &heads_x, &ones, 1e-6)),
        ),
        (
            "silu gate + mul",
            1,
            Box::new(|rec| {
                let s = ew::silu(rec, &x)?;
                ew::mul(rec, &x, &s)
            }),
        ),
    ];
    println!(
        "Mesa layer parts at T = {t}, D = {d}, {h} heads of {dh}, {iters} CG steps on {}",
        ctx.adapter_info().name
    );
    print_breakdown(&ctx, 3, &parts);
    Ok(())
}
