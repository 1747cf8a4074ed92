//! RAT: kernels and layer vs the f64 reference over random shapes (ragged T, L from 1 to 256,
//! groups < heads, batch > 1, f32 and f16), kernel by kernel against the golden `dbg.*`
//! intermediates, and decode against the parallel forward (positions inside the first chunk too).

mod common;
use std::path::PathBuf;

use chunkwise::layers::{RatConfig, RatLayer};
use chunkwise::model::Checkpoint;
use chunkwise::ops::rat::{self as rops, Heads};
use chunkwise::reference::rat::{rat_layer, RatWeights};
use chunkwise::{DType, Error};
use common::*;

struct Case {
    d: usize,
    heads: usize,
    groups: usize,
    chunk: usize,
    in_proj: Vec<f32>,
    gate_bias: Vec<f32>,
    norm: Vec<f32>,
    out_proj: Vec<f32>,
}

impl Case {
    fn new(d: usize, heads: usize, groups: usize, chunk: usize, seed: u64) -> Case {
        let dg = groups * d / heads;
        let s = 1.0 / (d as f32).sqrt();
        Case {
            d,
            heads,
            groups,
            chunk,
            in_proj: rand((3 * d + 2 * dg) * d, seed, 2.0 * s),
            // chrono-style init of the reference code: log U(1, L−1), plus noise
            gate_bias: rand(d, seed + 1, 1.0).iter().map(|v| 1.5 + v).collect(),
            norm: rand(d, seed + 2, 0.5).iter().map(|v| 1.0 + v).collect(),
            out_proj: rand(d * d, seed + 3, s),
        }
    }
    fn checkpoint(&self) -> Checkpoint {
        let dg = self.groups * self.d / self.heads;
        checkpoint(vec![
            (
                "in_proj.weight",
                vec![3 * self.d + 2 * dg, self.d],
                self.in_proj.clone(),
            ),
            ("gate_bias", vec![self.d], self.gate_bias.clone()),
            ("input_norm.weight", vec![self.d], self.norm.clone()),
            (
                "out_proj.weight",
                vec![self.d, self.d],
                self.out_proj.clone(),
            ),
        ])
    }
    fn layer(&self, max_positions: usize, dtype: DType) -> RatLayer {
        RatLayer::load(
            ctx(),
            self.config(max_positions),
            &self.checkpoint(),
            "",
            dtype,
        )
        .unwrap()
    }
    fn config(&self, max_positions: usize) -> RatConfig {
        RatConfig {
            d_model: self.d,
            heads: self.heads,
            groups: self.groups,
            chunk: self.chunk,
            rope_base: 10000.0,
            eps: 1e-6,
            max_positions,
            scale: None,
        }
    }
    fn reference(&self, x: &[f32], b: usize, t: usize) -> Vec<f64> {
        let w = RatWeights {
            in_proj: &self.in_proj,
            gate_bias: &self.gate_bias,
            input_norm: &self.norm,
            out_proj: &self.out_proj,
            heads: self.heads,
            groups: self.groups,
            chunk: self.chunk,
            rope_base: 10000.0,
            eps: 1e-6,
        };
        rat_layer(x, b, t, &w).y
    }
}

#[test]
fn scan_registry_cases() {
    // The fused gate + intra-chunk scan: ragged T, L = 1 and L > T, groups < heads, head dims
    // 16 … 128, f32 and f16, on every schedule.
    check_family("rat_scan");
}

#[test]
fn inter_chunk_attention_registry_cases() {
    check_family("rat_attention");
}

#[test]
fn step_registry_cases() {
    check_family("rat_step");
}

#[test]
fn layer_matches_reference_over_random_shapes() {
    let ctx = ctx();
    // (B, T, D, H, G, L): hand-picked corners (ragged T, L = 1, L > T, L = 256, G < H, head dims
    // 16 … 64), then shapes drawn by a seeded generator.
    let mut shapes = vec![
        (1, 37, 64, 2, 2, 16),
        (2, 50, 64, 4, 2, 8),
        (3, 19, 32, 2, 1, 1),
        (1, 100, 128, 2, 2, 7),
        (2, 40, 64, 1, 1, 64),
        (1, 300, 64, 4, 4, 256),
        (1, 130, 96, 2, 2, 16),
    ];
    let draw = rand(6 * 5, 2024, 1.0);
    for r in draw.chunks(6) {
        let pick = |v: f32, n: usize| ((v * 0.5 + 0.5) * n as f32) as usize % n;
        let h = [1, 2, 4][pick(r[0], 3)];
        let divisors: Vec<usize> = [1, 2, 4].into_iter().filter(|g| h % g == 0).collect();
        let g = divisors[pick(r[1], divisors.len())];
        let dh = [8, 16, 32, 60, 64][pick(r[2], 5)];
        shapes.push((
            1 + pick(r[3], 3),
            1 + pick(r[4], 90),
            h * dh,
            h,
            g,
            1 + pick(r[5], 33),
        ));
    }
    for (i, &(b, t, d, h, g, l)) in shapes.iter().enumerate() {
        let case = Case::new(d, h, g, l, 10 + i as u64);
        let x = rand(b * t * d, 100 + i as u64, 1.0);
        let want = case.reference(&x, b, t);
        for dtype in dtypes() {
            let layer = case.layer(t, dtype);
            let xs = stored(&x, dtype);
            let xt = ctx.upload(&xs, &[b, t, d], dtype).unwrap();
            let y = ctx.run(|rec| layer.forward(rec, &xt)).unwrap();
            // f16 weights and activations round at every stage (5 projections, scan, attention):
            // the layer-level f16 bound applies to the residual branch y − x.
            let got = ctx.download(&y).unwrap();
            if dtype == DType::F32 {
                assert_close(
                    &got,
                    &want,
                    dtype,
                    &format!("rat layer {:?}", (b, t, d, h, g, l)),
                );
            } else {
                let branch_got: Vec<f32> = got.iter().zip(&x).map(|(y, x)| y - x).collect();
                let branch_want: Vec<f64> =
                    want.iter().zip(&x).map(|(y, &x)| y - x as f64).collect();
                let e = chunkwise::reference::rel_rms(&branch_got, &branch_want);
                assert!(
                    e < 2e-2,
                    "rat layer f16 {:?}: branch rel_rms {e:.2e}",
                    (b, t, d, h, g, l)
                );
            }
        }
    }
}

#[test]
fn layer_with_gpu_schedules_and_without_subgroups() {
    // The kernels GPUs and CPU adapters without 8-lane subgroups get, on the test adapter.
    for (i, &(b, t, d, h, g, l)) in [
        (1, 37, 64, 2, 2, 16),
        (2, 50, 64, 4, 2, 8),
        (1, 130, 96, 2, 2, 16),
        (1, 300, 64, 4, 4, 256),
    ]
    .iter()
    .enumerate()
    {
        let case = Case::new(d, h, g, l, 40 + i as u64);
        let x = rand(b * t * d, 140 + i as u64, 1.0);
        let want = case.reference(&x, b, t);
        for ctx in [ctx_gpu_schedules(), ctx_without_subgroups()] {
            let layer =
                RatLayer::load(ctx, case.config(t), &case.checkpoint(), "", DType::F32).unwrap();
            let xt = ctx.upload(&x, &[b, t, d], DType::F32).unwrap();
            let y = ctx.run(|rec| layer.forward(rec, &xt)).unwrap();
            assert_close(
                &ctx.download(&y).unwrap(),
                &want,
                DType::F32,
                &format!("rat layer {:?}", (b, t, d, h, g, l)),
            );
        }
    }
}

#[test]
fn long_sequences_stay_exact() {
    // 2048 chunks: each token's inter-chunk loop is long enough that a head-dim loop the shader
    // compiler left rolled would reach llvmpipe's loop limiter (which stops loops silently). The
    // residual branch y − x is compared, so an error in the attention cannot hide behind x.
    let ctx = ctx();
    let (b, t, d) = (1, 8192, 64);
    let case = Case::new(d, 1, 1, 4, 77);
    let x = rand(b * t * d, 78, 1.0);
    let want: Vec<f64> = case
        .reference(&x, b, t)
        .iter()
        .zip(&x)
        .map(|(y, &x)| y - x as f64)
        .collect();
    // With and without the subgroup kernels (CPU adapters without 8-lane subgroups).
    for ctx in [ctx, ctx_without_subgroups()] {
        let layer =
            RatLayer::load(ctx, case.config(t), &case.checkpoint(), "", DType::F32).unwrap();
        let xt = ctx.upload(&x, &[b, t, d], DType::F32).unwrap();
        let y = ctx
            .download(&ctx.run(|rec| layer.forward(rec, &xt)).unwrap())
            .unwrap();
        let got: Vec<f32> = y.iter().zip(&x).map(|(y, x)| y - x).collect();
        assert_close(
            &got,
            &want,
            DType::F32,
            "rat layer T = 8192, L = 4, branch y - x",
        );
    }
}

#[test]
fn prefill_then_decode_equals_forward_including_the_first_chunk() {
    let (b, t, d) = (2usize, 45usize, 64usize);
    let layer = Case::new(d, 4, 2, 16, 3).layer(t, DType::F32);
    let x = rand(b * t * d, 7, 1.0);
    // Prompts ending mid first chunk, on a chunk boundary, and mid a later chunk.
    for p in [3usize, 16, 21] {
        let cache = assert_decode_matches_forward(&layer, &x, (b, t, d), p);
        assert_eq!(cache.position(), t);
    }
}

#[test]
fn fused_decode_steps_match_forward_on_every_schedule() {
    // The step's six dispatches (fused projection, the recurrent step with rotations and cache
    // writes, the output gate and residual folded into the output projection) on the GPU and
    // CPU schedules, at batch 1 and 16, within the first chunk and after it.
    let (t, d, p) = (40usize, 64usize, 5usize);
    let case = Case::new(d, 4, 2, 8, 31);
    for c in contexts() {
        for b in [1usize, 16] {
            let layer =
                RatLayer::load(c, case.config(t), &case.checkpoint(), "", DType::F32).unwrap();
            let x = rand(b * t * d, 32, 1.0);
            let cache = assert_decode_matches_forward_on(c, &layer, &x, (b, t, d), p);
            assert_eq!(cache.position(), t);
        }
    }
}

#[test]
fn the_cache_is_chunk_size_times_smaller_than_a_kv_cache() {
    let ctx = ctx();
    let case = Case::new(64, 2, 2, 16, 1);
    let layer = case.layer(4096, DType::F32);
    let cache = layer.new_cache(ctx, 1, DType::F32).unwrap();
    let kv_bytes = 2 * 4096 * 64 * 4u64;
    // 256 chunk slots for keys and values, plus the two running states.
    assert_eq!(cache.bytes(), kv_bytes / 16 + 2 * 64 * 4);
}

fn golden(name: &str) -> Option<Checkpoint> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/golden/rat")
        .join(name);
    if !p.exists() {
        eprintln!("SKIP: {} is absent", p.display());
        return None;
    }
    Some(Checkpoint::open(&p).unwrap())
}

#[test]
fn kernels_match_the_golden_intermediates() {
    let ctx = ctx();
    for (name, heads) in [
        ("rat_a_b1_t37_d64_h2_l16.safetensors", 2usize),
        ("rat_b_b2_t128_d128_h4_l16.safetensors", 4),
    ] {
        let Some(ck) = golden(name) else { return };
        let (x, xs) = ck.f32("x", None).unwrap();
        let (b, t, d) = (xs[0], xs[1], xs[2]);
        let hd = Heads::new(d, heads, 2).unwrap();
        let (w_in, _) = ck.f32("in_proj.weight", None).unwrap();
        let (bias, _) = ck.f32("gate_bias", None).unwrap();
        let (nw, _) = ck.f32("input_norm.weight", None).unwrap();
        let up = |v: &[f32], s: &[usize]| ctx.upload(v, s, DType::F32).unwrap();
        let (xt, nt, bt) = (up(&x, &xs), up(&nw, &[d]), up(&bias, &[d]));
        let w = |from: usize, n: usize| up(&w_in[from * d..(from + n) * d], &[n, d]);
        let dg = hd.dg();
        let (sv, sk, z) = ctx
            .run(|rec| {
                use chunkwise::ops::{elementwise as ew, gemm, norm};
                let u = norm::rmsnorm(rec, &xt, &nt, 1e-6)?;
                let zp = gemm::linear(rec, &u, &w(0, d))?;
                let z = ew::sigmoid(rec, &zp)?;
                let v = gemm::linear(rec, &u, &w(d, d))?;
                let g = gemm::linear(rec, &u, &w(2 * d, d))?;
                let k = gemm::linear(rec, &u, &w(3 * d + dg, dg))?;
                let (sv, sk) = rops::scan(rec, &v, &g, &bt, &k, hd, 16)?;
                Ok((sv, sk, z))
            })
            .unwrap();
        for (tensor, want) in [(&z, "dbg.z"), (&sv, "dbg.intra_v"), (&sk, "dbg.intra_k")] {
            let (w64, _) = ck.f64(want).unwrap();
            assert_close(
                &ctx.download(tensor).unwrap(),
                &w64,
                DType::F32,
                &format!("{name} {want}"),
            );
        }
        assert_eq!(b * t * d, sv.numel());
    }
}

#[test]
fn bad_configurations_are_named_errors() {
    let ctx = ctx();
    let case = Case::new(64, 4, 2, 16, 1);
    let ck = case.checkpoint();
    let cfg = RatConfig {
        d_model: 64,
        heads: 4,
        groups: 3,
        chunk: 16,
        rope_base: 1e4,
        eps: 1e-6,
        max_positions: 64,
        scale: None,
    };
    let e = RatLayer::load(ctx, cfg.clone(), &ck, "", DType::F32)
        .err()
        .unwrap();
    assert!(
        e.to_string()
            .contains("ngroups 3 must divide the head count 4"),
        "{e}"
    );
    let e = RatLayer::load(
        ctx,
        RatConfig {
            groups: 2,
            chunk: 0,
            ..cfg.clone()
        },
        &ck,
        "",
        DType::F32,
    )
    .err()
    .unwrap();
    assert!(
        matches!(e, Error::InvalidArgument { .. }) && e.to_string().contains("chunk"),
        "{e}"
    );
    let e = RatLayer::load(
        ctx,
        RatConfig {
            groups: 1,
            ..cfg.clone()
        },
        &ck,
        "",
        DType::F32,
    )
    .err()
    .unwrap();
    assert!(
        e.to_string().contains("in_proj.weight") && e.to_string().contains("expected [224, 64]"),
        "{e}"
    );
    let layer = RatLayer::load(ctx, RatConfig { groups: 2, ..cfg }, &ck, "", DType::F32).unwrap();
    let x = ctx
        .upload(&rand(65 * 64, 1, 1.0), &[1, 65, 64], DType::F32)
        .unwrap();
    let e = ctx.run(|rec| layer.forward(rec, &x)).err().unwrap();
    assert!(e.to_string().contains("exceed max_positions 64"), "{e}");
}

/// On CPU adapters `r` must be the `LimitExceeded` error for `requested` naming `limit`; GPUs
/// compute the case.
fn refused_on_cpu_adapters<T>(
    ctx: &chunkwise::Context,
    r: chunkwise::Result<T>,
    requested: u64,
    limit: &str,
) {
    match r {
        Err(e) if ctx.is_cpu_adapter() => assert!(
            matches!(&e, Error::LimitExceeded { requested: n, .. } if *n == requested)
                && e.to_string().contains(limit),
            "{e}"
        ),
        Err(e) => panic!("a GPU should run this case: {e}"),
        Ok(_) => assert!(
            !ctx.is_cpu_adapter(),
            "a CPU adapter should refuse this case"
        ),
    }
}

#[test]
fn more_chunks_than_a_cpu_adapter_can_walk_are_a_named_error() {
    // llvmpipe's loop limiter would cut the inter-chunk walk past ~28k chunks, so CPU adapters
    // refuse more than 16384 rather than compute them wrong; GPUs run them.
    let ctx = ctx();
    let heads = Heads::new(64, 4, 2).unwrap();
    let t = 16385;
    let z = |cols: usize| ctx.alloc(&[1, t, cols], DType::F32).unwrap();
    let (q, k, v) = (z(heads.dg()), z(64), z(64));
    let r = ctx.run(|rec| rops::inter_chunk_attention(rec, &q, &k, &v, heads, 1, None));
    refused_on_cpu_adapters(ctx, r, 16385, "chunks per sequence");
    // At L = 2 the same length is 8193 chunks: computed everywhere.
    ctx.run(|rec| rops::inter_chunk_attention(rec, &q, &k, &v, heads, 2, None))
        .unwrap();
}

#[test]
fn chunks_longer_than_a_cpu_adapter_can_scan_are_a_named_error() {
    // The scan walks a chunk token by token in one invocation: CPU adapters refuse chunks of more
    // than 50,000 present tokens rather than scan them short; GPUs run them.
    let ctx = ctx();
    let heads = Heads::new(64, 4, 2).unwrap();
    let bias = ctx.alloc(&[64], DType::F32).unwrap();
    // A 50,001-token chunk over T = 50,001, then over T = 1000 (only the tokens present count).
    for (t, refused) in [(50_001, true), (1000, false)] {
        let z = |cols: usize| ctx.alloc(&[1, t, cols], DType::F32).unwrap();
        let (v, g, k) = (z(64), z(64), z(heads.dg()));
        let r = ctx.run(|rec| Ok(rops::scan(rec, &v, &g, &bias, &k, heads, 50_001)?.0));
        if refused {
            refused_on_cpu_adapters(ctx, r, 50_001, "tokens per chunk");
        } else {
            r.unwrap();
        }
    }
}

#[test]
fn the_gpu_inter_chunk_attention_folds_long_sequences_in_passes() {
    // GPU kernels fold at most `GPU_KEYS_PER_PASS` (8192) chunk finals per dispatch and carry the
    // running softmax between passes. T = 9000 at L = 1 is 9000 chunks: two passes; rows before,
    // at and after the pass boundary and the last rows are compared with an f64 softmax.
    let ctx = ctx_gpu_schedules();
    let heads = Heads::new(8, 2, 1).unwrap(); // dh = 4, one query group
    let (t, d, dh) = (9000, 8, 4);
    let q = rand(t * heads.dg(), 31, 1.0);
    let k = rand(t * d, 32, 1.0);
    let v = rand(t * d, 33, 1.0);
    let up = |x: &[f32], cols: usize| ctx.upload(x, &[1, t, cols], DType::F32).unwrap();
    let (qt, kt, vt) = (up(&q, heads.dg()), up(&k, d), up(&v, d));
    let o = ctx
        .run(|rec| rops::inter_chunk_attention(rec, &qt, &kt, &vt, heads, 1, None))
        .unwrap();
    let got = ctx.download(&o).unwrap();
    let rows: Vec<usize> = (0..3).chain(8188..8197).chain(t - 5..t).collect();
    let (mut want, mut have) = (vec![], vec![]);
    for &r in &rows {
        for h in 0..2 {
            // Token r sees chunks 0 … r − 1 (their finals: rows j at L = 1) and its own state.
            let score = |j: usize| {
                (0..dh)
                    .map(|i| q[r * dh + i] as f64 * k[j * d + h * dh + i] as f64)
                    .sum::<f64>()
                    / (dh as f64).sqrt()
            };
            let s: Vec<f64> = (0..=r).map(score).collect();
            let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = s.iter().map(|x| (x - m).exp()).collect();
            let z: f64 = e.iter().sum();
            for i in 0..dh {
                let num: f64 = (0..=r).map(|j| e[j] * v[j * d + h * dh + i] as f64).sum();
                want.push(num / z);
                have.push(got[r * d + h * dh + i]);
            }
        }
    }
    let e = chunkwise::reference::rel_rms(&have, &want);
    assert!(e <= tol(DType::F32), "rel-RMS {e:.2e} over rows {rows:?}");
}
