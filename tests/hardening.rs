//! Bad input, limits, out-of-memory, concurrency and long runs: one test per row of the README's
//! "Errors" table. Every bad input must come back as a typed error naming what to fix, never a
//! panic, a hang or a silently wrong result.

mod common;
use std::path::{Path, PathBuf};

use chunkwise::layers::{
    AttentionConfig, AttentionLayer, MesaConfig, MesaLayer, RatConfig, RatLayer,
};
use chunkwise::model::generate::generate;
use chunkwise::model::random::{random_weights, write_model_folder};
use chunkwise::model::sampling::Sampler;
use chunkwise::model::{Checkpoint, Model, ModelConfig};
use chunkwise::{Context, DType, Error, Tensor};
use common::*;
use serde_json::{json, Value};

/// A fresh folder under the system temp dir, removed when dropped.
struct TempDir(PathBuf);
impl TempDir {
    fn new(name: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("chunkwise-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn config(kind: &str) -> Value {
    let mut c = json!({
        "model_kind": kind, "vocab_size": 256, "d_model": 32, "num_layers": 2, "num_head": 2,
        "ngroups": 2, "chunk_size": 8, "d_ffn": 64, "max_seq_len": 64, "tokenizer": "bytes",
    });
    if kind == "hybrid" {
        c["window_size"] = json!(8);
    }
    if kind == "mesanet" {
        c["d_head"] = json!(16);
    }
    c
}

fn parse(c: &Value) -> chunkwise::Result<ModelConfig> {
    ModelConfig::from_json("config.json", c, None)
}

fn weights(kind: &str) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    random_weights(&parse(&config(kind)).unwrap(), 1)
}

/// A model folder with `tensors` under `config`.
fn folder(name: &str, config: &Value, tensors: &[(String, Vec<usize>, Vec<f32>)]) -> TempDir {
    let dir = TempDir::new(name);
    write_model_folder(&dir.0, config, tensors).unwrap();
    dir
}

fn open_err(dir: &Path) -> Error {
    match Model::open(ctx(), dir, DType::F32) {
        Ok(_) => panic!("{} loaded but should have been refused", dir.display()),
        Err(e) => e,
    }
}

fn assert_msg(e: &Error, parts: &[&str]) {
    let msg = e.to_string();
    for p in parts {
        assert!(msg.contains(p), "error message lacks {p:?}: {msg}");
    }
}

fn valid_safetensors() -> Vec<u8> {
    let dir = folder("valid", &config("rat"), &weights("rat"));
    std::fs::read(dir.0.join("model.safetensors")).unwrap()
}

// ---- checkpoints -------------------------------------------------------------------------------

#[test]
fn truncated_safetensors_is_a_checkpoint_error() {
    let bytes = valid_safetensors();
    for cut in [0, 4, 8, 100, bytes.len() / 2, bytes.len() - 1] {
        let e = Checkpoint::from_bytes("cut.safetensors", &bytes[..cut])
            .err()
            .unwrap();
        assert!(matches!(e, Error::Checkpoint { .. }), "{e}");
        assert_msg(&e, &["cut.safetensors", "not a valid safetensors file"]);
    }
}

#[test]
fn absurd_header_length_is_a_checkpoint_error() {
    let mut bytes = valid_safetensors();
    for len in [u64::MAX, 1 << 40, bytes.len() as u64] {
        bytes[..8].copy_from_slice(&len.to_le_bytes());
        let e = Checkpoint::from_bytes("huge.safetensors", &bytes)
            .err()
            .unwrap();
        assert!(matches!(e, Error::Checkpoint { .. }), "{e}");
    }
}

#[test]
fn header_that_is_not_json_is_a_checkpoint_error() {
    let header = b"{not json at all";
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header);
    let e = Checkpoint::from_bytes("bad.safetensors", &bytes)
        .err()
        .unwrap();
    assert!(matches!(e, Error::Checkpoint { .. }), "{e}");
    let e = Checkpoint::open(Path::new("no/such/model.safetensors"))
        .err()
        .unwrap();
    assert!(matches!(e, Error::Io { .. }), "{e}");
    assert_msg(&e, &["no/such/model.safetensors"]);
}

#[test]
fn a_missing_tensor_is_named() {
    for kind in ["rat", "hybrid", "attention", "mesanet"] {
        let mut t = weights(kind);
        let gone = t.remove(3).0;
        let dir = folder(&format!("missing-{kind}"), &config(kind), &t);
        let e = open_err(&dir.0);
        assert!(matches!(e, Error::Checkpoint { .. }), "{e}");
        assert_msg(&e, &[&gone, "missing"]);
    }
}

#[test]
fn an_extra_tensor_is_named() {
    let mut t = weights("rat");
    t.push((
        "backbone.layers.7.seq_layer.gate_bias".into(),
        vec![32],
        vec![0.0; 32],
    ));
    let dir = folder("extra", &config("rat"), &t);
    let e = open_err(&dir.0);
    assert_msg(&e, &["backbone.layers.7.seq_layer.gate_bias", "num_layers"]);
    // A checkpoint of more layers than the config says is the same mistake.
    let mut c = config("rat");
    c["num_layers"] = json!(1);
    let dir = folder("extra-layers", &c, &weights("rat"));
    assert_msg(&open_err(&dir.0), &["backbone.layers.1."]);
}

#[test]
fn a_wrong_shape_is_named_with_both_shapes() {
    let mut t = weights("attention");
    let i = t
        .iter()
        .position(|(n, _, _)| n == "backbone.layers.1.seq_layer.out_proj.weight")
        .unwrap();
    t[i].1 = vec![16, 64];
    let dir = folder("shape", &config("attention"), &t);
    let e = open_err(&dir.0);
    assert_msg(&e, &["out_proj.weight", "[16, 64]", "[32, 32]"]);
}

#[test]
fn a_wrong_dtype_is_named() {
    let dir = folder("dtype", &config("rat"), &weights("rat"));
    // Rewrite one weight as int64: a broken export, not something to convert silently.
    let ck = Checkpoint::open(&dir.0.join("model.safetensors")).unwrap();
    let names: Vec<String> = ck.names().map(str::to_string).collect();
    let data: Vec<(String, Vec<usize>, Vec<u8>, safetensors::Dtype)> = names
        .iter()
        .map(|n| {
            let (v, s) = ck.f32(n, None).unwrap();
            if n == "backbone.ln.weight" {
                let ints: Vec<i64> = v.iter().map(|&x| x as i64).collect();
                (
                    n.clone(),
                    s,
                    bytemuck::cast_slice(&ints).to_vec(),
                    safetensors::Dtype::I64,
                )
            } else {
                (
                    n.clone(),
                    s,
                    bytemuck::cast_slice(&v).to_vec(),
                    safetensors::Dtype::F32,
                )
            }
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView)> = data
        .iter()
        .map(|(n, s, d, t)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(*t, s.clone(), d).unwrap(),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, None, &dir.0.join("model.safetensors")).unwrap();
    let e = open_err(&dir.0);
    assert_msg(&e, &["backbone.ln.weight", "I64", "float"]);
}

#[test]
fn a_config_that_disagrees_with_the_weights_is_named() {
    let mut c = config("rat");
    c["d_model"] = json!(64);
    c["num_head"] = json!(4);
    let dir = folder("disagree", &c, &weights("rat"));
    assert_msg(
        &open_err(&dir.0),
        &["embedding.wte.weight", "[256, 32]", "[256, 64]"],
    );
    // The other kind's names: nothing of a MesaNet model is where a RAT config looks.
    let dir = folder("kind", &config("rat"), &weights("mesanet"));
    assert_msg(&open_err(&dir.0), &["embedding.wte.weight", "missing"]);
}

// ---- configs -----------------------------------------------------------------------------------

#[test]
fn config_json_problems_are_named() {
    let dir = TempDir::new("cfg-json");
    write_model_folder(&dir.0, &config("rat"), &weights("rat")).unwrap();
    std::fs::write(dir.0.join("config.json"), "{\"model_kind\": \"rat\",").unwrap();
    assert_msg(&open_err(&dir.0), &["config.json", "not valid JSON"]);
    let mut c = config("rat");
    c.as_object_mut().unwrap().remove("vocab_size");
    assert_msg(&parse(&c).unwrap_err(), &["vocab_size", "missing"]);
    let mut c = config("rat");
    c["model_kind"] = json!("transformer-xl");
    assert_msg(&parse(&c).unwrap_err(), &["transformer-xl", "model_kind"]);
    let mut c = config("rat");
    c["d_model"] = json!("32");
    assert_msg(&parse(&c).unwrap_err(), &["d_model", "integer"]);
    let mut c = config("hybrid");
    c.as_object_mut().unwrap().remove("window_size");
    assert_msg(&parse(&c).unwrap_err(), &["window_size"]);
}

#[test]
fn chunk_size_zero_is_refused() {
    let mut c = config("rat");
    c["chunk_size"] = json!(0);
    assert_msg(&parse(&c).unwrap_err(), &["chunk_size", "at least 1"]);
    let ck = checkpoint(vec![]);
    let cfg = RatConfig {
        d_model: 32,
        heads: 2,
        groups: 2,
        chunk: 0,
        rope_base: 1e4,
        eps: 1e-6,
        max_positions: 64,
        scale: None,
    };
    let e = RatLayer::load(ctx(), cfg, &ck, "", DType::F32)
        .err()
        .unwrap();
    assert_msg(&e, &["chunk"]);
}

#[test]
fn heads_that_do_not_divide_the_width_are_refused() {
    let mut c = config("attention");
    c["num_head"] = json!(3);
    assert_msg(&parse(&c).unwrap_err(), &["num_head 3", "d_model 32"]);
    let mut c = config("rat");
    c["num_head"] = json!(4);
    c["ngroups"] = json!(3);
    assert_msg(&parse(&c).unwrap_err(), &["ngroups 3", "num_head 4"]);
    let cfg = AttentionConfig {
        d_model: 32,
        heads: 3,
        window: None,
        rope_base: 1e4,
        eps: 1e-6,
        max_positions: 64,
        scale: None,
    };
    let e = AttentionLayer::load(ctx(), cfg, &checkpoint(vec![]), "", DType::F32)
        .err()
        .unwrap();
    assert_msg(&e, &["3"]);
}

#[test]
fn negative_or_absurd_iteration_counts_are_refused() {
    for bad in [json!(-1), json!(0), json!(1_000_000), json!(2.5)] {
        let mut c = config("mesanet");
        c["max_cg_step_training"] = bad.clone();
        assert_msg(&parse(&c).unwrap_err(), &["max_cg_step_training"]);
        let mut c = config("mesanet");
        c["max_cg_step_decoding"] = bad;
        assert_msg(&parse(&c).unwrap_err(), &["max_cg_step_decoding"]);
    }
    // The layer API has the same bound at run time.
    let cfg = parse(&config("mesanet")).unwrap();
    let ck = Checkpoint::from_f32("<mesa>", random_weights(&cfg, 2)).unwrap();
    let mc = mesa_config(1_000_000);
    let layer = MesaLayer::load(ctx(), mc, &ck, "model.layers.0.attn.", DType::F32).unwrap();
    let x = ctx()
        .upload(&rand(8 * 32, 1, 1.0), &[1, 8, 32], DType::F32)
        .unwrap();
    let e = ctx().run(|rec| layer.forward(rec, &x)).unwrap_err();
    assert_msg(&e, &["CG iterations"]);
}

#[test]
fn nan_or_negative_floats_in_a_config_are_refused() {
    let mut c = config("rat");
    c["norm_eps"] = json!(-1e-6);
    assert_msg(&parse(&c).unwrap_err(), &["norm_eps"]);
    let mut c = config("rat");
    c["max_seq_len"] = json!(1u64 << 40);
    assert_msg(&parse(&c).unwrap_err(), &["max_seq_len"]);
}

/// A Mesa core case (random inputs, the f64 reference as the expected output) written as a
/// golden case file: `kind` and `extra` keys in the JSON, the decode from `t_prefill` on.
fn mesa_case(dir: &TempDir, name: &str, json: Value, t_prefill: usize) -> PathBuf {
    use chunkwise::reference::mesa::MesaShape;
    use chunkwise::verify::{MesaHost, CG30, CG30_DECODE};
    let s = MesaShape {
        b: 2,
        t: 9,
        h: 2,
        d: 16,
    };
    let host = MesaHost::random(s, 3, (0.85, 0.95), DType::F32);
    let (o, _, _) = host.reference(None, CG30, Some((t_prefill, CG30_DECODE)));
    let dec: Vec<f32> = (0..s.b)
        .flat_map(|bi| {
            let row = s.h * s.d;
            o[(bi * s.t + t_prefill) * row..(bi + 1) * s.t * row].to_vec()
        })
        .map(|v| v as f32)
        .collect();
    let sh = vec![s.b, s.t, s.h, s.d];
    let tensors = vec![
        ("q".to_string(), sh.clone(), host.q.clone()),
        ("k".to_string(), sh.clone(), host.k.clone()),
        ("v".to_string(), sh.clone(), host.v.clone()),
        ("g".to_string(), vec![s.b, s.t, s.h], host.g.clone()),
        ("beta".to_string(), vec![s.b, s.t, s.h], host.beta.clone()),
        ("lamb".to_string(), vec![s.h, s.d], host.lamb.clone()),
        (
            "o_decode_cg30_f64".to_string(),
            vec![s.b, s.t - t_prefill, s.h, s.d],
            dec,
        ),
    ];
    chunkwise::model::checkpoint::save_f32(&dir.0.join(format!("{name}.safetensors")), &tensors)
        .unwrap();
    let path = dir.0.join(format!("{name}.json"));
    std::fs::write(&path, json.to_string()).unwrap();
    path
}

#[test]
fn invalid_numbers_in_a_case_are_named_errors() {
    // Present but invalid: never replaced by the default (30 iterations), whatever the type.
    let dir = TempDir::new("bad-case");
    for bad in [json!(-3), json!(0), json!(2.5), json!("30"), json!(100000)] {
        let case = json!({"kind": "core_decode", "cg_iterations": bad, "shapes": {"T_prefill": 4}});
        let path = mesa_case(&dir, "bad_iters", case, 4);
        let e = chunkwise::golden::run_case(ctx(), &path).err().unwrap();
        assert_msg(&e, &["cg_iterations"]);
    }
    for bad in [json!(-1), json!(1.5), json!("4"), json!(10)] {
        let case = json!({"kind": "core_decode", "shapes": {"T_prefill": bad}});
        let path = mesa_case(&dir, "bad_prefill", case, 4);
        let e = chunkwise::golden::run_case(ctx(), &path).err().unwrap();
        assert_msg(&e, &["shapes.T_prefill"]);
    }
    let case = json!({"kind": "core_decode", "shapes": 7});
    let e = chunkwise::golden::run_case(ctx(), &mesa_case(&dir, "bad_shapes", case, 4))
        .err()
        .unwrap();
    assert_msg(&e, &["'shapes' must be a JSON object"]);
}

#[test]
fn decoding_from_an_empty_state_matches_the_reference() {
    // T_prefill 0: every token is a decode step (Jacobi-started CG) from zero states.
    let dir = TempDir::new("empty-prefill");
    let case = json!({"kind": "core_decode", "cg_iterations": 30, "shapes": {"T_prefill": 0}});
    let run = chunkwise::golden::run_case(ctx(), &mesa_case(&dir, "from_empty", case, 0)).unwrap();
    let c = run
        .checks
        .iter()
        .find(|c| c.name == "o_decode_cg30_f64")
        .expect("the decoded outputs are checked");
    assert!(c.ok, "{c}");
    // A RAT layer case with prefill_len 0: the decoded outputs equal the forward's.
    let golden = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/golden/rat/rat_decode_b1_p21_s20_d64_h2_l16");
    if !golden.with_extension("json").exists() {
        eprintln!("SKIP: {} is absent", golden.display());
        return;
    }
    let ck = Checkpoint::open(&golden.with_extension("safetensors")).unwrap();
    let mut tensors: Vec<(String, Vec<usize>, Vec<f32>)> = ck
        .names()
        .filter(|n| !n.starts_with("y"))
        .map(|n| {
            let (d, s) = ck.numbers(n, None).unwrap();
            (n.to_string(), s, d)
        })
        .collect();
    let (y, ys) = ck.f32("y", None).unwrap();
    tensors.push(("y".into(), ys.clone(), y.clone()));
    tensors.push(("y_decode".into(), ys, y));
    chunkwise::model::checkpoint::save_f32(&dir.0.join("rat0.safetensors"), &tensors).unwrap();
    let mut json: Value =
        serde_json::from_str(&std::fs::read_to_string(golden.with_extension("json")).unwrap())
            .unwrap();
    json["config"]["prefill_len"] = json!(0);
    json["file"] = json!("rat0.safetensors");
    std::fs::write(dir.0.join("rat0.json"), json.to_string()).unwrap();
    let run = chunkwise::golden::run_case(ctx(), &dir.0.join("rat0.json")).unwrap();
    assert!(run.checks.iter().any(|c| c.name == "y_decode"));
    for c in &run.checks {
        assert!(c.ok, "{c}");
    }
}

// ---- sequences ---------------------------------------------------------------------------------

/// The Mesa layer shape of `config("mesanet")` with `iters` CG iterations on the parallel path.
fn mesa_config(iters: usize) -> MesaConfig {
    MesaConfig {
        hidden: 32,
        heads: 2,
        head_dim: 16,
        norm_eps: 1e-6,
        cg_iters_prefill: iters,
        cg_iters_decode: 30,
        solver: Default::default(),
    }
}

fn tiny(kind: &str) -> Model {
    let cfg = parse(&config(kind)).unwrap();
    let ck = Checkpoint::from_f32("<tiny>", random_weights(&cfg, 3)).unwrap();
    Model::load(ctx(), cfg, &ck, DType::F32).unwrap()
}

#[test]
fn empty_sequences_are_refused() {
    let ctx = ctx();
    let m = tiny("rat");
    assert_msg(&m.tokens(ctx, &[], 1).err().unwrap(), &["non-empty"]);
    let e = generate(ctx, &m, &[vec![]], 4, &mut Sampler::greedy(), |_, _| {}).unwrap_err();
    assert_msg(&e, &["at least one token"]);
    let e = generate(ctx, &m, &[], 4, &mut Sampler::greedy(), |_, _| {}).unwrap_err();
    assert_msg(&e, &["at least one token"]);
    // A [B, 0, D] input to a layer.
    let cfg = parse(&config("rat")).unwrap();
    let ck = Checkpoint::from_f32("<w>", random_weights(&cfg, 3)).unwrap();
    let layer = RatLayer::load(
        ctx,
        rat_config(),
        &ck,
        "backbone.layers.0.seq_layer.",
        DType::F32,
    )
    .unwrap();
    let x = ctx.alloc(&[1, 0, 32], DType::F32);
    if let Ok(x) = x {
        let e = ctx.run(|rec| layer.forward(rec, &x)).unwrap_err();
        assert!(matches!(e, Error::Shape { .. }), "{e}");
    }
}

#[test]
fn sequences_past_max_seq_len_are_refused() {
    let ctx = ctx();
    for kind in ["rat", "hybrid", "attention", "mesanet"] {
        let m = tiny(kind);
        let ids = m.tokens(ctx, &vec![65; 65], 1).unwrap();
        let e = ctx.run(|rec| m.forward(rec, &ids)).unwrap_err();
        assert_msg(&e, &["65", "max_seq_len 64"]);
        let e = generate(
            ctx,
            &m,
            &[vec![65; 60]],
            5,
            &mut Sampler::greedy(),
            |_, _| {},
        )
        .unwrap_err();
        assert_msg(&e, &["max_seq_len 64"]);
        // Decoding up to the limit works; one step more is refused.
        let p = m.tokens(ctx, &vec![65; 63], 1).unwrap();
        let (_, mut cache) = ctx.run(|rec| m.prefill(rec, &p)).unwrap();
        let one = m.tokens(ctx, &[66], 1).unwrap();
        ctx.run(|rec| m.step(rec, &mut cache, &one)).unwrap();
        let e = ctx.run(|rec| m.step(rec, &mut cache, &one)).unwrap_err();
        assert_msg(&e, &["max_seq_len 64"]);
    }
}

#[test]
fn token_ids_outside_the_vocabulary_are_refused() {
    let m = tiny("attention");
    assert_msg(
        &m.tokens(ctx(), &[1, 256], 1).err().unwrap(),
        &["256", "vocabulary of 256"],
    );
}

fn rat_config() -> RatConfig {
    RatConfig {
        d_model: 32,
        heads: 2,
        groups: 2,
        chunk: 8,
        rope_base: 1e4,
        eps: 1e-6,
        max_positions: 64,
        scale: None,
    }
}

/// A layer's forward on an input, behind one type for every family.
type Forward = Box<dyn Fn(&Tensor) -> chunkwise::Result<Tensor> + Sync>;

/// One layer of every family, built from random weights under the upstream names.
fn every_layer() -> Vec<(&'static str, Forward)> {
    let ctx = ctx();
    let att = |window| AttentionConfig {
        d_model: 32,
        heads: 2,
        window,
        rope_base: 1e4,
        eps: 1e-6,
        max_positions: 64,
        scale: None,
    };
    let ck_att = Checkpoint::from_f32("<w>", weights("attention")).unwrap();
    let ck_rat = Checkpoint::from_f32("<w>", weights("rat")).unwrap();
    let ck_mesa = Checkpoint::from_f32("<w>", weights("mesanet")).unwrap();
    let p = "backbone.layers.0.seq_layer.";
    let full = AttentionLayer::load(ctx, att(None), &ck_att, p, DType::F32).unwrap();
    let local = AttentionLayer::load(ctx, att(Some(8)), &ck_att, p, DType::F32).unwrap();
    let rat = RatLayer::load(ctx, rat_config(), &ck_rat, p, DType::F32).unwrap();
    let mc = mesa_config(30);
    let mesa = MesaLayer::load(ctx, mc, &ck_mesa, "model.layers.0.attn.", DType::F32).unwrap();
    vec![
        (
            "attention",
            Box::new(move |x: &Tensor| ctx.run(|rec| full.forward(rec, x))),
        ),
        (
            "local",
            Box::new(move |x: &Tensor| ctx.run(|rec| local.forward(rec, x))),
        ),
        (
            "rat",
            Box::new(move |x: &Tensor| ctx.run(|rec| rat.forward(rec, x))),
        ),
        (
            "mesa",
            Box::new(move |x: &Tensor| ctx.run(|rec| mesa.forward(rec, x))),
        ),
    ]
}

#[test]
fn nan_and_inf_inputs_never_crash_a_kernel_and_stay_causal() {
    let ctx = ctx();
    // A non-finite token may spoil the rest of its own chunk (chunk-parallel kernels combine a
    // chunk's positions with masked matrix products), never an earlier chunk: 32 starts a chunk of
    // RAT (8) and of Mesa (16).
    let (t, d, bad_at) = (40, 32, 32);
    let clean = rand(t * d, 5, 1.0);
    for (name, run) in every_layer() {
        let x = ctx.upload(&clean, &[1, t, d], DType::F32).unwrap();
        let want = ctx.download(&run(&x).unwrap()).unwrap();
        for poison in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let mut dirty = clean.clone();
            dirty[bad_at * d..(bad_at + 1) * d].fill(poison);
            let x = ctx.upload(&dirty, &[1, t, d], DType::F32).unwrap();
            let got = ctx.download(&run(&x).unwrap()).unwrap();
            assert_eq!(got.len(), want.len());
            // Positions before the bad token cannot see it: still exactly the clean output.
            assert_eq!(
                &got[..bad_at * d],
                &want[..bad_at * d],
                "{name} with {poison} at {bad_at}: earlier positions changed"
            );
        }
    }
    // Sampling from non-finite logits picks a token instead of panicking.
    let mut logits = vec![0.0f32; 256];
    logits[3] = f32::NAN;
    logits[9] = f32::INFINITY;
    for mut s in [
        Sampler::greedy(),
        Sampler::new(0.8, 40, 0.9, 1),
        Sampler::new(1.0, 0, 1.0, 2),
    ] {
        assert!(s.sample(&logits) < 256);
        assert!(s.sample(&[f32::NAN; 256]) < 256);
    }
}

// ---- limits, memory, devices -------------------------------------------------------------------

/// A context on a device that grants only `limits`.
#[test]
fn kernel_needs_are_checked_against_the_device_before_pipeline_creation() {
    // The flash attention kernel declares 16 KiB of workgroup memory for its key/value tiles.
    let small = ctx_with_limits(|l| wgpu::Limits {
        max_compute_workgroup_storage_size: 4096,
        ..l
    });
    let x = small
        .upload(&rand(8 * 64, 1, 1.0), &[1, 8, 64], DType::F32)
        .unwrap();
    let e = small
        .run(|rec| chunkwise::ops::attention::attention(rec, &x, &x, &x, 1, None, None))
        .unwrap_err();
    assert!(matches!(e, Error::LimitExceeded { .. }), "{e:?}");
    assert_msg(&e, &["max_compute_workgroup_storage_size", "attention"]);
    // WebGPU's downlevel devices bind 4 storage buffers per stage; Mesa's state pass needs 8.
    let small = ctx_with_limits(|_| wgpu::Limits::downlevel_defaults());
    let cfg = parse(&config("mesanet")).unwrap();
    let ck = Checkpoint::from_f32("<mesa>", random_weights(&cfg, 2)).unwrap();
    let mc = mesa_config(30);
    let layer = MesaLayer::load(&small, mc, &ck, "model.layers.0.attn.", DType::F32).unwrap();
    let x = small
        .upload(&rand(8 * 32, 1, 1.0), &[1, 8, 32], DType::F32)
        .unwrap();
    let e = small.run(|rec| layer.forward(rec, &x)).unwrap_err();
    assert!(matches!(e, Error::LimitExceeded { .. }), "{e:?}");
    assert_msg(&e, &["max_storage_buffers_per_shader_stage"]);
}

#[test]
fn out_of_memory_is_an_error_and_work_continues_after_it() {
    // lavapipe over-commits host memory, so the driver never says no; a budget makes the context
    // refuse first, through the same error a driver's out-of-memory gives.
    let ctx = Context::new_blocking().expect("adapter");
    ctx.set_memory_budget(Some(64 << 20));
    let mut held = Vec::new();
    let e = loop {
        match ctx.alloc(&[4 << 20], DType::F32) {
            Ok(t) => held.push(t),
            Err(e) => break e,
        }
        assert!(held.len() <= 16, "the budget was not enforced");
    };
    assert!(matches!(e, Error::OutOfMemory { .. }), "{e}");
    assert_msg(&e, &["memory budget", "67108864"]);
    assert!(!held.is_empty());
    // Freeing tensors makes room again on the same context, and results are right.
    held.clear();
    let x = rand(64, 1, 1.0);
    let t = ctx.upload(&x, &[64], DType::F32).unwrap();
    let y = ctx
        .run(|rec| chunkwise::ops::elementwise::add(rec, &t, &t))
        .unwrap();
    let want: Vec<f32> = x.iter().map(|v| v + v).collect();
    assert_eq!(ctx.download(&y).unwrap(), want);
    // A model that needs more than the budget fails to load, and loads once the budget allows.
    ctx.set_memory_budget(Some(1 << 10));
    let cfg = parse(&config("rat")).unwrap();
    let ck = Checkpoint::from_f32("<w>", random_weights(&cfg, 1)).unwrap();
    let e = Model::load(&ctx, cfg.clone(), &ck, DType::F32)
        .err()
        .unwrap();
    assert!(matches!(e, Error::OutOfMemory { .. }), "{e}");
    ctx.set_memory_budget(None);
    Model::load(&ctx, cfg, &ck, DType::F32).unwrap();
}

#[test]
fn eight_threads_run_layers_on_one_context() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Model>();
    send_sync::<AttentionLayer>();
    send_sync::<RatLayer>();
    send_sync::<MesaLayer>();
    let ctx = ctx();
    let layers = every_layer();
    let (t, d) = (37, 32);
    let inputs: Vec<Vec<f32>> = (0..8).map(|i| rand(t * d, 100 + i, 1.0)).collect();
    // Answers computed one at a time first; the threads must reproduce them exactly.
    let want: Vec<Vec<Vec<f32>>> = inputs
        .iter()
        .map(|x| {
            let x = ctx.upload(x, &[1, t, d], DType::F32).unwrap();
            layers
                .iter()
                .map(|(_, run)| ctx.download(&run(&x).unwrap()).unwrap())
                .collect()
        })
        .collect();
    std::thread::scope(|s| {
        for (i, x) in inputs.iter().enumerate() {
            let (layers, want) = (&layers, &want);
            s.spawn(move || {
                let x = ctx.upload(x, &[1, t, d], DType::F32).unwrap();
                for round in 0..3 {
                    for j in 0..layers.len() {
                        let k = (j + i + round) % layers.len();
                        let got = ctx.download(&layers[k].1(&x).unwrap()).unwrap();
                        assert_eq!(got, want[i][k], "thread {i}, {}", layers[k].0);
                    }
                }
            });
        }
    });
}

// ---- long runs ---------------------------------------------------------------------------------

/// Decodes `steps` tokens greedily after a short prompt; returns the tokens, the logits of every
/// 1000th step, and the pool's bytes held (in use + cached) after each 1000 steps.
fn long_decode(m: &Model, steps: usize) -> (Vec<u32>, Vec<Vec<f32>>, Vec<u64>) {
    let ctx = ctx();
    let prompt = m.tokens(ctx, &[72, 101, 108, 108, 111], 1).unwrap();
    let (l, mut cache) = ctx.run(|rec| m.prefill(rec, &prompt)).unwrap();
    let v = m.config().vocab_size;
    let mut row = ctx.download(&l).unwrap()[4 * v..].to_vec();
    let (mut toks, mut snaps, mut mem) = (Vec::new(), Vec::new(), Vec::new());
    let mut sampler = Sampler::greedy();
    for i in 0..steps {
        let tok = sampler.sample(&row);
        toks.push(tok);
        let ids = m.tokens(ctx, &[tok], 1).unwrap();
        row = ctx
            .download(&ctx.run(|rec| m.step(rec, &mut cache, &ids)).unwrap())
            .unwrap();
        if (i + 1) % 1000 == 0 {
            snaps.push(row.clone());
            let s = ctx.pool_stats();
            mem.push(s.bytes_in_use + s.bytes_cached);
        }
    }
    (toks, snaps, mem)
}

#[test]
fn ten_thousand_decode_steps_keep_memory_flat_and_repeat_bit_for_bit() {
    // A hybrid model decodes through both cache kinds: RAT's chunk cache and a sliding-window ring.
    let mut c = config("hybrid");
    c["max_seq_len"] = json!(10_016);
    let cfg = parse(&c).unwrap();
    let ck = Checkpoint::from_f32("<w>", random_weights(&cfg, 4)).unwrap();
    let m = Model::load(ctx(), cfg, &ck, DType::F32).unwrap();
    let (toks, snaps, mem) = long_decode(&m, 10_000);
    assert_eq!(toks.len(), 10_000);
    assert!(snaps.iter().flatten().all(|v| v.is_finite()));
    // After the first thousand steps (warm-up: pipelines, pool size classes) nothing grows.
    assert!(
        mem[1..].iter().all(|&b| b == mem[1]),
        "GPU memory held by the pool after each 1000 steps: {mem:?}"
    );
    let (toks2, snaps2, _) = long_decode(&m, 10_000);
    assert_eq!(toks, toks2, "identical inputs gave different tokens");
    assert!(snaps == snaps2, "identical inputs gave different logits");
}

/// Crashers and wrong acceptances found by tests/fuzz.rs, kept as named regression tests.
#[test]
fn fuzz_regressions() {
    // A positive norm_eps below f32's range passed the f64 check and became 0 in f32.
    let mut c = config("rat");
    c["norm_eps"] = json!(3.322380752661143e-309);
    assert_msg(&parse(&c).unwrap_err(), &["norm_eps"]);
}
