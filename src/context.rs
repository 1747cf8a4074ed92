//! The GPU context: adapter choice, device and queue, features and limits, the kernel registry and
//! the buffer pool. A `Context` is a cheap handle (`Clone + Send + Sync`); clones share everything.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};
use crate::kernels::{Kernel, KernelKey, Registry};
use crate::pool::{BufferKind, BufferPool, PoolStats};
use crate::record::Recording;
use crate::tensor::{DType, Tensor};

/// Features chunkwise uses when the adapter has them; none is required.
pub const WANTED_FEATURES: wgpu::Features = wgpu::Features::SHADER_F16
    .union(wgpu::Features::SUBGROUP)
    .union(wgpu::Features::TIMESTAMP_QUERY)
    .union(wgpu::Features::TIMESTAMP_QUERY_INSIDE_ENCODERS)
    .union(wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES);

/// Which family of kernels a context picks: the GPU kernels (workgroup memory, many workgroups)
/// or the CPU-adapter kernels (no barriers, work shared across SIMD lanes; fast on lavapipe and
/// other CPU drivers). `CHUNKWISE_SCHEDULE=auto|gpu|cpu` sets it for a new context.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Schedule {
    /// The CPU-adapter kernels on a CPU adapter, the GPU kernels elsewhere.
    #[default]
    Auto,
    /// The GPU kernels on any adapter (how CI runs them on lavapipe).
    Gpu,
    /// The CPU-adapter kernels on any adapter, where they can run there.
    Cpu,
}

impl Schedule {
    /// The environment variable [`ContextOptions::from_env`] reads.
    pub const ENV: &'static str = "CHUNKWISE_SCHEDULE";

    pub fn name(self) -> &'static str {
        match self {
            Schedule::Auto => "auto",
            Schedule::Gpu => "gpu",
            Schedule::Cpu => "cpu",
        }
    }
    fn from_u8(v: u8) -> Schedule {
        match v {
            1 => Schedule::Gpu,
            2 => Schedule::Cpu,
            _ => Schedule::Auto,
        }
    }
    fn to_u8(self) -> u8 {
        match self {
            Schedule::Auto => 0,
            Schedule::Gpu => 1,
            Schedule::Cpu => 2,
        }
    }
    /// `CHUNKWISE_SCHEDULE`: unset or empty is `Auto`; anything but auto/gpu/cpu is an error.
    pub fn from_env() -> Result<Schedule> {
        match std::env::var(Self::ENV) {
            Ok(v) if !v.trim().is_empty() => v.parse(),
            _ => Ok(Schedule::Auto),
        }
    }
}

impl std::str::FromStr for Schedule {
    type Err = Error;
    fn from_str(s: &str) -> Result<Schedule> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(Schedule::Auto),
            "gpu" => Ok(Schedule::Gpu),
            "cpu" => Ok(Schedule::Cpu),
            other => Err(Error::invalid(
                "schedule",
                format!("{}='{other}' is not one of auto, gpu, cpu", Schedule::ENV),
            )),
        }
    }
}

impl std::fmt::Display for Schedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// How to pick an adapter. [`ContextOptions::from_env`] reads the variables wgpu users know.
#[derive(Clone, Debug, Default)]
pub struct ContextOptions {
    /// Backends to consider (`WGPU_BACKEND`, e.g. `vulkan`, `metal`, `dx12`, `gl`); all when unset.
    pub backends: Option<wgpu::Backends>,
    /// Case-insensitive substring of the adapter name (`WGPU_ADAPTER_NAME`).
    pub adapter_name: Option<String>,
    /// `WGPU_POWER_PREF` (`low` or `high`).
    pub power_preference: Option<wgpu::PowerPreference>,
    /// Kernel schedule (`CHUNKWISE_SCHEDULE`).
    pub schedule: Schedule,
    /// The tune cache to read this adapter's tuned choices from (`CHUNKWISE_TUNE_CACHE`, else
    /// [`crate::tune::default_cache_path`]); `None`: defaults only.
    pub tune_cache: Option<std::path::PathBuf>,
}

impl ContextOptions {
    /// Reads `WGPU_BACKEND`, `WGPU_ADAPTER_NAME`, `WGPU_POWER_PREF` and `CHUNKWISE_SCHEDULE`; a
    /// `CHUNKWISE_SCHEDULE` that is not auto, gpu or cpu is an error.
    pub fn from_env() -> Result<Self> {
        Ok(ContextOptions {
            backends: backends_from_env(),
            adapter_name: std::env::var("WGPU_ADAPTER_NAME")
                .ok()
                .filter(|s| !s.is_empty()),
            power_preference: wgpu::PowerPreference::from_env(),
            schedule: Schedule::from_env()?,
            tune_cache: crate::tune::cache_path_from_env(),
        })
    }
}

/// What `chunkwise info` shows of an adapter.
#[derive(Clone, Debug, serde::Serialize)]
pub struct AdapterSummary {
    pub backend: String,
    pub name: String,
    pub driver: String,
    pub driver_info: String,
    pub device_type: String,
    pub vendor: u32,
    pub device: u32,
}

impl From<&wgpu::AdapterInfo> for AdapterSummary {
    fn from(i: &wgpu::AdapterInfo) -> Self {
        AdapterSummary {
            backend: format!("{:?}", i.backend),
            name: i.name.clone(),
            driver: i.driver.clone(),
            driver_info: i.driver_info.clone(),
            device_type: format!("{:?}", i.device_type),
            vendor: i.vendor,
            device: i.device,
        }
    }
}

pub(crate) struct Inner {
    pub(crate) device: wgpu::Device,
    pub(crate) queue: wgpu::Queue,
    pub(crate) info: wgpu::AdapterInfo,
    pub(crate) features: wgpu::Features,
    pub(crate) limits: wgpu::Limits,
    pub(crate) registry: Registry,
    pub(crate) pool: BufferPool,
    lost: Arc<Mutex<Option<String>>>,
    warned_f16: AtomicBool,
    /// Bytes of tensors this context may hold at once; 0 = no cap.
    memory_budget: AtomicU64,
    /// A binding size below the adapter's that the code plans with; 0 = the adapter's.
    binding_limit: AtomicU64,
    /// A buffer size below the adapter's that the code plans with; 0 = the adapter's.
    buffer_limit: AtomicU64,
    /// Whether kernels with subgroup operations may be picked (`set_subgroup_kernels`).
    subgroup_kernels: AtomicBool,
    /// The [`Schedule`] setting (`set_schedule`), as `Schedule::to_u8`.
    schedule: AtomicU8,
    /// A small zeroed buffer bound where a kernel's optional read-only input is not used.
    placeholder: std::sync::OnceLock<Tensor>,
    /// Tuned variant choices for this adapter (`set_tuning`).
    tuning: std::sync::RwLock<Option<Arc<crate::tune::Tuning>>>,
    /// Cooperative-matrix sizes the device offers (empty without the feature).
    coop_sizes: std::sync::RwLock<Vec<wgpu::CooperativeMatrixProperties>>,
}

/// The handle to one GPU device and everything chunkwise keeps for it.
#[derive(Clone)]
pub struct Context {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Context({} on {:?})",
            self.inner.info.name, self.inner.info.backend
        )
    }
}

/// The first error a browser reported late, kept until the context's next check reads it.
#[derive(Clone, Default)]
pub(crate) struct LateError(Arc<Mutex<Option<Error>>>);

impl LateError {
    fn take(&self) -> Option<Error> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// What an error scope caught, as a `Result`. Natively wgpu validates on the calling thread, so the
/// answer is ready and read at once. A browser answers through a promise that a page must not block
/// on: there the answer is read when it arrives and kept in `late`, and the context's next check
/// ([`Context::check_alive`], run by every submit and read-back) returns it.
pub(crate) fn settle(
    scope: wgpu::ErrorScopeGuard,
    late: &LateError,
    during: impl FnOnce() -> String,
) -> Result<()> {
    #[cfg(not(target_arch = "wasm32"))]
    {
        let _ = late;
        match pollster::block_on(scope.pop()) {
            Some(e) => Err(Error::from_wgpu(during(), e)),
            None => Ok(()),
        }
    }
    #[cfg(target_arch = "wasm32")]
    {
        let answer = scope.pop();
        let late = late.clone();
        let during = during();
        wasm_bindgen_futures::spawn_local(async move {
            if let Some(e) = answer.await {
                let mut slot = late.0.lock().unwrap_or_else(|p| p.into_inner());
                if slot.is_none() {
                    *slot = Some(Error::from_wgpu(during, e));
                }
            }
        });
        Ok(())
    }
}

/// A read-back for code shared by the blocking CLI and the async web build: natively it blocks
/// (the future is ready when first polled, so `pollster::block_on` around the caller costs
/// nothing); in a browser it awaits the buffer map.
pub(crate) async fn read_back(ctx: &Context, t: &Tensor) -> Result<Vec<f32>> {
    #[cfg(not(target_arch = "wasm32"))]
    return ctx.download(t);
    #[cfg(target_arch = "wasm32")]
    return ctx.download_async(t).await;
}

fn instance(backends: Option<wgpu::Backends>) -> wgpu::Instance {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle().with_env();
    if let Some(b) = backends {
        desc.backends = b;
    }
    wgpu::Instance::new(desc)
}

/// `WGPU_BACKEND`, where set to something (wgpu reads an empty value as no backend at all).
fn backends_from_env() -> Option<wgpu::Backends> {
    std::env::var("WGPU_BACKEND")
        .is_ok_and(|v| !v.trim().is_empty())
        .then(wgpu::Backends::from_env)
        .flatten()
}

/// Every adapter wgpu finds for the backends in `WGPU_BACKEND` (all when unset).
#[cfg(not(target_arch = "wasm32"))]
pub fn enumerate_adapters() -> Vec<wgpu::Adapter> {
    let backends = backends_from_env().unwrap_or(wgpu::Backends::all());
    pollster::block_on(instance(Some(backends)).enumerate_adapters(backends))
}

impl Context {
    /// Opens the adapter chosen by `WGPU_BACKEND`, `WGPU_ADAPTER_NAME` and `WGPU_POWER_PREF`.
    pub async fn new() -> Result<Context> {
        Self::with_options(ContextOptions::from_env()?).await
    }

    /// Blocking twin of [`Context::new`].
    #[cfg(not(target_arch = "wasm32"))]
    pub fn new_blocking() -> Result<Context> {
        pollster::block_on(Self::new())
    }

    /// Opens an adapter chosen by explicit options.
    pub async fn with_options(opts: ContextOptions) -> Result<Context> {
        let backends = opts.backends.unwrap_or(wgpu::Backends::all());
        let inst = instance(Some(backends));
        let adapter = match &opts.adapter_name {
            Some(want) => {
                let all = inst.enumerate_adapters(backends).await;
                let names: Vec<String> = all
                    .iter()
                    .map(|a| format!("'{}'", a.get_info().name))
                    .collect();
                let want_lc = want.to_lowercase();
                all.into_iter()
                    .find(|a| a.get_info().name.to_lowercase().contains(&want_lc))
                    .ok_or_else(|| Error::NoAdapter {
                        reason: format!(
                            "WGPU_ADAPTER_NAME='{want}' matches none of the adapters found: [{}]",
                            names.join(", ")
                        ),
                    })?
            }
            None => inst
                .request_adapter(&wgpu::RequestAdapterOptions {
                    power_preference: opts.power_preference.unwrap_or_default(),
                    ..Default::default()
                })
                .await
                .map_err(|e| Error::NoAdapter {
                    reason: e.to_string(),
                })?,
        };
        let ctx = Self::from_adapter(&adapter).await?;
        ctx.set_schedule(opts.schedule);
        if let Some(path) = &opts.tune_cache {
            // A broken cache costs speed, not correctness: warn and use the defaults.
            match crate::tune::Tuning::load(path, ctx.adapter_info()) {
                Ok(t) => ctx.set_tuning(t),
                Err(e) => log::warn!("{e}"),
            }
        }
        Ok(ctx)
    }

    /// Opens a device on an adapter the caller already chose.
    pub async fn from_adapter(adapter: &wgpu::Adapter) -> Result<Context> {
        let info = adapter.get_info();
        let features = adapter.features() & WANTED_FEATURES;
        // Tensor cores: requested where offered. The coop kernels are picked only after
        // `chunkwise tune` has checked them on this adapter (crate::tune), so a driver bug in an
        // experimental feature costs a rejected variant, not a wrong result.
        let coop = wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX;
        let features = features | (adapter.features() & coop);
        let experimental = if features.contains(coop) {
            // SAFETY: wgpu marks experimental features unsafe because they may be unsound or
            // change; chunkwise uses this one only in kernels verified on the device first.
            unsafe { wgpu::ExperimentalFeatures::enabled() }
        } else {
            wgpu::ExperimentalFeatures::disabled()
        };
        let coop_sizes = if features.contains(coop) {
            adapter.cooperative_matrix_properties()
        } else {
            vec![]
        };
        // The adapter's own limits, not wgpu's conservative defaults (128/256 MiB bindings and buffers).
        let limits = adapter.limits();
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("chunkwise"),
                required_features: features,
                required_limits: limits.clone(),
                experimental_features: experimental,
                memory_hints: wgpu::MemoryHints::Performance,
                trace: wgpu::Trace::Off,
            })
            .await
            .map_err(|e| Error::RequestDevice {
                adapter: info.name.clone(),
                reason: e.to_string(),
            })?;
        // Our own device: errors outside any scope must not panic the host process.
        device.on_uncaptured_error(Arc::new(|e: wgpu::Error| {
            log::error!("uncaptured wgpu error: {e}")
        }));
        let ctx = Self::build(device, queue, info);
        *ctx.inner
            .coop_sizes
            .write()
            .unwrap_or_else(|p| p.into_inner()) = coop_sizes;
        let lost = ctx.inner.lost.clone();
        ctx.inner
            .device
            .set_device_lost_callback(move |reason, msg| {
                *lost.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some(format!("{reason:?}: {msg}"));
            });
        Ok(ctx)
    }

    /// Wraps a host application's existing device and queue. chunkwise only uses the features and
    /// limits the device was created with, and it leaves the device's error handlers alone (every
    /// chunkwise call checks errors through error scopes). The schedule starts as `Auto`
    /// ([`Context::set_schedule`] changes it).
    pub fn from_wgpu(
        device: wgpu::Device,
        queue: wgpu::Queue,
        adapter_info: wgpu::AdapterInfo,
    ) -> Context {
        Self::build(device, queue, adapter_info)
    }

    fn build(device: wgpu::Device, queue: wgpu::Queue, info: wgpu::AdapterInfo) -> Context {
        let features = device.features();
        let limits = device.limits();
        log::info!(
            "chunkwise: adapter '{}' ({:?}, {:?}, driver '{} {}')",
            info.name,
            info.backend,
            info.device_type,
            info.driver,
            info.driver_info
        );
        log::info!(
            "chunkwise: features {:?}; max_storage_buffer_binding_size {} B, max_buffer_size {} B, \
             max_compute_workgroup_storage_size {} B, max_compute_invocations_per_workgroup {}",
            features & WANTED_FEATURES,
            limits.max_storage_buffer_binding_size,
            limits.max_buffer_size,
            limits.max_compute_workgroup_storage_size,
            limits.max_compute_invocations_per_workgroup
        );
        let pool = BufferPool::new(device.clone());
        Context {
            inner: Arc::new(Inner {
                device,
                queue,
                info,
                features,
                limits,
                registry: Registry::new(),
                pool,
                lost: Arc::new(Mutex::new(None)),
                warned_f16: AtomicBool::new(false),
                memory_budget: AtomicU64::new(0),
                binding_limit: AtomicU64::new(0),
                buffer_limit: AtomicU64::new(0),
                subgroup_kernels: AtomicBool::new(true),
                schedule: AtomicU8::new(Schedule::Auto.to_u8()),
                placeholder: std::sync::OnceLock::new(),
                tuning: std::sync::RwLock::new(None),
                coop_sizes: std::sync::RwLock::new(vec![]),
            }),
        }
    }

    pub fn device(&self) -> &wgpu::Device {
        &self.inner.device
    }
    pub fn queue(&self) -> &wgpu::Queue {
        &self.inner.queue
    }
    pub fn adapter_info(&self) -> &wgpu::AdapterInfo {
        &self.inner.info
    }
    pub fn features(&self) -> wgpu::Features {
        self.inner.features
    }
    pub fn limits(&self) -> &wgpu::Limits {
        &self.inner.limits
    }
    pub fn supports_f16(&self) -> bool {
        self.inner.features.contains(wgpu::Features::SHADER_F16)
    }
    pub fn supports_timestamps(&self) -> bool {
        self.inner
            .features
            .contains(wgpu::Features::TIMESTAMP_QUERY)
    }
    /// The subgroup size when the device has subgroups of one fixed size (8 on lavapipe at 256
    /// bits: its SIMD lanes), else None. CPU-adapter kernels that trade loads for subgroup
    /// broadcasts are written for 8.
    pub fn subgroup_size(&self) -> Option<u32> {
        let info = &self.inner.info;
        (self.inner.features.contains(wgpu::Features::SUBGROUP)
            && self.inner.subgroup_kernels.load(Ordering::Relaxed)
            && info.subgroup_min_size == info.subgroup_max_size)
            .then_some(info.subgroup_min_size)
    }
    /// Whether kernels may use subgroup operations of any size (the device has `SUBGROUP` and
    /// [`Context::set_subgroup_kernels`] has not switched them off).
    pub fn subgroups_enabled(&self) -> bool {
        self.inner.features.contains(wgpu::Features::SUBGROUP)
            && self.inner.subgroup_kernels.load(Ordering::Relaxed)
    }
    /// Switches the kernels that use subgroup operations off (or back on) for pipelines built
    /// from now on: for a driver whose subgroups misbehave, and for testing the kernels that
    /// run without them on the same adapter.
    pub fn set_subgroup_kernels(&self, on: bool) {
        self.inner.subgroup_kernels.store(on, Ordering::Relaxed);
    }
    /// Whether the CPU-adapter kernels are picked: the schedule resolved for this adapter.
    pub fn cpu_schedules(&self) -> bool {
        match self.schedule() {
            Schedule::Auto => self.is_cpu_adapter(),
            Schedule::Gpu => false,
            Schedule::Cpu => true,
        }
    }
    /// The schedule setting (see [`Schedule`]).
    pub fn schedule(&self) -> Schedule {
        Schedule::from_u8(self.inner.schedule.load(Ordering::Relaxed))
    }
    /// Picks the GPU or the CPU-adapter kernels for work recorded from now on: `Gpu` on lavapipe
    /// is how CI tests the GPU kernels. Limits that protect results on CPU drivers (llvmpipe's
    /// loop budget) apply whatever the schedule.
    pub fn set_schedule(&self, schedule: Schedule) {
        self.inner
            .schedule
            .store(schedule.to_u8(), Ordering::Relaxed);
    }
    /// What `chunkwise info` and table headers print: the setting, the kernels it resolves to
    /// here, whether subgroup kernels may be picked, and where tuned choices came from, e.g.
    /// `auto → cpu kernels, subgroups of 8; untuned (defaults)`.
    pub fn schedule_summary(&self) -> String {
        let kernels = if self.cpu_schedules() { "cpu" } else { "gpu" };
        let sg = match self.subgroup_size() {
            Some(n) => format!("subgroups of {n}"),
            None if self.inner.features.contains(wgpu::Features::SUBGROUP)
                && !self.inner.subgroup_kernels.load(Ordering::Relaxed) =>
            {
                "subgroup kernels off".to_string()
            }
            None => "no subgroup kernels".to_string(),
        };
        let tuned = match self.tuning() {
            Some(t) => format!(
                "tuned: {} ({} shape classes)",
                t.source
                    .as_deref()
                    .map_or("set in code".into(), |p| p.display().to_string()),
                t.len()
            ),
            None => "untuned (defaults)".into(),
        };
        format!("{} → {kernels} kernels, {sg}; {tuned}", self.schedule())
    }
    /// Whether the device offers cooperative matrices of `size` × `size` × `size` with inputs of
    /// `dtype` and an f32 accumulator (what the tensor-core GEMMs use).
    pub fn has_coop_matrix(&self, size: u32, dtype: DType) -> bool {
        let ab = match dtype {
            DType::F32 => wgpu::CooperativeScalarType::F32,
            DType::F16 => wgpu::CooperativeScalarType::F16,
        };
        self.inner
            .features
            .contains(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX)
            && self
                .inner
                .coop_sizes
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .any(|p| {
                    (p.m_size, p.n_size, p.k_size) == (size, size, size)
                        && p.ab_type == ab
                        && p.cr_type == wgpu::CooperativeScalarType::F32
                })
    }
    /// The tuned variant choices in use (`None`: the defaults per device class).
    pub fn tuning(&self) -> Option<Arc<crate::tune::Tuning>> {
        self.inner
            .tuning
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
    /// Replaces the tuned choices for work recorded from now on (`None`: defaults).
    pub fn set_tuning(&self, tuning: Option<crate::tune::Tuning>) {
        *self.inner.tuning.write().unwrap_or_else(|p| p.into_inner()) = tuning.map(Arc::new);
    }
    pub fn is_cpu_adapter(&self) -> bool {
        self.inner.info.device_type == wgpu::DeviceType::Cpu
    }
    /// Caps the bytes of GPU buffers this context holds at once (`None`: no cap). An allocation
    /// past the cap fails with [`Error::OutOfMemory`] before the driver is asked, so a host app can
    /// keep chunkwise inside its share of the GPU, and so drivers that over-commit (lavapipe, some
    /// integrated GPUs) still fail early instead of at first touch.
    pub fn set_memory_budget(&self, bytes: Option<u64>) {
        self.inner
            .memory_budget
            .store(bytes.unwrap_or(0), Ordering::Relaxed);
    }
    pub fn memory_budget(&self) -> Option<u64> {
        Some(self.inner.memory_budget.load(Ordering::Relaxed)).filter(|&b| b > 0)
    }
    /// Bytes this context can still allocate, and what bounds them, where that is known: the
    /// memory budget's remainder ([`Context::set_memory_budget`]), else for CPU adapters the
    /// host's available memory (their buffers are host memory). wgpu does not report a GPU's
    /// free memory, so on GPUs without a budget this is `None` and the driver's allocation
    /// error is what says a model is too large.
    pub fn memory_available(&self) -> Option<(u64, &'static str)> {
        if let Some(budget) = self.memory_budget() {
            let used = self.inner.pool.stats().bytes_in_use;
            return Some((
                budget.saturating_sub(used),
                "the context's memory budget leaves",
            ));
        }
        if !self.is_cpu_adapter() {
            return None;
        }
        let info = std::fs::read_to_string("/proc/meminfo").ok()?;
        let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
        let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some((kb * 1024, "the host (a CPU adapter's memory) has available"))
    }
    /// Plans and checks storage bindings against `bytes` instead of the adapter's
    /// `max_storage_buffer_binding_size` where that is smaller (`None`: the adapter's). Tensors
    /// past it are split (embedding tables, LM heads, activations in row blocks): this lets a
    /// test or a host app exercise the split paths of a device with a smaller limit.
    pub fn set_binding_limit(&self, bytes: Option<u64>) {
        self.inner
            .binding_limit
            .store(bytes.unwrap_or(0), Ordering::Relaxed);
    }
    /// The largest storage binding kernels may get: the adapter's
    /// `max_storage_buffer_binding_size`, or less ([`Context::set_binding_limit`]).
    pub fn binding_limit(&self) -> u64 {
        let own = self.inner.limits.max_storage_buffer_binding_size;
        match self.inner.binding_limit.load(Ordering::Relaxed) {
            0 => own,
            b => b.min(own),
        }
    }
    /// Plans and checks buffers against `bytes` instead of the adapter's `max_buffer_size` where
    /// that is smaller (`None`: the adapter's): as [`Context::set_binding_limit`], for the paths
    /// that split what one buffer cannot hold ([`crate::model::Model::forward_blocks`]).
    pub fn set_buffer_limit(&self, bytes: Option<u64>) {
        self.inner
            .buffer_limit
            .store(bytes.unwrap_or(0), Ordering::Relaxed);
    }
    /// The largest buffer tensors may get: the adapter's `max_buffer_size`, or less
    /// ([`Context::set_buffer_limit`]).
    pub fn buffer_limit(&self) -> u64 {
        let own = self.inner.limits.max_buffer_size;
        match self.inner.buffer_limit.load(Ordering::Relaxed) {
            0 => own,
            b => b.min(own),
        }
    }
    pub fn pool_stats(&self) -> PoolStats {
        self.inner.pool.stats()
    }
    /// Frees the pool's cached buffers.
    pub fn trim_pool(&self) {
        self.inner.pool.trim()
    }
    pub fn pipelines_compiled(&self) -> usize {
        self.inner.registry.pipelines_compiled()
    }

    /// The dtype tensors will actually be stored in: f16 falls back to f32 (with one warning) when
    /// the device lacks `SHADER_F16`.
    pub fn resolve_dtype(&self, dtype: DType) -> DType {
        if dtype == DType::F16 && !self.supports_f16() {
            if !self.inner.warned_f16.swap(true, Ordering::Relaxed) {
                log::warn!(
                    "adapter '{}' has no SHADER_F16: storing f16 tensors as f32",
                    self.inner.info.name
                );
            }
            return DType::F32;
        }
        dtype
    }

    /// Fails with `DeviceLost` once the device is gone, and (in a browser) with the first error
    /// the browser reported late since the last check (see `settle`).
    pub fn check_alive(&self) -> Result<()> {
        if let Some(reason) = &*self.inner.lost.lock().unwrap_or_else(|p| p.into_inner()) {
            return Err(Error::DeviceLost {
                reason: reason.clone(),
            });
        }
        match self.inner.registry.late.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// The compiled pipeline for a kernel key (cached).
    pub fn kernel(&self, key: &KernelKey) -> Result<Arc<Kernel>> {
        self.inner.registry.get(
            &self.inner.device,
            self.inner.info.backend,
            &self.inner.limits,
            key,
        )
    }

    /// The keys of every pipeline this context has compiled (the kernel tests check each against
    /// the variant table, `kernels::variants`).
    pub fn compiled_kernels(&self) -> Vec<KernelKey> {
        self.inner.registry.keys()
    }

    /// Whether the selection may pick `file::entry` on this adapter's backend (the variant
    /// table's `not_on`).
    pub fn variant_allowed(&self, file: &str, entry: &str) -> bool {
        crate::kernels::variants::find(file, entry)
            .is_none_or(|v| v.excluded_on(self.inner.info.backend).is_none())
    }

    /// A new, empty recording of dispatches; nothing runs until [`Recording::submit`].
    pub fn record(&self) -> Recording {
        Recording::new(self.clone())
    }

    /// Records with `f`, submits once, and returns what `f` returned.
    pub fn run<T>(&self, f: impl FnOnce(&mut Recording) -> Result<T>) -> Result<T> {
        let mut rec = self.record();
        let out = f(&mut rec)?;
        rec.submit()?;
        Ok(out)
    }

    #[cfg(not(target_arch = "wasm32"))]
    /// Waits until all submitted work has finished.
    pub fn sync(&self) -> Result<()> {
        self.check_alive()?;
        self.inner
            .device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::Readback(format!("waiting for the GPU: {e}")))?;
        self.check_alive()
    }

    /// Checks a buffer request against the adapter's limits before wgpu sees it.
    pub(crate) fn check_buffer_bytes(&self, what: &str, bytes: u64) -> Result<()> {
        let limit = self.buffer_limit();
        if bytes > limit {
            return Err(Error::LimitExceeded {
                what: what.to_string(),
                requested: bytes,
                limit_name: "max_buffer_size",
                limit,
            });
        }
        Ok(())
    }

    /// A small zeroed tensor to bind where a kernel's optional read-only input (a residual, a
    /// gate) is not used: one per context, never written.
    pub fn placeholder(&self) -> Result<Tensor> {
        if let Some(t) = self.inner.placeholder.get() {
            return Ok(t.clone());
        }
        let t = self.upload(&[0.0; 4], &[4], DType::F32)?;
        Ok(self.inner.placeholder.get_or_init(|| t).clone())
    }

    /// An uninitialised tensor from the pool.
    pub fn alloc(&self, shape: &[usize], dtype: DType) -> Result<Tensor> {
        self.check_alive()?;
        let dtype = self.resolve_dtype(dtype);
        let numel = shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .ok_or_else(|| Error::LimitExceeded {
                what: format!("tensor {shape:?}"),
                requested: u64::MAX,
                limit_name: "max_buffer_size",
                limit: self.inner.limits.max_buffer_size,
            })?;
        let bytes = (numel as u64).saturating_mul(dtype.size() as u64);
        self.check_buffer_bytes(&format!("tensor {shape:?} {dtype:?}"), bytes)?;
        if let Some(budget) = self.memory_budget() {
            let in_use = self.inner.pool.stats().bytes_in_use;
            if in_use.saturating_add(bytes) > budget {
                return Err(Error::OutOfMemory {
                    during: format!("allocating tensor {shape:?} ({bytes} bytes)"),
                    detail: format!(
                        "{in_use} bytes are in use and the context's memory budget is {budget} bytes \
                         (Context::set_memory_budget): free tensors or raise the budget"
                    ),
                });
            }
        }
        let scope = self
            .inner
            .device
            .push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let buf = self.inner.pool.get(BufferKind::Storage, bytes);
        settle(scope, &self.inner.registry.late, || {
            format!("allocating tensor {shape:?} ({bytes} bytes)")
        })?;
        Ok(Tensor {
            buf: Arc::new(buf),
            shape: shape.to_vec(),
            dtype,
        })
    }

    /// Uploads f32 host data, stored as `dtype` (converted on the host for f16).
    pub fn upload(&self, data: &[f32], shape: &[usize], dtype: DType) -> Result<Tensor> {
        let n: usize = shape.iter().product();
        if n != data.len() {
            return Err(Error::shape(
                "upload",
                format!(
                    "shape {shape:?} holds {n} elements but {} were given",
                    data.len()
                ),
            ));
        }
        let t = self.alloc(shape, dtype)?;
        match t.dtype {
            DType::F32 => self.write_padded(&t, bytemuck::cast_slice(data)),
            DType::F16 => {
                let h: Vec<half::f16> = data.iter().map(|&x| half::f16::from_f32(x)).collect();
                self.write_padded(&t, bytemuck::cast_slice(&h))
            }
        }
        Ok(t)
    }

    /// Uploads f16 host data as an f16 tensor (or f32 where the device has no f16).
    pub fn upload_f16(&self, data: &[half::f16], shape: &[usize]) -> Result<Tensor> {
        if self.resolve_dtype(DType::F16) == DType::F32 {
            let f: Vec<f32> = data.iter().map(|x| x.to_f32()).collect();
            return self.upload(&f, shape, DType::F32);
        }
        let n: usize = shape.iter().product();
        if n != data.len() {
            return Err(Error::shape(
                "upload_f16",
                format!(
                    "shape {shape:?} holds {n} elements but {} were given",
                    data.len()
                ),
            ));
        }
        let t = self.alloc(shape, DType::F16)?;
        self.write_padded(&t, bytemuck::cast_slice(data));
        Ok(t)
    }

    fn write_padded(&self, t: &Tensor, bytes: &[u8]) {
        // Copies must be a multiple of 4 bytes; an odd f16 count gets one padding element.
        if bytes.len().is_multiple_of(4) {
            self.inner.queue.write_buffer(t.buffer(), 0, bytes);
        } else {
            let mut v = bytes.to_vec();
            v.resize(bytes.len().div_ceil(4) * 4, 0);
            self.inner.queue.write_buffer(t.buffer(), 0, &v);
        }
    }

    #[cfg(not(target_arch = "wasm32"))]
    /// Reads a tensor back as f32, waiting for the GPU.
    pub fn download(&self, t: &Tensor) -> Result<Vec<f32>> {
        let staging = self.stage(t)?;
        let slice = staging.buffer().slice(..t.padded_bytes());
        let (tx, rx) = std::sync::mpsc::channel();
        slice.map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        self.sync()?;
        rx.recv()
            .map_err(|_| Error::Readback("map callback never ran".into()))?
            .map_err(|e| Error::Readback(e.to_string()))?;
        self.unstage(&staging, t)
    }

    /// Reads a tensor back as f32 without blocking the calling thread's executor. The map's
    /// callback wakes the future; natively the future also polls the device each time it is
    /// polled (nothing else would drive the map), so it works under any executor, pollster
    /// included. In a browser the callback comes from the page's event loop.
    pub fn download_async(
        &self,
        t: &Tensor,
    ) -> impl std::future::Future<Output = Result<Vec<f32>>> + '_ {
        type Slot = (
            Option<std::result::Result<(), wgpu::BufferAsyncError>>,
            Option<std::task::Waker>,
        );
        let t = t.clone();
        async move {
            let staging = self.stage(&t)?;
            let slot: Arc<Mutex<Slot>> = Arc::new(Mutex::new((None, None)));
            let s = slot.clone();
            staging
                .buffer()
                .slice(..t.padded_bytes())
                .map_async(wgpu::MapMode::Read, move |r| {
                    let mut g = s.lock().unwrap_or_else(|p| p.into_inner());
                    g.0 = Some(r);
                    if let Some(w) = g.1.take() {
                        w.wake();
                    }
                });
            std::future::poll_fn(|cx| {
                {
                    let mut g = slot.lock().unwrap_or_else(|p| p.into_inner());
                    if let Some(r) = g.0.take() {
                        return std::task::Poll::Ready(
                            r.map_err(|e| Error::Readback(e.to_string())),
                        );
                    }
                    g.1 = Some(cx.waker().clone());
                }
                if let Err(e) = self.check_alive() {
                    return std::task::Poll::Ready(Err(e));
                }
                if cfg!(not(target_arch = "wasm32")) {
                    let _ = self.inner.device.poll(wgpu::PollType::Poll);
                    cx.waker().wake_by_ref();
                }
                std::task::Poll::Pending
            })
            .await?;
            self.unstage(&staging, &t)
        }
    }

    fn stage(&self, t: &Tensor) -> Result<crate::pool::PooledBuffer> {
        self.check_alive()?;
        let bytes = t.padded_bytes();
        let staging = self.inner.pool.get(BufferKind::Staging, bytes);
        let mut enc = self
            .inner
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("download"),
            });
        enc.copy_buffer_to_buffer(t.buffer(), 0, staging.buffer(), 0, bytes);
        let scope = self
            .inner
            .device
            .push_error_scope(wgpu::ErrorFilter::Validation);
        self.inner.queue.submit([enc.finish()]);
        settle(scope, &self.inner.registry.late, || {
            "copying a tensor for read-back".into()
        })?;
        Ok(staging)
    }

    fn unstage(&self, staging: &crate::pool::PooledBuffer, t: &Tensor) -> Result<Vec<f32>> {
        let out = {
            let view = staging
                .buffer()
                .slice(..t.padded_bytes())
                .get_mapped_range()
                .map_err(|e| Error::Readback(e.to_string()))?;
            let bytes = &view[..t.bytes() as usize];
            match t.dtype {
                DType::F32 => bytemuck::pod_collect_to_vec::<u8, f32>(bytes),
                DType::F16 => bytemuck::pod_collect_to_vec::<u8, half::f16>(bytes)
                    .iter()
                    .map(|h| h.to_f32())
                    .collect(),
            }
        };
        staging.buffer().unmap();
        Ok(out)
    }
}
