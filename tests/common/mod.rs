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
