//! A tensor is a pooled GPU buffer plus a shape and a storage dtype. Data is row-major, innermost last.

use std::sync::Arc;

use crate::pool::PooledBuffer;

/// Storage precision. Kernels always compute and accumulate in f32.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    F32,
    F16,
}

impl DType {
    pub fn size(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F16 => 2,
        }
    }
}

impl std::str::FromStr for DType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "f32" | "float32" => Ok(DType::F32),
            "f16" | "float16" | "half" => Ok(DType::F16),
            other => Err(format!("unknown dtype '{other}' (use f32 or f16)")),
        }
    }
}

/// GPU storage with a shape and a dtype. Cloning is cheap and shares the buffer.
#[derive(Clone, Debug)]
pub struct Tensor {
    pub(crate) buf: Arc<PooledBuffer>,
    pub(crate) shape: Vec<usize>,
    pub(crate) dtype: DType,
}

impl Tensor {
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }
    pub fn dtype(&self) -> DType {
        self.dtype
    }
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
    /// Bytes the data occupies (the buffer may be larger: it is a pool size class).
    pub fn bytes(&self) -> u64 {
        (self.numel() * self.dtype.size()) as u64
    }
    /// Bytes rounded up to the 4-byte granularity of bindings and copies.
    pub(crate) fn padded_bytes(&self) -> u64 {
        self.bytes().div_ceil(4).max(1) * 4
    }
    pub fn buffer(&self) -> &wgpu::Buffer {
        self.buf.buffer()
    }
    /// The size of the last dimension (1 for a scalar).
    pub fn last_dim(&self) -> usize {
        self.shape.last().copied().unwrap_or(1)
    }
    /// Same data seen with another shape of the same element count.
    pub fn reshape(&self, shape: &[usize]) -> crate::Result<Tensor> {
        let n: usize = shape.iter().product();
        if n != self.numel() {
            return Err(crate::Error::shape(
                "reshape",
                format!(
                    "cannot view {:?} ({} elements) as {:?} ({} elements)",
                    self.shape,
                    self.numel(),
                    shape,
                    n
                ),
            ));
        }
        Ok(Tensor {
            buf: self.buf.clone(),
            shape: shape.to_vec(),
            dtype: self.dtype,
        })
    }
    pub(crate) fn same_buffer(&self, other: &Tensor) -> bool {
        Arc::ptr_eq(&self.buf, &other.buf)
    }
}
