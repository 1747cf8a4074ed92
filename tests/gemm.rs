//! GEMM kernels vs the f64 reference: odd sizes, batching, both schedules, f32 and f16.

mod common;
use chunkwise::ops::gemm::{self, GemmSchedule};
use chunkwise::{reference, DType, Error};
use common::*;

fn check(
    b: usize,
    m: usize,
    n: usize,
    k: usize,
    w_batched: bool,
    schedule: GemmSchedule,
    dtype: DType,
) {
    let ctx = ctx();
    let x = stored(&rand(b * m * k, 1 + m as u64, 1.0), dtype);
    let wb = if w_batched { b } else { 1 };
    let w = stored(&rand(wb * n * k, 2 + n as u64, 1.0), dtype);
    let xt = ctx.upload(&x, &[b, m, k], dtype).unwrap();
    let wshape: Vec<usize> = if w_batched { vec![b, n, k] } else { vec![n, k] };
    let wt = ctx.upload(&w, &wshape, dtype).unwrap();
    let y = ctx
        .run(|rec| gemm::gemm_with(rec, &xt, &wt, schedule))
        .unwrap();
    assert_eq!(y.shape(), [b, m, n]);
    let got = ctx.download(&y).unwrap();
    let want = reference::gemm(&x, &w, b, m, n, k);
    assert_close(
        &got,
        &want,
        dtype,
        &format!("gemm {b}x{m}x{n}x{k} w_batched={w_batched} {schedule:?}"),
    );
}

#[test]
fn odd_sizes_both_schedules_all_dtypes() {
    for dtype in dtypes() {
        for s in [
            GemmSchedule::Tiled,
            GemmSchedule::Direct,
            GemmSchedule::DirectSubgroup,
        ] {
            check(1, 37, 61, 100, false, s, dtype);
            check(1, 1, 1, 1, false, s, dtype);
            check(1, 65, 130, 17, false, s, dtype);
            check(1, 128, 64, 256, false, s, dtype);
            // Fewer than 8 rows (decode steps): the direct schedule's one-row kernel.
            check(1, 1, 50, 64, false, s, dtype);
            check(1, 5, 33, 12, false, s, dtype);
            // K > 1024: the subgroup schedule's one-column-block variant.
            check(1, 20, 36, 1028, false, s, dtype);
            // More than one workgroup of columns (512 with two blocks per lane, 256 with one).
            check(1, 37, 600, 256, false, s, dtype);
            check(1, 20, 300, 1028, false, s, dtype);
            check(3, 7, 9, 8, true, s, dtype);
        }
    }
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
fn batched_with_shared_and_batched_weights() {
    for s in [
        GemmSchedule::Tiled,
        GemmSchedule::Direct,
        GemmSchedule::DirectSubgroup,
    ] {
        check(3, 29, 33, 40, false, s, DType::F32);
        check(3, 29, 33, 40, true, s, DType::F32);
    }
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
