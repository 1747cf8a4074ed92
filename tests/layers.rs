//! Attention layers: prefill then decode equals the parallel forward (full and sliding window,
//! batch > 1, prompts shorter and longer than the window); bad weights are named errors.

mod common;
use chunkwise::layers::{AttentionConfig, AttentionLayer};
use chunkwise::model::Checkpoint;
use chunkwise::{DType, Error};
use common::*;

fn checkpoint(d: usize, seed: u64) -> Checkpoint {
    let s = 1.0 / (d as f32).sqrt();
    let tensors = vec![
        (
            "in_proj.weight".to_string(),
            vec![3 * d, d],
            rand(3 * d * d, seed, s),
        ),
        (
            "input_norm.weight".to_string(),
            vec![d],
            rand(d, seed + 1, 1.0)
                .iter()
                .map(|v| 1.0 + 0.5 * v)
                .collect(),
        ),
        (
            "out_proj.weight".to_string(),
            vec![d, d],
            rand(d * d, seed + 2, s),
        ),
    ];
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = std::env::temp_dir().join(format!(
        "chunkwise-layer-{}-{n}.safetensors",
        std::process::id()
    ));
    chunkwise::model::checkpoint::save_f32(&path, &tensors).unwrap();
    let c = Checkpoint::open(&path).unwrap();
    std::fs::remove_file(&path).ok();
    c
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
    let layer = AttentionLayer::load(ctx, cfg, &checkpoint(d, 5), "", DType::F32).unwrap();
    let x = rand(b * t * d, 9, 1.0);
    let xt = ctx.upload(&x, &[b, t, d], DType::F32).unwrap();
    let full = ctx
        .download(&ctx.run(|rec| layer.forward(rec, &xt)).unwrap())
        .unwrap();
    let rows = |lo: usize, hi: usize| -> Vec<f32> {
        (0..b)
            .flat_map(|bi| x[(bi * t + lo) * d..(bi * t + hi) * d].to_vec())
            .collect()
    };
    let pt = ctx.upload(&rows(0, p), &[b, p, d], DType::F32).unwrap();
    let (yp, mut cache) = ctx.run(|rec| layer.prefill(rec, &pt)).unwrap();
    let want_p: Vec<f64> = (0..b)
        .flat_map(|bi| full[bi * t * d..(bi * t + p) * d].to_vec())
        .map(|v| v as f64)
        .collect();
    assert_close(&ctx.download(&yp).unwrap(), &want_p, DType::F32, "prefill");
    for i in p..t {
        let xi = ctx.upload(&rows(i, i + 1), &[b, 1, d], DType::F32).unwrap();
        let y = ctx
            .download(&ctx.run(|rec| layer.step(rec, &mut cache, &xi)).unwrap())
            .unwrap();
        let want: Vec<f64> = (0..b)
            .flat_map(|bi| full[(bi * t + i) * d..(bi * t + i + 1) * d].to_vec())
            .map(|v| v as f64)
            .collect();
        assert_close(
            &y,
            &want,
            DType::F32,
            &format!("step at {i} window {window:?}"),
        );
    }
    assert_eq!(cache.position(), t);
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
    let ck = checkpoint(64, 1);
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
    let ck = checkpoint(64, 1);
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
