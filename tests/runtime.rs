//! The runtime: pool, pipeline cache, recordings, read-back, bring-your-own device, limits, errors.

mod common;
use std::sync::Arc;

use chunkwise::kernels::KernelKey;
use chunkwise::ops::{elementwise as ew, gemm, norm};
use chunkwise::{reference as r, Context, ContextOptions, DType, Error};
use common::*;

#[test]
fn a_steady_loop_allocates_nothing_after_warm_up() {
    // Its own context, so other tests running in parallel do not move the counters.
    let ctx = Context::new_blocking().expect("adapter");
    let x = ctx
        .upload(&rand(64 * 96, 1, 1.0), &[1, 64, 96], DType::F32)
        .unwrap();
    let w = ctx
        .upload(&rand(80 * 96, 2, 1.0), &[80, 96], DType::F32)
        .unwrap();
    let nw = ctx.upload(&rand(80, 3, 1.0), &[80], DType::F32).unwrap();
    let step = || {
        let y = ctx
            .run(|rec| {
                let h = gemm::gemm(rec, &x, &w)?;
                let h = norm::rmsnorm(rec, &h, &nw, 1e-6)?;
                ew::gelu(rec, &h)
            })
            .unwrap();
        ctx.download(&y).unwrap()
    };
    let first = step();
    let warm = ctx.pool_stats();
    for _ in 0..20 {
        assert_eq!(step(), first, "identical inputs give bit-identical outputs");
    }
    let after = ctx.pool_stats();
    assert_eq!(
        after.allocations, warm.allocations,
        "no new buffers after warm-up: {warm:?} -> {after:?}"
    );
    assert!(after.reuses > warm.reuses);
    assert_eq!(after.bytes_in_use, warm.bytes_in_use);
}

#[test]
fn pipelines_are_compiled_once_per_key() {
    let ctx = Context::new_blocking().expect("adapter");
    let x = ctx.upload(&rand(300, 1, 1.0), &[300], DType::F32).unwrap();
    ctx.run(|rec| ew::sigmoid(rec, &x)).unwrap();
    let n = ctx.pipelines_compiled();
    ctx.run(|rec| ew::sigmoid(rec, &x)).unwrap();
    ctx.run(|rec| ew::silu(rec, &x)).unwrap(); // same entry point, op is a parameter
    assert_eq!(ctx.pipelines_compiled(), n);
    let a = ctx
        .kernel(&KernelKey::new("elementwise.wgsl", "unary", DType::F32).with("WG", 64.0))
        .unwrap();
    let b = ctx
        .kernel(&KernelKey::new("elementwise.wgsl", "unary", DType::F32).with("WG", 64.0))
        .unwrap();
    assert!(Arc::ptr_eq(&a, &b));
    assert_eq!(
        ctx.pipelines_compiled(),
        n + 1,
        "a new override value is a new pipeline"
    );
}

#[test]
fn many_dispatches_in_one_submit_run_in_order() {
    let ctx = ctx();
    let one = ctx.upload(&[1.0; 10], &[10], DType::F32).unwrap();
    let mut acc = ctx.upload(&[0.0; 10], &[10], DType::F32).unwrap();
    let mut rec = ctx.record();
    for _ in 0..100 {
        acc = ew::add(&mut rec, &acc, &one).unwrap();
    }
    assert_eq!(rec.len(), 100);
    rec.submit().unwrap();
    assert_eq!(ctx.download(&acc).unwrap(), vec![100.0; 10]);
}

#[test]
fn async_download_matches_blocking_download() {
    let ctx = ctx();
    let data = rand(1001, 9, 1.0);
    let t = ctx.upload(&data, &[1001], DType::F32).unwrap();
    let a = pollster::block_on(ctx.download_async(&t)).unwrap();
    assert_eq!(a, data);
    assert_eq!(ctx.download(&t).unwrap(), data);
}

#[test]
fn f16_tensors_round_trip_through_f16_storage() {
    let ctx = ctx();
    let data = vec![0.1f32, -2.5, 65504.0, 1e-3, 3.0];
    let t = ctx.upload(&data, &[5], DType::F16).unwrap();
    assert_eq!(t.dtype(), ctx.resolve_dtype(DType::F16));
    let back = ctx.download(&t).unwrap();
    let want: Vec<f32> = data
        .iter()
        .map(|&v| half::f16::from_f32(v).to_f32())
        .collect();
    if ctx.supports_f16() {
        assert_eq!(back, want);
        assert_eq!(t.bytes(), 10);
    } else {
        assert_eq!(back, data);
    }
}

fn own_device(features: wgpu::Features) -> (wgpu::Device, wgpu::Queue, wgpu::AdapterInfo) {
    let instance =
        wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle().with_env());
    let adapter =
        pollster::block_on(instance.request_adapter(&Default::default())).expect("adapter");
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        required_features: features & adapter.features(),
        ..Default::default()
    }))
    .expect("device");
    (device, queue, adapter.get_info())
}

#[test]
fn a_host_apps_device_can_be_used() {
    let (device, queue, info) = own_device(wgpu::Features::empty());
    let ctx = Context::from_wgpu(device.clone(), queue, info);
    let x = rand(3 * 5 * 8, 1, 1.0);
    let w = rand(6 * 8, 2, 1.0);
    let xt = ctx.upload(&x, &[3, 5, 8], DType::F32).unwrap();
    let wt = ctx.upload(&w, &[6, 8], DType::F32).unwrap();
    let y = ctx.run(|rec| gemm::linear(rec, &xt, &wt)).unwrap();
    // The host keeps using its device alongside chunkwise.
    let _own = device.create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: 64,
        usage: wgpu::BufferUsages::STORAGE,
        mapped_at_creation: false,
    });
    assert_close(
        &ctx.download(&y).unwrap(),
        &r::gemm(&x, &w, 1, 15, 6, 8),
        DType::F32,
        "linear on a host device",
    );
}

#[test]
fn without_shader_f16_f16_requests_fall_back_to_f32() {
    let (device, queue, info) = own_device(wgpu::Features::empty());
    let ctx = Context::from_wgpu(device, queue, info);
    assert!(!ctx.supports_f16());
    let t = ctx.upload(&[1.5, 2.5], &[2], DType::F16).unwrap();
    assert_eq!(t.dtype(), DType::F32);
    let y = ctx.run(|rec| ew::add(rec, &t, &t)).unwrap();
    assert_eq!(ctx.download(&y).unwrap(), vec![3.0, 5.0]);
}

#[test]
fn a_tensor_over_max_buffer_size_is_refused_by_name() {
    let ctx = ctx();
    let n = ctx.limits().max_buffer_size as usize / 4 + 1;
    let e = ctx.alloc(&[n], DType::F32).unwrap_err();
    assert!(
        matches!(
            e,
            Error::LimitExceeded {
                limit_name: "max_buffer_size",
                ..
            }
        ),
        "{e}"
    );
    let e = ctx.alloc(&[usize::MAX, 4], DType::F32).unwrap_err();
    assert!(matches!(e, Error::LimitExceeded { .. }), "{e}");
}

#[test]
fn binding_a_tensor_over_the_binding_limit_is_an_error_not_a_panic() {
    let ctx = ctx();
    let limit = ctx.limits().max_storage_buffer_binding_size;
    if limit >= ctx.limits().max_buffer_size {
        return; // this adapter can bind any buffer it can allocate: nothing to exceed
    }
    let n = (limit / 4 + 1024) as usize;
    let t = ctx.alloc(&[n], DType::F32).unwrap();
    let e = ctx.run(|rec| ew::sigmoid(rec, &t)).unwrap_err();
    assert!(
        matches!(
            e,
            Error::LimitExceeded {
                limit_name: "max_storage_buffer_binding_size",
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains(&limit.to_string()), "{e}");
}

#[test]
fn wrong_binding_counts_and_aliased_outputs_are_errors() {
    let ctx = ctx();
    let k = ctx
        .kernel(&KernelKey::new("elementwise.wgsl", "binary", DType::F32))
        .unwrap();
    let t = ctx.upload(&[1.0; 4], &[4], DType::F32).unwrap();
    let mut rec = ctx.record();
    let e = rec
        .dispatch(&k, &[0u8; 16], &[&t, &t], [1, 1, 1])
        .unwrap_err();
    assert!(
        e.to_string().contains("declares 3 storage bindings but 2"),
        "{e}"
    );
    let e = rec
        .dispatch(&k, &[0u8; 16], &[&t, &t, &t], [1, 1, 1])
        .unwrap_err();
    assert!(
        matches!(e, Error::Binding { .. }) && e.to_string().contains("written"),
        "{e}"
    );
    let o = ctx.alloc(&[4], DType::F32).unwrap();
    let e = rec
        .dispatch(&k, &[0u8; 16], &[&t, &t, &o], [70_000, 1, 1])
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::LimitExceeded {
                limit_name: "max_compute_workgroups_per_dimension",
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn unknown_kernels_and_bad_shapes_are_errors() {
    let ctx = ctx();
    let e = ctx
        .kernel(&KernelKey::new("nope.wgsl", "main", DType::F32))
        .unwrap_err();
    assert!(matches!(e, Error::UnknownKernel(_)), "{e}");
    let e = ctx
        .kernel(&KernelKey::new("gemm_tiled.wgsl", "nope", DType::F32))
        .unwrap_err();
    assert!(e.to_string().contains("gemm_tiled.wgsl::nope"), "{e}");
    let e = ctx
        .upload(&[1.0, 2.0, 3.0], &[2, 2], DType::F32)
        .unwrap_err();
    assert!(matches!(e, Error::Shape { op: "upload", .. }), "{e}");
    let t = ctx.upload(&[1.0; 6], &[2, 3], DType::F32).unwrap();
    assert!(t.reshape(&[3, 2]).is_ok());
    assert!(matches!(
        t.reshape(&[4, 2]).unwrap_err(),
        Error::Shape { op: "reshape", .. }
    ));
}

#[test]
fn an_unmatched_adapter_name_lists_the_adapters_found() {
    let opts = ContextOptions {
        adapter_name: Some("no-such-gpu-xyz".into()),
        ..Default::default()
    };
    let e = pollster::block_on(Context::with_options(opts)).unwrap_err();
    assert!(matches!(e, Error::NoAdapter { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("no-such-gpu-xyz") && msg.contains("WGPU_ADAPTER_NAME"),
        "{msg}"
    );
}

#[test]
fn a_destroyed_device_is_reported_as_lost_and_a_new_context_works() {
    let ctx = Context::new_blocking().expect("adapter");
    let t = ctx.upload(&[1.0; 4], &[4], DType::F32).unwrap();
    ctx.device().destroy();
    let _ = ctx.device().poll(wgpu::PollType::Poll);
    let e = ctx.run(|rec| ew::sigmoid(rec, &t)).unwrap_err();
    assert!(matches!(e, Error::DeviceLost { .. }), "{e}");
    assert!(e.to_string().contains("create a new Context"), "{e}");
    let fresh = Context::new_blocking().expect("adapter");
    let t = fresh.upload(&[0.0; 4], &[4], DType::F32).unwrap();
    let y = fresh.run(|rec| ew::sigmoid(rec, &t)).unwrap();
    assert_eq!(fresh.download(&y).unwrap(), vec![0.5; 4]);
}

#[test]
fn threads_share_one_context() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Context>();
    send_sync::<chunkwise::Tensor>();
    let ctx = ctx();
    std::thread::scope(|s| {
        for i in 0..8u64 {
            s.spawn(move || {
                let x = rand(17 * 24, i, 1.0);
                let w = rand(9 * 24, i + 100, 1.0);
                let xt = ctx.upload(&x, &[1, 17, 24], DType::F32).unwrap();
                let wt = ctx.upload(&w, &[9, 24], DType::F32).unwrap();
                for _ in 0..5 {
                    let y = ctx.run(|rec| gemm::gemm(rec, &xt, &wt)).unwrap();
                    assert_close(
                        &ctx.download(&y).unwrap(),
                        &r::gemm(&x, &w, 1, 17, 9, 24),
                        DType::F32,
                        "threaded gemm",
                    );
                }
            });
        }
    });
}

#[test]
fn timed_recordings_may_start_and_end_with_clears_and_copies() {
    // Layers zero their states inside the caller's recording (Mesa's forward starts with one):
    // timing such a recording once failed with an error, which broke `bench layers` for Mesa.
    let ctx = ctx();
    let a = ctx.upload(&[1.0f32; 64], &[64], DType::F32).unwrap();
    let b = ctx.alloc(&[64], DType::F32).unwrap();
    let mut rec = ctx.record();
    rec.zero(&b);
    let y = ew::add(&mut rec, &a, &a).unwrap();
    rec.copy(&y, &b).unwrap();
    let secs = rec.submit_timed().unwrap();
    assert!(secs.is_finite() && secs >= 0.0, "{secs}");
    assert_eq!(ctx.download(&b).unwrap(), vec![2.0f32; 64]);
    // Nothing but a clear.
    let mut rec = ctx.record();
    rec.zero(&b);
    assert!(rec.submit_timed().unwrap() >= 0.0);
    assert_eq!(ctx.download(&b).unwrap(), vec![0.0f32; 64]);
}

#[test]
fn flushing_a_recording_lets_later_steps_reuse_earlier_buffers() {
    // Its own context, so other tests running in parallel do not move the counters.
    let ctx = Context::new_blocking().expect("adapter");
    let x0 = ctx
        .upload(&rand(256 * 1024, 4, 1.0), &[256, 1024], DType::F32)
        .unwrap();
    let chain = |flush: bool| {
        let before = ctx.pool_stats().allocations;
        let y = ctx
            .run(|rec| {
                let mut x = x0.clone();
                for _ in 0..12 {
                    x = ew::mul(rec, &x, &x0)?;
                    x = ew::add(rec, &x, &x0)?;
                    if flush {
                        rec.flush()?;
                    }
                }
                Ok(x)
            })
            .unwrap();
        (
            ctx.download(&y).unwrap(),
            ctx.pool_stats().allocations - before,
        )
    };
    // Flushed first, on an empty pool: what it allocates is what it needs at once.
    let (flushed, allocs_flushed) = chain(true);
    let (kept, allocs_kept) = chain(false);
    assert_eq!(flushed, kept, "flushing changes no result");
    // Without flushes the chain's 24 intermediates are all held until the one submit; with them
    // each step's buffers return to the pool and serve the next (a few more buffers: the
    // uniform buffer of each submit, the read-back).
    assert!(
        allocs_flushed <= 6 && allocs_kept >= 20,
        "allocations: {allocs_kept} held, {allocs_flushed} flushed"
    );
}

#[test]
fn a_variant_the_table_rules_out_on_a_backend_is_refused_by_name() {
    // mesa_decode_lanes is kept off GL (llvmpipe's GL driver did not compile it in 300 s); the
    // registry refuses it there before compiling anything, naming kernel, backend and reason.
    let ctx = common::ctx();
    let key = KernelKey::new("mesa_decode_lanes.wgsl", "mesa_decode_lanes", DType::F32);
    let registry = chunkwise::kernels::Registry::new();
    let Err(e) = registry.get(ctx.device(), wgpu::Backend::Gl, ctx.limits(), &key) else {
        panic!("mesa_decode_lanes was built for GL");
    };
    assert!(matches!(e, Error::VariantNotOnBackend { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("mesa_decode_lanes") && msg.contains("Gl"),
        "{msg}"
    );
    // The same key on the adapter's own backend (Vulkan here) builds.
    if ctx.adapter_info().backend != wgpu::Backend::Gl {
        let key = key.with("DIM", 16.0);
        registry
            .get(ctx.device(), ctx.adapter_info().backend, ctx.limits(), &key)
            .unwrap();
    }
}
