//! Devices, element types and the [`Tensor`] type.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use half::{bf16, f16};

use crate::alloc::{try_collect, try_filled, try_to_vec};
/// The dtype moved to [`crate::dtype`]; this re-export keeps `qconv::tensor::DType`.
pub use crate::dtype::DType;
use crate::error::{Dims, Error, Result};

/// Where a tensor lives and where a module computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Device {
    /// The host CPU (the fallback that works everywhere).
    Cpu,
    /// A CUDA device, by ordinal.
    Cuda(usize),
}

impl Device {
    /// `true` for [`Device::Cpu`].
    pub fn is_cpu(&self) -> bool {
        matches!(self, Device::Cpu)
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => write!(f, "cpu"),
            Device::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl FromStr for Device {
    type Err = Error;

    /// Parses `cpu`, `cuda` (ordinal 0) and `cuda:N`.
    fn from_str(s: &str) -> Result<Self> {
        let bad = || Error::Parse { what: "device", value: s.to_string(), expected: "cpu, cuda or cuda:N".into() };
        match s {
            "cpu" => Ok(Device::Cpu),
            "cuda" => Ok(Device::Cuda(0)),
            _ => {
                let n = s.strip_prefix("cuda:").ok_or_else(bad)?;
                n.parse::<usize>().map(Device::Cuda).map_err(|_| bad())
            }
        }
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for half::f16 {}
    impl Sealed for half::bf16 {}
}

/// An element type a [`Tensor`] can hold: `f32`, [`half::f16`] or [`half::bf16`].
pub trait Element: sealed::Sealed + Copy + Send + Sync + 'static {
    /// The matching [`DType`].
    const DTYPE: DType;
    /// Widens to f32 (exact).
    fn to_f32(self) -> f32;
    /// Narrows from f32 with round-to-nearest-even.
    fn from_f32(v: f32) -> Self;
    #[doc(hidden)]
    fn wrap(v: Vec<Self>) -> CpuStorage;
    #[doc(hidden)]
    fn view(s: &CpuStorage) -> Option<&[Self]>;
}

impl Element for f32 {
    const DTYPE: DType = DType::F32;
    fn to_f32(self) -> f32 {
        self
    }
    fn from_f32(v: f32) -> Self {
        v
    }
    fn wrap(v: Vec<Self>) -> CpuStorage {
        CpuStorage::F32(v)
    }
    fn view(s: &CpuStorage) -> Option<&[Self]> {
        match s {
            CpuStorage::F32(v) => Some(v),
            _ => None,
        }
    }
}

impl Element for f16 {
    const DTYPE: DType = DType::F16;
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
    fn from_f32(v: f32) -> Self {
        f16::from_f32(v)
    }
    fn wrap(v: Vec<Self>) -> CpuStorage {
        CpuStorage::F16(v)
    }
    fn view(s: &CpuStorage) -> Option<&[Self]> {
        match s {
            CpuStorage::F16(v) => Some(v),
            _ => None,
        }
    }
}

impl Element for bf16 {
    const DTYPE: DType = DType::BF16;
    fn to_f32(self) -> f32 {
        bf16::to_f32(self)
    }
    fn from_f32(v: f32) -> Self {
        bf16::from_f32(v)
    }
    fn wrap(v: Vec<Self>) -> CpuStorage {
        CpuStorage::BF16(v)
    }
    fn view(s: &CpuStorage) -> Option<&[Self]> {
        match s {
            CpuStorage::BF16(v) => Some(v),
            _ => None,
        }
    }
}

/// Host memory of a tensor, one variant per dtype.
#[doc(hidden)]
#[derive(Clone, Debug, PartialEq)]
pub enum CpuStorage {
    /// f32 elements.
    F32(Vec<f32>),
    /// f16 elements.
    F16(Vec<f16>),
    /// bf16 elements.
    BF16(Vec<bf16>),
}

impl CpuStorage {
    pub(crate) fn dtype(&self) -> DType {
        match self {
            CpuStorage::F32(_) => DType::F32,
            CpuStorage::F16(_) => DType::F16,
            CpuStorage::BF16(_) => DType::BF16,
        }
    }
}

/// A CUDA tensor's device memory (defined here, below the CUDA backend, which uses it through
/// `DeviceBytes`).
#[cfg(feature = "cuda")]
pub(crate) type DeviceBytes = cudarc::driver::CudaSlice<u8>;
/// A CUDA tensor's device memory: never exists in a build without the `cuda` feature.
#[cfg(not(feature = "cuda"))]
pub(crate) enum DeviceBytes {}

/// Device memory of a tensor: raw bytes of `dtype` elements on CUDA device `ordinal`.
pub(crate) struct CudaStorage {
    pub(crate) ordinal: usize,
    pub(crate) dtype: DType,
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    pub(crate) bytes: DeviceBytes,
}

/// Where a tensor's elements live.
enum Storage {
    Cpu(CpuStorage),
    /// Never constructed without the `cuda` feature (`CudaStorage` has no value then).
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    Cuda(CudaStorage),
}

/// A dense, contiguous, row-major tensor with a shape, a dtype and a device.
///
/// Cloning is cheap (the storage is shared); tensors are immutable once built. A tensor lives on
/// the host ([`Device::Cpu`]) or on a CUDA device ([`Device::Cuda`], see [`Tensor::to_device`]);
/// the element accessors ([`as_slice`](Tensor::as_slice), [`to_vec`](Tensor::to_vec),
/// [`to_ndarray`](Tensor::to_ndarray), [`view`](Tensor::view)) need a host tensor. ndarray
/// arrays and views convert with `From` (`Tensor::from(&array)`, `array.into()`). Equality compares shapes and elements
/// of host tensors; two device tensors are equal only when they share the same device buffer.
/// `Debug` and `Display` are short whatever the size (shape, dtype, device and a few values; see
/// `tensor_fmt.rs`); neither copies from a device.
#[derive(Clone)]
pub struct Tensor {
    shape: Vec<usize>,
    storage: Arc<Storage>,
}

impl PartialEq for Tensor {
    fn eq(&self, other: &Self) -> bool {
        self.shape == other.shape
            && match (&*self.storage, &*other.storage) {
                (Storage::Cpu(a), Storage::Cpu(b)) => a == b,
                (Storage::Cuda(_), Storage::Cuda(_)) => Arc::ptr_eq(&self.storage, &other.storage),
                _ => false,
            }
    }
}

/// The raw bytes of host elements, in memory order (what the device buffer holds).
#[cfg(feature = "cuda")]
pub(crate) fn host_bytes(s: &CpuStorage) -> Vec<u8> {
    match s {
        CpuStorage::F32(v) => v.iter().flat_map(|x| x.to_ne_bytes()).collect(),
        CpuStorage::F16(v) => v.iter().flat_map(|x| x.to_bits().to_ne_bytes()).collect(),
        CpuStorage::BF16(v) => v.iter().flat_map(|x| x.to_bits().to_ne_bytes()).collect(),
    }
}

/// The inverse of `host_bytes`.
#[cfg(feature = "cuda")]
pub(crate) fn from_host_bytes(dtype: DType, b: &[u8]) -> CpuStorage {
    match dtype {
        DType::F32 => {
            CpuStorage::F32(b.chunks_exact(4).map(|c| f32::from_ne_bytes([c[0], c[1], c[2], c[3]])).collect())
        }
        DType::F16 => {
            CpuStorage::F16(b.chunks_exact(2).map(|c| f16::from_bits(u16::from_ne_bytes([c[0], c[1]]))).collect())
        }
        DType::BF16 => {
            CpuStorage::BF16(b.chunks_exact(2).map(|c| bf16::from_bits(u16::from_ne_bytes([c[0], c[1]]))).collect())
        }
    }
}

fn host_only(device: Device, op: &str) -> Error {
    Error::Unsupported {
        op: op.to_string(),
        device: device.to_string(),
        reason: "the tensor's elements live in device memory; copy it to the host first with to_device(Device::Cpu)"
            .into(),
    }
}

/// Number of elements of `shape`, or an [`Error::Overflow`] naming the shape.
pub(crate) fn checked_numel(shape: &[usize]) -> Result<usize> {
    shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| Error::Overflow(format!("the element count of shape {shape:?} exceeds usize")))
}

impl Tensor {
    /// Builds a tensor from a vector in row-major order.
    ///
    /// Fails with [`Error::Shape`] when `data.len()` differs from the product of `shape`.
    pub fn from_vec<T: Element>(data: Vec<T>, shape: &[usize]) -> Result<Tensor> {
        let n = checked_numel(shape)?;
        if n != data.len() {
            return Err(Error::shape("data", shape, format!("it holds {} elements, not {n}", data.len())));
        }
        Ok(Tensor { shape: shape.to_vec(), storage: Arc::new(Storage::Cpu(T::wrap(data))) })
    }

    /// Builds a tensor by copying a slice in row-major order ([`Error::OutOfMemory`] if the copy
    /// cannot be allocated).
    pub fn from_slice<T: Element>(data: &[T], shape: &[usize]) -> Result<Tensor> {
        let n = checked_numel(shape)?;
        if n != data.len() {
            return Err(Error::shape("data", shape, format!("it holds {} elements, not {n}", data.len())));
        }
        Tensor::from_vec(try_to_vec(data, || format!("a tensor of shape {}", Dims(shape)))?, shape)
    }

    /// A tensor of zeros ([`Error::OutOfMemory`] if it cannot be allocated).
    pub fn zeros(shape: &[usize], dtype: DType) -> Result<Tensor> {
        let n = checked_numel(shape)?;
        let what = || format!("a tensor of shape {}", Dims(shape));
        let storage = match dtype {
            DType::F32 => CpuStorage::F32(try_filled(n, 0.0, what)?),
            DType::F16 => CpuStorage::F16(try_filled(n, f16::ZERO, what)?),
            DType::BF16 => CpuStorage::BF16(try_filled(n, bf16::ZERO, what)?),
        };
        Ok(Tensor { shape: shape.to_vec(), storage: Arc::new(Storage::Cpu(storage)) })
    }

    /// The shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Number of dimensions.
    pub fn ndim(&self) -> usize {
        self.shape.len()
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Element type.
    pub fn dtype(&self) -> DType {
        match &*self.storage {
            Storage::Cpu(c) => c.dtype(),
            Storage::Cuda(c) => c.dtype,
        }
    }

    /// The device holding the data.
    pub fn device(&self) -> Device {
        match &*self.storage {
            Storage::Cpu(_) => Device::Cpu,
            Storage::Cuda(c) => Device::Cuda(c.ordinal),
        }
    }

    /// Borrows the elements of a host tensor; fails with [`Error::DType`] if `T` is not the
    /// tensor's dtype and with [`Error::Unsupported`] for a device tensor (copy it to the host
    /// first with [`to_device(Device::Cpu)`](Tensor::to_device)).
    pub fn as_slice<T: Element>(&self) -> Result<&[T]> {
        let host = self.host_storage().ok_or_else(|| host_only(self.device(), "reading elements"))?;
        T::view(host).ok_or_else(|| Error::DType {
            what: "tensor",
            got: self.dtype().to_string(),
            rule: format!("it was read as {}", T::DTYPE),
        })
    }

    /// Copies the elements of a host tensor out as `T`; fails if `T` is not the tensor's dtype or
    /// the tensor lives on a device (see [`as_slice`](Tensor::as_slice)).
    pub fn to_vec<T: Element>(&self) -> Result<Vec<T>> {
        try_to_vec(self.as_slice::<T>()?, || self.what())
    }

    /// "a tensor of shape [..]", for allocation errors.
    fn what(&self) -> String {
        format!("a tensor of shape {}", Dims(&self.shape))
    }

    /// Converts every element to f32 (exact for every supported dtype), downloading a device
    /// tensor first (synchronising); fails only when that download fails.
    pub fn to_vec_f32(&self) -> Result<Vec<f32>> {
        let downloaded;
        let host = match &*self.storage {
            Storage::Cpu(c) => c,
            Storage::Cuda(_) => {
                downloaded = self.to_device(Device::Cpu)?;
                downloaded.host_storage().ok_or_else(|| host_only(self.device(), "converting elements"))?
            }
        };
        let what = || format!("{} as f32", self.what());
        match host {
            CpuStorage::F32(v) => try_to_vec(v, what),
            CpuStorage::F16(v) => try_collect(v.iter().map(|x| x.to_f32()), what),
            CpuStorage::BF16(v) => try_collect(v.iter().map(|x| x.to_f32()), what),
        }
    }

    /// Converts to another dtype (round-to-nearest-even when narrowing). A device tensor is
    /// converted through the host (download, convert, upload) and stays on its device; fails only
    /// when that copy fails.
    pub fn to_dtype(&self, dtype: DType) -> Result<Tensor> {
        if dtype == self.dtype() {
            return Ok(self.clone());
        }
        let what = || format!("{} as {dtype}", self.what());
        let storage = match (dtype, &*self.storage) {
            // Host narrowing and widening: one pass, no f32 copy in between.
            (DType::F16, Storage::Cpu(CpuStorage::F32(v))) => {
                CpuStorage::F16(try_collect(v.iter().map(|&x| f16::from_f32(x)), what)?)
            }
            (DType::BF16, Storage::Cpu(CpuStorage::F32(v))) => {
                CpuStorage::BF16(try_collect(v.iter().map(|&x| bf16::from_f32(x)), what)?)
            }
            _ => {
                let v = self.to_vec_f32()?;
                match dtype {
                    DType::F32 => CpuStorage::F32(v),
                    DType::F16 => CpuStorage::F16(try_collect(v.into_iter().map(f16::from_f32), what)?),
                    DType::BF16 => CpuStorage::BF16(try_collect(v.into_iter().map(bf16::from_f32), what)?),
                }
            }
        };
        let host = Tensor { shape: self.shape.clone(), storage: Arc::new(Storage::Cpu(storage)) };
        host.to_device(self.device())
    }

    /// Returns a tensor with the same data and a new shape of the same element count.
    pub fn reshape(&self, shape: &[usize]) -> Result<Tensor> {
        let n = checked_numel(shape)?;
        if n != self.numel() {
            return Err(Error::shape("tensor", &self.shape, format!("it cannot be reshaped to {shape:?}")));
        }
        Ok(Tensor { shape: shape.to_vec(), storage: self.storage.clone() })
    }

    /// `[N, C, *spatial]` → `[N, *spatial, C]`: the channels-last layout (PyTorch's
    /// `channels_last` memory format, as a plain shape) that
    /// [`ConvModule::forward_channels_last`](crate::ConvModule) takes. Host tensors of any dtype
    /// (exact); at least 2 dimensions. Device tensors: download first.
    pub fn to_channels_last(&self) -> Result<Tensor> {
        self.move_channels(true)
    }

    /// `[N, *spatial, C]` → `[N, C, *spatial]`, the inverse of
    /// [`to_channels_last`](Self::to_channels_last).
    pub fn to_channels_first(&self) -> Result<Tensor> {
        self.move_channels(false)
    }

    fn move_channels(&self, to_last: bool) -> Result<Tensor> {
        let shape = &self.shape;
        if shape.len() < 2 {
            return Err(Error::shape(
                "tensor",
                shape,
                "moving the channel dimension needs a batch and a channel dimension",
            ));
        }
        if self.device() != Device::Cpu {
            return Err(Error::Unsupported {
                op: "moving the channel dimension".into(),
                device: self.device().to_string(),
                reason: "the tensor lives on a CUDA device; copy it to the CPU first".into(),
            });
        }
        let n = shape[0];
        let (c, new_shape) = if to_last {
            let mut v = vec![n];
            v.extend_from_slice(&shape[2..]);
            v.push(shape[1]);
            (shape[1], v)
        } else {
            let c = shape[shape.len() - 1];
            let mut v = vec![n, c];
            v.extend_from_slice(&shape[1..shape.len() - 1]);
            (c, v)
        };
        if self.numel() == 0 {
            // Nothing to move (and `n · c` need not even fit).
            return Tensor::zeros(&new_shape, self.dtype());
        }
        let v = self.to_vec_f32()?;
        let per = v.len() / (n * c); // n · c divides the (non-zero) element count
        let mut out = try_filled(v.len(), 0f32, || self.what())?;
        for b in 0..n {
            let base = b * c * per;
            for ch in 0..c {
                for s in 0..per {
                    let (from, to) = if to_last { (ch * per + s, s * c + ch) } else { (s * c + ch, ch * per + s) };
                    out[base + to] = v[base + from];
                }
            }
        }
        Tensor::from_vec(out, &new_shape)?.to_dtype(self.dtype())
    }

    /// The device buffer of a CUDA tensor (the elements' raw bytes in row-major order, native
    /// endianness), for interoperating with other cudarc code; `None` for a host tensor. The
    /// buffer holds at least `numel() * dtype().size_in_bytes()` bytes (an empty tensor owns a
    /// one-byte placeholder, since CUDA has no zero-size allocations).
    #[cfg(feature = "cuda")]
    #[cfg_attr(docsrs, doc(cfg(feature = "cuda")))]
    pub fn as_cuda_bytes(&self) -> Option<&cudarc::driver::CudaSlice<u8>> {
        match &*self.storage {
            Storage::Cuda(c) => Some(&c.bytes),
            Storage::Cpu(_) => None,
        }
    }

    /// Wraps host elements in a tensor of `shape` (the caller guarantees the element count).
    pub(crate) fn from_host(shape: Vec<usize>, host: CpuStorage) -> Tensor {
        Tensor { shape, storage: Arc::new(Storage::Cpu(host)) }
    }

    /// Wraps a device buffer holding `shape` elements of `dtype` on CUDA device `ordinal`.
    #[cfg(feature = "cuda")]
    pub(crate) fn from_cuda(shape: Vec<usize>, dtype: DType, ordinal: usize, bytes: DeviceBytes) -> Tensor {
        Tensor { shape, storage: Arc::new(Storage::Cuda(CudaStorage { ordinal, dtype, bytes })) }
    }

    /// The host elements, or `None` for a device tensor.
    pub(crate) fn host_storage(&self) -> Option<&CpuStorage> {
        match &*self.storage {
            Storage::Cpu(c) => Some(c),
            Storage::Cuda(_) => None,
        }
    }

    /// The device buffer, or `None` for a host tensor.
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    pub(crate) fn cuda_storage(&self) -> Option<&CudaStorage> {
        match &*self.storage {
            Storage::Cuda(c) => Some(c),
            Storage::Cpu(_) => None,
        }
    }
}
