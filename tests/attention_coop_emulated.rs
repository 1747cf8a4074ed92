//! The tensor-core attention forward's products (shaders/common/attention_mm_coop.wgsl) on an
//! adapter without cooperative matrices: the snippet's block walk (rounds per subgroup, blocks
//! past the product stored into the spare block, row- and column-major loads, strides) runs with
//! every cooperative operation replaced by a scalar emulation of its Vulkan meaning, one
//! invocation standing for a subgroup. The emulated kernel replaces attention_mm.wgsl through
//! `CHUNKWISE_SHADER_DIR` (read once per process: hence a test binary of its own), and the
//! blocked variant, forced, runs it against the f64 reference.

mod common;
use chunkwise::ops::attention as attn;
use chunkwise::{reference as r, Context, DType};
use common::*;

/// Rewrites `coopLoad[T]<M>(&NAME[EXPR], STRIDE)`, `coopStoreT(C, &NAME[EXPR], STRIDE)` and
/// `coopMultiplyAdd(` into calls of the emulation.
fn emulate(src: &str) -> String {
    let mut out = String::new();
    let mut rest = src;
    while let Some(at) = rest.find("coop") {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        let row_major = if rest.starts_with("coopLoadT<") {
            Some(true)
        } else if rest.starts_with("coopLoad<") {
            Some(false)
        } else if rest.starts_with("coopStoreT(") {
            None
        } else if let Some(r) = rest.strip_prefix("coopMultiplyAdd(") {
            out.push_str("emu_mma(");
            rest = r;
            continue;
        } else {
            out.push_str("coop");
            rest = &rest[4..];
            continue;
        };
        // The matrix argument of a store comes first: `coopStoreT(c, &…`.
        let open = rest.find('(').unwrap();
        let amp = rest.find('&').unwrap();
        let lead = rest[open + 1..amp].to_string();
        let bracket = amp + rest[amp..].find('[').unwrap();
        let name = &rest[amp + 1..bracket];
        let mut depth = 0;
        let mut close = bracket;
        for (i, ch) in rest[bracket..].char_indices() {
            match ch {
                '[' => depth += 1,
                ']' => {
                    depth -= 1;
                    if depth == 0 {
                        close = bracket + i;
                        break;
                    }
                }
                _ => {}
            }
        }
        let index = &rest[bracket + 1..close];
        let end = close + rest[close..].find(')').unwrap();
        let stride = rest[close + 1..end].trim_start_matches(',').trim();
        match row_major {
            Some(rm) => out.push_str(&format!("emu_load_{name}({index}, {stride}, {rm})")),
            None => out.push_str(&format!("emu_store_{name}({lead}{index}, {stride})")),
        }
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

fn emulated_kernel(cm: u32) -> String {
    let shaders = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("shaders");
    let coop = std::fs::read_to_string(shaders.join("common/attention_mm_coop.wgsl")).unwrap();
    let products = emulate(&coop);
    for gone in ["coopLoad", "coopStore", "coopMultiplyAdd"] {
        assert!(!products.contains(gone), "{gone} left in:\n{products}");
    }
    let mut src = format!(
        "const CM: u32 = {cm}u;\n\
         alias MA = array<f32, CM * CM>;\n\
         alias MB = array<f32, CM * CM>;\n\
         alias MC = array<f32, CM * CM>;\n\
         const SPARE: u32 = CM * CM;\n\
         #include \"common/attention_mm_body.wgsl\"\n{products}\n"
    );
    // Element (r, c) of a matrix is m[r·CM + c]; memory as SPIR-V's Row/ColumnMajorKHR.
    for name in ["qs", "kv", "ps"] {
        src.push_str(&format!(
            "fn emu_load_{name}(at: u32, stride: u32, row_major: bool) -> MA {{\n\
             \x20   var m = MA();\n\
             \x20   for (var e = 0u; e < CM * CM; e++) {{\n\
             \x20       let r = e / CM;\n\
             \x20       let c = e % CM;\n\
             \x20       m[e] = f32({name}[select(at + c * stride + r, at + r * stride + c, row_major)]);\n\
             \x20   }}\n\
             \x20   return m;\n\
             }}\n"
        ));
    }
    for name in ["st", "ot"] {
        src.push_str(&format!(
            "fn emu_store_{name}(m: MC, at: u32, stride: u32) {{\n\
             \x20   for (var e = 0u; e < CM * CM; e++) {{\n\
             \x20       {name}[at + (e / CM) * stride + e % CM] = m[e];\n\
             \x20   }}\n\
             }}\n"
        ));
    }
    src.push_str(
        "fn emu_mma(a: MA, b: MB, c: MC) -> MC {\n\
         \x20   var d = c;\n\
         \x20   for (var e = 0u; e < CM * CM; e++) {\n\
         \x20       let r = e / CM;\n\
         \x20       let col = e % CM;\n\
         \x20       var s = d[e];\n\
         \x20       for (var k = 0u; k < CM; k++) {\n\
         \x20           s += a[r * CM + k] * b[k * CM + col];\n\
         \x20       }\n\
         \x20       d[e] = s;\n\
         \x20   }\n\
         \x20   return d;\n\
         }\n\
         // Three emulated subgroups of one invocation each (21 or 22 lanes do the same block):\n\
         // several rounds, and blocks past the product in the last one.\n\
         @compute @workgroup_size(64)\n\
         fn attention_mm(@builtin(workgroup_id) wid: vec3<u32>,\n\
         \x20               @builtin(local_invocation_index) lid: u32) {\n\
         \x20   attention_mm_main(wid, lid, lid % 3u, 3u);\n\
         }\n",
    );
    assert!(!src.contains("coop_mat"));
    src
}

fn check(ctx: &Context, (b, t, h, dh): (usize, usize, usize, usize), window: Option<usize>) {
    for dtype in [DType::F32, DType::F16] {
        if dtype == DType::F16 && !ctx.supports_f16() {
            continue;
        }
        let d = h * dh;
        let q = stored(&rand(b * t * d, 1 + t as u64, 1.0), dtype);
        let k = stored(&rand(b * t * d, 2 + t as u64, 1.0), dtype);
        let v = stored(&rand(b * t * d, 3 + t as u64, 1.0), dtype);
        let up = |x: &[f32]| ctx.upload(x, &[b, t, d], dtype).unwrap();
        let (qt, kt, vt) = (up(&q), up(&k), up(&v));
        let o = ctx
            .run(|rec| {
                attn::attention_with(
                    rec,
                    &qt,
                    &kt,
                    &vt,
                    h,
                    window,
                    None,
                    Some(attn::FwdVariant::Blocked),
                )
            })
            .unwrap();
        let want = r::attention::attention(&q, &k, &v, b, t, h, window, 1.0 / (dh as f64).sqrt());
        assert_close(
            &ctx.download(&o).unwrap(),
            &want,
            dtype,
            &format!("emulated coop attention b{b} t{t} h{h} dh{dh} w{window:?} {dtype:?}"),
        );
    }
}

#[test]
fn the_cooperative_products_walk_their_blocks_right() {
    // 8 × 8 matrices (the 16 × 16 ones at these sizes would run into llvmpipe's loop limiter:
    // the emulation's loops are CM³ per product). One file per process: CM = 8 here; the block
    // walk is the same code for both sizes.
    let dir = std::env::temp_dir().join(format!("chunkwise-coop-emu-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("attention_mm.wgsl"), emulated_kernel(8)).unwrap();
    std::env::set_var("CHUNKWISE_SHADER_DIR", &dir);
    let ctx = ctx();
    // T not a multiple of the query block or key tile, batches and heads, causal and windowed,
    // head dims of one and of several 8 × 8 blocks.
    check(ctx, (1, 37, 2, 16), None);
    check(ctx, (2, 21, 1, 32), None);
    check(ctx, (1, 100, 2, 16), Some(20));
    let _ = std::fs::remove_dir_all(&dir);
}
