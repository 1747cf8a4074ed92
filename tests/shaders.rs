//! Every WGSL file under shaders/ parses and validates with naga, in both storage dtypes.
//! CPU-only: needs no adapter.

use chunkwise::kernels::{assemble, kernel_files, validate};
use chunkwise::DType;

#[test]
fn every_shader_validates_with_naga_in_f32_and_f16() {
    let mut n = 0;
    for file in kernel_files() {
        for dtype in [DType::F32, DType::F16] {
            let a = assemble(file, dtype).unwrap_or_else(|e| panic!("{e}"));
            if let Err(e) = validate(&a) {
                panic!("{file} ({dtype:?}) failed naga validation:\n{e}");
            }
            n += 1;
        }
    }
    assert!(
        n >= 10,
        "expected at least 5 kernel files, validated {n} variants"
    );
}

#[test]
fn a_broken_shader_reports_its_file_and_line() {
    // Splice a snippet into a kernel, then break a line of the kernel below the snippet:
    // the error must name the kernel file and the kernel's own line, not the assembled line.
    let a = assemble("rmsnorm.wgsl", DType::F32).unwrap();
    let src = chunkwise::kernels::shader_source("rmsnorm.wgsl").unwrap();
    let bad_line = src.lines().position(|l| l.contains("let inv =")).unwrap() as u32 + 1;
    let broken = a.patched("let inv = inverseSqrt", "let inv = inverseSqrtt");
    let err = validate(&broken).unwrap_err().to_string();
    assert!(
        err.starts_with(&format!("shader rmsnorm.wgsl:{bad_line}:")),
        "{err}"
    );
}
