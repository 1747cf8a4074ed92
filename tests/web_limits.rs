//! WebGPU's default limits are the floor a web page may get (8 storage buffers per stage, 16 KiB
//! of workgroup memory, 256 invocations per workgroup, 128 MiB per binding). Every kernel must fit
//! them, or have a variant that does and is picked when the device grants less. Two checks: every
//! variant's needs read from its WGSL (no device), and every `check` case run on a device that was
//! given exactly those limits and no optional features (as SwiftShader in Chromium, near enough).

mod common;

use chunkwise::kernels::{entry_info, variants, BindingKind};
use chunkwise::verify::{select, Scope};
use chunkwise::{DType, Schedule};

#[test]
fn every_variant_fits_webgpus_default_storage_and_workgroup_size() {
    let floor = wgpu::Limits::default();
    let mut over = Vec::new();
    let mut checked = 0;
    for v in variants::TABLE {
        // Browsers have no cooperative matrices (wgpu's web backend offers none).
        if v.coop {
            continue;
        }
        for dtype in [DType::F32, DType::F16] {
            for key in v.sample_keys(dtype) {
                let info = entry_info(&key).unwrap_or_else(|e| panic!("{key:?}: {e}"));
                checked += 1;
                let storage = info
                    .bindings
                    .iter()
                    .filter(|(_, k)| !matches!(k, BindingKind::Uniform))
                    .count() as u32;
                // Workgroup memory is planned per device (the flash tiles, Mesa's CG plans):
                // the second test runs those plans at the floor.
                assert!(
                    info.invocations <= floor.max_compute_invocations_per_workgroup,
                    "{key:?}: {} invocations per workgroup",
                    info.invocations
                );
                if storage > floor.max_storage_buffers_per_shader_stage {
                    over.push(format!("{key:?}: {storage} storage buffers"));
                }
            }
        }
    }
    assert!(checked > 300, "only {checked} keys checked");
    assert!(
        over.is_empty(),
        "over WebGPU's 8 storage buffers per stage:\n{}",
        over.join("\n")
    );
}

#[test]
fn every_check_case_runs_on_a_device_with_webgpus_default_limits() {
    for schedule in [Schedule::Gpu, Schedule::Cpu] {
        let ctx = common::ctx_with_limits(|_| wgpu::Limits::default());
        ctx.set_schedule(schedule);
        assert_eq!(ctx.limits().max_storage_buffers_per_shader_stage, 8);
        let mut bad = Vec::new();
        let mut ran = 0;

        for case in select(&[], Scope::Quick).expect("registry") {
            let out = case.run(&ctx);
            let text = out.describe();
            if out.failed() {
                bad.push(format!("failed: {text}"));
            } else if let Some(why) = &out.skipped {
                // No f16 and no tensor cores on this device: those skips are expected. So are a
                // forced variant's (a tuning candidate's) that needs more workgroup memory or
                // subgroups than this device has: what runs by default must fit, a candidate
                // that does not is left out by `chunkwise tune`.
                let forced = [" variant ", " plan ", " tile "]
                    .iter()
                    .any(|l| case.shape.contains(l));
                let expected = why.contains("SHADER_F16")
                    || why.contains("COOPERATIVE_MATRIX")
                    || (forced
                        && (why.contains("max_compute_workgroup_storage_size")
                            || why.contains("SUBGROUP")));
                if !expected {
                    bad.push(format!("skipped: {text}"));
                }
            } else {
                ran += 1;
            }
        }
        assert!(ran > 100, "{schedule:?}: only {ran} cases ran");
        assert!(
            bad.is_empty(),
            "{schedule:?} at WebGPU's default limits:\n{}",
            bad.join("\n")
        );
    }
}
