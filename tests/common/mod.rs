//! Shared by the GPU integration tests: one Context per test binary, inputs, tolerances.
#![allow(dead_code)]

use std::sync::OnceLock;

use chunkwise::reference::rel_rms;
use chunkwise::{Context, DType};

#[allow(unused_imports)]
pub use chunkwise::verify::{rand, stored, tolerance as tol};

/// rel-RMS bound for a whole layer stored in f16 (weights and every intermediate rounded to f16),
/// on its residual branch y − x. Measured: at most 4.1e-3 over the RAT test shapes.
pub const TOL_F16_LAYER: f64 = 1e-2;

/// The test adapter. No adapter is a failure, never a skip: GPU tests must run real kernels.
pub fn ctx() -> &'static Context {
    static CTX: OnceLock<Context> = OnceLock::new();
    CTX.get_or_init(|| {
        let _ = env_logger::builder().is_test(true).try_init();
        match Context::new_blocking() {
            Ok(c) => c,
            Err(e) => panic!(
                "GPU tests need a wgpu adapter and none was found: {e}\n\
                 On headless Debian/Ubuntu: apt-get install mesa-vulkan-drivers (lavapipe)."
            ),
        }
    })
}

/// A second context on the test adapter with the subgroup kernels switched off, so that the
/// kernels CPU adapters without 8-lane subgroups run are tested on lavapipe too.
#[allow(dead_code)]
pub fn ctx_without_subgroups() -> &'static Context {
    static CTX: OnceLock<Context> = OnceLock::new();
    CTX.get_or_init(|| {
        let c = Context::new_blocking().expect("GPU tests need a wgpu adapter (see ctx())");
        c.set_subgroup_kernels(false);
        assert_eq!(c.subgroup_size(), None);
        c
    })
}

/// A third context on the test adapter that picks the kernels a GPU gets, so that CI (lavapipe)
/// runs the GPU schedules too, at sizes within the CPU driver's loop limits.
#[allow(dead_code)]
pub fn ctx_gpu_schedules() -> &'static Context {
    static CTX: OnceLock<Context> = OnceLock::new();
    CTX.get_or_init(|| {
        let c = Context::new_blocking().expect("GPU tests need a wgpu adapter (see ctx())");
        c.set_schedule(chunkwise::Schedule::Gpu);
        c
    })
}

/// A context on the test adapter's device requested with changed limits (no optional features).
pub fn ctx_with_limits(limits: impl Fn(wgpu::Limits) -> wgpu::Limits) -> Context {
    let instance =
        wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle().with_env());
    let adapter =
        pollster::block_on(instance.request_adapter(&Default::default())).expect("adapter");
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        required_limits: limits(adapter.limits()),
        ..Default::default()
    }))
    .expect("device");
    Context::from_wgpu(device, queue, adapter.get_info())
}

/// The three schedules the test adapter runs: its own (on lavapipe the CPU kernels with 8-lane
/// subgroups), the same without subgroup kernels, and the GPU kernels.
pub fn contexts() -> [&'static Context; 3] {
    [ctx(), ctx_without_subgroups(), ctx_gpu_schedules()]
}

/// Every registry case of `family` (chunkwise::verify, the cases `chunkwise check` runs) on every
/// schedule of the test adapter; fails listing each case that does not pass. The only skips
/// allowed are an f16 case on an adapter without SHADER_F16 and a tensor-core case on a device
/// without cooperative matrices (a size over a limit, which `check` reports as skipped, fails
/// here: the tests must run every case).
pub fn check_family(family: &str) {
    let cases: Vec<_> = chunkwise::verify::registry()
        .into_iter()
        .filter(|c| c.family == family)
        .collect();
    assert!(!cases.is_empty(), "no registry case of family {family}");
    let mut failures = Vec::new();
    let mut ran = 0;
    for ctx in contexts() {
        for case in &cases {
            let o = case.run(ctx);
            let no_f16 = case.dtype == DType::F16 && !ctx.supports_f16();
            // Tensor-core cases skip where the device has no cooperative matrices (lavapipe).
            let no_coop = (case.shape.contains("tile coop") || case.shape.contains("variant coop"))
                && !ctx
                    .features()
                    .contains(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX)
                && o.skipped
                    .as_deref()
                    .is_some_and(|s| s.contains("EXPERIMENTAL_COOPERATIVE_MATRIX"));
            // Forced subgroup kernels skip on a context with the subgroup kernels off.
            let no_sg = case.shape.contains("variant fa2sg")
                && !ctx.subgroups_enabled()
                && o.skipped.as_deref().is_some_and(|s| s.contains("SUBGROUP"));
            if o.failed() || (o.skipped.is_some() && !no_f16 && !no_coop && !no_sg) {
                failures.push(o.describe());
            } else if o.skipped.is_none() {
                ran += 1;
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(ran > 0, "no case of {family} ran on the test adapter");
    // Every pipeline the launch wrappers built is a row of the variant table, inside its ranges:
    // the table is what tests/translate.rs translates for Metal and DX12.
    let outside: Vec<String> = contexts()
        .iter()
        .flat_map(|ctx| ctx.compiled_kernels())
        .filter_map(|key| chunkwise::kernels::variants::admit(&key).err())
        .collect();
    assert!(
        outside.is_empty(),
        "pipelines outside the variant table:\n{}",
        outside.join("\n")
    );
}

/// The f16 storage dtype where the adapter has it (the test then covers f16), else f32.
pub fn dtypes() -> Vec<DType> {
    if ctx().supports_f16() {
        vec![DType::F32, DType::F16]
    } else {
        vec![DType::F32]
    }
}

/// Asserts rel-RMS within the dtype's bound, with a message naming the case.
pub fn assert_close(got: &[f32], want: &[f64], dtype: DType, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    assert!(
        got.iter().all(|v| v.is_finite()),
        "{what}: non-finite output"
    );
    let e = rel_rms(got, want);
    assert!(
        e <= tol(dtype),
        "{what} ({dtype:?}): rel_rms {e:.3e} > {:.0e}",
        tol(dtype)
    );
}

/// A checkpoint held in memory (no file), from (name, shape, data).
pub fn checkpoint(tensors: Vec<(&str, Vec<usize>, Vec<f32>)>) -> chunkwise::model::Checkpoint {
    let t = tensors
        .into_iter()
        .map(|(n, s, d)| (n.to_string(), s, d))
        .collect();
    chunkwise::model::Checkpoint::from_f32("<test weights>", t).unwrap()
}

/// Tokens `lo..hi` of every sequence of `x [b, t, d]`.
pub fn token_rows(x: &[f32], b: usize, t: usize, d: usize, lo: usize, hi: usize) -> Vec<f32> {
    (0..b)
        .flat_map(|bi| x[(bi * t + lo) * d..(bi * t + hi) * d].to_vec())
        .collect()
}

/// Prefill of `x[:, :p]`, then one step per remaining token, must equal the parallel forward over
/// all of `x [b, t, d]` (f32 bound). Returns the cache after the last step.
pub fn assert_decode_matches_forward<L: chunkwise::layers::SequenceLayer>(
    layer: &L,
    x: &[f32],
    (b, t, d): (usize, usize, usize),
    p: usize,
) -> L::Cache {
    assert_decode_matches_forward_on(ctx(), layer, x, (b, t, d), p)
}

/// [`assert_decode_matches_forward`] for a layer loaded on `ctx`.
pub fn assert_decode_matches_forward_on<L: chunkwise::layers::SequenceLayer>(
    ctx: &Context,
    layer: &L,
    x: &[f32],
    (b, t, d): (usize, usize, usize),
    p: usize,
) -> L::Cache {
    let xt = ctx.upload(x, &[b, t, d], DType::F32).unwrap();
    let full = ctx
        .download(&ctx.run(|rec| layer.forward(rec, &xt)).unwrap())
        .unwrap();
    let as_f64 = |v: Vec<f32>| v.into_iter().map(f64::from).collect::<Vec<_>>();
    let pt = ctx
        .upload(&token_rows(x, b, t, d, 0, p), &[b, p, d], DType::F32)
        .unwrap();
    let (yp, mut cache) = ctx.run(|rec| layer.prefill(rec, &pt)).unwrap();
    assert_close(
        &ctx.download(&yp).unwrap(),
        &as_f64(token_rows(&full, b, t, d, 0, p)),
        DType::F32,
        "prefill",
    );
    for i in p..t {
        let xi = ctx
            .upload(&token_rows(x, b, t, d, i, i + 1), &[b, 1, d], DType::F32)
            .unwrap();
        let y = ctx
            .download(&ctx.run(|rec| layer.step(rec, &mut cache, &xi)).unwrap())
            .unwrap();
        assert_close(
            &y,
            &as_f64(token_rows(&full, b, t, d, i, i + 1)),
            DType::F32,
            &format!("step at {i} after a prefill of {p}"),
        );
    }
    cache
}
