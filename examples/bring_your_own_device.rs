//! Embedding chunkwise in an application that already owns a wgpu device and queue.
//! `cargo run --example bring_your_own_device`

use chunkwise::ops::{elementwise, gemm, norm};
use chunkwise::{Context, DType};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The host application's own setup.
    let instance =
        wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle().with_env());
    let adapter = pollster::block_on(instance.request_adapter(&Default::default()))?;
    let (device, queue) =
        pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor::default()))?;

    // chunkwise shares that device: its kernels, pool and pipeline cache live beside the app's work.
    let ctx = Context::from_wgpu(device, queue, adapter.get_info());
    let (t, d, out) = (8, 16, 4);
    let x = ctx.upload(
        &(0..t * d)
            .map(|i| (i as f32 * 0.37).sin())
            .collect::<Vec<_>>(),
        &[t, d],
        DType::F32,
    )?;
    let norm_w = ctx.upload(&vec![1.0; d], &[d], DType::F32)?;
    let proj = ctx.upload(
        &(0..out * d)
            .map(|i| (i as f32 * 0.11).cos() * 0.25)
            .collect::<Vec<_>>(),
        &[out, d],
        DType::F32,
    )?;

    // Three dispatches, one submit.
    let y = ctx.run(|rec| {
        let h = norm::rmsnorm(rec, &x, &norm_w, 1e-6)?;
        let h = gemm::linear(rec, &h, &proj)?;
        elementwise::silu(rec, &h)
    })?;
    let v = ctx.download(&y)?;
    println!("adapter: {}", ctx.adapter_info().name);
    for row in v.chunks(out) {
        println!("{row:?}");
    }
    Ok(())
}
