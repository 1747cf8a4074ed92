//! Attention layers: prefill then decode equals the parallel forward (full and sliding window,
//! batch > 1, prompts shorter and longer than the window); bad weights are named errors.

mod common;
use chunkwise::layers::{AttentionConfig, AttentionLayer};
use chunkwise::model::Checkpoint;
use chunkwise::{DType, Error};
use common::*;

fn attention_checkpoint(d: usize, seed: u64) -> Checkpoint {
    let s = 1.0 / (d as f32).sqrt();
    checkpoint(vec![
        ("in_proj.weight", vec![3 * d, d], rand(3 * d * d, seed, s)),
        (
            "input_norm.weight",
            vec![d],
            rand(d, seed + 1, 0.5).iter().map(|v| 1.0 + v).collect(),
        ),
        ("out_proj.weight", vec![d, d], rand(d * d, seed + 2, s)),
    ])
}

fn prefill_then_decode_equals_forward(window: Option<usize>, b: usize, t: usize, p: usize) {
    let ctx = ctx();
    let (d, heads) = (64, 2);
    let cfg = AttentionConfig {
        d_model: d,
        heads,
        window,
        rope_base: 10000.0,
        eps: 1e-6,
        max_positions: t,
        scale: None,
    };
    let layer =
        AttentionLayer::load(ctx, cfg, &attention_checkpoint(d, 5), "", DType::F32).unwrap();
    let cache = assert_decode_matches_forward(&layer, &rand(b * t * d, 9, 1.0), (b, t, d), p);
    assert_eq!(cache.position(), t);
}

#[test]
fn fused_decode_steps_match_forward_on_every_schedule() {
    // The step's six dispatches (fused projection, rotation + cache writes, residual folded into
    // the output projection) on the GPU and CPU schedules, at batch 1 (GEMV / one-row kernel)
    // and 16 (GEMV / 16-row subgroup kernel), full and sliding window.
    let (d, heads, t, p) = (64, 2, 24, 9);
    for c in contexts() {
        for (b, window) in [(1, None), (16, Some(5))] {
            let cfg = AttentionConfig {
                d_model: d,
                heads,
                window,
                rope_base: 10000.0,
                eps: 1e-6,
                max_positions: t,
                scale: None,
            };
            let layer =
                AttentionLayer::load(c, cfg, &attention_checkpoint(d, 5), "", DType::F32).unwrap();
            let x = rand(b * t * d, 9, 1.0);
            assert_decode_matches_forward_on(c, &layer, &x, (b, t, d), p);
        }
    }
}

#[test]
fn full_attention_prefill_and_decode_match_forward() {
    prefill_then_decode_equals_forward(None, 2, 45, 30);
}

#[test]
fn local_attention_prefill_longer_than_window_then_decode() {
    prefill_then_decode_equals_forward(Some(8), 2, 40, 20);
}

#[test]
fn local_attention_prefill_shorter_than_window_then_decode() {
    prefill_then_decode_equals_forward(Some(16), 1, 40, 5);
}

#[test]
fn local_cache_is_window_sized_and_full_cache_is_sequence_sized() {
    let ctx = ctx();
    let ck = attention_checkpoint(64, 1);
    let cfg = |window| AttentionConfig {
        d_model: 64,
        heads: 2,
        window,
        rope_base: 1e4,
        eps: 1e-6,
        max_positions: 4096,
        scale: None,
    };
    let local = AttentionLayer::load(ctx, cfg(Some(1024)), &ck, "", DType::F32).unwrap();
    let full = AttentionLayer::load(ctx, cfg(None), &ck, "", DType::F32).unwrap();
    let lc = local.new_cache(ctx, 1, DType::F32).unwrap();
    let fc = full.new_cache(ctx, 1, DType::F32).unwrap();
    assert_eq!(lc.capacity(), 1025);
    assert_eq!(fc.capacity(), 4096);
    assert_eq!(fc.bytes(), 2 * 64 * 4096 * 4);
}

#[test]
fn missing_or_misshapen_weights_are_named() {
    let ctx = ctx();
    let ck = attention_checkpoint(64, 1);
    let cfg = AttentionConfig {
        d_model: 64,
        heads: 2,
        window: None,
        rope_base: 1e4,
        eps: 1e-6,
        max_positions: 16,
        scale: None,
    };
    let e = AttentionLayer::load(
        ctx,
        cfg.clone(),
        &ck,
        "backbone.layers.0.seq_layer.",
        DType::F32,
    )
    .err()
    .unwrap();
    assert!(
        e.to_string()
            .contains("'backbone.layers.0.seq_layer.in_proj.weight' is missing"),
        "{e}"
    );
    let e = AttentionLayer::load(
        ctx,
        AttentionConfig {
            d_model: 32,
            ..cfg.clone()
        },
        &ck,
        "",
        DType::F32,
    )
    .err()
    .unwrap();
    assert!(
        matches!(e, Error::Checkpoint { .. }) && e.to_string().contains("expected [96, 32]"),
        "{e}"
    );
    let layer = AttentionLayer::load(ctx, cfg, &ck, "", DType::F32).unwrap();
    let x = ctx
        .upload(&rand(20 * 64, 1, 1.0), &[1, 20, 64], DType::F32)
        .unwrap();
    let e = ctx.run(|rec| layer.forward(rec, &x)).err().unwrap();
    assert!(e.to_string().contains("exceed max_positions 16"), "{e}");
}
