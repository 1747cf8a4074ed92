//! GEMM y = x·Wᵀ: GPU time per call (timestamps where available) for every GPU tile and the
//! CPU-adapter schedules.
//! `cargo bench --bench gemm`

use std::time::Duration;

use chunkwise::ops::gemm::{self, GemmSchedule};
use chunkwise::{Context, DType};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

fn bench(c: &mut Criterion) {
    let ctx = Context::new_blocking().expect("benchmarks need a wgpu adapter");
    let mut g = c.benchmark_group("gemm");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    for &(m, n, k) in &[
        (256usize, 256usize, 256usize),
        (512, 512, 512),
        (37, 61, 100),
    ] {
        let x = ctx
            .upload(&vec![0.5; m * k], &[1, m, k], DType::F32)
            .unwrap();
        let w = ctx.upload(&vec![0.25; n * k], &[n, k], DType::F32).unwrap();
        g.throughput(Throughput::Elements(gemm::flops(1, m, n, k) as u64));
        // Every GPU tile the adapter can run here (tensor-core ones only with cooperative
        // matrices and sizes that are multiples of their edge), then the CPU-adapter schedules.
        let tiles = gemm::Tile::ALL
            .into_iter()
            .filter(|t| t.usable(&ctx, DType::F32, m, n, k).is_ok())
            .map(GemmSchedule::TiledAs);
        for s in tiles.chain([GemmSchedule::Direct, GemmSchedule::DirectSubgroup]) {
            let name = match s {
                GemmSchedule::TiledAs(t) => format!("tiled_{}", t.name()),
                s => format!("{s:?}"),
            };
            g.bench_with_input(
                BenchmarkId::new(name, format!("{m}x{n}x{k}")),
                &s,
                |b, &s| {
                    b.iter_custom(|iters| {
                        let mut t = 0.0;
                        for _ in 0..iters {
                            let mut rec = ctx.record();
                            gemm::gemm_with(&mut rec, &x, &w, s).unwrap();
                            t += rec.submit_timed().unwrap();
                        }
                        Duration::from_secs_f64(t)
                    })
                },
            );
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
