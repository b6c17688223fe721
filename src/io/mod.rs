//! safetensors files: a [`StateDict`] (typed tensors + string metadata), a [`ModelFile`] that
//! reads a file's tensors on demand, and writers that never destroy or hijack an output.
//!
//! **Reading** ([`read`](ModelFile)): the 8-byte header length (at most 100 MB), then the header,
//! validated as it is parsed (see [`header`]: known dtypes, at most 64 dimensions, byte sizes equal
//! to shape × dtype, byte ranges that tile the data in order), then exactly the byte ranges of the
//! tensors asked for, each into a buffer allocated fallibly ([`Error::OutOfMemory`]). No read
//! runs "until EOF" and nothing is memory-mapped, so `/dev/zero`, `/dev/urandom` or a huge file
//! with a bad header are refused after a few bytes, and loading one module
//! ([`ModelFile::load_module`], [`StateDict::load_prefix`]) reads only that module's bytes. A
//! file that lies is an [`Error::SafeTensorsFile`] ([`Error::SafeTensors`] for bytes in memory),
//! never a panic or a huge allocation. Paths are `impl AsRef<Path>`: any name the OS accepts.
//!
//! **Writing** ([`StateDict::save`], [`save_tensors`]): the header, then each tensor's bytes
//! streamed from its memory; to a temporary file renamed over a regular output, or through a
//! device or FIFO; see [Temporary files](#temporary-files) below and docs/file-format.md.
//!
//! # Temporary files
//!
//! Saving to a path that is a regular file (or does not exist yet) writes a temporary file in
//! the same directory and renames it over the path once it is complete and synced, so the path
//! holds the old or the new content at every moment. The temporary file is named
//! `.<name>.qconv-tmp-<10 random letters or digits>` (`<name>` is the output's file name,
//! shortened if needed to keep within 255 bytes) and created exclusively (`O_CREAT|O_EXCL`:
//! never through a planted symbolic link). It is removed on every error; only a process killed
//! while writing (`kill -9`, power loss) leaves one behind. qconv never deletes temporary files
//! it did not create in the same call; leftovers can be removed by hand, e.g.
//! `find DIR -name '.*.qconv-tmp-*' -mmin +60 -delete`. A symbolic link as output is followed
//! and its final target replaced (the link stays); a character device or FIFO is written
//! through (as `cp` does); directories, block devices and sockets are refused.

pub(crate) mod atomic;
pub mod header;
mod read;
mod write;

use std::collections::BTreeMap;
use std::path::Path;

use half::{bf16, f16};

use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::tensor::Tensor;

pub use header::TensorInfo;
pub use read::ModelFile;
pub use write::save_tensors;
use write::{DataRef, Layout};

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

    /// Number of elements.
    pub fn len(&self) -> usize {
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

    /// `true` when there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
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

    /// Converts an activation tensor (f32/f16/bf16; a device tensor is downloaded first).
    ///
    /// Panics only if the copy cannot be allocated or downloaded; see
    /// [`try_from_tensor`](Self::try_from_tensor).
    pub fn from_tensor(t: &Tensor) -> Self {
        match Self::try_from_tensor(t) {
            Ok(s) => s,
            Err(e) => panic!("StoredTensor::from_tensor: {e}"),
        }
    }

    /// Converts an activation tensor (one copy, allocated fallibly: [`Error::OutOfMemory`]). To
    /// write tensors to a file without any copy, use [`save_tensors`].
    pub fn try_from_tensor(t: &Tensor) -> Result<Self> {
        let host;
        let t = if t.device().is_cpu() {
            t
        } else {
            host = t.to_device(crate::tensor::Device::Cpu)?;
            &host
        };
        let data = match t.dtype() {
            DType::F32 => StoredData::F32(t.to_vec()?),
            DType::F16 => StoredData::F16(t.to_vec()?),
            DType::BF16 => StoredData::BF16(t.to_vec()?),
        };
        Ok(StoredTensor { shape: t.shape().to_vec(), data })
    }

    /// Converts to an activation tensor (a copy); float32/float16/bfloat16 only.
    pub fn to_tensor(&self, name: &str) -> Result<Tensor> {
        match &self.data {
            StoredData::F32(v) => Tensor::from_slice(v, &self.shape),
            StoredData::F16(v) => Tensor::from_slice(v, &self.shape),
            StoredData::BF16(v) => Tensor::from_slice(v, &self.shape),
            other => Err(not_float(name, other)),
        }
    }

    /// Converts to an activation tensor without copying the elements (they move into the
    /// tensor); float32/float16/bfloat16 only.
    pub fn into_tensor(self, name: &str) -> Result<Tensor> {
        match self.data {
            StoredData::F32(v) => Tensor::from_vec(v, &self.shape),
            StoredData::F16(v) => Tensor::from_vec(v, &self.shape),
            StoredData::BF16(v) => Tensor::from_vec(v, &self.shape),
            other => Err(not_float(name, &other)),
        }
    }
}

fn not_float(name: &str, d: &StoredData) -> Error {
    Error::StateDictValue {
        key: name.to_string(),
        rule: format!("expected a float32, float16 or bfloat16 tensor, found {}", d.dtype_name()),
    }
}

/// Every `P` with a `Pmodule` key (sorted).
pub(crate) fn module_prefixes_of(metadata: &BTreeMap<String, String>) -> Vec<String> {
    metadata.keys().filter_map(|k| k.strip_suffix("module").map(str::to_string)).collect()
}

/// Named tensors plus string metadata: the content of one safetensors file.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StateDict {
    /// Tensors by full key.
    pub tensors: BTreeMap<String, StoredTensor>,
    /// String metadata by full key.
    pub metadata: BTreeMap<String, String>,
}

impl StateDict {
    /// An empty state dict.
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses safetensors bytes (errors are [`Error::SafeTensors`]).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        ModelFile::from_bytes(bytes)?.load_all()
    }

    /// Reads a whole safetensors file (the file is only read, never modified). The file must end
    /// where its header says. To read one module of a large file, use
    /// [`load_prefix`](Self::load_prefix) or [`ModelFile`].
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        ModelFile::open(path)?.load_all()
    }

    /// Reads the tensors and metadata whose keys start with `prefix` (any depth below it), and
    /// nothing else: the other tensors' bytes are not read, so they may even be missing (a
    /// truncated file) or garbage.
    pub fn load_prefix(path: impl AsRef<Path>, prefix: &str) -> Result<Self> {
        ModelFile::open(path)?.load(|k| k.starts_with(prefix))
    }

    fn layout(&self) -> Result<Layout<'_>> {
        let entries =
            self.tensors.iter().map(|(k, t)| (k.as_str(), t.shape.as_slice(), DataRef::of(&t.data))).collect();
        Layout::new(entries, &self.metadata)
    }

    /// Serialises to safetensors bytes (one buffer of the file's size, allocated fallibly).
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let layout = self.layout()?;
        let len =
            usize::try_from(layout.file_len()).map_err(|_| Error::oom::<u8>("the safetensors bytes", usize::MAX))?;
        let mut out = crate::alloc::try_with_capacity(len, || "the safetensors bytes".into())?;
        layout.write(&mut out, &mut write::scratch()?).map_err(|e| Error::SafeTensors(e.to_string()))?;
        Ok(out)
    }

    /// Writes a safetensors file, streaming each tensor from memory (the file is never whole in
    /// memory). A regular file (or a new one) is replaced atomically: a temporary file in the
    /// same folder, synced and then renamed over `path`, so a crash never leaves a half-written
    /// file; a symbolic link is followed; a character device or FIFO is written through. See
    /// [the module documentation](self#temporary-files) for the temporary names.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        self.layout()?.save(path.as_ref())
    }

    /// Inserts an activation tensor under `key` (a copy; see [`StoredTensor::from_tensor`]).
    pub fn insert_tensor(&mut self, key: impl Into<String>, t: &Tensor) {
        self.tensors.insert(key.into(), StoredTensor::from_tensor(t));
    }

    /// The activation tensor under `key` (a copy).
    pub fn tensor(&self, key: &str) -> Result<Tensor> {
        let t = self.tensors.get(key).ok_or_else(|| Error::StateDictKeys {
            prefix: String::new(),
            missing: vec![key.to_string()],
            unexpected: vec![],
        })?;
        t.to_tensor(key)
    }

    /// Removes the activation tensor under `key` and returns it without copying its elements.
    pub fn take_tensor(&mut self, key: &str) -> Result<Tensor> {
        let t = self.tensors.remove(key).ok_or_else(|| Error::StateDictKeys {
            prefix: String::new(),
            missing: vec![key.to_string()],
            unexpected: vec![],
        })?;
        t.into_tensor(key)
    }

    /// Module prefixes present in the file: every `P` with a `Pmodule` metadata entry (sorted).
    pub fn module_prefixes(&self) -> Vec<String> {
        module_prefixes_of(&self.metadata)
    }
}
