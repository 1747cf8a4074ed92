//! The tune cache: `chunkwise tune`'s choices are checked, saved per adapter, loaded by a new
//! context, and followed by the launch wrappers; a broken cache is a named error, never a crash.

mod common;

use chunkwise::ops::gemm::{self, Tile};
use chunkwise::tune::{self, Choice, GemmShape, Tuning};
use chunkwise::{Context, ContextOptions, DType, Schedule};

fn tmp(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("chunkwise-tune-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn fresh_ctx(cache: Option<std::path::PathBuf>) -> Context {
    let opts = ContextOptions {
        schedule: Schedule::Gpu,
        tune_cache: cache,
        ..ContextOptions::from_env().unwrap()
    };
    pollster::block_on(Context::with_options(opts)).expect("GPU tests need a wgpu adapter")
}

/// The register-blocked GEMM tiles a context has compiled: "BMxBN", "v4" for vec4 loads.
fn tiles_used(ctx: &Context) -> Vec<String> {
    ctx.compiled_kernels()
        .into_iter()
        .filter(|k| k.file.starts_with("gemm_tiled"))
        .map(|k| {
            let c = |name| {
                let bits = k.constants.iter().find(|(n, _)| *n == name).unwrap().1;
                f64::from_bits(bits)
            };
            let v4 = if k.file.ends_with("_v4.wgsl") {
                " v4"
            } else {
                ""
            };
            format!("{}x{}{v4}", c("BM"), c("BN"))
        })
        .collect()
}

fn run_gemm(ctx: &Context, m: usize, n: usize, k: usize) {
    let x = ctx
        .upload(&vec![0.5; m * k], &[1, m, k], DType::F32)
        .unwrap();
    let w = ctx.upload(&vec![0.25; n * k], &[n, k], DType::F32).unwrap();
    let y = ctx
        .download(&ctx.run(|rec| gemm::gemm(rec, &x, &w)).unwrap())
        .unwrap();
    assert!(y
        .iter()
        .all(|&v| (v - 0.125 * k as f32).abs() < 1e-3 * k as f32));
}

#[test]
fn tuning_checks_times_saves_and_a_new_context_follows_the_cache() {
    let ctx = fresh_ctx(None);
    let shapes = [GemmShape {
        rows: 200,
        n: 64,
        k: 64,
        dtype: DType::F32,
    }];
    let mut heard = 0;
    let mut tuning = tune::tune_gemm(&ctx, &shapes, 1, |_, _| heard += 1).unwrap();
    assert_eq!((heard, tuning.len()), (1, 1));
    let class = tune::gemm_class(200, 64, 64, DType::F32);
    let c = tuning.get("gemm", &class).expect("the tuned class");
    // Every register-blocked tile passed its check on this adapter and was timed; tensor-core
    // tiles were timed only where the device has cooperative matrices, else rejected with why.
    for tile in Tile::ALL {
        let timed = c.ms.contains_key(tile.name());
        let why = c.rejected.get(tile.name());
        if tile.coop_size().is_none() {
            assert!(timed && why.is_none(), "{tile:?}: {c:?}");
        } else if !ctx
            .features()
            .contains(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX)
        {
            assert!(!timed, "{tile:?}: {c:?}");
            assert!(why.is_some_and(|w| w.contains("not available")), "{c:?}");
        }
    }
    assert!(Tile::parse(&c.choice).is_some());

    // Force a choice the size rule would not make, so that following the cache is visible.
    assert_eq!(Tile::default_for(1, 200, 64), Tile::T64x64);
    let forced = Choice {
        choice: "128x64".into(),
        ..c.clone()
    };
    tuning.insert("gemm", &class, forced);
    let path = tmp("cache.json");
    let _ = std::fs::remove_file(&path);
    tuning.save(&path, ctx.adapter_info()).unwrap();

    let tuned = fresh_ctx(Some(path.clone()));
    let t = tuned.tuning().expect("the cache has this adapter");
    assert_eq!(t.source.as_deref(), Some(path.as_path()));
    assert!(
        tuned.schedule_summary().contains("tuned: "),
        "{}",
        tuned.schedule_summary()
    );
    run_gemm(&tuned, 200, 64, 64);
    assert_eq!(tiles_used(&tuned), ["128x64 v4"]);
    // A class the cache lacks takes the size rule.
    run_gemm(&tuned, 3000, 300, 40);
    assert!(tiles_used(&tuned).contains(&"64x64 v4".to_string()));

    let untuned = fresh_ctx(None);
    assert!(untuned.schedule_summary().contains("untuned"));
    run_gemm(&untuned, 200, 64, 64);
    assert_eq!(tiles_used(&untuned), ["64x64 v4"]);
}

#[test]
fn a_cache_keeps_other_adapters_and_ignores_them() {
    let ctx = common::ctx();
    let path = tmp("two.json");
    let _ = std::fs::remove_file(&path);
    let mut other_info = ctx.adapter_info().clone();
    other_info.name = "some other GPU".into();
    let mut t = Tuning::default();
    t.insert(
        "gemm",
        "r256 n64 k64 f32",
        Choice {
            choice: "128x128".into(),
            shape: "256x64x64".into(),
            ms: Default::default(),
            rejected: Default::default(),
        },
    );
    t.save(&path, &other_info).unwrap();
    assert!(Tuning::load(&path, ctx.adapter_info()).unwrap().is_none());
    Tuning::default().save(&path, ctx.adapter_info()).unwrap();
    // Both adapters' entries are in the file; each reads its own.
    let other = Tuning::load(&path, &other_info).unwrap().unwrap();
    assert_eq!(
        other.get("gemm", "r256 n64 k64 f32").unwrap().choice,
        "128x128"
    );
    assert!(Tuning::load(&path, ctx.adapter_info())
        .unwrap()
        .unwrap()
        .is_empty());
    // A driver update re-tunes: the entry no longer matches.
    other_info.driver_info.push_str(" (updated)");
    assert!(Tuning::load(&path, &other_info).unwrap().is_none());
}

#[test]
fn a_broken_cache_is_a_named_error_and_a_context_still_opens() {
    let path = tmp("broken.json");
    std::fs::write(&path, "{ not json").unwrap();
    let e = Tuning::load(&path, common::ctx().adapter_info()).unwrap_err();
    assert!(e.to_string().contains("broken.json"), "{e}");
    std::fs::write(&path, r#"{"format": 99, "adapters": []}"#).unwrap();
    let e = Tuning::load(&path, common::ctx().adapter_info()).unwrap_err();
    assert!(e.to_string().contains("chunkwise tune"), "{e}");
    let ctx = fresh_ctx(Some(path));
    assert!(ctx.tuning().is_none());
    run_gemm(&ctx, 70, 30, 20);
}

#[test]
fn mesa_plans_are_checked_timed_and_the_tuned_plan_is_followed() {
    use chunkwise::ops::mesa::{cg_plans, gpu_cg_plan, parse_plan, plan_name};
    let ctx = fresh_ctx(None);
    let shapes = [tune::CgShape {
        t: 40,
        heads: 2,
        d: 16,
        dtype: DType::F32,
    }];
    let mut tuning = tune::tune_mesa(&ctx, &shapes, 1, |_, _| {}).unwrap();
    let class = tune::mesa_class(16, DType::F32);
    let c = tuning
        .get("mesa_cg", &class)
        .expect("the tuned class")
        .clone();
    // At D = 16 every plan fits any device's workgroup memory: each passed its check and was timed.
    for plan in cg_plans(16) {
        assert!(c.ms.contains_key(&plan_name(plan)), "{plan:?}: {c:?}");
        assert_eq!(parse_plan(&plan_name(plan)), Some(plan));
    }
    assert!(parse_plan(&c.choice).is_some());
    // The default is the first plan the device holds; a cache naming another is followed, and a
    // cached plan the device cannot hold falls back to the default.
    let default = gpu_cg_plan(&ctx, 16, DType::F32).unwrap();
    assert_eq!(default, cg_plans(16)[0]);
    let other = (8, false);
    tuning.insert(
        "mesa_cg",
        &class,
        Choice {
            choice: plan_name(other),
            ..c.clone()
        },
    );
    let big = tune::mesa_class(128, DType::F32);
    tuning.insert(
        "mesa_cg",
        &big,
        Choice {
            choice: "c32+skk".into(),
            ..c.clone()
        },
    );
    let path = tmp("mesa.json");
    let _ = std::fs::remove_file(&path);
    tuning.save(&path, ctx.adapter_info()).unwrap();
    let tuned = fresh_ctx(Some(path));
    assert_eq!(gpu_cg_plan(&tuned, 16, DType::F32).unwrap(), other);
    assert_eq!(
        gpu_cg_plan(&tuned, 128, DType::F32).unwrap(),
        gpu_cg_plan(&ctx, 128, DType::F32).unwrap(),
        "C = 32 at D = 128 is no plan (C·D > 2048)"
    );
}

#[test]
fn attention_kernels_are_checked_timed_and_the_tuned_kernel_is_followed() {
    use chunkwise::ops::attention::{self as attn, FwdVariant};
    let ctx = fresh_ctx(None);
    let shapes = [tune::AttentionShape {
        t: 100,
        heads: 2,
        dh: 32,
        dtype: DType::F32,
    }];
    let mut tuning = tune::tune_attention(&ctx, &shapes, 1, |_, _| {}).unwrap();
    let class = tune::attention_class(100, 32, DType::F32);
    let c = tuning
        .get("attention", &class)
        .expect("the tuned class")
        .clone();
    // Every kernel this adapter can run passed its check and was timed; the others (tensor cores
    // without cooperative matrices, subgroup kernels without subgroups) are rejected with why.
    for v in FwdVariant::all() {
        let timed = c.ms.contains_key(&v.name());
        let why = c.rejected.get(&v.name());
        assert!(timed != why.is_some(), "{v:?}: {c:?}");
        if v.usable(&ctx, DType::F32, 32).is_ok() {
            assert!(timed, "{v:?}: {c:?}");
        }
        if v.coop_size().is_some()
            && !ctx
                .features()
                .contains(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX)
        {
            assert!(why.is_some_and(|w| w.contains("not available")), "{c:?}");
        }
        assert_eq!(FwdVariant::parse(&v.name()), Some(v));
    }
    assert!(FwdVariant::parse(&c.choice).is_some());

    // A cache naming the blocked-product kernel is followed for its class only.
    tuning.insert(
        "attention",
        &class,
        tune::Choice {
            choice: FwdVariant::Blocked.name(),
            ..c.clone()
        },
    );
    let path = tmp("attention.json");
    let _ = std::fs::remove_file(&path);
    tuning.save(&path, ctx.adapter_info()).unwrap();
    let tuned = fresh_ctx(Some(path));
    assert_eq!(
        tune::attention_variant(&tuned, DType::F32, 100, 32),
        FwdVariant::Blocked
    );
    let files = |c: &Context| -> Vec<String> {
        c.compiled_kernels()
            .into_iter()
            .map(|k| k.file.to_string())
            .filter(|f| f.starts_with("attention"))
            .collect()
    };
    let x = tuned
        .upload(&vec![0.25; 100 * 64], &[1, 100, 64], DType::F32)
        .unwrap();
    tuned
        .run(|rec| attn::attention(rec, &x, &x, &x, 2, None, None))
        .unwrap();
    assert_eq!(files(&tuned), ["attention_mm.wgsl"]);
    // Another class (T = 5000 rounds to 8192) takes the default rule.
    assert_eq!(
        tune::attention_variant(&tuned, DType::F32, 5000, 32),
        tune::attention_variant(&ctx, DType::F32, 5000, 32)
    );
}

#[test]
fn rat_attention_kernels_are_checked_timed_and_the_tuned_kernel_is_followed() {
    use chunkwise::ops::attention::FwdVariant;
    use chunkwise::ops::rat::{inter_chunk_attention, inter_chunk_attention_with, Heads};
    let ctx = fresh_ctx(None);
    // 100 tokens in chunks of 7: 15 chunk finals, not a multiple of any key tile.
    let shapes = [tune::RatShape {
        t: 100,
        chunk: 7,
        heads: 2,
        dh: 32,
        dtype: DType::F32,
    }];
    let mut tuning = tune::tune_rat(&ctx, &shapes, 1, |_, _| {}).unwrap();
    let class = tune::rat_attention_class(15, 32, DType::F32);
    let c = tuning
        .get("rat_attention", &class)
        .expect("the tuned class")
        .clone();
    // The six fa2 variants: each timed where it can run, else rejected with why.
    let variants = tune::rat_attention_variants();
    assert_eq!(variants.len(), 6);
    for v in &variants {
        let timed = c.ms.contains_key(&v.name());
        assert!(timed != c.rejected.contains_key(&v.name()), "{v:?}: {c:?}");
        if v.usable(&ctx, DType::F32, 32).is_ok() {
            assert!(timed, "{v:?}: {c:?}");
        }
    }
    assert!(variants.contains(&FwdVariant::parse(&c.choice).unwrap()));

    // A cache naming fa2-kt4 with workgroup-memory sums (not the default here, which sums by
    // subgroups where there are some) is followed for its class.
    let forced = FwdVariant::Fa2 { kt: 4, sg: false };
    tuning.insert(
        "rat_attention",
        &class,
        tune::Choice {
            choice: forced.name(),
            ..c.clone()
        },
    );
    let path = tmp("rat_attention.json");
    let _ = std::fs::remove_file(&path);
    tuning.save(&path, ctx.adapter_info()).unwrap();
    let tuned = fresh_ctx(Some(path));
    assert_eq!(
        tune::rat_attention_variant(&tuned, DType::F32, 15, 32),
        forced
    );
    let x = tuned
        .upload(&vec![0.25; 100 * 64], &[1, 100, 64], DType::F32)
        .unwrap();
    let hd = Heads::new(64, 2, 2).unwrap();
    let files = |c: &Context| -> Vec<String> {
        c.compiled_kernels()
            .into_iter()
            .map(|k| k.file.to_string())
            .filter(|f| f.starts_with("rat_attention"))
            .collect()
    };
    tuned
        .run(|rec| inter_chunk_attention(rec, &x, &x, &x, hd, 7, None))
        .unwrap();
    assert_eq!(files(&tuned), ["rat_attention_fa2.wgsl"]);
    // Another class (300 chunks round to 512) takes the default rule.
    assert_eq!(
        tune::rat_attention_variant(&tuned, DType::F32, 300, 32),
        tune::rat_attention_variant(&ctx, DType::F32, 300, 32)
    );
    // Attention's blocked kernel is not RAT's: forcing it is a named error.
    let err = tuned
        .run(|rec| {
            inter_chunk_attention_with(rec, &x, &x, &x, hd, 7, None, Some(FwdVariant::Blocked))
        })
        .unwrap_err();
    assert!(
        matches!(err, chunkwise::Error::InvalidArgument { .. }),
        "{err}"
    );
}
