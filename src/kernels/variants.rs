//! The variant table: every kernel entry point the launch wrappers build, the `override` values
//! they pass it, the schedule that picks it, whether it needs subgroups, and the backends it must
//! not run on (with the reason).
//!
//! The table is what the translation test (`tests/translate.rs`) sweeps for Metal and DX12, what
//! `chunkwise info` reports per backend, and what the registry consults before building a
//! pipeline. The kernel tests keep it honest: after every family has run on every schedule, each
//! pipeline the wrappers compiled must be a row of this table with its constants inside the
//! row's ranges (`tests/common::check_family`), and every entry point of every kernel file must
//! have a row (`tests/translate.rs`).

use crate::kernels::KernelKey;
use crate::tensor::DType;

/// Which schedule's launch wrappers pick a variant ([`crate::context::Schedule`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pick {
    /// Both schedules (some shapes or head dims on CPU adapters too).
    Any,
    /// The GPU schedule (workgroup memory, barriers).
    Gpu,
    /// The CPU-adapter schedule (8-lane subgroups or one invocation per row, no barriers).
    Cpu,
}

/// One `override` constant a launch wrapper sets: the range it can take and the values the
/// translation test uses (the ends and a ragged value in between, where arrays or loops are sized
/// by it).
#[derive(Clone, Copy, Debug)]
pub struct Param {
    pub name: &'static str,
    pub min: f64,
    pub max: f64,
    pub samples: &'static [f64],
}

const fn p(name: &'static str, min: f64, max: f64, samples: &'static [f64]) -> Param {
    Param {
        name,
        min,
        max,
        samples,
    }
}

/// One row of the table: an entry point of a kernel file.
#[derive(Clone, Copy, Debug)]
pub struct Variant {
    pub file: &'static str,
    pub entry: &'static str,
    pub pick: Pick,
    /// Runs subgroup operations (so only on adapters with `SUBGROUP`, and the kernels enabled).
    pub subgroups: bool,
    /// Uses cooperative matrices (tensor cores): only where the device has
    /// `EXPERIMENTAL_COOPERATIVE_MATRIX` with the variant's size, and only once
    /// `chunkwise tune` has checked it there.
    pub coop: bool,
    pub params: &'static [Param],
    /// Backends where the selection never picks it, and why.
    pub not_on: &'static [(wgpu::Backend, &'static str)],
}

// Head dims of the flash kernels: multiples of 4 up to 128, DH4 = dh / 4 (15: dh = 60).
const DH4: Param = p("DH4", 1.0, 32.0, &[1.0, 15.0, 32.0]);
const DH4_CPU: Param = p("DH4", 1.0, 16.0, &[1.0, 15.0, 16.0]);
// Mesa head dims (1..=128) and chunk lengths of its CG plans (`ops::mesa::cg_plans`).
const DIM: Param = p("DIM", 1.0, 128.0, &[16.0, 60.0, 128.0]);
const DIM_CPU: Param = p("DIM", 1.0, 64.0, &[16.0, 60.0, 64.0]);
const DIM4_CPU: Param = p("DIM", 4.0, 64.0, &[16.0, 60.0, 64.0]);
const CH: Param = p("CH", 8.0, 32.0, &[8.0, 16.0, 32.0]);
// Workgroup sizes of row reductions (`ops::row_workgroup`) and elementwise maps (`ops::map_workgroup`).
const ROW_WG: Param = p("WG", 32.0, 256.0, &[32.0, 256.0]);
const MAP_WG: Param = p("WG", 64.0, 256.0, &[64.0, 256.0]);
const GEMV: &[Param] = &[
    p("MR", 1.0, 16.0, &[1.0, 5.0, 16.0]),
    p("ROWS", 4.0, 32.0, &[4.0, 8.0, 32.0]),
];
// Keys per workgroup-memory tile of the GPU flash kernels (`ops::attention::fa2_plan`).
const FA2_KT: Param = p("KT", 4.0, 16.0, &[4.0, 8.0, 16.0]);
// The blocked attention forward (`ops::attention::FwdVariant::{Blocked, Coop}`): head dim (a
// multiple of 4; of the matrix edge for the tensor-core kernels) and keys per tile.
const MM_DH: Param = p("DH", 4.0, 128.0, &[4.0, 60.0, 128.0]);
const MM_DH16: Param = p("DH", 16.0, 128.0, &[16.0, 48.0, 128.0]);
const MM_DH8: Param = p("DH", 8.0, 128.0, &[8.0, 40.0, 128.0]);
const MM_KT: Param = p("KT", 16.0, 32.0, &[16.0, 32.0]);
// The register-blocked GEMM tile's shape (`ops::gemm::Tile`): 64×64, 128×64, 128×128 are built;
// 64×128 is a valid shape of the kernel too.
const GEMM_TILE: &[Param] = &[
    p("BM", 64.0, 128.0, &[64.0, 128.0]),
    p("BN", 64.0, 128.0, &[64.0, 128.0]),
];
const DIRECT_WG: Param = p("DIRECT_WG", 8.0, 64.0, &[8.0, 24.0, 64.0]);

const GL_LANES: &str = "llvmpipe's GL driver had not compiled it after 300 s at D = 64 (lavapipe: \
                        about 30 s, cold cache); mesa_decode runs instead";

const COOP_METAL_16: &str =
    "Metal's simdgroup matrices are 8 × 8 (gemm_coop8 and attention_coop8 run there)";
const COOP_DX12: &str = "wgpu 30's DX12 backend (naga's HLSL writer) has no cooperative matrices";
const COOP_GL: &str = "wgpu 30's GL backend has no cooperative matrices";

// The flash kernels' tunables: one and two queries per lane, tiles from workgroup memory or
// storage (common/flash_tiles.wgsl), or the 8-lane subgroup form (CPU adapters).
const FLASH_TILES: &[Param] = &[
    DH4,
    p("QL", 1.0, 2.0, &[1.0, 2.0]),
    p("KV_FROM_STORAGE", 0.0, 1.0, &[0.0, 1.0]),
];
const FLASH_SG: &[Param] = &[DH4_CPU, p("QL", 2.0, 2.0, &[2.0])];

macro_rules! row {
    ($file:literal, $entry:literal, $pick:ident, $sg:literal, $params:ident) => {
        Variant {
            file: $file,
            entry: $entry,
            pick: Pick::$pick,
            subgroups: $sg,
            coop: false,
            params: $params,
            not_on: &[],
        }
    };
    ($file:literal, $entry:literal, $pick:ident, $sg:literal, [$($param:expr),*]) => {
        row!($file, $entry, $pick, $sg, [$($param),*], [])
    };
    ($file:literal, $entry:literal, $pick:ident, $sg:literal, [$($param:expr),*], [$($not:expr),*]) => {
        Variant {
            file: $file,
            entry: $entry,
            pick: Pick::$pick,
            subgroups: $sg,
            coop: false,
            params: &[$($param),*],
            not_on: &[$($not),*],
        }
    };
}

/// The table (one row per entry point of every kernel file).
pub const TABLE: &[Variant] = &[
    row!("argmax.wgsl", "argmax", Any, false, [ROW_WG]),
    row!(
        "attention_decode.wgsl",
        "attention_decode",
        Gpu,
        false,
        [DH4]
    ),
    row!(
        "attention_decode.wgsl",
        "attention_decode_reduce",
        Any,
        false,
        [DH4]
    ),
    row!(
        "attention_decode_cpu.wgsl",
        "attention_decode_cpu",
        Cpu,
        false,
        [DH4]
    ),
    row!(
        "attention_fwd.wgsl",
        "attention_fwd",
        Any,
        false,
        FLASH_TILES
    ),
    row!(
        "attention_fwd_sg.wgsl",
        "attention_fwd",
        Cpu,
        true,
        FLASH_SG
    ),
    row!(
        "attention_fa2.wgsl",
        "attention_fa2",
        Gpu,
        false,
        [DH4, FA2_KT]
    ),
    row!(
        "attention_fa2_sg.wgsl",
        "attention_fa2",
        Gpu,
        true,
        [DH4, FA2_KT]
    ),
    row!(
        "attention_mm.wgsl",
        "attention_mm",
        Gpu,
        false,
        [MM_DH, MM_KT]
    ),
    Variant {
        file: "attention_coop16.wgsl",
        entry: "attention_coop",
        pick: Pick::Gpu,
        subgroups: true,
        coop: true,
        params: &[MM_DH16, MM_KT],
        not_on: &[
            (wgpu::Backend::Metal, COOP_METAL_16),
            (wgpu::Backend::Dx12, COOP_DX12),
            (wgpu::Backend::Gl, COOP_GL),
        ],
    },
    Variant {
        file: "attention_coop8.wgsl",
        entry: "attention_coop",
        pick: Pick::Gpu,
        subgroups: true,
        coop: true,
        params: &[MM_DH8, MM_KT],
        not_on: &[
            (wgpu::Backend::Dx12, COOP_DX12),
            (wgpu::Backend::Gl, COOP_GL),
        ],
    },
    row!(
        "rat_attention_fa2.wgsl",
        "rat_attention_fa2",
        Gpu,
        false,
        [DH4, FA2_KT]
    ),
    row!(
        "rat_attention_fa2_sg.wgsl",
        "rat_attention_fa2",
        Gpu,
        true,
        [DH4, FA2_KT]
    ),
    row!("decode_prep.wgsl", "attention_step_prep", Any, false, []),
    row!("decode_prep.wgsl", "rat_step_prep", Any, false, []),
    row!("elementwise.wgsl", "unary", Any, false, [MAP_WG]),
    row!("elementwise.wgsl", "binary", Any, false, [MAP_WG]),
    row!("elementwise4.wgsl", "unary4", Any, false, [MAP_WG]),
    row!("elementwise4.wgsl", "binary4", Any, false, [MAP_WG]),
    row!("elementwise.wgsl", "glu", Any, false, [MAP_WG]),
    row!("elementwise4.wgsl", "glu4", Any, false, [MAP_WG]),
    row!("embedding.wgsl", "embedding", Any, false, []),
    row!("gemm_tiled.wgsl", "gemm_tiled", Any, false, GEMM_TILE),
    row!("gemm_tiled_v4.wgsl", "gemm_tiled", Any, false, GEMM_TILE),
    row!("gemm_direct.wgsl", "gemm_direct", Cpu, false, [DIRECT_WG]),
    row!(
        "gemm_direct.wgsl",
        "gemm_direct_row",
        Cpu,
        false,
        [DIRECT_WG]
    ),
    row!(
        "gemm_direct_sg.wgsl",
        "gemm_direct_sg",
        Cpu,
        true,
        [DIRECT_WG, p("BLOCKS", 1.0, 2.0, &[1.0, 2.0])]
    ),
    row!("gemv_sg.wgsl", "gemv_sg", Gpu, true, GEMV),
    row!("gemv.wgsl", "gemv_wg", Gpu, false, GEMV),
    row!("gemv4_sg.wgsl", "gemv_sg", Gpu, true, GEMV),
    row!("gemv4.wgsl", "gemv_wg", Gpu, false, GEMV),
    Variant {
        file: "gemm_coop16.wgsl",
        entry: "gemm_coop",
        pick: Pick::Gpu,
        subgroups: true,
        coop: true,
        params: &[],
        not_on: &[
            (wgpu::Backend::Metal, COOP_METAL_16),
            (wgpu::Backend::Dx12, COOP_DX12),
            (wgpu::Backend::Gl, COOP_GL),
        ],
    },
    Variant {
        file: "gemm_coop8.wgsl",
        entry: "gemm_coop",
        pick: Pick::Gpu,
        subgroups: true,
        coop: true,
        params: &[],
        not_on: &[
            (wgpu::Backend::Dx12, COOP_DX12),
            (wgpu::Backend::Gl, COOP_GL),
        ],
    },
    row!("kv_write.wgsl", "kv_write", Any, false, []),
    row!("mesa.wgsl", "mesa_chunk_updates", Gpu, false, [DIM, CH]),
    row!("mesa.wgsl", "mesa_scan", Gpu, false, [DIM, CH]),
    row!(
        "mesa.wgsl",
        "mesa_cg",
        Any,
        false,
        [DIM, CH, p("SKK", 1.0, 16384.0, &[1.0, 16384.0])]
    ),
    row!("mesa.wgsl", "mesa_cg_lanes", Cpu, false, [DIM_CPU, CH]),
    row!("mesa_cg_sg.wgsl", "mesa_cg_sg", Cpu, true, [DIM4_CPU, CH]),
    row!("mesa_decode.wgsl", "mesa_decode", Any, false, [DIM]),
    row!(
        "mesa_decode_lanes.wgsl",
        "mesa_decode_lanes",
        Cpu,
        false,
        [DIM4_CPU],
        [(wgpu::Backend::Gl, GL_LANES)]
    ),
    row!("mesa_decode_sg.wgsl", "mesa_decode_sg", Any, true, [DIM]),
    row!("mesa_step.wgsl", "mesa_step_prep", Any, false, []),
    row!("mesa_step.wgsl", "mesa_seq_prep", Any, false, []),
    row!("mesa_step.wgsl", "mesa_seq_prep_rows", Cpu, false, []),
    row!("mesa_step.wgsl", "mesa_step_out_rows", Cpu, false, []),
    row!("mesa_step.wgsl", "mesa_conv_advance", Any, false, []),
    row!("mesa_step.wgsl", "mesa_step_out", Any, false, []),
    row!(
        "mesa_states_rows.wgsl",
        "mesa_states_rows",
        Cpu,
        false,
        [p("DIM", 4.0, 128.0, &[16.0, 60.0, 128.0]), CH]
    ),
    row!(
        "rat_attention.wgsl",
        "rat_attention",
        Any,
        false,
        FLASH_TILES
    ),
    row!(
        "rat_attention_sg.wgsl",
        "rat_attention",
        Cpu,
        true,
        FLASH_SG
    ),
    row!("place_columns.wgsl", "place_columns", Any, false, []),
    row!("rat_gather.wgsl", "tile_groups", Any, false, []),
    row!("rat_gather.wgsl", "chunk_gather", Any, false, []),
    row!("rat_scan.wgsl", "rat_scan", Any, false, []),
    row!("rat_scan.wgsl", "rat_step", Any, false, []),
    row!("rmsnorm.wgsl", "rmsnorm", Any, false, [ROW_WG]),
    row!("rmsnorm_rows.wgsl", "rmsnorm_rows", Cpu, false, []),
    row!("rope.wgsl", "rope", Any, false, []),
    row!("rope.wgsl", "rope4", Any, false, []),
    row!("softmax.wgsl", "softmax", Any, false, [ROW_WG]),
    row!("split_heads.wgsl", "split_heads", Any, false, []),
    row!("transpose.wgsl", "transpose", Any, false, []),
    row!("unary_f32.wgsl", "unary_f32", Any, false, [MAP_WG]),
];

/// The row of `file::entry`.
pub fn find(file: &str, entry: &str) -> Option<&'static Variant> {
    TABLE.iter().find(|v| v.file == file && v.entry == entry)
}

impl Variant {
    /// `file` stem, plus `:entry` where the entry point is named otherwise (as check tables print).
    pub fn name(&self) -> String {
        let stem = self.file.trim_end_matches(".wgsl");
        if stem == self.entry {
            stem.to_string()
        } else {
            format!("{stem}:{}", self.entry)
        }
    }

    /// Why the selection never picks this variant on `backend`, if it does not.
    pub fn excluded_on(&self, backend: wgpu::Backend) -> Option<&'static str> {
        self.not_on
            .iter()
            .find(|(b, _)| *b == backend)
            .map(|(_, why)| *why)
    }

    /// The keys the translation test builds: every combination of the params' samples.
    pub fn sample_keys(&self, dtype: DType) -> Vec<KernelKey> {
        let mut keys = vec![KernelKey::new(self.file, self.entry, dtype)];
        for param in self.params {
            keys = keys
                .into_iter()
                .flat_map(|k| {
                    param
                        .samples
                        .iter()
                        .map(move |&v| k.clone().with(param.name, v))
                })
                .collect();
        }
        keys
    }

    /// Whether `key` is this row with its constants inside the row's ranges; otherwise what is not.
    pub fn admits(&self, key: &KernelKey) -> Result<(), String> {
        if key.file != self.file || key.entry != self.entry {
            return Err(format!("{}::{} is not this row", key.file, key.entry));
        }
        for (name, bits) in &key.constants {
            let value = f64::from_bits(*bits);
            let Some(param) = self.params.iter().find(|p| p.name == *name) else {
                return Err(format!(
                    "{}: override {name} = {value} is set but the table has no range for it",
                    self.name()
                ));
            };
            if value < param.min || value > param.max {
                return Err(format!(
                    "{}: override {name} = {value} is outside the table's {} ..= {}",
                    self.name(),
                    param.min,
                    param.max
                ));
            }
        }
        Ok(())
    }
}

/// Checks a compiled pipeline's key against the table (what the kernel tests assert for every
/// pipeline they built).
pub fn admit(key: &KernelKey) -> Result<(), String> {
    match find(key.file, key.entry) {
        Some(v) => v.admits(key),
        None => Err(format!(
            "{}::{} has no row in the variant table (src/kernels/variants.rs)",
            key.file, key.entry
        )),
    }
}

/// Whether an adapter runs a variant, as `chunkwise info` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Availability {
    /// The adapter's schedule picks it (for some shapes).
    Runs,
    /// Picked by the other schedule only.
    OtherSchedule,
    /// Needs subgroups; the adapter has none (or the subgroup kernels are off).
    NeedsSubgroups,
    /// Needs cooperative matrices; the device has none (or none of the variant's size).
    NeedsCoopMatrix,
    /// The table rules it out on this backend.
    NotOnBackend(&'static str),
}

/// What an adapter with these properties runs of `v`.
pub fn availability(
    v: &Variant,
    backend: wgpu::Backend,
    cpu_schedule: bool,
    subgroups: bool,
    coop: bool,
) -> Availability {
    if let Some(why) = v.excluded_on(backend) {
        return Availability::NotOnBackend(why);
    }
    let schedule_ok = match v.pick {
        Pick::Any => true,
        Pick::Gpu => !cpu_schedule,
        Pick::Cpu => cpu_schedule,
    };
    if !schedule_ok {
        return Availability::OtherSchedule;
    }
    if v.subgroups && !subgroups {
        return Availability::NeedsSubgroups;
    }
    if v.coop && !coop {
        return Availability::NeedsCoopMatrix;
    }
    Availability::Runs
}
