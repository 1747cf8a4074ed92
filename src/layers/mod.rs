//! Whole layers (pre-norm residual sub-blocks, as in the reference code): parallel forward,
//! prefill that fills a cache, and single-token decode steps.

pub mod attention;

pub use attention::{AttentionConfig, AttentionLayer, KvCache};
