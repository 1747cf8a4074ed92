//! chunkwise: modern sequence-model layers (RAT, the Mesa layer, softmax attention) as WGSL compute
//! shaders on wgpu, on any GPU wgpu drives (Vulkan, Metal, DX12, GL).
//!
//! ```no_run
//! use chunkwise::{Context, DType, ops};
//! let ctx = Context::new_blocking()?;
//! let x = ctx.upload(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3], DType::F32)?;
//! let w = ctx.upload(&[1.0, 0.0, 0.0, 0.0, 1.0, 0.0], &[2, 3], DType::F32)?;
//! let y = ctx.run(|rec| ops::gemm::linear(rec, &x, &w))?;
//! assert_eq!(ctx.download(&y)?, vec![1.0, 2.0, 4.0, 5.0]);
//! # Ok::<(), chunkwise::Error>(())
//! ```

// wgpu's handles are neither Send nor Sync in a browser (one thread); the Arcs are for native.
#![cfg_attr(target_arch = "wasm32", allow(clippy::arc_with_non_send_sync))]

// Blocking, file-reading tools for the CLI and tests; a page has none of either.
#[cfg(not(target_arch = "wasm32"))]
pub mod bench;
pub mod context;
pub mod error;
pub mod golden;
mod input;
pub mod kernels;
pub mod layers;
pub mod model;
pub mod ops;
pub mod pool;
pub mod record;
pub mod reference;
pub mod tensor;
pub mod tune;
pub mod verify;

pub use context::{AdapterSummary, Context, ContextOptions, Schedule};
pub use error::{Error, Result};
pub use pool::PoolStats;
pub use record::Recording;
pub use tensor::{DType, Tensor};
