//! RAT's kernels (spec/rat.md): the fused gate + intra-chunk scan, its one-token decode step,
//! the flash-style inter-chunk attention, and the data movement of its chunk cache.

use crate::error::{Error, Result};
use crate::kernels::KernelKey;
use crate::record::Recording;
use crate::tensor::{DType, Tensor};

use super::attention::{check_head_dim, FwdVariant};
use super::{check_u32, grid_1d, same_dtype};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct ScanParams {
    b: u32,
    t: u32,
    d: u32,
    l: u32,
    groups: u32,
    dh: u32,
    reset: u32,
    _p: u32,
}

/// Head layout of a RAT layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Heads {
    pub heads: usize,
    pub groups: usize,
    pub dh: usize,
}

impl Heads {
    pub fn new(d_model: usize, heads: usize, groups: usize) -> Result<Heads> {
        if heads == 0 || !d_model.is_multiple_of(heads) {
            return Err(Error::invalid(
                "rat",
                format!("{heads} heads do not divide d_model {d_model}"),
            ));
        }
        if groups == 0 || !heads.is_multiple_of(groups) {
            return Err(Error::invalid(
                "rat",
                format!("ngroups {groups} must divide the head count {heads}"),
            ));
        }
        let dh = d_model / heads;
        check_head_dim("rat", dh)?;
        Ok(Heads { heads, groups, dh })
    }
    pub fn d(&self) -> usize {
        self.heads * self.dh
    }
    pub fn dg(&self) -> usize {
        self.groups * self.dh
    }
}

/// The longest chunk (in tokens actually present) the scan walks on a CPU adapter: one loop
/// iteration per token.
const CPU_TOKENS_PER_CHUNK: usize = super::CPU_LOOP_BUDGET;

fn check_chunk(chunk: usize) -> Result<u32> {
    if chunk == 0 {
        return Err(Error::invalid("rat", "chunk size must be at least 1"));
    }
    check_u32("rat", chunk)
}

/// Gates and scans `v, g_pre [B, T, D]` and the grouped keys `k_grp [B, T, G·dh]` within chunks of
/// `chunk` tokens. Returns the scanned values and the scanned, head-tiled (un-rotated) keys, `[B, T, D]`.
pub fn scan(
    rec: &mut Recording,
    v: &Tensor,
    g_pre: &Tensor,
    g_bias: &Tensor,
    k_grp: &Tensor,
    heads: Heads,
    chunk: usize,
) -> Result<(Tensor, Tensor)> {
    let dtype = same_dtype("rat scan", &[v, g_pre, g_bias, k_grp])?;
    let s = v.shape();
    let d = heads.d();
    if s.len() != 3
        || s[2] != d
        || g_pre.shape() != s
        || g_bias.shape() != [d]
        || k_grp.shape() != [s[0], s[1], heads.dg()]
    {
        return Err(Error::shape(
            "rat scan",
            format!(
                "need v, g_pre [B, T, {d}], gate bias [{d}], k [B, T, {}]; got {s:?}, {:?}, {:?}, {:?}",
                heads.dg(),
                g_pre.shape(),
                g_bias.shape(),
                k_grp.shape()
            ),
        ));
    }
    let (b, t) = (s[0], s[1]);
    let ctx = rec.context().clone();
    // One invocation walks a chunk token by token: past ~65k tokens llvmpipe's loop limiter would
    // stop the walk silently.
    if ctx.is_cpu_adapter() && chunk.min(t) > CPU_TOKENS_PER_CHUNK {
        return Err(Error::LimitExceeded {
            what: format!(
                "RAT scan over chunks of {} tokens on a CPU adapter (its driver stops loops after \
                 ~65k iterations); use a shorter chunk",
                chunk.min(t)
            ),
            requested: chunk.min(t) as u64,
            limit_name: "tokens per chunk on this CPU adapter",
            limit: CPU_TOKENS_PER_CHUNK as u64,
        });
    }
    let sv = ctx.alloc(s, dtype)?;
    let sk = ctx.alloc(s, dtype)?;
    let chunks = t.div_ceil(chunk.max(1));
    let params = ScanParams {
        b: check_u32("rat scan", b)?,
        t: check_u32("rat scan", t)?,
        d: d as u32,
        l: check_chunk(chunk)?,
        groups: heads.groups as u32,
        dh: heads.dh as u32,
        reset: 0,
        _p: 0,
    };
    let kernel = ctx.kernel(&KernelKey::new("rat_scan.wgsl", "rat_scan", dtype))?;
    let groups = grid_1d(&ctx, "rat scan", ((b * chunks * d) as u64).div_ceil(64))?;
    rec.dispatch(
        &kernel,
        bytemuck::bytes_of(&params),
        &[v, g_pre, g_bias, k_grp, &sv, &sk],
        groups,
    )?;
    Ok((sv, sk))
}

/// One decode token: `v, g_pre [B, 1, D]`, `k_grp [B, 1, G·dh]`; advances the running states
/// `sv, sk [B, 1, D]` in place (`reset`: the token starts a chunk).
#[allow(clippy::too_many_arguments)]
pub fn step(
    rec: &mut Recording,
    v: &Tensor,
    g_pre: &Tensor,
    g_bias: &Tensor,
    k_grp: &Tensor,
    sv: &Tensor,
    sk: &Tensor,
    heads: Heads,
    reset: bool,
) -> Result<()> {
    let dtype = same_dtype("rat step", &[v, g_pre, g_bias, k_grp, sv, sk])?;
    let b = v.shape()[0];
    let d = heads.d();
    if v.shape() != [b, 1, d]
        || g_pre.shape() != [b, 1, d]
        || sv.numel() != b * d
        || sk.numel() != b * d
        || k_grp.numel() != b * heads.dg()
    {
        return Err(Error::shape(
            "rat step",
            format!(
                "need one token per sequence; got v {:?}, k {:?}",
                v.shape(),
                k_grp.shape()
            ),
        ));
    }
    let ctx = rec.context().clone();
    let params = ScanParams {
        b: b as u32,
        t: 1,
        d: d as u32,
        l: 1,
        groups: heads.groups as u32,
        dh: heads.dh as u32,
        reset: reset as u32,
        _p: 0,
    };
    let kernel = ctx.kernel(&KernelKey::new("rat_scan.wgsl", "rat_step", dtype))?;
    let groups = grid_1d(&ctx, "rat step", ((b * d) as u64).div_ceil(64))?;
    rec.dispatch(
        &kernel,
        bytemuck::bytes_of(&params),
        &[v, g_pre, g_bias, k_grp, sv, sk],
        groups,
    )
}

/// A decode step's work between its fused projection and its attention, in one dispatch
/// (shaders/decode_prep.wgsl): from `proj [B, 1, 3D + 2·G·dh]` (z | x | g | q | k), the gated
/// recurrent step of values and keys (`reset`: the token starts a chunk) into the running states
/// `last_v, last_k [B, 1, D]`, the running key (rotated at chunk index `chunk_index`) and value
/// into slot `chunk_index` of the caches `[B, H, slots, dh]`, and returns every head's rotated
/// query `[B, 1, D]`.
#[allow(clippy::too_many_arguments)]
pub fn step_prep(
    rec: &mut Recording,
    proj: &Tensor,
    g_bias: &Tensor,
    rope: &super::rope::RopeTable,
    chunk_index: usize,
    reset: bool,
    last_v: &Tensor,
    last_k: &Tensor,
    k_cache: &Tensor,
    v_cache: &Tensor,
    heads: Heads,
) -> Result<Tensor> {
    let dtype = same_dtype(
        "rat step",
        &[proj, g_bias, last_v, last_k, k_cache, v_cache],
    )?;
    let (d, ps, cs) = (heads.d(), proj.shape(), k_cache.shape());
    let b = ps.first().copied().unwrap_or(0);
    let width = 3 * d + 2 * heads.dg();
    let bad = ps != [b, 1, width]
        || g_bias.shape() != [d]
        || last_v.numel() != b * d
        || last_k.numel() != b * d
        || cs.len() != 4
        || v_cache.shape() != cs
        || cs[..2] != [b, heads.heads]
        || cs[3] != heads.dh
        || chunk_index >= cs[2]
        || rope.dh() != heads.dh
        || chunk_index >= rope.max_positions();
    if bad {
        return Err(Error::shape(
            "rat step",
            format!(
                "need proj [B, 1, {width}], gate bias [{d}], states [B, 1, {d}] and caches [B, {},                  slots, {}] with slot {chunk_index}; got {ps:?}, {:?}, {:?}, {cs:?}",
                heads.heads,
                heads.dh,
                g_bias.shape(),
                last_v.shape()
            ),
        ));
    }
    let ctx = rec.context().clone();
    let q = ctx.alloc(&[b, 1, d], dtype)?;
    let params = super::attention::PrepParams {
        b: b as u32,
        h: heads.heads as u32,
        dh: heads.dh as u32,
        groups: heads.groups as u32,
        ld: check_u32("rat step", width)?,
        pos: chunk_index as u32,
        slot: chunk_index as u32,
        cap: check_u32("rat step", cs[2])?,
        reset: u32::from(reset),
        _p: [0; 3],
    };
    let kernel = ctx.kernel(&KernelKey::new("decode_prep.wgsl", "rat_step_prep", dtype))?;
    let groups = grid_1d(&ctx, "rat step", ((b * d / 2) as u64).div_ceil(64))?;
    rec.dispatch(
        &kernel,
        bytemuck::bytes_of(&params),
        &[
            proj,
            rope.tensor(),
            g_bias,
            last_v,
            last_k,
            k_cache,
            v_cache,
            &q,
        ],
        groups,
    )?;
    Ok(q)
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct AttnParams {
    b: u32,
    t: u32,
    h: u32,
    groups: u32,
    l: u32,
    scale: f32,
    chunks: u32,
    _p: u32,
    /// The GPU kernel's pass (shaders/common/rat_attention_io.wgsl); 0 for the CPU kernels.
    k_begin: u32,
    k_end: u32,
    g0: u32,
    ngroups: u32,
}

/// Inter-chunk attention: `qr [B, T, G·dh]` (queries rotated at chunk positions), `kr [B, T, D]`
/// (scanned keys rotated at chunk positions), `sv [B, T, D]` (scanned values). Token t attends to
/// the final states of earlier chunks and to its own running state. Returns `[B, T, D]`.
pub fn inter_chunk_attention(
    rec: &mut Recording,
    qr: &Tensor,
    kr: &Tensor,
    sv: &Tensor,
    heads: Heads,
    chunk: usize,
    scale: Option<f32>,
) -> Result<Tensor> {
    inter_chunk_attention_with(rec, qr, kr, sv, heads, chunk, scale, None)
}

/// [`inter_chunk_attention`] with the GPU kernel forced to one of the fa2 variants (key tiles
/// of 16, 8 or 4, scores summed through workgroup memory or subgroups), on any schedule: what
/// the variant's check cases and `chunkwise tune` run. Unforced, GPU schedules take the tuned
/// variant ([`crate::tune::rat_attention_variant`]). The blocked and tensor-core forms exist for
/// attention only: forcing one is an error.
#[allow(clippy::too_many_arguments)]
pub fn inter_chunk_attention_with(
    rec: &mut Recording,
    qr: &Tensor,
    kr: &Tensor,
    sv: &Tensor,
    heads: Heads,
    chunk: usize,
    scale: Option<f32>,
    variant: Option<FwdVariant>,
) -> Result<Tensor> {
    let dtype = same_dtype("rat attention", &[qr, kr, sv])?;
    let s = kr.shape();
    if s.len() != 3
        || s[2] != heads.d()
        || sv.shape() != s
        || qr.shape() != [s[0], s[1], heads.dg()]
    {
        return Err(Error::shape(
            "rat attention",
            format!(
                "need q [B, T, {}], k and v [B, T, {}]; got {:?}, {s:?}, {:?}",
                heads.dg(),
                heads.d(),
                qr.shape(),
                sv.shape()
            ),
        ));
    }
    let (b, t) = (s[0], s[1]);
    let ctx = rec.context().clone();
    // A query folds every earlier chunk's final in one invocation: past ~28k of them llvmpipe's
    // loop limiter would stop the walk silently (attention folds long rows in passes; RAT would
    // need a chunk length that long sequences make unusual on a CPU driver).
    let chunks = t.div_ceil(chunk.max(1));
    if ctx.is_cpu_adapter() && chunks > super::attention::CPU_KEYS_PER_PASS {
        return Err(Error::LimitExceeded {
            what: format!(
                "RAT inter-chunk attention over {chunks} chunks (T = {t}, L = {chunk}) on a CPU \
                 adapter (its driver stops loops after ~65k iterations); use a longer chunk"
            ),
            requested: chunks as u64,
            limit_name: "chunks per sequence on this CPU adapter",
            limit: super::attention::CPU_KEYS_PER_PASS as u64,
        });
    }
    let o = ctx.alloc(s, dtype)?;
    if b * t == 0 {
        return Ok(o);
    }
    let params = AttnParams {
        b: b as u32,
        t: check_u32("rat attention", t)?,
        h: heads.heads as u32,
        groups: heads.groups as u32,
        l: check_chunk(chunk)?,
        scale: scale.unwrap_or(1.0 / (heads.dh as f32).sqrt()),
        chunks: check_u32("rat attention", t.div_ceil(chunk.max(1)))?,
        _p: 0,
        k_begin: 0,
        k_end: 0,
        g0: 0,
        ngroups: 0,
    };
    // The chunk finals, one head's contiguous: read in place they lie L tokens apart, and the
    // kernel ran 3× slower on lavapipe for it (cache and TLB misses). [B, H, chunks, dh] each.
    let finals = [b, heads.heads, t.div_ceil(chunk.max(1)), heads.dh];
    let (kc, vc) = (ctx.alloc(&finals, dtype)?, ctx.alloc(&finals, dtype)?);
    chunk_gather(rec, kr, &kc, heads, chunk)?;
    chunk_gather(rec, sv, &vc, heads, chunk)?;
    if variant.is_some() || !ctx.cpu_schedules() {
        let v = variant
            .unwrap_or_else(|| crate::tune::rat_attention_variant(&ctx, dtype, chunks, heads.dh));
        let FwdVariant::Fa2 { kt, sg } = v else {
            return Err(Error::invalid(
                "rat attention",
                format!(
                    "{} is an attention kernel; RAT's inter-chunk attention runs the fa2 variants",
                    v.name()
                ),
            ));
        };
        v.check(&ctx, dtype, heads.dh)?;
        fa2_attention(rec, [qr, kr, sv, &kc, &vc, &o], params, heads.dh, (kt, sg))?;
        return Ok(o);
    }
    let schedule = crate::ops::attention::FlashSchedule::for_head_dim(&ctx, heads.dh);
    let kernel = ctx.kernel(&schedule.key(
        ("rat_attention.wgsl", "rat_attention_sg.wgsl"),
        "rat_attention",
        dtype,
        heads.dh,
    ))?;
    let groups = [
        t.div_ceil(schedule.queries_per_group()) as u32,
        check_u32("rat attention", b * heads.heads)?,
        1,
    ];
    rec.dispatch(
        &kernel,
        bytemuck::bytes_of(&params),
        &[qr, kr, sv, &kc, &vc, &o],
        groups,
    )?;
    Ok(o)
}

/// The GPU inter-chunk attention: FlashAttention-2's layout (4 lanes per token splitting the head
/// dim), in passes of at most `GPU_KEYS_PER_PASS` chunks carrying the running softmax, so that no
/// dispatch walks a whole long sequence's chunk finals. `bufs`: qr, kr, sv, kc, vc, o.
fn fa2_attention(
    rec: &mut Recording,
    bufs: [&Tensor; 6],
    params: AttnParams,
    dh: usize,
    (kt, sg): (usize, bool),
) -> Result<()> {
    use crate::ops::attention::GPU_KEYS_PER_PASS;
    let ctx = rec.context().clone();
    let dtype = bufs[0].dtype();
    let (b, t, h, l) = (
        params.b as usize,
        params.t as usize,
        params.h as usize,
        params.l as usize,
    );
    let chunks = params.chunks as usize;
    let file = if sg {
        "rat_attention_fa2_sg.wgsl"
    } else {
        "rat_attention_fa2.wgsl"
    };
    let kernel = ctx.kernel(
        &KernelKey::new(file, "rat_attention_fa2", dtype)
            .with("DH4", (dh / 4) as f64)
            .with("KT", kt as f64),
    )?;
    let one_pass = chunks <= GPU_KEYS_PER_PASS;
    let (carry_acc, carry_ml) = if one_pass {
        // One pass reads and writes no carry; the bindings still need buffers.
        (ctx.alloc(&[4], DType::F32)?, ctx.alloc(&[2], DType::F32)?)
    } else {
        (
            ctx.alloc(&[b, t, h * dh], DType::F32)?,
            ctx.alloc(&[b, t, h, 2], DType::F32)?,
        )
    };
    let bh = check_u32("rat attention", b * h)?;
    let groups_total = t.div_ceil(64);
    for k_begin in (0..chunks.max(1)).step_by(GPU_KEYS_PER_PASS) {
        // Tokens of chunks ≤ k_begin finished in an earlier pass.
        let g0 = if k_begin == 0 {
            0
        } else {
            ((k_begin + 1) * l / 64).min(groups_total)
        };
        if g0 >= groups_total {
            break;
        }
        let pass = AttnParams {
            k_begin: k_begin as u32,
            k_end: (k_begin + GPU_KEYS_PER_PASS).min(chunks) as u32,
            g0: g0 as u32,
            ngroups: (groups_total - g0) as u32,
            ..params
        };
        let [qr, kr, sv, kc, vc, o] = bufs;
        rec.dispatch(
            &kernel,
            bytemuck::bytes_of(&pass),
            &[qr, kr, sv, kc, vc, o, &carry_acc, &carry_ml],
            [pass.ngroups, bh, 1],
        )?;
    }
    Ok(())
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct GatherParams {
    b: u32,
    n: u32,
    h: u32,
    groups: u32,
    dh4: u32,
    l: u32,
    cap: u32,
    _p: u32,
}

/// Grouped `[B, n, G·dh]` → per-head `[B, n, H·dh]` (head h takes group h mod G).
pub fn tile_groups(rec: &mut Recording, src: &Tensor, heads: Heads) -> Result<Tensor> {
    let s = src.shape();
    if s.len() != 3 || s[2] != heads.dg() {
        return Err(Error::shape(
            "rat tile_groups",
            format!("need [B, n, {}], got {s:?}", heads.dg()),
        ));
    }
    let ctx = rec.context().clone();
    let out = ctx.alloc(&[s[0], s[1], heads.d()], src.dtype())?;
    let params = GatherParams {
        b: s[0] as u32,
        n: check_u32("rat tile_groups", s[1])?,
        h: heads.heads as u32,
        groups: heads.groups as u32,
        dh4: (heads.dh / 4) as u32,
        l: 1,
        cap: 1,
        _p: 0,
    };
    let kernel = ctx.kernel(&KernelKey::new(
        "rat_gather.wgsl",
        "tile_groups",
        src.dtype(),
    ))?;
    let groups = grid_1d(
        &ctx,
        "rat tile_groups",
        (out.numel() as u64 / 4).div_ceil(64),
    )?;
    rec.dispatch(&kernel, bytemuck::bytes_of(&params), &[src, &out], groups)?;
    Ok(out)
}

/// After a prefill of `src [B, P, D]`: cache slot j ← token min(jL + L − 1, P − 1), for every
/// chunk j the prompt touches. `cache` is `[B, H, cap, dh]`.
pub fn chunk_gather(
    rec: &mut Recording,
    src: &Tensor,
    cache: &Tensor,
    heads: Heads,
    chunk: usize,
) -> Result<()> {
    same_dtype("rat chunk_gather", &[src, cache])?;
    let (s, cs) = (src.shape(), cache.shape());
    let chunks = s.get(1).map_or(0, |&p| p.div_ceil(chunk.max(1)));
    if s.len() != 3
        || s[2] != heads.d()
        || cs != [s[0], heads.heads, cs[2], heads.dh]
        || chunks > cs[2]
    {
        return Err(Error::shape(
            "rat chunk_gather",
            format!("src {s:?} ({chunks} chunks) does not fit the cache {cs:?}"),
        ));
    }
    if s[0] * s[1] == 0 {
        return Ok(());
    }
    let ctx = rec.context().clone();
    let params = GatherParams {
        b: s[0] as u32,
        n: check_u32("rat chunk_gather", s[1])?,
        h: heads.heads as u32,
        groups: heads.groups as u32,
        dh4: (heads.dh / 4) as u32,
        l: check_chunk(chunk)?,
        cap: check_u32("rat chunk_gather", cs[2])?,
        _p: 0,
    };
    let kernel = ctx.kernel(&KernelKey::new(
        "rat_gather.wgsl",
        "chunk_gather",
        src.dtype(),
    ))?;
    let n = s[0] * heads.heads * chunks * heads.dh / 4;
    let groups = grid_1d(&ctx, "rat chunk_gather", (n as u64).div_ceil(64))?;
    rec.dispatch(&kernel, bytemuck::bytes_of(&params), &[src, cache], groups)
}
