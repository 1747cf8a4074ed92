//! Mesa: the f64 reference against the golden cases (CPU only), then the GPU kernels against the
//! reference (odd T, head dims 16 … 128, strong and weak forgetting, initial states) and the golden
//! cases through the runner.

mod common;
use std::path::PathBuf;

use chunkwise::model::Checkpoint;
use chunkwise::reference::mesa::{core, MesaShape, Solve};
use chunkwise::reference::max_abs;

fn golden(name: &str) -> Option<Checkpoint> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/golden/mesa").join(format!("{name}.safetensors"));
    if !p.exists() {
        eprintln!("SKIP: {} is absent", p.display());
        return None;
    }
    Some(Checkpoint::open(&p).unwrap())
}

fn f32s(ck: &Checkpoint, n: &str) -> Vec<f32> {
    ck.f32(n, None).unwrap().0
}

#[test]
fn cpu_reference_reproduces_the_golden_core_cases() {
    for (name, init) in [("mesa_a_core_b1_t37_h2_d16", false), ("mesa_b_core_b2_t128_h4_d32", false), ("mesa_f_core_b1_t50_h2_d16_init", true)] {
        let Some(ck) = golden(name) else { return };
        let qs = ck.shape("q").unwrap().to_vec();
        let s = MesaShape { b: qs[0], t: qs[1], h: qs[2], d: qs[3] };
        let (q, k, v, g, beta, lamb) = (f32s(&ck, "q"), f32s(&ck, "k"), f32s(&ck, "v"), f32s(&ck, "g"), f32s(&ck, "beta"), f32s(&ck, "lamb"));
        let (kk0, kv0) = if init { (f32s(&ck, "h_kk_init"), f32s(&ck, "h_kv_init")) } else { (vec![], vec![]) };
        let init = init.then_some((&kk0[..], &kv0[..]));
        let (o, hkk, hkv) = core(s, &q, &k, &v, &g, &beta, &lamb, init, Solve::Cg { iters: 30, jacobi: false }, None);
        let want = ck.f64("o_cg30_f64").unwrap().0;
        let got: Vec<f32> = o.iter().map(|&x| x as f32).collect();
        assert!(max_abs(&got, &want) < 1e-6, "{name} o_cg30: {}", max_abs(&got, &want));
        let (o4, _, _) = core(s, &q, &k, &v, &g, &beta, &lamb, init, Solve::Cg { iters: 4, jacobi: false }, None);
        let got4: Vec<f32> = o4.iter().map(|&x| x as f32).collect();
        assert!(max_abs(&got4, &ck.f64("o_cg4_f64").unwrap().0) < 1e-6, "{name} o_cg4");
        let (oe, _, _) = core(s, &q, &k, &v, &g, &beta, &lamb, init, Solve::Exact, None);
        let gote: Vec<f32> = oe.iter().map(|&x| x as f32).collect();
        assert!(max_abs(&gote, &ck.f64("o_exact_f64").unwrap().0) < 1e-6, "{name} o_exact");
        for (got, n) in [(hkk, "h_kk_final"), (hkv, "h_kv_final")] {
            let g32: Vec<f32> = got.iter().map(|&x| x as f32).collect();
            assert!(max_abs(&g32, &ck.f64(n).unwrap().0) < 1e-5, "{name} {n}");
        }
    }
}

#[test]
fn cpu_reference_reproduces_the_golden_decode_case() {
    let Some(ck) = golden("mesa_g_decode_core_b1_p21_t12_h2_d16") else { return };
    let qs = ck.shape("q").unwrap().to_vec();
    let s = MesaShape { b: qs[0], t: qs[1], h: qs[2], d: qs[3] };
    let p = 21;
    let (q, k, v, g, beta, lamb) = (f32s(&ck, "q"), f32s(&ck, "k"), f32s(&ck, "v"), f32s(&ck, "g"), f32s(&ck, "beta"), f32s(&ck, "lamb"));
    let (o, _, _) = core(s, &q, &k, &v, &g, &beta, &lamb, None, Solve::Cg { iters: 30, jacobi: false }, Some((p, Solve::Cg { iters: 30, jacobi: true })));
    let (want, ws) = ck.f64("o_decode_cg30_f64").unwrap();
    let dec: Vec<f32> = o[p * s.h * s.d..].iter().map(|&x| x as f32).collect();
    assert_eq!(dec.len(), want.len(), "{ws:?}");
    assert!(max_abs(&dec, &want) < 1e-6, "decode {}", max_abs(&dec, &want));
}
