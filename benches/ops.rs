//! RMSNorm, elementwise (and the gated `glu`), softmax and RoPE over a [4096, 256] activation: GPU
//! time per call.
//! `cargo bench --bench ops`

use std::time::Duration;

use chunkwise::bench::gpu_time;
use chunkwise::ops::{elementwise as ew, norm, rope, softmax};
use chunkwise::{Context, DType};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn bench(c: &mut Criterion) {
    let ctx = Context::new_blocking().expect("benchmarks need a wgpu adapter");
    let (rows, d) = (4096usize, 256usize);
    let x = ctx
        .upload(&vec![0.5; rows * d], &[rows, d], DType::F32)
        .unwrap();
    let w = ctx.upload(&vec![1.0; d], &[d], DType::F32).unwrap();
    let table = rope::RopeTable::new(&ctx, 64, rows, 10000.0).unwrap();
    let pos = table
        .positions(&ctx, &(0..rows).collect::<Vec<_>>())
        .unwrap();
    let mut g = c.benchmark_group("ops_4096x256");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2));
    g.throughput(Throughput::Bytes((rows * d * 4 * 2) as u64));
    g.bench_function("rmsnorm", |b| {
        b.iter_custom(|n| gpu_time(&ctx, n, &|rec| norm::rmsnorm(rec, &x, &w, 1e-6)))
    });
    g.bench_function("gelu", |b| {
        b.iter_custom(|n| gpu_time(&ctx, n, &|rec| ew::gelu(rec, &x)))
    });
    g.bench_function("mul", |b| {
        b.iter_custom(|n| gpu_time(&ctx, n, &|rec| ew::mul(rec, &x, &x)))
    });
    // [4096, 2·128] → [4096, 128]: a SwiGLU's gate | up row read, half of it written.
    g.bench_function("glu_silu", |b| {
        b.iter_custom(|n| gpu_time(&ctx, n, &|rec| ew::glu(rec, &x, ew::Unary::Silu)))
    });
    g.bench_function("softmax", |b| {
        b.iter_custom(|n| gpu_time(&ctx, n, &|rec| softmax::softmax(rec, &x, 1.0)))
    });
    g.bench_function("rope", |b| {
        b.iter_custom(|n| gpu_time(&ctx, n, &|rec| rope::rope(rec, &x, &table, &pos)))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
