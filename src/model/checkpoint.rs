//! safetensors checkpoints under the reference implementations' parameter names: one file, or
//! the shards of a Hugging Face index (`model.safetensors.index.json`). Files are memory-mapped
//! and tensors converted one at a time as they are uploaded, so loading a model holds at most
//! one tensor's converted copy on the host, never a second copy of the file.

use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::path::Path;
use std::sync::{Arc, Mutex};

use crate::context::Context;
use crate::error::{Error, Result};
use crate::tensor::{DType, Tensor};

/// Values `range` (flat element indices) of a tensor made on demand (random weights).
pub type Fill = Arc<dyn Fn(Range<usize>) -> Vec<f32> + Send + Sync>;

/// The bytes of the files a checkpoint reads from.
enum Image {
    #[cfg(not(target_arch = "wasm32"))]
    Mapped(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl Image {
    fn bytes(&self) -> &[u8] {
        match self {
            #[cfg(not(target_arch = "wasm32"))]
            Image::Mapped(m) => m,
            Image::Owned(v) => v,
        }
    }
}

enum Source {
    /// Bytes `range` of image `file`.
    Stored { file: usize, range: Range<usize> },
    /// f32 values computed when read.
    Fill(Fill),
}

struct Entry {
    dtype: safetensors::Dtype,
    shape: Vec<usize>,
    source: Source,
}

/// The tensors of a checkpoint (mapped files, or made in memory).
pub struct Checkpoint {
    file: String,
    images: Vec<Image>,
    tensors: HashMap<String, Entry>,
    /// Names read so far, so that a loader can refuse tensors it did not expect.
    used: Mutex<HashSet<String>>,
}

/// The tensor table of one safetensors image: (name, dtype, shape, byte range of the data).
type Table = Vec<(String, safetensors::Dtype, Vec<usize>, Range<usize>)>;

fn table(file: &str, bytes: &[u8]) -> Result<Table> {
    let bad = |e: String| Error::Checkpoint {
        file: file.into(),
        msg: format!("not a valid safetensors file: {e}"),
    };
    // Validates the header and every tensor's extent against the file (what deserialize checks).
    let st = safetensors::SafeTensors::deserialize(bytes).map_err(|e| bad(e.to_string()))?;
    let (header_len, meta) =
        safetensors::SafeTensors::read_metadata(bytes).map_err(|e| bad(e.to_string()))?;
    let base = 8 + header_len;
    let mut out = Vec::new();
    for (name, view) in st.tensors() {
        let info = meta
            .info(&name)
            .ok_or_else(|| bad(format!("tensor '{name}' has no header entry")))?;
        let (a, b) = info.data_offsets;
        out.push((
            name,
            view.dtype(),
            view.shape().to_vec(),
            base + a..base + b,
        ));
    }
    Ok(out)
}

impl Checkpoint {
    /// A safetensors file, memory-mapped. The file must not be modified in place or truncated
    /// while the checkpoint (or a model loading from it) is alive: see the note in `map_file`.
    pub fn open(path: &Path) -> Result<Checkpoint> {
        let name = path.display().to_string();
        let image = map_file(path)?;
        let mut ck = Self::empty(&name);
        ck.add_image(&name, image, None)?;
        Ok(ck)
    }

    /// The weights of a model folder: `model.safetensors`, or the shards named by
    /// `model.safetensors.index.json` (its `weight_map`: tensor name → shard file). A shard the
    /// index names but the folder lacks, a tensor listed under one shard but stored in another,
    /// and a shard tensor the index does not list are errors naming the file.
    pub fn open_dir(dir: &Path) -> Result<Checkpoint> {
        let single = dir.join("model.safetensors");
        let index = dir.join("model.safetensors.index.json");
        if single.exists() || !index.exists() {
            return Self::open(&single);
        }
        let iname = index.display().to_string();
        let err = |msg: String| Error::Checkpoint {
            file: iname.clone(),
            msg,
        };
        let text = std::fs::read_to_string(&index).map_err(|source| Error::Io {
            path: iname.clone(),
            source,
        })?;
        let json: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| err(format!("not valid JSON: {e}")))?;
        let map = json
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| err("no 'weight_map' object (tensor name → shard file)".into()))?;
        let mut shards: Vec<String> = Vec::new();
        let mut listed: HashMap<String, String> = HashMap::new();
        for (tensor, f) in map {
            let f = f
                .as_str()
                .ok_or_else(|| err(format!("weight_map['{tensor}'] is not a file name")))?;
            // Shards are plain names inside the folder: no paths out of it.
            let mut parts = Path::new(f).components();
            let plain = matches!(
                (parts.next(), parts.next()),
                (Some(std::path::Component::Normal(_)), None)
            );
            if !plain {
                return Err(err(format!(
                    "weight_map['{tensor}'] = '{f}' is not a file name in the model folder"
                )));
            }
            if !shards.iter().any(|s| s == f) {
                shards.push(f.to_string());
            }
            listed.insert(tensor.clone(), f.to_string());
        }
        if shards.is_empty() {
            return Err(err("the weight_map lists no tensors".into()));
        }
        shards.sort();
        if let Some(s) = shards.iter().find(|s| !dir.join(s).exists()) {
            return Err(err(format!(
                "names shard '{s}', which is not in the folder: download it or fix the index"
            )));
        }
        let mut ck = Self::empty(&iname);
        for s in &shards {
            let path = dir.join(s);
            let image = map_file(&path)?;
            ck.add_image(&path.display().to_string(), image, Some((s, &listed)))?;
        }
        if let Some((t, f)) = listed.iter().find(|(t, _)| !ck.tensors.contains_key(*t)) {
            return Err(err(format!(
                "lists tensor '{t}' in shard '{f}', which does not hold it"
            )));
        }
        Ok(ck)
    }

    fn empty(file: &str) -> Checkpoint {
        Checkpoint {
            file: file.into(),
            images: Vec::new(),
            tensors: HashMap::new(),
            used: Mutex::default(),
        }
    }

    /// Adds the tensors of one image; with an index, each must be listed under this shard.
    fn add_image(
        &mut self,
        name: &str,
        image: Image,
        index: Option<(&str, &HashMap<String, String>)>,
    ) -> Result<()> {
        let t = table(name, image.bytes())?;
        let file = self.images.len();
        for (tensor, dtype, shape, range) in t {
            if let Some((shard, listed)) = index {
                if listed.get(&tensor).map(String::as_str) != Some(shard) {
                    return Err(Error::Checkpoint {
                        file: name.into(),
                        msg: format!(
                            "holds tensor '{tensor}', which the index {}",
                            match listed.get(&tensor) {
                                Some(other) => format!("puts in shard '{other}'"),
                                None => "does not list".into(),
                            }
                        ),
                    });
                }
            }
            if self.tensors.contains_key(&tensor) {
                return Err(Error::Checkpoint {
                    file: name.into(),
                    msg: format!("tensor '{tensor}' is stored twice"),
                });
            }
            self.tensors.insert(
                tensor,
                Entry {
                    dtype,
                    shape,
                    source: Source::Stored { file, range },
                },
            );
        }
        self.images.push(image);
        Ok(())
    }

    /// Parses a safetensors image held in memory; `file` names it in error messages.
    pub fn from_bytes(file: &str, bytes: &[u8]) -> Result<Checkpoint> {
        let mut ck = Self::empty(file);
        ck.add_image(file, Image::Owned(bytes.to_vec()), None)?;
        Ok(ck)
    }

    /// A checkpoint built in memory from (name, shape, f32 data), named `file` in errors.
    pub fn from_f32(
        file: &str,
        tensors: Vec<(String, Vec<usize>, Vec<f32>)>,
    ) -> Result<Checkpoint> {
        let lazy = tensors
            .into_iter()
            .map(|(name, shape, data)| {
                if shape.iter().product::<usize>() != data.len() {
                    return Err(Error::Checkpoint {
                        file: file.into(),
                        msg: format!(
                            "tensor '{name}': shape {shape:?} does not hold {} values",
                            data.len()
                        ),
                    });
                }
                let data = Arc::new(data);
                let fill: Fill = Arc::new(move |r: Range<usize>| data[r].to_vec());
                Ok((name, shape, fill))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self::from_fills(file, lazy))
    }

    /// A checkpoint whose tensors are computed when read (random weights of any size without
    /// holding them all on the host).
    pub fn from_fills(file: &str, tensors: Vec<(String, Vec<usize>, Fill)>) -> Checkpoint {
        let mut ck = Self::empty(file);
        for (name, shape, fill) in tensors {
            ck.tensors.insert(
                name,
                Entry {
                    dtype: safetensors::Dtype::F32,
                    shape,
                    source: Source::Fill(fill),
                },
            );
        }
        ck
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

    /// Bytes the tensors take on the GPU when stored as `dtype` (what loading the whole
    /// checkpoint would upload); with `matrices_only`, the 2-D ones (projection weights).
    pub fn upload_bytes(&self, dtype: DType, matrices_only: bool) -> u64 {
        self.tensors
            .values()
            .filter(|e| !matrices_only || e.shape.len() == 2)
            .map(|e| {
                e.shape
                    .iter()
                    .fold(dtype.size() as u64, |a, &d| a.saturating_mul(d as u64))
            })
            .fold(0u64, u64::saturating_add)
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

    /// The entry, checked against `shape` (`None`: any), marked as used.
    fn entry(&self, name: &str, shape: Option<&[usize]>) -> Result<&Entry> {
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
        Ok(e)
    }

    /// A floating-point tensor converted to f32, checked against `shape` (pass `None` to accept
    /// any shape). Integer tensors are refused: a weight stored as integers is a broken export.
    pub fn f32(&self, name: &str, shape: Option<&[usize]>) -> Result<(Vec<f32>, Vec<usize>)> {
        let e = self.entry(name, shape)?;
        let n = e.shape.iter().product();
        Ok((self.convert(name, e, 0..n, false)?, e.shape.clone()))
    }

    /// Like [`Checkpoint::f32`] but also accepts integer tensors (token ids, positions).
    pub fn numbers(&self, name: &str, shape: Option<&[usize]>) -> Result<(Vec<f32>, Vec<usize>)> {
        let e = self.entry(name, shape)?;
        let n = e.shape.iter().product();
        Ok((self.convert(name, e, 0..n, true)?, e.shape.clone()))
    }

    /// Uploads a float tensor of shape `shape` as `dtype`, converting on the way (an f16 file
    /// uploaded as f16 is copied without passing through f32).
    pub fn upload(
        &self,
        ctx: &Context,
        name: &str,
        shape: &[usize],
        dtype: DType,
    ) -> Result<Tensor> {
        let e = self.entry(name, Some(shape))?;
        let n = shape.iter().product();
        self.upload_range(ctx, name, e, 0..n, shape, dtype)
    }

    /// Rows `rows` of a float matrix of shape `[n, k]`, uploaded as `dtype` `[rows.len(), k]`
    /// (one block of a table larger than a binding).
    pub fn upload_rows(
        &self,
        ctx: &Context,
        name: &str,
        shape: [usize; 2],
        rows: Range<usize>,
        dtype: DType,
    ) -> Result<Tensor> {
        let e = self.entry(name, Some(&shape))?;
        if rows.start > rows.end || rows.end > shape[0] {
            return Err(self.err(format!(
                "rows {rows:?} of tensor '{name}' with {} rows",
                shape[0]
            )));
        }
        let k = shape[1];
        self.upload_range(
            ctx,
            name,
            e,
            rows.start * k..rows.end * k,
            &[rows.len(), k],
            dtype,
        )
    }

    fn upload_range(
        &self,
        ctx: &Context,
        name: &str,
        e: &Entry,
        range: Range<usize>,
        shape: &[usize],
        dtype: DType,
    ) -> Result<Tensor> {
        if ctx.resolve_dtype(dtype) == DType::F16 {
            if let Source::Stored { file, range: bytes } = &e.source {
                if e.dtype == safetensors::Dtype::F16 {
                    let b = &self.images[*file].bytes()
                        [bytes.start + 2 * range.start..bytes.start + 2 * range.end];
                    return ctx
                        .upload_f16(&bytemuck::pod_collect_to_vec::<u8, half::f16>(b), shape);
                }
            }
        }
        let v = self.convert(name, e, range, false)?;
        if ctx.resolve_dtype(dtype) == DType::F16 {
            // f16 tops out at 65504: a larger weight would silently become infinite.
            if let Some(x) = v.iter().find(|x| x.is_finite() && x.abs() > 65504.0) {
                return Err(self.err(format!(
                    "tensor '{name}' holds {x}, beyond f16's range (±65504): load it as f32"
                )));
            }
        }
        ctx.upload(&v, shape, dtype)
    }

    /// Elements `range` of a tensor as f32.
    fn convert(
        &self,
        name: &str,
        e: &Entry,
        range: Range<usize>,
        integers: bool,
    ) -> Result<Vec<f32>> {
        let (file, bytes) = match &e.source {
            Source::Fill(f) => return Ok(f(range)),
            Source::Stored { file, range } => (*file, range),
        };
        use safetensors::Dtype as D;
        let size = e.dtype.bitsize() / 8;
        let data = &self.images[file].bytes()
            [bytes.start + size * range.start..bytes.start + size * range.end];
        let v: Vec<f32> = match e.dtype {
            D::F32 => bytemuck::pod_collect_to_vec::<u8, f32>(data),
            D::F64 => bytemuck::pod_collect_to_vec::<u8, f64>(data)
                .iter()
                .map(|&x| x as f32)
                .collect(),
            D::F16 => bytemuck::pod_collect_to_vec::<u8, half::f16>(data)
                .iter()
                .map(|x| x.to_f32())
                .collect(),
            D::BF16 => bytemuck::pod_collect_to_vec::<u8, half::bf16>(data)
                .iter()
                .map(|x| x.to_f32())
                .collect(),
            D::I64 if integers => bytemuck::pod_collect_to_vec::<u8, i64>(data)
                .iter()
                .map(|&x| x as f32)
                .collect(),
            D::I32 if integers => bytemuck::pod_collect_to_vec::<u8, i32>(data)
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
        Ok(v)
    }

    /// A tensor in f64 (exact for f64 tensors: used to compare with the golden `*_f64` outputs).
    pub fn f64(&self, name: &str) -> Result<(Vec<f64>, Vec<usize>)> {
        let e = self.entry(name, None)?;
        if let (safetensors::Dtype::F64, Source::Stored { file, range }) = (e.dtype, &e.source) {
            return Ok((
                bytemuck::pod_collect_to_vec::<u8, f64>(&self.images[*file].bytes()[range.clone()]),
                e.shape.clone(),
            ));
        }
        let (v, s) = self.f32(name, None)?;
        Ok((v.iter().map(|&x| x as f64).collect(), s))
    }
}

fn map_file(path: &Path) -> Result<Image> {
    let io = |source| Error::Io {
        path: path.display().to_string(),
        source,
    };
    // A page has no files to map: it fetches them and passes the bytes (`Checkpoint::from_bytes`).
    #[cfg(target_arch = "wasm32")]
    return std::fs::read(path).map(Image::Owned).map_err(io);
    #[cfg(not(target_arch = "wasm32"))]
    {
        let f = std::fs::File::open(path).map_err(io)?;
        // SAFETY: the map is read-only and lives as long as the checkpoint; chunkwise never
        // writes the file. The slices read from it assume nobody else does either: a file
        // modified in place while mapped is undefined behaviour for those reads, and one
        // truncated under them ends the process with SIGBUS. Both hold for any program mapping
        // model weights (llama.cpp, safetensors' own loaders); writers that replace the file (a
        // new file renamed over it, as scripts/convert_checkpoint.py does) are safe. See
        // `Checkpoint::open`.
        let m = unsafe { memmap2::Mmap::map(&f) }.map_err(io)?;
        Ok(Image::Mapped(m))
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

/// Resets the peak [`peak_host_bytes`] reports to the current resident size (Linux; a no-op
/// elsewhere), so that a peak can be measured per model.
pub fn reset_peak_host_bytes() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Peak resident memory of this process since it started or since
/// [`reset_peak_host_bytes`], in bytes (Linux `VmHWM`; `None` elsewhere).
pub fn peak_host_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}
