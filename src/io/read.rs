//! [`ModelFile`]: a safetensors file opened for reading, its header validated, its tensors read
//! on demand.
//!
//! Reads are bounded: the header length first (at most 100 MB), then the header, parsed as it
//! arrives, then exactly the byte ranges of the tensors asked for, each into a buffer allocated
//! fallibly for the size its header entry declares. Nothing is read "until EOF" and nothing is
//! memory-mapped (a file truncated under a mapping would kill the process). Regular files are
//! read with seeks, so loading one module of a large file reads only that module's bytes;
//! pipes, FIFOs and character devices are read front to back, the bytes between the wanted
//! ranges skipped through a small buffer.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use half::{bf16, f16};

use super::header::{read_header, Header, HeaderError, TensorInfo};
use super::{StateDict, StoredData, StoredTensor};
use crate::alloc::{try_filled, try_with_capacity};
use crate::error::{Error, Quoted, Result};

/// Bytes read at a time while converting tensor data (and while skipping in a stream).
const CHUNK: usize = 64 * 1024;

/// A source of bytes: seekable (a regular file, bytes in memory) or a stream.
trait Source: Read {
    /// Moves to absolute offset `pos`; `None` when the source cannot seek.
    fn seek_to(&mut self, pos: u64) -> Option<std::io::Result<()>>;
}

struct Seekable<R>(R);

impl<R: Read> Read for Seekable<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(buf)
    }
}

impl<R: Read + Seek> Source for Seekable<R> {
    fn seek_to(&mut self, pos: u64) -> Option<std::io::Result<()>> {
        Some(self.0.seek(SeekFrom::Start(pos)).map(|_| ()))
    }
}

struct Stream<R>(R);

impl<R: Read> Read for Stream<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(buf)
    }
}

impl<R: Read> Source for Stream<R> {
    fn seek_to(&mut self, _: u64) -> Option<std::io::Result<()>> {
        None
    }
}

/// A safetensors file with a validated header; tensors are read when asked for.
///
/// ```no_run
/// # fn main() -> qconv::Result<()> {
/// let mut f = qconv::io::ModelFile::open("model.safetensors")?;
/// println!("{:?}", f.module_prefixes());
/// let sd = f.load_module("layer1.0.conv1.")?; // reads that module's tensors only
/// # Ok(()) }
/// ```
pub struct ModelFile<'a> {
    /// The file, for messages (`None`: bytes in memory).
    path: Option<PathBuf>,
    header: Header,
    src: Box<dyn Source + 'a>,
    /// Offset of the data section (`8 + header length`).
    data_start: u64,
    /// Offset in the data section the source is at.
    pos: u64,
    /// Length of the file when known (regular files, bytes).
    len: Option<u64>,
}

impl std::fmt::Debug for ModelFile<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelFile")
            .field("path", &self.path)
            .field("tensors", &self.header.tensors.len())
            .field("metadata", &self.header.metadata.len())
            .finish()
    }
}

impl ModelFile<'static> {
    /// Opens `path` (any path the OS accepts, UTF-8 or not) and reads and validates its header.
    /// Regular files are read with seeks; FIFOs, character devices and other streams front to
    /// back.
    ///
    /// Errors: [`Error::Io`] if the file cannot be opened or read, [`Error::SafeTensorsFile`] if
    /// its header breaks a rule of the format (see [`crate::io`]).
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let file = File::open(path).map_err(|e| Error::io("reading", path, e))?;
        let meta = file.metadata().map_err(|e| Error::io("reading", path, e))?;
        if meta.is_dir() {
            let e = std::io::Error::new(std::io::ErrorKind::IsADirectory, "is a directory");
            return Err(Error::io("reading", path, e));
        }
        // No buffering: the header is parsed through a small buffer of its own that never reads
        // past it, and tensor data is read in whole chunks.
        if meta.is_file() {
            Self::new(Some(path.to_path_buf()), Box::new(Seekable(file)), Some(meta.len()))
        } else {
            Self::new(Some(path.to_path_buf()), Box::new(Stream(file)), None)
        }
    }

    /// Reads a safetensors stream front to back (a pipe, a socket, a decompressor); `name`
    /// names it in messages.
    pub fn from_stream(reader: impl Read + 'static, name: impl Into<PathBuf>) -> Result<Self> {
        Self::new(Some(name.into()), Box::new(Stream(reader)), None)
    }

    /// Reads a seekable source (e.g. a file opened by the caller) of `len` bytes, seeking to the
    /// tensors asked for; `name` names it in messages.
    pub fn from_seekable(reader: impl Read + Seek + 'static, len: u64, name: impl Into<PathBuf>) -> Result<Self> {
        Self::new(Some(name.into()), Box::new(Seekable(reader)), Some(len))
    }
}

impl<'a> ModelFile<'a> {
    /// Safetensors bytes in memory (errors are [`Error::SafeTensors`]).
    pub fn from_bytes(bytes: &'a [u8]) -> Result<Self> {
        Self::new(None, Box::new(Seekable(std::io::Cursor::new(bytes))), Some(bytes.len() as u64))
    }

    fn new(path: Option<PathBuf>, mut src: Box<dyn Source + 'a>, len: Option<u64>) -> Result<Self> {
        let (header, n) = match read_header(&mut src, len) {
            Ok(h) => h,
            Err(HeaderError::Io(e)) => return Err(io_err(&path, e)),
            Err(HeaderError::Rule(rule)) => return Err(malformed(&path, rule)),
        };
        Ok(ModelFile { path, header, src, data_start: 8 + n, pos: 0, len })
    }

    /// The file's path as given (`None` for bytes in memory).
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The string metadata (`__metadata__`), by key.
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.header.metadata
    }

    /// The tensors the header declares, by name (sorted).
    pub fn tensors(&self) -> &BTreeMap<String, TensorInfo> {
        &self.header.tensors
    }

    /// Module prefixes present in the file: every `P` with a `Pmodule` metadata entry (sorted).
    pub fn module_prefixes(&self) -> Vec<String> {
        super::module_prefixes_of(&self.header.metadata)
    }

    /// The prefix of the file's only module, or `prefix` when given. Errors:
    /// [`Error::ModuleChoice`] when no prefix is given and the file holds no module or several.
    pub fn choose_module(&self, prefix: Option<&str>) -> Result<String> {
        if let Some(p) = prefix {
            return Ok(p.to_string());
        }
        let mut prefixes = self.module_prefixes();
        if prefixes.len() == 1 {
            return Ok(prefixes.remove(0));
        }
        Err(Error::ModuleChoice { path: self.path.clone().unwrap_or_default(), prefixes })
    }

    /// Reads tensor `name` ([`Error::StateDictKeys`] if the file has none of that name).
    pub fn read_tensor(&mut self, name: &str) -> Result<StoredTensor> {
        let info = self.header.tensors.get(name).cloned().ok_or_else(|| Error::StateDictKeys {
            prefix: String::new(),
            missing: vec![name.to_string()],
            unexpected: vec![],
        })?;
        self.read_info(name, &info)
    }

    /// Reads the tensors whose names `keep` accepts (in file order) and the metadata entries
    /// whose keys it accepts. The bytes of the other tensors are not read (a stream skips them).
    pub fn load(&mut self, mut keep: impl FnMut(&str) -> bool) -> Result<StateDict> {
        let mut sd = StateDict::new();
        for (k, v) in &self.header.metadata {
            if keep(k) {
                sd.metadata.insert(k.clone(), v.clone());
            }
        }
        let mut wanted: Vec<(String, TensorInfo)> = Vec::new();
        for (name, info) in &self.header.tensors {
            if keep(name) {
                wanted.push((name.clone(), info.clone()));
            }
        }
        wanted.sort_by_key(|(_, t)| (t.begin, t.end));
        for (name, info) in wanted {
            let t = self.read_info(&name, &info)?;
            sd.tensors.insert(name, t);
        }
        Ok(sd)
    }

    /// Reads the entries of the module under `prefix`: the tensors and metadata whose keys are
    /// `prefix` followed by a name without a `.` (nested modules' entries are not read).
    pub fn load_module(&mut self, prefix: &str) -> Result<StateDict> {
        self.load(|k| k.strip_prefix(prefix).is_some_and(|rest| !rest.contains('.')))
    }

    /// Reads every tensor and checks that the file ends where its header says.
    pub fn load_all(mut self) -> Result<StateDict> {
        let sd = self.load(|_| true)?;
        let end = self.data_start + self.header.data_len;
        match self.len {
            Some(len) if len != end => {
                return Err(malformed(&self.path, format!("it is {len} bytes long, but its header declares {end}")))
            }
            Some(_) => {}
            None => {
                // A stream: every declared byte was read (or skipped); nothing may follow.
                self.skip_to(self.header.data_len, "")?;
                let mut one = [0u8; 1];
                if read_some(&mut self.src, &mut one).map_err(|e| io_err(&self.path, e))? != 0 {
                    return Err(malformed(
                        &self.path,
                        format!("it holds more bytes than the {end} its header declares"),
                    ));
                }
            }
        }
        Ok(sd)
    }

    /// Moves to data offset `at` (forward only for streams).
    fn skip_to(&mut self, at: u64, name: &str) -> Result<()> {
        if at == self.pos {
            return Ok(());
        }
        if let Some(r) = self.src.seek_to(self.data_start + at) {
            r.map_err(|e| io_err(&self.path, e))?;
            self.pos = at;
            return Ok(());
        }
        if at < self.pos {
            // `load` reads in file order; only a second pass over a stream gets here.
            return Err(Error::Unsupported {
                op: format!("reading tensor {} again", Quoted(name)),
                device: "a stream".into(),
                reason: "a pipe or device can only be read front to back".into(),
            });
        }
        let skip = at - self.pos;
        let copied =
            std::io::copy(&mut (&mut self.src).take(skip), &mut std::io::sink()).map_err(|e| io_err(&self.path, e))?;
        self.pos += copied;
        if copied < skip {
            return Err(self.truncated(name, at));
        }
        Ok(())
    }

    fn truncated(&self, name: &str, needed_end: u64) -> Error {
        let got = self.data_start + self.pos;
        malformed(
            &self.path,
            format!(
                "it ends at byte {got}, before the end of tensor {} (byte {}): the file is truncated",
                Quoted(name),
                self.data_start + needed_end
            ),
        )
    }

    /// Reads one tensor's bytes into a buffer of its dtype, allocated fallibly.
    fn read_info(&mut self, name: &str, info: &TensorInfo) -> Result<StoredTensor> {
        if let Some(len) = self.len {
            if self.data_start + info.end > len {
                let got = len;
                return Err(malformed(
                    &self.path,
                    format!(
                        "it ends at byte {got}, before the end of tensor {} (byte {}): the file is truncated",
                        Quoted(name),
                        self.data_start + info.end
                    ),
                ));
            }
        }
        self.skip_to(info.begin, name)?;
        let bytes = usize::try_from(info.end - info.begin).map_err(|_| Error::oom::<u8>(name, usize::MAX))?;
        let label = self.shown();
        let what = || format!("tensor {} of {label}", Quoted(name));
        let data = match info.dtype {
            "F32" => StoredData::F32(self.read_elems(bytes / 4, name, info, what, f32::from_le_bytes)?),
            "F64" => StoredData::F64(self.read_elems(bytes / 8, name, info, what, f64::from_le_bytes)?),
            "F16" => StoredData::F16(self.read_elems(bytes / 2, name, info, what, f16::from_le_bytes)?),
            "BF16" => StoredData::BF16(self.read_elems(bytes / 2, name, info, what, bf16::from_le_bytes)?),
            "I32" => StoredData::I32(self.read_elems(bytes / 4, name, info, what, i32::from_le_bytes)?),
            "I64" => StoredData::I64(self.read_elems(bytes / 8, name, info, what, i64::from_le_bytes)?),
            "I8" => StoredData::I8(self.read_elems(bytes, name, info, what, i8::from_le_bytes)?),
            "U8" => StoredData::U8(self.read_elems(bytes, name, info, what, u8::from_le_bytes)?),
            other => {
                return Err(Error::StateDictValue {
                    key: name.to_string(),
                    rule: format!(
                        "dtype {other} is not read by qconv (supported: F32, F64, F16, BF16, I32, I64, I8, U8)"
                    ),
                })
            }
        };
        StoredTensor::new(info.shape.clone(), data)
    }

    /// Reads `n` little-endian elements of `N` bytes (the tensor's whole range) into a vector.
    fn read_elems<T, const N: usize>(
        &mut self,
        n: usize,
        name: &str,
        info: &TensorInfo,
        what: impl FnOnce() -> String,
        from: impl Fn([u8; N]) -> T,
    ) -> Result<Vec<T>> {
        let mut v = try_with_capacity(n, what)?;
        let mut buf = try_filled(CHUNK.min(n * N).max(N), 0u8, || "a read buffer".into())?;
        let mut left = n * N;
        while left > 0 {
            let k = left.min(buf.len() / N * N);
            let got = read_full(&mut self.src, &mut buf[..k]).map_err(|e| io_err(&self.path, e))?;
            self.pos += got as u64;
            if got < k {
                return Err(self.truncated(name, info.end));
            }
            v.extend(buf[..k].chunks_exact(N).map(|c| from(c.try_into().expect("chunks of N bytes"))));
            left -= k;
        }
        Ok(v)
    }

    /// The file name for messages.
    fn shown(&self) -> String {
        match &self.path {
            Some(p) => crate::error::ShownPath(p).to_string(),
            None => "the safetensors bytes".into(),
        }
    }
}

/// Reads until `buf` is full or the source ends; returns the bytes read.
fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(k) => got += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

fn read_some(r: &mut dyn Read, buf: &mut [u8]) -> std::io::Result<usize> {
    read_full(r, buf)
}

fn io_err(path: &Option<PathBuf>, e: std::io::Error) -> Error {
    match path {
        Some(p) => Error::io("reading", p, e),
        None => Error::SafeTensors(e.to_string()),
    }
}

fn malformed(path: &Option<PathBuf>, rule: String) -> Error {
    match path {
        Some(p) => Error::SafeTensorsFile { path: p.clone(), rule },
        None => Error::SafeTensors(rule),
    }
}
