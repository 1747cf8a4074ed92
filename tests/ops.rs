//! RMSNorm, elementwise, softmax, RoPE, transpose, embedding and argmax: the registry's cases on
//! every schedule, plus bad input.

mod common;
use chunkwise::ops::{elementwise as ew, norm, rope, softmax};
use chunkwise::{reference as r, DType, Error};
use common::*;

#[test]
fn rmsnorm_registry_cases() {
    check_family("rmsnorm");
}

#[test]
fn elementwise_registry_cases() {
    check_family("elementwise");
}

#[test]
fn softmax_registry_cases() {
    check_family("softmax");
}

#[test]
fn rope_registry_cases() {
    check_family("rope");
}

#[test]
fn transpose_registry_cases() {
    check_family("transpose");
}

#[test]
fn embedding_registry_cases() {
    check_family("embedding");
}

#[test]
fn argmax_registry_cases() {
    check_family("argmax");
}

#[test]
fn rmsnorm_rejects_a_wrong_weight_and_a_negative_eps() {
    let ctx = ctx();
    let x = ctx.upload(&rand(12, 1, 1.0), &[3, 4], DType::F32).unwrap();
    let w = ctx.upload(&rand(5, 1, 1.0), &[5], DType::F32).unwrap();
    let e = ctx.run(|rec| norm::rmsnorm(rec, &x, &w, 1e-6)).unwrap_err();
    assert!(matches!(e, Error::Shape { op: "rmsnorm", .. }), "{e}");
    let w = ctx.upload(&rand(4, 1, 1.0), &[4], DType::F32).unwrap();
    let e = ctx.run(|rec| norm::rmsnorm(rec, &x, &w, -1.0)).unwrap_err();
    assert!(
        matches!(e, Error::InvalidArgument { op: "rmsnorm", .. }),
        "{e}"
    );
}

#[test]
fn binary_rejects_a_non_suffix_broadcast() {
    let ctx = ctx();
    let a = ctx.upload(&rand(12, 1, 1.0), &[3, 4], DType::F32).unwrap();
    let b = ctx.upload(&rand(3, 1, 1.0), &[3], DType::F32).unwrap();
    let e = ctx.run(|rec| ew::add(rec, &a, &b)).unwrap_err();
    assert!(matches!(e, Error::Shape { op: "binary", .. }), "{e}");
}

#[test]
fn softmax_rejects_a_zero_temperature() {
    let ctx = ctx();
    let x = ctx.upload(&rand(4, 1, 1.0), &[4], DType::F32).unwrap();
    let e = ctx.run(|rec| softmax::softmax(rec, &x, 0.0)).unwrap_err();
    assert!(
        matches!(e, Error::InvalidArgument { op: "softmax", .. }),
        "{e}"
    );
}

#[test]
fn rope_rejects_positions_outside_the_table_and_odd_head_dims() {
    let ctx = ctx();
    let table = rope::RopeTable::new(ctx, 8, 16, 10000.0).unwrap();
    let e = table.positions(ctx, &[3, 16]).unwrap_err();
    assert!(e.to_string().contains("position 16"), "{e}");
    let e = rope::RopeTable::new(ctx, 7, 16, 10000.0).unwrap_err();
    assert!(
        matches!(e, Error::InvalidArgument { op: "rope", .. }),
        "{e}"
    );
}

#[test]
fn the_argmax_reference_is_the_greedy_sampler() {
    // The registry's argmax cases compare with reference::argmax; it must pick what the CPU
    // sampler picks (first of ties, NaN never, an all −inf row gives 0).
    use chunkwise::model::sampling::Sampler;
    let mut rows = vec![
        rand(1000, 3, 4.0),
        vec![f32::NEG_INFINITY; 7],
        vec![f32::NAN, 1.0, 1.0],
    ];
    rows[0][5] = 9.0;
    rows[0][7] = 9.0;
    for row in rows {
        assert_eq!(
            r::argmax(&row) as u32,
            Sampler::greedy().sample(&row),
            "{row:?}"
        );
    }
}
