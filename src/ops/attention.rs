//! Softmax attention: flash-style causal / sliding-window forward, KV-cache writes and
//! flash-decoding. Tensors use the projection layout `[B, T, D]` with `D = heads × dh`.

use crate::error::{Error, Result};
use crate::kernels::KernelKey;
use crate::record::Recording;
use crate::tensor::{DType, Tensor};

use super::{check_u32, grid_1d, same_dtype};

/// Head dims the kernels take: a multiple of 4 (vec4 loads), at most 128 (registers per query).
pub fn check_head_dim(op: &'static str, dh: usize) -> Result<()> {
    if dh == 0 || !dh.is_multiple_of(4) || dh > 128 {
        return Err(Error::invalid(
            op,
            format!("head dim {dh} is not supported: it must be a multiple of 4 and at most 128"),
        ));
    }
    Ok(())
}

fn split_heads(op: &'static str, d: usize, heads: usize) -> Result<usize> {
    if heads == 0 || !d.is_multiple_of(heads) {
        return Err(Error::invalid(
            op,
            format!("{heads} heads do not divide the model width {d}"),
        ));
    }
    let dh = d / heads;
    check_head_dim(op, dh)?;
    Ok(dh)
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct FwdParams {
    b: u32,
    t: u32,
    h: u32,
    dh: u32,
    window: u32,
    scale: f32,
    k_begin: u32,
    k_end: u32,
    g0: u32,
    /// Query groups in the dispatch (the GPU kernel walks them last first).
    groups: u32,
    _p: [u32; 2],
}

/// Keys one invocation of the flash forward folds in one pass on CPU adapters: a key costs about
/// two loop iterations (measured on lavapipe: right at 28,000 visible keys, wrong from 30,000), so
/// a pass stays within [`super::CPU_LOOP_BUDGET`]; longer rows take several passes, each resuming
/// the running softmax the one before carried.
pub(crate) const CPU_KEYS_PER_PASS: usize = 16384;
const _: () = assert!(2 * CPU_KEYS_PER_PASS <= super::CPU_LOOP_BUDGET);

/// Keys one pass of the GPU forward folds: bounds how long one invocation (and so one dispatch)
/// runs, whatever T is. 8192 keys of dh = 128 are ~4 M multiply-adds per query lane group: a few
/// ms at most on an integrated GPU, far inside OS watchdogs (2 s on Windows), while the carry a
/// pass writes and reads (16 bytes per query and head dim vec4) stays under 2% of its work.
pub(crate) const GPU_KEYS_PER_PASS: usize = 8192;

/// How this context runs the flash forward (attention, sliding window, RAT's inter-chunk
/// attention), in words (`chunkwise info`).
pub fn forward_rule(ctx: &crate::Context) -> String {
    if ctx.cpu_schedules() {
        let sg = if ctx.subgroup_size() == Some(8) {
            "attention_fwd_sg / rat_attention_sg (8-lane subgroup broadcasts)"
        } else {
            "attention_fwd / rat_attention reading keys from storage"
        };
        return format!(
            "{sg}, two queries per lane, up to dh 64 (the workgroup-memory kernels above); \
             {CPU_KEYS_PER_PASS} keys per pass"
        );
    }
    let (kt64, sg) = fa2_plan(ctx, 64);
    let (kt128, _) = fa2_plan(ctx, 128);
    let tuned = ctx.tuning().map_or(0, |t| t.classes("attention"));
    let rat = ctx.tuning().map_or(0, |t| t.classes("rat_attention"));
    format!(
        "attention: the tuned kernel per T, dh, dtype class ({tuned} classes tuned) of fa2 (key \
         tiles 16/8/4, scores summed through workgroup memory or subgroups), blocked, coop16, \
         coop8; untuned: attention_fa2{0} (4 lanes per query, scores summed by {1}), key tiles of \
         {kt64} at dh 64, {kt128} at dh 128 (from {2} B of workgroup memory); RAT: the tuned fa2 \
         variant per chunks, dh, dtype class ({rat} classes tuned), untuned \
         rat_attention_fa2{0} at the same key tiles; {GPU_KEYS_PER_PASS} keys per pass",
        if sg { "_sg" } else { "" },
        if sg {
            "subgroup shuffles"
        } else {
            "workgroup memory"
        },
        ctx.limits().max_compute_workgroup_storage_size
    )
}

/// The GPU forward (shaders/attention_fa2*.wgsl): keys per workgroup-memory tile, the largest of
/// 16, 8, 4 whose K and V tiles (plus the score-reduction buffer without subgroups) fit the
/// device's workgroup memory; and whether the subgroup reduction is used.
pub(crate) fn fa2_plan(ctx: &crate::Context, dh: usize) -> (usize, bool) {
    let sg = fa2_subgroups(ctx);
    let budget = ctx.limits().max_compute_workgroup_storage_size as usize;
    let kt = [16, 8, 4]
        .into_iter()
        .find(|&kt| fa2_bytes(kt, dh, sg) <= budget)
        .unwrap_or(4);
    (kt, sg)
}

/// The GPU forward kernels a launch can be forced to (`chunkwise tune` times them; the default
/// rule is [`default_fwd_variant`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FwdVariant {
    /// shaders/attention_fa2*.wgsl: 4 lanes per query, `kt` keys per workgroup-memory tile,
    /// scores summed by subgroup shuffles (`sg`) or through workgroup memory.
    Fa2 { kt: usize, sg: bool },
    /// shaders/attention_mm.wgsl: blocks of [`MM_BQ`] queries × 16 or 32 keys, S = Q·Kᵀ and P·V as
    /// whole-tile products in plain WGSL (common/attention_mm_body.wgsl).
    Blocked,
    /// shaders/attention_coop{16,8}.wgsl: the blocked kernel with its products on CM × CM × CM
    /// cooperative matrices (tensor cores).
    Coop(usize),
}

/// Queries per workgroup of the blocked kernels (common/attention_mm_body.wgsl's BQ).
pub(crate) const MM_BQ: usize = 16;

/// Keys one pass of a blocked kernel folds on CPU adapters (a forced variant there, for checks):
/// its loops are not unrolled by llvmpipe and cost ~1500 iterations per tile of 32 keys, so a
/// pass stays far inside llvmpipe's ~65k-iteration loop limiter.
pub(crate) const MM_CPU_KEYS_PER_PASS: usize = 512;

impl FwdVariant {
    /// Every variant: fa2 with 16, 8, 4 keys per tile, without and with subgroups, the blocked
    /// kernel, and the tensor-core kernels.
    pub fn all() -> Vec<FwdVariant> {
        let mut all = Vec::new();
        for sg in [false, true] {
            for kt in [16, 8, 4] {
                all.push(FwdVariant::Fa2 { kt, sg });
            }
        }
        all.extend([
            FwdVariant::Blocked,
            FwdVariant::Coop(16),
            FwdVariant::Coop(8),
        ]);
        all
    }

    /// "fa2-kt16", "fa2sg-kt8", "blocked", "coop16", "coop8".
    pub fn name(self) -> String {
        match self {
            FwdVariant::Fa2 { kt, sg } => format!("fa2{}-kt{kt}", if sg { "sg" } else { "" }),
            FwdVariant::Blocked => "blocked".into(),
            FwdVariant::Coop(cs) => format!("coop{cs}"),
        }
    }

    /// The inverse of [`FwdVariant::name`].
    pub fn parse(s: &str) -> Option<FwdVariant> {
        FwdVariant::all().into_iter().find(|v| v.name() == s)
    }

    /// The cooperative-matrix edge of a tensor-core variant.
    pub fn coop_size(self) -> Option<usize> {
        match self {
            FwdVariant::Coop(cs) => Some(cs),
            _ => None,
        }
    }

    /// `Err(why)` when this variant cannot run on `ctx` at this dtype and head dim (no subgroups,
    /// no cooperative matrices of its size for `dtype`, too little workgroup memory, a head dim
    /// it does not take).
    pub fn usable(
        self,
        ctx: &crate::Context,
        dtype: DType,
        dh: usize,
    ) -> std::result::Result<(), String> {
        self.check(ctx, dtype, dh).map_err(|e| e.to_string())
    }

    /// [`FwdVariant::usable`] as the typed error a forced launch returns.
    pub(crate) fn check(self, ctx: &crate::Context, dtype: DType, dh: usize) -> Result<()> {
        check_head_dim("attention", dh)?;
        let what = format!("the {} attention forward in {dtype:?}", self.name());
        let have = ctx.limits().max_compute_workgroup_storage_size as usize;
        let too_big = |need: usize| Error::LimitExceeded {
            what: format!("{what} at head dim {dh}: workgroup memory"),
            requested: need as u64,
            limit_name: "max_compute_workgroup_storage_size",
            limit: have as u64,
        };
        match self {
            FwdVariant::Fa2 { kt, sg } => {
                if ![4, 8, 16].contains(&kt) {
                    return Err(Error::invalid(
                        "attention",
                        format!("{what}: {kt} keys per tile (4, 8 or 16 are built)"),
                    ));
                }
                if sg && !fa2_subgroups(ctx) {
                    return Err(Error::MissingFeature {
                        what: format!("{what} (subgroups of 4 lanes or more)"),
                        feature: "SUBGROUP",
                    });
                }
                let need = fa2_bytes(kt, dh, sg);
                if need > have {
                    return Err(too_big(need));
                }
            }
            FwdVariant::Blocked | FwdVariant::Coop(_) => {
                if let Some(cs) = self.coop_size() {
                    if ![8, 16].contains(&cs) {
                        return Err(Error::invalid(
                            "attention",
                            format!("{what}: {cs}×{cs} matrices (16 or 8 are built)"),
                        ));
                    }
                    if !ctx.has_coop_matrix(cs as u32, dtype) || !ctx.subgroups_enabled() {
                        return Err(Error::MissingFeature {
                            what: format!(
                                "{what} ({cs}×{cs}×{cs} {dtype:?} inputs, f32 accumulator, subgroups)"
                            ),
                            feature: "EXPERIMENTAL_COOPERATIVE_MATRIX",
                        });
                    }
                    if !dh.is_multiple_of(cs) {
                        return Err(Error::shape(
                            "attention",
                            format!("{what} needs a head dim that is a multiple of {cs}; got {dh}"),
                        ));
                    }
                }
                if mm_plan(ctx, self, dtype, dh).is_none() {
                    return Err(too_big(mm_bytes(self, dtype, dh, 16)));
                }
            }
        }
        Ok(())
    }
}

/// Whether the fa2 kernel may sum scores with subgroup shuffles on this context.
fn fa2_subgroups(ctx: &crate::Context) -> bool {
    ctx.subgroups_enabled() && ctx.adapter_info().subgroup_min_size >= 4
}

/// Workgroup memory of attention_fa2 at `kt` keys per tile: K and V tiles in f32, and the score
/// reduction buffer without subgroups.
fn fa2_bytes(kt: usize, dh: usize, sg: bool) -> usize {
    2 * kt * dh * 4 + if sg { 0 } else { 256 * 16 }
}

/// Workgroup memory of a blocked kernel (common/attention_mm_body.wgsl) at `kt` keys per tile:
/// Q, the K/V tile and P in the storage dtype, S and O_tile in f32 (each with a spare CM × CM
/// block for the tensor-core kernels), and a float per query.
fn mm_bytes(v: FwdVariant, dtype: DType, dh: usize, kt: usize) -> usize {
    let s = dtype.size();
    let spare = v.coop_size().map_or(0, |cs| cs * cs);
    (MM_BQ * dh + kt * dh + MM_BQ * kt) * s + (MM_BQ * kt + MM_BQ * dh + 2 * spare + MM_BQ) * 4
}

/// Keys per tile of a blocked kernel: 32 where its workgroup memory fits the device's, else 16,
/// else `None`.
fn mm_plan(ctx: &crate::Context, v: FwdVariant, dtype: DType, dh: usize) -> Option<usize> {
    let have = ctx.limits().max_compute_workgroup_storage_size as usize;
    [32, 16]
        .into_iter()
        .find(|&kt| mm_bytes(v, dtype, dh, kt) <= have)
}

/// The variant an unforced launch runs on a GPU schedule where the tune cache has no choice for
/// its class: [`fa2_plan`]'s.
pub(crate) fn default_fwd_variant(ctx: &crate::Context, dtype: DType, dh: usize) -> FwdVariant {
    let _ = dtype;
    let (kt, sg) = fa2_plan(ctx, dh);
    FwdVariant::Fa2 { kt, sg }
}

/// Causal attention over `q, k, v [B, T, D]` (`D = heads × dh`), returning `[B, T, D]`.
/// `window = Some(W)`: query t sees keys t−W … t (W+1 keys). `scale` defaults to `dh^-1/2`.
pub fn attention(
    rec: &mut Recording,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    heads: usize,
    window: Option<usize>,
    scale: Option<f32>,
) -> Result<Tensor> {
    attention_with(rec, q, k, v, heads, window, scale, None)
}

/// [`attention`] with a forced GPU kernel (`None`: the default rule, which keeps the CPU kernels
/// on CPU schedules). A forced variant runs on any schedule (as `GemmSchedule::TiledAs` does), so
/// it can be checked and timed on a CPU adapter too; one that cannot run here (see
/// [`FwdVariant::usable`]) is an error (`MissingFeature`, `LimitExceeded`, `Shape`).
#[allow(clippy::too_many_arguments)]
pub fn attention_with(
    rec: &mut Recording,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    heads: usize,
    window: Option<usize>,
    scale: Option<f32>,
    variant: Option<FwdVariant>,
) -> Result<Tensor> {
    attention_passes(rec, q, k, v, heads, window, scale, variant, None)
}

/// [`attention_with`] with the keys per pass set (`None`: the launch's own bound), so that the
/// checks can run several passes at small T.
#[allow(clippy::too_many_arguments)]
pub(crate) fn attention_passes(
    rec: &mut Recording,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    heads: usize,
    window: Option<usize>,
    scale: Option<f32>,
    variant: Option<FwdVariant>,
    pass_keys: Option<usize>,
) -> Result<Tensor> {
    let dtype = same_dtype("attention", &[q, k, v])?;
    let s = q.shape();
    if s.len() != 3 || k.shape() != s || v.shape() != s {
        return Err(Error::shape(
            "attention",
            format!(
                "q, k, v must all be [B, T, D]; got {:?}, {:?}, {:?}",
                s,
                k.shape(),
                v.shape()
            ),
        ));
    }
    let (b, t, d) = (s[0], s[1], s[2]);
    let dh = split_heads("attention", d, heads)?;
    let ctx = rec.context().clone();
    if let Some(v) = variant {
        v.check(&ctx, dtype, dh)?;
    }
    let o = ctx.alloc(s, dtype)?;
    if b * t == 0 {
        return Ok(o);
    }
    let window = match window {
        Some(w) => u32::try_from(w)
            .ok()
            .filter(|&w| w != u32::MAX)
            .unwrap_or(u32::MAX - 1),
        None => u32::MAX,
    };
    let params = FwdParams {
        b: check_u32("attention", b)?,
        t: check_u32("attention", t)?,
        h: check_u32("attention", heads)?,
        dh: dh as u32,
        window,
        scale: scale.unwrap_or(1.0 / (dh as f32).sqrt()),
        k_begin: 0,
        k_end: t as u32,
        g0: 0,
        groups: 0,
        _p: [0; 2],
    };
    let kh = super::transpose::split_heads(rec, k, heads)?;
    let vh = super::transpose::split_heads(rec, v, heads)?;
    let variant = match variant {
        None if ctx.cpu_schedules() => None,
        // GPU schedules: the tuned kernel of this shape class, else the default rule.
        None => Some(crate::tune::attention_variant(&ctx, dtype, t, dh)),
        forced => forced,
    };
    // Every pass is bounded: on CPU adapters by llvmpipe's loop limiter, on GPUs by how long a
    // dispatch may run.
    let (kernel, qpg, bound) = match variant {
        None => {
            let schedule = FlashSchedule::for_head_dim(&ctx, dh);
            let kernel = ctx.kernel(&schedule.key(
                ("attention_fwd.wgsl", "attention_fwd_sg.wgsl"),
                "attention_fwd",
                dtype,
                dh,
            ))?;
            (kernel, schedule.queries_per_group(), CPU_KEYS_PER_PASS)
        }
        Some(FwdVariant::Fa2 { kt, sg }) => {
            let file = if sg {
                "attention_fa2_sg.wgsl"
            } else {
                "attention_fa2.wgsl"
            };
            let key = KernelKey::new(file, "attention_fa2", dtype)
                .with("DH4", (dh / 4) as f64)
                .with("KT", kt as f64);
            (ctx.kernel(&key)?, 64, GPU_KEYS_PER_PASS)
        }
        Some(mm) => {
            let (file, entry) = match mm.coop_size() {
                None => ("attention_mm.wgsl", "attention_mm"),
                Some(16) => ("attention_coop16.wgsl", "attention_coop"),
                Some(_) => ("attention_coop8.wgsl", "attention_coop"),
            };
            let kt = mm_plan(&ctx, mm, dtype, dh).unwrap_or(16);
            let key = KernelKey::new(file, entry, dtype)
                .with("DH", dh as f64)
                .with("KT", kt as f64);
            let bound = if ctx.is_cpu_adapter() {
                MM_CPU_KEYS_PER_PASS
            } else {
                GPU_KEYS_PER_PASS
            };
            (ctx.kernel(&key)?, MM_BQ, bound)
        }
    };
    let pass_keys = pass_keys.unwrap_or(bound).max(1);
    let bh = check_u32("attention", b * heads)?;
    // Keys a query sees: all before it, or W + 1 with a window.
    let row_keys = t.min((window as usize).saturating_add(1));
    let per_pass = if row_keys > pass_keys { pass_keys } else { t };
    let (carry_acc, carry_ml) = if per_pass < t {
        (
            ctx.alloc(&[b, t, d], DType::F32)?,
            ctx.alloc(&[b, t, heads, 2], DType::F32)?,
        )
    } else {
        // One pass reads and writes no carry; the bindings still need buffers.
        (ctx.alloc(&[4], DType::F32)?, ctx.alloc(&[2], DType::F32)?)
    };
    for k_begin in (0..t).step_by(per_pass) {
        // Queries before k_begin are done: the pass starts at the group holding query k_begin.
        let g0 = k_begin / qpg;
        let groups = (t.div_ceil(qpg) - g0) as u32;
        let pass = FwdParams {
            k_begin: k_begin as u32,
            k_end: (k_begin + per_pass).min(t) as u32,
            g0: g0 as u32,
            groups,
            ..params
        };
        rec.dispatch(
            &kernel,
            bytemuck::bytes_of(&pass),
            &[q, &kh, &vh, &o, &carry_acc, &carry_ml],
            [groups, bh, 1],
        )?;
    }
    Ok(o)
}

/// Schedule of the flash kernels (shaders/common/flash.wgsl) on this adapter.
#[derive(Clone, Copy, Debug)]
pub(crate) struct FlashSchedule {
    /// CPU drivers with 8-lane subgroups: each lane loads part of a key and subgroup broadcasts
    /// share it (the `_sg` kernel files, common/flash_subgroup.wgsl).
    pub subgroup: bool,
    /// Other CPU adapters read key tiles straight from storage, GPUs share them through workgroup
    /// memory (common/flash_tiles.wgsl).
    pub kv_from_storage: bool,
    /// Queries per invocation: 2 on CPU adapters (each loaded key vec4 then serves two queries;
    /// a storage load is a loop over SIMD lanes on CPU drivers), 1 on GPUs.
    pub ql: usize,
}

impl FlashSchedule {
    /// The CPU schedules stop at head dim 64: at 128 llvmpipe no longer unrolls the head-dim loops
    /// around the storage reads, and their iterations would run into its loop limiter (tested at
    /// T = 2048, dh = 128); there the workgroup-memory kernel runs.
    pub fn for_head_dim(ctx: &crate::Context, dh: usize) -> Self {
        let cpu = ctx.cpu_schedules() && dh <= 64;
        let subgroup = cpu && ctx.subgroup_size() == Some(8);
        FlashSchedule {
            subgroup,
            kv_from_storage: cpu && !subgroup,
            ql: if cpu { 2 } else { 1 },
        }
    }
    /// Queries per workgroup (64 invocations).
    pub fn queries_per_group(self) -> usize {
        64 * self.ql
    }
    /// The pipeline: `files` = (tiles kernel, subgroup kernel), same entry point in both.
    pub fn key(
        self,
        files: (&'static str, &'static str),
        entry: &'static str,
        dtype: DType,
        dh: usize,
    ) -> KernelKey {
        let file = if self.subgroup { files.1 } else { files.0 };
        let key = KernelKey::new(file, entry, dtype)
            .with("DH4", (dh / 4) as f64)
            .with("QL", self.ql as f64);
        if self.subgroup {
            key
        } else {
            key.with("KV_FROM_STORAGE", f64::from(u8::from(self.kv_from_storage)))
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct WriteParams {
    b: u32,
    n_src: u32,
    first: u32,
    n: u32,
    h: u32,
    dh4: u32,
    cap: u32,
    pos0: u32,
}

/// Writes tokens `first..` of `src [B, n_src, D]` into `cache [B, heads, cap, dh]`; token `i`
/// has position `pos0 + i` and goes to slot `(pos0 + i) mod cap`. At most `cap` tokens are
/// written (slots would collide inside one dispatch).
pub fn kv_write(
    rec: &mut Recording,
    src: &Tensor,
    first: usize,
    cache: &Tensor,
    pos0: usize,
) -> Result<()> {
    same_dtype("kv_write", &[src, cache])?;
    let (ss, cs) = (src.shape(), cache.shape());
    if ss.len() != 3 || cs.len() != 4 || ss[0] != cs[0] || ss[2] != cs[1] * cs[3] || cs[3] % 4 != 0
    {
        return Err(Error::shape(
            "kv_write",
            format!("src must be [B, n, H·dh] for a cache [B, H, cap, dh] with dh % 4 == 0; got {ss:?} and {cs:?}"),
        ));
    }
    let (b, n_src, h, cap, dh) = (ss[0], ss[1], cs[1], cs[2], cs[3]);
    let n = n_src.saturating_sub(first);
    if n > cap {
        return Err(Error::invalid(
            "kv_write",
            format!("{n} tokens do not fit a cache of {cap} slots in one write"),
        ));
    }
    if n == 0 || b == 0 {
        return Ok(());
    }
    let ctx = rec.context().clone();
    let params = WriteParams {
        b: b as u32,
        n_src: check_u32("kv_write", n_src)?,
        first: first as u32,
        n: n as u32,
        h: h as u32,
        dh4: (dh / 4) as u32,
        cap: check_u32("kv_write", cap)?,
        pos0: check_u32("kv_write", (pos0 + first) % cap)?,
    };
    let kernel = ctx.kernel(&KernelKey::new("kv_write.wgsl", "kv_write", src.dtype()))?;
    let groups = grid_1d(&ctx, "kv_write", ((b * n * h * dh / 4) as u64).div_ceil(64))?;
    rec.dispatch(&kernel, bytemuck::bytes_of(&params), &[src, cache], groups)
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct DecodeParams {
    b: u32,
    h: u32,
    dh: u32,
    cap: u32,
    len: u32,
    split: u32,
    nsplit: u32,
    scale: f32,
}

/// Workgroups a decode step wants in flight: on a GPU enough to fill its compute units several
/// times over (wgpu does not say how many it has; a discrete GPU has up to ~150, an integrated
/// one ~10–100), on a CPU adapter a few per core (each workgroup runs on one thread there), so
/// that from 16 sequences of 4 heads a step reads each (sequence, head) in one split and needs
/// no reduction pass.
pub fn decode_target_groups(ctx: &crate::Context) -> usize {
    match ctx.adapter_info().device_type {
        wgpu::DeviceType::Cpu => 64,
        wgpu::DeviceType::IntegratedGpu => 128,
        _ => 512,
    }
}

/// Caches up to this many keys are read in one pass: one workgroup per (sequence, head) reads
/// them in a few tiles, and the second pass and its dispatch are saved (RAT's chunk cache is this
/// short up to position 8192 at L = 16).
pub const DECODE_ONE_PASS_KEYS: usize = 512;

/// The most keys one decode split walks. GPU kernel: 4096, a workgroup's serial share of a long
/// cache (and within llvmpipe's loop limit where a CPU adapter runs it). CPU-adapter kernel:
/// 16384, bounded by the iteration limit llvmpipe imposes on the loops of an invocation (about
/// 65k iterations, past which it silently stops looping): attention_decode_cpu counts about 2.3
/// iterations per key (per 64-key tile: its score loop over dh / 4, two 64-key loops and the
/// tile loop), 38k at 16384 keys, inside [`super::CPU_LOOP_BUDGET`].
pub fn decode_max_keys(ctx: &crate::Context) -> usize {
    if ctx.cpu_schedules() {
        16384
    } else {
        4096
    }
}
const _: () = assert!(16384 * 23 / 10 <= super::CPU_LOOP_BUDGET);

/// Keys per decode split: the whole cache when it is short ([`DECODE_ONE_PASS_KEYS`]); else
/// enough splits that `B·H·splits` reaches `target` workgroups, with at least 64 keys (one tile)
/// and at most `max_keys` ([`decode_max_keys`]) per split.
pub fn decode_split(target: usize, max_keys: usize, b: usize, heads: usize, len: usize) -> usize {
    if len <= DECODE_ONE_PASS_KEYS {
        return len.max(1);
    }
    let want_splits = target.div_ceil((b * heads).max(1)).max(1);
    (len.div_ceil(want_splits).div_ceil(64).max(1) * 64).min(max_keys)
}

/// The most splits [`decode_split`] yields for any length up to `cap`: below the `max_keys` cap a
/// split holds at least ⌈len / want⌉ keys, so there are at most `want` splits; at the cap there are
/// ⌈cap / max_keys⌉.
pub fn decode_max_splits(
    target: usize,
    max_keys: usize,
    b: usize,
    heads: usize,
    cap: usize,
) -> usize {
    target
        .div_ceil((b * heads).max(1))
        .max(1)
        .max(cap.div_ceil(max_keys))
}

/// One query per sequence, `q [B, 1, D]` or `[B, D]`, against the first `len` slots of
/// `k_cache, v_cache [B, heads, cap, dh]`. Returns `[B, 1, D]`.
pub fn decode(
    rec: &mut Recording,
    q: &Tensor,
    k_cache: &Tensor,
    v_cache: &Tensor,
    len: usize,
    scale: Option<f32>,
) -> Result<Tensor> {
    let dtype = same_dtype("attention decode", &[q, k_cache, v_cache])?;
    let cs = k_cache.shape();
    if cs.len() != 4 || v_cache.shape() != cs {
        return Err(Error::shape(
            "attention decode",
            format!(
                "caches must both be [B, H, cap, dh]; got {cs:?} and {:?}",
                v_cache.shape()
            ),
        ));
    }
    let (b, h, cap, dh) = (cs[0], cs[1], cs[2], cs[3]);
    check_head_dim("attention decode", dh)?;
    if q.numel() != b * h * dh {
        return Err(Error::shape(
            "attention decode",
            format!(
                "q {:?} must hold B·H·dh = {} values for caches {cs:?}",
                q.shape(),
                b * h * dh
            ),
        ));
    }
    if len == 0 || len > cap {
        return Err(Error::invalid(
            "attention decode",
            format!("cache length {len} must be in 1..={cap}"),
        ));
    }
    let ctx = rec.context().clone();
    let target = decode_target_groups(&ctx);
    let max_keys = decode_max_keys(&ctx);
    let split = decode_split(target, max_keys, b, h, len);
    let nsplit = len.div_ceil(split);
    // Partials sized for the fullest cache, not for `len`: then every step of a decode loop asks
    // the pool for the same sizes and GPU memory stays flat as the cache fills.
    let max_splits = decode_max_splits(target, max_keys, b, h, cap);
    let part_ml = ctx.alloc(&[b, h, max_splits, 2], DType::F32)?;
    let part_acc = ctx.alloc(&[b, h, max_splits, dh], DType::F32)?;
    let o = ctx.alloc(&[b, 1, h * dh], dtype)?;
    let params = DecodeParams {
        b: b as u32,
        h: h as u32,
        dh: dh as u32,
        cap: check_u32("attention decode", cap)?,
        len: len as u32,
        split: split as u32,
        nsplit: nsplit as u32,
        scale: scale.unwrap_or(1.0 / (dh as f32).sqrt()),
    };
    let bh = check_u32("attention decode", b * h)?;
    // CPU adapters: fewer barriers per tile (shaders/attention_decode_cpu.wgsl).
    let (file, entry) = if ctx.cpu_schedules() {
        ("attention_decode_cpu.wgsl", "attention_decode_cpu")
    } else {
        ("attention_decode.wgsl", "attention_decode")
    };
    let k1 = ctx.kernel(&KernelKey::new(file, entry, dtype).with("DH4", (dh / 4) as f64))?;
    rec.dispatch(
        &k1,
        bytemuck::bytes_of(&params),
        &[q, k_cache, v_cache, &part_ml, &part_acc, &o],
        [nsplit as u32, bh, 1],
    )?;
    // One split has written the output itself.
    if nsplit > 1 {
        let k2 = ctx.kernel(
            &KernelKey::new("attention_decode.wgsl", "attention_decode_reduce", dtype)
                .with("DH4", (dh / 4) as f64),
        )?;
        rec.dispatch(
            &k2,
            bytemuck::bytes_of(&params),
            &[&part_ml, &part_acc, &o],
            [bh, 1, 1],
        )?;
    }
    Ok(o)
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct PrepParams {
    pub b: u32,
    pub h: u32,
    pub dh: u32,
    pub groups: u32,
    pub ld: u32,
    pub pos: u32,
    pub slot: u32,
    pub cap: u32,
    pub reset: u32,
    pub _p: [u32; 3],
}

/// A decode step's work between its fused projection and its attention, in one dispatch
/// (shaders/decode_prep.wgsl): from `proj [B, 1, 3D]` (v | q | k, the upstream order), rotates q
/// and k at position `pos`, writes k and v into slot `slot` of the caches `[B, H, cap, dh]`, and
/// returns the rotated q `[B, 1, D]`.
pub fn step_prep(
    rec: &mut Recording,
    proj: &Tensor,
    rope: &super::rope::RopeTable,
    pos: usize,
    k_cache: &Tensor,
    v_cache: &Tensor,
    slot: usize,
) -> Result<Tensor> {
    same_dtype("attention step", &[proj, k_cache, v_cache])?;
    let cs = k_cache.shape();
    let ps = proj.shape();
    if cs.len() != 4 || v_cache.shape() != cs || ps.len() != 3 || ps[1] != 1 {
        return Err(Error::shape(
            "attention step",
            format!("need proj [B, 1, 3D] and caches [B, H, cap, dh]; got {ps:?}, {cs:?}"),
        ));
    }
    let (b, h, cap, dh) = (cs[0], cs[1], cs[2], cs[3]);
    if ps != [b, 1, 3 * h * dh] || rope.dh() != dh || slot >= cap || pos >= rope.max_positions() {
        return Err(Error::shape(
            "attention step",
            format!(
                "proj {ps:?}, caches {cs:?}, slot {slot}, position {pos} and a RoPE table of                  {} × {} do not fit together",
                rope.max_positions(),
                rope.dh()
            ),
        ));
    }
    let ctx = rec.context().clone();
    let q = ctx.alloc(&[b, 1, h * dh], proj.dtype())?;
    let params = PrepParams {
        b: b as u32,
        h: h as u32,
        dh: dh as u32,
        groups: h as u32,
        ld: check_u32("attention step", 3 * h * dh)?,
        pos: pos as u32,
        slot: slot as u32,
        cap: check_u32("attention step", cap)?,
        reset: 0,
        _p: [0; 3],
    };
    let kernel = ctx.kernel(&KernelKey::new(
        "decode_prep.wgsl",
        "attention_step_prep",
        proj.dtype(),
    ))?;
    let groups = grid_1d(
        &ctx,
        "attention step",
        ((b * h * dh / 2) as u64).div_ceil(64),
    )?;
    rec.dispatch(
        &kernel,
        bytemuck::bytes_of(&params),
        &[proj, rope.tensor(), k_cache, v_cache, &q],
        groups,
    )?;
    Ok(q)
}

/// FLOPs of causal attention as counted in the benchmarks: 2·T²·D (QKᵀ and PV over the causal half).
pub fn causal_flops(b: usize, t: usize, d: usize) -> f64 {
    2.0 * b as f64 * (t as f64).powi(2) * d as f64
}
