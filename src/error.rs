//! The one error type of chunkwise. Every message says what went wrong and what to change.

use crate::tensor::DType;

/// What to do about a missing adapter: natively a driver or the variables that pick one; in a
/// page, the browser's WebGPU.
fn no_adapter_advice() -> &'static str {
    if cfg!(target_arch = "wasm32") {
        "The browser offers no WebGPU adapter: use one with WebGPU enabled (Chrome or Edge 113+, \
         Safari 26; on Linux start Chromium with --enable-unsafe-webgpu) and check that its GPU \
         is not blocklisted (chrome://gpu)"
    } else {
        "On headless Linux install Mesa's lavapipe (`apt-get install mesa-vulkan-drivers`); pick \
         an adapter with WGPU_BACKEND=vulkan|metal|dx12|gl and WGPU_ADAPTER_NAME=<part of the name \
         shown by `chunkwise info`>"
    }
}

/// Everything that can go wrong in chunkwise. Library code never panics on bad input: it returns one of these.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No adapter matched the request (no driver, wrong `WGPU_BACKEND`, wrong `WGPU_ADAPTER_NAME`).
    #[error("no GPU adapter found: {reason}. {}", no_adapter_advice())]
    NoAdapter { reason: String },

    /// `request_device` failed.
    #[error("could not open a device on adapter '{adapter}': {reason}")]
    RequestDevice { adapter: String, reason: String },

    /// A shape that does not fit the operation.
    #[error("shape error in {op}: {msg}")]
    Shape { op: &'static str, msg: String },

    /// A tensor of the wrong dtype, or two tensors whose dtypes disagree.
    #[error("dtype error in {op}: expected {expected:?}, got {got:?}")]
    DType {
        op: &'static str,
        expected: DType,
        got: DType,
    },

    /// A parameter outside its valid range (chunk size 0, eps < 0, …).
    #[error("invalid argument to {op}: {msg}")]
    InvalidArgument { op: &'static str, msg: String },

    /// The request exceeds a limit of this adapter (not an allocation failure: a smaller request would work).
    #[error(
        "{what} needs {requested} but this adapter's limit `{limit_name}` is {limit}; \
             use smaller sizes (batch, sequence length) or an adapter with larger limits"
    )]
    LimitExceeded {
        what: String,
        requested: u64,
        limit_name: &'static str,
        limit: u64,
    },

    /// The device ran out of memory while allocating or executing.
    #[error("out of GPU memory while {during}: {detail}")]
    OutOfMemory { during: String, detail: String },

    /// wgpu rejected a call (captured with an error scope instead of panicking).
    #[error("GPU validation error while {during}: {detail}")]
    Validation { during: String, detail: String },

    /// An internal driver error reported by wgpu.
    #[error("internal GPU error while {during}: {detail}")]
    Internal { during: String, detail: String },

    /// The device was lost (driver reset, GPU removed, device destroyed). Build a new `Context`.
    #[error("the GPU device was lost ({reason}); create a new Context to continue")]
    DeviceLost { reason: String },

    /// Reading a buffer back failed.
    #[error("reading back a GPU buffer failed: {0}")]
    Readback(String),

    /// A WGSL shader failed to parse or validate (a bug in chunkwise, or in a user-supplied shader).
    #[error("shader {file}:{line}: {message}\n{diagnostic}")]
    Shader {
        file: String,
        line: u32,
        message: String,
        diagnostic: String,
    },

    /// A kernel or entry point name that the registry does not know.
    #[error("unknown kernel '{0}'")]
    UnknownKernel(String),

    /// A launch whose buffers do not match the shader's declared bindings.
    #[error("kernel '{kernel}': {msg}")]
    Binding { kernel: String, msg: String },

    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },

    /// A checkpoint that is malformed, lacks a tensor, or holds one of the wrong shape or dtype.
    #[error("checkpoint {file}: {msg}")]
    Checkpoint { file: String, msg: String },

    /// A golden case or model config that cannot be run as written.
    #[error("case {file}: {msg}")]
    Case { file: String, msg: String },

    /// The operation needs a device feature this adapter lacks.
    #[error("{what} needs the device feature {feature}, which this adapter does not have")]
    MissingFeature { what: String, feature: &'static str },

    /// A kernel that naga cannot translate for a backend's shading language (found by the
    /// translation test, `kernels::translate`).
    #[error("kernel {kernel} ({variant}) does not translate to {target}: {message}")]
    Translation {
        kernel: String,
        variant: String,
        target: String,
        message: String,
    },

    /// A kernel variant the variant table rules out on this adapter's backend.
    #[error("kernel {kernel} does not run on the {backend} backend: {why}")]
    VariantNotOnBackend {
        kernel: String,
        backend: String,
        why: &'static str,
    },
}

/// Result with chunkwise's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn shape(op: &'static str, msg: impl Into<String>) -> Self {
        Error::Shape {
            op,
            msg: msg.into(),
        }
    }
    pub(crate) fn invalid(op: &'static str, msg: impl Into<String>) -> Self {
        Error::InvalidArgument {
            op,
            msg: msg.into(),
        }
    }
    /// Turns a wgpu error captured by an error scope into ours, keeping out-of-memory distinct.
    pub(crate) fn from_wgpu(during: impl Into<String>, e: wgpu::Error) -> Self {
        let during = during.into();
        match e {
            wgpu::Error::OutOfMemory { source } => Error::OutOfMemory {
                during,
                detail: source.to_string(),
            },
            wgpu::Error::Validation { description, .. } => Error::Validation {
                during,
                detail: description,
            },
            wgpu::Error::Internal { description, .. } => Error::Internal {
                during,
                detail: description,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Error;

    #[test]
    fn out_of_memory_stays_distinct_from_validation_and_limits() {
        let oom = wgpu::Error::OutOfMemory {
            source: "heap exhausted".into(),
        };
        let e = Error::from_wgpu("allocating", oom);
        assert!(matches!(e, Error::OutOfMemory { .. }), "{e}");
        assert!(e.to_string().contains("out of GPU memory while allocating"));
        let val = wgpu::Error::Validation {
            source: "bad".into(),
            description: "binding too large".into(),
        };
        assert!(matches!(
            Error::from_wgpu("submitting", val),
            Error::Validation { .. }
        ));
        let lim = Error::LimitExceeded {
            what: "x".into(),
            requested: 2,
            limit_name: "max_buffer_size",
            limit: 1,
        };
        assert!(
            lim.to_string().contains("max_buffer_size")
                && !lim.to_string().contains("out of GPU memory")
        );
    }
}
