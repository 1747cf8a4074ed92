//! Cases of the basic families: GEMM, RMSNorm, elementwise maps, softmax, RoPE, transpose,
//! embedding, argmax.

use super::{rand, stored, to_f64, Case, Check};
use crate::error::Result;
use crate::ops::{elementwise as ew, embedding, gemm, norm, rope, sample, softmax, transpose};
use crate::reference as r;
use crate::{Context, DType, Tensor};

pub(super) fn cases(dtype: DType) -> Vec<Case> {
    let mut all = Vec::new();
    // GEMM (b, m, n, k, w batched): odd sizes, M = 1 and < 8 (decode), K > 1024, more than one
    // workgroup of columns, batched weights.
    for &(b, m, n, k, wb) in &[
        (1, 37, 61, 100, false),
        (1, 1, 1, 1, false),
        (1, 65, 130, 17, false),
        (1, 128, 64, 256, false),
        (1, 1, 50, 64, false),
        (1, 1, 257, 130, false),
        (1, 5, 33, 12, false),
        (1, 16, 96, 60, false),
        (1, 17, 40, 33, false),
        (1, 20, 36, 1028, false),
        (1, 37, 600, 256, false),
        (1, 20, 300, 1028, false),
        (3, 7, 9, 8, true),
        (3, 29, 33, 40, false),
        // Decode-sized products (GEMV on GPU schedules): M = 1 … 17, K not a multiple of 4, N = 1.
        (1, 2, 1, 4099, false),
        (1, 3, 65, 7, false),
        (1, 8, 129, 1024, false),
        (2, 8, 31, 64, false),
        (1, 16, 70, 250, false),
    ] {
        let shape = format!("b{b} m{m} n{n} k{k}{}", if wb { " w batched" } else { "" });
        all.push(Case::new(
            "gemm",
            shape,
            dtype,
            Gemm {
                b,
                m,
                n,
                k,
                wb,
                dtype,
                tile: None,
            },
        ));
    }
    // Every tile of the GPU GEMM, forced (the default picks one by size; `chunkwise tune` checks
    // a tile with these cases before timing it): ragged edges in M, N and K, both loaders.
    for tile in gemm::Tile::ALL {
        // Tensor-core tiles take multiples of their edge (a batch, blocks past M and N skipped).
        let shapes: &[(usize, usize, usize, usize)] = if tile.coop_size().is_some() {
            &[(2, 80, 48, 32), (1, 64, 144, 48)]
        } else {
            &[(2, 131, 67, 36), (1, 70, 130, 37)]
        };
        for &(b, m, n, k) in shapes {
            all.push(Case::new(
                "gemm",
                format!("b{b} m{m} n{n} k{k} {}", tile_label(tile)),
                dtype,
                Gemm {
                    b,
                    m,
                    n,
                    k,
                    wb: false,
                    dtype,
                    tile: Some(tile),
                },
            ));
        }
    }
    // A projection with its residual and its input gate folded in, reading the gate as a slice of
    // a wider tensor (RAT's output projection in a decode step).
    for &(m, n, k, norm) in &[
        (1, 64, 64, false),
        (4, 33, 32, false),
        (16, 96, 128, false),
        (3, 40, 30, false),
        (1, 64, 64, true),
        (2, 40, 30, true),
        (16, 96, 128, true),
    ] {
        let what = if norm {
            "norm+residual"
        } else {
            "gate+residual"
        };
        let shape = format!("m{m} n{n} k{k} {what}");
        all.push(Case::new(
            "gemm",
            shape,
            dtype,
            Fused {
                m,
                n,
                k,
                norm,
                dtype,
            },
        ));
    }
    all.push(
        Case::new(
            "gemm",
            "b1 m512 n1024 k1024".into(),
            dtype,
            Gemm {
                b: 1,
                m: 512,
                n: 1024,
                k: 1024,
                wb: false,
                dtype,
                tile: None,
            },
        )
        .long(),
    );
    // RMSNorm (rows, d): widths that are and are not multiples of 4 (row kernels on CPU adapters).
    for &(rows, d, long) in &[
        (1, 1, false),
        (7, 60, false),
        (33, 128, false),
        (5, 1000, false),
        (3, 2049, false),
        (100, 256, false),
        (2048, 2048, true),
    ] {
        let c = Case::new(
            "rmsnorm",
            format!("rows{rows} d{d}"),
            dtype,
            RmsNorm { rows, d, dtype },
        );
        all.push(if long { c.long() } else { c });
    }
    // Elementwise: 1005 values take the scalar kernel, 1008 the vec4 one; large magnitudes
    // included (no overflow to inf/NaN).
    for op in [
        ew::Unary::Sigmoid,
        ew::Unary::Silu,
        ew::Unary::Gelu,
        ew::Unary::LogSigmoid,
        ew::Unary::Softplus,
    ] {
        for n in [1005, 1008] {
            all.push(Case::new(
                "elementwise",
                format!("{op:?} n{n}"),
                dtype,
                Unary {
                    op,
                    n,
                    dtype,
                    f32_out: false,
                },
            ));
        }
    }
    // The f32-output map (Mesa's gates in f16 models).
    for op in [ew::Unary::Sigmoid, ew::Unary::LogSigmoid] {
        all.push(Case::new(
            "elementwise",
            format!("{op:?} n1005 f32 out"),
            dtype,
            Unary {
                op,
                n: 1005,
                dtype,
                f32_out: true,
            },
        ));
    }
    // One block of columns into a wider matrix (an LM head split into vocabulary blocks); odd
    // sizes and offsets, which f16 buffer copies could not do.
    for &(rows, n, ld, off) in &[(5, 37, 100, 41), (1, 1, 3, 2), (64, 1000, 4095, 3095)] {
        all.push(
            Case::new(
                "shards",
                format!("place_columns {rows}x{n} into ld{ld} at {off}"),
                dtype,
                PlaceColumns {
                    rows,
                    n,
                    ld,
                    off,
                    dtype,
                },
            )
            .exact(),
        );
    }
    // Gated maps over a fused gate/up row (SwiGLU FFNs): F = 37 takes the scalar kernel, 40 the
    // vec4 one.
    for f in [37, 40] {
        all.push(Case::new(
            "elementwise",
            format!("glu Silu 5x2·{f}"),
            dtype,
            Glu { rows: 5, f, dtype },
        ));
    }
    // Binary maps: rows of 37 take the scalar kernel, 40 the vec4 one; b full or one broadcast row.
    for op in [ew::Binary::Mul, ew::Binary::Add, ew::Binary::SigmoidMul] {
        for cols in [37, 40] {
            for row in [false, true] {
                let shape = format!("{op:?} 6x{cols} {}", if row { "b row" } else { "b full" });
                all.push(Case::new(
                    "elementwise",
                    shape,
                    dtype,
                    Binary {
                        op,
                        cols,
                        row,
                        dtype,
                    },
                ));
            }
        }
    }
    all.push(
        Case::new(
            "elementwise",
            "Silu n4194304".into(),
            dtype,
            Unary {
                op: ew::Unary::Silu,
                n: 1 << 22,
                dtype,
                f32_out: false,
            },
        )
        .long(),
    );
    // Softmax (rows, d, temperature), a large logit in every case.
    for &(rows, d, temp, long) in &[
        (4, 10, 1.0f32, false),
        (9, 300, 0.5, false),
        (2, 4097, 2.0, false),
        (3, 1, 1.0, false),
        (4, 50257, 0.7, true),
    ] {
        let c = Case::new(
            "softmax",
            format!("rows{rows} d{d} temp{temp}"),
            dtype,
            Softmax {
                rows,
                d,
                temp,
                dtype,
            },
        );
        all.push(if long { c.long() } else { c });
    }
    // RoPE (b, t, heads, dh) at positions spread over the table.
    for &(b, t, h, dh, long) in &[
        (1, 5, 2, 64, false),
        (2, 7, 3, 60, false),
        (1, 3, 1, 2, false),
        (1, 4, 2, 8, false),
        (2, 9, 2, 128, false),
        (1, 4096, 16, 128, true),
    ] {
        let c = Case::new(
            "rope",
            format!("b{b} t{t} h{h} dh{dh}"),
            dtype,
            Rope { b, t, h, dh, dtype },
        );
        all.push(if long { c.long() } else { c });
    }
    for &(b, rows, cols, long) in &[(2, 19, 35, false), (1, 1, 7, false), (1, 2048, 2050, true)] {
        let c = Case::new(
            "transpose",
            format!("b{b} {rows}x{cols} pad4"),
            dtype,
            Transpose {
                b,
                rows,
                cols,
                dtype,
            },
        );
        all.push(if long { c.long() } else { c }.exact());
    }
    for &(v, d, n, long) in &[
        (50, 60, 7, false),
        (300, 64, 33, false),
        (1000, 128, 5, false),
        (16000, 2048, 4096, true),
    ] {
        let c = Case::new(
            "embedding",
            format!("vocab{v} d{d} ids{n}"),
            dtype,
            Embedding { v, d, n, dtype },
        );
        all.push(if long { c.long() } else { c }.exact());
    }
    for &(rows, v, long) in &[
        (1, 1, false),
        (3, 256, false),
        (16, 1000, false),
        (2, 50_257, false),
        (64, 128_000, true),
    ] {
        let c = Case::new(
            "argmax",
            format!("rows{rows} v{v}"),
            dtype,
            Argmax { rows, v, dtype },
        );
        all.push(if long { c.long() } else { c }.exact());
    }
    all
}

/// The shape-label suffix of a case that forces a GPU GEMM tile.
pub fn tile_label(tile: gemm::Tile) -> String {
    format!("tile {}", tile.name())
}

struct Gemm {
    b: usize,
    m: usize,
    n: usize,
    k: usize,
    wb: bool,
    dtype: DType,
    /// Forces this GPU GEMM tile (`GemmSchedule::TiledAs`).
    tile: Option<gemm::Tile>,
}

impl Gemm {
    fn inputs(&self) -> (Vec<f32>, Vec<f32>) {
        let wbatch = if self.wb { self.b } else { 1 };
        (
            stored(
                &rand(self.b * self.m * self.k, 1 + self.m as u64, 1.0),
                self.dtype,
            ),
            stored(
                &rand(wbatch * self.n * self.k, 2 + self.n as u64, 1.0),
                self.dtype,
            ),
        )
    }
}

impl Check for Gemm {
    fn gpu(&self, ctx: &Context) -> Result<Vec<Tensor>> {
        let (x, w) = self.inputs();
        let xt = ctx.upload(&x, &[self.b, self.m, self.k], self.dtype)?;
        let ws: Vec<usize> = if self.wb {
            vec![self.b, self.n, self.k]
        } else {
            vec![self.n, self.k]
        };
        let wt = ctx.upload(&w, &ws, self.dtype)?;
        let schedule = self
            .tile
            .map_or(gemm::GemmSchedule::Auto, gemm::GemmSchedule::TiledAs);
        Ok(vec![
            ctx.run(|rec| gemm::gemm_with(rec, &xt, &wt, schedule))?
        ])
    }
    fn reference(&self) -> Vec<f64> {
        let (x, w) = self.inputs();
        r::gemm(&x, &w, self.b, self.m, self.n, self.k)
    }
}

/// `y = r + (x ⊙ sigmoid(z)) · W[rows]ᵀ` through a `Linear` block of a wider weight, z a slice
/// (offset 8, row stride k + 12) of a wider tensor; or (`norm`) `y = r + RMSNorm(x)·nw · W[rows]ᵀ`.
struct Fused {
    m: usize,
    n: usize,
    k: usize,
    norm: bool,
    dtype: DType,
}

impl Fused {
    const ROW0: usize = 4;
    fn inputs(&self) -> [Vec<f32>; 4] {
        let (m, n, k) = (self.m, self.n, self.k);
        [
            stored(&rand(m * k, 41, 1.0), self.dtype),
            stored(&rand((n + 2 * Self::ROW0) * k, 42, 1.0), self.dtype),
            stored(&rand(m * (k + 12) + 8, 43, 3.0), self.dtype),
            stored(&rand(m * n, 44, 1.0), self.dtype),
        ]
    }
    fn norm_weight(&self) -> Vec<f32> {
        stored(
            &rand(self.k, 45, 0.5)
                .iter()
                .map(|v| 1.0 + v)
                .collect::<Vec<_>>(),
            self.dtype,
        )
    }
}

impl Check for Fused {
    fn gpu(&self, ctx: &Context) -> Result<Vec<Tensor>> {
        let (m, n, k) = (self.m, self.n, self.k);
        let [x, w, z, r] = self.inputs();
        let xt = ctx.upload(&x, &[1, m, k], self.dtype)?;
        let wt = ctx.upload(&w, &[n + 2 * Self::ROW0, k], self.dtype)?;
        let zt = ctx.upload(&z, &[z.len()], self.dtype)?;
        let rt = ctx.upload(&r, &[1, m, n], self.dtype)?;
        let lin = gemm::Linear::new(ctx, wt)?.rows(Self::ROW0..Self::ROW0 + n)?;
        let nw = ctx.upload(&self.norm_weight(), &[k], self.dtype)?;
        let fused = if self.norm {
            gemm::Fused {
                norm: Some((&nw, 1e-6)),
                residual: Some(&rt),
                gate: None,
            }
        } else {
            gemm::Fused {
                norm: None,
                residual: Some(&rt),
                gate: Some(gemm::Slice {
                    tensor: &zt,
                    offset: 8,
                    ld: k + 12,
                }),
            }
        };
        Ok(vec![ctx.run(|rec| lin.forward_fused(rec, &xt, fused))?])
    }
    fn reference(&self) -> Vec<f64> {
        let (m, n, k) = (self.m, self.n, self.k);
        let [x, w, z, r] = self.inputs();
        let gated: Vec<f32> = if self.norm {
            let normed = r::rmsnorm(&x, &self.norm_weight(), 1e-6);
            normed.iter().map(|&v| v as f32).collect()
        } else {
            (0..m * k)
                .map(|e| {
                    (x[e] as f64 * r::sigmoid(z[8 + (e / k) * (k + 12) + e % k] as f64)) as f32
                })
                .collect()
        };
        let rows = &w[Self::ROW0 * k..(Self::ROW0 + n) * k];
        // The gated input is rounded to f32 here; the kernels keep it in f32 registers too.
        r::gemm(&gated, rows, 1, m, n, k)
            .iter()
            .zip(&r)
            .map(|(y, &rr)| y + rr as f64)
            .collect()
    }
}

struct RmsNorm {
    rows: usize,
    d: usize,
    dtype: DType,
}

impl RmsNorm {
    fn inputs(&self) -> (Vec<f32>, Vec<f32>) {
        (
            stored(&rand(self.rows * self.d, self.d as u64, 3.0), self.dtype),
            stored(&rand(self.d, 7, 1.0), self.dtype),
        )
    }
}

impl Check for RmsNorm {
    fn gpu(&self, ctx: &Context) -> Result<Vec<Tensor>> {
        let (x, w) = self.inputs();
        let xt = ctx.upload(&x, &[self.rows, self.d], self.dtype)?;
        let wt = ctx.upload(&w, &[self.d], self.dtype)?;
        Ok(vec![ctx.run(|rec| norm::rmsnorm(rec, &xt, &wt, 1e-6))?])
    }
    fn reference(&self) -> Vec<f64> {
        let (x, w) = self.inputs();
        r::rmsnorm(&x, &w, 1e-6)
    }
}

struct Unary {
    op: ew::Unary,
    n: usize,
    dtype: DType,
    /// `ew::unary_f32`: an f32 result from `dtype` storage.
    f32_out: bool,
}

/// `silu(x[:, :F]) · x[:, F:]` over `x [rows, 2F]`.
struct Glu {
    rows: usize,
    f: usize,
    dtype: DType,
}

impl Glu {
    fn input(&self) -> Vec<f32> {
        stored(&rand(self.rows * 2 * self.f, 23, 6.0), self.dtype)
    }
}

impl Check for Glu {
    fn gpu(&self, ctx: &Context) -> Result<Vec<Tensor>> {
        let xt = ctx.upload(&self.input(), &[self.rows, 1, 2 * self.f], self.dtype)?;
        Ok(vec![ctx.run(|rec| ew::glu(rec, &xt, ew::Unary::Silu))?])
    }
    fn reference(&self) -> Vec<f64> {
        let x = self.input();
        x.chunks(2 * self.f)
            .flat_map(|row| (0..self.f).map(|i| r::silu(row[i] as f64) * row[self.f + i] as f64))
            .collect()
    }
}

struct PlaceColumns {
    rows: usize,
    n: usize,
    ld: usize,
    off: usize,
    dtype: DType,
}

impl PlaceColumns {
    fn input(&self) -> Vec<f32> {
        stored(&rand(self.rows * self.n, 17, 1.0), self.dtype)
    }
}

impl Check for PlaceColumns {
    fn gpu(&self, ctx: &Context) -> Result<Vec<Tensor>> {
        let x = self.input();
        let xt = ctx.upload(&x, &[self.rows, self.n], self.dtype)?;
        let y = ctx.upload(
            &vec![-1.0; self.rows * self.ld],
            &[self.rows, self.ld],
            self.dtype,
        )?;
        ctx.run(|rec| crate::ops::shards::place_columns(rec, &xt, &y, self.off))?;
        Ok(vec![y])
    }
    fn reference(&self) -> Vec<f64> {
        let x = self.input();
        let mut y = vec![-1.0; self.rows * self.ld];
        for r in 0..self.rows {
            for c in 0..self.n {
                y[r * self.ld + self.off + c] = x[r * self.n + c] as f64;
            }
        }
        y
    }
}

impl Unary {
    fn input(&self) -> Vec<f32> {
        let mut x = rand(self.n - 5, self.op as u64 + 11, 8.0);
        x.extend_from_slice(&[-90.0, -30.0, 0.0, 30.0, 90.0]);
        stored(&x, self.dtype)
    }
}

impl Check for Unary {
    fn gpu(&self, ctx: &Context) -> Result<Vec<Tensor>> {
        let x = self.input();
        let xt = ctx.upload(&x, &[x.len()], self.dtype)?;
        if self.f32_out {
            let y = ctx.run(|rec| ew::unary_f32(rec, &xt, self.op))?;
            return Ok(vec![y]);
        }
        Ok(vec![ctx.run(|rec| ew::unary(rec, &xt, self.op))?])
    }
    fn reference(&self) -> Vec<f64> {
        let f: fn(f64) -> f64 = match self.op {
            ew::Unary::Sigmoid => r::sigmoid,
            ew::Unary::Silu => r::silu,
            ew::Unary::Gelu => r::gelu,
            ew::Unary::LogSigmoid => r::logsigmoid,
            ew::Unary::Softplus => r::softplus,
        };
        self.input().iter().map(|&v| f(v as f64)).collect()
    }
}

struct Binary {
    op: ew::Binary,
    cols: usize,
    /// `b` is one row broadcast over the 6 rows of `a`.
    row: bool,
    dtype: DType,
}

impl Binary {
    fn inputs(&self) -> (Vec<f32>, Vec<f32>) {
        let nb = if self.row { self.cols } else { 6 * self.cols };
        (
            stored(&rand(6 * self.cols, 1, 2.0), self.dtype),
            stored(&rand(nb, 2 + self.row as u64, 2.0), self.dtype),
        )
    }
}

impl Check for Binary {
    fn gpu(&self, ctx: &Context) -> Result<Vec<Tensor>> {
        let (a, b) = self.inputs();
        let at = ctx.upload(&a, &[6, self.cols], self.dtype)?;
        let bs: Vec<usize> = if self.row {
            vec![self.cols]
        } else {
            vec![6, self.cols]
        };
        let bt = ctx.upload(&b, &bs, self.dtype)?;
        Ok(vec![ctx.run(|rec| ew::binary(rec, &at, &bt, self.op))?])
    }
    fn reference(&self) -> Vec<f64> {
        let (a, b) = self.inputs();
        let f = |u: f64, v: f64| match self.op {
            ew::Binary::Mul => u * v,
            ew::Binary::Add => u + v,
            ew::Binary::SigmoidMul => r::sigmoid(u) * v,
        };
        a.iter()
            .enumerate()
            .map(|(i, &u)| f(u as f64, b[i % b.len()] as f64))
            .collect()
    }
}

struct Softmax {
    rows: usize,
    d: usize,
    temp: f32,
    dtype: DType,
}

impl Softmax {
    fn input(&self) -> Vec<f32> {
        let mut x = rand(self.rows * self.d, self.d as u64, 10.0);
        x[0] = 80.0; // max subtraction must keep exp finite
        stored(&x, self.dtype)
    }
}

impl Check for Softmax {
    fn gpu(&self, ctx: &Context) -> Result<Vec<Tensor>> {
        let x = self.input();
        let xt = ctx.upload(&x, &[self.rows, self.d], self.dtype)?;
        Ok(vec![ctx.run(|rec| softmax::softmax(rec, &xt, self.temp))?])
    }
    fn reference(&self) -> Vec<f64> {
        r::softmax(&self.input(), self.d, self.temp as f64)
    }
}

struct Rope {
    b: usize,
    t: usize,
    h: usize,
    dh: usize,
    dtype: DType,
}

const ROPE_POSITIONS: usize = 5000;

impl Rope {
    fn inputs(&self) -> (Vec<f32>, Vec<usize>) {
        let pos = (0..self.t)
            .map(|i| (i * 613 + 17) % ROPE_POSITIONS)
            .collect();
        let x = rand(self.b * self.t * self.h * self.dh, self.dh as u64, 1.0);
        (stored(&x, self.dtype), pos)
    }
}

impl Check for Rope {
    fn gpu(&self, ctx: &Context) -> Result<Vec<Tensor>> {
        let (x, pos) = self.inputs();
        let table = rope::RopeTable::new(ctx, self.dh, ROPE_POSITIONS, 10000.0)?;
        let xt = ctx.upload(&x, &[self.b, self.t, self.h * self.dh], self.dtype)?;
        let p = table.positions(ctx, &pos)?;
        Ok(vec![ctx.run(|rec| rope::rope(rec, &xt, &table, &p))?])
    }
    fn reference(&self) -> Vec<f64> {
        let (x, pos) = self.inputs();
        r::rope(&x, self.dh, self.h, &pos, 10000.0)
    }
}

/// `transpose_padded(x [b, rows, cols], 4)`: `[b, cols, rows rounded up to 4]`, padding zero.
struct Transpose {
    b: usize,
    rows: usize,
    cols: usize,
    dtype: DType,
}

impl Check for Transpose {
    fn gpu(&self, ctx: &Context) -> Result<Vec<Tensor>> {
        let (b, rows, cols) = (self.b, self.rows, self.cols);
        let x = stored(&rand(b * rows * cols, 5, 1.0), self.dtype);
        let xt = ctx.upload(&x, &[b, rows, cols], self.dtype)?;
        Ok(vec![
            ctx.run(|rec| transpose::transpose_padded(rec, &xt, 4))?
        ])
    }
    fn reference(&self) -> Vec<f64> {
        let (b, rows, cols) = (self.b, self.rows, self.cols);
        let x = stored(&rand(b * rows * cols, 5, 1.0), self.dtype);
        let padded = rows.div_ceil(4) * 4;
        let mut y = vec![0.0; b * cols * padded];
        for bi in 0..b {
            for c in 0..cols {
                for rr in 0..rows {
                    y[(bi * cols + c) * padded + rr] = x[(bi * rows + rr) * cols + c] as f64;
                }
            }
        }
        y
    }
}

struct Embedding {
    v: usize,
    d: usize,
    n: usize,
    dtype: DType,
}

impl Embedding {
    fn inputs(&self) -> (Vec<f32>, Vec<u32>) {
        let table = stored(&rand(self.v * self.d, 3, 1.0), self.dtype);
        // The first and last rows included.
        let ids = (0..self.n)
            .map(|i| match i {
                0 => 0,
                1 => self.v as u32 - 1,
                _ => ((i * 7919) % self.v) as u32,
            })
            .collect();
        (table, ids)
    }
}

impl Check for Embedding {
    fn gpu(&self, ctx: &Context) -> Result<Vec<Tensor>> {
        let (table, ids) = self.inputs();
        let tt = ctx.upload(&table, &[self.v, self.d], self.dtype)?;
        let it = embedding::TokenIds::new(ctx, &ids, &[1, self.n], self.v)?;
        Ok(vec![ctx.run(|rec| embedding::embedding(rec, &tt, &it))?])
    }
    fn reference(&self) -> Vec<f64> {
        let (table, ids) = self.inputs();
        r::embedding(&table, self.d, &ids)
    }
}

struct Argmax {
    rows: usize,
    v: usize,
    dtype: DType,
}

impl Argmax {
    fn input(&self) -> Vec<f32> {
        let mut x = stored(&rand(self.rows * self.v, self.v as u64, 4.0), self.dtype);
        if self.v > 10 {
            // Ties (the first wins), NaN (never wins) and an all −inf row.
            x[5] = 9.0;
            x[7] = 9.0;
            x[3] = f32::NAN;
            if self.rows > 1 {
                x[self.v..2 * self.v].fill(f32::NEG_INFINITY);
            }
        }
        x
    }
}

impl Check for Argmax {
    fn gpu(&self, ctx: &Context) -> Result<Vec<Tensor>> {
        let x = self.input();
        let xt = ctx.upload(&x, &[self.rows, self.v], self.dtype)?;
        Ok(vec![ctx.run(|rec| sample::argmax(rec, &xt))?])
    }
    fn reference(&self) -> Vec<f64> {
        to_f64(
            &self
                .input()
                .chunks(self.v)
                .map(|row| r::argmax(row) as f32)
                .collect::<Vec<_>>(),
        )
    }
}
