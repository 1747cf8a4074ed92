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

// ---- LLaMA-2-style tokenizers ------------------------------------------------------------------

/// ASCII only, so every other character reaches the model as byte-fallback tokens.
const TRAINING_TEXT: &str = "The quick brown fox jumps over the lazy dog.
def main(args):
    return sum(x * x for x in args)
A model reads the text and writes the next token, one token at a time.
class Config:
    def __init__(self, path):
        self.path = path
Small models prove that the kernels are correct; large ones prove that they are useful.
";

/// The two ways LLaMA-2's `tokenizer.json` marks spaces: the original conversion normalizes
/// (`Prepend` `▁`, `Replace` space → `▁`, no pre-tokenizer); later ones use a `Metaspace`
/// pre-tokenizer that prepends `▁` to the first word only. Both decode with LLaMA's chain.
#[derive(Clone, Copy, Debug)]
enum SpaceMarker {
    Normalizer,
    Metaspace,
}

/// Vocabulary and merges trained by the `tokenizers` crate's BPE trainer on [`TRAINING_TEXT`],
/// with `▁` marking word starts: ids 0..3 are `<unk>`, `<s>`, `</s>`.
fn trained_bpe() -> &'static (serde_json::Map<String, Value>, Value) {
    static TRAINED: std::sync::OnceLock<(serde_json::Map<String, Value>, Value)> =
        std::sync::OnceLock::new();
    TRAINED.get_or_init(|| {
        use tokenizers::models::bpe::BpeTrainerBuilder;
        use tokenizers::models::TrainerWrapper;
        use tokenizers::AddedToken;
        let untrained = json!({
            "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
            "normalizer": null,
            "pre_tokenizer": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always", "split": true},
            "post_processor": null, "decoder": null,
            "model": {"type": "BPE", "vocab": {}, "merges": []}
        });
        let mut tok: tokenizers::Tokenizer = untrained.to_string().parse().unwrap();
        let specials = ["<unk>", "<s>", "</s>"]
            .map(|s| AddedToken::from(s, true))
            .to_vec();
        let mut trainer = TrainerWrapper::BpeTrainer(
            BpeTrainerBuilder::new()
                .vocab_size(300)
                .min_frequency(2)
                .show_progress(false)
                .special_tokens(specials)
                .build(),
        );
        let lines: Vec<&str> = TRAINING_TEXT.lines().collect();
        tok.train(&mut trainer, lines.iter().cycle().take(40 * lines.len()))
            .unwrap();
        let v: Value = serde_json::from_str(&tok.to_string(false).unwrap()).unwrap();
        let vocab = v["model"]["vocab"].as_object().unwrap().clone();
        assert_eq!(vocab["<unk>"], 0);
        assert_eq!(vocab["</s>"], 2);
        (vocab, v["model"]["merges"].clone())
    })
}

/// A tokenizer.json laid out as LLaMA-2's: `<unk>`, `<s>`, `</s>`, then the 256 byte tokens
/// `<0x00>`..`<0xFF>`, then the trained pieces; BPE with byte fallback; the decoder chain
/// Replace `▁` → space, ByteFallback, Fuse, Strip one leading space. Returns it and its size.
fn llama_tokenizer_json(marker: SpaceMarker) -> (Value, usize) {
    let (trained, merges) = trained_bpe();
    let mut vocab = serde_json::Map::new();
    for (t, id) in trained.iter().map(|(t, id)| (t, id.as_u64().unwrap())) {
        vocab.insert(t.clone(), json!(if id < 3 { id } else { id + 256 }));
    }
    for b in 0..256u64 {
        vocab.insert(format!("<0x{b:02X}>"), json!(3 + b));
    }
    let n = vocab.len();
    let added: Vec<Value> = ["<unk>", "<s>", "</s>"]
        .iter()
        .enumerate()
        .map(|(i, t)| {
            json!({"id": i, "content": t, "single_word": false, "lstrip": false, "rstrip": false,
                   "normalized": false, "special": true})
        })
        .collect();
    let (normalizer, pre_tokenizer) = match marker {
        SpaceMarker::Normalizer => (
            json!({"type": "Sequence", "normalizers": [
                {"type": "Prepend", "prepend": "▁"},
                {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}
            ]}),
            Value::Null,
        ),
        SpaceMarker::Metaspace => (
            Value::Null,
            json!({"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": false}),
        ),
    };
    let tok = json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": added,
        "normalizer": normalizer,
        "pre_tokenizer": pre_tokenizer,
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": "<s>", "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}
        },
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
            {"type": "ByteFallback"},
            {"type": "Fuse"},
            {"type": "Strip", "content": " ", "start": 1, "stop": 0}
        ]},
        "model": {
            "type": "BPE", "dropout": null, "unk_token": "<unk>", "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": true, "byte_fallback": true, "ignore_merges": false,
            "vocab": vocab, "merges": merges
        }
    });
    (tok, n)
}

/// `tokenizer.json` alone in a folder, opened for a model of `vocab` entries.
fn open_llama(marker: SpaceMarker, vocab: usize) -> chunkwise::Result<(Tokenizer, PathBuf)> {
    let dir = std::env::temp_dir().join(format!(
        "chunkwise-llama-tok-{marker:?}-{vocab}-{}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let (tok, _) = llama_tokenizer_json(marker);
    std::fs::write(dir.join("tokenizer.json"), tok.to_string()).unwrap();
    let c = json!({"model_kind": "attention", "vocab_size": vocab, "d_model": 32, "num_layers": 1,
                   "num_head": 2});
    let cfg = ModelConfig::from_json("<tok>", &c, None).unwrap();
    Tokenizer::open(&dir, &cfg).map(|t| (t, dir))
}

fn hf(tok: &Tokenizer) -> &tokenizers::Tokenizer {
    match tok {
        Tokenizer::Hf(t) => t,
        Tokenizer::Bytes => panic!("not a tokenizer.json"),
    }
}

/// Each id's streamed piece, every piece checked to be whole UTF-8.
fn stream_pieces(tok: &Tokenizer, prompt: &[u32], ids: &[u32]) -> Vec<String> {
    let mut s = tok.stream_after(prompt).unwrap();
    ids.iter()
        .map(|&id| {
            let piece = s.step(id).unwrap();
            String::from_utf8(piece).expect("a streamed piece splits a character")
        })
        .collect()
}

#[test]
fn llama_style_tokenizers_stream_whole_characters_and_their_spaces() {
    for marker in [SpaceMarker::Normalizer, SpaceMarker::Metaspace] {
        let (tok, dir) = open_llama(marker, 32000).unwrap();
        let t = hf(&tok);
        let byte_id = |b: u8| 3 + b as u32;
        // None of these characters is in the training text: they are byte tokens.
        let text = "The naïve café sells 日本語 books 🙂\ndef main():\n    return  x";
        let ids = tok.encode(text).unwrap();
        let tokens: Vec<String> = ids.iter().map(|&i| t.id_to_token(i).unwrap()).collect();
        assert!(
            ids.windows(4)
                .any(|w| w == "🙂".bytes().map(byte_id).collect::<Vec<_>>()),
            "{marker:?}: {tokens:?}"
        );
        assert!(
            tokens.iter().any(|s| s.starts_with('▁') && s.len() > 3),
            "{tokens:?}"
        );
        assert!(
            tokens[0].starts_with('▁'),
            "the first word is marked too: {tokens:?}"
        );
        // Encoding does not add `<s>` (prompts are continued as given).
        assert!(!ids.contains(&1), "{tokens:?}");
        // The tokenizers crate's own decode gives the text back, its first space stripped.
        assert_eq!(t.decode(&ids, true).unwrap(), text, "{marker:?}");
        assert_eq!(tok.decode(&ids).unwrap(), text.as_bytes(), "{marker:?}");

        let pieces = stream_pieces(&tok, &[], &ids);
        assert_eq!(pieces.concat(), text, "{marker:?}: {pieces:?}");
        assert!(pieces[0].starts_with('T'), "{marker:?}: {pieces:?}");
        // The emoji's first three bytes print nothing; the fourth prints the whole character.
        let at = ids.windows(4).position(|w| w[0] == byte_id(0xF0)).unwrap();
        assert_eq!(&pieces[at..at + 3], ["", "", ""], "{marker:?}: {pieces:?}");
        assert!(pieces[at + 3].ends_with('🙂'), "{marker:?}: {pieces:?}");
        // Words after the first carry the space their `▁` stands for.
        let cafe = (1..ids.len())
            .find(|&k| t.decode(&ids[..k], true).unwrap() == "The naïve")
            .unwrap();
        assert!(tokens[cafe].starts_with('▁'), "{tokens:?}");
        assert!(pieces[cafe].starts_with(" c"), "{marker:?}: {pieces:?}");
        assert!(
            pieces.iter().any(|p| p == " return"),
            "{marker:?}: {pieces:?}"
        );
        // The stream strips the first space as the decoder does, which for LLaMA-2's original
        // normalizer means that text beginning with a space keeps it (the later Metaspace form
        // adds no `▁` before a space, so there the space is lost both ways).
        for text in [" leading space", "日本 first"] {
            let ids = tok.encode(text).unwrap();
            let streamed = stream_pieces(&tok, &[], &ids).concat();
            assert_eq!(streamed, t.decode(&ids, true).unwrap(), "{marker:?}");
            if matches!(marker, SpaceMarker::Normalizer) || !text.starts_with(' ') {
                assert_eq!(streamed, text, "{marker:?}");
            }
        }

        // A continuation is decoded after its prompt: its first `▁` is a space. Decoded on its
        // own, LLaMA's decoder would strip that space.
        let (prompt, rest) = ids.split_at(cafe);
        let expect = &text[t.decode(prompt, true).unwrap().len()..];
        assert!(expect.starts_with(" café"), "{expect:?}");
        assert_eq!(stream_pieces(&tok, prompt, rest).concat(), expect);
        assert_eq!(tok.decode_after(prompt, rest).unwrap(), expect.as_bytes());
        assert!(tok.decode(rest).unwrap().starts_with(b"caf"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[test]
fn a_stray_byte_token_does_not_stop_the_stream() {
    let (tok, dir) = open_llama(SpaceMarker::Normalizer, 32000).unwrap();
    let t = hf(&tok);
    let byte_id = |b: u8| 3 + b as u32;
    let the = t.token_to_id("▁the").unwrap();
    // `日` from three byte tokens, then a continuation byte no character needs, then a word:
    // the byte run is no longer valid UTF-8 as a whole, which changes the decoding of `日`,
    // already printed. The stream prints the stray byte as U+FFFD and goes on.
    let mut ids: Vec<u32> = "日".bytes().map(byte_id).collect();
    ids.push(byte_id(0x80));
    ids.push(the);
    let pieces = stream_pieces(&tok, &[], &ids);
    assert_eq!(pieces.concat(), "日\u{FFFD} the", "{pieces:?}");
    // The same after a lead byte whose character never completes.
    let mut ids: Vec<u32> = "日".bytes().map(byte_id).collect();
    ids.push(byte_id(0xE6));
    ids.push(the);
    assert_eq!(stream_pieces(&tok, &[], &ids).concat(), "日\u{FFFD} the");

    // Random ids as a sampling model may produce them: words, whole characters made of byte
    // tokens, and now and then a stray byte. Streaming never fails or splits a character, and
    // where the tokenizer decodes the whole sequence without U+FFFD the stream prints exactly
    // that.
    let words = 3 + 256..t.get_vocab_size(true) as u64;
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = |m: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % m
    };
    let chars = ["é", "日", "🙂", "ï"];
    let stray = [0xC3, 0xA9, 0xE6, 0x97, 0xF0, 0x9F, 0x80, 0xFF];
    let mut exact = 0;
    for _ in 0..300 {
        let mut ids = Vec::new();
        for _ in 0..16 {
            match next(20) {
                0..=8 => ids.push((words.start + next(words.end - words.start)) as u32),
                9..=17 => ids.extend(chars[next(4) as usize].bytes().map(byte_id)),
                _ => ids.push(byte_id(stray[next(8) as usize])),
            }
        }
        let streamed = stream_pieces(&tok, &[], &ids).concat();
        // decode = the stream plus what is still held at the end (finish).
        let decoded = String::from_utf8(tok.decode(&ids).unwrap()).unwrap();
        assert!(decoded.starts_with(&streamed), "{ids:?}");
        let whole = t.decode(&ids, true).unwrap();
        if !whole.contains('\u{FFFD}') {
            assert_eq!(streamed, whole, "{ids:?}");
            assert_eq!(decoded, whole, "{ids:?}");
            exact += 1;
        }
    }
    assert!(exact > 10, "too few valid sequences to compare: {exact}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_llama_tokenizer_larger_than_the_model_vocabulary_is_named() {
    let (_, n) = llama_tokenizer_json(SpaceMarker::Normalizer);
    // A model vocabulary padded past the tokenizer's is fine (LLaMA-2's 32000 here).
    assert!(open_llama(SpaceMarker::Normalizer, n).is_ok());
    let e = open_llama(SpaceMarker::Normalizer, n - 1).err().unwrap();
    assert!(matches!(e, Error::Checkpoint { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("tokenizer.json")
            && msg.contains(&format!("{n} tokens"))
            && msg.contains(&format!("vocab_size is {}", n - 1)),
        "{msg}"
    );
}
