//! RAT kernels at T = 4096, D = 256 (4 heads of 64, 2 groups, L = 16): the fused gate + scan and
//! the inter-chunk attention, GPU time per call. `cargo bench --bench rat`

use std::time::Duration;

use chunkwise::bench::gpu_time;
use chunkwise::ops::rat::{self as rops, Heads};
use chunkwise::{Context, DType};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};

fn bench(c: &mut Criterion) {
    let ctx = Context::new_blocking().expect("benchmarks need a wgpu adapter");
    let (t, d) = (4096usize, 256usize);
    let heads = Heads::new(d, 4, 2).unwrap();
    let act = |n: usize| {
        ctx.upload(
            &(0..n)
                .map(|i| ((i * 7919 % 2000) as f32 / 1000.0) - 1.0)
                .collect::<Vec<_>>(),
            &[1, t, n / t],
            DType::F32,
        )
        .unwrap()
    };
    let (v, g, k) = (act(t * d), act(t * d), act(t * heads.dg()));
    let bias = ctx.upload(&vec![1.0; d], &[d], DType::F32).unwrap();
    let mut grp = c.benchmark_group("rat_t4096_d256");
    grp.sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(3));
    for chunk in [16usize, 64] {
        grp.bench_function(BenchmarkId::new("scan", chunk), |b| {
            b.iter_custom(|n| {
                gpu_time(&ctx, n, &|rec| {
                    Ok(rops::scan(rec, &v, &g, &bias, &k, heads, chunk)?.0)
                })
            })
        });
        let q = act(t * heads.dg());
        grp.bench_function(BenchmarkId::new("inter_chunk_attention", chunk), |b| {
            b.iter_custom(|n| {
                gpu_time(&ctx, n, &|rec| {
                    rops::inter_chunk_attention(rec, &q, &v, &g, heads, chunk, None)
                })
            })
        });
    }
    grp.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
