//! Models from checkpoints saved by the reference implementations.

pub mod checkpoint;
pub mod config;
pub mod generate;
pub mod lm;
pub mod sampling;

pub use checkpoint::Checkpoint;
pub use config::{ModelConfig, ModelKind};
pub use lm::{Model, ModelCache};
