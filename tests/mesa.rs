//! Mesa: the f64 reference against the golden cases (CPU only), then the GPU kernels against the
//! reference (odd T, head dims 16 … 128, strong and weak forgetting, initial states) and the golden
//! cases through the runner.

mod common;
use std::path::PathBuf;

use chunkwise::model::Checkpoint;
use chunkwise::reference::max_abs;
use chunkwise::reference::mesa::{core, MesaShape, Solve};

use chunkwise::verify::{MesaHost, CG30, CG30_DECODE};

fn golden(name: &str) -> Option<Checkpoint> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/golden/mesa")
        .join(format!("{name}.safetensors"));
    if !p.exists() {
        eprintln!("SKIP: {} is absent", p.display());
        return None;
    }
    Some(Checkpoint::open(&p).unwrap())
}

fn f32s(ck: &Checkpoint, n: &str) -> Vec<f32> {
    ck.f32(n, None).unwrap().0
}

#[test]
fn cpu_reference_reproduces_the_golden_core_cases() {
    for (name, init) in [
        ("mesa_a_core_b1_t37_h2_d16", false),
        ("mesa_b_core_b2_t128_h4_d32", false),
        ("mesa_f_core_b1_t50_h2_d16_init", true),
    ] {
        let Some(ck) = golden(name) else { return };
        let qs = ck.shape("q").unwrap().to_vec();
        let s = MesaShape {
            b: qs[0],
            t: qs[1],
            h: qs[2],
            d: qs[3],
        };
        let (q, k, v, g, beta, lamb) = (
            f32s(&ck, "q"),
            f32s(&ck, "k"),
            f32s(&ck, "v"),
            f32s(&ck, "g"),
            f32s(&ck, "beta"),
            f32s(&ck, "lamb"),
        );
        let (kk0, kv0) = if init {
            (f32s(&ck, "h_kk_init"), f32s(&ck, "h_kv_init"))
        } else {
            (vec![], vec![])
        };
        let init = init.then_some((&kk0[..], &kv0[..]));
        let (o, hkk, hkv) = core(s, &q, &k, &v, &g, &beta, &lamb, init, CG30, None);
        let want = ck.f64("o_cg30_f64").unwrap().0;
        let got: Vec<f32> = o.iter().map(|&x| x as f32).collect();
        assert!(
            max_abs(&got, &want) < 1e-6,
            "{name} o_cg30: {}",
            max_abs(&got, &want)
        );
        let (o4, _, _) = core(
            s,
            &q,
            &k,
            &v,
            &g,
            &beta,
            &lamb,
            init,
            Solve::Cg {
                iters: 4,
                jacobi: false,
            },
            None,
        );
        let got4: Vec<f32> = o4.iter().map(|&x| x as f32).collect();
        assert!(
            max_abs(&got4, &ck.f64("o_cg4_f64").unwrap().0) < 1e-6,
            "{name} o_cg4"
        );
        let (oe, _, _) = core(s, &q, &k, &v, &g, &beta, &lamb, init, Solve::Exact, None);
        let gote: Vec<f32> = oe.iter().map(|&x| x as f32).collect();
        assert!(
            max_abs(&gote, &ck.f64("o_exact_f64").unwrap().0) < 1e-6,
            "{name} o_exact"
        );
        for (got, n) in [(hkk, "h_kk_final"), (hkv, "h_kv_final")] {
            let g32: Vec<f32> = got.iter().map(|&x| x as f32).collect();
            assert!(max_abs(&g32, &ck.f64(n).unwrap().0) < 1e-5, "{name} {n}");
        }
    }
}

#[test]
fn cpu_reference_reproduces_the_golden_decode_case() {
    let Some(ck) = golden("mesa_g_decode_core_b1_p21_t12_h2_d16") else {
        return;
    };
    let qs = ck.shape("q").unwrap().to_vec();
    let s = MesaShape {
        b: qs[0],
        t: qs[1],
        h: qs[2],
        d: qs[3],
    };
    let p = 21;
    let (q, k, v, g, beta, lamb) = (
        f32s(&ck, "q"),
        f32s(&ck, "k"),
        f32s(&ck, "v"),
        f32s(&ck, "g"),
        f32s(&ck, "beta"),
        f32s(&ck, "lamb"),
    );
    let (o, _, _) = core(
        s,
        &q,
        &k,
        &v,
        &g,
        &beta,
        &lamb,
        None,
        CG30,
        Some((p, CG30_DECODE)),
    );
    let (want, ws) = ck.f64("o_decode_cg30_f64").unwrap();
    let dec: Vec<f32> = o[p * s.h * s.d..].iter().map(|&x| x as f32).collect();
    assert_eq!(dec.len(), want.len(), "{ws:?}");
    assert!(
        max_abs(&dec, &want) < 1e-6,
        "decode {}",
        max_abs(&dec, &want)
    );
}

use chunkwise::ops::mesa::{self as mops, MesaState};
use chunkwise::{Context, DType, Error};
use common::*;

/// `MesaHost::random` in f32.
fn inputs(s: MesaShape, seed: u64, gate: (f32, f32)) -> MesaHost {
    MesaHost::random(s, seed, gate, DType::F32)
}

fn run_core_on(
    ctx: &'static Context,
    inp: &MesaHost,
    init: Option<(&[f32], &[f32])>,
    iters: usize,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let MesaShape { b, h, d, .. } = inp.s;
    let st = match init {
        Some((kk, kv)) => MesaState::from_host(ctx, kk, kv, b, h, d).unwrap(),
        None => MesaState::zeros(ctx, b, h, d).unwrap(),
    };
    let up = inp.upload(ctx, DType::F32).unwrap();
    let o = ctx
        .run(|rec| mops::core(rec, &up.inputs(), &st, iters))
        .unwrap();
    (
        ctx.download(&o).unwrap(),
        ctx.download(&st.kk).unwrap(),
        ctx.download(&st.kv).unwrap(),
    )
}

#[test]
fn states_registry_cases() {
    // The final states after the chunk-start states' walk: odd T, head dims 16 … 128, strong and
    // weak forgetting, initial states, f32 and f16, on every schedule.
    check_family("mesa_states");
}

#[test]
fn cg_registry_cases() {
    check_family("mesa_cg");
}

#[test]
fn decode_registry_cases() {
    check_family("mesa_decode");
}

#[test]
fn gpu_core_runs_exactly_n_iterations() {
    // 4 iterations differ from 30 by far more than the bound: the count given is the count run.
    let s = MesaShape {
        b: 2,
        t: 40,
        h: 2,
        d: 32,
    };
    let inp = inputs(s, 77, (0.85, 0.95));
    let (kk, kv) = chunkwise::verify::random_states(s.b, s.h, s.d, 5);
    assert_core_matches_cg(&inp, Some((&kk, &kv)), 4);
}

#[test]
fn gpu_core_states_stay_exact_over_thousands_of_chunks() {
    // One head of a tiny dim, so that the binding limit would allow all 4000 chunks in one
    // segment: the states kernels walk a segment's chunks in one invocation, and on CPU drivers
    // a walk past ~65k loop iterations stops silently. The final states expose a cut walk.
    let s = MesaShape {
        b: 1,
        t: 16 * 4000 - 5,
        h: 1,
        d: 4,
    };
    let inp = inputs(s, 91, (0.95, 0.999));
    let (want, wkk, wkv) = inp.reference(
        None,
        Solve::Cg {
            iters: 3,
            jacobi: false,
        },
        None,
    );
    // Both schedules: the GPU kernels' scan walks a segment of chunks per invocation too.
    for (ctx, what) in [(ctx(), "default"), (ctx_gpu_schedules(), "gpu")] {
        let (o, kk, kv) = run_core_on(ctx, &inp, None, 3);
        assert_close(
            &o,
            &want,
            DType::F32,
            &format!("mesa core over 4000 chunks, {what}"),
        );
        assert_close(
            &kk,
            &wkk,
            DType::F32,
            &format!("final h_kk, 4000 chunks, {what}"),
        );
        assert_close(
            &kv,
            &wkv,
            DType::F32,
            &format!("final h_kv, 4000 chunks, {what}"),
        );
        // No dispatch walks the whole sequence: the chunks run as segments of at most 1024
        // (4000 chunks of 16 tokens on the CPU schedule, 2000 of 32 on the GPU one), each a
        // states dispatch (two on the GPU schedule: updates and scan) and a CG dispatch.
        let up = inp.upload(ctx, DType::F32).unwrap();
        let st = MesaState::zeros(ctx, 1, 1, 4).unwrap();
        let mut rec = ctx.record();
        mops::core(&mut rec, &up.inputs(), &st, 3).unwrap();
        let (per_segment, chunk) = if what == "gpu" { (3, 32) } else { (2, 16) };
        let segments = s.t.div_ceil(chunk).div_ceil(1024);
        assert_eq!(rec.stats().dispatches, segments * per_segment, "{what}");
    }
}

/// The GPU core op equals the reference CG with `iters` iterations (x0 = 0, as upstream).
fn assert_core_matches_cg(inp: &MesaHost, init: Option<(&[f32], &[f32])>, iters: usize) {
    assert_core_matches_cg_on(ctx(), inp, init, iters);
}

fn assert_core_matches_cg_on(
    ctx: &'static Context,
    inp: &MesaHost,
    init: Option<(&[f32], &[f32])>,
    iters: usize,
) {
    let (o, _, _) = run_core_on(ctx, inp, init, iters);
    let (want, _, _) = inp.reference(
        init,
        Solve::Cg {
            iters,
            jacobi: false,
        },
        None,
    );
    assert_close(
        &o,
        &want,
        DType::F32,
        &format!("mesa core, {iters} iterations"),
    );
}

#[test]
fn gpu_core_at_the_iteration_counts_where_the_cpu_schedule_hands_over() {
    // CPU adapters (llvmpipe stops loops after ~65k iterations, silently) run each CG kernel only
    // while its loops fit a budget, at D = 64: mesa_cg_sg (8-lane subgroups) up to 363 CG
    // iterations, mesa_cg_lanes up to 63, then mesa_cg up to 123, then a LimitExceeded error.
    // Both ends of each, same answers; GPUs run everything with mesa_cg.
    let s = MesaShape {
        b: 1,
        t: 37,
        h: 2,
        d: 64,
    };
    let inp = inputs(s, 91, (0.9, 0.99));
    for iters in [63usize, 363] {
        assert_core_matches_cg(&inp, None, iters);
    }
    for iters in [63usize, 64, 123] {
        assert_core_matches_cg_on(ctx_without_subgroups(), &inp, None, iters);
    }
    for (c, iters) in [(ctx(), 364usize), (ctx_without_subgroups(), 124)] {
        if c.is_cpu_adapter() {
            let e = core_error(c, &inp, iters);
            assert!(
                matches!(e, Error::LimitExceeded { limit_name: "CG iterations on this CPU adapter", requested, .. } if requested == iters as u64),
                "{e}"
            );
        } else {
            assert_core_matches_cg_on(c, &inp, None, iters);
        }
    }
}

fn core_error(ctx: &'static Context, inp: &MesaHost, iters: usize) -> Error {
    let MesaShape { b, h, d, .. } = inp.s;
    let st = MesaState::zeros(ctx, b, h, d).unwrap();
    let up = inp.upload(ctx, DType::F32).unwrap();
    ctx.run(|rec| mops::core(rec, &up.inputs(), &st, iters))
        .unwrap_err()
}

#[test]
fn gpu_decode_at_the_iteration_limit_of_cpu_adapters() {
    // CPU adapters admit each decode kernel while its loops fit llvmpipe's budget: at D = 64,
    // mesa_decode_lanes (CPU schedules) up to 475 CG iterations, mesa_decode (the GPU kernel)
    // up to 187; one more is a named error there.
    for (ctx, iters) in [(ctx(), 475), (ctx_gpu_schedules(), 187)] {
        let s = MesaShape {
            b: 1,
            t: 1,
            h: 1,
            d: 64,
        };
        let inp = inputs(s, 17, (0.9, 0.99));
        let up = inp.upload(ctx, DType::F32).unwrap();
        let inputs = up.inputs();
        let st = MesaState::zeros(ctx, 1, 1, 64).unwrap();
        let o = ctx
            .run(|rec| mops::decode_step(rec, &inputs, &st, iters))
            .unwrap();
        let solve = Solve::Cg {
            iters,
            jacobi: true,
        };
        let (want, _, _) = inp.reference(None, CG30, Some((0, solve)));
        assert_close(
            &ctx.download(&o).unwrap(),
            &want,
            DType::F32,
            &format!("mesa decode, {iters} iterations"),
        );
        let st = MesaState::zeros(ctx, 1, 1, 64).unwrap();
        let r = ctx.run(|rec| mops::decode_step(rec, &inputs, &st, iters + 1));
        if ctx.is_cpu_adapter() {
            let e = r.unwrap_err();
            assert!(
                matches!(e, Error::LimitExceeded { requested, .. } if requested == iters as u64 + 1),
                "{e}"
            );
        } else {
            r.unwrap();
        }
    }
}

#[test]
fn gpu_decode_steps_match_reference_for_a_batch() {
    // mesa_decode_lanes (CPU schedules: one invocation per batch·head, 8 per workgroup; here 6
    // and 10 of them, D = 32 and 60) and mesa_decode (the GPU kernel).
    let shape = |b, h, d| MesaShape { b, t: 25, h, d };
    for (ctx, s) in [
        (ctx(), shape(3, 2, 32)),
        (ctx(), shape(5, 2, 60)),
        (ctx_gpu_schedules(), shape(3, 2, 32)),
    ] {
        decode_steps_match_reference(ctx, s);
    }
}

fn decode_steps_match_reference(ctx: &'static Context, s: MesaShape) {
    let p = 17;
    let inp = inputs(s, 91, (0.85, 0.95));
    let (want, _, _) = inp.reference(None, CG30, Some((p, CG30_DECODE)));
    let MesaShape { b, t, h, d } = s;
    // Prefill the first p tokens with the parallel path, then one token at a time.
    let cols = |x: &[f32], w: usize, lo: usize, hi: usize| -> Vec<f32> {
        (0..b)
            .flat_map(|bi| x[(bi * t + lo) * w..(bi * t + hi) * w].to_vec())
            .collect()
    };
    let (hd, gd) = (h * d, h);
    let up = |x: Vec<f32>, sh: &[usize]| ctx.upload(&x, sh, DType::F32).unwrap();
    let st = MesaState::zeros(ctx, b, h, d).unwrap();
    let lamb = up(inp.lamb.clone(), &[h, d]);
    ctx.run(|rec| {
        let sh = [b, p, h, d];
        let (q, k, v) = (
            up(cols(&inp.q, hd, 0, p), &sh),
            up(cols(&inp.k, hd, 0, p), &sh),
            up(cols(&inp.v, hd, 0, p), &sh),
        );
        let (g, be) = (
            up(cols(&inp.g, gd, 0, p), &[b, p, h]),
            up(cols(&inp.beta, gd, 0, p), &[b, p, h]),
        );
        mops::core(
            rec,
            &mops::MesaInputs {
                q: &q,
                k: &k,
                v: &v,
                g: &g,
                beta: &be,
                lamb: &lamb,
            },
            &st,
            30,
        )
    })
    .unwrap();
    for i in p..t {
        let sh = [b, 1, h, d];
        let (q, k, v) = (
            up(cols(&inp.q, hd, i, i + 1), &sh),
            up(cols(&inp.k, hd, i, i + 1), &sh),
            up(cols(&inp.v, hd, i, i + 1), &sh),
        );
        let (g, be) = (
            up(cols(&inp.g, gd, i, i + 1), &[b, 1, h]),
            up(cols(&inp.beta, gd, i, i + 1), &[b, 1, h]),
        );
        let o = ctx
            .run(|rec| {
                mops::decode_step(
                    rec,
                    &mops::MesaInputs {
                        q: &q,
                        k: &k,
                        v: &v,
                        g: &g,
                        beta: &be,
                        lamb: &lamb,
                    },
                    &st,
                    30,
                )
            })
            .unwrap();
        let w: Vec<f64> = (0..b)
            .flat_map(|bi| want[(bi * t + i) * hd..(bi * t + i + 1) * hd].to_vec())
            .collect();
        assert_close(
            &ctx.download(&o).unwrap(),
            &w,
            DType::F32,
            &format!("decode step {i}"),
        );
    }
}

#[test]
fn bad_mesa_inputs_are_named_errors() {
    let ctx = ctx();
    let (b, t, h, d) = (1usize, 5usize, 2usize, 8usize);
    let x = ctx
        .upload(&vec![0.1; b * t * h * d], &[b, t, h, d], DType::F32)
        .unwrap();
    let gt = ctx
        .upload(&vec![-0.1; b * t * h], &[b, t, h], DType::F32)
        .unwrap();
    let lamb = ctx.upload(&vec![1.0; h * d], &[h, d], DType::F32).unwrap();
    let st = MesaState::zeros(ctx, b, h, d).unwrap();
    let e = ctx
        .run(|rec| {
            mops::core(
                rec,
                &mops::MesaInputs {
                    q: &x,
                    k: &x,
                    v: &x,
                    g: &gt,
                    beta: &gt,
                    lamb: &lamb,
                },
                &st,
                5000,
            )
        })
        .err()
        .unwrap();
    assert!(e.to_string().contains("5000 CG iterations"), "{e}");
    let e = ctx
        .run(|rec| {
            mops::core(
                rec,
                &mops::MesaInputs {
                    q: &x,
                    k: &x,
                    v: &x,
                    g: &gt,
                    beta: &gt,
                    lamb: &x,
                },
                &st,
                30,
            )
        })
        .err()
        .unwrap();
    assert!(e.to_string().contains("lamb must be [2, 8]"), "{e}");
    let e = ctx
        .run(|rec| {
            mops::decode_step(
                rec,
                &mops::MesaInputs {
                    q: &x,
                    k: &x,
                    v: &x,
                    g: &gt,
                    beta: &gt,
                    lamb: &lamb,
                },
                &st,
                30,
            )
        })
        .err()
        .unwrap();
    assert!(e.to_string().contains("one token per sequence"), "{e}");
}

fn random_layer(hidden: usize, heads: usize, gate: bool) -> chunkwise::layers::MesaLayer {
    random_layer_on(ctx(), hidden, heads, gate)
}

fn random_layer_on(
    c: &Context,
    hidden: usize,
    heads: usize,
    gate: bool,
) -> chunkwise::layers::MesaLayer {
    use chunkwise::layers::{MesaConfig, MesaLayer};
    let hd = hidden;
    let d = hd / heads;
    let s = 1.0 / (hidden as f32).sqrt();
    let mut t = vec![
        ("q_proj.weight", vec![hd, hidden], rand(hd * hidden, 1, s)),
        ("k_proj.weight", vec![hd, hidden], rand(hd * hidden, 2, s)),
        ("v_proj.weight", vec![hd, hidden], rand(hd * hidden, 3, s)),
        (
            "a_proj.weight",
            vec![heads, hidden],
            rand(heads * hidden, 4, s),
        ),
        ("a_proj.bias", vec![heads], vec![2.0; heads]),
        (
            "b_proj.weight",
            vec![heads, hidden],
            rand(heads * hidden, 5, s),
        ),
        ("b_proj.bias", vec![heads], vec![0.0; heads]),
        ("lambda_params", vec![hd], rand(hd, 6, 0.5)),
        ("q_conv1d.weight", vec![hd, 1, 4], rand(hd * 4, 7, 0.5)),
        ("k_conv1d.weight", vec![hd, 1, 4], rand(hd * 4, 8, 0.5)),
        (
            "o_norm.weight",
            vec![d],
            rand(d, 9, 0.2).iter().map(|v| 1.0 + v).collect(),
        ),
        ("o_proj.weight", vec![hidden, hd], rand(hidden * hd, 10, s)),
    ];
    if gate {
        t.push(("g_proj.weight", vec![hd, hidden], rand(hd * hidden, 11, s)));
    }
    let cfg = MesaConfig {
        hidden,
        heads,
        head_dim: d,
        norm_eps: 1e-5,
        cg_iters_prefill: 30,
        cg_iters_decode: 30,
        solver: Default::default(),
    };
    MesaLayer::load(c, cfg, &checkpoint(t), "", DType::F32).unwrap()
}

#[test]
fn fused_decode_steps_match_forward_at_odd_head_dims_on_every_schedule() {
    // Five dispatches per step (the fused projection, conv + norms + gates, the solve, the output
    // norm and gate, the output projection), gated and not, head dims 30 and 60, batch 2 and 1.
    for c in contexts() {
        for (hidden, heads, gate, b) in [(90usize, 3usize, true, 2usize), (60, 1, false, 1)] {
            let (t, p) = (14usize, 5usize);
            let layer = random_layer_on(c, hidden, heads, gate);
            let x = rand(b * t * hidden, 17, 1.0);
            let full = c
                .download(
                    &c.run(|rec| layer.forward(rec, &c.upload(&x, &[b, t, hidden], DType::F32)?))
                        .unwrap(),
                )
                .unwrap();
            let want = |lo, hi| -> Vec<f64> {
                token_rows(&full, b, t, hidden, lo, hi)
                    .into_iter()
                    .map(f64::from)
                    .collect()
            };
            let what = format!("{}: hidden {hidden}, gate {gate}", c.schedule_summary());
            let pt = c
                .upload(
                    &token_rows(&x, b, t, hidden, 0, p),
                    &[b, p, hidden],
                    DType::F32,
                )
                .unwrap();
            let (yp, mut cache) = c.run(|rec| layer.prefill(rec, &pt)).unwrap();
            assert_close(&c.download(&yp).unwrap(), &want(0, p), DType::F32, &what);
            for i in p..t {
                let xi = c
                    .upload(
                        &token_rows(&x, b, t, hidden, i, i + 1),
                        &[b, 1, hidden],
                        DType::F32,
                    )
                    .unwrap();
                let mut rec = c.record();
                let y = layer.step(&mut rec, &mut cache, &xi).unwrap();
                assert_eq!(rec.stats().dispatches, 5, "{what}: dispatches per step");
                rec.submit().unwrap();
                // Decode starts CG from the Jacobi guess and the parallel path from zero: they
                // agree to CG accuracy (tests/model.rs), not to rounding.
                let e = chunkwise::reference::rel_rms(&c.download(&y).unwrap(), &want(i, i + 1));
                assert!(e < 2e-3, "{what}: step {i}: rel_rms {e:.2e}");
            }
        }
    }
}

#[test]
fn layer_decode_with_a_batch_equals_each_sequence_alone() {
    // The reference layer decodes batch 1 only; ours must give each sequence of a batch the
    // outputs it gets alone. Prefill outputs must equal the forward's.
    let ctx = ctx();
    let (b, t, p, hidden) = (2usize, 20usize, 9usize, 64usize);
    for gate in [false, true] {
        let layer = random_layer(hidden, 2, gate);
        let x = rand(b * t * hidden, 42, 1.0);
        let run = |xs: &[f32], bb: usize| -> (Vec<f32>, Vec<f32>) {
            let rows = |lo: usize, hi: usize| -> Vec<f32> {
                (0..bb)
                    .flat_map(|bi| xs[(bi * t + lo) * hidden..(bi * t + hi) * hidden].to_vec())
                    .collect()
            };
            let full = ctx.upload(xs, &[bb, t, hidden], DType::F32).unwrap();
            let yf = ctx
                .download(&ctx.run(|rec| layer.forward(rec, &full)).unwrap())
                .unwrap();
            let pt = ctx
                .upload(&rows(0, p), &[bb, p, hidden], DType::F32)
                .unwrap();
            let (yp, mut cache) = ctx.run(|rec| layer.prefill(rec, &pt)).unwrap();
            let yp = ctx.download(&yp).unwrap();
            let want: Vec<f64> = (0..bb)
                .flat_map(|bi| yf[bi * t * hidden..(bi * t + p) * hidden].to_vec())
                .map(f64::from)
                .collect();
            assert_close(&yp, &want, DType::F32, "mesa prefill vs forward");
            let mut steps = Vec::new();
            for i in p..t {
                let xi = ctx
                    .upload(&rows(i, i + 1), &[bb, 1, hidden], DType::F32)
                    .unwrap();
                steps.push(
                    ctx.download(&ctx.run(|rec| layer.step(rec, &mut cache, &xi)).unwrap())
                        .unwrap(),
                );
            }
            (yf, steps.concat())
        };
        let (_, batched) = run(&x, b);
        for bi in 0..b {
            let (_, alone) = run(&x[bi * t * hidden..(bi + 1) * t * hidden], 1);
            let mine: Vec<f32> = batched
                .chunks(hidden)
                .skip(bi)
                .step_by(b)
                .flatten()
                .copied()
                .collect();
            assert_close(
                &mine,
                &alone.iter().map(|&v| v as f64).collect::<Vec<_>>(),
                DType::F32,
                &format!("sequence {bi} of the batch, gate {gate}"),
            );
        }
    }
}

#[test]
fn every_gpu_chunk_plan_the_test_adapter_holds_matches_the_reference() {
    // The GPU schedule picks the chunk length and whether S_kk stays in workgroup memory from the
    // device's limit (ops::mesa::cg_plans). Contexts with less workgroup memory take the smaller
    // plans; each must give the reference's answer, under both CG rules (the paper's against
    // the exact solve).
    use chunkwise::ops::mesa::{cg_plans, core_with, gpu_cg_plan, Solver};
    let full = ctx().limits().max_compute_workgroup_storage_size;
    let mut seen = std::collections::BTreeSet::new();
    for kib in [16u32, 20, 28, 32, 48, 64] {
        let bytes = (kib * 1024).min(full);
        let c = ctx_with_limits(|l| wgpu::Limits {
            max_compute_workgroup_storage_size: bytes,
            ..l
        });
        c.set_schedule(chunkwise::Schedule::Gpu);
        for d in [16usize, 60, 64, 128] {
            let plan = gpu_cg_plan(&c, d, DType::F32).unwrap();
            assert!(cg_plans(d).contains(&plan));
            if !seen.insert((d, plan)) {
                continue;
            }
            let s = MesaShape {
                b: 1,
                t: 3 * plan.0 + 5,
                h: 2,
                d,
            };
            let inp = inputs(s, 500 + d as u64, (0.85, 0.95));
            let up = inp.upload(&c, DType::F32).unwrap();
            for solver in [Solver::Reference, Solver::Paper { tol: 1e-6 }] {
                let st = MesaState::zeros(&c, s.b, s.h, s.d).unwrap();
                let solved = c
                    .run(|rec| core_with(rec, &up.inputs(), &st, 30, solver))
                    .unwrap();
                let want = match solver {
                    Solver::Reference => inp.reference(None, CG30, None).0,
                    Solver::Paper { .. } => inp.reference(None, Solve::Exact, None).0,
                };
                assert_close(
                    &c.download(&solved.o).unwrap(),
                    &want,
                    DType::F32,
                    &format!("d {d}, plan {plan:?}, {solver:?}, {bytes} B"),
                );
            }
        }
    }
    // The adapter under test takes at least the two chunk lengths WebGPU's minimum and its own
    // limit allow, with and without S_kk kept.
    assert!(seen.len() >= 6, "{seen:?}");
}

#[test]
fn the_paper_rule_stops_early_and_reports_its_steps() {
    use chunkwise::ops::mesa::{core_with, decode_step_with, IterationStats, Solver};
    let s = MesaShape {
        b: 2,
        t: 40,
        h: 2,
        d: 32,
    };
    let inp = inputs(s, 12, (0.5, 0.9));
    for c in contexts() {
        let up = inp.upload(c, DType::F32).unwrap();
        let run = |solver, iters| {
            let st = MesaState::zeros(c, s.b, s.h, s.d).unwrap();
            let solved = c
                .run(|rec| core_with(rec, &up.inputs(), &st, iters, solver))
                .unwrap();
            IterationStats::read(c, &solved.iterations).unwrap()
        };
        let reference = run(Solver::Reference, 30);
        assert_eq!((reference.max, reference.mean), (30, 30.0));
        let paper = run(Solver::Paper { tol: 1e-4 }, 200);
        assert!(paper.max < 30 && paper.mean > 1.0, "{paper:?}");
        // A looser tolerance stops sooner; the cap holds.
        let loose = run(Solver::Paper { tol: 1e-1 }, 200);
        assert!(loose.mean < paper.mean, "{loose:?} vs {paper:?}");
        assert_eq!(run(Solver::Paper { tol: 0.0 }, 7).max, 7);
        // Decode reports a count per (batch, head).
        let one = MesaHost::random(MesaShape { t: 1, ..s }, 3, (0.5, 0.9), DType::F32);
        let u1 = one.upload(c, DType::F32).unwrap();
        let st = MesaState::zeros(c, s.b, s.h, s.d).unwrap();
        let d = c
            .run(|rec| decode_step_with(rec, &u1.inputs(), &st, 50, Solver::Paper { tol: 1e-4 }))
            .unwrap();
        assert_eq!(d.iterations.shape(), [s.b, 1, s.h]);
        let steps = IterationStats::read(c, &d.iterations).unwrap();
        assert!(steps.max >= 1 && steps.max < 50, "{steps:?}");
    }
}

#[test]
fn the_paper_rule_matches_the_exact_golden_solves() {
    // Every Mesa golden case with an exact-solve output, with ε = 1e-6: within 1e-4 of the
    // output scale, and fewer steps than the cap on these well-conditioned cases.
    use chunkwise::golden::{run_case_with, RunOptions};
    use chunkwise::ops::mesa::Solver;
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/golden/mesa");
    if !dir.is_dir() {
        eprintln!("SKIP: {} is absent", dir.display());
        return;
    }
    let mut ran = 0;
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    cases.sort();
    for case in cases {
        let ck = Checkpoint::open(&case.with_extension("safetensors")).unwrap();
        if !ck.names().any(|n| n.ends_with("_exact_f64")) {
            continue;
        }
        let opts = RunOptions {
            solver: Some(Solver::Paper { tol: 1e-6 }),
        };
        let run = run_case_with(ctx(), &case, opts).unwrap();
        let exact = run
            .checks
            .iter()
            .find(|c| c.name.ends_with("_exact_f64"))
            .unwrap_or_else(|| panic!("{}: no exact output checked", case.display()));
        for c in &run.checks {
            assert!(c.ok, "{}: {c}", case.display());
        }
        let (_, steps) = run.cg.expect("steps reported");
        assert!(steps.max < 30, "{}: {steps:?}", case.display());
        eprintln!("{}: {exact}, steps {steps:?}", case.display());
        ran += 1;
    }
    assert!(ran >= 5, "only {ran} cases with an exact solve");
}

#[test]
fn a_forced_cg_plan_that_does_not_exist_or_fit_is_a_named_error() {
    use chunkwise::ops::mesa::core_with_plan;
    let s = MesaShape {
        b: 1,
        t: 20,
        h: 1,
        d: 128,
    };
    let inp = inputs(s, 3, (0.85, 0.95));
    let c = ctx();
    let up = inp.upload(c, DType::F32).unwrap();
    let st = MesaState::zeros(c, 1, 1, 128).unwrap();
    let solver = mops::Solver::Reference;
    // C·D = 4096 > 2048: no such plan.
    let e = c
        .run(|rec| core_with_plan(rec, &up.inputs(), &st, 30, solver, (32, false)))
        .map(|_| ())
        .unwrap_err();
    assert!(
        matches!(e, Error::InvalidArgument { .. }) && e.to_string().contains("c32"),
        "{e}"
    );
    // S_kk of D = 128 kept in workgroup memory: 64 KiB plus the tiles, over this device's limit.
    let e = c
        .run(|rec| core_with_plan(rec, &up.inputs(), &st, 30, solver, (16, true)))
        .map(|_| ())
        .unwrap_err();
    assert!(
        matches!(e, Error::LimitExceeded { .. })
            && e.to_string().contains("max_compute_workgroup_storage_size"),
        "{e}"
    );
}

#[test]
fn a_prompt_in_pieces_gives_the_outputs_and_cache_of_one_prefill_on_every_schedule() {
    // The parallel path from a cache that already holds tokens: a prefill then `extend`s of 1, 2
    // and 11 tokens (blocks shorter than the conv's window of 4 read part of it, and leave part
    // of the new cache, from the old cache); and a binding limit under the whole projection, so
    // the layer runs groups of sequences (limit 1) or blocks of one sequence's tokens (limit 2).
    // Chunk boundaries move, so outputs agree to CG accuracy, not to the bit.
    // Heads of 15: the states of one sequence (and one chunk's start states) fit the lowered
    // limits below.
    let (b, t, hidden, heads) = (3usize, 23usize, 45usize, 3usize);
    let x = rand(b * t * hidden, 31, 1.0);
    for c in contexts() {
        let layer = random_layer_on(c, hidden, heads, true);
        let what = c.schedule_summary();
        let up = |lo, hi| {
            c.upload(
                &token_rows(&x, b, t, hidden, lo, hi),
                &[b, hi - lo, hidden],
                DType::F32,
            )
            .unwrap()
        };
        let (y, whole) = c.run(|rec| layer.prefill(rec, &up(0, t))).unwrap();
        let y = c.download(&y).unwrap();
        let read = |cache: &chunkwise::layers::MesaCache| -> Vec<f32> {
            [&cache.state().kk, &cache.state().kv, cache.conv_cache()]
                .into_iter()
                .flat_map(|s| c.download(s).unwrap())
                .collect()
        };
        let want_cache: Vec<f64> = read(&whole).into_iter().map(f64::from).collect();
        let (y0, mut cache) = c.run(|rec| layer.prefill(rec, &up(0, 9))).unwrap();
        let mut rows = vec![c.download(&y0).unwrap()];
        for (lo, hi) in [(9, 10), (10, 12), (12, t)] {
            let yi = c
                .run(|rec| layer.extend(rec, &mut cache, &up(lo, hi)))
                .unwrap();
            rows.push(c.download(&yi).unwrap());
        }
        assert_eq!(cache.position(), t, "{what}");
        // Pieces' outputs `[b, n, hidden]` back in the order of one `[b, t, hidden]`.
        let joined = |rows: &[Vec<f32>], lens: &[usize]| -> Vec<f32> {
            (0..b)
                .flat_map(|bi| {
                    rows.iter()
                        .zip(lens)
                        .flat_map(|(r, n)| r[bi * n * hidden..(bi + 1) * n * hidden].to_vec())
                        .collect::<Vec<_>>()
                })
                .collect()
        };
        let got = joined(&rows, &[9, 1, 2, t - 12]);
        let want: Vec<f64> = y.iter().copied().map(f64::from).collect();
        assert_close(&got, &want, DType::F32, &format!("{what}: extend outputs"));
        assert_close(
            &read(&cache),
            &want_cache,
            DType::F32,
            &format!("{what}: extend cache"),
        );
        let mut rec = c.record();
        layer.forward(&mut rec, &up(0, t)).unwrap();
        let one_piece = rec.stats().dispatches;

        for (limit_rows, label) in [(t, "sequence groups"), (10, "token blocks")] {
            let small = limited_like(c, limit_rows, hidden, heads);
            let layer = random_layer_on(&small, hidden, heads, true);
            let xs = small.upload(&x, &[b, t, hidden], DType::F32).unwrap();
            let (ys, split) = small.run(|rec| layer.prefill(rec, &xs)).unwrap();
            let what = format!("{what}, {label}");
            assert_close(&small.download(&ys).unwrap(), &want, DType::F32, &what);
            // And in pieces after a cache that holds tokens (their states copied in and out).
            let part = |lo, hi| {
                small
                    .upload(
                        &token_rows(&x, b, t, hidden, lo, hi),
                        &[b, hi - lo, hidden],
                        DType::F32,
                    )
                    .unwrap()
            };
            let (y0, mut cache) = small.run(|rec| layer.prefill(rec, &part(0, 9))).unwrap();
            let y1 = small
                .run(|rec| layer.extend(rec, &mut cache, &part(9, t)))
                .unwrap();
            let rows = [small.download(&y0).unwrap(), small.download(&y1).unwrap()];
            let got = joined(&rows, &[9, t - 9]);
            assert_close(&got, &want, DType::F32, &format!("{what}: extend"));
            let got: Vec<f32> = [&split.state().kk, &split.state().kv, split.conv_cache()]
                .into_iter()
                .flat_map(|s| small.download(s).unwrap())
                .collect();
            assert_close(&got, &want_cache, DType::F32, &format!("{what}: cache"));
            let mut rec = small.record();
            layer.forward(&mut rec, &xs).unwrap();
            let pieces = rec.stats().dispatches;
            assert!(
                pieces > one_piece,
                "{what}: {pieces} dispatches, no more than one piece's {one_piece}"
            );
        }
    }
}

#[test]
fn a_block_norm_folded_into_the_layer_equals_norm_layer_and_residual() {
    // MesaNet's block (`x + layer(RMSNorm(x)·w)`) runs with the norm folded into the input
    // projection and the residual into the output projection: against the three ops in turn,
    // on the parallel path (whole and in token blocks under a lowered limit) and at decode.
    use chunkwise::ops::{elementwise as ew, norm};
    let (b, t, p, hidden, heads) = (2usize, 13usize, 9usize, 45usize, 3usize);
    let x = rand(b * t * hidden, 61, 1.0);
    let w = rand(hidden, 62, 1.0);
    let eps = 1e-6;
    for c in contexts() {
        let what = c.schedule_summary();
        let plain = random_layer_on(c, hidden, heads, true);
        let wt = c.upload(&w, &[hidden], DType::F32).unwrap();
        let block = random_layer_on(c, hidden, heads, true)
            .with_block_norm(wt.clone(), eps)
            .unwrap();
        let up = |lo, hi| {
            c.upload(
                &token_rows(&x, b, t, hidden, lo, hi),
                &[b, hi - lo, hidden],
                DType::F32,
            )
            .unwrap()
        };
        let xs = up(0, p);
        let (want, mut cache) = c
            .run(|rec| {
                let u = norm::rmsnorm(rec, &xs, &wt, eps)?;
                let (y, cache) = plain.prefill(rec, &u)?;
                Ok((ew::add(rec, &xs, &y)?, cache))
            })
            .unwrap();
        let (got, mut folded) = c.run(|rec| block.prefill(rec, &xs)).unwrap();
        let want64: Vec<f64> = f64s(c, &want);
        assert_close(
            &c.download(&got).unwrap(),
            &want64,
            DType::F32,
            &format!("{what}: prefill"),
        );
        for i in p..t {
            let xi = up(i, i + 1);
            let want = c
                .run(|rec| {
                    let u = norm::rmsnorm(rec, &xi, &wt, eps)?;
                    let y = plain.step(rec, &mut cache, &u)?;
                    ew::add(rec, &xi, &y)
                })
                .unwrap();
            let got = c.run(|rec| block.step(rec, &mut folded, &xi)).unwrap();
            let want: Vec<f64> = f64s(c, &want);
            assert_close(
                &c.download(&got).unwrap(),
                &want,
                DType::F32,
                &format!("{what}: step {i}"),
            );
        }
        // In token blocks of 8 (a lowered binding limit), the residual read per block.
        let small = limited_like(c, 8, hidden, heads);
        let block = random_layer_on(&small, hidden, heads, true)
            .with_block_norm(small.upload(&w, &[hidden], DType::F32).unwrap(), eps)
            .unwrap();
        let all = small.upload(&x, &[b, t, hidden], DType::F32).unwrap();
        let got = small.run(|rec| block.forward(rec, &all)).unwrap();
        let whole = c.upload(&x, &[b, t, hidden], DType::F32).unwrap();
        let want = c
            .run(|rec| {
                let u = norm::rmsnorm(rec, &whole, &wt, eps)?;
                let y = plain.forward(rec, &u)?;
                ew::add(rec, &whole, &y)
            })
            .unwrap();
        let want: Vec<f64> = f64s(c, &want);
        assert_close(
            &small.download(&got).unwrap(),
            &want,
            DType::F32,
            &format!("{what}: blocks"),
        );
    }
}

#[test]
fn bad_layer_inputs_are_named_errors() {
    // An empty block, a cache of other sequences, a block norm of the wrong width.
    let c = ctx();
    let layer = random_layer_on(c, 45, 3, true);
    let x = c
        .upload(&rand(2 * 5 * 45, 3, 1.0), &[2, 5, 45], DType::F32)
        .unwrap();
    let (_, mut cache) = c.run(|rec| layer.prefill(rec, &x)).unwrap();
    if let Ok(empty) = c.alloc(&[2, 0, 45], DType::F32) {
        let e = c.run(|rec| layer.forward(rec, &empty)).unwrap_err();
        assert!(matches!(e, Error::Shape { .. }), "{e}");
        let e = c
            .run(|rec| layer.extend(rec, &mut cache, &empty))
            .unwrap_err();
        assert!(e.to_string().contains("at least one"), "{e}");
    }
    let one = c
        .upload(&rand(5 * 45, 4, 1.0), &[1, 5, 45], DType::F32)
        .unwrap();
    let e = c
        .run(|rec| layer.extend(rec, &mut cache, &one))
        .unwrap_err();
    assert!(e.to_string().contains("the cache holds 2 sequences"), "{e}");
    assert_eq!(
        cache.position(),
        5,
        "a refused block leaves the cache where it was"
    );
    let w = c.upload(&[1.0; 44], &[44], DType::F32).unwrap();
    let e = random_layer_on(c, 45, 3, true)
        .with_block_norm(w, 1e-6)
        .err()
        .unwrap();
    assert!(e.to_string().contains("weight must be [45]"), "{e}");
}

/// A new context on the test adapter with `c`'s schedule and subgroup setting and a binding
/// limit of `rows` rows of a gated Mesa layer's fused projection (4·H·D + 2·H f32 values).
fn limited_like(c: &Context, rows: usize, hidden: usize, heads: usize) -> Context {
    let small = Context::new_blocking().unwrap();
    if !c.cpu_schedules() {
        small.set_schedule(chunkwise::Schedule::Gpu);
    }
    small.set_subgroup_kernels(c.subgroups_enabled());
    small.set_binding_limit(Some((rows * (4 * hidden + 2 * heads) * 4) as u64));
    small
}

/// A tensor's values, widened for `assert_close`.
fn f64s(c: &Context, t: &chunkwise::Tensor) -> Vec<f64> {
    c.download(t).unwrap().into_iter().map(f64::from).collect()
}
