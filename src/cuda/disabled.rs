//! Stand-ins for the CUDA backend in a build without the `cuda` feature: the types the module
//! and tensor code name exist but have no values, so no tensor or module can ever be on a CUDA
//! device, and every entry point that would create one returns [`Error::CudaUnavailable`] with
//! the reason [`NOT_BUILT`].

use super::codes::PackedCodes;
use super::pack::WeightSpec;
use super::NOT_BUILT;
use crate::error::{Error, Result};
use crate::quant::WeightQParams;
use crate::tensor::Tensor;

/// The error every CUDA entry point returns in this build.
pub(crate) fn unavailable(ordinal: usize) -> Error {
    Error::CudaUnavailable { ordinal, reason: NOT_BUILT.into() }
}

/// A caller's CUDA stream: never exists in this build.
pub(crate) enum Stream {}

/// A module's weight on a device: never exists in this build.
pub(crate) enum DeviceWeights {}

impl DeviceWeights {
    pub(crate) fn upload(
        ordinal: usize,
        _spec: WeightSpec,
        _fq: &Tensor,
        _bias: Option<&Tensor>,
        _codes: Option<&PackedCodes>,
    ) -> Result<DeviceWeights> {
        Err(unavailable(ordinal))
    }

    pub(crate) fn self_check(&self, _weight: &Tensor, _qparams: &WeightQParams) -> Result<()> {
        match *self {}
    }

    pub(crate) fn weight_bytes(&self) -> usize {
        match *self {}
    }
}
