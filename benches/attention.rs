//! Attention kernels: causal and sliding-window forward (the adapter's schedule, and each GPU
//! forward kernel forced), and flash-decoding, GPU time per call.
//! `cargo bench --bench attention`

use std::time::Duration;

use chunkwise::bench::gpu_time;
use chunkwise::ops::attention as attn;
use chunkwise::{Context, DType};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};

fn bench(c: &mut Criterion) {
    let ctx = Context::new_blocking().expect("benchmarks need a wgpu adapter");
    // The GPU kernels (attention_fa2) on any adapter, next to the adapter's own schedule.
    let gpu = Context::new_blocking().expect("benchmarks need a wgpu adapter");
    gpu.set_schedule(chunkwise::Schedule::Gpu);
    let (d, heads) = (256usize, 4usize);
    let mut g = c.benchmark_group("attention");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(3));
    for t in [256usize, 1024] {
        let x = ctx
            .upload(&vec![0.01; t * d], &[1, t, d], DType::F32)
            .unwrap();
        for window in [None, Some(128)] {
            let id = BenchmarkId::new(format!("forward_w{window:?}"), t);
            g.bench_function(id, |b| {
                b.iter_custom(|n| {
                    gpu_time(&ctx, n, &|rec| {
                        attn::attention(rec, &x, &x, &x, heads, window, None)
                    })
                })
            });
        }
        if !ctx.cpu_schedules() {
            continue;
        }
        let xg = gpu
            .upload(&vec![0.01; t * d], &[1, t, d], DType::F32)
            .unwrap();
        g.bench_function(BenchmarkId::new("forward_gpu_kernels", t), |b| {
            b.iter_custom(|n| {
                gpu_time(&gpu, n, &|rec| {
                    attn::attention(rec, &xg, &xg, &xg, heads, None, None)
                })
            })
        });
    }
    // Every GPU forward kernel the adapter can run, forced (what `chunkwise tune` chooses among;
    // the tensor-core ones only where the device has cooperative matrices).
    let t = 1024;
    let x = ctx
        .upload(&vec![0.01; t * d], &[1, t, d], DType::F32)
        .unwrap();
    for v in attn::FwdVariant::all() {
        if v.usable(&ctx, DType::F32, d / heads).is_err() {
            continue;
        }
        g.bench_function(BenchmarkId::new(format!("forward_{}", v.name()), t), |b| {
            b.iter_custom(|n| {
                gpu_time(&ctx, n, &|rec| {
                    attn::attention_with(rec, &x, &x, &x, heads, None, None, Some(v))
                })
            })
        });
    }
    for batch in [1usize, 16] {
        let len = 4097;
        let kc = ctx
            .upload(
                &vec![0.01; batch * d * len],
                &[batch, heads, len, d / heads],
                DType::F32,
            )
            .unwrap();
        let q = ctx
            .upload(&vec![0.1; batch * d], &[batch, 1, d], DType::F32)
            .unwrap();
        g.bench_function(BenchmarkId::new("decode_pos4096", batch), |b| {
            b.iter_custom(|n| gpu_time(&ctx, n, &|rec| attn::decode(rec, &q, &kc, &kc, len, None)))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
