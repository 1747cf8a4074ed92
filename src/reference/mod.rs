//! CPU float64 references, one per kernel family, mirroring `ops/`. They are the oracle of every
//! GPU test: written from the spec, as plain loops, with no attempt at speed.

pub mod attention;
pub mod basic;
pub mod mesa;
pub mod rat;

pub use basic::*;

/// rms(got − want) / rms(want): the error measure every test states a bound for.
pub fn rel_rms(got: &[f32], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len(), "rel_rms: lengths differ");
    let mut num = 0.0;
    let mut den = 0.0;
    for (&g, &w) in got.iter().zip(want) {
        num += (g as f64 - w).powi(2);
        den += w * w;
    }
    if den == 0.0 {
        return num.sqrt();
    }
    (num / den).sqrt()
}

/// Largest absolute difference.
pub fn max_abs(got: &[f32], want: &[f64]) -> f64 {
    got.iter()
        .zip(want)
        .map(|(&g, &w)| (g as f64 - w).abs())
        .fold(0.0, f64::max)
}
