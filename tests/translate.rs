//! Every kernel variant translated for Metal (MSL), DX12 (HLSL) and Vulkan (SPIR-V) as wgpu 30
//! would, in both dtypes and at the override values the launch wrappers use
//! (`kernels::variants::TABLE`). CPU-only: needs no adapter. Vulkan and GL are also verified by
//! running the kernels (lavapipe and llvmpipe in CI); the cooperative-matrix kernels, which no
//! adapter here has, only by this translation.

use chunkwise::kernels::translate::{self, declared, target_holds, Target, TARGETS};
use chunkwise::kernels::variants::{self, TABLE};
use chunkwise::kernels::{assemble, validate};
use chunkwise::DType;

#[test]
fn every_kernel_variant_translates_for_metal_dx12_and_vulkan() {
    let mut failures = Vec::new();
    let mut translated = 0;
    let mut per_target = vec![0usize; TARGETS.len()];
    for v in TABLE {
        for dtype in [DType::F32, DType::F16] {
            for key in v.sample_keys(dtype) {
                for (i, &target) in TARGETS.iter().enumerate() {
                    if v.excluded_on(target.backend()).is_some()
                        || !target_holds(target, declared(dtype, v))
                    {
                        continue;
                    }
                    match translate::translate(&key, target) {
                        Ok(text) => {
                            assert!(text.contains(v.entry), "{}: entry point missing", v.name());
                            translated += 1;
                            per_target[i] += 1;
                        }
                        Err(e) => failures.push(format!("{dtype:?}: {e}")),
                    }
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} translations failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // Every target took part, f16 and subgroup variants on the targets that grant them.
    for (t, n) in TARGETS.iter().zip(&per_target) {
        assert!(*n >= TABLE.len(), "{t}: only {n} variants translated");
    }
    assert!(translated > 1000, "only {translated} translations");
}

#[test]
fn the_variant_table_has_one_row_per_entry_point() {
    let entries = translate::entry_points().unwrap();
    for (file, entry) in &entries {
        assert!(
            variants::find(file, entry).is_some(),
            "{file}::{entry} has no row in src/kernels/variants.rs"
        );
    }
    for v in TABLE {
        assert!(
            entries.iter().any(|(f, e)| *f == v.file && e == v.entry),
            "the table's row {}::{} names no entry point",
            v.file,
            v.entry
        );
        let n = TABLE
            .iter()
            .filter(|w| w.file == v.file && w.entry == v.entry)
            .count();
        assert_eq!(n, 1, "{}::{} has {n} rows", v.file, v.entry);
    }
}

#[test]
fn the_table_says_which_variants_run_subgroup_operations() {
    // A variant declaring no subgroups must validate without the capability (GL, DX12 at SM 5.1
    // and browsers without the `subgroups` feature have none); one declaring them must use them.
    for v in TABLE {
        let a = assemble(v.file, DType::F32).unwrap();
        let (module, _) = validate(&a).unwrap();
        let without = naga::valid::Validator::new(
            naga::valid::ValidationFlags::all(),
            naga::valid::Capabilities::empty(),
        )
        .validate(&module);
        let e = module
            .entry_points
            .iter()
            .find(|e| e.name == v.entry)
            .unwrap();
        let takes_builtin = e.function.arguments.iter().any(|a| {
            matches!(
                a.binding,
                Some(naga::Binding::BuiltIn(
                    naga::BuiltIn::SubgroupInvocationId
                        | naga::BuiltIn::SubgroupSize
                        | naga::BuiltIn::SubgroupId
                        | naga::BuiltIn::NumSubgroups
                ))
            )
        });
        assert_eq!(takes_builtin, v.subgroups, "{}: subgroups", v.name());
        // wgpu validates the whole module when it is created: a variant without subgroups must
        // not share its file with one that has them.
        if !v.subgroups {
            assert!(
                without.is_ok(),
                "{} declares no subgroups but its module needs them: {:?}",
                v.name(),
                without.err()
            );
        }
    }
}

#[test]
fn a_construct_a_backend_lacks_fails_naming_the_kernel() {
    // Metal has no f64; wgpu's DX12 backend (naga's HLSL writer) has no cooperative matrices.
    let f64_kernel = "@group(0) @binding(0) var<storage, read_write> y: array<f32>;\n\
        @compute @workgroup_size(64) fn probe(@builtin(global_invocation_id) id: vec3<u32>) {\n\
            let x: f64 = f64(y[id.x]);\n\
            y[id.x] = f32(x * x);\n\
        }\n";
    let err = translate::translate_source(
        "probe_f64.wgsl",
        f64_kernel,
        "probe",
        &[],
        naga::valid::Capabilities::empty(),
        Target::Msl(2, 2),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("probe_f64.wgsl::probe"), "{err}");
    assert!(err.contains("Metal (MSL 2.2)"), "{err}");

    let coop_kernel = "enable wgpu_cooperative_matrix;\n\
        @group(0) @binding(0) var<storage, read_write> y: array<f32>;\n\
        @compute @workgroup_size(32) fn probe() {\n\
            var m = coop_mat8x8<f32, C>();\n\
            coopStore(m, &y[0], 8u);\n\
        }\n";
    let coop = naga::valid::Capabilities::COOPERATIVE_MATRIX;
    let err = translate::translate_source(
        "probe_coop.wgsl",
        coop_kernel,
        "probe",
        &[],
        coop,
        Target::Hlsl(naga::back::hlsl::ShaderModel::V6_6),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("probe_coop.wgsl::probe"), "{err}");
    assert!(err.contains("DX12 (HLSL"), "{err}");
    // The same kernel is fine for Metal from MSL 2.3: the failure above is the backend's.
    translate::translate_source(
        "probe_coop.wgsl",
        coop_kernel,
        "probe",
        &[],
        coop,
        Target::Msl(3, 0),
    )
    .unwrap();
}

#[test]
fn the_tensor_core_kernels_translate_to_spirv_and_metal() {
    // No adapter here has cooperative matrices: naga's SPIR-V and MSL writers must take every
    // tensor-core kernel (GEMM and attention) at every sample of its table row, Metal's 8 × 8 ones
    // as simdgroup matrices.
    for (file, entry) in [
        ("gemm_coop16.wgsl", "gemm_coop"),
        ("gemm_coop8.wgsl", "gemm_coop"),
        ("attention_coop16.wgsl", "attention_coop"),
        ("attention_coop8.wgsl", "attention_coop"),
    ] {
        let targets = if file.contains("coop16") {
            vec![Target::Spv(1, 3)]
        } else {
            vec![Target::Spv(1, 3), Target::Msl(2, 3), Target::Msl(4, 0)]
        };
        let v = variants::find(file, entry).expect("a table row");
        assert!(v.coop && v.subgroups, "{}", v.name());
        for dtype in [DType::F32, DType::F16] {
            for key in v.sample_keys(dtype) {
                for &t in &targets {
                    let text = translate::translate(&key, t)
                        .unwrap_or_else(|e| panic!("{file} {dtype:?} {t}: {e}"));
                    assert!(text.contains(entry), "{file} {t}");
                    if let Target::Msl(..) = t {
                        assert!(
                            text.contains("simdgroup_"),
                            "{file} {t}: no simdgroup matrix"
                        );
                    }
                }
            }
        }
        // The table keeps them off backends that cannot run them (16 × 16 off Metal too).
        assert!(v.excluded_on(wgpu::Backend::Dx12).is_some());
        assert!(v.excluded_on(wgpu::Backend::Gl).is_some());
        assert_eq!(
            v.excluded_on(wgpu::Backend::Metal).is_some(),
            file.contains("coop16")
        );
    }
}

#[test]
fn wrong_override_values_fail_naming_the_variant() {
    let key = chunkwise::kernels::KernelKey::new("softmax.wgsl", "softmax", DType::F32)
        .with("NO_SUCH_CONSTANT", 3.0);
    let err = translate::translate(&key, Target::Msl(2, 2))
        .unwrap_err()
        .to_string();
    assert!(err.contains("softmax.wgsl::softmax"), "{err}");
    assert!(err.contains("NO_SUCH_CONSTANT=3"), "{err}");
}
