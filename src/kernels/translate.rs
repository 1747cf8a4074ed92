//! Kernels translated the way wgpu's Metal and DX12 backends translate them (naga's MSL and HLSL
//! writers), so that a kernel those backends could not build fails here, on a machine with
//! neither. Vulkan and GL are verified by running (lavapipe and llvmpipe in CI).
//!
//! The options follow wgpu-hal 30: MSL at the language version the OS offers (2.2 on macOS
//! 10.15, the oldest wgpu supports, up to 4.0), buffers in argument slots with a sizes buffer for
//! runtime-sized arrays, restricted bounds checks; HLSL at the shader model the DX12 adapter
//! reports (5.1 through FXC without DXC, 6.0 for wave operations, 6.2 for native 16-bit types),
//! registers per binding kind. A variant is validated with only the capabilities it declares
//! (f16 for the f16 dtype, subgroups where the table says so) and the target grants, so a kernel
//! that reaches for anything more (f64, cooperative matrices on DX12) fails, naming itself.

use naga::back::{hlsl, msl};
use naga::valid::Capabilities;

use super::{assemble, variants, KernelKey};
use crate::error::{Error, Result};
use crate::tensor::DType;

/// A shading language and version wgpu may translate to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// Metal Shading Language (major, minor).
    Msl(u8, u8),
    /// HLSL at a shader model.
    Hlsl(hlsl::ShaderModel),
    /// SPIR-V (major, minor), as wgpu's Vulkan backend writes it: lavapipe runs most kernels, but
    /// not the cooperative-matrix ones, which only this translation checks here.
    Spv(u8, u8),
}

/// The oldest and newest versions wgpu 30 emits for each backend.
pub const TARGETS: [Target; 6] = [
    Target::Msl(2, 2),
    Target::Msl(4, 0),
    Target::Hlsl(hlsl::ShaderModel::V5_1),
    Target::Hlsl(hlsl::ShaderModel::V6_2),
    Target::Hlsl(hlsl::ShaderModel::V6_6),
    Target::Spv(1, 3),
];

impl Target {
    pub fn backend(self) -> wgpu::Backend {
        match self {
            Target::Msl(..) => wgpu::Backend::Metal,
            Target::Hlsl(_) => wgpu::Backend::Dx12,
            Target::Spv(..) => wgpu::Backend::Vulkan,
        }
    }

    /// What wgpu grants a device on this target, of the capabilities chunkwise's kernels use.
    pub fn grants(self) -> Capabilities {
        match self {
            // Metal: f16 always, SIMD-group functions on every GPU family wgpu supports.
            Target::Msl(major, minor) => {
                let mut c = Capabilities::SHADER_FLOAT16
                    | Capabilities::SUBGROUP
                    | Capabilities::SUBGROUP_BARRIER;
                if (major, minor) >= (2, 3) {
                    c |= Capabilities::COOPERATIVE_MATRIX;
                }
                c
            }
            // DX12: wave operations from SM 6.0, native 16-bit types from 6.2; no cooperative
            // matrices in naga's HLSL writer.
            Target::Hlsl(sm) => {
                let mut c = Capabilities::empty();
                if sm >= hlsl::ShaderModel::V6_0 {
                    c |= Capabilities::SUBGROUP | Capabilities::SUBGROUP_BARRIER;
                }
                if sm >= hlsl::ShaderModel::V6_2 {
                    c |= Capabilities::SHADER_FLOAT16;
                }
                c
            }
            // Vulkan: what a device may offer (f16, subgroups, VK_KHR_cooperative_matrix).
            Target::Spv(..) => {
                Capabilities::SHADER_FLOAT16
                    | Capabilities::SUBGROUP
                    | Capabilities::SUBGROUP_BARRIER
                    | Capabilities::COOPERATIVE_MATRIX
            }
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Msl(major, minor) => write!(f, "Metal (MSL {major}.{minor})"),
            Target::Hlsl(sm) => write!(f, "DX12 (HLSL {})", sm.to_str()),
            Target::Spv(major, minor) => write!(f, "Vulkan (SPIR-V {major}.{minor})"),
        }
    }
}

/// The capabilities a variant declares: f16 for the f16 dtype, subgroups where the table says.
pub fn declared(dtype: DType, v: &variants::Variant) -> Capabilities {
    let mut c = Capabilities::empty();
    if dtype == DType::F16 {
        c |= Capabilities::SHADER_FLOAT16;
    }
    if v.subgroups {
        c |= Capabilities::SUBGROUP | Capabilities::SUBGROUP_BARRIER;
    }
    if v.coop {
        c |= Capabilities::COOPERATIVE_MATRIX;
    }
    c
}

/// Whether `target` can hold a variant declaring `needs` at all (a DX12 device at SM 5.1 offers
/// no f16: wgpu then never creates an f16 tensor there, so the variant is never built).
pub fn target_holds(target: Target, needs: Capabilities) -> bool {
    target.grants().contains(needs)
}

/// A table variant's pipeline in `target`'s language. Fails with [`Error::Translation`] naming
/// the kernel, its constants and the target.
pub fn translate(key: &KernelKey, target: Target) -> Result<String> {
    let variant = variants::find(key.file, key.entry)
        .ok_or_else(|| Error::UnknownKernel(format!("{}::{}", key.file, key.entry)))?;
    let source = assemble(key.file, key.dtype)?;
    let constants: Vec<(&str, f64)> = key
        .constants
        .iter()
        .map(|(n, b)| (*n, f64::from_bits(*b)))
        .collect();
    translate_source(
        key.file,
        &source.source,
        key.entry,
        &constants,
        declared(key.dtype, variant),
        target,
    )
}

/// Translates WGSL `source` (already assembled) for `target`, validating with the capabilities
/// `declared` that `target` grants. `name` is what errors call the kernel.
pub fn translate_source(
    name: &str,
    source: &str,
    entry: &str,
    constants: &[(&str, f64)],
    declared: Capabilities,
    target: Target,
) -> Result<String> {
    let variant = if constants.is_empty() {
        "default constants".to_string()
    } else {
        constants
            .iter()
            .map(|(n, v)| format!("{n}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let fail = |message: String| Error::Translation {
        kernel: format!("{name}::{entry}"),
        variant: variant.clone(),
        target: target.to_string(),
        message,
    };
    let module =
        naga::front::wgsl::parse_str(source).map_err(|e| fail(e.emit_to_string(source)))?;
    let caps = declared & target.grants();
    let info = naga::valid::Validator::new(naga::valid::ValidationFlags::all(), caps)
        .validate(&module)
        .map_err(|e| {
            fail(format!(
                "needs more than its declared capabilities {declared:?} that the target grants \
                 ({:?}): {}",
                target.grants(),
                e.emit_to_string(source)
            ))
        })?;
    let mut values = naga::back::PipelineConstants::default();
    for (n, v) in constants {
        values.insert(n.to_string(), *v);
    }
    let stage = naga::ShaderStage::Compute;
    let (module, info) = naga::back::pipeline_constants::process_overrides(
        &module,
        &info,
        Some((stage, entry)),
        &values,
    )
    .map_err(|e| fail(format!("override constants: {e}")))?;
    let index = module
        .entry_points
        .iter()
        .position(|e| e.name == entry && e.stage == stage)
        .ok_or_else(|| fail("no such compute entry point".into()))?;
    // The bindings the entry point uses, in binding order, as wgpu's pipeline layout lists them.
    let used = info.get_entry_point(index);
    let mut bindings: Vec<(naga::ResourceBinding, naga::AddressSpace)> = module
        .global_variables
        .iter()
        .filter(|(h, _)| !used[*h].is_empty())
        .filter_map(|(_, v)| v.binding.map(|b| (b, v.space)))
        .collect();
    bindings.sort_by_key(|(b, _)| (b.group, b.binding));
    match target {
        Target::Msl(major, minor) => {
            msl_source(&module, &info, entry, &bindings, (major, minor)).map_err(fail)
        }
        Target::Hlsl(sm) => hlsl_source(&module, &info, entry, &bindings, sm).map_err(fail),
        Target::Spv(major, minor) => spv_words(&module, &info, entry, (major, minor))
            .map(|words| {
                // The binary as text (entry point names are literal strings in it).
                let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
                String::from_utf8_lossy(&bytes).into_owned()
            })
            .map_err(fail),
    }
}

fn spv_words(
    module: &naga::Module,
    info: &naga::valid::ModuleInfo,
    entry: &str,
    lang_version: (u8, u8),
) -> std::result::Result<Vec<u32>, String> {
    let options = naga::back::spv::Options {
        lang_version,
        ..Default::default()
    };
    let pipeline = naga::back::spv::PipelineOptions {
        shader_stage: naga::ShaderStage::Compute,
        entry_point: entry.to_string(),
    };
    // naga has panicked on some cooperative-matrix forms; a panic is a failed translation here.
    std::panic::catch_unwind(|| naga::back::spv::write_vec(module, info, &options, Some(&pipeline)))
        .map_err(|_| "naga's SPIR-V writer panicked".to_string())?
        .map_err(|e| e.to_string())
}

fn msl_source(
    module: &naga::Module,
    info: &naga::valid::ModuleInfo,
    entry: &str,
    bindings: &[(naga::ResourceBinding, naga::AddressSpace)],
    lang_version: (u8, u8),
) -> std::result::Result<String, String> {
    let mut resources = msl::EntryPointResources::default();
    let mut slot = 0u8;
    let mut any_storage = false;
    for (binding, space) in bindings {
        let mut target = msl::BindTarget {
            buffer: Some(slot),
            ..Default::default()
        };
        slot += 1;
        if let naga::AddressSpace::Storage { access } = space {
            any_storage = true;
            target.mutable = access.contains(naga::StorageAccess::STORE);
        }
        resources.resources.insert(*binding, target);
    }
    if any_storage {
        resources.sizes_buffer = Some(slot);
    }
    let restrict = naga::proc::BoundsCheckPolicy::Restrict;
    let options = msl::Options {
        lang_version,
        fake_missing_bindings: false,
        zero_initialize_workgroup_memory: false,
        per_entry_point_map: msl::EntryPointResourceMap::from([(entry.to_string(), resources)]),
        bounds_check_policies: naga::proc::BoundsCheckPolicies {
            index: restrict,
            buffer: restrict,
            image_load: restrict,
            binding_array: naga::proc::BoundsCheckPolicy::Unchecked,
        },
        ..Default::default()
    };
    let pipeline = msl::PipelineOptions {
        entry_point: Some((naga::ShaderStage::Compute, entry.to_string())),
        vertex_pulling_transform: true,
        ..Default::default()
    };
    let (text, out) =
        msl::write_string(module, info, &options, &pipeline).map_err(|e| e.to_string())?;
    match out.entry_point_names.into_iter().next() {
        Some(Ok(_)) => Ok(text),
        Some(Err(e)) => Err(e.to_string()),
        None => Err("the entry point was not written".into()),
    }
}

fn hlsl_source(
    module: &naga::Module,
    info: &naga::valid::ModuleInfo,
    entry: &str,
    bindings: &[(naga::ResourceBinding, naga::AddressSpace)],
    shader_model: hlsl::ShaderModel,
) -> std::result::Result<String, String> {
    let mut map = hlsl::BindingMap::default();
    let (mut cbv, mut srv, mut uav) = (0u32, 0u32, 0u32);
    for (binding, space) in bindings {
        let counter = match space {
            naga::AddressSpace::Storage { access }
                if access.contains(naga::StorageAccess::STORE) =>
            {
                &mut uav
            }
            naga::AddressSpace::Storage { .. } => &mut srv,
            _ => &mut cbv,
        };
        map.insert(
            *binding,
            hlsl::BindTarget {
                space: 0,
                register: *counter,
                ..Default::default()
            },
        );
        *counter += 1;
    }
    let options = hlsl::Options {
        shader_model,
        binding_map: map,
        fake_missing_bindings: false,
        special_constants_binding: Some(hlsl::BindTarget {
            register: cbv,
            ..Default::default()
        }),
        zero_initialize_workgroup_memory: false,
        ..Default::default()
    };
    let pipeline = hlsl::PipelineOptions {
        entry_point: Some((naga::ShaderStage::Compute, entry.to_string())),
    };
    let mut text = String::new();
    let mut out = hlsl::Writer::new(&mut text, &options, &pipeline)
        .write(module, info, None)
        .map_err(|e| e.to_string())?;
    match out.entry_point_names.pop() {
        Some(Ok(_)) => Ok(text),
        Some(Err(e)) => Err(e.to_string()),
        None => Err("the entry point was not written".into()),
    }
}

/// Every compute entry point of every kernel file, as (file, entry) (what the table must cover).
pub fn entry_points() -> Result<Vec<(&'static str, String)>> {
    let mut all = Vec::new();
    for file in super::kernel_files() {
        let (module, _) = super::validate(&assemble(file, DType::F32)?)?;
        for e in &module.entry_points {
            if e.stage == naga::ShaderStage::Compute {
                all.push((file, e.name.clone()));
            }
        }
    }
    Ok(all)
}
