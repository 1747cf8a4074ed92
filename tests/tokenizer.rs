//! Models with a `tokenizer.json`: prompts are encoded and continuations decoded through the
//! `tokenizers` crate, in the library and in `chunkwise generate`.

mod common;
use std::path::{Path, PathBuf};
use std::process::Command;

use chunkwise::model::random::{random_weights, write_model_folder};
use chunkwise::model::{Model, ModelConfig, Tokenizer};
use chunkwise::{DType, Error};
use common::*;
use serde_json::{json, Value};

/// GPT-2's byte → printable-character table, which byte-level BPE vocabularies are written in.
fn byte_chars() -> Vec<char> {
    let mut printable: Vec<u32> = ('!' as u32..='~' as u32)
        .chain('¡' as u32..='¬' as u32)
        .chain('®' as u32..='ÿ' as u32)
        .collect();
    let mut chars: Vec<u32> = printable.clone();
    let mut n = 0;
    for b in 0..256u32 {
        if !printable.contains(&b) {
            printable.push(b);
            chars.push(256 + n);
            n += 1;
        }
    }
    let mut table = vec!['\0'; 256];
    for (b, c) in printable.iter().zip(&chars) {
        table[*b as usize] = char::from_u32(*c).unwrap();
    }
    table
}

/// A byte-level BPE tokenizer: 256 byte tokens plus a few merges (so `def` and four spaces are one
/// token each, and ids above 255 occur).
fn tokenizer_json() -> (Value, usize) {
    let t = byte_chars();
    let mut vocab = serde_json::Map::new();
    for (i, c) in t.iter().enumerate() {
        vocab.insert(c.to_string(), json!(i));
    }
    let sp = t[b' ' as usize].to_string();
    let merges = [
        ("d".to_string(), "e".to_string()),
        ("de".to_string(), "f".to_string()),
        (sp.clone(), sp.clone()),
        (format!("{sp}{sp}"), format!("{sp}{sp}")),
        ("r".to_string(), "e".to_string()),
        ("re".to_string(), "t".to_string()),
    ];
    for (i, (a, b)) in merges.iter().enumerate() {
        vocab.insert(format!("{a}{b}"), json!(256 + i));
    }
    let n = 256 + merges.len();
    let tok = json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
        "normalizer": null,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
        "model": {
            "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
            "vocab": vocab,
            "merges": merges.iter().map(|(a, b)| format!("{a} {b}")).collect::<Vec<_>>(),
        }
    });
    (tok, n)
}

/// A random-weight attention LM with the BPE tokenizer (vocab padded to `vocab`).
fn model_folder(name: &str, vocab: usize) -> (PathBuf, ModelConfig) {
    let dir = std::env::temp_dir().join(format!("chunkwise-tok-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let c = json!({
        "model_kind": "attention", "vocab_size": vocab, "d_model": 32, "num_layers": 2, "num_head": 2,
        "d_ffn": 64, "max_seq_len": 128,
    });
    let cfg = ModelConfig::from_json("<tok>", &c, None).unwrap();
    write_model_folder(&dir, &c, &random_weights(&cfg, 5)).unwrap();
    let (tok, _) = tokenizer_json();
    std::fs::write(dir.join("tokenizer.json"), tok.to_string()).unwrap();
    (dir, cfg)
}

#[test]
fn a_tokenizer_json_encodes_prompts_and_decodes_streams() {
    let (_, n) = tokenizer_json();
    let (dir, cfg) = model_folder("roundtrip", 320);
    let tok = Tokenizer::open(&dir, &cfg).unwrap();
    assert!(matches!(tok, Tokenizer::Hf(_)));
    let text = "def f(x):\n    return 'héllo → wörld'";
    let ids = tok.encode(text).unwrap();
    assert!(
        ids.iter().any(|&i| i as usize >= 256 && (i as usize) < n),
        "{ids:?}"
    );
    assert!(
        ids.len() < text.len(),
        "merges shorten the sequence: {ids:?}"
    );
    assert_eq!(tok.decode(&ids).unwrap(), text.as_bytes());
    // Streaming: concatenated pieces equal the whole, and no piece splits a UTF-8 character.
    let mut s = tok.stream();
    let mut out = Vec::new();
    for &id in &ids {
        let piece = s.step(id).unwrap();
        assert!(std::str::from_utf8(&piece).is_ok(), "{piece:?}");
        out.extend(piece);
    }
    assert_eq!(out, text.as_bytes());
    // The model runs on the encoded prompt.
    let m = Model::open(ctx(), &dir, DType::F32).unwrap();
    let t = m.tokens(ctx(), &ids, 1).unwrap();
    ctx().run(|rec| m.forward(rec, &t)).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn tokenizer_problems_are_named() {
    // More tokens than the model's vocabulary.
    let (dir, cfg) = model_folder("small-vocab", 260);
    let e = Tokenizer::open(&dir, &cfg).err().unwrap();
    assert!(matches!(e, Error::Checkpoint { .. }), "{e}");
    assert!(e.to_string().contains("vocab_size is 260"), "{e}");
    // Not JSON.
    std::fs::write(dir.join("tokenizer.json"), "{").unwrap();
    let e = Tokenizer::open(&dir, &cfg).err().unwrap();
    assert!(e.to_string().contains("not a valid tokenizer.json"), "{e}");
    // Missing, for a model that is not byte-level.
    std::fs::remove_file(dir.join("tokenizer.json")).unwrap();
    let e = Tokenizer::open(&dir, &cfg).err().unwrap();
    assert!(e.to_string().contains("tokenizer.json"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

fn generate(dir: &Path, prompt: &str) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_chunkwise"))
        .args(["generate", "--model"])
        .arg(dir)
        .args(["--prompt", prompt, "--max-tokens", "12", "--seed", "3"])
        .output()
        .unwrap()
}

#[test]
fn generate_uses_the_models_tokenizer() {
    let (dir, cfg) = model_folder("cli", 320);
    let out = generate(&dir, "def main():\n    ");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let text = String::from_utf8(out.stdout).expect("decoded text is UTF-8");
    assert!(stderr.contains("decode: 12 tokens"), "{stderr}");
    // The continuation is the decoding of 12 tokens of this vocabulary: recompute it.
    let m = Model::open(ctx(), &dir, DType::F32).unwrap();
    let tok = Tokenizer::open(&dir, &cfg).unwrap();
    let prompt = tok.encode("def main():\n    ").unwrap();
    let mut sampler = chunkwise::model::sampling::Sampler::new(1.0, 0, 1.0, 3);
    let (ids, _) =
        chunkwise::model::generate::generate(ctx(), &m, &[prompt], 12, &mut sampler, |_, _| {})
            .unwrap();
    assert_eq!(text.as_bytes(), tok.decode(&ids[0]).unwrap());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn generate_on_a_broken_model_folder_exits_non_zero_naming_the_problem() {
    let (dir, _) = model_folder("broken", 320);
    let ck = chunkwise::model::Checkpoint::open(&dir.join("model.safetensors")).unwrap();
    let kept: Vec<(String, Vec<usize>, Vec<f32>)> = ck
        .names()
        .filter(|n| *n != "backbone.layers.1.hidden_layer.fc2.weight")
        .map(|n| {
            let (v, s) = ck.f32(n, None).unwrap();
            (n.to_string(), s, v)
        })
        .collect();
    chunkwise::model::checkpoint::save_f32(&dir.join("model.safetensors"), &kept).unwrap();
    let out = generate(&dir, "x");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("error:") && stderr.contains("backbone.layers.1.hidden_layer.fc2.weight"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}
