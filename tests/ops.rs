//! RMSNorm, elementwise, softmax, RoPE and transpose kernels vs the f64 reference, f32 and f16.

mod common;
use chunkwise::ops::{elementwise as ew, norm, rope, softmax, transpose};
use chunkwise::{reference as r, DType, Error};
use common::*;

#[test]
fn rmsnorm_matches_reference_on_odd_widths() {
    let ctx = ctx();
    for dtype in dtypes() {
        // Widths that are multiples of 4 take the row-per-invocation kernel on CPU adapters.
        for &(rows, d) in &[
            (1usize, 1usize),
            (7, 60),
            (33, 128),
            (5, 1000),
            (3, 2049),
            (100, 256),
        ] {
            let x = stored(&rand(rows * d, d as u64, 3.0), dtype);
            let w = stored(&rand(d, 7, 1.0), dtype);
            let xt = ctx.upload(&x, &[rows, d], dtype).unwrap();
            let wt = ctx.upload(&w, &[d], dtype).unwrap();
            let y = ctx.run(|rec| norm::rmsnorm(rec, &xt, &wt, 1e-6)).unwrap();
            assert_close(
                &ctx.download(&y).unwrap(),
                &r::rmsnorm(&x, &w, 1e-6),
                dtype,
                &format!("rmsnorm {rows}x{d}"),
            );
        }
    }
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

fn check_unary(op: ew::Unary, f: fn(f64) -> f64) {
    let ctx = ctx();
    for dtype in dtypes() {
        // Large magnitudes included: the kernels must not overflow to inf/NaN.
        // 1005 values take the scalar kernel, 1008 the vec4 one.
        for extra in [0, 3] {
            let mut x = rand(1000 + extra, op as u64 + 11, 8.0);
            x.extend_from_slice(&[-90.0, -30.0, 0.0, 30.0, 90.0]);
            let x = stored(&x, dtype);
            let xt = ctx.upload(&x, &[x.len()], dtype).unwrap();
            let y = ctx.run(|rec| ew::unary(rec, &xt, op)).unwrap();
            let want: Vec<f64> = x.iter().map(|&v| f(v as f64)).collect();
            assert_close(
                &ctx.download(&y).unwrap(),
                &want,
                dtype,
                &format!("{op:?} n={}", x.len()),
            );
        }
    }
}

#[test]
fn sigmoid_matches_reference() {
    check_unary(ew::Unary::Sigmoid, r::sigmoid);
}
#[test]
fn silu_matches_reference() {
    check_unary(ew::Unary::Silu, r::silu);
}
#[test]
fn gelu_exact_erf_matches_reference() {
    check_unary(ew::Unary::Gelu, r::gelu);
}
#[test]
fn logsigmoid_matches_reference() {
    check_unary(ew::Unary::LogSigmoid, r::logsigmoid);
}
#[test]
fn softplus_matches_reference() {
    check_unary(ew::Unary::Softplus, r::softplus);
}

#[test]
fn binary_maps_with_and_without_broadcast_scalar_and_vec4() {
    // Rows of 37 take the scalar kernel, rows of 40 the vec4 one (elementwise4.wgsl).
    let ctx = ctx();
    type Map = (ew::Binary, fn(f64, f64) -> f64);
    let maps: [Map; 3] = [
        (ew::Binary::Mul, |u, v| u * v),
        (ew::Binary::Add, |u, v| u + v),
        (ew::Binary::SigmoidMul, |u, v| r::sigmoid(u) * v),
    ];
    for dtype in dtypes() {
        for cols in [37, 40] {
            let a = stored(&rand(6 * cols, 1, 2.0), dtype);
            let full = stored(&rand(6 * cols, 2, 2.0), dtype);
            let row = stored(&rand(cols, 3, 2.0), dtype);
            let at = ctx.upload(&a, &[6, cols], dtype).unwrap();
            for (b, shape) in [(&full, vec![6, cols]), (&row, vec![cols])] {
                let bt = ctx.upload(b, &shape, dtype).unwrap();
                for (op, f) in maps {
                    let y = ctx.run(|rec| ew::binary(rec, &at, &bt, op)).unwrap();
                    let want: Vec<f64> = a
                        .iter()
                        .enumerate()
                        .map(|(i, &v)| f(v as f64, b[i % b.len()] as f64))
                        .collect();
                    assert_close(
                        &ctx.download(&y).unwrap(),
                        &want,
                        dtype,
                        &format!("{op:?} {cols} {shape:?}"),
                    );
                }
            }
        }
    }
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
fn softmax_with_temperature_matches_reference() {
    let ctx = ctx();
    for dtype in dtypes() {
        for &(rows, d, temp) in &[
            (4usize, 10usize, 1.0f32),
            (9, 300, 0.5),
            (2, 4097, 2.0),
            (3, 1, 1.0),
        ] {
            let mut x = rand(rows * d, d as u64, 10.0);
            x[0] = 80.0; // a large logit: max subtraction keeps exp finite
            let x = stored(&x, dtype);
            let xt = ctx.upload(&x, &[rows, d], dtype).unwrap();
            let y = ctx.run(|rec| softmax::softmax(rec, &xt, temp)).unwrap();
            let want = r::softmax(&x, d, temp as f64);
            assert_close(
                &ctx.download(&y).unwrap(),
                &want,
                dtype,
                &format!("softmax {rows}x{d} T={temp}"),
            );
        }
    }
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
fn rope_at_arbitrary_positions_matches_reference() {
    let ctx = ctx();
    for dtype in dtypes() {
        for &(b, t, h, dh) in &[
            (1usize, 5usize, 2usize, 64usize),
            (2, 7, 3, 60),
            (1, 3, 1, 2),
            (1, 4, 2, 8),
        ] {
            let table = rope::RopeTable::new(ctx, dh, 5000, 10000.0).unwrap();
            let pos: Vec<usize> = (0..t).map(|i| (i * 613 + 17) % 5000).collect();
            let x = stored(&rand(b * t * h * dh, dh as u64, 1.0), dtype);
            let xt = ctx.upload(&x, &[b, t, h * dh], dtype).unwrap();
            let p = table.positions(ctx, &pos).unwrap();
            let y = ctx.run(|rec| rope::rope(rec, &xt, &table, &p)).unwrap();
            let want = r::rope(&x, dh, h, &pos, 10000.0);
            assert_close(
                &ctx.download(&y).unwrap(),
                &want,
                dtype,
                &format!("rope b{b} t{t} h{h} dh{dh}"),
            );
        }
    }
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
fn transpose_matches_host_transpose_with_padding() {
    let ctx = ctx();
    let (b, rows, cols) = (2usize, 19usize, 35usize);
    let x = rand(b * rows * cols, 5, 1.0);
    let xt = ctx.upload(&x, &[b, rows, cols], DType::F32).unwrap();
    let y = ctx
        .run(|rec| transpose::transpose_padded(rec, &xt, 4))
        .unwrap();
    assert_eq!(y.shape(), [b, cols, 20]);
    let got = ctx.download(&y).unwrap();
    for bi in 0..b {
        for c in 0..cols {
            for rr in 0..20 {
                let want = if rr < rows {
                    x[bi * rows * cols + rr * cols + c]
                } else {
                    0.0
                };
                assert_eq!(got[bi * cols * 20 + c * 20 + rr], want, "b{bi} c{c} r{rr}");
            }
        }
    }
}

#[test]
fn gpu_argmax_equals_the_cpu_greedy_sampler() {
    use chunkwise::model::sampling::Sampler;
    let ctx = ctx();
    for dtype in dtypes() {
        for &(rows, v) in &[(1usize, 1usize), (3, 256), (16, 1000), (2, 50_257)] {
            let mut x = stored(&rand(rows * v, v as u64, 4.0), dtype);
            if v > 10 {
                // Ties (the first wins), NaN (never wins) and an all -inf row.
                x[5] = 9.0;
                x[7] = 9.0;
                x[3] = f32::NAN;
                if rows > 1 {
                    x[v..2 * v].fill(f32::NEG_INFINITY);
                }
            }
            let xt = ctx.upload(&x, &[rows, v], dtype).unwrap();
            let ids = ctx
                .run(|rec| chunkwise::ops::sample::argmax(rec, &xt))
                .unwrap();
            let got: Vec<u32> = ctx
                .download(&ids)
                .unwrap()
                .iter()
                .map(|&i| i as u32)
                .collect();
            let want: Vec<u32> = x.chunks(v).map(|r| Sampler::greedy().sample(r)).collect();
            assert_eq!(got, want, "{rows}x{v} {dtype:?}");
        }
    }
}
