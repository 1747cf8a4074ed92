//! GEMM: the registry's cases on every schedule, plus the Linear wrapper and bad input.

mod common;
use chunkwise::ops::gemm::{self, GemmSchedule};
use chunkwise::{reference, DType, Error};
use common::*;

#[test]
fn registry_cases_on_every_schedule() {
    // Odd sizes, M = 1 … 17, K > 1024, several column workgroups, batched weights, f32 and f16:
    // the tiled (GPU), direct and direct-subgroup (CPU) schedules through the three contexts.
    check_family("gemm");
}

#[test]
fn lavapipe_runs_the_subgroup_schedule() {
    // The odd-size tests above only reach gemm_direct_sg where subgroups are 8 lanes wide;
    // lavapipe at 256 bits is such a driver, and CI runs on it.
    let ctx = ctx();
    if ctx.adapter_info().name.contains("llvmpipe") && ctx.adapter_info().name.contains("256 bits")
    {
        assert_eq!(ctx.subgroup_size(), Some(8));
        assert_eq!(
            GemmSchedule::Auto.resolve(ctx),
            GemmSchedule::DirectSubgroup
        );
    }
    assert_eq!(
        GemmSchedule::Auto.resolve(ctx_gpu_schedules()),
        GemmSchedule::Tiled
    );
}

#[test]
fn linear_keeps_leading_dims() {
    let ctx = ctx();
    let x = rand(2 * 5 * 12, 3, 1.0);
    let w = rand(7 * 12, 4, 1.0);
    let xt = ctx.upload(&x, &[2, 5, 12], DType::F32).unwrap();
    let wt = ctx.upload(&w, &[7, 12], DType::F32).unwrap();
    let y = ctx.run(|rec| gemm::linear(rec, &xt, &wt)).unwrap();
    assert_eq!(y.shape(), [2, 5, 7]);
    assert_close(
        &ctx.download(&y).unwrap(),
        &reference::gemm(&x, &w, 1, 10, 7, 12),
        DType::F32,
        "linear",
    );
}

#[test]
fn mismatched_inner_dimension_is_a_shape_error() {
    let ctx = ctx();
    let x = ctx
        .upload(&rand(12, 1, 1.0), &[1, 3, 4], DType::F32)
        .unwrap();
    let w = ctx.upload(&rand(10, 1, 1.0), &[2, 5], DType::F32).unwrap();
    let err = ctx.run(|rec| gemm::gemm(rec, &x, &w)).unwrap_err();
    assert!(matches!(err, Error::Shape { op: "gemm", .. }), "{err}");
    assert!(err.to_string().contains("K=4"), "{err}");
}

#[test]
fn mixed_dtypes_are_a_dtype_error() {
    let ctx = ctx();
    let x = ctx
        .upload(&rand(12, 1, 1.0), &[1, 3, 4], DType::F32)
        .unwrap();
    let w = ctx.upload(&rand(8, 1, 1.0), &[2, 4], DType::F16).unwrap();
    let res = ctx.run(|rec| gemm::gemm(rec, &x, &w));
    if ctx.supports_f16() {
        let err = res.unwrap_err();
        assert!(matches!(err, Error::DType { op: "gemm", .. }), "{err}");
    } else {
        // Without SHADER_F16 both are stored as f32, so the product is valid.
        assert_eq!(res.unwrap().dtype(), DType::F32);
    }
}

#[test]
fn a_prepared_linear_weight_gives_the_same_product() {
    let ctx = ctx();
    for (n, k) in [(24usize, 64usize), (7, 30)] {
        let x = rand(3 * 5 * k, 1, 1.0);
        let w = rand(n * k, 2, 1.0);
        let xt = ctx.upload(&x, &[3, 5, k], DType::F32).unwrap();
        let wt = ctx.upload(&w, &[n, k], DType::F32).unwrap();
        let lin = gemm::Linear::new(ctx, wt.clone()).unwrap();
        let (a, b) = ctx
            .run(|rec| Ok((lin.forward(rec, &xt)?, gemm::linear(rec, &xt, &wt)?)))
            .unwrap();
        assert_eq!(a.shape(), [3, 5, n]);
        let want = reference::gemm(&x, &w, 1, 15, n, k);
        assert_close(
            &ctx.download(&a).unwrap(),
            &want,
            DType::F32,
            "prepared linear",
        );
        assert_eq!(ctx.download(&a).unwrap(), ctx.download(&b).unwrap());
    }
    let bad = ctx
        .upload(&rand(8, 1, 1.0), &[2, 2, 2], DType::F32)
        .unwrap();
    assert!(matches!(
        gemm::Linear::new(ctx, bad).err().unwrap(),
        Error::Shape { op: "linear", .. }
    ));
}
