//! safetensors files: a [`StateDict`] (typed tensors + string metadata) read from bytes or a file
//! and written atomically (temporary file + rename).
//!
//! Only what a file declares is trusted after the safetensors layer has validated its header (tensor
//! extents are checked against the buffer before any element is copied, with overflow-checked
//! arithmetic), so a truncated or lying file is an [`Error::SafeTensors`], never a panic or a huge
//! allocation.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::Path;

use half::{bf16, f16};
use safetensors::tensor::{Dtype, TensorView};

use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// Element data of a stored tensor, in the file's dtype.
#[derive(Clone, Debug, PartialEq)]
pub enum StoredData {
    /// float32.
    F32(Vec<f32>),
    /// float64.
    F64(Vec<f64>),
    /// float16.
    F16(Vec<f16>),
    /// bfloat16.
    BF16(Vec<bf16>),
    /// int32.
    I32(Vec<i32>),
    /// int64.
    I64(Vec<i64>),
    /// int8.
    I8(Vec<i8>),
    /// uint8.
    U8(Vec<u8>),
}

impl StoredData {
    /// The safetensors dtype name (`"F32"`, `"I64"`, ...).
    pub fn dtype_name(&self) -> &'static str {
        match self {
            StoredData::F32(_) => "F32",
            StoredData::F64(_) => "F64",
            StoredData::F16(_) => "F16",
            StoredData::BF16(_) => "BF16",
            StoredData::I32(_) => "I32",
            StoredData::I64(_) => "I64",
            StoredData::I8(_) => "I8",
            StoredData::U8(_) => "U8",
        }
    }

    fn len(&self) -> usize {
        match self {
            StoredData::F32(v) => v.len(),
            StoredData::F64(v) => v.len(),
            StoredData::F16(v) => v.len(),
            StoredData::BF16(v) => v.len(),
            StoredData::I32(v) => v.len(),
            StoredData::I64(v) => v.len(),
            StoredData::I8(v) => v.len(),
            StoredData::U8(v) => v.len(),
        }
    }

    fn st_dtype(&self) -> Dtype {
        match self {
            StoredData::F32(_) => Dtype::F32,
            StoredData::F64(_) => Dtype::F64,
            StoredData::F16(_) => Dtype::F16,
            StoredData::BF16(_) => Dtype::BF16,
            StoredData::I32(_) => Dtype::I32,
            StoredData::I64(_) => Dtype::I64,
            StoredData::I8(_) => Dtype::I8,
            StoredData::U8(_) => Dtype::U8,
        }
    }

    fn to_le_bytes(&self) -> Vec<u8> {
        fn flat<const N: usize, T: Copy>(v: &[T], f: impl Fn(T) -> [u8; N]) -> Vec<u8> {
            v.iter().flat_map(|&x| f(x)).collect()
        }
        match self {
            StoredData::F32(v) => flat(v, f32::to_le_bytes),
            StoredData::F64(v) => flat(v, f64::to_le_bytes),
            StoredData::F16(v) => flat(v, f16::to_le_bytes),
            StoredData::BF16(v) => flat(v, bf16::to_le_bytes),
            StoredData::I32(v) => flat(v, i32::to_le_bytes),
            StoredData::I64(v) => flat(v, i64::to_le_bytes),
            StoredData::I8(v) => flat(v, i8::to_le_bytes),
            StoredData::U8(v) => v.clone(),
        }
    }
}

/// A tensor as stored in a file: shape plus typed data.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredTensor {
    /// Shape (`[]` for a scalar).
    pub shape: Vec<usize>,
    /// Elements.
    pub data: StoredData,
}

impl StoredTensor {
    /// Wraps shape and data, checking that they agree.
    pub fn new(shape: Vec<usize>, data: StoredData) -> Result<Self> {
        let n = crate::tensor::checked_numel(&shape)?;
        if n != data.len() {
            return Err(Error::shape("stored tensor", &shape, format!("it holds {} elements", data.len())));
        }
        Ok(StoredTensor { shape, data })
    }

    /// Converts an activation tensor (f32/f16/bf16).
    pub fn from_tensor(t: &Tensor) -> Self {
        let data = match t.dtype() {
            DType::F32 => StoredData::F32(t.to_vec::<f32>().unwrap_or_default()),
            DType::F16 => StoredData::F16(t.to_vec::<f16>().unwrap_or_default()),
            DType::BF16 => StoredData::BF16(t.to_vec::<bf16>().unwrap_or_default()),
        };
        StoredTensor { shape: t.shape().to_vec(), data }
    }

    /// Converts to an activation tensor; float32/float16/bfloat16 only.
    pub fn to_tensor(&self, name: &str) -> Result<Tensor> {
        match &self.data {
            StoredData::F32(v) => Tensor::from_slice(v, &self.shape),
            StoredData::F16(v) => Tensor::from_slice(v, &self.shape),
            StoredData::BF16(v) => Tensor::from_slice(v, &self.shape),
            other => Err(Error::StateDictValue {
                key: name.to_string(),
                rule: format!("expected a float32, float16 or bfloat16 tensor, found {}", other.dtype_name()),
            }),
        }
    }
}

/// Named tensors plus string metadata: the content of one safetensors file.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StateDict {
    /// Tensors by full key.
    pub tensors: BTreeMap<String, StoredTensor>,
    /// String metadata by full key.
    pub metadata: BTreeMap<String, String>,
}

fn le<const N: usize, T>(bytes: &[u8], f: impl Fn([u8; N]) -> T) -> Vec<T> {
    bytes.chunks_exact(N).map(|c| f(c.try_into().expect("chunks_exact yields N bytes"))).collect()
}

fn stored_from_view(name: &str, v: &TensorView<'_>) -> Result<StoredTensor> {
    let b = v.data();
    let data = match v.dtype() {
        Dtype::F32 => StoredData::F32(le(b, f32::from_le_bytes)),
        Dtype::F64 => StoredData::F64(le(b, f64::from_le_bytes)),
        Dtype::F16 => StoredData::F16(le(b, f16::from_le_bytes)),
        Dtype::BF16 => StoredData::BF16(le(b, bf16::from_le_bytes)),
        Dtype::I32 => StoredData::I32(le(b, i32::from_le_bytes)),
        Dtype::I64 => StoredData::I64(le(b, i64::from_le_bytes)),
        Dtype::I8 => StoredData::I8(le(b, i8::from_le_bytes)),
        Dtype::U8 => StoredData::U8(b.to_vec()),
        other => {
            return Err(Error::StateDictValue {
                key: name.to_string(),
                rule: format!("unsupported tensor dtype {other:?}"),
            })
        }
    };
    StoredTensor::new(v.shape().to_vec(), data)
}

impl StateDict {
    /// An empty state dict.
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses safetensors bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let (_, meta) = safetensors::SafeTensors::read_metadata(bytes)?;
        let st = safetensors::SafeTensors::deserialize(bytes)?;
        let mut sd = StateDict::new();
        for (name, view) in st.iter() {
            sd.tensors.insert(name.to_string(), stored_from_view(name, &view)?);
        }
        if let Some(m) = meta.metadata() {
            sd.metadata.extend(m.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        Ok(sd)
    }

    /// Reads a safetensors file (the file is only read, never modified).
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes =
            std::fs::read(path).map_err(|source| Error::Io { op: "reading", path: path.to_path_buf(), source })?;
        Self::from_bytes(&bytes)
    }

    /// Serialises to safetensors bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        // `StoredTensor`'s fields are public: check each shape against its data before handing it
        // to safetensors (which would overflow or reject it less clearly).
        for (k, t) in &self.tensors {
            let n = crate::tensor::checked_numel(&t.shape)?;
            if n != t.data.len() {
                return Err(Error::StateDictValue {
                    key: k.clone(),
                    rule: format!("shape {:?} needs {n} elements but the tensor holds {}", t.shape, t.data.len()),
                });
            }
        }
        let bytes: Vec<(String, Vec<u8>, Dtype, Vec<usize>)> = self
            .tensors
            .iter()
            .map(|(k, t)| (k.clone(), t.data.to_le_bytes(), t.data.st_dtype(), t.shape.clone()))
            .collect();
        let mut views = Vec::with_capacity(bytes.len());
        for (k, b, dt, shape) in &bytes {
            views.push((k.clone(), TensorView::new(*dt, shape.clone(), b)?));
        }
        let meta: Option<HashMap<String, String>> =
            if self.metadata.is_empty() { None } else { Some(self.metadata.clone().into_iter().collect()) };
        Ok(safetensors::serialize(views, meta)?)
    }

    /// Writes a safetensors file atomically: a temporary file in the same folder, flushed and then
    /// renamed over `path`, so a crash never leaves a half-written file.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let bytes = self.to_bytes()?;
        let io = |op, source| Error::Io { op, path: path.to_path_buf(), source };
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => std::path::PathBuf::from("."),
        };
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "out".into());
        let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
        let result = (|| {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)
        })();
        if let Err(e) = result {
            let _ = std::fs::remove_file(&tmp);
            return Err(io("writing", e));
        }
        Ok(())
    }

    /// Inserts an activation tensor under `key`.
    pub fn insert_tensor(&mut self, key: impl Into<String>, t: &Tensor) {
        self.tensors.insert(key.into(), StoredTensor::from_tensor(t));
    }

    /// The activation tensor under `key`.
    pub fn tensor(&self, key: &str) -> Result<Tensor> {
        let t = self.tensors.get(key).ok_or_else(|| Error::StateDictKeys {
            prefix: String::new(),
            missing: vec![key.to_string()],
            unexpected: vec![],
        })?;
        t.to_tensor(key)
    }

    /// Module prefixes present in the file: every `P` with a `Pmodule` metadata entry (sorted).
    pub fn module_prefixes(&self) -> Vec<String> {
        self.metadata.keys().filter_map(|k| k.strip_suffix("module").map(str::to_string)).collect()
    }
}
