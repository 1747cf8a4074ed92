//! Random weights under the upstream names for any [`ModelConfig`]: models for benchmarks and tests
//! that need the shapes of a real checkpoint but not its values.

use crate::model::{ModelConfig, ModelKind};

/// Deterministic values in [−scale, scale) (SplitMix64), so runs and machines agree.
fn fill(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    (0..n)
        .map(|_| {
            s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            ((z >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

/// (name, shape, values) for every tensor a model of `cfg` loads; the head is left out (tied).
/// Projections are scaled by 1/√fan-in so activations stay O(1) through deep stacks.
pub fn random_weights(cfg: &ModelConfig, seed: u64) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let (v, d, f) = (cfg.vocab_size, cfg.d_model, cfg.d_ffn);
    let mut k = seed << 20;
    let mut next = || {
        k += 1;
        k
    };
    let mut t: Vec<(String, Vec<usize>, Vec<f32>)> = Vec::new();
    let w = |t: &mut Vec<_>, name: String, shape: Vec<usize>, scale: f32, seed: u64| {
        let n = shape.iter().product();
        t.push((name, shape, fill(n, seed, scale)));
    };
    let ones = |t: &mut Vec<(String, Vec<usize>, Vec<f32>)>, name: String, n: usize| {
        t.push((name, vec![n], vec![1.0; n]));
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
            t.push((format!("{p}attn.a_proj.bias"), vec![h], vec![2.0; h]));
            w(
                &mut t,
                format!("{p}attn.b_proj.weight"),
                vec![h, d],
                s_d,
                next(),
            );
            t.push((format!("{p}attn.b_proj.bias"), vec![h], vec![0.0; h]));
            t.push((format!("{p}attn.lambda_params"), vec![hd], vec![0.11; hd]));
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
            t.push((format!("{p}seq_layer.gate_bias"), vec![d], vec![2.0; d]));
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
