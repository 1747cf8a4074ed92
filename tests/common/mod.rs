//! Shared by the GPU integration tests: one Context per test binary, inputs, tolerances.
#![allow(dead_code)]

use std::sync::OnceLock;

use chunkwise::reference::rel_rms;
use chunkwise::{Context, DType};

/// rel-RMS bound for f32 storage: rms(gpu − ref) / rms(ref).
pub const TOL_F32: f64 = 1e-5;
/// rel-RMS bound for f16 storage, against the reference evaluated on the f16-rounded inputs
/// (so it measures the kernel: f32 accumulation plus one f16 rounding of the output, 2^-11 relative at most).
pub const TOL_F16: f64 = 1e-3;

/// rel-RMS bound for a whole layer stored in f16 (weights and every intermediate rounded to f16),
/// on its residual branch y − x. Measured: at most 4.1e-3 over the RAT test shapes.
pub const TOL_F16_LAYER: f64 = 1e-2;

pub fn tol(dtype: DType) -> f64 {
    match dtype {
        DType::F32 => TOL_F32,
        DType::F16 => TOL_F16,
    }
}

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
        c.set_cpu_schedules(false);
        c
    })
}

/// The f16 storage dtype where the adapter has it (the test then covers f16), else f32.
pub fn dtypes() -> Vec<DType> {
    if ctx().supports_f16() {
        vec![DType::F32, DType::F16]
    } else {
        vec![DType::F32]
    }
}

/// Deterministic uniform values in [-scale, scale).
pub fn rand(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

/// Rounds to what a tensor of `dtype` stores, so references see the same inputs as the kernel.
pub fn stored(v: &[f32], dtype: DType) -> Vec<f32> {
    match dtype {
        DType::F32 => v.to_vec(),
        DType::F16 => v.iter().map(|&x| half::f16::from_f32(x).to_f32()).collect(),
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
    let ctx = ctx();
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
