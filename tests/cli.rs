//! The `chunkwise` binary: info, bench gemm, and errors that exit non-zero with a message.

use std::process::Command;

fn chunkwise(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_chunkwise"))
        .args(args)
        .output()
        .expect("run chunkwise")
}

#[test]
fn info_json_lists_adapters_and_the_selected_limits() {
    let out = chunkwise(&["info", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    let adapters = v["adapters"].as_array().expect("adapters array");
    assert!(!adapters.is_empty());
    for a in adapters {
        for key in ["backend", "name", "driver", "device_type"] {
            assert!(a.get(key).is_some(), "adapter without {key}: {a}");
        }
    }
    assert!(
        v["selected"]["limits"]["max_storage_buffer_binding_size"]
            .as_u64()
            .unwrap()
            > 0
    );
}

#[test]
fn bench_gemm_json_prints_one_object_per_size() {
    let out = chunkwise(&[
        "bench",
        "gemm",
        "--json",
        "--sizes",
        "64x48x32,33x17x9",
        "--samples",
        "2",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(
        (
            lines[0]["m"].as_u64(),
            lines[0]["n"].as_u64(),
            lines[0]["k"].as_u64()
        ),
        (Some(64), Some(48), Some(32))
    );
    for l in &lines {
        assert!(l["median_ms"].as_f64().unwrap() > 0.0);
        assert!(l["gflops"].as_f64().unwrap() > 0.0);
    }
}

#[test]
fn a_bad_size_exits_non_zero_with_a_message() {
    let out = chunkwise(&["bench", "gemm", "--sizes", "64x48"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad size '64x48'"), "{err}");
}

#[test]
fn an_unknown_adapter_name_exits_non_zero() {
    let out = Command::new(env!("CARGO_BIN_EXE_chunkwise"))
        .args(["bench", "gemm", "--sizes", "8x8x8"])
        .env("WGPU_ADAPTER_NAME", "no-such-gpu-xyz")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no-such-gpu-xyz"));
}

#[test]
fn run_checks_a_golden_case_and_writes_its_outputs() {
    let case = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/golden/rat/local_attn_b1_t40_p20_d64_h2_w8.json");
    if !case.exists() {
        eprintln!("SKIP: {} is absent", case.display());
        return;
    }
    let out_file =
        std::env::temp_dir().join(format!("chunkwise-cli-{}.safetensors", std::process::id()));
    let out = chunkwise(&[
        "run",
        case.to_str().unwrap(),
        "--check",
        "--out",
        out_file.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.lines()
            .any(|l| l.starts_with("y ") && l.ends_with("ok")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("y_decode ") && l.ends_with("ok")),
        "{text}"
    );
    let ck = chunkwise::model::Checkpoint::open(&out_file).unwrap();
    assert_eq!(ck.shape("y"), Some(&[1usize, 40, 64][..]));
    assert_eq!(ck.shape("y_decode"), Some(&[1usize, 20, 64][..]));
    std::fs::remove_file(&out_file).ok();
}

#[test]
fn run_on_a_missing_case_exits_non_zero_naming_the_file() {
    let out = chunkwise(&["run", "no/such/case.json", "--check"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no/such/case.json"));
}

#[test]
fn bench_layers_reports_ratios_and_writes_json_lines() {
    let json = std::env::temp_dir().join(format!("chunkwise-layers-{}.jsonl", std::process::id()));
    let svg = std::env::temp_dir().join(format!("chunkwise-layers-{}.svg", std::process::id()));
    let out = chunkwise(&[
        "bench",
        "layers",
        "--layers",
        "attention,rat,local",
        "--seq",
        "64",
        "--position",
        "40",
        "--batch",
        "2",
        "--d-model",
        "64",
        "--heads",
        "2",
        "--chunk",
        "8",
        "--window",
        "16",
        "--samples",
        "1",
        "--json",
        json.to_str().unwrap(),
        "--plot",
        svg.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(table.contains("| Rat | forward | 2 | 64 |"), "{table}");
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&json)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 6, "3 layers × (forward, decode)");
    for l in &lines {
        for key in [
            "layer",
            "mode",
            "batch",
            "seq_len",
            "position",
            "d_model",
            "heads",
            "chunk",
            "dtype",
            "median_ms",
            "min_ms",
            "max_ms",
            "gflops",
            "adapter",
            "backend",
            "first_call_ms",
        ] {
            assert!(l.get(key).is_some(), "missing {key}: {l}");
        }
        assert!(l["median_ms"].as_f64().unwrap() > 0.0);
    }
    let rat_decode = lines
        .iter()
        .find(|l| l["layer"] == "rat" && l["mode"] == "decode")
        .unwrap();
    let att_decode = lines
        .iter()
        .find(|l| l["layer"] == "attention" && l["mode"] == "decode")
        .unwrap();
    assert!(
        rat_decode["cache_bytes"].as_u64().unwrap() * 4
            < att_decode["cache_bytes"].as_u64().unwrap()
    );
    std::fs::remove_file(&json).ok();
    let plot = std::fs::read_to_string(&svg).unwrap();
    assert!(
        plot.starts_with("<svg") && plot.contains("Rat") && plot.contains("Attention"),
        "{}",
        &plot[..200.min(plot.len())]
    );
    std::fs::remove_file(&svg).ok();
}

#[test]
fn bench_layers_rejects_an_unknown_layer() {
    let out = chunkwise(&["bench", "layers", "--layers", "attention,banana"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown layer 'banana'"));
}

#[test]
fn generate_streams_the_continuation_and_reports_tokens_per_second() {
    let model = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/rat-tiny-pystdlib");
    let args = [
        "generate",
        "--model",
        model.to_str().unwrap(),
        "--prompt",
        "def f(x):",
        "--max-tokens",
        "40",
        "--temperature",
        "0",
    ];
    let a = chunkwise(&args);
    assert!(a.status.success(), "{}", String::from_utf8_lossy(&a.stderr));
    assert_eq!(
        a.stdout.len(),
        40,
        "only the 40 generated bytes go to stdout"
    );
    assert!(String::from_utf8_lossy(&a.stderr).contains("decode: 40 tokens"));
    assert_eq!(a.stdout, chunkwise(&args).stdout, "greedy is deterministic");
    let missing = chunkwise(&["generate", "--model", "no/such/model", "--prompt", "x"]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no/such/model/config.json"));
}

#[test]
fn check_runs_families_and_writes_json_lines() {
    let json = std::env::temp_dir().join(format!("chunkwise-check-{}.jsonl", std::process::id()));
    let out = chunkwise(&[
        "check",
        "--family",
        "rmsnorm,argmax",
        "--quick",
        "--json",
        json.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("schedule "), "{stdout}");
    assert!(
        stdout.contains("| family | schedule | variant |"),
        "{stdout}"
    );
    let rows: Vec<serde_json::Value> = std::fs::read_to_string(&json)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let _ = std::fs::remove_file(&json);
    assert!(rows.len() >= 10, "{} rows", rows.len());
    for r in &rows {
        for key in [
            "family", "variant", "dtype", "shape", "rel_rms", "bound", "pass",
        ] {
            assert!(r.get(key).is_some(), "row without {key}: {r}");
        }
        assert!(r["variant"].as_str().is_some_and(|v| !v.is_empty()), "{r}");
    }
    for family in ["rmsnorm", "argmax"] {
        assert!(rows
            .iter()
            .any(|r| r["family"] == family && r["pass"] == true));
    }
}

#[test]
fn check_fails_on_a_broken_kernel() {
    // Both RMSNorm kernels (rows of vec4s on CPU adapters, one row per workgroup elsewhere)
    // scaled by 1.001: far inside what a glance at the output would notice, far outside the
    // bound.
    let dir = std::env::temp_dir().join(format!("chunkwise-broken-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let shaders = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("shaders");
    for (file, from) in [
        ("rmsnorm.wgsl", "* inv * f32(w[i])"),
        ("rmsnorm_rows.wgsl", "* inv * vec4<f32>(w[i])"),
    ] {
        let src = std::fs::read_to_string(shaders.join(file)).unwrap();
        assert!(src.contains(from), "{file} no longer contains `{from}`");
        let broken = src.replace(from, &format!("{from} * 1.001"));
        std::fs::write(dir.join(file), broken).unwrap();
    }
    let out = Command::new(env!("CARGO_BIN_EXE_chunkwise"))
        .args(["check", "--family", "rmsnorm", "--quick"])
        .env("CHUNKWISE_SHADER_DIR", &dir)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{stdout}");
    assert!(stdout.contains("| FAIL |"), "{stdout}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cases failed"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn check_rejects_an_unknown_family_and_a_bad_schedule() {
    let out = chunkwise(&["check", "--family", "no_such_family"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unknown family 'no_such_family'") && err.contains("gemm"),
        "{err}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_chunkwise"))
        .args(["check", "--family", "argmax"])
        .env("CHUNKWISE_SCHEDULE", "fastest")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("CHUNKWISE_SCHEDULE='fastest'"), "{err}");
}

#[test]
fn info_names_the_schedule_in_use() {
    for (value, kernels) in [("gpu", "gpu kernels"), ("cpu", "cpu kernels")] {
        let out = Command::new(env!("CARGO_BIN_EXE_chunkwise"))
            .arg("info")
            .env("CHUNKWISE_SCHEDULE", value)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{stdout}");
        assert!(
            stdout.contains(&format!("schedule: {value} → {kernels}")),
            "{stdout}"
        );
    }
}
