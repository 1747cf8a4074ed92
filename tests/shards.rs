//! Tensors past the binding limit are split, not refused: an embedding table and LM head larger
//! than lavapipe's 128 MiB binding give the reference's logits, and lowering the limit the code
//! plans with (`Context::set_binding_limit`) changes no output of forward, prefill or generation.

mod common;
use std::path::Path;
use std::sync::Arc;

use chunkwise::model::checkpoint::Fill;
use chunkwise::model::generate::generate;
use chunkwise::model::random::random_checkpoint;
use chunkwise::model::sampling::Sampler;
use chunkwise::model::{Checkpoint, Model, ModelConfig};
use chunkwise::{Context, DType};
use common::*;

/// rel-RMS of `got` against `want`, both f32.
fn rel(got: &[f32], want: &[f32]) -> f64 {
    let w: Vec<f64> = want.iter().map(|&x| x as f64).collect();
    chunkwise::reference::rel_rms(got, &w)
}

/// The golden 2-layer RAT LM with its vocabulary padded by rows that no input uses, to just past
/// the adapter's binding limit: the first 256 logits of every position must stay the reference's
/// (a padded row only adds logits of its own).
#[test]
fn padded_vocabulary_past_the_binding_limit_keeps_the_reference_logits() {
    // lavapipe's own limit; pinned so that a GPU binding gigabytes does not need a table that
    // large.
    let pinned = Context::new_blocking().unwrap();
    pinned.set_binding_limit(Some(128 << 20));
    let ctx = &pinned;
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/golden/rat");
    let case: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("model_rat_2l_v256_d64_l16_seed7.json")).unwrap(),
    )
    .unwrap();
    let golden =
        Checkpoint::open(&dir.join("model_rat_2l_v256_d64_l16_seed7.safetensors")).unwrap();
    let (v, d) = (256, 64);
    let limit = ctx.binding_limit();
    // Rows of 64 f32 values: enough for a table one block past the limit.
    let padded = (limit as usize / (d * 4) + 64).next_multiple_of(4);
    let mut fills: Vec<(String, Vec<usize>, Fill)> = Vec::new();
    for name in golden.names().map(str::to_string).collect::<Vec<_>>() {
        let (data, shape) = golden.numbers(&name, None).unwrap();
        let data = Arc::new(data);
        // The reference saves its tied head as a tensor of its own: both are padded.
        if name == "embedding.wte.weight" || name == "head.lm_head.weight" {
            assert_eq!(shape, [v, d]);
            let f: Fill = Arc::new(move |r: std::ops::Range<usize>| {
                r.map(|i| match data.get(i) {
                    Some(&x) => x,
                    // Small values: padded logits stay in the range of the real ones.
                    None => ((i * 7919 % 1000) as f32 / 1000.0 - 0.5) * 0.04,
                })
                .collect()
            });
            fills.push((name, vec![padded, d], f));
        } else {
            let f: Fill = Arc::new(move |r: std::ops::Range<usize>| data[r].to_vec());
            fills.push((name, shape, f));
        }
    }
    let ck = Checkpoint::from_fills("<padded golden>", fills);
    let mut cfg = ModelConfig::from_json("golden", &case["config"], Some("rat")).unwrap();
    cfg.vocab_size = padded;
    let model = Model::load(ctx, cfg, &ck, DType::F32).unwrap();
    assert!(
        (padded * d * 4) as u64 > limit && model.vocab_blocks() >= 2,
        "the table ({} bytes) must pass the binding limit ({limit}) and be split ({} blocks)",
        padded * d * 4,
        model.vocab_blocks()
    );
    let (ids, shape) = golden.numbers("input_ids", None).unwrap();
    let (b, t) = (shape[0], shape[1]);
    let ids: Vec<u32> = ids.iter().map(|&x| x as u32).collect();
    let tokens = model.tokens(ctx, &ids, b).unwrap();
    let logits = ctx
        .download(&ctx.run(|rec| model.forward(rec, &tokens)).unwrap())
        .unwrap();
    assert_eq!(logits.len(), b * t * padded);
    let ours: Vec<f32> = logits
        .chunks(padded)
        .flat_map(|row| row[..v].to_vec())
        .collect();
    let (want, _) = golden.f32("logits", Some(&[b, t, v])).unwrap();
    let err = rel(&ours, &want);
    // f32 storage: the golden model case's tolerance (tests/golden.rs).
    assert!(err < 1e-5, "rel-RMS {err:.3e} against the reference logits");
    // And the last position's logits from prefill_last (head on one row, split table).
    let (last, _) = ctx.run(|rec| model.prefill_last(rec, &tokens)).unwrap();
    let last = ctx.download(&last).unwrap();
    let e = rel(&last, &logits[(t - 1) * padded..t * padded]);
    assert!(e < 1e-6, "prefill_last vs forward: rel-RMS {e:.3e}");
}

fn tiny(kind: &str, vocab: usize) -> (ModelConfig, Checkpoint) {
    let json = serde_json::json!({
        "model_kind": kind, "vocab_size": vocab, "d_model": 32, "num_layers": 2,
        "num_head": 2, "d_head": 16, "ngroups": 2, "chunk_size": 8, "d_ffn": 1024,
        "max_seq_len": 64,
    });
    let cfg = ModelConfig::from_json("<tiny>", &json, None).unwrap();
    let ck = random_checkpoint(&cfg, 3);
    (cfg, ck)
}

/// Every split path (vocabulary blocks for the embedding and the head, logits and FFN rows in
/// blocks) against the unsplit run, f32 and f16; an odd vocabulary in f16 makes logit rows that
/// are not whole 4-byte words.
#[test]
fn a_lowered_binding_limit_changes_no_output() {
    let small = Context::new_blocking().unwrap();
    // Above every weight of the tiny models (the largest, an FFN matrix, is 1024 × 32 f32 =
    // 128 KiB) and every mixer activation (3 × 21 rows of at most 160 values), below the
    // 4096 × 32 table (4 blocks in f32, 2 in f16), 9 rows of f32 logits and, in f32, 36 rows of the 1024-wide FFN
    // activation (3 × 21 = 63 rows: 2 blocks). In f16 with 4095 columns the logit blocks have an
    // even row count (18) and the last (9 rows) ends inside a 4-byte word.
    small.set_binding_limit(Some(150_000));
    for (kind, vocab, dtype) in [
        ("rat", 4096, DType::F32),
        ("mesanet", 4096, DType::F32),
        ("rat", 4095, DType::F16),
    ] {
        let (cfg, ck) = tiny(kind, vocab);
        let whole = Model::load(ctx(), cfg.clone(), &ck, dtype).unwrap();
        let split = Model::load(&small, cfg, &ck, dtype).unwrap();
        assert_eq!(whole.vocab_blocks(), 1);
        assert!(
            split.vocab_blocks() >= 2,
            "{kind}: {}",
            split.vocab_blocks()
        );
        let ids: Vec<u32> = (0..3 * 21).map(|i| (i * 977 % vocab) as u32).collect();
        let run = |c: &Context, m: &Model| {
            let t = m.tokens(c, &ids, 3).unwrap();
            let all = c
                .download(&c.run(|rec| m.forward(rec, &t)).unwrap())
                .unwrap();
            let (last, _) = c.run(|rec| m.prefill_last(rec, &t)).unwrap();
            (all, c.download(&last).unwrap())
        };
        let (a, la) = run(ctx(), &whole);
        let (b, lb) = run(&small, &split);
        assert_eq!(a.len(), 3 * 21 * vocab);
        let tol = if dtype == DType::F16 { 1e-3 } else { 1e-6 };
        let e = rel(&b, &a);
        assert!(e < tol, "{kind} {dtype:?} forward: rel-RMS {e:.3e}");
        let e = rel(&lb, &la);
        assert!(e < tol, "{kind} {dtype:?} prefill_last: rel-RMS {e:.3e}");
        for (bi, row) in la.chunks(vocab).enumerate() {
            let at = (bi * 21 + 20) * vocab;
            let e = rel(row, &a[at..at + vocab]);
            assert!(e < tol, "{kind}: last row of sequence {bi}: {e:.3e}");
        }
        let gen = |c: &Context, m: &Model| {
            let p = vec![ids[..9].to_vec()];
            generate(c, m, &p, 6, &mut Sampler::greedy(), |_, _| {})
                .unwrap()
                .0
        };
        assert_eq!(
            gen(ctx(), &whole),
            gen(&small, &split),
            "{kind} {dtype:?}: greedy tokens"
        );
    }
}

/// A model folder whose weights are split over two shards and an index, as Hugging Face saves
/// large models; `names` may drop or move entries of the index to make it inconsistent.
fn sharded_folder(
    tag: &str,
    edit: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>),
) -> std::path::PathBuf {
    use chunkwise::model::checkpoint::save_f32;
    use chunkwise::model::random::random_weights;
    let dir = std::env::temp_dir().join(format!("chunkwise-shards-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let json = serde_json::json!({
        "model_kind": "rat", "vocab_size": 300, "d_model": 32, "num_layers": 2,
        "num_head": 2, "d_head": 16, "ngroups": 2, "chunk_size": 8, "d_ffn": 64,
        "max_seq_len": 64, "tokenizer": "bytes",
    });
    std::fs::write(dir.join("config.json"), json.to_string()).unwrap();
    let cfg = ModelConfig::from_json("<sharded>", &json, None).unwrap();
    let all = random_weights(&cfg, 4);
    let (a, b): (Vec<_>, Vec<_>) = all.into_iter().enumerate().partition(|(i, _)| i % 2 == 0);
    let mut map = serde_json::Map::new();
    for (file, part) in [
        ("model-00001-of-00002.safetensors", a),
        ("model-00002-of-00002.safetensors", b),
    ] {
        let part: Vec<_> = part.into_iter().map(|(_, t)| t).collect();
        for (name, _, _) in &part {
            map.insert(name.clone(), file.into());
        }
        save_f32(&dir.join(file), &part).unwrap();
    }
    edit(&mut map);
    let index = serde_json::json!({ "metadata": {}, "weight_map": map });
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
    dir
}

#[test]
fn sharded_checkpoints_load_and_their_inconsistencies_are_named() {
    use chunkwise::model::checkpoint::save_f32;
    use chunkwise::model::random::random_weights;
    use chunkwise::Error;
    let ctx = ctx();
    // The same weights in one file give the same logits.
    let dir = sharded_folder("ok", |_| {});
    let sharded = Model::open(ctx, &dir, DType::F32).unwrap();
    let single_dir = dir.with_extension("single");
    std::fs::create_dir_all(&single_dir).unwrap();
    std::fs::copy(dir.join("config.json"), single_dir.join("config.json")).unwrap();
    save_f32(
        &single_dir.join("model.safetensors"),
        &random_weights(sharded.config(), 4),
    )
    .unwrap();
    let single = Model::open(ctx, &single_dir, DType::F32).unwrap();
    let ids: Vec<u32> = (0..12).map(|i| i * 23 % 300).collect();
    let logits = |m: &Model| {
        let t = m.tokens(ctx, &ids, 1).unwrap();
        ctx.download(&ctx.run(|rec| m.forward(rec, &t)).unwrap())
            .unwrap()
    };
    assert_eq!(logits(&sharded), logits(&single));
    let msg = |e: Error| e.to_string();
    // An index naming a shard the folder lacks.
    let d = sharded_folder("missing", |m| {
        m.insert(
            "backbone.ln.weight".into(),
            "model-00003-of-00003.safetensors".into(),
        );
    });
    let e = msg(Model::open(ctx, &d, DType::F32).err().unwrap());
    assert!(
        e.contains("model-00003-of-00003.safetensors") && e.contains("not in the folder"),
        "{e}"
    );
    // A shard holding a tensor the index does not list.
    let d = sharded_folder("unlisted", |m| {
        m.remove("backbone.ln.weight");
    });
    let e = msg(Model::open(ctx, &d, DType::F32).err().unwrap());
    assert!(
        e.contains("backbone.ln.weight") && e.contains("does not list"),
        "{e}"
    );
    // An index listing a tensor under a shard that does not hold it.
    let d = sharded_folder("moved", |m| {
        let f = m["backbone.ln.weight"].as_str().unwrap().to_string();
        let other = if f.contains("00001") {
            "model-00002-of-00002.safetensors"
        } else {
            "model-00001-of-00002.safetensors"
        };
        m.insert("backbone.ln.weight".into(), other.into());
        m.insert("extra.weight".into(), other.into());
    });
    let e = msg(Model::open(ctx, &d, DType::F32).err().unwrap());
    assert!(e.contains("backbone.ln.weight"), "{e}");
    // A model larger than the memory the context may use: refused before uploading, naming both.
    let small = Context::new_blocking().unwrap();
    small.set_memory_budget(Some(100_000));
    let e = Model::open(&small, &dir, DType::F32).err().unwrap();
    assert!(matches!(e, Error::OutOfMemory { .. }), "{e:?}");
    let e = msg(e);
    assert!(e.contains("100000") && e.contains("need"), "{e}");
    assert_eq!(small.pool_stats().bytes_in_use, 0, "nothing was uploaded");
}

/// Deterministic values in about [-0.5, 0.5).
fn vals(n: usize, seed: usize) -> Vec<f32> {
    (0..n)
        .map(|i| ((i * 7919 + seed * 104_729) % 1000) as f32 / 1000.0 - 0.5)
        .collect()
}

/// A Linear whose weight is past the binding limit keeps it as blocks of rows, and an x or y
/// past it runs in blocks of rows: the outputs equal the unsplit ones and the f64 product, for a
/// block of outputs that crosses weight blocks, with the folded norm, residual and gate (odd K
/// in f16: rows that are not whole 4-byte words; K = 64: the CPU schedules' prepared Wᵀ per block).
#[test]
fn linear_weights_and_activations_past_the_binding_limit_run_in_blocks() {
    use chunkwise::ops::gemm::{Fused, Linear, Slice};
    let small = Context::new_blocking().unwrap();
    small.set_binding_limit(Some(8_192));
    for dtype in dtypes() {
        for (n, k) in [(300, 37), (200, 64)] {
            let w = vals(n * k, 1);
            let build =
                |c: &Context| Linear::new(c, c.upload(&w, &[n, k], dtype).unwrap()).unwrap();
            let (whole, split) = (build(ctx()), build(&small));
            assert_eq!(whole.blocks(), 1);
            assert!(split.blocks() >= 2, "{n}×{k}: {} blocks", split.blocks());
            let outs = 50..n - 10;
            let cols = outs.len();
            for m in [1, 5, 120] {
                let x = vals(m * k, 2);
                let res = vals(m * cols, 3);
                let z = vals(m * (k + 3), 4);
                let norm = vals(k, 5);
                // The gate tensor is bound whole: only where it fits the lowered limit. Unfolded,
                // its rows are copied, which needs whole 4-byte words (even K and offsets in f16).
                let gated = m * (k + 3) * 4 <= 8_192 && k % 2 == 0;
                let run = |c: &Context, lin: &Linear| {
                    let lin = lin.rows(outs.clone()).unwrap();
                    let xt = c.upload(&x, &[m, k], dtype).unwrap();
                    let rt = c.upload(&res, &[m, cols], dtype).unwrap();
                    let zt = c.upload(&z, &[m, k + 3], dtype).unwrap();
                    let nt = c.upload(&norm, &[k], dtype).unwrap();
                    let plain = c.run(|rec| lin.forward(rec, &xt)).unwrap();
                    let fused = Fused {
                        norm: Some((&nt, 1e-5)),
                        residual: Some(&rt),
                        gate: gated.then_some(Slice {
                            tensor: &zt,
                            offset: 2,
                            ld: k + 2,
                        }),
                    };
                    let folded = c.run(|rec| lin.forward_fused(rec, &xt, fused)).unwrap();
                    (c.download(&plain).unwrap(), c.download(&folded).unwrap())
                };
                let (a, fa) = run(ctx(), &whole);
                let (b, fb) = run(&small, &split);
                let what = format!("{n}×{k} rows {outs:?}, m = {m}");
                let tol = if dtype == DType::F16 { 1e-3 } else { 1e-6 };
                let e = rel(&b, &a);
                assert!(e < tol, "{what} {dtype:?} plain: rel-RMS {e:.3e}");
                let e = rel(&fb, &fa);
                assert!(e < tol, "{what} {dtype:?} fused: rel-RMS {e:.3e}");
                // The plain product against f64 (the inputs as stored).
                let q = |v: &[f32]| -> Vec<f64> {
                    v.iter()
                        .map(|&x| match dtype {
                            DType::F16 => half::f16::from_f32(x).to_f64(),
                            DType::F32 => x as f64,
                        })
                        .collect()
                };
                let (xq, wq) = (q(&x), q(&w));
                let want: Vec<f64> = (0..m)
                    .flat_map(|i| {
                        let (xq, wq) = (&xq, &wq);
                        outs.clone().map(move |j| {
                            (0..k).map(|l| xq[i * k + l] * wq[j * k + l]).sum::<f64>()
                        })
                    })
                    .collect();
                assert_close(&b, &want, dtype, &what);
            }
        }
    }
}

fn tiny_with(kind: &str, vocab: usize, max_seq_len: usize) -> (ModelConfig, Checkpoint) {
    let json = serde_json::json!({
        "model_kind": kind, "vocab_size": vocab, "d_model": 32, "num_layers": 2,
        "num_head": 2, "d_head": 16, "ngroups": 2, "chunk_size": 8, "d_ffn": 1024,
        "max_seq_len": max_seq_len,
    });
    let cfg = ModelConfig::from_json("<tiny>", &json, None).unwrap();
    let ck = random_checkpoint(&cfg, 5);
    (cfg, ck)
}

/// A limit below the models' weights, a batch's activations and caches, and the logits'
/// buffer: weights run in row blocks, sequences in groups (prefill and every decode step),
/// logits in blocks that each fit one buffer ([`Model::forward_blocks`]); nothing changes.
#[test]
fn a_limit_below_weights_batches_and_caches_splits_them_all() {
    let small = Context::new_blocking().unwrap();
    // Every FFN weight (1024 × 32 f32 = 128 KiB) is past the limits; a layer's widest activation
    // (RAT and attention: 160 f32 values per token, 640 B, 62 rows in 40,000 B; MesaNet without
    // an output gate: q, k, v and two gates per head, 100 values, 400 B, 50 rows in 20,000 B) takes 2 of the 3 sequences of 21 tokens.
    for (kind, vocab, max_len, dtype, limit) in [
        // RAT's chunk-key cache: 2 heads × 128 slots × 16 × 4 B = 16 KiB per sequence: 2 a group.
        ("rat", 4096, 1024, DType::F32, 40_000),
        // Attention's key cache: 256 × 32 × 4 B = 32 KiB per sequence: 1 a group.
        ("attention", 4096, 256, DType::F32, 40_000),
        ("mesanet", 4096, 64, DType::F32, 20_000),
        ("rat", 4095, 2048, DType::F16, 40_000),
    ] {
        small.set_binding_limit(Some(limit));
        let (cfg, ck) = tiny_with(kind, vocab, max_len);
        let whole = Model::load(ctx(), cfg.clone(), &ck, dtype).unwrap();
        let split = Model::load(&small, cfg, &ck, dtype).unwrap();
        let what = format!("{kind} {dtype:?}");
        assert_eq!(whole.new_cache(ctx(), 3).unwrap().groups(), 1);
        let groups = split.new_cache(&small, 3).unwrap().groups();
        if kind != "mesanet" {
            assert!(groups >= 2, "{what}: {groups} cache groups");
        }
        let ids: Vec<u32> = (0..3 * 21).map(|i| (i * 977 % vocab) as u32).collect();
        let run = |c: &Context, m: &Model| {
            let t = m.tokens(c, &ids, 3).unwrap();
            let all = c
                .download(&c.run(|rec| m.forward(rec, &t)).unwrap())
                .unwrap();
            let (pre, cache) = c.run(|rec| m.prefill(rec, &t)).unwrap();
            let (last, _) = c.run(|rec| m.prefill_last(rec, &t)).unwrap();
            (
                all,
                c.download(&pre).unwrap(),
                c.download(&last).unwrap(),
                cache.groups(),
            )
        };
        let (a, pa, la, ga) = run(ctx(), &whole);
        let (b, pb, lb, gb) = run(&small, &split);
        assert_eq!(ga, 1, "{what}");
        assert!(
            gb >= 2,
            "{what}: the prefill ran {gb} group(s) of sequences"
        );
        let tol = if dtype == DType::F16 { 1e-3 } else { 1e-6 };
        for (name, got, want) in [
            ("forward", &b, &a),
            ("prefill", &pb, &pa),
            ("prefill_last", &lb, &la),
        ] {
            assert_eq!(got.len(), want.len(), "{what} {name}");
            let e = rel(got, want);
            assert!(e < tol, "{what} {name}: rel-RMS {e:.3e}");
        }
        // Three prompts decode together: each step runs the cache groups one after another.
        let gen = |c: &Context, m: &Model| {
            let p: Vec<Vec<u32>> = (0..3).map(|s| ids[s * 21..s * 21 + 9].to_vec()).collect();
            generate(c, m, &p, 6, &mut Sampler::greedy(), |_, _| {})
                .unwrap()
                .0
        };
        assert_eq!(
            gen(ctx(), &whole),
            gen(&small, &split),
            "{what}: greedy tokens"
        );
        // Logits past the buffer limit: one tensor is refused by name, blocks are handed out.
        small.set_buffer_limit(Some(100_000));
        let t = split.tokens(&small, &ids, 3).unwrap();
        let e = small.run(|rec| split.forward(rec, &t)).err().unwrap();
        assert!(e.to_string().contains("max_buffer_size"), "{what}: {e}");
        let mut host = vec![f32::NAN; a.len()];
        let mut blocks = 0;
        small
            .run(|rec| {
                split.forward_blocks(rec, &t, |rec, rows, l| {
                    assert!(
                        l.bytes() <= 100_000,
                        "{what}: a block of {} bytes",
                        l.bytes()
                    );
                    rec.flush()?;
                    let got = rec.context().download(l)?;
                    host[rows.start * vocab..rows.end * vocab].copy_from_slice(&got);
                    blocks += 1;
                    Ok(())
                })
            })
            .unwrap();
        small.set_buffer_limit(None);
        assert!(blocks >= 2, "{what}: {blocks} logit blocks");
        let e = rel(&host, &a);
        assert!(e < tol, "{what} forward_blocks: rel-RMS {e:.3e}");
    }
}
