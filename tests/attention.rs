//! Attention: the registry's cases (causal and sliding window at odd T, batch > 1, several head
//! dims, f32 and f16; KV-cache writes; flash-decoding) on every schedule, then the regressions of
//! long rows (llvmpipe's loop limiter, passes of keys) and bad input.

mod common;
use chunkwise::ops::attention as attn;
use chunkwise::{reference as r, Context, DType, Error};
use common::*;

/// The forward at one shape on the test adapter's own schedule against the f64 reference.
fn check_fwd(b: usize, t: usize, heads: usize, dh: usize, window: Option<usize>, dtype: DType) {
    let ctx = ctx();
    let d = heads * dh;
    let q = stored(&rand(b * t * d, 1 + t as u64, 1.0), dtype);
    let k = stored(&rand(b * t * d, 2 + t as u64, 1.0), dtype);
    let v = stored(&rand(b * t * d, 3 + t as u64, 1.0), dtype);
    let up = |x: &[f32]| ctx.upload(x, &[b, t, d], dtype).unwrap();
    let (qt, kt, vt) = (up(&q), up(&k), up(&v));
    let o = ctx
        .run(|rec| attn::attention(rec, &qt, &kt, &vt, heads, window, None))
        .unwrap();
    let want = r::attention::attention(&q, &k, &v, b, t, heads, window, 1.0 / (dh as f64).sqrt());
    assert_close(
        &ctx.download(&o).unwrap(),
        &want,
        dtype,
        &format!("attention b{b} t{t} h{heads} dh{dh} w{window:?}"),
    );
}

#[test]
fn causal_registry_cases() {
    // Odd T, head dims 4 … 128 (60 among them), batch > 1, f32 and f16, on every schedule.
    check_family("attention");
}

#[test]
fn sliding_window_registry_cases() {
    check_family("attention_window");
}

#[test]
fn kv_write_registry_cases() {
    check_family("kv_write");
}

#[test]
fn flash_decoding_registry_cases() {
    check_family("attention_decode");
}

#[test]
fn unsupported_head_dims_and_mismatched_heads_are_errors() {
    let ctx = ctx();
    let x = ctx
        .upload(&rand(2 * 3 * 12, 1, 1.0), &[2, 3, 12], DType::F32)
        .unwrap();
    let e = ctx
        .run(|rec| attn::attention(rec, &x, &x, &x, 5, None, None))
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("5 heads do not divide the model width 12"),
        "{e}"
    );
    let e = ctx
        .run(|rec| attn::attention(rec, &x, &x, &x, 2, None, None))
        .unwrap_err(); // dh = 6
    assert!(
        matches!(e, Error::InvalidArgument { .. }) && e.to_string().contains("head dim 6"),
        "{e}"
    );
    let y = ctx
        .upload(&rand(2 * 4 * 12, 1, 1.0), &[2, 4, 12], DType::F32)
        .unwrap();
    let e = ctx
        .run(|rec| attn::attention(rec, &x, &y, &x, 3, None, None))
        .unwrap_err();
    assert!(matches!(e, Error::Shape { .. }), "{e}");
}

#[test]
fn decode_past_the_filled_cache_is_refused() {
    let ctx = ctx();
    let (b, h, dh, cap) = (2usize, 2usize, 4usize, 5usize);
    let cache = ctx
        .upload(&vec![0.0; b * h * cap * dh], &[b, h, cap, dh], DType::F32)
        .unwrap();
    let q = ctx
        .upload(&vec![0.0; b * h * dh], &[b, 1, h * dh], DType::F32)
        .unwrap();
    let e = ctx
        .run(|rec| attn::decode(rec, &q, &cache, &cache, 6, None))
        .unwrap_err();
    assert!(
        e.to_string().contains("cache length 6 must be in 1..=5"),
        "{e}"
    );
}

#[test]
fn causal_attention_over_many_key_tiles() {
    check_fwd(1, 1024, 4, 64, None, DType::F32);
}

/// Regression: llvmpipe stops any loop of an invocation after about 65k iterations (counted over
/// the whole invocation) without an error. With a run-time head-dim loop bound the forward kernel
/// went wrong past ~1700 keys at dh 64 (first wrong row 1728 at T = 2048); the head dim is now a
/// pipeline constant, so those loops unroll. (Head dim 128 at T = 2048 is a registry case.)
#[test]
fn causal_attention_over_2048_keys_at_head_dim_64() {
    check_fwd(1, 2048, 1, 64, None, DType::F32);
}

#[test]
fn causal_attention_over_8192_keys_at_head_dim_64() {
    // CPU adapters read key tiles from storage at dh ≤ 64: long rows must not reach llvmpipe's
    // loop limiter (which stops a loop silently).
    check_fwd(1, 8192, 1, 64, None, DType::F32);
}

#[test]
fn decode_splits_stay_short_for_many_sequences() {
    assert_eq!(attn::decode_split(256, 4096, 64, 4, 100_000), 4096);
    assert_eq!(attn::decode_split(256, 4096, 1, 1, 4096), 64);
    // CPU adapters: from B·H = 64 one split per (sequence, head) up to 16384 keys.
    assert_eq!(attn::decode_split(64, 16384, 16, 4, 4097), 4160);
    assert_eq!(attn::decode_split(64, 16384, 16, 4, 100_000), 16384);
    // A short cache is one split, whatever the adapter wants.
    assert_eq!(attn::decode_split(512, 4096, 1, 4, 200), 200);
    assert_eq!(attn::decode_split(512, 4096, 1, 4, 513), 64);
    // The partial buffers are sized once per cache by decode_max_splits: it must bound every length.
    for (b, h, cap) in [
        (1, 1, 20_000),
        (1, 4, 70_000),
        (16, 4, 9000),
        (64, 4, 100_000),
    ] {
        for (target, max_keys) in [(16, 4096), (64, 16384), (128, 4096), (512, 4096)] {
            let max = attn::decode_max_splits(target, max_keys, b, h, cap);
            for len in 1..=cap {
                assert!(
                    len.div_ceil(attn::decode_split(target, max_keys, b, h, len)) <= max,
                    "{target} {b} {h} {len}"
                );
            }
        }
    }
    // b·h ≥ 256 and a long cache: one split per (sequence, head) would exceed the split's bound
    // (16384 keys for the CPU-adapter kernel, 16385 here; 4096 for the GPU kernel), past which
    // llvmpipe would cut the walk short.
    let (b, h, dh, len) = (64usize, 4usize, 4usize, 16385usize);
    let q = rand(b * h * dh, 3, 1.0);
    let k = rand(b * h * len * dh, 4, 1.0);
    let v = rand(b * h * len * dh, 5, 1.0);
    let want = r::attention::decode(
        &q,
        &k,
        &v,
        r::attention::DecodeShape {
            b,
            h,
            cap: len,
            dh,
            len,
        },
        1.0 / (dh as f64).sqrt(),
    );
    for ctx in [ctx(), ctx_gpu_schedules()] {
        let qt = ctx.upload(&q, &[b, 1, h * dh], DType::F32).unwrap();
        let kc = ctx.upload(&k, &[b, h, len, dh], DType::F32).unwrap();
        let vc = ctx.upload(&v, &[b, h, len, dh], DType::F32).unwrap();
        let o = ctx
            .run(|rec| attn::decode(rec, &qt, &kc, &vc, len, None))
            .unwrap();
        let what = format!("decode b64 h4 over {len} keys, {}", ctx.schedule_summary());
        assert_close(&ctx.download(&o).unwrap(), &want, DType::F32, &what);
    }
}

/// A long case: `q, k, v [b, t, heads·dh]` (f32) and the forward's output on `ctx`, read back.
struct Long {
    b: usize,
    t: usize,
    heads: usize,
    dh: usize,
    window: Option<usize>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
}

impl Long {
    fn new(
        (b, t, heads, dh): (usize, usize, usize, usize),
        window: Option<usize>,
        seed: u64,
    ) -> Long {
        let n = b * t * heads * dh;
        Long {
            b,
            t,
            heads,
            dh,
            window,
            q: rand(n, seed, 1.0),
            k: rand(n, seed + 1, 1.0),
            v: rand(n, seed + 2, 1.0),
        }
    }

    fn forward(&self, ctx: &Context) -> Vec<f32> {
        self.forward_with(ctx, None)
    }

    /// The forward with a forced GPU kernel (`None`: the default rule).
    fn forward_with(&self, ctx: &Context, variant: Option<attn::FwdVariant>) -> Vec<f32> {
        let up = |x: &[f32]| {
            ctx.upload(x, &[self.b, self.t, self.heads * self.dh], DType::F32)
                .unwrap()
        };
        let (q, k, v) = (up(&self.q), up(&self.k), up(&self.v));
        let o = ctx
            .run(|rec| {
                attn::attention_with(rec, &q, &k, &v, self.heads, self.window, None, variant)
            })
            .unwrap();
        ctx.download(&o).unwrap()
    }

    /// Rows `tqs` of sequence `bi`, head `h` of `o` against the f64 reference, row by row (the
    /// whole T² reference would take minutes).
    fn assert_rows(
        &self,
        o: &[f32],
        (bi, h): (usize, usize),
        tqs: impl IntoIterator<Item = usize>,
    ) {
        let d = self.heads * self.dh;
        let layout = r::attention::Rows {
            t: self.t,
            d,
            dh: self.dh,
        };
        let scale = 1.0 / (self.dh as f64).sqrt();
        for tq in tqs {
            let want = r::attention::attention_row(
                &self.q,
                &self.k,
                &self.v,
                layout,
                (bi, h, tq),
                self.window,
                scale,
            );
            let at = (bi * self.t + tq) * d + h * self.dh;
            assert_close(
                &o[at..at + self.dh],
                &want,
                DType::F32,
                &format!(
                    "attention T = {}, dh {}, window {:?}: batch {bi}, head {h}, row {tq}",
                    self.t, self.dh, self.window
                ),
            );
        }
    }
}

#[test]
fn attention_over_32768_keys_stays_exact() {
    // The flash kernels walk a query's keys in one invocation, and llvmpipe stops an invocation's
    // loops silently after ~65k iterations (wrong from 30,000 keys): CPU adapters fold long rows
    // in passes of 16384 keys. Rows that see all keys, the rows of the pass boundaries, and a
    // sliding window longer than a pass are compared with an f64 reference.
    let rows = || (16383 - 64..16385).chain(32768 - 64..32768);
    for (ctx, window) in [
        (ctx(), None),
        (ctx(), Some(20000)),
        (ctx_without_subgroups(), None),
        (ctx_gpu_schedules(), None),
    ] {
        let case = Long::new((1, 32768, 1, 16), window, 11);
        case.assert_rows(&case.forward(ctx), (0, 0), rows());
    }
}

#[test]
fn attention_at_head_dim_128_over_a_full_pass_of_keys() {
    // At dh = 128 CPU adapters run the workgroup-memory kernel (QL = 1), whose loops per key
    // differ from the CPU kernels': a pass of 16384 keys must still stay under llvmpipe's loop
    // limiter. T = 16400: the rows before 16384 see a whole pass, the last rows two passes.
    let case = Long::new((1, 16400, 1, 128), None, 21);
    case.assert_rows(
        &case.forward(ctx()),
        (0, 0),
        (16352..16384).chain(16368..16400),
    );
}

#[test]
fn attention_passes_keep_batches_heads_and_windows_apart() {
    // The carried softmax is indexed by batch, token and head; with a window, some queries see no
    // key at all in a pass (t − W past the pass's end). b = 2, 2 heads; rows around the pass
    // boundary and at the end against the f64 reference.
    for (shape, window) in [((2, 16684, 2, 16), None), ((1, 33000, 2, 16), Some(16400))] {
        let case = Long::new(shape, window, 31);
        let o = case.forward(ctx());
        for bi in 0..case.b {
            for h in 0..case.heads {
                case.assert_rows(&o, (bi, h), [16380, 16383, 16384, 16390, case.t - 1]);
            }
        }
    }
}

#[test]
fn the_blocked_forward_over_long_rows_stays_exact() {
    // The blocked kernel (attention_mm) forced on the test adapter: on CPU adapters its passes
    // are short (llvmpipe's loop limiter), so T = 2100 at dh = 128 takes five passes; rows at the
    // pass boundaries and at the end, causal and with a window longer than a pass.
    for window in [None, Some(700)] {
        let case = Long::new((1, 2100, 1, 128), window, 41);
        let o = case.forward_with(ctx(), Some(attn::FwdVariant::Blocked));
        case.assert_rows(&o, (0, 0), [0, 511, 512, 1023, 1024, 1600, 2099]);
    }
}

#[test]
fn forward_variants_name_parse_and_refuse_what_they_cannot_run() {
    let all = attn::FwdVariant::all();
    assert_eq!(all.len(), 9);
    let names: Vec<String> = all.iter().map(|v| v.name()).collect();
    for want in [
        "fa2-kt16",
        "fa2sg-kt8",
        "fa2-kt4",
        "blocked",
        "coop16",
        "coop8",
    ] {
        assert!(
            names.iter().any(|n| n == want),
            "{want} missing from {names:?}"
        );
    }
    for v in &all {
        assert_eq!(attn::FwdVariant::parse(&v.name()), Some(*v));
    }
    assert_eq!(attn::FwdVariant::parse("coop32"), None);
    assert_eq!(attn::FwdVariant::Coop(16).coop_size(), Some(16));
    assert_eq!(attn::FwdVariant::Blocked.coop_size(), None);
    // A forced variant the adapter cannot run is a typed error (lavapipe has no cooperative
    // matrices), and `usable` says why; the blocked kernel runs anywhere.
    let ctx = ctx();
    assert!(attn::FwdVariant::Blocked
        .usable(ctx, DType::F32, 128)
        .is_ok());
    let x = ctx
        .upload(&rand(2 * 5 * 64, 1, 1.0), &[2, 5, 64], DType::F32)
        .unwrap();
    for v in [attn::FwdVariant::Coop(16), attn::FwdVariant::Coop(8)] {
        let has = ctx
            .features()
            .contains(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX);
        let r = ctx.run(|rec| attn::attention_with(rec, &x, &x, &x, 2, None, None, Some(v)));
        if !has {
            assert!(matches!(r, Err(Error::MissingFeature { .. })), "{v:?}");
            let why = v.usable(ctx, DType::F32, 32).unwrap_err();
            assert!(why.contains("EXPERIMENTAL_COOPERATIVE_MATRIX"), "{why}");
        }
    }
    // Head dims the tensor-core kernels do not take (a multiple of the matrix edge) are refused.
    assert!(attn::FwdVariant::Coop(16)
        .usable(ctx, DType::F16, 60)
        .is_err());
    assert!(attn::FwdVariant::Blocked
        .usable(ctx, DType::F32, 6)
        .is_err());
}

#[test]
fn the_blocked_forward_fits_its_tile_to_workgroup_memory_or_refuses() {
    // 16 KiB of workgroup memory: dh 64 in f32 takes tiles of 16 keys (checked against the f64
    // reference), dh 128 in f32 fits no tile and is refused with the limit named.
    let small = ctx_with_limits(|l| wgpu::Limits {
        max_compute_workgroup_storage_size: 16384,
        ..l
    });
    let v = Some(attn::FwdVariant::Blocked);
    assert!(attn::FwdVariant::Blocked
        .usable(&small, DType::F32, 64)
        .is_ok());
    let case = Long::new((1, 70, 2, 64), None, 51);
    case.assert_rows(&case.forward_with(&small, v), (0, 1), [0, 15, 16, 47, 69]);
    let why = attn::FwdVariant::Blocked
        .usable(&small, DType::F32, 128)
        .unwrap_err();
    assert!(why.contains("max_compute_workgroup_storage_size"), "{why}");
    let x = small
        .upload(&rand(3 * 128, 1, 1.0), &[1, 3, 128], DType::F32)
        .unwrap();
    let r = small.run(|rec| attn::attention_with(rec, &x, &x, &x, 1, None, None, v));
    assert!(matches!(r, Err(Error::LimitExceeded { .. })));
}

#[test]
fn gpu_kernels_fold_a_full_pass_of_keys_on_this_adapter() {
    // The GPU forward folds 8192 keys per pass; where a CPU adapter runs it (the GPU schedule,
    // or a forced kernel in `check` / `tune`), a full pass must stay inside llvmpipe's loop
    // limiter. T = 8200: the last queries see a whole first pass, then a second of 8 keys.
    let (b, t, heads, dh) = (1usize, 8200usize, 1usize, 64usize);
    let q = rand(b * t * heads * dh, 11, 1.0);
    let k = rand(b * t * heads * dh, 12, 1.0);
    let v = rand(b * t * heads * dh, 13, 1.0);
    let want = r::attention::attention(&q, &k, &v, b, t, heads, None, 1.0 / (dh as f64).sqrt());
    let ctx = ctx_gpu_schedules();
    let up = |x: &[f32]| ctx.upload(x, &[b, t, heads * dh], DType::F32).unwrap();
    let (qt, kt, vt) = (up(&q), up(&k), up(&v));
    let o = ctx
        .run(|rec| attn::attention(rec, &qt, &kt, &vt, heads, None, None))
        .unwrap();
    assert_close(
        &ctx.download(&o).unwrap(),
        &want,
        DType::F32,
        "GPU kernels, T = 8200",
    );
}
