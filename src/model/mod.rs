//! Models from checkpoints saved by the reference implementations.

pub mod checkpoint;
pub mod config;
pub mod generate;
pub mod lm;
pub mod random;
pub mod sampling;
pub mod tokenizer;

pub use checkpoint::Checkpoint;
pub use config::{ModelConfig, ModelKind};
pub use lm::{Model, ModelCache};
pub use tokenizer::Tokenizer;
