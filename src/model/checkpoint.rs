//! safetensors checkpoints under the reference implementations' parameter names.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Mutex;

use crate::error::{Error, Result};

struct Entry {
    dtype: safetensors::Dtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

/// The tensors of one safetensors file, read into memory.
pub struct Checkpoint {
    file: String,
    tensors: HashMap<String, Entry>,
    /// Names read so far, so that a loader can refuse tensors it did not expect.
    used: Mutex<HashSet<String>>,
}

impl Checkpoint {
    pub fn open(path: &Path) -> Result<Checkpoint> {
        let bytes = std::fs::read(path).map_err(|source| Error::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_bytes(&path.display().to_string(), &bytes)
    }

    /// Parses a safetensors image; `file` names it in error messages.
    pub fn from_bytes(file: &str, bytes: &[u8]) -> Result<Checkpoint> {
        let st = safetensors::SafeTensors::deserialize(bytes).map_err(|e| Error::Checkpoint {
            file: file.into(),
            msg: format!("not a valid safetensors file: {e}"),
        })?;
        let tensors = st
            .tensors()
            .into_iter()
            .map(|(name, view)| {
                (
                    name,
                    Entry {
                        dtype: view.dtype(),
                        shape: view.shape().to_vec(),
                        data: view.data().to_vec(),
                    },
                )
            })
            .collect();
        Ok(Checkpoint {
            file: file.into(),
            tensors,
            used: Mutex::default(),
        })
    }

    /// A checkpoint built in memory from (name, shape, f32 data), named `file` in errors.
    pub fn from_f32(
        file: &str,
        tensors: Vec<(String, Vec<usize>, Vec<f32>)>,
    ) -> Result<Checkpoint> {
        let mut map = HashMap::new();
        for (name, shape, data) in tensors {
            if shape.iter().product::<usize>() != data.len() {
                return Err(Error::Checkpoint {
                    file: file.into(),
                    msg: format!(
                        "tensor '{name}': shape {shape:?} does not hold {} values",
                        data.len()
                    ),
                });
            }
            map.insert(
                name,
                Entry {
                    dtype: safetensors::Dtype::F32,
                    shape,
                    data: bytemuck::cast_slice(&data).to_vec(),
                },
            );
        }
        Ok(Checkpoint {
            file: file.into(),
            tensors: map,
            used: Mutex::default(),
        })
    }

    pub fn file(&self) -> &str {
        &self.file
    }
    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }
    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        self.tensors.get(name).map(|e| e.shape.as_slice())
    }
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    /// Names never read through [`Checkpoint::f32`] or [`Checkpoint::f64`], sorted.
    pub fn unused(&self) -> Vec<String> {
        let used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<String> = self
            .tensors
            .keys()
            .filter(|k| !used.contains(*k))
            .cloned()
            .collect();
        v.sort();
        v
    }

    fn err(&self, msg: String) -> Error {
        Error::Checkpoint {
            file: self.file.clone(),
            msg,
        }
    }

    /// A floating-point tensor converted to f32, checked against `shape` (pass `None` to accept
    /// any shape). Integer tensors are refused: a weight stored as integers is a broken export.
    pub fn f32(&self, name: &str, shape: Option<&[usize]>) -> Result<(Vec<f32>, Vec<usize>)> {
        self.convert(name, shape, false)
    }

    /// Like [`Checkpoint::f32`] but also accepts integer tensors (token ids, positions).
    pub fn numbers(&self, name: &str, shape: Option<&[usize]>) -> Result<(Vec<f32>, Vec<usize>)> {
        self.convert(name, shape, true)
    }

    fn convert(
        &self,
        name: &str,
        shape: Option<&[usize]>,
        integers: bool,
    ) -> Result<(Vec<f32>, Vec<usize>)> {
        let e = self
            .tensors
            .get(name)
            .ok_or_else(|| self.err(format!("tensor '{name}' is missing")))?;
        self.used
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_string());
        if let Some(want) = shape {
            if e.shape != want {
                return Err(self.err(format!(
                    "tensor '{name}' has shape {:?}, expected {want:?}",
                    e.shape
                )));
            }
        }
        use safetensors::Dtype as D;
        let v: Vec<f32> = match e.dtype {
            D::F32 => bytemuck::pod_collect_to_vec::<u8, f32>(&e.data),
            D::F64 => bytemuck::pod_collect_to_vec::<u8, f64>(&e.data)
                .iter()
                .map(|&x| x as f32)
                .collect(),
            D::F16 => bytemuck::pod_collect_to_vec::<u8, half::f16>(&e.data)
                .iter()
                .map(|x| x.to_f32())
                .collect(),
            D::BF16 => bytemuck::pod_collect_to_vec::<u8, half::bf16>(&e.data)
                .iter()
                .map(|x| x.to_f32())
                .collect(),
            D::I64 if integers => bytemuck::pod_collect_to_vec::<u8, i64>(&e.data)
                .iter()
                .map(|&x| x as f32)
                .collect(),
            D::I32 if integers => bytemuck::pod_collect_to_vec::<u8, i32>(&e.data)
                .iter()
                .map(|&x| x as f32)
                .collect(),
            other => {
                return Err(self.err(format!(
                    "tensor '{name}' has dtype {other:?}; expected {}",
                    if integers {
                        "a float or integer tensor"
                    } else {
                        "a float tensor (F32, F64, F16 or BF16)"
                    }
                )))
            }
        };
        Ok((v, e.shape.clone()))
    }

    /// A tensor in f64 (exact for f64 tensors: used to compare with the golden `*_f64` outputs).
    pub fn f64(&self, name: &str) -> Result<(Vec<f64>, Vec<usize>)> {
        let e = self
            .tensors
            .get(name)
            .ok_or_else(|| self.err(format!("tensor '{name}' is missing")))?;
        if e.dtype == safetensors::Dtype::F64 {
            self.used
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(name.to_string());
            return Ok((
                bytemuck::pod_collect_to_vec::<u8, f64>(&e.data),
                e.shape.clone(),
            ));
        }
        let (v, s) = self.f32(name, None)?;
        Ok((v.iter().map(|&x| x as f64).collect(), s))
    }
}

/// Writes f32 tensors to a safetensors file.
pub fn save_f32(path: &Path, tensors: &[(String, Vec<usize>, Vec<f32>)]) -> Result<()> {
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|(n, s, d)| {
            let view = safetensors::tensor::TensorView::new(
                safetensors::Dtype::F32,
                s.clone(),
                bytemuck::cast_slice(d),
            )
            .map_err(|e| Error::Checkpoint {
                file: path.display().to_string(),
                msg: format!("tensor '{n}': {e}"),
            })?;
            Ok((n.clone(), view))
        })
        .collect::<Result<_>>()?;
    safetensors::serialize_to_file(views, None, path).map_err(|e| Error::Checkpoint {
        file: path.display().to_string(),
        msg: format!("writing: {e}"),
    })
}
