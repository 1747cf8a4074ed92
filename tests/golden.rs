//! The golden cases in ../shared/golden (produced by the reference implementations), run through
//! the same runner as `chunkwise run`. Skipped, with a message, only when that folder is absent.

use std::path::PathBuf;

mod common;

fn golden_dir() -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/golden");
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!(
            "SKIP: {} is absent (it lies beside the checkout in CI)",
            dir.display()
        );
        None
    }
}

fn cases(sub: &str, prefix: &str) -> Vec<PathBuf> {
    let Some(dir) = golden_dir() else {
        return Vec::new();
    };
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir.join(sub))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(prefix))
        .collect();
    v.sort();
    v
}

#[test]
fn local_attention_cases_match_forward_and_decode() {
    let ctx = common::ctx();
    let cases = cases("rat", "local_attn_");
    if golden_dir().is_some() {
        assert!(!cases.is_empty(), "no local_attn_* case found");
    }
    for case in cases {
        let run = chunkwise::golden::run_case(ctx, &case).unwrap_or_else(|e| panic!("{e}"));
        let names: Vec<&str> = run.checks.iter().map(|c| c.name.as_str()).collect();
        assert!(names.contains(&"y"), "{}: y not checked", case.display());
        assert!(
            names.contains(&"y_decode"),
            "{}: y_decode not checked",
            case.display()
        );
        for c in &run.checks {
            assert!(c.ok, "{}: {c}", case.display());
        }
    }
}

#[test]
fn rat_cases_match_forward_and_decode() {
    let ctx = common::ctx();
    let cases = cases("rat", "rat_");
    if golden_dir().is_some() {
        assert!(
            cases.len() >= 3,
            "expected the rat_a, rat_b and rat_decode cases"
        );
    }
    for case in cases {
        let run = chunkwise::golden::run_case(ctx, &case).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            run.checks.iter().any(|c| c.name == "y"),
            "{}: y not checked",
            case.display()
        );
        let json = std::fs::read_to_string(&case).unwrap();
        if json.contains("\"prefill_len\"") {
            assert!(
                run.checks.iter().any(|c| c.name == "y_decode"),
                "{}: y_decode not checked",
                case.display()
            );
        }
        for c in &run.checks {
            assert!(c.ok, "{}: {c}", case.display());
        }
    }
}

#[test]
fn model_cases_match_logits_and_decode_logits() {
    let ctx = common::ctx();
    let cases = cases("rat", "model_");
    if golden_dir().is_some() {
        assert!(!cases.is_empty(), "no model_* case found");
    }
    for case in cases {
        let run = chunkwise::golden::run_case(ctx, &case).unwrap_or_else(|e| panic!("{e}"));
        let names: Vec<&str> = run.checks.iter().map(|c| c.name.as_str()).collect();
        assert!(
            names.contains(&"logits") && names.contains(&"logits_decode"),
            "{}: {names:?}",
            case.display()
        );
        for c in &run.checks {
            assert!(c.ok, "{}: {c}", case.display());
        }
    }
}

#[test]
fn mesa_cases_match_within_1e5_of_the_output_scale() {
    let ctx = common::ctx();
    let cases = cases("mesa", "mesa_");
    if golden_dir().is_some() {
        assert!(cases.len() >= 6, "expected the six public mesa cases");
    }
    for case in cases {
        let run = chunkwise::golden::run_case(ctx, &case).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            run.checks.iter().any(|c| c.name.contains("cg30")),
            "{}: no CG30 output checked",
            case.display()
        );
        for c in &run.checks {
            assert!(c.ok, "{}: {c}", case.display());
        }
    }
}

#[test]
fn unknown_kinds_are_errors_not_panics() {
    let ctx = common::ctx();
    let dir = std::env::temp_dir().join(format!("chunkwise-golden-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("bad.json");
    std::fs::write(&json, r#"{"layer": "banana", "file": "bad.safetensors"}"#).unwrap();
    std::fs::write(
        dir.join("bad.safetensors"),
        b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ",
    )
    .unwrap();
    let e = chunkwise::golden::run_case(ctx, &json).err().unwrap();
    assert!(e.to_string().contains("unknown case kind 'banana'"), "{e}");
    std::fs::write(
        dir.join("bad.safetensors"),
        b"\xff\xff\xff\xff\xff\xff\xff\x7fgarbage",
    )
    .unwrap();
    let e = chunkwise::golden::run_case(ctx, &json).err().unwrap();
    assert!(
        e.to_string().contains("not a valid safetensors file"),
        "{e}"
    );
    std::fs::remove_dir_all(&dir).ok();
}
