//! Whole layers (pre-norm residual sub-blocks, as in the reference code): parallel forward,
//! prefill that fills a cache, and single-token decode steps.

pub mod attention;
pub mod rat;

pub use attention::{AttentionConfig, AttentionLayer, KvCache};
pub use rat::{RatCache, RatConfig, RatLayer};

use crate::error::Result;
use crate::record::Recording;
use crate::tensor::Tensor;

/// What every sequence layer offers: a parallel forward, a prefill that returns its decode cache,
/// and single-token steps. The case runner and (later) the model code are written against this.
pub trait SequenceLayer {
    type Cache;
    /// `x [B, T, D]` → `[B, T, D]`.
    fn forward(&self, rec: &mut Recording, x: &Tensor) -> Result<Tensor>;
    /// The forward over a prompt `x [B, P, D]`, and the cache for decoding from position P.
    fn prefill(&self, rec: &mut Recording, x: &Tensor) -> Result<(Tensor, Self::Cache)>;
    /// `x [B, 1, D]` at the cache's position; advances the cache.
    fn step(&self, rec: &mut Recording, cache: &mut Self::Cache, x: &Tensor) -> Result<Tensor>;
}

impl SequenceLayer for AttentionLayer {
    type Cache = KvCache;
    fn forward(&self, rec: &mut Recording, x: &Tensor) -> Result<Tensor> {
        AttentionLayer::forward(self, rec, x)
    }
    fn prefill(&self, rec: &mut Recording, x: &Tensor) -> Result<(Tensor, KvCache)> {
        AttentionLayer::prefill(self, rec, x)
    }
    fn step(&self, rec: &mut Recording, cache: &mut KvCache, x: &Tensor) -> Result<Tensor> {
        AttentionLayer::step(self, rec, cache, x)
    }
}

impl SequenceLayer for RatLayer {
    type Cache = RatCache;
    fn forward(&self, rec: &mut Recording, x: &Tensor) -> Result<Tensor> {
        RatLayer::forward(self, rec, x)
    }
    fn prefill(&self, rec: &mut Recording, x: &Tensor) -> Result<(Tensor, RatCache)> {
        RatLayer::prefill(self, rec, x)
    }
    fn step(&self, rec: &mut Recording, cache: &mut RatCache, x: &Tensor) -> Result<Tensor> {
        RatLayer::step(self, rec, cache, x)
    }
}
