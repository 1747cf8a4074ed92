//! The kernel registry: embedded WGSL, shared snippets, naga validation, and a pipeline cache.
//!
//! Every file under `shaders/` is embedded by `build.rs`. A kernel file may pull in a shared snippet
//! with a line `#include "common/NAME.wgsl"`; the registry splices it in once and keeps a line map so
//! that a naga error points at the file and line a person has to edit.
//!
//! Storage precision is chosen when a shader is assembled: the prelude defines `alias ST = f32;` or
//! `enable f16; alias ST = f16;`, and kernels load `ST`, convert to `f32`, and accumulate in `f32`.
//! One WGSL source therefore serves both dtypes.
//!
//! Bind-group layouts are derived from the shader's own declarations (naga reflection of the globals
//! the entry point uses), so a launch wrapper cannot drift from its WGSL.
//!
//! A rule for kernel authors: llvmpipe (lavapipe, the CI adapter) silently stops the loops of an
//! invocation once it has run about 65k loop iterations, all loops counted together (the rest of
//! the work is skipped, with wrong results and no error). Give inner loops constant trip counts
//! (consts or `override`s, which compilers unroll), keep what stays a loop well below that, and
//! test at the largest size a path allows. A loop unrolls only if it holds no inner loop and a
//! small body: write short per-slot code out (as `shaders/common/flash.wgsl` does) rather than
//! nest a loop over it. Where the count grows with an argument (Mesa's CG iterations), the launch
//! wrapper refuses what would not fit (`ops::mesa`).
//!
//! What CPU adapters reward (measured on lavapipe, BENCHMARKS.md): every storage or workgroup load
//! is compiled to a loop over the 8 SIMD lanes, with a bounds check and a branch per lane, and
//! costs about the same whether the lanes read one address or eight. Arithmetic is cheap next to
//! it. So the CPU schedules maximise the multiply-adds per load instruction: vec4 loads, several
//! rows or queries per invocation, and, where subgroups are the 8 lanes (`Context::subgroup_size`),
//! one lane loading each vec4 of a row that all lanes need and `subgroupBroadcast` handing it on
//! (the `_sg` kernel files). Barriers are coroutine switches, so these schedules use none. Long
//! strided streams also outgrow the TLB (attention reads each head's keys contiguously for that).
//! GPUs keep the workgroup-memory kernels.

#[cfg(not(target_arch = "wasm32"))]
pub mod translate;
pub mod variants;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};
use crate::tensor::DType;

mod files {
    include!(concat!(env!("OUT_DIR"), "/shader_files.rs"));
}
pub use files::SHADER_FILES;

/// The variable naming a folder whose files replace the embedded shaders of the same path under
/// `shaders/`: for working on a kernel without rebuilding, and how the tests break a kernel on
/// purpose. Read once per process.
pub const SHADER_DIR_ENV: &str = "CHUNKWISE_SHADER_DIR";

/// The files of `CHUNKWISE_SHADER_DIR` that replace embedded ones (kept for the process's life).
fn overrides() -> &'static HashMap<&'static str, &'static str> {
    static OVERRIDES: std::sync::OnceLock<HashMap<&'static str, &'static str>> =
        std::sync::OnceLock::new();
    OVERRIDES.get_or_init(|| {
        let Some(dir) = std::env::var_os(SHADER_DIR_ENV).filter(|d| !d.is_empty()) else {
            return HashMap::new();
        };
        let dir = std::path::PathBuf::from(dir);
        let mut found = HashMap::new();
        for (path, _) in SHADER_FILES {
            if let Ok(text) = std::fs::read_to_string(dir.join(path)) {
                log::warn!(
                    "{SHADER_DIR_ENV}: {path} replaced by {}",
                    dir.join(path).display()
                );
                found.insert(*path, &*Box::leak(text.into_boxed_str()));
            }
        }
        found
    })
}

/// The source of one shader file by its path under `shaders/` (embedded, unless
/// `CHUNKWISE_SHADER_DIR` replaces it).
pub fn shader_source(path: &str) -> Option<&'static str> {
    if let Some(s) = overrides().get(path) {
        return Some(s);
    }
    SHADER_FILES
        .iter()
        .find(|(p, _)| *p == path)
        .map(|(_, s)| *s)
}

/// Kernel files (not snippets): every embedded file outside `shaders/common/`.
pub fn kernel_files() -> impl Iterator<Item = &'static str> {
    SHADER_FILES
        .iter()
        .map(|(p, _)| *p)
        .filter(|p| !p.starts_with("common/"))
}

/// Lines of the assembled source that came from one file.
#[derive(Clone, Debug)]
struct Segment {
    first_line: u32, // 1-based line in the assembled source
    file: String,
    file_line: u32, // 1-based line in `file`
    len: u32,
}

/// A shader ready for naga or wgpu: snippets spliced in, dtype prelude prepended.
#[derive(Clone, Debug)]
pub struct Assembled {
    pub source: String,
    segments: Vec<Segment>,
}

impl Assembled {
    /// The same shader with text replaced on one line (for testing the line map); `to` must not add lines.
    pub fn patched(&self, from: &str, to: &str) -> Assembled {
        Assembled {
            source: self.source.replacen(from, to, 1),
            segments: self.segments.clone(),
        }
    }

    /// Maps a 1-based line of the assembled source back to (file, line).
    pub fn origin(&self, line: u32) -> (String, u32) {
        for s in &self.segments {
            if line >= s.first_line && line < s.first_line + s.len {
                return (s.file.clone(), s.file_line + (line - s.first_line));
            }
        }
        ("<assembled>".into(), line)
    }
}

fn prelude(dtype: DType) -> &'static str {
    match dtype {
        DType::F32 => "alias ST = f32;\n",
        DType::F16 => "enable f16;\nalias ST = f16;\n",
    }
}

/// Builds the source of `path` for `dtype`: the prelude, then the file with its includes expanded.
pub fn assemble(path: &str, dtype: DType) -> Result<Assembled> {
    let src = shader_source(path).ok_or_else(|| Error::UnknownKernel(path.into()))?;
    let mut out = Assembled {
        source: String::new(),
        segments: Vec::new(),
    };
    // Extensions come before any declaration, so the prelude enables the ones a kernel uses.
    let coop = if src.contains("coop_mat") || src.contains("gemm_coop_body") {
        "enable wgpu_cooperative_matrix;\n"
    } else {
        ""
    };
    let pre = format!("{coop}{}", prelude(dtype));
    let pre = pre.as_str();
    out.segments.push(Segment {
        first_line: 1,
        file: "<prelude>".into(),
        file_line: 1,
        len: pre.lines().count() as u32,
    });
    out.source.push_str(pre);
    let mut included = Vec::new();
    splice(path, src, &mut out, &mut included)?;
    Ok(out)
}

fn splice(path: &str, src: &str, out: &mut Assembled, included: &mut Vec<String>) -> Result<()> {
    let mut run_start: Option<(u32, u32)> = None; // (assembled line, file line)
    let mut line_no = out.source.lines().count() as u32 + 1;
    let close = |out: &mut Assembled, run: &mut Option<(u32, u32)>, line_no: u32| {
        if let Some((first, file_line)) = run.take() {
            out.segments.push(Segment {
                first_line: first,
                file: path.into(),
                file_line,
                len: line_no - first,
            });
        }
    };
    for (i, line) in src.lines().enumerate() {
        let file_line = i as u32 + 1;
        if let Some(rest) = line.trim_start().strip_prefix("#include") {
            close(out, &mut run_start, line_no);
            let name = rest.trim().trim_matches('"');
            if !included.iter().any(|n| n == name) {
                included.push(name.to_string());
                let snippet = shader_source(name).ok_or_else(|| Error::Shader {
                    file: path.into(),
                    line: file_line,
                    message: format!("#include of unknown snippet '{name}'"),
                    diagnostic: String::new(),
                })?;
                splice(name, snippet, out, included)?;
            }
            line_no = out.source.lines().count() as u32 + 1;
            continue;
        }
        if run_start.is_none() {
            run_start = Some((line_no, file_line));
        }
        out.source.push_str(line);
        out.source.push('\n');
        line_no += 1;
    }
    close(out, &mut run_start, line_no);
    Ok(())
}

/// Parses and validates an assembled shader with naga, reporting errors at their file and line.
pub fn validate(a: &Assembled) -> Result<(naga::Module, naga::valid::ModuleInfo)> {
    let module = naga::front::wgsl::parse_str(&a.source).map_err(|e| {
        let line = e.location(&a.source).map(|l| l.line_number).unwrap_or(0);
        let (file, line) = a.origin(line);
        Error::Shader {
            file,
            line,
            message: e.message().to_string(),
            diagnostic: e.emit_to_string(&a.source),
        }
    })?;
    let info = naga::valid::Validator::new(
        naga::valid::ValidationFlags::all(),
        naga::valid::Capabilities::all(),
    )
    .validate(&module)
    .map_err(|e| {
        let line = e.location(&a.source).map(|l| l.line_number).unwrap_or(0);
        let (file, line) = a.origin(line);
        Error::Shader {
            file,
            line,
            message: e.as_inner().to_string(),
            diagnostic: e.emit_to_string(&a.source),
        }
    })?;
    Ok((module, info))
}

/// How an entry point uses one binding, read from the shader.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BindingKind {
    Uniform,
    StorageRead,
    StorageReadWrite,
}

/// Reflection of one entry point: its bindings in group 0 (sorted by binding number) and workgroup needs.
#[derive(Clone, Debug)]
pub struct EntryInfo {
    pub bindings: Vec<(u32, BindingKind)>,
    pub workgroup_bytes: u64,
    /// Invocations per workgroup, with the key's override constants.
    pub invocations: u32,
    /// The entry point takes a subgroup builtin (it runs subgroup operations).
    pub uses_subgroups: bool,
}

/// What a kernel needs of a device (bindings, workgroup memory and size), from its source and
/// the key's constants alone: no device is needed.
pub fn entry_info(key: &KernelKey) -> Result<EntryInfo> {
    let assembled = assemble(key.file, key.dtype)?;
    let (module, info) = validate(&assembled)?;
    reflect(&module, &info, key.entry, key.file, &key.constants)
}

fn reflect(
    module: &naga::Module,
    info: &naga::valid::ModuleInfo,
    entry: &str,
    file: &str,
    constants: &[(&'static str, u64)],
) -> Result<EntryInfo> {
    let index = module
        .entry_points
        .iter()
        .position(|e| e.name == entry && e.stage == naga::ShaderStage::Compute)
        .ok_or_else(|| Error::UnknownKernel(format!("{file}::{entry}")))?;
    let fi = info.get_entry_point(index);
    let shader_err = |message: String| Error::Shader {
        file: file.into(),
        line: 0,
        message,
        diagnostic: String::new(),
    };
    // Workgroup arrays may be sized by override constants: measure them with the key's values,
    // as the pipeline will have them.
    let mut values = naga::back::PipelineConstants::default();
    for (name, bits) in constants {
        values.insert(name.to_string(), f64::from_bits(*bits));
    }
    let (resolved, _) = naga::back::pipeline_constants::process_overrides(
        module,
        info,
        Some((naga::ShaderStage::Compute, entry)),
        &values,
    )
    .map_err(|e| shader_err(format!("override constants of {entry}: {e}")))?;
    let mut layouter = naga::proc::Layouter::default();
    layouter
        .update(resolved.to_ctx())
        .map_err(|e| shader_err(format!("layout: {e}")))?;
    let workgroup_bytes = resolved
        .global_variables
        .iter()
        .filter(|(_, var)| var.space == naga::AddressSpace::WorkGroup)
        .map(|(_, var)| layouter[var.ty].size as u64)
        .sum();
    let invocations = resolved
        .entry_points
        .iter()
        .find(|e| e.name == entry)
        .map_or(0, |e| e.workgroup_size.iter().product());
    let mut bindings = Vec::new();
    for (handle, var) in module.global_variables.iter() {
        if fi[handle].is_empty() {
            continue;
        }
        match var.space {
            naga::AddressSpace::Uniform => {
                if let Some(rb) = &var.binding {
                    bindings.push((rb.group, rb.binding, BindingKind::Uniform));
                }
            }
            naga::AddressSpace::Storage { access } => {
                if let Some(rb) = &var.binding {
                    let kind = if access.contains(naga::StorageAccess::STORE) {
                        BindingKind::StorageReadWrite
                    } else {
                        BindingKind::StorageRead
                    };
                    bindings.push((rb.group, rb.binding, kind));
                }
            }
            _ => {}
        }
    }
    if let Some(g) = bindings.iter().find(|b| b.0 != 0) {
        return Err(Error::Binding {
            kernel: format!("{file}::{entry}"),
            msg: format!("uses bind group {}; kernels use group 0 only", g.0),
        });
    }
    bindings.sort_by_key(|b| b.1);
    let uses_subgroups = module.entry_points[index]
        .function
        .arguments
        .iter()
        .any(|a| {
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
    Ok(EntryInfo {
        bindings: bindings.into_iter().map(|b| (b.1, b.2)).collect(),
        workgroup_bytes,
        invocations,
        uses_subgroups,
    })
}

/// What identifies a compiled pipeline.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct KernelKey {
    pub file: &'static str,
    pub entry: &'static str,
    pub dtype: DType,
    /// Pipeline-overridable constants, by name, as f64 bits (so the key can be hashed).
    pub constants: Vec<(&'static str, u64)>,
}

impl KernelKey {
    pub fn new(file: &'static str, entry: &'static str, dtype: DType) -> Self {
        KernelKey {
            file,
            entry,
            dtype,
            constants: Vec::new(),
        }
    }
    /// Sets an `override` constant of the shader.
    pub fn with(mut self, name: &'static str, value: f64) -> Self {
        self.constants.retain(|c| c.0 != name);
        self.constants.push((name, value.to_bits()));
        self.constants.sort();
        self
    }
}

/// A compiled compute pipeline and what it expects to be bound.
pub struct Kernel {
    pub key: KernelKey,
    pub pipeline: wgpu::ComputePipeline,
    pub layout: wgpu::BindGroupLayout,
    pub info: EntryInfo,
}

impl std::fmt::Debug for Kernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Kernel({} {:?})", self.name(), self.key.dtype)
    }
}

impl Kernel {
    pub fn name(&self) -> String {
        format!("{}::{}", self.key.file, self.key.entry)
    }
    /// The file stem, plus `:entry` where the entry point is named otherwise (`rat_scan:rat_step`).
    pub fn short_name(&self) -> String {
        let stem = self.key.file.trim_end_matches(".wgsl");
        if stem == self.key.entry {
            stem.to_string()
        } else {
            format!("{stem}:{}", self.key.entry)
        }
    }
}

/// A shader compiled by the device, with naga's module and analysis for reflection.
type CompiledModule = (wgpu::ShaderModule, naga::Module, naga::valid::ModuleInfo);

/// Compiles shaders once and caches pipelines by [`KernelKey`].
pub struct Registry {
    modules: Mutex<HashMap<(&'static str, DType), Arc<CompiledModule>>>,
    kernels: Mutex<HashMap<KernelKey, Arc<Kernel>>>,
    /// Where a browser's late answers about these shaders and pipelines go (the owning
    /// context reads it in `check_alive`).
    pub(crate) late: crate::context::LateError,
}

impl Registry {
    pub fn new() -> Self {
        Registry {
            modules: Mutex::new(HashMap::new()),
            kernels: Mutex::new(HashMap::new()),
            late: crate::context::LateError::default(),
        }
    }

    /// Number of pipelines compiled so far (tests use it to prove the cache works).
    pub fn pipelines_compiled(&self) -> usize {
        self.kernels.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// The keys of every pipeline compiled so far.
    pub fn keys(&self) -> Vec<KernelKey> {
        self.kernels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect()
    }

    /// The pipeline for `key`, compiling it on first use.
    pub fn get(
        &self,
        device: &wgpu::Device,
        backend: wgpu::Backend,
        limits: &wgpu::Limits,
        key: &KernelKey,
    ) -> Result<Arc<Kernel>> {
        let late = &self.late;
        if let Some(k) = self
            .kernels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
        {
            return Ok(k.clone());
        }
        if let Some(why) = variants::find(key.file, key.entry).and_then(|v| v.excluded_on(backend))
        {
            return Err(Error::VariantNotOnBackend {
                kernel: format!("{}::{}", key.file, key.entry),
                backend: format!("{backend:?}"),
                why,
            });
        }
        let module = self.module(device, late, key.file, key.dtype)?;
        let (shader, naga_module, naga_info) = &*module;
        let info = reflect(naga_module, naga_info, key.entry, key.file, &key.constants)?;
        let limit = limits.max_compute_workgroup_storage_size as u64;
        if info.workgroup_bytes > limit {
            return Err(Error::LimitExceeded {
                what: format!("kernel {}::{} workgroup memory", key.file, key.entry),
                requested: info.workgroup_bytes,
                limit_name: "max_compute_workgroup_storage_size",
                limit,
            });
        }
        let storage = info
            .bindings
            .iter()
            .filter(|(_, k)| !matches!(k, BindingKind::Uniform))
            .count() as u64;
        let limit = limits.max_storage_buffers_per_shader_stage as u64;
        if storage > limit {
            return Err(Error::LimitExceeded {
                what: format!("kernel {}::{} storage buffers", key.file, key.entry),
                requested: storage,
                limit_name: "max_storage_buffers_per_shader_stage",
                limit,
            });
        }
        let entries: Vec<wgpu::BindGroupLayoutEntry> = info
            .bindings
            .iter()
            .map(|&(binding, kind)| wgpu::BindGroupLayoutEntry {
                binding,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: wgpu::BindingType::Buffer {
                    ty: match kind {
                        BindingKind::Uniform => wgpu::BufferBindingType::Uniform,
                        BindingKind::StorageRead => {
                            wgpu::BufferBindingType::Storage { read_only: true }
                        }
                        BindingKind::StorageReadWrite => {
                            wgpu::BufferBindingType::Storage { read_only: false }
                        }
                    },
                    has_dynamic_offset: false,
                    min_binding_size: None,
                },
                count: None,
            })
            .collect();
        let name = format!("{}::{}", key.file, key.entry);
        let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some(&name),
            entries: &entries,
        });
        let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some(&name),
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        });
        let constants: Vec<(&str, f64)> = key
            .constants
            .iter()
            .map(|(n, b)| (*n, f64::from_bits(*b)))
            .collect();
        let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(&name),
            layout: Some(&pipeline_layout),
            module: shader,
            entry_point: Some(key.entry),
            compilation_options: wgpu::PipelineCompilationOptions {
                constants: &constants,
                // Every kernel writes its workgroup memory before reading it; zeroing it costs a pass.
                zero_initialize_workgroup_memory: false,
            },
            cache: None,
        });
        crate::context::settle(scope, late, || format!("creating pipeline {name}"))?;
        let kernel = Arc::new(Kernel {
            key: key.clone(),
            pipeline,
            layout,
            info,
        });
        self.kernels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.clone(), kernel.clone());
        Ok(kernel)
    }

    fn module(
        &self,
        device: &wgpu::Device,
        late: &crate::context::LateError,
        file: &'static str,
        dtype: DType,
    ) -> Result<Arc<CompiledModule>> {
        if let Some(m) = self
            .modules
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(file, dtype))
        {
            return Ok(m.clone());
        }
        let assembled = assemble(file, dtype)?;
        let (naga_module, naga_info) = validate(&assembled)?;
        let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let desc = wgpu::ShaderModuleDescriptor {
            label: Some(file),
            source: wgpu::ShaderSource::Wgsl(assembled.source.clone().into()),
        };
        let shader = device.create_shader_module(desc);
        crate::context::settle(scope, late, || {
            format!("compiling shader {file} ({dtype:?})")
        })?;
        let m = Arc::new((shader, naga_module, naga_info));
        self.modules
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert((file, dtype), m.clone());
        Ok(m)
    }
}

impl Default for Registry {
    fn default() -> Self {
        Self::new()
    }
}
