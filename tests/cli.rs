//! The `chunkwise` binary: info, bench gemm, and errors that exit non-zero with a message.

use std::process::Command;

fn chunkwise(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_chunkwise")).args(args).output().expect("run chunkwise")
}

#[test]
fn info_json_lists_adapters_and_the_selected_limits() {
    let out = chunkwise(&["info", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    let adapters = v["adapters"].as_array().expect("adapters array");
    assert!(!adapters.is_empty());
    for a in adapters {
        for key in ["backend", "name", "driver", "device_type"] {
            assert!(a.get(key).is_some(), "adapter without {key}: {a}");
        }
    }
    assert!(v["selected"]["limits"]["max_storage_buffer_binding_size"].as_u64().unwrap() > 0);
}

#[test]
fn bench_gemm_json_prints_one_object_per_size() {
    let out = chunkwise(&["bench", "gemm", "--json", "--sizes", "64x48x32,33x17x9", "--samples", "2"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<serde_json::Value> =
        String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).expect("JSON line")).collect();
    assert_eq!(lines.len(), 2);
    assert_eq!((lines[0]["m"].as_u64(), lines[0]["n"].as_u64(), lines[0]["k"].as_u64()), (Some(64), Some(48), Some(32)));
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
