//! Loading weights saved by the reference implementations.

pub mod checkpoint;

pub use checkpoint::Checkpoint;
