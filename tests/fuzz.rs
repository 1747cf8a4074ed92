//! Property-based fuzzing of everything that reads files: safetensors checkpoints, model configs
//! and golden case files. Whatever the bytes, loading returns `Ok` or a typed error; it never
//! panics, hangs or allocates without bound.
//!
//! CI runs a few hundred cases per target. For a longer hunt:
//! `CHUNKWISE_FUZZ_CASES=20000 cargo test --release --test fuzz`. Failures proptest finds are
//! saved in `tests/fuzz.proptest-regressions` (replayed first on every run); each one found so far
//! also has a named regression test (`fuzz_regressions` in tests/hardening.rs). Found so far: a
//! positive `norm_eps` below f32's range was accepted and became 0.

mod common;
use std::path::{Path, PathBuf};

use chunkwise::model::random::{random_weights, write_model_folder};
use chunkwise::model::{Checkpoint, Model, ModelConfig};
use chunkwise::DType;
use common::*;
use proptest::prelude::*;
use serde_json::{json, Value};

fn cases(default: u32) -> ProptestConfig {
    let n = std::env::var("CHUNKWISE_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    ProptestConfig {
        cases: n,
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::Direct(
                "tests/fuzz.proptest-regressions",
            ),
        )),
        ..ProptestConfig::default()
    }
}

fn tiny_config() -> Value {
    json!({
        "model_kind": "hybrid", "vocab_size": 256, "d_model": 16, "num_layers": 2, "num_head": 2,
        "ngroups": 2, "chunk_size": 4, "window_size": 4, "d_ffn": 32, "max_seq_len": 32,
    })
}

fn scratch(name: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("chunkwise-fuzz-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&p).unwrap();
    p
}

/// The bytes of a valid model.safetensors for [`tiny_config`].
fn valid_checkpoint() -> &'static [u8] {
    static BYTES: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    BYTES.get_or_init(|| {
        let cfg = ModelConfig::from_json("<fuzz>", &tiny_config(), None).unwrap();
        let dir = scratch("valid");
        write_model_folder(&dir, &tiny_config(), &random_weights(&cfg, 9)).unwrap();
        let b = std::fs::read(dir.join("model.safetensors")).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        b
    })
}

#[derive(Clone, Debug)]
enum Mutation {
    Truncate(usize),
    Flip(usize, u8),
    HeaderLen(u64),
    Splice(usize, Vec<u8>),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Flip(i, b)),
        any::<u64>().prop_map(Mutation::HeaderLen),
        // Edits inside the JSON header (the first few hundred bytes) hit shapes, dtypes, offsets.
        (0usize..600, proptest::collection::vec(any::<u8>(), 1..12))
            .prop_map(|(i, v)| Mutation::Splice(i, v)),
    ]
}

fn apply(bytes: &mut Vec<u8>, m: &Mutation) {
    match m {
        Mutation::Truncate(n) => bytes.truncate(n % (bytes.len() + 1)),
        Mutation::Flip(i, b) if !bytes.is_empty() => {
            let i = i % bytes.len();
            bytes[i] ^= b;
        }
        Mutation::Flip(..) => {}
        Mutation::HeaderLen(n) if bytes.len() >= 8 => bytes[..8].copy_from_slice(&n.to_le_bytes()),
        Mutation::HeaderLen(_) => {}
        Mutation::Splice(i, v) => {
            let i = (*i).min(bytes.len());
            let end = (i + v.len()).min(bytes.len());
            bytes.splice(i..end, v.iter().copied());
        }
    }
}

/// Loads mutated checkpoint bytes as far as they go: parse, convert every tensor, build the model.
fn load_checkpoint_bytes(bytes: &[u8]) {
    let Ok(ck) = Checkpoint::from_bytes("fuzz.safetensors", bytes) else {
        return;
    };
    let names: Vec<String> = ck.names().map(str::to_string).collect();
    for n in &names {
        let _ = ck.f32(n, None);
        let _ = ck.f64(n);
    }
    let cfg = ModelConfig::from_json("<fuzz>", &tiny_config(), None).unwrap();
    let _ = Model::load(ctx(), cfg, &ck, DType::F32);
}

proptest! {
    #![proptest_config(cases(128))]

    #[test]
    fn any_checkpoint_bytes_load_or_fail_cleanly(ms in proptest::collection::vec(mutation(), 1..4)) {
        let mut bytes = valid_checkpoint().to_vec();
        for m in &ms {
            apply(&mut bytes, m);
        }
        load_checkpoint_bytes(&bytes);
    }

    #[test]
    fn random_bytes_are_not_a_checkpoint(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        load_checkpoint_bytes(&bytes);
    }
}

fn json_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|v| json!(v)),
        (0u64..70).prop_map(|v| json!(v)),
        any::<f64>().prop_map(|v| json!(v)),
        "[a-z_]{0,12}".prop_map(Value::String),
        Just(json!([1, 2])),
        Just(json!({"nested": 1})),
    ]
}

/// The keys configs may hold: random values for them must be refused by name or accepted
/// consistently.
const KEYS: &[&str] = chunkwise::model::config::KNOWN;

proptest! {
    #![proptest_config(cases(1024))]

    /// Accepted configs are internally consistent; everything else is an error naming a key.
    #[test]
    fn any_config_is_accepted_consistently_or_refused(
        edits in proptest::collection::vec((0..KEYS.len(), json_value(), any::<bool>()), 0..6),
        kind in prop_oneof![Just("rat"), Just("hybrid"), Just("attention"), Just("mesanet"), Just("x")],
    ) {
        let mut c = tiny_config();
        c["model_kind"] = json!(kind);
        for (k, v, remove) in &edits {
            if *remove {
                c.as_object_mut().unwrap().remove(KEYS[*k]);
            } else {
                c[KEYS[*k]] = v.clone();
            }
        }
        match ModelConfig::from_json("<fuzz>", &c, None) {
            Ok(cfg) => {
                prop_assert!(cfg.d_model > 0 && cfg.num_head > 0 && cfg.chunk_size > 0);
                prop_assert!(cfg.num_layers > 0 && cfg.vocab_size > 0 && cfg.interleave_step > 0);
                prop_assert!(cfg.norm_eps > 0.0 && cfg.rope_base > 0.0);
                prop_assert!((1..=1000).contains(&cfg.cg_steps_prefill));
                if cfg.kind != chunkwise::model::ModelKind::MesaNet {
                    prop_assert_eq!(cfg.d_head * cfg.num_head, cfg.d_model);
                }
            }
            Err(e) => prop_assert!(matches!(e, chunkwise::Error::Case { .. }), "{}", e),
        }
    }
}

/// A golden case copied into a scratch folder, its JSON edited.
fn golden_with_edits(src: &str, edits: &[(String, Value)], dir: &Path) -> Option<PathBuf> {
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/golden");
    let json_src = golden.join(src);
    let text = std::fs::read_to_string(&json_src).ok()?;
    let mut v: Value = serde_json::from_str(&text).unwrap();
    for (k, val) in edits {
        v["config"][k] = val.clone();
    }
    let st_name = v["file"].as_str().map(str::to_string).unwrap_or_else(|| {
        Path::new(src)
            .with_extension("safetensors")
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned()
    });
    let st_dst = dir.join(&st_name);
    if !st_dst.exists() {
        std::fs::copy(json_src.with_file_name(&st_name), &st_dst).ok()?;
    }
    let out = dir.join(Path::new(src).file_name().unwrap());
    std::fs::write(&out, serde_json::to_string(&v).unwrap()).unwrap();
    Some(out)
}

const GOLDEN: &[&str] = &[
    "rat/rat_a_b1_t37_d64_h2_l16.json",
    "rat/local_attn_b1_t40_p20_d64_h2_w8.json",
    "rat/rat_decode_b1_p21_s20_d64_h2_l16.json",
    "mesa/mesa_a_core_b1_t37_h2_d16.json",
    "mesa/mesa_g_decode_core_b1_p21_t12_h2_d16.json",
    "mesa/mesa_h_decode_layer_b1_p21_t12_d64.json",
];

const CASE_KEYS: &[&str] = &[
    "batch",
    "seq_len",
    "d_model",
    "num_head",
    "d_head",
    "ngroups",
    "chunk_size",
    "window_size",
    "prefill_len",
    "num_heads",
    "head_dim",
    "hidden_size",
    "max_cg_step_training",
    "max_cg_step_decoding",
    "softmax_scale",
];

proptest! {
    #![proptest_config(cases(48))]

    /// Golden cases whose config disagrees with their tensors run to an error, never a panic.
    #[test]
    fn edited_golden_cases_run_or_fail_cleanly(
        case in 0..GOLDEN.len(),
        edits in proptest::collection::vec((0..CASE_KEYS.len(), json_value()), 1..4),
    ) {
        let dir = scratch("golden");
        let edits: Vec<(String, Value)> =
            edits.into_iter().map(|(k, v)| (CASE_KEYS[k].to_string(), v)).collect();
        let path = golden_with_edits(GOLDEN[case], &edits, &dir)
            .expect("shared/golden is needed for this test (see tests/golden.rs)");
        let _ = chunkwise::golden::run_case(ctx(), &path);
    }
}
