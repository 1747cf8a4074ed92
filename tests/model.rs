//! Models: the shipped RAT LM generates deterministically, step-by-step decoding agrees with full
//! forward passes, batched prompts equal single ones, hybrid and attention stacks decode like their
//! forward, and config / checkpoint problems are named errors.

mod common;
use std::path::PathBuf;

use chunkwise::model::generate::generate;
use chunkwise::model::random::random_weights;
use chunkwise::model::sampling::Sampler;
use chunkwise::model::{Model, ModelConfig};
use chunkwise::{Context, DType, Error};
use common::*;

fn shipped() -> Model {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/rat-tiny-pystdlib");
    Model::open(ctx(), &dir, DType::F32).unwrap()
}

fn bytes(s: &str) -> Vec<u32> {
    s.bytes().map(u32::from).collect()
}

#[test]
fn greedy_generation_is_deterministic_and_equals_full_forward_argmax() {
    let ctx = ctx();
    let model = shipped();
    let prompt = bytes("def parse(");
    let n = 24;
    let run = || {
        generate(
            ctx,
            &model,
            std::slice::from_ref(&prompt),
            n,
            &mut Sampler::greedy(),
            |_, _| {},
        )
        .unwrap()
        .0
        .remove(0)
    };
    let a = run();
    assert_eq!(a, run(), "greedy generation is identical across runs");
    // The same tokens from full forward passes over the growing text (no cache at all).
    let mut seq = prompt.clone();
    for &tok in &a {
        let ids = model.tokens(ctx, &seq, 1).unwrap();
        let logits = ctx
            .download(&ctx.run(|rec| model.forward(rec, &ids)).unwrap())
            .unwrap();
        let last = &logits[(seq.len() - 1) * 256..];
        assert_eq!(
            Sampler::greedy().sample(last),
            tok,
            "after {:?}",
            String::from_utf8_lossy(&seq.iter().map(|&t| t as u8).collect::<Vec<_>>())
        );
        seq.push(tok);
    }
    let text: String = a.iter().map(|&t| t as u8 as char).collect();
    assert!(text.is_ascii(), "{text:?}");
}

#[test]
fn batched_prompts_give_the_same_tokens_as_single_ones() {
    let ctx = ctx();
    let model = shipped();
    let prompts = vec![
        bytes("import os\n"),
        bytes("class Foo:\n"),
        bytes("for i in "),
    ];
    let (batched, stats) =
        generate(ctx, &model, &prompts, 12, &mut Sampler::greedy(), |_, _| {}).unwrap();
    assert_eq!(stats.generated_tokens, 36);
    for (i, p) in prompts.iter().enumerate() {
        let single = generate(
            ctx,
            &model,
            std::slice::from_ref(p),
            12,
            &mut Sampler::greedy(),
            |_, _| {},
        )
        .unwrap()
        .0
        .remove(0);
        assert_eq!(batched[i], single, "prompt {i}");
    }
}

fn tiny_model(kind: &str, layers: usize) -> (Model, ModelConfig) {
    tiny_model_on(ctx(), kind, layers)
}

fn tiny_model_on(ctx: &Context, kind: &str, layers: usize) -> (Model, ModelConfig) {
    let json = serde_json::json!({
        "model_kind": kind, "vocab_size": 256, "d_model": 64, "num_layers": layers, "num_head": 2, "ngroups": 2,
        "chunk_size": 8, "window_size": 6, "interleave_step": 2, "d_ffn": 128, "max_seq_len": 64,
    });
    let cfg = ModelConfig::from_json("<test>", &json, None).unwrap();
    let ck = chunkwise::model::Checkpoint::from_f32("<tiny>", random_weights(&cfg, 1)).unwrap();
    (Model::load(ctx, cfg.clone(), &ck, DType::F32).unwrap(), cfg)
}

/// Dispatches of one decode step of the tiny models (3 layers, MesaNet 2) at batch 2 with a short
/// cache, on every schedule: the embedding, the final norm and the head, and per layer the FFN's
/// three and the mixer's (RAT and attention 4, Mesa 5 with the block's norm and residual folded).
fn step_dispatches(kind: &str) -> usize {
    match kind {
        "mesanet" => 3 + 2 * (3 + 5),
        _ => 3 + 3 * (3 + 4),
    }
}

/// Records one decode step and checks its dispatch count before submitting it.
fn step_counted(
    ctx: &Context,
    model: &Model,
    cache: &mut chunkwise::model::ModelCache,
    tok: &chunkwise::ops::embedding::TokenIds,
    dispatches: usize,
    what: &str,
) -> Vec<f32> {
    let mut rec = ctx.record();
    let y = model.step(&mut rec, cache, tok).unwrap();
    assert_eq!(
        rec.stats().dispatches,
        dispatches,
        "{what}: dispatches per step"
    );
    rec.submit().unwrap();
    ctx.download(&y).unwrap()
}

#[test]
fn hybrid_and_attention_stacks_decode_like_their_forward() {
    // On every schedule; per layer the FFN is three dispatches (its norm folded into the first
    // product, its residual into the last), the mixer 4 (RAT) or 4–5 (attention).
    for (ctx, kind) in contexts()
        .into_iter()
        .flat_map(|c| ["hybrid", "attention", "rat"].map(|k| (c, k)))
    {
        let (model, _) = tiny_model_on(ctx, kind, 3);
        let (b, t, p) = (2usize, 30usize, 11usize);
        let ids: Vec<u32> = (0..b * t).map(|i| (i * 37 % 256) as u32).collect();
        let all = model.tokens(ctx, &ids, b).unwrap();
        let full = ctx
            .download(&ctx.run(|rec| model.forward(rec, &all)).unwrap())
            .unwrap();
        let cols = |lo: usize, hi: usize| -> Vec<u32> {
            (0..b)
                .flat_map(|bi| ids[bi * t + lo..bi * t + hi].to_vec())
                .collect()
        };
        let prompt = model.tokens(ctx, &cols(0, p), b).unwrap();
        let (_, mut cache) = ctx.run(|rec| model.prefill(rec, &prompt)).unwrap();
        for i in p..t {
            let tok = model.tokens(ctx, &cols(i, i + 1), b).unwrap();
            let what = format!("{kind} step {i}, {}", ctx.schedule_summary());
            let per_step = step_dispatches(kind);
            let got = step_counted(ctx, &model, &mut cache, &tok, per_step, &what);
            let want: Vec<f64> = (0..b)
                .flat_map(|bi| full[(bi * t + i) * 256..(bi * t + i + 1) * 256].to_vec())
                .map(f64::from)
                .collect();
            assert_close(&got, &want, DType::F32, &what);
        }
        assert_eq!(cache.position(), t);
        assert!(cache.bytes() > 0);
    }
}

#[test]
fn config_and_checkpoint_problems_are_named() {
    let e = ModelConfig::from_json(
        "c.json",
        &serde_json::json!({"model_kind": "rat", "vocab_size": 256}),
        None,
    )
    .err()
    .unwrap();
    assert!(e.to_string().contains("'d_model'"), "{e}");
    let e = ModelConfig::from_json(
        "c.json",
        &serde_json::json!({"model_kind": "transformerxl"}),
        None,
    )
    .err()
    .unwrap();
    assert!(
        e.to_string().contains("unknown model_kind 'transformerxl'"),
        "{e}"
    );
    let (_, cfg) = tiny_model("rat", 1);
    let ck = chunkwise::model::Checkpoint::from_f32(
        "short.safetensors",
        vec![(
            "embedding.wte.weight".into(),
            vec![256, 64],
            vec![0.0; 256 * 64],
        )],
    )
    .unwrap();
    let e = Model::load(ctx(), cfg, &ck, DType::F32).err().unwrap();
    assert!(
        matches!(e, Error::Checkpoint { .. })
            && e.to_string().contains("'backbone.ln.weight' is missing"),
        "{e}"
    );
    let model = shipped();
    let e = model.tokens(ctx(), &[65, 300], 1).err().unwrap();
    assert!(
        e.to_string()
            .contains("token id 300 is outside the vocabulary of 256"),
        "{e}"
    );
}

fn tiny_mesanet(ctx: &Context, layers: usize) -> Model {
    let json = serde_json::json!({
        "model_kind": "mesanet", "vocab_size": 256, "d_model": 64, "num_layers": layers, "num_head": 2, "d_head": 16,
        "d_ffn": 96, "norm_eps": 1e-6, "max_seq_len": 64, "max_cg_step_training": 30, "max_cg_step_decoding": 30,
    });
    let cfg = ModelConfig::from_json("<test>", &json, None).unwrap();
    let ck = chunkwise::model::Checkpoint::from_f32("<tiny>", random_weights(&cfg, 1)).unwrap();
    Model::load(ctx, cfg, &ck, DType::F32).unwrap()
}

#[test]
fn mesanet_prefill_equals_forward_and_decode_agrees_to_cg_accuracy() {
    for ctx in contexts() {
        mesanet_decodes_like_its_forward(ctx);
    }
}

fn mesanet_decodes_like_its_forward(ctx: &Context) {
    let model = tiny_mesanet(ctx, 2);
    let (b, t, p) = (2usize, 24usize, 10usize);
    let ids: Vec<u32> = (0..b * t).map(|i| (i * 53 % 256) as u32).collect();
    let all = model.tokens(ctx, &ids, b).unwrap();
    let full = ctx
        .download(&ctx.run(|rec| model.forward(rec, &all)).unwrap())
        .unwrap();
    let cols = |lo: usize, hi: usize| -> Vec<u32> {
        (0..b)
            .flat_map(|bi| ids[bi * t + lo..bi * t + hi].to_vec())
            .collect()
    };
    let rows = |lo: usize, hi: usize| -> Vec<f64> {
        (0..b)
            .flat_map(|bi| full[(bi * t + lo) * 256..(bi * t + hi) * 256].to_vec())
            .map(f64::from)
            .collect()
    };
    let prompt = model.tokens(ctx, &cols(0, p), b).unwrap();
    let (lp, mut cache) = ctx.run(|rec| model.prefill(rec, &prompt)).unwrap();
    assert_close(
        &ctx.download(&lp).unwrap(),
        &rows(0, p),
        DType::F32,
        "mesanet prefill",
    );
    for i in p..t {
        let tok = model.tokens(ctx, &cols(i, i + 1), b).unwrap();
        let what = format!("mesanet step {i}, {}", ctx.schedule_summary());
        let got = step_counted(
            ctx,
            &model,
            &mut cache,
            &tok,
            step_dispatches("mesanet"),
            &what,
        );
        // Decode starts CG from the Jacobi guess and the parallel path from zero; with the
        // reference's 1e-5 guards both stall near a squared residual of 1e-6, so they agree to
        // CG accuracy (about 1e-3, spec/mesa.md §7), not to rounding.
        let e = chunkwise::reference::rel_rms(&got, &rows(i, i + 1));
        // Measured at most 5.6e-4 here.
        assert!(e < 2e-3, "{what}: rel_rms {e:.2e}");
    }
    assert_eq!(cache.position(), t);
}

#[test]
fn solver_keys_are_checked() {
    use chunkwise::model::ModelConfig;
    use chunkwise::ops::mesa::Solver;
    let base = serde_json::json!({
        "model_kind": "mesanet", "vocab_size": 256, "d_model": 32, "num_layers": 1,
        "num_head": 2, "d_head": 16, "max_seq_len": 64, "tokenizer": "bytes",
    });
    let with = |extra: serde_json::Value| {
        let mut c = base.clone();
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        ModelConfig::from_json("config.json", &c, None)
    };
    let cfg =
        with(serde_json::json!({"solver": "paper", "cg_tolerance": 1e-5, "cg_iterations": 50}))
            .unwrap();
    assert_eq!(cfg.solver, Solver::Paper { tol: 1e-5 });
    assert_eq!((cfg.cg_steps_prefill, cfg.cg_steps_decode), (50, 50));
    assert_eq!(
        with(serde_json::json!({})).unwrap().solver,
        Solver::Reference
    );
    for (bad, key) in [
        (serde_json::json!({"solver": "fast"}), "solver"),
        (serde_json::json!({"solver": 3}), "solver"),
        (
            serde_json::json!({"solver": "paper", "cg_tolerance": 2.0}),
            "cg_tolerance",
        ),
        (
            serde_json::json!({"solver": "paper", "cg_tolerance": "1e-6"}),
            "cg_tolerance",
        ),
        (serde_json::json!({"cg_tolerance": 1e-6}), "cg_tolerance"),
        (serde_json::json!({"cg_iterations": 0}), "cg_iterations"),
    ] {
        let e = with(bad.clone())
            .err()
            .unwrap_or_else(|| panic!("{bad} was accepted"));
        assert!(e.to_string().contains(key), "{bad}: {e}");
    }
    // The command line: a tolerance with the reference rule is refused by name.
    let case = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/golden/mesa/mesa_a_core_b1_t37_h2_d16.json");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_chunkwise"))
        .args(["run", case.to_str().unwrap(), "--mesa-solver", "reference"])
        .args(["--mesa-tol", "1e-3"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--mesa-tol"));
}

/// MesaNet in f16 storage (the published-size presets run so): weights, activations and q, k, v
/// in f16, the gates and states in f32. Forward within the f16 model tolerance of the f32 model,
/// and decoding equals its own forward.
#[test]
fn mesanet_in_f16_matches_f32_and_decodes_like_its_forward() {
    let ctx = ctx();
    let json = serde_json::json!({
        "model_kind": "mesanet", "vocab_size": 256, "d_model": 64, "num_layers": 2,
        "num_head": 2, "d_head": 32, "d_ffn": 128, "max_seq_len": 64,
    });
    let cfg = ModelConfig::from_json("<mesa f16>", &json, None).unwrap();
    let ck = chunkwise::model::random::random_checkpoint(&cfg, 6);
    let m32 = Model::load(ctx, cfg.clone(), &ck, DType::F32).unwrap();
    let m16 = Model::load(ctx, cfg, &ck, DType::F16).unwrap();
    assert_eq!(m16.dtype(), DType::F16, "lavapipe has shader-f16");
    let ids: Vec<u32> = (0..24).map(|i| (i * 37 + 5) % 256).collect();
    let all = m16.tokens(ctx, &ids, 1).unwrap();
    let f = |m: &Model| {
        ctx.download(&ctx.run(|rec| m.forward(rec, &all)).unwrap())
            .unwrap()
    };
    let (l32, l16) = (f(&m32), f(&m16));
    let want: Vec<f64> = l32.iter().map(|&x| x as f64).collect();
    let e = chunkwise::reference::rel_rms(&l16, &want);
    assert!(e < TOL_F16_LAYER, "f16 vs f32 logits: rel-RMS {e:.3e}");
    // Prefill 10 tokens, then step through the rest: the f16 model against its own forward.
    let p = 10;
    let prompt = m16.tokens(ctx, &ids[..p], 1).unwrap();
    let (_, mut cache) = ctx.run(|rec| m16.prefill(rec, &prompt)).unwrap();
    let mut got = Vec::new();
    for &t in &ids[p..] {
        let tok = m16.tokens(ctx, &[t], 1).unwrap();
        got.extend(
            ctx.download(&ctx.run(|rec| m16.step(rec, &mut cache, &tok)).unwrap())
                .unwrap(),
        );
    }
    // Logits of positions p … T−1 come from steps that consumed tokens p … T−1.
    let want: Vec<f64> = l16[p * 256..].iter().map(|&x| x as f64).collect();
    let e = chunkwise::reference::rel_rms(&got, &want);
    assert!(
        e < TOL_F16_LAYER,
        "f16 decode vs f16 forward: rel-RMS {e:.3e}"
    );
}
