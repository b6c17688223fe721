//! Moving tensors between the host and CUDA devices, and choosing the best device.
//!
//! [`Tensor`] and [`Device`] are plain data (`tensor.rs`); the two operations that need the CUDA
//! runtime live here, above both, so that `tensor.rs` imports nothing of `cuda/` and the
//! top-level modules form no import cycle (`quant/` → `tensor.rs`, `cuda/` → `quant/`,
//! this file → `cuda/` and `tensor.rs`).

use crate::error::Result;
#[cfg(feature = "cuda")]
use crate::tensor::{from_host_bytes, host_bytes};
use crate::tensor::{Device, Tensor};

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
}

impl Tensor {
    /// Copies the tensor to `device` (a clone sharing the storage when it already lives there).
    ///
    /// `Device::Cpu` always works for host tensors; a device tensor is downloaded, which waits
    /// for the work queued on its stream. `Device::Cuda(n)` uploads (enqueued on the device's
    /// default stream, without waiting) and fails with [`Error::CudaUnavailable`](crate::Error::CudaUnavailable) and the
    /// probe's reason when CUDA device `n` is not usable here, or [`Error::Cuda`](crate::Error::Cuda) when the copy
    /// fails.
    pub fn to_device(&self, device: Device) -> Result<Tensor> {
        if device == self.device() {
            return Ok(self.clone());
        }
        #[cfg(feature = "cuda")]
        match (self.host_storage(), self.cuda_storage(), device) {
            (_, Some(c), Device::Cpu) => {
                let rt = crate::cuda::runtime::Runtime::get(c.ordinal)?;
                let mut bytes = rt.dtoh(&c.bytes, Some(c.bytes.stream()))?;
                // The buffer may be longer (an empty tensor still owns one placeholder element).
                bytes.truncate(self.numel() * c.dtype.size_in_bytes());
                Ok(Tensor::from_host(self.shape().to_vec(), from_host_bytes(c.dtype, &bytes)))
            }
            (Some(host), _, Device::Cuda(n)) => {
                let rt = crate::cuda::runtime::Runtime::get(n)?;
                let bytes = rt.htod(&host_bytes(host), None)?;
                Ok(Tensor::from_cuda(self.shape().to_vec(), host.dtype(), n, bytes))
            }
            // Between two CUDA devices: through the host.
            (None, Some(_), Device::Cuda(_)) => self.to_device(Device::Cpu)?.to_device(device),
            _ => Ok(self.clone()),
        }
        #[cfg(not(feature = "cuda"))]
        match device {
            // A host tensor (the only kind this build has) asked for a CUDA device.
            Device::Cuda(n) => Err(crate::cuda::require(n).err().unwrap_or_else(|| crate::Error::CudaUnavailable {
                ordinal: n,
                reason: crate::cuda::NOT_BUILT.into(),
            })),
            Device::Cpu => Ok(self.clone()),
        }
    }
}

#[cfg(feature = "cuda")]
impl Tensor {
    /// Wraps a device buffer made by other cudarc code as a tensor of `shape` and `dtype` on
    /// `device`, without copying: the inverse of [`as_cuda_bytes`](Tensor::as_cuda_bytes). The
    /// bytes are the elements in row-major order, native endianness.
    ///
    /// Checked: `device` is a usable CUDA device ([`Error::CudaUnavailable`](crate::Error::CudaUnavailable)
    /// otherwise), the buffer belongs to that device's primary context (the one qconv computes
    /// in: `CudaContext::new(n)` or qconv's [`Runtime`](crate::cuda::runtime::Runtime)), and it holds at
    /// least `numel · dtype.size_in_bytes()` bytes ([`Error::Shape`](crate::Error::Shape) otherwise).
    /// Work on the buffer must be ordered before qconv's use of it (e.g. synchronise its stream).
    #[cfg_attr(docsrs, doc(cfg(feature = "cuda")))]
    pub fn from_cuda_bytes(
        bytes: cudarc::driver::CudaSlice<u8>,
        shape: &[usize],
        dtype: crate::DType,
        device: Device,
    ) -> Result<Tensor> {
        use crate::error::Error;
        let Device::Cuda(n) = device else {
            return Err(Error::Unsupported {
                op: "wrapping a CUDA buffer".into(),
                device: device.to_string(),
                reason: "the buffer lives on a CUDA device; name it as Device::Cuda(n)".into(),
            });
        };
        let rt = crate::cuda::runtime::Runtime::get(n)?;
        if bytes.context().cu_ctx() != rt.context().cu_ctx() {
            return Err(Error::Unsupported {
                op: "wrapping a CUDA buffer".into(),
                device: device.to_string(),
                reason: format!(
                    "the buffer belongs to another CUDA context (device {}); use the primary context of {device}",
                    bytes.context().ordinal()
                ),
            });
        }
        let need = crate::tensor::checked_numel(shape)?
            .checked_mul(dtype.size_in_bytes())
            .ok_or_else(|| Error::Overflow(format!("the byte size of shape {shape:?}")))?;
        if bytes.len() < need {
            return Err(Error::shape(
                "device buffer",
                shape,
                format!("{} bytes cannot hold {need} bytes of {dtype}", bytes.len()),
            ));
        }
        Ok(Tensor::from_cuda(shape.to_vec(), dtype, n, bytes))
    }
}
