//! `config.json` as flash-linear-attention saves it for MesaNet models, next to chunkwise's own
//! `model_kind` form: fla's keys and defaults, the `dtype` key, and every contradiction or setting
//! chunkwise cannot honour refused by name.

mod common;
use chunkwise::model::config::{fla_intermediate_size, FLA_HEAD_DIM};
use chunkwise::model::random::{random_weights, write_model_folder};
use chunkwise::model::{Model, ModelConfig, ModelKind};
use chunkwise::{DType, Error};
use common::*;
use serde_json::{json, Value};

/// A config in the form `MesaNetConfig(...).save_pretrained()` writes, for the published size
/// (hidden 2048, 24 layers, 16 heads of 128, LLaMA-2's 32000-entry vocabulary), trained in bf16.
fn fla_published() -> Value {
    json!({
        "architectures": ["MesaNetForCausalLM"],
        "attn": null,
        "attn_mode": "chunk",
        "attnres_block_size": null,
        "bos_token_id": 1,
        "conv_size": 4,
        "eos_token_id": 2,
        "fuse_cross_entropy": true,
        "fuse_linear_cross_entropy": false,
        "fuse_norm": true,
        "fuse_swiglu": true,
        "head_dim": 128,
        "hidden_act": "swish",
        "hidden_ratio": 4,
        "hidden_size": 2048,
        "initializer_range": 0.02,
        "intermediate_size": null,
        "lambda_lower_bound": 0.25,
        "max_cg_step_decoding": 30,
        "max_cg_step_training": 30,
        "max_position_embeddings": 2048,
        "model_type": "mesa_net",
        "norm_eps": 1e-06,
        "num_heads": 16,
        "num_hidden_layers": 24,
        "pad_token_id": null,
        "tie_word_embeddings": false,
        "torch_dtype": "bfloat16",
        "transformers_version": "4.53.2",
        "use_cache": true,
        "use_l2warp": false,
        "use_output_gate": false,
        "use_short_conv": true,
        "vocab_size": 32000
    })
}

fn parse(c: &Value) -> chunkwise::Result<ModelConfig> {
    ModelConfig::from_json("config.json", c, None)
}

/// `c` with `edits` applied (`null` removes the key).
fn with(c: &Value, edits: Value) -> Value {
    let mut c = c.clone();
    for (k, v) in edits.as_object().unwrap() {
        if v.is_null() {
            c.as_object_mut().unwrap().remove(k);
        } else {
            c[k] = v.clone();
        }
    }
    c
}

/// The error for `c`, which must be a config error containing every one of `needles`.
fn refused(c: &Value, needles: &[&str]) {
    let e = parse(c).err().unwrap_or_else(|| panic!("accepted: {c}"));
    assert!(matches!(e, Error::Case { .. }), "{e}");
    let msg = e.to_string();
    for n in needles {
        assert!(msg.contains(n), "'{n}' not in: {msg}");
    }
}

#[test]
fn an_fla_mesanet_config_as_saved_is_read_with_fla_meanings() {
    let cfg = parse(&fla_published()).unwrap();
    assert_eq!(cfg.kind, ModelKind::MesaNet);
    assert_eq!(
        (
            cfg.vocab_size,
            cfg.d_model,
            cfg.num_layers,
            cfg.num_head,
            cfg.d_head
        ),
        (32000, 2048, 24, 16, 128)
    );
    // fla's GatedMLP: 2/3 · 4 · 2048 = 5461, rounded up to a multiple of 256.
    assert_eq!(cfg.d_ffn, 5632);
    assert_eq!(cfg.norm_eps, 1e-6);
    assert_eq!((cfg.cg_steps_prefill, cfg.cg_steps_decode), (30, 30));
    assert!(!cfg.tie_embedding);
    assert_eq!(cfg.max_seq_len, 2048);
    assert_eq!(cfg.dtype, Some(DType::F16), "bf16 is stored as f16");
    assert_eq!(cfg.use_output_gate, Some(false));

    // Absent keys take fla's defaults, not chunkwise's: head_dim 128 (not hidden / heads),
    // hidden_ratio 4, untied embeddings.
    let minimal = json!({"model_type": "mesa_net", "hidden_size": 256, "num_heads": 4,
                         "num_hidden_layers": 2, "vocab_size": 1000});
    let cfg = parse(&minimal).unwrap();
    assert_eq!((cfg.d_head, cfg.d_ffn), (FLA_HEAD_DIM, 768));
    assert!(!cfg.tie_embedding);
    assert_eq!((cfg.dtype, cfg.use_output_gate), (None, None));
    assert_eq!(
        cfg.max_seq_len, 4096,
        "no max_position_embeddings: chunkwise's default"
    );

    // The output gate under its name before fla renamed it.
    let old = with(
        &fla_published(),
        json!({"use_output_gate": null, "use_gate": true}),
    );
    assert_eq!(parse(&old).unwrap().use_output_gate, Some(true));
    // Settings that change nothing chunkwise computes pass, whatever their value.
    let quiet = with(
        &fla_published(),
        json!({"use_short_conv": false, "attn_mode": "fused_recurrent", "fuse_norm": false,
               "use_cache": false, "pad_token_id": 0, "attn": [], "hidden_act": "silu"}),
    );
    assert!(parse(&quiet).is_ok());
    // A key nobody knows is warned about, not refused.
    assert!(parse(&with(&fla_published(), json!({"rope_scaling": 2}))).is_ok());
}

#[test]
fn the_mlp_width_follows_fla_rule_and_an_explicit_width_wins() {
    // (hidden, hidden_ratio, width), computed with fla's `int(h * r * 2 / 3)` rounded up to 256.
    for (h, r, f) in [
        (2048, 4.0, 5632),
        (1024, 4.0, 2816),
        (768, 4.0, 2048),
        (64, 4.0, 256),
        (2048, 3.5, 4864),
        (1536, 2.0, 2048),
        (4096, 8.0 / 3.0, 7424),
    ] {
        assert_eq!(fla_intermediate_size(h, r), Some(f), "{h} {r}");
        let c = with(
            &fla_published(),
            json!({"hidden_size": h, "hidden_ratio": r}),
        );
        assert_eq!(parse(&c).unwrap().d_ffn, f, "{h} {r}");
    }
    // fla ignores hidden_ratio once intermediate_size is given (its configs keep the default 4
    // next to any width), and so does chunkwise.
    let c = with(&fla_published(), json!({"intermediate_size": 4096}));
    assert_eq!(parse(&c).unwrap().d_ffn, 4096);
    // chunkwise's own d_ffn is the same setting.
    let c = with(
        &fla_published(),
        json!({"d_ffn": 4096, "intermediate_size": 4096}),
    );
    assert_eq!(parse(&c).unwrap().d_ffn, 4096);
    // hidden_ratio applies in chunkwise's form too; without it that form keeps 4 · d_model.
    let ours = json!({"model_kind": "mesanet", "vocab_size": 64, "d_model": 32, "num_layers": 1,
                      "num_head": 2, "d_head": 16});
    assert_eq!(parse(&ours).unwrap().d_ffn, 128);
    assert_eq!(
        parse(&with(&ours, json!({"hidden_ratio": 4})))
            .unwrap()
            .d_ffn,
        256
    );
    let rat = json!({"model_kind": "rat", "vocab_size": 64, "d_model": 32, "num_layers": 1,
                     "num_head": 2, "chunk_size": 4, "hidden_ratio": 4});
    refused(&rat, &["hidden_ratio", "d_ffn"]);
}

#[test]
fn fla_names_are_accepted_in_chunkwise_form_and_must_agree_with_ours() {
    let ours = json!({"model_kind": "mesanet", "vocab_size": 64, "d_model": 32, "num_layers": 2,
                      "num_head": 2, "d_head": 16, "d_ffn": 64, "max_seq_len": 128,
                      "tie_embedding": false});
    let fla = json!({"model_kind": "mesanet", "vocab_size": 64, "hidden_size": 32,
                     "num_hidden_layers": 2, "num_heads": 2, "head_dim": 16,
                     "intermediate_size": 64, "max_position_embeddings": 128,
                     "tie_word_embeddings": false});
    let (a, b) = (parse(&ours).unwrap(), parse(&fla).unwrap());
    assert_eq!(format!("{a:?}"), format!("{b:?}"));
    // Both names with one value are fine.
    let both = with(
        &ours,
        json!({"hidden_size": 32, "num_heads": 2, "head_dim": 16}),
    );
    assert!(parse(&both).is_ok());

    for (ours_k, ours_v, fla_k, fla_v) in [
        ("d_model", json!(32), "hidden_size", json!(64)),
        ("num_head", json!(2), "num_heads", json!(4)),
        ("d_head", json!(16), "head_dim", json!(8)),
        ("num_layers", json!(2), "num_hidden_layers", json!(3)),
        ("d_ffn", json!(64), "intermediate_size", json!(128)),
        (
            "max_seq_len",
            json!(128),
            "max_position_embeddings",
            json!(256),
        ),
        (
            "tie_embedding",
            json!(false),
            "tie_word_embeddings",
            json!(true),
        ),
        ("use_output_gate", json!(true), "use_gate", json!(false)),
        ("dtype", json!("float32"), "torch_dtype", json!("bfloat16")),
    ] {
        let c = with(&ours, json!({ours_k: ours_v, fla_k: fla_v}));
        refused(&c, &[ours_k, fla_k, "disagree"]);
    }
}

#[test]
fn the_dtype_key_names_a_storage_type() {
    let base = fla_published();
    for (s, want) in [
        ("float32", DType::F32),
        ("f32", DType::F32),
        ("float16", DType::F16),
        ("f16", DType::F16),
        ("half", DType::F16),
        ("bfloat16", DType::F16),
        ("bf16", DType::F16),
    ] {
        for key in ["dtype", "torch_dtype"] {
            let c = with(&base, json!({"torch_dtype": null, key: s}));
            assert_eq!(parse(&c).unwrap().dtype, Some(want), "{key}: {s}");
        }
    }
    // Newer transformers write `dtype` where older ones wrote `torch_dtype`; both, agreeing, pass.
    let c = with(
        &base,
        json!({"dtype": "bfloat16", "torch_dtype": "float16"}),
    );
    assert_eq!(parse(&c).unwrap().dtype, Some(DType::F16));
    assert_eq!(
        parse(&with(&base, json!({"torch_dtype": null})))
            .unwrap()
            .dtype,
        None
    );
    for bad in [json!("int8"), json!("float64"), json!(16)] {
        refused(&with(&base, json!({"torch_dtype": bad})), &["torch_dtype"]);
        refused(
            &with(&base, json!({"torch_dtype": null, "dtype": bad})),
            &["'dtype'"],
        );
    }
}

#[test]
fn fla_configs_chunkwise_cannot_run_are_refused_by_name() {
    let base = fla_published();
    let cases: Vec<(Value, &[&str])> = vec![
        // Another architecture, or a kind that contradicts fla's.
        (json!({"model_type": "gla"}), &["model_type", "gla"]),
        (
            json!({"model_kind": "rat"}),
            &["model_type", "mesa_net", "rat"],
        ),
        // The layer's fixed choices.
        (json!({"conv_size": 3}), &["conv_size", "4"]),
        (
            json!({"lambda_lower_bound": 0.5}),
            &["lambda_lower_bound", "0.25"],
        ),
        (json!({"hidden_act": "powlu"}), &["hidden_act", "powlu"]),
        (
            json!({"attn": {"layers": [1], "num_heads": 16}}),
            &["'attn'", "hybrid"],
        ),
        (json!({"attnres_block_size": 2}), &["attnres_block_size"]),
        // Sizes that are missing or make no model.
        (json!({"hidden_size": null}), &["hidden_size", "missing"]),
        (json!({"num_heads": 0}), &["num_heads", "at least 1"]),
        (json!({"num_hidden_layers": 0}), &["num_hidden_layers"]),
        (json!({"head_dim": 0}), &["head_dim"]),
        (json!({"intermediate_size": 0}), &["intermediate_size"]),
        (json!({"hidden_ratio": 0}), &["hidden_ratio"]),
        (json!({"hidden_ratio": 1e-9}), &["hidden_ratio"]),
        (json!({"hidden_ratio": -4}), &["hidden_ratio"]),
        (
            json!({"max_position_embeddings": 0}),
            &["max_position_embeddings"],
        ),
        (json!({"vocab_size": 2.5}), &["vocab_size"]),
        (
            json!({"max_cg_step_decoding": 0}),
            &["max_cg_step_decoding"],
        ),
        // Wrong types.
        (json!({"use_output_gate": "yes"}), &["use_output_gate"]),
        (json!({"tie_word_embeddings": 1}), &["tie_word_embeddings"]),
        (json!({"model_type": 7}), &["model_type"]),
    ];
    for (edit, needles) in cases {
        refused(&with(&base, edit), needles);
    }
    // Golden cases give the kind outside the config: it has to agree as well.
    let e = ModelConfig::from_json("case.json", &base, Some("attention")).unwrap_err();
    assert!(e.to_string().contains("model_type"), "{e}");
    // Without model_type or model_kind nothing says what the model is.
    refused(
        &with(&base, json!({"model_type": null})),
        &["model_kind", "model_type"],
    );
}

#[test]
fn an_fla_config_runs_the_same_model_as_chunkwises_form() {
    let fla = json!({"model_type": "mesa_net", "hidden_size": 32, "num_heads": 2,
                     "head_dim": 16, "num_hidden_layers": 2, "vocab_size": 64,
                     "hidden_ratio": 2, "max_position_embeddings": 64, "norm_eps": 1e-6,
                     "tie_word_embeddings": true, "use_output_gate": false,
                     "torch_dtype": "float32", "bos_token_id": 1, "eos_token_id": 2});
    let ours = json!({"model_kind": "mesanet", "d_model": 32, "num_head": 2, "d_head": 16,
                      "num_layers": 2, "vocab_size": 64, "d_ffn": 256, "max_seq_len": 64,
                      "norm_eps": 1e-6});
    let cfg = parse(&fla).unwrap();
    assert_eq!(cfg.d_ffn, 256);
    let weights = random_weights(&cfg, 11);
    let ids: Vec<u32> = (0..12).map(|i| (i * 7 % 64) as u32).collect();
    let mut logits = Vec::new();
    for (name, c) in [("fla", &fla), ("ours", &ours)] {
        let dir =
            std::env::temp_dir().join(format!("chunkwise-config-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        write_model_folder(&dir, c, &weights).unwrap();
        let m = Model::open(ctx(), &dir, DType::F32).unwrap();
        let t = m.tokens(ctx(), &ids, 1).unwrap();
        let l = ctx().run(|rec| m.forward(rec, &t)).unwrap();
        logits.push(ctx().download(&l).unwrap());
        let _ = std::fs::remove_dir_all(&dir);
    }
    assert_eq!(logits[0].len(), 12 * 64);
    assert_eq!(logits[0], logits[1]);
}
