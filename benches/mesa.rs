//! Mesa core op at T = 1024, 4 heads of 64: the chunkwise CG forward (30 and 10 iterations, and
//! each GPU CG plan forced), one decode step, the layer step's prep and output kernels, and the
//! parallel path's (prep, conv cache, output over the 1024 tokens), GPU time per call.
//! `cargo bench --bench mesa`

use std::time::Duration;

use chunkwise::bench::gpu_time;
use chunkwise::ops::mesa::{self as mops, MesaState};
use chunkwise::{Context, DType};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};

fn bench(c: &mut Criterion) {
    let ctx = Context::new_blocking().expect("benchmarks need a wgpu adapter");
    let (b, t, h, d) = (1usize, 1024usize, 4usize, 64usize);
    let fill = |n: usize, s: usize| -> Vec<f32> {
        (0..n)
            .map(|i| (((i + s) * 7919 % 2000) as f32 / 1000.0 - 1.0) * 0.125)
            .collect()
    };
    let up = |x: Vec<f32>, sh: &[usize]| ctx.upload(&x, sh, DType::F32).unwrap();
    let sh = [b, t, h, d];
    let (q, k, v) = (
        up(fill(b * t * h * d, 1), &sh),
        up(fill(b * t * h * d, 2), &sh),
        up(fill(b * t * h * d, 3), &sh),
    );
    let (g, beta) = (
        up(vec![-0.1; b * t * h], &[b, t, h]),
        up(vec![0.5; b * t * h], &[b, t, h]),
    );
    let lamb = up(vec![1.0; h * d], &[h, d]);
    let state = MesaState::zeros(&ctx, b, h, d).unwrap();
    let mut grp = c.benchmark_group("mesa_t1024_h4_d64");
    grp.sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(5));
    let inputs = mops::MesaInputs {
        q: &q,
        k: &k,
        v: &v,
        g: &g,
        beta: &beta,
        lamb: &lamb,
    };
    for iters in [30usize, 10] {
        grp.bench_function(BenchmarkId::new("core_forward_cg", iters), |bn| {
            bn.iter_custom(|n| gpu_time(&ctx, n, &|rec| mops::core(rec, &inputs, &state, iters)))
        });
    }
    // Each GPU CG plan the device holds, forced (what `chunkwise tune` chooses among).
    for plan in mops::cg_plans(d) {
        let run = |rec: &mut chunkwise::Recording| {
            mops::core_with_plan(rec, &inputs, &state, 30, mops::Solver::Reference, plan)
                .map(|s| s.o)
        };
        if ctx.run(run).is_err() {
            continue; // more workgroup memory than this device has
        }
        let id = BenchmarkId::new("core_forward_cg30_plan", mops::plan_name(plan));
        grp.bench_function(id, |bn| bn.iter_custom(|n| gpu_time(&ctx, n, &run)));
    }
    let s1 = [b, 1, h, d];
    let (q1, k1, v1) = (
        up(fill(h * d, 4), &s1),
        up(fill(h * d, 5), &s1),
        up(fill(h * d, 6), &s1),
    );
    let (g1, b1) = (up(vec![-0.1; h], &[b, 1, h]), up(vec![0.5; h], &[b, 1, h]));
    grp.bench_function("decode_step_cg30", |bn| {
        bn.iter_custom(|n| {
            gpu_time(&ctx, n, &|rec| {
                mops::decode_step(
                    rec,
                    &mops::MesaInputs {
                        q: &q1,
                        k: &k1,
                        v: &v1,
                        g: &g1,
                        beta: &b1,
                        lamb: &lamb,
                    },
                    &state,
                    30,
                )
            })
        })
    });
    // The layer step's kernels around the solve (shaders/mesa_step.wgsl), batch 1: the projection
    // row [q | k | v | g | a | b] of the layer above.
    let hd = h * d;
    let layout = mops::StepLayout {
        heads: h,
        head_dim: d,
        a_col: 4 * hd,
        g_col: Some(3 * hd),
    };
    let proj = up(fill(4 * hd + 2 * h, 7), &[1, 1, 4 * hd + 2 * h]);
    let conv_w = up(fill(hd * 4, 8), &[hd, 1, 4]);
    let conv = up(vec![0.0; 2 * hd * 4], &[1, 2 * hd, 4]);
    let o_norm = up(vec![1.0; d], &[d]);
    let bias = up(vec![0.0; 2 * h], &[2 * h]);
    let gates = ctx
        .run(|rec| mops::step_gates(rec, 1, &lamb, &bias))
        .unwrap();
    grp.bench_function("step_prep", |bn| {
        bn.iter_custom(|n| {
            gpu_time(&ctx, n, &|rec| {
                mops::step_prep(rec, &proj, layout, [&conv_w, &conv_w], &conv, &gates)
                    .map(|[q, ..]| q)
            })
        })
    });
    grp.bench_function("step_out", |bn| {
        bn.iter_custom(|n| {
            gpu_time(&ctx, n, &|rec| {
                mops::step_out(rec, &q1, &o_norm, 1e-5, &proj, layout)
            })
        })
    });
    // The same kernels over the T tokens of a prompt (the parallel path).
    let proj_t = up(fill(t * (4 * hd + 2 * h), 9), &[1, t, 4 * hd + 2 * h]);
    let gates_t = ctx
        .run(|rec| mops::step_gates(rec, t, &lamb, &bias))
        .unwrap();
    grp.bench_function("seq_prep", |bn| {
        bn.iter_custom(|n| {
            gpu_time(&ctx, n, &|rec| {
                mops::seq_prep(rec, &proj_t, layout, [&conv_w, &conv_w], &conv, &gates_t)
                    .map(|[q, ..]| q)
            })
        })
    });
    grp.bench_function("conv_advance", |bn| {
        bn.iter_custom(|n| {
            gpu_time(&ctx, n, &|rec| {
                mops::conv_advance(rec, &proj_t, layout, &conv)?;
                Ok(conv.clone())
            })
        })
    });
    grp.bench_function("seq_out", |bn| {
        bn.iter_custom(|n| {
            gpu_time(&ctx, n, &|rec| {
                mops::step_out(rec, &q, &o_norm, 1e-5, &proj_t, layout)
            })
        })
    });
    grp.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
