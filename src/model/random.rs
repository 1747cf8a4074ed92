//! Random weights under the upstream names for any [`ModelConfig`]: models for benchmarks and tests
//! that need the shapes of a real checkpoint but not its values.

use crate::model::{ModelConfig, ModelKind};

/// Deterministic values in [−scale, scale) (SplitMix64), so runs and machines agree. Element i
/// depends on i alone, so any range of a tensor can be made without the rest.
fn fill(range: std::ops::Range<usize>, seed: u64, scale: f32) -> Vec<f32> {
    let s0 = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    range
        .map(|i| {
            let mut z = s0.wrapping_add((i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            ((z >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

/// How a tensor's values are made.
#[derive(Clone, Copy, Debug)]
pub enum Init {
    /// Uniform in [−scale, scale) from a seed.
    Uniform { scale: f32, seed: u64 },
    /// Every element this value.
    Const(f32),
}

impl Init {
    /// Elements `range` (flat indices) of the tensor.
    pub fn values(self, range: std::ops::Range<usize>) -> Vec<f32> {
        match self {
            Init::Uniform { scale, seed } => fill(range, seed, scale),
            Init::Const(c) => vec![c; range.len()],
        }
    }
}

/// [`random_spec`] with the values made: (name, shape, values).
pub fn random_weights(cfg: &ModelConfig, seed: u64) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    random_spec(cfg, seed)
        .into_iter()
        .map(|(n, s, init)| {
            let len = s.iter().product();
            (n, s, init.values(0..len))
        })
        .collect()
}

/// A checkpoint of [`random_spec`] whose values are made as each tensor is uploaded: a 1.3B
/// model without 5 GB of host arrays.
pub fn random_checkpoint(cfg: &ModelConfig, seed: u64) -> crate::model::Checkpoint {
    let fills = random_spec(cfg, seed)
        .into_iter()
        .map(|(n, s, init)| {
            let f: crate::model::checkpoint::Fill = std::sync::Arc::new(move |r| init.values(r));
            (n, s, f)
        })
        .collect();
    crate::model::Checkpoint::from_fills("<random weights>", fills)
}

/// (name, shape, how its values are made) for every tensor a model of `cfg` loads; the head is left out (tied).
/// Projections are scaled by 1/√fan-in so activations stay O(1) through deep stacks.
pub fn random_spec(cfg: &ModelConfig, seed: u64) -> Vec<(String, Vec<usize>, Init)> {
    let (v, d, f) = (cfg.vocab_size, cfg.d_model, cfg.d_ffn);
    let mut k = seed << 20;
    let mut next = || {
        k += 1;
        k
    };
    let mut t: Vec<(String, Vec<usize>, Init)> = Vec::new();
    let w = |t: &mut Vec<_>, name: String, shape: Vec<usize>, scale: f32, seed: u64| {
        t.push((name, shape, Init::Uniform { scale, seed }));
    };
    let ones = |t: &mut Vec<(String, Vec<usize>, Init)>, name: String, n: usize| {
        t.push((name, vec![n], Init::Const(1.0)));
    };
    let s_d = 1.0 / (d as f32).sqrt();
    let s_f = 1.0 / (f as f32).sqrt();
    if cfg.kind == ModelKind::MesaNet {
        let (h, dh) = (cfg.num_head, cfg.d_head);
        let hd = h * dh;
        w(
            &mut t,
            "model.embeddings.weight".into(),
            vec![v, d],
            1.0,
            next(),
        );
        ones(&mut t, "model.norm.weight".into(), d);
        for i in 0..cfg.num_layers {
            let p = format!("model.layers.{i}.");
            ones(&mut t, format!("{p}attn_norm.weight"), d);
            ones(&mut t, format!("{p}mlp_norm.weight"), d);
            for n in ["q_proj", "k_proj", "v_proj"] {
                w(
                    &mut t,
                    format!("{p}attn.{n}.weight"),
                    vec![hd, d],
                    s_d,
                    next(),
                );
            }
            w(
                &mut t,
                format!("{p}attn.a_proj.weight"),
                vec![h, d],
                s_d,
                next(),
            );
            // Forget-gate bias 2: gates near 0.9, as after training.
            t.push((format!("{p}attn.a_proj.bias"), vec![h], Init::Const(2.0)));
            w(
                &mut t,
                format!("{p}attn.b_proj.weight"),
                vec![h, d],
                s_d,
                next(),
            );
            t.push((format!("{p}attn.b_proj.bias"), vec![h], Init::Const(0.0)));
            t.push((
                format!("{p}attn.lambda_params"),
                vec![hd],
                Init::Const(0.11),
            ));
            for n in ["q_conv1d", "k_conv1d"] {
                w(
                    &mut t,
                    format!("{p}attn.{n}.weight"),
                    vec![hd, 1, 4],
                    0.5,
                    next(),
                );
            }
            ones(&mut t, format!("{p}attn.o_norm.weight"), dh);
            let s_hd = 1.0 / (hd as f32).sqrt();
            w(
                &mut t,
                format!("{p}attn.o_proj.weight"),
                vec![d, hd],
                s_hd,
                next(),
            );
            w(
                &mut t,
                format!("{p}mlp.gate_proj.weight"),
                vec![f, d],
                s_d,
                next(),
            );
            w(
                &mut t,
                format!("{p}mlp.up_proj.weight"),
                vec![f, d],
                s_d,
                next(),
            );
            w(
                &mut t,
                format!("{p}mlp.down_proj.weight"),
                vec![d, f],
                s_f,
                next(),
            );
        }
        return t;
    }
    w(
        &mut t,
        "embedding.wte.weight".into(),
        vec![v, d],
        1.0,
        next(),
    );
    ones(&mut t, "backbone.ln.weight".into(), d);
    for i in 0..cfg.num_layers {
        let p = format!("backbone.layers.{i}.");
        let rat = cfg.is_rat(i);
        let rows = if rat {
            3 * d + 2 * cfg.ngroups * cfg.d_head
        } else {
            3 * d
        };
        w(
            &mut t,
            format!("{p}seq_layer.in_proj.weight"),
            vec![rows, d],
            s_d,
            next(),
        );
        ones(&mut t, format!("{p}seq_layer.input_norm.weight"), d);
        w(
            &mut t,
            format!("{p}seq_layer.out_proj.weight"),
            vec![d, d],
            s_d,
            next(),
        );
        if rat {
            t.push((format!("{p}seq_layer.gate_bias"), vec![d], Init::Const(2.0)));
        }
        ones(&mut t, format!("{p}hidden_layer.ln.weight"), d);
        w(
            &mut t,
            format!("{p}hidden_layer.fc1.weight"),
            vec![f, d],
            s_d,
            next(),
        );
        w(
            &mut t,
            format!("{p}hidden_layer.fc2.weight"),
            vec![d, f],
            s_f,
            next(),
        );
    }
    t
}

/// Writes a model folder (`config.json` + `model.safetensors`) that [`crate::model::Model::open`]
/// reads back.
pub fn write_model_folder(
    dir: &std::path::Path,
    config: &serde_json::Value,
    tensors: &[(String, Vec<usize>, Vec<f32>)],
) -> crate::error::Result<()> {
    let io = |path: &std::path::Path| {
        let path = path.display().to_string();
        move |source| crate::error::Error::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let cfg = dir.join("config.json");
    let text = serde_json::to_string_pretty(config).map_err(|e| crate::error::Error::Case {
        file: cfg.display().to_string(),
        msg: e.to_string(),
    })?;
    std::fs::write(&cfg, text).map_err(io(&cfg))?;
    crate::model::checkpoint::save_f32(&dir.join("model.safetensors"), tensors)
}

/// Configs (in the `model_kind` format) of the published-size models, for benchmarks with random
/// weights: `rat-1.3b` is the RAT paper's RAT-XL (24 layers, d_model 2048, 16 heads of 128,
/// chunk 16, 2 groups, GELU FFN of 8192, LLaMA-2's 32,000-token vocabulary), `attention-1.3b`
/// the same stack with attention layers, `mesanet-1.3b` flash-linear-attention's MesaNet at
/// the same width and depth (16 heads of 128, SwiGLU MLP of 5632: fla's 2048 · 4 · 2/3 rounded
/// up to a multiple of 256). `max_seq_len` sizes the caches and RoPE tables.
pub fn preset(name: &str, max_seq_len: usize) -> Option<serde_json::Value> {
    let (kind, d_ffn) = match name {
        "rat-1.3b" => ("rat", 8192),
        "attention-1.3b" => ("attention", 8192),
        "mesanet-1.3b" => ("mesanet", 5632),
        _ => return None,
    };
    Some(serde_json::json!({
        "model_kind": kind, "vocab_size": 32000, "d_model": 2048, "num_layers": 24,
        "num_head": 16, "d_head": 128, "ngroups": 2, "chunk_size": 16, "d_ffn": d_ffn,
        "norm_eps": 1e-6, "max_seq_len": max_seq_len,
    }))
}

/// Names [`preset`] knows.
pub const PRESETS: &[&str] = &["rat-1.3b", "attention-1.3b", "mesanet-1.3b"];
