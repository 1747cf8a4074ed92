//! Whole layers (pre-norm residual sub-blocks, as in the reference code): parallel forward,
//! prefill that fills a cache, and single-token decode steps.

pub mod attention;
pub mod mesa;
pub mod rat;

pub use attention::{AttentionConfig, AttentionLayer, KvCache};
pub use mesa::{MesaCache, MesaConfig, MesaLayer};
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
    /// An empty cache at position 0 (decoding without a prompt).
    fn new_cache(
        &self,
        ctx: &crate::Context,
        batch: usize,
        dtype: crate::DType,
    ) -> Result<Self::Cache>;
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
    fn new_cache(
        &self,
        ctx: &crate::Context,
        batch: usize,
        dtype: crate::DType,
    ) -> Result<KvCache> {
        AttentionLayer::new_cache(self, ctx, batch, dtype)
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
    fn new_cache(
        &self,
        ctx: &crate::Context,
        batch: usize,
        dtype: crate::DType,
    ) -> Result<RatCache> {
        RatLayer::new_cache(self, ctx, batch, dtype)
    }
}

/// A sequence layer of either family, for stacks that mix them (hybrid models, benchmarks).
pub enum AnyLayer {
    Rat(RatLayer),
    Attention(AttentionLayer),
    Mesa(MesaLayer),
}

/// The cache of an [`AnyLayer`].
pub enum AnyCache {
    Rat(RatCache),
    Attention(KvCache),
    Mesa(MesaCache),
}

impl AnyCache {
    pub fn bytes(&self) -> u64 {
        match self {
            AnyCache::Rat(c) => c.bytes(),
            AnyCache::Attention(c) => c.bytes(),
            AnyCache::Mesa(c) => c.bytes(),
        }
    }
    pub fn position(&self) -> usize {
        match self {
            AnyCache::Rat(c) => c.position(),
            AnyCache::Attention(c) => c.position(),
            AnyCache::Mesa(c) => c.position(),
        }
    }
    #[doc(hidden)]
    pub fn bench_seek(&mut self, position: usize) {
        match self {
            AnyCache::Rat(c) => c.bench_seek(position),
            AnyCache::Attention(c) => c.bench_seek(position),
            AnyCache::Mesa(c) => c.bench_seek(position),
        }
    }
}

impl AnyLayer {
    /// Values per token of the widest activation the layer binds: how many sequences one pass
    /// of a model can take within a binding.
    pub fn token_width(&self) -> usize {
        match self {
            AnyLayer::Rat(l) => l.token_width(),
            AnyLayer::Attention(l) => l.token_width(),
            AnyLayer::Mesa(l) => l.token_width(),
        }
    }
    /// Bytes per sequence of the layer's largest cache tensor: how many sequences one cache
    /// can hold within a binding.
    pub fn cache_bytes_per_sequence(&self, dtype: crate::DType) -> u64 {
        match self {
            AnyLayer::Rat(l) => l.cache_bytes_per_sequence(dtype),
            AnyLayer::Attention(l) => l.cache_bytes_per_sequence(dtype),
            AnyLayer::Mesa(l) => l.cache_bytes_per_sequence(),
        }
    }
    /// The forward, and for a Mesa layer the CG steps per row (`MesaLayer::forward_solved`).
    pub fn forward_solved(
        &self,
        rec: &mut Recording,
        x: &Tensor,
    ) -> Result<(Tensor, Option<Tensor>)> {
        match self {
            AnyLayer::Mesa(l) => l.forward_solved(rec, x).map(|(y, i)| (y, Some(i))),
            l => Ok((l.forward(rec, x)?, None)),
        }
    }

    /// A step, and for a Mesa layer the CG steps per (batch, head) (`MesaLayer::step_solved`).
    pub fn step_solved(
        &self,
        rec: &mut Recording,
        cache: &mut AnyCache,
        x: &Tensor,
    ) -> Result<(Tensor, Option<Tensor>)> {
        match (self, cache) {
            (AnyLayer::Mesa(l), AnyCache::Mesa(c)) => {
                l.step_solved(rec, c, x).map(|(y, i)| (y, Some(i)))
            }
            (l, c) => Ok((l.step(rec, c, x)?, None)),
        }
    }

    /// An empty (zeroed) cache for `batch` sequences.
    pub fn new_cache(
        &self,
        ctx: &crate::Context,
        batch: usize,
        dtype: crate::DType,
    ) -> Result<AnyCache> {
        Ok(match self {
            AnyLayer::Rat(l) => AnyCache::Rat(l.new_cache(ctx, batch, dtype)?),
            AnyLayer::Attention(l) => AnyCache::Attention(l.new_cache(ctx, batch, dtype)?),
            AnyLayer::Mesa(l) => AnyCache::Mesa(l.new_cache(ctx, batch)?),
        })
    }
}

impl SequenceLayer for AnyLayer {
    type Cache = AnyCache;
    fn forward(&self, rec: &mut Recording, x: &Tensor) -> Result<Tensor> {
        match self {
            AnyLayer::Rat(l) => l.forward(rec, x),
            AnyLayer::Attention(l) => l.forward(rec, x),
            AnyLayer::Mesa(l) => l.forward(rec, x),
        }
    }
    fn prefill(&self, rec: &mut Recording, x: &Tensor) -> Result<(Tensor, AnyCache)> {
        Ok(match self {
            AnyLayer::Rat(l) => {
                let (y, c) = l.prefill(rec, x)?;
                (y, AnyCache::Rat(c))
            }
            AnyLayer::Attention(l) => {
                let (y, c) = l.prefill(rec, x)?;
                (y, AnyCache::Attention(c))
            }
            AnyLayer::Mesa(l) => {
                let (y, c) = l.prefill(rec, x)?;
                (y, AnyCache::Mesa(c))
            }
        })
    }
    fn step(&self, rec: &mut Recording, cache: &mut AnyCache, x: &Tensor) -> Result<Tensor> {
        match (self, cache) {
            (AnyLayer::Rat(l), AnyCache::Rat(c)) => l.step(rec, c, x),
            (AnyLayer::Attention(l), AnyCache::Attention(c)) => l.step(rec, c, x),
            (AnyLayer::Mesa(l), AnyCache::Mesa(c)) => l.step(rec, c, x),
            _ => Err(crate::Error::invalid(
                "step",
                "the cache belongs to a layer of another kind",
            )),
        }
    }
    fn new_cache(
        &self,
        ctx: &crate::Context,
        batch: usize,
        dtype: crate::DType,
    ) -> Result<AnyCache> {
        AnyLayer::new_cache(self, ctx, batch, dtype)
    }
}
