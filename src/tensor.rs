//! Devices, element types and the [`Tensor`] type.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use half::{bf16, f16};

use crate::error::{Error, Result};

/// Where a tensor lives and where a module computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Device {
    /// The host CPU (the fallback that works everywhere).
    Cpu,
    /// A CUDA device, by ordinal.
    Cuda(usize),
}

impl Device {
    /// The best device on this machine: `Cuda(0)` when the CUDA probe succeeds, otherwise `Cpu`.
    ///
    /// Never panics, also on machines without a driver. The reason CUDA was not chosen is
    /// available from [`crate::cuda::probe`] (see [`crate::cuda::Probe::unusable_reason`]).
    pub fn best() -> Device {
        if crate::cuda::probe().usable() {
            Device::Cuda(0)
        } else {
            Device::Cpu
        }
    }

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

/// Element type of an activation tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    /// IEEE binary32.
    F32,
    /// IEEE binary16.
    F16,
    /// bfloat16.
    BF16,
}

impl DType {
    /// Bytes per element.
    pub fn size_in_bytes(&self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F16 | DType::BF16 => 2,
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
        })
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
    fn dtype(&self) -> DType {
        match self {
            CpuStorage::F32(_) => DType::F32,
            CpuStorage::F16(_) => DType::F16,
            CpuStorage::BF16(_) => DType::BF16,
        }
    }
}

/// A dense, contiguous, row-major tensor with a shape, a dtype and a device.
///
/// Cloning is cheap (the storage is shared); tensors are immutable once built.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    shape: Vec<usize>,
    storage: Arc<CpuStorage>,
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
        Ok(Tensor { shape: shape.to_vec(), storage: Arc::new(T::wrap(data)) })
    }

    /// Builds a tensor by copying a slice in row-major order.
    pub fn from_slice<T: Element>(data: &[T], shape: &[usize]) -> Result<Tensor> {
        Tensor::from_vec(data.to_vec(), shape)
    }

    /// A tensor of zeros.
    pub fn zeros(shape: &[usize], dtype: DType) -> Result<Tensor> {
        let n = checked_numel(shape)?;
        let storage = match dtype {
            DType::F32 => CpuStorage::F32(vec![0.0; n]),
            DType::F16 => CpuStorage::F16(vec![f16::ZERO; n]),
            DType::BF16 => CpuStorage::BF16(vec![bf16::ZERO; n]),
        };
        Ok(Tensor { shape: shape.to_vec(), storage: Arc::new(storage) })
    }

    /// Copies an ndarray view (any layout, any dimensionality) into a new tensor.
    pub fn from_ndarray<T: Element, D: ndarray::Dimension>(a: ndarray::ArrayView<'_, T, D>) -> Result<Tensor> {
        let shape = a.shape().to_vec();
        let data: Vec<T> = a.iter().copied().collect();
        Tensor::from_vec(data, &shape)
    }

    /// Copies the tensor into an ndarray of element type `T` (which must be the tensor's dtype).
    pub fn to_ndarray<T: Element>(&self) -> Result<ndarray::ArrayD<T>> {
        let v = self.as_slice::<T>()?.to_vec();
        ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(&self.shape), v)
            .map_err(|e| Error::shape("tensor", &self.shape, e.to_string()))
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
        self.storage.dtype()
    }

    /// The device holding the data.
    pub fn device(&self) -> Device {
        Device::Cpu
    }

    /// Borrows the elements; fails with [`Error::DType`] if `T` is not the tensor's dtype.
    pub fn as_slice<T: Element>(&self) -> Result<&[T]> {
        T::view(&self.storage).ok_or_else(|| Error::DType {
            what: "tensor",
            got: self.dtype().to_string(),
            rule: format!("it was read as {}", T::DTYPE),
        })
    }

    /// Copies the elements out as `T`; fails if `T` is not the tensor's dtype.
    pub fn to_vec<T: Element>(&self) -> Result<Vec<T>> {
        Ok(self.as_slice::<T>()?.to_vec())
    }

    /// Converts every element to f32 (exact for every supported dtype).
    pub fn to_vec_f32(&self) -> Vec<f32> {
        match &*self.storage {
            CpuStorage::F32(v) => v.clone(),
            CpuStorage::F16(v) => v.iter().map(|x| x.to_f32()).collect(),
            CpuStorage::BF16(v) => v.iter().map(|x| x.to_f32()).collect(),
        }
    }

    /// Converts to another dtype (round-to-nearest-even when narrowing).
    pub fn to_dtype(&self, dtype: DType) -> Tensor {
        if dtype == self.dtype() {
            return self.clone();
        }
        let v = self.to_vec_f32();
        let storage = match dtype {
            DType::F32 => CpuStorage::F32(v),
            DType::F16 => CpuStorage::F16(v.into_iter().map(f16::from_f32).collect()),
            DType::BF16 => CpuStorage::BF16(v.into_iter().map(bf16::from_f32).collect()),
        };
        Tensor { shape: self.shape.clone(), storage: Arc::new(storage) }
    }

    /// Returns a tensor with the same data and a new shape of the same element count.
    pub fn reshape(&self, shape: &[usize]) -> Result<Tensor> {
        let n = checked_numel(shape)?;
        if n != self.numel() {
            return Err(Error::shape("tensor", &self.shape, format!("it cannot be reshaped to {shape:?}")));
        }
        Ok(Tensor { shape: shape.to_vec(), storage: self.storage.clone() })
    }

    /// Copies the tensor to `device`.
    ///
    /// `Device::Cpu` always works. A CUDA device must pass the CUDA probe; device-resident tensors
    /// arrive with the CUDA backend, so today this returns [`Error::CudaUnavailable`] when the probe
    /// fails and [`Error::Unsupported`] otherwise.
    pub fn to_device(&self, device: Device) -> Result<Tensor> {
        match device {
            Device::Cpu => Ok(self.clone()),
            Device::Cuda(n) => Err(crate::cuda::require(n).err().unwrap_or_else(|| Error::Unsupported {
                op: "device-resident tensors".into(),
                device: device.to_string(),
                reason: "this build of qconv computes on the CPU only; the CUDA backend is not part of it yet".into(),
            })),
        }
    }

    pub(crate) fn storage(&self) -> &CpuStorage {
        &self.storage
    }
}
