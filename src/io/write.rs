//! Writing safetensors: the header, then each tensor's bytes streamed from its memory in small
//! chunks (no copy of a tensor, no whole file in memory), to any [`Write`] or, through
//! [`super::atomic`], to a path.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::Path;

use half::{bf16, f16};

use super::atomic::write_output;
use super::header::header_json;
use super::StoredData;
use crate::error::{Error, Result};
use crate::tensor::{DType, Tensor};

/// Bytes converted at a time.
const CHUNK: usize = 64 * 1024;

/// A borrowed view of tensor elements, in one of the stored dtypes.
#[derive(Clone, Copy, Debug)]
pub(crate) enum DataRef<'a> {
    F32(&'a [f32]),
    F64(&'a [f64]),
    F16(&'a [f16]),
    BF16(&'a [bf16]),
    I32(&'a [i32]),
    I64(&'a [i64]),
    I8(&'a [i8]),
    U8(&'a [u8]),
}

impl<'a> DataRef<'a> {
    pub(crate) fn of(d: &'a StoredData) -> Self {
        match d {
            StoredData::F32(v) => DataRef::F32(v),
            StoredData::F64(v) => DataRef::F64(v),
            StoredData::F16(v) => DataRef::F16(v),
            StoredData::BF16(v) => DataRef::BF16(v),
            StoredData::I32(v) => DataRef::I32(v),
            StoredData::I64(v) => DataRef::I64(v),
            StoredData::I8(v) => DataRef::I8(v),
            StoredData::U8(v) => DataRef::U8(v),
        }
    }

    /// The elements of a host tensor ([`Error::Unsupported`] for a device tensor).
    pub(crate) fn of_tensor(t: &'a Tensor) -> Result<Self> {
        Ok(match t.dtype() {
            DType::F32 => DataRef::F32(t.as_slice()?),
            DType::F16 => DataRef::F16(t.as_slice()?),
            DType::BF16 => DataRef::BF16(t.as_slice()?),
        })
    }

    fn len(&self) -> usize {
        match self {
            DataRef::F32(v) => v.len(),
            DataRef::F64(v) => v.len(),
            DataRef::F16(v) => v.len(),
            DataRef::BF16(v) => v.len(),
            DataRef::I32(v) => v.len(),
            DataRef::I64(v) => v.len(),
            DataRef::I8(v) => v.len(),
            DataRef::U8(v) => v.len(),
        }
    }

    fn elem_size(&self) -> usize {
        match self {
            DataRef::F64(_) | DataRef::I64(_) => 8,
            DataRef::F32(_) | DataRef::I32(_) => 4,
            DataRef::F16(_) | DataRef::BF16(_) => 2,
            DataRef::I8(_) | DataRef::U8(_) => 1,
        }
    }

    fn dtype_name(&self) -> &'static str {
        match self {
            DataRef::F32(_) => "F32",
            DataRef::F64(_) => "F64",
            DataRef::F16(_) => "F16",
            DataRef::BF16(_) => "BF16",
            DataRef::I32(_) => "I32",
            DataRef::I64(_) => "I64",
            DataRef::I8(_) => "I8",
            DataRef::U8(_) => "U8",
        }
    }

    /// Writes the elements little-endian, through `buf` (`CHUNK` bytes at a time).
    fn write_le(&self, w: &mut dyn Write, buf: &mut Vec<u8>) -> io::Result<()> {
        fn go<T: Copy, const N: usize>(
            v: &[T],
            w: &mut dyn Write,
            buf: &mut Vec<u8>,
            f: impl Fn(T) -> [u8; N],
        ) -> io::Result<()> {
            for chunk in v.chunks(CHUNK / N) {
                buf.clear();
                for &x in chunk {
                    buf.extend_from_slice(&f(x));
                }
                w.write_all(buf)?;
            }
            Ok(())
        }
        match *self {
            DataRef::F32(v) => go(v, w, buf, f32::to_le_bytes),
            DataRef::F64(v) => go(v, w, buf, f64::to_le_bytes),
            DataRef::F16(v) => go(v, w, buf, f16::to_le_bytes),
            DataRef::BF16(v) => go(v, w, buf, bf16::to_le_bytes),
            DataRef::I32(v) => go(v, w, buf, i32::to_le_bytes),
            DataRef::I64(v) => go(v, w, buf, i64::to_le_bytes),
            DataRef::I8(v) => go(v, w, buf, i8::to_le_bytes),
            DataRef::U8(v) => w.write_all(v),
        }
    }
}

/// Tensors (name, shape, data) and metadata, ready to be written as one safetensors file.
pub(crate) struct Layout<'a> {
    /// In file order: larger elements first (so every tensor starts aligned to its element size
    /// after the 8-byte-aligned header), then by name.
    entries: Vec<(&'a str, &'a [usize], DataRef<'a>)>,
    header: Vec<u8>,
    data_len: u64,
}

impl<'a> Layout<'a> {
    /// Checks every shape against its data (shapes of stored tensors are public fields) and
    /// builds the header.
    pub(crate) fn new(
        mut entries: Vec<(&'a str, &'a [usize], DataRef<'a>)>,
        metadata: &BTreeMap<String, String>,
    ) -> Result<Self> {
        for (name, shape, data) in &entries {
            let n = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
            if n != Some(data.len()) {
                return Err(Error::StateDictValue {
                    key: name.to_string(),
                    rule: match n {
                        Some(n) => format!(
                            "shape {} needs {n} elements but the tensor holds {}",
                            crate::error::Dims(shape),
                            data.len()
                        ),
                        None => format!(
                            "the element count of shape {} overflows usize (the tensor holds {})",
                            crate::error::Dims(shape),
                            data.len()
                        ),
                    },
                });
            }
            if shape.len() > super::header::MAX_DIMS {
                return Err(Error::StateDictValue {
                    key: name.to_string(),
                    rule: format!("a stored tensor has at most {} dimensions", super::header::MAX_DIMS),
                });
            }
        }
        entries.sort_by(|a, b| b.2.elem_size().cmp(&a.2.elem_size()).then(a.0.cmp(b.0)));
        let sized: Vec<(&str, &str, &[usize], u64)> =
            entries.iter().map(|(n, s, d)| (*n, d.dtype_name(), *s, (d.len() * d.elem_size()) as u64)).collect();
        let data_len = sized.iter().map(|e| e.3).sum();
        let header = header_json(&sized, metadata);
        if header.len() as u64 > super::header::MAX_HEADER {
            return Err(Error::Overflow(format!(
                "the safetensors header would be {} bytes, more than the format's {} (too many or too long names)",
                header.len(),
                super::header::MAX_HEADER
            )));
        }
        Ok(Layout { entries, header, data_len })
    }

    /// Bytes of the whole file.
    pub(crate) fn file_len(&self) -> u64 {
        8 + self.header.len() as u64 + self.data_len
    }

    /// Writes the file to `w` in writes of at most `CHUNK` bytes (plus the header), through
    /// `buf` (see [`scratch`]).
    pub(crate) fn write(&self, w: &mut dyn Write, buf: &mut Vec<u8>) -> io::Result<()> {
        w.write_all(&(self.header.len() as u64).to_le_bytes())?;
        w.write_all(&self.header)?;
        for (_, _, d) in &self.entries {
            d.write_le(w, buf)?;
        }
        Ok(())
    }

    /// Writes the file to `path` (see [`super::atomic`]). The stream is unbuffered: the data
    /// goes out in `CHUNK`-byte writes from one scratch buffer.
    pub(crate) fn save(&self, path: &Path) -> Result<()> {
        let mut buf = scratch()?;
        write_output(path, true, &mut |w| self.write(w, &mut buf)).map_err(|e| Error::io("writing", path, e))
    }
}

/// The conversion buffer of [`Layout::write`], allocated fallibly.
pub(crate) fn scratch() -> Result<Vec<u8>> {
    crate::alloc::try_with_capacity(CHUNK, || "the write buffer".into())
}

/// Writes `tensors` (host tensors, by name) and `metadata` to `path` as one safetensors file,
/// straight from the tensors' memory: no copy of any tensor is made and the file is never
/// whole in memory. The file is written like [`super::StateDict::save`] writes (temporary file
/// and rename for a regular file, through a device or FIFO, symbolic links followed).
///
/// Errors: [`Error::Unsupported`] for a device tensor (copy it to the host first),
/// [`Error::StateDictValue`] for a name given twice, [`Error::Io`] if writing fails (a
/// replaced file then keeps its old content).
pub fn save_tensors(
    path: impl AsRef<Path>,
    tensors: &[(&str, &Tensor)],
    metadata: &BTreeMap<String, String>,
) -> Result<()> {
    let mut entries = Vec::with_capacity(tensors.len());
    for (i, (name, t)) in tensors.iter().enumerate() {
        if tensors[..i].iter().any(|(n, _)| n == name) {
            return Err(Error::StateDictValue { key: name.to_string(), rule: "is given twice".into() });
        }
        entries.push((*name, t.shape(), DataRef::of_tensor(t)?));
    }
    Layout::new(entries, metadata)?.save(path.as_ref())
}
