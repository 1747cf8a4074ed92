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

/// The tile files a context has compiled GEMMs from.
fn tiles_used(ctx: &Context) -> Vec<String> {
    ctx.compiled_kernels()
        .into_iter()
        .map(|k| k.file.to_string())
        .filter(|f| f.starts_with("gemm_t"))
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
    assert_eq!(tiles_used(&tuned), ["gemm_t128x64_v4.wgsl"]);
    // A class the cache lacks takes the size rule.
    run_gemm(&tuned, 3000, 300, 40);
    assert!(tiles_used(&tuned).contains(&"gemm_t64x64_v4.wgsl".to_string()));

    let untuned = fresh_ctx(None);
    assert!(untuned.schedule_summary().contains("untuned"));
    run_gemm(&untuned, 200, 64, 64);
    assert_eq!(tiles_used(&untuned), ["gemm_t64x64_v4.wgsl"]);
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
